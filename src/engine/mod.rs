//! The build engine: BuildSets and BuildRequests in, Builds on slaves out.
//!
//! [`Engine`] is the handle the web API, the CLI (through the API) and the
//! schedulers use: [`Engine::force`] and [`Engine::submit`] store a BuildSet with
//! one BuildRequest per builder *before* anything is queued; [`Engine::stop_build`]
//! interrupts a running Build; [`Engine::subscribe`] follows what happens
//! ([`EngineEvent`]); [`Engine::wait_request`] waits for a request's result.
//!
//! One dispatcher task hands requests to Builds. It wakes on every event that can
//! make a Build startable — a request added or given back, a slave connected, a
//! Build finished, a reconfig — never on a timer. For each builder that may have
//! requests and whose slave is connected with fewer than `max_builds` Builds
//! running, it claims the best request and creates the Build row in one SQLite
//! transaction, then starts the Build (`build.rs`). A Build whose locks
//! (`locks.rs`) are taken waits for them on its slave, as in Buildbot 0.7: it
//! counts towards the slave's `max_builds` while it waits.
//!
//! At start the engine first finishes, as EXCEPTION "interrupted: master
//! restarted", every Build a dead master left running and gives their requests back
//! to the queue. [`Engine::shutdown`] interrupts running Builds and records them the
//! same way ("interrupted: master shut down"), so they run again after a restart.
//!
//! The engine sits above the slave links ([`crate::slavelink`]): it reaches
//! connected slaves through the [`SlaveRegistry`] and writes step logs through
//! [`crate::logstore`]. Nothing here knows about the web, the schedulers or how
//! the daemon is wired ([`crate::app`]).

pub mod artifacts;
mod build;
pub mod cluster;
pub use build::{build_is_untrusted, CANCELLED, UNTRUSTED_PROPERTY};
pub mod locks;
pub mod tryjob;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

use crate::config::MasterConfig;
use crate::db::requests::{
    BuildRequestRow, Consume, NewBuildSet, NewSourceStamp, SubmittedBuildSet,
};
use crate::db::{Db, DbError};
use crate::slavelink::registry::SlaveRegistry;
use crate::slavelink::SlaveEvent;
use build::{BuildContext, Stop};
use locks::Locks;

/// The text of a Build a dead master left running, found at start-up.
pub const RESTART_TEXT: &str = "interrupted: master restarted";

/// The text of a Build interrupted because the master shuts down.
pub const SHUTDOWN_TEXT: &str = "interrupted: master shut down";

/// Why the engine refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no builder named {builder:?}; the builders are: {known}")]
    UnknownBuilder { builder: String, known: String },
    #[error("{builder} has no build {number}")]
    NoSuchBuild { builder: String, number: i64 },
    #[error("{builder} build {number} is not running (it finished)")]
    NotRunning { builder: String, number: i64 },
    #[error("no BuildRequest {0}")]
    NoSuchRequest(i64),
    /// A branch, revision, property or text of the request broke the rules every
    /// Change and request follows ([`crate::changes::validate`]).
    #[error("{0}")]
    BadName(#[from] crate::changes::validate::FieldError),
    #[error("the master is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Db(#[from] DbError),
}

/// What `force` asks for (the fields of the force form / `autobot force`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct ForceRequest {
    pub reason: String,
    /// `None`: the factory's branch.
    pub branch: Option<String>,
    /// `None`: the branch's newest revision.
    pub revision: Option<String>,
    pub who: Option<String>,
    /// Extra build properties (source "Force Build Form").
    pub properties: BTreeMap<String, String>,
}

/// The ids a forced build got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForceResult {
    pub buildset_id: i64,
    pub request_id: i64,
}

/// What happens in the engine, for live views and waiters. Results are the
/// lower-case names (`success`, `warnings`, `failure`, `skipped`, `exception`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EngineEvent {
    RequestQueued {
        request_id: i64,
        buildset_id: i64,
        builder: String,
    },
    BuildStarted {
        builder: String,
        number: i64,
        slave: String,
    },
    StepStarted {
        builder: String,
        number: i64,
        step: i64,
        name: String,
    },
    /// A log grew (sent at most a few times a second per log, and at its end).
    LogAppended {
        builder: String,
        number: i64,
        step: i64,
        log: String,
        size: u64,
        lines: u64,
    },
    StepFinished {
        builder: String,
        number: i64,
        step: i64,
        name: String,
        result: String,
        text: String,
    },
    /// `requeued`: the Build was interrupted and its requests wait again.
    BuildFinished {
        builder: String,
        number: i64,
        result: String,
        text: String,
        requeued: bool,
    },
    RequestComplete {
        request_id: i64,
        result: String,
    },
    BuildSetComplete {
        buildset_id: i64,
        result: String,
    },
    /// A build of the BuildSet failed while others may still run: the set has
    /// failed (the manual's `firstFailure`); `BuildSetComplete` follows later.
    BuildSetFailed {
        buildset_id: i64,
        result: String,
    },
}

/// A Build that runs now.
struct Running {
    builder: String,
    number: i64,
    slave: String,
    stop: watch::Sender<Option<Stop>>,
    task: Option<JoinHandle<()>>,
    done: watch::Receiver<bool>,
    /// Whether it still counts against its slave's `max_builds` (it stops counting
    /// once its last Step has ended, before its end is recorded).
    holds_slave: bool,
    /// `lock NAME` while it waits for locks (for [`Engine::waiting`]).
    waits_for: Option<String>,
}

/// Marks a running Build as waiting for locks while it lives.
pub(crate) struct LockWaitShown {
    inner: Arc<Inner>,
    build_id: i64,
}

impl LockWaitShown {
    pub(crate) fn new(inner: &Arc<Inner>, build_id: i64, locks: String) -> LockWaitShown {
        if let Some(r) = inner.state().running.get_mut(&build_id) {
            r.waits_for = Some(locks);
        }
        inner.activity.bump();
        LockWaitShown {
            inner: inner.clone(),
            build_id,
        }
    }
}

impl Drop for LockWaitShown {
    fn drop(&mut self) {
        if let Some(r) = self.inner.state().running.get_mut(&self.build_id) {
            r.waits_for = None;
        }
        self.inner.activity.bump();
    }
}

/// What keeps a builder's BuildRequests waiting (see [`WaitReason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitKind {
    /// The builder's slave is not connected.
    NoSlave,
    /// The slave runs as many Builds as its `max_builds` allows.
    MaxBuilds,
    /// The slave is full with Builds that wait for locks.
    Locks,
    /// The configuration keeps it from starting (its steps cannot be made).
    Config,
    /// The master is shutting down (or draining for `stop --clean`).
    Stopping,
    /// Nothing keeps it: a Build is about to start.
    Starting,
}

impl WaitKind {
    /// The API's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitKind::NoSlave => "no_slave",
            WaitKind::MaxBuilds => "max_builds",
            WaitKind::Locks => "locks",
            WaitKind::Config => "config",
            WaitKind::Stopping => "stopping",
            WaitKind::Starting => "starting",
        }
    }
}

/// Why a builder's pending BuildRequests wait, so that `force --wait`, the
/// builder page and the API can say it instead of waiting without a word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitReason {
    pub kind: WaitKind,
    /// For people: "no slave of this builder is connected: s2 offline since …".
    pub text: String,
}

#[derive(Default)]
struct State {
    /// Builders that may have unclaimed requests, each with the tick of the last
    /// time one was added (so a claim that found nothing only clears the mark if
    /// no request arrived meanwhile).
    pending: HashMap<String, u64>,
    tick: u64,
    /// By build id.
    running: HashMap<i64, Running>,
    /// Running builds per slave.
    per_slave: HashMap<String, u32>,
    stopping: bool,
    /// Builders whose steps cannot be made, with the error (until a reconfig).
    broken: HashMap<String, String>,
}

impl State {
    fn mark_pending(&mut self, builder: &str) {
        self.tick += 1;
        self.pending.insert(builder.to_string(), self.tick);
    }
}

/// What the engine's tasks share.
pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) registry: SlaveRegistry,
    pub(crate) config: watch::Receiver<Arc<MasterConfig>>,
    /// Where step logs and artifacts are kept (`sharedDir`, or the master
    /// directory): log paths are relative to it.
    pub(crate) basedir: PathBuf,
    /// Writes the Steps' logs, off the runtime.
    pub(crate) disk: crate::logstore::LogDisk,
    /// The runtime the engine started on, where its work runs ([`Engine::submit`]).
    runtime: tokio::runtime::Handle,
    pub(crate) events: broadcast::Sender<EngineEvent>,
    /// One bump per event, for whoever only needs to know that something happened.
    activity: crate::activity::Activity,
    /// The `[lock:NAME]` counters Builds and Steps hold.
    pub(crate) locks: Locks,
    kick: Notify,
    state: Mutex<State>,
    closing: watch::Sender<bool>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    /// The heartbeat and the other masters' news, on a shared database.
    cluster: Mutex<Option<JoinHandle<()>>>,
    /// On a shared database: this master's events and every other master's,
    /// for live views ([`Engine::live`]); made by the cluster task.
    pub(crate) live: std::sync::OnceLock<broadcast::Sender<EngineEvent>>,
    /// The same for slaves connecting and going away, on any master
    /// ([`Engine::slave_events`]).
    pub(crate) live_slaves: std::sync::OnceLock<broadcast::Sender<crate::slavelink::SlaveEvent>>,
}

impl Inner {
    pub(crate) fn emit(&self, ev: EngineEvent) {
        self.activity.bump();
        let _ = self.events.send(ev);
    }

    /// A Build's last Step has ended: its slave may take the next BuildRequest
    /// while this Build's end is being recorded (the slave runs nothing for it any
    /// more), so a busy builder's builds follow each other without a gap.
    pub(crate) fn release_slave(&self, build_id: i64) {
        let mut st = self.state();
        let State {
            running, per_slave, ..
        } = &mut *st;
        if let Some(r) = running.get_mut(&build_id) {
            if r.holds_slave {
                r.holds_slave = false;
                if let Some(n) = per_slave.get_mut(&r.slave) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        drop(st);
        self.kick.notify_one();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The build engine's handle; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Recover what a dead master left running, then start the dispatcher.
    pub async fn start(
        db: Db,
        registry: SlaveRegistry,
        config: watch::Receiver<Arc<MasterConfig>>,
        basedir: PathBuf,
    ) -> Result<Engine, DbError> {
        let interrupted = db
            .recover_interrupted(RESTART_TEXT, crate::calendar::now_f64())
            .await?;
        for (builder, number) in &interrupted {
            tracing::warn!("{builder} build {number}: {RESTART_TEXT}; its requests run again");
        }
        let pending: HashMap<String, u64> = db
            .builders_with_requests()
            .await?
            .into_iter()
            .map(|b| (b, 0))
            .collect();
        let inner = Arc::new(Inner {
            db,
            registry,
            config,
            basedir,
            disk: crate::logstore::LogDisk::start(),
            runtime: tokio::runtime::Handle::current(),
            // Every slot is allocated (and touched) up front: 1024 events cost
            // 200 KiB of RSS where 4096 cost 800 KiB. A receiver further behind
            // gets `Lagged`, and all of them read what they missed from the database.
            events: broadcast::channel(1024).0,
            activity: Default::default(),
            locks: Locks::new(),
            kick: Notify::new(),
            state: Mutex::new(State {
                pending,
                ..State::default()
            }),
            closing: watch::channel(false).0,
            dispatcher: Mutex::new(None),
            cluster: Mutex::new(None),
            live: std::sync::OnceLock::new(),
            live_slaves: std::sync::OnceLock::new(),
        });
        let task = tokio::spawn(dispatcher(inner.clone()));
        *inner.dispatcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        *inner.cluster.lock().unwrap_or_else(|p| p.into_inner()) = cluster::start(&inner);
        Ok(Engine { inner })
    }

    /// How many events there have been, and when the last was.
    pub fn activity(&self) -> &crate::activity::Activity {
        &self.inner.activity
    }

    /// Events from now on. A receiver that falls behind gets `Lagged` and should
    /// re-read the database.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    /// Events for live views (the web's `/events`, a log's tail): this
    /// master's ([`Engine::subscribe`]), and on a shared database every other
    /// master's too, relayed through PostgreSQL (`NOTIFY`), so that a page on
    /// any master follows every Build. Not for acting on: each master's
    /// reporters and waiters act on its own Builds only.
    pub fn live(&self) -> broadcast::Receiver<EngineEvent> {
        match self.inner.live.get() {
            Some(live) => live.subscribe(),
            None => self.inner.events.subscribe(),
        }
    }

    /// Slaves connecting and going away, for live views (the web's `/events`):
    /// this master's, and on a shared database every other master's too.
    pub fn slave_events(&self) -> broadcast::Receiver<crate::slavelink::SlaveEvent> {
        match self.inner.live_slaves.get() {
            Some(live) => live.subscribe(),
            None => self.inner.registry.subscribe(),
        }
    }

    /// The database the engine writes (for queries).
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Store a BuildSet (one BuildRequest per builder) and queue its requests.
    ///
    /// The work runs on the engine's own runtime, whoever asks (a web page, the
    /// API, a scheduler): its database write then never waits for, nor holds up,
    /// the engine's own, and the dispatcher it wakes is on the same thread. The
    /// web ports' threads run at a lower priority and may be descheduled at any
    /// moment under load.
    pub async fn submit(&self, bs: NewBuildSet) -> Result<SubmittedBuildSet, EngineError> {
        self.submit_on_runtime(bs, Alongside::Nothing).await
    }

    /// [`Engine::submit`], with a try job's patch on the SourceStamp.
    pub(crate) async fn submit_with_patch(
        &self,
        bs: NewBuildSet,
        patch: Option<crate::db::tryjobs::TryPatch>,
    ) -> Result<SubmittedBuildSet, EngineError> {
        self.submit_on_runtime(bs, patch.map_or(Alongside::Nothing, Alongside::Patch))
            .await
    }

    /// [`Engine::submit`] of a scheduler's BuildSet: the Changes it carries
    /// are dropped from what the scheduler waits on by the same write.
    pub(crate) async fn submit_consuming(
        &self,
        bs: NewBuildSet,
        consume: Consume,
    ) -> Result<SubmittedBuildSet, EngineError> {
        self.submit_on_runtime(bs, Alongside::Consume(consume))
            .await
    }

    /// Store a scheduler's Change and submit its BuildSet (made from it
    /// alone, `consume` recording the last Change handled) in one write,
    /// if the Change gets id `expected`
    /// ([`crate::db::requests::insert_change_firing`]): the Change's id, and
    /// the BuildSet's if it was submitted (then queued as
    /// [`Engine::submit`] queues).
    pub(crate) async fn store_change_firing(
        &self,
        change: crate::db::changes::NewChange,
        expected: i64,
        bs: NewBuildSet,
        consume: Consume,
    ) -> Result<(i64, Option<SubmittedBuildSet>), EngineError> {
        let inner = self.inner.clone();
        self.inner
            .runtime
            .spawn(async move {
                if inner.state().stopping {
                    return Err(EngineError::ShuttingDown);
                }
                let at = crate::calendar::now_f64();
                let here = builders_here(&inner, &bs.builders);
                let (id, submitted) = inner
                    .db
                    .add_change_firing(change, expected, bs, at, here.clone(), consume)
                    .await?;
                if let Some(submitted) = &submitted {
                    queued(&inner, &here, submitted).await;
                }
                Ok((id, submitted))
            })
            .await
            .map_err(|_| EngineError::ShuttingDown)?
    }

    async fn submit_on_runtime(
        &self,
        bs: NewBuildSet,
        alongside: Alongside,
    ) -> Result<SubmittedBuildSet, EngineError> {
        let inner = self.inner.clone();
        self.inner
            .runtime
            .spawn(async move { submit_here(&inner, bs, alongside).await })
            .await
            .map_err(|_| EngineError::ShuttingDown)?
    }

    /// Force a build of `builder` (Buildbot's "Force Build").
    pub async fn force(
        &self,
        builder: &str,
        req: ForceRequest,
    ) -> Result<ForceResult, EngineError> {
        let config = self.inner.config.borrow().clone();
        let builders = config.builders();
        let Some(b) = builders.iter().find(|b| b.name == builder) else {
            let known: Vec<&str> = builders.iter().map(|b| b.name.as_str()).collect();
            return Err(EngineError::UnknownBuilder {
                builder: builder.to_string(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        };
        // The rules of every Change and request (crate::changes::validate).
        let given = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let branch = given(req.branch);
        let revision = given(req.revision);
        use crate::changes::validate as check;
        branch.as_deref().map(check::check_branch).transpose()?;
        revision.as_deref().map(check::check_revision).transpose()?;
        check::check_properties(&req.properties)?;
        check::check_force_text(req.who.as_deref(), &req.reason)?;
        let factory = config.factory(&b.factory);
        // Stored and shown: without the URL's credentials (as the schedulers do).
        let repository = factory
            .and_then(|f| f.sources.first())
            .map(|s| crate::sources::redact_url(&s.url))
            .unwrap_or_default();
        let why = match req.reason.trim() {
            "" => "no reason given",
            r => r,
        };
        let reason = match req.who.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
            Some(who) => format!("forced by {who}: {why}"),
            None => format!("forced: {why}"),
        };
        let submitted = self
            .submit(NewBuildSet {
                reason,
                scheduler: "force".into(),
                properties: req.properties,
                sourcestamp: NewSourceStamp {
                    branch,
                    revision,
                    repository,
                    project: b.factory.clone(),
                    changes: Vec::new(),
                },
                builders: vec![b.name.clone()],
                priority: 0,
            })
            .await?;
        let request_id = submitted.requests.first().map(|(_, id)| *id).unwrap_or(0);
        Ok(ForceResult {
            buildset_id: submitted.buildset_id,
            request_id,
        })
    }

    /// Stop a running Build: its command is interrupted and the Build ends (within
    /// 10 s even if the slave is gone) as "stopped by WHO: REASON". Returns once it
    /// has ended.
    pub async fn stop_build(
        &self,
        builder: &str,
        number: i64,
        who: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        let found = {
            let st = self.inner.state();
            st.running
                .values()
                .find(|r| r.builder == builder && r.number == number)
                .map(|r| (r.stop.clone(), r.done.clone()))
        };
        let Some((stop, mut done)) = found else {
            return match self.inner.db.build(builder, number).await? {
                Some(_) => Err(EngineError::NotRunning {
                    builder: builder.to_string(),
                    number,
                }),
                None => Err(EngineError::NoSuchBuild {
                    builder: builder.to_string(),
                    number,
                }),
            };
        };
        let who = if who.trim().is_empty() {
            "someone"
        } else {
            who.trim()
        };
        stop.send_replace(Some(Stop::User {
            text: format!("stopped by {who}: {reason}"),
        }));
        let _ = tokio::time::timeout(Duration::from_secs(15), done.wait_for(|d| *d)).await;
        Ok(())
    }

    /// A pull request's new head: stop the running Builds of `builders` for
    /// pull request `number` of `repository` at another head and cancel its
    /// queued BuildRequests, all with result `cancelled` and the reason
    /// "superseded by HEAD". Returns how many Builds and requests went.
    pub async fn cancel_superseded(
        &self,
        builders: &[String],
        repository: &str,
        number: &str,
        head: &str,
    ) -> Result<usize, EngineError> {
        if number.is_empty() {
            return Ok(0);
        }
        let found = self
            .inner
            .db
            .superseded_pull(
                builders.to_vec(),
                repository.to_string(),
                number.to_string(),
                head.to_string(),
                crate::calendar::now_f64(),
            )
            .await?;
        let n = found.running.len() + found.cancelled.requests.len();
        let text = format!("superseded by {head}");
        for id in &found.cancelled.requests {
            tracing::info!("BuildRequest {id}: {text}");
            self.inner.emit(EngineEvent::RequestComplete {
                request_id: *id,
                result: CANCELLED.to_string(),
            });
        }
        for (id, r) in found.cancelled.buildsets {
            self.inner.emit(EngineEvent::BuildSetComplete {
                buildset_id: id,
                result: r,
            });
        }
        for (builder, number) in found.running {
            let stop = {
                let st = self.inner.state();
                st.running
                    .values()
                    .find(|r| r.builder == builder && r.number == number)
                    .map(|r| r.stop.clone())
            };
            if let Some(stop) = stop {
                tracing::info!("{builder} build {number}: {text}");
                stop.send_replace(Some(Stop::User { text: text.clone() }));
            }
        }
        Ok(n)
    }

    /// Wait until BuildRequest `id` is complete (a Build of it finished with a
    /// result that stands; interrupted Builds re-queue it); its final row.
    pub async fn wait_request(&self, id: i64) -> Result<BuildRequestRow, EngineError> {
        let mut rx = self.subscribe();
        loop {
            let row = self
                .inner
                .db
                .buildrequest(id)
                .await?
                .ok_or(EngineError::NoSuchRequest(id))?;
            if row.complete {
                return Ok(row);
            }
            loop {
                match rx.recv().await {
                    Ok(EngineEvent::RequestComplete { request_id, .. }) if request_id == id => {
                        break
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(EngineError::ShuttingDown)
                    }
                }
            }
        }
    }

    /// Why `builder`'s pending BuildRequests wait, from the live state: its
    /// slave offline (since when, and any problem the slave port saw), at its
    /// `max_builds` (with which Builds, and whether they wait for locks), a
    /// configuration error, or the master stopping. `None` for a builder not in
    /// the configuration.
    pub async fn waiting(&self, builder: &str) -> Result<Option<WaitReason>, EngineError> {
        let config = self.inner.config.borrow().clone();
        let Some(b) = config.builders().into_iter().find(|b| b.name == builder) else {
            return Ok(None);
        };
        let reason = |kind, text: String| Ok(Some(WaitReason { kind, text }));
        let slave = b.slave.as_str();
        let Some(handle) = self.inner.registry.get(slave) else {
            let row = self.inner.db.slave(slave).await?;
            let mut text = format!("no slave of this builder is connected: {slave} ");
            match row.as_ref().and_then(|r| r.last_seen) {
                Some(t) => {
                    text.push_str(&format!("offline since {} UTC", short_time(t)));
                    if let Some(why) = row
                        .as_ref()
                        .and_then(|r| r.disconnect_reason.as_deref())
                        .filter(|w| !w.is_empty())
                    {
                        text.push_str(&format!(" ({why})"));
                    }
                }
                None => text.push_str("has never connected"),
            }
            if let Some(problem) = self.inner.registry.problem(slave) {
                text.push_str(&format!("; it {problem}"));
            }
            return reason(WaitKind::NoSlave, text);
        };
        drop(handle);
        let st = self.inner.state();
        if st.stopping {
            return reason(
                WaitKind::Stopping,
                "the master is stopping: no new builds start".into(),
            );
        }
        if let Some(e) = st.broken.get(builder) {
            return reason(
                WaitKind::Config,
                format!("its factory cannot make its steps ({e}); fix master.ini and reconfig"),
            );
        }
        let max = config.slave(slave).map_or(1, |s| s.max_builds.max(1));
        if st.per_slave.get(slave).copied().unwrap_or(0) >= max {
            let mut on: Vec<&Running> = st
                .running
                .values()
                .filter(|r| r.slave == slave && r.holds_slave)
                .collect();
            on.sort_by(|a, b| (&a.builder, a.number).cmp(&(&b.builder, b.number)));
            let builds: Vec<String> = on
                .iter()
                .map(|r| match &r.waits_for {
                    Some(l) => format!("{} #{} (waiting for {l})", r.builder, r.number),
                    None => format!("{} #{}", r.builder, r.number),
                })
                .collect();
            let kind = if on.iter().any(|r| r.waits_for.is_some()) {
                WaitKind::Locks
            } else {
                WaitKind::MaxBuilds
            };
            let head = match kind {
                WaitKind::Locks => "waiting for locks: ",
                _ => "",
            };
            return reason(
                kind,
                format!(
                    "{head}slave {slave} runs max_builds = {max}: {}",
                    builds.join(", ")
                ),
            );
        }
        reason(
            WaitKind::Starting,
            format!("slave {slave} is free: a build is about to start"),
        )
    }

    /// Every slave's problem the slave port saw (a worker speaking PB), by name.
    pub fn slave_problems(&self) -> Vec<(String, String)> {
        self.inner.registry.problems()
    }

    /// (builder, number) of the Builds running now.
    pub fn running(&self) -> Vec<(String, i64)> {
        let st = self.inner.state();
        let mut v: Vec<(String, i64)> = st
            .running
            .values()
            .map(|r| (r.builder.clone(), r.number))
            .collect();
        v.sort();
        v
    }

    /// A clean stop's first half (`autobot stop --clean`): take no new BuildSets
    /// and start no new Builds, and return once the running Builds have ended.
    pub async fn drain(&self) {
        let mut events = self.subscribe();
        self.inner.state().stopping = true;
        // A Build leaves `running` just after its last event: look again at each
        // event, and each second in case the last one came before the look.
        while !self.inner.state().running.is_empty() {
            if let Ok(Err(broadcast::error::RecvError::Closed)) =
                tokio::time::timeout(Duration::from_secs(1), events.recv()).await
            {
                return;
            }
        }
    }

    /// Interrupt every running Build (recorded as EXCEPTION, requests re-queued),
    /// wait for them to be recorded, and stop dispatching.
    pub async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut st = self.inner.state();
            st.stopping = true;
            st.running
                .values_mut()
                .filter_map(|r| {
                    r.stop.send_replace(Some(Stop::Shutdown {
                        text: SHUTDOWN_TEXT.into(),
                    }));
                    r.task.take()
                })
                .collect()
        };
        self.inner.closing.send_replace(true);
        for t in tasks {
            if tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .is_err()
            {
                tracing::warn!("a build did not end within 15 s of the shutdown");
            }
        }
        let dispatcher = self
            .inner
            .dispatcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(d) = dispatcher {
            let _ = tokio::time::timeout(Duration::from_secs(5), d).await;
        }
        let cluster = self
            .inner
            .cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = cluster {
            let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        }
    }
}

/// Those of `builders` whose slave is connected to this master, where several
/// masters share the database; none on SQLite (no other master to tell).
fn builders_here(inner: &Inner, builders: &[String]) -> Vec<String> {
    if !inner.db.shared() {
        return Vec::new();
    }
    let config = inner.config.borrow().clone();
    config
        .builders()
        .into_iter()
        .filter(|b| builders.contains(&b.name) && inner.registry.get(&b.slave).is_some())
        .map(|b| b.name)
        .collect()
}

/// What the write that stores a BuildSet stores with it.
enum Alongside {
    Nothing,
    /// A try job's patch, on the BuildSet's SourceStamp.
    Patch(crate::db::tryjobs::TryPatch),
    /// The scheduler's Changes the BuildSet carries, dropped from what it
    /// waits on.
    Consume(Consume),
}

/// [`Engine::submit`] on the engine's runtime.
async fn submit_here(
    inner: &Arc<Inner>,
    bs: NewBuildSet,
    alongside: Alongside,
) -> Result<SubmittedBuildSet, EngineError> {
    if inner.state().stopping {
        return Err(EngineError::ShuttingDown);
    }
    let at = crate::calendar::now_f64();
    // The builders whose slave is connected here: no other master can claim
    // their requests, so they are not announced to the others.
    let here = builders_here(inner, &bs.builders);
    let submitted = match alongside {
        Alongside::Patch(p) => inner.db.add_try_buildset(bs, p, at, here.clone()).await?,
        Alongside::Consume(c) => {
            inner
                .db
                .add_buildset_here(bs, at, here.clone(), Some(c))
                .await?
        }
        Alongside::Nothing => {
            inner
                .db
                .add_buildset_here(bs, at, here.clone(), None)
                .await?
        }
    };
    queued(inner, &here, &submitted).await;
    Ok(submitted)
}

/// What follows a BuildSet's write: its requests queued here (the builders
/// of `here` had a slave connected here as it was written), announced,
/// and the dispatcher woken.
async fn queued(inner: &Arc<Inner>, here: &[String], submitted: &SubmittedBuildSet) {
    {
        let mut st = inner.state();
        for (builder, _) in &submitted.requests {
            st.mark_pending(builder);
        }
    }
    // A slave that went away meanwhile may be connecting to another master:
    // that master looks for its builders' requests when it connects, and is
    // told of these now in case it looked before they were stored.
    for builder in here {
        if !builders_here(inner, std::slice::from_ref(builder)).is_empty() {
            continue;
        }
        if let Err(e) = inner
            .db
            .notify(crate::db::requests::QUEUED, builder.clone())
            .await
        {
            tracing::warn!("cannot announce {builder}'s request to the other masters: {e}");
        }
    }
    for (builder, id) in &submitted.requests {
        inner.emit(EngineEvent::RequestQueued {
            request_id: *id,
            buildset_id: submitted.buildset_id,
            builder: builder.clone(),
        });
    }
    inner.kick.notify_one();
}

async fn dispatcher(inner: Arc<Inner>) {
    let mut slaves = inner.registry.subscribe();
    let mut config = inner.config.clone();
    let mut closing = inner.closing.subscribe();
    let mut config_open = true;
    loop {
        dispatch(&inner).await;
        tokio::select! {
            _ = inner.kick.notified() => {}
            r = slaves.recv() => match r {
                // Requests queued through another master for this slave's
                // builders, or through this one and not announced while the
                // slave was here before (`builders_here`): look for them.
                // (Events missed: every connected slave's.)
                Ok(SlaveEvent::Connected(_)) | Err(broadcast::error::RecvError::Lagged(_))
                    if inner.db.shared() =>
                {
                    let name = match &r {
                        Ok(SlaveEvent::Connected(name)) => Some(name.as_str()),
                        _ => None,
                    };
                    let config = inner.config.borrow().clone();
                    let mut st = inner.state();
                    for b in config.builders() {
                        let arrived = match name {
                            Some(n) => b.slave == n,
                            None => inner.registry.get(&b.slave).is_some(),
                        };
                        if arrived {
                            st.mark_pending(&b.name);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    slaves = inner.registry.subscribe();
                }
                _ => {}
            },
            r = config.changed(), if config_open => {
                if r.is_err() {
                    config_open = false;
                }
                inner.state().broken.clear();
            }
            _ = closing.wait_for(|c| *c) => return,
        }
    }
}

/// Start every Build that can start now.
async fn dispatch(inner: &Arc<Inner>) {
    loop {
        let config = inner.config.borrow().clone();
        let candidates: Vec<(
            crate::config::BuilderConfig,
            crate::slavelink::SlaveHandle,
            u64,
        )> = {
            let st = inner.state();
            if st.stopping {
                return;
            }
            config
                .builders()
                .into_iter()
                .filter_map(|b| {
                    let tick = *st.pending.get(&b.name)?;
                    let max = config.slave(&b.slave).map(|s| s.max_builds.max(1))?;
                    if st.per_slave.get(&b.slave).copied().unwrap_or(0) >= max {
                        return None;
                    }
                    let h = inner.registry.get(&b.slave)?;
                    Some((b, h, tick))
                })
                .collect()
        };
        if candidates.is_empty() {
            return;
        }
        let mut started = false;
        for (b, handle, tick) in candidates {
            let (Some(factory), Some(slave_cfg)) =
                (config.factory(&b.factory), config.slave(&b.slave))
            else {
                continue;
            };
            {
                // An earlier candidate of this pass may have filled the slave.
                let st = inner.state();
                let max = slave_cfg.max_builds.max(1);
                if st.per_slave.get(&b.slave).copied().unwrap_or(0) >= max || st.stopping {
                    continue;
                }
            }
            let steps = match crate::factory::build_steps(&factory.recipe(), slave_cfg.os.as_str())
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(
                        "builder {}: {e}; its requests wait for a fixed master.ini",
                        b.name
                    );
                    let mut st = inner.state();
                    st.pending.remove(&b.name);
                    st.broken.insert(b.name.clone(), e.to_string());
                    continue;
                }
            };
            let (total, at) = (steps.len() as i64, crate::calendar::now_f64());
            let claim = if build::first_step_recordable(factory, &steps) {
                let spec = steps[0].clone();
                let factory_props =
                    crate::factory::build_properties(&factory.recipe(), slave_cfg.os.as_str());
                let slave = b.slave.clone();
                let first: crate::db::requests::FirstStep = Box::new(move |claimed| {
                    build::first_step_start(claimed, &spec, &factory_props, &slave, at)
                });
                inner
                    .db
                    .claim_request_starting(&b.name, &b.slave, total, at, first)
                    .await
            } else {
                inner.db.claim_request(&b.name, &b.slave, total, at).await
            };
            let claimed = match claim {
                Ok(Some(c)) => c,
                Ok(None) => {
                    let mut st = inner.state();
                    if st.pending.get(&b.name) == Some(&tick) {
                        st.pending.remove(&b.name);
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!("builder {}: cannot claim a BuildRequest: {e}", b.name);
                    return;
                }
            };
            started = true;
            let (stop_tx, stop_rx) = watch::channel(None);
            let (done_tx, done_rx) = watch::channel(false);
            let build_id = claimed.build_id;
            let ctx = BuildContext {
                inner: inner.clone(),
                claimed,
                slave: handle,
                factory: factory.clone(),
                slave_cfg: slave_cfg.clone(),
                steps,
                stop: stop_rx,
                pending_props: Vec::new(),
                pending_finish: None,
                released_at: None,
            };
            let mut st = inner.state();
            *st.per_slave.entry(b.slave.clone()).or_insert(0) += 1;
            st.running.insert(
                build_id,
                Running {
                    builder: b.name.clone(),
                    number: ctx.claimed.number,
                    slave: b.slave.clone(),
                    stop: stop_tx,
                    task: None,
                    done: done_rx,
                    holds_slave: true,
                    waits_for: None,
                },
            );
            let inner2 = inner.clone();
            let task = tokio::spawn(async move {
                let requeued = build::run(ctx).await;
                build_done(&inner2, build_id, requeued);
                let _ = done_tx.send(true);
            });
            if let Some(r) = st.running.get_mut(&build_id) {
                r.task = Some(task);
            }
        }
        if !started {
            return;
        }
    }
}

/// `YYYY-MM-DD HH:MM` of Unix seconds, UTC.
fn short_time(t: i64) -> String {
    let full = crate::calendar::ymd_hms(t);
    full.get(..16).unwrap_or(&full).to_string()
}

fn build_done(inner: &Arc<Inner>, build_id: i64, requeued: bool) {
    let mut st = inner.state();
    if let Some(r) = st.running.remove(&build_id) {
        if r.holds_slave {
            if let Some(n) = st.per_slave.get_mut(&r.slave) {
                *n = n.saturating_sub(1);
            }
        }
        if requeued {
            st.mark_pending(&r.builder);
        }
    }
    drop(st);
    inner.kick.notify_one();
}
