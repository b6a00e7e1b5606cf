//! The slave's native `git` and `hg` commands, through an in-process master and a real
//! autobot slave: an autobot slave advertises them, so each checkout is one command
//! (its log starts with the master's "checkout by the slave's git command" line, which
//! the operation path never writes). Modes update (build products stay, no clone) and
//! clobber (a fresh clone), `got_revision` from the slave's update, a branch that does
//! not exist failing the checkout step, and a stop during a checkout that hangs (a
//! `git://` server that accepts the connection and never answers) ending the Build
//! promptly — the slave kills the clone instead of the master abandoning it.
//!
//! Without `hg` the hg test fails under `CI=true` and prints SKIP elsewhere.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

#[path = "vc_common/mod.rs"]
mod vc_common;

use std::path::Path;
use std::time::Duration;

use engine_common::*;
use scheduler_common::{have_hg, GitRepo, HgRepo};
use vc_common::*;

const WHO: &str = "Ann Author <ann@example.org>";

/// The line only the native path writes.
fn native_line(kind: &str) -> String {
    format!("checkout by the slave's {kind} command")
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .count()
}

/// Builds `upd` (mode update) and `clob` (mode clobber) twice around a new commit
/// made by `commit`; `head` is the first revision, `file` the repository's file.
async fn update_and_clobber(
    m: &EngineMaster,
    kind: &str,
    file: &str,
    head: &str,
    commit: impl Fn() -> String,
) {
    let dir = |f: &str| m.dir.path().join("slave").join(format!("{f}-{SLAVE}"));
    for f in ["upd", "clob"] {
        let builder = format!("{f}-{SLAVE}");
        let b = force(m, &builder, 1, None, "success").await;
        assert_eq!(prop(&b, "got_revision"), head, "{f}");
        assert_eq!(b.properties["got_revision"].1, "Source");
        let log = m.log_text(&builder, 1, "checkout").await;
        assert!(log.contains(&native_line(kind)), "{f}: {log}");
        assert!(
            log.contains(" clone "),
            "{f}: the first checkout clones: {log}"
        );
        assert_eq!(lines(&dir(f).join("build").join(file)), 1);
    }
    let head = commit();
    for f in ["upd", "clob"] {
        let builder = format!("{f}-{SLAVE}");
        let b = force(m, &builder, 2, None, "success").await;
        assert_eq!(prop(&b, "got_revision"), head, "{f}");
        let log = m.log_text(&builder, 2, "checkout").await;
        assert!(log.contains(&native_line(kind)), "{f}: {log}");
        let tree = dir(f).join("build");
        assert_eq!(lines(&tree.join(file)), 2, "{f}: the new commit is there");
        let products = lines(&tree.join("product"));
        if f == "upd" {
            assert!(!log.contains(" clone "), "update updates in place: {log}");
            assert_eq!(products, 2, "update keeps build products");
        } else {
            assert!(log.contains(" clone "), "clobber clones afresh: {log}");
            assert_eq!(products, 1, "clobber starts afresh");
        }
    }
}

fn factories(source: &str) -> String {
    format!(
        "[upd]\ntype = shell\n{source}mode = update\n{PRODUCT}\n\
         [clob]\ntype = shell\n{source}mode = clobber\n{PRODUCT}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_checkout_by_the_slaves_git_command() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = GitRepo::new(&tmp.path().join("alpha"));
    let head = repo.commit(WHO, "a.txt", "alpha 1");
    let mut ini_factories = factories(&format!("git = {}#main\n", repo.url()));
    ini_factories.push_str(&format!(
        "[bad]\ntype = shell\ngit = {}#no-such-branch\n{PRODUCT}\n",
        repo.url()
    ));
    let m = EngineMaster::start(&master_ini(&ini_factories, ""), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    update_and_clobber(&m, "git", "a.txt", &head, || {
        repo.commit(WHO, "a.txt", "alpha 2")
    })
    .await;

    // A branch the repository does not have: the checkout step fails.
    let builder = format!("bad-{SLAVE}");
    let b = force(&m, &builder, 1, None, "failure").await;
    let steps: Vec<(&str, Option<&str>)> = b
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.result.as_deref()))
        .collect();
    assert_eq!(steps, [("checkout", Some("failure"))], "{}", b.build.text);
    let log = m.log_text(&builder, 1, "checkout").await;
    assert!(log.contains(&native_line("git")), "{log}");
    assert!(log.contains("no-such-branch"), "{log}");
    assert!(!b.properties.contains_key("got_revision_alpha"));
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hg_checkout_by_the_slaves_hg_command() {
    if !have_hg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = HgRepo::new(&tmp.path().join("gamma"));
    let head = repo.commit(WHO, "c.txt", "gamma 1");
    let ini_factories = factories(&format!("hg = {}\n", repo.url()));
    let m = EngineMaster::start(&master_ini(&ini_factories, ""), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    update_and_clobber(&m, "hg", "c.txt", &head, || {
        repo.commit(WHO, "c.txt", "gamma 2")
    })
    .await;
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_hanging_checkout_ends_the_build_promptly() {
    // A git server that never answers: the clone waits for it forever.
    let (_silent, port) = silent_server();
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let source = format!("git = {url}#main\nmirror = false");
    let run = start_and_stop_a_hanging_checkout(&source, "clone", |dir| {
        processes_under(dir, |argv| {
            argv.iter().any(|a| a == "clone") && argv.contains(&url)
        })
    })
    .await;
    let b = &run.build;
    assert!(
        b.steps[0].text.contains("interrupted"),
        "{}",
        b.steps[0].text
    );
    let log = run
        .m
        .log_text(&format!("hang-{SLAVE}"), 1, "checkout")
        .await;
    assert!(log.contains(&native_line("git")), "{log}");
    assert!(
        !log.contains("abandoned"),
        "the slave ended the clone: {log}"
    );
    run.m.master.shutdown().await;
}
