//! Reading a step's output as it streams in, for the counts the waterfall shows:
//! warnings (and errors) for Compile steps, and the passed / failed / skipped /
//! xfailed / xpassed counts of common test runners for Test steps.
//!
//! The scanner sees output in whatever chunks the slave sends — a chunk may end in
//! the middle of a line or of a UTF-8 character — and keeps only its counters and
//! the unfinished line (at most [`MAX_LINE`] bytes of it), so a 100 MB log costs no
//! more memory than a small one. Colour escapes and `\r` progress redraws are
//! ignored.
//!
//! # Warnings
//! Only a line in a compiler's or tool's own warning format is a warning (see
//! [`is_default_warning`]): GCC/Clang's `file:line[:col]: warning:`, a tool's
//! `cc1: warning:` / `ld: warning:` / `make[1]: warning:`, MSVC's `file(12):
//! warning C4996:`, rustc's `warning: …` followed by its ` --> file:line:col`,
//! Python's `file.py:12: DeprecationWarning: …` and Perl's `… at FILE line N.`. A
//! line that merely contains "warning:" (setuptools' `warning: no files found
//! matching …`) is not one. A step's `warningPattern` (Buildbot's Compile option)
//! replaces these rules with one regular expression: a line it matches anywhere is
//! a warning. The counted lines go to the step's `warnings` log.
//!
//! # Tests
//! Runners recognised: automake `make check` (the `# TOTAL:` summary, else the
//! `PASS:`/`FAIL:` lines, else the old serial harness's `All 3 tests passed`),
//! pytest (`== 3 passed, 1 failed, 1 xfailed in 0.1s ==`), unittest and trial
//! (`Ran 5 tests` then `OK`/`FAILED (…)`/`PASSED (…)`), prove/Test::Harness
//! (`Files=1, Tests=4`, `Failed 1/4 subtests`, `t/x.t .. skipped: why`, the
//! directives of verbose TAP) and cargo test (`test result: ok. 3 passed; …`).
//! Each outcome has its own column, as the tool counts it: an expected failure
//! (pytest's xfailed, unittest's and trial's expected failures, TAP's `not ok # TODO`,
//! automake's XFAIL) is xfailed, an unexpected success (xpassed, unexpected
//! successes, `ok # TODO`, XPASS) is xpassed; neither is a pass, a failure or a
//! skip. A TAP file skipped whole (`1..0 # SKIP why`) counts as one skipped.
//! Non-verbose prove does not print which tests it skipped or expected to fail;
//! `prove -v` (or `prove --directives`) does, and the cpan type runs `make test
//! TEST_VERBOSE=1` for that reason. Runs of the same runner add up; when several
//! runners appear, the first in that list — read from cargo backwards, the most
//! specific — is reported.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::results::{step_result_from_rc, StepResult};
use super::LogParser;

/// The longest part of one line that is kept; the rest of a longer line is not
/// looked at (every pattern here fits well within it).
pub const MAX_LINE: usize = 8192;

/// The most bytes of counted warning lines kept for the step's `warnings` log; the
/// rest are counted, and the log says how many it leaves out.
pub const MAX_WARNING_LOG: usize = 256 * 1024;

/// Counts of one or more test runs, one column per outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Expected failures (pytest's xfailed, unittest/trial's expected failures,
    /// TAP's failing TODO tests, automake's XFAIL).
    pub xfailed: u64,
    /// Unexpected successes (pytest's xpassed, unittest/trial's unexpected
    /// successes, TAP's passing TODO tests, automake's XPASS).
    pub xpassed: u64,
    pub total: u64,
}

impl TestCounts {
    fn add(&mut self, o: TestCounts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.xfailed += o.xfailed;
        self.xpassed += o.xpassed;
        self.total += o.total;
    }

    /// For runners that report a total and the other outcomes: the rest passed.
    fn with_passed_from_total(mut self) -> TestCounts {
        self.passed = self
            .total
            .saturating_sub(self.failed + self.skipped + self.xfailed + self.xpassed);
        self
    }

    /// The total as the sum of the columns.
    fn summed(mut self) -> TestCounts {
        self.total = self.passed + self.failed + self.skipped + self.xfailed + self.xpassed;
        self
    }
}

/// What a step's log said, for the database and the JSON API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LogCounts {
    pub warnings: u64,
    pub errors: u64,
    /// `None` when no test runner's output was recognised.
    pub tests: Option<TestCounts>,
}

/// A `warningPattern` that is not a regular expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPattern(pub String);

/// Compiles a `warningPattern` (Buildbot's Compile option) as the scanner will use
/// it, so a factory can refuse a bad one when `master.ini` is read.
pub fn warning_regex(pattern: &str) -> Result<Regex, BadPattern> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            BadPattern(format!(
                "{pattern:?} is not a regular expression: {}; write e.g. `warningPattern = ^.*: warning: .*`",
                e.to_string().lines().last().unwrap_or("").trim()
            ))
        })
}

/// How warnings are told from other lines.
#[derive(Debug, Clone)]
enum Warnings {
    /// Not counted (test and plain shell steps).
    Off,
    /// The compiler and tool formats ([`is_default_warning`]).
    Formats,
    /// A step's own `warningPattern`.
    Pattern(Regex),
}

/// Streams a step's output through the parser its spec names.
#[derive(Debug, Clone)]
pub struct LogScanner {
    parser: LogParser,
    how: Warnings,
    /// The unfinished line, capped at MAX_LINE bytes.
    partial: Vec<u8>,
    warnings: u64,
    errors: u64,
    /// A rustc `warning: …` line waiting for its ` --> file:line:col`.
    rust_pending: Option<String>,
    /// The counted warning lines, for the `warnings` log (capped).
    warning_lines: String,
    warning_lines_left_out: u64,
    tests: TestScan,
}

impl LogScanner {
    /// A scanner with the parser's default rules.
    pub fn new(parser: LogParser) -> LogScanner {
        let how = match parser {
            LogParser::Compile => Warnings::Formats,
            _ => Warnings::Off,
        };
        LogScanner {
            parser,
            how,
            partial: Vec::new(),
            warnings: 0,
            errors: 0,
            rust_pending: None,
            warning_lines: String::new(),
            warning_lines_left_out: 0,
            tests: TestScan::default(),
        }
    }

    /// A scanner whose warnings are the lines `pattern` matches (a step's
    /// `warningPattern`), whatever its parser; `None`: the parser's default rules.
    pub fn with_warning_pattern(
        parser: LogParser,
        pattern: Option<&str>,
    ) -> Result<LogScanner, BadPattern> {
        let mut s = LogScanner::new(parser);
        if let Some(p) = pattern {
            s.how = Warnings::Pattern(warning_regex(p)?);
        }
        Ok(s)
    }

    /// Whether this scanner counts warnings (a Compile step, or a step with a
    /// `warningPattern`).
    pub fn counts_warnings(&self) -> bool {
        !matches!(self.how, Warnings::Off)
    }

    fn idle(&self) -> bool {
        self.parser == LogParser::None && !self.counts_warnings()
    }

    /// Takes the next piece of output (stdout and stderr alike).
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.idle() {
            return;
        }
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.line(line);
            } else {
                self.keep(line);
                let whole = std::mem::take(&mut self.partial);
                self.line(&whole);
                self.partial = whole;
                self.partial.clear();
            }
        }
        self.keep(rest);
    }

    /// The output is over: a last line without a newline counts too.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.line(&last);
        }
        self.rust_pending = None;
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn line(&mut self, raw: &[u8]) {
        let raw = &raw[..raw.len().min(MAX_LINE)];
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // A `\r` redraws the line: only what was drawn last is on the screen.
        let raw = match raw.iter().rposition(|&b| b == b'\r') {
            Some(i) => &raw[i + 1..],
            None => raw,
        };
        let text = String::from_utf8_lossy(raw);
        let text = strip_ansi(text);
        match &self.how {
            Warnings::Off => {}
            Warnings::Pattern(re) => {
                if re.is_match(&text) {
                    self.counted(&text);
                }
            }
            Warnings::Formats => {
                if let Some(first) = self.rust_pending.take() {
                    if text.trim_start().starts_with("--> ") {
                        self.counted(&first);
                    }
                }
                if is_rustc_warning(&text) {
                    self.rust_pending = Some(text.to_string());
                } else if is_default_warning(&text) {
                    self.counted(&text);
                }
            }
        }
        match self.parser {
            LogParser::None => {}
            LogParser::Compile => {
                if is_error(&text) {
                    self.errors += 1;
                }
            }
            LogParser::Test => self.tests.line(&text),
        }
    }

    /// One more warning, its line kept for the `warnings` log while there is room.
    fn counted(&mut self, line: &str) {
        self.warnings += 1;
        if self.warning_lines.len() + line.len() < MAX_WARNING_LOG {
            self.warning_lines.push_str(line);
            self.warning_lines.push('\n');
        } else {
            self.warning_lines_left_out += 1;
        }
    }

    /// The lines counted as warnings, one a line, for the step's `warnings` log
    /// (as Buildbot's Compile step keeps one); `None` when there were none.
    pub fn warning_log(&self) -> Option<String> {
        if self.warnings == 0 {
            return None;
        }
        let mut text = self.warning_lines.clone();
        if self.warning_lines_left_out > 0 {
            text.push_str(&format!(
                "… and {} more warning lines, not kept here (see stdio)\n",
                self.warning_lines_left_out
            ));
        }
        Some(text)
    }

    /// Warnings counted so far (Compile steps and steps with a `warningPattern`).
    pub fn warnings(&self) -> u64 {
        self.warnings
    }

    /// Errors counted so far (Compile steps; 0 for others).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Test counts so far (Test steps), `None` when no runner was recognised.
    pub fn tests(&self) -> Option<TestCounts> {
        if self.parser != LogParser::Test {
            return None;
        }
        self.tests.best()
    }

    pub fn counts(&self) -> LogCounts {
        LogCounts {
            warnings: self.warnings,
            errors: self.errors,
            tests: self.tests(),
        }
    }

    /// The step's result from its exit status and what its log said: warnings make
    /// a Compile step WARNINGS, failed tests make a Test step FAILURE even when the
    /// runner exits 0. Expected failures and unexpected successes change nothing
    /// here: the runner's exit status says whether it minds them.
    pub fn step_result(&self, rc: i32) -> StepResult {
        match self.tests() {
            Some(t) if t.failed > 0 => StepResult::Failure,
            _ => step_result_from_rc(rc, self.warnings),
        }
    }

    /// The words shown on the waterfall when the step is done, e.g. `compile 2
    /// warnings` or `test 5 passed, 1 failed, 1 xfailed`.
    pub fn summary(&self, description_done: &[String]) -> String {
        let mut parts = Vec::new();
        if self.warnings > 0 {
            parts.push(plural(self.warnings, "warning"));
        }
        if self.errors > 0 {
            parts.push(plural(self.errors, "error"));
        }
        if let Some(t) = self.tests() {
            parts.push(format!("{} passed", t.passed));
            for (n, word) in [
                (t.failed, "failed"),
                (t.skipped, "skipped"),
                (t.xfailed, "xfailed"),
                (t.xpassed, "xpassed"),
            ] {
                if n > 0 {
                    parts.push(format!("{n} {word}"));
                }
            }
        }
        let words = description_done.join(" ");
        match (words.is_empty(), parts.is_empty()) {
            (_, true) => words,
            (true, false) => parts.join(", "),
            (false, false) => format!("{words} {}", parts.join(", ")),
        }
    }
}

fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// Removes terminal colour/cursor sequences (`ESC [ … letter`), which compilers and
/// test runners add when they think they talk to a terminal.
fn strip_ansi(text: Cow<'_, str>) -> Cow<'_, str> {
    if !text.contains('\x1b') {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.clone().next() == Some('[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    Cow::Owned(out)
}

/// The warning formats of the compilers and tools the factory types run, as one
/// regular expression per format (see the module docs).
static WARNING_FORMATS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // GCC/Clang, automake, make, bison…: `file:line[:col]: warning:`.
        r"^[^\s:][^:]*:\d+(?:[:.]\d+)*(?:-\d+(?:[:.]\d+)?)?: [Ww]arning:",
        // A tool without a location: `cc1: warning:`, `ld: warning:`,
        // `x86_64-linux-gnu-gcc-12: warning:`, `make[1]: Warning:`, `libtool: warning:`.
        r"^(?:\S*/)?(?:[\w.+]+-)*(?:cc1|cc1plus|cc1obj|collect2|ld|ld\.bfd|ld\.gold|ld\.lld|lld|gcc|g\+\+|cc|c\+\+|clang|clang\+\+|as|ar|ranlib|libtool|nvcc|make|gmake|automake|autoconf|autoreconf|aclocal)(?:-[\d.]+)?(?:\[\d+\])?: [Ww]arning:",
        // MSVC: `file.c(12): warning C4996:`, `file.c(12,5) : warning C4996:`.
        r"^\S.*\(\d+(?:,\d+)?\)\s?: warning [A-Z]+\d+:",
        // Python's warnings module: `file.py:12: DeprecationWarning: …`.
        r"^\S.*:\d+: \w*Warning: ",
        // Perl's warn without a newline: `… at Makefile.PL line 3.` (also
        // `…, <STDIN> line 1.`); not TAP's `#   at t/x.t line 5.` diagnostics.
        r"^[^#\s].* at \S+ line \d+(?:, <[^>]*> (?:line|chunk) \d+)?\.$",
    ]
    .iter()
    .filter_map(|re| Regex::new(re).ok())
    .collect()
});

/// Whether a line is a warning in one of the formats a Compile step counts by
/// default. Summary lines (`1 warning generated.`, cargo's `generated 2 warnings`)
/// repeat what was counted and are not counted again; a line that merely contains
/// "warning:" is not a warning.
pub fn is_default_warning(line: &str) -> bool {
    let line = line.trim_start();
    if !(line.contains("arning") || line.contains(" line ")) {
        return false;
    }
    WARNING_FORMATS.iter().any(|re| re.is_match(line))
}

/// rustc's `warning: unused variable: `x`` (or `warning[lint]:`): a warning when
/// the next line is its ` --> src/main.rs:2:9`.
fn is_rustc_warning(line: &str) -> bool {
    line.starts_with("warning: ") || (line.starts_with("warning[") && line.contains("]: "))
}

/// Whether a line is a compiler error diagnostic. Summary lines (`could not
/// compile`, `aborting due to`) are not counted again.
fn is_error(line: &str) -> bool {
    let line = line.trim_start();
    let starts = |p: &str| line.starts_with(p);
    (line.contains(": error:")
        || line.contains(": fatal error:")
        || starts("error:")
        || starts("error[")
        || msvc(line, ": error C")
        || msvc(line, ": fatal error C"))
        && !starts("error: could not compile")
        && !starts("error: aborting due to")
}

/// MSVC's `file.c(12): warning C4996: …`.
fn msvc(line: &str, marker: &str) -> bool {
    line.find(marker).is_some_and(|i| {
        line[i + marker.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// Per-runner accumulators; see the module docs for the order they are preferred.
#[derive(Debug, Clone, Default)]
struct TestScan {
    cargo: Option<TestCounts>,
    pytest: Option<TestCounts>,
    /// unittest/trial: total from `Ran N tests`, the rest from the status.
    unittest: Option<TestCounts>,
    /// A `Ran N tests` line waits for its status line.
    unittest_pending: bool,
    /// prove: total from `Files=, Tests=`; the rest from the lines below.
    prove: Option<TestCounts>,
    tap: TapScan,
    automake_summary: Option<TestCounts>,
    automake_lines: Option<TestCounts>,
    automake_serial: Option<TestCounts>,
}

/// What prove and TAP print besides the `Files=, Tests=` total.
#[derive(Debug, Clone, Copy, Default)]
struct TapScan {
    /// `Failed N/M subtests`.
    failed: u64,
    /// `ok N # skip` (verbose or `--directives`).
    skipped: u64,
    /// `not ok N # TODO` (verbose or `--directives`).
    xfailed: u64,
    /// `ok N # TODO` (verbose or `--directives`).
    xpassed: u64,
    /// The tests listed by the summary's `TODO passed:` lines (non-verbose too).
    todo_passed: u64,
    /// A failing file's `(1 TODO test unexpectedly succeeded)` (non-verbose too).
    todo_succeeded: u64,
    /// A failing file's `(less 2 skipped subtests: 4 okay)` (non-verbose too).
    less_skipped: u64,
    /// `t/x.t .. skipped: why`: a file that skipped all its tests (`1..0 # SKIP`).
    skipped_files: u64,
}

fn add(slot: &mut Option<TestCounts>, c: TestCounts) {
    slot.get_or_insert_with(TestCounts::default).add(c);
}

impl TestScan {
    fn best(&self) -> Option<TestCounts> {
        let prove = self.prove.map(|p| {
            let tap = self.tap;
            // Verbose TAP shows every directive; the summaries only some of them.
            let xpassed = tap.xpassed.max(tap.todo_passed).max(tap.todo_succeeded);
            TestCounts {
                failed: tap.failed,
                skipped: tap.skipped.max(tap.less_skipped),
                xfailed: tap.xfailed,
                xpassed,
                ..p
            }
            .with_passed_from_total()
            .plus_skipped(tap.skipped_files)
            .summed()
        });
        self.cargo
            .or(self.pytest)
            .or(self.unittest.map(TestCounts::with_passed_from_total))
            .or(prove)
            .or(self.automake_summary)
            .or(self.automake_lines)
            .or(self.automake_serial)
    }

    fn line(&mut self, line: &str) {
        let t = line.trim();
        if let Some(c) = cargo(t) {
            return add(&mut self.cargo, c);
        }
        if let Some(c) = pytest(t) {
            return add(&mut self.pytest, c);
        }
        if let Some(n) = unittest_ran(t) {
            self.unittest_pending = true;
            return add(
                &mut self.unittest,
                TestCounts {
                    total: n,
                    ..TestCounts::default()
                },
            );
        }
        if self.unittest_pending {
            if let Some(c) = unittest_status(t) {
                self.unittest_pending = false;
                return add(&mut self.unittest, c);
            }
        }
        if self.prove_line(line, t) {
            return;
        }
        if let Some(c) = automake_summary(t) {
            return add(&mut self.automake_summary, c);
        }
        if let Some(c) = automake_line(t) {
            return add(&mut self.automake_lines, c);
        }
        if let Some(c) = automake_serial(t) {
            add(&mut self.automake_serial, c);
        }
    }

    /// prove's and TAP's lines; `line` as printed (a subtest's TAP is indented and
    /// counts only through its parent's line), `t` trimmed.
    fn prove_line(&mut self, line: &str, t: &str) -> bool {
        if let Some(rest) = t.strip_prefix("Files=") {
            let tests = rest
                .split(',')
                .find_map(|p| p.trim().strip_prefix("Tests="))
                .and_then(|n| n.trim().parse().ok());
            if let Some(total) = tests {
                add(
                    &mut self.prove,
                    TestCounts {
                        total,
                        ..TestCounts::default()
                    },
                );
                return true;
            }
        }
        if let Some(rest) = t.strip_prefix("Failed ") {
            if let Some((n, _)) = rest
                .strip_suffix(" subtests")
                .or(rest.strip_suffix(" subtest"))
                .and_then(|r| r.split_once('/'))
            {
                if let Ok(n) = n.parse::<u64>() {
                    self.tap.failed += n;
                    return true;
                }
            }
        }
        if let Some(list) = t.strip_prefix("TODO passed:") {
            if let Some(n) = number_list(list) {
                self.tap.todo_passed += n;
                return true;
            }
        }
        // `(less 2 skipped subtests: 4 okay)`, `(1 TODO test unexpectedly succeeded)`.
        if let Some(inner) = t.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
            let words: Vec<&str> = inner.split_whitespace().collect();
            let num = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
            match words.as_slice() {
                ["less", _, "skipped", "subtest" | "subtests:" | "subtest:", ..] => {
                    if let Some(n) = num(1) {
                        self.tap.less_skipped += n;
                        return true;
                    }
                }
                [_, "TODO", "test" | "tests", "unexpectedly", "succeeded"] => {
                    if let Some(n) = num(0) {
                        self.tap.todo_succeeded += n;
                        return true;
                    }
                }
                _ => {}
            }
        }
        if is_skipped_file(t) {
            self.tap.skipped_files += 1;
            return true;
        }
        // Verbose prove: `ok 3 # skip no network`, `not ok 4 - x # TODO later`.
        if line.starts_with("ok") || line.starts_with("not ok") {
            let ok = line.starts_with("ok");
            if let Some(directive) = tap_directive(t) {
                let d = directive.to_ascii_lowercase();
                if d.starts_with("skip") && ok {
                    self.tap.skipped += 1;
                    return true;
                }
                if d.starts_with("todo") {
                    if ok {
                        self.tap.xpassed += 1;
                    } else {
                        self.tap.xfailed += 1;
                    }
                    return true;
                }
            }
        }
        false
    }
}

impl TestCounts {
    fn plus_skipped(mut self, n: u64) -> TestCounts {
        self.skipped += n;
        self
    }
}

/// The directive of a TAP test line (`ok 2 - name # SKIP why` → `SKIP why`): after
/// the first `#` that is not escaped as `\#`, when the line is a test line.
fn tap_directive(t: &str) -> Option<&str> {
    let rest = t.strip_prefix("not ok").or(t.strip_prefix("ok"))?;
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('#')) {
        return None;
    }
    let bytes = rest.as_bytes();
    let at = (0..bytes.len()).find(|&i| bytes[i] == b'#' && (i == 0 || bytes[i - 1] != b'\\'))?;
    Some(rest[at + 1..].trim_start())
}

/// prove's line for a file that skipped all its tests: `t/net.t .... skipped: why`.
fn is_skipped_file(t: &str) -> bool {
    let Some((name, rest)) = t.split_once(' ') else {
        return false;
    };
    let dots = rest.trim_start_matches('.');
    !name.is_empty() && rest.len() - dots.len() >= 2 && dots.trim_start().starts_with("skipped:")
}

/// How many tests a list like `2-3, 5` names; `None` unless it is one.
fn number_list(list: &str) -> Option<u64> {
    let mut n = 0;
    for part in list.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<u64>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

/// `N word` pairs separated by `sep` (`3 passed; 1 failed`); `None` unless every
/// piece is one.
fn number_words(s: &str, sep: char) -> Option<Vec<(u64, &str)>> {
    s.split(sep)
        .map(|p| {
            let (n, word) = p.trim().split_once(' ')?;
            Some((n.parse().ok()?, word.trim()))
        })
        .collect()
}

/// cargo/libtest: `test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured;
/// 0 filtered out; finished in 0.00s`.
fn cargo(t: &str) -> Option<TestCounts> {
    let rest = t.strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    let mut c = TestCounts::default();
    for piece in counts.split(';') {
        let Some((n, word)) = piece.trim().split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match word {
            "passed" => c.passed += n,
            "failed" => c.failed += n,
            "ignored" => c.skipped += n,
            _ => {}
        }
    }
    Some(c.summed())
}

/// pytest's last line: `===== 3 passed, 1 failed, 2 skipped in 0.12s =====`, also
/// without the `=` (`-q`), with a `(0:01:02)` duration, or `no tests ran in 0.01s`.
fn pytest(t: &str) -> Option<TestCounts> {
    let t = t.trim_matches(|c: char| c == '=' || c.is_whitespace());
    let (counts, time) = t.rsplit_once(" in ")?;
    let secs = time.split(' ').next()?.strip_suffix('s')?;
    secs.parse::<f64>().ok()?;
    if counts == "no tests ran" {
        return Some(TestCounts::default());
    }
    let mut c = TestCounts::default();
    let mut known = false;
    for (n, word) in number_words(counts, ',')? {
        known |= matches!(
            word,
            "passed" | "failed" | "skipped" | "error" | "errors" | "xfailed" | "xpassed"
        );
        match word {
            "passed" => c.passed += n,
            "failed" | "error" | "errors" => c.failed += n,
            "skipped" => c.skipped += n,
            "xfailed" => c.xfailed += n,
            "xpassed" => c.xpassed += n,
            _ => {}
        }
    }
    if !known {
        return None;
    }
    Some(c.summed())
}

/// unittest/trial: `Ran 5 tests in 0.003s`.
fn unittest_ran(t: &str) -> Option<u64> {
    let rest = t.strip_prefix("Ran ")?;
    let (n, rest) = rest.split_once(' ')?;
    if !(rest.starts_with("tests in ") || rest.starts_with("test in ")) {
        return None;
    }
    n.parse().ok()
}

/// The status after `Ran N tests`: `OK`, `OK (skipped=1, expected failures=1)`,
/// `FAILED (failures=1, errors=1, unexpected successes=1)`, trial's `PASSED
/// (successes=5)` and `FAILED (skips=1, expectedFailures=1, failures=1,
/// unexpectedSuccesses=1, successes=4)`.
fn unittest_status(t: &str) -> Option<TestCounts> {
    let (word, rest) = match t.split_once(' ') {
        Some((w, r)) => (w, r.trim()),
        None => (t, ""),
    };
    if !matches!(word, "OK" | "FAILED" | "PASSED") {
        return None;
    }
    let mut c = TestCounts::default();
    if rest.is_empty() {
        return Some(c);
    }
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    for pair in inner.split(',') {
        let (key, n) = pair.trim().split_once('=')?;
        let n: u64 = n.trim().parse().ok()?;
        match key.trim() {
            "failures" | "errors" => c.failed += n,
            "skipped" | "skips" => c.skipped += n,
            "expected failures" | "expectedFailures" => c.xfailed += n,
            "unexpected successes" | "unexpectedSuccesses" => c.xpassed += n,
            _ => {}
        }
    }
    Some(c)
}

/// automake's parallel harness summary: `# TOTAL: 4`, `# PASS:  3`, … XFAIL and
/// XPASS have columns of their own; hard errors count as failed.
fn automake_summary(t: &str) -> Option<TestCounts> {
    let rest = t.strip_prefix("# ")?;
    let (key, n) = rest.split_once(':')?;
    let n: u64 = n.trim().parse().ok()?;
    let mut c = TestCounts::default();
    match key {
        "TOTAL" => c.total = n,
        "PASS" => c.passed = n,
        "SKIP" => c.skipped = n,
        "XFAIL" => c.xfailed = n,
        "XPASS" => c.xpassed = n,
        "FAIL" | "ERROR" => c.failed = n,
        _ => return None,
    }
    Some(c)
}

/// automake's per-test lines: `PASS: test1`, `FAIL: t/x.sh 2 - desc`.
fn automake_line(t: &str) -> Option<TestCounts> {
    let (key, name) = t.split_once(": ")?;
    if name.trim().is_empty() || name.starts_with(' ') {
        return None;
    }
    // `ERROR: …` is also what many tools print; automake's names a test: one word.
    if key == "ERROR" && name.contains(' ') {
        return None;
    }
    let mut c = TestCounts {
        total: 1,
        ..TestCounts::default()
    };
    match key {
        "PASS" => c.passed = 1,
        "SKIP" => c.skipped = 1,
        "XFAIL" => c.xfailed = 1,
        "XPASS" => c.xpassed = 1,
        "FAIL" | "ERROR" => c.failed = 1,
        _ => return None,
    }
    Some(c)
}

/// The old serial harness: `All 3 tests passed`, `1 of 3 tests failed`,
/// `(1 test was not run)`.
fn automake_serial(t: &str) -> Option<TestCounts> {
    let words: Vec<&str> = t
        .trim_matches(|c| c == '(' || c == ')')
        .split_whitespace()
        .collect();
    let num = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
    let is_tests = |i: usize| matches!(words.get(i), Some(&"tests") | Some(&"test"));
    match words.as_slice() {
        ["All", _, _, "passed", ..] | ["All", _, _, "behaved", ..] if is_tests(2) => {
            let n = num(1)?;
            Some(TestCounts {
                passed: n,
                total: n,
                ..TestCounts::default()
            })
        }
        [_, "of", _, _, "failed", ..] if is_tests(3) => {
            let (failed, total) = (num(0)?, num(2)?);
            Some(TestCounts {
                passed: total.saturating_sub(failed),
                failed,
                total,
                ..TestCounts::default()
            })
        }
        [_, _, "was" | "were", "not", "run"] if is_tests(1) => {
            let n = num(0)?;
            Some(TestCounts {
                skipped: n,
                total: n,
                ..TestCounts::default()
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(parser: LogParser, text: &str) -> LogScanner {
        let mut s = LogScanner::new(parser);
        s.feed(text.as_bytes());
        s.finish();
        s
    }

    /// The same text fed in every split into two chunks, and byte by byte, must
    /// give the same counts as fed whole.
    fn same_in_pieces(parser: LogParser, text: &str) -> LogCounts {
        let whole = scan(parser, text).counts();
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut s = LogScanner::new(parser);
            s.feed(&bytes[..cut]);
            s.feed(&bytes[cut..]);
            s.finish();
            assert_eq!(s.counts(), whole, "split at {cut}");
        }
        let mut s = LogScanner::new(parser);
        for b in bytes {
            s.feed(std::slice::from_ref(b));
        }
        s.finish();
        assert_eq!(s.counts(), whole, "byte by byte");
        whole
    }

    fn tc(passed: u64, failed: u64, skipped: u64, total: u64) -> Option<TestCounts> {
        Some(TestCounts {
            passed,
            failed,
            skipped,
            total,
            ..TestCounts::default()
        })
    }

    /// passed, failed, skipped, xfailed, xpassed (the total is their sum).
    fn tcx(p: u64, f: u64, s: u64, xf: u64, xp: u64) -> Option<TestCounts> {
        Some(
            TestCounts {
                passed: p,
                failed: f,
                skipped: s,
                xfailed: xf,
                xpassed: xp,
                total: 0,
            }
            .summed(),
        )
    }

    const GCC: &str = "\
gcc -DHAVE_CONFIG_H -I.    -g -O2 -MT hello.o -MD -MP -MF .deps/hello.Tpo -c -o hello.o hello.c
hello.c: In function 'main':
hello.c:5:9: warning: unused variable 'x' [-Wunused-variable]
    5 |     int x;
      |         ^
hello.c:7:5: warning: implicit declaration of function 'foo' [-Wimplicit-function-declaration]
util.c:12: warning: comparison between signed and unsigned
cc1: warning: command-line option '-Wno-foo' is valid for C++ but not for C
util.c:3:10: fatal error: missing.h: No such file or directory
compilation terminated.
main.c:9:1: error: expected ';' before '}' token
make[1]: *** [Makefile:400: hello.o] Error 1
";

    #[test]
    fn gcc_warnings_and_errors() {
        let c = same_in_pieces(LogParser::Compile, GCC);
        assert_eq!((c.warnings, c.errors, c.tests), (4, 2, None));
        let s = scan(LogParser::Compile, GCC);
        assert_eq!(
            s.summary(&["compile".to_string()]),
            "compile 4 warnings, 2 errors"
        );
        assert_eq!(s.step_result(0), StepResult::Warnings);
        assert_eq!(s.step_result(2), StepResult::Failure);
    }

    #[test]
    fn clang_with_colours_and_its_summary_line() {
        let text = "\x1b[1mfoo.c:3:7: \x1b[0m\x1b[0;1;35mwarning: \x1b[0m\x1b[1munused variable 'y' [-Wunused-variable]\x1b[0m\r\n\
                    int y;\r\n\
                    1 warning generated.\r\n\
                    ld: warning: object file was built for newer macOS version\n";
        let c = same_in_pieces(LogParser::Compile, text);
        assert_eq!((c.warnings, c.errors), (2, 0));
        assert_eq!(
            scan(LogParser::Compile, text).summary(&["compile".into()]),
            "compile 2 warnings"
        );
    }

    #[test]
    fn rustc_and_msvc_diagnostics() {
        let text = "\
warning: unused variable: `x`
 --> src/main.rs:2:9
warning: `hello` (bin \"hello\") generated 1 warning
error[E0425]: cannot find value `y` in this scope
error: could not compile `hello` (bin \"hello\") due to 1 previous error
hello.c(12): warning C4996: 'strcpy': This function may be unsafe
hello.c(14): error C2065: 'z': undeclared identifier
collect2: error: ld returned 1 exit status
";
        let c = same_in_pieces(LogParser::Compile, text);
        assert_eq!((c.warnings, c.errors), (2, 3));
    }

    #[test]
    fn a_note_that_merely_says_warning_is_not_one() {
        // What `setup.py build` and friends print on a green build.
        let text = "\
running build
running build_py
warning: no files found matching '*.txt' under directory 'docs'
warning: check: missing required meta-data: url
WARNING: the index is slow today
note: this package has a warning: nothing to see
  warnings.warn(msg)
copying hello/__init__.py -> build/lib/hello
1 warning generated.
warning: `hello` (lib) generated 1 warning
";
        let s = scan(LogParser::Compile, text);
        assert_eq!((s.warnings(), s.errors()), (0, 0));
        assert_eq!(s.step_result(0), StepResult::Success);
        assert_eq!(s.summary(&["compile".into()]), "compile");
        assert_eq!(s.warning_log(), None);
    }

    #[test]
    fn the_formats_of_the_tools_the_types_run() {
        let text = "\
/usr/lib/python3/dist-packages/setuptools/dist.py:12: SetuptoolsDeprecationWarning: License classifiers are deprecated.
hello/__init__.py:3: DeprecationWarning: invalid escape sequence '\\d'
Useless use of a constant (42) in void context at Makefile.PL line 3.
Use of uninitialized value $x in concatenation at lib/Greet.pm line 7, <STDIN> line 1.
#   at t/fail.t line 5.
make: warning: jobserver unavailable: using -j1.
make[2]: Warning: File 'hello.c' has modification time 2.1 s in the future
Makefile:12: warning: overriding recipe for target 'all'
configure.ac:7: warning: AC_OUTPUT should be used without arguments
x86_64-linux-gnu-gcc-12: warning: -pie ignored
libtool: warning: remember to run 'libtool --finish /usr/lib'
";
        let c = same_in_pieces(LogParser::Compile, text);
        assert_eq!(c.warnings, 10);
        let log = scan(LogParser::Compile, text).warning_log().unwrap();
        assert!(!log.contains("t/fail.t"), "{log}");
        assert!(log.starts_with("/usr/lib/python3/dist-packages/setuptools/dist.py:12:"));
        assert_eq!(log.lines().count(), 10, "{log}");
    }

    #[test]
    fn warning_pattern_replaces_the_formats() {
        let text = "x.c:1:1: warning: w\nWARN: disk almost full\nok\nWARN: again\n";
        let mut s = LogScanner::with_warning_pattern(LogParser::Compile, Some("^WARN: ")).unwrap();
        s.feed(text.as_bytes());
        s.finish();
        assert_eq!(s.warnings(), 2);
        assert_eq!(
            s.warning_log().as_deref(),
            Some("WARN: disk almost full\nWARN: again\n")
        );
        assert_eq!(s.step_result(0), StepResult::Warnings);
        // A plain shell step with a pattern counts too.
        let mut s = LogScanner::with_warning_pattern(LogParser::None, Some("WARN")).unwrap();
        assert!(s.counts_warnings());
        s.feed(text.as_bytes());
        s.finish();
        assert_eq!(s.warnings(), 2);
        assert!(!LogScanner::new(LogParser::Test).counts_warnings());
        let e =
            LogScanner::with_warning_pattern(LogParser::Compile, Some("(unclosed")).unwrap_err();
        assert!(
            e.0.contains("\"(unclosed\" is not a regular expression"),
            "{e}"
        );
    }

    #[test]
    fn the_warnings_log_is_bounded() {
        let mut s = LogScanner::new(LogParser::Compile);
        let line = format!("a.c:1:1: warning: {}\n", "x".repeat(1000));
        for _ in 0..1000 {
            s.feed(line.as_bytes());
        }
        s.finish();
        assert_eq!(s.warnings(), 1000);
        let log = s.warning_log().unwrap();
        assert!(log.len() <= MAX_WARNING_LOG + 100);
        assert!(
            log.ends_with("more warning lines, not kept here (see stdio)\n"),
            "{}",
            &log[log.len() - 80..]
        );
    }

    #[test]
    fn tap_todo_and_skipped_files() {
        // prove -v: skips, a TODO that fails (xfailed) and one that passes (xpassed),
        // a file skipped whole, a subtest's indented TAP.
        let verbose = "\
t/a.t .. 
1..6
ok 1 - one
ok 2 # skip no net
ok 3 # SKIP no net
not ok 4 - xf # TODO later
#   Failed (TODO) test 'xf'
ok 5 - xp # TODO later
    # Subtest: inner
    ok 1 # skip inner
    1..1
ok 6 - inner
ok
t/b.t .. skipped: not here
Test Summary Report
-------------------
t/a.t (Wstat: 0 Tests: 6 Failed: 0)
  TODO passed:   5
Files=2, Tests=6,  0 wallclock secs
Result: PASS
";
        let c = same_in_pieces(LogParser::Test, verbose);
        assert_eq!(c.tests, tcx(2, 0, 3, 1, 1));
        // Non-verbose: the skipped file and the TODO passes are all it shows.
        let quiet = "t/a.t .. ok\nt/b.t ..... skipped: (no reason given)\nTest Summary Report\n-------------------\nt/a.t (Wstat: 0 Tests: 6 Failed: 0)\n  TODO passed:   2-3, 5\nFiles=2, Tests=6,  0 wallclock secs\n";
        assert_eq!(scan(LogParser::Test, quiet).tests(), tcx(3, 0, 1, 0, 3));
        // A failing file, non-verbose: its skips and TODO passes in parentheses.
        let failing = "t/a.t .. \nDubious, test returned 1 (wstat 256, 0x100)\nFailed 1/7 subtests \n\t(less 2 skipped subtests: 4 okay)\n\t(1 TODO test unexpectedly succeeded)\nTest Summary Report\n  TODO passed:   7\nFiles=1, Tests=7,  0 wallclock secs\n";
        assert_eq!(
            same_in_pieces(LogParser::Test, failing).tests,
            tcx(3, 1, 2, 0, 1)
        );
    }

    #[test]
    fn a_clean_compile_is_just_the_words() {
        let s = scan(
            LogParser::Compile,
            "make  all-am\nmake[1]: Nothing to be done\n",
        );
        assert_eq!(s.summary(&["compile".into()]), "compile");
        assert_eq!(s.step_result(0), StepResult::Success);
        assert_eq!(
            scan(LogParser::Compile, "x.c:1:1: warning: w").summary(&["compile".into()]),
            "compile 1 warning"
        );
    }

    #[test]
    fn automake_parallel_harness() {
        let text = "\
make  check-TESTS
PASS: test1.sh
\x1b[0;31mFAIL\x1b[m: test2.sh
SKIP: test3.sh
XFAIL: test4.sh
============================================================================
Testsuite summary for hello 2.12
============================================================================
# TOTAL: 4
# PASS:  1
# SKIP:  1
# XFAIL: 1
# FAIL:  1
# XPASS: 0
# ERROR: 0
============================================================================
See ./test-suite.log
";
        let c = same_in_pieces(LogParser::Test, text);
        assert_eq!(c.tests, tcx(1, 1, 1, 1, 0));
        let s = scan(LogParser::Test, text);
        assert_eq!(
            s.summary(&["test".into()]),
            "test 1 passed, 1 failed, 1 skipped, 1 xfailed"
        );
        assert_eq!(s.step_result(0), StepResult::Failure);
        // Only the per-test lines (no summary reached the log).
        let c = same_in_pieces(
            LogParser::Test,
            "PASS: a\nPASS: t/b.t 1 - ok\nFAIL: c\nERROR: Could not find it\n",
        );
        assert_eq!(c.tests, tc(2, 1, 0, 3));
        // Two directories' summaries add up.
        let two = "# TOTAL: 2\n# PASS:  2\n# TOTAL: 3\n# PASS:  2\n# FAIL:  1\n";
        assert_eq!(scan(LogParser::Test, two).tests(), tc(4, 1, 0, 5));
    }

    #[test]
    fn automake_serial_harness() {
        let text = "PASS: t1\n===================\nAll 3 tests passed\n(1 test was not run)\n===================\n";
        // The per-test line is preferred over the banner when both are there.
        assert_eq!(scan(LogParser::Test, text).tests(), tc(1, 0, 0, 1));
        let banner = "==================\n1 of 3 tests failed\n==================\n";
        assert_eq!(
            same_in_pieces(LogParser::Test, banner).tests,
            tc(2, 1, 0, 3)
        );
        let ok = "All 2 tests passed\n(2 tests were not run)\n";
        assert_eq!(scan(LogParser::Test, ok).tests(), tc(2, 0, 2, 4));
    }

    #[test]
    fn pytest_summaries() {
        let text = "\
============================= test session starts ==============================
platform linux -- Python 3.12.1, pytest-8.0.0, pluggy-1.4.0
collected 6 items

test_x.py ..F.ss                                                          [100%]

=================================== FAILURES ===================================
FAILED test_x.py::test_three - assert 1 == 2
============== 1 failed, 3 passed, 2 skipped, 1 warning in 0.12s ===============
";
        let c = same_in_pieces(LogParser::Test, text);
        assert_eq!(c.tests, tc(3, 1, 2, 6));
        assert_eq!(c.warnings, 0, "a test's warnings are not compile warnings");
        assert_eq!(
            scan(LogParser::Test, "5 passed in 0.01s\n").tests(),
            tc(5, 0, 0, 5)
        );
        assert_eq!(
            scan(
                LogParser::Test,
                "= 2 passed, 1 error, 1 xfailed, 1 xpassed in 61.00s (0:01:01) =\n"
            )
            .tests(),
            tcx(2, 1, 0, 1, 1)
        );
        assert_eq!(
            scan(
                LogParser::Test,
                "============ no tests ran in 0.01s ============\n"
            )
            .tests(),
            tc(0, 0, 0, 0)
        );
        assert_eq!(
            scan(LogParser::Test, "copied 3 files in 0.5s\n").tests(),
            None
        );
    }

    #[test]
    fn unittest_results() {
        let fail = "\
..F.Es
======================================================================
FAIL: test_c (test_m.T.test_c)
----------------------------------------------------------------------
Traceback (most recent call last):
AssertionError: 1 != 2

----------------------------------------------------------------------
Ran 6 tests in 0.003s

FAILED (failures=1, errors=1, skipped=1)
";
        let c = same_in_pieces(LogParser::Test, fail);
        assert_eq!(c.tests, tc(3, 2, 1, 6));
        let ok = "Ran 5 tests in 0.010s\n\nOK (skipped=1)\n";
        assert_eq!(scan(LogParser::Test, ok).tests(), tc(4, 0, 1, 5));
        let s = scan(LogParser::Test, "Ran 1 test in 0.000s\n\nOK\n");
        assert_eq!(s.tests(), tc(1, 0, 0, 1));
        assert_eq!(s.summary(&["test".into()]), "test 1 passed");
        let xf = "Ran 3 tests in 0.1s\nFAILED (expected failures=1, unexpected successes=1)\n";
        assert_eq!(scan(LogParser::Test, xf).tests(), tcx(1, 0, 0, 1, 1));
        // An `OK` that follows no `Ran` line is just output.
        assert_eq!(scan(LogParser::Test, "OK\n").tests(), None);
    }

    #[test]
    fn trial_results() {
        let pass = "\
hello.test.test_hello
  HelloTests
    test_hello ...                                                         [OK]

-------------------------------------------------------------------------------
Ran 5 tests in 0.012s

PASSED (successes=5)
";
        assert_eq!(same_in_pieces(LogParser::Test, pass).tests, tc(5, 0, 0, 5));
        let fail = "Ran 5 tests in 0.012s\n\nFAILED (failures=1, successes=4)\n";
        assert_eq!(scan(LogParser::Test, fail).tests(), tc(4, 1, 0, 5));
        let mixed =
            "Ran 6 tests in 0.2s\nFAILED (skips=1, expectedFailures=1, errors=1, successes=3)\n";
        assert_eq!(scan(LogParser::Test, mixed).tests(), tcx(3, 1, 1, 1, 0));
    }

    #[test]
    fn prove_results() {
        let text = "\
t/basic.t .. ok
t/fail.t ... 
#   Failed test 'two'
#   at t/fail.t line 5.
# Looks like you failed 1 test of 4.
t/fail.t ... Dubious, test returned 1 (wstat 256, 0x100)
Failed 1/4 subtests 

Test Summary Report
-------------------
t/fail.t (Wstat: 256 (exited 1) Tests: 4 Failed: 1)
  Failed test:  2
  Non-zero exit status: 1
Files=2, Tests=7,  0 wallclock secs ( 0.01 usr  0.00 sys +  0.04 cusr  0.01 csys =  0.06 CPU)
Result: FAIL
";
        let c = same_in_pieces(LogParser::Test, text);
        assert_eq!(c.tests, tc(6, 1, 0, 7));
        let ok = "t/a.t .. ok\nAll tests successful.\nFiles=1, Tests=4,  0 wallclock secs\nResult: PASS\n";
        assert_eq!(scan(LogParser::Test, ok).tests(), tc(4, 0, 0, 4));
        let verbose = "ok 1 - a\nok 2 # skip no network\nok 3 # SKIP slow\n1..3\nFiles=1, Tests=3,  0 wallclock secs\n";
        assert_eq!(scan(LogParser::Test, verbose).tests(), tc(1, 0, 2, 3));
    }

    #[test]
    fn cargo_test_results_add_up() {
        let text = "\
running 4 tests
test a ... ok
test b ... FAILED
test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests hello

running 2 tests
test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.31s
";
        let c = same_in_pieces(LogParser::Test, text);
        assert_eq!(c.tests, tc(4, 1, 1, 6));
        let s = scan(LogParser::Test, text);
        assert_eq!(
            s.summary(&["test".into()]),
            "test 4 passed, 1 failed, 1 skipped"
        );
        assert_eq!(s.step_result(101), StepResult::Failure);
        let ok = scan(
            LogParser::Test,
            "test result: ok. 3 passed; 0 failed; 0 ignored\n",
        );
        assert_eq!(ok.step_result(0), StepResult::Success);
    }

    #[test]
    fn failed_tests_fail_the_step_even_with_rc_zero() {
        let s = scan(LogParser::Test, "# TOTAL: 2\n# PASS: 1\n# FAIL: 1\n");
        assert_eq!(s.step_result(0), StepResult::Failure);
    }

    #[test]
    fn no_parser_counts_nothing_and_keeps_nothing() {
        let mut s = LogScanner::new(LogParser::None);
        s.feed(b"x.c:1:1: warning: w\nRan 1 test in 0s\nOK\n# partial");
        s.finish();
        assert_eq!(s.counts(), LogCounts::default());
        assert_eq!(s.summary(&["shell".into()]), "shell");
        assert_eq!(s.step_result(1), StepResult::Failure);
    }

    #[test]
    fn memory_stays_bounded_on_a_huge_line() {
        let mut s = LogScanner::new(LogParser::Compile);
        let junk = vec![b'x'; 1 << 20];
        for _ in 0..16 {
            s.feed(&junk);
        }
        assert!(s.partial.len() <= MAX_LINE);
        s.feed(b"\nfoo.c:1:2: warning: after a long line\n");
        s.finish();
        assert_eq!(s.warnings(), 1);
        // A warning at the start of a long line is still seen.
        let mut s = LogScanner::new(LogParser::Compile);
        s.feed(b"foo.c:1:2: warning: ");
        s.feed(&junk);
        s.feed(b"\n");
        assert_eq!(s.warnings(), 1);
    }

    #[test]
    fn invalid_utf8_and_a_split_character() {
        let text = "é.c:1:1: warning: naïve\n".as_bytes();
        let mut s = LogScanner::new(LogParser::Compile);
        s.feed(&text[..1]);
        s.feed(&text[1..]);
        s.feed(b"\xff\xfe.c:2:2: warning: bad bytes\n");
        s.finish();
        assert_eq!(s.warnings(), 2);
    }
}
