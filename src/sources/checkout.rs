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
//! # The slave's mirror
//! Unless the factory says `mirror = false`, a slave keeps one mirror of each
//! repository URL, shared by all its builders: `BASEDIR/mirrors/NAME` (a bare git
//! repository, or an hg repository without a working copy; NAME is
//! [`mirror_name`]), and builders check out from it locally (git and hg hard-link the
//! objects of a local clone). The plan's [`MirrorPlan::prepare`] brings the mirror
//! up to date first:
//! * with a revision, a mirror that already has it (git: the revision is on the
//!   mirror's branch) is not touched: the second builder of a BuildSet, or a
//!   rebuild, costs no network at all;
//! * without one (a forced build of the tip, `alwaysUseLatest`), the mirror always
//!   fetches, so a tip is never stale;
//! * writers hold an exclusive `flock(1)` on `NAME.lock`, readers of the mirror
//!   (the checkouts from it) a shared one. A builder that finds the revision missing
//!   tries the fetch without waiting (`flock -n`); when another builder is fetching
//!   already, it waits for that fetch (`flock -s`) and looks again, so builders that
//!   want the same revision at the same moment fetch it once.
//! * anything going wrong with the mirror (no `flock` on the slave, a broken mirror)
//!   falls back to the checkout from the repository itself, with a line in the log
//!   saying so; a failed full checkout from the mirror does too.
//!
//! A git workdir cloned from the mirror has its `origin` set to the repository's
//! URL, so it looks like a normal clone; an hg one keeps the mirror as its default
//! path (hg has no command to change it). The mirrors directory is
//! [`MIRRORS_DIR`] relative to the builder's directory (`BASEDIR/BUILDER`), which
//! the slave resolves inside its basedir; a checkout into an absolute workdir (the
//! virtualenv types' `%(virtualenv)s/src/DIR`) uses the mirror only when the engine
//! gives the absolute mirrors directory ([`Checkout::with_mirrors`]).
//!
//! Every plan ends with a [`CheckoutOp::GotRevision`] whose trimmed stdout is the
//! revision checked out: the `got_revision_DIR` property (DIR as
//! [`super::source_dir`]), and `got_revision` for the build's first checkout
//! ([`CheckoutRun::revision_properties`]). URLs, branches and revisions are argv
//! elements after `--` or an option that takes a value, never shell text; a branch
//! or revision that could be read as an option is refused. [`CheckoutRun`] is the
//! small state machine that walks a plan (mirror, update, fallback, retries) for the
//! build engine. Paths are relative to the builder's directory on the slave, like
//! workdirs.
//!
//! # Credentials in the URL
//! `https://USER:TOKEN@host/repo` never reaches an argv, a log, a page or the
//! database: argv, `.git/config` and every display name the URL without them
//! ([`split_credentials`], [`redact_url`], the one redaction every part of autobot
//! uses), and the plan's [`CheckoutPlan::env`] hands them over — git through a
//! credential helper for that origin only, set up in `GIT_CONFIG_*` variables, hg
//! through a `[paths]` alias whose URL is in `AUTOBOT_HG_SOURCE`
//! ([`credential_env`]). The engine sends such a URL only to autobot slaves (their
//! native `git`/`hg` commands); a stock buildbot-worker writes every message it
//! receives to its log, so it gets the URL without credentials.

use std::collections::BTreeMap;

use serde::Serialize;

use super::credentials::{
    credential_env, cvs_passfile, redact_url, split_credentials, HG_SOURCE_ALIAS, HG_SOURCE_VAR,
};
use super::{path_safe, source_dir, Mode, Retry, Source, SourceKind};

/// Build properties by name (the factory's `Properties`).
type Properties = BTreeMap<String, String>;

/// The file a try build's patch is written to in the workdir, as Buildbot's
/// `.buildbot-diff`.
pub const PATCH_FILE: &str = ".autobot-diff";

/// The slave's mirrors directory, relative to a builder's directory
/// (`BASEDIR/BUILDER/../mirrors` = `BASEDIR/mirrors`).
pub const MIRRORS_DIR: &str = "../mirrors";

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
    /// `shell` whose trimmed stdout is the revision checked out.
    GotRevision { argv: Vec<String>, workdir: String },
    /// Write the try job's patch to `path` (a stock buildbot-worker gets it by
    /// `downloadFile`, an autobot slave has it in its command's `patch` argument).
    /// The file stays: its presence tells the next `update` the tree is patched.
    WritePatch { path: String },
}

/// Why a checkout cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    #[error("step is not a checkout")]
    NotACheckout,
    #[error("refusing {what} {value:?}: it is empty, starts with `-` or holds control characters")]
    BadName { what: &'static str, value: String },
    #[error("refusing the pull request ref {0}")]
    PullRef(String),
    #[error("refusing checkout workdir {0:?}: it must name a directory below the builder's (no `..`, not empty)")]
    BadWorkdir(String),
    #[error("the {scheme}:// URL {url} holds a password, which git and hg can only be given there on their command line (where every process list shows it); use an ssh key, or an https:// URL")]
    PasswordInUrl { scheme: String, url: String },
    #[error("the credentials in the URL {url} {why}")]
    BadCredentials { url: String, why: &'static str },
    #[error("the svn URL {url} holds a password, which svn can only be given on its command line (where every process list shows it); write the URL without it and store the password in the slave's svn auth cache (run `svn info URL` once as the slave's user), or use svn+ssh:// with a key")]
    SvnPassword { url: String },
    #[error("the bzr URL {url} holds a password, which brz can only be given on its command line (where every process list shows it); write the URL without it and keep the password in the slave's ~/.config/breezy/authentication.conf, or use bzr+ssh:// with a key")]
    BzrPassword { url: String },
    #[error("the darcs URL {url} holds a password, which darcs can only be given on its command line; write the URL without it and give the password to darcs on the slave (~/.netrc for http, an ssh key for ssh)")]
    DarcsPassword { url: String },
    #[error("refusing svn branch {0:?}: a branch is a path below the URL (no `..`, no leading `/`, no control characters)")]
    BadSvnBranch(String),
    #[error("refusing CVS module {0:?}: a module is a path in the repository (no `..`, no leading `/` or `-`, no control characters)")]
    BadCvsModule(String),
    #[error("the GNU Arch archive location {url} holds a password, which tla can only be given in the URL it keeps in its registration; write the URL without it (and use sftp:// with a key, or a readable http:// archive)")]
    ArchPassword { url: String },
    #[error("refusing Arch version {0:?}: write ARCHIVE/CATEGORY--BRANCH--VERSION (e.g. ann@example.org--2026/proj--main--1.0)")]
    BadArchVersion(String),
}

/// Where a mirror operation leads, once it succeeded or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Then {
    /// The next operation of [`MirrorPlan::prepare`].
    Next,
    /// Leave out this many operations, then go on.
    Skip(usize),
    /// The mirror is ready: check out from it.
    UseMirror,
    /// The mirror cannot be used: check out from the repository itself.
    Direct,
}

/// One step of bringing the mirror up to date, and where each outcome leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorOp {
    pub op: CheckoutOp,
    pub on_ok: Then,
    pub on_fail: Then,
}

/// Checking out through the slave's mirror (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorPlan {
    /// The mirror, relative to the builder's directory (or absolute).
    pub dir: String,
    /// Make the mirror hold the wanted revision; every path ends in
    /// [`Then::UseMirror`] or [`Then::Direct`].
    pub prepare: Vec<MirrorOp>,
    /// As [`CheckoutPlan::update`], from the mirror.
    pub update: Vec<CheckoutOp>,
    /// As [`CheckoutPlan::full`], from the mirror; when it fails, the direct `full`
    /// runs (and is retried).
    pub full: Vec<CheckoutOp>,
}

/// The operations of one checkout, in the groups the Source step runs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckoutPlan {
    /// Where the repository lives: the workdir, or the copy dir for copy/export.
    pub srcdir: String,
    /// Stat this path (`SRCDIR/.git` or `SRCDIR/.hg`) first: when it exists, try
    /// `update`; otherwise (or `None`, as in clobber) go straight to `full`.
    pub probe: Option<String>,
    /// Through the slave's mirror first; `None`: `mirror = false`, or the mirror
    /// cannot be reached from an absolute workdir.
    pub mirror: Option<MirrorPlan>,
    /// Bring an existing repository to the revision, keeping untracked files.
    pub update: Vec<CheckoutOp>,
    /// Remove `srcdir` and check out afresh: the group that `retry` repeats, and the
    /// fallback when `update` fails.
    pub full: Vec<CheckoutOp>,
    /// After either: copy/export into the workdir, then the GotRevision op.
    pub finish: Vec<CheckoutOp>,
    /// A try build's patch, applied in the workdir after `finish`: write it
    /// ([`CheckoutOp::WritePatch`]), then `git apply` / `hg import --no-commit`
    /// (`patch` for an hg export). Empty without a patch.
    pub patch: Vec<CheckoutOp>,
    /// `update` mode: the patch file a try build leaves in the workdir
    /// ([`PATCH_FILE`]). When it exists the tree is not pristine, so the caller
    /// starts with a full checkout (pass `updateable = false` to [`CheckoutRun`]).
    pub patched_marker: Option<String>,
    pub retry: Option<Retry>,
    /// `got_revision_DIR`: the property this source's revision always sets.
    pub revision_property: String,
    /// The source's VC: how the GotRevision op's output reads.
    pub kind: SourceKind,
    /// Environment every `Shell`/`GotRevision` operation runs with: the
    /// credentials of the URL ([`credential_env`]), never in an argv.
    #[serde(skip)]
    pub env: SecretEnv,
    /// GNU Arch: the directory (relative to the builder's directory, like the
    /// other paths) that every `Shell`/`GotRevision` operation runs with as its
    /// `HOME`, made absolute by whoever runs the plan: tla keeps its archive
    /// registrations in `~/.arch-params`, and the checkout registers the source's
    /// archive there, never in the slave user's own.
    pub home: Option<String>,
    /// CVS with a `:pserver:USER:PASSWORD@…` CVSROOT: the passfile content that
    /// gives cvs the password ([`cvs_passfile`]). Whoever runs the plan writes it
    /// to a private temporary file named by `CVS_PASSFILE` for the `Shell`
    /// operations (never an argv or a log) and removes it afterwards.
    #[serde(skip)]
    pub cvs_passfile: Option<SecretBytes>,
}

/// Bytes that hold a secret: `Debug` shows their length only.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} secret bytes>", self.0.len())
    }
}

/// Where a GNU Arch checkout's tla finds its `HOME` (see [`CheckoutPlan::home`]),
/// relative to the builder's directory.
pub const ARCH_HOME: &str = ".autobot-arch-home";

/// Environment variables that hold secrets: `Debug` shows their names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretEnv(pub BTreeMap<String, String>);

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// What to check out: a checkout step's settings and the build's source stamp.
#[derive(Debug, Clone, Copy)]
pub struct Checkout<'a> {
    pub source: &'a Source,
    pub mode: Mode,
    pub always_use_latest: bool,
    pub retry: Option<Retry>,
    /// Check out through the slave's mirror (the factory's `mirror`, default true).
    pub mirror: bool,
    /// The slave's mirrors directory, relative to the builder's directory or
    /// absolute: [`MIRRORS_DIR`] unless the engine knows better.
    pub mirrors: &'a str,
    /// The step's workdir, already interpolated: where the tree must end up.
    pub workdir: &'a str,
    /// The build's branch for this source; `None` or empty: the configured branch.
    pub branch: Option<&'a str>,
    /// The build's revision; `None` or empty: the branch's latest.
    pub revision: Option<&'a str>,
    /// A try build: apply a (non-empty) patch with this strip level (`-pN`)
    /// after the checkout ([`Checkout::with_patch`]).
    pub patch_level: Option<u32>,
    /// A pull request's build (git only): the forge's head ref
    /// (`refs/pull/N/head`, `refs/merge-requests/N/head`, see [`pull_ref`])
    /// fetched besides the branch, so the request's head revision is there
    /// ([`Checkout::with_pull_ref`]).
    pub pull_ref: Option<&'a str>,
}

/// The BuildSet property holding a pull request's number.
pub const PR_NUMBER_PROPERTY: &str = "pr_number";
/// The BuildSet property naming the forge of a pull request (`github`,
/// `gitea`, `gitlab`): which head ref it has.
pub const PR_FORGE_PROPERTY: &str = "pr_forge";

/// The forge's head ref of pull request `number`: `refs/pull/N/head` (GitHub,
/// Gitea, Forgejo) or `refs/merge-requests/N/head` (GitLab, `merge_requests`
/// true). `None` unless `number` is all ASCII digits (1 to 18 of them): the ref
/// is built from a validated number, never taken as sent.
pub fn pull_ref(number: &str, merge_requests: bool) -> Option<String> {
    let ok = !number.is_empty() && number.len() <= 18 && number.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| {
        if merge_requests {
            format!("refs/merge-requests/{number}/head")
        } else {
            format!("refs/pull/{number}/head")
        }
    })
}

/// Whether `r` is a ref [`pull_ref`] makes (checked again wherever one arrives).
pub fn is_pull_ref(r: &str) -> bool {
    let check = |rest: &str, mr: bool| {
        rest.strip_suffix("/head")
            .and_then(|n| pull_ref(n, mr))
            .is_some_and(|made| made == r)
    };
    match (
        r.strip_prefix("refs/pull/"),
        r.strip_prefix("refs/merge-requests/"),
    ) {
        (Some(rest), _) => check(rest, false),
        (_, Some(rest)) => check(rest, true),
        _ => false,
    }
}

impl<'a> Checkout<'a> {
    /// The same checkout with the slave's mirrors directory at `dir` (absolute, e.g.
    /// `BASEDIR/mirrors` from the slave's worker info), so that absolute workdirs can
    /// use the mirror too. An empty `dir` changes nothing.
    pub fn with_mirrors(mut self, dir: &'a str) -> Checkout<'a> {
        if !dir.is_empty() {
            self.mirrors = dir;
        }
        self
    }

    /// The same checkout followed by applying a try build's patch, stripping
    /// `level` leading path components (`git apply -pN`).
    pub fn with_patch(mut self, level: Option<u32>) -> Checkout<'a> {
        self.patch_level = level;
        self
    }

    /// The same checkout of a pull request: `r` (a [`pull_ref`]) is fetched and
    /// the build's revision (its head) checked out. `None` changes nothing.
    pub fn with_pull_ref(mut self, r: Option<&'a str>) -> Checkout<'a> {
        if r.is_some() {
            self.pull_ref = r;
        }
        self
    }

    /// The operations for this checkout.
    pub fn plan(&self) -> Result<CheckoutPlan, CheckoutError> {
        let workdir = checked_workdir(self.workdir)?;
        let pull_ref = match self.pull_ref {
            Some(r) if self.source.kind != SourceKind::Git => {
                return Err(CheckoutError::PullRef(format!(
                    "{r}: pull requests are built from git sources only"
                )))
            }
            Some(r) if !is_pull_ref(r) => {
                return Err(CheckoutError::PullRef(format!(
                    "{r:?} is not refs/pull/N/head or refs/merge-requests/N/head"
                )))
            }
            other => other,
        };
        let branch = match self.branch.filter(|b| !b.is_empty()) {
            Some(b) => b,
            None => self.source.branch.as_str(),
        };
        let svn_path;
        let branch = match self.source.kind {
            SourceKind::Svn => {
                svn_path = checked_svn_branch(&super::svn_branch_path(self.source, branch))?;
                svn_path.as_str()
            }
            SourceKind::Bzr | SourceKind::Darcs => {
                svn_path = checked_svn_branch(branch.trim_matches('/'))?;
                svn_path.as_str()
            }
            // The trunk, or a branch tag.
            SourceKind::Cvs if branch.is_empty() => "",
            SourceKind::Cvs => checked_name("branch", branch)?,
            SourceKind::Arch => {
                svn_path = checked_arch_version(&super::arch_version(self.source, branch))?;
                svn_path.as_str()
            }
            SourceKind::Git | SourceKind::Hg => checked_name("branch", branch)?,
        };
        // Checked even when alwaysUseLatest drops it: the build's revision is also
        // what `%(revision)s` gives the other steps.
        let revision = match self.revision.filter(|r| !r.is_empty()) {
            Some(r) => Some(checked_name("revision", r)?).filter(|_| !self.always_use_latest),
            None => None,
        };
        let (url, credentials) = split_credentials(&self.source.url)?;
        let mut svn_user = None;
        if self.source.kind == SourceKind::Svn {
            if let Some(c) = &credentials {
                if !c.password.is_empty() {
                    return Err(CheckoutError::SvnPassword {
                        url: redact_url(&self.source.url),
                    });
                }
                svn_user = Some(c.username.clone());
            }
        }
        let cvs_pass = match (&credentials, self.source.kind) {
            (Some(c), SourceKind::Cvs) if !c.password.is_empty() => {
                Some(SecretBytes(cvs_passfile(c)))
            }
            _ => None,
        };
        if self.source.kind == SourceKind::Cvs {
            let (_, module) = super::cvs_root_module(&url);
            let bad = module.starts_with('/')
                || module.starts_with('-')
                || module.chars().any(char::is_control)
                || module.split('/').any(|c| c == "..");
            if bad {
                return Err(CheckoutError::BadCvsModule(module.to_string()));
            }
        }
        if self.source.kind == SourceKind::Arch {
            if let Some(c) = &credentials {
                if !c.password.is_empty() {
                    return Err(CheckoutError::ArchPassword {
                        url: redact_url(&self.source.url),
                    });
                }
            }
        }
        let mut url = url;
        if matches!(
            self.source.kind,
            SourceKind::Bzr | SourceKind::Darcs | SourceKind::Arch
        ) {
            if let Some(c) = &credentials {
                if !c.password.is_empty() {
                    let url = redact_url(&self.source.url);
                    return Err(if self.source.kind == SourceKind::Bzr {
                        CheckoutError::BzrPassword { url }
                    } else {
                        CheckoutError::DarcsPassword { url }
                    });
                }
                // brz, darcs and tla take a user name in the URL itself.
                url = self.source.url.clone();
            }
        }
        let credentials =
            credentials.filter(|_| matches!(self.source.kind, SourceKind::Git | SourceKind::Hg));
        let svn_url = super::svn_join(&url, branch);
        let hg_source = match (&credentials, self.source.kind) {
            (Some(_), SourceKind::Hg) => Some(HG_SOURCE_ALIAS),
            _ => None,
        };
        let vc = Vc {
            kind: self.source.kind,
            url: hg_source.unwrap_or(&url),
            hg_config: hg_source.map(|_| format!("paths.{HG_SOURCE_ALIAS}=${HG_SOURCE_VAR}")),
            branch,
            revision,
            svn_url: &svn_url,
            svn_user: svn_user.as_deref(),
            export: false,
            pull_ref,
        };
        // CVS exports with `cvs export` (VC metadata is in every directory).
        let cvs_export = self.source.kind == SourceKind::Cvs && self.mode == Mode::Export;
        let vc = Vc {
            export: cvs_export,
            ..vc
        };
        let copying = matches!(self.mode, Mode::Copy | Mode::Export) && !cvs_export;
        let srcdir = if copying {
            copy_dir(&workdir)
        } else {
            workdir.clone()
        };
        let probe =
            (self.mode != Mode::Clobber && !cvs_export).then(|| join(&srcdir, vc.metadata_dir()));
        let clobber = self.mode == Mode::Clobber || cvs_export;
        let update = if clobber {
            Vec::new()
        } else {
            vc.update(&srcdir, vc.url, None)
        };
        // svn, bzr and darcs sources have no slave mirror (svn has no cheap
        // local copy of a repository; bzr and darcs fetch whole branches).
        let mirror = if self.mirror && matches!(self.source.kind, SourceKind::Git | SourceKind::Hg)
        {
            self.mirror_plan(&vc, &srcdir, clobber)
        } else {
            None
        };
        let mut finish = Vec::new();
        let arch_export = self.source.kind == SourceKind::Arch && self.mode == Mode::Export;
        if copying {
            finish.push(CheckoutOp::RmDir {
                dir: workdir.clone(),
            });
            if arch_export {
                // tla's own export of the tree's revision: its metadata is in
                // every directory (`.arch-ids`), and a copy would keep them.
                if let Some((parent, _)) = workdir.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
                    finish.push(CheckoutOp::MkDir {
                        dir: parent.to_string(),
                    });
                }
                finish.push(CheckoutOp::Shell {
                    argv: argv(&["tla", "export", &relative_to(&srcdir, &workdir)]),
                    workdir: srcdir.clone(),
                });
            } else {
                finish.push(CheckoutOp::CpDir {
                    from: srcdir.clone(),
                    to: workdir.clone(),
                });
            }
        }
        let revision_dir = if self.mode == Mode::Export && !cvs_export {
            if !arch_export {
                finish.push(CheckoutOp::RmDir {
                    dir: join(&workdir, vc.metadata_dir()),
                });
            }
            &srcdir
        } else {
            &workdir
        };
        finish.push(CheckoutOp::GotRevision {
            argv: vc.got_revision(),
            workdir: revision_dir.clone(),
        });
        let patch = match self.patch_level {
            Some(level) => {
                let path = join(&workdir, PATCH_FILE);
                let level = format!("-p{level}");
                let apply = match (self.source.kind, self.mode) {
                    (SourceKind::Git, _) => {
                        argv(&["git", "apply", "--verbose", &level, PATCH_FILE])
                    }
                    (SourceKind::Hg, mode) if mode != Mode::Export => argv(&[
                        "hg",
                        "--noninteractive",
                        "import",
                        "--no-commit",
                        &level,
                        "--",
                        PATCH_FILE,
                    ]),
                    // An exported hg tree, and the VC systems without an import
                    // command of their own: patch(1), as Buildbot applies a try
                    // job's patch.
                    _ => argv(&[
                        "patch",
                        &level,
                        "--forward",
                        "--force",
                        "--remove-empty-files",
                        "--input",
                        PATCH_FILE,
                    ]),
                };
                vec![
                    CheckoutOp::WritePatch { path },
                    CheckoutOp::Shell {
                        argv: apply,
                        workdir: workdir.clone(),
                    },
                ]
            }
            None => Vec::new(),
        };
        let patched_marker = (self.mode == Mode::Update).then(|| join(&workdir, PATCH_FILE));
        Ok(CheckoutPlan {
            kind: self.source.kind,
            patch,
            patched_marker,
            full: vc.full(&srcdir, vc.url, None),
            srcdir,
            probe,
            mirror,
            update,
            finish,
            retry: self.retry,
            revision_property: format!("got_revision_{}", source_dir(self.source)),
            env: SecretEnv(match &credentials {
                Some(c) => credential_env(self.source.kind, c),
                None => BTreeMap::new(),
            }),
            home: (self.source.kind == SourceKind::Arch).then(|| ARCH_HOME.to_string()),
            cvs_passfile: cvs_pass,
        })
    }

    fn mirror_plan(&self, vc: &Vc, srcdir: &str, clobber: bool) -> Option<MirrorPlan> {
        let name = mirror_name(self.source);
        let mirrors = self.mirrors.trim_end_matches('/');
        if mirrors.is_empty() {
            return None;
        }
        // The mirror as the workdir's commands see it.
        let from_srcdir = if mirrors.starts_with('/') {
            join(mirrors, &name)
        } else if srcdir.starts_with('/') {
            return None;
        } else {
            let depth = srcdir
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .count();
            format!("{}{}", "../".repeat(depth), join(mirrors, &name))
        };
        let lock = format!("{from_srcdir}.lock");
        Some(MirrorPlan {
            dir: join(mirrors, &name),
            prepare: vc.prepare_mirror(mirrors, &name),
            update: if clobber {
                Vec::new()
            } else {
                vc.update(srcdir, &from_srcdir, Some(&lock))
            },
            full: vc.full(srcdir, &from_srcdir, Some(&lock)),
        })
    }
}

/// The directory name of `source`'s mirror in the slave's mirrors directory:
/// `KIND-DIR-HASH`, DIR the checkout directory name (characters other than letters,
/// digits, `.`, `_` and `-` made `_`) and HASH 16 hex digits of the kind and URL
/// (FNV-1a, stable across versions) without its credentials, so one URL has one
/// mirror and two URLs with the same last part do not share one.
pub fn mirror_name(source: &Source) -> String {
    let dir = path_safe(&source_dir(source));
    let dir = dir.trim_start_matches(['.', '-']);
    let dir = if dir.is_empty() { "repo" } else { dir };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    // Without credentials: a new token is the same repository.
    let url = split_credentials(&source.url)
        .map(|(u, _)| u)
        .unwrap_or_else(|_| redact_url(&source.url));
    let key = format!("{}\0{}", source.kind.as_str(), url);
    for b in key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}-{dir}-{hash:016x}", source.kind.as_str())
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

/// `dir`'s parent (empty: the builder's directory; `/` for a top-level absolute
/// one) and its last component.
fn split_parent(dir: &str) -> (&str, &str) {
    match dir.rsplit_once('/') {
        Some((p, n)) => (if p.is_empty() { "/" } else { p }, n),
        None => ("", dir),
    }
}

/// Remove `dir`, make its parent, and run `words` (which create `dir`) there.
fn fresh_in_parent(dir: &str, parent: &str, words: Vec<String>) -> Vec<CheckoutOp> {
    let mut ops = vec![CheckoutOp::RmDir {
        dir: dir.to_string(),
    }];
    if !parent.is_empty() {
        ops.push(CheckoutOp::MkDir {
            dir: parent.to_string(),
        });
    }
    ops.push(CheckoutOp::Shell {
        argv: words,
        workdir: parent.to_string(),
    });
    ops
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

/// An svn branch is a path below the URL: never up out of it, never absolute.
fn checked_svn_branch(path: &str) -> Result<String, CheckoutError> {
    let bad = path.starts_with('/')
        || path.starts_with('-')
        || path.chars().any(char::is_control)
        || path.split('/').any(|c| c == ".." || c == ".");
    if bad {
        return Err(CheckoutError::BadSvnBranch(path.to_string()));
    }
    Ok(path.to_string())
}

/// `to` as a path seen from the directory `from` (both relative to the same
/// directory, or `to` absolute).
fn relative_to(from: &str, to: &str) -> String {
    if to.starts_with('/') {
        return to.to_string();
    }
    let depth = from
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .count();
    format!("{}{to}", "../".repeat(depth))
}

/// A fully qualified Arch version `ARCHIVE/CATEGORY--BRANCH--VERSION`: an
/// argument of tla, never an option (tla has no `--`).
fn checked_arch_version(version: &str) -> Result<String, CheckoutError> {
    let ok = match version.split_once('/') {
        Some((archive, name)) => {
            !archive.is_empty()
                && !archive.starts_with('-')
                && name.contains("--")
                && !name.starts_with('-')
                && !name.contains('/')
                && !version.chars().any(|c| c.is_control() || c.is_whitespace())
        }
        None => false,
    };
    if !ok {
        return Err(CheckoutError::BadArchVersion(version.to_string()));
    }
    Ok(version.to_string())
}

/// The version-control commands for one source.
struct Vc<'a> {
    kind: SourceKind,
    /// The repository as argv names it: the URL without credentials, or for hg
    /// with credentials the path alias [`HG_SOURCE_ALIAS`].
    url: &'a str,
    /// hg: `paths.ALIAS=$VAR`, the `--config` that defines the alias from the
    /// environment (hg expands variables in `[paths]`).
    hg_config: Option<String>,
    branch: &'a str,
    revision: Option<&'a str>,
    /// svn, bzr: the URL of the branch (the source's URL and the branch's subpath).
    svn_url: &'a str,
    /// svn: the user name of the URL (`--username`); svn URLs hold no password.
    svn_user: Option<&'a str>,
    /// CVS in export mode: `cvs export` instead of `cvs checkout`.
    export: bool,
    /// git: a pull request's head ref, fetched instead of the branch.
    pull_ref: Option<&'a str>,
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// `words`, run under a shared `flock` of `lock` when there is one.
fn locked_argv(lock: Option<&str>, words: Vec<String>) -> Vec<String> {
    match lock {
        Some(lock) => {
            let mut all = argv(&["flock", "-s", lock]);
            all.extend(words);
            all
        }
        None => words,
    }
}

/// [`locked_argv`] of string slices.
fn locked(lock: Option<&str>, words: &[&str]) -> Vec<String> {
    match lock {
        Some(lock) => {
            let mut all = vec!["flock", "-s", lock];
            all.extend_from_slice(words);
            argv(&all)
        }
        None => argv(words),
    }
}

impl Vc<'_> {
    /// `hg --noninteractive WORDS`, with the `--config` that defines the source's
    /// alias when `from` is the repository and its URL holds credentials.
    fn hg_remote(&self, from: &str, words: &[&str]) -> Vec<String> {
        let mut out = argv(&["hg", "--noninteractive"]);
        if let (Some(config), true) = (&self.hg_config, from == self.url) {
            out.push("--config".into());
            out.push(config.clone());
        }
        out.extend(argv(words));
        out
    }

    fn metadata_dir(&self) -> &'static str {
        match self.kind {
            SourceKind::Git => ".git",
            SourceKind::Hg => ".hg",
            SourceKind::Svn => ".svn",
            SourceKind::Bzr => ".bzr",
            SourceKind::Darcs => "_darcs",
            SourceKind::Cvs => "CVS",
            SourceKind::Arch => "{arch}",
        }
    }

    /// `cvs -f -d ROOT -q checkout|export [-P] [-r BRANCH] [-D DATE] -d NAME MODULE`
    /// in `dir`'s parent (cvs makes NAME itself); `-f`: not the slave user's
    /// ~/.cvsrc. An export needs a tag or date: the trunk's is `-r HEAD`.
    fn cvs_fresh(&self, dir: &str) -> Vec<CheckoutOp> {
        let (root, module) = super::cvs_root_module(self.url);
        let (parent, name) = split_parent(dir);
        let mut words = argv(&["cvs", "-f", "-d", root, "-q"]);
        words.push(if self.export { "export" } else { "checkout" }.into());
        if !self.export {
            words.push("-P".into());
        }
        if !self.branch.is_empty() {
            words.extend(argv(&["-r", self.branch]));
        }
        match self.revision {
            Some(date) => words.extend(argv(&["-D", date])),
            None if self.export && self.branch.is_empty() => words.extend(argv(&["-r", "HEAD"])),
            None => {}
        }
        words.extend(argv(&["-d", name, module]));
        fresh_in_parent(dir, parent, words)
    }

    /// `tla get REVISION NAME` in `dir`'s parent (tla makes NAME itself), after
    /// registering the archive in the plan's private HOME.
    fn tla_get(&self, dir: &str) -> Vec<CheckoutOp> {
        let (parent, name) = split_parent(dir);
        let mut ops = self.tla_register();
        ops.extend(fresh_in_parent(
            dir,
            parent,
            argv(&["tla", "get", self.tla_target(), name]),
        ));
        ops
    }

    /// What tla checks out: the build's revision, else the version's latest.
    fn tla_target(&self) -> &str {
        self.revision.unwrap_or(self.branch)
    }

    /// Make the private HOME and register the source's archive at its location
    /// there (`-f`: a moved location replaces the old).
    fn tla_register(&self) -> Vec<CheckoutOp> {
        let archive = self.branch.split('/').next().unwrap_or(self.branch);
        vec![
            CheckoutOp::MkDir {
                dir: ARCH_HOME.to_string(),
            },
            Self::shell(&["tla", "register-archive", "-f", archive, self.url], ""),
        ]
    }

    /// `brz WORDS [-r REV] -- URL [.]`: the branch's URL at the build's revision
    /// (a revno, `revid:…`, or any of brz's revision specs), its tip without one.
    fn brz(&self, words: &[&str], dot: bool) -> Vec<String> {
        let mut out = argv(&["brz"]);
        out.extend(argv(words));
        if let Some(rev) = self.revision {
            out.extend(argv(&["-r", rev]));
        }
        out.extend(argv(&["--", self.svn_url]));
        if dot {
            out.push(".".into());
        }
        out
    }

    /// `svn --non-interactive [--username USER] VERB -r REV -- URL@REV .`: the
    /// branch's URL pegged at the revision (HEAD without one), so an `@` in the
    /// URL is never read as a peg and a branch deleted later is still found.
    fn svn_at(&self, verb: &[&str]) -> Vec<String> {
        let rev = self.revision.unwrap_or("HEAD");
        let mut out = argv(&["svn", "--non-interactive"]);
        if let Some(user) = self.svn_user {
            out.extend(argv(&["--username", user]));
        }
        out.extend(argv(verb));
        out.extend(argv(&[
            "-r",
            rev,
            "--",
            &format!("{}@{rev}", self.svn_url),
            ".",
        ]));
        out
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

    /// Update the repository in `dir` from `from` (the URL, or the mirror under
    /// `lock`).
    fn update(&self, dir: &str, from: &str, lock: Option<&str>) -> Vec<CheckoutOp> {
        match self.kind {
            SourceKind::Git => vec![
                CheckoutOp::Shell {
                    argv: locked(
                        lock,
                        &[
                            "git",
                            "fetch",
                            "--",
                            from,
                            self.pull_ref.unwrap_or(self.branch),
                        ],
                    ),
                    workdir: dir.to_string(),
                },
                Self::git_checkout(self.revision.unwrap_or("FETCH_HEAD"), dir),
            ],
            SourceKind::Hg => vec![
                CheckoutOp::Shell {
                    argv: locked_argv(lock, self.hg_remote(from, &["pull", "--", from])),
                    workdir: dir.to_string(),
                },
                self.hg_update(dir),
            ],
            // `switch` to the same URL is an update; to another branch it moves
            // the working copy there, keeping local changes and build products.
            SourceKind::Svn => vec![CheckoutOp::Shell {
                argv: self.svn_at(&["switch", "--ignore-ancestry"]),
                workdir: dir.to_string(),
            }],
            // Local changes to versioned files go, build products stay; then the
            // branch becomes the source's at the revision (`--overwrite`: even
            // when the two diverged).
            SourceKind::Bzr => vec![
                Self::shell(&["brz", "revert", "--no-backup"], dir),
                CheckoutOp::Shell {
                    argv: self.brz(&["pull", "--overwrite"], false),
                    workdir: dir.to_string(),
                },
            ],
            // A pull only adds patches: a given (older) revision needs a fresh
            // clone `--to-hash` it, which an empty update group leads to.
            SourceKind::Darcs if self.revision.is_some() => Vec::new(),
            SourceKind::Darcs => vec![
                Self::shell(&["darcs", "revert", "--all", "--quiet"], dir),
                Self::shell(
                    &["darcs", "pull", "--all", "--quiet", "--", self.svn_url],
                    dir,
                ),
            ],
            // Local changes to versioned files go (`-C`), build products stay;
            // `-A` drops a sticky date or tag of an earlier build first.
            SourceKind::Cvs => {
                let mut words = argv(&["cvs", "-f", "-q", "update", "-d", "-P", "-C", "-A"]);
                if !self.branch.is_empty() {
                    words.extend(argv(&["-r", self.branch]));
                }
                if let Some(date) = self.revision {
                    words.extend(argv(&["-D", date]));
                }
                vec![CheckoutOp::Shell {
                    argv: words,
                    workdir: dir.to_string(),
                }]
            }
            // `tla update` only goes forward (to a given older revision it may
            // say "already up to date"): a given revision is a fresh `tla get`,
            // which an empty update group leads to.
            SourceKind::Arch if self.revision.is_some() => Vec::new(),
            SourceKind::Arch => {
                let mut ops = self.tla_register();
                ops.push(Self::shell(&["tla", "update", self.tla_target()], dir));
                ops
            }
        }
    }

    /// Clone `from` (the URL, or the mirror under `lock`) into a fresh `dir`.
    fn full(&self, dir: &str, from: &str, lock: Option<&str>) -> Vec<CheckoutOp> {
        match self.kind {
            SourceKind::Darcs => return self.darcs_clone(dir),
            SourceKind::Cvs => return self.cvs_fresh(dir),
            SourceKind::Arch => return self.tla_get(dir),
            _ => {}
        }
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
                ops.push(CheckoutOp::Shell {
                    argv: locked(
                        lock,
                        &[
                            "git",
                            "clone",
                            "--no-checkout",
                            "--branch",
                            self.branch,
                            "--",
                            from,
                            ".",
                        ],
                    ),
                    workdir: dir.to_string(),
                });
                if lock.is_some() {
                    // Look like a clone of the repository, not of the mirror.
                    ops.push(Self::shell(
                        &["git", "remote", "set-url", "--", "origin", self.url],
                        dir,
                    ));
                }
                if let Some(pull) = self.pull_ref {
                    // The request's head is on no branch: fetch the forge's ref.
                    ops.push(CheckoutOp::Shell {
                        argv: locked(lock, &["git", "fetch", "--", from, pull]),
                        workdir: dir.to_string(),
                    });
                    ops.push(Self::git_checkout(
                        self.revision.unwrap_or("FETCH_HEAD"),
                        dir,
                    ));
                    return ops;
                }
                ops.push(Self::git_checkout(self.revision.unwrap_or("HEAD"), dir));
            }
            SourceKind::Hg => {
                ops.push(CheckoutOp::Shell {
                    argv: locked_argv(
                        lock,
                        self.hg_remote(from, &["clone", "--noupdate", "--", from, "."]),
                    ),
                    workdir: dir.to_string(),
                });
                ops.push(self.hg_update(dir));
            }
            SourceKind::Svn => ops.push(CheckoutOp::Shell {
                argv: self.svn_at(&["checkout"]),
                workdir: dir.to_string(),
            }),
            SourceKind::Bzr => ops.push(CheckoutOp::Shell {
                argv: self.brz(&["branch", "--use-existing-dir"], true),
                workdir: dir.to_string(),
            }),
            SourceKind::Darcs | SourceKind::Cvs | SourceKind::Arch => {}
        }
        ops
    }

    /// `darcs clone` makes its target itself (it refuses an existing one): run it
    /// in `dir`'s parent (the builder's directory for a plain workdir), the
    /// revision a patch hash (`--to-hash`).
    fn darcs_clone(&self, dir: &str) -> Vec<CheckoutOp> {
        let (parent, name) = match dir.rsplit_once('/') {
            Some((p, n)) => (if p.is_empty() { "/" } else { p }, n),
            None => ("", dir),
        };
        let mut ops = vec![CheckoutOp::RmDir {
            dir: dir.to_string(),
        }];
        if !parent.is_empty() {
            ops.push(CheckoutOp::MkDir {
                dir: parent.to_string(),
            });
        }
        let mut words = argv(&["darcs", "clone", "--quiet"]);
        if let Some(rev) = self.revision {
            words.push(format!("--to-hash={rev}"));
        }
        words.extend(argv(&["--", self.svn_url, name]));
        ops.push(CheckoutOp::Shell {
            argv: words,
            workdir: parent.to_string(),
        });
        ops
    }

    /// Bring mirror `name` in `mirrors` to the revision (see the module docs). The
    /// commands run in the mirrors directory; `NAME.lock` beside the mirror is the
    /// lock file.
    fn prepare_mirror(&self, mirrors: &str, name: &str) -> Vec<MirrorOp> {
        use Then::*;
        let lock = format!("{name}.lock");
        let git_dir = format!("--git-dir={name}");
        // A plain look: is the revision there already? (git: on the branch, which
        // is what the workdir fetches from the mirror.)
        let has_revision = |rev: &str| -> Vec<String> {
            match self.kind {
                SourceKind::Git => {
                    let branch = match self.pull_ref {
                        Some(pull) => pull.to_string(),
                        None => format!("refs/heads/{}", self.branch),
                    };
                    argv(&["git", &git_dir, "merge-base", "--is-ancestor", rev, &branch])
                }
                SourceKind::Hg => argv(&[
                    "hg",
                    "--noninteractive",
                    "--repository",
                    name,
                    "log",
                    "--rev",
                    rev,
                    "--template",
                    "{node}\\n",
                ]),
                // Never planned: svn and bzr sources have no mirror.
                SourceKind::Svn
                | SourceKind::Bzr
                | SourceKind::Darcs
                | SourceKind::Cvs
                | SourceKind::Arch => Vec::new(),
            }
        };
        let fetch = match self.kind {
            // gc runs inside the locked fetch, never behind it while others read.
            SourceKind::Git => {
                let mut words = argv(&[
                    "git",
                    "-c",
                    "gc.autoDetach=false",
                    &git_dir,
                    "fetch",
                    "--prune",
                    "--",
                    self.url,
                    "+refs/heads/*:refs/heads/*",
                    "+refs/tags/*:refs/tags/*",
                ]);
                // A pull request's head ref, kept under the same name.
                if let Some(pull) = self.pull_ref {
                    words.push(format!("+{pull}:{pull}"));
                }
                words
            }
            SourceKind::Hg => {
                self.hg_remote(self.url, &["--repository", name, "pull", "--", self.url])
            }
            SourceKind::Svn
            | SourceKind::Bzr
            | SourceKind::Darcs
            | SourceKind::Cvs
            | SourceKind::Arch => Vec::new(),
        };
        let with_lock = |how: &[&str], words: &[String]| -> Vec<String> {
            let mut all = argv(&["flock"]);
            all.extend(argv(how));
            all.push(lock.clone());
            all.extend(words.iter().cloned());
            all
        };
        let op = |words: Vec<String>, on_ok: Then, on_fail: Then| MirrorOp {
            op: CheckoutOp::Shell {
                argv: words,
                workdir: mirrors.to_string(),
            },
            on_ok,
            on_fail,
        };
        let mut ops = vec![MirrorOp {
            op: CheckoutOp::MkDir {
                dir: mirrors.to_string(),
            },
            on_ok: Next,
            on_fail: Direct,
        }];
        if let Some(rev) = self.revision {
            ops.push(op(has_revision(rev), UseMirror, Next));
        }
        // Create the mirror when it is not there yet (under the lock: two builders
        // may try at once). `git init` of an existing repository is harmless; a
        // second `hg init` fails, and the pull after it tells whether it matters.
        match self.kind {
            SourceKind::Git => {
                ops.push(op(
                    argv(&["git", &git_dir, "rev-parse", "--git-dir"]),
                    Skip(1),
                    Next,
                ));
                ops.push(op(
                    with_lock(&[], &argv(&["git", "init", "--bare", "--quiet", name])),
                    Next,
                    Direct,
                ));
            }
            SourceKind::Hg => {
                ops.push(op(
                    argv(&["hg", "--noninteractive", "--repository", name, "root"]),
                    Skip(1),
                    Next,
                ));
                ops.push(op(
                    with_lock(&[], &argv(&["hg", "--noninteractive", "init", name])),
                    Next,
                    Next,
                ));
            }
            SourceKind::Svn
            | SourceKind::Bzr
            | SourceKind::Darcs
            | SourceKind::Cvs
            | SourceKind::Arch => return Vec::new(),
        }
        if let Some(rev) = self.revision {
            // Fetch unless another builder is fetching; then wait for it and look
            // again before fetching after it.
            ops.push(op(with_lock(&["-n"], &fetch), UseMirror, Next));
            ops.push(op(with_lock(&["-s"], &has_revision(rev)), UseMirror, Next));
        }
        ops.push(op(with_lock(&[], &fetch), UseMirror, Direct));
        ops
    }

    fn got_revision(&self) -> Vec<String> {
        match self.kind {
            SourceKind::Git => argv(&["git", "rev-parse", "HEAD"]),
            SourceKind::Hg => argv(&["hg", "log", "--rev", ".", "--template", "{node}"]),
            // The working copy's revision (`svnversion`'s number, the one `-r` took).
            SourceKind::Svn => argv(&[
                "svn",
                "--non-interactive",
                "info",
                "--show-item",
                "revision",
                "--no-newline",
                ".",
            ]),
            // The working tree's revno (what the poller's Changes carry).
            SourceKind::Bzr => argv(&["brz", "revno", "--tree", "."]),
            // `patch HASH` is its first line (see revision_properties).
            SourceKind::Darcs => argv(&["darcs", "log", "--last=1"]),
            // As Buildbot: the date checked out, the time of the checkout when
            // none was given (the tree is the repository as it was then).
            SourceKind::Cvs => match self.revision {
                Some(date) => argv(&["printf", "%s", date]),
                None => argv(&["date", "-u", "+%Y-%m-%d %H:%M:%S +0000"]),
            },
            SourceKind::Arch => argv(&["tla", "tree-revision"]),
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
    Mirror,
    Update,
    Full,
    Finish,
    Patch,
    Over,
}

/// Walks a plan as Buildbot's Source step does: the mirror first, update when the
/// tree is there, a full checkout when not or when the update fails, full checkouts
/// retried.
#[derive(Debug, Clone)]
pub struct CheckoutRun {
    plan: CheckoutPlan,
    phase: Phase,
    index: usize,
    retries_left: u32,
    /// The plan's probe path exists: start with `update`.
    updateable: bool,
    /// Update/full from the mirror (else from the repository).
    from_mirror: bool,
}

impl CheckoutRun {
    /// `updateable`: whether the plan's `probe` path exists on the slave.
    pub fn new(plan: CheckoutPlan, updateable: bool) -> CheckoutRun {
        let retries_left = plan.retry.map(|r| r.repeats).unwrap_or(0);
        let mirrored = plan.mirror.as_ref().is_some_and(|m| !m.prepare.is_empty());
        CheckoutRun {
            plan,
            phase: if mirrored { Phase::Mirror } else { Phase::Full },
            index: 0,
            retries_left,
            updateable,
            from_mirror: mirrored,
        }
    }

    /// The properties a successful GotRevision op sets from its trimmed stdout
    /// `got`: `got_revision_DIR` always, and `got_revision` when no earlier
    /// checkout of the build set it (`props` holds it empty until then), so with
    /// several sources `got_revision` is the first source's, as the commands run in
    /// the first source's directory.
    pub fn revision_properties(&self, got: &str, props: &Properties) -> Vec<(String, String)> {
        self.plan.revision_properties(got, props)
    }

    fn ops(&self, phase: Phase) -> &[CheckoutOp] {
        let mirror = self.plan.mirror.as_ref().filter(|_| self.from_mirror);
        match (phase, mirror) {
            (Phase::Update, Some(m)) => &m.update,
            (Phase::Full, Some(m)) => &m.full,
            (Phase::Update, None) => &self.plan.update,
            (Phase::Full, None) => &self.plan.full,
            (Phase::Finish, _) => &self.plan.finish,
            (Phase::Patch, _) => &self.plan.patch,
            (Phase::Mirror | Phase::Over, _) => &[],
        }
    }

    fn mirror_ops(&self) -> &[MirrorOp] {
        match &self.plan.mirror {
            Some(m) => &m.prepare,
            None => &[],
        }
    }

    /// The first operation.
    pub fn start(&mut self) -> Next {
        if self.phase == Phase::Mirror {
            return self.current(0, None);
        }
        self.checkout(None)
    }

    /// Update when the tree is there (and the mode updates), else a full checkout.
    fn checkout(&mut self, header: Option<String>) -> Next {
        let update =
            self.updateable && self.plan.probe.is_some() && !self.ops(Phase::Update).is_empty();
        self.enter(if update { Phase::Update } else { Phase::Full });
        self.current(0, header)
    }

    /// The next operation after the last one succeeded (`ok`) or failed.
    pub fn done(&mut self, ok: bool) -> Next {
        if self.phase == Phase::Mirror {
            let then = match self.mirror_ops().get(self.index) {
                Some(m) if ok => m.on_ok,
                Some(m) => m.on_fail,
                None => Then::Direct,
            };
            let skip = match then {
                Then::Next => 0,
                Then::Skip(n) => n,
                Then::UseMirror => return self.checkout(None),
                Then::Direct => return self.direct(),
            };
            self.index += 1 + skip;
            if self.index >= self.mirror_ops().len() {
                return self.direct();
            }
            return self.current(0, None);
        }
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
            Phase::Full if self.from_mirror => {
                self.from_mirror = false;
                self.enter(Phase::Full);
                self.current(
                    0,
                    Some(
                        "checkout from the slave's mirror failed, checking out from the repository"
                            .into(),
                    ),
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

    /// The mirror cannot be used: check out from the repository.
    fn direct(&mut self) -> Next {
        self.from_mirror = false;
        self.checkout(Some(
            "the slave's mirror cannot be used, checking out from the repository".into(),
        ))
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.index = 0;
    }

    /// The op at the cursor, moving past finished (or empty) groups.
    fn current(&mut self, delay_secs: u64, header: Option<String>) -> Next {
        loop {
            if self.phase == Phase::Mirror {
                if let Some(m) = self.mirror_ops().get(self.index) {
                    return Next::Run {
                        op: m.op.clone(),
                        delay_secs,
                        header,
                    };
                }
                return self.direct();
            }
            if let Some(op) = self.ops(self.phase).get(self.index) {
                return Next::Run {
                    op: op.clone(),
                    delay_secs,
                    header,
                };
            }
            match self.phase {
                Phase::Update | Phase::Full => self.enter(Phase::Finish),
                Phase::Finish => self.enter(Phase::Patch),
                Phase::Mirror | Phase::Patch | Phase::Over => {
                    self.phase = Phase::Over;
                    return Next::Done { ok: true };
                }
            }
        }
    }
}

impl CheckoutPlan {
    /// See [`CheckoutRun::revision_properties`].
    pub fn revision_properties(&self, got: &str, props: &Properties) -> Vec<(String, String)> {
        // darcs prints `patch HASH` and the patch's author, date and name.
        let got = match self.kind {
            SourceKind::Darcs => got
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("patch "))
                .unwrap_or(got)
                .trim(),
            _ => got,
        };
        let mut out = vec![(self.revision_property.clone(), got.to_string())];
        if props.get("got_revision").is_none_or(|v| v.is_empty()) {
            out.push(("got_revision".to_string(), got.to_string()));
        }
        out
    }
}

#[cfg(test)]
mod tests;
