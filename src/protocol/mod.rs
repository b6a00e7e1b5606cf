//! Buildbot's `msgpack_experimental_v7` worker protocol, shared by master and slave.
//!
//! One WebSocket binary frame carries one msgpack map. A map is either a request
//! (`seq_number`, `op` other than `response`, plus op-specific keys) or a response
//! (`seq_number`, `op = "response"`, `result`, optional `is_exception`). Every request
//! is answered by exactly one response with the same `seq_number`. This module only
//! knows the shape of frames; what an `op` means lives in `master` and `slave`.
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

    /// Decode one binary frame.
    pub fn decode(bytes: &[u8]) -> Result<Message, ProtocolError> {
        let mut rd = bytes;
        let value =
            rmpv::decode::read_value(&mut rd).map_err(|e| ProtocolError::Decode(e.to_string()))?;
        let Value::Map(entries) = value else {
            return Err(ProtocolError::NotAMap);
        };
        let mut seq = None;
        let mut op = None;
        let mut result = Value::Nil;
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
                "result" => result = v.clone(),
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
