//! Scheduler budgets from issue 5, on a real master (SQLite, TCP) with an in-process
//! slave and a real git repository (git CLI) in a temp dir:
//!
//! * commit → build started, with pollInterval = 1 and treeStable = 0 and 1 (budget
//!   ≤ pollInterval + treeStable + 100 ms): each commit lands at a random moment of
//!   the poll cycle, after the previous build finished; worst and median shown;
//! * a burst of 10,000 Changes through the ChangeBus: stored, taken by the
//!   tree-stable scheduler and submitted in BuildSets (treeStable = 0).
//!
//! Run: `cargo bench --bench changes` (optional argument: commits per setting,
//! default 8; burst size, default 10000).

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use autobot::app::{Master, MasterOptions};
use autobot::db::changes::NewChange;
use autobot::db::Db;
use common::git;

const PASSWORD: &str = "pw-bench";

fn commit(dir: &Path, n: usize) {
    std::fs::write(dir.join("file.txt"), format!("{n}\n")).expect("write");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", &format!("commit {n}")]);
}

fn ini(repo: &str, tree_stable: u64) -> String {
    format!(
        "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = {PASSWORD}\nfactories = *\n\
         pollInterval = 1\ntreeStable = {tree_stable}\n\n[slave:s1]\n\n\
         [proj]\ntype = shell\ngit = {repo}#main\nstep.ok = true\n\n\
         [bus]\ntype = shell\nstep.ok = true\n"
    )
}

async fn wait<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn finished(db: &Db, builder: &str, number: i64) -> Option<f64> {
    db.build(builder, number)
        .await
        .ok()
        .flatten()
        .filter(|b| b.build.result.is_some())
        .map(|b| b.build.started_at)
}

async fn latency(tree_stable: u64, commits: usize) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    git(&repo, &["init", "-q", "-b", "main"]);
    commit(&repo, 0);
    let (master, slave) = common::master_with_slave(
        tmp.path(),
        &ini(&repo.to_string_lossy(), tree_stable),
        PASSWORD,
    )
    .await;
    let db = master.db().clone();
    let url = repo.to_string_lossy().into_owned();
    wait("the first poll", || async {
        (!db.poller_heads(&url).await.ok()?.is_empty()).then_some(())
    })
    .await;
    let mut samples = Vec::new();
    for n in 1..=commits {
        // Land at a different moment of the 1 s poll cycle each time.
        tokio::time::sleep(Duration::from_millis(((n * 379) % 1000) as u64)).await;
        commit(&repo, n);
        let t0 = autobot::db::now_f64();
        let started = wait("the build to finish", || finished(&db, "proj-s1", n as i64)).await;
        samples.push(started - t0);
    }
    samples.sort_by(f64::total_cmp);
    let budget = 1.0 + tree_stable as f64 + 0.1;
    let worst = samples.last().copied().unwrap_or(0.0);
    println!(
        "commit -> build started, pollInterval=1 treeStable={tree_stable}: {} commits, \
         median {:.0} ms, worst {:.0} ms (budget {:.0} ms) {}",
        samples.len(),
        samples[samples.len() / 2] * 1000.0,
        worst * 1000.0,
        budget * 1000.0,
        if worst <= budget { "OK" } else { "OVER" }
    );
    let _ = slave.shutdown.send(true);
    master.shutdown().await;
}

async fn burst(size: usize) {
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::write(tmp.path().join("master.ini"), ini("/nonexistent/repo", 0)).expect("ini");
    let master = Master::start_with(
        tmp.path(),
        MasterOptions {
            slaveport: Some(0),
            htmlport: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("master starts");
    let db = master.db().clone();
    let changes: Vec<NewChange> = (0..size)
        .map(|i| NewChange {
            who: format!("Dev {} <dev{}@example.org>", i % 50, i % 50),
            files: vec![format!("src/f{i}.c")],
            comments: format!("change {i}"),
            revision: Some(format!("{i:040x}")),
            branch: Some("main".into()),
            when: autobot::db::now(),
            project: "bus".into(),
            ..Default::default()
        })
        .collect();
    let t0 = Instant::now();
    master.changes().add(changes).await.expect("stored");
    let stored = t0.elapsed();
    let (n, sets) = wait("BuildSets with every Change", || async {
        let (n, sets): (i64, i64) = db
            .read(|c| {
                c.query_row(
                    "SELECT count(*), count(DISTINCT bs.id) FROM sourcestamp_changes sc
                     JOIN buildsets bs ON bs.sourcestamp = sc.sourcestamp
                     WHERE bs.scheduler = 'bus'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
            .ok()?;
        (n as usize >= size).then_some((n, sets))
    })
    .await;
    let total = t0.elapsed();
    println!(
        "{size}-Change burst through the ChangeBus: stored in {:.0} ms, all {n} in \
         {sets} BuildSet(s) after {:.0} ms (budget 5000 ms) {}",
        stored.as_secs_f64() * 1000.0,
        total.as_secs_f64() * 1000.0,
        if total <= Duration::from_secs(5) {
            "OK"
        } else {
            "OVER"
        }
    );
    master.shutdown().await;
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let commits: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8).max(1);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        latency(0, commits).await;
        latency(1, commits).await;
        burst(size).await;
    });
}
