//! Version-control budgets from issue 25, on real repositories made in a temp dir:
//!
//! * one poll of 100 unchanged Subversion repositories (`svnadmin create`, reached
//!   through `file://`): budget ≤ 100 ms of master CPU beyond the tool's own
//!   start-up — this process's CPU is shown apart from the `svn` processes it
//!   waited for (one `svn info --xml` per repository);
//! * the start-up of each VC tool the master or a slave runs (`TOOL --version`,
//!   wall time and CPU, the median of a few runs), for those installed;
//! * one poll of an unchanged CVS module (`cvs rlog` since the last date seen) and
//!   of an unchanged GNU Arch version (`tla register-archive` + `tla revisions`
//!   in the poller's own HOME): the master's CPU and the tools'.
//!
//! Run: `cargo bench --bench vc` (optional arguments: repository count, runs of
//! the unchanged poll).
//!
//! Measured (2 shared cores, debug build, 2026-12): svn poll of 100 unchanged
//! repositories 46 ms of master CPU (the 100 `svn info` processes: 9 ms each, 1.1 s
//! wall); start-up wall/CPU: git 4/1 ms, hg 80/77 ms, svn 12/9 ms, brz 131/101 ms,
//! darcs 18/7 ms, cvs 3/1 ms, tla 1/1 ms. One poll of an unchanged CVS module:
//! 3.7 ms wall, 0.4 ms master CPU, 2.4 ms cvs CPU; of an unchanged Arch version:
//! 3.5 ms wall, 0.5 ms master CPU, 2.8 ms tla CPU (`cargo bench --profile dev
//! --bench vc -- 3 1`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autobot::changes::{ArchPoller, CvsPoller, SvnPoller};
use nix::sys::resource::{getrusage, UsageWho};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let repos: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let tmp = tempfile::tempdir().expect("temp dir");
    startup();
    if have("cvs") {
        cvs_unchanged(tmp.path());
    } else {
        println!("cvs: SKIP (cvs is not installed)");
    }
    if have("tla") {
        arch_unchanged(tmp.path());
    } else {
        println!("tla: SKIP (tla is not installed)");
    }
    if have("svnadmin") {
        svn_unchanged(tmp.path(), repos, runs);
    } else {
        println!("svn: SKIP (subversion is not installed)");
    }
}

/// CPU used so far by this process and by its reaped children.
fn cpu() -> (Duration, Duration) {
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    let me = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let kids = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    (
        tv(me.user_time()) + tv(me.system_time()),
        tv(kids.user_time()) + tv(kids.system_time()),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `TOOL --version` of every VC tool: median wall time and child CPU of 5 runs.
fn startup() {
    for (tool, args) in [
        ("git", &["--version"][..]),
        ("hg", &["--version", "--quiet"][..]),
        ("svn", &["--version", "--quiet"][..]),
        ("brz", &["--version"][..]),
        ("darcs", &["--version"][..]),
        ("cvs", &["--version"][..]),
        ("tla", &["--version"][..]),
    ] {
        if !have(tool) {
            println!("start-up {tool:6} SKIP (not installed)");
            continue;
        }
        let mut walls = Vec::new();
        let mut cpus = Vec::new();
        for _ in 0..5 {
            let (_, k0) = cpu();
            let t = Instant::now();
            let ok = Command::new(tool)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "{tool} --version failed");
            walls.push(t.elapsed());
            cpus.push(cpu().1 - k0);
        }
        walls.sort();
        cpus.sort();
        println!(
            "start-up {tool:6} wall {:>9}  cpu {:>9}",
            ms(walls[2]),
            ms(cpus[2])
        );
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// One poll of `n` unchanged svn repositories.
fn svn_unchanged(dir: &Path, n: usize, runs: usize) {
    let t = Instant::now();
    let mut pollers = Vec::new();
    for i in 0..n {
        let root = dir.join(format!("svn{i}"));
        run(Command::new("svnadmin").arg("create").arg(&root));
        let url = format!("file://{}", root.display());
        run(Command::new("svn").args(["mkdir", "-q", "-m", "layout", &format!("{url}/trunk")]));
        pollers.push(SvnPoller::new(url, vec![("trunk".into(), "trunk".into())]));
    }
    println!(
        "svn: made {n} repositories in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut last: Vec<BTreeMap<String, String>> = Vec::new();
    for p in &pollers {
        last.push(p.poll(&BTreeMap::new()).expect("first poll").heads);
    }
    for run in 0..runs {
        let (me0, kids0) = cpu();
        let t = Instant::now();
        for (p, seen) in pollers.iter().zip(&last) {
            let r = p.poll(seen).expect("poll");
            assert!(r.changes.is_empty());
        }
        let wall = t.elapsed();
        let (me1, kids1) = cpu();
        let master = me1 - me0;
        println!(
            "svn: one poll of {n} unchanged repositories (run {}): wall {}, master CPU {} \
             (budget ≤ 100 ms: {}), svn processes' CPU {} ({} each)",
            run + 1,
            ms(wall),
            ms(master),
            if master <= Duration::from_millis(100) {
                "ok"
            } else {
                "OVER"
            },
            ms(kids1 - kids0),
            ms((kids1 - kids0) / n as u32)
        );
    }
}

/// The median master CPU, tools' CPU and wall time of 5 polls by `poll`.
fn median_poll(what: &str, mut poll: impl FnMut()) {
    let mut rows = Vec::new();
    for _ in 0..5 {
        let (me0, kids0) = cpu();
        let t = Instant::now();
        poll();
        let wall = t.elapsed();
        let (me1, kids1) = cpu();
        rows.push((wall, me1 - me0, kids1 - kids0));
    }
    rows.sort();
    let (wall, me, kids) = rows[2];
    println!(
        "{what}: one poll unchanged: wall {}, master CPU {}, tool CPU {}",
        ms(wall),
        ms(me),
        ms(kids)
    );
}

/// One poll of an unchanged CVS module (a CVSROOT with one imported file).
fn cvs_unchanged(dir: &Path) {
    let root = dir.join("cvsroot");
    let imp = dir.join("cvs-import");
    std::fs::create_dir_all(&imp).expect("mkdir");
    std::fs::write(imp.join("a.txt"), "one\n").expect("write");
    run(Command::new("cvs").arg("-d").arg(&root).arg("init"));
    run(Command::new("cvs")
        .arg("-d")
        .arg(&root)
        .args(["-q", "import", "-m", "initial", "proj", "vendor", "start"])
        .current_dir(&imp));
    let p = CvsPoller::new(
        format!("{} proj", root.display()),
        vec![String::new()],
        dir.join("cvs-state"),
    );
    let seen = p.poll(&BTreeMap::new()).expect("first poll").heads;
    median_poll("cvs", || {
        let r = p.poll(&seen).expect("poll");
        assert!(r.changes.is_empty());
    });
}

/// One poll of an unchanged GNU Arch version (an archive with an import).
fn arch_unchanged(dir: &Path) {
    let home = dir.join("tla-home");
    let tree = dir.join("tla-tree");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::create_dir_all(&tree).expect("mkdir");
    std::fs::write(tree.join("a.txt"), "one\n").expect("write");
    let archive = "bench@example.org--2026";
    let version = format!("{archive}/proj--main--1.0");
    let tla = |args: &[&str]| {
        run(Command::new("tla")
            .args(args)
            .current_dir(&tree)
            .env("HOME", &home));
    };
    tla(&["my-id", "Bench <bench@example.org>"]);
    tla(&[
        "make-archive",
        archive,
        &dir.join("archive").display().to_string(),
    ]);
    tla(&["archive-setup", &version]);
    tla(&["init-tree", &version]);
    tla(&["add", "a.txt"]);
    tla(&["import", "-L", "initial"]);
    let p = ArchPoller::new(
        dir.join("archive").display().to_string(),
        vec![version],
        dir.join("tla-state"),
    );
    let seen = p.poll(&BTreeMap::new()).expect("first poll").heads;
    median_poll("tla", || {
        let r = p.poll(&seen).expect("poll");
        assert!(r.changes.is_empty());
    });
}
