//! Backups and upgrades on the real binary: `autobot backup` of a master that is
//! building (a build held open by a gate file), `autobot restore` into a fresh
//! directory (and its refusal over a running master), the restored master started
//! with the same builds and step logs in its JSON API; and `autobot start` of a
//! database from a newer autobot refused with both schema versions named.

#[path = "support/mod.rs"]
mod support;

use support::cli::{autobot, free_ports, get_json, http, wait_for};

use std::path::{Path, PathBuf};
use std::time::Duration;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn stdout_of(a: assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn stderr_of(a: assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// Stops every daemon in a directory when the test ends, however it ends.
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = autobot().args(["stop", self.0.to_str().unwrap()]).output();
    }
}

fn slave_connected(port: u16) -> bool {
    get_json(port, "/api/v1/slaves")
        .and_then(|v| v.as_array()?.first().map(|s| s["connected"] == true))
        .unwrap_or(false)
}

fn build(port: u16, builder: &str, n: i64) -> Option<serde_json::Value> {
    get_json(port, &format!("/api/v1/builders/{builder}/builds/{n}")).filter(|b| b["number"] == n)
}

#[test]
fn a_running_master_is_backed_up_and_restored() {
    if !support::need_tools(&[("git", "apt-get install git")]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bot");
    let [slaveport, htmlport, publicport] = free_ports();
    autobot()
        .args(["create", dir.to_str().unwrap(), "-f", "hello"])
        .args(["--slaveport", &slaveport.to_string()])
        .args(["--htmlport", &htmlport.to_string()])
        .args(["--publichtmlport", &publicport.to_string()])
        .assert()
        .success();
    let ini = dir.join("master/master.ini");
    let repo = dir.join("master/repos/hello");
    let gate = tmp.path().join("gate");
    let text = read(&ini).replace("factories = hello\n", "factories = say gate\n");
    std::fs::write(
        &ini,
        format!(
            "{text}\n[say]\ntype = shell\ngit = {}\nstep.say = echo backed-up-log-line\n\
             \n[gate]\ntype = shell\ngit = {}\nstep.wait = sh -c \"while [ ! -e {} ]; do sleep 0.05; done\"\n",
            repo.display(),
            repo.display(),
            gate.display()
        ),
    )
    .unwrap();
    autobot()
        .args(["start", dir.to_str().unwrap()])
        .assert()
        .success();
    let stop = Stop(dir.clone());
    wait_for("the slave to connect", Duration::from_secs(30), || {
        slave_connected(htmlport)
    });
    autobot()
        .args(["force", "--wait", dir.to_str().unwrap(), "say-slave"])
        .timeout(Duration::from_secs(120))
        .assert()
        .success();
    autobot()
        .args(["force", dir.to_str().unwrap(), "gate-slave"])
        .assert()
        .success();
    wait_for("the gate build to run", Duration::from_secs(60), || {
        build(htmlport, "gate-slave", 1).is_some_and(|b| b["finished_at"].is_null())
    });
    let before = build(htmlport, "say-slave", 1).unwrap();
    assert_eq!(before["result"], "success", "{before}");
    let log_path = "/api/v1/builders/say-slave/builds/1/steps/say/logs/stdio";
    let (status, log) = http(htmlport, "GET", log_path, "").unwrap();
    assert_eq!(status, 200);
    assert!(log.contains("backed-up-log-line"), "{log}");

    // Back up while the gate build runs.
    let file = tmp.path().join("backup.tar");
    let out = stdout_of(
        autobot()
            .args([
                "backup",
                dir.join("master").to_str().unwrap(),
                file.to_str().unwrap(),
            ])
            .assert()
            .success(),
    );
    assert!(out.contains("backed up the master in"), "{out}");
    assert!(out.contains("schema version"), "{out}");
    assert!(file.is_file());

    // Restoring over the running master is refused, and changes nothing.
    let err = stderr_of(
        autobot()
            .args([
                "restore",
                file.to_str().unwrap(),
                dir.join("master").to_str().unwrap(),
            ])
            .assert()
            .failure(),
    );
    assert!(err.contains("is running"), "{err}");
    // So is restoring over the pair's directory (its master is DIR/master).
    let err = stderr_of(
        autobot()
            .args(["restore", file.to_str().unwrap(), dir.to_str().unwrap()])
            .assert()
            .failure(),
    );
    assert!(err.contains("is running"), "{err}");
    assert!(!dir.join("state.sqlite").exists());
    assert!(slave_connected(htmlport));

    std::fs::write(&gate, "").unwrap();
    wait_for("the gate build to finish", Duration::from_secs(60), || {
        build(htmlport, "gate-slave", 1).is_some_and(|b| !b["finished_at"].is_null())
    });
    drop(stop);

    // Restore into a fresh directory and start that master alone (same ports).
    let fresh = tmp.path().join("restored");
    let out = stdout_of(
        autobot()
            .args(["restore", file.to_str().unwrap(), fresh.to_str().unwrap()])
            .assert()
            .success(),
    );
    assert!(
        out.contains("restored") && out.contains("state.sqlite"),
        "{out}"
    );
    assert!(out.contains("master.ini"), "{out}");
    autobot()
        .args(["start", fresh.to_str().unwrap()])
        .assert()
        .success();
    let _stop = Stop(fresh.clone());
    wait_for("the restored master's API", Duration::from_secs(30), || {
        get_json(htmlport, "/api/v1/builders").is_some()
    });
    let after = build(htmlport, "say-slave", 1).expect("the finished build is restored");
    for key in ["number", "result", "started_at", "finished_at", "steps"] {
        assert_eq!(after[key], before[key], "{key}: {after} vs {before}");
    }
    let (status, log) = http(htmlport, "GET", log_path, "").unwrap();
    assert_eq!(status, 200);
    assert!(log.contains("backed-up-log-line"), "{log}");
    // Its lines' arrival times came along (the `.ts` file beside the log).
    let page_path = "/builders/say-slave/builds/1/steps/say/logs/stdio";
    let (status, page) = http(htmlport, "GET", page_path, "").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains(" data-t=\""), "{page}");
    // The build that ran during the backup is there too (the restored master
    // found it unfinished and closed it, as after a crash).
    wait_for(
        "the interrupted build to be closed",
        Duration::from_secs(30),
        || build(htmlport, "gate-slave", 1).is_some_and(|b| !b["finished_at"].is_null()),
    );
}

#[test]
fn a_database_from_a_newer_autobot_is_refused() {
    if !support::need_tools(&[("git", "apt-get install git")]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let [slaveport, htmlport, publicport] = free_ports();
    autobot()
        .args(["create-master", dir.to_str().unwrap(), "-f", "hello"])
        .args(["--slaveport", &slaveport.to_string()])
        .args(["--htmlport", &format!("127.0.0.1:{htmlport}")])
        .args(["--publichtmlport", &publicport.to_string()])
        .assert()
        .success();
    // An older database is migrated on start: make the current one, then say it
    // was written by an autobot that knows one schema version more.
    autobot()
        .args(["start", dir.to_str().unwrap()])
        .assert()
        .success();
    let stop = Stop(dir.clone());
    wait_for("the master's API", Duration::from_secs(30), || {
        get_json(htmlport, "/api/v1/builders").is_some()
    });
    drop(stop);
    let state = dir.join("state.sqlite");
    let known = autobot::db::backup::known_schema_version();
    autobot::db::backup::set_schema_version(&state, known + 1).unwrap();
    let a = autobot()
        .args(["start", dir.to_str().unwrap()])
        .assert()
        .failure();
    let o = a.get_output();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let _stop = Stop(dir.clone());
    assert!(
        out.contains(&format!(
            "has schema version {}, written by a newer autobot; this autobot ({}) knows schema versions up to {known}: run the newer autobot",
            known + 1,
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    assert!(
        get_json(htmlport, "/api/v1/builders").is_none(),
        "the master must not be running"
    );
}
