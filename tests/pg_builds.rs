//! The backend-neutral queries (`db::sql`) of `db::builds`, `db::artifacts`
//! and `db::tryjobs` on both backends: the same story of a Build (its Steps,
//! logs, properties, its end, a second Build interrupted and recovered, the
//! artifacts it uploaded, a try job's patch) told on SQLite and on a real
//! PostgreSQL (started by the test), each migrated from nothing, inside a
//! transaction as the master runs them, gives the same answers, and the right
//! ones.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use std::path::Path;

use autobot::db::artifacts;
use autobot::db::builds::{self, StepFinish, StepStart, TestCounts};
use autobot::db::sql::{self, Sql, Value};
use autobot::db::tryjobs::{self, TryPatch};

/// An id a fixture row got.
fn insert(db: &mut dyn Sql, sql: &str, params: &[Value]) -> i64 {
    db.query_one(sql, params).unwrap().i64(0).unwrap()
}

fn start(number: i64, name: &str, at: f64) -> StepStart {
    StepStart {
        number,
        name: name.into(),
        description: format!("{name}ing"),
        log_path: format!("logs/b/{number}-{name}-stdio.log"),
        at,
        props: vec![("step".into(), name.into(), "Step".into())],
    }
}

/// Every query of the three modules, and what each read answers, as text to
/// compare across backends. `basedir` holds the logs `recover` measures.
fn story(db: &mut dyn Sql, basedir: &Path) -> Vec<String> {
    let mut said = Vec::new();
    // What requests.rs writes before a Build runs: a SourceStamp, a BuildSet,
    // its requests (one claimed by Build 1, one waiting) and the Build row.
    let ss = insert(
        db,
        "INSERT INTO sourcestamps(branch, revision) VALUES ('main', 'abc') RETURNING id",
        &[],
    );
    let change = insert(
        db,
        "INSERT INTO changes(who, comments, revision, branch, when_ts)
         VALUES ('ann', 'fix it', 'abc', 'main', 100) RETURNING id",
        &[],
    );
    db.execute(
        "INSERT INTO sourcestamp_changes(sourcestamp, change) VALUES (?1, ?2)",
        &[ss.into(), change.into()],
    )
    .unwrap();
    let bs = insert(
        db,
        "INSERT INTO buildsets(reason, sourcestamp, scheduler, properties, submitted_at)
         VALUES ('force', ?1, 'force', '{}', ?2) RETURNING id",
        &[ss.into(), 1.0.into()],
    );
    let request = |db: &mut dyn Sql, claimed: Option<f64>| {
        insert(
            db,
            "INSERT INTO buildrequests(buildset, builder, submitted_at, claimed_at)
             VALUES (?1, 'b', ?2, ?3) RETURNING id",
            &[bs.into(), 1.0.into(), claimed.into()],
        )
    };
    let build = |db: &mut dyn Sql, number: i64, request: i64, at: f64| {
        let id = insert(
            db,
            "INSERT INTO builds(builder, number, slave, sourcestamp, started_at, reason,
                                total_steps)
             VALUES ('b', ?1, 's1', ?2, ?3, 'force', 2) RETURNING id",
            &[number.into(), ss.into(), at.into()],
        );
        db.execute(
            "INSERT INTO build_requests(build, request) VALUES (?1, ?2)",
            &[id.into(), request.into()],
        )
        .unwrap();
        id
    };
    let r1 = request(db, Some(2.0));
    let waiting = request(db, None);
    let b1 = build(db, 1, r1, 2.0);

    // Build 1 runs: compile (with a second log), then test.
    let (compile, compile_log) =
        builds::start_step(db, b1, &start(0, "compile", 3.0), None).unwrap();
    builds::set_step_description(db, compile, "waiting for lock cpu").unwrap();
    builds::update_log(db, compile_log, 10, 1, false).unwrap();
    let warnings_log =
        builds::add_log(db, compile, "warnings", "logs/b/0-compile-warnings.log").unwrap();
    assert!(warnings_log > compile_log);
    builds::set_properties(
        db,
        b1,
        &[
            ("got_revision".into(), "abc".into(), "Git".into()),
            ("step".into(), "again".into(), "Build".into()),
            ("twice".into(), "first".into(), "Build".into()),
            ("twice".into(), "second".into(), "Step".into()),
        ],
    )
    .unwrap();
    // Many at once (more than one statement's worth), each set again.
    let many: Vec<(String, String, String)> = (0..150)
        .flat_map(|i| {
            [
                (format!("p{i}"), "old".to_string(), "Build".to_string()),
                (format!("p{i}"), format!("v{i}"), "Build".to_string()),
            ]
        })
        .collect();
    builds::set_properties(db, b1, &many).unwrap();
    said.push(format!("{:?}", builds::running(db).unwrap()));
    said.push(format!("{:?}", builds::activity(db, "b").unwrap()));
    said.push(format!(
        "{:?}",
        builds::log_file(db, basedir, "b", 1, "compile", "stdio")
            .unwrap()
            .map(|f| (
                f.path.strip_prefix(basedir).unwrap().to_owned(),
                f.size,
                f.lines,
                f.complete,
                f.deleted,
                f.step_started
            ))
    ));
    // By number too; a step named "0" would win over step number 0.
    let by_number = builds::log_file(db, basedir, "b", 1, "0", "warnings")
        .unwrap()
        .unwrap();
    assert_eq!(
        by_number.path,
        basedir.join("logs/b/0-compile-warnings.log")
    );
    assert!(builds::log_file(db, basedir, "b", 1, "compile", "nope")
        .unwrap()
        .is_none());
    let counts = TestCounts {
        passed: 5,
        failed: 1,
        skipped: 2,
        xfailed: 3,
        xpassed: 4,
    };
    let finish = |step_id, at, counts, logs| StepFinish {
        step_id,
        result: "success".into(),
        text: "done".into(),
        warnings: 2,
        counts,
        logs,
        at,
    };
    let (test, test_log) = builds::start_step(
        db,
        b1,
        &start(1, "test", 5.0),
        Some(&finish(
            compile,
            5.0,
            None,
            vec![(compile_log, 20, 2), (warnings_log, 3, 1)],
        )),
    )
    .unwrap();
    let d = builds::detail(db, "b", 1, 6.5).unwrap().unwrap();
    assert_eq!(d.changes.len(), 1);
    assert_eq!(d.changes[0].who, "ann");
    assert_eq!(d.eta, None, "no successful build to measure from");
    assert_eq!(d.properties["step"], ("test".into(), "Step".into()));
    assert_eq!(d.properties["twice"], ("second".into(), "Step".into()));
    assert_eq!(d.properties["p149"], ("v149".into(), "Build".into()));
    assert_eq!(d.properties["got_revision"], ("abc".into(), "Git".into()));
    assert_eq!(d.steps[0].logs.len(), 2);
    said.push(format!("{d:?}"));
    let done = builds::finish_build(
        db,
        b1,
        "success",
        "build successful",
        false,
        8.0,
        Some(&finish(test, 8.0, Some(counts), vec![(test_log, 7, 3)])),
    )
    .unwrap();
    assert_eq!(done.requests, vec![r1]);
    assert!(done.buildsets.is_empty(), "a request of the set waits");
    said.push(format!("{done:?}"));
    let d = builds::detail(db, "b", 1, 9.0).unwrap().unwrap();
    assert_eq!(d.build.result.as_deref(), Some("success"));
    assert_eq!(d.steps[1].counts, Some(counts));
    assert_eq!((d.steps[0].warnings, d.steps[0].counts), (2, None));
    assert_eq!(d.requests, vec![r1]);
    assert_eq!(
        (d.branch.as_deref(), d.revision.as_deref()),
        (Some("main"), Some("abc"))
    );
    said.push(format!("{d:?}"));
    assert!(builds::detail(db, "b", 99, 9.0).unwrap().is_none());

    // Build 2 takes the waiting request and dies with the master mid-test:
    // its ETA comes from Build 1's step times; recovery finishes it.
    db.execute(
        "UPDATE buildrequests SET claimed_at = ?2 WHERE id = ?1",
        &[waiting.into(), 10.0.into()],
    )
    .unwrap();
    let b2 = build(db, 2, waiting, 10.0);
    let (c2, c2_log) = builds::start_step(db, b2, &start(0, "compile", 10.0), None).unwrap();
    builds::finish_step(db, &finish(c2, 11.0, None, vec![(c2_log, 4, 1)])).unwrap();
    builds::start_step(db, b2, &start(1, "test", 11.0), None).unwrap();
    let d = builds::detail(db, "b", 2, 12.0).unwrap().unwrap();
    // test took 3 s in Build 1 and has run 1 s.
    assert_eq!(d.eta, Some(2.0));
    said.push(format!("{d:?}"));
    said.push(format!("{:?}", builds::activity(db, "b").unwrap()));
    let rel = "logs/b/1-test-stdio.log";
    std::fs::create_dir_all(basedir.join("logs/b")).unwrap();
    std::fs::write(basedir.join(rel), "one\ntwo\nthr").unwrap();
    // A third build whose first step's files were never made.
    let r3 = request(db, Some(12.0));
    let b3 = build(db, 3, r3, 12.0);
    builds::write_step_start(db, b3, &start(0, "never", 12.0)).unwrap();
    // A fourth, interrupted through no fault of its own: its request waits again.
    let r4 = request(db, Some(13.0));
    let b4 = build(db, 4, r4, 13.0);
    let done = builds::finish_build(db, b4, "exception", "slave lost", true, 14.0, None).unwrap();
    assert!(done.requests.is_empty());
    let recovered = builds::recover(
        db,
        basedir,
        builds::Whose::Every,
        "interrupted: master restarted",
        20.0,
    )
    .unwrap();
    assert_eq!(recovered, vec![("b".to_string(), 2), ("b".to_string(), 3)]);
    assert!(basedir.join("logs/b/0-never-stdio.log").is_file());
    assert!(builds::running(db).unwrap().is_empty());
    let d = builds::detail(db, "b", 2, 21.0).unwrap().unwrap();
    assert_eq!(d.build.result.as_deref(), Some("exception"));
    let test_step = &d.steps[1];
    assert_eq!(test_step.text, "interrupted: master restarted");
    assert_eq!(
        (
            test_step.logs[0].size,
            test_step.logs[0].lines,
            test_step.logs[0].complete
        ),
        (11, 2, true)
    );
    said.push(format!("{d:?}"));
    let unclaimed = db
        .query(
            "SELECT id FROM buildrequests WHERE claimed_at IS NULL AND complete = 0 ORDER BY id",
            &[],
        )
        .unwrap();
    said.push(format!("unclaimed {unclaimed:?}"));
    assert_eq!(unclaimed.len(), 3, "Build 2's, 3's and 4's");
    said.push(format!("{:?}", builds::newest(db, "b", 10, None).unwrap()));
    let page = builds::newest(db, "b", 1, Some(3)).unwrap();
    assert_eq!(builds::newest(db, "b", 10, None).unwrap().len(), 4);
    assert_eq!(page.iter().map(|b| b.number).collect::<Vec<_>>(), [2]);
    said.push(format!("{page:?}"));
    said.push(format!("{:?}", builds::activity(db, "nobody").unwrap()));

    // Artifacts: Build 1's (one uploaded twice), Build 2's, and one of a
    // Build whose row is gone.
    artifacts::add(db, b1, "b", 1, "x/a.bin", 3, "ab", 9.0).unwrap();
    artifacts::add(db, b1, "b", 1, "x/a.bin", 4, "ac", 9.5).unwrap();
    artifacts::add(db, b1, "b", 1, "X/Z.txt", 1, "ff", 9.0).unwrap();
    artifacts::add(db, b1, "b", 1, "x.txt", 1, "ee", 9.0).unwrap();
    artifacts::add(db, b2, "b", 2, "x/a.bin", 5, "cd", 19.0).unwrap();
    artifacts::add(db, 9999, "gone", 7, "z", 1, "ef", 1.0).unwrap();
    let listed = artifacts::of_build(db, "b", 1).unwrap();
    let paths: Vec<&str> = listed.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(paths, ["X/Z.txt", "x.txt", "x/a.bin"], "byte order");
    assert_eq!((listed[2].size, listed[2].sha256.as_str()), (4, "ac"));
    said.push(format!("{listed:?}"));
    said.push(format!(
        "{:?}",
        artifacts::one(db, "b", 2, "x/a.bin").unwrap()
    ));
    assert!(artifacts::one(db, "b", 2, "nope").unwrap().is_none());
    assert_eq!(
        artifacts::latest_successful(db, "b", "x/a.bin").unwrap(),
        Some(1)
    );
    assert_eq!(artifacts::latest_successful(db, "b", "nope").unwrap(), None);
    let old = artifacts::expired(db, 10.0, 10).unwrap();
    said.push(format!("{old:?}"));
    let ids: Vec<i64> = old.iter().map(|a| a.build_id).collect();
    assert_eq!(ids, vec![b1, 9999]);
    assert_eq!(artifacts::expired(db, 10.0, 1).unwrap().len(), 1);
    assert_eq!(artifacts::delete(db, &ids).unwrap(), 4);
    assert!(artifacts::of_build(db, "b", 1).unwrap().is_empty());
    assert_eq!(artifacts::of_build(db, "b", 2).unwrap().len(), 1);

    // A try job's patch, bytes as they were (a NUL, a 0xff), and an empty one.
    let patch = TryPatch {
        level: 1,
        diff: b"\x00binary\xff\n".to_vec(),
        author: "Zoë".into(),
        comment: "try it".into(),
    };
    tryjobs::add_patch(db, bs, &patch).unwrap();
    assert_eq!(tryjobs::patch_of(db, ss).unwrap(), Some(patch));
    let ss2 = insert(
        db,
        "INSERT INTO sourcestamps(revision) VALUES ('def') RETURNING id",
        &[],
    );
    let bs2 = insert(
        db,
        "INSERT INTO buildsets(reason, sourcestamp, submitted_at) VALUES ('try', ?1, ?2)
         RETURNING id",
        &[ss2.into(), 30.0.into()],
    );
    tryjobs::add_patch(db, bs2, &TryPatch::default()).unwrap();
    assert_eq!(
        tryjobs::patch_of(db, ss2).unwrap(),
        Some(TryPatch::default())
    );
    let ss3 = insert(
        db,
        "INSERT INTO sourcestamps(revision) VALUES ('ghi') RETURNING id",
        &[],
    );
    assert_eq!(tryjobs::patch_of(db, ss3).unwrap(), None);
    said
}

#[test]
fn the_builds_queries_answer_the_same_on_both_backends() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    // Each backend's story writes its log files in a directory of its own.
    let (lite_dir, pg_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut dirs = [lite_dir.path(), pg_dir.path()].into_iter();
    let (on_sqlite, on_postgres) =
        pg_common::on_both(&server, "bot", false, |db| story(db, dirs.next().unwrap()));

    assert_eq!(on_postgres.len(), on_sqlite.len());
    for (pg, lite) in on_postgres.iter().zip(&on_sqlite) {
        assert_eq!(pg, lite);
    }
    // Committed: a new connection sees it.
    let mut again = server.client("bot");
    let all = builds::newest(&mut sql::Pg(&mut again), "b", 10, None).unwrap();
    assert_eq!(all.len(), 4);
}
