//! The change doors of htmlport against a real master: `POST /api/v1/changes`
//! (HTTP Basic with changeuser/changepassword), the GitHub, GitLab and Gitea push
//! webhooks (good signature → Changes stored; bad or missing → 403, nothing stored;
//! unconfigured → 404 naming the key), a push to a polled repository (→ poll now,
//! no duplicate Changes) and `/change_hook/poller?repo=URL` (404 / 202).

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "change_common/mod.rs"]
mod change_common;

use std::time::Duration;

use change_common::{api_changes, basic, finish, http, start, GitRepo};
use serde_json::{json, Value};

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
    let mut polls = m.master.changes().poll_requests();
    // The payload names the repository as the factory's `git` key does (plus .git).
    let body = push_payload(&format!("{}.git", repo.url()), "main");
    let (status, v) = post(
        &m,
        "/change_hook/github",
        &good_headers("github", &body),
        &body,
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["polled"], repo.url());
    let url = tokio::time::timeout(Duration::from_secs(10), polls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(url, repo.url());
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
    assert!(list.iter().all(|c| c["branch"] == "feature"), "{list:?}");
    assert_eq!(list.iter().filter(|c| c["branch"] == "feature").count(), 2);
    assert_eq!(list[0]["repository"], repo.url());
    assert_eq!(list[0]["project"], "proj");
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poller_hook_polls_known_repositories_only() {
    let repo = GitRepo::new();
    let m = start(&repo, "").await;
    let mut polls = m.master.changes().poll_requests();
    let port = m.master.htmlport();
    let (status, _, body) = http(
        port,
        "GET",
        "/change_hook/poller?repo=https%3A%2F%2Fnowhere.example%2Fx.git",
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no factory polls https://nowhere.example/x.git"),
        "{body}"
    );
    let (status, _, body) = http(port, "POST", "/change_hook/poller", &[], b"").await;
    assert_eq!(status, 400, "{body}");

    let q = repo.url().replace('/', "%2F");
    let (status, _, body) = http(
        port,
        "POST",
        &format!("/change_hook/poller?repo={q}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["repository"], repo.url());
    assert!(v["pollers"].as_u64().unwrap() >= 1);
    let url = tokio::time::timeout(Duration::from_secs(10), polls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(url, repo.url());
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
