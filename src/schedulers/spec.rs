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
        /// `pullRequests = true`: which pull requests it builds (`None`: none).
        pulls: Option<PullRules>,
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

/// Which pull requests a change scheduler builds (`pullRequests = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRules {
    /// `pullRequestBranches`: the target branches (`Any` by default).
    pub branches: Branches,
    /// `pullRequestsFromForks`: requests from another repository too.
    pub forks: bool,
}

/// The category of a pull request's Change (the hooks set it).
pub const PULL_CATEGORY: &str = "pull";

/// The property of a pull request's Change that holds its number.
pub const PR_NUMBER: &str = "pr_number";

/// The scheduler's key of pull request `number`'s Changes: they wait and build
/// apart from the branch's own (a git branch name never holds `:`).
pub fn pull_key(number: &str) -> String {
    format!("pull:{number}")
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
                        pulls: f.pull_requests.then(|| PullRules {
                            branches: if f.pull_request_branches.is_empty()
                                || f.pull_request_branches.iter().any(|b| b == "*")
                            {
                                Branches::Any
                            } else {
                                Branches::Only(f.pull_request_branches.clone())
                            },
                            forks: f.pull_requests_from_forks,
                        }),
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
    // A pull request's Change is for the factories that build them only.
    if change.category == PULL_CATEGORY {
        return None;
    }
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

/// Whether a change scheduler takes pull request Change `change` with its
/// properties: `Some(key)` ([`pull_key`]) when the factory builds pull requests
/// (`pullRequests`) of the Change's repository, its target branch is one of
/// `pullRequestBranches`, and it comes from a fork only with
/// `pullRequestsFromForks`.
pub fn accepts_pull(
    spec: &SchedulerSpec,
    change: &ChangeRow,
    properties: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<String> {
    let SchedulerKind::Changes {
        pulls: Some(rules), ..
    } = &spec.kind
    else {
        return None;
    };
    if change.category != PULL_CATEGORY || !spec.single_source || change.repository.is_empty() {
        return None;
    }
    if !spec.repositories.contains(&redact_url(&change.repository)) {
        return None;
    }
    let props = properties?;
    let number = props.get(PR_NUMBER)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let target = change.branch.as_deref().unwrap_or_default();
    if let Branches::Only(list) = &rules.branches {
        if !list.iter().any(|b| b == target) {
            return None;
        }
    }
    if crate::engine::build_is_untrusted(props) && !rules.forks {
        return None;
    }
    Some(pull_key(number))
}

/// When a periodic/nightly scheduler whose last run was at `last_run` runs next.
pub fn next_due(kind: &SchedulerKind, last_run: i64) -> Option<i64> {
    match kind {
        SchedulerKind::Periodic { seconds } => Some(last_run + *seconds as i64),
        SchedulerKind::Nightly { cron } => Cron::parse(cron).ok()?.next_after(last_run),
        _ => None,
    }
}
