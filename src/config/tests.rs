//! Unit tests of master.ini loading: defaults, inheritance, projects, sources and
//! steps. The error messages are tested through the binary in tests/config_errors.rs.

use super::*;

fn load_text(text: &str) -> Result<MasterConfig, ConfigError> {
    let projects = factory::projects(None).unwrap();
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
    assert_eq!(
        (cfg.changeuser.as_str(), cfg.changepassword.as_str()),
        ("change", "changepw")
    );
    assert!(cfg.slaves.is_empty() && cfg.factories.is_empty());
    let d = MasterConfig::default();
    assert_eq!((d.slaveport, d.poll_interval), (9010, 60));
}

#[test]
fn master_keys_are_case_insensitive_and_typed() {
    let cfg = load_text(
        "[:master:]\nSlavePort = 9100\nhtmlport=\npollInterval = 5\nTREESTABLE = 0\nallowForce = no\n\
         ircChannels = #a, #b\nrecipients = a@x b@y\nprojectName = P\ndebug = true\nchangeuser = u\n",
    )
    .unwrap();
    assert_eq!((cfg.slaveport, cfg.htmlport), (9100, 8010));
    assert_eq!((cfg.poll_interval, cfg.tree_stable), (5, 0));
    assert!(!cfg.allow_force && cfg.debug);
    assert_eq!(cfg.irc_channels, ["#a", "#b"]);
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
            branch: "master".into()
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
    let steps = factory::build_steps(s, &SlaveConfig::default()).unwrap();
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
