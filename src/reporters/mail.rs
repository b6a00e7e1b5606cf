//! Mail: which finished builds are mailed to whom (Buildbot's MailNotifier:
//! `mailMode`, `recipients`, the blamelist through `mailLookup`), the message
//! (subject, plain-text UTF-8 body with the build's page, its Changes and Steps
//! and the tail of the first failing Step's log; Date and Message-ID fixed when
//! it is queued), the missing-slave mail, and delivery over SMTP with lettre
//! (tokio, rustls; `smtpTls`, `smtpUser`/`smtpPassword`, `smtpCA`).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use crate::config::mail::{MailConfig, MailMode, SlaveNotify, SmtpTls};
use crate::config::MasterConfig;
use crate::db::builds::BuildDetail;
use crate::db::notifications::{BuildToAnnounce, NewNotification};
use crate::db::slaves::SlaveRow;
use crate::db::{Db, DbError};

/// Lines of the first failing Step's log the mail quotes.
pub const LOG_TAIL_LINES: usize = 40;

/// How long one SMTP exchange may take before it counts as failed.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(60);

/// The envelope stored with a queued mail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeMeta {
    pub from: String,
    pub to: Vec<String>,
}

/// The address an author is mailed at: `Name <a@b>` → `a@b`, `a@b` → `a@b`,
/// `name` → `name@LOOKUP` with a `mailLookup`, else none.
pub fn author_address(who: &str, lookup: Option<&str>) -> Option<Address> {
    let who = who.trim();
    if let Ok(mb) = who.parse::<Mailbox>() {
        return Some(mb.email);
    }
    if let (Some(l), Some(b)) = (who.rfind('<'), who.rfind('>')) {
        if l < b {
            if let Ok(a) = who[l + 1..b].trim().parse::<Address>() {
                return Some(a);
            }
        }
    }
    if who.contains('@') || who.is_empty() {
        return None;
    }
    let lookup = lookup?;
    let user: String = who
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '<' && *c != '>')
        .collect();
    format!("{user}@{lookup}").parse().ok()
}

/// The mail for a finished build, if its notifier wants one and there is
/// anyone to send it to.
pub async fn decide(
    db: &Db,
    cfg: &MasterConfig,
    b: &BuildToAnnounce,
    skipped_authors: &mut HashSet<String>,
) -> Result<Option<NewNotification>, DbError> {
    let Some(result) = b.result.as_deref() else {
        return Ok(None);
    };
    if !cfg.mail.enabled {
        return Ok(None);
    }
    let Some(bc) = cfg.builders().into_iter().find(|x| x.name == b.builder) else {
        return Ok(None);
    };
    let (recipients, modes) = cfg.mail.notifier_for(cfg, &bc.factory);
    let previous = if modes
        .iter()
        .any(|m| matches!(m, MailMode::Problem | MailMode::Change))
    {
        db.previous_result(&b.builder, b.number).await?
    } else {
        None
    };
    if !modes.iter().any(|m| m.wants(result, previous.as_deref())) {
        return Ok(None);
    }
    let Some(detail) = db.build(&b.builder, b.number).await? else {
        return Ok(None);
    };
    let mut to: Vec<Address> = recipients
        .iter()
        .filter_map(|r| r.parse::<Address>().ok())
        .collect();
    let mut blamelist: Vec<String> = Vec::new();
    for c in &detail.changes {
        if !blamelist.contains(&c.who) {
            blamelist.push(c.who.clone());
        }
    }
    if cfg.mail.send_to_interested_users {
        for who in &blamelist {
            match author_address(who, cfg.mail.lookup.as_deref()) {
                Some(a) => to.push(a),
                None => {
                    if skipped_authors.insert(who.clone()) {
                        tracing::info!(
                            "mail: author {who:?} has no mail address and no mailLookup domain applies; not mailed (set mailLookup in [:master:])"
                        );
                    }
                }
            }
        }
    }
    let mut seen = HashSet::new();
    to.retain(|a| seen.insert(a.to_string().to_ascii_lowercase()));
    if to.is_empty() {
        return Ok(None);
    }
    let tail = match failing_step(&detail) {
        Some((step, log)) => {
            let file = db
                .log_file(&b.builder, b.number, &step.to_string(), &log)
                .await?;
            match file {
                Some(f) => {
                    let path = f.path.clone();
                    tokio::task::spawn_blocking(move || log_tail(&path, LOG_TAIL_LINES))
                        .await
                        .ok()
                        .flatten()
                        .map(|t| (step, log, t))
                }
                None => None,
            }
        }
        None => None,
    };
    match build_message(cfg, &bc.factory, &detail, &blamelist, &to, tail) {
        Ok(n) => Ok(Some(n)),
        Err(e) => {
            tracing::warn!(
                "{} build {}: cannot make its mail: {e}",
                b.builder,
                b.number
            );
            Ok(None)
        }
    }
}

/// The first Step that failed (or hit an exception) and its main log's name.
fn failing_step(d: &BuildDetail) -> Option<(i64, String)> {
    let s = d
        .steps
        .iter()
        .find(|s| matches!(s.result.as_deref(), Some("failure" | "exception")))?;
    let log = s
        .logs
        .iter()
        .find(|l| l.name == "stdio")
        .or_else(|| s.logs.first())?;
    Some((s.number, log.name.clone()))
}

/// The last `lines` lines of a log file (bytes that are not UTF-8 replaced).
pub fn log_tail(path: &Path, lines: usize) -> Option<String> {
    const WINDOW: u64 = 64 * 1024;
    // Either form of the log: as written, or compressed (logCompression).
    let buf = crate::logstore::read_tail(path, WINDOW).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let text = text.trim_end_matches('\n');
    let all: Vec<&str> = text.split('\n').collect();
    let from = all.len().saturating_sub(lines);
    Some(all[from..].join("\n"))
}

/// The build's page: `buildbotURL` + `builders/B/builds/N`.
pub fn build_url(cfg: &MasterConfig, builder: &str, number: i64) -> String {
    let base = if cfg.buildbot_url.is_empty() {
        cfg.html_listen().local_url()
    } else {
        cfg.buildbot_url.clone()
    };
    crate::links::under(&base, &crate::links::build_path(builder, number))
}

fn project_of(cfg: &MasterConfig, factory: &str) -> String {
    if cfg.project_name.is_empty() {
        factory.to_string()
    } else {
        cfg.project_name.clone()
    }
}

/// The domain a Message-ID is made in: `mailFrom`'s.
fn id_domain(from: &Mailbox) -> String {
    from.email.domain().to_string()
}

fn message_id(from: &Mailbox, what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "<autobot.{what}.{nanos:x}.{}@{}>",
        std::process::id(),
        id_domain(from)
    )
}

fn finish(
    cfg: &MailConfig,
    to: &[Address],
    subject: String,
    body: String,
    what: &str,
    target_note: &str,
) -> Result<NewNotification, String> {
    let from: Mailbox = cfg.from.parse().map_err(|e| format!("mailFrom: {e}"))?;
    let id = message_id(&from, what);
    let mut m = Message::builder()
        .from(from.clone())
        .subject(subject)
        .message_id(Some(id.clone()))
        .date_now()
        .header(lettre::message::header::MIME_VERSION_1_0)
        .header(ContentType::TEXT_PLAIN);
    for a in to {
        m = m.to(Mailbox::new(None, a.clone()));
    }
    let msg = m.body(body).map_err(|e| e.to_string())?;
    let meta = EnvelopeMeta {
        from: from.email.to_string(),
        to: to.iter().map(|a| a.to_string()).collect(),
    };
    Ok(NewNotification {
        kind: "mail".to_string(),
        target: format!("{}{target_note}", meta.to.join(", ")),
        payload: msg.formatted(),
        meta: serde_json::to_string(&meta).map_err(|e| e.to_string())?,
        message_id: Some(id),
    })
}

/// The mail of a finished build (Buildbot 0.7's MailNotifier message, with the
/// Changes, the Steps and the failing log's tail).
pub fn build_message(
    cfg: &MasterConfig,
    factory: &str,
    d: &BuildDetail,
    blamelist: &[String],
    to: &[Address],
    tail: Option<(i64, String, String)>,
) -> Result<NewNotification, String> {
    let b = &d.build;
    let result = b.result.as_deref().unwrap_or("unknown");
    let project = project_of(cfg, factory);
    let subject = format!(
        "autobot {result} in {project} on {}, build {}",
        b.builder, b.number
    );
    let url = build_url(cfg, &b.builder, b.number);
    let mut body = String::new();
    let what = match result {
        "success" => "a passing build",
        "warnings" => "a build with warnings",
        "failure" => "a failed build",
        "exception" => "a build exception",
        "cancelled" => "a stopped build",
        _ => "a finished build",
    };
    body.push_str(&format!(
        "The autobot has detected {what} of {} while building {project}.\n\
         Full details are available at:\n    {url}\n\n",
        b.builder
    ));
    if !cfg.buildbot_url.is_empty() {
        body.push_str(&format!("Autobot URL: {}\n\n", cfg.buildbot_url));
    }
    body.push_str(&format!("Buildslave for this Build: {}\n\n", b.slave));
    body.push_str(&format!("Build Reason: {}\n", b.reason));
    let mut stamp = String::new();
    if let Some(br) = d.branch.as_deref().filter(|s| !s.is_empty()) {
        stamp.push_str(&format!("[branch {br}] "));
    }
    let got = d.properties.get("got_revision").map(|(v, _)| v.as_str());
    match d
        .revision
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(got.filter(|s| !s.is_empty()))
    {
        Some(r) => stamp.push_str(r),
        None => stamp.push_str("HEAD"),
    }
    body.push_str(&format!("Build Source Stamp: {stamp}\n"));
    body.push_str(&format!("Blamelist: {}\n\n", blamelist.join(", ")));
    body.push_str(&format!(
        "Build {}: {}\n\n",
        result.to_ascii_uppercase(),
        b.text
    ));
    if !d.changes.is_empty() {
        body.push_str("Changes:\n\n");
        for c in &d.changes {
            body.push_str(&format!(
                "  Revision: {}\n  Author: {}\n",
                c.revision.as_deref().unwrap_or("-"),
                c.who
            ));
            if let Some(br) = c.branch.as_deref().filter(|s| !s.is_empty()) {
                body.push_str(&format!("  Branch: {br}\n"));
            }
            body.push_str("  Comments:\n");
            for l in c.comments.lines() {
                body.push_str(&format!("    {l}\n"));
            }
            if !c.files.is_empty() {
                body.push_str("  Files:\n");
                for f in &c.files {
                    body.push_str(&format!("    {f}\n"));
                }
            }
            body.push('\n');
        }
    }
    body.push_str("Steps:\n\n");
    for s in &d.steps {
        body.push_str(&format!(
            "  {:<20} {:<10} {}\n",
            s.name,
            s.result.as_deref().unwrap_or("not run"),
            s.text
        ));
    }
    body.push('\n');
    if let Some((step, log, text)) = tail {
        let name = d
            .steps
            .iter()
            .find(|s| s.number == step)
            .map_or("?", |s| s.name.as_str());
        body.push_str(&format!(
            "The last {LOG_TAIL_LINES} lines of the log {log} of step {name}:\n\n"
        ));
        for l in text.split('\n') {
            body.push_str(&format!("  {}\n", l.trim_end_matches('\r')));
        }
        body.push('\n');
    }
    body.push_str("sincerely,\n -The Autobot\n");
    finish(
        &cfg.mail,
        to,
        subject,
        body,
        &format!("{}.{}", b.builder, b.number),
        "",
    )
}

/// The mail for a slave missing longer than its `missingTimeout` (Buildbot's
/// BuildSlave `notify_on_missing` message).
pub fn missing_slave(
    cfg: &MasterConfig,
    name: &str,
    n: &SlaveNotify,
    row: Option<SlaveRow>,
) -> Result<NewNotification, String> {
    let to: Vec<Address> = n
        .notify_on_missing
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let project = if cfg.project_name.is_empty() {
        "autobot".to_string()
    } else {
        cfg.project_name.clone()
    };
    let subject = format!("autobot: slave {name} was lost");
    let mut body = format!(
        "The autobot working for '{project}' has noticed that the slave named {name} went away.\n\n"
    );
    match row.as_ref().and_then(|r| r.last_seen) {
        Some(t) => body.push_str(&format!(
            "It was last seen at {} and has been gone for more than {} seconds.\n\n",
            httpdate::fmt_http_date(
                std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0))
            ),
            n.missing_timeout
        )),
        None => body.push_str(&format!(
            "It has not connected for more than {} seconds.\n\n",
            n.missing_timeout
        )),
    }
    if let Some(admin) = row.as_ref().and_then(|r| r.admin.as_deref()) {
        body.push_str(&format!(
            "The admin on record (as reported by the slave's info/admin) was '{}'.\n\n",
            admin.trim()
        ));
    }
    if let Some(reason) = row.as_ref().and_then(|r| r.disconnect_reason.as_deref()) {
        body.push_str(&format!("Its last connection ended: {reason}\n\n"));
    }
    body.push_str("sincerely,\n -The Autobot\n");
    if !cfg.buildbot_url.is_empty() {
        body.push_str(&format!(" {}\n", cfg.buildbot_url));
    }
    finish(
        &cfg.mail,
        &to,
        subject,
        body,
        &format!("missing.{name}"),
        &format!(" (slave {name} missing)"),
    )
}

/// Why a delivery failed.
#[derive(Debug)]
pub struct SendError {
    /// The server said no for good (5xx): retrying will not help.
    pub permanent: bool,
    pub message: String,
}

/// Send one stored mail with the transport settings of `cfg`; the server's
/// answer on success.
pub async fn send(cfg: &MasterConfig, meta: &str, payload: &[u8]) -> Result<String, SendError> {
    let err = |permanent, message: String| SendError { permanent, message };
    let meta: EnvelopeMeta =
        serde_json::from_str(meta).map_err(|e| err(true, format!("bad stored envelope: {e}")))?;
    let from: Address = meta
        .from
        .parse()
        .map_err(|e| err(true, format!("bad sender {}: {e}", meta.from)))?;
    let to: Vec<Address> = meta.to.iter().filter_map(|a| a.parse().ok()).collect();
    let envelope = lettre::address::Envelope::new(Some(from), to)
        .map_err(|e| err(true, format!("bad envelope: {e}")))?;
    let m = &cfg.mail;
    let tls = match m.smtp_tls {
        SmtpTls::None => Tls::None,
        mode => {
            let mut b = TlsParameters::builder(m.smtp_host.clone());
            if let Some(ca) = &m.smtp_ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| err(false, format!("smtpCA {}: {e}", ca.display())))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| err(false, format!("smtpCA {}: {e}", ca.display())))?;
                b = b.add_root_certificate(cert);
            }
            let p = b
                .build_rustls()
                .map_err(|e| err(false, format!("TLS setup: {e}")))?;
            match mode {
                SmtpTls::Auto => Tls::Opportunistic(p),
                SmtpTls::StartTls => Tls::Required(p),
                _ => Tls::Wrapper(p),
            }
        }
    };
    let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(m.smtp_host.clone())
        .port(m.smtp_port)
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT));
    if let (Some(u), Some(p)) = (&m.smtp_user, &m.smtp_password) {
        t = t.credentials(Credentials::new(u.clone(), p.clone()));
    }
    let transport = t.build();
    // lettre's timeout covers each read and write; this bounds the whole exchange.
    match tokio::time::timeout(SMTP_TIMEOUT * 2, transport.send_raw(&envelope, payload)).await {
        Ok(Ok(r)) => Ok(format!(
            "{} {}",
            r.code(),
            r.message().collect::<Vec<_>>().join(" ")
        )),
        Ok(Err(e)) => Err(err(e.is_permanent(), e.to_string())),
        Err(_) => Err(err(
            false,
            format!(
                "no answer from {}:{} within {} s",
                m.smtp_host,
                m.smtp_port,
                (SMTP_TIMEOUT * 2).as_secs()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_map_to_addresses() {
        let a = |w, l| author_address(w, l).map(|a| a.to_string());
        assert_eq!(a("Jörg <j@x.org>", None).as_deref(), Some("j@x.org"));
        assert_eq!(a("a@b.org", None).as_deref(), Some("a@b.org"));
        assert_eq!(a("alice", Some("ex.org")).as_deref(), Some("alice@ex.org"));
        assert_eq!(a("alice", None), None);
        assert_eq!(a("", Some("ex.org")), None);
    }

    #[test]
    fn tails_keep_the_last_lines_of_bytes_that_are_not_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let mut data = Vec::new();
        for i in 0..100 {
            data.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        data.extend_from_slice(b"bad \xff byte\n");
        std::fs::write(&p, &data).unwrap();
        let t = log_tail(&p, 3).unwrap();
        assert_eq!(t, "line 98\nline 99\nbad \u{fffd} byte");
    }
}
