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

use super::interpolate::Properties;
use super::{source_dir, StepKind};
use crate::config::{Mode, Retry, Source, SourceKind};

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
    #[error("the {scheme}:// URL {url} holds a password, which git and hg can only be given there on their command line (where every process list shows it); use an ssh key, or an https:// URL")]
    PasswordInUrl { scheme: String, url: String },
    #[error("the credentials in the URL {url} {why}")]
    BadCredentials { url: String, why: &'static str },
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
    pub retry: Option<Retry>,
    /// `got_revision_DIR`: the property this source's revision always sets.
    pub revision_property: String,
    /// Environment every `Shell`/`GotRevision` operation runs with: the
    /// credentials of the URL ([`credential_env`]), never in an argv.
    #[serde(skip)]
    pub env: SecretEnv,
}

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
                mirror,
            } => Ok(Checkout {
                source,
                mode: *mode,
                always_use_latest: *always_use_latest,
                retry: *retry,
                mirror: *mirror,
                mirrors: MIRRORS_DIR,
                workdir,
                branch,
                revision,
            }),
            _ => Err(CheckoutError::NotACheckout),
        }
    }

    /// The same checkout with the slave's mirrors directory at `dir` (absolute, e.g.
    /// `BASEDIR/mirrors` from the slave's worker info), so that absolute workdirs can
    /// use the mirror too. An empty `dir` changes nothing.
    pub fn with_mirrors(mut self, dir: &'a str) -> Checkout<'a> {
        if !dir.is_empty() {
            self.mirrors = dir;
        }
        self
    }

    /// The operations for this checkout.
    pub fn plan(&self) -> Result<CheckoutPlan, CheckoutError> {
        let workdir = checked_workdir(self.workdir)?;
        let branch = match self.branch.filter(|b| !b.is_empty()) {
            Some(b) => b,
            None => self.source.branch.as_str(),
        };
        let branch = checked_name("branch", branch)?;
        // Checked even when alwaysUseLatest drops it: the build's revision is also
        // what `%(revision)s` gives the other steps.
        let revision = match self.revision.filter(|r| !r.is_empty()) {
            Some(r) => Some(checked_name("revision", r)?).filter(|_| !self.always_use_latest),
            None => None,
        };
        let (url, credentials) = split_credentials(&self.source.url)?;
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
        };
        let copying = matches!(self.mode, Mode::Copy | Mode::Export);
        let srcdir = if copying {
            copy_dir(&workdir)
        } else {
            workdir.clone()
        };
        let probe = (self.mode != Mode::Clobber).then(|| join(&srcdir, vc.metadata_dir()));
        let clobber = self.mode == Mode::Clobber;
        let update = if clobber {
            Vec::new()
        } else {
            vc.update(&srcdir, vc.url, None)
        };
        let mirror = if self.mirror {
            self.mirror_plan(&vc, &srcdir, clobber)
        } else {
            None
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
    let dir = super::path_safe(&source_dir(source));
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

/// The hg path alias that names a repository whose URL holds credentials: argv
/// says `hg --config paths.autobot-source=$AUTOBOT_HG_SOURCE pull -- autobot-source`
/// and the URL is in the environment, where hg finds it.
pub const HG_SOURCE_ALIAS: &str = "autobot-source";

/// The environment variable holding an hg URL with credentials.
pub const HG_SOURCE_VAR: &str = "AUTOBOT_HG_SOURCE";

/// The environment variables holding the user name and password the git
/// credential helper of [`credential_env`] answers with.
pub const GIT_USERNAME_VAR: &str = "AUTOBOT_GIT_USERNAME";
pub const GIT_PASSWORD_VAR: &str = "AUTOBOT_GIT_PASSWORD";

/// The user name and password of an `http(s)://USER:PASSWORD@HOST/…` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlCredentials {
    /// Percent-decoded, as git and hg would read it.
    pub username: String,
    pub password: String,
    /// The URL with the credentials still in (hg's alias takes it).
    pub url: String,
    /// `scheme://host[:port]`: the only place git offers them to.
    pub origin: String,
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlCredentials")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// `url` with any `user:password@` part removed, fit for logs, Changes and pages
/// (every URL the master or a slave shows or stores goes through this).
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// `text` with `url` (which may hold a password) replaced by its redacted form.
pub fn redact_in(text: &str, url: &str) -> String {
    let clean = redact_url(url);
    if clean == url {
        text.to_string()
    } else {
        text.replace(url, &clean)
    }
}

/// Splits the credentials off a repository URL: the URL git and hg see on their
/// command line (and store in the checkout's `.git/config` or `.hg/hgrc`), and
/// the credentials, handed over in the environment ([`credential_env`]). Only
/// `http://` and `https://` URLs take credentials this way; a user name alone in
/// an `ssh://` URL stays (it is not a secret, and ssh needs it), a password there
/// is refused.
pub fn split_credentials(url: &str) -> Result<(String, Option<UrlCredentials>), CheckoutError> {
    let Some(scheme_end) = url.find("://") else {
        return Ok((url.to_string(), None));
    };
    let scheme = url[..scheme_end].to_ascii_lowercase();
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Ok((url.to_string(), None));
    };
    let userinfo = &rest[..at];
    let hostport = &rest[at + 1..authority_end];
    if scheme != "http" && scheme != "https" {
        if userinfo.contains(':') {
            return Err(CheckoutError::PasswordInUrl {
                scheme,
                url: redact_url(url),
            });
        }
        return Ok((url.to_string(), None));
    }
    let bad = |why| CheckoutError::BadCredentials {
        url: redact_url(url),
        why,
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let username =
        percent_decode(user).ok_or_else(|| bad("are not valid percent-encoded UTF-8"))?;
    let password =
        percent_decode(password).ok_or_else(|| bad("are not valid percent-encoded UTF-8"))?;
    if username
        .chars()
        .chain(password.chars())
        .any(char::is_control)
    {
        return Err(bad("hold control characters"));
    }
    let stripped = format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]);
    Ok((
        stripped,
        Some(UrlCredentials {
            username,
            password,
            url: url.to_string(),
            origin: format!("{scheme}://{hostport}"),
        }),
    ))
}

/// `%XX` sequences decoded; `None` when one is malformed or the result is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The environment that hands `credentials` to the VC tool without any argv
/// holding them:
/// * git: a credential helper given in `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/
///   `GIT_CONFIG_VALUE_n` (git 2.31 or later) for the URL's origin only, after an
///   empty `credential.helper` that drops the helpers of the slave's own git
///   configuration (so none stores the password); the helper is a fixed shell
///   function that prints `$AUTOBOT_GIT_USERNAME` and `$AUTOBOT_GIT_PASSWORD`,
///   so the values are never shell text. `GIT_TERMINAL_PROMPT=0`: a refused
///   password fails the checkout instead of waiting for a terminal.
/// * hg: the whole URL in `AUTOBOT_HG_SOURCE`, which the argv's
///   `--config paths.autobot-source=$AUTOBOT_HG_SOURCE` names (hg expands
///   variables in `[paths]`; hg prints it with the password as `***`).
pub fn credential_env(kind: SourceKind, credentials: &UrlCredentials) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match kind {
        SourceKind::Git => {
            let helper = format!(
                "!f() {{ if [ \"$1\" = get ]; then printf 'username=%s\\npassword=%s\\n' \"${GIT_USERNAME_VAR}\" \"${GIT_PASSWORD_VAR}\"; fi; }}; f"
            );
            for (k, v) in [
                ("GIT_CONFIG_COUNT", "2".to_string()),
                ("GIT_CONFIG_KEY_0", "credential.helper".to_string()),
                ("GIT_CONFIG_VALUE_0", String::new()),
                (
                    "GIT_CONFIG_KEY_1",
                    format!("credential.{}.helper", credentials.origin),
                ),
                ("GIT_CONFIG_VALUE_1", helper),
                ("GIT_TERMINAL_PROMPT", "0".to_string()),
                (GIT_USERNAME_VAR, credentials.username.clone()),
                (GIT_PASSWORD_VAR, credentials.password.clone()),
            ] {
                env.insert(k.to_string(), v);
            }
        }
        SourceKind::Hg => {
            env.insert(HG_SOURCE_VAR.to_string(), credentials.url.clone());
        }
    }
    env
}

/// For an hg command that contacts `url`: the global options to put first, the
/// word that names the repository, and the environment to run with, so that
/// credentials in the URL stay out of the argv ([`credential_env`]). A URL
/// without credentials (or one [`split_credentials`] refuses) is used as it is.
pub fn hg_source(url: &str) -> (Vec<String>, String, BTreeMap<String, String>) {
    match split_credentials(url) {
        Ok((_, Some(c))) => (
            vec![
                "--config".to_string(),
                format!("paths.{HG_SOURCE_ALIAS}=${HG_SOURCE_VAR}"),
            ],
            HG_SOURCE_ALIAS.to_string(),
            credential_env(SourceKind::Hg, &c),
        ),
        _ => (Vec::new(), url.to_string(), BTreeMap::new()),
    }
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

    /// Update the repository in `dir` from `from` (the URL, or the mirror under
    /// `lock`).
    fn update(&self, dir: &str, from: &str, lock: Option<&str>) -> Vec<CheckoutOp> {
        match self.kind {
            SourceKind::Git => vec![
                CheckoutOp::Shell {
                    argv: locked(lock, &["git", "fetch", "--", from, self.branch]),
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
        }
    }

    /// Clone `from` (the URL, or the mirror under `lock`) into a fresh `dir`.
    fn full(&self, dir: &str, from: &str, lock: Option<&str>) -> Vec<CheckoutOp> {
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
        }
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
                    let branch = format!("refs/heads/{}", self.branch);
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
            }
        };
        let fetch = match self.kind {
            // gc runs inside the locked fetch, never behind it while others read.
            SourceKind::Git => argv(&[
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
            ]),
            SourceKind::Hg => {
                self.hg_remote(self.url, &["--repository", name, "pull", "--", self.url])
            }
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
                Phase::Mirror | Phase::Finish | Phase::Over => {
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
        let mut out = vec![(self.revision_property.clone(), got.to_string())];
        if props.get("got_revision").is_none_or(|v| v.is_empty()) {
            out.push(("got_revision".to_string(), got.to_string()));
        }
        out
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
            mirror: false,
            mirrors: MIRRORS_DIR,
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
            mirror: true,
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

    /// Executes ops in `base` (a builder's directory) the way a slave does (`cpdir`
    /// as buildbot-worker's `cp -R -P -p`); returns got_revision.
    struct LocalSlave {
        base: PathBuf,
        got_revision: Option<String>,
        /// The ops of the last checkout with their outcomes.
        outcomes: Vec<(CheckoutOp, bool)>,
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
            outcomes: Vec::new(),
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
        let mut builders: Vec<LocalSlave> =
            (0..4).map(|i| builder(&one, &format!("b{i}"))).collect();
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
}
