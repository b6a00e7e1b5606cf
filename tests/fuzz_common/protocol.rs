//! Fuzz targets of the worker protocol's pure parts: the msgpack frame decoder
//! ([`autobot::protocol::Message::decode`]) and the master's readers of what a
//! slave sends (worker info, `update` pairs).

use std::time::Duration;

use autobot::protocol::{Message, MAX_DECODED};
use autobot::slavelink::{SlaveInfo, Update};
use proptest::collection::vec;
use proptest::prelude::*;
use rmpv::Value;

use super::gen::{self, encode, mutate, mutation, value, weird_string};
use super::harness::{fuzz, MemoryBound, Report, Target};

/// Every op either side sends, and some it does not.
pub const OPS: &[&str] = &[
    "print",
    "keepalive",
    "get_worker_info",
    "set_worker_settings",
    "start_command",
    "interrupt_command",
    "shutdown",
    "update",
    "complete",
    "update_upload_file_write",
    "update_upload_directory_write",
    "update_upload_file_close",
    "update_upload_file_utime",
    "update_upload_directory_unpack",
    "update_read_file",
    "update_read_file_close",
    "response",
    "",
    "nonexistent",
];

/// Field names the protocol uses.
pub const KEYS: &[&str] = &[
    "command_id",
    "command_name",
    "args",
    "message",
    "why",
    "result",
    "is_exception",
    "length",
    "access_time",
    "modified_time",
    "seq_number",
    "op",
];

/// A protocol message with plausible fields (values of any type).
pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        3 => (
            gen::edge_i64(),
            prop::sample::select(OPS),
            vec((prop::sample::select(KEYS), value(3)), 0..5),
        )
            .prop_map(|(seq, op, fields)| Message::request(seq, op, fields)),
        1 => (gen::edge_i64(), value(3), any::<bool>()).prop_map(|(seq, result, exc)| {
            Message::Response {
                seq,
                result,
                is_exception: exc,
            }
        }),
    ]
}

/// A length-carrying msgpack header claiming far more than follows (GBs), alone
/// or inside a valid request.
pub fn header_bomb() -> impl Strategy<Value = Vec<u8>> {
    let claim = (
        prop::sample::select(vec![0xc6u8, 0xdb, 0xc9, 0xdd, 0xdf, 0xc5, 0xda, 0xdc, 0xde]),
        prop_oneof![
            Just(u32::MAX),
            Just(u32::MAX - 1),
            Just(1u32 << 31),
            1u32 << 16..u32::MAX
        ],
        vec(any::<u8>(), 0..24),
    )
        .prop_map(|(marker, len, tail)| {
            let mut b = vec![marker];
            match marker {
                0xc5 | 0xda | 0xdc | 0xde => b.extend_from_slice(&(len as u16).to_be_bytes()),
                _ => b.extend_from_slice(&len.to_be_bytes()),
            }
            b.extend(tail);
            b
        });
    (claim, 0usize..3).prop_map(|(bomb, wrap)| match wrap {
        0 => bomb,
        1 => {
            // {"seq_number": 1, "op": "update", "args": BOMB}
            let mut b = encode(&Value::Map(vec![
                (Value::from("seq_number"), Value::from(1)),
                (Value::from("op"), Value::from("update")),
            ]));
            b[0] = 0x83;
            b.extend(encode(&Value::from("args")));
            b.extend(bomb);
            b
        }
        _ => {
            // Nested: an array of three arrays each claiming the bomb.
            let mut b = vec![0x93];
            for _ in 0..3 {
                b.extend(&bomb);
            }
            b
        }
    })
}

/// Frames whose small elements decode to much larger values: `[nil, nil, …]`,
/// `[[nil], [nil], …]`, `{nil: nil, …}` with up to hundreds of thousands of
/// elements.
pub fn amplifier() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![
            &[0xc0u8][..],
            &[0x91, 0xc0],
            &[0x90],
            &[0xa0],
            &[0x80],
        ]),
        1000usize..200_000,
        any::<bool>(),
    )
        .prop_map(|(elem, n, map)| {
            let mut b = Vec::with_capacity(5 + n * elem.len() * 2);
            if map {
                b.push(0xdf);
                b.extend_from_slice(&(n as u32).to_be_bytes());
                for _ in 0..n {
                    b.extend_from_slice(elem);
                    b.extend_from_slice(elem);
                }
            } else {
                b.push(0xdd);
                b.extend_from_slice(&(n as u32).to_be_bytes());
                for _ in 0..n {
                    b.extend_from_slice(elem);
                }
            }
            b
        })
}

/// Any frame: random bytes, valid messages, mutated messages, header bombs and
/// amplifiers.
pub fn frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..300),
        3 => message().prop_map(|m| m.encode()),
        4 => (message(), vec(mutation(), 1..5)).prop_map(|(m, muts)| mutate(m.encode(), &muts)),
        2 => header_bomb(),
        1 => amplifier(),
    ]
}

/// `Message::decode` on any frame: no panic, memory within [`MAX_DECODED`], and
/// what it accepts re-encodes to a frame that decodes to the same message.
pub fn decode(cases: u64) -> Report {
    let target = Target {
        name: "protocol_frame_decode",
        limit: Duration::from_secs(10),
        memory: MemoryBound {
            base: MAX_DECODED + (1 << 20),
            per_input_byte: 4,
        },
    };
    fuzz(&target, cases, frame(), Vec::len, |bytes| {
        let Ok(m) = Message::decode(bytes) else {
            return Ok(());
        };
        let _ = m.field("args");
        let again = m.encode();
        let back = Message::decode(&again)
            .map_err(|e| format!("re-encoded message does not decode: {e}"))?;
        if back.encode() != again {
            return Err(format!(
                "decode(encode(m)) differs from m: {m:?} vs {back:?}"
            ));
        }
        Ok(())
    })
}

/// A worker-info map as `get_worker_info` answers it, with its fields mutated.
fn worker_info() -> impl Strategy<Value = Value> {
    let field = |k: &'static str| {
        prop_oneof![
            3 => weird_string().prop_map(Value::from),
            1 => value(2),
        ]
        .prop_map(move |v| (Value::from(k), v))
    };
    (
        vec(
            prop_oneof![
                field("admin"),
                field("host"),
                field("os"),
                field("os_pretty_name"),
                field("os_id"),
                field("system"),
                field("basedir"),
                field("version"),
                field("numcpus"),
                field("autobot_text_output"),
                field("environ"),
                (
                    Just(Value::from("worker_commands")),
                    vec((value(1), value(1)), 0..6).prop_map(Value::Map),
                ),
            ],
            0..10,
        ),
        any::<bool>(),
    )
        .prop_map(|(entries, as_map)| {
            if as_map {
                Value::Map(entries)
            } else {
                Value::Array(entries.into_iter().map(|(_, v)| v).collect())
            }
        })
}

/// The master's readers of a slave's messages: worker info (and the builder
/// paths made from it) and every `update` pair, on near-valid and random values.
pub fn master_reads(cases: u64) -> Report {
    let target = Target {
        name: "protocol_master_reads",
        limit: Duration::from_secs(10),
        memory: MemoryBound {
            base: 1 << 20,
            per_input_byte: 64,
        },
    };
    let keys = prop::sample::select(vec![
        "stdout",
        "stderr",
        "header",
        "log",
        "rc",
        "elapsed",
        "stat",
        "files",
        "file",
        "failure_reason",
        "got_revision",
        "",
    ]);
    let input = (worker_info(), vec((keys, value(3)), 0..8), weird_string());
    fuzz(
        &target,
        cases,
        input,
        |(info, updates, name)| {
            encode(info).len()
                + updates.iter().map(|(_, v)| encode(v).len()).sum::<usize>()
                + name.len()
        },
        |(info_value, updates, builder)| {
            let info = SlaveInfo::from_value(info_value);
            let _ = info.to_row();
            let dir = info.builder_dir(builder);
            if !dir.ends_with(builder.as_str()) {
                return Err(format!("builder_dir({builder:?}) = {dir:?}"));
            }
            for (k, v) in updates {
                match Update::from_pair(k, v.clone()) {
                    Update::Rc(rc) if v.as_i64() != Some(rc) => {
                        return Err(format!("rc {v:?} read as {rc}"))
                    }
                    _ => {}
                }
            }
            Ok(())
        },
    )
}
