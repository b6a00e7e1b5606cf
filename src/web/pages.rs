//! The status pages people look at all day, rendered on the server: the waterfall,
//! builders, builds, step logs (HTML and plain), Changes, slaves, `/about`, the
//! favicon, `robots.txt` and per-builder SVG badges, plus the Force Build and Stop
//! Build forms.
//!
//! Every page works without JavaScript; with it, `autobot.js` follows the
//! server-sent events of [`super::sse`] and swaps the page's live parts in place.
//! Every query is LIMITed and pages back through time with `before`, so a page
//! costs the same with a million builds as with ten. Pages carry a weak ETag made of
//! a generation counter (the count of engine events and Changes so far), the
//! configuration in force and the slaves' connection state, so a crawler that
//! revalidates costs one small query; while builds run (ETAs move) pages are not
//! cached.
//!
//! Force and stop are POST forms protected by a CSRF token: an HMAC, under a key
//! drawn at start-up, of a random nonce kept in an `HttpOnly`, `SameSite=Strict`
//! cookie, and of the user the page was made for. The cookie is
//! `__Host-autobot_csrf` (`Secure`, `Path=/`, no `Domain`: no other host or
//! plain-http page can plant one) wherever browsers keep `Secure` cookies — HTTPS
//! (a TLS proxy's `X-Forwarded-Proto: https`) and `localhost`/`127.0.0.0/8`/`[::1]`,
//! which browsers treat as secure. Over plain HTTP to any other name browsers drop
//! `Secure` cookies, so there the cookie is `autobot_csrf` without `Secure` (the
//! `Origin` check and `SameSite=Strict` still stop other sites; plain HTTP gives a
//! network attacker everything anyway). When `[users]` lists users, the POSTs also
//! need HTTP Basic credentials of one of them (checked in constant time), the
//! forms are shown only to a logged-in user (`/login` asks the browser for them)
//! and the token is bound to that user. Pages with a token are `private` and vary
//! by `Cookie` and `Authorization`. The public port ([`public_routes`]) shows no
//! forms and takes no POSTs.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{params, OptionalExtension};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::html::{self, build_url, builder_link, esc, fmt_duration, fmt_time, log_url, seg};
use super::WebContext;
use crate::db::builds::{BuildDetail, BuildRow};
use crate::master::logs::Channel;
use crate::master::ForceRequest;

/// Builds shown per waterfall page.
const WATERFALL_BUILDS: u32 = 60;
/// Build ids one waterfall page looks back at most (see [`waterfall_builds`]).
const SCAN_WINDOW: i64 = 20_000;
/// Builds shown per builder page.
const BUILDER_BUILDS: u32 = 25;
/// Changes per `/changes` page.
const CHANGES_PAGE: u32 = 50;
/// Bytes read per chunk when streaming a log.
pub(crate) const LOG_CHUNK: usize = 64 * 1024;
/// Largest form a POST may carry.
const MAX_FORM: u64 = 16 * 1024;
/// The CSRF cookie where browsers keep `Secure` cookies (see [`secure_context`]).
const CSRF_COOKIE_HOST: &str = "__Host-autobot_csrf";
/// The CSRF cookie over plain HTTP to a name that is not the local host.
const CSRF_COOKIE_PLAIN: &str = "autobot_csrf";
/// Who logged in at `/login` in this browser (signed; see [`login_cookie`]).
const LOGIN_COOKIE_HOST: &str = "__Host-autobot_user";
const LOGIN_COOKIE_PLAIN: &str = "autobot_user";
/// The realm of the Basic challenge of `/login` and the POSTs: one realm, so the
/// browser sends what it was given for `/login` with the forms too.
const REALM: &str = "Basic realm=\"autobot\", charset=\"UTF-8\"";

/// What the pages of one port share: the CSRF key.
pub struct PageState {
    csrf_key: ring::hmac::Key,
    /// Serving `publichtmlport`: no forms, no POSTs.
    public: bool,
    /// Turns true when the server shuts down: live streams end.
    stop: Option<watch::Receiver<bool>>,
}

impl PageState {
    fn new(public: bool, stop: Option<watch::Receiver<bool>>) -> Arc<PageState> {
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
struct Pc {
    ctx: WebContext,
    st: Arc<PageState>,
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
        .then(waterfall)
        .boxed();
    let builders = warp::path!("builders")
        .and(read())
        .and(hdrs())
        .and(with())
        .then(builders_page)
        .boxed();
    let builder = warp::path!("builders" / String)
        .and(read())
        .and(query())
        .and(hdrs())
        .and(with())
        .then(builder_page)
        .boxed();
    let build = warp::path!("builders" / String / "builds" / i64)
        .and(read())
        .and(hdrs())
        .and(with())
        .then(build_page)
        .boxed();
    let log_html =
        warp::path!("builders" / String / "builds" / i64 / "steps" / String / "logs" / String)
            .and(read())
            .and(hdrs())
            .and(with())
            .then(log_page)
            .boxed();
    let log_text = warp::path!(
        "builders" / String / "builds" / i64 / "steps" / String / "logs" / String / "text"
    )
    .and(read())
    .and(query())
    .and(with())
    .then(log_text)
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
        .then(changes_page)
        .boxed();
    let change = warp::path!("changes" / i64)
        .and(read())
        .and(hdrs())
        .and(with())
        .then(change_page)
        .boxed();
    let slaves = warp::path!("slaves")
        .and(read())
        .and(hdrs())
        .and(with())
        .then(slaves_page)
        .boxed();
    let slave = warp::path!("slaves" / String)
        .and(read())
        .and(hdrs())
        .and(with())
        .then(slave_page)
        .boxed();
    let about = warp::path!("about")
        .and(read())
        .and(hdrs())
        .and(with())
        .then(about_page)
        .boxed();
    let statics = warp::path!("static" / String)
        .or(warp::path!("favicon.ico").map(|| "favicon.ico".to_string()))
        .unify()
        .or(warp::path!("robots.txt").map(|| "robots.txt".to_string()))
        .unify()
        .and(read())
        .and(hdrs())
        .and(with())
        .then(static_file)
        .boxed();
    let badge = warp::path!("badge" / String)
        .and(read())
        .and(hdrs())
        .and(with())
        .then(badge)
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
        .then(post_force)
        .boxed();
    let stop = warp::path!("builders" / String / "builds" / i64 / "stop")
        .and(warp::post())
        .and(form())
        .then(post_stop)
        .boxed();
    let login = warp::path!("login")
        .and(read())
        .and(query())
        .and(hdrs())
        .and(with())
        .then(login)
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

/// An HTML response with the headers every page has.
fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = warp::reply::with_status(body, status).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(h);
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

/// A page in the frame, or only its `<main>` for the page script's refresh.
fn finish(pc: &Pc, h: &HeaderMap, title: &str, live: &str, body: String) -> String {
    if h.contains_key("x-autobot-fragment") {
        return body;
    }
    let config = pc.ctx.config.borrow().clone();
    html::page(
        &html::Frame {
            title,
            project_name: &config.project_name,
            project_url: &config.project_url,
            live,
            public: pc.st.public,
        },
        &body,
    )
}

/// An error page.
fn error_page(pc: &Pc, status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/waterfall\">Back to the waterfall</a></p>",
        esc(title),
        esc(message)
    );
    html_response(status, finish(pc, &HeaderMap::new(), title, "", body))
}

fn db_error(pc: &Pc, what: &str, e: impl std::fmt::Display) -> Response {
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
    let slaves: String = pc
        .ctx
        .db
        .read(|c| {
            c.query_row(
                "SELECT (SELECT coalesce(max(id), 0) FROM slave_connections) || '.' ||
                        (SELECT coalesce(sum(connected), 0) FROM slaves)",
                [],
                |r| r.get(0),
            )
        })
        .await
        .ok()?;
    let config = Arc::as_ptr(&pc.ctx.config.borrow().clone()) as usize;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    h.contains_key("x-autobot-fragment").hash(&mut hasher);
    cookie(h, csrf_cookie_name(h)).hash(&mut hasher);
    // A page with a token differs by user: the user's name (never the password).
    page_user(pc, h).hash(&mut hasher);
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
        let at = pc.changed_at();
        if let Ok(v) = HeaderValue::from_str(&http_date(at as i64)) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    r
}

/// An IMF-fixdate (`Tue, 01 Dec 2026 03:12:06 GMT`).
fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = html::fmt_time(secs as f64); // YYYY-MM-DD HH:MM:SS
    let day = DAYS[secs.div_euclid(86_400).rem_euclid(7) as usize];
    let month = t
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .unwrap_or(&"Jan");
    format!(
        "{day}, {} {month} {} {} GMT",
        t.get(8..10).unwrap_or("01"),
        t.get(0..4).unwrap_or("1970"),
        t.get(11..19).unwrap_or("00:00:00")
    )
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

// ------------------------------------------------------------------ CSRF and users

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn random_nonce() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).ok()?;
    Some(hex(&b))
}

fn valid_nonce(n: &str) -> bool {
    n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The form token of a browser's nonce for `user` (empty when nobody logs in).
fn csrf_token(st: &PageState, nonce: &str, user: &str) -> String {
    let mut msg = Vec::with_capacity(nonce.len() + user.len() + 8);
    msg.extend_from_slice(b"csrf\0");
    msg.extend_from_slice(nonce.as_bytes());
    msg.push(0);
    msg.extend_from_slice(user.as_bytes());
    hex(ring::hmac::sign(&st.csrf_key, &msg).as_ref())
}

/// Whether browsers keep `Secure` cookies for this request's origin: HTTPS (as a
/// TLS proxy in front says with `X-Forwarded-Proto`), or a loopback name, which
/// browsers count as a secure context over plain HTTP too (Chromium and Firefox
/// do; checked with the headless Chromium of `tests/web_browser.rs`).
fn secure_context(h: &HeaderMap) -> bool {
    let https = h
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    https
        || h.get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_loopback_host)
}

/// `localhost`, `*.localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let name = if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next() == Some("::1");
    } else {
        host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h)
    };
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The name of the CSRF cookie for this request (see [`secure_context`]).
fn csrf_cookie_name(h: &HeaderMap) -> &'static str {
    if secure_context(h) {
        CSRF_COOKIE_HOST
    } else {
        CSRF_COOKIE_PLAIN
    }
}

/// The browser's CSRF nonce, or a new one with the `Set-Cookie` that gives it.
fn csrf_nonce(h: &HeaderMap) -> (String, Option<String>) {
    let name = csrf_cookie_name(h);
    if let Some(n) = cookie(h, name).filter(|n| valid_nonce(n)) {
        return (n, None);
    }
    let n = random_nonce().unwrap_or_default();
    let secure = if name == CSRF_COOKIE_HOST {
        " Secure;"
    } else {
        ""
    };
    let set = format!("{name}={n}; Path=/;{secure} HttpOnly; SameSite=Strict; Max-Age=31536000");
    (n, Some(set))
}

fn set_cookie(mut r: Response, set: Option<String>) -> Response {
    if let Some(v) = set.and_then(|s| HeaderValue::from_str(&s).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Whether a POST carries the token that belongs to its cookie and its user.
fn csrf_ok(st: &PageState, h: &HeaderMap, form: &HashMap<String, String>, user: &str) -> bool {
    let Some(nonce) = cookie(h, csrf_cookie_name(h)).filter(|n| valid_nonce(n)) else {
        return false;
    };
    let Some(sent) = form.get("csrf") else {
        return false;
    };
    crate::master::auth::constant_time_eq(sent.as_bytes(), csrf_token(st, &nonce, user).as_bytes())
}

/// The `[users]` user a page is made for (`None` without `[users]`): the one
/// whose right credentials the request carries, else the one the browser's
/// login cookie names. The cookie only says whom the page's token is bound to;
/// the POST itself still needs that user's credentials.
fn page_user(pc: &Pc, h: &HeaderMap) -> Option<String> {
    let config = pc.ctx.config.borrow().clone();
    if config.users.is_empty() {
        return None;
    }
    let auth = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(user) = auth.and_then(|a| {
        crate::master::auth::web_user(&config, Some(a))
            .ok()
            .flatten()
    }) {
        return Some(user);
    }
    let name = login_cookie_user(&pc.st, h)?;
    config.users.contains_key(&name).then_some(name)
}

/// The value of the login cookie for `user`: the name (hex) and an HMAC of it
/// under the page key, so no one can name another user in it.
fn login_cookie(st: &PageState, user: &str) -> String {
    let mut msg = b"user\0".to_vec();
    msg.extend_from_slice(user.as_bytes());
    format!(
        "{}.{}",
        hex(user.as_bytes()),
        hex(ring::hmac::sign(&st.csrf_key, &msg).as_ref())
    )
}

/// The user a request's login cookie names, when its signature is right.
fn login_cookie_user(st: &PageState, h: &HeaderMap) -> Option<String> {
    let name = if secure_context(h) {
        LOGIN_COOKIE_HOST
    } else {
        LOGIN_COOKIE_PLAIN
    };
    let value = cookie(h, name)?;
    let (hexname, _) = value.split_once('.')?;
    if hexname.len() % 2 != 0 || !hexname.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..hexname.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hexname[i..i + 2], 16).ok())
        .collect();
    let user = String::from_utf8(bytes).ok()?;
    crate::master::auth::constant_time_eq(value.as_bytes(), login_cookie(st, &user).as_bytes())
        .then_some(user)
}

/// Whether `[users]` lists anyone: then forcing and stopping need a login.
fn login_required(pc: &Pc) -> bool {
    !pc.ctx.config.borrow().users.is_empty()
}

/// The user a POST acts as: `Ok(None)` when `[users]` is empty (anyone may),
/// `Ok(Some(name))` for good credentials, `Err` (401) otherwise.
#[allow(clippy::result_large_err)] // the error is the page to send
fn check_user(pc: &Pc, h: &HeaderMap) -> Result<Option<String>, Response> {
    let config = pc.ctx.config.borrow().clone();
    let auth = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match crate::master::auth::web_user(&config, auth) {
        Ok(user) => Ok(user),
        Err(why) => {
            tracing::warn!("web login refused: {why}");
            Err(login_page(pc))
        }
    }
}

/// 401 with the Basic challenge: the browser asks for a name and password.
fn login_page(pc: &Pc) -> Response {
    let mut r = error_page(
        pc,
        StatusCode::UNAUTHORIZED,
        "Log in to do that",
        "forcing and stopping builds needs the name and password of a user in [users]",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
    r
}

/// `GET /login?next=PATH`: 401 until the browser sends the credentials of a
/// `[users]` user, then back to `next` (a path on this master) with a signed
/// cookie that names the user, so the pages show the forms with a token bound to
/// them. The browser keeps the credentials for the realm and sends them again
/// when a POST is answered 401 (some send them with every page at once).
async fn login(q: HashMap<String, String>, h: HeaderMap, pc: Pc) -> Response {
    let next = q
        .get("next")
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains(['\\', '\r', '\n']))
        .cloned()
        .unwrap_or_else(|| "/waterfall".to_string());
    let config = pc.ctx.config.borrow().clone();
    let auth = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let user = match crate::master::auth::web_user(&config, auth) {
        Ok(u) => u,
        Err(why) => {
            if auth.is_some() {
                tracing::warn!("web login refused: {why}");
            }
            return login_page(&pc);
        }
    };
    let mut r = redirect(&next);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(user) = user {
        // The browser remembers who logged in, so the pages make their forms
        // (and tokens) for that user even when it sends no credentials with them.
        let (name, secure) = if secure_context(&h) {
            (LOGIN_COOKIE_HOST, " Secure;")
        } else {
            (LOGIN_COOKIE_PLAIN, "")
        };
        let set = format!(
            "{name}={}; Path=/;{secure} HttpOnly; SameSite=Strict",
            login_cookie(&pc.st, &user)
        );
        if let Ok(v) = HeaderValue::from_str(&set) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// Mark a page that carries a token (or depends on who is logged in) as the
/// browser's alone: `Cache-Control: private` and `Vary: Cookie, Authorization`.
fn personal(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Cookie, Authorization"),
    );
    r
}

/// The forms of a page: the token they carry (`None`: show no forms), the cookie
/// to set, and what to say instead of the forms or above them.
struct Forms {
    token: Option<String>,
    set_cookie: Option<String>,
    note: String,
}

/// What a page at `here` shows of the force and stop forms.
fn forms_for(pc: &Pc, h: &HeaderMap, here: &str) -> Forms {
    if !forms_allowed(pc) {
        return Forms {
            token: None,
            set_cookie: None,
            note: String::new(),
        };
    }
    let user = page_user(pc, h);
    if login_required(pc) && user.is_none() {
        return Forms {
            token: None,
            set_cookie: None,
            note: format!(
                "<p class=\"login\"><a href=\"/login?next={}\">Log in</a> to force or stop builds.</p>",
                seg(here)
            ),
        };
    }
    let (nonce, set) = csrf_nonce(h);
    Forms {
        token: Some(csrf_token(&pc.st, &nonce, user.as_deref().unwrap_or(""))),
        set_cookie: set,
        note: user
            .map(|u| format!("<p class=\"login\">Logged in as <b>{}</b>.</p>", esc(&u)))
            .unwrap_or_default(),
    }
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| html::unseg(&s.replace('+', " "));
            (dec(k), dec(v))
        })
        .collect()
}

/// Check user and CSRF token of a POST; its form when both are right.
#[allow(clippy::result_large_err)] // the error is the page to send
fn check_post(
    pc: &Pc,
    h: &HeaderMap,
    body: &[u8],
) -> Result<(Option<String>, HashMap<String, String>), Response> {
    let user = check_user(pc, h)?;
    let form = parse_form(body);
    if !csrf_ok(&pc.st, h, &form, user.as_deref().unwrap_or("")) {
        return Err(error_page(
            pc,
            StatusCode::FORBIDDEN,
            "Form expired",
            "the form's security token is missing or wrong (CSRF check); reload the page and try again",
        ));
    }
    if !pc.ctx.config.borrow().allow_force {
        return Err(error_page(
            pc,
            StatusCode::FORBIDDEN,
            "Forcing is off",
            "forcing and stopping builds is off on this master (allowForce = false in [:master:])",
        ));
    }
    Ok((user, form))
}

fn redirect(to: &str) -> Response {
    let mut r = warp::reply::with_status("", StatusCode::SEE_OTHER).into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn engine_error_page(pc: &Pc, e: crate::master::EngineError) -> Response {
    use crate::master::EngineError as E;
    let status = match &e {
        E::UnknownBuilder { .. } | E::NoSuchBuild { .. } | E::NoSuchRequest(_) => {
            StatusCode::NOT_FOUND
        }
        E::NotRunning { .. } => StatusCode::CONFLICT,
        E::BadName { .. } => StatusCode::BAD_REQUEST,
        E::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        E::Db(_) => return db_error(pc, "engine", &e),
    };
    error_page(pc, status, "Cannot do that", &e.to_string())
}

async fn post_force(name: String, body: Bytes, h: HeaderMap, pc: Pc) -> Response {
    let name = html::unseg(&name);
    let (user, form) = match check_post(&pc, &h, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let field = |k: &str| {
        form.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    // A logged-in user is who forced; the form's name only when nobody logs in.
    let who = user.or_else(|| field("who"));
    let req = ForceRequest {
        reason: field("reason").unwrap_or_default(),
        branch: field("branch"),
        revision: field("revision"),
        who,
        properties: Default::default(),
    };
    match pc.ctx.engine.force(&name, req).await {
        Ok(_) => redirect(&format!("/builders/{}", seg(&name))),
        Err(e) => engine_error_page(&pc, e),
    }
}

async fn post_stop(name: String, number: i64, body: Bytes, h: HeaderMap, pc: Pc) -> Response {
    let name = html::unseg(&name);
    let (user, form) = match check_post(&pc, &h, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let who = user
        .or_else(|| form.get("who").cloned())
        .unwrap_or_else(|| "web".to_string());
    let reason = form
        .get("reason")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "no reason given".into());
    match pc.ctx.engine.stop_build(&name, number, &who, &reason).await {
        Ok(()) => redirect(&build_url(&name, number)),
        Err(e) => engine_error_page(&pc, e),
    }
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
fn build_cell(b: &BuildRow) -> String {
    format!(
        "<td class=\"{}\"><a href=\"{}\">#{}</a> {}</td>",
        html::result_class(b.result.as_deref()),
        build_url(&b.builder, b.number),
        b.number,
        esc(result_word(b.result.as_deref()))
    )
}

fn duration_of(start: f64, end: Option<f64>) -> String {
    fmt_duration(end.unwrap_or_else(crate::db::now_f64) - start)
}

fn pager(base: &str, extra: &[(&str, &str)], before: Option<i64>, label: &str) -> String {
    let Some(before) = before else {
        return String::new();
    };
    let mut q = format!("before={before}");
    for (k, v) in extra {
        if !v.is_empty() {
            let _ = write!(q, "&{}={}", seg(k), seg(v));
        }
    }
    format!(
        "<p class=\"pager\"><a href=\"{base}?{}\">{}</a></p>",
        esc(&q),
        esc(label)
    )
}

// ------------------------------------------------------------------ builder states

/// A configured builder and its activity, as the pages show it (the JSON API's
/// [`super::api::BuilderJson`] without the step list, read in a few queries for
/// all builders at once, so a waterfall of 500 builders stays cheap).
pub(crate) struct BuilderState {
    pub(crate) name: String,
    pub(crate) factory: String,
    pub(crate) category: String,
    pub(crate) slaves: Vec<String>,
    /// `idle`, `building` or `offline`.
    pub(crate) state: &'static str,
    pub(crate) last_build: Option<BuildRow>,
    pub(crate) running: Vec<BuildRow>,
    pub(crate) pending: i64,
}

/// The configured builders (only `only` when given), in configuration order.
pub(crate) async fn builder_states(
    ctx: &WebContext,
    only: Option<&str>,
    category: Option<&str>,
) -> Result<Vec<BuilderState>, crate::db::DbError> {
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
        .filter(|b| category.is_none_or(|c| c == category_of(&b.factory)))
        .collect();
    let names: Vec<String> = builders.iter().map(|b| b.name.clone()).collect();
    type Found = (
        Vec<Option<BuildRow>>,
        HashMap<String, Vec<BuildRow>>,
        HashMap<String, i64>,
        Vec<String>,
    );
    let (last, mut running, pending, connected): Found = ctx
        .db
        .read(move |c| {
            // Each builder's newest finished build, in one statement.
            let mut st = c.prepare_cached(&format!(
                "SELECT j.key, {COLUMNS} FROM json_each(?1) j
                 LEFT JOIN builds b ON b.id = (
                     SELECT x.id FROM builds x WHERE x.builder = j.value
                        AND x.finished_at IS NOT NULL ORDER BY x.number DESC LIMIT 1)
                 ORDER BY j.key"
            ))?;
            let list = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
            let last = st
                .query_map([list], |r| match r.get::<_, Option<i64>>(1)? {
                    Some(_) => build_row_at(r, 2).map(Some),
                    None => Ok(None),
                })?
                .collect::<rusqlite::Result<Vec<Option<BuildRow>>>>()?;
            let mut running: HashMap<String, Vec<BuildRow>> = HashMap::new();
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM builds b WHERE b.finished_at IS NULL ORDER BY b.number"
            ))?;
            for r in st.query_map([], |r| build_row_at(r, 1))? {
                let r = r?;
                running.entry(r.builder.clone()).or_default().push(r);
            }
            let mut st = c.prepare_cached(
                "SELECT builder, count(*) FROM buildrequests
                 WHERE claimed_at IS NULL AND complete = 0 GROUP BY builder",
            )?;
            let pending = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<HashMap<String, i64>>>()?;
            let mut st = c.prepare_cached("SELECT name FROM slaves WHERE connected != 0")?;
            let connected = st
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok((last, running, pending, connected))
        })
        .await?;
    Ok(builders
        .into_iter()
        .zip(last)
        .map(|(b, last_build)| {
            let running = running.remove(&b.name).unwrap_or_default();
            let state = if !running.is_empty() {
                "building"
            } else if connected.contains(&b.slave) {
                "idle"
            } else {
                "offline"
            };
            BuilderState {
                category: category_of(&b.factory),
                pending: pending.get(&b.name).copied().unwrap_or(0),
                factory: b.factory,
                slaves: vec![b.slave],
                state,
                last_build,
                running,
                name: b.name,
            }
        })
        .collect())
}

// ------------------------------------------------------------------ waterfall

/// A build on the waterfall, with its steps.
struct WfBuild {
    id: i64,
    row: BuildRow,
    steps: Vec<WfStep>,
}

struct WfStep {
    number: i64,
    name: String,
    started_at: Option<f64>,
    finished_at: Option<f64>,
    result: Option<String>,
    text: String,
    description: String,
    logs: Vec<String>,
}

fn build_row_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<BuildRow> {
    Ok(BuildRow {
        builder: r.get(i)?,
        number: r.get(i + 1)?,
        slave: r.get(i + 2)?,
        started_at: r.get(i + 3)?,
        finished_at: r.get(i + 4)?,
        result: r.get(i + 5)?,
        reason: r.get(i + 6)?,
        text: r.get(i + 7)?,
        total_steps: r.get(i + 8)?,
    })
}

/// A build's columns for [`build_row_at`]; reason and text cut at 16384
/// characters, so a row stored with a huge reason costs a page little.
const COLUMNS: &str = "b.id, b.builder, b.number, b.slave, b.started_at, b.finished_at, \
    b.result, substr(b.reason, 1, 16384), substr(b.text, 1, 16384), b.total_steps";

/// How much of each Change the waterfall and `/changes` read: the first line of
/// the comments is all they show, and the number of files.
const SUMMARY_CAPS: super::api::Caps = super::api::Caps {
    text: 2048,
    list: 0,
};

/// The newest builds (by id, which grows with time) of `builders`, below id
/// `before`, on `branch` if given, with their steps and log names. Few builders are
/// read one by one through the (builder, number) index; many by walking ids down.
fn waterfall_builds(
    c: &rusqlite::Connection,
    builders: &[String],
    branch: Option<&str>,
    before: i64,
    limit: u32,
) -> rusqlite::Result<(Vec<WfBuild>, Option<i64>)> {
    let names = serde_json::to_string(builders).unwrap_or_else(|_| "[]".into());
    let mut builds: Vec<WfBuild> = Vec::new();
    // Look at most SCAN_WINDOW build ids back, so a filter nothing matches does
    // not walk the whole history; the pager goes on from the window's start.
    let max_id: i64 = c
        .prepare_cached("SELECT coalesce(max(id), 0) FROM builds")?
        .query_row([], |r| r.get(0))?;
    let lo = before
        .min(max_id.saturating_add(1))
        .saturating_sub(SCAN_WINDOW);
    let branch_clause = "(?3 IS NULL OR EXISTS (SELECT 1 FROM sourcestamps ss \
                         WHERE ss.id = b.sourcestamp AND ss.branch = ?3))";
    if builders.len() <= 16 {
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM builds b WHERE b.builder = ?1 AND b.id < ?2 AND b.id >= ?5
               AND {branch_clause}
             ORDER BY b.number DESC LIMIT ?4"
        ))?;
        for name in builders {
            let rows = st.query_map(params![name, before, branch, limit, lo], |r| {
                Ok(WfBuild {
                    id: r.get(0)?,
                    row: build_row_at(r, 1)?,
                    steps: Vec::new(),
                })
            })?;
            for b in rows {
                builds.push(b?);
            }
        }
        builds.sort_by_key(|b| std::cmp::Reverse(b.id));
        builds.truncate(limit as usize);
    } else {
        // `+b.builder`: walk ids down (the rowid), never the (builder, number)
        // index for every builder and a sort of their whole history.
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM builds b WHERE b.id < ?2 AND b.id >= ?5
               AND +b.builder IN (SELECT value FROM json_each(?1)) AND {branch_clause}
             ORDER BY b.id DESC LIMIT ?4"
        ))?;
        let rows = st.query_map(params![names, before, branch, limit, lo], |r| {
            Ok(WfBuild {
                id: r.get(0)?,
                row: build_row_at(r, 1)?,
                steps: Vec::new(),
            })
        })?;
        for b in rows {
            builds.push(b?);
        }
    }
    // Every shown build's steps and their log names in one statement.
    let ids = serde_json::to_string(&builds.iter().map(|b| b.id).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into());
    let mut st = c.prepare_cached(
        "SELECT s.build, s.number, s.name, s.started_at, s.finished_at, s.result, s.text,
                s.description,
                (SELECT json_group_array(l.name) FROM logs l WHERE l.step = s.id)
         FROM steps s WHERE s.build IN (SELECT value FROM json_each(?1))
         ORDER BY s.build, s.number",
    )?;
    let mut by_build: HashMap<i64, Vec<WfStep>> = HashMap::new();
    let rows = st.query_map([ids], |r| {
        let logs: String = r.get(8)?;
        Ok((
            r.get::<_, i64>(0)?,
            WfStep {
                number: r.get(1)?,
                name: r.get(2)?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                result: r.get(5)?,
                text: r.get(6)?,
                description: r.get(7)?,
                logs: serde_json::from_str(&logs).unwrap_or_default(),
            },
        ))
    })?;
    for row in rows {
        let (build, step) = row?;
        by_build.entry(build).or_default().push(step);
    }
    for b in &mut builds {
        b.steps = by_build.remove(&b.id).unwrap_or_default();
    }
    let older = if builds.len() as u32 >= limit {
        builds.last().map(|b| b.id)
    } else if lo > 1 {
        Some(lo)
    } else {
        None
    };
    Ok((builds, older))
}

async fn waterfall(q: HashMap<String, String>, h: HeaderMap, pc: Pc) -> Response {
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
    let (names2, branch2) = (names.clone(), branch.clone());
    let (builds, older) = match pc
        .ctx
        .db
        .read(move |c| {
            waterfall_builds(
                c,
                &names2,
                Some(branch2.as_str()).filter(|b| !b.is_empty()),
                before.unwrap_or(i64::MAX),
                WATERFALL_BUILDS,
            )
        })
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
        super::api::changes_page(&pc.ctx.db, 30, None, SUMMARY_CAPS, usize::MAX)
            .await
            .map(|p| p.rows)
            .unwrap_or_default()
    } else {
        Vec::new()
    };

    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<h1>Waterfall</h1>");
    // Filters.
    let mut cats: BTreeSet<&str> = BTreeSet::new();
    for f in &config.factories {
        if !f.category.is_empty() {
            cats.insert(&f.category);
        }
    }
    out.push_str("<form class=\"filters\" method=\"get\" action=\"/waterfall\"><label>Category <select name=\"category\"><option value=\"\">all</option>");
    for c in &cats {
        let _ = write!(
            out,
            "<option value=\"{0}\"{1}>{0}</option>",
            esc(c),
            if *c == category { " selected" } else { "" }
        );
    }
    let _ = write!(
        out,
        "</select></label> <label>Branch <input name=\"branch\" value=\"{}\" size=\"12\"></label> \
         <button type=\"submit\">Show</button></form>",
        esc(&branch)
    );

    out.push_str("<div data-part=\"waterfall\" id=\"waterfall-part\"><table class=\"waterfall\"><thead><tr><th class=\"time\">time</th><th class=\"changes\">changes</th>");
    for b in &shown {
        let _ = write!(
            out,
            "<th class=\"builder\">{}{}</th>",
            builder_link(&b.name),
            if b.category.is_empty() {
                String::new()
            } else {
                format!("<br><small>{}</small>", esc(&b.category))
            }
        );
    }
    out.push_str("</tr><tr class=\"last\"><th>last build</th><td></td>");
    for b in &shown {
        match &b.last_build {
            Some(l) => {
                let _ = write!(
                    out,
                    "<td class=\"{} lastbuild\" data-builder=\"{}\"><a href=\"{}\">#{}</a> {}<br><small>{}</small></td>",
                    html::result_class(l.result.as_deref()),
                    esc(&b.name),
                    build_url(&b.name, l.number),
                    l.number,
                    esc(result_word(l.result.as_deref())),
                    esc(&l.text)
                );
            }
            None => out.push_str("<td class=\"none lastbuild\">no builds yet</td>"),
        }
    }
    out.push_str("</tr><tr class=\"activity\"><th>activity</th><td></td>");
    for b in &shown {
        let mut what = match b.state {
            "building" => {
                let mut s = String::from("building");
                for r in &b.running {
                    let _ = write!(
                        s,
                        " <a href=\"{}\">#{}</a>",
                        build_url(&b.name, r.number),
                        r.number
                    );
                    if let Some(Some(eta)) = etas.get(&(r.builder.clone(), r.number)) {
                        let _ = write!(s, " ETA {}", fmt_duration(*eta));
                    }
                }
                s
            }
            other => esc(other),
        };
        if b.pending > 0 {
            let _ = write!(what, "<br><small>{} pending</small>", b.pending);
        }
        let _ = write!(out, "<td class=\"state-{}\">{what}</td>", esc(b.state));
    }
    out.push_str("</tr></thead><tbody>");

    // Pack builds into rows, newest first: a row takes at most one build per
    // builder, so concurrent builds share a row and time runs down the page.
    let col: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut rows: Vec<Vec<Option<&WfBuild>>> = Vec::new();
    for b in &builds {
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
    let row_start = |r: &Vec<Option<&WfBuild>>| {
        r.iter()
            .flatten()
            .map(|b| b.row.started_at)
            .fold(f64::INFINITY, f64::min)
    };
    let mut changes_left: Vec<_> = changes
        .iter()
        .filter(|c| branch.is_empty() || c.branch.as_deref() == Some(branch.as_str()))
        .collect();
    if rows.is_empty() && !changes_left.is_empty() {
        rows.push(vec![None; names.len()]);
    }
    let last_row = rows.len().saturating_sub(1);
    for (ri, r) in rows.iter().enumerate() {
        let start = if ri == last_row && before.is_none() && r.iter().all(Option::is_none) {
            f64::NEG_INFINITY
        } else {
            row_start(r)
        };
        let _ = write!(
            out,
            "<tr><td class=\"time\">{}</td><td class=\"changes\">",
            if start.is_finite() {
                esc(&fmt_time(start))
            } else {
                String::new()
            }
        );
        let (here, rest): (Vec<_>, Vec<_>) = changes_left
            .into_iter()
            .partition(|c| c.when as f64 >= start);
        for c in here {
            let _ = write!(
                out,
                "<div class=\"change\"><a href=\"/changes/{}\">{}</a><br><small>{}</small></div>",
                c.id,
                esc(&c.who),
                esc(c.comments.lines().next().unwrap_or(""))
            );
        }
        changes_left = rest;
        out.push_str("</td>");
        for cell in r {
            match cell {
                None => out.push_str("<td class=\"idle\"></td>"),
                Some(b) => {
                    let _ = write!(
                        out,
                        "<td class=\"cell\"><div class=\"build {}\" data-builder=\"{}\" data-number=\"{}\"><a href=\"{}\">#{}</a> {}",
                        html::result_class(b.row.result.as_deref()),
                        esc(&b.row.builder),
                        b.row.number,
                        build_url(&b.row.builder, b.row.number),
                        b.row.number,
                        esc(if b.row.result.is_some() { &b.row.text } else { "building" })
                    );
                    out.push_str("</div>");
                    for s in b.steps.iter().rev() {
                        let text = if s.finished_at.is_some() {
                            &s.text
                        } else if s.description.is_empty() {
                            &s.name
                        } else {
                            &s.description
                        };
                        let text = if text.is_empty() { &s.name } else { text };
                        let _ = write!(
                            out,
                            "<div class=\"step {}\">{}",
                            html::result_class(if s.started_at.is_some() {
                                s.result.as_deref()
                            } else {
                                Some("skipped")
                            }),
                            esc(text)
                        );
                        for l in &s.logs {
                            let _ = write!(
                                out,
                                " <a class=\"log\" href=\"{}\">{}</a>",
                                log_url(&b.row.builder, b.row.number, &s.name, l),
                                esc(l)
                            );
                        }
                        if let Some(st) = s.started_at {
                            let _ =
                                write!(out, " <small>{}</small>", duration_of(st, s.finished_at));
                        }
                        let _ = s.number;
                        out.push_str("</div>");
                    }
                    out.push_str("</td>");
                }
            }
        }
        out.push_str("</tr>");
    }
    if !changes_left.is_empty() {
        let _ = write!(
            out,
            "<tr><td class=\"time\">earlier</td><td class=\"changes\">"
        );
        for c in changes_left {
            let _ = write!(
                out,
                "<div class=\"change\"><a href=\"/changes/{}\">{}</a><br><small>{}</small></div>",
                c.id,
                esc(&c.who),
                esc(c.comments.lines().next().unwrap_or(""))
            );
        }
        out.push_str("</td>");
        for _ in &names {
            out.push_str("<td class=\"idle\"></td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out.push_str(&pager(
        "/waterfall",
        &[("category", &category), ("branch", &branch)],
        older,
        "older builds →",
    ));
    let live = if before.is_none() { "page" } else { "" };
    html_response(StatusCode::OK, finish(pc, h, "Waterfall", live, out))
}

// ------------------------------------------------------------------ builders

async fn builders_page(h: HeaderMap, pc: Pc) -> Response {
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, "/builders", async move {
        let list = match builder_states(&p.ctx, None, None).await {
            Ok(l) => l,
            Err(e) => return db_error(&p, "builders", e),
        };
        let mut out = String::from(
            "<h1>Builders</h1><div data-part=\"builders\" id=\"builders-part\"><table class=\"list\"><thead><tr><th>builder</th><th>category</th><th>slave</th><th>state</th><th>last build</th><th>badge</th></tr></thead><tbody>",
        );
        for b in &list {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td><a href=\"/slaves/{}\">{}</a></td><td class=\"state-{}\">{}{}</td>{}<td><img alt=\"badge\" src=\"/badge/{}.svg\"></td></tr>",
                builder_link(&b.name),
                esc(&b.category),
                seg(b.slaves.first().map(String::as_str).unwrap_or("")),
                esc(&b.slaves.join(", ")),
                esc(b.state),
                esc(b.state),
                if b.pending > 0 { format!(", {} pending", b.pending) } else { String::new() },
                b.last_build.as_ref().map(build_cell).unwrap_or_else(|| "<td class=\"none\">none</td>".into()),
                seg(&b.name)
            );
        }
        out.push_str("</tbody></table></div>");
        html_response(StatusCode::OK, finish(&p, &h2, "Builders", "page", out))
    })
    .await
}

/// A builder's BuildRequests waiting for a slave: (id, submitted_at, reason).
async fn pending_requests(
    pc: &Pc,
    builder: &str,
) -> Result<Vec<(i64, f64, String)>, crate::db::DbError> {
    let builder = builder.to_string();
    pc.ctx
        .db
        .read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT r.id, r.submitted_at, bs.reason FROM buildrequests r
                 JOIN buildsets bs ON bs.id = r.buildset
                 WHERE r.builder = ?1 AND r.claimed_at IS NULL AND r.complete = 0
                 ORDER BY r.priority DESC, r.id LIMIT 50",
            )?;
            let rows = st.query_map([builder], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
}

fn forms_allowed(pc: &Pc) -> bool {
    !pc.st.public && pc.ctx.config.borrow().allow_force
}

fn stop_form(b: &BuildRow, token: &str) -> String {
    format!(
        "<form class=\"stop\" method=\"post\" action=\"{}/stop\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input name=\"reason\" placeholder=\"reason\" size=\"16\">\
         <button type=\"submit\" class=\"stop-button\">Stop build #{}</button></form>",
        build_url(&b.builder, b.number),
        esc(token),
        b.number
    )
}

async fn builder_page(name: String, q: HashMap<String, String>, h: HeaderMap, pc: Pc) -> Response {
    let name = html::unseg(&name);
    let key = query_key(&format!("/builders/{name}"), &q);
    let p = pc.clone();
    let h2 = h.clone();
    let r = cached(&pc, &h, &key, async move {
        render_builder(name, q, &h2, &p).await
    })
    .await;
    if forms_allowed(&pc) {
        personal(r)
    } else {
        r
    }
}

async fn render_builder(
    name: String,
    q: HashMap<String, String>,
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
    let (builds, more) = match super::api::builds_page(
        &pc.ctx.db,
        &name,
        BUILDER_BUILDS,
        before,
        super::api::LIST_CAPS,
        super::api::PAGE_BYTES,
    )
    .await
    {
        Ok(p) => (
            p.rows.into_iter().map(|b| b.row).collect::<Vec<_>>(),
            p.more,
        ),
        Err(e) => return db_error(pc, "builder builds", e),
    };
    let pending = pending_requests(pc, &name).await.unwrap_or_default();
    let slaves = pc.ctx.db.slaves().await.unwrap_or_default();
    let Forms {
        token,
        set_cookie: set,
        note,
    } = forms_for(pc, h, &format!("/builders/{}", seg(&name)));

    let mut out = format!(
        "<h1>Builder {}</h1><div data-part=\"builder\" id=\"builder-part\"><p>factory <b>{}</b>{} · <a href=\"/badge/{}.svg\"><img alt=\"status badge\" src=\"/badge/{}.svg\"></a></p>",
        esc(&name),
        esc(&b.factory),
        if b.category.is_empty() { String::new() } else { format!(", category <b>{}</b>", esc(&b.category)) },
        seg(&name),
        seg(&name)
    );
    let _ = write!(
        out,
        "<p class=\"state-{0}\" id=\"builder-state\">state: <b>{0}</b></p>",
        esc(b.state)
    );
    out.push_str("<h2>Slaves</h2><ul>");
    for s in &b.slaves {
        let connected = slaves.iter().any(|r| &r.name == s && r.connected);
        let _ = write!(
            out,
            "<li><a href=\"/slaves/{}\">{}</a>: {}</li>",
            seg(s),
            esc(s),
            if connected { "connected" } else { "offline" }
        );
    }
    out.push_str("</ul>");
    if !b.running.is_empty() {
        out.push_str("<h2>Running</h2><ul class=\"running\">");
        for r in &b.running {
            let eta = pc
                .ctx
                .db
                .build(&r.builder, r.number)
                .await
                .ok()
                .flatten()
                .and_then(|d| d.eta);
            let _ = write!(
                out,
                "<li><a href=\"{}\">#{}</a> {} since {}{}",
                build_url(&name, r.number),
                r.number,
                esc(&r.reason),
                esc(&fmt_time(r.started_at)),
                eta.map(|e| format!(", ETA {}", fmt_duration(e)))
                    .unwrap_or_default()
            );
            if let Some(token) = &token {
                out.push_str(&stop_form(r, token));
            }
            out.push_str("</li>");
        }
        out.push_str("</ul>");
    }
    let _ = write!(out, "<h2>Pending requests ({})</h2>", pending.len());
    if !pending.is_empty() {
        out.push_str("<ul class=\"pending\">");
        for (id, at, reason) in &pending {
            let _ = write!(
                out,
                "<li>request {id}: {} (queued {})</li>",
                esc(reason),
                esc(&fmt_time(*at))
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("<h2>Recent builds</h2><table class=\"list builds\"><thead><tr><th>build</th><th>started</th><th>duration</th><th>slave</th><th>reason</th><th>text</th></tr></thead><tbody>");
    for r in &builds {
        let _ = write!(
            out,
            "<tr>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            build_cell(r),
            esc(&fmt_time(r.started_at)),
            duration_of(r.started_at, r.finished_at),
            esc(&r.slave),
            esc(&r.reason),
            esc(&r.text)
        );
    }
    out.push_str("</tbody></table>");
    let older = builds.last().filter(|_| more).map(|b| b.number);
    out.push_str(&pager(
        &format!("/builders/{}", seg(&name)),
        &[],
        older,
        "older builds →",
    ));
    out.push_str("</div>");
    out.push_str(&note);
    if let Some(token) = &token {
        let _ = write!(
            out,
            "<h2>Force Build</h2><form class=\"force\" id=\"force-form\" method=\"post\" action=\"/builders/{}/force\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label>Your name <input name=\"who\" size=\"20\"></label>\
             <label>Reason <input name=\"reason\" size=\"30\"></label>\
             <label>Branch <input name=\"branch\" size=\"15\"></label>\
             <label>Revision <input name=\"revision\" size=\"15\"></label>\
             <button type=\"submit\" id=\"force-button\">Force Build</button></form>",
            seg(&name),
            esc(token)
        );
    }
    let live = if before.is_none() { "page" } else { "" };
    let title = format!("Builder {name}");
    set_cookie(
        html_response(StatusCode::OK, finish(pc, h, &title, live, out)),
        set,
    )
}

// ------------------------------------------------------------------ build

async fn build_page(name: String, number: i64, h: HeaderMap, pc: Pc) -> Response {
    let name = html::unseg(&name);
    let key = format!("/builders/{name}/builds/{number}");
    let p = pc.clone();
    let h2 = h.clone();
    let r = cached(&pc, &h, &key, async move {
        match p.ctx.db.build(&name, number).await {
            Ok(Some(d)) => render_build(&d, &h2, &p),
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
    if forms_allowed(&pc) {
        personal(r)
    } else {
        r
    }
}

fn render_build(d: &BuildDetail, h: &HeaderMap, pc: &Pc) -> Response {
    let b = &d.build;
    let Forms {
        token,
        set_cookie: set,
        note,
    } = if b.result.is_none() {
        forms_for(pc, h, &build_url(&b.builder, b.number))
    } else {
        Forms {
            token: None,
            set_cookie: None,
            note: String::new(),
        }
    };
    let mut out = format!(
        "<h1>{} build #{}</h1><div data-part=\"build\" id=\"build-part\">",
        builder_link(&b.builder),
        b.number
    );
    let _ = write!(
        out,
        "<p class=\"result {0}\" id=\"build-result\">{1}</p><table class=\"props\">\
         <tr><th>reason</th><td>{2}</td></tr><tr><th>slave</th><td><a href=\"/slaves/{3}\">{4}</a></td></tr>\
         <tr><th>started</th><td>{5}</td></tr><tr><th>duration</th><td>{6}</td></tr>",
        html::result_class(b.result.as_deref()),
        esc(&match &b.result {
            Some(r) => format!("{r}: {}", b.text),
            None => "building".to_string(),
        }),
        esc(&b.reason),
        seg(&b.slave),
        esc(&b.slave),
        esc(&fmt_time(b.started_at)),
        duration_of(b.started_at, b.finished_at)
    );
    if let Some(f) = b.finished_at {
        let _ = write!(
            out,
            "<tr><th>finished</th><td>{}</td></tr>",
            esc(&fmt_time(f))
        );
    }
    if let Some(eta) = d.eta {
        let _ = write!(out, "<tr><th>ETA</th><td>{}</td></tr>", fmt_duration(eta));
    }
    let _ = write!(
        out,
        "<tr><th>branch</th><td>{}</td></tr><tr><th>revision</th><td>{}</td></tr>",
        esc(d.branch.as_deref().unwrap_or("(default)")),
        esc(d.revision.as_deref().unwrap_or("(latest)"))
    );
    let mut blame: Vec<&str> = d.changes.iter().map(|c| c.who.as_str()).collect();
    blame.sort();
    blame.dedup();
    let _ = write!(
        out,
        "<tr><th>blamelist</th><td>{}</td></tr>",
        esc(&blame.join(", "))
    );
    if !d.requests.is_empty() {
        let ids: Vec<String> = d.requests.iter().map(|r| r.to_string()).collect();
        let _ = write!(out, "<tr><th>requests</th><td>{}</td></tr>", ids.join(", "));
    }
    out.push_str("</table>");
    out.push_str(&note);
    if let Some(token) = &token {
        out.push_str(&stop_form(b, token));
    }
    out.push_str("<h2>Steps</h2><table class=\"list steps\"><thead><tr><th>#</th><th>step</th><th>result</th><th>duration</th><th>logs</th></tr></thead><tbody>");
    for s in &d.steps {
        let text = if s.finished_at.is_some() {
            &s.text
        } else {
            &s.description
        };
        let _ = write!(
            out,
            "<tr class=\"step-row\"><td>{}</td><td>{}</td><td class=\"{}\">{} {}</td><td>{}</td><td>",
            s.number,
            esc(&s.name),
            html::result_class(s.result.as_deref()),
            esc(result_word(s.result.as_deref())),
            esc(text),
            s.started_at.map(|t| duration_of(t, s.finished_at)).unwrap_or_default()
        );
        for l in &s.logs {
            let url = log_url(&b.builder, b.number, &s.name, &l.name);
            let _ = write!(
                out,
                "<a class=\"log\" href=\"{url}\">{}</a> (<a href=\"{url}/text\">text</a>, {} lines) ",
                esc(&l.name),
                l.lines
            );
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table>");
    if !d.changes.is_empty() {
        out.push_str("<h2>Changes</h2><ul class=\"changes\">");
        for c in &d.changes {
            let _ = write!(
                out,
                "<li><a href=\"/changes/{}\">change {}</a> by {}: <pre class=\"comments\">{}</pre></li>",
                c.id,
                c.id,
                esc(&c.who),
                esc(&c.comments)
            );
        }
        out.push_str("</ul>");
    }
    if !d.properties.is_empty() {
        out.push_str("<h2>Properties</h2><table class=\"props\"><thead><tr><th>name</th><th>value</th><th>source</th></tr></thead><tbody>");
        for (k, (v, src)) in &d.properties {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(k),
                esc(v),
                esc(src)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</div>");
    let title = format!("{} build #{}", b.builder, b.number);
    let live = if b.result.is_none() { "page" } else { "" };
    set_cookie(
        html_response(StatusCode::OK, finish(pc, h, &title, live, out)),
        set,
    )
}

// ------------------------------------------------------------------ logs

/// Decode as much of `buf` as is whole UTF-8: (text, bytes used). Bad bytes become
/// U+FFFD; an incomplete character at the end is left for the next read unless
/// `at_end`.
pub(crate) fn decode_prefix(buf: &[u8], at_end: bool) -> (String, usize) {
    let mut out = String::with_capacity(buf.len());
    let mut i = 0;
    while i < buf.len() {
        match std::str::from_utf8(&buf[i..]) {
            Ok(s) => {
                out.push_str(s);
                i = buf.len();
            }
            Err(e) => {
                let good = e.valid_up_to();
                // Safe: from_utf8 said these bytes are valid.
                out.push_str(std::str::from_utf8(&buf[i..i + good]).unwrap_or_default());
                i += good;
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        i += n;
                    }
                    None if at_end => {
                        out.push('\u{FFFD}');
                        i = buf.len();
                    }
                    None => break,
                }
            }
        }
    }
    (out, i)
}

/// Split bytes starting at file offset `start` by channel runs: (channel, text)
/// pieces and the bytes used (an incomplete last character waits).
pub(crate) fn split_runs(
    runs: &[(u64, Channel)],
    start: u64,
    buf: &[u8],
    at_end: bool,
) -> (Vec<(Channel, String)>, usize) {
    let mut pieces = Vec::new();
    let mut used = 0usize;
    while used < buf.len() {
        let pos = start + used as u64;
        // The run holding `pos` and where the next one starts.
        let idx = runs.partition_point(|(o, _)| *o <= pos);
        let channel = if idx == 0 {
            Channel::Stdout
        } else {
            runs[idx - 1].1
        };
        let end = runs
            .get(idx)
            .map(|(o, _)| (*o - start) as usize)
            .unwrap_or(buf.len())
            .min(buf.len());
        let last = end == buf.len();
        let (text, n) = decode_prefix(&buf[used..end], !last || at_end);
        if !text.is_empty() {
            pieces.push((channel, text));
        }
        used += n;
        if n == 0 || (last && used < end) {
            break;
        }
    }
    (pieces, used)
}

fn channel_class(c: Channel) -> &'static str {
    match c {
        Channel::Stdout => "stdout",
        Channel::Stderr => "stderr",
        Channel::Header => "header",
    }
}

/// The log a log URL names (its step by name or number), opened, with its length
/// now (a growing log is read up to there); or the error page to answer with.
/// The log's record, a reader of its bytes and their length now.
async fn open_log(
    pc: &Pc,
    builder: &str,
    number: i64,
    step: &str,
    log: &str,
) -> Result<
    (
        crate::db::builds::LogFile,
        crate::master::logs::LogBytes,
        u64,
    ),
    Response,
> {
    let file = match pc.ctx.db.log_file(builder, number, step, log).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            return Err(error_page(
                pc,
                StatusCode::NOT_FOUND,
                "No such log",
                &format!("{builder} build {number} has no log {log:?} in a step {step:?}"),
            ))
        }
        Err(e) => return Err(db_error(pc, "log", e)),
    };
    match crate::master::logs::log_reader(&file.path, file.complete).await {
        Ok((reader, len)) => Ok((file, reader, len)),
        Err(e) => {
            tracing::error!("log {}: {e}", file.path.display());
            Err(error_page(
                pc,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Log missing",
                "the log file is missing",
            ))
        }
    }
}

async fn log_page(b: String, n: i64, s: String, l: String, h: HeaderMap, pc: Pc) -> Response {
    let (builder, step, log) = (html::unseg(&b), html::unseg(&s), html::unseg(&l));
    let (file, f, len) = match open_log(&pc, &builder, n, &step, &log).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let runs = crate::master::logs::read_channel_runs(&file.path)
        .unwrap_or_else(|_| vec![(0, Channel::Stdout)]);
    let url = log_url(&builder, n, &step, &log);
    let title = format!("{builder} #{n} {step} {log}");
    let head = format!(
        "<h1>{} <a href=\"{}\">build #{n}</a>: {} / {}</h1>\
         <p><a href=\"{url}/text\">plain text</a> · <a href=\"{url}/text?download\">download</a>\
         <span id=\"log-state\">{}</span></p><pre class=\"log\" id=\"log\" data-tail=\"{url}/tail\" data-offset=\"{{OFFSET}}\" data-complete=\"{}\">",
        builder_link(&builder),
        build_url(&builder, n),
        esc(&step),
        esc(&log),
        if file.complete { "" } else { " · <b>live</b>" },
        file.complete
    );
    let page = finish(
        &pc,
        &h,
        &title,
        if file.complete { "" } else { "log" },
        "\u{0}".into(),
    );
    let (pre, post) = page.split_once('\u{0}').unwrap_or((&page, ""));
    // The offset the live tail starts from is only known once the bytes are sent;
    // the page is streamed, so the tail starts at `len` read now.
    let first = format!("{pre}{}", head.replace("{OFFSET}", &len.to_string()));
    let last = format!("</pre>{post}");
    struct St {
        f: crate::master::logs::LogBytes,
        pos: u64,
        len: u64,
        runs: Vec<(u64, Channel)>,
        pending: Vec<u8>,
        first: Option<String>,
        last: Option<String>,
    }
    let st = St {
        f,
        pos: 0,
        len,
        runs,
        pending: Vec::new(),
        first: Some(first),
        last: Some(last),
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((Ok::<Bytes, std::io::Error>(Bytes::from(first)), st));
        }
        let read_so_far = st.pos + st.pending.len() as u64;
        if read_so_far < st.len {
            let want = (st.len - read_so_far).min(LOG_CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            let n = match st.f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => return Some((Err(e), st)),
            };
            if n == 0 {
                st.len = read_so_far;
            }
            st.pending.extend_from_slice(&buf[..n]);
            let at_end = st.pos + st.pending.len() as u64 >= st.len;
            let (pieces, used) = split_runs(&st.runs, st.pos, &st.pending, at_end);
            st.pending.drain(..used);
            st.pos += used as u64;
            let mut out = String::with_capacity(used + used / 8 + 64);
            for (c, text) in pieces {
                if c == Channel::Stdout {
                    html::esc_into(&mut out, &text);
                } else {
                    let _ = write!(out, "<span class=\"{}\">", channel_class(c));
                    html::esc_into(&mut out, &text);
                    out.push_str("</span>");
                }
            }
            return Some((Ok(Bytes::from(out)), st));
        }
        st.last.take().map(|l| (Ok(Bytes::from(l)), st))
    });
    let mut r = warp::reply::stream(super::sse::body_stream(stream)).into_response();
    let hd = r.headers_mut();
    hd.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    hd.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(hd);
    r
}

async fn log_text(
    b: String,
    n: i64,
    s: String,
    l: String,
    q: HashMap<String, String>,
    pc: Pc,
) -> Response {
    let (builder, step, log) = (html::unseg(&b), html::unseg(&s), html::unseg(&l));
    let (_file, f, len) = match open_log(&pc, &builder, n, &step, &log).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let stream = tokio_util::io::ReaderStream::with_capacity(f, LOG_CHUNK);
    let mut r = warp::reply::stream(stream).into_response();
    let hd = r.headers_mut();
    hd.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    hd.insert(header::CONTENT_LENGTH, len.into());
    hd.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if q.contains_key("download") {
        use crate::master::logs::safe_name;
        let fname = format!(
            "{}-{n}-{}-{}.log",
            safe_name(&builder),
            safe_name(&step),
            safe_name(&log)
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{fname}\"")) {
            hd.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    r
}

// ------------------------------------------------------------------ changes

async fn changes_page(q: HashMap<String, String>, h: HeaderMap, pc: Pc) -> Response {
    let key = query_key("/changes", &q);
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, &key, async move {
        let before: Option<i64> = q.get("before").and_then(|b| b.parse().ok());
        let (list, more) = match super::api::changes_page(
            &p.ctx.db,
            CHANGES_PAGE,
            before,
            SUMMARY_CAPS,
            usize::MAX,
        )
        .await
        {
            Ok(page) => (page.rows, page.more),
            Err(e) => return db_error(&p, "changes", e),
        };
        let mut out = String::from("<h1>Changes</h1><div data-part=\"changes\" id=\"changes-part\"><table class=\"list\"><thead><tr><th>change</th><th>who</th><th>when</th><th>branch</th><th>revision</th><th>comments</th><th>files</th></tr></thead><tbody>");
        for c in &list {
            let _ = write!(
                out,
                "<tr><td><a href=\"/changes/{0}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td></tr>",
                c.id,
                esc(&c.who),
                esc(&fmt_time(c.when as f64)),
                esc(c.branch.as_deref().unwrap_or("")),
                esc(c.revision.as_deref().map(|r| r.get(..12).unwrap_or(r)).unwrap_or("")),
                esc(c.comments.lines().next().unwrap_or("")),
                c.files_total
            );
        }
        out.push_str("</tbody></table></div>");
        let older = list.last().filter(|_| more).map(|c| c.id);
        out.push_str(&pager("/changes", &[], older, "older changes →"));
        let live = if before.is_none() { "page" } else { "" };
        html_response(StatusCode::OK, finish(&p, &h2, "Changes", live, out))
    })
    .await
}

fn safe_link(url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        format!(
            "<a href=\"{0}\" rel=\"noopener noreferrer\">{0}</a>",
            esc(url)
        )
    } else {
        esc(url)
    }
}

async fn change_page(id: i64, h: HeaderMap, pc: Pc) -> Response {
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, &format!("/changes/{id}"), async move {
        let c = match super::api::change_one(&p.ctx.db, id, super::api::ONE_CAPS).await {
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
        let mut out = format!("<h1>Change {}</h1><table class=\"props\">", c.id);
        let rows: [(&str, String); 7] = [
            ("who", esc(&c.who)),
            ("when", esc(&fmt_time(c.when as f64))),
            ("branch", esc(c.branch.as_deref().unwrap_or("(default)"))),
            ("revision", esc(c.revision.as_deref().unwrap_or(""))),
            ("repository", safe_link(&c.repository)),
            ("project", esc(&c.project)),
            ("category", esc(&c.category)),
        ];
        for (k, v) in rows {
            let _ = write!(out, "<tr><th>{k}</th><td>{v}</td></tr>");
        }
        out.push_str("</table>");
        if !c.truncated.is_empty() {
            let _ = write!(
                out,
                "<p class=\"note\">Cut short here (stored longer than the master shows): {}.</p>",
                esc(&c.truncated.join(", "))
            );
        }
        out.push_str("<h2>Comments</h2>");
        let _ = write!(
            out,
            "<pre class=\"comments\">{}</pre><h2>Files</h2><ul class=\"files\">",
            esc(&c.comments)
        );
        for f in &c.files {
            let _ = write!(out, "<li>{}</li>", esc(f));
        }
        out.push_str("</ul>");
        if !c.links.is_empty() {
            out.push_str("<h2>Links</h2><ul>");
            for l in &c.links {
                let _ = write!(out, "<li>{}</li>", safe_link(l));
            }
            out.push_str("</ul>");
        }
        let _ = write!(
            out,
            "<p><a href=\"/changes?before={}\">older changes</a></p>",
            c.id
        );
        html_response(
            StatusCode::OK,
            finish(&p, &h2, &format!("Change {id}"), "", out),
        )
    })
    .await
}

// ------------------------------------------------------------------ slaves

async fn slaves_page(h: HeaderMap, pc: Pc) -> Response {
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, "/slaves", async move {
        let config = p.ctx.config.borrow().clone();
        let list = match super::slaves_json(&p.ctx.db, &config).await {
            Ok(l) => l,
            Err(e) => return db_error(&p, "slaves", e),
        };
        let builders = config.builders();
        let mut out = String::from("<h1>Slaves</h1><div data-part=\"slaves\" id=\"slaves-part\"><table class=\"list\"><thead><tr><th>slave</th><th>state</th><th>admin</th><th>host</th><th>os</th><th>version</th><th>last seen</th><th>builders</th></tr></thead><tbody>");
        for s in &list {
            let bs: Vec<String> = builders.iter().filter(|b| b.slave == s.name).map(|b| builder_link(&b.name)).collect();
            let _ = write!(
                out,
                "<tr><td><a href=\"/slaves/{}\">{}</a></td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                seg(&s.name),
                esc(&s.name),
                if s.connected { "success" } else { "offline" },
                if s.connected { "connected" } else { "offline" },
                esc(s.admin.as_deref().unwrap_or("")),
                esc(s.host.as_deref().unwrap_or("")),
                esc(s.os.as_deref().unwrap_or("")),
                esc(s.version.as_deref().unwrap_or("")),
                s.last_seen.map(|t| esc(&fmt_time(t as f64))).unwrap_or_default(),
                bs.join(", ")
            );
        }
        out.push_str("</tbody></table></div>");
        html_response(StatusCode::OK, finish(&p, &h2, "Slaves", "page", out))
    })
    .await
}

async fn slave_page(name: String, h: HeaderMap, pc: Pc) -> Response {
    let name = html::unseg(&name);
    let p = pc.clone();
    let h2 = h.clone();
    cached(&pc, &h, &format!("/slaves/{name}"), async move {
        let config = p.ctx.config.borrow().clone();
        if config.slave(&name).is_none() {
            return error_page(&p, StatusCode::NOT_FOUND, "No such slave", &format!("there is no slave named {name:?}"));
        }
        let row = match p.ctx.db.slave(&name).await {
            Ok(r) => r.unwrap_or_else(|| crate::db::slaves::SlaveRow::never_seen(&name)),
            Err(e) => return db_error(&p, "slave", e),
        };
        let n2 = name.clone();
        let conns = p
            .ctx
            .db
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT peer, connected_at, disconnected_at, reason FROM slave_connections
                     WHERE slave = ?1 ORDER BY id DESC LIMIT 50",
                )?;
                let rows = st.query_map([n2], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .unwrap_or_default();
        let mut out = format!("<h1>Slave {}</h1><div data-part=\"slave\" id=\"slave-part\"><table class=\"props\">", esc(&name));
        let rows: [(&str, String); 7] = [
            ("state", (if row.connected { "connected" } else { "offline" }).to_string()),
            ("admin", esc(row.admin.as_deref().unwrap_or(""))),
            ("host", esc(row.host.as_deref().unwrap_or(""))),
            ("os", esc(row.os.as_deref().unwrap_or(""))),
            ("version", esc(row.version.as_deref().unwrap_or(""))),
            ("cpus", row.numcpus.map(|n| n.to_string()).unwrap_or_default()),
            ("last seen", row.last_seen.map(|t| esc(&fmt_time(t as f64))).unwrap_or_default()),
        ];
        for (k, v) in rows {
            let _ = write!(out, "<tr><th>{k}</th><td>{v}</td></tr>");
        }
        out.push_str("</table><h2>Builders</h2><ul>");
        for b in config.builders().iter().filter(|b| b.slave == name) {
            let _ = write!(out, "<li>{}</li>", builder_link(&b.name));
        }
        out.push_str("</ul><h2>Connections</h2><table class=\"list\"><thead><tr><th>from</th><th>connected</th><th>disconnected</th><th>why</th></tr></thead><tbody>");
        for (peer, at, until, why) in &conns {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(peer.as_deref().unwrap_or("")),
                esc(&fmt_time(*at as f64)),
                until.map(|t| esc(&fmt_time(t as f64))).unwrap_or_else(|| "still connected".into()),
                esc(why.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</tbody></table></div>");
        html_response(StatusCode::OK, finish(&p, &h2, &format!("Slave {name}"), "page", out))
    })
    .await
}

// ------------------------------------------------------------------ about, files, badges

async fn about_page(h: HeaderMap, pc: Pc) -> Response {
    let config = pc.ctx.config.borrow().clone();
    let schema = pc.ctx.db.schema_version().await.unwrap_or(0);
    let mut out = String::from("<h1>About this master</h1><table class=\"props\">");
    let rows: [(&str, String); 7] = [
        ("autobot", esc(crate::VERSION)),
        ("SQLite", esc(rusqlite::version())),
        ("database schema", schema.to_string()),
        ("project", esc(&config.project_name)),
        ("project URL", safe_link(&config.project_url)),
        ("builders", config.builders().len().to_string()),
        ("slaves", config.slaves.len().to_string()),
    ];
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    let _ = write!(
        out,
        "</table><p>Forcing builds is {} here.</p><p>autobot is a Buildbot-style continuous-integration system; \
         these pages follow the Buildbot 0.7 waterfall.</p>",
        if forms_allowed(&pc) { "on" } else { "off" }
    );
    html_response(StatusCode::OK, finish(&pc, &h, "About", "", out))
}

/// `/static/…`, `/favicon.ico` and `/robots.txt`; the last two may be replaced by
/// the files `favicon = FILE` / `robots_txt = FILE` name, or else files in
/// `MASTERDIR/public_html/` (as in Buildbot 0.7).
async fn static_file(name: String, h: HeaderMap, pc: Pc) -> Response {
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

/// `/badge/NAME.svg`: the builder's last result as a small SVG.
async fn badge(file: String, h: HeaderMap, pc: Pc) -> Response {
    let file = html::unseg(&file);
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
        let last: Option<(String, i64)> = {
            let n = name.clone();
            p.ctx
                .db
                .read(move |c| {
                    c.query_row(
                        "SELECT result, number FROM builds WHERE builder = ?1 AND finished_at IS NOT NULL
                         ORDER BY number DESC LIMIT 1",
                        [n],
                        |r| Ok((r.get::<_, Option<String>>(0)?.unwrap_or_default(), r.get(1)?)),
                    )
                    .optional()
                })
                .await
                .unwrap_or(None)
        };
        let (word, color) = match last.as_ref().map(|(r, _)| r.as_str()) {
            Some("success") => ("passing", "#4c1"),
            Some("warnings") => ("warnings", "#dfb317"),
            Some("failure") => ("failing", "#e05d44"),
            Some("exception") => ("exception", "#9f4fc4"),
            Some("skipped") => ("skipped", "#9f9f9f"),
            _ => ("unknown", "#9f9f9f"),
        };
        let label = "build";
        let lw = 7 * label.len() as u32 + 10;
        let rw = 7 * word.len() as u32 + 10;
        let svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"20\" role=\"img\" aria-label=\"{t}\">\
             <title>{t}</title><rect width=\"{lw}\" height=\"20\" fill=\"#555\"/>\
             <rect x=\"{lw}\" width=\"{rw}\" height=\"20\" fill=\"{color}\"/>\
             <g fill=\"#fff\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\">\
             <text x=\"5\" y=\"14\">{label}</text><text x=\"{x2}\" y=\"14\">{word}</text></g></svg>",
            w = lw + rw,
            t = esc(&format!("{name}: {word}")),
            x2 = lw + 5
        );
        let mut r = warp::reply::with_status(svg, StatusCode::OK).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
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
    fn decode_keeps_split_characters_for_later() {
        let s = "aé€".as_bytes();
        let (t, n) = decode_prefix(&s[..4], false);
        assert_eq!((t.as_str(), n), ("aé", 3));
        let (t, n) = decode_prefix(&s[..4], true);
        assert_eq!((t.as_str(), n), ("aé\u{FFFD}", 4));
        let (t, n) = decode_prefix(b"a\xffb", false);
        assert_eq!((t.as_str(), n), ("a\u{FFFD}b", 3));
    }

    #[test]
    fn runs_split_by_channel() {
        let runs = vec![
            (0, Channel::Header),
            (4, Channel::Stdout),
            (8, Channel::Stderr),
        ];
        let (p, n) = split_runs(&runs, 2, b"adoutxerr", true);
        assert_eq!(n, 9);
        assert_eq!(
            p,
            vec![
                (Channel::Header, "ad".to_string()),
                (Channel::Stdout, "outx".to_string()),
                (Channel::Stderr, "err".to_string())
            ]
        );
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
    }

    #[test]
    fn loopback_hosts_are_secure_contexts() {
        for host in [
            "localhost",
            "localhost:8010",
            "a.localhost:1",
            "127.0.0.1:8010",
            "127.1.2.3",
            "[::1]:8010",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "ci.example",
            "ci.example:8010",
            "10.0.0.1:8010",
            "[::2]:80",
            "localhost.example",
            "128.0.0.1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("ci.example:8010"));
        assert_eq!(csrf_cookie_name(&h), CSRF_COOKIE_PLAIN);
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(csrf_cookie_name(&h), CSRF_COOKIE_HOST);
    }

    #[test]
    fn tokens_and_login_cookies_are_bound_to_their_user() {
        let st = PageState::new(false, None);
        let nonce = "0123456789abcdef0123456789abcdef";
        assert_ne!(
            csrf_token(&st, nonce, "alice"),
            csrf_token(&st, nonce, "bob")
        );
        assert_ne!(csrf_token(&st, nonce, ""), csrf_token(&st, nonce, "alice"));
        // Another master (another key) makes other tokens.
        let other = PageState::new(false, None);
        assert_ne!(
            csrf_token(&st, nonce, "alice"),
            csrf_token(&other, nonce, "alice")
        );
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8010"));
        let with = |v: String| {
            let mut h = h.clone();
            h.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("{LOGIN_COOKIE_HOST}={v}")).unwrap(),
            );
            h
        };
        let alice = login_cookie(&st, "alice");
        assert_eq!(
            login_cookie_user(&st, &with(alice.clone())).as_deref(),
            Some("alice")
        );
        assert_eq!(login_cookie_user(&other, &with(alice.clone())), None);
        let (_, sig) = alice.split_once('.').unwrap();
        assert_eq!(login_cookie_user(&st, &with(format!("626f62.{sig}"))), None);
        assert_eq!(login_cookie_user(&st, &with("zz.00".into())), None);
    }

    #[test]
    fn forms_decode() {
        let f = parse_form(b"who=A+B&reason=%3Cscript%3E&csrf=x");
        assert_eq!(f["who"], "A B");
        assert_eq!(f["reason"], "<script>");
    }
}
