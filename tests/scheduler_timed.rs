//! `periodic` and `nightly` schedulers on a real master driven by a manual clock
//! (no waiting for real minutes): they fire when the clock passes their time, keep
//! their last run in SQLite, and a restarted master neither fires again nor skips.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

use autobot::schedulers::Clock;
use scheduler_common::*;

/// 2026-12-01 02:00:00 UTC.
const T0: f64 = 1_796_090_400.0;

async fn counts(db: &autobot::db::Db) -> (usize, usize) {
    (
        buildsets_of(db, "per:periodic").await.len(),
        buildsets_of(db, "night:nightly").await.len(),
    )
}

async fn wait_counts(db: &autobot::db::Db, want: (usize, usize)) {
    wait_some(&format!("{want:?} periodic/nightly BuildSets"), || async {
        let c = counts(db).await;
        assert!(
            c.0 <= want.0 && c.1 <= want.1,
            "too many: {c:?}, want {want:?}"
        );
        (c == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_and_nightly_fire_on_a_driven_clock_and_survive_restarts() {
    let clock = Clock::manual(T0);
    let site = Site::with_clock(
        &ini(
            "",
            &["s1"],
            "[per]\ntype = shell\nstep.ok = true\nperiodic = 3600\n\n\
             [night]\ntype = shell\nstep.ok = true\nnightly = 0 3 * * *\n",
        ),
        clock.clone(),
    );
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    // Let the schedulers record their start (the first periodic run is an hour later).
    wait_some("the schedulers to start", || async {
        db.scheduler_value("night:nightly", "last_run")
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
    assert_eq!(counts(&db).await, (0, 0));

    // 02:59: nothing yet. 03:00:30: both fire, once.
    clock.set(T0 + 3540.0);
    clock.set(T0 + 3630.0);
    wait_counts(&db, (1, 1)).await;
    let b = wait_finished(&db, "per-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"));
    assert!(b.build.reason.contains("periodic"), "{}", b.build.reason);
    let n = wait_finished(&db, "night-s1", 1).await;
    assert!(n.build.reason.contains("nightly"), "{}", n.build.reason);

    // A restart at 03:30 fires nothing again.
    run.stop().await;
    clock.set(T0 + 5400.0);
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    // 04:00: the next periodic run (its rhythm kept across the restart) only.
    clock.set(T0 + 7200.0);
    wait_counts(&db, (2, 1)).await;
    // The next day 03:00 (a day of periodic runs was missed: one catch-up run).
    clock.set(T0 + 86_400.0 + 3600.0);
    wait_counts(&db, (3, 2)).await;
    // Master down over the next 03:00: the missed nightly run fires once at start.
    run.stop().await;
    clock.set(T0 + 2.0 * 86_400.0 + 3600.0 + 1800.0);
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    wait_counts(&db, (4, 3)).await;
    run.stop().await;
}
