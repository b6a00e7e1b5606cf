//! Reporters: what the master tells the world about its builds and slaves —
//! mail (Buildbot's MailNotifier), a mail when a slave has been missing too long
//! (a BuildSlave's `notifyOnMissing`), commit statuses on the forges — and the
//! IRC bot ([`irc`], Buildbot's words.IRC), which answers in its channels and
//! announces builds from the same events.
//!
//! The layer never slows a build. It follows the engine's events
//! ([`Engine::subscribe`], a broadcast the engine never waits on) only as a
//! prompt: every decision is made from the database — the builds whose start or
//! end is not yet decided ([`Db::builds_to_announce`]), a builder's previous
//! result for the `problem` and `change` modes — and stored, message and all,
//! in the outgoing queue in the same transaction that marks the build decided
//! (`db::notifications`). A reporter that falls behind (`Lagged`), or a
//! master killed between a build's end and the decision, loses nothing: the next
//! pass, or the first pass after the restart, finds the undecided builds. Sending
//! is done by one task per kind ([`queue`]) that retries with backoff for a day
//! and logs every attempt and the server's answer; a dead or black-holed server
//! holds up only that task.
//!
//! This layer reads the engine, the slave registry, the database and the
//! configuration; nothing below it imports it.

pub mod mail;
pub mod queue;
pub mod status;

pub mod irc;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

use crate::config::MasterConfig;
use crate::db::notifications::NewNotification;
use crate::db::Db;
use crate::engine::{Engine, EngineEvent};
use crate::slavelink::{SlaveEvent, SlaveRegistry};

/// What the reporters read.
#[derive(Clone)]
pub struct ReporterContext {
    pub db: Db,
    pub engine: Engine,
    pub registry: SlaveRegistry,
    pub config: watch::Receiver<Arc<MasterConfig>>,
}

/// Builds decided per pass at most (a long backlog is taken in slices).
const PASS: i64 = 200;

/// How much lower the reporters' thread priority is than the engine's (as the
/// web's threads): composing and sending mail never takes CPU from a Build.
const REPORTERS_NICE: i32 = 10;

/// Start the reporters on a thread and runtime of their own (so neither their
/// CPU nor their waits land on the engine's thread); the returned task ends when
/// they have stopped, after `shutdown` became true.
pub fn start(ctx: ReporterContext, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    // Subscribed before returning, so no event after start is missed.
    let events = ctx.engine.subscribe();
    let slaves = ctx.registry.subscribe();
    crate::daemon::spawn_service("reporters", REPORTERS_NICE, "no notifications", move || {
        run(ctx, events, slaves, shutdown)
    })
}

async fn run(
    ctx: ReporterContext,
    mut events: broadcast::Receiver<EngineEvent>,
    mut slaves: broadcast::Receiver<SlaveEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = ctx
        .db
        .notifications_due_now(crate::calendar::now_f64())
        .await
    {
        tracing::warn!("reporters: cannot read the outgoing queue: {e}");
    }
    let horizon = match ctx.db.reporter_horizon().await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("reporters: cannot read their state, no notifications: {e}");
            return;
        }
    };
    let wake_mail = Arc::new(Notify::new());
    let wake_status = Arc::new(Notify::new());
    let mut senders = vec![
        tokio::spawn(queue::run(
            queue::Sender::Mail,
            ctx.clone(),
            wake_mail.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(queue::run(
            queue::Sender::Status,
            ctx.clone(),
            wake_status.clone(),
            shutdown.clone(),
        )),
    ];
    let mut decider = Decider {
        ctx: ctx.clone(),
        horizon,
        skipped_authors: HashSet::new(),
    };
    let mut missing = Missing::default();
    missing.start(&ctx);
    // A pass at start: whatever a dead master left undecided.
    let mut dirty = true;
    'main: loop {
        if dirty {
            dirty = false;
            match decider.pass().await {
                Ok((mails, statuses, more)) => {
                    if mails {
                        wake_mail.notify_one();
                    }
                    if statuses {
                        wake_status.notify_one();
                    }
                    dirty = more;
                }
                Err(e) => tracing::warn!("reporters: {e}"),
            }
            if dirty {
                continue;
            }
        }
        let next_missing = missing.next_deadline();
        tokio::select! {
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() { break; }
            }
            ev = events.recv() => {
                let mut ev = ev;
                // Take every event already waiting: one pass decides them all.
                loop {
                    match ev {
                        Ok(EngineEvent::BuildFinished { .. }) => dirty = true,
                        Ok(EngineEvent::BuildStarted { .. }) => dirty |= decider.pushes(),
                        Ok(_) => {}
                        // Fell behind: the database has it all.
                        Err(broadcast::error::RecvError::Lagged(_)) => dirty = true,
                        Err(broadcast::error::RecvError::Closed) => break 'main,
                    }
                    ev = match events.try_recv() {
                        Ok(e) => Ok(e),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            Err(broadcast::error::RecvError::Lagged(n))
                        }
                        Err(_) => break,
                    };
                }
            }
            ev = slaves.recv() => match ev {
                Ok(SlaveEvent::Connected(name)) => missing.connected(&name),
                Ok(SlaveEvent::Disconnected { name, .. }) => missing.disconnected(&ctx, &name),
                Err(broadcast::error::RecvError::Lagged(_)) => missing.start(&ctx),
                Err(broadcast::error::RecvError::Closed) => {}
            },
            _ = sleep_until(next_missing) => {
                if missing.fire(&ctx).await {
                    wake_mail.notify_one();
                }
            }
        }
    }
    for s in senders.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(3), s).await;
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Decides which builds get which notifications.
struct Decider {
    ctx: ReporterContext,
    horizon: i64,
    /// Authors without `@` already logged as skipped (each is said once).
    skipped_authors: HashSet<String>,
}

impl Decider {
    /// Whether some factory pushes commit statuses (only then a build's start
    /// needs a decision).
    fn pushes(&self) -> bool {
        self.ctx
            .config
            .borrow()
            .mail
            .factories
            .values()
            .any(|f| f.status_push.is_some())
    }

    /// Decide every undecided build (up to [`PASS`] per stage). Returns whether
    /// mail and statuses were queued, and whether more builds wait.
    async fn pass(&mut self) -> Result<(bool, bool, bool), crate::db::DbError> {
        let cfg = self.ctx.config.borrow().clone();
        let mut mails = false;
        let mut statuses = false;
        let mut more = false;
        if self.pushes() {
            let started = self
                .ctx
                .db
                .builds_to_announce(self.horizon, "started", PASS)
                .await?;
            more |= started.len() as i64 == PASS;
            for b in started {
                let items = status::decide(&self.ctx.db, &cfg, &b, true).await?;
                statuses |= !items.is_empty();
                self.ctx
                    .db
                    .enqueue_notifications(
                        Some(b.id),
                        Some("started"),
                        items,
                        crate::calendar::now_f64(),
                    )
                    .await?;
            }
        }
        // Nothing configured to tell of a build's end (no mail, no commit
        // status): every finished build is decided, in one write.
        if !cfg.mail.enabled && !self.pushes() {
            self.horizon = self.ctx.db.decide_finished_quietly(self.horizon).await?;
            return Ok((false, false, false));
        }
        let finished = self
            .ctx
            .db
            .builds_to_announce(self.horizon, "finished", PASS)
            .await?;
        more |= finished.len() as i64 == PASS;
        tracing::debug!(
            "reporters: pass after build id {}: {} finished build(s) to decide",
            self.horizon,
            finished.len()
        );
        for b in finished {
            tracing::debug!(
                "reporters: deciding {} build {} (id {}, result {:?}, requeued {})",
                b.builder,
                b.number,
                b.id,
                b.result,
                b.requeued
            );
            let mut items: Vec<NewNotification> = Vec::new();
            if !b.requeued {
                if let Some(m) =
                    mail::decide(&self.ctx.db, &cfg, &b, &mut self.skipped_authors).await?
                {
                    items.push(m);
                    mails = true;
                }
                let s = status::decide(&self.ctx.db, &cfg, &b, false).await?;
                statuses |= !s.is_empty();
                items.extend(s);
            }
            let ids = self
                .ctx
                .db
                .enqueue_notifications(
                    Some(b.id),
                    Some("finished"),
                    items,
                    crate::calendar::now_f64(),
                )
                .await?;
            tracing::debug!(
                "reporters: {} build {}: {} notification(s) stored",
                b.builder,
                b.number,
                ids.len()
            );
            if !ids.is_empty() {
                tracing::info!(
                    "{} build {}: {} notification(s) queued",
                    b.builder,
                    b.number,
                    ids.len()
                );
            }
        }
        self.horizon = self.ctx.db.advance_reporter_horizon(self.horizon).await?;
        Ok((mails, statuses, more))
    }
}

/// Slaves with `notifyOnMissing` that are gone, each with when it is missing
/// long enough to mail.
#[derive(Default)]
struct Missing {
    gone: HashMap<String, tokio::time::Instant>,
}

impl Missing {
    /// Start a timer for every watched slave not connected now (at start, and
    /// after missed slave events).
    fn start(&mut self, ctx: &ReporterContext) {
        let cfg = ctx.config.borrow().clone();
        let connected: HashSet<String> = ctx
            .registry
            .handles()
            .iter()
            .map(|h| h.name().to_string())
            .collect();
        for (name, n) in &cfg.mail.slaves {
            if connected.contains(name) {
                self.gone.remove(name);
            } else {
                self.gone.entry(name.clone()).or_insert_with(|| {
                    tokio::time::Instant::now() + Duration::from_secs(n.missing_timeout)
                });
            }
        }
    }

    fn connected(&mut self, name: &str) {
        self.gone.remove(name);
    }

    fn disconnected(&mut self, ctx: &ReporterContext, name: &str) {
        let cfg = ctx.config.borrow().clone();
        if let Some(n) = cfg.mail.slaves.get(name) {
            self.gone.insert(
                name.to_string(),
                tokio::time::Instant::now() + Duration::from_secs(n.missing_timeout),
            );
        }
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.gone.values().min().copied()
    }

    /// Queue the mails of every slave missing long enough. Whether any was.
    async fn fire(&mut self, ctx: &ReporterContext) -> bool {
        let now_i = tokio::time::Instant::now();
        let due: Vec<String> = self
            .gone
            .iter()
            .filter(|(_, at)| **at <= now_i)
            .map(|(n, _)| n.clone())
            .collect();
        let cfg = ctx.config.borrow().clone();
        let mut any = false;
        for name in due {
            self.gone.remove(&name);
            let still_gone = !ctx.registry.handles().iter().any(|h| h.name() == name);
            let Some(n) = cfg.mail.slaves.get(&name) else {
                continue;
            };
            if !still_gone {
                continue;
            }
            let row = ctx.db.slave(&name).await.ok().flatten();
            match mail::missing_slave(&cfg, &name, n, row) {
                Ok(item) => {
                    match ctx
                        .db
                        .enqueue_notifications(None, None, vec![item], crate::calendar::now_f64())
                        .await
                    {
                        Ok(_) => {
                            tracing::warn!(
                                "slave {name} has been missing for {} s: mail to {} queued",
                                n.missing_timeout,
                                n.notify_on_missing.join(", ")
                            );
                            any = true;
                        }
                        Err(e) => tracing::warn!("slave {name}: cannot queue its mail: {e}"),
                    }
                }
                Err(e) => tracing::warn!("slave {name}: cannot make its missing mail: {e}"),
            }
        }
        any
    }
}
