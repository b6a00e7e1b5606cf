//! CVS end to end, with a real local CVSROOT made by `cvs init`, a module made by
//! `cvs import` and commits made from a working copy:
//! * the CVS poller turns a commit of two files into one Change (file revisions
//!   grouped by author, message and time), built at the Change's date, and a
//!   master that was down reports every missed commit once;
//! * every checkout mode (update, clobber, copy, export) across a new commit on an
//!   autobot slave (its native `cvs` command), a given revision (a CVS date),
//!   `got_revision` (the date checked out, else the checkout's time);
//! * a module that does not exist fails the checkout step with cvs's message;
//! * a `:pserver:` password reaches the server (a listener here that reads cvs's
//!   authentication request) through the passfile, and never the log;
//! * a stop during a checkout that hangs (a pserver that never answers) ends the
//!   build at once, cvs killed;
//! * a stock buildbot-worker (no cvs command in 4.3) builds through `shell`;
//! * `sendchange --vc cvs` takes a CVS date and refuses anything else.
//!
//! Without `cvs` the tests fail under `CI=true` and print SKIP elsewhere.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

#[path = "vc_common/mod.rs"]
mod vc_common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use engine_common::*;
use vc_common::*;

fn have_cvs() -> bool {
    support::need_tools(&[("cvs", "Debian: cvs")])
}

/// A CVSROOT with module `proj` (imported with `a.txt` = "one") and a working
/// copy to commit from.
struct CvsRepo {
    root: PathBuf,
    wc: PathBuf,
    home: PathBuf,
}

impl CvsRepo {
    fn new(dir: &Path) -> CvsRepo {
        let home = dir.join("home");
        let root = dir.join("cvsroot");
        let imp = dir.join("import");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&imp).unwrap();
        let r = CvsRepo {
            root: root.clone(),
            wc: dir.join("wc"),
            home,
        };
        r.cvs(dir, &["-d", &root.display().to_string(), "init"]);
        std::fs::write(imp.join("a.txt"), "one\n").unwrap();
        r.cvs(
            &imp,
            &[
                "-d",
                &root.display().to_string(),
                "-q",
                "import",
                "-m",
                "initial",
                "proj",
                "vendor",
                "start",
            ],
        );
        r.cvs(
            dir,
            &[
                "-d",
                &root.display().to_string(),
                "-q",
                "checkout",
                "-d",
                "wc",
                "proj",
            ],
        );
        r
    }

    fn cvs(&self, dir: &Path, args: &[&str]) -> String {
        let out = Command::new("cvs")
            .arg("-f")
            .args(args)
            .current_dir(dir)
            .env("HOME", &self.home)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(out.status.success(), "cvs {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The CVS date of `file`'s newest revision, on any branch.
    fn date_of(&self, file: &str) -> String {
        let log = self.cvs(
            &self.wc,
            &[
                "-d",
                &self.root.display().to_string(),
                "-q",
                "rlog",
                "-N",
                &format!("proj/{file}"),
            ],
        );
        log.lines()
            .filter_map(|l| l.strip_prefix("date: "))
            .filter_map(|l| l.split(';').next())
            .max()
            .unwrap_or_else(|| panic!("no date in {log}"))
            .to_string()
    }

    /// Commit `content` to each of `files` with `msg` in a second of its own (so
    /// that each commit has a date of its own); the commit's date.
    fn commit(&self, files: &[(&str, &str)], msg: &str) -> String {
        let start = now();
        while now() == start {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (file, content) in files {
            let f = self.wc.join(file);
            if let Some(p) = f.parent() {
                if !p.exists() {
                    std::fs::create_dir_all(p).unwrap();
                    let rel = p.strip_prefix(&self.wc).unwrap().display().to_string();
                    self.cvs(&self.wc, &["-q", "add", &rel]);
                }
            }
            let existed = f.exists();
            std::fs::write(&f, content).unwrap();
            if !existed {
                self.cvs(&self.wc, &["-q", "add", file]);
            }
        }
        let names: Vec<&str> = files.iter().map(|(f, _)| *f).collect();
        let mut args = vec!["-q", "commit", "-m", msg];
        args.extend(&names);
        self.cvs(&self.wc, &args);
        names.iter().map(|f| self.date_of(f)).max().unwrap()
    }

    /// `cvs = ` of the module (`#branch` appended by the caller).
    fn source(&self) -> String {
        format!("cvs = {} proj", self.root.display())
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Wait until the second of CVS date `date` is over: the poller leaves the
/// current second's revisions for its next poll.
fn wait_past(date: &str) {
    let secs = autobot::changes::parse_cvs_date(date).unwrap() as u64;
    while now() <= secs {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_cvs_date(s: &str) -> bool {
    s.len() == 25 && s.ends_with(" +0000") && s.as_bytes()[4] == b'-'
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkout_mode_a_date_and_a_bad_module_on_an_autobot_slave() {
    if !have_cvs() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = CvsRepo::new(tmp.path());
    let r1 = repo.commit(&[("a.txt", "one\n")], "one again");
    let mut factories = mode_factories(&repo.source());
    factories.push_str(&format!(
        "[bad]\ntype = shell\ncvs = {} nosuchmodule\nstep.x = true\n\n",
        repo.root.display()
    ));
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let slave = m.dir.path().join("slave");
    for mode in MODES {
        let builder = format!("{mode}-{SLAVE}");
        let b1 = force(&m, &builder, 1, None, "success").await;
        // No revision: the time of the checkout, as Buildbot's CVS step.
        let got = prop(&b1, "got_revision");
        assert!(is_cvs_date(got) && got >= r1.as_str(), "{mode}: {got}");
        assert_eq!(prop(&b1, "got_revision_proj"), got);
        let log = m.log_text(&builder, 1, "checkout").await;
        assert!(log.contains("checkout by the slave's cvs command"), "{log}");
        let build = slave.join(&builder).join("build");
        assert_eq!(read(&build.join("a.txt")), "one\n");
        assert_eq!(build.join("CVS").exists(), mode != "export", "{mode}");
    }
    let r2 = repo.commit(&[("a.txt", "two\n"), ("sub/b.txt", "bee\n")], "two");
    for mode in MODES {
        let builder = format!("{mode}-{SLAVE}");
        let b2 = force(&m, &builder, 2, None, "success").await;
        assert!(prop(&b2, "got_revision") >= r2.as_str(), "{mode}");
        let build = slave.join(&builder).join("build");
        assert_eq!(read(&build.join("a.txt")), "two\n", "{mode}");
        assert_eq!(read(&build.join("sub/b.txt")), "bee\n", "{mode}");
        assert_eq!(build.join("sub/CVS").exists(), mode != "export", "{mode}");
        let want = if mode == "update" {
            "built\nbuilt\n"
        } else {
            "built\n"
        };
        assert_eq!(read(&build.join("product")), want, "{mode}");
    }
    // A given revision is a CVS date: the tree as it was then, sticky date and
    // all, and back to the latest after it.
    let b3 = force(&m, &format!("update-{SLAVE}"), 3, Some(&r1), "success").await;
    assert_eq!(prop(&b3, "got_revision"), r1);
    let build = slave.join(format!("update-{SLAVE}/build"));
    assert_eq!(read(&build.join("a.txt")), "one\n");
    assert!(!build.join("sub/b.txt").exists());
    force(&m, &format!("update-{SLAVE}"), 4, None, "success").await;
    assert_eq!(read(&build.join("a.txt")), "two\n");
    // A module that does not exist: cvs says so, the step fails.
    bad_checkout_fails(&m, &["cannot find module", "nosuchmodule", "exit status"]).await;
    m.master.shutdown().await;
}

/// A listener that reads one pserver authentication request and answers `I HATE
/// YOU`: the password cvs sent, descrambled.
fn fake_pserver() -> (u16, std::sync::mpsc::Receiver<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut lines = Vec::new();
            for _ in 0..5 {
                let mut buf = Vec::new();
                if reader.read_until(b'\n', &mut buf).unwrap_or(0) == 0 {
                    break;
                }
                lines.push(buf);
            }
            if lines.len() == 5 && lines[0].starts_with(b"BEGIN AUTH REQUEST") {
                let scrambled = &lines[3][1..lines[3].len() - 1];
                // CVS's scramble is its own inverse.
                let plain: Vec<u8> = scrambled
                    .iter()
                    .map(|b| autobot::sources::cvs_scramble(&(*b as char).to_string())[1])
                    .collect();
                let _ = tx.send(String::from_utf8_lossy(&plain).into_owned());
            }
            let _ = conn.write_all(b"I HATE YOU\n");
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pserver_password_reaches_cvs_through_the_passfile_and_never_the_log() {
    if !have_cvs() {
        return;
    }
    let (port, passwords) = fake_pserver();
    let source = format!("cvs = :pserver:anon:s3cr%t@127.0.0.1:{port}/cvsroot proj");
    let factories = format!("[bad]\ntype = shell\n{source}\nstep.x = true\n\n");
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let b = bad_checkout_fails(&m, &["rejected access", ":pserver:anon@127.0.0.1"]).await;
    assert_eq!(
        passwords.recv_timeout(Duration::from_secs(10)).unwrap(),
        "s3cr%t"
    );
    let log = m.log_text(&format!("bad-{SLAVE}"), 1, "checkout").await;
    assert!(!log.contains("s3cr%t"), "{log}");
    assert!(!format!("{b:?}").contains("s3cr%t"));
    // The passfile is gone once the checkout ended.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("autobot-cvspass-") && {
                std::fs::read(e.path()).is_ok_and(|c| {
                    c.windows(port.to_string().len())
                        .any(|w| w == port.to_string().as_bytes())
                })
            }
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_hanging_cvs_checkout_ends_the_build_promptly() {
    if !have_cvs() {
        return;
    }
    let (_silent, port) = silent_server();
    let root = format!(":pserver:anon@127.0.0.1:{port}/cvsroot");
    let run =
        start_and_stop_a_hanging_checkout(&format!("cvs = {root} proj"), "cvs checkout", |dir| {
            processes_under(dir, |argv| {
                argv.first().is_some_and(|a| a.ends_with("cvs")) && argv.contains(&root)
            })
        })
        .await;
    run.m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_buildbot_worker_builds_cvs_through_shell() {
    if !have_cvs() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = CvsRepo::new(tmp.path());
    repo.commit(&[("version", "v1\n")], "first");
    let factories = format!(
        "[proj]\ntype = shell\n{}\nstep.check = sh -c 'echo checking $(cat version)'\n",
        repo.source()
    );
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let Some(_worker) = m.worker().await else {
        return;
    };
    let builder = format!("proj-{SLAVE}");
    let b1 = force(&m, &builder, 1, None, "success").await;
    assert!(is_cvs_date(prop(&b1, "got_revision")));
    let log = m.log_text(&builder, 1, "check").await;
    assert!(log.contains("checking v1"), "{log}");
    let r2 = repo.commit(&[("version", "v2\n")], "second");
    let b2 = force(&m, &builder, 2, Some(&r2), "success").await;
    assert_eq!(prop(&b2, "got_revision"), r2);
    let log = m.log_text(&builder, 2, "check").await;
    assert!(log.contains("checking v2"), "{log}");
    let co = m.log_text(&builder, 2, "checkout").await;
    assert!(co.contains("update"), "mode update updates in place: {co}");
    assert!(!co.contains("checkout by the slave's cvs command"), "{co}");
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvs_commits_become_changes_and_nothing_is_lost_while_the_master_is_down() {
    use scheduler_common::{blamelist, ini, wait_finished, wait_head, Site};
    if !have_cvs() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = CvsRepo::new(tmp.path());
    let first = repo.commit(&[("README", "initial\n")], "readme");
    wait_past(&first);
    let url = format!("{} proj", repo.root.display());
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 1",
        &["s1"],
        &format!("[proj]\ntype = shell\ncvs = {url}\nstep.show = cat src/a.c\n"),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    // The first poll records the newest revision's date.
    assert_eq!(wait_head(&db, &url, "").await, first);
    // One commit of two files: one Change.
    let rev = repo.commit(&[("src/a.c", "one\n"), ("src/b.c", "bee\n")], "one");
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(b.changes.len(), 1, "{:?}", b.changes);
    assert_eq!(b.changes[0].files, vec!["src/a.c", "src/b.c"]);
    assert_eq!(b.changes[0].comments, "one");
    assert_eq!(b.changes[0].repository, url);
    let who = blamelist(&b);
    assert_eq!(who.len(), 1);
    run.stop().await;
    // Down while three commits land: one build with the three, each Change once.
    let revs: Vec<String> = ["x", "y", "z"]
        .iter()
        .map(|m| repo.commit(&[("src/a.c", &format!("{m}\n"))], m))
        .collect();
    wait_past(&revs[2]);
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let b2 = wait_finished(&db, "proj-s1", 2).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendchange_vc_cvs_takes_a_cvs_date() {
    if !have_cvs() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = CvsRepo::new(tmp.path());
    let r1 = repo.commit(&[("a.txt", "one\n")], "first");
    repo.commit(&[("a.txt", "two\n")], "second");
    let url = format!("{} proj", repo.root.display());
    sendchange_builds_the_revision_sent(
        &format!("cvs = {url}"),
        "cvs",
        &["--repository", &url],
        ("1.2", "CVS date"),
        &r1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cvs_branch_tag_is_polled_and_checked_out_on_its_own() {
    use scheduler_common::{ini, wait_finished, wait_head, Site};
    if !have_cvs() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = CvsRepo::new(tmp.path());
    repo.commit(&[("a.txt", "trunk 1\n")], "on trunk");
    // Branch rel-1 from the trunk; the working copy follows the branch.
    repo.cvs(&repo.wc, &["-q", "tag", "-b", "rel-1"]);
    repo.cvs(&repo.wc, &["-q", "update", "-r", "rel-1"]);
    let first = repo.commit(&[("a.txt", "branch 1\n")], "on the branch");
    wait_past(&first);
    let url = format!("{} proj", repo.root.display());
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 1",
        &["s1"],
        &format!("[rel]\ntype = shell\ncvs = {url}#rel-1\nstep.show = cat a.txt\n"),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    assert_eq!(wait_head(&db, &url, "rel-1").await, first);
    let rev = repo.commit(&[("a.txt", "branch 2\n")], "again on the branch");
    let b = wait_finished(&db, "rel-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(b.changes.len(), 1, "{:?}", b.changes);
    assert_eq!(b.changes[0].branch.as_deref(), Some("rel-1"));
    assert_eq!(b.changes[0].comments, "again on the branch");
    let tree = site.path().join("slave-s1/rel-s1/build/a.txt");
    assert_eq!(read(&tree), "branch 2\n");
    let sticky = read(&site.path().join("slave-s1/rel-s1/build/CVS/Entries"));
    assert!(sticky.contains("/Trel-1"), "{sticky}");
    run.stop().await;
}
