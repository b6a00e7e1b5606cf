//! A real PostgreSQL server for one test: Debian's server binaries
//! (`/usr/lib/postgresql/VERSION/bin`, or the directory `AUTOBOT_PG_BIN` names)
//! run `initdb` in a temporary directory, then `pg_ctl start` on a free port of
//! 127.0.0.1 with its Unix socket in that directory; `pg_ctl -w` waits for the
//! server to accept connections, with a deadline. Dropping the [`Pg`] stops the
//! server and removes the directory.
//!
//! `initdb` refuses to run as root, so a test run as root (CI) runs the server
//! as `nobody`, the directory handed to it. Without the server, the test prints
//! SKIP, or fails under `CI=true` (support::skip).
//!
//! Include with `#[path = "pg_common/mod.rs"] mod pg_common;` after `support`.

#![allow(dead_code)]
// tests/support loads it too (its `pg_server`), for the AUTOBOT_TEST_DB switch.
#![allow(clippy::duplicate_mod)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::support;

/// The user the tests' servers know (their superuser).
pub const USER: &str = "autobot";

/// How long the server may take to start or stop.
pub const DEADLINE: Duration = Duration::from_secs(60);

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

/// A running PostgreSQL server of one test.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The TCP port on 127.0.0.1 (also names the Unix socket).
    pub port: u16,
    run_as: Option<(u32, u32)>,
    password: Option<String>,
}

/// The directory of Debian's PostgreSQL server binaries, the newest version.
pub fn server_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("AUTOBOT_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| d.join("initdb").is_file());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

/// (uid, gid) of `nobody` when this process is root (initdb refuses root).
fn unprivileged() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("nobody").ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

impl Pg {
    /// A server with trust authentication, or `None` after support::skip.
    pub fn start() -> Option<Pg> {
        Pg::start_with(PgOptions::default())
    }

    /// A server set up as `opts` says, or `None` after support::skip.
    #[track_caller]
    pub fn start_with(opts: PgOptions) -> Option<Pg> {
        let Some(bin) = server_bin() else {
            support::skip(
                "no PostgreSQL server (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql",
            );
            return None;
        };
        let run_as = unprivileged();
        if nix::unistd::geteuid().is_root() && run_as.is_none() {
            support::skip("running as root and no `nobody` user to run PostgreSQL as");
            return None;
        }
        // The server (nobody, when root) must reach its directory: under /tmp,
        // whatever TMPDIR says (a root-only directory would shut it out).
        let mut dir = tempfile::Builder::new();
        dir.prefix("autobot-pg");
        let dir = match run_as {
            Some(_) => dir.tempdir_in("/tmp"),
            None => dir.tempdir(),
        }
        .unwrap();
        let own = |p: &Path| {
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        };
        own(dir.path());
        let data = dir.path().join("data");
        let mut initdb = vec![
            "-D".to_string(),
            data.to_str().unwrap().to_string(),
            "-U".into(),
            USER.into(),
            "-E".into(),
            "UTF8".into(),
            "--locale=C".into(),
            "--no-sync".into(),
            "--auth-local=trust".into(),
        ];
        if let Some(pw) = &opts.password {
            let pwfile = dir.path().join("pwfile");
            std::fs::write(&pwfile, format!("{pw}\n")).unwrap();
            own(&pwfile);
            initdb.push(format!("--pwfile={}", pwfile.display()));
            initdb.push("--auth-host=scram-sha-256".into());
        } else {
            initdb.push("--auth-host=trust".into());
        }
        let pg = Pg {
            bin,
            port: support::cli::free_ports::<1>()[0],
            run_as,
            password: opts.password.clone(),
            dir,
        };
        pg.run_ok("initdb", &initdb);
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = {}\nshared_buffers = 16MB\n",
            pg.port,
            pg.dir.path().display(),
            opts.max_connections.unwrap_or(50)
        );
        if let Some((cert, key)) = &opts.tls {
            for (f, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = data.join(name);
                std::fs::copy(f, &to).unwrap();
                std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .unwrap();
                own(&to);
            }
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        append(&data.join("postgresql.conf"), &conf);
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
        let log = pg.dir.path().join("server.log");
        let started = pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                &DEADLINE.as_secs().to_string(),
                "start",
            ],
        );
        assert!(
            started.status.success(),
            "pg_ctl start: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&started.stdout),
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        pg.wait_ready();
        Some(pg)
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.current_dir(self.dir.path())
            .env_remove("PGPASSFILE")
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn run(&self, tool: &str, args: &[impl AsRef<std::ffi::OsStr>]) -> Output {
        self.command(tool).args(args).output().unwrap()
    }

    fn run_ok(&self, tool: &str, args: &[impl AsRef<std::ffi::OsStr>]) {
        let out = self.run(tool, args);
        assert!(
            out.status.success(),
            "{tool}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Until a query on the Unix socket answers (pg_ctl -w said it started;
    /// this makes sure the socket is there for the test), with [`DEADLINE`].
    fn wait_ready(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.admin() {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("PostgreSQL on port {} did not answer: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client on the Unix socket (trust) to `postgres`, as the superuser.
    fn admin(&self) -> Result<postgres::Client, postgres::Error> {
        self.client_on_socket("postgres")
    }

    /// A client on the Unix socket (trust) to database `db`.
    pub fn client_on_socket(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .user(USER)
            .host_path(self.dir.path())
            .port(self.port)
            .dbname(db)
            .connect(postgres::NoTls)
    }

    /// A client to database `db` as the superuser (panics on failure).
    pub fn client(&self, db: &str) -> postgres::Client {
        self.client_on_socket(db).unwrap()
    }

    /// `CREATE DATABASE name`.
    pub fn create_db(&self, name: &str) {
        self.admin()
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
    }

    /// The `db =` URL of database `db` over TCP (no password in it).
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The password the server requires over TCP, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

fn append(file: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
                "-t",
                &DEADLINE.as_secs().to_string(),
                "stop",
            ],
        );
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
