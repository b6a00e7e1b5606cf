//! The test suite's database switch: with `AUTOBOT_TEST_DB=postgresql` every
//! test master keeps its history in PostgreSQL instead of `state.sqlite`, so
//! the whole suite runs on both backends (scripts/test.sh runs it twice) and
//! the two cannot drift.
//!
//! Every place a test writes a master's `master.ini` goes through
//! [`write_master_ini`] (or [`with_test_db`], or [`use_test_db`] for one that
//! `autobot create` wrote). Unset (or `sqlite`), they write the text as given.
//! Set, they add `db = postgresql://…` naming a database of that master
//! directory's own, on one PostgreSQL server per test process: started on
//! first use (tests/pg_common: `initdb` + `pg_ctl`, as `nobody` when root),
//! each database a copy of one migrated template (`CREATE DATABASE … TEMPLATE`),
//! and stopped when the process exits (an `atexit` hook; a watchdog child
//! stops it too when the process dies without exiting, e.g. killed).
//!
//! The `db` line goes into a `[DEFAULT]` section at the end of the file (a
//! master key given there applies to `[:master:]`), so the line numbers of what
//! the test wrote, which error messages name, stay as they were. The database
//! follows the directory: a test that rewrites `master.ini` for a reconfig or
//! restarts the master keeps its history.
//!
//! A test about SQLite itself (its file, backups of it, copying from it) calls
//! [`keep_sqlite`] first: the switch leaves the masters of that test alone.

use std::cell::Cell;
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, PoisonError};

use super::pg_server::{Pg, PgOptions};

/// The variable that switches the suite's masters to PostgreSQL.
pub const ENV: &str = "AUTOBOT_TEST_DB";

/// The comment above the `db` line this module adds (found again by it).
const MARK: &str = "; AUTOBOT_TEST_DB=postgresql: this master's database (tests/support/testdb.rs)";

/// The migrated database every master's database is copied from.
const TEMPLATE: &str = "autobot_template";

/// Whether the switch is on: `AUTOBOT_TEST_DB=postgresql`. Unset, empty or
/// `sqlite` is off; anything else fails the test (a typo must not silently
/// test SQLite twice).
pub fn on_postgres() -> bool {
    match std::env::var(ENV) {
        Err(_) => false,
        Ok(v) if v.is_empty() || v.eq_ignore_ascii_case("sqlite") => false,
        Ok(v) if v.eq_ignore_ascii_case("postgresql") => true,
        Ok(v) => panic!("{ENV}={v:?}: expected `postgresql` or `sqlite` (or unset)"),
    }
}

thread_local! {
    static SQLITE_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// This test is about SQLite itself (`why`): its masters keep `state.sqlite`
/// whatever [`ENV`] says. Call it first in the test (each test runs on a
/// thread of its own; the masters written from it are left alone).
pub fn keep_sqlite(why: &str) {
    let _ = why;
    SQLITE_ONLY.with(|c| c.set(true));
}

/// Whether the masters written now get a PostgreSQL database.
fn switched() -> bool {
    on_postgres() && !SQLITE_ONLY.with(|c| c.get())
}

/// `master.ini` text for the master in `dir`: `ini` itself, or under the switch
/// `ini` with the `db` line of `dir`'s database (added once: text that has it
/// already is returned as it is).
pub fn with_test_db(dir: &Path, ini: &str) -> String {
    if !switched() || ini.contains(MARK) {
        return ini.to_string();
    }
    // The `postgres` client blocks: off any async runtime of the caller.
    let owned = dir.to_path_buf();
    let url = std::thread::spawn(move || database_for(&owned))
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    let db = format!("{MARK}\ndb = {url}\n");
    // A [DEFAULT] of the test's own takes the line (one section of a name).
    if let Some(at) = find_header(ini, "DEFAULT") {
        let mut s = ini.to_string();
        s.insert_str(at, &db);
        return s;
    }
    let mut s = ini.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str("\n[DEFAULT]\n");
    s.push_str(&db);
    s
}

/// Write `dir/master.ini`: `ini` with [`with_test_db`]. (Where a test wrote
/// `std::fs::write(dir.join("master.ini"), ini)`.)
pub fn write_master_ini(dir: impl AsRef<Path>, ini: impl AsRef<str>) {
    let dir = dir.as_ref();
    std::fs::write(dir.join("master.ini"), with_test_db(dir, ini.as_ref())).unwrap();
}

/// Give the `master.ini` already in `dir` (e.g. `autobot create`'s) the
/// switch's database.
pub fn use_test_db(dir: impl AsRef<Path>) {
    let dir = dir.as_ref();
    let text = std::fs::read_to_string(dir.join("master.ini")).unwrap();
    write_master_ini(dir, &text);
}

/// Where the line after the header `[name]` starts, if `ini` has the section.
fn find_header(ini: &str, name: &str) -> Option<usize> {
    let mut at = 0;
    for line in ini.split_inclusive('\n') {
        at += line.len();
        let t = line.trim();
        if t.strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .is_some_and(|n| n.trim() == name)
        {
            return Some(at);
        }
    }
    None
}

/// The shared server and the databases made on it, by master directory.
struct Shared {
    pg: Pg,
    dbs: HashMap<PathBuf, String>,
    /// The watchdog's stdin: closed when this process ends, however it ends.
    _watchdog: Option<ChildStdin>,
}

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

/// The `db =` URL of `dir`'s database, made (and the server started) on first
/// use.
fn database_for(dir: &Path) -> String {
    let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut guard = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        *guard = Some(start());
    }
    let shared = guard.as_mut().unwrap();
    if let Some(name) = shared.dbs.get(&key) {
        return shared.pg.url(name);
    }
    let name = format!("master{}", shared.dbs.len() + 1);
    shared
        .pg
        .client("postgres")
        .batch_execute(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{TEMPLATE}\""
        ))
        .unwrap_or_else(|e| panic!("{ENV}: CREATE DATABASE {name}: {e}"));
    let url = shared.pg.url(&name);
    shared.dbs.insert(key, name);
    url
}

/// Start the shared server, make the template, and arrange the stop.
fn start() -> Shared {
    let Some(pg) = Pg::start_with(PgOptions {
        // Every master of the binary's parallel tests at once (each up to
        // one writer and four readers).
        max_connections: Some(300),
        ..PgOptions::default()
    }) else {
        panic!("{ENV}=postgresql needs a PostgreSQL server: apt-get install postgresql");
    };
    pg.create_db(TEMPLATE);
    {
        let mut client = pg.client(TEMPLATE);
        autobot::db::pgmigrations::migrate(&mut client, &pg.url(TEMPLATE))
            .unwrap_or_else(|e| panic!("{ENV}: migrating the template database: {e}"));
    }
    let watchdog = watchdog(&pg);
    unsafe extern "C" {
        fn atexit(f: extern "C" fn()) -> std::os::raw::c_int;
    }
    // SAFETY: registers a plain function with no arguments, once per process.
    unsafe {
        atexit(stop_at_exit);
    }
    Shared {
        pg,
        dbs: HashMap::new(),
        _watchdog: watchdog,
    }
}

/// Stop the server as the process exits (dropping [`Pg`]: `pg_ctl stop`, then
/// its directory removed).
extern "C" fn stop_at_exit() {
    let taken = SHARED.lock().unwrap_or_else(PoisonError::into_inner).take();
    drop(taken);
}

/// A child that waits for this process to end (its stdin closes), then stops
/// the server and removes its directory: the stop of a process that is killed
/// or aborts, which runs no `atexit` hook. Its own process group, so a Ctrl-C
/// on the terminal does not end it first.
fn watchdog(pg: &Pg) -> Option<ChildStdin> {
    let bin = super::pg_server::server_bin()?;
    let dir = pg.socket_dir();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "trap '' INT HUP; read _; \"$0\" -D \"$1\" -m immediate -w stop >/dev/null 2>&1; rm -rf \"$2\"",
    ])
    .arg(bin.join("pg_ctl"))
    .arg(dir.join("data"))
    .arg(dir)
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0);
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").ok().flatten()?;
        cmd.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
    }
    let mut child = cmd.spawn().ok()?;
    let stdin = child.stdin.take();
    // Reaped by init once this process is gone; never waited for here.
    std::mem::forget(child);
    stdin
}

/// The database of the master whose `state.sqlite` would be `db_file`
/// (`DIR/state.sqlite`, as [`autobot::db::DB_FILE`] names it): that file, or
/// under the switch DIR's PostgreSQL database. For a test that reads (or
/// fills) a master's history itself, where it wrote `Db::open(&db_file)`.
pub fn master_db(db_file: &Path) -> autobot::db::Db {
    let dir = db_file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let key = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    let url = {
        let guard = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .and_then(|s| s.dbs.get(&key).map(|name| s.pg.url(name)))
    };
    let Some(url) = url else {
        return autobot::db::Db::open(db_file).unwrap();
    };
    // Connecting blocks: off any async runtime of the caller.
    std::thread::spawn(move || {
        let parsed = autobot::db::pg::parse_url(&url).unwrap();
        autobot::db::Db::open_postgres(&parsed, None, &dir).unwrap()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Run one query (SQLite's spelling, `?1` parameters: [`autobot::db::sql`]
/// translates it) on the database of the master whose `state.sqlite` would be
/// `db_file`, as [`master_db`] finds it, on a connection of its own; its rows.
/// Blocking, for a test's poll of the master's history while it runs.
pub fn query_master_db(
    db_file: &Path,
    sql: &str,
    params: &[autobot::db::sql::Value],
) -> Result<Vec<autobot::db::sql::Row>, String> {
    use autobot::db::sql::{self, Sql};
    let dir = db_file.parent().unwrap_or(Path::new("."));
    let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let url = {
        let guard = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .and_then(|s| s.dbs.get(&key).map(|name| s.pg.url(name)))
    };
    let Some(url) = url else {
        let c = rusqlite::Connection::open(db_file).map_err(|e| e.to_string())?;
        return sql::Lite(&c).query(sql, params).map_err(|e| e.to_string());
    };
    let (sql, params) = (sql.to_string(), params.to_vec());
    // The `postgres` client blocks: off any async runtime of the caller.
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
        sql::Pg(&mut c)
            .query(&sql, &params)
            .map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
