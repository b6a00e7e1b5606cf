//! The slave as a malicious master would use it: every file command, sent over the
//! real protocol by the fake master of `slave_harness`, with `..`, absolute paths,
//! and symbolic links out of the basedir at the source, at the destination and in
//! the middle; links swapped in between two commands, while a command runs (a
//! watched logfile), and swapped back and forth as fast as the kernel allows while
//! commands keep coming. A sentinel directory outside the basedir is hashed before
//! and after (names, kinds, modes, sizes, times, contents, link targets): nothing
//! in it may change, nothing of it may come back to the master, and every refusal
//! says why.

#[path = "slave_harness/mod.rs"]
mod slave_harness;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rmpv::Value;
use slave_harness::*;

/// A directory outside the basedir and what it looked like.
struct Sentinel {
    dir: tempfile::TempDir,
    secret: String,
    before: String,
}

impl Sentinel {
    fn new() -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let secret = format!("TOP-SECRET-{}", std::process::id());
        let d = dir.path();
        std::fs::write(d.join("secret"), &secret).unwrap();
        std::fs::write(d.join("victim.txt"), &secret).unwrap();
        std::fs::write(d.join("out.log"), &secret).unwrap();
        std::fs::write(d.join("only-outside"), &secret).unwrap();
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::write(d.join("sub/deeper/file"), &secret).unwrap();
        std::fs::create_dir_all(d.join("d")).unwrap();
        std::fs::write(d.join("d/f"), &secret).unwrap();
        std::fs::create_dir_all(d.join("inner")).unwrap();
        std::fs::write(d.join("inner/x"), &secret).unwrap();
        std::fs::set_permissions(d.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("secret", d.join("link")).unwrap();
        let before = fingerprint(d);
        Sentinel {
            dir,
            secret,
            before,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn s(&self) -> String {
        self.path().display().to_string()
    }

    /// Nothing outside changed.
    fn assert_untouched(&self) {
        let now = fingerprint(self.path());
        assert_eq!(
            self.before, now,
            "the sentinel directory outside the basedir changed"
        );
    }
}

/// Everything about a tree (not following links), one line per entry with a
/// SHA-256 of each file's content; access times aside.
fn fingerprint(root: &Path) -> String {
    let mut entries: BTreeMap<PathBuf, String> = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else {
                let data = std::fs::read(&p).unwrap();
                let h = ring::digest::digest(&ring::digest::SHA256, &data);
                format!("file {:?}", h.as_ref())
            };
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                format!(
                    "{what} mode {:o} size {} mtime {}.{} ino {}",
                    m.mode(),
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ino()
                ),
            );
        }
    }
    walk(root, root, &mut entries);
    entries
        .iter()
        .map(|(p, what)| format!("{}: {what}\n", p.display()))
        .collect()
}

/// `rel` as a relative path from `from` to `to` (both absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let depth = from.components().count() - 1;
    let mut p = PathBuf::new();
    for _ in 0..depth {
        p.push("..");
    }
    p.join(to.strip_prefix("/").unwrap())
}

fn link(target: impl AsRef<Path>, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn transfer(path_key: &str, path: &str) -> Value {
    args(vec![
        (path_key, s(path)),
        ("blocksize", Value::from(4096)),
        ("maxsize", Value::Nil),
        ("mode", Value::Nil),
    ])
}

fn shell_in(workdir: &str, argv: &[&str]) -> Value {
    args(vec![("workdir", s(workdir)), ("command", strs(argv))])
}

/// Everything a command sent back, as text (to look for the secret in).
fn all_text(r: &CommandResult) -> String {
    let mut t = format!("{:?}", r.updates);
    t.push_str(&String::from_utf8_lossy(&r.uploaded));
    t
}

/// Words a refusal or a contained failure must say.
const REASONS: &[&str] = &[
    "outside the slave's basedir",
    "basedir itself",
    "symbolic link",
];

/// Send a command that must not reach outside: either refused when started, or
/// failed with the reason; returns the text it sent back.
async fn contained(conn: &mut Conn, id: &str, name: &str, a: Value, secret: &str) -> String {
    let (r, exc) = conn
        .request(
            "start_command",
            vec![
                ("command_id", Value::from(id)),
                ("command_name", Value::from(name)),
                ("args", a.clone()),
            ],
        )
        .await;
    if exc {
        let e = autobot::protocol::value_str(&r)
            .unwrap_or_default()
            .to_string();
        assert!(
            REASONS.iter().any(|w| e.contains(w)),
            "{id} ({name} {a}): refused without saying why: {e}"
        );
        return e;
    }
    conn.commands.entry(id.to_string()).or_default();
    let res = conn.wait_complete(id, Duration::from_secs(60)).await;
    let text = all_text(&res);
    assert!(
        !text.contains(secret),
        "{id} ({name} {a}): the outside secret came back: {text}"
    );
    let rc = res.rc();
    assert!(
        res.failed() || rc != Some(0),
        "{id} ({name} {a}) succeeded: {text}"
    );
    assert!(
        REASONS.iter().any(|w| text.contains(w)),
        "{id} ({name} {a}): failed without saying why: {text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_command_stays_inside_the_basedir() {
    let (_m, mut slave, mut conn) = connected("conf1").await;
    let out = Sentinel::new();
    let o = out.s();
    let b = slave.basedir.clone();
    let secret = out.secret.clone();
    // Links out: absolute, relative, to a file, in the middle of a path.
    link(out.path(), &b.join("out"));
    link(relative(&b, out.path()), &b.join("rel_out"));
    link(out.path().join("secret"), &b.join("file_link"));
    link(out.path().join("victim.txt"), &b.join("dl_link"));
    std::fs::create_dir_all(b.join("mid")).unwrap();
    link(out.path(), &b.join("mid/link"));
    // A source tree, and destinations that hold links out where a copy goes.
    std::fs::create_dir_all(b.join("src/inner")).unwrap();
    std::fs::write(b.join("src/f"), "inside").unwrap();
    std::fs::write(b.join("src/inner/x"), "inside").unwrap();
    std::fs::create_dir_all(b.join("into")).unwrap();
    link(out.path(), &b.join("into/src"));
    std::fs::create_dir_all(b.join("merge/src")).unwrap();
    link(out.path().join("inner"), &b.join("merge/src/inner"));
    std::fs::create_dir_all(b.join("build")).unwrap();

    let git = |builddir: &str| {
        args(vec![
            ("repourl", s("/nonexistent/repo")),
            ("branch", s("master")),
            ("mode", s("copy")),
            ("builddir", s(builddir)),
            ("workdir", s("build")),
        ])
    };
    let cases: Vec<(&str, Value)> = vec![
        // `..`
        ("mkdir", args(vec![("paths", strs(&["../made"]))])),
        ("mkdir", args(vec![("paths", strs(&["a/../../made"]))])),
        ("rmdir", args(vec![("paths", strs(&["../sub"]))])),
        (
            "cpdir",
            args(vec![("from_path", s("src")), ("to_path", s("../copied"))]),
        ),
        (
            "cpdir",
            args(vec![("from_path", s("..")), ("to_path", s("c1"))]),
        ),
        ("stat", args(vec![("path", s("../x"))])),
        ("listdir", args(vec![("path", s(".."))])),
        ("glob", args(vec![("path", s("../*"))])),
        ("rmfile", args(vec![("path", s("../victim.txt"))])),
        ("upload_file", transfer("path", "../secret")),
        (
            "uploadFile",
            args(vec![
                ("workdir", s("build")),
                ("workersrc", s("../../secret")),
                ("blocksize", Value::from(4096)),
                ("maxsize", Value::Nil),
            ]),
        ),
        ("upload_directory", transfer("path", "..")),
        ("download_file", transfer("path", "../dropped")),
        ("shell", shell_in("..", &["touch", "pwned"])),
        (
            "shell",
            args(vec![
                ("workdir", s("build")),
                ("command", strs(&["true"])),
                ("logfiles", args(vec![("l", s("../../secret"))])),
            ]),
        ),
        ("git", git("..")),
        ("hg", git("../x")),
        // Absolute paths elsewhere.
        (
            "mkdir",
            args(vec![("paths", strs(&[&format!("{o}/made")]))]),
        ),
        ("rmdir", args(vec![("paths", strs(&[&format!("{o}/sub")]))])),
        (
            "cpdir",
            args(vec![("from_path", s(&o)), ("to_path", s("c2"))]),
        ),
        (
            "cpdir",
            args(vec![
                ("from_path", s("src")),
                ("to_path", s(&format!("{o}/copied"))),
            ]),
        ),
        ("stat", args(vec![("path", s(&format!("{o}/secret")))])),
        ("listdir", args(vec![("path", s(&o))])),
        ("glob", args(vec![("path", s(&format!("{o}/*")))])),
        (
            "rmfile",
            args(vec![("path", s(&format!("{o}/victim.txt")))]),
        ),
        ("upload_file", transfer("path", &format!("{o}/secret"))),
        ("upload_directory", transfer("path", &o)),
        ("download_file", transfer("path", &format!("{o}/dropped"))),
        ("shell", shell_in(&o, &["touch", "pwned"])),
        ("git", git(&o)),
        // A link out at the source.
        (
            "cpdir",
            args(vec![("from_path", s("out")), ("to_path", s("c3"))]),
        ),
        (
            "cpdir",
            args(vec![("from_path", s("file_link")), ("to_path", s("c4"))]),
        ),
        ("stat", args(vec![("path", s("file_link"))])),
        ("listdir", args(vec![("path", s("out"))])),
        ("listdir", args(vec![("path", s("rel_out"))])),
        ("glob", args(vec![("path", s("out/*"))])),
        ("upload_file", transfer("path", "file_link")),
        ("upload_file", transfer("path", "rel_out/secret")),
        ("upload_directory", transfer("path", "out")),
        (
            "shell",
            args(vec![
                ("workdir", s("build")),
                ("command", strs(&["true"])),
                ("logfiles", args(vec![("l", s("../file_link"))])),
            ]),
        ),
        // A link out at the destination.
        ("mkdir", args(vec![("paths", strs(&["out/made"]))])),
        (
            "cpdir",
            args(vec![("from_path", s("src")), ("to_path", s("out"))]),
        ),
        (
            "cpdir",
            args(vec![("from_path", s("src")), ("to_path", s("out/new"))]),
        ),
        // cp -R's TODIR/NAME-OF-FROM, where that name is a link out.
        (
            "cpdir",
            args(vec![("from_path", s("src")), ("to_path", s("into"))]),
        ),
        // A merge into an existing tree whose subdirectory is a link out.
        (
            "cpdir",
            args(vec![("from_path", s("src")), ("to_path", s("merge"))]),
        ),
        ("download_file", transfer("path", "out/dropped")),
        ("download_file", transfer("path", "dl_link")),
        ("rmfile", args(vec![("path", s("out/victim.txt"))])),
        ("rmdir", args(vec![("paths", strs(&["out/sub"]))])),
        ("shell", shell_in("out", &["touch", "pwned"])),
        ("git", git("out")),
        // A link out in the middle.
        ("mkdir", args(vec![("paths", strs(&["mid/link/made"]))])),
        ("rmdir", args(vec![("paths", strs(&["mid/link/sub"]))])),
        ("stat", args(vec![("path", s("mid/link/secret"))])),
        ("listdir", args(vec![("path", s("mid/link/sub"))])),
        ("glob", args(vec![("path", s("mid/link/*"))])),
        ("rmfile", args(vec![("path", s("mid/link/victim.txt"))])),
        (
            "cpdir",
            args(vec![("from_path", s("mid/link/d")), ("to_path", s("c5"))]),
        ),
        (
            "cpdir",
            args(vec![("from_path", s("src")), ("to_path", s("mid/link/x"))]),
        ),
        ("upload_file", transfer("path", "mid/link/secret")),
        ("upload_directory", transfer("path", "mid/link/sub")),
        ("download_file", transfer("path", "mid/link/dropped")),
        ("shell", shell_in("mid/link", &["touch", "pwned"])),
        ("shell", shell_in("mid/link/sub", &["touch", "pwned"])),
    ];
    for (i, (name, a)) in cases.into_iter().enumerate() {
        contained(&mut conn, &format!("x{i}"), name, a, &secret).await;
    }

    // The slave's own info/ files are read beneath the basedir too.
    link(out.path().join("secret"), &b.join("info/leak"));
    let (info, exc) = conn.request("get_worker_info", vec![]).await;
    assert!(!exc, "{info}");
    let info = format!("{info}");
    assert!(info.contains("Ada Admin"), "{info}");
    assert!(!info.contains(&secret), "{info}");

    // A glob across the basedir lists the links' names but never what is behind.
    let r = conn
        .run("g-all", "glob", args(vec![("path", s("*/*"))]))
        .await;
    let files = format!("{:?}", r.get("files"));
    assert!(!files.contains("only-outside"), "{files}");
    assert!(files.contains("src/f"), "{files}");
    let r = conn
        .run("g-deep", "glob", args(vec![("path", s("**/secret"))]))
        .await;
    assert_eq!(r.get("files"), Some(&Value::Array(vec![])), "{r:?}");

    // Links that stay inside keep working.
    std::fs::create_dir_all(b.join("real")).unwrap();
    link("real", &b.join("in"));
    let r = conn
        .run("in1", "mkdir", args(vec![("paths", strs(&["in/made"]))]))
        .await;
    assert_eq!(r.rc(), Some(0), "{r:?}");
    assert!(b.join("real/made").is_dir());
    let r = conn
        .run(
            "in2",
            "cpdir",
            args(vec![("from_path", s("src")), ("to_path", s("in"))]),
        )
        .await;
    assert_eq!(r.rc(), Some(0), "{r:?}");
    assert_eq!(
        std::fs::read(b.join("real/src/inner/x")).unwrap(),
        b"inside"
    );
    // Removing a link removes the link, not what it points to.
    for (id, name, a) in [
        ("rm1", "rmdir", args(vec![("paths", strs(&["out"]))])),
        ("rm2", "rmfile", args(vec![("path", s("file_link"))])),
    ] {
        let r = conn.run(id, name, a).await;
        assert_eq!(r.rc(), Some(0), "{r:?}");
    }
    out.assert_untouched();
    for name in ["made", "copied", "dropped", "pwned", "new", "x"] {
        assert!(!exists(&out.path().join(name)), "{name} appeared outside");
    }
    slave.stop_serving(&mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_swapped_in_between_two_commands_is_refused() {
    let (_m, mut slave, mut conn) = connected("conf2").await;
    let out = Sentinel::new();
    let b = slave.basedir.clone();
    let secret = out.secret.clone();
    std::fs::create_dir_all(b.join("src")).unwrap();
    std::fs::write(b.join("src/f"), "inside").unwrap();

    // The commands work while `sw` is a directory...
    let r = conn
        .run("ok1", "mkdir", args(vec![("paths", strs(&["sw/d"]))]))
        .await;
    assert_eq!(r.rc(), Some(0), "{r:?}");
    conn.downloads.insert("ok2".into(), b"data".to_vec());
    let r = conn
        .run("ok2", "download_file", transfer("path", "sw/d/f"))
        .await;
    assert_eq!(r.rc(), Some(0), "{r:?}");
    let r = conn
        .run("ok3", "shell", shell_in("sw/d", &["touch", "made-here"]))
        .await;
    assert_eq!(r.rc(), Some(0), "{r:?}");
    assert!(b.join("sw/d/made-here").exists());

    // ...then it becomes a link out.
    std::fs::rename(b.join("sw"), b.join("sw_was")).unwrap();
    link(out.path(), &b.join("sw"));
    let cases: Vec<(&str, Value)> = vec![
        ("download_file", transfer("path", "sw/d/f")),
        ("mkdir", args(vec![("paths", strs(&["sw/d/made"]))])),
        ("rmdir", args(vec![("paths", strs(&["sw/d"]))])),
        ("rmfile", args(vec![("path", s("sw/d/f"))])),
        (
            "cpdir",
            args(vec![("from_path", s("src")), ("to_path", s("sw/d"))]),
        ),
        (
            "cpdir",
            args(vec![("from_path", s("sw/d")), ("to_path", s("c"))]),
        ),
        ("upload_file", transfer("path", "sw/d/f")),
        ("upload_directory", transfer("path", "sw/d")),
        ("stat", args(vec![("path", s("sw/d/f"))])),
        ("listdir", args(vec![("path", s("sw/d"))])),
        ("glob", args(vec![("path", s("sw/d/*"))])),
        ("shell", shell_in("sw/d", &["touch", "pwned"])),
    ];
    for (i, (name, a)) in cases.into_iter().enumerate() {
        contained(&mut conn, &format!("y{i}"), name, a, &secret).await;
    }
    out.assert_untouched();
    slave.stop_serving(&mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_logfile_swapped_for_a_link_while_the_command_runs_is_not_read() {
    let (_m, mut slave, mut conn) = connected("conf3").await;
    let out = Sentinel::new();
    let b = slave.basedir.clone();
    std::fs::create_dir_all(b.join("lw/logs")).unwrap();
    let gate = b.join("lw/gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::S_IRWXU).unwrap();
    conn.start(
        "l1",
        "shell",
        args(vec![
            ("workdir", s("lw")),
            // Waits until the test opens the gate.
            (
                "command",
                strs(&["sh", "-c", "read line < gate; echo finished"]),
            ),
            ("logfiles", args(vec![("l", s("logs/out.log"))])),
        ]),
    )
    .await;
    conn.pump_until("the command to start", Duration::from_secs(30), |c| {
        c.get("l1")
            .is_some_and(|r| r.text("header").contains("using PTY"))
    })
    .await;
    // The logfile's directory becomes a link to a directory holding out.log.
    std::fs::rename(b.join("lw/logs"), b.join("lw/logs_was")).unwrap();
    link(out.path(), &b.join("lw/logs"));
    let opener = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(gate).unwrap();
        f.write_all(b"go\n").unwrap();
    });
    let r = conn.wait_complete("l1", Duration::from_secs(60)).await;
    opener.await.unwrap();
    assert_eq!(r.rc(), Some(0), "{r:?}");
    assert!(r.text("stdout").contains("finished"), "{r:?}");
    assert_eq!(r.log("l"), "", "the logfile was read through the link");
    assert!(!all_text(&r).contains(&out.secret));
    out.assert_untouched();
    slave.stop_serving(&mut conn).await;
}

/// Swap `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> bool {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        a,
        nix::fcntl::AT_FDCWD,
        b,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_swapped_back_and_forth_during_commands_never_lead_out() {
    let (_m, mut slave, mut conn) = connected("conf4").await;
    let out = Sentinel::new();
    let b = slave.basedir.clone();
    let secret = out.secret.clone();
    // `race` is a directory like the sentinel (so commands have work there) and
    // keeps trading places with a link to the sentinel.
    std::fs::create_dir_all(b.join("race/sub/deeper")).unwrap();
    std::fs::create_dir_all(b.join("race/d")).unwrap();
    std::fs::write(b.join("race/secret"), "inside").unwrap();
    std::fs::write(b.join("race/victim.txt"), "inside").unwrap();
    std::fs::create_dir_all(b.join("src/inner")).unwrap();
    std::fs::write(b.join("src/f"), "inside").unwrap();
    link(out.path(), &b.join("racelink"));
    let swaps = Arc::new(AtomicUsize::new(0));
    let outside_ino = std::fs::metadata(out.path().join("secret")).unwrap().ino();
    let mut accepted = 0;
    let rounds = 25;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, swaps) = (stop.clone(), swaps.clone());
            let (a, l) = (b.join("race"), b.join("racelink"));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if exchange(&a, &l) {
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let cases: Vec<(&str, Value)> = vec![
            ("download_file", transfer("path", "race/dropped")),
            ("download_file", transfer("path", "race/d/f")),
            ("mkdir", args(vec![("paths", strs(&["race/made"]))])),
            (
                "cpdir",
                args(vec![("from_path", s("src")), ("to_path", s("race/copied"))]),
            ),
            (
                "cpdir",
                args(vec![("from_path", s("src")), ("to_path", s("race/d"))]),
            ),
            ("shell", shell_in("race", &["touch", "pwned"])),
            ("rmfile", args(vec![("path", s("race/victim.txt"))])),
            ("rmdir", args(vec![("paths", strs(&["race/sub"]))])),
            ("upload_file", transfer("path", "race/secret")),
            ("upload_directory", transfer("path", "race")),
            ("listdir", args(vec![("path", s("race"))])),
            ("stat", args(vec![("path", s("race/secret"))])),
            ("glob", args(vec![("path", s("race/*"))])),
        ];
        for (i, (name, a)) in cases.into_iter().enumerate() {
            let id = format!("r{round}-{i}");
            conn.downloads.insert(id.clone(), b"dropped".to_vec());
            let (r, exc) = conn
                .request(
                    "start_command",
                    vec![
                        ("command_id", Value::from(id.as_str())),
                        ("command_name", Value::from(name)),
                        ("args", a),
                    ],
                )
                .await;
            if exc {
                let e = autobot::protocol::value_str(&r)
                    .unwrap_or_default()
                    .to_string();
                assert!(REASONS.iter().any(|w| e.contains(w)), "{id}: {e}");
                continue;
            }
            accepted += 1;
            conn.commands.entry(id.clone()).or_default();
            let res = conn.wait_complete(&id, Duration::from_secs(60)).await;
            let text = all_text(&res);
            assert!(!text.contains(&secret), "{id} ({name}): {text}");
            assert!(!text.contains("only-outside"), "{id} ({name}): {text}");
            if let Some(Value::Array(st)) = res.get("stat") {
                assert_ne!(st[1].as_u64(), Some(outside_ino), "{id}: stat of outside");
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        // With the swapping stopped: put back what the commands removed, so each
        // round has work to do.
        let real = if b.join("race").is_symlink() {
            b.join("racelink")
        } else {
            b.join("race")
        };
        assert!(!real.is_symlink());
        std::fs::write(real.join("victim.txt"), "inside").unwrap();
        std::fs::create_dir_all(real.join("sub/deeper")).unwrap();
    }
    eprintln!(
        "{} swaps; {accepted} of {} commands passed the start check",
        swaps.load(Ordering::Relaxed),
        rounds * 13
    );
    assert!(
        swaps.load(Ordering::Relaxed) > 100,
        "the links were swapped"
    );
    out.assert_untouched();
    for name in ["made", "copied", "dropped", "pwned", "f"] {
        assert!(!exists(&out.path().join(name)), "{name} appeared outside");
    }
    slave.stop_serving(&mut conn).await;
}
