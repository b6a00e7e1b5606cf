//! Faults that must not stall the master (issue 18), each with the behaviour it
//! must keep: builds still finish, slaves stay connected, the web answers.
//!
//! * a log disk that hangs (writes held at a FUSE gate, `slowfs`) while builds
//!   write their logs: the web answers and both slaves keep their links for
//!   several keepalive intervals; once the disk is back, every build finishes
//!   with its whole log;
//! * a slave flooding output as fast as it can onto a slow log disk: the master
//!   pushes back (stops reading the slave's socket) instead of queueing, its peak
//!   memory stays bounded, and the stored log is byte for byte what was printed;
//! * clients loading the waterfall of a long history all the time: builds finish
//!   and the slave stays connected;
//! * SSE clients that never read (`/events` and a live log tail): builds finish,
//!   the web answers.
//!
//! Master and slaves are the real binary run as child processes (`autobot run`),
//! so the runtime is the daemon's own; none of these tests measures a latency
//! (`bench/stalls.rs` does).

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "slowfs/mod.rs"]
mod slowfs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine_common::{free_port, spawn_run, Daemon, DEADLINE};

const PASSWORD: &str = "pw-stalls";

/// Whether this machine can make a slow disk; without one the test fails under
/// `CI=true` and is skipped (saying so) elsewhere (`support::skip`).
#[track_caller]
fn slow_disk_available() -> bool {
    match slowfs::unavailable() {
        None => true,
        Some(why) => {
            support::skip(&format!("cannot make a slow disk here: {why}"));
            false
        }
    }
}

/// A master and its slaves as child processes, `logs/` on a slow disk if asked.
/// Dropped in the right order: disk released, processes killed, disk unmounted,
/// directories removed.
struct Site {
    slaves: Vec<Daemon>,
    master: Option<Daemon>,
    fs: Option<slowfs::SlowFs>,
    mdir: PathBuf,
    hp: u16,
    sp: u16,
    dir: tempfile::TempDir,
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(fs) = &self.fs {
            fs.release();
        }
        self.slaves.clear();
        self.master.take();
        if let Some(fs) = self.fs.take() {
            fs.unmount();
        }
    }
}

impl Site {
    /// `factories`: the factory sections and `[slave:NAME]` sections after
    /// `[:master:]` (which gets `extra` too).
    fn new(sections: &str, extra: &str, slow: bool) -> Site {
        support::capture_logs();
        support::keep_sqlite(
            "the slow disk is the master directory's; the site reads and fills state.sqlite itself",
        );
        let dir = tempfile::tempdir().unwrap();
        let mdir = dir.path().join("master");
        let backing = dir.path().join("logs-backing");
        std::fs::create_dir_all(mdir.join("logs")).unwrap();
        std::fs::create_dir_all(&backing).unwrap();
        let fs = slow.then(|| {
            slowfs::SlowFs::mount(&backing, &mdir.join("logs")).expect("mount the slow disk")
        });
        let (sp, hp) = (free_port(), free_port());
        support::write_master_ini(
            &mdir,
            format!(
                "[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {}\n\
                 password = {PASSWORD}\nfactories = *\n{extra}\n{sections}\n",
                free_port()
            ),
        );
        Site {
            slaves: Vec::new(),
            master: None,
            fs,
            mdir,
            hp,
            sp,
            dir,
        }
    }

    fn fs(&self) -> &slowfs::SlowFs {
        self.fs.as_ref().expect("a slow disk")
    }

    /// Start the master, then each slave, and wait until they are connected.
    fn start(&mut self, slaves: &[&str]) {
        self.master = Some(spawn_run(&self.mdir));
        wait_until("the master to answer", || {
            http(self.hp, "GET", "/api/v1/slaves", None).is_some()
        });
        for name in slaves {
            let sdir = self.dir.path().join(format!("slave-{name}"));
            slave_dir(&sdir, self.sp, name);
            self.slaves.push(spawn_run(&sdir));
        }
        wait_until("the slaves to connect", || {
            connected(self.hp).len() == slaves.len()
        });
    }

    fn pid(&self) -> u32 {
        self.master.as_ref().map(|d| d.0.id()).unwrap_or(0)
    }

    fn force(&self, builder: &str) -> i64 {
        let (status, v) = http(
            self.hp,
            "POST",
            &format!("/api/v1/builders/{builder}/force"),
            Some(&serde_json::json!({"reason": "stall test"})),
        )
        .expect("the web port answers a force");
        assert_eq!(status, 202, "force {builder}: {v}");
        v["request_id"].as_i64().unwrap()
    }

    /// Wait for a request to complete; its result.
    fn wait_request(&self, id: i64) -> String {
        let mut result = None;
        wait_until(&format!("request {id} to complete"), || {
            match http(self.hp, "GET", &format!("/api/v1/buildrequests/{id}"), None) {
                Some((200, v)) if v["complete"] == true => {
                    result = v["result"].as_str().map(str::to_string);
                    true
                }
                _ => false,
            }
        });
        result.unwrap_or_default()
    }

    /// Connections each slave has had (one each if no link was ever lost).
    fn connections(&self, slave: &str) -> i64 {
        let db = rusqlite::Connection::open_with_flags(
            self.mdir.join("state.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        db.query_row(
            "SELECT count(*) FROM slave_connections WHERE slave = ?1",
            [slave],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// The path and recorded size of a step's stdio log.
    fn log(&self, builder: &str, number: i64, step: &str) -> (PathBuf, u64) {
        let db = rusqlite::Connection::open_with_flags(
            self.mdir.join("state.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let (path, size): (String, i64) = db
            .query_row(
                "SELECT logs.path, logs.size FROM logs JOIN steps ON logs.step = steps.id
                 JOIN builds ON steps.build = builds.id
                 WHERE builds.builder = ?1 AND builds.number = ?2 AND steps.name = ?3
                   AND logs.name = 'stdio'",
                rusqlite::params![builder, number, step],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        (self.mdir.join(path), size as u64)
    }
}

/// A slave directory for `autobot run` with a 1 s keepalive.
fn slave_dir(dir: &Path, port: u16, name: &str) {
    std::fs::create_dir_all(dir.join("info")).unwrap();
    let dir = std::fs::canonicalize(dir).unwrap();
    std::fs::write(dir.join("info/admin"), "Stall Test <s@example.org>\n").unwrap();
    std::fs::write(dir.join("info/host"), "stall-test\n").unwrap();
    let ini = autobot::config::SlaveIni {
        basedir: dir.clone(),
        master_host: "127.0.0.1".into(),
        master_port: port,
        more_masters: Vec::new(),
        name: name.into(),
        password: PASSWORD.into(),
        keepalive: 1,
        umask: 0o022,
        usepty: false,
    };
    std::fs::write(dir.join(autobot::config::slave::SLAVE_INI), ini.render()).unwrap();
}

/// One request with a 60 s read timeout: (status, JSON body), or `None` if the
/// port does not answer.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Option<(u16, serde_json::Value)> {
    let r = autobot::cli::http::request("127.0.0.1", port, method, path, body).ok()?;
    let v = r.json().unwrap_or_default();
    Some((r.status, v))
}

/// Names of the connected slaves, as the API says.
fn connected(hp: u16) -> Vec<String> {
    match http(hp, "GET", "/api/v1/slaves", None) {
        Some((200, v)) => v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["connected"] == true)
                    .filter_map(|s| s["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Poll `cond` until it holds; fails the test after [`DEADLINE`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process's peak resident memory since the last [`clear_peak`], in KiB.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn clear_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// A log disk that hangs: writes wait at the gate. Meanwhile the web answers and
/// both slaves keep their links for three keepalive intervals (the master's is
/// 1 s), the engine keeps starting builds; once the disk is back every build
/// finishes with its whole log, and no slave ever reconnected.
#[test]
fn a_hung_log_disk_holds_up_neither_the_web_nor_the_slave_links() {
    if !slow_disk_available() {
        return;
    }
    let mut site = Site::new(
        "[slave:s1]\nfactories = print\n\n[slave:s2]\nfactories = true\n\n\
         [print]\ntype = shell\nstep.print = sh -c \"seq 1 5000\"\n\n\
         [true]\ntype = shell\nstep.true = true\n",
        "keepaliveInterval = 1\n",
        true,
    );
    site.start(&["s1", "s2"]);
    // The builders' log directories exist before the disk hangs.
    assert_eq!(site.wait_request(site.force("print-s1")), "success");
    assert_eq!(site.wait_request(site.force("true-s2")), "success");

    site.fs().hold();
    let print = site.force("print-s1");
    let quick = site.force("true-s2");
    wait_until("a log write to hang on the disk", || {
        site.fs().waiting() > 0
    });
    let t0 = Instant::now();
    let mut answers = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        let up = connected(site.hp);
        assert_eq!(
            up,
            ["s1", "s2"],
            "while the disk hangs, after {answers} answers"
        );
        answers += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(site.fs().waiting() > 0, "the disk was released too early");
    // The engine goes on meanwhile: both Builds were started.
    for builder in ["print-s1", "true-s2"] {
        let (status, v) = http(
            site.hp,
            "GET",
            &format!("/api/v1/builders/{builder}/builds/2"),
            None,
        )
        .expect("the web port answers");
        assert_eq!(status, 200, "{builder} build 2 was started: {v}");
    }
    site.fs().release();
    assert_eq!(site.wait_request(print), "success");
    assert_eq!(site.wait_request(quick), "success");
    let (path, size) = site.log("print-s1", 2, "print");
    assert_eq!(
        size,
        std::fs::metadata(&path).unwrap().len(),
        "the recorded size"
    );
    let mut stdout = Vec::new();
    stdout_of(&path, |b| stdout.extend_from_slice(b));
    let expected: String = (1..=5000).map(|i| format!("{i}\n")).collect();
    assert!(
        stdout == expected.as_bytes(),
        "the log holds every line printed, in order"
    );
    assert_eq!(site.connections("s1"), 1, "s1 reconnected");
    assert_eq!(site.connections("s2"), 1, "s2 reconnected");
}

/// What `yes LINE | head -c bytes` prints, hashed as it is made.
fn yes_digest(line: &str, bytes: u64) -> ring::digest::Digest {
    let mut unit = line.as_bytes().to_vec();
    unit.push(b'\n');
    let block: Vec<u8> = unit
        .iter()
        .copied()
        .cycle()
        .take(unit.len() * 4096)
        .collect();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        ctx.update(&block[..n]);
        left -= n as u64;
    }
    ctx.finish()
}

/// A stored log's stdout bytes (its channel runs tell them from the headers the
/// slave adds), fed to `each` in order.
fn stdout_of(path: &Path, mut each: impl FnMut(&[u8])) {
    use autobot::logstore::{read_channel_runs, Channel};
    let runs = read_channel_runs(path).unwrap();
    let mut f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    for (i, (start, channel)) in runs.iter().enumerate() {
        let end = runs.get(i + 1).map(|r| r.0).unwrap_or(len);
        assert_eq!(at, *start, "channel runs in order");
        let mut left = end - start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n]).unwrap();
            if *channel == Channel::Stdout {
                each(&buf[..n]);
            }
            left -= n as u64;
        }
        at = end;
    }
}

/// The byte count and SHA-256 of a stored log's stdout.
fn stdout_digest(path: &Path) -> (u64, ring::digest::Digest) {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut total = 0;
    stdout_of(path, |b| {
        ctx.update(b);
        total += b.len() as u64;
    });
    (total, ctx.finish())
}

/// A slave prints 128 MiB (whole lines) as fast as it can onto a log disk much
/// slower than that (20 ms a write): the master keeps at most a bounded amount of
/// it in memory (peak RSS ≤ 64 MiB, where queueing what the slave sends would
/// take most of the 128) and stores every byte, in order.
#[test]
fn a_flooding_slave_is_pushed_back_and_loses_no_byte() {
    if !slow_disk_available() {
        return;
    }
    const LINE: &str =
        "flood 0123456789012345678901234567890123456789012345678901234567890123456789";
    // Whole lines: the slave ends an unfinished last line with a newline.
    const BYTES: u64 = (128 << 20) / (LINE.len() as u64 + 1) * (LINE.len() as u64 + 1);
    let mut site = Site::new(
        &format!(
            "[slave:s1]\n\n[flood]\ntype = shell\nstep.yes = sh -c \"yes {LINE} | head -c {BYTES}\"\n"
        ),
        // The link stays up while the master pushes back (a 2 s silence would
        // count as a dead link).
        "keepaliveInterval = 2\n",
        true,
    );
    site.start(&["s1"]);
    // 128 KiB a write, 20 ms each: some 6 MB/s, slower than any slave.
    site.fs().set_delay(Duration::from_millis(20));
    let pid = site.pid();
    clear_peak(pid);
    let t0 = Instant::now();
    let id = site.force("flood-s1");
    assert_eq!(site.wait_request(id), "success");
    let peak = peak_kib(pid);
    eprintln!(
        "flood: {} MiB in {:.1} s, the master's peak RSS {} MiB",
        BYTES >> 20,
        t0.elapsed().as_secs_f64(),
        peak / 1024
    );
    let (path, size) = site.log("flood-s1", 1, "yes");
    assert_eq!(
        size,
        std::fs::metadata(&path).unwrap().len(),
        "the recorded size"
    );
    let (on_disk, digest) = stdout_digest(&path);
    assert_eq!(on_disk, BYTES, "the bytes of stdout stored");
    assert!(
        digest.as_ref() == yes_digest(LINE, BYTES).as_ref(),
        "the stored log is not what the step printed"
    );
    assert!(
        peak <= 64 * 1024,
        "the master's peak RSS was {} MiB while 128 MiB went through it",
        peak / 1024
    );
    assert_eq!(site.connections("s1"), 1, "s1 reconnected");
}

/// Fill the database of a master that has not started yet with `n` finished
/// Builds (two Steps each) of builders `f0-s1` … `f9-s1`.
fn fill_history(db_path: &Path, n: i64) {
    drop(autobot::db::Db::open(db_path).unwrap());
    let db = rusqlite::Connection::open(db_path).unwrap();
    db.execute_batch(&format!(
        "BEGIN;
         INSERT INTO sourcestamps(id, branch, revision) VALUES (1, 'main', NULL);
         INSERT INTO builds(id, builder, number, slave, sourcestamp, started_at, finished_at,
                            result, reason, text, total_steps)
           WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {n} - 1)
           SELECT i + 1, 'f' || (i % 10) || '-s1', i / 10 + 1, 's1', 1,
                  1600000000.0 + i * 3.0, 1600000000.0 + i * 3.0 + 2.5,
                  CASE WHEN i % 17 = 0 THEN 'failure' ELSE 'success' END, 'history',
                  'build successful', 2
           FROM n;
         INSERT INTO steps(build, number, name, started_at, finished_at, result, text)
           SELECT id, 1, 'compile', started_at, started_at + 1, result, 'compile' FROM builds;
         COMMIT;"
    ))
    .unwrap();
}

/// Sixteen clients load the waterfall of a 20,000-build history back to back
/// while builds are forced one after another: every build finishes, the slave
/// keeps its link, every page load is answered.
#[test]
fn builds_finish_while_clients_load_the_waterfall() {
    let mut sections = String::from("[slave:s1]\n\n[true]\ntype = shell\nstep.true = true\n\n");
    for f in 0..10 {
        sections.push_str(&format!(
            "[f{f}]\ntype = shell\nstep.compile = true\nstep.test = true\n\n"
        ));
    }
    let mut site = Site::new(&sections, "keepaliveInterval = 2\n", false);
    fill_history(&site.mdir.join("state.sqlite"), 20_000);
    site.start(&["s1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (stop, served, hp) = (stop.clone(), served.clone(), site.hp);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut s = TcpStream::connect(("127.0.0.1", hp)).unwrap();
                    s.set_read_timeout(Some(DEADLINE)).unwrap();
                    write!(s, "GET /waterfall HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
                    let mut page = Vec::new();
                    s.read_to_end(&mut page).unwrap();
                    assert!(page.starts_with(b"HTTP/1.1 200") || page.starts_with(b"HTTP/1.0 200"));
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_until("the first waterfall pages", || {
        served.load(Ordering::Relaxed) >= 16
    });
    for _ in 0..20 {
        assert_eq!(site.wait_request(site.force("true-s1")), "success");
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("every waterfall load is answered");
    }
    assert_eq!(connected(site.hp), ["s1"]);
    assert_eq!(site.connections("s1"), 1, "s1 reconnected");
}

/// A client of `/events` and one of a 20 MB log's live tail that never read:
/// their sockets fill up, and meanwhile 200 builds finish and the web answers.
#[test]
fn sse_clients_that_never_read_hold_up_nothing() {
    let mut site = Site::new(
        "[slave:s1]\n\n[true]\ntype = shell\nstep.true = true\n\n\
         [big]\ntype = shell\nstep.yes = sh -c \"yes 0123456789 | head -c 20000000\"\n",
        "keepaliveInterval = 2\n",
        false,
    );
    site.start(&["s1"]);
    assert_eq!(site.wait_request(site.force("big-s1")), "success");
    let stuck: Vec<TcpStream> = [
        "/events",
        "/builders/big-s1/builds/1/steps/yes/logs/stdio/tail?offset=0",
    ]
    .iter()
    .map(|path| {
        let mut s = TcpStream::connect(("127.0.0.1", site.hp)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        s
    })
    .collect();
    for i in 0..200 {
        let id = site.force("true-s1");
        assert_eq!(site.wait_request(id), "success", "build {i}");
    }
    assert_eq!(connected(site.hp), ["s1"]);
    assert_eq!(site.connections("s1"), 1, "s1 reconnected");
    drop(stuck);
}
