//! A step's log: `…/logs/LOG`, the HTML page of one page of the log (`?page=N`
//! or `last`; [`logview`] says where pages start): numbered lines with `#L123`
//! anchors, stderr and headers styled by channel, ANSI colours, search and
//! "jump to first error" (`?first_error`), a growing log's last page followed
//! live by the page script through `…/tail`; `…/logs/LOG/text`, the raw
//! bytes as plain text (`?download` as a file); and `…/logs/LOG/search?q=TEXT`,
//! the lines of the whole log holding a text (case-insensitive, literal), each
//! linked on its page — the page script moves through them from the log page
//! with the JSON API's `…/search`, which [`find_in_log`] answers as well. A
//! page reads only its own bytes (a seek), so a 100 MB log's page costs one
//! page; a search streams through the log once.

use std::collections::HashMap;

use maud::html;
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::reply::Response;
use warp::Reply;

use super::logview::{self, PageIndex};
use super::{build_url, db_error, error_page, frame, security_headers, Pc};
use crate::logstore::Channel;
use crate::web::html::{self, builder_link, log_url, unseg};

/// What the timestamps switch's times are.
const TIMES_TIP: &str = "Each line's time is when the master received the piece of output \
     holding the line's start (the slave sends output up to 0.1 s after it is printed), \
     shown as the time since the step started; hover over a time for the clock time.";

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

/// `?page=N` (1-based, or `last`) of a log: which page, and the index when it
/// was needed (a first page is read without one, so it paints at once however
/// big the log).
async fn page_bounds(
    path: &std::path::Path,
    len: u64,
    page: Option<&str>,
    live: bool,
) -> std::io::Result<(usize, u64, u64, Option<std::sync::Arc<PageIndex>>)> {
    let wanted = match page {
        Some("last") => None,
        Some(p) => Some(p.parse::<usize>().unwrap_or(1).max(1) - 1),
        // A growing log opens on its last page, where the live tail is.
        None if live => None,
        None => Some(0),
    };
    if wanted == Some(0) {
        return Ok((0, 0, 1, None));
    }
    let ix = logview::index_of(path, len).await?;
    let last = ix.pages.len().saturating_sub(1);
    let p = wanted.unwrap_or(last).min(last);
    let (start, line) = ix.pages.get(p).copied().unwrap_or((0, 1));
    Ok((p, start, line, Some(ix)))
}

pub(super) async fn log_page(
    b: String,
    n: i64,
    s: String,
    l: String,
    q: HashMap<String, String>,
    h: HeaderMap,
    pc: Pc,
) -> Response {
    let Opened {
        builder,
        step,
        log,
        file,
        len,
        ..
    } = match open_log(&pc, &b, n, &s, &l).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let url = log_url(&builder, n, &step, &log);
    let failed = |e: std::io::Error| {
        tracing::error!("log {}: {e}", file.path.display());
        error_page(
            &pc,
            warp::http::StatusCode::INTERNAL_SERVER_ERROR,
            "Log unreadable",
            "the log file cannot be read",
        )
    };
    if let Some(line) = q.get("line").and_then(|l| l.parse::<u64>().ok()) {
        let ix = match logview::index_of(&file.path, len).await {
            Ok(ix) => ix,
            Err(e) => return failed(e),
        };
        // `at` tells the page script not to look again for a line past the end.
        return super::see_other(&format!("{url}?page={}&at={line}", ix.page_of(line) + 1));
    }
    if q.contains_key("first_error") {
        let ix = match logview::index_of(&file.path, len).await {
            Ok(ix) => ix,
            Err(e) => return failed(e),
        };
        let to = match ix.first_error {
            Some(line) => format!("{url}?page={}#L{line}", ix.page_of(line) + 1),
            None => format!("{url}?page=1#no-error"),
        };
        return super::see_other(&to);
    }
    let (p, start, first_line, ix) = match page_bounds(
        &file.path,
        len,
        q.get("page").map(String::as_str),
        !file.complete,
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    // One byte past the page's cap shows whether more follow.
    let end = match ix.as_ref().and_then(|ix| ix.pages.get(p + 1)) {
        Some((o, _)) => *o,
        None if ix.is_some() => len,
        None => len.min(start + logview::PAGE_BYTES + 1),
    };
    let mut buf = match crate::logstore::log_range(&file.path, start, end).await {
        Ok(b) => b,
        Err(e) => return failed(e),
    };
    if ix.is_none() {
        buf.truncate(logview::page_end(&buf));
    }
    let page_to = start + buf.len() as u64;
    let more = page_to < len;
    let pages = ix.as_ref().map(|ix| ix.pages.len());
    let runs = crate::logstore::read_channel_runs(&file.path)
        .unwrap_or_else(|_| vec![(0, Channel::Stdout)]);
    let (pieces, _) = split_runs(&runs, start, &buf, true);
    // Arrival times, as ms after the Step's start (or the log's first output).
    let times = crate::logstore::read_times(&file.path).unwrap_or_else(|e| {
        tracing::warn!("log {}: times unreadable: {e}", file.path.display());
        Vec::new()
    });
    let origin = file
        .step_started
        .map(|s| (s * 1000.0).round() as i64)
        .or(times.first().map(|t| t.1))
        .unwrap_or(0);
    let line_times = logview::line_times(&times, origin, start, &buf);
    let lines = logview::lines_html(&pieces, first_line, &line_times);
    // The live tail follows from the end of the last page only.
    let tailing = !file.complete && !more;
    let title = format!("{builder} #{n} {step} {log}");
    let page_link = |k: usize| format!("{url}?page={}", k + 1);
    let body = html! {
        h1 {
            (builder_link(&builder)) " "
            a href=(build_url(&builder, n)) { "build #" (n) }
            ": " (step) " / " (log)
        }
        p.log-links {
            a href={ (url) "/text" } { "plain text" }
            " · "
            a href={ (url) "/text?download" } { "download" } " (" (file.lines) " lines, " (len) " bytes)"
            " · "
            a #first-error href={ (url) "?first_error" } { "jump to first error" }
            span #log-state { @if !file.complete { " · " b { "live" } } }
        }
        nav.log-pages aria-label="log pages" {
            @if p > 0 {
                a #page-first href=(page_link(0)) { "⇤ first" } " "
                a #page-prev rel="prev" href=(page_link(p - 1)) { "← previous" } " "
            }
            span #page-no { "page " (p + 1) @if let Some(t) = pages { " of " (t) } }
            @if more {
                " " a #page-next rel="next" href=(page_link(p + 1)) { "next →" }
                " " a #page-last href={ (url) "?page=last" } { "last ⇥" }
            }
        }
        // Without the page script, the form lists the matches on a page of
        // their own; with it, Enter and the buttons move through them here.
        form #log-find.log-find role="search" action={ (url) "/search" } method="get"
            data-api={ "/api/v1" (url) "/search" } {
            input #log-search type="search" name="q" value=[q.get("q")]
                placeholder="search this log" aria-label="search this log";
            " " button #log-go type="submit" { "search" }
            " " button #log-prev type="button" hidden { "↑ previous" }
            " " button #log-next type="button" hidden { "↓ next" }
            " " span #log-count aria-live="polite" {}
            " "
            @if times.is_empty() {
                label { input #log-times type="checkbox" disabled; " timestamps (not recorded for this log)" }
            } @else {
                label title=(TIMES_TIP) { input #log-times type="checkbox"; " timestamps" }
            }
        }
        pre.log #log data-tail=[tailing.then(|| format!("{url}/tail"))] data-offset=(page_to)
            data-t0=[(!times.is_empty()).then_some(origin)]
            data-complete=(file.complete) data-first-line=(first_line)
            data-page=(p + 1) data-per-page=(logview::PAGE_LINES) {
            (maud::PreEscaped(lines))
        }
    };
    let live = if tailing { "log" } else { "" };
    let page = if h.contains_key("x-autobot-fragment") {
        body.into_string()
    } else {
        let config = pc.ctx.config.borrow().clone();
        let (pre, post) = html::page_halves(&frame(&pc, &config, &title, live));
        format!("{pre}{}{post}", body.into_string())
    };
    let mut r = warp::reply::html(page).into_response();
    let hd = r.headers_mut();
    hd.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(hd);
    r
}

/// Matching lines one search lists at most.
pub(crate) const SEARCH_LIMIT: usize = 1_000;

/// HTML of the matches' list a search page holds at most (the page stays
/// under 500 kB whatever the log's lines are); the rest are on the next.
const SEARCH_HTML: usize = 400 * 1024;

/// One line a search found, as the search page and the JSON API show it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Hit {
    /// The line's number (1-based): its anchor is `#L<line>`.
    pub line: u64,
    /// The log page (1-based, `?page=N`) the line is on.
    pub page: usize,
    /// A short excerpt of the line around the match, as plain text (escape
    /// sequences dropped); untrusted, to be escaped or set as text.
    pub text: String,
    /// The line goes on before and after the excerpt.
    pub cut_before: bool,
    pub cut_after: bool,
}

/// What a search of a whole log found.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Found {
    pub q: String,
    pub after: u64,
    /// At most [`SEARCH_LIMIT`] lines after line `after`.
    pub matches: Vec<Hit>,
    /// More lines match after the last one listed (ask again with `after`
    /// set to it).
    pub more: bool,
    /// The log's pages and lines now.
    pub pages: usize,
    pub lines: u64,
}

/// A search's `q` and `after` from a query string: `Ok(None)` when `q` is
/// absent or empty, the reason when either is unusable.
pub(crate) fn search_query(q: &HashMap<String, String>) -> Result<Option<(String, u64)>, String> {
    let after = match q.get("after").map(|a| a.trim()).filter(|a| !a.is_empty()) {
        None => 0,
        Some(a) => a.parse::<u64>().map_err(|_| {
            format!("after={a:?}: expected the number of the line to search after, like after=2000")
        })?,
    };
    let text = q.get("q").map(String::as_str).unwrap_or("");
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > crate::logstore::MAX_NEEDLE {
        return Err(format!(
            "q: the text to search for is {} bytes; at most {} are searched for",
            text.len(),
            crate::logstore::MAX_NEEDLE
        ));
    }
    if text.contains(['\n', '\r']) {
        return Err("q: the text to search for is one line (no line breaks)".to_string());
    }
    Ok(Some((text.to_string(), after)))
}

/// The lines of the first `len` bytes of the log at `path` that hold `q`
/// (case-insensitive, literal) after line `after`: at most [`SEARCH_LIMIT`],
/// each with its page. The scan starts at the page holding line `after + 1`
/// (the page index, cached per log length, says where) and streams from
/// there, a plain log read from a seek, a compressed one decompressed.
pub(crate) async fn find_in_log(
    path: &std::path::Path,
    len: u64,
    q: &str,
    after: u64,
) -> std::io::Result<Found> {
    let ix = logview::index_of(path, len).await?;
    let start = ix
        .pages
        .get(ix.page_of(after.saturating_add(1)))
        .copied()
        .unwrap_or((0, 1));
    let (p, needle) = (path.to_path_buf(), q.to_string());
    let found = tokio::task::spawn_blocking(move || {
        crate::logstore::search_log(&p, len, start, after, &needle, SEARCH_LIMIT)
    })
    .await
    .map_err(std::io::Error::other)??;
    let matches = found
        .matches
        .into_iter()
        .map(|m| Hit {
            line: m.line,
            page: ix.page_of(m.line) + 1,
            text: logview::plain_text(&String::from_utf8_lossy(&m.excerpt)),
            cut_before: m.cut_before,
            cut_after: m.cut_after,
        })
        .collect();
    Ok(Found {
        q: q.to_string(),
        after,
        matches,
        more: found.more,
        pages: ix.pages.len(),
        lines: ix.lines,
    })
}

/// `…/logs/LOG/search?q=TEXT[&after=LINE]`: the lines of the whole log that
/// hold the text, each linked to its line on its page, with an excerpt; a link
/// to the next matches when more follow. The log page's search form without
/// its script.
pub(super) async fn log_search(
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
        file,
        len,
        ..
    } = match open_log(&pc, &b, n, &s, &l).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let url = log_url(&builder, n, &step, &log);
    let asked = match search_query(&q) {
        Ok(a) => a,
        Err(e) => {
            return error_page(&pc, warp::http::StatusCode::BAD_REQUEST, "Bad search", &e);
        }
    };
    let found = match &asked {
        None => None,
        Some((text, after)) => match find_in_log(&file.path, len, text, *after).await {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!("log {}: {e}", file.path.display());
                return error_page(
                    &pc,
                    warp::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "Log unreadable",
                    "the log file cannot be read",
                );
            }
        },
    };
    // The list, cut where its HTML reaches the page's share.
    let mut items = String::new();
    let (mut shown, mut more, mut last) = (0usize, false, 0u64);
    if let Some(f) = &found {
        more = f.more;
        for h in &f.matches {
            let item = html! {
                li {
                    a href={ (url) "?page=" (h.page) "#L" (h.line) } { "line " (h.line) }
                    " (page " (h.page) ") "
                    code { @if h.cut_before { "…" } (h.text) @if h.cut_after { "…" } }
                }
            }
            .into_string();
            if items.len() + item.len() > SEARCH_HTML {
                more = true;
                break;
            }
            items.push_str(&item);
            shown += 1;
            last = h.line;
        }
    }
    let text = asked.as_ref().map(|(t, _)| t.as_str()).unwrap_or("");
    let after = asked.as_ref().map(|(_, a)| *a).unwrap_or(0);
    let title = format!("{builder} #{n} {step} {log}: search");
    let body = html! {
        h1 {
            (builder_link(&builder)) " "
            a href=(build_url(&builder, n)) { "build #" (n) }
            ": " (step) " / " a href=(url) { (log) } ": search"
        }
        form #log-find.log-find role="search" action={ (url) "/search" } method="get" {
            input #log-search type="search" name="q" value=(text)
                placeholder="search this log" aria-label="search this log";
            " " button type="submit" { "search" }
        }
        @if let Some(f) = &found {
            p #search-summary {
                @if shown == 0 {
                    "No line" @if after > 0 { " after line " (after) } " of the log holds "
                } @else {
                    (shown) @if more { "+" } " lines" @if after > 0 { " after line " (after) } " hold "
                }
                q { (text) } " (case-insensitive; " (f.lines) " lines, " (f.pages) " pages)."
            }
            ol.log-matches { (maud::PreEscaped(&items)) }
            @if more {
                p {
                    a #search-more rel="next" href={ (url) "/search?q=" (html::seg(text)) "&after=" (last) } {
                        "more matches after line " (last) " →"
                    }
                }
            }
        }
        p { a href=(url) { "back to the log" } }
    };
    let config = pc.ctx.config.borrow().clone();
    let mut r = super::html_response(
        warp::http::StatusCode::OK,
        html::page(&frame(&pc, &config, &title, ""), &body).into_string(),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
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
}
