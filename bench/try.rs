//! `autobot try` budgets from issue 24, on a real master (SQLite, TCP) with an
//! in-process autobot slave, a real git repository and working tree, and the
//! real `autobot` binary:
//!
//! * `autobot try --wait` of a one-line patch on a one-step build: the command
//!   returns within 150 ms of the step's end (p95 over the runs);
//! * a 5 MiB patch (a new file) is accepted and applied within 1 s: from the
//!   start of `autobot try` to the end of the checkout step that applied it.
//!
//! Run: `cargo bench --bench try` (optional argument: runs, default 20). Under
//! `cargo test --bench try` (the debug build) the numbers are an upper bound.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use autobot::db::Db;
use common::git;

const PASSWORD: &str = "pw-bench";
const TRY_PW: &str = "try-bench-pw";

fn ini(repo: &str) -> String {
    format!(
        "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = {PASSWORD}\nfactories = *\n\n\
         [slave:s1]\n\n[proj]\ntype = shell\ngit = {repo}#main\nstep.ok = true\n\n\
         [try]\nusers = dev:{TRY_PW}\n"
    )
}

/// `autobot try ARGS` in `work`; (success, unix seconds at its start and end).
async fn run_try(work: &Path, port: u16, extra: &[&str]) -> (bool, f64, f64) {
    let mut args: Vec<String> = vec![
        "try".into(),
        "--master".into(),
        format!("127.0.0.1:{port}"),
        "--username".into(),
        "dev".into(),
        "--passwd".into(),
        TRY_PW.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let work = work.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let start = autobot::calendar::now_f64();
        let out = Command::new(env!("CARGO_BIN_EXE_autobot"))
            .args(&args)
            .current_dir(&work)
            .output()
            .expect("autobot try runs");
        let end = autobot::calendar::now_f64();
        if !out.status.success() {
            eprintln!(
                "autobot try failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (out.status.success(), start, end)
    })
    .await
    .expect("join")
}

/// The newest build of `proj-s1`: (number, each step's (name, started, finished)).
async fn newest(db: &Db) -> (i64, Vec<(String, f64, f64)>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = db.builds("proj-s1", 1, None).await.expect("builds");
        if let Some(b) = rows.first().filter(|b| b.result.is_some()) {
            let d = db
                .build("proj-s1", b.number)
                .await
                .expect("build")
                .expect("it");
            let steps = d
                .steps
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        s.started_at.unwrap_or(0.0),
                        s.finished_at.unwrap_or(0.0),
                    )
                })
                .collect();
            return (b.number, steps);
        }
        assert!(Instant::now() < deadline, "no finished build");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn bench(runs: usize) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("file.txt"), "one\n").expect("write");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "base"]);
    let work = tmp.path().join("work");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            &repo.to_string_lossy(),
            &work.to_string_lossy(),
        ],
    );
    let (master, slave) =
        common::master_with_slave(tmp.path(), &ini(&repo.to_string_lossy()), PASSWORD).await;
    let db = master.db().clone();
    let port = master.slaveport();

    // A one-line patch, --wait: from the last step's end to the command's exit.
    std::fs::write(work.join("file.txt"), "two\n").expect("write");
    let mut after = Vec::new();
    for _ in 0..runs {
        let (ok, _, end) = run_try(&work, port, &["--wait"]).await;
        assert!(ok, "try --wait succeeds");
        let (_, steps) = newest(&db).await;
        let step_end = steps.last().map(|s| s.2).unwrap_or(0.0);
        after.push((end - step_end) * 1000.0);
    }
    after.sort_by(|a, b| a.total_cmp(b));
    let p95 = percentile(&after, 0.95);
    println!(
        "try --wait, one-line patch, one-step build: returns {:.1} ms (median) / {p95:.1} ms (p95) / {:.1} ms (worst) after the step's end, over {runs} runs; budget p95 <= 150 ms: {}",
        percentile(&after, 0.5),
        after.last().copied().unwrap_or(0.0),
        if p95 <= 150.0 { "ok" } else { "OVER" }
    );

    // A 5 MiB patch: a new file of 5 MiB of text.
    let line = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    let big: String = line.repeat((5 << 20) / line.len());
    std::fs::write(work.join("big.txt"), &big).expect("write");
    git(&work, &["add", "big.txt"]);
    let mut totals = Vec::new();
    for _ in 0..3 {
        let (ok, start, _) = run_try(&work, port, &["--wait"]).await;
        assert!(ok, "the 5 MiB try succeeds");
        let (_, steps) = newest(&db).await;
        let checkout_end = steps
            .iter()
            .find(|s| s.0 == "checkout")
            .map(|s| s.2)
            .unwrap_or(0.0);
        totals.push(checkout_end - start);
    }
    totals.sort_by(|a, b| a.total_cmp(b));
    let worst = totals.last().copied().unwrap_or(0.0);
    println!(
        "5 MiB patch: sent, accepted and applied (try start to checkout end) in {:.3} s (best) / {worst:.3} s (worst) of 3; budget <= 1 s: {}",
        totals[0],
        if worst <= 1.0 { "ok" } else { "OVER" }
    );
    let _ = slave.shutdown.send(true);
    master.shutdown().await;
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(20)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(runs));
}
