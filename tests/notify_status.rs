//! Commit status on the forges (`statusPush = github|gitea|gitlab`) against a
//! local HTTP server started by the test that records every request: method,
//! path, auth header and JSON body in each forge's documented shape, a status
//! at the start (pending; GitLab: running) and one at the end, target URL the
//! build's page, for the build's revision; a 500 answer is retried and the
//! API shows the attempts.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autobot::engine::ForceRequest;
use engine_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request the forge got.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: serde_json::Value,
}

/// The recording forge: answers 201, except 500 to the first request whose
/// JSON `state` is `success` when `fail_first_success` is set.
#[derive(Clone)]
struct Forge {
    port: u16,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Forge {
    async fn start(fail_first_success: bool) -> Forge {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = l.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let fail = Arc::new(AtomicBool::new(fail_first_success));
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = l.accept().await else {
                    return;
                };
                let (s, fail) = (s.clone(), fail.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let n = c.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap().split(' ');
                    let method = first.next().unwrap().to_string();
                    let path = first.next().unwrap().to_string();
                    let headers: BTreeMap<String, String> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = buf[head_end + 4..].to_vec();
                    while body.len() < len {
                        let n = c.read(&mut chunk).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(&chunk[..n]);
                    }
                    let body: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    let code = if body["state"] == "success" && fail.swap(false, Ordering::SeqCst) {
                        "500 Internal Server Error"
                    } else {
                        "201 Created"
                    };
                    s.lock().unwrap().push(Recorded {
                        method,
                        path,
                        headers,
                        body,
                    });
                    let reply = format!(
                        "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                    );
                    let _ = c.write_all(reply.as_bytes()).await;
                    let _ = c.shutdown().await;
                });
            }
        });
        Forge { port, seen }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait(&self, what: &str, mut cond: impl FnMut(&[Recorded]) -> bool) {
        let this = self.clone();
        wait_until(what, || {
            let ok = cond(&this.requests());
            async move { ok }
        })
        .await;
    }
}

/// A git repository at `.../owner/repo` with one commit; its sha.
fn repo(root: &Path) -> (std::path::PathBuf, String) {
    let repo = root.join("owner/repo");
    std::fs::create_dir_all(&repo).unwrap();
    support::git(&repo, &["init", "-q", "-b", "main"]);
    support::write_file(&repo, "a.txt", "a\n");
    support::git(&repo, &["add", "a.txt"]);
    support::git(&repo, &["commit", "-q", "-m", "first"]);
    let sha = support::git(&repo, &["rev-parse", "HEAD"]);
    (repo, sha)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_gitea_and_gitlab_get_start_and_end_statuses() {
    if !support::need_tools(&[("git", "apt-get install git")]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (repo, sha) = repo(root.path());
    let forge = Forge::start(true).await;
    let go = root.path().join("go");
    // Each build waits until the test has seen its start status.
    let step = format!(
        "step.wait = sh -c 'while [ ! -e {go}-$AUTOBOT_PROP_buildername ]; do sleep 0.02; done; exit \"$AUTOBOT_PROP_code\"'",
        go = go.display()
    );
    let p = forge.port;
    let factories = format!(
        "[gh]\ntype = shell\ngit = {repo}#main\n{step}\nstatusPush = github\n\
         statusPushURL = http://127.0.0.1:{p}/gh/\nstatusPushToken = gh-token\n\n\
         [gt]\ntype = shell\ngit = {repo}#main\n{step}\nstatusPush = gitea\n\
         statusPushURL = http://127.0.0.1:{p}/gt/api/v1\nstatusPushToken = tokens/gt\n\n\
         [gl]\ntype = shell\ngit = {repo}#main\n{step}\nstatusPush = gitlab\n\
         statusPushURL = http://127.0.0.1:{p}/gl/api/v4\nstatusPushToken = gl-token\n",
        repo = repo.display()
    );
    support::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gh-token"), "ghp-secret-1\n").unwrap();
    std::fs::create_dir(dir.path().join("tokens")).unwrap();
    std::fs::write(dir.path().join("tokens/gt"), "gitea-secret-2").unwrap();
    std::fs::write(dir.path().join("gl-token"), "glpat-secret-3\n").unwrap();
    support::write_master_ini(
        dir.path(),
        master_ini(&factories, "buildbotURL = http://ci.example.org/\n"),
    );
    let master = start_master(dir.path(), Duration::from_secs(30)).await;
    let m = EngineMaster { dir, master };
    let _slave = m.slave().await;

    let cases = [
        (
            "gh-s1",
            0,
            "/gh/repos/owner/repo/statuses/",
            "pending",
            "success",
        ),
        (
            "gt-s1",
            0,
            "/gt/api/v1/repos/owner/repo/statuses/",
            "pending",
            "success",
        ),
        (
            "gl-s1",
            1,
            "/gl/api/v4/projects/owner%2Frepo/statuses/",
            "running",
            "failed",
        ),
    ];
    for (builder, code, path, start, end) in cases {
        let id = m
            .force(
                builder,
                ForceRequest {
                    reason: "status".into(),
                    revision: Some(sha.clone()),
                    properties: BTreeMap::from([("code".to_string(), code.to_string())]),
                    ..Default::default()
                },
            )
            .await;
        let want_path = format!("{path}{sha}");
        forge
            .wait(&format!("{builder}'s start status"), |r| {
                r.iter()
                    .any(|r| r.path == want_path && r.body["state"] == start)
            })
            .await;
        std::fs::write(format!("{}-{builder}", go.display()), "").unwrap();
        m.wait_request(id).await;
        forge
            .wait(&format!("{builder}'s end status"), |r| {
                r.iter().any(|r| {
                    r.path == want_path
                        && r.body["state"] == end
                        && (builder != "gh-s1" || r.headers.contains_key("x-github-api-version"))
                })
            })
            .await;
    }
    // GitHub's end status got a 500 first: retried, and sent on the second attempt.
    let db = m.master.db().clone();
    wait_until("gh's end status is sent", || {
        let db = db.clone();
        async move {
            let n = db.build_notifications("gh-s1", 1).await.unwrap();
            n.len() == 2 && n.iter().all(|n| n.state == "sent")
        }
    })
    .await;
    let n = db.build_notifications("gh-s1", 1).await.unwrap();
    assert_eq!(n[0].attempts, 1);
    assert_eq!(n[1].attempts, 2, "{n:?}");
    assert!(n[1].last_error.as_deref().unwrap().contains("500"), "{n:?}");
    assert!(n[1].target.contains(&sha) && n[1].target.contains("autobot/gh-s1"));
    let (_, json) = support::http_get(m.master.htmlport(), "/api/v1/builders/gh-s1/builds/1").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["notifications"][1]["kind"], "status");
    assert_eq!(v["notifications"][1]["state"], "sent");
    assert_eq!(v["notifications"][1]["attempts"], 2);
    support::wait_log(&[
        "status github owner/repo@",
        "failed (attempt 1)",
        "HTTP 500",
    ])
    .await;

    let reqs = forge.requests();
    let by = |prefix: &str| -> Vec<Recorded> {
        reqs.iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    };
    let gh = by("/gh/");
    assert_eq!(gh.len(), 3, "pending, success (500), success: {gh:#?}");
    for r in &gh {
        assert_eq!(r.method, "POST");
        assert_eq!(r.headers["authorization"], "Bearer ghp-secret-1");
        assert_eq!(r.headers["accept"], "application/vnd.github+json");
        assert!(r.headers["user-agent"].starts_with("autobot/"));
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.body["context"], "autobot/gh-s1");
        assert_eq!(
            r.body["target_url"],
            "http://ci.example.org/builders/gh-s1/builds/1"
        );
        let keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["context", "description", "state", "target_url"]);
    }
    assert_eq!(gh[0].body["state"], "pending");
    assert_eq!(gh[0].body["description"], "Build started.");
    assert_eq!(gh[2].body["description"], "Build done: success.");

    let gt = by("/gt/");
    assert_eq!(gt.len(), 2, "{gt:#?}");
    for r in &gt {
        assert_eq!(r.method, "POST");
        assert_eq!(r.headers["authorization"], "token gitea-secret-2");
        assert_eq!(r.body["context"], "autobot/gt-s1");
        assert_eq!(
            r.body["target_url"],
            "http://ci.example.org/builders/gt-s1/builds/1"
        );
    }

    let gl = by("/gl/");
    assert_eq!(gl.len(), 2, "{gl:#?}");
    for r in &gl {
        assert_eq!(r.method, "POST");
        assert_eq!(r.headers["private-token"], "glpat-secret-3");
        assert!(!r.headers.contains_key("authorization"));
        assert_eq!(r.body["name"], "autobot/gl-s1");
        assert_eq!(
            r.body["target_url"],
            "http://ci.example.org/builders/gl-s1/builds/1"
        );
    }
    assert_eq!(gl[1].body["description"], "Build done: failure.");
}

/// `statusPushToken` must name a file; `statusPushURL` without `statusPush`
/// and a gitea push without its URL are file:line errors.
#[test]
fn status_push_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let check = |factory: &str| -> String {
        let ini = format!(
            "[:master:]\npassword = pw-x1\nfactories = *\n\n[slave:s1]\n\n[f]\ntype = shell\ngit = https://github.com/o/r.git\nstep.t = true\n{factory}"
        );
        support::write_master_ini(dir.path(), ini);
        match autobot::config::load(&dir.path().join("master.ini")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    let e = check("statusPush = github\nstatusPushToken = nope\n");
    assert!(
        e.contains("master.ini:12:") && e.contains("no file") && e.contains("statusPushToken"),
        "{e}"
    );
    let e = check("statusPushURL = https://x\n");
    assert!(
        e.contains("master.ini:11:") && e.contains("needs `statusPush"),
        "{e}"
    );
    let e = check("statusPush = gitea\n");
    assert!(
        e.contains("master.ini:11:") && e.contains("statusPushURL"),
        "{e}"
    );
    let e = check("statusPush = bitbucket\n");
    assert!(e.contains("master.ini:11:"), "{e}");
    std::fs::write(dir.path().join("tok"), "t").unwrap();
    assert_eq!(check("statusPush = github\nstatusPushToken = tok\n"), "");
}
