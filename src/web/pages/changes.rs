//! `/changes`, the Changes newest first (paged back with `before`), and
//! `/changes/ID`, one Change in full: who, when, branch, revision, repository,
//! comments, files and links (a link only for `http(s)` URLs).

use std::collections::HashMap;

use maud::html;
use warp::http::header::HeaderMap;
use warp::http::StatusCode;
use warp::reply::Response;

use super::waterfall::SUMMARY_CAPS;
use super::{cached, db_error, error_page, ok_page, pager, query_key, table_head, Pc};
use crate::db::listing::ONE_CAPS;
use crate::web::html::{fmt_time, safe_link};

/// Changes per `/changes` page.
const CHANGES_PAGE: u32 = 50;

pub(super) async fn changes_page(q: HashMap<String, String>, h: HeaderMap, pc: Pc) -> Response {
    let key = query_key("/changes", &q);
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, &key, async move {
        let before: Option<i64> = q.get("before").and_then(|b| b.parse().ok());
        let (list, more) = match p
            .ctx
            .db
            .changes_page(CHANGES_PAGE, before, SUMMARY_CAPS, usize::MAX)
            .await
        {
            Ok(page) => (page.rows, page.more),
            Err(e) => return db_error(&p, "changes", e),
        };
        let older = list.last().filter(|_| more).map(|c| c.id);
        let body = html! {
            h1 { "Changes" }
            div #changes-part data-part="changes" {
                table.list {
                    (table_head(&["change", "who", "when", "branch", "revision", "comments", "files"]))
                    tbody {
                        @for c in &list {
                            tr {
                                td { a href={ "/changes/" (c.id) } { (c.id) } }
                                td { (c.who) }
                                td { (fmt_time(c.when as f64)) }
                                td { (c.branch.as_deref().unwrap_or("")) }
                                td { (c.revision.as_deref().map(|r| r.get(..12).unwrap_or(r)).unwrap_or("")) }
                                td { (c.comments.lines().next().unwrap_or("")) }
                                td { (c.files_total) }
                            }
                        }
                    }
                }
            }
            (pager("/changes", &[], older, "older changes →"))
        };
        let live = if before.is_none() { "page" } else { "" };
        ok_page(&p, &h2, "Changes", live, body)
    })
    .await
}

pub(super) async fn change_page(id: i64, h: HeaderMap, pc: Pc) -> Response {
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, &format!("/changes/{id}"), async move {
        let c = match p.ctx.db.change_capped(id, ONE_CAPS).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return error_page(
                    &p,
                    StatusCode::NOT_FOUND,
                    "No such change",
                    &format!("there is no change {id}"),
                )
            }
            Err(e) => return db_error(&p, "change", e),
        };
        let body = html! {
            h1 { "Change " (c.id) }
            table.props {
                tr { th { "who" } td { (c.who) } }
                tr { th { "when" } td { (fmt_time(c.when as f64)) } }
                tr { th { "branch" } td { (c.branch.as_deref().unwrap_or("(default)")) } }
                tr { th { "revision" } td { (c.revision.as_deref().unwrap_or("")) } }
                tr { th { "repository" } td { (safe_link(&c.repository)) } }
                tr { th { "project" } td { (c.project) } }
                tr { th { "category" } td { (c.category) } }
            }
            @if !c.truncated.is_empty() {
                p.note {
                    "Cut short here (stored longer than the master shows): "
                    (c.truncated.join(", ")) "."
                }
            }
            h2 { "Comments" }
            pre.comments { (c.comments) }
            h2 { "Files" }
            ul.files { @for f in &c.files { li { (f) } } }
            @if !c.links.is_empty() {
                h2 { "Links" }
                ul { @for l in &c.links { li { (safe_link(l)) } } }
            }
            p { a href={ "/changes?before=" (c.id) } { "older changes" } }
        };
        ok_page(&p, &h2, &format!("Change {id}"), "", body)
    })
    .await
}
