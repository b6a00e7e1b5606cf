//! Helpers and test bodies shared by the version-control tests (`tests/vc_svn.rs`,
//! `tests/vc_bzr.rs`, `tests/vc_darcs.rs`, `tests/vc_cvs.rs`, `tests/vc_arch.rs`,
//! `tests/slave_vc.rs`): forcing a build and
//! checking its result, reading properties and files, every checkout mode across a
//! new commit on an autobot slave, a checkout that fails, a stop during a checkout
//! that hangs (the tool's processes killed), and a poller whose commits build with
//! nothing lost while the master is down. What differs between the tools (their
//! name, metadata directory, error text, how a repository is made and committed to)
//! is passed in.
//!
//! Include after `support`, `engine_common` and `scheduler_common`:
//! `#[path = "vc_common/mod.rs"] mod vc_common;`.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use autobot::db::builds::BuildDetail;
use autobot::engine::ForceRequest;

use crate::engine_common::*;

/// Each build appends to a build product in the tree.
pub const PRODUCT: &str = "step.product = sh -c 'echo built >> product'\n";

/// The checkout modes a slave's native command supports.
pub const MODES: [&str; 4] = ["update", "clobber", "copy", "export"];

/// Forces build `number` of `builder` (at `revision`, else the newest) and asserts
/// it ends with `result`, showing the checkout log if not.
pub async fn force(
    m: &EngineMaster,
    builder: &str,
    number: i64,
    revision: Option<&str>,
    result: &str,
) -> BuildDetail {
    let id = m
        .force(
            builder,
            ForceRequest {
                reason: format!("{builder} #{number}"),
                revision: revision.map(String::from),
                ..Default::default()
            },
        )
        .await;
    let req = m.wait_request(id).await;
    let b = m.build(builder, number).await;
    assert_eq!(
        req.result.as_deref(),
        Some(result),
        "{builder} #{number}: {}\n{}",
        b.build.text,
        m.log_text(builder, number, "checkout").await
    );
    b
}

/// A build's property `name` (panics, listing them, when it has none).
pub fn prop<'a>(b: &'a BuildDetail, name: &str) -> &'a str {
    match b.properties.get(name) {
        Some((v, _)) => v,
        None => panic!("no property {name} in {:?}", b.properties),
    }
}

/// A file's text (panics naming the file).
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One factory per checkout mode, named after it, checking out `source` (a
/// factory line such as `bzr = URL`).
pub fn mode_factories(source: &str) -> String {
    MODES
        .iter()
        .map(|mode| format!("[{mode}]\ntype = shell\n{source}\nmode = {mode}\n{PRODUCT}\n"))
        .collect()
}

/// What [`every_checkout_mode`] checks of a tool.
pub struct Modes<'a> {
    /// The factory line of the repository checked out (`bzr = URL`).
    pub source: &'a str,
    /// The factory line of a branch that does not exist (and any other keys).
    pub bad: &'a str,
    /// What the failing checkout's log says.
    pub bad_says: &'a [&'a str],
    /// The tool's name in the native checkout's log line (`svn`).
    pub kind: &'a str,
    /// The metadata directory a checkout has and an export has not (`.svn`).
    pub meta: &'a str,
    /// The codebase's own `got_revision_*` property.
    pub codebase_prop: &'a str,
}

/// A master with one factory per checkout mode of `t.source` and a `bad` one of
/// `t.bad`, and its autobot slave: [`every_checkout_mode`], then
/// [`bad_checkout_fails`]; the bad build.
pub async fn every_mode_and_a_bad_branch(
    t: &Modes<'_>,
    r1: &str,
    commit: impl FnOnce() -> String,
    first: impl Fn(&str, &Path),
) -> BuildDetail {
    let mut factories = mode_factories(t.source);
    factories.push_str(&format!(
        "[bad]\ntype = shell\n{}\nstep.x = true\n\n",
        t.bad
    ));
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    every_checkout_mode(&m, t, r1, commit, first).await;
    let b = bad_checkout_fails(&m, t.bad_says).await;
    m.master.shutdown().await;
    b
}

/// Builds every mode's builder (see [`mode_factories`]) twice around a new commit
/// made by `commit`, then `update` at the first revision `r1`: `got_revision`, the
/// native path's log line, the tree, the metadata directory, build products kept
/// by update only. `first` checks more of each mode's first build (mode, the
/// builder's directory on the slave).
pub async fn every_checkout_mode(
    m: &EngineMaster,
    t: &Modes<'_>,
    r1: &str,
    commit: impl FnOnce() -> String,
    first: impl Fn(&str, &Path),
) {
    let slave = m.dir.path().join("slave");
    for mode in MODES {
        let builder = format!("{mode}-{SLAVE}");
        let b1 = force(m, &builder, 1, None, "success").await;
        assert_eq!(prop(&b1, "got_revision"), r1, "{mode}");
        assert_eq!(prop(&b1, t.codebase_prop), r1, "{mode}");
        let log = m.log_text(&builder, 1, "checkout").await;
        let native = format!("checkout by the slave's {} command", t.kind);
        assert!(log.contains(&native), "{log}");
        let build = slave.join(&builder).join("build");
        assert_eq!(read(&build.join("a.txt")), "one\n");
        assert_eq!(build.join(t.meta).exists(), mode != "export", "{mode}");
        first(mode, &slave.join(&builder));
    }
    let r2 = commit();
    for mode in MODES {
        let builder = format!("{mode}-{SLAVE}");
        let b2 = force(m, &builder, 2, None, "success").await;
        assert_eq!(prop(&b2, "got_revision"), r2, "{mode}");
        let build = slave.join(&builder).join("build");
        assert_eq!(read(&build.join("a.txt")), "two\n", "{mode}");
        // update keeps build products; the others start from a clean tree.
        let want = if mode == "update" {
            "built\nbuilt\n"
        } else {
            "built\n"
        };
        assert_eq!(read(&build.join("product")), want, "{mode}");
    }
    // A given revision: the tree as it was.
    let b3 = force(m, &format!("update-{SLAVE}"), 3, Some(r1), "success").await;
    assert_eq!(prop(&b3, "got_revision"), r1);
    assert_eq!(
        read(&slave.join(format!("update-{SLAVE}/build/a.txt"))),
        "one\n"
    );
}

/// Builds the `bad` factory's builder, which must fail, and asserts its checkout
/// log has each of `says`; the build.
pub async fn bad_checkout_fails(m: &EngineMaster, says: &[&str]) -> BuildDetail {
    let bad = format!("bad-{SLAVE}");
    let b = force(m, &bad, 1, None, "failure").await;
    let log = m.log_text(&bad, 1, "checkout").await;
    for s in says {
        assert!(log.contains(s), "{log}");
    }
    b
}

/// Whether process `pid` has ended (gone, or a zombie waiting to be reaped).
pub fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Processes whose argv `is_it` accepts, with their working directory under `dir`
/// (the slave's, not the master's poller).
pub fn processes_under(dir: &Path, is_it: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        if is_it(&argv) && cwd.starts_with(&dir) {
            out.push(pid);
        }
    }
    out
}

/// A listener on a free port that accepts connections (the kernel's backlog) and
/// never answers: a checkout from it hangs. Keep it while the test runs.
pub fn silent_server() -> (std::net::TcpListener, u16) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    (silent, port)
}

/// A master, its slave, and the build [`stop_a_hanging_checkout`] stopped.
pub struct Stopped {
    /// Dropped before the master (whose directory holds the slave's).
    pub slave: crate::support::SlaveProc,
    pub m: EngineMaster,
    pub build: BuildDetail,
}

/// A master whose `hang` factory checks out `source` (a factory line; from a
/// [`silent_server`]), and its autobot slave: [`stop_a_hanging_checkout`].
pub async fn start_and_stop_a_hanging_checkout(
    source: &str,
    what: &str,
    procs: impl Fn(&Path) -> Vec<u32>,
) -> Stopped {
    let factories = format!("[hang]\ntype = shell\n{source}\n{PRODUCT}\n");
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let slave = m.slave().await;
    let build = stop_a_hanging_checkout(&m, what, procs).await;
    Stopped { slave, m, build }
}

/// Forces the `hang` factory's builder, whose checkout never ends; once `procs`
/// (given the slave's directory) finds the checkout running, stops the build and
/// asserts it ended cancelled within 4 s with each of those processes killed
/// (`what` names them in the messages). The stopped build.
pub async fn stop_a_hanging_checkout(
    m: &EngineMaster,
    what: &str,
    procs: impl Fn(&Path) -> Vec<u32>,
) -> BuildDetail {
    let builder = format!("hang-{SLAVE}");
    let id = m.force(&builder, ForceRequest::default()).await;
    let slave_dir = m.dir.path().join("slave");
    wait_until(&format!("the slave's {what} is running"), || {
        let found = !procs(&slave_dir).is_empty();
        async move { found }
    })
    .await;
    let running = procs(&slave_dir);
    let t = Instant::now();
    m.engine()
        .stop_build(&builder, 1, "alice", "enough")
        .await
        .unwrap();
    let took = t.elapsed();
    let req = m.wait_request(id).await;
    assert_eq!(req.result.as_deref(), Some("cancelled"));
    let b = m.build(&builder, 1).await;
    assert_eq!(b.build.text, "stopped by alice: enough");
    assert!(
        took < Duration::from_secs(4),
        "the stop took {took:?} (the master abandons after 5 s): {}",
        m.log_text(&builder, 1, "checkout").await
    );
    for pid in running {
        assert!(ended(pid), "the {what} {pid} was killed");
    }
    b
}

/// A poller over one branch of `url` (factory line `{kind} = URL`): a commit made by
/// `commit(who, file, content, message)` (its revision) becomes a Change and a
/// build of it; three commits made while the master is down make one build with
/// the three, each Change once.
pub async fn commits_build_and_nothing_is_lost_while_the_master_is_down(
    kind: &str,
    url: &str,
    commit: impl Fn(&str, &str, &str, &str) -> String,
) {
    use crate::scheduler_common::{blamelist, ini, wait_finished, wait_head, Site};
    let first = commit("Init <init@example.org>", "README", "initial\n", "initial");
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 1",
        &["s1"],
        &format!("[proj]\ntype = shell\n{kind} = {url}\nstep.show = cat src/a.c\n"),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    // A branch without #PATH is the branch named "" (the URL itself).
    assert_eq!(wait_head(&db, url, "").await, first);
    let rev = commit("Ann <ann@example.org>", "src/a.c", "one\n", "one");
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(blamelist(&b), vec!["Ann <ann@example.org>"]);
    assert_eq!(b.changes[0].files, vec!["src/a.c"]);
    assert_eq!(b.changes[0].comments, "one");

    run.stop().await;
    let authors = ["Bob <b@x.org>", "Cy <c@x.org>", "Dee <d@x.org>"];
    let revs: Vec<String> = authors
        .iter()
        .enumerate()
        .map(|(i, who)| commit(who, "src/a.c", &format!("{i}\n"), "offline"))
        .collect();
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let b2 = wait_finished(&db, "proj-s1", 2).await;
    assert_eq!(blamelist(&b2), authors);
    assert_eq!(
        b2.changes
            .iter()
            .map(|c| c.revision.clone().unwrap())
            .collect::<Vec<_>>(),
        revs
    );
    assert_eq!(b2.build.result.as_deref(), Some("success"), "{b2:?}");
    assert_eq!(db.changes(100, None).await.unwrap().len(), 4);
    run.stop().await;
}

/// A master whose one factory `proj` checks out `source` (`treeStable = 0`, a
/// `show` step printing `a.txt`) and takes Changes from `sendchange` (user `hook`),
/// with an autobot slave: `sendchange --vc VC` (and `args`) of `bad` is refused
/// before anything is sent, naming `--vc VC` and `why`; of `good` (whose `a.txt`
/// is "one") it builds that revision green.
pub async fn sendchange_builds_the_revision_sent(
    source: &str,
    vc: &str,
    args: &[&str],
    (bad, why): (&str, &str),
    good: &str,
) {
    let tmp = tempfile::tempdir().unwrap();
    let factories =
        format!("[proj]\ntype = shell\n{source}\ntreeStable = 0\nstep.show = cat a.txt\n");
    let m = EngineMaster::start(
        &master_ini(
            &factories,
            "changeuser = hook\nchangepassword = s3cret\npollInterval = 3600\n",
        ),
        Duration::from_secs(30),
    )
    .await;
    let _slave = m.slave().await;
    let master = format!("127.0.0.1:{}", m.master.slaveport());
    let send = |rev: &str| {
        let mut cmd = std::process::Command::new(autobot_bin());
        cmd.args(["sendchange", "--auth", "hook:s3cret", "--master", &master])
            .args(["--username", "ann", "--vc", vc])
            .args(args)
            .args(["--revision", rev, "a.txt"])
            .current_dir(tmp.path())
            .env("HOME", tmp.path())
            .stdin(std::process::Stdio::null());
        cmd
    };
    let out = tokio::task::spawn_blocking({
        let mut c = send(bad);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(&format!("--vc {vc}")) && err.contains(why),
        "{err}"
    );
    let out = tokio::task::spawn_blocking({
        let mut c = send(good);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let builder = format!("proj-{SLAVE}");
    wait_until("the sent Change's build", || async {
        m.master
            .db()
            .build(&builder, 1)
            .await
            .unwrap()
            .is_some_and(|b| b.build.result.is_some())
    })
    .await;
    let b = m.build(&builder, 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(prop(&b, "got_revision"), good);
    assert!(m.log_text(&builder, 1, "show").await.contains("one"));
    m.master.shutdown().await;
}
