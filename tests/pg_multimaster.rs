//! Several masters on one PostgreSQL database (Buildbot's multi-master), on
//! the real binary and a real PostgreSQL server started by the test: two
//! masters run the same configuration (only their ports and `masterName`
//! differ), slave `s1` connects to master `a` and `s2` to master `b`.
//! BuildRequests forced through either master are built exactly once, by the
//! master whose slave can build them; every master's JSON API shows every
//! Build. A master killed with SIGKILL in the middle of a Build is found dead
//! by the other within `masterTimeout` (+2 s): its Build ends as EXCEPTION and
//! its request goes back to the queue, to run again when its slave is back.
//! With `sharedDir`, every master serves every Build's log, and its live
//! event stream (`/events`) follows the Builds the other masters run. The
//! schedulers run on one master at a time: Changes sent to either master within
//! `treeStable` make one BuildSet, and they move when that master dies. Three
//! masters with a slave each (each slave also knows the next master) build a
//! 500-request burst exactly once through a SIGKILL of the master holding the
//! poller, whose slave and poller move on.

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
    slaveport: u16,
}

impl Member {
    /// `extra`: more lines of its `[:master:]` (keys, then whole sections).
    fn create(root: &Path, name: &str, slave: &str, url: &str, gate: &Path, extra: &str) -> Member {
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
                 db = {url}\nmasterName = {name}\nmasterTimeout = 3\n{extra}\n\
                 [slave:s1]\n\n[slave:s2]\n\n\
                 [quick]\ntype = shell\nstep.one = true\n\n\
                 [say]\ntype = shell\nstep.say = echo said-so\n\n\
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
            slaveport,
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

    /// Its slave again, made to try this master first and then `others`.
    fn fail_over_to(&self, name: &str, others: &[&Member]) {
        std::fs::remove_dir_all(&self.slave).unwrap();
        let list: Vec<String> = std::iter::once(self)
            .chain(others.iter().copied())
            .map(|m| format!("127.0.0.1:{}", m.slaveport))
            .collect();
        autobot()
            .args([
                "create-slave",
                self.slave.to_str().unwrap(),
                &list.join(","),
                name,
                "pw",
            ])
            .assert()
            .success();
    }

    /// `autobot sendchange` of one Change touching `file` to this master.
    fn sendchange(&self, file: &str) {
        autobot()
            .args(["sendchange", "--master"])
            .arg(format!("127.0.0.1:{}", self.slaveport))
            .args([
                "--auth",
                "hook:s3cret",
                "--username",
                "Ann <ann@example.org>",
                file,
            ])
            .env("HOME", &self.master)
            .current_dir(&self.master)
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

/// Wait (60 s at most) until the count `sql` reads is `n`.
fn wait_count(client: &mut postgres::Client, what: &str, sql: &str, n: i64) {
    wait_for(what, Duration::from_secs(60), || count(client, sql) == n);
}

/// What each test stands on: a server with the database `bot` (its `db =`
/// URL) and a temporary directory with the path of the gate the `hold`
/// builds wait for.
struct Ground {
    server: pg_common::Pg,
    url: String,
    tmp: tempfile::TempDir,
    gate: PathBuf,
}

fn ground() -> Option<Ground> {
    let server = pg_common::Pg::start()?;
    server.create_db("bot");
    let url = server.url("bot");
    let tmp = tempfile::tempdir().unwrap();
    let gate = tmp.path().join("gate");
    Some(Ground {
        server,
        url,
        tmp,
        gate,
    })
}

impl Ground {
    /// Masters `a` (slave `s1`) and `b` (slave `s2`) on the database, `extra`
    /// in their `[:master:]`, started; a client once both slaves are connected.
    fn pair(&self, extra: &str) -> (Member, Member, postgres::Client) {
        let a = Member::create(self.tmp.path(), "a", "s1", &self.url, &self.gate, extra);
        let b = Member::create(self.tmp.path(), "b", "s2", &self.url, &self.gate, extra);
        let client = start_cluster(&self.server, &[&a, &b]);
        (a, b, client)
    }
}

/// `upgrade-db`, then every member started; a client of the database once
/// every member's slave is connected.
fn start_cluster(server: &pg_common::Pg, members: &[&Member]) -> postgres::Client {
    autobot()
        .args(["upgrade-db", members[0].master.to_str().unwrap()])
        .assert()
        .success();
    for m in members {
        m.start();
    }
    let mut client = server.client("bot");
    wait_for("every slave", Duration::from_secs(60), || {
        count(
            &mut client,
            "SELECT count(*) FROM slaves WHERE connected = 1",
        ) == members.len() as i64
    });
    client
}

#[test]
fn two_masters_share_the_queue_and_take_over_a_dead_ones_build() {
    let Some(g) = ground() else {
        return;
    };
    let (a, b, mut client) = g.pair("");

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
        count(
            &mut client,
            "SELECT count(*) FROM builds WHERE builder LIKE 'quick-%'"
        ),
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
    wait_count(
        &mut client,
        "hold-s1 to run on a",
        "SELECT count(*) FROM builds WHERE builder = 'hold-s1' AND finished_at IS NULL",
        1,
    );
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
    // Its slave is shown gone on every master; b's stays.
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM slaves WHERE name = 's1' AND connected = 0
               AND disconnect_reason = 'its master died'"
        ),
        1
    );
    let slaves = get_json(b.htmlport, "/api/v1/slaves").unwrap();
    let shown = |name: &str| {
        slaves
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["connected"] == true)
    };
    assert_eq!(
        (shown("s1"), shown("s2")),
        (Some(false), Some(true)),
        "{slaves}"
    );
    // a comes back (same name): its slave reconnects, and the request runs
    // again, green this time.
    std::fs::write(&g.gate, "").unwrap();
    let _ = std::fs::remove_file(a.master.join("autobot.pid"));
    autobot()
        .args(["start", a.master.to_str().unwrap()])
        .assert()
        .success();
    wait_count(
        &mut client,
        "hold-s1 to run again",
        "SELECT count(*) FROM builds WHERE builder = 'hold-s1' AND result = 'success'",
        1,
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM buildrequests WHERE complete = 0"
        ),
        0
    );
}

/// The lines of `/events` of the master on `port` up to the first one holding
/// every one of `parts` (read on a thread of its own; `None` after 60 s).
fn follow_events(
    port: u16,
    parts: &'static [&'static str],
) -> std::thread::JoinHandle<Option<String>> {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reader = std::io::BufReader::new(s);
    // The stream is open once its hello comes.
    let mut seen = String::new();
    while !seen.contains(": hello") {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    // The keepalive comments keep each read short: the deadline is the whole
    // wait's.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    std::thread::spawn(move || {
        let mut seen = String::new();
        // A line read in parts across timeouts is kept until it ends.
        let mut line = String::new();
        loop {
            if std::time::Instant::now() > deadline {
                return None;
            }
            match reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return None,
            }
            seen.push_str(&line);
            if parts.iter().all(|p| line.contains(p)) {
                return Some(seen);
            }
            line.clear();
        }
    })
}

/// With `sharedDir`, every master serves the logs of every Build, and its
/// live event stream follows the Builds the other masters run and their
/// slaves connecting and going away.
#[test]
fn every_master_serves_every_log_and_live_event() {
    let Some(Ground {
        server,
        url,
        tmp,
        gate,
    }) = ground()
    else {
        return;
    };
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let extra = format!("sharedDir = {}\n", shared.display());
    let a = Member::create(tmp.path(), "a", "s1", &url, &gate, &extra);
    let b = Member::create(tmp.path(), "b", "s2", &url, &gate, &extra);
    let mut client = start_cluster(&server, &[&a, &b]);
    // b's page follows the Build a runs (s1 is a's slave), forced through b.
    let started = follow_events(b.htmlport, &["build_started", "say-s1"]);
    let finished = follow_events(b.htmlport, &["build_finished", "say-s1"]);
    b.force("say-s1");
    wait_count(
        &mut client,
        "say-s1 built",
        "SELECT count(*) FROM builds WHERE builder = 'say-s1' AND result = 'success'
               AND master = 'a'",
        1,
    );
    let started = started
        .join()
        .unwrap()
        .expect("b's /events showed a's build start");
    assert!(started.contains("\"slave\":\"s1\""), "{started}");
    let finished = finished
        .join()
        .unwrap()
        .expect("b's /events showed a's build end");
    assert!(finished.contains("\"result\":\"success\""), "{finished}");
    // Both masters serve its log, kept in the shared directory.
    for m in [&a, &b] {
        let (status, log) = support::cli::http(
            m.htmlport,
            "GET",
            "/api/v1/builders/say-s1/builds/1/steps/say/logs/stdio",
            "",
        )
        .unwrap();
        assert_eq!(status, 200, "{log}");
        assert!(log.contains("said-so\n"), "{log}");
    }
    assert!(shared.join("logs").join("say-s1").is_dir());
    assert!(!a.master.join("logs").join("say-s1").exists());
    // b's page follows a's slave going away and coming back.
    let lost = follow_events(b.htmlport, &["slave_lost", "\"s1\""]);
    let back = follow_events(b.htmlport, &["slave_connected", "\"s1\""]);
    autobot()
        .args(["stop", a.slave.to_str().unwrap()])
        .assert()
        .success();
    lost.join()
        .unwrap()
        .expect("b's /events showed a's slave s1 going away");
    autobot()
        .args(["start", a.slave.to_str().unwrap()])
        .assert()
        .success();
    back.join()
        .unwrap()
        .expect("b's /events showed a's slave s1 connecting again");
}

/// The schedulers run on one master (the holder of the `schedulers` lease):
/// Changes sent to either master within `treeStable` make one BuildSet, and
/// when that master dies the other takes the schedulers over.
#[test]
fn a_change_through_any_master_is_scheduled_once() {
    let Some(g) = ground() else {
        return;
    };
    std::fs::write(&g.gate, "").unwrap();
    let extra = "treeStable = 2\nchangeuser = hook\nchangepassword = s3cret\n";
    let (a, b, mut client) = g.pair(extra);
    let mut holder = String::new();
    wait_for(
        "a master to hold the schedulers",
        Duration::from_secs(30),
        || {
            let rows = client
                .query("SELECT master FROM leases WHERE name = 'schedulers'", &[])
                .unwrap();
            if let Some(r) = rows.first() {
                holder = r.get(0);
            }
            !holder.is_empty()
        },
    );
    let (holds, other) = if holder == "a" { (&a, &b) } else { (&b, &a) };
    // One Change through the master without the schedulers, one through the
    // other, within treeStable: one BuildSet with both.
    other.sendchange("one.c");
    holds.sendchange("two.c");
    // Three factories (a change scheduler each), two slaves.
    const SCHEDULERS: i64 = 3;
    const BUILDERS: i64 = 6;
    wait_for("the BuildSet built", Duration::from_secs(60), || {
        count(
            &mut client,
            "SELECT count(*) FROM buildrequests WHERE complete = 1",
        ) == BUILDERS
    });
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM buildsets"),
        SCHEDULERS
    );
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM sourcestamp_changes"),
        2 * SCHEDULERS,
        "both Changes in each SourceStamp"
    );
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM buildrequests"),
        BUILDERS
    );

    // The schedulers' master dies: the other takes them over, and a Change
    // sent to it is scheduled (its own slave builds its part).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holds.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let other_name = if holder == "a" { "b" } else { "a" };
    wait_for("the schedulers to move", Duration::from_secs(30), || {
        client
            .query("SELECT master FROM leases WHERE name = 'schedulers'", &[])
            .unwrap()
            .first()
            .map(|r| r.get::<_, String>(0))
            .as_deref()
            == Some(other_name)
    });
    other.sendchange("three.c");
    wait_for("the second BuildSets", Duration::from_secs(30), || {
        count(&mut client, "SELECT count(*) FROM buildsets") == 2 * SCHEDULERS
    });
    wait_for(
        "its builds on the live master",
        Duration::from_secs(60),
        || {
            count(
                &mut client,
                &format!(
                "SELECT count(*) FROM builds WHERE master = '{other_name}' AND result = 'success'
                   AND id IN (SELECT build FROM build_requests br JOIN buildrequests r
                              ON r.id = br.request WHERE r.buildset > {SCHEDULERS})"
            ),
            ) == SCHEDULERS
        },
    );
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM buildsets"),
        2 * SCHEDULERS
    );
}

/// Three masters, a slave each (each slave also knows the next master), 500
/// BuildRequests forced through all three; the master holding the poller's
/// lease is killed with SIGKILL in the middle of the burst: every request is
/// built successfully exactly once (those its master was running run again),
/// its slave moves to the next master, and its poller moves to a live master.
#[test]
fn three_masters_build_a_burst_once_through_a_kill() {
    let Some(Ground {
        server,
        url,
        tmp,
        gate,
    }) = ground()
    else {
        return;
    };
    std::fs::write(&gate, "").unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    support::git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("f"), "1\n").unwrap();
    support::git(&repo, &["add", "f"]);
    support::git(&repo, &["commit", "-q", "-m", "first"]);
    let extra = format!(
        "pollInterval = 1\ntreeStable = 0\n\n[slave:s3]\n\n\
         [polled]\ntype = shell\ngit = {}#main\nstep.ok = true\n\n",
        repo.display()
    );
    let a = Member::create(tmp.path(), "a", "s1", &url, &gate, &extra);
    let b = Member::create(tmp.path(), "b", "s2", &url, &gate, &extra);
    let c = Member::create(tmp.path(), "c", "s3", &url, &gate, &extra);
    a.fail_over_to("s1", &[&b]);
    b.fail_over_to("s2", &[&c]);
    c.fail_over_to("s3", &[&a]);
    let mut client = start_cluster(&server, &[&a, &b, &c]);
    let lease = |client: &mut postgres::Client| -> Option<String> {
        client
            .query(
                "SELECT master FROM leases WHERE name LIKE 'poller:%' AND master IN
                   (SELECT name FROM masters WHERE active = 1)",
                &[],
            )
            .unwrap()
            .first()
            .map(|r| r.get(0))
    };
    let mut holder = None;
    wait_for(
        "a master to poll the repository",
        Duration::from_secs(30),
        || {
            holder = lease(&mut client);
            holder.is_some()
        },
    );
    let holder = holder.unwrap();
    let members = [(&a, "a"), (&b, "b"), (&c, "c")];
    let victim = members.iter().find(|(_, n)| *n == holder).unwrap().0;

    // The burst: through every master, for every builder.
    const FORCES: usize = 500;
    let mut forced = 0i64;
    let mut killed = false;
    for i in 0..FORCES {
        if i == FORCES / 2 {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(victim.pid()),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            killed = true;
        }
        let live: Vec<&Member> = members
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| !(killed && std::ptr::eq(*m, victim)))
            .collect();
        let via = live[i % live.len()];
        let builder = format!("quick-s{}", (i / 3) % 3 + 1);
        let (status, body) = support::cli::http(
            via.htmlport,
            "POST",
            &format!("/api/v1/builders/{builder}/force"),
            "{}",
        )
        .unwrap();
        assert!((200..300).contains(&status), "{status} {body}");
        forced += 1;
    }
    // The poller moves to a live master, which sees a new commit.
    wait_for("the poller to move", Duration::from_secs(30), || {
        lease(&mut client).is_some_and(|m| m != holder)
    });
    std::fs::write(repo.join("f"), "2\n").unwrap();
    support::git(&repo, &["commit", "-q", "-am", "second"]);
    wait_for("the commit's Change", Duration::from_secs(30), || {
        count(&mut client, "SELECT count(*) FROM changes") == 1
    });
    wait_for(
        "every forced request built",
        Duration::from_secs(180),
        || {
            count(
                &mut client,
                "SELECT count(*) FROM buildrequests WHERE builder LIKE 'quick-%' AND complete = 1",
            ) == forced
        },
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM buildrequests WHERE builder LIKE 'quick-%'"
        ),
        forced,
        "nothing lost, nothing added"
    );
    // Each request has exactly one green Build; those interrupted by the
    // kill ended as exception and ran again.
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM buildrequests r WHERE r.builder LIKE 'quick-%' AND
               (SELECT count(*) FROM build_requests br JOIN builds b ON b.id = br.build
                WHERE br.request = r.id AND b.result = 'success') = 1"
        ),
        forced,
        "each request built green exactly once"
    );
    for builder in ["quick-s1", "quick-s2", "quick-s3"] {
        assert_eq!(
            count(
                &mut client,
                &format!(
                    "SELECT count(*) - count(DISTINCT number) FROM builds WHERE builder = '{builder}'"
                )
            ),
            0,
            "{builder}'s numbers repeat"
        );
    }
    // The victim's slave builds on the next master now.
    wait_count(
        &mut client,
        "the polled builds",
        "SELECT count(*) FROM builds WHERE builder LIKE 'polled-%' AND result = 'success'",
        3,
    );
    assert_eq!(
        count(
            &mut client,
            &format!("SELECT count(*) FROM slaves WHERE connected = 1 AND master = '{holder}'")
        ),
        0
    );
}

/// The payloads of `NOTIFY autobot_queued` that `client` (LISTENing) receives
/// up to and including the first that is `last`.
fn queued_up_to(client: &mut postgres::Client, last: &str) -> Vec<String> {
    use postgres::fallible_iterator::FallibleIterator;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let mut notes = client.notifications();
        let mut it = notes.timeout_iter(Duration::from_millis(500));
        while let Some(n) = it.next().unwrap() {
            seen.push(n.payload().to_string());
            if n.payload() == last {
                return seen;
            }
        }
    }
    panic!("no notification {last} within 60 s; seen {seen:?}");
}

#[test]
fn requests_for_a_slave_here_are_not_announced_and_follow_it_to_another_master() {
    let Some(g) = ground() else {
        return;
    };
    let (a, b, mut client) = g.pair("");
    let mut listener = g.server.client("bot");
    listener.batch_execute("LISTEN autobot_queued").unwrap();

    // Three of hold-s1 through a, whose slave s1 builds them: one runs (held),
    // two wait; no other master could claim them, so none is announced. Then
    // one of quick-s2 through a: its slave is on b, so it is announced, and
    // b builds it. (Notifications arrive in commit order: quick-s2's comes
    // after any of hold-s1's.)
    for _ in 0..3 {
        a.force("hold-s1");
    }
    a.force("quick-s2");
    let seen = queued_up_to(&mut listener, "quick-s2");
    assert!(!seen.iter().any(|p| p == "hold-s1"), "{seen:?}");
    wait_count(
        &mut client,
        "quick-s2 built by b",
        "SELECT count(*) FROM builds WHERE builder = 'quick-s2' AND master = 'b'
               AND result = 'success'",
        1,
    );
    wait_count(
        &mut client,
        "hold-s1 to run on a",
        "SELECT count(*) FROM builds WHERE builder = 'hold-s1' AND finished_at IS NULL",
        1,
    );

    // s1 leaves a (a lives on; the Build it ran ends there, its command
    // killed by the slave's stop) and connects to b: b finds the two requests
    // that were never announced, and builds them.
    autobot()
        .args(["stop", a.slave.to_str().unwrap()])
        .assert()
        .success();
    std::fs::write(&g.gate, "").unwrap();
    let moved = g.tmp.path().join("slave-s1-on-b");
    autobot()
        .args(["create-slave", moved.to_str().unwrap()])
        .arg(format!("127.0.0.1:{}", b.slaveport))
        .args(["s1", "pw"])
        .assert()
        .success();
    autobot()
        .args(["start", moved.to_str().unwrap()])
        .assert()
        .success();
    let _stop = StopOnDrop(moved);
    wait_for(
        "every hold-s1 request built on b",
        Duration::from_secs(60),
        || {
            count(
                &mut client,
                "SELECT count(*) FROM buildrequests WHERE builder = 'hold-s1' AND complete = 1",
            ) == 3
        },
    );
    let builds: Vec<String> = client
        .query(
            "SELECT number, master, result FROM builds WHERE builder = 'hold-s1' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.get::<_, i64>(0),
                r.get::<_, String>(1),
                r.get::<_, Option<String>>(2).unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM builds WHERE builder = 'hold-s1' AND result = 'success'
               AND master = 'b'"
        ),
        2,
        "{builds:?}"
    );
}

/// `autobot stop DIR` when dropped.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = autobot().args(["stop", self.0.to_str().unwrap()]).output();
    }
}
