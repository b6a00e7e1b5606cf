//! The GNU Arch poller (Buildbot's Arch change source): lists each watched
//! version's revisions with `tla revisions -f VERSION` (one process when nothing
//! changed) and reads each new one's log with `tla cat-archive-log REVISION`, each
//! becoming a Change whose revision is the fully qualified revision
//! (`ARCHIVE/VERSION--patch-N`, what a checkout's `tla get` takes and
//! `got_revision` is).
//!
//! tla keeps archive registrations in `~/.arch-params`: the poller runs it with
//! `HOME` set to a directory of its own under the master directory and registers
//! the archive's location there, never in the master user's own. Every call is an
//! argv (no shell), killed after [`ArchPoller::timeout`]. The contract is the git
//! poller's: the caller passes the last seen revision per branch (version) and
//! persists the [`PollResult`]; a last seen revision the version no longer has
//! records the newest without Changes and reports the branch as `forced`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::tool::{self, one_line, RunError};
use super::{links_for, Change, PollError, PollResult};
use crate::sources::{redact_in, redact_url};

/// Polls the versions (branches) of one Arch archive.
///
/// Run `poll` on a blocking thread: it starts `tla` processes and waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchPoller {
    /// The archive's location, as the factory's `archiveLocation` gives it.
    pub url: String,
    /// Fully qualified versions (`ARCHIVE/CATEGORY--BRANCH--VERSION`).
    pub branches: Vec<String>,
    /// `https://…/%s`: where a revision can be seen on the web, for Change links.
    pub revlink: Option<String>,
    /// The project (factory) the Changes belong to.
    pub project: String,
    /// Category given to every Change.
    pub category: Option<String>,
    /// The `tla` program to run.
    pub tla: PathBuf,
    /// How long one `tla` command may run before it is killed.
    pub timeout: Duration,
    /// tla's `HOME` (its archive registrations), the poller's own.
    pub home: PathBuf,
}

impl ArchPoller {
    /// A poller for `branches` (fully qualified versions) of the archive at `url`,
    /// with tla's HOME at `home`, running `tla` from `PATH` with a ten-minute
    /// limit per command.
    pub fn new(url: impl Into<String>, branches: Vec<String>, home: PathBuf) -> ArchPoller {
        ArchPoller {
            url: url.into(),
            branches,
            revlink: None,
            project: String::new(),
            category: None,
            tla: PathBuf::from("tla"),
            timeout: Duration::from_secs(600),
            home,
        }
    }

    /// Reports what is new since `last_seen` (version → revision); same contract
    /// as [`GitPoller::poll`](super::GitPoller::poll).
    pub fn poll(&self, last_seen: &BTreeMap<String, String>) -> Result<PollResult, PollError> {
        let repo = redact_url(&self.url);
        let fetch = |reason: String| PollError::Fetch {
            url: repo.clone(),
            reason,
        };
        std::fs::create_dir_all(&self.home).map_err(|e| PollError::Mirror {
            path: self.home.clone(),
            reason: e.to_string(),
        })?;
        let mut registered = Vec::new();
        let mut result = PollResult::default();
        for branch in &self.branches {
            let archive = branch.split('/').next().unwrap_or(branch).to_string();
            if !registered.contains(&archive) {
                let args = vec![
                    "register-archive".to_string(),
                    "-f".to_string(),
                    archive.clone(),
                    self.url.clone(),
                ];
                if let Err(reason) = self.tla(&args) {
                    result.failed.insert(branch.clone(), fetch(reason));
                    continue;
                }
                registered.push(archive);
            }
            let revisions = match self.tla(&["revisions".into(), "-f".into(), branch.clone()]) {
                Ok(out) => out
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>(),
                Err(reason) => {
                    result.failed.insert(branch.clone(), fetch(reason));
                    continue;
                }
            };
            let Some(head) = revisions.last().cloned() else {
                continue;
            };
            match last_seen.get(branch).map(|s| s.trim()) {
                None => {}
                Some(seen) if seen == head => {}
                Some(seen) => match revisions.iter().position(|r| r == seen) {
                    Some(i) => {
                        for rev in &revisions[i + 1..] {
                            match self.tla(&["cat-archive-log".into(), rev.clone()]) {
                                Ok(log) => result.changes.push(self.change(branch, rev, &log)),
                                Err(reason) => {
                                    result.failed.insert(
                                        branch.clone(),
                                        PollError::History {
                                            url: repo.clone(),
                                            branch: branch.clone(),
                                            reason,
                                        },
                                    );
                                    break;
                                }
                            }
                        }
                        if result.failed.contains_key(branch) {
                            result.changes.retain(|c| &c.branch != branch);
                            continue;
                        }
                    }
                    None => result.forced.push(branch.clone()),
                },
            }
            result.heads.insert(branch.clone(), head);
        }
        if result.heads.is_empty() && !result.failed.is_empty() {
            if let Some((_, first)) = result.failed.pop_first() {
                return Err(first);
            }
        }
        Ok(result)
    }

    fn change(&self, branch: &str, revision: &str, log: &str) -> Change {
        let log = parse_log(log);
        let header = |name: &str| log.headers.get(name).cloned().unwrap_or_default();
        // `2026-12-07 05:25:15 GMT`
        let date = header("standard-date");
        let date = date.trim_end_matches("GMT").trim_end_matches("UTC").trim();
        let when = jiff::fmt::strtime::parse("%Y-%m-%d %H:%M:%S", date)
            .ok()
            .and_then(|t| t.to_datetime().ok())
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map_or(0, |z| z.timestamp().as_second());
        let mut files: Vec<String> = [
            "new-files",
            "modified-files",
            "removed-files",
            "renamed-files",
        ]
        .iter()
        .flat_map(|h| {
            header(h)
                .split_whitespace()
                .map(|f| f.trim_start_matches("./").to_string())
                .collect::<Vec<_>>()
        })
        .filter(|f| !f.starts_with("{arch}") && !f.contains(".arch-ids/"))
        .collect();
        files.sort();
        files.dedup();
        let mut comments = header("summary");
        if !log.body.trim().is_empty() {
            comments.push('\n');
            comments.push_str(log.body.trim_end());
        }
        Change {
            who: header("creator"),
            files,
            comments,
            links: links_for(self.revlink.as_deref(), revision),
            revision: revision.to_string(),
            branch: branch.to_string(),
            when,
            repository: redact_url(&self.url),
            category: self.category.clone(),
            project: self.project.clone(),
        }
    }

    /// `tla ARGS` with the poller's HOME; its stdout.
    fn tla(&self, args: &[String]) -> Result<String, String> {
        let env = [("HOME", self.home.as_os_str())];
        let (ok, out, err) =
            tool::run_env(&self.tla, args, &env, self.timeout).map_err(|e| match e {
                RunError::Spawn(reason) => format!("cannot run {}: {reason}", self.tla.display()),
                RunError::Timeout => format!(
                    "tla {} did not finish within {:.1} s and was killed",
                    args.first().map(String::as_str).unwrap_or(""),
                    self.timeout.as_secs_f64()
                ),
            })?;
        if !ok {
            let why = if err.trim().is_empty() { &out } else { &err };
            return Err(one_line(&redact_in(why, &self.url)));
        }
        Ok(out)
    }
}

/// A patch log: its headers (lower-case names, continuation lines joined) and body.
struct PatchLog {
    headers: BTreeMap<String, String>,
    body: String,
}

fn parse_log(log: &str) -> PatchLog {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    let mut lines = log.lines();
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(h) = last.as_ref().and_then(|k| headers.get_mut(k)) {
                h.push(' ');
                h.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            headers.insert(k.clone(), v.trim().to_string());
            last = Some(k);
        }
    }
    let body: Vec<&str> = lines.collect();
    PatchLog {
        headers,
        body: body.join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_patch_log() {
        let log = "Revision: proj--main--1.0--patch-1
Archive: ann@example.org--2026
Creator: Ann <ann@example.org>
Date: Mon Dec  7 05:25:15 UTC 2026
Standard-date: 2026-12-07 05:25:15 GMT
Modified-files: a.txt
New-files: .arch-ids/b.txt.id b.txt
    {arch}/proj/x/patch-log/patch-1 sub/c.txt
New-patches: ann@example.org--2026/proj--main--1.0--patch-1
Summary: second
Keywords: 

more words
";
        let p = ArchPoller::new("/srv/arch", vec![], PathBuf::from("/h"));
        let rev = "ann@example.org--2026/proj--main--1.0--patch-1";
        let c = p.change("ann@example.org--2026/proj--main--1.0", rev, log);
        assert_eq!(c.who, "Ann <ann@example.org>");
        assert_eq!(c.files, vec!["a.txt", "b.txt", "sub/c.txt"]);
        assert_eq!(c.comments, "second\nmore words");
        assert_eq!(c.when, 1_796_621_115);
        assert_eq!(c.revision, rev);
    }
}
