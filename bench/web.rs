//! Benchmark of the issue-6 budgets: the status pages and the JSON API on a huge
//! synthetic history, a crawler's cost, and the live log's latency, measured from
//! outside against the real daemon (`autobot start`, release build).
//!
//! Run with `cargo bench --bench web` (`--builds N`, default 1,000,000, across 500
//! builders; `--requests N` per page, default 200). One `name value unit` line per
//! figure. Scenarios:
//! * `history` — SQLite filled with N builds (2 steps and a log each) and 100,000
//!   Changes while the master is down; then p50/p95 of the waterfall, a builder
//!   page, a build page and `GET /api/v1/builders/X/builds?limit=100` (one fresh
//!   connection per request, as a browser's first visit), and of a revalidation
//!   with `If-None-Match` (304);
//! * `crawler` — 50 requests/s for 10 s over the pages, once revalidating with
//!   ETags and once fetching everything: the master's CPU time and RSS (VmRSS and
//!   the peak VmHWM) meanwhile;
//! * `sse` — a step prints a timestamp every 100 ms; a client on the log's live
//!   tail measures when each line reaches it (p50/p95/max); the same for
//!   `/events` (`step_started` of the next step).

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const FACTORIES: usize = 100;
const SLAVES: usize = 5;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// One GET on a fresh connection: (status, ETag, body length, ms).
fn timed_get(port: u16, path: &str, etag: Option<&str>) -> (u16, Option<String>, usize, f64) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = etag {
        req.push_str(&format!("If-None-Match: {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let tag = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("etag").then(|| v.trim().to_string())
    });
    (status, tag, body.len(), ms)
}

fn master_ini(sp: u16, hp: u16, pp: u16) -> String {
    let mut s = format!(
        "[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {pp}\npassword = pw\nfactories = *\n\n"
    );
    for i in 0..SLAVES {
        s.push_str(&format!("[slave:s{i}]\n\n"));
    }
    for f in 0..FACTORIES {
        s.push_str(&format!(
            "[f{f}]\ntype = shell\ncategory = c{}\nstep.compile = true\nstep.test = true\n\n",
            f % 10
        ));
    }
    // The live-log scenario's builder: a timestamp every 100 ms.
    s.push_str(
        "[tick]\ntype = shell\nstep.tick = sh -c \"for i in $(seq 1 40); do date +%s.%N; sleep 0.1; done\"\nstep.after = true\n",
    );
    s
}

/// Fill the database of a master that is not running.
fn fill(mdir: &Path, builds: u64) {
    let t0 = Instant::now();
    let db = rusqlite::Connection::open(mdir.join("state.sqlite")).unwrap();
    db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .unwrap();
    let start = 1_600_000_000.0_f64;
    let n = builds as i64;
    let per = (FACTORIES * SLAVES) as i64;
    db.execute_batch("BEGIN").unwrap();
    db.execute(
        "INSERT INTO sourcestamps(id, branch, revision) VALUES (1, 'main', NULL)",
        [],
    )
    .unwrap();
    db.execute(
        &format!(
            "INSERT INTO builds(id, builder, number, slave, sourcestamp, started_at, finished_at,
                                result, reason, text, total_steps)
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {n} - 1)
             SELECT i + 1, 'f' || (i % {FACTORIES}) || '-s' || ((i / {FACTORIES}) % {SLAVES}),
                    i / {per} + 1, 's' || ((i / {FACTORIES}) % {SLAVES}), 1,
                    {start} + i * 3.0, {start} + i * 3.0 + 2.5,
                    CASE WHEN i % 17 = 0 THEN 'failure' ELSE 'success' END,
                    'scheduler', CASE WHEN i % 17 = 0 THEN 'failed test' ELSE 'build successful' END, 2
             FROM n"
        ),
        [],
    )
    .unwrap();
    for (num, name) in [(1, "compile"), (2, "test")] {
        db.execute(
            &format!(
                "INSERT INTO steps(build, number, name, started_at, finished_at, result, text)
                 SELECT id, {num}, '{name}', started_at + {num} - 1, started_at + {num},
                        CASE WHEN result = 'failure' AND {num} = 2 THEN 'failure' ELSE 'success' END,
                        '{name}' FROM builds"
            ),
            [],
        )
        .unwrap();
    }
    db.execute(
        "INSERT INTO logs(step, name, path, size, lines, complete)
         SELECT id, 'stdio', 'logs/none.log', 0, 0, 1 FROM steps",
        [],
    )
    .unwrap();
    db.execute(
        &format!(
            "INSERT INTO changes(who, comments, revision, branch, when_ts)
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99999)
             SELECT 'dev' || (i % 50) || ' <d@example.org>', 'change ' || i, printf('%040x', i),
                    'main', {start} + i * 30 FROM n"
        ),
        [],
    )
    .unwrap();
    db.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    report(
        "history_fill_time",
        t0.elapsed().as_secs_f64(),
        "s",
        None,
        true,
    );
    let size = std::fs::metadata(mdir.join("state.sqlite"))
        .map(|m| m.len())
        .unwrap_or(0);
    report(
        "history_db_size",
        size as f64 / 1048576.0,
        "MiB",
        None,
        true,
    );
}

fn history(hp: u16, requests: usize) {
    let pages = [
        ("waterfall", "/waterfall".to_string()),
        ("waterfall_category", "/waterfall?category=c3".to_string()),
        ("builder_page", "/builders/f7-s3".to_string()),
        ("build_page", "/builders/f7-s3/builds/100".to_string()),
        (
            "api_builds_limit100",
            "/api/v1/builders/f7-s3/builds?limit=100".to_string(),
        ),
        ("changes_page", "/changes".to_string()),
    ];
    for (name, path) in &pages {
        let (status, tag, len, _) = timed_get(hp, path, None);
        assert_eq!(status, 200, "{path}");
        let mut times: Vec<f64> = (0..requests).map(|_| timed_get(hp, path, None).3).collect();
        let p50 = percentile(&mut times, 0.5);
        let p95 = percentile(&mut times, 0.95);
        report(
            &format!("{name}_p50"),
            p50,
            "ms",
            (*name == "api_builds_limit100").then_some(12.0),
            true,
        );
        report(&format!("{name}_p95"), p95, "ms", None, true);
        report(&format!("{name}_bytes"), len as f64, "B", None, true);
        if let Some(tag) = tag {
            let mut times: Vec<f64> = (0..requests)
                .map(|_| {
                    let (s, _, _, ms) = timed_get(hp, path, Some(&tag));
                    assert_eq!(s, 304, "{path} revalidation");
                    ms
                })
                .collect();
            report(
                &format!("{name}_304_p50"),
                percentile(&mut times, 0.5),
                "ms",
                None,
                true,
            );
        }
    }
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after ')' start at 3 (state); utime is 14, stime 15.
    (ticks(11) + ticks(12)) / 100.0
}

fn crawler(hp: u16, pid: u32, revalidate: bool) {
    let paths: Vec<String> = (0..50)
        .map(|i| match i % 5 {
            0 => "/waterfall".to_string(),
            1 => format!("/builders/f{}-s{}", i % FACTORIES, i % SLAVES),
            2 => format!(
                "/builders/f{}-s{}/builds/{}",
                i % FACTORIES,
                i % SLAVES,
                1 + i * 7
            ),
            3 => format!(
                "/api/v1/builders/f{}-s{}/builds?limit=100",
                i % FACTORIES,
                i % SLAVES
            ),
            _ => format!("/changes?before={}", 100_000 - i * 100),
        })
        .collect();
    let mut tags: Vec<Option<String>> = paths.iter().map(|p| timed_get(hp, p, None).1).collect();
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let mut sent = 0usize;
    let mut not_modified = 0usize;
    while t0.elapsed() < Duration::from_secs(10) {
        let due = Duration::from_millis(20 * sent as u64);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        let i = sent % paths.len();
        let etag = if revalidate { tags[i].as_deref() } else { None };
        let (status, tag, _, _) = timed_get(hp, &paths[i], etag);
        if status == 304 {
            not_modified += 1;
        } else if tag.is_some() {
            tags[i] = tag;
        }
        sent += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let what = if revalidate {
        "crawler_etag"
    } else {
        "crawler_full"
    };
    report(
        &format!("{what}_requests_per_s"),
        sent as f64 / secs,
        "req/s",
        None,
        false,
    );
    report(
        &format!("{what}_304_share"),
        not_modified as f64 / sent as f64 * 100.0,
        "%",
        None,
        false,
    );
    report(
        &format!("{what}_master_cpu"),
        cpu / secs * 100.0,
        "% of a core",
        None,
        true,
    );
    report(
        &format!("{what}_master_rss"),
        mib(status_kib(pid, "VmRSS")),
        "MiB",
        None,
        true,
    );
    report(
        &format!("{what}_master_peak_rss"),
        mib(status_kib(pid, "VmHWM")),
        "MiB",
        Some(3200.0),
        true,
    );
}

/// Read one SSE `data:` payload at a time from a stream.
struct Sse {
    rd: BufReader<TcpStream>,
}

impl Sse {
    fn open(port: u16, path: &str) -> Sse {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut rd = BufReader::new(s);
        let mut line = String::new();
        loop {
            line.clear();
            rd.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        Sse { rd }
    }

    /// The next `data:` line (chunked framing lines are skipped: they never start
    /// with `data:`); `None` at `event: end` or the end of the stream.
    fn next(&mut self) -> Option<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.rd.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line.starts_with("event: end") {
                return None;
            }
            if let Some(d) = line.strip_prefix("data: ") {
                return Some(d.trim_end().to_string());
            }
        }
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn sse_latency(tmp: &Path, sp: u16, hp: u16) -> PathBuf {
    let sdir = tmp.join("web-slave");
    autobot(&[
        "create-slave",
        sdir.to_str().unwrap(),
        &format!("127.0.0.1:{sp}"),
        "s0",
        "pw",
    ]);
    autobot(&["start", sdir.to_str().unwrap()]);
    wait_until("the slave to connect", Duration::from_secs(30), || {
        connected_count(hp) >= 1
    });
    let mut events = Sse::open(hp, "/events");
    let r = autobot::cli::http::request(
        "127.0.0.1",
        hp,
        "POST",
        "/api/v1/builders/tick-s0/force",
        Some(&serde_json::json!({"reason": "sse bench"})),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.error_text());
    // Wait for the tick step to start (its log exists), then follow its tail.
    let mut number = 0;
    while let Some(d) = events.next() {
        let v: serde_json::Value = serde_json::from_str(&d).unwrap_or_default();
        if v["event"] == "step_started" && v["builder"] == "tick-s0" && v["name"] == "tick" {
            number = v["number"].as_i64().unwrap_or(1);
            break;
        }
    }
    let t_connect = now_secs();
    let mut tail = Sse::open(
        hp,
        &format!("/builders/tick-s0/builds/{number}/steps/tick/logs/stdio/tail?offset=0"),
    );
    let mut lat = Vec::new();
    let mut partial = String::new();
    while let Some(d) = tail.next() {
        let now = now_secs();
        let v: serde_json::Value = serde_json::from_str(&d).unwrap_or_default();
        partial.push_str(v["t"].as_str().unwrap_or(""));
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            if let Ok(t) = line.trim().parse::<f64>() {
                if t > t_connect {
                    lat.push((now - t) * 1000.0);
                }
            }
        }
    }
    // `/events`: the next step's start, against the tick step's last line.
    let t_end = now_secs();
    let mut step_event_ms = f64::NAN;
    while let Some(d) = events.next() {
        let v: serde_json::Value = serde_json::from_str(&d).unwrap_or_default();
        if v["event"] == "step_started" && v["builder"] == "tick-s0" && v["name"] == "after" {
            step_event_ms = (now_secs() - t_end) * 1000.0;
            break;
        }
    }
    report(
        "sse_log_lines_measured",
        lat.len() as f64,
        "lines",
        None,
        false,
    );
    if !lat.is_empty() {
        report(
            "sse_log_line_latency_p50",
            percentile(&mut lat, 0.5),
            "ms",
            None,
            true,
        );
        report(
            "sse_log_line_latency_p95",
            percentile(&mut lat, 0.95),
            "ms",
            None,
            true,
        );
        report(
            "sse_log_line_latency_max",
            percentile(&mut lat, 1.0),
            "ms",
            None,
            true,
        );
    }
    report(
        "sse_events_next_step_after_tail_end",
        step_event_ms,
        "ms",
        None,
        true,
    );
    sdir
}

fn main() {
    let builds = opt("--builds", 1_000_000);
    let requests = opt("--requests", 200) as usize;
    let tmp = tempfile::tempdir().unwrap();
    println!("# autobot {} web bench; binary {EXE}", autobot::VERSION);
    let mdir = tmp.path().join("web-master");
    std::fs::create_dir_all(&mdir).unwrap();
    let (sp, hp, pp) = (free_port(), free_port(), free_port());
    std::fs::write(mdir.join("master.ini"), master_ini(sp, hp, pp)).unwrap();
    // Create the schema with the library, then fill it with the master down.
    drop(autobot::db::Db::open(&mdir.join("state.sqlite")).unwrap());
    fill(&mdir, builds);
    autobot(&["start", mdir.to_str().unwrap()]);
    wait_until("the master to answer", Duration::from_secs(120), || {
        get(hp, "/api/v1/builders").is_some()
    });
    let pid = pid_of(&mdir);
    report(
        "master_rss_idle",
        mib(status_kib(pid, "VmRSS")),
        "MiB",
        None,
        true,
    );
    history(hp, requests);
    crawler(hp, pid, true);
    crawler(hp, pid, false);
    let sdir = sse_latency(tmp.path(), sp, hp);
    autobot(&["stop", sdir.to_str().unwrap()]);
    autobot(&["stop", mdir.to_str().unwrap()]);
}
