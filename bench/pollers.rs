//! Poller budgets from issue 5, measured on real repositories made with
//! `git fast-import` (and `hg`, when installed) in a temp dir:
//!
//! * a 10,000-commit burst in one repository turned into Changes (budget ≤ 5 s),
//!   both fetch + ingest and ingest alone from an up-to-date mirror;
//! * one poll of 100 unchanged git repositories (budget ≤ 50 ms of master CPU),
//!   with the CPU of this process and of the helper processes it waited for
//!   (`git-upload-pack` serves `file://` URLs; an `https://` poll has none) shown apart;
//! * for hg, the same unchanged poll for 10 repositories (every poll starts `hg`).
//!
//! Run: `cargo bench --bench pollers` (optional arguments: burst size, repository
//! count, runs of the unchanged poll; `AUTOBOT_BENCH_SKIP_HG=1` leaves hg out).

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autobot::changes::{GitPoller, HgPoller};
use common::git_fast_import;
use nix::sys::resource::{getrusage, UsageWho};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let burst: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let repos: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5).max(1);
    let tmp = tempfile::tempdir().expect("temp dir");

    git_burst(tmp.path(), burst);
    git_unchanged(tmp.path(), repos, runs);
    if std::env::var_os("AUTOBOT_BENCH_SKIP_HG").is_some() {
        println!("hg: skipped (AUTOBOT_BENCH_SKIP_HG)");
    } else if hg_available() {
        hg_burst(tmp.path(), 1_000);
        hg_unchanged(tmp.path(), 10);
    } else {
        println!("hg: SKIP (hg is not installed)");
    }
}

/// CPU seconds used so far by this process and by its reaped children.
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

/// Feeds `commits` linear commits to `git fast-import` on `main` of `dir`; each
/// touches two of 200 files in 20 directories (and deletes one now and then).
fn fast_import(dir: &Path, first: usize, commits: usize) {
    let mut s = Vec::with_capacity(commits * 300);
    for i in first..first + commits {
        let when = 1_700_000_000 + i as i64 * 60;
        let msg = format!("commit {i}\n\nBody of commit {i}.\n");
        writeln!(s, "commit refs/heads/main").unwrap();
        writeln!(s, "author Ann Author <ann@example.org> {when} +0000").unwrap();
        writeln!(
            s,
            "committer Carl Committer <carl@example.org> {when} +0000"
        )
        .unwrap();
        write!(s, "data {}\n{msg}", msg.len()).unwrap();
        if i == first && first > 0 {
            writeln!(s, "from refs/heads/main^0").unwrap();
        }
        for k in 0..2 {
            let f = (i * 7 + k * 13) % 200;
            let content = format!("line {i} {k}\n");
            writeln!(s, "M 100644 inline dir{}/file{f}.txt", f % 20).unwrap();
            write!(s, "data {}\n{content}", content.len()).unwrap();
        }
        if i % 97 == 0 && i > 0 {
            let f = (i * 3) % 200;
            writeln!(s, "D dir{}/file{f}.txt", f % 20).unwrap();
        }
        writeln!(s).unwrap();
    }
    git_fast_import(dir, &s);
}

fn git_init(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let ok = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .current_dir(dir)
        .status()
        .expect("git init")
        .success();
    assert!(ok);
}

fn git_burst(base: &Path, burst: usize) {
    let up = base.join("burst.git");
    git_init(&up);
    fast_import(&up, 0, 1);
    let p = GitPoller::new(
        up.to_string_lossy(),
        vec!["main".into()],
        base.join("m/burst"),
    );
    let seen = p.poll(&BTreeMap::new()).expect("first poll").heads;
    fast_import(&up, 1, burst);

    let t = Instant::now();
    let (c0, k0) = cpu();
    let r = p.poll(&seen).expect("burst poll");
    let (c1, k1) = cpu();
    let total = t.elapsed();
    assert_eq!(r.changes.len(), burst);
    let files: usize = r.changes.iter().map(|c| c.files.len()).sum();

    // Ingest alone: the mirror is up to date, the same range is walked and diffed.
    let t = Instant::now();
    let again = p.poll(&seen).expect("ingest poll");
    let ingest = t.elapsed();
    assert_eq!(again.changes.len(), burst);

    println!(
        "git burst: {burst} commits -> {} Changes ({files} file entries): fetch+ingest {} \
         (cpu {} here, {} helpers); ingest from mirror {} [budget 5000 ms]",
        r.changes.len(),
        ms(total),
        ms(c1 - c0),
        ms(k1 - k0),
        ms(ingest)
    );
}

fn git_unchanged(base: &Path, count: usize, rounds: usize) {
    let mut pollers = Vec::new();
    for i in 0..count {
        let up = base.join(format!("up{i}.git"));
        git_init(&up);
        fast_import(&up, 0, 20);
        let p = GitPoller::new(
            up.to_string_lossy(),
            vec!["main".into()],
            base.join(format!("m/up{i}")),
        );
        let seen = p.poll(&BTreeMap::new()).expect("first poll").heads;
        pollers.push((p, seen));
    }
    let mut runs = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let (c0, k0) = cpu();
        for (p, seen) in &pollers {
            let r = p.poll(seen).expect("unchanged poll");
            assert!(r.changes.is_empty());
        }
        let (c1, k1) = cpu();
        runs.push((c1 - c0, k1 - k0, t.elapsed()));
    }
    runs.sort();
    let (own, helpers, wall) = runs[runs.len() / 2];
    // Where the time goes: opening the mirrors alone, then up to the ref advertisement.
    let (c0, _) = cpu();
    for (p, _) in &pollers {
        gix::open(&p.mirror_dir).expect("open");
    }
    let (c1, k1) = cpu();
    for (p, _) in &pollers {
        let repo = gix::open(&p.mirror_dir).expect("open");
        let remote = repo
            .remote_at(p.url.as_str())
            .expect("remote")
            .with_refspecs(
                ["+refs/heads/main:refs/heads/main"],
                gix::remote::Direction::Fetch,
            )
            .expect("refspec");
        let conn = remote
            .connect(gix::remote::Direction::Fetch)
            .expect("connect");
        let prep = conn
            .prepare_fetch(gix::progress::Discard, Default::default())
            .expect("ls-refs");
        drop(prep);
    }
    let (c2, k2) = cpu();
    println!(
        "  breakdown for {count}: gix::open {}; open+connect+ls-refs {} (+{} helpers)",
        ms(c1 - c0),
        ms(c2 - c1),
        ms(k2 - k1)
    );
    println!(
        "git unchanged: one poll of {count} repositories (median of {rounds}): cpu {} in autobot, \
         {} in git-upload-pack helpers (file:// only), wall {} [budget 50 ms autobot cpu]",
        ms(own),
        ms(helpers),
        ms(wall)
    );
}

fn hg_available() -> bool {
    Command::new("hg")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn hg(dir: &Path, args: &[&str]) {
    let ok = Command::new("hg")
        .args(args)
        .current_dir(dir)
        .env("HGPLAIN", "1")
        .env("HGUSER", "Ann Author <ann@example.org>")
        .stdout(Stdio::null())
        .status()
        .expect("hg")
        .success();
    assert!(ok, "hg {args:?}");
}

fn hg_repo(dir: &Path, commits: usize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    hg(dir, &["init"]);
    // Linear changesets, each adding a new file.
    hg(
        dir,
        &["debugbuilddag", "--new-file", &format!("+{commits}")],
    );
}

fn hg_burst(base: &Path, burst: usize) {
    // `debugbuilddag` only fills an empty repository: build everything in `full`,
    // let the polled repository start with the first changeset, then pull the rest.
    let full = base.join("hgfull");
    hg_repo(&full, burst + 1);
    let up = base.join("hgburst");
    let full_s = full.to_string_lossy().into_owned();
    let up_s = up.to_string_lossy().into_owned();
    hg(
        base,
        &["clone", "-q", "--noupdate", "-r", "0", &full_s, &up_s],
    );
    let p = HgPoller::new(up_s.clone(), vec![], base.join("m/hgburst"));
    let seen = p.poll(&BTreeMap::new()).expect("first hg poll").heads;
    hg(&up, &["pull", "-q", &full_s]);

    let t = Instant::now();
    let (c0, k0) = cpu();
    let r = p.poll(&seen).expect("hg burst poll");
    let (c1, k1) = cpu();
    assert_eq!(r.changes.len(), burst);
    println!(
        "hg burst: {burst} changesets -> {} Changes: {} wall (cpu {} in autobot, {} in hg)",
        r.changes.len(),
        ms(t.elapsed()),
        ms(c1 - c0),
        ms(k1 - k0)
    );
}

fn hg_unchanged(base: &Path, count: usize) {
    let mut pollers = Vec::new();
    for i in 0..count {
        let up = base.join(format!("hgup{i}"));
        hg_repo(&up, 5);
        let p = HgPoller::new(
            up.to_string_lossy(),
            vec![],
            base.join(format!("m/hgup{i}")),
        );
        let seen = p.poll(&BTreeMap::new()).expect("first hg poll").heads;
        pollers.push((p, seen));
    }
    let t = Instant::now();
    let (c0, k0) = cpu();
    for (p, seen) in &pollers {
        assert!(p.poll(seen).expect("hg poll").changes.is_empty());
    }
    let (c1, k1) = cpu();
    println!(
        "hg unchanged: one poll of {count} repositories: cpu {} in autobot, {} in hg, wall {}",
        ms(c1 - c0),
        ms(k1 - k0),
        ms(t.elapsed())
    );
}
