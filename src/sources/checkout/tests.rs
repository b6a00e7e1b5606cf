//! Tests of the checkout plans: the operations of each mode for git and hg, the
//! mirror, credentials kept out of argv, and the state machine walked with
//! scripted outcomes and against real repositories.

use super::*;
use crate::sources::credentials::{GIT_PASSWORD_VAR, GIT_USERNAME_VAR};
use std::path::{Path, PathBuf};
use std::process::Command as Proc;

fn source(kind: SourceKind, url: &str, branch: &str) -> Source {
    Source {
        kind,
        url: url.to_string(),
        branch: branch.to_string(),
        branch_prefix: None,
    }
}

fn checkout<'a>(source: &'a Source, mode: Mode, workdir: &'a str) -> Checkout<'a> {
    Checkout {
        source,
        mode,
        always_use_latest: false,
        retry: None,
        mirror: false,
        mirrors: MIRRORS_DIR,
        workdir,
        branch: None,
        revision: None,
        patch_level: None,
        pull_ref: None,
    }
}

fn shell(words: &[&str], dir: &str) -> CheckoutOp {
    CheckoutOp::Shell {
        argv: argv(words),
        workdir: dir.to_string(),
    }
}

// ---- plans as data ----

#[test]
fn git_update_plan() {
    let s = source(SourceKind::Git, "https://example.org/hello.git", "main");
    let mut c = checkout(&s, Mode::Update, "build");
    c.revision = Some("abc123");
    let p = c.plan().unwrap();
    assert_eq!(p.srcdir, "build");
    assert_eq!(p.probe.as_deref(), Some("build/.git"));
    assert_eq!(
        p.update,
        vec![
            shell(
                &[
                    "git",
                    "fetch",
                    "--",
                    "https://example.org/hello.git",
                    "main"
                ],
                "build"
            ),
            shell(
                &[
                    "git",
                    "-c",
                    "advice.detachedHead=false",
                    "checkout",
                    "--force",
                    "--detach",
                    "abc123",
                    "--"
                ],
                "build"
            ),
        ]
    );
    assert_eq!(
        p.full,
        vec![
            CheckoutOp::RmDir {
                dir: "build".into()
            },
            CheckoutOp::MkDir {
                dir: "build".into()
            },
            shell(
                &[
                    "git",
                    "clone",
                    "--no-checkout",
                    "--branch",
                    "main",
                    "--",
                    "https://example.org/hello.git",
                    "."
                ],
                "build"
            ),
            shell(
                &[
                    "git",
                    "-c",
                    "advice.detachedHead=false",
                    "checkout",
                    "--force",
                    "--detach",
                    "abc123",
                    "--"
                ],
                "build"
            ),
        ]
    );
    assert_eq!(
        p.finish,
        vec![CheckoutOp::GotRevision {
            argv: argv(&["git", "rev-parse", "HEAD"]),
            workdir: "build".into()
        }]
    );
}

#[test]
fn git_without_revision_takes_the_branch_tip() {
    let s = source(SourceKind::Git, "/r/hello", "master");
    let mut c = checkout(&s, Mode::Update, "build/hello");
    c.branch = Some("feature");
    let p = c.plan().unwrap();
    assert_eq!(
        p.update[0],
        shell(
            &["git", "fetch", "--", "/r/hello", "feature"],
            "build/hello"
        )
    );
    assert!(matches!(&p.update[1], CheckoutOp::Shell { argv, .. } if argv[6] == "FETCH_HEAD"));
    assert!(matches!(&p.full[2], CheckoutOp::Shell { argv, .. } if argv[4] == "feature"));
    assert!(matches!(&p.full[3], CheckoutOp::Shell { argv, .. } if argv[6] == "HEAD"));
}

#[test]
fn always_use_latest_ignores_the_revision() {
    let s = source(SourceKind::Git, "/r/hello", "master");
    let mut c = checkout(&s, Mode::Update, "build");
    c.revision = Some("abc123");
    c.always_use_latest = true;
    let p = c.plan().unwrap();
    assert!(matches!(&p.update[1], CheckoutOp::Shell { argv, .. } if argv[6] == "FETCH_HEAD"));
    // A revision that could be an option is refused with or without it.
    c.revision = Some("--output=/tmp/f");
    assert!(c.plan().is_err());
    c.always_use_latest = false;
    assert!(c.plan().is_err());
}

#[test]
fn clobber_has_no_update() {
    let s = source(SourceKind::Git, "/r/hello", "master");
    let p = checkout(&s, Mode::Clobber, "build").plan().unwrap();
    assert_eq!(p.probe, None);
    assert!(p.update.is_empty());
    assert_eq!(
        p.full[0],
        CheckoutOp::RmDir {
            dir: "build".into()
        }
    );
    assert_eq!(p.finish.len(), 1);
}

#[test]
fn copy_and_export_work_in_the_copy_dir() {
    let s = source(SourceKind::Git, "/r/hello", "master");
    let p = checkout(&s, Mode::Copy, "build").plan().unwrap();
    assert_eq!(p.srcdir, "source");
    assert_eq!(p.probe.as_deref(), Some("source/.git"));
    assert!(p
        .update
        .iter()
        .all(|op| matches!(op, CheckoutOp::Shell { workdir, .. } if workdir == "source")));
    assert_eq!(
        p.finish,
        vec![
            CheckoutOp::RmDir {
                dir: "build".into()
            },
            CheckoutOp::CpDir {
                from: "source".into(),
                to: "build".into()
            },
            CheckoutOp::GotRevision {
                argv: argv(&["git", "rev-parse", "HEAD"]),
                workdir: "build".into()
            },
        ]
    );
    let p = checkout(&s, Mode::Export, "build").plan().unwrap();
    assert_eq!(
        p.finish,
        vec![
            CheckoutOp::RmDir {
                dir: "build".into()
            },
            CheckoutOp::CpDir {
                from: "source".into(),
                to: "build".into()
            },
            CheckoutOp::RmDir {
                dir: "build/.git".into()
            },
            CheckoutOp::GotRevision {
                argv: argv(&["git", "rev-parse", "HEAD"]),
                workdir: "source".into()
            },
        ]
    );
}

#[test]
fn copy_dir_names() {
    assert_eq!(copy_dir("build"), "source");
    assert_eq!(copy_dir("build/hello"), "source/hello");
    assert_eq!(copy_dir("work"), "source/work");
    assert_eq!(
        copy_dir("/s/b/build/env/src/x"),
        "/s/b/build/env/src/x.source"
    );
}

#[test]
fn hg_plans() {
    let s = source(SourceKind::Hg, "https://example.org/hg/tool", "default");
    let mut c = checkout(&s, Mode::Update, "build");
    let p = c.plan().unwrap();
    assert_eq!(p.probe.as_deref(), Some("build/.hg"));
    assert_eq!(
        p.update,
        vec![
            shell(
                &[
                    "hg",
                    "--noninteractive",
                    "pull",
                    "--",
                    "https://example.org/hg/tool"
                ],
                "build"
            ),
            shell(
                &[
                    "hg",
                    "--noninteractive",
                    "update",
                    "--clean",
                    "--rev",
                    "default"
                ],
                "build"
            ),
        ]
    );
    assert_eq!(
        p.full[2],
        shell(
            &[
                "hg",
                "--noninteractive",
                "clone",
                "--noupdate",
                "--",
                "https://example.org/hg/tool",
                "."
            ],
            "build"
        )
    );
    c.revision = Some("4f2a");
    c.mode = Mode::Export;
    let p = c.plan().unwrap();
    assert_eq!(
        p.full[3],
        shell(
            &[
                "hg",
                "--noninteractive",
                "update",
                "--clean",
                "--rev",
                "4f2a"
            ],
            "source"
        )
    );
    assert_eq!(
        p.finish[2],
        CheckoutOp::RmDir {
            dir: "build/.hg".into()
        }
    );
    assert_eq!(
        p.finish[3],
        CheckoutOp::GotRevision {
            argv: argv(&["hg", "log", "--rev", ".", "--template", "{node}"]),
            workdir: "source".into()
        }
    );
}

#[test]
fn refuses_option_like_names_and_escaping_workdirs() {
    let s = source(SourceKind::Git, "/r/hello", "master");
    let mut c = checkout(&s, Mode::Update, "build");
    c.revision = Some("--upload-pack=touch /tmp/x");
    assert!(matches!(
        c.plan(),
        Err(CheckoutError::BadName {
            what: "revision",
            ..
        })
    ));
    c.revision = Some("abc\n");
    assert!(c.plan().is_err());
    c.revision = None;
    c.branch = Some("-b");
    assert!(matches!(
        c.plan(),
        Err(CheckoutError::BadName { what: "branch", .. })
    ));
    for wd in ["", ".", "./", "../x", "build/../..", "/"] {
        let c = checkout(&s, Mode::Clobber, wd);
        assert!(
            matches!(c.plan(), Err(CheckoutError::BadWorkdir(_))),
            "{wd:?}"
        );
    }
    assert_eq!(
        checkout(&s, Mode::Clobber, "build/").plan().unwrap().srcdir,
        "build"
    );
}

// ---- the state machine, with scripted outcomes ----

/// Runs a plan answering each op with `outcome(op, attempt)`; returns the ops
/// run with their delays and headers, and the final result.
fn simulate(
    plan: CheckoutPlan,
    updateable: bool,
    mut outcome: impl FnMut(&CheckoutOp) -> bool,
) -> (Vec<(CheckoutOp, u64, Option<String>)>, bool) {
    let mut run = CheckoutRun::new(plan, updateable);
    let mut seen = Vec::new();
    let mut next = run.start();
    loop {
        match next {
            Next::Run {
                op,
                delay_secs,
                header,
            } => {
                let ok = outcome(&op);
                seen.push((op, delay_secs, header));
                next = run.done(ok);
            }
            Next::Done { ok } => return (seen, ok),
        }
    }
}

fn is_clone(op: &CheckoutOp) -> bool {
    matches!(op, CheckoutOp::Shell { argv, .. } if argv.iter().any(|a| a == "clone"))
}

#[test]
fn update_when_updateable_else_full() {
    let s = source(SourceKind::Git, "/r/hello", "master");
    let p = checkout(&s, Mode::Update, "build").plan().unwrap();
    let (ops, ok) = simulate(p.clone(), true, |_| true);
    assert!(ok);
    let ops: Vec<CheckoutOp> = ops.into_iter().map(|o| o.0).collect();
    assert_eq!(ops, [p.update.clone(), p.finish.clone()].concat());
    let (ops, ok) = simulate(p.clone(), false, |_| true);
    assert!(ok);
    let ops: Vec<CheckoutOp> = ops.into_iter().map(|o| o.0).collect();
    assert_eq!(ops, [p.full.clone(), p.finish.clone()].concat());
}

#[test]
fn a_failed_update_falls_back_to_a_full_checkout() {
    let s = source(SourceKind::Git, "/r/hello", "master");
    let p = checkout(&s, Mode::Update, "build").plan().unwrap();
    let (ops, ok) = simulate(
        p.clone(),
        true,
        |op| !matches!(op, CheckoutOp::Shell { argv, .. } if argv[1] == "fetch"),
    );
    assert!(ok);
    assert_eq!(ops.len(), 1 + p.full.len() + p.finish.len());
    assert_eq!(ops[1].0, p.full[0]);
    assert!(ops[1].2.as_deref().unwrap().contains("update failed"));
}

#[test]
fn retry_repeats_only_the_full_checkout() {
    let s = source(SourceKind::Git, "/r/hello", "master");
    let mut c = checkout(&s, Mode::Update, "build");
    c.retry = Some(Retry {
        delay: 7,
        repeats: 2,
    });
    let p = c.plan().unwrap();
    let (ops, ok) = simulate(p.clone(), true, |op| {
        !matches!(op, CheckoutOp::Shell { .. })
    });
    assert!(!ok);
    // update's fetch fails → full (RmDir, MkDir, clone ✗) → twice more after 7 s.
    let clones: Vec<_> = ops.iter().filter(|o| is_clone(&o.0)).collect();
    assert_eq!(clones.len(), 3);
    let rmdirs: Vec<_> = ops
        .iter()
        .filter(|o| matches!(o.0, CheckoutOp::RmDir { .. }))
        .map(|o| (o.1, o.2.clone()))
        .collect();
    assert_eq!(rmdirs.len(), 3);
    assert_eq!(rmdirs[0].0, 0);
    assert_eq!(
        rmdirs[1],
        (
            7,
            Some("checkout failed, trying 2 more times after 7 seconds".into())
        )
    );
    assert_eq!(
        rmdirs[2],
        (
            7,
            Some("checkout failed, trying 1 more time after 7 seconds".into())
        )
    );
    // Succeeds on the second try.
    let mut clones = 0;
    let (_, ok) = simulate(p.clone(), false, |op| {
        if is_clone(op) {
            clones += 1;
            return clones == 2;
        }
        true
    });
    assert!(ok);
    // A failing finish is not retried.
    let (ops, ok) = simulate(p, false, |op| !matches!(op, CheckoutOp::GotRevision { .. }));
    assert!(!ok);
    assert_eq!(ops.iter().filter(|o| is_clone(&o.0)).count(), 1);
}

// ---- real git and hg ----

/// Executes ops in `base` (a builder's directory) the way a slave does (`cpdir`
/// as buildbot-worker's `cp -R -P -p`); returns got_revision.
struct LocalSlave {
    base: PathBuf,
    got_revision: Option<String>,
    /// The ops of the last checkout with their outcomes.
    outcomes: Vec<(CheckoutOp, bool)>,
    /// What a [`CheckoutOp::WritePatch`] writes (a try build's patch).
    patch: Vec<u8>,
}

impl LocalSlave {
    fn exec(&mut self, op: &CheckoutOp) -> bool {
        let b = &self.base;
        match op {
            CheckoutOp::RmDir { dir } => {
                let d = b.join(dir);
                !d.exists() || std::fs::remove_dir_all(d).is_ok()
            }
            CheckoutOp::MkDir { dir } => std::fs::create_dir_all(b.join(dir)).is_ok(),
            CheckoutOp::WritePatch { path } => std::fs::write(b.join(path), &self.patch).is_ok(),
            CheckoutOp::CpDir { from, to } => Proc::new("cp")
                .args(["-R", "-P", "-p"])
                .arg(b.join(from))
                .arg(b.join(to))
                .status()
                .unwrap()
                .success(),
            CheckoutOp::Shell { argv, workdir } | CheckoutOp::GotRevision { argv, workdir } => {
                let wd = b.join(workdir);
                std::fs::create_dir_all(&wd).unwrap();
                let out = Proc::new(&argv[0])
                    .args(&argv[1..])
                    .current_dir(&wd)
                    .output()
                    .unwrap();
                if !out.status.success() {
                    eprintln!("{argv:?} failed: {}", String::from_utf8_lossy(&out.stderr));
                    return false;
                }
                if matches!(op, CheckoutOp::GotRevision { .. }) {
                    self.got_revision =
                        Some(String::from_utf8(out.stdout).unwrap().trim().to_string());
                }
                true
            }
        }
    }

    /// Runs the checkout as the engine will; returns (ok, got_revision, ops run).
    fn checkout(&mut self, c: &Checkout) -> (bool, Option<String>, Vec<CheckoutOp>) {
        let plan = c.plan().unwrap();
        let patched = plan
            .patched_marker
            .as_ref()
            .is_some_and(|p| self.base.join(p).exists());
        let updateable = !patched
            && plan
                .probe
                .as_ref()
                .is_some_and(|p| self.base.join(p).exists());
        self.got_revision = None;
        self.outcomes.clear();
        let mut run = CheckoutRun::new(plan, updateable);
        let mut ran = Vec::new();
        let mut next = run.start();
        loop {
            match next {
                Next::Run { op, .. } => {
                    let ok = self.exec(&op);
                    self.outcomes.push((op.clone(), ok));
                    ran.push(op);
                    next = run.done(ok);
                }
                Next::Done { ok } => return (ok, self.got_revision.clone(), ran),
            }
        }
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Proc::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.org",
        "-c",
        "commit.gpgsign=false",
    ];
    all.extend_from_slice(args);
    run(dir, "git", &all)
}

fn commit_file(kind: SourceKind, repo: &Path, file: &str, content: &str) -> String {
    std::fs::write(repo.join(file), content).unwrap();
    match kind {
        SourceKind::Git => {
            git(repo, &["add", file]);
            git(repo, &["commit", "-q", "-m", file]);
            git(repo, &["rev-parse", "HEAD"])
        }
        SourceKind::Hg => {
            run(repo, "hg", &["add", "-q", file]);
            run(repo, "hg", &["commit", "-q", "-u", "t", "-m", file]);
            run(repo, "hg", &["log", "--rev", ".", "--template", "{node}"])
        }
        SourceKind::Svn
        | SourceKind::Bzr
        | SourceKind::Darcs
        | SourceKind::Cvs
        | SourceKind::Arch => {
            panic!("tested in tests/vc_svn.rs, tests/vc_bzr.rs")
        }
    }
}

/// A temp dir with an upstream repository `up` (one commit of `f` = "one") and
/// a builder directory `slave`.
fn setup(kind: SourceKind) -> (tempfile::TempDir, PathBuf, Source, LocalSlave, String) {
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("up");
    std::fs::create_dir(&up).unwrap();
    let branch = match kind {
        SourceKind::Git => {
            git(&up, &["init", "-q", "-b", "master"]);
            "master"
        }
        SourceKind::Hg => {
            run(&up, "hg", &["init"]);
            "default"
        }
        SourceKind::Svn
        | SourceKind::Bzr
        | SourceKind::Darcs
        | SourceKind::Cvs
        | SourceKind::Arch => {
            panic!("tested in tests/vc_svn.rs, tests/vc_bzr.rs")
        }
    };
    let rev = commit_file(kind, &up, "f", "one");
    let s = source(kind, up.to_str().unwrap(), branch);
    let slave = LocalSlave {
        base: tmp.path().join("slave"),
        got_revision: None,
        outcomes: Vec::new(),
        patch: Vec::new(),
    };
    std::fs::create_dir(&slave.base).unwrap();
    (tmp, up, s, slave, rev)
}

fn read(slave: &LocalSlave, path: &str) -> String {
    std::fs::read_to_string(slave.base.join(path)).unwrap()
}

fn product(slave: &LocalSlave, path: &str) {
    std::fs::write(slave.base.join(path), "built").unwrap();
}

/// Whether `hg` runs here. Without it the hg cases fail under `CI=true` (a
/// test that cannot run must not pass there) and are skipped, with a line
/// straight to stderr, elsewhere; `scripts/test.sh` installs mercurial.
fn has_hg() -> bool {
    let ok = Proc::new("hg")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let why = "`hg` is not on PATH (apt-get install mercurial; scripts/test.sh installs every tool the tests use)";
        if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
            panic!("{why}. With CI=true a test that cannot run fails");
        }
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIP: {why}; the hg cases did not run");
    }
    ok
}

fn update_mode(kind: SourceKind, mirror: bool) {
    let (_t, up, s, mut slave, rev1) = setup(kind);
    let mut c = checkout(&s, Mode::Update, "build");
    c.mirror = mirror;
    let (ok, got, ops) = slave.checkout(&c);
    assert!(ok);
    assert_eq!(got.as_deref(), Some(rev1.as_str()));
    assert!(ops.iter().any(is_clone), "first build clones");
    assert_eq!(read(&slave, "build/f"), "one");
    product(&slave, "build/f.o");
    let rev2 = commit_file(kind, &up, "f", "two");
    let (ok, got, ops) = slave.checkout(&c);
    assert!(ok);
    assert!(!ops.iter().any(is_clone), "second build updates: {ops:?}");
    assert_eq!(got.as_deref(), Some(rev2.as_str()));
    assert_eq!(read(&slave, "build/f"), "two");
    assert_eq!(
        read(&slave, "build/f.o"),
        "built",
        "update keeps build products"
    );
    // A build of the older revision, then alwaysUseLatest ignoring it.
    let mut old = c;
    old.revision = Some(&rev1);
    let (ok, got, _) = slave.checkout(&old);
    assert!(ok);
    assert_eq!(got.as_deref(), Some(rev1.as_str()));
    assert_eq!(read(&slave, "build/f"), "one");
    old.always_use_latest = true;
    let (ok, got, _) = slave.checkout(&old);
    assert!(ok);
    assert_eq!(got.as_deref(), Some(rev2.as_str()));
}

fn clobber_mode(kind: SourceKind, mirror: bool) {
    let (_t, up, s, mut slave, rev1) = setup(kind);
    let mut c = checkout(&s, Mode::Clobber, "build");
    c.mirror = mirror;
    let (ok, got, _) = slave.checkout(&c);
    assert!((ok, got.as_deref()) == (true, Some(rev1.as_str())));
    product(&slave, "build/f.o");
    let rev2 = commit_file(kind, &up, "g", "new");
    let (ok, got, ops) = slave.checkout(&c);
    assert!(ok && ops.iter().any(is_clone));
    assert_eq!(got.as_deref(), Some(rev2.as_str()));
    assert_eq!(read(&slave, "build/g"), "new");
    assert!(
        !slave.base.join("build/f.o").exists(),
        "clobber removes build products"
    );
}

fn copy_and_export_modes(kind: SourceKind, mirror: bool) {
    let meta = match kind {
        SourceKind::Git => ".git",
        SourceKind::Hg => ".hg",
        SourceKind::Svn => ".svn",
        SourceKind::Bzr => ".bzr",
        SourceKind::Darcs => "_darcs",
        SourceKind::Cvs => "CVS",
        SourceKind::Arch => "{arch}",
    };
    let (_t, up, s, mut slave, rev1) = setup(kind);
    let mut c = checkout(&s, Mode::Copy, "build");
    c.mirror = mirror;
    let (ok, got, _) = slave.checkout(&c);
    assert!(ok);
    assert_eq!(got.as_deref(), Some(rev1.as_str()));
    assert_eq!(read(&slave, "build/f"), "one");
    assert_eq!(read(&slave, "source/f"), "one");
    assert!(slave.base.join("build").join(meta).is_dir());
    product(&slave, "build/f.o");
    let rev2 = commit_file(kind, &up, "f", "two");
    let (ok, got, ops) = slave.checkout(&c);
    assert!(
        ok && !ops.iter().any(is_clone),
        "the copy dir is updated: {ops:?}"
    );
    assert_eq!(got.as_deref(), Some(rev2.as_str()));
    assert_eq!(read(&slave, "build/f"), "two");
    assert!(!slave.base.join("build/f.o").exists(), "copy starts clean");

    let mut e = checkout(&s, Mode::Export, "build");
    e.mirror = mirror;
    let rev3 = commit_file(kind, &up, "f", "three");
    let (ok, got, ops) = slave.checkout(&e);
    assert!(ok && !ops.iter().any(is_clone));
    assert_eq!(got.as_deref(), Some(rev3.as_str()));
    assert_eq!(read(&slave, "build/f"), "three");
    assert!(
        !slave.base.join("build").join(meta).exists(),
        "export leaves no metadata"
    );
    assert!(slave.base.join("source").join(meta).is_dir());
}

#[test]
fn git_update_mode_for_real() {
    update_mode(SourceKind::Git, false);
    update_mode(SourceKind::Git, true);
}

#[test]
fn git_clobber_mode_for_real() {
    clobber_mode(SourceKind::Git, false);
    clobber_mode(SourceKind::Git, true);
}

#[test]
fn git_copy_and_export_modes_for_real() {
    copy_and_export_modes(SourceKind::Git, false);
    copy_and_export_modes(SourceKind::Git, true);
}

#[test]
fn git_branches_fallback_and_retry_for_real() {
    let (_t, up, s, mut slave, _) = setup(SourceKind::Git);
    git(&up, &["checkout", "-q", "-b", "feature"]);
    let feature = commit_file(SourceKind::Git, &up, "feat", "x");
    git(&up, &["checkout", "-q", "master"]);
    let mut c = checkout(&s, Mode::Update, "build/hello");
    c.branch = Some("feature");
    let (ok, got, _) = slave.checkout(&c);
    assert!(ok);
    assert_eq!(got.as_deref(), Some(feature.as_str()));
    assert_eq!(read(&slave, "build/hello/feat"), "x");
    // A broken repository: the update fails, a full checkout repairs it.
    std::fs::write(slave.base.join("build/hello/.git/HEAD"), "garbage").unwrap();
    let (ok, got, ops) = slave.checkout(&c);
    assert!(ok && ops.iter().any(is_clone));
    assert_eq!(got.as_deref(), Some(feature.as_str()));
    // An unreachable repository is tried 1 + repeats times, then fails.
    let gone = source(
        SourceKind::Git,
        up.join("missing").to_str().unwrap(),
        "master",
    );
    let mut c = checkout(&gone, Mode::Clobber, "build/gone");
    c.retry = Some(Retry {
        delay: 0,
        repeats: 2,
    });
    let (ok, got, ops) = slave.checkout(&c);
    assert!(!ok && got.is_none());
    assert_eq!(ops.iter().filter(|o| is_clone(o)).count(), 3);
    // A revision that does not exist fails the checkout.
    let mut c = checkout(&s, Mode::Update, "build/hello");
    c.revision = Some("0123456789012345678901234567890123456789");
    assert!(!slave.checkout(&c).0);
}

#[test]
fn hg_update_mode_for_real() {
    if has_hg() {
        update_mode(SourceKind::Hg, false);
        update_mode(SourceKind::Hg, true);
    }
}

#[test]
fn hg_clobber_mode_for_real() {
    if has_hg() {
        clobber_mode(SourceKind::Hg, false);
        clobber_mode(SourceKind::Hg, true);
    }
}

#[test]
fn hg_copy_and_export_modes_for_real() {
    if has_hg() {
        copy_and_export_modes(SourceKind::Hg, false);
        copy_and_export_modes(SourceKind::Hg, true);
    }
}

// ---- the slave's mirror ----

fn prepare_of(p: &CheckoutPlan) -> Vec<(CheckoutOp, Then, Then)> {
    p.mirror
        .as_ref()
        .unwrap()
        .prepare
        .iter()
        .map(|o| (o.op.clone(), o.on_ok, o.on_fail))
        .collect()
}

/// `flock [how] LOCK words...` in the mirrors directory.
fn flocked(how: &[&str], lock: &str, words: &[&str]) -> CheckoutOp {
    let mut all = vec!["flock"];
    all.extend_from_slice(how);
    all.push(lock);
    all.extend_from_slice(words);
    shell(&all, MIRRORS_DIR)
}

#[test]
fn git_mirror_plan() {
    use Then::*;
    let url = "https://example.org/hello.git";
    let s = source(SourceKind::Git, url, "main");
    let mut c = checkout(&s, Mode::Update, "build/hello");
    c.mirror = true;
    c.revision = Some("abc123");
    let p = c.plan().unwrap();
    let name = mirror_name(&s);
    assert_eq!(name, "git-hello-c2d7f62e4c764859");
    let m = p.mirror.clone().unwrap();
    assert_eq!(m.dir, format!("../mirrors/{name}"));
    let lock = format!("{name}.lock");
    let gd = format!("--git-dir={name}");
    let check = [
        "git",
        &gd,
        "merge-base",
        "--is-ancestor",
        "abc123",
        "refs/heads/main",
    ];
    let fetch = [
        "git",
        "-c",
        "gc.autoDetach=false",
        &gd,
        "fetch",
        "--prune",
        "--",
        url,
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
    ];
    let expected = vec![
        (
            CheckoutOp::MkDir {
                dir: MIRRORS_DIR.into(),
            },
            Next,
            Direct,
        ),
        (shell(&check, MIRRORS_DIR), UseMirror, Next),
        (
            shell(&["git", &gd, "rev-parse", "--git-dir"], MIRRORS_DIR),
            Skip(1),
            Next,
        ),
        (
            flocked(&[], &lock, &["git", "init", "--bare", "--quiet", &name]),
            Next,
            Direct,
        ),
        (flocked(&["-n"], &lock, &fetch), UseMirror, Next),
        (flocked(&["-s"], &lock, &check), UseMirror, Next),
        (flocked(&[], &lock, &fetch), UseMirror, Direct),
    ];
    assert_eq!(prepare_of(&p), expected);
    // The workdir is two levels below the builder's directory.
    let from = format!("../../../mirrors/{name}");
    let wlock = format!("{from}.lock");
    assert_eq!(
        m.update,
        vec![
            shell(
                &["flock", "-s", &wlock, "git", "fetch", "--", &from, "main"],
                "build/hello"
            ),
            p.update[1].clone(),
        ]
    );
    assert_eq!(
        m.full,
        vec![
            p.full[0].clone(),
            p.full[1].clone(),
            shell(
                &[
                    "flock",
                    "-s",
                    &wlock,
                    "git",
                    "clone",
                    "--no-checkout",
                    "--branch",
                    "main",
                    "--",
                    &from,
                    "."
                ],
                "build/hello"
            ),
            shell(
                &["git", "remote", "set-url", "--", "origin", url],
                "build/hello"
            ),
            p.full[3].clone(),
        ]
    );
    assert_eq!(p.revision_property, "got_revision_hello");
    // `mirror = false`: the same direct groups, no mirror.
    c.mirror = false;
    let d = c.plan().unwrap();
    assert_eq!(d.mirror, None);
    assert_eq!(
        (&d.update, &d.full, &d.finish),
        (&p.update, &p.full, &p.finish)
    );
    // Without a revision the mirror always fetches: nothing to look for first.
    c.mirror = true;
    c.revision = None;
    let ops: Vec<CheckoutOp> = prepare_of(&c.plan().unwrap())
        .into_iter()
        .map(|o| o.0)
        .collect();
    let fetch_only: Vec<CheckoutOp> = [0, 2, 3, 6]
        .iter()
        .map(|&i| expected[i].0.clone())
        .collect();
    assert_eq!(ops, fetch_only);
}

#[test]
fn hg_mirror_plan() {
    use Then::*;
    let url = "https://example.org/hg/tool";
    let s = source(SourceKind::Hg, url, "default");
    let mut c = checkout(&s, Mode::Clobber, "build");
    c.mirror = true;
    c.revision = Some("4f2a");
    let p = c.plan().unwrap();
    let name = mirror_name(&s);
    assert!(name.starts_with("hg-tool-"), "{name}");
    let lock = format!("{name}.lock");
    let check = [
        "hg",
        "--noninteractive",
        "--repository",
        &name,
        "log",
        "--rev",
        "4f2a",
        "--template",
        "{node}\\n",
    ];
    let pull = [
        "hg",
        "--noninteractive",
        "--repository",
        &name,
        "pull",
        "--",
        url,
    ];
    assert_eq!(
        prepare_of(&p),
        vec![
            (
                CheckoutOp::MkDir {
                    dir: MIRRORS_DIR.into()
                },
                Next,
                Direct
            ),
            (shell(&check, MIRRORS_DIR), UseMirror, Next),
            (
                shell(
                    &["hg", "--noninteractive", "--repository", &name, "root"],
                    MIRRORS_DIR
                ),
                Skip(1),
                Next
            ),
            // A second `hg init` fails; the pull below decides.
            (
                flocked(&[], &lock, &["hg", "--noninteractive", "init", &name]),
                Next,
                Next
            ),
            (flocked(&["-n"], &lock, &pull), UseMirror, Next),
            (flocked(&["-s"], &lock, &check), UseMirror, Next),
            (flocked(&[], &lock, &pull), UseMirror, Direct),
        ]
    );
    let m = p.mirror.unwrap();
    let from = format!("../../mirrors/{name}");
    assert!(m.update.is_empty(), "clobber never updates");
    assert_eq!(
        m.full[2],
        shell(
            &[
                "flock",
                "-s",
                &format!("{from}.lock"),
                "hg",
                "--noninteractive",
                "clone",
                "--noupdate",
                "--",
                &from,
                "."
            ],
            "build"
        )
    );
    assert_eq!(m.full[3], p.full[3]);
    assert_eq!(m.full.len(), 4, "hg keeps the mirror as default path");
}

#[test]
fn where_the_mirror_is_seen_from() {
    let s = source(SourceKind::Git, "/r/hello", "master");
    let name = mirror_name(&s);
    let fetch_from = |c: &Checkout| match &c.plan().unwrap().mirror {
        Some(m) => match &m.update[0] {
            CheckoutOp::Shell { argv, workdir } => {
                Some((argv[2].clone(), argv[6].clone(), workdir.clone()))
            }
            other => panic!("{other:?}"),
        },
        None => None,
    };
    let mut c = checkout(&s, Mode::Copy, "build/x");
    c.mirror = true;
    // copy: the tree is kept in source/x.
    assert_eq!(
        fetch_from(&c),
        Some((
            format!("../../../mirrors/{name}.lock"),
            format!("../../../mirrors/{name}"),
            "source/x".to_string()
        ))
    );
    // An absolute workdir cannot reach a relative mirrors directory...
    let mut a = checkout(&s, Mode::Update, "/s/b/build/env/src/hello");
    a.mirror = true;
    assert_eq!(fetch_from(&a), None);
    assert_eq!(fetch_from(&a.with_mirrors("")), None);
    // ...but an absolute one.
    let a = a.with_mirrors("/s/mirrors/");
    assert_eq!(
        fetch_from(&a),
        Some((
            format!("/s/mirrors/{name}.lock"),
            format!("/s/mirrors/{name}"),
            "/s/b/build/env/src/hello".to_string()
        ))
    );
    let p = a.plan().unwrap();
    assert!(prepare_of(&p).iter().skip(1).all(
        |(op, _, _)| matches!(op, CheckoutOp::Shell { workdir, .. } if workdir == "/s/mirrors")
    ));
}

#[test]
fn mirror_names_are_per_url_and_plain() {
    let a = source(SourceKind::Git, "https://a.org/x/lib.git", "master");
    let b = source(SourceKind::Git, "https://b.org/y/lib", "master");
    let h = source(SourceKind::Hg, "https://a.org/x/lib.git", "default");
    let (na, nb, nh) = (mirror_name(&a), mirror_name(&b), mirror_name(&h));
    assert!(na.starts_with("git-lib-") && nb.starts_with("git-lib-"));
    assert_ne!(na, nb);
    assert!(nh.starts_with("hg-lib.git-"));
    let odd = source(SourceKind::Git, "ssh://host/-we ird$/..", "master");
    let n = mirror_name(&odd);
    assert!(
        n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
        "{n}"
    );
    assert!(!n.contains("/") && n.starts_with("git-"), "{n}");
}

#[test]
fn revision_properties_name_the_source_and_keep_the_first() {
    let s = source(SourceKind::Git, "https://x.org/a/lib.git", "master");
    let p = checkout(&s, Mode::Update, "build/lib").plan().unwrap();
    let mut props = Properties::new();
    props.insert("got_revision".into(), String::new());
    assert_eq!(
        p.revision_properties("r1", &props),
        vec![
            ("got_revision_lib".to_string(), "r1".to_string()),
            ("got_revision".to_string(), "r1".to_string())
        ]
    );
    props.insert("got_revision".into(), "first".into());
    assert_eq!(
        CheckoutRun::new(p, false).revision_properties("r2", &props),
        vec![("got_revision_lib".to_string(), "r2".to_string())]
    );
}

fn argv_of(op: &CheckoutOp) -> &[String] {
    match op {
        CheckoutOp::Shell { argv, .. } | CheckoutOp::GotRevision { argv, .. } => argv,
        _ => &[],
    }
}

fn has(op: &CheckoutOp, word: &str) -> bool {
    argv_of(op).iter().any(|a| a == word)
}

#[test]
fn the_mirror_run_fetches_only_when_needed() {
    let s = source(SourceKind::Git, "/r/hello", "master");
    let mut c = checkout(&s, Mode::Update, "build");
    c.mirror = true;
    c.revision = Some("abc123");
    let p = c.plan().unwrap();
    let m = p.mirror.clone().unwrap();
    // The revision is there: two ops, then the update from the mirror.
    let (ops, ok) = simulate(p.clone(), true, |_| true);
    assert!(ok);
    let ops: Vec<CheckoutOp> = ops.into_iter().map(|o| o.0).collect();
    let expected = [
        vec![m.prepare[0].op.clone(), m.prepare[1].op.clone()],
        m.update.clone(),
        p.finish.clone(),
    ]
    .concat();
    assert_eq!(ops, expected);
    // Missing: the mirror exists (no init), the fetch that does not wait works.
    let (ops, ok) = simulate(p.clone(), false, |op| {
        !has(op, "merge-base") || has(op, "flock")
    });
    assert!(ok);
    let ops: Vec<CheckoutOp> = ops.into_iter().map(|o| o.0).collect();
    let expected = [
        vec![
            m.prepare[0].op.clone(),
            m.prepare[1].op.clone(),
            m.prepare[2].op.clone(),
            m.prepare[4].op.clone(),
        ],
        m.full.clone(),
        p.finish.clone(),
    ]
    .concat();
    assert_eq!(ops, expected);
    // Another builder is fetching (`flock -n` fails): wait for it and look again.
    let (ops, ok) = simulate(p.clone(), false, |op| {
        !(has(op, "-n") || (has(op, "merge-base") && !has(op, "flock")))
    });
    assert!(ok);
    let fetches = ops.iter().filter(|o| has(&o.0, "fetch")).count();
    assert_eq!(fetches, 1, "only the one that failed to get the lock");
    assert!(has(&ops[4].0, "-s") && has(&ops[4].0, "merge-base"));
    assert_eq!(ops[5].0, m.full[0]);
    // It was not there after all: fetch, waiting for the lock this time.
    let (ops, ok) = simulate(p.clone(), false, |op| {
        !(has(op, "-n") || has(op, "merge-base"))
    });
    assert!(ok);
    assert_eq!(ops[5].0, m.prepare[6].op);
    assert_eq!(ops[6].0, m.full[0]);
}

#[test]
fn without_a_usable_mirror_the_checkout_is_direct() {
    let s = source(SourceKind::Git, "/r/hello", "master");
    let mut c = checkout(&s, Mode::Update, "build");
    c.mirror = true;
    c.retry = Some(Retry {
        delay: 5,
        repeats: 1,
    });
    let p = c.plan().unwrap();
    let m = p.mirror.clone().unwrap();
    // No flock on the slave (and no mirror yet): every mirror command fails.
    let (ops, ok) = simulate(p.clone(), false, |op| {
        !has(op, "flock") && !has(op, "--git-dir")
    });
    assert!(ok);
    let first_direct = ops.iter().position(|o| o.0 == p.full[0]).unwrap();
    assert_eq!(
        ops[first_direct].2.as_deref(),
        Some("the slave's mirror cannot be used, checking out from the repository")
    );
    assert!(ops[..first_direct]
        .iter()
        .all(|o| m.prepare.iter().any(|mo| mo.op == o.0)));
    let rest: Vec<CheckoutOp> = ops[first_direct..].iter().map(|o| o.0.clone()).collect();
    assert_eq!(rest, [p.full.clone(), p.finish.clone()].concat());
    // A failed mkdir of the mirrors directory: direct at once.
    let (ops, _) = simulate(p.clone(), true, |op| {
        !matches!(op, CheckoutOp::MkDir { .. })
    });
    assert_eq!(ops[1].0, p.update[0]);
    // The mirror is fine but the clone from it fails: one direct full checkout,
    // which is the one `retry` repeats.
    let (ops, ok) = simulate(p.clone(), false, |op| !(has(op, "clone")));
    assert!(!ok);
    let clones: Vec<_> = ops.iter().filter(|o| has(&o.0, "clone")).collect();
    assert_eq!(clones.len(), 3);
    assert!(has(&clones[0].0, "flock"));
    assert!(!has(&clones[1].0, "flock") && !has(&clones[2].0, "flock"));
    let headers: Vec<(u64, &str)> = ops
        .iter()
        .filter_map(|o| o.2.as_deref().map(|h| (o.1, h)))
        .collect();
    assert_eq!(
        headers,
        vec![
            (
                0,
                "checkout from the slave's mirror failed, checking out from the repository"
            ),
            (5, "checkout failed, trying 1 more time after 5 seconds"),
        ]
    );
}

/// Builder `name`'s directory beside `slave` (another builder of the same slave).
fn builder(slave: &LocalSlave, name: &str) -> LocalSlave {
    let base = slave.base.parent().unwrap().join(name);
    std::fs::create_dir_all(&base).unwrap();
    LocalSlave {
        base,
        got_revision: None,
        outcomes: Vec::new(),
        patch: Vec::new(),
    }
}

/// The successful commands of the last checkout that reached `url`.
fn network(slave: &LocalSlave, url: &str) -> Vec<Vec<String>> {
    slave
        .outcomes
        .iter()
        .filter(|(op, ok)| *ok && has(op, url) && !has(op, "set-url"))
        .map(|(op, _)| argv_of(op).to_vec())
        .collect()
}

fn second_builder_needs_no_network(kind: SourceKind) {
    let (t, up, s, mut one, rev1) = setup(kind);
    let url = s.url.clone();
    let mut two = builder(&one, "two");
    let mut c = checkout(&s, Mode::Update, "build");
    c.mirror = true;
    c.revision = Some(&rev1);
    let (ok, got, _) = one.checkout(&c);
    assert!(ok);
    assert_eq!(got.as_deref(), Some(rev1.as_str()));
    assert_eq!(network(&one, &url).len(), 1, "{:?}", one.outcomes);
    assert!(t.path().join("mirrors").join(mirror_name(&s)).is_dir());
    // The repository goes away: the second builder needs only the mirror.
    let away = t.path().join("away");
    std::fs::rename(&up, &away).unwrap();
    let (ok, got, _) = two.checkout(&c);
    assert!(ok, "{:?}", two.outcomes);
    assert_eq!(got.as_deref(), Some(rev1.as_str()));
    assert!(network(&two, &url).is_empty(), "{:?}", two.outcomes);
    assert_eq!(read(&two, "build/f"), "one");
    if kind == SourceKind::Git {
        let origin = run(
            &two.base.join("build"),
            "git",
            &["config", "remote.origin.url"],
        );
        assert_eq!(
            origin, url,
            "the workdir looks like a clone of the repository"
        );
    }
    // The tip cannot be known without the repository: never a stale build.
    let mut tip = c;
    tip.revision = None;
    assert!(!two.checkout(&tip).0);
    // A new commit: the first builder to want it fetches it, once.
    std::fs::rename(&away, &up).unwrap();
    let rev2 = commit_file(kind, &up, "f", "two");
    c.revision = Some(&rev2);
    let (ok, got, _) = one.checkout(&c);
    assert!(ok && got.as_deref() == Some(rev2.as_str()));
    assert_eq!(network(&one, &url).len(), 1, "{:?}", one.outcomes);
    std::fs::rename(&up, &away).unwrap();
    let (ok, got, _) = two.checkout(&c);
    assert!(ok && got.as_deref() == Some(rev2.as_str()));
    assert!(network(&two, &url).is_empty());
    assert_eq!(read(&two, "build/f"), "two");
}

/// Three builders of one slave want a new revision at the same moment: one of
/// them fetches it, the others wait for that fetch and find it.
fn concurrent_builders_fetch_once(kind: SourceKind) {
    let (_t, up, s, mut one, rev1) = setup(kind);
    let url = s.url.clone();
    let mut c = checkout(&s, Mode::Clobber, "build");
    c.mirror = true;
    c.revision = Some(&rev1);
    assert!(one.checkout(&c).0);
    let rev2 = commit_file(kind, &up, "f", "two");
    c.revision = Some(&rev2);
    let mut builders: Vec<LocalSlave> = (0..4).map(|i| builder(&one, &format!("b{i}"))).collect();
    let start = std::sync::Barrier::new(builders.len());
    let results: Vec<(bool, Option<String>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = builders
            .iter_mut()
            .map(|b| {
                let (start, c, url) = (&start, &c, &url);
                scope.spawn(move || {
                    start.wait();
                    let (ok, got, _) = b.checkout(c);
                    (ok, got, network(b, url).len())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (ok, got, _) in &results {
        assert!(*ok);
        assert_eq!(got.as_deref(), Some(rev2.as_str()));
    }
    let fetches: usize = results.iter().map(|r| r.2).sum();
    assert_eq!(fetches, 1, "{results:?}");
}

#[test]
fn git_second_builder_needs_no_network_for_real() {
    second_builder_needs_no_network(SourceKind::Git);
}

#[test]
fn hg_second_builder_needs_no_network_for_real() {
    if has_hg() {
        second_builder_needs_no_network(SourceKind::Hg);
    }
}

#[test]
fn git_concurrent_builders_fetch_once_for_real() {
    concurrent_builders_fetch_once(SourceKind::Git);
}

#[test]
fn hg_concurrent_builders_fetch_once_for_real() {
    if has_hg() {
        concurrent_builders_fetch_once(SourceKind::Hg);
    }
}

// ---- credentials in repository URLs ----

const TOKEN: &str = "s3cr3t-T0KEN";

#[test]
fn credentials_are_split_off_http_urls() {
    let (url, c) =
        split_credentials(&format!("https://bot:{TOKEN}@example.org:8443/a/b.git")).unwrap();
    assert_eq!(url, "https://example.org:8443/a/b.git");
    let c = c.unwrap();
    assert_eq!((c.username.as_str(), c.password.as_str()), ("bot", TOKEN));
    assert_eq!(c.origin, "https://example.org:8443");
    assert!(!format!("{c:?}").contains(TOKEN));
    // Percent-encoding is read as git and hg read it; a user alone is a token too.
    let (_, c) = split_credentials("http://a%40b:p%3Aw%2F@h/r").unwrap();
    let c = c.unwrap();
    assert_eq!((c.username.as_str(), c.password.as_str()), ("a@b", "p:w/"));
    let (url, c) = split_credentials("https://ghp_tok@h/r?x=1").unwrap();
    assert_eq!(url, "https://h/r?x=1");
    assert_eq!(c.unwrap().username, "ghp_tok");
    // No credentials: unchanged. An ssh user is no secret and ssh needs it.
    for plain in [
        "https://h/a@b.git",
        "/srv/repo",
        "./repos/x",
        "git@h:o/r.git",
        "ssh://git@h/r",
    ] {
        assert_eq!(split_credentials(plain).unwrap(), (plain.to_string(), None));
    }
    // A password where it cannot be handed over, or bad bytes: refused,
    // and the error does not show it.
    for bad in [
        format!("ssh://u:{TOKEN}@h/r"),
        format!("https://u:{TOKEN}%0a@h/r"),
        format!("https://u:{TOKEN}%zz@h/r"),
    ] {
        let e = split_credentials(&bad).unwrap_err().to_string();
        assert!(!e.contains(TOKEN) && e.contains("h/r"), "{e}");
    }
    assert_eq!(
        redact_url(&format!("https://bot:{TOKEN}@h/r")),
        "https://h/r"
    );
}

fn all_argv(p: &CheckoutPlan) -> Vec<Vec<String>> {
    let mut ops: Vec<&CheckoutOp> = Vec::new();
    ops.extend(&p.update);
    ops.extend(&p.full);
    ops.extend(&p.finish);
    if let Some(m) = &p.mirror {
        ops.extend(m.prepare.iter().map(|m| &m.op));
        ops.extend(&m.update);
        ops.extend(&m.full);
    }
    ops.into_iter()
        .filter_map(|op| match op {
            CheckoutOp::Shell { argv, .. } | CheckoutOp::GotRevision { argv, .. } => {
                Some(argv.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn plans_keep_credentials_out_of_argv() {
    let url = format!("https://bot:{TOKEN}@example.org/r.git");
    for kind in [SourceKind::Git, SourceKind::Hg] {
        let s = source(kind, &url, "main");
        let mut c = checkout(&s, Mode::Update, "build");
        c.mirror = true;
        c.revision = Some("abc123");
        let plan = c.plan().unwrap();
        let argvs = all_argv(&plan);
        assert!(!argvs.is_empty());
        for a in &argvs {
            assert!(!a.join(" ").contains(TOKEN), "{kind:?}: {a:?}");
        }
        assert!(!format!("{plan:?}").contains(TOKEN));
        assert!(!serde_json::to_string(&plan).unwrap().contains(TOKEN));
        // The same mirror as without credentials: a new token is the same
        // repository.
        let bare = source(kind, "https://example.org/r.git", "main");
        assert_eq!(mirror_name(&s), mirror_name(&bare));
        match kind {
            SourceKind::Git => {
                assert!(argvs
                    .iter()
                    .any(|a| a.contains(&"https://example.org/r.git".to_string())));
                assert_eq!(plan.env.0[GIT_PASSWORD_VAR], TOKEN);
                assert_eq!(plan.env.0[GIT_USERNAME_VAR], "bot");
                assert_eq!(
                    plan.env.0["GIT_CONFIG_KEY_1"],
                    "credential.https://example.org.helper"
                );
            }
            SourceKind::Hg => {
                let remote: Vec<&Vec<String>> = argvs
                    .iter()
                    .filter(|a| a.contains(&HG_SOURCE_ALIAS.to_string()))
                    .collect();
                // The mirror's two pulls (without waiting, then waiting), the
                // direct pull and the direct clone.
                assert_eq!(remote.len(), 4, "{argvs:?}");
                for a in remote {
                    assert!(
                        a.contains(&format!("paths.{HG_SOURCE_ALIAS}=${HG_SOURCE_VAR}")),
                        "{a:?}"
                    );
                }
                assert_eq!(plan.env.0[HG_SOURCE_VAR], url);
            }
            SourceKind::Svn
            | SourceKind::Bzr
            | SourceKind::Darcs
            | SourceKind::Cvs
            | SourceKind::Arch => {
                unreachable!("only git and hg are in the loop")
            }
        }
    }
    // Without credentials nothing changes and nothing is added.
    let s = source(SourceKind::Hg, "https://example.org/r", "default");
    let plan = checkout(&s, Mode::Update, "build").plan().unwrap();
    assert!(plan.env.0.is_empty());
    assert!(all_argv(&plan)
        .iter()
        .all(|a| !a.contains(&"--config".to_string())));
}

/// git asks the helper the environment configures, for that origin only, and
/// no helper of the slave's own configuration stores the password.
#[test]
fn the_git_credential_helper_answers_for_its_origin_only() {
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("stored-credentials");
    std::fs::write(
        home.path().join(".gitconfig"),
        format!(
            "[credential]\n\thelper = store --file {}\n",
            store.display()
        ),
    )
    .unwrap();
    let (_, c) = split_credentials(&format!("https://bot:{TOKEN}@example.org/r.git")).unwrap();
    let env = credential_env(SourceKind::Git, &c.unwrap());
    let git = |input: &str, action: &str| {
        use std::io::Write;
        let mut child = Proc::new("git")
            .args(["credential", action])
            .env("HOME", home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .envs(&env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = git("protocol=https\nhost=example.org\npath=r.git\n\n", "fill");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("username=bot\n") && text.contains(&format!("password={TOKEN}\n")),
        "{text}"
    );
    // Approving it (what git does after a successful fetch) stores nothing.
    let out = git(
        &format!("protocol=https\nhost=example.org\nusername=bot\npassword={TOKEN}\n\n"),
        "approve",
    );
    assert!(out.status.success());
    assert!(
        !store.exists(),
        "the slave's own credential helper stored the password"
    );
    // Another host gets nothing (and no prompt).
    let out = git("protocol=https\nhost=elsewhere.example\n\n", "fill");
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(TOKEN));
}

/// A try build: after the checkout the patch is written into the workdir and
/// applied (`git apply -pN` / `hg import --no-commit -pN`); the next update of
/// that tree starts afresh, so the patch does not leak into the next build.
fn patched(kind: SourceKind) {
    let (_t, _up, s, mut slave, rev) = setup(kind);
    slave.patch =
        b"diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-one\n\\ No newline at end of file\n+patched\n\\ No newline at end of file\n"
            .to_vec();
    let c = checkout(&s, Mode::Update, "build").with_patch(Some(1));
    let plan = c.plan().unwrap();
    assert_eq!(
        plan.patch[0],
        CheckoutOp::WritePatch {
            path: format!("build/{PATCH_FILE}")
        }
    );
    assert!(has(&plan.patch[1], "-p1"));
    assert_eq!(plan.patched_marker, Some(format!("build/{PATCH_FILE}")));
    let (ok, got, _) = slave.checkout(&c);
    assert!(ok, "{:?}", slave.outcomes);
    assert_eq!(
        got.as_deref(),
        Some(rev.as_str()),
        "got_revision is the base"
    );
    assert_eq!(read(&slave, "build/f"), "patched");
    let plain = checkout(&s, Mode::Update, "build");
    let (ok, _, ops) = slave.checkout(&plain);
    assert!(ok);
    assert!(
        ops.iter().any(is_clone),
        "a patched tree is checked out afresh"
    );
    assert_eq!(read(&slave, "build/f"), "one");
    // A patch that does not apply fails the checkout.
    slave.patch =
        b"diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-nothing like it\n+x\n".to_vec();
    let (ok, _, _) = slave.checkout(&c);
    assert!(!ok);
    // Nor may a patch write outside the workdir.
    slave.patch = b"diff --git a/../escaped b/../escaped\nnew file mode 100644\n--- /dev/null\n+++ b/../escaped\n@@ -0,0 +1 @@\n+out\n".to_vec();
    let (ok, _, _) = slave.checkout(&c);
    assert!(!ok);
    assert!(!slave.base.join("escaped").exists());
    assert!(checkout(&s, Mode::Copy, "build")
        .plan()
        .unwrap()
        .patched_marker
        .is_none());
}

#[test]
fn git_try_patch_is_applied_then_forgotten() {
    patched(SourceKind::Git);
}

#[test]
fn hg_try_patch_is_applied_then_forgotten() {
    if has_hg() {
        patched(SourceKind::Hg);
    }
}

#[test]
fn svn_plans_check_out_the_branch_path_pegged_at_the_revision() {
    let mut s = source(SourceKind::Svn, "svn://h/repo", "trunk");
    s.branch_prefix = Some("branches".into());
    let mut c = checkout(&s, Mode::Update, "build");
    c.mirror = true;
    c.revision = Some("42");
    let plan = c.plan().unwrap();
    assert!(plan.mirror.is_none(), "svn has no mirror");
    assert_eq!(plan.probe.as_deref(), Some("build/.svn"));
    let want = |verb: &[&str], url: &str| {
        let mut a = vec!["svn", "--non-interactive"];
        a.extend_from_slice(verb);
        a.extend_from_slice(&["-r", "42", "--", url, "."]);
        a.iter().map(|w| w.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(
        plan.update,
        vec![CheckoutOp::Shell {
            argv: want(&["switch", "--ignore-ancestry"], "svn://h/repo/trunk@42"),
            workdir: "build".into()
        }]
    );
    assert!(plan.full.contains(&CheckoutOp::Shell {
        argv: want(&["checkout"], "svn://h/repo/trunk@42"),
        workdir: "build".into()
    }));
    // Another branch is found under the prefix.
    c.branch = Some("1.x");
    let plan = c.plan().unwrap();
    assert!(plan.full.contains(&CheckoutOp::Shell {
        argv: want(&["checkout"], "svn://h/repo/branches/1.x@42"),
        workdir: "build".into()
    }));
    // No way out of the URL, no option for a branch.
    for bad in ["../x", "a/../../b", "a\nb"] {
        c.branch = Some(bad);
        assert!(c.plan().is_err(), "{bad}");
    }
    // A user name goes to --username, a password is refused.
    let s = source(SourceKind::Svn, "https://bot@h/repo", "");
    let plan = checkout(&s, Mode::Clobber, "build").plan().unwrap();
    assert!(
        plan.full
            .iter()
            .any(|op| matches!(op, CheckoutOp::Shell { argv, .. }
        if argv.windows(2).any(|w| w[0] == "--username" && w[1] == "bot")
            && argv.contains(&"https://h/repo@HEAD".to_string()))),
        "{plan:?}"
    );
    let s = source(SourceKind::Svn, &format!("https://bot:{TOKEN}@h/repo"), "");
    let e = checkout(&s, Mode::Clobber, "build").plan().unwrap_err();
    assert!(!e.to_string().contains(TOKEN), "{e}");
    assert!(matches!(e, CheckoutError::SvnPassword { .. }), "{e}");
}

// ---- CVS and GNU Arch ----

#[test]
fn cvs_plans_check_out_update_and_export_with_cvs() {
    let s = source(SourceKind::Cvs, "/srv/cvs proj/sub", "");
    assert_eq!(source_dir(&s), "sub");
    let mut c = checkout(&s, Mode::Update, "build");
    c.revision = Some("2026-12-07 05:25:02 +0000");
    let p = c.plan().unwrap();
    assert_eq!(p.probe.as_deref(), Some("build/CVS"));
    assert_eq!(
        p.update,
        vec![shell(
            &[
                "cvs",
                "-f",
                "-q",
                "update",
                "-d",
                "-P",
                "-C",
                "-A",
                "-D",
                "2026-12-07 05:25:02 +0000"
            ],
            "build"
        )]
    );
    assert_eq!(
        p.full,
        vec![
            CheckoutOp::RmDir {
                dir: "build".into()
            },
            shell(
                &[
                    "cvs",
                    "-f",
                    "-d",
                    "/srv/cvs",
                    "-q",
                    "checkout",
                    "-P",
                    "-D",
                    "2026-12-07 05:25:02 +0000",
                    "-d",
                    "build",
                    "proj/sub"
                ],
                ""
            )
        ]
    );
    // The date checked out is the revision.
    assert_eq!(
        p.finish,
        vec![CheckoutOp::GotRevision {
            argv: argv(&["printf", "%s", "2026-12-07 05:25:02 +0000"]),
            workdir: "build".into()
        }]
    );
    // A branch tag; export runs `cvs export` into the workdir, no copy.
    let s = source(SourceKind::Cvs, "/srv/cvs proj", "rel-1");
    let p = checkout(&s, Mode::Export, "build/x").plan().unwrap();
    assert_eq!(p.probe, None);
    assert!(p.update.is_empty());
    assert_eq!(
        p.full,
        vec![
            CheckoutOp::RmDir {
                dir: "build/x".into()
            },
            CheckoutOp::MkDir {
                dir: "build".into()
            },
            shell(
                &["cvs", "-f", "-d", "/srv/cvs", "-q", "export", "-r", "rel-1", "-d", "x", "proj"],
                "build"
            )
        ]
    );
    assert_eq!(
        p.finish,
        vec![CheckoutOp::GotRevision {
            argv: argv(&["date", "-u", "+%Y-%m-%d %H:%M:%S +0000"]),
            workdir: "build/x".into()
        }]
    );
    // A module that climbs out is refused.
    let s = source(SourceKind::Cvs, "/srv/cvs ../etc", "");
    assert!(matches!(
        checkout(&s, Mode::Update, "build").plan(),
        Err(CheckoutError::BadCvsModule(_))
    ));
}

#[test]
fn a_pserver_password_goes_to_a_passfile_never_an_argv() {
    let url = ":pserver:anon:s3cr3t@cvs.example.org:/cvsroot proj";
    let s = source(SourceKind::Cvs, url, "");
    assert_eq!(
        redact_url(url),
        ":pserver:anon@cvs.example.org:/cvsroot proj"
    );
    let p = checkout(&s, Mode::Copy, "build").plan().unwrap();
    for a in all_argv(&p) {
        assert!(!a.join(" ").contains("s3cr3t"), "{a:?}");
    }
    assert!(!format!("{p:?}").contains("s3cr3t"));
    assert!(!serde_json::to_string(&p).unwrap().contains("s3cr3t"));
    assert!(all_argv(&p)
        .iter()
        .any(|a| a.contains(&":pserver:anon@cvs.example.org:/cvsroot".to_string())));
    let pass = p.cvs_passfile.expect("a passfile").0;
    let text = String::from_utf8_lossy(&pass).into_owned();
    let mut want = b"/1 :pserver:anon@cvs.example.org:2401/cvsroot ".to_vec();
    want.extend(crate::sources::cvs_scramble("s3cr3t"));
    want.push(b'\n');
    assert!(pass.starts_with(&want), "{text}");
    assert!(
        text.contains("\n:pserver:anon@cvs.example.org:/cvsroot A"),
        "{text}"
    );
    // The scramble is its own inverse (CVS's table is an involution).
    let twice: Vec<u8> = crate::sources::cvs_scramble("s3cr3t")[1..]
        .iter()
        .map(|b| crate::sources::cvs_scramble(&(*b as char).to_string())[1])
        .collect();
    assert_eq!(twice, b"s3cr3t");
}

#[test]
fn arch_plans_register_the_archive_in_a_private_home() {
    let v = "ann@example.org--2026/proj--main--1.0";
    let s = source(SourceKind::Arch, "/srv/arch", v);
    assert_eq!(source_dir(&s), "proj");
    let p = checkout(&s, Mode::Update, "build").plan().unwrap();
    assert_eq!(p.home.as_deref(), Some(ARCH_HOME));
    assert_eq!(p.probe.as_deref(), Some("build/{arch}"));
    let register = vec![
        CheckoutOp::MkDir {
            dir: ARCH_HOME.into(),
        },
        shell(
            &[
                "tla",
                "register-archive",
                "-f",
                "ann@example.org--2026",
                "/srv/arch",
            ],
            "",
        ),
    ];
    let mut update = register.clone();
    update.push(shell(&["tla", "update", v], "build"));
    assert_eq!(p.update, update);
    let mut full = register.clone();
    full.push(CheckoutOp::RmDir {
        dir: "build".into(),
    });
    full.push(shell(&["tla", "get", v, "build"], ""));
    assert_eq!(p.full, full);
    // Another branch in the same archive; a given revision; export by tla.
    let mut c = checkout(&s, Mode::Export, "build");
    c.branch = Some("proj--devel--2.0");
    let rev = "ann@example.org--2026/proj--devel--2.0--patch-3";
    c.revision = Some(rev);
    let p = c.plan().unwrap();
    assert!(p.update.is_empty(), "{:?}", p.update);
    assert!(p.full.contains(&shell(&["tla", "get", rev, "source"], "")));
    assert_eq!(
        p.finish,
        vec![
            CheckoutOp::RmDir {
                dir: "build".into()
            },
            shell(&["tla", "export", "../build"], "source"),
            CheckoutOp::GotRevision {
                argv: argv(&["tla", "tree-revision"]),
                workdir: "source".into()
            }
        ]
    );
    // Not a version: refused.
    let s = source(SourceKind::Arch, "/srv/arch", "-rf");
    assert!(matches!(
        checkout(&s, Mode::Update, "build").plan(),
        Err(CheckoutError::BadArchVersion(_))
    ));
}

#[test]
fn pull_refs_are_made_from_digits_only() {
    assert_eq!(pull_ref("7", false).as_deref(), Some("refs/pull/7/head"));
    assert_eq!(
        pull_ref("12", true).as_deref(),
        Some("refs/merge-requests/12/head")
    );
    for bad in ["", "7a", "-1", "7/../x", " 7", "1234567890123456789"] {
        assert_eq!(pull_ref(bad, false), None, "{bad:?}");
    }
    assert!(is_pull_ref("refs/pull/7/head"));
    assert!(is_pull_ref("refs/merge-requests/7/head"));
    for bad in [
        "refs/pull/x/head",
        "refs/heads/main",
        "refs/pull/7/merge",
        "--upload-pack=x",
    ] {
        assert!(!is_pull_ref(bad), "{bad}");
    }
}

#[test]
fn a_pull_request_fetches_the_head_ref_then_checks_the_head_out() {
    let src = source(SourceKind::Git, "/srv/r.git", "main");
    let mut c = checkout(&src, Mode::Update, "build");
    c.revision = Some("c0ffee");
    let plan = c.with_pull_ref(Some("refs/pull/7/head")).plan().unwrap();
    assert_eq!(
        plan.update[0],
        shell(
            &["git", "fetch", "--", "/srv/r.git", "refs/pull/7/head"],
            "build"
        )
    );
    let full: Vec<&CheckoutOp> = plan.full.iter().collect();
    assert!(full.contains(&&shell(
        &["git", "fetch", "--", "/srv/r.git", "refs/pull/7/head"],
        "build"
    )));
    let CheckoutOp::Shell { argv, .. } = full.last().unwrap() else {
        panic!("{full:?}")
    };
    assert!(argv.contains(&"c0ffee".to_string()), "{argv:?}");
    // Through the mirror: the ref is fetched into it under its own name.
    let mut m = checkout(&src, Mode::Update, "build");
    m.mirror = true;
    m.revision = Some("c0ffee");
    let plan = m.with_pull_ref(Some("refs/pull/7/head")).plan().unwrap();
    let prep = format!("{:?}", plan.mirror.unwrap().prepare);
    assert!(
        prep.contains("+refs/pull/7/head:refs/pull/7/head"),
        "{prep}"
    );
    // Anything else is refused, and so is a pull request of another VC.
    let bad = checkout(&src, Mode::Update, "build").with_pull_ref(Some("--upload-pack=sh"));
    assert!(matches!(bad.plan(), Err(CheckoutError::PullRef(_))));
    let hg = source(SourceKind::Hg, "/srv/h", "default");
    let bad = checkout(&hg, Mode::Update, "build").with_pull_ref(Some("refs/pull/7/head"));
    assert!(matches!(bad.plan(), Err(CheckoutError::PullRef(_))));
}
