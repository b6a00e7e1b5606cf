//! A slave with several masters fails over by itself, end to end on the real
//! binary: two independent masters (SQLite each, the same `[slave:fo]` name and
//! password in both `master.ini`), a slave made by `create-slave DIR
//! A:PORT,B:PORT fo PASSWORD`. It connects to the first and builds there; the
//! first master is killed with SIGKILL and the slave is on the second within
//! seconds, where a forced build succeeds too. A slave started while the first
//! master is down goes straight on to the second.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::cli::{autobot, free_ports, get_json, wait_for};

const SLAVE: &str = "fo";
const PASSWORD: &str = "fo-pw-Kq83zT";
const BUILDER: &str = "hello-fo";

/// How long the slave may take to reach the surviving master.
const FAILOVER: Duration = Duration::from_secs(10);

fn build_tools() -> bool {
    support::need_tools(&[
        ("git", "apt-get install git"),
        ("cc", "apt-get install gcc"),
        ("make", "apt-get install make"),
    ])
}

/// Stops a daemon directory when the test ends, even failing.
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = autobot().args(["stop", self.0.to_str().unwrap()]).output();
    }
}

/// A master for the `hello` sample whose only slave is `fo`; its slaveport
/// and htmlport.
struct Master {
    dir: PathBuf,
    slaveport: u16,
    htmlport: u16,
}

impl Master {
    fn create(dir: PathBuf) -> Master {
        let [slaveport, htmlport, publicport] = free_ports();
        autobot()
            .args([
                "create-master",
                dir.to_str().unwrap(),
                "-f",
                "hello",
                "--slave",
                SLAVE,
                "--passwd",
                PASSWORD,
                "--slaveport",
                &format!("127.0.0.1:{slaveport}"),
                "--htmlport",
                &format!("127.0.0.1:{htmlport}"),
                "--publichtmlport",
                &format!("127.0.0.1:{publicport}"),
            ])
            .assert()
            .success();
        Master {
            dir,
            slaveport,
            htmlport,
        }
    }

    fn start(&self) -> Stop {
        autobot()
            .args(["start", self.dir.to_str().unwrap()])
            .assert()
            .success();
        Stop(self.dir.clone())
    }

    fn slave_connected(&self) -> bool {
        get_json(self.htmlport, "/api/v1/slaves")
            .and_then(|v| {
                v.as_array()?
                    .iter()
                    .find(|s| s["name"] == SLAVE)
                    .map(|s| s["connected"] == true)
            })
            .unwrap_or(false)
    }

    /// `autobot force DIR hello-fo --wait`: the build must succeed.
    fn force_wait(&self) {
        let a = autobot()
            .args(["force", self.dir.to_str().unwrap(), BUILDER, "--wait"])
            .timeout(Duration::from_secs(120))
            .assert();
        let o = a.get_output();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        a.success();
        assert!(out.contains("success"), "{out}");
    }

    /// SIGKILL, as a host that dies: no goodbye to the slave.
    fn kill9(&self) {
        let pid = match autobot::daemon::pid_state(&self.dir).unwrap() {
            autobot::daemon::PidState::Running(pid) => pid,
            other => panic!("the master is not running: {other:?}"),
        };
        autobot::daemon::signal(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        assert!(
            autobot::daemon::wait_exit(&self.dir, Duration::from_secs(10)),
            "the master did not die"
        );
    }
}

/// `create-slave DIR 127.0.0.1:A,127.0.0.1:B fo PASSWORD`.
fn create_slave(dir: &Path, masters: &[&Master]) {
    let list: Vec<String> = masters
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.slaveport))
        .collect();
    let a = autobot()
        .args([
            "create-slave",
            dir.to_str().unwrap(),
            &list.join(","),
            SLAVE,
            PASSWORD,
        ])
        .assert()
        .success();
    let out = String::from_utf8_lossy(&a.get_output().stdout).to_string();
    assert!(out.contains(&list.join(", ")), "{out}");
    let ini = std::fs::read_to_string(dir.join("slave.ini")).unwrap();
    assert!(
        ini.contains(&format!("\nmaster = {}\n", list.join(", "))),
        "{ini}"
    );
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("autobot.log")).unwrap_or_default()
}

#[test]
fn the_slave_moves_to_the_second_master_when_the_first_dies() {
    if !build_tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = Master::create(tmp.path().join("a"));
    let b = Master::create(tmp.path().join("b"));
    let slave = tmp.path().join("slave");
    create_slave(&slave, &[&a, &b]);
    let _stop_a = a.start();
    let _stop_b = b.start();
    autobot()
        .args(["start", slave.to_str().unwrap()])
        .assert()
        .success();
    let _stop_slave = Stop(slave.clone());

    wait_for("the slave on the first master", FAILOVER, || {
        a.slave_connected()
    });
    assert!(!b.slave_connected(), "one connection, to the first master");
    let url_a = format!("ws://127.0.0.1:{}/", a.slaveport);
    let url_b = format!("ws://127.0.0.1:{}/", b.slaveport);
    assert!(
        log(&slave).contains(&format!("connected to {url_a} (master 1 of 2)")),
        "{}",
        log(&slave)
    );
    a.force_wait();

    a.kill9();
    wait_for("the slave on the second master", FAILOVER, || {
        b.slave_connected()
    });
    let text = log(&slave);
    assert!(
        text.contains(&format!("connection to {url_a} lost")),
        "{text}"
    );
    assert!(
        text.contains(&format!("connected to {url_b} (master 2 of 2)")),
        "{text}"
    );
    b.force_wait();
}

#[test]
fn a_slave_started_while_the_first_master_is_down_uses_the_second() {
    if !build_tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = Master::create(tmp.path().join("a"));
    let b = Master::create(tmp.path().join("b"));
    let slave = tmp.path().join("slave");
    create_slave(&slave, &[&a, &b]);
    // Only the second master runs; nothing listens on the first's port.
    let _stop_b = b.start();
    autobot()
        .args(["start", slave.to_str().unwrap()])
        .assert()
        .success();
    let _stop_slave = Stop(slave.clone());

    wait_for("the slave on the second master", FAILOVER, || {
        b.slave_connected()
    });
    let text = log(&slave);
    let url_a = format!("ws://127.0.0.1:{}/", a.slaveport);
    let url_b = format!("ws://127.0.0.1:{}/", b.slaveport);
    assert!(
        text.contains(&format!("cannot connect to {url_a}: connection refused")),
        "{text}"
    );
    assert!(
        text.contains(&format!("connected to {url_b} (master 2 of 2)")),
        "{text}"
    );
    b.force_wait();
}

#[test]
fn create_slave_names_a_bad_master_in_the_list_and_takes_hosts_with_ini() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("s");
    for (list, want) in [
        (
            "h1:9010,h2:+1",
            "port \"+1\" in \"h2:+1\" is not a number from 1 to 65535 (digits only, no sign) (master 2 of 2)",
        ),
        ("h1:9010,h2", "\"h2\" has no port"),
        ("h1:9010,,h2:1", "empty entry (master 2 of 3)"),
        ("h1:9010 h2:9010", "has blanks in its host"),
    ] {
        let a = autobot()
            .args(["create-slave", target.to_str().unwrap(), list, SLAVE, PASSWORD])
            .assert()
            .failure();
        let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
        assert!(err.contains(want), "{list}: {err}");
        assert!(!target.exists(), "nothing is created");
    }
    // --ini: the hosts of --master, each on the master.ini's slaveport.
    let m = Master::create(tmp.path().join("m"));
    autobot()
        .args([
            "create-slave",
            target.to_str().unwrap(),
            "--ini",
            m.dir.join("master.ini").to_str().unwrap(),
            "--name",
            SLAVE,
            "--master",
            "m1.example.org, m2.example.org",
        ])
        .assert()
        .success();
    let ini = autobot::config::SlaveIni::load(&target).unwrap();
    let got: Vec<String> = ini.masters().iter().map(|a| a.to_string()).collect();
    assert_eq!(
        got,
        [
            format!("m1.example.org:{}", m.slaveport),
            format!("m2.example.org:{}", m.slaveport)
        ]
    );
    assert_eq!(ini.password, PASSWORD);
}
