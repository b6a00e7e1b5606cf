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

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::builds::{BuildRow, BuilderActivity, LogRow, StepRow};
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

fn build_row_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<BuildRow> {
    Ok(BuildRow {
        builder: r.get(i)?,
        number: r.get(i + 1)?,
        slave: r.get(i + 2)?,
        started_at: r.get(i + 3)?,
        finished_at: r.get(i + 4)?,
        result: r.get(i + 5)?,
        reason: r.get(i + 6)?,
        text: r.get(i + 7)?,
        total_steps: r.get(i + 8)?,
    })
}

/// The SQLite library the master runs on (for `/about`).
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

impl Db {
    /// The state of each builder of `builders` (name, slave), in that order.
    pub async fn builder_status(
        &self,
        builders: Vec<(String, String)>,
    ) -> Result<Vec<BuilderStatus>, DbError> {
        self.read(move |c| builder_status(c, &builders)).await
    }

    /// Changes whenever a slave connects or goes: the count of connections ever
    /// made and of slaves connected now (`"N.M"`), for the pages' ETags.
    pub async fn slaves_fingerprint(&self) -> Result<String, DbError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT (SELECT coalesce(max(id), 0) FROM slave_connections) || '.' ||
                        (SELECT coalesce(sum(connected), 0) FROM slaves)",
            )?
            .query_row([], |r| r.get(0))
        })
        .await
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
        self.read(move |c| waterfall(c, &builders, branch.as_deref(), before, limit))
            .await
    }

    /// A builder's BuildRequests waiting for a slave, best first, at most `limit`.
    pub async fn queued_requests(
        &self,
        builder: &str,
        limit: u32,
    ) -> Result<Vec<QueuedRequest>, DbError> {
        let builder = builder.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT r.id, r.submitted_at, bs.reason FROM buildrequests r
                 JOIN buildsets bs ON bs.id = r.buildset
                 WHERE r.builder = ?1 AND r.claimed_at IS NULL AND r.complete = 0
                 ORDER BY r.priority DESC, r.id LIMIT ?2",
            )?;
            let rows = st.query_map(params![builder, limit], |r| {
                Ok(QueuedRequest {
                    id: r.get(0)?,
                    submitted_at: r.get(1)?,
                    reason: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// The result and number of a builder's newest finished build (a build that
    /// finished without a result reads as an empty result).
    pub async fn last_result(&self, builder: &str) -> Result<Option<(String, i64)>, DbError> {
        let builder = builder.to_string();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT result, number FROM builds WHERE builder = ?1 AND finished_at IS NOT NULL
                 ORDER BY number DESC LIMIT 1",
            )?
            .query_row([builder], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    r.get(1)?,
                ))
            })
            .optional()
        })
        .await
    }
}

/// [`Db::builder_status`] in four statements for all builders at once, so a
/// waterfall of 500 builders stays cheap.
fn builder_status(
    c: &Connection,
    builders: &[(String, String)],
) -> rusqlite::Result<Vec<BuilderStatus>> {
    let names: Vec<&str> = builders.iter().map(|(n, _)| n.as_str()).collect();
    // Each builder's newest finished build, in one statement.
    let mut st = c.prepare_cached(&format!(
        "SELECT j.key, {COLUMNS} FROM json_each(?1) j
         LEFT JOIN builds b ON b.id = (
             SELECT x.id FROM builds x WHERE x.builder = j.value
                AND x.finished_at IS NOT NULL ORDER BY x.number DESC LIMIT 1)
         ORDER BY j.key"
    ))?;
    let list = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
    let last = st
        .query_map([list], |r| match r.get::<_, Option<i64>>(1)? {
            Some(_) => build_row_at(r, 2).map(Some),
            None => Ok(None),
        })?
        .collect::<rusqlite::Result<Vec<Option<BuildRow>>>>()?;
    let mut running: HashMap<String, Vec<BuildRow>> = HashMap::new();
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM builds b WHERE b.finished_at IS NULL ORDER BY b.number"
    ))?;
    for r in st.query_map([], |r| build_row_at(r, 1))? {
        let r = r?;
        running.entry(r.builder.clone()).or_default().push(r);
    }
    let mut st = c.prepare_cached(
        "SELECT builder, count(*) FROM buildrequests
         WHERE claimed_at IS NULL AND complete = 0 GROUP BY builder",
    )?;
    let pending = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<HashMap<String, i64>>>()?;
    let mut st = c.prepare_cached("SELECT name FROM slaves WHERE connected != 0")?;
    let connected = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
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
fn waterfall(
    c: &Connection,
    builders: &[String],
    branch: Option<&str>,
    before: i64,
    limit: u32,
) -> rusqlite::Result<(Vec<WaterfallBuild>, Option<i64>)> {
    let names = serde_json::to_string(builders).unwrap_or_else(|_| "[]".into());
    let mut builds: Vec<WaterfallBuild> = Vec::new();
    let max_id: i64 = c
        .prepare_cached("SELECT coalesce(max(id), 0) FROM builds")?
        .query_row([], |r| r.get(0))?;
    let lo = before
        .min(max_id.saturating_add(1))
        .saturating_sub(SCAN_WINDOW);
    let branch_clause = "(?3 IS NULL OR EXISTS (SELECT 1 FROM sourcestamps ss \
                         WHERE ss.id = b.sourcestamp AND ss.branch = ?3))";
    let read = |r: &rusqlite::Row<'_>| {
        Ok(WaterfallBuild {
            id: r.get(0)?,
            row: build_row_at(r, 1)?,
            steps: Vec::new(),
        })
    };
    if builders.len() <= 16 {
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM builds b WHERE b.builder = ?1 AND b.id < ?2 AND b.id >= ?5
               AND {branch_clause}
             ORDER BY b.number DESC LIMIT ?4"
        ))?;
        for name in builders {
            for b in st.query_map(params![name, before, branch, limit, lo], read)? {
                builds.push(b?);
            }
        }
        builds.sort_by_key(|b| std::cmp::Reverse(b.id));
        builds.truncate(limit as usize);
    } else {
        // `+b.builder`: walk ids down (the rowid), never the (builder, number)
        // index for every builder and a sort of their whole history.
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM builds b WHERE b.id < ?2 AND b.id >= ?5
               AND +b.builder IN (SELECT value FROM json_each(?1)) AND {branch_clause}
             ORDER BY b.id DESC LIMIT ?4"
        ))?;
        for b in st.query_map(params![names, before, branch, limit, lo], read)? {
            builds.push(b?);
        }
    }
    // Every shown build's steps and their log names in one statement.
    let ids = serde_json::to_string(&builds.iter().map(|b| b.id).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into());
    let mut st = c.prepare_cached(
        "SELECT s.build, s.number, s.name, s.started_at, s.finished_at, s.result, s.text,
                s.description,
                (SELECT json_group_array(json_array(l.name, l.size, l.lines, l.complete))
                 FROM logs l WHERE l.step = s.id),
                s.warnings, s.tests_passed, s.tests_failed, s.tests_skipped,
                s.tests_xfailed, s.tests_xpassed
         FROM steps s WHERE s.build IN (SELECT value FROM json_each(?1))
         ORDER BY s.build, s.number",
    )?;
    let mut by_build: HashMap<i64, Vec<StepRow>> = HashMap::new();
    let rows = st.query_map([ids], |r| {
        let logs: String = r.get(8)?;
        let logs: Vec<(String, u64, u64, i64)> = serde_json::from_str(&logs).unwrap_or_default();
        Ok((
            r.get::<_, i64>(0)?,
            StepRow {
                number: r.get(1)?,
                name: r.get(2)?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                result: r.get(5)?,
                text: r.get(6)?,
                description: r.get(7)?,
                warnings: r.get::<_, i64>(9)?.max(0) as u64,
                counts: crate::db::builds::TestCounts::from_row(r, 10)?,
                logs: logs
                    .into_iter()
                    .map(|(name, size, lines, complete)| LogRow {
                        name,
                        size,
                        lines,
                        complete: complete != 0,
                    })
                    .collect(),
            },
        ))
    })?;
    for row in rows {
        let (build, step) = row?;
        by_build.entry(build).or_default().push(step);
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
