//! `master.ini` and the slave's `slave.ini`: the whole configuration of autobot.
//!
//! `master.ini` has three kinds of sections: `[:master:]` (ports, timers and the
//! defaults every slave inherits), `[slave:NAME]` (one slave each) and any other
//! section, which is a factory: a project built by one of the built-in factory types
//! in [`crate::factory`]. Two more are optional: `[lock:NAME]` (a lock builds or
//! steps can hold) and `[users]` (`name = password` for the web's force button);
//! `[try]` opens try jobs and `[changesource:NAME]` reads a maildir of commit mails
//! ([`changesource`]).
//! `[DEFAULT]` keys apply to every section that accepts them.
//!
//! Loading validates everything up front — including turning every factory into its
//! steps once — and every error names the file, line, section and key, says what
//! was expected and how to fix it. Keys are case-insensitive; section names are not.
//! What loads but lets strangers in (a password printed in the documentation, force
//! open to anyone on `htmlport`) becomes a [`ConfigWarning`] at the same place.
//! Submitted Changes (`sendchange`, `POST /api/v1/changes`) are accepted only when
//! `changeuser` and `changepassword` are both set; there is no default pair.

pub mod changesource;
pub mod ini;
pub mod irc;
pub mod mail;
pub mod projects;
mod read;
pub mod secrets;
pub mod slave;
pub mod trysection;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::factory::{self, schema, ParamKind};
use crate::sources::{Mode, Retry, Source, SourceKind};

pub use projects::{list_factories_text, projects, Project, ProjectSource};

pub use read::{load, load_from_str};
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
    /// The address each port listens on (`slaveport = 127.0.0.1:9010`); `None`
    /// (a bare port) means every interface, as before addresses were accepted.
    pub slaveport_addr: Option<IpAddr>,
    pub htmlport_addr: Option<IpAddr>,
    pub publichtmlport_addr: Option<IpAddr>,
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
    /// `logHorizon`, `buildHorizon`, `changeHorizon` and `logCompression`: what
    /// the master's retention task deletes or compresses.
    pub retention: Retention,
    /// `secretsDir`: the build secrets (`%(secret:NAME)s`), read and checked
    /// with the file; empty without the key.
    pub secrets: std::sync::Arc<crate::secrets::Secrets>,
    /// The line of `secretsDir` (0: not written).
    pub secrets_line: usize,
    /// `db` and `dbPasswordFile`: where the master keeps its history.
    pub database: Database,
    /// `masterName`: this master among several on one database (default: the
    /// host name).
    pub master_name: String,
    /// `masterTimeout`: seconds after which the other masters sharing the
    /// database take a silent master for dead (default 30): its running Builds
    /// end as EXCEPTION, its BuildRequests go back to the queue, its pollers
    /// and timed schedulers move to a live master.
    pub master_timeout: u64,
    /// `sharedDir`: where step logs and artifacts are kept, so that every master
    /// sharing one database can serve every Build's logs and artifacts (a
    /// directory all of them mount: NFS, CephFS, …). `None`: the master
    /// directory, as for one master.
    pub shared_dir: Option<PathBuf>,
    /// The line of `sharedDir` (0: not written).
    pub shared_dir_line: usize,
    /// `maxArtifactSize`: the largest artifact a Build may upload (bytes;
    /// default [`DEFAULT_MAX_ARTIFACT_SIZE`]), unless its factory says otherwise.
    pub max_artifact_size: u64,
    /// Slaves in file order.
    pub slaves: Vec<SlaveConfig>,
    /// Factories in file order.
    pub factories: Vec<FactoryConfig>,
    /// `[lock:NAME]` sections in file order.
    pub locks: Vec<LockConfig>,
    /// `[users]`: web users allowed to force builds (name as written → password).
    pub users: BTreeMap<String, String>,
    /// `[try]`: who may send try jobs, to which builders; `None`: try is off.
    pub try_jobs: Option<trysection::TryConfig>,
    /// `[changesource:NAME]` sections (maildirs of commit mails), in file order.
    pub change_sources: Vec<changesource::MaildirSourceConfig>,
    /// What is valid but unsafe (documented passwords, force open to anyone), each
    /// at its place in the file; `checkconfig` prints them and the master logs them.
    pub warnings: Vec<ConfigWarning>,
    /// Sources written as local paths, with where: what [`check_local_sources`]
    /// looks at on disk (`checkconfig`; loading itself does not, as `create`
    /// writes the sample repositories after the file).
    pub local_sources: Vec<LocalSource>,
}

/// A factory's source that is a path on the master's machine (not a URL), and the
/// line that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSource {
    pub kind: SourceKind,
    /// The repository's directory (absolute, as the factory's source has it).
    pub dir: PathBuf,
    pub path: PathBuf,
    pub line: usize,
    /// `[section] key: `.
    pub context: String,
    /// The embedded sample `autobot create` writes into this directory
    /// (`sample = NAME` with the source `./repos/NAME`): not yet written is fine.
    pub sample: Option<String>,
}

/// Check every local source path of `cfg` on disk: an error (at the line that
/// names it) for a path that does not exist or is not a repository of its VC (a
/// git work tree or bare repository; an hg repository). URLs are not checked,
/// nor a sample's repository that `autobot create` has not written yet.
pub fn check_local_sources(cfg: &MasterConfig) -> Result<(), ConfigError> {
    changesource::check_maildirs(&cfg.change_sources)?;
    for s in &cfg.local_sources {
        let err = |message: String| ConfigError::At {
            path: s.path.clone(),
            line: s.line,
            context: s.context.clone(),
            message,
        };
        if s.kind == SourceKind::Svn {
            // A file:// URL names a path inside the repository (trunk, a branch):
            // the repository is the nearest directory holding svn's `format` and `db`.
            let is_svn_repo =
                |d: &std::path::Path| d.join("format").is_file() && d.join("db").is_dir();
            if !s.dir.ancestors().any(is_svn_repo) {
                return Err(err(format!(
                    "{} is not in a Subversion repository (`svnadmin create DIR` makes one; or fix the path)",
                    s.dir.display()
                )));
            }
            continue;
        }
        if !s.dir.exists() {
            if s.sample.is_some() {
                continue;
            }
            return Err(err(format!(
                "{} does not exist; make the repository there, or fix the path (./ and ../ are relative to the master directory)",
                s.dir.display()
            )));
        }
        let is_repo = match s.kind {
            SourceKind::Git => {
                s.dir.join(".git").exists()
                    || (s.dir.join("HEAD").is_file() && s.dir.join("objects").is_dir())
            }
            SourceKind::Hg => s.dir.join(".hg").is_dir(),
            SourceKind::Svn => true,
            SourceKind::Bzr => s.dir.join(".bzr").is_dir(),
            SourceKind::Darcs => s.dir.join("_darcs").is_dir(),
            SourceKind::Cvs => s.dir.join("CVSROOT").is_dir(),
            SourceKind::Arch => s.dir.join("=meta-info").is_dir(),
        };
        if !is_repo {
            let (vc, make) = match s.kind {
                SourceKind::Git => ("git", "git init"),
                SourceKind::Hg => ("hg", "hg init"),
                SourceKind::Svn => ("svn", "svnadmin create"),
                SourceKind::Bzr => ("bzr", "brz init"),
                SourceKind::Darcs => ("darcs", "darcs init"),
                SourceKind::Cvs => ("CVS", "cvs -d DIR init"),
                SourceKind::Arch => ("GNU Arch", "tla make-archive NAME DIR"),
            };
            return Err(err(format!(
                "{} is not a {vc} repository (`{make}` makes one; or fix the path, or the key: git = for git, hg = for Mercurial)",
                s.dir.display()
            )));
        }
    }
    Ok(())
}

/// What `autobot force` can say when the master has no builder `builder`: if it
/// names a factory (`FACTORY` or `FACTORY-SLAVE`) that is not run by that slave or
/// any slave, how to make a slave run it; `None` when it names no such factory.
pub fn unbuilt_factory_hint(cfg: &MasterConfig, builder: &str) -> Option<String> {
    let file = cfg.path.display();
    let fix = |f: &str, slave: Option<&str>| {
        let who = match slave {
            Some(s) => format!("[slave:{s}]"),
            None if cfg.slaves.is_empty() => "a new [slave:NAME] section".to_string(),
            None => {
                let names: Vec<String> = cfg
                    .slaves
                    .iter()
                    .map(|s| format!("[slave:{}]", s.name))
                    .collect();
                names.join(" or ")
            }
        };
        format!(
            "add {f} to the `factories =` line of {who} in {file} (or write `factories = *`), then `autobot reconfig` the master; its builder is then FACTORY-SLAVE, e.g. {f}-{}",
            slave.or_else(|| cfg.slaves.first().map(|s| s.name.as_str())).unwrap_or("SLAVE")
        )
    };
    if let Some(f) = cfg.factory(builder) {
        let runs: Vec<String> = cfg
            .builders()
            .into_iter()
            .filter(|b| b.factory == f.name)
            .map(|b| b.name)
            .collect();
        return Some(if runs.is_empty() {
            format!(
                "factory {} is run by no slave, so it has no builder; {}",
                f.name,
                fix(&f.name, None)
            )
        } else {
            format!(
                "a builder is named FACTORY-SLAVE: force one of {}",
                runs.join(", ")
            )
        });
    }
    for f in &cfg.factories {
        let Some(slave) = builder.strip_prefix(&format!("{}-", f.name)) else {
            continue;
        };
        if let Some(s) = cfg.slave(slave) {
            if !s.factories.contains(&f.name) {
                return Some(format!(
                    "slave {slave} does not run factory {}; {}",
                    f.name,
                    fix(&f.name, Some(slave))
                ));
            }
        }
    }
    None
}

/// `maxArtifactSize` when `[:master:]` does not say: 1 GiB.
pub const DEFAULT_MAX_ARTIFACT_SIZE: u64 = 1 << 30;

/// What the master keeps of its history, as Buildbot's `logHorizon`,
/// `buildHorizon` and `changeHorizon` (in days here, fractions allowed): `None`
/// keeps everything (the default), so the disk fills only when the operator
/// has not said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Retention {
    /// Step log files of builds finished longer ago are deleted; the Build and
    /// Step rows stay, and the log reads as deleted.
    pub log_horizon: Option<f64>,
    /// Builds finished longer ago leave the history: their rows, Steps, logs and
    /// notifications (and BuildRequests/BuildSets left with no Build).
    pub build_horizon: Option<f64>,
    /// Changes older than this (by their commit time) that nothing in the history
    /// refers to any more are deleted.
    pub change_horizon: Option<f64>,
    /// `artifactHorizon`: the artifacts of Builds finished longer ago are
    /// deleted (files and rows; the Build stays).
    pub artifact_horizon: Option<f64>,
    /// `logCompression`: how finished logs are stored.
    pub log_compression: LogCompression,
}

impl Retention {
    /// Whether the retention task has anything to do.
    pub fn is_active(&self) -> bool {
        self.log_horizon.is_some()
            || self.build_horizon.is_some()
            || self.change_horizon.is_some()
            || self.artifact_horizon.is_some()
            || self.log_compression != LogCompression::None
    }

    /// The line `checkconfig` prints.
    pub fn summary(&self) -> String {
        let d = |h: Option<f64>| match h {
            Some(d) => format!("{d} days"),
            None => "none (kept)".to_string(),
        };
        format!(
            "retention: logHorizon {}, buildHorizon {}, changeHorizon {}, logCompression {}\n",
            d(self.log_horizon),
            d(self.build_horizon),
            d(self.change_horizon),
            match self.log_compression {
                LogCompression::None => "none",
                LogCompression::Zstd => "zstd",
            }
        )
    }
}

/// `logCompression`: finished step logs stay as written (`none`, the default) or
/// are compressed to `NAME.log.zst` in the background (`zstd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogCompression {
    #[default]
    None,
    Zstd,
}

/// Where the master keeps its history (`db =` in `[:master:]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Database {
    /// `state.sqlite` in the master directory: no `db` (or `db = sqlite`).
    #[default]
    Sqlite,
    /// `db = postgresql://USER@HOST:PORT/DBNAME`: a PostgreSQL database that
    /// several masters may share.
    Postgres {
        url: crate::db::pg::PgUrl,
        /// `dbPasswordFile` (absolute); `None`: `PGPASSFILE` or `~/.pgpass`.
        password_file: Option<PathBuf>,
        /// The line of `db =`, for messages about it.
        line: usize,
    },
}

impl Database {
    /// The password to connect with: `dbPasswordFile`'s, or `None` (the
    /// connection then looks in `PGPASSFILE` / `~/.pgpass`).
    pub fn password(&self) -> Result<Option<String>, crate::db::pg::PgError> {
        match self {
            Database::Postgres {
                password_file: Some(f),
                ..
            } => crate::db::pg::read_password_file(f).map(Some),
            _ => Ok(None),
        }
    }

    /// The database in a few words (no password: none is in the URL).
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite => crate::db::DB_FILE.to_string(),
            Database::Postgres { url, .. } => url.to_string(),
        }
    }

    /// The line `checkconfig` prints.
    pub fn summary(&self, master_name: &str) -> String {
        match self {
            Database::Sqlite => format!(
                "database: SQLite ({}); masterName {master_name}\n",
                crate::db::DB_FILE
            ),
            Database::Postgres {
                url, password_file, ..
            } => format!(
                "database: {url}, password {}; masterName {master_name}\n",
                match password_file {
                    Some(f) => format!("from {}", f.display()),
                    None => "from PGPASSFILE or ~/.pgpass, if any".to_string(),
                }
            ),
        }
    }
}

/// A running master keeps the database it started with: `db` (and
/// `masterName`, which names its claims in a shared database) change only with
/// a restart (after `copy-db` when the history moves), never on reconfig, which
/// would leave the running Builds' rows behind in the old one.
pub fn check_database_unchanged(old: &MasterConfig, new: &MasterConfig) -> Result<(), ConfigError> {
    let line = match &new.database {
        Database::Postgres { line, .. } => *line,
        Database::Sqlite => 0,
    };
    let differs = |a: &Database, b: &Database| match (a, b) {
        (Database::Sqlite, Database::Sqlite) => false,
        (Database::Postgres { url: x, .. }, Database::Postgres { url: y, .. }) => {
            x.to_string() != y.to_string()
        }
        _ => true,
    };
    if old.data_dir() != new.data_dir() {
        return Err(ConfigError::At {
            path: new.path.clone(),
            line: new.shared_dir_line,
            context: "[:master:] ".to_string(),
            message: format!(
                "sharedDir: the master keeps its logs and artifacts in {} and would move them to {}; \
                 running Builds write there: stop the master, move the logs/ and artifacts/ \
                 directories, and start it again (`autobot restart {}`)",
                old.data_dir().display(),
                new.data_dir().display(),
                new.basedir.display()
            ),
        });
    }
    let what = if differs(&old.database, &new.database) {
        format!(
            "db: the master runs on {} and `{}` would change it",
            old.database.describe(),
            new.database.describe()
        )
    } else if !matches!(new.database, Database::Postgres { .. }) {
        // One master on its own SQLite: its name and timeout matter to no other.
        return Ok(());
    } else if old.master_name != new.master_name {
        format!(
            "masterName: the master runs as {:?} and would become {:?}",
            old.master_name, new.master_name
        )
    } else if old.master_timeout != new.master_timeout {
        format!(
            "masterTimeout: the master runs with {} s and would have {} s",
            old.master_timeout, new.master_timeout
        )
    } else {
        return Ok(());
    };
    Err(ConfigError::At {
        path: new.path.clone(),
        line,
        context: "[:master:] ".to_string(),
        message: format!(
            "{what}; a reconfig cannot move a running master: restart it (`autobot restart {}`) \
             — to move its history to PostgreSQL, stop it and run `autobot copy-db` first",
            new.basedir.display()
        ),
    })
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
            slaveport_addr: None,
            htmlport_addr: None,
            publichtmlport_addr: None,
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
            master_timeout: 30,
            shared_dir: None,
            shared_dir_line: 0,
            log: LogRotation::default(),
            retention: Retention::default(),
            secrets: Default::default(),
            secrets_line: 0,
            database: Database::Sqlite,
            master_name: String::new(),
            max_artifact_size: DEFAULT_MAX_ARTIFACT_SIZE,
            slaves: Vec::new(),
            factories: Vec::new(),
            locks: Vec::new(),
            users: BTreeMap::new(),
            try_jobs: None,
            change_sources: Vec::new(),
            warnings: Vec::new(),
            local_sources: Vec::new(),
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
    /// Steps of one's own (`step.NAME`, any type) in file order: (step name,
    /// options lower-cased incl. `command`; `env.VAR` keeps the case of VAR).
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
    /// `pullRequests`: build pull requests of the factory's repository.
    pub pull_requests: bool,
    /// `pullRequestBranches`: the target branches whose requests are built
    /// (empty: all).
    pub pull_request_branches: Vec<String>,
    /// `pullRequestsFromForks`: build requests from forks too (untrusted).
    pub pull_requests_from_forks: bool,
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

impl FactoryConfig {
    /// What the factory type needs of this section to make its steps.
    pub fn recipe(&self) -> factory::Recipe<'_> {
        factory::Recipe {
            name: &self.name,
            type_name: &self.type_name,
            params: &self.params,
            steps: &self.steps,
            sources: &self.sources,
            mode: self.mode,
            always_use_latest: self.always_use_latest,
            retry: self.retry,
            platform: self.platform,
        }
    }
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
    /// Where the `logs/` and `artifacts/` directories are: `sharedDir`, or the
    /// master directory.
    pub fn data_dir(&self) -> PathBuf {
        self.shared_dir
            .clone()
            .unwrap_or_else(|| self.basedir.clone())
    }

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
    check_database_unchanged(old, new)?;
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

/// What `autobot checkconfig` prints for a config that loads: the master's ports
/// and timers, each slave (os, factories), each factory (type, sources), each
/// builder `FACTORY-SLAVE`, and locks and users when there are any.
pub fn summary(cfg: &MasterConfig) -> String {
    let mut out = format!(
        "master: slaveport {}, htmlport {}, publichtmlport {}, pollInterval {}s, treeStable {}s, allowForce {}\n",
        cfg.slave_listen(),
        cfg.html_listen(),
        cfg.public_listen(),
        cfg.poll_interval,
        cfg.tree_stable,
        cfg.allow_force
    );
    out.push_str(&format!(
        "listening: slaves on {}, web on {}, read-only web on {}\n",
        cfg.slave_listen().describe(),
        cfg.html_listen().describe(),
        cfg.public_listen().describe()
    ));
    out.push_str(&cfg.retention.summary());
    out.push_str(&cfg.database.summary(&cfg.master_name));
    out.push_str(&format!(
        "artifacts: maxArtifactSize {} bytes, artifactHorizon {}\n",
        cfg.max_artifact_size,
        cfg.retention
            .artifact_horizon
            .map_or("none (kept)".to_string(), |d| format!("{d} days"))
    ));
    if let Some(i) = &cfg.irc {
        out.push_str(&i.summary());
    }
    out.push_str(&mail::summary(cfg));
    if let Some(dir) = cfg.secrets.dir() {
        let names: Vec<&str> = cfg.secrets.names().collect();
        out.push_str(&format!(
            "secrets: {} in {}: {}\n",
            names.len(),
            dir.display(),
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(" ")
            }
        ));
    }
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
    if !cfg.change_sources.is_empty() {
        out.push_str(&format!(
            "\nchange sources ({}):\n",
            cfg.change_sources.len()
        ));
        for c in &cfg.change_sources {
            out.push_str(&format!(
                "  {}  maildir {}  format={}{}{}\n",
                c.name,
                c.maildir.display(),
                c.format.as_str(),
                c.prefix
                    .as_deref()
                    .map(|p| format!("  prefix={p}"))
                    .unwrap_or_default(),
                if c.project.is_empty() {
                    String::new()
                } else {
                    format!("  project={}", c.project)
                }
            ));
        }
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
    if let Some(t) = &cfg.try_jobs {
        let names: Vec<&str> = t.users.keys().map(String::as_str).collect();
        out.push_str(&format!(
            "\ntry jobs: from {} on {} (patches up to {} bytes)\n",
            names.join(" "),
            if t.builders.is_empty() {
                "every builder".to_string()
            } else {
                t.builders.join(" ")
            },
            t.max_patch_size
        ));
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

/// Where one of the master's ports listens, as written in `master.ini` and given
/// to `create --htmlport`: `PORT` (every interface), `IPv4:PORT`, `[IPv6]:PORT`
/// or `localhost:PORT` (127.0.0.1). Host names other than `localhost` are not
/// accepted: a listener binds one address, and a name may resolve to several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// `None`: every interface (0.0.0.0).
    pub addr: Option<IpAddr>,
    pub port: u16,
}

/// How to write a port with an address, for error messages.
pub const LISTEN_FORMS: &str =
    "write a port (`8010`, every interface) or an address and a port: `127.0.0.1:8010`, `[::1]:8010` or `localhost:8010`";

impl MasterConfig {
    /// Where `slaveport` listens.
    pub fn slave_listen(&self) -> Listen {
        Listen::new(self.slaveport_addr, self.slaveport)
    }

    /// Where `htmlport` listens (what the CLI connects to).
    pub fn html_listen(&self) -> Listen {
        Listen::new(self.htmlport_addr, self.htmlport)
    }

    /// Where `publichtmlport` listens.
    pub fn public_listen(&self) -> Listen {
        Listen::new(self.publichtmlport_addr, self.publichtmlport)
    }
}

impl Listen {
    /// A port on `addr` (`None`: every interface).
    pub fn new(addr: Option<IpAddr>, port: u16) -> Listen {
        Listen { addr, port }
    }

    /// The socket address to bind: the address, or 0.0.0.0 for every interface.
    pub fn bind_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            self.port,
        )
    }

    /// Whether only this machine can reach the port (a loopback address).
    pub fn is_loopback(&self) -> bool {
        self.addr.is_some_and(|a| a.is_loopback())
    }

    /// The host a client on this machine connects to: the bound address, or
    /// 127.0.0.1 (::1) when the port listens on every interface.
    pub fn connect_host(&self) -> IpAddr {
        match self.addr {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(IpAddr::V4(a)) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(IpAddr::V6(a)) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            Some(a) => a,
        }
    }

    /// Where a browser on this machine finds the pages on this port:
    /// `http://localhost:PORT/` when it listens on every interface, else its
    /// address.
    pub fn local_url(&self) -> String {
        match self.addr {
            Some(_) => format!("http://{}:{}/", self.connect_host_text(), self.port),
            None => format!("http://localhost:{}/", self.port),
        }
    }

    /// The connect host as written in a URL or `HOST:PORT` (IPv6 in brackets).
    pub fn connect_host_text(&self) -> String {
        match self.connect_host() {
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        }
    }

    /// `every interface, port 8010` or `127.0.0.1:8010`: for logs and summaries.
    pub fn describe(&self) -> String {
        match self.addr {
            None => format!("every interface, port {}", self.port),
            Some(_) => self.to_string(),
        }
    }
}

impl std::fmt::Display for Listen {
    /// As `master.ini` takes it back: `8010`, `127.0.0.1:8010`, `[::1]:8010`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            None => write!(f, "{}", self.port),
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port),
            Some(a) => write!(f, "{a}:{}", self.port),
        }
    }
}

impl std::str::FromStr for Listen {
    type Err = String;

    /// Parse `PORT`, `IPv4:PORT`, `[IPv6]:PORT` or `localhost:PORT`; the error
    /// says what was wrong and how to write it.
    fn from_str(text: &str) -> Result<Listen, String> {
        let text = text.trim();
        let port_of = |p: &str| {
            schema::parse_digits(p)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    format!(
                        "expected a TCP port number from 1 to 65535 (digits only, no sign), got {p:?}; {LISTEN_FORMS}"
                    )
                })
        };
        if !text.contains(':') {
            return Ok(Listen::new(None, port_of(text)?));
        }
        if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?} opens `[` without closing it; {LISTEN_FORMS}"))?;
            let port = after.strip_prefix(':').ok_or_else(|| {
                format!("{text:?} has no `:PORT` after the address; {LISTEN_FORMS}")
            })?;
            let addr: Ipv6Addr = host
                .parse()
                .map_err(|_| format!("{host:?} is not an IPv6 address; {LISTEN_FORMS}"))?;
            return Ok(Listen::new(Some(IpAddr::V6(addr)), port_of(port)?));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("{text:?} has no `:PORT`; {LISTEN_FORMS}"));
        };
        if host.contains(':') {
            return Err(format!(
                "{text:?}: an IPv6 address needs brackets, as in `[::1]:8010`; {LISTEN_FORMS}"
            ));
        }
        let addr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            match host.parse::<Ipv4Addr>() {
                Ok(a) => IpAddr::V4(a),
                Err(_) => {
                    return Err(format!(
                        "{host:?} is not an IP address or `localhost` (host names are not accepted: a port binds one address); {LISTEN_FORMS}"
                    ))
                }
            }
        };
        Ok(Listen::new(Some(addr), port_of(port)?))
    }
}
