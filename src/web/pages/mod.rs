//! The status pages people look at all day, rendered on the server: the waterfall,
//! builders, builds, step logs (HTML and plain), Changes, slaves, `/about`, the
//! favicon, `robots.txt` and per-builder SVG badges; one file per page family,
//! and here the routes and what every page shares (the frame, error pages,
//! caching). The Force Build and Stop Build forms, their CSRF tokens and the
//! login are [`super::forms`]'s.
//!
//! Every page is built with maud's `html!` (see [`super::html`]), so every value
//! it shows is escaped by the template engine. Every page works without
//! JavaScript; with it, `autobot.js` follows the server-sent events of
//! [`super::sse`] and swaps the page's live parts in place. Every query is
//! LIMITed and pages back through time with `before`, so a page costs the same
//! with a million builds as with ten; the queries are the database's
//! ([`crate::db::status`], [`crate::db::listing`]). Pages carry a weak ETag made
//! of a generation counter (the count of engine events and Changes so far), the
//! configuration in force and the slaves' connection state, so a crawler that
//! revalidates costs one small query; while builds run (ETAs move) pages are not
//! cached. The public port ([`public_routes`]) shows no forms and takes no POSTs.

mod about;
mod build;
mod builder;
mod changes;
mod console;
mod log;
mod logview;
mod slaves;
mod waterfall;

pub(crate) use log::{find_in_log, search_query, split_runs, LOG_CHUNK};

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use maud::{html, Markup};
use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::forms;
use super::html::{self, build_url, fmt_duration};
use super::WebContext;
use crate::db::builds::BuildRow;
use crate::db::status::BuilderState;

/// Largest form a POST may carry.
const MAX_FORM: u64 = 16 * 1024;

/// What the pages of one port share: the key of their CSRF tokens and login
/// cookies, whether they are read-only, and when live streams end.
pub struct PageState {
    pub(crate) csrf_key: ring::hmac::Key,
    /// Serving `publichtmlport`: no forms, no POSTs.
    pub(crate) public: bool,
    /// Turns true when the server shuts down: live streams end.
    stop: Option<watch::Receiver<bool>>,
}

impl PageState {
    pub(crate) fn new(public: bool, stop: Option<watch::Receiver<bool>>) -> Arc<PageState> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            // No system randomness: fall back to a key nobody can predict from
            // outside the process (time and address), and say so.
            tracing::warn!("no system randomness for the CSRF key; using a weaker one");
            let seed = format!("{:?}{:p}", std::time::SystemTime::now(), &rng);
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed.as_bytes())
        });
        Arc::new(PageState {
            csrf_key: key,
            public,
            stop,
        })
    }
}

/// A handler's view: the web context and the page state.
#[derive(Clone)]
pub(crate) struct Pc {
    pub(crate) ctx: WebContext,
    pub(crate) st: Arc<PageState>,
}

impl Pc {
    /// Moves with every engine event and Change: a page's ETag changes with it.
    fn generation(&self) -> u64 {
        self.ctx.engine.activity().count() + self.ctx.changes.activity().count()
    }

    /// Unix seconds of the last engine event or Change (Last-Modified).
    fn changed_at(&self) -> u64 {
        let (engine, changes) = (self.ctx.engine.activity(), self.ctx.changes.activity());
        engine.at().max(changes.at())
    }
}

/// The pages of `htmlport`, with forms and their POSTs. The live streams end
/// when `stop` turns true (the server's graceful shutdown waits for them).
pub fn routes(ctx: WebContext, stop: Option<watch::Receiver<bool>>) -> BoxedFilter<(Response,)> {
    page_routes(ctx, false, stop)
}

/// The same pages for `publichtmlport`: read-only.
pub fn public_routes(
    ctx: WebContext,
    stop: Option<watch::Receiver<bool>>,
) -> BoxedFilter<(Response,)> {
    page_routes(ctx, true, stop)
}

fn page_routes(
    ctx: WebContext,
    public: bool,
    stop: Option<watch::Receiver<bool>>,
) -> BoxedFilter<(Response,)> {
    let st = PageState::new(public, stop);
    let pc = Pc { ctx, st };
    let with = move || {
        let pc = pc.clone();
        warp::any().map(move || pc.clone())
    };
    let query = || warp::query::<HashMap<String, String>>();
    let hdrs = || warp::header::headers_cloned();

    let waterfall = warp::path::end()
        .or(warp::path!("waterfall"))
        .unify()
        .and(read())
        .and(query())
        .and(hdrs())
        .and(with())
        .then(waterfall::waterfall)
        .boxed();
    let console = warp::path!("console")
        .and(read())
        .and(query())
        .and(hdrs())
        .and(with())
        .then(console::console)
        .boxed();
    let my = warp::path!("my")
        .and(read())
        .and(query())
        .and(hdrs())
        .and(with())
        .then(console::my_builds)
        .boxed();
    let builders = warp::path!("builders")
        .and(read())
        .and(hdrs())
        .and(with())
        .then(builder::builders_page)
        .boxed();
    let builder = warp::path!("builders" / String)
        .and(read())
        .and(query())
        .and(hdrs())
        .and(with())
        .then(builder::builder_page)
        .boxed();
    let build = warp::path!("builders" / String / "builds" / i64)
        .and(read())
        .and(hdrs())
        .and(with())
        .then(build::build_page)
        .boxed();
    let log_html =
        warp::path!("builders" / String / "builds" / i64 / "steps" / String / "logs" / String)
            .and(read())
            .and(query())
            .and(hdrs())
            .and(with())
            .then(log::log_page)
            .boxed();
    let log_text = warp::path!(
        "builders" / String / "builds" / i64 / "steps" / String / "logs" / String / "text"
    )
    .and(read())
    .and(query())
    .and(with())
    .then(log::log_text)
    .boxed();
    let log_search = warp::path!(
        "builders" / String / "builds" / i64 / "steps" / String / "logs" / String / "search"
    )
    .and(read())
    .and(query())
    .and(with())
    .then(log::log_search)
    .boxed();
    let log_tail = warp::path!(
        "builders" / String / "builds" / i64 / "steps" / String / "logs" / String / "tail"
    )
    .and(read())
    .and(query())
    .and(hdrs())
    .and(with())
    .then(
        |b: String, n: i64, s: String, l: String, q, h, pc: Pc| async move {
            super::sse::log_tail(
                pc.ctx,
                pc.st.stop.clone(),
                html::unseg(&b),
                n,
                html::unseg(&s),
                html::unseg(&l),
                q,
                h,
            )
            .await
        },
    )
    .boxed();
    let events = warp::path!("events")
        .and(read())
        .and(with())
        .map(|pc: Pc| super::sse::events(pc.ctx, pc.st.stop.clone()))
        .boxed();
    let changes = warp::path!("changes")
        .and(read())
        .and(query())
        .and(hdrs())
        .and(with())
        .then(changes::changes_page)
        .boxed();
    let change = warp::path!("changes" / i64)
        .and(read())
        .and(hdrs())
        .and(with())
        .then(changes::change_page)
        .boxed();
    let slaves = warp::path!("slaves")
        .and(read())
        .and(hdrs())
        .and(with())
        .then(slaves::slaves_page)
        .boxed();
    let slave = warp::path!("slaves" / String)
        .and(read())
        .and(hdrs())
        .and(with())
        .then(slaves::slave_page)
        .boxed();
    let about = warp::path!("about")
        .and(read())
        .and(hdrs())
        .and(with())
        .then(about::about_page)
        .boxed();
    let statics = warp::path!("static" / String)
        .or(warp::path!("favicon.ico").map(|| "favicon.ico".to_string()))
        .unify()
        .or(warp::path!("robots.txt").map(|| "robots.txt".to_string()))
        .unify()
        .and(read())
        .and(hdrs())
        .and(with())
        .then(about::static_file)
        .boxed();
    let badge = warp::path!("badge" / String)
        .and(read())
        .and(hdrs())
        .and(with())
        .then(about::badge)
        .boxed();
    let form = || {
        warp::body::content_length_limit(MAX_FORM)
            .and(warp::body::bytes())
            .and(hdrs())
            .and(with())
    };
    let force = warp::path!("builders" / String / "force")
        .and(warp::post())
        .and(form())
        .then(forms::post_force)
        .boxed();
    let stop = warp::path!("builders" / String / "builds" / i64 / "stop")
        .and(warp::post())
        .and(form())
        .then(forms::post_stop)
        .boxed();
    let rebuild = warp::path!("builders" / String / "builds" / i64 / "rebuild")
        .and(warp::post())
        .and(form())
        .then(forms::post_rebuild)
        .boxed();
    let login = warp::path!("login")
        .and(read())
        .and(query())
        .and(hdrs())
        .and(with())
        .then(forms::login)
        .boxed();
    let fallback = warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(with())
        .and_then(fallback)
        .boxed();

    let reads = waterfall
        .or(builders)
        .unify()
        .or(builder)
        .unify()
        .or(build)
        .unify()
        .or(log_html)
        .unify()
        .or(log_text)
        .unify()
        .or(log_search)
        .unify()
        .or(log_tail)
        .unify()
        .or(events)
        .unify()
        .or(changes)
        .unify()
        .or(change)
        .unify()
        .or(slaves)
        .unify()
        .or(console)
        .unify()
        .or(my)
        .unify()
        .or(slave)
        .unify()
        .or(about)
        .unify()
        .or(statics)
        .unify()
        .or(badge)
        .unify()
        .boxed();
    if public {
        reads.or(fallback).unify().boxed()
    } else {
        reads
            .or(login)
            .unify()
            .or(force)
            .unify()
            .or(stop)
            .unify()
            .or(rebuild)
            .unify()
            .or(fallback)
            .unify()
            .boxed()
    }
}

/// GET, or HEAD (hyper sends the headers only).
fn read() -> BoxedFilter<()> {
    warp::get().or(warp::head()).unify().boxed()
}

// ------------------------------------------------------------------ responses

/// An HTML response with the headers every page has. Control characters the
/// template engine let through are replaced here, once for the whole page.
pub(crate) fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = warp::reply::with_status(html::no_controls(body), status).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(h);
    r
}

/// A 303 to `to` (a path of this site).
fn see_other(to: &str) -> Response {
    let mut r = warp::reply::with_status("", StatusCode::SEE_OTHER).into_response();
    if let Ok(v) = warp::http::HeaderValue::from_str(to) {
        r.headers_mut().insert(warp::http::header::LOCATION, v);
    }
    r
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(super::CSP),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
}

/// The frame of a page on this port.
fn frame<'a>(
    pc: &Pc,
    config: &'a crate::config::MasterConfig,
    title: &'a str,
    live: &'a str,
) -> html::Frame<'a> {
    html::Frame {
        title,
        project_name: &config.project_name,
        project_url: &config.project_url,
        live,
        public: pc.st.public,
    }
}

/// A page in the frame, or only its `<main>` for the page script's refresh.
fn finish(pc: &Pc, h: &HeaderMap, title: &str, live: &str, body: Markup) -> String {
    if h.contains_key("x-autobot-fragment") {
        return body.into_string();
    }
    let config = pc.ctx.config.borrow().clone();
    html::page(&frame(pc, &config, title, live), &body).into_string()
}

/// A whole page with status 200.
fn ok_page(pc: &Pc, h: &HeaderMap, title: &str, live: &str, body: Markup) -> Response {
    html_response(StatusCode::OK, finish(pc, h, title, live, body))
}

/// An error page.
pub(crate) fn error_page(pc: &Pc, status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        h1 { (title) }
        p.error { (message) }
        p { a href="/waterfall" { "Back to the waterfall" } }
    };
    html_response(status, finish(pc, &HeaderMap::new(), title, "", body))
}

pub(crate) fn db_error(pc: &Pc, what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!("{what}: {e}");
    error_page(
        pc,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Database error",
        "the master could not read its database; see its log",
    )
}

/// The weak validator of a page: `None` when the page must not be cached (builds
/// are running, so ETAs and durations move).
async fn etag(pc: &Pc, h: &HeaderMap, key: &str) -> Option<String> {
    if !pc.ctx.engine.running().is_empty() {
        return None;
    }
    let slaves = pc.ctx.db.slaves_fingerprint().await.ok()?;
    let config = Arc::as_ptr(&pc.ctx.config.borrow().clone()) as usize;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    h.contains_key("x-autobot-fragment").hash(&mut hasher);
    forms::csrf_cookie(h).hash(&mut hasher);
    // A page with a token differs by user: the user's name (never the password).
    forms::page_user(pc, h).hash(&mut hasher);
    // What the slave port saw of slaves that cannot connect (PB workers).
    pc.ctx.engine.slave_problems().hash(&mut hasher);
    Some(format!(
        "W/\"{:x}-{config:x}-{slaves}-{:x}\"",
        pc.generation(),
        hasher.finish()
    ))
}

/// `304 Not Modified` when the client's copy is current.
fn not_modified(h: &HeaderMap, tag: &Option<String>) -> Option<Response> {
    let tag = tag.as_ref()?;
    let inm = h.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    if inm.split(',').any(|t| t.trim() == tag || t.trim() == "*") {
        let mut r = warp::reply::with_status("", StatusCode::NOT_MODIFIED).into_response();
        if let Ok(v) = HeaderValue::from_str(tag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return Some(r);
    }
    None
}

/// Add ETag, Last-Modified and `Cache-Control: no-cache` (revalidate every time).
fn with_validators(pc: &Pc, mut r: Response, tag: &Option<String>) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(tag) = tag {
        if let Ok(v) = HeaderValue::from_str(tag) {
            h.insert(header::ETAG, v);
        }
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(pc.changed_at());
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    r
}

/// Render a cacheable page: answer 304 when the client's copy is current.
async fn cached<F>(pc: &Pc, h: &HeaderMap, key: &str, render: F) -> Response
where
    F: std::future::Future<Output = Response>,
{
    let tag = etag(pc, h, key).await;
    if let Some(r) = not_modified(h, &tag) {
        return r;
    }
    let r = render.await;
    if r.status() != StatusCode::OK {
        return r;
    }
    with_validators(pc, r, &tag)
}

fn query_key(path: &str, q: &HashMap<String, String>) -> String {
    let mut keys: Vec<_> = q.iter().collect();
    keys.sort();
    format!("{path}?{keys:?}")
}

/// What no page takes: an HTML 404 (the JSON API and change hooks keep their JSON
/// errors), or 403 for a POST to the read-only port.
async fn fallback(
    method: warp::http::Method,
    path: warp::path::FullPath,
    pc: Pc,
) -> Result<Response, warp::Rejection> {
    let p = path.as_str();
    if p.starts_with("/api/") || p.starts_with("/change_hook") {
        return Err(warp::reject::not_found());
    }
    if pc.st.public && method != warp::http::Method::GET && method != warp::http::Method::HEAD {
        return Ok(error_page(
            &pc,
            StatusCode::FORBIDDEN,
            "Read-only",
            "this port serves the status pages read-only: nothing can be forced or stopped here",
        ));
    }
    Ok(error_page(
        &pc,
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("there is no page at {}", html::unseg(p)),
    ))
}

// ------------------------------------------------------------------ shared bits

fn result_word(r: Option<&str>) -> &str {
    r.unwrap_or("building")
}

/// A table cell with a build's result, linking to it.
fn build_cell(b: &BuildRow) -> Markup {
    html! {
        td class=(html::result_class(b.result.as_deref())) {
            span.icon aria-hidden="true" { (html::result_icon(b.result.as_deref())) } " "
            a href=(build_url(&b.builder, b.number)) { "#" (b.number) }
            " " (result_word(b.result.as_deref()))
        }
    }
}

/// A table's head: one `th` per column name.
fn table_head(columns: &[&str]) -> Markup {
    html! { thead { tr { @for c in columns { th { (c) } } } } }
}

fn duration_of(start: f64, end: Option<f64>) -> String {
    fmt_duration(end.unwrap_or_else(crate::calendar::now_f64) - start)
}

/// The link to the next (older) page of a list, when there is one: `base` with
/// `before` and the non-empty `extra` query values.
fn pager(base: &str, extra: &[(&str, &str)], before: Option<i64>, label: &str) -> Markup {
    let Some(before) = before else {
        return html! {};
    };
    let mut q = format!("before={before}");
    for (k, v) in extra {
        if !v.is_empty() {
            q.push_str(&format!("&{}={}", html::seg(k), html::seg(v)));
        }
    }
    html! { p.pager { a href={ (base) "?" (q) } { (label) } } }
}

// ------------------------------------------------------------------ builder states

/// A configured builder and its activity, as the pages show it (the JSON API's
/// [`super::api::BuilderJson`] without the step list; the activity is read by
/// [`crate::db::Db::builder_status`] for all builders at once).
pub(crate) struct BuilderView {
    pub(crate) name: String,
    pub(crate) factory: String,
    pub(crate) category: String,
    pub(crate) slaves: Vec<String>,
    pub(crate) state: BuilderState,
    pub(crate) last_build: Option<BuildRow>,
    pub(crate) running: Vec<BuildRow>,
    pub(crate) pending: i64,
}

/// Whether `factory`'s builders are in `category`: the factory's `category`,
/// or `pull` for a factory that builds pull requests (`pullRequests`).
pub(crate) fn in_category(
    config: &crate::config::MasterConfig,
    factory: &str,
    category: &str,
) -> bool {
    config.factory(factory).is_some_and(|f| {
        f.category == category
            || (category == crate::web::change_hook::PULL_CATEGORY && f.pull_requests)
    })
}

/// The configured builders (only `only` when given, only those of `category`
/// when given), in configuration order, with their activity.
pub(crate) async fn builder_states(
    ctx: &WebContext,
    only: Option<&str>,
    category: Option<&str>,
) -> Result<Vec<BuilderView>, crate::db::DbError> {
    let config = ctx.config.borrow().clone();
    let category_of = |factory: &str| {
        config
            .factory(factory)
            .map(|f| f.category.clone())
            .unwrap_or_default()
    };
    let builders: Vec<_> = config
        .builders()
        .into_iter()
        .filter(|b| only.is_none_or(|o| o == b.name))
        .filter(|b| category.is_none_or(|c| in_category(&config, &b.factory, c)))
        .collect();
    let slots = builders
        .iter()
        .map(|b| (b.name.clone(), b.slave.clone()))
        .collect();
    let status = ctx.db.builder_status(slots).await?;
    Ok(builders
        .into_iter()
        .zip(status)
        .map(|(b, s)| BuilderView {
            category: category_of(&b.factory),
            pending: s.activity.pending,
            factory: b.factory,
            slaves: vec![b.slave],
            state: s.state,
            last_build: s.activity.last_build,
            running: s.activity.running,
            name: b.name,
        })
        .collect())
}
