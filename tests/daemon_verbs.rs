//! Integration tests of the daemon verbs (`start`, `stop`, `restart`, `reconfig`,
//! `run`) on the real binary: a master and a slave made by `create`, real ports on
//! 127.0.0.1, the slave's connection observed through `GET /api/v1/slaves`.

use assert_cmd::Command;
use predicates::prelude::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn autobot() -> Command {
    Command::cargo_bin("autobot").unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET a path on 127.0.0.1:port; the body as JSON, or None if nobody answers.
fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let body = buf.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

fn slave_connected(htmlport: u16, name: &str) -> bool {
    get_json(htmlport, "/api/v1/slaves")
        .and_then(|v| {
            v.as_array()?
                .iter()
                .find(|s| s["name"] == name)
                .map(|s| s["connected"] == true)
        })
        .unwrap_or(false)
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Bot {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    htmlport: u16,
    slaveport: u16,
}

impl Bot {
    fn create() -> Bot {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bot");
        let (slaveport, htmlport, publicport) = (free_port(), free_port(), free_port());
        autobot()
            .current_dir(tmp.path())
            .args([
                "create",
                dir.to_str().unwrap(),
                "-f",
                "hello",
                "--slaveport",
                &slaveport.to_string(),
                "--htmlport",
                &htmlport.to_string(),
                "--publichtmlport",
                &publicport.to_string(),
            ])
            .assert()
            .success();
        Bot {
            _tmp: tmp,
            dir,
            htmlport,
            slaveport,
        }
    }

    fn verb(&self, verb: &str, sub: &str) -> assert_cmd::assert::Assert {
        let p = if sub.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(sub)
        };
        autobot().args([verb, p.to_str().unwrap()]).assert()
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = autobot()
            .args(["stop", self.dir.to_str().unwrap()])
            .output();
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("autobot.log")).unwrap_or_default()
}

#[test]
fn start_connects_the_slave_and_stop_stops_both() {
    let bot = Bot::create();
    bot.verb("start", "").success().stdout(
        predicate::str::contains("master started").and(predicate::str::contains("slave started")),
    );
    assert!(bot.dir.join("master/autobot.pid").is_file());
    assert!(bot.dir.join("slave/autobot.pid").is_file());
    wait_for("the slave to connect", Duration::from_secs(10), || {
        slave_connected(bot.htmlport, "slave")
    });
    // A second start is refused while running.
    bot.verb("start", "master")
        .failure()
        .stderr(predicate::str::contains("already running"));
    // So is a foreground master on the same directory.
    bot.verb("run", "master")
        .failure()
        .stderr(predicate::str::contains("already running"));
    bot.verb("stop", "")
        .success()
        .stdout(predicate::str::contains("stopped"));
    assert!(!bot.dir.join("master/autobot.pid").exists());
    assert!(!bot.dir.join("slave/autobot.pid").exists());
    assert!(get_json(bot.htmlport, "/api/v1/slaves").is_none());
    // Stopping again is harmless.
    bot.verb("stop", "")
        .success()
        .stdout(predicate::str::contains("not running"));
}

#[test]
fn a_stale_pid_file_is_handled() {
    let bot = Bot::create();
    let pid = bot.dir.join("master/autobot.pid");
    std::fs::write(&pid, "999999\n").unwrap();
    bot.verb("stop", "master")
        .success()
        .stdout(predicate::str::contains("stale"));
    assert!(!pid.exists());
    std::fs::write(&pid, "999999\n").unwrap();
    bot.verb("start", "master").success();
    let now: i32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(now, 999999);
    bot.verb("stop", "master").success();
}

#[test]
fn start_reports_a_port_in_use_and_exits_non_zero() {
    let bot = Bot::create();
    let _squatter = TcpListener::bind(("0.0.0.0", bot.slaveport)).unwrap();
    bot.verb("start", "master")
        .failure()
        .stderr(predicate::str::contains(bot.slaveport.to_string()));
    assert!(!bot.dir.join("master/autobot.pid").exists());
}

#[test]
fn restart_and_the_slave_reconnects_by_itself() {
    let bot = Bot::create();
    bot.verb("start", "").success();
    wait_for("the slave to connect", Duration::from_secs(10), || {
        slave_connected(bot.htmlport, "slave")
    });
    bot.verb("restart", "master").success();
    wait_for("the slave to reconnect", Duration::from_secs(20), || {
        slave_connected(bot.htmlport, "slave")
    });
    bot.verb("restart", "").success();
    wait_for(
        "the slave to connect after a pair restart",
        Duration::from_secs(20),
        || slave_connected(bot.htmlport, "slave"),
    );
}

#[test]
fn reconfig_applies_a_valid_file_and_rejects_a_bad_one() {
    let bot = Bot::create();
    bot.verb("start", "master").success();
    let ini_path = bot.dir.join("master/master.ini");
    let original = std::fs::read_to_string(&ini_path).unwrap();
    std::fs::write(
        &ini_path,
        format!("{original}\n[slave:second]\nos = linux\nfactories = hello\n"),
    )
    .unwrap();
    bot.verb("reconfig", "master").success();
    wait_for("the new slave in the API", Duration::from_secs(10), || {
        get_json(bot.htmlport, "/api/v1/slaves")
            .map(|v| v.to_string().contains("\"second\""))
            .unwrap_or(false)
    });
    std::fs::write(&ini_path, format!("{original}\nthis line is not ini\n")).unwrap();
    bot.verb("reconfig", "master")
        .failure()
        .stderr(predicate::str::contains("rejected"));
    let log = log_of(&bot.dir.join("master"));
    assert!(log.contains("master.ini"), "{log}");
    // The old configuration keeps running.
    assert!(get_json(bot.htmlport, "/api/v1/slaves")
        .map(|v| v.to_string().contains("\"second\""))
        .unwrap_or(false));
}
