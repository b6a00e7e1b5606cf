//! The status pages over real HTTP against a real master and an autobot slave:
//! every page renders and links from the waterfall; a Change and a force reason
//! carrying `<script>` show as text everywhere; Force and Stop forms refuse POSTs
//! without the right CSRF token; the public port is read-only; `[users]` gates the
//! forms with HTTP Basic; pages revalidate with ETags; `/events` and a log's live
//! tail stream as the build runs.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "web_common/mod.rs"]
mod web_common;

use std::time::{Duration, Instant};

use autobot::db::changes::NewChange;
use autobot::engine::ForceRequest;
use engine_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use web_common::*;

const FACTORIES: &str = r#"
[quick]
type = shell
category = fast
step.hello = sh -c "echo hello from %(buildername)s; echo to-stderr >&2"
step.second = true

[slow]
type = shell
category = slowpoke
step.sleep = sleep 600

[drip]
type = shell
step.drip = for i in 1 2 3 4 5; do echo drip-$i; sleep 0.3; done
"#;

const EVIL: &str = "<script>alert('x')</script>";

fn force(reason: &str) -> ForceRequest {
    ForceRequest {
        reason: reason.into(),
        ..Default::default()
    }
}

/// No raw `<script>` from data anywhere on the page (our own script tag is
/// `<script src=`), and the escaped form where `must_show` (the template engine
/// escapes `& < > "`; a `'` is text like any other, as every attribute is
/// double-quoted).
fn assert_escaped(path: &str, body: &str, must_show: bool) {
    assert!(
        !body.contains("<script>"),
        "{path} has a raw <script>: {body}"
    );
    if must_show {
        assert!(
            body.contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
            "{path} does not show the escaped text: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_page_renders_escapes_and_is_linked_from_the_waterfall() {
    let m = web_common::start(&master_ini(FACTORIES, "projectName = <b>Proj</b>")).await;
    let _slave = m.slave().await;
    let port = m.master.htmlport();
    let change = m
        .master
        .changes()
        .add(vec![NewChange {
            who: format!("Mallory {EVIL}"),
            comments: format!("fix {EVIL}\nsecond line"),
            files: vec![format!("src/{EVIL}.c")],
            revision: Some("abc123".into()),
            branch: Some("main".into()),
            when: 1_700_000_000,
            links: vec![
                "javascript:alert(1)".into(),
                "https://example.org/c/1".into(),
            ],
            ..Default::default()
        }])
        .await
        .unwrap()[0]
        .id;
    let req = m.force("quick-s1", force(EVIL)).await;
    assert_eq!(m.wait_request(req).await.result.as_deref(), Some("success"));

    let w = get(port, "/").await;
    assert_eq!(w.status, 200, "{}", w.body);
    assert_eq!(w.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(w.header("content-security-policy").is_some());
    assert_escaped("/", &w.body, false);
    assert!(w.body.contains("&lt;b&gt;Proj&lt;/b&gt;"), "{}", w.body);
    // Every page kind is linked from the waterfall.
    for link in [
        "href=\"/builders/quick-s1\"",
        "href=\"/builders/quick-s1/builds/1\"",
        "href=\"/builders/quick-s1/builds/1/steps/hello/logs/stdio\"",
        "href=\"/changes\"",
        &format!("href=\"/changes/{change}\""),
        "href=\"/slaves\"",
        "href=\"/about\"",
        "href=\"/builders\"",
        "href=\"/favicon.ico\"",
    ] {
        assert!(w.body.contains(link), "waterfall lacks {link}: {}", w.body);
    }
    assert!(w.body.contains("class=\"build success\""), "{}", w.body);
    assert!(w.body.contains("Mallory &lt;script&gt;"), "{}", w.body);

    let pages = [
        ("/waterfall", false),
        ("/waterfall?category=fast", false),
        ("/waterfall?branch=nope", false),
        ("/waterfall?before=1", false),
        ("/builders", false),
        ("/builders/quick-s1", true),
        ("/builders/quick-s1/builds/1", true),
        ("/builders/quick-s1/builds/1/steps/hello/logs/stdio", false),
        ("/changes", true),
        (&format!("/changes/{change}"), true),
        ("/slaves", false),
        ("/slaves/s1", false),
        ("/console", false),
        ("/my?author=%3Cscript%3Ealert('x')%3C%2Fscript%3E", true),
        ("/about", false),
    ];
    for (path, must_show) in pages {
        let r = get(port, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_escaped(path, &r.body, must_show);
        assert!(r.body.contains("</html>"), "{path}: {}", r.body);
    }
    // The build page names the source stamp, steps and the log links.
    let b = get(port, "/builders/quick-s1/builds/1").await.body;
    assert!(
        b.contains(
            "id=\"build-result\"><span class=\"icon\" aria-hidden=\"true\">✔</span> success"
        ),
        "{b}"
    );
    assert!(b.contains("/steps/hello/logs/stdio/text"), "{b}");
    // A category filter hides the other builders' columns.
    let f = get(port, "/waterfall?category=fast").await.body;
    assert!(f.contains("quick-s1") && !f.contains("slow-s1"), "{f}");
    // A Change page never links javascript: URLs.
    let c = get(port, &format!("/changes/{change}")).await.body;
    assert!(!c.contains("href=\"javascript:"), "{c}");
    assert!(c.contains("href=\"https://example.org/c/1\""), "{c}");

    // Logs: HTML with channels styled, plain text, download.
    let l = get(port, "/builders/quick-s1/builds/1/steps/hello/logs/stdio").await;
    assert!(l.body.contains("hello from quick-s1"), "{}", l.body);
    assert!(
        l.body.contains("<span class=\"stderr\">to-stderr"),
        "{}",
        l.body
    );
    let t = get(
        port,
        "/builders/quick-s1/builds/1/steps/hello/logs/stdio/text",
    )
    .await;
    assert_eq!(t.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(t.body.contains("hello from quick-s1\n"), "{}", t.body);
    let d = get(
        port,
        "/builders/quick-s1/builds/1/steps/1/logs/stdio/text?download",
    )
    .await;
    assert!(
        d.header("content-disposition")
            .unwrap()
            .starts_with("attachment"),
        "{:?}",
        d.headers
    );

    // Files and badges.
    let fav = get(port, "/favicon.ico").await;
    assert_eq!(
        (fav.status, fav.header("content-type")),
        (200, Some("image/x-icon"))
    );
    let robots = get(port, "/robots.txt").await;
    assert!(robots.body.contains("Disallow: /"), "{}", robots.body);
    std::fs::create_dir_all(m.dir.path().join("public_html")).unwrap();
    std::fs::write(
        m.dir.path().join("public_html/robots.txt"),
        "User-agent: *\nAllow: /\n",
    )
    .unwrap();
    assert!(get(port, "/robots.txt").await.body.contains("Allow: /"));
    let badge = get(port, "/badge/quick-s1.svg").await;
    assert_eq!(badge.header("content-type"), Some("image/svg+xml"));
    assert!(badge.body.contains("passing"), "{}", badge.body);
    assert!(get(port, "/badge/slow-s1.svg")
        .await
        .body
        .contains("unknown"));
    assert_eq!(get(port, "/badge/nope.svg").await.status, 404);
    assert!(get(port, "/static/autobot.css")
        .await
        .body
        .contains(".success"));
    assert!(get(port, "/static/autobot.js")
        .await
        .body
        .contains("EventSource"));

    // HEAD answers like GET, without a body.
    let head = http(port, "HEAD", "/waterfall", &[], b"").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "{}", head.body);

    // Unknown pages: HTML 404s; the API keeps its JSON errors.
    let nf = get(port, &format!("/nope/{}", "%3Cscript%3E")).await;
    assert_eq!(nf.status, 404);
    assert_escaped("/nope", &nf.body, false);
    assert!(nf.header("content-type").unwrap().starts_with("text/html"));
    let api = get(port, "/api/v1/nope").await;
    assert_eq!(api.status, 404);
    assert!(api.body.contains("\"error\""), "{}", api.body);
    assert_eq!(get(port, "/builders/nope").await.status, 404);
    assert_eq!(get(port, "/builders/quick-s1/builds/99").await.status, 404);
    assert_eq!(get(port, "/changes/999").await.status, 404);
    assert_eq!(get(port, "/slaves/nope").await.status, 404);

    // Nothing secret on any page: the slave's password.
    for path in [
        "/",
        "/slaves",
        "/slaves/s1",
        "/about",
        "/builders/quick-s1/builds/1",
    ] {
        assert!(!get(port, path).await.body.contains(PASSWORD), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_revalidate_with_etags() {
    let m = web_common::start(&master_ini(FACTORIES, "")).await;
    let port = m.master.htmlport();
    let first = get(port, "/waterfall").await;
    let tag = first.header("etag").expect("an ETag").to_string();
    assert!(first.header("last-modified").is_some());
    let again = http(port, "GET", "/waterfall", &[("If-None-Match", &tag)], b"").await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    // A new Change moves the generation: the page is sent again.
    m.master
        .changes()
        .add(vec![NewChange {
            who: "ann".into(),
            when: 1,
            ..Default::default()
        }])
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = http(port, "GET", "/waterfall", &[("If-None-Match", &tag)], b"").await;
        if r.status == 200 {
            assert!(r.body.contains("ann"), "{}", r.body);
            break;
        }
        assert!(Instant::now() < deadline, "the ETag never changed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fav = get(port, "/favicon.ico").await;
    let ftag = fav.header("etag").unwrap().to_string();
    let again = http(
        port,
        "GET",
        "/favicon.ico",
        &[("If-None-Match", &ftag)],
        b"",
    )
    .await;
    assert_eq!(again.status, 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_and_stop_forms_need_the_csrf_token() {
    let m = web_common::start(&master_ini(FACTORIES, "")).await;
    let _slave = m.slave().await;
    let port = m.master.htmlport();
    let page = get(port, "/builders/quick-s1").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"force-form\""), "{}", page.body);
    let cookie = csrf_cookie(&page);
    let set = page.header("set-cookie").unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set.contains(part), "{part} in {set}");
    }
    // On 127.0.0.1 browsers keep Secure cookies: the cookie has the __Host- prefix.
    assert!(cookie.starts_with("__Host-autobot_csrf="), "{set}");
    assert!(!set.contains("Domain"), "{set}");
    // A page with a token is the browser's alone.
    assert!(page.header("cache-control").unwrap().contains("private"));
    assert!(page.header("vary").unwrap().contains("Cookie"));
    let token = csrf_field(&page.body);
    let fields = |t: &'static str| vec![("who", "ann"), ("reason", EVIL), ("csrf", t)];

    // No cookie, no token, a wrong token, another browser's token: refused.
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        None,
        &[],
        &[("reason", "x")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[],
        &[("reason", "x")],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[],
        &fields("0123"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let other = get(port, "/builders/quick-s1").await;
    let other_token = csrf_field(&other.body);
    assert_ne!(other_token, token);
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[],
        &[("csrf", other_token.as_str())],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(m
        .master
        .db()
        .builds("quick-s1", 10, None)
        .await
        .unwrap()
        .is_empty());

    // The right token forces the build and goes back to the builder page.
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[],
        &[("who", "ann"), ("reason", EVIL), ("csrf", token.as_str())],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/builders/quick-s1"));
    wait_until("the forced build finishes", || async {
        m.master
            .db()
            .builds("quick-s1", 1, None)
            .await
            .unwrap()
            .first()
            .is_some_and(|b| b.result.as_deref() == Some("success"))
    })
    .await;
    let b = m.build("quick-s1", 1).await;
    assert_eq!(b.build.reason, format!("forced by ann: {EVIL}"));
    let page = get(port, "/builders/quick-s1").await.body;
    assert_escaped("/builders/quick-s1", &page, true);

    // Stop: a running build shows a stop form; a bad token is refused.
    let req = m.force("slow-s1", force("long")).await;
    let _ = req;
    wait_until("the slow build runs", || async {
        m.engine().running().iter().any(|(b, _)| b == "slow-s1")
    })
    .await;
    let page = http(
        port,
        "GET",
        "/builders/slow-s1/builds/1",
        &[("Cookie", &cookie)],
        b"",
    )
    .await;
    assert!(page.header("set-cookie").is_none(), "the cookie is kept");
    assert!(
        page.body.contains("/builders/slow-s1/builds/1/stop"),
        "{}",
        page.body
    );
    let token = csrf_field(&page.body);
    let r = post_form(
        port,
        "/builders/slow-s1/builds/1/stop",
        Some(&cookie),
        &[],
        &[("csrf", "bad")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(m.engine().running().iter().any(|(b, _)| b == "slow-s1"));
    let r = post_form(
        port,
        "/builders/slow-s1/builds/1/stop",
        Some(&cookie),
        &[],
        &[("csrf", token.as_str()), ("reason", "enough")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let b = m.build("slow-s1", 1).await;
    assert!(b.build.result.is_some());
    assert!(b.build.text.contains("enough"), "{}", b.build.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_public_port_is_read_only() {
    let m = web_common::start(&master_ini(FACTORIES, "")).await;
    let _slave = m.slave().await;
    let public = m.master.publichtmlport().expect("a public port");
    assert_ne!(public, m.master.htmlport());
    let req = m.force("quick-s1", force("for the record")).await;
    m.wait_request(req).await;
    for path in [
        "/",
        "/builders/quick-s1",
        "/builders/quick-s1/builds/1",
        "/slaves",
        "/changes",
    ] {
        let r = get(public, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(!r.body.contains("<form class=\"force\""), "{path}");
        assert!(!r.body.contains("method=\"post\""), "{path}: {}", r.body);
        assert!(r.body.contains("read-only"), "{path}");
        assert!(r.header("set-cookie").is_none());
    }
    // The private port does show the form.
    assert!(get(m.master.htmlport(), "/builders/quick-s1")
        .await
        .body
        .contains("force-form"));
    // With a valid token from the private port, the public port still refuses.
    let page = get(m.master.htmlport(), "/builders/quick-s1").await;
    let (cookie, token) = (csrf_cookie(&page), csrf_field(&page.body));
    let r = post_form(
        public,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[],
        &[("csrf", token.as_str())],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post_form(
        public,
        "/builders/slow-s1/builds/1/stop",
        Some(&cookie),
        &[],
        &[("csrf", token.as_str())],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http(
        public,
        "POST",
        "/api/v1/builders/quick-s1/force",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 405, "{}", r.body);
    let r = http(
        public,
        "POST",
        "/api/v1/changes",
        &[("Content-Type", "application/json")],
        b"{}",
    )
    .await;
    assert!(r.status == 405 || r.status == 404, "{}", r.body);
    // Reads of the JSON API work there.
    let r = get(public, "/api/v1/builders").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("quick-s1"));
    assert_eq!(
        m.master
            .db()
            .builds("quick-s1", 10, None)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_gate_force_with_http_basic() {
    let factories = format!("{FACTORIES}\n[users]\nalice = s3cret\nbob = hunter2\n");
    let m = web_common::start(&master_ini(&factories, "")).await;
    let _slave = m.slave().await;
    let port = m.master.htmlport();
    let good = format!("Basic {}", b64("alice:s3cret"));

    // Nobody logged in: no form and no token, a link to log in instead.
    let page = get(port, "/builders/quick-s1").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("force-form"), "{}", page.body);
    assert!(!page.body.contains("name=\"csrf\""), "{}", page.body);
    assert!(
        page.body.contains("/login?next=%2Fbuilders%2Fquick-s1"),
        "{}",
        page.body
    );
    // /login asks for credentials until they are right, then goes back.
    let r = get(port, "/login?next=%2Fbuilders%2Fquick-s1").await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    let bad = format!("Basic {}", b64("alice:wrong"));
    let r = http(
        port,
        "GET",
        "/login?next=/x",
        &[("Authorization", &bad)],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = http(
        port,
        "GET",
        "/login?next=%2Fbuilders%2Fquick-s1",
        &[("Authorization", &good)],
        b"",
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/builders/quick-s1"));
    // The browser is told who logged in (a signed cookie), so the pages it loads
    // without sending the credentials again show the form made for that user.
    let login = csrf_cookie(&r);
    assert!(login.starts_with("__Host-autobot_user="), "{login}");
    let page = http(
        port,
        "GET",
        "/builders/quick-s1",
        &[("Cookie", &login)],
        b"",
    )
    .await;
    assert!(page.body.contains("force-form"), "{}", page.body);
    assert!(
        page.body.contains("Logged in as <b>alice</b>"),
        "{}",
        page.body
    );
    // A cookie naming another user without the master's signature counts for
    // nothing.
    let forged = format!(
        "__Host-autobot_user={}.{}",
        "626f62",
        &login[login.len() - 64..]
    );
    let page = http(
        port,
        "GET",
        "/builders/quick-s1",
        &[("Cookie", &forged)],
        b"",
    )
    .await;
    assert!(!page.body.contains("force-form"), "{}", page.body);
    // `next` only ever leads to a page of this master.
    for evil in ["//evil.example/", "https://evil.example/", "/%5Cevil"] {
        let r = http(
            port,
            "GET",
            &format!("/login?next={evil}"),
            &[("Authorization", &good)],
            b"",
        )
        .await;
        assert_eq!(r.status, 303);
        assert_eq!(r.header("location"), Some("/waterfall"), "{evil}");
    }

    // Logged in: the form, with a token bound to the user (here the browser
    // sends the credentials with the page too).
    let page = http(
        port,
        "GET",
        "/builders/quick-s1",
        &[("Authorization", &good)],
        b"",
    )
    .await;
    assert!(page.body.contains("force-form"), "{}", page.body);
    assert!(
        page.body.contains("Logged in as <b>alice</b>"),
        "{}",
        page.body
    );
    assert_eq!(page.header("vary"), Some("Cookie, Authorization"));
    assert!(page.header("cache-control").unwrap().contains("private"));
    let (cookie, token) = (csrf_cookie(&page), csrf_field(&page.body));
    let fields = [
        ("reason", "gated"),
        ("who", "mallory"),
        ("csrf", token.as_str()),
    ];
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[],
        &fields,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[("Authorization", &bad)],
        &fields,
    )
    .await;
    assert_eq!(r.status, 401);
    let ghost = format!("Basic {}", b64("carol:s3cret"));
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[("Authorization", &ghost)],
        &fields,
    )
    .await;
    assert_eq!(r.status, 401);
    // Bob's right credentials with the token made for alice: refused.
    let bobs = format!("Basic {}", b64("bob:hunter2"));
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[("Authorization", &bobs)],
        &fields,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(m
        .master
        .db()
        .builds("quick-s1", 10, None)
        .await
        .unwrap()
        .is_empty());
    // Good credentials but no CSRF token: still refused.
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[("Authorization", &good)],
        &[("reason", "x")],
    )
    .await;
    assert_eq!(r.status, 403);
    let r = post_form(
        port,
        "/builders/quick-s1/force",
        Some(&cookie),
        &[("Authorization", &good)],
        &fields,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    wait_until("the gated build finishes", || async {
        m.master
            .db()
            .builds("quick-s1", 1, None)
            .await
            .unwrap()
            .first()
            .is_some_and(|b| b.result.is_some())
    })
    .await;
    // The logged-in user is who forced, whatever the form said.
    assert_eq!(
        m.build("quick-s1", 1).await.build.reason,
        "forced by alice: gated"
    );
    // Reading stays open, and no page shows a password.
    for path in ["/", "/builders/quick-s1", "/about", "/slaves"] {
        let r = get(port, path).await;
        assert_eq!(r.status, 200);
        assert!(!r.body.contains("s3cret"), "{path}");
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Open an SSE stream and read until the server's hello (it has subscribed).
async fn open_sse(port: u16, path: &str) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let text = read_until(&mut s, String::new(), |t| {
        t.contains(": hello") || t.contains("event: end")
    })
    .await;
    (s, text)
}

/// Keep reading until `done` holds for all text so far (or the stream ends).
async fn read_until(
    s: &mut tokio::net::TcpStream,
    mut all: String,
    mut done: impl FnMut(&str) -> bool,
) -> String {
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + DEADLINE;
    while !done(&all) {
        assert!(Instant::now() < deadline, "SSE: timed out with {all}");
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        all.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    all
}

async fn read_sse(port: u16, path: &str, done: impl FnMut(&str) -> bool) -> String {
    let (mut s, text) = open_sse(port, path).await;
    read_until(&mut s, text, done).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_and_the_live_log_tail_stream() {
    let m = web_common::start(&master_ini(FACTORIES, "")).await;
    let _slave = m.slave().await;
    let port = m.master.htmlport();
    // /events: the build's life as JSON.
    let (mut es, hello) = open_sse(port, "/events").await;
    assert!(hello.contains("text/event-stream"), "{hello}");
    let watcher = tokio::spawn(async move {
        read_until(&mut es, hello, |t| {
            t.contains("\"event\":\"build_finished\"")
        })
        .await
    });
    let req = m.force("drip-s1", force("drip")).await;
    // The log tail from offset 0 while the step runs.
    wait_until("the drip step starts", || async {
        m.master
            .db()
            .log_file("drip-s1", 1, "drip", "stdio")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let tail = read_sse(
        port,
        "/builders/drip-s1/builds/1/steps/drip/logs/stdio/tail?offset=0",
        |t| t.contains("event: end"),
    )
    .await;
    for i in 1..=5 {
        assert!(tail.contains(&format!("drip-{i}")), "{tail}");
    }
    assert!(tail.contains("\"c\":\"stdout\""), "{tail}");
    m.wait_request(req).await;
    let events = tokio::time::timeout(DEADLINE, watcher)
        .await
        .unwrap()
        .unwrap();
    for ev in [
        "build_started",
        "step_started",
        "step_finished",
        "build_finished",
    ] {
        assert!(
            events.contains(&format!("\"event\":\"{ev}\"")),
            "{ev}: {events}"
        );
    }
    // A finished log's tail from its end sends `end` at once; from 0 all of it.
    let len = m
        .master
        .db()
        .log_file("drip-s1", 1, "drip", "stdio")
        .await
        .unwrap()
        .unwrap()
        .size;
    let t = read_sse(
        port,
        &format!("/builders/drip-s1/builds/1/steps/drip/logs/stdio/tail?offset={len}"),
        |t| t.contains("event: end"),
    )
    .await;
    assert!(!t.contains("drip-"), "{t}");
    // Resuming with Last-Event-ID skips what the browser has.
    let r = http(
        port,
        "GET",
        "/builders/drip-s1/builds/1/steps/drip/logs/stdio/tail?offset=0",
        &[("Last-Event-ID", &len.to_string())],
        b"",
    )
    .await;
    assert!(
        r.body.contains("event: end") && !r.body.contains("drip-"),
        "{}",
        r.body
    );
    assert_eq!(
        get(
            port,
            "/builders/drip-s1/builds/1/steps/nope/logs/stdio/tail"
        )
        .await
        .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_live_streams_do_not_hold_up_shutdown() {
    let m = web_common::start(&master_ini(FACTORIES, "")).await;
    let _slave = m.slave().await;
    let (port, public) = (m.master.htmlport(), m.master.publichtmlport().unwrap());
    let (mut a, _) = open_sse(port, "/events").await;
    let (mut b, _) = open_sse(public, "/events").await;
    let req = m.force("slow-s1", force("long")).await;
    let _ = req;
    wait_until("the slow build runs", || async {
        !m.engine().running().is_empty()
    })
    .await;
    let (mut c, _) = open_sse(
        port,
        "/builders/slow-s1/builds/1/steps/sleep/logs/stdio/tail?offset=0",
    )
    .await;
    let engine_common::EngineMaster { dir: _dir, master } = m;
    let t0 = Instant::now();
    master.shutdown().await;
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        t0.elapsed()
    );
    // Every stream was ended by the master.
    for s in [&mut a, &mut b, &mut c] {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("the stream ends")
            .unwrap();
    }
}

/// `favicon = FILE` and `robots_txt = FILE` replace the built-in files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_favicon_and_robots_txt_are_served() {
    support::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("art")).unwrap();
    std::fs::write(dir.path().join("art/icon.ico"), b"my-icon-bytes").unwrap();
    std::fs::write(
        dir.path().join("art/robots.txt"),
        "User-agent: *\nAllow: /x\n",
    )
    .unwrap();
    support::write_master_ini(
        dir.path(),
        engine_common::master_ini(
            "[quick]\ntype = shell\nstep.true = true\n",
            "favicon = art/icon.ico\nrobots_txt = art/robots.txt\n",
        ),
    );
    let master = autobot::app::Master::start_with(
        dir.path(),
        autobot::app::MasterOptions {
            keepalive_interval: Some(std::time::Duration::from_secs(30)),
            slaveport: Some(0),
            htmlport: Some(0),
            publichtmlport: None,
        },
    )
    .await
    .unwrap();
    let port = master.htmlport();
    let fav = get(port, "/favicon.ico").await;
    assert_eq!((fav.status, fav.body.as_str()), (200, "my-icon-bytes"));
    let robots = get(port, "/robots.txt").await;
    assert_eq!(robots.body, "User-agent: *\nAllow: /x\n");
    master.shutdown().await;
}
