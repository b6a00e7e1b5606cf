//! Where a build's source comes from and how it gets to the slave: a
//! [`Source`] (a git or hg repository and branch), the checkout [`Mode`] and
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
    credential_env, hg_source, redact_in, redact_url, split_credentials, UrlCredentials,
};

/// Version-control system of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Git,
    Hg,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Git => "git",
            SourceKind::Hg => "hg",
        }
    }
}

/// One repository a factory checks out: `URL[#branch]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub kind: SourceKind,
    /// The URL; `./` and `../` paths are already made absolute against the master dir.
    pub url: String,
    /// The branch (`master` for git, `default` for hg when not given).
    pub branch: String,
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
    let url = url.trim_end_matches(['/', '\\']);
    let last = url.rsplit(['/', '\\', ':']).next().unwrap_or(url);
    let last = match source.kind {
        SourceKind::Git => last.strip_suffix(".git").unwrap_or(last),
        SourceKind::Hg => last,
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
