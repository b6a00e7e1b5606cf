//! Darcs end to end, with real repositories made by `darcs` in a temp dir:
//! * the darcs poller turns a recorded patch into a Change (hash, author, files)
//!   and a build of that patch, and a master that was down reports every missed
//!   patch once;
//! * every checkout mode (update, clobber, copy, export) across new patches on an
//!   autobot slave (its native `darcs` command), a given patch hash (`--to-hash`),
//!   `got_revision`;
//! * a repository that does not exist fails the checkout step with darcs' message;
//! * a stop during a checkout that hangs (an http server that never answers) ends
//!   the build at once, darcs killed.
//!
//! buildbot-worker 4.3 has no darcs command: a stock worker gets the same plan
//! through `shell`, as for svn (tests/vc_svn.rs builds that path).
//!
//! Without `darcs` the tests fail under `CI=true` and print SKIP elsewhere.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

#[path = "vc_common/mod.rs"]
mod vc_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vc_common::*;

fn have_darcs() -> bool {
    let ok = Command::new("darcs")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        support::skip("`darcs` is not installed (Debian: darcs)");
    }
    ok
}

/// A Darcs repository to record patches in.
struct DarcsRepo {
    dir: PathBuf,
}

impl DarcsRepo {
    fn new(dir: &Path) -> DarcsRepo {
        std::fs::create_dir_all(dir).unwrap();
        let r = DarcsRepo {
            dir: dir.to_path_buf(),
        };
        r.darcs(&["init", "--quiet"], "init <init@example.org>");
        r
    }

    fn darcs(&self, args: &[&str], who: &str) -> String {
        let out = Command::new("darcs")
            .args(args)
            .current_dir(&self.dir)
            .env("DARCS_EMAIL", who)
            .output()
            .unwrap();
        assert!(out.status.success(), "darcs {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Record `content` in `file` as `who`; the new patch's hash.
    fn commit(&self, who: &str, file: &str, content: &str, msg: &str) -> String {
        let f = self.dir.join(file);
        if let Some(p) = f.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        let existed = f.exists();
        std::fs::write(&f, content).unwrap();
        if !existed {
            self.darcs(&["add", "--quiet", "--recursive", file], who);
        }
        self.darcs(
            &["record", "--quiet", "--all", "--ignore-times", "-m", msg],
            who,
        );
        let log = self.darcs(&["log", "--last=1"], who);
        log.lines()
            .next()
            .and_then(|l| l.strip_prefix("patch "))
            .unwrap_or_else(|| panic!("no hash in {log}"))
            .to_string()
    }

    fn url(&self) -> String {
        self.dir.display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkout_mode_on_an_autobot_slave() {
    if !have_darcs() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = DarcsRepo::new(&tmp.path().join("proj"));
    let r1 = up.commit("Ann <ann@example.org>", "a.txt", "one\n", "first");
    std::fs::create_dir_all(tmp.path().join("base")).unwrap();
    let modes = Modes {
        kind: "darcs",
        meta: "_darcs",
        codebase_prop: "got_revision_proj",
        source: &format!("darcs = {}", up.url()),
        bad: &format!(
            "darcs = {}#no-such-branch",
            tmp.path().join("base").display()
        ),
        bad_says: &["no-such-branch", "exit status"],
    };
    let second = || up.commit("Bob <bob@example.org>", "a.txt", "two\n", "second");
    every_mode_and_a_bad_branch(&modes, &r1, second, |_, _| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_hanging_darcs_checkout_ends_the_build_promptly() {
    if !have_darcs() {
        return;
    }
    let (_silent, port) = silent_server();
    let url = format!("http://127.0.0.1:{port}/proj");
    let run = start_and_stop_a_hanging_checkout(&format!("darcs = {url}"), "darcs clone", |dir| {
        processes_under(dir, |argv| argv.contains(&url))
    })
    .await;
    run.m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn darcs_commits_build_and_nothing_is_lost_while_the_master_is_down() {
    if !have_darcs() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = DarcsRepo::new(&tmp.path().join("proj"));
    commits_build_and_nothing_is_lost_while_the_master_is_down(
        "darcs",
        &up.url(),
        |who, f, c, m| up.commit(who, f, c, m),
    )
    .await;
}
