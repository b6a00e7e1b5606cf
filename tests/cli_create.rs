//! Integration tests of the create commands, `list-factories`, `checkconfig` and
//! `--version`/`--help`, run on the real `autobot` binary in temporary directories.

#[path = "support/mod.rs"]
mod support;

use support::cli::autobot;

use predicates::prelude::*;
use std::path::Path;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn version_and_help_show_defaults() {
    autobot()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains(env!("CARGO_PKG_VERSION")));
    let help = autobot().args(["create", "--help"]).assert().success();
    let out = String::from_utf8(help.get_output().stdout.clone()).unwrap();
    for default in [
        "[default: slave]",
        "[default: linux]",
        "[default: a new random one",
        "[default: 9010]",
        "[default: 8010]",
        "[default: 8011]",
        "[default: autobot]",
        "[default: localhost]",
    ] {
        assert!(
            out.contains(default),
            "create --help lacks {default}:\n{out}"
        );
    }
    for opt in [
        "--irc-host",
        "--irc-channels",
        "--recipients",
        "--master",
        "--debug",
        "--list-factories",
        "--factory",
    ] {
        assert!(out.contains(opt), "create --help lacks {opt}");
    }
    let out = autobot()
        .args(["create-slave", "--help"])
        .assert()
        .success();
    let out = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        out.contains("[default: 600]") && out.contains("[default: 022]"),
        "{out}"
    );
}

#[test]
fn create_pair_with_hello_writes_a_valid_master_and_a_slave() {
    let tmp = tempfile::tempdir().unwrap();
    let bot = tmp.path().join("bot");
    autobot()
        .current_dir(tmp.path())
        .args(["create", bot.to_str().unwrap(), "-f", "hello"])
        .assert()
        .success()
        .stdout(predicate::str::contains("autobot start"));
    let ini = read(&bot.join("master/master.ini"));
    assert!(ini.contains("[slave:slave]"), "{ini}");
    assert!(ini.contains("factories = hello"), "{ini}");
    assert!(ini.contains("\n[hello]\n"), "{ini}");
    let slave = read(&bot.join("slave/slave.ini"));
    assert!(slave.contains("master = localhost:9010"), "{slave}");
    assert!(slave.contains("name = slave"), "{slave}");
    // The slave's password is a random one, the same on both sides.
    let password = value_of(&slave, "password");
    assert_eq!(value_of(&ini, "password"), password);
    assert!(password.len() >= 20, "{password}");
    assert!(read(&bot.join("slave/info/admin")).contains("Your Name"));
    let host = read(&bot.join("slave/info/host"));
    assert!(host.contains("CPUs") && host.contains("autobot"), "{host}");
    // The sample is a git repository with one commit, so the slave can clone it.
    let log = std::process::Command::new("git")
        .args(["log", "--oneline"])
        .current_dir(bot.join("master/repos/hello"))
        .output()
        .unwrap();
    assert!(log.status.success());
    assert_eq!(String::from_utf8_lossy(&log.stdout).lines().count(), 1);
    autobot()
        .args(["checkconfig", bot.join("master").to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("hello-slave"));
    // No staging directory is left beside the result.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["bot".to_string()]);
}

/// The value of the first `KEY = VALUE` line of an INI text.
fn value_of(ini: &str, key: &str) -> String {
    ini.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in:\n{ini}"))
}

/// `create` makes secrets of its own: a random slave password (in master.ini and
/// slave.ini) and random change credentials, different for every master, in files
/// only their owner can read; checkconfig finds no documented secret in them.
#[test]
fn create_makes_random_secrets_and_keeps_them_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for name in ["a", "b"] {
        let bot = tmp.path().join(name);
        autobot()
            .current_dir(tmp.path())
            .args(["create", bot.to_str().unwrap(), "-f", "hello"])
            .assert()
            .success()
            .stdout(predicate::str::contains("--auth CHANGEUSER:CHANGEPASSWORD"))
            .stderr(predicate::str::contains("warning").not());
        let ini = read(&bot.join("master/master.ini"));
        let slave = read(&bot.join("slave/slave.ini"));
        let (user, pass) = (
            value_of(&ini, "changeuser"),
            value_of(&ini, "changepassword"),
        );
        let password = value_of(&ini, "password");
        assert_eq!(value_of(&slave, "password"), password);
        for secret in [&pass, &password] {
            assert!(secret.len() >= 20, "{secret}");
            assert!(
                secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() && !"01lIoO".contains(c)),
                "{secret}"
            );
            assert!(!read(&bot.join("slave/info/host")).contains(secret.as_str()));
        }
        assert!(
            user.starts_with("change-") && user.len() > "change-".len(),
            "{user}"
        );
        seen.extend([user, pass, password]);
        for file in ["master/master.ini", "slave/slave.ini"] {
            let mode = std::fs::metadata(bot.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
        }
        // No warning about a documented secret (force on htmlport is still open).
        let out = autobot()
            .args(["checkconfig", bot.join("master").to_str().unwrap()])
            .assert()
            .success()
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("documentation"), "{stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("accepted from changeuser change-"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "secrets repeat: {seen:?}");
}

/// A documented password given with --passwd is used, with a warning, and
/// checkconfig warns about it at its line.
#[test]
fn create_with_a_documented_password_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    autobot()
        .current_dir(tmp.path())
        .args([
            "create-master",
            m.to_str().unwrap(),
            "-f",
            "hello",
            "--passwd",
            "passwd",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "warning: --passwd \"passwd\" is printed in the documentation",
        ));
    let ini = read(&m.join("master.ini"));
    let line = ini
        .lines()
        .position(|l| l == "password = passwd")
        .expect("the given password")
        + 1;
    autobot()
        .args(["checkconfig", m.to_str().unwrap()])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "warning: {}:{line}: [:master:] password: the password \"passwd\" is printed in the documentation",
            m.join("master.ini").display()
        )));
    // A password the INI files cannot hold as given is refused, leaving nothing.
    let bad = tmp.path().join("bad");
    for pw in [" x", "a ;b", "a\nb", ""] {
        autobot()
            .current_dir(tmp.path())
            .args([
                "create-master",
                bad.to_str().unwrap(),
                "-f",
                "hello",
                "--passwd",
                pw,
            ])
            .assert()
            .failure()
            .stderr(predicate::str::contains("--passwd must be"));
        assert!(!bad.exists());
    }
}

#[test]
fn dash_f_dash_takes_every_factory() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    autobot()
        .current_dir(tmp.path())
        .args(["create-master", m.to_str().unwrap(), "-f", "-"])
        .assert()
        .success();
    let ini = read(&m.join("master.ini"));
    let listing = autobot()
        .current_dir(tmp.path())
        .arg("list-factories")
        .assert()
        .success();
    let listing = String::from_utf8(listing.get_output().stdout.clone()).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.strip_suffix(':'))
        .filter(|l| !l.contains(' ') && *l != "Factories:")
        .collect();
    assert!(
        names.contains(&"hello") && names.contains(&"pyhello"),
        "{listing}"
    );
    for n in &names {
        assert!(ini.contains(&format!("\n[{n}]\n")), "{n} missing:\n{ini}");
    }
    assert!(m.join("repos/pyhello/.git").is_dir());
    autobot()
        .args(["checkconfig", m.to_str().unwrap()])
        .assert()
        .success();
}

#[test]
fn unknown_factory_fails_naming_the_valid_ones_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for cmd in ["create", "create-master"] {
        let bot = tmp.path().join("bot");
        autobot()
            .current_dir(tmp.path())
            .args([cmd, bot.to_str().unwrap(), "-f", "hello", "-f", "nosuch"])
            .assert()
            .failure()
            .stderr(
                predicate::str::contains("nosuch")
                    .and(predicate::str::contains("hello"))
                    .and(predicate::str::contains("pyhello")),
            );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "{cmd}");
    }
}

#[test]
fn no_factory_without_a_terminal_fails_with_the_list() {
    let tmp = tempfile::tempdir().unwrap();
    autobot()
        .current_dir(tmp.path())
        .args(["create", "bot"])
        .write_stdin("")
        .assert()
        .failure()
        .stderr(predicate::str::contains("Factories::").and(predicate::str::contains("hello:")));
    assert!(!tmp.path().join("bot").exists());
}

#[test]
fn create_master_variables_reach_master_ini() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    autobot()
        .current_dir(tmp.path())
        .args([
            "create-master",
            m.to_str().unwrap(),
            "-f",
            "hello",
            "--slave",
            "linux7",
            "--os",
            "mac",
            "--passwd",
            "s3cret",
            "--slaveport",
            "19010",
            "--htmlport",
            "18010",
            "--publichtmlport",
            "18011",
            "--botname",
            "robo",
            "--domain",
            "example.org",
        ])
        .assert()
        .success();
    let ini = read(&m.join("master.ini"));
    for want in [
        "slaveport = 19010",
        "htmlport = 18010",
        "publichtmlport = 18011",
        "botname = robo",
        "domain = example.org",
        "password = s3cret",
        "[slave:linux7]",
        "os = mac",
    ] {
        assert!(ini.contains(want), "{want} missing:\n{ini}");
    }
    // A bad value on the command line is caught by validation and creates nothing.
    let bad = tmp.path().join("bad");
    autobot()
        .current_dir(tmp.path())
        .args([
            "create-master",
            bad.to_str().unwrap(),
            "-f",
            "hello",
            "--os",
            "beos",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("beos"));
    assert!(!bad.exists());
}

#[test]
fn create_into_a_non_empty_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
    autobot()
        .args(["create-master", tmp.path().to_str().unwrap(), "-f", "hello"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("not empty"));
    assert_eq!(read(&tmp.path().join("keep.txt")), "mine");
}

#[test]
fn create_slave_with_explicit_master() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("s");
    autobot()
        .args([
            "create-slave",
            s.to_str().unwrap(),
            "build.example.org:9999",
            "linux1",
            "pw1",
            "--keepalive",
            "30",
            "--umask",
            "027",
            "--usepty",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("@reboot").and(predicate::str::contains("info/admin")));
    let ini = read(&s.join("slave.ini"));
    for want in [
        "master = build.example.org:9999",
        "name = linux1",
        "password = pw1",
        "keepalive = 30",
        "umask = 027",
        "usepty = true",
    ] {
        assert!(ini.contains(want), "{want} missing:\n{ini}");
    }
    let unit = read(&s.join("autobot-slave.service"));
    assert!(
        unit.contains("ExecStart=") && unit.contains(" run "),
        "{unit}"
    );
    assert!(!unit.contains(".autobot-new-"), "{unit}");
    assert!(s.join("info/host").is_file());
    // Bad input: no port, a signed port, port 0; nothing is created.
    for (addr, want) in [
        ("nohost", "has no port"),
        (
            "h:+9010",
            "port \"+9010\" in \"h:+9010\" is not a number from 1 to 65535",
        ),
        ("h:0", "is not a number from 1 to 65535"),
        ("h:65536", "is not a number from 1 to 65535"),
    ] {
        autobot()
            .args([
                "create-slave",
                tmp.path().join("t").to_str().unwrap(),
                addr,
                "a",
                "b",
            ])
            .assert()
            .failure()
            .stderr(predicate::str::contains(want));
        assert!(!tmp.path().join("t").exists());
    }
}

#[test]
fn create_slave_from_master_ini() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    autobot()
        .current_dir(tmp.path())
        .args([
            "create-master",
            m.to_str().unwrap(),
            "-f",
            "hello",
            "--slave",
            "box",
            "--passwd",
            "frompw",
            "--slaveport",
            "9123",
        ])
        .assert()
        .success();
    let s = tmp.path().join("s");
    autobot()
        .args([
            "create-slave",
            s.to_str().unwrap(),
            "--ini",
            m.join("master.ini").to_str().unwrap(),
            "--name",
            "box",
            "--master",
            "buildhost",
        ])
        .assert()
        .success();
    let ini = read(&s.join("slave.ini"));
    assert!(ini.contains("master = buildhost:9123"), "{ini}");
    assert!(ini.contains("password = frompw"), "{ini}");
    autobot()
        .args([
            "create-slave",
            tmp.path().join("s2").to_str().unwrap(),
            "--ini",
            m.to_str().unwrap(),
            "--name",
            "nosuch",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("box"));
    assert!(!tmp.path().join("s2").exists());
}

#[test]
fn create_project_then_list_factories_shows_it() {
    let tmp = tempfile::tempdir().unwrap();
    autobot()
        .current_dir(tmp.path())
        .args([
            "create-project",
            "foo",
            "--description",
            "The foo library",
            "--repo",
            "https://example.org/foo.git#main",
        ])
        .assert()
        .success();
    assert!(tmp.path().join("projects/foo.ini").is_file());
    let out = autobot()
        .current_dir(tmp.path())
        .arg("list-factories")
        .assert()
        .success();
    let out = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(out.starts_with("Factories::\n\n"), "{out}");
    assert!(out.contains("\nfoo:\nThe foo library\n"), "{out}");
    // Sorted: foo before hello.
    assert!(out.find("foo:").unwrap() < out.find("hello:").unwrap());
    // A master created here can build the local project.
    let m = tmp.path().join("m");
    autobot()
        .current_dir(tmp.path())
        .args(["create-master", m.to_str().unwrap(), "-f", "foo"])
        .assert()
        .success();
    assert!(m.join("projects/foo.ini").is_file());
    autobot()
        .args(["checkconfig", m.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("foo-slave"));
    // Twice is refused rather than overwriting.
    autobot()
        .current_dir(tmp.path())
        .args(["create-project", "foo", "--description", "x", "--repo", "y"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("already exists"));
}

#[test]
fn create_project_rejects_bad_names_and_types() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["Foo", "foo_bar", "-foo", ""] {
        autobot()
            .current_dir(tmp.path())
            .args([
                "create-project",
                "--description",
                "d",
                "--repo",
                "r",
                "--",
                bad,
            ])
            .assert()
            .failure()
            .stderr(predicate::str::contains("lower-case"));
    }
    autobot()
        .current_dir(tmp.path())
        .args([
            "create-project",
            "ok",
            "--description",
            "d",
            "--repo",
            "r",
            "--type",
            "nosuch",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("autotools"));
    autobot()
        .current_dir(tmp.path())
        .args(["create-project", "ok", "--repo", "r"])
        .write_stdin("")
        .assert()
        .failure()
        .stderr(predicate::str::contains("--description"));
    assert!(
        !tmp.path().join("projects").exists()
            || std::fs::read_dir(tmp.path().join("projects"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
fn list_factories_formats_and_types() {
    let tmp = tempfile::tempdir().unwrap();
    let out = autobot()
        .current_dir(tmp.path())
        .arg("list-factories")
        .assert()
        .success();
    let out = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(out.starts_with("Factories::\n\nhello:\n"), "{out}");
    let out = autobot()
        .args(["list-factories", "--types"])
        .assert()
        .success();
    let out = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for t in [
        "source",
        "virtualenv",
        "python-source",
        "autotools",
        "cpan",
        "distutils",
        "trial",
        "shell",
    ] {
        assert!(out.contains(t), "{t} missing:\n{out}");
    }
    assert!(
        out.contains("./configure") && out.contains("make check"),
        "{out}"
    );
    // --list-factories on create lists and creates nothing.
    autobot()
        .current_dir(tmp.path())
        .args(["create", "bot", "--list-factories"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("Factories::"));
    assert!(!tmp.path().join("bot").exists());
}

#[test]
fn master_ini_example_passes_checkconfig() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("master.ini.example");
    // Valid, with a warning for each documented secret it shows.
    let out = autobot()
        .args(["checkconfig", example.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("hello-linux1"))
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["changepassword", "password", "admin"] {
        assert!(
            stderr.contains(&format!("] {key}: ")) && stderr.contains("warning: "),
            "{key}: {stderr}"
        );
    }
}

/// Run `autobot ARGS` on a pseudo-terminal (util-linux `script`), typing `input`.
/// `None` when `script` is missing: the test fails under `CI=true` and skips
/// elsewhere.
#[track_caller]
fn on_terminal(dir: &Path, args: &str, input: &str) -> Option<std::process::Output> {
    if !support::need_tools(&[("script", "apt-get install bsdutils")]) {
        return None;
    }
    let exe = assert_cmd::cargo::cargo_bin("autobot");
    let mut child = std::process::Command::new("script")
        .args(["-qec", &format!("{} {args}", exe.display()), "/dev/null"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Some(child.wait_with_output().unwrap())
}

#[test]
fn on_a_terminal_create_asks_for_the_factory() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(out) = on_terminal(tmp.path(), "create bot", "pyhello\n") else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Factories::") && text.contains("Enter factory: "),
        "{text}"
    );
    assert!(out.status.success(), "{text}");
    assert!(read(&tmp.path().join("bot/master/master.ini")).contains("factories = pyhello"));
}

#[test]
fn on_a_terminal_create_project_asks_for_missing_values() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(out) = on_terminal(
        tmp.path(),
        "create-project bar",
        "The bar tool\nhttps://example.org/bar.git\n",
    ) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Enter description of the project: "),
        "{text}"
    );
    let ini = read(&tmp.path().join("projects/bar.ini"));
    assert!(ini.contains("description = The bar tool"), "{ini}");
    assert!(ini.contains("git = https://example.org/bar.git"), "{ini}");
}

/// A typo at create's prompt is answered with the list and a suggestion, and the
/// prompt asks again instead of quitting.
#[test]
fn on_a_terminal_create_asks_again_after_a_typo() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(out) = on_terminal(tmp.path(), "create bot", "helo\nhello\n") else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("unknown factory helo (did you mean hello?)"),
        "{text}"
    );
    assert_eq!(text.matches("Enter factory").count(), 2, "{text}");
    assert!(read(&tmp.path().join("bot/master/master.ini")).contains("factories = hello\n"));
}

/// `create-project` run outside a master directory says where the file went
/// (an absolute path) and how a master gets to build it.
#[test]
fn create_project_outside_a_master_says_where_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let out = autobot()
        .current_dir(tmp.path())
        .args(["create-project", "foo", "--description", "x", "--repo", "y"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8_lossy(&out.stdout);
    let written = std::fs::canonicalize(tmp.path())
        .unwrap()
        .join("projects/foo.ini");
    assert!(
        text.contains(&format!("Wrote project foo to {}", written.display())),
        "{text}"
    );
    assert!(
        text.contains("is not a master directory") && text.contains("MASTERDIR/projects/"),
        "{text}"
    );
    // Inside a master directory it says no more than where.
    let m = tmp.path().join("m");
    autobot()
        .args(["create-master", m.to_str().unwrap(), "-f", "hello"])
        .assert()
        .success();
    let out = autobot()
        .current_dir(&m)
        .args(["create-project", "bar", "--description", "x", "--repo", "y"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("not a master directory"), "{text}");
}

/// The hello sample repository is made with gix: `create` works with no `git`
/// on PATH, and the result is an ordinary repository whose `master` holds the
/// sample in one commit, with executable bits, and a clean worktree.
#[test]
fn the_sample_repository_is_made_without_the_git_program() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let bot = tmp.path().join("bot");
    let out = autobot()
        .env("PATH", &empty)
        .args([
            "create",
            bot.to_str().unwrap(),
            "-f",
            "hello",
            "--htmlport",
            "8123",
        ])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("http://localhost:8123/"), "{text}");
    let repo = bot.join("master/repos/hello");
    assert!(repo.join(".git/HEAD").is_file());
    assert_eq!(read(&repo.join(".git/HEAD")), "ref: refs/heads/master\n");
    // The master's systemd unit names the final directory.
    let unit = read(&bot.join("master/autobot-master.service"));
    let abs = std::fs::canonicalize(bot.join("master")).unwrap();
    assert!(
        unit.contains(&format!(" run \"{}\"\n", abs.display())),
        "{unit}"
    );
    if !support::need_tools(&[("git", "apt-get install git")]) {
        return;
    }
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(git(&["rev-list", "--count", "master"]).trim(), "1");
    assert_eq!(git(&["status", "--porcelain"]).trim(), "");
    let files = git(&["ls-files", "-s"]);
    assert!(files.contains("configure"), "{files}");
    let configure = files.lines().find(|l| l.ends_with("\tconfigure")).unwrap();
    assert!(configure.starts_with("100755 "), "{files}");
    git(&["fsck", "--strict"]);
}
