//! Remote commands: one protocol command (`shell`, `mkdir`, `upload_file`, …)
//! running on a slave, seen from the master.
//!
//! [`SlaveHandle::start_command`](super::SlaveHandle::start_command) returns a
//! [`RemoteCommand`]; its [`next`](RemoteCommand::next) yields the slave's `update`s
//! as typed [`Update`]s in arrival order and finally the `complete` (or the loss of
//! the connection). [`RemoteCommand::wait`] collects everything into a
//! [`CommandOutcome`] for callers that do not stream.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use rmpv::Value;

use super::connection::Conn;
use crate::protocol::{map_get, value_str};

/// Why a command could not be run or did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("slave {slave} is not connected")]
    NotConnected { slave: String },
    #[error("slave {slave} refused {op}: {message}")]
    Refused {
        slave: String,
        op: String,
        message: String,
    },
    #[error("connection to slave {slave} lost: {reason}")]
    Lost { slave: String, reason: String },
    #[error("{command} on slave {slave} failed: {message}")]
    Failed {
        slave: String,
        command: String,
        message: String,
    },
    #[error("{0}")]
    Local(String),
}

/// One `update` entry from the slave, typed where the protocol defines the key.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Output text (already split into whole lines by the slave).
    Stdout(String),
    Stderr(String),
    /// How the command ran: argv, workdir, errors of the slave itself.
    Header(String),
    /// A chunk of one of the command's `logfiles`.
    Log {
        name: String,
        text: String,
    },
    /// The exit code; 0 is success.
    Rc(i64),
    /// Seconds the command ran.
    Elapsed(f64),
    /// `stat`'s 10-tuple (mode, ino, dev, nlink, uid, gid, size, atime, mtime, ctime).
    Stat(Vec<i64>),
    /// `glob` matches or `listdir` entries.
    Files(Vec<String>),
    /// `timeout`, `timeout_without_output` or `max_lines_failure`.
    FailureReason(String),
    /// Any other key, passed through for the build engine (e.g. `got_revision`).
    Other(String, Value),
}

impl Update {
    /// Decode one `[key, value]` pair of an `update` message's `args`.
    pub fn from_pair(key: &str, value: Value) -> Update {
        match key {
            "stdout" => Update::Stdout(output_text(value)),
            "stderr" => Update::Stderr(output_text(value)),
            "header" => Update::Header(output_text(value)),
            "log" => match value {
                Value::Array(mut parts) if parts.len() == 2 => {
                    let text = output_text(parts.pop().unwrap_or(Value::Nil));
                    Update::Log {
                        name: value_str(&parts[0]).unwrap_or_default().to_string(),
                        text,
                    }
                }
                value => Update::Other(key.to_string(), value),
            },
            "rc" => match value.as_i64() {
                Some(rc) => Update::Rc(rc),
                None => Update::Other(key.to_string(), value),
            },
            "elapsed" => match value.as_f64().or_else(|| value.as_i64().map(|i| i as f64)) {
                Some(s) => Update::Elapsed(s),
                None => Update::Other(key.to_string(), value),
            },
            "stat" => match &value {
                Value::Array(items) => Update::Stat(
                    items
                        .iter()
                        .map(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
                        .map(|v| v.unwrap_or(0))
                        .collect(),
                ),
                _ => Update::Other(key.to_string(), value),
            },
            "files" | "file" => match &value {
                Value::Array(items) => Update::Files(
                    items
                        .iter()
                        .filter_map(|v| value_str(v).map(str::to_string))
                        .collect(),
                ),
                _ => Update::Other(key.to_string(), value),
            },
            "failure_reason" => match value_str(&value) {
                Some(s) => Update::FailureReason(s.to_string()),
                None => Update::Other(key.to_string(), value),
            },
            _ => Update::Other(key.to_string(), value),
        }
    }
}

/// The text of an output value: either a plain string or the protocol's
/// `[text, newline_indexes, line_times]` triple. The text is moved, not copied:
/// output is most of what crosses the link.
fn output_text(v: Value) -> String {
    let text = match v {
        Value::Array(parts) => parts.into_iter().next().unwrap_or(Value::Nil),
        other => other,
    };
    match text {
        Value::String(s) => s.into_str().unwrap_or_default(),
        Value::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    }
}

impl Update {
    /// Bytes this update holds, roughly (what it costs queued).
    pub fn weight(&self) -> usize {
        match self {
            Update::Stdout(s) | Update::Stderr(s) | Update::Header(s) => s.len(),
            Update::Log { name, text } => name.len() + text.len(),
            Update::Stat(v) => v.len() * 8,
            Update::Files(f) => f.iter().map(|n| n.len() + 8).sum(),
            Update::FailureReason(r) => r.len(),
            Update::Other(k, v) => k.len() + value_weight(v),
            Update::Rc(_) | Update::Elapsed(_) => 16,
        }
    }
}

/// Bytes a msgpack value holds, roughly.
fn value_weight(v: &Value) -> usize {
    match v {
        Value::String(s) => s.as_bytes().len() + 16,
        Value::Binary(b) => b.len() + 16,
        Value::Array(items) => items.iter().map(value_weight).sum::<usize>() + 16,
        Value::Map(entries) => {
            entries
                .iter()
                .map(|(k, v)| value_weight(k) + value_weight(v))
                .sum::<usize>()
                + 16
        }
        Value::Ext(_, data) => data.len() + 16,
        _ => 16,
    }
}

/// What a [`RemoteCommand`] reports, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandEvent {
    Update(Update),
    /// The slave said the command finished; `Some(message)` when it failed
    /// (an exception on the slave, not a non-zero rc).
    Complete(Option<String>),
    /// The connection ended before `complete`; the command's fate is unknown.
    Lost(String),
}

impl CommandEvent {
    /// Bytes this event holds, roughly (what it costs queued).
    pub fn weight(&self) -> usize {
        match self {
            CommandEvent::Update(u) => u.weight(),
            CommandEvent::Complete(f) => f.as_ref().map_or(1, String::len),
            CommandEvent::Lost(r) => r.len(),
        }
    }
}

/// A command started on a slave. Dropping it does not stop the command; call
/// [`interrupt`](RemoteCommand::interrupt) for that.
pub struct RemoteCommand {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) slave: String,
    /// Events with their share of the queue's bytes, given back when taken.
    pub(crate) events: super::connection::EventRx,
    pub(crate) conn: Weak<Conn>,
    pub(crate) done: bool,
}

impl RemoteCommand {
    /// The protocol `command_id`, unique on this connection.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next update, then the completion; `None` after that.
    pub async fn next(&mut self) -> Option<CommandEvent> {
        if self.done {
            return None;
        }
        let ev = match self.events.recv().await {
            Some((ev, _room)) => ev,
            None => CommandEvent::Lost(
                self.conn
                    .upgrade()
                    .and_then(|c| c.closed_reason())
                    .unwrap_or_else(|| "connection closed".into()),
            ),
        };
        if matches!(ev, CommandEvent::Complete(_) | CommandEvent::Lost(_)) {
            self.done = true;
        }
        Some(ev)
    }

    /// Ask the slave to stop the command (it still sends `rc` and `complete`).
    pub async fn interrupt(&self, why: &str) -> Result<(), CommandError> {
        self.interrupter().interrupt(why).await
    }

    /// A cloneable handle that can interrupt this command from another task while
    /// this one reads its output.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter {
            id: self.id.clone(),
            slave: self.slave.clone(),
            conn: self.conn.clone(),
        }
    }

    /// Read every event and return them collected.
    pub async fn wait(mut self) -> Result<CommandOutcome, CommandError> {
        let mut out = CommandOutcome::default();
        while let Some(ev) = self.next().await {
            match ev {
                CommandEvent::Update(u) => out.add(u),
                CommandEvent::Complete(failure) => {
                    out.failure = failure;
                    return Ok(out);
                }
                CommandEvent::Lost(reason) => {
                    return Err(CommandError::Lost {
                        slave: self.slave.clone(),
                        reason,
                    })
                }
            }
        }
        Err(CommandError::Lost {
            slave: self.slave.clone(),
            reason: "command ended without completion".into(),
        })
    }

    /// The protocol command name (`shell`, `mkdir`, …).
    pub fn command_name(&self) -> &str {
        &self.name
    }
}

/// Interrupts one remote command; see [`RemoteCommand::interrupter`].
#[derive(Clone)]
pub struct Interrupter {
    id: String,
    slave: String,
    conn: Weak<Conn>,
}

impl Interrupter {
    /// Send `interrupt_command` with the reason `why`.
    pub async fn interrupt(&self, why: &str) -> Result<(), CommandError> {
        let conn: Arc<Conn> = self.conn.upgrade().ok_or(CommandError::NotConnected {
            slave: self.slave.clone(),
        })?;
        conn.request(
            "interrupt_command",
            vec![
                ("command_id", Value::from(self.id.as_str())),
                ("why", Value::from(why)),
            ],
        )
        .await
        .map(|_| ())
    }
}

/// Everything a command reported, collected by [`RemoteCommand::wait`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandOutcome {
    pub rc: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub header: String,
    /// Text of each named logfile.
    pub logs: BTreeMap<String, String>,
    pub files: Option<Vec<String>>,
    pub stat: Option<Vec<i64>>,
    pub elapsed: Option<f64>,
    pub failure_reason: Option<String>,
    /// The `complete` message's failure text, if the slave raised.
    pub failure: Option<String>,
    pub other: Vec<(String, Value)>,
}

impl CommandOutcome {
    fn add(&mut self, u: Update) {
        match u {
            Update::Stdout(s) => self.stdout.push_str(&s),
            Update::Stderr(s) => self.stderr.push_str(&s),
            Update::Header(s) => self.header.push_str(&s),
            Update::Log { name, text } => self.logs.entry(name).or_default().push_str(&text),
            Update::Rc(rc) => self.rc = Some(rc),
            Update::Elapsed(e) => self.elapsed = Some(e),
            Update::Stat(s) => self.stat = Some(s),
            Update::Files(f) => self.files = Some(f),
            Update::FailureReason(r) => self.failure_reason = Some(r),
            Update::Other(k, v) => self.other.push((k, v)),
        }
    }

    /// Finished with rc 0 and no exception on the slave.
    pub fn succeeded(&self) -> bool {
        self.failure.is_none() && self.rc == Some(0)
    }

    /// A one-line account of why it did not succeed (for errors and logs).
    pub fn failure_message(&self) -> String {
        if let Some(f) = &self.failure {
            return f.lines().last().unwrap_or(f).to_string();
        }
        let detail = [&self.stderr, &self.header]
            .iter()
            .map(|s| s.trim())
            .find(|s| !s.is_empty())
            .map(|s| s.lines().last().unwrap_or(s).to_string());
        match (self.rc, detail) {
            (Some(rc), Some(d)) => format!("rc {rc}: {d}"),
            (Some(rc), None) => format!("rc {rc}"),
            (None, Some(d)) => format!("no rc: {d}"),
            (None, None) => "no rc".into(),
        }
    }
}

/// Read a string-keyed entry of a msgpack map as a string.
pub(crate) fn str_field(map: &Value, key: &str) -> Option<String> {
    map_get(map, key).and_then(value_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_triples_and_plain_strings_decode() {
        let triple = Value::Array(vec![
            Value::from("a\nb\n"),
            Value::Array(vec![Value::from(1), Value::from(3)]),
            Value::Array(vec![Value::from(0.5), Value::from(0.5)]),
        ]);
        assert_eq!(
            Update::from_pair("stdout", triple),
            Update::Stdout("a\nb\n".into())
        );
        assert_eq!(
            Update::from_pair("stderr", Value::from("x")),
            Update::Stderr("x".into())
        );
        assert_eq!(Update::from_pair("rc", Value::from(3)), Update::Rc(3));
        assert_eq!(
            Update::from_pair("files", Value::Array(vec![Value::from("f")])),
            Update::Files(vec!["f".into()])
        );
    }

    #[test]
    fn failure_message_prefers_stderr() {
        let o = CommandOutcome {
            rc: Some(2),
            stderr: "boom\n".into(),
            ..Default::default()
        };
        assert_eq!(o.failure_message(), "rc 2: boom");
        assert!(!o.succeeded());
    }
}
