//! Generators shared by the fuzz targets: msgpack values with edge cases, strings
//! with weird characters, and byte-level mutations of valid inputs.

use proptest::collection::vec;
use proptest::prelude::*;
use rmpv::Value;

/// Strings that break naive parsers: empty, whitespace, quotes, escapes, control
/// characters, NUL, non-ASCII, right-to-left marks, very long runs.
pub fn weird_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,24}",
        2 => any::<String>().prop_map(|s| s.chars().take(40).collect()),
        1 => Just(String::new()),
        1 => prop::sample::select(vec![
            " ", "\t", "\n", "\r\n", "\0", "\\", "\"", "'", ";", "#", "=", ":", "[", "]",
            "..", "../..", "/", "//", "%(x)s", "$(id)", "`id`", "-", "--", "\u{feff}",
            "\u{202e}", "é", "日本", "\u{7f}", "\u{1b}[2J", "a\u{0}b", "ab\\", "''",
            "\"\"", "-1", "+1", "0x10", "1e999", "NaN", "inf", "18446744073709551616",
            "9223372036854775808", "-9223372036854775809", "4294967296",
        ])
        .prop_map(str::to_string),
        1 => (prop::sample::select(vec!["a", "\\", "\"", "'", " ", "é", "\0", "["]), 100usize..3000)
            .prop_map(|(s, n)| s.repeat(n)),
    ]
}

/// Numbers at the edges of every type a parser may use.
pub fn edge_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => -5i64..70,
        1 => prop::sample::select(vec![
            i64::MIN, i64::MIN + 1, -1, 0, 1, 59, 60, 255, 256, 65535, 65536,
            i64::from(i32::MAX), i64::from(u32::MAX), i64::MAX - 1, i64::MAX,
        ]),
        1 => any::<i64>(),
    ]
}

pub fn edge_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => -10.0f64..1e4,
        1 => prop::sample::select(vec![
            f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, f64::MIN_POSITIVE,
            f64::MAX, f64::MIN, 1e19, 1.8446744073709552e19, 1e300, -1e300, 4e9, 1e10,
        ]),
        1 => any::<f64>(),
    ]
}

/// A msgpack value of any kind, nested up to `depth` levels.
pub fn value(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        edge_i64().prop_map(Value::from),
        prop::sample::select(vec![u64::MAX, u64::MAX - 1, 1u64 << 63]).prop_map(Value::from),
        edge_f64().prop_map(Value::F64),
        any::<f32>().prop_map(Value::F32),
        weird_string().prop_map(Value::from),
        vec(any::<u8>(), 0..40).prop_map(Value::Binary),
        // Invalid UTF-8 in a `str`.
        vec(any::<u8>(), 1..10).prop_map(|mut b| {
            b.push(0xff);
            let mut raw = vec![0xa0 | b.len() as u8];
            raw.extend(b);
            rmpv::decode::read_value(&mut raw.as_slice()).expect("a fixstr decodes")
        }),
        (any::<i8>(), vec(any::<u8>(), 0..20)).prop_map(|(t, b)| Value::Ext(t, b)),
    ];
    leaf.prop_recursive(depth, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((inner.clone(), inner), 0..6).prop_map(Value::Map),
        ]
    })
    .boxed()
}

/// Encode a msgpack value.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("writing to a Vec");
    out
}

/// One change to a byte string.
#[derive(Debug, Clone)]
pub enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop_oneof![
                any::<u8>(),
                // msgpack markers that carry lengths.
                prop::sample::select(vec![
                    0xc4u8, 0xc5, 0xc6, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xc9, 0xff, 0x00,
                    0xc1
                ]),
            ]
        )
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), vec(any::<u8>(), 1..6)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

/// Apply mutations in order (positions wrap around the current length).
pub fn mutate(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = bytes.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::Flip(i, b) if len > 0 => bytes[at(*i)] ^= b,
            Mutation::Set(i, b) if len > 0 => bytes[at(*i)] = *b,
            Mutation::Insert(i, b) => {
                let p = if len == 0 { 0 } else { i % (len + 1) };
                bytes.splice(p..p, b.iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let p = at(*i);
                let end = (p + n).min(len);
                bytes.drain(p..end);
            }
            Mutation::Truncate(i) => bytes.truncate(if len == 0 { 0 } else { i % len }),
            Mutation::Duplicate(i, n) if len > 0 => {
                let p = at(*i);
                let end = (p + n).min(len);
                let copy: Vec<u8> = bytes[p..end].to_vec();
                bytes.splice(p..p, copy);
            }
            _ => {}
        }
    }
    bytes
}

/// Mutate a string at byte level, keeping it a string (invalid UTF-8 replaced).
pub fn mutate_str(s: &str, muts: &[Mutation]) -> String {
    String::from_utf8_lossy(&mutate(s.as_bytes().to_vec(), muts)).into_owned()
}
