//! Source checkout as data: the worker-protocol operations (`rmdir`, `mkdir`,
//! `cpdir`, and `shell` with a plain argv) that bring a git or hg source into a
//! step's workdir in one of Buildbot's modes, so a stock buildbot-worker can do it.
//!
//! A [`CheckoutPlan`] follows Buildbot 0.7's Source steps:
//! * `update`: fetch into the existing tree and check the revision out there; build
//!   products stay (no clean). No tree yet, or a failed update: a full checkout.
//! * `clobber`: remove the workdir and check out afresh (a "full" checkout).
//! * `copy`: keep the tree in a copy dir next to the workdir (see [`copy_dir`]),
//!   update it as `update` does, then replace the workdir with a copy of it.
//! * `export`: as `copy`, then remove the VC metadata (`.git`, `.hg`) from the
//!   workdir, as `cvs export` leaves none.
//! * `alwaysUseLatest`: the build's revision is ignored; the branch's tip is built.
//! * `retry = DELAY REPEATS`: only a *full* checkout is retried (the manual: "when a
//!   full VC checkout fails"), up to REPEATS more times, DELAY seconds apart; each
//!   try starts by removing the directory, so it starts clean.
//!
//! Every plan ends with a [`CheckoutOp::GotRevision`] whose trimmed stdout is the
//! `got_revision` property. URLs, branches and revisions are argv elements after
//! `--` or an option that takes a value, never shell text; a branch or revision
//! that could be read as an option is refused. [`CheckoutRun`] is the small state
//! machine that walks a plan (update, fallback, retries) for the build engine.
//! Paths are relative to the builder's directory on the slave, like workdirs.

use serde::Serialize;

use super::StepKind;
use crate::config::{Mode, Retry, Source, SourceKind};

/// One worker-protocol operation of a checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CheckoutOp {
    /// `rmdir`: remove a tree (absent is fine).
    RmDir { dir: String },
    /// `mkdir`: create a directory and its parents.
    MkDir { dir: String },
    /// `shell`: run argv (no shell) in `workdir`.
    Shell { argv: Vec<String>, workdir: String },
    /// `cpdir`: copy a tree; `to` must not exist (a preceding RmDir sees to that).
    CpDir { from: String, to: String },
    /// `shell` whose trimmed stdout becomes the `got_revision` property.
    GotRevision { argv: Vec<String>, workdir: String },
}

/// Why a checkout cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    #[error("step is not a checkout")]
    NotACheckout,
    #[error("refusing {what} {value:?}: it is empty, starts with `-` or holds control characters")]
    BadName { what: &'static str, value: String },
    #[error("refusing checkout workdir {0:?}: it must name a directory below the builder's (no `..`, not empty)")]
    BadWorkdir(String),
}

/// The operations of one checkout, in the groups the Source step runs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckoutPlan {
    /// Where the repository lives: the workdir, or the copy dir for copy/export.
    pub srcdir: String,
    /// Stat this path (`SRCDIR/.git` or `SRCDIR/.hg`) first: when it exists, try
    /// `update`; otherwise (or `None`, as in clobber) go straight to `full`.
    pub probe: Option<String>,
    /// Bring an existing repository to the revision, keeping untracked files.
    pub update: Vec<CheckoutOp>,
    /// Remove `srcdir` and check out afresh: the group that `retry` repeats, and the
    /// fallback when `update` fails.
    pub full: Vec<CheckoutOp>,
    /// After either: copy/export into the workdir, then the GotRevision op.
    pub finish: Vec<CheckoutOp>,
    pub retry: Option<Retry>,
}

/// What to check out: a checkout step's settings and the build's source stamp.
#[derive(Debug, Clone, Copy)]
pub struct Checkout<'a> {
    pub source: &'a Source,
    pub mode: Mode,
    pub always_use_latest: bool,
    pub retry: Option<Retry>,
    /// The step's workdir, already interpolated: where the tree must end up.
    pub workdir: &'a str,
    /// The build's branch for this source; `None` or empty: the configured branch.
    pub branch: Option<&'a str>,
    /// The build's revision; `None` or empty: the branch's latest.
    pub revision: Option<&'a str>,
}

impl<'a> Checkout<'a> {
    /// The checkout a `StepKind::Checkout` step asks for in a build of
    /// (`branch`, `revision`), with the step's interpolated `workdir`.
    pub fn from_step(
        kind: &'a StepKind,
        workdir: &'a str,
        branch: Option<&'a str>,
        revision: Option<&'a str>,
    ) -> Result<Checkout<'a>, CheckoutError> {
        match kind {
            StepKind::Checkout {
                source,
                mode,
                always_use_latest,
                retry,
            } => Ok(Checkout {
                source,
                mode: *mode,
                always_use_latest: *always_use_latest,
                retry: *retry,
                workdir,
                branch,
                revision,
            }),
            _ => Err(CheckoutError::NotACheckout),
        }
    }

    /// The operations for this checkout.
    pub fn plan(&self) -> Result<CheckoutPlan, CheckoutError> {
        let workdir = checked_workdir(self.workdir)?;
        let branch = match self.branch.filter(|b| !b.is_empty()) {
            Some(b) => b,
            None => self.source.branch.as_str(),
        };
        let branch = checked_name("branch", branch)?;
        let revision = match self.revision.filter(|r| !r.is_empty()) {
            Some(r) if !self.always_use_latest => Some(checked_name("revision", r)?),
            _ => None,
        };
        let vc = Vc {
            kind: self.source.kind,
            url: &self.source.url,
            branch,
            revision,
        };
        let copying = matches!(self.mode, Mode::Copy | Mode::Export);
        let srcdir = if copying {
            copy_dir(&workdir)
        } else {
            workdir.clone()
        };
        let probe = (self.mode != Mode::Clobber).then(|| join(&srcdir, vc.metadata_dir()));
        let update = if self.mode == Mode::Clobber {
            Vec::new()
        } else {
            vc.update(&srcdir)
        };
        let mut finish = Vec::new();
        if copying {
            finish.push(CheckoutOp::RmDir {
                dir: workdir.clone(),
            });
            finish.push(CheckoutOp::CpDir {
                from: srcdir.clone(),
                to: workdir.clone(),
            });
        }
        let revision_dir = if self.mode == Mode::Export {
            finish.push(CheckoutOp::RmDir {
                dir: join(&workdir, vc.metadata_dir()),
            });
            &srcdir
        } else {
            &workdir
        };
        finish.push(CheckoutOp::GotRevision {
            argv: vc.got_revision(),
            workdir: revision_dir.clone(),
        });
        Ok(CheckoutPlan {
            full: vc.full(&srcdir),
            srcdir,
            probe,
            update,
            finish,
            retry: self.retry,
        })
    }
}

/// The pristine tree kept for copy/export: `source` beside `build` as in Buildbot
/// (`build/x` → `source/x`); another relative workdir `w` → `source/w`; an absolute
/// one (a virtualenv path) → `W.source` beside it.
pub fn copy_dir(workdir: &str) -> String {
    if workdir.starts_with('/') {
        return format!("{}.source", workdir.trim_end_matches('/'));
    }
    match workdir.split_once('/') {
        Some(("build", rest)) => join("source", rest),
        None if workdir == "build" => "source".to_string(),
        _ => join("source", workdir),
    }
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), name)
}

/// Removing the workdir must never reach the builder's directory or beyond.
fn checked_workdir(workdir: &str) -> Result<String, CheckoutError> {
    let trimmed = workdir.trim_end_matches('/');
    let bad = trimmed.is_empty()
        || trimmed.split('/').any(|c| c == "..")
        || trimmed.split('/').all(|c| c.is_empty() || c == ".");
    if bad {
        return Err(CheckoutError::BadWorkdir(workdir.to_string()));
    }
    Ok(trimmed.to_string())
}

/// A branch or revision from a Change must stay a value, never become an option.
fn checked_name<'a>(what: &'static str, value: &'a str) -> Result<&'a str, CheckoutError> {
    if value.is_empty() || value.starts_with('-') || value.chars().any(char::is_control) {
        return Err(CheckoutError::BadName {
            what,
            value: value.to_string(),
        });
    }
    Ok(value)
}

/// The version-control commands for one source.
struct Vc<'a> {
    kind: SourceKind,
    url: &'a str,
    branch: &'a str,
    revision: Option<&'a str>,
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

impl Vc<'_> {
    fn metadata_dir(&self) -> &'static str {
        match self.kind {
            SourceKind::Git => ".git",
            SourceKind::Hg => ".hg",
        }
    }

    fn shell(words: &[&str], dir: &str) -> CheckoutOp {
        CheckoutOp::Shell {
            argv: argv(words),
            workdir: dir.to_string(),
        }
    }

    /// Detached checkout of `target`, overwriting local changes to tracked files.
    fn git_checkout(target: &str, dir: &str) -> CheckoutOp {
        Self::shell(
            &[
                "git",
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "--force",
                "--detach",
                target,
                "--",
            ],
            dir,
        )
    }

    fn hg_update(&self, dir: &str) -> CheckoutOp {
        let target = self.revision.unwrap_or(self.branch);
        Self::shell(
            &[
                "hg",
                "--noninteractive",
                "update",
                "--clean",
                "--rev",
                target,
            ],
            dir,
        )
    }

    fn update(&self, dir: &str) -> Vec<CheckoutOp> {
        match self.kind {
            SourceKind::Git => vec![
                Self::shell(&["git", "fetch", "--", self.url, self.branch], dir),
                Self::git_checkout(self.revision.unwrap_or("FETCH_HEAD"), dir),
            ],
            SourceKind::Hg => vec![
                Self::shell(&["hg", "--noninteractive", "pull", "--", self.url], dir),
                self.hg_update(dir),
            ],
        }
    }

    fn full(&self, dir: &str) -> Vec<CheckoutOp> {
        let mut ops = vec![
            CheckoutOp::RmDir {
                dir: dir.to_string(),
            },
            CheckoutOp::MkDir {
                dir: dir.to_string(),
            },
        ];
        match self.kind {
            SourceKind::Git => {
                ops.push(Self::shell(
                    &[
                        "git",
                        "clone",
                        "--no-checkout",
                        "--branch",
                        self.branch,
                        "--",
                        self.url,
                        ".",
                    ],
                    dir,
                ));
                ops.push(Self::git_checkout(self.revision.unwrap_or("HEAD"), dir));
            }
            SourceKind::Hg => {
                ops.push(Self::shell(
                    &[
                        "hg",
                        "--noninteractive",
                        "clone",
                        "--noupdate",
                        "--",
                        self.url,
                        ".",
                    ],
                    dir,
                ));
                ops.push(self.hg_update(dir));
            }
        }
        ops
    }

    fn got_revision(&self) -> Vec<String> {
        match self.kind {
            SourceKind::Git => argv(&["git", "rev-parse", "HEAD"]),
            SourceKind::Hg => argv(&["hg", "log", "--rev", ".", "--template", "{node}"]),
        }
    }
}

/// What the engine does next in a checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Write `header` (if any) to the step's log, wait `delay_secs` (non-zero only
    /// before a retry), then run `op` and report whether it succeeded.
    Run {
        op: CheckoutOp,
        delay_secs: u64,
        header: Option<String>,
    },
    /// The checkout is over; `ok` is false when it failed.
    Done { ok: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Update,
    Full,
    Finish,
    Over,
}

/// Walks a plan as Buildbot's Source step does: update when the tree is there,
/// a full checkout when not or when the update fails, full checkouts retried.
#[derive(Debug, Clone)]
pub struct CheckoutRun {
    plan: CheckoutPlan,
    phase: Phase,
    index: usize,
    retries_left: u32,
}

impl CheckoutRun {
    /// `updateable`: whether the plan's `probe` path exists on the slave.
    pub fn new(plan: CheckoutPlan, updateable: bool) -> CheckoutRun {
        let phase = if updateable && plan.probe.is_some() && !plan.update.is_empty() {
            Phase::Update
        } else {
            Phase::Full
        };
        let retries_left = plan.retry.map(|r| r.repeats).unwrap_or(0);
        CheckoutRun {
            plan,
            phase,
            index: 0,
            retries_left,
        }
    }

    fn ops(&self, phase: Phase) -> &[CheckoutOp] {
        match phase {
            Phase::Update => &self.plan.update,
            Phase::Full => &self.plan.full,
            Phase::Finish => &self.plan.finish,
            Phase::Over => &[],
        }
    }

    /// The first operation.
    pub fn start(&mut self) -> Next {
        self.current(0, None)
    }

    /// The next operation after the last one succeeded (`ok`) or failed.
    pub fn done(&mut self, ok: bool) -> Next {
        if ok {
            self.index += 1;
            return self.current(0, None);
        }
        match self.phase {
            Phase::Update => {
                self.enter(Phase::Full);
                self.current(
                    0,
                    Some("update failed, removing the tree and checking out afresh".into()),
                )
            }
            Phase::Full if self.retries_left > 0 => {
                let delay = self.plan.retry.map(|r| r.delay).unwrap_or(0);
                let header = format!(
                    "checkout failed, trying {} more time{} after {delay} seconds",
                    self.retries_left,
                    if self.retries_left == 1 { "" } else { "s" }
                );
                self.retries_left -= 1;
                self.enter(Phase::Full);
                self.current(delay, Some(header))
            }
            _ => {
                self.phase = Phase::Over;
                Next::Done { ok: false }
            }
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.index = 0;
    }

    /// The op at the cursor, moving past finished (or empty) groups.
    fn current(&mut self, delay_secs: u64, header: Option<String>) -> Next {
        loop {
            if let Some(op) = self.ops(self.phase).get(self.index) {
                return Next::Run {
                    op: op.clone(),
                    delay_secs,
                    header,
                };
            }
            match self.phase {
                Phase::Update | Phase::Full => self.enter(Phase::Finish),
                Phase::Finish | Phase::Over => {
                    self.phase = Phase::Over;
                    return Next::Done { ok: true };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command as Proc;

    fn source(kind: SourceKind, url: &str, branch: &str) -> Source {
        Source {
            kind,
            url: url.to_string(),
            branch: branch.to_string(),
        }
    }

    fn checkout<'a>(source: &'a Source, mode: Mode, workdir: &'a str) -> Checkout<'a> {
        Checkout {
            source,
            mode,
            always_use_latest: false,
            retry: None,
            workdir,
            branch: None,
            revision: None,
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
        c.revision = Some("--not-even-checked");
        c.always_use_latest = true;
        let p = c.plan().unwrap();
        assert!(matches!(&p.update[1], CheckoutOp::Shell { argv, .. } if argv[6] == "FETCH_HEAD"));
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

    #[test]
    fn from_step_reads_a_checkout_step() {
        let s = source(SourceKind::Git, "/r/hello", "master");
        let kind = StepKind::Checkout {
            source: s.clone(),
            mode: Mode::Copy,
            always_use_latest: true,
            retry: Some(Retry {
                delay: 3,
                repeats: 2,
            }),
        };
        let c = Checkout::from_step(&kind, "build", Some("b"), Some("r")).unwrap();
        assert_eq!(
            (c.mode, c.always_use_latest, c.branch, c.revision),
            (Mode::Copy, true, Some("b"), Some("r"))
        );
        assert_eq!(
            c.plan().unwrap().retry,
            Some(Retry {
                delay: 3,
                repeats: 2
            })
        );
        let shell_kind = StepKind::Shell {
            command: crate::factory::Command::Argv(vec!["true".into()]),
        };
        assert!(matches!(
            Checkout::from_step(&shell_kind, "build", None, None),
            Err(CheckoutError::NotACheckout)
        ));
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

    /// Executes ops in `base` the way a slave does (`cpdir` as buildbot-worker's
    /// `cp -R -P -p`); returns got_revision.
    struct LocalSlave {
        base: PathBuf,
        got_revision: Option<String>,
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
            let updateable = plan
                .probe
                .as_ref()
                .is_some_and(|p| self.base.join(p).exists());
            self.got_revision = None;
            let mut run = CheckoutRun::new(plan, updateable);
            let mut ran = Vec::new();
            let mut next = run.start();
            loop {
                match next {
                    Next::Run { op, .. } => {
                        let ok = self.exec(&op);
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
        };
        let rev = commit_file(kind, &up, "f", "one");
        let s = source(kind, up.to_str().unwrap(), branch);
        let slave = LocalSlave {
            base: tmp.path().join("slave"),
            got_revision: None,
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

    fn has_hg() -> bool {
        let ok = Proc::new("hg")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipping: hg (mercurial) is not installed");
        }
        ok
    }

    fn update_mode(kind: SourceKind) {
        let (_t, up, s, mut slave, rev1) = setup(kind);
        let c = checkout(&s, Mode::Update, "build");
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

    fn clobber_mode(kind: SourceKind) {
        let (_t, up, s, mut slave, rev1) = setup(kind);
        let c = checkout(&s, Mode::Clobber, "build");
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

    fn copy_and_export_modes(kind: SourceKind) {
        let meta = match kind {
            SourceKind::Git => ".git",
            SourceKind::Hg => ".hg",
        };
        let (_t, up, s, mut slave, rev1) = setup(kind);
        let c = checkout(&s, Mode::Copy, "build");
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

        let e = checkout(&s, Mode::Export, "build");
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
        update_mode(SourceKind::Git);
    }

    #[test]
    fn git_clobber_mode_for_real() {
        clobber_mode(SourceKind::Git);
    }

    #[test]
    fn git_copy_and_export_modes_for_real() {
        copy_and_export_modes(SourceKind::Git);
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
            update_mode(SourceKind::Hg);
        }
    }

    #[test]
    fn hg_clobber_mode_for_real() {
        if has_hg() {
            clobber_mode(SourceKind::Hg);
        }
    }

    #[test]
    fn hg_copy_and_export_modes_for_real() {
        if has_hg() {
            copy_and_export_modes(SourceKind::Hg);
        }
    }
}
