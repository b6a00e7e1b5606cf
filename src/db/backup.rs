//! A consistent copy of a master's `state.sqlite` while the master runs, through
//! SQLite's online backup API (`autobot backup`), and the schema version of a
//! database file (what `autobot restore` reports and checks).
//!
//! The copy is taken from a connection of its own, a few hundred pages at a
//! time: the master's writer goes on between the steps, and SQLite restarts the
//! copy when a write lands in the pages already copied, so the result is the
//! database as of one moment. The copy is a single file (no `-wal`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::DbError;

/// Pages copied per step of the backup; the master's writes go on between steps.
const PAGES_PER_STEP: std::os::raw::c_int = 256;
/// How long a step waits when the database is busy before it tries again.
const STEP_PAUSE: Duration = Duration::from_millis(5);

/// Copy the database at `from` (possibly in use by a running master) to the new
/// file `to` through SQLite's online backup API.
pub fn copy_online(from: &Path, to: &Path) -> Result<(), DbError> {
    let open_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DbError::Open { path, source }
    };
    let src = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err(from))?;
    src.busy_timeout(Duration::from_secs(30))
        .map_err(open_err(from))?;
    let mut dst = Connection::open(to).map_err(open_err(to))?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(open_err(to))?;
        backup
            .run_to_completion(PAGES_PER_STEP, STEP_PAUSE, None)
            .map_err(open_err(from))?;
    }
    // The copy keeps the source's journal mode (WAL); leave one self-contained
    // file behind.
    dst.pragma_update(None, "journal_mode", "DELETE")
        .map_err(open_err(to))?;
    Ok(())
}

/// The schema version (`PRAGMA user_version`) of the database file at `path`,
/// opened read-only.
pub fn schema_version_of(path: &Path) -> Result<i64, DbError> {
    let open_err = |source| DbError::Open {
        path: path.to_path_buf(),
        source,
    };
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    c.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_err)
}

/// Set the schema version of the database file at `path` (tests make a
/// database "from a newer autobot" with it).
pub fn set_schema_version(path: &Path, version: i64) -> Result<(), DbError> {
    let c = Connection::open(path).map_err(|source| DbError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    c.pragma_update(None, "user_version", version)?;
    Ok(())
}

/// The schema versions this autobot knows (its newest).
pub fn known_schema_version() -> i64 {
    super::migrations::MIGRATIONS.len() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_copy_taken_while_writing_is_a_whole_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::db::DB_FILE);
        let db = crate::db::Db::open(&path).unwrap();
        db.write(|tx| tx.execute("INSERT INTO slaves(name) VALUES ('a')", []))
            .await
            .unwrap();
        let copy = dir.path().join("copy.sqlite");
        let (from, to) = (path.clone(), copy.clone());
        tokio::task::spawn_blocking(move || copy_online(&from, &to))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(schema_version_of(&copy).unwrap(), known_schema_version());
        assert!(!dir.path().join("copy.sqlite-wal").exists());
        drop(db);
        let again = crate::db::Db::open(&copy).unwrap();
        let n: i64 = again
            .read(|c| c.query_row("SELECT count(*) FROM slaves", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}
