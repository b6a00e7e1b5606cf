//! The attacks of issue 18 on `htmlport`, replayed against a real master over real
//! HTTP on 127.0.0.1: every route that changes state (the JSON API's force and
//! stop, `POST /api/v1/changes`, the HTML force and stop forms, the webhooks) with
//! no, wrong and right credentials, from another origin, and with a body that is
//! not declared JSON (the `text/plain` POST a page of another site can send
//! without a CORS preflight); the CSRF cookie's `__Host-` prefix, its fallback on
//! a plain-HTTP name and the token's binding to the user; the security headers on
//! JSON, server-sent events, 304s and errors; and `autobot force`/`stop-build`
//! (the real binary) logging in from flags, `.autobot/options` and
//! `MASTERDIR/.credentials`, each with its precedence and its refusals.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "web_common/mod.rs"]
mod web_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use autobot::app::{Master, MasterOptions};
use engine_common::*;
use serde_json::{json, Value};
use web_common::{basic, csrf_cookie, csrf_field, get, head_only, http, http_host, post_form};

const FACTORIES: &str = r#"
[quick]
type = shell
step.hello = true

[slow]
type = shell
step.sleep = sleep 600
"#;

const USERS: &str = "\n[users]\nalice = s3cret\nbob = hunter2\n";
const JSON: (&str, &str) = ("Content-Type", "application/json");

fn body(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Requests (pending or done) the master has for `builder`.
async fn requests_for(m: &EngineMaster, builder: &str) -> i64 {
    let b = builder.to_string();
    m.master
        .db()
        .read_sql(move |c| {
            c.query_one(
                "SELECT count(*) FROM buildrequests WHERE builder = ?1",
                &[b.into()],
            )?
            .i64(0)
        })
        .await
        .unwrap()
}

async fn changes_stored(m: &EngineMaster) -> i64 {
    m.master
        .db()
        .read_sql(|c| c.query_one("SELECT count(*) FROM changes", &[])?.i64(0))
        .await
        .unwrap()
}

async fn wait_running(m: &EngineMaster, builder: &str) {
    let b = builder.to_string();
    wait_until("the build runs", || {
        let b = b.clone();
        async move { m.engine().running().iter().any(|(x, _)| *x == b) }
    })
    .await;
}

/// The refusals every state-changing API request gets, whoever it logs in as:
/// another origin, another site, a body not declared JSON. None may queue,
/// stop or store anything (the caller checks).
async fn refused_from_other_sites(port: u16, path: &str, auth: &str, payload: &[u8]) {
    let me = format!("http://127.0.0.1:{port}");
    let other_port = format!("http://127.0.0.1:{}", port.wrapping_add(1));
    for (origin, why) in [
        ("http://evil.example", "another host"),
        ("null", "an opaque origin"),
        (other_port.as_str(), "another port"),
        (&me.replace("http:", "https:"), "another scheme"),
    ] {
        let r = http(
            port,
            "POST",
            path,
            &[JSON, ("Authorization", auth), ("Origin", origin)],
            payload,
        )
        .await;
        assert_eq!(r.status, 403, "{path} from {why}: {}", r.body);
        assert!(r.body.contains("another origin"), "{}", r.body);
    }
    for site in ["cross-site", "same-site"] {
        let r = http(
            port,
            "POST",
            path,
            &[JSON, ("Authorization", auth), ("Sec-Fetch-Site", site)],
            payload,
        )
        .await;
        assert_eq!(
            r.status, 403,
            "{path} with Sec-Fetch-Site {site}: {}",
            r.body
        );
    }
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json; charset=latin1"),
        Some("application/jsonx"),
        None,
    ] {
        let mut h = vec![("Authorization", auth)];
        if let Some(ct) = ct {
            h.push(("Content-Type", ct));
        }
        let r = http(port, "POST", path, &h, payload).await;
        assert_eq!(r.status, 415, "{path} as {ct:?}: {}", r.body);
        assert!(r.body.contains("application/json"), "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_state_changing_route_obeys_users_and_refuses_other_sites() {
    let ini = master_ini(
        &format!("{FACTORIES}{USERS}"),
        "changeuser = ci\nchangepassword = pa55\n",
    );
    let m = web_common::start(&ini).await;
    let _slave = m.slave().await;
    let port = m.master.htmlport();
    let me = format!("http://127.0.0.1:{port}");
    let good = basic("alice", "s3cret");
    let wrong = [
        None,
        Some(basic("alice", "wrong")),
        Some(basic("mallory", "s3cret")),
        Some(basic("ci", "pa55")),
        Some("Basic !!!".to_string()),
    ];

    // POST /api/v1/builders/NAME/force.
    let force = "/api/v1/builders/slow-s1/force";
    let payload = body(json!({"reason": "attack", "who": "mallory"}));
    for auth in &wrong {
        let mut h = vec![JSON];
        if let Some(a) = auth {
            h.push(("Authorization", a));
        }
        let r = http(port, "POST", force, &h, &payload).await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.body);
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    }
    refused_from_other_sites(port, force, &good, &payload).await;
    assert_eq!(requests_for(&m, "slow-s1").await, 0, "nothing was queued");
    // Right: from no page, and from this master's own page.
    let r = http(
        port,
        "POST",
        force,
        &[
            ("Content-Type", "application/json; charset=utf-8"),
            ("Authorization", &good),
            ("Origin", &me),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        &payload,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let forced: Value = serde_json::from_str(&r.body).unwrap();
    let req = m
        .master
        .db()
        .buildrequest(forced["request_id"].as_i64().unwrap())
        .await
        .unwrap()
        .unwrap();
    // The user logged in is who forced, whatever the body says.
    assert_eq!(req.reason, "forced by alice: attack");
    // An empty body is no JSON object.
    let r = http(port, "POST", force, &[JSON, ("Authorization", &good)], b"").await;
    assert_eq!(r.status, 400, "{}", r.body);
    wait_running(&m, "slow-s1").await;

    // POST …/builds/N/stop.
    let stop = "/api/v1/builders/slow-s1/builds/1/stop";
    let payload = body(json!({"reason": "enough", "who": "mallory"}));
    for auth in &wrong {
        let mut h = vec![JSON];
        if let Some(a) = auth {
            h.push(("Authorization", a));
        }
        let r = http(port, "POST", stop, &h, &payload).await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.body);
    }
    refused_from_other_sites(port, stop, &good, &payload).await;
    assert!(
        m.engine().running().iter().any(|(b, _)| b == "slow-s1"),
        "still running"
    );
    let bobs = basic("bob", "hunter2");
    let r = http(
        port,
        "POST",
        stop,
        &[JSON, ("Authorization", &bobs), ("Origin", &me)],
        &payload,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let stopped: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(stopped["text"], "stopped by bob: enough", "{stopped}");

    // POST /api/v1/changes takes the change credentials, not [users].
    let changes = "/api/v1/changes";
    let ci = basic("ci", "pa55");
    let payload = body(json!({"who": "Ann", "files": ["a.c"], "comments": "c"}));
    for auth in [None, Some(good.clone()), Some(basic("ci", "nope"))] {
        let mut h = vec![JSON];
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        let r = http(port, "POST", changes, &h, &payload).await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.body);
    }
    refused_from_other_sites(port, changes, &ci, &payload).await;
    assert_eq!(changes_stored(&m).await, 0);
    let r = http(
        port,
        "POST",
        changes,
        &[JSON, ("Authorization", &ci), ("Origin", &me)],
        &payload,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(changes_stored(&m).await, 1);

    // The HTML forms: a right cookie, token and login from another origin or
    // site are refused; from this master's page they work.
    let page = http(
        port,
        "GET",
        "/builders/quick-s1",
        &[("Authorization", &good)],
        b"",
    )
    .await;
    let (cookie, token) = (csrf_cookie(&page), csrf_field(&page.body));
    let fields = [("reason", "form"), ("csrf", token.as_str())];
    for (k, v) in [
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let r = post_form(
            port,
            "/builders/quick-s1/force",
            Some(&cookie),
            &[("Authorization", &good), (k, v)],
            &fields,
        )
        .await;
        assert_eq!(r.status, 403, "{k}: {v}: {}", r.body);
    }
    assert_eq!(requests_for(&m, "quick-s1").await, 0);
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[
            ("Authorization", &good),
            ("Origin", &me),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        &fields,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(requests_for(&m, "quick-s1").await, 1);

    // The stop form likewise, on a second slow build.
    let r = http(
        port,
        "POST",
        force,
        &[JSON, ("Authorization", &good)],
        &body(json!({})),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    wait_until("slow build 2 runs", || async {
        m.engine()
            .running()
            .iter()
            .any(|(b, n)| b == "slow-s1" && *n == 2)
    })
    .await;
    let page = http(
        port,
        "GET",
        "/builders/slow-s1/builds/2",
        &[("Authorization", &good), ("Cookie", &cookie)],
        b"",
    )
    .await;
    let token = csrf_field(&page.body);
    let fields = [("reason", "form stop"), ("csrf", token.as_str())];
    let r = post_form(
        port,
        "/builders/slow-s1/builds/2/stop",
        Some(&cookie),
        &[("Authorization", &good), ("Origin", "http://evil.example")],
        &fields,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post_form(
        port,
        "/builders/slow-s1/builds/2/stop",
        Some(&cookie),
        &[],
        &fields,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(m
        .engine()
        .running()
        .iter()
        .any(|(b, n)| b == "slow-s1" && *n == 2));
    let r = post_form(
        port,
        "/builders/slow-s1/builds/2/stop",
        Some(&cookie),
        &[("Authorization", &good), ("Origin", &me)],
        &fields,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(m.build("slow-s1", 2).await.build.text.contains("form stop"));

    // A webhook posted from a browser page of another site is refused before its
    // signature is even looked at.
    let r = http(
        port,
        "POST",
        "/change_hook/github",
        &[JSON, ("Origin", "http://evil.example")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(changes_stored(&m).await, 1);
    assert!(support::log_has(&["refused", "another origin"]));
}

/// The attack as it was found: no `[users]`, and a page of another site posting
/// `text/plain` (no preflight) to force a build.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_users_other_sites_still_cannot_force_or_stop() {
    let m = web_common::start(&master_ini(FACTORIES, "")).await;
    let port = m.master.htmlport();
    let force = "/api/v1/builders/quick-s1/force";
    let payload = br#"{"reason":"csrf"}"#;
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = http(
            port,
            "POST",
            force,
            &[("Content-Type", ct), ("Origin", "http://evil.example")],
            payload,
        )
        .await;
        assert_ne!(r.status / 100, 2, "{ct}: {}", r.body);
        let r = http(port, "POST", force, &[("Content-Type", ct)], payload).await;
        assert_eq!(r.status, 415, "{ct}: {}", r.body);
    }
    let r = http(
        port,
        "POST",
        force,
        &[JSON, ("Origin", "http://evil.example")],
        payload,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http(
        port,
        "POST",
        "/api/v1/builders/quick-s1/builds/1/stop",
        &[("Content-Type", "text/plain")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(requests_for(&m, "quick-s1").await, 0);
    // Anyone may force without [users], with JSON and from no other site.
    let r = http(port, "POST", force, &[JSON], payload).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(requests_for(&m, "quick-s1").await, 1);
}

fn assert_secure_headers(what: &str, r: &web_common::Resp) {
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP in {:?}", r.headers));
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(r.header("referrer-policy"), Some("same-origin"), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_response_carries_the_security_headers() {
    let ini = master_ini(&format!("{FACTORIES}{USERS}"), "");
    let m = web_common::start(&ini).await;
    let _slave = m.slave().await;
    let port = m.master.htmlport();
    let public = m.master.publichtmlport().unwrap();
    let id = m
        .force(
            "quick-s1",
            autobot::engine::ForceRequest {
                reason: "headers".into(),
                ..Default::default()
            },
        )
        .await;
    m.wait_request(id).await;
    wait_until("nothing runs", || async { m.engine().running().is_empty() }).await;

    let page = get(port, "/waterfall").await;
    let tag = page.header("etag").expect("an ETag").to_string();
    let not_modified = http(port, "GET", "/waterfall", &[("If-None-Match", &tag)], b"").await;
    assert_eq!(not_modified.status, 304);
    // The builder page carries no token for nobody logged in, but depends on the
    // login: private, and its 304 says so too.
    let builder = get(port, "/builders/quick-s1").await;
    let btag = builder.header("etag").expect("an ETag").to_string();
    let b304 = http(
        port,
        "GET",
        "/builders/quick-s1",
        &[("If-None-Match", &btag)],
        b"",
    )
    .await;
    assert_eq!(b304.status, 304);
    for r in [&builder, &b304] {
        assert!(r.header("cache-control").unwrap().contains("private"));
        assert_eq!(r.header("vary"), Some("Cookie, Authorization"));
    }
    let checks: Vec<(&str, web_common::Resp)> = vec![
        ("a page", page),
        ("a 304", not_modified),
        ("a builder 304", b304),
        ("JSON", get(port, "/api/v1/builders").await),
        ("a JSON list", get(port, "/api/v1/changes").await),
        ("a JSON 404", get(port, "/api/v1/nothing").await),
        ("an HTML 404", get(port, "/nothing").await),
        (
            "a raw log",
            get(
                port,
                "/api/v1/builders/quick-s1/builds/1/steps/hello/logs/stdio",
            )
            .await,
        ),
        (
            "a plain-text log",
            get(
                port,
                "/builders/quick-s1/builds/1/steps/hello/logs/stdio/text",
            )
            .await,
        ),
        ("a badge", get(port, "/badge/quick-s1.svg").await),
        ("the stylesheet", get(port, "/static/autobot.css").await),
        ("the login 401", get(port, "/login").await),
        (
            "a 401",
            http(
                port,
                "POST",
                "/api/v1/builders/quick-s1/force",
                &[JSON],
                b"{}",
            )
            .await,
        ),
        (
            "a 415",
            http(port, "POST", "/api/v1/builders/quick-s1/force", &[], b"{}").await,
        ),
        (
            "a 403",
            http(
                port,
                "POST",
                "/api/v1/builders/quick-s1/force",
                &[JSON, ("Origin", "http://evil.example")],
                b"{}",
            )
            .await,
        ),
        ("events", head_only(port, "/events").await),
        (
            "a log tail",
            head_only(
                port,
                "/builders/quick-s1/builds/1/steps/hello/logs/stdio/tail",
            )
            .await,
        ),
        ("a public page", get(public, "/waterfall").await),
        ("public JSON", get(public, "/api/v1/builders").await),
        ("a public 404", get(public, "/api/v1/nothing").await),
        (
            "a public POST",
            http(
                public,
                "POST",
                "/api/v1/builders/quick-s1/force",
                &[JSON],
                b"{}",
            )
            .await,
        ),
        ("public events", head_only(public, "/events").await),
    ];
    for (what, r) in &checks {
        assert_secure_headers(what, r);
    }
    assert_eq!(checks[1].1.status, 304);
    assert_eq!(
        checks
            .iter()
            .find(|(w, _)| *w == "events")
            .unwrap()
            .1
            .header("content-type"),
        Some("text/event-stream")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_csrf_cookie_fits_the_origin_and_the_token_the_user() {
    let m = web_common::start(&master_ini(FACTORIES, "")).await;
    let port = m.master.htmlport();
    let page = "/builders/quick-s1";

    // Loopback names and HTTPS (behind a proxy): `__Host-`, Secure, Path=/.
    for (host, extra) in [
        (format!("127.0.0.1:{port}"), None),
        (format!("localhost:{port}"), None),
        (format!("[::1]:{port}"), None),
        (
            "ci.example.org".to_string(),
            Some(("X-Forwarded-Proto", "https")),
        ),
    ] {
        let h: Vec<(&str, &str)> = extra.into_iter().collect();
        let r = http_host(port, &host, "GET", page, &h, b"").await;
        let set = r.header("set-cookie").unwrap_or_else(|| panic!("{host}"));
        assert!(set.starts_with("__Host-autobot_csrf="), "{host}: {set}");
        for part in ["; Path=/;", "Secure", "HttpOnly", "SameSite=Strict"] {
            assert!(set.contains(part), "{host}: {part} in {set}");
        }
        assert!(!set.contains("Domain"), "{host}: {set}");
    }
    // Plain HTTP to another name: browsers drop Secure cookies there, so the
    // cookie has neither the prefix nor Secure, and works.
    let host = format!("ci.example.org:{port}");
    let r = http_host(port, &host, "GET", page, &[], b"").await;
    let set = r.header("set-cookie").unwrap().to_string();
    assert!(set.starts_with("autobot_csrf="), "{set}");
    assert!(!set.contains("Secure"), "{set}");
    let plain = set.split(';').next().unwrap().to_string();
    let token = csrf_field(&r.body);
    let form = web_common::form(&[("reason", "plain"), ("csrf", token.as_str())]);
    let origin = format!("http://{host}");
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    // The plain cookie counts nowhere a `__Host-` one could be set (a sibling
    // host or a network attacker could plant it): refused on 127.0.0.1.
    let r = http(
        port,
        "POST",
        "/builders/quick-s1/force",
        &[ct, ("Cookie", &plain)],
        &form,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(requests_for(&m, "quick-s1").await, 0);
    let r = http_host(
        port,
        &host,
        "POST",
        "/builders/quick-s1/force",
        &[ct, ("Cookie", &plain), ("Origin", &origin)],
        &form,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(requests_for(&m, "quick-s1").await, 1);
    // Behind a TLS proxy the origin is https and has no port.
    let r = http_host(
        port,
        "ci.example.org",
        "POST",
        "/api/v1/builders/quick-s1/force",
        &[
            JSON,
            ("X-Forwarded-Proto", "https"),
            ("Origin", "https://ci.example.org"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = http_host(
        port,
        "ci.example.org",
        "POST",
        "/api/v1/builders/quick-s1/force",
        &[JSON, ("Origin", "https://ci.example.org")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 403, "https origin, plain request: {}", r.body);
}

/// A master in-process whose master.ini names the htmlport it listens on, so the
/// CLI (which reads master.ini) reaches it.
async fn master_for_cli(ini_users: &str) -> EngineMaster {
    support::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let hp = free_port();
    let ini = master_ini(&format!("{FACTORIES}{ini_users}"), "")
        .replace("htmlport = 8010", &format!("htmlport = {hp}"));
    support::write_master_ini(dir.path(), ini);
    let master = Master::start_with(
        dir.path(),
        MasterOptions {
            keepalive_interval: Some(Duration::from_secs(30)),
            slaveport: Some(0),
            htmlport: Some(hp),
            publichtmlport: Some(0),
        },
    )
    .await
    .unwrap();
    EngineMaster { dir, master }
}

/// Run the real binary in `cwd` with `HOME` set to `home`; (success, stdout+stderr).
async fn cli(args: &[&str], cwd: &Path, home: &Path) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (cwd, home) = (cwd.to_path_buf(), home.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let out = Command::new(autobot_bin())
            .args(&args)
            .current_dir(&cwd)
            .env("HOME", &home)
            .env("USER", "unix-user")
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

fn write_private(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The reason of the newest BuildRequest of `builder`.
async fn last_reason(m: &EngineMaster, builder: &str) -> String {
    let b = builder.to_string();
    m.master
        .db()
        .read_sql(move |c| {
            c.query_one(
                "SELECT bs.reason FROM buildrequests r JOIN buildsets bs ON bs.id = r.buildset
                 WHERE r.builder = ?1 ORDER BY r.id DESC LIMIT 1",
                &[b.into()],
            )?
            .string(0)
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_logs_in_from_flags_options_or_the_master_directory() {
    let m = master_for_cli(USERS).await;
    let mdir = m.dir.path().to_path_buf();
    let d = mdir.to_str().unwrap().to_string();
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let cwd = home.join("proj/sub");
    std::fs::create_dir_all(&cwd).unwrap();
    let force = |extra: &[&str]| {
        let mut a = vec!["force", d.as_str(), "quick-s1", "--reason", "cli"];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let (cwd, home) = (cwd.clone(), home.clone());
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&a, &cwd, &home).await
        }
    };

    // No login anywhere: a clear error before anything is sent.
    let (ok, text) = run(force(&[])).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("[users]") && text.contains("--user"),
        "{text}"
    );
    assert!(text.contains(".credentials"), "{text}");
    assert_eq!(requests_for(&m, "quick-s1").await, 0);

    // Flags: wrong, then right.
    let (ok, text) = run(force(&["--user", "alice", "--passwd", "nope"])).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("refused the login of \"alice\" (from --user/--passwd)"),
        "{text}"
    );
    let (ok, text) = run(force(&["--user", "alice"])).await;
    assert!(!ok, "--user alone: {text}");
    assert_eq!(requests_for(&m, "quick-s1").await, 0);
    let (ok, text) = run(force(&["--user", "alice", "--passwd", "s3cret"])).await;
    assert!(ok, "{text}");
    assert!(text.contains("BuildRequest"), "{text}");
    assert_eq!(last_reason(&m, "quick-s1").await, "forced by alice: cli");

    // .autobot/options in a parent of the current directory.
    let opts = home.join("proj/.autobot/options");
    write_private(
        &opts,
        "master = 'localhost:1'\nuser = bob\npasswd = 'hunter2'\n",
        0o644,
    );
    let (ok, text) = run(force(&[])).await;
    assert!(!ok, "a readable password file: {text}");
    assert!(
        text.contains("chmod 600") && text.contains("options"),
        "{text}"
    );
    write_private(
        &opts,
        "master = 'localhost:1'\nuser = bob\npasswd = 'hunter2'\n",
        0o600,
    );
    let (ok, text) = run(force(&[])).await;
    assert!(ok, "{text}");
    assert_eq!(last_reason(&m, "quick-s1").await, "forced by bob: cli");
    // Flags come first.
    let (ok, text) = run(force(&["--user", "alice", "--passwd", "s3cret"])).await;
    assert!(ok, "{text}");
    assert_eq!(last_reason(&m, "quick-s1").await, "forced by alice: cli");
    // A wrong password there is reported with the file it came from.
    write_private(&opts, "user = bob\npasswd = wrong\n", 0o600);
    let (ok, text) = run(force(&[])).await;
    assert!(!ok, "{text}");
    assert!(text.contains(&opts.display().to_string()), "{text}");

    // MASTERDIR/.credentials, when the options file has no login.
    write_private(&opts, "master = 'localhost:1'\n", 0o644);
    let creds = mdir.join(".credentials");
    write_private(&creds, "user = alice\npasswd = s3cret\n", 0o640);
    let (ok, text) = run(force(&[])).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains(".credentials")
            && text.contains("others can read")
            && text.contains("chmod 600"),
        "{text}"
    );
    write_private(&creds, "user = alice\npasswd = s3cret\n", 0o600);
    let requests = requests_for(&m, "quick-s1").await;
    let (ok, text) = run(force(&[])).await;
    assert!(ok, "{text}");
    assert_eq!(requests_for(&m, "quick-s1").await, requests + 1);
    assert_eq!(last_reason(&m, "quick-s1").await, "forced by alice: cli");
    // The options file comes before it.
    write_private(&opts, "user = bob\npasswd = hunter2\n", 0o600);
    let (ok, text) = run(force(&[])).await;
    assert!(ok, "{text}");
    assert_eq!(last_reason(&m, "quick-s1").await, "forced by bob: cli");
    std::fs::remove_file(&opts).unwrap();

    // stop-build logs in the same way.
    let _slave = m.slave().await;
    let id = m
        .force(
            "slow-s1",
            autobot::engine::ForceRequest {
                reason: "to stop".into(),
                ..Default::default()
            },
        )
        .await;
    let _ = id;
    wait_running(&m, "slow-s1").await;
    let stop = |extra: &[&str]| {
        let mut a = vec![
            "stop-build",
            d.as_str(),
            "slow-s1",
            "1",
            "--reason",
            "cli stop",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    std::fs::remove_file(&creds).unwrap();
    let (ok, text) = run(stop(&[])).await;
    assert!(!ok, "{text}");
    let (ok, text) = run(stop(&["--user", "bob", "--passwd", "nope"])).await;
    assert!(!ok, "{text}");
    assert!(m.engine().running().iter().any(|(b, _)| b == "slow-s1"));
    write_private(&creds, "user = bob\npasswd = hunter2\n", 0o600);
    let (ok, text) = run(stop(&[])).await;
    assert!(ok, "{text}");
    assert_eq!(
        m.build("slow-s1", 1).await.build.text,
        "stopped by bob: cli stop"
    );

    // The help says all this.
    let (ok, help) = run(vec!["force".into(), "--help".into()]).await;
    assert!(ok);
    for s in [
        "--user",
        "--passwd",
        ".autobot/options",
        ".credentials",
        "chmod 600",
    ] {
        assert!(help.contains(s), "{s} in {help}");
    }
    let (_, help) = run(vec!["stop-build".into(), "--help".into()]).await;
    assert!(help.contains(".credentials"), "{help}");
}

/// Without `[users]` the CLI needs no login and sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_users_the_cli_needs_no_login() {
    let m = master_for_cli("").await;
    let d = m.dir.path().to_str().unwrap().to_string();
    let t = tempfile::tempdir().unwrap();
    let (ok, text) = cli(&["force", &d, "quick-s1"], t.path(), t.path()).await;
    assert!(ok, "{text}");
    assert_eq!(
        last_reason(&m, "quick-s1").await,
        "forced by unix-user: forced from the command line"
    );
}
