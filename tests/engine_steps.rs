//! The build engine against a real autobot slave with `shell` factories: step
//! results and the Buildbot 0.7 flag rules (haltOnFailure stops the build,
//! flunkOnFailure vs warnOnFailure), properties and `%(name)s` interpolation
//! reaching the slave as data (single argv elements, or quoted expansions in the
//! `/bin/sh -c` scripts a command string now runs as), pipelines in a command
//! string against `|` as an argument of an argv step, and a 1 MB step output
//! stored intact.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::time::Duration;

use autobot::engine::{EngineEvent, ForceRequest};
use engine_common::*;

const FACTORIES: &str = r#"
[flags]
type = shell
step.hello = sh -c "echo hello; echo oops >&2"
step.flunk = false
step.warn = false
step.warn.flunkOnFailure = false
step.warn.warnOnFailure = true
step.after = echo still running

[halt]
type = shell
step.one = true
step.two = false
step.two.haltOnFailure = true
step.three = touch never

[warn]
type = shell
step.tests = sh -c "echo '==== 2 passed, 1 failed in 0.12s ===='; exit 1"
step.tests.flunkOnFailure = false
step.tests.warnOnFailure = true
step.tests.logParser = test

[props]
type = shell
step.args = sh -c 'for a; do echo "[$a]"; done' argv0 %(branch)s %(revision)s %(buildername)s %(buildnumber)s %(slavename)s %(got_revision)s %(custom)s
step.args.env.FROM_PROP = <%(custom)s>
step.env = sh -c 'echo "env=$FROM_PROP"'
step.env.env.FROM_PROP = <%(custom)s>
step.wd = pwd
step.wd.workdir = sub-%(buildnumber)s

[big]
type = shell
step.seq = seq 1 150000
"#;

fn force(reason: &str) -> ForceRequest {
    ForceRequest {
        reason: reason.into(),
        who: Some("tester".into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_halt_properties_and_big_logs() {
    let m = EngineMaster::start(&master_ini(FACTORIES, ""), Duration::from_secs(30)).await;
    let mut events = m.engine().subscribe();
    let _slave = m.slave().await;

    // Unknown builder: the error lists the builders.
    let err = m
        .engine()
        .force("nope", force("x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("flags-s1") && err.contains("halt-s1"), "{err}");

    // flunkOnFailure makes the build FAILURE but it goes on; warnOnFailure only warns.
    let r = m.force("flags-s1", force("flags")).await;
    let req = m.wait_request(r).await;
    assert_eq!(req.result.as_deref(), Some("failure"));
    assert_eq!(req.builds, vec![1]);
    let b = m.build("flags-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("failure"));
    assert_eq!(b.build.reason, "forced by tester: flags");
    let results: Vec<(&str, Option<&str>)> = b
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.result.as_deref()))
        .collect();
    assert_eq!(
        results,
        vec![
            ("hello", Some("success")),
            ("flunk", Some("failure")),
            ("warn", Some("failure")),
            ("after", Some("success")),
        ]
    );
    assert!(b.build.text.contains("flunk"), "{}", b.build.text);
    assert!(b
        .steps
        .iter()
        .all(|s| s.finished_at.unwrap() >= s.started_at.unwrap()));
    let log = m.log_text("flags-s1", 1, "hello").await;
    assert!(log.contains("hello\n") && log.contains("oops\n"), "{log}");
    // Channels are kept beside the raw bytes.
    let f = m
        .master
        .db()
        .log_file("flags-s1", 1, "hello", "stdio")
        .await
        .unwrap()
        .unwrap();
    let runs = autobot::logstore::read_channel_runs(&f.path).unwrap();
    assert!(
        runs.iter()
            .any(|(_, c)| *c == autobot::logstore::Channel::Stderr),
        "{runs:?}"
    );
    assert_eq!(f.size, std::fs::metadata(&f.path).unwrap().len());
    assert!(f.complete);

    // haltOnFailure: the build stops at once as FAILURE.
    let r = m.force("halt-s1", force("halt")).await;
    assert_eq!(m.wait_request(r).await.result.as_deref(), Some("failure"));
    let b = m.build("halt-s1", 1).await;
    assert_eq!(b.steps.len(), 2, "{:?}", b.steps);
    assert_eq!(b.build.total_steps, 3);
    assert_eq!(b.steps[1].result.as_deref(), Some("failure"));

    // warnOnFailure alone: WARNINGS, with the test counts in the step text.
    let r = m.force("warn-s1", force("warn")).await;
    assert_eq!(m.wait_request(r).await.result.as_deref(), Some("warnings"));
    let b = m.build("warn-s1", 1).await;
    assert!(b.steps[0].text.contains("1 failed"), "{}", b.steps[0].text);

    // Properties and interpolation: each value is one argv element, never re-parsed.
    let mut props = BTreeMap::new();
    props.insert("custom".to_string(), "a b $(touch pwned) ;".to_string());
    let r = m
        .force(
            "props-s1",
            ForceRequest {
                reason: "props".into(),
                branch: Some("feature x".into()),
                revision: Some("abc def".into()),
                who: None,
                properties: props,
            },
        )
        .await;
    assert_eq!(m.wait_request(r).await.result.as_deref(), Some("success"));
    let log = m.log_text("props-s1", 1, "args").await;
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(
        lines,
        vec![
            "[feature x]",
            "[abc def]",
            "[props-s1]",
            "[1]",
            "[s1]",
            "[]",
            "[a b $(touch pwned) ;]"
        ],
        "{log}"
    );
    let log = m.log_text("props-s1", 1, "env").await;
    assert!(log.contains("env=<a b $(touch pwned) ;>"), "{log}");
    let log = m.log_text("props-s1", 1, "wd").await;
    assert!(log.contains("/props-s1/sub-1\n"), "{log}");
    let b = m.build("props-s1", 1).await;
    assert_eq!(b.properties["branch"].0, "feature x");
    assert_eq!(b.properties["custom"].1, "BuildSet");
    assert_eq!(b.properties["slavename"].0, "s1");
    assert_eq!(b.branch.as_deref(), Some("feature x"));
    assert!(!m.dir.path().join("slave/props-s1/build/pwned").exists());

    // A 1 MB output is stored intact in the log file.
    let r = m.force("big-s1", force("big")).await;
    assert_eq!(m.wait_request(r).await.result.as_deref(), Some("success"));
    let f = m
        .master
        .db()
        .log_file("big-s1", 1, "seq", "stdio")
        .await
        .unwrap()
        .unwrap();
    let expected = std::process::Command::new("seq")
        .args(["1", "150000"])
        .output()
        .unwrap()
        .stdout;
    let stored = std::fs::read(&f.path).unwrap();
    let body_start = stored
        .windows(3)
        .position(|w| w == b"\n1\n")
        .map(|p| p + 1)
        .unwrap_or(0);
    assert_eq!(
        &stored[body_start..body_start + expected.len()],
        &expected[..]
    );
    assert!(f.lines >= 150000, "{}", f.lines);
    assert_eq!(f.size, stored.len() as u64);

    // Builds of a builder, newest first; the builder's activity.
    let r = m.force("big-s1", force("again")).await;
    m.wait_request(r).await;
    let list = m.master.db().builds("big-s1", 10, None).await.unwrap();
    assert_eq!(
        list.iter().map(|b| b.number).collect::<Vec<_>>(),
        vec![2, 1]
    );
    let act = m
        .master
        .db()
        .builder_activity(vec!["big-s1".into()])
        .await
        .unwrap();
    assert_eq!(act[0].last_build.as_ref().unwrap().number, 2);
    assert!(act[0].running.is_empty());
    assert_eq!(act[0].pending, 0);

    // The events told the story in order.
    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let EngineEvent::BuildFinished {
            builder, number, ..
        } = &ev
        {
            seen.push((builder.clone(), *number));
        }
    }
    assert!(seen.contains(&("flags-s1".to_string(), 1)), "{seen:?}");
}

/// A command string runs through `/bin/sh -c` by default (a pipeline works), an
/// argv step passes `|` literally, and a property is data in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_string_runs_through_the_shell_and_an_argv_step_does_not() {
    let m = EngineMaster::start(&master_ini(PIPES, ""), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let pwned = m.dir.path().join("pwned");
    check_pipes(&m, "pipes-s1", &pwned).await;
    m.master.shutdown().await;
}

/// A command that prints a line and then goes quiet: the line reaches the log file
/// (where the pages and the API read it) while the command still runs, not only when
/// more output or its end arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_commands_last_line_reaches_the_log_while_it_runs() {
    let ini = master_ini(
        "[quiet]\ntype = shell\nstep.wait = sh -c \"echo first-line; sleep 300\"\n",
        "",
    );
    let m = EngineMaster::start(&ini, Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let r = m.force("quiet-s1", force("quiet")).await;
    let db = m.master.db().clone();
    wait_until("the first line in the log", || {
        let db = db.clone();
        async move {
            match db.log_file("quiet-s1", 1, "wait", "stdio").await {
                Ok(Some(f)) => std::fs::read_to_string(&f.path)
                    .unwrap_or_default()
                    .contains("first-line"),
                _ => false,
            }
        }
    })
    .await;
    let row = m.master.db().build("quiet-s1", 1).await.unwrap().unwrap();
    assert!(row.build.finished_at.is_none(), "still running");
    m.engine()
        .stop_build("quiet-s1", 1, "tester", "done")
        .await
        .unwrap();
    m.wait_request(r).await;
}

/// The injections found in issue 18, each on a real autobot slave, run by the real
/// `/bin/sh` (a command string's default) and by bash: a value inside `"$(… %(x)s)"`,
/// inside the script of a nested `sh -c "…"` / `bash -c "…"` / `sh -c '…'`, and
/// inside `$(( … ))`. The file the value would write is never made, the value
/// arrives verbatim where it is data, and arithmetic refuses it, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_never_become_shell_code() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    support::git(&repo, &["init", "-q", "-b", "main"]);
    support::write_file(&repo, "a.txt", "a\n");
    support::git(&repo, &["add", "a.txt"]);
    support::git(&repo, &["commit", "-q", "-m", "first"]);
    let factories = format!(
        r#"
[inject]
type = shell
git = {repo}#main
step.gitlog = echo "log: $(git log -1 --format=%%s %(rev)s 2>&1)"
step.gitlog.shell = true
step.nested = sh -c "echo nested: %(foo)s"
step.nested.shell = true
step.nestedbash = bash -c "echo nested-bash: %(foo)s"
step.nestedsq = sh -c 'echo nested-sq: %(foo)s'
step.propenv = sh -c 'echo "prop-env: $AUTOBOT_PROP_foo"'

[arith]
type = shell
step.sh = echo "sum: $(( %(n)s + 1 ))"
step.sh.shell = true
step.bash = bash -c 'echo "bash-sum: $(( %(n)s + 2 ))"'
"#,
        repo = repo.display()
    );
    let m = EngineMaster::start(&master_ini(&factories, ""), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let pwned = m.dir.path().join("pwned");
    let p = pwned.display().to_string();
    let rev = format!("HEAD --output={p}");
    let foo = format!("x; id > {p}; echo $(id > {p}) `id > {p}` '\"");
    let mut props = BTreeMap::new();
    props.insert("rev".to_string(), rev.clone());
    props.insert("foo".to_string(), foo.clone());
    let r = m
        .force(
            "inject-s1",
            ForceRequest {
                reason: "attack".into(),
                properties: props,
                ..Default::default()
            },
        )
        .await;
    let req = m.wait_request(r).await;
    let b = m.build("inject-s1", 1).await;
    let results: Vec<(&str, Option<&str>)> = b
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.result.as_deref()))
        .collect();
    assert_eq!(req.result.as_deref(), Some("success"), "{results:?}");
    // git got the value as one argument: a revision it does not know.
    let log = m.log_text("inject-s1", 1, "gitlog").await;
    assert!(
        log.contains(&format!("ambiguous argument '{rev}'")),
        "{log}"
    );
    for (step, label) in [
        ("nested", "nested"),
        ("nestedbash", "nested-bash"),
        ("nestedsq", "nested-sq"),
        ("propenv", "prop-env"),
    ] {
        let log = m.log_text("inject-s1", 1, step).await;
        assert!(log.contains(&format!("{label}: {foo}\n")), "{step}: {log}");
    }
    assert!(!pwned.exists(), "a value ran as shell code");

    // Arithmetic takes an integer...
    let force_n = |n: &str| {
        let mut props = BTreeMap::new();
        props.insert("n".to_string(), n.to_string());
        ForceRequest {
            reason: format!("n={n}"),
            properties: props,
            ..Default::default()
        }
    };
    let r = m.force("arith-s1", force_n("41")).await;
    assert_eq!(m.wait_request(r).await.result.as_deref(), Some("success"));
    assert!(m.log_text("arith-s1", 1, "sh").await.contains("sum: 42\n"));
    assert!(m
        .log_text("arith-s1", 1, "bash")
        .await
        .contains("bash-sum: 43\n"));
    // ...and nothing else: `a[$(cmd)]` is code to bash's arithmetic.
    let evil = format!("a[$(id > {p})]");
    let r = m.force("arith-s1", force_n(&evil)).await;
    assert_eq!(m.wait_request(r).await.result.as_deref(), Some("exception"));
    let b = m.build("arith-s1", 2).await;
    let step = &b.steps[0];
    assert_eq!(step.result.as_deref(), Some("exception"));
    assert!(
        step.text.contains("\"n\"") && step.text.contains("integer"),
        "{}",
        step.text
    );
    let log = m.log_text("arith-s1", 2, "sh").await;
    assert!(
        log.contains("\"n\"") && log.contains("not a plain decimal integer"),
        "{log}"
    );
    assert!(!pwned.exists(), "a value ran as shell code");
    m.master.shutdown().await;
}
