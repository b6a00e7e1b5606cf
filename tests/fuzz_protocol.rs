//! Fuzzing the worker protocol (issue 18): the msgpack frame decoder and every
//! message the master and the slave read from each other, with a few hundred
//! cases a target here (the long run is `cargo bench --bench fuzz`), and the
//! regression tests of the bugs the fuzzing found.

#[path = "support/mod.rs"]
mod support;

#[path = "fuzz_common/mod.rs"]
mod fuzz_common;

use fuzz_common::protocol;

#[test]
fn fuzz_frame_decoder() {
    println!("{}", protocol::decode(600).line());
}

#[test]
fn fuzz_master_reads_slave_messages() {
    println!("{}", protocol::master_reads(400).line());
}

#[test]
fn fuzz_slave_reads_master_frames() {
    println!("{}", fuzz_common::wire::slave_session(300).line());
}

#[test]
fn fuzz_master_reads_slave_frames() {
    println!("{}", fuzz_common::wire::master_session(300).line());
}

// ---------------------------------------------------------------- regressions

use autobot::protocol::{map, Message, ProtocolError, MAX_DECODED};
use fuzz_common::harness::{mark, peak_since};
use fuzz_common::wire::{Frame, SlaveFrame, Slot};
use rmpv::Value;

/// Found by `fuzz_frame_decoder` (header bombs): a length field claiming 4 GB is
/// refused before anything is allocated for it.
#[test]
fn regression_headers_claiming_gigabytes_are_refused_before_allocating() {
    let mut in_request = Message::request(1, "update", vec![]).encode();
    in_request[0] += 1;
    in_request.extend(rmp_args_bomb());
    for frame in [
        vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0],
        vec![0xdf, 0xff, 0xff, 0xff, 0xff],
        vec![0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        vec![0xc9, 0xff, 0xff, 0xff, 0xff, 1],
        in_request,
    ] {
        let base = mark();
        let r = Message::decode(&frame);
        let used = peak_since(base);
        assert!(
            matches!(r, Err(ProtocolError::TooBig(_))),
            "{frame:?}: {r:?}"
        );
        assert!(used < 4096, "{frame:?} allocated {used} bytes");
    }
}

fn rmp_args_bomb() -> Vec<u8> {
    let mut b = vec![0xa4];
    b.extend(b"args");
    b.extend([0xdb, 0xff, 0xff, 0xff, 0xff, b'x']);
    b
}

/// Found by `fuzz_frame_decoder` (amplifiers): 8 MiB of `[nil]` elements used to
/// decode to over 1 GiB; a frame is now measured first and refused.
#[test]
fn regression_small_elements_cannot_amplify_a_frame() {
    let n: usize = 4 << 20;
    let mut frame = vec![0xdd];
    frame.extend((n as u32).to_be_bytes());
    for _ in 0..n {
        frame.extend([0x91, 0xc0]);
    }
    let base = mark();
    let r = Message::decode(&frame);
    let used = peak_since(base);
    assert!(
        matches!(r, Err(ProtocolError::TooBig(_))),
        "{:?}",
        r.map(|_| ())
    );
    assert!(used < 4096, "allocated {used} bytes");
    // Within the budget, the same shape decodes (as a map with a seq and an op).
    let ok = Message::request(
        1,
        "update",
        vec![(
            "args",
            Value::Array(vec![Value::Array(vec![Value::Nil]); 10_000]),
        )],
    );
    let base = mark();
    assert_eq!(Message::decode(&ok.encode()).unwrap(), ok);
    assert!(peak_since(base) < MAX_DECODED);
}

/// Found by `fuzz_master_reads_slave_frames`: `update_upload_file_utime` with a
/// time that is infinite, NaN or past what SystemTime holds panicked the master's
/// connection task (leaving the slave listed but deaf); `update_read_file` with a
/// `length` of 2^64-1 overflowed.
#[test]
fn regression_master_survives_bad_times_and_lengths() {
    let utime = |a: Value, m: Value| {
        SlaveFrame::About(
            Slot::Upload,
            10,
            "update_upload_file_utime",
            vec![("access_time", a), ("modified_time", m)],
        )
    };
    let frames = vec![
        utime(Value::F64(f64::INFINITY), Value::F64(1.0)),
        utime(Value::F64(1e300), Value::F64(1e300)),
        utime(Value::F64(f64::NAN), Value::F64(-1.0)),
        utime(Value::from(u64::MAX), Value::from(i64::MAX)),
        SlaveFrame::About(
            Slot::Download,
            11,
            "update_read_file",
            vec![("length", Value::from(u64::MAX))],
        ),
        SlaveFrame::About(
            Slot::Download,
            12,
            "update_read_file",
            vec![("length", Value::from(u64::MAX - 1))],
        ),
    ];
    fuzz_common::wire::master_fixed(frames).unwrap();
}

/// Found by `fuzz_slave_reads_master_frames`: `buffer_timeout` NaN in
/// `set_worker_settings` panicked the slave's session, and `sigtermTime` NaN in a
/// `shell` command panicked the command's task (it never completed).
#[test]
fn regression_slave_survives_nan_settings_and_times() {
    let settings = Message::request(
        1,
        "set_worker_settings",
        vec![(
            "args",
            map(vec![
                ("buffer_size", Value::F64(f64::NAN)),
                ("buffer_timeout", Value::F64(f64::NAN)),
                ("newline_re", Value::from("\\n")),
                ("max_line_length", Value::F64(f64::NAN)),
            ]),
        )],
    );
    fuzz_common::wire::slave_fixed(vec![Frame::Msg(settings)], None).unwrap();
    let shell = Message::request(
        2,
        "start_command",
        vec![
            ("command_id", Value::from("nan")),
            ("command_name", Value::from("shell")),
            (
                "args",
                map(vec![
                    ("command", Value::Array(vec![Value::from("true")])),
                    ("workdir", Value::from("build")),
                    ("sigtermTime", Value::F64(f64::NAN)),
                    ("timeout", Value::F64(f64::NAN)),
                    ("maxTime", Value::F64(f64::INFINITY)),
                ]),
            ),
        ],
    );
    fuzz_common::wire::slave_fixed(vec![Frame::Msg(shell)], Some("nan")).unwrap();
}
