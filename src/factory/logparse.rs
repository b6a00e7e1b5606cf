//! Reading a step's output as it streams in, for the counts the waterfall shows:
//! GCC/Clang (and rustc, MSVC) warnings and errors for Compile steps, and the
//! passed/failed/skipped counts of common test runners for Test steps.
//!
//! The scanner sees output in whatever chunks the slave sends — a chunk may end in
//! the middle of a line or of a UTF-8 character — and keeps only its counters and
//! the unfinished line (at most [`MAX_LINE`] bytes of it), so a 100 MB log costs no
//! more memory than a small one. Colour escapes and `\r` progress redraws are
//! ignored.
//!
//! Test runners recognised: automake `make check` (the `# TOTAL:` summary, else the
//! `PASS:`/`FAIL:` lines, else the old serial harness's `All 3 tests passed`),
//! pytest (`== 3 passed, 1 failed in 0.1s ==`), unittest and trial (`Ran 5 tests`
//! then `OK`/`FAILED (…)`/`PASSED (…)`), prove/Test::Harness (`Files=1, Tests=4`,
//! `Failed 1/4 subtests`) and cargo test (`test result: ok. 3 passed; …`). Runs of
//! the same runner add up; when several runners appear, the first in that list —
//! read from cargo backwards, the most specific — is reported.

use std::borrow::Cow;

use serde::Serialize;

use super::results::{step_result_from_rc, StepResult};
use super::LogParser;

/// The longest part of one line that is kept; the rest of a longer line is not
/// looked at (every pattern here fits well within it).
pub const MAX_LINE: usize = 8192;

/// Counts of one or more test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub total: u64,
}

impl TestCounts {
    fn add(&mut self, o: TestCounts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.total += o.total;
    }

    /// For runners that report a total and the failures: the rest passed.
    fn with_passed_from_total(mut self) -> TestCounts {
        self.passed = self.total.saturating_sub(self.failed + self.skipped);
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

/// Streams a step's output through the parser its spec names.
#[derive(Debug, Clone)]
pub struct LogScanner {
    parser: LogParser,
    /// The unfinished line, capped at MAX_LINE bytes.
    partial: Vec<u8>,
    warnings: u64,
    errors: u64,
    tests: TestScan,
}

impl LogScanner {
    pub fn new(parser: LogParser) -> LogScanner {
        LogScanner {
            parser,
            partial: Vec::new(),
            warnings: 0,
            errors: 0,
            tests: TestScan::default(),
        }
    }

    /// Takes the next piece of output (stdout and stderr alike).
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.parser == LogParser::None {
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
        match self.parser {
            LogParser::None => {}
            LogParser::Compile => {
                let (w, e) = compile_line(&text);
                self.warnings += u64::from(w);
                self.errors += u64::from(e);
            }
            LogParser::Test => self.tests.line(&text),
        }
    }

    /// Warnings counted so far (Compile steps; 0 for others).
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
    /// runner exits 0.
    pub fn step_result(&self, rc: i32) -> StepResult {
        match self.tests() {
            Some(t) if t.failed > 0 => StepResult::Failure,
            _ => step_result_from_rc(rc, self.warnings),
        }
    }

    /// The words shown on the waterfall when the step is done, e.g. `compile 2
    /// warnings` or `test 5 passed, 1 failed`.
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
            if t.failed > 0 {
                parts.push(format!("{} failed", t.failed));
            }
            if t.skipped > 0 {
                parts.push(format!("{} skipped", t.skipped));
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

/// Whether a line is a compiler warning and/or error diagnostic. Summary lines
/// (`1 warning generated.`, cargo's `generated 2 warnings`, `could not compile`)
/// repeat what was counted and are not counted again.
fn compile_line(line: &str) -> (bool, bool) {
    let line = line.trim_start();
    let starts = |p: &str| line.starts_with(p);
    let warning = (line.contains(": warning:")
        || starts("warning:")
        || starts("warning[")
        || msvc(line, ": warning C"))
        && !(starts("warning: ") && line.contains(") generated "));
    let error = (line.contains(": error:")
        || line.contains(": fatal error:")
        || starts("error:")
        || starts("error[")
        || msvc(line, ": error C")
        || msvc(line, ": fatal error C"))
        && !starts("error: could not compile")
        && !starts("error: aborting due to");
    (warning, error)
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
    /// unittest/trial: total from `Ran N tests`, failed/skipped from the status.
    unittest: Option<TestCounts>,
    /// A `Ran N tests` line waits for its status line.
    unittest_pending: bool,
    /// prove: total from `Files=, Tests=`; failures from `Failed N/M subtests`.
    prove: Option<TestCounts>,
    prove_failed: u64,
    prove_skipped: u64,
    automake_summary: Option<TestCounts>,
    automake_lines: Option<TestCounts>,
    automake_serial: Option<TestCounts>,
}

fn add(slot: &mut Option<TestCounts>, c: TestCounts) {
    slot.get_or_insert_with(TestCounts::default).add(c);
}

impl TestScan {
    fn best(&self) -> Option<TestCounts> {
        let prove = self.prove.map(|p| {
            TestCounts {
                failed: self.prove_failed,
                skipped: self.prove_skipped,
                ..p
            }
            .with_passed_from_total()
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
        if self.prove_line(t) {
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

    fn prove_line(&mut self, t: &str) -> bool {
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
                    self.prove_failed += n;
                    return true;
                }
            }
        }
        // Verbose prove: `ok 3 # skip no network`.
        if let Some(rest) = t.strip_prefix("ok ") {
            if let Some((_, directive)) = rest.split_once('#') {
                if directive
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("skip")
                {
                    self.prove_skipped += 1;
                    return true;
                }
            }
        }
        false
    }
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
    c.total = c.passed + c.failed + c.skipped;
    Some(c)
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
            "passed" | "xpassed" => c.passed += n,
            "failed" | "error" | "errors" => c.failed += n,
            "skipped" | "xfailed" => c.skipped += n,
            _ => {}
        }
    }
    if !known {
        return None;
    }
    c.total = c.passed + c.failed + c.skipped;
    Some(c)
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

/// The status after `Ran N tests`: `OK`, `OK (skipped=1)`, `FAILED (failures=1,
/// errors=1)`, trial's `PASSED (successes=5)` and `FAILED (failures=1, successes=4)`.
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
            "failures" | "errors" | "unexpected successes" | "unexpectedSuccesses" => c.failed += n,
            "skipped" | "skips" => c.skipped += n,
            _ => {}
        }
    }
    Some(c)
}

/// automake's parallel harness summary: `# TOTAL: 4`, `# PASS:  3`, … Expected
/// failures count as passed, unexpected passes and hard errors as failed.
fn automake_summary(t: &str) -> Option<TestCounts> {
    let rest = t.strip_prefix("# ")?;
    let (key, n) = rest.split_once(':')?;
    let n: u64 = n.trim().parse().ok()?;
    let mut c = TestCounts::default();
    match key {
        "TOTAL" => c.total = n,
        "PASS" | "XFAIL" => c.passed = n,
        "SKIP" => c.skipped = n,
        "FAIL" | "XPASS" | "ERROR" => c.failed = n,
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
        "PASS" | "XFAIL" => c.passed = 1,
        "SKIP" => c.skipped = 1,
        "FAIL" | "XPASS" | "ERROR" => c.failed = 1,
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
        })
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
        assert_eq!(c.tests, tc(2, 1, 1, 4));
        let s = scan(LogParser::Test, text);
        assert_eq!(
            s.summary(&["test".into()]),
            "test 2 passed, 1 failed, 1 skipped"
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
            tc(3, 1, 1, 5)
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
        assert_eq!(scan(LogParser::Test, xf).tests(), tc(2, 1, 0, 3));
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
        assert_eq!(scan(LogParser::Test, mixed).tests(), tc(4, 1, 1, 6));
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
