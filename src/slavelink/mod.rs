//! The master side of the worker protocol: the slave port's listener and its
//! authentication, one connection task per slave, the registry of connected
//! slaves, the remote commands a Build runs on them and file transfers.
//!
//! `serve` accepts slaves on `slaveport` until shutdown. A connected slave is
//! reached through the [`SlaveRegistry`]: a [`SlaveHandle`] starts commands
//! ([`RemoteCommand`]) and file transfers. The port also answers one non-slave
//! WebSocket path, Buildbot's `sendchange`; this module does not know what it
//! does: the daemon's wiring ([`crate::app`]) hands the listener a [`SideDoor`]
//! that authenticates and serves it (the Change intake of [`crate::changes`]),
//! so the slave links stay below everything that handles Changes.

pub mod auth;
pub mod command;
pub mod connection;
mod listener;
pub mod pb;
pub mod registry;
pub mod transfer;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;

use crate::config::MasterConfig;
use crate::db::Db;

pub use command::{CommandError, CommandEvent, CommandOutcome, Interrupter, RemoteCommand, Update};
pub use connection::SlaveInfo;
pub use registry::{SlaveEvent, SlaveHandle, SlaveRegistry};
pub use transfer::{DownloadSource, TransferResult};

/// What a [`SideDoor`] does with an accepted socket: it gets the user its
/// `authorize` named, the peer's address and the master's shutdown switch.
pub type SideDoorServe = Box<
    dyn Fn(
            WebSocketStream<TcpStream>,
            String,
            String,
            watch::Receiver<bool>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// How a [`SideDoor`] checks the `Authorization` header against the configuration
/// in force: the user name, or why not.
pub type SideDoorAuth =
    Box<dyn Fn(&MasterConfig, Option<&str>) -> Result<String, String> + Send + Sync>;

/// A WebSocket path of the slave port that is not a slave (Buildbot's
/// `sendchange`), handed in by whoever wires the master so that the slave links
/// need not know about Changes.
pub struct SideDoor {
    /// The request path it answers; every other path is a slave.
    pub path: &'static str,
    /// What the refusal is logged as (`refused NAME from PEER: why`).
    pub name: &'static str,
    /// How to get in, appended to a 401 (`Unauthorized: why; HINT`).
    pub hint: &'static str,
    /// Checks the `Authorization` header against the configuration in force:
    /// the user name, or why not.
    pub authorize: SideDoorAuth,
    /// Runs the accepted socket until it closes or the master shuts down.
    pub serve: SideDoorServe,
}

/// State shared by the listener and every slave connection of a master.
pub(crate) struct Shared {
    pub(crate) basedir: PathBuf,
    pub(crate) config: watch::Sender<Arc<MasterConfig>>,
    pub(crate) db: Db,
    pub(crate) registry: SlaveRegistry,
    pub(crate) keepalive: Duration,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) slaveport: u16,
    /// The non-slave paths of the port (`sendchange`, `try`).
    pub(crate) side_doors: Vec<SideDoor>,
}

/// Accept slaves (and the [`SideDoor`]'s clients) on `listener` until `shutdown`
/// turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    listener::serve(listener, shared, shutdown).await
}
