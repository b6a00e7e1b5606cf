//! Every built-in factory type end to end: a real master with an in-process autobot
//! slave builds real projects (git repositories made with the git CLI: the bundled
//! samples, or small projects written here) green, and a failing variant of each
//! fails at the step that should fail — the test step for failing tests (Buildbot's
//! Test flunks the build but is no halt), the compile/install/checkout step for a
//! broken tree (those halt, so nothing runs after them).
//!
//! Tools: gcc and make (autotools), perl (cpan), python3 3.11 with setuptools
//! (distutils, virtualenv, python-source), trial and virtualenv from PyPI
//! (`scripts/test.sh` installs them; a missing one fails the test under `CI=true`
//! and prints SKIP elsewhere).

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "factory_common/mod.rs"]
mod factory_common;

use factory_common::*;

/// A small Python project: setuptools `setup.py`, package `greetpy`, unittest tests
/// (two pass, one is skipped); `fail` adds a failing test.
fn greetpy(fail: bool) -> Vec<RepoFile> {
    let mut tests = String::from(
        "import unittest\n\nimport greetpy\n\n\nclass GreetTest(unittest.TestCase):\n\
         \x20   def test_default(self):\n        self.assertEqual(greetpy.greet(), 'Hello, world!')\n\n\
         \x20   def test_name(self):\n        self.assertEqual(greetpy.greet('bot'), 'Hello, bot!')\n\n\
         \x20   @unittest.skip('not today')\n    def test_later(self):\n        pass\n",
    );
    if fail {
        tests.push_str(
            "\n    def test_broken(self):\n        self.assertEqual(greetpy.greet(), 'Goodbye')\n",
        );
    }
    files(&[
        (
            "setup.py",
            "from setuptools import setup\n\nsetup(name='greetpy', version='1.0', packages=['greetpy'])\n",
        ),
        (
            "greetpy/__init__.py",
            "def greet(name='world'):\n    return 'Hello, %s!' % name\n",
        ),
        ("tests/__init__.py", ""),
        ("tests/test_greet.py", &tests),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autotools_builds_hello_and_a_failing_check_fails_at_the_test_step() {
    if !support::need_tools(&[
        ("make", "apt-get install make"),
        ("cc", "apt-get install gcc"),
    ]) {
        return;
    }
    let repos = [
        ("hello", sample("hello", &[])),
        (
            "hello-failcheck",
            sample(
                "hello",
                &[("src/hello.c", "\"Hello, world!\"", "\"Goodbye, world!\"")],
            ),
        ),
        (
            "hello-broken",
            sample(
                "hello",
                &[(
                    "src/hello.c",
                    "int main",
                    "#error autobot broken build\nint main",
                )],
            ),
        ),
    ];
    // `[hello]` is the bundled project (projects/hello.ini: type autotools, git
    // ./repos/hello); the keys here are added to it.
    let factories = r#"
[hello]
configureEnv = CFLAGS="-O1 -g" HELLO_UNUSED=1
configureFlags = --disable-nls --prefix=/opt/hello

[hello-failcheck]
type = autotools
git = ./repos/hello-failcheck

[hello-broken]
type = autotools
git = ./repos/hello-broken
"#;
    let site = Site::start(&repos, factories, 2).await;
    let b = site
        .build_all(&["hello", "hello-failcheck", "hello-broken"])
        .await;

    let hello = &b[0];
    assert_eq!(
        results(hello),
        expect(&[
            ("checkout", "success"),
            ("configure", "success"),
            ("compile", "success"),
            ("test", "success"),
        ])
    );
    assert_eq!(result(hello), "success", "{}", hello.build.text);
    assert_eq!(prop(hello, "got_revision"), site.heads["hello"]);
    let log = site.log(hello, "configure").await;
    assert!(
        log.contains("--disable-nls") && log.contains("--prefix=/opt/hello"),
        "{log}"
    );
    assert!(log.contains("checking whether to use NLS... no"), "{log}");
    // configureEnv reached configure: it wrote its CFLAGS into the Makefile.
    let log = site.log(hello, "compile").await;
    assert!(log.contains(" -O1 -g -o hello src/hello.c"), "{log}");
    assert_eq!(step(hello, "test").text, "test 4 passed");
    assert_eq!(step(hello, "compile").text, "compile");

    // A check that fails: FAILURE at the test step, after everything before it.
    let failcheck = &b[1];
    assert_eq!(
        results(failcheck),
        expect(&[
            ("checkout", "success"),
            ("configure", "success"),
            ("compile", "success"),
            ("test", "failure"),
        ])
    );
    assert_eq!(result(failcheck), "failure");
    assert_eq!(failcheck.build.text, "failed test");
    let text = &step(failcheck, "test").text;
    assert!(text.starts_with("test 3 passed, 1 failed"), "{text}");
    let log = site.log(failcheck, "test").await;
    assert!(log.contains("FAIL: greeting"), "{log}");

    // A tree that does not compile halts at compile: the tests never run.
    let broken = &b[2];
    assert_eq!(
        results(broken),
        expect(&[
            ("checkout", "success"),
            ("configure", "success"),
            ("compile", "failure"),
        ])
    );
    assert_eq!(result(broken), "failure");
    assert_eq!(broken.build.total_steps, 4);
    let text = &step(broken, "compile").text;
    assert!(text.starts_with("compile 1 error"), "{text}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpan_builds_a_perl_module_and_a_failing_make_test_fails_at_the_test_step() {
    if !support::need_tools(&[
        ("perl", "apt-get install perl"),
        ("make", "apt-get install make"),
    ]) {
        return;
    }
    let module = [
        (
            "Makefile.PL",
            "use ExtUtils::MakeMaker;\nWriteMakefile(NAME => 'Greet', VERSION_FROM => 'lib/Greet.pm');\n",
        ),
        (
            "lib/Greet.pm",
            "package Greet;\nuse strict;\nour $VERSION = '1.0';\n\
             sub hello { my $who = shift // 'world'; return \"Hello, $who!\" }\n1;\n",
        ),
        (
            "t/basic.t",
            "use strict;\nuse warnings;\nuse Test::More tests => 3;\nuse Greet;\n\
             is(Greet::hello(), 'Hello, world!', 'default');\n\
             is(Greet::hello('perl'), 'Hello, perl!', 'named');\n\
             SKIP: { skip 'no network', 1; ok(0, 'network'); }\n",
        ),
    ];
    let mut failing = module.to_vec();
    failing.push((
        "t/broken.t",
        "use Test::More tests => 2;\nuse Greet;\nok(1, 'fine');\nis(Greet::hello(), 'Goodbye', 'broken');\n",
    ));
    let repos = [("greet", files(&module)), ("greet-fail", files(&failing))];
    let factories = r#"
[greet]
type = cpan
git = ./repos/greet
perl = perl -w

[greet-fail]
type = cpan
git = ./repos/greet-fail
"#;
    let site = Site::start(&repos, factories, 2).await;
    let b = site.build_all(&["greet", "greet-fail"]).await;

    let green = &b[0];
    assert_eq!(
        results(green),
        expect(&[
            ("checkout", "success"),
            ("configure", "success"),
            ("compile", "success"),
            ("test", "success"),
        ])
    );
    assert_eq!(result(green), "success", "{}", green.build.text);
    let log = site.log(green, "configure").await;
    assert!(log.contains("Writing Makefile for Greet"), "{log}");
    assert!(log.starts_with("perl -w Makefile.PL\n"), "{log}");
    assert!(site
        .builder_dir("greet-s1")
        .join("build/blib/lib/Greet.pm")
        .is_file());
    // The cpan type runs `make test TEST_VERBOSE=1`: the verbose TAP shows the
    // skip, which is counted as one (prove's summary says Files=1, Tests=3).
    assert_eq!(step(green, "test").text, "test 2 passed, 1 skipped");

    let fail = &b[1];
    assert_eq!(
        results(fail),
        expect(&[
            ("checkout", "success"),
            ("configure", "success"),
            ("compile", "success"),
            ("test", "failure"),
        ])
    );
    assert_eq!(result(fail), "failure");
    let text = &step(fail, "test").text;
    assert!(
        text.starts_with("test 3 passed, 1 failed, 1 skipped"),
        "{text}"
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distutils_builds_and_tests_and_fails_at_the_right_step() {
    if !support::need_tools(&[("python3", "apt-get install python3")])
        || !support::need_python_module("setuptools", "pip install setuptools")
    {
        return;
    }
    let mut broken = greetpy(false);
    broken[0].1 = b"raise SystemExit('setup.py is broken')\n".to_vec();
    let repos = [
        ("greetpy", greetpy(false)),
        ("greetpy-fail", greetpy(true)),
        ("greetpy-broken", broken),
    ];
    // `python` is a command line: `env -u PYTHONDONTWRITEBYTECODE python3` keeps
    // setup.py's byte-compile note (see dist-nobytecode) out of the other builds'
    // logs whatever this machine's environment says.
    let factories = r#"
[dist]
type = distutils
git = ./repos/greetpy
python = env -u PYTHONDONTWRITEBYTECODE python3
test = python3 -m unittest discover -v

[dist-nobytecode]
type = distutils
git = ./repos/greetpy
python = env PYTHONDONTWRITEBYTECODE=1 python3

[dist-fail]
type = distutils
git = ./repos/greetpy-fail
python = env -u PYTHONDONTWRITEBYTECODE python3
test = python3 -m unittest discover -v

[dist-broken]
type = distutils
git = ./repos/greetpy-broken
test = python3 -m unittest discover -v
"#;
    let site = Site::start(&repos, factories, 2).await;
    let b = site
        .build_all(&["dist", "dist-nobytecode", "dist-fail", "dist-broken"])
        .await;

    let green = &b[0];
    assert_eq!(
        results(green),
        expect(&[
            ("checkout", "success"),
            ("compile", "success"),
            ("test", "success")
        ])
    );
    assert_eq!(result(green), "success", "{}", green.build.text);
    let log = site.log(green, "compile").await;
    assert!(log.contains("running build"), "{log}");
    assert!(site
        .builder_dir("dist-s1")
        .join("build/build/lib/greetpy/__init__.py")
        .is_file());
    assert_eq!(step(green, "test").text, "test 2 passed, 1 skipped");

    // No test command: no test step. With PYTHONDONTWRITEBYTECODE set (as on some
    // slaves) setup.py notes `warning: build_py: byte-compiling is disabled`: a
    // setuptools note, not a warning in a compiler's or tool's format, so the
    // build stays green (`warningPattern` would count it).
    let nobytecode = &b[1];
    assert_eq!(
        results(nobytecode),
        expect(&[("checkout", "success"), ("compile", "success")])
    );
    assert_eq!(result(nobytecode), "success");
    assert_eq!(step(nobytecode, "compile").text, "compile");
    let log = site.log(nobytecode, "compile").await;
    assert!(
        log.contains("warning: build_py: byte-compiling is disabled"),
        "{log}"
    );

    let fail = &b[2];
    assert_eq!(
        results(fail),
        expect(&[
            ("checkout", "success"),
            ("compile", "success"),
            ("test", "failure")
        ])
    );
    assert_eq!(result(fail), "failure");
    let text = &step(fail, "test").text;
    assert!(
        text.starts_with("test 2 passed, 1 failed, 1 skipped"),
        "{text}"
    );

    let broken = &b[3];
    assert_eq!(
        results(broken),
        expect(&[("checkout", "success"), ("compile", "failure")])
    );
    assert_eq!(result(broken), "failure");
    let log = site.log(broken, "compile").await;
    assert!(log.contains("setup.py is broken"), "{log}");
    site.stop().await;
}

/// A package for trial: `tpkg` with its tests in the subpackage `tpkg.test`
/// (two pass, one is skipped; `fail` adds a failing one). `test_where` prints where
/// `tpkg` was imported from.
fn tpkg(fail: bool) -> Vec<RepoFile> {
    let mut tests = String::from(
        "import tpkg\nfrom twisted.trial import unittest\n\n\nclass GreetTest(unittest.TestCase):\n\
         \x20   def test_greet(self):\n        self.assertEqual(tpkg.greet(), 'Hello, world!')\n\n\
         \x20   def test_where(self):\n        print('tpkg from', tpkg.__file__)\n\n\
         \x20   def test_later(self):\n        raise unittest.SkipTest('not today')\n",
    );
    if fail {
        tests.push_str(
            "\n    def test_broken(self):\n        self.assertEqual(tpkg.greet(), 'Goodbye')\n",
        );
    }
    files(&[
        (
            "setup.py",
            "from setuptools import setup\n\nsetup(name='tpkg', version='1.0', packages=['tpkg', 'tpkg.test'])\n",
        ),
        (
            "tpkg/__init__.py",
            "def greet(name='world'):\n    return 'Hello, %s!' % name\n",
        ),
        ("tpkg/test/__init__.py", ""),
        ("tpkg/test/test_greet.py", &tests),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trial_runs_twisted_tests_with_every_key_and_a_failing_test_fails() {
    if !support::need_tools(&[("trial", "pip install twisted")]) {
        return;
    }
    let repos = [("tpkg", tpkg(false)), ("tpkg-fail", tpkg(true))];
    // buildpython without PYTHONDONTWRITEBYTECODE: see the distutils test.
    let factories = r#"
[trial-built]
type = trial
git = ./repos/tpkg
buildpython = env -u PYTHONDONTWRITEBYTECODE python3
tests = tpkg.test
testpath = build/lib
randomly = true

[trial-flat]
type = trial
git = ./repos/tpkg
buildpython = env -u PYTHONDONTWRITEBYTECODE python3
tests = tpkg
recurse = false

[trial-deep]
type = trial
git = ./repos/tpkg
buildpython = env -u PYTHONDONTWRITEBYTECODE python3
tests = tpkg
trialpython = python3 -X faulthandler
trial = -m twisted.trial

[trial-fail]
type = trial
git = ./repos/tpkg-fail
buildpython = env -u PYTHONDONTWRITEBYTECODE python3
tests = tpkg.test
"#;
    let site = Site::start(&repos, factories, 2).await;
    let b = site
        .build_all(&["trial-built", "trial-flat", "trial-deep", "trial-fail"])
        .await;
    for b in &b[..3] {
        assert_eq!(
            results(b),
            expect(&[
                ("checkout", "success"),
                ("compile", "success"),
                ("trial", "success")
            ]),
            "{}",
            b.build.builder
        );
        assert_eq!(result(b), "success");
    }

    // testpath: the tests ran against what `setup.py build` made (the checkout
    // itself is not on the path); randomly: shuffled with a seed.
    let built = &b[0];
    assert_eq!(step(built, "trial").text, "tests 2 passed, 1 skipped");
    let log = site.log(built, "trial").await;
    let tree = site.builder_dir("trial-built-s1").canonicalize().unwrap();
    assert!(
        log.contains(&format!(
            "tpkg from {}/build/build/lib/tpkg/__init__.py",
            tree.display()
        )),
        "{log}"
    );
    assert!(
        log.contains("--random=0") && log.contains("Running tests shuffled with seed"),
        "{log}"
    );

    // recurse = false: trial does not look into tpkg's subpackages, so it finds no
    // test; by default (trial-deep) it does.
    let log = site.log(&b[1], "trial").await;
    assert!(log.contains("--no-recurse"), "{log}");
    assert_eq!(step(&b[1], "trial").text, "tests");
    // trialpython runs trial under another python command line.
    let log = site.log(&b[2], "trial").await;
    assert!(
        log.starts_with("python3 -X faulthandler -m twisted.trial --reporter=bwverbose tpkg\n"),
        "{log}"
    );
    assert_eq!(step(&b[2], "trial").text, "tests 2 passed, 1 skipped");

    let fail = &b[3];
    assert_eq!(
        results(fail),
        expect(&[
            ("checkout", "success"),
            ("compile", "success"),
            ("trial", "failure")
        ])
    );
    assert_eq!(result(fail), "failure");
    let text = &step(fail, "trial").text;
    assert!(
        text.starts_with("tests 2 passed, 1 failed, 1 skipped"),
        "{text}"
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtualenv_sets_its_properties_and_checks_out_into_src() {
    if !support::need_tools(&[
        ("python3", "apt-get install python3 python3-venv"),
        ("virtualenv", "pip install virtualenv"),
    ]) {
        return;
    }
    let repos = [("proj", files(&[("README", "a project\n")]))];
    let factories = r#"
[venv]
type = virtualenv
git = ./repos/proj

[venv-tool]
type = virtualenv
git = ./repos/proj
name = ve
virtualenv = true

[venv-bare]
type = virtualenv
git = ./repos/proj
checkout = false

[venv-bad]
type = virtualenv
git = ./repos/proj#nosuch
"#;
    let site = Site::start(&repos, factories, 2).await;
    let b = site
        .build_all(&["venv", "venv-tool", "venv-bare", "venv-bad"])
        .await;
    let setup = [
        "remove-virtualenv",
        "create-virtualenv",
        "property-virtualenv",
        "property-scripts",
        "property-python",
        "mkdir-src",
    ];
    let ok: Vec<(&str, &str)> = setup.iter().map(|s| (*s, "success")).collect();
    let mut with_checkout = ok.clone();
    with_checkout.push(("checkout", "success"));

    let venv = &b[0];
    assert_eq!(results(venv), expect(&with_checkout));
    assert_eq!(result(venv), "success", "{}", venv.build.text);
    let env = site
        .builder_dir("venv-s1")
        .canonicalize()
        .unwrap()
        .join("build/env");
    // The properties later steps use: where the virtualenv is, its scripts
    // directory (`Scripts` would win over `bin`, but on a POSIX slave there is only
    // `bin`), and its python.
    assert_eq!(prop(venv, "virtualenv"), env.display().to_string());
    assert_eq!(prop(venv, "scripts"), env.join("bin").display().to_string());
    assert_eq!(
        prop(venv, "python"),
        env.join("bin/python").display().to_string()
    );
    assert_eq!(venv.properties["python"].1, "SetProperty Step");
    assert!(env.join("src/proj/README").is_file());
    let prefix = support::run_ok(
        std::process::Command::new(env.join("bin/python"))
            .args(["-c", "import sys; print(sys.prefix)"]),
    );
    assert_eq!(prefix, env.display().to_string());
    assert!(!std::fs::read_to_string(env.join("pyvenv.cfg"))
        .unwrap()
        .contains("virtualenv ="));

    // Every build starts from a fresh virtualenv (`rm -rf env`).
    std::fs::write(env.join("left-over"), "from build 1").unwrap();
    let again = site.build("venv").await;
    assert_eq!(result(&again), "success");
    assert_eq!(again.build.number, 2);
    assert!(!env.join("left-over").exists());
    assert!(env.join("src/proj/README").is_file());

    // `virtualenv = true` and `name`: made by the virtualenv tool in ./ve.
    let tool = &b[1];
    assert_eq!(results(tool), expect(&with_checkout));
    let ve = site
        .builder_dir("venv-tool-s1")
        .canonicalize()
        .unwrap()
        .join("build/ve");
    assert_eq!(prop(tool, "virtualenv"), ve.display().to_string());
    let cfg = std::fs::read_to_string(ve.join("pyvenv.cfg")).unwrap();
    assert!(cfg.contains("virtualenv ="), "{cfg}");
    let log = site.log(tool, "create-virtualenv").await;
    assert!(log.starts_with("virtualenv ve\n"), "{log}");
    assert!(ve.join("src/proj/README").is_file());

    // `checkout = false`: the virtualenv only.
    assert_eq!(results(&b[2]), expect(&ok));
    assert_eq!(result(&b[2]), "success");

    // A checkout that fails halts the build after the virtualenv is made.
    let bad = &b[3];
    let mut failed = ok.clone();
    failed.push(("checkout", "failure"));
    assert_eq!(results(bad), expect(&failed));
    assert_eq!(result(bad), "failure");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_source_installs_pyhello_and_a_failing_test_fails_at_the_test_step() {
    if !support::need_tools(&[("python3", "apt-get install python3 python3-venv")]) {
        return;
    }
    let repos = [
        ("pyhello", sample("pyhello", &[])),
        (
            "pyhello-fail",
            sample(
                "pyhello",
                &[("tests/test_greet.py", "\"Hello, autobot!\"", "\"Goodbye\"")],
            ),
        ),
        (
            "pyhello-broken",
            sample(
                "pyhello",
                &[(
                    "setup.py",
                    "from setuptools import setup",
                    "raise SystemExit('setup.py is broken')",
                )],
            ),
        ),
    ];
    // `[pyhello]` is the bundled project (python-source, unittest as its test).
    let factories = r#"
[pyhello]

[pyhello-installed]
type = python-source
git = ./repos/pyhello
test = %(python)s -I -c "import pyhello; print('installed at', pyhello.__file__)"

[pyhello-pip]
type = python-source
git = ./repos/pyhello
install = pip
test = %(python)s -I -c "import pyhello; print('installed at', pyhello.__file__)"

[pyhello-fail]
type = python-source
git = ./repos/pyhello-fail
test = %(python)s -m unittest discover -v

[pyhello-broken]
type = python-source
git = ./repos/pyhello-broken
test = %(python)s -m unittest discover -v
"#;
    let site = Site::start(&repos, factories, 2).await;
    let b = site
        .build_all(&[
            "pyhello",
            "pyhello-installed",
            "pyhello-pip",
            "pyhello-fail",
            "pyhello-broken",
        ])
        .await;
    let mut steps: Vec<(&str, &str)> = [
        "remove-virtualenv",
        "create-virtualenv",
        "property-virtualenv",
        "property-scripts",
        "property-python",
        "mkdir-src",
        "checkout",
        "install-pyhello",
    ]
    .iter()
    .map(|s| (*s, "success"))
    .collect();
    let mut green = steps.clone();
    green.push(("test", "success"));
    for b in &b[..3] {
        assert_eq!(results(b), expect(&green), "{}", b.build.builder);
        assert_eq!(result(b), "success", "{}", b.build.builder);
    }
    assert_eq!(step(&b[0], "test").text, "test 2 passed");
    let log = site.log(&b[0], "test").await;
    // `test` runs through /bin/sh -c; %(python)s reached the script as a quoted
    // expansion of the variable holding the virtualenv's python.
    assert!(
        log.contains("/bin/sh -c '\"${AUTOBOT_PROPERTY_0}\" -m unittest discover -v'\n"),
        "{log}"
    );

    // The package was installed into the virtualenv: an isolated python (no
    // current directory on its path) imports it from site-packages.
    for (b, builder) in [(&b[1], "pyhello-installed-s1"), (&b[2], "pyhello-pip-s1")] {
        let env = site
            .builder_dir(builder)
            .canonicalize()
            .unwrap()
            .join("build/env/lib/python3");
        let log = site.log(b, "test").await;
        assert!(
            log.contains(&format!("installed at {}", env.display()))
                && log.contains("site-packages"),
            "{log}"
        );
    }
    let log = site.log(&b[1], "install-pyhello").await;
    assert!(
        log.contains("/build/env/bin/python setup.py install\n"),
        "{log}"
    );
    let log = site.log(&b[2], "install-pyhello").await;
    assert!(
        log.contains("/build/env/bin/python -m pip install --no-deps .\n"),
        "{log}"
    );

    // The install step is named after the checkout's directory.
    let fail = &b[3];
    let mut failed = steps.clone();
    failed[7].0 = "install-pyhello-fail";
    failed.push(("test", "failure"));
    assert_eq!(results(fail), expect(&failed));
    assert_eq!(result(fail), "failure");
    let text = &step(fail, "test").text;
    assert!(text.starts_with("test 1 passed, 1 failed"), "{text}");

    // An install that fails halts: the tests never run.
    let broken = &b[4];
    steps.pop();
    steps.push(("install-pyhello-broken", "failure"));
    assert_eq!(results(broken), expect(&steps));
    assert_eq!(result(broken), "failure");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_checks_out_only_and_a_missing_branch_fails_the_checkout() {
    let repos = [("proj", files(&[("README", "a project\n")]))];
    let factories = r#"
[src]
type = source
git = ./repos/proj

[src-bad]
type = source
git = ./repos/proj#nosuch
"#;
    let site = Site::start(&repos, factories, 2).await;
    let b = site.build_all(&["src", "src-bad"]).await;
    assert_eq!(results(&b[0]), expect(&[("checkout", "success")]));
    assert_eq!(result(&b[0]), "success");
    assert_eq!(prop(&b[0], "got_revision"), site.heads["proj"]);
    assert_eq!(step(&b[0], "checkout").text, "checkout proj");
    assert_eq!(
        std::fs::read_to_string(site.builder_dir("src-s1").join("build/README")).unwrap(),
        "a project\n"
    );
    assert_eq!(results(&b[1]), expect(&[("checkout", "failure")]));
    assert_eq!(result(&b[1]), "failure");
    let log = site.log(&b[1], "checkout").await;
    assert!(log.contains("nosuch"), "{log}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_runs_steps_with_every_per_step_option() {
    let repos = [("proj", files(&[("README", "a project\n")]))];
    let factories = r#"
[lock:one]
scope = slave
maxCount = 1

[opts]
type = shell
git = ./repos/proj
step.hello = sh -c 'echo "greeting=$GREETING"; pwd'
step.hello.env.GREETING = hi there
step.hello.workdir = build/sub
step.hello.description = saying hello
step.hello.descriptionDone = said hello
step.hello.haltOnFailure = true
step.hello.timeout = 0
step.hello.maxTime = 60
step.hello.locks = one
step.piped = ls | sort > ../listing.txt && wc -l < ../listing.txt
step.piped.shell = true
step.counted = python3 -c "print('Ran 2 tests in 0.01s'); print(); print('OK')"
step.counted.logParser = test
step.ignored = false
step.ignored.flunkOnFailure = false
step.after = cat ../listing.txt

[opts-warn]
type = shell
step.warned = sh -c 'echo "x.c:1:2: warning: made up"'
step.warned.logParser = compile
step.warned.warnOnWarnings = true
step.failing = false
step.failing.flunkOnFailure = false
step.failing.warnOnFailure = true

[opts-flunk]
type = shell
step.warned = sh -c 'echo "x.c:1:2: warning: made up"'
step.warned.logParser = compile
step.warned.flunkOnWarnings = true
step.after = echo after

[opts-halt]
type = shell
git = ./repos/proj
step.stop = sh -c 'echo stopping; exit 3'
step.stop.haltOnFailure = true
step.never = touch never-ran
"#;
    let site = Site::start(&repos, factories, 2).await;
    let b = site
        .build_all(&["opts", "opts-warn", "opts-flunk", "opts-halt"])
        .await;

    let opts = &b[0];
    assert_eq!(
        results(opts),
        expect(&[
            ("checkout", "success"),
            ("hello", "success"),
            ("piped", "success"),
            ("counted", "success"),
            ("ignored", "failure"),
            ("after", "success"),
        ])
    );
    // flunkOnFailure = false and no warnOnFailure: the failure counts for nothing.
    assert_eq!(result(opts), "success", "{}", opts.build.text);
    let hello = step(opts, "hello");
    assert_eq!(hello.description, "saying hello");
    assert_eq!(hello.text, "said hello");
    let log = site.log(opts, "hello").await;
    assert!(log.contains("greeting=hi there\n"), "{log}");
    let sub = site
        .builder_dir("opts-s1")
        .canonicalize()
        .unwrap()
        .join("build/sub");
    assert!(log.contains(&format!("{}\n", sub.display())), "{log}");
    // `shell = true`: the pipe and redirections ran through /bin/sh in `build`.
    let listing = std::fs::read_to_string(site.builder_dir("opts-s1").join("listing.txt")).unwrap();
    assert_eq!(listing, "README\nsub\n");
    assert_eq!(step(opts, "piped").text, "piped");
    assert_eq!(step(opts, "counted").text, "counted 2 passed");

    // warnOnWarnings and warnOnFailure: WARNINGS.
    let warn = &b[1];
    assert_eq!(
        results(warn),
        expect(&[("warned", "warnings"), ("failing", "failure")])
    );
    assert_eq!(result(warn), "warnings");
    assert_eq!(warn.build.text, "warnings warned failing");
    assert_eq!(step(warn, "warned").text, "warned 1 warning");

    // flunkOnWarnings: FAILURE, and the build goes on.
    let flunk = &b[2];
    assert_eq!(
        results(flunk),
        expect(&[("warned", "warnings"), ("after", "success")])
    );
    assert_eq!(result(flunk), "failure");

    // haltOnFailure: FAILURE at once; later steps never run.
    let halt = &b[3];
    assert_eq!(
        results(halt),
        expect(&[("checkout", "success"), ("stop", "failure")])
    );
    assert_eq!(result(halt), "failure");
    assert_eq!(halt.build.text, "failed stop");
    assert!(!site
        .builder_dir("opts-halt-s1")
        .join("build/never-ran")
        .exists());
    site.stop().await;
}
