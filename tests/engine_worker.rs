//! The same build engine driving a stock `buildbot-worker` 4.3.0 from PyPI (over
//! `msgpack_experimental_v7`): a factory with a real git repository is checked out
//! with git commands run through `shell` (the worker has no native autobot git
//! command), sets got_revision, runs its steps green; a later commit is picked up
//! by the next build (mode `update`); a failing step fails the build; command
//! strings run through `/bin/sh -c` (sent as `['/bin/sh', '-c', SCRIPT]`) and argv
//! steps as argv, as on an autobot slave.
//!
//! When buildbot-worker cannot be installed it fails under `CI=true` and prints a
//! SKIP line elsewhere, as the conformance suite does.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use autobot::engine::ForceRequest;
use engine_common::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Ann", "-c", "user.email=ann@example.org"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buildbot_worker_slave_builds_green_through_the_engine() {
    let repo_root = tempfile::tempdir().unwrap();
    let repo = repo_root.path().join("proj");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("check.sh"), "echo checking $(cat version)\n").unwrap();
    std::fs::write(repo.join("version"), "v1\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let rev1 = git(&repo, &["rev-parse", "HEAD"]);

    let factories = format!(
        "[proj]\ntype = shell\ngit = {}#main\nstep.check = sh check.sh\n\n\
         [red]\ntype = shell\nstep.ok = true\nstep.bad = sh -c \"echo failing; exit 3\"\nstep.after = true\n{PIPES}",
        repo.display()
    );
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let Some(_worker) = m.worker().await else {
        return;
    };

    let builder = format!("proj-{SLAVE}");
    let id = m
        .force(
            &builder,
            ForceRequest {
                reason: "stock worker".into(),
                ..Default::default()
            },
        )
        .await;
    let req = m.wait_request(id).await;
    let b1 = m.build(&builder, 1).await;
    assert_eq!(
        req.result.as_deref(),
        Some("success"),
        "{:#?}\n{}",
        b1.steps,
        m.log_text(&builder, 1, "checkout").await
    );
    assert_eq!(
        b1.properties.get("got_revision").map(|p| p.0.as_str()),
        Some(rev1.as_str())
    );
    assert!(m
        .log_text(&builder, 1, "check")
        .await
        .contains("checking v1"));

    std::fs::write(repo.join("version"), "v2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "second"]);
    let rev2 = git(&repo, &["rev-parse", "HEAD"]);
    let id = m.force(&builder, ForceRequest::default()).await;
    assert_eq!(m.wait_request(id).await.result.as_deref(), Some("success"));
    let b2 = m.build(&builder, 2).await;
    assert_eq!(
        b2.properties.get("got_revision").map(|p| p.0.as_str()),
        Some(rev2.as_str())
    );
    assert!(m
        .log_text(&builder, 2, "check")
        .await
        .contains("checking v2"));

    let red = format!("red-{SLAVE}");
    let id = m.force(&red, ForceRequest::default()).await;
    assert_eq!(m.wait_request(id).await.result.as_deref(), Some("failure"));
    let b = m.build(&red, 1).await;
    let results: Vec<Option<&str>> = b.steps.iter().map(|s| s.result.as_deref()).collect();
    // flunkOnFailure (the default) fails the build; no haltOnFailure: it goes on.
    assert_eq!(
        results,
        vec![Some("success"), Some("failure"), Some("success")]
    );
    assert!(m.log_text(&red, 1, "bad").await.contains("failing"));

    // Pipelines and argv steps behave as on an autobot slave.
    let pwned = m.dir.path().join("pwned");
    check_pipes(&m, &format!("pipes-{SLAVE}"), &pwned).await;
}
