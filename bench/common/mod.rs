//! Helpers shared by the benches (`bench/*.rs`): the release binary under test, free
//! ports, a tiny HTTP client, RSS from `/proc`, waits with deadlines, and the one
//! line per figure format (`name value unit`, with Buildbot 4.3's figure and the
//! ratio when there is one).
//!
//! Include with `#[path = "common/mod.rs"] mod common;`.

#![allow(dead_code)]

pub mod history;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The binary under test: `$AUTOBOT_BENCH_BIN` if set (to measure another build,
/// e.g. the one before a change, with the same bench), else the one cargo built.
/// Made absolute: the benches start daemons and hooks in other directories.
pub static EXE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let named =
        std::env::var("AUTOBOT_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_autobot").into());
    match std::fs::canonicalize(&named) {
        Ok(path) => path.to_string_lossy().into_owned(),
        Err(e) => panic!("AUTOBOT_BENCH_BIN={named}: {e}"),
    }
});

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf.split_once("\r\n\r\n")?.1.to_string())
}

/// One HTTP/1.1 keep-alive connection to a master's web port: requests go one
/// after another on it, as Buildbot 4.3's bench sends its forces (bench/compare).
pub struct KeepAlive {
    conn: std::io::BufReader<TcpStream>,
}

impl KeepAlive {
    pub fn connect(port: u16) -> KeepAlive {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the master");
        s.set_nodelay(true).expect("TCP_NODELAY");
        KeepAlive {
            conn: std::io::BufReader::new(s),
        }
    }

    /// POST a JSON body; the status and the JSON reply.
    pub fn post_json(&mut self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        use std::io::BufRead;
        let body = body.to_string();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.conn
            .get_mut()
            .write_all(req.as_bytes())
            .expect("send the request");
        let mut line = String::new();
        self.conn.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("POST {path}: bad status line {line:?}"));
        let mut length = None;
        loop {
            line.clear();
            self.conn.read_line(&mut line).expect("header line");
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.unwrap_or_else(|| panic!("POST {path}: reply without Content-Length"));
        let mut reply = vec![0u8; length];
        self.conn.read_exact(&mut reply).expect("reply body");
        let v = serde_json::from_slice(&reply)
            .unwrap_or_else(|e| panic!("POST {path}: HTTP {status}, not JSON ({e})"));
        (status, v)
    }
}

pub fn connected_count(port: u16) -> usize {
    get(port, "/api/v1/slaves")
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.as_array()
                .map(|a| a.iter().filter(|s| s["connected"] == true).count())
        })
        .unwrap_or(0)
}

pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .trim_start_matches(':')
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

pub fn pid_of(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("autobot.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn report(name: &str, value: f64, unit: &str, buildbot: Option<f64>, lower_is_better: bool) {
    match buildbot {
        Some(b) if value > 0.0 => {
            let ratio = if lower_is_better {
                b / value
            } else {
                value / b
            };
            println!(
                "{name} {value:.3} {unit}   (Buildbot 4.3: {b} {unit}; autobot {ratio:.1}x better)"
            );
        }
        _ => println!("{name} {value:.3} {unit}"),
    }
}

pub fn autobot(args: &[&str]) {
    let out = Command::new(&*EXE)
        .args(args)
        .output()
        .expect("run autobot");
    if !out.status.success() {
        panic!(
            "autobot {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    t0.elapsed()
}

/// The number after `name` on the bench's command line (`--builds 200`), or
/// `default`.
pub fn opt(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run `git fast-import` in the repository `dir` on `stream`.
pub fn git_fast_import(dir: &Path, stream: &[u8]) {
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("git fast-import");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stream)
        .expect("feed fast-import");
    assert!(child.wait().expect("wait").success(), "fast-import failed");
}

/// An in-process autobot slave named `s1` in `dir` (made if missing), connecting
/// to a master's slave `port` with `password`; returns once it is up. Its handle
/// stops it.
pub async fn start_slave(dir: &Path, port: u16, password: &str) -> autobot::daemon::ControlHandle {
    std::fs::create_dir_all(dir.join("info")).expect("slave dir");
    let dir = std::fs::canonicalize(dir).expect("slave dir");
    std::fs::write(dir.join("info/admin"), "Bench <bench@example.org>\n").expect("info");
    std::fs::write(dir.join("info/host"), "bench\n").expect("info");
    let ini = autobot::config::SlaveIni {
        basedir: dir.clone(),
        master_host: "127.0.0.1".into(),
        master_port: port,
        more_masters: Vec::new(),
        name: "s1".into(),
        password: password.into(),
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

/// `create-slave NAME` in `sdir` for the master on slaveport `sp` (password
/// `pw`), `autobot start` it, and wait until the master's web port `hp` shows a
/// slave connected: the daemon slave every bench that runs real daemons starts.
pub fn start_slave_daemon(sdir: &Path, sp: u16, hp: u16, name: &str) {
    autobot(&[
        "create-slave",
        sdir.to_str().unwrap(),
        &format!("127.0.0.1:{sp}"),
        name,
        "pw",
    ]);
    autobot(&["start", sdir.to_str().unwrap()]);
    wait_until("the slave to connect", Duration::from_secs(60), || {
        connected_count(hp) >= 1
    });
}

/// A master in `dir/master` with `ini` as its master.ini, on free ports, and its
/// in-process slave `s1` in `dir/slave` (see [`start_slave`]), once connected.
pub async fn master_with_slave(
    dir: &Path,
    ini: &str,
    password: &str,
) -> (autobot::app::Master, autobot::daemon::ControlHandle) {
    let mdir = dir.join("master");
    std::fs::create_dir_all(&mdir).expect("master dir");
    std::fs::write(mdir.join("master.ini"), ini).expect("master.ini");
    let master = autobot::app::Master::start_with(
        &mdir,
        autobot::app::MasterOptions {
            slaveport: Some(0),
            htmlport: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("master starts");
    let slave = start_slave(&dir.join("slave"), master.slaveport(), password).await;
    master
        .registry()
        .wait_connected("s1", Duration::from_secs(60))
        .await
        .expect("slave connects");
    (master, slave)
}

/// `git ARGS` in `dir` as the bench's author, away from the user's and system's
/// git configuration; its trimmed stdout (panics with stderr if it fails).
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.org")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.org")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
