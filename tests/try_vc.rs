//! `autobot try` from svn, bzr and darcs working trees (issue 25), end to end: the
//! real binary in a developer's working copy finds the tree, its base revision
//! (svn's revision, bzr's revno, the newest darcs patch's hash) and its diff
//! (`svn diff`, `brz diff`, `darcs diff -u`) — a modified file, an added one and a
//! removed one — and sends them to a real master; the autobot slave checks out the
//! base revision (not the newer upstream commit made since) and applies the patch
//! with patch(1), and `--wait` reports success. A patch that does not apply fails
//! the checkout step, the rejected hunk in its log.
//!
//! Without the tool the test fails under `CI=true` and prints SKIP elsewhere.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use engine_common::*;

const USER: &str = "alice";
const TRY_PW: &str = "try-secret-7";

/// The check the patched tree must pass: every kind of change applied, and the
/// tree at the base revision (the upstream commit made after it is absent).
const CHECKS: &str = "set -e\n\
    test \"$(cat greeting)\" = patched\n\
    test \"$(cat added.txt)\" = new\n\
    test ! -e removed.txt\n\
    test ! -e later.txt\n\
    echo all patched\n";

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    support::run_ok(
        Command::new(program)
            .args(args)
            .current_dir(dir)
            .env("BRZ_EMAIL", "Ann <ann@example.org>"),
    )
}

fn write_base(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("check.sh"), "echo base ok\n").unwrap();
    std::fs::write(dir.join("greeting"), "base\n").unwrap();
    std::fs::write(dir.join("removed.txt"), "to be removed\n").unwrap();
}

/// The developer's changes (the caller tells the VC of the added and removed files).
fn change_tree(dir: &Path) {
    std::fs::write(dir.join("check.sh"), CHECKS).unwrap();
    std::fs::write(dir.join("greeting"), "patched\n").unwrap();
    std::fs::write(dir.join("added.txt"), "new\n").unwrap();
}

/// A patch of `greeting` that cannot apply to the base.
const BAD_PATCH: &str = "--- greeting\n+++ greeting\n@@ -1 +1 @@\n-no such line\n+patched\n";

fn ini(source: &str) -> String {
    master_ini(
        &format!(
            "[proj]\ntype = shell\n{source}\nstep.check = sh check.sh\n\n\
             [try]\nusers = {USER}:{TRY_PW}\nbuilders = proj-{SLAVE}\n"
        ),
        "pollInterval = 3600",
    )
}

/// Run `autobot try ARGS` in `cwd` (off the async runtime).
async fn try_in(m: &autobot::app::Master, more: &[&str], cwd: &Path) -> Output {
    let mut args: Vec<String> = vec![
        "try".into(),
        "--master".into(),
        format!("127.0.0.1:{}", m.slaveport()),
        "--username".into(),
        USER.into(),
        "--passwd".into(),
        TRY_PW.into(),
    ];
    args.extend(more.iter().map(|s| s.to_string()));
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(autobot_bin())
            .args(&args)
            .current_dir(&cwd)
            .env("HOME", &cwd)
            .stdin(Stdio::null())
            .output()
            .unwrap()
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

async fn newest(m: &EngineMaster, builder: &str) -> i64 {
    let (_, body) =
        support::http_get(m.master.htmlport(), &format!("/api/v1/builders/{builder}")).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["last_build"]["number"].as_i64().unwrap_or(0)
}

/// A try from `work` (whose base is `base`) builds with the patch applied; a
/// patch that does not apply (`--diff`, `-p0`) fails the checkout step.
async fn try_builds_and_a_bad_patch_fails(source: &str, work: &Path, base: &str, vc: &str) {
    let m = EngineMaster::start(&ini(source), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let builder = format!("proj-{SLAVE}");

    let dry = try_in(&m.master, &["--dryrun"], work).await;
    let out = text(&dry);
    assert!(dry.status.success(), "{out}");
    assert!(out.contains(&format!("vc: {vc}")), "{out}");
    assert!(out.contains(&format!("base revision: {base}")), "{out}");

    let o = try_in(&m.master, &["--wait"], work).await;
    let out = text(&o);
    let n = newest(&m, &builder).await;
    assert!(
        o.status.success(),
        "{out}\n{}",
        m.log_text(&builder, n, "checkout").await
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
        Some(base)
    );

    let patch = work.join("bad.diff");
    std::fs::write(&patch, BAD_PATCH).unwrap();
    let o = try_in(
        &m.master,
        &[
            "--wait",
            "--vc",
            vc,
            "--baserev",
            base,
            "-p0",
            "--diff",
            patch.to_str().unwrap(),
        ],
        work,
    )
    .await;
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    let n2 = newest(&m, &builder).await;
    assert!(n2 > n);
    let b2 = m.build(&builder, n2).await;
    assert_eq!(b2.build.result.as_deref(), Some("failure"), "{b2:?}");
    let log = m.log_text(&builder, n2, "checkout").await;
    assert!(log.contains("patch"), "{log}");
    assert!(log.contains("FAILED") || log.contains("failed"), "{log}");
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svn_working_copy_is_tried() {
    if !support::need_tools(&[
        ("svn", "apt-get install subversion"),
        ("svnadmin", "apt-get install subversion"),
        ("patch", "apt-get install patch"),
    ]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    run(root.path(), "svnadmin", &["create", repo.to_str().unwrap()]);
    let trunk = format!("file://{}/trunk", repo.display());
    let import = root.path().join("import");
    write_base(&import);
    run(
        root.path(),
        "svn",
        &[
            "import",
            "-q",
            "-m",
            "base",
            import.to_str().unwrap(),
            &trunk,
        ],
    );
    let work = root.path().join("work");
    run(
        root.path(),
        "svn",
        &["checkout", "-q", &trunk, work.to_str().unwrap()],
    );
    let base = run(&work, "svn", &["info", "--show-item", "revision"]);
    // Upstream moves on after the working copy was updated.
    let other = root.path().join("other");
    run(
        root.path(),
        "svn",
        &["checkout", "-q", &trunk, other.to_str().unwrap()],
    );
    std::fs::write(other.join("later.txt"), "later\n").unwrap();
    run(&other, "svn", &["add", "-q", "later.txt"]);
    run(&other, "svn", &["commit", "-q", "-m", "later"]);
    change_tree(&work);
    run(&work, "svn", &["add", "-q", "added.txt"]);
    run(&work, "svn", &["rm", "-q", "removed.txt"]);
    try_builds_and_a_bad_patch_fails(&format!("svn = {trunk}"), &work, &base, "svn").await;
}

fn brz_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Debian's brz runs under the interpreter PYTHONEXECUTABLE names rather
        // than a venv's python3 first on PATH (the test tools'); the child
        // processes, autobot try's and the slave's, inherit it.
        let path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(brz) = std::env::split_paths(&path)
            .map(|d| d.join("brz"))
            .find(|p| p.is_file())
        {
            std::env::set_var("PYTHONEXECUTABLE", brz);
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bazaar_tree_is_tried() {
    brz_env();
    if !support::need_tools(&[
        ("brz", "apt-get install brz"),
        ("patch", "apt-get install patch"),
    ]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let upstream = root.path().join("upstream");
    write_base(&upstream);
    run(&upstream, "brz", &["init", "-q"]);
    run(&upstream, "brz", &["add", "-q"]);
    run(&upstream, "brz", &["commit", "-q", "-m", "base"]);
    let work: PathBuf = root.path().join("work");
    run(
        root.path(),
        "brz",
        &[
            "branch",
            "-q",
            upstream.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let base = run(&work, "brz", &["revno", "--tree"]);
    std::fs::write(upstream.join("later.txt"), "later\n").unwrap();
    run(&upstream, "brz", &["add", "-q", "later.txt"]);
    run(&upstream, "brz", &["commit", "-q", "-m", "later"]);
    change_tree(&work);
    run(&work, "brz", &["add", "-q", "added.txt"]);
    run(&work, "brz", &["rm", "-q", "removed.txt"]);
    try_builds_and_a_bad_patch_fails(
        &format!("bzr = {}", upstream.display()),
        &work,
        &base,
        "bzr",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_darcs_repository_is_tried() {
    if !support::need_tools(&[
        ("darcs", "apt-get install darcs"),
        ("patch", "apt-get install patch"),
    ]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let upstream = root.path().join("upstream");
    write_base(&upstream);
    run(&upstream, "darcs", &["init", "-q"]);
    run(
        &upstream,
        "darcs",
        &["add", "-q", "check.sh", "greeting", "removed.txt"],
    );
    run(
        &upstream,
        "darcs",
        &[
            "record",
            "-a",
            "-q",
            "-m",
            "base",
            "-A",
            "Ann <ann@example.org>",
        ],
    );
    let work = root.path().join("work");
    run(
        root.path(),
        "darcs",
        &[
            "clone",
            "-q",
            upstream.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let log = run(&work, "darcs", &["log", "--last=1", "--xml-output"]);
    let base = log
        .split(" hash='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap()
        .to_string();
    std::fs::write(upstream.join("later.txt"), "later\n").unwrap();
    run(&upstream, "darcs", &["add", "-q", "later.txt"]);
    run(
        &upstream,
        "darcs",
        &[
            "record",
            "-a",
            "-q",
            "-m",
            "later",
            "-A",
            "Ann <ann@example.org>",
        ],
    );
    change_tree(&work);
    run(&work, "darcs", &["add", "-q", "added.txt"]);
    run(&work, "darcs", &["remove", "-q", "removed.txt"]);
    std::fs::remove_file(work.join("removed.txt")).unwrap();
    try_builds_and_a_bad_patch_fails(
        &format!("darcs = {}", upstream.display()),
        &work,
        &base,
        "darcs",
    )
    .await;
}
