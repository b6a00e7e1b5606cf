//! Artifacts in SQLite: one row per file a Build uploaded to the master (its
//! path below `MASTERDIR/artifacts/BUILDER/NUMBER`, size and SHA-256), written
//! once the file is complete and renamed into place, so a row always has its
//! whole file; read by the build page and the API, and deleted by the
//! retention task (`artifactHorizon`) before their files.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{Db, DbError};

/// One artifact as the pages and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactRow {
    /// Relative to the Build's artifacts directory, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// Unix time the upload completed.
    pub created_at: f64,
}

/// The artifacts of one Build, for the retention task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactBuild {
    pub build_id: i64,
    pub builder: String,
    pub number: i64,
}

impl Db {
    /// Record an artifact once its file is in place (a second upload to the
    /// same path replaces the row).
    #[allow(clippy::too_many_arguments)]
    pub async fn add_artifact(
        &self,
        build_id: i64,
        builder: &str,
        number: i64,
        path: &str,
        size: u64,
        sha256: &str,
        at: f64,
    ) -> Result<(), DbError> {
        let (builder, path, sha256) = (builder.to_string(), path.to_string(), sha256.to_string());
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO artifacts(build_id, builder, number, path, size, sha256, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![build_id, builder, number, path, size as i64, sha256, at])?;
            Ok(())
        })
        .await
    }

    /// The artifacts of `builder`'s Build `number`, by path.
    pub async fn artifacts(&self, builder: &str, number: i64) -> Result<Vec<ArtifactRow>, DbError> {
        let builder = builder.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT path, size, sha256, created_at FROM artifacts
                 WHERE builder = ?1 AND number = ?2 ORDER BY path",
            )?;
            let rows = st.query_map(params![builder, number], row)?;
            rows.collect()
        })
        .await
    }

    /// One artifact of `builder`'s Build `number`.
    pub async fn artifact(
        &self,
        builder: &str,
        number: i64,
        path: &str,
    ) -> Result<Option<ArtifactRow>, DbError> {
        let (builder, path) = (builder.to_string(), path.to_string());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT path, size, sha256, created_at FROM artifacts
                 WHERE builder = ?1 AND number = ?2 AND path = ?3",
            )?
            .query_row(params![builder, number, path], row)
            .optional()
        })
        .await
    }

    /// The number of `builder`'s newest successful Build that has an artifact
    /// at `path` (the stable "latest" URL).
    pub async fn latest_successful_with(
        &self,
        builder: &str,
        path: &str,
    ) -> Result<Option<i64>, DbError> {
        let (builder, path) = (builder.to_string(), path.to_string());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT b.number FROM builds b JOIN artifacts a ON a.build_id = b.id
                 WHERE b.builder = ?1 AND b.result = 'success' AND a.path = ?2
                 ORDER BY b.number DESC LIMIT 1",
            )?
            .query_row(params![builder, path], |r| r.get(0))
            .optional()
        })
        .await
    }

    /// Builds with artifacts that finished before `cutoff`, or whose Build row
    /// is gone (deleted by `buildHorizon`): at most `limit`, oldest first.
    pub async fn expired_artifact_builds(
        &self,
        cutoff: f64,
        limit: i64,
    ) -> Result<Vec<ArtifactBuild>, DbError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT a.build_id, a.builder, a.number FROM artifacts a
                 LEFT JOIN builds b ON b.id = a.build_id
                 WHERE b.id IS NULL OR (b.finished_at IS NOT NULL AND b.finished_at < ?1)
                 ORDER BY a.build_id LIMIT ?2",
            )?;
            let rows = st.query_map(params![cutoff, limit], |r| {
                Ok(ArtifactBuild {
                    build_id: r.get(0)?,
                    builder: r.get(1)?,
                    number: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Forget the artifacts of these Builds (their files go next); the rows
    /// removed.
    pub async fn delete_artifacts(&self, build_ids: Vec<i64>) -> Result<u64, DbError> {
        self.write(move |tx| {
            let mut n = 0;
            let mut st = tx.prepare_cached("DELETE FROM artifacts WHERE build_id = ?1")?;
            for id in build_ids {
                n += st.execute([id])? as u64;
            }
            Ok(n)
        })
        .await
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArtifactRow> {
    Ok(ArtifactRow {
        path: r.get(0)?,
        size: r.get::<_, i64>(1)?.max(0) as u64,
        sha256: r.get(2)?,
        created_at: r.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rows_are_listed_found_and_expired() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        db.write(|tx| {
            tx.execute_batch(
                "INSERT INTO builds(id, builder, number, slave, started_at, finished_at, result)
                 VALUES (1, 'b', 1, 's', 1, 2, 'success'), (2, 'b', 2, 's', 3, 4, 'failure')",
            )
        })
        .await
        .unwrap();
        db.add_artifact(1, "b", 1, "x/a.bin", 3, "ab", 5.0)
            .await
            .unwrap();
        db.add_artifact(2, "b", 2, "x/a.bin", 4, "cd", 6.0)
            .await
            .unwrap();
        db.add_artifact(9, "gone", 7, "z", 1, "ef", 6.0)
            .await
            .unwrap();
        let l = db.artifacts("b", 1).await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].path.as_str(), l[0].size), ("x/a.bin", 3));
        assert_eq!(
            db.latest_successful_with("b", "x/a.bin").await.unwrap(),
            Some(1)
        );
        assert_eq!(db.latest_successful_with("b", "nope").await.unwrap(), None);
        let old = db.expired_artifact_builds(3.0, 10).await.unwrap();
        let ids: Vec<i64> = old.iter().map(|b| b.build_id).collect();
        assert_eq!(ids, vec![1, 9]);
        assert_eq!(db.delete_artifacts(ids).await.unwrap(), 2);
        assert!(db.artifact("b", 1, "x/a.bin").await.unwrap().is_none());
        assert!(db.artifact("b", 2, "x/a.bin").await.unwrap().is_some());
    }
}
