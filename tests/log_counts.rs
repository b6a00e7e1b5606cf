//! Counts a user can trust, from real tools: pytest, python's unittest, trial and
//! prove run on small suites written here (passes, failures, errors, skips,
//! expected failures, unexpected successes, a TAP file skipped whole), their real
//! output fed to the log parser, and the parser's columns compared with the numbers
//! in each tool's own summary line. Then whole builds on a real master and slave:
//! setuptools' notes that merely say "warning:" leave a green build green,
//! `warningPattern` (factory and shell step) decides what counts and the
//! `warnings` log shows the lines that did, the JSON API gives the counts and
//! `warnings-count` as numbers, and a bad pattern is a checkconfig error on its
//! line.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "factory_common/mod.rs"]
mod factory_common;

use std::path::Path;
use std::process::Command;

use autobot::factory::logparse::{LogScanner, TestCounts};
use autobot::factory::LogParser;
use factory_common::*;
use regex::Regex;
use serde_json::Value;

/// passed, failed, skipped, xfailed, xpassed.
type Columns = (u64, u64, u64, u64, u64);

fn columns(t: TestCounts) -> Columns {
    (t.passed, t.failed, t.skipped, t.xfailed, t.xpassed)
}

/// Runs `script` with `sh -c` in `dir`, stdout and stderr together as a slave
/// sends them; the output whatever the exit status.
fn output(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("{script} 2>&1")])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The parser's test counts of `text`, fed in small uneven chunks.
fn parsed(text: &str) -> Columns {
    let mut s = LogScanner::new(LogParser::Test);
    for chunk in text.as_bytes().chunks(37) {
        s.feed(chunk);
    }
    s.finish();
    columns(
        s.tests()
            .unwrap_or_else(|| panic!("no runner recognised in:\n{text}")),
    )
}

/// The one line of `text` that `re` matches.
fn summary_line<'a>(text: &'a str, re: &Regex) -> &'a str {
    let lines: Vec<&str> = text.lines().filter(|l| re.is_match(l)).collect();
    assert_eq!(lines.len(), 1, "one summary line {re} in:\n{text}");
    lines[0]
}

/// `key=N` or `N word` pairs of a summary line, by name.
fn numbers(line: &str, re: &Regex) -> Vec<(String, u64)> {
    re.captures_iter(line)
        .map(|c| {
            let (n, word) = if c["a"].chars().all(|ch| ch.is_ascii_digit()) {
                (&c["a"], &c["b"])
            } else {
                (&c["b"], &c["a"])
            };
            (word.to_string(), n.parse().unwrap())
        })
        .collect()
}

fn get(pairs: &[(String, u64)], names: &[&str]) -> u64 {
    pairs
        .iter()
        .filter(|(w, _)| names.contains(&w.as_str()))
        .map(|(_, n)| n)
        .sum()
}

const PY_SUITE: &str = "\
import unittest

class Mix(unittest.TestCase):
    def test_one(self):
        pass

    def test_two(self):
        pass

    def test_broken(self):
        self.assertEqual(1, 2)

    def test_error(self):
        raise RuntimeError('boom')

    @unittest.skip('not today')
    def test_skipped(self):
        pass

    @unittest.expectedFailure
    def test_xfail(self):
        self.assertEqual(1, 2)

    @unittest.expectedFailure
    def test_xpass(self):
        pass
";

#[test]
fn pytest_counts_match_its_summary_line() {
    if !support::need_tools(&[("python3", "apt-get install python3")])
        || !support::need_python_module("pytest", "pip install pytest")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    support::write_file(
        dir.path(),
        "test_mix.py",
        "import pytest\n\n\
         def test_one():\n    pass\n\n\
         def test_two():\n    pass\n\n\
         def test_broken():\n    assert 1 == 2\n\n\
         @pytest.fixture\ndef bad():\n    raise RuntimeError('boom')\n\n\
         def test_error(bad):\n    pass\n\n\
         @pytest.mark.skip(reason='not today')\ndef test_skipped():\n    pass\n\n\
         @pytest.mark.xfail(reason='known')\ndef test_xfail():\n    assert 0\n\n\
         @pytest.mark.xfail(reason='known')\ndef test_xpass():\n    pass\n\n\
         @pytest.mark.xfail(reason='known')\ndef test_xfail_too():\n    raise ValueError\n",
    );
    let text = output(
        dir.path(),
        "python3 -m pytest -p no:cacheprovider test_mix.py",
    );
    let line = summary_line(&text, &Regex::new(r"^=+ .* in [\d.]+s.* =+$").unwrap());
    let pairs = numbers(line, &Regex::new(r"(?P<a>\d+) (?P<b>[a-z]+)").unwrap());
    let tool = (
        get(&pairs, &["passed"]),
        get(&pairs, &["failed", "error", "errors"]),
        get(&pairs, &["skipped"]),
        get(&pairs, &["xfailed"]),
        get(&pairs, &["xpassed"]),
    );
    assert_eq!(tool, (2, 2, 1, 2, 1), "the suite is as written: {line}");
    assert_eq!(parsed(&text), tool, "{line}");
    // `-q` and `-rA` print the same summary without the `=`s or with more above.
    let quiet = output(
        dir.path(),
        "python3 -m pytest -q -rA -p no:cacheprovider test_mix.py",
    );
    assert_eq!(parsed(&quiet), tool, "{quiet}");
}

#[test]
fn unittest_counts_match_its_summary_line() {
    if !support::need_tools(&[("python3", "apt-get install python3")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    support::write_file(dir.path(), "test_mix.py", PY_SUITE);
    let text = output(dir.path(), "python3 -m unittest test_mix");
    let ran = summary_line(&text, &Regex::new(r"^Ran \d+ tests? in").unwrap());
    let ran: u64 = ran.split(' ').nth(1).unwrap().parse().unwrap();
    let line = summary_line(&text, &Regex::new(r"^(OK|FAILED)( \(.*\))?$").unwrap());
    let pairs = numbers(line, &Regex::new(r"(?P<a>[a-z ]+)=(?P<b>\d+)").unwrap());
    let pairs: Vec<(String, u64)> = pairs
        .into_iter()
        .map(|(w, n)| (w.trim().to_string(), n))
        .collect();
    let (failed, skipped, xfailed, xpassed) = (
        get(&pairs, &["failures", "errors"]),
        get(&pairs, &["skipped"]),
        get(&pairs, &["expected failures"]),
        get(&pairs, &["unexpected successes"]),
    );
    let tool = (
        ran - failed - skipped - xfailed - xpassed,
        failed,
        skipped,
        xfailed,
        xpassed,
    );
    assert_eq!(tool, (2, 2, 1, 1, 1), "the suite is as written: {line}");
    assert_eq!(parsed(&text), tool, "{line}");
    // Only the expected failure and the skip: OK, and still their own columns.
    let ok = output(
        dir.path(),
        "python3 -m unittest test_mix.Mix.test_one test_mix.Mix.test_skipped test_mix.Mix.test_xfail",
    );
    assert!(ok.contains("OK (skipped=1, expected failures=1)"), "{ok}");
    assert_eq!(parsed(&ok), (1, 0, 1, 1, 0));
}

#[test]
fn trial_counts_match_its_summary_line() {
    if !support::need_tools(&[("trial", "pip install twisted")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    support::write_file(dir.path(), "mix/__init__.py", "");
    support::write_file(
        dir.path(),
        "mix/test_mix.py",
        "from twisted.trial import unittest\n\n\
         class Mix(unittest.TestCase):\n\
         \x20   def test_one(self):\n        pass\n\n\
         \x20   def test_two(self):\n        pass\n\n\
         \x20   def test_broken(self):\n        self.assertEqual(1, 2)\n\n\
         \x20   def test_error(self):\n        raise RuntimeError('boom')\n\n\
         \x20   def test_skipped(self):\n        raise unittest.SkipTest('not today')\n\n\
         \x20   def test_xfail(self):\n        self.assertEqual(1, 2)\n\
         \x20   test_xfail.todo = 'known'\n\n\
         \x20   def test_xpass(self):\n        pass\n\
         \x20   test_xpass.todo = 'known'\n",
    );
    let text = output(dir.path(), "PYTHONPATH=. trial mix");
    let line = summary_line(&text, &Regex::new(r"^(PASSED|FAILED) \(.*\)$").unwrap());
    let pairs = numbers(line, &Regex::new(r"(?P<a>[A-Za-z]+)=(?P<b>\d+)").unwrap());
    let tool = (
        get(&pairs, &["successes"]),
        get(&pairs, &["failures", "errors"]),
        get(&pairs, &["skips"]),
        get(&pairs, &["expectedFailures"]),
        get(&pairs, &["unexpectedSuccesses"]),
    );
    assert_eq!(tool, (2, 2, 1, 1, 1), "the suite is as written: {line}");
    assert_eq!(parsed(&text), tool, "{line}");
    // A passing run with an unexpected success: PASSED, and it is not a pass.
    let ok = output(
        dir.path(),
        "PYTHONPATH=. trial mix.test_mix.Mix.test_one mix.test_mix.Mix.test_xpass",
    );
    assert!(
        ok.contains("PASSED (unexpectedSuccesses=1, successes=1)"),
        "{ok}"
    );
    assert_eq!(parsed(&ok), (1, 0, 0, 0, 1));
}

#[test]
fn prove_counts_match_its_summary_lines() {
    if !support::need_tools(&[("prove", "apt-get install perl")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 2 pass, 1 fails, 2 skipped subtests, 1 TODO fails (xfailed), 1 TODO passes
    // (xpassed); a file skipped whole; a subtest whose inner skip is its own.
    support::write_file(
        dir.path(),
        "t/mix.t",
        "use Test::More tests => 7;\n\
         ok(1, 'one');\n\
         ok(1, 'two');\n\
         ok(0, 'broken');\n\
         SKIP: { skip 'no network', 2; ok(0); ok(0); }\n\
         TODO: { local $TODO = 'known'; ok(0, 'xfail'); ok(1, 'xpass'); }\n",
    );
    support::write_file(
        dir.path(),
        "t/sub.t",
        "use Test::More tests => 1;\n\
         subtest inner => sub { plan tests => 2; ok(1); SKIP: { skip 'inner', 1; ok(0); } };\n",
    );
    support::write_file(
        dir.path(),
        "t/net.t",
        "use Test::More skip_all => 'no network here';\n",
    );
    let files_re = Regex::new(r"^Files=\d+, Tests=\d+,").unwrap();
    let pairs_re = Regex::new(r"(?P<a>[A-Za-z]+)=(?P<b>\d+)").unwrap();
    let failed_re = Regex::new(r"^Failed \d+/\d+ subtests").unwrap();
    for flags in ["-v", "--directives"] {
        let text = output(dir.path(), &format!("prove {flags} t"));
        let files = summary_line(&text, &files_re);
        let pairs = numbers(files, &pairs_re);
        assert_eq!(get(&pairs, &["Files"]), 3, "{files}");
        let tests = get(&pairs, &["Tests"]);
        let failed = summary_line(&text, &failed_re);
        let failed: u64 = failed[7..].split('/').next().unwrap().parse().unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("t/net.t ..") && l.ends_with("skipped: no network here")),
            "{text}"
        );
        assert!(text.contains("TODO passed:   7"), "{text}");
        let got = parsed(&text);
        // Every subtest prove counted (Tests=) is in one column; the skipped file
        // is one more skipped.
        assert_eq!(got.0 + got.1 + got.2 - 1 + got.3 + got.4, tests, "{flags}");
        assert_eq!(got.1, failed);
        assert_eq!(got, (3, 1, 3, 1, 1), "prove {flags}:\n{text}");
    }
    // Plain prove shows a failing file's skips and TODO passes ("less 2 skipped
    // subtests", "TODO passed"), but not its failing TODOs nor a passing file's
    // skips: what it shows is counted (the failing TODO and the subtest's inner
    // skip are inside passes there).
    let text = output(dir.path(), "prove t");
    assert_eq!(parsed(&text), (4, 1, 3, 0, 1), "{text}");
}

/// A Python project whose `setup.py build` prints setuptools' notes ("warning: no
/// files found matching …", "warning: build_py: byte-compiling is disabled"), with
/// a pytest suite: two pass, one skipped, one expected failure, one unexpected
/// success.
fn noisy_project() -> Vec<RepoFile> {
    files(&[
        ("hello/__init__.py", "GREETING = 'hello'\n"),
        ("MANIFEST.in", "recursive-include docs *.txt\n"),
        (
            "setup.py",
            "from setuptools import setup\n\
             setup(name='hello', version='1.0', packages=['hello'], include_package_data=True)\n",
        ),
        (
            "test_hello.py",
            "import pytest\nimport hello\n\n\
             def test_one():\n    assert hello.GREETING == 'hello'\n\n\
             def test_two():\n    pass\n\n\
             @pytest.mark.skip(reason='not today')\ndef test_skipped():\n    pass\n\n\
             @pytest.mark.xfail(reason='known')\ndef test_xfail():\n    assert 0\n\n\
             @pytest.mark.xfail(reason='known')\ndef test_xpass():\n    pass\n",
        ),
    ])
}

async fn api_build(site: &Site, b: &autobot::db::builds::BuildDetail) -> Value {
    let path = format!(
        "/api/v1/builders/{}/builds/{}",
        b.build.builder, b.build.number
    );
    let (status, body) = support::http_get(site.m.master.htmlport(), &path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn api_step<'a>(build: &'a Value, name: &str) -> &'a Value {
    build["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {build}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_count_what_the_tools_count_and_the_api_gives_numbers() {
    if !support::need_tools(&[("python3", "apt-get install python3")])
        || !support::need_python_module("setuptools", "pip install setuptools")
        || !support::need_python_module("pytest", "pip install pytest")
    {
        return;
    }
    let factories = r#"
[notes]
type = distutils
git = ./repos/noisy
test = python3 -m pytest -p no:cacheprovider test_hello.py

[pattern]
type = distutils
git = ./repos/noisy
warningPattern = ^warning: no files found

[lint]
type = shell
step.lint = sh -c "echo 'LINT: one'; echo fine; echo 'x.c:1:1: warning: not this one'; echo 'LINT: two'"
step.lint.warningPattern = ^LINT:
step.lint.warnOnWarnings = true
"#;
    let site = Site::start(&[("noisy", noisy_project())], factories, 3).await;
    let b = site.build_all(&["notes", "pattern", "lint"]).await;

    // setuptools' notes are not warnings: the build stays green.
    let notes = &b[0];
    let log = site.log(notes, "compile").await;
    assert!(
        log.contains("warning: no files found matching '*.txt' under directory 'docs'"),
        "the note is there: {log}"
    );
    assert_eq!(
        results(notes),
        expect(&[
            ("checkout", "success"),
            ("compile", "success"),
            ("test", "success"),
        ])
    );
    assert_eq!(result(notes), "success", "{}", notes.build.text);
    assert_eq!(step(notes, "compile").text, "compile");
    assert!(
        step(notes, "compile")
            .logs
            .iter()
            .all(|l| l.name != "warnings"),
        "no warnings log without warnings"
    );
    assert_eq!(
        step(notes, "test").text,
        "test 2 passed, 1 skipped, 1 xfailed, 1 xpassed"
    );
    let json = api_build(&site, notes).await;
    let test = api_step(&json, "test");
    assert_eq!(
        test["counts"],
        serde_json::json!({"passed": 2, "failed": 0, "skipped": 1, "xfailed": 1, "xpassed": 1}),
        "{test}"
    );
    assert_eq!(test["warnings"], 0);
    let compile = api_step(&json, "compile");
    assert_eq!(compile["counts"], Value::Null, "{compile}");
    assert_eq!(compile["warnings"], 0);
    assert_eq!(json["properties"]["warnings-count"][0], 0, "{json}");

    // The factory's warningPattern: only the line it matches counts.
    let pattern = &b[1];
    assert_eq!(step(pattern, "compile").result.as_deref(), Some("warnings"));
    assert_eq!(result(pattern), "warnings");
    assert_eq!(step(pattern, "compile").text, "compile 1 warning");
    let warnings = site
        .m
        .master
        .db()
        .log_file(
            &pattern.build.builder,
            pattern.build.number,
            "compile",
            "warnings",
        )
        .await;
    let warnings = std::fs::read_to_string(warnings.unwrap().unwrap().path).unwrap();
    assert!(
        warnings.contains("warning: no files found matching '*.txt' under directory 'docs'")
            && !warnings.contains("byte-compiling"),
        "{warnings}"
    );
    let json = api_build(&site, pattern).await;
    assert_eq!(api_step(&json, "compile")["warnings"], 1);
    assert_eq!(json["properties"]["warnings-count"][0], 1, "{json}");

    // A shell step's own pattern; warnOnWarnings makes the build WARNINGS.
    let lint = &b[2];
    assert_eq!(step(lint, "lint").result.as_deref(), Some("warnings"));
    assert_eq!(result(lint), "warnings");
    let json = api_build(&site, lint).await;
    let step_json = api_step(&json, "lint");
    assert_eq!(step_json["warnings"], 2, "{step_json}");
    assert_eq!(step_json["counts"], Value::Null);
    assert_eq!(json["properties"]["warnings-count"][0], 2, "{json}");
    let names: Vec<&str> = step_json["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["stdio", "warnings"]);
    site.stop().await;
}

fn checkconfig_fails_with(ini: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.ini");
    std::fs::write(&path, ini).unwrap();
    let out = assert_cmd::Command::cargo_bin("autobot")
        .unwrap()
        .arg("checkconfig")
        .arg(dir.path())
        .assert()
        .failure()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = expected.replace("{ini}", &path.display().to_string());
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
}

#[test]
fn a_bad_warning_pattern_is_a_checkconfig_error_on_its_line() {
    let head = "[:master:]\npassword = pw\nfactories = *\n\n[slave:s1]\n\n";
    checkconfig_fails_with(
        &format!("{head}[f]\ntype = distutils\ngit = https://example.org/r.git\nwarningPattern = warning: (\n"),
        "{ini}:10: [f] warningPattern: \"warning: (\" is not a regular expression",
    );
    checkconfig_fails_with(
        &format!("{head}[f]\ntype = shell\nstep.lint = true\nstep.lint.warningPattern = [a-\n"),
        "{ini}:10: [f] step.lint.warningPattern: \"[a-\" is not a regular expression",
    );
}
