//! The backend-neutral queries (`db::sql`) of one query module, `db::slaves`,
//! on both backends: the same calls on SQLite and on a real PostgreSQL (started
//! by the test), each migrated from nothing, give the same answers, inside
//! transactions as the master runs them. The pattern every query module
//! follows as it moves to PostgreSQL.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use autobot::db::slaves::{self, SlaveInfoRow};
use autobot::db::sql::{self, Sql, Value};

/// Connect, disconnect, keepalive, reset: every query of `db::slaves`, and what
/// each read answers, as text to compare across backends.
fn story(db: &mut dyn Sql) -> Vec<String> {
    let mut said = Vec::new();
    let info = SlaveInfoRow {
        admin: Some("Zoë <z@example.org>".into()),
        host: Some("box".into()),
        os: Some("posix".into()),
        version: Some("4.3.0".into()),
        numcpus: Some(2),
        commands: Some("{\"shell\":\"3.3\"}".into()),
    };
    let first = slaves::connected(db, "s1", "127.0.0.1:5", info.clone(), 100, "m1").unwrap();
    let other =
        slaves::connected(db, "s0", "127.0.0.1:6", SlaveInfoRow::default(), 101, "m1").unwrap();
    assert!(other > first);
    said.push(format!("{:?}", slaves::one(db, "s1").unwrap()));
    slaves::seen(db, "s1", 120).unwrap();
    slaves::disconnected(db, "s1", first, "keepalive timeout", 150, "m1").unwrap();
    said.push(format!("{:?}", slaves::one(db, "s1").unwrap()));
    let again = slaves::connected(db, "s1", "p", info.clone(), 200, "m1").unwrap();
    assert!(again > other);
    // s1 moves to master m2; m1 then notes its end there: s1 stays connected.
    let moved = slaves::connected(db, "s1", "q", info, 210, "m2").unwrap();
    slaves::disconnected(db, "s1", again, "connection lost", 211, "m1").unwrap();
    assert!(slaves::one(db, "s1").unwrap().unwrap().connected);
    // m2 dies: its slaves are gone, m1's (s0) stay.
    slaves::master_gone(db, "m2", "its master died", 220).unwrap();
    let s1 = slaves::one(db, "s1").unwrap().unwrap();
    assert!(!s1.connected);
    assert_eq!(s1.disconnect_reason.as_deref(), Some("its master died"));
    assert!(slaves::one(db, "s0").unwrap().unwrap().connected);
    let open: Vec<_> = slaves::connections(db, "s1", None)
        .unwrap()
        .into_iter()
        .filter(|c| c.id == moved)
        .collect();
    assert_eq!(open[0].disconnected_at, Some(220));
    slaves::reset(db, "master restarted", 300).unwrap();
    said.push(format!("{:?}", slaves::all(db).unwrap()));
    let conns = slaves::connections(db, "s1", None).unwrap();
    assert_eq!(conns.len(), 3);
    let reasons: Vec<_> = conns.iter().map(|c| c.reason.as_deref()).collect();
    assert_eq!(
        reasons,
        [
            Some("its master died"),
            Some("connection lost"),
            Some("keepalive timeout")
        ]
    );
    assert_eq!(
        slaves::one(db, "s0")
            .unwrap()
            .unwrap()
            .disconnect_reason
            .as_deref(),
        Some("master restarted")
    );
    said.push(format!("{conns:?}"));
    said.push(format!(
        "{:?}",
        slaves::connections(db, "s1", Some(1)).unwrap()
    ));
    said.push(format!("{:?}", slaves::one(db, "nobody").unwrap()));
    // The dialect's phrases: INSERT OR IGNORE, RETURNING, the clock.
    for _ in 0..2 {
        let n = db
            .execute(
                "INSERT OR IGNORE INTO reporter_state(name, value) VALUES (?1, ?2)",
                &["k".into(), Value::Int(7)],
            )
            .unwrap();
        said.push(format!("inserted {n}"));
    }
    let now = db
        .query_one(&format!("SELECT {}", db.dialect().unix_now()), &[])
        .unwrap()
        .i64(0)
        .unwrap();
    assert!((now - autobot::db::now()).abs() < 5, "{now}");
    said
}

#[test]
fn the_slaves_queries_answer_the_same_on_both_backends() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    let (on_sqlite, on_postgres) = pg_common::on_both(&server, "bot", false, story);

    assert_eq!(on_postgres, on_sqlite);
    assert!(on_sqlite.contains(&"inserted 0".to_string()));
    // Committed: a new connection sees it.
    let mut again = server.client("bot");
    let all = slaves::all(&mut sql::Pg(&mut again)).unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|s| !s.connected));
}
