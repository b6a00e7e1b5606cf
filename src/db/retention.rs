//! The queries of the retention task (`logHorizon`, `buildHorizon`,
//! `changeHorizon`, `logCompression`): each finds one small batch of work by
//! walking an index from a cursor, and each write is one short transaction of a
//! few hundred rows at most, so a pass over a long history never holds the
//! writer for long. Files are never touched here: the caller deletes or
//! compresses them after the rows say so.
//!
//! Written once for both backends (through [`super::sql`]): each query is a
//! function on `&mut dyn Sql`, which the [`Db`] methods run on SQLite.

use super::sql::{Row, Sql, SqlError};
use super::{Db, DbError};

/// A log the `logHorizon` walk met: its row, its file (relative to the master
/// directory) and its Build's times.
#[derive(Debug, Clone)]
pub struct KeptLog {
    pub id: i64,
    pub step: i64,
    pub path: String,
    pub build_started: f64,
    pub build_finished: Option<f64>,
}

/// A Build the `buildHorizon` walk met, and whether the reporters are done
/// with it: decided (at or below their horizon, or its end decided) and with no
/// notification still to send.
#[derive(Debug, Clone)]
pub struct OldBuild {
    pub id: i64,
    pub started_at: f64,
    pub finished_at: Option<f64>,
    pub reporters_done: bool,
    /// The newest Build of its builder: it stays, so a builder's next Build
    /// never takes the number of one that went.
    pub newest: bool,
}

/// A Change the `changeHorizon` walk met, and whether anything still refers to
/// it (a SourceStamp of the history, a scheduler waiting with it).
#[derive(Debug, Clone)]
pub struct OldChange {
    pub id: i64,
    pub when_ts: i64,
    pub referenced: bool,
}

/// What deleting a batch of Builds removed.
#[derive(Debug, Default, Clone)]
pub struct Removed {
    pub builds: u64,
    pub requests: u64,
    pub buildsets: u64,
    /// The files of the Builds' logs not yet deleted (relative paths).
    pub log_paths: Vec<String>,
}

impl Db {
    /// Up to `limit` logs whose files are kept, after `(step, id)` in Step order
    /// (Steps, like Builds, are numbered in the order they start).
    pub async fn kept_logs_after(
        &self,
        after: (i64, i64),
        limit: i64,
    ) -> Result<Vec<KeptLog>, DbError> {
        self.read_sql(move |db| kept_logs_after(db, after, limit))
            .await
    }

    /// Record logs as deleted by `logHorizon` (their rows stay, so the pages
    /// say so), in one transaction.
    pub async fn mark_logs_deleted(&self, ids: Vec<i64>) -> Result<(), DbError> {
        self.write_sql(move |db| mark_logs_deleted(db, &ids)).await
    }

    /// Up to `limit` Builds after `after`, oldest first, with whether the
    /// reporters are done with them.
    pub async fn old_builds_after(&self, after: i64, limit: i64) -> Result<Vec<OldBuild>, DbError> {
        self.read_sql(move |db| old_builds_after(db, after, limit))
            .await
    }

    /// Delete finished Builds and everything that hangs off them (Steps, logs,
    /// properties, notifications), in one transaction; then the BuildRequests
    /// left complete with no Build, the BuildSets left complete with no
    /// BuildRequest, and the SourceStamps nothing uses any more. A Build still
    /// running is never touched. Returns what went, with the log files to
    /// delete.
    pub async fn delete_builds(&self, ids: Vec<i64>) -> Result<Removed, DbError> {
        self.write_sql(move |db| delete_builds(db, &ids)).await
    }

    /// Up to `limit` Changes after `after`, oldest first, with whether anything
    /// still refers to them.
    pub async fn old_changes_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OldChange>, DbError> {
        self.read_sql(move |db| old_changes_after(db, after, limit))
            .await
    }

    /// Delete Changes that nothing refers to (checked again inside the
    /// transaction); returns how many went.
    pub async fn delete_changes(&self, ids: Vec<i64>) -> Result<u64, DbError> {
        self.write_sql(move |db| delete_changes(db, &ids)).await
    }

    /// Up to `limit` complete logs stored as written, of Builds finished before
    /// `before` (unix seconds), after log `after`: what `logCompression` has
    /// left to compress.
    pub async fn logs_to_compress(
        &self,
        after: i64,
        before: f64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, DbError> {
        self.read_sql(move |db| logs_to_compress(db, after, before, limit))
            .await
    }

    /// Record logs as stored compressed (those still stored as written).
    pub async fn mark_logs_compressed(&self, ids: Vec<i64>) -> Result<(), DbError> {
        self.write_sql(move |db| mark_logs_compressed(db, &ids))
            .await
    }

    /// Set a Build's start time, and its end time if it has finished (for tests
    /// and the retention bench, which make history old without waiting for it).
    pub async fn set_build_times(
        &self,
        builder: &str,
        number: i64,
        started_at: f64,
        finished_at: f64,
    ) -> Result<(), DbError> {
        let builder = builder.to_string();
        self.write_sql(move |db| set_build_times(db, &builder, number, started_at, finished_at))
            .await
    }

    /// How a log is stored (`plain`, `zstd`, `deleted`), by its Build, Step
    /// number and name (for tests).
    pub async fn log_stored(
        &self,
        builder: &str,
        number: i64,
        step: i64,
        log: &str,
    ) -> Result<Option<String>, DbError> {
        let (builder, log) = (builder.to_string(), log.to_string());
        self.read_sql(move |db| log_stored(db, &builder, number, step, &log))
            .await
    }
}

/// A number that is never NULL (the schema says `NOT NULL`).
fn f64_at(r: &Row, index: usize) -> Result<f64, SqlError> {
    r.opt_f64(index)?.ok_or(SqlError::Column {
        index,
        expected: "a number",
        found: "NULL".into(),
    })
}

/// [`Db::kept_logs_after`]: through the `logs_kept` index, in `(step, id)` order.
pub fn kept_logs_after(
    db: &mut dyn Sql,
    after: (i64, i64),
    limit: i64,
) -> Result<Vec<KeptLog>, SqlError> {
    db.query(
        "SELECT l.id, l.step, l.path, b.started_at, b.finished_at
         FROM logs l JOIN steps s ON s.id = l.step JOIN builds b ON b.id = s.build
         WHERE l.stored != 'deleted' AND (l.step, l.id) > (?1, ?2)
         ORDER BY l.step, l.id LIMIT ?3",
        &[after.0.into(), after.1.into(), limit.into()],
    )?
    .iter()
    .map(|r| {
        Ok(KeptLog {
            id: r.i64(0)?,
            step: r.i64(1)?,
            path: r.string(2)?,
            build_started: f64_at(r, 3)?,
            build_finished: r.opt_f64(4)?,
        })
    })
    .collect()
}

/// [`Db::mark_logs_deleted`]: one cached statement per log.
pub fn mark_logs_deleted(db: &mut dyn Sql, ids: &[i64]) -> Result<(), SqlError> {
    for &id in ids {
        db.execute(
            "UPDATE logs SET stored = 'deleted' WHERE id = ?1",
            &[id.into()],
        )?;
    }
    Ok(())
}

/// [`Db::old_builds_after`]: the reporters' horizon, then a walk of the
/// Builds' primary key from `after`.
pub fn old_builds_after(
    db: &mut dyn Sql,
    after: i64,
    limit: i64,
) -> Result<Vec<OldBuild>, SqlError> {
    let horizon = match db.query_opt(
        "SELECT value FROM reporter_state WHERE name = 'horizon'",
        &[],
    )? {
        Some(r) => r.i64(0)?,
        None => 0,
    };
    db.query(
        "SELECT b.id, b.started_at, b.finished_at,
                CASE WHEN (b.id <= ?3 OR EXISTS (
                    SELECT 1 FROM notified_builds d
                    WHERE d.build = b.id AND d.stage = 'finished'))
                  AND NOT EXISTS (
                    SELECT 1 FROM notifications n
                    WHERE n.build = b.id AND n.state IN ('pending', 'retrying'))
                THEN 1 ELSE 0 END,
                CASE WHEN b.number = (SELECT MAX(x.number) FROM builds x WHERE x.builder = b.builder)
                THEN 1 ELSE 0 END
         FROM builds b WHERE b.id > ?1 ORDER BY b.id LIMIT ?2",
        &[after.into(), limit.into(), horizon.into()],
    )?
    .iter()
    .map(|r| {
        Ok(OldBuild {
            id: r.i64(0)?,
            started_at: f64_at(r, 1)?,
            finished_at: r.opt_f64(2)?,
            reporters_done: r.bool(3)?,
            newest: r.bool(4)?,
        })
    })
    .collect()
}

/// [`Db::delete_builds`]: per Build, the same few statements through the
/// Build's indexes (one transaction: the caller's).
pub fn delete_builds(db: &mut dyn Sql, ids: &[i64]) -> Result<Removed, SqlError> {
    let mut out = Removed::default();
    let mut requests = Vec::new();
    let mut stamps = Vec::new();
    for &id in ids {
        let finished = db.query_opt(
            "SELECT sourcestamp FROM builds WHERE id = ?1 AND finished_at IS NOT NULL",
            &[id.into()],
        )?;
        let Some(row) = finished else {
            continue;
        };
        stamps.extend(row.opt_i64(0)?);
        for r in db.query(
            "SELECT l.path FROM logs l JOIN steps s ON s.id = l.step
             WHERE s.build = ?1 AND l.stored != 'deleted'",
            &[id.into()],
        )? {
            out.log_paths.push(r.string(0)?);
        }
        for r in db.query(
            "SELECT request FROM build_requests WHERE build = ?1",
            &[id.into()],
        )? {
            requests.push(r.i64(0)?);
        }
        for sql in [
            "DELETE FROM logs WHERE step IN (SELECT id FROM steps WHERE build = ?1)",
            "DELETE FROM steps WHERE build = ?1",
            "DELETE FROM build_properties WHERE build = ?1",
            "DELETE FROM build_requests WHERE build = ?1",
            "DELETE FROM notifications WHERE build = ?1",
            "DELETE FROM notified_builds WHERE build = ?1",
            "DELETE FROM builds WHERE id = ?1",
        ] {
            db.execute(sql, &[id.into()])?;
        }
        out.builds += 1;
    }
    let mut buildsets = Vec::new();
    for r in requests {
        let gone = db.query_opt(
            "SELECT buildset FROM buildrequests r WHERE r.id = ?1 AND r.complete = 1
               AND NOT EXISTS (SELECT 1 FROM build_requests br WHERE br.request = r.id)",
            &[r.into()],
        )?;
        if let Some(row) = gone {
            db.execute("DELETE FROM buildrequests WHERE id = ?1", &[r.into()])?;
            out.requests += 1;
            buildsets.push(row.i64(0)?);
        }
    }
    buildsets.sort_unstable();
    buildsets.dedup();
    for bs in buildsets {
        let gone = db.query_opt(
            "SELECT sourcestamp FROM buildsets s WHERE s.id = ?1 AND s.complete = 1
               AND NOT EXISTS (SELECT 1 FROM buildrequests r WHERE r.buildset = s.id)",
            &[bs.into()],
        )?;
        if let Some(row) = gone {
            db.execute(
                "DELETE FROM scheduler_buildsets WHERE buildset = ?1",
                &[bs.into()],
            )?;
            db.execute("DELETE FROM buildsets WHERE id = ?1", &[bs.into()])?;
            out.buildsets += 1;
            stamps.push(row.i64(0)?);
        }
    }
    stamps.sort_unstable();
    stamps.dedup();
    for stamp in stamps {
        let used = db
            .query_one(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM buildsets WHERE sourcestamp = ?1)
                     OR EXISTS (SELECT 1 FROM builds WHERE sourcestamp = ?1) THEN 1 ELSE 0 END",
                &[stamp.into()],
            )?
            .bool(0)?;
        if !used {
            for sql in [
                "DELETE FROM sourcestamp_changes WHERE sourcestamp = ?1",
                // A try job's patch goes with its SourceStamp.
                "DELETE FROM sourcestamp_patches WHERE sourcestamp = ?1",
                "DELETE FROM sourcestamps WHERE id = ?1",
            ] {
                db.execute(sql, &[stamp.into()])?;
            }
        }
    }
    Ok(out)
}

/// [`Db::old_changes_after`]: a walk of the Changes' primary key from `after`.
pub fn old_changes_after(
    db: &mut dyn Sql,
    after: i64,
    limit: i64,
) -> Result<Vec<OldChange>, SqlError> {
    db.query(
        "SELECT c.id, c.when_ts,
                CASE WHEN EXISTS (SELECT 1 FROM sourcestamp_changes sc WHERE sc.change = c.id)
                  OR EXISTS (SELECT 1 FROM scheduler_changes k WHERE k.change = c.id)
                THEN 1 ELSE 0 END
         FROM changes c WHERE c.id > ?1 ORDER BY c.id LIMIT ?2",
        &[after.into(), limit.into()],
    )?
    .iter()
    .map(|r| {
        Ok(OldChange {
            id: r.i64(0)?,
            when_ts: r.i64(1)?,
            referenced: r.bool(2)?,
        })
    })
    .collect()
}

/// [`Db::delete_changes`].
pub fn delete_changes(db: &mut dyn Sql, ids: &[i64]) -> Result<u64, SqlError> {
    let mut n = 0;
    for &id in ids {
        n += db.execute(
            "DELETE FROM changes WHERE id = ?1
               AND NOT EXISTS (SELECT 1 FROM sourcestamp_changes WHERE change = ?1)
               AND NOT EXISTS (SELECT 1 FROM scheduler_changes WHERE change = ?1)",
            &[id.into()],
        )?;
    }
    Ok(n)
}

/// [`Db::logs_to_compress`]: through the `logs_to_compress` partial index.
pub fn logs_to_compress(
    db: &mut dyn Sql,
    after: i64,
    before: f64,
    limit: i64,
) -> Result<Vec<(i64, String)>, SqlError> {
    db.query(
        "SELECT l.id, l.path
         FROM logs l JOIN steps s ON s.id = l.step JOIN builds b ON b.id = s.build
         WHERE l.complete = 1 AND l.stored = 'plain' AND l.id > ?1
           AND b.finished_at IS NOT NULL AND b.finished_at < ?2
         ORDER BY l.id LIMIT ?3",
        &[after.into(), before.into(), limit.into()],
    )?
    .iter()
    .map(|r| Ok((r.i64(0)?, r.string(1)?)))
    .collect()
}

/// [`Db::mark_logs_compressed`].
pub fn mark_logs_compressed(db: &mut dyn Sql, ids: &[i64]) -> Result<(), SqlError> {
    for &id in ids {
        db.execute(
            "UPDATE logs SET stored = 'zstd' WHERE id = ?1 AND stored = 'plain'",
            &[id.into()],
        )?;
    }
    Ok(())
}

/// [`Db::set_build_times`]. The end time is cast: PostgreSQL would read a bare
/// parameter in a `CASE` as text.
pub fn set_build_times(
    db: &mut dyn Sql,
    builder: &str,
    number: i64,
    started_at: f64,
    finished_at: f64,
) -> Result<(), SqlError> {
    db.execute(
        "UPDATE builds SET started_at = ?3,
             finished_at = CASE WHEN finished_at IS NULL THEN NULL
                                ELSE CAST(?4 AS DOUBLE PRECISION) END
         WHERE builder = ?1 AND number = ?2",
        &[
            builder.into(),
            number.into(),
            started_at.into(),
            finished_at.into(),
        ],
    )?;
    Ok(())
}

/// [`Db::log_stored`].
pub fn log_stored(
    db: &mut dyn Sql,
    builder: &str,
    number: i64,
    step: i64,
    log: &str,
) -> Result<Option<String>, SqlError> {
    db.query_opt(
        "SELECT l.stored FROM builds b JOIN steps s ON s.build = b.id
         JOIN logs l ON l.step = s.id
         WHERE b.builder = ?1 AND b.number = ?2 AND s.number = ?3 AND l.name = ?4",
        &[builder.into(), number.into(), step.into(), log.into()],
    )?
    .map(|r| r.string(0))
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::OptionalExtension;

    /// A Build deleted takes its Steps, logs, properties and notifications with
    /// it, then its BuildRequest, BuildSet and SourceStamp once nothing else
    /// uses them; a running Build is never deleted.
    #[tokio::test]
    async fn deleting_builds_keeps_the_database_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        db.write(|tx| {
            tx.execute_batch(
                "INSERT INTO changes(id, who, when_ts) VALUES (1, 'a', 10), (2, 'b', 20);
                 INSERT INTO sourcestamps(id, branch) VALUES (1, 'main'), (2, 'main');
                 INSERT INTO sourcestamp_changes VALUES (1, 1), (2, 2);
                 INSERT INTO sourcestamp_patches(sourcestamp, level, patch) VALUES (1, 1, x'00');
                 INSERT INTO buildsets(id, reason, sourcestamp, submitted_at, complete)
                     VALUES (1, 'r', 1, 1, 1), (2, 'r', 2, 2, 0);
                 INSERT INTO buildrequests(id, buildset, builder, submitted_at, complete)
                     VALUES (1, 1, 'b', 1, 1), (2, 2, 'b', 2, 0);
                 INSERT INTO builds(id, builder, number, slave, sourcestamp, started_at, finished_at, result)
                     VALUES (1, 'b', 1, 's', 1, 1, 2, 'success'), (2, 'b', 2, 's', 2, 3, NULL, NULL);
                 INSERT INTO build_requests VALUES (1, 1), (2, 2);
                 INSERT INTO steps(id, build, number, name) VALUES (1, 1, 1, 'x'), (2, 2, 1, 'x');
                 INSERT INTO logs(step, name, path, complete) VALUES (1, 'stdio', 'logs/b/1.log', 1),
                     (2, 'stdio', 'logs/b/2.log', 0);
                 INSERT INTO build_properties VALUES (1, 'p', 'v', 's');
                 INSERT INTO notified_builds VALUES (1, 'finished');
                 INSERT INTO notifications(build, kind, target, payload, meta, state, created_at, next_at)
                     VALUES (1, 'mail', 't', x'00', '{}', 'sent', 1, 1);
                 INSERT OR REPLACE INTO reporter_state(name, value) VALUES ('horizon', 2);",
            )
        })
        .await
        .unwrap();
        let seen = db.old_builds_after(0, 10).await.unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen[0].reporters_done && seen[1].finished_at.is_none());
        assert!(!seen[0].newest && seen[1].newest);
        let removed = db.delete_builds(vec![1, 2]).await.unwrap();
        assert_eq!(
            (removed.builds, removed.requests, removed.buildsets),
            (1, 1, 1)
        );
        assert_eq!(removed.log_paths, vec!["logs/b/1.log".to_string()]);
        let counts: Vec<i64> = db
            .read(|c| {
                [
                    "builds",
                    "steps",
                    "logs",
                    "build_properties",
                    "build_requests",
                    "buildrequests",
                    "buildsets",
                    "sourcestamps",
                    "sourcestamp_changes",
                    "sourcestamp_patches",
                    "notifications",
                    "notified_builds",
                ]
                .iter()
                .map(|t| c.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0)))
                .collect()
            })
            .await
            .unwrap();
        assert_eq!(counts, vec![1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0]);
        // Change 1 is no longer referred to; change 2 is (the running build's).
        let changes = db.old_changes_after(0, 10).await.unwrap();
        assert!(!changes[0].referenced && changes[1].referenced);
        assert_eq!(db.delete_changes(vec![1, 2]).await.unwrap(), 1);
        let check: String = db
            .read(|c| {
                c.query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                    .optional()
            })
            .await
            .unwrap()
            .unwrap_or_default();
        assert_eq!(check, "");
    }
}
