//! The JSON API of the build engine on `htmlport`: builders, builds, steps' logs,
//! BuildRequests, BuildSets and Changes to read; force and stop to act.
//!
//! Reads come from SQLite (through [`crate::db::Db`]) and the configuration in
//! force; the two actions go through the engine's request queue
//! ([`crate::engine::Engine::force`], [`crate::engine::Engine::stop_build`]), the
//! same path the schedulers use. Results are lower-case strings (`success`,
//! `warnings`, `failure`, `skipped`, `exception`) and `null` while running. A log
//! is streamed from its file in fixed-size chunks, so downloading a 100 MB log
//! costs the master no more memory than a small one.
//!
//! Force and stop act as a `[users]` user when `[users]` lists any (HTTP Basic,
//! 401 otherwise); [`super::state_change_guard`] has already refused them from
//! other sites and without a JSON content type.
//!
//! What one response holds is bounded whatever the database holds: a list ends
//! at [`PAGE_BYTES`] of JSON as well as at `limit` rows, with a
//! `Link: <…>; rel="next"` header to the rest; each listed row's text fields are
//! cut at [`LIST_CAPS`] and a single Change's at [`ONE_CAPS`] (the reads are
//! [`crate::db::listing`]'s).

use std::collections::HashMap;

use serde::Serialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{api, json_error, with, WebContext};
use crate::db::builds::BuildRow;
pub use crate::db::listing::PAGE_BYTES;
use crate::db::listing::{LIST_CAPS, ONE_CAPS};
use crate::db::status::BuilderState;
use crate::engine::{EngineError, ForceRequest, WaitReason};

/// Largest JSON body a POST may carry.
const MAX_BODY: u64 = 64 * 1024;

/// Default and largest `limit` of list queries.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

/// Bytes per chunk when streaming a log.
const LOG_CHUNK: usize = 64 * 1024;

/// The engine routes, `.or()`-ed into [`super::routes`].
pub fn routes(ctx: WebContext) -> BoxedFilter<(Response,)> {
    let builders = api()
        .and(warp::path!("builders"))
        .and(warp::get())
        .and(with(ctx.clone()))
        .then(get_builders)
        .boxed();
    let builder = api()
        .and(warp::path!("builders" / String))
        .and(warp::get())
        .and(with(ctx.clone()))
        .then(get_builder)
        .boxed();
    let builds = api()
        .and(warp::path!("builders" / String / "builds"))
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with(ctx.clone()))
        .then(get_builds)
        .boxed();
    let build = api()
        .and(warp::path!("builders" / String / "builds" / i64))
        .and(warp::get())
        .and(with(ctx.clone()))
        .then(get_build)
        .boxed();
    let log = api()
        .and(warp::path!(
            "builders" / String / "builds" / i64 / "steps" / String / "logs" / String
        ))
        .and(warp::get())
        .and(with(ctx.clone()))
        .then(get_log)
        .boxed();
    let log_search = api()
        .and(warp::path!(
            "builders" / String / "builds" / i64 / "steps" / String / "logs" / String / "search"
        ))
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with(ctx.clone()))
        .then(get_log_search)
        .boxed();
    let force = api()
        .and(warp::path!("builders" / String / "force"))
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(json_body::<ForceRequest>())
        .and(with(ctx.clone()))
        .then(post_force)
        .boxed();
    let stop = api()
        .and(warp::path!("builders" / String / "builds" / i64 / "stop"))
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(json_body::<StopRequest>())
        .and(with(ctx.clone()))
        .then(post_stop)
        .boxed();
    let request = api()
        .and(warp::path!("buildrequests" / i64))
        .and(warp::get())
        .and(with(ctx.clone()))
        .then(get_buildrequest)
        .boxed();
    let buildset = api()
        .and(warp::path!("buildsets" / i64))
        .and(warp::get())
        .and(with(ctx.clone()))
        .then(get_buildset)
        .boxed();
    let changes = api()
        .and(warp::path!("changes"))
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with(ctx.clone()))
        .then(get_changes)
        .boxed();
    let change = api()
        .and(warp::path!("changes" / i64))
        .and(warp::get())
        .and(with(ctx))
        .then(get_change)
        .boxed();
    builders
        .or(builder)
        .unify()
        .or(builds)
        .unify()
        .or(build)
        .unify()
        .or(log)
        .unify()
        .or(log_search)
        .unify()
        .or(force)
        .unify()
        .or(stop)
        .unify()
        .or(request)
        .unify()
        .or(buildset)
        .unify()
        .or(changes)
        .unify()
        .or(change)
        .unify()
        .boxed()
}

/// A JSON object body of at most [`MAX_BODY`] bytes (`{}` for every default); an
/// empty or malformed one is answered 400 with the reason (see
/// [`super::rejections`]).
fn json_body<T>() -> BoxedFilter<(T,)>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    warp::body::content_length_limit(MAX_BODY)
        .and(warp::body::bytes())
        .and_then(|b: bytes::Bytes| async move {
            let bad = |why: String| warp::reject::custom(super::BadBody(why));
            if b.iter().all(u8::is_ascii_whitespace) {
                return Err(bad(
                    "the body is empty; send a JSON object ({} for every default)".into(),
                ));
            }
            let value: serde_json::Value =
                serde_json::from_slice(&b).map_err(|e| bad(e.to_string()))?;
            if !value.is_object() {
                return Err(bad("expected a JSON object".into()));
            }
            serde_json::from_value::<T>(value).map_err(|e| bad(e.to_string()))
        })
        .boxed()
}

/// What `POST …/stop` may say.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct StopRequest {
    who: Option<String>,
    reason: Option<String>,
}

/// One builder as `GET /api/v1/builders` shows it.
#[derive(Debug, Serialize)]
pub struct BuilderJson {
    pub name: String,
    pub factory: String,
    pub category: String,
    pub slaves: Vec<String>,
    /// `idle`, `building` or `offline` (no slave of it connected).
    pub state: BuilderState,
    /// The newest finished build.
    pub last_build: Option<BuildRow>,
    /// Builds running now, oldest first.
    pub running: Vec<BuildRow>,
    /// BuildRequests waiting for a slave.
    pub pending: i64,
    /// The waiting BuildRequests (best first, at most [`PENDING_SHOWN`]), each
    /// with why it waits.
    pub pending_requests: Vec<PendingJson>,
    /// Why the pending requests wait (`null` when none do).
    pub waiting: Option<WaitReason>,
    /// The names of the steps a build runs, in order.
    pub steps: Vec<String>,
}

/// Pending requests a builder's entry lists.
pub const PENDING_SHOWN: u32 = 50;

/// A BuildRequest waiting for a Build, as a builder's entry lists it.
#[derive(Debug, Serialize)]
pub struct PendingJson {
    pub id: i64,
    pub submitted_at: f64,
    /// The reason of its BuildSet.
    pub reason: String,
    /// Why it waits: `kind` (`no_slave`, `max_builds`, `locks`, `config`,
    /// `stopping`, `starting`) and `text`.
    pub waiting: WaitReason,
}

/// Why `builder`'s requests wait and the first of them, when some do.
pub async fn pending_of(
    ctx: &WebContext,
    builder: &str,
    pending: i64,
) -> Result<(Option<WaitReason>, Vec<PendingJson>), crate::db::DbError> {
    if pending == 0 {
        return Ok((None, Vec::new()));
    }
    let waiting = match ctx.engine.waiting(builder).await {
        Ok(w) => w,
        Err(EngineError::Db(e)) => return Err(e),
        Err(_) => None,
    };
    let Some(w) = waiting else {
        return Ok((None, Vec::new()));
    };
    let rows = ctx.db.queued_requests(builder, PENDING_SHOWN).await?;
    let list = rows
        .into_iter()
        .map(|r| PendingJson {
            id: r.id,
            submitted_at: r.submitted_at,
            reason: r.reason,
            waiting: w.clone(),
        })
        .collect();
    Ok((Some(w), list))
}

/// Every configured builder with its activity (in configuration order), read as
/// the pages read it (each build row's reason and text cut at [`LIST_CAPS`]).
pub async fn builders_json(ctx: &WebContext) -> Result<Vec<BuilderJson>, crate::db::DbError> {
    let config = ctx.config.borrow().clone();
    let states = super::pages::builder_states(ctx, None, None).await?;
    let mut waits = Vec::with_capacity(states.len());
    for b in &states {
        waits.push(pending_of(ctx, &b.name, b.pending).await?);
    }
    Ok(states
        .into_iter()
        .zip(waits)
        .map(|(b, (waiting, pending_requests))| {
            let steps = match (config.factory(&b.factory), b.slaves.first()) {
                (Some(f), Some(slave)) => config
                    .slave(slave)
                    .and_then(|s| crate::factory::build_steps(&f.recipe(), s.os.as_str()).ok())
                    .map(|steps| steps.into_iter().map(|s| s.name).collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            BuilderJson {
                name: b.name,
                factory: b.factory,
                category: b.category,
                slaves: b.slaves,
                state: b.state,
                last_build: b.last_build,
                running: b.running,
                pending: b.pending,
                pending_requests,
                waiting,
                steps,
            }
        })
        .collect())
}

fn db_error(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!("{what}: {e}");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "database error")
}

fn not_found(message: String) -> Response {
    json_error(StatusCode::NOT_FOUND, &message)
}

async fn get_builders(ctx: WebContext) -> Response {
    match builders_json(&ctx).await {
        Ok(list) => warp::reply::json(&list).into_response(),
        Err(e) => db_error("GET /api/v1/builders", e),
    }
}

async fn get_builder(name: String, ctx: WebContext) -> Response {
    match builders_json(&ctx).await {
        Ok(list) => match list.into_iter().find(|b| b.name == name) {
            Some(b) => warp::reply::json(&b).into_response(),
            None => unknown_builder(&ctx, &name),
        },
        Err(e) => db_error("GET /api/v1/builders/NAME", e),
    }
}

fn unknown_builder(ctx: &WebContext, name: &str) -> Response {
    let known: Vec<String> = ctx
        .config
        .borrow()
        .builders()
        .into_iter()
        .map(|b| b.name)
        .collect();
    not_found(format!(
        "no builder named {name:?}; the builders are: {}",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

fn is_configured(ctx: &WebContext, name: &str) -> bool {
    ctx.config
        .borrow()
        .builders()
        .iter()
        .any(|b| b.name == name)
}

/// `limit` and `before` of a list query; a 400 message when either is bad.
fn paging(q: &HashMap<String, String>) -> Result<(u32, Option<i64>), String> {
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(format!("limit={v:?}: give a number from 1 to {MAX_LIMIT}")),
        },
    };
    let before = match q.get("before") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => return Err(format!("before={v:?}: give a number")),
        },
    };
    Ok((limit, before))
}

async fn get_builds(name: String, q: HashMap<String, String>, ctx: WebContext) -> Response {
    let (limit, before) = match paging(&q) {
        Ok(p) => p,
        Err(why) => return json_error(StatusCode::BAD_REQUEST, &why),
    };
    match ctx
        .db
        .builds_page(&name, limit, before, LIST_CAPS, PAGE_BYTES)
        .await
    {
        Ok(page) if page.rows.is_empty() && !is_configured(&ctx, &name) => {
            unknown_builder(&ctx, &name)
        }
        Ok(page) => {
            let next = page.rows.last().filter(|_| page.more).map(|b| {
                format!(
                    "/api/v1/builders/{}/builds?limit={limit}&before={}",
                    super::html::seg(&name),
                    b.row.number
                )
            });
            list_reply(&page.rows, next)
        }
        Err(e) => db_error("GET /api/v1/builders/NAME/builds", e),
    }
}

/// A build as `GET /api/v1/builders/NAME/builds/N` shows it: the build and each
/// notification about it (mail, commit status) with its state.
#[derive(serde::Serialize)]
struct BuildWithNotifications {
    #[serde(flatten)]
    build: crate::db::builds::BuildDetail,
    notifications: Vec<crate::db::notifications::NotificationRow>,
}

/// Properties that hold a count are numbers in the JSON (`warnings-count: [3,
/// "Compile"]`), as Buildbot's are; every other property stays the string it was set
/// to.
fn numeric_properties(build: &mut serde_json::Value) {
    const COUNTS: &[&str] = &["warnings-count"];
    let Some(props) = build
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    for name in COUNTS {
        if let Some(value) = props.get_mut(*name).and_then(|p| p.get_mut(0)) {
            if let Some(n) = value.as_str().and_then(|v| v.parse::<u64>().ok()) {
                *value = serde_json::Value::from(n);
            }
        }
    }
}

async fn get_build(name: String, number: i64, ctx: WebContext) -> Response {
    match ctx.db.build(&name, number).await {
        Ok(Some(b)) => {
            let notifications = match ctx.db.build_notifications(&name, number).await {
                Ok(n) => n,
                Err(e) => return db_error("GET /api/v1/builders/NAME/builds/N", e),
            };
            let mut json = match serde_json::to_value(BuildWithNotifications {
                build: b,
                notifications,
            }) {
                Ok(v) => v,
                Err(e) => return db_error("GET /api/v1/builders/NAME/builds/N", e),
            };
            numeric_properties(&mut json);
            warp::reply::json(&json).into_response()
        }
        Ok(None) => not_found(format!("{name} has no build {number}")),
        Err(e) => db_error("GET /api/v1/builders/NAME/builds/N", e),
    }
}

async fn get_log(
    name: String,
    number: i64,
    step: String,
    log: String,
    ctx: WebContext,
) -> Response {
    let file = match ctx.db.log_file(&name, number, &step, &log).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            return not_found(format!(
                "{name} build {number} has no log {log:?} in a step {step:?}"
            ))
        }
        Err(e) => return db_error("GET …/logs/LOG", e),
    };
    if file.deleted {
        return json_error(
            StatusCode::GONE,
            &format!(
                "{name} build {number}: log {log:?} of step {step:?} was deleted by logHorizon"
            ),
        );
    }
    // A growing log is sent up to its current end; a finished one whole.
    let (reader, len) = match crate::logstore::log_reader(&file.path, file.complete).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("log {}: {e}", file.path.display());
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "the log file is missing");
        }
    };
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, LOG_CHUNK);
    let mut resp = warp::reply::stream(stream).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(warp::http::header::CONTENT_LENGTH, len.into());
    headers.insert(
        "x-content-type-options",
        warp::http::HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `GET …/logs/LOG/search?q=TEXT[&after=LINE]`: the lines of the whole log
/// holding the text (case-insensitive, literal), at most 1,000 after line
/// `after`, each with its log page and a short plain-text excerpt, and `more`
/// when the list was cut (ask again with `after` the last line listed).
async fn get_log_search(
    name: String,
    number: i64,
    step: String,
    log: String,
    q: HashMap<String, String>,
    ctx: WebContext,
) -> Response {
    use crate::web::html::unseg;
    let (name, step, log) = (unseg(&name), unseg(&step), unseg(&log));
    let asked = match crate::web::pages::search_query(&q) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "q: give the text to search for, like ?q=error",
            )
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    let file = match ctx.db.log_file(&name, number, &step, &log).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            return not_found(format!(
                "{name} build {number} has no log {log:?} in a step {step:?}"
            ))
        }
        Err(e) => return db_error("GET …/logs/LOG/search", e),
    };
    if file.deleted {
        return json_error(
            StatusCode::GONE,
            &format!(
                "{name} build {number}: log {log:?} of step {step:?} was deleted by logHorizon"
            ),
        );
    }
    let found = match crate::logstore::log_reader(&file.path, file.complete).await {
        Ok((_, len)) => crate::web::pages::find_in_log(&file.path, len, &asked.0, asked.1).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(f) => {
            let mut r = warp::reply::json(&f).into_response();
            r.headers_mut().insert(
                warp::http::header::CACHE_CONTROL,
                warp::http::HeaderValue::from_static("no-cache"),
            );
            r
        }
        Err(e) => {
            tracing::error!("log {}: {e}", file.path.display());
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the log file cannot be read",
            )
        }
    }
}

fn engine_error(e: EngineError) -> Response {
    match super::engine_status(&e) {
        Some(status) => json_error(status, &e.to_string()),
        None => db_error("engine", &e),
    }
}

fn force_refused() -> Response {
    json_error(
        StatusCode::FORBIDDEN,
        "forcing and stopping builds is off on this master (allowForce = false in [:master:])",
    )
}

/// The `[users]` user a force or stop acts as (see
/// [`crate::slavelink::auth::web_user`]), or the 401 to answer.
#[allow(clippy::result_large_err)] // the error is the response to send
fn api_user(ctx: &WebContext, auth: Option<&str>, what: &str) -> Result<Option<String>, Response> {
    let config = ctx.config.borrow().clone();
    crate::slavelink::auth::web_user(&config, auth).map_err(|why| {
        tracing::warn!("{what} refused: {why}");
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "forcing and stopping builds needs HTTP Basic credentials of a user in [users] of master.ini",
        );
        r.headers_mut().insert(
            warp::http::header::WWW_AUTHENTICATE,
            warp::http::HeaderValue::from_static(super::forms::REALM),
        );
        r
    })
}

async fn post_force(
    name: String,
    auth: Option<String>,
    mut req: ForceRequest,
    ctx: WebContext,
) -> Response {
    let user = match api_user(&ctx, auth.as_deref(), "POST …/force") {
        Ok(u) => u,
        Err(r) => return r,
    };
    if !ctx.config.borrow().allow_force {
        return force_refused();
    }
    // A logged-in user is who forced, whatever the body says.
    if user.is_some() {
        req.who = user;
    }
    match ctx.engine.force(&name, req).await {
        Ok(r) => {
            warp::reply::with_status(warp::reply::json(&r), StatusCode::ACCEPTED).into_response()
        }
        Err(e) => engine_error(e),
    }
}

async fn post_stop(
    name: String,
    number: i64,
    auth: Option<String>,
    req: StopRequest,
    ctx: WebContext,
) -> Response {
    let user = match api_user(&ctx, auth.as_deref(), "POST …/stop") {
        Ok(u) => u,
        Err(r) => return r,
    };
    if !ctx.config.borrow().allow_force {
        return force_refused();
    }
    let who = user.or(req.who).unwrap_or_default();
    let reason = req
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "no reason given".into());
    match ctx.engine.stop_build(&name, number, &who, &reason).await {
        Ok(()) => match ctx.db.build(&name, number).await {
            Ok(Some(b)) => warp::reply::json(&b).into_response(),
            Ok(None) => not_found(format!("{name} has no build {number}")),
            Err(e) => db_error("POST …/stop", e),
        },
        Err(e) => engine_error(e),
    }
}

async fn get_buildrequest(id: i64, ctx: WebContext) -> Response {
    match ctx.db.buildrequest(id).await {
        Ok(Some(r)) => warp::reply::json(&r).into_response(),
        Ok(None) => not_found(format!("no BuildRequest {id}")),
        Err(e) => db_error("GET /api/v1/buildrequests/ID", e),
    }
}

async fn get_buildset(id: i64, ctx: WebContext) -> Response {
    match ctx.db.buildset(id).await {
        Ok(Some(r)) => warp::reply::json(&r).into_response(),
        Ok(None) => not_found(format!("no BuildSet {id}")),
        Err(e) => db_error("GET /api/v1/buildsets/ID", e),
    }
}

async fn get_changes(q: HashMap<String, String>, ctx: WebContext) -> Response {
    let (limit, before) = match paging(&q) {
        Ok(p) => p,
        Err(why) => return json_error(StatusCode::BAD_REQUEST, &why),
    };
    match ctx
        .db
        .changes_page(limit, before, LIST_CAPS, PAGE_BYTES)
        .await
    {
        Ok(page) => {
            let next = page
                .rows
                .last()
                .filter(|_| page.more)
                .map(|c| format!("/api/v1/changes?limit={limit}&before={}", c.id));
            list_reply(&page.rows, next)
        }
        Err(e) => db_error("GET /api/v1/changes", e),
    }
}

async fn get_change(id: i64, ctx: WebContext) -> Response {
    match ctx.db.change_capped(id, ONE_CAPS).await {
        Ok(Some(c)) => warp::reply::json(&c).into_response(),
        Ok(None) => not_found(format!("no change {id}")),
        Err(e) => db_error("GET /api/v1/changes/ID", e),
    }
}

// ------------------------------------------------------------ bounded reads

/// A JSON array of `rows`, with a `Link: <next>; rel="next"` header when rows were
/// left for another page.
fn list_reply<T: Serialize>(rows: &[T], next: Option<String>) -> Response {
    let mut r = warp::reply::json(&rows).into_response();
    if let Some(v) =
        next.and_then(|n| warp::http::HeaderValue::from_str(&format!("<{n}>; rel=\"next\"")).ok())
    {
        r.headers_mut().insert(warp::http::header::LINK, v);
    }
    r
}
