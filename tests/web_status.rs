//! The waterfall tells the truth about waiting and stopping (issue 23, "Right"):
//! a pending request's builder says why it waits (here: no slave connected), a
//! Change waiting out `treeStable` shows on its builders as "build in N s
//! (tree-stable)" and beside the builds as pending, and a build an operator
//! stopped ends `cancelled` (its own class, who stopped it and why) on the
//! waterfall, the build page and the JSON API. The row placement itself is
//! unit-tested in `src/web/pages/waterfall.rs`. A log page carries each line's
//! arrival time for the timestamps switch, and its search covers the whole log
//! (`…/logs/LOG/search`, HTML and JSON): matches on every page, plain and
//! compressed, bounded, escaped, served where the log page is.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "web_common/mod.rs"]
mod web_common;

use autobot::db::changes::NewChange;
use autobot::engine::ForceRequest;
use engine_common::*;
use web_common::get;

const FACTORIES: &str = r#"
[quick]
type = shell
step.hello = echo hello

[slow]
type = shell
step.wait = sleep 60

[paced]
type = shell
step.two = echo first-line; sleep 0.3; echo second-line

[searchable]
type = shell
step.many = awk 'BEGIN { for (i = 1; i <= 6500; i++) { if (i % 1000 == 0) print "Needle at row " i; else print "row " i } print "<script>alert(1)</script> nEEdle" }'
"#;

/// The `data-t` (ms after the step's start) of the log line whose text ends
/// with `text` and a newline.
fn line_time(page: &str, text: &str) -> i64 {
    let end = format!("{text}\n</span>");
    let line = page
        .split("<span class=\"l\" id=\"L")
        .find(|l| l.contains(&end))
        .unwrap_or_else(|| panic!("no line {text:?}: {page}"));
    let t = line
        .split_once("data-t=\"")
        .and_then(|(_, r)| r.split_once('"'))
        .unwrap_or_else(|| panic!("line {text:?} has no time: {line}"))
        .0;
    t.parse().unwrap()
}

/// A step printing two lines 0.3 s apart: the log page has the switch on offer
/// and each line's time after the step's start, the second later (by about the
/// pause: the times are when the master received each line's output).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_lines_carry_their_arrival_times() {
    let m = web_common::start(&master_ini(FACTORIES, "")).await;
    let _slave = m.slave().await;
    let port = m.master.htmlport();
    let req = m.force("paced-s1", ForceRequest::default()).await;
    m.wait_request(req).await;
    let page = get(port, "/builders/paced-s1/builds/1/steps/two/logs/stdio")
        .await
        .body;
    assert!(
        page.contains("<input id=\"log-times\" type=\"checkbox\">"),
        "{page}"
    );
    assert!(page.contains("received the piece of output"), "{page}");
    assert!(page.contains("data-t0=\""), "{page}");
    let (first, second) = (
        line_time(&page, "first-line"),
        line_time(&page, "second-line"),
    );
    assert!(
        first >= 0,
        "the first line before the step started: {first}"
    );
    // Apart by about the pause, less what a loaded machine delayed the first.
    assert!(
        second > first,
        "the lines 0.3 s apart are {} ms apart",
        second - first
    );
    assert!(second < 60_000, "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_tree_stable_and_cancelled_builds_show_on_the_waterfall() {
    let m = web_common::start(&master_ini(FACTORIES, "treeStable = 300")).await;
    let port = m.master.htmlport();

    // No slave yet: the forced request waits, and its builder's head says why.
    let req = m.force("quick-s1", ForceRequest::default()).await;
    wait_until("the waterfall to say why quick-s1 waits", || async {
        get(port, "/waterfall")
            .await
            .body
            .contains("waiting: no slave of this builder is connected")
    })
    .await;

    // A Change waits out treeStable: its builders count down, it is pending.
    let change = m
        .master
        .changes()
        .add(vec![NewChange {
            who: "Ann <ann@example.org>".into(),
            comments: "make it faster\nbody".into(),
            when: autobot::db::now(),
            ..Default::default()
        }])
        .await
        .unwrap()[0]
        .id;
    wait_until("the tree-stable timer", || async {
        !m.master.db().scheduler_timers().await.unwrap().is_empty()
    })
    .await;
    let w = get(port, "/waterfall").await.body;
    assert!(w.contains(" s (tree-stable)"), "{w}");
    assert!(w.contains("build in <span class=\"secs\">"), "{w}");
    assert!(
        w.contains(&format!(
            "class=\"change pending\" data-change=\"{change}\""
        )),
        "{w}"
    );
    assert!(
        w.contains("<tr class=\"pending\"><td class=\"time\">pending"),
        "{w}"
    );
    let b = get(port, "/builders/quick-s1").await.body;
    assert!(b.contains(" s (tree-stable)"), "{b}");

    // The slave comes; the forced build runs and is green.
    let _slave = m.slave().await;
    assert_eq!(m.wait_request(req).await.result.as_deref(), Some("success"));

    // A stopped build is cancelled, not failed: who and why are on every page.
    let req = m.force("slow-s1", ForceRequest::default()).await;
    wait_until("slow-s1 to run its step", || async {
        m.master
            .db()
            .build("slow-s1", 1)
            .await
            .unwrap()
            .is_some_and(|b| b.steps.first().is_some_and(|s| s.started_at.is_some()))
    })
    .await;
    m.engine()
        .stop_build("slow-s1", 1, "alice", "not needed")
        .await
        .unwrap();
    let r = m.wait_request(req).await;
    assert_eq!(r.result.as_deref(), Some("cancelled"));
    let api = get(port, "/api/v1/builders/slow-s1/builds/1").await.body;
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["result"], "cancelled", "{api}");
    assert_eq!(api["text"], "stopped by alice: not needed", "{api}");
    let page = get(port, "/builders/slow-s1/builds/1").await.body;
    assert!(
        page.contains("class=\"result cancelled\"")
            && page.contains("cancelled: stopped by alice: not needed"),
        "{page}"
    );
    let w = get(port, "/waterfall").await.body;
    assert!(
        w.contains("class=\"build cancelled\" data-builder=\"slow-s1\" data-number=\"1\""),
        "{w}"
    );
    assert!(w.contains("stopped by alice: not needed"), "{w}");
    // The badge says cancelled, not failing.
    let badge = get(port, "/badge/slow-s1.svg").await.body;
    assert!(badge.contains("cancelled"), "{badge}");
}

/// Build boxes and pages carry the source: the revision (short, linked through
/// `revlink`) on the waterfall and the build page, the build's BuildSet and
/// requests linked, test and warning counts on the build and builder pages; the
/// Rebuild form (CSRF like force/stop) builds the same revision again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn builds_show_their_source_counts_and_rebuild_the_same_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    support::git(&repo, &["init", "-q", "-b", "main"]);
    support::write_file(&repo, "a.txt", "a\n");
    support::git(&repo, &["add", "a.txt"]);
    support::git(&repo, &["commit", "-q", "-m", "first commit\n\nbody"]);
    let first = support::git(&repo, &["rev-parse", "HEAD"]);
    let factories = format!(
        r#"
[counted]
type = shell
git = {repo}#main
revlink = https://git.example.org/commit/%s
step.t = echo "==== 3 passed, 1 skipped in 0.10s ===="
step.t.logParser = test
step.w = echo "a.c:1:2: warning: unused variable x"
step.w.logParser = compile
"#,
        repo = repo.display()
    );
    let m = web_common::start(&master_ini(&factories, "treeStable = 0")).await;
    let _slave = m.slave().await;
    let port = m.master.htmlport();
    let req = m.force("counted-s1", ForceRequest::default()).await;
    m.wait_request(req).await;
    let short = &first[..12];

    let w = get(port, "/waterfall").await.body;
    assert!(
        w.contains(&format!(
            "<a class=\"rev\" href=\"https://git.example.org/commit/{first}\" title=\"{first}\"><code>{short}</code></a>"
        )),
        "{w}"
    );
    let b = get(port, "/builders/counted-s1/builds/1").await;
    let body = &b.body;
    assert!(
        body.contains(&format!("href=\"https://git.example.org/commit/{first}\"")),
        "{body}"
    );
    assert!(
        body.contains("<tr id=\"build-tests\"><th>tests</th><td>3 passed, 1 skipped</td></tr>"),
        "{body}"
    );
    assert!(
        body.contains("<tr id=\"build-warnings\"><th>warnings</th><td>1</td></tr>"),
        "{body}"
    );
    assert!(
        body.contains("id=\"buildset-link\" href=\"/api/v1/buildsets/1\""),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "class=\"request-link\" href=\"/api/v1/buildrequests/{req}\""
        )),
        "{body}"
    );
    let page = get(port, "/builders/counted-s1").await.body;
    assert!(
        page.contains("<td class=\"tests\">3 passed, 1 skipped</td><td class=\"warnings\">1</td>"),
        "{page}"
    );

    // A new commit; the rebuild still builds the first revision.
    support::write_file(&repo, "a.txt", "b\n");
    support::git(&repo, &["commit", "-q", "-am", "second"]);
    assert!(body.contains("id=\"rebuild-button\""), "{body}");
    let r = web_common::post_form(
        port,
        "/builders/counted-s1/builds/1/rebuild",
        None,
        &[],
        &[("reason", "flaky?")],
    )
    .await;
    assert_eq!(r.status, 403, "no token: {}", r.body);
    let cookie = web_common::csrf_cookie(&b);
    let token = web_common::csrf_field(body);
    let r = web_common::post_form(
        port,
        "/builders/counted-s1/builds/1/rebuild",
        Some(&cookie),
        &[],
        &[("reason", "flaky?"), ("csrf", &token), ("who", "Bo")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    wait_until("the rebuild", || async {
        m.master
            .db()
            .build("counted-s1", 2)
            .await
            .unwrap()
            .is_some_and(|d| d.build.result.is_some())
    })
    .await;
    let d = m.build("counted-s1", 2).await;
    assert_eq!(d.build.reason, "forced by Bo: rebuild of #1: flaky?");
    assert_eq!(d.revision.as_deref(), Some(first.as_str()));

    // A Change of the second commit builds; it sits in that build's row, and
    // its author's "my builds" lists the build.
    let second = support::git(&repo, &["rev-parse", "HEAD"]);
    let change = m
        .master
        .changes()
        .add(vec![NewChange {
            who: "Cy Coder <cy@example.org>".into(),
            comments: "second".into(),
            revision: Some(second.clone()),
            branch: Some("main".into()),
            repository: repo.display().to_string(),
            when: autobot::db::now(),
            ..Default::default()
        }])
        .await
        .unwrap()[0]
        .id;
    wait_until("the Change's build", || async {
        m.master
            .db()
            .build("counted-s1", 3)
            .await
            .unwrap()
            .is_some_and(|d| d.build.result.is_some())
    })
    .await;
    let w = get(port, "/waterfall").await.body;
    let row = w
        .split("<tr class=\"at\">")
        .find(|r| r.contains("data-builder=\"counted-s1\" data-number=\"3\""))
        .unwrap_or_else(|| panic!("no row of build 3: {w}"));
    assert!(
        row.contains(&format!("class=\"change\" data-change=\"{change}\"")),
        "{w}"
    );
    assert!(!w.contains("(pending)") && !w.contains("(no build)"), "{w}");
    // A Change on a branch nothing builds is not "pending": it says so.
    let stray = m
        .master
        .changes()
        .add(vec![NewChange {
            who: "Di <di@example.org>".into(),
            comments: "elsewhere".into(),
            branch: Some("elsewhere".into()),
            when: autobot::db::now(),
            ..Default::default()
        }])
        .await
        .unwrap()[0]
        .id;
    let w = get(port, "/waterfall").await.body;
    assert!(
        w.contains(&format!(
            "class=\"change unbuilt\" data-change=\"{stray}\"><a href=\"/changes/{stray}\">Di &lt;di@example.org&gt;</a> <small class=\"pending-word\">(no build)</small>"
        )),
        "{w}"
    );
    let my = get(port, "/my?author=cy%20coder").await.body;
    assert!(
        my.contains("href=\"/builders/counted-s1/builds/3\""),
        "{my}"
    );
    assert!(
        !my.contains("href=\"/builders/counted-s1/builds/1\""),
        "{my}"
    );

    // The console: a row per revision, newest first, a cell per builder.
    let c = get(port, "/console").await.body;
    let at_second = c
        .find(&format!("data-revision=\"{second}\""))
        .expect("second revision row");
    let at_first = c
        .find(&format!("data-revision=\"{first}\""))
        .expect("first revision row");
    assert!(at_second < at_first, "{c}");
    assert!(
        c.contains("title=\"#2 success\"><a href=\"/builders/counted-s1/builds/2\">"),
        "{c}"
    );
    assert!(c.contains("Cy Coder"), "{c}");
}

/// The lines of `text` (1-based) holding `what`, case-insensitively: what a
/// search must find.
fn lines_with(text: &str, what: &str) -> Vec<u64> {
    let what = what.to_lowercase();
    text.split('\n')
        .enumerate()
        .filter(|(_, l)| l.to_lowercase().contains(&what))
        .map(|(i, _)| i as u64 + 1)
        .collect()
}

fn json(r: &web_common::Resp) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

fn matched_lines(v: &serde_json::Value) -> Vec<u64> {
    v["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["line"].as_u64().unwrap())
        .collect()
}

/// Search covers the whole log: a 6,500-line log (four pages) is searched
/// through the page route family (HTML, the form without the page script) and
/// the JSON API: every matching line on every page, with its page, after a
/// line, at most 1,000 at a time with "more", a `<script>` line escaped, the
/// same from the log stored compressed, and the log page's own answers for an
/// unknown or deleted log, on the public port as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_covers_the_whole_log() {
    let m = web_common::start(&master_ini(FACTORIES, "")).await;
    let _slave = m.slave().await;
    let port = m.master.htmlport();
    let req = m.force("searchable-s1", ForceRequest::default()).await;
    assert_eq!(m.wait_request(req).await.result.as_deref(), Some("success"));
    let text = m.log_text("searchable-s1", 1, "many").await;
    let log = "/builders/searchable-s1/builds/1/steps/many/logs/stdio";
    let api = format!("/api/v1{log}/search");

    // The log page's form: the whole log, a plain GET form without the script.
    let page = get(port, log).await.body;
    assert!(
        page.contains(&format!("action=\"{log}/search\" method=\"get\""))
            && page.contains("name=\"q\"")
            && page.contains("placeholder=\"search this log\""),
        "{page}"
    );

    // Every line holding the text, on all four pages, each with its page.
    let want = lines_with(&text, "needle");
    assert!(want.len() >= 8, "{want:?}");
    let r = get(port, &format!("{api}?q=NEEDLE")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v = json(&r);
    assert_eq!(matched_lines(&v), want);
    assert_eq!(v["more"], false);
    assert_eq!(v["pages"], 4);
    for hit in v["matches"].as_array().unwrap() {
        let line = hit["line"].as_u64().unwrap();
        assert_eq!(
            hit["page"].as_u64().unwrap(),
            (line - 1) / 2000 + 1,
            "{hit}"
        );
    }
    let row3000 = lines_with(&text, "needle at row 3000")[0];
    let last = *want.last().unwrap();
    let hit = v["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["line"] == last)
        .unwrap();
    // The excerpt is the line's text, as JSON text (the page script sets it
    // as text, never as markup).
    assert_eq!(hit["text"], "<script>alert(1)</script> nEEdle");
    // After a line: only those after it.
    let v = json(&get(port, &format!("{api}?q=needle&after={row3000}")).await);
    let later: Vec<u64> = want.iter().copied().filter(|l| *l > row3000).collect();
    assert_eq!(matched_lines(&v), later);

    // The HTML list: each line linked on its page, the log's text escaped.
    let r = get(port, &format!("{log}/search?q=needle")).await;
    assert_eq!(r.status, 200);
    let html = r.body;
    for line in &want {
        let page = (line - 1) / 2000 + 1;
        assert!(
            html.contains(&format!("href=\"{log}?page={page}#L{line}\"")),
            "line {line}: {html}"
        );
    }
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; nEEdle"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(html.contains("value=\"needle\""), "{html}");

    // Bounded: 1,000 lines at a time, "more" and where to go on from.
    let rows = lines_with(&text, "row");
    assert!(rows.len() > 2000, "{}", rows.len());
    let v = json(&get(port, &format!("{api}?q=row")).await);
    assert_eq!(matched_lines(&v), rows[..1000]);
    assert_eq!(v["more"], true);
    let v = json(&get(port, &format!("{api}?q=row&after={}", rows[999])).await);
    assert_eq!(matched_lines(&v), rows[1000..2000]);
    let html = get(port, &format!("{log}/search?q=row")).await.body;
    assert_eq!(html.matches("<li>").count(), 1000);
    assert!(
        html.contains(&format!(
            "id=\"search-more\" rel=\"next\" href=\"{log}/search?q=row&amp;after={}\"",
            rows[999]
        )),
        "{html}"
    );
    assert!(html.len() < 500_000, "{}", html.len());
    // Nothing found, and questions that cannot be asked.
    let v = json(&get(port, &format!("{api}?q=no%20such%20text")).await);
    assert_eq!(
        (matched_lines(&v), &v["more"]),
        (vec![], &serde_json::json!(false))
    );
    let none = get(port, &format!("{log}/search?q=no%20such%20text"))
        .await
        .body;
    assert!(none.contains("No line of the log holds"), "{none}");
    let long = "x".repeat(1001);
    for path in [
        format!("{api}?q={long}"),
        format!("{log}/search?q={long}"),
        format!("{api}?q=row&after=abc"),
        format!("{api}?q="),
    ] {
        let r = get(port, &path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
    }
    assert!(get(port, &format!("{api}?q=row&after=abc"))
        .await
        .body
        .contains("after=\\\"abc\\\""));

    // Compressed (as logCompressionAfter leaves it): the same answers.
    let file = m
        .master
        .db()
        .log_file("searchable-s1", 1, "many", "stdio")
        .await
        .unwrap()
        .unwrap();
    autobot::logstore::compress_log(&file.path).unwrap();
    autobot::logstore::remove_plain(&file.path).unwrap();
    assert!(autobot::logstore::is_compressed(&file.path));
    let v = json(&get(port, &format!("{api}?q=needle")).await);
    assert_eq!(matched_lines(&v), want);
    let v = json(&get(port, &format!("{api}?q=needle&after={row3000}")).await);
    assert_eq!(matched_lines(&v), later);
    let html = get(port, &format!("{log}/search?q=script")).await.body;
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; nEEdle"),
        "{html}"
    );

    // Seen where the log page is: the public port too; an unknown log is 404
    // and a deleted one 410, as its page.
    let public = m.master.publichtmlport().unwrap();
    let v = json(&get(public, &format!("{api}?q=needle")).await);
    assert_eq!(matched_lines(&v), want);
    assert_eq!(
        get(public, &format!("{log}/search?q=needle")).await.status,
        200
    );
    let other = "/builders/searchable-s1/builds/1/steps/many/logs/nope";
    for path in [
        format!("{other}/search?q=x"),
        format!("/api/v1{other}/search?q=x"),
        other.to_string(),
    ] {
        assert_eq!(get(port, &path).await.status, 404, "{path}");
    }
    let kept = m.master.db().kept_logs_after((0, 0), 100).await.unwrap();
    let id = kept
        .iter()
        .find(|k| file.path.ends_with(&k.path))
        .unwrap_or_else(|| panic!("{:?} not in {kept:?}", file.path))
        .id;
    m.master.db().mark_logs_deleted(vec![id]).await.unwrap();
    for path in [
        log.to_string(),
        format!("{log}/search?q=x"),
        format!("{api}?q=x"),
    ] {
        assert_eq!(get(port, &path).await.status, 410, "{path}");
        assert_eq!(get(public, &path).await.status, 410, "{path}");
    }
}
