//! Searching a stored log for a piece of text, the way the log page's search
//! box needs it: the lines (1-based) holding the text, case-insensitive and
//! literal (no patterns from users), with a short excerpt around each, from a
//! given line on and at most a given number of them. The log is streamed a
//! chunk at a time, plain (`NAME.log`, read from a seek to where the search
//! starts) or compressed (`NAME.log.zst`, decompressed as it is read), so a
//! 100 MB log costs a pass over its bytes, never its size in memory: a line of
//! any length is searched in pieces.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read per chunk.
const CHUNK: usize = 1 << 20;

/// A line longer than this is searched in pieces of this size (overlapping by
/// the searched text's length, so no match between pieces is lost).
const LONG_LINE: usize = 4 << 20;

/// Bytes of a line kept before its first match in an excerpt.
const EXCERPT_BEFORE: usize = 40;

/// Bytes of a line in an excerpt at most.
pub const EXCERPT_BYTES: usize = 160;

/// Longest text [`search_log`] looks for, in bytes.
pub const MAX_NEEDLE: usize = 1000;

/// One line that holds the text searched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineMatch {
    /// The line's number, 1-based.
    pub line: u64,
    /// At most [`EXCERPT_BYTES`] of the line around its first match, the raw
    /// bytes (whole UTF-8 characters unless the log has bad ones; the line's
    /// newline not included). Untrusted: escape before showing.
    pub excerpt: Vec<u8>,
    /// The line goes on before the excerpt.
    pub cut_before: bool,
    /// The line goes on after the excerpt.
    pub cut_after: bool,
}

/// What [`search_log`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSearch {
    /// The matching lines, in order.
    pub matches: Vec<LineMatch>,
    /// More lines match after the last one listed (the search stopped at its
    /// limit).
    pub more: bool,
}

/// How a search compares: ASCII letters fold with a fast byte search; a text
/// with other cased letters (`É`) compares lines lower-cased whole.
enum Matcher {
    Ascii(Box<memchr::memmem::Finder<'static>>),
    Unicode(String),
}

impl Matcher {
    fn new(needle: &str) -> Matcher {
        let ascii_case = needle
            .chars()
            .all(|c| c.is_ascii() || (c.to_lowercase().eq([c]) && c.to_uppercase().eq([c])));
        if ascii_case {
            let lower = needle.to_ascii_lowercase();
            Matcher::Ascii(Box::new(
                memchr::memmem::Finder::new(lower.as_bytes()).into_owned(),
            ))
        } else {
            Matcher::Unicode(needle.to_lowercase())
        }
    }

    /// Bytes a match can span at most in the log.
    fn span(&self) -> usize {
        match self {
            Matcher::Ascii(f) => f.needle().len(),
            // Lower-casing can change a character's length (by a few bytes).
            Matcher::Unicode(s) => s.len() * 3,
        }
    }
}

/// Where a search is up to.
struct Scan<'a> {
    matcher: &'a Matcher,
    /// The number of the line the next region starts in.
    line: u64,
    /// The next region starts inside that line (a long line's later piece).
    inside: bool,
    /// The last line recorded (a line is listed once).
    last: u64,
    after: u64,
    limit: usize,
    found: LogSearch,
    folded: Vec<u8>,
}

impl Scan<'_> {
    /// Search `data`, lines from the start of a line (or, `inside`, from inside
    /// one) to the end of one (or, `partial`, up to inside one). `true` when the
    /// limit is reached.
    fn region(&mut self, data: &[u8], partial: bool) -> bool {
        let mut line = self.line;
        let mut counted = 0;
        let mut pos = 0;
        let matcher = self.matcher;
        if let Matcher::Ascii(_) = matcher {
            self.folded.clear();
            self.folded.extend_from_slice(data);
            self.folded.make_ascii_lowercase();
        }
        while pos < data.len() {
            let at = match matcher {
                Matcher::Ascii(f) => match f.find(&self.folded[pos..]) {
                    Some(i) => pos + i,
                    None => break,
                },
                Matcher::Unicode(lower) => {
                    let end = memchr::memchr(b'\n', &data[pos..])
                        .map(|i| pos + i)
                        .unwrap_or(data.len());
                    let text = String::from_utf8_lossy(&data[pos..end]).to_lowercase();
                    match text.find(lower.as_str()) {
                        // Where in the line: lower-casing keeps most lengths.
                        Some(i) => (pos + i).min(end),
                        None => {
                            pos = end + 1;
                            continue;
                        }
                    }
                }
            };
            line += memchr::memchr_iter(b'\n', &data[counted..at]).count() as u64;
            counted = at;
            let start = memchr::memrchr(b'\n', &data[..at]).map_or(0, |i| i + 1);
            let end = memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |i| at + i);
            if line > self.after && line != self.last {
                if self.found.matches.len() >= self.limit {
                    self.found.more = true;
                    return true;
                }
                let from = char_start(data, at.saturating_sub(EXCERPT_BEFORE).max(start), start);
                let to = char_start(data, (from + EXCERPT_BYTES).min(end), from);
                let to = if to == from {
                    end.min(from + EXCERPT_BYTES)
                } else {
                    to
                };
                self.found.matches.push(LineMatch {
                    line,
                    excerpt: data[from..to].to_vec(),
                    cut_before: from > start || (start == 0 && self.inside),
                    cut_after: to < end || (end == data.len() && partial),
                });
                self.last = line;
            }
            // The rest of this line cannot add to the list.
            pos = end + 1;
        }
        self.line = line + memchr::memchr_iter(b'\n', &data[counted..]).count() as u64;
        self.inside = partial;
        false
    }
}

/// `at`, moved back to the start of the UTF-8 character it is inside (no
/// further than `floor`).
fn char_start(data: &[u8], mut at: usize, floor: usize) -> usize {
    while at > floor && at < data.len() && (data[at] & 0xC0) == 0x80 {
        at -= 1;
    }
    at
}

/// The lines of the first `len` bytes of log `log` that hold `needle`
/// (case-insensitive, literal), after line `after`: at most `limit` of them,
/// and whether more follow. The search starts at byte `start.0`, which must
/// begin line `start.1` (a page's start from the page index, at or before
/// line `after + 1`; `(0, 1)` for the whole log). An empty needle matches
/// nothing; a log with no file yet (a Step just started) has no lines.
pub fn search_log(
    log: &Path,
    len: u64,
    start: (u64, u64),
    after: u64,
    needle: &str,
    limit: usize,
) -> std::io::Result<LogSearch> {
    if needle.is_empty() || len <= start.0 {
        return Ok(LogSearch::default());
    }
    let reader: Box<dyn Read> = match File::open(log) {
        Ok(mut f) => {
            f.seek(SeekFrom::Start(start.0))?;
            Box::new(f.take(len - start.0))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match super::open_log(log) {
                Ok((mut r, _)) => {
                    // Decompressed up to where the search starts.
                    let skipped = std::io::copy(&mut (&mut r).take(start.0), &mut std::io::sink())?;
                    if skipped < start.0 {
                        return Ok(LogSearch::default());
                    }
                    Box::new(r.take(len - start.0))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(LogSearch::default())
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    search_reader(reader, start.1, after, needle, limit)
}

/// [`search_log`] of the bytes `r` gives, the first of them starting line
/// `line`.
fn search_reader(
    mut r: impl Read,
    line: u64,
    after: u64,
    needle: &str,
    limit: usize,
) -> std::io::Result<LogSearch> {
    if needle.is_empty() {
        return Ok(LogSearch::default());
    }
    let matcher = Matcher::new(needle);
    let keep = matcher.span();
    let mut scan = Scan {
        matcher: &matcher,
        line,
        inside: false,
        last: 0,
        after,
        limit,
        found: LogSearch::default(),
        folded: Vec::with_capacity(CHUNK * 2),
    };
    // The bytes not searched yet: the incomplete last line read so far.
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK * 2);
    loop {
        let old = buf.len();
        buf.resize(old + CHUNK, 0);
        let n = loop {
            match r.read(&mut buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        buf.truncate(old + n);
        if n == 0 {
            scan.region(&buf, false);
            return Ok(scan.found);
        }
        // Whole lines are searched; the last, incomplete one waits for more
        // unless it is long, when what there is of it is searched.
        let (cut, rest) = match memchr::memrchr(b'\n', &buf[old..]) {
            Some(i) => (old + i + 1, old + i + 1),
            None if buf.len() >= LONG_LINE => (buf.len(), buf.len().saturating_sub(keep)),
            None => continue,
        };
        let partial = cut == buf.len() && buf.last() != Some(&b'\n');
        if scan.region(&buf[..cut], partial) {
            return Ok(scan.found);
        }
        buf.drain(..rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(found: &LogSearch) -> Vec<u64> {
        found.matches.iter().map(|m| m.line).collect()
    }

    #[test]
    fn finds_lines_case_insensitively_after_a_line_and_up_to_a_limit() {
        let text = b"one\nTwo error\nthree\nan ERROR and an error\nfive\nErRoR";
        let found = search_reader(&text[..], 1, 0, "error", 10).unwrap();
        assert_eq!(lines(&found), [2, 4, 6]);
        assert!(!found.more);
        assert_eq!(found.matches[0].excerpt, b"Two error");
        assert_eq!(found.matches[2].excerpt, b"ErRoR");
        let found = search_reader(&text[..], 1, 2, "ERROR", 1).unwrap();
        assert_eq!(lines(&found), [4]);
        assert!(found.more);
        let found = search_reader(&text[..], 1, 4, "Error", 1).unwrap();
        assert_eq!((lines(&found), found.more), (vec![6], false));
        // Literal: no pattern syntax.
        assert!(search_reader(&text[..], 1, 0, "e.r", 10)
            .unwrap()
            .matches
            .is_empty());
        assert!(search_reader(&text[..], 1, 0, "", 10)
            .unwrap()
            .matches
            .is_empty());
        // Non-ASCII letters fold too.
        let text = "a\nÉCOLE\nécole\nb\n".as_bytes();
        let found = search_reader(text, 7, 0, "éCole", 10).unwrap();
        assert_eq!(lines(&found), [8, 9]);
        assert_eq!(found.matches[0].excerpt, "ÉCOLE".as_bytes());
    }

    #[test]
    fn long_lines_are_searched_in_pieces_and_excerpts_are_short() {
        // A 9 MB line with a match across the end of its first piece (read
        // in chunks until LONG_LINE bytes wait: 5 chunks less "start\n").
        let mut text = b"start\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 5 * CHUNK - 6 - 3));
        text.extend_from_slice(b"NEEDLE");
        text.extend(std::iter::repeat_n(b'y', LONG_LINE));
        text.extend_from_slice(b"needle\nlast needle\n");
        let found = search_reader(&text[..], 1, 0, "needle", 10).unwrap();
        assert_eq!(lines(&found), [2, 3]);
        let m = &found.matches[0];
        assert!(m.cut_before && m.cut_after, "{m:?}");
        assert!(m.excerpt.len() <= EXCERPT_BYTES);
        assert!(m.excerpt.ends_with(b"yyy"), "{:?}", m.excerpt);
        assert!(
            std::str::from_utf8(&m.excerpt).unwrap().contains("NEEDLE"),
            "{:?}",
            m.excerpt
        );
        // The second copy of the word on the long line is not listed again.
        let m = &found.matches[1];
        assert_eq!(m.excerpt, b"last needle");
        assert!(!m.cut_before && !m.cut_after);
    }

    #[test]
    fn excerpts_keep_whole_characters() {
        let line = "é".repeat(100) + "needle" + &"€".repeat(100);
        let found = search_reader(line.as_bytes(), 1, 0, "needle", 10).unwrap();
        let ex = std::str::from_utf8(&found.matches[0].excerpt).unwrap();
        assert!(ex.contains("needle") && ex.starts_with('é') && ex.ends_with('€'));
    }

    #[test]
    fn plain_and_compressed_logs_from_a_page_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        let mut text = String::new();
        for i in 1..=30_000 {
            if i % 7_000 == 0 {
                text.push_str(&format!("line {i} <script>alert(1)</script>\n"));
            } else {
                text.push_str(&format!("line {i}\n"));
            }
        }
        std::fs::write(&log, &text).unwrap();
        let len = text.len() as u64;
        let all = search_log(&log, len, (0, 1), 0, "<SCRIPT>", 1000).unwrap();
        assert_eq!(lines(&all), [7000, 14000, 21000, 28000]);
        // From the start of line 10001, after line 14000.
        let off = text.match_indices('\n').nth(9_999).unwrap().0 as u64 + 1;
        let later = search_log(&log, len, (off, 10_001), 14_000, "<script>", 1000).unwrap();
        assert_eq!(lines(&later), [21000, 28000]);
        // Only the first `len` bytes: a growing log's length when asked.
        let cut = text.find("line 28000").unwrap() as u64;
        assert_eq!(
            lines(&search_log(&log, cut, (0, 1), 0, "script", 1000).unwrap()),
            [7000, 14000, 21000]
        );
        crate::logstore::compress_log(&log).unwrap();
        crate::logstore::remove_plain(&log).unwrap();
        assert_eq!(
            search_log(&log, len, (0, 1), 0, "<script>", 1000).unwrap(),
            all
        );
        assert_eq!(
            search_log(&log, len, (off, 10_001), 14_000, "<script>", 1000).unwrap(),
            later
        );
        // No file yet: nothing.
        let none = dir.path().join("none.log");
        assert_eq!(
            search_log(&none, 10, (0, 1), 0, "x", 10).unwrap(),
            LogSearch::default()
        );
    }

    /// The debug build's speed on a test-sized log (printed; the release
    /// figure for 100 MB is in `bench/web.rs`'s `issue23` scenario).
    #[test]
    fn searching_a_log_streams_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("big.log");
        let mut text = Vec::with_capacity(20 << 20);
        let mut n = 0u64;
        while text.len() < 20 << 20 {
            n += 1;
            let line = if n == 123_456 {
                format!("src/x.c:{n}: error: the one Error\n")
            } else {
                format!("line {n} of the log, a compiler would say more here\n")
            };
            text.extend_from_slice(line.as_bytes());
        }
        std::fs::write(&log, &text).unwrap();
        let t = std::time::Instant::now();
        let found = search_log(&log, text.len() as u64, (0, 1), 0, "the one error", 1000).unwrap();
        let took = t.elapsed();
        assert_eq!(lines(&found), [123_456]);
        let mb = text.len() as f64 / 1e6;
        eprintln!(
            "searched {mb:.0} MB in {:.0} ms ({:.0} MB/s, debug build)",
            took.as_secs_f64() * 1e3,
            mb / took.as_secs_f64()
        );
    }
}
