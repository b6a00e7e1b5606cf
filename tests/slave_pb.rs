//! A stock buildbot-worker made the usual way (issue 21): `buildbot-worker
//! create-worker` defaults to Buildbot's PB protocol, which autobot does not
//! speak. The master recognises it on the slave port, says in `autobot.log` —
//! once, though the worker retries forever — what is wrong and how to fix it, and
//! shows it with the slave in the API and on the slaves pages; once the worker's
//! `buildbot.tac` says `protocol = 'msgpack_experimental_v7'` it connects and the
//! problem is gone.
//!
//! A real master made by `create` (run as a daemon, so its log is the real
//! `autobot.log`) and the stock `buildbot-worker` 4.3.0 of the tests' venv
//! (`support::buildbot_worker_venv`); when that cannot be installed the test
//! fails under `CI=true` and prints SKIP elsewhere.

#[path = "support/mod.rs"]
mod support;

use support::cli::{autobot, create_hello};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `GET path` on 127.0.0.1:port; (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf.split_once("\r\n\r\n")?.1.to_string()))
}

/// The slave `name` of `GET /api/v1/slaves`.
fn api_slave(port: u16, name: &str) -> serde_json::Value {
    get(port, "/api/v1/slaves")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|v| v.as_array()?.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The log's lines holding the PB warning.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("connects with Buildbot's PB protocol"))
        .collect()
}

/// `buildbot-worker start --nodaemon` in `dir` (it logs to `dir/twistd.log`).
fn start_worker(bin: &Path, dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("worker.out")).unwrap();
    std::process::Command::new(bin)
        .args(["start", "--nodaemon"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Kills a worker's process group when the test ends, however it ends.
struct Killed(Option<Child>);

impl Killed {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let pgid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stops the master when the test ends.
struct Stopped(String);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = autobot().args(["stop", &self.0]).output();
    }
}

#[test]
fn a_worker_speaking_pb_is_told_once_how_to_switch() {
    let venv = match support::buildbot_worker_venv() {
        Ok(v) => v,
        Err(e) => return support::skip(&format!("no buildbot-worker: {e}")),
    };
    let bin = venv.join("bin/buildbot-worker");
    let tmp = tempfile::tempdir().unwrap();
    let bot = tmp.path().join("bot");
    let [slaveport, htmlport, _] = create_hello(&bot);
    let master = bot.join("master");
    let ini = master.join("master.ini");
    let text = read(&ini);
    std::fs::write(
        &ini,
        format!("{text}\n[slave:stock]\npassword = stock-pw\nfactories = hello\n"),
    )
    .unwrap();
    autobot()
        .args(["start", master.to_str().unwrap()])
        .assert()
        .success();
    let _master = Stopped(master.to_str().unwrap().to_string());

    // The usual way: create-worker's default protocol (PB).
    let wdir = tmp.path().join("worker");
    let out = std::process::Command::new(&bin)
        .arg("create-worker")
        .arg(&wdir)
        .arg(format!("127.0.0.1:{slaveport}"))
        .args(["stock", "stock-pw"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let tac = wdir.join("buildbot.tac");
    assert!(read(&tac).contains("protocol = 'pb'"), "{}", read(&tac));
    let mut worker = Killed(Some(start_worker(&bin, &wdir)));

    let log = master.join("autobot.log");
    wait_for("the PB warning in autobot.log", support::DEADLINE, || {
        !warnings(&read(&log)).is_empty()
    });
    let text = read(&log);
    let line = warnings(&text)[0].to_string();
    for part in [
        "slave stock",
        "--protocol=msgpack_experimental_v7",
        "protocol = 'msgpack_experimental_v7'",
        "buildbot.tac",
        "WARN",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }

    // It retries (twice more at least: each attempt is refused the same way)
    // and the log still holds the warning once.
    let retries = || {
        read(&wdir.join("twistd.log"))
            .matches("Scheduling retry")
            .count()
    };
    let deadline = Instant::now() + support::DEADLINE;
    while retries() < 3 {
        assert!(
            Instant::now() < deadline,
            "the worker did not retry twice: {}",
            read(&wdir.join("twistd.log"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(warnings(&read(&log)).len(), 1, "{}", read(&log));

    // The slave's entry says it, in the API and on the pages.
    let s = api_slave(htmlport, "stock");
    assert_eq!(s["connected"], false, "{s}");
    let problem = s["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("PB protocol") && problem.contains("--protocol=msgpack_experimental_v7"),
        "{s}"
    );
    assert!(api_slave(htmlport, "slave")["problem"].is_null());
    for page in ["/slaves", "/slaves/stock"] {
        let (status, body) = get(htmlport, page).unwrap();
        assert_eq!(status, 200);
        assert!(
            body.contains("--protocol=msgpack_experimental_v7"),
            "{page}: {body}"
        );
    }

    // The fix the warning names: the worker connects, the problem is gone.
    worker.kill();
    let fixed = read(&tac).replace("protocol = 'pb'", "protocol = 'msgpack_experimental_v7'");
    std::fs::write(&tac, fixed).unwrap();
    let _worker = Killed(Some(start_worker(&bin, &wdir)));
    wait_for("the fixed worker to connect", support::DEADLINE, || {
        api_slave(htmlport, "stock")["connected"] == true
    });
    assert!(api_slave(htmlport, "stock")["problem"].is_null());
}
