//! The Darcs poller (Buildbot's DarcsPoller): asks each watched repository for its
//! newest patch (`darcs log --last=1 --xml-output`, one process when nothing
//! changed) and reads the patches since the last one seen with `darcs log
//! --xml-output --summary --from-hash=SEEN`, each becoming a Change whose revision
//! is the patch hash (what a checkout's `--to-hash` takes and `got_revision` is).
//!
//! Every `darcs` call is an argv (no shell), killed after [`DarcsPoller::timeout`].
//! The contract is the git poller's: the caller passes the last seen hash per
//! branch and persists the [`PollResult`]. A last seen patch the repository no
//! longer has (obliterated) records the newest patch without Changes and reports
//! the branch as `forced`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::svnpoller::{attr, xml_tokens, Xml};
use super::tool::{self, one_line, RunError};
use super::{links_for, Change, PollError, PollResult};
use crate::sources::{redact_in, redact_url, svn_join};

/// Polls the repositories (branches) below one Darcs URL.
///
/// Run `poll` on a blocking thread: it starts `darcs` processes and waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DarcsPoller {
    /// The repository (or base) URL, as the factory's `darcs = URL` gives it.
    pub url: String,
    /// Branch name → path below `url` (empty: `url` itself), in polling order.
    pub branches: Vec<(String, String)>,
    /// `https://…/%s`: where a revision can be seen on the web, for Change links.
    pub revlink: Option<String>,
    /// The project (factory) the Changes belong to.
    pub project: String,
    /// Category given to every Change.
    pub category: Option<String>,
    /// The `darcs` program to run.
    pub darcs: std::path::PathBuf,
    /// How long one `darcs` command may run before it is killed.
    pub timeout: Duration,
}

/// One `<patch>` of `darcs log --xml-output [--summary]`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Patch {
    hash: String,
    author: String,
    /// `YYYYMMDDhhmmss`, UTC.
    date: String,
    name: String,
    comment: String,
    files: Vec<String>,
}

impl DarcsPoller {
    /// A poller for the branches (name, path below `url`) of `url`, running `darcs`
    /// from `PATH` with a ten-minute limit per command.
    pub fn new(url: impl Into<String>, branches: Vec<(String, String)>) -> DarcsPoller {
        DarcsPoller {
            url: url.into(),
            branches,
            revlink: None,
            project: String::new(),
            category: None,
            darcs: std::path::PathBuf::from("darcs"),
            timeout: Duration::from_secs(600),
        }
    }

    /// Reports what is new since `last_seen` (branch → patch hash); same contract as
    /// [`GitPoller::poll`](super::GitPoller::poll).
    pub fn poll(&self, last_seen: &BTreeMap<String, String>) -> Result<PollResult, PollError> {
        let repo = redact_url(&self.url);
        let mut result = PollResult::default();
        for (branch, path) in &self.branches {
            let url = svn_join(&self.url, path);
            let newest = self
                .log(&url, &["--last=1".to_string()])
                .map(|p| p.into_iter().next());
            let head = match newest {
                Ok(Some(p)) => p.hash,
                // A repository without patches: nothing to record yet.
                Ok(None) => continue,
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
            let seen = last_seen.get(branch).map(|s| s.trim().to_string());
            match seen.as_deref() {
                None => {}
                Some(seen) if seen == head => {}
                Some(seen) => {
                    let args = vec!["--summary".to_string(), format!("--from-hash={seen}")];
                    match self.log(&url, &args) {
                        Ok(patches) if patches.iter().any(|p| p.hash == seen) => {
                            // Newest first, the seen one last: the rest, oldest first.
                            for p in patches.into_iter().rev().filter(|p| p.hash != seen) {
                                result.changes.push(self.change(branch, p));
                            }
                        }
                        Ok(_) | Err(_) if !is_hash(seen) => result.forced.push(branch.clone()),
                        Ok(_) => result.forced.push(branch.clone()),
                        Err(reason) if reason.contains("Couldn't match") => {
                            result.forced.push(branch.clone())
                        }
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
                    }
                }
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

    fn change(&self, branch: &str, p: Patch) -> Change {
        let when = jiff::fmt::strtime::parse("%Y%m%d%H%M%S", &p.date)
            .ok()
            .and_then(|t| t.to_datetime().ok())
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map_or(0, |z| z.timestamp().as_second());
        // darcs adds an `Ignore-this: …` line of its own to every comment.
        let comment: Vec<&str> = p
            .comment
            .lines()
            .filter(|l| !l.starts_with("Ignore-this: "))
            .collect();
        let mut comments = p.name.clone();
        let body = comment.join("\n");
        if !body.trim().is_empty() {
            comments.push('\n');
            comments.push_str(body.trim_end());
        }
        Change {
            who: p.author,
            files: p.files,
            comments,
            links: links_for(self.revlink.as_deref(), &p.hash),
            revision: p.hash,
            branch: branch.to_string(),
            when,
            repository: redact_url(&self.url),
            category: self.category.clone(),
            project: self.project.clone(),
        }
    }

    /// `darcs log --xml-output --repo URL ARGS`, newest patch first.
    fn log(&self, url: &str, extra: &[String]) -> Result<Vec<Patch>, String> {
        let mut args = vec![
            "log".to_string(),
            "--xml-output".to_string(),
            format!("--repo={url}"),
        ];
        args.extend(extra.iter().cloned());
        let (ok, out, err) = tool::run(&self.darcs, &args, self.timeout).map_err(|e| match e {
            RunError::Spawn(reason) => format!("cannot run {}: {reason}", self.darcs.display()),
            RunError::Timeout => format!(
                "darcs log did not finish within {:.1} s and was killed",
                self.timeout.as_secs_f64()
            ),
        })?;
        if !ok {
            return Err(one_line(&redact_in(&err, &self.url)));
        }
        Ok(parse_patches(&out))
    }
}

/// A darcs patch hash (40 hex digits).
fn is_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `<patch>` elements of `darcs log --xml-output [--summary]`.
fn parse_patches(doc: &str) -> Vec<Patch> {
    let mut out = Vec::new();
    let mut patch: Option<Patch> = None;
    let mut text = String::new();
    let mut in_summary = false;
    for t in xml_tokens(doc) {
        match t {
            Xml::Start(name, attrs) => {
                match name.as_str() {
                    "patch" => {
                        patch = Some(Patch {
                            hash: attr(&attrs, "hash").unwrap_or_default().to_string(),
                            author: attr(&attrs, "author").unwrap_or_default().to_string(),
                            date: attr(&attrs, "date").unwrap_or_default().to_string(),
                            ..Patch::default()
                        })
                    }
                    "summary" => in_summary = true,
                    _ => {}
                }
                // `<added_lines/>` after a file name is part of its element.
                if !matches!(name.as_str(), "added_lines" | "removed_lines") {
                    text.clear();
                }
            }
            Xml::Text(t) => text.push_str(&t),
            Xml::End(name) => {
                if let Some(p) = patch.as_mut() {
                    match name.as_str() {
                        "name" => p.name = text.trim().to_string(),
                        "comment" => p.comment = text.trim().to_string(),
                        "summary" => in_summary = false,
                        "add_file" | "modify_file" | "remove_file" if in_summary => {
                            let f = text.trim();
                            if !f.is_empty() {
                                p.files.push(f.trim_start_matches("./").to_string());
                            }
                        }
                        "patch" => {
                            if let Some(mut p) = patch.take() {
                                p.files.sort();
                                p.files.dedup();
                                out.push(p);
                            }
                        }
                        _ => {}
                    }
                }
                // `<added_lines/>` inside `<modify_file>` ends nothing of interest
                // but must not drop the file name read before it.
                if !matches!(name.as_str(), "added_lines" | "removed_lines") {
                    text.clear();
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_darcs_xml_log() {
        let doc = "<changelog>
<patch author='Ann &lt;ann@example.org&gt;' date='20261207032402' local_date='x' inverted='False' hash='baa40f30fc493c53e655a680a51b0388eb9cd8cb'>
    <name>second</name>
    <comment>Ignore-this: 28dc
more words</comment>
    <summary>
    <modify_file>
    a<removed_lines num='1'/><added_lines num='1'/>
    </modify_file>
    <add_file>
    dir/b c
    </add_file>
    <add_directory>
    dir
    </add_directory>
    </summary>
</patch>
</changelog>";
        let p = parse_patches(doc);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].author, "Ann <ann@example.org>");
        assert_eq!(p[0].name, "second");
        assert_eq!(p[0].files, vec!["a", "dir/b c"]);
        let poller = DarcsPoller::new("/r", vec![]);
        let c = poller.change("", p.into_iter().next().unwrap());
        assert_eq!(c.comments, "second\nmore words");
        assert_eq!(c.when, 1_796_613_842);
    }
}
