//! Benchmark of issue 20's mail budgets, with master and slave as real daemons
//! (`autobot start`) and a real SMTP server.
//!
//! Run with `cargo bench --bench notify_mail` (release build) on a quiet machine;
//! one `name value unit` line per figure. Scenarios:
//! * `latency` — a build's end (its `finished_at`) → the mail accepted by a local
//!   aiosmtpd (its clock at DATA), one build at a time (`--mails N`, default 40):
//!   p50 and p95; the budget is p95 ≤ 200 ms;
//! * `blackhole` — 200 one-step builds (`--builds N`) forced one after another, as
//!   `bench/engine.rs`'s throughput, once with no mail and once with
//!   `mailMode = all` against an SMTP server that accepts the TCP connection and
//!   never answers: builds/s of each and their ratio; the budget is within 10 %.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::history::percentile;
use common::*;
use serde_json::Value;

const SMTP_PY: &str = include_str!("../tests/notify_common/smtp_server.py");

fn get_json(port: u16, path: &str) -> Value {
    let r = autobot::cli::http::request("127.0.0.1", port, "GET", path, None)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    r.json().unwrap()
}

fn complete(port: u16, request: i64) -> bool {
    get_json(port, &format!("/api/v1/buildrequests/{request}"))["complete"] == true
}

fn force_on(conn: &mut KeepAlive, builder: &str) -> i64 {
    let (status, v) = conn.post_json(
        &format!("/api/v1/builders/{builder}/force"),
        &serde_json::json!({"reason": "bench"}),
    );
    assert!((200..300).contains(&status), "force: HTTP {status}: {v}");
    v["request_id"].as_i64().unwrap()
}

struct Pair {
    mdir: PathBuf,
    sdir: PathBuf,
    hp: u16,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new(&*EXE).arg("stop").arg(&self.sdir).output();
        let _ = Command::new(&*EXE).arg("stop").arg(&self.mdir).output();
    }
}

fn setup(tmp: &Path, name: &str, mail_keys: &str) -> Pair {
    let mdir = tmp.join(format!("{name}-master"));
    let sdir = tmp.join(format!("{name}-slave"));
    std::fs::create_dir_all(&mdir).unwrap();
    let (sp, hp, pp) = (free_port(), free_port(), free_port());
    std::fs::write(
        mdir.join("master.ini"),
        format!(
            "[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {pp}\npassword = pw\n\
             factories = *\n{mail_keys}\n[slave:s1]\n\n[true]\ntype = shell\nstep.true = true\n"
        ),
    )
    .unwrap();
    autobot(&["start", mdir.to_str().unwrap()]);
    start_slave_daemon(&sdir, sp, hp, "s1");
    Pair { mdir, sdir, hp }
}

/// The test suite's aiosmtpd server on `port`, storing into `dir`.
struct Smtp {
    child: Child,
    dir: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp(tmp: &Path, port: u16) -> Smtp {
    std::fs::create_dir_all(tmp).unwrap();
    let script = tmp.join("smtp_server.py");
    std::fs::write(&script, SMTP_PY).unwrap();
    let dir = tmp.join("mail");
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("--dir")
        .arg(&dir)
        .arg("--port")
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with aiosmtpd (apt-get install python3-aiosmtpd)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "READY", "the SMTP server did not start");
    Smtp { child, dir }
}

fn latency(tmp: &Path, n: usize) {
    let port = free_port();
    let server = smtp(tmp, port);
    let p = setup(
        tmp,
        "latency",
        &format!("recipients = dev@example.org\nsmtpHost = 127.0.0.1\nsmtpPort = {port}\n"),
    );
    let mut conn = KeepAlive::connect(p.hp);
    let mut ms = Vec::new();
    for i in 0..n {
        let id = force_on(&mut conn, "true-s1");
        wait_until("the build", Duration::from_secs(60), || complete(p.hp, id));
        let mail = server.dir.join(format!("{i}.json"));
        wait_until("the mail", Duration::from_secs(60), || mail.exists());
        let b = get_json(p.hp, &format!("/api/v1/builders/true-s1/builds/{}", i + 1));
        let finished = b["finished_at"].as_f64().unwrap();
        let m: Value = serde_json::from_str(&std::fs::read_to_string(&mail).unwrap()).unwrap();
        let accepted = m["accepted_at"].as_f64().unwrap();
        ms.push((accepted - finished) * 1000.0);
    }
    report(
        "mail_latency_p50",
        percentile(&mut ms, 0.5),
        "ms",
        None,
        true,
    );
    report(
        "mail_latency_p95",
        percentile(&mut ms, 0.95),
        "ms",
        None,
        true,
    );
    report(
        "mail_latency_max",
        percentile(&mut ms, 1.0),
        "ms",
        None,
        true,
    );
}

/// builds/s of `n` one-step builds on a master with `mail_keys`.
fn throughput(tmp: &Path, name: &str, mail_keys: &str, n: usize) -> f64 {
    let p = setup(tmp, name, mail_keys);
    let mut conn = KeepAlive::connect(p.hp);
    let w = force_on(&mut conn, "true-s1");
    wait_until("warm-up", Duration::from_secs(30), || complete(p.hp, w));
    let t0 = Instant::now();
    let ids: Vec<i64> = (0..n).map(|_| force_on(&mut conn, "true-s1")).collect();
    let last = *ids.last().unwrap();
    while !complete(p.hp, last) {
        assert!(t0.elapsed() < Duration::from_secs(600), "all builds");
        std::thread::sleep(Duration::from_millis(10));
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn blackhole(tmp: &Path, n: usize) {
    // Accepts every connection and never says a word.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    let plain = throughput(tmp, "plain", "", n);
    let mail = throughput(
        tmp,
        "blackhole",
        &format!(
            "recipients = dev@example.org\nmailMode = all\nsmtpHost = 127.0.0.1\nsmtpPort = {port}\n"
        ),
        n,
    );
    report(
        &format!("throughput_{n}_builds_no_mail"),
        plain,
        "builds/s",
        None,
        false,
    );
    report(
        &format!("throughput_{n}_builds_blackholed_smtp"),
        mail,
        "builds/s",
        None,
        false,
    );
    report(
        "blackholed_vs_no_mail",
        mail / plain * 100.0,
        "%",
        None,
        false,
    );
}

fn main() {
    let mails = opt("--mails", 40) as usize;
    let builds = opt("--builds", 200) as usize;
    let tmp = tempfile::tempdir().unwrap();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--") && a.parse::<u64>().is_err())
        .collect();
    let want = |s: &str| filter.is_empty() || filter.iter().any(|f| s.contains(f.as_str()));
    if want("latency") {
        latency(&tmp.path().join("latency"), mails);
    }
    if want("blackhole") {
        blackhole(&tmp.path().join("blackhole"), builds);
    }
}
