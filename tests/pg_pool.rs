//! A master's PostgreSQL connections (`db::pgpool`) when the quiet daemon gives
//! memory back (`memory::release_all`, run on a runtime thread as the daemon's
//! trimmer runs it): the idle read connections are closed without taking the
//! master down (a `postgres::Client` closed on a runtime thread panics; it
//! killed a master on PostgreSQL a second after a burst of builds, found by
//! bench/pg.rs), and the next read opens one again. The channels a master
//! follows share one LISTENing connection: each payload reaches the receivers
//! of its own channel, and when that connection is cut every receiver is told
//! that notifications may have been missed, then they flow again. Real
//! PostgreSQL, started by the test.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use std::time::Duration;

use autobot::db::{pg, pgmigrations, Db};

fn count_slaves(db: &mut dyn autobot::db::sql::Sql) -> Result<i64, autobot::db::sql::SqlError> {
    db.query_one("SELECT count(*) FROM slaves", &[])?.i64(0)
}

/// A server with a migrated database `bot`, its URL, a master directory and a
/// runtime of the daemon's kind (one thread).
fn setup() -> Option<(
    pg_common::Pg,
    String,
    tempfile::TempDir,
    tokio::runtime::Runtime,
)> {
    let server = pg_common::Pg::start()?;
    server.create_db("bot");
    let url = server.url("bot");
    pgmigrations::migrate(&mut server.client("bot"), &url).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Some((server, url, tempfile::tempdir().unwrap(), rt))
}

#[test]
fn idle_readers_close_on_a_runtime_thread_without_a_panic() {
    let Some((server, url, dir, rt)) = setup() else {
        return;
    };
    let db = Db::open_postgres(&pg::parse_url(&url).unwrap(), None, dir.path()).unwrap();
    assert_eq!(rt.block_on(db.read_sql(count_slaves)).unwrap(), 0);
    // As the daemon's trimmer runs it: on the runtime's thread.
    rt.block_on(async { autobot::memory::release_all() });
    // The closing happens on a thread of its own: wait until the reader's
    // session is gone from the server (the writer's stays), then read again.
    let mut admin = server.client("postgres");
    let mut sessions = || -> i64 {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bot'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    support::cli::wait_for("the idle reader closed", Duration::from_secs(30), || {
        sessions() == 1
    });
    assert_eq!(rt.block_on(db.read_sql(count_slaves)).unwrap(), 0);
    assert_eq!(sessions(), 2);
}

/// The master's writes do not wait for the server's disk flush unless the URL
/// says `synchronous_commit=on` (as SQLite's `synchronous = NORMAL`); then the
/// server's setting stands.
#[test]
fn the_writer_commits_without_waiting_for_the_flush_unless_told() {
    let Some((server, url, dir, rt)) = setup() else {
        return;
    };
    let show = |db: &mut dyn autobot::db::sql::Sql| {
        db.query_one("SHOW synchronous_commit", &[])?.string(0)
    };
    // With `on`, the server's own setting stands (this test server's is
    // whatever its postgresql.conf says).
    let servers: String = server
        .client("bot")
        .query_one("SHOW synchronous_commit", &[])
        .unwrap()
        .get(0);
    for (suffix, want) in [("", "off"), ("?synchronous_commit=on", servers.as_str())] {
        let parsed = pg::parse_url(&format!("{url}{suffix}")).unwrap();
        assert_eq!(parsed.to_string(), format!("{url}{suffix}"));
        let db = Db::open_postgres(&parsed, None, dir.path()).unwrap();
        assert_eq!(rt.block_on(db.write_sql(show)).unwrap(), want, "{suffix}");
    }
    let e = pg::parse_url(&format!("{url}?synchronous_commit=maybe")).unwrap_err();
    assert!(e.contains("synchronous_commit=on"), "{e}");
}

#[test]
fn one_connection_listens_for_every_channel_and_comes_back() {
    let Some((server, url, dir, rt)) = setup() else {
        return;
    };
    use autobot::db::{changes, pgpool, requests};
    let db = Db::open_postgres(&pg::parse_url(&url).unwrap(), None, dir.path()).unwrap();
    let _guard = rt.enter();
    let mut queued = db.listen(requests::QUEUED).unwrap();
    let mut stored = db.listen(changes::STORED).unwrap();
    let mut admin = server.client("bot");
    let listening = |admin: &mut postgres::Client| -> i64 {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = 'bot' AND query LIKE 'LISTEN%'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    support::cli::wait_for("the LISTEN session", Duration::from_secs(30), || {
        listening(&mut admin) == 1
    });
    // One payload on each channel: each reaches its own receivers only.
    let next = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        rt.block_on(tokio::time::timeout(Duration::from_secs(30), rx.recv()))
            .expect("a notification within 30 s")
            .expect("the listener is alive")
    };
    admin
        .batch_execute(&format!(
            "NOTIFY {}, 'b1'; NOTIFY {}, '7'",
            requests::QUEUED,
            changes::STORED
        ))
        .unwrap();
    assert_eq!(next(&mut queued), "b1");
    assert_eq!(next(&mut stored), "7");
    // The LISTEN session cut: both receivers hear that they may have missed
    // something, then payloads arrive again on the new session.
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = 'bot' AND query LIKE 'LISTEN%'",
        )
        .unwrap();
    assert_eq!(next(&mut queued), pgpool::MISSED);
    assert_eq!(next(&mut stored), pgpool::MISSED);
    support::cli::wait_for("the LISTEN session again", Duration::from_secs(30), || {
        listening(&mut admin) == 1
    });
    admin
        .batch_execute(&format!("NOTIFY {}, 'b2'", requests::QUEUED))
        .unwrap();
    assert_eq!(next(&mut queued), "b2");
    assert!(stored.try_recv().is_err(), "nothing for the other channel");
}
