//! Retention on a real master (in-process, real SQLite, real log files, a real
//! autobot slave): builds made old through the database lose their log files
//! (`logHorizon`) or leave the history (`buildHorizon`) while recent ones stay,
//! and a running build is never touched; the pages and the API answer 404 for
//! a gone build and "deleted" for a gone log; `logCompression = zstd` logs read
//! back byte-exact through the API, the plain-text page, the HTML page and the
//! mail's log tail, the live tail's endpoint and a backup restored; a 100 MB
//! compressed log is streamed by a master process without its peak memory
//! growing by more than a few chunks; and `checkconfig` shows the keys or names
//! a bad value with file:line.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::time::Duration;

use autobot::engine::ForceRequest;
use engine_common::{master_ini, wait_until, EngineMaster};
use support::http;

const DAY: f64 = 86_400.0;

fn factories(gate: &std::path::Path) -> String {
    format!(
        "[say]\ntype = shell\nstep.say = sh -c 'seq 1 30000; echo said-$0' build\n\n\
         [gate]\ntype = shell\nstep.wait = sh -c 'echo waiting; while [ ! -e {} ]; do sleep 0.05; done'\n",
        gate.display()
    )
}

fn force() -> ForceRequest {
    ForceRequest {
        reason: "retention test".into(),
        ..Default::default()
    }
}

async fn get(port: u16, path: &str) -> support::HttpReply {
    http(port, "GET", path, &[], b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_builds_lose_their_logs_or_leave_the_history_and_logs_are_compressed() {
    support::keep_sqlite("backup and restore carry state.sqlite");
    let tmp = tempfile::tempdir().unwrap();
    let gate = tmp.path().join("gate");
    let m = EngineMaster::start(
        &master_ini(&factories(&gate), "max_builds = 2\n"),
        Duration::from_secs(30),
    )
    .await;
    let _slave = m.slave().await;
    let db = m.master.db().clone();
    let port = m.master.htmlport();

    // The running build comes first: every walk meets it before the others.
    m.force("gate-s1", force()).await;
    wait_until("the gate build to run", || async {
        db.log_file("gate-s1", 1, "wait", "stdio")
            .await
            .unwrap()
            .is_some_and(|f| std::fs::read(&f.path).is_ok_and(|b| b.ends_with(b"waiting\n")))
    })
    .await;
    for n in 1..=3 {
        let id = m.force("say-s1", force()).await;
        assert_eq!(m.wait_request(id).await.result.as_deref(), Some("success"));
        assert_eq!(m.build("say-s1", n).await.build.number, n);
    }
    let original = m.log_text("say-s1", 3, "say").await;
    assert!(original.contains("30000\nsaid-build\n"), "{original}");
    let mut paths = Vec::new();
    for n in 1..=3 {
        let f = db
            .log_file("say-s1", n, "say", "stdio")
            .await
            .unwrap()
            .unwrap();
        paths.push(f.path);
    }
    let [path1, path2, path3] = <[_; 3]>::try_from(paths).unwrap();
    assert!(autobot::logstore::times_path(&path1).exists());
    let gate_log = m
        .master
        .db()
        .log_file("gate-s1", 1, "wait", "stdio")
        .await
        .unwrap()
        .unwrap()
        .path;

    // Build 1 ten days old, build 2 six, build 3 an hour; the running build
    // started ten days ago.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (n, age) in [(1, 10.0 * DAY), (2, 6.0 * DAY), (3, 3600.0)] {
        db.set_build_times("say-s1", n, now - age - 5.0, now - age)
            .await
            .unwrap();
    }
    db.set_build_times("gate-s1", 1, now - 10.0 * DAY, 0.0)
        .await
        .unwrap();
    // Each finished build is decided by the reporters before it may go.
    wait_until("the reporters to decide the builds", || async {
        db.old_builds_after(0, 10)
            .await
            .unwrap()
            .iter()
            .filter(|b| b.reporters_done)
            .count()
            == 3
    })
    .await;

    // Two Changes nothing refers to: one committed 40 days ago, one now.
    let change = |when: f64, rev: &str| autobot::db::changes::NewChange {
        who: "dev <d@example.org>".into(),
        revision: Some(rev.into()),
        branch: Some("main".into()),
        // A repository no factory builds: no scheduler keeps the Change.
        repository: "https://example.org/elsewhere.git".into(),
        when: when as i64,
        ..Default::default()
    };
    let added = m
        .master
        .changes()
        .add(vec![change(now - 40.0 * DAY, "old"), change(now, "new")])
        .await
        .unwrap();
    let (old_change, new_change) = (added[0].id, added[1].id);

    // Retention switched on by a reconfig, which starts a pass at once.
    let ini = master_ini(
        &factories(&gate),
        "max_builds = 2\nlogHorizon = 5\nbuildHorizon = 8\nchangeHorizon = 30\nlogCompression = zstd\n",
    );
    support::write_master_ini(m.dir.path(), ini);
    m.master.reconfig().await.unwrap();
    support::wait_log(&["retention: deleted 1 log file(s) and 1 build(s)"]).await;

    // changeHorizon: the old Change went, the recent one stays.
    let left: Vec<i64> = db
        .old_changes_after(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert!(
        !left.contains(&old_change) && left.contains(&new_change),
        "{left:?} {:?}",
        db.old_changes_after(0, 100).await.unwrap()
    );
    assert!(support::log_has(&["retention:", "1 change(s)"]));

    // Build 1 left the history: 404 on its page and in the API, files gone.
    assert_eq!(
        get(port, "/api/v1/builders/say-s1/builds/1").await.status,
        404
    );
    assert_eq!(get(port, "/builders/say-s1/builds/1").await.status, 404);
    let r = get(port, "/builders/say-s1/builds/1/steps/say/logs/stdio").await;
    assert_eq!(r.status, 404);
    assert!(!path1.exists() && !autobot::logstore::compressed_path(&path1).exists());
    assert!(!autobot::logstore::times_path(&path1).exists());
    // Build 2 stays; its log reads as deleted by logHorizon, its file gone.
    assert_eq!(
        get(port, "/api/v1/builders/say-s1/builds/2").await.status,
        200
    );
    let page = get(port, "/builders/say-s1/builds/2").await;
    assert_eq!(page.status, 200);
    let r = get(port, "/builders/say-s1/builds/2/steps/say/logs/stdio").await;
    assert_eq!(r.status, 410, "{}", r.body);
    assert!(r.body.contains("deleted by logHorizon"), "{}", r.body);
    let r = get(port, "/builders/say-s1/builds/2/steps/say/logs/stdio/text").await;
    assert_eq!(r.status, 410);
    let r = get(
        port,
        "/api/v1/builders/say-s1/builds/2/steps/say/logs/stdio",
    )
    .await;
    assert_eq!(r.status, 410);
    assert!(r.body.contains("deleted by logHorizon"), "{}", r.body);
    let r = get(port, "/builders/say-s1/builds/2/steps/say/logs/stdio/tail").await;
    assert_eq!(r.status, 410);
    assert!(!path2.exists() && !autobot::logstore::compressed_path(&path2).exists());
    assert!(!autobot::logstore::times_path(&path2).exists());
    assert_eq!(
        db.log_stored("say-s1", 2, 1, "stdio")
            .await
            .unwrap()
            .as_deref(),
        Some("deleted")
    );

    // Build 3 is recent: kept, its log compressed and read back byte-exact.
    wait_until("build 3's log to be compressed", || async {
        db.log_stored("say-s1", 3, 1, "stdio")
            .await
            .unwrap()
            .as_deref()
            == Some("zstd")
    })
    .await;
    assert!(!path3.exists(), "the plain file stays");
    let zst = autobot::logstore::compressed_path(&path3);
    assert!(zst.metadata().unwrap().len() < original.len() as u64 / 3);
    let r = get(
        port,
        "/api/v1/builders/say-s1/builds/3/steps/say/logs/stdio",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(original.len().to_string().as_str())
    );
    assert!(r.body == original, "the API's bytes differ");
    let r = get(
        port,
        "/builders/say-s1/builds/3/steps/say/logs/stdio/text?download",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body == original, "the download's bytes differ");
    // The page is read in pages of 2,000 lines: the first, a middle one and
    // the last, each decompressed from where it starts.
    let r = get(port, "/builders/say-s1/builds/3/steps/say/logs/stdio").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("></a>1000\n</span>"),
        "page 1 lacks line 1000"
    );
    let r = get(
        port,
        "/builders/say-s1/builds/3/steps/say/logs/stdio?page=8",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("></a>15000\n</span>"),
        "page 8 lacks its lines"
    );
    let r = get(
        port,
        "/builders/say-s1/builds/3/steps/say/logs/stdio?page=last",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("></a>30000\n</span>") && r.body.contains("said-build"),
        "the last page lacks the log's end"
    );
    // The live tail's endpoint reads a compressed log from any offset.
    let from = original.len() - 200;
    let r = get(
        port,
        &format!("/builders/say-s1/builds/3/steps/say/logs/stdio/tail?offset={from}"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("said-build"), "{}", r.body);
    assert!(r.body.contains("event: end"), "{}", r.body);
    let tail = autobot::reporters::mail::log_tail(&path3, 5).unwrap();
    let lines: Vec<&str> = original.trim_end_matches('\n').split('\n').collect();
    assert_eq!(tail, lines[lines.len() - 5..].join("\n"));
    assert!(tail.contains("said-build"), "{tail}");

    // backup and restore carry the compressed log as it is.
    let archive = tmp.path().join("backup.tar");
    assert_cmd::Command::new(engine_common::autobot_bin())
        .args([
            "backup",
            m.dir.path().to_str().unwrap(),
            archive.to_str().unwrap(),
        ])
        .assert()
        .success();
    let restored = tmp.path().join("restored");
    assert_cmd::Command::new(engine_common::autobot_bin())
        .args([
            "restore",
            archive.to_str().unwrap(),
            restored.to_str().unwrap(),
        ])
        .assert()
        .success();
    let base = std::fs::canonicalize(m.dir.path()).unwrap();
    let again = restored.join(path3.strip_prefix(&base).unwrap());
    let (mut r, len) = autobot::logstore::open_log(&again).unwrap();
    let mut back = String::new();
    std::io::Read::read_to_string(&mut r, &mut back).unwrap();
    assert_eq!(len, original.len() as u64);
    assert!(back == original, "the restored log differs");

    // The running build was never touched, and finishes normally.
    assert_eq!(
        db.log_stored("gate-s1", 1, 1, "stdio")
            .await
            .unwrap()
            .as_deref(),
        Some("plain")
    );
    assert!(gate_log.exists());
    std::fs::write(&gate, "").unwrap();
    wait_until("the gate build to finish", || async {
        db.build("gate-s1", 1)
            .await
            .unwrap()
            .is_some_and(|b| b.build.result.is_some())
    })
    .await;
    assert_eq!(
        m.build("gate-s1", 1).await.build.result.as_deref(),
        Some("success")
    );
    assert!(std::fs::read_to_string(&gate_log)
        .unwrap()
        .contains("waiting"));

    // The database is consistent.
    let problems: Vec<String> = db
        .read_sql(|c| {
            // PostgreSQL checks every foreign key as it writes.
            if c.dialect() == autobot::db::sql::Dialect::Postgres {
                return Ok(Vec::new());
            }
            c.query("PRAGMA foreign_key_check", &[])?
                .iter()
                .map(|r| r.string(0))
                .collect()
        })
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

/// `n` Builds finished in 2020 on builders `a` and `b`, written straight into
/// the database, and decided by the reporters.
fn old_history(path: &std::path::Path, n: i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(&format!(
        "BEGIN;
         INSERT INTO sourcestamps(id, branch, revision) VALUES (1, 'main', NULL);
         INSERT INTO builds(id, builder, number, slave, sourcestamp, started_at, finished_at,
                            result, reason, text, total_steps)
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {n} - 1)
         SELECT i + 1, CASE i % 2 WHEN 0 THEN 'a' ELSE 'b' END, i / 2 + 1, 's', 1,
                1600000000.0 + i * 3, 1600000000.0 + i * 3 + 2, 'success', 'test', 'ok', 0
         FROM n;
         UPDATE reporter_state SET value = {n} WHERE name = 'horizon';
         COMMIT;"
    ))
    .unwrap();
}

/// While the master works, a pass yields: nothing deleted before
/// `BUSY_GAP` has passed, then at most one batch per `BUSY_GAP` (it still
/// gets on); once the master is quiet it runs at full speed and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_yields_to_work_and_runs_at_full_speed_once_the_master_is_quiet() {
    use autobot::retention::{BUILDS_PER_WRITE, BUSY_GAP, QUIET};
    const BUILDS: i64 = 1002;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.sqlite");
    let db = autobot::db::Db::open(&path).unwrap();
    old_history(&path, BUILDS);
    let deleted = || async {
        let left: i64 = db
            .read(|c| c.query_row("SELECT COUNT(*) FROM builds", [], |r| r.get(0)))
            .await
            .unwrap();
        BUILDS - left
    };

    // The master works: a touch every 20 ms, as a busy master's events and
    // requests come.
    let work: &'static autobot::activity::Work =
        Box::leak(Box::new(autobot::activity::Work::new()));
    work.touch();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let retention = autobot::config::Retention {
        build_horizon: Some(1.0),
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let pass = tokio::spawn({
        let (db, dir) = (db.clone(), tmp.path().to_owned());
        async move { autobot::retention::pass_beside(&db, &dir, &retention, &rx, work).await }
    });
    // Until it has deleted some (it gets on while the master works) and for
    // at least 2.5 gaps: at most one batch (a read or a write) a gap.
    let per_write = BUILDS_PER_WRITE as i64;
    loop {
        work.touch();
        let n = deleted().await;
        let batches = (t0.elapsed().as_secs_f64() / BUSY_GAP.as_secs_f64()).floor() as i64;
        assert!(
            n <= per_write * batches,
            "{n} builds deleted in {:?} while the master worked",
            t0.elapsed()
        );
        if n > 0 && t0.elapsed() > BUSY_GAP * 5 / 2 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "nothing deleted in a minute while the master worked"
        );
        assert!(
            !pass.is_finished(),
            "the pass ended while the master worked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy_rate = deleted().await as f64 / t0.elapsed().as_secs_f64();

    // Quiet: the rest goes at full speed, far faster than one write a gap.
    let t1 = std::time::Instant::now();
    let stats = tokio::time::timeout(Duration::from_secs(60), pass)
        .await
        .expect("the pass to end once the master is quiet")
        .unwrap()
        .unwrap();
    let quiet = t1.elapsed();
    // Each builder's newest Build stays.
    assert_eq!(deleted().await, BUILDS - 2);
    let rest = (BUILDS - 2) as f64 - busy_rate * t1.duration_since(t0).as_secs_f64();
    assert!(
        quiet.as_secs_f64() < QUIET.as_secs_f64() + rest / busy_rate / 4.0,
        "the quiet part took {quiet:?} (busy: {busy_rate:.1} builds/s)"
    );
    assert!(stats.yielded >= BUSY_GAP, "{stats:?}");
}

#[test]
fn checkconfig_shows_the_retention_keys_and_names_a_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("master.ini");
    std::fs::write(
        &ini,
        master_ini(
            "",
            "logHorizon = 14\nbuildHorizon = 365\nlogCompression = zstd\n",
        ),
    )
    .unwrap();
    let out = assert_cmd::Command::new(engine_common::autobot_bin())
        .args(["checkconfig", dir.path().to_str().unwrap()])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        text.contains(
            "retention: logHorizon 14 days, buildHorizon 365 days, changeHorizon none (kept), logCompression zstd"
        ),
        "{text}"
    );
    std::fs::write(&ini, master_ini("", "buildHorizon = forever\n")).unwrap();
    let out = assert_cmd::Command::new(engine_common::autobot_bin())
        .args(["checkconfig", dir.path().to_str().unwrap()])
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("master.ini:6"), "{err}");
    assert!(
        err.contains("buildHorizon") || err.contains("buildhorizon"),
        "{err}"
    );
    assert!(err.contains("forever"), "{err}");
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

/// GET `path` from a master and count the body's bytes without keeping them:
/// (status line, bytes, FNV-1a hash of the bytes).
fn download(port: u16, path: &str) -> (String, u64, u64) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut head, mut body, mut hash) = (Vec::new(), None::<u64>, 0xcbf29ce484222325u64);
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let mut data = &buf[..n];
        if body.is_none() {
            head.extend_from_slice(data);
            let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let rest = head.split_off(i + 4);
            body = Some(0);
            for b in &rest {
                hash = (hash ^ *b as u64).wrapping_mul(0x100000001b3);
            }
            *body.as_mut().unwrap() += rest.len() as u64;
            data = &[];
        }
        for b in data {
            hash = (hash ^ *b as u64).wrapping_mul(0x100000001b3);
        }
        *body.as_mut().unwrap() += data.len() as u64;
    }
    let status = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    (status, body.unwrap_or(0), hash)
}

/// A 100 MB log stored compressed, served by a real master process: the API,
/// the download and the HTML page stream it decompressed, byte-exact, and the
/// master's peak resident memory grows by a few chunks, not by the log.
#[tokio::test]
async fn a_big_compressed_log_is_streamed_not_held() {
    const SIZE: u64 = 100_000_000;
    const PEAK_GROWTH_MIB: u64 = 40;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("master");
    std::fs::create_dir_all(&dir).unwrap();
    let (sp, hp) = (engine_common::free_port(), engine_common::free_port());
    let ini = master_ini(
        "[big]\ntype = shell\nstep.x = true\n",
        "logCompression = zstd\n",
    )
    .replace("slaveport = 9010", &format!("slaveport = {sp}"))
    .replace("htmlport = 8010", &format!("htmlport = {hp}"));
    support::write_master_ini(&dir, ini);
    // A finished build whose log is 100 MB of numbered lines, compressed.
    let rel = "logs/big-s1/1-001-x-stdio.log";
    let plain = dir.join(rel);
    std::fs::create_dir_all(plain.parent().unwrap()).unwrap();
    let mut expected_hash = 0xcbf29ce484222325u64;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&plain).unwrap());
        let mut written = 0u64;
        let mut i = 0u64;
        while written < SIZE {
            let line = format!("{i:09} the quick brown fox jumps over the lazy dog\n");
            let line = &line.as_bytes()[..line.len().min((SIZE - written) as usize)];
            for b in line {
                expected_hash = (expected_hash ^ *b as u64).wrapping_mul(0x100000001b3);
            }
            f.write_all(line).unwrap();
            written += line.len() as u64;
            i += 1;
        }
    }
    autobot::logstore::compress_log(&plain).unwrap();
    autobot::logstore::remove_plain(&plain).unwrap();
    let db = support::master_db(&dir.join(autobot::db::DB_FILE));
    db.write_sql(move |c| {
        for statement in [
            "INSERT INTO builds(id, builder, number, slave, started_at, finished_at, result)
                 VALUES (1, 'big-s1', 1, 's1', 1, 2, 'success')"
                .to_string(),
            "INSERT INTO steps(id, build, number, name, started_at, finished_at, result)
                 VALUES (1, 1, 1, 'x', 1, 2, 'success')"
                .to_string(),
            format!(
                "INSERT INTO logs(step, name, path, size, lines, complete, stored)
                 VALUES (1, 'stdio', '{rel}', {SIZE}, 0, 1, 'zstd')"
            ),
            "INSERT INTO reporter_state(name, value) VALUES ('horizon', 1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value"
                .to_string(),
        ] {
            c.execute(&statement, &[])?;
        }
        Ok(())
    })
    .await
    .unwrap();
    drop(db);

    let master = engine_common::spawn_run(&dir);
    let pid = master.0.id();
    wait_until("the master to answer", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", hp))
            .await
            .is_ok()
    })
    .await;
    let api = "/api/v1/builders/big-s1/builds/1/steps/x/logs/stdio";
    let (status, _, _) = tokio::task::spawn_blocking(move || download(hp, api))
        .await
        .unwrap();
    assert!(status.contains("200"), "{status}");
    let before = vm_hwm_kib(pid);
    for path in [
        api.to_string(),
        "/builders/big-s1/builds/1/steps/x/logs/stdio/text?download".to_string(),
    ] {
        let (status, len, hash) = tokio::task::spawn_blocking(move || download(hp, &path))
            .await
            .unwrap();
        assert!(status.contains("200"), "{status}");
        assert_eq!(len, SIZE);
        assert_eq!(hash, expected_hash, "the bytes differ");
    }
    // The HTML page shows a page of lines (the first, and the last, which the
    // index of a scan through the decompressed log finds), never the whole.
    for page in ["", "?page=last"] {
        let (status, len, _) = tokio::task::spawn_blocking(move || {
            download(
                hp,
                &format!("/builders/big-s1/builds/1/steps/x/logs/stdio{page}"),
            )
        })
        .await
        .unwrap();
        assert!(status.contains("200"), "{status}");
        assert!(len > 100_000 && len < 500_000, "page {page:?}: {len} bytes");
    }
    let after = vm_hwm_kib(pid);
    let growth = after.saturating_sub(before) / 1024;
    eprintln!(
        "compressed 100 MB log: peak RSS {} MiB before, {} MiB after the downloads",
        before / 1024,
        after / 1024
    );
    assert!(
        growth <= PEAK_GROWTH_MIB,
        "the master's peak RSS grew by {growth} MiB serving a compressed log"
    );
    assert!(plain.metadata().is_err(), "the plain log came back");
}
