//! The Mercurial poller: keeps a local clone (`hg clone --noupdate`, then `hg pull`)
//! and turns the changesets that arrived on the watched named branches into Changes.
//!
//! Every `hg` call is an argv (no shell), runs with `HGPLAIN=1` and reads JSON
//! templates, so file names with spaces or odd characters survive. Revisions are
//! nodes (40 hex digits), validated before they go into a revset. The contract is
//! the git poller's: the caller passes the last seen node per branch and persists the
//! [`PollResult`].

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{links_for, Change, PollError, PollResult};
use crate::sources::{redact_in, redact_url};

/// Mercurial's name for the unnamed branch.
const DEFAULT_BRANCH: &str = "default";
/// The hg commands the poller runs, to name one in an error.
const HG_VERBS: &[&str] = &["clone", "pull", "heads", "log", "status"];
/// The null revision's node: the "parent" of a root changeset.
const NULL_NODE: &str = "0000000000000000000000000000000000000000";

/// Polls one Mercurial repository (several named branches) into a local clone.
///
/// Run `poll` on a blocking thread: it starts `hg` processes and waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HgPoller {
    /// The repository to poll, as a user would give it to `hg clone`.
    pub url: String,
    /// Named branches to watch (`default` is Mercurial's main line).
    pub branches: Vec<String>,
    /// The local clone (created on the first poll, no working copy).
    pub mirror_dir: PathBuf,
    /// `https://…/%s`: where a revision can be seen on the web, for Change links.
    pub revlink: Option<String>,
    /// The project (factory) the Changes belong to.
    pub project: String,
    /// Category given to every Change.
    pub category: Option<String>,
    /// The `hg` program to run (a name looked up in `PATH`, or a path).
    pub hg: PathBuf,
    /// How long one `hg` command may run before it is killed (a hung network pull
    /// must not block the poller forever).
    pub timeout: Duration,
}

/// One changeset as `hg log -T json(...)` prints it.
#[derive(Debug, Deserialize)]
struct LogEntry {
    node: String,
    user: String,
    date: (f64, i64),
    desc: String,
    files: Vec<String>,
    parents: Vec<String>,
}

/// One branch head as `hg heads -T json(...)` prints it.
#[derive(Debug, Deserialize)]
struct HeadEntry {
    branch: String,
    node: String,
    rev: i64,
}

impl HgPoller {
    /// A poller for `url`'s named `branches` (empty: `default`) cloned into
    /// `mirror_dir`, running `hg` from `PATH` with a ten-minute limit per command.
    pub fn new(
        url: impl Into<String>,
        branches: Vec<String>,
        mirror_dir: impl Into<PathBuf>,
    ) -> HgPoller {
        let branches = if branches.is_empty() {
            vec![DEFAULT_BRANCH.to_string()]
        } else {
            branches
        };
        HgPoller {
            url: url.into(),
            branches,
            mirror_dir: mirror_dir.into(),
            revlink: None,
            project: String::new(),
            category: None,
            hg: PathBuf::from("hg"),
            timeout: Duration::from_secs(600),
        }
    }

    /// Pulls and reports what is new since `last_seen` (branch → node); same contract
    /// as [`GitPoller::poll`](super::GitPoller::poll).
    pub fn poll(&self, last_seen: &BTreeMap<String, String>) -> Result<PollResult, PollError> {
        let url = redact_url(&self.url);
        self.update_mirror()?;
        let heads = self.branch_heads()?;

        let mut result = PollResult::default();
        for branch in &self.branches {
            let Some(head) = heads.get(branch) else {
                result.failed.insert(
                    branch.clone(),
                    PollError::BranchMissing {
                        url: url.clone(),
                        branch: branch.clone(),
                    },
                );
                continue;
            };
            let old = last_seen.get(branch).map(|s| s.trim().to_ascii_lowercase());
            match old.as_deref() {
                None => {}
                Some(old) if old == head => {}
                Some(old) => match self.changes_since(branch, old, head) {
                    Ok((changes, forced)) => {
                        if forced {
                            tracing::warn!(
                                repository = %url,
                                branch = %branch,
                                old,
                                new = %head,
                                new_commits = changes.len(),
                                "branch history was rewritten: its head no longer descends from the last seen \
                                 revision; reporting only changesets not reachable from the old head"
                            );
                            result.forced.push(branch.clone());
                        }
                        result.changes.extend(changes);
                    }
                    Err(reason) => {
                        result.failed.insert(
                            branch.clone(),
                            PollError::History {
                                url: url.clone(),
                                branch: branch.clone(),
                                reason,
                            },
                        );
                        continue;
                    }
                },
            }
            result.heads.insert(branch.clone(), head.clone());
        }
        if result.heads.is_empty() && !result.failed.is_empty() {
            if let Some((_, first)) = result.failed.pop_first() {
                return Err(first);
            }
        }
        Ok(result)
    }

    /// Clones on the first poll, pulls every later one.
    fn update_mirror(&self) -> Result<(), PollError> {
        let fetch_err = |reason: String| PollError::Fetch {
            url: redact_url(&self.url),
            reason,
        };
        // Credentials in the URL stay out of the argv (`ps` shows it).
        let (global, source, _) = crate::sources::hg_source(&self.url);
        if self.mirror_dir.join(".hg").is_dir() {
            let mut args = global;
            args.extend(self.repo_args());
            args.extend(["pull", "--quiet", "--", &source].map(String::from));
            self.hg(&args).map_err(fetch_err)?;
            return Ok(());
        }
        if let Some(parent) = self.mirror_dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| PollError::Mirror {
                path: self.mirror_dir.clone(),
                reason: e.to_string(),
            })?;
        }
        tracing::info!(
            repository = %redact_url(&self.url),
            mirror = %self.mirror_dir.display(),
            "creating the hg mirror"
        );
        let dest = self.mirror_dir.to_string_lossy().into_owned();
        let mut args = global;
        args.extend(["clone", "--noupdate", "--quiet", "--", &source, &dest].map(String::from));
        self.hg(&args).map_err(fetch_err)?;
        Ok(())
    }

    /// The newest open head of every named branch.
    fn branch_heads(&self) -> Result<HashMap<String, String>, PollError> {
        let mut args = self.repo_args();
        args.extend(["heads", "-T", "json(branch,node,rev)"].map(String::from));
        let out = match self.hg(&args) {
            Ok(out) => out,
            // `hg heads` exits 1 with no output in a repository without changesets.
            Err(reason) if reason.starts_with("exit status 1:") => return Ok(HashMap::new()),
            Err(reason) => {
                return Err(PollError::Mirror {
                    path: self.mirror_dir.clone(),
                    reason,
                })
            }
        };
        let entries: Vec<HeadEntry> =
            serde_json::from_str(&out).map_err(|e| PollError::Mirror {
                path: self.mirror_dir.clone(),
                reason: format!("unreadable `hg heads` output: {e}"),
            })?;
        let mut best: HashMap<String, (i64, String)> = HashMap::new();
        for entry in entries {
            let slot = best
                .entry(entry.branch)
                .or_insert((entry.rev, entry.node.clone()));
            if entry.rev > slot.0 {
                *slot = (entry.rev, entry.node);
            }
        }
        Ok(best.into_iter().map(|(b, (_, node))| (b, node)).collect())
    }

    /// Changes between `old` and `head` (oldest first) and whether history was
    /// rewritten (`old` is not an ancestor of `head`).
    fn changes_since(
        &self,
        branch: &str,
        old: &str,
        head: &str,
    ) -> Result<(Vec<Change>, bool), String> {
        if !is_node(head) {
            return Err(format!("unexpected head {head:?}"));
        }
        let unknown_old = || {
            tracing::warn!(
                repository = %redact_url(&self.url),
                branch,
                old,
                "the last seen revision is unknown to the mirror; recording the new head without Changes"
            );
            Ok((Vec::new(), true))
        };
        if !is_node(old) {
            return unknown_old();
        }
        let mut args = self.repo_args();
        args.extend([
            "log".to_string(),
            "-r".to_string(),
            format!("sort(only({head}, {old}), rev)"),
            "-T".to_string(),
            "json(node,user,date,desc,files,parents)".to_string(),
        ]);
        let out = match self.hg(&args) {
            Ok(out) => out,
            // Only ask why when it failed: one process less on every normal poll.
            Err(_) if !self.knows(old)? => return unknown_old(),
            Err(reason) => return Err(reason),
        };
        let entries: Vec<LogEntry> = if out.trim().is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&out).map_err(|e| format!("unreadable `hg log` output: {e}"))?
        };
        let forced = !entries.iter().any(|e| e.parents.iter().any(|p| p == old));
        let repository = redact_url(&self.url);
        let mut changes = Vec::with_capacity(entries.len());
        for entry in entries {
            let real_parents = entry.parents.iter().filter(|p| *p != NULL_NODE).count();
            // A merge's `{files}` lists only files it resolved; the contract is the
            // files that differ from the first parent, which `hg status` knows.
            let files = if real_parents > 1 {
                self.merge_files(&entry.node)?
            } else {
                entry.files
            };
            changes.push(Change {
                who: entry.user,
                files,
                comments: entry.desc,
                links: links_for(self.revlink.as_deref(), &entry.node),
                revision: entry.node,
                branch: branch.to_string(),
                when: entry.date.0 as i64,
                repository: repository.clone(),
                category: self.category.clone(),
                project: self.project.clone(),
            });
        }
        Ok((changes, forced))
    }

    /// Files a merge changeset changed against its first parent.
    fn merge_files(&self, node: &str) -> Result<Vec<String>, String> {
        let mut args = self.repo_args();
        args.extend(
            [
                "status",
                "--change",
                node,
                "-a",
                "-m",
                "-r",
                "--no-status",
                "--print0",
            ]
            .map(String::from),
        );
        let out = self.hg(&args)?;
        let mut files: Vec<String> = out
            .split('\0')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// Whether the mirror has changeset `node`.
    fn knows(&self, node: &str) -> Result<bool, String> {
        let mut args = self.repo_args();
        args.extend(["log", "-r", &format!("id({node})"), "-T", "{node}"].map(String::from));
        match self.hg(&args) {
            Ok(out) => Ok(out.trim() == node),
            Err(reason) if reason.contains("unknown revision") || reason.contains("filtered") => {
                Ok(false)
            }
            Err(reason) => Err(reason),
        }
    }

    /// `-R MIRROR`, the start of every command on the local clone.
    fn repo_args(&self) -> Vec<String> {
        vec![
            "-R".to_string(),
            self.mirror_dir.to_string_lossy().into_owned(),
        ]
    }

    /// Runs `hg ARGS`; stdout on success, else a one-line reason (exit status and
    /// stderr). Never through a shell; killed after `timeout`.
    fn hg(&self, args: &[String]) -> Result<String, String> {
        let mut child = Command::new(&self.hg)
            .args(args)
            .envs(crate::sources::hg_source(&self.url).2)
            .env("HGPLAIN", "1")
            .env("HGENCODING", "UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.hg.display()))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        // The end of stdout is the usual sign that hg finished: wait for it without
        // polling, then reap (hg exits right after closing its output).
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let out_reader = std::thread::spawn(move || {
            let out = read_all(stdout);
            let _ = done_tx.send(());
            out
        });
        let err_reader = std::thread::spawn(move || read_all(stderr));
        let deadline = Instant::now() + self.timeout;
        let _ = done_rx.recv_timeout(self.timeout);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // The readers are left to finish on their own: a grandchild
                    // (ssh) may still hold the pipes open.
                    let verb = args
                        .iter()
                        .find(|a| HG_VERBS.contains(&a.as_str()))
                        .map_or("", String::as_str);
                    return Err(format!(
                        "hg {verb} did not finish within {:.1} s and was killed",
                        self.timeout.as_secs_f64()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => break Err(e.to_string()),
            }
        };
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let status = status?;
        if status.success() {
            Ok(stdout)
        } else {
            let code = status.code().map_or_else(
                || "killed by a signal".to_string(),
                |c| format!("exit status {c}"),
            );
            let stderr = redact_in(&stderr, &self.url);
            Err(format!("{code}: {}", stderr.trim().replace('\n', "; ")))
        }
    }
}

/// Reads a child's pipe to the end (lossy UTF-8).
fn read_all(pipe: Option<impl Read>) -> String {
    let mut buf = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A full 40-hex-digit node, safe to put into a revset.
fn is_node(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
