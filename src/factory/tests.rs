//! Unit tests of the factory types: each type's step list against the commands and
//! flags of the Buildbot 0.7 manual (and autobot 0.1.1 for the virtualenv types).

use super::*;

/// A factory section as the tests write it, owning what a [`Recipe`] borrows.
#[derive(Default)]
struct Owned {
    name: String,
    type_name: String,
    params: BTreeMap<String, String>,
    steps: Vec<(String, BTreeMap<String, String>)>,
    sources: Vec<Source>,
    mode: Mode,
    always_use_latest: bool,
    retry: Option<Retry>,
    platform: bool,
}

impl Owned {
    fn recipe(&self) -> Recipe<'_> {
        Recipe {
            name: &self.name,
            type_name: &self.type_name,
            params: &self.params,
            steps: &self.steps,
            sources: &self.sources,
            mode: self.mode,
            always_use_latest: self.always_use_latest,
            retry: self.retry,
            platform: self.platform,
        }
    }
}

fn build_steps(f: &Owned, os: &str) -> Result<Vec<StepSpec>, FactoryError> {
    super::build_steps(&f.recipe(), os)
}

fn build_properties(f: &Owned, os: &str) -> BTreeMap<String, String> {
    super::build_properties(&f.recipe(), os)
}

fn git(url: &str) -> Source {
    Source {
        kind: SourceKind::Git,
        url: url.to_string(),
        branch: "master".to_string(),
        branch_prefix: None,
    }
}

fn hg(url: &str) -> Source {
    Source {
        kind: SourceKind::Hg,
        url: url.to_string(),
        branch: "default".to_string(),
        branch_prefix: None,
    }
}

fn factory(type_name: &str, params: &[(&str, &str)], sources: Vec<Source>) -> Owned {
    Owned {
        name: "f".to_string(),
        type_name: type_name.to_string(),
        sources,
        params: params
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
        ..Owned::default()
    }
}

/// The os of the slave the tests build on.
fn slave() -> &'static str {
    "linux"
}

fn steps(f: &Owned) -> Vec<StepSpec> {
    build_steps(f, slave()).unwrap()
}

fn argv(step: &StepSpec) -> Vec<&str> {
    match &step.kind {
        StepKind::Shell {
            command: Command::Argv(a),
        }
        | StepKind::SetProperty {
            command: Command::Argv(a),
            ..
        } => a.iter().map(String::as_str).collect(),
        other => panic!("not an argv step: {other:?}"),
    }
}

/// The `/bin/sh -c` script of a step whose command was written in `master.ini`.
fn script(step: &StepSpec) -> &str {
    match &step.kind {
        StepKind::Shell {
            command: Command::Shell(s),
        } => s,
        other => panic!("not a shell script step: {other:?}"),
    }
}

fn names(steps: &[StepSpec]) -> Vec<&str> {
    steps.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn source_checks_out_one_source_into_build() {
    let f = factory("source", &[], vec![git("/r/hello.git")]);
    let s = steps(&f);
    assert_eq!(names(&s), ["checkout"]);
    assert_eq!(s[0].workdir, "build");
    assert_eq!(s[0].flags, StepFlags::HALT);
    assert_eq!(s[0].timeout, Some(1200));
    assert_eq!(
        s[0].kind,
        StepKind::Checkout {
            source: git("/r/hello.git"),
            mode: Mode::Update,
            always_use_latest: false,
            retry: None,
            mirror: true
        }
    );
    assert_eq!(s[0].description_done, ["checkout", "hello"]);
}

#[test]
fn mirror_false_checks_out_without_the_slaves_mirror() {
    let f = factory("source", &[("mirror", "false")], vec![git("/r/hello.git")]);
    assert!(matches!(
        steps(&f)[0].kind,
        StepKind::Checkout { mirror: false, .. }
    ));
}

#[test]
fn several_sources_go_to_their_own_directories_hg_first() {
    let mut f = factory(
        "source",
        &[],
        vec![
            git("https://x.org/a/lib.git/"),
            hg("http://k0s.org/hg/toolbox"),
            git("../app"),
        ],
    );
    f.mode = Mode::Clobber;
    f.always_use_latest = true;
    f.retry = Some(Retry {
        delay: 60,
        repeats: 3,
    });
    let s = steps(&f);
    assert_eq!(
        names(&s),
        ["checkout-toolbox", "checkout-lib", "checkout-app"]
    );
    let wd: Vec<&str> = s.iter().map(|s| s.workdir.as_str()).collect();
    assert_eq!(wd, ["build/toolbox", "build/lib", "build/app"]);
    match &s[0].kind {
        StepKind::Checkout {
            source,
            mode,
            always_use_latest,
            retry,
            mirror,
        } => {
            assert_eq!(source.kind, SourceKind::Hg);
            assert!(mirror);
            assert_eq!(*mode, Mode::Clobber);
            assert!(always_use_latest);
            assert_eq!(retry.unwrap().repeats, 3);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn source_needs_a_source_and_distinct_directories() {
    let f = factory("source", &[], vec![]);
    assert!(matches!(
        build_steps(&f, slave()),
        Err(FactoryError::NoSource { .. })
    ));
    let f = factory("source", &[], vec![git("/a/x.git"), git("/b/x")]);
    assert!(matches!(
        build_steps(&f, slave()),
        Err(FactoryError::DuplicateDir { .. })
    ));
}

#[test]
fn source_dir_is_the_last_url_part() {
    assert_eq!(source_dir(&git("https://github.com/a/b.git")), "b");
    assert_eq!(source_dir(&git("git@github.com:a/b.git")), "b");
    assert_eq!(source_dir(&git("git@host:b.git")), "b");
    assert_eq!(source_dir(&git("/srv/repos/hello/")), "hello");
    assert_eq!(source_dir(&hg("http://k0s.org/hg/x.git")), "x.git");
}

#[test]
fn autotools_follows_gnuautoconf() {
    // % CONFIG_ENV=foo ./configure --with-flags ; make all ; make check
    let f = factory(
        "autotools",
        &[
            ("configureEnv", "CFLAGS=\"-O2 -g\" CC=gcc"),
            ("configureFlags", "--disable-nls --without-x"),
        ],
        vec![git("/r/hello")],
    );
    let s = steps(&f);
    assert_eq!(names(&s), ["checkout", "configure", "compile", "test"]);
    assert_eq!(script(&s[1]), "./configure --disable-nls --without-x");
    assert_eq!(s[1].env["CFLAGS"], "-O2 -g");
    assert_eq!(s[1].env["CC"], "gcc");
    assert_eq!(s[1].flags, StepFlags::HALT);
    assert_eq!(script(&s[2]), "make all");
    assert_eq!(s[2].flags, StepFlags::COMPILE);
    assert!(s[2].flags.warn_on_warnings && s[2].flags.halt_on_failure);
    assert_eq!(s[2].log_parser, LogParser::Compile);
    assert_eq!(script(&s[3]), "make check");
    assert_eq!(s[3].flags, StepFlags::TEST);
    // Buildbot's Test: warnOnFailure on top of ShellCommand's flunkOnFailure, so a
    // failing `make check` makes the build FAILURE; no haltOnFailure.
    assert!(s[3].flags.warn_on_failure && s[3].flags.flunk_on_failure);
    assert!(!s[3].flags.halt_on_failure);
    assert_eq!(s[3].log_parser, LogParser::Test);
    assert!(s.iter().all(|s| s.workdir == "build"));
    assert_eq!(s[1].description, ["configuring"]);
    assert_eq!(s[2].description_done, ["compile"]);
}

#[test]
fn autotools_empty_values_leave_steps_out() {
    let f = factory(
        "autotools",
        &[
            ("configure", ""),
            ("test", ""),
            ("compile", "make -j2 'CFLAGS=-O0 -g'"),
        ],
        vec![git("/r/hello")],
    );
    let s = steps(&f);
    assert_eq!(names(&s), ["checkout", "compile"]);
    assert_eq!(script(&s[1]), "make -j2 'CFLAGS=-O0 -g'");
}

#[test]
fn command_keys_run_through_the_shell_unless_their_argv_option_says_so() {
    // configureFlags are words: quoted into the script, or appended to the argv.
    let f = factory(
        "autotools",
        &[
            ("configureFlags", "--prefix='/opt/my dir' --with-x=%(x)s"),
            ("test", "make check | tee check.log"),
            ("compileArgv", "true"),
            ("compile", "make all | x"),
        ],
        vec![git("/r/hello")],
    );
    let s = steps(&f);
    assert_eq!(
        script(&s[1]),
        "./configure '--prefix=/opt/my dir' '--with-x=%(x)s'"
    );
    assert_eq!(argv(&s[2]), ["make", "all", "|", "x"]);
    assert_eq!(script(&s[3]), "make check | tee check.log");
    let f = factory(
        "autotools",
        &[("configureArgv", "yes"), ("configureFlags", "'a b'")],
        vec![git("/r/hello")],
    );
    assert_eq!(argv(&steps(&f)[1]), ["./configure", "a b"]);
    for ty in ["virtualenv", "python-source", "distutils"] {
        let f = factory(
            ty,
            &[
                ("test", "%(python)s -m pytest | tee t"),
                ("testArgv", "true"),
            ],
            vec![git("/r/p")],
        );
        let s = steps(&f);
        let test = s.iter().find(|s| s.name == "test").unwrap();
        assert_eq!(
            argv(test),
            ["%(python)s", "-m", "pytest", "|", "tee", "t"],
            "{ty}"
        );
    }
}

#[test]
fn an_unterminated_quote_in_a_shell_command_is_an_error() {
    for (key, value) in [
        ("test", "make check 'x"),
        ("compile", "echo \"a"),
        ("bootstrap", "echo `date"),
        ("test", "make \\"),
        ("test", "echo $(date"),
        ("test", "(cd sub && make"),
        ("test", "echo ${HOME"),
        ("test", "echo $((1 + 2)"),
        ("test", "echo $'a"),
    ] {
        let e = build_steps(
            &factory("autotools", &[(key, value)], vec![git("/r/hello")]),
            slave(),
        )
        .unwrap_err();
        match e {
            FactoryError::BadValue {
                key: k, message, ..
            } => {
                assert_eq!(k, key);
                assert!(message.contains(&format!("{key}Argv = true")), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    // As an argv the quote is still unterminated, which splitting reports.
    assert!(build_steps(
        &factory(
            "autotools",
            &[("test", "make 'x"), ("testArgv", "true")],
            vec![git("/r/hello")]
        ),
        slave()
    )
    .is_err());
    let mut f = factory("shell", &[], vec![]);
    f.steps = vec![step("t", &[("command", "echo 'it")])];
    let e = build_steps(&f, slave()).unwrap_err().to_string();
    assert!(
        e.contains("step.t") && e.contains("unterminated ' quote"),
        "{e}"
    );
    assert!(e.contains("step.t.argv = true"), "{e}");
    // Closed, each of them is fine (a case pattern's `)` closes nothing).
    for ok in [
        "echo $(date) `date` ${HOME} $((1 + 2)) $'a' \"$(echo \"x)\")\"",
        "(cd sub && make) && arr[1]=2",
        "case $x in a) echo a;; (b) echo b;; esac",
        "echo $(case y in y) echo;; esac)",
    ] {
        f.steps = vec![step("t", &[("command", ok)])];
        assert!(build_steps(&f, slave()).is_ok(), "{ok}");
    }
    // A here-document's quote and a comment's are not quotes of the script.
    f.steps = vec![step("t", &[("command", "cat <<EOF\nit's\nEOF\n# don't")])];
    assert!(build_steps(&f, slave()).is_ok());
    // A reference where no value can go is reported before any build.
    f.steps = vec![step("t", &[("command", "cat <<'EOF'\n%(branch)s\nEOF")])];
    let e = build_steps(&f, slave()).unwrap_err().to_string();
    assert!(e.contains("%(branch)s"), "{e}");
}

#[test]
fn autotools_with_two_sources_runs_in_the_first() {
    let f = factory("autotools", &[], vec![git("/r/hello"), git("/r/lib")]);
    let s = steps(&f);
    assert_eq!(
        names(&s),
        [
            "checkout-hello",
            "checkout-lib",
            "configure",
            "compile",
            "test"
        ]
    );
    assert_eq!(s[2].workdir, "build/hello");
}

#[test]
fn cpan_runs_makefile_pl_make_make_test() {
    let f = factory("cpan", &[("perl", "/usr/bin/perl -w")], vec![git("/r/Mod")]);
    let s = steps(&f);
    assert_eq!(names(&s), ["checkout", "configure", "compile", "test"]);
    assert_eq!(argv(&s[1]), ["/usr/bin/perl", "-w", "Makefile.PL"]);
    assert_eq!(argv(&s[2]), ["make"]);
    assert_eq!(argv(&s[3]), ["make", "test", "TEST_VERBOSE=1"]);
    assert_eq!(s[1].flags, StepFlags::HALT);
    assert_eq!(s[2].flags, StepFlags::COMPILE);
    assert_eq!(s[3].flags, StepFlags::TEST);
    let s = steps(&factory("cpan", &[], vec![git("/r/Mod")]));
    assert_eq!(argv(&s[1]), ["perl", "Makefile.PL"]);
}

#[test]
fn distutils_builds_and_tests_only_when_asked() {
    let s = steps(&factory("distutils", &[], vec![git("/r/p")]));
    assert_eq!(names(&s), ["checkout", "compile"]);
    assert_eq!(argv(&s[1]), ["python3", "./setup.py", "build"]);
    assert_eq!(s[1].flags, StepFlags::COMPILE);
    let s = steps(&factory(
        "distutils",
        &[("python", "python3.11"), ("test", "python3.11 -m pytest")],
        vec![git("/r/p")],
    ));
    assert_eq!(argv(&s[1]), ["python3.11", "./setup.py", "build"]);
    assert_eq!(script(&s[2]), "python3.11 -m pytest");
    assert_eq!(s[2].flags, StepFlags::TEST);
}

#[test]
fn trial_follows_the_manual_examples() {
    // Trial(source, tests="toplevel.test"): python ./setup.py build;
    // PYTHONPATH=. trial --reporter=bwverbose toplevel.test (the 0.7 manual's `-to`
    // is rejected by current trial; bwverbose is Buildbot's later trialMode).
    let s = steps(&factory(
        "trial",
        &[("tests", "toplevel.test")],
        vec![git("/r/p")],
    ));
    assert_eq!(names(&s), ["checkout", "compile", "trial"]);
    assert_eq!(argv(&s[1]), ["python3", "./setup.py", "build"]);
    assert_eq!(
        argv(&s[2]),
        ["trial", "--reporter=bwverbose", "toplevel.test"]
    );
    assert_eq!(s[2].env["PYTHONPATH"], ".");
    assert_eq!(s[2].flags, StepFlags::TEST);
    assert_eq!(s[2].log_parser, LogParser::Test);
    // Trial(source, trialpython=["python2.3", "-Wall"], trial="./bin/trial", tests=[...],
    //       testpath=..., randomly); current trial recurses by itself, so only
    //       `recurse = false` adds a flag (--no-recurse).
    let s = steps(&factory(
        "trial",
        &[
            ("buildpython", "python2.3 -Wall"),
            ("trialpython", "python2.3 -Wall"),
            ("trial", "./bin/trial"),
            ("trialMode", "-e --reporter=text"),
            ("tests", "foo.tests other.test"),
            ("testpath", "build/lib.linux-i686-2.3"),
            ("recurse", "false"),
            ("randomly", "yes"),
        ],
        vec![git("/r/p")],
    ));
    assert_eq!(argv(&s[1]), ["python2.3", "-Wall", "./setup.py", "build"]);
    assert_eq!(
        argv(&s[2]),
        [
            "python2.3",
            "-Wall",
            "./bin/trial",
            "-e",
            "--reporter=text",
            "--no-recurse",
            "--random=0",
            "foo.tests",
            "other.test"
        ]
    );
    assert_eq!(s[2].env["PYTHONPATH"], "build/lib.linux-i686-2.3");
    let s = steps(&factory(
        "trial",
        &[("tests", "t"), ("recurse", "true"), ("trialMode", "")],
        vec![git("/r/p")],
    ));
    assert_eq!(argv(&s[2]), ["trial", "t"]);
    // No tests: nothing to run.
    let s = steps(&factory("trial", &[], vec![git("/r/p")]));
    assert_eq!(names(&s), ["checkout", "compile"]);
}

#[test]
fn virtualenv_follows_autobot() {
    let s = steps(&factory("virtualenv", &[], vec![git("/r/pkg.git")]));
    assert_eq!(
        names(&s),
        [
            "remove-virtualenv",
            "create-virtualenv",
            "property-virtualenv",
            "property-scripts",
            "property-python",
            "mkdir-src",
            "checkout"
        ]
    );
    assert_eq!(argv(&s[0]), ["rm", "-rf", "env"]);
    assert_eq!(s[0].workdir, "build");
    assert_eq!(argv(&s[1]), ["python3", "-m", "venv", "env"]);
    assert_eq!(s[1].flags, StepFlags::HALT);
    assert_eq!(argv(&s[2]), ["pwd"]);
    assert_eq!(s[2].workdir, "build/env");
    assert!(
        matches!(&s[2].kind, StepKind::SetProperty { property, .. } if property == "virtualenv")
    );
    assert!(matches!(&s[3].kind, StepKind::SetProperty { property, .. } if property == "scripts"));
    assert_eq!(s[3].workdir, "%(virtualenv)s");
    let find = argv(&s[3]);
    assert_eq!(&find[..2], ["sh", "-c"]);
    assert!(
        find[2].find("Scripts").unwrap() < find[2].find("bin").unwrap(),
        "{}",
        find[2]
    );
    assert!(matches!(&s[4].kind, StepKind::SetProperty { property, .. } if property == "python"));
    assert_eq!(s[4].workdir, "%(scripts)s");
    assert!(
        argv(&s[4])[2].find("\"python\"").unwrap() < argv(&s[4])[2].find("python.exe").unwrap()
    );
    assert_eq!(argv(&s[5]), ["mkdir", "-p", "src"]);
    assert_eq!(s[5].workdir, "%(virtualenv)s");
    assert_eq!(s[6].workdir, "%(virtualenv)s/src/pkg");
    assert_eq!(s[6].flags, StepFlags::HALT);

    let s = steps(&factory(
        "virtualenv",
        &[
            ("name", "venv"),
            ("virtualenv", "true"),
            ("checkout", "false"),
        ],
        vec![git("/r/pkg.git")],
    ));
    assert_eq!(names(&s).len(), 6);
    assert_eq!(argv(&s[0]), ["rm", "-rf", "venv"]);
    assert_eq!(argv(&s[1]), ["virtualenv", "venv"]);
    assert_eq!(s[2].workdir, "build/venv");
}

#[test]
fn virtualenv_name_cannot_escape_the_build_directory() {
    let f = factory("virtualenv", &[("name", "../..")], vec![]);
    assert!(matches!(
        build_steps(&f, slave()),
        Err(FactoryError::BadValue { .. })
    ));
}

#[test]
fn python_source_installs_every_source_then_tests() {
    let f = factory(
        "python-source",
        &[("test", "%(python)s -m unittest discover -v")],
        vec![git("/r/app"), hg("http://h/dep")],
    );
    let s = steps(&f);
    assert_eq!(
        &names(&s)[6..],
        [
            "checkout-dep",
            "checkout-app",
            "install-dep",
            "install-app",
            "test"
        ]
    );
    assert_eq!(argv(&s[8]), ["%(python)s", "setup.py", "install"]);
    assert_eq!(s[8].workdir, "%(virtualenv)s/src/dep");
    assert_eq!(s[8].flags, StepFlags::HALT);
    assert_eq!(s[8].description_done, ["install", "dep"]);
    assert_eq!(script(&s[10]), "%(python)s -m unittest discover -v");
    assert_eq!(s[10].workdir, "%(virtualenv)s/src/dep");
    assert_eq!(s[10].flags, StepFlags::TEST);

    let s = steps(&factory(
        "python-source",
        &[("install", "pip")],
        vec![git("/r/app")],
    ));
    assert_eq!(names(&s).last(), Some(&"install-app"));
    assert_eq!(
        argv(s.last().unwrap()),
        ["%(python)s", "-m", "pip", "install", "--no-deps", "."]
    );
    assert!(matches!(
        build_steps(&factory("python-source", &[], vec![]), slave()),
        Err(FactoryError::NoSource { .. })
    ));
}

fn step(name: &str, opts: &[(&str, &str)]) -> (String, BTreeMap<String, String>) {
    (
        name.to_string(),
        opts.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn shell_runs_the_steps_with_their_options() {
    let mut f = factory("shell", &[], vec![git("/r/hello")]);
    f.steps = vec![
        step(
            "configure",
            &[
                ("command", "./configure --prefix='/opt/x y'"),
                ("haltonfailure", "true"),
            ],
        ),
        step(
            "test",
            &[
                ("command", "make check"),
                ("flunkonfailure", "false"),
                ("warnonfailure", "true"),
                ("flunkonwarnings", "true"),
                ("warnonwarnings", "true"),
                ("timeout", "0"),
                ("maxtime", "3600"),
                ("workdir", "build/tests"),
                ("description", "running tests"),
                ("descriptiondone", "tests"),
                ("locks", "cpu disk"),
                ("logparser", "test"),
                ("env.CFLAGS", "-O2"),
            ],
        ),
        step(
            "report",
            &[("command", "ls | wc -l > n"), ("shell", "true")],
        ),
    ];
    let s = steps(&f);
    assert_eq!(names(&s), ["checkout", "configure", "test", "report"]);
    assert_eq!(script(&s[1]), "./configure --prefix='/opt/x y'");
    assert_eq!(s[1].flags, StepFlags::HALT);
    assert_eq!(s[1].timeout, Some(1200));
    assert_eq!(s[1].workdir, "build");
    let t = &s[2];
    assert_eq!(
        t.flags,
        StepFlags {
            halt_on_failure: false,
            flunk_on_failure: false,
            warn_on_failure: true,
            flunk_on_warnings: true,
            warn_on_warnings: true
        }
    );
    assert_eq!(t.timeout, None);
    assert_eq!(t.max_time, Some(3600));
    assert_eq!(t.workdir, "build/tests");
    assert_eq!(t.description, ["running", "tests"]);
    assert_eq!(t.description_done, ["tests"]);
    assert_eq!(t.locks, ["cpu", "disk"]);
    assert_eq!(t.log_parser, LogParser::Test);
    assert_eq!(t.env["CFLAGS"], "-O2");
    assert_eq!(
        s[3].kind,
        StepKind::Shell {
            command: Command::Shell("ls | wc -l > n".into())
        }
    );
    assert_eq!(s[3].flags, StepFlags::SHELL);
}

#[test]
fn a_step_runs_through_the_shell_unless_argv_is_true() {
    let mut f = factory("shell", &[], vec![]);
    f.steps = vec![
        step("pipe", &[("command", "yes X | head -c 100")]),
        step("old", &[("command", "ls | wc -l"), ("shell", "true")]),
        step("words", &[("command", "echo 'a b' |"), ("argv", "true")]),
        step("oldwords", &[("command", "echo |"), ("shell", "false")]),
        step(
            "both",
            &[("command", "echo |"), ("shell", "false"), ("argv", "true")],
        ),
    ];
    let s = steps(&f);
    assert_eq!(script(&s[0]), "yes X | head -c 100");
    assert_eq!(script(&s[1]), "ls | wc -l");
    assert_eq!(argv(&s[2]), ["echo", "a b", "|"]);
    assert_eq!(argv(&s[3]), ["echo", "|"]);
    assert_eq!(argv(&s[4]), ["echo", "|"]);
    f.steps = vec![step(
        "x",
        &[("command", "echo"), ("shell", "true"), ("argv", "true")],
    )];
    let e = build_steps(&f, slave()).unwrap_err().to_string();
    assert!(e.contains("step.x.argv") && e.contains("keep one"), "{e}");
}

#[test]
fn shell_without_steps_or_with_a_clashing_name_fails() {
    let f = factory("shell", &[], vec![]);
    assert!(matches!(
        build_steps(&f, slave()),
        Err(FactoryError::NoSteps { .. })
    ));
    let mut f = factory("shell", &[], vec![git("/r/x")]);
    f.steps = vec![step("checkout", &[("command", "true")])];
    assert!(matches!(
        build_steps(&f, slave()),
        Err(FactoryError::DuplicateStep { .. })
    ));
    // A shell factory needs no source.
    let mut f = factory("shell", &[], vec![]);
    f.steps = vec![step("hi", &[("command", "echo hi")])];
    assert_eq!(names(&steps(&f)), ["hi"]);
}

#[test]
fn platform_reaches_every_step() {
    let mut f = factory("autotools", &[], vec![git("/r/hello")]);
    f.platform = true;
    let mac = "mac";
    let s = build_steps(&f, mac).unwrap();
    assert!(s
        .iter()
        .all(|s| s.env.get("PLATFORM").map(String::as_str) == Some("mac")));
    assert_eq!(build_properties(&f, mac)["platform"], "mac");
    f.platform = false;
    assert!(build_properties(&f, mac).is_empty());
    assert!(build_steps(&f, mac)
        .unwrap()
        .iter()
        .all(|s| !s.env.contains_key("PLATFORM")));
}

#[test]
fn unknown_type_lists_the_valid_ones() {
    let e = build_steps(&factory("nosuch", &[], vec![]), slave())
        .unwrap_err()
        .to_string();
    assert!(e.contains("autotools") && e.contains("shell"), "{e}");
}

#[test]
fn step_specs_serialize() {
    let s = steps(&factory("autotools", &[], vec![git("/r/hello")]));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json[0]["kind"]["kind"], "checkout");
    assert_eq!(json[0]["kind"]["source"]["kind"], "git");
    assert_eq!(json[1]["kind"]["command"]["shell"], "./configure");
    assert_eq!(json[1]["flags"]["halt_on_failure"], true);
}

#[test]
fn a_checkout_step_gives_its_checkout() {
    let s = Source {
        kind: SourceKind::Git,
        url: "/r/hello".into(),
        branch: "master".into(),
        branch_prefix: None,
    };
    let kind = StepKind::Checkout {
        source: s.clone(),
        mode: Mode::Copy,
        always_use_latest: true,
        retry: Some(Retry {
            delay: 3,
            repeats: 2,
        }),
        mirror: true,
    };
    let c = kind.checkout("build", Some("b"), Some("r")).unwrap();
    assert_eq!(
        (c.mode, c.always_use_latest, c.branch, c.revision),
        (Mode::Copy, true, Some("b"), Some("r"))
    );
    assert_eq!(
        c.plan().unwrap().retry,
        Some(Retry {
            delay: 3,
            repeats: 2
        })
    );
    let shell_kind = StepKind::Shell {
        command: Command::Argv(vec!["true".into()]),
    };
    assert!(matches!(
        shell_kind.checkout("build", None, None),
        Err(CheckoutError::NotACheckout)
    ));
}

fn with_steps(mut f: Owned, list: &[(&str, &[(&str, &str)])]) -> Owned {
    f.steps = list.iter().map(|(n, o)| step(n, o)).collect();
    f
}

#[test]
fn every_type_takes_steps_of_ones_own_after_its_steps_or_placed() {
    let f = with_steps(
        factory("autotools", &[], vec![git("/r/hello")]),
        &[
            ("lint", &[("command", "make lint")]),
            ("gen", &[("command", "./gen.sh"), ("before", "configure")]),
            (
                "show",
                &[("command", "cat config.log"), ("after", "configure")],
            ),
            ("show2", &[("command", "ls"), ("after", "configure")]),
            ("pre", &[("command", "true"), ("before", "gen")]),
            ("last", &[("command", "true"), ("after", "lint")]),
        ],
    );
    let s = steps(&f);
    assert_eq!(
        names(&s),
        [
            "checkout",
            "pre",
            "gen",
            "configure",
            "show",
            "show2",
            "compile",
            "test",
            "lint",
            "last"
        ]
    );
    let lint = s.iter().find(|s| s.name == "lint").unwrap();
    assert_eq!(script(lint), "make lint");
    assert_eq!(lint.workdir, "build");
    assert_eq!(lint.flags, StepFlags::SHELL);

    // Every type, and the default workdir is where the type's commands run.
    for ty in [
        "cpan",
        "distutils",
        "trial",
        "source",
        "virtualenv",
        "python-source",
    ] {
        let f = with_steps(
            factory(ty, &[], vec![git("/r/p")]),
            &[("mine", &[("command", "true"), ("after", "checkout")])],
        );
        let s = steps(&f);
        let i = names(&s).iter().position(|n| *n == "checkout").unwrap();
        assert_eq!(s[i + 1].name, "mine", "{ty}: {:?}", names(&s));
        let want = if ty.contains("virtualenv") || ty == "python-source" {
            "%(virtualenv)s/src/p"
        } else {
            "build"
        };
        assert_eq!(s[i + 1].workdir, want, "{ty}");
    }
}

#[test]
fn a_placement_naming_no_step_or_both_ways_is_an_error_on_its_option() {
    for (opts, key) in [
        (
            &[("command", "true"), ("after", "nosuch")][..],
            "step.x.after",
        ),
        (
            &[("command", "true"), ("before", "nosuch")][..],
            "step.x.before",
        ),
    ] {
        let f = with_steps(factory("cpan", &[], vec![git("/r/p")]), &[("x", opts)]);
        match build_steps(&f, slave()) {
            Err(FactoryError::BadValue {
                key: k, message, ..
            }) => {
                assert_eq!(k, key);
                assert!(
                    message.contains("\"nosuch\"") && message.contains("configure"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // Two steps placed by each other only: a circle.
    let f = with_steps(
        factory("cpan", &[], vec![git("/r/p")]),
        &[
            ("a", &[("command", "true"), ("after", "b")]),
            ("b", &[("command", "true"), ("after", "a")]),
        ],
    );
    assert!(matches!(
        build_steps(&f, slave()),
        Err(FactoryError::BadValue { .. })
    ));
    let f = with_steps(
        factory("cpan", &[], vec![git("/r/p")]),
        &[(
            "a",
            &[("command", "true"), ("after", "make"), ("before", "test")],
        )],
    );
    assert!(matches!(
        build_steps(&f, slave()),
        Err(FactoryError::BadValue { .. })
    ));
    // A name clashing with the type's own step.
    let f = with_steps(
        factory("cpan", &[], vec![git("/r/p")]),
        &[("test", &[("command", "true")])],
    );
    assert!(matches!(
        build_steps(&f, slave()),
        Err(FactoryError::DuplicateStep { .. })
    ));
}

#[test]
fn autotools_bootstrap_runs_before_configure() {
    let s = steps(&factory(
        "autotools",
        &[("bootstrap", "autoreconf -fi")],
        vec![git("/r/hello")],
    ));
    assert_eq!(
        names(&s),
        ["checkout", "bootstrap", "configure", "compile", "test"]
    );
    assert_eq!(script(&s[1]), "autoreconf -fi");
    assert_eq!(s[1].flags, StepFlags::HALT);
    assert_eq!(s[1].workdir, "build");
}

#[test]
fn python_types_install_packages_and_requirements_before_the_tests() {
    let params = [
        ("packages", "pytest 'mock>=4'"),
        ("requirements", "requirements/test.txt"),
        ("test", "%(python)s -m pytest"),
    ];
    let s = steps(&factory("virtualenv", &params, vec![git("/r/app")]));
    assert_eq!(
        &names(&s)[6..],
        ["checkout", "install-requirements", "test"]
    );
    assert_eq!(
        argv(&s[7]),
        [
            "%(python)s",
            "-m",
            "pip",
            "install",
            "-r",
            "requirements/test.txt",
            "pytest",
            "mock>=4"
        ]
    );
    assert_eq!(s[7].workdir, "%(virtualenv)s/src/app");
    assert_eq!(s[7].flags, StepFlags::HALT);
    assert_eq!(s[8].workdir, "%(virtualenv)s/src/app");

    let s = steps(&factory("python-source", &params, vec![git("/r/app")]));
    assert_eq!(
        &names(&s)[6..],
        ["checkout", "install-requirements", "install-app", "test"]
    );

    let s = steps(&factory("distutils", &params, vec![git("/r/app")]));
    assert_eq!(
        names(&s),
        [
            "checkout",
            "remove-pydeps",
            "install-requirements",
            "compile",
            "test"
        ]
    );
    assert_eq!(argv(&s[1]), ["rm", "-rf", "../pydeps"]);
    assert_eq!(
        &argv(&s[2])[..6],
        ["python3", "-m", "pip", "install", "--target", "../pydeps"]
    );
    assert_eq!(
        s[4].env.get("PYTHONPATH").map(String::as_str),
        Some("../pydeps")
    );

    let s = steps(&factory(
        "trial",
        &[("packages", "attrs"), ("tests", "pkg.test")],
        vec![git("/r/a"), git("/r/b")],
    ));
    let trial = s.iter().find(|s| s.name == "trial").unwrap();
    assert_eq!(
        trial.env.get("PYTHONPATH").map(String::as_str),
        Some(".:../../pydeps")
    );

    // requirements need a checkout; a path outside it is refused.
    for (params, sources) in [
        (
            vec![("requirements", "r.txt"), ("checkout", "false")],
            vec![git("/r/a")],
        ),
        (vec![("requirements", "/etc/r.txt")], vec![git("/r/a")]),
    ] {
        let f = factory("virtualenv", &params, sources);
        match build_steps(&f, slave()) {
            Err(FactoryError::BadValue { key, .. }) => assert_eq!(key, "requirements"),
            other => panic!("{other:?}"),
        }
    }
    // Without a checkout, packages install in the virtualenv itself.
    let s = steps(&factory(
        "virtualenv",
        &[("packages", "pytest"), ("checkout", "false")],
        vec![],
    ));
    assert_eq!(s.last().unwrap().workdir, "%(virtualenv)s");
}

#[test]
fn every_types_step_list_names_the_steps_it_makes() {
    let all = [
        ("bootstrap", "autoreconf -fi"),
        ("packages", "pytest"),
        ("requirements", "r.txt"),
        ("test", "make check"),
        ("tests", "pkg.test"),
    ];
    for t in schema::types().iter().filter(|t| t.name != "shell") {
        let params: Vec<(&str, &str)> = all
            .iter()
            .copied()
            .filter(|(k, _)| t.param(k).is_some())
            .collect();
        let s = steps(&factory(t.name, &params, vec![git("/r/p")]));
        let listed: Vec<&str> = t.steps.split([',', ' ']).collect();
        for n in names(&s) {
            let n = if n == "install-p" { "install-DIR" } else { n };
            assert!(listed.contains(&n), "{}: {n} not in {:?}", t.name, t.steps);
        }
    }
}

#[test]
fn warning_pattern_goes_to_compile_steps_and_shell_steps_that_ask() {
    let f = factory(
        "autotools",
        &[("warningPattern", "^WARN: ")],
        vec![git("/r/hello")],
    );
    let s = steps(&f);
    let patterns: Vec<(&str, Option<&str>)> = s
        .iter()
        .map(|s| (s.name.as_str(), s.warning_pattern.as_deref()))
        .collect();
    assert_eq!(
        patterns,
        [
            ("checkout", None),
            ("configure", None),
            ("compile", Some("^WARN: ")),
            ("test", None)
        ]
    );
    let bad = factory("distutils", &[("warningPattern", "(")], vec![git("/r/x")]);
    match build_steps(&bad, slave()) {
        Err(FactoryError::BadValue { key, message, .. }) => {
            assert_eq!(key, "warningPattern");
            assert!(
                message.contains("\"(\" is not a regular expression"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let mut f = factory("shell", &[("warningPattern", "^F")], vec![]);
    f.steps = vec![
        step(
            "lint",
            &[("command", "lint"), ("warningpattern", "^LINT: ")],
        ),
        step("cc", &[("command", "make"), ("logparser", "compile")]),
        step("plain", &[("command", "true"), ("warningpattern", "")]),
    ];
    let s = steps(&f);
    assert_eq!(s[0].warning_pattern.as_deref(), Some("^LINT: "));
    assert_eq!(s[0].log_parser, LogParser::None);
    assert_eq!(s[1].warning_pattern.as_deref(), Some("^F"));
    assert_eq!(s[2].warning_pattern, None);
    f.steps = vec![step(
        "lint",
        &[("command", "lint"), ("warningpattern", "[a-")],
    )];
    match build_steps(&f, slave()) {
        Err(FactoryError::BadValue { key, .. }) => assert_eq!(key, "step.lint.warningpattern"),
        other => panic!("{other:?}"),
    }
}

/// A shell factory with `params` and the steps `list`.
fn shell_with(params: &[(&str, &str)], list: &[(&str, &[(&str, &str)])]) -> Owned {
    with_steps(factory("shell", params, Vec::new()), list)
}

#[test]
fn transfer_steps_are_typed_and_their_paths_confined() {
    let f = shell_with(
        &[
            ("artifacts", "dist/*.tar.gz logs/*.txt"),
            ("maxArtifactSize", "10M"),
        ],
        &[
            ("up", &[("command", "dist/a.tar.gz"), ("type", "upload")]),
            (
                "up2",
                &[("command", "dist/a.tar.gz keep/a.tgz"), ("type", "Upload")],
            ),
            (
                "docs",
                &[
                    ("command", "doc/html"),
                    ("type", "upload-dir"),
                    ("haltonfailure", "true"),
                ],
            ),
            (
                "get",
                &[
                    ("command", "b/1/x.sh bin/x.sh"),
                    ("type", "download"),
                    ("mode", "0755"),
                ],
            ),
        ],
    );
    let s = steps(&f);
    assert_eq!(names(&s), ["up", "up2", "docs", "get", "artifacts"]);
    assert_eq!(
        s[0].kind,
        StepKind::Upload {
            src: "dist/a.tar.gz".into(),
            dest: "a.tar.gz".into()
        }
    );
    assert_eq!(
        s[1].kind,
        StepKind::Upload {
            src: "dist/a.tar.gz".into(),
            dest: "keep/a.tgz".into()
        }
    );
    assert_eq!(
        s[2].kind,
        StepKind::UploadDir {
            src: "doc/html".into(),
            dest: "html".into()
        }
    );
    assert!(s[2].flags.halt_on_failure);
    assert_eq!(
        s[3].kind,
        StepKind::Download {
            src: "b/1/x.sh".into(),
            dest: "bin/x.sh".into(),
            mode: Some(0o755)
        }
    );
    assert_eq!(
        s[4].kind,
        StepKind::Artifacts {
            globs: vec!["dist/*.tar.gz".into(), "logs/*.txt".into()]
        }
    );
    assert_eq!(s[4].workdir, DEFAULT_WORKDIR);

    let bad = |opts: &[(&str, &str)], params: &[(&str, &str)], key: &str, part: &str| {
        let f = shell_with(params, &[("t", opts)]);
        match build_steps(&f, slave()) {
            Err(FactoryError::BadValue {
                key: k, message, ..
            }) => {
                assert_eq!(k, key, "{message}");
                assert!(message.contains(part), "{message}");
            }
            other => panic!("{opts:?}: {other:?}"),
        }
    };
    let up = |cmd: &'static str| [("command", cmd), ("type", "upload")];
    bad(&up("../x"), &[], "step.t", "without `..`");
    bad(&up("/etc/passwd"), &[], "step.t", "relative path");
    bad(&up("a ../../b"), &[], "step.t", "without `..`");
    bad(&up("a b c"), &[], "step.t", "SLAVEPATH [ARTIFACTPATH]");
    bad(
        &[("command", "x"), ("type", "download")],
        &[],
        "step.t",
        "ARTIFACTPATH SLAVEPATH",
    );
    bad(
        &[("command", "x"), ("type", "copy")],
        &[],
        "step.t.type",
        "upload-dir",
    );
    bad(
        &[("command", "x"), ("type", "upload"), ("argv", "true")],
        &[],
        "step.t.argv",
        "runs none",
    );
    bad(
        &[("command", "x"), ("type", "upload"), ("env.A", "1")],
        &[],
        "step.t.env.A",
        "runs none",
    );
    bad(
        &[("command", "x"), ("type", "upload"), ("mode", "0755")],
        &[],
        "step.t.mode",
        "download",
    );
    bad(
        &[("command", "x"), ("mode", "0755")],
        &[],
        "step.t.mode",
        "download",
    );
    bad(
        &[("command", "x y"), ("type", "download"), ("mode", "9")],
        &[],
        "step.t.mode",
        "octal",
    );
    bad(
        &[("command", "true")],
        &[("artifacts", "../up")],
        "artifacts",
        "without `..`",
    );
    bad(
        &[("command", "true")],
        &[("maxArtifactSize", "big")],
        "maxArtifactSize",
        "K, M or G",
    );
}

#[test]
fn sizes_parse_with_suffixes() {
    assert_eq!(schema::parse_size("1048576"), Ok(1 << 20));
    assert_eq!(schema::parse_size("500M"), Ok(500 << 20));
    assert_eq!(schema::parse_size("2GiB"), Ok(2 << 30));
    assert_eq!(schema::parse_size(" 4kb "), Ok(4096));
    for bad in ["", "0", "-1", "1.5G", "M", "12Q", "99999999999999999999G"] {
        assert!(schema::parse_size(bad).is_err(), "{bad}");
    }
}
