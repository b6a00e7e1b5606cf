//! Benchmark of the issue-26 budgets: masters on PostgreSQL, measured from
//! outside on the real binary (`autobot start`, masters and slaves as daemons;
//! `AUTOBOT_BENCH_BIN` names another binary) and a PostgreSQL server the bench
//! starts itself (initdb + pg_ctl in a temp dir, bench/common/pg.rs) with the
//! server's default durability (fsync and synchronous_commit on; the operator's
//! choice: `--synchronous-commit off` measures the other). Each figure is printed
//! with its budget and PASS or FAIL:
//!
//! * `one_master` — `--builds N` (200) one-step `true` builds forced one after
//!   another on one keep-alive connection through one master whose slave runs
//!   `--max-builds M` (4) at once, first POST → every request complete; on
//!   PostgreSQL (budget ≥ 250 builds/s) and, in the same run, on SQLite (no
//!   budget: the comparison);
//! * `two_masters` — two masters on one database, each with its own slave: N
//!   builds in total, N/2 forced through each master (for its own slave's
//!   builder, both posting at once), first POST → all complete (budget ≥ 400
//!   builds/s);
//! * `live_master_longest_silence_under_a_request_trickle` — one request queued
//!   every sixth of masterTimeout for twice masterTimeout: the longest time a
//!   live master's heartbeat (`masters.last_seen`) is older than now must stay
//!   under masterTimeout, or the others take it for dead (the masters' logs'
//!   "taken for dead" lines are counted);
//! * `takeover` — master `a` killed with SIGKILL while `--held K` (4) requests
//!   it claimed run on its slave: kill → all K running again on master `b`
//!   (budget ≤ masterTimeout + 2 s; `--master-timeout T`, default 3). Slave
//!   `s1` is made with both masters (`create-slave DIR A,B`): it fails over to
//!   `b`, which finds `a` dead, ends its Builds, queues their requests again and
//!   claims them. `a` is killed right after a heartbeat: the longest wait;
//! * `commit_to_start` — a commit in a git repository whose post-commit hook runs
//!   `autobot sendchange` (as a real repository's hook does) → the Build's
//!   `started_at`, treeStable = 0, median of `--commits C` (10) on SQLite and on
//!   PostgreSQL (budget: PostgreSQL within 10 % of SQLite). Both masters run
//!   side by side and take the commits in turn, so the machine's drift weighs
//!   on both alike. The hook, not a
//!   poller: a poller's figure is its poll wait (up to pollInterval, locked to
//!   the phase of the previous build), which hides the database's part.
//!
//! `--rounds R` (1) repeats the throughput figures and reports their median;
//! `--only one|two` runs the one-master or the two-master scenarios alone;
//! `--socket` connects the masters to PostgreSQL over its Unix socket (a
//! master on the database's machine) instead of TCP on 127.0.0.1. Under
//! the one-master figure on PostgreSQL: transactions and WAL syncs per build
//! (`pg_stat_database`, `pg_stat_wal`), and with `AUTOBOT_BENCH_PG_STATEMENTS=1`
//! (pg_stat_statements loaded) the 25 statements run most often, per build.
//! `AUTOBOT_BENCH_KEEP=1` keeps the masters' directories and logs;
//! `AUTOBOT_BENCH_PG_SETTINGS` adds lines to the server's postgresql.conf.
//! Run: `cargo bench --bench pg` (release build) or, for figures of another
//! binary, `AUTOBOT_BENCH_BIN=path/to/autobot cargo bench --profile dev --bench pg`.

#[path = "common/mod.rs"]
mod common;
#[path = "common/pg.rs"]
mod pg;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The change credentials of the bench's masters.
const CHANGE_AUTH: &str = "hook:bench-s3cret";

/// The value after `name` on the command line, or `default`.
fn opt_str(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// Print a figure with its budget and whether it is met.
fn budget(name: &str, value: f64, unit: &str, budget: &str, pass: bool) {
    println!(
        "{name} {value:.3} {unit}   (budget {budget}) {}",
        if pass { "PASS" } else { "FAIL" }
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A daemon (master or slave) the bench started; stopped when dropped.
struct Daemon(PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&*EXE)
            .args(["stop", self.0.to_str().unwrap_or_default()])
            .output();
    }
}

/// A master the bench made: its directory and ports.
struct Master {
    dir: PathBuf,
    sp: u16,
    hp: u16,
    _daemon: Option<Daemon>,
}

/// The master's settings the scenarios differ in.
struct Setup<'a> {
    /// `db` and `masterName` (PostgreSQL), or SQLite.
    db: Option<(&'a str, &'a str)>,
    master_timeout: u64,
    max_builds: u64,
    slaves: &'a [&'a str],
    repo: &'a Path,
    gate: &'a Path,
}

/// Write `dir/master.ini` for `s`.
fn make_master(dir: &Path, s: &Setup) -> Master {
    std::fs::create_dir_all(dir).expect("master dir");
    let (sp, hp, pp) = (free_port(), free_port(), free_port());
    let db = match s.db {
        Some((url, name)) => format!(
            "db = {url}\nmasterName = {name}\nmasterTimeout = {}\n",
            s.master_timeout
        ),
        None => String::new(),
    };
    let slaves: String = s.slaves.iter().map(|n| format!("[slave:{n}]\n")).collect();
    std::fs::write(
        dir.join("master.ini"),
        format!(
            "[:master:]\nslaveport = 127.0.0.1:{sp}\nhtmlport = 127.0.0.1:{hp}\n\
             publichtmlport = 127.0.0.1:{pp}\npassword = pw\nfactories = *\n\
             max_builds = {mb}\nchangeuser = hook\nchangepassword = bench-s3cret\n\
             treeStable = 0\npollInterval = 3600\n{db}\n{slaves}\n\
             [true]\ntype = shell\nstep.true = true\n\n\
             [hold]\ntype = shell\nstep.wait = sh -c \"while [ ! -e {gate} ]; do sleep 0.05; done\"\n\n\
             [proj]\ntype = shell\ngit = {repo}#main\nstep.ok = true\n",
            mb = s.max_builds,
            gate = s.gate.display(),
            repo = s.repo.display(),
        ),
    )
    .expect("master.ini");
    Master {
        dir: dir.to_path_buf(),
        sp,
        hp,
        _daemon: None,
    }
}

fn start_master(m: &mut Master) {
    autobot(&["start", m.dir.to_str().expect("path")]);
    m._daemon = Some(Daemon(m.dir.clone()));
}

/// `create-slave` slave `name` in `dir` for `masters` (tried in order) and
/// start it (not waiting for it to connect).
fn start_slave(dir: &Path, masters: &[&Master], name: &str) -> Daemon {
    let list: Vec<String> = masters
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.sp))
        .collect();
    autobot(&[
        "create-slave",
        dir.to_str().expect("path"),
        &list.join(","),
        name,
        "pw",
    ]);
    autobot(&["start", dir.to_str().expect("path")]);
    Daemon(dir.to_path_buf())
}

/// How many times the masters in `dirs` logged another master taken for dead.
fn taken_for_dead(dirs: &[&Path]) -> usize {
    dirs.iter()
        .map(|d| {
            std::fs::read_to_string(d.join("autobot.log"))
                .unwrap_or_default()
                .matches("taken for dead")
                .count()
        })
        .sum()
}

/// Open connections of slave `name` in a shared database.
fn open_connections(client: &mut postgres::Client, name: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM slave_connections WHERE slave = $1 AND disconnected_at IS NULL",
            &[&name],
        )
        .map(|r| r.get(0))
        .unwrap_or(0)
}

fn get_json(port: u16, path: &str) -> Value {
    let r = autobot::cli::http::request("127.0.0.1", port, "GET", path, None)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    r.json().expect("JSON")
}

/// The result of request `id` once complete.
fn complete(port: u16, id: i64) -> Option<String> {
    let r = get_json(port, &format!("/api/v1/buildrequests/{id}"));
    (r["complete"] == true).then(|| r["result"].as_str().unwrap_or("?").to_string())
}

/// Force `n` builds of `builder` on one keep-alive connection; their request ids.
fn force_many(hp: u16, builder: &str, n: usize) -> Vec<i64> {
    let mut conn = KeepAlive::connect(hp);
    let path = format!("/api/v1/builders/{builder}/force");
    let body = serde_json::json!({"reason": "bench"});
    (0..n)
        .map(|_| {
            let (status, v) = conn.post_json(&path, &body);
            assert!(
                (200..300).contains(&status),
                "force {builder}: HTTP {status}: {v}"
            );
            v["request_id"].as_i64().expect("request_id")
        })
        .collect()
}

/// Wait (polling every 10 ms, as the engine bench) until every request in
/// `ids` is complete, asking master `hp`; panics unless all succeeded.
fn wait_all(hp: u16, ids: &[i64], t0: Instant) {
    let mut pending: Vec<i64> = ids.iter().rev().copied().collect();
    while let Some(&id) = pending.first() {
        match complete(hp, id) {
            Some(result) => {
                assert_eq!(result, "success", "request {id}");
                pending.remove(0);
            }
            None => {
                assert!(t0.elapsed() < Duration::from_secs(300), "all builds");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// One warm-up build (makes the builder's directory on the slave).
fn warm_up(hp: u16, builder: &str) {
    let ids = force_many(hp, builder, 1);
    wait_all(hp, &ids, Instant::now());
}

/// `n` builds through master `hp`: builds/s, first POST → all complete.
fn throughput_once(hp: u16, builder: &str, n: usize) -> f64 {
    let t0 = Instant::now();
    let ids = force_many(hp, builder, n);
    wait_all(hp, &ids, t0);
    n as f64 / t0.elapsed().as_secs_f64()
}

fn rounds_of(what: &str, rounds: usize, mut f: impl FnMut() -> f64) -> f64 {
    let v: Vec<f64> = (0..rounds)
        .map(|i| {
            let r = f();
            if rounds > 1 {
                println!("  {what} round {i}: {r:.1}");
            }
            r
        })
        .collect();
    median(v)
}

/// A git repository in `dir` with one commit on `main`.
fn make_repo(dir: &Path) {
    std::fs::create_dir_all(dir).expect("repo dir");
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("file.txt"), "0\n").expect("write");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "commit 0"]);
}

/// Make `repo`'s post-commit hook send each commit to the master on slaveport
/// `sp` (`autobot sendchange`).
fn set_hook(repo: &Path, sp: u16) {
    let hook = repo.join(".git/hooks/post-commit");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec '{exe}' sendchange --master 127.0.0.1:{sp} --auth {CHANGE_AUTH} \
             --username 'Bench <bench@example.org>' --repository '{repo}' --branch main \
             --revision \"$(git rev-parse HEAD)\" --comments bench file.txt >/dev/null\n",
            exe = *EXE,
            repo = repo.display(),
        ),
    )
    .expect("hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A master whose `proj` factory builds `repo` (its post-commit hook sends
/// each commit to the master), with its slave.
struct Hooked {
    m: Master,
    repo: PathBuf,
    _slave: Daemon,
    /// The number of the last build of `proj-s1` seen.
    last: i64,
}

impl Hooked {
    fn new(m: Master, repo: PathBuf, slave: Daemon) -> Hooked {
        set_hook(&repo, m.sp);
        let mut h = Hooked {
            m,
            repo,
            _slave: slave,
            last: 0,
        };
        h.last = h.newest_number();
        h
    }

    fn newest_number(&self) -> i64 {
        get_json(self.m.hp, "/api/v1/builders/proj-s1/builds?limit=1")[0]["number"]
            .as_i64()
            .unwrap_or(0)
    }

    /// Seconds from `git commit` (its hook sends the Change) to the Build of
    /// `proj-s1` started; it returns once that build finished.
    fn commit_to_start(&mut self) -> f64 {
        static COMMITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let n = COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::fs::write(self.repo.join("file.txt"), format!("{n}\n")).expect("write");
        git(&self.repo, &["add", "-A"]);
        let t0 = autobot::db::now_f64();
        git(&self.repo, &["commit", "-q", "-m", &format!("commit {n}")]);
        // Polled every 20 ms, not every 1: the figure is the build's own
        // `started_at`, and a request every millisecond (each one a database
        // read) would weigh on the master it measures.
        let deadline = Instant::now() + Duration::from_secs(60);
        let build = loop {
            let build = get_json(self.m.hp, "/api/v1/builders/proj-s1/builds?limit=1");
            if build[0]["number"].as_i64().unwrap_or(0) > self.last
                && build[0]["result"].is_string()
            {
                break build;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the build to finish"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.last = build[0]["number"].as_i64().unwrap_or(0);
        assert_eq!(build[0]["result"], "success", "{build}");
        build[0]["started_at"].as_f64().expect("started_at") - t0
    }
}

/// Median seconds from commit to build started on each of `masters`, over
/// `commits` commits each, taken in turn (one commit to each master, then
/// the next), so that the machine's drift weighs on every master alike.
/// Each commit is made after the previous build finished; the first build
/// of each (it clones the repository) is not measured.
fn commits_to_start(masters: &mut [&mut Hooked], commits: usize) -> Vec<f64> {
    for h in masters.iter_mut() {
        h.commit_to_start();
    }
    let mut samples = vec![Vec::new(); masters.len()];
    for _ in 0..commits {
        for (h, s) in masters.iter_mut().zip(&mut samples) {
            s.push(h.commit_to_start());
        }
    }
    samples.into_iter().map(median).collect()
}

/// What PostgreSQL counted for one database, to say what a build costs it:
/// transactions (each a WAL flush when it wrote, with synchronous_commit on)
/// and, with `AUTOBOT_BENCH_PG_STATEMENTS=1` (pg_stat_statements loaded), the
/// statements run most often.
struct Stats<'a> {
    server: &'a pg::Pg,
    db: &'a str,
    commits: i64,
    wal: i64,
}

/// Whether pg_stat_statements is loaded (`AUTOBOT_BENCH_PG_STATEMENTS=1`).
fn statements_on() -> bool {
    std::env::var_os("AUTOBOT_BENCH_PG_STATEMENTS").is_some_and(|v| v == "1")
}

impl<'a> Stats<'a> {
    fn counters(server: &pg::Pg, db: &str) -> (i64, i64) {
        let mut c = server.client(db);
        let commits: i64 = c
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .map(|r| r.get(0))
            .unwrap_or(0);
        let wal: i64 = c
            .query_one("SELECT wal_sync FROM pg_stat_wal", &[])
            .map(|r| r.get(0))
            .unwrap_or(0);
        (commits, wal)
    }

    fn before(server: &'a pg::Pg, db: &'a str) -> Stats<'a> {
        if statements_on() {
            let mut c = server.client(db);
            let _ = c.batch_execute(
                "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()",
            );
        }
        let (commits, wal) = Stats::counters(server, db);
        Stats {
            server,
            db,
            commits,
            wal,
        }
    }

    fn print(&self, label: &str, builds: usize) {
        // The statistics collector lags a little behind the last commit.
        std::thread::sleep(Duration::from_millis(600));
        let (commits, wal) = Stats::counters(self.server, self.db);
        let per = |n: i64| n as f64 / builds as f64;
        println!(
            "  {label}: per build {:.1} transactions, {:.1} WAL syncs",
            per(commits - self.commits),
            per(wal - self.wal)
        );
        if !statements_on() {
            return;
        }
        let rows = self
            .server
            .client(self.db)
            .query(
                "SELECT calls, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
                 FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database
                 WHERE datname = current_database()) ORDER BY calls DESC LIMIT 25",
                &[],
            )
            .unwrap_or_default();
        let total: i64 = self
            .server
            .client(self.db)
            .query_one(
                "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE dbid =
                 (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .map(|r| r.get(0))
            .unwrap_or(0);
        println!(
            "  {label}: per build {:.1} statements (round trips, BEGIN and COMMIT included)",
            per(total)
        );
        for r in rows {
            let (calls, ms, q): (i64, f64, String) = (r.get(0), r.get(1), r.get(2));
            println!(
                "    {:6.2}/build {:7.3} ms/call  {q}",
                per(calls),
                ms / calls.max(1) as f64
            );
        }
    }
}

struct Opts {
    builds: usize,
    rounds: usize,
    max_builds: u64,
    master_timeout: u64,
    held: usize,
    commits: usize,
}

/// Scenario 1 on one master: its builds/s, and the master (with its
/// repository and slave) for scenario 4. `server`: the PostgreSQL server of
/// `db`, whose statistics are printed.
fn one_master(
    tmp: &Path,
    label: &str,
    db: Option<(&str, &str)>,
    server: Option<&pg::Pg>,
    o: &Opts,
) -> (f64, Hooked) {
    let root = tmp.join(format!("one-{label}"));
    let repo = root.join("repo");
    make_repo(&repo);
    let gate = root.join("gate");
    let mut m = make_master(
        &root.join("master"),
        &Setup {
            db,
            master_timeout: o.master_timeout,
            max_builds: o.max_builds,
            slaves: &["s1"],
            repo: &repo,
            gate: &gate,
        },
    );
    if db.is_some() {
        autobot(&["upgrade-db", m.dir.to_str().expect("path")]);
    }
    start_master(&mut m);
    let slave = start_slave(&root.join("slave"), &[&m], "s1");
    wait_until("the slave to connect", Duration::from_secs(60), || {
        connected_count(m.hp) >= 1
    });
    warm_up(m.hp, "true-s1");
    let stats = server.map(|s| Stats::before(s, "one"));
    let rate = rounds_of(&format!("{label} builds/s"), o.rounds, || {
        throughput_once(m.hp, "true-s1", o.builds)
    });
    if let Some(stats) = stats {
        stats.print(label, o.builds * o.rounds);
    }
    (rate, Hooked::new(m, repo, slave))
}

/// Scenarios 2 and 3: two masters on database `two` of `server`.
fn two_masters(tmp: &Path, server: &pg::Pg, o: &Opts) {
    server.create_db("two");
    let url = server.master_url("two");
    let root = tmp.join("two");
    let repo = root.join("repo");
    make_repo(&repo);
    let gate = root.join("gate");
    let setup = |name| Setup {
        db: Some((url.as_str(), name)),
        master_timeout: o.master_timeout,
        max_builds: o.max_builds.max(o.held as u64),
        slaves: &["s1", "s2"],
        repo: &repo,
        gate: &gate,
    };
    let mut a = make_master(&root.join("master-a"), &setup("a"));
    let mut b = make_master(&root.join("master-b"), &setup("b"));
    autobot(&["upgrade-db", a.dir.to_str().expect("path")]);
    start_master(&mut a);
    start_master(&mut b);
    let mut client = server.client("two");
    let _s1 = start_slave(&root.join("slave-s1"), &[&a, &b], "s1");
    let _s2 = start_slave(&root.join("slave-s2"), &[&b], "s2");
    wait_until("both slaves", Duration::from_secs(60), || {
        open_connections(&mut client, "s1") == 1 && open_connections(&mut client, "s2") == 1
    });
    warm_up(a.hp, "true-s1");
    warm_up(b.hp, "true-s2");

    // 2: N builds, half forced through each master for its own slave, both at once.
    let half = o.builds / 2;
    let rate = rounds_of("two masters builds/s", o.rounds, || {
        let t0 = Instant::now();
        let (ha, hb) = (a.hp, b.hp);
        let ta = std::thread::spawn(move || {
            let ids = force_many(ha, "true-s1", half);
            wait_all(ha, &ids, t0);
        });
        let tb = std::thread::spawn(move || {
            let ids = force_many(hb, "true-s2", half);
            wait_all(hb, &ids, t0);
        });
        ta.join().expect("master a's forces");
        tb.join().expect("master b's forces");
        (2 * half) as f64 / t0.elapsed().as_secs_f64()
    });
    budget(
        &format!("two_masters_{}_builds", 2 * half),
        rate,
        "builds/s",
        ">= 400 builds/s",
        rate >= 400.0,
    );
    let twice: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT request FROM build_requests GROUP BY request
                                   HAVING count(*) > 1) t",
            &[],
        )
        .expect("query")
        .get(0);
    assert_eq!(twice, 0, "a request built twice");
    // A master taken for dead while it was alive (its heartbeat late) has its
    // running builds ended as exception: there should be none.
    let exceptions: i64 = client
        .query_one(
            "SELECT count(*) FROM builds WHERE result = 'exception'",
            &[],
        )
        .expect("query")
        .get(0);
    println!("  two masters: builds ended as exception {exceptions} (expected 0)");

    // Requests queued at a trickle (one every half heartbeat, for twice
    // masterTimeout, then as long again without): a live master's heartbeat
    // must go on while the notifications of queued requests arrive, or the
    // others take it for dead (and end its running builds as exception).
    let half_beat = Duration::from_secs_f64(o.master_timeout as f64 / 6.0);
    let t0 = Instant::now();
    let mut max_gap = 0.0f64;
    let mut last_force = None::<Instant>;
    while t0.elapsed() < Duration::from_secs(4 * o.master_timeout) {
        if t0.elapsed() < Duration::from_secs(2 * o.master_timeout)
            && last_force.is_none_or(|t| t.elapsed() >= half_beat)
        {
            force_many(b.hp, "true-s2", 1);
            last_force = Some(Instant::now());
        }
        let now = autobot::db::now_f64();
        for r in client
            .query("SELECT last_seen FROM masters", &[])
            .expect("masters")
        {
            let seen: f64 = r.get(0);
            max_gap = max_gap.max(now - seen);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    budget(
        "live_master_longest_silence_under_a_request_trickle",
        max_gap,
        "s",
        &format!("< masterTimeout = {} s", o.master_timeout),
        max_gap < o.master_timeout as f64,
    );
    println!(
        "  live masters taken for dead so far (their logs): {}",
        taken_for_dead(&[&a.dir, &b.dir])
    );

    // 3: a claims `held` requests of hold-s1 and runs them on s1 (whose
    // slave.ini names a, then b); a dies.
    let held = force_many(a.hp, "hold-s1", o.held);
    let running = |client: &mut postgres::Client, master: &str| -> i64 {
        client
            .query_one(
                "SELECT count(*) FROM builds WHERE builder = 'hold-s1' AND master = $1
                   AND finished_at IS NULL",
                &[&master],
            )
            .map(|r| r.get(0))
            .unwrap_or(0)
    };
    wait_until("a to run the held builds", Duration::from_secs(60), || {
        running(&mut client, "a") == o.held as i64
    });
    // Killed right after its heartbeat: the longest wait for the others.
    let last_seen = |client: &mut postgres::Client| -> f64 {
        client
            .query_one("SELECT last_seen FROM masters WHERE name = 'a'", &[])
            .map(|r| r.get(0))
            .unwrap_or(0.0)
    };
    let seen = last_seen(&mut client);
    wait_until("a's next heartbeat", Duration::from_secs(60), || {
        last_seen(&mut client) > seen
    });
    let pid = pid_of(&a.dir);
    assert!(pid > 0, "master a's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 master a");
    let took = wait_until(
        "a's requests running on b",
        Duration::from_secs(o.master_timeout + 60),
        || running(&mut client, "b") == o.held as i64,
    )
    .as_secs_f64();
    let limit = o.master_timeout as f64 + 2.0;
    budget(
        &format!(
            "takeover_{}_requests_masterTimeout_{}",
            o.held, o.master_timeout
        ),
        took,
        "s",
        &format!("<= masterTimeout + 2 = {limit} s"),
        took <= limit,
    );
    std::fs::write(&gate, "").expect("gate");
    wait_all(b.hp, &held, Instant::now());
}

fn main() {
    let o = Opts {
        builds: opt("--builds", 200).max(2) as usize,
        rounds: opt("--rounds", 1).max(1) as usize,
        max_builds: opt("--max-builds", 4).max(1),
        master_timeout: opt("--master-timeout", 3).max(3),
        held: opt("--held", 4).max(1) as usize,
        commits: opt("--commits", 10).max(1) as usize,
    };
    let sync = opt_str("--synchronous-commit", "");
    let mut settings = if sync.is_empty() {
        String::new()
    } else {
        format!("synchronous_commit = {sync}\n")
    };
    if statements_on() {
        settings.push_str("shared_preload_libraries = 'pg_stat_statements'\n");
    }
    // More postgresql.conf lines, e.g. `log_min_duration_statement = 0`.
    if let Ok(extra) = std::env::var("AUTOBOT_BENCH_PG_SETTINGS") {
        settings.push_str(&extra);
        settings.push('\n');
    }
    // `--only two`: the two-master scenarios alone (`one`: the one-master ones).
    let only = opt_str("--only", "");
    let tmp = tempfile::tempdir().expect("temp dir");
    // AUTOBOT_BENCH_KEEP=1 keeps the masters' directories (and their logs).
    let tmp_path = tmp.path().to_path_buf();
    if std::env::var_os("AUTOBOT_BENCH_KEEP").is_some() {
        std::mem::forget(tmp);
        println!("# keeping {}", tmp_path.display());
    }
    let tmp = &tmp_path;
    let server = pg::Pg::start(free_port(), &settings);
    println!(
        "# autobot {} PostgreSQL bench; binary {}; PostgreSQL {} (fsync {}, synchronous_commit {}); \
         --builds {} --max-builds {} --rounds {}",
        autobot::VERSION,
        *EXE,
        server.show("server_version"),
        server.show("fsync"),
        server.show("synchronous_commit"),
        o.builds,
        o.max_builds,
        o.rounds,
    );
    if only != "two" {
        one_master_figures(tmp, &server, &o);
    }
    if only != "one" {
        two_masters(tmp, &server, &o);
    }
}

/// Scenarios 1 and 4 on SQLite, then on PostgreSQL, printed.
fn one_master_figures(tmp: &Path, server: &pg::Pg, o: &Opts) {
    let (lite_rate, mut lite) = one_master(tmp, "sqlite", None, None, o);
    report(
        &format!("one_master_{}_builds_sqlite", o.builds),
        lite_rate,
        "builds/s",
        None,
        false,
    );
    server.create_db("one");
    let url = server.master_url("one");
    let (pg_rate, mut on_pg) = one_master(tmp, "pg", Some((&url, "m1")), Some(server), o);
    budget(
        &format!("one_master_{}_builds_pg", o.builds),
        pg_rate,
        "builds/s",
        ">= 250 builds/s",
        pg_rate >= 250.0,
    );
    let medians = commits_to_start(&mut [&mut lite, &mut on_pg], o.commits);
    let (lite_latency, pg_latency) = (medians[0], medians[1]);
    report(
        "commit_to_start_median_sqlite",
        lite_latency * 1000.0,
        "ms",
        None,
        true,
    );
    let limit = lite_latency * 1.1;
    budget(
        "commit_to_start_median_pg",
        pg_latency * 1000.0,
        "ms",
        &format!("<= SQLite + 10 % = {:.1} ms", limit * 1000.0),
        pg_latency <= limit,
    );
}
