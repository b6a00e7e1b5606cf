//! The slave daemon: connect to the master, run what it asks, reconnect when the
//! link drops.
//!
//! [`run`] reads `slave.ini`, then loops: connect to `ws://MASTER:PORT/` with HTTP
//! Basic credentials, serve the connection (Buildbot's `msgpack_experimental_v7`
//! worker protocol, see [`crate::protocol`]) until it ends, and try again after an
//! exponential backoff (1 s doubling, capped at the keepalive interval), logging every
//! attempt and why it failed. With several masters in `slave.ini` (masters sharing
//! one database) it tries them in order, the next one whenever the current one is
//! down or drops the link, wrapping around, the backoff applied per round of the
//! list, and a master that refuses the password skipped for a backoff of its own
//! (the `rotation` module); the log names the master it is connected to. Commands
//! run confined to the basedir (see [`paths`]
//! and [`tree`]), each in its own process group so that a kill reaches everything
//! it started, and those groups die with the slave (see [`watchdog`]). A
//! stop request interrupts running commands, lets them report, closes the socket
//! cleanly and returns.

mod args;
mod commands;
mod info;
mod link;
pub mod output;
pub mod paths;
mod rotation;
mod session;
pub mod tree;
mod updates;
pub mod watchdog;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header::AUTHORIZATION, HeaderValue};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::slave::{MasterAddr, SlaveIni, SlaveIniError};
use crate::daemon::Control;

pub use commands::COMMANDS;
pub use info::{os_name, worker_info};

/// Why the slave could not run at all (a master that is down is not one of these:
/// the slave waits for it).
#[derive(Debug, thiserror::Error)]
pub enum SlaveError {
    #[error(transparent)]
    Config(#[from] SlaveIniError),
    #[error("{path}: cannot use the slave's basedir: {source}")]
    Basedir {
        path: String,
        source: std::io::Error,
    },
    #[error("slave name {0:?} must not contain ':' (it is sent as HTTP Basic user name)")]
    BadName(String),
    #[error("{path}: cannot confine the slave to its basedir: {source}")]
    Jail {
        path: String,
        source: paths::JailError,
    },
    #[error(transparent)]
    Watchdog(#[from] watchdog::WatchdogError),
}

/// What every connection of this slave shares.
pub(crate) struct SlaveState {
    pub name: String,
    pub env: commands::SlaveEnv,
    /// Output settings from the master's last `set_worker_settings`.
    pub settings: Mutex<output::Settings>,
    /// Seconds between pings; also the backoff cap. 0 disables pings.
    pub keepalive: u64,
}

/// Run the slave in `basedir` until `control.shutdown` (or the master's `shutdown`).
///
/// `control.ready` is answered once the configuration is loaded and the connection
/// loop starts (`Err` for an unusable `slave.ini`); the master may still be down.
pub async fn run(basedir: &Path, mut control: Control) -> Result<(), SlaveError> {
    let ini = match load(basedir) {
        Ok(i) => i,
        Err(e) => {
            control.ready(Err(e.to_string()));
            return Err(e);
        }
    };
    let jail = match paths::Jail::new(&ini.basedir) {
        Ok(jail) => jail,
        Err(paths::JailError::Open(source)) => {
            let e = SlaveError::Basedir {
                path: ini.basedir.display().to_string(),
                source,
            };
            control.ready(Err(e.to_string()));
            return Err(e);
        }
        Err(source) => {
            let e = SlaveError::Jail {
                path: ini.basedir.display().to_string(),
                source,
            };
            control.ready(Err(e.to_string()));
            return Err(e);
        }
    };
    // Before any command runs: what a previous run left is killed, and from now on
    // running commands die with this slave.
    let groups = match watchdog::Watchdog::start(jail.root()) {
        Ok(g) => g,
        Err(e) => {
            let e = SlaveError::from(e);
            control.ready(Err(e.to_string()));
            return Err(e);
        }
    };
    let env = commands::SlaveEnv {
        jail,
        umask: ini.umask,
        usepty: ini.usepty,
        groups,
    };
    let state = Arc::new(SlaveState {
        name: ini.name.clone(),
        env,
        settings: Mutex::new(output::Settings::default()),
        keepalive: ini.keepalive,
    });
    let masters = ini.masters();
    let urls: Vec<String> = masters.iter().map(master_url).collect();
    let n = urls.len();
    let then = if n > 1 {
        format!(" (then {})", urls[1..].join(", "))
    } else {
        String::new()
    };
    control.ready(Ok(format!(
        "slave {} in {} connecting to {}{then}",
        ini.name,
        ini.basedir.display(),
        urls[0]
    )));
    let mut shutdown = control.shutdown.clone();
    let cap = Duration::from_secs(ini.keepalive.max(1));
    let mut rotation = rotation::Rotation::new(n, cap);
    let mut attempt: u64 = 0;
    // "master 2 of 3" when there are several.
    let which = |i: usize| {
        if n > 1 {
            format!(" (master {} of {n})", i + 1)
        } else {
            String::new()
        }
    };
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let i = match rotation.next(std::time::Instant::now()) {
            rotation::Next::Try(i) => i,
            rotation::Next::Wait(delay) => {
                if n > 1 {
                    tracing::info!(
                        "slave {}: none of the {n} masters accepted the slave; next round in {} s",
                        ini.name,
                        delay.as_secs_f64()
                    );
                } else {
                    tracing::info!(
                        "slave {}: next attempt in {} s",
                        ini.name,
                        delay.as_secs_f64()
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                continue;
            }
        };
        let url = &urls[i];
        attempt += 1;
        tracing::info!(
            "slave {}: connecting to {url}{} (attempt {attempt})",
            ini.name,
            which(i)
        );
        let connected = tokio::select! {
            r = connect(&ini, url) => r,
            _ = shutdown.changed() => return Ok(()),
        };
        match connected {
            Ok(ws) => {
                tracing::info!("slave {}: connected to {url}{}", ini.name, which(i));
                attempt = 0;
                rotation.connected(i);
                match session::serve(ws, &state, &mut shutdown).await {
                    session::End::Shutdown => {
                        tracing::info!("slave {}: stopped", ini.name);
                        return Ok(());
                    }
                    session::End::MasterShutdown => {
                        tracing::info!("slave {}: stopped by the master", ini.name);
                        return Ok(());
                    }
                    session::End::Lost(why) => {
                        tracing::warn!(
                            "slave {}: connection to {url} lost: {why}{}",
                            ini.name,
                            if n > 1 {
                                "; trying the next master"
                            } else {
                                ""
                            }
                        );
                        rotation.lost(i);
                    }
                }
            }
            Err(why) => {
                if why.refused_login {
                    rotation.refused(i, std::time::Instant::now());
                }
                tracing::warn!(
                    "slave {}: cannot connect to {url}: {}",
                    ini.name,
                    why.message
                );
            }
        }
    }
}

fn load(basedir: &Path) -> Result<SlaveIni, SlaveError> {
    let ini = SlaveIni::load(basedir)?;
    if ini.name.contains(':') {
        return Err(SlaveError::BadName(ini.name));
    }
    Ok(ini)
}

fn master_url(master: &MasterAddr) -> String {
    let host = if master.host.contains(':') && !master.host.starts_with('[') {
        format!("[{}]", master.host)
    } else {
        master.host.clone()
    };
    format!("ws://{host}:{}/", master.port)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection attempt failed.
struct ConnectError {
    /// In words, for the log.
    message: String,
    /// The master refused our name and password (HTTP 401).
    refused_login: bool,
}

impl From<String> for ConnectError {
    fn from(message: String) -> ConnectError {
        ConnectError {
            message,
            refused_login: false,
        }
    }
}

/// Open the WebSocket with our credentials; the error says why in words.
async fn connect(ini: &SlaveIni, url: &str) -> Result<Ws, ConnectError> {
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("bad master address: {e}"))?;
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ini.name, ini.password));
    let value = HeaderValue::from_str(&format!("Basic {token}"))
        .map_err(|_| "the name or password cannot be sent in an HTTP header".to_string())?;
    req.headers_mut().insert(AUTHORIZATION, value);
    let limit = Duration::from_secs(ini.keepalive.clamp(5, 30));
    match tokio::time::timeout(
        limit,
        tokio_tungstenite::connect_async_with_config(
            req,
            Some(crate::protocol::websocket_config()),
            true,
        ),
    )
    .await
    {
        Err(_) => Err(format!("no answer within {} s", limit.as_secs()).into()),
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(ConnectError {
            refused_login: matches!(&e, WsError::Http(r) if r.status().as_u16() == 401),
            message: describe(e, ini),
        }),
    }
}

fn describe(e: WsError, ini: &SlaveIni) -> String {
    match e {
        WsError::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused (is the master running, and is its slaveport right?)".into()
            }
            _ => io.to_string(),
        },
        WsError::Http(resp) => match resp.status().as_u16() {
            401 => format!(
                "authentication failed (HTTP 401): the master does not accept slave {:?} \
                 with this password; check [slave:{}] in master.ini and slave.ini",
                ini.name, ini.name
            ),
            409 => format!(
                "already connected (HTTP 409): another slave named {:?} is connected to this master",
                ini.name
            ),
            s => format!("the master refused the connection (HTTP {s})"),
        },
        other => other.to_string(),
    }
}
