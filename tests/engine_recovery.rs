//! Nothing is lost: a master killed with SIGKILL mid-build and started again marks
//! the interrupted Build EXCEPTION and runs its request again; a slave that goes
//! silent mid-build ends the Build within the keepalive interval and the request
//! waits for the slave's return; `stop_build` ends a Build within 10 s even when
//! the slave is frozen; a master shutdown records running Builds like a restart;
//! a slave stopped cleanly mid-build is a slave lost: the request runs again.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::time::{Duration, Instant};

use autobot::db::requests::{NewBuildSet, NewSourceStamp};
use autobot::engine::ForceRequest;
use engine_common::*;
use nix::sys::signal::{killpg, Signal};

/// First run: `wait` leaves a marker and sleeps; later runs see the marker and pass.
const FACTORY: &str = r#"
[rec]
type = shell
step.first = echo first done
step.wait = sh -c 'if [ -e ../marker ]; then echo second run; exit 0; fi; touch ../marker; echo sleeping; exec sleep 60'
step.last = echo last
"#;

const BUILDER: &str = "rec-s1";

fn step_started(db_path: &std::path::Path, builder: &str, number: i64, step: &str) -> bool {
    support::testdb::query_master_db(
        db_path,
        "SELECT count(*) FROM steps s JOIN builds b ON b.id = s.build
         WHERE b.builder = ?1 AND b.number = ?2 AND s.name = ?3 AND s.started_at IS NOT NULL",
        &[builder.into(), number.into(), step.into()],
    )
    .ok()
    .and_then(|rows| rows.first()?.i64(0).ok())
    .is_some_and(|n| n > 0)
}

fn request_complete(db_path: &std::path::Path, id: i64) -> bool {
    support::testdb::query_master_db(
        db_path,
        "SELECT complete FROM buildrequests WHERE id = ?1",
        &[id.into()],
    )
    .ok()
    .and_then(|rows| rows.first()?.i64(0).ok())
    .is_some_and(|n| n == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_killed_mid_build_loses_nothing_and_reruns() {
    support::capture_logs();
    let root = tempfile::tempdir().unwrap();
    let mdir = root.path().join("master");
    std::fs::create_dir_all(&mdir).unwrap();
    let (sp, hp) = (free_port(), free_port());
    let ini = master_ini(FACTORY, "").replace(
        "slaveport = 9010\nhtmlport = 8010",
        &format!("slaveport = {sp}\nhtmlport = {hp}"),
    );
    support::write_master_ini(&mdir, ini);
    let db_path = mdir.join(autobot::db::DB_FILE);
    // The request is stored before the master starts; the engine finds it.
    let request = {
        let db = support::master_db(&db_path);
        let s = db
            .add_buildset(
                NewBuildSet {
                    reason: "kill -9 test".into(),
                    scheduler: "test".into(),
                    sourcestamp: NewSourceStamp::default(),
                    builders: vec![BUILDER.into()],
                    ..Default::default()
                },
                autobot::db::now_f64(),
            )
            .await
            .unwrap();
        s.requests[0].1
    };

    let mut master = spawn_run(&mdir);
    let _slave = support::Impl::Autobot
        .start(&root.path().join("slave"), sp, SLAVE, PASSWORD)
        .await
        .unwrap();
    let marker = root.path().join("slave/rec-s1/marker");
    wait_until("step wait of build 1 started", || async {
        step_started(&db_path, BUILDER, 1, "wait") && marker.exists()
    })
    .await;
    kill9(&mut master);

    let mut master = spawn_run(&mdir);
    wait_until("the request completes after the restart", || async {
        request_complete(&db_path, request)
    })
    .await;
    kill9(&mut master);

    let db = support::master_db(&db_path);
    let b1 = db.build(BUILDER, 1).await.unwrap().unwrap();
    assert_eq!(b1.build.result.as_deref(), Some("exception"));
    assert_eq!(b1.build.text, "interrupted: master restarted");
    assert_eq!(b1.steps[0].result.as_deref(), Some("success"));
    assert_eq!(b1.steps[1].result.as_deref(), Some("exception"));
    // What was finished is all there: the first step's log, and what the
    // interrupted step printed before the kill.
    let f = db
        .log_file(BUILDER, 1, "first", "stdio")
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&std::fs::read(&f.path).unwrap()).contains("first done"));
    assert_eq!(f.size, std::fs::metadata(&f.path).unwrap().len());
    let f = db
        .log_file(BUILDER, 1, "wait", "stdio")
        .await
        .unwrap()
        .unwrap();
    assert!(f.complete);
    assert_eq!(f.size, std::fs::metadata(&f.path).unwrap().len());
    let b2 = db.build(BUILDER, 2).await.unwrap().unwrap();
    assert_eq!(
        b2.build.result.as_deref(),
        Some("success"),
        "{:?}",
        b2.steps
    );
    let req = db.buildrequest(request).await.unwrap().unwrap();
    assert_eq!(req.result.as_deref(), Some("success"));
    assert_eq!(req.builds, vec![1, 2]);
}

/// A master with keepalive `keepalive` and its slave (`autobot run`), whose
/// forced build 1 of [`BUILDER`] is in step `wait` (its shell has run: the
/// marker exists, so the request's next build takes the quick way): the
/// master, the slave's directory, the slave and the request.
async fn mid_build(keepalive: Duration) -> (EngineMaster, std::path::PathBuf, Daemon, i64) {
    let m = EngineMaster::start(&master_ini(FACTORY, ""), keepalive).await;
    let sdir = m.dir.path().join("slave");
    slave_dir(&sdir, m.master.slaveport());
    let slave = spawn_run(&sdir);
    m.master
        .registry()
        .wait_connected(SLAVE, DEADLINE)
        .await
        .unwrap();
    let request = m.force(BUILDER, ForceRequest::default()).await;
    let db_path = m.dir.path().join(autobot::db::DB_FILE);
    let marker = sdir.join("rec-s1/marker");
    wait_until("step wait started", || async {
        step_started(&db_path, BUILDER, 1, "wait") && marker.exists()
    })
    .await;
    (m, sdir, slave, request)
}

/// Build 1 ends EXCEPTION "slave lost" with `request` queued again; when the
/// slave of `sdir` is back, the request runs again, to success.
async fn lost_then_rerun(m: &EngineMaster, sdir: &std::path::Path, request: i64) {
    let b1 = m.build(BUILDER, 1).await;
    assert_eq!(
        b1.build.result.as_deref(),
        Some("exception"),
        "{}",
        b1.build.text
    );
    assert!(
        b1.build.text.starts_with("slave lost: "),
        "{}",
        b1.build.text
    );
    let req = m.master.db().buildrequest(request).await.unwrap().unwrap();
    assert!(!req.complete && req.claimed_at.is_none(), "{req:?}");
    let _slave = spawn_run(sdir);
    let req = m.wait_request(request).await;
    assert_eq!(req.result.as_deref(), Some("success"));
    assert_eq!(req.builds, vec![1, 2]);
}

/// Wait until build 1 of [`BUILDER`] has a result.
async fn build_1_ends(m: &EngineMaster) {
    let db = m.master.db().clone();
    wait_until("build 1 ends", || {
        let db = db.clone();
        async move {
            db.build(BUILDER, 1)
                .await
                .unwrap()
                .is_some_and(|b| b.build.result.is_some())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slave_ends_the_build_within_keepalive_and_requeues() {
    let keepalive = Duration::from_secs(2);
    let (m, sdir, mut slave, request) = mid_build(keepalive).await;
    // Freeze the slave: its connection stays open but says nothing.
    killpg(slave.pgid(), Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    build_1_ends(&m).await;
    let took = frozen.elapsed();
    assert!(took < keepalive * 3, "build ended after {took:?}");
    kill9(&mut slave);
    lost_then_rerun(&m, &sdir, request).await;
    m.master.shutdown().await;
}

/// A slave stopped cleanly mid-build (SIGTERM, as `autobot stop` sends) is a
/// slave lost to the Build, as Buildbot has it: EXCEPTION "slave lost", its
/// request queued again, and run to success when the slave is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_stopped_mid_build_requeues_its_request() {
    let (m, sdir, mut slave, request) = mid_build(Duration::from_secs(30)).await;
    nix::sys::signal::kill(slave.pgid(), Signal::SIGTERM).unwrap();
    let status = slave.0.wait().unwrap();
    assert!(status.success(), "the slave's clean stop: {status:?}");
    build_1_ends(&m).await;
    lost_then_rerun(&m, &sdir, request).await;
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_builds_even_with_a_frozen_slave_and_shutdown_requeues() {
    // Long keepalive: only the stop can end the build quickly.
    let (m, sdir, mut slave, request) = mid_build(Duration::from_secs(600)).await;
    let db_path = m.dir.path().join(autobot::db::DB_FILE);
    let marker = sdir.join("rec-s1/marker");

    // A plain stop: the command is interrupted, the build is cancelled, not re-run.
    let t = Instant::now();
    m.engine()
        .stop_build(BUILDER, 1, "alice", "enough")
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    let b1 = m.build(BUILDER, 1).await;
    assert_eq!(b1.build.result.as_deref(), Some("cancelled"));
    assert_eq!(b1.build.text, "stopped by alice: enough");
    assert!(
        b1.steps[1].text.contains("interrupted"),
        "{}",
        b1.steps[1].text
    );
    let req = m.wait_request(request).await;
    assert_eq!(req.result.as_deref(), Some("cancelled"));
    let err = m
        .engine()
        .stop_build(BUILDER, 1, "a", "b")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not running"), "{err}");

    // A frozen slave: the stop still ends the build within 10 s, cancelled.
    std::fs::remove_file(&marker).unwrap();
    let _request = m.force(BUILDER, ForceRequest::default()).await;
    wait_until("step wait of build 2 started", || async {
        step_started(&db_path, BUILDER, 2, "wait") && marker.exists()
    })
    .await;
    killpg(slave.pgid(), Signal::SIGSTOP).unwrap();
    let t = Instant::now();
    m.engine()
        .stop_build(BUILDER, 2, "bob", "stuck")
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let b2 = m.build(BUILDER, 2).await;
    assert_eq!(b2.build.result.as_deref(), Some("cancelled"));
    assert_eq!(b2.build.text, "stopped by bob: stuck");
    kill9(&mut slave);
    // The master sees the dead slave's connection go first: a new slave
    // found "connected" on the old connection would get build 3 on a dead
    // link (slave lost; its request runs again as build 4).
    assert!(m.master.registry().wait_gone(SLAVE, DEADLINE).await);

    // Shutdown mid-build: EXCEPTION, and the request waits to run again.
    let mut slave = spawn_run(&sdir);
    m.master
        .registry()
        .wait_connected(SLAVE, DEADLINE)
        .await
        .unwrap();
    std::fs::remove_file(&marker).ok();
    let request = m.force(BUILDER, ForceRequest::default()).await;
    wait_until("step wait of build 3 started", || async {
        step_started(&db_path, BUILDER, 3, "wait") && marker.exists()
    })
    .await;
    let EngineMaster { dir, master } = m;
    let t = Instant::now();
    master.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(15));
    kill9(&mut slave);
    let db = support::master_db(&dir.path().join(autobot::db::DB_FILE));
    let b3 = db.build(BUILDER, 3).await.unwrap().unwrap();
    assert_eq!(b3.build.result.as_deref(), Some("exception"));
    assert_eq!(b3.build.text, "interrupted: master shut down");
    let req = db.buildrequest(request).await.unwrap().unwrap();
    assert!(!req.complete && req.claimed_at.is_none(), "{req:?}");
}
