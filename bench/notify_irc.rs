//! Issue 20's IRC budget: a build's end → its announcement seen by a client in
//! the channel, p95 ≤ 200 ms. A real master (SQLite, TCP) with an in-process
//! autobot slave, a real IRC server (Debian's `ngircd`) and a test client
//! (`tests/irc_common`) that joined the bot's channel; `ircNotify = finished`, so
//! every build is announced. The clock starts when the engine's `BuildFinished`
//! event is seen and stops when the client reads the bot's line.
//!
//! `cargo bench --bench notify_irc [-- --builds 60]`

#[path = "common/mod.rs"]
mod common;

#[path = "../tests/irc_common/mod.rs"]
mod irc_common;

use std::path::Path;
use std::time::{Duration, Instant};

use autobot::master::{EngineEvent, ForceRequest, Master, MasterOptions};
use common::{opt, report};
use irc_common::{IrcClient, Ngircd};

const PASSWORD: &str = "pw-bench-irc";

async fn start_slave(dir: &Path, port: u16) -> autobot::daemon::ControlHandle {
    std::fs::create_dir_all(dir.join("info")).expect("slave dir");
    let dir = std::fs::canonicalize(dir).expect("slave dir");
    std::fs::write(dir.join("info/admin"), "Bench <bench@example.org>\n").expect("info");
    std::fs::write(dir.join("info/host"), "bench\n").expect("info");
    let ini = autobot::config::SlaveIni {
        basedir: dir.clone(),
        master_host: "127.0.0.1".into(),
        master_port: port,
        name: "s1".into(),
        password: PASSWORD.into(),
        keepalive: 5,
        umask: 0o022,
        usepty: false,
    };
    std::fs::write(dir.join(autobot::config::slave::SLAVE_INI), ini.render()).expect("ini");
    let (control, mut handle) = autobot::daemon::control();
    tokio::spawn(async move {
        if let Err(e) = autobot::slave::run(&dir, control).await {
            eprintln!("slave failed: {e}");
        }
    });
    match (&mut handle.ready).await {
        Ok(Ok(_)) => {}
        other => panic!("slave did not start: {other:?}"),
    }
    handle
}

async fn bench(builds: usize) {
    if irc_common::ngircd_path().is_none() {
        panic!("ngircd is not on PATH (apt-get install ngircd; scripts/test.sh installs it)");
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let irc = Ngircd::start(&tmp.path().join("irc"), 0).await;
    let mut client = IrcClient::connect(irc.port, "watcher").await;
    let mdir = tmp.path().join("master");
    std::fs::create_dir_all(&mdir).expect("master dir");
    std::fs::write(
        mdir.join("master.ini"),
        format!(
            "[:master:]\npassword = {PASSWORD}\nfactories = *\nircHost = 127.0.0.1:{}\n\
             ircChannels = #bench\nbotname = benchbot\nircNotify = finished\n\
             [slave:s1]\n[pass]\ntype = shell\nstep.ok = true\n",
            irc.port
        ),
    )
    .expect("master.ini");
    let master = Master::start_with(
        &mdir,
        MasterOptions {
            slaveport: Some(0),
            htmlport: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("master starts");
    let slave = start_slave(&tmp.path().join("slave"), master.slaveport()).await;
    master
        .registry()
        .wait_connected("s1", Duration::from_secs(60))
        .await
        .expect("slave connects");
    client.join_and_wait_for("#bench", "benchbot").await;

    let mut events = master.engine().subscribe();
    let mut samples = Vec::with_capacity(builds);
    for n in 1..=builds as i64 {
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
    }
    samples.sort_by(f64::total_cmp);
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    let p95 = at(0.95);
    report(
        "irc.build_end_to_announcement.p50",
        at(0.5),
        "ms",
        None,
        true,
    );
    report("irc.build_end_to_announcement.p95", p95, "ms", None, true);
    report(
        "irc.build_end_to_announcement.max",
        at(1.0),
        "ms",
        None,
        true,
    );
    println!(
        "build end -> IRC announcement: {} builds, p95 {p95:.1} ms (budget 200 ms) {}",
        samples.len(),
        if p95 <= 200.0 { "OK" } else { "OVER" }
    );
    let _ = slave.shutdown.send(true);
    master.shutdown().await;
}

fn main() {
    let builds = opt("--builds", 60) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(builds));
}
