//! The CVS poller (Buildbot's CVS change sources): CVS has no changesets, only
//! file revisions, so each poll asks for the file revisions since the last one
//! seen (`cvs rlog -N -S -d ">=DATE" MODULE`, on the branch's tag or the trunk)
//! and groups them into Changes as cvs2svn does: the same author and log message
//! (and commit id, when cvs recorded one), each revision within 60 s of the
//! previous one of its group. A Change's revision is the CVS date of its newest
//! file revision (`YYYY-MM-DD HH:MM:SS +0000`), which a checkout's `-D` takes.
//!
//! The last seen date per branch is the caller's, as for the git poller: the first
//! poll records the newest revision's date (or, in an empty module, the poll's
//! time), and later polls report every newer file revision once. File revisions
//! of the current second are left for the next poll, so a commit landing in the
//! second a poll ran is never lost. Every `cvs` call is an argv (no shell, `-f`:
//! not the master user's ~/.cvsrc), killed after [`CvsPoller::timeout`]; a
//! `:pserver:` password reaches cvs through a passfile readable by the master's
//! user only (`CVS_PASSFILE`), never an argv or a log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::tool::{self, one_line, RunError};
use super::{links_for, Change, PollError, PollResult};
use crate::sources::{cvs_root_module, redact_in, redact_url, split_credentials};

/// How far apart (seconds) two file revisions of one commit may be.
pub const COMMIT_WINDOW: i64 = 60;

/// Polls the branches of one CVS module.
///
/// Run `poll` on a blocking thread: it starts `cvs` processes and waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CvsPoller {
    /// `CVSROOT MODULE`, as the factory's `cvs =` gives it (may hold a password).
    pub url: String,
    /// Branch tags to poll; `""` is the trunk.
    pub branches: Vec<String>,
    /// `https://…/%s`: where a revision can be seen on the web, for Change links.
    pub revlink: Option<String>,
    /// The project (factory) the Changes belong to.
    pub project: String,
    /// Category given to every Change.
    pub category: Option<String>,
    /// The `cvs` program to run.
    pub cvs: PathBuf,
    /// How long one `cvs` command may run before it is killed.
    pub timeout: Duration,
    /// A directory of the master's for the passfile of a `:pserver:` password.
    pub state_dir: PathBuf,
}

/// One file revision of `cvs rlog`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileRev {
    /// Relative to the module.
    file: String,
    rev: String,
    /// Unix seconds.
    when: i64,
    author: String,
    message: String,
    commitid: Option<String>,
}

impl CvsPoller {
    /// A poller for `branches` of `url` (`CVSROOT MODULE`), running `cvs` from
    /// `PATH` with a ten-minute limit per command.
    pub fn new(url: impl Into<String>, branches: Vec<String>, state_dir: PathBuf) -> CvsPoller {
        CvsPoller {
            url: url.into(),
            branches,
            revlink: None,
            project: String::new(),
            category: None,
            cvs: PathBuf::from("cvs"),
            timeout: Duration::from_secs(600),
            state_dir,
        }
    }

    /// Reports what is new since `last_seen` (branch → CVS date); same contract as
    /// [`GitPoller::poll`](super::GitPoller::poll).
    pub fn poll(&self, last_seen: &BTreeMap<String, String>) -> Result<PollResult, PollError> {
        self.poll_at(last_seen, now())
    }

    fn poll_at(
        &self,
        last_seen: &BTreeMap<String, String>,
        now: i64,
    ) -> Result<PollResult, PollError> {
        let repo = redact_url(&self.url);
        let mut result = PollResult::default();
        for branch in &self.branches {
            let seen = last_seen.get(branch).and_then(|s| parse_date(s));
            let revs = match self.rlog(branch, seen) {
                Ok(r) => r,
                Err(reason) => {
                    result.failed.insert(
                        branch.clone(),
                        PollError::Fetch {
                            url: repo.clone(),
                            reason,
                        },
                    );
                    continue;
                }
            };
            // Settled revisions only: the current second may still get more.
            let revs: Vec<FileRev> = revs
                .into_iter()
                .filter(|r| r.when < now && seen.is_none_or(|s| r.when > s))
                .filter(|r| on_branch(&r.rev, branch))
                .collect();
            let newest = revs.iter().map(|r| r.when).max();
            let head = match (seen, newest) {
                (None, Some(n)) => n,
                (None, None) => now - 1,
                (Some(s), n) => n.map_or(s, |n| n.max(s)),
            };
            if seen.is_some() {
                for group in group_commits(revs) {
                    result.changes.push(self.change(branch, group));
                }
            }
            result.heads.insert(branch.clone(), format_date(head));
        }
        if result.heads.is_empty() && !result.failed.is_empty() {
            if let Some((_, first)) = result.failed.pop_first() {
                return Err(first);
            }
        }
        Ok(result)
    }

    fn change(&self, branch: &str, group: Vec<FileRev>) -> Change {
        let when = group.iter().map(|r| r.when).max().unwrap_or(0);
        let mut files: Vec<String> = group.iter().map(|r| r.file.clone()).collect();
        files.sort();
        files.dedup();
        let first = &group[0];
        let revision = format_date(when);
        Change {
            who: first.author.clone(),
            files,
            comments: first.message.clone(),
            links: links_for(self.revlink.as_deref(), &revision),
            revision,
            branch: branch.to_string(),
            when,
            repository: redact_url(&self.url),
            category: self.category.clone(),
            project: self.project.clone(),
        }
    }

    /// `cvs -f -q -d ROOT rlog -N -S [-rBRANCH] [-d ">=DATE"] MODULE`, parsed.
    fn rlog(&self, branch: &str, since: Option<i64>) -> Result<Vec<FileRev>, String> {
        let (bare, credentials) = split_credentials(&self.url).map_err(|e| e.to_string())?;
        let (root, module) = cvs_root_module(&bare);
        let mut args: Vec<String> = ["-f", "-q", "-d", root, "rlog", "-N", "-S"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !branch.is_empty() {
            args.push(format!("-r{branch}"));
        }
        if let Some(s) = since {
            args.push("-d".into());
            args.push(format!(">={}", format_date(s)));
        }
        args.push(module.to_string());
        let passfile = match credentials.filter(|c| !c.password.is_empty()) {
            Some(c) => Some(
                PassFile::write(&self.state_dir, &crate::sources::cvs_passfile(&c)).map_err(
                    |e| {
                        format!(
                            "cannot write the CVS password file in {}: {e}",
                            self.state_dir.display()
                        )
                    },
                )?,
            ),
            None => None,
        };
        let env: Vec<(&str, &std::ffi::OsStr)> = passfile
            .as_ref()
            .map(|p| vec![("CVS_PASSFILE", p.0.as_os_str())])
            .unwrap_or_default();
        let (ok, out, err) =
            tool::run_env(&self.cvs, &args, &env, self.timeout).map_err(|e| match e {
                RunError::Spawn(reason) => format!("cannot run {}: {reason}", self.cvs.display()),
                RunError::Timeout => format!(
                    "cvs rlog did not finish within {:.1} s and was killed",
                    self.timeout.as_secs_f64()
                ),
            })?;
        if !ok {
            // cvs names the CVSROOT alone in its messages.
            let raw_root = cvs_root_module(&self.url).0;
            let err = redact_in(&redact_in(&err, &self.url), raw_root);
            return Err(one_line(&err));
        }
        Ok(parse_rlog(&out, module))
    }
}

/// The passfile of one `cvs` run, removed when dropped.
struct PassFile(PathBuf);

impl PassFile {
    fn write(dir: &std::path::Path, content: &[u8]) -> std::io::Result<PassFile> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("cvspass-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let file = PassFile(path);
        f.write_all(content)?;
        Ok(file)
    }
}

impl Drop for PassFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Unix seconds as a CVS date (`YYYY-MM-DD HH:MM:SS +0000`, UTC): a Change's
/// revision and a poller's last seen date.
pub fn format_date(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S +0000").to_string())
        .unwrap_or_default()
}

/// A CVS date as rlog prints it (`2026-12-07 05:25:02 +0000`, or cvs 1.11's
/// `2026/12/07 05:25:02`, UTC) in unix seconds.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim().replace('/', "-");
    let s = if s.len() == 19 {
        format!("{s} +0000")
    } else {
        s
    };
    jiff::fmt::strtime::parse("%Y-%m-%d %H:%M:%S %z", &s)
        .ok()?
        .to_timestamp()
        .ok()
        .map(|t| t.as_second())
}

/// Whether revision number `rev` is on `branch`: the trunk's have two numbers
/// (`1.4`), a branch's four or more (rlog `-rTAG` selects that branch's).
fn on_branch(rev: &str, branch: &str) -> bool {
    let parts = rev.split('.').count();
    if branch.is_empty() {
        parts == 2
    } else {
        parts >= 4
    }
}

/// The file revisions of `cvs rlog -N` output, file paths relative to `module`.
fn parse_rlog(out: &str, module: &str) -> Vec<FileRev> {
    const REV_SEP: &str = "----------------------------";
    const FILE_SEP: &str =
        "=============================================================================";
    let mut revs = Vec::new();
    let mut file = String::new();
    let mut lines = out.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rcs) = line.strip_prefix("RCS file: ") {
            file = module_path(rcs.trim(), module);
            continue;
        }
        if line != REV_SEP {
            continue;
        }
        // A revision: `revision N`, `date: …;  author: …;  …`, optional
        // `branches: …;`, then the message up to the next separator.
        let Some(rev) = lines
            .next()
            .and_then(|l| l.strip_prefix("revision "))
            .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
        else {
            continue;
        };
        let Some(info) = lines.next() else { break };
        let field = |name: &str| -> Option<String> {
            info.split(';')
                .map(str::trim)
                .find_map(|f| f.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let when = field("date:").and_then(|d| parse_date(&d));
        let author = field("author:").unwrap_or_default();
        let commitid = field("commitid:");
        if lines.peek().is_some_and(|l| l.starts_with("branches:")) {
            lines.next();
        }
        let mut message = Vec::new();
        while let Some(l) = lines.peek() {
            if *l == REV_SEP || *l == FILE_SEP {
                break;
            }
            message.push(*l);
            lines.next();
        }
        if let Some(when) = when {
            revs.push(FileRev {
                file: file.clone(),
                rev,
                when,
                author,
                message: message.join("\n").trim_end().to_string(),
                commitid,
            });
        }
    }
    revs
}

/// `/ROOT/MODULE/dir/Attic/f.c,v` → `dir/f.c`.
fn module_path(rcs: &str, module: &str) -> String {
    let rcs = rcs.strip_suffix(",v").unwrap_or(rcs);
    let module = module.trim_matches('/');
    let rel = if module.is_empty() || module == "." {
        rcs.trim_start_matches('/')
    } else {
        let marker = format!("/{module}/");
        match rcs.find(&marker) {
            Some(i) => &rcs[i + marker.len()..],
            None => rcs.rsplit('/').next().unwrap_or(rcs),
        }
    };
    let parts: Vec<&str> = rel.split('/').filter(|p| *p != "Attic").collect();
    parts.join("/")
}

/// File revisions grouped into commits (cvs2svn's rule): oldest first, a revision
/// joins the newest group with its author, message and commit id whose last
/// revision is at most [`COMMIT_WINDOW`] seconds older; groups in order of their
/// newest revision.
fn group_commits(mut revs: Vec<FileRev>) -> Vec<Vec<FileRev>> {
    revs.sort_by(|a, b| a.when.cmp(&b.when).then_with(|| a.file.cmp(&b.file)));
    let mut groups: Vec<Vec<FileRev>> = Vec::new();
    for r in revs {
        let found = groups.iter_mut().rev().find(|g| {
            let last = &g[g.len() - 1];
            last.author == r.author
                && last.message == r.message
                && (last.commitid.is_none() || r.commitid.is_none() || last.commitid == r.commitid)
                && r.when - last.when <= COMMIT_WINDOW
        });
        match found {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups.sort_by_key(|g| g.iter().map(|r| r.when).max().unwrap_or(0));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "
RCS file: /srv/cvs/proj/a.txt,v
head: 1.2
description:
----------------------------
revision 1.2
date: 2026-12-07 05:25:02 +0000;  author: ann;  state: Exp;  lines: +1 -1;  commitid: 100A;
second change
two lines
----------------------------
revision 1.1
date: 2026-12-07 05:25:00 +0000;  author: root;  state: Exp;  commitid: 1006;
branches:  1.1.1;
Initial revision
=============================================================================

RCS file: /srv/cvs/proj/sub/Attic/b.txt,v
----------------------------
revision 1.3
date: 2026/12/07 05:25:50;  author: ann;  state: dead;  lines: +0 -0;
second change
two lines
----------------------------
revision 1.2
date: 2026-12-07 05:27:00 +0000;  author: ann;  state: Exp;
second change
two lines
=============================================================================
";

    #[test]
    fn reads_rlog_and_groups_revisions_into_commits() {
        let revs = parse_rlog(LOG, "proj");
        assert_eq!(revs.len(), 4);
        assert_eq!(revs[0].file, "a.txt");
        assert_eq!(revs[0].message, "second change\ntwo lines");
        assert_eq!(revs[2].file, "sub/b.txt");
        assert_eq!(revs[2].when - revs[0].when, 48);
        let trunk: Vec<FileRev> = revs.into_iter().filter(|r| on_branch(&r.rev, "")).collect();
        let groups = group_commits(trunk);
        // 1.1 (root), then 1.2 and 1.3 within 60 s, then 1.2 of b.txt 70 s later.
        let sizes: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        assert_eq!(sizes, vec![1, 2, 1]);
        let p = CvsPoller::new("/srv/cvs proj", vec![String::new()], PathBuf::from("/x"));
        let c = p.change("", groups[1].clone());
        assert_eq!(c.files, vec!["a.txt", "sub/b.txt"]);
        assert_eq!(c.revision, "2026-12-07 05:25:50 +0000");
        assert_eq!(parse_date(&c.revision), Some(c.when));
        assert_eq!(c.who, "ann");
    }

    #[test]
    fn a_pserver_password_is_redacted() {
        let p = CvsPoller::new(
            ":pserver:anon:s3cret@cvs.example.org:/cvsroot proj",
            vec![String::new()],
            PathBuf::from("/x"),
        );
        let c = p.change(
            "",
            vec![FileRev {
                file: "a".into(),
                rev: "1.2".into(),
                when: 0,
                author: "a".into(),
                message: "m".into(),
                commitid: None,
            }],
        );
        assert_eq!(c.repository, ":pserver:anon@cvs.example.org:/cvsroot proj");
    }
}
