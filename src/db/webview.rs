//! Reads for the status pages' newer views: which shown build first contains
//! each Change (the waterfall's Change column), each build's source (revision,
//! branch and the first line of its newest Change, for the build boxes), and a
//! build's BuildSet. Every query is bounded by the ids it is given, so a page
//! costs the same with a million builds.
//!
//! Written once for both backends ([`super::sql`]); lists of ids or names go
//! in as one JSON array parameter (`status::json_list`).

use std::collections::{HashMap, HashSet};

use super::builds::{StepRow, TestCounts};
use super::sql::{Dialect, Sql, SqlError};
use super::status::{builder_no_index, json_list};
use super::{Db, DbError};

/// What a build box shows of a build's source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildSource {
    /// The revision built: the SourceStamp's, else the `got_revision` property.
    pub revision: Option<String>,
    pub branch: Option<String>,
    /// The SourceStamp's repository (for `revlink`).
    pub repository: String,
    /// The first line of the newest Change of the build (cut at 200 bytes).
    pub change_line: Option<String>,
    /// Who wrote that Change.
    pub change_who: Option<String>,
}

fn ids_json(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

impl Db {
    /// For each of `changes`, the id of the first (lowest id) build of one of
    /// `builders` whose SourceStamp holds it; a Change no build holds yet is
    /// absent.
    pub async fn first_builds_of_changes(
        &self,
        changes: Vec<i64>,
        builders: Vec<String>,
    ) -> Result<HashMap<i64, i64>, DbError> {
        self.read_sql(move |db| first_builds_of_changes(db, &changes, &builders))
            .await
    }

    /// Which of `changes` wait for a build: held by a scheduler (its
    /// `treeStable` timer, or recorded for the next build), or in the
    /// SourceStamp of a BuildRequest no build has taken yet.
    pub async fn waiting_changes(&self, changes: Vec<i64>) -> Result<HashSet<i64>, DbError> {
        self.read_sql(move |db| waiting_changes(db, &changes)).await
    }

    /// The source of each build of `ids` (build id → [`BuildSource`]).
    pub async fn build_sources(&self, ids: Vec<i64>) -> Result<HashMap<i64, BuildSource>, DbError> {
        self.read_sql(move |db| build_sources(db, &ids)).await
    }

    /// The BuildSet of a build (through its first BuildRequest), if any.
    pub async fn buildset_of_build(
        &self,
        builder: &str,
        number: i64,
    ) -> Result<Option<i64>, DbError> {
        let builder = builder.to_string();
        self.read_sql(move |db| buildset_of_build(db, &builder, number))
            .await
    }
}

// The queries, on either backend ([`super::sql`]).

/// For each of `changes`, the id of the first (lowest id) build of one of
/// `builders` whose SourceStamp holds it.
pub fn first_builds_of_changes(
    db: &mut dyn Sql,
    changes: &[i64],
    builders: &[String],
) -> Result<HashMap<i64, i64>, SqlError> {
    let d = db.dialect();
    let names = serde_json::to_string(builders).unwrap_or_else(|_| "[]".into());
    db.query(
        &format!(
            "SELECT sc.change, min(b.id) FROM sourcestamp_changes sc
             JOIN builds b ON b.sourcestamp = sc.sourcestamp
             WHERE sc.change IN ({})
               AND b.builder IN ({})
             GROUP BY sc.change",
            json_list(d, 1, true),
            json_list(d, 2, false)
        ),
        &[ids_json(changes).into(), names.into()],
    )?
    .iter()
    .map(|r| Ok((r.i64(0)?, r.i64(1)?)))
    .collect()
}

/// Which of `changes` wait for a build (held by a scheduler, or in the
/// SourceStamp of a BuildRequest not taken yet).
pub fn waiting_changes(db: &mut dyn Sql, changes: &[i64]) -> Result<HashSet<i64>, SqlError> {
    let list = json_list(db.dialect(), 1, true);
    db.query(
        &format!(
            "SELECT change FROM scheduler_changes
             WHERE change IN ({list})
             UNION
             SELECT sc.change FROM buildrequests r
             JOIN buildsets bs ON bs.id = r.buildset
             JOIN sourcestamp_changes sc ON sc.sourcestamp = bs.sourcestamp
             WHERE r.claimed_at IS NULL AND r.complete = 0
               AND sc.change IN ({list})"
        ),
        &[ids_json(changes).into()],
    )?
    .iter()
    .map(|r| r.i64(0))
    .collect()
}

/// The source of each build of `ids` (build id → [`BuildSource`]).
pub fn build_sources(db: &mut dyn Sql, ids: &[i64]) -> Result<HashMap<i64, BuildSource>, SqlError> {
    let d = db.dialect();
    let newest_change = match d {
        Dialect::Sqlite => "json_array(substr(ch.comments, 1, 400), ch.who)",
        Dialect::Postgres => "CAST(json_build_array(substr(ch.comments, 1, 400), ch.who) AS TEXT)",
    };
    db.query(
        &format!(
            "SELECT b.id, coalesce(ss.revision,
                    (SELECT p.value FROM build_properties p
                     WHERE p.build = b.id AND p.name = 'got_revision' AND p.value != '')),
                    ss.branch, coalesce(ss.repository, ''),
                    (SELECT {newest_change}
                     FROM sourcestamp_changes sc JOIN changes ch ON ch.id = sc.change
                     WHERE sc.sourcestamp = b.sourcestamp ORDER BY ch.id DESC LIMIT 1)
             FROM builds b LEFT JOIN sourcestamps ss ON ss.id = b.sourcestamp
             WHERE b.id IN ({})",
            json_list(d, 1, true)
        ),
        &[ids_json(ids).into()],
    )?
    .iter()
    .map(|r| {
        let (line, who) = r
            .opt_string(4)?
            .and_then(|j| serde_json::from_str::<(String, String)>(&j).ok())
            .map(|(text, who)| (Some(first_line(&text)), Some(who)))
            .unwrap_or_default();
        Ok((
            r.i64(0)?,
            BuildSource {
                revision: r.opt_string(1)?.filter(|s| !s.is_empty()),
                branch: r.opt_string(2)?,
                repository: r.string(3)?,
                change_line: line,
                change_who: who,
            },
        ))
    })
    .collect()
}

/// The BuildSet of a build (through its first BuildRequest), if any.
pub fn buildset_of_build(
    db: &mut dyn Sql,
    builder: &str,
    number: i64,
) -> Result<Option<i64>, SqlError> {
    db.query_opt(
        "SELECT r.buildset FROM builds b
         JOIN build_requests br ON br.build = b.id
         JOIN buildrequests r ON r.id = br.request
         WHERE b.builder = ?1 AND b.number = ?2 ORDER BY r.id LIMIT 1",
        &[builder.into(), number.into()],
    )?
    .map(|r| r.i64(0))
    .transpose()
}

/// What a build's log parsers counted, summed over its steps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BuildCounts {
    pub warnings: u64,
    /// `None` when no step's test output was recognised.
    pub tests: Option<TestCounts>,
}

impl BuildCounts {
    /// The sum of `steps`' counts.
    pub fn of(steps: &[StepRow]) -> BuildCounts {
        let mut c = BuildCounts::default();
        for s in steps {
            c.warnings += s.warnings;
            if let Some(t) = &s.counts {
                let sum = c.tests.get_or_insert_with(TestCounts::default);
                sum.passed += t.passed;
                sum.failed += t.failed;
                sum.skipped += t.skipped;
                sum.xfailed += t.xfailed;
                sum.xpassed += t.xpassed;
            }
        }
        c
    }
}

impl Db {
    /// The counts of `builder`'s builds `numbers` (number → counts).
    pub async fn build_counts(
        &self,
        builder: &str,
        numbers: Vec<i64>,
    ) -> Result<HashMap<i64, BuildCounts>, DbError> {
        let builder = builder.to_string();
        self.read_sql(move |db| build_counts(db, &builder, &numbers))
            .await
    }
}

/// The counts of `builder`'s builds `numbers` (number → counts).
pub fn build_counts(
    db: &mut dyn Sql,
    builder: &str,
    numbers: &[i64],
) -> Result<HashMap<i64, BuildCounts>, SqlError> {
    // CAST: PostgreSQL's sum of BIGINTs is NUMERIC.
    db.query(
        &format!(
            "SELECT b.number, CAST(coalesce(sum(s.warnings), 0) AS BIGINT), count(s.tests_passed),
                    CAST(coalesce(sum(s.tests_passed), 0) AS BIGINT),
                    CAST(coalesce(sum(s.tests_failed), 0) AS BIGINT),
                    CAST(coalesce(sum(s.tests_skipped), 0) AS BIGINT),
                    CAST(coalesce(sum(s.tests_xfailed), 0) AS BIGINT),
                    CAST(coalesce(sum(s.tests_xpassed), 0) AS BIGINT)
             FROM builds b JOIN steps s ON s.build = b.id
             WHERE b.builder = ?1 AND b.number IN ({})
             GROUP BY b.number",
            json_list(db.dialect(), 2, true)
        ),
        &[builder.into(), ids_json(numbers).into()],
    )?
    .iter()
    .map(|r| {
        let n = |i: usize| r.i64(i).map(|v| v.max(0) as u64);
        let tests = if r.i64(2)? > 0 {
            Some(TestCounts {
                passed: n(3)?,
                failed: n(4)?,
                skipped: n(5)?,
                xfailed: n(6)?,
                xpassed: n(7)?,
            })
        } else {
            None
        };
        Ok((
            r.i64(0)?,
            BuildCounts {
                warnings: n(1)?,
                tests,
            },
        ))
    })
    .collect()
}

/// A build on the console: which builder, its number and result, and the
/// revision it built.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleBuild {
    pub id: i64,
    pub builder: String,
    pub number: i64,
    pub result: Option<String>,
    pub revision: String,
}

/// A build of a Change by an author (the "my builds" view).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorBuild {
    pub id: i64,
    pub row: super::builds::BuildRow,
    pub change: i64,
    pub who: String,
}

/// Build ids the console looks back at most, and Change ids the author view.
pub const CONSOLE_WINDOW: i64 = 20_000;

impl Db {
    /// The newest builds (at most `limit`) of `builders` that have a revision
    /// (their SourceStamp's, else `got_revision`), on `branch` if given, among
    /// the [`CONSOLE_WINDOW`] build ids below `before`, newest first.
    pub async fn console_builds(
        &self,
        builders: Vec<String>,
        branch: Option<String>,
        before: i64,
        limit: u32,
    ) -> Result<Vec<ConsoleBuild>, DbError> {
        self.read_sql(move |db| console_builds(db, &builders, branch.as_deref(), before, limit))
            .await
    }

    /// The builds of Changes whose author contains `author` (case-insensitive),
    /// newest first, at most `limit`; among the newest [`CONSOLE_WINDOW`]
    /// Changes.
    pub async fn author_builds(
        &self,
        author: String,
        limit: u32,
    ) -> Result<Vec<AuthorBuild>, DbError> {
        self.read_sql(move |db| author_builds(db, &author, limit))
            .await
    }
}

/// [`Db::console_builds`].
pub fn console_builds(
    db: &mut dyn Sql,
    builders: &[String],
    branch: Option<&str>,
    before: i64,
    limit: u32,
) -> Result<Vec<ConsoleBuild>, SqlError> {
    let d = db.dialect();
    let max_id = db
        .query_one("SELECT coalesce(max(id), 0) FROM builds", &[])?
        .i64(0)?;
    let lo = before
        .min(max_id.saturating_add(1))
        .saturating_sub(CONSOLE_WINDOW);
    let names = serde_json::to_string(builders).unwrap_or_else(|_| "[]".into());
    let rows = db.query(
        &format!(
            "SELECT b.id, b.builder, b.number, b.result,
                    coalesce(ss.revision, (SELECT p.value FROM build_properties p
                         WHERE p.build = b.id AND p.name = 'got_revision'))
             FROM builds b LEFT JOIN sourcestamps ss ON ss.id = b.sourcestamp
             WHERE b.id < ?2 AND b.id >= ?3
               AND {} IN ({})
               AND (CAST(?4 AS TEXT) IS NULL OR ss.branch = ?4)
             ORDER BY b.id DESC LIMIT ?5",
            builder_no_index(d),
            json_list(d, 1, false)
        ),
        &[
            names.into(),
            before.into(),
            lo.into(),
            branch.into(),
            i64::from(limit).into(),
        ],
    )?;
    let mut out = Vec::new();
    for r in &rows {
        if let Some(revision) = r.opt_string(4)?.filter(|r| !r.is_empty()) {
            out.push(ConsoleBuild {
                id: r.i64(0)?,
                builder: r.string(1)?,
                number: r.i64(2)?,
                result: r.opt_string(3)?,
                revision,
            });
        }
    }
    Ok(out)
}

/// [`Db::author_builds`]. `lower` on both sides: ASCII case folds on either
/// backend.
pub fn author_builds(
    db: &mut dyn Sql,
    author: &str,
    limit: u32,
) -> Result<Vec<AuthorBuild>, SqlError> {
    let contains = match db.dialect() {
        Dialect::Sqlite => "instr(lower(ch.who), lower(?1)) > 0",
        Dialect::Postgres => "strpos(lower(ch.who), lower(?1)) > 0",
    };
    let rows = db.query(
        &format!(
            "SELECT b.id, b.builder, b.number, b.slave, b.started_at, b.finished_at,
                    b.result, substr(b.reason, 1, 2048), substr(b.text, 1, 2048),
                    b.total_steps, ch.id, ch.who
             FROM changes ch
             JOIN sourcestamp_changes sc ON sc.change = ch.id
             JOIN builds b ON b.sourcestamp = sc.sourcestamp
             WHERE ch.id > (SELECT coalesce(max(id), 0) FROM changes) - ?3
               AND {contains}
             ORDER BY b.id DESC LIMIT ?2"
        ),
        &[
            author.into(),
            i64::from(limit).into(),
            CONSOLE_WINDOW.into(),
        ],
    )?;
    let mut out: Vec<AuthorBuild> = Vec::new();
    for r in &rows {
        let id = r.i64(0)?;
        // A build of several of the author's Changes is listed once.
        if out.last().is_some_and(|l| l.id == id) {
            continue;
        }
        out.push(AuthorBuild {
            id,
            row: super::status::build_row_at(r, 1)?,
            change: r.i64(10)?,
            who: r.string(11)?,
        });
    }
    Ok(out)
}

/// The first line of `text`, cut at 200 bytes on a character boundary.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim_end();
    let mut end = line.len().min(200);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines_are_cut_on_a_character() {
        assert_eq!(first_line("fix it\nbody"), "fix it");
        assert_eq!(first_line(""), "");
        let long = "é".repeat(150);
        let cut = first_line(&long);
        assert!(cut.len() <= 200 && cut.chars().all(|c| c == 'é'));
    }
}
