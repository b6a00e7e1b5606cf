//! The senders of the outgoing queue: one task per kind (mail, commit status)
//! takes the due rows of `notifications` oldest first, tries each, and records
//! the attempt — sent, retrying (backoff from [`FIRST_RETRY`] doubling up to
//! [`MAX_RETRY`]), or given up (a permanent refusal, or [`GIVE_UP_AFTER`] of
//! failures). Every attempt and the server's answer go to the log
//! (`autobot.log` for a daemon).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::ReporterContext;
use crate::db::notifications::{Attempt, QueuedNotification};

/// The wait before the first retry; it doubles with each failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(15 * 60);
/// A notification still failing this long after it was queued is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Which rows a sender takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Mail,
    Status,
}

impl Sender {
    fn kind(self) -> &'static str {
        match self {
            Sender::Mail => "mail",
            Sender::Status => "status",
        }
    }
}

/// The wait after `attempts` failed attempts.
pub fn backoff(attempts: i64) -> Duration {
    let shift = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    FIRST_RETRY.saturating_mul(1u32 << shift).min(MAX_RETRY)
}

/// Send due rows of one kind until `shutdown`; `wake` says new rows were queued.
pub async fn run(
    sender: Sender,
    ctx: ReporterContext,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let kind = sender.kind();
    let client = match sender {
        Sender::Status => match reqwest::Client::builder().build() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!("commit status: cannot make an HTTP client: {e}");
                return;
            }
        },
        Sender::Mail => None,
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = crate::calendar::now_f64();
        let due = match ctx.db.due_notifications(kind, now, 50).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("{kind} queue: {e}");
                Vec::new()
            }
        };
        let worked = !due.is_empty();
        for n in due {
            let outcome = tokio::select! {
                o = attempt(sender, &ctx, client.as_ref(), &n) => o,
                _ = shutdown.changed() => return,
            };
            record(&ctx, &n, outcome).await;
        }
        if worked {
            continue;
        }
        let wait = match ctx.db.next_notification_due(kind).await {
            Ok(next) => {
                next.map(|at| Duration::from_secs_f64((at - crate::calendar::now_f64()).max(0.0)))
            }
            // The database is unwell: look again in a while.
            Err(_) => Some(FIRST_RETRY),
        };
        let stop = tokio::select! {
            _ = wake.notified() => false,
            r = shutdown.changed() => r.is_err(),
            _ = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    None => std::future::pending().await,
                }
            } => false,
        };
        if stop {
            return;
        }
    }
}

/// One attempt: the server's answer, or the error and whether it is final.
async fn attempt(
    sender: Sender,
    ctx: &ReporterContext,
    client: Option<&reqwest::Client>,
    n: &QueuedNotification,
) -> Result<String, (bool, String)> {
    let cfg = ctx.config.borrow().clone();
    match (sender, client) {
        (Sender::Status, Some(c)) => super::status::send(c, &n.meta, &n.payload)
            .await
            .map_err(|e| (e.permanent, e.message)),
        _ => super::mail::send(&cfg, &n.meta, &n.payload)
            .await
            .map_err(|e| (e.permanent, e.message)),
    }
}

async fn record(
    ctx: &ReporterContext,
    n: &QueuedNotification,
    outcome: Result<String, (bool, String)>,
) {
    let now = crate::calendar::now_f64();
    let what = match n.message_id.as_deref() {
        Some(id) => format!("{} {id} to {}", n.kind, n.target),
        None => format!("{} {}", n.kind, n.target),
    };
    let attempt_no = n.attempts + 1;
    let a = match outcome {
        Ok(answer) => {
            tracing::info!("{what}: sent (attempt {attempt_no}): {answer}");
            Attempt::Sent
        }
        Err((true, error)) => {
            tracing::error!("{what}: refused, given up (attempt {attempt_no}): {error}");
            Attempt::GiveUp { error }
        }
        Err((false, error)) => {
            if now - n.created_at >= GIVE_UP_AFTER.as_secs_f64() {
                tracing::error!(
                    "{what}: failed for a day, given up (attempt {attempt_no}): {error}"
                );
                Attempt::GiveUp { error }
            } else {
                let wait = backoff(attempt_no);
                tracing::warn!(
                    "{what}: failed (attempt {attempt_no}), retrying in {} s: {error}",
                    wait.as_secs()
                );
                Attempt::Retry {
                    error,
                    next_at: now + wait.as_secs_f64(),
                }
            }
        }
    };
    if let Err(e) = ctx.db.notification_attempt(n.id, a, now).await {
        tracing::warn!("{what}: cannot record the attempt: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(30), MAX_RETRY);
    }
}
