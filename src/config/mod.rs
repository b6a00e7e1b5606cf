//! `master.ini` and the slave's `slave.ini`: the whole configuration of autobot.
//!
//! `master.ini` has three kinds of sections: `[:master:]` (ports, timers and the
//! defaults every slave inherits), `[slave:NAME]` (one slave each) and any other
//! section, which is a factory: a project built by one of the built-in factory types
//! in [`crate::factory`]. Two more are optional: `[lock:NAME]` (a lock builds or
//! steps can hold) and `[users]` (`name = password` for the web's force button).
//! `[DEFAULT]` keys apply to every section that accepts them.
//!
//! Loading validates everything up front — including turning every factory into its
//! steps once — and every error names the file, line, section and key, says what
//! was expected and how to fix it. Keys are case-insensitive; section names are not.
//! What loads but lets strangers in (a password printed in the documentation, force
//! open to anyone on `htmlport`) becomes a [`ConfigWarning`] at the same place.
//! Submitted Changes (`sendchange`, `POST /api/v1/changes`) are accepted only when
//! `changeuser` and `changepassword` are both set; there is no default pair.

pub mod ini;
pub mod irc;
pub mod mail;
pub mod secrets;
pub mod slave;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::factory::{self, schema, ParamKind};

pub use slave::SlaveIni;

/// The parsed, validated `master.ini`.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterConfig {
    /// The file this was read from; errors and `reconfig` refer to it.
    pub path: PathBuf,
    /// The master directory (the file's parent): relative paths resolve here.
    pub basedir: PathBuf,
    pub slaveport: u16,
    pub htmlport: u16,
    pub publichtmlport: u16,
    /// Seconds between polls of each repository.
    pub poll_interval: u64,
    /// Seconds the tree must be quiet before a build starts.
    pub tree_stable: u64,
    /// Whether the web and API may force builds.
    pub allow_force: bool,
    pub project_name: String,
    pub project_url: String,
    pub buildbot_url: String,
    /// The IRC bot (`ircHost` and the keys of [`irc`]); `None`: no bot.
    pub irc: Option<irc::IrcConfig>,
    pub domain: String,
    pub recipients: Vec<String>,
    /// Mail, missing-slave and commit-status notification settings.
    pub mail: mail::MailConfig,
    /// Credentials `sendchange` and `POST /api/v1/changes` must present. Both
    /// empty (neither key written): submitted Changes are refused, because the
    /// manual's old defaults (change/changepw) are known to everyone. The loader
    /// never leaves just one of them empty.
    pub changeuser: String,
    pub changepassword: String,
    /// Webhook secrets (`github_secret`, `gitlab_secret`, `gitea_secret`): the key
    /// a forge signs its push payloads with; empty means that hook is off.
    pub github_secret: String,
    pub gitlab_secret: String,
    pub gitea_secret: String,
    /// `favicon = FILE` and `robots_txt = FILE` (relative to the master
    /// directory): what the web server sends for `/favicon.ico` and `/robots.txt`
    /// instead of its built-in ones.
    pub favicon: Option<PathBuf>,
    pub robots_txt: Option<PathBuf>,
    /// `debug = true`: the master logs at debug level.
    pub debug: bool,
    /// Seconds within which a dead slave link is noticed (`keepaliveInterval`,
    /// default 600, as a slave's own `keepalive`).
    pub keepalive_interval: u64,
    /// `logSize` and `logCount`: when `autobot.log` is rotated, and how many old
    /// ones are kept.
    pub log: LogRotation,
    /// Slaves in file order.
    pub slaves: Vec<SlaveConfig>,
    /// Factories in file order.
    pub factories: Vec<FactoryConfig>,
    /// `[lock:NAME]` sections in file order.
    pub locks: Vec<LockConfig>,
    /// `[users]`: web users allowed to force builds (name as written → password).
    pub users: BTreeMap<String, String>,
    /// What is valid but unsafe (documented passwords, force open to anyone), each
    /// at its place in the file; `checkconfig` prints them and the master logs them.
    pub warnings: Vec<ConfigWarning>,
}

/// How a daemon's `autobot.log` is rotated, as Buildbot's `twistd.log`: when it
/// would grow past `size` bytes it becomes `autobot.log.1` (the older ones move up
/// to `.count`, the oldest is deleted) and a new one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// `logSize`: bytes (default 10 MB).
    pub size: u64,
    /// `logCount`: old logs kept (default 10).
    pub count: u32,
}

impl Default for LogRotation {
    fn default() -> Self {
        LogRotation {
            size: 10_000_000,
            count: 10,
        }
    }
}

impl Default for MasterConfig {
    /// The defaults of an empty `master.ini` (handy for tests that build configs).
    fn default() -> Self {
        MasterConfig {
            path: PathBuf::from("master.ini"),
            basedir: PathBuf::from("."),
            slaveport: 9010,
            htmlport: 8010,
            publichtmlport: 8011,
            poll_interval: 60,
            tree_stable: 60,
            allow_force: true,
            project_name: String::new(),
            project_url: String::new(),
            buildbot_url: String::new(),
            irc: None,
            domain: String::new(),
            recipients: Vec::new(),
            mail: mail::MailConfig::default(),
            changeuser: String::new(),
            changepassword: String::new(),
            github_secret: String::new(),
            favicon: None,
            robots_txt: None,
            gitlab_secret: String::new(),
            gitea_secret: String::new(),
            debug: false,
            keepalive_interval: 600,
            log: LogRotation::default(),
            slaves: Vec::new(),
            factories: Vec::new(),
            locks: Vec::new(),
            users: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }
}

/// Operating system of a slave, as `os =` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    #[default]
    Linux,
    Win,
    Mac,
}

impl Os {
    pub fn as_str(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::Win => "win",
            Os::Mac => "mac",
        }
    }
}

/// One `[slave:NAME]` section after inheriting `[:master:]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SlaveConfig {
    pub name: String,
    pub password: String,
    /// Factory names this slave builds, `*` already expanded, in factory file order.
    pub factories: Vec<String>,
    pub os: Os,
    /// How many builds may run on this slave at once (`max_builds`, default 1).
    pub max_builds: u32,
}

/// Version-control system of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Git,
    Hg,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Git => "git",
            SourceKind::Hg => "hg",
        }
    }
}

/// One repository a factory checks out: `URL[#branch]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub kind: SourceKind,
    /// The URL; `./` and `../` paths are already made absolute against the master dir.
    pub url: String,
    /// The branch (`master` for git, `default` for hg when not given).
    pub branch: String,
}

/// How a checkout treats the tree left by the previous build (Buildbot's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Update the existing tree in place.
    #[default]
    Update,
    /// Keep a pristine tree, update it, and copy it for the build.
    Copy,
    /// Remove the tree and check out afresh.
    Clobber,
    /// Like clobber, without version-control metadata.
    Export,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Update => "update",
            Mode::Copy => "copy",
            Mode::Clobber => "clobber",
            Mode::Export => "export",
        }
    }
}

/// `retry = DELAY REPEATS`: try a failed checkout again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Seconds between tries.
    pub delay: u64,
    /// How many more tries.
    pub repeats: u32,
}

/// One factory section: a project and the factory type that builds it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FactoryConfig {
    pub name: String,
    /// The built-in factory type (`autotools`, `shell`, …).
    pub type_name: String,
    pub description: String,
    /// Sources in order: hg entries then git entries, each in the order given.
    pub sources: Vec<Source>,
    /// The type's own parameters (lower-cased keys), validated against
    /// [`crate::factory::FactoryType::params`]; absent keys take the type's default.
    pub params: BTreeMap<String, String>,
    /// `shell` steps in file order: (step name, options lower-cased incl. `command`;
    /// `env.VAR` keeps the case of VAR).
    pub steps: Vec<(String, BTreeMap<String, String>)>,
    /// The project this section starts from, when it is named after one.
    pub project: Option<String>,
    /// Embedded sample `create` materializes as `MASTERDIR/repos/NAME`.
    pub sample: Option<String>,
    /// Pass the slave's os to builds (property `platform`, env `PLATFORM`).
    pub platform: bool,
    pub category: String,
    /// URL template for revisions (`%s` = revision).
    pub revlink: String,
    /// Branches whose changes start builds (empty: the sources' branches).
    pub branches: Vec<String>,
    /// Regular expressions; only changes touching a matching file start builds.
    pub files: Vec<String>,
    /// Build every this many seconds as well.
    pub periodic: Option<u64>,
    /// Five cron fields (validated): build at these times as well.
    pub nightly: Option<String>,
    /// Build after each successful build of this factory.
    pub depends_on: Option<String>,
    /// `[lock:NAME]` sections a build holds.
    pub locks: Vec<String>,
    pub mode: Mode,
    pub always_use_latest: bool,
    pub retry: Option<Retry>,
    /// Overrides the master's treeStable for this factory.
    pub tree_stable: Option<u64>,
    /// Overrides the master's pollInterval for this factory's sources.
    pub poll_interval: Option<u64>,
}

/// Whether a lock is shared by the whole master or exists once per slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockScope {
    #[default]
    Master,
    Slave,
}

/// A `[lock:NAME]` section: at most `max_count` holders at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    pub name: String,
    pub scope: LockScope,
    pub max_count: u32,
}

/// A builder: one factory on the slaves that run it, named `FACTORY-SLAVE`.
#[derive(Debug, Clone, PartialEq)]
pub struct BuilderConfig {
    pub name: String,
    pub factory: String,
    pub slave: String,
}

impl MasterConfig {
    /// One builder per (factory, slave) pair, named `FACTORY-SLAVE`, in factory
    /// then slave file order.
    pub fn builders(&self) -> Vec<BuilderConfig> {
        let mut out = Vec::new();
        for f in &self.factories {
            for s in &self.slaves {
                if s.factories.iter().any(|n| n == &f.name) {
                    out.push(BuilderConfig {
                        name: format!("{}-{}", f.name, s.name),
                        factory: f.name.clone(),
                        slave: s.name.clone(),
                    });
                }
            }
        }
        out
    }

    pub fn slave(&self, name: &str) -> Option<&SlaveConfig> {
        self.slaves.iter().find(|s| s.name == name)
    }

    pub fn factory(&self, name: &str) -> Option<&FactoryConfig> {
        self.factories.iter().find(|f| f.name == name)
    }

    pub fn lock(&self, name: &str) -> Option<&LockConfig> {
        self.locks.iter().find(|l| l.name == name)
    }

    /// Whether Changes may be submitted (`sendchange`, `POST /api/v1/changes`):
    /// only with `changeuser` and `changepassword` both configured.
    pub fn accepts_changes(&self) -> bool {
        !self.changeuser.is_empty() && !self.changepassword.is_empty()
    }

    /// Why a submitted Change is refused on a master that [does not accept
    /// them](Self::accepts_changes), and how to turn them on; for its log and the
    /// client's error (so it does not name the file: the client may be anyone).
    pub fn changes_off_reason(&self) -> String {
        String::from(
            "sendchange and POST /api/v1/changes are refused: the master's master.ini sets no \
             changeuser and changepassword in [:master:]; to accept Changes add both (e.g. \
             `changeuser = hooks` and a random changepassword), apply them with `autobot \
             reconfig`, and give them to `autobot sendchange --auth USER:PASSWORD` or as HTTP \
             Basic credentials",
        )
    }
}

/// Something a `master.ini` allows that lets strangers in: `file:line: [section]
/// key: what and how to fix it`. The file still loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub path: PathBuf,
    pub line: usize,
    /// `[section] key: ` or `[section]: `.
    pub context: String,
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}{}",
            self.path.display(),
            self.line,
            self.context,
            self.message
        )
    }
}

/// A `master.ini` that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A problem at a place in the file: `file:line: [section] key: message`.
    #[error("{path}:{line}: {context}{message}")]
    At {
        path: PathBuf,
        line: usize,
        /// `[section] key: ` or `[section]: ` or empty.
        context: String,
        message: String,
    },
    /// A reconfig to a file that defines nothing while the running master builds
    /// something (an empty, comment-only or truncated file would drop every builder).
    #[error(
        "{}: defines no slaves and no factories, but the running configuration has {slaves} \
         slave(s) and {factories} factory section(s); applying it would drop every builder, so it \
         was not applied. Restore the file (an editor's backup, or your version control); to \
         really run no builders, stop the master instead",
        path.display()
    )]
    Emptied {
        path: PathBuf,
        slaves: usize,
        factories: usize,
    },
}

/// Log what a master that just loaded `cfg` (at start or reconfig) should tell its
/// admin: each [`ConfigWarning`], and that submitted Changes are refused (with how
/// to enable them) when no change credentials are configured.
pub fn log_loaded(cfg: &MasterConfig) {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if !cfg.accepts_changes() {
        tracing::info!("{}: {}", cfg.path.display(), cfg.changes_off_reason());
    }
}

/// Whether `new` may replace `old`, the configuration of a running master: a
/// file with no slaves and no factories may not replace one that has some.
pub fn check_replacement(old: &MasterConfig, new: &MasterConfig) -> Result<(), ConfigError> {
    let old_has_some = !old.slaves.is_empty() || !old.factories.is_empty();
    if old_has_some && new.slaves.is_empty() && new.factories.is_empty() {
        return Err(ConfigError::Emptied {
            path: new.path.clone(),
            slaves: old.slaves.len(),
            factories: old.factories.len(),
        });
    }
    Ok(())
}

/// The `master.ini` for a path that is either the file or the master directory.
pub fn master_ini_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("master.ini")
    } else {
        path.to_path_buf()
    }
}

/// Keys of `[:master:]` itself (lower-case).
const MASTER_KEYS: &[&str] = &[
    "slaveport",
    "htmlport",
    "publichtmlport",
    "pollinterval",
    "treestable",
    "allowforce",
    "projectname",
    "projecturl",
    "buildboturl",
    "botname",
    "irchost",
    "ircchannels",
    "irctls",
    "ircpassword",
    "ircnotify",
    "domain",
    "recipients",
    "changeuser",
    "changepassword",
    "github_secret",
    "gitlab_secret",
    "gitea_secret",
    "favicon",
    "robots_txt",
    "debug",
    "keepaliveinterval",
    "logsize",
    "logcount",
];

/// [`MASTER_KEYS`] as the documentation spells them, for messages and "did you
/// mean" hints (`treeStable`, not `treestable`).
const MASTER_KEYS_DOCUMENTED: &[&str] = &[
    "slaveport",
    "htmlport",
    "publichtmlport",
    "pollInterval",
    "treeStable",
    "allowForce",
    "projectName",
    "projectURL",
    "buildbotURL",
    "botname",
    "ircHost",
    "ircChannels",
    "ircTls",
    "ircPassword",
    "ircNotify",
    "domain",
    "recipients",
    "changeuser",
    "changepassword",
    "github_secret",
    "gitlab_secret",
    "gitea_secret",
    "favicon",
    "robots_txt",
    "debug",
    "keepaliveInterval",
    "logSize",
    "logCount",
];

/// The notifiers' keys of `[:master:]` ([`mail`]'s, and its slave defaults) as
/// the documentation spells them.
const MAIL_KEYS_DOCUMENTED: &[&str] = &[
    "mailMode",
    "sendToInterestedUsers",
    "mailLookup",
    "mailFrom",
    "smtpHost",
    "smtpPort",
    "smtpUser",
    "smtpPassword",
    "smtpTls",
    "smtpCA",
    "notifyOnMissing",
    "missingTimeout",
];

/// Whether `[:master:]` accepts `key` (lower-case): its own, the notifiers', or
/// a slave default.
fn is_master_key(key: &str) -> bool {
    [
        MASTER_KEYS,
        SLAVE_KEYS,
        mail::MASTER_MAIL_KEYS,
        mail::SLAVE_MAIL_KEYS,
    ]
    .iter()
    .any(|keys| keys.contains(&key))
}

/// Keys of `[slave:NAME]`, which `[:master:]` may set for every slave.
const SLAVE_KEYS: &[&str] = &["password", "factories", "os", "max_builds"];

/// Keys of `[lock:NAME]`.
const LOCK_KEYS: &[&str] = &["scope", "maxcount"];

/// A value and where it was written, so that any later check can point at it.
#[derive(Debug, Clone)]
struct Val {
    key: String,
    raw_key: String,
    value: String,
    path: PathBuf,
    line: usize,
    section: String,
}

impl Val {
    fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::At {
            path: self.path.clone(),
            line: self.line,
            context: format!("[{}] {}: ", self.section, self.raw_key),
            message: message.into(),
        }
    }

    fn warning(&self, message: impl Into<String>) -> ConfigWarning {
        ConfigWarning {
            path: self.path.clone(),
            line: self.line,
            context: format!("[{}] {}: ", self.section, self.raw_key),
            message: message.into(),
        }
    }

    /// The error for a key written with no value where one is needed.
    fn empty_err(&self, what: &str, example: &str) -> ConfigError {
        self.err(format!(
            "no value; write {what} (e.g. `{} = {example}`), or remove the line to get the default",
            self.raw_key
        ))
    }
}

/// Section-level error (no key).
fn section_err(path: &Path, line: usize, section: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::At {
        path: path.to_path_buf(),
        line,
        context: format!("[{section}]: "),
        message: message.into(),
    }
}

fn vals(path: &Path, section: &ini::IniSection) -> Vec<Val> {
    section
        .entries
        .iter()
        .map(|e| Val {
            key: e.key.clone(),
            raw_key: e.raw_key.clone(),
            value: e.value.clone(),
            path: path.to_path_buf(),
            line: e.line,
            section: section.name.clone(),
        })
        .collect()
}

/// Ordered key → value map where later layers override earlier ones in place.
#[derive(Debug, Default, Clone)]
struct Layered(Vec<Val>);

impl Layered {
    fn set(&mut self, v: Val) {
        match self.0.iter_mut().find(|o| o.key == v.key) {
            Some(o) => *o = v,
            None => self.0.push(v),
        }
    }

    fn get(&self, key: &str) -> Option<&Val> {
        self.0.iter().find(|v| v.key == key)
    }
}

fn parse_int(v: &Val, min: u64) -> Result<u64, ConfigError> {
    // A value that reads well in the example of each key's message.
    let example = match v.key.as_str() {
        "pollinterval" | "treestable" => "60",
        "logsize" => "10000000",
        "logcount" => "10",
        "keepaliveinterval" => "600",
        _ => "1",
    };
    if v.value.trim().is_empty() {
        return Err(v.empty_err(&format!("a whole number >= {min}"), example));
    }
    let max = schema::MAX_NUMBER;
    match ini::parse_digits(&v.value) {
        Some(n) if n > max => Err(v.err(format!(
            "expected a whole number from {min} to {max} (ten years in seconds), got {:?}",
            v.value
        ))),
        Some(n) if n >= min => Ok(n),
        _ => Err(v.err(format!(
            "expected a whole number >= {min} (digits only, no sign), got {:?}; e.g. `{} = {example}`",
            v.value, v.raw_key
        ))),
    }
}

fn parse_bool(v: &Val) -> Result<bool, ConfigError> {
    if v.value.trim().is_empty() {
        return Err(v.empty_err("true or false", "true"));
    }
    schema::parse_bool(&v.value).ok_or_else(|| {
        v.err(format!(
            "expected true or false (or yes/no, on/off, 1/0), got {:?}",
            v.value
        ))
    })
}

/// A whitespace- or comma-separated list; `-` alone means none.
fn parse_list(value: &str) -> Vec<String> {
    if value.trim() == "-" {
        return Vec::new();
    }
    value
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `URL[#branch] ...` for one kind; `./` and `../` URLs made absolute.
fn parse_sources(v: &Val, kind: SourceKind, basedir: &Path) -> Result<Vec<Source>, ConfigError> {
    let mut out = Vec::new();
    for word in v.value.split_whitespace() {
        let (url, branch) = match word.rsplit_once('#') {
            Some((url, branch)) => {
                if branch.is_empty() {
                    return Err(v.err(format!(
                        "{word:?} ends with `#` but names no branch; write URL#BRANCH or just URL"
                    )));
                }
                (url, branch.to_string())
            }
            None => (
                word,
                match kind {
                    SourceKind::Git => "master".to_string(),
                    SourceKind::Hg => "default".to_string(),
                },
            ),
        };
        if url.is_empty() {
            return Err(v.err(format!("{word:?} has no URL before `#`; write URL#BRANCH")));
        }
        let url = if url.starts_with("./") || url.starts_with("../") {
            normalize_path(&basedir.join(url))
                .to_string_lossy()
                .into_owned()
        } else {
            url.to_string()
        };
        out.push(Source { kind, url, branch });
    }
    Ok(out)
}

/// `a/./b/../c` → `a/c`, without touching the file system (the path may not exist
/// yet: `create` writes the sample repositories after the config).
fn normalize_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn parse_port(v: Option<&Val>, default: u16) -> Result<u16, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    if v.value.trim().is_empty() {
        return Err(v.err(format!(
            "no value; write a TCP port number from 1 to 65535 (e.g. `{} = {default}`), or remove the line to get the default {default}",
            v.raw_key
        )));
    }
    match ini::parse_digits(&v.value).and_then(|n| u16::try_from(n).ok()) {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(v.err(format!(
            "expected a TCP port number from 1 to 65535 (digits only, no sign), got {:?}; e.g. `{} = {default}`",
            v.value, v.raw_key
        ))),
    }
}

/// Whether a section name belongs to the sections that are not factories.
fn is_special_section(name: &str) -> bool {
    name == "DEFAULT"
        || name == ":master:"
        || name == "users"
        || name.starts_with("slave:")
        || name.starts_with("lock:")
}

/// Read and validate a `master.ini` (`path` is the file or the master directory).
pub fn load(path: &Path) -> Result<MasterConfig, ConfigError> {
    let file = master_ini_path(path);
    let bytes = std::fs::read(&file).map_err(|source| ConfigError::Io {
        path: file.clone(),
        source,
    })?;
    let text = ini::decode(&file, &bytes)?;
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let basedir = std::fs::canonicalize(&parent).unwrap_or(parent);
    let projects = factory::projects(Some(&basedir))?;
    load_from_str(&file, &basedir, text, &projects)
}

/// [`load`] on text already read, with the projects a factory section may start
/// from (what [`load`] uses: bundled ones plus `MASTERDIR/projects/*.ini`).
pub fn load_from_str(
    file: &Path,
    basedir: &Path,
    text: &str,
    projects: &[factory::Project],
) -> Result<MasterConfig, ConfigError> {
    let doc = ini::parse(file, text)?;
    let defaults: Vec<Val> = doc
        .section("DEFAULT")
        .map(|s| vals(file, s))
        .unwrap_or_default();
    let mut cfg = MasterConfig {
        path: file.to_path_buf(),
        basedir: basedir.to_path_buf(),
        ..MasterConfig::default()
    };

    // [:master:]: DEFAULT keys it accepts, then its own.
    let mut master = Layered::default();
    for v in &defaults {
        if is_master_key(&v.key) {
            master.set(v.clone());
        }
    }
    if let Some(sec) = doc.section(":master:") {
        for v in vals(file, sec) {
            if !is_master_key(&v.key) {
                let hint = schema::closest(
                    &v.key,
                    MASTER_KEYS_DOCUMENTED
                        .iter()
                        .chain(SLAVE_KEYS)
                        .chain(MAIL_KEYS_DOCUMENTED)
                        .copied(),
                )
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
                return Err(v.err(format!(
                    "unknown key in [:master:]{hint}; accepted keys: {}, {}, and the slave defaults {}",
                    MASTER_KEYS_DOCUMENTED.join(", "),
                    MAIL_KEYS_DOCUMENTED.join(", "),
                    SLAVE_KEYS.join(", ")
                )));
            }
            master.set(v);
        }
    }
    read_master_keys(&mut cfg, &master)?;

    // [lock:NAME] and [users].
    for sec in doc.sections.iter().filter(|s| s.name.starts_with("lock:")) {
        cfg.locks.push(read_lock(file, sec, &defaults)?);
    }
    if let Some(sec) = doc.section("users") {
        for e in &sec.entries {
            if e.value.is_empty() {
                return Err(ConfigError::At {
                    path: file.to_path_buf(),
                    line: e.line,
                    context: format!("[users] {}: ", e.raw_key),
                    message: "empty password; write `NAME = PASSWORD`".to_string(),
                });
            }
            if secrets::is_documented(&e.value) {
                cfg.warnings.push(ConfigWarning {
                    path: file.to_path_buf(),
                    line: e.line,
                    context: format!("[users] {}: ", e.raw_key),
                    message: format!(
                        "the password {:?} is printed in the documentation, so anyone who can reach htmlport {} can force and stop builds as {}; {FRESH_SECRET}",
                        e.value, cfg.htmlport, e.raw_key
                    ),
                });
            }
            cfg.users.insert(e.raw_key.clone(), e.value.clone());
        }
    }

    // Factories (before slaves, which name them).
    let mut checks = Vec::new();
    for sec in doc.sections.iter().filter(|s| !is_special_section(&s.name)) {
        let (f, c) = read_factory(file, basedir, sec, &defaults, projects)?;
        cfg.factories.push(f);
        checks.push(c);
    }

    // Slaves, and the passwords they got from each place one is written.
    let mut password_vals: Vec<(Val, Vec<String>)> = Vec::new();
    for sec in doc.sections.iter().filter(|s| s.name.starts_with("slave:")) {
        let (slave, from) = read_slave(file, sec, &defaults, &master, &cfg.factories)?;
        match password_vals
            .iter_mut()
            .find(|(v, _)| v.path == from.path && v.line == from.line)
        {
            Some((_, names)) => names.push(slave.name.clone()),
            None => password_vals.push((from, vec![slave.name.clone()])),
        }
        cfg.slaves.push(slave);
    }

    let factory_keys: Vec<(String, Vec<Val>)> = checks
        .iter()
        .map(|c| (c.name.clone(), c.all.clone()))
        .collect();
    mail::read(&mut cfg, &doc, file, &defaults, &master, &factory_keys)?;
    cross_check(&cfg, &checks, file)?;
    warn_documented_passwords(&mut cfg, &password_vals, &master);
    warn_open_force(&mut cfg, &doc, &master);
    cfg.warnings.sort_by_key(|w| w.line);
    Ok(cfg)
}

/// How to fix a documented secret, for the warnings.
const FRESH_SECRET: &str = "replace it with a random value of your own (e.g. the output of `head -c 18 /dev/urandom | base64`)";

/// Warnings for slave passwords, change credentials and webhook secrets that are
/// printed in the documentation.
fn warn_documented_passwords(
    cfg: &mut MasterConfig,
    slave_passwords: &[(Val, Vec<String>)],
    master: &Layered,
) {
    for (v, names) in slave_passwords {
        if secrets::is_documented(&v.value) {
            let (who, whose) = match names.len() {
                1 => (format!("slave {}", names[0]), "that slave's"),
                _ => (format!("slaves {}", names.join(", ")), "each of their"),
            };
            cfg.warnings.push(v.warning(format!(
                "the password {:?} is printed in the documentation, so anyone who can reach slaveport {} can log in as {who} and be sent builds; {FRESH_SECRET}, and write the same in {whose} slave.ini",
                v.value, cfg.slaveport,
            )));
        }
    }
    if let Some(v) = master
        .get("changepassword")
        .filter(|v| secrets::is_documented(&v.value))
    {
        cfg.warnings.push(v.warning(format!(
            "{:?} is printed in the documentation, so anyone who can reach slaveport {} or htmlport {} can submit Changes (and so start builds); {FRESH_SECRET}, and give it to `autobot sendchange --auth USER:PASSWORD`",
            v.value, cfg.slaveport, cfg.htmlport
        )));
    }
    for key in ["github_secret", "gitlab_secret", "gitea_secret"] {
        if let Some(v) = master.get(key).filter(|v| secrets::is_documented(&v.value)) {
            cfg.warnings.push(v.warning(format!(
                "{:?} is printed in the documentation, so anyone can sign pushes that the master believes; {FRESH_SECRET}, and set the same in the forge's webhook form",
                v.value
            )));
        }
    }
}

/// A warning when `htmlport` takes force and stop requests from anyone.
fn warn_open_force(cfg: &mut MasterConfig, doc: &ini::IniDoc, master: &Layered) {
    if !cfg.allow_force || !cfg.users.is_empty() {
        return;
    }
    let message = format!(
        "htmlport {} lets anyone who can reach it force and stop builds (allowForce is true and there is no [users] section); add a [users] section with `NAME = PASSWORD` lines, or set `allowForce = false`",
        cfg.htmlport
    );
    let w = match master.get("allowforce") {
        Some(v) => v.warning(message),
        None => ConfigWarning {
            path: cfg.path.clone(),
            line: doc.section(":master:").map_or(1, |s| s.line),
            context: "[:master:]: ".to_string(),
            message,
        },
    };
    cfg.warnings.push(w);
}

fn read_master_keys(cfg: &mut MasterConfig, m: &Layered) -> Result<(), ConfigError> {
    cfg.slaveport = parse_port(m.get("slaveport"), 9010)?;
    cfg.htmlport = parse_port(m.get("htmlport"), 8010)?;
    cfg.publichtmlport = parse_port(m.get("publichtmlport"), 8011)?;
    let ports = [
        ("slaveport", cfg.slaveport),
        ("htmlport", cfg.htmlport),
        ("publichtmlport", cfg.publichtmlport),
    ];
    for (i, (a, pa)) in ports.iter().enumerate() {
        for (b, pb) in &ports[i + 1..] {
            if pa == pb {
                // Point at whichever of the two was written (the later one if both).
                let at = m.get(b).or_else(|| m.get(a));
                let msg = format!(
                    "{a} and {b} are both {pa}; each port must be different (defaults: slaveport 9010, htmlport 8010, publichtmlport 8011)"
                );
                return Err(match at {
                    Some(v) => v.err(msg),
                    None => section_err(&cfg.path, 1, ":master:", msg),
                });
            }
        }
    }
    let str_key = |k: &str, default: &str| {
        m.get(k)
            .map(|v| v.value.clone())
            .unwrap_or_else(|| default.to_string())
    };
    if let Some(v) = m.get("pollinterval") {
        cfg.poll_interval = parse_int(v, 1)?;
    }
    if let Some(v) = m.get("treestable") {
        cfg.tree_stable = parse_int(v, 0)?;
    }
    if let Some(v) = m.get("allowforce") {
        cfg.allow_force = parse_bool(v)?;
    }
    if let Some(v) = m.get("debug") {
        cfg.debug = parse_bool(v)?;
    }
    if let Some(v) = m.get("keepaliveinterval") {
        cfg.keepalive_interval = parse_int(v, 1)?;
    }
    if let Some(v) = m.get("logsize") {
        cfg.log.size = parse_int(v, 1)?;
    }
    if let Some(v) = m.get("logcount") {
        cfg.log.count = match parse_int(v, 1)? {
            n @ 1..=1000 => n as u32,
            n => return Err(v.err(format!("expected at most 1000 old logs, got {n}"))),
        };
    }
    cfg.project_name = str_key("projectname", "");
    cfg.project_url = str_key("projecturl", "");
    cfg.buildbot_url = str_key("buildboturl", "");
    cfg.irc = irc::read(m, &mut cfg.warnings)?;
    cfg.domain = str_key("domain", "");
    cfg.recipients = parse_list(&str_key("recipients", ""));
    cfg.changeuser = str_key("changeuser", "");
    cfg.changepassword = str_key("changepassword", "");
    cfg.github_secret = str_key("github_secret", "");
    cfg.gitlab_secret = str_key("gitlab_secret", "");
    cfg.gitea_secret = str_key("gitea_secret", "");
    for key in ["favicon", "robots_txt"] {
        let Some(v) = m.get(key).filter(|v| !v.value.trim().is_empty()) else {
            continue;
        };
        let file = cfg.basedir.join(v.value.trim());
        if !file.is_file() {
            return Err(v.err(format!(
                "no file {} (give a path relative to the master directory {}, or remove the key for the built-in one)",
                file.display(),
                cfg.basedir.display()
            )));
        }
        match key {
            "favicon" => cfg.favicon = Some(file),
            _ => cfg.robots_txt = Some(file),
        }
    }
    // Both or neither: neither means submitted Changes are refused.
    for (key, other) in [
        ("changeuser", "changepassword"),
        ("changepassword", "changeuser"),
    ] {
        let Some(v) = m.get(key) else { continue };
        if v.value.trim().is_empty() {
            return Err(v.err(
                "no value; give both changeuser and changepassword to accept Changes from sendchange and POST /api/v1/changes, or remove both lines to refuse them",
            ));
        }
        if m.get(other).is_none() {
            return Err(v.err(format!(
                "{key} without {other}: submitted Changes need both; add `{other} = ...` to [:master:] (a random value for a password), or remove this line to refuse submitted Changes"
            )));
        }
    }
    Ok(())
}

fn read_lock(
    file: &Path,
    sec: &ini::IniSection,
    defaults: &[Val],
) -> Result<LockConfig, ConfigError> {
    let name = &sec.name["lock:".len()..];
    if !factory::is_plain_name(name) {
        return Err(section_err(
            file,
            sec.line,
            &sec.name,
            "a lock needs a name of letters, digits, `.`, `_` and `-`: [lock:NAME]",
        ));
    }
    let mut l = Layered::default();
    for v in defaults
        .iter()
        .filter(|v| LOCK_KEYS.contains(&v.key.as_str()))
    {
        l.set(v.clone());
    }
    for v in vals(file, sec) {
        if !LOCK_KEYS.contains(&v.key.as_str()) {
            return Err(v.err("unknown key for a lock; accepted keys: scope (master or slave), maxCount (a whole number >= 1)"));
        }
        l.set(v);
    }
    let scope = match l.get("scope") {
        None => LockScope::Master,
        Some(v) => match v.value.trim().to_ascii_lowercase().as_str() {
            "master" | "" => LockScope::Master,
            "slave" => LockScope::Slave,
            _ => {
                return Err(v.err(format!(
                    "expected master (one lock for the whole master) or slave (one per slave), got {:?}",
                    v.value
                )))
            }
        },
    };
    let max_count = match l.get("maxcount") {
        None => 1,
        Some(v) => u32::try_from(parse_int(v, 1)?).map_err(|_| v.err("too large"))?,
    };
    Ok(LockConfig {
        name: name.to_string(),
        scope,
        max_count,
    })
}

/// What a factory names that only the whole config can check, with where it is written.
struct FactoryChecks {
    name: String,
    section_line: usize,
    depends_on: Option<Val>,
    /// `locks` keys of the factory and its steps.
    locks: Vec<Val>,
    /// Every key, for pointing `build_steps` errors at a line.
    all: Vec<Val>,
}

fn read_factory(
    file: &Path,
    basedir: &Path,
    sec: &ini::IniSection,
    defaults: &[Val],
    projects: &[factory::Project],
) -> Result<(FactoryConfig, FactoryChecks), ConfigError> {
    let name = sec.name.clone();
    if name.contains(':') {
        return Err(section_err(
            file,
            sec.line,
            &name,
            "unknown kind of section; sections are [:master:], [slave:NAME], [lock:NAME], [users], [DEFAULT], or a factory [NAME] (letters, digits, `.`, `_`, `-`)",
        ));
    }
    if !factory::is_plain_name(&name) {
        return Err(section_err(
            file,
            sec.line,
            &name,
            "a factory's name must be letters, digits, `.`, `_` and `-`, not starting with `.` or `-`",
        ));
    }
    let project = projects.iter().find(|p| p.name == name);
    let mut keys = Layered::default();
    if let Some(p) = project {
        for e in &p.entries {
            keys.set(Val {
                key: e.key.clone(),
                raw_key: e.raw_key.clone(),
                value: e.value.clone(),
                path: p.path.clone(),
                line: e.line,
                section: p.name.clone(),
            });
        }
    }
    for v in vals(file, sec) {
        keys.set(v);
    }
    let type_val = keys
        .get("type")
        .cloned()
        .or_else(|| defaults.iter().find(|v| v.key == "type").cloned());
    let Some(type_val) = type_val else {
        let mut hint = String::new();
        if sec.get("password").is_some() || sec.get("factories").is_some() {
            hint = format!(" (for a slave, write [slave:{name}])");
        } else if name == "master" {
            hint = " (the master's section is [:master:])".to_string();
        }
        let known: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
        return Err(section_err(
            file,
            sec.line,
            &name,
            format!(
                "this factory has no `type`{hint}: add `type = NAME` with one of: {}; or name the section after a project ({})",
                schema::type_names(),
                known.join(", ")
            ),
        ));
    };
    let type_name = type_val.value.trim().to_ascii_lowercase();
    let Some(ty) = factory::find_type(&type_name) else {
        return Err(type_val.err(format!(
            "unknown factory type {:?}; use one of: {} (see `autobot list-factories --types`)",
            type_val.value,
            schema::type_names()
        )));
    };
    // DEFAULT keys this type accepts go first, under everything else.
    let mut all = Layered::default();
    for v in defaults
        .iter()
        .filter(|v| v.key != "type" && ty.accepts(&v.key))
    {
        all.set(v.clone());
    }
    for v in keys.0 {
        all.set(v);
    }

    let mut f = FactoryConfig {
        name: name.clone(),
        type_name: ty.name.to_string(),
        project: project.map(|p| p.name.clone()),
        ..FactoryConfig::default()
    };
    let mut checks = FactoryChecks {
        name: name.clone(),
        section_line: sec.line,
        depends_on: None,
        locks: Vec::new(),
        all: all.0.clone(),
    };
    let mut hg = Vec::new();
    let mut git = Vec::new();
    // step name -> (command Val, options), in order of the command keys.
    let mut steps: Vec<(String, Option<Val>, BTreeMap<String, String>)> = Vec::new();
    let mut step_options: Vec<(String, Val)> = Vec::new();
    for v in &all.0 {
        if let Some(rest) = v.key.strip_prefix("step.") {
            if ty.name != "shell" {
                return Err(v.err(format!(
                    "steps are only for `type = shell` (this factory's type is {}); accepted keys: {}",
                    ty.name,
                    ty.accepted_keys()
                )));
            }
            let (step, opt) = match rest.split_once('.') {
                Some((s, o)) => (s, Some(o)),
                None => (rest, None),
            };
            if step.is_empty()
                || !step
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(v.err(format!(
                    "a step name is letters, digits, `_` and `-` (write step.NAME = COMMAND), got {step:?}"
                )));
            }
            match opt {
                None => {
                    if v.value.trim().is_empty() {
                        return Err(v.err(
                            "expected a command, got nothing; e.g. `step.test = make check`",
                        ));
                    }
                    steps.push((step.to_string(), Some(v.clone()), BTreeMap::new()));
                }
                Some(opt) => {
                    let Some(spec) = schema::step_option(opt) else {
                        let hint =
                            schema::closest(opt, schema::STEP_OPTIONS.iter().map(|p| p.name))
                                .map(|k| format!(" (did you mean `{k}`?)"))
                                .unwrap_or_default();
                        return Err(v.err(format!(
                            "unknown step option {opt:?}{hint}; use one of: {}",
                            schema::step_option_names()
                        )));
                    };
                    if spec.name == "env.VAR" && !schema::is_env_name(&opt[4..]) {
                        return Err(v.err(format!(
                            "{:?} is not an environment variable name (letters, digits, `_`)",
                            &opt[4..]
                        )));
                    }
                    schema::check_value(spec.kind, &v.value).map_err(|m| v.err(m))?;
                    if spec.kind == ParamKind::LockRefs {
                        checks.locks.push(v.clone());
                    }
                    step_options.push((step.to_string(), v.clone()));
                }
            }
            continue;
        }
        let spec = schema::common_param(&v.key).or_else(|| ty.param(&v.key));
        let Some(spec) = spec else {
            let hint = ty
                .suggest(&v.key)
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            return Err(v.err(format!(
                "unknown key for a factory of type {}{hint}; accepted keys: {}",
                ty.name,
                ty.accepted_keys()
            )));
        };
        schema::check_value(spec.kind, &v.value).map_err(|m| v.err(m))?;
        let value = v.value.trim();
        let opt_str = || (!value.is_empty()).then(|| value.to_string());
        match v.key.as_str() {
            "type" => {}
            "description" => f.description = value.to_string(),
            "git" => git = parse_sources(v, SourceKind::Git, basedir)?,
            "hg" => hg = parse_sources(v, SourceKind::Hg, basedir)?,
            "sample" => f.sample = opt_str(),
            "platform" => f.platform = parse_bool(v)?,
            "category" => f.category = value.to_string(),
            "revlink" => f.revlink = value.to_string(),
            "branches" => f.branches = value.split_whitespace().map(String::from).collect(),
            "files" => f.files = value.split_whitespace().map(String::from).collect(),
            "periodic" => f.periodic = value.parse().ok(),
            "nightly" => f.nightly = opt_str(),
            "dependson" => {
                f.depends_on = opt_str();
                checks.depends_on = Some(v.clone());
            }
            "locks" => {
                f.locks = value.split_whitespace().map(String::from).collect();
                checks.locks.push(v.clone());
            }
            "mode" => {
                f.mode = match value.to_ascii_lowercase().as_str() {
                    "copy" => Mode::Copy,
                    "clobber" => Mode::Clobber,
                    "export" => Mode::Export,
                    _ => Mode::Update,
                }
            }
            "alwaysuselatest" => f.always_use_latest = parse_bool(v)?,
            "retry" => {
                f.retry = schema::parse_retry(value)
                    .ok()
                    .map(|(delay, repeats)| Retry { delay, repeats })
            }
            "treestable" => f.tree_stable = value.parse().ok(),
            "pollinterval" => f.poll_interval = value.parse().ok(),
            k if mail::FACTORY_KEYS.contains(&k) => {}
            _ => {
                f.params.insert(v.key.clone(), v.value.clone());
            }
        }
    }
    f.sources = hg;
    f.sources.extend(git);
    for (step, v) in step_options {
        let Some(entry) = steps.iter_mut().find(|(n, _, _)| n == &step) else {
            let names: Vec<&str> = steps.iter().map(|(n, _, _)| n.as_str()).collect();
            return Err(v.err(format!(
                "option for a step that does not exist; add `step.{step} = COMMAND` (steps of this factory: {})",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        };
        let opt = &v.key["step.".len() + step.len() + 1..];
        entry.2.insert(opt.to_string(), v.value.clone());
    }
    for (step, cmd, mut opts) in steps {
        if let Some(cmd) = cmd {
            opts.insert("command".to_string(), cmd.value);
        }
        f.steps.push((step, opts));
    }
    if ty.name == "shell" && f.steps.is_empty() {
        return Err(section_err(
            file,
            sec.line,
            &name,
            "a factory of type shell needs steps: add `step.NAME = COMMAND` lines (run in file order), e.g. `step.test = make check`",
        ));
    }
    Ok((f, checks))
}

fn read_slave(
    file: &Path,
    sec: &ini::IniSection,
    defaults: &[Val],
    master: &Layered,
    factories: &[FactoryConfig],
) -> Result<(SlaveConfig, Val), ConfigError> {
    let name = &sec.name["slave:".len()..];
    if !factory::is_plain_name(name) {
        return Err(section_err(
            file,
            sec.line,
            &sec.name,
            "a slave needs a name of letters, digits, `.`, `_` and `-`: [slave:NAME]",
        ));
    }
    let mut l = Layered::default();
    for v in defaults.iter().chain(master.0.iter()) {
        if SLAVE_KEYS.contains(&v.key.as_str()) {
            l.set(v.clone());
        }
    }
    for v in vals(file, sec) {
        if mail::SLAVE_MAIL_KEYS.contains(&v.key.as_str()) {
            continue;
        }
        if !SLAVE_KEYS.contains(&v.key.as_str()) {
            let where_ = if MASTER_KEYS.contains(&v.key.as_str()) {
                " (it belongs in [:master:])"
            } else {
                ""
            };
            return Err(v.err(format!(
                "unknown key for a slave{where_}; accepted keys: {}, notifyOnMissing, missingTimeout",
                SLAVE_KEYS.join(", ")
            )));
        }
        l.set(v);
    }
    let password = match l.get("password") {
        Some(v) if !v.value.is_empty() => v.clone(),
        Some(v) => return Err(v.err("the password is empty; slaves must prove who they are: set `password = SECRET`")),
        None => {
            return Err(section_err(
                file,
                sec.line,
                &sec.name,
                "no password: add `password = SECRET` to this section (or to [:master:] for every slave)",
            ))
        }
    };
    let os = match l.get("os") {
        None => Os::Linux,
        Some(v) => match v.value.trim().to_ascii_lowercase().as_str() {
            "linux" | "" => Os::Linux,
            "win" => Os::Win,
            "mac" => Os::Mac,
            _ => return Err(v.err(format!("expected linux, win or mac, got {:?}", v.value))),
        },
    };
    let max_builds = match l.get("max_builds") {
        None => 1,
        Some(v) => u32::try_from(parse_int(v, 1)?).map_err(|_| v.err("too large"))?,
    };
    let mut names = Vec::new();
    if let Some(v) = l.get("factories") {
        let words: Vec<&str> = v.value.split_whitespace().collect();
        if words.contains(&"*") {
            if words.len() > 1 {
                return Err(v.err("`*` means every factory and must stand alone; write `factories = *` or list names"));
            }
            names = factories.iter().map(|f| f.name.clone()).collect();
        } else {
            for w in words {
                if !factories.iter().any(|f| f.name == w) {
                    let known: Vec<&str> = factories.iter().map(|f| f.name.as_str()).collect();
                    return Err(v.err(format!(
                        "no factory named {w:?}; known factories: {} — add a [{w}] section (or `autobot create-project {w}`), or fix the name",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    )));
                }
                if !names.iter().any(|n| n == w) {
                    names.push(w.to_string());
                }
            }
            // Keep factory file order, as documented on SlaveConfig::factories.
            names.sort_by_key(|n| factories.iter().position(|f| &f.name == n));
        }
    }
    Ok((
        SlaveConfig {
            name: name.to_string(),
            password: password.value.clone(),
            factories: names,
            os,
            max_builds,
        },
        password,
    ))
}

/// Checks across sections: references, dependency cycles, builder names, and each
/// factory's steps.
fn cross_check(
    cfg: &MasterConfig,
    checks: &[FactoryChecks],
    file: &Path,
) -> Result<(), ConfigError> {
    let lock_names: Vec<&str> = cfg.locks.iter().map(|l| l.name.as_str()).collect();
    for c in checks {
        for v in &c.locks {
            for name in v.value.split_whitespace() {
                if !lock_names.contains(&name) {
                    return Err(v.err(format!(
                        "no lock named {name:?}; add a [lock:{name}] section{}",
                        if lock_names.is_empty() {
                            String::new()
                        } else {
                            format!(" or use one of: {}", lock_names.join(", "))
                        }
                    )));
                }
            }
        }
        if let Some(v) = &c.depends_on {
            let target = v.value.trim();
            if target == c.name {
                return Err(v.err("a factory cannot depend on itself"));
            }
            if cfg.factory(target).is_none() {
                let known: Vec<&str> = cfg
                    .factories
                    .iter()
                    .map(|f| f.name.as_str())
                    .filter(|n| *n != c.name)
                    .collect();
                return Err(v.err(format!(
                    "no factory named {target:?}; dependsOn names another factory section: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            // Follow the chain; coming back to this factory is a cycle.
            let mut seen = vec![c.name.as_str()];
            let mut cur = cfg.factory(target);
            while let Some(f) = cur {
                if seen.contains(&f.name.as_str()) {
                    seen.push(&f.name);
                    return Err(v.err(format!(
                        "dependsOn makes a cycle: {}; remove one of them",
                        seen.join(" -> ")
                    )));
                }
                seen.push(&f.name);
                cur = f.depends_on.as_deref().and_then(|d| cfg.factory(d));
            }
        }
    }
    let mut builders: HashMap<String, &BuilderConfig> = HashMap::new();
    let all = cfg.builders();
    for b in &all {
        if let Some(other) = builders.insert(b.name.clone(), b) {
            let line = checks
                .iter()
                .find(|c| c.name == b.factory)
                .map(|c| c.section_line)
                .unwrap_or(1);
            return Err(section_err(
                file,
                line,
                &b.factory,
                format!(
                    "builder name {} is made twice (factory {} on slave {}, factory {} on slave {}); rename a factory or a slave",
                    b.name, other.factory, other.slave, b.factory, b.slave
                ),
            ));
        }
    }
    let default_slave = SlaveConfig {
        name: "slave".to_string(),
        max_builds: 1,
        ..SlaveConfig::default()
    };
    for (f, c) in cfg.factories.iter().zip(checks) {
        let slave = cfg
            .slaves
            .iter()
            .find(|s| s.factories.contains(&f.name))
            .unwrap_or(&default_slave);
        if let Err(e) = factory::build_steps(f, slave) {
            let key = match &e {
                factory::FactoryError::BadValue { key, .. } => Some(key.to_ascii_lowercase()),
                factory::FactoryError::NoSource { .. } => None,
                factory::FactoryError::DuplicateDir { .. } => c
                    .all
                    .iter()
                    .find(|v| v.key == "git" || v.key == "hg")
                    .map(|v| v.key.clone()),
                _ => None,
            };
            let message = match &e {
                factory::FactoryError::BadValue { message, .. } => message.clone(),
                other => {
                    let text = other.to_string();
                    text.strip_prefix(&format!("factory {}: ", f.name))
                        .unwrap_or(&text)
                        .to_string()
                }
            };
            let at = key.and_then(|k| c.all.iter().find(|v| v.key.to_ascii_lowercase() == k));
            return Err(match at {
                Some(v) => v.err(message),
                None => section_err(file, c.section_line, &f.name, message),
            });
        }
    }
    Ok(())
}

/// What `autobot checkconfig` prints for a config that loads: the master's ports
/// and timers, each slave (os, factories), each factory (type, sources), each
/// builder `FACTORY-SLAVE`, and locks and users when there are any.
pub fn summary(cfg: &MasterConfig) -> String {
    let mut out = format!(
        "master: slaveport {}, htmlport {}, publichtmlport {}, pollInterval {}s, treeStable {}s, allowForce {}\n",
        cfg.slaveport, cfg.htmlport, cfg.publichtmlport, cfg.poll_interval, cfg.tree_stable, cfg.allow_force
    );
    if let Some(i) = &cfg.irc {
        out.push_str(&i.summary());
    }
    out.push_str(&mail::summary(cfg));
    out.push_str(&format!("\nslaves ({}):\n", cfg.slaves.len()));
    if cfg.slaves.is_empty() {
        out.push_str("  (none: add a [slave:NAME] section)\n");
    }
    for s in &cfg.slaves {
        let factories = if s.factories.is_empty() {
            "(no factories)".to_string()
        } else {
            s.factories.join(" ")
        };
        out.push_str(&format!(
            "  {}  os={}  max_builds={}  factories: {}\n",
            s.name,
            s.os.as_str(),
            s.max_builds,
            factories
        ));
    }
    out.push_str(&format!("\nfactories ({}):\n", cfg.factories.len()));
    for f in &cfg.factories {
        let sources: Vec<String> = f
            .sources
            .iter()
            .map(|s| format!("{} {}#{}", s.kind.as_str(), s.url, s.branch))
            .collect();
        let sources = if sources.is_empty() {
            "no sources".to_string()
        } else {
            sources.join(", ")
        };
        let mut line = format!("  {}  type={}  {}", f.name, f.type_name, sources);
        if let Some(p) = &f.project {
            line.push_str(&format!("  (project {p})"));
        }
        if !cfg.slaves.iter().any(|s| s.factories.contains(&f.name)) {
            line.push_str("  (no slave runs this factory)");
        }
        out.push_str(&line);
        out.push('\n');
    }
    let builders = cfg.builders();
    out.push_str(&format!("\nbuilders ({}):\n", builders.len()));
    for b in &builders {
        out.push_str(&format!("  {}\n", b.name));
    }
    if !cfg.locks.is_empty() {
        out.push_str(&format!("\nlocks ({}):\n", cfg.locks.len()));
        for l in &cfg.locks {
            let scope = match l.scope {
                LockScope::Master => "master",
                LockScope::Slave => "slave",
            };
            out.push_str(&format!(
                "  {}  scope={}  maxCount={}\n",
                l.name, scope, l.max_count
            ));
        }
    }
    if !cfg.users.is_empty() {
        let names: Vec<&str> = cfg.users.keys().map(String::as_str).collect();
        out.push_str(&format!("\nusers: {}\n", names.join(" ")));
    }
    if cfg.accepts_changes() {
        out.push_str(&format!(
            "\nsubmitted Changes: accepted from changeuser {} (sendchange, POST /api/v1/changes)\n",
            cfg.changeuser
        ));
    } else {
        out.push_str(
            "\nsubmitted Changes: refused (no changeuser and changepassword in [:master:])\n",
        );
    }
    out
}

#[cfg(test)]
mod tests;
