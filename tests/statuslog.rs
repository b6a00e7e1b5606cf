//! `autobot statuslog`, the real binary, against a running master: one line per
//! event as it happens (a slave connected, a Change arrived, a forced build's
//! start, its step and its end, the slave lost), the same as JSON lines with
//! `--json`, the master taken from `masterstatus` in `.autobot/options`, and a
//! clear error when no master is given or none answers.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use autobot::db::changes::NewChange;
use autobot::engine::ForceRequest;
use engine_common::{autobot_bin, EngineMaster, DEADLINE};

/// A running `autobot statuslog`; its stdout lines come through a channel.
struct Statuslog {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Statuslog {
    /// Start it and wait until it follows the stream (it says so on stderr).
    fn start(args: &[&str], cwd: &std::path::Path, home: &std::path::Path) -> Statuslog {
        let mut child = Command::new(autobot_bin())
            .arg("statuslog")
            .args(args)
            .current_dir(cwd)
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let (etx, erx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = etx.send(l);
            }
        });
        let first = erx
            .recv_timeout(DEADLINE)
            .expect("statuslog says it follows");
        assert!(first.contains("following the events of"), "{first}");
        Statuslog { child, lines }
    }

    /// Lines until one contains `end` (included).
    fn until(&self, end: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self
                .lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("no line with {end:?}; got {out:#?}"));
            let done = l.contains(end);
            out.push(l);
            if done {
                return out;
            }
        }
    }
}

impl Drop for Statuslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text after the `YYYY-MM-DD HH:MM:SS ` time stamp.
fn text(l: &str) -> &str {
    l.splitn(3, ' ').nth(2).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_a_forced_build_as_it_happens() {
    let m = EngineMaster::start(
        &engine_common::master_ini("[pass]\ntype = shell\nstep.ok = true\n", ""),
        Duration::from_secs(600),
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let work = home.path().join("project");
    std::fs::create_dir_all(work.join(".autobot")).unwrap();
    std::fs::write(
        work.join(".autobot/options"),
        format!("masterstatus = '127.0.0.1:{}'\n", m.master.htmlport()),
    )
    .unwrap();
    let master = format!("127.0.0.1:{}", m.master.htmlport());
    let text_log = Statuslog::start(&["--master", &master], home.path(), home.path());
    let json_log = Statuslog::start(&["--json"], &work, home.path());

    // Each step waits for its lines: events of different kinds (slaves, Changes,
    // builds) come from different sources, so only their order within a kind is
    // fixed when they happen at the same moment.
    let slave = m.slave().await;
    let mut lines = text_log.until("slave s1 connected");
    let mut json = json_log.until("slave_connected");
    m.master
        .changes()
        .add(vec![NewChange {
            who: "Ann <ann@example.org>".into(),
            comments: "Fix the frobnicator\n\nLonger text.".into(),
            revision: Some("abc123".into()),
            branch: Some("main".into()),
            when: 1_700_000_000,
            ..NewChange::default()
        }])
        .await
        .unwrap();
    lines.extend(text_log.until("Change #1"));
    json.extend(json_log.until("\"change\""));
    let id = m
        .force(
            "pass-s1",
            ForceRequest {
                reason: "statuslog test".into(),
                ..ForceRequest::default()
            },
        )
        .await;
    m.wait_request(id).await;
    lines.extend(text_log.until("finished: success [build successful]"));
    json.extend(json_log.until("build_finished"));
    slave.stop().await;
    lines.extend(text_log.until("slave s1 lost"));
    json.extend(json_log.until("slave_lost"));

    let texts: Vec<&str> = lines.iter().map(|l| text(l)).collect();
    assert_eq!(
        texts,
        [
            "slave s1 connected",
            "Change #1 by Ann <ann@example.org> on main at abc123: Fix the frobnicator",
            "build #1 of pass-s1 started on slave s1",
            "step ok of build #1 of pass-s1 finished: success [ok]",
            "build #1 of pass-s1 finished: success [build successful]",
            texts.last().unwrap(),
        ],
        "{lines:#?}"
    );
    assert!(
        texts.last().unwrap().starts_with("slave s1 lost: "),
        "{lines:#?}"
    );
    // Each line starts with the UTC time: `YYYY-MM-DD HH:MM:SS`.
    assert!(
        lines[0].as_bytes()[4] == b'-' && lines[0].as_bytes()[13] == b':',
        "{}",
        lines[0]
    );

    let json: Vec<serde_json::Value> = json
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = json.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "slave_connected",
            "change",
            "build_started",
            "step_finished",
            "build_finished",
            "slave_lost"
        ]
    );
    assert_eq!(json[1]["who"], "Ann <ann@example.org>");
    assert_eq!(json[4]["result"], "success");
    assert_eq!(json[4]["builder"], "pass-s1");
    m.master.shutdown().await;
}

#[test]
fn a_missing_or_absent_master_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(autobot_bin())
        .arg("statuslog")
        .current_dir(home.path())
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("give --master HOST:HTMLPORT") && err.contains("masterstatus"),
        "{err}"
    );

    let port = engine_common::free_port();
    let out = Command::new(autobot_bin())
        .args(["statuslog", "--master", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the master's web port"), "{err}");
    let out = Command::new(autobot_bin())
        .args(["statuslog", "--master", "nonsense"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST:HTMLPORT"));
}
