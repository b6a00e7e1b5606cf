//! Server-sent events for live pages: `/events` carries the build engine's events
//! (and new Changes) as JSON, and a step log's `…/tail` carries the log's new
//! bytes as they reach the file, styled by channel.
//!
//! The log tail reads the file from the last offset it sent whenever the engine
//! announces that log grew (`LogAppended`, at most every 250 ms per log), and once
//! a second anyway, so the tail never holds more than one chunk in memory and a
//! browser that reconnects resumes at `Last-Event-ID` (the byte offset).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::pages::{split_runs, LOG_CHUNK};
use super::WebContext;
use crate::engine::EngineEvent;
use crate::logstore::Channel;

/// A comment line sent when nothing happened for this long (keeps proxies open).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// How long a client may take none of its stream's bytes before the stream gives
/// up on it. A client that never reads (a frozen tab, a hostile one) then costs
/// nothing more: the task feeding it ends, dropping what it holds (its place in
/// the engine's event stream, an open log file), and the response ends in an
/// error, which closes the connection as soon as the server writes to it again.
const STALLED_CLIENT: Duration = Duration::from_secs(60);

/// A response body fed by a task running `stream` (warp wants a `Sync` stream;
/// async state machines holding receivers are not). The task stops when the client
/// goes away or takes nothing for [`STALLED_CLIENT`]; at most a few chunks wait in
/// between (back-pressure: a client that reads slowly slows its stream, never
/// the engine, whose events it may miss and then re-read).
pub(crate) fn body_stream<S>(stream: S) -> RxStream
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    body_stream_until(stream, STALLED_CLIENT)
}

/// [`body_stream`] giving up on a client after `stalled`.
fn body_stream_until<S>(stream: S, stalled: Duration) -> RxStream
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let gave_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = gave_up.clone();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match tokio::time::timeout(stalled, tx.send(item)).await {
                Ok(Ok(())) => {}
                // The client went away.
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::info!(
                        "a live stream's client took nothing for {} s: giving up on it",
                        stalled.as_secs()
                    );
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            }
        }
    });
    RxStream { rx, gave_up }
}

/// The receiving end of [`body_stream`].
pub(crate) struct RxStream {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    /// The feeding task gave up on a client that took nothing.
    gave_up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl futures_util::Stream for RxStream {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.gave_up.load(std::sync::atomic::Ordering::SeqCst) {
            self.rx.close();
            return std::task::Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took nothing of its stream for too long",
            ))));
        }
        self.rx.poll_recv(cx)
    }
}

fn sse_response<S>(stream: S) -> Response
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let mut r = warp::reply::stream(body_stream(stream)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// One SSE message; `data` must be one line (JSON is).
fn message(event: Option<&str>, id: Option<u64>, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + 32);
    if let Some(e) = event {
        s.push_str("event: ");
        s.push_str(e);
        s.push('\n');
    }
    if let Some(id) = id {
        s.push_str(&format!("id: {id}\n"));
    }
    s.push_str("data: ");
    s.push_str(data);
    s.push_str("\n\n");
    Bytes::from(s)
}

/// `GET /events`: every engine event as a JSON `message`, new Changes as
/// `{"event":"change","id":N,"who":…,"branch":…,"revision":…,"comments":…}` (the
/// comments' first line, at most 200 characters),
/// slaves as `{"event":"slave_connected","slave":NAME}` and
/// `{"event":"slave_lost","slave":NAME,"reason":…}`, and `{"event":"lagged"}`
/// when this client fell behind (the page then re-reads everything).
/// `autobot statuslog` prints this stream.
pub fn events(ctx: WebContext, stop: Option<watch::Receiver<bool>>) -> Response {
    struct St {
        stop: Option<watch::Receiver<bool>>,
        events: tokio::sync::broadcast::Receiver<EngineEvent>,
        changes: tokio::sync::broadcast::Receiver<crate::db::changes::ChangeRow>,
        slaves: tokio::sync::broadcast::Receiver<crate::slavelink::SlaveEvent>,
        hello: bool,
    }
    let st = St {
        stop,
        events: ctx.engine.live(),
        changes: ctx.changes.subscribe(),
        slaves: ctx.engine.slave_events(),
        hello: true,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.hello {
            st.hello = false;
            // Tells the browser how soon to reconnect, and that the stream is open.
            return Some((Ok(Bytes::from_static(b"retry: 1000\n: hello\n\n")), st));
        }
        let out = tokio::select! {
            e = st.events.recv() => match e {
                Ok(ev) => serde_json::to_string(&ev).map(|j| message(None, None, &j)).ok(),
                Err(RecvError::Lagged(_)) => Some(message(None, None, "{\"event\":\"lagged\"}")),
                Err(RecvError::Closed) => return None,
            },
            c = st.changes.recv() => match c {
                Ok(c) => Some(message(None, None, &serde_json::json!({
                    "event": "change", "id": c.id, "who": c.who, "branch": c.branch,
                    "revision": c.revision,
                    "comments": c.comments.lines().next().unwrap_or("").chars().take(200).collect::<String>(),
                }).to_string())),
                Err(RecvError::Lagged(_)) => Some(message(None, None, "{\"event\":\"lagged\"}")),
                Err(RecvError::Closed) => return None,
            },
            s = st.slaves.recv() => match s {
                Ok(crate::slavelink::SlaveEvent::Connected(name)) => Some(message(None, None,
                    &serde_json::json!({"event": "slave_connected", "slave": name}).to_string())),
                Ok(crate::slavelink::SlaveEvent::Disconnected { name, reason }) => Some(message(None, None,
                    &serde_json::json!({"event": "slave_lost", "slave": name, "reason": reason}).to_string())),
                Err(RecvError::Lagged(_)) => Some(message(None, None, "{\"event\":\"lagged\"}")),
                Err(RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep(KEEPALIVE) => Some(Bytes::from_static(b": keepalive\n\n")),
            _ = stopped(&mut st.stop) => return None,
        };
        Some((
            Ok::<Bytes, std::io::Error>(out.unwrap_or_else(|| Bytes::from_static(b": \n\n"))),
            st,
        ))
    });
    sse_response(stream)
}

/// `GET …/logs/LOG/tail?offset=N`: the log's bytes from `N` (or `Last-Event-ID`) as
/// `{"c":"stdout|stderr|header","t":TEXT}` messages whose id is the offset after
/// them, then an `end` event once the step is finished and everything was sent.
#[allow(clippy::too_many_arguments)]
pub async fn log_tail(
    ctx: WebContext,
    stop: Option<watch::Receiver<bool>>,
    builder: String,
    number: i64,
    step: String,
    log: String,
    q: HashMap<String, String>,
    h: HeaderMap,
) -> Response {
    let not_found = || {
        super::json_error(
            StatusCode::NOT_FOUND,
            &format!("{builder} build {number} has no log {log:?} in a step {step:?}"),
        )
    };
    // The step's number: events name steps by number.
    let detail = match ctx.db.build(&builder, number).await {
        Ok(Some(d)) => d,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!("log tail: {e}");
            return super::json_error(StatusCode::INTERNAL_SERVER_ERROR, "database error");
        }
    };
    let step_number = match detail
        .steps
        .iter()
        .find(|s| s.name == step)
        .or_else(|| detail.steps.iter().find(|s| s.number.to_string() == step))
    {
        Some(s) => s.number,
        None => return not_found(),
    };
    let file = match ctx.db.log_file(&builder, number, &step, &log).await {
        Ok(Some(f)) => f,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!("log tail: {e}");
            return super::json_error(StatusCode::INTERNAL_SERVER_ERROR, "database error");
        }
    };
    if file.deleted {
        return super::json_error(StatusCode::GONE, "the log was deleted by logHorizon");
    }
    let resume = h
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let offset = resume
        .or_else(|| q.get("offset").and_then(|o| o.parse().ok()))
        .unwrap_or(0);

    struct St {
        stop: Option<watch::Receiver<bool>>,
        events: tokio::sync::broadcast::Receiver<EngineEvent>,
        path: std::path::PathBuf,
        builder: String,
        number: i64,
        step: i64,
        log: String,
        offset: u64,
        /// The step finished: send what is left, then `end`.
        finished: bool,
        done: bool,
        hello: bool,
    }
    let st = St {
        stop,
        events: ctx.engine.live(),
        path: file.path,
        builder,
        number,
        step: step_number,
        log,
        offset,
        finished: file.complete,
        done: false,
        hello: true,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        if st.hello {
            st.hello = false;
            return Some((Ok(Bytes::from_static(b"retry: 1000\n: hello\n\n")), st));
        }
        loop {
            // Whatever the file has beyond what was sent.
            match read_from(&st.path, st.offset, st.finished).await {
                Ok(Some((pieces, used))) if used > 0 => {
                    st.offset += used as u64;
                    let mut out = String::new();
                    for (c, t) in pieces {
                        let data = serde_json::json!({ "c": channel_name(c), "t": t }).to_string();
                        out.push_str(&String::from_utf8_lossy(&message(
                            None,
                            Some(st.offset),
                            &data,
                        )));
                    }
                    return Some((Ok(Bytes::from(out)), st));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("log tail {}: {e}", st.path.display());
                    st.done = true;
                    return Some((Ok(message(Some("end"), None, "{\"error\":true}")), st));
                }
            }
            if st.finished {
                st.done = true;
                return Some((Ok(message(Some("end"), Some(st.offset), "{}")), st));
            }
            // Wait for the log to grow or the step to end (or the server to stop).
            let mut stop = st.stop.clone();
            let waited = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    let ev = tokio::select! {
                        e = st.events.recv() => e,
                        _ = stopped(&mut stop) => return None,
                    };
                    match ev {
                        Ok(EngineEvent::LogAppended {
                            builder,
                            number,
                            step,
                            log,
                            ..
                        }) if builder == st.builder
                            && number == st.number
                            && step == st.step
                            && log == st.log =>
                        {
                            return Some(false)
                        }
                        Ok(EngineEvent::StepFinished {
                            builder,
                            number,
                            step,
                            ..
                        }) if builder == st.builder && number == st.number && step == st.step => {
                            return Some(true)
                        }
                        Ok(EngineEvent::BuildFinished {
                            builder, number, ..
                        }) if builder == st.builder && number == st.number => return Some(true),
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return Some(true),
                    }
                }
            })
            .await;
            match waited {
                Ok(Some(true)) => st.finished = true,
                Ok(None) => return None,
                _ => {}
            }
            if waited.is_err() {
                // A quiet second: a keepalive comment, then look again.
                return Some((Ok(Bytes::from_static(b": \n\n")), st));
            }
        }
    });
    sse_response(stream)
}

/// Resolves once `stop` is true (never without one).
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            let _ = rx.wait_for(|v| *v).await;
        }
        None => std::future::pending().await,
    }
}

fn channel_name(c: Channel) -> &'static str {
    match c {
        Channel::Stdout => "stdout",
        Channel::Stderr => "stderr",
        Channel::Header => "header",
    }
}

/// Up to one chunk of the log from `offset`, split by channel; `None` when there
/// is nothing new.
async fn read_from(
    path: &std::path::Path,
    offset: u64,
    at_end: bool,
) -> std::io::Result<Option<(Vec<(Channel, String)>, usize)>> {
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Compressed since the tail began (logCompression): read from there.
            let p = path.to_path_buf();
            let zst = tokio::task::spawn_blocking(move || {
                crate::logstore::read_compressed_at(&p, offset, LOG_CHUNK)
            })
            .await
            .map_err(std::io::Error::other)??;
            return match zst {
                Some((buf, len)) if !buf.is_empty() => {
                    let p = path.to_path_buf();
                    let runs =
                        tokio::task::spawn_blocking(move || crate::logstore::read_channel_runs(&p))
                            .await
                            .map_err(std::io::Error::other)??;
                    let whole = at_end && offset + buf.len() as u64 >= len;
                    Ok(Some(split_runs(&runs, offset, &buf, whole)))
                }
                Some(_) => Ok(None),
                // A Step that has just started gets its files a moment later.
                None if !at_end => Ok(None),
                None => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let len = f.metadata().await?.len();
    if len <= offset {
        return Ok(None);
    }
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let want = (len - offset).min(LOG_CHUNK as u64) as usize;
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        let n = f.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    let runs = {
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || crate::logstore::read_channel_runs(&p))
            .await
            .map_err(std::io::Error::other)??
    };
    let whole = at_end && offset + got as u64 >= len;
    Ok(Some(split_runs(&runs, offset, &buf, whole)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Set when the stream feeding a client is dropped.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A client that takes nothing: its feeding task ends within the stall time
    /// (dropping the stream's state), and its body ends in an error. A client
    /// that reads gets every chunk in order.
    #[tokio::test]
    async fn a_client_that_takes_nothing_is_given_up() {
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        let endless = futures_util::stream::unfold((guard, 0u64), |(g, n)| async move {
            Some((Ok(Bytes::from(format!("{n}\n"))), (g, n + 1)))
        });
        let mut body = body_stream_until(endless, Duration::from_millis(100));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !dropped.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the stream was never given up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let next = body.next().await;
        assert!(matches!(next, Some(Err(_))), "{next:?}");

        let counted =
            futures_util::stream::iter((0..100u32).map(|i| Ok(Bytes::from(i.to_string()))));
        let got: Vec<String> = body_stream_until(counted, Duration::from_millis(100))
            .map(|b| String::from_utf8(b.unwrap().to_vec()).unwrap())
            .collect()
            .await;
        assert_eq!(got, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
    }
}
