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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autobot::db::builds::BuildDetail;
use autobot::engine::ForceRequest;
use engine_common::*;

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
const PRODUCT: &str = "step.product = sh -c 'echo built >> product'\n";

async fn force(
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

fn prop<'a>(b: &'a BuildDetail, name: &str) -> &'a str {
    match b.properties.get(name) {
        Some((v, _)) => v,
        None => panic!("no property {name} in {:?}", b.properties),
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkout_mode_on_an_autobot_slave() {
    if !have_darcs() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = DarcsRepo::new(&tmp.path().join("proj"));
    let r1 = up.commit("Ann <ann@example.org>", "a.txt", "one\n", "first");
    let mut factories = String::new();
    for mode in ["update", "clobber", "copy", "export"] {
        factories.push_str(&format!(
            "[{mode}]\ntype = shell\ndarcs = {}\nmode = {mode}\n{PRODUCT}\n",
            up.url()
        ));
    }
    std::fs::create_dir_all(tmp.path().join("base")).unwrap();
    factories.push_str(&format!(
        "[bad]\ntype = shell\ndarcs = {}#no-such-branch\nstep.x = true\n\n",
        tmp.path().join("base").display()
    ));
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let slave = m.dir.path().join("slave");
    for mode in ["update", "clobber", "copy", "export"] {
        let builder = format!("{mode}-{SLAVE}");
        let b1 = force(&m, &builder, 1, None, "success").await;
        assert_eq!(prop(&b1, "got_revision"), r1, "{mode}");
        assert_eq!(prop(&b1, "got_revision_proj"), r1, "{mode}");
        let log = m.log_text(&builder, 1, "checkout").await;
        assert!(
            log.contains("checkout by the slave's darcs command"),
            "{log}"
        );
        let build = slave.join(&builder).join("build");
        assert_eq!(read(&build.join("a.txt")), "one\n");
        assert_eq!(build.join("_darcs").exists(), mode != "export", "{mode}");
    }
    let r2 = up.commit("Bob <bob@example.org>", "a.txt", "two\n", "second");
    for mode in ["update", "clobber", "copy", "export"] {
        let builder = format!("{mode}-{SLAVE}");
        let b2 = force(&m, &builder, 2, None, "success").await;
        assert_eq!(prop(&b2, "got_revision"), r2, "{mode}");
        let build = slave.join(&builder).join("build");
        assert_eq!(read(&build.join("a.txt")), "two\n", "{mode}");
        let want = if mode == "update" {
            "built\nbuilt\n"
        } else {
            "built\n"
        };
        assert_eq!(read(&build.join("product")), want, "{mode}");
    }
    let b3 = force(&m, &format!("update-{SLAVE}"), 3, Some(&r1), "success").await;
    assert_eq!(prop(&b3, "got_revision"), r1);
    assert_eq!(
        read(&slave.join(format!("update-{SLAVE}/build/a.txt"))),
        "one\n"
    );
    let bad = format!("bad-{SLAVE}");
    force(&m, &bad, 1, None, "failure").await;
    let log = m.log_text(&bad, 1, "checkout").await;
    assert!(log.contains("no-such-branch"), "{log}");
    assert!(log.contains("exit status"), "{log}");
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_hanging_darcs_checkout_ends_the_build_promptly() {
    if !have_darcs() {
        return;
    }
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/proj");
    let factories = format!("[hang]\ntype = shell\ndarcs = {url}\n{PRODUCT}\n");
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let builder = format!("hang-{SLAVE}");
    let id = m.force(&builder, ForceRequest::default()).await;
    let slave_dir = m.dir.path().join("slave");
    wait_until("the slave's darcs clone is running", || {
        let found = !darcs_processes(&slave_dir, &url).is_empty();
        async move { found }
    })
    .await;
    let procs = darcs_processes(&slave_dir, &url);
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
    assert!(took < Duration::from_secs(4), "the stop took {took:?}");
    for pid in procs {
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        assert!(gone, "darcs {pid} was killed");
    }
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn darcs_commits_build_and_nothing_is_lost_while_the_master_is_down() {
    use scheduler_common::{blamelist, ini, wait_finished, wait_head, Site};
    if !have_darcs() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = DarcsRepo::new(&tmp.path().join("proj"));
    let first = up.commit("Init <init@example.org>", "README", "initial\n", "initial");
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 1",
        &["s1"],
        &format!(
            "[proj]\ntype = shell\ndarcs = {}\nstep.show = cat src/a.c\n",
            up.url()
        ),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    // A branch without #PATH is the branch named "" (the URL itself).
    assert_eq!(wait_head(&db, &up.url(), "").await, first);
    let rev = up.commit("Ann <ann@example.org>", "src/a.c", "one\n", "one");
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
        .map(|(i, who)| up.commit(who, "src/a.c", &format!("{i}\n"), "offline"))
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

/// Processes running `darcs … URL` with their working directory under `dir`.
fn darcs_processes(dir: &Path, url: &str) -> Vec<u32> {
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
        if argv.iter().any(|a| a == url) && cwd.starts_with(&dir) {
            out.push(pid);
        }
    }
    out
}
