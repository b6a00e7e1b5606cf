//! Benchmark of the issue-22 retention budget: a retention pass over a long
//! history must not delay a build or a page. Measured from outside against the
//! real daemons (`autobot start`, master and slave).
//!
//! Run with `cargo bench --bench retention` (`--builds N` or
//! `AUTOBOT_RETENTION_BUILDS=N` for the history's size, default 1,000,000;
//! `--forces N`, default 200; `--requests N` waterfall loads, default 200;
//! `--rounds N` waterfall rounds per phase, their median reported, default 1;
//! `--wait 0` to stop once the figures during the pass are taken, without
//! waiting for the pass to end; `AUTOBOT_BENCH_SLOW=1` prints the slow loads'
//! wall-clock times, to set beside the master's log at
//! `AUTOBOT_LOG=autobot::retention=debug`). The
//! history (the web bench's: N builds, two steps and a log each, all from 2020)
//! is written into SQLite while the master is down. Then, twice — without
//! retention, then right after a reconfig that sets `buildHorizon = 1` and
//! `logHorizon = 1` (so the pass has the whole history to delete) — it measures
//! the 200-build throughput (forces of a one-step `true` builder posted on one
//! keep-alive connection, first POST → last request complete) and the
//! waterfall's p50/p95 (fresh connection per load); then once more without,
//! after the pass has finished. It prints each figure, the ratios of the
//! figures during the pass over the mean of those without it (target: within
//! 10 %), how many builds the pass deleted meanwhile (it yields to work: some
//! 20 a second while the master works), whether it was still running at the
//! end, how long the whole pass took and how fast it went once the master was
//! quiet.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::history::{self, fill, percentile, timed_get};
use common::*;
use serde_json::Value;

fn master_ini(sp: u16, hp: u16, pp: u16, retention: &str) -> String {
    let mut s = format!(
        "[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {pp}\npassword = pw\n\
         factories = *\nmax_builds = 1\n{retention}\n"
    );
    s.push_str(&history::sections());
    s.push_str("[slave:t1]\n\n[true]\ntype = shell\nstep.true = true\n");
    s
}

fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let r = autobot::cli::http::request("127.0.0.1", port, method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {}",
        r.error_text()
    );
    r.json().unwrap()
}

fn complete(port: u16, id: i64) -> bool {
    request(port, "GET", &format!("/api/v1/buildrequests/{id}"), None)["complete"] == true
}

/// `n` forces of `true-t1` on one keep-alive connection: builds per second.
fn throughput(hp: u16, n: usize) -> f64 {
    let path = "/api/v1/builders/true-t1/force";
    let body = serde_json::json!({"reason": "bench"});
    let mut conn = KeepAlive::connect(hp);
    let t0 = Instant::now();
    let ids: Vec<i64> = (0..n)
        .map(|_| {
            let (status, v) = conn.post_json(path, &body);
            assert!((200..300).contains(&status), "force: HTTP {status}: {v}");
            v["request_id"].as_i64().unwrap()
        })
        .collect();
    let last = *ids.last().unwrap();
    while !complete(hp, last) {
        assert!(t0.elapsed() < Duration::from_secs(600), "all builds");
        std::thread::sleep(Duration::from_millis(10));
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// p50 and p95 of `n` waterfall loads, in ms. With `AUTOBOT_BENCH_SLOW` set,
/// the loads slower than twice the p50 are printed with their wall-clock time
/// (to set beside the master's log at debug).
fn waterfall(hp: u16, n: usize) -> (f64, f64) {
    let loads: Vec<(std::time::SystemTime, f64)> = (0..n)
        .map(|_| {
            let at = std::time::SystemTime::now();
            let (status, _, _, ms) = timed_get(hp, "/waterfall", None);
            assert_eq!(status, 200);
            (at, ms)
        })
        .collect();
    let mut times: Vec<f64> = loads.iter().map(|l| l.1).collect();
    let (p50, p95) = (percentile(&mut times, 0.5), percentile(&mut times, 0.95));
    if std::env::var_os("AUTOBOT_BENCH_SLOW").is_some() {
        for (at, ms) in loads.iter().filter(|l| l.1 > 2.0 * p50) {
            let t = at
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            println!("slow waterfall at {t:.3}: {ms:.2} ms");
        }
    }
    (p50, p95)
}

/// The median of `rounds` rounds of [`waterfall`]'s p50 and p95, each
/// printed: one round's p95 is its 10 slowest loads of 200, noisy on a shared
/// machine.
fn waterfall_rounds(hp: u16, n: usize, rounds: usize, phase: &str) -> (f64, f64) {
    let mut p50s = Vec::new();
    let mut p95s = Vec::new();
    for i in 0..rounds {
        let (p50, p95) = waterfall(hp, n);
        if rounds > 1 {
            println!("  {phase} round {i}: waterfall p50 {p50:.3} ms, p95 {p95:.3} ms");
        }
        p50s.push(p50);
        p95s.push(p95);
    }
    (percentile(&mut p50s, 0.5), percentile(&mut p95s, 0.5))
}

/// Builds left in the history (read-only, beside the running master).
fn builds_left(mdir: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(
        mdir.join("state.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row("SELECT COUNT(*) FROM builds", [], |r| r.get(0))
        .unwrap()
}

fn pass_done(mdir: &Path) -> bool {
    std::fs::read_to_string(mdir.join("autobot.log"))
        .unwrap_or_default()
        .contains("retention: deleted")
}

fn main() {
    let builds = std::env::var("AUTOBOT_RETENTION_BUILDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| opt("--builds", 1_000_000));
    let forces = opt("--forces", 200) as usize;
    let requests = opt("--requests", 200) as usize;
    // Waterfall rounds per phase (the median is reported), and whether to wait
    // for the pass to end and measure once more after it (`--wait 0`: not, the
    // ratios are then over the figures before the pass alone).
    let rounds = opt("--rounds", 1).max(1) as usize;
    let wait = opt("--wait", 1) != 0;
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "# autobot {} retention bench; binary {}; {builds} builds",
        autobot::VERSION,
        *EXE
    );
    let mdir = tmp.path().join("retention-master");
    let sdir = tmp.path().join("retention-slave");
    std::fs::create_dir_all(&mdir).unwrap();
    let (sp, hp, pp) = (free_port(), free_port(), free_port());
    std::fs::write(mdir.join("master.ini"), master_ini(sp, hp, pp, "")).unwrap();
    drop(autobot::db::Db::open(&mdir.join("state.sqlite")).unwrap());
    fill(&mdir, builds);
    // The history came before the reporters: decided, never announced.
    rusqlite::Connection::open(mdir.join("state.sqlite"))
        .unwrap()
        .execute(
            "UPDATE reporter_state SET value = (SELECT MAX(id) FROM builds) WHERE name = 'horizon'",
            [],
        )
        .unwrap();
    autobot(&["start", mdir.to_str().unwrap()]);
    start_slave_daemon(&sdir, sp, hp, "t1");
    // Warm-up: the builder's directory on the slave, the pages' caches.
    throughput(hp, 5);
    waterfall(hp, 10);

    let tp_without = throughput(hp, forces);
    let (p50_without, p95_without) = waterfall_rounds(hp, requests, rounds, "without");
    report(
        &format!("throughput_{forces}_without_retention"),
        tp_without,
        "builds/s",
        None,
        false,
    );
    report(
        "waterfall_p50_without_retention",
        p50_without,
        "ms",
        None,
        true,
    );
    report(
        "waterfall_p95_without_retention",
        p95_without,
        "ms",
        None,
        true,
    );

    let before = builds_left(&mdir);
    std::fs::write(
        mdir.join("master.ini"),
        master_ini(sp, hp, pp, "buildHorizon = 1\nlogHorizon = 1\n"),
    )
    .unwrap();
    autobot(&["reconfig", mdir.to_str().unwrap()]);
    let t0 = Instant::now();
    let tp_with = throughput(hp, forces);
    let (p50_with, p95_with) = waterfall_rounds(hp, requests, rounds, "during");
    let measured = t0.elapsed().as_secs_f64();
    let still_running = !pass_done(&mdir);
    let deleted = before + forces as i64 - builds_left(&mdir);
    report(
        &format!("throughput_{forces}_during_retention"),
        tp_with,
        "builds/s",
        None,
        false,
    );
    report("waterfall_p50_during_retention", p50_with, "ms", None, true);
    report("waterfall_p95_during_retention", p95_with, "ms", None, true);
    report(
        "retention_builds_deleted_while_measuring",
        deleted as f64,
        "builds",
        None,
        false,
    );
    report("retention_measured_for", measured, "s", None, true);
    println!("retention_pass_still_running_at_end {still_running}");
    if !wait {
        report(
            "retention_builds_deleted_per_s",
            deleted as f64 / measured,
            "builds/s",
            None,
            false,
        );
        report(
            "throughput_ratio_during_over_before",
            tp_with / tp_without,
            "",
            None,
            false,
        );
        report(
            "waterfall_p95_ratio_during_over_before",
            p95_with / p95_without,
            "",
            None,
            true,
        );
        autobot(&["stop", sdir.to_str().unwrap()]);
        autobot(&["stop", mdir.to_str().unwrap()]);
        return;
    }
    let left_at_quiet = builds_left(&mdir);
    let t1 = Instant::now();
    wait_until("the retention pass", Duration::from_secs(24 * 3600), || {
        std::thread::sleep(Duration::from_millis(200));
        pass_done(&mdir)
    });
    report(
        "retention_pass_total",
        measured + t1.elapsed().as_secs_f64(),
        "s",
        None,
        true,
    );
    let left = builds_left(&mdir);
    report("builds_left_after_pass", left as f64, "builds", None, true);
    // Polled every 200 ms: a lower bound of the quiet master's pace.
    report(
        "retention_builds_deleted_per_s_quiet",
        (left_at_quiet - left) as f64 / t1.elapsed().as_secs_f64(),
        "builds/s",
        None,
        false,
    );
    // Without again, after the pass (the machine's drift between the two).
    let tp_after = throughput(hp, forces);
    let (p50_after, p95_after) = waterfall_rounds(hp, requests, rounds, "after");
    report(
        &format!("throughput_{forces}_after_retention"),
        tp_after,
        "builds/s",
        None,
        false,
    );
    report("waterfall_p50_after_retention", p50_after, "ms", None, true);
    report("waterfall_p95_after_retention", p95_after, "ms", None, true);
    // The figures with a pass running over those without it, before and after
    // (their mean, so the machine's drift meanwhile counts on both sides).
    report(
        "throughput_ratio_during_over_without",
        tp_with / ((tp_without + tp_after) / 2.0),
        "",
        None,
        false,
    );
    report(
        "waterfall_p95_ratio_during_over_without",
        p95_with / ((p95_without + p95_after) / 2.0),
        "",
        None,
        true,
    );
    autobot(&["stop", sdir.to_str().unwrap()]);
    autobot(&["stop", mdir.to_str().unwrap()]);
}
