//! `autobot copy-db` on the real binary: a real master builds (its history in
//! state.sqlite: BuildSets, requests, builds, steps, logs, properties), rows
//! are added to every table the run left empty (Changes, scheduler and poller
//! state, the reporters' queue with binary payloads, try patches, webhook
//! deliveries), then the history is copied into a real PostgreSQL (started by
//! the test) and compared table by table, row by row. The copy is refused while
//! the master runs and into a database that has rows; new rows after it get
//! ids past the copied ones; the master started on PostgreSQL then shows the
//! same builds and logs as it did on SQLite.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use pg_common::Pg;
use support::cli::{autobot, free_ports, get_json, wait_for};

/// Stops every daemon in a directory when the test ends, however it ends.
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = autobot().args(["stop", self.0.to_str().unwrap()]).output();
    }
}

fn output(a: &assert_cmd::assert::Assert) -> String {
    let o = a.get_output();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A value as both backends hold it, typed by the PostgreSQL column.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum V {
    Null,
    I(i64),
    F(f64),
    T(String),
    B(Vec<u8>),
}

/// Every table's columns and types on PostgreSQL (autobot's own tables).
fn pg_columns(c: &mut postgres::Client) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for r in c
        .query(
            "SELECT table_name::text, column_name::text, data_type::text
               FROM information_schema.columns
              WHERE table_schema = current_schema() AND table_name != 'autobot_schema'
              ORDER BY table_name, ordinal_position",
            &[],
        )
        .unwrap()
    {
        let (t, col, ty): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        match out.last_mut() {
            Some((last, cols)) if *last == t => cols.push((col, ty)),
            _ => out.push((t, vec![(col, ty)])),
        }
    }
    out
}

fn sorted(mut rows: Vec<Vec<V>>) -> Vec<Vec<V>> {
    rows.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    rows
}

fn sqlite_rows(s: &rusqlite::Connection, table: &str, cols: &[(String, String)]) -> Vec<Vec<V>> {
    let names: Vec<&str> = cols.iter().map(|(c, _)| c.as_str()).collect();
    let mut st = s
        .prepare(&format!("SELECT {} FROM {table}", names.join(", ")))
        .unwrap();
    let rows = st
        .query_map([], |r| {
            let mut row = Vec::new();
            for (i, (_, ty)) in cols.iter().enumerate() {
                use rusqlite::types::ValueRef;
                row.push(match (r.get_ref(i)?, ty.as_str()) {
                    (ValueRef::Null, _) => V::Null,
                    (ValueRef::Integer(n), "double precision") => V::F(n as f64),
                    (ValueRef::Integer(n), _) => V::I(n),
                    (ValueRef::Real(f), _) => V::F(f),
                    (ValueRef::Text(t), _) => V::T(String::from_utf8(t.to_vec()).unwrap()),
                    (ValueRef::Blob(b), _) => V::B(b.to_vec()),
                });
            }
            Ok(row)
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    sorted(rows)
}

fn pg_rows(c: &mut postgres::Client, table: &str, cols: &[(String, String)]) -> Vec<Vec<V>> {
    let names: Vec<&str> = cols.iter().map(|(c, _)| c.as_str()).collect();
    let rows = c
        .query(&format!("SELECT {} FROM {table}", names.join(", ")), &[])
        .unwrap()
        .iter()
        .map(|r| {
            cols.iter()
                .enumerate()
                .map(|(i, (_, ty))| {
                    let v = match ty.as_str() {
                        "bigint" => r.get::<_, Option<i64>>(i).map(V::I),
                        "double precision" => r.get::<_, Option<f64>>(i).map(V::F),
                        "text" => r.get::<_, Option<String>>(i).map(V::T),
                        "bytea" => r.get::<_, Option<Vec<u8>>>(i).map(V::B),
                        other => panic!("type {other}"),
                    };
                    v.unwrap_or(V::Null)
                })
                .collect()
        })
        .collect();
    sorted(rows)
}

/// Rows in every table a forced build does not fill, as the master would write
/// them (odd values on purpose: unicode, NULLs, binary payloads, fractions).
fn fill_the_rest(state: &Path) {
    let c = rusqlite::Connection::open(state).unwrap();
    c.execute_batch(
        "INSERT INTO changes(who, files, comments, revision, branch, when_ts, repository, category, links, project)
           VALUES ('Zoë <z@example.org>', '[\"a.c\",\"b/ü.h\"]', 'fix\nthe ✓ thing', 'abc123', 'main',
                   1700000000, 'https://example.org/r.git', 'cat', '[]', 'proj');
         INSERT INTO changes(who, when_ts) VALUES ('bob', 1700000001);
         INSERT INTO sourcestamp_changes(sourcestamp, change)
           SELECT MIN(id), (SELECT MIN(id) FROM changes) FROM sourcestamps;
         INSERT INTO scheduler_changes VALUES ('sched', (SELECT MIN(id) FROM changes), 'main', 1);
         INSERT INTO scheduler_timers VALUES ('sched', '', 1700000100.25);
         INSERT INTO scheduler_state VALUES ('sched', 'last_change', 2);
         INSERT INTO scheduler_buildsets VALUES ('dep', (SELECT MIN(id) FROM buildsets));
         INSERT INTO poller_heads VALUES ('https://example.org/r.git', 'main', 'abc123', 1700000200.5);
         INSERT INTO hook_deliveries(forge, delivery, digest, received_at)
           VALUES ('github', 'd-1', 'ff00', 1700000300.125), ('gitea', NULL, 'ee11', 1700000301);
         INSERT INTO notifications(build, kind, target, payload, meta, message_id, state, attempts,
                                   last_error, created_at, next_at, done_at)
           VALUES ((SELECT MIN(id) FROM builds), 'mail', 'dev@example.org', X'00FF0A0D80', '{}',
                   '<m@x>', 'given up', 3, 'refused', 1700000400, 1700000500, NULL),
                  (NULL, 'status', 'github abc123', X'', '{\"m\":\"POST\"}', NULL, 'pending', 0,
                   NULL, 1700000401, 1700000401, NULL);
         INSERT OR IGNORE INTO notified_builds VALUES ((SELECT MIN(id) FROM builds), 'finished');
         INSERT INTO sourcestamp_patches VALUES ((SELECT MAX(id) FROM sourcestamps), 1,
                   X'2D2D2D20610A2B2B2B20620AFF', 'zoë', 'try it');
         INSERT OR REPLACE INTO slaves(name, connected, admin) VALUES ('extra', 0, NULL);
         INSERT INTO artifacts(build_id, builder, number, path, size, sha256, created_at)
           VALUES ((SELECT MIN(id) FROM builds), 'proj', 1, 'dist/app.tar.gz', 1234,
                   'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
                   1700000600.5);
         INSERT INTO change_properties VALUES ((SELECT MIN(id) FROM changes), 'pr_number', '7'),
                  ((SELECT MIN(id) FROM changes), 'pr_title', 'Fix «it»');
         INSERT OR REPLACE INTO masters VALUES ('m-1', 0, 1700000000.5, 1700000700.25);
         INSERT INTO leases VALUES ('poller:git:/srv/repo.git', 'm-1', 1700000001.0);
         UPDATE builds SET master = 'm-1';
         UPDATE buildrequests SET claimed_by = 'm-1' WHERE claimed_at IS NOT NULL;
         UPDATE slaves SET master = 'm-1';",
    )
    .unwrap();
}

#[test]
fn a_masters_history_is_copied_row_for_row() {
    if !support::need_tools(&[("git", "apt-get install git")]) {
        return;
    }
    let Some(server) = Pg::start() else { return };
    server.create_db("history");
    server.create_db("busy");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bot");
    let master = dir.join("master");
    let [slaveport, htmlport, publicport] = free_ports();
    autobot()
        .args(["create", dir.to_str().unwrap(), "-f", "hello"])
        .args(["--slaveport", &slaveport.to_string()])
        .args(["--htmlport", &htmlport.to_string()])
        .args(["--publichtmlport", &publicport.to_string()])
        .assert()
        .success();
    let ini = master.join("master.ini");
    let repo = master.join("repos/hello");
    let text = std::fs::read_to_string(&ini)
        .unwrap()
        .replace("factories = hello\n", "factories = say\n");
    std::fs::write(
        &ini,
        format!(
            "{text}\n[say]\ntype = shell\ngit = {}\nstep.say = echo copied-log-line ✓\nstep.more = sh -c 'echo to stderr >&2'\n",
            repo.display()
        ),
    )
    .unwrap();
    autobot()
        .args(["start", dir.to_str().unwrap()])
        .assert()
        .success();
    let stop = Stop(dir.clone());
    wait_for("the slave to connect", Duration::from_secs(30), || {
        get_json(htmlport, "/api/v1/slaves")
            .and_then(|v| v.as_array()?.first().map(|s| s["connected"] == true))
            .unwrap_or(false)
    });
    for _ in 0..3 {
        autobot()
            .args(["force", "--wait", dir.to_str().unwrap(), "say-slave"])
            .timeout(Duration::from_secs(120))
            .assert()
            .success();
    }
    // What the master shows of its history, to compare after the move.
    const PAGES: &[&str] = &[
        "/api/v1/builders/say-slave/builds",
        "/api/v1/builders/say-slave/builds/2",
        "/api/v1/builders/say-slave/builds/3",
        "/api/v1/builders/say-slave/builds/3/steps/say/logs/stdio",
        "/api/v1/builders/say-slave/builds/3/steps/more/logs/stdio",
    ];
    let shown = || -> Vec<String> {
        PAGES
            .iter()
            .map(|p| {
                let (status, body) = support::cli::http(htmlport, "GET", p, "").unwrap();
                assert_eq!(status, 200, "{p}: {body}");
                body
            })
            .collect()
    };
    let before = shown();
    assert!(before[3].contains("copied-log-line"), "{}", before[3]);
    // Not while the master runs.
    let a = autobot()
        .args(["copy-db", master.to_str().unwrap(), &server.url("history")])
        .assert()
        .failure();
    let out = output(&a);
    assert!(out.contains("is running"), "{out}");
    drop(stop);

    let state = master.join(autobot::db::DB_FILE);
    fill_the_rest(&state);
    let sqlite = rusqlite::Connection::open(&state).unwrap();

    // Into a database with rows: refused, and nothing written.
    let mut busy = server.client("busy");
    autobot::db::pgmigrations::migrate(&mut busy, &server.url("busy")).unwrap();
    busy.execute("INSERT INTO slaves(name) VALUES ('someone')", &[])
        .unwrap();
    let a = autobot()
        .args(["copy-db", master.to_str().unwrap(), &server.url("busy")])
        .assert()
        .failure();
    let out = output(&a);
    assert!(out.contains("is not empty: slaves (1 rows)"), "{out}");
    let n: i64 = busy
        .query_one("SELECT count(*) FROM builds", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // Into a new database: every table, every row.
    let a = autobot()
        .args(["copy-db", master.to_str().unwrap(), &server.url("history")])
        .assert()
        .success();
    let out = output(&a);
    assert!(out.contains("in one transaction"), "{out}");
    let mut pg = server.client("history");
    let tables = pg_columns(&mut pg);
    assert!(tables.len() >= 20, "{tables:?}");
    for (t, cols) in &tables {
        let want = sqlite_rows(&sqlite, t, cols);
        assert!(!want.is_empty(), "table {t} has rows to copy");
        let got = pg_rows(&mut pg, t, cols);
        assert_eq!(got, want, "table {t}");
        assert!(
            out.contains(&format!("  {t}: {}\n", want.len())),
            "{t}: {out}"
        );
    }
    let builds: i64 = pg
        .query_one("SELECT count(*) FROM builds WHERE result = 'success'", &[])
        .unwrap()
        .get(0);
    assert_eq!(builds, 3);

    // New rows get ids past the copied ones.
    let max: i64 = pg
        .query_one("SELECT MAX(id) FROM changes", &[])
        .unwrap()
        .get(0);
    let id: i64 = pg
        .query_one(
            "INSERT INTO changes(who, when_ts) VALUES ('new', 1) RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(id, max + 1);
    let max: i64 = pg
        .query_one("SELECT MAX(id) FROM builds", &[])
        .unwrap()
        .get(0);
    let id: i64 = pg
        .query_one(
            "INSERT INTO builds(builder, number, slave, started_at) VALUES ('x', 1, 's', 1) RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(id, max + 1);

    // Again into the same database: refused now that it has rows.
    let a = autobot()
        .args(["copy-db", master.to_str().unwrap(), &server.url("history")])
        .assert()
        .failure();
    assert!(output(&a).contains("is not empty"));

    // The master started on PostgreSQL shows the same history.
    let text = std::fs::read_to_string(&ini).unwrap().replacen(
        "[:master:]\n",
        &format!("[:master:]\ndb = {}\n", server.url("history")),
        1,
    );
    std::fs::write(&ini, text).unwrap();
    std::fs::remove_file(&state).unwrap();
    autobot()
        .args(["start", dir.to_str().unwrap()])
        .assert()
        .success();
    let _stop = Stop(dir.clone());
    assert!(
        !state.exists(),
        "the master on PostgreSQL made a state.sqlite"
    );
    assert_eq!(shown(), before);
}
