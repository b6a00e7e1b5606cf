//! What schedulers and pollers keep in SQLite so a restarted master neither loses a
//! Change nor builds twice.
//!
//! * `scheduler_changes`: Changes a scheduler accepted and no BuildSet has taken yet,
//!   per branch, each *important* (it starts/restarts the tree-stable timer) or not
//!   (a `files` filter did not match: it only joins the next build);
//! * `scheduler_timers`: the tree-stable deadline per (scheduler, branch);
//! * `scheduler_state`: small integers per scheduler (`last_change` handled,
//!   `last_run` of a periodic/nightly scheduler, `watermark` of a dependent one);
//! * `scheduler_buildsets`: upstream BuildSets a dependent scheduler has handled;
//! * `poller_heads`: the last revision a poller stored per (repository, branch).
//!
//! A scheduler submits a BuildSet first and forgets the Changes it took after; if the
//! master dies in between, [`Db::forget_built_changes`] at the next start sees the
//! Changes in a BuildSet of that scheduler and drops them, so nothing builds twice.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use super::changes::{change_row, ChangeRow, CHANGE_COLUMNS};
use super::{Db, DbError};

/// A Change a scheduler accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingChange {
    pub scheduler: String,
    pub change: i64,
    /// The branch key (`""` for a Change without a branch).
    pub branch: String,
    /// Whether it starts the tree-stable timer (false: a `files` filter missed).
    pub important: bool,
}

/// What handling a batch of Changes changes in the schedulers' state, written in
/// one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeBatch {
    pub pending: Vec<PendingChange>,
    /// (scheduler, branch, deadline): tree-stable timers (re)started.
    pub timers: Vec<(String, String, f64)>,
    /// (scheduler, id of the last Change handled).
    pub handled: Vec<(String, i64)>,
}

/// A complete BuildSet as a dependent scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedBuildSet {
    pub id: i64,
    pub result: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub project: String,
    pub changes: Vec<i64>,
    /// The builders it had requests for.
    pub builders: Vec<String>,
}

impl Db {
    /// A value of `scheduler_state`.
    pub async fn scheduler_value(
        &self,
        scheduler: &str,
        key: &str,
    ) -> Result<Option<i64>, DbError> {
        let (s, k) = (scheduler.to_string(), key.to_string());
        self.read(move |c| {
            c.prepare_cached("SELECT value FROM scheduler_state WHERE scheduler = ?1 AND key = ?2")?
                .query_row(params![s, k], |r| r.get(0))
                .optional()
        })
        .await
    }

    /// Set a value of `scheduler_state`.
    pub async fn set_scheduler_value(
        &self,
        scheduler: &str,
        key: &str,
        value: i64,
    ) -> Result<(), DbError> {
        let (s, k) = (scheduler.to_string(), key.to_string());
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO scheduler_state(scheduler, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(scheduler, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![s, k, value])?;
            Ok(())
        })
        .await
    }

    /// The highest Change id stored (0 when none).
    pub async fn max_change_id(&self) -> Result<i64, DbError> {
        self.read(|c| c.query_row("SELECT coalesce(max(id), 0) FROM changes", [], |r| r.get(0)))
            .await
    }

    /// The highest BuildSet id stored (0 when none).
    pub async fn max_buildset_id(&self) -> Result<i64, DbError> {
        self.read(|c| {
            c.query_row("SELECT coalesce(max(id), 0) FROM buildsets", [], |r| {
                r.get(0)
            })
        })
        .await
    }

    /// Store what handling some Changes decided, in one transaction.
    pub async fn record_scheduler_changes(&self, batch: ChangeBatch) -> Result<(), DbError> {
        self.write(move |tx| {
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO scheduler_changes(scheduler, change, branch, important)
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                for p in &batch.pending {
                    st.execute(params![p.scheduler, p.change, p.branch, p.important])?;
                }
            }
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO scheduler_timers(scheduler, branch, deadline) VALUES (?1, ?2, ?3)
                     ON CONFLICT(scheduler, branch) DO UPDATE SET deadline = excluded.deadline",
                )?;
                for (s, b, d) in &batch.timers {
                    st.execute(params![s, b, d])?;
                }
            }
            let mut st = tx.prepare_cached(
                "INSERT INTO scheduler_state(scheduler, key, value) VALUES (?1, 'last_change', ?2)
                 ON CONFLICT(scheduler, key) DO UPDATE SET value = max(value, excluded.value)",
            )?;
            for (s, id) in &batch.handled {
                st.execute(params![s, id])?;
            }
            Ok(())
        })
        .await
    }

    /// Every tree-stable timer: (scheduler, branch, deadline).
    pub async fn scheduler_timers(&self) -> Result<Vec<(String, String, f64)>, DbError> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT scheduler, branch, deadline FROM scheduler_timers")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    /// The Changes waiting in a scheduler for `branch`, oldest first, each with
    /// whether it is important.
    pub async fn scheduler_pending(
        &self,
        scheduler: &str,
        branch: &str,
    ) -> Result<Vec<(ChangeRow, bool)>, DbError> {
        let (s, b) = (scheduler.to_string(), branch.to_string());
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {CHANGE_COLUMNS}, sc.important FROM scheduler_changes sc
                 JOIN changes c ON c.id = sc.change
                 WHERE sc.scheduler = ?1 AND sc.branch = ?2 ORDER BY c.id"
            ))?;
            let rows = st.query_map(params![s, b], |r| {
                Ok((change_row(r)?, r.get::<_, i64>(11)? != 0))
            })?;
            rows.collect()
        })
        .await
    }

    /// A BuildSet took these Changes: drop them from the scheduler, and its timer
    /// for `branch`.
    pub async fn consume_scheduler_changes(
        &self,
        scheduler: &str,
        branch: &str,
        changes: Vec<i64>,
    ) -> Result<(), DbError> {
        let (s, b) = (scheduler.to_string(), branch.to_string());
        self.write(move |tx| {
            let mut st = tx.prepare_cached(
                "DELETE FROM scheduler_changes WHERE scheduler = ?1 AND change = ?2",
            )?;
            for id in &changes {
                st.execute(params![s, id])?;
            }
            tx.prepare_cached("DELETE FROM scheduler_timers WHERE scheduler = ?1 AND branch = ?2")?
                .execute(params![s, b])?;
            Ok(())
        })
        .await
    }

    /// Drop a timer (nothing important waits on that branch).
    pub async fn clear_scheduler_timer(
        &self,
        scheduler: &str,
        branch: &str,
    ) -> Result<(), DbError> {
        self.consume_scheduler_changes(scheduler, branch, Vec::new())
            .await
    }

    /// At start: drop the waiting Changes a BuildSet of this scheduler already
    /// carries (the master died between submitting it and forgetting them). How
    /// many were dropped.
    pub async fn forget_built_changes(&self, scheduler: &str) -> Result<usize, DbError> {
        let s = scheduler.to_string();
        self.write(move |tx| {
            tx.prepare_cached(
                "DELETE FROM scheduler_changes WHERE scheduler = ?1 AND change IN (
                    SELECT sc.change FROM buildsets bs
                    JOIN sourcestamp_changes sc ON sc.sourcestamp = bs.sourcestamp
                    WHERE bs.scheduler = ?1)",
            )?
            .execute([s])
        })
        .await
    }

    /// Drop every trace of schedulers that are no longer configured (their waiting
    /// Changes and timers; their state stays, harmless).
    pub async fn forget_schedulers_except(&self, keep: Vec<String>) -> Result<(), DbError> {
        self.write(move |tx| {
            let list = serde_json::to_string(&keep).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "DELETE FROM scheduler_changes WHERE scheduler NOT IN (SELECT value FROM json_each(?1))",
                [&list],
            )?;
            tx.execute(
                "DELETE FROM scheduler_timers WHERE scheduler NOT IN (SELECT value FROM json_each(?1))",
                [&list],
            )?;
            Ok(())
        })
        .await
    }

    /// Complete BuildSets above `watermark` that `scheduler` has not handled yet,
    /// oldest first.
    pub async fn unhandled_buildsets(
        &self,
        scheduler: &str,
        watermark: i64,
    ) -> Result<Vec<FinishedBuildSet>, DbError> {
        let s = scheduler.to_string();
        self.read(move |c| {
            let found: Vec<FinishedBuildSet> = {
                let mut st = c.prepare_cached(
                    "SELECT bs.id, bs.result, ss.branch, ss.revision, ss.repository, ss.project,
                            bs.sourcestamp
                     FROM buildsets bs JOIN sourcestamps ss ON ss.id = bs.sourcestamp
                     WHERE bs.id > ?2 AND bs.complete = 1 AND bs.id NOT IN (
                        SELECT buildset FROM scheduler_buildsets WHERE scheduler = ?1)
                     ORDER BY bs.id",
                )?;
                let rows = st.query_map(params![s, watermark], |r| {
                    Ok((
                        FinishedBuildSet {
                            id: r.get(0)?,
                            result: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                            branch: r.get(2)?,
                            revision: r.get(3)?,
                            repository: r.get(4)?,
                            project: r.get(5)?,
                            changes: Vec::new(),
                            builders: Vec::new(),
                        },
                        r.get::<_, i64>(6)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (mut bs, ss): (FinishedBuildSet, i64) = row?;
                    let mut ch = c.prepare_cached(
                        "SELECT change FROM sourcestamp_changes WHERE sourcestamp = ?1 ORDER BY change",
                    )?;
                    bs.changes = ch
                        .query_map([ss], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                    let mut bl = c.prepare_cached(
                        "SELECT DISTINCT builder FROM buildrequests WHERE buildset = ?1 ORDER BY builder",
                    )?;
                    bs.builders = bl
                        .query_map([bs.id], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                    out.push(bs);
                }
                out
            };
            Ok(found)
        })
        .await
    }

    /// The newest BuildSet a scheduler submitted.
    pub async fn newest_buildset_of(&self, scheduler: &str) -> Result<Option<i64>, DbError> {
        let s = scheduler.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT max(id) FROM buildsets WHERE scheduler = ?1")?
                .query_row([s], |r| r.get(0))
        })
        .await
    }

    /// Whether a dependent scheduler already submitted a BuildSet following the
    /// upstream BuildSet `upstream` (its `upstream_buildset` property).
    pub async fn dependent_fired(&self, scheduler: &str, upstream: i64) -> Result<bool, DbError> {
        let s = scheduler.to_string();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT count(*) FROM buildsets WHERE scheduler = ?1
                 AND json_extract(properties, '$.upstream_buildset') = ?2",
            )?
            .query_row(params![s, upstream.to_string()], |r| r.get::<_, i64>(0))
            .map(|n| n > 0)
        })
        .await
    }

    /// Remember that a dependent scheduler handled an upstream BuildSet.
    pub async fn mark_buildset_handled(
        &self,
        scheduler: &str,
        buildset: i64,
    ) -> Result<(), DbError> {
        let s = scheduler.to_string();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO scheduler_buildsets(scheduler, buildset) VALUES (?1, ?2)",
            )?
            .execute(params![s, buildset])?;
            Ok(())
        })
        .await
    }

    /// The revisions a poller stored for `repository`: branch → revision.
    pub async fn poller_heads(
        &self,
        repository: &str,
    ) -> Result<BTreeMap<String, String>, DbError> {
        let repo = repository.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT branch, revision FROM poller_heads WHERE repository = ?1",
            )?;
            let rows = st.query_map([repo], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Move a poller's stored revisions (only after its Changes are stored).
    pub async fn set_poller_heads(
        &self,
        repository: &str,
        heads: BTreeMap<String, String>,
        at: f64,
    ) -> Result<(), DbError> {
        let repo = repository.to_string();
        self.write(move |tx| {
            let mut st = tx.prepare_cached(
                "INSERT INTO poller_heads(repository, branch, revision, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(repository, branch) DO UPDATE
                 SET revision = excluded.revision, updated_at = excluded.updated_at",
            )?;
            for (b, r) in &heads {
                st.execute(params![repo, b, r, at])?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::changes::NewChange;
    use crate::db::requests::{NewBuildSet, NewSourceStamp};

    #[tokio::test]
    async fn pending_changes_timers_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        let ids = db
            .add_changes(vec![
                NewChange {
                    who: "a".into(),
                    ..Default::default()
                },
                NewChange {
                    who: "b".into(),
                    ..Default::default()
                },
            ])
            .await
            .unwrap();
        db.record_scheduler_changes(ChangeBatch {
            pending: ids
                .iter()
                .map(|&change| PendingChange {
                    scheduler: "s".into(),
                    change,
                    branch: "main".into(),
                    important: change == ids[0],
                })
                .collect(),
            timers: vec![("s".into(), "main".into(), 10.0)],
            handled: vec![("s".into(), ids[1])],
        })
        .await
        .unwrap();
        assert_eq!(
            db.scheduler_value("s", "last_change").await.unwrap(),
            Some(ids[1])
        );
        let pending = db.scheduler_pending("s", "main").await.unwrap();
        assert_eq!(pending.len(), 2);
        assert!(pending[0].1 && !pending[1].1);
        assert_eq!(db.scheduler_timers().await.unwrap().len(), 1);
        // A BuildSet carried the first one; the master died before forgetting it.
        db.add_buildset(
            NewBuildSet {
                scheduler: "s".into(),
                sourcestamp: NewSourceStamp {
                    changes: vec![ids[0]],
                    ..Default::default()
                },
                builders: vec!["b".into()],
                ..Default::default()
            },
            1.0,
        )
        .await
        .unwrap();
        assert_eq!(db.forget_built_changes("s").await.unwrap(), 1);
        db.consume_scheduler_changes("s", "main", vec![ids[1]])
            .await
            .unwrap();
        assert!(db.scheduler_pending("s", "main").await.unwrap().is_empty());
        assert!(db.scheduler_timers().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn poller_heads_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        let heads: BTreeMap<String, String> = [("main".to_string(), "abc".to_string())].into();
        db.set_poller_heads("/r", heads.clone(), 1.0).await.unwrap();
        assert_eq!(db.poller_heads("/r").await.unwrap(), heads);
        assert!(db.poller_heads("/other").await.unwrap().is_empty());
    }
}
