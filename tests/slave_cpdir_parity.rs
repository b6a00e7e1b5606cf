//! `cpdir` as the stock worker does it: autobot's slave copies in Rust, confined to
//! its basedir, and must still behave as `buildbot-worker`'s `cp -R -P -p -v`
//! where nothing leads out. One suite, run against both implementations (real
//! master, real slaves): a new destination, an existing destination directory
//! (`TODIR/NAME-OF-FROM`, twice: merged), links copied as links, modes and times
//! kept, `-v` lines, a single file, a missing source and a copy into itself.

#[path = "support/mod.rs"]
mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use autobot::protocol::map;
use autobot::slavelink::SlaveHandle;
use rmpv::Value;
use support::{Impl, SlaveProc, TestMaster};

async fn setup(test: &str, imp: Impl) -> Option<(TestMaster, SlaveProc, SlaveHandle)> {
    let tm = TestMaster::start(&[("s1", "pw1")], Duration::from_secs(2)).await;
    let dir = tm.dir.path().join("slave-s1");
    let proc = match imp.start(&dir, tm.port(), "s1", "pw1").await {
        Ok(p) => p,
        Err(why) => {
            support::skip(&format!("{test}: {imp:?} slave: {why}"));
            return None;
        }
    };
    let h = tm.wait_connected("s1").await;
    Some((tm, proc, h))
}

async fn cpdir(h: &SlaveHandle, from: &str, to: &str) -> autobot::slavelink::CommandOutcome {
    h.run(
        "cpdir",
        map(vec![
            ("from_path", Value::from(from)),
            ("to_path", Value::from(to)),
        ]),
    )
    .await
    .unwrap()
}

fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

async fn cpdir_semantics(imp: Impl) {
    let Some((_tm, proc, h)) = setup("cpdir_semantics", imp).await else {
        return;
    };
    let base = h.builder_dir("fac-s1");
    let p = |rel: &str| format!("{base}/{rel}");
    let local = proc.dir.join("fac-s1");
    std::fs::create_dir_all(local.join("a/sub")).unwrap();
    std::fs::write(local.join("a/f.txt"), "one\n").unwrap();
    std::fs::write(local.join("a/sub/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        local.join("a/sub/run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    set_mtime(&local.join("a/sub/run.sh"), 1_000_000_000);
    std::os::unix::fs::symlink("f.txt", local.join("a/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/elsewhere", local.join("a/dangling")).unwrap();

    // A new destination: the tree itself, one -v line per entry.
    let out = cpdir(&h, &p("a"), &p("copy")).await;
    assert_eq!(out.rc, Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(local.join("copy/f.txt")).unwrap(),
        "one\n"
    );
    assert!(
        out.stdout
            .contains(&format!("'{}' -> '{}'", p("a/f.txt"), p("copy/f.txt"))),
        "{out:?}"
    );
    let m = std::fs::metadata(local.join("copy/sub/run.sh")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o750);
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_eq!(
        std::fs::read_link(local.join("copy/link")).unwrap(),
        Path::new("f.txt")
    );
    assert_eq!(
        std::fs::read_link(local.join("copy/dangling")).unwrap(),
        Path::new("/nonexistent/elsewhere")
    );

    // An existing destination directory receives TODIR/NAME-OF-FROM.
    std::fs::create_dir(local.join("into")).unwrap();
    let out = cpdir(&h, &p("a"), &p("into")).await;
    assert_eq!(out.rc, Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(local.join("into/a/f.txt")).unwrap(),
        "one\n"
    );
    assert!(!local.join("into/f.txt").exists());
    // Again: merged into the copy made the first time, files overwritten.
    std::fs::write(local.join("a/f.txt"), "two\n").unwrap();
    std::fs::write(local.join("into/a/extra"), "kept\n").unwrap();
    let out = cpdir(&h, &p("a"), &p("into")).await;
    assert_eq!(out.rc, Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(local.join("into/a/f.txt")).unwrap(),
        "two\n"
    );
    assert_eq!(
        std::fs::read_to_string(local.join("into/a/extra")).unwrap(),
        "kept\n"
    );

    // A single file, to a new name and into a directory.
    let out = cpdir(&h, &p("a/f.txt"), &p("single.txt")).await;
    assert_eq!(out.rc, Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(local.join("single.txt")).unwrap(),
        "two\n"
    );
    let out = cpdir(&h, &p("a/f.txt"), &p("into")).await;
    assert_eq!(out.rc, Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(local.join("into/f.txt")).unwrap(),
        "two\n"
    );

    // The destination's parents are made first.
    let out = cpdir(&h, &p("a"), &p("deep/er/copy")).await;
    assert_eq!(out.rc, Some(0), "{out:?}");
    assert!(local.join("deep/er/copy/sub/run.sh").is_file());

    // Failures: a missing source, a directory into itself.
    let out = cpdir(&h, &p("missing"), &p("nowhere")).await;
    assert_ne!(out.rc, Some(0), "{out:?}");
    assert!(!local.join("nowhere").exists());
    let out = cpdir(&h, &p("a"), &p("a/sub")).await;
    assert_ne!(out.rc, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("into itself"),
        "the reason is given: {out:?}"
    );
    proc.stop().await;
}

mod buildbot_worker {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cpdir_semantics() {
        super::cpdir_semantics(super::Impl::BuildbotWorker).await
    }
}

mod autobot_slave {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cpdir_semantics() {
        super::cpdir_semantics(super::Impl::Autobot).await
    }
}
