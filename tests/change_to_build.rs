//! From a submitted Change to a build, end to end: a real git repository, a real
//! master with an in-process slave, the real `autobot sendchange` binary and a
//! signed GitHub push. pollInterval is an hour, so only the submission (or the poll
//! the webhook asks for) can start the build.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

#[path = "change_common/mod.rs"]
mod change_common;

use scheduler_common::{ini, wait_builds, wait_finished, wait_head, GitRepo, Site};

fn site(repo: &GitRepo) -> Site {
    Site::new(&ini(
        "pollInterval = 3600\ntreeStable = 0\ngithub_secret = gh-s3cret\n\
         changeuser = hook\nchangepassword = s3cret",
        &["s1"],
        &format!(
            "[proj]\ntype = shell\ngit = {}#main\nstep.ok = true\n",
            repo.url()
        ),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sendchange_builds_its_revision_with_it_in_the_blamelist() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = GitRepo::new(&tmp.path().join("repo"));
    let first = repo.commit("Init <init@example.org>", "README", "initial");
    let site = site(&repo);
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    assert_eq!(wait_head(&db, &repo.url(), "main").await, first);

    let rev = repo.commit("Ann <ann@example.org>", "src/a.c", "one");
    let master = format!("127.0.0.1:{}", run.master.slaveport());
    let bin = engine_common::autobot_bin();
    let url = repo.url();
    let out = tokio::task::spawn_blocking({
        let (rev, cwd) = (rev.clone(), tmp.path().to_path_buf());
        move || {
            std::process::Command::new(bin)
                .args(["sendchange", "--auth", "hook:s3cret", "--master", &master])
                .arg("--username")
                .arg("Ann <ann@example.org>")
                .args(["--branch", "main", "--revision", &rev, "--repository", &url])
                .args(["--comments", "one", "src/a.c"])
                .current_dir(&cwd)
                .env("HOME", &cwd)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    wait_builds(&db, "proj-s1", 1).await;
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(b.changes.len(), 1);
    assert_eq!(b.changes[0].who, "Ann <ann@example.org>");
    assert_eq!(b.changes[0].files, vec!["src/a.c"]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_push_to_a_polled_branch_builds_through_an_immediate_poll() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = GitRepo::new(&tmp.path().join("repo"));
    let first = repo.commit("Init <init@example.org>", "README", "initial");
    let site = site(&repo);
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    assert_eq!(wait_head(&db, &repo.url(), "main").await, first);

    let rev = repo.commit("Bob <bob@example.org>", "src/b.c", "two");
    // The payload's commits are ignored for a polled branch: the poller finds the
    // commit itself (once), with the files git knows.
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "repository": {"full_name": "o/r", "clone_url": repo.url()},
        "commits": [{"id": rev, "message": "two", "author": {"name": "Bob", "email": "b@x"},
                     "added": ["src/b.c"], "modified": [], "removed": []}]
    })
    .to_string();
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"gh-s3cret");
    let sig: String = ring::hmac::sign(&k, body.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (status, _, reply) = change_common::http(
        run.master.htmlport(),
        "POST",
        "/change_hook/github",
        &[
            ("X-GitHub-Event", "push".into()),
            ("X-Hub-Signature-256", format!("sha256={sig}")),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 202, "{reply}");

    wait_builds(&db, "proj-s1", 1).await;
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(b.changes.len(), 1, "{:?}", b.changes);
    assert_eq!(b.changes[0].who, "Bob <bob@example.org>");
    assert_eq!(db.changes(100, None).await.unwrap().len(), 1);
    run.stop().await;
}
