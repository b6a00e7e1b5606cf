//! Helpers shared by the scheduler tests (`tests/scheduler_*.rs`): real git and hg
//! repositories made with their command lines, a master (in-process, real SQLite and
//! TCP) that can be stopped and started again on the same directory, an in-process
//! autobot slave, and waits on the database with deadlines.
//!
//! Include after `support` and `engine_common`:
//! `#[path = "scheduler_common/mod.rs"] mod scheduler_common;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use autobot::app::{Master, MasterOptions};
use autobot::db::builds::{BuildDetail, BuildRow};
use autobot::db::Db;
use autobot::schedulers::Clock;

use crate::engine_common::{DEADLINE, PASSWORD, SLAVE};
use crate::support;

/// A git repository the master polls, committed to with the git CLI.
pub struct GitRepo {
    pub dir: PathBuf,
}

impl GitRepo {
    pub fn new(dir: &Path) -> GitRepo {
        std::fs::create_dir_all(dir).unwrap();
        let r = GitRepo {
            dir: dir.to_path_buf(),
        };
        r.git(&["init", "-q", "-b", "main"], "Init <init@example.org>");
        r
    }

    pub fn git(&self, args: &[&str], who: &str) -> String {
        let (name, email) = split_who(who);
        crate::support::run_ok(
            Command::new("git")
                .args(args)
                .current_dir(&self.dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_AUTHOR_NAME", &name)
                .env("GIT_AUTHOR_EMAIL", &email)
                .env("GIT_COMMITTER_NAME", &name)
                .env("GIT_COMMITTER_EMAIL", &email),
        )
    }

    /// Write `file` (appending a line) and commit it as `who` (`Name <email>`); the
    /// new revision.
    pub fn commit(&self, who: &str, file: &str, message: &str) -> String {
        let p = self.dir.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut text = std::fs::read_to_string(&p).unwrap_or_default();
        text.push_str(message);
        text.push('\n');
        std::fs::write(&p, text).unwrap();
        self.git(&["add", "-A"], who);
        self.git(&["commit", "-q", "-m", message], who);
        self.git(&["rev-parse", "HEAD"], who)
    }

    pub fn url(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }
}

/// Whether `hg` is here; if not, the test fails under `CI=true` and skips
/// elsewhere ([`support::skip`]), and the caller returns.
#[track_caller]
#[must_use]
pub fn have_hg() -> bool {
    support::need_tools(&[("hg", "apt-get install mercurial")])
}

/// A Mercurial repository the master polls.
pub struct HgRepo {
    pub dir: PathBuf,
}

impl HgRepo {
    pub fn new(dir: &Path) -> HgRepo {
        std::fs::create_dir_all(dir).unwrap();
        let r = HgRepo {
            dir: dir.to_path_buf(),
        };
        r.hg(&["init"], "Init <init@example.org>");
        r
    }

    pub fn hg(&self, args: &[&str], who: &str) -> String {
        crate::support::run_ok(
            Command::new("hg")
                .args(args)
                .current_dir(&self.dir)
                .env("HGPLAIN", "1")
                .env("HGRCPATH", "")
                .env("HGUSER", who),
        )
    }

    pub fn commit(&self, who: &str, file: &str, message: &str) -> String {
        let p = self.dir.join(file);
        let mut text = std::fs::read_to_string(&p).unwrap_or_default();
        text.push_str(message);
        text.push('\n');
        std::fs::write(&p, text).unwrap();
        self.hg(&["commit", "-A", "-q", "-m", message], who);
        self.hg(&["log", "-r", ".", "-T", "{node}"], who)
    }

    pub fn url(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }
}

fn split_who(who: &str) -> (String, String) {
    match who.split_once(" <") {
        Some((n, e)) => (n.to_string(), e.trim_end_matches('>').to_string()),
        None => (who.to_string(), format!("{who}@example.org")),
    }
}

/// `[:master:]` with the given extra keys, slaves `names` (all with the engine tests'
/// password, building every factory), then `factories`.
pub fn ini(master_extra: &str, slaves: &[&str], factories: &str) -> String {
    let mut s = format!(
        "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = {PASSWORD}\nfactories = *\n{master_extra}\n"
    );
    for n in slaves {
        s.push_str(&format!("[slave:{n}]\n\n"));
    }
    s.push_str(factories);
    s.push('\n');
    s
}

/// A master directory that outlives the masters started on it.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub clock: Clock,
}

/// A running master with its in-process slaves.
pub struct Running {
    pub master: Master,
    pub slaves: Vec<support::SlaveProc>,
}

impl Site {
    pub fn new(ini: &str) -> Site {
        Site::with_clock(ini, Clock::system())
    }

    pub fn with_clock(ini: &str, clock: Clock) -> Site {
        support::capture_logs();
        let dir = tempfile::tempdir().unwrap();
        crate::support::write_master_ini(dir.path(), ini);
        Site { dir, clock }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Start the master and connect `slaves` (in-process autobot slaves).
    pub async fn start(&self, slaves: &[&str]) -> Running {
        let master = Master::start_with_clock(
            self.dir.path(),
            MasterOptions {
                keepalive_interval: Some(Duration::from_secs(30)),
                slaveport: Some(0),
                htmlport: Some(0),
                publichtmlport: None,
            },
            self.clock.clone(),
        )
        .await
        .unwrap();
        let mut procs = Vec::new();
        for name in slaves {
            let sdir = self.dir.path().join(format!("slave-{name}"));
            let s = support::Impl::Autobot
                .start(&sdir, master.slaveport(), name, PASSWORD)
                .await
                .unwrap();
            master
                .registry()
                .wait_connected(name, DEADLINE)
                .await
                .expect("slave connects");
            procs.push(s);
        }
        Running {
            master,
            slaves: procs,
        }
    }
}

impl Running {
    pub fn db(&self) -> &Db {
        self.master.db()
    }

    /// Stop the slaves, then the master.
    pub async fn stop(self) {
        for s in self.slaves {
            s.stop().await;
        }
        self.master.shutdown().await;
    }
}

/// The default slave name.
pub fn slave() -> &'static str {
    SLAVE
}

/// Poll `cond` until it returns `Some`; panics after the deadline.
pub async fn wait_some<T, F, Fut>(what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the poller stored a head for `url`'s `branch`.
pub async fn wait_head(db: &Db, url: &str, branch: &str) -> String {
    wait_some(
        &format!("the poller's first head of {url}#{branch}"),
        || async { db.poller_heads(url).await.unwrap().get(branch).cloned() },
    )
    .await
}

/// Wait until `builder` has at least `n` builds; its builds oldest first.
pub async fn wait_builds(db: &Db, builder: &str, n: usize) -> Vec<BuildRow> {
    wait_some(&format!("{n} builds of {builder}"), || async {
        let mut b = db.builds(builder, 1000, None).await.unwrap();
        b.reverse();
        (b.len() >= n).then_some(b)
    })
    .await
}

/// Wait until build `number` of `builder` finished; its detail.
pub async fn wait_finished(db: &Db, builder: &str, number: i64) -> BuildDetail {
    wait_some(&format!("{builder} build {number} to finish"), || async {
        db.build(builder, number)
            .await
            .unwrap()
            .filter(|b| b.build.result.is_some())
    })
    .await
}

/// One BuildSet row: (id, scheduler, complete, result, reason).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSetRow {
    pub id: i64,
    pub scheduler: String,
    pub complete: bool,
    pub result: Option<String>,
    pub reason: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    /// Change ids of its SourceStamp.
    pub changes: Vec<i64>,
}

/// Every BuildSet, oldest first.
pub async fn buildsets(db: &Db) -> Vec<BuildSetRow> {
    db.read_sql(|c| {
        let rows = c.query(
            "SELECT bs.id, bs.scheduler, bs.complete, bs.result, bs.reason, ss.branch,
                    ss.revision, bs.sourcestamp
             FROM buildsets bs JOIN sourcestamps ss ON ss.id = bs.sourcestamp ORDER BY bs.id",
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let changes = c
                .query(
                    "SELECT change FROM sourcestamp_changes WHERE sourcestamp = ?1 ORDER BY change",
                    &[r.i64(7)?.into()],
                )?
                .iter()
                .map(|c| c.i64(0))
                .collect::<Result<_, _>>()?;
            out.push(BuildSetRow {
                id: r.i64(0)?,
                scheduler: r.string(1)?,
                complete: r.bool(2)?,
                result: r.opt_string(3)?,
                reason: r.string(4)?,
                branch: r.opt_string(5)?,
                revision: r.opt_string(6)?,
                changes,
            });
        }
        Ok(out)
    })
    .await
    .unwrap()
}

/// BuildSets of one scheduler, oldest first.
pub async fn buildsets_of(db: &Db, scheduler: &str) -> Vec<BuildSetRow> {
    buildsets(db)
        .await
        .into_iter()
        .filter(|b| b.scheduler == scheduler)
        .collect()
}

/// How many Changes wait in schedulers and how many tree-stable timers run.
pub async fn scheduler_backlog(db: &Db) -> (i64, i64) {
    db.read_sql(|c| {
        let pending = c
            .query_one("SELECT count(*) FROM scheduler_changes", &[])?
            .i64(0)?;
        let timers = c
            .query_one("SELECT count(*) FROM scheduler_timers", &[])?
            .i64(0)?;
        Ok((pending, timers))
    })
    .await
    .unwrap()
}

/// The blamelist of a build: its Changes' authors, in Change order, each once.
pub fn blamelist(b: &BuildDetail) -> Vec<String> {
    let mut who: Vec<String> = Vec::new();
    for c in &b.changes {
        if !who.contains(&c.who) {
            who.push(c.who.clone());
        }
    }
    who
}
