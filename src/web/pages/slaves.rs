//! `/slaves`, every configured slave with what it told the master about itself
//! and its builders, and `/slaves/NAME`, one slave with its recent connections.

use maud::html;
use warp::http::header::HeaderMap;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{cached, db_error, error_page, ok_page, table_head, Pc};
use crate::db::slaves::SlaveRow;
use crate::web::html::{builder_link, fmt_time, seg, unseg};

/// Connections a slave's page lists.
const CONNECTIONS_SHOWN: u32 = 50;

fn state(connected: bool) -> &'static str {
    if connected {
        "connected"
    } else {
        "offline"
    }
}

fn seen(row: &SlaveRow) -> String {
    row.last_seen
        .map(|t| fmt_time(t as f64))
        .unwrap_or_default()
}

pub(super) async fn slaves_page(h: HeaderMap, pc: Pc) -> Response {
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, "/slaves", async move {
        let config = p.ctx.config.borrow().clone();
        let list = match crate::web::slaves_json(&p.ctx, &config).await {
            Ok(l) => l,
            Err(e) => return db_error(&p, "slaves", e),
        };
        let builders = config.builders();
        let body = html! {
            h1 { "Slaves" }
            div #slaves-part data-part="slaves" {
                table.list {
                    (table_head(&["slave", "state", "admin", "host", "os", "version", "last seen", "builders"]))
                    tbody {
                        @for j in &list {
                            @let s = &j.row;
                            tr {
                                td { a href={ "/slaves/" (seg(&s.name)) } { (s.name) } }
                                td class=(if s.connected { "success" } else { "offline" }) {
                                    (state(s.connected))
                                    @if let Some(problem) = &j.problem {
                                        br; small.problem { (problem) }
                                    }
                                }
                                td { (s.admin.as_deref().unwrap_or("")) }
                                td { (s.host.as_deref().unwrap_or("")) }
                                td { (s.os.as_deref().unwrap_or("")) }
                                td { (s.version.as_deref().unwrap_or("")) }
                                td { (seen(s)) }
                                td {
                                    @for (i, b) in builders.iter().filter(|b| b.slave == s.name).enumerate() {
                                        @if i > 0 { ", " }
                                        (builder_link(&b.name))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
        ok_page(&p, &h2, "Slaves", "page", body)
    })
    .await
}

pub(super) async fn slave_page(name: String, h: HeaderMap, pc: Pc) -> Response {
    let name = unseg(&name);
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, &format!("/slaves/{name}"), async move {
        let config = p.ctx.config.borrow().clone();
        if config.slave(&name).is_none() {
            return error_page(
                &p,
                StatusCode::NOT_FOUND,
                "No such slave",
                &format!("there is no slave named {name:?}"),
            );
        }
        let row = match p.ctx.db.slave(&name).await {
            Ok(r) => r.unwrap_or_else(|| SlaveRow::never_seen(&name)),
            Err(e) => return db_error(&p, "slave", e),
        };
        let problem = p
            .ctx
            .engine
            .slave_problems()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t);
        let conns = p
            .ctx
            .db
            .recent_connections(&name, CONNECTIONS_SHOWN)
            .await
            .unwrap_or_default();
        let body = html! {
            h1 { "Slave " (name) }
            div #slave-part data-part="slave" {
                table.props {
                    tr { th { "state" } td { (state(row.connected)) } }
                    @if let Some(problem) = &problem {
                        tr { th { "problem" } td.problem { (problem) } }
                    }
                    tr { th { "admin" } td { (row.admin.as_deref().unwrap_or("")) } }
                    tr { th { "host" } td { (row.host.as_deref().unwrap_or("")) } }
                    tr { th { "os" } td { (row.os.as_deref().unwrap_or("")) } }
                    tr { th { "version" } td { (row.version.as_deref().unwrap_or("")) } }
                    tr { th { "cpus" } td { @if let Some(n) = row.numcpus { (n) } } }
                    tr { th { "last seen" } td { (seen(&row)) } }
                }
                h2 { "Builders" }
                ul {
                    @for b in config.builders().iter().filter(|b| b.slave == name) {
                        li { (builder_link(&b.name)) }
                    }
                }
                h2 { "Connections" }
                table.list {
                    (table_head(&["from", "connected", "disconnected", "why"]))
                    tbody {
                        @for c in &conns {
                            tr {
                                td { (c.peer.as_deref().unwrap_or("")) }
                                td { (fmt_time(c.connected_at as f64)) }
                                td {
                                    @match c.disconnected_at {
                                        Some(t) => (fmt_time(t as f64)),
                                        None => "still connected",
                                    }
                                }
                                td { (c.reason.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        };
        ok_page(&p, &h2, &format!("Slave {name}"), "page", body)
    })
    .await
}
