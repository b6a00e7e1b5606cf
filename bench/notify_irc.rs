//! Issue 20's IRC budget: a build's end → its announcement seen by a client in
//! the channel, p95 ≤ 200 ms. A real master (SQLite, TCP) with an in-process
//! autobot slave, a real IRC server (Debian's `ngircd`) and a test client
//! (`tests/irc_common`) that joined the bot's channel; `ircNotify = finished`, so
//! every build is announced. The clock starts when the engine's `BuildFinished`
//! event is seen and stops when the client reads the bot's line.
//!
//! Two series: builds ending one per `--gap-ms` (default 1000: what a busy CI
//! sees, and within what IRC servers let a client say), the budget's figure;
//! then builds back to back, where the bot's flood pacing (5 lines, then two a
//! second) holds the announcements back by design, reported for what it is.
//!
//! `cargo bench --bench notify_irc [-- --builds 40 --gap-ms 1000 --burst-builds 20]`

#[path = "common/mod.rs"]
mod common;

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/irc_common/mod.rs"]
mod irc_common;

use std::time::{Duration, Instant};

use autobot::app::Master;
use autobot::engine::{EngineEvent, ForceRequest};
use common::{opt, report};
use irc_common::{IrcClient, Ngircd};

const PASSWORD: &str = "pw-bench-irc";

async fn bench(builds: usize, gap: Duration, burst: usize) {
    if irc_common::ngircd_path().is_none() {
        panic!("ngircd is not on PATH (apt-get install ngircd; scripts/test.sh installs it)");
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let irc = Ngircd::start(&tmp.path().join("irc"), 0).await;
    let mut client = IrcClient::connect(irc.port, "watcher").await;
    let ini = format!(
        "[:master:]\npassword = {PASSWORD}\nfactories = *\nircHost = 127.0.0.1:{}\n\
         ircChannels = #bench\nbotname = benchbot\nircNotify = finished\n\
         [slave:s1]\n[pass]\ntype = shell\nstep.ok = true\n",
        irc.port
    );
    let (master, slave) = common::master_with_slave(tmp.path(), &ini, PASSWORD).await;
    client.join_and_wait_for("#bench", "benchbot").await;

    let mut events = master.engine().subscribe();
    let mut next = 1;
    let spaced = series(&master, &mut events, &mut client, &mut next, builds, gap).await;
    let p95 = summary("irc.build_end_to_announcement", spaced);
    println!(
        "build end -> IRC announcement, one build end per {} ms: {builds} builds, p95 {p95:.1} ms (budget 200 ms) {}",
        gap.as_millis(),
        if p95 <= 200.0 { "OK" } else { "OVER" }
    );
    if burst > 0 {
        let back = series(
            &master,
            &mut events,
            &mut client,
            &mut next,
            burst,
            Duration::ZERO,
        )
        .await;
        let p95 = summary("irc.build_end_to_announcement.back_to_back", back);
        println!(
            "build end -> IRC announcement, {burst} builds back to back: p95 {p95:.1} ms (bound by the flood pacing, 500 ms a line after a burst of 5)"
        );
    }
    let _ = slave.shutdown.send(true);
    master.shutdown().await;
}

/// Force `count` builds one after another (waiting `gap` after each
/// announcement); the build end → announcement times in ms.
async fn series(
    master: &Master,
    events: &mut tokio::sync::broadcast::Receiver<EngineEvent>,
    client: &mut IrcClient,
    next: &mut i64,
    count: usize,
    gap: Duration,
) -> Vec<f64> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let n = *next;
        *next += 1;
        master
            .engine()
            .force("pass-s1", ForceRequest::default())
            .await
            .expect("force");
        let ended = loop {
            match events.recv().await {
                Ok(EngineEvent::BuildFinished { number, .. }) if number == n => {
                    break Instant::now()
                }
                Ok(_) => {}
                Err(e) => panic!("engine events: {e}"),
            }
        };
        let want = format!("build #{n} of pass-s1 is complete");
        loop {
            let t = client.expect_msg("benchbot", "#bench").await;
            if t.starts_with(&want) {
                break;
            }
        }
        samples.push(ended.elapsed().as_secs_f64() * 1000.0);
        // A rate, not a synchronisation: builds end at most once per `gap`.
        tokio::time::sleep(gap).await;
    }
    samples
}

/// Report p50, p95 and max of `samples` under `name`; the p95.
fn summary(name: &str, mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    report(&format!("{name}.p50"), at(0.5), "ms", None, true);
    report(&format!("{name}.p95"), at(0.95), "ms", None, true);
    report(&format!("{name}.max"), at(1.0), "ms", None, true);
    at(0.95)
}

fn main() {
    let builds = opt("--builds", 40) as usize;
    let gap = Duration::from_millis(opt("--gap-ms", 1000));
    let burst = opt("--burst-builds", 20) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(builds, gap, burst));
}
