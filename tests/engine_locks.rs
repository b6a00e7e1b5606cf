//! Interlocks (`[lock:NAME]`, the manual's "Interlocks") in the build engine, with
//! real autobot slaves: a master lock with maxCount 1 keeps two builders' Builds
//! apart and maxCount 2 lets two in at once; a slave lock serialises Builds on one
//! slave but not across slaves; a step's lock is held only while that step runs;
//! locks are taken all at once (a Build waiting for A and B holds neither, so one
//! that needs only A runs meanwhile); the wait shows on the step; a Build stopped
//! (or a master shut down) while it waits for a lock ends at once.
//!
//! Every locked step runs `gate.sh`: it enters a critical section with
//! `mkdir held-KEY` (which fails, failing the Build, if anything else is inside),
//! announces itself with `in-ID`, and leaves when the test creates `go-ID`. So
//! the test decides when each Build leaves, and an overlap the lock should have
//! prevented cannot go unnoticed.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use autobot::engine::ForceRequest;
use engine_common::*;

const GATE: &str = r#"#!/bin/sh
# gate.sh DIR ID KEY: enter critical section KEY, say so, wait for go-ID, leave.
dir=$1 id=$2 key=$3
if ! mkdir "$dir/held-$key" 2>/dev/null; then
    echo "OVERLAP: $key is held by another build"
    exit 3
fi
echo "entered $key"
touch "$dir/in-$id"
n=0
while [ ! -e "$dir/go-$id" ]; do
    n=$((n+1))
    if [ $n -gt 2400 ]; then
        rmdir "$dir/held-$key"
        echo "never released"
        exit 4
    fi
    sleep 0.05
done
rmdir "$dir/held-$key"
echo "left $key"
"#;

/// The directory of markers, with `gate.sh` in it.
struct Marks {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Marks {
    fn new() -> Marks {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(path.join("gate.sh"), GATE).unwrap();
        Marks { _dir: dir, path }
    }

    /// A step command: the gate with this build's `ID-TAG` and critical section
    /// `key` (which may use properties).
    fn step(&self, tag: &str, key: &str) -> String {
        format!(
            "sh {dir}/gate.sh {dir} %(buildername)s-%(buildnumber)s-{tag} {key}",
            dir = self.path.display()
        )
    }

    fn entered(&self, id: &str) -> bool {
        self.path.join(format!("in-{id}")).exists()
    }

    fn release(&self, id: &str) {
        std::fs::write(self.path.join(format!("go-{id}")), "").unwrap();
    }

    async fn wait_entered(&self, id: &str) {
        wait_until(&format!("{id} enters"), || async { self.entered(id) }).await;
    }
}

fn force(reason: &str) -> ForceRequest {
    ForceRequest {
        reason: reason.into(),
        who: Some("tester".into()),
        ..Default::default()
    }
}

/// `master_ini` with `max_builds` for the one slave.
fn one_slave_ini(factories: &str, max_builds: u32) -> String {
    master_ini(factories, "").replace(
        &format!("[slave:{SLAVE}]\n"),
        &format!("[slave:{SLAVE}]\nmax_builds = {max_builds}\n"),
    )
}

/// What a step of a Build shows now: (description, text, result), if it started.
async fn step_state(
    m: &EngineMaster,
    builder: &str,
    number: i64,
    step: &str,
) -> Option<(String, String, Option<String>)> {
    let b = m.master.db().build(builder, number).await.unwrap()?;
    b.steps
        .into_iter()
        .find(|s| s.name == step)
        .map(|s| (s.description, s.text, s.result))
}

/// Wait until a step of a running Build shows `description`.
async fn wait_description(m: &EngineMaster, builder: &str, number: i64, step: &str, want: &str) {
    wait_until(
        &format!("{builder} {number} {step} shows {want:?}"),
        || async {
            step_state(m, builder, number, step)
                .await
                .is_some_and(|(d, _, r)| d == want && r.is_none())
        },
    )
    .await;
}

async fn assert_success(m: &EngineMaster, request: i64) {
    let r = m.wait_request(request).await;
    assert_eq!(r.result.as_deref(), Some("success"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_lock_max_count_one_and_two() {
    let marks = Marks::new();
    let work1 = marks.step("work", "one");
    let work2 = marks.step("work", "%(buildername)s");
    let factories = format!(
        "[lock:one]\n\n[lock:two]\nmaxCount = 2\n\n\
         [a]\ntype = shell\nlocks = one\nstep.work = {work1}\n\n\
         [b]\ntype = shell\nlocks = one\nstep.work = {work1}\n\n\
         [c]\ntype = shell\nlocks = two\nstep.work = {work2}\n\n\
         [d]\ntype = shell\nlocks = two\nstep.work = {work2}\n\n\
         [e]\ntype = shell\nlocks = two\nstep.work = {work2}\n"
    );
    let m = EngineMaster::start(&one_slave_ini(&factories, 5), Duration::from_secs(30)).await;
    let _slave = m.slave().await;

    // maxCount 1: two builders, one slave with room for both; one Build at a time.
    let forced_at = Instant::now();
    let ra = m.force("a-s1", force("a")).await;
    let rb = m.force("b-s1", force("b")).await;
    wait_until("a or b holds lock one", || async {
        marks.entered("a-s1-1-work") || marks.entered("b-s1-1-work")
    })
    .await;
    let (first, second, r_first, r_second) = if marks.entered("a-s1-1-work") {
        ("a-s1", "b-s1", ra, rb)
    } else {
        ("b-s1", "a-s1", rb, ra)
    };
    wait_description(&m, second, 1, "work", "waiting for lock one").await;
    let seen_waiting = Instant::now();
    assert!(!marks.entered(&format!("{second}-1-work")));
    marks.release(&format!("{first}-1-work"));
    let waited_at_least = seen_waiting.elapsed();
    assert_success(&m, r_first).await;
    marks.wait_entered(&format!("{second}-1-work")).await;
    let waited_at_most = forced_at.elapsed();
    marks.release(&format!("{second}-1-work"));
    assert_success(&m, r_second).await;

    // The wait shows on the waiting Build's first step: log header and text.
    let (desc, text, _) = step_state(&m, second, 1, "work").await.unwrap();
    assert!(
        text.starts_with("work (waited ") && text.ends_with(" s for the build's lock one)"),
        "{text}"
    );
    assert_ne!(desc, "waiting for lock one", "the description is restored");
    let log = m.log_text(second, 1, "work").await;
    let header = log
        .lines()
        .find(|l| l.starts_with("waited "))
        .unwrap_or_else(|| panic!("no wait header in {log}"));
    assert!(header.ends_with(" s for the build's lock one"), "{header}");
    let secs: f64 = header["waited ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Rounded to a tenth: it waited from before it was seen waiting until after
    // the release, and not longer than the whole test so far.
    assert!(
        secs + 0.05 >= waited_at_least.as_secs_f64() && secs - 0.05 <= waited_at_most.as_secs_f64(),
        "{header}: between {waited_at_least:?} and {waited_at_most:?}"
    );
    assert!(
        log.find("waited ").unwrap() < log.find("entered one").unwrap(),
        "{log}"
    );
    // The Build that did not wait says nothing of it.
    let (_, text, _) = step_state(&m, first, 1, "work").await.unwrap();
    assert!(!text.contains("waited"), "{text}");
    assert!(!m.log_text(first, 1, "work").await.contains("waited "));

    // maxCount 2: three builders, two Builds inside at once, the third waits.
    let reqs = [
        ("c-s1", m.force("c-s1", force("c")).await),
        ("d-s1", m.force("d-s1", force("d")).await),
        ("e-s1", m.force("e-s1", force("e")).await),
    ];
    let inside = |marks: &Marks| -> Vec<&str> {
        reqs.iter()
            .map(|(b, _)| *b)
            .filter(|b| marks.entered(&format!("{b}-1-work")))
            .collect()
    };
    wait_until("two builds hold lock two", || async {
        inside(&marks).len() == 2
    })
    .await;
    let two = inside(&marks);
    let third = reqs
        .iter()
        .map(|(b, _)| *b)
        .find(|b| !two.contains(b))
        .unwrap();
    wait_description(&m, third, 1, "work", "waiting for lock two").await;
    assert_eq!(inside(&marks).len(), 2, "a third build got in");
    marks.release(&format!("{}-1-work", two[0]));
    marks.wait_entered(&format!("{third}-1-work")).await;
    marks.release(&format!("{}-1-work", two[1]));
    marks.release(&format!("{third}-1-work"));
    for (_, r) in reqs {
        assert_success(&m, r).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_lock_serialises_each_slave_not_across_slaves() {
    let marks = Marks::new();
    let work = marks.step("work", "cpu-%(slavename)s");
    let ini = format!(
        "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = {PASSWORD}\nfactories = *\n\n\
         [slave:s1]\nmax_builds = 2\n\n[slave:s2]\nmax_builds = 2\n\n\
         [lock:cpu]\nscope = slave\n\n\
         [p]\ntype = shell\nlocks = cpu\nstep.work = {work}\n\n\
         [q]\ntype = shell\nlocks = cpu\nstep.work = {work}\n"
    );
    let m = EngineMaster::start(&ini, Duration::from_secs(30)).await;
    let _s1 = m.slave().await;
    let _s2 = support::Impl::Autobot
        .start(
            &m.dir.path().join("slave2"),
            m.master.slaveport(),
            "s2",
            PASSWORD,
        )
        .await
        .unwrap();
    m.master
        .registry()
        .wait_connected("s2", DEADLINE)
        .await
        .expect("s2 connects");

    // The same lock on two slaves: two counters, both Builds run at once.
    let rp1 = m.force("p-s1", force("p1")).await;
    let rp2 = m.force("p-s2", force("p2")).await;
    marks.wait_entered("p-s1-1-work").await;
    marks.wait_entered("p-s2-1-work").await;

    // A second Build on each slave waits for its own slave's lock.
    let rq1 = m.force("q-s1", force("q1")).await;
    let rq2 = m.force("q-s2", force("q2")).await;
    wait_description(&m, "q-s1", 1, "work", "waiting for lock cpu").await;
    wait_description(&m, "q-s2", 1, "work", "waiting for lock cpu").await;

    // Releasing s1's lock lets only s1's waiter in.
    marks.release("p-s1-1-work");
    assert_success(&m, rp1).await;
    marks.wait_entered("q-s1-1-work").await;
    assert!(!marks.entered("q-s2-1-work"));
    let (desc, _, result) = step_state(&m, "q-s2", 1, "work").await.unwrap();
    assert_eq!((desc.as_str(), result), ("waiting for lock cpu", None));

    marks.release("p-s2-1-work");
    assert_success(&m, rp2).await;
    marks.wait_entered("q-s2-1-work").await;
    marks.release("q-s1-1-work");
    marks.release("q-s2-1-work");
    assert_success(&m, rq1).await;
    assert_success(&m, rq2).await;
    for b in ["q-s1", "q-s2"] {
        let (_, text, _) = step_state(&m, b, 1, "work").await.unwrap();
        assert!(text.contains("for the build's lock cpu)"), "{b}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_lock_is_held_only_while_its_step_runs() {
    let marks = Marks::new();
    let factory = |name: &str| {
        format!(
            "[{name}]\ntype = shell\nstep.pre = echo pre\nstep.work = {}\nstep.work.locks = db\n\
             step.post = {}\n\n",
            marks.step("work", "db"),
            marks.step("post", "%(buildername)s-post"),
        )
    };
    let factories = format!("[lock:db]\n\n{}{}", factory("x"), factory("y"));
    let m = EngineMaster::start(&one_slave_ini(&factories, 2), Duration::from_secs(30)).await;
    let _slave = m.slave().await;

    let rx = m.force("x-s1", force("x")).await;
    let ry = m.force("y-s1", force("y")).await;
    wait_until("x or y holds lock db", || async {
        marks.entered("x-s1-1-work") || marks.entered("y-s1-1-work")
    })
    .await;
    let (first, second) = if marks.entered("x-s1-1-work") {
        ("x-s1", "y-s1")
    } else {
        ("y-s1", "x-s1")
    };
    // The other Build ran its unlocked first step and waits at the locked one.
    wait_description(&m, second, 1, "work", "waiting for lock db").await;
    let (_, _, pre) = step_state(&m, second, 1, "pre").await.unwrap();
    assert_eq!(pre.as_deref(), Some("success"));

    // The lock goes when the step ends, not when the Build does: the first
    // Build is still in its `post` step when the second gets the lock.
    marks.release(&format!("{first}-1-work"));
    marks.wait_entered(&format!("{first}-1-post")).await;
    marks.wait_entered(&format!("{second}-1-work")).await;
    let (_, _, post) = step_state(&m, first, 1, "post").await.unwrap();
    assert_eq!(post, None, "the first build's post step still runs");

    marks.release(&format!("{second}-1-work"));
    marks.release(&format!("{first}-1-post"));
    marks.release(&format!("{second}-1-post"));
    assert_success(&m, rx).await;
    assert_success(&m, ry).await;
    let (_, text, _) = step_state(&m, second, 1, "work").await.unwrap();
    assert!(
        text.starts_with("work (waited ") && text.ends_with(" s for lock db)"),
        "{text}"
    );
    let log = m.log_text(second, 1, "work").await;
    assert!(
        log.lines()
            .any(|l| l.starts_with("waited ") && l.ends_with(" s for lock db")),
        "{log}"
    );
}

fn all_or_nothing_factories(marks: &Marks) -> String {
    format!(
        "[lock:A]\n\n[lock:B]\n\n\
         [holdb]\ntype = shell\nlocks = B\nstep.work = {}\n\n\
         [needab]\ntype = shell\nlocks = A B\nstep.work = {}\n\n\
         [needa]\ntype = shell\nlocks = A\nstep.work = {}\n",
        marks.step("work", "B"),
        marks.step("work", "A"),
        marks.step("work", "A"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_or_nothing_and_stopping_a_waiting_build() {
    let marks = Marks::new();
    let m = EngineMaster::start(
        &one_slave_ini(&all_or_nothing_factories(&marks), 4),
        Duration::from_secs(30),
    )
    .await;
    let _slave = m.slave().await;

    let rhold = m.force("holdb-s1", force("hold B")).await;
    marks.wait_entered("holdb-s1-1-work").await;
    let _rab = m.force("needab-s1", force("needs A and B")).await;
    wait_description(&m, "needab-s1", 1, "work", "waiting for lock B").await;

    // needab waits for B without holding A: a Build that needs only A runs now.
    let ra = m.force("needa-s1", force("needs A")).await;
    marks.wait_entered("needa-s1-1-work").await;
    marks.release("needa-s1-1-work");
    assert_success(&m, ra).await;

    // Stopping the waiting Build ends it at once, holding nothing.
    let t = Instant::now();
    m.engine()
        .stop_build("needab-s1", 1, "tester", "not needed")
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let b = m.build("needab-s1", 1).await;
    assert_eq!(
        b.build.result.as_deref(),
        Some("cancelled"),
        "{:?}",
        b.build
    );
    assert_eq!(b.build.text, "stopped by tester: not needed");
    assert_eq!(b.steps.len(), 1);
    assert_eq!(b.steps[0].result.as_deref(), Some("exception"));
    assert_eq!(
        b.steps[0].text,
        "interrupted while waiting for the build's lock B"
    );
    assert!(!marks.entered("needab-s1-1-work"));
    let log = m.log_text("needab-s1", 1, "work").await;
    assert!(
        log.contains("stopped by tester: not needed while waiting for the build's lock B"),
        "{log}"
    );
    // A is free (the stopped Build took nothing with it).
    let ra = m.force("needa-s1", force("needs A again")).await;
    marks.wait_entered("needa-s1-2-work").await;
    marks.release("needa-s1-2-work");
    assert_success(&m, ra).await;

    // Once B is free a new needab Build takes both.
    let rab = m.force("needab-s1", force("needs A and B again")).await;
    wait_description(&m, "needab-s1", 2, "work", "waiting for lock B").await;
    marks.release("holdb-s1-1-work");
    assert_success(&m, rhold).await;
    marks.wait_entered("needab-s1-2-work").await;
    marks.release("needab-s1-2-work");
    assert_success(&m, rab).await;
    let (_, text, _) = step_state(&m, "needab-s1", 2, "work").await.unwrap();
    assert!(text.ends_with(" s for the build's lock B)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_shutdown_ends_a_build_waiting_for_a_lock() {
    let marks = Marks::new();
    let m = EngineMaster::start(
        &one_slave_ini(&all_or_nothing_factories(&marks), 4),
        Duration::from_secs(30),
    )
    .await;
    let slave = m.slave().await;
    m.force("holdb-s1", force("hold B")).await;
    marks.wait_entered("holdb-s1-1-work").await;
    let rab = m.force("needab-s1", force("waits")).await;
    wait_description(&m, "needab-s1", 1, "work", "waiting for lock B").await;

    let EngineMaster { dir, master } = m;
    let db_path = dir.path().join(autobot::db::DB_FILE);
    let t = Instant::now();
    master.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    drop(slave);

    let db = support::master_db(&db_path);
    let b = db.build("needab-s1", 1).await.unwrap().unwrap();
    assert_eq!(b.build.result.as_deref(), Some("exception"));
    assert_eq!(b.build.text, autobot::engine::SHUTDOWN_TEXT);
    assert_eq!(
        b.steps[0].text,
        "interrupted while waiting for the build's lock B"
    );
    // Its request runs again after a restart.
    let r = db.buildrequest(rab).await.unwrap().unwrap();
    assert!(!r.complete, "{r:?}");
    assert!(!marks.entered("needab-s1-1-work"));
}

/// The lock is held on another slave, so only noticing the loss can end the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_loss_ends_a_build_waiting_for_a_lock() {
    let marks = Marks::new();
    let ini = format!(
        "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = {PASSWORD}\nfactories = *\n\n\
         [slave:s1]\n\n[slave:s2]\n\n{}",
        all_or_nothing_factories(&marks)
    );
    let m = EngineMaster::start(&ini, Duration::from_secs(30)).await;
    let _s1 = m.slave().await;
    let _s2 = support::Impl::Autobot
        .start(
            &m.dir.path().join("slave2"),
            m.master.slaveport(),
            "s2",
            PASSWORD,
        )
        .await
        .unwrap();
    m.master
        .registry()
        .wait_connected("s2", DEADLINE)
        .await
        .expect("s2 connects");
    let rhold = m.force("holdb-s2", force("hold B")).await;
    marks.wait_entered("holdb-s2-1-work").await;
    m.force("needab-s1", force("waits")).await;
    wait_description(&m, "needab-s1", 1, "work", "waiting for lock B").await;

    m.master.registry().disconnect("s1", "cut by the test");
    wait_until("needab build 1 ends", || async {
        m.master
            .db()
            .build("needab-s1", 1)
            .await
            .unwrap()
            .is_some_and(|b| b.build.result.is_some())
    })
    .await;
    let b = m.build("needab-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("exception"));
    assert!(b.build.text.starts_with("slave lost: "), "{}", b.build.text);
    assert_eq!(
        b.steps[0].text,
        "slave lost while waiting for the build's lock B"
    );
    // The Build on the other slave holds B throughout and ends normally.
    assert!(m.build("holdb-s2", 1).await.build.result.is_none());
    marks.release("holdb-s2-1-work");
    assert_success(&m, rhold).await;
}
