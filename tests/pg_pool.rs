//! A master's PostgreSQL connections (`db::pgpool`) when the quiet daemon gives
//! memory back (`memory::release_all`, run on a runtime thread as the daemon's
//! trimmer runs it): the idle read connections are closed without taking the
//! master down (a `postgres::Client` closed on a runtime thread panics; it
//! killed a master on PostgreSQL a second after a burst of builds, found by
//! bench/pg.rs), and the next read opens one again. Real PostgreSQL, started
//! by the test.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use std::time::Duration;

use autobot::db::{pg, pgmigrations, Db};

fn count_slaves(db: &mut dyn autobot::db::sql::Sql) -> Result<i64, autobot::db::sql::SqlError> {
    db.query_one("SELECT count(*) FROM slaves", &[])?.i64(0)
}

#[test]
fn idle_readers_close_on_a_runtime_thread_without_a_panic() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    server.create_db("bot");
    let url = server.url("bot");
    pgmigrations::migrate(&mut server.client("bot"), &url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_postgres(&pg::parse_url(&url).unwrap(), None, dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
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
