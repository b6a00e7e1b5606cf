//! A real PostgreSQL server for a bench: the tests' server
//! (tests/pg_common/server.rs: `initdb` and `pg_ctl` in a temporary directory,
//! as `nobody` when root), but with PostgreSQL's default durability (fsync and
//! synchronous_commit on: the operator's choice, so the figures are those of a
//! stock server) unless the bench asks otherwise. Dropping the [`Pg`] stops it
//! and removes the directory.
//!
//! Include with `#[path = "common/pg.rs"] mod pg;`.

#![allow(dead_code)]

#[path = "../../tests/pg_common/server.rs"]
mod server;
#[allow(unused_imports)]
pub use server::{server_bin, Pg, DEADLINE, USER};

impl Pg {
    /// A server with trust authentication and `settings` (postgresql.conf
    /// lines) added to PostgreSQL's defaults; panics naming what is missing.
    pub fn start(port: u16, settings: &str) -> Pg {
        let pg = Pg::create("autobot-pgbench", port).unwrap_or_else(|why| panic!("{why}"));
        pg.initdb(&["--auth-host=trust".to_string()]);
        pg.run_server(&format!("max_connections = 100\n{settings}"));
        pg
    }

    /// The URL of database `db` for the bench's masters: over TCP on
    /// 127.0.0.1, or with `--socket` on the command line over the server's
    /// Unix socket (a master on the database's machine).
    pub fn master_url(&self, db: &str) -> String {
        if !std::env::args().any(|a| a == "--socket") {
            return self.url(db);
        }
        let dir: String = self
            .socket_dir()
            .to_string_lossy()
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("postgresql://{USER}@{dir}:{}/{db}", self.port)
    }
}
