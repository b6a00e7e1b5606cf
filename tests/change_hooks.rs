//! The change doors of htmlport against a real master: `POST /api/v1/changes`
//! (HTTP Basic with changeuser/changepassword), the GitHub, GitLab and Gitea push
//! webhooks (good signature → Changes stored; bad or missing → 403, nothing stored;
//! unconfigured → 404 naming the key; a delivery seen before → 200, nothing stored;
//! no repository URL → 400; any field over its cap → 400; a body over its cap → 413),
//! a push to a polled repository (→ poll now, no duplicate Changes), a poller's
//! huge commit (cut with a marker) and `POST /change_hook/poller?repo=URL` (change
//! credentials; GET → 405; a burst of requests → one poll in flight plus one queued,
//! shown with a real `hg` slowed down by a gate the test opens).

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "change_common/mod.rs"]
mod change_common;

use change_common::{api_changes, basic, finish, http, start, wait_head, GitRepo};
use serde_json::{json, Value};

/// The change credentials of the test masters (there is no default pair).
const CHANGE_KEYS: &str = "changeuser = ci\nchangepassword = pa55\n";

const SECRETS: &str =
    "github_secret = gh-s3cret\ngitlab_secret = gl-t0ken\ngitea_secret = gt-s3cret\n";

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&k, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A push of two commits to `branch` of `clone_url`, in the forges' shared shape
/// (GitHub and Gitea; GitLab's extra `project` block is added too).
fn push_payload(clone_url: &str, branch: &str) -> Vec<u8> {
    json!({
        "object_kind": "push",
        "ref": format!("refs/heads/{branch}"),
        "repository": {
            "full_name": "team/widget",
            "clone_url": clone_url,
            "html_url": "https://forge.example/team/widget",
            "git_http_url": clone_url,
        },
        "project": {"path_with_namespace": "team/widget", "git_http_url": clone_url},
        "commits": [
            {"id": "1111111111111111111111111111111111111111", "message": "first\n\nbody",
             "timestamp": "2024-01-02T03:04:05Z", "url": "https://forge.example/c/1111",
             "author": {"name": "Ann", "email": "ann@example.org"},
             "added": ["a.c"], "modified": ["README"], "removed": []},
            {"id": "2222222222222222222222222222222222222222", "message": "second",
             "timestamp": "2024-01-02T04:04:05+01:00",
             "author": {"name": "Bob", "email": "bob@example.org"},
             "added": [], "modified": [], "removed": ["old.c"]}
        ]
    })
    .to_string()
    .into_bytes()
}

async fn post(
    m: &engine_common::EngineMaster,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let (status, _, body) = http(m.master.htmlport(), "POST", path, headers, body).await;
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

/// The headers a forge sends with a correctly signed `body`.
fn good_headers(forge: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let ct = ("Content-Type", "application/json".to_string());
    match forge {
        "github" => vec![
            ct,
            ("X-GitHub-Event", "push".into()),
            (
                "X-Hub-Signature-256",
                format!("sha256={}", hmac_hex("gh-s3cret", body)),
            ),
        ],
        "gitlab" => vec![
            ct,
            ("X-Gitlab-Event", "Push Hook".into()),
            ("X-Gitlab-Token", "gl-t0ken".into()),
        ],
        _ => vec![
            ct,
            ("X-Gitea-Event", "push".into()),
            ("X-Gitea-Signature", hmac_hex("gt-s3cret", body)),
        ],
    }
}

/// `headers` with the forge's delivery id header set to `id`.
fn with_delivery(
    mut headers: Vec<(&'static str, String)>,
    forge: &str,
    id: &str,
) -> Vec<(&'static str, String)> {
    let name = match forge {
        "github" => "X-GitHub-Delivery",
        "gitlab" => "Idempotency-Key",
        _ => "X-Gitea-Delivery",
    };
    headers.push((name, id.to_string()));
    headers
}

/// The same with a wrong and with no proof of the secret.
fn bad_headers(forge: &str, body: &[u8]) -> Vec<Vec<(&'static str, String)>> {
    let mut wrong = good_headers(forge, body);
    let proof = wrong.last_mut().unwrap();
    proof.1 = match forge {
        "github" => format!("sha256={}", hmac_hex("not-the-secret", body)),
        "gitlab" => "gl-t0ke".into(),
        _ => hmac_hex("gt-s3cret", b"another body"),
    };
    let mut missing = good_headers(forge, body);
    missing.pop();
    vec![wrong, missing]
}

#[tokio::test(flavor = "multi_thread")]
async fn each_forge_with_a_good_signature_stores_its_commits() {
    let repo = GitRepo::new();
    let m = start(&repo, SECRETS).await;
    let mut stored = 0;
    for forge in ["github", "gitlab", "gitea"] {
        let url = format!("https://forge.example/{forge}/widget.git");
        let body = push_payload(&url, "main");
        let path = format!("/change_hook/{forge}");

        for headers in bad_headers(forge, &body) {
            let (status, v) = post(&m, &path, &headers, &body).await;
            assert_eq!(status, 403, "{forge}: {v}");
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("{forge}_secret")),
                "{v}"
            );
        }
        assert_eq!(
            api_changes(&m).await.len(),
            stored,
            "{forge}: bad hook stored"
        );

        let (status, v) = post(&m, &path, &good_headers(forge, &body), &body).await;
        assert_eq!(status, 200, "{forge}: {v}");
        assert_eq!(v["changes"].as_array().unwrap().len(), 2, "{v}");
        stored += 2;
        let list = api_changes(&m).await;
        assert_eq!(list.len(), stored);
        let (second, first) = (&list[0], &list[1]);
        assert_eq!(first["who"], "Ann <ann@example.org>");
        assert_eq!(first["files"], json!(["a.c", "README"]));
        assert_eq!(first["comments"], "first\n\nbody");
        assert_eq!(
            first["revision"],
            "1111111111111111111111111111111111111111"
        );
        assert_eq!(first["branch"], "main");
        assert_eq!(first["when"], 1704164645);
        assert_eq!(first["repository"], url.as_str());
        assert_eq!(first["links"], json!(["https://forge.example/c/1111"]));
        assert_eq!(second["who"], "Bob <bob@example.org>");
        assert_eq!(second["files"], json!(["old.c"]));
        assert_eq!(second["when"], 1704164645);
    }
    assert!(support::log_has(&[
        "change_hook/github: refused a request from 127.0.0.1"
    ]));
    assert!(support::log_has(&[
        "change_hook/gitea: refused a request from"
    ]));
    assert!(support::log_has(&[
        "change_hook/gitlab: refused a request from"
    ]));
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_ping_and_other_events_store_nothing() {
    let repo = GitRepo::new();
    let m = start(&repo, SECRETS).await;
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let sig = format!("sha256={}", hmac_hex("gh-s3cret", body));
    let (status, v) = post(
        &m,
        "/change_hook/github",
        &[
            ("X-GitHub-Event", "ping".into()),
            ("X-Hub-Signature-256", sig.clone()),
        ],
        body,
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"ok": "pong"})));
    let (status, v) = post(
        &m,
        "/change_hook/github",
        &[
            ("X-GitHub-Event", "issues".into()),
            ("X-Hub-Signature-256", sig),
        ],
        body,
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"ignored": "issues"})));
    // A ping needs the signature too.
    let (status, _) = post(
        &m,
        "/change_hook/github",
        &[("X-GitHub-Event", "ping".into())],
        body,
    )
    .await;
    assert_eq!(status, 403);
    assert!(api_changes(&m).await.is_empty());
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unconfigured_hook_says_which_key_to_set() {
    let repo = GitRepo::new();
    let m = start(&repo, "").await;
    for forge in ["github", "gitlab", "gitea"] {
        let body = push_payload("https://forge.example/x.git", "main");
        let (status, v) = post(
            &m,
            &format!("/change_hook/{forge}"),
            &good_headers(forge, &body),
            &body,
        )
        .await;
        assert_eq!(status, 404, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains(&format!("set {forge}_secret in [:master:]")),
            "{msg}"
        );
    }
    let (status, _) = post(&m, "/change_hook/bitbucket", &[], b"{}").await;
    assert_eq!(status, 404);
    assert!(api_changes(&m).await.is_empty());
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_to_a_polled_branch_polls_instead_of_duplicating() {
    let repo = GitRepo::new();
    let m = start(&repo, SECRETS).await;
    wait_head(&m, &repo.url(), "main").await;
    let rev = repo.commit("a.c", "pushed");
    // The payload names the repository as the factory's `git` key does (plus .git).
    let body = push_payload(&format!("{}.git", repo.url()), "main");
    let headers = with_delivery(good_headers("github", &body), "github", "gh-poll-1");
    let (status, v) = post(&m, "/change_hook/github", &headers, &body).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["polled"], repo.url());
    assert_eq!(v["poll"], "queued");
    // The poller finds the commit itself (once), with the files git knows; the
    // payload's two commits are not stored.
    engine_common::wait_until("the poll the push asked for", || async {
        !api_changes(&m).await.is_empty()
    })
    .await;
    let list = api_changes(&m).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["revision"], rev.as_str());
    assert_eq!(list[0]["files"], json!(["a.c"]));
    // The same delivery again is answered, and neither polls nor stores.
    let (status, v) = post(&m, "/change_hook/github", &headers, &body).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["ignored"]
            .as_str()
            .unwrap()
            .contains("delivery \"gh-poll-1\" was already received"),
        "{v}"
    );

    // The same repository on a branch no factory polls: the commits are stored.
    let body = push_payload(&repo.url(), "feature");
    let (status, v) = post(
        &m,
        "/change_hook/gitea",
        &good_headers("gitea", &body),
        &body,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let list = api_changes(&m).await;
    assert_eq!(list.iter().filter(|c| c["branch"] == "feature").count(), 2);
    assert_eq!(list[0]["repository"], repo.url());
    assert_eq!(list[0]["project"], "proj");
    assert_eq!(list.len(), 3);
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poller_hook_takes_post_with_the_change_credentials() {
    let repo = GitRepo::new();
    let m = start(&repo, "changeuser = ci\nchangepassword = pa55\n").await;
    let port = m.master.htmlport();
    let path = format!(
        "/change_hook/poller?repo={}",
        repo.url().replace('/', "%2F")
    );
    let good = [("Authorization", basic("ci", "pa55"))];
    // It changes state: GET (and every other method) is refused, even with the
    // right credentials.
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let (status, head, body) = http(port, method, &path, &good, b"").await;
        assert_eq!(status, 405, "{method}: {body}");
        assert!(head.contains("allow: post\r\n"), "{method}: {head}");
        assert!(body.contains("takes POST only"), "{body}");
    }
    for auth in [
        None,
        Some(basic("ci", "nope")),
        Some(basic("change", "changepw")),
    ] {
        let headers: Vec<(&str, String)> = auth.into_iter().map(|a| ("Authorization", a)).collect();
        let (status, head, body) = http(port, "POST", &path, &headers, b"").await;
        assert_eq!(status, 401, "{body}");
        assert!(head.contains("www-authenticate: basic"), "{head}");
    }
    assert!(support::log_has(&[
        "change_hook/poller: refused a request from 127.0.0.1"
    ]));
    let (status, _, body) = http(
        port,
        "POST",
        "/change_hook/poller?repo=https%3A%2F%2Fnowhere.example%2Fx.git",
        &good,
        b"",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no factory polls https://nowhere.example/x.git"),
        "{body}"
    );
    let (status, _, body) = http(port, "POST", "/change_hook/poller", &good, b"").await;
    assert_eq!(status, 400, "{body}");

    wait_head(&m, &repo.url(), "main").await;
    let rev = repo.commit("b.c", "poll me");
    let (status, _, body) = http(port, "POST", &path, &good, b"").await;
    assert_eq!(status, 202, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["repository"], repo.url());
    assert_eq!(v["poll"], "queued");
    engine_common::wait_until("the requested poll", || async {
        !api_changes(&m).await.is_empty()
    })
    .await;
    assert_eq!(api_changes(&m).await[0]["revision"], rev.as_str());
    assert!(support::log_has(&[
        "change_hook/poller: poll of",
        "queued (asked by ci@127.0.0.1"
    ]));
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_seen_before_stores_nothing() {
    let repo = GitRepo::new();
    let m = start(&repo, SECRETS).await;
    for forge in ["github", "gitlab", "gitea"] {
        let path = format!("/change_hook/{forge}");
        let url = format!("https://forge.example/{forge}/replay.git");
        let body = push_payload(&url, "main");
        let id = format!("{forge}-delivery-1");
        let first = with_delivery(good_headers(forge, &body), forge, &id);
        let (status, v) = post(&m, &path, &first, &body).await;
        assert_eq!(status, 200, "{forge}: {v}");
        assert_eq!(v["changes"].as_array().unwrap().len(), 2, "{v}");

        // Replayed as it was (a forge's redelivery keeps its id too).
        let (status, v) = post(&m, &path, &first, &body).await;
        assert_eq!(status, 200, "{forge}: {v}");
        let note = v["ignored"].as_str().unwrap_or_default();
        assert!(
            note.contains(&format!("delivery \"{id}\" was already received"))
                && note.contains("nothing was stored"),
            "{forge}: {v}"
        );
        // The id header is not signed: the same body under another id, or none,
        // is the same delivery.
        for headers in [
            with_delivery(good_headers(forge, &body), forge, "made-up-id"),
            good_headers(forge, &body),
        ] {
            let (status, v) = post(&m, &path, &headers, &body).await;
            assert_eq!(status, 200, "{forge}: {v}");
            assert!(
                v["ignored"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("the same payload was already received"),
                "{forge}: {v}"
            );
        }
        // A new push under a new id is stored.
        let body2 = push_payload(&url, "dev");
        let second = with_delivery(
            good_headers(forge, &body2),
            forge,
            &format!("{forge}-delivery-2"),
        );
        let (status, v) = post(&m, &path, &second, &body2).await;
        assert_eq!(status, 200, "{forge}: {v}");
        assert_eq!(v["changes"].as_array().unwrap().len(), 2, "{v}");
    }
    // GitLab before 17.4 has no Idempotency-Key: X-Gitlab-Event-UUID names it.
    let body = push_payload("https://forge.example/gitlab/old.git", "main");
    let mut headers = good_headers("gitlab", &body);
    headers.push(("X-Gitlab-Event-UUID", "2f0b5d43-uuid".into()));
    let (status, _) = post(&m, "/change_hook/gitlab", &headers, &body).await;
    assert_eq!(status, 200);
    let other_body = push_payload("https://forge.example/gitlab/old.git", "rel");
    let mut replay = good_headers("gitlab", &other_body);
    replay.push(("X-Gitlab-Event-UUID", "2f0b5d43-uuid".into()));
    let (status, v) = post(&m, "/change_hook/gitlab", &replay, &other_body).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["ignored"]
            .as_str()
            .unwrap_or_default()
            .contains("delivery \"2f0b5d43-uuid\" was already received"),
        "{v}"
    );

    assert_eq!(api_changes(&m).await.len(), 3 * 4 + 2);
    assert_eq!(m.master.db().hook_deliveries().await.unwrap(), 3 * 2 + 1);
    assert!(support::log_has(&[
        "change_hook/gitea:",
        "was already received",
        "ignored"
    ]));
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_without_a_repository_url_is_refused() {
    let repo = GitRepo::new();
    let m = start(&repo, SECRETS).await;
    // The repository's full name is the factory's name; there is no URL to match.
    let body = json!({
        "ref": "refs/heads/main",
        "repository": {"full_name": "proj", "name": "proj"},
        "commits": [{"id": "3333333333333333333333333333333333333333", "message": "m",
                     "author": {"name": "Eve", "email": "eve@example.org"},
                     "added": ["x"], "modified": [], "removed": []}]
    })
    .to_string()
    .into_bytes();
    for forge in ["gitea", "github"] {
        let (status, v) = post(
            &m,
            &format!("/change_hook/{forge}"),
            &good_headers(forge, &body),
            &body,
        )
        .await;
        assert_eq!(status, 400, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("names no repository URL") && e.contains("by URL only"),
            "{e}"
        );
    }
    assert!(support::log_has(&[
        "change_hook/gitea: refused a push from 127.0.0.1",
        "names no repository URL"
    ]));
    assert!(api_changes(&m).await.is_empty());
    assert_eq!(m.master.db().hook_deliveries().await.unwrap(), 0);
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_post_changes_needs_the_change_credentials() {
    let repo = GitRepo::new();
    let m = start(&repo, "changeuser = ci\nchangepassword = pa55\n").await;
    let change = json!({"who": "Ann", "files": ["a.c"], "branch": "main",
                        "revision": "r1", "comments": "c", "when": 5,
                        "repository": repo.url(), "category": "k",
                        "project": "proj", "links": ["https://x/r1"]});
    let body = change.to_string();
    for auth in [
        None,
        Some(basic("ci", "nope")),
        Some(basic("change", "changepw")),
    ] {
        let mut headers: Vec<(&str, String)> =
            auth.into_iter().map(|a| ("Authorization", a)).collect();
        headers.push(("Content-Type", "application/json".into()));
        let (status, head, _) = http(
            m.master.htmlport(),
            "POST",
            "/api/v1/changes",
            &headers,
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 401);
        assert!(head.contains("www-authenticate: basic"), "{head}");
    }
    assert!(api_changes(&m).await.is_empty());
    assert!(support::log_has(&[
        "POST /api/v1/changes from 127.0.0.1:",
        "refused"
    ]));

    let good = [
        ("Authorization", basic("ci", "pa55")),
        ("Content-Type", "application/json".to_string()),
    ];
    let (status, v) = post(&m, "/api/v1/changes", &good, body.as_bytes()).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["id"], 1);
    for (k, val) in change.as_object().unwrap() {
        assert_eq!(&v[k], val, "{k}");
    }
    // A list gives a list; a bad one stores nothing.
    let (status, v) = post(
        &m,
        "/api/v1/changes",
        &good,
        br#"[{"who":"B"},{"who":"C","files":["x"]}]"#,
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (status, v) = post(
        &m,
        "/api/v1/changes",
        &good,
        br#"[{"who":"D"},{"files":[]}]"#,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("change 1: "), "{v}");
    let (status, _) = post(&m, "/api/v1/changes", &good, b"{not json").await;
    assert_eq!(status, 400);
    let list = api_changes(&m).await;
    let who: Vec<&str> = list.iter().map(|c| c["who"].as_str().unwrap()).collect();
    assert_eq!(who, vec!["C", "B", "Ann"]);
    finish(m, repo).await;
}

/// A push of one commit to `main` of a repository no factory uses.
fn push_of(commit: Value, git_ref: &str) -> Vec<u8> {
    json!({
        "ref": git_ref,
        "repository": {"full_name": "o/caps", "clone_url": "https://forge.example/o/caps.git",
                       "git_http_url": "https://forge.example/o/caps.git"},
        "commits": [commit]
    })
    .to_string()
    .into_bytes()
}

fn a_commit() -> Value {
    json!({"id": "4444444444444444444444444444444444444444", "message": "m",
           "url": "https://forge.example/o/caps/commit/4444",
           "author": {"name": "Ann", "email": "ann@example.org"},
           "added": ["a.c"], "modified": [], "removed": []})
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_changes_follow_the_rules_and_caps_of_every_change() {
    let repo = GitRepo::new();
    let m = start(&repo, SECRETS).await;
    let with = |key: &str, value: Value| {
        let mut c = a_commit();
        c[key] = value;
        c
    };
    let many: Vec<String> = (0..120_000).map(|i| format!("f{i}")).collect();
    let cases: Vec<(Value, &str, &str)> =
        vec![
        (
            with("message", json!("m".repeat(2 << 20))),
            "refs/heads/main",
            "commit 1 of 1 in the push: `comments` is 2097152 bytes; autobot takes at most 1048576",
        ),
        (
            with("added", json!(["f".repeat(5000)])),
            "refs/heads/main",
            "`files[0]` is 5000 bytes; autobot takes at most 4096",
        ),
        (
            with("added", json!(many)),
            "refs/heads/main",
            "`files` has 120000 entries; autobot takes at most 100000",
        ),
        (
            with("url", json!(format!("https://x/{}", "l".repeat(5000)))),
            "refs/heads/main",
            "`links[0]` is 5010 bytes",
        ),
        (
            with("author", json!({"name": "A".repeat(2000), "email": "a@x"})),
            "refs/heads/main",
            "`who` is 2006 bytes",
        ),
        (
            with("id", json!("--output=/tmp/autobot-pwned")),
            "refs/heads/main",
            "`revision` \"--output=/tmp/autobot-pwned\" starts with `-`",
        ),
        (
            with("id", json!("abc\ndef")),
            "refs/heads/main",
            "`revision` \"abc\\ndef\" holds a control character",
        ),
        (a_commit(), "refs/heads/--upload-pack=x", "`branch` \"--upload-pack=x\" starts with `-`"),
    ];
    for (forge, (commit, git_ref, want)) in ["github", "gitea", "gitlab"].iter().cycle().zip(cases)
    {
        let body = push_of(commit, git_ref);
        let (status, v) = post(
            &m,
            &format!("/change_hook/{forge}"),
            &good_headers(forge, &body),
            &body,
        )
        .await;
        assert_eq!(status, 400, "{forge} {want}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(want), "{forge}: want {want:?}, got {e}");
    }
    // One bad commit refuses the whole push.
    let body = json!({
        "ref": "refs/heads/main",
        "repository": {"clone_url": "https://forge.example/o/caps.git"},
        "commits": [a_commit(), with("id", json!("-x"))]
    })
    .to_string()
    .into_bytes();
    let (status, v) = post(
        &m,
        "/change_hook/github",
        &good_headers("github", &body),
        &body,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("commit 2 of 2 in the push: `revision`"),
        "{v}"
    );
    assert!(support::log_has(&[
        "change_hook/github: refused a push from 127.0.0.1",
        "`comments` is 2097152 bytes"
    ]));
    assert!(api_changes(&m).await.is_empty());
    // Nothing was remembered either: the fixed push can be delivered.
    assert_eq!(m.master.db().hook_deliveries().await.unwrap(), 0);
    finish(m, repo).await;
}

/// Send `head` (ending with the blank line), then `body`, and read the answer
/// (status, body text). The body goes in 64 KiB pieces from another task, since the
/// master may answer before reading it all.
async fn send_raw(port: u16, head: String, body: Vec<u8>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        if w.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for piece in body.chunks(64 << 10) {
            if w.write_all(piece).await.is_err() {
                return;
            }
        }
        let _ = w.flush().await;
        // Keep the write half open until the reader is done.
        std::future::pending::<()>().await;
    });
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    // Read until the whole answer is in (its Content-Length), or the master closes.
    let deadline = tokio::time::Instant::now() + engine_common::DEADLINE;
    loop {
        let n = tokio::time::timeout_at(deadline, r.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_their_cap_are_answered_413_naming_it() {
    let repo = GitRepo::new();
    let m = start(&repo, &format!("{SECRETS}{CHANGE_KEYS}")).await;
    let port = m.master.htmlport();
    let auth = basic("ci", "pa55");
    // Declared too large: refused before the body is read (none is sent).
    for (path, extra, cap) in [
        (
            "/change_hook/github",
            "X-Hub-Signature-256: sha256=00\r\nX-GitHub-Event: push\r\n".to_string(),
            "8388608 bytes (8 MiB)",
        ),
        (
            "/api/v1/changes",
            format!("Authorization: {auth}\r\n"),
            "4194304 bytes (4 MiB)",
        ),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: 104857600\r\n{extra}\r\n"
        );
        let (status, body) = send_raw(port, head, Vec::new()).await;
        assert_eq!(status, 413, "{path}: {body}");
        assert!(
            body.contains("the request body is 104857600 bytes") && body.contains(cap),
            "{path}: {body}"
        );
    }
    // Without a Content-Length (chunked), the cap holds while the body is read.
    let size = (8 << 20) + 1;
    let mut chunked = format!("{size:x}\r\n").into_bytes();
    chunked.extend(std::iter::repeat_n(b' ', size));
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let head = "POST /change_hook/gitea HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                Content-Type: application/json\r\nX-Gitea-Event: push\r\nX-Gitea-Signature: 00\r\n\
                Transfer-Encoding: chunked\r\n\r\n"
        .to_string();
    let (status, body) = send_raw(port, head, chunked).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("more than 8388608 bytes"), "{body}");
    assert!(support::log_has(&[
        "/change_hook/gitea: refused a body of more than 8388608 bytes"
    ]));
    // A GitLab token is checked before the body: a wrong one costs no body at all.
    let head = "POST /change_hook/gitlab HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                X-Gitlab-Token: wrong\r\nContent-Length: 104857600\r\n\r\n"
        .to_string();
    let (status, body) = send_raw(port, head, Vec::new()).await;
    assert_eq!(status, 403, "{body}");
    assert!(api_changes(&m).await.is_empty());
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_changes_follow_the_rules_and_caps_of_every_change() {
    let repo = GitRepo::new();
    let m = start(&repo, CHANGE_KEYS).await;
    let good = [
        ("Authorization", basic("ci", "pa55")),
        ("Content-Type", "application/json".to_string()),
    ];
    let with = |key: &str, value: Value| {
        let mut c = json!({"who": "Ann", "files": ["a.c"], "revision": "abc", "branch": "main"});
        c[key] = value;
        c
    };
    for (change, want) in [
        (
            with("comments", json!("c".repeat(2 << 20))),
            "`comments` is 2097152 bytes",
        ),
        (
            with("files", json!(["f".repeat(5000)])),
            "`files[0]` is 5000 bytes",
        ),
        (
            with("links", json!(["l".repeat(5000)])),
            "`links[0]` is 5000 bytes",
        ),
        (
            with("links", json!(vec!["https://x"; 101])),
            "`links` has 101 entries",
        ),
        (with("who", json!("w".repeat(2000))), "`who` is 2000 bytes"),
        (
            with("repository", json!("r".repeat(5000))),
            "`repository` is 5000 bytes",
        ),
        (
            with("project", json!("p".repeat(2000))),
            "`project` is 2000 bytes",
        ),
        (
            with("category", json!("c".repeat(2000))),
            "`category` is 2000 bytes",
        ),
        (
            with("revision", json!("r".repeat(300))),
            "`revision` is 300 bytes",
        ),
        (
            with("revision", json!("--output=/tmp/f")),
            "starts with `-`",
        ),
        (
            with("branch", json!("-b")),
            "`branch` \"-b\" starts with `-`",
        ),
        (
            with("branch", json!("main\u{1b}[2J")),
            "control character (U+001B",
        ),
        (
            with("when", json!(1_000_000_000_000_000i64)),
            "`when` is 1000000000000000",
        ),
    ] {
        let body = change.to_string();
        let (status, v) = post(&m, "/api/v1/changes", &good, body.as_bytes()).await;
        assert_eq!(status, 400, "{want}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(want),
            "want {want:?}: {v}"
        );
    }
    assert!(api_changes(&m).await.is_empty());
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pollers_huge_commit_message_is_cut_with_a_marker() {
    let repo = GitRepo::new();
    let m = start(&repo, CHANGE_KEYS).await;
    wait_head(&m, &repo.url(), "main").await;
    let message = format!("huge\n\n{}", "x".repeat(3 << 20));
    let msg_file = repo._dir.path().join("message");
    std::fs::write(&msg_file, &message).unwrap();
    std::fs::write(repo.path.join("big.c"), "int x;\n").unwrap();
    support::git(&repo.path, &["add", "-A"]);
    support::git(
        &repo.path,
        &["commit", "-q", "-F", msg_file.to_str().unwrap()],
    );
    let rev = support::git(&repo.path, &["rev-parse", "HEAD"]);
    let path = format!(
        "/change_hook/poller?repo={}",
        repo.url().replace('/', "%2F")
    );
    let auth = [("Authorization", basic("ci", "pa55"))];
    let (status, _, body) = http(m.master.htmlport(), "POST", &path, &auth, b"").await;
    assert_eq!(status, 202, "{body}");
    engine_common::wait_until("the poller's Change", || async {
        !api_changes(&m).await.is_empty()
    })
    .await;
    let c = m.master.db().changes(1, None).await.unwrap().remove(0);
    assert_eq!(c.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(c.files, vec!["big.c"]);
    assert!(
        c.comments.len() <= 1 << 20,
        "{} bytes stored",
        c.comments.len()
    );
    assert!(c.comments.starts_with("huge\n\nxxxx"));
    let (kept, marker) = c
        .comments
        .rsplit_once("\n[autobot: the message was cut: ")
        .unwrap();
    let more: usize = marker
        .strip_suffix(" more bytes]")
        .unwrap()
        .parse()
        .unwrap();
    // git ends the message with a newline of its own.
    assert!(
        (message.len()..=message.len() + 1).contains(&(kept.len() + more)),
        "{} kept + {more} cut for a message of {}",
        kept.len(),
        message.len()
    );
    finish(m, repo).await;
}

/// Whether `hg` runs here. Without it this test fails under `CI=true` (a test that
/// cannot run must not pass there) and is skipped, saying so, elsewhere.
fn hg_here() -> Option<std::path::PathBuf> {
    if !support::need_tools(&[("hg", "apt-get install mercurial")]) {
        return None;
    }
    support::which("hg")
}

/// The `hg` the master runs in `a_burst_of_poll_requests_*`: each `clone` or `pull`
/// (one per poll) announces itself as `GATES/poll.N` and waits until the test
/// writes to the fifo `GATES/gate.N` (a slow network the test controls), then runs
/// the real hg.
const GATED_HG: &str = r#"#!/bin/sh
case " $* " in
  *" clone "*|*" pull "*)
    n=1
    while ! mkdir "$GATES/poll.$n" 2>/dev/null; do n=$((n + 1)); done
    read -r _ < "$GATES/gate.$n"
    ;;
esac
exec "$REAL_HG" "$@"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_poll_requests_is_one_poll_in_flight_plus_one_queued() {
    let Some(real_hg) = hg_here() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tmp.path()).unwrap();
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let hg = |args: &[&str]| {
        support::run_ok(
            std::process::Command::new(&real_hg)
                .args(args)
                .current_dir(&repo)
                .env("HGPLAIN", "1")
                .env("HGRCPATH", "")
                .env("HGUSER", "Ann <ann@example.org>"),
        )
    };
    hg(&["init"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    hg(&["commit", "-A", "-q", "-m", "first"]);

    let gates = root.join("gates");
    let bin = root.join("bin");
    std::fs::create_dir_all(&gates).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    for n in 1..=4 {
        nix::unistd::mkfifo(
            &gates.join(format!("gate.{n}")),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    std::fs::write(bin.join("hg"), GATED_HG).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("hg"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let mdir = root.join("master");
    std::fs::create_dir_all(&mdir).unwrap();
    let htmlport = engine_common::free_port();
    let ini = engine_common::master_ini(
        &format!("[proj]\ntype = source\nhg = {}#default\n", repo.display()),
        "pollInterval = 3600\nchangeuser = ci\nchangepassword = pa55\n",
    )
    .replace(
        "slaveport = 9010",
        &format!("slaveport = {}", engine_common::free_port()),
    )
    .replace("htmlport = 8010", &format!("htmlport = {htmlport}"));
    support::write_master_ini(&mdir, ini);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = std::fs::File::create(mdir.join("run.log")).unwrap();
    let mut cmd = std::process::Command::new(engine_common::autobot_bin());
    cmd.arg("run")
        .arg(&mdir)
        .env("PATH", path)
        .env("GATES", &gates)
        .env("REAL_HG", &real_hg)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    autobot::daemon::new_session(&mut cmd);
    let _master = engine_common::Daemon(cmd.spawn().unwrap());

    let polls = |n: usize| gates.join(format!("poll.{n}")).is_dir();
    let release = |n: usize| {
        let gate = gates.join(format!("gate.{n}"));
        async move {
            let write = tokio::task::spawn_blocking(move || std::fs::write(gate, "go\n"));
            tokio::time::timeout(engine_common::DEADLINE, write)
                .await
                .expect("the poll waiting at its gate")
                .unwrap()
                .unwrap();
        }
    };
    // The first poll (the clone at start-up) is in flight, held at its gate.
    engine_common::wait_until("the first poll", || async { polls(1) }).await;
    engine_common::wait_until("the master's web server", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", htmlport))
            .await
            .is_ok()
    })
    .await;

    let hook = format!(
        "/change_hook/poller?repo={}",
        repo.display().to_string().replace('/', "%2F")
    );
    let ask = || {
        let hook = hook.clone();
        async move {
            let auth = [("Authorization", basic("ci", "pa55"))];
            let (status, _, body) = http(htmlport, "POST", &hook, &auth, b"").await;
            assert_eq!(status, 202, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            v["poll"].as_str().unwrap().to_string()
        }
    };
    // A burst of 40 requests while it runs: one poll queued, the rest join it.
    let burst: Vec<_> = (0..40).map(|_| tokio::spawn(ask())).collect();
    let mut answers = Vec::new();
    for b in burst {
        answers.push(b.await.unwrap());
    }
    let queued = answers.iter().filter(|a| *a == "queued").count();
    let joined = answers.iter().filter(|a| *a == "already queued").count();
    assert_eq!((queued, joined), (1, 39), "{answers:?}");
    assert!(
        !polls(2),
        "a second poll started while the first was in flight"
    );

    // The first ends; the queued one starts and takes every request made so far.
    release(1).await;
    engine_common::wait_until("the queued poll", || async { polls(2) }).await;
    assert_eq!(ask().await, "queued");
    assert_eq!(ask().await, "already queued");
    release(2).await;
    engine_common::wait_until("the poll queued during the second", || async { polls(3) }).await;
    // The third poll finds a new commit; once its Change is stored, nothing is
    // pending: no fourth poll starts.
    std::fs::write(repo.join("README"), "hello again\n").unwrap();
    hg(&["commit", "-q", "-m", "second"]);
    release(3).await;
    engine_common::wait_until("the third poll's Change", || async {
        let (_, body) = support::http_get(htmlport, "/api/v1/changes").await;
        body.contains("\"second\"")
    })
    .await;
    assert!(!polls(4), "a poll nobody asked for");
    let log = std::fs::read_to_string(mdir.join("run.log")).unwrap();
    assert_eq!(
        log.matches("change_hook/poller: poll of").count(),
        42,
        "{log}"
    );
}
