//! `db`, `dbPasswordFile` and `masterName` in master.ini on the real binary:
//! checkconfig's errors at their file:line (a bad URL, a password in it, an
//! unreadable password file), a reconfig that would move a running master to
//! another database refused, and `autobot
//! upgrade-db` on both backends: state.sqlite, and a real PostgreSQL (started
//! by the test) reached with a password from dbPasswordFile or PGPASSFILE, and
//! over TLS as `sslmode` says.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use std::path::Path;

use pg_common::{Pg, PgOptions};
use support::cli::{autobot, free_ports};

fn output(a: &assert_cmd::assert::Assert) -> String {
    let o = a.get_output();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A master directory whose master.ini has `extra` in `[:master:]` (on free
/// ports); returns the line of extra's first line.
fn master(dir: &Path, extra: &str) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let [s, h, p] = free_ports();
    let head = format!(
        "[:master:]\nslaveport = 127.0.0.1:{s}\nhtmlport = 127.0.0.1:{h}\npublichtmlport = 127.0.0.1:{p}\n"
    );
    let line = head.lines().count() + 1;
    std::fs::write(
        dir.join("master.ini"),
        format!(
            "{head}{extra}\n\n[fac]\ntype = shell\nstep.one = true\n\n[slave:s]\npassword = pw-for-s-7Hq\nfactories = *\n"
        ),
    )
    .unwrap();
    line
}

fn checkconfig(dir: &Path) -> (bool, String) {
    let a = autobot()
        .args(["checkconfig", dir.to_str().unwrap()])
        .assert();
    let ok = a.get_output().status.success();
    (ok, output(&a))
}

#[test]
fn checkconfig_names_each_database_key_error_at_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let ini = dir.join("master.ini");
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    for (extra, says) in [
        (
            "db = mysql://bot@db/x",
            "expected `postgresql://USER@HOST:PORT/DBNAME`",
        ),
        ("db = postgresql://bot:s3cret@db/x", "dbPasswordFile"),
        ("db = postgresql://bot@db:70000/x", "port"),
        ("db = postgresql://bot@db/x?sslmode=allow", "sslmode"),
        ("db = postgresql://bot@db", "no database name"),
        (
            "db = postgresql://bot@db/x\ndbPasswordFile = no-such-file",
            "cannot read",
        ),
        (
            "dbPasswordFile = pw",
            "dbPasswordFile without `db = postgresql://",
        ),
        ("masterName = two words", "masterName"),
    ] {
        let line = master(&dir, extra);
        let (ok, out) = checkconfig(&dir);
        assert!(!ok, "{extra}: {out}");
        // The line of the key the message is about.
        let key = says_key(extra, says);
        let at = line + extra.lines().position(|l| l.starts_with(key)).unwrap();
        assert!(
            out.contains(&format!("{}:{at}: [:master:] {key}: ", ini.display())),
            "{extra}: {out}"
        );
        assert!(out.contains(says), "{extra}: {out}");
        assert!(
            !out.contains("s3cret"),
            "the password is never shown: {out}"
        );
    }

    // No `db`: SQLite, named with the master's name.
    master(&dir, "masterName = m-1");
    let (ok, out) = checkconfig(&dir);
    assert!(ok, "{out}");
    assert!(
        out.contains("database: SQLite (state.sqlite); masterName m-1"),
        "{out}"
    );
    master(&dir, "");
    let (ok, out) = checkconfig(&dir);
    assert!(ok, "{out}");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert!(
        out.contains(&format!("masterName {host}")),
        "the host name by default: {out}"
    );

    // A valid PostgreSQL `db`: checkconfig names it (never the password).
    master(
        &dir,
        &format!(
            "db = postgresql://bot@db.example.org/x\ndbPasswordFile = {}",
            pw.display()
        ),
    );
    let (ok, out) = checkconfig(&dir);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "database: postgresql://bot@db.example.org:5432/x, password from {}",
            pw.display()
        )),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "{out}");
    // `start` cannot reach that server: it says so, exits non-zero, and
    // makes no state.sqlite instead.
    let a = autobot()
        .args(["start", dir.to_str().unwrap()])
        .assert()
        .failure();
    let out = output(&a);
    assert!(out.contains("db.example.org"), "{out}");
    assert!(
        !dir.join(autobot::db::DB_FILE).exists(),
        "no state.sqlite made"
    );
}

/// Which key an error of `extra` is about.
fn says_key<'a>(extra: &'a str, says: &str) -> &'a str {
    if says.contains("dbPasswordFile without") || extra.contains("no-such-file") {
        "dbPasswordFile"
    } else if says == "masterName" {
        "masterName"
    } else {
        "db"
    }
}

#[test]
fn upgrade_db_on_sqlite_says_from_which_version_to_which() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    master(&dir, "");
    let known = autobot::db::migrations::MIGRATIONS.len();
    let a = autobot()
        .args(["upgrade-db", dir.to_str().unwrap()])
        .assert()
        .success();
    let out = output(&a);
    assert!(
        out.contains(&format!("schema created (version 0 to {known})")),
        "{out}"
    );
    // An older database: one version behind.
    autobot::db::backup::set_schema_version(&dir.join("state.sqlite"), known as i64 - 1).unwrap();
    let c = rusqlite::Connection::open(dir.join("state.sqlite")).unwrap();
    // What the last migration (15: the builders' Build numbers) made.
    c.execute_batch("DROP TABLE builder_numbers;").unwrap();
    drop(c);
    let a = autobot()
        .args(["upgrade-db", dir.to_str().unwrap()])
        .assert()
        .success();
    let out = output(&a);
    assert!(
        out.contains(&format!(
            "migrated from schema version {} to {known}",
            known - 1
        )),
        "{out}"
    );
    let a = autobot()
        .args(["upgrade-db", dir.to_str().unwrap()])
        .assert()
        .success();
    assert!(output(&a).contains(&format!("schema version {known}, already current")));
}

#[test]
fn upgrade_db_on_postgresql_with_a_password_file_or_pgpass() {
    let Some(server) = Pg::start_with(PgOptions {
        password: Some("pg-pw:9".into()),
        ..PgOptions::default()
    }) else {
        return;
    };
    server.create_db("bot");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let known = autobot::db::migrations::MIGRATIONS.len();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("db-password"), "pg-pw:9\n").unwrap();
    std::fs::set_permissions(
        dir.join("db-password"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    master(
        &dir,
        &format!("db = {}\ndbPasswordFile = db-password", server.url("bot")),
    );
    let upgrade = || {
        autobot()
            .args(["upgrade-db", dir.to_str().unwrap()])
            .env("HOME", tmp.path())
            .env_remove("PGPASSFILE")
            .assert()
    };
    let a = upgrade().success();
    let out = output(&a);
    assert!(
        out.contains(&format!("schema created (version 0 to {known})")),
        "{out}"
    );
    assert!(out.contains(&server.url("bot")), "{out}");
    let out = output(&upgrade().success());
    assert!(out.contains("already current"), "{out}");
    // A wrong password is refused by the server, and said so.
    std::fs::write(dir.join("db-password"), "wrong\n").unwrap();
    let out = output(&upgrade().failure());
    assert!(out.contains("password authentication failed"), "{out}");
    assert!(!out.contains("wrong"), "the password is never shown: {out}");

    // No dbPasswordFile: PGPASSFILE's line for this server (a colon escaped).
    master(&dir, &format!("db = {}", server.url("bot")));
    let pgpass = tmp.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "# comment\nelsewhere:*:*:*:nope\n127.0.0.1:{}:bot:autobot:pg-pw\\:9\n",
            server.port
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let a = autobot()
        .args(["upgrade-db", dir.to_str().unwrap()])
        .env("PGPASSFILE", &pgpass)
        .assert()
        .success();
    assert!(output(&a).contains("already current"));
    // ~/.pgpass when PGPASSFILE is not set.
    std::fs::copy(&pgpass, tmp.path().join(".pgpass")).unwrap();
    let out = output(&upgrade().success());
    assert!(out.contains("already current"), "{out}");
}

#[test]
fn sslmode_is_honoured() {
    if !support::need_tools(&[("openssl", "apt-get install openssl")]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let certs = support::tls::make_certs(&tmp.path().join("tls"), "127.0.0.1", "IP:127.0.0.1");
    let Some(server) = Pg::start_with(PgOptions {
        tls: Some((certs.cert.clone(), certs.key.clone())),
        tls_only: true,
        ..PgOptions::default()
    }) else {
        return;
    };
    server.create_db("bot");
    let dir = tmp.path().join("m");
    let url = server.url("bot");
    let run = |query: &str| {
        master(&dir, &format!("db = {url}{query}"));
        let a = autobot()
            .args(["upgrade-db", dir.to_str().unwrap()])
            .assert();
        (a.get_output().status.success(), output(&a))
    };
    // The server takes TLS connections only.
    let (ok, out) = run("?sslmode=disable");
    assert!(!ok, "{out}");
    assert!(out.contains("cannot connect"), "{out}");
    let (ok, out) = run("?sslmode=require");
    assert!(ok, "{out}");
    assert!(out.contains("schema created"), "{out}");
    let (ok, out) = run("");
    assert!(ok && out.contains("already current"), "prefer: {out}");
    // verify-full checks the certificate: against its CA it passes; against the
    // system's roots (which do not know this CA) it is refused.
    let (ok, out) = run(&format!(
        "?sslmode=verify-full&sslrootcert={}",
        certs.ca.display()
    ));
    assert!(ok && out.contains("already current"), "{out}");
    let (ok, out) = run("?sslmode=verify-full");
    assert!(!ok, "{out}");
    assert!(out.contains("cannot connect"), "{out}");
}

/// Stops the master in a directory when the test ends, however it ends.
struct Stop<'a>(&'a Path);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = autobot().args(["stop", self.0.to_str().unwrap()]).output();
    }
}

/// A running master (on SQLite) does not move to `db = postgresql://…` on
/// reconfig: `reconfig` says why (restart, after copy-db) and exits non-zero,
/// and the master runs on.
#[test]
fn a_reconfig_to_postgresql_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    master(&dir, "");
    autobot()
        .args(["start", dir.to_str().unwrap()])
        .assert()
        .success();
    let _stop = Stop(&dir);
    let text = std::fs::read_to_string(dir.join("master.ini")).unwrap();
    std::fs::write(
        dir.join("master.ini"),
        text.replacen(
            "[:master:]\n",
            "[:master:]\ndb = postgresql://bot@db.example.org/x\n",
            1,
        ),
    )
    .unwrap();
    let a = autobot()
        .args(["reconfig", dir.to_str().unwrap()])
        .assert()
        .failure();
    let out = output(&a);
    assert!(
        out.contains("a reconfig cannot move a running master"),
        "{out}"
    );
    assert!(out.contains("copy-db"), "{out}");
    let a = autobot()
        .args(["stop", dir.to_str().unwrap()])
        .assert()
        .success();
    drop(a);
}
