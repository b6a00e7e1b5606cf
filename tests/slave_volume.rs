//! Volume check for the slave binary: a command printing 100 MB streams to the
//! master with the slave's memory bounded. Slow in debug builds, so ignored by
//! default: `cargo test --release --test slave_volume -- --ignored --nocapture`.

mod slave_harness;

use std::time::{Duration, Instant};

use rmpv::Value;
use slave_harness::*;

/// Peak resident memory of a process in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
#[ignore]
async fn hundred_megabytes_of_output_in_bounded_memory() {
    let mut master = Master::start("vol1").await;
    let slave = Slave::create("vol1", master.port, 30);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_autobot"))
        .arg("run")
        .arg(&slave.basedir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut conn = master.accept().await;
    conn.settings().await;
    conn.count_only = true;
    eprintln!("idle: slave peak RSS {} KiB", peak_rss_kib(child.id()));
    let total: usize = 100 * 1000 * 1000;
    let started = Instant::now();
    let r = conn
        .run(
            "big",
            "shell",
            args(vec![
                ("workdir", Value::from(".")),
                (
                    "command",
                    Value::from(format!(
                        "head -c {} /dev/zero | tr '\\0' 'x' | fold -w 99",
                        total / 100 * 99
                    )),
                ),
            ]),
        )
        .await;
    let secs = started.elapsed().as_secs_f64();
    let rss = peak_rss_kib(child.id());
    eprintln!(
        "100 MB: {:.2} s, {:.0} MB/s, slave peak RSS {} KiB",
        secs,
        conn.counted as f64 / secs / 1e6,
        rss
    );
    assert_eq!(r.rc(), Some(0));
    assert_eq!(conn.counted, total);
    assert!(rss <= 20 * 1024, "slave peak RSS {rss} KiB > 20 MiB");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "slave did not stop");
        let _ = conn.pump(Duration::from_millis(50)).await;
    }
}
