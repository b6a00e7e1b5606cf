//! The waterfall (`/` and `/waterfall`), as in Buildbot 0.7: one column per
//! builder, its last build and what it does now at the top, then the builds
//! newest first with their steps and logs, and the Changes beside the builds they
//! came before. Filtered by category and branch, paged back through time with
//! `before` (a build id).

use std::collections::{BTreeSet, HashMap, HashSet};

use maud::{html, Markup};
use warp::http::header::HeaderMap;
use warp::reply::Response;

use super::{
    build_url, builder_states, cached, db_error, duration_of, ok_page, pager, query_key,
    result_word, BuilderView, Pc,
};
use crate::db::listing::{CappedChange, Caps};
use crate::db::status::{BuilderState, WaterfallBuild};
use crate::db::webview::BuildSource;
use crate::engine::WaitReason;
use crate::web::html::{builder_link, fmt_duration, fmt_time, log_url, result_class, result_icon};

/// Builds shown per waterfall page.
const WATERFALL_BUILDS: u32 = 60;

/// How much of each Change the waterfall and `/changes` read: the first line of
/// the comments is all they show, and the number of files.
pub(super) const SUMMARY_CAPS: Caps = Caps {
    text: 2048,
    list: 0,
};

pub(super) async fn waterfall(q: HashMap<String, String>, h: HeaderMap, pc: Pc) -> Response {
    // Tree-stable deadlines change without an engine event: they are in the key.
    let timers = pc.ctx.db.scheduler_timers().await.unwrap_or_default();
    let key = format!("{}#{timers:?}", query_key("/waterfall", &q));
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, &key, async move {
        render_waterfall(q, timers, &h2, &p).await
    })
    .await
}

/// What a builder's head says beyond its state: why its requests wait, and
/// when its tree-stable timer fires.
#[derive(Default)]
pub(super) struct Waits {
    /// Builder → why its pending requests wait.
    pub reasons: HashMap<String, WaitReason>,
    /// Factory → the earliest tree-stable deadline of its change scheduler.
    pub stable: HashMap<String, f64>,
}

impl Waits {
    /// The deadlines of `timers` (scheduler, branch, deadline) per factory: a
    /// factory's change scheduler is named after it.
    pub fn stable_of(timers: &[(String, String, f64)]) -> HashMap<String, f64> {
        let mut out: HashMap<String, f64> = HashMap::new();
        for (s, _, d) in timers {
            if s.contains(':') {
                continue;
            }
            let e = out.entry(s.clone()).or_insert(*d);
            *e = e.min(*d);
        }
        out
    }
}

/// "build in N s (tree-stable)", with the deadline for the page's countdown.
pub(super) fn tree_stable_note(deadline: f64) -> Markup {
    let left = (deadline - crate::calendar::now_f64()).ceil().max(0.0) as i64;
    html! {
        span.tree-stable data-deadline=(deadline) {
            "build in " span.secs { (left) } " s (tree-stable)"
        }
    }
}

async fn render_waterfall(
    q: HashMap<String, String>,
    timers: Vec<(String, String, f64)>,
    h: &HeaderMap,
    pc: &Pc,
) -> Response {
    let config = pc.ctx.config.borrow().clone();
    let category = q.get("category").cloned().unwrap_or_default();
    let branch = q.get("branch").cloned().unwrap_or_default();
    let builder = q.get("builder").cloned().unwrap_or_default();
    let before: Option<i64> = q.get("before").and_then(|b| b.parse().ok());
    let all = match builder_states(
        &pc.ctx,
        None,
        Some(category.as_str()).filter(|c| !c.is_empty()),
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return db_error(pc, "waterfall", e),
    };
    let all_names: Vec<String> = all.iter().map(|b| b.name.clone()).collect();
    // `builder` is a substring of the builder names to show (`gcc` shows every
    // `gcc-…` builder).
    let shown: Vec<_> = all
        .into_iter()
        .filter(|b| category.is_empty() || super::in_category(&config, &b.factory, &category))
        .filter(|b| builder.is_empty() || b.name.contains(builder.as_str()))
        .collect();
    let names: Vec<String> = shown.iter().map(|b| b.name.clone()).collect();
    let (builds, older) = match pc
        .ctx
        .db
        .waterfall(
            names.clone(),
            Some(branch.clone()).filter(|b| !b.is_empty()),
            before.unwrap_or(i64::MAX),
            WATERFALL_BUILDS,
        )
        .await
    {
        Ok(b) => b,
        Err(e) => return db_error(pc, "waterfall builds", e),
    };
    // ETAs of running builds, for the activity row.
    let mut etas: HashMap<(String, i64), Option<f64>> = HashMap::new();
    for b in &shown {
        for r in &b.running {
            if let Ok(Some(d)) = pc.ctx.db.build(&r.builder, r.number).await {
                etas.insert((r.builder.clone(), r.number), d.eta);
            }
        }
    }
    let mut waits = Waits {
        stable: Waits::stable_of(&timers),
        ..Waits::default()
    };
    // Why requests wait, for the first 50 builders with any (each may read a
    // slave's row).
    for b in shown.iter().filter(|b| b.pending > 0).take(50) {
        if let Ok(Some(w)) = pc.ctx.engine.waiting(&b.name).await {
            waits.reasons.insert(b.name.clone(), w);
        }
    }
    let changes = if before.is_none() {
        pc.ctx
            .db
            .changes_page(30, None, SUMMARY_CAPS, usize::MAX)
            .await
            .map(|p| p.rows)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut cats: BTreeSet<&str> = config
        .factories
        .iter()
        .map(|f| f.category.as_str())
        .filter(|c| !c.is_empty())
        .collect();
    // `pull`: the builders of pull requests, and the requests' Changes.
    let pull = crate::web::change_hook::PULL_CATEGORY;
    if config.factories.iter().any(|f| f.pull_requests) {
        cats.insert(pull);
    }
    let changes: Vec<&CappedChange> = changes
        .iter()
        .filter(|c| branch.is_empty() || c.branch.as_deref() == Some(branch.as_str()))
        .filter(|c| category != pull || c.category == pull)
        .collect();
    let first_build = pc
        .ctx
        .db
        .first_builds_of_changes(changes.iter().map(|c| c.id).collect(), names.clone())
        .await
        .unwrap_or_default();
    let sources = pc
        .ctx
        .db
        .build_sources(builds.iter().map(|b| b.id).collect())
        .await
        .unwrap_or_default();
    let revlinks: HashMap<&str, &str> = shown
        .iter()
        .filter_map(|b| {
            let f = config.factory(&b.factory)?;
            Some((b.name.as_str(), f.revlink.as_str()))
        })
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let looks = BoxLooks { sources, revlinks };
    let unbuilt: Vec<i64> = changes
        .iter()
        .filter(|c| !first_build.contains_key(&c.id))
        .map(|c| c.id)
        .collect();
    let waiting = if unbuilt.is_empty() {
        HashSet::new()
    } else {
        pc.ctx.db.waiting_changes(unbuilt).await.unwrap_or_default()
    };
    let plan = plan_rows(&names, &builds, changes, &first_build, before.is_none());
    let body = html! {
        h1 { "Waterfall" }
        form.filters method="get" action="/waterfall" {
            label {
                "Category "
                select name="category" {
                    option value="" { "all" }
                    @for c in &cats {
                        option value=(c) selected[*c == category] { (c) }
                    }
                }
            }
            " "
            label { "Branch " input name="branch" value=(branch) size="12"; }
            " "
            label {
                "Builder "
                input name="builder" value=(builder) size="12" list="builder-names";
                datalist #builder-names { @for n in &all_names { option value=(n) {} } }
            }
            " "
            button type="submit" { "Show" }
        }
        div #waterfall-part.scroller data-part="waterfall" {
            table.waterfall {
                thead { (heads(&shown, &etas, &waits)) }
                tbody { (rows(&plan, &looks, &waiting)) }
            }
        }
        (pager(
            "/waterfall",
            &[("category", &category), ("branch", &branch), ("builder", &builder)],
            older,
            "older builds →",
        ))
    };
    let live = if before.is_none() { "page" } else { "" };
    ok_page(pc, h, "Waterfall", live, body)
}

/// The head rows: the builders, their last builds and what they do now.
fn heads(
    shown: &[BuilderView],
    etas: &HashMap<(String, i64), Option<f64>>,
    waits: &Waits,
) -> Markup {
    html! {
        tr {
            th.time { "time" }
            th.changes { "changes" }
            @for b in shown {
                th.builder {
                    (builder_link(&b.name))
                    @if !b.category.is_empty() { br; small { (b.category) } }
                }
            }
        }
        tr.last {
            th { "last build" }
            td {}
            @for b in shown {
                @if let Some(l) = &b.last_build {
                    td class={ (result_class(l.result.as_deref())) " lastbuild" } data-builder=(b.name) {
                        a href=(build_url(&b.name, l.number)) { "#" (l.number) }
                        " " (result_word(l.result.as_deref()))
                        br;
                        small { (l.text) }
                    }
                } @else {
                    td.none.lastbuild { "no builds yet" }
                }
            }
        }
        tr.activity {
            th { "activity" }
            td {}
            @for b in shown {
                td class={ "state-" (b.state.as_str()) } {
                    @if b.state == BuilderState::Building {
                        "building"
                        @for r in &b.running {
                            " "
                            a href=(build_url(&b.name, r.number)) { "#" (r.number) }
                            @if let Some(Some(eta)) = etas.get(&(r.builder.clone(), r.number)) {
                                " ETA " (fmt_duration(*eta))
                            }
                        }
                    } @else {
                        (b.state.as_str())
                    }
                    @if b.pending > 0 {
                        br;
                        small { (b.pending) " pending" }
                        @if let Some(w) = waits.reasons.get(&b.name) {
                            br;
                            small class={ "waiting wait-" (w.kind.as_str()) } { "waiting: " (w.text) }
                        }
                    }
                    @if let Some(d) = waits.stable.get(&b.factory) {
                        br;
                        small { (tree_stable_note(*d)) }
                    }
                }
            }
        }
    }
}

/// One body row of the waterfall.
#[derive(Debug)]
struct Row<'a> {
    kind: RowKind,
    /// The build in each column (at most one).
    cells: Vec<Option<&'a WaterfallBuild>>,
    /// The Changes whose first build is in this row (or pending, or earlier).
    changes: Vec<&'a CappedChange>,
}

/// What a row's time cell says.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RowKind {
    /// Changes no shown build contains yet.
    Pending,
    /// Builds that started at this time (the same second).
    At(f64),
    /// Changes first built before the oldest build shown.
    Earlier,
}

/// The body rows: one row per start time (builds that started in the same
/// second share it, one per column), newest first, so a build sits in the row
/// of its own start; each Change beside the first shown build that contains it
/// (`first_build`: Change id → build id), in a `pending` row at the top when no
/// build contains it yet, in an `earlier` row at the bottom when its first build
/// is older than the page.
fn plan_rows<'a>(
    names: &[String],
    builds: &'a [WaterfallBuild],
    changes: Vec<&'a CappedChange>,
    first_build: &HashMap<i64, i64>,
    newest: bool,
) -> Vec<Row<'a>> {
    let col: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut ordered: Vec<(usize, &WaterfallBuild)> = builds
        .iter()
        .filter_map(|b| col.get(b.row.builder.as_str()).map(|&i| (i, b)))
        .collect();
    ordered.sort_by(|(_, a), (_, b)| {
        b.row
            .started_at
            .total_cmp(&a.row.started_at)
            .then(b.id.cmp(&a.id))
    });
    let mut rows: Vec<Row<'a>> = Vec::new();
    let mut row_of: HashMap<i64, usize> = HashMap::new();
    for (i, b) in ordered {
        let second = b.row.started_at.floor();
        let fits = rows.last().is_some_and(|r| {
            matches!(r.kind, RowKind::At(t) if t.floor() == second) && r.cells[i].is_none()
        });
        if !fits {
            rows.push(Row {
                kind: RowKind::At(b.row.started_at),
                cells: vec![None; names.len()],
                changes: Vec::new(),
            });
        }
        let n = rows.len() - 1;
        rows[n].cells[i] = Some(b);
        row_of.insert(b.id, n);
    }
    let mut pending = Vec::new();
    let mut earlier = Vec::new();
    for c in changes {
        match first_build.get(&c.id) {
            Some(b) => match row_of.get(b) {
                Some(&n) => rows[n].changes.push(c),
                None => earlier.push(c),
            },
            None if newest => pending.push(c),
            None => {}
        }
    }
    if !pending.is_empty() {
        rows.insert(
            0,
            Row {
                kind: RowKind::Pending,
                cells: vec![None; names.len()],
                changes: pending,
            },
        );
    }
    if !earlier.is_empty() {
        rows.push(Row {
            kind: RowKind::Earlier,
            cells: vec![None; names.len()],
            changes: earlier,
        });
    }
    rows
}

/// The body rows of [`plan_rows`]; `waiting`: the top row's Changes that a
/// scheduler or a request holds.
fn rows(plan: &[Row<'_>], looks: &BoxLooks<'_>, waiting: &HashSet<i64>) -> Markup {
    html! {
        @for r in plan {
            @let class = match r.kind { RowKind::Pending => "pending", RowKind::At(_) => "at", RowKind::Earlier => "earlier" };
            tr class=(class) {
                td.time {
                    @match r.kind {
                        RowKind::Pending => "pending",
                        RowKind::At(t) => (fmt_time(t)),
                        RowKind::Earlier => "earlier",
                    }
                }
                td.changes {
                    @for c in &r.changes {
                        @let how = if r.kind != RowKind::Pending {
                            Unbuilt::No
                        } else if waiting.contains(&c.id) {
                            Unbuilt::Pending
                        } else {
                            Unbuilt::NotBuilt
                        };
                        (change_box(c, how))
                    }
                }
                @for run in cell_runs(&r.cells) {
                    @match run {
                        CellRun::Idle(1) => td.idle {},
                        // A run of builders with nothing in this row: one cell
                        // (500 builders × 60 rows of empty cells were most of a
                        // big waterfall's bytes).
                        CellRun::Idle(n) => td.idle colspan=(n) {},
                        CellRun::Build(b) => (build_column(b, looks)),
                    }
                }
            }
        }
    }
}

/// A row's cells as they are written: each build, and each run of empty cells.
#[derive(Debug, PartialEq)]
enum CellRun<'a, T> {
    Idle(usize),
    Build(&'a T),
}

fn cell_runs<T>(cells: &[Option<T>]) -> Vec<CellRun<'_, T>> {
    let mut out = Vec::new();
    for cell in cells {
        match (cell, out.last_mut()) {
            (None, Some(CellRun::Idle(n))) => *n += 1,
            (None, _) => out.push(CellRun::Idle(1)),
            (Some(b), _) => out.push(CellRun::Build(b)),
        }
    }
    out
}

/// How a Change of the top row waits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unbuilt {
    /// Built already (not in the top row).
    No,
    /// A scheduler holds it or a request for it waits.
    Pending,
    /// Nothing will build it (no scheduler took it).
    NotBuilt,
}

/// A Change beside the builds: who, linking to it, and its first line; one no
/// build contains yet says whether one will (`pending`) or not (`no build`).
fn change_box(c: &CappedChange, unbuilt: Unbuilt) -> Markup {
    let class = match unbuilt {
        Unbuilt::No => "change",
        Unbuilt::Pending => "change pending",
        Unbuilt::NotBuilt => "change unbuilt",
    };
    html! {
        div class=(class) data-change=(c.id) {
            a href={ "/changes/" (c.id) } { (c.who) }
            @match unbuilt {
                Unbuilt::Pending => { " " small.pending-word { "(pending)" } },
                Unbuilt::NotBuilt => { " " small.pending-word { "(no build)" } },
                Unbuilt::No => {},
            }
            br;
            small { (c.comments.lines().next().unwrap_or("")) }
        }
    }
}

/// What build boxes show besides the build: its source, and each builder's
/// `revlink`.
pub(super) struct BoxLooks<'a> {
    pub sources: HashMap<i64, BuildSource>,
    /// Builder name → its factory's `revlink` (`%s` for the revision).
    pub revlinks: HashMap<&'a str, &'a str>,
}

/// A revision, short (12 characters), linked through `revlink` when the factory
/// has an http(s) one.
pub(super) fn revision_link(rev: &str, revlink: Option<&str>) -> Markup {
    let short: String = rev.chars().take(12).collect();
    let href = revlink
        .filter(|l| l.starts_with("http://") || l.starts_with("https://"))
        .map(|l| l.replace("%s", rev));
    html! {
        @match href {
            Some(h) => a.rev href=(h) title=(rev) { code { (short) } },
            None => code.rev title=(rev) { (short) },
        }
    }
}

/// A build's cell: its result (icon and word as well as colour), revision and
/// Change, then its steps newest first with their logs.
fn build_column(b: &WaterfallBuild, looks: &BoxLooks<'_>) -> Markup {
    let row = &b.row;
    let src = looks.sources.get(&b.id);
    html! {
        td.cell {
            div class={ "build " (result_class(row.result.as_deref())) } data-builder=(row.builder) data-number=(row.number) data-started=(row.started_at) {
                span.icon aria-hidden="true" { (result_icon(row.result.as_deref())) } " "
                a href=(build_url(&row.builder, row.number)) { "#" (row.number) }
                @if row.reason.starts_with(crate::engine::tryjob::TRY_REASON_PREFIX) {
                    " " span.try title=(row.reason) { "try" }
                }
                " " (if row.result.is_some() { row.text.as_str() } else { "building" })
                @if let Some(src) = src {
                    @if let Some(rev) = &src.revision {
                        br;
                        (revision_link(rev, looks.revlinks.get(row.builder.as_str()).copied()))
                    }
                    @if let Some(line) = &src.change_line {
                        br;
                        small.change-line { (line) }
                    }
                }
            }
            @for s in b.steps.iter().rev() {
                @let text = if s.finished_at.is_some() {
                    &s.text
                } else if s.description.is_empty() {
                    &s.name
                } else {
                    &s.description
                };
                @let text = if text.is_empty() { &s.name } else { text };
                @let class = result_class(if s.started_at.is_some() { s.result.as_deref() } else { Some("skipped") });
                div class={ "step " (class) } {
                    (text)
                    @for l in &s.logs {
                        " "
                        a.log href=(log_url(&row.builder, row.number, &s.name, &l.name)) { (l.name) }
                    }
                    @if let Some(st) = s.started_at {
                        " " small { (duration_of(st, s.finished_at)) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_empty_cells_become_one_cell() {
        let cells = [
            None,
            None,
            Some(1),
            None,
            Some(2),
            Some(3),
            None,
            None,
            None,
        ];
        assert_eq!(
            cell_runs(&cells),
            vec![
                CellRun::Idle(2),
                CellRun::Build(&1),
                CellRun::Idle(1),
                CellRun::Build(&2),
                CellRun::Build(&3),
                CellRun::Idle(3),
            ]
        );
        assert_eq!(cell_runs::<i32>(&[]), vec![]);
    }
    use crate::db::builds::BuildRow;

    fn build(id: i64, builder: &str, started_at: f64) -> WaterfallBuild {
        WaterfallBuild {
            id,
            row: BuildRow {
                builder: builder.into(),
                number: id,
                slave: "s".into(),
                started_at,
                finished_at: Some(started_at + 30.0),
                result: Some("success".into()),
                reason: String::new(),
                text: "build successful".into(),
                total_steps: 1,
            },
            steps: Vec::new(),
        }
    }

    fn change(id: i64, when: i64) -> CappedChange {
        CappedChange {
            id,
            who: "alice".into(),
            files: Vec::new(),
            comments: format!("change {id}"),
            revision: None,
            branch: None,
            when,
            repository: String::new(),
            category: String::new(),
            links: Vec::new(),
            project: String::new(),
            truncated: Vec::new(),
            files_total: 0,
        }
    }

    /// A row's kind, its (column, build id) pairs and its Change ids.
    type Shape = (RowKind, Vec<(usize, i64)>, Vec<i64>);

    /// What each row holds.
    fn shape(plan: &[Row<'_>]) -> Vec<Shape> {
        plan.iter()
            .map(|r| {
                let cells = r
                    .cells
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| c.map(|b| (i, b.id)))
                    .collect();
                (r.kind, cells, r.changes.iter().map(|c| c.id).collect())
            })
            .collect()
    }

    /// The case: a build of `a` that started at 17:19:48 shared the row
    /// of `b`'s build of 17:17:56 (rows packed one build per column), and a
    /// Change of 17:18:30 sat beside that row's green build of `b` although only
    /// `a`'s build contained it. Now each build has the row of its own start and
    /// the Change sits beside the build that contains it.
    #[test]
    fn a_build_sits_in_the_row_of_its_start_and_a_change_beside_its_first_build() {
        let t = 1_765_000_000.0; // some day at 17:17:56 or so; only the order matters
        let names = vec!["a".to_string(), "b".to_string()];
        let builds = vec![build(2, "a", t + 112.0), build(1, "b", t)];
        let c = change(7, t as i64 + 34);
        let first: HashMap<i64, i64> = [(7, 2)].into();
        let plan = plan_rows(&names, &builds, vec![&c], &first, true);
        assert_eq!(
            shape(&plan),
            vec![
                (RowKind::At(t + 112.0), vec![(0, 2)], vec![7]),
                (RowKind::At(t), vec![(1, 1)], vec![]),
            ]
        );
    }

    /// Builds that started in the same second share a row; a Change no build
    /// contains yet is pending at the top; one first built before the page
    /// ends it as `earlier`.
    #[test]
    fn same_second_builds_share_a_row_and_unbuilt_changes_are_pending() {
        let t = 1_765_000_000.0;
        let names = vec!["a".to_string(), "b".to_string()];
        let builds = vec![
            build(4, "b", t + 60.4),
            build(3, "a", t + 60.1),
            build(2, "a", t + 30.0),
        ];
        let (pending, shown, old) = (change(9, 0), change(8, 0), change(5, 0));
        let first: HashMap<i64, i64> = [(8, 3), (5, 1)].into();
        let plan = plan_rows(&names, &builds, vec![&pending, &shown, &old], &first, true);
        assert_eq!(
            shape(&plan),
            vec![
                (RowKind::Pending, vec![], vec![9]),
                (RowKind::At(t + 60.4), vec![(0, 3), (1, 4)], vec![8]),
                (RowKind::At(t + 30.0), vec![(0, 2)], vec![]),
                (RowKind::Earlier, vec![], vec![5]),
            ]
        );
        // An older page shows no pending row.
        let plan = plan_rows(&names, &builds, vec![&pending], &first, false);
        assert!(plan.iter().all(|r| r.kind != RowKind::Pending));
    }
}
