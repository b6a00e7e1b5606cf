//! `/builders`, every builder with its state, last build and badge, and
//! `/builders/NAME`, one builder: its slaves, running builds (with Stop forms),
//! pending requests, recent builds paged back with `before`, and the Force Build
//! form.

use std::collections::HashMap;

use maud::html;
use warp::http::header::HeaderMap;
use warp::http::StatusCode;
use warp::reply::Response;

use super::waterfall::{tree_stable_note, Waits};
use super::{
    build_cell, build_url, builder_states, cached, db_error, duration_of, error_page, ok_page,
    pager, query_key, table_head, Pc,
};
use crate::db::listing::{LIST_CAPS, PAGE_BYTES};
use crate::web::forms::{self, Forms};
use crate::web::html::{builder_link, fmt_duration, fmt_time, seg, tests_text, unseg};

/// Builds shown per builder page.
const BUILDER_BUILDS: u32 = 25;
/// Pending BuildRequests a builder page lists.
const PENDING_SHOWN: u32 = 50;

pub(super) async fn builders_page(h: HeaderMap, pc: Pc) -> Response {
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, "/builders", async move {
        let list = match builder_states(&p.ctx, None, None).await {
            Ok(l) => l,
            Err(e) => return db_error(&p, "builders", e),
        };
        let body = html! {
            h1 { "Builders" }
            div #builders-part data-part="builders" {
                table.list {
                    (table_head(&["builder", "category", "slave", "state", "last build", "badge"]))
                    tbody {
                        @for b in &list {
                            tr {
                                td { (builder_link(&b.name)) }
                                td { (b.category) }
                                td {
                                    a href={ "/slaves/" (seg(b.slaves.first().map(String::as_str).unwrap_or(""))) } {
                                        (b.slaves.join(", "))
                                    }
                                }
                                td class={ "state-" (b.state.as_str()) } {
                                    (b.state.as_str())
                                    @if b.pending > 0 { ", " (b.pending) " pending" }
                                }
                                @if let Some(l) = &b.last_build {
                                    (build_cell(l))
                                } @else {
                                    td.none { "none" }
                                }
                                td { img alt="badge" src={ "/badge/" (seg(&b.name)) ".svg" }; }
                            }
                        }
                    }
                }
            }
        };
        ok_page(&p, &h2, "Builders", "page", body)
    })
    .await
}

pub(super) async fn builder_page(
    name: String,
    q: HashMap<String, String>,
    h: HeaderMap,
    pc: Pc,
) -> Response {
    let name = unseg(&name);
    // Tree-stable deadlines change without an engine event: they are in the key.
    let timers = pc.ctx.db.scheduler_timers().await.unwrap_or_default();
    let key = format!("{}#{timers:?}", query_key(&format!("/builders/{name}"), &q));
    let p = pc.clone();
    let h2 = h.clone();
    let r = cached(&pc, &h, &key, async move {
        render_builder(name, q, timers, &h2, &p).await
    })
    .await;
    if forms::forms_allowed(&pc) {
        forms::personal(r)
    } else {
        r
    }
}

async fn render_builder(
    name: String,
    q: HashMap<String, String>,
    timers: Vec<(String, String, f64)>,
    h: &HeaderMap,
    pc: &Pc,
) -> Response {
    let before: Option<i64> = q.get("before").and_then(|b| b.parse().ok());
    let list = match builder_states(&pc.ctx, Some(&name), None).await {
        Ok(l) => l,
        Err(e) => return db_error(pc, "builder", e),
    };
    let Some(b) = list.into_iter().find(|b| b.name == name) else {
        return error_page(
            pc,
            StatusCode::NOT_FOUND,
            "No such builder",
            &format!("there is no builder named {name:?}"),
        );
    };
    let (builds, more) = match pc
        .ctx
        .db
        .builds_page(&name, BUILDER_BUILDS, before, LIST_CAPS, PAGE_BYTES)
        .await
    {
        Ok(p) => (
            p.rows.into_iter().map(|b| b.row).collect::<Vec<_>>(),
            p.more,
        ),
        Err(e) => return db_error(pc, "builder builds", e),
    };
    let pending = pc
        .ctx
        .db
        .queued_requests(&name, PENDING_SHOWN)
        .await
        .unwrap_or_default();
    // Why they wait: the same text the API and `force --wait` give.
    let waiting = if pending.is_empty() {
        None
    } else {
        pc.ctx.engine.waiting(&name).await.ok().flatten()
    };
    let stable = Waits::stable_of(&timers).get(&b.factory).copied();
    let counts = pc
        .ctx
        .db
        .build_counts(&name, builds.iter().map(|r| r.number).collect())
        .await
        .unwrap_or_default();
    let slaves = pc.ctx.db.slaves().await.unwrap_or_default();
    let mut etas = HashMap::new();
    for r in &b.running {
        let eta = pc
            .ctx
            .db
            .build(&r.builder, r.number)
            .await
            .ok()
            .flatten()
            .and_then(|d| d.eta);
        etas.insert(r.number, eta);
    }
    let Forms {
        token,
        set_cookie: set,
        note,
    } = forms::forms_for(pc, h, &format!("/builders/{}", seg(&name)));
    let older = builds.last().filter(|_| more).map(|b| b.number);
    let badge = format!("/badge/{}.svg", seg(&name));
    let body = html! {
        h1 { "Builder " (name) }
        div #builder-part data-part="builder" {
            p {
                "factory " b { (b.factory) }
                @if !b.category.is_empty() { ", category " b { (b.category) } }
                " · "
                a href=(badge) { img alt="status badge" src=(badge); }
            }
            p #builder-state class={ "state-" (b.state.as_str()) } {
                "state: " b { (b.state.as_str()) }
                @if let Some(d) = stable {
                    " · " (tree_stable_note(d))
                }
            }
            h2 { "Slaves" }
            ul {
                @for s in &b.slaves {
                    li {
                        a href={ "/slaves/" (seg(s)) } { (s) }
                        ": "
                        @if slaves.iter().any(|r| &r.name == s && r.connected) { "connected" } @else { "offline" }
                    }
                }
            }
            @if !b.running.is_empty() {
                h2 { "Running" }
                ul.running {
                    @for r in &b.running {
                        li {
                            a href=(build_url(&name, r.number)) { "#" (r.number) }
                            " " (r.reason) " since " (fmt_time(r.started_at))
                            @if let Some(Some(e)) = etas.get(&r.number) { ", ETA " (fmt_duration(*e)) }
                            @if let Some(token) = &token { (forms::stop_form(r, token)) }
                        }
                    }
                }
            }
            h2 { "Pending requests (" (pending.len()) ")" }
            @if let Some(w) = &waiting {
                p #waiting class={ "waiting wait-" (w.kind.as_str()) } { "waiting: " (w.text) }
            }
            @if !pending.is_empty() {
                ul.pending {
                    @for r in &pending {
                        li { "request " (r.id) ": " (r.reason) " (queued " (fmt_time(r.submitted_at)) ")" }
                    }
                }
            }
            h2 { "Recent builds" }
            table.list.builds {
                (table_head(&["build", "started", "duration", "slave", "reason", "text", "tests", "warnings"]))
                tbody {
                    @for r in &builds {
                        @let c = counts.get(&r.number).copied().unwrap_or_default();
                        tr {
                            (build_cell(r))
                            td { (fmt_time(r.started_at)) }
                            td { (duration_of(r.started_at, r.finished_at)) }
                            td { (r.slave) }
                            td { (r.reason) }
                            td { (r.text) }
                            td.tests { (tests_text(&c)) }
                            td.warnings { (c.warnings) }
                        }
                    }
                }
            }
            (pager(&format!("/builders/{}", seg(&name)), &[], older, "older builds →"))
        }
        (note)
        @if let Some(token) = &token { (forms::force_form(&name, token)) }
    };
    let live = if before.is_none() { "page" } else { "" };
    let title = format!("Builder {name}");
    forms::set_cookie(ok_page(pc, h, &title, live, body), set)
}
