//! A test-only WebSocket "master" for driving the autobot slave over real TCP.
//!
//! It listens on 127.0.0.1, checks the HTTP Basic credentials of the upgrade (or
//! refuses them on purpose), and then speaks the master's half of
//! `msgpack_experimental_v7`: it sends requests, answers the slave's requests
//! (`update`, `complete`, and the file reader/writer ops) and records everything.
#![allow(dead_code, clippy::result_large_err)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use autobot::config::SlaveIni;
use autobot::daemon::{self, ControlHandle};
use autobot::protocol::{map, value_str, Message};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

pub const PASSWORD: &str = "sekrit-pw";

/// Everything logged by this test binary (the slave logs its reasons).
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

struct LogWriter;
impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        log_buffer().lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

/// Wait for a condition, polling, up to a deadline.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How the test master answers an upgrade.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    Accept,
    Status(u16),
}

/// A listening test master.
pub struct Master {
    pub port: u16,
    pub attempts: Arc<AtomicUsize>,
    pub policy: Arc<Mutex<Policy>>,
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl Master {
    pub async fn start(name: &str) -> Master {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Master::serve(listener, name)
    }

    /// Serve on an already bound listener (for a master that comes up late).
    pub fn serve(listener: TcpListener, name: &str) -> Master {
        let port = listener.local_addr().unwrap().port();
        let attempts = Arc::new(AtomicUsize::new(0));
        let policy = Arc::new(Mutex::new(Policy::Accept));
        let (tx, rx) = mpsc::unbounded_channel();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{name}:{PASSWORD}"))
        );
        let (a, p) = (attempts.clone(), policy.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let policy = *p.lock().unwrap();
                let expected = expected.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let check = move |req: &Request, resp: Response| {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        let status = match policy {
                            Policy::Status(s) => Some(s),
                            Policy::Accept if auth != expected => Some(401),
                            Policy::Accept => None,
                        };
                        match status {
                            None => Ok(resp),
                            Some(s) => {
                                let mut e = ErrorResponse::new(Some("refused".into()));
                                *e.status_mut() = StatusCode::from_u16(s).unwrap();
                                Err(e)
                            }
                        }
                    };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await {
                        let _ = tx.send(Conn::new(ws));
                    }
                });
            }
        });
        Master {
            port,
            attempts,
            policy,
            conns: rx,
        }
    }

    pub async fn accept(&mut self) -> Conn {
        tokio::time::timeout(Duration::from_secs(20), self.conns.recv())
            .await
            .expect("slave did not connect in time")
            .expect("listener gone")
    }
}

/// What a command sent back.
#[derive(Debug, Default, Clone)]
pub struct CommandResult {
    /// Every `[name, value]` update in order.
    pub updates: Vec<(String, Value)>,
    /// The `complete` args (None = not yet complete).
    pub complete: Option<Value>,
    /// Data written by uploads, and the ops seen (close, utime, unpack…).
    pub uploaded: Vec<u8>,
    pub ops: Vec<String>,
}

impl CommandResult {
    /// The concatenated text of one output stream (`stdout`, `stderr`, `header`).
    pub fn text(&self, stream: &str) -> String {
        let mut s = String::new();
        for (k, v) in &self.updates {
            if k == stream {
                if let Value::Array(parts) = v {
                    s.push_str(value_str(&parts[0]).unwrap());
                }
            }
        }
        s
    }

    /// The text of a logfile's `log` updates.
    pub fn log(&self, name: &str) -> String {
        let mut s = String::new();
        for (k, v) in &self.updates {
            if k == "log" {
                if let Value::Array(parts) = v {
                    if value_str(&parts[0]) == Some(name) {
                        if let Value::Array(rec) = &parts[1] {
                            s.push_str(value_str(&rec[0]).unwrap());
                        }
                    }
                }
            }
        }
        s
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.updates.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn rc(&self) -> Option<i64> {
        self.get("rc").and_then(Value::as_i64)
    }

    pub fn failed(&self) -> bool {
        !matches!(self.complete, Some(Value::Nil))
    }
}

/// One slave connection, seen from the master.
pub struct Conn {
    ws: WebSocketStream<TcpStream>,
    seq: i64,
    responses: HashMap<i64, (Value, bool)>,
    pub commands: HashMap<String, CommandResult>,
    /// Data served to `download_file` commands, by command id.
    pub downloads: HashMap<String, Vec<u8>>,
    pub closed: bool,
    /// Every update frame's size, to check buffering.
    pub update_frames: usize,
    /// Only count stdout bytes (for volume tests) instead of keeping them.
    pub count_only: bool,
    pub counted: usize,
}

impl Conn {
    fn new(ws: WebSocketStream<TcpStream>) -> Conn {
        Conn {
            ws,
            seq: 1000,
            responses: HashMap::new(),
            commands: HashMap::new(),
            downloads: HashMap::new(),
            closed: false,
            update_frames: 0,
            count_only: false,
            counted: 0,
        }
    }

    pub async fn send(&mut self, op: &str, fields: Vec<(&str, Value)>) -> i64 {
        self.seq += 1;
        let seq = self.seq;
        let m = Message::request(seq, op, fields);
        self.ws
            .send(WsMessage::Binary(m.encode().into()))
            .await
            .unwrap();
        seq
    }

    /// Send a request and wait for its response: (result, is_exception).
    pub async fn request(&mut self, op: &str, fields: Vec<(&str, Value)>) -> (Value, bool) {
        let seq = self.send(op, fields).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = self.responses.remove(&seq) {
                return r;
            }
            assert!(Instant::now() < deadline, "no response to {op}");
            assert!(
                self.pump(Duration::from_secs(20)).await,
                "connection closed"
            );
        }
    }

    /// Start a command (must be accepted).
    pub async fn start(&mut self, id: &str, name: &str, args: Value) {
        let (r, exc) = self
            .request(
                "start_command",
                vec![
                    ("command_id", Value::from(id)),
                    ("command_name", Value::from(name)),
                    ("args", args),
                ],
            )
            .await;
        assert!(!exc, "start_command {name} refused: {r}");
        self.commands.entry(id.to_string()).or_default();
    }

    /// Start a command that should be refused; returns the exception text.
    pub async fn start_refused(&mut self, id: &str, name: &str, args: Value) -> String {
        let (r, exc) = self
            .request(
                "start_command",
                vec![
                    ("command_id", Value::from(id)),
                    ("command_name", Value::from(name)),
                    ("args", args),
                ],
            )
            .await;
        assert!(exc, "start_command {name} should have been refused");
        value_str(&r).unwrap_or_default().to_string()
    }

    /// Run a command to completion.
    pub async fn run(&mut self, id: &str, name: &str, args: Value) -> CommandResult {
        self.start(id, name, args).await;
        self.wait_complete(id, Duration::from_secs(30)).await
    }

    pub async fn wait_complete(&mut self, id: &str, timeout: Duration) -> CommandResult {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.commands.get(id) {
                if c.complete.is_some() {
                    return c.clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "command {id} did not complete in time");
            assert!(
                self.pump(left).await,
                "connection closed before {id} completed"
            );
        }
    }

    /// Handle frames until `cond` holds on the commands seen.
    pub async fn pump_until(
        &mut self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&HashMap<String, CommandResult>) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !cond(&self.commands) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}");
            assert!(
                self.pump(left).await,
                "connection closed waiting for {what}"
            );
        }
    }

    /// Read and handle one frame; false when the connection is closed.
    pub async fn pump(&mut self, timeout: Duration) -> bool {
        let next = match tokio::time::timeout(timeout, self.ws.next()).await {
            Err(_) => return true,
            Ok(n) => n,
        };
        let bytes = match next {
            None | Some(Err(_)) => {
                self.closed = true;
                return false;
            }
            Some(Ok(WsMessage::Binary(b))) => b,
            Some(Ok(WsMessage::Close(_))) => {
                // Send the answering close frame tungstenite queued.
                let _ = self.ws.flush().await;
                self.closed = true;
                return false;
            }
            Some(Ok(_)) => return true,
        };
        match Message::decode(&bytes).expect("slave sent a bad frame") {
            Message::Response {
                seq,
                result,
                is_exception,
            } => {
                assert!(
                    self.responses.insert(seq, (result, is_exception)).is_none(),
                    "two responses to {seq}"
                );
            }
            Message::Request { seq, op, fields } => {
                let get = |k: &str| {
                    fields
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or(Value::Nil)
                };
                let id = value_str(&get("command_id")).unwrap_or("").to_string();
                let mut result = Value::Nil;
                {
                    let cmd = self.commands.entry(id.clone()).or_default();
                    match op.as_str() {
                        "update" if self.count_only => {
                            if let Value::Array(items) = get("args") {
                                for item in items {
                                    if let Value::Array(kv) = item {
                                        match (value_str(&kv[0]), &kv[1]) {
                                            (Some("stdout"), Value::Array(rec)) => {
                                                self.counted +=
                                                    value_str(&rec[0]).map_or(0, str::len);
                                            }
                                            (Some(k), v) => {
                                                cmd.updates.push((k.to_string(), v.clone()))
                                            }
                                            _ => {}
                                        }
                                    }
                                }
                            }
                        }
                        "update" => {
                            if let Value::Array(items) = get("args") {
                                for item in items {
                                    if let Value::Array(kv) = item {
                                        let k = value_str(&kv[0]).unwrap().to_string();
                                        cmd.updates.push((k, kv[1].clone()));
                                    }
                                }
                            }
                        }
                        "complete" => {
                            assert!(cmd.complete.is_none(), "{id} completed twice");
                            cmd.complete = Some(get("args"));
                        }
                        "update_upload_file_write" | "update_upload_directory_write" => {
                            match get("args") {
                                Value::Binary(b) => cmd.uploaded.extend_from_slice(&b),
                                other => panic!("upload data is not binary: {other}"),
                            }
                            cmd.ops.push(op.clone());
                        }
                        "update_read_file" => {
                            let len = get("length").as_u64().unwrap() as usize;
                            let src = self.downloads.entry(id.clone()).or_default();
                            let n = len.min(src.len());
                            result = Value::Binary(src.drain(..n).collect());
                            cmd.ops.push(op.clone());
                        }
                        _ => cmd.ops.push(op.clone()),
                    }
                }
                if op == "update" {
                    self.update_frames += 1;
                }
                let m = Message::ok(seq, result);
                if self
                    .ws
                    .send(WsMessage::Binary(m.encode().into()))
                    .await
                    .is_err()
                {
                    self.closed = true;
                }
            }
        }
        true
    }

    /// Close from the master's side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Standard settings with a short buffer timeout so logs are live.
    pub async fn settings(&mut self) {
        let (r, exc) = self
            .request(
                "set_worker_settings",
                vec![(
                    "args",
                    map(vec![
                        ("buffer_size", Value::from(65536)),
                        ("buffer_timeout", Value::F64(0.1)),
                        (
                            "newline_re",
                            Value::from(
                                r"(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)",
                            ),
                        ),
                        ("max_line_length", Value::from(4096)),
                    ]),
                )],
            )
            .await;
        assert!(!exc, "{r}");
    }
}

/// A slave directory and its running daemon.
pub struct Slave {
    pub dir: tempfile::TempDir,
    pub basedir: PathBuf,
    pub name: String,
    pub handle: Option<ControlHandle>,
    pub task: Option<tokio::task::JoinHandle<Result<(), autobot::slave::SlaveError>>>,
}

impl Slave {
    /// Write a slave directory for `port` (not started).
    pub fn create(name: &str, port: u16, keepalive: u64) -> Slave {
        let dir = tempfile::tempdir().unwrap();
        let basedir = std::fs::canonicalize(dir.path()).unwrap();
        let ini = SlaveIni {
            basedir: basedir.clone(),
            master_host: "127.0.0.1".into(),
            master_port: port,
            more_masters: Vec::new(),
            name: name.into(),
            password: PASSWORD.into(),
            keepalive,
            umask: 0o022,
            usepty: false,
        };
        std::fs::write(basedir.join("slave.ini"), ini.render()).unwrap();
        std::fs::create_dir(basedir.join("info")).unwrap();
        std::fs::write(basedir.join("info/admin"), "Ada Admin <ada@example.org>\n").unwrap();
        std::fs::write(basedir.join("info/host"), "a test host\n").unwrap();
        Slave {
            dir,
            basedir,
            name: name.into(),
            handle: None,
            task: None,
        }
    }

    /// Change one `key = value` line of slave.ini.
    pub fn set_ini(&self, key: &str, value: &str) {
        let p = self.basedir.join("slave.ini");
        let text = std::fs::read_to_string(&p).unwrap();
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{key} =")) {
                    format!("{key} = {value}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(p, text.join("\n") + "\n").unwrap();
    }

    pub fn set_password(&self, pw: &str) {
        let p = self.basedir.join("slave.ini");
        let text = std::fs::read_to_string(&p).unwrap();
        let text = text.replace(
            &format!("password = {PASSWORD}"),
            &format!("password = {pw}"),
        );
        std::fs::write(p, text).unwrap();
    }

    /// Start the daemon; returns its ready message.
    pub async fn start(&mut self) -> Result<String, String> {
        init_logging();
        let (control, mut handle) = daemon::control();
        let dir = self.basedir.clone();
        self.task = Some(tokio::spawn(async move {
            autobot::slave::run(&dir, control).await
        }));
        let ready = (&mut handle.ready).await.unwrap();
        self.handle = Some(handle);
        ready
    }

    /// Ask it to stop and wait until `run` returns.
    pub async fn stop(&mut self) {
        if let Some(h) = &self.handle {
            let _ = h.shutdown.send(true);
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("slave did not stop in time")
                .unwrap()
                .unwrap();
        }
    }

    /// Stop while the master keeps reading, as a real master does.
    pub async fn stop_serving(&mut self, conn: &mut Conn) {
        let pump = async { while conn.pump(Duration::from_secs(5)).await {} };
        tokio::join!(self.stop(), pump);
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.basedir.join(rel)
    }
}

/// A slave connected to a fresh test master, settings sent.
pub async fn connected(name: &str) -> (Master, Slave, Conn) {
    let mut master = Master::start(name).await;
    let mut slave = Slave::create(name, master.port, 30);
    slave.start().await.expect("slave start");
    let mut conn = master.accept().await;
    conn.settings().await;
    (master, slave, conn)
}

/// Whether a process is gone (or a zombie nobody reaped yet).
pub fn pid_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(") ")
            .map(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
            .unwrap_or(true),
    }
}

pub fn args(entries: Vec<(&str, Value)>) -> Value {
    map(entries)
}

pub fn strs(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(*s)).collect())
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}
