//! `/builders/NAME/builds/N`, one build: its result, reason, slave, times, ETA,
//! source stamp and blamelist, the Stop form while it runs, its steps with their
//! logs, its artifacts, its Changes, its properties and its notifications
//! (mail, commit status) with their state.

use maud::html;
use warp::http::header::HeaderMap;
use warp::http::StatusCode;
use warp::reply::Response;

use super::waterfall::revision_link;
use super::{
    build_url, cached, db_error, duration_of, error_page, ok_page, result_word, table_head, Pc,
};
use crate::db::artifacts::ArtifactRow;
use crate::db::builds::BuildDetail;
use crate::db::notifications::NotificationRow;
use crate::db::webview::BuildCounts;
use crate::web::artifacts::artifact_url;
use crate::web::forms::{self, Forms};
use crate::web::html::{
    builder_link, fmt_duration, fmt_time, log_url, result_class, result_icon, seg, tests_text,
    unseg,
};

pub(super) async fn build_page(name: String, number: i64, h: HeaderMap, pc: Pc) -> Response {
    let name = unseg(&name);
    // A notification's state changes without a build event: it is in the key.
    let notes = match pc.ctx.db.build_notifications(&name, number).await {
        Ok(n) => n,
        Err(e) => return db_error(&pc, "build", e),
    };
    let states: Vec<(i64, &str, i64)> = notes
        .iter()
        .map(|n| (n.id, n.state.as_str(), n.attempts))
        .collect();
    let key = format!("/builders/{name}/builds/{number}#{states:?}");
    let p = pc.clone();
    let h2 = h.clone();
    let r = cached(&pc, &h, &key, async move {
        let buildset = p
            .ctx
            .db
            .buildset_of_build(&name, number)
            .await
            .ok()
            .flatten();
        let artifacts = match p.ctx.db.artifacts(&name, number).await {
            Ok(a) => a,
            Err(e) => return db_error(&p, "build", e),
        };
        match p.ctx.db.build(&name, number).await {
            Ok(Some(d)) => render_build(&d, buildset, &notes, &artifacts, &h2, &p),
            Ok(None) => error_page(
                &p,
                StatusCode::NOT_FOUND,
                "No such build",
                &format!("{name} has no build {number}"),
            ),
            Err(e) => db_error(&p, "build", e),
        }
    })
    .await;
    if forms::forms_allowed(&pc) {
        forms::personal(r)
    } else {
        r
    }
}

fn render_build(
    d: &BuildDetail,
    buildset: Option<i64>,
    notes: &[NotificationRow],
    artifacts: &[ArtifactRow],
    h: &HeaderMap,
    pc: &Pc,
) -> Response {
    let b = &d.build;
    let Forms {
        token,
        set_cookie: set,
        note,
    } = forms::forms_for(pc, h, &build_url(&b.builder, b.number));
    let counts = BuildCounts::of(&d.steps);
    let revlink = {
        let config = pc.ctx.config.borrow();
        config
            .builders()
            .into_iter()
            .find(|x| x.name == b.builder)
            .and_then(|x| config.factory(&x.factory).map(|f| f.revlink.clone()))
            .unwrap_or_default()
    };
    let revision = d
        .revision
        .clone()
        .or_else(|| d.properties.get("got_revision").map(|(v, _)| v.clone()))
        .filter(|r| !r.is_empty());
    let result = match &b.result {
        Some(r) => format!("{r}: {}", b.text),
        None => "building".to_string(),
    };
    let mut blame: Vec<&str> = d.changes.iter().map(|c| c.who.as_str()).collect();
    blame.sort();
    blame.dedup();
    let requests = &d.requests;
    // A pull request's build links the request: its URL as the hook stored it,
    // http(s) only (never a javascript: or data: link), escaped by maud.
    let pull_request = d
        .properties
        .get("pr_url")
        .map(|(u, _)| u.as_str())
        .filter(|u| {
            (u.starts_with("https://") || u.starts_with("http://"))
                && !u.chars().any(|c| c.is_control() || c.is_whitespace())
        })
        .map(|u| {
            let number = d
                .properties
                .get("pr_number")
                .map(|(n, _)| n.as_str())
                .unwrap_or("");
            let title = d
                .properties
                .get("pr_title")
                .map(|(t, _)| t.as_str())
                .unwrap_or("");
            (u, number, title)
        });
    let body = html! {
        h1 { (builder_link(&b.builder)) " build #" (b.number) }
        div #build-part data-part="build" {
            p class={ "result " (result_class(b.result.as_deref())) } id="build-result" {
                span.icon aria-hidden="true" { (result_icon(b.result.as_deref())) } " " (result)
            }
            table.props {
                tr { th { "reason" } td { (b.reason) } }
                tr { th { "slave" } td { a href={ "/slaves/" (seg(&b.slave)) } { (b.slave) } } }
                tr { th { "started" } td { (fmt_time(b.started_at)) } }
                tr { th { "duration" } td { (duration_of(b.started_at, b.finished_at)) } }
                @if let Some(f) = b.finished_at {
                    tr { th { "finished" } td { (fmt_time(f)) } }
                }
                @if let Some(eta) = d.eta {
                    tr { th { "ETA" } td { (fmt_duration(eta)) } }
                }
                tr { th { "branch" } td { (d.branch.as_deref().unwrap_or("(default)")) } }
                tr {
                    th { "revision" }
                    td {
                        @match &revision {
                            Some(r) => (revision_link(r, Some(revlink.as_str()))),
                            None => "(latest)",
                        }
                    }
                }
                @if let Some((url, number, title)) = pull_request {
                    tr #build-pull-request {
                        th { "pull request" }
                        td { a href=(url) { "#" (number) } " " (title) }
                    }
                }
                tr { th { "blamelist" } td { (blame.join(", ")) } }
                tr #build-tests { th { "tests" } td { (tests_text(&counts)) } }
                tr #build-warnings { th { "warnings" } td { (counts.warnings) } }
                @if let Some(bs) = buildset {
                    tr { th { "BuildSet" } td { a #buildset-link href={ "/api/v1/buildsets/" (bs) } { (bs) } } }
                }
                @if !requests.is_empty() {
                    tr {
                        th { "requests" }
                        td {
                            @for (i, r) in requests.iter().enumerate() {
                                @if i > 0 { ", " }
                                a.request-link href={ "/api/v1/buildrequests/" (r) } { (r) }
                            }
                        }
                    }
                }
            }
            (note)
            @if let Some(token) = &token {
                @if b.result.is_none() { (forms::stop_form(b, token)) }
                (forms::rebuild_form(b, token))
            }
            h2 { "Steps" }
            table.list.steps {
                (table_head(&["#", "step", "result", "duration", "logs"]))
                tbody {
                    @for s in &d.steps {
                        @let text = if s.finished_at.is_some() { &s.text } else { &s.description };
                        tr.step-row {
                            td { (s.number) }
                            td { (s.name) }
                            td class=(result_class(s.result.as_deref())) {
                                (result_word(s.result.as_deref())) " " (text)
                            }
                            td { @if let Some(t) = s.started_at { (duration_of(t, s.finished_at)) } }
                            td {
                                @for l in &s.logs {
                                    @let url = log_url(&b.builder, b.number, &s.name, &l.name);
                                    a.log href=(url) { (l.name) }
                                    " (" a href={ (url) "/text" } { "text" } ", " (l.lines) " lines) "
                                }
                            }
                        }
                    }
                }
            }
            @if !artifacts.is_empty() {
                h2 { "Artifacts" }
                table.list #artifacts {
                    (table_head(&["file", "size", "sha256"]))
                    tbody {
                        @for a in artifacts {
                            tr.artifact {
                                td { a.artifact href=(artifact_url(&b.builder, b.number, &a.path)) download { (a.path) } }
                                td { (a.size) }
                                td { code { (a.sha256) } }
                            }
                        }
                    }
                }
            }
            @if !d.changes.is_empty() {
                h2 { "Changes" }
                ul.changes {
                    @for c in &d.changes {
                        li {
                            a href={ "/changes/" (c.id) } { "change " (c.id) }
                            " by " (c.who) ": "
                            pre.comments { (c.comments) }
                        }
                    }
                }
            }
            @if !notes.is_empty() {
                h2 { "Notifications" }
                table.list #notifications {
                    (table_head(&["kind", "to", "state", "attempts", "last error", "message-id"]))
                    tbody {
                        @for n in notes {
                            tr.notification {
                                td { (n.kind) }
                                td { (n.target) }
                                td class={ "notify-" (n.state.replace(' ', "-")) } {
                                    (n.state)
                                    @if let Some(t) = n.done_at { " " (fmt_time(t)) }
                                    @if let Some(t) = n.next_at { ", next attempt " (fmt_time(t)) }
                                }
                                td { (n.attempts) }
                                td { (n.last_error.as_deref().unwrap_or("")) }
                                td { (n.message_id.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
            @if !d.properties.is_empty() {
                h2 { "Properties" }
                table.props {
                    (table_head(&["name", "value", "source"]))
                    tbody {
                        @for (k, (v, src)) in &d.properties {
                            tr { td { (k) } td { (v) } td { (src) } }
                        }
                    }
                }
            }
        }
    };
    let title = format!("{} build #{}", b.builder, b.number);
    let live = if b.result.is_none() { "page" } else { "" };
    forms::set_cookie(ok_page(pc, h, &title, live, body), set)
}
