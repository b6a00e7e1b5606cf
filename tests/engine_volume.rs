//! Volume: a step printing 100 MB is stored intact in its log file, with the
//! database holding its size and line count. Ignored by default (slow in debug
//! builds); run with `cargo test --release --test engine_volume -- --ignored
//! --nocapture` to see the time the step took.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::time::{Duration, Instant};

use autobot::engine::ForceRequest;
use engine_common::*;

const FACTORY: &str = r#"
[vol]
type = shell
step.out = sh -c "yes 0123456789012345678901234567890123456789012345678 | head -c 100000000"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn a_100_mb_step_is_stored_intact() {
    let m = EngineMaster::start(&master_ini(FACTORY, ""), Duration::from_secs(60)).await;
    let _slave = m.slave().await;
    let t = Instant::now();
    let r = m.force("vol-s1", ForceRequest::default()).await;
    assert_eq!(m.wait_request(r).await.result.as_deref(), Some("success"));
    let took = t.elapsed();
    let b = m.build("vol-s1", 1).await;
    let step = &b.steps[0];
    let f = m
        .master
        .db()
        .log_file("vol-s1", 1, "out", "stdio")
        .await
        .unwrap()
        .unwrap();
    let on_disk = std::fs::metadata(&f.path).unwrap().len();
    assert_eq!(f.size, on_disk);
    assert!(f.size >= 100_000_000, "{}", f.size);
    assert!(f.lines >= 2_000_000, "{}", f.lines);
    eprintln!(
        "100 MB step: force → finished {:.3} s, step {:.3} s, log {} bytes, {} lines",
        took.as_secs_f64(),
        step.finished_at.unwrap() - step.started_at.unwrap(),
        f.size,
        f.lines
    );
}
