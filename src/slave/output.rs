//! Turning a command's raw output into the protocol's line records.
//!
//! Buildbot sends output as `(text, [newline positions], [line times])`: text made of
//! whole lines only (a partial line waits for its end or for the command to finish),
//! control sequences that move the cursor (`\r`, `ESC[u`, backspaces, …) turned into
//! newlines by the master's `newline_re`, lines longer than `max_line_length` cut,
//! and positions counted in characters, as Python indexes strings. This mirrors
//! `buildbot_worker/util/lineboundaries.py`; bytes are decoded as UTF-8 with invalid
//! sequences replaced, like the worker's incremental decoder with `errors='replace'`.

use std::borrow::Cow;
use std::time::Duration;

/// The `newline_re` every Buildbot master sends (and the worker's default).
pub const DEFAULT_NEWLINE_RE: &str =
    r"(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)";

/// How output is cut and buffered, as `set_worker_settings` says.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bytes of pending updates that trigger a send.
    pub buffer_size: usize,
    /// Longest time output waits in the buffer before it is sent.
    pub buffer_timeout: Duration,
    /// Longest line, in characters, newline included.
    pub max_line_length: usize,
    pub newline: NewlineRule,
    /// Send output as plain text of whole lines instead of the protocol's
    /// `(text, newlines, times)` records: autobot's master asks for it
    /// (`output_format = "text"`) because it keeps neither positions nor line
    /// times, and a 100 MB log then crosses the link as text alone.
    pub text_output: bool,
}

impl Default for Settings {
    /// The worker's defaults before the master says otherwise (`BotBase`).
    fn default() -> Settings {
        Settings {
            buffer_size: 64 * 1024,
            buffer_timeout: Duration::from_secs(5),
            max_line_length: 4096,
            newline: NewlineRule::Default,
            text_output: false,
        }
    }
}

/// What counts as a line break besides `\n`.
#[derive(Debug, Clone)]
pub enum NewlineRule {
    /// Buildbot's standard pattern, matched by hand (it needs a look-ahead the
    /// `regex` crate does not have, and this is much faster on plain output).
    Default,
    /// Any other pattern the master sends.
    Custom(regex::Regex),
}

impl NewlineRule {
    /// The rule for a `newline_re` sent by the master; a pattern we cannot compile
    /// falls back to the standard one (with the reason, for the log).
    pub fn from_pattern(pattern: &str) -> (NewlineRule, Option<String>) {
        if pattern == DEFAULT_NEWLINE_RE {
            return (NewlineRule::Default, None);
        }
        match regex::RegexBuilder::new(pattern).octal(true).build() {
            Ok(re) => (NewlineRule::Custom(re), None),
            Err(e) => (
                NewlineRule::Default,
                Some(format!(
                    "newline_re {pattern:?} not supported ({e}); using the standard one"
                )),
            ),
        }
    }

    /// Replace every match with `\n`.
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self {
            NewlineRule::Custom(re) => re.replace_all(text, "\n"),
            NewlineRule::Default => default_substitute(text),
        }
    }
}

/// `(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)` → `\n`.
fn default_substitute(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    // Most output has none of these bytes and is returned as it is.
    let Some(first) = memchr::memchr3(b'\r', 0x1b, 0x08, b) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    let mut i = first;
    let mut copied = 0;
    while i < b.len() {
        let len = match b[i] {
            b'\r' if b.get(i + 1) == Some(&b'\n') => 2,
            // `\r(?=.)`: a carriage return followed by anything but a newline.
            b'\r' if i + 1 < b.len() => 1,
            0x08 => b[i..].iter().take_while(|&&c| c == 0x08).count(),
            0x1b => escape_len(&b[i..]),
            _ => 0,
        };
        if len == 0 {
            i += 1;
            continue;
        }
        out.push_str(&text[copied..i]);
        out.push('\n');
        i += len;
        copied = i;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Length of a cursor-moving escape at the start of `b` (`ESC[u`, `ESC[2J`,
/// `ESC[<n>;<m>H` or `f`), or 0.
fn escape_len(b: &[u8]) -> usize {
    if b.len() < 3 || b[1] != b'[' {
        return 0;
    }
    if b[2] == b'u' {
        return 3;
    }
    if b.len() >= 4 && b[2] == b'2' && b[3] == b'J' {
        return 4;
    }
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let d1 = digits(2);
    if d1 == 0 || b.get(2 + d1) != Some(&b';') {
        return 0;
    }
    let d2 = digits(3 + d1);
    if d2 == 0 {
        return 0;
    }
    match b.get(3 + d1 + d2) {
        Some(b'H') | Some(b'f') => 4 + d1 + d2,
        _ => 0,
    }
}

/// Bytes → text, keeping an incomplete UTF-8 sequence for the next chunk.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// Decode a chunk; invalid sequences become U+FFFD.
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        let joined;
        let mut rest: &[u8] = if self.pending.is_empty() {
            bytes
        } else {
            let mut v = std::mem::take(&mut self.pending);
            v.extend_from_slice(bytes);
            joined = v;
            &joined
        };
        let mut out = String::with_capacity(rest.len());
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // Checked by from_utf8 up to valid_up_to.
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        None => {
                            self.pending = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// What is left at end of stream (an incomplete sequence becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            String::new()
        } else {
            self.pending.clear();
            "\u{FFFD}".to_string()
        }
    }
}

/// Whole lines of one stream: text, positions of its `\n` (in characters) and the
/// time each line started to arrive.
#[derive(Debug, Clone, PartialEq)]
pub struct LineInfo {
    pub text: String,
    pub newlines: Vec<i64>,
    pub times: Vec<f64>,
}

impl LineInfo {
    /// Append another record (positions shift by this one's length in characters).
    pub fn join(&mut self, other: LineInfo) {
        let offset = self.char_len();
        self.text.push_str(&other.text);
        self.newlines
            .extend(other.newlines.into_iter().map(|p| p + offset));
        self.times.extend(other.times);
    }

    /// Length in characters: one past the last newline (records hold whole lines).
    fn char_len(&self) -> i64 {
        self.newlines.last().map(|p| p + 1).unwrap_or(0)
    }

    /// What this record counts against the buffer (as the worker's BufferManager).
    pub fn weight(&self) -> usize {
        self.text.len() + 8 * (self.newlines.len() + self.times.len())
    }

    /// Split into records of whole lines each weighing at most `limit` (a single
    /// longer line stays alone). Each record is cut out in one piece: no allocation
    /// per line, however many lines a chunk holds.
    pub fn split(self, limit: usize) -> Vec<LineInfo> {
        if self.text.is_empty() {
            return Vec::new();
        }
        if self.weight() <= limit {
            return vec![self];
        }
        let mut out = Vec::new();
        // The record being gathered: from byte `from`, line `first`, character
        // `first_char`; `end` is the byte after the last whole line taken.
        let (mut from, mut first, mut first_char) = (0usize, 0usize, 0i64);
        let mut end = 0usize;
        let mut weight = 0usize;
        let lines = self.text.match_indices('\n').map(|(i, _)| i);
        for (i, nb) in lines.enumerate().take(self.newlines.len()) {
            let line_weight = nb + 1 - end + 16;
            if weight > 0 && weight + line_weight > limit {
                out.push(self.cut(from..end, first..i, first_char));
                from = end;
                first = i;
                first_char = self.newlines[i - 1] + 1;
                weight = 0;
            }
            weight += line_weight;
            end = nb + 1;
        }
        let last = self.newlines.len().min(self.text.matches('\n').count());
        if end > from {
            out.push(self.cut(from..end, first..last, first_char));
        }
        out
    }

    /// Bytes `bytes` and lines `lines` of this record as a record of its own whose
    /// first character was character `first_char` here.
    fn cut(
        &self,
        bytes: std::ops::Range<usize>,
        lines: std::ops::Range<usize>,
        first_char: i64,
    ) -> LineInfo {
        LineInfo {
            text: self.text[bytes].to_string(),
            newlines: self.newlines[lines.clone()]
                .iter()
                .map(|p| p - first_char)
                .collect(),
            times: lines
                .map(|i| self.times.get(i).copied().unwrap_or(0.0))
                .collect(),
        }
    }

    #[cfg(test)]
    fn empty() -> LineInfo {
        LineInfo {
            text: String::new(),
            newlines: Vec::new(),
            times: Vec::new(),
        }
    }
}

/// Cuts one stream into whole lines (`LineBoundaryFinder`).
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: String,
    partial_time: f64,
}

impl LineSplitter {
    /// The partial line so far followed by `text`, with line breaks made `\n`.
    fn combine<'a>(&mut self, text: &'a str, settings: &Settings) -> Cow<'a, str> {
        if self.partial.is_empty() {
            return settings.newline.apply(text);
        }
        let mut s = std::mem::take(&mut self.partial);
        s.push_str(text);
        let replaced = match settings.newline.apply(&s) {
            Cow::Borrowed(_) => None,
            Cow::Owned(o) => Some(o),
        };
        Cow::Owned(replaced.unwrap_or(s))
    }

    /// Add text that arrived at `now`; returns the lines it completed.
    pub fn append(&mut self, text: &str, now: f64, settings: &Settings) -> Option<LineInfo> {
        let had_partial = !self.partial.is_empty();
        let text = self.combine(text, settings);
        let (out, newlines, rest) = cut_lines(&text, settings.max_line_length);
        let mut times = vec![now; newlines.len()];
        if had_partial {
            if let Some(first) = times.first_mut() {
                *first = self.partial_time;
            }
        }
        if !newlines.is_empty() || !had_partial {
            self.partial_time = now;
        }
        self.partial = text[rest..].to_string();
        if newlines.is_empty() {
            None
        } else {
            Some(LineInfo {
                text: out,
                newlines,
                times,
            })
        }
    }

    /// [`LineSplitter::append`] for text output: the completed lines as one string
    /// (the same text `append` would put in its record), without positions or
    /// times. Output whose lines are all short enough is passed on as it is.
    pub fn append_text(&mut self, text: &str, settings: &Settings) -> Option<String> {
        let text = self.combine(text, settings);
        let max = settings.max_line_length.max(2);
        let bytes = text.as_bytes();
        // Bytes count at least as many as characters: a line shorter than `max`
        // bytes needs no cut.
        let mut start = 0;
        let mut short = true;
        for nl in memchr::memchr_iter(b'\n', bytes) {
            if nl - start >= max {
                short = false;
                break;
            }
            start = nl + 1;
        }
        if short && bytes.len() - start < max {
            self.partial = text[start..].to_string();
            if start == 0 {
                return None;
            }
            let mut whole = text.into_owned();
            whole.truncate(start);
            return Some(whole);
        }
        let (out, _, rest) = cut_lines(&text, max);
        self.partial = text[rest..].to_string();
        (!out.is_empty()).then_some(out)
    }

    /// End of stream: the partial line, completed with a newline.
    pub fn flush(&mut self, settings: &Settings) -> Option<LineInfo> {
        if self.partial.is_empty() {
            return None;
        }
        let t = self.partial_time;
        self.append("\n", t, settings)
    }

    /// [`LineSplitter::flush`] for text output.
    pub fn flush_text(&mut self, settings: &Settings) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        self.append_text("\n", settings)
    }
}

/// Whole lines of `text` (whose line breaks are already `\n`), lines of `max`
/// characters or more cut: the lines with their newlines, the character position
/// of each newline, and the byte where the unfinished rest begins.
fn cut_lines(text: &str, max: usize) -> (String, Vec<i64>, usize) {
    let max = max.max(2);
    let ascii = text.is_ascii();
    let mut out = String::with_capacity(text.len() + 8);
    let mut newlines: Vec<i64> = Vec::new();
    let mut out_chars: i64 = 0;
    let mut emit = |piece: &str, out: &mut String, newlines: &mut Vec<i64>| {
        // `piece` is a line without its newline.
        out.push_str(piece);
        out.push('\n');
        out_chars += if ascii {
            piece.len() as i64
        } else {
            piece.chars().count() as i64
        };
        newlines.push(out_chars);
        out_chars += 1;
    };
    let mut rest: &str = text;
    while let Some(nl) = memchr::memchr(b'\n', rest.as_bytes()) {
        let mut line = &rest[..nl];
        while char_len(line, ascii) >= max {
            let cut = byte_index_of_char(line, max - 1, ascii);
            emit(&line[..cut], &mut out, &mut newlines);
            line = &line[cut..];
        }
        emit(line, &mut out, &mut newlines);
        rest = &rest[nl + 1..];
    }
    while char_len(rest, ascii) >= max {
        let cut = byte_index_of_char(rest, max - 1, ascii);
        emit(&rest[..cut], &mut out, &mut newlines);
        rest = &rest[cut..];
    }
    (out, newlines, text.len() - rest.len())
}

fn char_len(s: &str, ascii: bool) -> usize {
    if ascii {
        s.len()
    } else {
        s.chars().count()
    }
}

fn byte_index_of_char(s: &str, n: usize, ascii: bool) -> usize {
    if ascii {
        n.min(s.len())
    } else {
        s.char_indices().nth(n).map(|(i, _)| i).unwrap_or(s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: usize) -> Settings {
        Settings {
            max_line_length: max,
            ..Settings::default()
        }
    }

    #[test]
    fn whole_lines_only_and_partial_waits() {
        let s = settings(4096);
        let mut sp = LineSplitter::default();
        let li = sp.append("ab\ncd", 1.0, &s).unwrap();
        assert_eq!(li.text, "ab\n");
        assert_eq!(li.newlines, vec![2]);
        assert_eq!(li.times, vec![1.0]);
        let li = sp.append("e\nf\n", 2.0, &s).unwrap();
        assert_eq!(li.text, "cde\nf\n");
        assert_eq!(li.newlines, vec![3, 5]);
        assert_eq!(li.times, vec![1.0, 2.0]);
        assert!(sp.append("tail", 3.0, &s).is_none());
        let li = sp.flush(&s).unwrap();
        assert_eq!(li.text, "tail\n");
        assert!(sp.flush(&s).is_none());
    }

    #[test]
    fn newline_re_default() {
        let s = settings(4096);
        let mut sp = LineSplitter::default();
        let li = sp
            .append("a\r\nb\rc\x1b[2Jd\x1b[12;3He\x08\x08f\x1b[ug\r", 0.0, &s)
            .unwrap();
        assert_eq!(li.text, "a\nb\nc\nd\ne\nf\n");
        // The trailing \r waits: it may be the start of \r\n.
        let li = sp.append("\nz\n", 0.0, &s).unwrap();
        assert_eq!(li.text, "g\nz\n");
        let (rule, warn) = NewlineRule::from_pattern(DEFAULT_NEWLINE_RE);
        assert!(matches!(rule, NewlineRule::Default) && warn.is_none());
        let (rule, _) = NewlineRule::from_pattern("XX");
        assert_eq!(rule.apply("aXXb"), "a\nb");
    }

    #[test]
    fn long_lines_are_cut_and_positions_are_characters() {
        let s = settings(4);
        let mut sp = LineSplitter::default();
        let li = sp.append("abcdefg\n", 0.0, &s).unwrap();
        assert_eq!(li.text, "abc\ndef\ng\n");
        assert_eq!(li.newlines, vec![3, 7, 9]);
        let s = settings(4096);
        let li = sp.append("é\nü\n", 0.0, &s).unwrap();
        assert_eq!(li.newlines, vec![1, 3]);
    }

    /// Text output is the text of the line records, however the output is cut
    /// into chunks: long lines (ASCII or not), `newline_re` breaks, a `\r\n`
    /// split across chunks and a final partial line.
    #[test]
    fn text_output_matches_line_records() {
        let mut input = String::new();
        for i in 0..200 {
            match i % 7 {
                0 => input.push_str(&"x".repeat(i * 3)),
                1 => input.push_str(&"é∑".repeat(i)),
                2 => input.push_str("a\r\nb\rc\x1b[2Jd"),
                3 => input.push_str("\x08\x08"),
                4 => input.push('\r'),
                _ => input.push_str(&format!("line {i}")),
            }
            if i % 3 != 0 {
                input.push('\n');
            }
        }
        input.push_str("tail");
        for max in [4, 50, 4096] {
            for chunk in [1, 7, 64, 1000, input.len()] {
                let s = settings(max);
                let (mut a, mut b) = (LineSplitter::default(), LineSplitter::default());
                let (mut records, mut text) = (String::new(), String::new());
                let mut rest = input.as_str();
                while !rest.is_empty() {
                    let mut n = chunk.min(rest.len());
                    while !rest.is_char_boundary(n) {
                        n += 1;
                    }
                    let (piece, tail) = rest.split_at(n);
                    rest = tail;
                    if let Some(li) = a.append(piece, 0.0, &s) {
                        records.push_str(&li.text);
                    }
                    if let Some(t) = b.append_text(piece, &s) {
                        assert!(t.ends_with('\n'), "whole lines only");
                        text.push_str(&t);
                    }
                }
                records.push_str(&a.flush(&s).map(|li| li.text).unwrap_or_default());
                text.push_str(&b.flush_text(&s).unwrap_or_default());
                assert_eq!(text, records, "max {max}, chunk {chunk}");
                assert!(max < 5 || text.ends_with("\ntail\n"));
                assert!(b.flush_text(&s).is_none());
            }
        }
    }

    #[test]
    fn utf8_split_across_chunks() {
        let mut d = Utf8Decoder::default();
        let bytes = "héllo".as_bytes();
        let a = d.decode(&bytes[..2]);
        let b = d.decode(&bytes[2..]);
        assert_eq!(format!("{a}{b}"), "héllo");
        assert_eq!(d.decode(b"\xff!"), "\u{FFFD}!");
        d.decode(b"\xc3");
        assert_eq!(d.finish(), "\u{FFFD}");
    }

    #[test]
    fn split_respects_limit() {
        let li = LineInfo {
            text: "aé\nbb\ncc\n".into(),
            newlines: vec![2, 5, 8],
            times: vec![1.0, 2.0, 3.0],
        };
        let parts = li.clone().split(3 + 16);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].text, "aé\n");
        assert_eq!(parts[1].text, "bb\n");
        assert_eq!(parts[1].newlines, vec![2]);
        assert_eq!(parts[2].times, vec![3.0]);
        let whole = li.clone().split(1000);
        assert_eq!(whole, vec![li]);
    }

    #[test]
    fn split_matches_joining_lines_one_by_one() {
        // Lines of varied length, some not ASCII.
        let mut text = String::new();
        let mut newlines = Vec::new();
        let mut chars = 0i64;
        for i in 0..300 {
            let line = match i % 4 {
                0 => "x".repeat(i % 37),
                1 => "é∑".repeat(i % 11),
                2 => String::new(),
                _ => format!("line {i}"),
            };
            chars += line.chars().count() as i64;
            text.push_str(&line);
            text.push('\n');
            newlines.push(chars);
            chars += 1;
        }
        let times: Vec<f64> = (0..300).map(|i| i as f64 / 10.0).collect();
        let li = LineInfo {
            text,
            newlines,
            times,
        };
        for limit in [1, 17, 40, 100, 1000, 5000] {
            // The rule, one line at a time: a line joins the record unless that
            // would make a non-empty record weigh more than the limit.
            let mut want: Vec<LineInfo> = Vec::new();
            let mut cur = LineInfo::empty();
            let (mut byte, mut ch) = (0usize, 0i64);
            for (i, nb) in li.text.match_indices('\n').map(|(b, _)| b).enumerate() {
                let line = LineInfo {
                    text: li.text[byte..=nb].to_string(),
                    newlines: vec![li.newlines[i] - ch],
                    times: vec![li.times[i]],
                };
                byte = nb + 1;
                ch = li.newlines[i] + 1;
                if !cur.text.is_empty() && cur.weight() + line.weight() > limit {
                    want.push(std::mem::replace(&mut cur, LineInfo::empty()));
                }
                cur.join(line);
            }
            want.push(cur);
            let got = li.clone().split(limit);
            assert_eq!(got, want, "limit {limit}");
            let joined: String = got.iter().map(|r| r.text.as_str()).collect();
            assert_eq!(joined, li.text);
        }
        assert!(LineInfo::empty().split(10).is_empty());
    }
}
