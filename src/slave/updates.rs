//! A command's `update` messages: line splitting per stream plus a send buffer.
//!
//! Like the worker's `BufferManager`, updates are collected until `buffer_size` bytes
//! are pending or the oldest has waited `buffer_timeout`, then sent as one `update`
//! whose `args` is a list of `[name, value]` pairs; consecutive output of the same
//! stream is merged into one record. Output streams (`stdout`, `stderr`, `header`,
//! and `log` for logfiles) carry [`LineInfo`] records, or plain text of whole lines
//! when autobot's master asked for text output; anything else (`rc`,
//! `elapsed`, `files`, `stat`, …) is sent as it is. Every send waits for room on the
//! link, which is how a fast command is slowed to the master's pace.

use std::collections::BTreeMap;
use std::time::Instant;

use rmpv::Value;

use super::link::{Link, LinkClosed};
use super::output::{LineInfo, LineSplitter, Settings};

/// Where output goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    Header,
    Stderr,
    Stdout,
    /// A logfile watched for a shell command, by its log name.
    Log(String),
}

impl Stream {
    fn key(&self) -> &str {
        match self {
            Stream::Header => "header",
            Stream::Stderr => "stderr",
            Stream::Stdout => "stdout",
            Stream::Log(_) => "log",
        }
    }
}

enum Entry {
    Lines(Stream, LineInfo),
    /// Whole lines as plain text (`Settings::text_output`).
    Text(Stream, String),
    Other(String, Value),
}

impl Entry {
    fn weight(&self) -> usize {
        match self {
            Entry::Lines(_, li) => li.weight(),
            Entry::Text(_, text) => text.len(),
            Entry::Other(..) => 20,
        }
    }

    fn into_value(self) -> Value {
        let output = |stream: Stream, record: Value| {
            let value = match &stream {
                Stream::Log(name) => Value::Array(vec![Value::from(name.as_str()), record]),
                _ => record,
            };
            Value::Array(vec![Value::from(stream.key()), value])
        };
        match self {
            Entry::Other(k, v) => Value::Array(vec![Value::from(k), v]),
            Entry::Text(stream, text) => output(stream, Value::from(text)),
            Entry::Lines(stream, li) => output(
                stream,
                Value::Array(vec![
                    Value::from(li.text),
                    Value::Array(li.newlines.into_iter().map(Value::from).collect()),
                    Value::Array(li.times.into_iter().map(Value::F64).collect()),
                ]),
            ),
        }
    }
}

/// Whole lines of `text` in pieces of at most `limit` bytes, cut after a newline
/// (a single longer line stays alone).
fn split_text(mut text: String, limit: usize) -> Vec<String> {
    let limit = limit.max(1);
    let mut out = Vec::new();
    while text.len() > limit {
        let cut = match memchr::memrchr(b'\n', &text.as_bytes()[..limit]) {
            Some(nl) => nl + 1,
            None => match memchr::memchr(b'\n', &text.as_bytes()[limit..]) {
                Some(nl) => limit + nl + 1,
                None => text.len(),
            },
        };
        if cut >= text.len() {
            break;
        }
        let rest = text.split_off(cut);
        out.push(std::mem::replace(&mut text, rest));
    }
    if !text.is_empty() {
        out.push(text);
    }
    out
}

/// The update stream of one command.
pub struct Updates {
    link: Link,
    command_id: String,
    settings: Settings,
    splitters: BTreeMap<Stream, LineSplitter>,
    buffered: Vec<Entry>,
    weight: usize,
    /// When the buffer must be sent at the latest.
    deadline: Option<Instant>,
}

impl Updates {
    pub fn new(link: Link, command_id: String, settings: Settings) -> Updates {
        Updates {
            link,
            command_id,
            settings,
            splitters: BTreeMap::new(),
            buffered: Vec::new(),
            weight: 0,
            deadline: None,
        }
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn command_id(&self) -> &str {
        &self.command_id
    }

    /// When [`Updates::flush`] must run next, if anything waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Add output text of a stream.
    pub async fn output(&mut self, stream: Stream, text: &str) -> Result<(), LinkClosed> {
        if text.is_empty() {
            return Ok(());
        }
        let settings = &self.settings;
        let splitter = self.splitters.entry(stream.clone()).or_default();
        if settings.text_output {
            return match splitter.append_text(text, settings) {
                Some(t) => self.push(Entry::Text(stream, t)).await,
                None => Ok(()),
            };
        }
        let lines = splitter.append(text, crate::calendar::now_f64(), settings);
        match lines {
            Some(li) => self.push(Entry::Lines(stream, li)).await,
            // A partial line waits for its end or the end of the command.
            None => Ok(()),
        }
    }

    /// Add a header line (a newline is expected at the end of `text`).
    pub async fn header(&mut self, text: &str) -> Result<(), LinkClosed> {
        self.output(Stream::Header, text).await
    }

    /// Add a non-output update such as `rc` or `files`.
    pub async fn send(&mut self, key: &str, value: Value) -> Result<(), LinkClosed> {
        self.push(Entry::Other(key.to_string(), value)).await
    }

    async fn push(&mut self, entry: Entry) -> Result<(), LinkClosed> {
        let w = entry.weight();
        let size = self.settings.buffer_size.max(1);
        if w + self.weight <= size {
            self.append(entry);
            return Ok(());
        }
        self.flush().await?;
        if w <= size {
            self.append(entry);
            return Ok(());
        }
        match entry {
            Entry::Lines(stream, li) => {
                for part in li.split(size) {
                    self.send_now(vec![Entry::Lines(stream.clone(), part)])
                        .await?;
                }
                Ok(())
            }
            Entry::Text(stream, text) => {
                for part in split_text(text, size) {
                    self.send_now(vec![Entry::Text(stream.clone(), part)])
                        .await?;
                }
                Ok(())
            }
            other => self.send_now(vec![other]).await,
        }
    }

    fn append(&mut self, entry: Entry) {
        self.weight += entry.weight();
        let rest = match (self.buffered.last_mut(), entry) {
            (Some(Entry::Lines(last_stream, last)), Entry::Lines(stream, li))
                if *last_stream == stream =>
            {
                last.join(li);
                None
            }
            (Some(Entry::Text(last_stream, last)), Entry::Text(stream, text))
                if *last_stream == stream =>
            {
                last.push_str(&text);
                None
            }
            (_, e) => Some(e),
        };
        if let Some(e) = rest {
            self.buffered.push(e);
        }
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.settings.buffer_timeout);
        }
    }

    /// Send everything buffered now.
    pub async fn flush(&mut self) -> Result<(), LinkClosed> {
        self.deadline = None;
        self.weight = 0;
        if self.buffered.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.buffered);
        self.send_now(entries).await
    }

    async fn send_now(&mut self, entries: Vec<Entry>) -> Result<(), LinkClosed> {
        let args = Value::Array(entries.into_iter().map(Entry::into_value).collect());
        self.link
            .notify(
                "update",
                vec![
                    ("args", args),
                    ("command_id", Value::from(self.command_id.as_str())),
                ],
            )
            .await
    }

    /// Send the partial last lines of every stream (end of the command's output).
    pub async fn flush_lines(&mut self) -> Result<(), LinkClosed> {
        let streams: Vec<Stream> = self.splitters.keys().cloned().collect();
        for stream in streams {
            let settings = &self.settings;
            let Some(sp) = self.splitters.get_mut(&stream) else {
                continue;
            };
            let entry = if settings.text_output {
                sp.flush_text(settings).map(|t| Entry::Text(stream, t))
            } else {
                sp.flush(settings).map(|li| Entry::Lines(stream, li))
            };
            if let Some(entry) = entry {
                self.push(entry).await?;
            }
        }
        Ok(())
    }

    /// Finish the command: pending output, then `complete` (`failure` = None on
    /// success, else the error text).
    pub async fn complete(mut self, failure: Option<String>) -> Result<(), LinkClosed> {
        self.flush_lines().await?;
        self.flush().await?;
        let args = match failure {
            None => Value::Nil,
            Some(f) => Value::from(f),
        };
        self.link
            .notify(
                "complete",
                vec![
                    ("args", args),
                    ("command_id", Value::from(self.command_id.as_str())),
                ],
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::split_text;

    #[test]
    fn split_text_cuts_after_newlines_within_the_limit() {
        let text = "aa\nbbbb\ncc\n".to_string();
        assert_eq!(split_text(text.clone(), 100), vec![text.clone()]);
        assert_eq!(split_text(text.clone(), 5), vec!["aa\n", "bbbb\n", "cc\n"]);
        assert_eq!(split_text(text.clone(), 8), vec!["aa\nbbbb\n", "cc\n"]);
        // A line longer than the limit stays whole.
        assert_eq!(split_text(text.clone(), 2), vec!["aa\n", "bbbb\n", "cc\n"]);
        assert_eq!(split_text("x".repeat(10) + "\n", 3).len(), 1);
        assert!(split_text(String::new(), 3).is_empty());
    }
}
