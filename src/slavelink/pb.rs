//! Buildbot's PB protocol recognised on the slave port, so a stock
//! `buildbot-worker` made the usual way (`create-worker` defaults to PB) is told
//! what is wrong instead of timing out in silence.
//!
//! A PB client speaks Twisted's Banana and waits for the server to speak first:
//! it sends nothing until the server offers its dialects. A WebSocket client
//! sends its `GET` upgrade at once. So a connection that has sent nothing for
//! two seconds is offered Banana's dialects (`["pb", "none"]`); a PB client answers
//! `"pb"`, then its `version` and its `login` call to the root object, which
//! carries the slave's name. autobot answers no further: it logs (once per
//! address and name) how to switch the worker to `msgpack_experimental_v7`, and
//! closes the connection.
//!
//! Only a few bytes are decoded, with bounds on length and nesting, and the
//! decoder never allocates more than the bytes it was given.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a silent connection waits before it is offered Banana's dialects: a
/// WebSocket client has sent its upgrade long before.
pub(crate) const QUIET: Duration = Duration::from_secs(2);

/// How long a PB client may take to choose its dialect and log in.
const ANSWER: Duration = Duration::from_secs(5);

/// Bytes of a PB client's first messages read, at most.
const MAX_READ: usize = 4096;

/// Banana's dialect offer `["pb", "none"]`, as a Twisted PB server sends it.
const DIALECT_OFFER: &[u8] = b"\x02\x80\x02\x82pb\x04\x82none";

/// A PB client's choice of the `pb` dialect: the string `"pb"`.
const PB_CHOICE: &[u8] = b"\x02\x82pb";

/// What to do about it: the text of the log line and of the slave's `problem`.
pub const FIX: &str = "autobot's slave port speaks only Buildbot's msgpack_experimental_v7 \
    protocol: create the worker with `buildbot-worker create-worker \
    --protocol=msgpack_experimental_v7 ...`, or set `protocol = 'msgpack_experimental_v7'` \
    in an existing worker's buildbot.tac, and restart it";

/// What a PB probe found.
#[derive(Debug, PartialEq)]
pub(crate) enum Probe {
    /// Bytes came first: an ordinary (WebSocket) client; nothing was consumed.
    Talks,
    /// A PB client; the name it logged in with, if it got that far.
    Pb(Option<String>),
    /// Silent, or answered the offer with something that is not PB.
    Unknown,
}

/// Wait up to [`QUIET`] for the client's first byte; if none comes, offer
/// Banana's dialects and see whether it answers as a PB client.
pub(crate) async fn probe(stream: &mut TcpStream) -> Probe {
    let mut first = [0u8; 1];
    match tokio::time::timeout(QUIET, stream.peek(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return Probe::Unknown,
        Ok(Ok(_)) => return Probe::Talks,
        Err(_) => {}
    }
    if stream.write_all(DIALECT_OFFER).await.is_err() {
        return Probe::Unknown;
    }
    let deadline = Instant::now() + ANSWER;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        let head = buf.len().min(PB_CHOICE.len());
        if buf[..head] != PB_CHOICE[..head] {
            return Probe::Unknown;
        }
        if buf.len() >= PB_CHOICE.len() {
            if let Some(name) = login_name(&buf[PB_CHOICE.len()..]) {
                return Probe::Pb(Some(name));
            }
        }
        if buf.len() >= MAX_READ {
            break;
        }
    }
    if buf.starts_with(PB_CHOICE) {
        Probe::Pb(None)
    } else {
        Probe::Unknown
    }
}

/// One Banana expression.
#[derive(Debug, PartialEq)]
enum Banana {
    List(Vec<Banana>),
    Int(i64),
    Str(Vec<u8>),
    /// A string of the `pb` dialect's vocabulary, by number.
    Vocab(i64),
    Float,
}

/// The `pb` dialect's numbers of the words a login uses.
const VOCAB_TUPLE: i64 = 11;
const VOCAB_LOGIN: i64 = 20;
const VOCAB_MESSAGE: i64 = 26;

/// Deepest nesting decoded.
const MAX_DEPTH: u32 = 8;

/// Decode one expression at the start of `buf`: it and the bytes it took, or
/// `None` when `buf` ends first or it is not Banana.
fn decode(buf: &[u8], depth: u32) -> Option<(Banana, usize)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut n: u64 = 0;
    let mut i = 0;
    while i < buf.len() && buf[i] < 0x80 {
        if i >= 9 {
            return None;
        }
        n |= u64::from(buf[i]) << (7 * i);
        i += 1;
    }
    let kind = *buf.get(i)?;
    let mut at = i + 1;
    let value = match kind {
        0x80 => {
            let len = usize::try_from(n).ok()?;
            // Each item takes at least two bytes: a list longer than what is left
            // is cut short anyway, so nothing is reserved for it.
            let mut items = Vec::new();
            for _ in 0..len {
                let (item, used) = decode(&buf[at..], depth + 1)?;
                items.push(item);
                at += used;
            }
            Banana::List(items)
        }
        0x81 | 0x85 => Banana::Int(i64::try_from(n).ok()?),
        0x83 | 0x86 => Banana::Int(-i64::try_from(n).ok()?),
        0x82 => {
            let len = usize::try_from(n).ok()?;
            let end = at.checked_add(len)?;
            let s = buf.get(at..end)?.to_vec();
            at = end;
            Banana::Str(s)
        }
        0x84 => {
            buf.get(at..at + 8)?;
            at += 8;
            Banana::Float
        }
        0x87 => Banana::Vocab(i64::try_from(n).ok()?),
        _ => return None,
    };
    Some((value, at))
}

fn is_word(b: &Banana, vocab: i64, word: &str) -> bool {
    match b {
        Banana::Vocab(n) => *n == vocab,
        Banana::Str(s) => s == word.as_bytes(),
        _ => false,
    }
}

/// The name in a PB client's `login` call among the expressions of `buf` (what
/// follows its dialect choice): `["message", ID, "root", "login", 1,
/// ["tuple", NAME], ["dictionary"]]`, NAME a string or `["unicode", NAME]`.
fn login_name(mut buf: &[u8]) -> Option<String> {
    while let Some((expr, used)) = decode(buf, 0) {
        buf = &buf[used..];
        let Banana::List(items) = expr else { continue };
        if items.len() < 6
            || !is_word(&items[0], VOCAB_MESSAGE, "message")
            || !is_word(&items[3], VOCAB_LOGIN, "login")
        {
            continue;
        }
        let Banana::List(args) = &items[5] else {
            return None;
        };
        if !args
            .first()
            .is_some_and(|a| is_word(a, VOCAB_TUPLE, "tuple"))
        {
            return None;
        }
        let name = match args.get(1)? {
            Banana::Str(s) => s.as_slice(),
            Banana::List(u) => match u.as_slice() {
                [Banana::Str(tag), Banana::Str(s)] if tag == b"unicode" => s.as_slice(),
                _ => return None,
            },
            _ => return None,
        };
        let name = std::str::from_utf8(name).ok()?;
        let fine =
            !name.is_empty() && name.chars().count() <= 100 && !name.chars().any(char::is_control);
        return fine.then(|| name.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What buildbot-worker 4.3.0 (`protocol = 'pb'`) sent after the offer.
    const RECORDED: &[u8] = b"\x02\x82pb\x02\x80\x13\x87\x06\x81\x07\x80\x1a\x87\x01\x81\x04\x82root\x14\x87\x01\x81\x02\x80\x0b\x87\x07\x82pbslave\x01\x80\x05\x87";

    #[test]
    fn reads_the_login_name_of_a_recorded_worker() {
        assert!(RECORDED.starts_with(PB_CHOICE));
        assert_eq!(
            login_name(&RECORDED[PB_CHOICE.len()..]),
            Some("pbslave".into())
        );
    }

    #[test]
    fn cut_short_or_garbage_gives_no_name() {
        for end in PB_CHOICE.len()..RECORDED.len() - 1 {
            assert_eq!(login_name(&RECORDED[PB_CHOICE.len()..end]), None, "{end}");
        }
        assert_eq!(login_name(b"GET / HTTP/1.1\r\n"), None);
        // A list claiming a huge length reserves nothing and ends.
        assert_eq!(
            login_name(b"\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x01\x80"),
            None
        );
        // Deep nesting stops at MAX_DEPTH.
        assert_eq!(login_name(&[0x01, 0x80].repeat(1000)), None);
    }

    #[test]
    fn a_unicode_name_is_read() {
        let msg = b"\x07\x80\x1a\x87\x01\x81\x04\x82root\x14\x87\x01\x81\x02\x80\x0b\x87\x02\x80\x07\x82unicode\x02\x82s1\x01\x80\x05\x87";
        assert_eq!(login_name(msg), Some("s1".into()));
    }
}
