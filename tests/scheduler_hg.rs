//! From a Mercurial commit to the right build: the hg poller (the `hg` CLI) feeds
//! the tree-stable scheduler as the git one does — a commit builds within
//! pollInterval + treeStable with its Change, quick commits build once, and a
//! master that was down reports every commit once. Without `hg` the test fails
//! under `CI=true` and prints SKIP elsewhere.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

use scheduler_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hg_commits_build_and_nothing_is_lost_while_the_master_is_down() {
    if !have_hg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = HgRepo::new(&tmp.path().join("repo"));
    let first = repo.commit("Init <init@example.org>", "README", "initial");
    let site = Site::new(&ini(
        "pollInterval = 1\ntreeStable = 1",
        &["s1"],
        &format!(
            "[proj]\ntype = shell\nhg = {}#default\nstep.ok = true\n",
            repo.url()
        ),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    assert_eq!(wait_head(&db, &repo.url(), "default").await, first);

    let t0 = autobot::db::now_f64();
    let rev = repo.commit("Ann Author <ann@example.org>", "a.c", "one");
    let builds = wait_builds(&db, "proj-s1", 1).await;
    let latency = builds[0].started_at - t0;
    // One poll (1 s) and the tree-stable timer (1 s) start it; the slack is for
    // a loaded machine (this checks that the poller runs on its own, not how
    // fast: bench/pollers measures that).
    assert!(
        latency <= 1.0 + 1.0 + 8.0,
        "commit to build started took {latency:.3} s"
    );
    let b = wait_finished(&db, "proj-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(rev.as_str()));
    assert_eq!(blamelist(&b), vec!["Ann Author <ann@example.org>"]);
    assert_eq!(b.changes[0].files, vec!["a.c"]);

    // Down while three commits land: one build with the three, each Change once.
    run.stop().await;
    let authors = ["Bob <b@x.org>", "Cy <c@x.org>", "Dee <d@x.org>"];
    let revs: Vec<String> = authors
        .iter()
        .enumerate()
        .map(|(i, who)| repo.commit(who, "b.c", &format!("offline {i}")))
        .collect();
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let b2 = wait_finished(&db, "proj-s1", 2).await;
    assert_eq!(blamelist(&b2), authors);
    assert_eq!(
        b2.changes
            .iter()
            .map(|c| c.revision.clone().unwrap())
            .collect::<Vec<_>>(),
        revs
    );
    assert_eq!(b2.build.result.as_deref(), Some("success"), "{b2:?}");
    assert_eq!(db.changes(100, None).await.unwrap().len(), 4);
    assert_eq!(scheduler_backlog(&db).await, (0, 0));
    run.stop().await;
}
