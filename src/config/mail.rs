//! The notification keys of `master.ini` (Buildbot's MailNotifier, a slave's
//! `notifyOnMissing`, and commit status on the forges), read and validated with
//! the rest of the file so every mistake is a `file:line` error at `checkconfig`.
//!
//! `[:master:]` holds the mail transport and the default notifier (`recipients`,
//! `mailMode`, `sendToInterestedUsers`, `mailLookup`, `mailFrom`, `smtpHost`,
//! `smtpPort`, `smtpUser`, `smtpPassword`, `smtpTls`, `smtpCA`); a factory section may set
//! its own `recipients` and `mailMode` (they replace the master's for its builds)
//! and `statusPush`, `statusPushURL`, `statusPushToken`; a `[slave:NAME]` (or
//! `[:master:]` for every slave) `notifyOnMissing` and `missingTimeout`. The
//! reporters (`crate::reporters`) read only the [`MailConfig`] made here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::read::{parse_bool, parse_int, parse_list, parse_port, section_err, vals, Layered, Val};
use super::{ini, ConfigError, MasterConfig};

/// `[:master:]` keys of the mail notifier (lower-case), accepted with the others.
pub(super) const MASTER_MAIL_KEYS: &[&str] = &[
    "mailmode",
    "sendtointerestedusers",
    "maillookup",
    "mailfrom",
    "smtphost",
    "smtpport",
    "smtpuser",
    "smtppassword",
    "smtptls",
    "smtpca",
];

/// `[slave:NAME]` keys (lower-case), which `[:master:]` may set for every slave.
pub(super) const SLAVE_MAIL_KEYS: &[&str] = &["notifyonmissing", "missingtimeout"];

/// Factory keys of this module (lower-case); their specs are in
/// `factory::schema::COMMON`.
pub(super) const FACTORY_KEYS: &[&str] = &[
    "recipients",
    "mailmode",
    "statuspush",
    "statuspushurl",
    "statuspushtoken",
];

/// When a finished build is mailed (the 0.7 MailNotifier's modes, and `change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MailMode {
    /// Every build.
    All,
    /// Builds that failed.
    Failing,
    /// Builds that succeeded.
    Passing,
    /// Builds that ended with warnings.
    Warnings,
    /// Builds that ended in an exception.
    Exception,
    /// A failed build whose builder's previous build did not fail.
    Problem,
    /// A build whose result differs from its builder's previous build.
    Change,
}

impl MailMode {
    /// Every mode with its word, in the order the documentation lists them.
    pub const ALL: &'static [(&'static str, MailMode)] = &[
        ("all", MailMode::All),
        ("failing", MailMode::Failing),
        ("passing", MailMode::Passing),
        ("warnings", MailMode::Warnings),
        ("exception", MailMode::Exception),
        ("problem", MailMode::Problem),
        ("change", MailMode::Change),
    ];

    pub fn as_str(self) -> &'static str {
        MailMode::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("all", |(w, _)| w)
    }

    /// Whether a build that ended with `result`, after a previous build of its
    /// builder that ended with `previous` (`None`: none before), is mailed. A
    /// `cancelled` build (an operator stopped it) is no failure: only `all`
    /// mails it, and the previous result is looked up past cancelled builds.
    pub fn wants(self, result: &str, previous: Option<&str>) -> bool {
        match self {
            MailMode::All => true,
            MailMode::Failing => result == "failure",
            MailMode::Passing => result == "success",
            MailMode::Warnings => result == "warnings",
            MailMode::Exception => result == "exception",
            MailMode::Problem => result == "failure" && previous != Some("failure"),
            // A stopped build (`cancelled`) is no change of the tree's state.
            MailMode::Change => result != "cancelled" && previous.is_some_and(|p| p != result),
        }
    }
}

/// How the SMTP connection is secured (`smtpTls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// STARTTLS when the server offers it, plain otherwise.
    #[default]
    Auto,
    /// STARTTLS, and fail when the server does not offer it.
    StartTls,
    /// TLS from the first byte (port 465 style).
    Tls,
    /// Never TLS.
    None,
}

impl SmtpTls {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::Auto => "auto",
            SmtpTls::StartTls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }
}

/// The forge a factory's commit statuses go to (`statusPush`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    Github,
    Gitea,
    Gitlab,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Github => "github",
            Forge::Gitea => "gitea",
            Forge::Gitlab => "gitlab",
        }
    }
}

/// A factory's commit-status settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPush {
    pub forge: Forge,
    /// API base without a trailing `/` (`https://api.github.com`).
    pub api_url: String,
    /// The file that holds the token (absolute); read at each request, so a
    /// rotated token needs no reconfig.
    pub token_file: PathBuf,
    /// The repository on the forge: `owner/name` (GitLab: the project path),
    /// from the factory's first source.
    pub repo: String,
}

/// A factory's own notification settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FactoryNotify {
    /// Replaces the master's `recipients` for this factory's builds.
    pub recipients: Option<Vec<String>>,
    /// Replaces the master's `mailMode` for this factory's builds.
    pub modes: Option<Vec<MailMode>>,
    pub status_push: Option<StatusPush>,
}

/// A slave's `notifyOnMissing` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveNotify {
    pub notify_on_missing: Vec<String>,
    /// Seconds the slave must be gone before the mail (`missingTimeout`).
    pub missing_timeout: u64,
}

/// Everything the reporters need from `master.ini`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailConfig {
    /// Whether build mail is on: `recipients` (master or factory), `mailLookup`
    /// or `sendToInterestedUsers = true` written. A master that says nothing
    /// about mail sends none.
    pub enabled: bool,
    pub modes: Vec<MailMode>,
    pub send_to_interested_users: bool,
    /// Domain appended to an author without `@`.
    pub lookup: Option<String>,
    pub from: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<String>,
    pub smtp_tls: SmtpTls,
    /// `smtpCA = FILE`: PEM certificates trusted for the SMTP server besides the
    /// public roots (a relay with a certificate from a private CA).
    pub smtp_ca: Option<PathBuf>,
    /// By factory name (only factories that set something).
    pub factories: BTreeMap<String, FactoryNotify>,
    /// By slave name (only slaves with `notifyOnMissing`).
    pub slaves: BTreeMap<String, SlaveNotify>,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            enabled: false,
            modes: vec![MailMode::All],
            send_to_interested_users: true,
            lookup: None,
            from: "autobot@localhost".to_string(),
            smtp_host: "localhost".to_string(),
            smtp_port: 25,
            smtp_user: None,
            smtp_password: None,
            smtp_tls: SmtpTls::Auto,
            smtp_ca: None,
            factories: BTreeMap::new(),
            slaves: BTreeMap::new(),
        }
    }
}

impl MailConfig {
    /// The recipients and modes for a build of `factory`.
    pub fn notifier_for<'a>(
        &'a self,
        cfg: &'a MasterConfig,
        factory: &str,
    ) -> (&'a [String], &'a [MailMode]) {
        let f = self.factories.get(factory);
        let recipients = f
            .and_then(|f| f.recipients.as_deref())
            .unwrap_or(&cfg.recipients);
        let modes = f.and_then(|f| f.modes.as_deref()).unwrap_or(&self.modes);
        (recipients, modes)
    }
}

/// What `checkconfig` says of the notifiers (never the SMTP password or a
/// token): one line for mail, one per factory with its own settings and one per
/// watched slave.
pub fn summary(cfg: &MasterConfig) -> String {
    let m = &cfg.mail;
    let modes = |v: &[MailMode]| v.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(" ");
    let mut out = if m.enabled {
        format!(
            "mail: to {}{}, mailMode {}, from {}, via {}:{} (smtpTls {}{})\n",
            if cfg.recipients.is_empty() {
                "(no recipients)".to_string()
            } else {
                cfg.recipients.join(" ")
            },
            if m.send_to_interested_users {
                " and the authors of the Changes"
            } else {
                ""
            },
            modes(&m.modes),
            m.from,
            m.smtp_host,
            m.smtp_port,
            m.smtp_tls.as_str(),
            if m.smtp_user.is_some() { ", AUTH" } else { "" },
        )
    } else {
        "mail: off (set recipients, mailLookup or sendToInterestedUsers to mail builds)\n"
            .to_string()
    };
    for (name, f) in &m.factories {
        let mut parts = Vec::new();
        if let Some(r) = &f.recipients {
            parts.push(format!("recipients {}", r.join(" ")));
        }
        if let Some(v) = &f.modes {
            parts.push(format!("mailMode {}", modes(v)));
        }
        if let Some(p) = &f.status_push {
            parts.push(format!(
                "statusPush {} {} at {}",
                p.forge.as_str(),
                p.repo,
                p.api_url
            ));
        }
        out.push_str(&format!("  {name}: {}\n", parts.join(", ")));
    }
    for (name, n) in &m.slaves {
        out.push_str(&format!(
            "  slave {name} missing {} s: mail {}\n",
            n.missing_timeout,
            n.notify_on_missing.join(" ")
        ));
    }
    out
}

/// An address as `recipients`/`notifyOnMissing` take it: `user@host`.
fn check_addresses(v: &Val, list: &[String]) -> Result<(), ConfigError> {
    for a in list {
        if a.parse::<lettre::Address>().is_err() {
            return Err(v.err(format!(
                "{a:?} is not a mail address; write addresses like `dev@example.org`, separated by spaces"
            )));
        }
    }
    Ok(())
}

fn parse_modes(v: &Val) -> Result<Vec<MailMode>, ConfigError> {
    let words = parse_list(&v.value);
    if words.is_empty() {
        return Err(v.empty_err(
            "one or more of all, failing, passing, warnings, exception, problem, change",
            "failing",
        ));
    }
    let mut out = Vec::new();
    for w in words {
        let Some((_, m)) = MailMode::ALL
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&w))
        else {
            return Err(v.err(format!(
                "unknown mail mode {w:?}; use one or more of: all, failing, passing, warnings, exception, problem (a builder that was not failing fails), change (the result differs from the previous build)"
            )));
        };
        if !out.contains(m) {
            out.push(*m);
        }
    }
    Ok(out)
}

/// Read every notification key: `[:master:]` from `master`, the factories' from
/// `factory_keys` (name, its layered keys), the slaves' from the `[slave:NAME]`
/// sections of `doc` over `defaults` and `master`.
pub(super) fn read(
    cfg: &mut MasterConfig,
    doc: &ini::IniDoc,
    file: &Path,
    defaults: &[Val],
    master: &Layered,
    factory_keys: &[(String, Vec<Val>)],
) -> Result<(), ConfigError> {
    let mut m = MailConfig::default();
    if let Some(v) = master.get("recipients") {
        check_addresses(v, &cfg.recipients)?;
    }
    if let Some(v) = master.get("mailmode") {
        m.modes = parse_modes(v)?;
    }
    if let Some(v) = master.get("sendtointerestedusers") {
        m.send_to_interested_users = parse_bool(v)?;
    }
    if let Some(v) = master.get("maillookup") {
        let d = v.value.trim().trim_start_matches('@');
        if !d.is_empty() {
            if format!("x@{d}").parse::<lettre::Address>().is_err() {
                return Err(v.err(format!(
                    "{:?} is not a mail domain; write the domain appended to authors without `@`, e.g. `mailLookup = example.org`",
                    v.value
                )));
            }
            m.lookup = Some(d.to_string());
        }
    }
    let domain = if cfg.domain.trim().is_empty() {
        "localhost".to_string()
    } else {
        cfg.domain.trim().to_string()
    };
    m.from = format!("autobot@{domain}");
    if let Some(v) = master.get("mailfrom") {
        let from = v.value.trim();
        if from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(v.err(format!(
                "{from:?} is not a mail address; e.g. `mailFrom = autobot@example.org` or `mailFrom = Autobot <ci@example.org>`"
            )));
        }
        m.from = from.to_string();
    } else if m.from.parse::<lettre::message::Mailbox>().is_err() {
        let at = master.get("domain");
        let msg = format!(
            "the default mailFrom autobot@{domain} is not a mail address; fix `domain` or set `mailFrom`"
        );
        return Err(match at {
            Some(v) => v.err(msg),
            None => section_err(file, 1, ":master:", msg),
        });
    }
    if let Some(v) = master.get("smtphost") {
        let h = v.value.trim();
        if h.is_empty() || h.contains(char::is_whitespace) || h.contains('/') {
            return Err(v.err(format!(
                "expected a host name or address, got {:?}; e.g. `smtpHost = mail.example.org`",
                v.value
            )));
        }
        m.smtp_host = h.to_string();
    }
    if let Some(v) = master.get("smtpport") {
        m.smtp_port = parse_port(Some(v), 25)?;
    }
    let opt = |k: &str| {
        master
            .get(k)
            .map(|v| v.value.clone())
            .filter(|s| !s.is_empty())
    };
    m.smtp_user = opt("smtpuser");
    m.smtp_password = opt("smtppassword");
    for (key, name, other) in [
        ("smtpuser", "smtpUser", "smtpPassword"),
        ("smtppassword", "smtpPassword", "smtpUser"),
    ] {
        if let Some(v) = master.get(key) {
            if master.get(&other.to_ascii_lowercase()).is_none() {
                return Err(v.err(format!(
                    "{name} without {other}: SMTP AUTH needs both; add `{other} = ...` or remove this line"
                )));
            }
        }
    }
    if let Some(v) = master.get("smtptls") {
        m.smtp_tls = match v.value.trim().to_ascii_lowercase().as_str() {
            "auto" => SmtpTls::Auto,
            "starttls" => SmtpTls::StartTls,
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            _ => {
                return Err(v.err(format!(
                    "expected auto (STARTTLS when offered), starttls (required), tls (implicit TLS) or none, got {:?}",
                    v.value
                )))
            }
        };
    }
    if let Some(v) = master.get("smtpca") {
        let file = cfg.basedir.join(v.value.trim());
        let pem = std::fs::read(&file).map_err(|e| {
            v.err(format!(
                "cannot read {}: {e}; smtpCA names a PEM file of CA certificates (relative to the master directory)",
                file.display()
            ))
        })?;
        if lettre::transport::smtp::client::Certificate::from_pem(&pem).is_err() {
            return Err(v.err(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                file.display()
            )));
        }
        m.smtp_ca = Some(file);
    }

    for (name, keys) in factory_keys {
        let get = |k: &str| keys.iter().rev().find(|v| v.key == k);
        let mut f = FactoryNotify::default();
        if let Some(v) = get("recipients") {
            let list = parse_list(&v.value);
            check_addresses(v, &list)?;
            f.recipients = Some(list);
        }
        if let Some(v) = get("mailmode") {
            f.modes = Some(parse_modes(v)?);
        }
        if let Some(v) = get("statuspush") {
            f.status_push = Some(read_status_push(cfg, name, v, &get)?);
        } else if let Some(v) = get("statuspushurl").or_else(|| get("statuspushtoken")) {
            return Err(
                v.err("this needs `statusPush = github|gitea|gitlab` in the same factory section")
            );
        }
        if f != FactoryNotify::default() {
            m.factories.insert(name.clone(), f);
        }
    }

    for sec in doc.sections.iter().filter(|s| s.name.starts_with("slave:")) {
        let name = &sec.name["slave:".len()..];
        let mut l = Layered::default();
        for v in defaults.iter().chain(master.0.iter()) {
            if SLAVE_MAIL_KEYS.contains(&v.key.as_str()) {
                l.set(v.clone());
            }
        }
        for v in vals(file, sec) {
            if SLAVE_MAIL_KEYS.contains(&v.key.as_str()) {
                l.set(v);
            }
        }
        let timeout = match l.get("missingtimeout") {
            Some(v) => parse_int(v, 1)?,
            None => 3600,
        };
        if let Some(v) = l.get("notifyonmissing") {
            let list = parse_list(&v.value);
            check_addresses(v, &list)?;
            if !list.is_empty() {
                m.slaves.insert(
                    name.to_string(),
                    SlaveNotify {
                        notify_on_missing: list,
                        missing_timeout: timeout,
                    },
                );
            }
        } else if let Some(v) = l.get("missingtimeout").filter(|v| v.section == sec.name) {
            return Err(v.err(
                "missingTimeout without notifyOnMissing does nothing; add `notifyOnMissing = ADDRESS...` to this section, or remove the line",
            ));
        }
    }
    m.enabled = !cfg.recipients.is_empty()
        || m.lookup.is_some()
        || (master.get("sendtointerestedusers").is_some() && m.send_to_interested_users)
        || m.factories
            .values()
            .any(|f| f.recipients.as_ref().is_some_and(|r| !r.is_empty()));
    cfg.mail = m;
    Ok(())
}

fn read_status_push<'a>(
    cfg: &MasterConfig,
    factory: &str,
    v: &Val,
    get: &dyn Fn(&str) -> Option<&'a Val>,
) -> Result<StatusPush, ConfigError> {
    let forge = match v.value.trim().to_ascii_lowercase().as_str() {
        "github" => Forge::Github,
        "gitea" => Forge::Gitea,
        "gitlab" => Forge::Gitlab,
        _ => {
            return Err(v.err(format!(
                "expected github, gitea or gitlab, got {:?}",
                v.value
            )))
        }
    };
    let api_url = match get("statuspushurl") {
        Some(u) => {
            let s = u.value.trim().trim_end_matches('/');
            if !(s.starts_with("http://") || s.starts_with("https://")) || s.contains(' ') {
                return Err(u.err(format!(
                    "expected the forge's API base URL (http:// or https://), got {:?}; e.g. `https://api.github.com`, `https://gitea.example.org/api/v1`, `https://gitlab.example.org/api/v4`",
                    u.value
                )));
            }
            s.to_string()
        }
        None => match forge {
            Forge::Github => "https://api.github.com".to_string(),
            Forge::Gitlab => "https://gitlab.com/api/v4".to_string(),
            Forge::Gitea => {
                return Err(v.err(
                    "gitea has no public API to default to: add `statusPushURL = https://YOUR-GITEA/api/v1`",
                ))
            }
        },
    };
    let Some(t) = get("statuspushtoken") else {
        return Err(v.err(
            "no token: add `statusPushToken = FILE`, a file beside master.ini that holds the forge's access token (never the token itself)",
        ));
    };
    let token_file = cfg.basedir.join(t.value.trim());
    if t.value.trim().is_empty() || !token_file.is_file() {
        return Err(t.err(format!(
            "no file {}: statusPushToken names a file (relative to the master directory {}) holding the token; write the token there (chmod 600), not in master.ini",
            token_file.display(),
            cfg.basedir.display()
        )));
    }
    let Some(source) = cfg
        .factory(factory)
        .and_then(|f| f.sources.first())
        .map(|s| s.url.clone())
    else {
        return Err(v.err(
            "this factory has no git or hg source, so there is no commit to set a status on",
        ));
    };
    let repo = repo_path(&source, forge).ok_or_else(|| {
        v.err(format!(
            "cannot tell the forge's repository from the source {source:?}: it needs at least `owner/name` in its path"
        ))
    })?;
    Ok(StatusPush {
        forge,
        api_url,
        token_file,
        repo,
    })
}

/// `owner/name` (GitLab: the whole project path) from a repository URL or path:
/// `https://github.com/o/r.git` → `o/r`, `git@host:o/r.git` → `o/r`.
pub fn repo_path(url: &str, forge: Forge) -> Option<String> {
    let path = if let Some((_, rest)) = url.split_once("://") {
        rest.split_once('/').map(|(_, p)| p)?
    } else if let Some((host, p)) = url.split_once(':') {
        if host.contains('/') {
            url
        } else {
            p
        }
    } else {
        url
    };
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() < 2 {
        return None;
    }
    Some(match forge {
        Forge::Gitlab if url.contains("://") || !url.starts_with('/') => parts.join("/"),
        _ => parts[parts.len() - 2..].join("/"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<MasterConfig, ConfigError> {
        let projects = crate::config::projects(None).unwrap();
        super::super::load_from_str(Path::new("/m/master.ini"), Path::new("/m"), text, &projects)
    }

    fn err(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    const SLAVE: &str = "[slave:s1]\npassword = pw-x1\nfactories = *\n";
    const FACTORY: &str = "[f]\ntype = shell\nstep.t = true\n";

    #[test]
    fn defaults_send_no_mail() {
        let cfg = load("").unwrap();
        assert!(!cfg.mail.enabled);
        assert_eq!(cfg.mail.modes, vec![MailMode::All]);
        assert_eq!(cfg.mail.from, "autobot@localhost");
        assert_eq!(
            (cfg.mail.smtp_host.as_str(), cfg.mail.smtp_port),
            ("localhost", 25)
        );
        assert_eq!(cfg.mail.smtp_tls, SmtpTls::Auto);
        assert!(cfg.mail.send_to_interested_users);
    }

    #[test]
    fn every_key_is_read() {
        let cfg = load(&format!(
            "[:master:]\ndomain = example.org\nrecipients = a@example.org b@example.org\n\
             mailMode = failing change\nsendToInterestedUsers = false\nmailLookup = @ex.org\n\
             smtpHost = mail.example.org\nsmtpPort = 587\nsmtpUser = u\nsmtpPassword = p\n\
             smtpTls = starttls\n{SLAVE}notifyOnMissing = admin@example.org\nmissingTimeout = 60\n\
             {FACTORY}recipients = f@example.org\nmailMode = problem\n"
        ))
        .unwrap();
        let m = &cfg.mail;
        assert!(m.enabled);
        assert_eq!(cfg.recipients, ["a@example.org", "b@example.org"]);
        assert_eq!(m.modes, vec![MailMode::Failing, MailMode::Change]);
        assert!(!m.send_to_interested_users);
        assert_eq!(m.lookup.as_deref(), Some("ex.org"));
        assert_eq!(m.from, "autobot@example.org");
        assert_eq!(
            (m.smtp_host.as_str(), m.smtp_port),
            ("mail.example.org", 587)
        );
        assert_eq!(
            (m.smtp_user.as_deref(), m.smtp_password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert_eq!(m.smtp_tls, SmtpTls::StartTls);
        let s = &m.slaves["s1"];
        assert_eq!(
            (s.notify_on_missing.as_slice(), s.missing_timeout),
            (&["admin@example.org".to_string()][..], 60)
        );
        let (r, modes) = m.notifier_for(&cfg, "f");
        assert_eq!(
            (r, modes),
            (&["f@example.org".to_string()][..], &[MailMode::Problem][..])
        );
    }

    #[test]
    fn checkconfig_summarises_without_secrets() {
        let cfg = load(&format!(
            "[:master:]\nrecipients = a@example.org\nsmtpUser = u\nsmtpPassword = hunter2-x\n\
             {SLAVE}notifyOnMissing = admin@example.org\n{FACTORY}mailMode = failing\n"
        ))
        .unwrap();
        let s = summary(&cfg);
        assert!(s.starts_with("mail: to a@example.org and the authors of the Changes, mailMode all, from autobot@localhost, via localhost:25 (smtpTls auto, AUTH)\n"), "{s}");
        assert!(
            s.contains("  f: mailMode failing\n")
                && s.contains("  slave s1 missing 3600 s: mail admin@example.org\n"),
            "{s}"
        );
        assert!(!s.contains("hunter2"));
        assert!(summary(&load("").unwrap()).starts_with("mail: off"));
    }

    #[test]
    fn bad_values_are_file_line_errors() {
        let e = err("[:master:]\nmailMode = failing sometimes\n");
        assert!(
            e.starts_with("/m/master.ini:2: [:master:] mailMode: unknown mail mode \"sometimes\""),
            "{e}"
        );
        let e = err("[:master:]\nrecipients = dev@example.org nobody\n");
        assert!(
            e.starts_with("/m/master.ini:2:") && e.contains("\"nobody\" is not a mail address"),
            "{e}"
        );
        let e = err("[:master:]\nsmtpTls = maybe\n");
        assert!(
            e.starts_with("/m/master.ini:2:") && e.contains("auto"),
            "{e}"
        );
        let e = err("[:master:]\nsmtpPort = 0\n");
        assert!(e.starts_with("/m/master.ini:2:"), "{e}");
        let e = err("[:master:]\nsmtpUser = u\n");
        assert!(
            e.starts_with("/m/master.ini:2:") && e.contains("smtpPassword"),
            "{e}"
        );
        let e = err("[:master:]\nmailFrom = not an address\n");
        assert!(e.starts_with("/m/master.ini:2:"), "{e}");
        let e = err("[:master:]\nsendToInterestedUsers = perhaps\n");
        assert!(e.starts_with("/m/master.ini:2:"), "{e}");
        let e = err("[:master:]\nsmtpCA = none.pem\n");
        assert!(
            e.starts_with("/m/master.ini:2:") && e.contains("cannot read"),
            "{e}"
        );
        let e = err(&format!("{SLAVE}notifyOnMissing = root\n"));
        assert!(
            e.starts_with("/m/master.ini:4:") && e.contains("not a mail address"),
            "{e}"
        );
        let e = err(&format!("{SLAVE}missingTimeout = 10\n"));
        assert!(
            e.starts_with("/m/master.ini:4:") && e.contains("notifyOnMissing"),
            "{e}"
        );
        let e = err(&format!(
            "{SLAVE}notifyOnMissing = a@example.org\nmissingTimeout = soon\n"
        ));
        assert!(e.starts_with("/m/master.ini:5:"), "{e}");
        let e = err(&format!("{FACTORY}mailMode = never\n"));
        assert!(e.starts_with("/m/master.ini:4: [f] mailMode:"), "{e}");
        let e = err(&format!("{FACTORY}recipients = x\n"));
        assert!(e.starts_with("/m/master.ini:4: [f] recipients:"), "{e}");
        let e = err("[:master:]\nsmtpHots = x\n");
        assert!(e.contains("did you mean `smtpHost`"), "{e}");
    }

    #[test]
    fn modes_decide_like_the_manual() {
        use MailMode::*;
        assert!(All.wants("success", None));
        assert!(Failing.wants("failure", Some("failure")));
        assert!(!Failing.wants("success", None));
        assert!(Passing.wants("success", Some("failure")));
        assert!(Problem.wants("failure", Some("success")));
        assert!(Problem.wants("failure", None));
        assert!(!Problem.wants("failure", Some("failure")));
        assert!(Change.wants("success", Some("failure")));
        assert!(!Change.wants("success", Some("success")));
        assert!(!Change.wants("success", None));
        assert!(Warnings.wants("warnings", None) && Exception.wants("exception", None));
        for m in [Failing, Passing, Warnings, Exception, Problem, Change] {
            assert!(!m.wants("cancelled", Some("success")), "{m:?}");
        }
        assert!(All.wants("cancelled", None));
    }

    #[test]
    fn repo_paths() {
        let g = Forge::Github;
        assert_eq!(
            repo_path("https://github.com/o/r.git", g).as_deref(),
            Some("o/r")
        );
        assert_eq!(
            repo_path("git@github.com:o/r.git", g).as_deref(),
            Some("o/r")
        );
        assert_eq!(repo_path("/srv/git/o/r", g).as_deref(), Some("o/r"));
        assert_eq!(
            repo_path("https://gitlab.com/g/sub/p.git", Forge::Gitlab).as_deref(),
            Some("g/sub/p")
        );
        assert_eq!(repo_path("https://example.org/r", g), None);
    }
}
