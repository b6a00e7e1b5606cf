//! The one door every Change comes through: pollers, `sendchange`, webhooks and
//! `POST /api/v1/changes` all call [`ChangeBus::add`], which stores the Changes in
//! SQLite *first* and only then tells the schedulers (by id, in id order).
//!
//! A subscriber that falls behind (`Lagged`) or starts late never loses a Change:
//! ids grow with every insert, so it re-reads the `changes` table above the last id
//! it handled ([`ChangeBus::since`]).

use tokio::sync::broadcast;

use crate::db::changes::{ChangeRow, NewChange};
use crate::db::{Db, DbError};

/// Stores Changes and announces them; cheap to clone.
#[derive(Clone)]
pub struct ChangeBus {
    db: Db,
    tx: broadcast::Sender<ChangeRow>,
    /// Repository URLs someone asked to poll now (`/change_hook/poller`, webhooks).
    polls: broadcast::Sender<String>,
    /// One bump per Change announced.
    activity: std::sync::Arc<crate::activity::Activity>,
}

impl ChangeBus {
    pub fn new(db: Db) -> ChangeBus {
        ChangeBus {
            db,
            tx: broadcast::channel(4096).0,
            polls: broadcast::channel(256).0,
            activity: Default::default(),
        }
    }

    /// Store `changes` (their order becomes their id order) in one transaction, then
    /// announce each; the stored rows.
    pub async fn add(&self, changes: Vec<NewChange>) -> Result<Vec<ChangeRow>, DbError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.db.add_changes(changes.clone()).await?;
        let rows: Vec<ChangeRow> = ids
            .into_iter()
            .zip(changes)
            .map(|(id, c)| ChangeRow {
                id,
                who: c.who,
                files: c.files,
                comments: c.comments,
                revision: c.revision,
                branch: c.branch,
                when: c.when,
                repository: c.repository,
                category: c.category,
                links: c.links,
                project: c.project,
            })
            .collect();
        for row in &rows {
            tracing::info!(
                "change {} by {} on {}: {}",
                row.id,
                row.who,
                row.branch.as_deref().unwrap_or("(default branch)"),
                row.revision.as_deref().unwrap_or("(no revision)")
            );
            self.activity.bump();
            let _ = self.tx.send(row.clone());
        }
        Ok(rows)
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

    /// Ask the pollers of repository `url` to poll now; how many poller managers
    /// heard it (0: nothing polls at the moment).
    pub fn request_poll(&self, url: &str) -> usize {
        self.polls.send(url.to_string()).unwrap_or(0)
    }

    /// Poll requests from now on (for the poller manager).
    pub fn poll_requests(&self) -> broadcast::Receiver<String> {
        self.polls.subscribe()
    }

    /// The database the Changes are in.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_is_stored_before_it_is_announced() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        let bus = ChangeBus::new(db.clone());
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
}
