//! The poller manager: one git, hg, svn, bzr, darcs, cvs or arch poller per distinct repository URL of the
//! configured factories, polling all the branches any factory wants from it every
//! `pollInterval` seconds (the shortest any of those factories asks for), and at
//! once when someone asks ([`ChangeBus::request_poll`](crate::changes::ChangeBus));
//! requests made while a poll runs coalesce into one more poll.
//!
//! Each poll runs on the blocking pool into a mirror under `MASTERDIR/mirrors`
//! ([`crate::changes::mirror_path`]). Its Changes go through
//! [`ChangeBus::add`](crate::changes::ChangeBus::add) *before* the new heads are
//! stored in `poller_heads`, so a master killed in between reports those Changes
//! again rather than losing them, and a master that was down reports every commit
//! that landed meanwhile. The first poll of a branch records its head without
//! building history. Failures are logged with their reason and retried at the next
//! interval.
//!
//! [`start`] runs the pollers the configuration in force needs and restarts them
//! when a reconfig changes that set (a poll in progress finishes first).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::changes::{
    mirror_path, ArchPoller, BzrPoller, Change, ChangeBus, CvsPoller, DarcsPoller, GitPoller,
    HgPoller, PollResult, SvnPoller,
};
use crate::config::MasterConfig;
use crate::db::changes::NewChange;
use crate::db::Db;
use crate::sources::{redact_url, svn_branch_path, SourceKind};

/// What the poller tasks share.
#[derive(Clone)]
pub struct PollerContext {
    pub db: Db,
    /// Where the Changes found go (and where polls are asked for).
    pub changes: ChangeBus,
    /// The master directory (pollers keep their mirrors under it).
    pub basedir: std::path::PathBuf,
}

/// Run the pollers of the configuration in force until `stop` turns true; a
/// reconfig that changes them restarts them (a poll in progress finishes first).
pub fn start(
    ctx: PollerContext,
    config: watch::Receiver<Arc<MasterConfig>>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(supervise(ctx, config, stop))
}

/// Stop the running pollers' task, waiting `within` for it before aborting it.
async fn stop_task(stop: watch::Sender<bool>, mut task: JoinHandle<()>, within: Duration) {
    stop.send_replace(true);
    if tokio::time::timeout(within, &mut task).await.is_err() {
        task.abort();
    }
}

async fn supervise(
    ctx: PollerContext,
    mut config: watch::Receiver<Arc<MasterConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let locks = MirrorLocks::default();
    let mut polls: Option<(Vec<PollerSpec>, watch::Sender<bool>, JoinHandle<()>)> = None;
    let mut config_open = true;
    loop {
        let cfg = config.borrow_and_update().clone();
        let pspecs = poller_specs(&cfg);
        if polls.as_ref().map(|(s, _, _)| s) != Some(&pspecs) {
            if let Some((_, tx, task)) = polls.take() {
                tracing::info!("reconfig: restarting the pollers");
                stop_task(tx, task, Duration::from_secs(30)).await;
            }
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(run(ctx.clone(), pspecs.clone(), locks.clone(), rx));
            polls = Some((pspecs, tx, task));
        }
        tokio::select! {
            r = config.changed(), if config_open => {
                if r.is_err() {
                    config_open = false;
                }
            }
            _ = stopped(&mut stop) => break,
        }
    }
    if let Some((_, tx, task)) = polls {
        stop_task(tx, task, Duration::from_secs(10)).await;
    }
}

/// Returns when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One repository to poll, as the configuration defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerSpec {
    pub kind: SourceKind,
    /// As configured (may hold credentials; never logged as is).
    pub url: String,
    /// Every branch a factory builds from this repository.
    pub branches: Vec<String>,
    /// svn, bzr: the path below the URL of each of `branches` (same order); empty
    /// for git and hg.
    pub paths: Vec<String>,
    /// Seconds between polls.
    pub interval: u64,
    /// The first factory using the repository (the Changes' project).
    pub project: String,
    pub revlink: Option<String>,
    pub category: Option<String>,
}

/// The pollers `config` needs: one per (kind, URL), branches merged, in factory
/// order.
pub fn poller_specs(config: &MasterConfig) -> Vec<PollerSpec> {
    let mut out: Vec<PollerSpec> = Vec::new();
    for f in &config.factories {
        let interval = f.poll_interval.unwrap_or(config.poll_interval).max(1);
        for s in &f.sources {
            let mut branches = vec![s.branch.clone()];
            // Named extra branches of a single-source factory are polled too.
            if f.sources.len() == 1 {
                branches.extend(f.branches.iter().filter(|b| *b != "*").cloned());
            }
            let path = |b: &str| match s.kind {
                SourceKind::Svn => svn_branch_path(s, b),
                SourceKind::Bzr | SourceKind::Darcs => b.trim_matches('/').to_string(),
                SourceKind::Git | SourceKind::Hg | SourceKind::Cvs | SourceKind::Arch => {
                    String::new()
                }
            };
            match out.iter_mut().find(|p| p.kind == s.kind && p.url == s.url) {
                Some(p) => {
                    p.interval = p.interval.min(interval);
                    for b in branches {
                        if !p.branches.contains(&b) {
                            if matches!(
                                s.kind,
                                SourceKind::Svn | SourceKind::Bzr | SourceKind::Darcs
                            ) {
                                p.paths.push(path(&b));
                            }
                            p.branches.push(b);
                        }
                    }
                }
                None => {
                    let mut uniq: Vec<String> = Vec::new();
                    for b in branches {
                        if !uniq.contains(&b) {
                            uniq.push(b);
                        }
                    }
                    let paths = match s.kind {
                        SourceKind::Svn | SourceKind::Bzr | SourceKind::Darcs => {
                            uniq.iter().map(|b| path(b)).collect()
                        }
                        SourceKind::Git | SourceKind::Hg | SourceKind::Cvs | SourceKind::Arch => {
                            Vec::new()
                        }
                    };
                    out.push(PollerSpec {
                        kind: s.kind,
                        url: s.url.clone(),
                        branches: uniq,
                        paths,
                        interval,
                        project: f.name.clone(),
                        revlink: (!f.revlink.is_empty()).then(|| f.revlink.clone()),
                        category: (!f.category.is_empty()).then(|| f.category.clone()),
                    })
                }
            }
        }
    }
    out
}

/// One lock per mirror directory, shared across reconfigs: a poll still running
/// when its poller was replaced finishes before the new poller touches the mirror.
#[derive(Clone, Default)]
struct MirrorLocks(Arc<Mutex<HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>>>);

impl MirrorLocks {
    fn get(&self, path: &std::path::Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(path.to_path_buf()).or_default().clone()
    }
}

/// Run every poller until `stop`.
async fn run(
    ctx: PollerContext,
    specs: Vec<PollerSpec>,
    locks: MirrorLocks,
    stop: watch::Receiver<bool>,
) {
    let tasks: Vec<_> = specs
        .into_iter()
        .map(|spec| tokio::spawn(poll_loop(ctx.clone(), spec, locks.clone(), stop.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

enum Poller {
    Git(GitPoller),
    Hg(HgPoller),
    Svn(SvnPoller),
    Bzr(BzrPoller),
    Darcs(DarcsPoller),
    Cvs(CvsPoller),
    Arch(ArchPoller),
}

impl Poller {
    fn poll(
        &self,
        last: &BTreeMap<String, String>,
    ) -> Result<PollResult, crate::changes::PollError> {
        match self {
            Poller::Git(p) => p.poll(last),
            Poller::Hg(p) => p.poll(last),
            Poller::Svn(p) => p.poll(last),
            Poller::Bzr(p) => p.poll(last),
            Poller::Darcs(p) => p.poll(last),
            Poller::Cvs(p) => p.poll(last),
            Poller::Arch(p) => p.poll(last),
        }
    }
}

fn poller_for(ctx: &PollerContext, spec: &PollerSpec) -> Arc<Poller> {
    // Every kind of poller carries the same labels for its Changes.
    macro_rules! labelled {
        ($poller:expr) => {{
            let mut p = $poller;
            p.revlink = spec.revlink.clone();
            p.project = spec.project.clone();
            p.category = spec.category.clone();
            p
        }};
    }
    let mirror = mirror_path(&ctx.basedir, &spec.url);
    let url = spec.url.clone();
    // svn, bzr and darcs poll each branch at its own path.
    let branch_paths = || -> Vec<(String, String)> {
        spec.branches
            .iter()
            .cloned()
            .zip(spec.paths.iter().cloned())
            .collect()
    };
    Arc::new(match spec.kind {
        SourceKind::Git => Poller::Git(labelled!(GitPoller::new(
            url,
            spec.branches.clone(),
            mirror
        ))),
        SourceKind::Hg => Poller::Hg(labelled!(HgPoller::new(url, spec.branches.clone(), mirror))),
        SourceKind::Svn => Poller::Svn(labelled!(SvnPoller::new(url, branch_paths()))),
        SourceKind::Bzr => Poller::Bzr(labelled!(BzrPoller::new(url, branch_paths()))),
        SourceKind::Darcs => Poller::Darcs(labelled!(DarcsPoller::new(url, branch_paths()))),
        // The CVS poller's passfile and tla's HOME live in the repository's
        // directory under MASTERDIR/mirrors.
        SourceKind::Cvs => Poller::Cvs(labelled!(CvsPoller::new(
            url,
            spec.branches.clone(),
            mirror
        ))),
        SourceKind::Arch => Poller::Arch(labelled!(ArchPoller::new(
            url,
            spec.branches.clone(),
            mirror
        ))),
    })
}

/// A poller's Change as the bus stores it, cut to the caps every Change follows
/// (a huge commit message is cut with a marker rather than refused).
fn new_change(c: Change) -> NewChange {
    crate::changes::validate::fit(NewChange {
        who: c.who,
        files: c.files,
        comments: c.comments,
        revision: Some(c.revision),
        // An svn or bzr source without `#BRANCH` polls its URL as branch "".
        branch: Some(c.branch).filter(|b| !b.is_empty()),
        when: c.when,
        repository: c.repository,
        category: c.category.unwrap_or_default(),
        links: c.links,
        project: c.project,
    })
}

async fn poll_loop(
    ctx: PollerContext,
    spec: PollerSpec,
    locks: MirrorLocks,
    mut stop: watch::Receiver<bool>,
) {
    let name = redact_url(&spec.url);
    let poller = poller_for(&ctx, &spec);
    let lock = locks.get(&mirror_path(&ctx.basedir, &spec.url));
    let requests = ctx.changes.poll_queue(&spec.url);
    let interval = Duration::from_secs(spec.interval);
    tracing::info!(
        "polling {} {name} ({}) every {} s",
        spec.kind.as_str(),
        spec.branches.join(", "),
        spec.interval
    );
    // Several masters on one database poll each repository once: the master
    // holding the lease polls, the others ask again every third of
    // masterTimeout, so that one takes over within it when the holder dies.
    let lease = format!("poller:{}:{name}", spec.kind.as_str());
    let retry = Duration::from_secs_f64(ctx.db.master_timeout().max(3) as f64 / 3.0);
    loop {
        if *stop.borrow() {
            return;
        }
        let started = tokio::time::Instant::now();
        let mut next = started + interval;
        if ctx.db.hold_lease(&lease).await {
            let _guard = lock.lock().await;
            // This poll covers every request made so far; later ones queue one more.
            requests.take();
            poll_once(&ctx, &name, &poller).await;
        } else {
            requests.take();
            next = started + interval.min(retry);
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep_until(next) => {}
            _ = requests.requested() => tracing::info!("poll of {name} requested"),
        }
    }
}

/// Poll once and store what was found: Changes first, then heads.
async fn poll_once(ctx: &PollerContext, name: &str, poller: &Arc<Poller>) {
    let last = match ctx.db.poller_heads(name).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("poller {name}: cannot read its last revisions: {e}; retrying");
            return;
        }
    };
    let p = poller.clone();
    let last2 = last.clone();
    let result = match tokio::task::spawn_blocking(move || p.poll(&last2)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("poller {name}: the poll task failed: {e}; retrying");
            return;
        }
    };
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("poller {name}: {e}; retrying at the next interval");
            return;
        }
    };
    for (branch, e) in &r.failed {
        tracing::warn!("poller {name}: branch {branch}: {e}; retrying at the next interval");
    }
    for branch in &r.forced {
        tracing::warn!(
            "poller {name}: branch {branch} was rewritten (its head is not a descendant of {}); \
             reporting the commits of the new history only",
            last.get(branch).map(String::as_str).unwrap_or("?")
        );
    }
    for (branch, head) in &r.heads {
        if !last.contains_key(branch) {
            tracing::info!("poller {name}: branch {branch} starts at {head}");
        }
    }
    let n = r.changes.len();
    if n > 0 {
        let news: Vec<NewChange> = r.changes.into_iter().map(new_change).collect();
        if let Err(e) = ctx.changes.add(news).await {
            tracing::error!("poller {name}: cannot store {n} Changes: {e}; retrying");
            return;
        }
    }
    let moved: BTreeMap<String, String> = r
        .heads
        .into_iter()
        .filter(|(b, h)| last.get(b) != Some(h))
        .collect();
    if !moved.is_empty() {
        if let Err(e) = ctx
            .db
            .set_poller_heads(name, moved, crate::calendar::now_f64())
            .await
        {
            tracing::error!(
                "poller {name}: cannot store its heads: {e}; the Changes may be reported again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_poller_per_repository_with_every_branch() {
        let ini = "[:master:]\npollInterval = 30\n\n[a]\ntype = shell\ngit = /srv/x.git#main\nstep.x = true\n\
                   branches = main dev\n\n[b]\ntype = shell\ngit = /srv/x.git#rel\nstep.x = true\npollInterval = 5\n\n\
                   [c]\ntype = shell\nhg = /srv/y#default\nstep.x = true\n";
        let projects = crate::config::projects(None).unwrap();
        let cfg = crate::config::load_from_str(
            std::path::Path::new("/m/master.ini"),
            std::path::Path::new("/m"),
            ini,
            &projects,
        );
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let specs = poller_specs(&cfg);
        assert_eq!(specs.len(), 2, "{specs:?}");
        assert_eq!(specs[0].branches, vec!["main", "dev", "rel"]);
        assert_eq!(specs[0].interval, 5);
        assert_eq!(specs[0].project, "a");
        assert_eq!(specs[1].kind, SourceKind::Hg);
        assert_eq!(specs[1].interval, 30);
    }
}
