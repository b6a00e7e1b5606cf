//! Subversion end to end, with real repositories made by `svnadmin create` and
//! reached through `file://` and through `svnserve` on a free port:
//! * the svn poller turns a commit into a Change and a build (files relative to the
//!   branch, the revision number built), a branch under `svnBranchPrefix` is polled
//!   and built from its own path, and a master that was down reports every missed
//!   commit once;
//! * every checkout mode (update, clobber, copy, export) across new commits on an
//!   autobot slave (its native `svn` command), a given revision, `got_revision`;
//! * a bad URL fails the checkout step with svn's own message;
//! * a stop during a checkout that hangs (a server that never answers) ends the
//!   build at once, the svn process killed;
//! * a stock buildbot-worker (no svn command of its own) builds through `shell`;
//! * `checkconfig`'s view: svn keys parsed, `p4` refused saying why.
//!
//! Without `svn`/`svnadmin`/`svnserve` the tests fail under `CI=true` and print SKIP
//! elsewhere.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

#[path = "vc_common/mod.rs"]
mod vc_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine_common::*;
use vc_common::*;

/// Whether svn, svnadmin and svnserve can run (else skipped, failed under CI).
fn have_svn() -> bool {
    for tool in ["svn", "svnadmin", "svnserve"] {
        let ok = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            support::skip(&format!("`{tool}` is not installed (Debian: subversion)"));
            return false;
        }
    }
    true
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An svn repository with `trunk` and `branches/`, and a working copy of each
/// branch to commit from.
struct SvnRepo {
    root: PathBuf,
    tmp: PathBuf,
}

impl SvnRepo {
    fn new(dir: &Path) -> SvnRepo {
        std::fs::create_dir_all(dir).unwrap();
        let root = dir.join("repo");
        run(Command::new("svnadmin").arg("create").arg(&root));
        let repo = SvnRepo {
            root,
            tmp: dir.to_path_buf(),
        };
        run(Command::new("svn").args([
            "mkdir",
            "-q",
            "--username",
            "init",
            "-m",
            "layout",
            &repo.url("trunk"),
            &repo.url("branches"),
        ]));
        repo
    }

    /// `file:///…/repo[/path]`.
    fn url(&self, path: &str) -> String {
        let base = format!("file://{}", self.root.display());
        if path.is_empty() {
            base
        } else {
            format!("{base}/{path}")
        }
    }

    /// Commit `content` to `file` on `path` (e.g. `trunk`) as `who`; the revision.
    fn commit(&self, who: &str, path: &str, file: &str, content: &str, msg: &str) -> String {
        let wc = self.tmp.join(format!("wc-{}", path.replace('/', "_")));
        if !wc.exists() {
            run(Command::new("svn")
                .args(["checkout", "-q", &self.url(path)])
                .arg(&wc));
        }
        run(Command::new("svn").args(["update", "-q"]).arg(&wc));
        let f = wc.join(file);
        if let Some(p) = f.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        let existed = f.exists();
        std::fs::write(&f, content).unwrap();
        if !existed {
            run(Command::new("svn").args(["add", "-q", "--parents"]).arg(&f));
        }
        let out = run(Command::new("svn")
            .args(["commit", "--username", who, "-m", msg])
            .arg(&wc));
        out.lines()
            .find_map(|l| l.strip_prefix("Committed revision "))
            .map(|r| r.trim_end_matches('.').to_string())
            .unwrap_or_else(|| panic!("no revision in {out}"))
    }

    /// `svn copy` trunk to `branches/NAME`; the revision.
    fn branch(&self, name: &str) -> String {
        let out = run(Command::new("svn").args([
            "copy",
            "--username",
            "init",
            "-m",
            "branch",
            &self.url("trunk"),
            &self.url(&format!("branches/{name}")),
        ]));
        out.lines()
            .find_map(|l| l.strip_prefix("Committed revision "))
            .map(|r| r.trim_end_matches('.').to_string())
            .unwrap_or_else(|| panic!("no revision in {out}"))
    }
}

/// `svnserve -d --foreground` serving `root` on a free port; killed on drop.
struct Svnserve {
    child: Child,
    port: u16,
}

impl Svnserve {
    fn start(root: &Path) -> Svnserve {
        let port = free_port();
        let child = Command::new("svnserve")
            .args(["-d", "--foreground", "--listen-host", "127.0.0.1"])
            .arg("--listen-port")
            .arg(port.to_string())
            .arg("-r")
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "svnserve never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        Svnserve { child, port }
    }
}

impl Drop for Svnserve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkout_mode_over_svnserve_on_an_autobot_slave() {
    if !have_svn() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = SvnRepo::new(tmp.path());
    let r1 = repo.commit("ann", "trunk", "a.txt", "one\n", "first");
    let serve = Svnserve::start(&repo.tmp);
    let url = format!("svn://127.0.0.1:{}/repo", serve.port);
    let modes = Modes {
        kind: "svn",
        meta: ".svn",
        codebase_prop: "got_revision_repo",
        source: &format!("svn = {url}#trunk"),
        // A branch that does not exist: the step fails with svn's message, after
        // the retry.
        bad: &format!("svn = {url}#no/such/branch\nretry = 0 1"),
        bad_says: &[
            "svn: E",
            "no/such/branch",
            "checkout failed, trying 1 more time",
        ],
    };
    let second = || repo.commit("bob", "trunk", "a.txt", "two\n", "second");
    let b = every_mode_and_a_bad_branch(&modes, &r1, second, |mode, dir| {
        if matches!(mode, "copy" | "export") {
            assert!(dir.join("source/.svn").is_dir(), "{mode}");
        }
    })
    .await;
    assert_eq!(b.steps[0].result.as_deref(), Some("failure"));
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_hanging_svn_checkout_ends_the_build_promptly() {
    if !have_svn() {
        return;
    }
    let (_silent, port) = silent_server();
    let url = format!("svn://127.0.0.1:{port}/repo");
    let run = start_and_stop_a_hanging_checkout(&format!("svn = {url}"), "svn checkout", |dir| {
        processes_under(dir, |argv| {
            argv.first().is_some_and(|a| a.ends_with("svn"))
                && argv.iter().any(|a| a.starts_with(&url))
        })
    })
    .await;
    run.m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_buildbot_worker_builds_svn_through_shell() {
    if !have_svn() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = SvnRepo::new(tmp.path());
    let r1 = repo.commit("ann", "trunk", "version", "v1\n", "first");
    let factories = format!(
        "[proj]\ntype = shell\nsvn = {}#trunk\nstep.check = sh -c 'echo checking $(cat version)'\n",
        repo.url("")
    );
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let Some(_worker) = m.worker().await else {
        return;
    };
    let builder = format!("proj-{SLAVE}");
    let b1 = force(&m, &builder, 1, None, "success").await;
    assert_eq!(prop(&b1, "got_revision"), r1);
    let log = m.log_text(&builder, 1, "check").await;
    assert!(log.contains("checking v1"), "{log}");
    let r2 = repo.commit("bob", "trunk", "version", "v2\n", "second");
    let b2 = force(&m, &builder, 2, None, "success").await;
    assert_eq!(prop(&b2, "got_revision"), r2);
    let log = m.log_text(&builder, 2, "check").await;
    assert!(log.contains("checking v2"), "{log}");
    let co = m.log_text(&builder, 2, "checkout").await;
    assert!(co.contains("switch"), "mode update switches in place: {co}");
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svn_commits_build_per_branch_and_nothing_is_lost_while_the_master_is_down() {
    use scheduler_common::{blamelist, ini, wait_finished, wait_head, Site};
    if !have_svn() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = SvnRepo::new(&tmp.path().join("r"));
    let first = repo.commit("init", "trunk", "README", "initial\n", "initial");
    repo.branch("stable");
    let base = repo.url("");
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 1",
        &["s1"],
        &format!(
            "[proj]\ntype = shell\nsvn = {base}#trunk\nsvnBranchPrefix = branches\n\
             branches = trunk stable\nstep.show = cat src/a.c\n"
        ),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    assert_eq!(wait_head(&db, &base, "trunk").await, first);
    wait_head(&db, &base, "stable").await;

    let rev = repo.commit("ann", "trunk", "src/a.c", "trunk one\n", "one");
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(blamelist(&b), vec!["ann"]);
    assert_eq!(b.changes[0].files, vec!["src/a.c"]);
    assert_eq!(b.changes[0].branch.as_deref(), Some("trunk"));

    // A commit on branches/stable is branch `stable`, built from its own path.
    let srev = repo.commit("cy", "branches/stable", "src/a.c", "stable one\n", "fix");
    let b = wait_finished(&db, "proj-s1", 2).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(srev.as_str()));
    assert_eq!(b.changes[0].branch.as_deref(), Some("stable"));
    assert_eq!(b.changes[0].files, vec!["src/a.c"]);
    let f = run
        .db()
        .log_file("proj-s1", 2, "show", "stdio")
        .await
        .unwrap()
        .unwrap();
    assert!(read(&f.path).contains("stable one"));

    // Down while three commits land: one build with the three, each Change once.
    run.stop().await;
    let authors = ["bob", "dee", "eve"];
    let revs: Vec<String> = authors
        .iter()
        .enumerate()
        .map(|(i, who)| repo.commit(who, "trunk", "src/a.c", &format!("{i}\n"), "offline"))
        .collect();
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let b3 = wait_finished(&db, "proj-s1", 3).await;
    assert_eq!(blamelist(&b3), authors);
    assert_eq!(
        b3.changes
            .iter()
            .map(|c| c.revision.clone().unwrap())
            .collect::<Vec<_>>(),
        revs
    );
    assert_eq!(b3.build.result.as_deref(), Some("success"), "{b3:?}");
    assert_eq!(db.changes(100, None).await.unwrap().len(), 5);
    run.stop().await;
}

#[test]
fn svn_keys_are_read_and_p4_is_refused_with_the_reason() {
    let projects = autobot::config::projects(None).unwrap();
    let load = |factory: &str| {
        let ini = format!(
            "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = x\nfactories = *\n\n[slave:s]\n\n{factory}"
        );
        autobot::config::load_from_str(Path::new("/m/master.ini"), Path::new("/m"), &ini, &projects)
    };
    let cfg = load("[a]\ntype = shell\nsvn = svn://h/repo#trunk ./local\nsvnBranchPrefix = branches/\nstep.x = true\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let s = &cfg.factories[0].sources;
    assert_eq!(s[0].url, "svn://h/repo");
    assert_eq!(s[0].branch, "trunk");
    assert_eq!(s[0].branch_prefix.as_deref(), Some("branches"));
    assert_eq!(s[1].url, "file:///m/local");
    assert_eq!(s[1].branch, "");
    assert_eq!(autobot::sources::svn_branch_path(&s[0], "trunk"), "trunk");
    assert_eq!(
        autobot::sources::svn_branch_path(&s[0], "1.x"),
        "branches/1.x"
    );

    let e = load("[a]\ntype = shell\np4 = perforce:1666\nstep.x = true\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("master.ini:"), "{e}");
    assert!(e.contains("Perforce"), "{e}");
    assert!(e.contains("not supported"), "{e}");
    assert!(e.contains("Debian"), "{e}");

    let e = load("[a]\ntype = shell\nsvnBranchPrefix = branches\nstep.x = true\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("svn"), "{e}");

    let e = load("[a]\ntype = shell\nsvn = https://bot:secret@h/repo#trunk\nstep.x = true\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("password"), "{e}");
    assert!(!e.contains("secret"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendchange_vc_svn_builds_the_revision_sent() {
    if !have_svn() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = SvnRepo::new(tmp.path());
    let r1 = repo.commit("ann", "trunk", "a.txt", "one\n", "first");
    repo.commit("bob", "trunk", "a.txt", "two\n", "second");
    let base = repo.url("");
    // Not an svn revision: refused before anything is sent.
    sendchange_builds_the_revision_sent(
        &format!("svn = {base}#trunk"),
        "svn",
        &["--branch", "trunk", "--repository", &base],
        ("deadbeef", "revision number"),
        &r1,
    )
    .await;
}
