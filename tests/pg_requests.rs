//! The backend-neutral queries (`db::sql`) of the engine's hottest modules,
//! `db::changes`, `db::requests` (BuildSets, BuildRequests, the claim) and
//! `db::schedulers`, on both backends: one story of calls, every query of the
//! three modules at least once, on SQLite and on a real PostgreSQL (started by
//! the test), each migrated from nothing, inside a transaction as the master
//! runs them. Both must give the same answers, and the right ones (asserted on
//! the way).

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use std::collections::BTreeMap;

use autobot::db::builds::{self, StepStart};
use autobot::db::changes::{self, Delivery, DeliveryOutcome, NewChange};
use autobot::db::requests::{self, NewBuildSet, NewSourceStamp};
use autobot::db::schedulers::{self, ChangeBatch, PendingChange};
use autobot::db::sql::{self, Sql, Value};

fn change(who: &str, branch: Option<&str>, revision: &str, when: i64) -> NewChange {
    NewChange {
        who: who.into(),
        files: vec![format!("{who}.c"), "dir/ü.h".into()],
        comments: format!("fix by {who}\nsecond line"),
        revision: Some(revision.into()),
        branch: branch.map(str::to_string),
        when,
        repository: "/r".into(),
        category: "cat".into(),
        links: vec![format!("https://x/{revision}")],
        project: "p".into(),
    }
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn buildset(
    scheduler: &str,
    changes: Vec<i64>,
    branch: Option<&str>,
    revision: &str,
    builders: &[&str],
    priority: i64,
    properties: BTreeMap<String, String>,
) -> NewBuildSet {
    NewBuildSet {
        reason: format!("by {scheduler}"),
        scheduler: scheduler.into(),
        properties,
        sourcestamp: NewSourceStamp {
            branch: branch.map(str::to_string),
            revision: Some(revision.into()),
            repository: "/r".into(),
            project: "p".into(),
            changes,
        },
        builders: builders.iter().map(|b| b.to_string()).collect(),
        priority,
    }
}

/// Changes and webhook deliveries: every query of `db::changes`.
fn changes_story(db: &mut dyn Sql, said: &mut Vec<String>) -> Vec<i64> {
    let mut ids = Vec::new();
    ids.push(changes::insert_change(db, &change("ann", Some("main"), "r1", 100)).unwrap());
    ids.push(changes::insert_change(db, &change("bob", Some("main"), "r2", 200)).unwrap());
    ids.push(changes::insert_change(db, &change("cy", None, "r3", 300)).unwrap());
    assert_eq!(ids, [1, 2, 3]);
    let d = |id: Option<&str>, digest: &str| Delivery {
        forge: "github".into(),
        id: id.map(str::to_string),
        digest: digest.into(),
    };
    let pr = vec![props(&[("pr_number", "7"), ("pr_head", "old")])];
    let stored = changes::add_delivery(
        db,
        &d(Some("g1"), "aa"),
        &[change("dee", Some("main"), "r4", 400)],
        &pr,
        1000.0,
        100.0,
    )
    .unwrap();
    assert_eq!(stored, DeliveryOutcome::Stored(vec![4]));
    ids.push(4);
    for (again, by_id) in [
        (d(Some("g1"), "bb"), true),
        (d(Some("g2"), "aa"), false),
        (d(None, "aa"), false),
    ] {
        let r = changes::add_delivery(db, &again, &[], &[], 1010.5, 100.0).unwrap();
        assert_eq!(
            r,
            DeliveryOutcome::Repeat {
                received_at: 1000.0,
                by_id
            }
        );
        said.push(format!("{r:?}"));
    }
    let r = changes::add_delivery(db, &d(None, "cc"), &[], &[], 1020.0, 100.0).unwrap();
    assert_eq!(r, DeliveryOutcome::Stored(vec![]));
    assert_eq!(changes::count_deliveries(db).unwrap(), 2);
    // Past `keep`, the first is forgotten.
    let r = changes::add_delivery(db, &d(Some("zz"), "zz"), &[], &[], 1110.0, 100.0).unwrap();
    assert_eq!(r, DeliveryOutcome::Stored(vec![]));
    assert_eq!(changes::count_deliveries(db).unwrap(), 2);

    let newest = changes::newest(db, 10, None).unwrap();
    assert_eq!(
        newest.iter().map(|c| c.id).collect::<Vec<_>>(),
        [4, 3, 2, 1]
    );
    assert_eq!(newest[3].files, ["ann.c", "dir/ü.h"]);
    said.push(format!("{newest:?}"));
    let page = changes::newest(db, 2, Some(3)).unwrap();
    assert_eq!(page.iter().map(|c| c.id).collect::<Vec<_>>(), [2, 1]);
    let after = changes::after_id(db, 2).unwrap();
    assert_eq!(after.iter().map(|c| c.id).collect::<Vec<_>>(), [3, 4]);
    let p = changes::properties_of(db, &[4, 1]).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[&4]["pr_number"], "7");
    said.push(format!("{:?}", p[&4]));
    said.push(format!("{:?}", changes::one(db, 3).unwrap()));
    assert_eq!(changes::one(db, 99).unwrap(), None);
    ids
}

/// BuildSets, BuildRequests, claims (merging, the first Step, a try patch),
/// completion, unclaiming, superseded pull requests: every query of
/// `db::requests`. Returns the ids of BuildSets A, C and F.
fn requests_story(db: &mut dyn Sql, ids: &[i64], said: &mut Vec<String>) -> (i64, i64, i64) {
    let none = BTreeMap::new;
    let pr = |head: &str| props(&[("pr_number", "7"), ("pr_head", head)]);
    fn add(db: &mut dyn Sql, bs: NewBuildSet, at: f64) -> requests::SubmittedBuildSet {
        requests::insert_buildset_requests(db, &bs, at, &[], None).unwrap()
    }
    let a = add(
        db,
        buildset(
            "s",
            vec![ids[0]],
            Some("main"),
            "r1",
            &["b1", "b2"],
            0,
            none(),
        ),
        1.0,
    );
    let b = add(
        db,
        buildset("force", vec![], Some("main"), "pinned", &["b1"], 5, none()),
        2.0,
    );
    let c = add(
        db,
        buildset("s", vec![ids[1]], Some("main"), "r2", &["b1"], 0, none()),
        3.0,
    );
    let d = add(
        db,
        buildset("s", vec![ids[2]], None, "r3", &["b1"], 0, none()),
        4.0,
    );
    let e = add(
        db,
        buildset("s", vec![ids[2]], None, "r3b", &["b1"], 0, none()),
        4.5,
    );
    let p1 = add(
        db,
        buildset("pr", vec![], Some("pr"), "old", &["b3", "b4"], 0, pr("old")),
        5.0,
    );
    let p2 = add(
        db,
        buildset("pr", vec![], Some("pr"), "old2", &["b3"], 0, pr("old2")),
        5.5,
    );
    said.push(format!("{a:?} {b:?} {c:?} {d:?} {e:?} {p1:?} {p2:?}"));
    assert_eq!(a.requests, [("b1".to_string(), 1), ("b2".to_string(), 2)]);
    assert_eq!(
        requests::builders_waiting(db).unwrap(),
        ["b1", "b2", "b3", "b4"]
    );
    let waiting = requests::pending(db, "b1").unwrap();
    let order: Vec<i64> = waiting.iter().map(|r| r.id).collect();
    assert_eq!(
        order,
        [
            b.requests[0].1,
            a.requests[0].1,
            c.requests[0].1,
            d.requests[0].1,
            e.requests[0].1
        ]
    );
    said.push(format!("{waiting:?}"));
    assert_eq!(
        requests::next_request(db, "b1").unwrap(),
        Some((b.requests[0].1, b.buildset_id))
    );
    assert_eq!(requests::next_request(db, "nobody").unwrap(), None);

    // B is a try job's: its patch comes with the claim (bytes, not text).
    let b_ss = db
        .query_one(
            "SELECT sourcestamp FROM buildsets WHERE id = ?1",
            &[b.buildset_id.into()],
        )
        .unwrap()
        .i64(0)
        .unwrap();
    db.execute(
        "INSERT INTO sourcestamp_patches(sourcestamp, level, patch, author, comment)
         VALUES (?1, 1, ?2, 'ann', 'try')",
        &[b_ss.into(), Value::Blob(b"--- a\n+++ b\n\xff".to_vec())],
    )
    .unwrap();
    let forced = requests::claim(db, "b1", "s1", "m1", 2, 10.0)
        .unwrap()
        .unwrap();
    assert_eq!(forced.request_ids, [b.requests[0].1]);
    assert_eq!(forced.number, 1);
    assert_eq!(forced.patch.as_ref().unwrap().diff, b"--- a\n+++ b\n\xff");
    said.push(format!("{forced:?}"));

    // A and C carry Changes on one branch: one Build, with the first Step.
    let first: requests::FirstStep = Box::new(|c| StepStart {
        number: 0,
        name: "git".into(),
        description: format!("updating for build {}", c.number),
        log_path: format!("b1/{}/0-stdio", c.number),
        at: 11.0,
        props: vec![("buildnumber".into(), c.number.to_string(), "Build".into())],
    });
    let merged = requests::claim_starting(db, "b1", "s1", "m1", 2, 11.0, first)
        .unwrap()
        .unwrap();
    assert_eq!(merged.request_ids, [a.requests[0].1, c.requests[0].1]);
    assert_eq!(merged.revision.as_deref(), Some("r2"));
    assert!(merged.first_step.is_some());
    said.push(format!("{merged:?}"));
    let merged_changes = changes::sourcestamp_changes(db, merged.sourcestamp_id).unwrap();
    assert_eq!(
        merged_changes.iter().map(|c| c.id).collect::<Vec<_>>(),
        [ids[0], ids[1]]
    );
    // D and E: no branch on either (NULL is the same branch).
    let nulls = requests::claim(db, "b1", "s2", "m1", 2, 12.0)
        .unwrap()
        .unwrap();
    assert_eq!(nulls.request_ids, [d.requests[0].1, e.requests[0].1]);
    assert_eq!(nulls.revision.as_deref(), Some("r3b"));
    assert_eq!(nulls.branch, None);
    said.push(format!("{nulls:?}"));
    assert_eq!(
        requests::claim(db, "b1", "s1", "m1", 2, 12.5).unwrap(),
        None
    );
    let empty = requests::claim_starting(
        db,
        "b1",
        "s1",
        "m1",
        2,
        12.5,
        Box::new(|_: &requests::ClaimedBuild| -> StepStart { unreachable!("nothing claimed") }),
    );
    assert_eq!(empty.unwrap(), None);

    // Pull request 7: a Build of head `old` runs on b3.
    let running = requests::claim(db, "b3", "s3", "m1", 1, 13.0)
        .unwrap()
        .unwrap();
    assert_eq!(running.request_ids, [p1.requests[0].1]);
    let gone = requests::supersede(
        db,
        &["b3".to_string(), "b4".to_string()],
        "/r",
        "7",
        "new",
        14.0,
    )
    .unwrap();
    assert_eq!(gone.running, [("b3".to_string(), 1)]);
    assert_eq!(
        gone.cancelled.requests,
        [p1.requests[1].1, p2.requests[0].1]
    );
    assert_eq!(
        gone.cancelled.buildsets,
        [(p2.buildset_id, "cancelled".to_string())]
    );
    said.push(format!("{gone:?}"));
    let not_ours = requests::supersede(db, &["b9".to_string()], "/r", "7", "new", 14.0).unwrap();
    assert_eq!(not_ours, Default::default());

    // Results: C completes with the merged Build's failure; A waits for b2 but
    // fails already. (The Build's end: on PostgreSQL one statement.)
    let done =
        builds::finish_build(db, merged.build_id, "failure", "failed", false, 15.0, None).unwrap();
    assert_eq!(done.requests, [a.requests[0].1, c.requests[0].1]);
    assert_eq!(done.buildsets, [(c.buildset_id, "failure".to_string())]);
    assert_eq!(
        done.failed_buildsets,
        [
            (a.buildset_id, "failure".to_string()),
            (c.buildset_id, "failure".to_string())
        ]
    );
    said.push(format!("{done:?}"));
    let ok = builds::finish_build(db, forced.build_id, "success", "ok", false, 16.0, None).unwrap();
    assert_eq!(ok.buildsets, [(b.buildset_id, "success".to_string())]);
    said.push(format!("{ok:?}"));
    // The slave of D+E was lost: both wait again.
    let back = requests::unclaim(db, nulls.build_id).unwrap();
    assert_eq!(back, [d.requests[0].1, e.requests[0].1]);
    assert_eq!(requests::pending(db, "b1").unwrap().len(), 2);

    let row = requests::request_row(db, a.requests[0].1).unwrap().unwrap();
    assert!(row.complete);
    assert_eq!(row.builds, [2]);
    assert_eq!(row.result.as_deref(), Some("failure"));
    said.push(format!("{row:?}"));
    said.push(format!(
        "{:?}",
        requests::request_row(db, d.requests[0].1).unwrap()
    ));
    assert_eq!(requests::request_row(db, 999).unwrap(), None);
    let bs_a = requests::buildset(db, a.buildset_id).unwrap().unwrap();
    assert!(!bs_a.complete);
    assert_eq!(bs_a.result.as_deref(), Some("failure"));
    assert_eq!(bs_a.requests, [1, 2]);
    said.push(format!("{bs_a:?}"));
    said.push(format!(
        "{:?}",
        requests::buildset(db, c.buildset_id).unwrap()
    ));
    assert_eq!(requests::buildset(db, 999).unwrap(), None);
    assert!(requests::result_rank("cancelled") > requests::result_rank("failure"));

    // A dependent scheduler's BuildSet, following A.
    let f = add(
        db,
        buildset(
            "dep",
            vec![],
            Some("main"),
            "r2",
            &[],
            0,
            props(&[("upstream_buildset", &a.buildset_id.to_string())]),
        ),
        17.0,
    );
    assert!(f.requests.is_empty());
    (a.buildset_id, c.buildset_id, f.buildset_id)
}

/// Schedulers' and pollers' state: every query of `db::schedulers`.
fn schedulers_story(db: &mut dyn Sql, ids: &[i64], bs: (i64, i64, i64), said: &mut Vec<String>) {
    let (a, c, f) = bs;
    schedulers::set_value(db, "s", "last_run", 5).unwrap();
    schedulers::set_value(db, "s", "last_run", 6).unwrap();
    assert_eq!(schedulers::value(db, "s", "last_run").unwrap(), Some(6));
    assert_eq!(schedulers::value(db, "s", "nothing").unwrap(), None);

    let pending = |scheduler: &str, change: i64, branch: &str, important: bool| PendingChange {
        scheduler: scheduler.into(),
        change,
        branch: branch.into(),
        important,
    };
    let batch = ChangeBatch {
        pending: vec![
            pending("s", ids[0], "main", true),
            pending("s", ids[1], "main", false),
            pending("s2", ids[2], "", true),
            pending("s3", ids[3], "main", true),
        ],
        timers: vec![
            ("s".into(), "main".into(), 100.5),
            ("s2".into(), "".into(), 200.0),
            ("s3".into(), "main".into(), 300.0),
        ],
        handled: vec![("s".into(), 2), ("s2".into(), 3)],
    };
    schedulers::record_changes(db, &batch).unwrap();
    // Again: the same Changes are no new ones, a timer moves, `last_change`
    // never goes back.
    let again = ChangeBatch {
        pending: vec![pending("s", ids[0], "main", true)],
        timers: vec![("s".into(), "main".into(), 150.25)],
        handled: vec![("s".into(), 1)],
    };
    schedulers::record_changes(db, &again).unwrap();
    assert_eq!(schedulers::value(db, "s", "last_change").unwrap(), Some(2));
    let timers = schedulers::timers(db).unwrap();
    assert_eq!(
        timers,
        [
            ("s".to_string(), "main".to_string(), 150.25),
            ("s2".to_string(), "".to_string(), 200.0),
            ("s3".to_string(), "main".to_string(), 300.0)
        ]
    );
    let waiting = schedulers::pending(db, "s", "main").unwrap();
    let flags: Vec<(i64, bool)> = waiting.iter().map(|(c, i)| (c.id, *i)).collect();
    assert_eq!(flags, [(ids[0], true), (ids[1], false)]);
    said.push(format!("{waiting:?}"));

    // BuildSets of `s` carry Changes 1..3: its waiting ones are built already.
    assert_eq!(schedulers::forget_built(db, "s").unwrap(), 2);
    assert!(schedulers::pending(db, "s", "main").unwrap().is_empty());
    schedulers::consume(db, "s2", "", &[ids[2]]).unwrap();
    assert!(schedulers::pending(db, "s2", "").unwrap().is_empty());
    schedulers::forget_except(db, &["s".to_string(), "s2".to_string()]).unwrap();
    assert_eq!(schedulers::timers(db).unwrap().len(), 1);
    assert!(schedulers::pending(db, "s3", "main").unwrap().is_empty());
    schedulers::forget_except(db, &[]).unwrap();
    assert!(schedulers::timers(db).unwrap().is_empty());

    assert_eq!(schedulers::max_change_id(db).unwrap(), 4);
    assert_eq!(schedulers::max_buildset_id(db).unwrap(), f);
    assert_eq!(schedulers::newest_buildset(db, "s").unwrap(), Some(5));
    assert_eq!(schedulers::newest_buildset(db, "nobody").unwrap(), None);
    assert!(schedulers::fired(db, "dep", a).unwrap());
    assert!(!schedulers::fired(db, "dep", c).unwrap());

    // Complete BuildSets a dependent scheduler has not handled: B, C, P2.
    let todo = schedulers::unhandled(db, "dep", 0).unwrap();
    assert_eq!(todo.iter().map(|b| b.id).collect::<Vec<_>>(), [2, c, 7]);
    let of_c = &todo[1];
    assert_eq!(of_c.result, "failure");
    assert_eq!(of_c.changes, [ids[1]]);
    assert_eq!(of_c.builders, ["b1"]);
    said.push(format!("{todo:?}"));
    schedulers::mark_handled(db, "dep", c).unwrap();
    schedulers::mark_handled(db, "dep", c).unwrap();
    let todo = schedulers::unhandled(db, "dep", 2).unwrap();
    assert_eq!(todo.iter().map(|b| b.id).collect::<Vec<_>>(), [7]);

    let heads: BTreeMap<String, String> = props(&[("main", "abc"), ("dev", "def")]);
    schedulers::set_heads(db, "/r", &heads, 1.0).unwrap();
    schedulers::set_heads(db, "/r", &props(&[("main", "abd")]), 2.0).unwrap();
    let now = schedulers::heads(db, "/r").unwrap();
    assert_eq!(now, props(&[("main", "abd"), ("dev", "def")]));
    assert!(schedulers::heads(db, "/other").unwrap().is_empty());
}

fn story(db: &mut dyn Sql) -> Vec<String> {
    let mut said = Vec::new();
    let ids = changes_story(db, &mut said);
    let bs = requests_story(db, &ids, &mut said);
    schedulers_story(db, &ids, bs, &mut said);
    said
}

#[test]
fn changes_requests_and_schedulers_answer_the_same_on_both_backends() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    let (on_sqlite, on_postgres) = pg_common::on_both(&server, "bot", false, story);

    assert_eq!(on_postgres.len(), on_sqlite.len());
    for (pg, lite) in on_postgres.iter().zip(&on_sqlite) {
        assert_eq!(pg, lite);
    }
    // Committed: a new connection sees the queue as the story left it.
    let mut again = server.client("bot");
    let waiting = requests::pending(&mut sql::Pg(&mut again), "b1").unwrap();
    assert_eq!(waiting.len(), 2);
}

/// A Change stored on PostgreSQL (one statement, as `Db::add_change` runs
/// it) is announced to every master listening (`autobot_changes`, its id),
/// and ids follow the order the Changes were stored in.
#[test]
fn a_change_stored_is_announced_with_its_id() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    server.create_db("bot");
    let url = server.url("bot");
    autobot::db::pgmigrations::migrate(&mut server.client("bot"), &url).unwrap();
    let mut listener = server.client("bot");
    listener
        .batch_execute(&format!("LISTEN {}", changes::STORED))
        .unwrap();
    let mut writer = server.client("bot");
    let first =
        changes::insert_change(&mut sql::Pg(&mut writer), &change("ann", None, "r1", 1)).unwrap();
    let second =
        changes::insert_change(&mut sql::Pg(&mut writer), &change("bo", None, "r2", 2)).unwrap();
    assert!(second > first);
    use postgres::fallible_iterator::FallibleIterator;
    let mut heard = Vec::new();
    let mut notes = listener.notifications();
    let mut waiting = notes.timeout_iter(std::time::Duration::from_secs(10));
    while heard.len() < 2 {
        let n = waiting
            .next()
            .unwrap()
            .unwrap_or_else(|| panic!("only {heard:?} announced"));
        assert_eq!(n.channel(), changes::STORED);
        heard.push(n.payload().to_string());
    }
    assert_eq!(heard, [first.to_string(), second.to_string()]);
}

/// A scheduler's BuildSet drops the Changes it carries from what the
/// scheduler waits on (and its timer for the branch) in the write that
/// submits it, on both backends, and records the last Change handled when it
/// was fired from the Changes in hand; a BuildSet without them (a force)
/// drops nothing.
#[test]
fn a_schedulers_buildset_consumes_its_changes_in_the_same_write() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    let (on_sqlite, on_postgres) = pg_common::on_both(&server, "consume", false, |db| {
        let ids: Vec<i64> = ["r1", "r2", "r3"]
            .iter()
            .map(|r| changes::insert_change(db, &change("ann", Some("main"), r, 100)).unwrap())
            .collect();
        let pending = |change: i64| PendingChange {
            scheduler: "s".into(),
            change,
            branch: "main".into(),
            important: true,
        };
        schedulers::record_changes(
            db,
            &ChangeBatch {
                pending: ids.iter().map(|&c| pending(c)).collect(),
                timers: vec![("s".into(), "main".into(), 10.0)],
                handled: vec![("s".into(), ids[2])],
            },
        )
        .unwrap();
        let waiting = |db: &mut dyn Sql| -> Vec<i64> {
            schedulers::pending(db, "s", "main")
                .unwrap()
                .iter()
                .map(|(c, _)| c.id)
                .collect()
        };
        // A force: nothing consumed.
        let force = buildset(
            "force",
            vec![],
            Some("main"),
            "x",
            &["b1"],
            0,
            BTreeMap::new(),
        );
        requests::insert_buildset_requests(db, &force, 1.0, &[], None).unwrap();
        assert_eq!(waiting(db), ids);
        // The scheduler's BuildSet of the first two: they go, the third stays,
        // and the timer goes.
        let bs = buildset(
            "s",
            ids[..2].to_vec(),
            Some("main"),
            "r2",
            &["b1"],
            0,
            BTreeMap::new(),
        );
        let consume = requests::Consume {
            scheduler: "s".into(),
            branch: "main".into(),
            changes: ids[..2].to_vec(),
            handled: Vec::new(),
        };
        let submitted =
            requests::insert_buildset_requests(db, &bs, 2.0, &[], Some(&consume)).unwrap();
        assert_eq!(submitted.requests.len(), 1);
        assert_eq!(waiting(db), [ids[2]]);
        assert!(schedulers::timers(db).unwrap().is_empty());
        let last = |db: &mut dyn Sql, s: &str| schedulers::value(db, s, "last_change").unwrap();
        assert_eq!(last(db, "s"), Some(ids[2]));
        // A BuildSet fired from the Changes in hand records the last Change
        // handled by its scheduler and by another in the same write, never
        // moving one down.
        let in_hand = |handled: i64| requests::Consume {
            scheduler: "s".into(),
            branch: "main".into(),
            changes: Vec::new(),
            handled: vec![("s".into(), handled), ("other".into(), handled)],
        };
        for (handled, expected) in [(ids[2] + 5, ids[2] + 5), (ids[0], ids[2] + 5)] {
            requests::insert_buildset_requests(db, &bs, 3.0, &[], Some(&in_hand(handled))).unwrap();
            assert_eq!(last(db, "s"), Some(expected));
            assert_eq!(last(db, "other"), Some(expected));
        }
        assert_eq!(waiting(db), [ids[2]]);
        (submitted.buildset_id, waiting(db), last(db, "s"))
    });
    assert_eq!(on_sqlite, on_postgres);
}

/// A Change that fires its scheduler's BuildSet at once is stored with it
/// by one write, on both backends, but only when it gets the id expected
/// (the next after the last the schedulers handled): when another Change
/// came between, it is only stored, and nothing is fired or recorded.
#[test]
fn a_change_and_its_buildset_are_stored_together_only_under_the_id_expected() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    let (on_sqlite, on_postgres) = pg_common::on_both(&server, "firing", true, |db| {
        let count = |db: &mut dyn Sql, table: &str| {
            db.query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .unwrap()
                .i64(0)
                .unwrap()
        };
        let last = |db: &mut dyn Sql, s: &str| schedulers::value(db, s, "last_change").unwrap();
        let first = changes::insert_change(db, &change("ann", Some("main"), "r1", 100)).unwrap();
        let expected = first + 1;
        let consume = requests::Consume {
            scheduler: "s".into(),
            branch: "main".into(),
            changes: Vec::new(),
            handled: vec![("s".into(), expected), ("other".into(), expected)],
        };
        let bs = buildset(
            "s",
            vec![expected],
            Some("main"),
            "r2",
            &["b1", "b2"],
            0,
            BTreeMap::new(),
        );
        let bob = change("bob", Some("main"), "r2", 200);
        let (id, submitted) =
            requests::insert_change_firing(db, &bob, expected, &bs, 5.0, &["b1".into()], &consume)
                .unwrap();
        assert_eq!(id, expected);
        let submitted = submitted.expect("fired under the id expected");
        let builders: Vec<&str> = submitted.requests.iter().map(|(b, _)| b.as_str()).collect();
        assert_eq!(builders, ["b1", "b2"]);
        let carried: Vec<i64> = db
            .query(
                "SELECT sc.change FROM buildsets bs
                 JOIN sourcestamp_changes sc ON sc.sourcestamp = bs.sourcestamp
                 WHERE bs.id = ?1",
                &[submitted.buildset_id.into()],
            )
            .unwrap()
            .iter()
            .map(|r| r.i64(0).unwrap())
            .collect();
        assert_eq!(carried, [expected]);
        assert_eq!(changes::one(db, expected).unwrap().unwrap().who, "bob");
        assert_eq!(last(db, "s"), Some(expected));
        assert_eq!(last(db, "other"), Some(expected));
        // Expected the same id again: another Change took it. Only stored.
        let cat = change("cat", Some("main"), "r3", 300);
        let (id, none) =
            requests::insert_change_firing(db, &cat, expected, &bs, 6.0, &[], &consume).unwrap();
        assert_eq!(id, expected + 1);
        assert!(none.is_none());
        assert_eq!(changes::one(db, id).unwrap().unwrap().who, "cat");
        assert_eq!(last(db, "s"), Some(expected));
        (
            count(db, "changes"),
            count(db, "buildsets"),
            count(db, "buildrequests"),
            count(db, "sourcestamps"),
        )
    });
    assert_eq!(on_sqlite, (3, 1, 2, 1));
    assert_eq!(on_sqlite, on_postgres);
}
