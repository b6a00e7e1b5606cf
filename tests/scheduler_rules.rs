//! Scheduler rules on a real master and in-process slaves, with Changes submitted
//! through the ChangeBus (as sendchange and webhooks do): `files` filters,
//! request merging while a builder is busy, BuildSet results over several builders,
//! and `dependsOn` (success fires the same SourceStamp downstream, failure fires
//! nothing).

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

use autobot::app::Master;
use autobot::db::changes::{ChangeRow, NewChange};
use scheduler_common::*;

async fn send(master: &Master, who: &str, files: &[&str]) -> ChangeRow {
    master
        .changes()
        .add(vec![NewChange {
            who: who.into(),
            files: files.iter().map(|f| f.to_string()).collect(),
            comments: format!("{who} was here"),
            when: autobot::db::now(),
            ..Default::default()
        }])
        .await
        .unwrap()
        .remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_filter_records_unimportant_changes_for_the_next_build() {
    let site = Site::new(&ini(
        "treeStable = 0",
        &["s1"],
        "[c]\ntype = shell\nstep.ok = true\nfiles = \\.c$ ^include/\n",
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let doc = send(&run.master, "Doc <doc@x.org>", &["README", "docs/x.txt"]).await;
    // Recorded, but no timer: nothing builds.
    wait_some("the README Change to be recorded", || async {
        (scheduler_backlog(&db).await == (1, 0)).then_some(())
    })
    .await;
    assert!(buildsets(&db).await.is_empty());
    let code = send(&run.master, "Cod <cod@x.org>", &["README", "src/a.c"]).await;
    let b = wait_finished(&db, "c-s1", 1).await;
    assert_eq!(
        b.changes.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![doc.id, code.id]
    );
    assert_eq!(blamelist(&b), vec!["Doc <doc@x.org>", "Cod <cod@x.org>"]);
    let header = send(&run.master, "Hed <hed@x.org>", &["include/a.h"]).await;
    let b2 = wait_finished(&db, "c-s1", 2).await;
    assert_eq!(
        b2.changes.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![header.id]
    );
    assert_eq!(scheduler_backlog(&db).await, (0, 0));
    run.stop().await;
}

/// With treeStable = 0 a Change fires its BuildSet straight from the Changes
/// in hand, recording the last Change handled in the same write: a restarted
/// master does not build it again. An unimportant Change that waits across a
/// restart still joins the next build (the restarted schedulers know the
/// branch has Changes waiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_fired_in_hand_are_not_built_again_and_waiting_ones_survive_a_restart() {
    let site = Site::new(&ini(
        "treeStable = 0",
        &["s1"],
        "[c]\ntype = shell\nstep.ok = true\nfiles = \\.c$\n",
    ));
    let changes = |b: &autobot::db::builds::BuildDetail| -> Vec<i64> {
        b.changes.iter().map(|c| c.id).collect()
    };
    let run = site.start(&["s1"]).await;
    let code = send(&run.master, "Cod <cod@x.org>", &["a.c"]).await;
    let b1 = wait_finished(run.db(), "c-s1", 1).await;
    assert_eq!(changes(&b1), [code.id]);
    assert_eq!(scheduler_backlog(run.db()).await, (0, 0));
    run.stop().await;

    let run = site.start(&["s1"]).await;
    let doc = send(&run.master, "Doc <doc@x.org>", &["README"]).await;
    wait_some("the README Change to be recorded", || async {
        (scheduler_backlog(run.db()).await == (1, 0)).then_some(())
    })
    .await;
    run.stop().await;

    let run = site.start(&["s1"]).await;
    let more = send(&run.master, "Mor <mor@x.org>", &["b.c"]).await;
    let b2 = wait_finished(run.db(), "c-s1", 2).await;
    assert_eq!(changes(&b2), [doc.id, more.id]);
    let sets = buildsets(run.db()).await;
    assert_eq!(
        sets.iter().map(|b| b.changes.clone()).collect::<Vec<_>>(),
        [vec![code.id], vec![doc.id, more.id]],
        "{sets:?}"
    );
    assert_eq!(scheduler_backlog(run.db()).await, (0, 0));
    run.stop().await;
}

/// A Change that fires its BuildSet at once (treeStable = 0, nothing
/// waiting) is stored with the BuildSet by one write: the BuildSet is there
/// as soon as the Change is. A restarted master builds none of them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_fires_at_once_is_stored_with_its_buildset() {
    let site = Site::new(&ini(
        "treeStable = 0",
        &["s1"],
        "[c]\ntype = shell\nstep.ok = true\n",
    ));
    let run = site.start(&["s1"]).await;
    // The first may come before the schedulers listen.
    send(&run.master, "Ann <ann@x.org>", &["a.c"]).await;
    wait_finished(run.db(), "c-s1", 1).await;
    let mut sent = Vec::new();
    for number in 2..=3 {
        let change = send(&run.master, "Bob <bob@x.org>", &["b.c"]).await;
        let sets = buildsets(run.db()).await;
        assert_eq!(
            sets.last().map(|b| b.changes.clone()),
            Some(vec![change.id]),
            "{sets:?}"
        );
        wait_finished(run.db(), "c-s1", number).await;
        sent.push(change.id);
    }
    run.stop().await;
    let run = site.start(&["s1"]).await;
    let last = send(&run.master, "Cy <cy@x.org>", &["c.c"]).await;
    let b4 = wait_finished(run.db(), "c-s1", 4).await;
    assert_eq!(
        b4.changes.iter().map(|c| c.id).collect::<Vec<_>>(),
        [last.id]
    );
    let sets = buildsets(run.db()).await;
    assert_eq!(sets.len(), 4, "{sets:?}");
    assert_eq!(sets[1].changes, [sent[0]]);
    assert_eq!(sets[2].changes, [sent[1]]);
    assert_eq!(scheduler_backlog(run.db()).await, (0, 0));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_while_the_builder_is_busy_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go");
    let site = Site::new(&ini(
        "treeStable = 0",
        &["s1"],
        &format!(
            "[slow]\ntype = shell\nstep.wait = sh -c 'while [ ! -e {} ]; do sleep 0.05; done'\n",
            go.display()
        ),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let first = send(&run.master, "Ann <a@x.org>", &["a"]).await;
    wait_builds(&db, "slow-s1", 1).await;
    let second = send(&run.master, "Bob <b@x.org>", &["b"]).await;
    wait_some("a second BuildSet", || async {
        (buildsets(&db).await.len() == 2).then_some(())
    })
    .await;
    let third = send(&run.master, "Cy <c@x.org>", &["c"]).await;
    wait_some("a third BuildSet", || async {
        (buildsets(&db).await.len() == 3).then_some(())
    })
    .await;
    // A forced build without Changes queues too and is not merged.
    let forced = run
        .master
        .engine()
        .force(
            "slow-s1",
            autobot::engine::ForceRequest {
                reason: "by hand".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    std::fs::write(&go, "").unwrap();
    let b1 = wait_finished(&db, "slow-s1", 1).await;
    assert_eq!(
        b1.changes.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![first.id]
    );
    let b2 = wait_finished(&db, "slow-s1", 2).await;
    assert_eq!(
        b2.changes.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![second.id, third.id]
    );
    assert_eq!(b2.requests.len(), 2);
    assert_eq!(blamelist(&b2), vec!["Bob <b@x.org>", "Cy <c@x.org>"]);
    let b3 = wait_finished(&db, "slow-s1", 3).await;
    assert_eq!(b3.requests, vec![forced.request_id]);
    assert!(b3.changes.is_empty());
    // Each merged request completed with the build's result; so did its BuildSet.
    for r in &b2.requests {
        let row = db.buildrequest(*r).await.unwrap().unwrap();
        assert_eq!(row.result.as_deref(), Some("success"));
        assert_eq!(row.builds, vec![2]);
    }
    let sets = wait_some("every BuildSet complete", || async {
        let s = buildsets(&db).await;
        s.iter().all(|b| b.complete).then_some(s)
    })
    .await;
    assert_eq!(sets.len(), 4);
    assert!(
        sets.iter().all(|b| b.result.as_deref() == Some("success")),
        "{sets:?}"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildset_result_is_the_worst_of_its_builds_and_is_kept() {
    let site = Site::new(&ini(
        "treeStable = 0",
        &["s1", "s2"],
        "[mixed]\ntype = shell\nstep.check = sh -c 'test %(slavename)s = s1'\n\n\
         [good]\ntype = shell\nstep.ok = true\n",
    ));
    let run = site.start(&["s1", "s2"]).await;
    let db = run.db().clone();
    send(&run.master, "Ann <a@x.org>", &["x"]).await;
    let sets = wait_some("both BuildSets complete", || async {
        let s = buildsets(&db).await;
        (s.len() == 2 && s.iter().all(|b| b.complete)).then_some(s)
    })
    .await;
    let mixed = sets.iter().find(|b| b.scheduler == "mixed").unwrap();
    let good = sets.iter().find(|b| b.scheduler == "good").unwrap();
    assert_eq!(mixed.result.as_deref(), Some("failure"));
    assert_eq!(good.result.as_deref(), Some("success"));
    assert_eq!(
        wait_finished(&db, "mixed-s1", 1)
            .await
            .build
            .result
            .as_deref(),
        Some("success")
    );
    assert_eq!(
        wait_finished(&db, "mixed-s2", 1)
            .await
            .build
            .result
            .as_deref(),
        Some("failure")
    );
    // Kept across a restart.
    run.stop().await;
    let run = site.start(&[]).await;
    let again = buildsets(run.db()).await;
    assert_eq!(again, sets);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_fires_on_success_and_not_on_failure() {
    let site = Site::new(&ini(
        "treeStable = 0",
        &["s1"],
        "[up]\ntype = shell\nstep.ok = true\n\n\
         [down]\ntype = shell\nstep.ok = true\ndependsOn = up\n\n\
         [bad]\ntype = shell\nstep.no = false\n\n\
         [child]\ntype = shell\nstep.ok = true\ndependsOn = bad\n",
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let change = send(&run.master, "Ann <a@x.org>", &["x"]).await;
    let down = wait_some("down's BuildSet", || async {
        buildsets_of(&db, "down:dependent").await.into_iter().next()
    })
    .await;
    let up = buildsets_of(&db, "up").await.remove(0);
    assert_eq!(up.result.as_deref(), Some("success"));
    assert_eq!(down.changes, vec![change.id]);
    assert_eq!(
        (down.branch.clone(), down.revision.clone()),
        (up.branch, up.revision)
    );
    let b = wait_finished(&db, "down-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"));
    assert_eq!(blamelist(&b), vec!["Ann <a@x.org>"]);
    assert_eq!(
        b.properties.get("upstream_buildset").map(|p| p.0.clone()),
        Some(up.id.to_string())
    );

    // `bad` failed: `child` looked at it and fired nothing.
    let bad = wait_some("bad's BuildSet complete", || async {
        buildsets_of(&db, "bad")
            .await
            .into_iter()
            .find(|b| b.complete)
    })
    .await;
    assert_eq!(bad.result.as_deref(), Some("failure"));
    wait_some("child to handle bad's BuildSet", || async {
        let id = bad.id;
        let n: i64 = db
            .read_sql(move |c| {
                c.query_one(
                    "SELECT count(*) FROM scheduler_buildsets
                     WHERE scheduler = 'child:dependent' AND buildset = ?1",
                    &[id.into()],
                )?
                .i64(0)
            })
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    assert!(buildsets_of(&db, "child:dependent").await.is_empty());
    // `down` fired once only, even after a restart.
    run.stop().await;
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    send(&run.master, "Bob <b@x.org>", &["y"]).await;
    wait_some("down's second BuildSet", || async {
        (buildsets_of(&db, "down:dependent").await.len() == 2).then_some(())
    })
    .await;
    wait_finished(&db, "down-s1", 2).await;
    assert_eq!(buildsets_of(&db, "down:dependent").await.len(), 2);
    run.stop().await;
}
