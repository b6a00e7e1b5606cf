//! `autobot try` end to end (issue 24): the real binary in a developer's git or
//! hg working tree sends the base revision and the patch of the tree — a
//! modified file, a new one, a deleted one and a binary one — to a real master's
//! slaveport; the master builds it with the patch applied on an autobot slave and
//! on a stock buildbot-worker, and `--wait` follows the builds to their result.
//! Also: a patch that breaks the build fails the step it breaks, a patch that
//! does not apply fails the checkout with the rejected hunk in its log, a try
//! job sent while no slave is connected survives a master restart, wrong
//! credentials, unknown and closed builders and oversized patches are refused
//! with the reason (and logged), `.autobot/options` in a parent directory
//! supplies every option, `POST /api/v1/try` takes the same job, and the
//! waterfall and builder page show try builds apart.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use autobot::engine::ForceRequest;
use engine_common::*;

const USER: &str = "alice";
const TRY_PW: &str = "try-secret-7";

fn git(dir: &Path, args: &[&str]) -> String {
    support::run_ok(
        Command::new("git")
            .args(["-c", "user.name=Ann", "-c", "user.email=ann@example.org"])
            .args(args)
            .current_dir(dir),
    )
}

fn hg(dir: &Path, args: &[&str]) -> String {
    support::run_ok(
        Command::new("hg")
            .args(["--config", "ui.username=Ann <ann@example.org>"])
            .args(args)
            .current_dir(dir)
            .env("HGPLAIN", "1"),
    )
}

/// The base tree: `check.sh` says the base is fine; the patch rewrites it to
/// check every kind of change.
fn write_base(dir: &Path) {
    std::fs::write(dir.join("check.sh"), "echo base ok\n").unwrap();
    std::fs::write(dir.join("greeting"), "base\n").unwrap();
    std::fs::write(dir.join("removed.txt"), "to be removed\n").unwrap();
    let blob: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    std::fs::write(dir.join("blob.bin"), blob).unwrap();
}

const CHECKS: &str = "set -e\n\
    test \"$(cat greeting)\" = patched\n\
    test -f added.txt\n\
    test ! -e removed.txt\n\
    test \"$(cksum < blob.bin)\" = \"$(cat blob.sum)\"\n\
    echo all patched\n";

/// Change the working tree in every way: modify, add, delete, binary. The
/// caller tells the VC about the added and removed files.
fn change_tree(dir: &Path) {
    std::fs::write(dir.join("check.sh"), CHECKS).unwrap();
    std::fs::write(dir.join("greeting"), "patched\n").unwrap();
    std::fs::write(dir.join("added.txt"), "new\n").unwrap();
    let blob: Vec<u8> = (0..=255u8).rev().chain([0, 0, 7]).collect();
    std::fs::write(dir.join("blob.bin"), blob).unwrap();
    let sum = support::run_ok(
        Command::new("sh")
            .args(["-c", "cksum < blob.bin"])
            .current_dir(dir),
    );
    std::fs::write(dir.join("blob.sum"), format!("{sum}\n")).unwrap();
}

/// An upstream git repository (branch main) and a developer's clone of it.
fn git_project(root: &Path) -> (PathBuf, PathBuf, String) {
    let upstream = root.join("upstream");
    std::fs::create_dir_all(&upstream).unwrap();
    git(&upstream, &["init", "-q", "-b", "main"]);
    write_base(&upstream);
    git(&upstream, &["add", "."]);
    git(&upstream, &["commit", "-q", "-m", "base"]);
    let base = git(&upstream, &["rev-parse", "HEAD"]);
    let work = root.join("work");
    git(
        root,
        &[
            "clone",
            "-q",
            upstream.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    (upstream, work, base)
}

fn git_change(work: &Path) {
    change_tree(work);
    git(work, &["add", "added.txt", "blob.sum"]);
    git(work, &["rm", "-q", "removed.txt"]);
}

/// `[try]` and the factories: `proj` (open to try) and `other` (not).
fn ini(source: &str, extra_try: &str) -> String {
    master_ini(
        &format!(
            "[proj]\ntype = shell\n{source}\nstep.check = sh check.sh\n\n\
             [other]\ntype = shell\nstep.ok = true\n\n\
             [try]\nusers = {USER}:{TRY_PW} bob:other-pw\nbuilders = proj-{SLAVE}\n{extra_try}\n"
        ),
        "",
    )
}

/// Run `autobot try ARGS` in `cwd` with `HOME=home` (off the async runtime).
async fn try_in(args: &[String], cwd: &Path, home: &Path, stdin: Option<Vec<u8>>) -> Output {
    let args = args.to_vec();
    let (cwd, home) = (cwd.to_path_buf(), home.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(autobot_bin())
            .arg("try")
            .args(&args)
            .current_dir(&cwd)
            .env("HOME", &home)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(bytes) = stdin {
            child.stdin.take().unwrap().write_all(&bytes).unwrap();
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `--master`, `--username`, `--passwd` for `m`, then `more`.
fn args(m: &autobot::app::Master, more: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--master".into(),
        format!("127.0.0.1:{}", m.slaveport()),
        "--username".into(),
        USER.into(),
        "--passwd".into(),
        TRY_PW.into(),
    ];
    v.extend(more.iter().map(|s| s.to_string()));
    v
}

/// The newest build of a builder (its number).
async fn newest(m: &EngineMaster, builder: &str) -> i64 {
    let (_, body) =
        support::http_get(m.master.htmlport(), &format!("/api/v1/builders/{builder}")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["last_build"]["number"].as_i64().unwrap_or(0)
}

/// One HTTP POST with a body and headers to the master's htmlport.
async fn post(port: u16, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let auth = auth
        .map(|a| {
            use base64::Engine;
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        })
        .unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_tree_is_tried_on_an_autobot_slave() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (upstream, work, base) = git_project(root.path());
    let m = EngineMaster::start(
        &ini(
            &format!("git = {}#main", upstream.display()),
            "maxPatchSize = 65536",
        ),
        Duration::from_secs(30),
    )
    .await;
    let _slave = m.slave().await;
    let builder = format!("proj-{SLAVE}");

    // An unchanged tree: an empty patch builds the base revision.
    let o = try_in(&args(&m.master, &["--wait"]), &work, &home, None).await;
    assert!(o.status.success(), "{}", text(&o));
    let n = newest(&m, &builder).await;
    assert!(m.log_text(&builder, n, "check").await.contains("base ok"));

    // --dryrun: says what it would send, sends nothing.
    git_change(&work);
    let o = try_in(&["--dryrun".to_string()], &work, &home, None).await;
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(&format!("base revision: {base}")), "{out}");
    assert!(out.contains("GIT binary patch"), "{out}");
    assert_eq!(newest(&m, &builder).await, n, "a dry run builds nothing");

    // Every kind of change, built and waited for.
    let o = try_in(
        &args(
            &m.master,
            &[
                "-b",
                &builder,
                "--wait",
                "--comment",
                "every kind of change",
            ],
        ),
        &work,
        &home,
        None,
    )
    .await;
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let n = newest(&m, &builder).await;
    assert!(out.contains(&format!("{builder}: success")), "{out}");
    assert!(
        out.contains(&format!("/builders/{builder}/builds/{n}")),
        "the build page's URL: {out}"
    );
    assert!(
        m.log_text(&builder, n, "check")
            .await
            .contains("all patched"),
        "{}",
        m.log_text(&builder, n, "checkout").await
    );
    let b = m.build(&builder, n).await;
    assert_eq!(
        b.properties.get("got_revision").map(|p| p.0.as_str()),
        Some(base.as_str())
    );
    assert_eq!(b.build.reason, "try by alice: every kind of change");

    // The waterfall marks it; the builder page shows who and why.
    let (_, page) = support::http_get(m.master.htmlport(), "/").await;
    assert!(page.contains("class=\"try\""), "{page}");
    let (_, page) = support::http_get(m.master.htmlport(), &format!("/builders/{builder}")).await;
    assert!(
        page.contains("try by alice: every kind of change"),
        "{page}"
    );

    // The next ordinary build starts from a clean tree.
    let id = m.force(&builder, ForceRequest::default()).await;
    assert_eq!(m.wait_request(id).await.result.as_deref(), Some("success"));
    let n = newest(&m, &builder).await;
    assert!(m
        .log_text(&builder, n, "checkout")
        .await
        .contains("try build's patch: checking out afresh"));
    assert!(m.log_text(&builder, n, "check").await.contains("base ok"));

    // A patch that breaks the build fails the step it breaks.
    std::fs::write(work.join("check.sh"), "echo broken; exit 7\n").unwrap();
    let o = try_in(&args(&m.master, &["--wait"]), &work, &home, None).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let n = newest(&m, &builder).await;
    let b = m.build(&builder, n).await;
    let results: Vec<(&str, Option<&str>)> = b
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.result.as_deref()))
        .collect();
    assert_eq!(
        results,
        vec![("checkout", Some("success")), ("check", Some("failure"))]
    );

    // A patch that does not apply fails the checkout, with the hunk in its log.
    let bad = "diff --git a/greeting b/greeting\n--- a/greeting\n+++ b/greeting\n\
               @@ -1 +1 @@\n-not the base text\n+x\n";
    let o = try_in(
        &args(&m.master, &["--wait", "--baserev", &base, "--diff", "-"]),
        &work,
        &home,
        Some(bad.as_bytes().to_vec()),
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let n = newest(&m, &builder).await;
    let b = m.build(&builder, n).await;
    assert_eq!(b.steps[0].result.as_deref(), Some("failure"));
    let log = m.log_text(&builder, n, "checkout").await;
    assert!(log.contains("patch failed: greeting:1"), "{log}");
    assert!(
        log.contains("not the base text"),
        "the rejected hunk: {log}"
    );

    // Refusals, each with its reason, each logged.
    let mut wrong = args(&m.master, &[]);
    wrong[5] = "nope".into();
    let o = try_in(&wrong, &work, &home, None).await;
    assert!(!o.status.success());
    assert!(
        text(&o).contains("refused the try credentials"),
        "{}",
        text(&o)
    );
    assert!(support::log_has(&[
        "refused try",
        "wrong try user or password"
    ]));
    let o = try_in(&args(&m.master, &["-b", "nosuch"]), &work, &home, None).await;
    let out = text(&o);
    assert!(!o.status.success());
    assert!(
        out.contains(&format!(
            "no builder named \"nosuch\"; try may use: {builder}"
        )),
        "{out}"
    );
    let o = try_in(
        &args(&m.master, &["-b", &format!("other-{SLAVE}")]),
        &work,
        &home,
        None,
    )
    .await;
    let out = text(&o);
    assert!(!o.status.success());
    assert!(out.contains("is not open to try jobs"), "{out}");
    assert!(support::log_has(&[
        "try from alice",
        "not open to try jobs"
    ]));
    let big = format!(
        "diff --git a/big b/big\nnew file mode 100644\n--- /dev/null\n+++ b/big\n@@ -0,0 +1 @@\n+{}\n",
        "x".repeat(70_000)
    );
    let o = try_in(
        &args(&m.master, &["--diff", "-"]),
        &work,
        &home,
        Some(big.into_bytes()),
    )
    .await;
    let out = text(&o);
    assert!(!o.status.success());
    assert!(out.contains("maxPatchSize"), "{out}");

    // POST /api/v1/try: the same job over HTTP Basic.
    let job = serde_json::json!({"builders": [builder], "baserev": base, "comment": "over http"});
    let (status, body) = post(
        m.master.htmlport(),
        "/api/v1/try",
        Some("bob:wrong"),
        &job.to_string(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(
        m.master.htmlport(),
        "/api/v1/try",
        Some("bob:other-pw"),
        &job.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["accepted"]["requests"][0][1].as_i64().unwrap();
    assert_eq!(m.wait_request(id).await.result.as_deref(), Some("success"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobot_options_in_a_parent_directory_give_every_option() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let src = home.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let (upstream, _, _) = git_project(root.path());
    let work = src.join("proj");
    git(
        &src,
        &[
            "clone",
            "-q",
            upstream.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git_change(&work);
    let m = EngineMaster::start(
        &ini(&format!("git = {}#main", upstream.display()), ""),
        Duration::from_secs(30),
    )
    .await;
    let _slave = m.slave().await;
    let options = src.join(".autobot/options");
    std::fs::create_dir_all(options.parent().unwrap()).unwrap();
    std::fs::write(
        &options,
        format!(
            "try_master = '127.0.0.1:{}'\ntry_username = {USER}\ntry_password = {TRY_PW}\n\
             try_builders = proj-{SLAVE}\ntry_vc = git\ntry_branch = main\ntry_wait = true\n",
            m.master.slaveport()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&options, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sub = work.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let o = try_in(&[], &sub, &home, None).await;
    assert!(!o.status.success());
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    std::fs::set_permissions(&options, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = try_in(&[], &sub, &home, None).await;
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(&format!("proj-{SLAVE}: success")), "{out}");
    let n = newest(&m, &format!("proj-{SLAVE}")).await;
    assert!(m
        .log_text(&format!("proj-{SLAVE}"), n, "check")
        .await
        .contains("all patched"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hg_tree_is_tried_on_an_autobot_slave() {
    if !support::need_tools(&[("hg", "apt-get install mercurial")]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let upstream = root.path().join("upstream");
    std::fs::create_dir_all(&upstream).unwrap();
    hg(&upstream, &["init"]);
    write_base(&upstream);
    hg(&upstream, &["add", "-q"]);
    hg(&upstream, &["commit", "-q", "-m", "base"]);
    let base = hg(&upstream, &["log", "-r", ".", "--template", "{node}"]);
    let work = root.path().join("work");
    hg(
        root.path(),
        &[
            "clone",
            "-q",
            upstream.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    change_tree(&work);
    hg(&work, &["add", "-q", "added.txt", "blob.sum"]);
    hg(&work, &["rm", "-q", "removed.txt"]);
    let m = EngineMaster::start(
        &ini(&format!("hg = {}", upstream.display()), ""),
        Duration::from_secs(30),
    )
    .await;
    let _slave = m.slave().await;
    let builder = format!("proj-{SLAVE}");
    let o = try_in(&args(&m.master, &["--wait"]), &work, &home, None).await;
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let n = newest(&m, &builder).await;
    assert!(
        m.log_text(&builder, n, "check")
            .await
            .contains("all patched"),
        "{}",
        m.log_text(&builder, n, "checkout").await
    );
    let b = m.build(&builder, n).await;
    assert_eq!(
        b.properties.get("got_revision").map(|p| p.0.as_str()),
        Some(base.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_tree_is_tried_on_a_buildbot_worker() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (upstream, work, base) = git_project(root.path());
    git_change(&work);
    let m = EngineMaster::start(
        &ini(&format!("git = {}#main", upstream.display()), ""),
        Duration::from_secs(30),
    )
    .await;
    let Some(_worker) = m.worker().await else {
        return;
    };
    let builder = format!("proj-{SLAVE}");
    let o = try_in(&args(&m.master, &["--wait"]), &work, &home, None).await;
    let out = text(&o);
    let n = newest(&m, &builder).await;
    assert!(
        o.status.success(),
        "{out}\n{}",
        m.log_text(&builder, n, "checkout").await
    );
    assert!(m
        .log_text(&builder, n, "check")
        .await
        .contains("all patched"));
    // A patch that does not apply fails the checkout there too.
    let bad = "diff --git a/greeting b/greeting\n--- a/greeting\n+++ b/greeting\n\
               @@ -1 +1 @@\n-not the base text\n+x\n";
    let o = try_in(
        &args(&m.master, &["--wait", "--baserev", &base, "--diff", "-"]),
        &work,
        &home,
        Some(bad.as_bytes().to_vec()),
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let n = newest(&m, &builder).await;
    let log = m.log_text(&builder, n, "checkout").await;
    assert!(log.contains("patch failed: greeting:1"), "{log}");
    // The next ordinary build starts from a clean tree.
    let id = m.force(&builder, ForceRequest::default()).await;
    assert_eq!(m.wait_request(id).await.result.as_deref(), Some("success"));
    let n = newest(&m, &builder).await;
    assert!(m.log_text(&builder, n, "check").await.contains("base ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_job_survives_a_master_restart() {
    support::capture_logs();
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (upstream, work, _) = git_project(root.path());
    git_change(&work);
    let mdir = root.path().join("master");
    std::fs::create_dir_all(&mdir).unwrap();
    support::write_master_ini(
        &mdir,
        ini(&format!("git = {}#main", upstream.display()), ""),
    );
    // No slave yet: the try job waits in the queue.
    let master = start_master(&mdir, Duration::from_secs(30)).await;
    let o = try_in(&args(&master, &["--comment", "kept"]), &work, &home, None).await;
    assert!(o.status.success(), "{}", text(&o));
    master.shutdown().await;
    let master = start_master(&mdir, Duration::from_secs(30)).await;
    let _slave = support::Impl::Autobot
        .start(&mdir.join("slave"), master.slaveport(), SLAVE, PASSWORD)
        .await
        .unwrap();
    let builder = format!("proj-{SLAVE}");
    let db = master.db().clone();
    wait_until("the try build to finish after the restart", || {
        let db = db.clone();
        let builder = builder.clone();
        async move {
            db.build(&builder, 1)
                .await
                .ok()
                .flatten()
                .is_some_and(|b| b.build.result.is_some())
        }
    })
    .await;
    let b = db.build(&builder, 1).await.unwrap().unwrap();
    assert_eq!(b.build.result.as_deref(), Some("success"), "{:#?}", b.steps);
    assert_eq!(b.build.reason, "try by alice: kept");
    let f = db
        .log_file(&builder, 1, "check", "stdio")
        .await
        .unwrap()
        .unwrap();
    let log = std::fs::read_to_string(&f.path).unwrap();
    assert!(log.contains("all patched"), "{log}");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_waiting_and_leaves_the_try_build_running() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (upstream, work, _) = git_project(root.path());
    git_change(&work);
    let gate = root.path().join("gate");
    let m = EngineMaster::start(
        &master_ini(
            &format!(
                "[slow]\ntype = shell\ngit = {}#main\n\
                 step.wait = sh -c \"while [ ! -e {} ]; do sleep 0.05; done\"\n\n\
                 [try]\nusers = {USER}:{TRY_PW}\n",
                upstream.display(),
                gate.display()
            ),
            "",
        ),
        Duration::from_secs(30),
    )
    .await;
    let _slave = m.slave().await;
    let builder = format!("slow-{SLAVE}");
    let child = Command::new(autobot_bin())
        .arg("try")
        .args(args(&m.master, &["--wait"]))
        .current_dir(&work)
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let db = m.master.db().clone();
    let b = builder.clone();
    wait_until("the try build to run its step", || {
        let db = db.clone();
        let b = b.clone();
        async move {
            db.build(&b, 1).await.ok().flatten().is_some_and(|d| {
                d.steps
                    .iter()
                    .any(|s| s.name == "wait" && s.started_at.is_some())
            })
        }
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        text(&out).contains("the try builds go on"),
        "{}",
        text(&out)
    );
    let running = db.build(&builder, 1).await.unwrap().unwrap();
    assert!(running.build.result.is_none(), "the build goes on");
    std::fs::write(&gate, "").unwrap();
    let id = running.requests[0];
    assert_eq!(m.wait_request(id).await.result.as_deref(), Some("success"));
}
