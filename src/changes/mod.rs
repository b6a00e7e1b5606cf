//! Change sources: how the master learns that the source tree moved.
//!
//! A [`Change`] is one commit as Buildbot's schedulers see it: who made it, which
//! files it touched, its comments, revision, branch and time. The pollers here turn
//! new commits of a repository into Changes, oldest first:
//!
//! * [`GitPoller`] fetches with gix into a bare mirror, so the master needs no `git`
//!   binary for `https://` repositories;
//! * [`HgPoller`] drives the `hg` command line (argv, never a shell) on a local clone.
//! * [`SvnPoller`] asks the Subversion repository itself (`svn info`, `svn log
//!   --xml`), with no local copy; [`BzrPoller`] asks each Bazaar branch with
//!   `brz revno` and `brz log`, and [`DarcsPoller`] each Darcs repository with
//!   `darcs log --xml-output`.
//! * [`CvsPoller`] asks a CVS module for its file revisions since the last date
//!   seen (`cvs rlog`) and groups them into commits; [`ArchPoller`] lists each GNU
//!   Arch version's revisions (`tla revisions`) and reads their logs.
//!
//! All are blocking, keep no state of their own between polls and never touch the
//! database: the caller passes the last revision it stored per branch and persists the
//! [`PollResult`] (Changes first, then the new heads) before acting on it. That split is
//! what makes "a master that was down reports every missed commit exactly once" hold:
//! the heads only move once the Changes are safe.
//!
//! Whatever its source, a Change passes [`validate`] before it is stored
//! ([`ChangeBus::add`] checks every one): revisions and branches that could become
//! command-line options are refused, and every field is capped.
//!
//! The poller manager ([`pollers`]) runs one poller per configured repository
//! and feeds the [`ChangeBus`]; [`submit`] is the `sendchange` intake the daemon
//! hangs on the slave port. This module sits below the engine and the schedulers
//! and knows nothing of either.

mod archpoller;
pub mod bus;
mod bzrpoller;
mod cvspoller;
mod darcspoller;
mod gitpoller;
mod hgpoller;
pub mod maildir;
pub mod pollers;
pub mod submit;
mod svnpoller;
mod tool;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::sources::redact_url;

pub use archpoller::ArchPoller;
pub use bus::{ChangeBus, PollRequest};
pub use bzrpoller::BzrPoller;
pub use cvspoller::{parse_date as parse_cvs_date, CvsPoller};
pub use darcspoller::DarcsPoller;
pub use gitpoller::GitPoller;
pub use hgpoller::HgPoller;
pub use pollers::{poller_specs, PollerSpec};
pub use svnpoller::SvnPoller;

/// One commit, as schedulers, the blamelist and the JSON API see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The author, `Name <email>`: the blamelist is made of these.
    pub who: String,
    /// Paths the commit changed against its first parent (every file for a root
    /// commit); `files = REGEX` schedulers filter on them.
    pub files: Vec<String>,
    /// The full commit message.
    pub comments: String,
    /// The commit id (git sha1, hg node), what a build checks out.
    pub revision: String,
    /// The branch the poller watched when it saw the commit.
    pub branch: String,
    /// Unix seconds of the commit (the committer's time for git, the changeset date
    /// for hg).
    pub when: i64,
    /// The repository URL, without any credentials it contained.
    pub repository: String,
    /// The project's category, when the factory sets one.
    pub category: Option<String>,
    /// Web links to the revision (from the project's `revlink`).
    pub links: Vec<String>,
    /// The project (factory) the poller works for.
    pub project: String,
}

/// What one poll found; the caller stores `changes` before it moves its last-seen
/// revisions to `heads`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollResult {
    /// The head of every branch that could be polled. Branches in `failed` are absent:
    /// keep their previous last-seen revision.
    pub heads: BTreeMap<String, String>,
    /// New commits, per branch in the order the poller lists its branches, each
    /// branch's commits oldest first (parents before children).
    pub changes: Vec<Change>,
    /// Branches whose head is not a descendant of the last seen revision (history was
    /// rewritten); their Changes are the commits reachable from the new head only.
    pub forced: Vec<String>,
    /// Branches that could not be polled this time, with the reason; the others'
    /// results are still valid.
    pub failed: BTreeMap<String, PollError>,
}

/// Why a poll (or one branch of it) failed. Every variant carries the reason as text,
/// so the caller can log it and retry at the next interval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// The local mirror could not be created or opened.
    #[error("cannot use the mirror {path}: {reason} (deleting the directory makes the next poll rebuild it)")]
    Mirror { path: PathBuf, reason: String },
    /// The remote could not be reached or read (gone, network, authentication).
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    /// The branch does not exist in the repository.
    #[error("branch {branch:?} does not exist in {url}")]
    BranchMissing { url: String, branch: String },
    /// The mirror has the objects but reading the branch's history failed.
    #[error("cannot read the history of branch {branch:?} of {url}: {reason}")]
    History {
        url: String,
        branch: String,
        reason: String,
    },
    /// A helper program (`hg`) could not be started.
    #[error("cannot run {program}: {reason}")]
    Program { program: String, reason: String },
}

/// Where the bare mirror of `url` lives under a master directory:
/// `MASTERDIR/mirrors/<sanitized url>-<hash>`. Credentials in the URL never reach the
/// name, and the hash keeps two URLs that sanitize alike apart.
pub fn mirror_path(master_dir: &Path, url: &str) -> PathBuf {
    let clean = redact_url(url);
    let mut name: String = clean
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_start_matches("ssh://")
        .trim_start_matches("file://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name = name.trim_matches(|c| c == '_' || c == '.').to_string();
    if name.len() > 80 {
        let mut cut = 80;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    master_dir
        .join("mirrors")
        .join(format!("{name}-{:016x}", fnv1a(url.as_bytes())))
}

/// Fills `revlink`'s `%s` with a revision.
pub(crate) fn links_for(revlink: Option<&str>, revision: &str) -> Vec<String> {
    match revlink {
        Some(link) if !link.is_empty() => vec![link.replace("%s", revision)],
        _ => Vec::new(),
    }
}

/// An error and all its causes on one line, so a log shows the real reason.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A stable 64-bit FNV-1a hash (std's hasher may change between Rust versions, and
/// mirror names must not).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_credentials() {
        assert_eq!(
            redact_url("https://bob:s3cret@example.org/x.git"),
            "https://example.org/x.git"
        );
        assert_eq!(
            redact_url("https://example.org/a@b.git"),
            "https://example.org/a@b.git"
        );
        assert_eq!(redact_url("/srv/repo"), "/srv/repo");
    }

    #[test]
    fn mirror_path_is_sanitized_and_distinct() {
        let base = Path::new("/m");
        let a = mirror_path(base, "https://bob:pw@example.org/a/b.git");
        let b = mirror_path(base, "https://example.org/a_b.git");
        assert!(a.starts_with("/m/mirrors"));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("example.org_a_b.git-"), "{name}");
        assert!(!name.contains("pw"));
        assert_ne!(a, b);
    }

    #[test]
    fn links_fill_revision() {
        assert_eq!(
            links_for(Some("https://x/commit/%s"), "abc"),
            vec!["https://x/commit/abc".to_string()]
        );
        assert!(links_for(None, "abc").is_empty());
    }
}
