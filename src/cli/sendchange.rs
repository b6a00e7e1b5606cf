//! `autobot sendchange`: tell a master about a Change by hand or from a VCS hook,
//! as Buildbot's `buildbot sendchange` does.
//!
//! The Change goes to the master's `slaveport` (the `--master HOST:PORT` of the
//! manual): a WebSocket on [`CHANGE_PATH`] with `changeuser`/`changepassword`
//! (`--auth USER:PASS`; there is no default pair) as HTTP Basic, one JSON message,
//! one reply. `--master`, `--username` and `--auth` may instead come from a
//! `.autobot/options` file (keys `master`, `username`, `auth`), found by crawling
//! up from the current directory (then `~/.autobot`), whose `key = value` lines
//! also accept Buildbot's Python spelling (`master = 'h:9989'`). An options file
//! that holds `auth` must be readable by its owner alone.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use clap::Args;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::changes::submit::{ChangeSubmission, SubmitReply, CHANGE_PATH};

/// How long connecting to the master and waiting for its answer may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The directory, under the current one or an ancestor, holding `options`.
pub const OPTIONS_DIR: &str = ".autobot";

/// A revision that `vc` could have made (Buildbot's `--vc` names the system so
/// the revision is read as one of its own).
fn check_revision(vc: &str, rev: &str) -> anyhow::Result<()> {
    let ok = match vc {
        "svn" => !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()),
        "bzr" => {
            (!rev.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()))
                || rev
                    .strip_prefix("revid:")
                    .is_some_and(|id| !id.is_empty() && !id.chars().any(char::is_whitespace))
        }
        "cvs" => crate::changes::parse_cvs_date(rev).is_some(),
        "arch" => is_arch_revision(rev),
        _ => (4..=64).contains(&rev.len()) && rev.bytes().all(|b| b.is_ascii_hexdigit()),
    };
    if !ok {
        let what = match vc {
            "svn" => "a revision number (e.g. 1234)",
            "bzr" => "a revno (e.g. 42) or revid:…",
            "cvs" => "a CVS date (e.g. \"2026-12-07 05:25:02 +0000\")",
            "arch" => "a fully qualified Arch revision (e.g. ann@example.org--2026/proj--main--1.0--patch-3)",
            _ => "a hex commit id",
        };
        bail!("--vc {vc}: the revision {rev:?} is not {what}; give --revision with the commit's revision");
    }
    Ok(())
}

/// `ARCHIVE/CATEGORY--BRANCH--VERSION--LEVEL`, LEVEL `base-0`, `patch-N`,
/// `version-N` or `versionfix-N`.
fn is_arch_revision(rev: &str) -> bool {
    let Some((archive, name)) = rev.split_once('/') else {
        return false;
    };
    let Some((_, level)) = name.rsplit_once("--") else {
        return false;
    };
    let level_ok = ["base-", "patch-", "versionfix-", "version-"]
        .iter()
        .any(|p| {
            level
                .strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
    !archive.is_empty() && name.matches("--").count() >= 2 && level_ok && !rev.contains(' ')
}

/// Refuse an options file that holds a password and that group or others may read.
pub(super) fn private_options(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} holds `auth` (a password) but others can read it (mode {:03o}); make it private with `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct SendchangeArgs {
    /// The master's slaveport, HOST:PORT [default: `master` in .autobot/options].
    #[arg(short = 'm', long)]
    pub master: Option<String>,
    /// Who made the Change [default: `username` in .autobot/options].
    #[arg(short = 'u', long, alias = "who")]
    pub username: Option<String>,
    /// changeuser:changepassword of the master's `[:master:]` section [default: `auth`
    /// in .autobot/options (a file only you can read)].
    #[arg(short = 'a', long, value_name = "USER:PASS")]
    pub auth: Option<String>,
    /// Branch of the Change [default: the factory's branch].
    #[arg(short = 'b', long)]
    pub branch: Option<String>,
    /// Revision of the Change.
    #[arg(short = 'r', long, conflicts_with = "revision_file")]
    pub revision: Option<String>,
    /// Read the revision from this file.
    #[arg(long, alias = "revision_file", value_name = "FILE")]
    pub revision_file: Option<PathBuf>,
    /// The Change's comments (its commit message).
    #[arg(short = 'c', long, conflicts_with = "logfile")]
    pub comments: Option<String>,
    /// Read the comments from this file; `-` reads standard input.
    #[arg(short = 'F', long, value_name = "FILE")]
    pub logfile: Option<PathBuf>,
    /// Category of the Change.
    #[arg(short = 'C', long)]
    pub category: Option<String>,
    /// Repository URL of the Change.
    #[arg(short = 'R', long)]
    pub repository: Option<String>,
    /// Project of the Change.
    #[arg(short = 'P', long)]
    pub project: Option<String>,
    /// When the Change was made, unix seconds [default: when the master gets it].
    #[arg(short = 'w', long)]
    pub when: Option<i64>,
    /// The version-control system of the repository (git, hg, svn, bzr, darcs,
    /// cvs or arch): the revision must be one of its revisions (svn: a revision
    /// number; bzr: a revno or revid:…; git, hg and darcs: a hex commit id or patch
    /// hash; cvs: a date such as "2026-12-07 05:25:02 +0000"; arch: a fully
    /// qualified revision ARCHIVE/VERSION--patch-N), checked before the Change is
    /// sent.
    #[arg(long, value_parser = ["git", "hg", "svn", "bzr", "darcs", "cvs", "arch"])]
    pub vc: Option<String>,
    /// Files the Change touched.
    #[arg(value_name = "FILES")]
    pub files: Vec<String>,
}

/// Run `autobot sendchange`.
pub fn sendchange_cmd(args: &SendchangeArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let options = match find_options(&cwd, home.as_deref()) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some((path, parse_options(&text)))
        }
        None => None,
    };
    let from_options = |key: &str| {
        options
            .as_ref()
            .and_then(|(_, o)| o.get(key).cloned())
            .filter(|v| !v.is_empty())
    };
    let master = args
        .master
        .clone()
        .or_else(|| from_options("master"))
        .ok_or_else(|| {
            anyhow!(
                "which master? give --master HOST:PORT (the master's slaveport), or write \
             `master = HOST:PORT` in {OPTIONS_DIR}/options in this directory, a parent \
             of it, or your home directory"
            )
        })?;
    let who = args
        .username
        .clone()
        .or_else(|| from_options("username"))
        .ok_or_else(|| {
            anyhow!(
                "who made the Change? give --username WHO, or write `username = WHO` in \
             {OPTIONS_DIR}/options"
            )
        })?;
    let (host, port) = split_host_port(&master)?;
    let revision = match (&args.revision, &args.revision_file) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the revision file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    if let (Some(vc), Some(rev)) = (&args.vc, &revision) {
        check_revision(vc, rev)?;
    }
    let comments = match (&args.comments, &args.logfile) {
        (Some(c), _) => c.clone(),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the comments from standard input")?;
            s
        }
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the log file {}", f.display()))?,
        (None, None) => String::new(),
    };
    let change = ChangeSubmission {
        who,
        files: args.files.clone(),
        comments,
        revision,
        branch: args.branch.clone(),
        when: args.when,
        repository: args.repository.clone().unwrap_or_default(),
        category: args.category.clone().unwrap_or_default(),
        project: args.project.clone().unwrap_or_default(),
        links: Vec::new(),
    };
    let auth = match (&args.auth, from_options("auth")) {
        (Some(a), _) => a.clone(),
        (None, Some(a)) => {
            if let Some((path, _)) = &options {
                private_options(path)?;
            }
            a
        }
        (None, None) => {
            return Err(anyhow!(
                "which credentials? give --auth USER:PASS (changeuser and changepassword of the \
                 master's [:master:]), or write `auth = USER:PASS` in {OPTIONS_DIR}/options"
            ))
        }
    };
    let stored = send(&host, port, &auth, &change)?;
    println!(
        "change {} sent to {host}:{port} (by {}{}{})",
        stored.id,
        stored.who,
        stored
            .branch
            .as_deref()
            .map(|b| format!(", branch {b}"))
            .unwrap_or_default(),
        stored
            .revision
            .as_deref()
            .map(|r| format!(", revision {r}"))
            .unwrap_or_default(),
    );
    Ok(())
}

/// Deliver one Change to the slaveport at `host:port`; the stored Change.
pub fn send(
    host: &str,
    port: u16,
    auth: &str,
    change: &ChangeSubmission,
) -> anyhow::Result<crate::changes::submit::StoredChange> {
    if !auth.contains(':') {
        bail!("--auth must be USER:PASS (the changeuser and changepassword of the master)");
    }
    let text = serde_json::to_string(change)?;
    let reply = exchange(
        host,
        port,
        CHANGE_PATH,
        auth,
        text,
        "change",
        " (pass --auth USER:PASS matching changeuser/changepassword in its master.ini)",
    )?;
    match serde_json::from_str::<SubmitReply>(&reply)
        .with_context(|| format!("the master's answer is not understood: {reply}"))?
    {
        SubmitReply::Change(c) => Ok(*c),
        SubmitReply::Error(e) => bail!("the master refused the Change: {e}"),
    }
}

/// Send one JSON message (`text`) to the slaveport's WebSocket `path` with HTTP
/// Basic `auth` (USER:PASS) and return the master's one answer; `what` names the
/// message in errors, `hint` follows a refusal of the credentials.
pub(super) fn exchange(
    host: &str,
    port: u16,
    path: &str,
    auth: &str,
    text: String,
    what: &str,
    hint: &str,
) -> anyhow::Result<String> {
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the master's host {host:?}"))?
        .next()
        .ok_or_else(|| anyhow!("the master's host {host:?} has no address"))?;
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| {
        anyhow!("cannot reach the master at {host}:{port} ({e}); is it running, and is {port} its slaveport?")
    })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let url = if host.contains(':') {
        format!("ws://[{host}]:{port}{path}")
    } else {
        format!("ws://{host}:{port}{path}")
    };
    let mut req = url
        .into_client_request()
        .with_context(|| format!("bad master address {host}:{port}"))?;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(auth)
    );
    req.headers_mut().insert(
        "authorization",
        basic
            .parse()
            .map_err(|_| anyhow!("the credentials cannot be sent in an HTTP header"))?,
    );
    let (mut socket, _) = tungstenite::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            if resp.status() == 401 {
                // The hint once: a master of this version already gives it.
                let hint = if body.contains("--") { "" } else { hint };
                anyhow!("the master at {host}:{port} refused the {what} credentials: {body}{hint}")
            } else {
                anyhow!(
                    "the master at {host}:{port} answered HTTP {}: {body}",
                    resp.status()
                )
            }
        }
        tungstenite::HandshakeError::Failure(e) => {
            anyhow!("talking to {host}:{port} failed: {e} (is it the master's slaveport?)")
        }
        tungstenite::HandshakeError::Interrupted(_) => {
            anyhow!("the handshake with {host}:{port} was interrupted")
        }
    })?;
    socket
        .send(Message::text(text))
        .with_context(|| format!("sending the {what} to {host}:{port}"))?;
    let reply = loop {
        match socket.read() {
            Ok(Message::Text(t)) => break t.to_string(),
            Ok(Message::Binary(b)) => break String::from_utf8_lossy(&b).into_owned(),
            Ok(Message::Close(_)) => bail!("the master closed the connection without an answer"),
            Ok(_) => continue,
            Err(e) => bail!("no answer from the master at {host}:{port}: {e}"),
        }
    };
    let _ = socket.close(None);
    let _ = socket.flush();
    Ok(reply)
}

/// `HOST:PORT` (or `[IPv6]:PORT`) into its parts (public for the fuzz tests).
pub fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let bad = || anyhow!("--master must be HOST:PORT (the master's slaveport), not {s:?}");
    let (host, port) = s.trim().rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok((host.to_string(), port))
}

/// The `options` file of the nearest `.autobot` directory: the current directory,
/// then each parent up to the home directory (or the root, when `cwd` is not under
/// home), then home itself.
pub fn find_options(cwd: &Path, home: Option<&Path>) -> Option<PathBuf> {
    let mut dirs: Vec<&Path> = Vec::new();
    for dir in cwd.ancestors() {
        dirs.push(dir);
        if Some(dir) == home {
            break;
        }
    }
    if let Some(h) = home {
        if !dirs.contains(&h) {
            dirs.push(h);
        }
    }
    dirs.into_iter()
        .map(|d| d.join(OPTIONS_DIR).join("options"))
        .find(|p| p.is_file())
}

/// `key = value` lines; `#` starts a comment; a value may be quoted with `'` or
/// `"` (Buildbot's options file is Python). Keys are lower-cased.
pub fn parse_options(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = match value.chars().next() {
            Some(q @ ('\'' | '"')) => match value[1..].find(q) {
                Some(end) => value[1..1 + end].to_string(),
                None => value[1..].to_string(),
            },
            _ => value.split('#').next().unwrap_or("").trim().to_string(),
        };
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_accept_plain_and_python_values() {
        let o = parse_options(
            "# who and where\nmaster = 'localhost:9989'\nusername=\"Ann <a@x>\"  # me\n\
             branch = main # trailing\nnot a key line\nUserName2 = x\n",
        );
        assert_eq!(o["master"], "localhost:9989");
        assert_eq!(o["username"], "Ann <a@x>");
        assert_eq!(o["branch"], "main");
        assert_eq!(o["username2"], "x");
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn options_are_found_upwards_and_in_home() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        let deep = home.join("src/proj/sub");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(find_options(&deep, Some(&home)), None);
        std::fs::create_dir_all(home.join(".autobot")).unwrap();
        std::fs::write(home.join(".autobot/options"), "master = h:1\n").unwrap();
        assert_eq!(
            find_options(&deep, Some(&home)),
            Some(home.join(".autobot/options"))
        );
        std::fs::create_dir_all(home.join("src/proj/.autobot")).unwrap();
        std::fs::write(home.join("src/proj/.autobot/options"), "").unwrap();
        assert_eq!(
            find_options(&deep, Some(&home)),
            Some(home.join("src/proj/.autobot/options"))
        );
        // Outside home: ancestors up to the root, then home.
        let other = t.path().join("elsewhere");
        std::fs::create_dir_all(&other).unwrap();
        assert_eq!(
            find_options(&other, Some(&home)),
            Some(home.join(".autobot/options"))
        );
    }

    #[test]
    fn master_addresses_split() {
        assert_eq!(
            split_host_port("localhost:9010").unwrap(),
            ("localhost".to_string(), 9010)
        );
        assert_eq!(
            split_host_port("[::1]:9010").unwrap(),
            ("::1".to_string(), 9010)
        );
        assert!(split_host_port("localhost").is_err());
        assert!(split_host_port(":9010").is_err());
        assert!(split_host_port("h:x").is_err());
    }
}
