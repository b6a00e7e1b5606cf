//! Queries on the `changes` table: every Change the master learnt of (pollers,
//! `sendchange`, webhooks), stored before anything acts on it.
//!
//! `files` and `links` are JSON arrays in their columns; [`ChangeRow`] carries them
//! as lists and serializes as the JSON API shows a Change (`when` in unix seconds).

use rusqlite::{params, Connection};
use serde::Serialize;

use super::{Db, DbError};

/// A Change to record; the database assigns its id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewChange {
    /// Author, `Name <email>` for git.
    pub who: String,
    pub files: Vec<String>,
    pub comments: String,
    pub revision: Option<String>,
    pub branch: Option<String>,
    /// Unix seconds of the commit (or of the submission when unknown).
    pub when: i64,
    pub repository: String,
    pub category: String,
    pub links: Vec<String>,
    pub project: String,
}

/// A stored Change, as the JSON API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRow {
    pub id: i64,
    pub who: String,
    pub files: Vec<String>,
    pub comments: String,
    pub revision: Option<String>,
    pub branch: Option<String>,
    pub when: i64,
    pub repository: String,
    pub category: String,
    pub links: Vec<String>,
    pub project: String,
}

pub(crate) const CHANGE_COLUMNS: &str =
    "c.id, c.who, c.files, c.comments, c.revision, c.branch, c.when_ts, c.repository, \
     c.category, c.links, c.project";

/// Reads a row selected with [`CHANGE_COLUMNS`].
pub(crate) fn change_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChangeRow> {
    let files: String = r.get(2)?;
    let links: String = r.get(9)?;
    Ok(ChangeRow {
        id: r.get(0)?,
        who: r.get(1)?,
        files: serde_json::from_str(&files).unwrap_or_default(),
        comments: r.get(3)?,
        revision: r.get(4)?,
        branch: r.get(5)?,
        when: r.get(6)?,
        repository: r.get(7)?,
        category: r.get(8)?,
        links: serde_json::from_str(&links).unwrap_or_default(),
        project: r.get(10)?,
    })
}

/// Insert one Change inside a transaction; its id.
pub fn insert_change(tx: &Connection, c: &NewChange) -> rusqlite::Result<i64> {
    let files = serde_json::to_string(&c.files).unwrap_or_else(|_| "[]".into());
    let links = serde_json::to_string(&c.links).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT INTO changes(who, files, comments, revision, branch, when_ts, repository,
                             category, links, project)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            c.who,
            files,
            c.comments,
            c.revision,
            c.branch,
            c.when,
            c.repository,
            c.category,
            links,
            c.project
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// The Changes of a SourceStamp, oldest first.
pub(crate) fn sourcestamp_changes(
    c: &Connection,
    sourcestamp: i64,
) -> rusqlite::Result<Vec<ChangeRow>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {CHANGE_COLUMNS} FROM sourcestamp_changes sc JOIN changes c ON c.id = sc.change
         WHERE sc.sourcestamp = ?1 ORDER BY c.id"
    ))?;
    let rows = st.query_map([sourcestamp], change_row)?;
    rows.collect()
}

impl Db {
    /// Record Changes (in the order given, which becomes their id order); their ids.
    pub async fn add_changes(&self, changes: Vec<NewChange>) -> Result<Vec<i64>, DbError> {
        self.write(move |tx| changes.iter().map(|c| insert_change(tx, c)).collect())
            .await
    }

    /// Record one Change; its id.
    pub async fn add_change(&self, change: NewChange) -> Result<i64, DbError> {
        self.write(move |tx| insert_change(tx, &change)).await
    }

    /// Changes newest first: at most `limit`, with ids below `before` when given
    /// (for paging).
    pub async fn changes(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<ChangeRow>, DbError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {CHANGE_COLUMNS} FROM changes c WHERE c.id < ?1
                 ORDER BY c.id DESC LIMIT ?2"
            ))?;
            let rows = st.query_map(params![before.unwrap_or(i64::MAX), limit], change_row)?;
            rows.collect()
        })
        .await
    }

    /// Every Change with an id above `after`, oldest first.
    pub async fn changes_after(&self, after: i64) -> Result<Vec<ChangeRow>, DbError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {CHANGE_COLUMNS} FROM changes c WHERE c.id > ?1 ORDER BY c.id"
            ))?;
            let rows = st.query_map([after], change_row)?;
            rows.collect()
        })
        .await
    }

    /// One Change by id.
    pub async fn change(&self, id: i64) -> Result<Option<ChangeRow>, DbError> {
        use rusqlite::OptionalExtension;
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {CHANGE_COLUMNS} FROM changes c WHERE c.id = ?1"),
                [id],
                change_row,
            )
            .optional()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_round_trip_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(super::super::DB_FILE)).unwrap();
        let ids = db
            .add_changes(vec![
                NewChange {
                    who: "Ann <ann@example.org>".into(),
                    files: vec!["a.c".into(), "b/c.h".into()],
                    comments: "first".into(),
                    revision: Some("abc".into()),
                    branch: Some("main".into()),
                    when: 100,
                    links: vec!["https://x/abc".into()],
                    ..Default::default()
                },
                NewChange {
                    who: "Bob".into(),
                    when: 200,
                    ..Default::default()
                },
            ])
            .await
            .unwrap();
        assert_eq!(ids.len(), 2);
        let list = db.changes(10, None).await.unwrap();
        assert_eq!(list[0].who, "Bob");
        assert_eq!(list[1].files, vec!["a.c", "b/c.h"]);
        assert_eq!(list[1].links, vec!["https://x/abc"]);
        assert_eq!(db.changes(10, Some(ids[1])).await.unwrap().len(), 1);
        assert_eq!(db.change(ids[0]).await.unwrap().unwrap().when, 100);
    }
}
