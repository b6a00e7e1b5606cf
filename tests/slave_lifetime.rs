//! Commands die with their slave: the real `autobot run SLAVEDIR` binary against
//! the fake master of `slave_harness`, a running command with a grandchild, then
//! `kill -9` of the slave — the command's whole process group must be gone within
//! a deadline. And when the slave's watchdog was killed too, the next start of
//! the slave kills the groups the previous run recorded, but never a group whose
//! leader is not the one recorded (a recycled pid).

#[path = "slave_harness/mod.rs"]
mod slave_harness;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmpv::Value;
use slave_harness::*;

/// Generous: the machine may be loaded by other builds.
const DEADLINE: Duration = Duration::from_secs(30);

/// Start `autobot run DIR` for a slave directory, its output in `log`.
fn run_slave(dir: &Path, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_autobot"))
        .arg("run")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// `(pid, state, pgrp, ppid, name)` of every process, from `/proc`.
fn processes() -> Vec<(i32, char, i32, i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        out.push((
            pid,
            f[0].chars().next().unwrap_or('?'),
            f[2].parse().unwrap_or(0),
            f[1].parse().unwrap_or(0),
            name,
        ));
    }
    out
}

/// The live (not zombie) members of process group `pgid`.
fn live_members(pgid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, state, pgrp, _, _)| *pgrp == pgid && *state != 'Z' && *state != 'X')
        .map(|(pid, ..)| pid)
        .collect()
}

/// Poll (with a deadline) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A command that runs until killed: a shell (the group's leader) with a
/// background grandchild, writing a marker now and then, printing nothing.
fn endless(workdir: &str) -> Value {
    args(vec![
        ("workdir", Value::from(workdir)),
        (
            "command",
            strs(&[
                "sh",
                "-c",
                "echo $$ > pgid; sleep 300 & while :; do date > marker; sleep 0.2; done",
            ]),
        ),
    ])
}

/// Start the endless command and return its process group, once it runs.
async fn start_endless(conn: &mut Conn, basedir: &Path, id: &str) -> i32 {
    conn.start(id, "shell", endless(id)).await;
    let pgid_file = basedir.join(id).join("pgid");
    let mut pgid = 0;
    let deadline = Instant::now() + DEADLINE;
    while pgid == 0 {
        assert!(Instant::now() < deadline, "the command did not start");
        conn.pump(Duration::from_millis(50)).await;
        pgid = std::fs::read_to_string(&pgid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
    }
    // The leader and its `sleep 300` grandchild.
    let deadline = Instant::now() + DEADLINE;
    while live_members(pgid).len() < 2 {
        assert!(Instant::now() < deadline, "the grandchild did not start");
        conn.pump(Duration::from_millis(50)).await;
    }
    pgid
}

/// Process groups this test started, killed (by their ids) however it ends.
struct Reap(Vec<i32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for &pgid in &self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn record(basedir: &Path) -> PathBuf {
    basedir.join(autobot::slave::watchdog::GROUPS_FILE)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_slave_takes_its_commands_with_it() {
    let mut master = Master::start("life1").await;
    let slave = Slave::create("life1", master.port, 30);
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("slave.log");
    let mut child = run_slave(&slave.basedir, &log);
    let mut conn = master.accept().await;
    conn.settings().await;
    let pgid = start_endless(&mut conn, &slave.basedir, "w1").await;
    let _reap = Reap(vec![pgid]);
    wait_until("the group to be recorded", || {
        read(&record(&slave.basedir)).starts_with(&format!("{pgid} "))
    });

    let watchdog = watchdog_of(child.id() as i32);

    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the command's process group to die", || {
        live_members(pgid).is_empty()
    });
    wait_until("the watchdog to remove its record", || {
        !exists(&record(&slave.basedir))
    });
    wait_until("the watchdog to end", || gone(watchdog));
}

/// The watchdog process of the slave with pid `slave`.
fn watchdog_of(slave: i32) -> i32 {
    processes()
        .into_iter()
        .find(|(_, _, _, ppid, name)| *ppid == slave && name == "autobot-watch")
        .map(|(pid, ..)| pid)
        .expect("the slave's watchdog process")
}

/// Whether a process is gone (or a zombie nobody reaped yet).
fn gone(pid: i32) -> bool {
    processes()
        .iter()
        .all(|(p, st, ..)| *p != pid || *st == 'Z' || *st == 'X')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_slave_kills_what_a_previous_run_left_behind() {
    let mut master = Master::start("life2").await;
    let slave = Slave::create("life2", master.port, 30);
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("slave.log");
    let mut first = run_slave(&slave.basedir, &log);
    let mut conn = master.accept().await;
    conn.settings().await;
    let pgid = start_endless(&mut conn, &slave.basedir, "w2").await;
    let mut reap = Reap(vec![pgid]);
    let rec = record(&slave.basedir);
    wait_until("the group to be recorded", || {
        read(&rec).starts_with(&format!("{pgid} "))
    });

    // Kill the watchdog first, then the slave: nothing cleans up this time.
    let watchdog = watchdog_of(first.id() as i32);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watchdog),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    drop(conn);
    wait_until("the watchdog to die", || gone(watchdog));
    assert!(
        !live_members(pgid).is_empty(),
        "the command must have outlived its slave and watchdog for this test"
    );
    assert!(read(&rec).contains(&format!("{pgid} ")), "{}", read(&rec));

    // A group the record names whose leader is not the one recorded: a recycled
    // pid must be left alone.
    let mut decoy = Command::new("sleep")
        .arg("300")
        .process_group(0)
        .spawn()
        .unwrap();
    let decoy_pid = decoy.id() as i32;
    reap.0.push(decoy_pid);
    let decoy_start: u64 = {
        let stat = std::fs::read_to_string(format!("/proc/{decoy_pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(19).unwrap().parse().unwrap()
    };
    let mut text = read(&rec);
    text.push_str(&format!("{decoy_pid} {}\n", decoy_start + 1));
    std::fs::write(&rec, text).unwrap();

    // The slave starts again.
    let mut second = run_slave(&slave.basedir, &log);
    let mut conn = master.accept().await;
    conn.settings().await;
    wait_until("the left-over group to be killed", || {
        live_members(pgid).is_empty()
    });
    assert!(
        !live_members(decoy_pid).is_empty(),
        "a group whose leader does not match the record was killed"
    );
    let text = read(&log);
    assert!(
        text.contains(&format!("killing process group {pgid} left running")),
        "{text}"
    );
    assert!(
        text.contains(&format!("process group {decoy_pid} in")),
        "{text}"
    );
    assert_eq!(read(&rec), "", "the record starts empty for the new run");

    // A clean stop: the record goes, as the watchdog does.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = async { while conn.pump(Duration::from_secs(5)).await {} };
    tokio::time::timeout(DEADLINE, stopping).await.unwrap();
    let status = second.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", read(&log));
    wait_until("the record to be removed", || !exists(&rec));
    decoy.kill().unwrap();
    decoy.wait().unwrap();
}
