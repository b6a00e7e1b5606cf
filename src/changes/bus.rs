//! The one door every Change comes through: pollers, `sendchange`, webhooks and
//! `POST /api/v1/changes` all call [`ChangeBus::add`] (webhooks
//! [`ChangeBus::add_delivery`]), which checks each Change against
//! [`validate::check_change`](super::validate::check_change), stores them in SQLite
//! *first* and only then tells the schedulers (by id, in id order). A batch with one
//! bad Change stores none of them.
//!
//! A subscriber that falls behind (`Lagged`) or starts late never loses a Change:
//! ids grow with every insert, so it re-reads the `changes` table above the last id
//! it handled ([`ChangeBus::since`]).
//!
//! Where several masters share a PostgreSQL database, each stored Change is
//! announced to every master (`NOTIFY`, [`crate::db::changes::STORED`]), and
//! each master's bus tells its subscribers of every Change, whichever master
//! stored it, in id order: it reads the Changes above the last id it announced
//! when told (and every few seconds, should a notification be lost). The
//! schedulers (run by one master, see [`crate::schedulers`]) and the live
//! pages of every master thus see every Change.
//!
//! A Change that comes alone (a `sendchange`, a commit hook, most polls) is
//! handed to the schedulers when they run on this master
//! ([`ChangeBus::route_to`]): if it makes a scheduler fire a BuildSet at once
//! (treeStable = 0, nothing waiting), they store the Change and the BuildSet
//! in one write, and the Change is announced as stored.
//!
//! The bus also carries requests to poll a repository now (`/change_hook/poller`, a
//! webhook's push to a polled branch). They are coalesced per repository: each
//! poller has one [`PollQueue`] holding at most one request, so a burst of any number
//! of requests costs at most the poll in flight plus one more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{broadcast, Notify};

use super::validate::{check_change, FieldError};
use crate::db::changes::{ChangeRow, Delivery, DeliveryOutcome, NewChange};
use crate::db::{Db, DbError};

/// How long a webhook delivery is remembered, in seconds (30 days; forges
/// redeliver for a few days at most).
pub const DELIVERY_RETENTION: f64 = 30.0 * 86_400.0;

/// Why Changes were not stored.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// Change number `index` (0-based) of the batch broke a rule; nothing stored.
    #[error("{}{error}", if *.batch { format!("change {index}: ") } else { String::new() })]
    Invalid {
        index: usize,
        /// Whether the batch had more than one Change (the message names the index).
        batch: bool,
        error: FieldError,
    },
    #[error("{0}")]
    Db(#[from] DbError),
}

/// A Change handed to the schedulers to store ([`ChangeBus::route_to`]),
/// with the way to say how that went.
pub struct RoutedChange {
    pub change: NewChange,
    pub reply: tokio::sync::oneshot::Sender<Routed>,
}

/// What the schedulers did with a [`RoutedChange`].
#[derive(Debug)]
pub enum Routed {
    /// Stored with this id (with the BuildSet it makes, or to be handled
    /// when announced, as any other).
    Stored(i64),
    /// Not stored: the bus stores it.
    Declined,
    /// Not stored: the write failed.
    Failed(DbError),
}

/// What [`ChangeBus::add_delivery`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivered {
    /// A new delivery: its Changes, stored and announced.
    Stored(Vec<ChangeRow>),
    /// Seen before, at `received_at` (unix seconds): nothing stored.
    Repeat { received_at: f64, by_id: bool },
}

/// What a request to poll a repository did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollRequest {
    /// No poller of that repository is running.
    NoPoller,
    /// A poll was queued (it starts when the one in flight, if any, ends).
    Queued,
    /// A poll was already queued; this request joined it.
    AlreadyQueued,
}

/// One poller's pending poll request: at most one waits, whatever the number of
/// requests. The poller takes it as each poll starts.
#[derive(Debug, Default)]
pub struct PollQueue {
    pending: AtomicBool,
    wake: Notify,
}

impl PollQueue {
    /// Queue a poll; whether one was queued already.
    fn request(&self) -> PollRequest {
        if self.pending.swap(true, Ordering::SeqCst) {
            PollRequest::AlreadyQueued
        } else {
            self.wake.notify_one();
            PollRequest::Queued
        }
    }

    /// Wait until a poll is requested (and not yet taken).
    pub async fn requested(&self) {
        loop {
            let woken = self.wake.notified();
            if self.pending.load(Ordering::SeqCst) {
                return;
            }
            woken.await;
        }
    }

    /// A poll starts now: it covers the pending request, if any (whether there was
    /// one).
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::SeqCst)
    }
}

/// The key of a repository's poll queue: its URL without credentials.
fn poll_key(url: &str) -> String {
    crate::sources::redact_url(url.trim())
}

/// Stores Changes and announces them; cheap to clone.
#[derive(Clone)]
pub struct ChangeBus {
    db: Db,
    tx: broadcast::Sender<ChangeRow>,
    /// The poll queues of the running pollers, by repository.
    polls: Arc<Mutex<HashMap<String, Vec<Weak<PollQueue>>>>>,
    /// One bump per Change announced.
    activity: std::sync::Arc<crate::activity::Activity>,
    /// Dropped with the last clone of the bus: the task following the other
    /// masters' Changes ([`relay_stored`]) then ends.
    alive: Arc<()>,
    /// On a shared database: the highest Change id announced, every id below
    /// it announced too (ids are committed in order, [`crate::db::changes::STORED`]).
    /// A Change this master stored right after it is announced at once; any
    /// other waits for [`relay_stored`], which reads what is above it.
    announced: Arc<Mutex<i64>>,
    /// Where a single Change goes to be stored by the schedulers running on
    /// this master ([`ChangeBus::route_to`]).
    router: Arc<Mutex<Option<tokio::sync::mpsc::Sender<RoutedChange>>>>,
}

/// How often a bus on a shared database reads the Changes above the last one
/// it announced even when no notification came (one may be lost while the
/// listening connection reconnects).
const RESCAN: std::time::Duration = std::time::Duration::from_secs(5);

/// On a shared database: announce every Change stored by any master (this
/// one too), in id order, as the notifications of [`crate::db::changes::STORED`]
/// say they were committed.
async fn relay_stored(
    db: Db,
    tx: broadcast::Sender<ChangeRow>,
    activity: Arc<crate::activity::Activity>,
    alive: Weak<()>,
    announced: Arc<Mutex<i64>>,
    mut stored: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let newest = match db.max_change_id().await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!("cannot read the newest Change: {e}; following from the first");
            0
        }
    };
    {
        let mut a = announced.lock().unwrap_or_else(|p| p.into_inner());
        *a = (*a).max(newest);
    }
    loop {
        // The newest id notified (`None`: a notification whose payload is not
        // an id, e.g. MISSED after a reconnect, or the rescan: read anyway).
        let mut newest = tokio::select! {
            note = stored.recv() => match note {
                None => return,
                Some(id) => id.parse::<i64>().ok(),
            },
            _ = tokio::time::sleep(RESCAN) => None,
        };
        if alive.strong_count() == 0 {
            return;
        }
        // Every id committed is announced in order: the rows above `last`
        // are those not yet announced (several notifications, one read).
        while let Ok(more) = stored.try_recv() {
            newest = newest.zip(more.parse::<i64>().ok()).map(|(a, b)| a.max(b));
        }
        let last = *announced.lock().unwrap_or_else(|p| p.into_inner());
        // This master's own Changes were announced as it stored them: no
        // read (it would run beside the scheduling of the very same Change).
        if newest.is_some_and(|id| id <= last) {
            continue;
        }
        match db.changes_after(last).await {
            Ok(rows) => {
                let mut a = announced.lock().unwrap_or_else(|p| p.into_inner());
                // Those this master announced meanwhile are skipped.
                for row in rows {
                    if row.id <= *a {
                        continue;
                    }
                    *a = row.id;
                    activity.bump();
                    let _ = tx.send(row);
                }
            }
            Err(e) => tracing::warn!("cannot read the Changes above {last}: {e}"),
        }
    }
}

impl ChangeBus {
    pub fn new(db: Db) -> ChangeBus {
        let bus = ChangeBus {
            db,
            // Every slot is allocated (and touched) up front, 380 bytes each;
            // a scheduler further behind gets `Lagged` and re-reads the Changes.
            tx: broadcast::channel(256).0,
            polls: Default::default(),
            activity: Default::default(),
            alive: Arc::new(()),
            announced: Arc::new(Mutex::new(0)),
            router: Default::default(),
        };
        if bus.db.shared() {
            match (
                tokio::runtime::Handle::try_current(),
                bus.db.listen(crate::db::changes::STORED),
            ) {
                (Ok(rt), Some(stored)) => {
                    rt.spawn(relay_stored(
                        bus.db.clone(),
                        bus.tx.clone(),
                        bus.activity.clone(),
                        Arc::downgrade(&bus.alive),
                        bus.announced.clone(),
                        stored,
                    ));
                }
                _ => tracing::error!("no runtime to follow the Changes of the other masters"),
            }
        }
        bus
    }

    /// Check `changes` and store them (their order becomes their id order) in one
    /// transaction, then announce each; the stored rows.
    pub async fn add(&self, changes: Vec<NewChange>) -> Result<Vec<ChangeRow>, AddError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        check_all(&changes)?;
        if let [one] = changes.as_slice() {
            if let Some(id) = self.routed(one.clone()).await? {
                return Ok(self.announce(vec![id], changes));
            }
        }
        let ids = self.db.add_changes(changes.clone()).await?;
        Ok(self.announce(ids, changes))
    }

    /// From now on, hand each Change that comes alone to `schedulers` to
    /// store: one whose BuildSet they would submit at once is then stored
    /// with it, in one write ([`crate::db::requests::insert_change_firing`]).
    /// Until the receiver is dropped (the schedulers stopped here), or
    /// another is given.
    pub fn route_to(&self, schedulers: tokio::sync::mpsc::Sender<RoutedChange>) {
        *self.router.lock().unwrap_or_else(|p| p.into_inner()) = Some(schedulers);
    }

    /// Store `change` through the schedulers ([`ChangeBus::route_to`]); its
    /// id, or `None` when nothing stored it (no schedulers here, or they
    /// declined).
    async fn routed(&self, change: NewChange) -> Result<Option<i64>, AddError> {
        let router = self
            .router
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(router) = router else {
            return Ok(None);
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if router.send(RoutedChange { change, reply }).await.is_err() {
            return Ok(None);
        }
        match answer.await {
            Ok(Routed::Stored(id)) => Ok(Some(id)),
            Ok(Routed::Declined) => Ok(None),
            Ok(Routed::Failed(e)) => Err(e.into()),
            // The schedulers stopped (the master shuts down) mid-write.
            Err(_) => Err(AddError::Db(DbError::Task(
                "the schedulers stopped while storing the Change; it may have been stored".into(),
            ))),
        }
    }

    /// [`add`](Self::add) for a webhook: the Changes are stored together with the
    /// record of `delivery`, unless a delivery with the same id or body was recorded
    /// in the last [`DELIVERY_RETENTION`] seconds (then nothing is stored).
    pub async fn add_delivery(
        &self,
        delivery: Delivery,
        changes: Vec<NewChange>,
    ) -> Result<Delivered, AddError> {
        check_all(&changes)?;
        let now = crate::calendar::now_f64();
        let outcome = self
            .db
            .add_delivery(delivery, changes.clone(), now, DELIVERY_RETENTION)
            .await?;
        Ok(match outcome {
            DeliveryOutcome::Stored(ids) => Delivered::Stored(self.announce(ids, changes)),
            DeliveryOutcome::Repeat { received_at, by_id } => {
                Delivered::Repeat { received_at, by_id }
            }
        })
    }

    /// [`add_delivery`](Self::add_delivery) of one Change with its properties
    /// (a pull request's), checked as a forced build's are.
    pub async fn add_delivery_with_properties(
        &self,
        delivery: Delivery,
        change: NewChange,
        properties: std::collections::BTreeMap<String, String>,
    ) -> Result<Delivered, AddError> {
        let changes = vec![change];
        check_all(&changes)?;
        super::validate::check_properties(&properties).map_err(|error| AddError::Invalid {
            index: 0,
            batch: false,
            error,
        })?;
        let now = crate::calendar::now_f64();
        let outcome = self
            .db
            .add_delivery_with_properties(
                delivery,
                changes.clone(),
                vec![properties],
                now,
                DELIVERY_RETENTION,
            )
            .await?;
        Ok(match outcome {
            DeliveryOutcome::Stored(ids) => Delivered::Stored(self.announce(ids, changes)),
            DeliveryOutcome::Repeat { received_at, by_id } => {
                Delivered::Repeat { received_at, by_id }
            }
        })
    }

    /// Tell the subscribers of stored Changes.
    fn announce(&self, ids: Vec<i64>, changes: Vec<NewChange>) -> Vec<ChangeRow> {
        let rows: Vec<ChangeRow> = ids
            .into_iter()
            .zip(changes)
            .map(|(id, c)| c.stored_as(id))
            .collect();
        for row in &rows {
            tracing::info!(
                "change {} by {} on {}: {}",
                row.id,
                row.who,
                row.branch.as_deref().unwrap_or("(default branch)"),
                row.revision.as_deref().unwrap_or("(no revision)")
            );
            // On a shared database every master's bus announces it, in id
            // order: this one at once when it is the next id, else when told
            // that it was committed ([`relay_stored`]).
            if self.db.shared() {
                let mut a = self.announced.lock().unwrap_or_else(|p| p.into_inner());
                if row.id != *a + 1 {
                    continue;
                }
                *a = row.id;
            }
            self.activity.bump();
            let _ = self.tx.send(row.clone());
        }
        rows
    }

    /// How many Changes have been announced, and when the last was.
    pub fn activity(&self) -> &crate::activity::Activity {
        &self.activity
    }

    /// Changes stored from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeRow> {
        self.tx.subscribe()
    }

    /// Every stored Change with an id above `after`, oldest first (catch-up after a
    /// restart or a `Lagged` receiver).
    pub async fn since(&self, after: i64) -> Result<Vec<ChangeRow>, DbError> {
        self.db.changes_after(after).await
    }

    /// Ask the pollers of repository `url` to poll now. Requests coalesce: while
    /// one is queued, more join it.
    pub fn request_poll(&self, url: &str) -> PollRequest {
        let mut map = self.polls.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queues) = map.get_mut(&poll_key(url)) else {
            return PollRequest::NoPoller;
        };
        queues.retain(|q| q.strong_count() > 0);
        let mut answer = PollRequest::NoPoller;
        for q in queues.iter().filter_map(Weak::upgrade) {
            answer = match (answer, q.request()) {
                (_, PollRequest::Queued) | (PollRequest::Queued, _) => PollRequest::Queued,
                (_, other) => other,
            };
        }
        if queues.is_empty() {
            map.remove(&poll_key(url));
        }
        answer
    }

    /// Whether a poller of `url` is running (its requests would be heard).
    pub fn has_poller(&self, url: &str) -> bool {
        let map = self.polls.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&poll_key(url))
            .is_some_and(|qs| qs.iter().any(|q| q.strong_count() > 0))
    }

    /// The poll queue of a poller of `url`, registered until the poller drops it.
    pub fn poll_queue(&self, url: &str) -> Arc<PollQueue> {
        let q = Arc::new(PollQueue::default());
        let mut map = self.polls.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(poll_key(url)).or_default();
        list.retain(|q| q.strong_count() > 0);
        list.push(Arc::downgrade(&q));
        q
    }

    /// The database the Changes are in.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

/// Every Change of a batch passes [`check_change`], or the first that does not is
/// the error.
fn check_all(changes: &[NewChange]) -> Result<(), AddError> {
    for (index, c) in changes.iter().enumerate() {
        check_change(c).map_err(|error| AddError::Invalid {
            index,
            batch: changes.len() > 1,
            error,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus() -> (tempfile::TempDir, ChangeBus) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        (dir, ChangeBus::new(db))
    }

    #[tokio::test]
    async fn a_change_is_stored_before_it_is_announced() {
        let (_dir, bus) = bus();
        let db = bus.db().clone();
        let mut rx = bus.subscribe();
        let rows = bus
            .add(vec![NewChange {
                who: "Ann".into(),
                files: vec!["a.c".into()],
                ..Default::default()
            }])
            .await
            .unwrap();
        let got = rx.recv().await.unwrap();
        assert_eq!(got, rows[0]);
        assert_eq!(db.change(got.id).await.unwrap().unwrap(), got);
        assert_eq!(bus.since(0).await.unwrap(), rows);
        assert!(bus.since(got.id).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_batch_with_one_bad_change_stores_nothing() {
        let (_dir, bus) = bus();
        let good = NewChange {
            who: "Ann".into(),
            ..Default::default()
        };
        let bad = NewChange {
            revision: Some("--output=/tmp/x".into()),
            ..good.clone()
        };
        let e = bus.add(vec![good.clone(), bad.clone()]).await.unwrap_err();
        assert!(matches!(e, AddError::Invalid { index: 1, .. }), "{e}");
        assert!(e.to_string().starts_with("change 1: `revision`"), "{e}");
        let e = bus.add(vec![bad]).await.unwrap_err().to_string();
        assert!(e.starts_with("`revision` \"--output"), "{e}");
        let d = Delivery {
            forge: "gitea".into(),
            id: None,
            digest: "x".into(),
        };
        let huge = NewChange {
            comments: "x".repeat(super::super::validate::MAX_COMMENTS + 1),
            ..good
        };
        assert!(bus.add_delivery(d, vec![huge]).await.is_err());
        assert!(bus.since(0).await.unwrap().is_empty());
        assert_eq!(bus.db().hook_deliveries().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn poll_requests_coalesce_per_repository() {
        let (_dir, bus) = bus();
        assert_eq!(bus.request_poll("/srv/a"), PollRequest::NoPoller);
        let q = bus.poll_queue("https://bot:pw@forge/a.git");
        // The same repository without credentials; another stays unheard.
        assert_eq!(bus.request_poll("https://forge/a.git"), PollRequest::Queued);
        for _ in 0..100 {
            assert_eq!(
                bus.request_poll("https://forge/a.git"),
                PollRequest::AlreadyQueued
            );
        }
        assert_eq!(
            bus.request_poll("https://forge/b.git"),
            PollRequest::NoPoller
        );
        q.requested().await;
        assert!(q.take());
        // Taken: the next request queues one more poll, not 100.
        assert!(!q.take());
        assert_eq!(bus.request_poll("https://forge/a.git"), PollRequest::Queued);
        // A poll that starts on its own (the interval) covers the pending request;
        // the stale wake-up does not count as a request.
        assert!(q.take());
        use futures_util::FutureExt;
        assert!(
            q.requested().now_or_never().is_none(),
            "a taken request woke the poller"
        );
        drop(q);
        assert_eq!(
            bus.request_poll("https://forge/a.git"),
            PollRequest::NoPoller
        );
    }
}
