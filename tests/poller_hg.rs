//! The Mercurial poller against real repositories made with the `hg` CLI in temp
//! dirs: the git poller's contract (first poll, new changesets oldest first, merges,
//! deletions, named branches, rewritten history, a missing repository, catching up).
//! Without `hg` every test fails under `CI=true` and prints SKIP elsewhere.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use autobot::changes::{Change, HgPoller, PollError};

/// Whether `hg` is here; if not, the test fails under `CI=true` and skips
/// elsewhere, and the caller returns.
#[track_caller]
#[must_use]
fn have_hg() -> bool {
    support::need_tools(&[("hg", "apt-get install mercurial")])
}

/// A repository acting as the "remote" the poller pulls from.
struct Repo {
    dir: PathBuf,
    clock: i64,
}

impl Repo {
    fn new(dir: &Path) -> Repo {
        std::fs::create_dir_all(dir).unwrap();
        let repo = Repo {
            dir: dir.to_path_buf(),
            clock: 1_700_000_000,
        };
        repo.hg(&["init"]);
        repo
    }

    fn hg(&self, args: &[&str]) -> String {
        crate::support::run_ok(
            Command::new("hg")
                .args(args)
                .current_dir(&self.dir)
                .env("HGPLAIN", "1")
                .env("HGRCPATH", "")
                .env("HGUSER", "Ann Author <ann@example.org>"),
        )
    }

    fn write(&self, path: &str, content: &str) {
        crate::support::write_file(&self.dir, path, content)
    }

    /// Commits everything (adds and removals); returns (node, date).
    fn commit(&mut self, message: &str) -> (String, i64) {
        self.clock += 60;
        let date = format!("{} 0", self.clock);
        // One process per commit: `--debug` prints the new node.
        let out = self.hg(&["commit", "-A", "--debug", "-d", &date, "-m", message]);
        let node = out
            .lines()
            .find_map(|l| l.strip_prefix("committed changeset "))
            .and_then(|l| l.split(':').nth(1))
            .unwrap()
            .to_string();
        (node, self.clock)
    }
}

fn poller(url: &Path, mirror: &Path, branches: &[&str]) -> HgPoller {
    HgPoller::new(
        url.to_string_lossy(),
        branches.iter().map(|b| b.to_string()).collect(),
        mirror,
    )
}

fn revisions(changes: &[Change]) -> Vec<String> {
    changes.iter().map(|c| c.revision.clone()).collect()
}

#[test]
fn first_poll_then_commits_merge_and_deletion() {
    if !have_hg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("upstream"));
    repo.write("README", "hello\n");
    repo.write("gone.txt", "g\n");
    let (first, _) = repo.commit("initial");

    let mut p = poller(&repo.dir, &tmp.path().join("mirrors/up"), &[]);
    assert_eq!(p.branches, vec!["default".to_string()]);
    p.revlink = Some("https://example.org/rev/%s".to_string());
    p.project = "hello".into();
    let r = p.poll(&BTreeMap::new()).unwrap();
    assert!(r.changes.is_empty(), "first poll builds no history");
    assert_eq!(r.heads.get("default"), Some(&first));
    let seen = r.heads;

    repo.write("src/main.c", "int main;\n");
    repo.write("docs/a file with spaces.txt", "x\n");
    let (c1, t1) = repo.commit("add sources\n\nwith a body line");
    repo.write("README", "again\n");
    let (c2, _) = repo.commit("edit readme");
    std::fs::remove_file(repo.dir.join("gone.txt")).unwrap();
    let (c3, _) = repo.commit("delete a file");

    // A named branch merged back into default.
    repo.hg(&["branch", "-q", "feature"]);
    repo.write("feature.txt", "f\n");
    let (f1, _) = repo.commit("feature work");
    repo.hg(&["update", "-q", "default"]);
    repo.write("main.txt", "m\n");
    let (m1, _) = repo.commit("main work");
    repo.hg(&["merge", "-q", "feature"]);
    let (merge, _) = repo.commit("merge feature");

    let r = p.poll(&seen).unwrap();
    let revs = revisions(&r.changes);
    assert_eq!(revs[..3], [c1.clone(), c2, c3]);
    assert_eq!(revs.len(), 6, "{revs:?}");
    assert_eq!(
        revs[3..5].iter().cloned().collect::<BTreeSet<_>>(),
        [f1, m1].into_iter().collect()
    );
    assert_eq!(revs[5], merge);
    assert_eq!(r.heads.get("default"), Some(&merge));
    assert!(r.forced.is_empty() && r.failed.is_empty());

    let a = &r.changes[0];
    assert_eq!(a.who, "Ann Author <ann@example.org>");
    assert_eq!(
        a.files,
        vec![
            "docs/a file with spaces.txt".to_string(),
            "src/main.c".to_string()
        ]
    );
    assert_eq!(a.comments, "add sources\n\nwith a body line");
    assert_eq!(a.branch, "default");
    assert_eq!(a.when, t1);
    assert_eq!(a.repository, repo.dir.to_string_lossy());
    assert_eq!(a.links, vec![format!("https://example.org/rev/{c1}")]);
    assert_eq!(a.project, "hello");
    assert_eq!(r.changes[2].files, vec!["gone.txt".to_string()]);
    assert_eq!(
        r.changes[5].files,
        vec!["feature.txt".to_string()],
        "merge vs first parent"
    );

    let again = p.poll(&r.heads).unwrap();
    assert!(again.changes.is_empty());
    assert_eq!(again.heads, r.heads);
}

#[test]
fn named_branches_missing_branch_and_rewritten_history() {
    if !have_hg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("up"));
    repo.write("a", "1\n");
    let (a, _) = repo.commit("A");
    repo.hg(&["branch", "-q", "dev"]);
    repo.write("d", "1\n");
    repo.commit("dev start");
    repo.hg(&["update", "-q", "default"]);

    let p = poller(
        &repo.dir,
        &tmp.path().join("mirror"),
        &["default", "dev", "nope"],
    );
    let r = p.poll(&BTreeMap::new()).unwrap();
    assert_eq!(r.heads.len(), 2);
    assert!(matches!(
        r.failed.get("nope"),
        Some(PollError::BranchMissing { .. })
    ));
    let seen = r.heads;

    repo.write("b", "2\n");
    let (b, _) = repo.commit("B on default");
    repo.hg(&["update", "-q", "dev"]);
    repo.write("d", "2\n");
    let (d2, _) = repo.commit("dev 2");

    let r = p.poll(&seen).unwrap();
    let on = |b: &str| -> Vec<String> {
        r.changes
            .iter()
            .filter(|c| c.branch == b)
            .map(|c| c.revision.clone())
            .collect()
    };
    assert_eq!(on("default"), vec![b.clone()]);
    assert_eq!(on("dev"), vec![d2]);
    let seen = r.heads.clone();

    // Rewrite default: strip B, commit C on top of A (what a force-push leaves).
    repo.hg(&["--config", "extensions.strip=", "strip", "-q", "-r", &b]);
    repo.hg(&["update", "-q", "-r", &a]);
    repo.write("c", "3\n");
    let (c, _) = repo.commit("C");
    // The mirror still has B (pull never removes); only C is new.
    let r = p.poll(&seen).unwrap();
    assert_eq!(revisions(&r.changes), vec![c.clone()]);
    assert_eq!(r.forced, vec!["default".to_string()]);
    assert_eq!(r.heads.get("default"), Some(&c));
}

#[test]
fn missing_repository_then_down_poller_catches_up_once() {
    if !have_hg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("not-yet");
    let p = poller(&up, &tmp.path().join("mirror"), &["default"]);
    let err = p.poll(&BTreeMap::new()).unwrap_err();
    assert!(matches!(err, PollError::Fetch { .. }), "{err:?}");
    assert!(err.to_string().contains("not-yet"), "{err}");

    let mut repo = Repo::new(&up);
    repo.write("a", "0\n");
    let (start, _) = repo.commit("start");
    let r = p.poll(&BTreeMap::new()).unwrap();
    assert_eq!(r.heads.get("default"), Some(&start));

    for i in 1..=6 {
        repo.write("a", &format!("{i}\n"));
        repo.commit(&format!("missed {i}"));
    }
    // The stored last-seen node is from long ago, and the mirror is new.
    let fresh = poller(&up, &tmp.path().join("mirror2"), &["default"]);
    let last_seen: BTreeMap<String, String> = [("default".to_string(), start.clone())].into();
    let r = fresh.poll(&last_seen).unwrap();
    let expected: Vec<String> = repo
        .hg(&[
            "log",
            "-r",
            &format!("{start}::tip - {start}"),
            "-T",
            "{node}\n",
        ])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(expected.len(), 6);
    assert_eq!(
        revisions(&r.changes),
        expected,
        "every missed commit once, oldest first"
    );
    assert_eq!(p.poll(&last_seen).unwrap().changes.len(), 6);

    // A last-seen node the mirror never had: head recorded, flagged, no Changes.
    let bogus: BTreeMap<String, String> = [("default".to_string(), "ab".repeat(20))].into();
    let r = p.poll(&bogus).unwrap();
    assert!(r.changes.is_empty());
    assert_eq!(r.forced, vec!["default".to_string()]);
    assert_eq!(r.heads.get("default"), Some(&expected[5]));
}

#[test]
fn a_hung_hg_is_killed_after_the_timeout() {
    // Needs no Mercurial: a stand-in `hg` that never answers.
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("hg");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 30\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut p = poller(&tmp.path().join("up"), &tmp.path().join("mirror"), &[]);
    p.hg = fake;
    p.timeout = std::time::Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = p.poll(&BTreeMap::new()).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(err.to_string().contains("hg clone did not finish"), "{err}");
}
