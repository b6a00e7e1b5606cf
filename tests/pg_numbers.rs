//! Two masters racing on one real PostgreSQL (started by the test). Build
//! numbers (`builder_numbers`, migration 15): claiming one builder's
//! BuildRequests at once they give every Build its own number, increasing on
//! each master; and on both backends a number is never given again after the
//! newest Builds were deleted (as retention may delete them). BuildSets: when
//! the last two requests of one BuildSet finish on two masters at once, the
//! BuildSet is still completed, once.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use std::collections::BTreeSet;

use autobot::db::requests::{NewBuildSet, NewSourceStamp};
use autobot::db::{pg, pgmigrations, Db};

fn forced(builder: &str) -> NewBuildSet {
    NewBuildSet {
        reason: "forced".into(),
        scheduler: "force".into(),
        sourcestamp: NewSourceStamp {
            repository: "/r".into(),
            ..Default::default()
        },
        builders: vec![builder.into()],
        ..Default::default()
    }
}

/// Claim `builder`'s requests on `db` until none waits; (request id, Build
/// number) of each claim, in claim order.
async fn claim_all(db: Db, builder: &str, slave: &str) -> Vec<(i64, i64)> {
    let mut got = Vec::new();
    while let Some(c) = db.claim_request(builder, slave, 1, 1.0).await.unwrap() {
        assert_eq!(c.request_ids.len(), 1, "forced requests never merge");
        got.push((c.request_ids[0], c.number));
    }
    got
}

/// Delete the Builds of `builder` numbered above `keep` (what retention's
/// deletion leaves: no rows of theirs).
async fn delete_newest(db: &Db, builder: &str, keep: i64) {
    let builder = builder.to_string();
    db.write_sql(move |db| {
        let p = [builder.as_str().into(), keep.into()];
        let of = "(SELECT id FROM builds WHERE builder = ?1 AND number > ?2)";
        db.execute(
            &format!("DELETE FROM build_requests WHERE build IN {of}"),
            &p,
        )?;
        db.execute(
            &format!("DELETE FROM logs WHERE step IN (SELECT id FROM steps WHERE build IN {of})"),
            &p,
        )?;
        db.execute(&format!("DELETE FROM steps WHERE build IN {of}"), &p)?;
        db.execute("DELETE FROM builds WHERE builder = ?1 AND number > ?2", &p)
    })
    .await
    .unwrap();
}

/// After Builds 4 and 5 of 5 are deleted, the next Build is 6.
async fn never_given_twice(db: &Db) {
    for _ in 0..5 {
        db.add_buildset(forced("once"), 1.0).await.unwrap();
    }
    let first: Vec<i64> = claim_all(db.clone(), "once", "s1")
        .await
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(first, [1, 2, 3, 4, 5]);
    delete_newest(db, "once", 3).await;
    db.add_buildset(forced("once"), 2.0).await.unwrap();
    let next = claim_all(db.clone(), "once", "s1").await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].1, 6, "numbers 4 and 5 were given already");
}

/// A server with the database `bot` migrated, a way to open it as the master
/// of a name (off any runtime: the client connects on a runtime of its own),
/// and the directory those masters use.
fn migrated() -> Option<(pg_common::Pg, impl Fn(&str) -> Db, tempfile::TempDir)> {
    let server = pg_common::Pg::start()?;
    server.create_db("bot");
    let url = server.url("bot");
    pgmigrations::migrate(&mut server.client("bot"), &url).unwrap();
    let parsed = pg::parse_url(&url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let master = move |name: &str| {
        Db::open_postgres(&parsed, None, &path)
            .unwrap()
            .for_master(name, 30)
    };
    Some((server, master, dir))
}

#[test]
fn a_number_is_never_given_twice_on_sqlite() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join(autobot::db::DB_FILE)).unwrap();
    rt.block_on(never_given_twice(&db));
}

#[test]
fn two_masters_racing_on_one_builder_number_each_build_once() {
    let Some((_server, master, _dir)) = migrated() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = (master("a"), master("b"));
    rt.block_on(async {
        const N: usize = 120;
        let mut ids = BTreeSet::new();
        for i in 0..N {
            let via = if i % 2 == 0 { &a } else { &b };
            let s = via.add_buildset(forced("race"), i as f64).await.unwrap();
            ids.insert(s.requests[0].1);
        }
        let (on_a, on_b) = tokio::join!(
            tokio::spawn(claim_all(a.clone(), "race", "s1")),
            tokio::spawn(claim_all(b.clone(), "race", "s2")),
        );
        let (on_a, on_b) = (on_a.unwrap(), on_b.unwrap());
        for (name, got) in [("a", &on_a), ("b", &on_b)] {
            let numbers: Vec<i64> = got.iter().map(|(_, n)| *n).collect();
            assert!(
                numbers.windows(2).all(|w| w[0] < w[1]),
                "master {name}'s numbers increase: {numbers:?}"
            );
        }
        let claimed: Vec<i64> = on_a.iter().chain(&on_b).map(|(r, _)| *r).collect();
        assert_eq!(claimed.len(), N, "each request claimed once");
        assert_eq!(claimed.iter().copied().collect::<BTreeSet<_>>(), ids);
        let numbers: BTreeSet<i64> = on_a.iter().chain(&on_b).map(|(_, n)| *n).collect();
        assert_eq!(numbers, (1..=N as i64).collect(), "one number each, no gap");
        // Which master claimed how many is up to the race (both, nearly always).
        println!("claimed: {} by a, {} by b", on_a.len(), on_b.len());
        never_given_twice(&a).await;
    });
}

/// Master `a` finishes its Build of a two-builder BuildSet inside a
/// transaction left open, so that master `b`'s finish of the other Build
/// waits for it and then reads the database as it was before `a`'s commit
/// (both see the other's request running): the BuildSet must still end
/// complete, with the worse result, reported by `b`.
#[test]
fn the_last_two_requests_of_a_buildset_finished_at_once_complete_it() {
    use autobot::db::builds::finish_build;
    use autobot::db::sql;
    let Some((server, master, _dir)) = migrated() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = master("a");
    let (set, on_x, on_y) = rt.block_on(async {
        let mut two = forced("x");
        two.builders.push("y".into());
        let set = db.add_buildset(two, 1.0).await.unwrap();
        let x = db.claim_request("x", "s1", 1, 2.0).await.unwrap().unwrap();
        let y = db.claim_request("y", "s2", 1, 2.0).await.unwrap().unwrap();
        (set.buildset_id, x.build_id, y.build_id)
    });
    drop(db);

    let mut a = server.client("bot");
    let mut tx = a.transaction().unwrap();
    let a_pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let done_a = finish_build(
        &mut sql::Pg(&mut tx),
        on_x,
        "success",
        "ok",
        false,
        3.0,
        None,
    )
    .unwrap();
    assert!(done_a.buildsets.is_empty(), "y still runs as a sees it");
    let b = std::thread::spawn({
        let mut client = server.client("bot");
        move || {
            finish_build(
                &mut sql::Pg(&mut client),
                on_y,
                "failure",
                "bad",
                false,
                4.0,
                None,
            )
            .unwrap()
        }
    });
    // b's finish waits for the BuildSet's row, which a's transaction holds.
    let mut watch = server.client("bot");
    support::cli::wait_for(
        "b's finish to wait for a's lock",
        std::time::Duration::from_secs(30),
        || {
            watch
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE wait_event_type = 'Lock' AND $1 = ANY(pg_blocking_pids(pid))",
                    &[&a_pid],
                )
                .unwrap()
                .get::<_, i64>(0)
                == 1
        },
    );
    tx.commit().unwrap();
    let done_b = b.join().unwrap();
    assert_eq!(done_b.buildsets, [(set, "failure".to_string())]);
    let row = watch
        .query_one(
            "SELECT complete, result FROM buildsets WHERE id = $1",
            &[&set],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "the BuildSet is complete");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("failure"));
}
