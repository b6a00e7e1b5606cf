//! The master's HTTP side on `htmlport`: the JSON API (and, later, the pages).
//!
//! [`routes`] combines one filter per resource; each handler reads the database
//! or the current configuration through [`WebContext`] and never drives a build
//! directly. New resources (builders, builds, changes, force) are added as more
//! filters `.or()`-ed into [`routes`], each returning a `warp::reply::Response`.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::config::MasterConfig;
use crate::db::Db;

/// What the web handlers may read.
#[derive(Clone)]
pub struct WebContext {
    pub db: Db,
    /// The configuration in force; replaced on every successful reconfig.
    pub config: watch::Receiver<Arc<MasterConfig>>,
}

/// One slave as `GET /api/v1/slaves` shows it (never its password or environment).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaveJson {
    pub name: String,
    pub connected: bool,
    pub admin: Option<String>,
    pub host: Option<String>,
    pub os: Option<String>,
    pub version: Option<String>,
    pub numcpus: Option<i64>,
    /// Unix seconds of the last message from the slave; `null` if never seen.
    pub last_seen: Option<i64>,
    /// Unix seconds when the current (or last) connection started.
    pub connected_at: Option<i64>,
}

/// Every route of the web server.
pub fn routes(ctx: WebContext) -> BoxedFilter<(Response,)> {
    let slaves = api()
        .and(warp::path("slaves"))
        .and(warp::path::end())
        .and(warp::get())
        .and(with(ctx))
        .then(api_slaves);
    slaves.boxed()
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

/// Every configured slave, in file order, with what the database knows of it.
pub async fn slaves_json(
    db: &Db,
    config: &MasterConfig,
) -> Result<Vec<SlaveJson>, crate::db::DbError> {
    let rows = db.slaves().await?;
    Ok(config
        .slaves
        .iter()
        .map(|s| {
            let row = rows.iter().find(|r| r.name == s.name);
            SlaveJson {
                name: s.name.clone(),
                connected: row.is_some_and(|r| r.connected),
                admin: row.and_then(|r| r.admin.clone()),
                host: row.and_then(|r| r.host.clone()),
                os: row.and_then(|r| r.os.clone()),
                version: row.and_then(|r| r.version.clone()),
                numcpus: row.and_then(|r| r.numcpus),
                last_seen: row.and_then(|r| r.last_seen),
                connected_at: row.and_then(|r| r.connected_at),
            }
        })
        .collect())
}

/// Serve [`routes`] on an already bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    ctx: WebContext,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(ctx))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}
