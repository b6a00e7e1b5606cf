//! Integration tests of the daemon verbs (`start`, `stop`, `restart`, `reconfig`,
//! `run`) on the real binary: a master and a slave made by `create`, real ports on
//! 127.0.0.1, the slave's connection observed through `GET /api/v1/slaves`. Also
//! what a running master refuses on `reconfig` (a file that would drop every
//! builder, signed or empty ports, bytes that are not UTF-8) and that it takes
//! Changes only with the credentials `create` wrote into its master.ini.

#[path = "support/mod.rs"]
mod support;

use support::cli::{autobot, wait_for};

use predicates::prelude::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `N` ports free at the moment, all different (each listener is held until all
/// are picked, so the kernel cannot hand out one twice).
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
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
        let [slaveport, htmlport, publicport] = free_ports();
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
        support::use_test_db(dir.join("master"));
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
        predicate::str::contains("master started")
            .and(predicate::str::contains("slave started"))
            .and(predicate::str::contains(format!(
                "The waterfall: http://localhost:{}/",
                bot.htmlport
            ))),
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

fn builder_names(htmlport: u16) -> Vec<String> {
    get_json(htmlport, "/api/v1/builders")
        .and_then(|v| {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|b| b["name"].as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// An empty, comment-only or truncated-to-nothing master.ini would drop every
/// builder of a running master: `reconfig` refuses it, says why naming the file,
/// exits non-zero, and the running configuration stays.
#[test]
fn reconfig_refuses_a_file_that_would_drop_every_builder() {
    let bot = Bot::create();
    bot.verb("start", "master").success();
    assert_eq!(builder_names(bot.htmlport), ["hello-slave"]);
    let ini_path = bot.dir.join("master/master.ini");
    let original = std::fs::read_to_string(&ini_path).unwrap();
    for text in [
        "",
        "; everything commented out\n# [slave:slave]\n;factories = hello\n\n",
        "[:master:]\nslaveport = 9010\n",
    ] {
        support::write_master_ini(bot.dir.join("master"), text);
        let out = bot
            .verb("reconfig", "master")
            .failure()
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        for want in [
            "reconfig rejected".to_string(),
            format!(
                "{}: defines no slaves and no factories, but the running configuration has 1 slave(s) and 1 factory section(s)",
                std::fs::canonicalize(bot.dir.join("master")).unwrap().join("master.ini").display()
            ),
            "the master rejected".to_string(),
        ] {
            assert!(stderr.contains(&want), "{text:?}: expected {want:?} in:\n{stderr}");
        }
        assert_eq!(builder_names(bot.htmlport), ["hello-slave"], "{text:?}");
    }
    // Signed or empty ports and bytes that are not UTF-8 are rejected with file:line.
    for (text, want) in [
        (
            original.replace(
                &format!("slaveport = {}", bot.slaveport),
                "slaveport = +9010",
            ),
            "slaveport: expected a TCP port number from 1 to 65535 (digits only, no sign), got \"+9010\"",
        ),
        (
            original.replace(&format!("slaveport = {}", bot.slaveport), "slaveport ="),
            "slaveport: no value",
        ),
        (format!("{original}; caf\u{e9}\n"), "ok"),
    ] {
        let mut bytes = text.into_bytes();
        if want == "ok" {
            // Latin-1 é instead of UTF-8's two bytes.
            let n = bytes.len();
            bytes.splice(n - 3..n - 1, [0xE9]);
        }
        std::fs::write(&ini_path, &bytes).unwrap();
        let out = bot.verb("reconfig", "master").failure().get_output().clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = if want == "ok" {
            "byte 0xE9 at column 6 is not UTF-8"
        } else {
            want
        };
        assert!(stderr.contains("master.ini:") && stderr.contains(want), "expected {want:?} in:\n{stderr}");
        assert_eq!(builder_names(bot.htmlport), ["hello-slave"]);
    }
    // The real file is applied again.
    std::fs::write(&ini_path, &original).unwrap();
    // One sentence, not a log line.
    let out = bot
        .verb("reconfig", "master")
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("The master in ") && l.contains(" re-read "))
            && stdout.contains("1 builders.")
            && !stdout.contains(" INFO "),
        "{stdout}"
    );
}

/// POST /api/v1/changes with HTTP Basic credentials; the status code.
fn post_change(htmlport: u16, user: &str, pass: &str) -> u16 {
    use base64::Engine;
    let body = r#"{"who": "Ann", "files": ["a.c"], "comments": "c"}"#;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut s = TcpStream::connect(("127.0.0.1", htmlport)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /api/v1/changes HTTP/1.0\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn ini_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
        .unwrap()
}

/// A master made by `create` takes Changes only with the random credentials in its
/// master.ini, not the manual's change/changepw; without changeuser/changepassword
/// it takes none, and its log says how to enable them.
#[test]
fn changes_need_the_masters_own_credentials() {
    let bot = Bot::create();
    bot.verb("start", "master").success();
    let ini_path = bot.dir.join("master/master.ini");
    let original = std::fs::read_to_string(&ini_path).unwrap();
    let (user, pass) = (
        ini_value(&original, "changeuser"),
        ini_value(&original, "changepassword"),
    );
    let master = format!("127.0.0.1:{}", bot.slaveport);
    let sendchange = |auth: Option<&str>| {
        let mut c = autobot();
        c.current_dir(&bot.dir).env("HOME", &bot.dir).args([
            "sendchange",
            "--master",
            &master,
            "--username",
            "Ann",
            "f.c",
        ]);
        if let Some(a) = auth {
            c.args(["--auth", a]);
        }
        c.assert()
    };
    sendchange(Some(&format!("{user}:{pass}")))
        .success()
        .stdout(predicate::str::contains("change 1 sent"));
    let out = sendchange(Some("change:changepw"))
        .failure()
        .stderr(predicate::str::contains("refused the change credentials"))
        .get_output()
        .clone();
    // The hint how to fix it comes once.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("--auth USER:PASS").count(), 1, "{stderr}");
    sendchange(None)
        .failure()
        .stderr(predicate::str::contains("give --auth USER:PASS"));
    assert_eq!(post_change(bot.htmlport, &user, &pass), 201);
    assert_eq!(post_change(bot.htmlport, "change", "changepw"), 401);

    // No credentials in master.ini: nothing is accepted, and the log says why.
    let without: String = original
        .lines()
        .filter(|l| !l.starts_with("changeuser") && !l.starts_with("changepassword"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&ini_path, without).unwrap();
    bot.verb("reconfig", "master").success();
    let log = log_of(&bot.dir.join("master"));
    assert!(
        log.contains("master.ini: sendchange and POST /api/v1/changes are refused: the master's master.ini sets no changeuser and changepassword in [:master:]; to accept Changes add both"),
        "{log}"
    );
    sendchange(Some(&format!("{user}:{pass}")))
        .failure()
        .stderr(predicate::str::contains(
            "sets no changeuser and changepassword",
        ));
    assert_eq!(post_change(bot.htmlport, &user, &pass), 401);
    assert_eq!(post_change(bot.htmlport, "", ""), 401);
    // Two Changes were stored, both with the right credentials.
    let changes = get_json(bot.htmlport, "/api/v1/changes").unwrap();
    assert_eq!(changes.as_array().unwrap().len(), 2, "{changes}");
}
