//! Bazaar end to end, with real branches made by `brz` in a temp dir:
//! * the bzr poller turns a commit into a Change (revno, committer, files) and a
//!   build of that revno, and a master that was down reports every missed commit
//!   once;
//! * every checkout mode (update, clobber, copy, export) across new commits on an
//!   autobot slave (its native `bzr` command), a given revno, `got_revision`;
//! * a branch that does not exist fails the checkout step with brz's message;
//! * a stop during a checkout that hangs (a bzr:// server that never answers) ends
//!   the build at once, brz killed.
//!
//! buildbot-worker 4.3 has no bzr command: a stock worker gets the same plan
//! through `shell`, as for svn (tests/vc_svn.rs builds that path).
//!
//! Without `brz` the tests fail under `CI=true` and print SKIP elsewhere.

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

/// Debian's `brz` embeds Python, whose start-up takes the first `python3` on
/// PATH for its own: with a virtualenv first on PATH (scripts/test.sh puts the
/// tools venv there) it cannot import breezy. `PYTHONEXECUTABLE` names brz itself,
/// so the interpreter finds its own installation; set once, before any test of
/// this file starts a process.
fn brz_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(brz) = std::env::split_paths(&path)
            .map(|d| d.join("brz"))
            .find(|p| p.is_file())
        {
            std::env::set_var("PYTHONEXECUTABLE", brz);
        }
    });
}

fn have_brz() -> bool {
    brz_env();
    let ok = Command::new("brz")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        support::skip("`brz` is not installed (Debian: brz)");
    }
    ok
}

/// A Bazaar branch to commit to.
struct BzrBranch {
    dir: PathBuf,
}

impl BzrBranch {
    fn new(dir: &Path) -> BzrBranch {
        let b = BzrBranch {
            dir: dir.to_path_buf(),
        };
        b.brz(&["init", "-q"], "init <init@example.org>");
        b
    }

    fn brz(&self, args: &[&str], who: &str) -> String {
        std::fs::create_dir_all(&self.dir).unwrap();
        let out = Command::new("brz")
            .args(args)
            .current_dir(&self.dir)
            .env("BRZ_EMAIL", who)
            .output()
            .unwrap();
        assert!(out.status.success(), "brz {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Commit `content` to `file` as `who`; the new revno.
    fn commit(&self, who: &str, file: &str, content: &str, msg: &str) -> String {
        let f = self.dir.join(file);
        if let Some(p) = f.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::write(&f, content).unwrap();
        self.brz(&["add", "-q", file], who);
        self.brz(&["commit", "-q", "-m", msg], who);
        self.brz(&["revno"], who)
    }

    fn url(&self) -> String {
        self.dir.display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkout_mode_on_an_autobot_slave() {
    if !have_brz() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = BzrBranch::new(&tmp.path().join("proj"));
    let r1 = up.commit("Ann <ann@example.org>", "a.txt", "one\n", "first");
    std::fs::create_dir_all(tmp.path().join("base")).unwrap();
    let modes = Modes {
        kind: "bzr",
        meta: ".bzr",
        codebase_prop: "got_revision_proj",
        source: &format!("bzr = {}", up.url()),
        bad: &format!("bzr = {}#no-such-branch", tmp.path().join("base").display()),
        bad_says: &["brz: ERROR", "no-such-branch"],
    };
    let second = || up.commit("Bob <bob@example.org>", "a.txt", "two\n", "second");
    every_mode_and_a_bad_branch(&modes, &r1, second, |_, _| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_hanging_bzr_checkout_ends_the_build_promptly() {
    if !have_brz() {
        return;
    }
    let (_silent, port) = silent_server();
    let url = format!("bzr://127.0.0.1:{port}/proj");
    let run = start_and_stop_a_hanging_checkout(&format!("bzr = {url}"), "brz branch", |dir| {
        processes_under(dir, |argv| argv.contains(&url))
    })
    .await;
    run.m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bzr_commits_build_and_nothing_is_lost_while_the_master_is_down() {
    if !have_brz() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = BzrBranch::new(&tmp.path().join("proj"));
    commits_build_and_nothing_is_lost_while_the_master_is_down("bzr", &up.url(), |who, f, c, m| {
        up.commit(who, f, c, m)
    })
    .await;
}
