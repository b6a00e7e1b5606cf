//! The bundled `hello` sample end to end: `autobot create DIR -f hello` (the real
//! binary) makes a master with the sample's git repository and a slave; a forced
//! build checks it out with git, runs configure, make all and make check, and is
//! green. A second build updates the existing tree (mode `update`) and records
//! got_revision, step durations and an ETA source.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::process::Command;
use std::time::Duration;

use autobot::engine::ForceRequest;
use engine_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_sample_builds_green_through_force() {
    support::capture_logs();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pair");
    let sp = free_port();
    let out = Command::new(autobot_bin())
        .arg("create")
        .arg(&dir)
        .args(["-f", "hello", "--slaveport"])
        .arg(sp.to_string())
        .arg("--htmlport")
        .arg(free_port().to_string())
        .args(["--master", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mdir = dir.join("master");
    support::use_test_db(&mdir);
    let master = autobot::app::Master::start_with(
        &mdir,
        autobot::app::MasterOptions {
            keepalive_interval: Some(Duration::from_secs(30)),
            slaveport: Some(sp),
            htmlport: Some(0),
            publichtmlport: None,
        },
    )
    .await
    .unwrap();
    let builder = master
        .config()
        .builders()
        .into_iter()
        .find(|b| b.factory == "hello")
        .expect("a hello builder")
        .name;
    let slave_name = master.config().slaves[0].name.clone();
    let _slave = spawn_run(&dir.join("slave"));
    master
        .registry()
        .wait_connected(&slave_name, DEADLINE)
        .await
        .expect("the created slave connects");

    let engine = master.engine().clone();
    for n in 1..=2 {
        let mut events = engine.subscribe();
        let forced = engine
            .force(
                &builder,
                ForceRequest {
                    reason: format!("hello #{n}"),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        if n == 2 {
            // While it runs, the ETA comes from build 1's step times.
            loop {
                match events.recv().await.unwrap() {
                    autobot::engine::EngineEvent::StepStarted { name, .. } if name == "compile" => {
                        break
                    }
                    _ => {}
                }
            }
            let running = master.db().build(&builder, 2).await.unwrap().unwrap();
            if running.build.result.is_none() {
                assert!(running.eta.is_some_and(|e| e >= 0.0), "{:?}", running.eta);
            }
        }
        let req = tokio::time::timeout(DEADLINE, engine.wait_request(forced.request_id))
            .await
            .unwrap()
            .unwrap();
        let b = master.db().build(&builder, n).await.unwrap().unwrap();
        let steps: Vec<(&str, Option<&str>)> = b
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.result.as_deref()))
            .collect();
        assert_eq!(
            req.result.as_deref(),
            Some("success"),
            "{steps:?} {}",
            b.build.text
        );
        assert_eq!(
            steps,
            vec![
                ("checkout", Some("success")),
                ("configure", Some("success")),
                ("compile", Some("success")),
                ("test", Some("success")),
            ]
        );
        let head = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(mdir.join("repos/hello"))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert_eq!(b.properties["got_revision"].0, head);
        assert_eq!(b.properties["got_revision"].1, "Source");
        assert!(b.steps.iter().all(|s| s.finished_at.is_some()));
        assert!(b.eta.is_none());
        if n == 2 {
            // The second checkout updated the tree in place.
            let log = String::from_utf8_lossy(
                &std::fs::read(
                    master
                        .db()
                        .log_file(&builder, 2, "checkout", "stdio")
                        .await
                        .unwrap()
                        .unwrap()
                        .path,
                )
                .unwrap(),
            )
            .into_owned();
            assert!(log.contains("fetch"), "{log}");
            assert!(!log.contains("clone"), "{log}");
        }
    }
    master.shutdown().await;
}
