//! What the factory types need when nobody tuned them (issue 21), end to end on a
//! real master and autobot slave with projects made here: an autotools tree whose
//! generated files are committed (a checkout makes `configure` older than
//! `configure.ac`, so make tries to regenerate it with a tool the slave lacks, and
//! `bootstrap` fixes that); Python projects whose tests need packages from
//! `requirements` and `packages`, installed offline from wheels in the repository
//! (`--no-index --find-links`); and steps of one's own on non-shell types, placed
//! with `after` / `before`.
//!
//! Tools: make and cc (the autotools tree), python3 with pip and venv.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "factory_common/mod.rs"]
mod factory_common;

use factory_common::*;

/// The generated `configure` (and what our stand-in for autoconf makes of
/// `configure.ac`: the same text): writes `Makefile` from `Makefile.in` and a
/// `config.status` that can do it again.
const CONFIGURE: &str = "#!/bin/sh\n# configure for hello 1.0 (generated from configure.ac)\n\
cat > config.status <<'EOF'\n#!/bin/sh\ncp Makefile.in Makefile\n\
echo 'config.status: creating Makefile'\nEOF\n\
chmod +x config.status\n./config.status\n";

/// `Makefile.in` (and `Makefile.am`, which our stand-in for automake copies): the
/// rebuild rules automake writes, where regenerating needs autoconf/automake of
/// a version the slave does not have.
const MAKEFILE_IN: &str = "all: hello\n\n\
hello: hello.c\n\tcc -o hello hello.c\n\n\
check: hello\n\t./hello | grep 'Hello, tree'\n\n\
Makefile: Makefile.in config.status\n\t./config.status\n\n\
config.status: configure\n\t./config.status --recheck\n\n\
configure: configure.ac\n\tautoconf-9.99-autobot-test\n\n\
Makefile.in: Makefile.am\n\tautomake-9.99-autobot-test\n";

/// A release tree with its generated files committed. git writes a checkout's
/// files in path order, so `configure.ac` lands after `configure` and looks newer
/// (or, within one tick of the file system's clock, as old: which one a checkout
/// gives is chance, so the factories below age the generated files right after
/// the checkout, as a slow checkout would).
fn release_tree() -> Vec<RepoFile> {
    let mut f = files(&[
        ("Makefile.am", MAKEFILE_IN),
        ("Makefile.in", MAKEFILE_IN),
        ("configure.ac", CONFIGURE),
        (
            "autogen.sh",
            "#!/bin/sh\n# What `autoreconf -fi` does for this tree, with tools the slave has.\n\
             set -e\ncp configure.ac configure\nchmod +x configure\ncp Makefile.am Makefile.in\n\
             echo 'autogen: regenerated configure and Makefile.in'\n",
        ),
        (
            "hello.c",
            "#include <stdio.h>\nint main(void) { puts(\"Hello, tree\"); return 0; }\n",
        ),
    ]);
    f.push(("configure".into(), CONFIGURE.as_bytes().to_vec(), true));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autotools_bootstrap_regenerates_a_committed_release_tree_before_configure() {
    if !support::need_tools(&[
        ("make", "apt-get install make"),
        ("cc", "apt-get install gcc"),
    ]) {
        return;
    }
    let repos = [("tree", release_tree())];
    let factories = r#"
[tree]
type = autotools
git = ./repos/tree
step.age = touch -d "2000-01-01 00:00" configure Makefile.in
step.age.after = checkout

[tree-boot]
type = autotools
git = ./repos/tree
bootstrap = sh autogen.sh
step.age = touch -d "2000-01-01 00:00" configure Makefile.in
step.age.after = checkout
step.version = ./hello
step.version.after = compile
step.stamps = ls -l --time-style=full-iso configure configure.ac
step.stamps.before = configure
"#;
    let site = Site::start(&repos, factories, 2).await;
    let b = site.build_all(&["tree", "tree-boot"]).await;

    // Without bootstrap make wants to remake configure from configure.ac and
    // halts at compile on the tool the slave lacks.
    let plain = &b[0];
    assert_eq!(
        results(plain),
        expect(&[
            ("checkout", "success"),
            ("age", "success"),
            ("configure", "success"),
            ("compile", "failure"),
        ])
    );
    let log = site.log(plain, "compile").await;
    assert!(
        log.contains("-9.99-autobot-test: No such file or directory"),
        "{log}"
    );

    // bootstrap runs first, and the tree builds and checks; the steps of one's
    // own run where they were placed.
    let boot = &b[1];
    assert_eq!(
        results(boot),
        expect(&[
            ("checkout", "success"),
            ("age", "success"),
            ("bootstrap", "success"),
            ("stamps", "success"),
            ("configure", "success"),
            ("compile", "success"),
            ("version", "success"),
            ("test", "success"),
        ])
    );
    assert_eq!(result(boot), "success", "{}", boot.build.text);
    let log = site.log(boot, "bootstrap").await;
    assert!(log.contains("autogen: regenerated configure"), "{log}");
    let log = site.log(boot, "version").await;
    assert!(log.contains("Hello, tree"), "{log}");
    site.stop().await;
}

/// A wheel of a pure-Python module `module` (`VALUE = 'value'`), made with
/// python's zipfile here, so pip installs it with no index and no network.
fn wheel(dist: &str, module: &str, value: &str) -> (String, Vec<u8>, bool) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{dist}-1.0-py3-none-any.whl");
    let path = dir.path().join(&name);
    let script = r#"
import sys, zipfile
path, dist, module, value = sys.argv[1:5]
info = dist + "-1.0.dist-info"
files = {
    module + "/__init__.py": "VALUE = %r\n" % value,
    info + "/METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: 1.0\n" % dist,
    info + "/WHEEL": "Wheel-Version: 1.0\nGenerator: autobot-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = "".join("%s,,\n" % f for f in list(files) + [info + "/RECORD"])
with zipfile.ZipFile(path, "w") as z:
    for f, text in files.items():
        z.writestr(f, text)
    z.writestr(info + "/RECORD", record)
"#;
    support::run_ok(
        std::process::Command::new("python3")
            .args(["-c", script])
            .args([path.to_str().unwrap(), dist, module, value]),
    );
    (
        format!("wheels/{name}"),
        std::fs::read(&path).unwrap(),
        false,
    )
}

/// A project whose tests need `greetdep` (from its requirements file, which
/// points pip at ./wheels with no index) and `colordep` (from `packages`, a
/// wheel's path).
fn needs_deps() -> Vec<RepoFile> {
    let mut f = files(&[
        (
            "requirements-test.txt",
            "--no-index\n--find-links wheels\ngreetdep\n",
        ),
        ("tests/__init__.py", ""),
        (
            "tests/test_deps.py",
            "import unittest\n\nimport colordep\nimport greetdep\n\n\n\
             class DepsTest(unittest.TestCase):\n\
             \x20   def test_greet(self):\n        self.assertEqual(greetdep.VALUE, 'hello')\n\n\
             \x20   def test_color(self):\n        self.assertEqual(colordep.VALUE, 'blue')\n",
        ),
        (
            "setup.py",
            "from setuptools import setup\n\nsetup(name='needsdeps', version='1.0', packages=[])\n",
        ),
    ]);
    f.push(wheel("greetdep", "greetdep", "hello"));
    f.push(wheel("colordep", "colordep", "blue"));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_types_install_requirements_and_packages_offline_and_run_placed_steps() {
    if !support::need_tools(&[("python3", "apt-get install python3 python3-venv")]) {
        return;
    }
    let repos = [("app", needs_deps())];
    let factories = r#"
[venv]
type = virtualenv
git = ./repos/app
requirements = requirements-test.txt
packages = wheels/colordep-1.0-py3-none-any.whl
test = %(python)s -m unittest discover -v
step.freeze = %(python)s -m pip freeze
step.freeze.after = install-requirements
step.where = %(python)s -c "import sys; print('prefix', sys.prefix)"
step.where.before = checkout
step.where.workdir = %(virtualenv)s
step.done = %(python)s -c "import greetdep, colordep; print('after the tests')"

[venv-nodeps]
type = virtualenv
git = ./repos/app
test = %(python)s -m unittest discover -v

[dist]
type = distutils
git = ./repos/app
requirements = requirements-test.txt
packages = wheels/colordep-1.0-py3-none-any.whl
test = python3 -m unittest discover -v
"#;
    let site = Site::start(&repos, factories, 2).await;
    let b = site.build_all(&["venv", "venv-nodeps", "dist"]).await;
    let setup = [
        "remove-virtualenv",
        "create-virtualenv",
        "property-virtualenv",
        "property-scripts",
        "property-python",
        "mkdir-src",
    ];

    let venv = &b[0];
    let mut want: Vec<(&str, &str)> = setup.iter().map(|s| (*s, "success")).collect();
    want.extend([
        ("where", "success"),
        ("checkout", "success"),
        ("install-requirements", "success"),
        ("freeze", "success"),
        ("test", "success"),
        ("done", "success"),
    ]);
    assert_eq!(results(venv), expect(&want));
    assert_eq!(result(venv), "success", "{}", venv.build.text);
    let log = site.log(venv, "freeze").await;
    assert!(
        log.contains("greetdep==1.0") && log.contains("colordep @ file://"),
        "{log}"
    );
    let log = site.log(venv, "where").await;
    assert!(
        log.contains(&format!("prefix {}", prop(venv, "virtualenv"))),
        "{log}"
    );
    let log = site.log(venv, "test").await;
    assert!(log.contains("Ran 2 tests") && log.contains("OK"), "{log}");
    assert!(site.log(venv, "done").await.contains("after the tests"));

    // The same project without its dependencies fails at the test step.
    let nodeps = &b[1];
    assert_eq!(result(nodeps), "failure");
    assert_eq!(step(nodeps, "test").result.as_deref(), Some("failure"));
    let log = site.log(nodeps, "test").await;
    assert!(log.contains("No module named"), "{log}");

    // distutils: installed into ../pydeps, found by the test step on PYTHONPATH.
    let dist = &b[2];
    assert_eq!(
        results(dist),
        expect(&[
            ("checkout", "success"),
            ("remove-pydeps", "success"),
            ("install-requirements", "success"),
            ("compile", "success"),
            ("test", "success"),
        ])
    );
    assert_eq!(result(dist), "success", "{}", dist.build.text);
    assert!(site
        .builder_dir("dist-s1")
        .join("pydeps/greetdep/__init__.py")
        .is_file());
    site.stop().await;
}
