//! Fuzz targets of the protocol as each side reads it, over real WebSockets on
//! 127.0.0.1: a fake master sends generated frames to a real autobot slave, and a
//! fake slave sends generated frames to a real autobot master that has commands
//! and file transfers running on it. After each case's frames the fake peer sends
//! a `keepalive` request: the case passes only if the real side answered every
//! request it was sent exactly once, answers the keepalive within the time bound,
//! and kept the connection (a master drops a slave whose frame is not msgpack —
//! that is expected, checked, and the fake slave reconnects).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use autobot::app::{Master, MasterOptions};
use autobot::protocol::{map, value_str, Message};
use autobot::slavelink::DownloadSource;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use proptest::collection::vec;
use proptest::prelude::*;
use rmpv::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::gen::{edge_f64, edge_i64, mutate, mutation, value, weird_string};
use super::harness::{fuzz_with, panic_count, panics_since, MemoryBound, Report, Target};
use super::protocol::header_bomb;

/// How long one case may take, frames and keepalive answer included.
const CASE_LIMIT: Duration = Duration::from_secs(60);
/// How long the fake peer waits for the keepalive answer before the case fails.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// One frame a fake peer sends.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A well-formed message.
    Msg(Message),
    /// Raw bytes in a binary frame (mutated messages, header bombs, garbage).
    Bytes(Vec<u8>),
    /// A text frame (the protocol has none).
    Text(String),
}

impl Frame {
    fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Frame::Msg(m) => Some(m.encode()),
            Frame::Bytes(b) => Some(b.clone()),
            Frame::Text(_) => None,
        }
    }

    fn ws(&self) -> Ws {
        match self {
            Frame::Text(t) => Ws::text(t.clone()),
            other => Ws::binary(other.bytes().unwrap_or_default()),
        }
    }
}

/// A value from `pool` most of the time, else any value.
fn pooled(pool: Vec<Value>) -> BoxedStrategy<Value> {
    prop_oneof![
        6 => prop::sample::select(pool),
        1 => weird_string().prop_map(Value::from),
        1 => value(2),
    ]
    .boxed()
}

fn strs(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(*s)).collect())
}

fn path() -> BoxedStrategy<Value> {
    pooled(
        [
            "build",
            "build/sub",
            "build/f.txt",
            "f.txt",
            "new",
            "new/deep/er",
            ".",
            "",
            "..",
            "../x",
            "build/../..",
            "/",
            "/etc/passwd",
            "/tmp",
            "a\0b",
            "build/*",
            "**",
            "[",
            "build/sub/../f.txt",
            "~",
            "$HOME",
        ]
        .iter()
        .map(|s| Value::from(*s))
        .collect(),
    )
}

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        edge_f64().prop_map(Value::F64),
        edge_i64().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::Nil),
        value(1),
    ]
    .boxed()
}

fn boolean() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Boolean),
        edge_i64().prop_map(Value::from),
        value(1)
    ]
    .boxed()
}

/// The `args` of `start_command` NAME: the keys that command reads, each with a
/// plausible or an edge value, some left out, plus stray keys.
fn command_args(name: &'static str) -> BoxedStrategy<Value> {
    let safe_command = pooled(vec![
        strs(&["true"]),
        strs(&["echo", "fuzz"]),
        strs(&["/nonexistent/program"]),
        strs(&[""]),
        strs(&[]),
        Value::from("true"),
        Value::from("exit 3"),
        Value::Array(vec![Value::Array(vec![
            Value::from("obfuscated"),
            Value::from("true"),
            Value::from("***"),
        ])]),
    ]);
    let keys: Vec<(&'static str, BoxedStrategy<Value>)> = match name {
        "shell" => vec![
            ("command", safe_command),
            ("workdir", path()),
            (
                "env",
                prop_oneof![
                    vec(
                        (
                            weird_string(),
                            prop_oneof![weird_string().prop_map(Value::from), value(1)]
                        ),
                        0..4
                    )
                    .prop_map(|kv| Value::Map(
                        kv.into_iter().map(|(k, v)| (Value::from(k), v)).collect()
                    )),
                    value(2),
                ]
                .boxed(),
            ),
            ("timeout", number()),
            ("maxTime", number()),
            ("sigtermTime", number()),
            ("max_lines", number()),
            ("want_stdout", boolean()),
            ("want_stderr", boolean()),
            ("usePTY", boolean()),
            ("logEnviron", boolean()),
            (
                "logfiles",
                prop_oneof![
                    Just(map(vec![("log", Value::from("build/f.txt"))])),
                    Just(map(vec![(
                        "log",
                        map(vec![
                            ("filename", Value::from("../x")),
                            ("follow", Value::from(true))
                        ])
                    )])),
                    value(2),
                ]
                .boxed(),
            ),
            (
                "initial_stdin",
                prop_oneof![weird_string().prop_map(Value::from), value(1)].boxed(),
            ),
            (
                "interruptSignal",
                pooled(vec![
                    Value::from("TERM"),
                    Value::from("KILL"),
                    Value::from("SIGINT"),
                    Value::from("NOPE"),
                ]),
            ),
        ],
        "mkdir" | "rmdir" => vec![
            (
                "paths",
                prop_oneof![vec(path(), 0..4).prop_map(Value::Array), path()].boxed(),
            ),
            ("dir", path()),
        ],
        "cpdir" => vec![
            ("from_path", path()),
            ("to_path", path()),
            ("fromdir", path()),
            ("todir", path()),
            ("timeout", number()),
            ("maxTime", number()),
        ],
        "stat" | "listdir" | "rmfile" | "glob" => {
            vec![
                ("path", path()),
                ("file", path()),
                ("dir", path()),
                ("workdir", path()),
            ]
        }
        "upload_file" | "uploadFile" | "upload_directory" | "uploadDirectory" => vec![
            ("path", path()),
            ("workersrc", path()),
            ("workdir", path()),
            ("maxsize", number()),
            ("blocksize", number()),
            ("keepstamp", boolean()),
            (
                "compress",
                pooled(vec![
                    Value::from("gz"),
                    Value::from("bz2"),
                    Value::Nil,
                    Value::from("xz"),
                ]),
            ),
        ],
        "download_file" | "downloadFile" => vec![
            ("path", path()),
            ("workerdest", path()),
            ("workdir", path()),
            ("maxsize", number()),
            ("blocksize", number()),
            ("mode", number()),
        ],
        _ => vec![
            (
                "repourl",
                pooled(vec![Value::from("/nonexistent/repo"), Value::from("")]),
            ),
            (
                "branch",
                pooled(vec![Value::from("main"), Value::from("-x")]),
            ),
            (
                "revision",
                pooled(vec![
                    Value::from("--output=x"),
                    Value::from("0123abc"),
                    Value::Nil,
                ]),
            ),
            ("workdir", path()),
            ("builddir", path()),
            (
                "mode",
                pooled(vec![Value::from("full"), Value::from("incremental")]),
            ),
            ("retry", value(2)),
            ("mirror", boolean()),
            ("alwaysUseLatest", boolean()),
            ("timeout", number()),
        ],
    };
    let n = keys.len();
    let parts: Vec<BoxedStrategy<Option<(Value, Value)>>> = keys
        .into_iter()
        .map(|(k, s)| prop::option::weighted(0.8, s.prop_map(move |v| (Value::from(k), v))).boxed())
        .collect();
    (parts, vec((value(1), value(1)), 0..2), 0..n.max(1))
        .prop_map(|(entries, extra, _)| {
            let mut m: Vec<(Value, Value)> = entries.into_iter().flatten().collect();
            m.extend(extra);
            Value::Map(m)
        })
        .boxed()
}

/// The commands a master may start, as the slave registers them, plus unknown ones.
const COMMAND_NAMES: &[&str] = &[
    "shell",
    "mkdir",
    "rmdir",
    "cpdir",
    "stat",
    "glob",
    "listdir",
    "rmfile",
    "upload_file",
    "uploadFile",
    "upload_directory",
    "uploadDirectory",
    "download_file",
    "downloadFile",
    "git",
    "hg",
    "nope",
];

fn start_command() -> BoxedStrategy<Vec<(&'static str, Value)>> {
    (prop::sample::select(COMMAND_NAMES), 0usize..6)
        .prop_flat_map(|(name, id)| {
            (
                command_args(name),
                pooled(vec![Value::from(format!("c{id}"))]),
                pooled(vec![Value::from(name)]),
            )
                .prop_map(|(args, id, name)| {
                    vec![("command_id", id), ("command_name", name), ("args", args)]
                })
        })
        .boxed()
}

fn settings() -> BoxedStrategy<Vec<(&'static str, Value)>> {
    (
        prop::option::weighted(0.9, number()),
        prop::option::weighted(0.9, number()),
        prop::option::weighted(
            0.9,
            pooled(vec![
                Value::from(autobot::slavelink::connection::NEWLINE_RE),
                Value::from("("),
                Value::from("a{1000}{1000}"),
                Value::from("\\n"),
                Value::from("(?i)x"),
            ]),
        ),
        prop::option::weighted(0.9, number()),
        prop::option::of(pooled(vec![Value::from("text"), Value::from("records")])),
    )
        .prop_map(|(size, timeout, re, max_line, fmt)| {
            let mut m = Vec::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    m.push((Value::from(k), v));
                }
            };
            put("buffer_size", size);
            put("buffer_timeout", timeout);
            put("newline_re", re);
            put("max_line_length", max_line);
            put("output_format", fmt);
            vec![("args", Value::Map(m))]
        })
        .boxed()
}

/// A request the master sends a slave (no `shutdown`: that ends the session).
fn master_request() -> BoxedStrategy<Message> {
    let fields = prop_oneof![
        2 => Just(("keepalive", vec![])),
        1 => Just(("get_worker_info", vec![])),
        1 => pooled(vec![Value::from("hello")]).prop_map(|m| ("print", vec![("message", m)])),
        3 => settings().prop_map(|f| ("set_worker_settings", f)),
        8 => start_command().prop_map(|f| ("start_command", f)),
        2 => (pooled(vec![Value::from("c1"), Value::from("c2")]), value(1))
            .prop_map(|(id, why)| ("interrupt_command", vec![("command_id", id), ("why", why)])),
        1 => Just(("no_such_op", vec![])),
    ];
    (
        edge_i64(),
        fields,
        vec(
            (
                prop::sample::select(vec!["command_id", "args", "x"]),
                value(1),
            ),
            0..2,
        ),
    )
        .prop_map(|(seq, (op, mut f), extra)| {
            if !extra.is_empty() && f.len() > 1 {
                // Sometimes drop a field the op needs.
                f.remove(0);
            }
            f.extend(extra);
            Message::request(seq, op, f)
        })
        .boxed()
}

fn frames_of(msg: BoxedStrategy<Message>) -> BoxedStrategy<Vec<Frame>> {
    let frame = prop_oneof![
        8 => msg.clone().prop_map(Frame::Msg),
        2 => (msg, vec(mutation(), 1..4)).prop_map(|(m, muts)| Frame::Bytes(mutate(m.encode(), &muts))),
        1 => (edge_i64(), value(2), any::<bool>()).prop_map(|(seq, result, exc)| {
            Frame::Msg(Message::Response { seq, result, is_exception: exc })
        }),
        1 => header_bomb().prop_map(Frame::Bytes),
        1 => vec(any::<u8>(), 0..64).prop_map(Frame::Bytes),
        1 => weird_string().prop_map(Frame::Text),
    ];
    vec(frame, 1..6).boxed()
}

/// Seq numbers of the requests among `frames`, as the receiver decodes them.
fn requests_in(frames: &[Frame]) -> Vec<i64> {
    frames
        .iter()
        .filter_map(|f| f.bytes())
        .filter_map(|b| match Message::decode(&b) {
            Ok(Message::Request { seq, .. }) => Some(seq),
            _ => None,
        })
        .collect()
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type ServerSocket = WebSocketStream<TcpStream>;

/// What the fake peer saw while waiting for its keepalive answer.
#[derive(Default)]
struct Seen {
    /// Responses to our requests, by seq.
    answers: HashMap<i64, usize>,
    /// `start_command`s the real master sent: command name → id.
    started: Vec<(String, String)>,
    /// Ids of the commands whose `complete` the real slave sent.
    completed: Vec<String>,
    /// The connection closed, and the close frame's reason.
    closed: Option<String>,
}

/// Read frames until the response to `until` arrives (or the connection ends, or
/// the time is up), answering the real peer's own requests as a live peer would:
/// `update_read_file` with an empty block (end of file), everything else with nil.
async fn pump<S>(ws: &mut WebSocketStream<S>, until: i64, seen: &mut Seen) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = Instant::now() + ANSWER_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = match tokio::time::timeout(left, ws.next()).await {
            Err(_) => {
                return Err(format!(
                    "no answer to keepalive {until} within {ANSWER_WAIT:?}"
                ))
            }
            Ok(n) => n,
        };
        let bytes = match next {
            None => {
                seen.closed.get_or_insert_with(String::new);
                return Ok(());
            }
            Some(Err(e)) => {
                seen.closed = Some(format!("error: {e}"));
                return Ok(());
            }
            Some(Ok(Ws::Close(f))) => {
                seen.closed = Some(f.map(|f| f.reason.to_string()).unwrap_or_default());
                let _ = ws.flush().await;
                return Ok(());
            }
            Some(Ok(Ws::Binary(b))) => b,
            Some(Ok(_)) => continue,
        };
        let msg = Message::decode(&bytes)
            .map_err(|e| format!("the real side sent a frame that does not decode: {e}"))?;
        match msg {
            Message::Response { seq, .. } => {
                *seen.answers.entry(seq).or_default() += 1;
                if seq == until {
                    return Ok(());
                }
            }
            Message::Request { seq, op, fields } => {
                let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v);
                let mut result = Value::Nil;
                match op.as_str() {
                    "complete" => {
                        let id = field("command_id").and_then(value_str).unwrap_or("");
                        seen.completed.push(id.to_string());
                    }
                    "update_read_file" => result = Value::Binary(Vec::new()),
                    "get_worker_info" => {
                        result = map(vec![
                            ("basedir", Value::from("/fuzz/slave")),
                            ("system", Value::from("posix")),
                            ("version", Value::from("fuzz")),
                        ])
                    }
                    "start_command" => {
                        let name = field("command_name")
                            .and_then(value_str)
                            .unwrap_or("")
                            .to_string();
                        let id = field("command_id")
                            .and_then(value_str)
                            .unwrap_or("")
                            .to_string();
                        if name == "mkdir" {
                            // The builder directories of the set-up: done at once.
                            let reply = Message::ok(seq, Value::Nil).encode();
                            let _ = ws.send(Ws::binary(reply)).await;
                            for (s, op, f) in [
                                (
                                    -1,
                                    "update",
                                    vec![
                                        ("command_id", Value::from(id.as_str())),
                                        (
                                            "args",
                                            Value::Array(vec![Value::Array(vec![
                                                Value::from("rc"),
                                                Value::from(0),
                                            ])]),
                                        ),
                                    ],
                                ),
                                (
                                    -2,
                                    "complete",
                                    vec![
                                        ("command_id", Value::from(id.as_str())),
                                        ("args", Value::Nil),
                                    ],
                                ),
                            ] {
                                let _ = ws
                                    .send(Ws::binary(Message::request(s, op, f).encode()))
                                    .await;
                            }
                            continue;
                        }
                        seen.started.push((name, id));
                    }
                    _ => {}
                }
                if ws
                    .send(Ws::binary(Message::ok(seq, result).encode()))
                    .await
                    .is_err()
                {
                    seen.closed.get_or_insert_with(String::new);
                    return Ok(());
                }
            }
        }
    }
}

/// Send a case's frames and a keepalive; check every request was answered once.
async fn exchange<S>(
    ws: &mut WebSocketStream<S>,
    frames: &[Frame],
    keepalive_seq: i64,
    seen: &mut Seen,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for f in frames {
        if ws.send(f.ws()).await.is_err() {
            seen.closed.get_or_insert_with(|| "send failed".into());
            return Ok(());
        }
    }
    let ka = Message::request(keepalive_seq, "keepalive", vec![]).encode();
    if ws.send(Ws::binary(ka)).await.is_err() {
        seen.closed.get_or_insert_with(|| "send failed".into());
        return Ok(());
    }
    pump(ws, keepalive_seq, seen).await
}

fn check_answers(frames: &[Frame], keepalive_seq: i64, seen: &Seen) -> Result<(), String> {
    let mut expected: HashMap<i64, usize> = HashMap::new();
    for seq in requests_in(frames) {
        *expected.entry(seq).or_default() += 1;
    }
    *expected.entry(keepalive_seq).or_default() += 1;
    for (seq, n) in &expected {
        let got = seen.answers.get(seq).copied().unwrap_or(0);
        if got < *n {
            return Err(format!(
                "request {seq} was sent {n} time(s) but answered {got} time(s)"
            ));
        }
    }
    Ok(())
}

/// Shrinking steps of a wire target: each failing step starts a fresh daemon.
const SHRINK_STEPS: u32 = 48;

/// Run one case on the rig (made by `start` if there is none): a panic recorded
/// on the rig's threads during the case fails it with the panic's message, and
/// a failed case drops the rig so the next case (a shrinking step) starts from
/// a fresh one.
fn guarded<R: Rig>(
    rig: &RefCell<Option<R>>,
    start: fn() -> R,
    case: impl FnOnce(&mut R) -> Result<(), String>,
) -> Result<(), String> {
    let before = panic_count();
    let mut slot = rig.borrow_mut();
    let r = slot.get_or_insert_with(start);
    let threads = r.threads().to_string();
    let mut result = case(r);
    let panics = panics_since(before, &threads);
    if !panics.is_empty() {
        result = Err(panics.join("; "));
    }
    if result.is_err() {
        *slot = None;
    }
    result
}

/// A daemon under test, whose runtime's threads are named `threads()…`.
trait Rig {
    fn threads(&self) -> &str;
}

/// The thread names' prefix of a new rig of `kind`: its own, so that a panic
/// in another rig (of a test running at the same time, or one shutting down)
/// is not taken for this one's.
fn rig_threads(kind: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{kind}{n}-")
}

fn runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a runtime")
}

// ---------------------------------------------------------------- the slave side

struct SlaveRig {
    rt: Runtime,
    threads: String,
    _dir: tempfile::TempDir,
    listener: TcpListener,
    ws: Option<ServerSocket>,
    control: Option<autobot::daemon::ControlHandle>,
    slave: Option<JoinHandle<Result<(), autobot::slave::SlaveError>>>,
    next_seq: i64,
}

const SLAVE_PASSWORD: &str = "fuzz-pw";

impl Rig for SlaveRig {
    fn threads(&self) -> &str {
        &self.threads
    }
}

impl SlaveRig {
    fn start() -> SlaveRig {
        let threads = rig_threads("fuzz-slave");
        let rt = runtime(&threads);
        let dir = tempfile::tempdir().expect("a temp dir");
        let basedir = std::fs::canonicalize(dir.path()).expect("canonical temp dir");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("a port");
        let port = listener.local_addr().expect("its address").port();
        std::fs::write(
            basedir.join("slave.ini"),
            format!(
                "[slave]\nmaster = 127.0.0.1:{port}\nname = fz\npassword = {SLAVE_PASSWORD}\nkeepalive = 600\n"
            ),
        )
        .expect("slave.ini");
        std::fs::create_dir_all(basedir.join("build/sub")).expect("build dir");
        std::fs::write(basedir.join("build/f.txt"), "fuzz\n").expect("a file");
        let mut rig = SlaveRig {
            rt,
            threads,
            _dir: dir,
            listener,
            ws: None,
            control: None,
            slave: None,
            next_seq: 1 << 40,
        };
        let (control, handle) = autobot::daemon::control();
        let base = basedir.clone();
        rig.slave = Some(
            rig.rt
                .spawn(async move { autobot::slave::run(&base, control).await }),
        );
        rig.control = Some(handle);
        rig.accept().expect("the slave connects");
        rig
    }

    fn accept(&mut self) -> Result<(), String> {
        let ws = self.rt.block_on(async {
            let (stream, _) = tokio::time::timeout(ANSWER_WAIT, self.listener.accept())
                .await
                .map_err(|_| "the slave did not connect".to_string())?
                .map_err(|e| e.to_string())?;
            tokio_tungstenite::accept_async_with_config(
                stream,
                Some(autobot::protocol::websocket_config()),
            )
            .await
            .map_err(|e| e.to_string())
        })?;
        self.ws = Some(ws);
        Ok(())
    }

    fn case(&mut self, frames: &[Frame]) -> Result<(), String> {
        if let Some(t) = &self.slave {
            if t.is_finished() {
                return Err("the slave daemon ended (a panic?)".into());
            }
        }
        self.next_seq += 1;
        let ka = self.next_seq;
        let mut seen = Seen::default();
        let ws = self.ws.as_mut().ok_or("no connection")?;
        self.rt.block_on(exchange(ws, frames, ka, &mut seen))?;
        if let Some(why) = seen.closed {
            return Err(format!("the slave dropped the connection ({why})"));
        }
        check_answers(frames, ka, &seen)
    }
}

impl SlaveRig {
    /// Send `frames`, then wait (answering the slave) until command `id` completes.
    fn until_complete(&mut self, frames: &[Frame], id: &str) -> Result<(), String> {
        self.case(frames)?;
        let ws = self.ws.as_mut().ok_or("no connection")?;
        let deadline = Instant::now() + ANSWER_WAIT;
        let mut seen = Seen::default();
        while !seen.completed.iter().any(|c| c == id) {
            if Instant::now() > deadline {
                return Err(format!(
                    "command {id} did not complete within {ANSWER_WAIT:?}"
                ));
            }
            self.next_seq += 1;
            let ka = self.next_seq;
            self.rt.block_on(exchange(ws, &[], ka, &mut seen))?;
            if let Some(why) = &seen.closed {
                return Err(format!("the slave dropped the connection ({why})"));
            }
        }
        Ok(())
    }
}

/// One fixed case against a fresh slave (a regression test of a fuzz finding):
/// the frames, then until command `complete_id` (if any) completes; any panic
/// anywhere fails it.
pub fn slave_fixed(frames: Vec<Frame>, complete_id: Option<&str>) -> Result<(), String> {
    let rig = RefCell::new(None);
    guarded(&rig, SlaveRig::start, |r| match complete_id {
        Some(id) => r.until_complete(&frames, id),
        None => r.case(&frames),
    })
}

/// One fixed case against a fresh master with its four commands running.
pub fn master_fixed(frames: Vec<SlaveFrame>) -> Result<(), String> {
    let rig = RefCell::new(None);
    guarded(&rig, MasterRig::start, |r| r.case(&frames))
}

impl Drop for SlaveRig {
    fn drop(&mut self) {
        if let Some(c) = &self.control {
            let _ = c.shutdown.send(true);
        }
        if let Some(ws) = self.ws.take() {
            self.rt.block_on(async move {
                let mut ws = ws;
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let _ = ws.close(None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            });
        }
        if let Some(t) = self.slave.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(20), t).await });
        }
    }
}

/// Frames a master could send, sent to a real slave: every request is answered
/// once and the slave keeps the connection.
pub fn slave_session(cases: u64) -> Report {
    let target = Target {
        name: "protocol_slave_reads",
        limit: CASE_LIMIT,
        memory: MemoryBound {
            base: usize::MAX / 4,
            per_input_byte: 0,
        },
    };
    let rig = RefCell::new(Some(SlaveRig::start()));
    fuzz_with(
        &target,
        cases,
        SHRINK_STEPS,
        frames_of(master_request()),
        |_| 0,
        |frames| guarded(&rig, SlaveRig::start, |r| r.case(frames)),
    )
}

// ---------------------------------------------------------------- the master side

/// Which of the fake slave's running commands a frame is about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    Shell,
    Upload,
    UploadDir,
    Download,
    Unknown,
}

/// A frame the fake slave sends, before the command ids are known.
#[derive(Debug, Clone)]
pub enum SlaveFrame {
    /// `op` about the command in `slot`, with these fields (`command_id` added).
    About(Slot, i64, &'static str, Vec<(&'static str, Value)>),
    Raw(Frame),
    /// An `About` frame, encoded and mutated.
    Mutated(Box<SlaveFrame>, Vec<super::gen::Mutation>),
}

fn update_pairs() -> BoxedStrategy<Value> {
    let pair = (
        prop::sample::select(vec![
            "stdout",
            "stderr",
            "header",
            "log",
            "rc",
            "elapsed",
            "stat",
            "files",
            "failure_reason",
            "got_revision",
        ]),
        prop_oneof![
            weird_string().prop_map(Value::from),
            number(),
            (weird_string(), vec(edge_i64(), 0..3), vec(edge_f64(), 0..3)).prop_map(
                |(t, nl, times)| {
                    Value::Array(vec![
                        Value::from(t),
                        Value::Array(nl.into_iter().map(Value::from).collect()),
                        Value::Array(times.into_iter().map(Value::F64).collect()),
                    ])
                }
            ),
            value(2),
        ],
    )
        .prop_map(|(k, v)| Value::Array(vec![Value::from(k), v]));
    prop_oneof![
        6 => vec(pair, 0..4).prop_map(Value::Array),
        1 => value(2),
    ]
    .boxed()
}

fn slave_request() -> BoxedStrategy<SlaveFrame> {
    let slot = prop::sample::select(vec![
        Slot::Shell,
        Slot::Upload,
        Slot::UploadDir,
        Slot::Download,
        Slot::Unknown,
    ]);
    let body = prop_oneof![
        6 => update_pairs().prop_map(|a| ("update", vec![("args", a)])),
        2 => prop_oneof![Just(Value::Nil), weird_string().prop_map(Value::from), value(1)]
            .prop_map(|a| ("complete", vec![("args", a)])),
        3 => prop_oneof![vec(any::<u8>(), 0..600).prop_map(Value::Binary), weird_string().prop_map(Value::from), value(1)]
            .prop_map(|a| ("update_upload_file_write", vec![("args", a)])),
        2 => vec(any::<u8>(), 0..1200).prop_map(|b| ("update_upload_directory_write", vec![("args", Value::Binary(b))])),
        1 => Just(("update_upload_file_close", vec![])),
        2 => (number(), number()).prop_map(|(a, m)| ("update_upload_file_utime", vec![("access_time", a), ("modified_time", m)])),
        1 => Just(("update_upload_directory_unpack", vec![])),
        3 => number().prop_map(|n| ("update_read_file", vec![("length", n)])),
        1 => Just(("update_read_file_close", vec![])),
        1 => Just(("keepalive", vec![])),
        1 => Just(("shutdown", vec![])),
        1 => Just(("no_such_op", vec![])),
    ];
    let about = (slot, edge_i64(), body)
        .prop_map(|(s, seq, (op, f))| SlaveFrame::About(s, seq, op, f))
        .boxed();
    prop_oneof![
        90 => about.clone(),
        // Rare: a frame that is not msgpack ends the connection by design (and
        // the pure decoder target covers such frames at full speed).
        2 => (about, vec(mutation(), 1..3)).prop_map(|(a, m)| SlaveFrame::Mutated(Box::new(a), m)),
        5 => (edge_i64(), value(2), any::<bool>()).prop_map(|(seq, result, exc)| {
            SlaveFrame::Raw(Frame::Msg(Message::Response { seq, result, is_exception: exc }))
        }),
        5 => weird_string().prop_map(|t| SlaveFrame::Raw(Frame::Text(t))),
        1 => prop_oneof![header_bomb(), vec(any::<u8>(), 0..32)].prop_map(|b| SlaveFrame::Raw(Frame::Bytes(b))),
    ]
    .boxed()
}

struct MasterRig {
    rt: Runtime,
    threads: String,
    dir: tempfile::TempDir,
    master: Option<Master>,
    ws: Option<Socket>,
    /// Commands running on the fake slave: slot → (command id, the master's task).
    running: HashMap<u8, (String, JoinHandle<()>)>,
    next_seq: i64,
    reconnects: u64,
}

fn slot_key(s: Slot) -> u8 {
    s as u8
}

impl Rig for MasterRig {
    fn threads(&self) -> &str {
        &self.threads
    }
}

impl MasterRig {
    fn start() -> MasterRig {
        let threads = rig_threads("fuzz-master");
        let rt = runtime(&threads);
        let dir = tempfile::tempdir().expect("a temp dir");
        crate::support::write_master_ini(
            dir.path(),
            format!(
                "[:master:]\nslaveport = 9010\nhtmlport = 8010\n\n[fac]\ntype = shell\nstep.one = true\n\n[slave:fz]\npassword = {SLAVE_PASSWORD}\n"
            ),
        );
        std::fs::create_dir_all(dir.path().join("up")).expect("upload dir");
        let master = rt
            .block_on(Master::start_with(
                dir.path(),
                MasterOptions {
                    keepalive_interval: Some(Duration::from_secs(600)),
                    slaveport: Some(0),
                    htmlport: Some(0),
                    publichtmlport: None,
                },
            ))
            .expect("the master starts");
        let mut rig = MasterRig {
            rt,
            threads,
            dir,
            master: Some(master),
            ws: None,
            running: HashMap::new(),
            next_seq: 1 << 40,
            reconnects: 0,
        };
        rig.connect().expect("the fake slave connects");
        rig
    }

    fn master(&self) -> &Master {
        self.master.as_ref().expect("the master runs")
    }

    fn connect(&mut self) -> Result<(), String> {
        let port = self.master().slaveport();
        self.running.clear();
        let mut ws = self.rt.block_on(async {
            let mut req = format!("ws://127.0.0.1:{port}/")
                .into_client_request()
                .map_err(|e| e.to_string())?;
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("fz:{SLAVE_PASSWORD}"));
            req.headers_mut().insert(
                "authorization",
                format!("Basic {auth}")
                    .parse()
                    .map_err(|_| "header".to_string())?,
            );
            let deadline = Instant::now() + ANSWER_WAIT;
            loop {
                // The master may still hold the previous connection's claim.
                match tokio_tungstenite::connect_async_with_config(
                    req.clone(),
                    Some(autobot::protocol::websocket_config()),
                    false,
                )
                .await
                {
                    Ok((ws, _)) => return Ok::<_, String>(ws),
                    Err(e) if Instant::now() > deadline => return Err(format!("connect: {e}")),
                    Err(_) => tokio::task::yield_now().await,
                }
            }
        })?;
        // Serve the set-up until the master lists the slave as connected.
        let registry = self.master().registry().clone();
        self.rt.block_on(async {
            let deadline = Instant::now() + ANSWER_WAIT;
            let mut seen = Seen::default();
            while registry.get("fz").is_none() {
                if Instant::now() > deadline {
                    return Err("the master did not finish setting the fake slave up".to_string());
                }
                // A keepalive of ours makes the pump return after the master's
                // requests so far were answered.
                let seq = -99;
                let _ = ws
                    .send(Ws::binary(
                        Message::request(seq, "keepalive", vec![]).encode(),
                    ))
                    .await;
                pump(&mut ws, seq, &mut seen).await?;
                if let Some(why) = seen.closed {
                    return Err(format!("set-up connection closed: {why}"));
                }
            }
            Ok(())
        })?;
        self.ws = Some(ws);
        self.reconnects += 1;
        Ok(())
    }

    /// Have the master run one command of each kind on the fake slave, so frames
    /// about them reach live command slots and transfers.
    fn ensure_running(&mut self) -> Result<(), String> {
        self.running.retain(|_, (_, task)| !task.is_finished());
        let Some(handle) = self.master().registry().get("fz") else {
            return Err("the fake slave is not registered".into());
        };
        let up = self.dir.path().join("up");
        let mut starting = Vec::new();
        for slot in [Slot::Shell, Slot::Upload, Slot::UploadDir, Slot::Download] {
            if self.running.contains_key(&slot_key(slot)) {
                continue;
            }
            let h = handle.clone();
            let up = up.clone();
            let n = self.next_seq;
            let task = self.rt.spawn(async move {
                let _ = match slot {
                    Slot::Shell => h
                        .start_command("shell", map(vec![("command", strs(&["true"]))]))
                        .await
                        .map(|_| ()),
                    Slot::Upload => h
                        .upload_file("f.txt", &up.join(format!("f{n}")), Some(1 << 20))
                        .await
                        .map(|_| ()),
                    Slot::UploadDir => h
                        .upload_directory("d", &up.join(format!("d{n}")), Some(1 << 20))
                        .await
                        .map(|_| ()),
                    _ => h
                        .download_file(
                            DownloadSource::Bytes(vec![7u8; 100_000]),
                            "g.txt",
                            Some(0o644),
                        )
                        .await
                        .map(|_| ()),
                };
            });
            starting.push((slot, task));
        }
        if starting.is_empty() {
            return Ok(());
        }
        // Answer the start_commands; learn their ids.
        let ws = self.ws.as_mut().ok_or("no connection")?;
        let mut seen = Seen::default();
        self.next_seq += 1;
        let seq = self.next_seq;
        self.rt.block_on(async {
            let deadline = Instant::now() + ANSWER_WAIT;
            while seen.started.len() < starting.len() {
                if Instant::now() > deadline {
                    return Err("the master did not start its commands".to_string());
                }
                let _ = ws
                    .send(Ws::binary(
                        Message::request(seq, "keepalive", vec![]).encode(),
                    ))
                    .await;
                pump(ws, seq, &mut seen).await?;
                if seen.closed.is_some() {
                    return Err("connection closed while starting commands".into());
                }
            }
            Ok(())
        })?;
        for (slot, task) in starting {
            let name = match slot {
                Slot::Shell => "shell",
                Slot::Upload => "upload_file",
                Slot::UploadDir => "upload_directory",
                _ => "download_file",
            };
            if let Some((_, id)) = seen.started.iter().find(|(n, _)| n == name) {
                self.running.insert(slot_key(slot), (id.clone(), task));
            }
        }
        Ok(())
    }

    fn realise(&self, f: &SlaveFrame) -> Frame {
        match f {
            SlaveFrame::About(slot, seq, op, fields) => {
                let id = self
                    .running
                    .get(&slot_key(*slot))
                    .map(|(id, _)| id.clone())
                    .unwrap_or_else(|| "no-such-command".into());
                let mut all = vec![("command_id", Value::from(id))];
                all.extend(fields.iter().cloned());
                Frame::Msg(Message::request(*seq, op, all))
            }
            SlaveFrame::Raw(fr) => fr.clone(),
            SlaveFrame::Mutated(inner, muts) => {
                let bytes = self.realise(inner).bytes().unwrap_or_default();
                Frame::Bytes(mutate(bytes, muts))
            }
        }
    }

    fn case(&mut self, input: &[SlaveFrame]) -> Result<(), String> {
        if self.ws.is_none() {
            self.connect()?;
        }
        self.ensure_running()?;
        let frames: Vec<Frame> = input.iter().map(|f| self.realise(f)).collect();
        // The first frame that is not msgpack ends the connection, by design.
        let cut = frames
            .iter()
            .position(|f| f.bytes().is_some_and(|b| Message::decode(&b).is_err()));
        let sent = match cut {
            Some(i) => &frames[..=i],
            None => &frames[..],
        };
        self.next_seq += 1;
        let ka = self.next_seq;
        let mut seen = Seen::default();
        let ws = self.ws.as_mut().ok_or("no connection")?;
        self.rt.block_on(exchange(ws, sent, ka, &mut seen))?;
        match (cut, &seen.closed) {
            (None, None) => check_answers(sent, ka, &seen),
            (None, Some(why)) => Err(format!("the master dropped the connection ({why})")),
            (Some(_), Some(why)) if why.starts_with("protocol error") || why.is_empty() => {
                self.ws = None;
                self.connect()
            }
            (Some(_), Some(why)) => Err(format!("bad frame answered with close {why:?}")),
            (Some(i), None) => Err(format!(
                "the master kept a connection whose frame {i} is not msgpack"
            )),
        }
    }
}

impl Drop for MasterRig {
    fn drop(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
            });
        }
        if let Some(m) = self.master.take() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(10), m.shutdown()).await;
            });
        }
    }
}

/// Frames a slave could send, sent to a real master while it runs a command, an
/// upload of a file, of a directory and a download on that slave.
pub fn master_session(cases: u64) -> Report {
    let target = Target {
        name: "protocol_master_reads_wire",
        limit: CASE_LIMIT,
        memory: MemoryBound {
            base: usize::MAX / 4,
            per_input_byte: 0,
        },
    };
    let rig = RefCell::new(Some(MasterRig::start()));
    let report = fuzz_with(
        &target,
        cases,
        SHRINK_STEPS,
        vec(slave_request(), 1..6),
        |_| 0,
        |frames| guarded(&rig, MasterRig::start, |r| r.case(frames)),
    );
    if let Some(r) = rig.borrow().as_ref() {
        println!("({} connections of the fake slave)", r.reconnects);
    }
    report
}
