//! One slave's WebSocket connection on the master: request/response matching,
//! dispatch of the slave's `update`/`complete`/file-transfer messages, keepalive,
//! set-up (`get_worker_info`, `set_worker_settings`, builder directories) and
//! tear-down (registry, database, running commands told the link is gone).
//!
//! A connection runs as one task (`serve`) that reads frames and a writer task
//! that owns the socket's sending half; every other task talks to it through the
//! shared [`Conn`].
//!
//! Both directions are bounded. Each running command's updates wait in a queue
//! of at most [`EVENT_BYTES`] for the Build that stores them; when it is full (the
//! Build waits for a slow log disk), the reader waits too and stops reading the
//! slave's socket, so TCP pushes back on the slave and its command, instead of
//! the master's memory growing with whatever the slave sends. Meanwhile the link
//! counts as alive (the slave is plainly sending) and the master keeps pinging
//! it, so neither side mistakes the wait for a dead link. Frames to the slave
//! wait in a queue of [`OUT_QUEUE`]: a slave that does not read its answers
//! stops being read in turn.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::command::{str_field, CommandError, CommandEvent, RemoteCommand, Update};
use super::registry::{Claim, SlaveHandle};
use super::Shared;
use crate::db::slaves::SlaveInfoRow;
use crate::protocol::{map, map_get, value_str, Message};

/// The regex the slave applies to output to find line ends, as Buildbot sends it.
pub const NEWLINE_RE: &str = r"(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)";

/// The `buffer_size` for slaves that send output as plain text.
const TEXT_BUFFER_SIZE: u64 = 256 * 1024;

/// Bytes of one command's output that may wait for the Build that reads them (a
/// single bigger update passes alone).
pub const EVENT_BYTES: usize = 4 << 20;

/// Frames that may wait for the writer to send them to the slave.
pub const OUT_QUEUE: usize = 1024;

/// What a slave told about itself in `get_worker_info` (never its environment).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlaveInfo {
    /// Contents of the slave's `info/admin`.
    pub admin: Option<String>,
    /// Contents of the slave's `info/host`.
    pub host: Option<String>,
    /// The operating system: the slave's `os` key, else its os-release name, else
    /// Python's `os.name` (`posix`, `nt`).
    pub os: Option<String>,
    /// Python's `os.name` for buildbot-worker (`posix`/`nt`); path style.
    pub system: Option<String>,
    /// The slave's base directory; builder directories live under it.
    pub basedir: Option<String>,
    pub version: Option<String>,
    pub numcpus: Option<i64>,
    /// Commands the slave runs, with their versions.
    pub commands: BTreeMap<String, String>,
    /// An autobot slave that can send output as plain text (`autobot_text_output`).
    pub text_output: bool,
}

impl SlaveInfo {
    /// Read the worker-info map, skipping `environ` and anything unknown.
    pub fn from_value(v: &Value) -> SlaveInfo {
        let text = |k: &str| str_field(v, k).map(|s| s.trim().to_string());
        let commands = match map_get(v, "worker_commands") {
            Some(Value::Map(entries)) => entries
                .iter()
                .filter_map(|(k, ver)| {
                    let ver = match ver {
                        Value::Nil => String::new(),
                        other => value_str(other)
                            .map(str::to_string)
                            .unwrap_or_else(|| other.to_string()),
                    };
                    value_str(k).map(|k| (k.to_string(), ver))
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        let system = text("system");
        SlaveInfo {
            admin: text("admin"),
            host: text("host"),
            os: text("os")
                .or_else(|| text("os_pretty_name"))
                .or_else(|| text("os_id"))
                .or_else(|| system.clone()),
            system,
            basedir: text("basedir"),
            version: text("version"),
            numcpus: map_get(v, "numcpus").and_then(Value::as_i64),
            commands,
            text_output: map_get(v, "autobot_text_output").and_then(Value::as_bool) == Some(true),
        }
    }

    /// The row stored in the database.
    pub fn to_row(&self) -> SlaveInfoRow {
        SlaveInfoRow {
            admin: self.admin.clone(),
            host: self.host.clone(),
            os: self.os.clone(),
            version: self.version.clone(),
            numcpus: self.numcpus,
            commands: serde_json::to_string(&self.commands).ok(),
        }
    }

    /// The slave-side path of a builder's directory.
    pub fn builder_dir(&self, builder: &str) -> String {
        self.path_join(builder)
    }

    /// A path under the slave's basedir (relative when it sent none).
    pub fn path_join(&self, rel: &str) -> String {
        match self.basedir.as_deref() {
            Some(base) if !base.is_empty() => {
                let sep = if self.system.as_deref() == Some("nt") {
                    '\\'
                } else {
                    '/'
                };
                format!("{}{sep}{rel}", base.trim_end_matches(['/', '\\']))
            }
            _ => rel.to_string(),
        }
    }
}

/// Where the bytes of an upload go, or the bytes of a download come from.
pub(crate) enum Transfer {
    /// `upload_file`: written to `part`; the caller renames it once the command
    /// succeeded.
    ToFile {
        file: Option<tokio::fs::File>,
        part: PathBuf,
        written: u64,
        /// Refuse a write that would take the file past this many bytes.
        limit: Option<u64>,
        /// A write was refused for `limit`.
        over_limit: bool,
        /// The SHA-256 of what was written, kept as it arrives (artifacts).
        hash: Option<Box<ring::digest::Context>>,
    },
    /// `upload_directory`: the tarball is written to `part`, unpacked into `dest`.
    ToDir {
        file: Option<tokio::fs::File>,
        part: PathBuf,
        dest: PathBuf,
        written: u64,
        /// Refuse a write that would take the tarball past this many bytes.
        limit: Option<u64>,
        /// A write was refused for `limit`.
        over_limit: bool,
    },
    /// `download_file` from memory.
    FromBytes { data: Vec<u8>, pos: usize },
    /// `download_file` from a local file.
    FromFile { file: tokio::fs::File, read: u64 },
}

impl Transfer {
    /// Bytes moved so far.
    pub(crate) fn bytes(&self) -> u64 {
        match self {
            Transfer::ToFile { written, .. } | Transfer::ToDir { written, .. } => *written,
            Transfer::FromBytes { pos, .. } => *pos as u64,
            Transfer::FromFile { read, .. } => *read,
        }
    }
}

/// A command's events on their way to its [`RemoteCommand`], each with its
/// share of the command's [`EVENT_BYTES`], given back when the Build takes it.
pub(crate) type EventTx = mpsc::UnboundedSender<(CommandEvent, Option<OwnedSemaphorePermit>)>;
pub(crate) type EventRx = mpsc::UnboundedReceiver<(CommandEvent, Option<OwnedSemaphorePermit>)>;

struct Slot {
    events: EventTx,
    /// What of [`EVENT_BYTES`] the queued events leave.
    room: Arc<Semaphore>,
    transfer: Option<Arc<tokio::sync::Mutex<Transfer>>>,
}

enum Outgoing {
    /// A request: written out at once.
    Frame(Vec<u8>),
    /// A response to the slave, which waits for nothing: it may wait for
    /// what the master sends next.
    Response(Vec<u8>),
    Ping,
    Close(String),
}

/// The shared state of one slave connection.
pub struct Conn {
    pub(crate) name: String,
    pub(crate) peer: String,
    out: mpsc::Sender<Outgoing>,
    next_seq: AtomicI64,
    next_cmd: AtomicU64,
    pending: Mutex<HashMap<i64, oneshot::Sender<Result<Value, String>>>>,
    slots: Mutex<HashMap<String, Slot>>,
    /// `Some(reason)` once the connection is over.
    closed: watch::Sender<Option<String>>,
    /// A request to end the connection (reconfig removed the slave, shutdown, …).
    close_request: watch::Sender<Option<String>>,
    pub(crate) info: OnceLock<SlaveInfo>,
    last_heard: Mutex<Instant>,
    /// The reader waits for a command's queue to have room: the slave is being
    /// pushed back on, not silent.
    pushing_back: AtomicBool,
    /// The `slave_connections` row of this connection, once set up.
    db_id: Mutex<Option<i64>>,
}

impl Conn {
    pub(crate) fn closed_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    fn lost(&self) -> CommandError {
        CommandError::Lost {
            slave: self.name.clone(),
            reason: self
                .closed_reason()
                .unwrap_or_else(|| "connection closed".into()),
        }
    }

    /// Send a request and wait for its response.
    pub(crate) async fn request(
        &self,
        op: &str,
        fields: Vec<(&str, Value)>,
    ) -> Result<Value, CommandError> {
        if self.closed_reason().is_some() {
            return Err(self.lost());
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(seq, tx);
        // Tear-down sets `closed` before draining `pending`: re-check so a request
        // racing with it cannot wait forever.
        if self.closed_reason().is_some() {
            lock(&self.pending).remove(&seq);
            return Err(self.lost());
        }
        let frame = Message::request(seq, op, fields).encode();
        if self.out.send(Outgoing::Frame(frame)).await.is_err() {
            lock(&self.pending).remove(&seq);
            return Err(self.lost());
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(message)) => Err(CommandError::Refused {
                slave: self.name.clone(),
                op: op.to_string(),
                message,
            }),
            Err(_) => Err(self.lost()),
        }
    }

    /// Start a protocol command; `transfer` is the local end of a file transfer.
    pub(crate) async fn start_command(
        self: &Arc<Self>,
        name: &str,
        mut args: Value,
        transfer: Option<Transfer>,
    ) -> Result<(RemoteCommand, Option<Arc<tokio::sync::Mutex<Transfer>>>), CommandError> {
        if matches!(name, "shell" | "rmdir" | "cpdir") {
            // The slave's environment is a secret: never have it echoed into logs.
            if let Value::Map(entries) = &mut args {
                if !entries
                    .iter()
                    .any(|(k, _)| value_str(k) == Some("logEnviron"))
                {
                    entries.push((Value::from("logEnviron"), Value::from(false)));
                }
            }
        }
        let id = self.next_cmd.fetch_add(1, Ordering::Relaxed).to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let transfer = transfer.map(|t| Arc::new(tokio::sync::Mutex::new(t)));
        lock(&self.slots).insert(
            id.clone(),
            Slot {
                events: tx,
                room: Arc::new(Semaphore::new(EVENT_BYTES)),
                transfer: transfer.clone(),
            },
        );
        let res = self
            .request(
                "start_command",
                vec![
                    ("command_id", Value::from(id.as_str())),
                    ("command_name", Value::from(name)),
                    ("args", args),
                ],
            )
            .await;
        if let Err(e) = res {
            lock(&self.slots).remove(&id);
            return Err(e);
        }
        tracing::debug!(slave = %self.name, command = name, id = %id, "command started");
        Ok((
            RemoteCommand {
                id,
                name: name.to_string(),
                slave: self.name.clone(),
                events: rx,
                conn: Arc::downgrade(self),
                done: false,
            },
            transfer,
        ))
    }

    /// Ask the connection task to end the connection with `reason`.
    pub(crate) fn close(&self, reason: &str) {
        self.close_request.send_replace(Some(reason.to_string()));
    }

    /// Wait until the connection is over; returns why.
    pub(crate) async fn closed(&self) -> String {
        let mut rx = self.closed.subscribe();
        let reason = rx.wait_for(|r| r.is_some()).await.map(|r| r.clone());
        match reason {
            Ok(r) => r.unwrap_or_default(),
            Err(_) => "connection closed".into(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed_reason().is_some()
    }

    /// Ids of commands that have not completed.
    fn running(&self) -> Vec<String> {
        lock(&self.slots).keys().cloned().collect()
    }

    fn heard(&self) {
        *lock(&self.last_heard) = Instant::now();
    }

    /// Queue an answer to the slave; waits while [`OUT_QUEUE`] frames wait (the
    /// slave does not read), which stops this connection's reading meanwhile.
    async fn respond(&self, msg: Message) {
        let _ = self.out.send(Outgoing::Response(msg.encode())).await;
    }

    /// Hand a command's event to the Build reading it. When its queue is full the
    /// reader waits here, the slave's socket unread: back-pressure.
    async fn deliver(&self, events: &EventTx, room: &Arc<Semaphore>, ev: CommandEvent) {
        if events.is_closed() {
            // Nobody reads it any more (the command was abandoned): dropped.
            return;
        }
        let weight = ev.weight().clamp(1, EVENT_BYTES) as u32;
        let permit = match room.clone().try_acquire_many_owned(weight) {
            Ok(p) => p,
            Err(_) => {
                self.pushing_back.store(true, Ordering::SeqCst);
                // Permits come back as the Build takes events, or all at once
                // when it drops the command (its queue is emptied).
                let p = tokio::select! {
                    p = room.clone().acquire_many_owned(weight) => p.ok(),
                    _ = events.closed() => None,
                };
                self.pushing_back.store(false, Ordering::SeqCst);
                self.heard();
                match p {
                    Some(p) => p,
                    None => return,
                }
            }
        };
        let _ = events.send((ev, Some(permit)));
    }
}

/// Lock a std mutex, surviving a panicked holder (the data is still consistent:
/// every critical section is a single map operation).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run one authenticated slave connection until it ends.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    socket: WebSocketStream<TcpStream>,
    claim: Claim,
    peer: String,
) {
    let name = claim.name().to_string();
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(OUT_QUEUE);
    let conn = Arc::new(Conn {
        name: name.clone(),
        peer: peer.clone(),
        out: out_tx,
        next_seq: AtomicI64::new(1),
        next_cmd: AtomicU64::new(1),
        pending: Mutex::new(HashMap::new()),
        slots: Mutex::new(HashMap::new()),
        closed: watch::channel(None).0,
        close_request: watch::channel(None).0,
        info: OnceLock::new(),
        last_heard: Mutex::new(Instant::now()),
        pushing_back: AtomicBool::new(false),
        db_id: Mutex::new(None),
    });
    tracing::info!("slave {name} connected from {peer}; setting it up");

    // Each frame is written as soon as it is fed (`protocol::websocket_config`).
    // After a response, the writer lets the tasks woken with it run once (the
    // Build whose Step just ended starts the next command), then writes whatever
    // is queued by then, and flushes before it waits again.
    let writer = tokio::spawn(async move {
        while let Some(o) = out_rx.recv().await {
            let response = matches!(o, Outgoing::Response(_));
            if !feed_frame(&mut sink, o).await {
                return;
            }
            if response {
                tokio::task::yield_now().await;
            }
            while let Ok(o) = out_rx.try_recv() {
                if !feed_frame(&mut sink, o).await {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    let reader = {
        let conn = conn.clone();
        async move {
            loop {
                match stream.next().await {
                    None => return "the slave closed the connection".to_string(),
                    Some(Err(e)) => return format!("connection error: {e}"),
                    Some(Ok(msg)) => {
                        conn.heard();
                        match msg {
                            WsMessage::Close(Some(frame)) if !frame.reason.is_empty() => {
                                return format!(
                                    "the slave closed the connection: {}",
                                    frame.reason
                                );
                            }
                            WsMessage::Close(_) => {
                                return "the slave closed the connection".to_string();
                            }
                            WsMessage::Binary(bytes) => match Message::decode(&bytes) {
                                Ok(m) => handle(&conn, m).await,
                                Err(e) => return format!("protocol error: {e}"),
                            },
                            _ => continue,
                        }
                    }
                }
            }
        }
    };
    tokio::pin!(reader);

    let life = {
        let conn = conn.clone();
        let shared = shared.clone();
        async move {
            tokio::select! {
                r = keepalive(&conn, &shared) => r,
                r = async {
                    if let Err(e) = setup(&shared, &conn).await {
                        return format!("set-up failed: {e}");
                    }
                    std::future::pending::<String>().await
                } => r,
            }
        }
    };
    tokio::pin!(life);

    let mut close_rx = conn.close_request.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let reason = tokio::select! {
        r = &mut reader => r,
        r = &mut life => r,
        r = async { close_rx.wait_for(|r| r.is_some()).await.map(|r| r.clone()) } => {
            let why = r.ok().flatten().unwrap_or_default();
            stop_commands(&conn, &why, &mut reader).await.unwrap_or(why)
        }
        _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => {
            let why = "master shutting down".to_string();
            stop_commands(&conn, &why, &mut reader).await.unwrap_or(why)
        }
    };

    // Tear-down: stop new requests, fail the waiting ones, tell every command.
    conn.closed.send_replace(Some(reason.clone()));
    let _ = conn.out.try_send(Outgoing::Close(reason.clone()));
    lock(&conn.pending).clear();
    let slots: Vec<Slot> = lock(&conn.slots).drain().map(|(_, s)| s).collect();
    for s in slots {
        let _ = s.events.send((CommandEvent::Lost(reason.clone()), None));
    }
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(2), &mut writer)
        .await
        .is_err()
    {
        // A slave that reads nothing would keep the writer (and the socket)
        // forever.
        writer.abort();
    }
    // Recorded before the slave leaves the registry: whoever sees it gone (the
    // API, a reconnecting slave of the same name) finds the database agreeing.
    let db_id = *lock(&conn.db_id);
    if let Some(id) = db_id {
        if let Err(e) = shared
            .db
            .slave_disconnected(&name, id, &reason, crate::calendar::now())
            .await
        {
            tracing::error!("slave {name}: cannot record the disconnect: {e}");
        }
    }
    shared.registry.unregister(&name, &conn);
    tracing::info!("slave {name} disconnected: {reason}");
    drop(claim);
}

/// Interrupt every running command and wait (a few seconds at most, reading the
/// slave's answers meanwhile) for them to complete. Returns `Some(reason)` if the
/// connection ended by itself first.
async fn stop_commands<F>(conn: &Arc<Conn>, why: &str, reader: &mut F) -> Option<String>
where
    F: std::future::Future<Output = String> + Unpin,
{
    let ids = conn.running();
    if ids.is_empty() {
        return None;
    }
    tracing::info!(
        "slave {}: interrupting {} running command(s): {why}",
        conn.name,
        ids.len()
    );
    let wait = async {
        let sends = ids.iter().map(|id| {
            conn.request(
                "interrupt_command",
                vec![
                    ("command_id", Value::from(id.as_str())),
                    ("why", Value::from(why)),
                ],
            )
        });
        let _ = futures_util::future::join_all(sends).await;
        while !conn.running().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        r = reader => Some(r),
        _ = tokio::time::timeout(Duration::from_secs(5), wait) => None,
    }
}

/// Keep the link alive and notice when it is dead: returns why it is dead.
async fn keepalive(conn: &Arc<Conn>, shared: &Arc<Shared>) -> String {
    let interval = shared.keepalive;
    let tick = (interval / 4).max(Duration::from_millis(20));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if conn.pushing_back.load(Ordering::SeqCst) {
            // The slave sends more than the master stores just now: it is alive.
            // A ping tells it the master is alive too (its answer waits in the
            // socket with the rest).
            conn.heard();
            let _ = conn.out.try_send(Outgoing::Ping);
            continue;
        }
        let quiet = lock(&conn.last_heard).elapsed();
        if quiet >= interval {
            return format!(
                "no answer for {:.1} s (keepalive interval {:.1} s): link presumed dead",
                quiet.as_secs_f64(),
                interval.as_secs_f64()
            );
        }
        if quiet < tick && lock(&conn.db_id).is_some() {
            // Heard from within the last tick: keep `last_seen` fresh in the
            // database (at most once per tick).
            let (db, name) = (shared.db.clone(), conn.name.clone());
            tokio::spawn(async move {
                if let Err(e) = db.slave_seen(&name, crate::calendar::now()).await {
                    tracing::warn!("slave {name}: cannot record last_seen: {e}");
                }
            });
        }
        if quiet >= tick {
            let _ = conn.out.try_send(Outgoing::Ping);
            let c = conn.clone();
            tokio::spawn(async move {
                let _ = c.request("keepalive", vec![]).await;
            });
        }
    }
}

/// `get_worker_info`, `set_worker_settings`, builder directories; then the slave
/// is recorded as connected and offered to the build engine.
async fn setup(shared: &Arc<Shared>, conn: &Arc<Conn>) -> Result<(), CommandError> {
    let info_value = conn.request("get_worker_info", vec![]).await?;
    let info = SlaveInfo::from_value(&info_value);
    drop(info_value);
    // The master keeps output as text only, so an autobot slave sends just that,
    // in bigger messages: a big log costs little more than its bytes.
    let buffer_size = match info.text_output {
        true => TEXT_BUFFER_SIZE,
        false => 16384,
    };
    let mut settings = vec![
        ("buffer_size", Value::from(buffer_size)),
        ("buffer_timeout", Value::from(0.1)),
        ("newline_re", Value::from(NEWLINE_RE)),
        ("max_line_length", Value::from(4096)),
    ];
    if info.text_output {
        settings.push(("output_format", Value::from("text")));
    }
    conn.request("set_worker_settings", vec![("args", map(settings))])
        .await?;
    let _ = conn.info.set(info.clone());
    let config = shared.config.borrow().clone();
    make_builder_dirs(conn, &config).await?;
    let id = shared
        .db
        .slave_connected(
            &conn.name,
            &conn.peer,
            info.to_row(),
            crate::calendar::now(),
        )
        .await
        .map_err(|e| CommandError::Local(e.to_string()))?;
    *lock(&conn.db_id) = Some(id);
    shared.registry.register(SlaveHandle::new(conn.clone()));
    tracing::info!(
        "slave {} is ready: host {}, os {}, version {}, {} cpu(s)",
        conn.name,
        info.host.as_deref().unwrap_or("?"),
        info.os.as_deref().unwrap_or("?"),
        info.version.as_deref().unwrap_or("?"),
        info.numcpus.unwrap_or(0)
    );
    Ok(())
}

/// mkdir the `FACTORY-SLAVE` directory of every builder of this slave.
pub(crate) async fn make_builder_dirs(
    conn: &Arc<Conn>,
    config: &crate::config::MasterConfig,
) -> Result<(), CommandError> {
    let Some(info) = conn.info.get() else {
        return Ok(());
    };
    let paths: Vec<Value> = config
        .builders()
        .iter()
        .filter(|b| b.slave == conn.name)
        .map(|b| Value::from(info.builder_dir(&b.name)))
        .collect();
    if paths.is_empty() {
        return Ok(());
    }
    let (cmd, _) = conn
        .start_command("mkdir", map(vec![("paths", Value::Array(paths))]), None)
        .await?;
    let out = cmd.wait().await?;
    if !out.succeeded() {
        return Err(CommandError::Failed {
            slave: conn.name.clone(),
            command: "mkdir of the builder directories".into(),
            message: out.failure_message(),
        });
    }
    Ok(())
}

/// Queue one outgoing frame on the WebSocket without writing it out yet; a
/// close is sent at once and ends the writer. `false`: stop writing.
async fn feed_frame<S>(sink: &mut S, o: Outgoing) -> bool
where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    match o {
        Outgoing::Frame(bytes) | Outgoing::Response(bytes) => {
            for msg in crate::protocol::ws_messages(bytes) {
                if sink.feed(msg).await.is_err() {
                    return false;
                }
            }
            true
        }
        Outgoing::Ping => sink.feed(WsMessage::Ping(Default::default())).await.is_ok(),
        Outgoing::Close(reason) => {
            let reason: String = reason.chars().take(100).collect();
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: reason.into(),
            };
            let _ = sink.send(WsMessage::Close(Some(frame))).await;
            let _ = sink.close().await;
            false
        }
    }
}

/// Handle one frame from the slave.
async fn handle(conn: &Arc<Conn>, msg: Message) {
    let (seq, op, mut fields) = match msg {
        Message::Response {
            seq,
            result,
            is_exception,
        } => {
            if let Some(tx) = lock(&conn.pending).remove(&seq) {
                let r = if is_exception {
                    Err(value_str(&result)
                        .map(str::to_string)
                        .unwrap_or_else(|| result.to_string()))
                } else {
                    Ok(result)
                };
                let _ = tx.send(r);
            }
            return;
        }
        Message::Request { seq, op, fields } => (seq, op, fields),
    };
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let command_id = field("command_id")
        .and_then(value_str)
        .map(str::to_string)
        .unwrap_or_default();
    let result: Result<Value, String> = match op.as_str() {
        "update" => {
            let events = lock(&conn.slots)
                .get(&command_id)
                .map(|s| (s.events.clone(), s.room.clone()));
            match events {
                None => Err(format!("unknown command_id {command_id:?}")),
                Some((events, room)) => {
                    let args = fields
                        .iter_mut()
                        .find(|(k, _)| k == "args")
                        .map(|(_, v)| std::mem::replace(v, Value::Nil));
                    if let Some(Value::Array(pairs)) = args {
                        for pair in pairs {
                            if let Value::Array(mut kv) = pair {
                                if kv.len() == 2 {
                                    let value = kv.pop().unwrap_or(Value::Nil);
                                    let key = value_str(&kv[0]).unwrap_or_default();
                                    let u = Update::from_pair(key, value);
                                    conn.deliver(&events, &room, CommandEvent::Update(u)).await;
                                }
                            }
                        }
                    }
                    Ok(Value::Nil)
                }
            }
        }
        "complete" => {
            let slot = lock(&conn.slots).remove(&command_id);
            match slot {
                None => Err(format!("unknown command_id {command_id:?}")),
                Some(slot) => {
                    let failure = match field("args") {
                        None | Some(Value::Nil) => None,
                        Some(v) => Some(
                            value_str(v)
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string()),
                        ),
                    };
                    if let Some(t) = &slot.transfer {
                        finish_transfer(&mut *t.lock().await).await;
                    }
                    let ev = CommandEvent::Complete(failure);
                    conn.deliver(&slot.events, &slot.room, ev).await;
                    Ok(Value::Nil)
                }
            }
        }
        "update_upload_file_write"
        | "update_upload_directory_write"
        | "update_upload_file_close"
        | "update_upload_file_utime"
        | "update_upload_directory_unpack"
        | "update_read_file"
        | "update_read_file_close" => {
            let transfer = lock(&conn.slots)
                .get(&command_id)
                .and_then(|s| s.transfer.clone());
            match transfer {
                None => Err(format!("unknown command_id {command_id:?}")),
                Some(t) => {
                    let mut t = t.lock().await;
                    transfer_op(&mut t, &op, &fields).await
                }
            }
        }
        "keepalive" => Ok(Value::Nil),
        "shutdown" => {
            tracing::info!("slave {} says it is shutting down", conn.name);
            Ok(Value::Nil)
        }
        other => Err(format!("Command {other} does not exist.")),
    };
    conn.respond(match result {
        Ok(v) => Message::ok(seq, v),
        Err(e) => {
            tracing::debug!(slave = %conn.name, op = %op, "refused a request: {e}");
            Message::error(seq, e)
        }
    })
    .await;
}

/// One file-transfer message applied to the local end of the transfer.
async fn transfer_op(
    t: &mut Transfer,
    op: &str,
    fields: &[(String, Value)],
) -> Result<Value, String> {
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    match (op, t) {
        (
            "update_upload_file_write" | "update_upload_directory_write",
            t @ (Transfer::ToFile { .. } | Transfer::ToDir { .. }),
        ) => {
            let data: &[u8] = match field("args") {
                Some(Value::Binary(b)) => b,
                Some(Value::String(s)) => s.as_bytes(),
                _ => return Err("upload write without data".into()),
            };
            let (file, part, written, limit, over_limit, hash) = match t {
                Transfer::ToFile {
                    file,
                    part,
                    written,
                    limit,
                    over_limit,
                    hash,
                } => (file, part, written, *limit, over_limit, hash.as_mut()),
                Transfer::ToDir {
                    file,
                    part,
                    written,
                    limit,
                    over_limit,
                    ..
                } => (file, part, written, *limit, over_limit, None),
                _ => return Err("upload write without a file".into()),
            };
            if let Some(max) = limit {
                if written.saturating_add(data.len() as u64) > max {
                    *over_limit = true;
                    return Err(format!(
                        "the upload is larger than the {max} bytes allowed; refused"
                    ));
                }
            }
            if let Some(h) = hash {
                h.update(data);
            }
            let f = file
                .as_mut()
                .ok_or_else(|| "upload already closed".to_string())?;
            f.write_all(data)
                .await
                .map_err(|e| format!("{}: {e}", part.display()))?;
            *written += data.len() as u64;
            Ok(Value::Nil)
        }
        ("update_upload_file_close", t @ Transfer::ToFile { .. }) => {
            finish_transfer(t).await;
            Ok(Value::Nil)
        }
        ("update_upload_file_utime", Transfer::ToFile { part, .. }) => {
            // A time the slave sent: ignored unless it is one a file can have
            // (not negative, NaN, infinite or past what SystemTime holds).
            let secs = |k: &str| {
                field(k)
                    .and_then(|v| v.as_f64().or_else(|| v.as_i64().map(|i| i as f64)))
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .and_then(|d| std::time::UNIX_EPOCH.checked_add(d))
            };
            if let (Some(a), Some(m)) = (secs("access_time"), secs("modified_time")) {
                let f = std::fs::File::options()
                    .write(true)
                    .open(&*part)
                    .map_err(|e| format!("{}: {e}", part.display()))?;
                f.set_times(std::fs::FileTimes::new().set_accessed(a).set_modified(m))
                    .map_err(|e| format!("{}: {e}", part.display()))?;
            }
            Ok(Value::Nil)
        }
        (
            "update_upload_directory_unpack",
            Transfer::ToDir {
                file, part, dest, ..
            },
        ) => {
            if let Some(mut f) = file.take() {
                f.flush().await.map_err(|e| e.to_string())?;
            }
            let (part, dest) = (part.clone(), dest.clone());
            tokio::task::spawn_blocking(move || {
                let r = unpack_tar(&part, &dest);
                let _ = std::fs::remove_file(&part);
                r
            })
            .await
            .map_err(|e| e.to_string())??;
            Ok(Value::Nil)
        }
        ("update_read_file", Transfer::FromBytes { data, pos }) => {
            let len = field("length").and_then(Value::as_u64).unwrap_or(0);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let end = pos.saturating_add(len).min(data.len());
            let chunk = data[*pos..end].to_vec();
            *pos = end;
            Ok(Value::Binary(chunk))
        }
        ("update_read_file", Transfer::FromFile { file, read }) => {
            let len = field("length").and_then(Value::as_u64).unwrap_or(0) as usize;
            let mut buf = vec![0u8; len.min(16 << 20)];
            let mut n = 0;
            while n < buf.len() {
                let got = file.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
                if got == 0 {
                    break;
                }
                n += got;
            }
            buf.truncate(n);
            *read += n as u64;
            Ok(Value::Binary(buf))
        }
        ("update_read_file_close", Transfer::FromBytes { .. } | Transfer::FromFile { .. }) => {
            Ok(Value::Nil)
        }
        (op, _) => Err(format!("{op} does not fit this command's transfer")),
    }
}

/// Flush and close an upload's file (idempotent).
async fn finish_transfer(t: &mut Transfer) {
    if let Transfer::ToFile { file, part, .. } = t {
        if let Some(mut f) = file.take() {
            if let Err(e) = f.flush().await {
                tracing::warn!("cannot write {}: {e}", part.display());
            }
        }
    }
}

/// Unpack a tarball into `dest`, refusing entries that would land outside it.
fn unpack_tar(tarball: &std::path::Path, dest: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let f = std::fs::File::open(tarball).map_err(|e| format!("{}: {e}", tarball.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    archive.set_preserve_permissions(true);
    let entries = archive.entries().map_err(|e| format!("bad tarball: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("bad tarball: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("bad tarball: {e}"))?
            .into_owned();
        if path.as_os_str().is_empty() || path == std::path::Path::new(".") {
            continue;
        }
        let inside = entry
            .unpack_in(dest)
            .map_err(|e| format!("cannot unpack {}: {e}", path.display()))?;
        if !inside {
            return Err(format!(
                "the slave's tarball has an entry outside the directory: {}",
                path.display()
            ));
        }
    }
    Ok(())
}
