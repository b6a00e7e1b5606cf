//! Buildbot's `msgpack_experimental_v7` worker protocol, shared by master and slave.
//!
//! One WebSocket binary frame carries one msgpack map. A map is either a request
//! (`seq_number`, `op` other than `response`, plus op-specific keys) or a response
//! (`seq_number`, `op = "response"`, `result`, optional `is_exception`). Every request
//! is answered by exactly one response with the same `seq_number`. This module only
//! knows the shape of frames; what an `op` means lives in `slavelink` (the master side) and `slave`.
//! Reference: `docs/developer/master-worker-msgpack.rst` in the buildbot 4.3.0 sdist.

use rmpv::Value;

/// The protocol name a `buildbot-worker` is created with (`--protocol`), and the
/// WebSocket subprotocol-free path both sides agree on.
pub const PROTOCOL_NAME: &str = "msgpack_experimental_v7";

/// Bytes read from a peer's socket at a time. Large enough for output streams to
/// arrive in few reads, small enough for thousands of idle slaves on one master
/// (tungstenite's default, 128 KiB zero-filled on first read, would cost 128 MiB
/// per thousand connections).
const READ_BUFFER: usize = 16 * 1024;

/// The WebSocket settings both ends of the worker protocol use.
///
/// A frame is written to the socket as soon as it is fed (no write buffer):
/// gathering the frames that are ready together (a command's last `update` and
/// its `complete`; the master's responses and the next `start_command`) into one
/// write was measured slower on the engine bench (lower throughput in 9 of 12
/// interleaved runs): the peer no longer starts on the first frame while the
/// next is being made.
pub fn websocket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(16 << 20))
}

/// The largest WebSocket frame either side sends. A message (one msgpack map)
/// larger than this, a 256 KiB block of output say, goes as a fragmented message:
/// a first frame and continuation frames of at most this size, which the peer's
/// WebSocket joins back into one message (RFC 6455 5.4; tungstenite and
/// Autobahn both do). tungstenite keeps its read buffer and its write buffer at
/// the size of the largest frame they ever held, for as long as the connection
/// lives, and offers no way to shrink them: with whole 256 KiB frames, one log
/// left a quarter of a megabyte resident on each side of every connection after
/// the work was over. Split, what stays is this much.
pub const MAX_FRAME: usize = 64 * 1024;

/// `frame` as the WebSocket messages that send it: itself, when it fits in
/// [`MAX_FRAME`]; else the fragments of one binary message (slices of the same
/// bytes, not copies).
pub fn ws_messages(
    frame: Vec<u8>,
) -> impl Iterator<Item = tokio_tungstenite::tungstenite::Message> {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let bytes = bytes::Bytes::from(frame);
    let whole = bytes.len() <= MAX_FRAME;
    let n = if whole {
        1
    } else {
        bytes.len().div_ceil(MAX_FRAME)
    };
    (0..n).map(move |i| {
        if whole {
            return WsMessage::Binary(bytes.clone());
        }
        let end = ((i + 1) * MAX_FRAME).min(bytes.len());
        let part = bytes.slice(i * MAX_FRAME..end);
        let opcode = if i == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Continue)
        };
        WsMessage::Frame(Frame::message(part, opcode, i + 1 == n))
    })
}

/// Why a frame could not be understood; the connection that sent it is dropped.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame is not valid msgpack: {0}")]
    Decode(String),
    #[error("frame is not a msgpack map")]
    NotAMap,
    #[error("frame has no integer `seq_number`")]
    NoSeq,
    #[error("frame has no string `op`")]
    NoOp,
    /// Refused before decoding: a length field claims more than the frame holds,
    /// or the frame would decode to more than [`MAX_DECODED`] bytes of memory.
    #[error("frame refused: {0}")]
    TooBig(String),
}

/// The most memory one frame may decode into. A msgpack frame can claim lengths it
/// does not hold (an array header saying 4 billion elements) and small elements
/// decode to large values (a 2-byte `[nil]` becomes a 48-byte value and a vector),
/// so every frame is measured by [`decoded_size`] before it is decoded. No frame
/// autobot or buildbot-worker sends comes near this (output and file blocks are at
/// most a few MiB); the WebSocket itself caps a frame's bytes at 64 MiB.
pub const MAX_DECODED: usize = 64 << 20;

/// Bytes one decoded msgpack value takes, without what it points to.
const VALUE_SIZE: usize = std::mem::size_of::<Value>();

/// An upper bound of the memory `rmpv` allocates to decode the first msgpack value
/// of `bytes`, found by walking its headers without allocating. Refuses (before
/// any of it is decoded) a value whose lengths claim more elements or bytes than
/// the frame has left, or whose decoded size would pass [`MAX_DECODED`].
pub fn decoded_size(bytes: &[u8]) -> Result<usize, ProtocolError> {
    let too_big = |what: String| Err(ProtocolError::TooBig(what));
    let mut pos = 0usize;
    // Values still to be read (each takes at least one byte).
    let mut pending: usize = 1;
    let mut total: usize = 0;
    // A vector grown by pushing, as rmpv grows it: its final capacity, counted
    // three times over for the copy while it grows.
    let vector = |n: usize, elem: usize| {
        if n == 0 {
            0
        } else {
            3 * n.max(4).next_power_of_two().saturating_mul(elem)
        }
    };
    while pending > 0 {
        pending -= 1;
        let Some(&marker) = bytes.get(pos) else {
            return Err(ProtocolError::Decode(
                "the frame ends inside a value".into(),
            ));
        };
        pos += 1;
        let be = |pos: usize, n: usize| -> Result<usize, ProtocolError> {
            let b = bytes
                .get(pos..pos + n)
                .ok_or_else(|| ProtocolError::Decode("the frame ends inside a length".into()))?;
            Ok(b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)))
        };
        // (elements to read, whether they are key/value pairs, payload bytes to
        // skip, length-field bytes to skip)
        let (items, pairs, payload, skip) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, false, 0, 0),
            0x80..=0x8f => (usize::from(marker & 0x0f), true, 0, 0),
            0x90..=0x9f => (usize::from(marker & 0x0f), false, 0, 0),
            0xa0..=0xbf => (0, false, usize::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (0, false, be(pos, 1)?, 1),
            0xc5 | 0xda => (0, false, be(pos, 2)?, 2),
            0xc6 | 0xdb => (0, false, be(pos, 4)?, 4),
            0xc7 => (0, false, be(pos, 1)? + 1, 1),
            0xc8 => (0, false, be(pos, 2)? + 1, 2),
            0xc9 => (0, false, be(pos, 4)? + 1, 4),
            0xca => (0, false, 4, 0),
            0xcb => (0, false, 8, 0),
            0xcc | 0xd0 => (0, false, 1, 0),
            0xcd | 0xd1 => (0, false, 2, 0),
            0xce | 0xd2 => (0, false, 4, 0),
            0xcf | 0xd3 => (0, false, 8, 0),
            0xd4 => (0, false, 2, 0),
            0xd5 => (0, false, 3, 0),
            0xd6 => (0, false, 5, 0),
            0xd7 => (0, false, 9, 0),
            0xd8 => (0, false, 17, 0),
            0xdc => (be(pos, 2)?, false, 0, 2),
            0xdd => (be(pos, 4)?, false, 0, 4),
            0xde => (be(pos, 2)?, true, 0, 2),
            0xdf => (be(pos, 4)?, true, 0, 4),
            0xc1 => return Err(ProtocolError::Decode("reserved msgpack marker 0xc1".into())),
        };
        pos += skip;
        let left = bytes.len().saturating_sub(pos);
        let values = if pairs {
            items.saturating_mul(2)
        } else {
            items
        };
        if values > left {
            return too_big(format!(
                "a header at byte {} claims {values} values but only {left} bytes follow",
                pos - skip - 1
            ));
        }
        if payload > left {
            return too_big(format!(
                "a header at byte {} claims {payload} bytes but only {left} follow",
                pos - skip - 1
            ));
        }
        pos += payload;
        pending += values;
        let elem = if pairs { 2 * VALUE_SIZE } else { VALUE_SIZE };
        total = total
            .saturating_add(VALUE_SIZE)
            .saturating_add(vector(items, elem))
            .saturating_add(if payload > 0 { 3 * payload } else { 0 });
        if total > MAX_DECODED {
            return too_big(format!(
                "it would decode to more than {} MiB",
                MAX_DECODED >> 20
            ));
        }
    }
    Ok(total)
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request for the other side to act; `fields` holds every key except
    /// `seq_number` and `op` (e.g. `command_id`, `args`).
    Request {
        seq: i64,
        op: String,
        fields: Vec<(String, Value)>,
    },
    /// The answer to the request with the same `seq`.
    Response {
        seq: i64,
        result: Value,
        is_exception: bool,
    },
}

impl Message {
    /// A request with the given extra fields.
    pub fn request(seq: i64, op: &str, fields: Vec<(&str, Value)>) -> Message {
        Message::Request {
            seq,
            op: op.to_string(),
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    /// A successful response carrying `result` (`Nil` for "done").
    pub fn ok(seq: i64, result: Value) -> Message {
        Message::Response {
            seq,
            result,
            is_exception: false,
        }
    }

    /// A failed response: the peer sees `is_exception = true` and the message.
    pub fn error(seq: i64, message: impl Into<String>) -> Message {
        Message::Response {
            seq,
            result: Value::from(message.into()),
            is_exception: true,
        }
    }

    /// The value of a request field, if this is a request that has it.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Message::Request { fields, .. } => {
                fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
            }
            Message::Response { .. } => None,
        }
    }

    /// Encode to the bytes of one binary WebSocket frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut entries: Vec<(Value, Value)> = Vec::new();
        match self {
            Message::Request { seq, op, fields } => {
                entries.push((Value::from("seq_number"), Value::from(*seq)));
                entries.push((Value::from("op"), Value::from(op.as_str())));
                for (k, v) in fields {
                    entries.push((Value::from(k.as_str()), v.clone()));
                }
            }
            Message::Response {
                seq,
                result,
                is_exception,
            } => {
                entries.push((Value::from("seq_number"), Value::from(*seq)));
                entries.push((Value::from("op"), Value::from("response")));
                entries.push((Value::from("result"), result.clone()));
                if *is_exception {
                    entries.push((Value::from("is_exception"), Value::from(true)));
                }
            }
        }
        let mut out = Vec::with_capacity(64);
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut out, &Value::Map(entries));
        out
    }

    /// Decode one binary frame, in memory bounded by [`MAX_DECODED`].
    pub fn decode(bytes: &[u8]) -> Result<Message, ProtocolError> {
        decoded_size(bytes)?;
        let mut rd = bytes;
        let value =
            rmpv::decode::read_value(&mut rd).map_err(|e| ProtocolError::Decode(e.to_string()))?;
        let Value::Map(entries) = value else {
            return Err(ProtocolError::NotAMap);
        };
        let mut seq = None;
        let mut op = None;
        let mut is_exception = false;
        let mut fields = Vec::new();
        for (k, v) in entries {
            let key = match k {
                Value::String(s) => s.into_str().unwrap_or_default(),
                Value::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                _ => continue,
            };
            match key.as_str() {
                "seq_number" => seq = v.as_i64(),
                "op" => op = value_str(&v).map(str::to_string),
                "is_exception" => is_exception = v.as_bool().unwrap_or(false),
                _ => {}
            }
            if key != "seq_number" && key != "op" {
                fields.push((key, v));
            }
        }
        let seq = seq.ok_or(ProtocolError::NoSeq)?;
        let op = op.ok_or(ProtocolError::NoOp)?;
        if op == "response" {
            // Moved out, not copied: a result may be a file's block. The last
            // `result` key wins, as it would in a Python dict.
            let result = fields
                .iter()
                .rposition(|(k, _)| k == "result")
                .map(|i| fields.swap_remove(i).1)
                .unwrap_or(Value::Nil);
            Ok(Message::Response {
                seq,
                result,
                is_exception,
            })
        } else {
            Ok(Message::Request { seq, op, fields })
        }
    }
}

/// A msgpack string (or binary holding UTF-8) as `&str`. Python workers send
/// some strings as `bin`, so both are accepted.
pub fn value_str(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => s.as_str(),
        Value::Binary(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// Look a key up in a msgpack map value.
pub fn map_get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    match map {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| value_str(k) == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Build a msgpack map from string keys.
pub fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let m = Message::request(
            7,
            "start_command",
            vec![
                ("command_id", Value::from("c1")),
                ("args", map(vec![("workdir", Value::from("build"))])),
            ],
        );
        let back = Message::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.field("command_id"), Some(&Value::from("c1")));
    }

    #[test]
    fn response_round_trips_with_exception() {
        let m = Message::error(3, "no such command");
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        let ok = Message::ok(4, Value::Nil);
        assert_eq!(Message::decode(&ok.encode()).unwrap(), ok);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Message::decode(&[0xc1]).is_err());
        let not_map = {
            let mut v = Vec::new();
            rmpv::encode::write_value(&mut v, &Value::from(3)).unwrap();
            v
        };
        assert!(matches!(
            Message::decode(&not_map),
            Err(ProtocolError::NotAMap)
        ));
    }
}
