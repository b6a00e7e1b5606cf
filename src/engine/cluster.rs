//! The engine among several masters on one PostgreSQL database (Buildbot's
//! multi-master): this master's heartbeat, the work of a master found dead
//! taken back, and the BuildRequests the other masters queue.
//!
//! Every third of `masterTimeout` the master writes its heartbeat
//! ([`crate::db::masters`]); a master silent for longer is dead, and the one
//! live master that finds it first finishes its running Builds as EXCEPTION
//! ([`DEAD_TEXT`]) and gives its claimed BuildRequests back to the queue,
//! where any master with a free, matching slave claims them. A request queued
//! through any master is announced to all of them (`NOTIFY`,
//! [`crate::db::requests::QUEUED`]): each marks the builder pending and its
//! dispatcher tries to claim, so a request never waits for the master it came
//! through to have the slave. (Not announced: a request whose builder's slave
//! is connected to the master it came through, which no other master could
//! claim; a master that a slave connects to looks for its builders' requests
//! itself.) Each master's engine events, and its slaves
//! connecting and going away, are relayed to the others the same way
//! ([`EVENTS`], batched every [`RELAY_EVERY`]), so that the live pages of
//! every master follow every Build and every slave. On SQLite there is one
//! master: none of this runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{EngineEvent, Inner};
use crate::slavelink::SlaveEvent;

/// The channel on which each master relays its engine events to the others'
/// live views. Payload: JSON, `{"master": NAME, "events": [EVENT, …],
/// "slaves": [SLAVE EVENT, …]}`.
pub const EVENTS: &str = crate::db::masters::EVENTS;

/// How long a master gathers its events before relaying them in one `NOTIFY`
/// (one statement for many events: a burst of Builds costs the database a
/// few notifications a second, not several per Build).
pub const RELAY_EVERY: Duration = Duration::from_millis(50);

/// The largest payload relayed in one `NOTIFY` (PostgreSQL refuses 8000
/// bytes and more); a batch that would grow past it is sent first.
const MAX_PAYLOAD: usize = 7000;

/// One `NOTIFY` of [`EVENTS`]: which master, and its events in order.
#[derive(Debug, Serialize, Deserialize)]
struct Relayed {
    master: String,
    #[serde(default)]
    events: Vec<EngineEvent>,
    #[serde(default)]
    slaves: Vec<SlaveEvent>,
}

/// The text of a Build whose master died while it ran.
pub const DEAD_TEXT: &str = "interrupted: its master died";

/// Start the cluster task if the database is shared; `None` on SQLite.
pub(super) fn start(inner: &Arc<Inner>) -> Option<JoinHandle<()>> {
    let queued = inner.db.listen(crate::db::requests::QUEUED)?;
    let others = inner.db.listen(EVENTS)?;
    let live = Live {
        events: broadcast::channel(1024).0,
        slaves: broadcast::channel(256).0,
    };
    let _ = inner.live.set(live.events.clone());
    let _ = inner.live_slaves.set(live.slaves.clone());
    let relay = tokio::spawn(relay(inner.clone(), live, others));
    let main = tokio::spawn(run(inner.clone(), queued));
    Some(tokio::spawn(async move {
        let _ = main.await;
        relay.abort();
    }))
}

/// The live views' channels ([`super::Engine::live`],
/// [`super::Engine::slave_events`]).
struct Live {
    events: broadcast::Sender<EngineEvent>,
    slaves: broadcast::Sender<SlaveEvent>,
}

/// This master's news gathered for one `NOTIFY`, as JSON.
#[derive(Default)]
struct Batch {
    events: Vec<String>,
    slaves: Vec<String>,
    /// The payload's size so far.
    size: usize,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.slaves.is_empty()
    }
}

/// Feed the live views: this master's events and slaves as they happen (and
/// relayed to the others every [`RELAY_EVERY`]), the other masters' as their
/// notifications arrive.
async fn relay(
    inner: Arc<Inner>,
    live: Live,
    mut others: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let me = inner.db.master_name().to_string();
    let mut mine = inner.events.subscribe();
    let mut my_slaves = inner.registry.subscribe();
    let mut batch = Batch::default();
    let mut listening = true;
    // When the batch gathered since its first event goes out.
    let mut due = tokio::time::Instant::now();
    loop {
        let flush = async {
            if batch.is_empty() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep_until(due).await
            }
        };
        // One of this master's events to relay: its JSON, and whether it is a
        // slave's.
        let news: Option<(String, bool)> = tokio::select! {
            ev = mine.recv() => match ev {
                Ok(ev) => {
                    let json = serde_json::to_string(&ev).ok();
                    let _ = live.events.send(ev);
                    json.map(|j| (j, false))
                }
                // The others' pages re-read what they missed ("lagged").
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            ev = my_slaves.recv() => match ev {
                Ok(ev) => {
                    let json = serde_json::to_string(&ev).ok();
                    let _ = live.slaves.send(ev);
                    json.map(|j| (j, true))
                }
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = flush => {
                send(&inner, &me, &mut batch).await;
                None
            }
            payload = others.recv(), if listening => {
                match payload {
                    Some(p) if p == crate::db::pgpool::MISSED => {}
                    Some(p) => match serde_json::from_str::<Relayed>(&p) {
                        Ok(r) if r.master != me => {
                            for ev in r.events {
                                let _ = live.events.send(ev);
                            }
                            for ev in r.slaves {
                                let _ = live.slaves.send(ev);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!("a relayed event not understood: {e}"),
                    },
                    None => listening = false,
                }
                None
            }
        };
        let Some((json, slave)) = news else {
            continue;
        };
        if json.len() + 80 + me.len() > MAX_PAYLOAD {
            tracing::debug!("event not relayed (too large for NOTIFY): {json:.200}");
            continue;
        }
        if batch.size + json.len() + 80 + me.len() > MAX_PAYLOAD {
            send(&inner, &me, &mut batch).await;
        }
        if batch.is_empty() {
            due = tokio::time::Instant::now() + RELAY_EVERY;
        }
        batch.size += json.len() + 1;
        match slave {
            true => batch.slaves.push(json),
            false => batch.events.push(json),
        }
    }
}

/// Relay `batch` to the other masters in one `NOTIFY`.
async fn send(inner: &Arc<Inner>, me: &str, batch: &mut Batch) {
    if batch.is_empty() {
        return;
    }
    let payload = format!(
        "{{\"master\":{},\"events\":[{}],\"slaves\":[{}]}}",
        serde_json::Value::from(me),
        batch.events.join(","),
        batch.slaves.join(",")
    );
    *batch = Batch::default();
    if let Err(e) = inner.db.notify(EVENTS, payload).await {
        tracing::warn!("cannot relay events to the other masters: {e}");
    }
}

async fn run(inner: Arc<Inner>, mut queued: tokio::sync::mpsc::UnboundedReceiver<String>) {
    let db = inner.db.clone();
    let me = db.master_name().to_string();
    if let Err(e) = db.master_started(&me, crate::calendar::now_f64()).await {
        tracing::error!("master {me}: cannot record its start: {e}");
    }
    let mut closing = inner.closing.subscribe();
    let mut listening = true;
    let timeout = db.master_timeout().max(3);
    let beat = Duration::from_secs_f64(timeout as f64 / 3.0);
    // A deadline, not a sleep started anew each turn: a burst of queued
    // requests (one notification each) must not put the heartbeat off until
    // the others take this master for dead.
    let mut next_beat = tokio::time::Instant::now() + beat;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_beat) => {
                next_beat = tokio::time::Instant::now() + beat;
                heartbeat(&inner, &me, timeout).await;
            }
            payload = queued.recv(), if listening => match payload {
                Some(builder) if builder == crate::db::pgpool::MISSED => {
                    requeue_all(&inner).await;
                }
                Some(builder) => {
                    inner.state().mark_pending(&builder);
                    inner.kick.notify_one();
                }
                None => listening = false,
            },
            _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => break,
        }
    }
    if let Err(e) = db.master_stopped(&me).await {
        tracing::warn!("master {me}: cannot record its stop: {e}");
    }
}

/// Write the heartbeat; take back the work of the masters found dead.
async fn heartbeat(inner: &Arc<Inner>, me: &str, timeout: u64) {
    let now = crate::calendar::now_f64();
    let dead = match inner
        .db
        .master_heartbeat(me, now, now - timeout as f64)
        .await
    {
        Ok(dead) => dead,
        Err(e) => {
            tracing::error!("master {me}: heartbeat failed: {e}");
            return;
        }
    };
    for master in dead {
        match inner.db.recover_dead_master(&master, DEAD_TEXT, now).await {
            Ok(builds) => {
                tracing::warn!(
                    "master {master} silent for {timeout} s: taken for dead; its {} running \
                     build(s) ended as exception, its requests queued again",
                    builds.len()
                );
                for (builder, number) in builds {
                    tracing::warn!("{builder} build {number}: {DEAD_TEXT}");
                }
            }
            Err(e) => tracing::error!("cannot take back the work of dead master {master}: {e}"),
        }
        requeue_all(inner).await;
    }
}

/// Every builder with a waiting request marked pending (after notifications
/// may have been missed, or requests came back to the queue).
async fn requeue_all(inner: &Arc<Inner>) {
    match inner.db.builders_with_requests().await {
        Ok(builders) => {
            let mut st = inner.state();
            for b in builders {
                st.mark_pending(&b);
            }
        }
        Err(e) => tracing::warn!("cannot read the queue: {e}"),
    }
    inner.kick.notify_one();
}
