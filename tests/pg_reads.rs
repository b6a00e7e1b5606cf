//! The backend-neutral queries (`db::sql`) of what the pages, the JSON API and
//! the reporters read and queue (`db::listing`, `db::webview`, `db::status`,
//! `db::notifications`) on both backends: one history of Changes, BuildSets,
//! requests, builds, steps and logs is written into SQLite and into a real
//! PostgreSQL (started by the test), each migrated from nothing; every query
//! of those modules then gives the same answers on both, and the right ones.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use std::collections::{BTreeMap, BTreeSet};

use autobot::db::listing::{self, Caps, LIST_CAPS, PAGE_BYTES};
use autobot::db::notifications::{self as notif, Attempt, NewNotification};
use autobot::db::slaves::{self, SlaveInfoRow};
use autobot::db::sql::{Dialect, Sql, Value};
use autobot::db::{status, webview};

/// A row inserted; its id.
fn ins(db: &mut dyn Sql, sql: &str, params: &[Value]) -> i64 {
    db.query_one(&format!("{sql} RETURNING id"), params)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .i64(0)
        .unwrap()
}

fn run(db: &mut dyn Sql, sql: &str, params: &[Value]) {
    db.execute(sql, params)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// What the story wrote, by name.
struct Ids {
    c1: i64,
    c2: i64,
    c3: i64,
    b: [i64; 5],
}

fn change(db: &mut dyn Sql, who: &str, files: &str, comments: &str, branch: &str, at: i64) -> i64 {
    ins(
        db,
        "INSERT INTO changes(who, files, comments, revision, branch, when_ts, repository,
                             category, links, project)
         VALUES (?1, ?2, ?3, NULL, ?4, ?5, 'https://example.org/r.git', '', '[]', 'p')",
        &[
            who.into(),
            files.into(),
            comments.into(),
            branch.into(),
            at.into(),
        ],
    )
}

#[allow(clippy::too_many_arguments)]
fn build(
    db: &mut dyn Sql,
    builder: &str,
    number: i64,
    ss: Option<i64>,
    started: f64,
    finished: Option<f64>,
    result: Option<&str>,
    reason: &str,
) -> i64 {
    ins(
        db,
        "INSERT INTO builds(builder, number, slave, sourcestamp, started_at, finished_at,
                            result, reason, text, total_steps)
         VALUES (?1, ?2, 's1', ?3, ?4, ?5, ?6, ?7, 'built', 2)",
        &[
            builder.into(),
            number.into(),
            ss.into(),
            started.into(),
            finished.into(),
            result.into(),
            reason.into(),
        ],
    )
}

/// A history: three Changes on two SourceStamps, five builds of two builders
/// (one running, one interrupted and requeued, one cancelled without a
/// SourceStamp), their steps and logs, requests waiting.
fn history(db: &mut dyn Sql) -> Ids {
    slaves::connected(db, "s1", "127.0.0.1:5", SlaveInfoRow::default(), 100, "m").unwrap();
    let c1 = change(
        db,
        "Ann <ann@example.org>",
        r#"["a.c","b.c"]"#,
        "fix it\nbody",
        "main",
        10,
    );
    let many: Vec<String> = (0..50).map(|i| format!("src/f{i:04}.c")).collect();
    let long = format!("{}é{}", "x".repeat(63), "y".repeat(300));
    let c2 = change(
        db,
        "bob",
        &serde_json::to_string(&many).unwrap(),
        &long,
        "dev",
        11,
    );
    let c3 = change(db, "ANN Other", "[]", "third", "dev", 12);
    let ss1 = ins(
        db,
        "INSERT INTO sourcestamps(branch, revision, repository, project)
         VALUES ('main', 'r1', 'https://example.org/r.git', 'p')",
        &[],
    );
    let ss2 = ins(
        db,
        "INSERT INTO sourcestamps(branch, revision, repository, project)
         VALUES ('dev', NULL, 'https://example.org/r.git', 'p')",
        &[],
    );
    for (ss, c) in [(ss1, c1), (ss2, c2), (ss2, c3)] {
        run(
            db,
            "INSERT INTO sourcestamp_changes(sourcestamp, change) VALUES (?1, ?2)",
            &[ss.into(), c.into()],
        );
    }
    run(
        db,
        "INSERT INTO scheduler_changes(scheduler, change, branch, important)
         VALUES ('sched', ?1, 'main', 1)",
        &[c1.into()],
    );
    let buildset = |db: &mut dyn Sql, reason: &str, ss: i64| {
        ins(
            db,
            "INSERT INTO buildsets(reason, sourcestamp, scheduler, properties, submitted_at)
             VALUES (?1, ?2, 'sched', '{}', 1.5)",
            &[reason.into(), ss.into()],
        )
    };
    let bs1 = buildset(db, "first", ss1);
    let bs2 = buildset(db, "second", ss2);
    let bs3 = buildset(db, "waiting", ss1);
    #[allow(clippy::type_complexity)]
    let request = |db: &mut dyn Sql,
                   bs: i64,
                   builder: &str,
                   priority: i64,
                   claimed: Option<f64>,
                   complete: i64,
                   at: Option<f64>| {
        ins(
            db,
            "INSERT INTO buildrequests(buildset, builder, priority, submitted_at, claimed_at,
                                       complete, complete_at)
             VALUES (?1, ?2, ?3, 2.5, ?4, ?5, ?6)",
            &[
                bs.into(),
                builder.into(),
                priority.into(),
                claimed.into(),
                complete.into(),
                at.into(),
            ],
        )
    };
    let r1 = request(db, bs1, "b1", 0, Some(3.0), 1, Some(20.0));
    let r2 = request(db, bs2, "b1", 0, Some(30.0), 1, Some(40.0));
    // Interrupted by its build's end at 50: back in the queue.
    let r3 = request(db, bs2, "b1", 0, None, 0, None);
    let r4 = request(db, bs1, "b2", 0, Some(55.0), 0, None);
    request(db, bs3, "b2", 5, None, 0, None);
    request(db, bs3, "b2", 0, None, 0, None);
    let long_reason = format!("forced: {}", "r".repeat(100));
    let b1 = build(
        db,
        "b1",
        1,
        Some(ss1),
        3.0,
        Some(20.0),
        Some("success"),
        "first",
    );
    let b2 = build(
        db,
        "b1",
        2,
        Some(ss2),
        30.0,
        Some(40.0),
        Some("failure"),
        &long_reason,
    );
    let b3 = build(
        db,
        "b1",
        3,
        Some(ss2),
        45.0,
        Some(50.0),
        Some("exception"),
        "x",
    );
    let b4 = build(db, "b2", 1, Some(ss1), 55.0, None, None, "running");
    let b5 = build(db, "b1", 4, None, 56.0, Some(60.0), Some("cancelled"), "y");
    for (b, r) in [(b1, r1), (b2, r2), (b3, r3), (b4, r4)] {
        run(
            db,
            "INSERT INTO build_requests(build, request) VALUES (?1, ?2)",
            &[b.into(), r.into()],
        );
    }
    for (b, v) in [(b5, "g5"), (b2, "")] {
        run(
            db,
            "INSERT INTO build_properties(build, name, value, source)
             VALUES (?1, 'got_revision', ?2, 'Git')",
            &[b.into(), v.into()],
        );
    }
    let step = |db: &mut dyn Sql, b: i64, n: i64, name: &str, warnings: i64, tests: Option<i64>| {
        ins(
            db,
            "INSERT INTO steps(build, number, name, started_at, finished_at, result, text,
                               description, warnings, tests_passed, tests_failed,
                               tests_skipped, tests_xfailed, tests_xpassed)
             VALUES (?1, ?2, ?3, 4.0, 5.0, 'success', 'ok', 'd', ?4, ?5, ?6, 0, 0, NULL)",
            &[
                b.into(),
                n.into(),
                name.into(),
                warnings.into(),
                tests.into(),
                tests.map(|_| 1i64).into(),
            ],
        )
    };
    let s11 = step(db, b1, 1, "compile", 2, None);
    step(db, b1, 2, "test", 1, Some(5));
    step(db, b2, 1, "compile", 0, None);
    step(db, b2, 2, "test", 0, Some(3));
    // Logs written out of name order: listed by name on both backends.
    for (name, size, complete) in [("warnings", 10, 1), ("stdio", 200, 0)] {
        ins(
            db,
            "INSERT INTO logs(step, name, path, size, lines, complete)
             VALUES (?1, ?2, 'p', ?3, 3, ?4)",
            &[
                s11.into(),
                name.into(),
                Value::Int(size),
                Value::Int(complete),
            ],
        );
    }
    Ids {
        c1,
        c2,
        c3,
        b: [b1, b2, b3, b4, b5],
    }
}

/// Every query of the four modules, and what each answers, as text to compare
/// across backends (maps and sets sorted).
fn story(db: &mut dyn Sql) -> Vec<String> {
    let mut said = Vec::new();
    let ids = history(db);
    let [b1, b2, b3, b4, b5] = ids.b;

    // db::status
    let version = status::database_version(db).unwrap();
    let backend = match db.dialect() {
        Dialect::Sqlite => "SQLite 3.",
        Dialect::Postgres => "PostgreSQL ",
    };
    assert!(version.starts_with(backend), "{version}");
    let st = status::builder_status(
        db,
        &[
            ("b2".into(), "s2".into()),
            ("b1".into(), "s1".into()),
            ("b3".into(), "s1".into()),
        ],
    )
    .unwrap();
    let states: Vec<_> = st
        .iter()
        .map(|s| {
            (
                s.activity.name.as_str(),
                s.state.as_str(),
                s.activity.pending,
                s.activity.running.len(),
                s.activity.last_build.as_ref().map(|b| b.number),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("b2", "building", 2, 1, None),
            ("b1", "idle", 1, 0, Some(4)),
            ("b3", "idle", 0, 0, None)
        ]
    );
    said.push(format!("{st:?}"));
    assert_eq!(status::slaves_fingerprint(db).unwrap(), "1.1");
    let (few, older) =
        status::waterfall(db, &["b1".into(), "b2".into()], None, i64::MAX, 10).unwrap();
    assert_eq!(
        few.iter().map(|b| b.id).collect::<Vec<_>>(),
        [b5, b4, b3, b2, b1]
    );
    assert_eq!(older, None);
    let logs: Vec<_> = few[4].steps[0].logs.iter().map(|l| &l.name).collect();
    assert_eq!(logs, ["stdio", "warnings"]);
    assert_eq!(few[4].steps[1].counts.unwrap().passed, 5);
    said.push(format!("{few:?}"));
    let (main, _) =
        status::waterfall(db, &["b1".into(), "b2".into()], Some("main"), i64::MAX, 10).unwrap();
    assert_eq!(main.iter().map(|b| b.id).collect::<Vec<_>>(), [b4, b1]);
    // Many builders: the walk down the ids; a page of two says where the next starts.
    let mut many: Vec<String> = (0..15).map(|i| format!("x{i}")).collect();
    many.extend(["b1".to_string(), "b2".to_string()]);
    let (walk, older) = status::waterfall(db, &many, None, i64::MAX, 2).unwrap();
    assert_eq!(walk.iter().map(|b| b.id).collect::<Vec<_>>(), [b5, b4]);
    assert_eq!(older, Some(b4));
    said.push(format!("{walk:?}"));
    let (walk, _) = status::waterfall(db, &many, Some("dev"), b4, 10).unwrap();
    assert_eq!(walk.iter().map(|b| b.id).collect::<Vec<_>>(), [b3, b2]);
    let queued = status::queued_requests(db, "b2", 10).unwrap();
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0].reason, "waiting");
    said.push(format!("{queued:?}"));
    assert_eq!(
        status::last_result(db, "b1").unwrap(),
        Some(("cancelled".to_string(), 4))
    );
    assert_eq!(status::last_result(db, "nobody").unwrap(), None);

    // db::listing
    let page = listing::changes_page(db, 10, None, LIST_CAPS, PAGE_BYTES).unwrap();
    assert!(!page.more);
    assert_eq!(
        page.rows.iter().map(|c| c.id).collect::<Vec<_>>(),
        [ids.c3, ids.c2, ids.c1]
    );
    assert!(page.rows.iter().all(|c| c.truncated.is_empty()));
    assert_eq!(page.rows[1].files.len(), 50);
    said.push(format!("{:?}", page.rows));
    let small = Caps {
        text: 64,
        list: 100,
    };
    let cut = listing::change_capped(db, ids.c2, small).unwrap().unwrap();
    // 100 bytes of names: nine of eleven bytes.
    assert_eq!((cut.files.len(), cut.files_total), (9, 50));
    assert_eq!(cut.comments, "x".repeat(63), "cut before the split 'é'");
    assert_eq!(cut.truncated, ["files", "comments"]);
    said.push(format!("{cut:?}"));
    let one = listing::change_capped(db, ids.c1, small).unwrap().unwrap();
    assert_eq!(one.files, ["a.c", "b.c"]);
    assert!(one.truncated.is_empty());
    assert!(listing::change_capped(db, 999, small).unwrap().is_none());
    let page = listing::changes_page(db, 1, Some(ids.c3), small, PAGE_BYTES).unwrap();
    assert!(page.more);
    assert_eq!(page.rows[0].id, ids.c2);
    let page = listing::changes_page(db, 10, None, LIST_CAPS, 300).unwrap();
    assert_eq!(
        (page.rows.len(), page.more),
        (1, true),
        "ends at the budget"
    );
    let builds = listing::builds_page(db, "b1", 10, None, small, PAGE_BYTES).unwrap();
    assert_eq!(
        builds.rows.iter().map(|b| b.row.number).collect::<Vec<_>>(),
        [4, 3, 2, 1]
    );
    assert_eq!(builds.rows[2].truncated, ["reason"]);
    assert_eq!(builds.rows[2].row.reason.len(), 64);
    said.push(format!("{:?}", builds.rows));
    let builds = listing::builds_page(db, "b1", 2, Some(4), LIST_CAPS, PAGE_BYTES).unwrap();
    assert_eq!(
        builds.rows.iter().map(|b| b.row.number).collect::<Vec<_>>(),
        [3, 2]
    );
    assert!(builds.more);

    // db::webview
    let first = webview::first_builds_of_changes(
        db,
        &[ids.c1, ids.c2, ids.c3, 999],
        &["b1".into(), "b2".into()],
    )
    .unwrap();
    let first: BTreeMap<_, _> = first.into_iter().collect();
    assert_eq!(
        first,
        BTreeMap::from([(ids.c1, b1), (ids.c2, b2), (ids.c3, b2)])
    );
    let waiting: BTreeSet<_> = webview::waiting_changes(db, &[ids.c1, ids.c2, ids.c3])
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(waiting, BTreeSet::from([ids.c1, ids.c2, ids.c3]));
    let waiting = webview::waiting_changes(db, &[ids.c2]).unwrap();
    assert_eq!(waiting.len(), 1);
    let sources: BTreeMap<_, _> = webview::build_sources(db, &ids.b)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(sources[&b1].revision.as_deref(), Some("r1"));
    assert_eq!(sources[&b1].change_line.as_deref(), Some("fix it"));
    assert_eq!(sources[&b2].revision, None, "an empty got_revision is none");
    assert_eq!(sources[&b2].change_who.as_deref(), Some("ANN Other"));
    assert_eq!(sources[&b5].revision.as_deref(), Some("g5"));
    assert_eq!(sources[&b5].repository, "");
    said.push(format!("{sources:?}"));
    assert_eq!(webview::buildset_of_build(db, "b1", 2).unwrap(), Some(2));
    assert_eq!(webview::buildset_of_build(db, "b1", 4).unwrap(), None);
    let counts: BTreeMap<_, _> = webview::build_counts(db, "b1", &[1, 2, 3])
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(counts.len(), 2);
    assert_eq!(counts[&1].warnings, 3);
    assert_eq!(counts[&1].tests.unwrap().passed, 5);
    assert_eq!(counts[&2].tests.unwrap().failed, 1);
    said.push(format!("{counts:?}"));
    let console =
        webview::console_builds(db, &["b1".into(), "b2".into()], None, i64::MAX, 10).unwrap();
    assert_eq!(
        console.iter().map(|b| b.id).collect::<Vec<_>>(),
        [b5, b4, b1],
        "builds with a revision"
    );
    said.push(format!("{console:?}"));
    let console = webview::console_builds(db, &["b1".into()], Some("main"), b5, 10).unwrap();
    assert_eq!(console.iter().map(|b| b.id).collect::<Vec<_>>(), [b1]);
    let mine = webview::author_builds(db, "ann", 10).unwrap();
    assert_eq!(
        mine.iter().map(|b| b.id).collect::<Vec<_>>(),
        [b4, b3, b2, b1],
        "case-insensitive, each build once"
    );
    said.push(format!("{mine:?}"));

    // db::notifications
    assert_eq!(
        notif::reporter_horizon(db).unwrap(),
        0,
        "set by migration 8"
    );
    let finished = notif::builds_to_announce(db, 0, "finished", 10).unwrap();
    assert_eq!(
        finished
            .iter()
            .map(|b| (b.id, b.requeued))
            .collect::<Vec<_>>(),
        [(b1, false), (b2, false), (b3, true), (b5, false)]
    );
    said.push(format!("{finished:?}"));
    let started = notif::builds_to_announce(db, 0, "started", 10).unwrap();
    assert_eq!(started.iter().map(|b| b.id).collect::<Vec<_>>(), [b4]);
    assert_eq!(
        notif::previous_result(db, "b1", 4).unwrap().as_deref(),
        Some("failure"),
        "the requeued build does not count"
    );
    assert_eq!(notif::previous_result(db, "b1", 1).unwrap(), None);
    let item = |kind: &str, target: &str| NewNotification {
        kind: kind.into(),
        target: target.into(),
        payload: vec![0, 1, 255],
        meta: "{}".into(),
        message_id: Some(format!("<{kind}.{target}@example.org>")),
    };
    let queued = notif::enqueue_notifications(
        db,
        Some(b1),
        Some("finished"),
        &[item("mail", "ann"), item("status", "forge")],
        100.0,
    )
    .unwrap();
    assert_eq!(queued.len(), 2);
    assert!(queued[1] > queued[0]);
    let again = notif::enqueue_notifications(
        db,
        Some(b1),
        Some("finished"),
        &[item("mail", "ann")],
        101.0,
    )
    .unwrap();
    assert!(again.is_empty(), "decided once");
    notif::enqueue_notifications(db, Some(b2), Some("started"), &[item("status", "f")], 102.0)
        .unwrap();
    notif::enqueue_notifications(
        db,
        Some(b2),
        Some("finished"),
        &[item("status", "f")],
        103.0,
    )
    .unwrap();
    let missing =
        notif::enqueue_notifications(db, None, None, &[item("mail", "admin")], 104.0).unwrap();
    assert_eq!(missing.len(), 1);
    assert_eq!(notif::next_reporter_horizon(db, 0).unwrap(), b2);
    notif::store_reporter_horizon(db, b2).unwrap();
    assert_eq!(notif::reporter_horizon(db).unwrap(), b2);
    let due = notif::due_notifications(db, "mail", 200.0, 10).unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].payload, [0, 1, 255]);
    said.push(format!("{due:?}"));
    assert_eq!(
        notif::due_notifications(db, "mail", 100.5, 1)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        notif::next_notification_due(db, "status").unwrap(),
        Some(100.0)
    );
    assert_eq!(notif::next_notification_due(db, "sms").unwrap(), None);
    notif::notification_attempt(db, queued[0], Attempt::Sent, 110.0).unwrap();
    notif::notification_attempt(
        db,
        queued[1],
        Attempt::Retry {
            error: "503".into(),
            next_at: 500.0,
        },
        111.0,
    )
    .unwrap();
    notif::notification_attempt(
        db,
        missing[0],
        Attempt::GiveUp {
            error: "550 no such user".into(),
        },
        112.0,
    )
    .unwrap();
    notif::notifications_due_now(db, 120.0).unwrap();
    assert_eq!(
        notif::next_notification_due(db, "status").unwrap(),
        Some(103.0)
    );
    let of_b1 = notif::build_notifications(db, "b1", 1).unwrap();
    assert_eq!(
        of_b1
            .iter()
            .map(|n| (n.state.as_str(), n.attempts, n.next_at))
            .collect::<Vec<_>>(),
        [("sent", 1, None), ("retrying", 1, Some(120.0))]
    );
    said.push(format!("{of_b1:?}"));
    let of_b2 = notif::build_notifications(db, "b1", 2).unwrap();
    assert_eq!(of_b2[0].state, "given up", "superseded by the end's status");
    said.push(format!("{of_b2:?}"));
    let of_slaves = notif::slave_notifications(db, 10).unwrap();
    assert_eq!(of_slaves.len(), 1);
    assert_eq!(of_slaves[0].last_error.as_deref(), Some("550 no such user"));
    said.push(format!("{of_slaves:?}"));

    // Pages of more rows than one batch.
    for i in 0..140 {
        change(db, "c", "[]", "many", "main", 100 + i);
    }
    let all = listing::changes_page(db, 1000, None, LIST_CAPS, usize::MAX).unwrap();
    assert_eq!((all.rows.len(), all.more), (143, false));
    assert!(all.rows.windows(2).all(|w| w[0].id > w[1].id));
    let part = listing::changes_page(db, 135, None, LIST_CAPS, usize::MAX).unwrap();
    assert_eq!((part.rows.len(), part.more), (135, true));
    said
}

#[test]
fn the_read_queries_answer_the_same_on_both_backends() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    let (on_sqlite, on_postgres) = pg_common::on_both(&server, "bot", false, story);

    for (i, (pg, lite)) in on_postgres.iter().zip(&on_sqlite).enumerate() {
        assert_eq!(pg, lite, "answer {i} differs");
    }
    assert_eq!(on_postgres.len(), on_sqlite.len());
}
