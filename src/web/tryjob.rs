//! `POST /api/v1/try`: a try job over HTTP (what `autobot try` sends on the slave
//! port, for a developer who reaches only `htmlport`). The body is the JSON
//! [`TryJob`](crate::engine::tryjob::TryJob); HTTP Basic with a `users` pair of `[try]`. Answers 200 with the
//! BuildSet and its requests, 401 for wrong credentials, 400 (with why) for a
//! refused job, 413 past the body cap. Refusals are logged.

use std::net::SocketAddr;

use bytes::Bytes;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{api, json_error, with, WebContext};
use crate::config::trysection::MAX_MAX_PATCH_SIZE;
use crate::engine::tryjob::TryReply;
use crate::slavelink::auth::try_credentials;

/// The largest body taken: the largest `maxPatchSize`, base64, and room for
/// the other fields.
const MAX_TRY_BODY: u64 = MAX_MAX_PATCH_SIZE / 3 * 4 + (1 << 20);

/// The `POST /api/v1/try` route.
pub fn routes(ctx: WebContext) -> BoxedFilter<(Response,)> {
    api()
        .and(warp::path!("try"))
        .and(warp::post())
        .and(warp::addr::remote())
        .and(warp::header::headers_cloned())
        .and(warp::body::content_length_limit(MAX_TRY_BODY))
        .and(warp::body::bytes())
        .and(with(ctx))
        .then(post_try)
        .boxed()
}

async fn post_try(
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
    ctx: WebContext,
) -> Response {
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    let config = ctx.config.borrow().clone();
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let user = match try_credentials(&config, auth) {
        Ok(u) => u,
        Err(why) => {
            tracing::warn!("POST /api/v1/try from {peer} refused: {why}");
            let mut r = json_error(StatusCode::UNAUTHORIZED, &why);
            r.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Basic realm=\"autobot try\""),
            );
            return r;
        }
    };
    match ctx.engine.submit_try_json(&user, &peer, &body, None).await {
        reply @ TryReply::Accepted(_) => warp::reply::json(&reply).into_response(),
        TryReply::Error(e) => json_error(StatusCode::BAD_REQUEST, &e),
    }
}
