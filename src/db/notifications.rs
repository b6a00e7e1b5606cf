//! The reporters' outgoing queue (mail and commit statuses) and what they have
//! decided, in SQLite.
//!
//! A notification is decided from the database (a build's result, its
//! builder's previous result) and stored here, in the same transaction that marks
//! the build's stage as handled, before anything is sent: a master killed at any
//! point either has not decided (and decides again after its restart) or has the
//! message stored (and sends it after its restart, with the same Message-ID).
//! Each delivery attempt updates the row: `sent`, `retrying` with the error and
//! the time of the next attempt, or `given up`. The build's page and the JSON API
//! read the rows of a build ([`Db::build_notifications`]).
//!
//! Written once for both backends ([`super::sql`]).

use serde::Serialize;

use super::sql::{Row, Sql, SqlError, Value};
use super::status::real;
use super::{Db, DbError};

/// A notification to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// `mail` or `status`.
    pub kind: String,
    pub target: String,
    pub payload: Vec<u8>,
    /// JSON the sender needs (envelope, URL, …).
    pub meta: String,
    pub message_id: Option<String>,
}

/// A notification waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedNotification {
    pub id: i64,
    pub build: Option<i64>,
    pub kind: String,
    pub target: String,
    pub payload: Vec<u8>,
    pub meta: String,
    pub message_id: Option<String>,
    pub attempts: i64,
    pub created_at: f64,
}

/// A notification as the build's page and `GET /api/v1/builders/B/builds/N`
/// show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationRow {
    pub id: i64,
    /// `mail` or `status`.
    pub kind: String,
    /// The recipients, or the forge and the commit.
    pub target: String,
    pub message_id: Option<String>,
    /// `pending`, `retrying`, `sent` or `given up`.
    pub state: String,
    pub attempts: i64,
    /// The last failed attempt's error (the SMTP or HTTP answer).
    pub last_error: Option<String>,
    pub created_at: f64,
    /// When it was sent or given up.
    pub done_at: Option<f64>,
    /// When the next attempt is due (pending and retrying only).
    pub next_at: Option<f64>,
}

/// A build whose stage the reporters have not decided on yet.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildToAnnounce {
    pub id: i64,
    pub builder: String,
    pub number: i64,
    /// `None` while running.
    pub result: Option<String>,
    /// Interrupted, its requests back in the queue: not announced as finished.
    pub requeued: bool,
}

/// What an attempt to send came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Sent,
    Retry { error: String, next_at: f64 },
    GiveUp { error: String },
}

impl Db {
    /// The last build id before the reporters' time: set by migration 8 to the
    /// newest build's id then, so an upgraded master does not announce its
    /// history while a new one announces its first build (however soon it
    /// starts). A database without the row (reporters never started) gets the
    /// newest build's id now.
    pub async fn reporter_horizon(&self) -> Result<i64, DbError> {
        self.write_sql(|db| reporter_horizon(db)).await
    }

    /// Move the horizon up to just below the oldest build that is running or
    /// whose end is not decided yet (so a pass scans only recent builds, however
    /// long the history), and store it. Returns the new horizon.
    pub async fn advance_reporter_horizon(&self, horizon: i64) -> Result<i64, DbError> {
        let new = self
            .read_sql(move |db| next_reporter_horizon(db, horizon))
            .await?;
        if new <= horizon {
            return Ok(horizon);
        }
        self.write_sql_one(move |db| store_reporter_horizon(db, new))
            .await?;
        Ok(new)
    }

    /// Decide every finished build after `horizon` as telling nothing (no
    /// mail, no commit status is configured) and move the horizon past them:
    /// one write per pass however many builds ended, not one per build. On
    /// PostgreSQL one statement. Returns the new horizon.
    pub async fn decide_finished_quietly(&self, horizon: i64) -> Result<i64, DbError> {
        if self.dialect() == super::sql::Dialect::Postgres {
            return self
                .write_sql_one(move |db| {
                    db.query_one(
                        &format!(
                            "WITH d AS (INSERT INTO notified_builds(build, stage)
                                        SELECT id, 'finished' FROM builds
                                        WHERE id > ?1 AND finished_at IS NOT NULL
                                        ON CONFLICT DO NOTHING),
                                  h AS (SELECT {NEXT_HORIZON_QUIET} AS v),
                                  s AS (UPDATE reporter_state SET value = h.v FROM h
                                        WHERE name = 'horizon' AND h.v > ?1)
                             SELECT GREATEST(h.v, ?1) FROM h"
                        ),
                        &[horizon.into()],
                    )?
                    .i64(0)
                })
                .await;
        }
        self.write_sql(move |db| {
            db.execute(
                "INSERT OR IGNORE INTO notified_builds(build, stage)
                 SELECT id, 'finished' FROM builds WHERE id > ?1 AND finished_at IS NOT NULL",
                &[horizon.into()],
            )?;
            let new = db
                .query_one(&format!("SELECT {NEXT_HORIZON_QUIET}"), &[horizon.into()])?
                .i64(0)?;
            if new <= horizon {
                return Ok(horizon);
            }
            store_reporter_horizon(db, new)?;
            Ok(new)
        })
        .await
    }

    /// Builds after `horizon` whose `stage` is not decided yet (`started`: builds
    /// running now; `finished`: finished builds), oldest first, at most `limit`.
    pub async fn builds_to_announce(
        &self,
        horizon: i64,
        stage: &'static str,
        limit: i64,
    ) -> Result<Vec<BuildToAnnounce>, DbError> {
        self.read_sql(move |db| builds_to_announce(db, horizon, stage, limit))
            .await
    }

    /// The result of the builder's newest finished build before `number` that
    /// was neither requeued nor cancelled (`None`: there is none).
    pub async fn previous_result(
        &self,
        builder: &str,
        number: i64,
    ) -> Result<Option<String>, DbError> {
        let builder = builder.to_string();
        self.read_sql(move |db| previous_result(db, &builder, number))
            .await
    }

    /// Store `items`, due now, and mark `build`'s `stage` decided, in one
    /// transaction. Returns the new rows' ids.
    pub async fn enqueue_notifications(
        &self,
        build: Option<i64>,
        stage: Option<&'static str>,
        items: Vec<NewNotification>,
        now: f64,
    ) -> Result<Vec<i64>, DbError> {
        if items.is_empty() {
            // At most the mark, one statement (most builds notify nobody).
            return self
                .write_sql_one(move |db| enqueue_notifications(db, build, stage, &[], now))
                .await;
        }
        self.write_sql(move |db| enqueue_notifications(db, build, stage, &items, now))
            .await
    }

    /// Notifications of `kind` due at `now`, oldest first, at most `limit`.
    pub async fn due_notifications(
        &self,
        kind: &'static str,
        now: f64,
        limit: i64,
    ) -> Result<Vec<QueuedNotification>, DbError> {
        self.read_sql(move |db| due_notifications(db, kind, now, limit))
            .await
    }

    /// When the next notification of `kind` is due, if any waits.
    pub async fn next_notification_due(&self, kind: &'static str) -> Result<Option<f64>, DbError> {
        self.read_sql(move |db| next_notification_due(db, kind))
            .await
    }

    /// Record an attempt to send notification `id`.
    pub async fn notification_attempt(
        &self,
        id: i64,
        attempt: Attempt,
        now: f64,
    ) -> Result<(), DbError> {
        self.write_sql(move |db| notification_attempt(db, id, attempt, now))
            .await
    }

    /// At start-up: whatever waits for a retry is due now (the master was away,
    /// the server may be back).
    pub async fn notifications_due_now(&self, now: f64) -> Result<(), DbError> {
        self.write_sql(move |db| notifications_due_now(db, now))
            .await
    }

    /// The notifications of one build, oldest first.
    pub async fn build_notifications(
        &self,
        builder: &str,
        number: i64,
    ) -> Result<Vec<NotificationRow>, DbError> {
        let builder = builder.to_string();
        self.read_sql(move |db| build_notifications(db, &builder, number))
            .await
    }

    /// Every notification not about a build (missing slaves), newest first, at
    /// most `limit`.
    pub async fn slave_notifications(&self, limit: i64) -> Result<Vec<NotificationRow>, DbError> {
        self.read_sql(move |db| slave_notifications(db, limit))
            .await
    }
}

// The queries, on either backend ([`super::sql`]).

/// [`Db::reporter_horizon`]: the stored horizon, or the newest build's id,
/// stored now. Two masters starting at once store one (the first).
pub fn reporter_horizon(db: &mut dyn Sql) -> Result<i64, SqlError> {
    const GET: &str = "SELECT value FROM reporter_state WHERE name = 'horizon'";
    if let Some(r) = db.query_opt(GET, &[])? {
        return r.i64(0);
    }
    db.execute(
        "INSERT OR IGNORE INTO reporter_state(name, value)
         SELECT 'horizon', COALESCE(MAX(id), 0) FROM builds",
        &[],
    )?;
    db.query_one(GET, &[])?.i64(0)
}

/// Where the horizon after `horizon` is: just below the oldest build after it
/// that is running or whose end is not decided yet, else the newest build.
/// One statement, so one snapshot: asked in two, a build started and finished
/// between them would be counted in the newest id without having been seen
/// open, and never announced.
pub fn next_reporter_horizon(db: &mut dyn Sql, horizon: i64) -> Result<i64, SqlError> {
    db.query_one(
        "SELECT COALESCE(
            (SELECT MIN(b.id) - 1 FROM builds b
             WHERE b.id > ?1
               AND (b.finished_at IS NULL
                    OR NOT EXISTS (SELECT 1 FROM notified_builds n
                                   WHERE n.build = b.id AND n.stage = 'finished'))),
            (SELECT MAX(id) FROM builds WHERE id > ?1),
            ?1)",
        &[horizon.into()],
    )?
    .i64(0)
}

/// [`next_reporter_horizon`] where every finished build after `?1` is
/// decided (by [`Db::decide_finished_quietly`], in the same snapshot): just
/// below the oldest running build, else the newest build.
const NEXT_HORIZON_QUIET: &str = "COALESCE(
    (SELECT MIN(b.id) - 1 FROM builds b WHERE b.id > ?1 AND b.finished_at IS NULL),
    (SELECT MAX(id) FROM builds WHERE id > ?1),
    ?1)";

/// Store the horizon [`next_reporter_horizon`] found.
pub fn store_reporter_horizon(db: &mut dyn Sql, horizon: i64) -> Result<(), SqlError> {
    db.execute(
        "UPDATE reporter_state SET value = ?1 WHERE name = 'horizon'",
        &[horizon.into()],
    )?;
    Ok(())
}

/// [`Db::builds_to_announce`]. `IS DISTINCT FROM` is SQLite's `IS NOT` (the
/// same statement to SQLite, and PostgreSQL's spelling).
pub fn builds_to_announce(
    db: &mut dyn Sql,
    horizon: i64,
    stage: &str,
    limit: i64,
) -> Result<Vec<BuildToAnnounce>, SqlError> {
    db.query(
        "SELECT b.id, b.builder, b.number, b.result,
                CASE WHEN EXISTS (SELECT 1 FROM build_requests br
                        JOIN buildrequests r ON r.id = br.request
                        WHERE br.build = b.id
                          AND (r.complete = 0 OR r.complete_at IS DISTINCT FROM b.finished_at))
                     THEN 1 ELSE 0 END
         FROM builds b
         WHERE b.id > ?1 AND (b.finished_at IS NULL) = (CAST(?2 AS TEXT) = 'started')
           AND NOT EXISTS (SELECT 1 FROM notified_builds n
                           WHERE n.build = b.id AND n.stage = ?2)
         ORDER BY b.id LIMIT ?3",
        &[horizon.into(), stage.into(), limit.into()],
    )?
    .iter()
    .map(|r| {
        Ok(BuildToAnnounce {
            id: r.i64(0)?,
            builder: r.string(1)?,
            number: r.i64(2)?,
            result: r.opt_string(3)?,
            requeued: r.bool(4)?,
        })
    })
    .collect()
}

/// [`Db::previous_result`].
pub fn previous_result(
    db: &mut dyn Sql,
    builder: &str,
    number: i64,
) -> Result<Option<String>, SqlError> {
    db.query_opt(
        "SELECT b.result FROM builds b
         WHERE b.builder = ?1 AND b.number < ?2 AND b.finished_at IS NOT NULL
           AND b.result IS DISTINCT FROM 'cancelled'
           AND NOT EXISTS (SELECT 1 FROM build_requests br
                           JOIN buildrequests r ON r.id = br.request
                           WHERE br.build = b.id
                             AND (r.complete = 0 OR r.complete_at IS DISTINCT FROM b.finished_at))
         ORDER BY b.number DESC LIMIT 1",
        &[builder.into(), number.into()],
    )?
    .map(|r| r.opt_string(0))
    .transpose()
    .map(Option::flatten)
}

/// [`Db::enqueue_notifications`].
pub fn enqueue_notifications(
    db: &mut dyn Sql,
    build: Option<i64>,
    stage: Option<&str>,
    items: &[NewNotification],
    now: f64,
) -> Result<Vec<i64>, SqlError> {
    if let (Some(b), Some(s)) = (build, stage) {
        let fresh = db.execute(
            "INSERT OR IGNORE INTO notified_builds(build, stage) VALUES (?1, ?2)",
            &[b.into(), s.into()],
        )?;
        if fresh == 0 {
            // Decided already (by an earlier pass): nothing twice.
            return Ok(Vec::new());
        }
    }
    if let (Some(b), Some("finished")) = (build, stage) {
        if items.iter().any(|n| n.kind == "status") {
            // The end's status replaces a start's that is still unsent.
            db.execute(
                "UPDATE notifications
                 SET state = 'given up', done_at = ?2,
                     last_error = 'superseded by the status of the build''s end'
                 WHERE build = ?1 AND kind = 'status' AND state IN ('pending', 'retrying')",
                &[b.into(), now.into()],
            )?;
        }
    }
    let mut ids = Vec::with_capacity(items.len());
    for n in items {
        ids.push(
            db.query_one(
                "INSERT INTO notifications(build, kind, target, payload, meta, message_id,
                                           created_at, next_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING id",
                &[
                    build.into(),
                    n.kind.as_str().into(),
                    n.target.as_str().into(),
                    Value::Blob(n.payload.clone()),
                    n.meta.as_str().into(),
                    n.message_id.clone().into(),
                    now.into(),
                ],
            )?
            .i64(0)?,
        );
    }
    Ok(ids)
}

/// [`Db::due_notifications`].
pub fn due_notifications(
    db: &mut dyn Sql,
    kind: &str,
    now: f64,
    limit: i64,
) -> Result<Vec<QueuedNotification>, SqlError> {
    db.query(
        "SELECT id, build, kind, target, payload, meta, message_id, attempts, created_at
         FROM notifications
         WHERE state IN ('pending', 'retrying') AND kind = ?1 AND next_at <= ?2
         ORDER BY next_at, id LIMIT ?3",
        &[kind.into(), now.into(), limit.into()],
    )?
    .iter()
    .map(|r| {
        Ok(QueuedNotification {
            id: r.i64(0)?,
            build: r.opt_i64(1)?,
            kind: r.string(2)?,
            target: r.string(3)?,
            payload: r.opt_blob(4)?.unwrap_or_default(),
            meta: r.string(5)?,
            message_id: r.opt_string(6)?,
            attempts: r.i64(7)?,
            created_at: real(r, 8)?,
        })
    })
    .collect()
}

/// [`Db::next_notification_due`].
pub fn next_notification_due(db: &mut dyn Sql, kind: &str) -> Result<Option<f64>, SqlError> {
    db.query_one(
        "SELECT MIN(next_at) FROM notifications
         WHERE state IN ('pending', 'retrying') AND kind = ?1",
        &[kind.into()],
    )?
    .opt_f64(0)
}

/// [`Db::notification_attempt`].
pub fn notification_attempt(
    db: &mut dyn Sql,
    id: i64,
    attempt: Attempt,
    now: f64,
) -> Result<(), SqlError> {
    let (state, error, next_at, done_at) = match attempt {
        Attempt::Sent => ("sent", None, now, Some(now)),
        Attempt::Retry { error, next_at } => ("retrying", Some(error), next_at, None),
        Attempt::GiveUp { error } => ("given up", Some(error), now, Some(now)),
    };
    db.execute(
        "UPDATE notifications
         SET state = ?2, attempts = attempts + 1, last_error = COALESCE(?3, last_error),
             next_at = ?4, done_at = ?5
         WHERE id = ?1",
        &[
            id.into(),
            state.into(),
            error.into(),
            next_at.into(),
            done_at.into(),
        ],
    )?;
    Ok(())
}

/// [`Db::notifications_due_now`].
pub fn notifications_due_now(db: &mut dyn Sql, now: f64) -> Result<(), SqlError> {
    db.execute(
        "UPDATE notifications SET next_at = ?1
         WHERE state IN ('pending', 'retrying') AND next_at > ?1",
        &[now.into()],
    )?;
    Ok(())
}

/// [`Db::build_notifications`].
pub fn build_notifications(
    db: &mut dyn Sql,
    builder: &str,
    number: i64,
) -> Result<Vec<NotificationRow>, SqlError> {
    db.query(
        "SELECT n.id, n.kind, n.target, n.message_id, n.state, n.attempts,
                n.last_error, n.created_at, n.done_at, n.next_at
         FROM notifications n JOIN builds b ON b.id = n.build
         WHERE b.builder = ?1 AND b.number = ?2
         ORDER BY n.id LIMIT 200",
        &[builder.into(), number.into()],
    )?
    .iter()
    .map(notification_row)
    .collect()
}

/// [`Db::slave_notifications`].
pub fn slave_notifications(db: &mut dyn Sql, limit: i64) -> Result<Vec<NotificationRow>, SqlError> {
    db.query(
        "SELECT id, kind, target, message_id, state, attempts, last_error, created_at,
                done_at, next_at
         FROM notifications WHERE build IS NULL ORDER BY id DESC LIMIT ?1",
        &[limit.into()],
    )?
    .iter()
    .map(notification_row)
    .collect()
}

/// A [`NotificationRow`] from `id, kind, target, message_id, state, attempts,
/// last_error, created_at, done_at, next_at` (`next_at` only while it is open).
fn notification_row(r: &Row) -> Result<NotificationRow, SqlError> {
    let state = r.string(4)?;
    let open = state == "pending" || state == "retrying";
    Ok(NotificationRow {
        id: r.i64(0)?,
        kind: r.string(1)?,
        target: r.string(2)?,
        message_id: r.opt_string(3)?,
        state,
        attempts: r.i64(5)?,
        last_error: r.opt_string(6)?,
        created_at: real(r, 7)?,
        done_at: r.opt_f64(8)?,
        next_at: if open { r.opt_f64(9)? } else { None },
    })
}

#[cfg(test)]
mod tests {
    use crate::db::requests::{NewBuildSet, NewSourceStamp};
    use crate::db::Db;

    fn buildset() -> NewBuildSet {
        NewBuildSet {
            reason: "test".into(),
            scheduler: "test".into(),
            properties: Default::default(),
            sourcestamp: NewSourceStamp::default(),
            builders: vec!["b1".into()],
            priority: 0,
        }
    }

    /// With nothing configured to tell, a pass decides every finished build
    /// at once and stops the horizon below a running one, which is decided
    /// when it has ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quiet_passes_decide_finished_builds_and_wait_for_running_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        let mut ids = Vec::new();
        for n in 0..3 {
            db.add_buildset(buildset(), n as f64).await.unwrap();
            let c = db
                .claim_request("b1", "s", 1, n as f64)
                .await
                .unwrap()
                .unwrap();
            ids.push(c.build_id);
        }
        for id in [ids[0], ids[2]] {
            db.finish_build(id, "success", "ok", false, 5.0, None)
                .await
                .unwrap();
        }
        let horizon = db.reporter_horizon().await.unwrap();
        let horizon = db.decide_finished_quietly(horizon).await.unwrap();
        assert_eq!(horizon, ids[0]);
        assert_eq!(db.reporter_horizon().await.unwrap(), ids[0]);
        let open = db
            .builds_to_announce(horizon, "finished", 10)
            .await
            .unwrap();
        assert!(open.is_empty(), "{open:?}");
        db.finish_build(ids[1], "failure", "no", false, 6.0, None)
            .await
            .unwrap();
        assert_eq!(db.decide_finished_quietly(horizon).await.unwrap(), ids[2]);
        assert_eq!(db.decide_finished_quietly(ids[2]).await.unwrap(), ids[2]);
    }

    /// Builds starting and ending while the reporters pass: each one is decided
    /// exactly once, none is skipped by the horizon moving past it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_horizon_never_passes_a_build_not_decided() {
        const BUILDS: i64 = 1000;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        let engine = {
            let db = db.clone();
            tokio::spawn(async move {
                for n in 0..BUILDS {
                    let at = n as f64;
                    db.add_buildset(buildset(), at).await.unwrap();
                    let c = db.claim_request("b1", "s", 1, at).await.unwrap().unwrap();
                    db.finish_build(c.build_id, "success", "ok", false, at, None)
                        .await
                        .unwrap();
                }
            })
        };
        let mut horizon = db.reporter_horizon().await.unwrap();
        let mut decided = 0;
        loop {
            let done = engine.is_finished();
            for b in db
                .builds_to_announce(horizon, "finished", 50)
                .await
                .unwrap()
            {
                db.enqueue_notifications(Some(b.id), Some("finished"), Vec::new(), 0.0)
                    .await
                    .unwrap();
                decided += 1;
            }
            horizon = db.advance_reporter_horizon(horizon).await.unwrap();
            if done && decided == BUILDS {
                break;
            }
            assert!(
                !done || horizon < BUILDS,
                "{decided} of {BUILDS} builds decided; the horizon passed the others"
            );
        }
        assert_eq!(horizon, BUILDS);
    }

    /// A new master's first build is announced even when it ran before the
    /// reporters' thread first asked for their horizon (it did not: the
    /// horizon was taken then, and the build was history).
    #[tokio::test]
    async fn a_new_masters_first_build_is_after_the_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        db.add_buildset(buildset(), 1.0).await.unwrap();
        let c = db.claim_request("b1", "s", 1, 2.0).await.unwrap().unwrap();
        db.finish_build(c.build_id, "success", "ok", false, 3.0, None)
            .await
            .unwrap();
        let horizon = db.reporter_horizon().await.unwrap();
        assert_eq!(horizon, 0);
        let due = db
            .builds_to_announce(horizon, "finished", 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!((due[0].builder.as_str(), due[0].number), ("b1", 1));
    }
}
