//! What the status pages and the JSON API show of the master's activity, read in
//! a few statements however many builders there are: each builder's state (the
//! one place that says what `idle`, `building` and `offline` mean), the builds of
//! a waterfall page with their steps and log names, a builder's queue, its last
//! result for a badge, and the fingerprint of the slaves' connection state that
//! the pages' ETags carry (a slave's recent connections are
//! [`super::slaves`]').
//!
//! Every query is LIMITed or bounded by a window of build ids, so a page costs the
//! same with a million builds as with ten.
//!
//! Written once for both backends ([`super::sql`]); a list of ids or names goes
//! in as one JSON array parameter (`json_list`), so a statement is prepared
//! once whatever the list's length.

use std::collections::HashMap;

use serde::Serialize;

use super::builds::{BuildRow, BuilderActivity, LogRow, StepRow, TestCounts};
use super::sql::{Dialect, Row, Sql, SqlError};
use super::{Db, DbError};

/// Build ids one waterfall page looks back at most (see [`Db::waterfall`]).
pub const SCAN_WINDOW: i64 = 20_000;

/// What a builder is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuilderState {
    /// Running at least one build.
    Building,
    /// No build running and its slave connected: a request would start now.
    Idle,
    /// No build running and its slave not connected.
    Offline,
}

impl BuilderState {
    /// The rule: a running build makes a builder `building` whatever its slave
    /// does; otherwise its slave's connection decides.
    pub fn of(running: bool, slave_connected: bool) -> BuilderState {
        match (running, slave_connected) {
            (true, _) => BuilderState::Building,
            (false, true) => BuilderState::Idle,
            (false, false) => BuilderState::Offline,
        }
    }

    /// The word the pages and the JSON API show.
    pub fn as_str(self) -> &'static str {
        match self {
            BuilderState::Building => "building",
            BuilderState::Idle => "idle",
            BuilderState::Offline => "offline",
        }
    }
}

/// One builder's activity and state as the status pages and
/// `GET /api/v1/builders` show them (build rows' reason and text cut at 16384
/// characters).
#[derive(Debug, Clone, PartialEq)]
pub struct BuilderStatus {
    pub activity: BuilderActivity,
    pub state: BuilderState,
}

/// A build on the waterfall, with its steps.
#[derive(Debug, Clone, PartialEq)]
pub struct WaterfallBuild {
    /// The build's id: it grows with time, so it orders builds across builders.
    pub id: i64,
    pub row: BuildRow,
    /// Its steps, each with its logs.
    pub steps: Vec<StepRow>,
}

/// A BuildRequest waiting for a slave, as a builder's page lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedRequest {
    pub id: i64,
    pub submitted_at: f64,
    /// The reason of its BuildSet.
    pub reason: String,
}

/// A build's columns for [`build_row_at`]; reason and text cut at 16384
/// characters, so a row stored with a huge reason costs a page little.
const COLUMNS: &str = "b.id, b.builder, b.number, b.slave, b.started_at, b.finished_at, \
    b.result, substr(b.reason, 1, 16384), substr(b.text, 1, 16384), b.total_steps";

/// The [`BuildRow`] of [`COLUMNS`] after the id, from column `i` on.
pub(super) fn build_row_at(r: &Row, i: usize) -> Result<BuildRow, SqlError> {
    Ok(BuildRow {
        builder: r.string(i)?,
        number: r.i64(i + 1)?,
        slave: r.string(i + 2)?,
        started_at: real(r, i + 3)?,
        finished_at: r.opt_f64(i + 4)?,
        result: r.opt_string(i + 5)?,
        reason: r.string(i + 6)?,
        text: r.string(i + 7)?,
        total_steps: r.i64(i + 8)?,
    })
}

/// A number that is never NULL.
pub(super) fn real(r: &Row, i: usize) -> Result<f64, SqlError> {
    r.opt_f64(i)?.ok_or_else(|| SqlError::Column {
        index: i,
        expected: "a number",
        found: "NULL".into(),
    })
}

/// `SELECT` of the elements of the JSON array in parameter `?N`, one row each,
/// as BIGINT when `ints` (ids) or TEXT (names): SQLite's `json_each`,
/// PostgreSQL's `json_array_elements_text`. For `x IN (…)`.
pub(super) fn json_list(dialect: Dialect, param: u32, ints: bool) -> String {
    match (dialect, ints) {
        (Dialect::Sqlite, _) => format!("SELECT value FROM json_each(?{param})"),
        (Dialect::Postgres, false) => {
            format!("SELECT value FROM json_array_elements_text(CAST(CAST(?{param} AS TEXT) AS json)) AS j(value)")
        }
        (Dialect::Postgres, true) => format!(
            "SELECT CAST(value AS BIGINT) FROM json_array_elements_text(CAST(CAST(?{param} AS TEXT) AS json)) AS j(value)"
        ),
    }
}

/// `b.builder` in a condition the plan must not use the (builder, number)
/// index for: SQLite's `+b.builder` (walk build ids down instead); PostgreSQL
/// plans by its statistics (and has no unary `+` on text).
pub(super) fn builder_no_index(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "+b.builder",
        Dialect::Postgres => "b.builder",
    }
}

/// The SQLite library the master runs on (for `/about`).
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

/// The database the master runs on, named by its backend (`SQLite 3.x`,
/// `PostgreSQL 15.x … on …`), for `/about`.
pub fn database_version(db: &mut dyn Sql) -> Result<String, SqlError> {
    let sql = match db.dialect() {
        Dialect::Sqlite => "SELECT 'SQLite ' || sqlite_version()",
        Dialect::Postgres => "SELECT version()",
    };
    db.query_one(sql, &[])?.string(0)
}

impl Db {
    /// The state of each builder of `builders` (name, slave), in that order.
    pub async fn builder_status(
        &self,
        builders: Vec<(String, String)>,
    ) -> Result<Vec<BuilderStatus>, DbError> {
        self.read_sql(move |db| builder_status(db, &builders)).await
    }

    /// Changes whenever a slave connects or goes: the count of connections ever
    /// made and of slaves connected now (`"N.M"`), for the pages' ETags.
    pub async fn slaves_fingerprint(&self) -> Result<String, DbError> {
        self.read_sql(|db| slaves_fingerprint(db)).await
    }

    /// The newest builds (by id, which grows with time) of `builders`, below id
    /// `before`, on `branch` if given, with their steps and log names: at most
    /// `limit`, and only among the [`SCAN_WINDOW`] build ids below `before`, so a
    /// filter nothing matches does not walk the whole history. Also the id the
    /// next (older) page starts below, if there is one.
    pub async fn waterfall(
        &self,
        builders: Vec<String>,
        branch: Option<String>,
        before: i64,
        limit: u32,
    ) -> Result<(Vec<WaterfallBuild>, Option<i64>), DbError> {
        self.read_sql(move |db| waterfall(db, &builders, branch.as_deref(), before, limit))
            .await
    }

    /// A builder's BuildRequests waiting for a slave, best first, at most `limit`.
    pub async fn queued_requests(
        &self,
        builder: &str,
        limit: u32,
    ) -> Result<Vec<QueuedRequest>, DbError> {
        let builder = builder.to_string();
        self.read_sql(move |db| queued_requests(db, &builder, limit))
            .await
    }

    /// The result and number of a builder's newest finished build (a build that
    /// finished without a result reads as an empty result).
    pub async fn last_result(&self, builder: &str) -> Result<Option<(String, i64)>, DbError> {
        let builder = builder.to_string();
        self.read_sql(move |db| last_result(db, &builder)).await
    }

    /// The database the master runs on, named by its backend
    /// ([`database_version`]).
    pub async fn database_version(&self) -> Result<String, DbError> {
        self.read_sql(|db| database_version(db)).await
    }
}

// The queries, on either backend ([`super::sql`]).

/// Changes whenever a slave connects or goes: `"N.M"`, N the connections ever
/// made, M the slaves connected now.
pub fn slaves_fingerprint(db: &mut dyn Sql) -> Result<String, SqlError> {
    db.query_one(
        "SELECT CAST((SELECT coalesce(max(id), 0) FROM slave_connections) AS TEXT) || '.' ||
                CAST((SELECT CAST(coalesce(sum(connected), 0) AS BIGINT) FROM slaves) AS TEXT)",
        &[],
    )?
    .string(0)
}

/// A builder's BuildRequests waiting for a slave, best first, at most `limit`.
pub fn queued_requests(
    db: &mut dyn Sql,
    builder: &str,
    limit: u32,
) -> Result<Vec<QueuedRequest>, SqlError> {
    db.query(
        "SELECT r.id, r.submitted_at, bs.reason FROM buildrequests r
         JOIN buildsets bs ON bs.id = r.buildset
         WHERE r.builder = ?1 AND r.claimed_at IS NULL AND r.complete = 0
         ORDER BY r.priority DESC, r.id LIMIT ?2",
        &[builder.into(), i64::from(limit).into()],
    )?
    .iter()
    .map(|r| {
        Ok(QueuedRequest {
            id: r.i64(0)?,
            submitted_at: real(r, 1)?,
            reason: r.string(2)?,
        })
    })
    .collect()
}

/// The result and number of a builder's newest finished build (a build that
/// finished without a result reads as an empty result).
pub fn last_result(db: &mut dyn Sql, builder: &str) -> Result<Option<(String, i64)>, SqlError> {
    db.query_opt(
        "SELECT result, number FROM builds WHERE builder = ?1 AND finished_at IS NOT NULL
         ORDER BY number DESC LIMIT 1",
        &[builder.into()],
    )?
    .map(|r| Ok((r.opt_string(0)?.unwrap_or_default(), r.i64(1)?)))
    .transpose()
}

/// [`Db::builder_status`] in four statements for all builders at once, so a
/// waterfall of 500 builders stays cheap.
pub fn builder_status(
    db: &mut dyn Sql,
    builders: &[(String, String)],
) -> Result<Vec<BuilderStatus>, SqlError> {
    let names: Vec<&str> = builders.iter().map(|(n, _)| n.as_str()).collect();
    // Each builder's newest finished build, in one statement.
    let each = match db.dialect() {
        Dialect::Sqlite => "json_each(?1) j",
        Dialect::Postgres => {
            "json_array_elements_text(CAST(CAST(?1 AS TEXT) AS json)) WITH ORDINALITY AS j(value, key)"
        }
    };
    let list = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
    let last = db
        .query(
            &format!(
                "SELECT j.key, {COLUMNS} FROM {each}
                 LEFT JOIN builds b ON b.id = (
                     SELECT x.id FROM builds x WHERE x.builder = j.value
                        AND x.finished_at IS NOT NULL ORDER BY x.number DESC LIMIT 1)
                 ORDER BY j.key"
            ),
            &[list.into()],
        )?
        .iter()
        .map(|r| match r.opt_i64(1)? {
            Some(_) => build_row_at(r, 2).map(Some),
            None => Ok(None),
        })
        .collect::<Result<Vec<Option<BuildRow>>, SqlError>>()?;
    let mut running: HashMap<String, Vec<BuildRow>> = HashMap::new();
    for r in db.query(
        &format!("SELECT {COLUMNS} FROM builds b WHERE b.finished_at IS NULL ORDER BY b.number"),
        &[],
    )? {
        let r = build_row_at(&r, 1)?;
        running.entry(r.builder.clone()).or_default().push(r);
    }
    let pending = db
        .query(
            "SELECT builder, count(*) FROM buildrequests
             WHERE claimed_at IS NULL AND complete = 0 GROUP BY builder",
            &[],
        )?
        .iter()
        .map(|r| Ok((r.string(0)?, r.i64(1)?)))
        .collect::<Result<HashMap<String, i64>, SqlError>>()?;
    let connected = db
        .query("SELECT name FROM slaves WHERE connected != 0", &[])?
        .iter()
        .map(|r| r.string(0))
        .collect::<Result<Vec<String>, SqlError>>()?;
    Ok(builders
        .iter()
        .zip(last)
        .map(|((name, slave), last_build)| {
            let running = running.remove(name).unwrap_or_default();
            BuilderStatus {
                state: BuilderState::of(!running.is_empty(), connected.contains(slave)),
                activity: BuilderActivity {
                    pending: pending.get(name).copied().unwrap_or(0),
                    last_build,
                    running,
                    name: name.clone(),
                },
            }
        })
        .collect())
}

/// [`Db::waterfall`]. Few builders are read one by one through the (builder,
/// number) index; many by walking ids down.
pub fn waterfall(
    db: &mut dyn Sql,
    builders: &[String],
    branch: Option<&str>,
    before: i64,
    limit: u32,
) -> Result<(Vec<WaterfallBuild>, Option<i64>), SqlError> {
    let dialect = db.dialect();
    let names = serde_json::to_string(builders).unwrap_or_else(|_| "[]".into());
    let mut builds: Vec<WaterfallBuild> = Vec::new();
    let max_id = db
        .query_one("SELECT coalesce(max(id), 0) FROM builds", &[])?
        .i64(0)?;
    let lo = before
        .min(max_id.saturating_add(1))
        .saturating_sub(SCAN_WINDOW);
    // CAST: PostgreSQL learns no parameter's type from `IS NULL`.
    let branch_clause = "(CAST(?3 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM sourcestamps ss \
                         WHERE ss.id = b.sourcestamp AND ss.branch = ?3))";
    let read = |r: &Row| -> Result<WaterfallBuild, SqlError> {
        Ok(WaterfallBuild {
            id: r.i64(0)?,
            row: build_row_at(r, 1)?,
            steps: Vec::new(),
        })
    };
    let limit_v = i64::from(limit);
    if builders.len() <= 16 {
        let sql = format!(
            "SELECT {COLUMNS} FROM builds b WHERE b.builder = ?1 AND b.id < ?2 AND b.id >= ?5
               AND {branch_clause}
             ORDER BY b.number DESC LIMIT ?4"
        );
        for name in builders {
            let rows = db.query(
                &sql,
                &[
                    name.as_str().into(),
                    before.into(),
                    branch.into(),
                    limit_v.into(),
                    lo.into(),
                ],
            )?;
            for r in &rows {
                builds.push(read(r)?);
            }
        }
        builds.sort_by_key(|b| std::cmp::Reverse(b.id));
        builds.truncate(limit as usize);
    } else {
        // `+b.builder` on SQLite: walk ids down (the rowid), never the
        // (builder, number) index for every builder and a sort of their whole
        // history.
        let rows = db.query(
            &format!(
                "SELECT {COLUMNS} FROM builds b WHERE b.id < ?2 AND b.id >= ?5
                   AND {} IN ({}) AND {branch_clause}
                 ORDER BY b.id DESC LIMIT ?4",
                builder_no_index(dialect),
                json_list(dialect, 1, false)
            ),
            &[
                names.into(),
                before.into(),
                branch.into(),
                limit_v.into(),
                lo.into(),
            ],
        )?;
        for r in &rows {
            builds.push(read(r)?);
        }
    }
    // Every shown build's steps and their log names in one statement.
    let ids = serde_json::to_string(&builds.iter().map(|b| b.id).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into());
    let logs = match dialect {
        Dialect::Sqlite => {
            "(SELECT json_group_array(json_array(l.name, l.size, l.lines, l.complete))
              FROM logs l WHERE l.step = s.id)"
        }
        // In the order of SQLite's, which reads them through (step, name):
        // by the bytes of the name.
        Dialect::Postgres => {
            "(SELECT CAST(COALESCE(json_agg(json_build_array(l.name, l.size, l.lines, l.complete)
                                            ORDER BY l.name COLLATE \"C\"), CAST('[]' AS json)) AS TEXT)
              FROM logs l WHERE l.step = s.id)"
        }
    };
    let rows = db.query(
        &format!(
            "SELECT s.build, s.number, s.name, s.started_at, s.finished_at, s.result, s.text,
                    s.description, {logs},
                    s.warnings, s.tests_passed, s.tests_failed, s.tests_skipped,
                    s.tests_xfailed, s.tests_xpassed
             FROM steps s WHERE s.build IN ({})
             ORDER BY s.build, s.number",
            json_list(dialect, 1, true)
        ),
        &[ids.into()],
    )?;
    let mut by_build: HashMap<i64, Vec<StepRow>> = HashMap::new();
    for r in &rows {
        let logs: Vec<(String, u64, u64, i64)> = r
            .opt_string(8)?
            .and_then(|l| serde_json::from_str(&l).ok())
            .unwrap_or_default();
        let step = StepRow {
            number: r.i64(1)?,
            name: r.string(2)?,
            started_at: r.opt_f64(3)?,
            finished_at: r.opt_f64(4)?,
            result: r.opt_string(5)?,
            text: r.string(6)?,
            description: r.string(7)?,
            warnings: r.i64(9)?.max(0) as u64,
            counts: TestCounts::from_row(r, 10)?,
            logs: logs
                .into_iter()
                .map(|(name, size, lines, complete)| LogRow {
                    name,
                    size,
                    lines,
                    complete: complete != 0,
                })
                .collect(),
        };
        by_build.entry(r.i64(0)?).or_default().push(step);
    }
    for b in &mut builds {
        b.steps = by_build.remove(&b.id).unwrap_or_default();
    }
    let older = if builds.len() as u32 >= limit {
        builds.last().map(|b| b.id)
    } else if lo > 1 {
        Some(lo)
    } else {
        None
    };
    Ok((builds, older))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_build_wins_over_the_slave() {
        assert_eq!(BuilderState::of(true, false), BuilderState::Building);
        assert_eq!(BuilderState::of(true, true), BuilderState::Building);
        assert_eq!(BuilderState::of(false, true), BuilderState::Idle);
        assert_eq!(BuilderState::of(false, false), BuilderState::Offline);
        assert_eq!(
            serde_json::to_string(&BuilderState::Offline).unwrap(),
            "\"offline\""
        );
    }

    #[tokio::test]
    async fn states_of_builders_never_built_follow_their_slave() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(super::super::DB_FILE)).unwrap();
        db.slave_connected("s1", "p", Default::default(), 100)
            .await
            .unwrap();
        let st = db
            .builder_status(vec![
                ("a-s1".into(), "s1".into()),
                ("a-s2".into(), "s2".into()),
            ])
            .await
            .unwrap();
        let states: Vec<_> = st
            .iter()
            .map(|b| (b.activity.name.as_str(), b.state))
            .collect();
        assert_eq!(
            states,
            [
                ("a-s1", BuilderState::Idle),
                ("a-s2", BuilderState::Offline)
            ]
        );
        assert!(st
            .iter()
            .all(|b| b.activity.last_build.is_none() && b.activity.pending == 0));
        assert_eq!(db.slaves_fingerprint().await.unwrap(), "1.1");
        let (builds, older) = db
            .waterfall(vec!["a-s1".into()], None, i64::MAX, 10)
            .await
            .unwrap();
        assert!(builds.is_empty() && older.is_none());
        assert_eq!(db.last_result("a-s1").await.unwrap(), None);
        assert_eq!(db.recent_connections("s1", 50).await.unwrap().len(), 1);
    }
}
