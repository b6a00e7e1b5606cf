//! Waiting with a word (issue 21): a BuildRequest that waits says why — its
//! builder's slave not connected (never, or offline since when), or the slave at
//! its `max_builds`, or full of builds that wait for locks — in the JSON API (the builder's `waiting` and each of its
//! `pending_requests`), on the builder page and in `autobot force --wait`, which
//! then follows the build once the slave comes.
//!
//! A real pair made by `create` on free ports; the master runs alone until the
//! test starts the slave. The build that must last waits for a file the test
//! writes (a gate), so nothing waits on a clock.

#[path = "support/mod.rs"]
mod support;

use support::cli::{autobot, create_hello, get_json, http, wait_for};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A pair made by `create -f hello`, whose slave (`max_builds = 2`) runs four
/// more factories: `quick` (one step, `true`), `hold` (takes `[lock:one]`, then
/// waits for the file `gate`), `free` (waits for `gate`, no lock) and `queue`
/// (takes `[lock:one]`, then `true`).
struct Pair {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    htmlport: u16,
}

impl Pair {
    fn create() -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bot");
        let [_, htmlport, _] = create_hello(&dir);
        let ini = dir.join("master/master.ini");
        let repo = dir.join("master/repos/hello");
        let gate = tmp.path().join("gate");
        let text = std::fs::read_to_string(&ini).unwrap().replace(
            "factories = hello\n",
            "factories = hello quick hold free queue\nmax_builds = 2\n",
        );
        let wait = format!(
            "sh -c \"while [ ! -e {} ]; do sleep 0.05; done\"",
            gate.display()
        );
        let text = format!(
            "{text}\n[lock:one]\nscope = master\nmaxCount = 1\n\
             \n[quick]\ntype = shell\ngit = {repo}\nstep.one = true\n\
             \n[hold]\ntype = shell\ngit = {repo}\nlocks = one\nstep.wait = {wait}\n\
             \n[free]\ntype = shell\ngit = {repo}\nstep.wait = {wait}\n\
             \n[queue]\ntype = shell\ngit = {repo}\nlocks = one\nstep.one = true\n",
            repo = repo.display(),
        );
        std::fs::write(&ini, text).unwrap();
        Pair { tmp, dir, htmlport }
    }

    fn gate(&self, open: bool) {
        let gate = self.tmp.path().join("gate");
        if open {
            std::fs::write(gate, "").unwrap();
        } else {
            std::fs::remove_file(gate).unwrap();
        }
    }

    fn force(&self, builder: &str) {
        autobot()
            .args(["force", self.dir.to_str().unwrap(), builder])
            .assert()
            .success();
    }

    fn running(&self, builder: &str) -> usize {
        self.builder(builder)["running"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Wait until the builder's `waiting` is of `kind`; its text.
    fn wait_kind(&self, name: &str, kind: &str) -> String {
        let mut text = String::new();
        wait_for(
            &format!("{name} to wait for {kind}"),
            support::DEADLINE,
            || {
                let b = self.builder(name);
                text = b["waiting"]["text"].as_str().unwrap_or("").to_string();
                b["waiting"]["kind"] == kind
            },
        );
        text
    }

    fn part(&self, which: &str) -> String {
        self.dir.join(which).to_str().unwrap().to_string()
    }

    fn slave_connected(&self) -> bool {
        get_json(self.htmlport, "/api/v1/slaves")
            .and_then(|v| {
                v.as_array()?
                    .iter()
                    .find(|s| s["name"] == "slave")
                    .map(|s| s["connected"] == true)
            })
            .unwrap_or(false)
    }

    fn builder(&self, name: &str) -> serde_json::Value {
        get_json(self.htmlport, &format!("/api/v1/builders/{name}")).unwrap_or_default()
    }

    /// The builder's `waiting` once it has pending requests: (kind, text).
    fn waiting(&self, name: &str) -> (String, String) {
        let mut found = None;
        wait_for(
            &format!("{name} to say why it waits"),
            support::DEADLINE,
            || {
                let b = self.builder(name);
                found = b["waiting"]["kind"]
                    .as_str()
                    .filter(|k| *k != "starting")
                    .map(|k| {
                        (
                            k.to_string(),
                            b["waiting"]["text"].as_str().unwrap_or("").to_string(),
                        )
                    });
                found.is_some()
            },
        );
        found.unwrap()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = autobot()
            .args(["stop", self.dir.to_str().unwrap()])
            .output();
    }
}

/// `force --wait` as a child whose stdout lines arrive on a channel.
struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    fn start(dir: &Path, builder: &str) -> Follower {
        let exe = assert_cmd::cargo::cargo_bin("autobot");
        let mut child = std::process::Command::new(exe)
            .args(["force", dir.to_str().unwrap(), builder, "--wait"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for a line holding every one of `parts`; the line.
    fn line_with(&mut self, parts: &[&str]) -> String {
        let deadline = Instant::now() + support::DEADLINE;
        loop {
            if let Some(l) = self
                .seen
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line with {parts:?} from force --wait: {:#?}", self.seen),
            }
        }
    }

    fn exit_code(mut self) -> Option<i32> {
        let deadline = Instant::now() + support::DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "force --wait did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_waiting_request_says_why_until_its_slave_comes() {
    if !support::need_tools(&[("git", "apt-get install git")]) {
        return;
    }
    let pair = Pair::create();
    autobot()
        .args(["start", &pair.part("master")])
        .assert()
        .success();

    // The slave has never connected: force --wait says so, and so do the API
    // and the builder page.
    let mut follower = Follower::start(&pair.dir, "quick-slave");
    follower.line_with(&["forced a build of quick-slave"]);
    let said = follower.line_with(&["waiting", "no slave of this builder is connected"]);
    assert!(said.contains("slave has never connected"), "{said}");
    let (kind, text) = pair.waiting("quick-slave");
    assert_eq!(kind, "no_slave");
    assert!(text.contains("slave has never connected"), "{text}");
    let b = pair.builder("quick-slave");
    assert_eq!(b["pending"], 1, "{b}");
    let pending = &b["pending_requests"][0];
    assert_eq!(pending["waiting"]["kind"], "no_slave", "{b}");
    assert!(
        pending["reason"].as_str().unwrap().contains("forced"),
        "{b}"
    );
    let (status, page) = http(pair.htmlport, "GET", "/builders/quick-slave", "").unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("waiting: no slave of this builder is connected"),
        "{page}"
    );

    // The slave comes: the build runs and force --wait follows it to its end.
    autobot()
        .args(["start", &pair.part("slave")])
        .assert()
        .success();
    follower.line_with(&["quick-slave build 1: success"]);
    assert_eq!(follower.exit_code(), Some(0));
    let b = pair.builder("quick-slave");
    assert_eq!(b["pending"], 0, "{b}");
    assert!(b["waiting"].is_null(), "{b}");
    assert_eq!(b["pending_requests"], serde_json::json!([]), "{b}");

    // The slave runs its max_builds (2) of builds that wait for the gate: the
    // next request waits for a free slot, naming the builds that hold them.
    pair.force("hold-slave");
    pair.force("free-slave");
    wait_for("hold and free to run", support::DEADLINE, || {
        pair.running("hold-slave") + pair.running("free-slave") == 2
    });
    let mut follower = Follower::start(&pair.dir, "quick-slave");
    let said = follower.line_with(&["waiting", "max_builds"]);
    assert!(said.contains("free-slave #1, hold-slave #1"), "{said}");
    let text = pair.wait_kind("quick-slave", "max_builds");
    assert!(
        text.contains("slave slave runs max_builds = 2: free-slave #1, hold-slave #1"),
        "{text}"
    );
    pair.gate(true);
    follower.line_with(&["quick-slave build 2: success"]);
    assert_eq!(follower.exit_code(), Some(0));
    wait_for("hold and free to end", support::DEADLINE, || {
        pair.running("hold-slave") + pair.running("free-slave") == 0
    });

    // One slot holds lock `one` and waits for the gate, the other waits for the
    // lock: the next request waits for locks.
    pair.gate(false);
    pair.force("hold-slave");
    wait_for("hold to run", support::DEADLINE, || {
        pair.running("hold-slave") == 1
    });
    pair.force("queue-slave");
    let mut follower = Follower::start(&pair.dir, "quick-slave");
    let said = follower.line_with(&["waiting for locks"]);
    assert!(
        said.contains("queue-slave #1 (waiting for lock one)"),
        "{said}"
    );
    let text = pair.wait_kind("quick-slave", "locks");
    assert!(
        text.contains("hold-slave #2, queue-slave #1 (waiting for lock one)"),
        "{text}"
    );
    pair.gate(true);
    follower.line_with(&["quick-slave build 3: success"]);
    assert_eq!(follower.exit_code(), Some(0));

    // The slave goes away: a new request waits for it, "offline since" when.
    autobot()
        .args(["stop", &pair.part("slave")])
        .assert()
        .success();
    wait_for("the slave to be offline", support::DEADLINE, || {
        !pair.slave_connected()
    });
    autobot()
        .args(["force", pair.dir.to_str().unwrap(), "quick-slave"])
        .assert()
        .success();
    let (kind, text) = pair.waiting("quick-slave");
    assert_eq!(kind, "no_slave");
    assert!(
        text.contains("no slave of this builder is connected: slave offline since "),
        "{text}"
    );
}
