//! Step semantics against real tools on a real autobot slave: Compile steps count
//! the warnings and errors real gcc prints (also in colour) into the step text and
//! make the build WARNINGS through `warnOnWarnings`; Test steps count passed,
//! failed and skipped tests from the real output of make check (an automake-style
//! harness written here: automake itself is not on the machine), prove, python's
//! unittest, trial, pytest and cargo test; `timeout` (no output) and `maxTime` kill
//! the whole process group — a child that would outlive its parent included — and
//! the step says why.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "factory_common/mod.rs"]
mod factory_common;

use std::time::{Duration, Instant};

use factory_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_steps_count_real_gcc_warnings_and_errors() {
    if !support::need_tools(&[
        ("make", "apt-get install make"),
        ("gcc", "apt-get install gcc"),
    ]) {
        return;
    }
    // Two warnings with the sample's -Wall: an unused variable and an unused
    // static function.
    let warn = [(
        "src/hello.c",
        "    int i;\n",
        "    int i;\n    int unused;\n",
    )];
    let mut warn_file = sample("hello", &warn);
    let hello_c = warn_file.iter_mut().find(|f| f.0 == "src/hello.c").unwrap();
    let text = String::from_utf8(hello_c.1.clone()).unwrap();
    hello_c.1 = text
        .replacen(
            "static void usage",
            "static int never_called(void)\n{\n    return 0;\n}\n\nstatic void usage",
            1,
        )
        .into_bytes();
    // The same two, and an error: the compile fails and halts the build.
    let mut error_file = warn_file.clone();
    let hello_c = error_file
        .iter_mut()
        .find(|f| f.0 == "src/hello.c")
        .unwrap();
    let text = String::from_utf8(hello_c.1.clone()).unwrap();
    hello_c.1 = text
        .replacen("    return 0;\n}\n", "    return missing;\n}\n", 1)
        .into_bytes();
    let repos = [("hello-warn", warn_file), ("hello-error", error_file)];
    let factories = r#"
[warn]
type = autotools
git = ./repos/hello-warn

[warn-colour]
type = autotools
git = ./repos/hello-warn
configureEnv = CFLAGS="-Wall -fdiagnostics-color=always"

[error]
type = autotools
git = ./repos/hello-error
"#;
    let site = Site::start(&repos, factories, 2).await;
    let b = site.build_all(&["warn", "warn-colour", "error"]).await;

    for b in &b[..2] {
        let who = &b.build.builder;
        assert_eq!(
            results(b),
            expect(&[
                ("checkout", "success"),
                ("configure", "success"),
                ("compile", "warnings"),
                ("test", "success"),
            ]),
            "{who}"
        );
        // warnOnWarnings (Buildbot's Compile): the build is WARNINGS.
        assert_eq!(result(b), "warnings", "{who}");
        assert_eq!(b.build.text, "warnings compile", "{who}");
        assert_eq!(step(b, "compile").text, "compile 2 warnings", "{who}");
        // Buildbot's warning-counting steps total their warnings in a property.
        assert_eq!(
            b.properties.get("warnings-count").map(|(v, _)| v.as_str()),
            Some("2"),
            "{who}"
        );
        let log = site.log(b, "compile").await;
        assert!(log.contains("-Wunused-variable"), "{log}");
        assert!(log.contains("-Wunused-function"), "{log}");
    }
    let log = site.log(&b[1], "compile").await;
    assert!(log.contains("\x1b["), "gcc was asked for colour: {log}");

    let error = &b[2];
    assert_eq!(
        results(error),
        expect(&[
            ("checkout", "success"),
            ("configure", "success"),
            ("compile", "failure"),
        ])
    );
    assert_eq!(result(error), "failure");
    let text = &step(error, "compile").text;
    assert_eq!(text, "compile 2 warnings, 1 error failed");
    assert_eq!(
        error
            .properties
            .get("warnings-count")
            .map(|(v, _)| v.as_str()),
        Some("2")
    );
    let log = site.log(error, "compile").await;
    assert!(
        log.contains("error: ") && log.contains("missing") && log.contains("undeclared"),
        "{log}"
    );
    site.stop().await;
}

/// The same four tests for every runner: two pass, one fails, one is skipped.
fn runner_project() -> Vec<RepoFile> {
    files(&[
        ("Makefile", "check:\n\tsh tests/check.sh\n"),
        (
            "tests/check.sh",
            "#!/bin/sh\n\
             # An automake-style parallel test harness: one line per test, then the summary.\n\
             echo 'PASS: one'\necho 'PASS: two'\necho 'FAIL: broken'\necho 'SKIP: skipped'\n\
             echo '============================================================================'\n\
             echo 'Testsuite summary for runners 1.0'\n\
             echo '============================================================================'\n\
             echo '# TOTAL: 4'\necho '# PASS:  2'\necho '# SKIP:  1'\necho '# XFAIL: 0'\n\
             echo '# FAIL:  1'\necho '# XPASS: 0'\necho '# ERROR: 0'\n\
             echo '============================================================================'\n\
             exit 1\n",
        ),
        (
            "t/mix.t",
            "use strict;\nuse warnings;\nuse Test::More tests => 4;\n\
             ok(1, 'one');\nok(1, 'two');\nis('left', 'right', 'broken');\n\
             SKIP: { skip 'not today', 1; ok(0, 'skipped'); }\n",
        ),
        (
            "test_mix.py",
            "import unittest\n\n\nclass Mix(unittest.TestCase):\n\
             \x20   def test_one(self):\n        self.assertEqual(1 + 1, 2)\n\n\
             \x20   def test_two(self):\n        self.assertTrue(True)\n\n\
             \x20   def test_broken(self):\n        self.assertEqual('left', 'right')\n\n\
             \x20   @unittest.skip('not today')\n    def test_skipped(self):\n        pass\n",
        ),
        (
            "crate/Cargo.toml",
            "[package]\nname = \"mix\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
        ),
        (
            "crate/src/lib.rs",
            "//! Tests that pass, fail and are ignored.\n\
             pub fn add(a: u32, b: u32) -> u32 {\n    a + b\n}\n\n\
             #[cfg(test)]\nmod tests {\n\
             \x20   #[test]\n    fn one() {\n        assert_eq!(super::add(1, 1), 2);\n    }\n\
             \x20   #[test]\n    fn two() {\n        assert_eq!(super::add(2, 2), 4);\n    }\n\
             \x20   #[test]\n    fn broken() {\n        assert_eq!(super::add(2, 2), 5);\n    }\n\
             \x20   #[test]\n    #[ignore]\n    fn skipped() {}\n}\n",
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_steps_count_the_results_of_real_runners() {
    if !support::need_tools(&[
        ("make", "apt-get install make"),
        ("prove", "apt-get install perl"),
        ("trial", "pip install twisted"),
        ("cargo", "the Rust toolchain"),
    ]) || !support::need_python_module("pytest", "pip install pytest")
    {
        return;
    }
    // Every step parses test counts; a failing one only warns, so all of them run.
    let mut factories = String::from("[runners]\ntype = shell\ngit = ./repos/runners\n");
    let steps: &[(&str, &str, &str)] = &[
        ("automake", "make check", ""),
        ("prove", "prove t/", ""),
        ("prove-verbose", "prove -v t/", ""),
        ("unittest", "python3 -m unittest -v test_mix", ""),
        (
            "unittest-ok",
            "python3 -m unittest test_mix.Mix.test_one test_mix.Mix.test_two",
            "",
        ),
        (
            "trial",
            "trial --reporter=bwverbose test_mix",
            "PYTHONPATH=.",
        ),
        (
            "pytest",
            "python3 -m pytest -p no:cacheprovider test_mix.py",
            "",
        ),
        (
            "pytest-ok",
            "python3 -m pytest -p no:cacheprovider -k 'not broken' test_mix.py",
            "",
        ),
        ("cargo", "cargo test --offline --quiet", ""),
        (
            "cargo-ok",
            "cargo test --offline --quiet -- --skip broken",
            "",
        ),
    ];
    for (name, command, env) in steps {
        factories.push_str(&format!(
            "step.{name} = {command}\nstep.{name}.logParser = test\n\
             step.{name}.flunkOnFailure = false\nstep.{name}.warnOnFailure = true\n"
        ));
        if let Some((var, value)) = env.split_once('=') {
            factories.push_str(&format!("step.{name}.env.{var} = {value}\n"));
        }
        if name.starts_with("cargo") {
            factories.push_str(&format!(
                "step.{name}.workdir = build/crate\nstep.{name}.env.CARGO_TARGET_DIR = target\n"
            ));
        }
    }
    let site = Site::start(&[("runners", runner_project())], &factories, 1).await;
    let b = site.build("runners").await;
    let got: Vec<(String, String, String)> = b
        .steps
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.result.clone().unwrap_or_default(),
                s.text.clone(),
            )
        })
        .collect();
    let want = [
        ("checkout", "success", "checkout runners"),
        (
            "automake",
            "failure",
            "automake 2 passed, 1 failed, 1 skipped",
        ),
        // Plain prove shows a failing file's skips ("less 1 skipped subtest");
        // -v shows each skip.
        ("prove", "failure", "prove 2 passed, 1 failed, 1 skipped"),
        (
            "prove-verbose",
            "failure",
            "prove-verbose 2 passed, 1 failed, 1 skipped",
        ),
        (
            "unittest",
            "failure",
            "unittest 2 passed, 1 failed, 1 skipped",
        ),
        ("unittest-ok", "success", "unittest-ok 2 passed"),
        ("trial", "failure", "trial 2 passed, 1 failed, 1 skipped"),
        ("pytest", "failure", "pytest 2 passed, 1 failed, 1 skipped"),
        ("pytest-ok", "success", "pytest-ok 2 passed, 1 skipped"),
        ("cargo", "failure", "cargo 2 passed, 1 failed, 1 skipped"),
        ("cargo-ok", "success", "cargo-ok 2 passed, 1 skipped"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    if got != want {
        let mut logs = String::new();
        for s in &b.steps {
            logs.push_str(&format!(
                "--- {}\n{}\n",
                s.name,
                site.log(&b, &s.name).await
            ));
        }
        panic!("steps\n got {got:#?}\nwant {want:#?}\n{logs}");
    }
    // warnOnFailure only: the failing runners make the build WARNINGS.
    assert_eq!(result(&b), "warnings", "{}", b.build.text);
    site.stop().await;
}

/// Scripts that start a child which would outlive them (it records its pid), then
/// go quiet, exit at once, or keep talking.
fn timeout_project() -> Vec<RepoFile> {
    let child = |name: &str, out: &str| {
        format!("sh -c 'echo $$ > {name}-child.pid; exec sleep 300' {out}&\n")
    };
    files(&[
        (
            "bin/quiet.sh",
            &format!(
                "#!/bin/sh\n# A child that would outlive us, then silence.\n{}echo started\nwait\n",
                child("quiet", ">/dev/null 2>&1 ")
            ),
        ),
        (
            "bin/orphan.sh",
            &format!(
                "#!/bin/sh\n# Exit at once, leaving a child that holds our output open.\n{}echo parent exits\nexit 0\n",
                child("orphan", "")
            ),
        ),
        (
            "bin/busy.sh",
            &format!(
                "#!/bin/sh\n# A child that would outlive us, and output forever.\n{}while :; do echo tick; sleep 0.2; done\n",
                child("busy", ">/dev/null 2>&1 ")
            ),
        ),
    ])
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet: it runs no more).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_max_time_kill_the_whole_process_group_and_say_why() {
    let factories = r#"
[timeouts]
type = shell
git = ./repos/timeouts
step.quiet = ./bin/quiet.sh
step.quiet.timeout = 2
step.orphan = ./bin/orphan.sh
step.orphan.timeout = 2
step.busy = ./bin/busy.sh
step.busy.maxTime = 2
step.after = echo still running
"#;
    let site = Site::start(&[("timeouts", timeout_project())], factories, 1).await;
    let started = Instant::now();
    let b = site.build("timeouts").await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the kills took {:?}",
        started.elapsed()
    );
    assert_eq!(
        results(&b),
        expect(&[
            ("checkout", "success"),
            ("quiet", "failure"),
            ("orphan", "failure"),
            ("busy", "failure"),
            ("after", "success"),
        ])
    );
    assert_eq!(result(&b), "failure");
    assert_eq!(b.build.text, "failed quiet orphan busy");
    let tree = site.builder_dir("timeouts-s1").join("build");
    for (name, why) in [
        ("quiet", "command timed out: 2 seconds without output"),
        ("orphan", "command timed out: 2 seconds without output"),
        ("busy", "command timed out: 2 seconds elapsed"),
    ] {
        let s = step(&b, name);
        let took = s.finished_at.unwrap() - s.started_at.unwrap();
        assert!((1.5..30.0).contains(&took), "{name} took {took} s");
        // The step's text says why it failed; its log says what happened.
        assert!(
            s.text.contains("timeout") || s.text.contains("timed out"),
            "{name}: {}",
            s.text
        );
        let log = site.log(&b, name).await;
        assert!(log.contains(why), "{name}: {log}");
        // The child that would have outlived its parent died with the group.
        let pid: i32 = std::fs::read_to_string(tree.join(format!("{name}-child.pid")))
            .unwrap_or_else(|e| panic!("{name}: no child pid file: {e}\n{log}"))
            .trim()
            .parse()
            .unwrap();
        let dead = support::wait_for(Duration::from_secs(10), || gone(pid)).await;
        assert!(dead, "{name}: child {pid} still runs\n{log}");
    }
    assert_eq!(
        step(&b, "quiet").text,
        "quiet failed (timed out: no output)"
    );
    assert_eq!(step(&b, "busy").text, "busy failed (timed out: maxTime)");
    let log = site.log(&b, "busy").await;
    assert!(log.contains("tick\n"), "{log}");
    site.stop().await;
}
