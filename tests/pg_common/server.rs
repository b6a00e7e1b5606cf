//! A real PostgreSQL server in a temporary directory, for the tests
//! (tests/pg_common, with their options and SKIP) and the benches
//! (bench/common/pg.rs, with PostgreSQL's default durability): Debian's server
//! binaries (`/usr/lib/postgresql/VERSION/bin`, or the directory
//! `AUTOBOT_PG_BIN` names) run `initdb` there, then `pg_ctl start -w` on a port
//! of 127.0.0.1 with its Unix socket in that directory, and a query on the socket
//! is awaited with a deadline. `initdb` refuses to run as root, so as root the
//! server runs as `nobody`, the directory handed to it. Dropping the [`Pg`]
//! stops the server and removes the directory.
//!
//! It depends on nothing of the tests' support, so a bench includes it too
//! (`#[path = "../../tests/pg_common/server.rs"]`).

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The superuser of the server.
pub const USER: &str = "autobot";

/// How long the server may take to start or stop.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A PostgreSQL server: made by [`Pg::create`], set up by [`Pg::initdb`], run
/// by [`Pg::run_server`].
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The TCP port on 127.0.0.1 (also names the Unix socket).
    pub port: u16,
    run_as: Option<(u32, u32)>,
    /// The password it requires over TCP, if any (set by whoever made it).
    pub password: Option<String>,
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
    /// The server's directory (named `prefix…`), for `port`; `Err(why)` when
    /// there is no server to run (what to install, said for a SKIP).
    pub fn create(prefix: &str, port: u16) -> Result<Pg, String> {
        let bin = server_bin().ok_or(
            "no PostgreSQL server (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql",
        )?;
        let run_as = unprivileged();
        if nix::unistd::geteuid().is_root() && run_as.is_none() {
            return Err("running as root and no `nobody` user to run PostgreSQL as".into());
        }
        // The server (nobody, when root) must reach its directory: under /tmp,
        // whatever TMPDIR says (a root-only directory would shut it out).
        let mut dir = tempfile::Builder::new();
        dir.prefix(prefix);
        let dir = match run_as {
            Some(_) => dir.tempdir_in("/tmp"),
            None => dir.tempdir(),
        }
        .map_err(|e| format!("a temporary directory: {e}"))?;
        let pg = Pg {
            dir,
            bin,
            port,
            run_as,
            password: None,
        };
        pg.own(pg.dir.path());
        Ok(pg)
    }

    /// Hand `path` to the server's user (when this process is root).
    pub fn own(&self, path: &Path) {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    /// The server's data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `initdb` with the superuser [`USER`], UTF-8, the C locale, trust on the
    /// Unix socket, and `extra` arguments (the TCP authentication).
    pub fn initdb(&self, extra: &[String]) {
        let data = self.data();
        let mut args = vec![
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
        args.extend(extra.iter().cloned());
        self.run_ok("initdb", &args);
    }

    /// Add `text` (postgresql.conf lines) to the server's settings.
    pub fn configure(&self, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Start the server on 127.0.0.1 and its socket directory with `settings`
    /// (postgresql.conf lines) besides, and wait until it answers.
    pub fn run_server(&self, settings: &str) {
        self.configure(&format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n{settings}\n",
            self.port,
            self.dir.path().display()
        ));
        let data = self.data();
        let log = self.dir.path().join("server.log");
        let started = self.run(
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
            self.log()
        );
        // pg_ctl -w said it started; this makes sure the socket is there.
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.client_on_socket("postgres") {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("PostgreSQL on port {} did not answer: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
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

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
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
        self.client("postgres")
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
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.data();
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
