//! The registry of connected slaves: who is connected right now, and the
//! [`SlaveHandle`] through which the build engine runs commands on each.
//!
//! A slave appears here only once its connection is set up (worker info read,
//! settings sent, builder directories made) and disappears as soon as the link is
//! gone. Names are also *claimed* from authentication on, so a second connection
//! for the same slave is refused even while the first one is still setting up.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmpv::Value;
use tokio::sync::{broadcast, watch};

use super::command::{CommandError, CommandOutcome, RemoteCommand};
use super::connection::{lock, Conn, SlaveInfo};

/// A change in who is connected (relayed between masters sharing a database
/// as JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SlaveEvent {
    Connected(String),
    Disconnected { name: String, reason: String },
}

/// Connected slaves; cheap to clone.
#[derive(Clone)]
pub struct SlaveRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    claimed: Mutex<HashSet<String>>,
    live: Mutex<HashMap<String, SlaveHandle>>,
    /// Why a configured slave cannot connect (it speaks Buildbot's PB), by name;
    /// cleared when it connects.
    problems: Mutex<HashMap<String, String>>,
    /// Addresses (and names) already warned about, so a worker that retries
    /// forever is logged once.
    warned: Mutex<HashSet<String>>,
    /// Bumped on every change so waiters can re-check.
    generation: watch::Sender<u64>,
    events: broadcast::Sender<SlaveEvent>,
}

impl Default for SlaveRegistry {
    fn default() -> Self {
        SlaveRegistry::new()
    }
}

impl SlaveRegistry {
    pub fn new() -> SlaveRegistry {
        SlaveRegistry {
            inner: Arc::new(Inner {
                claimed: Mutex::new(HashSet::new()),
                live: Mutex::new(HashMap::new()),
                problems: Mutex::new(HashMap::new()),
                warned: Mutex::new(HashSet::new()),
                generation: watch::channel(0).0,
                events: broadcast::channel(256).0,
            }),
        }
    }

    /// The handle of a connected slave. A link being torn down is not one: it
    /// stays listed until its disconnect is recorded, but a Build started on it
    /// in that moment would be lost at once (the engine re-queues a lost Build's
    /// requests before the tear-down ends).
    pub fn get(&self, name: &str) -> Option<SlaveHandle> {
        lock(&self.inner.live)
            .get(name)
            .filter(|h| h.is_connected())
            .cloned()
    }

    /// Names of the connected slaves, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.inner.live).keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether a connection (set up or still setting up) holds this name.
    pub fn is_claimed(&self, name: &str) -> bool {
        lock(&self.inner.claimed).contains(name)
    }

    /// How many connections exist, including those still setting up.
    pub fn connection_count(&self) -> usize {
        lock(&self.inner.claimed).len()
    }

    /// Connection and disconnection events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SlaveEvent> {
        self.inner.events.subscribe()
    }

    /// Wait until `name` is connected and set up, at most `timeout`.
    pub async fn wait_connected(&self, name: &str, timeout: Duration) -> Option<SlaveHandle> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.inner.generation.subscribe();
        loop {
            if let Some(h) = self.get(name) {
                return Some(h);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if tokio::time::timeout(left, rx.changed()).await.is_err() {
                return self.get(name);
            }
        }
    }

    /// Wait until no connection holds `name` any more, at most `timeout`.
    pub async fn wait_gone(&self, name: &str, timeout: Duration) -> bool {
        self.wait_until(timeout, |r| !r.is_claimed(name)).await
    }

    /// Wait until `cond` holds for the registry, at most `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        cond: impl Fn(&SlaveRegistry) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut rx = self.inner.generation.subscribe();
        loop {
            if cond(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if tokio::time::timeout(left, rx.changed()).await.is_err() {
                return cond(self);
            }
        }
    }

    /// Disconnect a slave (reconfig removed it, or an operator asked).
    pub fn disconnect(&self, name: &str, reason: &str) {
        if let Some(h) = self.get(name) {
            h.disconnect(reason);
        }
    }

    /// Every connected slave's handle.
    pub fn handles(&self) -> Vec<SlaveHandle> {
        lock(&self.inner.live).values().cloned().collect()
    }

    /// Why slave `name` cannot connect, if the slave port knows (a stock
    /// buildbot-worker speaking PB): shown with the slave and its builders'
    /// waiting requests.
    pub fn problem(&self, name: &str) -> Option<String> {
        lock(&self.inner.problems).get(name).cloned()
    }

    /// Every slave's [`problem`](Self::problem), sorted by name.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = lock(&self.inner.problems)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort();
        v
    }

    pub(crate) fn set_problem(&self, name: &str, text: String) {
        lock(&self.inner.problems).insert(name.to_string(), text);
        self.bump();
    }

    /// Whether `key` (an address and name) is warned about for the first time.
    pub(crate) fn first_warning(&self, key: &str) -> bool {
        let mut w = lock(&self.inner.warned);
        // Bounded: past this many, every key is new again (logged once more).
        if w.len() >= 10_000 {
            w.clear();
        }
        w.insert(key.to_string())
    }

    /// Reserve a name for a new connection; `None` if a connection already has it.
    pub(crate) fn claim(&self, name: &str) -> Option<Claim> {
        let mut c = lock(&self.inner.claimed);
        if !c.insert(name.to_string()) {
            return None;
        }
        drop(c);
        self.bump();
        Some(Claim {
            registry: self.clone(),
            name: name.to_string(),
        })
    }

    pub(crate) fn register(&self, handle: SlaveHandle) {
        let name = handle.name().to_string();
        lock(&self.inner.problems).remove(&name);
        lock(&self.inner.live).insert(name.clone(), handle);
        let _ = self.inner.events.send(SlaveEvent::Connected(name));
        self.bump();
    }

    /// Remove `name` if it is still this connection's handle.
    pub(crate) fn unregister(&self, name: &str, conn: &Arc<Conn>) {
        let removed = {
            let mut live = lock(&self.inner.live);
            match live.get(name) {
                Some(h) if Arc::ptr_eq(&h.conn, conn) => live.remove(name).is_some(),
                _ => false,
            }
        };
        if removed {
            let reason = conn.closed_reason().unwrap_or_default();
            let _ = self.inner.events.send(SlaveEvent::Disconnected {
                name: name.to_string(),
                reason,
            });
        }
        self.bump();
    }

    fn bump(&self) {
        self.inner.generation.send_modify(|g| *g += 1);
    }
}

/// A name reserved by one connection; released when the connection ends.
pub(crate) struct Claim {
    registry: SlaveRegistry,
    name: String,
}

impl Claim {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.registry.inner.claimed).remove(&self.name);
        self.registry.bump();
    }
}

/// A connected slave: what it is and how to run commands on it. Cheap to clone;
/// stays valid after a disconnect (calls then fail with
/// [`CommandError::Lost`]).
#[derive(Clone)]
pub struct SlaveHandle {
    pub(crate) conn: Arc<Conn>,
}

impl SlaveHandle {
    pub(crate) fn new(conn: Arc<Conn>) -> SlaveHandle {
        SlaveHandle { conn }
    }

    pub fn name(&self) -> &str {
        &self.conn.name
    }

    /// The peer address the slave connected from.
    pub fn peer(&self) -> &str {
        &self.conn.peer
    }

    /// What the slave reported in `get_worker_info`.
    pub fn info(&self) -> SlaveInfo {
        self.conn.info.get().cloned().unwrap_or_default()
    }

    /// Whether the slave advertises a command (e.g. autobot's native git).
    pub fn has_command(&self, command: &str) -> bool {
        self.conn
            .info
            .get()
            .is_some_and(|i| i.commands.contains_key(command))
    }

    /// The slave-side path of a builder's directory (`BASEDIR/FACTORY-SLAVE`).
    pub fn builder_dir(&self, builder: &str) -> String {
        self.info().builder_dir(builder)
    }

    /// A slave-side path under its basedir.
    pub fn path(&self, rel: &str) -> String {
        self.info().path_join(rel)
    }

    /// Whether the connection is still up.
    pub fn is_connected(&self) -> bool {
        !self.conn.is_closed()
    }

    /// Wait for the connection to end; returns why.
    pub async fn closed(&self) -> String {
        self.conn.closed().await
    }

    /// Start a protocol command (`shell`, `mkdir`, `rmdir`, `cpdir`, `stat`, `glob`,
    /// `listdir`, `rmfile`, …) with the protocol's `args` map. For `shell`, `rmdir`
    /// and `cpdir`, `logEnviron` defaults to false so the slave's environment never
    /// reaches a log. File transfers: use [`upload_file`](Self::upload_file) and
    /// friends.
    pub async fn start_command(
        &self,
        name: &str,
        args: Value,
    ) -> Result<RemoteCommand, CommandError> {
        Ok(self.conn.start_command(name, args, None).await?.0)
    }

    /// Start a command and collect its outcome.
    pub async fn run(&self, name: &str, args: Value) -> Result<CommandOutcome, CommandError> {
        self.start_command(name, args).await?.wait().await
    }

    /// Ask the slave to shut itself down.
    pub async fn shutdown(&self) -> Result<(), CommandError> {
        self.conn.request("shutdown", vec![]).await.map(|_| ())
    }

    /// Have the slave print a message in its log.
    pub async fn print(&self, message: &str) -> Result<(), CommandError> {
        self.conn
            .request("print", vec![("message", Value::from(message))])
            .await
            .map(|_| ())
    }

    /// Close the connection from the master's side, interrupting running commands.
    pub fn disconnect(&self, reason: &str) {
        self.conn.close(reason);
    }
}
