//! The backend-neutral queries (`db::sql`) of `db::retention` on both
//! backends: the same story of a retention pass (logs walked, compressed and
//! deleted, Builds and Changes walked and deleted with what hangs off them) on
//! SQLite and on a real PostgreSQL (started by the test), each migrated from
//! nothing, gives the same answers, and the right ones.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use autobot::db::retention;
use autobot::db::sql::{Sql, Value};

/// A small history: Changes 1-3 (3 on nothing), Builds 1 (finished, its
/// request, BuildSet and SourceStamp used by nothing else, a try patch, a
/// property, its notifications sent), 2 (running) and 3 (finished, the newest of
/// builder `c`), each with a Step and a log.
fn fill(db: &mut dyn Sql) {
    let plain = [
        "INSERT INTO changes(id, who, when_ts) VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)",
        "INSERT INTO sourcestamps(id, branch) VALUES (1, 'main'), (2, 'main'), (3, 'main')",
        "INSERT INTO sourcestamp_changes(sourcestamp, change) VALUES (1, 1), (2, 2)",
        "INSERT INTO buildsets(id, reason, sourcestamp, submitted_at, complete)
             VALUES (1, 'r', 1, 1, 1), (2, 'r', 2, 2, 0), (3, 'r', 3, 3, 1)",
        "INSERT INTO buildrequests(id, buildset, builder, submitted_at, complete)
             VALUES (1, 1, 'b', 1, 1), (2, 2, 'b', 2, 0), (3, 3, 'c', 3, 1)",
        "INSERT INTO builds(id, builder, number, slave, sourcestamp, started_at, finished_at, result)
             VALUES (1, 'b', 1, 's', 1, 1, 2, 'success'), (2, 'b', 2, 's', 2, 3, NULL, NULL),
                    (3, 'c', 1, 's', 3, 4, 5, 'failure')",
        "INSERT INTO build_requests(build, request) VALUES (1, 1), (2, 2), (3, 3)",
        "INSERT INTO steps(id, build, number, name) VALUES (1, 1, 1, 'x'), (2, 2, 1, 'x'), (3, 3, 1, 'x')",
        "INSERT INTO logs(id, step, name, path, complete) VALUES (1, 1, 'stdio', 'logs/b/1.log', 1),
             (2, 2, 'stdio', 'logs/b/2.log', 0), (3, 3, 'stdio', 'logs/c/1.log', 1)",
        "INSERT INTO build_properties(build, name, value, source) VALUES (1, 'p', 'v', 's')",
        "INSERT INTO notified_builds(build, stage) VALUES (1, 'finished')",
        "UPDATE reporter_state SET value = 0 WHERE name = 'horizon'",
    ];
    for q in plain {
        db.execute(q, &[]).unwrap();
    }
    db.execute(
        "INSERT INTO sourcestamp_patches(sourcestamp, level, patch) VALUES (1, 1, ?1)",
        &[Value::Blob(vec![0])],
    )
    .unwrap();
    db.execute(
        "INSERT INTO notifications(build, kind, target, payload, meta, state, created_at, next_at)
         VALUES (1, 'mail', 't', ?1, '{}', 'sent', 1, 1), (3, 'mail', 't', ?1, '{}', 'pending', 1, 1)",
        &[Value::Blob(vec![0])],
    )
    .unwrap();
}

/// How many rows each table the deletes touch holds.
fn counts(db: &mut dyn Sql) -> Vec<i64> {
    [
        "builds",
        "steps",
        "logs",
        "build_properties",
        "build_requests",
        "buildrequests",
        "buildsets",
        "sourcestamps",
        "sourcestamp_changes",
        "sourcestamp_patches",
        "notifications",
        "notified_builds",
        "changes",
    ]
    .iter()
    .map(|t| {
        db.query_one(&format!("SELECT COUNT(*) FROM {t}"), &[])
            .unwrap()
            .i64(0)
            .unwrap()
    })
    .collect()
}

/// Every function of `db::retention`, and what each answers, as text to
/// compare across backends; the answers are checked here too.
fn story(db: &mut dyn Sql) -> Vec<String> {
    let mut said = Vec::new();
    fill(db);
    // Times: a running Build keeps no end time.
    retention::set_build_times(db, "b", 1, 100.5, 101.25).unwrap();
    retention::set_build_times(db, "b", 2, 102.0, 103.0).unwrap();
    retention::set_build_times(db, "nobody", 1, 1.0, 2.0).unwrap();
    let kept = retention::kept_logs_after(db, (0, 0), 10).unwrap();
    assert_eq!(kept.len(), 3);
    assert_eq!(
        (kept[0].build_started, kept[0].build_finished),
        (100.5, Some(101.25))
    );
    assert_eq!(kept[1].build_finished, None);
    said.push(format!("{kept:?}"));
    said.push(format!(
        "{:?}",
        retention::kept_logs_after(db, (1, 1), 1).unwrap()
    ));
    // Compression: complete logs of Builds finished before the time given.
    let todo = retention::logs_to_compress(db, 0, 102.0, 10).unwrap();
    assert_eq!(
        todo,
        vec![
            (1, "logs/b/1.log".to_string()),
            (3, "logs/c/1.log".to_string())
        ]
    );
    said.push(format!("{todo:?}"));
    said.push(format!(
        "{:?}",
        retention::logs_to_compress(db, 1, 102.0, 10).unwrap()
    ));
    said.push(format!(
        "{:?}",
        retention::logs_to_compress(db, 0, 3.0, 10).unwrap()
    ));
    retention::mark_logs_compressed(db, &[1]).unwrap();
    said.push(format!(
        "{:?}",
        retention::log_stored(db, "b", 1, 1, "stdio").unwrap()
    ));
    assert_eq!(
        retention::log_stored(db, "b", 1, 1, "stdio").unwrap(),
        Some("zstd".into())
    );
    assert_eq!(retention::log_stored(db, "b", 1, 1, "none").unwrap(), None);
    // logHorizon: log 3 deleted, its row kept; compressing it is then moot.
    retention::mark_logs_deleted(db, &[3]).unwrap();
    retention::mark_logs_compressed(db, &[3]).unwrap();
    said.push(format!(
        "{:?}",
        retention::log_stored(db, "c", 1, 1, "stdio").unwrap()
    ));
    let kept = retention::kept_logs_after(db, (0, 0), 10).unwrap();
    assert_eq!(kept.iter().map(|l| l.id).collect::<Vec<_>>(), vec![1, 2]);
    // buildHorizon: the walk, then the deletes.
    let old = retention::old_builds_after(db, 0, 10).unwrap();
    let flags: Vec<_> = old
        .iter()
        .map(|b| (b.id, b.reporters_done, b.newest, b.finished_at.is_some()))
        .collect();
    assert_eq!(
        flags,
        vec![
            (1, true, false, true),
            (2, false, true, false),
            (3, false, true, true)
        ]
    );
    said.push(format!("{old:?}"));
    said.push(format!(
        "{:?}",
        retention::old_builds_after(db, 2, 10).unwrap()
    ));
    // Past the reporters' horizon every Build is decided, but for pending
    // notifications.
    db.execute(
        "UPDATE reporter_state SET value = ?1 WHERE name = 'horizon'",
        &[Value::Int(3)],
    )
    .unwrap();
    let old = retention::old_builds_after(db, 0, 10).unwrap();
    assert_eq!(
        old.iter().map(|b| b.reporters_done).collect::<Vec<_>>(),
        vec![true, true, false]
    );
    said.push(format!("{old:?}"));
    let removed = retention::delete_builds(db, &[1, 2]).unwrap();
    assert_eq!(
        (removed.builds, removed.requests, removed.buildsets),
        (1, 1, 1)
    );
    assert_eq!(removed.log_paths, vec!["logs/b/1.log".to_string()]);
    said.push(format!("{removed:?}"));
    said.push(format!("{:?}", counts(db)));
    assert_eq!(counts(db), vec![2, 2, 2, 0, 2, 2, 2, 2, 1, 0, 1, 0, 3]);
    // Build 3's log is deleted already: no file to remove.
    db.execute("DELETE FROM notifications WHERE build = 3", &[])
        .unwrap();
    let removed = retention::delete_builds(db, &[3]).unwrap();
    assert_eq!(
        (removed.builds, removed.requests, removed.buildsets),
        (1, 1, 1)
    );
    assert!(removed.log_paths.is_empty());
    said.push(format!("{removed:?}"));
    said.push(format!("{:?}", counts(db)));
    // changeHorizon: Change 2 is the running Build's.
    let changes = retention::old_changes_after(db, 0, 10).unwrap();
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.id, c.when_ts, c.referenced))
            .collect::<Vec<_>>(),
        vec![(1, 10, false), (2, 20, true), (3, 30, false)]
    );
    said.push(format!("{changes:?}"));
    said.push(format!(
        "{:?}",
        retention::old_changes_after(db, 1, 1).unwrap()
    ));
    assert_eq!(retention::delete_changes(db, &[1, 2, 3]).unwrap(), 2);
    said.push(format!("{:?}", counts(db)));
    said
}

#[test]
fn the_retention_queries_answer_the_same_on_both_backends() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    let (on_sqlite, on_postgres) = pg_common::on_both(&server, "bot", true, story);

    assert_eq!(on_postgres, on_sqlite);
}
