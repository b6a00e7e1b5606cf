//! What each scheduler is, read from the configuration: the change scheduler of
//! every factory (its branches, `treeStable`, `files`), `periodic`, `nightly` and
//! `dependsOn`; which Changes a change scheduler takes ([`accepts`]) and when a
//! timed one runs next ([`next_due`]).

use crate::config::MasterConfig;
use crate::db::changes::ChangeRow;
use crate::sources::redact_url;

use super::Cron;

/// Which branches a change scheduler follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Branches {
    /// `branches = *` (and a factory without sources or `branches`).
    Any,
    /// These names (the sources' branches by default).
    Only(Vec<String>),
}

/// What a scheduler reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulerKind {
    /// New Changes, after `tree_stable` quiet seconds per branch.
    Changes {
        branches: Branches,
        /// `files = REGEX…` (empty: every Change is important).
        files: Vec<String>,
        tree_stable: u64,
    },
    /// Every `seconds`.
    Periodic { seconds: u64 },
    /// At the minutes a cron expression names.
    Nightly { cron: String },
    /// After a successful BuildSet of the upstream factory that covered every
    /// one of `upstream_builders`.
    Dependent {
        upstream: String,
        upstream_builders: Vec<String>,
    },
}

/// One scheduler as the configuration defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSpec {
    /// `FACTORY`, `FACTORY:periodic`, `FACTORY:nightly` or `FACTORY:dependent`;
    /// the `scheduler` of its BuildSets and the key of its state.
    pub name: String,
    pub factory: String,
    /// Every builder of the factory.
    pub builders: Vec<String>,
    /// The factory's source URLs, without credentials.
    pub repositories: Vec<String>,
    /// Whether a branch and revision may be given to the build (a factory with
    /// several sources builds their configured branches, newest revisions).
    pub single_source: bool,
    pub kind: SchedulerKind,
}

/// The schedulers `config` defines, in factory order.
pub fn scheduler_specs(config: &MasterConfig) -> Vec<SchedulerSpec> {
    let builders = config.builders();
    let mut out = Vec::new();
    for f in &config.factories {
        let base = SchedulerSpec {
            name: f.name.clone(),
            factory: f.name.clone(),
            builders: builders
                .iter()
                .filter(|b| b.factory == f.name)
                .map(|b| b.name.clone())
                .collect(),
            repositories: f.sources.iter().map(|s| redact_url(&s.url)).collect(),
            single_source: f.sources.len() <= 1,
            kind: SchedulerKind::Periodic { seconds: 0 },
        };
        match &f.depends_on {
            Some(up) => out.push(SchedulerSpec {
                name: format!("{}:dependent", f.name),
                kind: SchedulerKind::Dependent {
                    upstream: up.clone(),
                    upstream_builders: builders
                        .iter()
                        .filter(|b| b.factory == *up)
                        .map(|b| b.name.clone())
                        .collect(),
                },
                ..base.clone()
            }),
            None => {
                // A factory without sources builds whatever branch it is told.
                let branches = if f.branches.iter().any(|b| b == "*")
                    || (f.branches.is_empty() && f.sources.is_empty())
                {
                    Branches::Any
                } else if f.branches.is_empty() {
                    Branches::Only(f.sources.iter().map(|s| s.branch.clone()).collect())
                } else {
                    Branches::Only(f.branches.clone())
                };
                out.push(SchedulerSpec {
                    kind: SchedulerKind::Changes {
                        branches,
                        files: f.files.clone(),
                        tree_stable: f.tree_stable.unwrap_or(config.tree_stable),
                    },
                    ..base.clone()
                });
            }
        }
        if let Some(seconds) = f.periodic.filter(|s| *s > 0) {
            out.push(SchedulerSpec {
                name: format!("{}:periodic", f.name),
                kind: SchedulerKind::Periodic { seconds },
                ..base.clone()
            });
        }
        if let Some(cron) = &f.nightly {
            out.push(SchedulerSpec {
                name: format!("{}:nightly", f.name),
                kind: SchedulerKind::Nightly { cron: cron.clone() },
                ..base.clone()
            });
        }
    }
    out
}

/// Whether a change scheduler takes `change`: `Some((branch key, important))`.
///
/// A Change from a repository must come from one of the factory's sources; a Change
/// without a repository (`sendchange`) is taken when its project is empty, names this
/// factory or names no factory at all. A Change without a branch is on the default
/// branch, which every change scheduler follows.
pub fn accepts(
    spec: &SchedulerSpec,
    files: &[regex::Regex],
    change: &ChangeRow,
    factories: &[String],
) -> Option<(String, bool)> {
    let SchedulerKind::Changes { branches, .. } = &spec.kind else {
        return None;
    };
    if !change.repository.is_empty() {
        let repo = redact_url(&change.repository);
        if !spec.repositories.contains(&repo) {
            return None;
        }
    } else if !change.project.is_empty()
        && change.project != spec.factory
        && factories.contains(&change.project)
    {
        return None;
    }
    let key = change.branch.clone().unwrap_or_default();
    if !key.is_empty() {
        if let Branches::Only(list) = branches {
            if !list.contains(&key) {
                return None;
            }
        }
    }
    let important = files.is_empty()
        || change
            .files
            .iter()
            .any(|f| files.iter().any(|re| re.is_match(f)));
    Some((key, important))
}

/// When a periodic/nightly scheduler whose last run was at `last_run` runs next.
pub fn next_due(kind: &SchedulerKind, last_run: i64) -> Option<i64> {
    match kind {
        SchedulerKind::Periodic { seconds } => Some(last_run + *seconds as i64),
        SchedulerKind::Nightly { cron } => Cron::parse(cron).ok()?.next_after(last_run),
        _ => None,
    }
}
