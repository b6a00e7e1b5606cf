//! The slave's shared mirror, through the real engine and a real autobot slave: a
//! git repository served by `git daemon` on 127.0.0.1 (the "network", whose log
//! counts every fetch) is built by two builders of one slave. The first build
//! fills the slave's mirror; with the daemon stopped, the second builder still
//! builds the same revision green (from the mirror alone) while a build of the
//! unknown tip fails rather than build a stale one; a new commit, built by both
//! builders at once, is fetched from the daemon exactly once.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autobot::engine::ForceRequest;
use engine_common::*;
use scheduler_common::{wait_head, GitRepo};

/// `git daemon` serving `root` on 127.0.0.1:`port`, logging to `log`; killed when
/// dropped.
struct GitDaemon {
    child: Child,
    log: PathBuf,
}

impl GitDaemon {
    fn start(root: &Path, port: u16, log: &Path) -> GitDaemon {
        let ready = lines(log, "Ready to rumble") + 1;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        // git-daemon itself, not `git daemon` (a parent that would outlive a kill).
        let exec_path = support::run_ok(Command::new("git").arg("--exec-path"));
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg(format!("--base-path={}", root.display()))
            .args(["--export-all", "--verbose", "--reuseaddr"])
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("git daemon");
        let d = GitDaemon {
            child,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + DEADLINE;
        while d.count("Ready to rumble") < ready {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    /// Lines of the daemon's log (all its runs) containing `what`.
    fn count(&self, what: &str) -> usize {
        lines(&self.log, what)
    }

    /// Fetches and clones served so far.
    fn fetches(&self) -> usize {
        self.count("Request upload-pack")
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of `file` containing `what` (none when it does not exist).
fn lines(file: &Path, what: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

async fn force(m: &EngineMaster, builder: &str, revision: Option<&str>) -> i64 {
    m.force(
        builder,
        ForceRequest {
            reason: "mirror test".into(),
            revision: revision.map(String::from),
            ..Default::default()
        },
    )
    .await
}

/// Wait for request `id`; asserts its result and returns build `number`'s
/// got_revision.
async fn finished(m: &EngineMaster, builder: &str, id: i64, number: i64, result: &str) -> String {
    let req = m.wait_request(id).await;
    let b = m.build(builder, number).await;
    assert_eq!(
        req.result.as_deref(),
        Some(result),
        "{builder} #{number}: {}\n{}",
        b.build.text,
        m.log_text(builder, number, "checkout").await
    );
    b.properties
        .get("got_revision")
        .map(|p| p.0.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builders_of_one_slave_share_its_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let repo = GitRepo::new(&served.join("proj"));
    let rev1 = repo.commit("Ann <ann@example.org>", "f", "one");
    let port = free_port();
    let log = tmp.path().join("daemon.log");
    let daemon = GitDaemon::start(&served, port, &log);
    let url = format!("git://127.0.0.1:{port}/proj");

    let factories = format!(
        "[one]\ntype = shell\ngit = {url}#main\nstep.show = cat f\n\n\
         [two]\ntype = shell\ngit = {url}#main\nstep.show = cat f\n"
    );
    let ini = format!(
        "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = {PASSWORD}\nfactories = *\n\
         pollInterval = 3600\n\n[slave:{SLAVE}]\nmax_builds = 2\n\n{factories}"
    );
    let m = EngineMaster::start(&ini, Duration::from_secs(30)).await;
    // The master's poller looks once at start; nothing else may use the daemon.
    wait_head(m.master.db(), &url, "main").await;
    let _slave = m.slave().await;
    let (one, two) = (format!("one-{SLAVE}"), format!("two-{SLAVE}"));
    let slave_dir = m.dir.path().join("slave");

    // 1. The first builder fills the slave's mirror: one fetch.
    let before = daemon.fetches();
    let id = force(&m, &one, Some(&rev1)).await;
    assert_eq!(finished(&m, &one, id, 1, "success").await, rev1);
    assert_eq!(daemon.fetches() - before, 1, "the mirror's first fetch");
    let mirrors: Vec<String> = std::fs::read_dir(slave_dir.join("mirrors"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        mirrors.iter().any(|n| n.starts_with("git-proj-")),
        "{mirrors:?}"
    );

    // 2. No network: the second builder builds the same revision from the mirror.
    daemon.stop();
    let id = force(&m, &two, Some(&rev1)).await;
    assert_eq!(finished(&m, &two, id, 1, "success").await, rev1);
    let show = m.log_text(&two, 1, "show").await;
    assert!(show.contains("one"), "{show}");
    let origin = support::run_ok(
        Command::new("git")
            .args(["config", "remote.origin.url"])
            .current_dir(slave_dir.join(&two).join("build")),
    );
    assert_eq!(
        origin, url,
        "the workdir looks like a clone of the repository"
    );
    // The tip is unknown without the network: the build fails, it never builds a
    // stale tip from the mirror.
    let id = force(&m, &two, None).await;
    finished(&m, &two, id, 2, "failure").await;

    // 3. A new commit, built by both builders at once: fetched once.
    let rev2 = repo.commit("Ann <ann@example.org>", "f", "two");
    let daemon = GitDaemon::start(&served, port, &log);
    let before = daemon.fetches();
    let a = force(&m, &one, Some(&rev2)).await;
    let b = force(&m, &two, Some(&rev2)).await;
    assert_eq!(finished(&m, &one, a, 2, "success").await, rev2);
    assert_eq!(finished(&m, &two, b, 3, "success").await, rev2);
    assert_eq!(
        daemon.fetches() - before,
        1,
        "two builders of one revision, one fetch: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    m.master.shutdown().await;
    daemon.stop();
}
