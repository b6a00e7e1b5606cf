//! The CLI's HTTP client for its talks with a master's JSON API (`force`,
//! `stop-build`, `stop --clean`): one JSON request and reply at a time; and
//! [`EventStream`], a reader of the master's server-sent events (`force --wait`).
//!
//! Both go through `reqwest::blocking` (compiled in already for gix's https
//! transport), with no proxy (the master is on 127.0.0.1) and a minute's
//! timeout on connecting and on every read: the master sends a keepalive every
//! 15 s, so a minute of silence is a lost master.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
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
    off_the_runtime(|| {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .with_context(|| format!("{method:?} is not an HTTP method"))?;
        let mut req = client()?
            .request(method, url(host, port, path))
            .header(reqwest::header::ACCEPT, "application/json");
        for (k, v) in headers {
            let (k, v) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v),
            );
            let (Ok(k), Ok(v)) = (k, v) else {
                bail!("a header name or value holds a line break or a colon; it cannot be sent");
            };
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let reply = req.send().map_err(|e| unreachable(host, port, e))?;
        let status = reply.status().as_u16();
        let body = reply
            .bytes()
            .with_context(|| format!("reading the master's reply (HTTP {status})"))?
            .to_vec();
        Ok(Reply { status, body })
    })
}

/// Run `f` here, or on a thread of its own when this thread runs an async
/// runtime: `reqwest::blocking` refuses to block a runtime's thread, and tests
/// and benches call [`request`] from async code (the CLI never does).
fn off_the_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// The client every request uses (made once: it keeps a thread of its own): no
/// proxy, no idle connections kept, a minute's timeout per read.
fn client() -> anyhow::Result<reqwest::blocking::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    // reqwest is built without a default TLS provider (gix picks ring); plain
    // HTTP needs none, but building a client wants one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::blocking::Client::builder()
        .no_proxy()
        // One request per connection: a master restarted on the same port
        // would otherwise meet a pooled connection it closed.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot set up the HTTP client")?;
    Ok(CLIENT.get_or_init(|| c).clone())
}

fn url(host: &str, port: u16, path: &str) -> String {
    format!("http://{host}:{port}{path}")
}

/// The error for a request that failed: an [`super::ExitError`] with
/// [`super::EXIT_UNREACHABLE`] when nobody answers.
fn unreachable(host: &str, port: u16, e: reqwest::Error) -> anyhow::Error {
    if e.is_connect() {
        super::exit_error(
            super::EXIT_UNREACHABLE,
            format!("cannot reach the master's web port {host}:{port} ({e}); is the master running? (`autobot start DIR`)"),
        )
    } else {
        anyhow::Error::new(e).context(format!("talking to the master's web port {host}:{port}"))
    }
}

/// A `text/event-stream` response being read, one message at a time (from
/// blocking code: the CLI's `force --wait`).
pub struct EventStream {
    body: BufReader<reqwest::blocking::Response>,
}

impl EventStream {
    /// GET `path` (e.g. `/events`) and read up to the end of the first message
    /// (the master's hello), so the subscription is in place on return.
    pub fn open(host: &str, port: u16, path: &str) -> anyhow::Result<EventStream> {
        let reply = client()?
            .get(url(host, port, path))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .map_err(|e| unreachable(host, port, e))?;
        if reply.status() != reqwest::StatusCode::OK {
            bail!(
                "GET {path}: HTTP {} from the master",
                reply.status().as_u16()
            );
        }
        let mut es = EventStream {
            body: BufReader::new(reply),
        };
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
