//! The worker-protocol contract: one suite, two slave implementations.
//!
//! Every contract test starts a real master in a temp directory, a real slave
//! (the stock `buildbot-worker` 4.3.0 from PyPI, or autobot's own slave) that
//! connects over WebSocket, and drives protocol commands through the master's
//! command layer ([`SlaveHandle`]). The `buildbot_worker::*` and `autobot_slave::*`
//! tests run the same assertions; an implementation that cannot be had (PyPI
//! unreachable, no `python3 -m venv`) fails the test under `CI=true` and prints a
//! SKIP line elsewhere. A few master-only tests (directory lock, busy port) follow
//! at the end.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use autobot::app::{Master, MasterOptions};
use autobot::protocol::map;
use autobot::slavelink::{CommandError, CommandEvent, DownloadSource, SlaveHandle, Update};
use rmpv::Value;
use support::{wait_for, wait_log, Impl, SlaveProc, TestMaster, DEADLINE};

/// Keepalive interval of contract masters: short, so dead links show quickly.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// A master knowing `slaves`, and the first of them started and connected.
async fn setup(
    test: &str,
    imp: Impl,
    slaves: &[(&str, &str)],
    keepalive: Duration,
) -> Option<(TestMaster, SlaveProc, SlaveHandle)> {
    let tm = TestMaster::start(slaves, keepalive).await;
    let (name, pw) = slaves[0];
    let dir = tm.dir.path().join(format!("slave-{name}"));
    let proc = match imp.start(&dir, tm.port(), name, pw).await {
        Ok(p) => p,
        Err(why) => {
            support::skip(&format!("{test}: {imp:?} slave: {why}"));
            return None;
        }
    };
    let h = tm.wait_connected(name).await;
    Some((tm, proc, h))
}

fn strs(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(*s)).collect())
}

fn shell_args(workdir: &str, argv: &[&str]) -> Value {
    map(vec![
        ("workdir", Value::from(workdir)),
        ("command", strs(argv)),
    ])
}

// ------------------------------------------------------------------ contract

async fn connect_reports_info(imp: Impl) {
    support::keep_sqlite("the canary is looked for in the bytes of state.sqlite and its WAL");
    let Some((tm, proc, h)) = setup("connect_reports_info", imp, &[("s1", "pw1")], KEEPALIVE).await
    else {
        return;
    };
    let info = h.info();
    assert_eq!(info.host.as_deref(), Some("conformance-host"));
    assert_eq!(
        info.admin.as_deref(),
        Some("Conformance Admin <ca@example.org>")
    );
    assert!(info.version.is_some(), "{info:?}");
    assert!(info.numcpus.unwrap_or(0) >= 1, "{info:?}");
    assert!(info.commands.contains_key("shell"), "{info:?}");
    // The builder directory FACTORY-SLAVE was made on the slave.
    assert!(proc.dir.join("fac-s1").is_dir());
    let api = tm.api_slave("s1").await;
    assert_eq!(api["connected"], true, "{api}");
    assert_eq!(api["host"], "conformance-host");
    assert!(api["last_seen"].as_i64().is_some(), "{api}");
    assert!(api["connected_at"].as_i64().is_some(), "{api}");
    assert!(api.get("password").is_none() && api.get("environ").is_none());
    // The slave's environment is secret: not in the API, the database or the log.
    let (_, body) = tm.http_get("/api/v1/slaves").await;
    assert!(!body.contains(support::CANARY_VALUE));
    let db = std::fs::read(tm.dir.path().join("state.sqlite")).unwrap();
    let wal = std::fs::read(tm.dir.path().join("state.sqlite-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(!String::from_utf8_lossy(&bytes).contains(support::CANARY_VALUE));
    }
    assert!(!support::log_has(&[support::CANARY_VALUE]));
    proc.stop().await;
}

async fn shell(imp: Impl) {
    let Some((_tm, proc, h)) = setup("shell", imp, &[("s1", "pw1")], KEEPALIVE).await else {
        return;
    };
    let wd = h.builder_dir("fac-s1");
    let out = h
        .run(
            "shell",
            shell_args(&wd, &["sh", "-c", "echo out; echo err >&2"]),
        )
        .await
        .unwrap();
    assert_eq!(out.rc, Some(0), "{out:?}");
    assert!(out.succeeded());
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");

    let out = h
        .run("shell", shell_args(&wd, &["sh", "-c", "exit 3"]))
        .await
        .unwrap();
    assert_eq!(out.rc, Some(3), "{out:?}");
    assert!(!out.succeeded());

    let args = map(vec![
        ("workdir", Value::from(wd.as_str())),
        (
            "command",
            strs(&["sh", "-c", "echo \"$AUTOBOT_T/$AUTOBOT_GONE\""]),
        ),
        (
            "env",
            map(vec![
                ("AUTOBOT_T", Value::from("v1")),
                ("AUTOBOT_GONE", Value::Nil),
            ]),
        ),
    ]);
    let out = h.run("shell", args).await.unwrap();
    assert_eq!(out.stdout, "v1/\n", "{out:?}");

    // A string command runs through /bin/sh -c.
    let out = h
        .run(
            "shell",
            map(vec![
                ("workdir", Value::from(wd.as_str())),
                ("command", Value::from("echo a  b | tr a-z A-Z")),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, "A B\n", "{out:?}");

    // workdir: a subdirectory (made by the shell itself first).
    h.run("mkdir", map(vec![("paths", strs(&[&format!("{wd}/sub")]))]))
        .await
        .unwrap();
    let out = h
        .run("shell", shell_args(&format!("{wd}/sub"), &["pwd"]))
        .await
        .unwrap();
    let real = std::fs::canonicalize(proc.dir.join("fac-s1/sub")).unwrap();
    assert_eq!(out.stdout.trim_end(), real.to_str().unwrap(), "{out:?}");

    // A command that does not exist fails with a non-zero rc, not a hang.
    let out = h
        .run(
            "shell",
            shell_args(&wd, &["/nonexistent/autobot-no-such-program"]),
        )
        .await
        .unwrap();
    assert!(!out.succeeded(), "{out:?}");
    proc.stop().await;
}

async fn interrupt(imp: Impl) {
    let Some((_tm, proc, h)) = setup("interrupt", imp, &[("s1", "pw1")], KEEPALIVE).await else {
        return;
    };
    let wd = h.builder_dir("fac-s1");
    let started = Instant::now();
    let mut cmd = h
        .start_command(
            "shell",
            shell_args(&wd, &["sh", "-c", "echo started; exec sleep 60"]),
        )
        .await
        .unwrap();
    // Output is live: "started" arrives while the command still runs.
    loop {
        match cmd.next().await {
            Some(CommandEvent::Update(Update::Stdout(s))) if s.contains("started") => break,
            Some(CommandEvent::Update(_)) => {}
            other => panic!("command ended before its output: {other:?}"),
        }
    }
    let interrupter = cmd.interrupter();
    interrupter.interrupt("test says stop").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.wait())
        .await
        .expect("interrupted command did not complete")
        .unwrap();
    assert!(!out.succeeded(), "{out:?}");
    assert_ne!(out.rc, Some(0));
    assert!(started.elapsed() < Duration::from_secs(30));
    proc.stop().await;
}

async fn file_commands(imp: Impl) {
    let Some((_tm, proc, h)) = setup("file_commands", imp, &[("s1", "pw1")], KEEPALIVE).await
    else {
        return;
    };
    let base = h.builder_dir("fac-s1");
    let p = |rel: &str| format!("{base}/{rel}");

    let out = h
        .run("mkdir", map(vec![("paths", strs(&[&p("a/b"), &p("a/c")]))]))
        .await
        .unwrap();
    assert!(out.succeeded(), "{out:?}");
    assert!(proc.dir.join("fac-s1/a/b").is_dir());

    let out = h
        .run("stat", map(vec![("path", Value::from(p("a/b")))]))
        .await
        .unwrap();
    let st = out.stat.expect("stat tuple");
    assert_eq!(st.len(), 10);
    assert_eq!(st[0] & 0o170000, 0o040000, "not a directory: {st:?}");

    h.download_file(
        DownloadSource::Bytes(b"hello\n".to_vec()),
        &p("a/f.txt"),
        None,
    )
    .await
    .unwrap();

    let out = h
        .run("listdir", map(vec![("path", Value::from(p("a")))]))
        .await
        .unwrap();
    let mut files = out.files.expect("listdir files");
    files.sort();
    assert_eq!(files, ["b", "c", "f.txt"]);

    let out = h
        .run("glob", map(vec![("path", Value::from(p("a/*.txt")))]))
        .await
        .unwrap();
    assert_eq!(out.files.expect("glob files"), [p("a/f.txt")]);

    let out = h
        .run(
            "cpdir",
            map(vec![
                ("from_path", Value::from(p("a"))),
                ("to_path", Value::from(p("copy"))),
            ]),
        )
        .await
        .unwrap();
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(
        std::fs::read(proc.dir.join("fac-s1/copy/f.txt")).unwrap(),
        b"hello\n"
    );

    let out = h
        .run("rmfile", map(vec![("path", Value::from(p("a/f.txt")))]))
        .await
        .unwrap();
    assert!(out.succeeded(), "{out:?}");
    assert!(!proc.dir.join("fac-s1/a/f.txt").exists());

    let out = h
        .run("rmdir", map(vec![("paths", strs(&[&p("copy")]))]))
        .await
        .unwrap();
    assert!(out.succeeded(), "{out:?}");
    assert!(!proc.dir.join("fac-s1/copy").exists());

    // Failures are a non-zero rc, with the reason in the header.
    let out = h
        .run("stat", map(vec![("path", Value::from(p("missing")))]))
        .await
        .unwrap();
    assert!(!out.succeeded());
    assert_ne!(out.rc, Some(0));
    let out = h
        .run("rmfile", map(vec![("path", Value::from(p("missing")))]))
        .await
        .unwrap();
    assert!(!out.succeeded());
    proc.stop().await;
}

async fn transfers(imp: Impl) {
    let Some((tm, proc, h)) = setup("transfers", imp, &[("s1", "pw1")], KEEPALIVE).await else {
        return;
    };
    let base = h.builder_dir("fac-s1");
    let local = tm.dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    // Several blocks, every byte value.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();

    let r = h
        .download_file(
            DownloadSource::Bytes(data.clone()),
            &format!("{base}/d/blob.bin"),
            Some(0o750),
        )
        .await
        .unwrap();
    assert_eq!(r.bytes, data.len() as u64);
    let on_slave = proc.dir.join("fac-s1/d/blob.bin");
    assert_eq!(std::fs::read(&on_slave).unwrap(), data);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&on_slave).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o750);

    std::fs::write(local.join("src.txt"), "from a file\n").unwrap();
    h.download_file(
        DownloadSource::File(local.join("src.txt")),
        &format!("{base}/d/sub/x.txt"),
        None,
    )
    .await
    .unwrap();

    let r = h
        .upload_file(&format!("{base}/d/blob.bin"), &local.join("back.bin"), None)
        .await
        .unwrap();
    assert_eq!(r.bytes, data.len() as u64);
    assert_eq!(std::fs::read(local.join("back.bin")).unwrap(), data);

    let r = h
        .upload_directory(&format!("{base}/d"), &local.join("tree"), None)
        .await
        .unwrap();
    assert!(r.bytes > 0);
    assert_eq!(std::fs::read(local.join("tree/blob.bin")).unwrap(), data);
    assert_eq!(
        std::fs::read_to_string(local.join("tree/sub/x.txt")).unwrap(),
        "from a file\n"
    );

    // A missing file is a failure and leaves nothing behind.
    let err = h
        .upload_file(&format!("{base}/nope"), &local.join("nope"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::Failed { .. }), "{err}");
    assert!(!local.join("nope").exists());
    // maxsize is enforced.
    let err = h
        .upload_file(
            &format!("{base}/d/blob.bin"),
            &local.join("cut"),
            Some(1000),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::Failed { .. }), "{err}");
    proc.stop().await;
}

async fn auth_refusals(imp: Impl) {
    let slaves = [("s1", "pw1"), ("s2", "pw2")];
    let Some((tm, proc, h)) = setup("auth_refusals", imp, &slaves, KEEPALIVE).await else {
        return;
    };
    let port = format!("slaveport={}", tm.port());
    let peer = h.peer().to_string();

    let bad_pw = imp
        .start(&tm.dir.path().join("bad-pw"), tm.port(), "s2", "nope")
        .await
        .unwrap();
    wait_log(&["refused slave s2", "wrong password", &port]).await;

    let unknown = imp
        .start(&tm.dir.path().join("ghost"), tm.port(), "ghost", "pw1")
        .await
        .unwrap();
    wait_log(&["refused slave ghost", "unknown slave", &port]).await;

    let dup = imp
        .start(&tm.dir.path().join("dup"), tm.port(), "s1", "pw1")
        .await
        .unwrap();
    wait_log(&["refused slave s1", "already connected", &port]).await;

    // The first connection is unaffected.
    let now = tm.master.registry().get("s1").expect("s1 still connected");
    assert_eq!(now.peer(), peer);
    let out = h
        .run(
            "shell",
            shell_args(&h.builder_dir("fac-s1"), &["echo", "still here"]),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, "still here\n");
    assert_eq!(tm.api_slave("s2").await["connected"], false);
    assert!(tm.master.registry().get("ghost").is_none());
    for p in [bad_pw, unknown, dup, proc] {
        p.stop().await;
    }
}

/// Only for a slave process (buildbot-worker): the test freezes it with SIGSTOP,
/// which an in-process autobot slave cannot be. The master's side is the same for
/// both; the autobot slave's side of a dead link is in the slave tests.
async fn dead_link_and_reconnect(imp: Impl) {
    let keepalive = Duration::from_secs(1);
    let Some((tm, proc, h)) =
        setup("dead_link_and_reconnect", imp, &[("s1", "pw1")], keepalive).await
    else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(proc.pid().unwrap());
    nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    let reason = tokio::time::timeout(DEADLINE, h.closed()).await.unwrap();
    let took = frozen.elapsed();
    assert!(reason.contains("keepalive"), "{reason}");
    assert!(took < keepalive * 3, "dead link noticed after {took:?}");
    assert!(
        wait_for(DEADLINE, || tm.master.registry().get("s1").is_none()).await,
        "s1 still registered"
    );
    // The registry drops a link as its teardown starts; the row follows.
    let deadline = Instant::now() + DEADLINE;
    let row = loop {
        let row = tm.master.db().slave("s1").await.unwrap().unwrap();
        if !row.connected || Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(!row.connected);
    assert!(row.disconnect_reason.unwrap().contains("keepalive"));
    // Thawed, the slave notices and comes back by itself.
    nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let back = tm.wait_connected("s1").await;
    let out = back
        .run("shell", shell_args(&back.builder_dir("fac-s1"), &["true"]))
        .await
        .unwrap();
    assert!(out.succeeded());
    assert_eq!(
        tm.master.db().slave_connections("s1").await.unwrap().len(),
        2
    );
    proc.stop().await;
}

async fn reconfig(imp: Impl) {
    let slaves = [("s1", "pw1"), ("s2", "pw2")];
    let Some((tm, proc, h)) = setup("reconfig", imp, &slaves, KEEPALIVE).await else {
        return;
    };
    let ini = tm.dir.path().join("master.ini");
    // Invalid: rejected, the old configuration keeps running.
    std::fs::write(&ini, "[:master:]\nslaveport = banana\n").unwrap();
    assert!(tm.master.reconfig().await.is_err());
    wait_log(&["reconfig rejected", "banana"]).await;
    assert!(h.is_connected());
    assert_eq!(tm.master.config().slaves.len(), 2);
    // Valid: a new factory gets its builder directory on the connected slave.
    let mut text = support::master_ini(&slaves);
    text.push_str("[more]\ntype = shell\nstep.x = true\n");
    support::write_master_ini(tm.dir.path(), &text);
    tm.master.reconfig().await.unwrap();
    let dir = proc.dir.join("more-s1");
    assert!(
        wait_for(DEADLINE, || dir.is_dir()).await,
        "more-s1 not made"
    );
    // s1 removed: its connection is closed with the reason.
    support::write_master_ini(tm.dir.path(), support::master_ini(&[("s2", "pw2")]));
    tm.master.reconfig().await.unwrap();
    let reason = tokio::time::timeout(DEADLINE, h.closed()).await.unwrap();
    assert!(reason.contains("removed from master.ini"), "{reason}");
    let api = tm.api_slaves().await;
    assert_eq!(api.as_array().unwrap().len(), 1, "{api}");
    proc.stop().await;
}

async fn shutdown(imp: Impl) {
    let Some((tm, proc, h)) = setup("shutdown", imp, &[("s1", "pw1")], KEEPALIVE).await else {
        return;
    };
    let mut cmd = h
        .start_command(
            "shell",
            shell_args(
                &h.builder_dir("fac-s1"),
                &["sh", "-c", "echo go; exec sleep 60"],
            ),
        )
        .await
        .unwrap();
    match cmd.next().await {
        Some(CommandEvent::Update(_)) => {}
        other => panic!("{other:?}"),
    }
    let TestMaster { dir, master } = tm;
    let started = Instant::now();
    master.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(20));
    // The command was interrupted (completed) or, at worst, reported lost.
    let end = loop {
        match cmd.next().await {
            Some(CommandEvent::Update(_)) => {}
            other => break other,
        }
    };
    assert!(
        matches!(end, Some(CommandEvent::Complete(_) | CommandEvent::Lost(_))),
        "{end:?}"
    );
    let db = support::master_db(&dir.path().join("state.sqlite"));
    let row = db.slave("s1").await.unwrap().unwrap();
    assert!(!row.connected);
    assert_eq!(
        row.disconnect_reason.as_deref(),
        Some("master shutting down")
    );
    proc.stop().await;
}

async fn slave_shutdown(imp: Impl) {
    let Some((_tm, mut proc, h)) = setup("slave_shutdown", imp, &[("s1", "pw1")], KEEPALIVE).await
    else {
        return;
    };
    h.shutdown().await.unwrap();
    tokio::time::timeout(DEADLINE, h.closed()).await.unwrap();
    assert!(proc.wait_exit(DEADLINE).await, "the slave did not exit");
    proc.stop().await;
}

/// The contract tests, run against both implementations, and those only a slave
/// process can take (`process_only`).
macro_rules! contract {
    ($($name:ident),* $(,)?; process_only: $($proc_name:ident),* $(,)?) => {
        mod buildbot_worker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Impl::BuildbotWorker).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $proc_name() {
                    super::$proc_name(super::Impl::BuildbotWorker).await
                }
            )*
        }
        mod autobot_slave {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Impl::Autobot).await
                }
            )*
        }
    };
}

contract!(
    connect_reports_info,
    shell,
    interrupt,
    file_commands,
    transfers,
    auth_refusals,
    reconfig,
    shutdown,
    slave_shutdown;
    process_only: dead_link_and_reconnect,
);

// ------------------------------------------------------------------ master only

fn master_dir(slaveport: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ini = support::master_ini(&[("s1", "pw1")])
        .replace("slaveport = 9010", &format!("slaveport = {slaveport}"));
    support::write_master_ini(dir.path(), ini);
    dir
}

fn free_ports() -> MasterOptions {
    MasterOptions {
        keepalive_interval: None,
        slaveport: Some(0),
        htmlport: Some(0),
        publichtmlport: None,
    }
}

#[tokio::test]
async fn second_master_on_one_directory_is_refused() {
    support::capture_logs();
    let dir = master_dir(9010);
    let first = Master::start_with(dir.path(), free_ports()).await.unwrap();
    let err = Master::start_with(dir.path(), free_ports())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("another master is already running in"),
        "{err}"
    );
    first.shutdown().await;
    // Released on shutdown.
    let again = Master::start_with(dir.path(), free_ports()).await.unwrap();
    again.shutdown().await;
}

#[tokio::test]
async fn busy_port_is_reported_through_ready() {
    support::capture_logs();
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = master_dir(port);
    let (control, handle) = autobot::daemon::control();
    let path = dir.path().to_path_buf();
    let task = tokio::spawn(async move { autobot::app::run(&path, control).await });
    let ready = handle.ready.await.unwrap();
    let msg = ready.unwrap_err();
    assert!(msg.contains(&format!("port {port} is in use")), "{msg}");
    assert!(task.await.unwrap().is_err());
}

#[tokio::test]
async fn run_reports_ready_and_stops_on_shutdown() {
    support::keep_sqlite("checks that the master made state.sqlite");
    support::capture_logs();
    let dir = master_dir(9010);
    // Pick free ports by binding port 0, then let the master have them.
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("0.0.0.0:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let ini = support::master_ini(&[("s1", "pw1")])
        .replace("slaveport = 9010", &format!("slaveport = {}", ports[0]))
        .replace("htmlport = 8010", &format!("htmlport = {}", ports[1]));
    support::write_master_ini(dir.path(), ini);
    let (control, handle) = autobot::daemon::control();
    let path = dir.path().to_path_buf();
    let task = tokio::spawn(async move { autobot::app::run(&path, control).await });
    let msg = handle.ready.await.unwrap().unwrap();
    assert_eq!(
        msg,
        format!(
            "master listening: slaves on :{}, web on :{}",
            ports[0], ports[1]
        )
    );
    let (status, body) = support::http_get(ports[1], "/api/v1/slaves").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v[0]["name"], "s1");
    assert_eq!(v[0]["connected"], false);
    assert!(v[0]["last_seen"].is_null());
    // A reconfig with a broken file is rejected and logged; the master keeps going.
    support::write_master_ini(dir.path(), "[slave:x\n");
    handle.reconfig.send(()).unwrap();
    wait_log(&["reconfig rejected"]).await;
    handle.shutdown.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(Path::new(&dir.path().join("state.sqlite")).is_file());
}
