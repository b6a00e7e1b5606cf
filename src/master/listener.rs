//! The slave port: a WebSocket endpoint at `/` whose upgrade is allowed only for a
//! configured slave with the right password that is not already connected.
//!
//! Refusals happen before the upgrade with an HTTP status (401 for bad
//! credentials, 409 for a duplicate) and are logged with the reason; the
//! connection that holds the name is not touched.

use std::net::SocketAddr;
use std::sync::Arc;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::ws::Ws;
use warp::{Filter, Reply};

use super::auth::{constant_time_eq, parse_basic};
use super::connection;
use super::registry::Claim;
use super::Shared;

/// The warp filter of the slave port.
pub(crate) fn routes(
    shared: Arc<Shared>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path::end()
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::addr::remote())
        .and(warp::ws())
        .map(
            move |auth: Option<String>, addr: Option<SocketAddr>, ws: Ws| {
                let peer = addr
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "unknown peer".into());
                match authorize(&shared, auth.as_deref()) {
                    Ok(claim) => {
                        let shared = shared.clone();
                        ws.on_upgrade(move |socket| connection::serve(shared, socket, claim, peer))
                            .into_response()
                    }
                    Err(refusal) => {
                        tracing::warn!(
                            slaveport = shared.slaveport,
                            "refused slave {} from {peer}: {}",
                            refusal.name,
                            refusal.why
                        );
                        warp::reply::with_status(refusal.body, refusal.status).into_response()
                    }
                }
            },
        )
}

struct Refusal {
    name: String,
    status: StatusCode,
    why: String,
    body: &'static str,
}

fn authorize(shared: &Shared, header: Option<&str>) -> Result<Claim, Refusal> {
    let unauthorized = |name: &str, why: String| Refusal {
        name: name.to_string(),
        status: StatusCode::UNAUTHORIZED,
        why,
        body: "Unauthorized",
    };
    let Some(header) = header else {
        return Err(unauthorized("(none)", "no credentials".into()));
    };
    let Some((name, password)) = parse_basic(header) else {
        return Err(unauthorized(
            "(none)",
            "malformed Authorization header".into(),
        ));
    };
    let config = shared.config.borrow().clone();
    let Some(slave) = config.slave(&name) else {
        // Compare anyway so an unknown name costs the same time as a known one.
        let _ = constant_time_eq(password.as_bytes(), b"-");
        return Err(unauthorized(
            &name,
            format!("unknown slave (no [slave:{name}] in master.ini)"),
        ));
    };
    if !constant_time_eq(password.as_bytes(), slave.password.as_bytes()) {
        return Err(unauthorized(&name, "wrong password".into()));
    }
    shared.registry.claim(&name).ok_or_else(|| Refusal {
        name: name.clone(),
        status: StatusCode::CONFLICT,
        why: "already connected (a slave of that name holds a connection)".into(),
        body: "Conflict: this slave is already connected",
    })
}
