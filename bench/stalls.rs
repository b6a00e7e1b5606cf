//! Benchmark of issue 18's faults and floods: one slow thing must not stall the
//! others, and a flooding slave must not grow the master's memory. Master and
//! slaves run as real daemons (`autobot start`, release build), measured from
//! outside.
//!
//! Run with `cargo bench --bench stalls` on a quiet machine (root, or
//! `fusermount3`, for the slow disk). One `name value unit` line per figure.
//!
//! Force → finished is measured from the moment the engine stored the forced
//! BuildRequest (its `submitted_at`) to the moment a thread of the bench, polling
//! the master's `state.sqlite` read-only every millisecond on its own, sees it
//! complete: the time the engine and the slave link took, whatever the web
//! port's queue of page loads did to the POST that asked for it (that figure,
//! POST sent → the client knows it finished, is printed too, as
//! `…_client_p95`). The p95 of its parts follow: `dispatch` (stored → claimed),
//! `command` (the Step's command on the slave, as the master saw it) and
//! `record` (the Step's end → its logs stored and its end committed and seen).
//! One-step `true` builds, one at a time (`--samples N`, default 200).
//! `AUTOBOT_BENCH_BIN=PATH` measures another build of autobot (e.g. the one
//! before a change) with the same bench. Scenarios:
//! * `quiet` — nothing else happens (the reference);
//! * `waterfall_load` — (a) 50 clients (`--clients N`) load the waterfall of a
//!   1,000,000-build history (`--builds N`) back to back meanwhile, each on a fresh
//!   connection without an ETag; their page loads' p50/p95 too. The clients stand
//!   for browsers on other machines: their threads run at the lowest priority
//!   (nice 19) and only read the bytes, so the bench's own work on the pages
//!   does not take the master's CPU on a small machine;
//! * `sse_stuck` — (c) an `/events` client and a live log tail client that never
//!   read (their socket buffers full) while the builds run;
//! * `slow_disk` — (b) a second master whose `logs/` is a FUSE filesystem whose
//!   writes and file creations each take `--delay-ms` (default 50 ms): a slave
//!   printing all the time on one builder, one-step builds forced on another, and
//!   a prober that GETs `/api/v1/slaves` every 20 ms: its p95/max, and whether
//!   any slave lost its link (`keepaliveInterval = 2`); then the disk *hangs*
//!   for 5 s (writes held) and the prober's longest wait then;
//! * `flood` — on the slow-disk master (writes `--flood-delay-ms`, default 2 ms
//!   each), a step printing `--flood-bytes` (default 1 GB) as fast as it can: the
//!   master's peak RSS (VmHWM), the bytes stored and their SHA-256 against what
//!   the step printed, and the throughput.

#[path = "common/mod.rs"]
mod common;

#[path = "../tests/slowfs/mod.rs"]
mod slowfs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::history::{self, percentile};
use common::*;

/// The line the flood step prints, again and again.
const FLOOD_LINE: &str =
    "0123456789012345678901234567890123456789012345678901234567890123456789012345678";

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Daemons started by the bench, stopped when it ends (or panics).
struct Daemons(Vec<PathBuf>);

impl Daemons {
    fn start(&mut self, dir: &Path) {
        autobot(&["start", dir.to_str().unwrap()]);
        self.0.push(dir.to_path_buf());
    }

    fn stop_all(&mut self) {
        for d in self.0.drain(..).rev() {
            let _ = std::process::Command::new(&*EXE)
                .args(["stop", d.to_str().unwrap()])
                .output();
        }
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A slave directory for `autobot start` with a 1 s keepalive.
fn slave_dir(dir: &Path, port: u16, name: &str) {
    std::fs::create_dir_all(dir.join("info")).unwrap();
    let dir = std::fs::canonicalize(dir).unwrap();
    std::fs::write(dir.join("info/admin"), "Stall Bench <b@example.org>\n").unwrap();
    std::fs::write(dir.join("info/host"), "stall-bench\n").unwrap();
    let ini = autobot::config::SlaveIni {
        basedir: dir.clone(),
        master_host: "127.0.0.1".into(),
        master_port: port,
        more_masters: Vec::new(),
        name: name.into(),
        password: "pw".into(),
        keepalive: 1,
        umask: 0o022,
        usepty: false,
    };
    std::fs::write(dir.join(autobot::config::slave::SLAVE_INI), ini.render()).unwrap();
}

/// Open `state.sqlite` read-only, as a second process may.
fn open_db(mdir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        mdir.join("state.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}

/// What `n` forced builds took, in ms: submitted → complete seen (`engine`),
/// POST sent → complete seen (`client`), and the engine's part in three:
/// submitted → claimed (`dispatch`), the Step's command (`command`), the Step's
/// end → complete seen (`record`: its logs stored, its end written).
#[derive(Default)]
struct Samples {
    engine: Vec<f64>,
    client: Vec<f64>,
    dispatch: Vec<f64>,
    command: Vec<f64>,
    record: Vec<f64>,
}

/// Watches the master's database from a thread of its own and notes when each
/// BuildRequest is first seen complete, however long the POST that forced it
/// takes to come back (under load the web port answers last).
struct Watcher {
    seen: Arc<(
        std::sync::Mutex<std::collections::HashMap<i64, f64>>,
        std::sync::Condvar,
    )>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(mdir: &Path) -> Watcher {
        let db = open_db(mdir);
        type Seen = (
            std::sync::Mutex<std::collections::HashMap<i64, f64>>,
            std::sync::Condvar,
        );
        let seen: Arc<Seen> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (seen.clone(), stop.clone());
        // Requests from here on (every earlier one is complete).
        let mut last: i64 = db
            .query_row("SELECT coalesce(max(id), 0) FROM buildrequests", [], |r| {
                r.get(0)
            })
            .unwrap();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let mut st = db
                    .prepare_cached(
                        "SELECT id FROM buildrequests WHERE id > ?1 AND complete = 1 ORDER BY id",
                    )
                    .unwrap();
                let ids: Vec<i64> = st
                    .query_map([last], |r| r.get(0))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                if !ids.is_empty() {
                    let now = now_secs();
                    let (map, cv) = &*s2;
                    let mut m = map.lock().unwrap();
                    for id in ids {
                        // Requests complete in order here (one at a time).
                        last = last.max(id);
                        m.insert(id, now);
                    }
                    cv.notify_all();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Watcher {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// When request `id` was first seen complete (waits for it).
    fn wait(&self, id: i64) -> f64 {
        let (map, cv) = &*self.seen;
        let mut m = map.lock().unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(t) = m.get(&id) {
                return *t;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "request {id} never completed"
            );
            m = cv.wait_timeout(m, Duration::from_millis(100)).unwrap().0;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Force `builder` `n` times, one after another. Every build must succeed.
fn force_latencies(hp: u16, mdir: &Path, builder: &str, n: usize) -> Samples {
    let db = open_db(mdir);
    let watcher = Watcher::start(mdir);
    let mut conn = KeepAlive::connect(hp);
    let mut out = Samples::default();
    for _ in 0..n {
        let t0 = now_secs();
        let (status, v) = conn.post_json(
            &format!("/api/v1/builders/{builder}/force"),
            &serde_json::json!({"reason": "stall bench"}),
        );
        assert!(
            (200..300).contains(&status),
            "force {builder}: {status} {v}"
        );
        let answered = now_secs();
        let id = v["request_id"].as_i64().unwrap();
        let seen = watcher.wait(id);
        let (submitted, result, claimed, started, finished): (f64, Option<String>, f64, f64, f64) = db
            .query_row(
                "SELECT r.submitted_at, r.result, r.claimed_at, min(s.started_at), max(s.finished_at)
                 FROM buildrequests r JOIN build_requests br ON br.request = r.id
                 JOIN steps s ON s.build = br.build WHERE r.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(result.as_deref(), Some("success"), "{builder} request {id}");
        out.engine.push((seen - submitted) * 1000.0);
        // The client learns of the end once its POST is answered and the end seen.
        out.client.push((answered.max(seen) - t0) * 1000.0);
        out.dispatch.push((claimed - submitted) * 1000.0);
        out.command.push((finished - started) * 1000.0);
        out.record.push((seen - finished) * 1000.0);
    }
    out
}

fn report_latencies(name: &str, mut s: Samples) {
    let p = |what: &str, v: &mut Vec<f64>, q: f64| {
        let label = match q {
            q if q >= 1.0 => "max".to_string(),
            q => format!("p{}", (q * 100.0).round()),
        };
        report(
            &format!("{name}_{what}_{label}"),
            percentile(v, q),
            "ms",
            None,
            true,
        );
    };
    p("force_to_finished", &mut s.engine, 0.5);
    p("force_to_finished", &mut s.engine, 0.95);
    p("force_to_finished", &mut s.engine, 1.0);
    p("force_to_finished_client", &mut s.client, 0.95);
    p("part_dispatch", &mut s.dispatch, 0.95);
    p("part_command", &mut s.command, 0.95);
    p("part_record", &mut s.record, 0.95);
}

/// Make the calling thread stand for a client on another machine: its own CPU
/// time (reading the pages) then never competes with the master's, only what
/// it asks of the master does (nice 19, the lowest priority).
fn remote_client() {
    // SAFETY: plain system calls on the calling thread.
    unsafe {
        let tid = nix::libc::syscall(nix::libc::SYS_gettid) as nix::libc::id_t;
        nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid, 19);
    }
}

/// GET `path` on a fresh connection, reading the page into `buf` (and
/// dropping it) as a browser's network stack would, without parsing it:
/// (status, ms).
fn light_get(port: u16, path: &str, buf: &mut [u8]) -> (u16, f64) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut status = 0;
    let mut first = true;
    loop {
        let n = s.read(buf).unwrap();
        if n == 0 {
            break;
        }
        if first {
            first = false;
            status = std::str::from_utf8(&buf[..n.min(12)])
                .ok()
                .and_then(|h| h.split_whitespace().nth(1))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        }
    }
    (status, t0.elapsed().as_secs_f64() * 1000.0)
}

/// Threads that GET `path` back to back until stopped; their latencies.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<f64>>>,
    started: Instant,
}

impl Load {
    fn start(hp: u16, path: &str, clients: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let (stop, path) = (stop.clone(), path.to_string());
                std::thread::spawn(move || {
                    remote_client();
                    let mut times = Vec::new();
                    let mut buf = vec![0u8; 256 * 1024];
                    while !stop.load(Ordering::Relaxed) {
                        let (status, ms) = light_get(hp, &path, &mut buf);
                        assert_eq!(status, 200, "{path}");
                        times.push(ms);
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                    }
                    times
                })
            })
            .collect();
        Load {
            stop,
            threads,
            started: Instant::now(),
        }
    }

    /// Stop; (latencies, requests per second).
    fn finish(self) -> (Vec<f64>, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let times: Vec<f64> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("a load thread"))
            .collect();
        let rate = times.len() as f64 / secs;
        (times, rate)
    }
}

/// A client that sends an SSE request and never reads the answer.
fn stuck_client(hp: u16, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", hp)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    s
}

fn history_master(tmp: &Path, builds: u64, samples: usize, clients: usize) {
    let mdir = tmp.join("history-master");
    std::fs::create_dir_all(&mdir).unwrap();
    let (sp, hp, pp) = (free_port(), free_port(), free_port());
    let mut ini = format!(
        "[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {pp}\npassword = pw\nfactories = *\n\n"
    );
    ini.push_str(&history::sections());
    ini.push_str("[true]\ntype = shell\nstep.true = true\n\n");
    ini.push_str("[big]\ntype = shell\nstep.yes = sh -c \"yes 0123456789 | head -c 50000000\"\n\n");
    std::fs::write(mdir.join("master.ini"), ini).unwrap();
    drop(autobot::db::Db::open(&mdir.join("state.sqlite")).unwrap());
    history::fill(&mdir, builds);
    let mut daemons = Daemons(Vec::new());
    daemons.start(&mdir);
    wait_until("the master to answer", Duration::from_secs(120), || {
        get(hp, "/api/v1/builders").is_some()
    });
    let sdir = tmp.join("history-slave");
    slave_dir(&sdir, sp, "s0");
    daemons.start(&sdir);
    wait_until("the slave to connect", Duration::from_secs(60), || {
        connected_count(hp) == 1
    });
    // Warm-up: the builder's directory on the slave, its log directory.
    let _ = force_latencies(hp, &mdir, "true-s0", 5);

    report_latencies("quiet", force_latencies(hp, &mdir, "true-s0", samples));

    // (a) 50 clients loading the waterfall all the time.
    let load = Load::start(hp, "/waterfall", clients, Duration::ZERO);
    let samples_a = force_latencies(hp, &mdir, "true-s0", samples);
    let (mut pages, rate) = load.finish();
    report_latencies("waterfall_load", samples_a);
    report(
        &format!("waterfall_load_{clients}_clients_page_p50"),
        percentile(&mut pages, 0.5),
        "ms",
        None,
        true,
    );
    report(
        &format!("waterfall_load_{clients}_clients_page_p95"),
        percentile(&mut pages, 0.95),
        "ms",
        None,
        true,
    );
    report("waterfall_load_pages_per_s", rate, "pages/s", None, false);

    // (c) SSE clients that never read: the engine's events and a 50 MB log's tail.
    let _ = force_latencies(hp, &mdir, "big-s0", 1);
    let stuck_events = stuck_client(hp, "/events");
    let stuck_tail = stuck_client(
        hp,
        "/builders/big-s0/builds/1/steps/yes/logs/stdio/tail?offset=0",
    );
    let pid = pid_of(&mdir);
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    report_latencies("sse_stuck", force_latencies(hp, &mdir, "true-s0", samples));
    report(
        "sse_stuck_master_peak_rss",
        mib(status_kib(pid, "VmHWM")),
        "MiB",
        None,
        true,
    );
    drop((stuck_events, stuck_tail));
    daemons.stop_all();
}

/// What `yes LINE | head -c bytes` prints: its SHA-256.
fn flood_digest(bytes: u64) -> ring::digest::Digest {
    let mut line = FLOOD_LINE.as_bytes().to_vec();
    line.push(b'\n');
    let block: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 4096)
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

/// The byte count and SHA-256 of a stored log's stdout (its channel runs tell
/// it from the headers the slave adds).
fn stdout_digest(path: &Path) -> (u64, ring::digest::Digest) {
    use autobot::logstore::{read_channel_runs, Channel};
    let runs = read_channel_runs(path).unwrap();
    let mut f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    for (i, (start, channel)) in runs.iter().enumerate() {
        let end = runs.get(i + 1).map(|r| r.0).unwrap_or(len);
        let mut left = end - start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n]).unwrap();
            if *channel == Channel::Stdout {
                ctx.update(&buf[..n]);
                total += n as u64;
            }
            left -= n as u64;
        }
    }
    (total, ctx.finish())
}

/// GET `/api/v1/slaves` every 20 ms until stopped: (latencies in ms, whether a
/// slave was ever seen disconnected).
struct Prober {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<f64>, bool)>,
}

impl Prober {
    fn start(hp: u16) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut times = Vec::new();
            let mut lost = false;
            while !s.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let body = get(hp, "/api/v1/slaves").expect("the web port answers");
                times.push(t0.elapsed().as_secs_f64() * 1000.0);
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let up = v
                    .as_array()
                    .map(|a| a.iter().filter(|s| s["connected"] == true).count())
                    .unwrap_or(0);
                if up != 3 {
                    lost = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (times, lost)
        });
        Prober { stop, thread }
    }

    fn finish(self) -> (Vec<f64>, bool) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the prober")
    }
}

fn slow_disk_master(
    tmp: &Path,
    samples: usize,
    delay: Duration,
    flood_delay: Duration,
    flood_bytes: u64,
) {
    if let Some(why) = slowfs::unavailable() {
        println!("# slow_disk and flood skipped: {why}");
        return;
    }
    let mdir = tmp.join("slow-master");
    let backing = tmp.join("slow-logs");
    std::fs::create_dir_all(mdir.join("logs")).unwrap();
    std::fs::create_dir_all(&backing).unwrap();
    let fs = slowfs::SlowFs::mount(&backing, &mdir.join("logs")).expect("mount the slow disk");
    let (sp, hp) = (free_port(), free_port());
    std::fs::write(
        mdir.join("master.ini"),
        format!(
            "[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {}\npassword = pw\n\
             keepaliveInterval = 2\n\n\
             [slave:s0]\nfactories = true\n\n[slave:s1]\nfactories = noisy\n\n\
             [slave:s2]\nfactories = flood\n\n\
             [true]\ntype = shell\nstep.true = true\n\n\
             [noisy]\ntype = shell\nstep.print = sh -c \"for i in $(seq 1 1500); do seq 1 2000; sleep 0.02; done\"\n\n\
             [flood]\ntype = shell\nstep.yes = sh -c \"yes {FLOOD_LINE} | head -c {flood_bytes}\"\n",
            free_port()
        ),
    )
    .unwrap();
    let mut daemons = Daemons(Vec::new());
    daemons.start(&mdir);
    for (i, name) in ["s0", "s1", "s2"].iter().enumerate() {
        let sdir = tmp.join(format!("slow-slave{i}"));
        slave_dir(&sdir, sp, name);
        daemons.start(&sdir);
    }
    wait_until("the slaves to connect", Duration::from_secs(60), || {
        connected_count(hp) == 3
    });
    let db = open_db(&mdir);
    let _ = force_latencies(hp, &mdir, "true-s0", 3);

    // (b) A slow disk, a slave printing all the time, builds forced on the other.
    fs.set_delay(delay);
    let noisy = autobot::cli::http::request(
        "127.0.0.1",
        hp,
        "POST",
        "/api/v1/builders/noisy-s1/force",
        Some(&serde_json::json!({"reason": "noise"})),
    )
    .unwrap();
    assert_eq!(noisy.status, 202, "{}", noisy.error_text());
    let prober = Prober::start(hp);
    report_latencies("slow_disk", force_latencies(hp, &mdir, "true-s0", samples));
    // The disk hangs for 5 s.
    fs.hold();
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    fs.release();
    let (mut web, lost) = prober.finish();
    report(
        "slow_disk_web_p95",
        percentile(&mut web, 0.95),
        "ms",
        None,
        true,
    );
    report(
        "slow_disk_web_max_incl_5s_hang",
        percentile(&mut web, 1.0),
        "ms",
        None,
        true,
    );
    report(
        "slow_disk_slave_links_lost",
        if lost { 1.0 } else { 0.0 },
        "",
        None,
        true,
    );
    // The noise stops (a master that lost s1's link re-runs it: whatever runs).
    for n in 1..=3 {
        let _ = autobot::cli::http::request(
            "127.0.0.1",
            hp,
            "POST",
            &format!("/api/v1/builders/noisy-s1/builds/{n}/stop"),
            Some(&serde_json::json!({"reason": "enough"})),
        );
    }

    // The flood: as fast as the slave can, onto a disk slower than that.
    if flood_bytes > 0 {
        fs.set_delay(flood_delay);
        let pid = pid_of(&mdir);
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        let rss_before = status_kib(pid, "VmRSS");
        let written0 = fs.bytes_written();
        let t0 = Instant::now();
        let e = force_latencies(hp, &mdir, "flood-s2", 1).engine;
        let took = t0.elapsed().as_secs_f64();
        let peak = status_kib(pid, "VmHWM");
        let (path, size): (String, i64) = db
            .query_row(
                "SELECT logs.path, logs.size FROM logs JOIN steps ON logs.step = steps.id
                 JOIN builds ON steps.build = builds.id
                 WHERE builds.builder = 'flood-s2' AND steps.name = 'yes' AND logs.name = 'stdio'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let stored = backing.join(path.trim_start_matches("logs/"));
        let (on_disk, digest) = stdout_digest(&stored);
        let expected = flood_digest(flood_bytes);
        report("flood_bytes_sent", flood_bytes as f64, "B", None, false);
        report(
            "flood_stdout_bytes_stored",
            on_disk as f64,
            "B",
            None,
            false,
        );
        report("flood_db_log_size", size as f64, "B", None, false);
        report(
            "flood_sha256_matches",
            if digest.as_ref() == expected.as_ref() {
                1.0
            } else {
                0.0
            },
            "",
            None,
            false,
        );
        report("flood_time", took, "s", None, true);
        report("flood_engine_time", e[0] / 1000.0, "s", None, true);
        report(
            "flood_mb_per_s",
            flood_bytes as f64 / 1e6 / took,
            "MB/s",
            None,
            false,
        );
        report(
            "flood_disk_writes_mb",
            (fs.bytes_written() - written0) as f64 / 1e6,
            "MB",
            None,
            false,
        );
        report(
            "flood_master_rss_before",
            mib(rss_before),
            "MiB",
            None,
            true,
        );
        report("flood_master_peak_rss", mib(peak), "MiB", None, true);
    }
    daemons.stop_all();
    drop(db);
    fs.unmount();
}

fn main() {
    let builds = opt("--builds", 1_000_000);
    let samples = opt("--samples", 200) as usize;
    let clients = opt("--clients", 50) as usize;
    let delay = Duration::from_millis(opt("--delay-ms", 50));
    let flood_delay = Duration::from_millis(opt("--flood-delay-ms", 2));
    // Whole lines: the slave ends an unfinished last line with a newline.
    let line = FLOOD_LINE.len() as u64 + 1;
    let flood_bytes = opt("--flood-bytes", 1_000_000_000) / line * line;
    let tmp = tempfile::tempdir().unwrap();

    println!(
        "# autobot {} stalls bench; binary {}",
        autobot::VERSION,
        *EXE
    );
    history_master(tmp.path(), builds, samples, clients);
    slow_disk_master(tmp.path(), samples / 4, delay, flood_delay, flood_bytes);
}
