//! What an operator meets, on the real binary: shell completions and man pages,
//! exit statuses documented in `--help` and kept by `force` (0, 1, 3, 4, 130),
//! `force --wait` following the master's event stream, `stop --clean` letting the
//! running build finish, `stop-build --who`, `autobot.log` rotated by size and
//! reopened on SIGUSR1, `upgrade-master` migrating a database in place, "did you
//! mean" hints in the documented case, and `reconfig`'s sentence.
//!
//! Builds run on a real pair made by `create` on 127.0.0.1 ports picked free; the
//! build that must last runs a step that waits for a file the test writes (a gate),
//! so no test waits on a clock.

#[path = "support/mod.rs"]
mod support;

use support::cli::{autobot, create_hello, free_ports, get_json, http, wait_for};

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The log keys `create` writes.
const DEFAULT_LOG_KEYS: &str = "logSize = 10000000\nlogCount = 10\n";

/// A pair made by `create -f hello`, plus a `gate` factory whose one step waits
/// until the file `gate` in the test's directory exists.
struct Pair {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    htmlport: u16,
}

impl Pair {
    /// `log_keys`: the `logSize` and `logCount` lines of `[:master:]`.
    fn create(log_keys: &str) -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bot");
        let [_, htmlport, _] = create_hello(&dir);
        let ini = dir.join("master/master.ini");
        let gate = tmp.path().join("gate");
        let repo = dir.join("master/repos/hello");
        let text = read(&ini)
            .replace("factories = hello\n", "factories = hello gate warn\n")
            .replace("logSize = 10000000\nlogCount = 10\n", log_keys);
        let text = format!(
            "{text}\n[gate]\ntype = shell\ngit = {}\nstep.wait = sh -c \"while [ ! -e {} ]; do sleep 0.05; done\"\n\
             \n[warn]\ntype = shell\ngit = {}\nstep.cc = echo \"x.c:1:2: warning: unused variable\"\n\
             step.cc.logParser = compile\nstep.cc.warnOnWarnings = true\n",
            repo.display(),
            gate.display(),
            repo.display()
        );
        std::fs::write(&ini, text).unwrap();
        Pair { tmp, dir, htmlport }
    }

    fn master(&self) -> PathBuf {
        self.dir.join("master")
    }

    fn start(&self) {
        autobot()
            .args(["start", self.dir.to_str().unwrap()])
            .assert()
            .success();
        wait_for("the slave to connect", Duration::from_secs(30), || {
            get_json(self.htmlport, "/api/v1/slaves")
                .and_then(|v| {
                    v.as_array()?
                        .iter()
                        .find(|s| s["name"] == "slave")
                        .map(|s| s["connected"] == true)
                })
                .unwrap_or(false)
        });
    }

    fn open_gate(&self) {
        std::fs::write(self.tmp.path().join("gate"), "").unwrap();
    }

    /// The builds of a builder running now.
    fn running(&self, builder: &str) -> Vec<i64> {
        get_json(self.htmlport, "/api/v1/builders")
            .and_then(|v| {
                let b = v.as_array()?.iter().find(|b| b["name"] == builder)?.clone();
                Some(
                    b["running"]
                        .as_array()?
                        .iter()
                        .filter_map(|r| r["number"].as_i64())
                        .collect(),
                )
            })
            .unwrap_or_default()
    }

    fn force(&self, builder: &str) {
        autobot()
            .args(["force", self.dir.to_str().unwrap(), builder])
            .assert()
            .success();
    }

    fn pid(&self) -> i32 {
        read(&self.master().join("autobot.pid"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = autobot()
            .args(["stop", self.dir.to_str().unwrap()])
            .output();
    }
}

/// Whether the demo's build tools are here (the hello sample needs them).
#[track_caller]
fn build_tools() -> bool {
    support::need_tools(&[
        ("git", "apt-get install git"),
        ("cc", "apt-get install gcc"),
        ("make", "apt-get install make"),
    ])
}

#[test]
fn completions_and_man_pages_come_from_the_command_line() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef autobot"),
        ("fish", "complete -c autobot"),
    ] {
        let out = autobot()
            .args(["completions", shell])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(text.contains("upgrade-master"), "{shell}");
    }
    autobot().args(["completions", "tcsh"]).assert().code(2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    autobot()
        .args(["manpages", dir.to_str().unwrap()])
        .assert()
        .success();
    let top = read(&dir.join("autobot.1"));
    assert!(
        top.starts_with(".ie") || top.contains(".TH autobot"),
        "{top}"
    );
    assert!(top.contains("Exit status"), "{top}");
    let force = read(&dir.join("autobot-force.1"));
    assert!(
        force.contains(".TH autobot-force") && force.contains("strict"),
        "{force}"
    );
    assert!(dir.join("autobot-stop.1").is_file());
    assert!(dir.join("autobot-upgrade-master.1").is_file());
}

#[test]
fn help_documents_the_exit_statuses() {
    let out = autobot()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Exit status:",
        "  3    the master could not be reached",
        "  4    no such builder",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    let out = autobot()
        .args(["force", "--help"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--strict",
        "Exit status:",
        "130",
        "event stream",
        "Logging in",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
}

/// `force` and `stop-build`'s exit statuses: 0 for a green build followed to its
/// end over the event stream, 4 for no such builder, 130 at Ctrl-C (the build goes
/// on and `stop-build --who` stops it), 3 once the master is down.
#[test]
fn force_wait_follows_the_build_and_exits_as_documented() {
    if !build_tools() {
        return;
    }
    let pair = Pair::create(DEFAULT_LOG_KEYS);
    pair.start();
    let dir = pair.dir.to_str().unwrap().to_string();

    let out = autobot()
        .args(["force", &dir, "hello-slave", "--wait"])
        .timeout(Duration::from_secs(300))
        .assert()
        .code(0)
        .get_output()
        .clone();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("forced a build of hello-slave"), "{text}");
    assert!(
        text.contains("  step ") && text.contains(": success"),
        "{text}"
    );
    assert!(text.contains("hello-slave build 1: success"), "{text}");
    // --strict changes nothing for a build without warnings; a build with
    // warnings passes without it and fails with it.
    autobot()
        .args(["force", &dir, "hello-slave", "--wait", "--strict"])
        .timeout(Duration::from_secs(300))
        .assert()
        .code(0);
    autobot()
        .args(["force", &dir, "warn-slave", "--wait"])
        .timeout(Duration::from_secs(300))
        .assert()
        .code(0)
        .stdout(predicates::str::contains("warn-slave build 1: warnings"));
    autobot()
        .args(["force", &dir, "warn-slave", "--wait", "--strict"])
        .timeout(Duration::from_secs(300))
        .assert()
        .code(1)
        .stdout(predicates::str::contains(
            "--strict: a build with warnings counts as failed",
        ));

    autobot()
        .args(["force", &dir, "no-such-builder", "--wait"])
        .assert()
        .code(4)
        .stderr(predicates::str::contains("no-such-builder"));

    // Ctrl-C while waiting: 130, and the build goes on.
    let exe = assert_cmd::cargo::cargo_bin("autobot");
    let mut child = std::process::Command::new(exe)
        .args(["force", &dir, "gate-slave", "--wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("forced a build of gate-slave"), "{line}");
    wait_for("the gate build to run", Duration::from_secs(60), || {
        !pair.running("gate-slave").is_empty()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("stopped waiting") && stderr.contains("goes on on the master"),
        "{stderr}"
    );
    assert!(stderr.contains("autobot stop-build"), "{stderr}");
    assert_eq!(pair.running("gate-slave"), vec![1]);

    autobot()
        .args(["stop-build", &dir, "gate-slave", "1", "--who", "alice"])
        .assert()
        .success();
    wait_for("the gate build to stop", Duration::from_secs(60), || {
        pair.running("gate-slave").is_empty()
    });
    let build = get_json(pair.htmlport, "/api/v1/builders/gate-slave/builds/1").unwrap();
    assert!(build.to_string().contains("alice"), "{build}");
    autobot()
        .args(["stop-build", &dir, "gate-slave", "99"])
        .assert()
        .code(4);

    autobot().args(["stop", &dir]).assert().success();
    autobot()
        .args(["force", &dir, "hello-slave", "--wait"])
        .assert()
        .code(3)
        .stderr(predicates::str::contains("is the master running?"));
}

/// `stop --clean`: the master takes no new builds, lets the running one finish,
/// then exits; the build is recorded as a success, not interrupted.
#[test]
fn stop_clean_waits_for_the_running_build() {
    if !build_tools() {
        return;
    }
    let pair = Pair::create(DEFAULT_LOG_KEYS);
    pair.start();
    pair.force("gate-slave");
    wait_for("the gate build to run", Duration::from_secs(60), || {
        !pair.running("gate-slave").is_empty()
    });
    let exe = assert_cmd::cargo::cargo_bin("autobot");
    let mut stop = std::process::Command::new(exe)
        .args(["stop", "--clean", pair.dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(stop.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.contains("waiting for 1 running build to finish"),
        "{line}"
    );
    // Draining: a new force is refused, the build still runs.
    let log = pair.master().join("autobot.log");
    wait_for(
        "the master to start draining",
        Duration::from_secs(30),
        || read(&log).contains("clean stop: waiting for 1 running builds"),
    );
    let (status, body) = http(
        pair.htmlport,
        "POST",
        "/api/v1/builders/hello-slave/force",
        "{}",
    )
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(stop.try_wait().unwrap().is_none());
    assert_eq!(pair.running("gate-slave"), vec![1]);

    pair.open_gate();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(stop.wait().unwrap().success(), "{rest}");
    assert!(
        rest.contains("master in") && rest.contains("stopped"),
        "{rest}"
    );
    assert!(!pair.master().join("autobot.pid").exists());
    let log = read(&log);
    assert!(
        log.contains("gate-slave build 1 finished: success"),
        "{log}"
    );
}

/// `logSize`/`logCount` rotate the master's log; SIGUSR1 reopens a log that was
/// moved away (logrotate's way).
#[test]
fn the_log_is_rotated_by_size_and_reopened_on_sigusr1() {
    let pair = Pair::create("logSize = 3000\nlogCount = 2\n");
    autobot()
        .args(["start", pair.master().to_str().unwrap()])
        .assert()
        .success();
    let m = pair.master();
    let log = m.join("autobot.log");
    // Each reconfig logs a few lines: enough of them fill three files.
    wait_for("two rotations", Duration::from_secs(120), || {
        autobot()
            .args(["reconfig", m.to_str().unwrap()])
            .assert()
            .success();
        m.join("autobot.log.2").exists()
    });
    for name in ["autobot.log", "autobot.log.1", "autobot.log.2"] {
        let len = std::fs::metadata(m.join(name)).unwrap().len();
        assert!(len <= 3000, "{name}: {len} bytes");
    }
    assert!(!m.join("autobot.log.3").exists());
    assert!(read(&m.join("autobot.log.1")).contains("reconfig: applied"));

    std::fs::rename(&log, m.join("moved.log")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pair.pid()),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    wait_for("a new autobot.log", Duration::from_secs(30), || {
        read(&log).contains("SIGUSR1: reopened autobot.log")
    });
    autobot()
        .args(["reconfig", m.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicates::str::contains("re-read"));
    assert!(read(&log).contains("reconfig: applied"));
}

/// `upgrade-master`: refused while the master runs; migrates an old database in
/// place and says from which version; refuses a newer one; writes the master's
/// unit when missing; reports what master.ini says in an old way.
#[test]
fn upgrade_master_migrates_in_place_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    let [slaveport, htmlport, publicport] = free_ports();
    autobot()
        .args([
            "create-master",
            m.to_str().unwrap(),
            "-f",
            "hello",
            "--passwd",
            "passwd",
            "--slaveport",
            &slaveport.to_string(),
            "--htmlport",
            &htmlport.to_string(),
            "--publichtmlport",
            &publicport.to_string(),
        ])
        .assert()
        .success();
    let ms = m.to_str().unwrap();
    autobot()
        .args(["upgrade-master", ms])
        .assert()
        .success()
        .stdout(predicates::str::contains("not there yet"));

    // A database at schema version 1, as the first autobot left it.
    let db = m.join("state.sqlite");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(autobot::db::migrations::MIGRATIONS[0])
            .unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
    }
    std::fs::remove_file(m.join("autobot-master.service")).unwrap();
    let known = autobot::db::migrations::MIGRATIONS.len();
    let out = autobot()
        .args(["upgrade-master", ms])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("migrated from schema version 1 to {known}")),
        "{text}"
    );
    assert!(text.contains("autobot-master.service: written"), "{text}");
    assert!(m.join("autobot-master.service").is_file());
    // --passwd passwd: a password printed in the documentation, with its line.
    assert!(
        text.contains("master.ini:") && text.contains("printed in the documentation"),
        "{text}"
    );
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, known as i64);
    autobot()
        .args(["upgrade-master", ms])
        .assert()
        .success()
        .stdout(predicates::str::contains("already current"));

    // Running: refused.
    autobot().args(["start", ms]).assert().success();
    autobot()
        .args(["upgrade-master", ms])
        .assert()
        .failure()
        .stderr(predicates::str::contains("is running"));
    autobot().args(["stop", ms]).assert().success();

    // From a newer autobot: refused, untouched.
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    autobot()
        .args(["upgrade-master", ms])
        .assert()
        .failure()
        .stderr(predicates::str::contains("made by a newer autobot"));
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 999);
}

/// "Did you mean" names a key as the documentation spells it, for [:master:]
/// keys and for step options.
#[test]
fn did_you_mean_keeps_the_documented_case() {
    let tmp = tempfile::tempdir().unwrap();
    let ini = tmp.path().join("master.ini");
    std::fs::write(&ini, "[:master:]\ntreestabel = 5\n").unwrap();
    autobot()
        .args(["checkconfig", ini.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicates::str::contains("did you mean `treeStable`?"));
    std::fs::write(
        &ini,
        "[:master:]\n[f]\ntype = shell\ngit = /nowhere\nstep.a = true\nstep.a.haltOnFailur = true\n",
    )
    .unwrap();
    autobot()
        .args(["checkconfig", ini.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicates::str::contains("did you mean `haltOnFailure`?"));
}
