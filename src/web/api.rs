//! The JSON API of the build engine on `htmlport`: builders, builds, steps' logs,
//! BuildRequests, BuildSets and Changes to read; force and stop to act.
//!
//! Reads come from SQLite (through [`crate::db::Db`]) and the configuration in
//! force; the two actions go through the engine's request queue
//! ([`crate::master::Engine::force`], [`crate::master::Engine::stop_build`]), the
//! same path the schedulers use. Results are lower-case strings (`success`,
//! `warnings`, `failure`, `skipped`, `exception`) and `null` while running. A log
//! is streamed from its file in fixed-size chunks, so downloading a 100 MB log
//! costs the master no more memory than a small one.

use std::collections::HashMap;

use serde::Serialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{api, json_error, with, WebContext};
use crate::db::builds::BuildRow;
use crate::master::{EngineError, ForceRequest};

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
    let force = api()
        .and(warp::path!("builders" / String / "force"))
        .and(warp::post())
        .and(json_body::<ForceRequest>())
        .and(with(ctx.clone()))
        .then(post_force)
        .boxed();
    let stop = api()
        .and(warp::path!("builders" / String / "builds" / i64 / "stop"))
        .and(warp::post())
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

/// A JSON body of at most [`MAX_BODY`] bytes; an empty body is `T::default()`, a
/// malformed one is answered 400 with serde's reason (see [`super::rejections`]).
fn json_body<T>() -> BoxedFilter<(T,)>
where
    T: serde::de::DeserializeOwned + Default + Send + 'static,
{
    warp::body::content_length_limit(MAX_BODY)
        .and(warp::body::bytes())
        .and_then(|b: bytes::Bytes| async move {
            if b.iter().all(u8::is_ascii_whitespace) {
                return Ok(T::default());
            }
            let bad = |why: String| warp::reject::custom(super::BadBody(why));
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
    pub state: &'static str,
    /// The newest finished build.
    pub last_build: Option<BuildRow>,
    /// Builds running now, oldest first.
    pub running: Vec<BuildRow>,
    /// BuildRequests waiting for a slave.
    pub pending: i64,
    /// The names of the steps a build runs, in order.
    pub steps: Vec<String>,
}

/// Every configured builder with its activity (in configuration order).
pub async fn builders_json(ctx: &WebContext) -> Result<Vec<BuilderJson>, crate::db::DbError> {
    let config = ctx.config.borrow().clone();
    let builders = config.builders();
    let activity = ctx
        .db
        .builder_activity(builders.iter().map(|b| b.name.clone()).collect())
        .await?;
    let connected: Vec<String> = ctx
        .db
        .slaves()
        .await?
        .into_iter()
        .filter(|s| s.connected)
        .map(|s| s.name)
        .collect();
    Ok(builders
        .into_iter()
        .zip(activity)
        .map(|(b, a)| {
            let factory = config.factory(&b.factory);
            let steps = match (factory, config.slave(&b.slave)) {
                (Some(f), Some(s)) => crate::factory::build_steps(f, s)
                    .map(|steps| steps.into_iter().map(|s| s.name).collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let state = if !a.running.is_empty() {
                "building"
            } else if connected.contains(&b.slave) {
                "idle"
            } else {
                "offline"
            };
            BuilderJson {
                category: factory.map(|f| f.category.clone()).unwrap_or_default(),
                factory: b.factory,
                slaves: vec![b.slave],
                state,
                last_build: a.last_build,
                running: a.running,
                pending: a.pending,
                steps,
                name: b.name,
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
    match ctx.db.builds(&name, limit, before).await {
        Ok(list) if list.is_empty() && !is_configured(&ctx, &name) => unknown_builder(&ctx, &name),
        Ok(list) => warp::reply::json(&list).into_response(),
        Err(e) => db_error("GET /api/v1/builders/NAME/builds", e),
    }
}

async fn get_build(name: String, number: i64, ctx: WebContext) -> Response {
    match ctx.db.build(&name, number).await {
        Ok(Some(b)) => warp::reply::json(&b).into_response(),
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
    // A growing log is sent up to its current end; a finished one whole.
    let (reader, len) = match crate::master::logs::log_reader(&file.path, file.complete).await {
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

fn engine_error(e: EngineError) -> Response {
    let status = match &e {
        EngineError::UnknownBuilder { .. }
        | EngineError::NoSuchBuild { .. }
        | EngineError::NoSuchRequest(_) => StatusCode::NOT_FOUND,
        EngineError::NotRunning { .. } => StatusCode::CONFLICT,
        EngineError::BadName { .. } => StatusCode::BAD_REQUEST,
        EngineError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        EngineError::Db(_) => return db_error("engine", &e),
    };
    json_error(status, &e.to_string())
}

fn force_refused() -> Response {
    json_error(
        StatusCode::FORBIDDEN,
        "forcing and stopping builds is off on this master (allowForce = false in [:master:])",
    )
}

async fn post_force(name: String, req: ForceRequest, ctx: WebContext) -> Response {
    if !ctx.config.borrow().allow_force {
        return force_refused();
    }
    match ctx.engine.force(&name, req).await {
        Ok(r) => {
            warp::reply::with_status(warp::reply::json(&r), StatusCode::ACCEPTED).into_response()
        }
        Err(e) => engine_error(e),
    }
}

async fn post_stop(name: String, number: i64, req: StopRequest, ctx: WebContext) -> Response {
    if !ctx.config.borrow().allow_force {
        return force_refused();
    }
    let who = req.who.unwrap_or_default();
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
    match ctx.db.changes(limit, before).await {
        Ok(list) => warp::reply::json(&list).into_response(),
        Err(e) => db_error("GET /api/v1/changes", e),
    }
}

async fn get_change(id: i64, ctx: WebContext) -> Response {
    match ctx.db.change(id).await {
        Ok(Some(c)) => warp::reply::json(&c).into_response(),
        Ok(None) => not_found(format!("no change {id}")),
        Err(e) => db_error("GET /api/v1/changes/ID", e),
    }
}
