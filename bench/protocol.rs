//! Benchmark of the issue-3 budgets: daemons and the worker protocol.
//!
//! Run with `cargo bench --bench protocol` (release build) on a quiet machine; it
//! prints one `name value unit` line per figure, beside Buildbot 4.3's figure as
//! measured on 2026-11-22 and the ratio (`bench/compare/run.sh` measures both side
//! by side in one run). Scenarios:
//! * `startup` — `autobot start` of a master+slave pair until the slave shows as
//!   connected in `GET /api/v1/slaves`; then idle RSS of both daemons;
//! * `fleet` — N slaves (default 1000, `--fleet N`) connecting at once to one master;
//!   time until all are connected and the master's RSS;
//! * `log` — a shell command printing 100 MB (`--log-bytes N`), streamed from a slave
//!   process to a master in this process: throughput and the slave's peak RSS.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autobot::config::SlaveIni;
use autobot::protocol::map;
use autobot::slavelink::command::{CommandEvent, Update};
use rmpv::Value;

#[path = "common/mod.rs"]
mod common;
use common::*;

fn startup(tmp: &Path) {
    let dir = tmp.join("pair");
    let (sp, hp, pp) = (free_port(), free_port(), free_port());
    autobot(&[
        "create",
        dir.to_str().unwrap(),
        "-f",
        "hello",
        "--slaveport",
        &sp.to_string(),
        "--htmlport",
        &hp.to_string(),
        "--publichtmlport",
        &pp.to_string(),
    ]);
    let t0 = Instant::now();
    autobot(&["start", dir.to_str().unwrap()]);
    let started = t0.elapsed();
    wait_until("the slave to connect", Duration::from_secs(30), || {
        connected_count(hp) == 1
    });
    let connected = t0.elapsed();
    report(
        "startup_start_returns",
        started.as_secs_f64() * 1000.0,
        "ms",
        Some(1130.0),
        true,
    );
    report(
        "startup_start_to_slave_connected",
        connected.as_secs_f64() * 1000.0,
        "ms",
        Some(1670.0),
        true,
    );
    // Idle: let both settle as Buildbot's bench does (5 s), then read RSS.
    std::thread::sleep(Duration::from_secs(5));
    let (m, s) = (pid_of(&dir.join("master")), pid_of(&dir.join("slave")));
    report(
        "idle_master_rss",
        mib(status_kib(m, "VmRSS")),
        "MiB",
        Some(80.6),
        true,
    );
    report(
        "idle_slave_rss",
        mib(status_kib(s, "VmRSS")),
        "MiB",
        Some(40.3),
        true,
    );
    autobot(&["stop", dir.to_str().unwrap()]);
}

fn fleet(tmp: &Path, n: usize) {
    let mdir = tmp.join("fleet-master");
    std::fs::create_dir_all(&mdir).unwrap();
    let (sp, hp, pp) = (free_port(), free_port(), free_port());
    let mut ini = format!(
        "[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {pp}\npassword = pw\nfactories = *\n\n[fleet]\ntype = shell\nstep.true = true\n"
    );
    for i in 0..n {
        ini.push_str(&format!("[slave:s{i:04}]\n"));
    }
    std::fs::write(mdir.join("master.ini"), ini).unwrap();
    autobot(&["start", mdir.to_str().unwrap()]);
    let mpid = pid_of(&mdir);
    let rss_before = status_kib(mpid, "VmRSS");
    let dirs: Vec<PathBuf> = (0..n)
        .map(|i| {
            let d = tmp.join(format!("fleet-slave-{i:04}"));
            std::fs::create_dir_all(&d).unwrap();
            let ini = SlaveIni {
                basedir: d.clone(),
                master_host: "127.0.0.1".into(),
                master_port: sp,
                more_masters: Vec::new(),
                name: format!("s{i:04}"),
                password: "pw".into(),
                keepalive: 600,
                umask: 0o022,
                usepty: false,
            };
            std::fs::write(d.join("slave.ini"), ini.render()).unwrap();
            d
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut handles = Vec::new();
    let t0 = Instant::now();
    for d in &dirs {
        let (control, handle) = autobot::daemon::control();
        let d = d.clone();
        rt.spawn(async move {
            let _ = autobot::slave::run(&d, control).await;
        });
        handles.push(handle);
    }
    wait_until("the fleet to connect", Duration::from_secs(120), || {
        connected_count(hp) == n
    });
    let took = t0.elapsed();
    report(
        &format!("fleet_{n}_all_connected"),
        took.as_secs_f64(),
        "s",
        None,
        true,
    );
    println!("fleet_buildbot_reference 50 workers in 9.44 s (Buildbot 4.3, separate processes)");
    report(
        "fleet_master_rss_before",
        mib(rss_before),
        "MiB",
        None,
        true,
    );
    report(
        "fleet_master_rss_after",
        mib(status_kib(mpid, "VmRSS")),
        "MiB",
        None,
        true,
    );
    for h in &handles {
        let _ = h.shutdown.send(true);
    }
    autobot(&["stop", mdir.to_str().unwrap()]);
    drop(rt);
}

fn log_volume(tmp: &Path, bytes: u64) {
    let mdir = tmp.join("log-master");
    let sdir = tmp.join("log-slave");
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::create_dir_all(&sdir).unwrap();
    let (sp, hp, pp) = (free_port(), free_port(), free_port());
    std::fs::write(
        mdir.join("master.ini"),
        format!("[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {pp}\npassword = pw\nfactories = *\n[slave:s1]\n[log]\ntype = shell\nstep.true = true\n"),
    )
    .unwrap();
    let ini = SlaveIni {
        basedir: sdir.clone(),
        master_host: "127.0.0.1".into(),
        master_port: sp,
        more_masters: Vec::new(),
        name: "s1".into(),
        password: "pw".into(),
        keepalive: 600,
        umask: 0o022,
        usepty: false,
    };
    std::fs::write(sdir.join("slave.ini"), ini.render()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let master = autobot::app::Master::start(&mdir).await.unwrap();
        autobot(&["start", sdir.to_str().unwrap()]);
        let spid = pid_of(&sdir);
        let slave = master
            .registry()
            .wait_connected("s1", Duration::from_secs(30))
            .await
            .expect("slave connects");
        let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef";
        let args = map(vec![
            ("workdir", Value::from("log-s1")),
            (
                "command",
                Value::Array(vec![
                    Value::from("sh"),
                    Value::from("-c"),
                    Value::from(format!("yes {line} | head -c {bytes}")),
                ]),
            ),
            ("want_stdout", Value::from(true)),
            ("want_stderr", Value::from(true)),
            ("timeout", Value::from(600)),
        ]);
        let _ = slave
            .run(
                "mkdir",
                map(vec![(
                    "paths",
                    Value::Array(vec![Value::from(slave.path("log-s1"))]),
                )]),
            )
            .await;
        let t0 = Instant::now();
        let mut cmd = slave.start_command("shell", args).await.unwrap();
        let mut got: u64 = 0;
        let mut rc = None;
        while let Some(ev) = cmd.next().await {
            match ev {
                CommandEvent::Update(Update::Stdout(s)) => got += s.len() as u64,
                CommandEvent::Update(Update::Rc(r)) => rc = Some(r),
                CommandEvent::Complete(_) | CommandEvent::Lost(_) => break,
                _ => {}
            }
        }
        let took = t0.elapsed().as_secs_f64();
        // Like buildbot-worker, the slave ends a last partial line with a newline.
        assert!(
            got == bytes || got == bytes + 1,
            "received {got} of {bytes} bytes (rc {rc:?})"
        );
        report("log_100MB_seconds", took, "s", Some(17.9), true);
        report(
            "log_throughput",
            bytes as f64 / 1e6 / took,
            "MB/s",
            Some(100.0 / 17.9),
            false,
        );
        report(
            "log_slave_peak_rss",
            mib(status_kib(spid, "VmHWM")),
            "MiB",
            Some(72.0),
            true,
        );
        report(
            "log_master_process_peak_rss",
            mib(status_kib(std::process::id(), "VmHWM")),
            "MiB",
            Some(191.0),
            true,
        );
        autobot(&["stop", sdir.to_str().unwrap()]);
        master.shutdown().await;
    });
}

fn main() {
    let fleet_n = opt("--fleet", 1000) as usize;
    let log_bytes = opt("--log-bytes", 100_000_000);
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "# autobot {} protocol bench; binary {}",
        autobot::VERSION,
        *EXE
    );
    startup(tmp.path());
    if fleet_n > 0 {
        fleet(tmp.path(), fleet_n);
    }
    if log_bytes > 0 {
        log_volume(tmp.path(), log_bytes);
    }
}
