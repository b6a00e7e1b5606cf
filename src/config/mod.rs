//! `master.ini` and the slave's `slave.ini`: the whole configuration of autobot.
//!
//! `master.ini` has three kinds of sections: `[:master:]` (ports, timers and the
//! defaults every slave inherits), `[slave:NAME]` (one slave each) and any other
//! section, which is a factory: a project built by one of the built-in factory types
//! in [`crate::factory`]. Loading validates everything up front and every error
//! names the file, line, section and key, says what was expected and how to fix it.

pub mod slave;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    pub botname: String,
    pub irc_host: String,
    pub irc_channels: Vec<String>,
    pub domain: String,
    pub recipients: Vec<String>,
    /// Credentials `sendchange` must present (manual defaults change/changepw).
    pub changeuser: String,
    pub changepassword: String,
    /// Slaves in file order.
    pub slaves: Vec<SlaveConfig>,
    /// Factories in file order.
    pub factories: Vec<FactoryConfig>,
}

/// Operating system of a slave, as `os =` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
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
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Git,
    Hg,
}

/// One repository a factory checks out: `URL[#branch]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub kind: SourceKind,
    /// The URL; `./` and `../` paths are already made absolute against the master dir.
    pub url: String,
    /// The branch (`master` for git, `default` for hg when not given).
    pub branch: String,
}

/// One factory section: a project and the factory type that builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FactoryConfig {
    pub name: String,
    /// The built-in factory type (`autotools`, `shell`, …).
    pub type_name: String,
    pub description: String,
    /// Sources in order: hg entries then git entries, each in the order given.
    pub sources: Vec<Source>,
    /// Every other key (lower-cased), validated against the type's parameters;
    /// `factory` interprets them.
    pub params: BTreeMap<String, String>,
    /// `shell` steps in file order: (step name, options lower-cased incl. `command`).
    pub steps: Vec<(String, BTreeMap<String, String>)>,
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
}

/// The `master.ini` for a path that is either the file or the master directory.
pub fn master_ini_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("master.ini")
    } else {
        path.to_path_buf()
    }
}
