//! The autobot slave driven over real WebSocket/TCP by a test master: worker info,
//! every command and its updates, kills, path confinement and transfers.

mod slave_harness;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use rmpv::Value;
use slave_harness::*;

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn worker_info_has_identity_and_no_environment() {
    let (_m, mut slave, mut conn) = connected("info1").await;
    let (info, exc) = conn.request("get_worker_info", vec![]).await;
    assert!(!exc);
    let get = |k: &str| autobot::protocol::map_get(&info, k).cloned();
    assert_eq!(get("environ"), Some(Value::Map(vec![])));
    assert_eq!(get("system"), Some(Value::from("posix")));
    assert_eq!(
        get("basedir"),
        Some(Value::from(slave.basedir.display().to_string()))
    );
    assert!(get("numcpus").unwrap().as_u64().unwrap() >= 1);
    assert_eq!(get("version"), Some(Value::from(autobot::VERSION)));
    assert_eq!(
        get("admin"),
        Some(Value::from("Ada Admin <ada@example.org>\n"))
    );
    assert_eq!(get("host"), Some(Value::from("a test host\n")));
    assert_eq!(get("os"), Some(Value::from("linux")));
    let cmds = get("worker_commands").unwrap();
    for name in [
        "shell",
        "mkdir",
        "rmdir",
        "cpdir",
        "stat",
        "glob",
        "listdir",
        "rmfile",
        "upload_file",
        "upload_directory",
        "download_file",
    ] {
        assert_eq!(
            autobot::protocol::map_get(&cmds, name),
            Some(&Value::from("3.3")),
            "{name}"
        );
    }
    // Nothing of the slave's environment leaks: not PATH, not HOME, not the password.
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &info).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let path = std::env::var("PATH").unwrap();
    assert!(!text.contains(&path), "PATH leaked");
    assert!(!text.contains(PASSWORD), "password leaked");
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn simple_requests_are_answered_once() {
    let (_m, mut slave, mut conn) = connected("req1").await;
    let (r, exc) = conn
        .request("print", vec![("message", Value::from("hello slave"))])
        .await;
    assert!(!exc && r.is_nil());
    let (r, exc) = conn.request("keepalive", vec![]).await;
    assert!(!exc && r.is_nil());
    let (r, exc) = conn.request("frobnicate", vec![]).await;
    assert!(exc);
    assert!(value_text(&r).contains("frobnicate"));
    let (_, exc) = conn
        .request(
            "set_worker_settings",
            vec![("args", args(vec![("buffer_size", Value::from(1))]))],
        )
        .await;
    assert!(exc, "incomplete settings are refused");
    let (_, exc) = conn
        .request(
            "interrupt_command",
            vec![
                ("command_id", Value::from("nope")),
                ("why", Value::from("x")),
            ],
        )
        .await;
    assert!(!exc, "interrupting an unknown command is fine");
    let e = conn.start_refused("c1", "nosuch", args(vec![])).await;
    assert!(e.contains("nosuch"), "{e}");
    slave.stop_serving(&mut conn).await;
}

fn value_text(v: &Value) -> String {
    autobot::protocol::value_str(v)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn shell_argv_and_string() {
    let (_m, mut slave, mut conn) = connected("shell1").await;
    let r = conn
        .run(
            "c1",
            "shell",
            args(vec![
                ("workdir", Value::from("build")),
                ("command", strs(&["echo", "hello", "wor ld"])),
            ]),
        )
        .await;
    assert_eq!(r.text("stdout"), "hello wor ld\n");
    assert_eq!(r.rc(), Some(0));
    assert!(!r.failed());
    assert!(r.text("header").starts_with("echo hello 'wor ld'\n"));
    assert!(r
        .text("header")
        .contains(&format!(" in dir {}", slave.path("build").display())));
    assert!(r.get("elapsed").is_some());
    assert!(slave.path("build").is_dir(), "workdir is created");

    let r = conn
        .run(
            "c2",
            "shell",
            args(vec![
                ("workdir", Value::from("build")),
                (
                    "command",
                    Value::from("echo out; echo err >&2; pwd; exit 3"),
                ),
            ]),
        )
        .await;
    assert_eq!(
        r.text("stdout"),
        format!("out\n{}\n", slave.path("build").display())
    );
    assert_eq!(r.text("stderr"), "err\n");
    assert_eq!(r.rc(), Some(3));
    assert!(!r.failed(), "a non-zero rc is not a command failure");

    // want_stdout false; a missing program is rc 1 with a message, not a hang.
    let r = conn
        .run(
            "c3",
            "shell",
            args(vec![
                ("workdir", Value::from("build")),
                ("command", Value::from("echo quiet; echo loud >&2")),
                ("want_stdout", Value::from(false)),
            ]),
        )
        .await;
    assert_eq!(r.text("stdout"), "");
    assert_eq!(r.text("stderr"), "loud\n");
    let r = conn
        .run(
            "c4",
            "shell",
            args(vec![
                ("workdir", Value::from("build")),
                ("command", strs(&["/no/such/program"])),
            ]),
        )
        .await;
    assert_eq!(r.rc(), Some(1));
    assert!(r.text("stderr").contains("/no/such/program"));
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn shell_env_expansion_lists_and_removal() {
    let (_m, mut slave, mut conn) = connected("env1").await;
    let home = std::env::var("HOME").unwrap_or_default();
    let r = conn
        .run(
            "c1",
            "shell",
            args(vec![
                ("workdir", Value::from(".")),
                (
                    "command",
                    Value::from("echo \"$FOO|$LISTY|${HOME-unset}|$PYTHONPATH\""),
                ),
                (
                    "env",
                    args(vec![
                        ("FOO", Value::from("<${HOME}>")),
                        ("LISTY", strs(&["a", "b", "c"])),
                        ("HOME", Value::Nil),
                        ("PYTHONPATH", Value::from("/p")),
                    ]),
                ),
            ]),
        )
        .await;
    let pp = std::env::var("PYTHONPATH").unwrap_or_default();
    assert_eq!(r.text("stdout"), format!("<{home}>|a:b:c|unset|/p:{pp}\n"));
    // The header shows what the master set, never the slave's own environment.
    let header = r.text("header");
    assert!(header.contains("FOO=<${HOME}>"), "{header}");
    assert!(
        !header.contains(&std::env::var("PATH").unwrap()),
        "{header}"
    );

    let e = conn
        .start_refused(
            "c2",
            "shell",
            args(vec![
                ("workdir", Value::from(".")),
                ("command", strs(&["true"])),
                ("env", args(vec![("BAD", Value::from(3))])),
            ]),
        )
        .await;
    assert!(e.contains("BAD"), "{e}");
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn shell_timeout_without_output_kills() {
    let (_m, mut slave, mut conn) = connected("tmo1").await;
    let r = conn
        .run(
            "c1",
            "shell",
            args(vec![
                ("workdir", Value::from(".")),
                ("command", strs(&["sleep", "30"])),
                ("timeout", Value::from(1)),
            ]),
        )
        .await;
    assert_eq!(r.rc(), Some(-1));
    assert_eq!(
        r.get("failure_reason"),
        Some(&Value::from("timeout_without_output"))
    );
    assert!(r
        .text("header")
        .contains("command timed out: 1 seconds without output"));
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn shell_max_time_kills_even_with_output() {
    let (_m, mut slave, mut conn) = connected("maxt1").await;
    let r = conn
        .run(
            "c1",
            "shell",
            args(vec![
                ("workdir", Value::from(".")),
                (
                    "command",
                    Value::from("while true; do echo tick; sleep 0.1; done"),
                ),
                ("timeout", Value::from(10)),
                ("maxTime", Value::F64(1.0)),
            ]),
        )
        .await;
    assert_eq!(r.rc(), Some(-1));
    assert_eq!(r.get("failure_reason"), Some(&Value::from("timeout")));
    assert!(r.text("stdout").starts_with("tick\n"));
    slave.stop_serving(&mut conn).await;
}

async fn read_pid(path: &std::path::Path) -> i32 {
    let mut pid = 0;
    wait_for("pidfile", LONG, || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid > 0
    })
    .await;
    // The shell writes `$!` right after its fork; until the child has exec'd
    // `sleep`, it still runs the shell's signal handlers, and a TERM sent in that
    // window is taken by the trap the shell set and lost at the exec.
    wait_for("the grandchild to exec sleep", LONG, || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| c.starts_with(b"sleep\0"))
            .unwrap_or(true)
    })
    .await;
    pid
}

#[tokio::test]
async fn interrupt_kills_grandchildren() {
    let (_m, mut slave, mut conn) = connected("intr1").await;
    conn.start(
        "c1",
        "shell",
        args(vec![
            ("workdir", Value::from("w")),
            (
                "command",
                strs(&["sh", "-c", "sleep 1000 & echo $! > pidfile; wait"]),
            ),
        ]),
    )
    .await;
    let pid = read_pid(&slave.path("w/pidfile")).await;
    assert!(!pid_gone(pid));
    let (_, exc) = conn
        .request(
            "interrupt_command",
            vec![
                ("command_id", Value::from("c1")),
                ("why", Value::from("user pressed stop")),
            ],
        )
        .await;
    assert!(!exc);
    let r = conn.wait_complete("c1", LONG).await;
    assert_eq!(r.rc(), Some(-1));
    assert!(r
        .text("header")
        .contains("command interrupted, attempting to kill"));
    assert!(r.text("header").contains("process killed by signal 9"));
    wait_for("grandchild to die", LONG, || pid_gone(pid)).await;
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn interrupt_with_sigterm_time_sends_term_first() {
    let (_m, mut slave, mut conn) = connected("intr2").await;
    conn.start(
        "c1",
        "shell",
        args(vec![
            ("workdir", Value::from("w")),
            (
                "command",
                Value::from(
                    "trap 'echo got-term; exit 7' TERM; sleep 1000 & echo $! > pidfile; wait",
                ),
            ),
            ("sigtermTime", Value::from(20)),
        ]),
    )
    .await;
    let pid = read_pid(&slave.path("w/pidfile")).await;
    conn.request(
        "interrupt_command",
        vec![("command_id", Value::from("c1")), ("why", Value::from("x"))],
    )
    .await;
    let r = conn.wait_complete("c1", Duration::from_secs(10)).await;
    assert_eq!(r.text("stdout"), "got-term\n");
    assert_eq!(r.rc(), Some(7));
    wait_for("grandchild to die", LONG, || pid_gone(pid)).await;
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn stdin_pty_and_logfiles() {
    let (_m, mut slave, mut conn) = connected("misc1").await;
    let r = conn
        .run(
            "c1",
            "shell",
            args(vec![
                ("workdir", Value::from(".")),
                ("command", strs(&["cat"])),
                ("initial_stdin", Value::from("from stdin\n")),
            ]),
        )
        .await;
    assert_eq!(r.text("stdout"), "from stdin\n");

    let r = conn
        .run(
            "c2",
            "shell",
            args(vec![
                ("workdir", Value::from(".")),
                (
                    "command",
                    Value::from("test -t 1 && echo on-a-tty; echo to-stderr >&2"),
                ),
                ("usePTY", Value::from(true)),
            ]),
        )
        .await;
    assert_eq!(r.text("stdout"), "on-a-tty\nto-stderr\n");
    assert_eq!(r.rc(), Some(0));

    let r = conn
        .run(
            "c3",
            "shell",
            args(vec![
                ("workdir", Value::from("lw")),
                (
                    "command",
                    Value::from("echo one > my.log; sleep 1.3; echo two >> my.log"),
                ),
                ("logfiles", args(vec![("mylog", Value::from("my.log"))])),
            ]),
        )
        .await;
    assert_eq!(r.log("mylog"), "one\ntwo\n");
    assert_eq!(r.rc(), Some(0));
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn big_output_arrives_whole_in_bounded_updates() {
    let (_m, mut slave, mut conn) = connected("big1").await;
    // 200k numbered lines (~1.3 MB) plus one line longer than max_line_length.
    let r = conn
        .run(
            "c1",
            "shell",
            args(vec![
                ("workdir", Value::from(".")),
                (
                    "command",
                    Value::from("seq 1 200000; head -c 10000 /dev/zero | tr '\\0' x; echo"),
                ),
            ]),
        )
        .await;
    let mut expected: String = (1..=200000).map(|i| format!("{i}\n")).collect();
    let long = "x".repeat(10000);
    expected.push_str(&long[..4095]);
    expected.push('\n');
    expected.push_str(&long[4095..8190]);
    expected.push('\n');
    expected.push_str(&long[8190..]);
    expected.push('\n');
    assert_eq!(r.text("stdout").len(), expected.len());
    assert!(r.text("stdout") == expected);
    // Newline positions index the text of each record.
    for (k, v) in &r.updates {
        if k == "stdout" {
            let Value::Array(parts) = v else { panic!() };
            let text = parts[0].as_str().unwrap();
            let Value::Array(nls) = &parts[1] else {
                panic!()
            };
            let Value::Array(times) = &parts[2] else {
                panic!()
            };
            assert_eq!(nls.len(), times.len());
            assert_eq!(nls.len(), text.matches('\n').count());
            for n in nls {
                assert_eq!(text.as_bytes()[n.as_u64().unwrap() as usize], b'\n');
            }
        }
    }
    assert!(conn.update_frames > 10, "output was sent in many updates");
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn file_system_commands() {
    let (_m, mut slave, mut conn) = connected("fs1").await;
    let b = slave.basedir.display().to_string();
    let r = conn
        .run(
            "m1",
            "mkdir",
            args(vec![(
                "paths",
                Value::Array(vec![
                    Value::from(format!("{b}/bld/a/b")),
                    Value::from("bld/c"),
                ]),
            )]),
        )
        .await;
    assert_eq!(r.rc(), Some(0));
    assert!(slave.path("bld/a/b").is_dir() && slave.path("bld/c").is_dir());
    std::fs::write(slave.path("bld/a/f.txt"), "12345").unwrap();
    std::fs::write(slave.path("bld/a/.hidden"), "").unwrap();

    let r = conn
        .run(
            "l1",
            "listdir",
            args(vec![("path", Value::from(format!("{b}/bld/a")))]),
        )
        .await;
    assert_eq!(r.get("files"), Some(&strs(&[".hidden", "b", "f.txt"])));
    assert_eq!(r.rc(), Some(0));

    let r = conn
        .run(
            "s1",
            "stat",
            args(vec![("path", Value::from("bld/a/f.txt"))]),
        )
        .await;
    let Some(Value::Array(st)) = r.get("stat") else {
        panic!("no stat: {r:?}")
    };
    assert_eq!(st.len(), 10);
    assert_eq!(st[6].as_u64(), Some(5));
    assert_eq!(st[0].as_u64().unwrap() & 0o170000, 0o100000);

    let r = conn
        .run(
            "s2",
            "stat",
            args(vec![("path", Value::from("bld/missing"))]),
        )
        .await;
    assert_eq!(r.rc(), Some(2));
    assert!(r.text("header").contains("No such file or directory"));

    let r = conn
        .run(
            "g1",
            "glob",
            args(vec![("path", Value::from(format!("{b}/bld/*/*")))]),
        )
        .await;
    assert_eq!(
        r.get("files"),
        Some(&Value::Array(vec![
            Value::from(format!("{b}/bld/a/b")),
            Value::from(format!("{b}/bld/a/f.txt")),
        ]))
    );

    let r = conn
        .run(
            "cp1",
            "cpdir",
            args(vec![
                ("from_path", Value::from("bld/a")),
                ("to_path", Value::from("copy/a2")),
            ]),
        )
        .await;
    assert_eq!(r.rc(), Some(0), "{r:?}");
    assert_eq!(
        std::fs::read_to_string(slave.path("copy/a2/f.txt")).unwrap(),
        "12345"
    );

    let r = conn
        .run(
            "rf1",
            "rmfile",
            args(vec![("path", Value::from("bld/a/f.txt"))]),
        )
        .await;
    assert_eq!(r.rc(), Some(0));
    assert!(!exists(&slave.path("bld/a/f.txt")));
    let r = conn
        .run(
            "rf2",
            "rmfile",
            args(vec![("path", Value::from("bld/a/f.txt"))]),
        )
        .await;
    assert_eq!(r.rc(), Some(2));

    std::fs::set_permissions(
        slave.path("copy/a2"),
        std::fs::Permissions::from_mode(0o500),
    )
    .unwrap();
    let r = conn
        .run(
            "rd1",
            "rmdir",
            args(vec![("paths", strs(&["bld", "copy", "never-existed"]))]),
        )
        .await;
    assert_eq!(r.rc(), Some(0), "{r:?}");
    assert!(!exists(&slave.path("bld")) && !exists(&slave.path("copy")));
    assert!(slave.path("slave.ini").exists());
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn paths_outside_basedir_are_refused() {
    let (_m, mut slave, mut conn) = connected("jail1").await;
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().display().to_string();
    std::fs::write(outside.path().join("secret"), "s").unwrap();
    std::os::unix::fs::symlink(outside.path(), slave.path("escape")).unwrap();

    let cases: Vec<(&str, Value)> = vec![
        (
            "shell",
            args(vec![
                ("workdir", Value::from("../elsewhere")),
                ("command", strs(&["touch", "pwned"])),
            ]),
        ),
        (
            "shell",
            args(vec![
                ("workdir", Value::from("escape")),
                ("command", strs(&["touch", "pwned"])),
            ]),
        ),
        (
            "shell",
            args(vec![
                ("workdir", Value::from(".")),
                ("command", strs(&["true"])),
                ("logfiles", args(vec![("l", Value::from("escape/secret"))])),
            ]),
        ),
        (
            "mkdir",
            args(vec![("paths", strs(&[&format!("{out}/made")]))]),
        ),
        ("mkdir", args(vec![("paths", strs(&["escape/made"]))])),
        ("rmdir", args(vec![("paths", strs(&["a/../../x"]))])),
        ("rmdir", args(vec![("paths", strs(&["."]))])),
        (
            "rmfile",
            args(vec![("path", Value::from(format!("{out}/secret")))]),
        ),
        ("rmfile", args(vec![("path", Value::from("escape/secret"))])),
        ("listdir", args(vec![("path", Value::from("escape"))])),
        ("stat", args(vec![("path", Value::from("/etc/passwd"))])),
        ("glob", args(vec![("path", Value::from("escape/*"))])),
        ("glob", args(vec![("path", Value::from("../*"))])),
        (
            "cpdir",
            args(vec![
                ("from_path", Value::from("escape")),
                ("to_path", Value::from("copied")),
            ]),
        ),
        (
            "cpdir",
            args(vec![
                ("from_path", Value::from("info")),
                ("to_path", Value::from(format!("{out}/copied"))),
            ]),
        ),
        (
            "upload_file",
            args(vec![
                ("path", Value::from("escape/secret")),
                ("blocksize", Value::from(1024)),
                ("maxsize", Value::Nil),
            ]),
        ),
        (
            "upload_directory",
            args(vec![
                ("path", Value::from("escape")),
                ("blocksize", Value::from(1024)),
                ("maxsize", Value::Nil),
            ]),
        ),
        (
            "download_file",
            args(vec![
                ("path", Value::from(format!("{out}/dropped"))),
                ("blocksize", Value::from(1024)),
                ("maxsize", Value::Nil),
                ("mode", Value::Nil),
            ]),
        ),
        (
            "uploadFile",
            args(vec![
                ("workdir", Value::from("build")),
                ("workersrc", Value::from("../../../etc/passwd")),
                ("blocksize", Value::from(1024)),
                ("maxsize", Value::Nil),
            ]),
        ),
    ];
    for (i, (name, a)) in cases.into_iter().enumerate() {
        let e = conn.start_refused(&format!("x{i}"), name, a).await;
        assert!(
            e.contains("outside the slave's basedir") || e.contains("basedir itself"),
            "case {i} ({name}): {e}"
        );
    }
    assert!(outside.path().join("secret").exists());
    assert!(!exists(&outside.path().join("made")));
    assert!(!exists(&outside.path().join("pwned")));
    assert!(!exists(&outside.path().join("dropped")));
    assert!(!exists(&slave.path("../elsewhere")));
    // Removing the link itself is fine and leaves the target alone.
    let r = conn
        .run("ok1", "rmdir", args(vec![("paths", strs(&["escape"]))]))
        .await;
    assert_eq!(r.rc(), Some(0));
    assert!(outside.path().join("secret").exists());
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn upload_file_with_keepstamp_and_maxsize() {
    let (_m, mut slave, mut conn) = connected("up1").await;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::create_dir(slave.path("build")).unwrap();
    std::fs::write(slave.path("build/art.bin"), &data).unwrap();
    let r = conn
        .run(
            "u1",
            "upload_file",
            args(vec![
                ("workdir", Value::from("build")),
                ("workersrc", Value::from("art.bin")),
                ("blocksize", Value::from(16384)),
                ("maxsize", Value::Nil),
                ("keepstamp", Value::from(true)),
            ]),
        )
        .await;
    assert_eq!(r.uploaded, data);
    assert_eq!(r.rc(), Some(0));
    assert!(!r.failed());
    assert_eq!(
        r.ops
            .iter()
            .filter(|o| *o == "update_upload_file_write")
            .count(),
        7
    );
    assert!(r.ops.ends_with(&[
        "update_upload_file_close".to_string(),
        "update_upload_file_utime".to_string()
    ]));

    let r = conn
        .run(
            "u2",
            "upload_file",
            args(vec![
                ("path", Value::from("build/art.bin")),
                ("blocksize", Value::from(4096)),
                ("maxsize", Value::from(10000)),
            ]),
        )
        .await;
    assert_eq!(r.uploaded.len(), 10000);
    assert_eq!(r.rc(), Some(1));
    assert!(r.text("stderr").contains("Maximum filesize reached"));

    let r = conn
        .run(
            "u3",
            "upload_file",
            args(vec![
                ("path", Value::from("build/missing")),
                ("blocksize", Value::from(4096)),
                ("maxsize", Value::Nil),
            ]),
        )
        .await;
    assert_eq!(r.rc(), Some(1));
    assert!(r.text("stderr").contains("Cannot open file"));
    assert!(r.ops.contains(&"update_upload_file_close".to_string()));
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn upload_directory_as_tar() {
    let (_m, mut slave, mut conn) = connected("updir1").await;
    std::fs::create_dir_all(slave.path("build/out/sub")).unwrap();
    std::fs::write(slave.path("build/out/a.txt"), "alpha").unwrap();
    std::fs::write(slave.path("build/out/sub/b.txt"), "beta").unwrap();
    for compress in [Value::Nil, Value::from("gz")] {
        let id = format!("d{}", compress.is_nil());
        let r = conn
            .run(
                &id,
                "upload_directory",
                args(vec![
                    ("path", Value::from("build/out")),
                    ("blocksize", Value::from(512)),
                    ("maxsize", Value::Nil),
                    ("compress", compress.clone()),
                ]),
            )
            .await;
        assert_eq!(r.rc(), Some(0), "{r:?}");
        assert_eq!(
            r.ops.last().map(String::as_str),
            Some("update_upload_directory_unpack")
        );
        let x = tempfile::tempdir().unwrap();
        std::fs::write(x.path().join("t.tar"), &r.uploaded).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(x.path().join("t.tar"))
            .arg("-C")
            .arg(x.path())
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            std::fs::read_to_string(x.path().join("a.txt")).unwrap(),
            "alpha"
        );
        assert_eq!(
            std::fs::read_to_string(x.path().join("sub/b.txt")).unwrap(),
            "beta"
        );
    }
    let r = conn
        .run(
            "d3",
            "upload_directory",
            args(vec![
                ("path", Value::from("build/nothere")),
                ("blocksize", Value::from(512)),
                ("maxsize", Value::Nil),
            ]),
        )
        .await;
    assert_eq!(r.rc(), Some(1));
    assert!(r.uploaded.is_empty());
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn download_file_with_mode_and_maxsize() {
    let (_m, mut slave, mut conn) = connected("down1").await;
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 13) as u8).collect();
    conn.downloads.insert("dl1".into(), data.clone());
    let r = conn
        .run(
            "dl1",
            "download_file",
            args(vec![
                ("path", Value::from("build/sub/tool.sh")),
                ("blocksize", Value::from(8192)),
                ("maxsize", Value::Nil),
                ("mode", Value::from(0o750)),
            ]),
        )
        .await;
    assert_eq!(r.rc(), Some(0), "{r:?}");
    assert_eq!(
        std::fs::read(slave.path("build/sub/tool.sh")).unwrap(),
        data
    );
    let mode = std::fs::metadata(slave.path("build/sub/tool.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);
    assert_eq!(
        r.ops.last().map(String::as_str),
        Some("update_read_file_close")
    );

    conn.downloads.insert("dl2".into(), data.clone());
    let r = conn
        .run(
            "dl2",
            "download_file",
            args(vec![
                ("path", Value::from("build/small")),
                ("blocksize", Value::from(4096)),
                ("maxsize", Value::from(1000)),
                ("mode", Value::Nil),
            ]),
        )
        .await;
    assert_eq!(r.rc(), Some(1));
    assert!(r.text("stderr").contains("Maximum filesize reached"));
    assert_eq!(
        std::fs::read(slave.path("build/small")).unwrap().len(),
        1000
    );
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn master_shutdown_and_daemon_stop() {
    // `shutdown` from the master ends run() by itself.
    let (_m, mut slave, mut conn) = connected("down2").await;
    let (_, exc) = conn.request("shutdown", vec![]).await;
    assert!(!exc);
    let t = slave.task.take().unwrap();
    let pump = async { while conn.pump(Duration::from_secs(5)).await {} };
    let (r, ()) = tokio::join!(tokio::time::timeout(LONG, t), pump);
    r.unwrap().unwrap().unwrap();
    assert!(conn.closed);

    // A daemon stop interrupts a running command, reports it and closes cleanly.
    let (_m2, mut slave2, mut conn2) = connected("down3").await;
    conn2
        .start(
            "c1",
            "shell",
            args(vec![
                ("workdir", Value::from("w")),
                (
                    "command",
                    strs(&["sh", "-c", "sleep 1000 & echo $! > pidfile; wait"]),
                ),
            ]),
        )
        .await;
    let pid = read_pid(&slave2.path("w/pidfile")).await;
    let stop = async {
        slave2.stop().await;
    };
    let serve = async {
        let r = conn2.wait_complete("c1", LONG).await;
        while conn2.pump(Duration::from_secs(5)).await {}
        r
    };
    let ((), r) = tokio::join!(stop, serve);
    assert_eq!(r.rc(), Some(-1));
    assert!(conn2.closed);
    wait_for("grandchild to die", LONG, || pid_gone(pid)).await;
}

#[tokio::test]
async fn lost_connection_kills_running_commands_and_reconnects() {
    let (mut master, mut slave, mut conn) = connected("lost1").await;
    conn.start(
        "c1",
        "shell",
        args(vec![
            ("workdir", Value::from("w")),
            (
                "command",
                strs(&["sh", "-c", "sleep 1000 & echo $! > pidfile; wait"]),
            ),
        ]),
    )
    .await;
    let pid = read_pid(&slave.path("w/pidfile")).await;
    conn.close().await;
    wait_for("grandchild to die", LONG, || pid_gone(pid)).await;
    let mut conn = master.accept().await;
    let (_, exc) = conn.request("keepalive", vec![]).await;
    assert!(!exc);
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn umask_and_usepty_from_slave_ini_apply() {
    let mut master = Master::start("umask1").await;
    let mut slave = Slave::create("umask1", master.port, 30);
    slave.set_ini("umask", "027");
    slave.set_ini("usepty", "true");
    slave.start().await.unwrap();
    let mut conn = master.accept().await;
    conn.settings().await;
    let r = conn
        .run(
            "c1",
            "shell",
            args(vec![
                ("workdir", Value::from("w")),
                (
                    "command",
                    Value::from("touch f; mkdir d; test -t 1 && echo tty"),
                ),
            ]),
        )
        .await;
    assert_eq!(r.rc(), Some(0));
    assert_eq!(r.text("stdout"), "tty\n");
    let mode = |p: &str| {
        std::fs::metadata(slave.path(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("w/f"), 0o640);
    assert_eq!(mode("w/d"), 0o750);
    conn.downloads.insert("dl".into(), b"data".to_vec());
    let r = conn
        .run(
            "dl",
            "download_file",
            args(vec![
                ("path", Value::from("w/got")),
                ("blocksize", Value::from(16)),
                ("maxsize", Value::Nil),
                ("mode", Value::Nil),
            ]),
        )
        .await;
    assert_eq!(r.rc(), Some(0));
    assert_eq!(mode("w/got") & 0o027, 0);
    slave.stop_serving(&mut conn).await;
}
