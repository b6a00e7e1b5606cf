//! Running autobot as a daemon: pid files, log files, background start and signals.
//!
//! A master or slave directory holds `autobot.pid` (the running daemon) and
//! `autobot.log` (its log). `start` re-executes the binary as `autobot run DIR` in the
//! background and returns once the daemon said it is up; `stop` sends SIGTERM and
//! waits for a graceful exit; `reconfig` sends SIGHUP to a master.

use tokio::sync::{mpsc, oneshot, watch};

/// How a running master or slave is told to stop or re-read its configuration,
/// and how it tells its starter that it is up.
pub struct Control {
    /// Becomes `true` once: finish what must be finished, write state, return.
    pub shutdown: watch::Receiver<bool>,
    /// One message per SIGHUP: re-read the configuration (masters only).
    pub reconfig: mpsc::UnboundedReceiver<()>,
    /// Send once listening/connected-loop-started, with a line for the log; an
    /// `Err` means start-up failed (e.g. port in use) and carries the reason.
    pub ready: Option<oneshot::Sender<Result<String, String>>>,
}

/// The sending half of [`Control`], kept by whoever runs the daemon.
pub struct ControlHandle {
    pub shutdown: watch::Sender<bool>,
    pub reconfig: mpsc::UnboundedSender<()>,
    pub ready: oneshot::Receiver<Result<String, String>>,
}

/// A connected pair of [`Control`] and [`ControlHandle`].
pub fn control() -> (Control, ControlHandle) {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (reconfig_tx, reconfig_rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    (
        Control {
            shutdown: shutdown_rx,
            reconfig: reconfig_rx,
            ready: Some(ready_tx),
        },
        ControlHandle {
            shutdown: shutdown_tx,
            reconfig: reconfig_tx,
            ready: ready_rx,
        },
    )
}

impl Control {
    /// Report start-up success or failure (only the first call is delivered).
    pub fn ready(&mut self, result: Result<String, String>) {
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(result);
        }
    }
}
