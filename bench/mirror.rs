//! What the slave's shared mirror saves (issue 7): a git repository of realistic
//! size (`--commits` commits, default 5,000, over `--files` files, default 3,000,
//! made with `git fast-import`) is served by `git daemon` on 127.0.0.1, and the
//! checkout plans of `autobot::sources::checkout` are run the way a slave runs them
//! (each `shell` op an argv in its workdir, `rmdir`/`mkdir`/`cpdir` on the file
//! system), timing:
//!
//! * the first builder of a slave, with and without the mirror (the mirror's cost:
//!   the same network fetch, then a local clone), median of `--runs` new slaves;
//! * a second builder's full checkout of the same revision, with the mirror (no
//!   network at all) and without (a clone over git://), median of `--runs` (5);
//! * after one new commit, a second builder's update (mode `update`), once the first
//!   builder has brought the commit into the mirror, and without the mirror.
//!
//! The daemon's log counts the fetches each case made. The time is git's (clone,
//! fetch, checkout), so a debug build measures the same as a release one; the
//! protocol round trips of a real slave (about 1 ms per op on 127.0.0.1) are left
//! out and are a handful either way.
//!
//! Run: `cargo bench --bench mirror` or, without a release build,
//! `cargo test --bench mirror -- --commits 5000 --files 3000 --runs 5`.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autobot::sources::checkout::{Checkout, CheckoutOp, CheckoutRun, Next, MIRRORS_DIR};
use autobot::sources::{Mode, Source, SourceKind};
use common::{free_port, git_fast_import, opt, report};

fn main() {
    let commits = opt("--commits", 5_000) as usize;
    let files = opt("--files", 3_000) as usize;
    let runs = opt("--runs", 5).max(1) as usize;
    let tmp = tempfile::tempdir().expect("temp dir");
    let served = tmp.path().join("served");
    let repo = served.join("proj.git");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "--bare", "-b", "main"]);
    let t = Instant::now();
    fast_import(&repo, files, 0, commits);
    git(&repo, &["gc", "-q"]);
    let size = dir_size(&repo.join("objects"));
    println!(
        "repository: {commits} commits, {files} files, {:.1} MiB packed (made in {:.1} s)",
        size as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );

    let log = tmp.path().join("daemon.log");
    let daemon = Daemon::start(&served, &log);
    let source = Source {
        kind: SourceKind::Git,
        url: format!("git://127.0.0.1:{}/proj.git", daemon.port),
        branch: "main".into(),
        branch_prefix: None,
    };
    let head = git(&repo, &["rev-parse", "main"]);

    // Slaves that keep a mirror (`slave-mirror-N`), and one that does not.
    let with = tmp.path().join("slave-mirror-0");
    let without = tmp.path().join("slave-direct");
    let clobber = |mirror: bool| Checkout {
        source: &source,
        mode: Mode::Clobber,
        always_use_latest: false,
        retry: None,
        mirror,
        mirrors: MIRRORS_DIR,
        workdir: "build",
        branch: None,
        revision: Some(&head),
        patch_level: None,
        pull_ref: None,
    };

    // The first builder of a slave: each run on a new slave (a new mirror).
    let mut mirrored = Vec::new();
    let mut direct = Vec::new();
    let (mut n_mirrored, mut n_direct) = (0, 0);
    for i in 0..runs {
        let slave = tmp.path().join(format!("slave-mirror-{i}"));
        let (t, n) = daemon.measure(|| run(&clobber(true), &slave.join("first")));
        mirrored.push(t);
        n_mirrored += n;
        let (t, n) = daemon.measure(|| run(&clobber(false), &without.join(format!("first{i}"))));
        direct.push(t);
        n_direct += n;
    }
    report(
        "first builder, mirror: fetch + local clone (median)",
        ms(median(&mut mirrored)),
        "ms",
        None,
        true,
    );
    println!("    fetches from the daemon in {runs} runs: {n_mirrored}");
    report(
        "first builder, no mirror: clone (median)",
        ms(median(&mut direct)),
        "ms",
        None,
        true,
    );
    println!("    fetches from the daemon in {runs} runs: {n_direct}");

    // A second builder of the same revision.
    let mut mirrored = Vec::new();
    let mut direct = Vec::new();
    let (mut n_mirrored, mut n_direct) = (0, 0);
    for i in 0..runs {
        let (t, n) = daemon.measure(|| run(&clobber(true), &with.join(format!("b{i}"))));
        mirrored.push(t);
        n_mirrored += n;
        let (t, n) = daemon.measure(|| run(&clobber(false), &without.join(format!("b{i}"))));
        direct.push(t);
        n_direct += n;
    }
    let (m, d) = (median(&mut mirrored), median(&mut direct));
    report(
        "second builder, same revision, mirror (median)",
        ms(m),
        "ms",
        None,
        true,
    );
    println!("    fetches from the daemon in {runs} runs: {n_mirrored}");
    report(
        "second builder, same revision, no mirror (median)",
        ms(d),
        "ms",
        None,
        true,
    );
    println!("    fetches from the daemon in {runs} runs: {n_direct}");
    println!(
        "    the mirror makes a second builder's checkout {:.1}x faster",
        d.as_secs_f64() / m.as_secs_f64()
    );

    // A new commit: builder "first" brings it into the mirror, b0 then updates.
    fast_import(&repo, files, commits, 1);
    let head2 = git(&repo, &["rev-parse", "main"]);
    let update = |mirror: bool| Checkout {
        mode: Mode::Update,
        revision: Some(&head2),
        ..clobber(mirror)
    };
    let (t, n) = daemon.measure(|| run(&update(true), &with.join("first")));
    report(
        "new commit, first builder's update, mirror",
        ms(t),
        "ms",
        None,
        true,
    );
    println!("    fetches from the daemon: {n}");
    let (t, n) = daemon.measure(|| run(&update(true), &with.join("b0")));
    report(
        "new commit, second builder's update, mirror",
        ms(t),
        "ms",
        None,
        true,
    );
    println!("    fetches from the daemon: {n}");
    let (t, n) = daemon.measure(|| run(&update(false), &without.join("b0")));
    report(
        "new commit, second builder's update, no mirror",
        ms(t),
        "ms",
        None,
        true,
    );
    println!("    fetches from the daemon: {n}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs a checkout in builder directory `base` as a slave would; panics when it
/// fails. Returns how long it took.
fn run(c: &Checkout, base: &Path) -> Duration {
    std::fs::create_dir_all(base).expect("builder dir");
    let t = Instant::now();
    let plan = c.plan().expect("plan");
    let updateable = plan.probe.as_ref().is_some_and(|p| base.join(p).exists());
    let mut run = CheckoutRun::new(plan, updateable);
    let mut next = run.start();
    loop {
        match next {
            Next::Run { op, .. } => {
                let ok = exec(base, &op);
                next = run.done(ok);
            }
            Next::Done { ok } => {
                assert!(ok, "checkout in {} failed", base.display());
                return t.elapsed();
            }
        }
    }
}

fn exec(base: &Path, op: &CheckoutOp) -> bool {
    match op {
        CheckoutOp::RmDir { dir } => {
            let d = base.join(dir);
            !d.exists() || std::fs::remove_dir_all(d).is_ok()
        }
        CheckoutOp::MkDir { dir } => std::fs::create_dir_all(base.join(dir)).is_ok(),
        CheckoutOp::WritePatch { .. } => false,
        CheckoutOp::CpDir { from, to } => Command::new("cp")
            .args(["-R", "-P", "-p"])
            .arg(base.join(from))
            .arg(base.join(to))
            .status()
            .is_ok_and(|s| s.success()),
        CheckoutOp::Shell { argv, workdir } | CheckoutOp::GotRevision { argv, workdir } => {
            let wd = base.join(workdir);
            if std::fs::create_dir_all(&wd).is_err() {
                return false;
            }
            Command::new(&argv[0])
                .args(&argv[1..])
                .current_dir(&wd)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() => total += dir_size(&e.path()),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}

/// Deterministic text: `n` lines of words picked by an LCG seeded with `seed`.
fn text(seed: u64, n: usize) -> String {
    const WORDS: &[&str] = &[
        "build",
        "slave",
        "master",
        "change",
        "step",
        "log",
        "fetch",
        "mirror",
        "branch",
        "commit",
        "result",
        "warning",
        "error",
        "config",
        "factory",
        "scheduler",
        "lock",
        "property",
        "revision",
        "checkout",
        "update",
        "clobber",
        "export",
        "copy",
    ];
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("{i:4} "));
        for _ in 0..8 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push_str(WORDS[(x >> 33) as usize % WORDS.len()]);
            s.push(' ');
        }
        s.push_str(&format!("{:x}\n", x >> 16));
    }
    s
}

/// `commits` commits on `main` from number `first`: the first of all adds `files`
/// files of about 2 KB in 50 directories, each later one rewrites three of them.
fn fast_import(repo: &Path, files: usize, first: usize, commits: usize) {
    let mut s = Vec::new();
    for i in first..first + commits {
        let when = 1_700_000_000 + i as i64 * 60;
        let msg = format!("commit {i}\n");
        writeln!(s, "commit refs/heads/main").unwrap();
        writeln!(s, "committer Ann <ann@example.org> {when} +0000").unwrap();
        write!(s, "data {}\n{msg}", msg.len()).unwrap();
        if i == first && first > 0 {
            writeln!(s, "from refs/heads/main^0").unwrap();
        }
        let touched: Vec<usize> = if i == 0 {
            (0..files).collect()
        } else {
            (0..3).map(|k| (i * 7 + k * 1013) % files).collect()
        };
        for f in touched {
            let content = text((i * files + f) as u64, 30);
            writeln!(s, "M 100644 inline dir{}/file{f}.txt", f % 50).unwrap();
            write!(s, "data {}\n{content}", content.len()).unwrap();
        }
        writeln!(s).unwrap();
    }
    git_fast_import(repo, &s);
}

/// `git-daemon` on 127.0.0.1 serving `root`; its log counts the fetches.
struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    fn start(root: &Path, log: &Path) -> Daemon {
        let port = free_port();
        let out = std::fs::File::create(log).expect("daemon log");
        let exec_path = git(root, &["--exec-path"]);
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg(format!("--base-path={}", root.display()))
            .args([
                "--export-all",
                "--verbose",
                "--reuseaddr",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("git-daemon");
        let d = Daemon {
            child,
            port,
            log: log.to_path_buf(),
        };
        common::wait_until("git-daemon", Duration::from_secs(30), || {
            d.count("Ready to rumble") > 0
        });
        d
    }

    fn count(&self, what: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    }

    /// Runs `f`; its result and the fetches the daemon served meanwhile.
    fn measure<T>(&self, f: impl FnOnce() -> T) -> (T, usize) {
        let before = self.count("Request upload-pack");
        let r = f();
        (r, self.count("Request upload-pack") - before)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
