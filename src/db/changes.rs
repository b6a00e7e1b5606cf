//! Queries on the `changes` table: every Change the master learnt of (pollers,
//! `sendchange`, webhooks), stored before anything acts on it.
//!
//! `files` and `links` are JSON arrays in their columns; [`ChangeRow`] carries them
//! as lists and serializes as the JSON API shows a Change (`when` in unix seconds).
//!
//! A webhook's Changes are stored with the record of its delivery
//! ([`Db::add_delivery`]) in one transaction, so a delivery seen before stores
//! nothing and a failed one can be delivered again.
//!
//! Each query is a function on `&mut dyn` [`Sql`], written once
//! for SQLite and PostgreSQL ([`super::sql`]); the [`Db`] methods run them in
//! one transaction of the master's backend.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::sql::{Row, Sql, SqlError};
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

impl NewChange {
    /// The Change as stored with id `id`.
    pub fn stored_as(self, id: i64) -> ChangeRow {
        ChangeRow {
            id,
            who: self.who,
            files: self.files,
            comments: self.comments,
            revision: self.revision,
            branch: self.branch,
            when: self.when,
            repository: self.repository,
            category: self.category,
            links: self.links,
            project: self.project,
        }
    }
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

/// Reads a row selected with [`CHANGE_COLUMNS`] (its first eleven columns).
pub(crate) fn change_row(r: &Row) -> Result<ChangeRow, SqlError> {
    let files = r.string(2)?;
    let links = r.string(9)?;
    Ok(ChangeRow {
        id: r.i64(0)?,
        who: r.string(1)?,
        files: serde_json::from_str(&files).unwrap_or_default(),
        comments: r.string(3)?,
        revision: r.opt_string(4)?,
        branch: r.opt_string(5)?,
        when: r.i64(6)?,
        repository: r.string(7)?,
        category: r.string(8)?,
        links: serde_json::from_str(&links).unwrap_or_default(),
        project: r.string(10)?,
    })
}

/// The channel on which masters sharing a PostgreSQL database announce each
/// Change stored (payload: its id), so that every master's [`ChangeBus`]
/// tells its schedulers and live pages, whichever master stored it.
///
/// [`ChangeBus`]: crate::changes::ChangeBus
pub const STORED: &str = "autobot_changes";

/// The advisory lock a transaction storing Changes holds on PostgreSQL: ids
/// are then taken and committed in one order across masters, so that a
/// reader of the Changes above the last id it saw misses none.
const STORE_LOCK: i64 = 0x6175_746f_6368;

/// Insert one Change inside a transaction; its id. On PostgreSQL every master
/// is told when the transaction commits ([`STORED`]).
///
/// On PostgreSQL it is one statement (so [`Db::add_change`] runs it without
/// a transaction around it): the lock taken before the id is drawn (the
/// insert reads the lock's row), the notification sent as it commits.
pub fn insert_change(db: &mut dyn Sql, c: &NewChange) -> Result<i64, SqlError> {
    let sql = match db.dialect() {
        super::sql::Dialect::Sqlite => {
            "INSERT INTO changes(who, files, comments, revision, branch, when_ts, repository,
                                 category, links, project)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             RETURNING id"
                .to_string()
        }
        super::sql::Dialect::Postgres => {
            format!("WITH {} SELECT c.id FROM c CROSS JOIN n", store_ctes(1))
        }
    };
    db.query_one(&sql, &change_params(db.dialect(), c))?.i64(0)
}

/// [`insert_change`] on PostgreSQL as the data-modifying CTEs `l` (the
/// advisory lock), `c` (the row inserted, its `id` returned) and `n` (the
/// [`STORED`] notification: select from it, or it is not sent), for the
/// `WITH` of a statement that does more with the new Change
/// ([`super::requests::insert_change_firing`]). Their eleven parameters are
/// numbered from `?first`, in the order of [`change_params`].
pub(crate) fn store_ctes(first: usize) -> String {
    let p = |i: usize| format!("?{}", first + i);
    let values: Vec<String> = (0..10).map(p).collect();
    format!(
        "l AS (SELECT pg_advisory_xact_lock({lock}) AS locked),
         c AS (INSERT INTO changes(who, files, comments, revision, branch, when_ts,
                                   repository, category, links, project)
               SELECT {values} FROM l
               RETURNING id),
         n AS (SELECT pg_notify('{STORED}', CAST(c.id AS TEXT)) FROM c)",
        lock = p(10),
        values = values.join(", "),
    )
}

/// The parameters of [`insert_change`] (and of [`store_ctes`]: the lock's key
/// last, on PostgreSQL).
pub(crate) fn change_params(dialect: super::sql::Dialect, c: &NewChange) -> Vec<super::sql::Value> {
    let files = serde_json::to_string(&c.files).unwrap_or_else(|_| "[]".into());
    let links = serde_json::to_string(&c.links).unwrap_or_else(|_| "[]".into());
    let mut params: Vec<super::sql::Value> = vec![
        c.who.as_str().into(),
        files.into(),
        c.comments.as_str().into(),
        c.revision.clone().into(),
        c.branch.clone().into(),
        c.when.into(),
        c.repository.as_str().into(),
        c.category.as_str().into(),
        links.into(),
        c.project.as_str().into(),
    ];
    if dialect == super::sql::Dialect::Postgres {
        params.push(STORE_LOCK.into());
    }
    params
}

/// The Changes of a SourceStamp, oldest first.
pub fn sourcestamp_changes(db: &mut dyn Sql, sourcestamp: i64) -> Result<Vec<ChangeRow>, SqlError> {
    db.query(
        &format!(
            "SELECT {CHANGE_COLUMNS} FROM sourcestamp_changes sc JOIN changes c ON c.id = sc.change
             WHERE sc.sourcestamp = ?1 ORDER BY c.id"
        ),
        &[sourcestamp.into()],
    )?
    .iter()
    .map(change_row)
    .collect()
}

/// One webhook request, as [`Db::add_delivery`] remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `github`, `gitlab` or `gitea`.
    pub forge: String,
    /// The forge's delivery id (it stays the same when the forge redelivers).
    pub id: Option<String>,
    /// Hex SHA-256 of the body: the same payload again under another id (the id
    /// header is not signed) is a repeat too.
    pub digest: String,
}

/// What [`Db::add_delivery`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    /// A new delivery: recorded, with the ids of the Changes stored with it.
    Stored(Vec<i64>),
    /// Seen before (at `received_at`, unix seconds): nothing stored. `by_id` tells
    /// whether the delivery id matched (else the body did).
    Repeat { received_at: f64, by_id: bool },
}

impl Db {
    /// Record webhook `delivery` received at `now` and store `changes` with it, in
    /// one transaction, unless a delivery with the same id or the same body (for the
    /// same forge) was recorded less than `keep` seconds ago: then nothing is
    /// stored. Deliveries older than `keep` are forgotten first.
    pub async fn add_delivery(
        &self,
        delivery: Delivery,
        changes: Vec<NewChange>,
        now: f64,
        keep: f64,
    ) -> Result<DeliveryOutcome, DbError> {
        self.add_delivery_with_properties(delivery, changes, Vec::new(), now, keep)
            .await
    }

    /// [`Db::add_delivery`] where Change `i` gets the properties `properties[i]`
    /// (a pull request's; missing entries: none).
    pub async fn add_delivery_with_properties(
        &self,
        delivery: Delivery,
        changes: Vec<NewChange>,
        properties: Vec<BTreeMap<String, String>>,
        now: f64,
        keep: f64,
    ) -> Result<DeliveryOutcome, DbError> {
        self.write_sql(move |db| add_delivery(db, &delivery, &changes, &properties, now, keep))
            .await
    }

    /// How many webhook deliveries are remembered now.
    pub async fn hook_deliveries(&self) -> Result<i64, DbError> {
        self.read_sql(|db| count_deliveries(db)).await
    }

    /// Record Changes (in the order given, which becomes their id order); their
    /// ids. One Change (a commit hook's, most pollers') is one statement on
    /// PostgreSQL ([`Db::add_change`]).
    pub async fn add_changes(&self, mut changes: Vec<NewChange>) -> Result<Vec<i64>, DbError> {
        if changes.len() == 1 {
            if let Some(one) = changes.pop() {
                return Ok(vec![self.add_change(one).await?]);
            }
        }
        self.write_sql(move |db| changes.iter().map(|c| insert_change(db, c)).collect())
            .await
    }

    /// Record one Change; its id.
    pub async fn add_change(&self, change: NewChange) -> Result<i64, DbError> {
        self.write_sql_one(move |db| insert_change(db, &change))
            .await
    }

    /// Changes newest first: at most `limit`, with ids below `before` when given
    /// (for paging).
    pub async fn changes(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<ChangeRow>, DbError> {
        self.read_sql(move |db| newest(db, limit, before)).await
    }

    /// Every Change with an id above `after`, oldest first.
    pub async fn changes_after(&self, after: i64) -> Result<Vec<ChangeRow>, DbError> {
        self.read_sql(move |db| after_id(db, after)).await
    }

    /// The properties of Changes `ids` (those that have any).
    pub async fn change_properties(
        &self,
        ids: Vec<i64>,
    ) -> Result<HashMap<i64, BTreeMap<String, String>>, DbError> {
        self.read_sql(move |db| properties_of(db, &ids)).await
    }

    /// One Change by id.
    pub async fn change(&self, id: i64) -> Result<Option<ChangeRow>, DbError> {
        self.read_sql(move |db| one(db, id)).await
    }
}

// The queries, on either backend ([`super::sql`]).

/// [`Db::add_delivery_with_properties`]: forget deliveries older than `keep`,
/// then store `delivery` and its Changes unless it is a repeat.
pub fn add_delivery(
    db: &mut dyn Sql,
    delivery: &Delivery,
    changes: &[NewChange],
    properties: &[BTreeMap<String, String>],
    now: f64,
    keep: f64,
) -> Result<DeliveryOutcome, SqlError> {
    db.execute(
        "DELETE FROM hook_deliveries WHERE received_at < ?1",
        &[(now - keep).into()],
    )?;
    let seen = db.query_opt(
        "SELECT received_at, CASE WHEN delivery = ?2 THEN 1 ELSE 0 END
         FROM hook_deliveries
         WHERE forge = ?1 AND ((?2 IS NOT NULL AND delivery = ?2) OR digest = ?3)
         ORDER BY received_at LIMIT 1",
        &[
            delivery.forge.as_str().into(),
            delivery.id.clone().into(),
            delivery.digest.as_str().into(),
        ],
    )?;
    if let Some(r) = seen {
        return Ok(DeliveryOutcome::Repeat {
            received_at: r.opt_f64(0)?.unwrap_or_default(),
            by_id: r.bool(1)?,
        });
    }
    db.execute(
        "INSERT INTO hook_deliveries(forge, delivery, digest, received_at)
         VALUES (?1, ?2, ?3, ?4)",
        &[
            delivery.forge.as_str().into(),
            delivery.id.clone().into(),
            delivery.digest.as_str().into(),
            now.into(),
        ],
    )?;
    let ids = changes
        .iter()
        .map(|c| insert_change(db, c))
        .collect::<Result<Vec<i64>, SqlError>>()?;
    for (id, props) in ids.iter().zip(properties) {
        for (name, value) in props {
            db.execute(
                "INSERT INTO change_properties(change, name, value) VALUES (?1, ?2, ?3)",
                &[(*id).into(), name.as_str().into(), value.as_str().into()],
            )?;
        }
    }
    Ok(DeliveryOutcome::Stored(ids))
}

/// How many webhook deliveries are remembered.
pub fn count_deliveries(db: &mut dyn Sql) -> Result<i64, SqlError> {
    db.query_one("SELECT count(*) FROM hook_deliveries", &[])?
        .i64(0)
}

/// Changes newest first: at most `limit`, with ids below `before` when given.
pub fn newest(
    db: &mut dyn Sql,
    limit: u32,
    before: Option<i64>,
) -> Result<Vec<ChangeRow>, SqlError> {
    db.query(
        &format!(
            "SELECT {CHANGE_COLUMNS} FROM changes c WHERE c.id < ?1
             ORDER BY c.id DESC LIMIT ?2"
        ),
        &[before.unwrap_or(i64::MAX).into(), i64::from(limit).into()],
    )?
    .iter()
    .map(change_row)
    .collect()
}

/// Every Change with an id above `after`, oldest first.
pub fn after_id(db: &mut dyn Sql, after: i64) -> Result<Vec<ChangeRow>, SqlError> {
    db.query(
        &format!("SELECT {CHANGE_COLUMNS} FROM changes c WHERE c.id > ?1 ORDER BY c.id"),
        &[after.into()],
    )?
    .iter()
    .map(change_row)
    .collect()
}

/// The properties of Changes `ids` (those that have any).
pub fn properties_of(
    db: &mut dyn Sql,
    ids: &[i64],
) -> Result<HashMap<i64, BTreeMap<String, String>>, SqlError> {
    let mut out: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
    for id in ids {
        let rows = db.query(
            "SELECT name, value FROM change_properties WHERE change = ?1",
            &[(*id).into()],
        )?;
        for r in rows {
            out.entry(*id)
                .or_default()
                .insert(r.string(0)?, r.string(1)?);
        }
    }
    Ok(out)
}

/// One Change by id.
pub fn one(db: &mut dyn Sql, id: i64) -> Result<Option<ChangeRow>, SqlError> {
    db.query_opt(
        &format!("SELECT {CHANGE_COLUMNS} FROM changes c WHERE c.id = ?1"),
        &[id.into()],
    )?
    .as_ref()
    .map(change_row)
    .transpose()
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

    #[tokio::test]
    async fn a_delivery_is_stored_once_and_forgotten_after_keep() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(super::super::DB_FILE)).unwrap();
        let d = |id: Option<&str>, digest: &str| Delivery {
            forge: "github".into(),
            id: id.map(str::to_string),
            digest: digest.into(),
        };
        let c = || {
            vec![NewChange {
                who: "Ann".into(),
                ..Default::default()
            }]
        };
        let keep = 100.0;
        let first = db
            .add_delivery(d(Some("g1"), "aa"), c(), 1000.0, keep)
            .await;
        assert_eq!(first.unwrap(), DeliveryOutcome::Stored(vec![1]));
        // The same id with another body, the same body under another id or none.
        for (again, by_id) in [
            (d(Some("g1"), "bb"), true),
            (d(Some("g2"), "aa"), false),
            (d(None, "aa"), false),
        ] {
            let r = db.add_delivery(again, c(), 1010.0, keep).await.unwrap();
            assert_eq!(
                r,
                DeliveryOutcome::Repeat {
                    received_at: 1000.0,
                    by_id
                }
            );
        }
        // Another forge has its own ids; a delivery without an id is new by its body.
        let other = Delivery {
            forge: "gitea".into(),
            ..d(Some("g1"), "aa")
        };
        let r = db.add_delivery(other, c(), 1020.0, keep).await.unwrap();
        assert_eq!(r, DeliveryOutcome::Stored(vec![2]));
        let r = db.add_delivery(d(None, "cc"), vec![], 1030.0, keep).await;
        assert_eq!(r.unwrap(), DeliveryOutcome::Stored(vec![]));
        assert_eq!(db.changes(10, None).await.unwrap().len(), 2);
        assert_eq!(db.hook_deliveries().await.unwrap(), 3);
        // After `keep`, the first is forgotten (and pruned) and would be taken again.
        let r = db
            .add_delivery(d(Some("g1"), "aa"), c(), 1101.0, keep)
            .await;
        assert_eq!(r.unwrap(), DeliveryOutcome::Stored(vec![3]));
        assert_eq!(db.hook_deliveries().await.unwrap(), 3);
        let r = db
            .add_delivery(d(Some("zz"), "zz"), vec![], 2000.0, keep)
            .await;
        assert_eq!(r.unwrap(), DeliveryOutcome::Stored(vec![]));
        assert_eq!(db.hook_deliveries().await.unwrap(), 1);
    }
}
