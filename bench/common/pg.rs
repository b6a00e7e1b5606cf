//! A real PostgreSQL server for a bench (the logic of tests/pg_common, which a
//! bench cannot import): Debian's server binaries (`/usr/lib/postgresql/VERSION/bin`,
//! or the directory `AUTOBOT_PG_BIN` names) run `initdb` in a temporary directory,
//! then `pg_ctl start -w` on a free port of 127.0.0.1, its Unix socket in that
//! directory. Unlike the tests' server, its durability settings are PostgreSQL's
//! defaults (fsync and synchronous_commit on: the operator's choice, so the figures
//! are those of a stock server) unless the bench asks otherwise. Run as root, the
//! server runs as `nobody` (initdb refuses root). Dropping the [`Pg`] stops it and
//! removes the directory.
//!
//! Include with `#[path = "common/pg.rs"] mod pg;`.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The superuser of the bench's server.
pub const USER: &str = "autobot";

/// How long the server may take to start or stop.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A running PostgreSQL server of one bench.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The TCP port on 127.0.0.1 (also names the Unix socket).
    pub port: u16,
    run_as: Option<(u32, u32)>,
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
    /// A server with trust authentication and `settings` (postgresql.conf
    /// lines) added to its defaults; panics naming what is missing.
    pub fn start(port: u16, settings: &str) -> Pg {
        let bin = server_bin().expect(
            "no PostgreSQL server (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql",
        );
        let run_as = unprivileged();
        assert!(
            !nix::unistd::geteuid().is_root() || run_as.is_some(),
            "running as root and no `nobody` user to run PostgreSQL as"
        );
        // The server (nobody, when root) must reach its directory: under /tmp.
        let mut dir = tempfile::Builder::new();
        dir.prefix("autobot-pgbench");
        let dir = match run_as {
            Some(_) => dir.tempdir_in("/tmp"),
            None => dir.tempdir(),
        }
        .expect("temp dir");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let pg = Pg {
            bin,
            port,
            run_as,
            dir,
        };
        pg.run_ok(
            "initdb",
            &[
                "-D",
                data.to_str().expect("path"),
                "-U",
                USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--auth-local=trust",
                "--auth-host=trust",
            ],
        );
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             max_connections = 100\n{settings}\n",
            pg.port,
            pg.dir.path().display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("postgresql.conf");
        let log = pg.dir.path().join("server.log");
        let started = pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("path"),
                "-l",
                log.to_str().expect("path"),
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
        let deadline = Instant::now() + DEADLINE;
        while let Err(e) = pg.client_on_socket("postgres") {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL on port {} did not answer: {e}",
                pg.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let mut c = Command::new(self.bin.join(tool));
        c.current_dir(self.dir.path())
            .env_remove("PGPASSFILE")
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c.args(args).output().expect("run a PostgreSQL tool")
    }

    fn run_ok(&self, tool: &str, args: &[&str]) {
        let out = self.run(tool, args);
        assert!(
            out.status.success(),
            "{tool}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
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
        self.client_on_socket(db).expect("connect to PostgreSQL")
    }

    /// `CREATE DATABASE name`.
    pub fn create_db(&self, name: &str) {
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("CREATE DATABASE");
    }

    /// The `db =` URL of database `db` over TCP.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// A setting as the server reports it (`SHOW name`).
    pub fn show(&self, name: &str) -> String {
        self.client("postgres")
            .query_one(&format!("SHOW {name}"), &[])
            .map(|r| r.get(0))
            .unwrap_or_default()
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }
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
