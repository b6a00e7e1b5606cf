//! Builds, their Steps, step logs and build properties: the writes the build engine
//! makes as a Build runs, the recovery after a crash, and the queries the JSON API
//! reads (builders' activity, a builder's builds newest first, one build in full,
//! a log's file).
//!
//! A Build row exists from the moment its request is claimed; `result` is NULL
//! until it finishes. Step rows are created when a step starts. A log's bytes are
//! in a file under the master directory (see `logstore`); its row holds the
//! relative path, size and line count, updated while it grows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use super::changes::{sourcestamp_changes, ChangeRow};
use super::requests::{complete_build_requests, unclaim, Completed};
use super::sql::{Lite, Sql, SqlError};
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
    pub(crate) fn from_row(
        r: &rusqlite::Row<'_>,
        first: usize,
    ) -> rusqlite::Result<Option<TestCounts>> {
        let col = |i: usize| -> rusqlite::Result<Option<u64>> {
            Ok(r.get::<_, Option<i64>>(first + i)?.map(|n| n.max(0) as u64))
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

fn build_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildRow> {
    Ok(BuildRow {
        builder: r.get(0)?,
        number: r.get(1)?,
        slave: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        result: r.get(5)?,
        reason: r.get(6)?,
        text: r.get(7)?,
        total_steps: r.get(8)?,
    })
}

/// The master directory of a database at `MASTERDIR/state.sqlite`.
fn basedir_of(db_path: &Path) -> PathBuf {
    db_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Db {
    /// The master directory (log paths are relative to it).
    pub fn basedir(&self) -> PathBuf {
        basedir_of(self.path())
    }

    /// Record properties of a running build (`source`: who set them).
    pub async fn set_build_properties(
        &self,
        build_id: i64,
        props: Vec<(String, String, String)>,
    ) -> Result<(), DbError> {
        self.write(move |tx| Ok(insert_properties(&mut Lite(tx), build_id, &props)?))
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
        self.write(move |tx| {
            if let Some(f) = &previous {
                write_step_finish(tx, f)?;
            }
            Ok(write_step_start(&mut Lite(tx), build_id, &start)?)
        })
        .await
    }

    /// Another log of a running step (a `logfiles` entry, `interrupt`); its id.
    pub async fn add_log(&self, step_id: i64, name: &str, path: &str) -> Result<i64, DbError> {
        let (name, path) = (name.to_string(), path.to_string());
        self.write(move |tx| Ok(insert_log(&mut Lite(tx), step_id, &name, &path)?))
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
        self.write(move |tx| {
            tx.prepare_cached("UPDATE steps SET description = ?2 WHERE id = ?1")?
                .execute(params![step_id, description])?;
            Ok(())
        })
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
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE logs SET size = ?2, lines = ?3, complete = ?4 WHERE id = ?1",
            )?
            .execute(params![log_id, size as i64, lines as i64, complete as i64])?;
            Ok(())
        })
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
        self.write(move |tx| write_step_finish(tx, &f)).await
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
        self.write(move |tx| {
            if let Some(f) = &last_step {
                write_step_finish(tx, f)?;
            }
            tx.prepare_cached(
                "UPDATE builds SET finished_at = ?2, result = ?3, text = ?4 WHERE id = ?1",
            )?
            .execute(params![build_id, at, result, text])?;
            if requeue {
                unclaim(&mut Lite(tx), build_id)?;
                Ok(Completed::default())
            } else {
                Ok(complete_build_requests(
                    &mut Lite(tx),
                    build_id,
                    &result,
                    at,
                )?)
            }
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
        let basedir = self.basedir();
        self.write(move |tx| recover(tx, &basedir, &text, at)).await
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
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {BUILD_COLUMNS} FROM builds b WHERE b.builder = ?1 AND b.number < ?2
                 ORDER BY b.number DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(
                params![builder, before.unwrap_or(i64::MAX), limit],
                build_row,
            )?;
            rows.collect()
        })
        .await
    }

    /// One build with its steps, logs, properties, Changes and ETA.
    pub async fn build(&self, builder: &str, number: i64) -> Result<Option<BuildDetail>, DbError> {
        let builder = builder.to_string();
        self.read(move |c| build_detail(c, &builder, number, crate::calendar::now_f64()))
            .await
    }

    /// Activity of each named builder (configured builders without any build show
    /// as idle).
    pub async fn builder_activity(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<BuilderActivity>, DbError> {
        self.read(move |c| names.iter().map(|n| activity(c, n)).collect())
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
        let basedir = self.basedir();
        self.read(move |c| {
            let step_number: i64 = step.parse().unwrap_or(-1);
            c.prepare_cached(
                "SELECT l.path, l.size, l.lines, l.complete, l.stored, s.started_at
                 FROM builds b JOIN steps s ON s.build = b.id JOIN logs l ON l.step = s.id
                 WHERE b.builder = ?1 AND b.number = ?2 AND (s.name = ?3 OR s.number = ?4)
                   AND l.name = ?5
                 ORDER BY s.name = ?3 DESC LIMIT 1",
            )?
            .query_row(params![builder, number, step, step_number, log], |r| {
                let rel: String = r.get(0)?;
                Ok(LogFile {
                    path: basedir.join(rel),
                    size: r.get::<_, i64>(1)? as u64,
                    lines: r.get::<_, i64>(2)? as u64,
                    complete: r.get::<_, i64>(3)? != 0,
                    deleted: r.get::<_, String>(4)? == "deleted",
                    step_started: r.get(5)?,
                })
            })
            .optional()
        })
        .await
    }

    /// The (builder, number) of builds not finished (none after recovery unless
    /// the engine runs them).
    pub async fn running_builds(&self) -> Result<Vec<BuildRow>, DbError> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {BUILD_COLUMNS} FROM builds b WHERE b.finished_at IS NULL ORDER BY b.id"
            ))?;
            let rows = st.query_map([], build_row)?;
            rows.collect()
        })
        .await
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

fn write_step_finish(tx: &Transaction<'_>, f: &StepFinish) -> rusqlite::Result<()> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let c = f.counts;
    tx.prepare_cached(
        "UPDATE steps SET finished_at = ?2, result = ?3, text = ?4, warnings = ?5,
             tests_passed = ?6, tests_failed = ?7, tests_skipped = ?8,
             tests_xfailed = ?9, tests_xpassed = ?10
         WHERE id = ?1",
    )?
    .execute(params![
        f.step_id,
        f.at,
        f.result,
        f.text,
        n(f.warnings),
        c.map(|c| n(c.passed)),
        c.map(|c| n(c.failed)),
        c.map(|c| n(c.skipped)),
        c.map(|c| n(c.xfailed)),
        c.map(|c| n(c.xpassed)),
    ])?;
    let mut st =
        tx.prepare_cached("UPDATE logs SET size = ?2, lines = ?3, complete = 1 WHERE id = ?1")?;
    for (id, size, lines) in &f.logs {
        st.execute(params![id, *size as i64, *lines as i64])?;
    }
    Ok(())
}

fn insert_properties(
    db: &mut dyn Sql,
    build_id: i64,
    props: &[(String, String, String)],
) -> Result<(), SqlError> {
    for (name, value, source) in props {
        db.execute(
            "INSERT INTO build_properties(build, name, value, source) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(build, name) DO UPDATE SET value = ?3, source = ?4",
            &[
                build_id.into(),
                name.as_str().into(),
                value.as_str().into(),
                source.as_str().into(),
            ],
        )?;
    }
    Ok(())
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

/// Write a Step's start; (step id, log id).
pub(crate) fn write_step_start(
    db: &mut dyn Sql,
    build_id: i64,
    s: &StepStart,
) -> Result<(i64, i64), SqlError> {
    insert_properties(db, build_id, &s.props)?;
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
    let log_id = insert_log(db, step_id, "stdio", &s.log_path)?;
    Ok((step_id, log_id))
}

fn insert_log(db: &mut dyn Sql, step_id: i64, name: &str, path: &str) -> Result<i64, SqlError> {
    db.query_one(
        "INSERT INTO logs(step, name, path) VALUES (?1, ?2, ?3) RETURNING id",
        &[step_id.into(), name.into(), path.into()],
    )?
    .i64(0)
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

fn recover(
    tx: &Transaction<'_>,
    basedir: &Path,
    text: &str,
    at: f64,
) -> rusqlite::Result<Vec<(String, i64)>> {
    let builds: Vec<(i64, String, i64)> = {
        let mut st =
            tx.prepare("SELECT id, builder, number FROM builds WHERE finished_at IS NULL")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (id, _, _) in &builds {
        tx.execute(
            "UPDATE steps SET finished_at = ?2, result = 'exception',
                text = CASE WHEN text = '' THEN ?3 ELSE text || ' ' || ?3 END
             WHERE build = ?1 AND finished_at IS NULL",
            params![id, at, text],
        )?;
        tx.execute(
            "UPDATE builds SET finished_at = ?2, result = 'exception', text = ?3 WHERE id = ?1",
            params![id, at, text],
        )?;
    }
    // Logs that were still being written: what reached the file is kept.
    let open: Vec<(i64, String)> = {
        let mut st = tx.prepare("SELECT id, path FROM logs WHERE complete = 0")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (id, rel) in open {
        let path = basedir.join(&rel);
        let (size, lines) = match measure(&path) {
            Ok(m) => m,
            // The master died after recording the Step but before making its
            // files (they come once its command is sent): the log is empty.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && make_empty(&path).is_ok() => {
                (0, 0)
            }
            Err(e) => {
                tracing::warn!("log {rel}: {e}; keeping its recorded size");
                tx.execute("UPDATE logs SET complete = 1 WHERE id = ?1", [id])?;
                continue;
            }
        };
        tx.execute(
            "UPDATE logs SET size = ?2, lines = ?3, complete = 1 WHERE id = ?1",
            params![id, size as i64, lines as i64],
        )?;
    }
    tx.execute(
        "UPDATE buildrequests SET claimed_at = NULL
         WHERE complete = 0 AND claimed_at IS NOT NULL",
        [],
    )?;
    Ok(builds.into_iter().map(|(_, b, n)| (b, n)).collect())
}

fn activity(c: &Connection, name: &str) -> rusqlite::Result<BuilderActivity> {
    let last_build = c
        .prepare_cached(&format!(
            "SELECT {BUILD_COLUMNS} FROM builds b WHERE b.builder = ?1 AND b.finished_at IS NOT NULL
             ORDER BY b.number DESC LIMIT 1"
        ))?
        .query_row([name], build_row)
        .optional()?;
    let running = {
        let mut st = c.prepare_cached(&format!(
            "SELECT {BUILD_COLUMNS} FROM builds b WHERE b.builder = ?1 AND b.finished_at IS NULL
             ORDER BY b.number"
        ))?;
        let rows = st.query_map([name], build_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let pending = c
        .prepare_cached(
            "SELECT count(*) FROM buildrequests
             WHERE builder = ?1 AND claimed_at IS NULL AND complete = 0",
        )?
        .query_row([name], |r| r.get(0))?;
    Ok(BuilderActivity {
        name: name.to_string(),
        last_build,
        running,
        pending,
    })
}

fn build_detail(
    c: &Connection,
    builder: &str,
    number: i64,
    now: f64,
) -> rusqlite::Result<Option<BuildDetail>> {
    let found = c
        .prepare_cached(&format!(
            "SELECT {BUILD_COLUMNS}, b.id, b.sourcestamp FROM builds b
             WHERE b.builder = ?1 AND b.number = ?2"
        ))?
        .query_row(params![builder, number], |r| {
            Ok((
                build_row(r)?,
                r.get::<_, i64>(9)?,
                r.get::<_, Option<i64>>(10)?,
            ))
        })
        .optional()?;
    let Some((build, id, sourcestamp)) = found else {
        return Ok(None);
    };
    let (branch, revision) = match sourcestamp {
        Some(ss) => c
            .prepare_cached("SELECT branch, revision FROM sourcestamps WHERE id = ?1")?
            .query_row([ss], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((None, None)),
        None => (None, None),
    };
    let changes = match sourcestamp {
        Some(ss) => sourcestamp_changes(&mut Lite(c), ss)?,
        None => Vec::new(),
    };
    let properties = {
        let mut st = c.prepare_cached(
            "SELECT name, value, source FROM build_properties WHERE build = ?1 ORDER BY name",
        )?;
        let rows = st.query_map([id], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
        rows.collect::<rusqlite::Result<BTreeMap<String, (String, String)>>>()?
    };
    let steps = steps_of(c, id)?;
    let requests = {
        let mut st = c.prepare_cached(
            "SELECT request FROM build_requests WHERE build = ?1 ORDER BY request",
        )?;
        let rows = st.query_map([id], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<Vec<i64>>>()?
    };
    let eta = if build.result.is_none() {
        eta(c, builder, &steps, now)?
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

fn steps_of(c: &Connection, build_id: i64) -> rusqlite::Result<Vec<StepRow>> {
    let mut steps: Vec<(i64, StepRow)> = {
        let mut st = c.prepare_cached(
            "SELECT id, number, name, started_at, finished_at, result, text, description,
                    warnings, tests_passed, tests_failed, tests_skipped, tests_xfailed,
                    tests_xpassed
             FROM steps WHERE build = ?1 ORDER BY number",
        )?;
        let rows = st.query_map([build_id], |r| {
            Ok((
                r.get(0)?,
                StepRow {
                    number: r.get(1)?,
                    name: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    result: r.get(5)?,
                    text: r.get(6)?,
                    description: r.get(7)?,
                    warnings: r.get::<_, i64>(8)?.max(0) as u64,
                    counts: TestCounts::from_row(r, 9)?,
                    logs: Vec::new(),
                },
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut st = c.prepare_cached(
        "SELECT name, size, lines, complete FROM logs WHERE step = ?1 ORDER BY id",
    )?;
    for (id, step) in &mut steps {
        let rows = st.query_map([*id], |r| {
            Ok(LogRow {
                name: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                lines: r.get::<_, i64>(2)? as u64,
                complete: r.get::<_, i64>(3)? != 0,
            })
        })?;
        step.logs = rows.collect::<rusqlite::Result<_>>()?;
    }
    Ok(steps.into_iter().map(|(_, s)| s).collect())
}

/// Seconds left for a running build: the last successful build's duration of every
/// step not finished yet, less the time the running step has had.
fn eta(
    c: &Connection,
    builder: &str,
    steps: &[StepRow],
    now: f64,
) -> rusqlite::Result<Option<f64>> {
    let last: Option<i64> = c
        .prepare_cached(
            "SELECT id FROM builds WHERE builder = ?1 AND result = 'success'
             ORDER BY number DESC LIMIT 1",
        )?
        .query_row([builder], |r| r.get(0))
        .optional()?;
    let Some(last) = last else {
        return Ok(None);
    };
    let previous: Vec<(String, f64)> = {
        let mut st = c.prepare_cached(
            "SELECT name, coalesce(finished_at - started_at, 0) FROM steps
             WHERE build = ?1 ORDER BY number",
        )?;
        let rows = st.query_map([last], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut left = 0.0;
    for (name, duration) in previous {
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
