//! Reads for the status pages' newer views: which shown build first contains
//! each Change (the waterfall's Change column), each build's source (revision,
//! branch and the first line of its newest Change, for the build boxes), and a
//! build's BuildSet. Every query is bounded by the ids it is given, so a page
//! costs the same with a million builds.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use super::builds::{StepRow, TestCounts};
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
        self.read(move |c| {
            let names = serde_json::to_string(&builders).unwrap_or_else(|_| "[]".into());
            let mut st = c.prepare_cached(
                "SELECT sc.change, min(b.id) FROM sourcestamp_changes sc
                 JOIN builds b ON b.sourcestamp = sc.sourcestamp
                 WHERE sc.change IN (SELECT value FROM json_each(?1))
                   AND b.builder IN (SELECT value FROM json_each(?2))
                 GROUP BY sc.change",
            )?;
            let rows = st.query_map(params![ids_json(&changes), names], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect()
        })
        .await
    }

    /// Which of `changes` wait for a build: held by a scheduler (its
    /// `treeStable` timer, or recorded for the next build), or in the
    /// SourceStamp of a BuildRequest no build has taken yet.
    pub async fn waiting_changes(
        &self,
        changes: Vec<i64>,
    ) -> Result<std::collections::HashSet<i64>, DbError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT change FROM scheduler_changes
                 WHERE change IN (SELECT value FROM json_each(?1))
                 UNION
                 SELECT sc.change FROM buildrequests r
                 JOIN buildsets bs ON bs.id = r.buildset
                 JOIN sourcestamp_changes sc ON sc.sourcestamp = bs.sourcestamp
                 WHERE r.claimed_at IS NULL AND r.complete = 0
                   AND sc.change IN (SELECT value FROM json_each(?1))",
            )?;
            let rows = st.query_map([ids_json(&changes)], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// The source of each build of `ids` (build id → [`BuildSource`]).
    pub async fn build_sources(&self, ids: Vec<i64>) -> Result<HashMap<i64, BuildSource>, DbError> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT b.id, coalesce(ss.revision,
                        (SELECT p.value FROM build_properties p
                         WHERE p.build = b.id AND p.name = 'got_revision' AND p.value != '')),
                        ss.branch, coalesce(ss.repository, ''),
                        (SELECT json_array(substr(ch.comments, 1, 400), ch.who)
                         FROM sourcestamp_changes sc JOIN changes ch ON ch.id = sc.change
                         WHERE sc.sourcestamp = b.sourcestamp ORDER BY ch.id DESC LIMIT 1)
                 FROM builds b LEFT JOIN sourcestamps ss ON ss.id = b.sourcestamp
                 WHERE b.id IN (SELECT value FROM json_each(?1))",
            )?;
            let rows = st.query_map([ids_json(&ids)], |r| {
                let change: Option<String> = r.get(4)?;
                let (line, who) = change
                    .and_then(|j| serde_json::from_str::<(String, String)>(&j).ok())
                    .map(|(text, who)| (Some(first_line(&text)), Some(who)))
                    .unwrap_or_default();
                Ok((
                    r.get::<_, i64>(0)?,
                    BuildSource {
                        revision: r.get::<_, Option<String>>(1)?.filter(|s| !s.is_empty()),
                        branch: r.get(2)?,
                        repository: r.get(3)?,
                        change_line: line,
                        change_who: who,
                    },
                ))
            })?;
            rows.collect()
        })
        .await
    }

    /// The BuildSet of a build (through its first BuildRequest), if any.
    pub async fn buildset_of_build(
        &self,
        builder: &str,
        number: i64,
    ) -> Result<Option<i64>, DbError> {
        let builder = builder.to_string();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT r.buildset FROM builds b
                 JOIN build_requests br ON br.build = b.id
                 JOIN buildrequests r ON r.id = br.request
                 WHERE b.builder = ?1 AND b.number = ?2 ORDER BY r.id LIMIT 1",
            )?
            .query_row(params![builder, number], |r| r.get(0))
            .optional()
        })
        .await
    }
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
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT b.number, coalesce(sum(s.warnings), 0), count(s.tests_passed),
                        coalesce(sum(s.tests_passed), 0), coalesce(sum(s.tests_failed), 0),
                        coalesce(sum(s.tests_skipped), 0), coalesce(sum(s.tests_xfailed), 0),
                        coalesce(sum(s.tests_xpassed), 0)
                 FROM builds b JOIN steps s ON s.build = b.id
                 WHERE b.builder = ?1 AND b.number IN (SELECT value FROM json_each(?2))
                 GROUP BY b.number",
            )?;
            let rows = st.query_map(params![builder, ids_json(&numbers)], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                let tests = if r.get::<_, i64>(2)? > 0 {
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
                    r.get::<_, i64>(0)?,
                    BuildCounts {
                        warnings: n(1)?,
                        tests,
                    },
                ))
            })?;
            rows.collect()
        })
        .await
    }
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
        self.read(move |c| {
            let max_id: i64 = c
                .prepare_cached("SELECT coalesce(max(id), 0) FROM builds")?
                .query_row([], |r| r.get(0))?;
            let lo = before
                .min(max_id.saturating_add(1))
                .saturating_sub(CONSOLE_WINDOW);
            let names = serde_json::to_string(&builders).unwrap_or_else(|_| "[]".into());
            let mut st = c.prepare_cached(
                "SELECT b.id, b.builder, b.number, b.result,
                        coalesce(ss.revision, (SELECT p.value FROM build_properties p
                             WHERE p.build = b.id AND p.name = 'got_revision'))
                 FROM builds b LEFT JOIN sourcestamps ss ON ss.id = b.sourcestamp
                 WHERE b.id < ?2 AND b.id >= ?3
                   AND +b.builder IN (SELECT value FROM json_each(?1))
                   AND (?4 IS NULL OR ss.branch = ?4)
                 ORDER BY b.id DESC LIMIT ?5",
            )?;
            let rows = st.query_map(params![names, before, lo, branch, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, builder, number, result, revision) = row?;
                if let Some(revision) = revision.filter(|r| !r.is_empty()) {
                    out.push(ConsoleBuild {
                        id,
                        builder,
                        number,
                        result,
                        revision,
                    });
                }
            }
            Ok(out)
        })
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
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT b.id, b.builder, b.number, b.slave, b.started_at, b.finished_at,
                        b.result, substr(b.reason, 1, 2048), substr(b.text, 1, 2048),
                        b.total_steps, ch.id, ch.who
                 FROM changes ch
                 JOIN sourcestamp_changes sc ON sc.change = ch.id
                 JOIN builds b ON b.sourcestamp = sc.sourcestamp
                 WHERE ch.id > (SELECT coalesce(max(id), 0) FROM changes) - ?3
                   AND instr(lower(ch.who), lower(?1)) > 0
                 ORDER BY b.id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![author, limit, CONSOLE_WINDOW], |r| {
                Ok(AuthorBuild {
                    id: r.get(0)?,
                    row: super::builds::BuildRow {
                        builder: r.get(1)?,
                        number: r.get(2)?,
                        slave: r.get(3)?,
                        started_at: r.get(4)?,
                        finished_at: r.get(5)?,
                        result: r.get(6)?,
                        reason: r.get(7)?,
                        text: r.get(8)?,
                        total_steps: r.get(9)?,
                    },
                    change: r.get(10)?,
                    who: r.get(11)?,
                })
            })?;
            let mut out: Vec<AuthorBuild> = Vec::new();
            for r in rows {
                let r = r?;
                // A build of several of the author's Changes is listed once.
                if out.last().is_none_or(|l| l.id != r.id) {
                    out.push(r);
                }
            }
            Ok(out)
        })
        .await
    }
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
