//! Several masters on one PostgreSQL database (Buildbot's multi-master), on
//! the real binary and a real PostgreSQL server started by the test: two
//! masters run the same configuration (only their ports and `masterName`
//! differ), slave `s1` connects to master `a` and `s2` to master `b`.
//! BuildRequests forced through either master are built exactly once, by the
//! master whose slave can build them; every master's JSON API shows every
//! Build. A master killed with SIGKILL in the middle of a Build is found dead
//! by the other within `masterTimeout` (+2 s): its Build ends as EXCEPTION and
//! its request goes back to the queue, to run again when its slave is back.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::cli::{autobot, free_ports, get_json, wait_for};

/// A master of the cluster and its slave, started by `autobot start`.
struct Member {
    master: PathBuf,
    slave: PathBuf,
    htmlport: u16,
}

impl Member {
    fn create(root: &Path, name: &str, slave: &str, url: &str, gate: &Path) -> Member {
        let master = root.join(format!("master-{name}"));
        std::fs::create_dir_all(&master).unwrap();
        let [slaveport, htmlport, publicport] = free_ports();
        let wait = format!(
            "sh -c \"while [ ! -e {} ]; do sleep 0.05; done\"",
            gate.display()
        );
        std::fs::write(
            master.join("master.ini"),
            format!(
                "[:master:]\nslaveport = 127.0.0.1:{slaveport}\nhtmlport = 127.0.0.1:{htmlport}\n\
                 publichtmlport = 127.0.0.1:{publicport}\npassword = pw\nfactories = *\n\
                 db = {url}\nmasterName = {name}\nmasterTimeout = 3\n\n\
                 [slave:s1]\n\n[slave:s2]\n\n\
                 [quick]\ntype = shell\nstep.one = true\n\n\
                 [hold]\ntype = shell\nstep.wait = {wait}\n"
            ),
        )
        .unwrap();
        let slave_dir = root.join(format!("slave-{slave}"));
        autobot()
            .args(["create-slave", slave_dir.to_str().unwrap(), "--ini"])
            .arg(master.join("master.ini"))
            .args(["--name", slave, "--master", "127.0.0.1"])
            .assert()
            .success();
        Member {
            master,
            slave: slave_dir,
            htmlport,
        }
    }

    fn start(&self) {
        for dir in [&self.master, &self.slave] {
            autobot()
                .args(["start", dir.to_str().unwrap()])
                .assert()
                .success();
        }
    }

    fn force(&self, builder: &str) {
        autobot()
            .args(["force", self.master.to_str().unwrap(), builder])
            .assert()
            .success();
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(self.master.join("autobot.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        for dir in [&self.slave, &self.master] {
            let _ = autobot().args(["stop", dir.to_str().unwrap()]).output();
        }
    }
}

fn count(client: &mut postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn two_masters_share_the_queue_and_take_over_a_dead_ones_build() {
    let Some(server) = pg_common::Pg::start() else {
        return;
    };
    server.create_db("bot");
    let url = server.url("bot");
    let tmp = tempfile::tempdir().unwrap();
    let gate = tmp.path().join("gate");
    let a = Member::create(tmp.path(), "a", "s1", &url, &gate);
    let b = Member::create(tmp.path(), "b", "s2", &url, &gate);
    autobot()
        .args(["upgrade-db", a.master.to_str().unwrap()])
        .assert()
        .success();
    a.start();
    b.start();
    let mut client = server.client("bot");
    wait_for("both slaves", Duration::from_secs(60), || {
        count(
            &mut client,
            "SELECT count(*) FROM slaves WHERE connected = 1",
        ) == 2
    });

    // Forced through either master, each for either builder: each request is
    // built once, by the master whose slave builds it.
    const FORCES: usize = 100;
    for i in 0..FORCES {
        let via = if i % 2 == 0 { &a } else { &b };
        via.force(if i % 4 < 2 { "quick-s1" } else { "quick-s2" });
    }
    wait_for("every request built", Duration::from_secs(120), || {
        count(
            &mut client,
            "SELECT count(*) FROM buildrequests WHERE complete = 1",
        ) == FORCES as i64
    });
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM (SELECT request FROM build_requests GROUP BY request
                                   HAVING count(*) > 1) twice"
        ),
        0,
        "a request built twice"
    );
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM builds"),
        FORCES as i64
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM builds WHERE result = 'success' AND
               ((builder = 'quick-s1' AND master = 'a') OR (builder = 'quick-s2' AND master = 'b'))"
        ),
        FORCES as i64,
        "each built green by the master of its slave"
    );
    // Numbers per builder are 1..N without a gap or a repeat.
    for builder in ["quick-s1", "quick-s2"] {
        let n = count(
            &mut client,
            &format!(
                "SELECT count(DISTINCT number) FROM builds WHERE builder = '{builder}'
                 AND number BETWEEN 1 AND {}",
                FORCES / 2
            ),
        );
        assert_eq!(n, FORCES as i64 / 2, "{builder}");
    }
    // Every master shows every Build.
    for m in [&a, &b] {
        for builder in ["quick-s1", "quick-s2"] {
            let build = get_json(
                m.htmlport,
                &format!("/api/v1/builders/{builder}/builds/{}", FORCES / 2),
            )
            .unwrap();
            assert_eq!(build["result"], "success", "{build}");
        }
    }
    let masters = count(&mut client, "SELECT count(*) FROM masters WHERE active = 1");
    assert_eq!(masters, 2);

    // Master a dies (SIGKILL) while its slave runs a Build of `hold-s1`
    // (forced through b).
    b.force("hold-s1");
    wait_for("hold-s1 to run on a", Duration::from_secs(60), || {
        count(
            &mut client,
            "SELECT count(*) FROM builds WHERE builder = 'hold-s1' AND finished_at IS NULL",
        ) == 1
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    wait_for("b to take a's Build back", Duration::from_secs(30), || {
        count(
            &mut client,
            "SELECT count(*) FROM builds WHERE builder = 'hold-s1' AND result = 'exception'",
        ) == 1
    });
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(3 + 2),
        "a's death noticed after {took:?}"
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM buildrequests r WHERE builder = 'hold-s1' AND complete = 0
               AND claimed_at IS NULL AND claimed_by IS NULL"
        ),
        1,
        "its request is queued again"
    );
    assert_eq!(
        count(&mut client, "SELECT active FROM masters WHERE name = 'a'"),
        0
    );
    // a comes back (same name): its slave reconnects, and the request runs
    // again, green this time.
    std::fs::write(&gate, "").unwrap();
    let _ = std::fs::remove_file(a.master.join("autobot.pid"));
    autobot()
        .args(["start", a.master.to_str().unwrap()])
        .assert()
        .success();
    wait_for("hold-s1 to run again", Duration::from_secs(60), || {
        count(
            &mut client,
            "SELECT count(*) FROM builds WHERE builder = 'hold-s1' AND result = 'success'",
        ) == 1
    });
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM buildrequests WHERE complete = 0"
        ),
        0
    );
}
