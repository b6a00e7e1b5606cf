//! Benchmark of the issue-4 budgets: the build engine, measured from outside
//! through the JSON API, with master and slave as real daemons (`autobot start`).
//!
//! Run with `cargo bench --bench engine` (release build) on a quiet machine; one
//! `name value unit` line per figure, beside Buildbot 4.3's figure as measured on
//! 2026-11-22 and the ratio (`bench/compare/run.sh` measures both side by side in
//! one run). Scenarios:
//! * `throughput` — 200 forces of a one-step `true` builder posted one after
//!   another on one keep-alive connection (as Buildbot's bench posts them), first
//!   POST → last request complete (`--builds N`);
//! * `latency` — one force → request complete, median of 20 (1 ms poll);
//! * `log` — a step printing 100 MB (`--log-bytes N`): force → complete, the master's
//!   peak RSS meanwhile (VmHWM after clear_refs), then `GET …/logs/stdio` back out:
//!   time, bytes, and the master's peak RSS while serving it;
//! * `queue` — 25,000 BuildRequests queued in SQLite while the master is down
//!   (`--queued N`): `autobot start` until the master answers.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use autobot::db::requests::{NewBuildSet, NewSourceStamp};
use common::*;
use serde_json::Value;

fn post(port: u16, path: &str, body: &Value) -> Value {
    let r = autobot::cli::http::request("127.0.0.1", port, "POST", path, Some(body))
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert!(
        (200..300).contains(&r.status),
        "POST {path}: {}",
        r.error_text()
    );
    r.json().unwrap()
}

fn get_json(port: u16, path: &str) -> Value {
    let r = autobot::cli::http::request("127.0.0.1", port, "GET", path, None)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    r.json().unwrap()
}

fn force(port: u16, builder: &str) -> i64 {
    post(port, &force_path(builder), &force_body())["request_id"]
        .as_i64()
        .unwrap()
}

fn force_path(builder: &str) -> String {
    format!("/api/v1/builders/{builder}/force")
}

fn force_body() -> Value {
    serde_json::json!({"reason": "bench"})
}

/// [`force`] on a kept-alive connection.
fn force_on(conn: &mut KeepAlive, builder: &str) -> i64 {
    let (status, v) = conn.post_json(&force_path(builder), &force_body());
    assert!(
        (200..300).contains(&status),
        "force {builder}: HTTP {status}: {v}"
    );
    v["request_id"].as_i64().unwrap()
}

fn complete(port: u16, request: i64) -> Option<String> {
    let r = get_json(port, &format!("/api/v1/buildrequests/{request}"));
    (r["complete"] == true).then(|| r["result"].as_str().unwrap_or("?").to_string())
}

/// Reset a process's VmHWM to its current RSS (Linux `clear_refs` 5).
fn clear_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// GET a path and count the body's bytes without keeping them.
fn download(port: u16, path: &str) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut head_done = false;
    let mut head = Vec::new();
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if head_done {
            total += n as u64;
            continue;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(
                head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
                "GET {path}: {}",
                String::from_utf8_lossy(&head)
            );
            total += (head.len() - i - 4) as u64;
            head_done = true;
        }
    }
    total
}

struct Pair {
    mdir: std::path::PathBuf,
    sdir: std::path::PathBuf,
    hp: u16,
}

fn setup(tmp: &Path, log_bytes: u64) -> Pair {
    let mdir = tmp.join("engine-master");
    let sdir = tmp.join("engine-slave");
    std::fs::create_dir_all(&mdir).unwrap();
    let (sp, hp, pp) = (free_port(), free_port(), free_port());
    std::fs::write(
        mdir.join("master.ini"),
        format!(
            "[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {pp}\npassword = pw\n\
             factories = *\n[slave:s1]\n\n[true]\ntype = shell\nstep.true = true\n\n\
             [big]\ntype = shell\nstep.yes = sh -c \"yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678 | head -c {log_bytes}\"\n"
        ),
    )
    .unwrap();
    autobot(&["start", mdir.to_str().unwrap()]);
    start_slave_daemon(&sdir, sp, hp, "s1");
    Pair { mdir, sdir, hp }
}

/// User + system CPU seconds a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is 3rd, utime 14th, stime 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (ticks(11) + ticks(12)) / hz
}

fn throughput(p: &Pair, n: usize) {
    // A warm-up build creates the builder directory on the slave.
    let w = force(p.hp, "true-s1");
    wait_until("warm-up", Duration::from_secs(30), || {
        complete(p.hp, w).is_some()
    });
    let (mpid, spid) = (pid_of(&p.mdir), pid_of(&p.sdir));
    let (mcpu, scpu) = (cpu_secs(mpid), cpu_secs(spid));
    // One POST per build on a single keep-alive connection, as Buildbot's bench.
    let mut conn = KeepAlive::connect(p.hp);
    let t0 = Instant::now();
    let ids: Vec<i64> = (0..n).map(|_| force_on(&mut conn, "true-s1")).collect();
    let last = *ids.last().unwrap();
    // Polled every 10 ms, as Buildbot's bench does, so that the polling itself
    // costs the master little.
    while complete(p.hp, last).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(300), "all builds");
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t0.elapsed().as_secs_f64();
    let (mcpu, scpu) = (cpu_secs(mpid) - mcpu, cpu_secs(spid) - scpu);
    let ok = ids
        .iter()
        .filter(|&&id| complete(p.hp, id).as_deref() == Some("success"))
        .count();
    assert_eq!(ok, n, "every build succeeds");
    report(
        &format!("throughput_{n}_true_builds"),
        n as f64 / took,
        "builds/s",
        Some(3.58),
        false,
    );
    report(
        "throughput_master_cpu_per_build",
        mcpu * 1000.0 / n as f64,
        "ms",
        Some(208.0),
        true,
    );
    report(
        "throughput_slave_cpu_per_build",
        scpu * 1000.0 / n as f64,
        "ms",
        Some(6.0),
        true,
    );
}

fn latency(p: &Pair) {
    let mut times = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let id = force(p.hp, "true-s1");
        while complete(p.hp, id).is_none() {
            std::thread::sleep(Duration::from_millis(1));
            assert!(t0.elapsed() < Duration::from_secs(30));
        }
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    report(
        "latency_force_to_complete_median",
        times[times.len() / 2],
        "ms",
        Some(364.0),
        true,
    );
}

fn log_volume(p: &Pair, bytes: u64) {
    let mpid = pid_of(&p.mdir);
    let before = status_kib(mpid, "VmRSS");
    clear_peak(mpid);
    let t0 = Instant::now();
    let id = force(p.hp, "big-s1");
    wait_until("the 100 MB build", Duration::from_secs(300), || {
        complete(p.hp, id).is_some()
    });
    let took = t0.elapsed().as_secs_f64();
    assert_eq!(complete(p.hp, id).as_deref(), Some("success"));
    let build = get_json(p.hp, "/api/v1/builders/big-s1/builds?limit=1");
    let number = build[0]["number"].as_i64().unwrap();
    let detail = get_json(p.hp, &format!("/api/v1/builders/big-s1/builds/{number}"));
    let step = &detail["steps"][0];
    let step_secs = step["finished_at"].as_f64().unwrap() - step["started_at"].as_f64().unwrap();
    report(
        &format!("log_{}mb_force_to_complete", bytes / 1_000_000),
        took,
        "s",
        Some(17.9),
        true,
    );
    report("log_step_duration", step_secs, "s", None, true);
    report(
        "log_master_rss_before",
        mib(before),
        "MiB",
        Some(87.0),
        true,
    );
    report(
        "log_master_peak_rss",
        mib(status_kib(mpid, "VmHWM")),
        "MiB",
        Some(191.0),
        true,
    );
    clear_peak(mpid);
    let t0 = Instant::now();
    let got = download(
        p.hp,
        &format!("/api/v1/builders/big-s1/builds/{number}/steps/yes/logs/stdio"),
    );
    let took = t0.elapsed().as_secs_f64();
    assert!(got >= bytes, "downloaded {got} of {bytes} bytes");
    report("log_download", took, "s", Some(21.3), true);
    report(
        "log_download_mb_per_s",
        got as f64 / 1e6 / took,
        "MB/s",
        None,
        false,
    );
    report(
        "log_download_master_peak_rss",
        mib(status_kib(mpid, "VmHWM")),
        "MiB",
        None,
        true,
    );
}

fn queued_start(p: &Pair, n: usize) {
    autobot(&["stop", p.sdir.to_str().unwrap()]);
    autobot(&["stop", p.mdir.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db_path = p.mdir.join(autobot::db::DB_FILE);
    rt.block_on(async {
        let db = autobot::db::Db::open(&db_path).unwrap();
        for i in 0..n {
            db.add_buildset(
                NewBuildSet {
                    reason: format!("queued {i}"),
                    scheduler: "bench".into(),
                    sourcestamp: NewSourceStamp::default(),
                    builders: vec!["true-s1".into()],
                    ..Default::default()
                },
                autobot::db::now_f64(),
            )
            .await
            .unwrap();
        }
    });
    let t0 = Instant::now();
    autobot(&["start", p.mdir.to_str().unwrap()]);
    let b = get_json(p.hp, "/api/v1/builders/true-s1");
    let took = t0.elapsed().as_secs_f64();
    assert_eq!(b["pending"].as_i64(), Some(n as i64), "{b}");
    report(
        &format!("start_with_{n}_queued_requests"),
        took,
        "s",
        None,
        true,
    );
    autobot(&["stop", p.mdir.to_str().unwrap()]);
}

fn main() {
    let builds = opt("--builds", 200) as usize;
    let log_bytes = opt("--log-bytes", 100_000_000);
    let queued = opt("--queued", 25_000) as usize;
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "# autobot {} engine bench; binary {}",
        autobot::VERSION,
        *EXE
    );
    let p = setup(tmp.path(), log_bytes);
    throughput(&p, builds);
    latency(&p);
    if log_bytes > 0 {
        log_volume(&p, log_bytes);
    }
    queued_start(&p, queued);
}
