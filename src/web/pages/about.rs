//! `/about` (versions, the project, what this port allows), the files every
//! site has (`/static/…`, `/favicon.ico`, `/robots.txt`) and the per-builder SVG
//! badges (`/badge/NAME.svg`), drawn by the same template engine as the pages.

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use maud::html;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::{cached, error_page, not_modified, ok_page, Pc};
use crate::web::forms;
use crate::web::html::{self, safe_link, unseg};

pub(super) async fn about_page(h: HeaderMap, pc: Pc) -> Response {
    let config = pc.ctx.config.borrow().clone();
    let schema = pc.ctx.db.schema_version().await.unwrap_or(0);
    // SQLite, or the PostgreSQL server several masters share (and which
    // master this is).
    let database = pc
        .ctx
        .db
        .database_version()
        .await
        .unwrap_or_else(|_| "(not answering)".to_string());
    let shared = pc
        .ctx
        .db
        .shared()
        .then(|| pc.ctx.db.master_name().to_string());
    let body = html! {
        h1 { "About this master" }
        table.props {
            tr { th { "autobot" } td { (crate::VERSION) } }
            tr { th { "database" } td { (database) } }
            tr { th { "database schema" } td { (schema) } }
            @if let Some(name) = &shared {
                tr { th { "master" } td { (name) " (of several sharing the database)" } }
            }
            tr { th { "project" } td { (config.project_name) } }
            tr { th { "project URL" } td { (safe_link(&config.project_url)) } }
            tr { th { "builders" } td { (config.builders().len()) } }
            tr { th { "slaves" } td { (config.slaves.len()) } }
        }
        p { "Forcing builds is " (if forms::forms_allowed(&pc) { "on" } else { "off" }) " here." }
        p {
            "autobot is a Buildbot-style continuous-integration system; \
             these pages follow the Buildbot 0.7 waterfall."
        }
    };
    ok_page(&pc, &h, "About", "", body)
}

/// `/static/…`, `/favicon.ico` and `/robots.txt`; the last two may be replaced by
/// the files `favicon = FILE` / `robots_txt = FILE` name, or else files in
/// `MASTERDIR/public_html/` (as in Buildbot 0.7).
pub(super) async fn static_file(name: String, h: HeaderMap, pc: Pc) -> Response {
    let (body, ctype): (Bytes, &'static str) = match name.as_str() {
        "autobot.css" => (
            Bytes::from_static(html::CSS.as_bytes()),
            "text/css; charset=utf-8",
        ),
        "autobot.js" => (
            Bytes::from_static(html::JS.as_bytes()),
            "text/javascript; charset=utf-8",
        ),
        "favicon.ico" | "robots.txt" => {
            let config = pc.ctx.config.borrow().clone();
            let configured = match name.as_str() {
                "favicon.ico" => config.favicon.clone(),
                _ => config.robots_txt.clone(),
            };
            let own =
                configured.unwrap_or_else(|| pc.ctx.db.basedir().join("public_html").join(&name));
            match tokio::fs::read(&own).await {
                Ok(b) => (
                    Bytes::from(b),
                    if name == "robots.txt" {
                        "text/plain; charset=utf-8"
                    } else {
                        "image/x-icon"
                    },
                ),
                Err(_) if name == "robots.txt" => (
                    Bytes::from_static(html::ROBOTS.as_bytes()),
                    "text/plain; charset=utf-8",
                ),
                Err(_) => (Bytes::from_static(html::FAVICON), "image/x-icon"),
            }
        }
        _ => {
            return error_page(&pc, StatusCode::NOT_FOUND, "Not found", "no such file");
        }
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    let tag = Some(format!("\"{:x}\"", hasher.finish()));
    if let Some(r) = not_modified(&h, &tag) {
        return r;
    }
    let mut r = warp::reply::with_status(body.to_vec(), StatusCode::OK).into_response();
    let hd = r.headers_mut();
    hd.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    hd.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    hd.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Some(v) = tag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        hd.insert(header::ETAG, v);
    }
    r
}

/// A badge's SVG: `build` on grey, then `word` on `color`; `title` says both.
/// Elements have end tags (no HTML void syntax): the SVG is parsed as XML.
fn badge_svg(title: &str, word: &str, color: &str) -> String {
    let label = "build";
    let lw = 7 * label.len() as u32 + 10;
    let rw = 7 * word.len() as u32 + 10;
    let svg = html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(lw + rw) height="20" role="img" aria-label=(title) {
            title { (title) }
            rect width=(lw) height="20" fill="#555" {}
            rect x=(lw) width=(rw) height="20" fill=(color) {}
            g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" {
                text x="5" y="14" { (label) }
                text x=(lw + 5) y="14" { (word) }
            }
        }
    };
    html::no_controls(svg.into_string())
}

/// `/badge/NAME.svg`: the builder's last result as a small SVG.
pub(super) async fn badge(file: String, h: HeaderMap, pc: Pc) -> Response {
    let file = unseg(&file);
    let Some(name) = file.strip_suffix(".svg").map(str::to_string) else {
        return error_page(
            &pc,
            StatusCode::NOT_FOUND,
            "Not found",
            "badges are at /badge/NAME.svg",
        );
    };
    let known = pc
        .ctx
        .config
        .borrow()
        .builders()
        .iter()
        .any(|b| b.name == name);
    if !known {
        return error_page(
            &pc,
            StatusCode::NOT_FOUND,
            "No such builder",
            &format!("there is no builder named {name:?}"),
        );
    }
    let p = pc.clone();
    let mut r = cached(&pc, &h, &format!("/badge/{name}"), async move {
        let last = p.ctx.db.last_result(&name).await.unwrap_or(None);
        let (word, color) = match last.as_ref().map(|(r, _)| r.as_str()) {
            Some("success") => ("passing", "#4c1"),
            Some("warnings") => ("warnings", "#dfb317"),
            Some("failure") => ("failing", "#e05d44"),
            Some("exception") => ("exception", "#9f4fc4"),
            Some("skipped") => ("skipped", "#9f9f9f"),
            Some("cancelled") => ("cancelled", "#a0785a"),
            _ => ("unknown", "#9f9f9f"),
        };
        let svg = badge_svg(&format!("{name}: {word}"), word, color);
        let mut r = warp::reply::with_status(svg, StatusCode::OK).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("image/svg+xml"),
        );
        r
    })
    .await;
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_are_escaped_xml() {
        let svg = badge_svg("a<&\"b: passing", "passing", "#4c1");
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"104\""),
            "{svg}"
        );
        assert!(
            svg.contains("<title>a&lt;&amp;&quot;b: passing</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("aria-label=\"a&lt;&amp;&quot;b: passing\""),
            "{svg}"
        );
        assert!(
            svg.contains("<rect width=\"45\" height=\"20\" fill=\"#555\"></rect>"),
            "{svg}"
        );
        assert!(svg.ends_with("</text></g></svg>"), "{svg}");
    }
}
