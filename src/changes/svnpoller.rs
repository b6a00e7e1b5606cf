//! The Subversion poller (Buildbot's SVNPoller): asks the repository itself, with
//! no local copy, what changed on each watched branch path since the last revision
//! it saw.
//!
//! One poll of an unchanged repository is one process: `svn info --xml` of every
//! branch URL, whose `<commit revision>` is the last revision that touched the
//! branch. A branch whose last change is newer than the one seen gets
//! `svn log --xml --verbose -r SEEN+1:LAST URL@LAST`, each log entry becoming a
//! Change with its files relative to the branch. Every `svn` call is an argv (no
//! shell), `--non-interactive`, killed after [`SvnPoller::timeout`]; the XML is
//! read by the small reader here. The contract is the git poller's: the caller
//! passes the last seen revision per branch and persists the [`PollResult`], so the
//! first poll records the branch's revision without Changes and a master that was
//! down reports every missed commit once. Subversion never rewrites history, so no
//! branch is ever `forced`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::tool::{self, one_line, RunError};
use super::{links_for, Change, PollError, PollResult};
use crate::sources::{redact_in, redact_url, split_credentials, svn_join};

/// Polls the branches of one Subversion repository.
///
/// Run `poll` on a blocking thread: it starts `svn` processes and waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvnPoller {
    /// The repository (base) URL, as the factory's `svn = URL` gives it.
    pub url: String,
    /// Branch name → path below `url` (empty: `url` itself), in polling order.
    pub branches: Vec<(String, String)>,
    /// `https://…/%s`: where a revision can be seen on the web, for Change links.
    pub revlink: Option<String>,
    /// The project (factory) the Changes belong to.
    pub project: String,
    /// Category given to every Change.
    pub category: Option<String>,
    /// The `svn` program to run (a name looked up in `PATH`, or a path).
    pub svn: std::path::PathBuf,
    /// How long one `svn` command may run before it is killed.
    pub timeout: Duration,
}

/// One `<logentry>` of `svn log --xml --verbose`.
#[derive(Debug, Default, PartialEq, Eq)]
struct LogEntry {
    revision: String,
    author: String,
    date: String,
    msg: String,
    paths: Vec<String>,
}

impl SvnPoller {
    /// A poller for the branches (name, path below `url`) of `url`, running `svn`
    /// from `PATH` with a ten-minute limit per command.
    pub fn new(url: impl Into<String>, branches: Vec<(String, String)>) -> SvnPoller {
        SvnPoller {
            url: url.into(),
            branches,
            revlink: None,
            project: String::new(),
            category: None,
            svn: std::path::PathBuf::from("svn"),
            timeout: Duration::from_secs(600),
        }
    }

    /// Reports what is new since `last_seen` (branch → revision); same contract as
    /// [`GitPoller::poll`](super::GitPoller::poll).
    pub fn poll(&self, last_seen: &BTreeMap<String, String>) -> Result<PollResult, PollError> {
        let repo = redact_url(&self.url);
        let (url, user) = self.bare_url()?;
        let urls: Vec<String> = self
            .branches
            .iter()
            .map(|(_, path)| svn_join(&url, path))
            .collect();
        let mut args = vec!["info".to_string(), "--xml".to_string(), "--".to_string()];
        args.extend(urls.iter().map(|u| format!("{u}@HEAD")));
        // svn exits 1 when one target is missing but still describes the others.
        let (ok, out, err) = self.svn(&user, &args)?;
        let infos = parse_info(&out);
        let mut result = PollResult::default();
        for ((branch, _), branch_url) in self.branches.iter().zip(&urls) {
            let Some((last_changed, relative)) = infos.get(branch_url.trim_end_matches('/')) else {
                let error = if ok || err.contains("E170000") || err.contains("W170000") {
                    PollError::BranchMissing {
                        url: repo.clone(),
                        branch: branch.clone(),
                    }
                } else {
                    PollError::Fetch {
                        url: repo.clone(),
                        reason: one_line(&redact_in(&err, &self.url)),
                    }
                };
                result.failed.insert(branch.clone(), error);
                continue;
            };
            let seen = last_seen
                .get(branch)
                .and_then(|s| s.trim().parse::<u64>().ok());
            match seen {
                None => {
                    if let Some(old) = last_seen.get(branch) {
                        tracing::warn!(
                            repository = %repo,
                            branch = %branch,
                            old = %old,
                            "the last seen revision is not an svn revision; recording the branch's revision without Changes"
                        );
                    }
                }
                Some(seen) if seen >= *last_changed => {}
                Some(seen) => {
                    match self.log(&user, branch, branch_url, relative, seen + 1, *last_changed) {
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
                    }
                }
            }
            result
                .heads
                .insert(branch.clone(), last_changed.to_string());
        }
        if result.heads.is_empty() && !result.failed.is_empty() {
            if let Some((_, first)) = result.failed.pop_first() {
                return Err(first);
            }
        }
        Ok(result)
    }

    /// The URL without a user name (given as `--username`); a password is refused.
    fn bare_url(&self) -> Result<(String, Option<String>), PollError> {
        match split_credentials(&self.url) {
            Ok((url, None)) => Ok((url, None)),
            Ok((url, Some(c))) if c.password.is_empty() => Ok((url, Some(c.username))),
            Ok(_) => Err(PollError::Fetch {
                url: redact_url(&self.url),
                reason: "the URL holds a password, which svn takes only on its command line; \
                         store it in the master's svn auth cache instead"
                    .into(),
            }),
            Err(e) => Err(PollError::Fetch {
                url: redact_url(&self.url),
                reason: e.to_string(),
            }),
        }
    }

    /// The Changes of `branch` in revisions `from..=to`, oldest first.
    fn log(
        &self,
        user: &Option<String>,
        branch: &str,
        url: &str,
        relative: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Change>, String> {
        let args: Vec<String> = vec![
            "log".into(),
            "--xml".into(),
            "--verbose".into(),
            "-r".into(),
            format!("{from}:{to}"),
            "--".into(),
            format!("{url}@{to}"),
        ];
        let (ok, out, err) = self.svn(user, &args).map_err(|e| e.to_string())?;
        if !ok {
            return Err(one_line(&redact_in(&err, &self.url)));
        }
        let repository = redact_url(&self.url);
        let prefix = format!("{}/", relative.trim_end_matches('/'));
        let mut changes = Vec::new();
        for entry in parse_log(&out) {
            let when = entry
                .date
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_second())
                .unwrap_or(0);
            let mut files: Vec<String> = entry
                .paths
                .iter()
                .map(|p| match p.strip_prefix(&prefix) {
                    Some(rest) => rest.to_string(),
                    None => p.trim_start_matches('/').to_string(),
                })
                .filter(|p| !p.is_empty())
                .collect();
            files.sort();
            files.dedup();
            changes.push(Change {
                who: entry.author,
                files,
                comments: entry.msg,
                links: links_for(self.revlink.as_deref(), &entry.revision),
                revision: entry.revision,
                branch: branch.to_string(),
                when,
                repository: repository.clone(),
                category: self.category.clone(),
                project: self.project.clone(),
            });
        }
        Ok(changes)
    }

    /// Runs `svn --non-interactive [--username U] ARGS`: whether it exited 0, its
    /// stdout and stderr. Never through a shell; killed after `timeout`.
    fn svn(
        &self,
        user: &Option<String>,
        args: &[String],
    ) -> Result<(bool, String, String), PollError> {
        let mut all = vec!["--non-interactive".to_string()];
        if let Some(u) = user {
            all.extend(["--username".to_string(), u.clone()]);
        }
        all.extend(args.iter().cloned());
        tool::run(&self.svn, &all, self.timeout).map_err(|e| match e {
            RunError::Spawn(reason) => PollError::Program {
                program: self.svn.display().to_string(),
                reason,
            },
            RunError::Timeout => PollError::Fetch {
                url: redact_url(&self.url),
                reason: format!(
                    "svn {} did not finish within {:.1} s and was killed",
                    args.first().map_or("", String::as_str),
                    self.timeout.as_secs_f64()
                ),
            },
        })
    }
}

/// One piece of an XML document: a start tag (name, attributes), an end tag, or
/// text (entities decoded).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Xml {
    Start(String, Vec<(String, String)>),
    End(String),
    Text(String),
}

/// The tags and text of `doc` (svn's `--xml` output: no CDATA, no DTD; comments
/// and `<?xml?>` skipped). Malformed input ends the list early.
pub(crate) fn xml_tokens(doc: &str) -> Vec<Xml> {
    let mut out = Vec::new();
    let mut rest = doc;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            out.push(Xml::Text(unescape(rest)));
            break;
        };
        if lt > 0 {
            out.push(Xml::Text(unescape(&rest[..lt])));
        }
        rest = &rest[lt..];
        let Some(gt) = rest.find('>') else { break };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            out.push(Xml::End(name.trim().to_string()));
            continue;
        }
        let empty = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
        let name = tag[..name_end].to_string();
        let mut attrs = Vec::new();
        let mut a = &tag[name_end..];
        while let Some(eq) = a.find('=') {
            let key = a[..eq].trim().to_string();
            let after = a[eq + 1..].trim_start();
            let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                break;
            };
            let Some(close) = after[1..].find(quote) else {
                break;
            };
            attrs.push((key, unescape(&after[1..1 + close])));
            a = &after[close + 2..];
        }
        out.push(Xml::Start(name.clone(), attrs));
        if empty {
            out.push(Xml::End(name));
        }
    }
    out
}

/// XML's five entities and numeric character references decoded.
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let c = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e => e
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| e.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub(crate) fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `svn info --xml`: entry URL (no trailing `/`) → (the revision that last
/// changed it, its path from the repository root, `/trunk`).
fn parse_info(doc: &str) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    let (mut url, mut relative, mut commit) = (String::new(), String::new(), None);
    let mut field = String::new();
    for t in xml_tokens(doc) {
        match t {
            Xml::Start(name, attrs) => {
                if name == "entry" {
                    (url, relative, commit) = (String::new(), String::new(), None);
                } else if name == "commit" {
                    commit = attr(&attrs, "revision").and_then(|r| r.parse::<u64>().ok());
                }
                field = name;
            }
            Xml::Text(text) => match field.as_str() {
                "url" => url.push_str(&text),
                "relative-url" => relative.push_str(&text),
                _ => {}
            },
            Xml::End(name) => {
                if name == "entry" {
                    if let Some(rev) = commit {
                        let rel = relative.trim().trim_start_matches('^').to_string();
                        out.insert(url.trim().trim_end_matches('/').to_string(), (rev, rel));
                    }
                }
                field.clear();
            }
        }
    }
    out
}

/// `svn log --xml --verbose`: the entries in the order given.
fn parse_log(doc: &str) -> Vec<LogEntry> {
    let mut out = Vec::new();
    let mut entry: Option<LogEntry> = None;
    let mut field = String::new();
    let mut text = String::new();
    // A directory added or changed (a property) is no file of the Change; a
    // deleted one is all that says its files went.
    let mut skip_path = false;
    for t in xml_tokens(doc) {
        match t {
            Xml::Start(name, attrs) => {
                if name == "path" {
                    skip_path =
                        attr(&attrs, "kind") == Some("dir") && attr(&attrs, "action") != Some("D");
                }
                if name == "logentry" {
                    entry = Some(LogEntry {
                        revision: attr(&attrs, "revision").unwrap_or_default().to_string(),
                        ..LogEntry::default()
                    });
                }
                field = name;
                text.clear();
            }
            Xml::Text(t) => text.push_str(&t),
            Xml::End(name) => {
                if let Some(e) = entry.as_mut() {
                    match name.as_str() {
                        "author" => e.author = text.clone(),
                        "date" => e.date = text.trim().to_string(),
                        "msg" => e.msg = text.clone(),
                        "path" if field == "path" && !skip_path => e.paths.push(text.clone()),
                        "logentry" => {
                            if let Some(e) = entry.take() {
                                out.push(e);
                            }
                        }
                        _ => {}
                    }
                }
                field.clear();
                text.clear();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_svn_log_xml() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<log>
<logentry
   revision="3">
<author>alice</author>
<date>2026-12-07T03:00:00.123456Z</date>
<paths>
<path
   prop-mods="false"
   text-mods="true"
   kind="file"
   action="M">/trunk/a &amp; b.c</path>
<path
   kind="file"
   action="A">/trunk/new</path>
<path
   kind="dir"
   action="A">/trunk/newdir</path>
</paths>
<msg>fix &lt;it&gt;
second line</msg>
</logentry>
<logentry revision="4"><author>bob</author><date>2026-12-07T03:00:01.000000Z</date><paths><path action="D" kind="dir">/trunk/old</path></paths><msg></msg></logentry>
</log>"#;
        let log = parse_log(doc);
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].revision, "3");
        assert_eq!(log[0].author, "alice");
        assert_eq!(log[0].msg, "fix <it>\nsecond line");
        assert_eq!(log[0].paths, vec!["/trunk/a & b.c", "/trunk/new"]);
        assert_eq!(log[1].paths, vec!["/trunk/old"]);
        assert_eq!(log[1].msg, "");
    }

    #[test]
    fn reads_svn_info_xml() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<info>
<entry
   kind="dir"
   path="trunk"
   revision="7">
<url>file:///r/trunk</url>
<relative-url>^/trunk</relative-url>
<repository>
<root>file:///r</root>
<uuid>x</uuid>
</repository>
<commit
   revision="5">
<author>a</author>
<date>2026-12-07T03:00:00.000000Z</date>
</commit>
</entry>
</info>"#;
        let info = parse_info(doc);
        assert_eq!(
            info.get("file:///r/trunk"),
            Some(&(5, "/trunk".to_string()))
        );
    }
}
