//! `autobot try` from svn, bzr, darcs, cvs and arch working trees (issue 25), end
//! to end: the real binary in a developer's working copy finds the tree, its base
//! revision (svn's revision, bzr's revno, the newest darcs patch's hash, the time
//! of the try for cvs, tla's tree revision) and its diff (`svn diff`, `brz diff`,
//! `darcs diff -u`, `cvs diff -u -N`, `diff -ruN` against the Arch revision
//! exported) — a modified file, an added one and a removed one — and sends them to
//! a real master; the autobot slave checks out the base revision (not the newer
//! upstream commit made since; cvs has none: its base is now) and applies the
//! patch with patch(1), and `--wait` reports success. A patch that does not apply
//! fails the checkout step, the rejected hunk in its log.
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

/// Run `autobot try ARGS` in `cwd` (off the async runtime), HOME at `home` (the
/// work tree itself but for Arch, which keeps the developer's archives there).
async fn try_in_home(m: &autobot::app::Master, more: &[&str], cwd: &Path, home: &Path) -> Output {
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
    let home = home.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(autobot_bin())
            .args(&args)
            .current_dir(&cwd)
            .env("HOME", &home)
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
    try_builds_from(source, work, Some(base), vc, work).await;
}

/// [`try_builds_and_a_bad_patch_fails`] where the base is whatever try says
/// (`None`: CVS's, the time of the try).
async fn try_builds_from(source: &str, work: &Path, base: Option<&str>, vc: &str, home: &Path) {
    let m = EngineMaster::start(&ini(source), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let builder = format!("proj-{SLAVE}");

    let dry = try_in_home(&m.master, &["--dryrun"], work, home).await;
    let out = text(&dry);
    assert!(dry.status.success(), "{out}");
    assert!(out.contains(&format!("vc: {vc}")), "{out}");
    let said = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("base revision: "))
        .unwrap_or_else(|| panic!("no base revision in {out}"))
        .to_string();
    // CVS's base is the time of each try: the real one below comes a moment
    // after the dry run, so its revision is that time or a later one.
    let base_is_now = base.is_none();
    if let Some(base) = base {
        assert_eq!(said, base, "{out}");
    }
    let base = said.as_str();

    let o = try_in_home(&m.master, &["--wait"], work, home).await;
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
    let got = b.properties.get("got_revision").map(|p| p.0.as_str());
    if base_is_now {
        // "YYYY-MM-DD HH:MM:SS +0000" strings order as their times do.
        let got = got.unwrap_or_default();
        assert!(
            got >= base && got.len() == base.len(),
            "{got:?} before {base:?}"
        );
    } else {
        assert_eq!(got, Some(base));
    }

    let patch = work.join("bad.diff");
    std::fs::write(&patch, BAD_PATCH).unwrap();
    let o = try_in_home(
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
        home,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cvs_working_copy_is_tried() {
    if !support::need_tools(&[
        ("cvs", "apt-get install cvs"),
        ("patch", "apt-get install patch"),
    ]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cvsroot = root.path().join("cvsroot");
    let cvs = |dir: &Path, args: &[&str]| {
        support::run_ok(
            Command::new("cvs")
                .arg("-f")
                .args(args)
                .current_dir(dir)
                .env("HOME", root.path())
                .env("LC_ALL", "C"),
        )
    };
    cvs(root.path(), &["-d", cvsroot.to_str().unwrap(), "init"]);
    let import = root.path().join("import");
    write_base(&import);
    cvs(
        &import,
        &[
            "-d",
            cvsroot.to_str().unwrap(),
            "-q",
            "import",
            "-m",
            "base",
            "proj",
            "vendor",
            "start",
        ],
    );
    cvs(
        root.path(),
        &[
            "-d",
            cvsroot.to_str().unwrap(),
            "-q",
            "checkout",
            "-d",
            "work",
            "proj",
        ],
    );
    let work = root.path().join("work");
    // The base of a CVS try is the time of the try (as Buildbot's): a commit
    // made upstream before it is in the tree, so this test has none.
    change_tree(&work);
    cvs(&work, &["-q", "add", "added.txt"]);
    std::fs::remove_file(work.join("removed.txt")).unwrap();
    cvs(&work, &["-q", "rm", "removed.txt"]);
    // From a subdirectory-free tree's top and the CVS date form.
    try_builds_from(
        &format!("cvs = {} proj", cvsroot.display()),
        &work,
        None,
        "cvs",
        &work,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arch_tree_is_tried() {
    if !support::need_tools(&[
        ("tla", "apt-get install tla"),
        ("patch", "apt-get install patch"),
        ("diff", "apt-get install diffutils"),
    ]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let archive = root.path().join("archive");
    let upstream = root.path().join("upstream");
    std::fs::create_dir_all(&home).unwrap();
    const ARCHIVE: &str = "ann@example.org--try";
    const VERSION: &str = "proj--main--0";
    // tla reads the developer's ~/.arch-params: a HOME of the test's own, for
    // `autobot try` too.
    let tla = |dir: &Path, args: &[&str]| {
        support::run_ok(
            Command::new("tla")
                .args(args)
                .current_dir(dir)
                .env("HOME", &home),
        )
    };
    tla(root.path(), &["my-id", "Ann <ann@example.org>"]);
    tla(
        root.path(),
        &["make-archive", ARCHIVE, archive.to_str().unwrap()],
    );
    tla(root.path(), &["my-default-archive", ARCHIVE]);
    tla(root.path(), &["archive-setup", VERSION]);
    write_base(&upstream);
    tla(&upstream, &["init-tree", VERSION]);
    tla(&upstream, &["add", "check.sh", "greeting", "removed.txt"]);
    tla(&upstream, &["import", "-L", "base"]);
    let work = root.path().join("work");
    tla(
        root.path(),
        &[
            "get",
            &format!("{ARCHIVE}/{VERSION}"),
            work.to_str().unwrap(),
        ],
    );
    let base = tla(&work, &["tree-revision"]).trim().to_string();
    std::fs::write(upstream.join("later.txt"), "later\n").unwrap();
    tla(&upstream, &["add", "later.txt"]);
    tla(&upstream, &["commit", "-s", "later"]);
    change_tree(&work);
    tla(&work, &["add", "added.txt"]);
    tla(&work, &["rm", "removed.txt"]);
    try_builds_from(
        &format!(
            "arch = {ARCHIVE}/{VERSION}\narchiveLocation = {}",
            archive.display()
        ),
        &work,
        Some(&base),
        "arch",
        &home,
    )
    .await;
}
