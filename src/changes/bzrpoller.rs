//! The Bazaar poller (Buildbot's BzrPoller), run with `brz`: asks each watched
//! branch for its tip (`brz revno URL`, one process when nothing changed) and
//! reads the mainline revisions since the last one seen with `brz log --verbose
//! --levels=1 --forward --log-format=long -r SEEN+1..TIP`, each becoming a Change
//! whose revision is the revno (what a checkout's `got_revision` reports).
//!
//! Every `brz` call is an argv (no shell), killed after [`BzrPoller::timeout`]. The
//! contract is the git poller's: the caller passes the last seen revno per branch
//! and persists the [`PollResult`]. A tip below the last seen revno means the branch
//! was replaced (`push --overwrite`): its tip is recorded without Changes and the
//! branch reported as `forced`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::tool::{self, one_line, RunError};
use super::{links_for, Change, PollError, PollResult};
use crate::sources::{redact_in, redact_url, svn_join};

/// Polls the branches of one Bazaar location.
///
/// Run `poll` on a blocking thread: it starts `brz` processes and waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BzrPoller {
    /// The branch (or base) URL, as the factory's `bzr = URL` gives it.
    pub url: String,
    /// Branch name → path below `url` (empty: `url` itself), in polling order.
    pub branches: Vec<(String, String)>,
    /// `https://…/%s`: where a revision can be seen on the web, for Change links.
    pub revlink: Option<String>,
    /// The project (factory) the Changes belong to.
    pub project: String,
    /// Category given to every Change.
    pub category: Option<String>,
    /// The `brz` program to run.
    pub brz: std::path::PathBuf,
    /// How long one `brz` command may run before it is killed.
    pub timeout: Duration,
}

/// One revision of `brz log --log-format=long --verbose`.
#[derive(Debug, Default, PartialEq, Eq)]
struct LogEntry {
    revno: String,
    committer: String,
    timestamp: String,
    message: String,
    files: Vec<String>,
}

impl BzrPoller {
    /// A poller for the branches (name, path below `url`) of `url`, running `brz`
    /// from `PATH` with a ten-minute limit per command.
    pub fn new(url: impl Into<String>, branches: Vec<(String, String)>) -> BzrPoller {
        BzrPoller {
            url: url.into(),
            branches,
            revlink: None,
            project: String::new(),
            category: None,
            brz: std::path::PathBuf::from("brz"),
            timeout: Duration::from_secs(600),
        }
    }

    /// Reports what is new since `last_seen` (branch → revno); same contract as
    /// [`GitPoller::poll`](super::GitPoller::poll).
    pub fn poll(&self, last_seen: &BTreeMap<String, String>) -> Result<PollResult, PollError> {
        let repo = redact_url(&self.url);
        let mut result = PollResult::default();
        for (branch, path) in &self.branches {
            let url = svn_join(&self.url, path);
            let (ok, out, err) = self.brz(&["revno".into(), "--".into(), url.clone()])?;
            let tip = out.trim().parse::<u64>().ok();
            let Some(tip) = tip.filter(|_| ok) else {
                let reason = one_line(&redact_in(&err, &self.url));
                let error = if err.contains("Not a branch") || err.contains("No such file") {
                    PollError::BranchMissing {
                        url: repo.clone(),
                        branch: branch.clone(),
                    }
                } else {
                    PollError::Fetch {
                        url: repo.clone(),
                        reason,
                    }
                };
                result.failed.insert(branch.clone(), error);
                continue;
            };
            let seen = last_seen
                .get(branch)
                .and_then(|s| s.trim().parse::<u64>().ok());
            match seen {
                None => {}
                Some(seen) if seen == tip => {}
                Some(seen) if seen > tip => result.forced.push(branch.clone()),
                Some(seen) => match self.log(branch, &url, seen + 1, tip) {
                    Ok(changes) => result.changes.extend(changes),
                    Err(reason) => {
                        result.failed.insert(
                            branch.clone(),
                            PollError::History {
                                url: repo.clone(),
                                branch: branch.clone(),
                                reason,
                            },
                        );
                        continue;
                    }
                },
            }
            result.heads.insert(branch.clone(), tip.to_string());
        }
        if result.heads.is_empty() && !result.failed.is_empty() {
            if let Some((_, first)) = result.failed.pop_first() {
                return Err(first);
            }
        }
        Ok(result)
    }

    /// The Changes of revnos `from..=to` of `url`, oldest first.
    fn log(&self, branch: &str, url: &str, from: u64, to: u64) -> Result<Vec<Change>, String> {
        let args: Vec<String> = [
            "log",
            "--verbose",
            "--levels=1",
            "--forward",
            "--log-format=long",
            "-r",
            &format!("{from}..{to}"),
            "--",
            url,
        ]
        .map(String::from)
        .to_vec();
        let (ok, out, err) = self.brz(&args).map_err(|e| e.to_string())?;
        if !ok {
            return Err(one_line(&redact_in(&err, &self.url)));
        }
        let repository = redact_url(&self.url);
        Ok(parse_log(&out)
            .into_iter()
            .map(|e| Change {
                who: e.committer,
                files: e.files,
                comments: e.message,
                links: links_for(self.revlink.as_deref(), &e.revno),
                revision: e.revno,
                branch: branch.to_string(),
                when: parse_time(&e.timestamp).unwrap_or(0),
                repository: repository.clone(),
                category: self.category.clone(),
                project: self.project.clone(),
            })
            .collect())
    }

    fn brz(&self, args: &[String]) -> Result<(bool, String, String), PollError> {
        tool::run(&self.brz, args, self.timeout).map_err(|e| match e {
            RunError::Spawn(reason) => PollError::Program {
                program: self.brz.display().to_string(),
                reason,
            },
            RunError::Timeout => PollError::Fetch {
                url: redact_url(&self.url),
                reason: format!(
                    "brz {} did not finish within {:.1} s and was killed",
                    args.first().map_or("", String::as_str),
                    self.timeout.as_secs_f64()
                ),
            },
        })
    }
}

/// `Mon 2026-12-07 03:07:55 +0000` → unix seconds.
fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.split_once(' ').map_or(s, |(_, rest)| rest);
    jiff::fmt::strtime::parse("%Y-%m-%d %H:%M:%S %z", s)
        .ok()?
        .to_timestamp()
        .ok()
        .map(|t| t.as_second())
}

/// The revisions of `brz log --log-format=long --verbose --levels=1`, in order.
fn parse_log(out: &str) -> Vec<LogEntry> {
    let mut entries = Vec::new();
    let mut entry: Option<LogEntry> = None;
    // The section a two-space-indented line belongs to.
    let mut section = "";
    for line in out.lines() {
        if line.chars().all(|c| c == '-') && line.len() >= 20 {
            entries.extend(entry.take());
            entry = Some(LogEntry::default());
            section = "";
            continue;
        }
        let Some(e) = entry.as_mut() else { continue };
        if let Some(body) = line.strip_prefix("  ") {
            match section {
                "message" => {
                    if !e.message.is_empty() {
                        e.message.push('\n');
                    }
                    e.message.push_str(body);
                }
                "files" => {
                    // `renamed:` lists `OLD => NEW`; a directory ends with `/`.
                    let name = body.rsplit_once(" => ").map_or(body, |(_, new)| new);
                    let name = name.trim_end_matches(['*', '@']);
                    if !name.ends_with('/') && !name.is_empty() {
                        e.files.push(name.to_string());
                    }
                }
                _ => {}
            }
            continue;
        }
        section = "";
        if let Some(v) = line.strip_prefix("revno: ") {
            e.revno = v.split_whitespace().next().unwrap_or("").to_string();
        } else if let Some(v) = line.strip_prefix("committer: ") {
            e.committer = v.to_string();
        } else if let Some(v) = line.strip_prefix("author: ") {
            e.committer = v.to_string();
        } else if let Some(v) = line.strip_prefix("timestamp: ") {
            e.timestamp = v.to_string();
        } else if line == "message:" {
            section = "message";
        } else if matches!(
            line,
            "added:" | "modified:" | "removed:" | "renamed:" | "kind changed:"
        ) {
            section = "files";
        }
    }
    entries.extend(entry);
    for e in &mut entries {
        e.files.sort();
        e.files.dedup();
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_brz_long_log() {
        let out = "------------------------------------------------------------
revno: 2
committer: Ann <ann@example.org>
branch nick: up
timestamp: Mon 2026-12-07 03:07:55 +0000
message:
  second
  more
added:
  dir/
  dir/new.c
modified:
  a
renamed:
  old => b
------------------------------------------------------------
revno: 3 [merge]
committer: Bob <b@x>
timestamp: Mon 2026-12-07 03:08:00 +0000
message:
  merge
";
        let log = parse_log(out);
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].revno, "2");
        assert_eq!(log[0].committer, "Ann <ann@example.org>");
        assert_eq!(log[0].message, "second\nmore");
        assert_eq!(log[0].files, vec!["a", "b", "dir/new.c"]);
        assert_eq!(parse_time(&log[0].timestamp), Some(1_796_612_875));
        assert_eq!(log[1].revno, "3");
        assert!(log[1].files.is_empty());
    }
}
