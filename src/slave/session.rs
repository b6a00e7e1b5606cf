//! One connection to the master: read its requests, answer each exactly once, run
//! the commands it starts, and end cleanly.
//!
//! The reader runs here; a writer task drains the [`Link`]'s lanes into the socket.
//! Requests are answered as `buildbot_worker/msgpack.py` answers them (an unknown op
//! is an exception, an interrupt for a finished command is fine). Every started
//! command runs in its own task, tracked by `command_id` so it can be interrupted.
//! When the connection ends, whatever still runs is interrupted and its process group
//! killed: nobody would receive its result.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rmpv::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::args::{display, Args};
use super::commands;
use super::info;
use super::link::{self, Link};
use super::output::NewlineRule;
use super::updates::Updates;
use super::SlaveState;
use crate::protocol::{value_str, Message};

/// How long interrupted commands get to finish and report when the slave stops.
const DRAIN: Duration = Duration::from_secs(15);
/// How long queued frames get to reach the master when closing.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long killed commands get to go away after the connection is gone.
const REAP_WAIT: Duration = Duration::from_secs(10);

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The daemon was told to stop.
    Shutdown,
    /// The master sent `shutdown`.
    MasterShutdown,
    /// The connection broke; reconnect.
    Lost(String),
}

struct Session<'a> {
    state: &'a Arc<SlaveState>,
    link: Link,
    commands: HashMap<String, watch::Sender<Option<String>>>,
    tasks: JoinSet<String>,
    /// Set once stopping: until when commands may finish, and how it ends.
    draining: Option<(Instant, End)>,
}

/// Serve one established connection until it ends.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    state: &Arc<SlaveState>,
    shutdown: &mut watch::Receiver<bool>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (link, lanes) = Link::new();
    let mut writer = tokio::spawn(link::writer(sink, lanes));
    let mut s = Session {
        state,
        link: link.clone(),
        commands: HashMap::new(),
        tasks: JoinSet::new(),
        draining: None,
    };
    let keepalive = Duration::from_secs(state.keepalive.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    let mut last_seen = Instant::now();
    if *shutdown.borrow() {
        s.drain(End::Shutdown);
    }
    let end = loop {
        if let Some((deadline, _)) = &s.draining {
            if s.tasks.is_empty() || Instant::now() >= *deadline {
                break s.draining.take().map(|(_, e)| e).unwrap_or(End::Shutdown);
            }
        }
        let drain_deadline = s.draining.as_ref().map(|(d, _)| *d);
        tokio::select! {
            r = shutdown.changed(), if s.draining.is_none() => {
                if r.is_err() || *shutdown.borrow() {
                    tracing::info!("slave {}: stopping", state.name);
                    s.drain(End::Shutdown);
                }
            }
            msg = stream.next() => {
                last_seen = Instant::now();
                // Memory the work used goes back once the master is quiet.
                crate::memory::poke();
                match msg {
                    None => break End::Lost("connection closed".into()),
                    Some(Err(e)) => break End::Lost(format!("connection error: {e}")),
                    Some(Ok(WsMessage::Binary(bytes))) => s.frame(&bytes),
                    Some(Ok(WsMessage::Text(_))) => {
                        tracing::warn!("slave {}: ignoring a text frame from the master", state.name);
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        let why = frame
                            .map(|f| format!(" ({}: {})", u16::from(f.code), f.reason))
                            .unwrap_or_default();
                        break End::Lost(format!("closed by master{why}"));
                    }
                    Some(Ok(_)) => {}
                }
            }
            Some(done) = s.tasks.join_next(), if !s.tasks.is_empty() => {
                crate::memory::poke();
                if let Ok(id) = done {
                    s.commands.remove(&id);
                }
            }
            _ = ticker.tick(), if state.keepalive > 0 => {
                if last_seen.elapsed() > 2 * keepalive {
                    break End::Lost(format!(
                        "nothing heard from the master for {} s",
                        last_seen.elapsed().as_secs()
                    ));
                }
                s.link.ping();
            }
            _ = sleep_opt(drain_deadline) => {}
        }
    };

    // Say goodbye properly when we are the ones leaving.
    if matches!(end, End::Shutdown | End::MasterShutdown) {
        let _ = tokio::time::timeout(CLOSE_WAIT, s.link.close()).await;
        let _ = tokio::time::timeout(CLOSE_WAIT, &mut writer).await;
        // Finish the closing handshake: read until the master's close comes back.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(m)) = stream.next().await {
                if let WsMessage::Close(_) = m {
                    break;
                }
            }
        })
        .await;
    }
    // Whatever still runs cannot report any more: interrupt it, fail its link.
    for tx in s.commands.values() {
        let _ = tx.send(Some("connection to the master closed".into()));
    }
    s.link.fail_all();
    writer.abort();
    drop(s.link);
    let reaped = tokio::time::timeout(REAP_WAIT, async {
        while s.tasks.join_next().await.is_some() {}
    })
    .await;
    if reaped.is_err() {
        tracing::warn!(
            "slave {}: {} command(s) did not stop in time",
            state.name,
            s.tasks.len()
        );
        s.tasks.detach_all();
    }
    end
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

impl Session<'_> {
    /// Stop taking work, interrupt what runs, and end once it has finished.
    fn drain(&mut self, end: End) {
        for tx in self.commands.values() {
            let _ = tx.send(Some("slave shutting down".into()));
        }
        if self.draining.is_none() {
            self.draining = Some((Instant::now() + DRAIN, end));
        }
    }

    fn frame(&mut self, bytes: &[u8]) {
        match Message::decode(bytes) {
            Err(e) => tracing::warn!("slave {}: invalid frame from master: {e}", self.state.name),
            Ok(Message::Response {
                seq,
                result,
                is_exception,
            }) => self.link.resolve(seq, result, is_exception),
            Ok(Message::Request { seq, op, fields }) => {
                let answer = self.request(&op, &fields);
                self.link.respond(match answer {
                    Ok(v) => Message::ok(seq, v),
                    Err(e) => Message::error(seq, e),
                });
            }
        }
    }

    /// Handle one master request; the result or exception text of its response.
    fn request(&mut self, op: &str, fields: &[(String, Value)]) -> Result<Value, String> {
        let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let need = |k: &str| {
            field(k).ok_or_else(|| format!("message did not contain obligatory \"{k}\" key"))
        };
        match op {
            "print" => {
                let m = need("message")?;
                tracing::info!(
                    "slave {}: message from master: {}",
                    self.state.name,
                    display(m)
                );
                Ok(Value::Nil)
            }
            "keepalive" => Ok(Value::Nil),
            "get_worker_info" => Ok(info::worker_info(&self.state.env.jail)),
            "set_worker_settings" => {
                self.settings(need("args")?)?;
                Ok(Value::Nil)
            }
            "start_command" => {
                let id = need("command_id")?;
                let id = value_str(id)
                    .map(str::to_string)
                    .unwrap_or_else(|| id.to_string());
                let name = value_str(need("command_name")?)
                    .ok_or("command_name must be a string")?
                    .to_string();
                let args = need("args")?;
                if self.draining.is_some() {
                    return Err("the slave is shutting down".into());
                }
                if self.commands.contains_key(&id) {
                    return Err(format!("command {id} is already running"));
                }
                let prepared = commands::prepare(&name, args, &self.state.env).map_err(|e| {
                    tracing::warn!("slave {}: (command {id}) refused: {e}", self.state.name);
                    format!("(command {id}): {e}")
                })?;
                tracing::info!("slave {}: (command {id}) starting {name}", self.state.name);
                let (tx, rx) = watch::channel(None);
                self.commands.insert(id.clone(), tx);
                let settings = self
                    .state
                    .settings
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or_default();
                let up = Updates::new(self.link.clone(), id.clone(), settings);
                let env = self.state.env.clone();
                self.tasks.spawn(async move {
                    commands::execute(prepared, up, rx, env).await;
                    id
                });
                Ok(Value::Nil)
            }
            "interrupt_command" => {
                let id = need("command_id")?;
                let id = value_str(id)
                    .map(str::to_string)
                    .unwrap_or_else(|| id.to_string());
                let why = field("why").map(display).unwrap_or_default();
                match self.commands.get(&id) {
                    Some(tx) => {
                        tracing::info!(
                            "slave {}: (command {id}) asked to interrupt: {why}",
                            self.state.name
                        );
                        let _ = tx.send(Some(why));
                    }
                    None => tracing::info!(
                        "slave {}: asked to interrupt command {id}, but it is not running",
                        self.state.name
                    ),
                }
                Ok(Value::Nil)
            }
            "shutdown" => {
                tracing::info!(
                    "slave {}: shutting down on request from master",
                    self.state.name
                );
                self.drain(End::MasterShutdown);
                Ok(Value::Nil)
            }
            other => Err(format!("Command {other} does not exist.")),
        }
    }

    fn settings(&mut self, args: &Value) -> Result<(), String> {
        let a = Args(args);
        for key in [
            "buffer_size",
            "buffer_timeout",
            "newline_re",
            "max_line_length",
        ] {
            if crate::protocol::map_get(args, key).is_none() {
                return Err("message did not contain obligatory settings for worker".into());
            }
        }
        let size = a.num("buffer_size")?.unwrap_or(65536.0);
        let timeout = a.num("buffer_timeout")?.unwrap_or(5.0);
        let max_line = a.num("max_line_length")?.unwrap_or(4096.0);
        let (rule, warning) = NewlineRule::from_pattern(a.str("newline_re")?);
        // autobot's own extension: its master keeps output as text only.
        let text_output = crate::protocol::map_get(args, "output_format")
            .and_then(value_str)
            .is_some_and(|f| f == "text");
        if let Some(w) = warning {
            tracing::warn!("slave {}: {w}", self.state.name);
        }
        if let Ok(mut s) = self.state.settings.lock() {
            s.buffer_size = size.clamp(1.0, 16.0 * 1024.0 * 1024.0) as usize;
            // NaN (which clamp passes through) counts as no wait.
            let timeout = if timeout.is_nan() { 0.0 } else { timeout };
            s.buffer_timeout = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
            s.max_line_length = max_line.clamp(2.0, 1e9) as usize;
            s.newline = rule;
            s.text_output = text_output;
        }
        Ok(())
    }
}
