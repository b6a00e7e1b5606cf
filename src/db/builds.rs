//! Builds, their Steps, step logs and build properties: the writes the build engine
//! makes as a Build runs, the recovery after a crash, and the queries the JSON API
//! reads (builders' activity, a builder's builds newest first, one build in full,
//! a log's file).
//!
//! A Build row exists from the moment its request is claimed; `result` is NULL
//! until it finishes. Step rows are created when a step starts. A log's bytes are
//! in a file under the master directory (see `logstore`); its row holds the
//! relative path, size and line count, updated while it grows.
//!
//! Each query is a function on `&mut dyn` [`Sql`], written once for SQLite and
//! PostgreSQL ([`super::sql`]); the [`Db`] methods run them in one transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::changes::{sourcestamp_changes, ChangeRow};
use super::requests::{complete_build_requests, unclaim, Completed};
use super::sql::{Row, Sql, SqlError};
use super::{Db, DbError};

/// One Build's summary row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildRow {
    pub builder: String,
    pub number: i64,
    pub slave: String,
    pub started_at: f64,
    pub finished_at: Option<f64>,
    /// `success`, `warnings`, `failure`, `skipped`, `exception`; `None` while running.
    pub result: Option<String>,
    pub reason: String,
    /// What the build says of itself (`failed compile`, `interrupted: …`).
    pub text: String,
    /// Steps the factory has; the progress denominator.
    pub total_steps: i64,
}

/// One log of a step, as listed with the step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRow {
    pub name: String,
    pub size: u64,
    pub lines: u64,
    /// Whether the log is finished (it still grows while false).
    pub complete: bool,
}

/// One Step of a Build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRow {
    pub number: i64,
    pub name: String,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub result: Option<String>,
    /// For people (`test 3 passed, 1 xfailed`); the numbers are in `counts` and
    /// `warnings`.
    pub text: String,
    pub description: String,
    /// The warnings its log parser counted (0 when none, or not counted).
    pub warnings: u64,
    /// Its tests, one number per outcome; `None` when no test runner's output was
    /// recognised (or the step ended before these were stored).
    pub counts: Option<TestCounts>,
    pub logs: Vec<LogRow>,
}

/// A step's tests as its test runner counted them, one column per outcome: an
/// expected failure is `xfailed` and an unexpected success `xpassed`, never a
/// pass, failure or skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub xfailed: u64,
    pub xpassed: u64,
}

impl TestCounts {
    /// From the five `tests_*` columns starting at `first`; `None` when they are
    /// NULL.
    pub(crate) fn from_row(r: &Row, first: usize) -> Result<Option<TestCounts>, SqlError> {
        let col = |i: usize| -> Result<Option<u64>, SqlError> {
            Ok(r.opt_i64(first + i)?.map(|n| n.max(0) as u64))
        };
        let Some(passed) = col(0)? else {
            return Ok(None);
        };
        Ok(Some(TestCounts {
            passed,
            failed: col(1)?.unwrap_or(0),
            skipped: col(2)?.unwrap_or(0),
            xfailed: col(3)?.unwrap_or(0),
            xpassed: col(4)?.unwrap_or(0),
        }))
    }
}

/// One Build in full, for `GET /api/v1/builders/{name}/builds/{number}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildDetail {
    #[serde(flatten)]
    pub build: BuildRow,
    pub branch: Option<String>,
    pub revision: Option<String>,
    /// name → [value, source], as Buildbot's API shows properties.
    pub properties: BTreeMap<String, (String, String)>,
    pub changes: Vec<ChangeRow>,
    pub steps: Vec<StepRow>,
    /// The BuildRequests this build runs.
    pub requests: Vec<i64>,
    /// Seconds left, from the step times of the builder's last successful build;
    /// `None` when finished or unknown.
    pub eta: Option<f64>,
}

/// A builder's activity, for `GET /api/v1/builders`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuilderActivity {
    pub name: String,
    /// The newest finished build.
    pub last_build: Option<BuildRow>,
    /// Builds running now, oldest first.
    pub running: Vec<BuildRow>,
    /// BuildRequests waiting for a slave.
    pub pending: i64,
}

/// Where a log's bytes are, for streaming it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogFile {
    /// Absolute path of the raw bytes (stdout, stderr and headers interleaved).
    pub path: PathBuf,
    /// Bytes known to the database (the file may be longer while it grows).
    pub size: u64,
    pub lines: u64,
    pub complete: bool,
    /// The file was deleted by `logHorizon` (the rows stay).
    pub deleted: bool,
    /// When its Step started (Unix seconds), the origin of the log page's
    /// per-line elapsed times.
    pub step_started: Option<f64>,
}

const BUILD_COLUMNS: &str = "b.builder, b.number, b.slave, b.started_at, b.finished_at, \
     b.result, b.reason, b.text, b.total_steps";

fn build_row(r: &Row) -> Result<BuildRow, SqlError> {
    Ok(BuildRow {
        builder: r.string(0)?,
        number: r.i64(1)?,
        slave: r.string(2)?,
        started_at: real(r, 3)?,
        finished_at: r.opt_f64(4)?,
        result: r.opt_string(5)?,
        reason: r.string(6)?,
        text: r.string(7)?,
        total_steps: r.i64(8)?,
    })
}

/// A number that is not NULL (a `REAL`/`DOUBLE PRECISION` column; an integer
/// widens).
pub(crate) fn real(r: &Row, index: usize) -> Result<f64, SqlError> {
    r.opt_f64(index)?.ok_or(SqlError::Column {
        index,
        expected: "a number",
        found: "NULL".into(),
    })
}

/// A u64 count as the schema's signed integer.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Db {
    /// Record properties of a running build (`source`: who set them).
    pub async fn set_build_properties(
        &self,
        build_id: i64,
        props: Vec<(String, String, String)>,
    ) -> Result<(), DbError> {
        self.write_sql(move |db| set_properties(db, build_id, &props))
            .await
    }

    /// A step starts: its row, its `stdio` log row and the build properties
    /// [`StepStart`] carries; with `previous`, the end of the step before it, in
    /// the same transaction. Returns (step id, log id).
    pub async fn start_step(
        &self,
        build_id: i64,
        start: StepStart,
        previous: Option<StepFinish>,
    ) -> Result<(i64, i64), DbError> {
        if self.dialect() == super::sql::Dialect::Postgres {
            return self
                .write_sql_one(move |db| self::start_step(db, build_id, &start, previous.as_ref()))
                .await;
        }
        self.write_sql(move |db| self::start_step(db, build_id, &start, previous.as_ref()))
            .await
    }

    /// Another log of a running step (a `logfiles` entry, `interrupt`); its id.
    pub async fn add_log(&self, step_id: i64, name: &str, path: &str) -> Result<i64, DbError> {
        let (name, path) = (name.to_string(), path.to_string());
        self.write_sql(move |db| self::add_log(db, step_id, &name, &path))
            .await
    }

    /// What a running step shows changes (`waiting for lock cpu`, then its own
    /// description again once it has its locks).
    pub async fn set_step_description(
        &self,
        step_id: i64,
        description: &str,
    ) -> Result<(), DbError> {
        let description = description.to_string();
        self.write_sql(move |db| self::set_step_description(db, step_id, &description))
            .await
    }

    /// A log grew (or is complete).
    pub async fn update_log(
        &self,
        log_id: i64,
        size: u64,
        lines: u64,
        complete: bool,
    ) -> Result<(), DbError> {
        self.write_sql(move |db| self::update_log(db, log_id, size, lines, complete))
            .await
    }

    /// A step ended, with its final log sizes `(log id, size, lines)`.
    pub async fn finish_step(
        &self,
        step_id: i64,
        result: &str,
        text: &str,
        logs: Vec<(i64, u64, u64)>,
        at: f64,
    ) -> Result<(), DbError> {
        let f = StepFinish {
            step_id,
            result: result.to_string(),
            text: text.to_string(),
            warnings: 0,
            counts: None,
            logs,
            at,
        };
        self.write_sql(move |db| self::finish_step(db, &f)).await
    }

    /// A build ended. `requeue`: give its requests back to the queue (interrupted
    /// by a master restart or a lost slave); otherwise they are complete with the
    /// build's result.
    pub async fn finish_build(
        &self,
        build_id: i64,
        result: &str,
        text: &str,
        requeue: bool,
        at: f64,
        last_step: Option<StepFinish>,
    ) -> Result<Completed, DbError> {
        let (result, text) = (result.to_string(), text.to_string());
        if !requeue && self.dialect() == super::sql::Dialect::Postgres {
            let (mut done, open) = self
                .write_sql_one(move |db| {
                    finish_build_one(db, build_id, &result, &text, at, last_step.as_ref())
                })
                .await?;
            if !open.is_empty() {
                let found = self
                    .write_sql_one(move |db| complete_open_buildsets(db, &open, at))
                    .await?;
                done.buildsets.extend(found);
            }
            return Ok(done);
        }
        self.write_sql(move |db| {
            self::finish_build(
                db,
                build_id,
                &result,
                &text,
                requeue,
                at,
                last_step.as_ref(),
            )
        })
        .await
    }

    /// At start-up, before any build runs: every build left running by a master
    /// that died is finished as `exception` with `text`, its open steps too, its
    /// logs' sizes taken from their files; every claimed, incomplete request is
    /// given back to the queue. Returns the (builder, number) of those builds.
    pub async fn recover_interrupted(
        &self,
        text: &str,
        at: f64,
    ) -> Result<Vec<(String, i64)>, DbError> {
        let text = text.to_string();
        let basedir = self.data_dir();
        let me = self.master_name().to_string();
        let sqlite = self.dialect() == super::sql::Dialect::Sqlite;
        self.write_sql(move |db| {
            let whose = if sqlite {
                Whose::Every
            } else {
                // The slaves of this master before its restart are gone
                // (on SQLite, `slaves_reset` says so of every slave).
                super::slaves::master_gone(db, &me, "the master stopped", at as i64)?;
                Whose::Mine(&me)
            };
            recover(db, &basedir, whose, &text, at)
        })
        .await
    }

    /// The running Builds of `master`, found dead by this master, finished as
    /// `exception` with `text`, and the requests it had claimed given back to
    /// the queue (for whichever master has a free slave). Their (builder,
    /// number).
    pub async fn recover_dead_master(
        &self,
        master: &str,
        text: &str,
        at: f64,
    ) -> Result<Vec<(String, i64)>, DbError> {
        let (master, text) = (master.to_string(), text.to_string());
        let basedir = self.data_dir();
        self.write_sql(move |db| {
            let builds = recover(db, &basedir, Whose::Dead(&master), &text, at)?;
            super::slaves::master_gone(db, &master, "its master died", at as i64)?;
            Ok(builds)
        })
        .await
    }

    /// The newest builds of a builder, newest first: at most `limit`, numbered
    /// below `before` when given.
    pub async fn builds(
        &self,
        builder: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<BuildRow>, DbError> {
        let builder = builder.to_string();
        self.read_sql(move |db| newest(db, &builder, limit, before))
            .await
    }

    /// One build with its steps, logs, properties, Changes and ETA.
    pub async fn build(&self, builder: &str, number: i64) -> Result<Option<BuildDetail>, DbError> {
        let builder = builder.to_string();
        let now = crate::calendar::now_f64();
        self.read_sql(move |db| detail(db, &builder, number, now))
            .await
    }

    /// Activity of each named builder (configured builders without any build show
    /// as idle).
    pub async fn builder_activity(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<BuilderActivity>, DbError> {
        self.read_sql(move |db| names.iter().map(|n| activity(db, n)).collect())
            .await
    }

    /// Where a log's bytes are. `step` is a step's name, or its number.
    pub async fn log_file(
        &self,
        builder: &str,
        number: i64,
        step: &str,
        log: &str,
    ) -> Result<Option<LogFile>, DbError> {
        let (builder, step, log) = (builder.to_string(), step.to_string(), log.to_string());
        let basedir = self.data_dir();
        self.read_sql(move |db| self::log_file(db, &basedir, &builder, number, &step, &log))
            .await
    }

    /// The (builder, number) of builds not finished (none after recovery unless
    /// the engine runs them).
    pub async fn running_builds(&self) -> Result<Vec<BuildRow>, DbError> {
        self.read_sql(|db| running(db)).await
    }
}

/// The end of a step, as [`Db::finish_step`] records it; also written together
/// with the next step's start ([`Db::start_step`]) or the build's end
/// ([`Db::finish_build`]), to save a transaction.
#[derive(Debug, Clone)]
pub struct StepFinish {
    pub step_id: i64,
    pub result: String,
    pub text: String,
    /// The warnings its log parser counted.
    pub warnings: u64,
    /// Its tests, when a test runner's output was recognised.
    pub counts: Option<TestCounts>,
    /// `(log id, size, lines)` of each of its logs.
    pub logs: Vec<(i64, u64, u64)>,
    pub at: f64,
}

/// A Step's start as recorded ([`Db::start_step`], or with the claim of its
/// Build for the first Step, [`Db::claim_request_starting`]).
#[derive(Debug, Clone)]
pub struct StepStart {
    pub number: i64,
    pub name: String,
    /// What it shows while it runs.
    pub description: String,
    /// Its `stdio` log, relative to the master directory.
    pub log_path: String,
    pub at: f64,
    /// Properties of the Build set by then, `(name, value, source)`.
    pub props: Vec<(String, String, String)>,
}

// The queries, on either backend ([`super::sql`]): what the methods above run.

/// `props`, the last value of each name only (one statement may not set a
/// row twice), in chunks of [`PROPERTY_ROWS`]: the rows of each `INSERT` of
/// [`set_properties`].
pub(crate) fn property_chunks(
    props: &[(String, String, String)],
) -> Vec<Vec<&(String, String, String)>> {
    let mut last: Vec<&(String, String, String)> = Vec::with_capacity(props.len());
    for p in props.iter().rev() {
        if !last.iter().any(|q| q.0 == p.0) {
            last.push(p);
        }
    }
    last.reverse();
    last.chunks(PROPERTY_ROWS).map(<[_]>::to_vec).collect()
}

/// Rows of one `INSERT` of [`set_properties`] at most.
const PROPERTY_ROWS: usize = 64;

/// Record properties of a running build (`source`: who set them); a property
/// set again takes the new value (the last one, when `props` names it twice).
/// One statement for up to 64 properties: on PostgreSQL each
/// statement is a round trip to the server, and a build sets several at once.
pub fn set_properties(
    db: &mut dyn Sql,
    build_id: i64,
    props: &[(String, String, String)],
) -> Result<(), SqlError> {
    for chunk in property_chunks(props) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(?1, ?{}, ?{}, ?{})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
            .collect();
        let mut params: Vec<super::sql::Value> = Vec::with_capacity(1 + 3 * chunk.len());
        params.push(build_id.into());
        for (name, value, source) in chunk {
            params.push(name.as_str().into());
            params.push(value.as_str().into());
            params.push(source.as_str().into());
        }
        db.execute(
            &format!(
                "INSERT INTO build_properties(build, name, value, source) VALUES {}
                 ON CONFLICT(build, name) DO UPDATE SET value = excluded.value,
                    source = excluded.source",
                rows.join(", ")
            ),
            &params,
        )?;
    }
    Ok(())
}

/// A Step starts (after `previous`, the end of the step before it, when
/// given): its row, its `stdio` log and the properties it carries (on
/// PostgreSQL in one statement, `start_step_one`). Returns (step id, log
/// id).
pub fn start_step(
    db: &mut dyn Sql,
    build_id: i64,
    s: &StepStart,
    previous: Option<&StepFinish>,
) -> Result<(i64, i64), SqlError> {
    if db.dialect() == super::sql::Dialect::Postgres {
        return start_step_one(db, build_id, s, previous);
    }
    if let Some(f) = previous {
        finish_step(db, f)?;
    }
    set_properties(db, build_id, &s.props)?;
    let step_id = db
        .query_one(
            "INSERT INTO steps(build, number, name, started_at, description)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            &[
                build_id.into(),
                s.number.into(),
                s.name.as_str().into(),
                s.at.into(),
                s.description.as_str().into(),
            ],
        )?
        .i64(0)?;
    let log_id = add_log(db, step_id, "stdio", &s.log_path)?;
    Ok((step_id, log_id))
}

/// A Step's start alone; (step id, log id). The claim of a Build records its
/// first Step with it ([`super::requests`]).
pub fn write_step_start(
    db: &mut dyn Sql,
    build_id: i64,
    s: &StepStart,
) -> Result<(i64, i64), SqlError> {
    start_step(db, build_id, s, None)
}

/// Another log of a running step; its id.
pub fn add_log(db: &mut dyn Sql, step_id: i64, name: &str, path: &str) -> Result<i64, SqlError> {
    db.query_one(
        "INSERT INTO logs(step, name, path) VALUES (?1, ?2, ?3) RETURNING id",
        &[step_id.into(), name.into(), path.into()],
    )?
    .i64(0)
}

/// What a running step shows.
pub fn set_step_description(
    db: &mut dyn Sql,
    step_id: i64,
    description: &str,
) -> Result<(), SqlError> {
    db.execute(
        "UPDATE steps SET description = ?2 WHERE id = ?1",
        &[step_id.into(), description.into()],
    )?;
    Ok(())
}

/// A log grew (or is complete).
pub fn update_log(
    db: &mut dyn Sql,
    log_id: i64,
    size: u64,
    lines: u64,
    complete: bool,
) -> Result<(), SqlError> {
    db.execute(
        "UPDATE logs SET size = ?2, lines = ?3, complete = ?4 WHERE id = ?1",
        &[
            log_id.into(),
            count(size).into(),
            count(lines).into(),
            complete.into(),
        ],
    )?;
    Ok(())
}

/// The ten values of a Step's end, in the order both backends' statements
/// number them: the step's id, then finished_at, result, text, warnings and
/// the five test counts.
fn step_finish_values(f: &StepFinish) -> [super::sql::Value; 10] {
    let c = f.counts;
    [
        f.step_id.into(),
        f.at.into(),
        f.result.as_str().into(),
        f.text.as_str().into(),
        count(f.warnings).into(),
        c.map(|c| count(c.passed)).into(),
        c.map(|c| count(c.failed)).into(),
        c.map(|c| count(c.skipped)).into(),
        c.map(|c| count(c.xfailed)).into(),
        c.map(|c| count(c.xpassed)).into(),
    ]
}

/// A step ended: its result, counts and final log sizes.
pub fn finish_step(db: &mut dyn Sql, f: &StepFinish) -> Result<(), SqlError> {
    db.execute(
        "UPDATE steps SET finished_at = ?2, result = ?3, text = ?4, warnings = ?5,
             tests_passed = ?6, tests_failed = ?7, tests_skipped = ?8,
             tests_xfailed = ?9, tests_xpassed = ?10
         WHERE id = ?1",
        &step_finish_values(f),
    )?;
    for (id, size, lines) in &f.logs {
        db.execute(
            "UPDATE logs SET size = ?2, lines = ?3, complete = 1 WHERE id = ?1",
            &[(*id).into(), count(*size).into(), count(*lines).into()],
        )?;
    }
    Ok(())
}

/// A Build ended (with its last step, when given). `requeue`: its requests go
/// back to the queue; otherwise they are complete with the build's result (on
/// PostgreSQL in one statement, `finish_build_one`).
pub fn finish_build(
    db: &mut dyn Sql,
    build_id: i64,
    result: &str,
    text: &str,
    requeue: bool,
    at: f64,
    last_step: Option<&StepFinish>,
) -> Result<Completed, SqlError> {
    if !requeue && db.dialect() == super::sql::Dialect::Postgres {
        let (mut done, open) = finish_build_one(db, build_id, result, text, at, last_step)?;
        done.buildsets
            .extend(complete_open_buildsets(db, &open, at)?);
        return Ok(done);
    }
    if let Some(f) = last_step {
        finish_step(db, f)?;
    }
    db.execute(
        "UPDATE builds SET finished_at = ?2, result = ?3, text = ?4 WHERE id = ?1",
        &[build_id.into(), at.into(), result.into(), text.into()],
    )?;
    if requeue {
        unclaim(db, build_id)?;
        Ok(Completed::default())
    } else {
        complete_build_requests(db, build_id, result, at)
    }
}

/// The CTEs (PostgreSQL) that end Step `f` ([`finish_step`]): its row and
/// its logs' final sizes. Their parameters are appended to `params`.
fn finish_step_ctes(params: &mut Vec<super::sql::Value>, f: &StepFinish) -> String {
    let n = params.len();
    let mut ctes = vec![format!(
        "st_end AS (UPDATE steps SET finished_at = ?{}, result = ?{}, text = ?{},
                        warnings = ?{}, tests_passed = ?{}, tests_failed = ?{},
                        tests_skipped = ?{}, tests_xfailed = ?{}, tests_xpassed = ?{}
                    WHERE id = ?{} RETURNING id)",
        n + 2,
        n + 3,
        n + 4,
        n + 5,
        n + 6,
        n + 7,
        n + 8,
        n + 9,
        n + 10,
        n + 1
    )];
    params.extend(step_finish_values(f));
    for (i, (id, size, lines)) in f.logs.iter().enumerate() {
        let n = params.len();
        ctes.push(format!(
            "log_end{i} AS (UPDATE logs SET size = ?{}, lines = ?{}, complete = 1
                            WHERE id = ?{} RETURNING id)",
            n + 2,
            n + 3,
            n + 1
        ));
        params.extend([(*id).into(), count(*size).into(), count(*lines).into()]);
    }
    ctes.join(", ")
}

/// [`start_step`] as one statement of PostgreSQL's, run without a
/// transaction around it ([`Db::write_sql_one`]): the step before it ended
/// (`finish_step_ctes`), the new one's properties, row and `stdio` log
/// inserted. (step id, log id).
fn start_step_one(
    db: &mut dyn Sql,
    build_id: i64,
    s: &StepStart,
    previous: Option<&StepFinish>,
) -> Result<(i64, i64), SqlError> {
    let mut params = vec![build_id.into()];
    let mut ctes = String::new();
    if let Some(f) = previous {
        ctes = finish_step_ctes(&mut params, f);
        ctes.push_str(", ");
    }
    ctes.push_str(&super::requests::step_start_ctes(&mut params, s));
    let r = db.query_one(&format!("WITH {ctes} SELECT step, id FROM lg"), &params)?;
    Ok((r.i64(0)?, r.i64(1)?))
}

/// [`finish_build`] (its requests complete, not requeued) as one statement of
/// PostgreSQL's, run without a transaction around it ([`Db::write_sql_one`]):
/// the last step and its logs, the Build, its incomplete requests (complete
/// with `result`) and their BuildSets (failed by a result worse than
/// `warnings` when none failed yet; complete with their requests' worst
/// result when every other request of theirs is complete) are updated by
/// data-modifying CTEs. What it completed, as [`complete_build_requests`]
/// tells it, and the BuildSets it left open because other requests of theirs
/// were incomplete as the statement saw them: for `complete_open_buildsets`
/// to look at again.
fn finish_build_one(
    db: &mut dyn Sql,
    build_id: i64,
    result: &str,
    text: &str,
    at: f64,
    last_step: Option<&StepFinish>,
) -> Result<(Completed, Vec<i64>), SqlError> {
    use super::requests::{rank_sql, result_rank};
    use super::sql::Value;
    let fails = result_rank(result) > result_rank("warnings");
    let mut params: Vec<Value> = vec![
        build_id.into(),
        at.into(),
        result.into(),
        text.into(),
        fails.into(),
    ];
    let mut ctes = String::new();
    if let Some(f) = last_step {
        ctes = finish_step_ctes(&mut params, f);
        ctes.push(',');
    }
    let others = "o.buildset = bs.id AND o.id NOT IN (SELECT id FROM req)";
    let sql = format!(
        "WITH {ctes}
         b AS (UPDATE builds SET finished_at = ?2, result = ?3, text = ?4 WHERE id = ?1
               RETURNING id),
         req AS (UPDATE buildrequests r SET complete = 1, complete_at = ?2, result = ?3
                 FROM build_requests br
                 WHERE br.build = ?1 AND r.id = br.request AND r.complete = 0
                 RETURNING r.id, r.buildset),
         sets AS (SELECT bs.id, bs.result AS was,
                         NOT EXISTS (SELECT 1 FROM buildrequests o
                                     WHERE {others} AND o.complete = 0) AS done,
                         (SELECT w.result FROM (SELECT CAST(?3 AS TEXT) AS result
                                                UNION ALL SELECT o.result FROM buildrequests o
                                                WHERE {others}) w
                          ORDER BY {rank} DESC LIMIT 1) AS worst
                  FROM buildsets bs
                  WHERE bs.id IN (SELECT buildset FROM req) AND bs.complete = 0
                  FOR UPDATE OF bs),
         upd AS (UPDATE buildsets bs
                 SET result = CASE WHEN s.done THEN s.worst
                                   WHEN ?5 AND bs.result IS NULL THEN ?3
                                   ELSE bs.result END,
                     complete = CASE WHEN s.done THEN 1 ELSE bs.complete END,
                     complete_at = CASE WHEN s.done THEN ?2 ELSE bs.complete_at END
                 FROM sets s
                 WHERE bs.id = s.id AND bs.complete = 0
                   AND (s.done OR (?5 AND bs.result IS NULL))
                 RETURNING bs.id, s.was, bs.result, bs.complete)
         SELECT r.id, r.buildset, u.id, u.was, u.result, u.complete
         FROM req r LEFT JOIN upd u ON u.id = r.buildset ORDER BY r.id",
        rank = rank_sql("w.result"),
    );
    let mut done = Completed::default();
    let mut open = Vec::new();
    for r in db.query(&sql, &params)? {
        done.requests.push(r.i64(0)?);
        let buildset = r.i64(1)?;
        if r.opt_i64(2)?.is_none() {
            if !open.contains(&buildset) {
                open.push(buildset);
            }
            continue;
        }
        let seen = |list: &[(i64, String)]| list.iter().any(|(id, _)| *id == buildset);
        if fails && r.opt_string(3)?.is_none() && !seen(&done.failed_buildsets) {
            done.failed_buildsets.push((buildset, result.to_string()));
        }
        if r.i64(5)? == 1 && !seen(&done.buildsets) {
            done.buildsets.push((buildset, r.string(4)?));
        } else if r.i64(5)? == 0 && !open.contains(&buildset) {
            open.push(buildset);
        }
    }
    Ok((done, open))
}

/// The BuildSets among `ids` whose every request is complete now, marked
/// complete with their requests' worst result (one statement, PostgreSQL);
/// each with that result. Run after [`finish_build_one`], in a statement of
/// its own: that statement saw the database as it was when it began, so two
/// masters finishing the last two requests of one BuildSet at once each saw
/// the other's still running. Run after both committed, this sees both (the
/// later master's certainly), and the row lock with `complete = 0` lets only
/// one mark it.
fn complete_open_buildsets(
    db: &mut dyn Sql,
    ids: &[i64],
    at: f64,
) -> Result<Vec<(i64, String)>, SqlError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
    let sql = format!(
        "UPDATE buildsets bs
         SET complete = 1, complete_at = ?2,
             result = (SELECT o.result FROM buildrequests o WHERE o.buildset = bs.id
                       ORDER BY {rank} DESC LIMIT 1)
         WHERE bs.id IN (SELECT CAST(v.value AS BIGINT)
                         FROM jsonb_array_elements_text(CAST(CAST(?1 AS TEXT) AS jsonb)) v)
           AND bs.complete = 0
           AND NOT EXISTS (SELECT 1 FROM buildrequests o
                           WHERE o.buildset = bs.id AND o.complete = 0)
         RETURNING bs.id, bs.result",
        rank = super::requests::rank_sql("o.result"),
    );
    db.query(&sql, &[list.into(), at.into()])?
        .iter()
        .map(|r| Ok((r.i64(0)?, r.string(1)?)))
        .collect()
}

/// An empty file at `path`, making its directory.
fn make_empty(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::create(path).map(drop)
}

/// Size and newline count of a file, read in constant memory.
fn measure(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut size, mut lines) = (0u64, 0u64);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((size, lines));
        }
        size += n as u64;
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// Every build left running finished as `exception` with `text` (its open
/// steps too), its open logs measured from their files under `basedir`, every
/// claimed, incomplete request given back. The (builder, number) of those
/// builds.
pub fn recover(
    db: &mut dyn Sql,
    basedir: &Path,
    whose: Whose<'_>,
    text: &str,
    at: f64,
) -> Result<Vec<(String, i64)>, SqlError> {
    let (filter, claims, name) = match whose {
        Whose::Every => ("", "", None),
        Whose::Mine(name) => (
            " AND (master = ?1 OR master IS NULL)",
            " AND (claimed_by = ?1 OR claimed_by IS NULL)",
            Some(name),
        ),
        Whose::Dead(name) => (" AND master = ?1", " AND claimed_by = ?1", Some(name)),
    };
    let params: Vec<super::sql::Value> = name.map(super::sql::Value::from).into_iter().collect();
    // Sorted here: an `ORDER BY id` would make SQLite scan every build instead
    // of its running ones (the partial index `builds_running`).
    let mut builds = db
        .query(
            &format!("SELECT id, builder, number FROM builds WHERE finished_at IS NULL{filter}"),
            &params,
        )?
        .iter()
        .map(|r| Ok((r.i64(0)?, r.string(1)?, r.i64(2)?)))
        .collect::<Result<Vec<_>, SqlError>>()?;
    builds.sort_unstable();
    let mut found = Vec::with_capacity(builds.len());
    for (id, builder, number) in builds {
        db.execute(
            "UPDATE steps SET finished_at = ?2, result = 'exception',
                text = CASE WHEN text = '' THEN ?3 ELSE text || ' ' || ?3 END
             WHERE build = ?1 AND finished_at IS NULL",
            &[id.into(), at.into(), text.into()],
        )?;
        db.execute(
            "UPDATE builds SET finished_at = ?2, result = 'exception', text = ?3 WHERE id = ?1",
            &[id.into(), at.into(), text.into()],
        )?;
        // Logs that were still being written: what reached the file is kept.
        let open = db.query(
            "SELECT l.id, l.path FROM logs l JOIN steps s ON s.id = l.step
             WHERE s.build = ?1 AND l.complete = 0",
            &[id.into()],
        )?;
        for r in &open {
            close_log(db, basedir, r.i64(0)?, &r.string(1)?)?;
        }
        found.push((builder, number));
    }
    let requeued = db.query(
        &format!(
            "UPDATE buildrequests SET claimed_at = NULL, claimed_by = NULL
             WHERE complete = 0 AND claimed_at IS NOT NULL{claims} RETURNING builder"
        ),
        &params,
    )?;
    let mut builders = requeued
        .iter()
        .map(|r| r.string(0))
        .collect::<Result<Vec<_>, _>>()?;
    builders.sort_unstable();
    builders.dedup();
    for b in &builders {
        super::requests::announce_queued(db, b)?;
    }
    Ok(found)
}

/// Whose running Builds and claimed BuildRequests [`recover`] takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose<'a> {
    /// Every master's: the one master of a SQLite database, at its start.
    Every,
    /// This master's (and those no master's name is on: rows from before
    /// masters were named), at its start on a shared database.
    Mine(&'a str),
    /// A master found dead by this one (only its own).
    Dead(&'a str),
}

/// A log that was still being written when its master died: its size and
/// lines are what reached the file, and it is complete.
fn close_log(db: &mut dyn Sql, basedir: &Path, id: i64, rel: &str) -> Result<(), SqlError> {
    let path = basedir.join(rel);
    let (size, lines) = match measure(&path) {
        Ok(m) => m,
        // The master died after recording the Step but before making its
        // files (they come once its command is sent): the log is empty.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && make_empty(&path).is_ok() => (0, 0),
        Err(e) => {
            tracing::warn!("log {rel}: {e}; keeping its recorded size");
            db.execute("UPDATE logs SET complete = 1 WHERE id = ?1", &[id.into()])?;
            return Ok(());
        }
    };
    update_log(db, id, size, lines, true)
}

/// The newest builds of a builder, newest first: at most `limit`, numbered
/// below `before` when given.
pub fn newest(
    db: &mut dyn Sql,
    builder: &str,
    limit: u32,
    before: Option<i64>,
) -> Result<Vec<BuildRow>, SqlError> {
    db.query(
        &format!(
            "SELECT {BUILD_COLUMNS} FROM builds b WHERE b.builder = ?1 AND b.number < ?2
             ORDER BY b.number DESC LIMIT ?3"
        ),
        &[
            builder.into(),
            before.unwrap_or(i64::MAX).into(),
            i64::from(limit).into(),
        ],
    )?
    .iter()
    .map(build_row)
    .collect()
}

/// The builds not finished, oldest first.
pub fn running(db: &mut dyn Sql) -> Result<Vec<BuildRow>, SqlError> {
    db.query(
        &format!("SELECT {BUILD_COLUMNS} FROM builds b WHERE b.finished_at IS NULL ORDER BY b.id"),
        &[],
    )?
    .iter()
    .map(build_row)
    .collect()
}

/// Where a log's bytes are (under `basedir`). `step` is a step's name, or its
/// number; a step named so wins over one numbered so.
pub fn log_file(
    db: &mut dyn Sql,
    basedir: &Path,
    builder: &str,
    number: i64,
    step: &str,
    log: &str,
) -> Result<Option<LogFile>, SqlError> {
    let step_number: i64 = step.parse().unwrap_or(-1);
    let Some(r) = db.query_opt(
        "SELECT l.path, l.size, l.lines, l.complete, l.stored, s.started_at
         FROM builds b JOIN steps s ON s.build = b.id JOIN logs l ON l.step = s.id
         WHERE b.builder = ?1 AND b.number = ?2 AND (s.name = ?3 OR s.number = ?4)
           AND l.name = ?5
         ORDER BY CASE WHEN s.name = ?3 THEN 0 ELSE 1 END LIMIT 1",
        &[
            builder.into(),
            number.into(),
            step.into(),
            step_number.into(),
            log.into(),
        ],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(LogFile {
        path: basedir.join(r.string(0)?),
        size: r.i64(1)? as u64,
        lines: r.i64(2)? as u64,
        complete: r.bool(3)?,
        deleted: r.string(4)? == "deleted",
        step_started: r.opt_f64(5)?,
    }))
}

/// One builder's activity: its newest finished build, its running builds and
/// how many requests wait.
pub fn activity(db: &mut dyn Sql, name: &str) -> Result<BuilderActivity, SqlError> {
    let last_build = db
        .query_opt(
            &format!(
                "SELECT {BUILD_COLUMNS} FROM builds b
                 WHERE b.builder = ?1 AND b.finished_at IS NOT NULL
                 ORDER BY b.number DESC LIMIT 1"
            ),
            &[name.into()],
        )?
        .as_ref()
        .map(build_row)
        .transpose()?;
    let running = db
        .query(
            &format!(
                "SELECT {BUILD_COLUMNS} FROM builds b WHERE b.builder = ?1 AND b.finished_at IS NULL
                 ORDER BY b.number"
            ),
            &[name.into()],
        )?
        .iter()
        .map(build_row)
        .collect::<Result<_, _>>()?;
    let pending = db
        .query_one(
            "SELECT count(*) FROM buildrequests
             WHERE builder = ?1 AND claimed_at IS NULL AND complete = 0",
            &[name.into()],
        )?
        .i64(0)?;
    Ok(BuilderActivity {
        name: name.to_string(),
        last_build,
        running,
        pending,
    })
}

/// One build with its steps, logs, properties, Changes, requests and ETA
/// (`now`: the clock it is measured from).
pub fn detail(
    db: &mut dyn Sql,
    builder: &str,
    number: i64,
    now: f64,
) -> Result<Option<BuildDetail>, SqlError> {
    let Some(r) = db.query_opt(
        &format!(
            "SELECT {BUILD_COLUMNS}, b.id, b.sourcestamp FROM builds b
             WHERE b.builder = ?1 AND b.number = ?2"
        ),
        &[builder.into(), number.into()],
    )?
    else {
        return Ok(None);
    };
    let (build, id, sourcestamp) = (build_row(&r)?, r.i64(9)?, r.opt_i64(10)?);
    let (branch, revision) = match sourcestamp {
        Some(ss) => match db.query_opt(
            "SELECT branch, revision FROM sourcestamps WHERE id = ?1",
            &[ss.into()],
        )? {
            Some(r) => (r.opt_string(0)?, r.opt_string(1)?),
            None => (None, None),
        },
        None => (None, None),
    };
    let changes = match sourcestamp {
        Some(ss) => sourcestamp_changes(db, ss)?,
        None => Vec::new(),
    };
    let properties = db
        .query(
            "SELECT name, value, source FROM build_properties WHERE build = ?1 ORDER BY name",
            &[id.into()],
        )?
        .iter()
        .map(|r| Ok((r.string(0)?, (r.string(1)?, r.string(2)?))))
        .collect::<Result<BTreeMap<_, _>, SqlError>>()?;
    let steps = steps_of(db, id)?;
    let requests = db
        .query(
            "SELECT request FROM build_requests WHERE build = ?1 ORDER BY request",
            &[id.into()],
        )?
        .iter()
        .map(|r| r.i64(0))
        .collect::<Result<_, _>>()?;
    let eta = if build.result.is_none() {
        eta(db, builder, &steps, now)?
    } else {
        None
    };
    Ok(Some(BuildDetail {
        build,
        branch,
        revision,
        properties,
        changes,
        steps,
        requests,
        eta,
    }))
}

/// A build's steps with their logs, in order.
fn steps_of(db: &mut dyn Sql, build_id: i64) -> Result<Vec<StepRow>, SqlError> {
    let mut steps: Vec<(i64, StepRow)> = db
        .query(
            "SELECT id, number, name, started_at, finished_at, result, text, description,
                    warnings, tests_passed, tests_failed, tests_skipped, tests_xfailed,
                    tests_xpassed
             FROM steps WHERE build = ?1 ORDER BY number",
            &[build_id.into()],
        )?
        .iter()
        .map(|r| {
            Ok((
                r.i64(0)?,
                StepRow {
                    number: r.i64(1)?,
                    name: r.string(2)?,
                    started_at: r.opt_f64(3)?,
                    finished_at: r.opt_f64(4)?,
                    result: r.opt_string(5)?,
                    text: r.string(6)?,
                    description: r.string(7)?,
                    warnings: r.i64(8)?.max(0) as u64,
                    counts: TestCounts::from_row(r, 9)?,
                    logs: Vec::new(),
                },
            ))
        })
        .collect::<Result<_, SqlError>>()?;
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    // Every log of the build in one query (not one per step), in the order
    // they were made (sorted here, so the plan stays on the indexes).
    let mut logs = db
        .query(
            "SELECT l.id, l.step, l.name, l.size, l.lines, l.complete
             FROM steps s JOIN logs l ON l.step = s.id WHERE s.build = ?1",
            &[build_id.into()],
        )?
        .iter()
        .map(|r| {
            Ok((
                r.i64(0)?,
                r.i64(1)?,
                LogRow {
                    name: r.string(2)?,
                    size: r.i64(3)? as u64,
                    lines: r.i64(4)? as u64,
                    complete: r.bool(5)?,
                },
            ))
        })
        .collect::<Result<Vec<_>, SqlError>>()?;
    logs.sort_unstable_by_key(|(id, _, _)| *id);
    for (_, step, log) in logs {
        if let Some((_, s)) = steps.iter_mut().find(|(id, _)| *id == step) {
            s.logs.push(log);
        }
    }
    Ok(steps.into_iter().map(|(_, s)| s).collect())
}

/// Seconds left for a running build: the last successful build's duration of every
/// step not finished yet, less the time the running step has had.
fn eta(
    db: &mut dyn Sql,
    builder: &str,
    steps: &[StepRow],
    now: f64,
) -> Result<Option<f64>, SqlError> {
    let Some(last) = db.query_opt(
        "SELECT id FROM builds WHERE builder = ?1 AND result = 'success'
         ORDER BY number DESC LIMIT 1",
        &[builder.into()],
    )?
    else {
        return Ok(None);
    };
    let previous = db.query(
        "SELECT name, coalesce(finished_at - started_at, 0) FROM steps
         WHERE build = ?1 ORDER BY number",
        &[last.i64(0)?.into()],
    )?;
    let mut left = 0.0;
    for r in &previous {
        let (name, duration) = (r.string(0)?, real(r, 1)?);
        match steps.iter().find(|s| s.name == name) {
            Some(s) if s.finished_at.is_some() => {}
            Some(s) => {
                let ran = s.started_at.map(|t| (now - t).max(0.0)).unwrap_or(0.0);
                left += (duration - ran).max(0.0);
            }
            None => left += duration,
        }
    }
    Ok(Some(left))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::requests::{NewBuildSet, NewSourceStamp};

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(crate::db::DB_FILE)).unwrap();
        (dir, db)
    }

    fn buildset(builders: &[&str], priority: i64) -> NewBuildSet {
        NewBuildSet {
            reason: "test".into(),
            scheduler: "test".into(),
            properties: [("p".to_string(), "v".to_string())].into(),
            sourcestamp: NewSourceStamp {
                branch: Some("main".into()),
                ..Default::default()
            },
            builders: builders.iter().map(|b| b.to_string()).collect(),
            priority,
        }
    }

    /// A step's counts go in as numbers and come back as numbers (as the JSON API
    /// shows them); a step without a test runner has none.
    #[tokio::test]
    async fn step_counts_round_trip() {
        let (_d, db) = open();
        db.add_buildset(buildset(&["b1"], 0), 1.0).await.unwrap();
        let c = db.claim_request("b1", "s", 1, 2.0).await.unwrap().unwrap();
        let start = |n: i64, name: &str| StepStart {
            number: n,
            name: name.into(),
            description: name.into(),
            log_path: format!("logs/b1/1-{n}-{name}-stdio.log"),
            at: 3.0,
            props: Vec::new(),
        };
        let (compile, _) = db
            .start_step(c.build_id, start(0, "compile"), None)
            .await
            .unwrap();
        let finish = |step_id, warnings, counts| StepFinish {
            step_id,
            result: "success".into(),
            text: "done".into(),
            warnings,
            counts,
            logs: Vec::new(),
            at: 4.0,
        };
        let counts = TestCounts {
            passed: 2,
            failed: 1,
            skipped: 3,
            xfailed: 4,
            xpassed: 5,
        };
        let (test, _) = db
            .start_step(c.build_id, start(1, "test"), Some(finish(compile, 7, None)))
            .await
            .unwrap();
        db.finish_build(
            c.build_id,
            "success",
            "ok",
            false,
            5.0,
            Some(finish(test, 0, Some(counts))),
        )
        .await
        .unwrap();
        let b = db.build("b1", 1).await.unwrap().unwrap();
        let got: Vec<(u64, Option<TestCounts>)> =
            b.steps.iter().map(|s| (s.warnings, s.counts)).collect();
        assert_eq!(got, [(7, None), (0, Some(counts))]);
        let json = serde_json::to_value(&b.steps[1]).unwrap();
        assert_eq!(
            json["counts"],
            serde_json::json!({"passed": 2, "failed": 1, "skipped": 3, "xfailed": 4, "xpassed": 5})
        );
        assert_eq!(json["warnings"], 0);
    }

    #[tokio::test]
    async fn claim_numbers_complete_and_buildset_result() {
        let (_d, db) = open();
        let a = db
            .add_buildset(buildset(&["b1", "b2"], 0), 1.0)
            .await
            .unwrap();
        let hi = db.add_buildset(buildset(&["b1"], 5), 2.0).await.unwrap();
        assert_eq!(db.builders_with_requests().await.unwrap().len(), 2);
        // Priority first, then age.
        let c = db.claim_request("b1", "s", 3, 3.0).await.unwrap().unwrap();
        assert_eq!(c.request_ids, vec![hi.requests[0].1]);
        assert_eq!(c.number, 1);
        assert_eq!(c.properties["p"], "v");
        assert_eq!(c.branch.as_deref(), Some("main"));
        let c2 = db.claim_request("b1", "s", 3, 3.0).await.unwrap().unwrap();
        assert_eq!(c2.number, 2);
        assert!(db.claim_request("b1", "s", 3, 3.0).await.unwrap().is_none());
        // An interrupted build gives its request back; the next build gets number 3.
        db.finish_build(c2.build_id, "exception", "slave lost: x", true, 4.0, None)
            .await
            .unwrap();
        let c3 = db.claim_request("b1", "s", 3, 5.0).await.unwrap().unwrap();
        assert_eq!(
            (c3.number, c3.request_ids.clone()),
            (3, c2.request_ids.clone())
        );
        let done = db
            .finish_build(c3.build_id, "failure", "failed x", false, 6.0, None)
            .await
            .unwrap();
        assert_eq!(done.requests, c2.request_ids);
        assert!(done.buildsets.is_empty(), "b2 is still pending");
        // ... but the BuildSet has failed already (the manual's firstFailure).
        assert_eq!(
            done.failed_buildsets,
            vec![(a.buildset_id, "failure".to_string())]
        );
        let bs = db.buildset(a.buildset_id).await.unwrap().unwrap();
        assert_eq!(
            (bs.complete, bs.result.as_deref()),
            (false, Some("failure"))
        );
        assert_eq!(bs.requests.len(), 2);
        let c4 = db.claim_request("b2", "s", 1, 7.0).await.unwrap().unwrap();
        let done = db
            .finish_build(c4.build_id, "success", "build successful", false, 8.0, None)
            .await
            .unwrap();
        assert_eq!(done.buildsets, vec![(a.buildset_id, "failure".to_string())]);
        assert!(done.failed_buildsets.is_empty(), "it failed once only");
        let bs = db.buildset(a.buildset_id).await.unwrap().unwrap();
        assert_eq!((bs.complete, bs.result.as_deref()), (true, Some("failure")));
        let req = db.buildrequest(c2.request_ids[0]).await.unwrap().unwrap();
        assert_eq!(req.builds, vec![2, 3]);
        assert_eq!(req.result.as_deref(), Some("failure"));
    }

    #[tokio::test]
    async fn recovery_finishes_running_builds_and_measures_their_logs() {
        let (dir, db) = open();
        db.add_buildset(buildset(&["b"], 0), 1.0).await.unwrap();
        let c = db.claim_request("b", "s", 2, 2.0).await.unwrap().unwrap();
        let rel = "logs/b/1/001-x-stdio.log";
        std::fs::create_dir_all(dir.path().join("logs/b/1")).unwrap();
        std::fs::write(dir.path().join(rel), "a\nb\nc").unwrap();
        let start = StepStart {
            number: 1,
            name: "x".into(),
            description: "x".into(),
            log_path: rel.into(),
            at: 3.0,
            props: Vec::new(),
        };
        db.start_step(c.build_id, start, None).await.unwrap();
        let found = db
            .recover_interrupted("interrupted: master restarted", 9.0)
            .await
            .unwrap();
        assert_eq!(found, vec![("b".to_string(), 1)]);
        let b = db.build("b", 1).await.unwrap().unwrap();
        assert_eq!(b.build.result.as_deref(), Some("exception"));
        assert_eq!(b.steps[0].result.as_deref(), Some("exception"));
        assert_eq!((b.steps[0].logs[0].size, b.steps[0].logs[0].lines), (5, 2));
        // The request waits again.
        let again = db.claim_request("b", "s", 2, 10.0).await.unwrap().unwrap();
        assert_eq!(again.number, 2);
    }

    #[tokio::test]
    async fn a_first_step_recorded_with_its_claim_survives_a_crash_before_its_files() {
        let (dir, db) = open();
        db.add_buildset(buildset(&["b"], 0), 1.0).await.unwrap();
        let first: crate::db::requests::FirstStep = Box::new(|c| StepStart {
            number: 1,
            name: "compile".into(),
            description: "compiling".into(),
            log_path: format!("logs/b/{}-001-compile-stdio.log", c.number),
            at: 2.0,
            props: vec![("buildnumber".into(), c.number.to_string(), "Build".into())],
        });
        let c = db
            .claim_request_starting("b", "s", 2, 2.0, first)
            .await
            .unwrap()
            .unwrap();
        assert!(c.first_step.is_some());
        let b = db.build("b", 1).await.unwrap().unwrap();
        assert_eq!(b.steps.len(), 1);
        assert_eq!(
            (b.steps[0].name.as_str(), b.steps[0].started_at),
            ("compile", Some(2.0))
        );
        assert_eq!(b.properties["buildnumber"], ("1".into(), "Build".into()));
        // The master dies before the Step's files are made.
        db.recover_interrupted("interrupted: master restarted", 9.0)
            .await
            .unwrap();
        let f = db
            .log_file("b", 1, "compile", "stdio")
            .await
            .unwrap()
            .unwrap();
        assert!(f.complete);
        assert_eq!((f.size, f.lines), (0, 0));
        assert_eq!(
            std::fs::read(dir.path().join("logs/b/1-001-compile-stdio.log")).unwrap(),
            b""
        );
    }

    #[tokio::test]
    async fn newest_builds_use_the_builder_number_index() {
        let (_d, db) = open();
        db.write(|tx| {
            tx.execute(
                "INSERT INTO builds(builder, number, slave, started_at, finished_at, result)
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
                 SELECT CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, i, 's', i, i + 1, 'success'
                 FROM n",
                [],
            )
        })
        .await
        .unwrap();
        let plan: String = db
            .read(|c| {
                let mut st = c.prepare(
                    "EXPLAIN QUERY PLAN SELECT * FROM builds b WHERE b.builder = 'a'
                     AND b.number < 9999999 ORDER BY b.number DESC LIMIT 20",
                )?;
                let rows = st.query_map([], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
            })
            .await
            .unwrap();
        assert!(plan.contains("USING INDEX"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        let t = std::time::Instant::now();
        let list = db.builds("a", 20, None).await.unwrap();
        assert_eq!(list[0].number, 200000);
        assert_eq!(list.len(), 20);
        let act = db.builder_activity(vec!["a".into()]).await.unwrap();
        assert_eq!(act[0].last_build.as_ref().unwrap().number, 200000);
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }
}
