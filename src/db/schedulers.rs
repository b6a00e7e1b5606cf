//! What schedulers and pollers keep in the database so a restarted master neither loses a
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
//!
//! Each query is a function on `&mut dyn` [`Sql`], written once
//! for SQLite and PostgreSQL ([`super::sql`]); the [`Db`] methods run them in
//! one transaction of the master's backend.

use std::collections::BTreeMap;

use super::changes::{change_row, ChangeRow, CHANGE_COLUMNS};
use super::requests::{json_text, real};
use super::sql::{Dialect, Sql, SqlError};
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
        self.read_sql(move |db| value(db, &s, &k)).await
    }

    /// Set a value of `scheduler_state`.
    pub async fn set_scheduler_value(
        &self,
        scheduler: &str,
        key: &str,
        value: i64,
    ) -> Result<(), DbError> {
        let (s, k) = (scheduler.to_string(), key.to_string());
        self.write_sql(move |db| set_value(db, &s, &k, value)).await
    }

    /// The highest Change id stored (0 when none).
    pub async fn max_change_id(&self) -> Result<i64, DbError> {
        self.read_sql(|db| max_change_id(db)).await
    }

    /// The highest BuildSet id stored (0 when none).
    pub async fn max_buildset_id(&self) -> Result<i64, DbError> {
        self.read_sql(|db| max_buildset_id(db)).await
    }

    /// Store what handling some Changes decided, in one transaction (on
    /// PostgreSQL one statement).
    pub async fn record_scheduler_changes(&self, batch: ChangeBatch) -> Result<(), DbError> {
        self.write_sql_one(move |db| record_changes(db, &batch))
            .await
    }

    /// The (scheduler, branch) keys that have Changes waiting (read at start:
    /// a key with none may fire straight from the Changes in hand).
    pub async fn scheduler_waiting_keys(&self) -> Result<Vec<(String, String)>, DbError> {
        self.read_sql(|db| waiting_keys(db)).await
    }

    /// Every tree-stable timer: (scheduler, branch, deadline).
    pub async fn scheduler_timers(&self) -> Result<Vec<(String, String, f64)>, DbError> {
        self.read_sql(|db| timers(db)).await
    }

    /// The Changes waiting in a scheduler for `branch`, oldest first, each with
    /// whether it is important.
    pub async fn scheduler_pending(
        &self,
        scheduler: &str,
        branch: &str,
    ) -> Result<Vec<(ChangeRow, bool)>, DbError> {
        let (s, b) = (scheduler.to_string(), branch.to_string());
        self.read_sql(move |db| pending(db, &s, &b)).await
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
        self.write_sql_one(move |db| consume(db, &s, &b, &changes))
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
        self.write_sql(move |db| forget_built(db, &s)).await
    }

    /// Drop every trace of schedulers that are no longer configured (their waiting
    /// Changes and timers; their state stays, harmless).
    pub async fn forget_schedulers_except(&self, keep: Vec<String>) -> Result<(), DbError> {
        self.write_sql(move |db| forget_except(db, &keep)).await
    }

    /// Complete BuildSets above `watermark` that `scheduler` has not handled yet,
    /// oldest first.
    pub async fn unhandled_buildsets(
        &self,
        scheduler: &str,
        watermark: i64,
    ) -> Result<Vec<FinishedBuildSet>, DbError> {
        let s = scheduler.to_string();
        self.read_sql(move |db| unhandled(db, &s, watermark)).await
    }

    /// The newest BuildSet a scheduler submitted.
    pub async fn newest_buildset_of(&self, scheduler: &str) -> Result<Option<i64>, DbError> {
        let s = scheduler.to_string();
        self.read_sql(move |db| newest_buildset(db, &s)).await
    }

    /// Whether a dependent scheduler already submitted a BuildSet following the
    /// upstream BuildSet `upstream` (its `upstream_buildset` property).
    pub async fn dependent_fired(&self, scheduler: &str, upstream: i64) -> Result<bool, DbError> {
        let s = scheduler.to_string();
        self.read_sql(move |db| fired(db, &s, upstream)).await
    }

    /// Remember that a dependent scheduler handled an upstream BuildSet.
    pub async fn mark_buildset_handled(
        &self,
        scheduler: &str,
        buildset: i64,
    ) -> Result<(), DbError> {
        let s = scheduler.to_string();
        self.write_sql(move |db| mark_handled(db, &s, buildset))
            .await
    }

    /// The revisions a poller stored for `repository`: branch → revision.
    pub async fn poller_heads(
        &self,
        repository: &str,
    ) -> Result<BTreeMap<String, String>, DbError> {
        let repo = repository.to_string();
        self.read_sql(move |db| heads(db, &repo)).await
    }

    /// Move a poller's stored revisions (only after its Changes are stored).
    pub async fn set_poller_heads(
        &self,
        repository: &str,
        heads: BTreeMap<String, String>,
        at: f64,
    ) -> Result<(), DbError> {
        let repo = repository.to_string();
        self.write_sql(move |db| set_heads(db, &repo, &heads, at))
            .await
    }
}

// The queries, on either backend ([`super::sql`]).

/// A value of `scheduler_state`.
pub fn value(db: &mut dyn Sql, scheduler: &str, key: &str) -> Result<Option<i64>, SqlError> {
    db.query_opt(
        "SELECT value FROM scheduler_state WHERE scheduler = ?1 AND key = ?2",
        &[scheduler.into(), key.into()],
    )?
    .map(|r| r.i64(0))
    .transpose()
}

/// Set a value of `scheduler_state`.
pub fn set_value(db: &mut dyn Sql, scheduler: &str, key: &str, value: i64) -> Result<(), SqlError> {
    db.execute(
        "INSERT INTO scheduler_state(scheduler, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT(scheduler, key) DO UPDATE SET value = excluded.value",
        &[scheduler.into(), key.into(), value.into()],
    )?;
    Ok(())
}

/// The highest Change id stored (0 when none).
pub fn max_change_id(db: &mut dyn Sql) -> Result<i64, SqlError> {
    db.query_one("SELECT coalesce(max(id), 0) FROM changes", &[])?
        .i64(0)
}

/// The highest BuildSet id stored (0 when none).
pub fn max_buildset_id(db: &mut dyn Sql) -> Result<i64, SqlError> {
    db.query_one("SELECT coalesce(max(id), 0) FROM buildsets", &[])?
        .i64(0)
}

/// Store what handling some Changes decided. `last_change` only moves up
/// ([`set_last_change`]).
pub fn record_changes(db: &mut dyn Sql, batch: &ChangeBatch) -> Result<(), SqlError> {
    if db.dialect() == Dialect::Postgres {
        return record_changes_one(db, batch);
    }
    for p in &batch.pending {
        db.execute(
            "INSERT OR IGNORE INTO scheduler_changes(scheduler, change, branch, important)
             VALUES (?1, ?2, ?3, ?4)",
            &[
                p.scheduler.as_str().into(),
                p.change.into(),
                p.branch.as_str().into(),
                p.important.into(),
            ],
        )?;
    }
    for (s, b, d) in &batch.timers {
        db.execute(
            "INSERT INTO scheduler_timers(scheduler, branch, deadline) VALUES (?1, ?2, ?3)
             ON CONFLICT(scheduler, branch) DO UPDATE SET deadline = excluded.deadline",
            &[s.as_str().into(), b.as_str().into(), (*d).into()],
        )?;
    }
    for (s, id) in &batch.handled {
        set_last_change(db, s, *id)?;
    }
    Ok(())
}

/// Move a scheduler's `last_change` up to `id` (never down; SQLite's
/// two-argument `max` is PostgreSQL's `GREATEST`).
pub fn set_last_change(db: &mut dyn Sql, scheduler: &str, id: i64) -> Result<(), SqlError> {
    let sql = match db.dialect() {
        Dialect::Sqlite => {
            "INSERT INTO scheduler_state(scheduler, key, value) VALUES (?1, 'last_change', ?2)
             ON CONFLICT(scheduler, key) DO UPDATE SET value = max(value, excluded.value)"
        }
        Dialect::Postgres => {
            "INSERT INTO scheduler_state(scheduler, key, value) VALUES (?1, 'last_change', ?2)
             ON CONFLICT(scheduler, key)
             DO UPDATE SET value = GREATEST(scheduler_state.value, excluded.value)"
        }
    };
    db.execute(sql, &[scheduler.into(), id.into()])?;
    Ok(())
}

/// `jsonb_array_elements` of parameter `?N` (a JSON array given as text),
/// each element `x` (PostgreSQL).
fn json_rows(n: usize) -> String {
    format!("jsonb_array_elements(CAST(CAST(?{n} AS TEXT) AS jsonb)) x")
}

/// [`record_changes`] as one statement of PostgreSQL's (run without a
/// transaction around it, [`Db::write_sql_one`]): the pending Changes, the
/// timers and the last Change handled go in as three JSON arrays, inserted
/// by data-modifying CTEs.
fn record_changes_one(db: &mut dyn Sql, batch: &ChangeBatch) -> Result<(), SqlError> {
    let pending: Vec<serde_json::Value> = batch
        .pending
        .iter()
        .map(|p| serde_json::json!([p.scheduler, p.change, p.branch, i64::from(p.important)]))
        .collect();
    let timers: Vec<serde_json::Value> = batch
        .timers
        .iter()
        .map(|(s, b, d)| serde_json::json!([s, b, d]))
        .collect();
    let text = |v: Vec<serde_json::Value>| serde_json::Value::Array(v).to_string();
    let sql = format!(
        "WITH p AS (INSERT INTO scheduler_changes(scheduler, change, branch, important)
                    SELECT x->>0, CAST(x->>1 AS BIGINT), x->>2, CAST(x->>3 AS BIGINT)
                    FROM {p}
                    ON CONFLICT DO NOTHING),
              t AS (INSERT INTO scheduler_timers(scheduler, branch, deadline)
                    SELECT x->>0, x->>1, CAST(x->>2 AS DOUBLE PRECISION) FROM {t}
                    ON CONFLICT(scheduler, branch) DO UPDATE SET deadline = excluded.deadline),
              {s}
         SELECT 1",
        p = json_rows(1),
        t = json_rows(2),
        s = last_change_cte("s", 3, None),
    );
    db.query(
        &sql,
        &[
            text(pending).into(),
            text(timers).into(),
            handled_json(&batch.handled).into(),
        ],
    )?;
    Ok(())
}

/// Every tree-stable timer: (scheduler, branch, deadline), in key order.
pub fn timers(db: &mut dyn Sql) -> Result<Vec<(String, String, f64)>, SqlError> {
    db.query(
        "SELECT scheduler, branch, deadline FROM scheduler_timers ORDER BY scheduler, branch",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.string(0)?, r.string(1)?, real(r, 2)?)))
    .collect()
}

/// The Changes waiting in a scheduler for `branch`, oldest first, each with
/// whether it is important.
pub fn pending(
    db: &mut dyn Sql,
    scheduler: &str,
    branch: &str,
) -> Result<Vec<(ChangeRow, bool)>, SqlError> {
    db.query(
        &format!(
            "SELECT {CHANGE_COLUMNS}, sc.important FROM scheduler_changes sc
             JOIN changes c ON c.id = sc.change
             WHERE sc.scheduler = ?1 AND sc.branch = ?2 ORDER BY c.id"
        ),
        &[scheduler.into(), branch.into()],
    )?
    .iter()
    .map(|r| Ok((change_row(r)?, r.bool(11)?)))
    .collect()
}

/// Drop `changes` from a scheduler, and its timer for `branch`.
pub fn consume(
    db: &mut dyn Sql,
    scheduler: &str,
    branch: &str,
    changes: &[i64],
) -> Result<(), SqlError> {
    if db.dialect() == Dialect::Postgres {
        // One statement ([`Db::write_sql_one`]).
        let list = serde_json::to_string(changes).unwrap_or_else(|_| "[]".into());
        db.query(
            &format!("WITH {} SELECT 1", consume_ctes(1, 2, 3, 4)),
            &[scheduler.into(), branch.into(), list.into(), "[]".into()],
        )?;
        return Ok(());
    }
    for id in changes {
        db.execute(
            "DELETE FROM scheduler_changes WHERE scheduler = ?1 AND change = ?2",
            &[scheduler.into(), (*id).into()],
        )?;
    }
    db.execute(
        "DELETE FROM scheduler_timers WHERE scheduler = ?1 AND branch = ?2",
        &[scheduler.into(), branch.into()],
    )?;
    Ok(())
}

/// [`consume`] as PostgreSQL's data-modifying CTEs, to put in the `WITH` of
/// the statement that submits the BuildSet ([`super::requests::Consume`]).
/// Parameters by number: the scheduler, the branch, the Changes (a JSON
/// array as text) and the last Change handled by schedulers (a JSON array of
/// `[scheduler, id]` as text, [`last_change_cte`]). A `NULL` scheduler
/// matches nothing.
pub(crate) fn consume_ctes(scheduler: usize, branch: usize, list: usize, handled: usize) -> String {
    format!(
        "cs AS (DELETE FROM scheduler_changes WHERE scheduler = ?{scheduler} AND change IN
                  (SELECT CAST(v.value AS BIGINT)
                   FROM jsonb_array_elements_text(CAST(CAST(?{list} AS TEXT) AS jsonb)) v)),
         ct AS (DELETE FROM scheduler_timers
                WHERE scheduler = ?{scheduler} AND branch = ?{branch}),
         {}",
        last_change_cte("cl", handled, None)
    )
}

/// The data-modifying CTE `name` that moves schedulers' `last_change` up
/// (never down) to the ids of parameter `?N`, a JSON array of
/// `[scheduler, id]` as text (PostgreSQL); with `only_if`, a CTE of the
/// statement, only if that has a row.
pub(crate) fn last_change_cte(name: &str, n: usize, only_if: Option<&str>) -> String {
    format!(
        "{name} AS (INSERT INTO scheduler_state(scheduler, key, value)
                   SELECT x->>0, 'last_change', CAST(x->>1 AS BIGINT) FROM {}{}
                   ON CONFLICT(scheduler, key)
                   DO UPDATE SET value = GREATEST(scheduler_state.value, excluded.value))",
        only_if.map(|cte| format!("{cte}, ")).unwrap_or_default(),
        json_rows(n)
    )
}

/// `(scheduler, id)` pairs as the JSON text [`last_change_cte`] reads.
pub(crate) fn handled_json(handled: &[(String, i64)]) -> String {
    serde_json::Value::Array(
        handled
            .iter()
            .map(|(s, id)| serde_json::json!([s, id]))
            .collect(),
    )
    .to_string()
}

/// The (scheduler, branch) keys that have Changes waiting.
pub fn waiting_keys(db: &mut dyn Sql) -> Result<Vec<(String, String)>, SqlError> {
    db.query(
        "SELECT DISTINCT scheduler, branch FROM scheduler_changes ORDER BY scheduler, branch",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.string(0)?, r.string(1)?)))
    .collect()
}

/// Drop the waiting Changes a BuildSet of this scheduler already carries; how
/// many.
pub fn forget_built(db: &mut dyn Sql, scheduler: &str) -> Result<usize, SqlError> {
    let n = db.execute(
        "DELETE FROM scheduler_changes WHERE scheduler = ?1 AND change IN (
            SELECT sc.change FROM buildsets bs
            JOIN sourcestamp_changes sc ON sc.sourcestamp = bs.sourcestamp
            WHERE bs.scheduler = ?1)",
        &[scheduler.into()],
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Drop the waiting Changes and timers of every scheduler not in `keep`. The
/// list goes in as one JSON array (`json_each` on SQLite, `jsonb` on PostgreSQL).
pub fn forget_except(db: &mut dyn Sql, keep: &[String]) -> Result<(), SqlError> {
    let list = serde_json::to_string(keep).unwrap_or_else(|_| "[]".into());
    let names = match db.dialect() {
        Dialect::Sqlite => "SELECT value FROM json_each(?1)",
        Dialect::Postgres => "SELECT jsonb_array_elements_text(CAST(CAST(?1 AS TEXT) AS jsonb))",
    };
    for table in ["scheduler_changes", "scheduler_timers"] {
        db.execute(
            &format!("DELETE FROM {table} WHERE scheduler NOT IN ({names})"),
            &[list.as_str().into()],
        )?;
    }
    Ok(())
}

/// Complete BuildSets above `watermark` that `scheduler` has not handled yet,
/// oldest first, with their Changes and builders.
pub fn unhandled(
    db: &mut dyn Sql,
    scheduler: &str,
    watermark: i64,
) -> Result<Vec<FinishedBuildSet>, SqlError> {
    let rows = db.query(
        "SELECT bs.id, bs.result, ss.branch, ss.revision, ss.repository, ss.project,
                bs.sourcestamp
         FROM buildsets bs JOIN sourcestamps ss ON ss.id = bs.sourcestamp
         WHERE bs.id > ?2 AND bs.complete = 1 AND bs.id NOT IN (
            SELECT buildset FROM scheduler_buildsets WHERE scheduler = ?1)
         ORDER BY bs.id",
        &[scheduler.into(), watermark.into()],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut bs = FinishedBuildSet {
            id: r.i64(0)?,
            result: r.opt_string(1)?.unwrap_or_default(),
            branch: r.opt_string(2)?,
            revision: r.opt_string(3)?,
            repository: r.string(4)?,
            project: r.string(5)?,
            changes: Vec::new(),
            builders: Vec::new(),
        };
        bs.changes = db
            .query(
                "SELECT change FROM sourcestamp_changes WHERE sourcestamp = ?1 ORDER BY change",
                &[r.i64(6)?.into()],
            )?
            .iter()
            .map(|r| r.i64(0))
            .collect::<Result<_, _>>()?;
        bs.builders = db
            .query(
                "SELECT DISTINCT builder FROM buildrequests WHERE buildset = ?1 ORDER BY builder",
                &[bs.id.into()],
            )?
            .iter()
            .map(|r| r.string(0))
            .collect::<Result<_, _>>()?;
        out.push(bs);
    }
    Ok(out)
}

/// The newest BuildSet a scheduler submitted.
pub fn newest_buildset(db: &mut dyn Sql, scheduler: &str) -> Result<Option<i64>, SqlError> {
    db.query_one(
        "SELECT max(id) FROM buildsets WHERE scheduler = ?1",
        &[scheduler.into()],
    )?
    .opt_i64(0)
}

/// Whether `scheduler` submitted a BuildSet whose `upstream_buildset` property
/// is `upstream`.
pub fn fired(db: &mut dyn Sql, scheduler: &str, upstream: i64) -> Result<bool, SqlError> {
    let upstream_of = json_text(db.dialect(), "properties", "upstream_buildset");
    db.query_one(
        &format!("SELECT count(*) FROM buildsets WHERE scheduler = ?1 AND {upstream_of} = ?2"),
        &[scheduler.into(), upstream.to_string().into()],
    )
    .and_then(|r| r.i64(0))
    .map(|n| n > 0)
}

/// Remember that a dependent scheduler handled an upstream BuildSet.
pub fn mark_handled(db: &mut dyn Sql, scheduler: &str, buildset: i64) -> Result<(), SqlError> {
    db.execute(
        "INSERT OR IGNORE INTO scheduler_buildsets(scheduler, buildset) VALUES (?1, ?2)",
        &[scheduler.into(), buildset.into()],
    )?;
    Ok(())
}

/// The revisions a poller stored for `repository`: branch → revision.
pub fn heads(db: &mut dyn Sql, repository: &str) -> Result<BTreeMap<String, String>, SqlError> {
    db.query(
        "SELECT branch, revision FROM poller_heads WHERE repository = ?1",
        &[repository.into()],
    )?
    .iter()
    .map(|r| Ok((r.string(0)?, r.string(1)?)))
    .collect()
}

/// Move a poller's stored revisions.
pub fn set_heads(
    db: &mut dyn Sql,
    repository: &str,
    heads: &BTreeMap<String, String>,
    at: f64,
) -> Result<(), SqlError> {
    for (b, r) in heads {
        db.execute(
            "INSERT INTO poller_heads(repository, branch, revision, updated_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(repository, branch) DO UPDATE
             SET revision = excluded.revision, updated_at = excluded.updated_at",
            &[
                repository.into(),
                b.as_str().into(),
                r.as_str().into(),
                at.into(),
            ],
        )?;
    }
    Ok(())
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
