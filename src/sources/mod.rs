//! Where a build's source comes from and how it gets to the slave: a
//! [`Source`] (a git, hg, svn, bzr, darcs or CVS repository or GNU Arch archive,
//! and a branch), the checkout [`Mode`] and
//! [`Retry`] of Buildbot's Source steps, the checkout plan ([`checkout`]) that
//! brings a source into a workdir with plain worker-protocol operations, and the
//! handling of credentials in repository URLs ([`credentials`], with
//! [`redact_url`], the one redaction every part of autobot uses).
//!
//! A leaf: `config` parses sources into these types, `factory` puts them into
//! checkout steps, the engine runs the plans on stock and autobot slaves, the
//! slave's native `git`/`hg` commands run the same plans, and the Change pollers
//! and the database redact URLs with it. It imports nothing of the crate.

pub mod checkout;
pub mod credentials;

use serde::Serialize;

pub use credentials::{
    credential_env, cvs_passfile, cvs_scramble, hg_source, redact_in, redact_url,
    split_credentials, UrlCredentials,
};

/// Version-control system of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Git,
    Hg,
    /// Subversion: the URL is a repository path; the branch, when given, a
    /// subpath of it (Buildbot's `baseURL` + `defaultBranch`).
    Svn,
    /// Bazaar (run with `brz`): as svn, the URL is a branch, or with `#PATH` the
    /// base of branches that live below it (Buildbot's `baseURL`).
    Bzr,
    /// Darcs: a repository is a branch; as for bzr, `#PATH` makes the URL a base.
    Darcs,
    /// CVS: the URL is `CVSROOT MODULE` (one space: see [`cvs_root_module`]); the
    /// branch a CVS branch tag, empty for the trunk. A revision is a CVS date.
    Cvs,
    /// GNU Arch (run with `tla`): the URL is the archive's location; the branch
    /// the fully qualified version `ARCHIVE/CATEGORY--BRANCH--VERSION` (see
    /// [`arch_version`]). A revision is a fully qualified revision
    /// (`ARCHIVE/VERSION--patch-N`).
    Arch,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Git => "git",
            SourceKind::Hg => "hg",
            SourceKind::Svn => "svn",
            SourceKind::Bzr => "bzr",
            SourceKind::Darcs => "darcs",
            SourceKind::Cvs => "cvs",
            SourceKind::Arch => "arch",
        }
    }

    /// The branch a source of this kind has when its URL names none: `master`
    /// for git, `default` for hg, none for svn (the URL is what is checked out).
    pub fn default_branch(self) -> &'static str {
        match self {
            SourceKind::Git => "master",
            SourceKind::Hg => "default",
            SourceKind::Svn
            | SourceKind::Bzr
            | SourceKind::Darcs
            | SourceKind::Cvs
            | SourceKind::Arch => "",
        }
    }
}

/// One repository a factory checks out: `URL[#branch]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub kind: SourceKind,
    /// The URL; `./` and `../` paths are already made absolute against the master dir.
    /// CVS: `CVSROOT MODULE`; GNU Arch: the archive's location (`archiveLocation`).
    pub url: String,
    /// The branch (`master` for git, `default` for hg when not given; for svn and
    /// bzr a subpath of the URL, empty when the URL itself is checked out).
    pub branch: String,
    /// svn only (`svnBranchPrefix`): branches other than [`Source::branch`] live
    /// at `URL/PREFIX/NAME` (e.g. `branches`), so Changes and `branches =` name
    /// them by NAME alone. `None`: a branch is a subpath of the URL as it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_prefix: Option<String>,
}

/// Where branch `branch` of svn source `source` lives, relative to its URL: the
/// source's own branch as written, another through `svnBranchPrefix` when there is
/// one; empty for the URL itself.
pub fn svn_branch_path(source: &Source, branch: &str) -> String {
    let branch = branch.trim_matches('/');
    match &source.branch_prefix {
        Some(prefix) if !branch.is_empty() && branch != source.branch.trim_matches('/') => {
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                branch.to_string()
            } else {
                format!("{prefix}/{branch}")
            }
        }
        _ => branch.to_string(),
    }
}

/// `url` and the subpath `path` joined with one `/` (the URL alone when `path` is
/// empty): the svn or bzr URL a branch is checked out and polled from.
pub fn svn_join(url: &str, path: &str) -> String {
    let path = path.trim_matches('/');
    if path.is_empty() {
        url.to_string()
    } else {
        format!("{}/{path}", url.trim_end_matches('/'))
    }
}

/// A CVS source's URL `CVSROOT MODULE` split into the CVSROOT and the module
/// (the module alone is never empty: a URL without a space is all CVSROOT,
/// module `.`).
pub fn cvs_root_module(url: &str) -> (&str, &str) {
    match url.trim().rsplit_once(' ') {
        Some((root, module)) => (root.trim_end(), module),
        None => (url.trim(), "."),
    }
}

/// The fully qualified Arch version that branch `branch` of arch source `source`
/// names: the source's own when empty, `branch` itself when it names its archive
/// (`ARCHIVE/VERSION`), else `branch` in the source's archive.
pub fn arch_version(source: &Source, branch: &str) -> String {
    let branch = branch.trim();
    if branch.is_empty() {
        return source.branch.clone();
    }
    if branch.contains('/') {
        return branch.to_string();
    }
    match source.branch.split_once('/') {
        Some((archive, _)) => format!("{archive}/{branch}"),
        None => branch.to_string(),
    }
}

/// How a checkout treats the tree left by the previous build (Buildbot's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Update the existing tree in place.
    #[default]
    Update,
    /// Keep a pristine tree, update it, and copy it for the build.
    Copy,
    /// Remove the tree and check out afresh.
    Clobber,
    /// Like clobber, without version-control metadata.
    Export,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Update => "update",
            Mode::Copy => "copy",
            Mode::Clobber => "clobber",
            Mode::Export => "export",
        }
    }
}

/// `retry = DELAY REPEATS`: try a failed checkout again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Seconds between tries.
    pub delay: u64,
    /// How many more tries.
    pub repeats: u32,
}

/// The directory a source is checked out into: the URL's last part, without `.git`
/// for git (autobot's `dirname`).
pub fn source_dir(source: &Source) -> String {
    // Never named after credentials (`https://bot:TOKEN@host/`).
    let url = redact_url(&source.url);
    match source.kind {
        // The module's last part (`cvs checkout -d` names the tree after it).
        SourceKind::Cvs => {
            let (_, module) = cvs_root_module(&url);
            let module = module.trim_end_matches('/');
            return module.rsplit('/').next().unwrap_or(module).to_string();
        }
        // The version's category (`proj` of `ARCHIVE/proj--main--1.0`).
        SourceKind::Arch => {
            let version = source.branch.rsplit('/').next().unwrap_or(&source.branch);
            let category = version.split("--").next().unwrap_or(version);
            if !category.is_empty() {
                return category.to_string();
            }
        }
        _ => {}
    }
    let url = url.trim_end_matches(['/', '\\']);
    let last = url.rsplit(['/', '\\', ':']).next().unwrap_or(url);
    let last = match source.kind {
        SourceKind::Git => last.strip_suffix(".git").unwrap_or(last),
        _ => last,
    };
    last.to_string()
}

/// `name` with every character but `[A-Za-z0-9._-]` made `_`: a file name that
/// names nothing else (log files on the master, mirrors on a slave).
pub fn path_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
