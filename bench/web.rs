//! Benchmark of the issue-6 budgets: the status pages and the JSON API on a huge
//! synthetic history, a crawler's cost, and the live log's latency, measured from
//! outside against the real daemon (`autobot start`, release build).
//!
//! Run with `cargo bench --bench web` (`--builds N`, default 1,000,000, across 500
//! builders; `--requests N` per page, default 200; `--only concurrent` runs just
//! the history's set-up and the concurrent scenario). One `name value unit` line per
//! figure. Scenarios:
//! * `history` — SQLite filled with N builds (2 steps and a log each) and 100,000
//!   Changes while the master is down; then p50/p95 of the waterfall, a builder
//!   page, a build page and `GET /api/v1/builders/X/builds?limit=100` (one fresh
//!   connection per request, as a browser's first visit), and of a revalidation
//!   with `If-None-Match` (304);
//! * `concurrent` — 50 clients (`--clients N`) each loading the waterfall 20 times
//!   as fast as the master serves them (fresh connection, no ETag): p50/p95 of one
//!   load and the pages served per second (the SQLite reader pool's figure);
//! * `crawler` — 50 requests/s for 10 s over the pages, once revalidating with
//!   ETags and once fetching everything: the master's CPU time and RSS (VmRSS and
//!   the peak VmHWM) meanwhile;
//! * `issue23` (`--only issue23` runs just it) — the console, the waterfall
//!   filtered by builder and a 100 MB log's pages (first, last, middle): the
//!   first load, p50/p95 and bytes of HTML; and a search of the whole 100 MB
//!   log (`…/logs/LOG/search?q=`, JSON and HTML) for its one error line — the
//!   first search (the page index built too), then p50/p95 (budget 1 s) — and
//!   for a word on every line (stops at 1,000 matches);
//! * `sse` — a step prints a timestamp every 100 ms; a client on the log's live
//!   tail measures when each line reaches it (p50/p95/max); the same for
//!   `/events` (`step_started` of the next step).

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::history::{self, fill, percentile, timed_get, FACTORIES, SLAVES};
use common::*;

fn master_ini(sp: u16, hp: u16, pp: u16) -> String {
    let mut s = format!(
        "[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {pp}\npassword = pw\nfactories = *\n\n"
    );
    s.push_str(&history::sections());
    // The live-log scenario's builder: a timestamp every 100 ms.
    s.push_str(
        "[tick]\ntype = shell\nstep.tick = sh -c \"for i in $(seq 1 40); do date +%s.%N; sleep 0.1; done\"\nstep.after = true\n",
    );
    s
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

/// Issue 23's pages: the console (rows of revisions: the newest builds get a
/// `got_revision`, 500 builds a revision), the waterfall filtered by builder,
/// and a 100 MB log's first, last and a middle page (a line link); p50/p95
/// server-side and the bytes of HTML (budget: 15 ms p95 for waterfall and
/// console, 500 kB for any page).
fn issue23_setup(mdir: &Path) {
    let db = rusqlite::Connection::open(mdir.join("state.sqlite")).unwrap();
    db.execute_batch(
        "INSERT OR REPLACE INTO build_properties(build, name, value, source)
           SELECT id, 'got_revision', printf('%040x', id / 500), 'Git' FROM builds
           WHERE id > (SELECT max(id) FROM builds) - 20000;",
    )
    .unwrap();
    // A 100 MB log (numbered lines, a few coloured, one error) for build f7-s3 #100.
    let log = mdir.join("logs/big-100mb.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
    let mut n = 0u64;
    let mut size = 0u64;
    while size < 100 << 20 {
        n += 1;
        let line = match n % 1000 {
            0 => format!("\x1b[32mok\x1b[0m line {n} of the log, a compiler would say more here\n"),
            _ if n == 1_234_567 => format!("src/x.c:{n}: error: the one error\n"),
            _ => format!("line {n} of the log, a compiler would say more here\n"),
        };
        size += line.len() as u64;
        f.write_all(line.as_bytes()).unwrap();
    }
    f.flush().unwrap();
    db.execute(
        "UPDATE logs SET path = 'logs/big-100mb.log', size = ?1, lines = ?2
         WHERE name = 'stdio' AND step = (SELECT s.id FROM steps s JOIN builds b ON b.id = s.build
             WHERE b.builder = 'f7-s3' AND b.number = 100 AND s.name = 'test')",
        rusqlite::params![size as i64, n as i64],
    )
    .unwrap();
}

fn issue23(hp: u16, requests: usize) {
    let log = "/builders/f7-s3/builds/100/steps/test/logs/stdio";
    log_search(hp, log, requests.min(20));
    let pages = [
        ("console", "/console".to_string(), true),
        (
            "waterfall_builder_filter",
            "/waterfall?builder=f7-".to_string(),
            true,
        ),
        ("log_100mb_first_page", log.to_string(), false),
        ("log_100mb_last_page", format!("{log}?page=last"), false),
        ("log_100mb_page_300", format!("{log}?page=300"), false),
    ];
    for (name, path, budget) in &pages {
        let (p95, len) = first_p50_p95(hp, name, path, requests);
        if *budget && p95 > 15.0 {
            println!("# over budget: {name} p95 {p95:.1} ms > 15 ms");
        }
        report(&format!("{name}_bytes"), len as f64, "B", None, true);
        if len > 500_000 {
            println!("# over budget: {name} {len} B > 500 kB");
        }
    }
}

/// Searches of the 100 MB log, the first before any page of it was opened
/// (its page index is built by the first): a text on one line only (the whole
/// log read), and one on every line (the first 1,000 found).
fn log_search(hp: u16, log: &str, requests: usize) {
    let searches = [
        (
            "log_100mb_search_api",
            format!("/api/v1{log}/search?q=The%20One%20Error"),
        ),
        (
            "log_100mb_search_html",
            format!("{log}/search?q=the%20one%20error"),
        ),
        (
            "log_100mb_search_every_line",
            format!("/api/v1{log}/search?q=compiler&after=500000"),
        ),
    ];
    for (name, path) in &searches {
        let (p95, len) = first_p50_p95(hp, name, path, requests);
        if p95 > 1000.0 {
            println!("# over budget: {name} p95 {p95:.0} ms > 1 s");
        }
        report(&format!("{name}_bytes"), len as f64, "B", None, true);
    }
}

/// Load `path` once (reported as `NAME_first_ms`), then `requests` times more
/// (`NAME_p50`, `NAME_p95`); the p95 and the page's length.
fn first_p50_p95(hp: u16, name: &str, path: &str, requests: usize) -> (f64, usize) {
    let t = Instant::now();
    let (status, _, len, _) = timed_get(hp, path, None);
    assert_eq!(status, 200, "{path}");
    report(
        &format!("{name}_first_ms"),
        t.elapsed().as_secs_f64() * 1e3,
        "ms",
        None,
        true,
    );
    let mut times: Vec<f64> = (0..requests).map(|_| timed_get(hp, path, None).3).collect();
    report(
        &format!("{name}_p50"),
        percentile(&mut times, 0.5),
        "ms",
        None,
        true,
    );
    let p95 = percentile(&mut times, 0.95);
    report(&format!("{name}_p95"), p95, "ms", None, true);
    (p95, len)
}

/// `clients` threads each loading `path` `each` times back to back: (p50, p95,
/// pages per second).
fn concurrent(hp: u16, path: &str, clients: usize, each: usize) -> (f64, f64, f64) {
    let t0 = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || {
                (0..each)
                    .map(|_| {
                        let (status, _, _, ms) = timed_get(hp, &path, None);
                        assert_eq!(status, 200, "{path}");
                        ms
                    })
                    .collect::<Vec<f64>>()
            })
        })
        .collect();
    let mut times: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a client thread"))
        .collect();
    let rate = times.len() as f64 / t0.elapsed().as_secs_f64();
    (
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.95),
        rate,
    )
}

fn concurrent_waterfall(hp: u16, clients: usize) {
    let (p50, p95, rate) = concurrent(hp, "/waterfall", clients, 20);
    report(
        &format!("waterfall_{clients}_clients_p50"),
        p50,
        "ms",
        None,
        true,
    );
    report(
        &format!("waterfall_{clients}_clients_p95"),
        p95,
        "ms",
        None,
        true,
    );
    report(
        &format!("waterfall_{clients}_clients_pages_per_s"),
        rate,
        "pages/s",
        None,
        false,
    );
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
    start_slave_daemon(&sdir, sp, hp, "s0");
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
    println!("# autobot {} web bench; binary {}", autobot::VERSION, *EXE);
    let mdir = tmp.path().join("web-master");
    std::fs::create_dir_all(&mdir).unwrap();
    let (sp, hp, pp) = (free_port(), free_port(), free_port());
    std::fs::write(mdir.join("master.ini"), master_ini(sp, hp, pp)).unwrap();
    // Create the schema with the library, then fill it with the master down.
    drop(autobot::db::Db::open(&mdir.join("state.sqlite")).unwrap());
    fill(&mdir, builds);
    issue23_setup(&mdir);
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
    if std::env::args().any(|a| a == "issue23") {
        issue23(hp, requests);
        autobot(&["stop", mdir.to_str().unwrap()]);
        return;
    }
    let only_concurrent = std::env::args().any(|a| a == "concurrent");
    if !only_concurrent {
        history(hp, requests);
    }
    concurrent_waterfall(hp, opt("--clients", 50) as usize);
    if only_concurrent {
        autobot(&["stop", mdir.to_str().unwrap()]);
        return;
    }
    crawler(hp, pid, true);
    crawler(hp, pid, false);
    let sdir = sse_latency(tmp.path(), sp, hp);
    autobot(&["stop", sdir.to_str().unwrap()]);
    autobot(&["stop", mdir.to_str().unwrap()]);
}
