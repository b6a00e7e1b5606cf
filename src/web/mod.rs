//! The master's HTTP side on `htmlport`: the JSON API and the status pages
//! ([`pages`], read-only on `publichtmlport` through [`public_routes`]).
//!
//! [`routes`] combines one filter per resource; each handler reads the database
//! or the current configuration through [`WebContext`] and never drives a build
//! directly. New resources (builders, builds, changes, force) are added as more
//! filters `.or()`-ed into [`routes`], each returning a `warp::reply::Response`.
//! The engine's resources are in [`api`]; anything no route takes is answered by
//! [`rejections`] with a JSON error and the right status.

pub mod api;
pub mod change_hook;
pub mod html;
pub mod pages;
pub mod sse;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::changes::ChangeBus;
use crate::config::MasterConfig;
use crate::db::slaves::SlaveRow;
use crate::db::Db;
use crate::master::Engine;

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
    slaves
        .or(api::routes(ctx.clone()))
        .unify()
        .or(change_hook::routes(ctx.clone()))
        .unify()
        .or(pages::routes(ctx.clone(), stop))
        .unify()
        .recover(rejections)
        .unify()
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
        .and(slaves.or(api::routes(ctx.clone())).unify())
        .or(pages::public_routes(ctx, stop))
        .unify()
        .recover(rejections)
        .unify()
        .boxed()
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
    match slaves_json(&ctx.db, &config).await {
        Ok(list) => warp::reply::json(&list).into_response(),
        Err(e) => {
            tracing::error!("GET /api/v1/slaves: {e}");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "database error")
        }
    }
}

/// Every configured slave, in file order, with what the database knows of it
/// (a row holds no password and no environment: there is nothing to hide).
pub async fn slaves_json(
    db: &Db,
    config: &MasterConfig,
) -> Result<Vec<SlaveRow>, crate::db::DbError> {
    let mut rows = db.slaves().await?;
    Ok(config
        .slaves
        .iter()
        .map(|s| match rows.iter().position(|r| r.name == s.name) {
            Some(i) => rows.swap_remove(i),
            None => SlaveRow::never_seen(&s.name),
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
    warp::serve(make(rx))
        .incoming(listener)
        .graceful(async move {
            shutdown.await;
            let _ = tx.send(true);
        })
        .run()
        .await;
}
