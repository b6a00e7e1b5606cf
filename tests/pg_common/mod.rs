//! A real PostgreSQL server for one test ([`server`]: `initdb` and `pg_ctl` in
//! a temporary directory, on a free port of 127.0.0.1, as `nobody` when root),
//! with durability off and the options a test asks for (a password, TLS);
//! dropping the [`Pg`] stops the server and removes the directory. Without the
//! server, the test prints SKIP, or fails under `CI=true` (support::skip).
//! Also here: [`on_both`], one story of queries on SQLite and PostgreSQL.
//!
//! Include with `#[path = "pg_common/mod.rs"] mod pg_common;` after `support`.

#![allow(dead_code)]
// tests/support loads it too (its `pg_server`), for the AUTOBOT_TEST_DB switch.
#![allow(clippy::duplicate_mod)]

use std::path::PathBuf;

use super::support;

#[path = "server.rs"]
mod server;
#[allow(unused_imports)]
pub use server::{server_bin, Pg, DEADLINE, USER};

/// How a test's server is set up.
#[derive(Default, Clone)]
pub struct PgOptions {
    /// Require this password (scram-sha-256) for TCP connections; `None`:
    /// trust.
    pub password: Option<String>,
    /// Serve TLS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Refuse TCP connections without TLS (pg_hba `hostssl` only).
    pub tls_only: bool,
    /// `max_connections`; `None`: 50 (one test's masters). The shared server
    /// of `AUTOBOT_TEST_DB=postgresql` (support::testdb) serves every master
    /// of a test binary at once.
    pub max_connections: Option<u32>,
}

impl Pg {
    /// A server with trust authentication, or `None` after support::skip.
    pub fn start() -> Option<Pg> {
        Pg::start_with(PgOptions::default())
    }

    /// A server set up as `opts` says (durability off: a test's data is
    /// thrown away), or `None` after support::skip.
    #[track_caller]
    pub fn start_with(opts: PgOptions) -> Option<Pg> {
        let mut pg = match Pg::create("autobot-pg", support::cli::free_ports::<1>()[0]) {
            Ok(pg) => pg,
            Err(why) => {
                support::skip(&why);
                return None;
            }
        };
        let mut auth = Vec::new();
        if let Some(pw) = &opts.password {
            let pwfile = pg.socket_dir().join("pwfile");
            std::fs::write(&pwfile, format!("{pw}\n")).unwrap();
            pg.own(&pwfile);
            auth.push(format!("--pwfile={}", pwfile.display()));
            auth.push("--auth-host=scram-sha-256".into());
        } else {
            auth.push("--auth-host=trust".into());
        }
        pg.password = opts.password.clone();
        pg.initdb(&auth);
        let data = pg.data();
        let mut conf = format!(
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = {}\nshared_buffers = 16MB\n",
            opts.max_connections.unwrap_or(50)
        );
        if let Some((cert, key)) = &opts.tls {
            for (f, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = data.join(name);
                std::fs::copy(f, &to).unwrap();
                std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .unwrap();
                pg.own(&to);
            }
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        if opts.tls_only {
            let hba = data.join("pg_hba.conf");
            let text = std::fs::read_to_string(&hba).unwrap();
            let text: String = text
                .lines()
                .map(|l| {
                    if l.starts_with("host ") {
                        format!("hostssl{}\n", &l[4..])
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            std::fs::write(&hba, text).unwrap();
        }
        pg.run_server(&conf);
        Some(pg)
    }
}

/// Run `story` (a module's queries, through `db::sql`) on a fresh SQLite
/// database in memory and on a fresh PostgreSQL database `name` of `server`,
/// both migrated, each inside one transaction that is committed (as the master
/// runs them); its answers on (SQLite, PostgreSQL). `foreign_keys`: SQLite
/// checks them as the master's connection does (PostgreSQL always does).
pub fn on_both<T>(
    server: &Pg,
    name: &str,
    foreign_keys: bool,
    mut story: impl FnMut(&mut dyn autobot::db::sql::Sql) -> T,
) -> (T, T) {
    use autobot::db::sql::{self, Dialect, Sql};
    use autobot::db::{migrations, pgmigrations};
    let lite = rusqlite::Connection::open_in_memory().unwrap();
    for m in migrations::MIGRATIONS {
        lite.execute_batch(m).unwrap();
    }
    if foreign_keys {
        lite.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    }
    lite.execute_batch("BEGIN").unwrap();
    let mut db = sql::Lite(&lite);
    assert_eq!(db.dialect(), Dialect::Sqlite);
    let on_sqlite = story(&mut db);
    lite.execute_batch("COMMIT").unwrap();

    server.create_db(name);
    let mut client = server.client(name);
    pgmigrations::migrate(&mut client, &server.url(name)).unwrap();
    let mut tx = client.transaction().unwrap();
    let mut db = sql::Pg(&mut tx);
    assert_eq!(db.dialect(), Dialect::Postgres);
    let on_postgres = story(&mut db);
    tx.commit().unwrap();
    (on_sqlite, on_postgres)
}
