//! `autobot checkconfig` on real files: every kind of bad `master.ini` fails with
//! exit code 1 and a message naming file:line, section and key, what was expected
//! and how to fix it; a good one prints the summary and exits 0.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

/// A master directory holding `master.ini` with `text`.
fn master(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("master.ini"), text).unwrap();
    dir
}

fn checkconfig(path: &Path) -> assert_cmd::assert::Assert {
    Command::cargo_bin("autobot")
        .unwrap()
        .arg("checkconfig")
        .arg(path)
        .assert()
}

/// Run checkconfig on `text`; it must fail with a message that holds every one of
/// `expected` (`{ini}` stands for the master.ini's path).
fn fails_with(text: &str, expected: &[&str]) {
    let dir = master(text);
    let ini = dir.path().join("master.ini");
    let out = checkconfig(dir.path())
        .failure()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for e in expected {
        let e = e.replace("{ini}", &ini.display().to_string());
        assert!(stderr.contains(&e), "expected {e:?} in:\n{stderr}");
    }
}

const HEAD: &str = "[:master:]\npassword = pw\nfactories = *\n\n[slave:s1]\n";

#[test]
fn port_that_is_not_a_number() {
    fails_with(
        "[:master:]\nslaveport = abc\n",
        &["{ini}:2: [:master:] slaveport: expected a TCP port number from 1 to 65535 (digits only, no sign), got \"abc\"; e.g. `slaveport = 9010`"],
    );
}

#[test]
fn port_zero_and_too_large() {
    fails_with(
        "[:master:]\n\nhtmlport = 0\n",
        &["{ini}:3: [:master:] htmlport: expected a TCP port number from 1 to 65535"],
    );
    fails_with(
        "[:master:]\npublicHtmlPort = 70000\n",
        &["{ini}:2: [:master:] publicHtmlPort: expected a TCP port number"],
    );
}

#[test]
fn two_equal_ports() {
    fails_with(
        "[:master:]\nslaveport = 9100\nhtmlport = 9100\n",
        &["{ini}:3: [:master:] htmlport: slaveport and htmlport are both 9100; each port must be different"],
    );
    // Against a default: the written one is blamed.
    fails_with(
        "[:master:]\npublichtmlport = 9010\n",
        &["{ini}:2: [:master:] publichtmlport: slaveport and publichtmlport are both 9010"],
    );
}

#[test]
fn missing_password() {
    fails_with(
        "[:master:]\nslaveport = 9010\n\n[slave:s1]\nos = linux\n",
        &["{ini}:4: [slave:s1]: no password: add `password = SECRET` to this section (or to [:master:] for every slave)"],
    );
    fails_with(
        "[slave:s1]\npassword =\n",
        &["{ini}:2: [slave:s1] password: the password is empty"],
    );
}

#[test]
fn unknown_factory_type() {
    fails_with(
        "[f]\ngit = ./f\ntype = make\n",
        &[
            "{ini}:3: [f] type: unknown factory type \"make\"; use one of: autotools, cpan, distutils, python-source, shell, source, trial, virtualenv",
            "list-factories --types",
        ],
    );
}

#[test]
fn factory_without_type() {
    fails_with(
        "[f]\ngit = ./f\n",
        &[
            "{ini}:1: [f]: this factory has no `type`: add `type = NAME` with one of: autotools",
            "hello",
        ],
    );
    // A slave written without the `slave:` prefix gets a hint.
    fails_with(
        "[s1]\npassword = x\n",
        &["{ini}:1: [s1]:", "for a slave, write [slave:s1]"],
    );
}

#[test]
fn unknown_key_for_a_type() {
    fails_with(
        "[f]\ntype = autotools\ngit = ./f\nconfigureFlag = --x\n",
        &[
            "{ini}:4: [f] configureFlag: unknown key for a factory of type autotools (did you mean `configureFlags`?); accepted keys: bootstrap, bootstrapArgv, configure, configureArgv, configureEnv, configureFlags, compile, compileArgv, test, testArgv; and the keys of every factory:",
            "dependsOn",
            "step.NAME, step.NAME.OPTION",
        ],
    );
    // The Python types' keys belong to them alone.
    fails_with(
        "[f]\ntype = cpan\ngit = ./f\npackages = pytest\n",
        &["{ini}:4: [f] packages: unknown key for a factory of type cpan"],
    );
    fails_with(
        "[f]\ntype = python-source\ngit = ./f\ninstall = easy_install\n",
        &["{ini}:4: [f] install: expected one of setup.py, pip, got \"easy_install\""],
    );
}

/// Steps of one's own on a type other than shell: placed steps naming no step,
/// placed both ways, and options of a step that does not exist fail at their line.
#[test]
fn steps_of_ones_own_on_any_type_are_checked() {
    fails_with(
        &format!("{HEAD}[f]\ntype = cpan\ngit = ./f\nstep.lint = perlcritic lib\nstep.lint.after = confgure\n"),
        &["{ini}:10: [f] step.lint.after: no step named \"confgure\" to place it after (did you mean `configure`?); steps of a cpan factory here: checkout, configure, compile, test"],
    );
    fails_with(
        &format!(
            "{HEAD}[f]\ntype = virtualenv\ngit = ./f\nstep.a = true\nstep.a.before = nosuch\n"
        ),
        &[
            "{ini}:10: [f] step.a.before: no step named \"nosuch\"",
            "create-virtualenv",
        ],
    );
    fails_with(
        &format!("{HEAD}[f]\ntype = autotools\ngit = ./f\nstep.a = true\nstep.a.after = configure\nstep.a.before = compile\n"),
        &["[f] step.a.", "either after or before another, not both"],
    );
    fails_with(
        &format!("{HEAD}[f]\ntype = trial\ngit = ./f\nstep.b.after = trial\n"),
        &["{ini}:9: [f] step.b.after: option for a step that does not exist; add `step.b = COMMAND`"],
    );
    fails_with(
        &format!(
            "{HEAD}[f]\ntype = autotools\ngit = ./f\nstep.a = true\nstep.a.aftr = configure\n"
        ),
        &["{ini}:10: [f] step.a.aftr: unknown step option \"aftr\" (did you mean `after`?)"],
    );
    fails_with(
        &format!(
            "{HEAD}[f]\ntype = autotools\ngit = ./f\nstep.configure = ./configure --prefix=/x\n"
        ),
        &["two steps are named \"configure\""],
    );
    fails_with(
        &format!("{HEAD}[f]\ntype = virtualenv\ngit = ./f\nrequirements = /etc/req.txt\n"),
        &["{ini}:9: [f] requirements: expected a path relative to the first source's checkout"],
    );
    fails_with(
        &format!("{HEAD}[f]\ntype = autotools\ngit = ./f\nbootstrap = autoreconf 'fi\n"),
        &["{ini}:9: [f] bootstrap: unterminated ' quote"],
    );
    // Placed well, on a real repository: valid.
    let dir = master(&format!(
        "{HEAD}[f]\ntype = cpan\ngit = ./f\nstep.lint = perlcritic lib\nstep.lint.after = configure\n"
    ));
    git_init(&dir.path().join("f"));
    checkconfig(dir.path()).success();
}

/// checkconfig looks at local source paths (not at URLs): missing, not a
/// repository, or a repository of the other VC is an error at the source's line.
#[test]
fn local_sources_must_be_repositories_of_their_vc() {
    let dir = master(&format!("{HEAD}[f]\ntype = source\ngit = ./nosuch\n"));
    let ini = dir.path().join("master.ini").display().to_string();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    checkconfig(dir.path())
        .failure()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "{ini}:8: [f] git: {} does not exist",
            root.join("nosuch").display()
        )));
    std::fs::create_dir(dir.path().join("nosuch")).unwrap();
    checkconfig(dir.path())
        .failure()
        .stderr(predicate::str::contains(format!(
            "{ini}:8: [f] git: {} is not a git repository",
            root.join("nosuch").display()
        )));
    git_init(&dir.path().join("nosuch"));
    checkconfig(dir.path()).success();
    // A git repository named by `hg =`.
    std::fs::write(
        dir.path().join("master.ini"),
        format!("{HEAD}[f]\ntype = source\ngit = https://example.org/x.git\nhg = ./nosuch\n"),
    )
    .unwrap();
    checkconfig(dir.path())
        .failure()
        .stderr(predicate::str::contains(format!(
            "{ini}:9: [f] hg: {} is not a hg repository",
            root.join("nosuch").display()
        )));
    // A bare git repository by an absolute path, and URLs, are fine.
    let bare = dir.path().join("bare.git");
    let st = std::process::Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&bare)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        dir.path().join("master.ini"),
        format!(
            "{HEAD}[f]\ntype = source\ngit = {} https://example.org/y.git#main\n",
            bare.display()
        ),
    )
    .unwrap();
    checkconfig(dir.path()).success();
}

/// A factory no slave runs: a warning (exit 0) at its section naming the
/// `factories =` lines that could list it.
#[test]
fn a_factory_no_slave_runs_is_warned_about() {
    let dir = master(
        "[:master:]\npassword = Zq9-secret\nallowForce = false\n\n[slave:s1]\nfactories = a\n[slave:s2]\n\n[a]\ntype = shell\nstep.x = true\n[b]\ntype = shell\nstep.x = true\n",
    );
    let ini = dir.path().join("master.ini").display().to_string();
    let out = checkconfig(dir.path())
        .success()
        .code(0)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(
        lines[0],
        format!("warning: {ini}:12: [b]: no slave runs this factory, so it never builds and cannot be forced; add b to a slave's `factories =` line (or write `factories = *`): {ini}:6: [slave:s1] factories = a (slave s1); {ini}:7: [slave:s2] (no factories line) (slave s2)")
    );
}

#[test]
fn slave_naming_an_unknown_factory() {
    fails_with(
        "[:master:]\npassword = pw\n[slave:s1]\nfactories = hello nosuch\n[hello]\n",
        &["{ini}:4: [slave:s1] factories: no factory named \"nosuch\"; known factories: hello"],
    );
    // Inherited from [:master:]: the error points where it is written.
    fails_with(
        "[:master:]\npassword = pw\nfactories = nosuch\n[slave:s1]\n",
        &["{ini}:3: [:master:] factories: no factory named \"nosuch\"; known factories: none"],
    );
    fails_with(
        "[:master:]\npassword = pw\n[slave:s1]\nfactories = * hello\n[hello]\n",
        &["{ini}:4: [slave:s1] factories: `*` means every factory and must stand alone"],
    );
}

#[test]
fn unparsable_line() {
    fails_with(
        "[:master:]\nslaveport = 9010\nthis is not ini\n",
        &["{ini}:3: cannot parse \"this is not ini\": expected `key = value`, a `[section]` header, or a comment"],
    );
    fails_with(
        "[:master:\n",
        &["{ini}:1: cannot parse \"[:master:\": a section header is `[NAME]`"],
    );
    fails_with(
        "slaveport = 1\n",
        &["{ini}:1: slaveport: key outside any section"],
    );
    fails_with(
        "[:master:]\nslaveport = 1\nSlavePort = 2\n",
        &["{ini}:3: [:master:] SlavePort: key given twice in this section (first at line 2"],
    );
}

#[test]
fn bad_os_int_and_bool() {
    fails_with(
        &format!("{HEAD}os = windows\n"),
        &["{ini}:6: [slave:s1] os: expected linux, win or mac, got \"windows\""],
    );
    fails_with(
        "[:master:]\npollInterval = soon\n",
        &["{ini}:2: [:master:] pollInterval: expected a whole number >= 1 (digits only, no sign), got \"soon\""],
    );
    fails_with(
        "[:master:]\npollInterval = 0\n",
        &["{ini}:2: [:master:] pollInterval: expected a whole number >= 1"],
    );
    fails_with(
        "[:master:]\nallowForce = maybe\n",
        &["{ini}:2: [:master:] allowForce: expected true or false"],
    );
    fails_with(
        &format!("{HEAD}max_builds = 0\n"),
        &["{ini}:6: [slave:s1] max_builds: expected a whole number >= 1"],
    );
    fails_with(
        "[f]\ntype = trial\ngit = ./f\nrecurse = sometimes\n",
        &["{ini}:4: [f] recurse: expected true or false, got \"sometimes\""],
    );
    fails_with(
        "[f]\ntype = source\ngit = ./f\nperiodic = often\n",
        &["{ini}:4: [f] periodic: expected a whole number >= 1"],
    );
}

#[test]
fn unknown_keys_in_master_and_slave() {
    fails_with("[:master:]\nslavprt = 9010\n", &["{ini}:2: [:master:] slavprt: unknown key in [:master:] (did you mean `slaveport`?); accepted keys: slaveport"]);
    fails_with(
        &format!("{HEAD}htmlport = 8080\n"),
        &["{ini}:6: [slave:s1] htmlport: unknown key for a slave (it belongs in [:master:]); accepted keys: password, factories, os, max_builds"],
    );
    fails_with(
        "[source:x]\n",
        &["{ini}:1: [source:x]: unknown kind of section"],
    );
}

#[test]
fn depends_on_and_locks_must_name_something() {
    fails_with(
        "[a]\ntype = source\ngit = ./a\ndependsOn = nosuch\n",
        &["{ini}:4: [a] dependsOn: no factory named \"nosuch\"; dependsOn names another factory section: none"],
    );
    fails_with(
        "[a]\ntype = source\ngit = ./a\ndependsOn = b\n[b]\ntype = source\ngit = ./b\ndependsOn = a\n",
        &["[a] dependsOn: dependsOn makes a cycle: a -> b -> a"],
    );
    fails_with(
        "[lock:cpu]\n[a]\ntype = source\ngit = ./a\nlocks = cpu disk\n",
        &["{ini}:5: [a] locks: no lock named \"disk\"; add a [lock:disk] section or use one of: cpu"],
    );
    fails_with(
        "[a]\ntype = shell\nstep.t = make\nstep.t.locks = gpu\n",
        &["{ini}:4: [a] step.t.locks: no lock named \"gpu\"; add a [lock:gpu] section"],
    );
    fails_with(
        "[lock:cpu]\nmaxCount = 0\n",
        &["{ini}:2: [lock:cpu] maxCount: expected a whole number >= 1"],
    );
    fails_with(
        "[lock:cpu]\nscope = everywhere\n",
        &["{ini}:2: [lock:cpu] scope: expected master"],
    );
}

#[test]
fn shell_steps_are_checked() {
    fails_with(
        "[a]\ntype = shell\ngit = ./a\n",
        &["{ini}:1: [a]: a factory of type shell needs steps: add `step.NAME = COMMAND` lines"],
    );
    fails_with(
        "[a]\ntype = shell\nstep.build = make\nstep.tset.timeout = 5\n",
        &["{ini}:4: [a] step.tset.timeout: option for a step that does not exist; add `step.tset = COMMAND` (steps of this factory: build)"],
    );
    fails_with(
        "[a]\ntype = shell\nstep.build = make\nstep.build.haltOnFailur = true\n",
        &["{ini}:4: [a] step.build.haltOnFailur: unknown step option \"haltonfailur\" (did you mean `haltOnFailure`?); use one of: haltOnFailure"],
    );
    fails_with(
        "[a]\ntype = shell\nstep.build = make 'oops\n",
        &["{ini}:3: [a] step.build: unterminated ' quote"],
    );
    // A command string runs through /bin/sh -c: what sh would refuse at its end
    // is found here, with the way out; as an argv the split finds it too.
    fails_with(
        "[a]\ntype = shell\nstep.build = make \"oops | tee log\n",
        &[
            "{ini}:3: [a] step.build: unterminated \" quote in the shell command",
            "set `step.build.argv = true`",
        ],
    );
    fails_with(
        "[a]\ntype = shell\nstep.build = make 'oops\nstep.build.argv = true\n",
        &["{ini}:3: [a] step.build: unterminated ' quote"],
    );
    fails_with(
        "[a]\ntype = shell\nstep.build = make\nstep.build.argv = true\nstep.build.shell = true\n",
        &["[a] step.build.argv: says true while step.build.shell says true; keep one of them"],
    );
    fails_with(
        "[a]\ntype = autotools\ngit = ./a\ntest = make check | tee 'out.txt\n",
        &[
            "{ini}:4: [a] test: unterminated ' quote in the shell command",
            "`testArgv = true`",
        ],
    );
    fails_with(
        "[a]\ntype = shell\nstep.build = make\nstep.build.timeout = ten\n",
        &["{ini}:4: [a] step.build.timeout: expected a whole number >= 0 (digits only, no sign), got \"ten\""],
    );
}

#[test]
fn other_factory_values_are_checked() {
    fails_with(
        "[a]\ntype = source\ngit = ./a\nnightly = 0 25 * * *\n",
        &["{ini}:4: [a] nightly: cron hour field \"25\" is not valid"],
    );
    fails_with(
        "[a]\ntype = source\ngit = ./a\nnightly = 0 3 *\n",
        &["{ini}:4: [a] nightly: expected five cron fields"],
    );
    fails_with(
        "[a]\ntype = source\ngit = ./a\nfiles = src/(\n",
        &["{ini}:4: [a] files: \"src/(\" is not a valid regular expression"],
    );
    fails_with(
        "[a]\ntype = source\ngit = ./a\nretry = 10\n",
        &["{ini}:4: [a] retry: expected `DELAY REPEATS`"],
    );
    fails_with(
        "[a]\ntype = source\ngit = ./a\nmode = fresh\n",
        &["{ini}:4: [a] mode: expected one of update, copy, clobber, export"],
    );
    fails_with(
        "[a]\ntype = source\ngit = ./a#\n",
        &["{ini}:3: [a] git: \"./a#\" ends with `#` but names no branch"],
    );
    fails_with(
        "[a]\ntype = source\n",
        &["{ini}:1: [a]: type source needs a source: add `git = URL[#branch]`"],
    );
    fails_with(
        "[a]\ntype = virtualenv\nname = ../..\n",
        &["{ini}:3: [a] name: expected a plain directory name"],
    );
    fails_with(
        "[a]\ntype = autotools\ngit = ./a\nconfigureEnv = CFLAGS\n",
        &["{ini}:4: [a] configureEnv: expected VAR=VALUE words"],
    );
}

#[test]
fn errors_in_a_local_project_point_into_the_project_file() {
    let dir = master("[:master:]\npassword = pw\n[slave:s1]\nfactories = mine\n[mine]\n");
    std::fs::create_dir(dir.path().join("projects")).unwrap();
    let project = dir.path().join("projects/mine.ini");
    std::fs::write(
        &project,
        "[mine]\ndescription = d\ntype = autotools\ngit = ./m\ncompile = make 'x\n",
    )
    .unwrap();
    checkconfig(dir.path())
        .failure()
        .stderr(predicate::str::contains(format!(
            "{}:5: [mine] compile: unterminated ' quote",
            project.display()
        )));
    // The master.ini's section overrides the broken key: fine again (once its
    // local source is a repository: checkconfig looks).
    git_init(&dir.path().join("m"));
    std::fs::write(
        dir.path().join("master.ini"),
        "[:master:]\npassword = pw\n[slave:s1]\nfactories = mine\n[mine]\ncompile = make\n",
    )
    .unwrap();
    checkconfig(dir.path()).success();
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("master.ini");
    checkconfig(dir.path())
        .failure()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "{}: cannot read",
            ini.display()
        )));
    let nosuch: PathBuf = dir.path().join("nosuch.ini");
    checkconfig(&nosuch)
        .failure()
        .stderr(predicate::str::contains(format!(
            "{}: cannot read",
            nosuch.display()
        )));
}

#[test]
fn a_hello_section_with_no_keys_passes() {
    let dir = master("[:master:]\npassword = Zq9-secret\nfactories = *\n[slave:s1]\n[hello]\n");
    let out = checkconfig(dir.path()).success().get_output().clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let root = std::fs::canonicalize(dir.path()).unwrap();
    assert!(
        stdout.contains("slaves (1):\n  s1  os=linux  max_builds=1  factories: hello\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "  hello  type=autotools  git {}/repos/hello#master  (project hello)\n",
            root.display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("builders (1):\n  hello-s1\n"), "{stdout}");
    assert!(
        !stdout.contains("Zq9-secret"),
        "no password in the summary: {stdout}"
    );
}

#[test]
fn a_full_config_passes_and_is_summarized() {
    let text = "\
; a full master.ini
[DEFAULT]
category = ci

[:master:]
slaveport = 9110   ; inline comment
htmlport = 8110
publichtmlport = 8111
pollInterval = 30
treeStable = 10
allowForce = true
projectName = Demo
ircChannels = #a #b
password = secret
factories = *

[slave:linux1]
[slave:mac1]
os = mac
factories = hello tools
max_builds = 2

[lock:cpu]
scope = slave
maxCount = 2

[users]
admin = adminpw

[hello]
[pyhello]
[tools]
type = shell
hg = http://hg.example.org/tools#stable
platform = true
locks = cpu
nightly = 0 3 * * 1-5
step.build = make all
step.build.haltOnFailure = true
step.test = make check
step.test.env.CFLAGS = -O2
[nightly-only]
type = source
git = https://example.org/n.git
dependsOn = hello
";
    let dir = master(text);
    let out = checkconfig(&dir.path().join("master.ini"))
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "master: slaveport 9110, htmlport 8110, publichtmlport 8111, pollInterval 30s, treeStable 10s, allowForce true\n",
        "  linux1  os=linux  max_builds=1  factories: hello pyhello tools nightly-only\n",
        "  mac1  os=mac  max_builds=2  factories: hello tools\n",
        "  tools  type=shell  hg http://hg.example.org/tools#stable\n",
        "  nightly-only  type=source  git https://example.org/n.git#master\n",
        "builders (6):\n  hello-linux1\n  hello-mac1\n  pyhello-linux1\n  tools-linux1\n  tools-mac1\n  nightly-only-linux1\n",
        "  cpu  scope=slave  maxCount=2\n",
        "users: admin\n",
    ] {
        assert!(stdout.contains(want), "expected {want:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains("secret") && !stdout.contains("adminpw"),
        "{stdout}"
    );
}

#[test]
fn the_library_gives_the_same_errors() {
    let dir = master("[:master:]\nslaveport = x\n");
    let e = autobot::config::load(dir.path()).unwrap_err().to_string();
    assert!(e.ends_with("master.ini:2: [:master:] slaveport: expected a TCP port number from 1 to 65535 (digits only, no sign), got \"x\"; e.g. `slaveport = 9010`"), "{e}");
}

#[test]
fn favicon_or_robots_file_that_does_not_exist() {
    fails_with(
        "[:master:]\npassword = pw\nfactories = *\nfavicon = art/none.ico\n[slave:s1]\n",
        &[
            "{ini}:4",
            "favicon",
            "no file",
            "art/none.ico",
            "relative to the master directory",
        ],
    );
    fails_with(
        "[:master:]\npassword = pw\nfactories = *\n\nrobots_txt = robots.txt\n[slave:s1]\n",
        &["{ini}:5", "robots_txt", "no file"],
    );
}

#[test]
fn signed_or_empty_numbers_are_errors_not_defaults() {
    fails_with(
        "[:master:]\nslaveport = +9010\n",
        &["{ini}:2: [:master:] slaveport: expected a TCP port number from 1 to 65535 (digits only, no sign), got \"+9010\"; e.g. `slaveport = 9010`"],
    );
    fails_with(
        "[:master:]\n; the port\nslaveport =\n",
        &["{ini}:3: [:master:] slaveport: no value; write a TCP port number from 1 to 65535 (e.g. `slaveport = 9010`), or remove the line to get the default 9010"],
    );
    fails_with(
        "[:master:]\nhtmlport = -8010\n",
        &[
            "{ini}:2: [:master:] htmlport: expected a TCP port number",
            "got \"-8010\"",
        ],
    );
    fails_with(
        "[:master:]\npublichtmlport = 99999999999999999999999\n",
        &["{ini}:2: [:master:] publichtmlport: expected a TCP port number"],
    );
    fails_with(
        "[DEFAULT]\npollInterval = +60\n",
        &["{ini}:2: [DEFAULT] pollInterval: expected a whole number >= 1 (digits only, no sign), got \"+60\""],
    );
    fails_with(
        "[:master:]\nkeepaliveInterval =\n",
        &["{ini}:2: [:master:] keepaliveInterval: no value; write a whole number >= 1 (e.g. `keepaliveInterval = 600`), or remove the line to get the default"],
    );
    fails_with(
        "[:master:]\nallowForce =\n",
        &["{ini}:2: [:master:] allowForce: no value; write true or false"],
    );
    fails_with(
        &format!("{HEAD}max_builds = +1\n"),
        &["{ini}:6: [slave:s1] max_builds: expected a whole number >= 1 (digits only, no sign)"],
    );
    fails_with(
        "[f]\ntype = shell\nstep.a = make\nstep.a.timeout = +5\n",
        &["{ini}:4: [f] step.a.timeout: expected a whole number >= 0 (digits only, no sign), got \"+5\""],
    );
}

#[test]
fn a_file_that_is_not_utf8_names_line_column_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("master.ini");
    // Latin-1 "é" (0xE9) in a comment on line 3, after "; caf".
    std::fs::write(&ini, b"[:master:]\nslaveport = 9010\n; caf\xE9\n").unwrap();
    let out = checkconfig(dir.path())
        .failure()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:3: byte 0xE9 at column 6 is not UTF-8; the file must be UTF-8 text: convert it (e.g. `iconv -f latin1 -t utf-8 FILE > FILE.new` and rename)",
        ini.display()
    );
    assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
    // A local project file is held to the same rule.
    let dir = master("[:master:]\n");
    std::fs::create_dir(dir.path().join("projects")).unwrap();
    let project = dir.path().join("projects/p.ini");
    std::fs::write(&project, b"[p]\ndescription = na\xEFve\n").unwrap();
    let out = checkconfig(dir.path())
        .failure()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}:2: byte 0xEF at column 17 is not UTF-8",
        project.display()
    );
    assert!(stderr.contains(&want), "expected {want:?} in:\n{stderr}");
    // A UTF-8 byte-order mark is fine.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("master.ini"),
        b"\xEF\xBB\xBF[:master:]\nslaveport = 9020\n",
    )
    .unwrap();
    checkconfig(dir.path())
        .success()
        .stdout(predicate::str::contains("slaveport 9020"));
}

/// checkconfig of a valid file that lets strangers in: exit 0, one `warning:` line
/// per problem on stderr, each naming file:line and the fix.
#[test]
fn documented_secrets_and_open_force_are_warned_about() {
    let dir = master(
        "[:master:]\nhtmlport = 8110\nchangeuser = change\nchangepassword = changepw\npassword = passwd\nfactories = *\n\n[slave:s1]\n[slave:s2]\npassword = secret\n[hello]\n",
    );
    let ini = dir.path().join("master.ini").display().to_string();
    let out = checkconfig(dir.path())
        .success()
        .code(0)
        .get_output()
        .clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("is valid."), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let want = [
        format!("warning: {ini}:1: [:master:]: htmlport 8110 lets anyone who can reach it force and stop builds (allowForce is true and there is no [users] section); add a [users] section with `NAME = PASSWORD` lines, set `allowForce = false`, or listen on loopback only (`htmlport = 127.0.0.1:8110`)"),
        format!("warning: {ini}:4: [:master:] changepassword: \"changepw\" is printed in the documentation, so anyone who can reach slaveport 9010 or htmlport 8110 can submit Changes (and so start builds); replace it with a random value of your own (e.g. the output of `head -c 18 /dev/urandom | base64`), and give it to `autobot sendchange --auth USER:PASSWORD`"),
        format!("warning: {ini}:5: [:master:] password: the password \"passwd\" is printed in the documentation, so anyone who can reach slaveport 9010 can log in as slave s1 and be sent builds;"),
        format!("warning: {ini}:10: [slave:s2] password: the password \"secret\" is printed in the documentation"),
    ];
    assert_eq!(lines.len(), want.len(), "{stderr}");
    for (line, want) in lines.iter().zip(&want) {
        assert!(
            line.starts_with(want.as_str()),
            "expected {want:?}, got {line:?}"
        );
    }
    // Fixed: no warning at all.
    let dir = master(
        "[:master:]\nchangeuser = hooks\nchangepassword = Zq8rT2mWx7Kp\npassword = Hn4vB9cLs3Xe\nfactories = *\n[slave:s1]\n[users]\nann = Pw5dF8gJk2Rt\n[hello]\n",
    );
    checkconfig(dir.path())
        .success()
        .stderr(predicate::str::is_empty());
}

/// A git repository at `dir` (made with the git CLI), for local sources that
/// checkconfig looks at.
fn git_init(dir: &Path) {
    let st = std::process::Command::new("git")
        .args(["init", "-q"])
        .arg(dir)
        .status()
        .expect("git runs");
    assert!(st.success(), "git init {}", dir.display());
}
