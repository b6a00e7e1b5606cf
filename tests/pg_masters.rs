//! `db::masters` (heartbeats, dead masters, leases) on both backends, and its
//! races on a real PostgreSQL (started by the test): two masters that find the
//! same dead master at once recover it once, and two that race for a free
//! lease do not both get it.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use autobot::db::masters;
use autobot::db::pgmigrations;
use autobot::db::sql::{self, Sql};

fn story(db: &mut dyn Sql) -> Vec<String> {
    let mut said = Vec::new();
    masters::started(db, "a", 100.0).unwrap();
    masters::started(db, "b", 100.5).unwrap();
    said.push(format!(
        "{:?}",
        masters::lease(db, "poller:x", "a", 100.0, 70.0)
    ));
    said.push(format!(
        "{:?}",
        masters::lease(db, "poller:x", "b", 101.0, 71.0)
    ));
    masters::heartbeat(db, "b", 140.0).unwrap();
    said.push(format!("{:?}", masters::take_dead(db, "b", 110.0)));
    said.push(format!("{:?}", masters::take_dead(db, "b", 110.0)));
    said.push(format!(
        "{:?}",
        masters::lease(db, "poller:x", "b", 141.0, 111.0)
    ));
    masters::started(db, "a", 150.0).unwrap();
    said.push(format!(
        "{:?}",
        masters::lease(db, "poller:x", "a", 150.0, 120.0)
    ));
    masters::stopped(db, "b").unwrap();
    said.push(format!(
        "{:?}",
        masters::lease(db, "poller:x", "a", 151.0, 121.0)
    ));
    said.push(format!("{:?}", masters::all(db)));
    said
}

#[test]
fn the_masters_queries_answer_the_same_on_both_backends() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    let (on_sqlite, on_postgres) = pg_common::on_both(&server, "bot", false, story);
    assert_eq!(on_postgres, on_sqlite);
    assert_eq!(
        on_sqlite[..7],
        [
            "Ok(true)",
            "Ok(false)",
            "Ok([\"a\"])",
            "Ok([])",
            "Ok(true)",
            "Ok(false)",
            "Ok(true)"
        ]
    );
}

/// Many rounds of two masters, each in its own transaction on its own
/// connection, finding the same dead master and racing for the same lease.
#[test]
fn two_masters_racing_never_both_win() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    server.create_db("bot");
    let mut setup = server.client("bot");
    pgmigrations::migrate(&mut setup, &server.url("bot")).unwrap();
    for round in 0..50 {
        let dead = format!("dead-{round}");
        let lease = format!("lease-{round}");
        masters::started(&mut sql::Pg(&mut setup), &dead, 0.0).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = ["m1", "m2"]
            .into_iter()
            .map(|me| {
                let mut c = server.client("bot");
                let (dead, lease, barrier) = (dead.clone(), lease.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut tx = c.transaction().unwrap();
                    let mut db = sql::Pg(&mut tx);
                    masters::heartbeat(&mut db, me, 1000.0).unwrap();
                    barrier.wait();
                    let took = masters::take_dead(&mut db, me, 500.0).unwrap();
                    let held = masters::lease(&mut db, &lease, me, 1000.0, 500.0).unwrap();
                    tx.commit().unwrap();
                    (took.contains(&dead), held)
                })
            })
            .collect();
        let results: Vec<(bool, bool)> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.0).count(),
            1,
            "round {round}: {results:?}"
        );
        assert_eq!(
            results.iter().filter(|r| r.1).count(),
            1,
            "round {round}: {results:?}"
        );
    }
}
