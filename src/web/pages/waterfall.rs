//! The waterfall (`/` and `/waterfall`), as in Buildbot 0.7: one column per
//! builder, its last build and what it does now at the top, then the builds
//! newest first with their steps and logs, and the Changes beside the builds they
//! came before. Filtered by category and branch, paged back through time with
//! `before` (a build id).

use std::collections::{BTreeSet, HashMap};

use maud::{html, Markup};
use warp::http::header::HeaderMap;
use warp::reply::Response;

use super::{
    build_url, builder_states, cached, db_error, duration_of, ok_page, pager, query_key,
    result_word, BuilderView, Pc,
};
use crate::db::listing::{CappedChange, Caps};
use crate::db::status::{BuilderState, WaterfallBuild};
use crate::web::html::{builder_link, fmt_duration, fmt_time, log_url, result_class};

/// Builds shown per waterfall page.
const WATERFALL_BUILDS: u32 = 60;

/// How much of each Change the waterfall and `/changes` read: the first line of
/// the comments is all they show, and the number of files.
pub(super) const SUMMARY_CAPS: Caps = Caps {
    text: 2048,
    list: 0,
};

pub(super) async fn waterfall(q: HashMap<String, String>, h: HeaderMap, pc: Pc) -> Response {
    let key = query_key("/waterfall", &q);
    let p = pc.clone();
    let h2 = h.clone();
    cached(
        &pc,
        &h,
        &key,
        async move { render_waterfall(q, &h2, &p).await },
    )
    .await
}

async fn render_waterfall(q: HashMap<String, String>, h: &HeaderMap, pc: &Pc) -> Response {
    let config = pc.ctx.config.borrow().clone();
    let category = q.get("category").cloned().unwrap_or_default();
    let branch = q.get("branch").cloned().unwrap_or_default();
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
    let shown: Vec<_> = all
        .into_iter()
        .filter(|b| category.is_empty() || b.category == category)
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
    let cats: BTreeSet<&str> = config
        .factories
        .iter()
        .map(|f| f.category.as_str())
        .filter(|c| !c.is_empty())
        .collect();
    let changes: Vec<&CappedChange> = changes
        .iter()
        .filter(|c| branch.is_empty() || c.branch.as_deref() == Some(branch.as_str()))
        .collect();
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
            button type="submit" { "Show" }
        }
        div #waterfall-part data-part="waterfall" {
            table.waterfall {
                thead { (heads(&shown, &etas)) }
                tbody { (rows(&names, &builds, changes, before.is_none())) }
            }
        }
        (pager(
            "/waterfall",
            &[("category", &category), ("branch", &branch)],
            older,
            "older builds →",
        ))
    };
    let live = if before.is_none() { "page" } else { "" };
    ok_page(pc, h, "Waterfall", live, body)
}

/// The head rows: the builders, their last builds and what they do now.
fn heads(shown: &[BuilderView], etas: &HashMap<(String, i64), Option<f64>>) -> Markup {
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
                    @if b.pending > 0 { br; small { (b.pending) " pending" } }
                }
            }
        }
    }
}

/// The body rows: builds packed newest first, a row taking at most one build per
/// builder (so concurrent builds share a row and time runs down the page), each
/// row's Changes beside it and the Changes older than every build last.
fn rows(
    names: &[String],
    builds: &[WaterfallBuild],
    changes: Vec<&CappedChange>,
    newest: bool,
) -> Markup {
    let col: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut rows: Vec<Vec<Option<&WaterfallBuild>>> = Vec::new();
    for b in builds {
        let Some(&i) = col.get(b.row.builder.as_str()) else {
            continue;
        };
        match rows.last_mut() {
            Some(r) if r[i].is_none() => r[i] = Some(b),
            _ => {
                let mut r = vec![None; names.len()];
                r[i] = Some(b);
                rows.push(r);
            }
        }
    }
    let row_start = |r: &Vec<Option<&WaterfallBuild>>| {
        r.iter()
            .flatten()
            .map(|b| b.row.started_at)
            .fold(f64::INFINITY, f64::min)
    };
    let mut changes_left = changes;
    if rows.is_empty() && !changes_left.is_empty() {
        rows.push(vec![None; names.len()]);
    }
    // Each row with its start time and the Changes since then.
    let last_row = rows.len().saturating_sub(1);
    let mut plan = Vec::with_capacity(rows.len());
    for (ri, r) in rows.iter().enumerate() {
        let start = if ri == last_row && newest && r.iter().all(Option::is_none) {
            f64::NEG_INFINITY
        } else {
            row_start(r)
        };
        let (here, rest): (Vec<_>, Vec<_>) = changes_left
            .into_iter()
            .partition(|c| c.when as f64 >= start);
        changes_left = rest;
        plan.push((start, here, r));
    }
    html! {
        @for (start, here, r) in &plan {
            tr {
                td.time { @if start.is_finite() { (fmt_time(*start)) } }
                td.changes { @for c in here { (change_box(c)) } }
                @for cell in r.iter() {
                    @match cell {
                        None => td.idle {},
                        Some(b) => (build_column(b)),
                    }
                }
            }
        }
        @if !changes_left.is_empty() {
            tr {
                td.time { "earlier" }
                td.changes { @for c in &changes_left { (change_box(c)) } }
                @for _ in names { td.idle {} }
            }
        }
    }
}

/// A Change beside the builds: who, linking to it, and its first line.
fn change_box(c: &CappedChange) -> Markup {
    html! {
        div.change {
            a href={ "/changes/" (c.id) } { (c.who) }
            br;
            small { (c.comments.lines().next().unwrap_or("")) }
        }
    }
}

/// A build's cell: its result, then its steps newest first with their logs.
fn build_column(b: &WaterfallBuild) -> Markup {
    let row = &b.row;
    html! {
        td.cell {
            div class={ "build " (result_class(row.result.as_deref())) } data-builder=(row.builder) data-number=(row.number) {
                a href=(build_url(&row.builder, row.number)) { "#" (row.number) }
                @if row.reason.starts_with(crate::engine::tryjob::TRY_REASON_PREFIX) {
                    " " span.try title=(row.reason) { "try" }
                }
                " " (if row.result.is_some() { row.text.as_str() } else { "building" })
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
