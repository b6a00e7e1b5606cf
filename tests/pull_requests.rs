//! Pull and merge requests end to end: a real git "forge" repository (made with
//! the git CLI) whose `refs/pull/7/head` and `refs/merge-requests/7/head` point
//! at a commit on no branch; the GitHub, Gitea and GitLab hooks get the events in
//! the forges' documented shapes (opened / synchronize / reopened, closed, from a
//! fork), signed as the forges sign them, POSTed to a real master. The build of
//! an opted-in factory (`pullRequests = true`) checks the request's head out on
//! an autobot slave and on a stock buildbot-worker (a file only that commit has
//! is there; got_revision is the head sha); a factory without `pullRequests`,
//! or whose `pullRequestBranches` leave the target out, builds nothing; a
//! second synchronize cancels the first build (held on a FIFO the test
//! controls) and the queued request of the old head, and builds the new head; a fork's request is built only with
//! `pullRequestsFromForks`, untrusted (a `%(secret:X)s` step fails saying why);
//! and the status push records the result against the head sha.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine_common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

fn git(dir: &Path, args: &[&str]) -> String {
    support::git(dir, args).trim().to_string()
}

/// The forge's repository at `ROOT/owner/repo`: `main` with one commit, and
/// pull request 7 whose head (on no branch) adds `pr_only.txt` and `hold`
/// (the step waits on the FIFO while `hold` is there).
struct ForgeRepo {
    path: PathBuf,
    head: String,
}

impl ForgeRepo {
    fn new(root: &Path) -> ForgeRepo {
        let path = root.join("owner/repo");
        std::fs::create_dir_all(&path).unwrap();
        git(&path, &["init", "-q", "-b", "main"]);
        support::write_file(&path, "README", "hello\n");
        git(&path, &["add", "-A"]);
        git(&path, &["commit", "-q", "-m", "first"]);
        git(&path, &["checkout", "-q", "-b", "feature"]);
        support::write_file(&path, "pr_only.txt", "from the request\n");
        support::write_file(&path, "hold", "yes\n");
        git(&path, &["add", "-A"]);
        git(&path, &["commit", "-q", "-m", "the request"]);
        let head = git(&path, &["rev-parse", "HEAD"]);
        let r = ForgeRepo { path, head };
        r.set_pull_refs(&r.head.clone());
        git(&r.path, &["checkout", "-q", "main"]);
        git(&r.path, &["branch", "-q", "-D", "feature"]);
        r
    }

    fn set_pull_refs(&self, sha: &str) {
        git(&self.path, &["update-ref", "refs/pull/7/head", sha]);
        git(
            &self.path,
            &["update-ref", "refs/merge-requests/7/head", sha],
        );
    }

    /// A new head on top of the request's (without `hold`): its sha.
    fn push_new_head(&self) -> String {
        git(&self.path, &["checkout", "-q", "--detach", &self.head]);
        git(&self.path, &["rm", "-q", "hold"]);
        support::write_file(&self.path, "pr_only.txt", "second head\n");
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "-q", "-m", "second head"]);
        let sha = git(&self.path, &["rev-parse", "HEAD"]);
        git(&self.path, &["checkout", "-q", "main"]);
        self.set_pull_refs(&sha);
        sha
    }

    fn url(&self) -> String {
        self.path.display().to_string()
    }
}

/// GitHub's (and Gitea's) `pull_request` payload.
fn github_payload(action: &str, url: &str, base: &str, head: &str, fork: bool) -> Vec<u8> {
    let head_repo = if fork { "someone/repo" } else { "owner/repo" };
    json!({
        "action": action,
        "number": 7,
        "pull_request": {
            "number": 7,
            "title": "Add pr_only <b>file</b>",
            "html_url": "https://forge.example/owner/repo/pull/7",
            "user": {"login": "ann"},
            "head": {"ref": "feature", "sha": head,
                     "repo": {"full_name": head_repo, "clone_url": format!("https://forge.example/{head_repo}.git")}},
            "base": {"ref": base, "sha": "0000000000000000000000000000000000000000",
                     "repo": {"full_name": "owner/repo", "clone_url": url}},
        },
        "repository": {"full_name": "owner/repo", "clone_url": url,
                       "html_url": "https://forge.example/owner/repo"},
        "sender": {"login": "ann"},
    })
    .to_string()
    .into_bytes()
}

/// GitLab's `Merge Request Hook` payload.
fn gitlab_payload(action: &str, url: &str, base: &str, head: &str) -> Vec<u8> {
    json!({
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"name": "Ann", "username": "ann"},
        "project": {"id": 1, "path_with_namespace": "owner/repo", "git_http_url": url,
                    "web_url": "https://gitlab.example/owner/repo"},
        "object_attributes": {
            "iid": 7, "title": "Add pr_only", "action": action,
            "url": "https://gitlab.example/owner/repo/-/merge_requests/7",
            "source_branch": "feature", "target_branch": base,
            "source_project_id": 1, "target_project_id": 1,
            "source": {"path_with_namespace": "owner/repo", "git_http_url": url},
            "target": {"path_with_namespace": "owner/repo", "git_http_url": url},
            "last_commit": {"id": head, "message": "the request"},
            "oldrev": if action == "update" { Value::from("1111111111111111111111111111111111111111") } else { Value::Null },
        },
    })
    .to_string()
    .into_bytes()
}

async fn post(m: &EngineMaster, forge: &str, event: &str, id: &str, body: &[u8]) -> (u16, Value) {
    let ct = ("Content-Type", "application/json".to_string());
    let headers: Vec<(&str, String)> = match forge {
        "github" => vec![
            ct,
            ("X-GitHub-Event", event.into()),
            ("X-GitHub-Delivery", id.into()),
            (
                "X-Hub-Signature-256",
                format!("sha256={}", hmac_hex("gh-s3cret", body)),
            ),
        ],
        "gitlab" => vec![
            ct,
            ("X-Gitlab-Event", event.into()),
            ("Idempotency-Key", id.into()),
            ("X-Gitlab-Token", "gl-t0ken".into()),
        ],
        _ => vec![
            ct,
            ("X-Gitea-Event", event.into()),
            ("X-Gitea-Delivery", id.into()),
            ("X-Gitea-Signature", hmac_hex("gt-s3cret", body)),
        ],
    };
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let path = format!("/change_hook/{forge}");
    let r = support::http(m.master.htmlport(), "POST", &path, &headers, body).await;
    let v = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body));
    (r.status, v)
}

/// The finished build `number` of `builder`.
async fn finished(
    m: &EngineMaster,
    builder: &str,
    number: i64,
) -> autobot::db::builds::BuildDetail {
    let db = m.master.db().clone();
    let b = builder.to_string();
    wait_until(&format!("{builder} build {number} to finish"), || {
        let (db, b) = (db.clone(), b.clone());
        async move { matches!(db.build(&b, number).await, Ok(Some(d)) if d.build.result.is_some()) }
    })
    .await;
    m.build(builder, number).await
}

fn prop(b: &autobot::db::builds::BuildDetail, name: &str) -> String {
    b.properties
        .get(name)
        .map(|(v, _)| v.clone())
        .unwrap_or_default()
}

async fn has_build(m: &EngineMaster, builder: &str) -> bool {
    matches!(m.master.db().build(builder, 1).await, Ok(Some(_)))
}

/// The shell step every pull request factory runs: the request's file must be
/// there; while `hold` is (the first head), it waits on FIFO.
fn check_step(fifo: &Path) -> String {
    format!(
        "step.check = sh -c \"cat pr_only.txt && if [ -f hold ] && [ -p {f} ]; then cat {f}; fi\"\n",
        f = fifo.display()
    )
}

/// A recording forge API for the status push: every request's path and JSON body.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Recorder {
    async fn start(&self) -> u16 {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let end = loop {
                        let n = c.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let len: usize = head
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = buf[end + 4..].to_vec();
                    while body.len() < len {
                        let n = c.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(&chunk[..n]);
                    }
                    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.lock().unwrap().push((path, v));
                    let reply = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
                    let _ = c.write_all(reply.as_bytes()).await;
                    let _ = c.shutdown().await;
                });
            }
        });
        port
    }

    fn states(&self, path: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v["state"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

async fn start(root: &Path, factories: &str) -> EngineMaster {
    let ini = master_ini(factories, &format!("{SECRETS}treeStable = 0\n"));
    let m = EngineMaster::start(&ini, Duration::from_secs(30)).await;
    let _ = root;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_request_builds_its_head_and_only_where_opted_in() {
    let root = tempfile::tempdir().unwrap();
    let repo = ForgeRepo::new(root.path());
    let fifo = root.path().join("nofifo");
    let rec = Recorder::default();
    let port = rec.start().await;
    std::fs::write(root.path().join("gh-token"), "ghp-tok\n").unwrap();
    let factories = format!(
        "[pr]\ntype = shell\ngit = {url}#main\npullRequests = true\n{step}\
         statusPush = github\nstatusPushURL = http://127.0.0.1:{port}/gh/\nstatusPushToken = gh-token\n\n\
         [plain]\ntype = shell\ngit = {url}#main\n{step}\n\
         [rel]\ntype = shell\ngit = {url}#main\npullRequests = true\npullRequestBranches = release\n{step}\n\
         [main-only]\ntype = shell\ngit = {url}#main\npullRequests = true\npullRequestBranches = main\n{step}\n",
        url = repo.url(),
        step = check_step(&fifo),
    );
    let ini = master_ini(&factories, &format!("{SECRETS}treeStable = 0\n"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.path().join("gh-token"), dir.path().join("gh-token")).unwrap();
    support::write_master_ini(dir.path(), ini);
    support::capture_logs();
    let master = start_master(dir.path(), Duration::from_secs(30)).await;
    let m = EngineMaster { dir, master };
    let _slave = m.slave().await;

    // `closed` (and other actions) are answered and ignored.
    let closed = github_payload("closed", &repo.url(), "main", &repo.head, false);
    let (status, v) = post(&m, "github", "pull_request", "d-closed", &closed).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["ignored"].as_str().unwrap().contains("closed"), "{v}");

    let opened = github_payload("opened", &repo.url(), "main", &repo.head, false);
    let (status, v) = post(&m, "github", "pull_request", "d-1", &opened).await;
    assert_eq!(status, 200, "{v}");
    let change = &v["changes"][0];
    assert_eq!(change["category"], "pull");
    assert_eq!(change["branch"], "main");
    assert_eq!(change["revision"], repo.head.as_str());
    assert_eq!(change["who"], "ann");
    // The same delivery again stores nothing.
    let (status, v) = post(&m, "github", "pull_request", "d-1", &opened).await;
    assert_eq!(status, 200);
    assert!(v["ignored"].is_string(), "{v}");

    let b = finished(&m, "pr-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(prop(&b, "got_revision"), repo.head);
    assert_eq!(prop(&b, "pr_number"), "7");
    assert_eq!(prop(&b, "pr_base_branch"), "main");
    assert_eq!(prop(&b, "pr_head_ref"), "feature");
    assert_eq!(
        prop(&b, "pr_url"),
        "https://forge.example/owner/repo/pull/7"
    );
    assert_eq!(prop(&b, "pr_from_fork"), "");
    let log = m.log_text("pr-s1", 1, "check").await;
    assert!(log.contains("from the request"), "{log}");
    let mo = finished(&m, "main-only-s1", 1).await;
    assert_eq!(mo.build.result.as_deref(), Some("success"));
    // The status of the head sha (so the forge shows it on the request).
    let path = format!("/gh/repos/owner/repo/statuses/{}", repo.head);
    let r = rec.clone();
    wait_until("the success status of the head", || {
        let ok = r.states(&path).contains(&"success".to_string());
        async move { ok }
    })
    .await;
    // Not opted in, or another target branch: nothing built.
    assert!(!has_build(&m, "plain-s1").await);
    assert!(!has_build(&m, "rel-s1").await);

    // The build page links the request (escaped, http(s) only).
    let (status, page) = support::http_get(m.master.htmlport(), "/builders/pr-s1/builds/1").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("href=\"https://forge.example/owner/repo/pull/7\""),
        "{page}"
    );
    assert!(!page.contains("<b>file</b>"), "the title is escaped");
    // The waterfall's `pull` category: the builders of pull requests only.
    let (status, page) = support::http_get(m.master.htmlport(), "/waterfall?category=pull").await;
    assert_eq!(status, 200);
    assert!(page.contains("pr-s1") && page.contains("rel-s1"), "{page}");
    assert!(!page.contains("plain-s1"), "{page}");
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_head_cancels_the_running_build_and_builds_itself() {
    let root = tempfile::tempdir().unwrap();
    let repo = ForgeRepo::new(root.path());
    let fifo = root.path().join("gate");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // Slave s2 never connects: its builder's request waits in the queue.
    let factories = format!(
        "[slave:s2]\n\n[pr]\ntype = shell\ngit = {}#main\npullRequests = true\n{}",
        repo.url(),
        check_step(&fifo)
    );
    let m = start(root.path(), &factories).await;
    let _slave = m.slave().await;
    let opened = github_payload("opened", &repo.url(), "main", &repo.head, false);
    assert_eq!(
        post(&m, "github", "pull_request", "a", &opened).await.0,
        200
    );
    // The first build holds on the FIFO.
    let db = m.master.db().clone();
    wait_until("the first build to run its check step", || {
        let db = db.clone();
        async move {
            matches!(db.build("pr-s1", 1).await, Ok(Some(d))
                if d.steps.iter().any(|s| s.name == "check" && s.started_at.is_some()))
        }
    })
    .await;
    let queued = db.pending_requests("pr-s2").await.unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let head2 = repo.push_new_head();
    let sync = github_payload("synchronize", &repo.url(), "main", &head2, false);
    assert_eq!(post(&m, "github", "pull_request", "b", &sync).await.0, 200);
    // The old head's queued request is cancelled, the new head's waits.
    let old = m.wait_request(queued[0].id).await;
    assert_eq!(old.result.as_deref(), Some("cancelled"), "{old:?}");
    let db2 = db.clone();
    let old_id = queued[0].id;
    wait_until("the new head's request for s2", || {
        let db = db2.clone();
        async move {
            matches!(db.pending_requests("pr-s2").await, Ok(p) if p.len() == 1 && p[0].id != old_id)
        }
    })
    .await;
    let first = finished(&m, "pr-s1", 1).await;
    assert_eq!(first.build.result.as_deref(), Some("cancelled"));
    assert!(
        first.build.text.contains(&format!("superseded by {head2}")),
        "{:?}",
        first.build.text
    );
    let second = finished(&m, "pr-s1", 2).await;
    assert_eq!(
        second.build.result.as_deref(),
        Some("success"),
        "{second:?}"
    );
    assert_eq!(prop(&second, "got_revision"), head2);
    let log = m.log_text("pr-s1", 2, "check").await;
    assert!(log.contains("second head"), "{log}");
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_build_only_when_allowed_and_untrusted() {
    let root = tempfile::tempdir().unwrap();
    let repo = ForgeRepo::new(root.path());
    let fifo = root.path().join("nofifo");
    let factories = format!(
        "[pr]\ntype = shell\ngit = {url}#main\npullRequests = true\n{step}\n\
         [forks]\ntype = shell\ngit = {url}#main\npullRequests = true\npullRequestsFromForks = true\n{step}\
         step.publish = echo %(secret:TOKEN)s\n",
        url = repo.url(),
        step = check_step(&fifo),
    );
    let ini = master_ini(
        &factories,
        &format!("{SECRETS}treeStable = 0\nsecretsDir = secrets\n"),
    );
    support::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(secrets.join("TOKEN"), "s3cr3t-value\n").unwrap();
    std::fs::set_permissions(
        secrets.join("TOKEN"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    support::write_master_ini(dir.path(), ini);
    let master = start_master(dir.path(), Duration::from_secs(30)).await;
    let m = EngineMaster { dir, master };
    let _slave = m.slave().await;
    let fork = github_payload("opened", &repo.url(), "main", &repo.head, true);
    assert_eq!(post(&m, "gitea", "pull_request", "f", &fork).await.0, 200);
    let b = finished(&m, "forks-s1", 1).await;
    assert_eq!(prop(&b, "pr_from_fork"), "true");
    assert_eq!(prop(&b, "got_revision"), repo.head);
    // The step naming a secret fails the build, saying why.
    assert_eq!(b.build.result.as_deref(), Some("exception"), "{b:?}");
    assert!(b.build.text.contains("untrusted"), "{:?}", b.build.text);
    let check = b.steps.iter().find(|s| s.name == "check").unwrap();
    assert_eq!(check.result.as_deref(), Some("success"));
    let publish = b.steps.iter().find(|s| s.name == "publish").unwrap();
    assert_eq!(publish.result.as_deref(), Some("exception"));
    assert!(
        publish.text.contains("pr_from_fork = true"),
        "{:?}",
        publish.text
    );
    let log = m.log_text("forks-s1", 1, "publish").await;
    assert!(!log.contains("s3cr3t-value"));
    assert!(
        !has_build(&m, "pr-s1").await,
        "no build without pullRequestsFromForks"
    );
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_and_gitea_requests_on_a_stock_buildbot_worker() {
    let root = tempfile::tempdir().unwrap();
    let repo = ForgeRepo::new(root.path());
    let fifo = root.path().join("nofifo");
    let factories = format!(
        "[pr]\ntype = shell\ngit = {}#main\npullRequests = true\n{}",
        repo.url(),
        check_step(&fifo)
    );
    let m = start(root.path(), &factories).await;
    let Some(_worker) = m.worker().await else {
        return;
    };
    // An update without a new commit (a new title) builds nothing.
    let mut quiet: Value =
        serde_json::from_slice(&gitlab_payload("update", &repo.url(), "main", &repo.head)).unwrap();
    quiet["object_attributes"]["oldrev"] = Value::Null;
    let quiet = quiet.to_string().into_bytes();
    let (status, v) = post(&m, "gitlab", "Merge Request Hook", "q", &quiet).await;
    assert_eq!(status, 200);
    assert!(v["ignored"].is_string(), "{v}");
    let open = gitlab_payload("open", &repo.url(), "main", &repo.head);
    let (status, v) = post(&m, "gitlab", "Merge Request Hook", "g1", &open).await;
    assert_eq!(status, 200, "{v}");
    let b = finished(&m, "pr-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(prop(&b, "got_revision"), repo.head);
    assert_eq!(prop(&b, "pr_forge"), "gitlab");
    let log = m.log_text("pr-s1", 1, "checkout").await;
    assert!(log.contains("refs/merge-requests/7/head"), "{log}");

    let head2 = repo.push_new_head();
    let sync = github_payload("synchronized", &repo.url(), "main", &head2, false);
    let (status, v) = post(&m, "gitea", "pull_request", "t1", &sync).await;
    assert_eq!(status, 200, "{v}");
    let b = finished(&m, "pr-s1", 2).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(prop(&b, "got_revision"), head2);
    let log = m.log_text("pr-s1", 2, "check").await;
    assert!(log.contains("second head"), "{log}");
    let _ = BTreeMap::<String, String>::new();
    m.master.shutdown().await;
}

/// `pullRequests` needs exactly one source, a git one: checkconfig says where.
#[test]
fn pull_requests_need_one_git_source() {
    let dir = tempfile::tempdir().unwrap();
    let ini = master_ini(
        "[two]\ntype = shell\ngit = /a#main /b#main\npullRequests = true\nstep.x = true\n",
        "",
    );
    support::write_master_ini(dir.path(), ini);
    let out = std::process::Command::new(autobot_bin())
        .arg("checkconfig")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("master.ini:") && err.contains("pullRequests") && err.contains("one git"),
        "{err}"
    );
}
