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
//! through to have the slave. On SQLite there is one master: none of this
//! runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Inner;

/// The text of a Build whose master died while it ran.
pub const DEAD_TEXT: &str = "interrupted: its master died";

/// Start the cluster task if the database is shared; `None` on SQLite.
pub(super) fn start(inner: &Arc<Inner>) -> Option<JoinHandle<()>> {
    let queued = inner.db.listen(crate::db::requests::QUEUED)?;
    Some(tokio::spawn(run(inner.clone(), queued)))
}

async fn run(inner: Arc<Inner>, mut queued: tokio::sync::mpsc::UnboundedReceiver<String>) {
    let db = inner.db.clone();
    let me = db.master_name().to_string();
    if let Err(e) = db.master_started(&me, crate::calendar::now_f64()).await {
        tracing::error!("master {me}: cannot record its start: {e}");
    }
    let mut closing = inner.closing.subscribe();
    let mut listening = true;
    loop {
        let timeout = db.master_timeout().max(3);
        let beat = Duration::from_secs_f64(timeout as f64 / 3.0);
        tokio::select! {
            _ = tokio::time::sleep(beat) => heartbeat(&inner, &me, timeout).await,
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
