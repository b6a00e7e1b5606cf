//! From a git commit to the right build, with a real repository (git CLI), a real
//! master (SQLite, TCP) and an in-process slave: the tree-stable scheduler builds a
//! commit within pollInterval + treeStable, quick commits build once with all their
//! Changes, a master that was down (or restarted mid-timer) loses and duplicates
//! nothing, `branches` follows several branches, and a reconfig starts new pollers.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

use autobot::db::changes::NewChange;
use scheduler_common::*;

fn factory(name: &str, url: &str, extra: &str) -> String {
    format!("[{name}]\ntype = shell\ngit = {url}#main\nstep.ok = true\n{extra}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_builds_within_poll_interval_plus_tree_stable() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = GitRepo::new(&tmp.path().join("repo"));
    let first = repo.commit("Init <init@example.org>", "README", "initial");
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 1",
        &["s1"],
        &factory("proj", &repo.url(), ""),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    // The first poll records the head and builds nothing.
    assert_eq!(wait_head(&db, &repo.url(), "main").await, first);
    assert!(buildsets(&db).await.is_empty());

    let t0 = autobot::db::now_f64();
    let rev = repo.commit("Ann Author <ann@example.org>", "src/a.c", "one");
    let builds = wait_builds(&db, "proj-s1", 1).await;
    let latency = builds[0].started_at - t0;
    assert!(
        (1.0..=1.0 + 1.0 + 1.5).contains(&latency),
        "commit to build started took {latency:.3} s"
    );
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(b.branch.as_deref(), Some("main"));
    assert_eq!(b.changes.len(), 1);
    let c = &b.changes[0];
    assert_eq!(c.who, "Ann Author <ann@example.org>");
    assert_eq!(c.files, vec!["src/a.c"]);
    assert_eq!(c.comments.trim(), "one");
    assert_eq!(c.repository, repo.url());
    assert_eq!(blamelist(&b), vec!["Ann Author <ann@example.org>"]);
    let sets = buildsets_of(&db, "proj").await;
    assert_eq!(sets.len(), 1);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_quick_commits_build_once_with_three_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = GitRepo::new(&tmp.path().join("repo"));
    let first = repo.commit("Init <init@example.org>", "README", "initial");
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 3",
        &["s1"],
        &factory("proj", &repo.url(), ""),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    assert_eq!(wait_head(&db, &repo.url(), "main").await, first);
    let authors = [
        "Ann <ann@example.org>",
        "Bob <bob@example.org>",
        "Cy <cy@example.org>",
    ];
    let revs: Vec<String> = authors
        .iter()
        .enumerate()
        .map(|(i, who)| repo.commit(who, &format!("f{i}.c"), &format!("change {i}")))
        .collect();
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"));
    assert_eq!(blamelist(&b), authors);
    assert_eq!(
        b.changes
            .iter()
            .map(|c| c.revision.clone().unwrap())
            .collect::<Vec<_>>(),
        revs
    );
    assert_eq!(b.revision.as_deref(), Some(revs[2].as_str()));
    // Nothing waits any more, so no second build can come.
    assert_eq!(scheduler_backlog(&db).await, (0, 0));
    let sets = buildsets_of(&db, "proj").await;
    assert_eq!(sets.len(), 1);
    assert!(sets[0].reason.contains("3 changes"), "{}", sets[0].reason);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_down_while_commits_land_then_restarted_mid_timer() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = GitRepo::new(&tmp.path().join("repo"));
    let first = repo.commit("Init <init@example.org>", "README", "initial");
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 3",
        &["s1"],
        &factory("proj", &repo.url(), ""),
    ));
    let run = site.start(&["s1"]).await;
    assert_eq!(wait_head(run.db(), &repo.url(), "main").await, first);
    run.stop().await;

    // Commits land while the master is down.
    let revs: Vec<String> = ["Ann <a@x.org>", "Bob <b@x.org>", "Cy <c@x.org>"]
        .iter()
        .enumerate()
        .map(|(i, who)| repo.commit(who, "a.c", &format!("offline {i}")))
        .collect();
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(
        b.changes
            .iter()
            .map(|c| c.revision.clone().unwrap())
            .collect::<Vec<_>>(),
        revs
    );
    let all = db.changes(100, None).await.unwrap();
    assert_eq!(all.len(), 3, "every Change once: {all:?}");

    // A commit seen, its timer running, and the master stops before it fires.
    let late = repo.commit("Dee <d@x.org>", "b.c", "while the timer runs");
    wait_some("the scheduler to take the commit", || async {
        (scheduler_backlog(&db).await == (1, 1)).then_some(())
    })
    .await;
    run.stop().await;
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let b2 = wait_finished(&db, "proj-s1", 2).await;
    assert_eq!(b2.changes.len(), 1);
    assert_eq!(b2.changes[0].revision.as_deref(), Some(late.as_str()));
    assert_eq!(b2.build.result.as_deref(), Some("success"));
    assert_eq!(scheduler_backlog(&db).await, (0, 0));
    assert_eq!(buildsets_of(&db, "proj").await.len(), 2);
    assert_eq!(db.changes(100, None).await.unwrap().len(), 4);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_list_and_any_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = GitRepo::new(&tmp.path().join("repo"));
    repo.commit("Init <init@example.org>", "README", "initial");
    repo.git(&["branch", "dev"], "Init <init@example.org>");
    let factories = format!(
        "{}{}",
        factory("two", &repo.url(), "branches = main dev\ntreeStable = 0"),
        factory("any", &repo.url(), "branches = *\ntreeStable = 0"),
    );
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 1",
        &["s1"],
        &factories,
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    wait_head(&db, &repo.url(), "main").await;
    wait_head(&db, &repo.url(), "dev").await;

    // A commit on dev: `two` follows dev by name (the poller watches it).
    repo.git(&["checkout", "-q", "dev"], "x <x@x.org>");
    let dev = repo.commit("Dev <dev@example.org>", "d.c", "on dev");
    let b = wait_finished(&db, "two-s1", 1).await;
    assert_eq!(b.branch.as_deref(), Some("dev"));
    assert_eq!(b.revision.as_deref(), Some(dev.as_str()));
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");

    // `any` takes Changes of any branch (here one submitted straight to the
    // ChangeBus, as sendchange does), one timer per branch.
    repo.git(&["checkout", "-q", "-b", "feature/x"], "x <x@x.org>");
    let feat = repo.commit("Fay <fay@example.org>", "f.c", "feature");
    run.master
        .changes()
        .add(vec![NewChange {
            who: "Fay <fay@example.org>".into(),
            files: vec!["f.c".into()],
            revision: Some(feat.clone()),
            branch: Some("feature/x".into()),
            repository: repo.url(),
            when: autobot::db::now(),
            ..Default::default()
        }])
        .await
        .unwrap();
    let feature = wait_some("any's feature/x BuildSet", || async {
        buildsets_of(&db, "any")
            .await
            .into_iter()
            .find(|b| b.branch.as_deref() == Some("feature/x"))
    })
    .await;
    // `any` built the dev commit too, on its own timer.
    let any_dev = wait_some("any's dev BuildSet", || async {
        buildsets_of(&db, "any")
            .await
            .into_iter()
            .find(|b| b.branch.as_deref() == Some("dev"))
    })
    .await;
    assert_eq!(any_dev.revision.as_deref(), Some(dev.as_str()));
    assert_eq!(feature.revision.as_deref(), Some(feat.as_str()));
    // `two` ignores feature/x.
    assert!(buildsets_of(&db, "two")
        .await
        .iter()
        .all(|b| b.branch.as_deref() != Some("feature/x")));
    let fb = wait_some("the feature/x build", || async {
        for n in 1..10 {
            match db.build("any-s1", n).await.unwrap() {
                Some(b) if b.branch.as_deref() == Some("feature/x") && b.build.result.is_some() => {
                    return Some(b)
                }
                Some(_) => {}
                None => return None,
            }
        }
        None
    })
    .await;
    assert_eq!(fb.build.result.as_deref(), Some("success"), "{fb:?}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfig_starts_the_pollers_of_a_new_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let a = GitRepo::new(&tmp.path().join("a"));
    a.commit("Init <init@example.org>", "README", "initial");
    let b = GitRepo::new(&tmp.path().join("b"));
    let b_first = b.commit("Init <init@example.org>", "README", "initial");
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 0",
        &["s1"],
        &factory("a", &a.url(), ""),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    wait_head(&db, &a.url(), "main").await;
    support::write_master_ini(
        site.path(),
        ini(
            "pollInterval = 1\ntreeStable = 0",
            &["s1"],
            &format!(
                "{}{}",
                factory("a", &a.url(), ""),
                factory("b", &b.url(), "")
            ),
        ),
    );
    run.master.reconfig().await.unwrap();
    assert_eq!(wait_head(&db, &b.url(), "main").await, b_first);
    let rev = b.commit("Bea <bea@example.org>", "x.c", "after reconfig");
    let built = wait_finished(&db, "b-s1", 1).await;
    assert_eq!(built.revision.as_deref(), Some(rev.as_str()));
    assert!(db.builds("a-s1", 10, None).await.unwrap().is_empty());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_request_polls_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = GitRepo::new(&tmp.path().join("repo"));
    repo.commit("Init <init@example.org>", "README", "initial");
    let site = Site::new(&ini(
        "pollInterval = 3600\ntreeStable = 0",
        &["s1"],
        &factory("proj", &repo.url(), ""),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    wait_head(&db, &repo.url(), "main").await;
    let rev = repo.commit("Ann <ann@example.org>", "a.c", "poll me");
    // What `/change_hook/poller?repo=URL` does; the hourly poll is far away.
    assert_eq!(
        run.master.changes().request_poll(&repo.url()),
        autobot::changes::PollRequest::Queued
    );
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_repository_is_logged_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("later");
    let url = path.to_string_lossy().into_owned();
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 0",
        &["s1"],
        &factory("late", &url, ""),
    ));
    let run = site.start(&["s1"]).await;
    support::wait_log(&["poller", &url, "retrying at the next interval"]).await;
    // The repository appears: its head is recorded, then a commit builds.
    let repo = GitRepo::new(&path);
    let first = repo.commit("Init <init@example.org>", "README", "initial");
    let db = run.db().clone();
    assert_eq!(wait_head(&db, &url, "main").await, first);
    let rev = repo.commit("Ann <ann@example.org>", "a.c", "now");
    let b = wait_finished(&db, "late-s1", 1).await;
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    run.stop().await;
}
