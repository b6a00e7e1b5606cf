//! Artifacts in the database: one row per file a Build uploaded to the master (its
//! path below `MASTERDIR/artifacts/BUILDER/NUMBER`, size and SHA-256), written
//! once the file is complete and renamed into place, so a row always has its
//! whole file; read by the build page and the API, and deleted by the
//! retention task (`artifactHorizon`) before their files. Written once for
//! both backends ([`super::sql`]).

use serde::Serialize;

use super::sql::{Row, Sql, SqlError};
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
        self.write_sql(move |db| add(db, build_id, &builder, number, &path, size, &sha256, at))
            .await
    }

    /// The artifacts of `builder`'s Build `number`, by path.
    pub async fn artifacts(&self, builder: &str, number: i64) -> Result<Vec<ArtifactRow>, DbError> {
        let builder = builder.to_string();
        self.read_sql(move |db| of_build(db, &builder, number))
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
        self.read_sql(move |db| one(db, &builder, number, &path))
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
        self.read_sql(move |db| latest_successful(db, &builder, &path))
            .await
    }

    /// Builds with artifacts that finished before `cutoff`, or whose Build row
    /// is gone (deleted by `buildHorizon`): at most `limit`, oldest first.
    pub async fn expired_artifact_builds(
        &self,
        cutoff: f64,
        limit: i64,
    ) -> Result<Vec<ArtifactBuild>, DbError> {
        self.read_sql(move |db| expired(db, cutoff, limit)).await
    }

    /// Forget the artifacts of these Builds (their files go next); the rows
    /// removed.
    pub async fn delete_artifacts(&self, build_ids: Vec<i64>) -> Result<u64, DbError> {
        self.write_sql(move |db| delete(db, &build_ids)).await
    }
}

// The queries, on either backend ([`super::sql`]).

/// Record an artifact (a second upload to the same path replaces the row's
/// values; the row keeps its id).
#[allow(clippy::too_many_arguments)]
pub fn add(
    db: &mut dyn Sql,
    build_id: i64,
    builder: &str,
    number: i64,
    path: &str,
    size: u64,
    sha256: &str,
    at: f64,
) -> Result<(), SqlError> {
    db.execute(
        "INSERT INTO artifacts(build_id, builder, number, path, size, sha256, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(build_id, path) DO UPDATE SET builder = ?2, number = ?3, size = ?5,
            sha256 = ?6, created_at = ?7",
        &[
            build_id.into(),
            builder.into(),
            number.into(),
            path.into(),
            i64::try_from(size).unwrap_or(i64::MAX).into(),
            sha256.into(),
            at.into(),
        ],
    )?;
    Ok(())
}

/// The artifacts of `builder`'s Build `number`, by path.
pub fn of_build(
    db: &mut dyn Sql,
    builder: &str,
    number: i64,
) -> Result<Vec<ArtifactRow>, SqlError> {
    let mut rows = db
        .query(
            "SELECT path, size, sha256, created_at FROM artifacts
             WHERE builder = ?1 AND number = ?2",
            &[builder.into(), number.into()],
        )?
        .iter()
        .map(row)
        .collect::<Result<Vec<_>, _>>()?;
    // Byte order on both backends (not PostgreSQL's collation).
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(rows)
}

/// One artifact of `builder`'s Build `number`.
pub fn one(
    db: &mut dyn Sql,
    builder: &str,
    number: i64,
    path: &str,
) -> Result<Option<ArtifactRow>, SqlError> {
    db.query_opt(
        "SELECT path, size, sha256, created_at FROM artifacts
         WHERE builder = ?1 AND number = ?2 AND path = ?3",
        &[builder.into(), number.into(), path.into()],
    )?
    .as_ref()
    .map(row)
    .transpose()
}

/// The number of `builder`'s newest successful Build with an artifact at `path`.
pub fn latest_successful(
    db: &mut dyn Sql,
    builder: &str,
    path: &str,
) -> Result<Option<i64>, SqlError> {
    db.query_opt(
        "SELECT b.number FROM builds b JOIN artifacts a ON a.build_id = b.id
         WHERE b.builder = ?1 AND b.result = 'success' AND a.path = ?2
         ORDER BY b.number DESC LIMIT 1",
        &[builder.into(), path.into()],
    )?
    .map(|r| r.i64(0))
    .transpose()
}

/// Builds with artifacts finished before `cutoff` or gone: at most `limit`,
/// oldest first.
pub fn expired(db: &mut dyn Sql, cutoff: f64, limit: i64) -> Result<Vec<ArtifactBuild>, SqlError> {
    db.query(
        "SELECT DISTINCT a.build_id, a.builder, a.number FROM artifacts a
         LEFT JOIN builds b ON b.id = a.build_id
         WHERE b.id IS NULL OR (b.finished_at IS NOT NULL AND b.finished_at < ?1)
         ORDER BY a.build_id LIMIT ?2",
        &[cutoff.into(), limit.into()],
    )?
    .iter()
    .map(|r| {
        Ok(ArtifactBuild {
            build_id: r.i64(0)?,
            builder: r.string(1)?,
            number: r.i64(2)?,
        })
    })
    .collect()
}

/// Forget the artifacts of these Builds; the rows removed.
pub fn delete(db: &mut dyn Sql, build_ids: &[i64]) -> Result<u64, SqlError> {
    let mut n = 0;
    for id in build_ids {
        n += db.execute("DELETE FROM artifacts WHERE build_id = ?1", &[(*id).into()])?;
    }
    Ok(n)
}

fn row(r: &Row) -> Result<ArtifactRow, SqlError> {
    Ok(ArtifactRow {
        path: r.string(0)?,
        size: r.i64(1)?.max(0) as u64,
        sha256: r.string(2)?,
        created_at: super::builds::real(r, 3)?,
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
