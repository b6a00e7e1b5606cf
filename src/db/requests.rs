//! BuildSets and BuildRequests: what should be built, written before anything is
//! queued, claimed by a Build in the same transaction that creates the Build row.
//!
//! A BuildSet is one SourceStamp (branch, revision, Changes) to build on one or more
//! builders, with a reason and properties; it holds one BuildRequest per builder. A
//! request is *unclaimed* until a Build takes it ([`Db::claim_request`]), *complete*
//! once a Build of it finished with a result that stands. A Build interrupted by a
//! master restart or a lost slave gives its requests back ([`Db::unclaim_build`]) so
//! they run again.
//!
//! Claiming merges: requests for the same builder, branch and repository whose
//! SourceStamps carry Changes, queued while the builder was busy, are claimed by
//! one Build whose SourceStamp has all their Changes and the newest revision; each
//! completes with that Build's result. Requests without Changes (forced builds,
//! specific revisions, periodic builds) are never merged.
//!
//! Each query is a function on `&mut dyn` [`Sql`], written once
//! for SQLite and PostgreSQL ([`super::sql`]); the [`Db`] methods run them in
//! one transaction of the master's backend.

use std::collections::BTreeMap;

use serde::Serialize;

use super::builds::{write_step_start, StepStart};
use super::changes::NewChange;
use super::sql::{self, Dialect, Row, Sql, SqlError};
use super::{Db, DbError};

/// What to build: branch and revision (`None`: the builder's default branch, its
/// newest revision) and the Changes that went into it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewSourceStamp {
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub project: String,
    /// Ids of stored Changes.
    pub changes: Vec<i64>,
}

/// A BuildSet to submit: one BuildRequest per entry of `builders`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewBuildSet {
    pub reason: String,
    /// Who made it: `force`, a scheduler's name, …
    pub scheduler: String,
    /// Properties every Build of the set gets.
    pub properties: BTreeMap<String, String>,
    pub sourcestamp: NewSourceStamp,
    pub builders: Vec<String>,
    /// Higher runs first among a builder's unclaimed requests.
    pub priority: i64,
}

/// The Changes a scheduler's BuildSet carries, dropped from what the
/// scheduler waits on (its timer for the branch too) by the statement that
/// submits the BuildSet: both happen, or neither.
#[derive(Debug, Clone, PartialEq)]
pub struct Consume {
    pub scheduler: String,
    pub branch: String,
    pub changes: Vec<i64>,
    /// (scheduler, the last Change id it handled), recorded by the same
    /// statement (`last_change` only moves up): a BuildSet made straight from
    /// the Changes in hand (treeStable = 0, nothing waiting on the branch)
    /// never records them as waiting, so a restart must not handle them
    /// again; the schedulers that took none of them ride along.
    pub handled: Vec<(String, i64)>,
}

/// The ids a submitted BuildSet got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubmittedBuildSet {
    pub buildset_id: i64,
    /// (builder, BuildRequest id), in the order of `NewBuildSet::builders`.
    pub requests: Vec<(String, i64)>,
}

/// A BuildRequest just claimed, with the Build row created for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedBuild {
    pub build_id: i64,
    pub number: i64,
    pub builder: String,
    pub request_ids: Vec<i64>,
    pub buildset_id: i64,
    pub reason: String,
    pub sourcestamp_id: i64,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub properties: BTreeMap<String, String>,
    /// (step id, log id) of the first Step, when it was recorded with the claim
    /// ([`Db::claim_request_starting`]).
    pub first_step: Option<(i64, i64)>,
    /// A try job's patch, applied after the checkout ([`super::tryjobs`]).
    pub patch: Option<super::tryjobs::TryPatch>,
}

/// What the first Step's start is, made from the claimed Build inside the claim's
/// transaction (its number and properties come from the claim).
pub type FirstStep = Box<dyn FnOnce(&ClaimedBuild) -> StepStart + Send>;

/// One BuildRequest, as the JSON API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildRequestRow {
    pub id: i64,
    pub buildset: i64,
    pub builder: String,
    pub priority: i64,
    pub reason: String,
    pub submitted_at: f64,
    pub claimed_at: Option<f64>,
    pub complete: bool,
    pub complete_at: Option<f64>,
    /// `None` until complete.
    pub result: Option<String>,
    /// Numbers of the builds that ran (or run) it, oldest first.
    pub builds: Vec<i64>,
}

/// What completing a Build's requests completed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completed {
    pub requests: Vec<i64>,
    /// BuildSets whose last request this was, with their result.
    pub buildsets: Vec<(i64, String)>,
    /// BuildSets this build made fail before they finished (the manual's
    /// `firstFailure`): their result is known and recorded now.
    pub failed_buildsets: Vec<(i64, String)>,
}

/// One BuildSet, as `GET /api/v1/buildsets/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildSetRow {
    pub id: i64,
    pub reason: String,
    pub scheduler: String,
    pub submitted_at: f64,
    /// Whether every BuildRequest of it is complete.
    pub complete: bool,
    pub complete_at: Option<f64>,
    /// `failure`/`exception` as soon as one build fails (even while others run);
    /// otherwise `None` until complete, then the worst result.
    pub result: Option<String>,
    /// Its BuildRequests' ids, in builder order.
    pub requests: Vec<i64>,
}

/// Results ordered best to worst, to combine them (`skipped` counts as success).
/// As in Buildbot, `cancelled` (a build an operator stopped) is worst of all: a
/// BuildSet with a cancelled build did not run what it was asked to.
pub fn result_rank(result: &str) -> u8 {
    match result {
        "success" => 0,
        "skipped" => 1,
        "warnings" => 2,
        "failure" => 3,
        "cancelled" => 5,
        _ => 4,
    }
}

/// [`result_rank`] of the result in SQL expression `expr`, as an SQL
/// expression (the same on both backends).
pub(crate) fn rank_sql(expr: &str) -> String {
    let mut case = format!("CASE {expr}");
    for r in ["success", "skipped", "warnings", "failure", "cancelled"] {
        case.push_str(&format!(" WHEN '{r}' THEN {}", result_rank(r)));
    }
    case.push_str(&format!(" ELSE {} END", result_rank("exception")));
    case
}

/// A `REAL`/`DOUBLE PRECISION` column that is never NULL.
pub(crate) fn real(r: &Row, index: usize) -> Result<f64, SqlError> {
    r.opt_f64(index)?.ok_or(SqlError::Column {
        index,
        expected: "a number",
        found: "NULL".into(),
    })
}

/// The text value of `key` in the JSON object held in text column `column`, as
/// an SQL expression of `dialect` (properties hold strings only).
pub(crate) fn json_text(dialect: Dialect, column: &str, key: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("json_extract({column}, '$.{key}')"),
        Dialect::Postgres => format!("(CAST({column} AS jsonb) ->> '{key}')"),
    }
}

/// `a IS b` of SQLite (equal, or both NULL) as `dialect` spells it.
fn is_same(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "IS",
        Dialect::Postgres => "IS NOT DISTINCT FROM",
    }
}

fn insert_buildset(db: &mut dyn Sql, bs: &NewBuildSet, at: f64) -> Result<i64, SqlError> {
    let ss = &bs.sourcestamp;
    let ss_id = db
        .query_one(
            "INSERT INTO sourcestamps(branch, revision, repository, project)
             VALUES (?1, ?2, ?3, ?4) RETURNING id",
            &[
                ss.branch.clone().into(),
                ss.revision.clone().into(),
                ss.repository.as_str().into(),
                ss.project.as_str().into(),
            ],
        )?
        .i64(0)?;
    for c in &ss.changes {
        db.execute(
            "INSERT OR IGNORE INTO sourcestamp_changes(sourcestamp, change) VALUES (?1, ?2)",
            &[ss_id.into(), (*c).into()],
        )?;
    }
    let props = serde_json::to_string(&bs.properties).unwrap_or_else(|_| "{}".into());
    db.query_one(
        "INSERT INTO buildsets(reason, sourcestamp, scheduler, properties, submitted_at)
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        &[
            bs.reason.as_str().into(),
            ss_id.into(),
            bs.scheduler.as_str().into(),
            props.into(),
            at.into(),
        ],
    )?
    .i64(0)
}

/// Insert a BuildSet, its SourceStamp and one BuildRequest per builder (on
/// PostgreSQL in one statement, `insert_buildset_one`). Each request is
/// announced to the other masters ([`announce_queued`]) but those of the
/// builders in `here`: their slave is connected to the master that submits
/// them, and a slave is connected to one master at a time, so no other
/// master could claim them (the submitting master announces them itself if
/// the slave has gone when the statement is done, and a master that a slave
/// connects to looks for its builders' requests).
pub fn insert_buildset_requests(
    db: &mut dyn Sql,
    bs: &NewBuildSet,
    at: f64,
    here: &[String],
    consume: Option<&Consume>,
) -> Result<SubmittedBuildSet, SqlError> {
    if db.dialect() == Dialect::Postgres {
        return insert_buildset_one(db, bs, at, here, consume);
    }
    if let Some(c) = consume {
        super::schedulers::consume(db, &c.scheduler, &c.branch, &c.changes)?;
        for (s, id) in &c.handled {
            super::schedulers::set_last_change(db, s, *id)?;
        }
    }
    let buildset_id = insert_buildset(db, bs, at)?;
    let mut requests = Vec::with_capacity(bs.builders.len());
    for b in &bs.builders {
        let id = db
            .query_one(
                "INSERT INTO buildrequests(buildset, builder, priority, submitted_at)
                 VALUES (?1, ?2, ?3, ?4) RETURNING id",
                &[
                    buildset_id.into(),
                    b.as_str().into(),
                    bs.priority.into(),
                    at.into(),
                ],
            )?
            .i64(0)?;
        requests.push((b.clone(), id));
        if !here.contains(b) {
            announce_queued(db, b)?;
        }
    }
    Ok(SubmittedBuildSet {
        buildset_id,
        requests,
    })
}

/// [`insert_buildset_requests`] as one statement of PostgreSQL's, run
/// without a transaction around it ([`Db::write_sql_one`]): the SourceStamp,
/// its Changes, the BuildSet and its requests are inserted by data-modifying
/// CTEs (the lists of Changes and builders go in as JSON arrays, the
/// requests inserted in the builders' order), each request but those of
/// `here` announced ([`announce_queued`]), and the Changes of `consume`
/// dropped from their scheduler, by the same statement.
fn insert_buildset_one(
    db: &mut dyn Sql,
    bs: &NewBuildSet,
    at: f64,
    here: &[String],
    consume: Option<&Consume>,
) -> Result<SubmittedBuildSet, SqlError> {
    let (_, submitted) = buildset_statement(db, bs, at, here, consume, None)?;
    Ok(submitted.unwrap_or(SubmittedBuildSet {
        buildset_id: 0,
        requests: Vec::new(),
    }))
}

/// The statement of [`insert_buildset_one`]; with `first` (a Change and the
/// id it is expected to get), the Change stored first by the same statement
/// ([`super::changes::store_ctes`]) and the rest done only if it got that id
/// ([`insert_change_firing`]). The Change's id, and the BuildSet's ids if
/// it was inserted.
fn buildset_statement(
    db: &mut dyn Sql,
    bs: &NewBuildSet,
    at: f64,
    here: &[String],
    consume: Option<&Consume>,
    first: Option<(&NewChange, i64)>,
) -> Result<(Option<i64>, Option<SubmittedBuildSet>), SqlError> {
    let ss = &bs.sourcestamp;
    let props = serde_json::to_string(&bs.properties).unwrap_or_else(|_| "{}".into());
    let changes = serde_json::to_string(&ss.changes).unwrap_or_else(|_| "[]".into());
    let builders = serde_json::to_string(&bs.builders).unwrap_or_else(|_| "[]".into());
    let here = serde_json::to_string(here).unwrap_or_else(|_| "[]".into());
    // No scheduler (NULL) matches no row: nothing consumed.
    let (scheduler, branch, consumed, handled) = match consume {
        Some(c) => (
            sql::Value::from(c.scheduler.as_str()),
            sql::Value::from(c.branch.as_str()),
            serde_json::to_string(&c.changes).unwrap_or_else(|_| "[]".into()),
            super::schedulers::handled_json(&c.handled),
        ),
        None => (
            sql::Value::Null,
            sql::Value::Null,
            "[]".to_string(),
            "[]".to_string(),
        ),
    };
    let mut params: Vec<sql::Value> = vec![
        ss.branch.clone().into(),
        ss.revision.clone().into(),
        ss.repository.as_str().into(),
        ss.project.as_str().into(),
        changes.into(),
        bs.reason.as_str().into(),
        bs.scheduler.as_str().into(),
        props.into(),
        at.into(),
        bs.priority.into(),
        builders.into(),
        here.into(),
    ];
    // With the Change first (parameters 14 to 24, its expected id 25), `f`
    // has its id if that is the one expected, and the SourceStamp (which all
    // the rest follows) is inserted from `f`. Its scheduler then has nothing
    // waiting on the branch and no timer for it (`Running::fires_in_hand`):
    // only the last Change handled (13) is recorded.
    let (store, sourcestamp, lead, from, consume) = match first {
        Some((change, expected)) => {
            params.push(handled.into());
            params.extend(super::changes::change_params(Dialect::Postgres, change));
            params.push(expected.into());
            (
                format!(
                    "{}, f AS (SELECT c.id FROM c WHERE c.id = ?25),",
                    super::changes::store_ctes(14)
                ),
                "SELECT ?1, ?2, ?3, ?4 FROM f",
                "c.id, ",
                "c CROSS JOIN n LEFT JOIN bs ON true LEFT JOIN r ON true",
                super::schedulers::last_change_cte("cl", 13, Some("f")),
            )
        }
        None => {
            params.extend([scheduler, branch, consumed.into(), handled.into()]);
            (
                String::new(),
                "VALUES (?1, ?2, ?3, ?4)",
                "",
                "bs LEFT JOIN r ON true",
                super::schedulers::consume_ctes(13, 14, 15, 16),
            )
        }
    };
    let rows = db.query(
        &format!(
            "WITH {store}
             ss AS (INSERT INTO sourcestamps(branch, revision, repository, project)
                    {sourcestamp} RETURNING id),
             sc AS (INSERT INTO sourcestamp_changes(sourcestamp, change)
                    SELECT ss.id, CAST(c.value AS BIGINT)
                    FROM ss, jsonb_array_elements_text(CAST(CAST(?5 AS TEXT) AS jsonb)) c
                    ON CONFLICT DO NOTHING),
             bs AS (INSERT INTO buildsets(reason, sourcestamp, scheduler, properties,
                                          submitted_at)
                    SELECT ?6, ss.id, ?7, ?8, ?9 FROM ss RETURNING id),
             r AS (INSERT INTO buildrequests(buildset, builder, priority, submitted_at)
                   SELECT bs.id, u.b, ?10, ?9
                   FROM bs, jsonb_array_elements_text(CAST(CAST(?11 AS TEXT) AS jsonb))
                        WITH ORDINALITY AS u(b, i)
                   ORDER BY u.i RETURNING id, builder),
             {consume}
             SELECT {lead}bs.id, r.id, r.builder,
                    CASE WHEN r.id IS NOT NULL
                              AND r.builder NOT IN (SELECT jsonb_array_elements_text(
                                                      CAST(CAST(?12 AS TEXT) AS jsonb)))
                         THEN CAST(pg_notify('{QUEUED}', r.builder) AS TEXT) END
             FROM {from} ORDER BY r.id",
        ),
        &params,
    )?;
    let skip = usize::from(first.is_some());
    let mut change_id = None;
    let mut out: Option<SubmittedBuildSet> = None;
    for r in rows {
        if first.is_some() {
            change_id = Some(r.i64(0)?);
        }
        let Some(buildset_id) = r.opt_i64(skip)? else {
            continue;
        };
        let out = out.get_or_insert_with(|| SubmittedBuildSet {
            buildset_id,
            requests: Vec::new(),
        });
        if let Some(id) = r.opt_i64(skip + 1)? {
            out.requests.push((r.string(skip + 2)?, id));
        }
    }
    Ok((change_id, out))
}

/// Store `change` and, if it got id `expected`, submit `bs` (its BuildSet,
/// made by a scheduler from it alone, [`Consume`] recording the last Change
/// handled): the Change's id and, if submitted, the BuildSet's. Expecting
/// the id next after the last Change the schedulers handled, a BuildSet is
/// made only when no other Change came between (one stored by another
/// master: ids are drawn under the lock of `store_ctes`, so
/// a lower id is committed already); else the Change is only stored and
/// its schedulers handle it as any other.
///
/// On PostgreSQL one statement (`buildset_statement`); on SQLite one
/// transaction.
pub fn insert_change_firing(
    db: &mut dyn Sql,
    change: &NewChange,
    expected: i64,
    bs: &NewBuildSet,
    at: f64,
    here: &[String],
    consume: &Consume,
) -> Result<(i64, Option<SubmittedBuildSet>), SqlError> {
    if db.dialect() == Dialect::Postgres {
        let (id, submitted) =
            buildset_statement(db, bs, at, here, Some(consume), Some((change, expected)))?;
        let id = id.ok_or_else(|| {
            SqlError::Postgres("the statement storing a Change returned no row".into())
        })?;
        return Ok((id, submitted));
    }
    let id = super::changes::insert_change(db, change)?;
    if id != expected {
        return Ok((id, None));
    }
    let submitted = insert_buildset_requests(db, bs, at, here, Some(consume))?;
    Ok((id, Some(submitted)))
}

impl Db {
    /// Store a BuildSet, its SourceStamp and one BuildRequest per builder.
    pub async fn add_buildset(
        &self,
        bs: NewBuildSet,
        at: f64,
    ) -> Result<SubmittedBuildSet, DbError> {
        self.add_buildset_here(bs, at, Vec::new(), None).await
    }

    /// [`Db::add_buildset`] by the master whose slaves build the builders of
    /// `here`: their requests are not announced to the other masters (see
    /// [`insert_buildset_requests`]); with the Changes of `consume` dropped
    /// from their scheduler at once.
    pub async fn add_buildset_here(
        &self,
        bs: NewBuildSet,
        at: f64,
        here: Vec<String>,
        consume: Option<Consume>,
    ) -> Result<SubmittedBuildSet, DbError> {
        if self.dialect() == Dialect::Postgres {
            return self
                .write_sql_one(move |db| {
                    insert_buildset_requests(db, &bs, at, &here, consume.as_ref())
                })
                .await;
        }
        self.write_sql(move |db| insert_buildset_requests(db, &bs, at, &here, consume.as_ref()))
            .await
    }

    /// [`insert_change_firing`]: store a scheduler's Change and submit its
    /// BuildSet in one write, if the Change gets id `expected`.
    pub async fn add_change_firing(
        &self,
        change: NewChange,
        expected: i64,
        bs: NewBuildSet,
        at: f64,
        here: Vec<String>,
        consume: Consume,
    ) -> Result<(i64, Option<SubmittedBuildSet>), DbError> {
        let write = move |db: &mut dyn Sql| {
            insert_change_firing(db, &change, expected, &bs, at, &here, &consume)
        };
        if self.dialect() == Dialect::Postgres {
            return self.write_sql_one(write).await;
        }
        self.write_sql(write).await
    }

    /// Builders that have unclaimed, incomplete requests (read at start-up).
    pub async fn builders_with_requests(&self) -> Result<Vec<String>, DbError> {
        self.read_sql(|db| builders_waiting(db)).await
    }

    /// Claim the builder's best unclaimed request (highest priority, then oldest)
    /// and create its Build row (numbered by the builder's counter,
    /// `number_sql`) at once: one transaction on SQLite, on PostgreSQL one
    /// statement (a request that may merge: one transaction). `None` when
    /// nothing waits.
    pub async fn claim_request(
        &self,
        builder: &str,
        slave: &str,
        total_steps: i64,
        at: f64,
    ) -> Result<Option<ClaimedBuild>, DbError> {
        let builder = builder.to_string();
        let slave = slave.to_string();
        if self.dialect() == Dialect::Postgres {
            return self
                .claim_on_pg(builder, slave, total_steps, at, None)
                .await;
        }
        let master = self.master_name().to_string();
        self.write_sql(move |db| claim(db, &builder, &slave, &master, total_steps, at))
            .await
    }

    /// [`Db::claim_request`], and the Build's first Step started in the same
    /// transaction: one commit fewer between a slave's Builds.
    pub async fn claim_request_starting(
        &self,
        builder: &str,
        slave: &str,
        total_steps: i64,
        at: f64,
        first: FirstStep,
    ) -> Result<Option<ClaimedBuild>, DbError> {
        let builder = builder.to_string();
        let slave = slave.to_string();
        if self.dialect() == Dialect::Postgres {
            return self
                .claim_on_pg(builder, slave, total_steps, at, Some(first))
                .await;
        }
        let master = self.master_name().to_string();
        self.write_sql(move |db| {
            claim_starting(db, &builder, &slave, &master, total_steps, at, first)
        })
        .await
    }

    /// Give a Build's incomplete requests back to the queue (the Build was
    /// interrupted through no fault of its own).
    pub async fn unclaim_build(&self, build_id: i64) -> Result<Vec<i64>, DbError> {
        self.write_sql(move |db| unclaim(db, build_id)).await
    }

    /// One BuildSet with its requests.
    pub async fn buildset(&self, id: i64) -> Result<Option<BuildSetRow>, DbError> {
        self.read_sql(move |db| buildset(db, id)).await
    }

    /// One BuildRequest with the numbers of its builds.
    pub async fn buildrequest(&self, id: i64) -> Result<Option<BuildRequestRow>, DbError> {
        self.read_sql(move |db| request_row(db, id)).await
    }

    /// The unclaimed requests of a builder, best first (what waits).
    pub async fn pending_requests(&self, builder: &str) -> Result<Vec<BuildRequestRow>, DbError> {
        let builder = builder.to_string();
        self.read_sql(move |db| pending(db, &builder)).await
    }
}

// The queries, on either backend ([`super::sql`]).

/// Builders that have unclaimed, incomplete requests, by name.
pub fn builders_waiting(db: &mut dyn Sql) -> Result<Vec<String>, SqlError> {
    db.query(
        "SELECT DISTINCT builder FROM buildrequests
         WHERE claimed_at IS NULL AND complete = 0 ORDER BY builder",
        &[],
    )?
    .iter()
    .map(|r| r.string(0))
    .collect()
}

/// One BuildSet with its requests.
pub fn buildset(db: &mut dyn Sql, id: i64) -> Result<Option<BuildSetRow>, SqlError> {
    let Some(r) = db.query_opt(
        "SELECT id, reason, scheduler, submitted_at, complete, complete_at, result
         FROM buildsets WHERE id = ?1",
        &[id.into()],
    )?
    else {
        return Ok(None);
    };
    let requests = db
        .query(
            "SELECT id FROM buildrequests WHERE buildset = ?1 ORDER BY id",
            &[id.into()],
        )?
        .iter()
        .map(|r| r.i64(0))
        .collect::<Result<_, _>>()?;
    Ok(Some(BuildSetRow {
        id: r.i64(0)?,
        reason: r.string(1)?,
        scheduler: r.string(2)?,
        submitted_at: real(&r, 3)?,
        complete: r.bool(4)?,
        complete_at: r.opt_f64(5)?,
        result: r.opt_string(6)?,
        requests,
    }))
}

/// The unclaimed requests of a builder, best first.
pub fn pending(db: &mut dyn Sql, builder: &str) -> Result<Vec<BuildRequestRow>, SqlError> {
    let ids = db.query(
        "SELECT id FROM buildrequests
         WHERE builder = ?1 AND claimed_at IS NULL AND complete = 0
         ORDER BY priority DESC, id",
        &[builder.into()],
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = request_row(db, id.i64(0)?)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// The builder's next request to build, (request id, BuildSet id): its best
/// unclaimed one, highest priority first, then oldest (the partial index
/// `buildrequests_unclaimed` answers it).
///
/// The claim's one read of the queue. One master claims now: a SQLite write
/// transaction is exclusive, and so is the single master on PostgreSQL. For
/// several masters on one PostgreSQL this is the statement to lock
/// (`FOR UPDATE SKIP LOCKED`): [`claim`] marks the row only while it is still
/// unclaimed and gives up otherwise.
pub fn next_request(db: &mut dyn Sql, builder: &str) -> Result<Option<(i64, i64)>, SqlError> {
    let sql = format!(
        "SELECT id, buildset FROM buildrequests
         WHERE builder = ?1 AND claimed_at IS NULL AND complete = 0
         ORDER BY priority DESC, id LIMIT 1{}",
        skip_locked(db.dialect(), "")
    );
    db.query_opt(&sql, &[builder.into()])?
        .map(|r| Ok((r.i64(0)?, r.i64(1)?)))
        .transpose()
}

/// The channel on which masters sharing a PostgreSQL database announce
/// BuildRequests queued (payload: the builder's name), so that the master
/// whose slave can build them claims them at once, whichever master queued
/// them.
pub const QUEUED: &str = "autobot_queued";

/// Tell every master sharing the database (when the transaction commits) that
/// `builder` has a BuildRequest waiting; nothing on SQLite (one master).
pub fn announce_queued(db: &mut dyn Sql, builder: &str) -> Result<(), SqlError> {
    if db.dialect() == Dialect::Postgres {
        db.execute(
            &format!("SELECT pg_notify('{QUEUED}', ?1)"),
            &[builder.into()],
        )?;
    }
    Ok(())
}

/// Where several masters share a PostgreSQL database, the rows a claim reads
/// from the queue are locked as it reads them, and rows another master's
/// claim holds are passed over (not waited for): two masters never claim the
/// same BuildRequest, and neither waits for the other. `of`: the alias of
/// the queue's table in a join (empty: the only table). SQLite's write
/// transactions are exclusive already.
fn skip_locked(dialect: Dialect, of: &str) -> String {
    match (dialect, of) {
        (Dialect::Sqlite, _) => String::new(),
        (Dialect::Postgres, "") => " FOR UPDATE SKIP LOCKED".to_string(),
        (Dialect::Postgres, of) => format!(" FOR UPDATE OF {of} SKIP LOCKED"),
    }
}

/// Mark request `id` claimed by `master` at `at`, if nobody claimed (or
/// completed) it meanwhile; whether it was.
fn mark_claimed(db: &mut dyn Sql, id: i64, master: &str, at: f64) -> Result<bool, SqlError> {
    Ok(db.execute(
        "UPDATE buildrequests SET claimed_at = ?2, claimed_by = ?3
         WHERE id = ?1 AND claimed_at IS NULL AND complete = 0",
        &[id.into(), at.into(), master.into()],
    )? == 1)
}

/// The statement that gives `builder` (`?1`) its next Build number: the
/// counter of migration 15 bumped, never below the highest Build kept + 1
/// (the first Build of a builder, or Builds written without the counter).
/// Several masters numbering Builds of one builder at once take turns on its
/// row (locked until their transactions end), so no two get the same number;
/// a number stays given after retention deleted its Build. The same on both
/// backends; `from`: a condition (SQL) for numbering at all (`TRUE`: always).
fn number_sql(dialect: Dialect, from: &str) -> String {
    let greatest = match dialect {
        Dialect::Sqlite => "max",
        Dialect::Postgres => "GREATEST",
    };
    format!(
        "INSERT INTO builder_numbers(builder, last)
         SELECT ?1, n FROM (SELECT coalesce(max(number), 0) + 1 AS n FROM builds
                            WHERE builder = ?1) AS highest
         WHERE {from}
         ON CONFLICT(builder) DO UPDATE
            SET last = {greatest}(builder_numbers.last + 1, excluded.last)
         RETURNING last"
    )
}

/// The next Build number of `builder` (`number_sql`).
fn next_number(db: &mut dyn Sql, builder: &str) -> Result<i64, SqlError> {
    db.query_one(&number_sql(db.dialect(), "TRUE"), &[builder.into()])?
        .i64(0)
}

/// Claim the builder's best unclaimed request ([`next_request`]), merge the
/// queued requests that can share its Build, and create the Build row
/// (numbered by the builder's counter, `number_sql`), all in the caller's
/// transaction. `None` when
/// nothing waits. On PostgreSQL in two statements (`claim_pg`).
pub fn claim(
    db: &mut dyn Sql,
    builder: &str,
    slave: &str,
    master: &str,
    total_steps: i64,
    at: f64,
) -> Result<Option<ClaimedBuild>, SqlError> {
    if db.dialect() == Dialect::Postgres {
        return claim_pg(db, builder, slave, master, total_steps, at, None);
    }
    let Some((request_id, buildset_id)) = next_request(db, builder)? else {
        return Ok(None);
    };
    if !mark_claimed(db, request_id, master, at)? {
        return Ok(None);
    }
    let r = db.query_one(
        "SELECT bs.reason, bs.sourcestamp, bs.properties, ss.branch, ss.revision
         FROM buildsets bs JOIN sourcestamps ss ON ss.id = bs.sourcestamp
         WHERE bs.id = ?1",
        &[buildset_id.into()],
    )?;
    let reason = r.string(0)?;
    let mut sourcestamp_id = r.i64(1)?;
    let props = r.string(2)?;
    let branch = r.opt_string(3)?;
    let mut revision = r.opt_string(4)?;
    let mut request_ids = vec![request_id];
    let merged = merge_requests(db, builder, request_id, sourcestamp_id, master, at)?;
    if let Some((ss, rev, ids)) = merged {
        sourcestamp_id = ss;
        revision = rev;
        request_ids.extend(ids);
    }
    let number = next_number(db, builder)?;
    let build_id = db
        .query_one(
            "INSERT INTO builds(builder, number, slave, sourcestamp, started_at, reason,
                                total_steps, master)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            &[
                builder.into(),
                number.into(),
                slave.into(),
                sourcestamp_id.into(),
                at.into(),
                reason.as_str().into(),
                total_steps.into(),
                master.into(),
            ],
        )?
        .i64(0)?;
    let patch = super::tryjobs::patch_of(db, sourcestamp_id)?;
    for id in &request_ids {
        db.execute(
            "INSERT INTO build_requests(build, request) VALUES (?1, ?2)",
            &[build_id.into(), (*id).into()],
        )?;
    }
    Ok(Some(ClaimedBuild {
        build_id,
        number,
        builder: builder.to_string(),
        request_ids,
        buildset_id,
        reason,
        sourcestamp_id,
        branch,
        revision,
        properties: serde_json::from_str(&props).unwrap_or_default(),
        first_step: None,
        patch,
    }))
}

/// [`claim`] (and with `first`, [`claim_starting`]) in two statements of
/// PostgreSQL's (in the caller's transaction), besides merging:
///
/// 1. the builder's next request ([`next_request`], locked, passed over when
///    another master's claim holds it) marked claimed, its BuildSet and
///    SourceStamp read (with whether it carries Changes, and its try patch),
///    the Build's number taken (`number_sql`) and its id drawn from the
///    `builds` sequence;
/// 2. the Build row, its `build_requests` rows and, with `first`, the first
///    Step's properties, row and `stdio` log inserted.
///
/// Merging ([`merge_requests`]) runs between them, only for a request with
/// Changes.
fn claim_pg(
    db: &mut dyn Sql,
    builder: &str,
    slave: &str,
    master: &str,
    total_steps: i64,
    at: f64,
    first: Option<FirstStep>,
) -> Result<Option<ClaimedBuild>, SqlError> {
    let Some(r) = db.query_opt(
        &format!(
            "WITH next AS (SELECT id FROM buildrequests
                           WHERE builder = ?1 AND claimed_at IS NULL AND complete = 0
                           ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED),
             claimed AS (UPDATE buildrequests r SET claimed_at = ?2, claimed_by = ?3
                         FROM next
                         WHERE r.id = next.id AND r.claimed_at IS NULL AND r.complete = 0
                         RETURNING r.id, r.buildset),
             num AS ({number})
             SELECT c.id, c.buildset, bs.reason, bs.sourcestamp, bs.properties, ss.branch,
                    ss.revision,
                    EXISTS (SELECT 1 FROM sourcestamp_changes sc WHERE sc.sourcestamp = ss.id),
                    p.level, p.patch, p.author, p.comment,
                    num.last, nextval(pg_get_serial_sequence('builds', 'id'))
             FROM claimed c
             JOIN buildsets bs ON bs.id = c.buildset
             JOIN sourcestamps ss ON ss.id = bs.sourcestamp
             CROSS JOIN num
             LEFT JOIN sourcestamp_patches p ON p.sourcestamp = ss.id",
            number = number_sql(Dialect::Postgres, "EXISTS (SELECT 1 FROM claimed)")
        ),
        &[builder.into(), at.into(), master.into()],
    )?
    else {
        return Ok(None);
    };
    let request_id = r.i64(0)?;
    let buildset_id = r.i64(1)?;
    let reason = r.string(2)?;
    let mut sourcestamp_id = r.i64(3)?;
    let props = r.string(4)?;
    let branch = r.opt_string(5)?;
    let mut revision = r.opt_string(6)?;
    let mut patch = patch_at(&r, 8)?;
    let number = r.i64(12)?;
    let build_id = r.i64(13)?;
    let mut request_ids = vec![request_id];
    if r.bool(7)? {
        let merged = merge_others(db, builder, request_id, sourcestamp_id, master, at)?;
        if let Some((ss, rev, ids)) = merged {
            sourcestamp_id = ss;
            revision = rev;
            request_ids.extend(ids);
            patch = super::tryjobs::patch_of(db, sourcestamp_id)?;
        }
    }
    let mut claimed = ClaimedBuild {
        build_id,
        number,
        builder: builder.to_string(),
        request_ids,
        buildset_id,
        reason,
        sourcestamp_id,
        branch,
        revision,
        properties: serde_json::from_str(&props).unwrap_or_default(),
        first_step: None,
        patch,
    };
    let ids = serde_json::to_string(&claimed.request_ids).unwrap_or_else(|_| "[]".into());
    let mut params: Vec<super::sql::Value> = vec![
        build_id.into(),
        builder.into(),
        number.into(),
        slave.into(),
        sourcestamp_id.into(),
        at.into(),
        claimed.reason.as_str().into(),
        total_steps.into(),
        master.into(),
        ids.into(),
    ];
    let mut sql = String::from(
        "WITH b AS (INSERT INTO builds(id, builder, number, slave, sourcestamp, started_at,
                                       reason, total_steps, master)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id),
         br AS (INSERT INTO build_requests(build, request)
                SELECT b.id, CAST(r.value AS BIGINT)
                FROM b, jsonb_array_elements_text(CAST(CAST(?10 AS TEXT) AS jsonb)) r)",
    );
    let Some(first) = first else {
        sql.push_str(" SELECT id FROM b");
        db.query_one(&sql, &params)?;
        return Ok(Some(claimed));
    };
    let start = first(&claimed);
    sql.push_str(", ");
    sql.push_str(&step_start_ctes(&mut params, &start));
    sql.push_str(" SELECT step, id FROM lg");
    let r = db.query_one(&sql, &params)?;
    claimed.first_step = Some((r.i64(0)?, r.i64(1)?));
    Ok(Some(claimed))
}

/// The CTEs (PostgreSQL) that start Step `start` of the Build whose id is
/// parameter `?1`: its properties ([`super::builds::set_properties`]), its
/// row and its `stdio` log, the last CTE `lg` returning (step id, log id).
/// Their parameters are appended to `params`.
pub(crate) fn step_start_ctes(params: &mut Vec<super::sql::Value>, start: &StepStart) -> String {
    let mut ctes = Vec::new();
    for (i, chunk) in super::builds::property_chunks(&start.props)
        .into_iter()
        .enumerate()
    {
        let mut rows = Vec::with_capacity(chunk.len());
        for (name, value, source) in chunk {
            let n = params.len();
            rows.push(format!("(?1, ?{}, ?{}, ?{})", n + 1, n + 2, n + 3));
            params.extend([
                name.as_str().into(),
                value.as_str().into(),
                source.as_str().into(),
            ]);
        }
        ctes.push(format!(
            "p{i} AS (INSERT INTO build_properties(build, name, value, source) VALUES {}
                  ON CONFLICT(build, name) DO UPDATE SET value = excluded.value,
                     source = excluded.source)",
            rows.join(", ")
        ));
    }
    let n = params.len();
    ctes.push(format!(
        "st AS (INSERT INTO steps(build, number, name, started_at, description)
                VALUES (?1, ?{}, ?{}, ?{}, ?{}) RETURNING id),
         lg AS (INSERT INTO logs(step, name, path) SELECT st.id, 'stdio', ?{} FROM st
                RETURNING step, id)",
        n + 1,
        n + 2,
        n + 3,
        n + 4,
        n + 5
    ));
    params.extend([
        start.number.into(),
        start.name.as_str().into(),
        start.at.into(),
        start.description.as_str().into(),
        start.log_path.as_str().into(),
    ]);
    ctes.join(", ")
}

/// The try patch a claim's row carries in its four columns from `at`
/// (`sourcestamp_patches`' level, patch, author, comment, joined on the left:
/// a NULL level is no patch).
fn patch_at(r: &Row, at: usize) -> Result<Option<super::tryjobs::TryPatch>, SqlError> {
    let Some(level) = r.opt_i64(at)? else {
        return Ok(None);
    };
    Ok(Some(super::tryjobs::TryPatch {
        level: u32::try_from(level).unwrap_or(0),
        diff: r.opt_blob(at + 1)?.unwrap_or_default(),
        author: r.string(at + 2)?,
        comment: r.string(at + 3)?,
    }))
}

/// What `claim_quick` did.
enum Quick {
    /// Nothing waits.
    Nothing,
    /// The Build is claimed and its row written (committed).
    Claimed(Box<ClaimedBuild>),
    /// The next request carries Changes and others wait (it may merge), or
    /// it was taken meanwhile: claim in a transaction (`claim_pg`).
    Transaction,
}

/// The claim of a request that cannot merge, as one statement of
/// PostgreSQL's run without a transaction ([`Db::write_sql_one`]): the
/// builder's next request locked (passed over when another master's claim
/// holds it) and, unless it could merge (its SourceStamp carries Changes and
/// other requests of the builder wait), marked claimed, its Build numbered
/// (`number_sql`) and its Build and `build_requests` rows inserted, all by
/// data-modifying CTEs: the claim is all there or not at all. A request that
/// could merge is left as it was ([`Quick::Transaction`]). (A request queued
/// after the statement began is not merged, as with a claim in a transaction
/// that began before it.)
fn claim_quick(
    db: &mut dyn Sql,
    builder: &str,
    slave: &str,
    master: &str,
    total_steps: i64,
    at: f64,
) -> Result<Quick, SqlError> {
    let Some(r) = db.query_opt(
        &format!(
            "WITH next AS (SELECT id, buildset FROM buildrequests
                           WHERE builder = ?1 AND claimed_at IS NULL AND complete = 0
                           ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED),
             info AS (SELECT n.id, n.buildset, bs.reason, bs.sourcestamp, bs.properties,
                             ss.branch, ss.revision,
                             EXISTS (SELECT 1 FROM sourcestamp_changes sc
                                     WHERE sc.sourcestamp = ss.id)
                             AND EXISTS (SELECT 1 FROM buildrequests o
                                         WHERE o.builder = ?1 AND o.claimed_at IS NULL
                                           AND o.complete = 0 AND o.id <> n.id) AS mergeable
                      FROM next n
                      JOIN buildsets bs ON bs.id = n.buildset
                      JOIN sourcestamps ss ON ss.id = bs.sourcestamp),
             claimed AS (UPDATE buildrequests r SET claimed_at = ?2, claimed_by = ?3
                         FROM info
                         WHERE r.id = info.id AND NOT info.mergeable
                           AND r.claimed_at IS NULL AND r.complete = 0
                         RETURNING r.id),
             num AS ({number}),
             b AS (INSERT INTO builds(builder, number, slave, sourcestamp, started_at, reason,
                                      total_steps, master)
                   SELECT ?1, num.last, ?4, info.sourcestamp, ?2, info.reason, ?5, ?3
                   FROM info, num RETURNING id, number),
             br AS (INSERT INTO build_requests(build, request)
                    SELECT b.id, claimed.id FROM b, claimed)
             SELECT info.id, info.buildset, info.reason, info.sourcestamp, info.properties,
                    info.branch, info.revision, p.level, p.patch, p.author, p.comment,
                    b.number, b.id
             FROM info
             LEFT JOIN b ON true
             LEFT JOIN sourcestamp_patches p ON p.sourcestamp = info.sourcestamp",
            number = number_sql(Dialect::Postgres, "EXISTS (SELECT 1 FROM claimed)")
        ),
        &[
            builder.into(),
            at.into(),
            master.into(),
            slave.into(),
            total_steps.into(),
        ],
    )?
    else {
        return Ok(Quick::Nothing);
    };
    let (Some(number), Some(build_id)) = (r.opt_i64(11)?, r.opt_i64(12)?) else {
        return Ok(Quick::Transaction);
    };
    let patch = patch_at(&r, 7)?;
    Ok(Quick::Claimed(Box::new(ClaimedBuild {
        build_id,
        number,
        builder: builder.to_string(),
        request_ids: vec![r.i64(0)?],
        buildset_id: r.i64(1)?,
        reason: r.string(2)?,
        sourcestamp_id: r.i64(3)?,
        branch: r.opt_string(5)?,
        revision: r.opt_string(6)?,
        properties: serde_json::from_str(&r.string(4)?).unwrap_or_default(),
        first_step: None,
        patch,
    })))
}

/// The first Step of a Build claimed by `claim_quick` started, as one
/// statement of PostgreSQL's (`step_start_ctes`); (step id, log id).
fn first_step_one(
    db: &mut dyn Sql,
    build_id: i64,
    start: &StepStart,
) -> Result<(i64, i64), SqlError> {
    let mut params = vec![build_id.into()];
    let ctes = step_start_ctes(&mut params, start);
    let r = db.query_one(&format!("WITH {ctes} SELECT step, id FROM lg"), &params)?;
    Ok((r.i64(0)?, r.i64(1)?))
}

impl Db {
    /// [`Db::claim_request`] (with `first`, [`Db::claim_request_starting`])
    /// on PostgreSQL: a request that cannot merge is claimed by one statement
    /// (`claim_quick`) and its first Step started by another
    /// (`first_step_one`), neither in a transaction (four round trips
    /// fewer than `claim_pg`'s); one that may merge, in a transaction. A
    /// first Step that could not be recorded is left to the engine
    /// (`first_step` `None`), which starts it as any other Step.
    async fn claim_on_pg(
        &self,
        builder: String,
        slave: String,
        total_steps: i64,
        at: f64,
        first: Option<FirstStep>,
    ) -> Result<Option<ClaimedBuild>, DbError> {
        let master = self.master_name().to_string();
        let quick = {
            let (builder, slave, master) = (builder.clone(), slave.clone(), master.clone());
            self.write_sql_one(move |db| {
                claim_quick(db, &builder, &slave, &master, total_steps, at)
            })
            .await?
        };
        let mut claimed = match quick {
            Quick::Nothing => return Ok(None),
            Quick::Transaction => {
                return self
                    .write_sql(move |db| {
                        claim_pg(db, &builder, &slave, &master, total_steps, at, first)
                    })
                    .await
            }
            Quick::Claimed(c) => *c,
        };
        if let Some(first) = first {
            let start = first(&claimed);
            let build_id = claimed.build_id;
            match self
                .write_sql_one(move |db| first_step_one(db, build_id, &start))
                .await
            {
                Ok(ids) => claimed.first_step = Some(ids),
                Err(e) => tracing::warn!(
                    "{builder} build {}: its first Step not recorded with its claim ({e}); \
                     it is recorded when it starts",
                    claimed.number
                ),
            }
        }
        Ok(Some(claimed))
    }
}

/// [`claim`], and the Build's first Step (made by `first` from the claim)
/// started in the same transaction.
pub fn claim_starting(
    db: &mut dyn Sql,
    builder: &str,
    slave: &str,
    master: &str,
    total_steps: i64,
    at: f64,
    first: FirstStep,
) -> Result<Option<ClaimedBuild>, SqlError> {
    if db.dialect() == Dialect::Postgres {
        return claim_pg(db, builder, slave, master, total_steps, at, Some(first));
    }
    let Some(mut claimed) = claim(db, builder, slave, master, total_steps, at)? else {
        return Ok(None);
    };
    let start = first(&claimed);
    claimed.first_step = Some(write_step_start(db, claimed.build_id, &start)?);
    Ok(Some(claimed))
}

/// What merging gave a Build: its SourceStamp id, revision, and the ids of the
/// requests merged into it besides the one claimed.
type Merged = (i64, Option<String>, Vec<i64>);

/// Merge the builder's other unclaimed requests that can share a Build with
/// `request_id` (claimed just now, its SourceStamp `sourcestamp`): requests whose
/// SourceStamps carry Changes, on the same branch and repository. A request whose
/// SourceStamp carries no Changes (a forced build, a specific revision, a periodic
/// build) is never merged. The merged requests are claimed; the Build gets a new
/// SourceStamp with every Change and the newest revision. `None` when nothing merges.
fn merge_requests(
    db: &mut dyn Sql,
    builder: &str,
    request_id: i64,
    sourcestamp: i64,
    master: &str,
    at: f64,
) -> Result<Option<Merged>, SqlError> {
    let changes = db
        .query_one(
            "SELECT count(*) FROM sourcestamp_changes WHERE sourcestamp = ?1",
            &[sourcestamp.into()],
        )?
        .i64(0)?;
    if changes == 0 {
        return Ok(None);
    }
    merge_others(db, builder, request_id, sourcestamp, master, at)
}

/// [`merge_requests`] for a claimed request whose SourceStamp carries
/// Changes.
fn merge_others(
    db: &mut dyn Sql,
    builder: &str,
    request_id: i64,
    sourcestamp: i64,
    master: &str,
    at: f64,
) -> Result<Option<Merged>, SqlError> {
    // (request, sourcestamp) of the mergeable others, oldest first.
    let others: Vec<(i64, i64)> = db
        .query(
            &format!(
                "SELECT r.id, bs.sourcestamp
                 FROM buildrequests r
                 JOIN buildsets bs ON bs.id = r.buildset
                 JOIN sourcestamps ss ON ss.id = bs.sourcestamp
                 JOIN sourcestamps mine ON mine.id = ?3
                 WHERE r.builder = ?1 AND r.id != ?2 AND r.claimed_at IS NULL
                   AND r.complete = 0
                   AND ss.branch {same} mine.branch AND ss.repository = mine.repository
                   AND EXISTS (SELECT 1 FROM sourcestamp_changes sc
                               WHERE sc.sourcestamp = ss.id)
                 ORDER BY r.id{lock}",
                same = is_same(db.dialect()),
                lock = skip_locked(db.dialect(), "r")
            ),
            &[builder.into(), request_id.into(), sourcestamp.into()],
        )?
        .iter()
        .map(|r| Ok((r.i64(0)?, r.i64(1)?)))
        .collect::<Result<_, SqlError>>()?;
    if others.is_empty() {
        return Ok(None);
    }
    // The newest request's revision (its Changes are the newest).
    let mut all: Vec<(i64, i64)> = vec![(request_id, sourcestamp)];
    all.extend(others.iter().copied());
    let newest_ss = all
        .iter()
        .max_by_key(|(id, _)| *id)
        .map(|(_, ss)| *ss)
        .unwrap_or(sourcestamp);
    let r = db.query_one(
        "INSERT INTO sourcestamps(branch, revision, repository, project)
         SELECT mine.branch, newest.revision, mine.repository, mine.project
         FROM sourcestamps mine, sourcestamps newest WHERE mine.id = ?1 AND newest.id = ?2
         RETURNING id, revision",
        &[sourcestamp.into(), newest_ss.into()],
    )?;
    let (merged_ss, revision) = (r.i64(0)?, r.opt_string(1)?);
    for (id, ss) in &all {
        db.execute(
            "INSERT OR IGNORE INTO sourcestamp_changes(sourcestamp, change)
             SELECT CAST(?1 AS BIGINT), change FROM sourcestamp_changes WHERE sourcestamp = ?2",
            &[merged_ss.into(), (*ss).into()],
        )?;
        if *id != request_id {
            db.execute(
                "UPDATE buildrequests SET claimed_at = ?2, claimed_by = ?3 WHERE id = ?1",
                &[(*id).into(), at.into(), master.into()],
            )?;
        }
    }
    tracing::info!(
        "{builder}: BuildRequest {request_id} merged with {} queued request(s)",
        others.len()
    );
    Ok(Some((
        merged_ss,
        revision,
        others.into_iter().map(|(id, _)| id).collect(),
    )))
}

/// Give a Build's incomplete requests back to the queue; their ids.
pub fn unclaim(db: &mut dyn Sql, build_id: i64) -> Result<Vec<i64>, SqlError> {
    let ids = db
        .query(
            "SELECT r.id FROM build_requests br JOIN buildrequests r ON r.id = br.request
             WHERE br.build = ?1 AND r.complete = 0",
            &[build_id.into()],
        )?
        .iter()
        .map(|r| r.i64(0))
        .collect::<Result<Vec<i64>, _>>()?;
    for id in &ids {
        let builder = db.query_opt(
            "UPDATE buildrequests SET claimed_at = NULL, claimed_by = NULL WHERE id = ?1
             RETURNING builder",
            &[(*id).into()],
        )?;
        if let Some(b) = builder {
            announce_queued(db, &b.string(0)?)?;
        }
    }
    Ok(ids)
}

/// Mark a Build's requests complete with `result`, and each BuildSet whose
/// requests are now all complete (its result the worst of theirs).
pub fn complete_build_requests(
    db: &mut dyn Sql,
    build_id: i64,
    result: &str,
    at: f64,
) -> Result<Completed, SqlError> {
    let rows = db
        .query(
            "SELECT r.id, r.buildset FROM build_requests br JOIN buildrequests r
             ON r.id = br.request WHERE br.build = ?1 AND r.complete = 0",
            &[build_id.into()],
        )?
        .iter()
        .map(|r| Ok((r.i64(0)?, r.i64(1)?)))
        .collect::<Result<Vec<(i64, i64)>, SqlError>>()?;
    complete_requests(db, rows, result, at)
}

/// Mark requests `rows` (id, BuildSet) complete with `result`, and each
/// BuildSet whose requests are now all complete.
fn complete_requests(
    db: &mut dyn Sql,
    rows: Vec<(i64, i64)>,
    result: &str,
    at: f64,
) -> Result<Completed, SqlError> {
    let mut done = Completed::default();
    for (id, buildset) in rows {
        db.execute(
            "UPDATE buildrequests SET complete = 1, complete_at = ?2, result = ?3 WHERE id = ?1",
            &[id.into(), at.into(), result.into()],
        )?;
        done.requests.push(id);
        if result_rank(result) > result_rank("warnings") {
            // The BuildSet fails as soon as one of its builds does.
            let changed = db.execute(
                "UPDATE buildsets SET result = ?2 WHERE id = ?1 AND result IS NULL",
                &[buildset.into(), result.into()],
            )?;
            if changed > 0 {
                done.failed_buildsets.push((buildset, result.to_string()));
            }
        }
        let results = db
            .query(
                "SELECT CASE WHEN complete = 1 THEN result ELSE NULL END
                 FROM buildrequests WHERE buildset = ?1",
                &[buildset.into()],
            )?
            .iter()
            .map(|r| r.opt_string(0))
            .collect::<Result<Vec<Option<String>>, _>>()?;
        if results.iter().all(Option::is_some) {
            let worst = results
                .iter()
                .flatten()
                .max_by_key(|r| result_rank(r))
                .cloned()
                .unwrap_or_else(|| "success".into());
            // The worst result: an earlier failure recorded it already, or worse.
            let changed = db.execute(
                "UPDATE buildsets SET complete = 1, complete_at = ?2, result = ?3
                 WHERE id = ?1 AND complete = 0",
                &[buildset.into(), at.into(), worst.as_str().into()],
            )?;
            if changed > 0 {
                done.buildsets.push((buildset, worst));
            }
        }
    }
    Ok(done)
}

/// What a pull request's new head supersedes ([`Db::superseded_pull`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Superseded {
    /// Running Builds (builder, number).
    pub running: Vec<(String, i64)>,
    /// Unclaimed BuildRequests, now complete with result `cancelled`.
    pub cancelled: Completed,
}

impl Db {
    /// A new head `head` of pull request `number` of `repository`: the running
    /// Builds of its other heads (on `builders`) to stop, and its unclaimed
    /// BuildRequests of other heads, marked complete (`cancelled`) here.
    pub async fn superseded_pull(
        &self,
        builders: Vec<String>,
        repository: String,
        number: String,
        head: String,
        at: f64,
    ) -> Result<Superseded, DbError> {
        self.write_sql(move |db| supersede(db, &builders, &repository, &number, &head, at))
            .await
    }
}

/// [`Db::superseded_pull`]: the running Builds of pull request `number`'s other
/// heads (on `builders`), by builder and number; its unclaimed requests of
/// other heads completed as `cancelled`.
pub fn supersede(
    db: &mut dyn Sql,
    builders: &[String],
    repository: &str,
    number: &str,
    head: &str,
    at: f64,
) -> Result<Superseded, SqlError> {
    let of_pull = format!(
        "{} = ?1 AND ss.repository = ?2 AND coalesce(ss.revision, '') != ?3",
        json_text(db.dialect(), "bs.properties", "pr_number")
    );
    let params = [number.into(), repository.into(), head.into()];
    let running = db
        .query(
            &format!(
                "SELECT DISTINCT b.builder, b.number FROM builds b
                 JOIN build_requests br ON br.build = b.id
                 JOIN buildrequests r ON r.id = br.request
                 JOIN buildsets bs ON bs.id = r.buildset
                 JOIN sourcestamps ss ON ss.id = bs.sourcestamp
                 WHERE b.finished_at IS NULL AND {of_pull}"
            ),
            &params,
        )?
        .iter()
        .map(|r| Ok((r.string(0)?, r.i64(1)?)))
        .collect::<Result<Vec<(String, i64)>, SqlError>>()?;
    let queued = db
        .query(
            &format!(
                "SELECT r.id, r.buildset, r.builder FROM buildrequests r
                 JOIN buildsets bs ON bs.id = r.buildset
                 JOIN sourcestamps ss ON ss.id = bs.sourcestamp
                 WHERE r.complete = 0 AND r.claimed_at IS NULL AND {of_pull}"
            ),
            &params,
        )?
        .iter()
        .map(|r| Ok((r.i64(0)?, r.i64(1)?, r.string(2)?)))
        .collect::<Result<Vec<(i64, i64, String)>, SqlError>>()?;
    // In id order on either backend, sorted here: an `ORDER BY r.id` would
    // make SQLite scan every request instead of its unclaimed ones.
    let mut queued: Vec<(i64, i64)> = queued
        .into_iter()
        .filter(|(_, _, b)| builders.contains(b))
        .map(|(id, bs, _)| (id, bs))
        .collect();
    queued.sort_unstable();
    let cancelled = complete_requests(db, queued, "cancelled", at)?;
    let mut running: Vec<(String, i64)> = running
        .into_iter()
        .filter(|(b, _)| builders.contains(b))
        .collect();
    running.sort_unstable();
    Ok(Superseded { running, cancelled })
}

/// One BuildRequest with the numbers of its builds.
pub fn request_row(db: &mut dyn Sql, id: i64) -> Result<Option<BuildRequestRow>, SqlError> {
    let numbers = match db.dialect() {
        Dialect::Sqlite => "NULL",
        Dialect::Postgres => {
            "(SELECT string_agg(CAST(b.number AS TEXT), ',' ORDER BY b.number)
              FROM build_requests br JOIN builds b ON b.id = br.build
              WHERE br.request = r.id)"
        }
    };
    let Some(r) = db.query_opt(
        &format!(
            "SELECT r.id, r.buildset, r.builder, r.priority, bs.reason, r.submitted_at,
                    r.claimed_at, r.complete, r.complete_at, r.result, {numbers}
             FROM buildrequests r JOIN buildsets bs ON bs.id = r.buildset WHERE r.id = ?1"
        ),
        &[id.into()],
    )?
    else {
        return Ok(None);
    };
    let builds = if db.dialect() == Dialect::Postgres {
        // PostgreSQL's answer carries the numbers (one round trip fewer).
        let numbers = r.opt_string(10)?.unwrap_or_default();
        numbers
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| {
                n.parse().map_err(|_| SqlError::Column {
                    index: 10,
                    expected: "Build numbers",
                    found: numbers.clone(),
                })
            })
            .collect::<Result<_, _>>()?
    } else {
        db.query(
            "SELECT b.number FROM build_requests br JOIN builds b ON b.id = br.build
             WHERE br.request = ?1 ORDER BY b.number",
            &[id.into()],
        )?
        .iter()
        .map(|r| r.i64(0))
        .collect::<Result<_, _>>()?
    };
    Ok(Some(BuildRequestRow {
        id: r.i64(0)?,
        buildset: r.i64(1)?,
        builder: r.string(2)?,
        priority: r.i64(3)?,
        reason: r.string(4)?,
        submitted_at: real(&r, 5)?,
        claimed_at: r.opt_f64(6)?,
        complete: r.bool(7)?,
        complete_at: r.opt_f64(8)?,
        result: r.opt_string(9)?,
        builds,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::changes::NewChange;

    #[tokio::test]
    async fn queued_requests_with_changes_merge_into_one_build() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        let ids = db
            .add_changes(
                ["a", "b", "c"]
                    .iter()
                    .map(|w| NewChange {
                        who: w.to_string(),
                        revision: Some(format!("rev-{w}")),
                        ..Default::default()
                    })
                    .collect(),
            )
            .await
            .unwrap();
        let bs = |changes: Vec<i64>, revision: &str, scheduler: &str, branch: &str| NewBuildSet {
            reason: "r".into(),
            scheduler: scheduler.into(),
            sourcestamp: NewSourceStamp {
                branch: Some(branch.into()),
                revision: Some(revision.into()),
                repository: "/r".into(),
                changes,
                ..Default::default()
            },
            builders: vec!["b".into()],
            ..Default::default()
        };
        let first = db
            .add_buildset(bs(vec![ids[0]], "rev-a", "s", "main"), 1.0)
            .await
            .unwrap();
        let forced = db
            .add_buildset(bs(vec![], "pinned", "force", "main"), 2.0)
            .await
            .unwrap();
        let second = db
            .add_buildset(bs(vec![ids[1], ids[2]], "rev-c", "s", "main"), 3.0)
            .await
            .unwrap();
        let other = db
            .add_buildset(bs(vec![ids[2]], "rev-c", "s", "dev"), 4.0)
            .await
            .unwrap();
        let c = db.claim_request("b", "s1", 1, 5.0).await.unwrap().unwrap();
        assert_eq!(
            c.request_ids,
            vec![first.requests[0].1, second.requests[0].1]
        );
        assert_eq!(c.revision.as_deref(), Some("rev-c"));
        let built = db.build("b", c.number).await.unwrap().unwrap();
        let who: Vec<&str> = built.changes.iter().map(|c| c.who.as_str()).collect();
        assert_eq!(who, ["a", "b", "c"]);
        // The forced build with a revision and the other branch build alone.
        let f = db.claim_request("b", "s1", 1, 6.0).await.unwrap().unwrap();
        assert_eq!(f.request_ids, vec![forced.requests[0].1]);
        let o = db.claim_request("b", "s1", 1, 7.0).await.unwrap().unwrap();
        assert_eq!(o.request_ids, vec![other.requests[0].1]);
        // Every merged request completes with the build's result, and each BuildSet.
        let done = db
            .finish_build(c.build_id, "failure", "failed", false, 8.0, None)
            .await
            .unwrap();
        assert_eq!(done.requests.len(), 2);
        assert_eq!(
            done.buildsets,
            vec![
                (first.buildset_id, "failure".to_string()),
                (second.buildset_id, "failure".to_string())
            ]
        );
    }
}
