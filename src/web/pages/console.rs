//! `/console`, the console of later Buildbot: rows are revisions (newest
//! first), columns builders, each cell the result of the builder's newest
//! build of that revision (icon and colour, linked); filtered like the
//! waterfall by category, branch and builder. And `/my?author=NAME`, the builds
//! of one author's Changes ("my builds").

use std::collections::HashMap;

use maud::html;
use warp::http::header::HeaderMap;
use warp::reply::Response;

use super::waterfall::revision_link;
use super::{build_cell, build_url, cached, db_error, ok_page, query_key, table_head, Pc};
use crate::web::html::{builder_link, fmt_time, result_class, result_icon};

/// Console cells per page at most (rows × builders): with 500 builders a page
/// has 8 revisions, well under 500 kB of HTML and its time budget.
const CONSOLE_CELLS: usize = 4_000;
/// Revisions on a console page at most.
const CONSOLE_ROWS: usize = 30;
/// Builds the console reads to fill its rows.
const CONSOLE_READ: u32 = 3_000;
/// Builds the author view lists.
const AUTHOR_BUILDS: u32 = 50;

pub(super) async fn console(q: HashMap<String, String>, h: HeaderMap, pc: Pc) -> Response {
    let key = query_key("/console", &q);
    let p = pc.clone();
    let h2 = h.clone();
    cached(
        &pc,
        &h,
        &key,
        async move { render_console(q, &h2, &p).await },
    )
    .await
}

async fn render_console(q: HashMap<String, String>, h: &HeaderMap, pc: &Pc) -> Response {
    let config = pc.ctx.config.borrow().clone();
    let category = q.get("category").cloned().unwrap_or_default();
    let branch = q.get("branch").cloned().unwrap_or_default();
    let builder = q.get("builder").cloned().unwrap_or_default();
    // Names only: the console shows no builder state, so it reads none.
    let names: Vec<String> = config
        .builders()
        .into_iter()
        .filter(|b| {
            category.is_empty()
                || config
                    .factory(&b.factory)
                    .is_some_and(|f| f.category == category)
        })
        .map(|b| b.name)
        .filter(|n| builder.is_empty() || n.contains(builder.as_str()))
        .collect();
    let builds = match pc
        .ctx
        .db
        .console_builds(
            names.clone(),
            Some(branch.clone()).filter(|b| !b.is_empty()),
            i64::MAX,
            CONSOLE_READ,
        )
        .await
    {
        Ok(b) => b,
        Err(e) => return db_error(pc, "console builds", e),
    };
    let max_rows = (CONSOLE_CELLS / names.len().max(1)).clamp(5, CONSOLE_ROWS);
    let col: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    // Revisions in the order of their newest build; each cell its newest build.
    let mut rows: Vec<(&str, i64, Vec<Option<&crate::db::webview::ConsoleBuild>>)> = Vec::new();
    let mut row_of: HashMap<&str, usize> = HashMap::new();
    for b in &builds {
        let Some(&i) = col.get(b.builder.as_str()) else {
            continue;
        };
        let r = match row_of.get(b.revision.as_str()) {
            Some(&r) => r,
            None => {
                if rows.len() >= max_rows {
                    continue;
                }
                rows.push((b.revision.as_str(), b.id, vec![None; names.len()]));
                row_of.insert(b.revision.as_str(), rows.len() - 1);
                rows.len() - 1
            }
        };
        if rows[r].2[i].is_none() {
            rows[r].2[i] = Some(b);
        }
    }
    let sources = pc
        .ctx
        .db
        .build_sources(rows.iter().map(|(_, id, _)| *id).collect())
        .await
        .unwrap_or_default();
    let revlinks: HashMap<String, String> = config
        .builders()
        .into_iter()
        .filter_map(|b| Some((b.name, config.factory(&b.factory)?.revlink.clone())))
        .collect();
    let revlink_of = |name: &str| revlinks.get(name).cloned().unwrap_or_default();
    let first_builder: HashMap<i64, String> =
        builds.iter().map(|b| (b.id, b.builder.clone())).collect();
    let body = html! {
        h1 { "Console" }
        form.filters method="get" action="/console" {
            label { "Category " input name="category" value=(category) size="10"; }
            " "
            label { "Branch " input name="branch" value=(branch) size="12"; }
            " "
            label { "Builder " input name="builder" value=(builder) size="12"; }
            " "
            button type="submit" { "Show" }
        }
        div #console-part.scroller data-part="console" {
            table.console {
                thead {
                    tr {
                        th.rev { "revision" }
                        th.who { "change" }
                        @for n in &names { th.builder { (builder_link(n)) } }
                    }
                }
                tbody {
                    @for (rev, id, cells) in &rows {
                        @let src = sources.get(id);
                        @let link = first_builder.get(id).map(|b| revlink_of(b)).unwrap_or_default();
                        tr data-revision=(rev) {
                            td.rev { (revision_link(rev, Some(link.as_str()))) }
                            td.who {
                                @if let Some(s) = src {
                                    @if let Some(w) = &s.change_who { (w) br; }
                                    @if let Some(l) = &s.change_line { small { (l) } }
                                }
                            }
                            @for c in cells {
                                @match c {
                                    Some(b) => td class={ "cell " (result_class(b.result.as_deref())) } title={ "#" (b.number) " " (b.result.as_deref().unwrap_or("building")) } {
                                        a href=(build_url(&b.builder, b.number)) { (result_icon(b.result.as_deref())) }
                                    },
                                    None => td.idle {},
                                }
                            }
                        }
                    }
                }
            }
            @if rows.is_empty() { p { "No builds of a known revision yet." } }
        }
    };
    ok_page(pc, h, "Console", "page", body)
}

pub(super) async fn my_builds(q: HashMap<String, String>, h: HeaderMap, pc: Pc) -> Response {
    let key = query_key("/my", &q);
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, &key, async move {
        let author = q
            .get("author")
            .map(|a| a.trim().to_string())
            .unwrap_or_default();
        let builds = if author.is_empty() {
            Vec::new()
        } else {
            match p.ctx.db.author_builds(author.clone(), AUTHOR_BUILDS).await {
                Ok(b) => b,
                Err(e) => return db_error(&p, "my builds", e),
            }
        };
        let body = html! {
            h1 { "My builds" }
            form.filters #my-form method="get" action="/my" {
                label { "Change author " input #my-author name="author" value=(author) size="24" placeholder="name or e-mail"; }
                " "
                button type="submit" { "Show" }
            }
            div #my-part data-part="my" {
                @if !author.is_empty() {
                    @if builds.is_empty() {
                        p { "No builds of Changes by " (author) " yet." }
                    } @else {
                        table.list.builds #my-builds {
                            (table_head(&["build", "builder", "started", "change", "text"]))
                            tbody {
                                @for b in &builds {
                                    tr {
                                        (build_cell(&b.row))
                                        td { (builder_link(&b.row.builder)) }
                                        td { (fmt_time(b.row.started_at)) }
                                        td { a href={ "/changes/" (b.change) } { "change " (b.change) } " by " (b.who) }
                                        td { (b.row.text) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
        ok_page(&p, &h2, "My builds", "page", body)
    })
    .await
}
