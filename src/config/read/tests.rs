//! Unit tests of master.ini loading: defaults, inheritance, projects, sources and
//! steps. The error messages are tested through the binary in tests/config_errors.rs.

use super::*;

fn load_text(text: &str) -> Result<MasterConfig, ConfigError> {
    let projects = projects(None).unwrap();
    load_from_str(Path::new("/m/master.ini"), Path::new("/m"), text, &projects)
}

#[test]
fn empty_file_has_the_defaults() {
    let cfg = load_text("").unwrap();
    assert_eq!(
        (cfg.slaveport, cfg.htmlport, cfg.publichtmlport),
        (9010, 8010, 8011)
    );
    assert_eq!((cfg.poll_interval, cfg.tree_stable), (60, 60));
    assert!(cfg.allow_force && !cfg.debug);
    // No change credentials: submitted Changes are refused.
    assert_eq!(
        (cfg.changeuser.as_str(), cfg.changepassword.as_str()),
        ("", "")
    );
    assert!(!cfg.accepts_changes());
    assert!(cfg.slaves.is_empty() && cfg.factories.is_empty());
    let d = MasterConfig::default();
    assert_eq!((d.slaveport, d.poll_interval), (9010, 60));
    assert!(!d.accepts_changes());
}

#[test]
fn master_keys_are_case_insensitive_and_typed() {
    let cfg = load_text(
        "[:master:]\nSlavePort = 9100\npollInterval = 5\nTREESTABLE = 0\nallowForce = no\n\
         ircChannels = #a, #b\nrecipients = a@x b@y\nprojectName = P\ndebug = true\nchangeuser = u\n\
         changePassword = k3y\n",
    )
    .unwrap();
    assert_eq!((cfg.slaveport, cfg.htmlport), (9100, 8010));
    assert!(cfg.accepts_changes());
    assert_eq!((cfg.poll_interval, cfg.tree_stable), (5, 0));
    assert!(!cfg.allow_force && cfg.debug);
    assert_eq!(cfg.recipients, ["a@x", "b@y"]);
    assert_eq!(cfg.project_name, "P");
    assert_eq!(cfg.changeuser, "u");
}

#[test]
fn slaves_inherit_master_and_default() {
    let cfg = load_text(
        "[DEFAULT]\nos = mac\n[:master:]\npassword = secret\nfactories = *\nmax_builds = 2\n\
         [slave:a]\n[slave:b]\nos = win\nfactories = hello\npassword = other\n\
         [hello]\n[pyhello]\n",
    )
    .unwrap();
    let a = cfg.slave("a").unwrap();
    assert_eq!(a.password, "secret");
    assert_eq!(a.os, Os::Mac);
    assert_eq!(a.max_builds, 2);
    assert_eq!(a.factories, ["hello", "pyhello"]);
    let b = cfg.slave("b").unwrap();
    assert_eq!((b.password.as_str(), b.os), ("other", Os::Win));
    assert_eq!(b.factories, ["hello"]);
    let names: Vec<String> = cfg.builders().into_iter().map(|b| b.name).collect();
    assert_eq!(names, ["hello-a", "hello-b", "pyhello-a"]);
}

#[test]
fn a_project_section_starts_from_the_project() {
    let cfg = load_text("[hello]\n[pyhello]\nname = venv\n").unwrap();
    let h = cfg.factory("hello").unwrap();
    assert_eq!(h.type_name, "autotools");
    assert_eq!(h.project.as_deref(), Some("hello"));
    assert_eq!(h.sample.as_deref(), Some("hello"));
    assert_eq!(
        h.sources,
        [Source {
            kind: SourceKind::Git,
            url: "/m/repos/hello".into(),
            branch: "master".into(),
            branch_prefix: None,
        }]
    );
    assert!(h.description.contains("configure"));
    let p = cfg.factory("pyhello").unwrap();
    assert_eq!(p.params["name"], "venv");
    assert_eq!(p.params["test"], "%(python)s -m unittest discover -v");
}

#[test]
fn a_section_overrides_its_project() {
    let cfg = load_text("[hello]\ntype = source\ngit = https://x.org/h.git#dev ../up\n").unwrap();
    let h = cfg.factory("hello").unwrap();
    assert_eq!(h.type_name, "source");
    assert_eq!(h.sources[0].url, "https://x.org/h.git");
    assert_eq!(h.sources[0].branch, "dev");
    assert_eq!(h.sources[1].url, "/up");
}

#[test]
fn sources_split_on_the_last_hash_and_hg_comes_first() {
    let cfg = load_text("[f]\ntype = source\ngit = ./a#x\nhg = http://h/r ./b#stable\n").unwrap();
    let f = cfg.factory("f").unwrap();
    let got: Vec<(SourceKind, &str, &str)> = f
        .sources
        .iter()
        .map(|s| (s.kind, s.url.as_str(), s.branch.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (SourceKind::Hg, "http://h/r", "default"),
            (SourceKind::Hg, "/m/b", "stable"),
            (SourceKind::Git, "/m/a", "x"),
        ]
    );
    let v = Val {
        key: "git".into(),
        raw_key: "git".into(),
        value: "https://h/a#b#c".into(),
        path: "m.ini".into(),
        line: 1,
        section: "f".into(),
    };
    let s = parse_sources(&v, SourceKind::Git, Path::new("/m")).unwrap();
    assert_eq!(
        (s[0].url.as_str(), s[0].branch.as_str()),
        ("https://h/a#b", "c")
    );
}

#[test]
fn common_factory_keys_are_typed() {
    let cfg = load_text(
        "[lock:cpu]\nmaxCount = 2\nscope = slave\n[lock:db]\n\
         [up]\ntype = source\ngit = ./up\n\
         [f]\ntype = source\ngit = ./f\nplatform = yes\ncategory = c\nrevlink = http://r/%s\n\
         branches = main dev\nfiles = ^src/ \\.c$\nperiodic = 3600\nnightly = 0 3 * * 1-5\n\
         dependsOn = up\nlocks = cpu db\nmode = clobber\nalwaysUseLatest = true\nretry = 30 2\n\
         treeStable = 5\npollInterval = 10\n",
    )
    .unwrap();
    let f = cfg.factory("f").unwrap();
    assert!(f.platform && f.always_use_latest);
    assert_eq!(f.category, "c");
    assert_eq!(f.revlink, "http://r/%s");
    assert_eq!(f.branches, ["main", "dev"]);
    assert_eq!(f.files, ["^src/", "\\.c$"]);
    assert_eq!(f.periodic, Some(3600));
    assert_eq!(f.nightly.as_deref(), Some("0 3 * * 1-5"));
    assert_eq!(f.depends_on.as_deref(), Some("up"));
    assert_eq!(f.locks, ["cpu", "db"]);
    assert_eq!(f.mode, Mode::Clobber);
    assert_eq!(
        f.retry,
        Some(Retry {
            delay: 30,
            repeats: 2
        })
    );
    assert_eq!((f.tree_stable, f.poll_interval), (Some(5), Some(10)));
    assert!(f.params.is_empty());
    assert_eq!(
        cfg.lock("cpu"),
        Some(&LockConfig {
            name: "cpu".into(),
            scope: LockScope::Slave,
            max_count: 2
        })
    );
    assert_eq!(cfg.lock("db").unwrap().max_count, 1);
}

#[test]
fn shell_steps_keep_file_order_and_env_case() {
    let cfg = load_text(
        "[lock:l]\n[s]\ntype = shell\nstep.b.timeout = 5\nstep.B = make\nstep.a = make check\n\
         step.a.ENV.CFLAGS = -O2\nstep.a.haltOnFailure = true\nstep.a.locks = l\n",
    )
    .unwrap();
    let s = cfg.factory("s").unwrap();
    let names: Vec<&str> = s.steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(s.steps[0].1["command"], "make");
    assert_eq!(s.steps[0].1["timeout"], "5");
    assert_eq!(s.steps[1].1["env.CFLAGS"], "-O2");
    assert_eq!(s.steps[1].1["haltonfailure"], "true");
    let steps = factory::build_steps(&s.recipe(), SlaveConfig::default().os.as_str()).unwrap();
    assert_eq!(steps[1].env["CFLAGS"], "-O2");
    assert!(steps[1].flags.halt_on_failure);
}

#[test]
fn default_keys_reach_only_sections_that_accept_them() {
    let cfg = load_text(
        "[DEFAULT]\npassword = pw\ncategory = nightly\ncompile = make -j2\n\
         [slave:s]\nfactories = *\n[a]\ntype = autotools\ngit = ./a\n[b]\ntype = source\ngit = ./b\n",
    )
    .unwrap();
    assert_eq!(cfg.slave("s").unwrap().password, "pw");
    assert_eq!(cfg.factory("a").unwrap().params["compile"], "make -j2");
    assert_eq!(cfg.factory("a").unwrap().category, "nightly");
    assert!(cfg.factory("b").unwrap().params.is_empty());
}

#[test]
fn users_keep_their_case() {
    let cfg = load_text("[users]\nAlice = pw1\nbob = pw2\n").unwrap();
    assert_eq!(cfg.users["Alice"], "pw1");
    assert_eq!(cfg.users.len(), 2);
}

#[test]
fn summary_lists_slaves_factories_and_builders() {
    let cfg = load_text(
        "[:master:]\npassword = pw\n[slave:s1]\nfactories = hello\n[hello]\n[extra]\ntype = source\ngit = ./e\n",
    )
    .unwrap();
    let s = summary(&cfg);
    assert!(
        s.contains("slaves (1):\n  s1  os=linux  max_builds=1  factories: hello\n"),
        "{s}"
    );
    assert!(
        s.contains("  hello  type=autotools  git /m/repos/hello#master  (project hello)\n"),
        "{s}"
    );
    assert!(
        s.contains("  extra  type=source  git /m/e#master  (no slave runs this factory)\n"),
        "{s}"
    );
    assert!(s.contains("builders (1):\n  hello-s1\n"), "{s}");
    assert!(
        !s.contains("pw"),
        "the summary must not show passwords: {s}"
    );
}

/// Where the warnings of `text` point: (line, context) pairs.
fn warned(text: &str) -> Vec<(usize, String, String)> {
    load_text(text)
        .unwrap()
        .warnings
        .into_iter()
        .map(|w| (w.line, w.context, w.message))
        .collect()
}

#[test]
fn documented_secrets_are_warned_about_where_they_are_written() {
    let w = warned(
        "[:master:]\nallowForce = false\nchangeuser = change\nchangepassword = changepw\n\
         password = passwd\nfactories = *\ngithub_secret = Secret\n\
         [slave:a]\n[slave:b]\n[slave:c]\npassword = sekrit\n[slave:d]\npassword = Fq7xWm2pZr\n\
         [users]\nadmin = change-me\nbob = 8TtqPz3Lkc\n[hello]\n",
    );
    let at: Vec<(usize, &str)> = w.iter().map(|(l, c, _)| (*l, c.as_str())).collect();
    assert_eq!(
        at,
        [
            (4, "[:master:] changepassword: "),
            (5, "[:master:] password: "),
            (7, "[:master:] github_secret: "),
            (11, "[slave:c] password: "),
            (15, "[users] admin: "),
        ]
    );
    // One warning for a password several slaves inherit, naming them.
    assert!(w[1].2.contains("as slaves a, b and"), "{}", w[1].2);
    assert!(w[3].2.contains("as slave c and"), "{}", w[3].2);
    assert!(
        w[0].2.contains("printed in the documentation"),
        "{}",
        w[0].2
    );
    assert!(w[0].2.contains("sendchange --auth"), "{}", w[0].2);
    assert!(w.iter().all(|(_, _, m)| m.contains("/dev/urandom")));
}

#[test]
fn force_open_to_anyone_is_warned_about() {
    // allowForce defaults to true: the warning points at [:master:].
    let w = warned("; c\n[:master:]\nhtmlport = 8100\n");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((w[0].0, w[0].1.as_str()), (2, "[:master:]: "));
    assert!(w[0].2.contains("htmlport 8100 lets anyone"), "{}", w[0].2);
    assert!(w[0].2.contains("[users]") && w[0].2.contains("allowForce = false"));
    // Written: the warning points at the key.
    let w = warned("[:master:]\nhtmlport = 8100\nallowForce = yes\n");
    assert_eq!((w[0].0, w[0].1.as_str()), (3, "[:master:] allowForce: "));
    // No [:master:] at all: line 1.
    assert_eq!(warned("")[0].0, 1);
    // Users, or no force: no warning.
    assert!(warned("[users]\nann = 8TtqPz3Lkc\n").is_empty());
    assert!(warned("[:master:]\nallowForce = false\n").is_empty());
}

/// Every secret the shipped example shows is one the warnings know.
#[test]
fn every_secret_in_master_ini_example_is_warned_about() {
    let text = include_str!("../../../master.ini.example");
    let cfg = load_text(text).unwrap();
    let lines: Vec<usize> = cfg.warnings.iter().map(|w| w.line).collect();
    for (i, line) in text.lines().enumerate() {
        let key = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let secret = ["password", "changepassword", "admin"].contains(&key.as_str())
            || key.ends_with("_secret");
        let value = line.split_once('=').map_or("", |(_, v)| v.trim());
        if secret && !value.is_empty() {
            assert!(
                lines.contains(&(i + 1)),
                "line {} ({line}) gets no warning: {:?}",
                i + 1,
                cfg.warnings
            );
        }
    }
}

/// Every `password = VALUE` the README and the slave.ini documentation show is
/// one the warnings know.
#[test]
fn every_password_in_the_docs_is_known_as_documented() {
    for text in [
        include_str!("../../../README.md"),
        include_str!("../slave.rs"),
        include_str!("../../../master.ini.example"),
    ] {
        for line in text.lines() {
            let line = line.trim_start_matches("//!").trim();
            let Some(rest) = line
                .strip_prefix("password = ")
                .or_else(|| line.strip_prefix("changepassword = "))
            else {
                continue;
            };
            let value = rest.split_whitespace().next().unwrap_or("");
            if value.contains('{') {
                continue; // a format string, not an example
            }
            assert!(
                secrets::is_documented(value),
                "{value:?} (from {line:?}) is not in the documented secrets"
            );
        }
    }
}

#[test]
fn change_credentials_come_in_pairs() {
    for (text, line, what) in [
        (
            "[:master:]\nchangeuser = u\n",
            2,
            "changeuser without changepassword",
        ),
        (
            "[:master:]\nchangepassword = p\n",
            2,
            "changepassword without changeuser",
        ),
        (
            "[:master:]\nchangeuser =\nchangepassword = p\n",
            2,
            "no value",
        ),
        (
            "[:master:]\nchangeuser = u\nchangepassword =\n",
            3,
            "no value",
        ),
    ] {
        let e = load_text(text).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("/m/master.ini:{line}: [:master:] change")) && e.contains(what),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn numbers_are_digits_only_and_never_empty() {
    for (text, want) in [
        ("[:master:]\nslaveport = +9010\n", "2: [:master:] slaveport: expected a TCP port number from 1 to 65535 (digits only, no sign), got \"+9010\""),
        ("[:master:]\nslaveport =\n", "2: [:master:] slaveport: no value; write a TCP port number"),
        ("[:master:]\nhtmlport = 65536\n", "2: [:master:] htmlport: expected a TCP port number"),
        ("[:master:]\npollInterval = +5\n", "2: [:master:] pollInterval: expected a whole number >= 1 (digits only, no sign)"),
        ("[:master:]\ntreeStable =\n", "2: [:master:] treeStable: no value; write a whole number >= 0"),
        ("[:master:]\nkeepaliveInterval = -1\n", "2: [:master:] keepaliveInterval: expected a whole number"),
        ("[:master:]\nallowForce =\n", "2: [:master:] allowForce: no value; write true or false"),
        ("[:master:]\ndebug =\n", "2: [:master:] debug: no value"),
        ("[:master:]\nmax_builds =\n[slave:a]\npassword = x\n", "2: [:master:] max_builds: no value"),
        ("[slave:a]\npassword = x\nmax_builds = +2\n", "3: [slave:a] max_builds: expected a whole number >= 1"),
        ("[lock:l]\nmaxCount = +2\n", "2: [lock:l] maxCount: expected a whole number >= 1"),
        ("[lock:l]\nmaxCount =\n", "2: [lock:l] maxCount: no value"),
        ("[f]\ntype = source\ngit = ./f\nperiodic = +60\n", "4: [f] periodic: expected a whole number >= 1 (digits only, no sign)"),
        ("[f]\ntype = source\ngit = ./f\ntreeStable =\n", "4: [f] treeStable: expected a whole number >= 0"),
        ("[f]\ntype = source\ngit = ./f\nretry = +1 2\n", "4: [f] retry: expected `DELAY REPEATS`"),
        ("[f]\ntype = source\ngit = ./f\nnightly = +0 3 * * *\n", "4: [f] nightly: cron minute field"),
        ("[f]\ntype = shell\nstep.a = make\nstep.a.timeout = +5\n", "4: [f] step.a.timeout: expected a whole number"),
    ] {
        let e = load_text(text).unwrap_err().to_string();
        assert!(e.starts_with(&format!("/m/master.ini:{want}")), "{text:?}: {e}");
    }
}

#[test]
fn a_file_that_empties_a_running_master_is_not_a_replacement() {
    let old = load_text("[:master:]\npassword = x\nfactories = *\n[slave:a]\n[hello]\n").unwrap();
    let empty = load_text("; nothing left\n").unwrap();
    let e = check_replacement(&old, &empty).unwrap_err().to_string();
    assert!(
        e.starts_with("/m/master.ini: defines no slaves and no factories, but the running configuration has 1 slave(s) and 1 factory section(s)"),
        "{e}"
    );
    // Only slaves, or only factories, or an empty master becoming something: fine.
    let only_factory = load_text("[hello]\n").unwrap();
    check_replacement(&old, &only_factory).unwrap();
    check_replacement(&empty, &old).unwrap();
    check_replacement(&empty, &empty).unwrap();
}

#[test]
fn summary_says_whether_changes_are_accepted() {
    let off = summary(&load_text("").unwrap());
    assert!(off.contains("submitted Changes: refused"), "{off}");
    let on = summary(&load_text("[:master:]\nchangeuser = hk\nchangepassword = s3\n").unwrap());
    assert!(on.contains("accepted from changeuser hk"), "{on}");
    assert!(!on.contains("s3"), "{on}");
}

/// The documented spellings of the `[:master:]` keys are the same keys, so a
/// "did you mean" hint always names one that is accepted.
#[test]
fn documented_master_keys_are_the_accepted_ones() {
    let documented: Vec<String> = super::MASTER_KEYS_DOCUMENTED
        .iter()
        .map(|k| k.to_ascii_lowercase())
        .collect();
    assert_eq!(documented, super::MASTER_KEYS);
    let documented: Vec<String> = super::MAIL_KEYS_DOCUMENTED
        .iter()
        .map(|k| k.to_ascii_lowercase())
        .collect();
    let mail: Vec<&str> = super::mail::MASTER_MAIL_KEYS
        .iter()
        .chain(super::mail::SLAVE_MAIL_KEYS)
        .copied()
        .collect();
    assert_eq!(documented, mail);
}

#[test]
fn log_rotation_keys_are_read() {
    let cfg = load_text("[:master:]\nlogSize = 5000\nlogCount = 3\n").unwrap();
    assert_eq!((cfg.log.size, cfg.log.count), (5000, 3));
    let cfg = load_text("[:master:]\n").unwrap();
    assert_eq!(cfg.log, super::LogRotation::default());
    let err = load_text("[:master:]\nlogCount = 0\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("logcount") || err.contains("logCount"),
        "{err}"
    );
}

#[test]
fn retention_keys_are_read_and_checked() {
    let cfg = load_text(
        "[:master:]\nlogHorizon = 30\nbuildHorizon = 0.5\nchangeHorizon = none\nlogCompression = zstd\n",
    )
    .unwrap();
    let r = cfg.retention;
    assert_eq!(
        (r.log_horizon, r.build_horizon, r.change_horizon),
        (Some(30.0), Some(0.5), None)
    );
    assert_eq!(r.log_compression, super::LogCompression::Zstd);
    assert!(super::summary(&cfg).contains("logHorizon 30 days, buildHorizon 0.5 days"));
    let cfg = load_text("[:master:]\n").unwrap();
    assert_eq!(cfg.retention, super::Retention::default());
    assert!(!cfg.retention.is_active());
    for bad in [
        "logHorizon = -1",
        "buildHorizon = 0",
        "changeHorizon = soon",
        "logHorizon = nan",
        "logCompression = gzip",
    ] {
        let err = load_text(&format!("[:master:]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        let key = bad.split(' ').next().unwrap();
        assert!(err.contains(":2:") && err.contains(key), "{bad}: {err}");
    }
}

#[test]
fn ports_take_an_address() {
    let cfg = load_text(
        "[:master:]\nslaveport = 0.0.0.0:9100\nhtmlport = 127.0.0.1:8100\npublichtmlport = [::1]:8101\n",
    )
    .unwrap();
    assert_eq!(
        (cfg.slaveport, cfg.htmlport, cfg.publichtmlport),
        (9100, 8100, 8101)
    );
    assert_eq!(cfg.html_listen().to_string(), "127.0.0.1:8100");
    assert_eq!(cfg.public_listen().to_string(), "[::1]:8101");
    assert_eq!(cfg.slave_listen().connect_host_text(), "127.0.0.1");
    assert_eq!(cfg.public_listen().connect_host_text(), "[::1]");
    // A loopback htmlport: only this machine can force, so no open-force warning.
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let cfg = load_text("[:master:]\nhtmlport = localhost:8100\n").unwrap();
    assert_eq!(cfg.html_listen().to_string(), "127.0.0.1:8100");
    // A bare port: every interface, as before.
    let cfg = load_text("[:master:]\nhtmlport = 8100\n").unwrap();
    assert_eq!(
        (cfg.htmlport_addr, cfg.html_listen().bind_addr().to_string()),
        (None, "0.0.0.0:8100".to_string())
    );
    assert!(cfg
        .warnings
        .iter()
        .any(|w| w.message.contains("lets anyone")));
    let cfg = load_text("[:master:]\nhtmlport = 192.0.2.1:8100\n").unwrap();
    assert!(cfg
        .warnings
        .iter()
        .any(|w| w.message.contains("lets anyone")));
}

#[test]
fn a_bad_address_says_how_to_write_one() {
    for (text, want) in [
        ("[:master:]\nhtmlport = example.org:8010\n", "2: [:master:] htmlport: \"example.org\" is not an IP address or `localhost`"),
        ("[:master:]\nhtmlport = ::1:8010\n", "2: [:master:] htmlport: \"::1:8010\": an IPv6 address needs brackets"),
        ("[:master:]\n\nslaveport = [::1:9010\n", "3: [:master:] slaveport: \"[::1:9010\" opens `[` without closing it"),
        ("[:master:]\npublichtmlport = 127.0.0.1:x\n", "2: [:master:] publichtmlport: expected a TCP port number from 1 to 65535 (digits only, no sign), got \"x\""),
        ("[:master:]\nhtmlport = 300.0.0.1:8010\n", "2: [:master:] htmlport: \"300.0.0.1\" is not an IP address"),
    ] {
        let e = load_text(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(e.contains("`127.0.0.1:8010`, `[::1]:8010` or `localhost:8010`"), "{e}");
    }
}

/// `[try]`: users inline or from a file, builders checked against the builders,
/// maxPatchSize capped; every error names file, line and key.
#[test]
fn try_section_is_read_and_checked() {
    let base = "[:master:]\npassword = pw\nfactories = *\n[slave:s1]\n[hello]\n";
    let cfg = load_text(&format!("{base}[try]\nusers = ann:pw1 bob:pw2\n")).unwrap();
    let t = cfg.try_jobs.clone().unwrap();
    assert_eq!(t.users.len(), 2);
    assert_eq!(t.max_patch_size, 10 << 20);
    assert!(t.builders.is_empty());
    assert!(summary(&cfg).contains("try jobs: from ann bob on every builder"));
    assert!(load_text(base).unwrap().try_jobs.is_none());
    let err = |text: &str| {
        load_text(&format!("{base}[try]\n{text}"))
            .unwrap_err()
            .to_string()
    };
    let e = err("users = ann:pw1\nbuilders = hello-s1 nope\n");
    assert!(
        e.contains("[try] builders") && e.contains("no builder named \"nope\""),
        "{e}"
    );
    let e = err("users = ann\n");
    assert!(
        e.contains("[try] users") && e.contains("not NAME:PASSWORD"),
        "{e}"
    );
    let e = err("builders = hello-s1\n");
    assert!(e.contains("no users"), "{e}");
    let e = err("users = ann:pw\nmaxPatchSize = 99999999\n");
    assert!(
        e.contains("maxPatchSize") || e.contains("maxpatchsize"),
        "{e}"
    );
    let e = err("users = ann:pw\nusres = x\n");
    assert!(e.contains("unknown key in [try]"), "{e}");
    let ok = load_text(&format!(
        "{base}[try]\nusers = ann:pw\nbuilders = hello-s1\nmaxPatchSize = 1000\n"
    ))
    .unwrap();
    let t = ok.try_jobs.unwrap();
    assert_eq!((t.builders.len(), t.max_patch_size), (1, 1000));
}

#[test]
fn shared_dir_must_exist_and_stays_until_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let projects = projects(None).unwrap();
    let load = |text: &str| load_from_str(&base.join("master.ini"), base, text, &projects);
    let plain = load("[:master:]\n").unwrap();
    assert_eq!(plain.data_dir(), base);
    let e = load("[:master:]\nsharedDir = nowhere\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(":2:") && e.contains("sharedDir") && e.contains("no directory"),
        "{e}"
    );
    std::fs::create_dir(base.join("shared")).unwrap();
    let shared = load("[:master:]\nsharedDir = shared\n").unwrap();
    assert_eq!(shared.data_dir(), base.join("shared"));
    // A reconfig cannot move the logs of running Builds.
    let e = check_replacement(&plain, &shared).unwrap_err().to_string();
    assert!(e.contains("sharedDir") && e.contains("restart"), "{e}");
    check_replacement(&shared, &shared).unwrap();
}
