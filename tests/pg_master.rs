//! A master whose history is in PostgreSQL (`db = postgresql://…`), end to
//! end on the real binary and a real PostgreSQL server (started by the test):
//! the bundled `hello` pair made by `create`, pointed at the database; the
//! master refuses a database whose schema it does not know and names
//! `autobot upgrade-db`; after it, builds run green, their rows are in
//! PostgreSQL (no `state.sqlite` is made), the pages and the JSON API show
//! them and their logs, and a restarted master goes on from its history.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::cli::{autobot, create_hello, get_json, http, wait_for};

fn output(a: &assert_cmd::assert::Assert) -> String {
    let o = a.get_output();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Stops the pair (master and slave) when the test ends, even failing.
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = autobot().args(["stop", self.0.to_str().unwrap()]).output();
    }
}

/// Point the `master.ini` of `master` at `url`, the password (if any) in a
/// file beside it.
fn use_postgres(master: &Path, url: &str, password: Option<&str>) {
    let ini = master.join("master.ini");
    let mut keys = format!("db = {url}\nmasterName = m-1\n");
    if let Some(pw) = password {
        let file = master.join("db.password");
        std::fs::write(&file, pw).unwrap();
        keys.push_str(&format!("dbPasswordFile = {}\n", file.display()));
    }
    let text = std::fs::read_to_string(&ini).unwrap();
    std::fs::write(
        &ini,
        text.replacen("[:master:]\n", &format!("[:master:]\n{keys}"), 1),
    )
    .unwrap();
}

fn force_wait(dir: &Path) {
    let a = autobot()
        .args(["force", dir.to_str().unwrap(), "hello-slave", "--wait"])
        .timeout(Duration::from_secs(120))
        .assert();
    let out = output(&a);
    a.success();
    assert!(out.contains("success"), "{out}");
}

#[test]
fn a_master_on_postgresql_builds_and_keeps_its_history_there() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    server.create_db("bot");
    let url = server.url("bot");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pair");
    let [_, htmlport, _] = create_hello(&dir);
    let master = dir.join("master");
    use_postgres(&master, &url, server.password());

    // An empty database: the master names the command that makes the schema.
    let a = autobot()
        .args(["start", master.to_str().unwrap()])
        .assert()
        .failure();
    let out = output(&a);
    assert!(out.contains("autobot upgrade-db"), "{out}");
    assert!(out.contains("schema version 0"), "{out}");
    autobot()
        .args(["upgrade-db", master.to_str().unwrap()])
        .assert()
        .success();

    autobot()
        .args(["start", dir.to_str().unwrap()])
        .assert()
        .success();
    let _stop = Stop(dir.clone());
    force_wait(&dir);
    force_wait(&dir);
    assert!(
        !master.join(autobot::db::DB_FILE).exists(),
        "the history is not in state.sqlite"
    );

    // In PostgreSQL: two green builds, their steps and the Change-less
    // BuildSets that forced them.
    let mut client = server.client("bot");
    let rows = client
        .query(
            "SELECT number, result, master FROM builds WHERE builder = 'hello-slave'
             ORDER BY number",
            &[],
        )
        .unwrap();
    let got: Vec<(i64, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let name = Some("m-1".to_string());
    let ok = Some("success".to_string());
    assert_eq!(
        got,
        vec![(1, ok.clone(), name.clone()), (2, ok, name)],
        "{}",
        server.log()
    );
    let steps: i64 = client
        .query_one("SELECT count(*) FROM steps", &[])
        .unwrap()
        .get(0);
    assert!(steps >= 8, "{steps} steps");

    // The JSON API and the pages read it back, logs included.
    let build = get_json(htmlport, "/api/v1/builders/hello-slave/builds/2").unwrap();
    assert_eq!(build["number"], 2, "{build}");
    assert_eq!(build["result"], "success", "{build}");
    let list = get_json(htmlport, "/api/v1/builders/hello-slave/builds").unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let (status, page) = http(htmlport, "GET", "/builders/hello-slave/builds/1", "").unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("success checkout hello"), "{page}");
    assert!(page.contains("50 lines"), "{page}");
    let (status, log) = http(
        htmlport,
        "GET",
        "/api/v1/builders/hello-slave/builds/1/steps/1/logs/stdio",
        "",
    )
    .unwrap();
    assert_eq!(status, 200, "{log}");
    assert!(!log.is_empty());
    let (status, waterfall) = http(htmlport, "GET", "/waterfall", "").unwrap();
    assert_eq!(status, 200);
    assert!(waterfall.contains("hello-slave"), "{waterfall}");
    let (status, about) = http(htmlport, "GET", "/about", "").unwrap();
    assert_eq!(status, 200);
    assert!(about.contains("PostgreSQL 15"), "{about}");
    assert!(about.contains("of several sharing the database"), "{about}");

    // A restarted master goes on from its history: the next build is #3.
    autobot()
        .args(["stop", master.to_str().unwrap()])
        .assert()
        .success();
    autobot()
        .args(["start", master.to_str().unwrap()])
        .assert()
        .success();
    wait_for("the slave to come back", Duration::from_secs(60), || {
        get_json(htmlport, "/api/v1/slaves")
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|a| a.iter().any(|s| s["connected"] == true))
    });
    force_wait(&dir);
    let n: i64 = client
        .query_one(
            "SELECT max(number) FROM builds WHERE builder = 'hello-slave'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}
