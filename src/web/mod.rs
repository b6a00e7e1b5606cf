//! The master's HTTP side on `htmlport`: the JSON API and the status pages
//! ([`pages`], read-only on `publichtmlport` through [`public_routes`]; their
//! Force and Stop forms in [`forms`]).
//!
//! [`routes`] combines one filter per resource; each handler reads the database
//! (through [`crate::db`]'s queries: no SQL here) or the current configuration
//! through [`WebContext`] and never drives a build directly. Pages are rendered
//! by a template engine that escapes every value ([`html`]). New resources
//! (builders, builds, changes, force) are added as more filters `.or()`-ed into
//! [`routes`], each returning a `warp::reply::Response`. The engine's resources
//! are in [`api`](mod@api); anything no route takes is answered by [`rejections`] with a
//! JSON error and the right status.
//!
//! Two rules hold for every route, whatever file it lives in. A request that may
//! change state (any method but GET and HEAD) on `htmlport` passes
//! [`state_change_guard`] first: a browser's `Origin` (and `Sec-Fetch-Site`) must
//! be the master's own, and under `/api/` the body must be declared JSON
//! (`Content-Type: application/json`), which a page of another site cannot send
//! without a CORS preflight this server never grants. And every response — pages,
//! JSON, server-sent events, 304s and errors — leaves through
//! [`with_security_headers`], so each carries the same CSP, `nosniff`,
//! frame-ancestors and referrer policy.

pub mod api;
pub mod artifacts;
pub mod change_hook;
pub mod forms;
pub mod html;
pub mod pages;
pub mod sse;
pub mod tryjob;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::changes::ChangeBus;
use crate::config::MasterConfig;
use crate::db::slaves::SlaveRow;
use crate::db::Db;
use crate::engine::Engine;

/// What the web handlers may read.
#[derive(Clone)]
pub struct WebContext {
    pub db: Db,
    /// The configuration in force; replaced on every successful reconfig.
    pub config: watch::Receiver<Arc<MasterConfig>>,
    /// Force and stop go through the engine's request queue, as the schedulers' do.
    pub engine: Engine,
    /// Changes posted to the master come in here.
    pub changes: ChangeBus,
}

/// Every route of the web server.
pub fn routes(ctx: WebContext) -> BoxedFilter<(Response,)> {
    routes_until(ctx, None)
}

/// [`routes`] whose live streams end when `stop` turns true.
fn routes_until(ctx: WebContext, stop: Option<watch::Receiver<bool>>) -> BoxedFilter<(Response,)> {
    let slaves = api()
        .and(warp::path("slaves"))
        .and(warp::path::end())
        .and(warp::get())
        .and(with(ctx.clone()))
        .then(api_slaves);
    let all = slaves
        .or(api::routes(ctx.clone()))
        .unify()
        .or(artifacts::routes(ctx.clone()))
        .unify()
        .or(change_hook::routes(ctx.clone()))
        .unify()
        .or(tryjob::routes(ctx.clone()))
        .unify()
        .or(pages::routes(ctx.clone(), stop))
        .unify();
    state_change_guard()
        .and(all)
        .recover(rejections)
        .unify()
        .map(with_security_headers)
        .boxed()
}

/// The routes of `publichtmlport`: the pages read-only and the JSON API's GETs;
/// nothing that forces, stops or submits.
pub fn public_routes(
    ctx: WebContext,
    stop: Option<watch::Receiver<bool>>,
) -> BoxedFilter<(Response,)> {
    let slaves = api()
        .and(warp::path("slaves"))
        .and(warp::path::end())
        .and(with(ctx.clone()))
        .then(api_slaves);
    warp::get()
        .and(
            slaves
                .or(api::routes(ctx.clone()))
                .unify()
                .or(artifacts::routes(ctx.clone()))
                .unify(),
        )
        .or(pages::public_routes(ctx, stop))
        .unify()
        .recover(rejections)
        .unify()
        .map(with_security_headers)
        .boxed()
}

/// The Content-Security-Policy of every response: this origin's own scripts,
/// styles and images only, no plugins, never framed, forms post only here.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
    script-src 'self'; object-src 'none'; frame-ancestors 'none'; form-action 'self'; \
    base-uri 'none'";

/// Add the security headers every response carries (those a route set itself are
/// kept): CSP, `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and
/// `Referrer-Policy: same-origin`.
pub fn with_security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let fixed: [(&str, &'static str); 4] = [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
    ];
    for (name, value) in fixed {
        if !h.contains_key(name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    r
}

/// A request refused before any route read it: sent from another site, or a body
/// not declared JSON. Answered by [`rejections`] with its status and message.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl warp::reject::Reject for Refused {}

/// Passes GET and HEAD; any other request must come from no browser page or from
/// one of this master (see [`same_origin`]), and under `/api/` declare a JSON body
/// (see [`json_content_type`]). A page of another site can make a browser send a
/// `text/plain` or form POST without asking first (no CORS preflight), with the
/// browser's cached credentials; it cannot make it send `application/json`
/// without a preflight, and it cannot forge the `Origin` it sends.
pub fn state_change_guard() -> BoxedFilter<()> {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and_then(
            |m: Method, path: warp::path::FullPath, h: HeaderMap| async move {
                if m == Method::GET || m == Method::HEAD {
                    return Ok(());
                }
                let refuse = |status, message: String| {
                    tracing::warn!("{m} {} refused: {message}", path.as_str());
                    Err(warp::reject::custom(Refused { status, message }))
                };
                if let Err(why) = same_origin(&h) {
                    return refuse(StatusCode::FORBIDDEN, why);
                }
                if path.as_str().starts_with("/api/") {
                    if let Err(why) = json_content_type(&h) {
                        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, why);
                    }
                }
                Ok(())
            },
        )
        .untuple_one()
        .boxed()
}

/// Whether a request that changes state comes from this master's own pages or
/// from no browser page at all: a `Sec-Fetch-Site` other than `same-origin` or
/// `none` is refused, and so is an `Origin` (when sent) whose scheme, host and port
/// are not those of the request's `Host` (the scheme is `http`, or the
/// `X-Forwarded-Proto` a TLS proxy in front sets; a page cannot set that header
/// on a request to another site). `Origin: null` (sandboxed or opaque pages) is
/// refused. Clients that are no browser (the CLI, curl, forges) send neither.
pub fn same_origin(h: &HeaderMap) -> Result<(), String> {
    let text = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        let site = site.trim();
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return Err(format!(
                "a request from another site (Sec-Fetch-Site: {site}); only this master's own pages may change anything here"
            ));
        }
    }
    let Some(origin) = text(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.trim();
    let scheme = h
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v == "https" || v == "http")
        .unwrap_or_else(|| "http".to_string());
    let host = text(header::HOST).unwrap_or("").trim();
    let mine = parse_origin(&format!("{scheme}://{host}"));
    match (parse_origin(origin), mine) {
        (Some(theirs), Some(mine)) if theirs == mine => Ok(()),
        _ => Err(format!(
            "a request from another origin (Origin: {origin}, this master: {scheme}://{host}); only this master's own pages may change anything here"
        )),
    }
}

/// `scheme://host[:port]` as (scheme, lower-case host, port with the scheme's
/// default filled in); `None` for anything else (including `null`).
fn parse_origin(s: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().ok()?),
        _ => (rest, default),
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// Whether a request declares a JSON body: `Content-Type: application/json`,
/// optionally with `charset=utf-8` (JSON is UTF-8; RFC 8259).
pub fn json_content_type(h: &HeaderMap) -> Result<(), String> {
    let how = "send the body as JSON with `Content-Type: application/json`";
    let Some(v) = h.get(header::CONTENT_TYPE) else {
        return Err(format!("no Content-Type; {how}"));
    };
    let v = v.to_str().unwrap_or("");
    let mut parts = v.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(format!("Content-Type {v:?} is not JSON; {how}"));
    }
    for p in parts {
        let (k, val) = p.split_once('=').unwrap_or((p, ""));
        let val = val.trim().trim_matches('"');
        if !(k.trim().eq_ignore_ascii_case("charset") && val.eq_ignore_ascii_case("utf-8")) {
            return Err(format!(
                "Content-Type {v:?}: the only parameter accepted is charset=utf-8; {how}"
            ));
        }
    }
    Ok(())
}

/// Serve [`public_routes`] on an already bound listener until `shutdown` resolves.
pub async fn serve_public(
    listener: TcpListener,
    ctx: WebContext,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_until(listener, shutdown, |stop| public_routes(ctx, Some(stop))).await
}

/// A request body that is not the JSON a route expects.
#[derive(Debug)]
pub struct BadBody(pub String);

impl warp::reject::Reject for BadBody {}

/// What no route took, as a JSON error with its status.
pub async fn rejections(r: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    let (status, message) = if r.is_not_found() {
        (StatusCode::NOT_FOUND, "no such resource".to_string())
    } else if let Some(Refused { status, message }) = r.find::<Refused>() {
        (*status, message.clone())
    } else if let Some(BadBody(why)) = r.find::<BadBody>() {
        (StatusCode::BAD_REQUEST, format!("bad JSON body: {why}"))
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is too large".to_string(),
        )
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "send a Content-Length".to_string(),
        )
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed here".to_string(),
        )
    } else if r.find::<warp::reject::InvalidQuery>().is_some() {
        (StatusCode::BAD_REQUEST, "bad query string".to_string())
    } else {
        tracing::debug!("unhandled rejection: {r:?}");
        (StatusCode::BAD_REQUEST, "bad request".to_string())
    };
    Ok(json_error(status, &message))
}

/// `/api/v1/…`.
pub fn api() -> BoxedFilter<()> {
    warp::path("api").and(warp::path("v1")).boxed()
}

/// Hand the context to a handler.
pub fn with(
    ctx: WebContext,
) -> impl Filter<Extract = (WebContext,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// The status that answers an engine's refusal of a force or stop; `None` for a
/// database error (answered 500 without its details, which go to the log).
pub fn engine_status(e: &crate::engine::EngineError) -> Option<StatusCode> {
    use crate::engine::EngineError as E;
    Some(match e {
        E::UnknownBuilder { .. } | E::NoSuchBuild { .. } | E::NoSuchRequest(_) => {
            StatusCode::NOT_FOUND
        }
        E::NotRunning { .. } => StatusCode::CONFLICT,
        E::BadName { .. } => StatusCode::BAD_REQUEST,
        E::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        E::Db(_) => return None,
    })
}

/// A JSON error body with a status.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({ "error": message })),
        status,
    )
    .into_response()
}

async fn api_slaves(ctx: WebContext) -> Response {
    let config = ctx.config.borrow().clone();
    match slaves_json(&ctx, &config).await {
        Ok(list) => warp::reply::json(&list).into_response(),
        Err(e) => {
            tracing::error!("GET /api/v1/slaves: {e}");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "database error")
        }
    }
}

/// One slave as `GET /api/v1/slaves` shows it: its row, and why it cannot
/// connect when the slave port knows (`problem`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlaveJson {
    #[serde(flatten)]
    pub row: SlaveRow,
    /// E.g. that it speaks Buildbot's PB protocol, and how to switch it;
    /// `null` when none is known (cleared when it connects).
    pub problem: Option<String>,
}

/// Every configured slave, in file order, with what the database knows of it
/// (a row holds no password and no environment: there is nothing to hide) and
/// any problem the slave port saw.
pub async fn slaves_json(
    ctx: &WebContext,
    config: &MasterConfig,
) -> Result<Vec<SlaveJson>, crate::db::DbError> {
    let mut rows = ctx.db.slaves().await?;
    let problems = ctx.engine.slave_problems();
    Ok(config
        .slaves
        .iter()
        .map(|s| {
            let row = match rows.iter().position(|r| r.name == s.name) {
                Some(i) => rows.swap_remove(i),
                None => SlaveRow::never_seen(&s.name),
            };
            let problem = problems
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, p)| p.clone());
            SlaveJson { row, problem }
        })
        .collect())
}

/// Serve [`routes`] on an already bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    ctx: WebContext,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_until(listener, shutdown, |stop| routes_until(ctx, Some(stop))).await
}

/// Serve the routes `make` builds until `shutdown` resolves. Live streams
/// (server-sent events) get a receiver that turns true then, so they end with the
/// server and the graceful shutdown does not wait for browsers to go away.
async fn serve_until(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    make: impl FnOnce(watch::Receiver<bool>) -> BoxedFilter<(Response,)>,
) {
    let (tx, rx) = watch::channel(false);
    // Each request arriving is work the retention pass yields to.
    let routes = warp::any().map(crate::activity::working).untuple_one();
    warp::serve(routes.and(make(rx)))
        .incoming(listener)
        .graceful(async move {
            shutdown.await;
            let _ = tx.send(true);
        })
        .run()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origins_parse_with_default_ports() {
        let o = |s| parse_origin(s);
        assert_eq!(
            o("http://a.example"),
            Some(("http".into(), "a.example".into(), 80))
        );
        assert_eq!(
            o("HTTPS://A.example"),
            Some(("https".into(), "a.example".into(), 443))
        );
        assert_eq!(
            o("http://127.0.0.1:8010"),
            Some(("http".into(), "127.0.0.1".into(), 8010))
        );
        assert_eq!(
            o("http://[::1]:8010"),
            Some(("http".into(), "[::1]".into(), 8010))
        );
        assert_eq!(o("http://[::1]"), Some(("http".into(), "[::1]".into(), 80)));
        for bad in [
            "null",
            "",
            "http://",
            "ftp://a",
            "http://a/x",
            "http://u@a",
            "http://a:x",
            "a",
        ] {
            assert_eq!(o(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_the_masters_own_origin_passes() {
        let host = ("host", "ci.example:8010");
        assert!(same_origin(&headers(&[host])).is_ok());
        assert!(same_origin(&headers(&[host, ("origin", "http://ci.example:8010")])).is_ok());
        assert!(same_origin(&headers(&[host, ("origin", "http://CI.example:8010")])).is_ok());
        for bad in [
            "http://evil.example",
            "http://ci.example:8011",
            "https://ci.example:8010",
            "http://ci.example",
            "null",
        ] {
            assert!(
                same_origin(&headers(&[host, ("origin", bad)])).is_err(),
                "{bad}"
            );
        }
        // Behind a TLS proxy.
        let proxied = [("host", "ci.example"), ("x-forwarded-proto", "https")];
        let mut h = headers(&proxied);
        h.insert("origin", HeaderValue::from_static("https://ci.example"));
        assert!(same_origin(&h).is_ok());
        h.insert("origin", HeaderValue::from_static("http://ci.example"));
        assert!(same_origin(&h).is_err());
        // Fetch metadata.
        for (site, ok) in [
            ("same-origin", true),
            ("none", true),
            ("same-site", false),
            ("cross-site", false),
        ] {
            assert_eq!(
                same_origin(&headers(&[host, ("sec-fetch-site", site)])).is_ok(),
                ok,
                "{site}"
            );
        }
        // No Host to compare with: an Origin cannot be right.
        assert!(same_origin(&headers(&[("origin", "http://a")])).is_err());
    }

    #[test]
    fn only_json_bodies_are_json() {
        let ct = |v: &str| json_content_type(&headers(&[("content-type", v)]));
        assert!(ct("application/json").is_ok());
        assert!(ct("Application/JSON").is_ok());
        assert!(ct("application/json; charset=utf-8").is_ok());
        assert!(ct("application/json;charset=\"UTF-8\"").is_ok());
        for bad in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin1",
            "application/json; x=y",
            "application/jsonp",
        ] {
            assert!(ct(bad).is_err(), "{bad}");
        }
        assert!(json_content_type(&HeaderMap::new()).is_err());
    }
}
