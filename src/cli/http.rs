//! A small blocking HTTP/1.1 client for the CLI's talks with a master's JSON API
//! (`force`, `stop-build`): one request per connection, JSON in and out; and
//! [`EventStream`], a reader of the master's server-sent events (`force --wait`).
//!
//! The CLI only ever talks to its own master on a known host and port, so this
//! stays tiny instead of pulling an HTTP client stack into the binary.

use anyhow::{anyhow, bail, Context};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response: status code and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON; an error names the status and the body text.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "HTTP {}: not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` field of a JSON error body, or the body text.
    pub fn error_text(&self) -> String {
        self.json()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string())
    }
}

/// Send one request to `host:port` and read the whole reply.
pub fn request(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Reply> {
    request_with(host, port, method, path, &[], body)
}

/// [`request`] with extra headers (`Authorization`, say).
pub fn request_with(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Reply> {
    if headers
        .iter()
        .any(|(k, v)| k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']))
    {
        bail!("a header name or value holds a line break or a colon; it cannot be sent");
    }
    let mut stream = connect(host, port)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if body.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            payload.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(payload.as_bytes())?;
    read_reply(stream)
}

/// A connection to the master's web port; an [`super::ExitError`] with
/// [`super::EXIT_UNREACHABLE`] when nobody answers.
fn connect(host: &str, port: u16) -> anyhow::Result<TcpStream> {
    TcpStream::connect((host, port)).map_err(|e| {
        super::exit_error(
            super::EXIT_UNREACHABLE,
            format!("cannot reach the master's web port {host}:{port} ({e}); is the master running? (`autobot start DIR`)"),
        )
    })
}

/// A `text/event-stream` response being read, one message at a time.
pub struct EventStream {
    body: Box<dyn BufRead + Send>,
}

impl EventStream {
    /// GET `path` (e.g. `/events`) and read up to the end of the first message
    /// (the master's hello), so the subscription is in place on return.
    pub fn open(host: &str, port: u16, path: &str) -> anyhow::Result<EventStream> {
        let mut stream = connect(host, port)?;
        // The master sends a keepalive every 15 s: a minute of silence is a loss.
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
        )?;
        let mut rd = BufReader::new(stream);
        let mut line = String::new();
        rd.read_line(&mut line)?;
        let status = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut chunked = false;
        loop {
            line.clear();
            if rd.read_line(&mut line)? == 0 {
                bail!("the master closed the connection mid-headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.trim().eq_ignore_ascii_case("transfer-encoding")
                    && v.trim().eq_ignore_ascii_case("chunked")
                {
                    chunked = true;
                }
            }
        }
        if status != "200" {
            bail!("GET {path}: HTTP {status} from the master");
        }
        let body: Box<dyn BufRead + Send> = if chunked {
            Box::new(BufReader::new(Chunked {
                inner: rd,
                left: 0,
                done: false,
            }))
        } else {
            Box::new(rd)
        };
        let mut es = EventStream { body };
        // The hello: `retry:` and a comment, then a blank line.
        es.message()?;
        Ok(es)
    }

    /// The `data` of the next message that has some; `None` when the stream
    /// ended.
    pub fn next_data(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            match self.message()? {
                None => return Ok(None),
                Some(d) if d.is_empty() => continue,
                Some(d) => return Ok(Some(d)),
            }
        }
    }

    /// One message (up to a blank line): its `data` lines joined, maybe empty.
    fn message(&mut self) -> anyhow::Result<Option<String>> {
        let mut data: Option<String> = None;
        let mut line = String::new();
        let mut any = false;
        loop {
            line.clear();
            if self.body.read_line(&mut line)? == 0 {
                return Ok(if any {
                    Some(data.unwrap_or_default())
                } else {
                    None
                });
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if any {
                    return Ok(Some(data.unwrap_or_default()));
                }
                continue;
            }
            any = true;
            if let Some(d) = l.strip_prefix("data:") {
                let d = d.strip_prefix(' ').unwrap_or(d);
                match &mut data {
                    Some(s) => {
                        s.push('\n');
                        s.push_str(d);
                    }
                    None => data = Some(d.to_string()),
                }
            }
        }
    }
}

/// A chunked transfer-encoded body as a plain byte stream.
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            // The CRLF that ends the previous chunk, then the size line.
            while line.trim().is_empty() {
                line.clear();
                if self.inner.read_line(&mut line)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                })?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let want = out.len().min(self.left);
        let n = self.inner.read(&mut out[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        Ok(n)
    }
}

fn read_reply(stream: TcpStream) -> anyhow::Result<Reply> {
    let mut rd = BufReader::new(stream);
    let mut line = String::new();
    rd.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line from the master: {line:?}"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        line.clear();
        if rd.read_line(&mut line)? == 0 {
            bail!("the master closed the connection mid-headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            rd.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| anyhow!("bad chunk size {line:?}"))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            rd.read_exact(&mut body[start..])?;
            line.clear();
            rd.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        rd.read_exact(&mut body)?;
    } else {
        rd.read_to_end(&mut body)?;
    }
    Ok(Reply { status, body })
}
