//! The slave's side of one WebSocket connection: sending frames and awaiting answers.
//!
//! Everything the slave sends goes through a [`Link`]: responses to the master's
//! requests and pings on an unbounded, prioritised lane (they are few and must never
//! wait behind output), updates and file data on a bounded lane. The bounded lane is
//! the back-pressure that keeps output streaming in constant memory: a command that
//! produces output faster than the master reads it waits, and so does its process.
//! Requests the slave makes (`update_read_file`, `update_upload_file_write`, …) are
//! matched to the master's responses by `seq_number`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Sink, SinkExt};
use rmpv::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::protocol::Message;

/// Frames waiting on the bounded lane; with 64 KiB updates this is ≤ 1 MiB.
const DATA_LANE: usize = 16;

/// The connection is gone; whatever was being sent is lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the connection to the master is closed")]
pub struct LinkClosed;

/// Why a request to the master did not get a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Closed(#[from] LinkClosed),
    /// The master answered with `is_exception`.
    #[error("master: {0}")]
    Remote(String),
}

/// One item for the writer task.
#[derive(Debug)]
pub(crate) enum Out {
    Frame(Vec<u8>),
    Ping,
    /// Send a close frame and stop.
    Close,
}

type Waiters = Arc<Mutex<HashMap<i64, oneshot::Sender<Result<Value, String>>>>>;

/// A handle on the connection, cloned into every running command.
#[derive(Clone)]
pub struct Link {
    priority: mpsc::UnboundedSender<Out>,
    data: mpsc::Sender<Out>,
    seq: Arc<AtomicI64>,
    waiters: Waiters,
}

/// The receiving ends, owned by the writer task.
pub(crate) struct Lanes {
    priority: mpsc::UnboundedReceiver<Out>,
    data: mpsc::Receiver<Out>,
}

impl Link {
    pub(crate) fn new() -> (Link, Lanes) {
        let (ptx, prx) = mpsc::unbounded_channel();
        let (dtx, drx) = mpsc::channel(DATA_LANE);
        (
            Link {
                priority: ptx,
                data: dtx,
                seq: Arc::new(AtomicI64::new(0)),
                waiters: Arc::new(Mutex::new(HashMap::new())),
            },
            Lanes {
                priority: prx,
                data: drx,
            },
        )
    }

    /// Answer a master request (never waits).
    pub(crate) fn respond(&self, msg: Message) {
        let _ = self.priority.send(Out::Frame(msg.encode()));
    }

    pub(crate) fn ping(&self) {
        let _ = self.priority.send(Out::Ping);
    }

    /// Queue a close frame behind everything already queued.
    pub(crate) async fn close(&self) {
        let _ = self.data.send(Out::Close).await;
    }

    /// Send a request without waiting for its answer (updates, complete).
    pub async fn notify(&self, op: &str, fields: Vec<(&str, Value)>) -> Result<(), LinkClosed> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.data
            .send(Out::Frame(encode_request(seq, op, fields)))
            .await
            .map_err(|_| LinkClosed)
    }

    /// Send a request and wait for the master's result.
    pub async fn call(&self, op: &str, fields: Vec<(&str, Value)>) -> Result<Value, CallError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(seq, tx);
        }
        if self
            .data
            .send(Out::Frame(encode_request(seq, op, fields)))
            .await
            .is_err()
        {
            self.forget(seq);
            return Err(LinkClosed.into());
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(msg)) => Err(CallError::Remote(msg)),
            Err(_) => Err(LinkClosed.into()),
        }
    }

    fn forget(&self, seq: i64) {
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(&seq);
        }
    }

    /// Deliver a response from the master to whoever waits for it.
    pub(crate) fn resolve(&self, seq: i64, result: Value, is_exception: bool) {
        let waiter = self.waiters.lock().ok().and_then(|mut w| w.remove(&seq));
        if let Some(tx) = waiter {
            let r = if is_exception {
                Err(crate::protocol::value_str(&result)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{result}")))
            } else {
                Ok(result)
            };
            let _ = tx.send(r);
        }
    }

    /// The connection ended: every waiting call fails.
    pub(crate) fn fail_all(&self) {
        if let Ok(mut w) = self.waiters.lock() {
            w.clear();
        }
    }
}

/// Encode a request map without copying its (possibly large) fields.
fn encode_request(seq: i64, op: &str, fields: Vec<(&str, Value)>) -> Vec<u8> {
    let mut entries = Vec::with_capacity(fields.len() + 2);
    entries.push((Value::from("seq_number"), Value::from(seq)));
    entries.push((Value::from("op"), Value::from(op)));
    for (k, v) in fields {
        entries.push((Value::from(k), v));
    }
    let value = Value::Map(entries);
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &value);
    out
}

/// Write queued frames to the socket until told to close or the socket fails.
///
/// After a frame the writer lets the task that queued it run once, then writes
/// whatever is queued by then (a command's last `update` and its `complete`)
/// before it waits again. Each frame is its own write, sent as soon as it is
/// fed ([`crate::protocol::websocket_config`]): the master starts on the
/// `update` while the `complete` follows.
pub(crate) async fn writer<S>(mut sink: S, mut lanes: Lanes)
where
    S: Sink<WsMessage> + Unpin,
{
    loop {
        let out = tokio::select! {
            biased;
            Some(o) = lanes.priority.recv() => o,
            Some(o) = lanes.data.recv() => o,
            else => break,
        };
        if !feed_out(&mut sink, out).await {
            return;
        }
        tokio::task::yield_now().await;
        loop {
            let out = match lanes.priority.try_recv() {
                Ok(o) => o,
                Err(_) => match lanes.data.try_recv() {
                    Ok(o) => o,
                    Err(_) => break,
                },
            };
            if !feed_out(&mut sink, out).await {
                return;
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
}

/// Queue one frame on the WebSocket without writing it out yet; a close is
/// sent at once and ends the writer. `false`: stop writing.
async fn feed_out<S>(sink: &mut S, out: Out) -> bool
where
    S: Sink<WsMessage> + Unpin,
{
    let msg = match out {
        Out::Frame(bytes) => {
            for msg in crate::protocol::ws_messages(bytes) {
                if sink.feed(msg).await.is_err() {
                    return false;
                }
            }
            return true;
        }
        Out::Ping => WsMessage::Ping(Vec::new().into()),
        Out::Close => {
            let _ = sink
                .send(WsMessage::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "slave shutting down".into(),
                })))
                .await;
            // The master's answering close frame is read by the session.
            return false;
        }
    };
    sink.feed(msg).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    /// A real socket that counts the writes made on it.
    struct Counted {
        inner: TcpStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// A WebSocket over real TCP on 127.0.0.1: the slave's end (its socket writes
    /// counted), the master's end and the count.
    async fn pair() -> (
        WebSocketStream<Counted>,
        WebSocketStream<TcpStream>,
        Arc<AtomicUsize>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = Counted {
            inner: client.unwrap(),
            writes: writes.clone(),
        };
        let config = Some(crate::protocol::websocket_config());
        let slave_side = WebSocketStream::from_raw_socket(counted, Role::Client, config).await;
        let master_side =
            WebSocketStream::from_raw_socket(server.unwrap().0, Role::Server, config).await;
        (slave_side, master_side, writes)
    }

    #[tokio::test]
    async fn each_frame_leaves_as_soon_as_it_is_fed_and_in_order() {
        let (slave_side, master_side, writes) = pair().await;

        let (link, lanes) = Link::new();
        link.notify("update", vec![("args", Value::from("rc 0"))])
            .await
            .unwrap();
        link.notify("complete", vec![("args", Value::Nil)])
            .await
            .unwrap();
        drop(link);
        writer(slave_side, lanes).await;
        assert_eq!(writes.load(Ordering::SeqCst), 2, "one write per frame");

        let ops: Vec<String> = master_side
            .take(2)
            .map(|m| {
                let bytes = m.unwrap().into_data();
                match Message::decode(&bytes).unwrap() {
                    Message::Request { op, .. } => op,
                    other => panic!("not a request: {other:?}"),
                }
            })
            .collect()
            .await;
        assert_eq!(ops, ["update", "complete"]);
    }

    #[tokio::test]
    async fn a_large_frame_goes_in_fragments_and_arrives_whole() {
        let (slave_side, master_side, writes) = pair().await;

        // 256 KiB of output and a bit: more than one frame may carry.
        let text: String = (0..(256 * 1024 + 100))
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let (link, lanes) = Link::new();
        link.notify("update", vec![("args", Value::from(text.as_str()))])
            .await
            .unwrap();
        link.notify("complete", vec![("args", Value::Nil)])
            .await
            .unwrap();
        drop(link);
        writer(slave_side, lanes).await;
        let frames = (256 * 1024 + 100usize).div_ceil(crate::protocol::MAX_FRAME) + 1;
        assert!(
            writes.load(Ordering::SeqCst) >= frames,
            "the update left in frames of at most MAX_FRAME"
        );

        let got: Vec<Message> = master_side
            .take(2)
            .map(|m| Message::decode(&m.unwrap().into_data()).unwrap())
            .collect()
            .await;
        match &got[0] {
            Message::Request { op, fields, .. } => {
                assert_eq!(op, "update");
                let args = fields
                    .iter()
                    .find(|(k, _)| k == "args")
                    .and_then(|(_, v)| v.as_str());
                assert_eq!(args, Some(text.as_str()), "joined back whole");
            }
            other => panic!("not a request: {other:?}"),
        }
        assert!(matches!(&got[1], Message::Request { op, .. } if op == "complete"));
    }
}
