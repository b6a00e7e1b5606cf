//! The master's state in SQLite (`MASTERDIR/state.sqlite`): schema, migrations and
//! queries.
//!
//! [`Db`] owns two connections, one for writes and one for reads (WAL lets readers
//! run beside the writer). Every call runs on tokio's blocking pool, so a slow disk
//! never stalls the async runtime. Queries live in one file per domain
//! ([`slaves`], [`changes`], [`requests`] for BuildSets and BuildRequests,
//! [`builds`] for Builds, Steps, logs and properties); the schema is the
//! append-only list in [`migrations`].

pub mod builds;
pub mod changes;
pub mod migrations;
pub mod requests;
pub mod schedulers;
pub mod slaves;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction};

/// File name of the database inside the master directory.
pub const DB_FILE: &str = "state.sqlite";

/// Why the database could not be opened or a query failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path} has schema version {found} but this autobot knows only up to {known}; \
         run a newer autobot or restore an older state.sqlite"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("{path}: migration to schema version {version} failed: {source}")]
    Migrate {
        path: PathBuf,
        version: usize,
        source: rusqlite::Error,
    },
    #[error("database query failed: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(String),
}

/// A handle to the master's database; cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Db {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

impl Db {
    /// Open (creating if needed) and migrate the database at `path`.
    ///
    /// Blocking: call it at start-up or inside `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let open_err = |source| DbError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut writer = Connection::open(path).map_err(open_err)?;
        configure(&writer).map_err(open_err)?;
        migrate(path, &mut writer)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        reader
            .busy_timeout(Duration::from_secs(10))
            .map_err(open_err)?;
        Ok(Db {
            path: path.to_path_buf(),
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` in one write transaction on the blocking pool; committed when `f`
    /// returns `Ok`, rolled back otherwise.
    pub async fn write<F, R>(&self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = guard.transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Run a read-only query on the blocking pool (sees every committed write).
    pub async fn read<F, R>(&self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            Ok(f(&guard)?)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Fold the WAL back into the main file; called at shutdown so the directory
    /// is self-contained when the master is not running.
    pub async fn checkpoint(&self) -> Result<(), DbError> {
        let conn = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            guard.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(())
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// The schema version the database is at (for tests and `checkconfig`).
    pub async fn schema_version(&self) -> Result<i64, DbError> {
        self.read(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
            .await
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    // WAL: readers never block the writer; NORMAL: durable at checkpoints and
    // safe against corruption, without an fsync per commit.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Bring the schema up to date, one transaction per migration.
fn migrate(path: &Path, conn: &mut Connection) -> Result<(), DbError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| DbError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let known = migrations::MIGRATIONS.len();
    if found < 0 || found as usize > known {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for (i, sql) in migrations::MIGRATIONS
        .iter()
        .enumerate()
        .skip(found as usize)
    {
        let version = i + 1;
        let err = |source| DbError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::debug!("database migrated to schema version {version}");
    }
    Ok(())
}

/// Seconds since the Unix epoch with a fraction: the time of the engine's own
/// events (builds, steps, requests), whose durations need better than seconds.
pub fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whole seconds since the Unix epoch (slaves, Changes).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_migrates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let db = Db::open(&path).unwrap();
        assert_eq!(
            db.schema_version().await.unwrap(),
            migrations::MIGRATIONS.len() as i64
        );
        db.write(|tx| tx.execute("INSERT INTO slaves(name) VALUES ('a')", []))
            .await
            .unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        let n: i64 = db
            .read(|c| c.query_row("SELECT count(*) FROM slaves", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 9999).unwrap();
        drop(c);
        let err = Db::open(&path).err().unwrap().to_string();
        assert!(err.contains("newer autobot"), "{err}");
    }
}
