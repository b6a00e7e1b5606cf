//! The 1,000,000-build history the web and stall benches load: the master's
//! builders (100 factories × 5 slaves, two `true` steps each), SQLite filled with
//! Builds, Steps, logs and Changes while the master is down, and the timed GET
//! both benches measure pages with.
//!
//! Reached as `common::history` from a bench that includes `common/mod.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Instant;

use super::report;

pub const FACTORIES: usize = 100;
pub const SLAVES: usize = 5;

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// One GET on a fresh connection: (status, ETag, body length, ms).
pub fn timed_get(port: u16, path: &str, etag: Option<&str>) -> (u16, Option<String>, usize, f64) {
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

/// The `[slave:sN]` and factory sections of the history's builders.
pub fn sections() -> String {
    let mut s = String::new();
    for i in 0..SLAVES {
        s.push_str(&format!("[slave:s{i}]\n\n"));
    }
    for f in 0..FACTORIES {
        s.push_str(&format!(
            "[f{f}]\ntype = shell\ncategory = c{}\nstep.compile = true\nstep.test = true\n\n",
            f % 10
        ));
    }
    s
}

/// Fill the database of a master that is not running.
pub fn fill(mdir: &Path, builds: u64) {
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
