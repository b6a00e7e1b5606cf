//! The log page's pieces that make a big log usable: its page breaks (a page
//! ends at [`PAGE_LINES`] lines or [`PAGE_BYTES`] bytes, found by one scan of the
//! log kept in a small cache per log length, with the first line that looks like
//! an error), and a page's lines as HTML — numbered, each with its `#L123`
//! anchor, stderr and headers styled by channel, ANSI SGR colours turned into
//! spans of fixed classes. Text is escaped before any markup is added; nothing
//! from the log becomes markup, and other escape sequences are dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::logstore::Channel;

/// Lines per log page at most.
pub const PAGE_LINES: u64 = 2_000;
/// Bytes of log per page at most (a page of long lines ends sooner), so a page
/// stays under 500 kB of HTML.
pub const PAGE_BYTES: u64 = 192 * 1024;

/// Where each page of a log starts, and its first error line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PageIndex {
    /// (byte offset, 1-based number of the line the page starts with) per page.
    pub pages: Vec<(u64, u64)>,
    /// The first line that looks like an error (`error`, `Error`, `ERROR`,
    /// `FAIL`, `fatal`), 1-based.
    pub first_error: Option<u64>,
    /// Lines in the log (a last line without a newline counts).
    pub lines: u64,
}

impl PageIndex {
    /// The page (0-based) that holds line `line`.
    pub fn page_of(&self, line: u64) -> usize {
        self.pages
            .partition_point(|(_, l)| *l <= line)
            .saturating_sub(1)
    }
}

/// Scan `len` bytes of `path` for page breaks and the first error line.
pub fn scan(path: &Path, len: u64) -> std::io::Result<PageIndex> {
    use std::io::Read;
    // Either form: a compressed log is decompressed as it is scanned.
    let f = match crate::logstore::open_log(path) {
        Ok((f, _)) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(PageIndex {
                pages: vec![(0, 1)],
                ..PageIndex::default()
            })
        }
        Err(e) => return Err(e),
    };
    let mut f = f.take(len);
    let finders: Vec<memchr::memmem::Finder<'static>> =
        ["error", "Error", "ERROR", "FAIL", "fatal"]
            .iter()
            .map(|p| memchr::memmem::Finder::new(p.as_bytes()).into_owned())
            .collect();
    let mut ix = PageIndex {
        pages: vec![(0, 1)],
        ..PageIndex::default()
    };
    let mut buf = vec![0u8; 1 << 20];
    let (mut line, mut page_start) = (1u64, 0u64);
    let mut win: Vec<u8> = Vec::with_capacity(2 * PAGE_BYTES as usize);
    // The tail of the previous chunk, so a word across chunks is still found.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if ix.first_error.is_none() {
            let line = line + memchr::memchr_iter(b'\n', &win).count() as u64;
            let mut hay = std::mem::take(&mut carry);
            let carried = hay.len();
            hay.extend_from_slice(chunk);
            if let Some(at) = finders.iter().filter_map(|f| f.find(&hay)).min() {
                let before = at.saturating_sub(carried);
                let nl = memchr::memchr_iter(b'\n', &chunk[..before.min(n)]).count() as u64;
                // A match in the carried bytes is on the line the chunk starts on.
                ix.first_error = Some(if at < carried { line } else { line + nl });
            } else {
                carry = hay[hay.len().saturating_sub(4)..].to_vec();
            }
        }
        win.extend_from_slice(chunk);
        while win.len() as u64 > PAGE_BYTES {
            cut_page(&mut win, &mut ix, &mut page_start, &mut line);
        }
    }
    // The rest: pages of at most PAGE_LINES lines.
    loop {
        let e = page_end(&win);
        if e >= win.len() {
            break;
        }
        cut_page(&mut win, &mut ix, &mut page_start, &mut line);
    }
    line += memchr::memchr_iter(b'\n', &win).count() as u64;
    ix.lines = if win.last().is_some_and(|b| *b != b'\n') {
        line
    } else {
        line - 1
    };
    Ok(ix)
}

/// Cut the page that `win` (the bytes from `page_start`, the start of line
/// `line`) starts with: the next page's start is recorded.
fn cut_page(win: &mut Vec<u8>, ix: &mut PageIndex, page_start: &mut u64, line: &mut u64) {
    let e = page_end(win);
    *line += memchr::memchr_iter(b'\n', &win[..e]).count() as u64;
    *page_start += e as u64;
    ix.pages.push((*page_start, *line));
    win.drain(..e);
}

/// The end of the page that `buf` (the log from a page's start on) begins
/// with: after [`PAGE_LINES`] lines, or at the last line end within
/// [`PAGE_BYTES`] bytes (a line longer than that is cut), or all of `buf` when
/// it fits.
pub fn page_end(buf: &[u8]) -> usize {
    let cap = buf.len().min(PAGE_BYTES as usize);
    let mut lines = 0u64;
    let mut last = None;
    for i in memchr::memchr_iter(b'\n', &buf[..cap]) {
        lines += 1;
        last = Some(i + 1);
        if lines >= PAGE_LINES {
            return i + 1;
        }
    }
    if buf.len() as u64 <= PAGE_BYTES {
        return buf.len();
    }
    last.unwrap_or(cap)
}
/// The index of a log at length `len`, from the cache (a few logs' worth) or a
/// scan.
pub async fn index_of(path: &Path, len: u64) -> std::io::Result<Arc<PageIndex>> {
    type Cache = Mutex<HashMap<PathBuf, (u64, Arc<PageIndex>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(c) = cache.lock() {
        if let Some((l, ix)) = c.get(path) {
            if *l == len {
                return Ok(ix.clone());
            }
        }
    }
    let p = path.to_path_buf();
    let ix = tokio::task::spawn_blocking(move || scan(&p, len))
        .await
        .map_err(std::io::Error::other)??;
    let ix = Arc::new(ix);
    if let Ok(mut c) = cache.lock() {
        if c.len() >= 16 {
            c.clear();
        }
        c.insert(path.to_path_buf(), (len, ix.clone()));
    }
    Ok(ix)
}

/// What SGR codes have switched on: classes for the span around the text.
#[derive(Debug, Default, Clone)]
pub struct Ansi {
    fg: Option<u8>,
    bg: Option<u8>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

impl Ansi {
    fn classes(&self) -> String {
        let mut c = Vec::new();
        if let Some(f) = self.fg {
            c.push(format!("ansi-fg{f}"));
        }
        if let Some(b) = self.bg {
            c.push(format!("ansi-bg{b}"));
        }
        for (on, name) in [
            (self.bold, "ansi-b"),
            (self.dim, "ansi-dim"),
            (self.italic, "ansi-i"),
            (self.underline, "ansi-u"),
        ] {
            if on {
                c.push(name.to_string());
            }
        }
        c.join(" ")
    }

    fn apply(&mut self, params: &str) {
        let mut codes = params.split(';').map(|p| {
            if p.is_empty() {
                0
            } else {
                p.parse::<u32>().unwrap_or(u32::MAX)
            }
        });
        while let Some(code) = codes.next() {
            match code {
                0 => *self = Ansi::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => (self.bold, self.dim) = (false, false),
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.fg = Some((code - 30) as u8),
                39 => self.fg = None,
                40..=47 => self.bg = Some((code - 40) as u8),
                49 => self.bg = None,
                90..=97 => self.fg = Some((code - 90 + 8) as u8),
                100..=107 => self.bg = Some((code - 100 + 8) as u8),
                38 | 48 => {
                    // 256 colours (the first 16 kept as classes) or 24-bit (dropped).
                    let n = match codes.next() {
                        Some(5) => codes.next().filter(|n| *n < 16).map(|n| n as u8),
                        Some(2) => {
                            codes.next();
                            codes.next();
                            codes.next();
                            None
                        }
                        _ => None,
                    };
                    if code == 38 {
                        self.fg = n;
                    } else {
                        self.bg = n;
                    }
                }
                _ => {}
            }
        }
    }

    /// `text` as HTML: escaped, SGR sequences turned into spans, other escape
    /// sequences dropped. The span of the state at the end is closed; the state
    /// carries on to the next call.
    pub fn render(&mut self, text: &str, out: &mut String) {
        let mut open = self.open(out);
        let mut chars = text.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c != '\u{1b}' {
                escape_char(c, out);
                continue;
            }
            match chars.peek().map(|(_, c)| *c) {
                Some('[') => {
                    chars.next();
                    let mut params = String::new();
                    let mut fin = None;
                    for (_, c) in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            fin = Some(c);
                            break;
                        }
                        params.push(c);
                    }
                    if fin == Some('m') {
                        if open {
                            out.push_str("</span>");
                        }
                        self.apply(&params);
                        open = self.open(out);
                    }
                }
                Some(']') => {
                    // OSC: to BEL or ST.
                    chars.next();
                    while let Some((_, c)) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            }
        }
        if open {
            out.push_str("</span>");
        }
    }

    fn open(&self, out: &mut String) -> bool {
        let c = self.classes();
        if c.is_empty() {
            return false;
        }
        out.push_str("<span class=\"");
        out.push_str(&c);
        out.push_str("\">");
        true
    }
}

/// `text` as plain text for an excerpt: escape sequences (ANSI SGR and the
/// rest) dropped, tabs as spaces, other control characters dropped. Still text
/// from a log: the page escapes it, the page script sets it as text.
pub fn plain_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

/// The time of each line of a page (the bytes `buf` from offset `start`, which
/// begins a line): that of the piece of output holding the line's start
/// ([`crate::logstore::time_at`]), in ms after `origin`. Empty when the log has
/// no times.
pub fn line_times(times: &[(u64, i64)], origin: i64, start: u64, buf: &[u8]) -> Vec<i64> {
    if times.is_empty() || buf.is_empty() {
        return Vec::new();
    }
    let starts = std::iter::once(start).chain(
        memchr::memchr_iter(b'\n', buf)
            .filter(|i| i + 1 < buf.len())
            .map(|i| start + i as u64 + 1),
    );
    starts
        .map(|o| crate::logstore::time_at(times, o).unwrap_or(origin) - origin)
        .collect()
}

/// A page's pieces as numbered lines, the first numbered `first`: each line a
/// `<span class="l" id="Ln">` with its link (the number shows through CSS, so
/// copied text has none), stderr and header text in spans of their class. With
/// `times` ([`line_times`]), each line carries its time as `data-t` (ms after
/// the step's start), for the page script to show on demand.
pub fn lines_html(pieces: &[(Channel, String)], first: u64, times: &[i64]) -> String {
    let mut out = String::new();
    let mut ansi = Ansi::default();
    let mut n = first;
    let mut at_start = true;
    for (channel, text) in pieces {
        for (k, part) in text.split('\n').enumerate() {
            if k > 0 {
                // The newline ends the line.
                if at_start {
                    open_line(&mut out, n, times.get((n - first) as usize));
                }
                out.push_str("\n</span>");
                n += 1;
                at_start = true;
            }
            if part.is_empty() {
                continue;
            }
            if at_start {
                open_line(&mut out, n, times.get((n - first) as usize));
                at_start = false;
            }
            let class = match channel {
                Channel::Stdout => None,
                Channel::Stderr => Some("stderr"),
                Channel::Header => Some("header"),
            };
            if let Some(c) = class {
                out.push_str("<span class=\"");
                out.push_str(c);
                out.push_str("\">");
            }
            ansi.render(part, &mut out);
            if class.is_some() {
                out.push_str("</span>");
            }
        }
    }
    if !at_start {
        out.push_str("</span>");
    }
    crate::web::html::no_controls(out)
}

fn open_line(out: &mut String, n: u64, t: Option<&i64>) {
    use std::fmt::Write;
    out.push_str("<span class=\"l\" id=\"L");
    let _ = write!(out, "{n}\"");
    if let Some(t) = t {
        let _ = write!(out, " data-t=\"{t}\"");
    }
    let _ = write!(
        out,
        "><a class=\"ln\" href=\"#L{n}\" data-n=\"{n}\" aria-label=\"line {n}\"></a>"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgr_codes_become_classes_and_text_is_escaped_first() {
        let mut out = String::new();
        Ansi::default().render("\u{1b}[1;31m<b>err</b>\u{1b}[0m & ok\u{1b}[2K", &mut out);
        assert_eq!(
            out,
            "<span class=\"ansi-fg1 ansi-b\">&lt;b&gt;err&lt;/b&gt;</span> &amp; ok"
        );
        let mut out = String::new();
        Ansi::default().render(
            "\u{1b}]0;title\u{7}\u{1b}[38;5;10mgreen\u{1b}[38;2;1;2;3mx",
            &mut out,
        );
        assert_eq!(out, "<span class=\"ansi-fg10\">green</span>x");
    }

    #[test]
    fn excerpts_are_plain_text() {
        assert_eq!(
            plain_text("\u{1b}[1;31mred\u{1b}[0m\tand\u{1b}]0;title\u{7} <b>\r\u{0}"),
            "red and <b>"
        );
    }

    #[test]
    fn lines_are_numbered_and_channels_kept() {
        let html = lines_html(
            &[
                (Channel::Header, "cmd\n".to_string()),
                (Channel::Stdout, "out <1>\n\npart".to_string()),
                (Channel::Stderr, "ial\n".to_string()),
            ],
            10,
            &[],
        );
        assert!(
            html.starts_with("<span class=\"l\" id=\"L10\"><a class=\"ln\" href=\"#L10\""),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"header\">cmd</span>\n</span>"),
            "{html}"
        );
        assert!(
            html.contains("id=\"L11\"") && html.contains("out &lt;1&gt;\n</span>"),
            "{html}"
        );
        assert!(html.contains("id=\"L12\""), "{html}");
        assert!(
            html.contains("id=\"L13\"")
                && html.contains("part<span class=\"stderr\">ial</span>\n</span>"),
            "{html}"
        );
        assert!(!html.contains("id=\"L14\""), "{html}");
        // Control characters do not reach the page; a lone ESC is dropped.
        let html = lines_html(&[(Channel::Stdout, "a\u{0}b\u{1b}".to_string())], 1, &[]);
        assert!(html.contains("a\u{FFFD}b</span>"), "{html}");
    }

    #[test]
    fn each_line_has_the_time_of_the_piece_holding_its_start() {
        // Pieces arrived at offsets 0 (t=1000), 6 (t=1500) and 9 (t=2250).
        let times = [(0, 1000), (6, 1500), (9, 2250)];
        let buf = b"ab\ncd\nefgh\nij\n";
        // Lines start at 0, 3, 6 and 11: the last inside the third piece.
        assert_eq!(line_times(&times, 900, 0, buf), [100, 100, 600, 1350]);
        // A page from offset 6: its own lines only.
        assert_eq!(line_times(&times, 900, 6, &buf[6..]), [600, 1350]);
        assert!(line_times(&[], 900, 0, buf).is_empty());
        let html = lines_html(&[(Channel::Stdout, "x\ny".to_string())], 5, &[7, 1234]);
        assert!(html.contains("id=\"L5\" data-t=\"7\">"), "{html}");
        assert!(html.contains("id=\"L6\" data-t=\"1234\">"), "{html}");
    }

    #[test]
    fn scans_find_pages_and_the_first_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut text = String::new();
        for i in 1..=5000 {
            if i == 4321 {
                text.push_str("src/a.c:1: error: nope\n");
            } else {
                text.push_str(&format!("line {i}\n"));
            }
        }
        std::fs::write(&p, &text).unwrap();
        let ix = scan(&p, text.len() as u64).unwrap();
        assert_eq!(ix.lines, 5000);
        assert_eq!(ix.first_error, Some(4321));
        assert_eq!(ix.pages.len(), 3);
        assert_eq!(ix.pages[1].1, PAGE_LINES + 1);
        assert_eq!(ix.page_of(4321), 2);
        assert_eq!(ix.page_of(1), 0);
        // Each page starts where its line does.
        for (off, line) in &ix.pages {
            let before = &text.as_bytes()[..*off as usize];
            assert_eq!(memchr::memchr_iter(b'\n', before).count() as u64 + 1, *line);
        }
        // A page of long lines ends at the byte cap.
        let long = "x".repeat(1000) + "\n";
        let text = long.repeat(500);
        std::fs::write(&p, &text).unwrap();
        let ix = scan(&p, text.len() as u64).unwrap();
        assert!(ix.pages.len() >= 3, "{:?}", ix.pages);
        assert!(ix.pages.windows(2).all(|w| w[1].0 - w[0].0 <= PAGE_BYTES));
        assert_eq!(page_end(text.as_bytes()) as u64, ix.pages[1].0);
    }
}
