//! The JSON API of the build engine over real HTTP on 127.0.0.1: builders and
//! their state, force (and its refusals), BuildRequests, builds newest first, one
//! build in full, a step's log streamed raw, stop on a running build, Changes.
//! Also `autobot force --wait` (the real binary) against a master and slave
//! started with `autobot start`, green and red.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::process::Command;
use std::time::Duration;

use autobot::db::changes::NewChange;
use engine_common::*;
use serde_json::{json, Value};

const FACTORIES: &str = r#"
[quick]
type = shell
step.hello = sh -c "echo hello from %(buildername)s; echo to-stderr >&2"
step.second = true

[slow]
type = shell
step.sleep = sleep 600

[big]
type = shell
step.seq = seq 1 200000
"#;

/// One request to the master's web port; (status, body).
async fn call(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Vec<u8>) {
    let (method, path) = (method.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || {
        let r =
            autobot::cli::http::request("127.0.0.1", port, &method, &path, body.as_ref()).unwrap();
        (r.status, r.body)
    })
    .await
    .unwrap()
}

async fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = call(port, "GET", path, None).await;
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, v)
}

async fn post_json(port: u16, path: &str, body: Value) -> (u16, Value) {
    let (status, body) = call(port, "POST", path, Some(body)).await;
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("POST {path}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, v)
}

async fn wait_request_done(port: u16, id: i64) -> Value {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (status, r) = get_json(port, &format!("/api/v1/buildrequests/{id}")).await;
        assert_eq!(status, 200, "{r}");
        if r["complete"] == true {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "request {id}: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_forces_follows_and_reads_builds() {
    let m = EngineMaster::start(&master_ini(FACTORIES, ""), Duration::from_secs(30)).await;
    let port = m.master.htmlport();
    let builder = format!("quick-{SLAVE}");

    // Builders before the slave connects: offline, with their steps.
    let (status, list) = get_json(port, "/api/v1/builders").await;
    assert_eq!(status, 200);
    let quick = list
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == builder.as_str())
        .unwrap_or_else(|| panic!("{list}"))
        .clone();
    assert_eq!(quick["state"], "offline");
    assert_eq!(quick["factory"], "quick");
    assert_eq!(quick["slaves"], json!([SLAVE]));
    assert_eq!(quick["steps"], json!(["hello", "second"]));
    assert_eq!(quick["last_build"], Value::Null);

    let _slave = m.slave().await;
    let (_, b) = get_json(port, &format!("/api/v1/builders/{builder}")).await;
    assert_eq!(b["state"], "idle");

    // Force: 202 with the ids; the request completes green.
    let (status, forced) = post_json(
        port,
        &format!("/api/v1/builders/{builder}/force"),
        json!({"reason": "api test", "who": "Ann <ann@example.org>"}),
    )
    .await;
    assert_eq!(status, 202, "{forced}");
    let id = forced["request_id"].as_i64().unwrap();
    let req = wait_request_done(port, id).await;
    assert_eq!(req["result"], "success", "{req}");
    assert_eq!(req["builds"], json!([1]));
    let (status, bs) = get_json(
        port,
        &format!("/api/v1/buildsets/{}", forced["buildset_id"]),
    )
    .await;
    assert_eq!(status, 200, "{bs}");
    assert_eq!(bs["complete"], true);
    assert_eq!(bs["result"], "success");
    assert_eq!(bs["requests"], json!([id]));

    let (status, builds) = get_json(port, &format!("/api/v1/builders/{builder}/builds")).await;
    assert_eq!(status, 200);
    assert_eq!(builds[0]["number"], 1);
    assert_eq!(builds[0]["result"], "success");

    let (status, build) = get_json(port, &format!("/api/v1/builders/{builder}/builds/1")).await;
    assert_eq!(status, 200);
    assert_eq!(build["result"], "success");
    assert_eq!(build["reason"], "forced by Ann <ann@example.org>: api test");
    assert_eq!(build["properties"]["buildername"][0], builder.as_str());
    assert_eq!(build["properties"]["buildnumber"][0], "1");
    assert_eq!(build["properties"]["slavename"][0], SLAVE);
    let steps = build["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["name"], "hello");
    assert_eq!(steps[0]["result"], "success");
    assert!(steps[0]["started_at"].as_f64().unwrap() <= steps[0]["finished_at"].as_f64().unwrap());
    assert_eq!(steps[0]["logs"][0]["name"], "stdio");
    assert!(build["finished_at"].as_f64().is_some());

    // The log, raw, by step name and by number.
    let (status, log) = call(
        port,
        "GET",
        &format!("/api/v1/builders/{builder}/builds/1/steps/hello/logs/stdio"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains(&format!("hello from {builder}\n")), "{log}");
    assert!(log.contains("to-stderr"), "{log}");
    let (status, by_number) = call(
        port,
        "GET",
        &format!("/api/v1/builders/{builder}/builds/1/steps/1/logs/stdio"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&by_number), log);

    // Builder activity after the build.
    let (_, b) = get_json(port, &format!("/api/v1/builders/{builder}")).await;
    assert_eq!(b["last_build"]["number"], 1);
    assert_eq!(b["last_build"]["result"], "success");
    assert_eq!(b["pending"], 0);

    // Paging: newest first, limit and before.
    for n in 2..=3 {
        let (_, f) = post_json(
            port,
            &format!("/api/v1/builders/{builder}/force"),
            json!({"reason": format!("n{n}")}),
        )
        .await;
        wait_request_done(port, f["request_id"].as_i64().unwrap()).await;
    }
    let (_, page) = get_json(port, &format!("/api/v1/builders/{builder}/builds?limit=2")).await;
    let numbers: Vec<i64> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![3, 2]);
    let (_, page) = get_json(
        port,
        &format!("/api/v1/builders/{builder}/builds?limit=2&before=2"),
    )
    .await;
    assert_eq!(page[0]["number"], 1);
    assert_eq!(page.as_array().unwrap().len(), 1);

    // Errors: unknown builder, build, log; bad limit; bad body.
    let (status, e) = post_json(port, "/api/v1/builders/nope/force", json!({})).await;
    assert_eq!(status, 404);
    assert!(e["error"].as_str().unwrap().contains(&builder), "{e}");
    let (status, _) = get_json(port, "/api/v1/builders/nope/builds").await;
    assert_eq!(status, 404);
    let (status, _) = get_json(port, &format!("/api/v1/builders/{builder}/builds/99")).await;
    assert_eq!(status, 404);
    let (status, _) = get_json(
        port,
        &format!("/api/v1/builders/{builder}/builds/1/steps/hello/logs/nolog"),
    )
    .await;
    assert_eq!(status, 404);
    let (status, e) = get_json(port, &format!("/api/v1/builders/{builder}/builds?limit=0")).await;
    assert_eq!(status, 400, "{e}");
    let (status, _) = get_json(port, "/api/v1/buildrequests/12345").await;
    assert_eq!(status, 404);
    let (status, body) = call(
        port,
        "POST",
        &format!("/api/v1/builders/{builder}/force"),
        Some(json!(["not", "an", "object"])),
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, e) = post_json(
        port,
        &format!("/api/v1/builders/{builder}/force"),
        json!({"branch": "--upload-pack=evil"}),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    let (status, _) = get_json(port, "/api/v1/nothing-here").await;
    assert_eq!(status, 404);
    // Stopping a finished build is a conflict, not a success.
    let (status, _) = post_json(
        port,
        &format!("/api/v1/builders/{builder}/builds/1/stop"),
        json!({}),
    )
    .await;
    assert_eq!(status, 409);

    // Changes, newest first.
    m.master
        .changes()
        .add(vec![
            NewChange {
                who: "Ann".into(),
                comments: "<script>first</script>".into(),
                files: vec!["a.c".into()],
                when: 1,
                ..Default::default()
            },
            NewChange {
                who: "Bob".into(),
                when: 2,
                ..Default::default()
            },
        ])
        .await
        .unwrap();
    let (status, changes) = get_json(port, "/api/v1/changes").await;
    assert_eq!(status, 200);
    assert_eq!(changes[0]["who"], "Bob");
    assert_eq!(changes[1]["comments"], "<script>first</script>");
    assert_eq!(changes[1]["files"], json!(["a.c"]));
    let (_, one) = get_json(port, &format!("/api/v1/changes/{}", changes[1]["id"])).await;
    assert_eq!(one["who"], "Ann");
    let (_, limited) = get_json(port, "/api/v1/changes?limit=1").await;
    assert_eq!(limited.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_through_the_api_ends_a_running_build() {
    let m = EngineMaster::start(&master_ini(FACTORIES, ""), Duration::from_secs(30)).await;
    let port = m.master.htmlport();
    let builder = format!("slow-{SLAVE}");
    let _slave = m.slave().await;
    let (status, forced) = post_json(
        port,
        &format!("/api/v1/builders/{builder}/force"),
        json!({"reason": "to be stopped"}),
    )
    .await;
    assert_eq!(status, 202);
    let id = forced["request_id"].as_i64().unwrap();
    // Running: the builder says so and the build's result is null.
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (_, b) = get_json(port, &format!("/api/v1/builders/{builder}")).await;
        if b["state"] == "building" {
            let (_, build) = get_json(port, &format!("/api/v1/builders/{builder}/builds/1")).await;
            assert_eq!(build["result"], Value::Null);
            if build["steps"][0]["started_at"].is_f64() {
                assert_eq!(build["steps"][0]["result"], Value::Null);
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "never building: {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = std::time::Instant::now();
    let (status, stopped) = post_json(
        port,
        &format!("/api/v1/builders/{builder}/builds/1/stop"),
        json!({"who": "Bob", "reason": "enough"}),
    )
    .await;
    assert_eq!(status, 200, "{stopped}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(stopped["result"], "cancelled", "{stopped}");
    assert_eq!(stopped["text"], "stopped by Bob: enough");
    let req = wait_request_done(port, id).await;
    assert_eq!(req["result"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_force_false_refuses_force_and_stop() {
    let ini = master_ini(FACTORIES, "allowForce = false\n");
    let m = EngineMaster::start(&ini, Duration::from_secs(30)).await;
    let port = m.master.htmlport();
    let builder = format!("quick-{SLAVE}");
    let (status, e) = post_json(
        port,
        &format!("/api/v1/builders/{builder}/force"),
        json!({"reason": "no"}),
    )
    .await;
    assert_eq!(status, 403);
    assert!(e["error"].as_str().unwrap().contains("allowForce"), "{e}");
    let (status, _) = post_json(
        port,
        &format!("/api/v1/builders/{builder}/builds/1/stop"),
        json!({}),
    )
    .await;
    assert_eq!(status, 403);
    // Nothing was queued.
    let (_, b) = get_json(port, &format!("/api/v1/builders/{builder}")).await;
    assert_eq!(b["pending"], 0);
    assert!(m
        .master
        .db()
        .pending_requests(&builder)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_log_streams_whole() {
    let m = EngineMaster::start(&master_ini(FACTORIES, ""), Duration::from_secs(30)).await;
    let port = m.master.htmlport();
    let builder = format!("big-{SLAVE}");
    let _slave = m.slave().await;
    let (_, forced) = post_json(
        port,
        &format!("/api/v1/builders/{builder}/force"),
        json!({}),
    )
    .await;
    let req = wait_request_done(port, forced["request_id"].as_i64().unwrap()).await;
    assert_eq!(req["result"], "success");
    let (status, log) = call(
        port,
        "GET",
        &format!("/api/v1/builders/{builder}/builds/1/steps/seq/logs/stdio"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let expected: String = (1..=200_000).map(|n| format!("{n}\n")).collect();
    let log = String::from_utf8(log).unwrap();
    assert!(log.contains(&expected), "log of {} bytes", log.len());
}

/// `autobot create` + `autobot start` + `autobot force --wait`: the README's
/// quick start, with a green build and then a red one (exit status non-zero).
#[test]
fn force_wait_with_the_real_binary_reports_the_result() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pair");
    let run = |args: &[&str]| Command::new(autobot_bin()).args(args).output().unwrap();
    let (sp, hp) = (free_port().to_string(), free_port().to_string());
    let d = dir.to_str().unwrap();
    let out = run(&[
        "create",
        d,
        "-f",
        "hello",
        "--slaveport",
        &sp,
        "--htmlport",
        &hp,
        "--master",
        "127.0.0.1",
    ]);
    assert!(out.status.success(), "{out:?}");
    // A second factory that fails, added to the same master.
    support::use_test_db(dir.join("master"));
    let ini_path = dir.join("master/master.ini");
    let ini = std::fs::read_to_string(&ini_path).unwrap();
    std::fs::write(
        &ini_path,
        format!("{ini}\n[broken]\ntype = shell\nstep.fails = false\n")
            .replace("factories = hello", "factories = hello broken"),
    )
    .unwrap();
    let out = run(&["checkconfig", dir.join("master").to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&["start", d]);
    assert!(out.status.success(), "{out:?}");
    let stop = scopeguard(d.to_string());

    let out = run(&["force", d, "hello-slave", "--wait", "--reason", "readme"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("success"), "{text}");
    for step in ["configure", "compile", "test"] {
        assert!(text.contains(step), "no {step} in: {text}");
    }

    let out = run(&["force", d, "broken-slave", "--wait"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("failure"), "{text}");

    let out = run(&["force", d, "no-such-builder"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hello-slave"),
        "{out:?}"
    );
    drop(stop);
}

/// Stops the pair when the test ends, pass or fail.
struct StopOnDrop(String);

fn scopeguard(dir: String) -> StopOnDrop {
    StopOnDrop(dir)
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(autobot_bin()).args(["stop", &self.0]).output();
    }
}

const TWO_SLOW: &str = r#"
[slowa]
type = shell
step.sleep = sleep 600

[slowb]
type = shell
step.sleep = sleep 600
"#;

async fn wait_building(port: u16, builder: &str) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (_, b) = get_json(port, &format!("/api/v1/builders/{builder}")).await;
        if b["state"] == "building" {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never building: {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(port: u16, builder: &str, number: i64) -> Value {
    let (status, b) = post_json(
        port,
        &format!("/api/v1/builders/{builder}/builds/{number}/stop"),
        json!({"who": "t", "reason": "done"}),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    b
}

/// `max_builds` is per slave, across its builders: with 2 both builders run at
/// once; with the default 1 the second starts only after the first ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_builds_limits_builds_per_slave() {
    let ini = master_ini(TWO_SLOW, "").replace(
        &format!("[slave:{SLAVE}]\n"),
        &format!("[slave:{SLAVE}]\nmax_builds = 2\n"),
    );
    let m = EngineMaster::start(&ini, Duration::from_secs(30)).await;
    let port = m.master.htmlport();
    let (a, b) = (format!("slowa-{SLAVE}"), format!("slowb-{SLAVE}"));
    let _slave = m.slave().await;
    for builder in [&a, &b] {
        post_json(
            port,
            &format!("/api/v1/builders/{builder}/force"),
            json!({}),
        )
        .await;
    }
    wait_building(port, &a).await;
    wait_building(port, &b).await;
    stop(port, &a, 1).await;
    stop(port, &b, 1).await;
    drop(m);

    let m = EngineMaster::start(&master_ini(TWO_SLOW, ""), Duration::from_secs(30)).await;
    let port = m.master.htmlport();
    let _slave = m.slave().await;
    post_json(port, &format!("/api/v1/builders/{a}/force"), json!({})).await;
    wait_building(port, &a).await;
    post_json(port, &format!("/api/v1/builders/{b}/force"), json!({})).await;
    let (_, pending) = get_json(port, &format!("/api/v1/builders/{b}")).await;
    assert_eq!(pending["pending"], 1, "{pending}");
    let stopped = stop(port, &a, 1).await;
    wait_building(port, &b).await;
    let (_, running) = get_json(port, &format!("/api/v1/builders/{b}/builds/1")).await;
    assert!(
        running["started_at"].as_f64().unwrap() >= stopped["finished_at"].as_f64().unwrap(),
        "{running} started before {stopped} ended"
    );
    stop(port, &b, 1).await;
}
