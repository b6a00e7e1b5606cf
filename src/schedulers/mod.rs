//! Schedulers: from Changes (and clocks, and upstream results) to BuildSets, as the
//! Buildbot 0.7 manual's "Schedulers" chapter describes, configured per factory.
//!
//! Every factory gets, from its keys in `master.ini`:
//!
//! * a **change scheduler** named after the factory (unless it has `dependsOn`):
//!   it takes the Changes of the factory's repositories on its branches (the
//!   sources' branches, or `branches = a b` / `branches = *`), waits until no
//!   *important* Change arrived for `treeStable` seconds on a branch (one timer per
//!   branch), then submits one BuildSet carrying every Change it took on that
//!   branch. With `files = REGEX…` only Changes touching a matching file are
//!   important; the others are recorded and join the next build;
//! * `FACTORY:periodic` (`periodic = SECONDS`) and `FACTORY:nightly`
//!   (`nightly = CRON`, UTC) that build the newest source as well;
//! * `FACTORY:dependent` (`dependsOn = UPSTREAM`): when a BuildSet of UPSTREAM
//!   covering every UPSTREAM builder succeeds (`success` or `warnings`), it builds
//!   the same SourceStamp here; a failure upstream fires nothing.
//!
//! All state — waiting Changes, timers, the last Change handled, the last
//! periodic/nightly run, the upstream BuildSets seen — is in SQLite
//! ([`crate::db::schedulers`]), so a master restarted mid-timer neither loses a
//! Change nor builds twice. The Changes come from the [`ChangeBus`] (fed by the
//! pollers of [`crate::changes::pollers`], webhooks and `sendchange`); BuildSets go
//! to the [`Engine`]. [`start`] runs the schedulers and restarts them when a
//! reconfig changes what they do. Time comes from a [`Clock`] that tests can drive.
//!
//! Where several masters share a PostgreSQL database, the schedulers run on one
//! of them, the holder of [`SCHEDULERS_LEASE`] (another takes them over within
//! `masterTimeout` when it dies, starting from the state in the database);
//! every master's [`ChangeBus`] hears of every Change, so a Change that arrived
//! through any master is scheduled once, and a tree-stable timer spans them all.

mod clock;
pub mod cron;
mod spec;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::changes::bus::{Routed, RoutedChange};
use crate::changes::ChangeBus;
use crate::config::MasterConfig;
use crate::db::changes::{ChangeRow, NewChange};
use crate::db::requests::{Consume, NewBuildSet, NewSourceStamp, SubmittedBuildSet};
use crate::db::schedulers::{ChangeBatch, PendingChange};
use crate::db::{Db, DbError};
use crate::engine::{Engine, EngineError, EngineEvent};

pub use clock::Clock;
pub use cron::{Cron, CronError};
pub use spec::{
    accepts, accepts_pull, next_due, pull_key, scheduler_specs, Branches, PullRules, SchedulerKind,
    SchedulerSpec, PULL_CATEGORY,
};

/// What the scheduler tasks share.
#[derive(Clone)]
pub struct SchedulerContext {
    pub db: Db,
    pub engine: Engine,
    pub changes: ChangeBus,
    pub clock: Clock,
    /// The newest Change id when the master started, taken by the schedulers'
    /// first start: a scheduler new to the database begins after it, so a Change
    /// that arrives while the schedulers' task is still starting is not skipped.
    /// Later (re)starts use the newest id at that time.
    pub start_watermark: Arc<std::sync::Mutex<Option<i64>>>,
}

/// Run the schedulers of the configuration in force until `stop` turns true; a
/// reconfig that changes what they do restarts them.
pub fn start(
    ctx: SchedulerContext,
    config: watch::Receiver<Arc<MasterConfig>>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(supervise(ctx, config, stop))
}

/// A task with its own stop switch.
struct Stoppable {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Stoppable {
    async fn stop(self, within: Duration) {
        self.stop.send_replace(true);
        let mut task = self.task;
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
        }
    }
}

async fn supervise(
    ctx: SchedulerContext,
    mut config: watch::Receiver<Arc<MasterConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sched: Option<(Vec<SchedulerSpec>, Stoppable)> = None;
    let mut config_open = true;
    loop {
        let cfg = config.borrow_and_update().clone();
        let specs = scheduler_specs(&cfg);
        if sched.as_ref().map(|(s, _)| s) != Some(&specs) {
            if let Some((_, old)) = sched.take() {
                tracing::info!("reconfig: restarting the schedulers");
                old.stop(Duration::from_secs(10)).await;
            }
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(run_schedulers(ctx.clone(), specs.clone(), rx));
            sched = Some((specs, Stoppable { stop: tx, task }));
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
    if let Some((_, s)) = sched {
        s.stop(Duration::from_secs(10)).await;
    }
}

/// The schedulers' in-memory view of their SQLite state.
struct Running {
    ctx: SchedulerContext,
    specs: Vec<SchedulerSpec>,
    factories: Vec<String>,
    /// Compiled `files` filters by scheduler name.
    files: HashMap<String, Vec<regex::Regex>>,
    /// Last Change handled by change scheduler.
    last: HashMap<String, i64>,
    /// Tree-stable deadlines by (scheduler, branch).
    timers: BTreeMap<(String, String), f64>,
    /// The (scheduler, branch) keys that may have Changes waiting in the
    /// database (a key not here has none: its Changes may fire at once,
    /// [`Running::fire_in_hand`]).
    waiting: HashSet<(String, String)>,
    /// Next run of periodic/nightly schedulers (unix seconds).
    next_run: BTreeMap<String, f64>,
    /// Dependent schedulers' watermarks.
    watermarks: HashMap<String, i64>,
}

/// What handling some Changes decided ([`Running::decide`]).
#[derive(Default)]
struct Handling {
    /// The Changes recorded as waiting, their timers, the last handled.
    batch: ChangeBatch,
    /// The timers (re)started, to follow here once recorded.
    timers: Vec<((String, String), f64)>,
    /// (scheduler, branch, its Changes, the newest id handled): BuildSets
    /// fired at once ([`Running::fire_in_hand`]).
    in_hand: Vec<(SchedulerSpec, String, Vec<ChangeRow>, i64)>,
    /// The schedulers that took none, with the newest id handled.
    idle: Vec<(String, i64)>,
}

/// Why a scheduler step stopped.
enum Halt {
    /// The master is shutting down.
    Stopping,
    Db(DbError),
    /// Several masters share the database and another now holds
    /// [`SCHEDULERS_LEASE`].
    LeaseLost,
}

/// Where several masters share one database, the schedulers run on the one
/// master holding this lease (taken over within `masterTimeout` when it dies):
/// every Change, whichever master stored it, reaches them through the
/// [`ChangeBus`], so a tree-stable timer spans the cluster and a Change is
/// scheduled once.
pub const SCHEDULERS_LEASE: &str = "schedulers";

/// How often a master asks for (or renews) [`SCHEDULERS_LEASE`]: a third of
/// `masterTimeout`.
fn lease_period(db: &Db) -> Duration {
    Duration::from_secs_f64(db.master_timeout().max(3) as f64 / 3.0)
}

/// Wait until this master holds [`SCHEDULERS_LEASE`] (at once on SQLite);
/// `false` when the master stops first.
async fn wait_for_lease(db: &Db, stop: &mut watch::Receiver<bool>) -> bool {
    let mut said = false;
    loop {
        if db.hold_lease(SCHEDULERS_LEASE).await {
            if said {
                tracing::info!("the schedulers run on this master now");
            }
            return true;
        }
        if !said {
            tracing::info!("the schedulers run on another master of the database");
            said = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(lease_period(db)) => {}
            _ = stopped(stop) => return false,
        }
    }
}

impl From<DbError> for Halt {
    fn from(e: DbError) -> Halt {
        Halt::Db(e)
    }
}

const LAST_CHANGE: &str = "last_change";
const LAST_RUN: &str = "last_run";
const LAST_BUILDSET: &str = "last_buildset";
const WATERMARK: &str = "watermark";

async fn run_schedulers(
    ctx: SchedulerContext,
    specs: Vec<SchedulerSpec>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if !wait_for_lease(&ctx.db, &mut stop).await {
            return;
        }
        let mut changes = ctx.changes.subscribe();
        // Every master's events: a dependent scheduler hears of an upstream
        // BuildSet that another master completed.
        let mut events = ctx.engine.live();
        let mut r = match Running::start(ctx.clone(), specs.clone()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("schedulers cannot start: {e}; retrying in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        match r.run(&mut changes, &mut events, &mut stop).await {
            Halt::Stopping => return,
            Halt::LeaseLost => {
                tracing::warn!("another master took the schedulers' lease; they stop here");
            }
            Halt::Db(e) => {
                tracing::error!("schedulers: {e}; restarting them in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stopped(&mut stop) => return,
                }
            }
        }
    }
}

impl Running {
    async fn start(ctx: SchedulerContext, specs: Vec<SchedulerSpec>) -> Result<Running, DbError> {
        let db = ctx.db.clone();
        let now = ctx.clock.now();
        let watermark = ctx
            .start_watermark
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        db.forget_schedulers_except(specs.iter().map(|s| s.name.clone()).collect())
            .await?;
        let mut r = Running {
            factories: specs.iter().map(|s| s.factory.clone()).collect(),
            ctx,
            specs: Vec::new(),
            files: HashMap::new(),
            last: HashMap::new(),
            timers: BTreeMap::new(),
            waiting: HashSet::new(),
            next_run: BTreeMap::new(),
            watermarks: HashMap::new(),
        };
        let mut max_change = watermark;
        for spec in &specs {
            match &spec.kind {
                SchedulerKind::Changes { files, .. } => {
                    let mut res = Vec::new();
                    for f in files {
                        match regex::Regex::new(f) {
                            Ok(re) => res.push(re),
                            Err(e) => tracing::error!("scheduler {}: files {f:?}: {e}", spec.name),
                        }
                    }
                    r.files.insert(spec.name.clone(), res);
                    let dropped = db.forget_built_changes(&spec.name).await?;
                    if dropped > 0 {
                        tracing::info!(
                            "scheduler {}: {dropped} Changes were already built before the restart",
                            spec.name
                        );
                    }
                    let last = match db.scheduler_value(&spec.name, LAST_CHANGE).await? {
                        Some(v) => v,
                        None => {
                            // A new scheduler starts with the Changes to come.
                            let m = match max_change {
                                Some(m) => m,
                                None => {
                                    let m = db.max_change_id().await?;
                                    max_change = Some(m);
                                    m
                                }
                            };
                            db.set_scheduler_value(&spec.name, LAST_CHANGE, m).await?;
                            m
                        }
                    };
                    r.last.insert(spec.name.clone(), last);
                }
                SchedulerKind::Periodic { .. } | SchedulerKind::Nightly { .. } => {
                    if let SchedulerKind::Nightly { cron } = &spec.kind {
                        if let Err(e) = Cron::parse(cron) {
                            tracing::error!("scheduler {}: {e}", spec.name);
                            continue;
                        }
                    }
                    let mut last_run = match db.scheduler_value(&spec.name, LAST_RUN).await? {
                        Some(v) => v,
                        None => {
                            db.set_scheduler_value(&spec.name, LAST_RUN, now as i64)
                                .await?;
                            now as i64
                        }
                    };
                    // Submitted but not recorded (the master died in between): that
                    // run happened.
                    let recorded = db.scheduler_value(&spec.name, LAST_BUILDSET).await?;
                    let newest = db.newest_buildset_of(&spec.name).await?;
                    if let Some(newest) = newest.filter(|n| Some(*n) != recorded) {
                        if let Some(due) = next_due(&spec.kind, last_run) {
                            last_run = due.min(now as i64);
                        }
                        db.set_scheduler_value(&spec.name, LAST_RUN, last_run)
                            .await?;
                        db.set_scheduler_value(&spec.name, LAST_BUILDSET, newest)
                            .await?;
                    }
                    if let Some(due) = next_due(&spec.kind, last_run) {
                        r.next_run.insert(spec.name.clone(), due as f64);
                    }
                }
                SchedulerKind::Dependent { .. } => {
                    let w = match db.scheduler_value(&spec.name, WATERMARK).await? {
                        Some(v) => v,
                        None => {
                            let m = db.max_buildset_id().await?;
                            db.set_scheduler_value(&spec.name, WATERMARK, m).await?;
                            m
                        }
                    };
                    r.watermarks.insert(spec.name.clone(), w);
                }
            }
            r.specs.push(spec.clone());
        }
        for (s, b, d) in db.scheduler_timers().await? {
            if r.last.contains_key(&s) {
                r.timers.insert((s, b), d);
            }
        }
        r.waiting = db.scheduler_waiting_keys().await?.into_iter().collect();
        Ok(r)
    }

    async fn run(
        &mut self,
        changes: &mut broadcast::Receiver<ChangeRow>,
        events: &mut broadcast::Receiver<EngineEvent>,
        stop: &mut watch::Receiver<bool>,
    ) -> Halt {
        // A Change that comes alone to this master's bus is stored here,
        // with the BuildSet it fires at once ([`Self::take_routed`]).
        let (router, mut routed) = mpsc::channel::<RoutedChange>(64);
        self.ctx.changes.route_to(router);
        let halt = self.follow(changes, events, stop, &mut routed).await;
        // Those not taken yet go back to the bus, which stores them.
        routed.close();
        while let Ok(RoutedChange { reply, .. }) = routed.try_recv() {
            let _ = reply.send(Routed::Declined);
        }
        halt
    }

    /// [`Self::run`]: catch up, then follow the Changes, the routed ones,
    /// the clocks and the upstream BuildSets until halted.
    async fn follow(
        &mut self,
        changes: &mut broadcast::Receiver<ChangeRow>,
        events: &mut broadcast::Receiver<EngineEvent>,
        stop: &mut watch::Receiver<bool>,
        routed: &mut mpsc::Receiver<RoutedChange>,
    ) -> Halt {
        // Catch up with what arrived while nobody listened.
        if let Err(h) = self.catch_up().await {
            return h;
        }
        if let Err(h) = self.dependents().await {
            return h;
        }
        let shared = self.ctx.db.shared();
        let mut lease_check = tokio::time::Instant::now() + lease_period(&self.ctx.db);
        loop {
            if *stop.borrow() {
                return Halt::Stopping;
            }
            if let Err(h) = self.fire_due().await {
                return h;
            }
            let wake = self
                .timers
                .values()
                .chain(self.next_run.values())
                .copied()
                .fold(f64::INFINITY, f64::min);
            let clock = self.ctx.clock.clone();
            tokio::select! {
                _ = stopped(stop) => return Halt::Stopping,
                // On a shared database: still the schedulers' master?
                _ = tokio::time::sleep_until(lease_check), if shared => {
                    lease_check = tokio::time::Instant::now() + lease_period(&self.ctx.db);
                    if !self.ctx.db.hold_lease(SCHEDULERS_LEASE).await {
                        return Halt::LeaseLost;
                    }
                }
                r = changes.recv() => {
                    if let Err(h) = self.received(r, changes).await {
                        return h;
                    }
                }
                Some(RoutedChange { change, reply }) = routed.recv() => {
                    // The Changes announced before it are handled first.
                    use broadcast::error::{RecvError, TryRecvError};
                    let r = match changes.try_recv() {
                        Err(TryRecvError::Empty) => Ok(()),
                        first => {
                            let first = first.map_err(|e| match e {
                                TryRecvError::Lagged(n) => RecvError::Lagged(n),
                                _ => RecvError::Closed,
                            });
                            self.received(first, changes).await
                        }
                    };
                    let outcome = match r {
                        Ok(()) => self.take_routed(change).await,
                        Err(h) => Err(h),
                    };
                    match outcome {
                        Ok(answer) => {
                            let _ = reply.send(answer);
                        }
                        Err(h) => {
                            let _ = reply.send(Routed::Declined);
                            return h;
                        }
                    }
                }
                r = events.recv(), if !self.watermarks.is_empty() => {
                    let relevant = match r {
                        Ok(EngineEvent::BuildSetComplete { .. }) => true,
                        Ok(_) => false,
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => return Halt::Stopping,
                    };
                    if relevant {
                        if let Err(h) = self.dependents().await {
                            return h;
                        }
                    }
                }
                _ = clock.sleep_until(wake), if wake.is_finite() => {}
            }
        }
    }

    /// Handle what the bus announced: `r` and the Changes queued after it
    /// (re-reading them all when some were missed).
    async fn received(
        &mut self,
        r: Result<ChangeRow, broadcast::error::RecvError>,
        changes: &mut broadcast::Receiver<ChangeRow>,
    ) -> Result<(), Halt> {
        match r {
            Ok(row) => {
                let mut rows = vec![row];
                while let Ok(more) = changes.try_recv() {
                    rows.push(more);
                }
                self.handle(rows).await
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("schedulers fell {n} Changes behind; re-reading them");
                self.catch_up().await
            }
            Err(broadcast::error::RecvError::Closed) => {
                *changes = self.ctx.changes.subscribe();
                self.catch_up().await
            }
        }
    }

    /// Store a Change that came alone to this master's bus
    /// ([`ChangeBus::route_to`]; every Change announced before it handled):
    /// when it makes one scheduler fire a BuildSet at once and nothing else
    /// ([`Self::fires_in_hand`]), the Change and the BuildSet go in one
    /// write, which submits the BuildSet only if the Change gets the id
    /// next after the last handled
    /// ([`crate::db::requests::insert_change_firing`]; else it is handled
    /// when announced, as any other). Otherwise declined: the bus stores it.
    async fn take_routed(&mut self, change: NewChange) -> Result<Routed, Halt> {
        if change.category == PULL_CATEGORY {
            return Ok(Routed::Declined);
        }
        // The last Change handled, the same for every change scheduler.
        let mut lasts = self
            .specs
            .iter()
            .filter(|s| matches!(s.kind, SchedulerKind::Changes { .. }))
            .map(|s| self.last.get(&s.name).copied().unwrap_or(0));
        let Some(seen) = lasts.next() else {
            return Ok(Routed::Declined);
        };
        if lasts.any(|l| l != seen) {
            return Ok(Routed::Declined);
        }
        let expected = seen + 1;
        let row = change.clone().stored_as(expected);
        let Handling {
            batch,
            mut in_hand,
            mut idle,
            ..
        } = self.decide(std::slice::from_ref(&row), expected, &HashMap::new());
        if !batch.pending.is_empty() || in_hand.len() != 1 {
            return Ok(Routed::Declined);
        }
        let Some((spec, branch, changes, max_id)) = in_hand.pop() else {
            return Ok(Routed::Declined);
        };
        let mut handled = vec![(spec.name.clone(), max_id)];
        handled.append(&mut idle);
        let consume = Consume {
            scheduler: spec.name.clone(),
            branch: branch.clone(),
            changes: Vec::new(),
            handled: handled.clone(),
        };
        let bs = changes_buildset(&spec, &branch, &changes);
        match self
            .ctx
            .engine
            .store_change_firing(change, expected, bs, consume)
            .await
        {
            Ok((id, Some(submitted))) => {
                tracing::info!(
                    "scheduler {}: BuildSet {} with 1 Changes on {} (stored with change {id})",
                    spec.name,
                    submitted.buildset_id,
                    branch_name(&branch)
                );
                self.last.extend(handled);
                Ok(Routed::Stored(id))
            }
            // Another Change came between: this one is handled when announced.
            Ok((id, None)) => Ok(Routed::Stored(id)),
            Err(EngineError::Db(e)) => Ok(Routed::Failed(e)),
            Err(e) => {
                tracing::warn!("cannot store a Change with its BuildSet: {e}; storing it alone");
                Ok(Routed::Declined)
            }
        }
    }

    /// Handle every stored Change above the lowest last-handled id.
    async fn catch_up(&mut self) -> Result<(), Halt> {
        let Some(from) = self.last.values().min().copied() else {
            return Ok(());
        };
        let rows = self.ctx.changes.since(from).await?;
        for chunk in rows.chunks(5000) {
            self.handle(chunk.to_vec()).await?;
        }
        Ok(())
    }

    /// Record `rows` (oldest first) in every change scheduler that takes them,
    /// (re)starting tree-stable timers, in one transaction. A scheduler with
    /// `treeStable = 0` whose Changes in hand are all important, on one branch
    /// with nothing waiting, submits their BuildSet at once instead
    /// ([`Self::fire_in_hand`]).
    async fn handle(&mut self, rows: Vec<ChangeRow>) -> Result<(), Halt> {
        let Some(max_id) = rows.iter().map(|r| r.id).max() else {
            return Ok(());
        };
        // The properties of pull requests' Changes (number, fork or not).
        let pull_ids: Vec<i64> = rows
            .iter()
            .filter(|r| r.category == PULL_CATEGORY)
            .map(|r| r.id)
            .collect();
        let pull_props = if pull_ids.is_empty() {
            HashMap::new()
        } else {
            self.ctx.db.change_properties(pull_ids).await?
        };
        let Handling {
            mut batch,
            timers,
            in_hand,
            mut idle,
        } = self.decide(&rows, max_id, &pull_props);
        // The schedulers that took none of these Changes move on with the
        // first BuildSet fired from them, or with the others' record.
        if !batch.handled.is_empty() || in_hand.is_empty() {
            batch.handled.append(&mut idle);
        }
        if !batch.handled.is_empty() {
            self.record(batch, timers).await?;
        }
        for (spec, branch, changes, max_id) in in_hand {
            let mut handled = vec![(spec.name.clone(), max_id)];
            handled.append(&mut idle);
            self.fire_in_hand(&spec, branch, changes, handled).await?;
        }
        Ok(())
    }

    /// What handling `rows` (oldest first, the newest `max_id`) decides,
    /// before anything is written: for each change scheduler, the Changes
    /// it takes, recorded as waiting (with their timers) or fired at once,
    /// or none.
    fn decide(
        &self,
        rows: &[ChangeRow],
        max_id: i64,
        pull_props: &HashMap<i64, BTreeMap<String, String>>,
    ) -> Handling {
        let now = self.ctx.clock.now();
        let mut h = Handling::default();
        for spec in &self.specs {
            let SchedulerKind::Changes { tree_stable, .. } = &spec.kind else {
                continue;
            };
            let last = self.last.get(&spec.name).copied().unwrap_or(0);
            if max_id <= last {
                continue;
            }
            let files = self.files.get(&spec.name).map(Vec::as_slice).unwrap_or(&[]);
            let mut taken: Vec<(&ChangeRow, String, bool)> = Vec::new();
            for row in rows.iter().filter(|r| r.id > last) {
                let accepted = if row.category == PULL_CATEGORY {
                    accepts_pull(spec, row, pull_props.get(&row.id)).map(|k| (k, true))
                } else {
                    accepts(spec, files, row, &self.factories)
                };
                let Some((branch, important)) = accepted else {
                    continue;
                };
                tracing::debug!(
                    "scheduler {}: change {} on {branch:?} ({})",
                    spec.name,
                    row.id,
                    if important {
                        "important"
                    } else {
                        "joins the next build"
                    }
                );
                taken.push((row, branch, important));
            }
            if taken.is_empty() {
                h.idle.push((spec.name.clone(), max_id));
                continue;
            }
            if let Some(branch) = self.fires_in_hand(spec, *tree_stable, &taken) {
                let changes = taken.iter().map(|(r, _, _)| (*r).clone()).collect();
                h.in_hand.push((spec.clone(), branch, changes, max_id));
                continue;
            }
            let mut restarted: BTreeMap<String, f64> = BTreeMap::new();
            for (row, branch, important) in taken {
                if important {
                    restarted.insert(branch.clone(), now + *tree_stable as f64);
                }
                h.batch.pending.push(PendingChange {
                    scheduler: spec.name.clone(),
                    change: row.id,
                    branch,
                    important,
                });
            }
            for (b, d) in restarted {
                h.batch.timers.push((spec.name.clone(), b.clone(), d));
                h.timers.push(((spec.name.clone(), b), d));
            }
            h.batch.handled.push((spec.name.clone(), max_id));
        }
        h
    }

    /// Store what handling some Changes decided and follow it here.
    async fn record(
        &mut self,
        batch: ChangeBatch,
        timers: Vec<((String, String), f64)>,
    ) -> Result<(), Halt> {
        let handled = batch.handled.clone();
        let keys: Vec<(String, String)> = batch
            .pending
            .iter()
            .map(|p| (p.scheduler.clone(), p.branch.clone()))
            .collect();
        self.ctx.db.record_scheduler_changes(batch).await?;
        for (s, id) in handled {
            self.last.insert(s, id);
        }
        self.waiting.extend(keys);
        self.timers.extend(timers);
        Ok(())
    }

    /// The branch of `taken` (a scheduler's share of the Changes in hand) when
    /// they can make a BuildSet at once: `treeStable = 0`, every one of them
    /// important, not a pull request's, on one branch where nothing waits and
    /// no timer runs, and builders to build them. Firing them then is what
    /// recording them and firing the timer due now would do, in one write.
    fn fires_in_hand(
        &self,
        spec: &SchedulerSpec,
        tree_stable: u64,
        taken: &[(&ChangeRow, String, bool)],
    ) -> Option<String> {
        let (_, branch, _) = taken.first()?;
        let key = (spec.name.clone(), branch.clone());
        let one_branch = taken
            .iter()
            .all(|(row, b, important)| *important && b == branch && row.category != PULL_CATEGORY);
        (tree_stable == 0
            && one_branch
            && !spec.builders.is_empty()
            && !self.waiting.contains(&key)
            && !self.timers.contains_key(&key))
        .then(|| branch.clone())
    }

    /// Submit the BuildSet of `changes`, a scheduler's Changes in hand (see
    /// [`Self::fires_in_hand`]), recording the last Change handled by it (and
    /// by the others in `handled`) in the same write. Should the submit fail
    /// for a reason that may pass, the Changes are recorded as waiting, to
    /// fire again shortly.
    async fn fire_in_hand(
        &mut self,
        spec: &SchedulerSpec,
        branch: String,
        changes: Vec<ChangeRow>,
        handled: Vec<(String, i64)>,
    ) -> Result<(), Halt> {
        let name = spec.name.clone();
        let ids: Vec<i64> = changes.iter().map(|c| c.id).collect();
        let bs = changes_buildset(spec, &branch, &changes);
        let consume = Consume {
            scheduler: name.clone(),
            branch: branch.clone(),
            changes: Vec::new(),
            handled: handled.clone(),
        };
        if let Some(id) = self.submit_consuming(bs, consume).await? {
            tracing::info!(
                "scheduler {name}: BuildSet {id} with {} Changes on {}",
                ids.len(),
                branch_name(&branch)
            );
            self.last.extend(handled);
            return Ok(());
        }
        let retry = self.ctx.clock.now() + 5.0;
        let batch = ChangeBatch {
            pending: ids
                .iter()
                .map(|id| PendingChange {
                    scheduler: name.clone(),
                    change: *id,
                    branch: branch.clone(),
                    important: true,
                })
                .collect(),
            timers: vec![(name.clone(), branch.clone(), retry)],
            handled,
        };
        self.record(batch, vec![((name, branch), retry)]).await
    }

    /// Fire every timer and periodic/nightly run whose time has come.
    async fn fire_due(&mut self) -> Result<(), Halt> {
        let now = self.ctx.clock.now();
        let due: Vec<(String, String)> = self
            .timers
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (name, branch) in due {
            self.fire_changes(&name, &branch).await?;
        }
        let due: Vec<String> = self
            .next_run
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for name in due {
            self.fire_timed(&name, now).await?;
        }
        Ok(())
    }

    async fn fire_changes(&mut self, name: &str, branch: &str) -> Result<(), Halt> {
        let key = (name.to_string(), branch.to_string());
        let Some(spec) = self.specs.iter().find(|s| s.name == name).cloned() else {
            self.timers.remove(&key);
            return Ok(());
        };
        let pending = self.ctx.db.scheduler_pending(name, branch).await?;
        let ids: Vec<i64> = pending.iter().map(|(c, _)| c.id).collect();
        if !pending.iter().any(|(_, important)| *important) {
            self.ctx.db.clear_scheduler_timer(name, branch).await?;
            self.timers.remove(&key);
            return Ok(());
        }
        if spec.builders.is_empty() {
            tracing::warn!(
                "scheduler {name}: no slave builds factory {}; {} Changes dropped",
                spec.factory,
                ids.len()
            );
            self.ctx
                .db
                .consume_scheduler_changes(name, branch, ids)
                .await?;
            self.timers.remove(&key);
            self.waiting.remove(&key);
            return Ok(());
        }
        if let Some(pull) = pending
            .last()
            .map(|(c, _)| c)
            .filter(|c| c.category == PULL_CATEGORY)
        {
            return self.fire_pull(&spec, key, pull.clone(), ids).await;
        }
        let changes: Vec<ChangeRow> = pending.into_iter().map(|(c, _)| c).collect();
        let bs = changes_buildset(&spec, branch, &changes);
        let count = ids.len();
        let consume = Consume {
            scheduler: name.to_string(),
            branch: branch.to_string(),
            changes: ids,
            handled: Vec::new(),
        };
        match self.submit_consuming(bs, consume).await? {
            Some(id) => {
                tracing::info!(
                    "scheduler {name}: BuildSet {id} with {count} Changes on {}",
                    branch_name(branch)
                );
                self.timers.remove(&key);
                self.waiting.remove(&key);
            }
            None => {
                // Retry shortly; the Changes stay.
                self.timers.insert(key, self.ctx.clock.now() + 5.0);
            }
        }
        Ok(())
    }

    /// Build a pull request's newest head (`pull`, the newest of `ids`, the
    /// Changes waiting under its key): its running and queued builds of an
    /// older head are cancelled first ("superseded by HEAD"), then one BuildSet
    /// with the request's properties (`pr_from_fork = true` for a fork's: an
    /// untrusted build) builds the head on the target branch.
    async fn fire_pull(
        &mut self,
        spec: &SchedulerSpec,
        key: (String, String),
        pull: ChangeRow,
        ids: Vec<i64>,
    ) -> Result<(), Halt> {
        let (name, branch) = (key.0.clone(), key.1.clone());
        let properties = self
            .ctx
            .db
            .change_properties(vec![pull.id])
            .await?
            .remove(&pull.id)
            .unwrap_or_default();
        let number = properties.get(spec::PR_NUMBER).cloned().unwrap_or_default();
        let head = pull.revision.clone().unwrap_or_default();
        let repository = redact_url_of(&pull.repository);
        let cancelled = self
            .ctx
            .engine
            .cancel_superseded(&spec.builders, &repository, &number, &head)
            .await;
        match cancelled {
            Ok(n) if n > 0 => tracing::info!(
                "scheduler {name}: pull request #{number}: {n} build(s) of an older head cancelled"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("scheduler {name}: pull request #{number}: {e}"),
        }
        let bs = NewBuildSet {
            reason: format!(
                "scheduler {name}: pull request #{number} by {} at {}",
                pull.who,
                head.get(..12).unwrap_or(&head)
            ),
            scheduler: name.clone(),
            properties,
            sourcestamp: NewSourceStamp {
                branch: pull.branch.clone().filter(|b| !b.is_empty()),
                revision: pull.revision.clone(),
                repository,
                project: spec.factory.clone(),
                changes: ids.clone(),
            },
            builders: spec.builders.clone(),
            priority: 0,
        };
        match self.submit(bs).await? {
            Some(id) => {
                tracing::info!("scheduler {name}: BuildSet {id} for pull request #{number}");
                self.ctx
                    .db
                    .consume_scheduler_changes(&name, &branch, ids)
                    .await?;
                self.timers.remove(&key);
            }
            None => {
                self.timers.insert(key, self.ctx.clock.now() + 5.0);
            }
        }
        Ok(())
    }

    async fn fire_timed(&mut self, name: &str, now: f64) -> Result<(), Halt> {
        let Some(spec) = self.specs.iter().find(|s| s.name == name).cloned() else {
            self.next_run.remove(name);
            return Ok(());
        };
        let what = match &spec.kind {
            SchedulerKind::Periodic { seconds } => format!("periodic build (every {seconds} s)"),
            SchedulerKind::Nightly { cron } => format!("nightly build ({cron})"),
            _ => return Ok(()),
        };
        // Several masters on one database: the one holding the scheduler's
        // lease fires it; the others ask again every third of masterTimeout.
        if !self.ctx.db.hold_lease(&format!("scheduler:{name}")).await {
            let retry = self.ctx.db.master_timeout().max(3) as f64 / 3.0;
            self.next_run.insert(name.to_string(), now + retry);
            return Ok(());
        }
        let due = self.next_run.get(name).copied().unwrap_or(now);
        let mut submitted = None;
        if spec.builders.is_empty() {
            tracing::warn!("scheduler {name}: no slave builds factory {}", spec.factory);
        } else {
            let bs = NewBuildSet {
                reason: format!("scheduler {name}: {what}"),
                scheduler: name.to_string(),
                properties: BTreeMap::new(),
                sourcestamp: NewSourceStamp {
                    branch: None,
                    revision: None,
                    repository: spec.repositories.first().cloned().unwrap_or_default(),
                    project: spec.factory.clone(),
                    changes: Vec::new(),
                },
                builders: spec.builders.clone(),
                priority: 0,
            };
            match self.submit(bs).await? {
                Some(id) => {
                    tracing::info!("scheduler {name}: BuildSet {id}, {what}");
                    submitted = Some(id);
                }
                None => {
                    self.next_run.insert(name.to_string(), now + 5.0);
                    return Ok(());
                }
            }
        }
        // A periodic scheduler keeps its rhythm unless it fell a whole period behind;
        // a nightly one continues after now (missed runs fire once).
        let last_run = match &spec.kind {
            SchedulerKind::Periodic { seconds } if due + (*seconds as f64) > now => due,
            _ => now,
        } as i64;
        self.ctx
            .db
            .set_scheduler_value(name, LAST_RUN, last_run)
            .await?;
        if let Some(id) = submitted {
            self.ctx
                .db
                .set_scheduler_value(name, LAST_BUILDSET, id)
                .await?;
        }
        match next_due(&spec.kind, last_run) {
            Some(t) => self.next_run.insert(name.to_string(), t as f64),
            None => self.next_run.remove(name),
        };
        Ok(())
    }

    /// Submit through the engine; `None` (logged) when it failed for a reason that
    /// may pass.
    async fn submit(&self, bs: NewBuildSet) -> Result<Option<i64>, Halt> {
        submitted(self.ctx.engine.submit(bs).await)
    }

    /// [`Self::submit`], dropping the Changes the BuildSet carries from what
    /// the scheduler waits on in the same write.
    async fn submit_consuming(
        &self,
        bs: NewBuildSet,
        consume: Consume,
    ) -> Result<Option<i64>, Halt> {
        submitted(self.ctx.engine.submit_consuming(bs, consume).await)
    }

    /// Let every dependent scheduler look at the upstream BuildSets that completed.
    async fn dependents(&mut self) -> Result<(), Halt> {
        let specs: Vec<SchedulerSpec> = self
            .specs
            .iter()
            .filter(|s| matches!(s.kind, SchedulerKind::Dependent { .. }))
            .cloned()
            .collect();
        if specs.is_empty() {
            return Ok(());
        }
        for spec in specs {
            let SchedulerKind::Dependent {
                upstream,
                upstream_builders,
            } = &spec.kind
            else {
                continue;
            };
            let watermark = self.watermarks.get(&spec.name).copied().unwrap_or(0);
            for bs in self
                .ctx
                .db
                .unhandled_buildsets(&spec.name, watermark)
                .await?
            {
                let covers = !upstream_builders.is_empty()
                    && upstream_builders.iter().all(|b| bs.builders.contains(b));
                let ok = matches!(bs.result.as_str(), "success" | "warnings");
                if bs.project == *upstream && covers && !spec.builders.is_empty() {
                    if !ok {
                        tracing::info!(
                            "scheduler {}: upstream BuildSet {} ended {}; nothing to build",
                            spec.name,
                            bs.id,
                            bs.result
                        );
                    } else if self.ctx.db.dependent_fired(&spec.name, bs.id).await? {
                        tracing::debug!(
                            "scheduler {}: BuildSet {} already followed",
                            spec.name,
                            bs.id
                        );
                    } else {
                        let mut properties = BTreeMap::new();
                        properties.insert(UPSTREAM_PROPERTY.to_string(), bs.id.to_string());
                        let new = NewBuildSet {
                            reason: format!(
                                "scheduler {}: {upstream} succeeded (BuildSet {})",
                                spec.name, bs.id
                            ),
                            scheduler: spec.name.clone(),
                            properties,
                            sourcestamp: NewSourceStamp {
                                branch: bs.branch.clone(),
                                revision: bs.revision.clone(),
                                repository: bs.repository.clone(),
                                project: spec.factory.clone(),
                                changes: bs.changes.clone(),
                            },
                            builders: spec.builders.clone(),
                            priority: 0,
                        };
                        match self.submit(new).await? {
                            Some(id) => tracing::info!(
                                "scheduler {}: BuildSet {id} follows {upstream}'s BuildSet {}",
                                spec.name,
                                bs.id
                            ),
                            // Not marked: the next event or restart tries again.
                            None => continue,
                        }
                    }
                }
                self.ctx.db.mark_buildset_handled(&spec.name, bs.id).await?;
            }
        }
        Ok(())
    }
}

/// The build property naming the upstream BuildSet a dependent build follows.
pub const UPSTREAM_PROPERTY: &str = "upstream_buildset";

/// Returns once `stop` reads true (or its sender is gone).
/// A repository URL as stored: without credentials.
fn redact_url_of(url: &str) -> String {
    crate::sources::redact_url(url)
}

pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The BuildSet a change scheduler submits for `changes` (oldest first), the
/// Changes it took on `branch`: the newest one's revision (a `singleSource`
/// scheduler) and repository, every author in the reason.
fn changes_buildset(spec: &SchedulerSpec, branch: &str, changes: &[ChangeRow]) -> NewBuildSet {
    let newest = changes.last();
    let mut who: Vec<&str> = Vec::new();
    for c in changes {
        if !who.contains(&c.who.as_str()) {
            who.push(&c.who);
        }
    }
    let tree_stable = match &spec.kind {
        SchedulerKind::Changes { tree_stable, .. } => *tree_stable,
        _ => 0,
    };
    let ids: Vec<i64> = changes.iter().map(|c| c.id).collect();
    NewBuildSet {
        reason: format!(
            "scheduler {}: {} change{} by {} (tree stable for {tree_stable} s)",
            spec.name,
            ids.len(),
            if ids.len() == 1 { "" } else { "s" },
            who.join(", ")
        ),
        scheduler: spec.name.clone(),
        properties: BTreeMap::new(),
        sourcestamp: NewSourceStamp {
            branch: (spec.single_source && !branch.is_empty()).then(|| branch.to_string()),
            revision: if spec.single_source {
                newest.and_then(|c| c.revision.clone())
            } else {
                None
            },
            repository: newest
                .map(|c| c.repository.clone())
                .filter(|r| !r.is_empty())
                .or_else(|| spec.repositories.first().cloned())
                .unwrap_or_default(),
            project: spec.factory.clone(),
            changes: ids,
        },
        builders: spec.builders.clone(),
        priority: 0,
    }
}

/// A branch key as the log says it.
fn branch_name(branch: &str) -> &str {
    if branch.is_empty() {
        "the default branch"
    } else {
        branch
    }
}

/// A submit's BuildSet id; `None` (logged) when it failed for a reason that may
/// pass.
fn submitted(r: Result<SubmittedBuildSet, EngineError>) -> Result<Option<i64>, Halt> {
    match r {
        Ok(s) => Ok(Some(s.buildset_id)),
        Err(EngineError::ShuttingDown) => Err(Halt::Stopping),
        Err(e) => {
            tracing::error!("cannot submit a BuildSet: {e}; retrying in 5 s");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(repo: &str, branch: Option<&str>, files: &[&str], project: &str) -> ChangeRow {
        ChangeRow {
            id: 1,
            who: "a".into(),
            files: files.iter().map(|s| s.to_string()).collect(),
            comments: String::new(),
            revision: None,
            branch: branch.map(String::from),
            when: 0,
            repository: repo.into(),
            category: String::new(),
            links: Vec::new(),
            project: project.into(),
        }
    }

    fn spec(branches: Branches) -> SchedulerSpec {
        SchedulerSpec {
            name: "f".into(),
            factory: "f".into(),
            builders: vec!["f-s".into()],
            repositories: vec!["/r".into()],
            single_source: true,
            kind: SchedulerKind::Changes {
                branches,
                files: Vec::new(),
                tree_stable: 1,
                pulls: None,
            },
        }
    }

    #[test]
    fn accepts_by_repository_branch_and_files() {
        let facts = vec!["f".to_string(), "g".to_string()];
        let s = spec(Branches::Only(vec!["main".into()]));
        let res = [regex::Regex::new(r"\.c$").unwrap()];
        assert_eq!(
            accepts(&s, &[], &change("/r", Some("main"), &[], ""), &facts),
            Some(("main".into(), true))
        );
        assert_eq!(
            accepts(&s, &[], &change("/r", Some("dev"), &[], ""), &facts),
            None
        );
        assert_eq!(
            accepts(&s, &[], &change("/x", Some("main"), &[], ""), &facts),
            None
        );
        assert_eq!(
            accepts(&s, &[], &change("", None, &[], ""), &facts),
            Some((String::new(), true))
        );
        assert_eq!(accepts(&s, &[], &change("", None, &[], "g"), &facts), None);
        assert!(accepts(&s, &[], &change("", None, &[], "other"), &facts).is_some());
        assert_eq!(
            accepts(
                &s,
                &res,
                &change("/r", Some("main"), &["README"], ""),
                &facts
            ),
            Some(("main".into(), false))
        );
        assert_eq!(
            accepts(
                &s,
                &res,
                &change("/r", Some("main"), &["README", "a.c"], ""),
                &facts
            ),
            Some(("main".into(), true))
        );
        let any = spec(Branches::Any);
        assert_eq!(
            accepts(&any, &[], &change("/r", Some("feature/x"), &[], ""), &facts),
            Some(("feature/x".into(), true))
        );
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers() {
        let c = Clock::manual(100.0);
        let c2 = c.clone();
        let sleeper = tokio::spawn(async move { c2.sleep_until(160.0).await });
        c.advance(30.0);
        assert_eq!(c.now(), 130.0);
        c.set(120.0);
        assert_eq!(c.now(), 130.0, "never backwards");
        c.advance(30.0);
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn periodic_and_nightly_due_times() {
        assert_eq!(
            next_due(&SchedulerKind::Periodic { seconds: 60 }, 100),
            Some(160)
        );
        let n = SchedulerKind::Nightly {
            cron: "0 3 * * *".into(),
        };
        assert_eq!(next_due(&n, 0), Some(3 * 3600));
    }
}
