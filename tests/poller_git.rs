//! The git poller against real repositories made with the git CLI in temp dirs:
//! first poll, new commits, merges, deletions, branches, force-pushes, a repository
//! that is missing and comes back, and a poller that was down for a while.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use autobot::changes::{Change, GitPoller, PollError};

/// A work repository acting as the "remote" the poller fetches from.
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
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    fn git(&self, args: &[&str]) -> String {
        crate::support::run_ok(
            Command::new("git")
                .args(args)
                .current_dir(&self.dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_AUTHOR_NAME", "Ann Author")
                .env("GIT_AUTHOR_EMAIL", "ann@example.org")
                .env("GIT_COMMITTER_NAME", "Carl Committer")
                .env("GIT_COMMITTER_EMAIL", "carl@example.org")
                .env("GIT_AUTHOR_DATE", format!("@{} +0000", self.clock - 30))
                .env("GIT_COMMITTER_DATE", format!("@{} +0200", self.clock)),
        )
    }

    fn write(&self, path: &str, content: &str) {
        crate::support::write_file(&self.dir, path, content)
    }

    /// Commits everything in the work tree; returns (sha, commit time).
    fn commit(&mut self, message: &str) -> (String, i64) {
        self.clock += 60;
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        (self.git(&["rev-parse", "HEAD"]), self.clock)
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }
}

fn poller(url: &Path, mirror: &Path, branches: &[&str]) -> GitPoller {
    GitPoller::new(
        url.to_string_lossy(),
        branches.iter().map(|b| b.to_string()).collect(),
        mirror,
    )
}

fn revisions(changes: &[Change]) -> Vec<String> {
    changes.iter().map(|c| c.revision.clone()).collect()
}

#[test]
fn first_poll_records_head_then_three_commits_become_three_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("upstream"));
    repo.write("README", "hello\n");
    let (first, _) = repo.commit("initial");

    let mut p = poller(&repo.dir, &tmp.path().join("mirrors/up"), &["main"]);
    p.revlink = Some("https://example.org/commit/%s".to_string());
    p.project = "hello".to_string();
    p.category = Some("core".to_string());

    let r = p.poll(&BTreeMap::new()).unwrap();
    assert!(r.changes.is_empty(), "first poll builds no history");
    assert_eq!(r.heads.get("main"), Some(&first));
    assert!(r.forced.is_empty() && r.failed.is_empty());
    let last_seen = r.heads;

    repo.write("src/main.c", "int main;\n");
    repo.write("docs/a file with spaces.txt", "x\n");
    let (c1, t1) = repo.commit("add sources\n\nwith a body line");
    repo.write("README", "hello again\n");
    let (c2, t2) = repo.commit("edit readme");
    repo.write("src/main.c", "int main(void);\n");
    repo.write("src/util.c", "\n");
    let (c3, t3) = repo.commit("third");

    let r = p.poll(&last_seen).unwrap();
    assert_eq!(
        revisions(&r.changes),
        vec![c1.clone(), c2.clone(), c3.clone()]
    );
    assert_eq!(r.heads.get("main"), Some(&c3));
    assert!(r.forced.is_empty());

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
    assert_eq!(a.branch, "main");
    assert_eq!(a.when, t1, "commit (committer) time");
    assert_eq!(a.repository, repo.dir.to_string_lossy());
    assert_eq!(a.project, "hello");
    assert_eq!(a.category.as_deref(), Some("core"));
    assert_eq!(a.links, vec![format!("https://example.org/commit/{c1}")]);
    assert_eq!(r.changes[1].files, vec!["README".to_string()]);
    assert_eq!(r.changes[1].when, t2);
    assert_eq!(
        r.changes[2].files,
        vec!["src/main.c".to_string(), "src/util.c".to_string()]
    );
    assert_eq!(r.changes[2].when, t3);

    // Nothing new: nothing reported, same head.
    let again = p.poll(&r.heads).unwrap();
    assert!(again.changes.is_empty());
    assert_eq!(again.heads, r.heads);
}

#[test]
fn merge_commit_lists_files_against_first_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("up"));
    repo.write("a", "1\n");
    repo.commit("base");
    let p = poller(&repo.dir, &tmp.path().join("mirror"), &["main"]);
    let seen = p.poll(&BTreeMap::new()).unwrap().heads;

    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("feature.txt", "f\n");
    let (f1, _) = repo.commit("feature work");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("main.txt", "m\n");
    let (m1, _) = repo.commit("main work");
    repo.clock += 60;
    repo.git(&["merge", "-q", "--no-ff", "-m", "merge feature", "feature"]);
    let merge = repo.head();

    let r = p.poll(&seen).unwrap();
    let revs = revisions(&r.changes);
    assert_eq!(revs.len(), 3, "{revs:?}");
    assert_eq!(revs[2], merge, "the merge comes after both its parents");
    assert_eq!(
        revs[..2].iter().cloned().collect::<BTreeSet<_>>(),
        [f1, m1].into_iter().collect()
    );
    let m = &r.changes[2];
    assert_eq!(m.files, vec!["feature.txt".to_string()]);
    assert_eq!(m.comments, "merge feature");
}

#[test]
fn deleted_files_are_listed_and_directories_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("up"));
    repo.write("keep", "k\n");
    repo.write("gone.txt", "g\n");
    repo.write("dir/sub/x.c", "x\n");
    repo.write("dir/y.c", "y\n");
    repo.commit("base");
    let p = poller(&repo.dir, &tmp.path().join("mirror"), &["main"]);
    let seen = p.poll(&BTreeMap::new()).unwrap().heads;

    repo.git(&["rm", "-q", "gone.txt"]);
    let (del, _) = repo.commit("delete a file");
    repo.git(&["rm", "-q", "-r", "dir"]);
    let (deldir, _) = repo.commit("delete a directory");

    let r = p.poll(&seen).unwrap();
    assert_eq!(revisions(&r.changes), vec![del, deldir]);
    assert_eq!(r.changes[0].files, vec!["gone.txt".to_string()]);
    assert_eq!(
        r.changes[1].files,
        vec!["dir/sub/x.c".to_string(), "dir/y.c".to_string()]
    );
}

#[test]
fn two_branches_are_polled_separately() {
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("up"));
    repo.write("a", "1\n");
    repo.commit("base");
    repo.git(&["branch", "dev"]);
    let p = poller(&repo.dir, &tmp.path().join("mirror"), &["main", "dev"]);
    let seen = p.poll(&BTreeMap::new()).unwrap().heads;
    assert_eq!(seen.len(), 2);

    repo.write("main-only", "m\n");
    let (m1, _) = repo.commit("on main");
    repo.git(&["checkout", "-q", "dev"]);
    repo.write("dev-only", "d\n");
    let (d1, _) = repo.commit("on dev 1");
    repo.write("dev-only", "d2\n");
    let (d2, _) = repo.commit("on dev 2");

    let r = p.poll(&seen).unwrap();
    assert_eq!(r.heads.get("main"), Some(&m1));
    assert_eq!(r.heads.get("dev"), Some(&d2));
    let on = |b: &str| -> Vec<String> {
        r.changes
            .iter()
            .filter(|c| c.branch == b)
            .map(|c| c.revision.clone())
            .collect()
    };
    assert_eq!(on("main"), vec![m1]);
    assert_eq!(on("dev"), vec![d1, d2]);
    assert_eq!(r.changes.len(), 3);
}

#[test]
fn force_push_reports_only_new_commits_and_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("up"));
    repo.write("a", "1\n");
    let (a, _) = repo.commit("A");
    let p = poller(&repo.dir, &tmp.path().join("mirror"), &["main"]);
    let seen = p.poll(&BTreeMap::new()).unwrap().heads;

    repo.write("b", "2\n");
    let (b, _) = repo.commit("B");
    let r = p.poll(&seen).unwrap();
    assert_eq!(revisions(&r.changes), vec![b.clone()]);
    let seen = r.heads;

    // Rewrite: drop B, add C and D on top of A.
    repo.git(&["reset", "-q", "--hard", &a]);
    repo.write("c", "3\n");
    let (c, _) = repo.commit("C");
    repo.write("d", "4\n");
    let (d, _) = repo.commit("D");

    let r = p.poll(&seen).unwrap();
    assert_eq!(revisions(&r.changes), vec![c, d.clone()]);
    assert_eq!(r.forced, vec!["main".to_string()]);
    assert_eq!(r.heads.get("main"), Some(&d));
    assert_eq!(r.changes[0].files, vec!["c".to_string()]);

    // Rewound to an older commit with nothing new: no Changes, still flagged.
    repo.git(&["reset", "-q", "--hard", &a]);
    let r2 = p.poll(&r.heads).unwrap();
    assert!(r2.changes.is_empty());
    assert_eq!(r2.forced, vec!["main".to_string()]);
    assert_eq!(r2.heads.get("main"), Some(&a));
}

#[test]
fn unrelated_history_root_commit_lists_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("up"));
    repo.write("old", "o\n");
    repo.commit("old root");
    let p = poller(&repo.dir, &tmp.path().join("mirror"), &["main"]);
    let seen = p.poll(&BTreeMap::new()).unwrap().heads;

    repo.git(&["checkout", "-q", "--orphan", "fresh"]);
    repo.git(&["rm", "-q", "-r", "--cached", "."]);
    std::fs::remove_file(repo.dir.join("old")).unwrap();
    repo.write("new/one", "1\n");
    repo.write("two", "2\n");
    let (root, _) = repo.commit("new root");
    repo.git(&["branch", "-q", "-f", "main", "fresh"]);

    let r = p.poll(&seen).unwrap();
    assert_eq!(revisions(&r.changes), vec![root]);
    assert_eq!(r.forced, vec!["main".to_string()]);
    assert_eq!(
        r.changes[0].files,
        vec!["new/one".to_string(), "two".to_string()]
    );
}

#[test]
fn missing_repository_is_an_error_and_a_later_poll_works() {
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("not-yet");
    let p = poller(&up, &tmp.path().join("mirror"), &["main"]);
    let err = p.poll(&BTreeMap::new()).unwrap_err();
    assert!(matches!(err, PollError::Fetch { .. }), "{err:?}");
    assert!(err.to_string().contains("not-yet"), "{err}");

    let mut repo = Repo::new(&up);
    repo.write("a", "1\n");
    let (a, _) = repo.commit("A");
    let r = p.poll(&BTreeMap::new()).unwrap();
    assert_eq!(r.heads.get("main"), Some(&a));
    assert!(r.changes.is_empty());
}

#[test]
fn missing_branch_fails_alone_and_others_still_report() {
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("up"));
    repo.write("a", "1\n");
    repo.commit("A");
    let p = poller(&repo.dir, &tmp.path().join("mirror"), &["main", "nope"]);
    let r = p.poll(&BTreeMap::new()).unwrap();
    let seen = r.heads.clone();
    assert!(matches!(
        r.failed.get("nope"),
        Some(PollError::BranchMissing { .. })
    ));

    repo.write("b", "2\n");
    let (b, _) = repo.commit("B");
    let r = p.poll(&seen).unwrap();
    assert_eq!(revisions(&r.changes), vec![b]);
    assert!(r.failed.contains_key("nope"));
    assert!(!r.heads.contains_key("nope"));

    // Only missing branches: the whole poll is an error.
    let only = poller(&repo.dir, &tmp.path().join("mirror"), &["nope"]);
    let err = only.poll(&BTreeMap::new()).unwrap_err();
    assert!(matches!(err, PollError::BranchMissing { .. }), "{err:?}");
}

#[test]
fn a_poller_that_was_down_reports_every_missed_commit_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("up"));
    repo.write("a", "0\n");
    let (start, _) = repo.commit("start");
    let p = poller(&repo.dir, &tmp.path().join("mirror"), &["main"]);
    p.poll(&BTreeMap::new()).unwrap();

    // While "down": 30 commits on main and a merged side branch of 5.
    for i in 0..15 {
        repo.write("a", &format!("{i}\n"));
        repo.commit(&format!("main {i}"));
    }
    repo.git(&["checkout", "-q", "-b", "side"]);
    for i in 0..5 {
        repo.write("side", &format!("{i}\n"));
        repo.commit(&format!("side {i}"));
    }
    repo.git(&["checkout", "-q", "main"]);
    for i in 15..30 {
        repo.write("a", &format!("{i}\n"));
        repo.commit(&format!("main {i}"));
    }
    repo.clock += 60;
    repo.git(&["merge", "-q", "--no-ff", "-m", "merge side", "side"]);

    // The stored last-seen revision is from long ago; a fresh mirror too (the master
    // directory was moved), so everything comes over the wire again.
    let fresh = poller(&repo.dir, &tmp.path().join("mirror2"), &["main"]);
    let last_seen: BTreeMap<String, String> = [("main".to_string(), start.clone())].into();
    let r = fresh.poll(&last_seen).unwrap();
    let expected: BTreeSet<String> = repo
        .git(&["rev-list", &format!("{start}..main")])
        .lines()
        .map(str::to_string)
        .collect();
    let got = revisions(&r.changes);
    assert_eq!(got.len(), 36);
    assert_eq!(
        got.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "each once"
    );
    assert!(r.forced.is_empty());
    // Parents always before children.
    let position: BTreeMap<&str, usize> = got
        .iter()
        .enumerate()
        .map(|(i, r)| (r.as_str(), i))
        .collect();
    for rev in &got {
        let parents = repo.git(&["rev-list", "--parents", "-n", "1", rev]);
        for parent in parents.split_whitespace().skip(1) {
            if let Some(&pp) = position.get(parent) {
                assert!(
                    pp < position[rev.as_str()],
                    "{parent} listed after its child {rev}"
                );
            }
        }
    }
    // And the old mirror catches up the same way.
    let r_old = p.poll(&last_seen).unwrap();
    assert_eq!(revisions(&r_old.changes), got);
}

#[test]
fn file_url_and_credentials_are_redacted_in_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("up"));
    repo.write("a", "1\n");
    repo.commit("A");
    let url = format!("file://{}", repo.dir.display());
    let p = GitPoller::new(url.clone(), vec!["main".into()], tmp.path().join("m"));
    let seen = p.poll(&BTreeMap::new()).unwrap().heads;
    repo.write("a", "2\n");
    repo.commit("B");
    let r = p.poll(&seen).unwrap();
    assert_eq!(r.changes.len(), 1);
    assert_eq!(r.changes[0].repository, url);
}

#[test]
fn https_url_that_cannot_be_reached_is_a_fetch_error_not_a_panic() {
    // A port that was free a moment ago: the connection is refused. This builds gix's
    // reqwest client, which needs the ring TLS provider installed by the poller.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let p = GitPoller::new(
        format!("https://bob:s3cret@127.0.0.1:{port}/x.git"),
        vec!["main".into()],
        tmp.path().join("m"),
    );
    let err = p.poll(&BTreeMap::new()).unwrap_err();
    assert!(matches!(err, PollError::Fetch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    eprintln!("{text}");
}

#[test]
fn missing_repository_error_names_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let p = poller(
        &tmp.path().join("nowhere"),
        &tmp.path().join("m"),
        &["main"],
    );
    let text = p.poll(&BTreeMap::new()).unwrap_err().to_string();
    eprintln!("{text}");
    assert!(text.contains("nowhere"), "{text}");
}

#[test]
fn unknown_last_seen_revision_records_the_head_without_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut repo = Repo::new(&tmp.path().join("up"));
    repo.write("a", "1\n");
    let (a, _) = repo.commit("A");
    let p = poller(&repo.dir, &tmp.path().join("mirror"), &["main"]);
    for bogus in ["ab".repeat(20), "not a revision".to_string()] {
        let seen: BTreeMap<String, String> = [("main".to_string(), bogus)].into();
        let r = p.poll(&seen).unwrap();
        assert!(r.changes.is_empty());
        assert_eq!(r.forced, vec!["main".to_string()]);
        assert_eq!(r.heads.get("main"), Some(&a));
    }
}
