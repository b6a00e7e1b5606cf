//! A step's log: `…/logs/LOG`, the HTML page that streams the log's bytes in
//! chunks (stderr and headers styled by channel, a growing log followed live by
//! the page script through `…/tail`), and `…/logs/LOG/text`, the raw bytes as
//! plain text (`?download` as a file). Memory stays at one chunk whatever the
//! log's size.

use std::collections::HashMap;

use bytes::Bytes;
use maud::html;
use tokio::io::AsyncReadExt;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::reply::Response;
use warp::Reply;

use super::{build_url, db_error, error_page, frame, security_headers, Pc};
use crate::logstore::Channel;
use crate::web::html::{self, builder_link, log_url, unseg};

/// Bytes read per chunk when streaming a log.
pub(crate) const LOG_CHUNK: usize = 64 * 1024;

/// Decode as much of `buf` as is whole UTF-8: (text, bytes used). Bad bytes become
/// U+FFFD; an incomplete character at the end is left for the next read unless
/// `at_end`.
pub(crate) fn decode_prefix(buf: &[u8], at_end: bool) -> (String, usize) {
    let mut out = String::with_capacity(buf.len());
    let mut i = 0;
    while i < buf.len() {
        match std::str::from_utf8(&buf[i..]) {
            Ok(s) => {
                out.push_str(s);
                i = buf.len();
            }
            Err(e) => {
                let good = e.valid_up_to();
                // Safe: from_utf8 said these bytes are valid.
                out.push_str(std::str::from_utf8(&buf[i..i + good]).unwrap_or_default());
                i += good;
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        i += n;
                    }
                    None if at_end => {
                        out.push('\u{FFFD}');
                        i = buf.len();
                    }
                    None => break,
                }
            }
        }
    }
    (out, i)
}

/// Split bytes starting at file offset `start` by channel runs: (channel, text)
/// pieces and the bytes used (an incomplete last character waits).
pub(crate) fn split_runs(
    runs: &[(u64, Channel)],
    start: u64,
    buf: &[u8],
    at_end: bool,
) -> (Vec<(Channel, String)>, usize) {
    let mut pieces = Vec::new();
    let mut used = 0usize;
    while used < buf.len() {
        let pos = start + used as u64;
        // The run holding `pos` and where the next one starts.
        let idx = runs.partition_point(|(o, _)| *o <= pos);
        let channel = if idx == 0 {
            Channel::Stdout
        } else {
            runs[idx - 1].1
        };
        let end = runs
            .get(idx)
            .map(|(o, _)| (*o - start) as usize)
            .unwrap_or(buf.len())
            .min(buf.len());
        let last = end == buf.len();
        let (text, n) = decode_prefix(&buf[used..end], !last || at_end);
        if !text.is_empty() {
            pieces.push((channel, text));
        }
        used += n;
        if n == 0 || (last && used < end) {
            break;
        }
    }
    (pieces, used)
}

fn channel_class(c: Channel) -> &'static str {
    match c {
        Channel::Stdout => "stdout",
        Channel::Stderr => "stderr",
        Channel::Header => "header",
    }
}

/// Pieces of a log as HTML: stdout as text, the other channels in a `<span>` of
/// their class; control characters replaced as on every page.
fn pieces_html(pieces: &[(Channel, String)]) -> String {
    let m = html! {
        @for (c, text) in pieces {
            @if *c == Channel::Stdout {
                (text)
            } @else {
                span class=(channel_class(*c)) { (text) }
            }
        }
    };
    html::no_controls(m.into_string())
}

/// A log a log URL names, opened: the URL's names decoded, the log's record, a
/// reader of its bytes and their length now (a growing log is read up to there).
struct Opened {
    builder: String,
    step: String,
    log: String,
    file: crate::db::builds::LogFile,
    bytes: crate::logstore::LogBytes,
    len: u64,
}

/// Open the log of the URL segments `b`/`n`/`s`/`l` (its step by name or
/// number); or the error page to answer with.
async fn open_log(pc: &Pc, b: &str, number: i64, s: &str, l: &str) -> Result<Opened, Response> {
    let (builder, step, log) = (unseg(b), unseg(s), unseg(l));
    let file = match pc.ctx.db.log_file(&builder, number, &step, &log).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            return Err(error_page(
                pc,
                warp::http::StatusCode::NOT_FOUND,
                "No such log",
                &format!("{builder} build {number} has no log {log:?} in a step {step:?}"),
            ))
        }
        Err(e) => return Err(db_error(pc, "log", e)),
    };
    if file.deleted {
        return Err(error_page(
            pc,
            warp::http::StatusCode::GONE,
            "Log deleted",
            &format!(
                "log {log:?} of step {step:?} of {builder} build {number} was deleted by logHorizon (the build is kept)"
            ),
        ));
    }
    match crate::logstore::log_reader(&file.path, file.complete).await {
        Ok((bytes, len)) => Ok(Opened {
            builder,
            step,
            log,
            file,
            bytes,
            len,
        }),
        Err(e) => {
            tracing::error!("log {}: {e}", file.path.display());
            Err(error_page(
                pc,
                warp::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Log missing",
                "the log file is missing",
            ))
        }
    }
}

pub(super) async fn log_page(
    b: String,
    n: i64,
    s: String,
    l: String,
    h: HeaderMap,
    pc: Pc,
) -> Response {
    let Opened {
        builder,
        step,
        log,
        file,
        bytes: f,
        len,
    } = match open_log(&pc, &b, n, &s, &l).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let runs = crate::logstore::read_channel_runs(&file.path)
        .unwrap_or_else(|_| vec![(0, Channel::Stdout)]);
    let url = log_url(&builder, n, &step, &log);
    let title = format!("{builder} #{n} {step} {log}");
    // The offset the live tail starts from is only known once the bytes are sent;
    // the page is streamed, so the tail starts at `len` read now.
    let head = html! {
        h1 {
            (builder_link(&builder)) " "
            a href=(build_url(&builder, n)) { "build #" (n) }
            ": " (step) " / " (log)
        }
        p {
            a href={ (url) "/text" } { "plain text" }
            " · "
            a href={ (url) "/text?download" } { "download" }
            span #log-state { @if !file.complete { " · " b { "live" } } }
        }
    };
    let (pre, post) = if h.contains_key("x-autobot-fragment") {
        (String::new(), String::new())
    } else {
        let config = pc.ctx.config.borrow().clone();
        let live = if file.complete { "" } else { "log" };
        html::page_halves(&frame(&pc, &config, &title, live))
    };
    let open = html! {
        pre.log #log data-tail={ (url) "/tail" } data-offset=(len) data-complete=(file.complete) {}
    }
    .into_string();
    // `<pre …>` without its end tag: the log's bytes go in between.
    let open = open.strip_suffix("</pre>").unwrap_or(&open);
    let first = html::no_controls(format!("{pre}{}{open}", head.into_string()));
    let last = format!("</pre>{post}");
    struct St {
        f: crate::logstore::LogBytes,
        pos: u64,
        len: u64,
        runs: Vec<(u64, Channel)>,
        pending: Vec<u8>,
        first: Option<String>,
        last: Option<String>,
    }
    let st = St {
        f,
        pos: 0,
        len,
        runs,
        pending: Vec::new(),
        first: Some(first),
        last: Some(last),
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((Ok::<Bytes, std::io::Error>(Bytes::from(first)), st));
        }
        let read_so_far = st.pos + st.pending.len() as u64;
        if read_so_far < st.len {
            let want = (st.len - read_so_far).min(LOG_CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            let n = match st.f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => return Some((Err(e), st)),
            };
            if n == 0 {
                st.len = read_so_far;
            }
            st.pending.extend_from_slice(&buf[..n]);
            let at_end = st.pos + st.pending.len() as u64 >= st.len;
            let (pieces, used) = split_runs(&st.runs, st.pos, &st.pending, at_end);
            st.pending.drain(..used);
            st.pos += used as u64;
            return Some((Ok(Bytes::from(pieces_html(&pieces))), st));
        }
        st.last.take().map(|l| (Ok(Bytes::from(l)), st))
    });
    let mut r = warp::reply::stream(crate::web::sse::body_stream(stream)).into_response();
    let hd = r.headers_mut();
    hd.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    hd.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(hd);
    r
}

pub(super) async fn log_text(
    b: String,
    n: i64,
    s: String,
    l: String,
    q: HashMap<String, String>,
    pc: Pc,
) -> Response {
    let Opened {
        builder,
        step,
        log,
        bytes: f,
        len,
        ..
    } = match open_log(&pc, &b, n, &s, &l).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let stream = tokio_util::io::ReaderStream::with_capacity(f, LOG_CHUNK);
    let mut r = warp::reply::stream(stream).into_response();
    let hd = r.headers_mut();
    hd.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    hd.insert(header::CONTENT_LENGTH, len.into());
    hd.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if q.contains_key("download") {
        use crate::logstore::safe_name;
        let fname = format!(
            "{}-{n}-{}-{}.log",
            safe_name(&builder),
            safe_name(&step),
            safe_name(&log)
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{fname}\"")) {
            hd.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_keeps_split_characters_for_later() {
        let s = "aé€".as_bytes();
        let (t, n) = decode_prefix(&s[..4], false);
        assert_eq!((t.as_str(), n), ("aé", 3));
        let (t, n) = decode_prefix(&s[..4], true);
        assert_eq!((t.as_str(), n), ("aé\u{FFFD}", 4));
        let (t, n) = decode_prefix(b"a\xffb", false);
        assert_eq!((t.as_str(), n), ("a\u{FFFD}b", 3));
    }

    #[test]
    fn runs_split_by_channel() {
        let runs = vec![
            (0, Channel::Header),
            (4, Channel::Stdout),
            (8, Channel::Stderr),
        ];
        let (p, n) = split_runs(&runs, 2, b"adoutxerr", true);
        assert_eq!(n, 9);
        assert_eq!(
            p,
            vec![
                (Channel::Header, "ad".to_string()),
                (Channel::Stdout, "outx".to_string()),
                (Channel::Stderr, "err".to_string())
            ]
        );
    }

    #[test]
    fn log_text_is_escaped_and_styled_by_channel() {
        let html = pieces_html(&[
            (Channel::Stdout, "<b>\u{1b}[1m&".to_string()),
            (Channel::Stderr, "err'\"".to_string()),
        ]);
        assert_eq!(
            html,
            "&lt;b&gt;\u{FFFD}[1m&amp;<span class=\"stderr\">err'&quot;</span>"
        );
    }
}
