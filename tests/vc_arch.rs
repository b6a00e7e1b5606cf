//! GNU Arch end to end, with a real archive made by `tla make-archive`,
//! `tla archive-setup`, `tla import` and `tla commit` (HOME in a temp dir, with
//! `tla my-id`):
//! * the Arch poller turns a commit into a Change (the fully qualified revision,
//!   its creator, summary and files) and a build of it, and a master that was down
//!   reports every missed revision once;
//! * every checkout mode (update, clobber, copy, export) across a new revision on
//!   an autobot slave (its native `arch` command), a given patch level,
//!   `got_revision`; tla's archive registration is made in a HOME of the
//!   builder's, never the slave user's;
//! * a version that does not exist fails the checkout step with tla's message;
//! * a stop during a checkout that hangs (an http archive that never answers)
//!   ends the build at once, tla killed;
//! * a stock buildbot-worker (no arch command in 4.3) builds through `shell`;
//! * `sendchange --vc arch` takes a fully qualified revision only.
//!
//! Without `tla` the tests fail under `CI=true` and print SKIP elsewhere.

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
use std::time::Duration;

use engine_common::*;
use vc_common::*;

const ARCHIVE: &str = "ann@example.org--2026";
const VERSION: &str = "ann@example.org--2026/proj--main--1.0";

fn have_tla() -> bool {
    support::need_tools(&[("tla", "Debian: tla")])
}

/// An archive with version [`VERSION`] and a project tree to commit from; the
/// first commit imports the tree (`base-0`).
struct ArchRepo {
    archive: PathBuf,
    tree: PathBuf,
    home: PathBuf,
}

impl ArchRepo {
    fn new(dir: &Path) -> ArchRepo {
        let r = ArchRepo {
            archive: dir.join("archive"),
            tree: dir.join("tree"),
            home: dir.join("home"),
        };
        std::fs::create_dir_all(&r.home).unwrap();
        std::fs::create_dir_all(&r.tree).unwrap();
        r.tla(&["my-id", "Init <init@example.org>"]);
        r.tla(&["make-archive", ARCHIVE, &r.archive.display().to_string()]);
        r.tla(&["my-default-archive", ARCHIVE]);
        r.tla(&["archive-setup", VERSION]);
        r.tla(&["init-tree", VERSION]);
        r
    }

    fn tla(&self, args: &[&str]) -> String {
        let out = Command::new("tla")
            .args(args)
            .current_dir(&self.tree)
            .env("HOME", &self.home)
            .output()
            .unwrap();
        assert!(out.status.success(), "tla {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Commit (the first time: import) `content` in `file` as `who`; the new
    /// revision, fully qualified.
    fn commit(&self, who: &str, file: &str, content: &str, msg: &str) -> String {
        self.tla(&["my-id", who]);
        let f = self.tree.join(file);
        let mut dir = PathBuf::new();
        if let Some(parent) = Path::new(file).parent() {
            for c in parent.components() {
                dir.push(c);
                if !self.tree.join(&dir).exists() {
                    std::fs::create_dir(self.tree.join(&dir)).unwrap();
                    self.tla(&["add", &dir.display().to_string()]);
                }
            }
        }
        let existed = f.exists();
        std::fs::write(&f, content).unwrap();
        if !existed {
            self.tla(&["add", file]);
        }
        let imported = self.tla(&["logs"]).lines().any(|l| !l.trim().is_empty());
        if imported {
            self.tla(&["commit", "-s", msg]);
        } else {
            self.tla(&["import", "-L", msg]);
        }
        self.tla(&["tree-revision"])
    }

    /// The factory lines of this archive's version `version`.
    fn source(&self, version: &str) -> String {
        format!(
            "arch = {version}\narchiveLocation = {}",
            self.archive.display()
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkout_mode_on_an_autobot_slave() {
    if !have_tla() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = ArchRepo::new(tmp.path());
    let r1 = repo.commit("Ann <ann@example.org>", "a.txt", "one\n", "first");
    assert_eq!(r1, format!("{VERSION}--base-0"));
    let modes = Modes {
        kind: "arch",
        meta: "{arch}",
        codebase_prop: "got_revision_proj",
        source: &repo.source(VERSION),
        bad: &repo.source(&format!("{ARCHIVE}/nope--main--1.0")),
        bad_says: &["No such category", "exit status"],
    };
    let second = || repo.commit("Bob <bob@example.org>", "a.txt", "two\n", "second");
    every_mode_and_a_bad_branch(&modes, &r1, second, |mode, builder_dir| {
        // The archive is registered in the builder's own HOME for tla.
        let registered = builder_dir
            .join(".autobot-arch-home/.arch-params/=locations")
            .join(ARCHIVE);
        assert!(registered.is_file(), "{mode}: {}", registered.display());
        // ... and not in the HOME of the slave's user.
        if let Some(home) = std::env::var_os("HOME") {
            let theirs = Path::new(&home)
                .join(".arch-params/=locations")
                .join(ARCHIVE);
            assert!(!theirs.exists(), "{}", theirs.display());
        }
        // No .arch-ids left in an export.
        if mode == "export" {
            assert!(!builder_dir.join("build/.arch-ids").exists());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_hanging_tla_checkout_ends_the_build_promptly() {
    if !have_tla() {
        return;
    }
    let (_silent, port) = silent_server();
    let url = format!("http://127.0.0.1:{port}/archive");
    let source = format!("arch = {VERSION}\narchiveLocation = {url}");
    let run = start_and_stop_a_hanging_checkout(&source, "tla", |dir| {
        processes_under(dir, |argv| argv.first().is_some_and(|a| a.ends_with("tla")))
    })
    .await;
    run.m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_buildbot_worker_builds_arch_through_shell() {
    if !have_tla() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = ArchRepo::new(tmp.path());
    let r1 = repo.commit("Ann <ann@example.org>", "version", "v1\n", "first");
    let factories = format!(
        "[proj]\ntype = shell\n{}\nstep.check = sh -c 'echo checking $(cat version)'\n",
        repo.source(VERSION)
    );
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let sdir = m.dir.path().join("worker");
    let Some(_worker) = m.worker().await else {
        return;
    };
    let builder = format!("proj-{SLAVE}");
    let b1 = force(&m, &builder, 1, None, "success").await;
    assert_eq!(prop(&b1, "got_revision"), r1);
    let log = m.log_text(&builder, 1, "check").await;
    assert!(log.contains("checking v1"), "{log}");
    let r2 = repo.commit("Bob <bob@example.org>", "version", "v2\n", "second");
    let b2 = force(&m, &builder, 2, None, "success").await;
    assert_eq!(prop(&b2, "got_revision"), r2);
    let log = m.log_text(&builder, 2, "check").await;
    assert!(log.contains("checking v2"), "{log}");
    let co = m.log_text(&builder, 2, "checkout").await;
    assert!(
        co.contains("tla update"),
        "mode update updates in place: {co}"
    );
    // The worker's own HOME was not touched.
    assert!(sdir
        .join(format!("{builder}/.autobot-arch-home/.arch-params"))
        .is_dir());
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arch_commits_build_and_nothing_is_lost_while_the_master_is_down() {
    use scheduler_common::{blamelist, ini, wait_finished, wait_head, Site};
    if !have_tla() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = ArchRepo::new(tmp.path());
    let first = repo.commit("Init <init@example.org>", "README", "initial\n", "initial");
    let location = repo.archive.display().to_string();
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 1",
        &["s1"],
        &format!(
            "[proj]\ntype = shell\n{}\nstep.show = cat src/a.c\n",
            repo.source(VERSION)
        ),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    assert_eq!(wait_head(&db, &location, VERSION).await, first);
    let rev = repo.commit("Ann <ann@example.org>", "src/a.c", "one\n", "one");
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(blamelist(&b), vec!["Ann <ann@example.org>"]);
    assert_eq!(b.changes[0].files, vec!["src/a.c"]);
    assert_eq!(b.changes[0].comments, "one");
    assert_eq!(b.changes[0].branch.as_deref(), Some(VERSION));
    // The master's own tla HOME, under its directory.
    assert!(std::fs::read_dir(site.path().join("mirrors"))
        .unwrap()
        .flatten()
        .any(|e| e
            .path()
            .join(".arch-params/=locations")
            .join(ARCHIVE)
            .is_file()));

    run.stop().await;
    let authors = ["Bob <b@x.org>", "Cy <c@x.org>", "Dee <d@x.org>"];
    let revs: Vec<String> = authors
        .iter()
        .enumerate()
        .map(|(i, who)| repo.commit(who, "src/a.c", &format!("{i}\n"), "offline"))
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

#[test]
fn sendchange_vc_arch_takes_a_fully_qualified_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(autobot_bin())
        .args([
            "sendchange",
            "--auth",
            "hook:s3cret",
            "--master",
            "127.0.0.1:9",
        ])
        .args([
            "--username",
            "ann",
            "--vc",
            "arch",
            "--revision",
            "patch-3",
            "a.txt",
        ])
        .current_dir(tmp.path())
        .env("HOME", tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--vc arch") && err.contains("fully qualified Arch revision"),
        "{err}"
    );
    // A good one gets past the check (to the closed port).
    let out = Command::new(autobot_bin())
        .args([
            "sendchange",
            "--auth",
            "hook:s3cret",
            "--master",
            "127.0.0.1:9",
        ])
        .args(["--username", "ann", "--vc", "arch", "--revision"])
        .arg(format!("{VERSION}--patch-3"))
        .arg("a.txt")
        .current_dir(tmp.path())
        .env("HOME", tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("--vc arch"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvs_arch_and_git_sources_side_by_side() {
    if !have_tla() {
        return;
    }
    let have_cvs = Command::new("cvs")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_cvs {
        support::skip("`cvs` is not installed (Debian: cvs)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = ArchRepo::new(tmp.path());
    let r_arch = repo.commit("Ann <ann@example.org>", "a.txt", "arch\n", "first");
    // A CVS module `lib` with one file.
    let root = tmp.path().join("cvsroot");
    let imp = tmp.path().join("cvs-import");
    std::fs::create_dir_all(&imp).unwrap();
    std::fs::write(imp.join("c.txt"), "cvs\n").unwrap();
    for (args, dir) in [
        (vec!["init"], tmp.path()),
        (
            vec!["-q", "import", "-m", "initial", "lib", "vendor", "start"],
            imp.as_path(),
        ),
    ] {
        let out = Command::new("cvs")
            .arg("-f")
            .arg("-d")
            .arg(&root)
            .args(&args)
            .current_dir(dir)
            .env("HOME", &repo.home)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let git = scheduler_common::GitRepo::new(&tmp.path().join("tool"));
    let r_git = git.commit("Gil <gil@example.org>", "g.txt", "git");
    let factories = format!(
        "[mixed]\ntype = shell\n{}\ncvs = {} lib\ngit = {}#main\nstep.show = sh -c 'cat proj/a.txt lib/c.txt tool/g.txt'\n",
        repo.source(VERSION),
        root.display(),
        git.url()
    );
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let builder = format!("mixed-{SLAVE}");
    let b = force(&m, &builder, 1, None, "success").await;
    assert_eq!(prop(&b, "got_revision_proj"), r_arch);
    assert_eq!(prop(&b, "got_revision_tool"), r_git);
    assert!(prop(&b, "got_revision_lib").ends_with(" +0000"));
    let log = m.log_text(&builder, 1, "show").await;
    assert!(
        log.contains("arch") && log.contains("cvs") && log.contains("git"),
        "{log}"
    );
    m.master.shutdown().await;
}

#[test]
fn cvs_and_arch_keys_are_read_and_bad_ones_refused_naming_the_line() {
    let projects = autobot::config::projects(None).unwrap();
    let load = |factory: &str| {
        let ini = format!(
            "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = x\nfactories = *\n\n[slave:s]\n\n{factory}"
        );
        autobot::config::load_from_str(Path::new("/m/master.ini"), Path::new("/m"), &ini, &projects)
    };
    let cfg = load(
        "[a]\ntype = shell\ncvs = :pserver:anon:pw@cvs.example.org:/cvsroot mod ./cvsroot lib#rel-1\n\
         arch = ann@example.org--2026/proj--main--1.0\narchiveLocation = http://arch.example.org/2026\nstep.x = true\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let s = &cfg.factories[0].sources;
    assert_eq!(s[0].url, ":pserver:anon:pw@cvs.example.org:/cvsroot mod");
    assert_eq!(s[0].branch, "");
    assert_eq!(s[1].url, "/m/cvsroot lib");
    assert_eq!(s[1].branch, "rel-1");
    assert_eq!(s[2].url, "http://arch.example.org/2026");
    assert_eq!(s[2].branch, VERSION);
    assert_eq!(
        autobot::sources::arch_version(&s[2], "proj--devel--2.0"),
        "ann@example.org--2026/proj--devel--2.0"
    );

    for (factory, says) in [
        ("cvs = /srv/cvs", "CVSROOT MODULE"),
        ("cvs = srv/cvs proj", "not a CVSROOT"),
        ("cvs = /srv/cvs ../proj", "not a CVS module"),
        (
            "arch = proj--main--1.0\narchiveLocation = /a",
            "fully qualified",
        ),
        ("arch = a@b--1/proj--main--1.0", "archiveLocation"),
        ("archiveLocation = /a", "arch sources"),
    ] {
        let e = load(&format!("[a]\ntype = shell\n{factory}\nstep.x = true\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("master.ini:"), "{e}");
        assert!(e.contains(says), "{factory}: {e}");
    }
}
