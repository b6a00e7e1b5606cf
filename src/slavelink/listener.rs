//! The slave port: a WebSocket endpoint whose upgrade is allowed only for a
//! configured slave with the right password that is not already connected.
//!
//! Refusals happen before the upgrade with an HTTP status (401 for bad
//! credentials, 409 for a duplicate) and are logged with the reason; the
//! connection that holds the name is not touched. The port is served by
//! tokio-tungstenite directly (not warp) so that each connection's buffers can be
//! sized: a master holds one connection per slave, and tungstenite's default
//! 128 KiB read buffer, zero-filled on first use, would cost 128 MiB per thousand
//! slaves.
//!
//! The same port takes `autobot sendchange`, as in Buildbot: an upgrade on the
//! path of the master's [`SideDoor`] (authenticated by it: `changeuser`/
//! `changepassword` of `[:master:]`) carries Changes instead of a slave; the
//! side door is wired in by [`crate::app`], so this file knows nothing of Changes.
//!
//! A client that says nothing at first is probed for Buildbot's PB protocol
//! ([`super::pb`]): a stock buildbot-worker made with `create-worker`'s default
//! protocol is told, in the log once per address and on its slave's entry, how to
//! switch it to `msgpack_experimental_v7`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use super::auth::{constant_time_eq, parse_basic};
use super::connection;
use super::pb::{self, Probe};
use super::registry::Claim;
use super::{Shared, SideDoor};
use crate::protocol::websocket_config;

/// How long a client may take to complete the WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept slave connections until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(handshake(shared.clone(), stream, addr.to_string()));
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!("slaveport: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Authenticate one upgrade and, if allowed, run the connection: a slave's on any
/// path but the [`SideDoor`]'s, where `sendchange` submits Changes instead.
async fn handshake(shared: Arc<Shared>, mut stream: TcpStream, peer: String) {
    let started = Instant::now();
    match pb::probe(&mut stream).await {
        Probe::Talks | Probe::Unknown => {}
        Probe::Pb(name) => return pb_refused(&shared, &peer, name),
    }
    let left = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
    let mut claim: Option<Claim> = None;
    let mut change_user: Option<(String, usize)> = None;
    // The callback's signature is tungstenite's; its error type is not ours to box.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let header = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if let Some((i, door)) = shared
            .side_doors
            .iter()
            .enumerate()
            .find(|(_, d)| req.uri().path() == d.path)
        {
            return match authorize_side(&shared, door, header) {
                Ok(user) => {
                    change_user = Some((user, i));
                    Ok(resp)
                }
                Err(why) => {
                    tracing::warn!(
                        slaveport = shared.slaveport,
                        "refused {} from {peer}: {why}",
                        door.name
                    );
                    let mut resp =
                        ErrorResponse::new(Some(format!("Unauthorized: {why}; {}", door.hint)));
                    *resp.status_mut() = StatusCode::UNAUTHORIZED;
                    Err(resp)
                }
            };
        }
        match authorize(&shared, header) {
            Ok(c) => {
                claim = Some(c);
                Ok(resp)
            }
            Err(refusal) => {
                tracing::warn!(
                    slaveport = shared.slaveport,
                    "refused slave {} from {peer}: {}",
                    refusal.name,
                    refusal.why
                );
                let mut resp = ErrorResponse::new(Some(refusal.body.to_string()));
                *resp.status_mut() = refusal.status;
                Err(resp)
            }
        }
    };
    let accept =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(websocket_config()));
    match tokio::time::timeout(left, accept).await {
        Ok(Ok(socket)) => {
            let door = change_user
                .as_ref()
                .and_then(|(_, i)| shared.side_doors.get(*i));
            if let (Some((user, _)), Some(door)) = (change_user.clone(), door) {
                let shutdown = shared.shutdown.clone();
                (door.serve)(socket, user, peer, shutdown).await;
            } else if let Some(claim) = claim {
                connection::serve(shared, socket, claim, peer).await;
            }
        }
        Ok(Err(e)) => {
            if claim.is_some() || change_user.is_some() {
                tracing::warn!("slaveport: handshake with {peer} failed: {e}");
            } else {
                tracing::debug!("slaveport: {peer}: {e}");
            }
        }
        Err(_) => tracing::warn!("slaveport: {peer} did not finish the handshake in time"),
    }
}

/// A PB client (a stock buildbot-worker with its default protocol) connected:
/// warn once per address and name, and note the problem on a configured slave.
fn pb_refused(shared: &Shared, peer: &str, name: Option<String>) {
    let host = peer.rsplit_once(':').map_or(peer, |(h, _)| h);
    let configured = name
        .as_deref()
        .is_some_and(|n| shared.config.borrow().slave(n).is_some());
    let text = format!(
        "connects with Buildbot's PB protocol (buildbot-worker's default); {}",
        pb::FIX
    );
    let who = match name.as_deref() {
        Some(n) if configured => format!("slave {n}"),
        Some(n) => format!("worker {n:?} (no [slave:{n}] in master.ini)"),
        None => "a worker".to_string(),
    };
    if let (Some(n), true) = (name.as_deref(), configured) {
        shared.registry.set_problem(n, text.clone());
    }
    let key = format!("{host} {}", name.as_deref().unwrap_or(""));
    if shared.registry.first_warning(&key) {
        tracing::warn!(
            slaveport = shared.slaveport,
            "slaveport: {who} from {peer} {text} (said once per address; it will keep retrying)"
        );
    } else {
        tracing::debug!("slaveport: {who} from {peer} retried with PB");
    }
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

/// Check a side door's credentials (`sendchange`'s); the user name, or why not.
fn authorize_side(
    shared: &Shared,
    door: &SideDoor,
    header: Option<&str>,
) -> Result<String, String> {
    (door.authorize)(&shared.config.borrow().clone(), header)
}
