//! The manual's mail-parsing change sources: a `[changesource:NAME]` with
//! `type = maildir` watches a maildir that a repository's commit mails are
//! delivered to, and turns each new message into one Change.
//!
//! Three formats, as Buildbot 0.7's `buildbot.changes.mail` read them:
//!
//! * `svn`: Subversion's `commit-email.pl` (`Author:`, `New Revision:`, the
//!   `Added:`/`Removed:`/`Modified:` lists and `Log:`; either order of the lists
//!   and the log, as old and new versions of the script write them);
//! * `cvs`: CVSToys/syncmail (the directory is the subject's first word, the
//!   `Modified Files:`/`Added Files:`/`Removed Files:` lists, `Tag:` as the branch,
//!   `Log Message:`);
//! * `bzr`: Launchpad's branch mails and Bazaar's email plugin (`revno:`,
//!   `committer:`, `timestamp:`, `message:` and the `added:`/`modified:`/
//!   `removed:`/`renamed:` lists).
//!
//! The master looks at `DIR/new` every `pollInterval` seconds (a plain poll of the
//! directory: no inotify, which network file systems do not deliver). Each message is
//! parsed (RFC 822 and MIME by the `mailparse` crate: the first `text/plain` part,
//! transfer encodings and charsets decoded), submitted through
//! [`ChangeBus::add_delivery`] and then moved to `DIR/cur/`. The delivery record
//! (keyed by the source's name, the Message-ID and the SHA-256 of the file) is what
//! keeps a message that was stored but not yet moved when the master stopped from
//! being submitted twice. A message that is not of the format, is too large or
//! breaks a rule of every Change is moved to `DIR/bad/` with a `NAME.reason` file
//! beside it and a warning in the log: never lost, never fatal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailparse::{MailHeaderMap, ParsedMail};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::bus::{AddError, Delivered};
use super::ChangeBus;
use crate::config::changesource::{MailFormat, MaildirSourceConfig};
use crate::config::MasterConfig;
use crate::db::changes::{Delivery, NewChange};

/// The largest message read; a larger one is moved to `bad/`.
pub const MAX_MAIL: u64 = 16 << 20;

/// A commit mail read: the Change's fields that come from the mail.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailChange {
    pub who: String,
    pub files: Vec<String>,
    pub comments: String,
    pub revision: Option<String>,
    pub branch: Option<String>,
    /// Unix seconds; `None`: the mail says no time (the time of receipt is used).
    pub when: Option<i64>,
}

/// Why a message is not a commit mail of its format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MailError(pub String);

fn bad(msg: impl Into<String>) -> MailError {
    MailError(msg.into())
}

/// Parse one message of `format`. `Ok(None)`: a commit mail whose files all lie
/// outside `prefix` (nothing to build; the manual's sources ignore it too).
pub fn parse_mail(
    format: MailFormat,
    raw: &[u8],
    prefix: Option<&str>,
) -> Result<Option<MailChange>, MailError> {
    // A message saved from an mbox (or `commit-email.pl --stdout`) starts with the
    // envelope's `From ` line, which is no header.
    let raw = match raw.strip_prefix(b"From ") {
        Some(rest) => match memchr::memchr(b'\n', rest) {
            Some(i) => &rest[i + 1..],
            None => return Err(bad("the message is one `From ` line and nothing else")),
        },
        None => raw,
    };
    let mail = mailparse::parse_mail(raw).map_err(|e| bad(format!("not a mail: {e}")))?;
    if mail.headers.is_empty() {
        return Err(bad("not a mail: it has no headers"));
    }
    let body = text_body(&mail)?;
    let header = |name: &str| mail.headers.get_first_value(name);
    let change = match format {
        MailFormat::Svn => parse_svn(&body, header("From"), prefix)?,
        MailFormat::Cvs => parse_syncmail(&body, header("From"), header("Subject"), prefix)?,
        MailFormat::Bzr => parse_bzr(&body)?,
    };
    Ok(change.map(|mut c| {
        if c.when.is_none() {
            c.when = header("Date").and_then(|d| mailparse::dateparse(&d).ok());
        }
        c
    }))
}

/// The first `text/plain` part's text, decoded.
fn text_body(mail: &ParsedMail) -> Result<String, MailError> {
    fn find<'a, 'b>(m: &'a ParsedMail<'b>) -> Option<&'a ParsedMail<'b>> {
        if m.subparts.is_empty() {
            return (m.ctype.mimetype == "text/plain").then_some(m);
        }
        m.subparts.iter().find_map(find)
    }
    let part = find(mail).ok_or_else(|| {
        bad(format!(
            "no text/plain part (the message is {})",
            mail.ctype.mimetype
        ))
    })?;
    let body = part
        .get_body()
        .map_err(|e| bad(format!("cannot decode the body: {e}")))?;
    // Lines as the parsers see them: no CR of a CRLF mail.
    Ok(body.replace("\r\n", "\n"))
}

/// The local part of the first address of a `From:` header.
fn from_user(from: Option<String>) -> Option<String> {
    let list = mailparse::addrparse(&from?).ok()?;
    let addr = list.extract_single_info()?.addr;
    let user = addr.split('@').next().unwrap_or(&addr).trim().to_string();
    (!user.is_empty()).then_some(user)
}

/// `file` under `prefix` with it stripped; `None` when it lies outside.
fn strip_prefix(file: &str, prefix: Option<&str>) -> Option<String> {
    match prefix {
        None => Some(file.to_string()),
        Some(p) => file
            .strip_prefix(p)
            .filter(|rest| !rest.is_empty())
            .map(str::to_string),
    }
}

/// Comments as Buildbot kept them: trailing blank lines gone, one newline at the end.
fn finish_comments(lines: &[&str]) -> String {
    let text = lines.join("\n");
    format!("{}\n", text.trim_end())
}

/// `YYYY-MM-DD HH:MM:SS +ZZZZ` at the start of `s` (svn's and bzr's dates).
fn parse_iso_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let head: String = s.chars().take(25).collect();
    jiff::fmt::strtime::parse("%Y-%m-%d %H:%M:%S %z", head.trim())
        .ok()?
        .to_timestamp()
        .ok()
        .map(|t| t.as_second())
}

/// Subversion's `commit-email.pl`.
fn parse_svn(
    body: &str,
    from: Option<String>,
    prefix: Option<&str>,
) -> Result<Option<MailChange>, MailError> {
    let lines: Vec<&str> = body.lines().collect();
    let mut who = None;
    let mut revision = None;
    let mut when = None;
    let mut listed: Vec<String> = Vec::new();
    let mut comments: Option<String> = None;
    let is_list_header = |l: &str| {
        matches!(
            l.trim_end(),
            "Added:" | "Removed:" | "Modified:" | "Deleted:" | "Copied:" | "Replaced:"
        )
    };
    // Where the diffs start: `Modified: path` followed by the `====` rule.
    let is_diff_start = |i: usize| -> bool {
        let l = lines[i];
        let labelled = [
            "Added: ",
            "Modified: ",
            "Deleted: ",
            "Copied: ",
            "Replaced: ",
            "Removed: ",
        ]
        .iter()
        .any(|p| l.starts_with(p))
            || l.starts_with("Property changes on: ");
        labelled
            && lines
                .get(i + 1)
                .is_some_and(|n| n.starts_with("====") || n.starts_with("____"))
    };
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if let Some(a) = l.strip_prefix("Author: ") {
            if who.is_none() {
                who = Some(a.trim().to_string());
            }
        } else if let Some(r) = l.strip_prefix("New Revision: ") {
            if revision.is_none() {
                let r = r.trim();
                if r.is_empty() || !r.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(format!("`New Revision: {r}` is not a revision number")));
                }
                revision = Some(r.to_string());
            }
        } else if let Some(d) = l.strip_prefix("Date: ") {
            if when.is_none() {
                when = parse_iso_date(d);
            }
        } else if is_list_header(l) {
            i += 1;
            while i < lines.len() && lines[i].starts_with(char::is_whitespace) {
                let f = lines[i].trim();
                // `   trunk/x.c (props changed)`, `      - copied from r1, ...`
                if !f.is_empty() && !f.starts_with("- ") {
                    let f = f.strip_suffix(" (props changed)").unwrap_or(f);
                    listed.push(f.to_string());
                }
                i += 1;
            }
            continue;
        } else if l.trim_end() == "Log:" && comments.is_none() {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && !is_list_header(lines[end]) && !is_diff_start(end) {
                end += 1;
            }
            comments = Some(finish_comments(&lines[start..end]));
            i = end;
            continue;
        } else if is_diff_start(i) {
            break;
        }
        i += 1;
    }
    let revision = revision
        .ok_or_else(|| bad("no `New Revision:` line: not a mail of svn's commit-email.pl"))?;
    let comments =
        comments.ok_or_else(|| bad("no `Log:` section: not a mail of svn's commit-email.pl"))?;
    let who = who
        .or_else(|| from_user(from))
        .ok_or_else(|| bad("no `Author:` line and no From: address"))?;
    if listed.is_empty() {
        return Err(bad(
            "no Added:/Removed:/Modified: file list: not a mail of svn's commit-email.pl",
        ));
    }
    let files: Vec<String> = listed
        .iter()
        .filter_map(|f| strip_prefix(f, prefix))
        .collect();
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some(MailChange {
        who,
        files,
        comments,
        revision: Some(revision),
        branch: None,
        when,
    }))
}

/// CVSToys/syncmail.
fn parse_syncmail(
    body: &str,
    from: Option<String>,
    subject: Option<String>,
    prefix: Option<&str>,
) -> Result<Option<MailChange>, MailError> {
    let who = from_user(from)
        .ok_or_else(|| bad("no From: address (syncmail sends from the committer)"))?;
    let subject = subject.ok_or_else(|| bad("no Subject: (syncmail names the directory there)"))?;
    // `DIR FILE,OLD,NEW ...`: the directory is the first word.
    let directory = subject.split_whitespace().next().unwrap_or("").to_string();
    if directory.is_empty() {
        return Err(bad(
            "an empty Subject: (syncmail names the directory there)",
        ));
    }
    let lines: Vec<&str> = body.lines().collect();
    let is_list_header = |l: &str| {
        matches!(
            l.trim_end(),
            "Modified Files:" | "Added Files:" | "Removed Files:"
        )
    };
    let mut listed: Vec<String> = Vec::new();
    let mut branch = None;
    let mut comments = None;
    let mut seen_list = false;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if is_list_header(l) {
            seen_list = true;
            i += 1;
            while i < lines.len() {
                let l = lines[i];
                if l.trim().is_empty() || is_list_header(l) || l.trim_end() == "Log Message:" {
                    break;
                }
                let t = l.trim();
                if let Some(tag) = t.strip_prefix("Tag:") {
                    branch = Some(tag.trim().to_string()).filter(|b| !b.is_empty());
                } else {
                    for f in t.split_whitespace() {
                        listed.push(format!("{directory}/{f}"));
                    }
                }
                i += 1;
            }
            continue;
        }
        if l.trim_end() == "Log Message:" {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() {
                let l = lines[end];
                if l.starts_with("Index: ")
                    || l.starts_with("--- NEW FILE")
                    || l.ends_with(" DELETED ---")
                {
                    break;
                }
                end += 1;
            }
            comments = Some(finish_comments(&lines[start..end]));
            break;
        }
        i += 1;
    }
    if !seen_list || listed.is_empty() {
        return Err(bad(
            "no `Modified Files:`/`Added Files:`/`Removed Files:` list: not a syncmail message",
        ));
    }
    let comments = comments.ok_or_else(|| bad("no `Log Message:`: not a syncmail message"))?;
    let files: Vec<String> = listed
        .iter()
        .filter_map(|f| strip_prefix(f, prefix))
        .collect();
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some(MailChange {
        who,
        files,
        comments,
        revision: None,
        branch,
        when: None,
    }))
}

/// Launchpad's branch mails and Bazaar's email plugin (`bzr log -v` of the revision).
fn parse_bzr(body: &str) -> Result<Option<MailChange>, MailError> {
    #[derive(PartialEq)]
    enum Gobble {
        None,
        Message,
        Files,
        Renamed,
    }
    let mut revision = None;
    let mut who = None;
    let mut when = None;
    let mut message: Vec<&str> = Vec::new();
    let mut files: Vec<String> = Vec::new();
    let mut state = Gobble::None;
    for l in body.lines() {
        if let Some(r) = l.strip_prefix("revno:") {
            if revision.is_none() {
                // `revno: 12 [merge]`
                let r = r.split_whitespace().next().unwrap_or("");
                if r.is_empty() || !r.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                    return Err(bad(format!("`revno: {r}` is not a Bazaar revno")));
                }
                revision = Some(r.to_string());
            }
            state = Gobble::None;
        } else if let Some(c) = l.strip_prefix("committer:") {
            who.get_or_insert_with(|| c.trim().to_string());
            state = Gobble::None;
        } else if let Some(t) = l.strip_prefix("timestamp:") {
            // `Fri 2009-05-15 10:35:43 +0200`
            let t = t.trim();
            let t = t.split_once(' ').map(|(_, rest)| rest).unwrap_or(t);
            when = when.or_else(|| parse_iso_date(t));
            state = Gobble::None;
        } else if l.trim_end() == "message:" {
            state = Gobble::Message;
        } else if matches!(
            l.trim_end(),
            "added:" | "removed:" | "modified:" | "kind changed:"
        ) {
            state = Gobble::Files;
        } else if l.trim_end() == "renamed:" {
            state = Gobble::Renamed;
        } else if let Some(text) = l.strip_prefix("  ") {
            match state {
                Gobble::Message => message.push(text),
                Gobble::Files => files.push(text.trim().to_string()),
                Gobble::Renamed => match text.split_once(" => ") {
                    Some((old, new)) => {
                        files.push(old.trim().to_string());
                        files.push(new.trim().to_string());
                    }
                    None => files.push(text.trim().to_string()),
                },
                Gobble::None => {}
            }
        } else if state == Gobble::Message && l.trim().is_empty() {
            message.push("");
        } else {
            state = Gobble::None;
        }
    }
    let revision = revision.ok_or_else(|| bad("no `revno:` line: not a Bazaar commit mail"))?;
    let who = who
        .filter(|w| !w.is_empty())
        .ok_or_else(|| bad("no `committer:` line: not a Bazaar commit mail"))?;
    Ok(Some(MailChange {
        who,
        files: files.into_iter().filter(|f| !f.is_empty()).collect(),
        comments: finish_comments(&message),
        revision: Some(revision),
        branch: None,
        when,
    }))
}

/// Run the maildir change sources of the configuration in force until `stop` turns
/// true; a reconfig that changes them restarts them.
pub fn start(
    bus: ChangeBus,
    config: watch::Receiver<Arc<MasterConfig>>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(supervise(bus, config, stop))
}

async fn supervise(
    bus: ChangeBus,
    mut config: watch::Receiver<Arc<MasterConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    type Running = (
        Vec<MaildirSourceConfig>,
        watch::Sender<bool>,
        Vec<JoinHandle<()>>,
    );
    let mut running: Option<Running> = None;
    let mut config_open = true;
    let halt = |(_, tx, tasks): Running| async move {
        tx.send_replace(true);
        for t in tasks {
            let _ = t.await;
        }
    };
    loop {
        let sources = config.borrow_and_update().change_sources.clone();
        if running.as_ref().map(|(s, _, _)| s) != Some(&sources) {
            if let Some(r) = running.take() {
                tracing::info!("reconfig: restarting the maildir change sources");
                halt(r).await;
            }
            let (tx, rx) = watch::channel(false);
            let tasks = sources
                .iter()
                .map(|s| tokio::spawn(watch_maildir(bus.clone(), s.clone(), rx.clone())))
                .collect();
            running = Some((sources, tx, tasks));
        }
        tokio::select! {
            r = config.changed(), if config_open => {
                if r.is_err() {
                    config_open = false;
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if let Some(r) = running {
        halt(r).await;
    }
}

/// One maildir: look at `new/` every interval until `stop`.
async fn watch_maildir(bus: ChangeBus, src: MaildirSourceConfig, mut stop: watch::Receiver<bool>) {
    tracing::info!(
        "change source {}: reading {} mails from {} every {} s",
        src.name,
        src.format.as_str(),
        src.maildir.display(),
        src.interval
    );
    let mut complained = false;
    loop {
        if *stop.borrow() {
            return;
        }
        match scan_once(&bus, &src).await {
            Ok(()) => complained = false,
            Err(e) if !complained => {
                tracing::error!(
                    "change source {}: {e}; trying again every {} s",
                    src.name,
                    src.interval
                );
                complained = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(src.interval)) => {}
        }
    }
}

/// What became of one message file.
enum Outcome {
    /// A Change to submit (the mail's bytes' digest and its Message-ID).
    Change(Box<NewChange>, String, Option<String>),
    /// Nothing to build (no file under the prefix): to `cur/`.
    Ignored(String),
    /// Not of the format: to `bad/` with the reason.
    Bad(String),
}

/// Make the maildir's folders, then handle every message in `new/`, oldest name
/// first. Errors are about the maildir itself (each message's fate is logged).
async fn scan_once(bus: &ChangeBus, src: &MaildirSourceConfig) -> Result<(), String> {
    let src2 = src.clone();
    let found = tokio::task::spawn_blocking(move || read_new(&src2))
        .await
        .map_err(|e| format!("the scan task failed: {e}"))??;
    for (file, outcome) in found {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match outcome {
            Outcome::Bad(reason) => set_aside(src, &file, &name, &reason),
            Outcome::Ignored(why) => {
                tracing::info!("change source {}: {name}: {why}; no Change", src.name);
                to_cur(src, &file, &name);
            }
            Outcome::Change(change, digest, id) => {
                let delivery = Delivery {
                    forge: format!("maildir:{}", src.name),
                    id,
                    digest,
                };
                match bus.add_delivery(delivery, vec![*change]).await {
                    Ok(Delivered::Stored(rows)) => {
                        for r in rows {
                            tracing::info!(
                                "change source {}: {name} became change {}",
                                src.name,
                                r.id
                            );
                        }
                        to_cur(src, &file, &name);
                    }
                    Ok(Delivered::Repeat { .. }) => {
                        tracing::info!(
                            "change source {}: {name} was submitted before (the master stopped before moving it); moving it to cur/",
                            src.name
                        );
                        to_cur(src, &file, &name);
                    }
                    Err(AddError::Invalid { error, .. }) => set_aside(
                        src,
                        &file,
                        &name,
                        &format!("the Change breaks a rule: {error}"),
                    ),
                    Err(AddError::Db(e)) => {
                        // Left in new/: the next look tries again.
                        return Err(format!("cannot store the Change of {name}: {e}"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The maildir's folders, made when missing.
fn folders(src: &MaildirSourceConfig) -> [PathBuf; 4] {
    ["new", "cur", "tmp", "bad"].map(|d| src.maildir.join(d))
}

/// Read and parse every message of `new/` (blocking).
fn read_new(src: &MaildirSourceConfig) -> Result<Vec<(PathBuf, Outcome)>, String> {
    for d in folders(src) {
        std::fs::create_dir_all(&d).map_err(|e| format!("cannot make {}: {e}", d.display()))?;
    }
    let new = src.maildir.join("new");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
        .map_err(|e| format!("cannot read {}: {e}", new.display()))?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|f| {
            let outcome = read_one(src, &f);
            (f, outcome)
        })
        .collect())
}

fn read_one(src: &MaildirSourceConfig, file: &Path) -> Outcome {
    use std::io::Read;
    let mut raw = Vec::new();
    let read = std::fs::File::open(file).and_then(|f| f.take(MAX_MAIL + 1).read_to_end(&mut raw));
    if let Err(e) = read {
        return Outcome::Bad(format!("cannot read it: {e}"));
    }
    if raw.len() as u64 > MAX_MAIL {
        return Outcome::Bad(format!("larger than {} MiB", MAX_MAIL >> 20));
    }
    let parsed = match parse_mail(src.format, &raw, src.prefix.as_deref()) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Outcome::Ignored(format!(
                "no changed file lies under prefix {:?}",
                src.prefix.as_deref().unwrap_or("")
            ))
        }
        Err(e) => return Outcome::Bad(e.0),
    };
    let message_id = mailparse::parse_headers(&raw)
        .ok()
        .and_then(|(h, _)| h.get_first_value("Message-ID"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let digest = hex(ring::digest::digest(&ring::digest::SHA256, &raw).as_ref());
    let change = super::validate::fit(NewChange {
        who: parsed.who,
        files: parsed.files,
        comments: parsed.comments,
        revision: parsed.revision,
        branch: parsed.branch.or_else(|| src.branch.clone()),
        when: parsed.when.unwrap_or_else(crate::calendar::now),
        repository: src.repository.clone(),
        category: String::new(),
        links: Vec::new(),
        project: src.project.clone(),
    });
    Outcome::Change(Box::new(change), digest, message_id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Move a handled message to `cur/` (with the maildir's `:2,` info when it has none).
fn to_cur(src: &MaildirSourceConfig, file: &Path, name: &str) {
    let target = if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:2,")
    };
    let dest = src.maildir.join("cur").join(target);
    if let Err(e) = std::fs::rename(file, &dest) {
        tracing::error!(
            "change source {}: cannot move {} to {}: {e}",
            src.name,
            file.display(),
            dest.display()
        );
    }
}

/// Move a message that is no commit mail of the format to `bad/`, with the reason in
/// `bad/NAME.reason` and the log.
fn set_aside(src: &MaildirSourceConfig, file: &Path, name: &str, reason: &str) {
    let dest = src.maildir.join("bad").join(name);
    tracing::warn!(
        "change source {}: {name} is not a {} commit mail ({reason}); moved to {}",
        src.name,
        src.format.as_str(),
        dest.display()
    );
    if let Err(e) = std::fs::write(
        src.maildir.join("bad").join(format!("{name}.reason")),
        format!("{reason}\n"),
    ) {
        tracing::error!(
            "change source {}: cannot write the reason for {name}: {e}",
            src.name
        );
    }
    if let Err(e) = std::fs::rename(file, &dest) {
        tracing::error!(
            "change source {}: cannot move {} to {}: {e}",
            src.name,
            file.display(),
            dest.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVN_NEW: &[&str] = &[
        "From alice@example.org Mon Dec  7 05:27:24 2026",
        "Date: Mon,  7 Dec 2026 05:27:24 +0000",
        "To: dev@example.org",
        "From: alice@example.org",
        "Subject: r2 - in trunk: . sub",
        "Content-Type: text/plain; charset=UTF-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "Author: alice",
        "Date: 2026-12-07 05:27:24 +0000 (Mon, 07 Dec 2026)",
        "New Revision: 2",
        "",
        "Added:",
        "   trunk/a.c",
        "   trunk/sub/",
        "Modified:",
        "   trunk/b.c",
        "Log:",
        "Add a.c",
        "",
        "and more",
        "",
        "Added: trunk/a.c",
        "===================================================================",
        "--- trunk/a.c\t                        (rev 0)",
        "+++ trunk/a.c\t2026-12-07 05:27:24 UTC (rev 2)",
        "@@ -0,0 +1 @@",
        "+hi",
    ];

    #[test]
    fn reads_commit_email_pl() {
        let c = parse_mail(
            MailFormat::Svn,
            SVN_NEW.join("\n").as_bytes(),
            Some("trunk/"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.who, "alice");
        assert_eq!(c.revision.as_deref(), Some("2"));
        assert_eq!(c.files, vec!["a.c", "sub/", "b.c"]);
        assert_eq!(c.comments, "Add a.c\n\nand more\n");
        assert_eq!(c.when, Some(1_796_621_244));
        // Nothing under another prefix: no Change.
        assert_eq!(
            parse_mail(
                MailFormat::Svn,
                SVN_NEW.join("\n").as_bytes(),
                Some("branches/")
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn reads_the_old_order_of_commit_email_pl() {
        let m = "From: bob@example.org\nSubject: svn commit: r7 - trunk\n\n\
Author: bob\nDate: Sat Nov 20 00:17:49 2004\nNew Revision: 7\n\nLog:\nFix it\n\n\
Modified:\n   trunk/x.c\n\n\nModified: trunk/x.c\n=====\n";
        let c = parse_mail(MailFormat::Svn, m.as_bytes(), None)
            .unwrap()
            .unwrap();
        assert_eq!(c.files, vec!["trunk/x.c"]);
        assert_eq!(c.comments, "Fix it\n");
        assert_eq!(c.revision.as_deref(), Some("7"));
    }

    #[test]
    fn reads_syncmail() {
        let m = "From: carol@cvs.example.org\nSubject: proj/src main.c,1.2,1.3 util.c,1.1,1.2\n\
Date: Mon, 28 Jul 2003 00:22:02 -0700\n\n\
Update of /cvsroot/proj/src\nIn directory host:/tmp/cvs-serv1\n\n\
Modified Files:\n      Tag: BRANCH-1\n\tmain.c util.c \nAdded Files:\n\tnew.h \nLog Message:\nFix the build\non two lines\n\n\
Index: main.c\n=====\n";
        let c = parse_mail(MailFormat::Cvs, m.as_bytes(), Some("proj/"))
            .unwrap()
            .unwrap();
        assert_eq!(c.who, "carol");
        assert_eq!(c.files, vec!["src/main.c", "src/util.c", "src/new.h"]);
        assert_eq!(c.branch.as_deref(), Some("BRANCH-1"));
        assert_eq!(c.comments, "Fix the build\non two lines\n");
        assert_eq!(c.when, Some(1_059_376_922));
        assert_eq!(c.revision, None);
    }

    #[test]
    fn reads_launchpad_mail() {
        let m = "From: noreply@launchpad.net\nSubject: [Branch ~joe/proj/trunk] Rev 12: add\n\
Content-Type: text/plain; charset=\"utf-8\"\nContent-Transfer-Encoding: quoted-printable\n\n\
------------------------------------------------------------\n\
revno: 12\ncommitter: Joe <joe@acme.com>\nbranch nick: trunk\n\
timestamp: Fri 2009-05-15 10:35:43 +0200\nmessage:\n  add a file\n  caf=C3=A9\n\
added:\n  docs/new.txt\nmodified:\n  src/a.c\nrenamed:\n  old.c =3D> new.c\n\n--\n\n\
https://code.launchpad.net/~joe/proj/trunk\n";
        let c = parse_mail(MailFormat::Bzr, m.as_bytes(), None)
            .unwrap()
            .unwrap();
        assert_eq!(c.who, "Joe <joe@acme.com>");
        assert_eq!(c.revision.as_deref(), Some("12"));
        assert_eq!(c.files, vec!["docs/new.txt", "src/a.c", "old.c", "new.c"]);
        assert_eq!(c.comments, "add a file\ncafé\n");
        assert_eq!(c.when, Some(1_242_376_543));
    }

    #[test]
    fn reads_the_text_part_of_a_mime_mail() {
        use base64::Engine as _;
        let text = "revno: 3\ncommitter: Joe <joe@acme.com>\nmessage:\n  fix\nmodified:\n  a.c\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(text);
        let m = format!(
            "From: noreply@launchpad.net\nSubject: [Branch ~joe/p] Rev 3: fix\nMIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"XX\"\n\n--XX\nContent-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: base64\n\n{b64}\n--XX\nContent-Type: text/x-diff\n\n=== modified\n--XX--\n"
        );
        let c = parse_mail(MailFormat::Bzr, m.as_bytes(), None)
            .unwrap()
            .unwrap();
        assert_eq!(c.revision.as_deref(), Some("3"));
        assert_eq!(c.files, vec!["a.c"]);
        assert_eq!(c.comments, "fix\n");
    }

    #[test]
    fn refuses_what_is_not_a_commit_mail() {
        for f in [MailFormat::Svn, MailFormat::Cvs, MailFormat::Bzr] {
            let e = parse_mail(f, b"From: x@y\nSubject: hello\n\nJust saying hi.\n", None);
            assert!(e.is_err(), "{f:?}: {e:?}");
            assert!(parse_mail(f, b"\x00\x01garbage", None).is_err());
            assert!(parse_mail(f, b"", None).is_err());
        }
        let e = parse_mail(
            MailFormat::Svn,
            b"From: a@b\n\nAuthor: a\nNew Revision: --x\nLog:\nm\n",
            None,
        )
        .unwrap_err();
        assert!(e.0.contains("not a revision number"), "{e}");
    }
}
