//! The status pages in a real browser: headless Chromium driven over W3C WebDriver
//! (`chromedriver`, spoken to with the crate's tiny HTTP client). It opens the
//! waterfall, follows the builder link, forces a build with the form, sees the
//! build turn green without a reload (the page follows `/events`), opens the log,
//! and watches a running step's log grow live. Screenshots go to
//! `target/test-artifacts/`.
//!
//! The CSRF cookie is `__Host-autobot_csrf` (`Secure`) here: Chromium keeps
//! `Secure` cookies for `http://127.0.0.1`, a secure context, so the form works.
//! With `[users]`, a user logs in at `/login` and forces as themselves: Chromium
//! answers the POST's 401 with the credentials it was given at `/login`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test.sh` installs
//! them); when they are missing the test fails under `CI=true` and prints SKIP
//! elsewhere.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "web_common/mod.rs"]
mod web_common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use engine_common::*;
use serde_json::{json, Value};

const FACTORIES: &str = r#"
[quick]
type = shell
step.hello = sh -c "echo hello from the browser test; sleep 2; echo done"

[drip]
type = shell
step.drip = for i in 1 2 3 4 5 6; do echo drip-line-$i; sleep 0.5; done; printf '\033[32mgreen-live\033[0m\n'
"#;

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session on a chromedriver child.
struct Browser {
    port: u16,
    session: String,
    _driver: Daemon,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Browser {
    async fn start(chromium: PathBuf, driver: PathBuf) -> Browser {
        let port = free_port();
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        autobot::daemon::new_session(&mut cmd);
        let driver = Daemon(cmd.spawn().unwrap());
        let deadline = Instant::now() + DEADLINE;
        loop {
            let ready = call(port, "GET", "/status", None)
                .await
                .ok()
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let v = call(port, "POST", "/session", Some(caps)).await.unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            port,
            session,
            _driver: driver,
            _profile: profile,
            shots,
        }
    }

    async fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{what}", self.session);
        let v = call(self.port, method, &path, body).await.unwrap();
        if v["value"].get("error").is_some() {
            panic!("{method} {what}: {v}");
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("find {css}: {v}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Poll a script until it returns `true`; panics with `what` after the deadline.
    async fn wait_js(&self, what: &str, script: &str) {
        let deadline = Instant::now() + DEADLINE;
        while self.js(script).await != json!(true) {
            if Instant::now() >= deadline {
                self.screenshot("timeout").await;
                let html = self.js("return document.documentElement.outerHTML").await;
                panic!("timed out waiting for {what}; page: {html}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(self.shots.join(format!("web_browser-{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = autobot::cli::http::request("127.0.0.1", self.port, "DELETE", &path, None);
    }
}

async fn call(port: u16, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let (method, path) = (method.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || {
        let r = autobot::cli::http::request("127.0.0.1", port, &method, &path, body.as_ref())?;
        r.json()
    })
    .await?
}

/// Chromium and chromedriver, or `None` (SKIP) when they are missing — a failure
/// when `CI=true`.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    if !support::need_tools(&[
        ("chromium", "apt-get install chromium"),
        ("chromedriver", "apt-get install chromium-driver"),
    ]) {
        return None;
    }
    Some((support::which("chromium")?, support::which("chromedriver")?))
}

/// With `[users]`, a user logs in through `/login` (the credentials in the URL
/// stand for what a person types into the browser's dialog), sees the form with
/// a token bound to them, and forces a build as themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_logs_in_and_forces_as_a_user() {
    let Some((chromium, driver)) = browser_tools() else {
        return;
    };
    let m = web_common::start(&master_ini(
        &format!("{FACTORIES}\n[users]\nalice = s3cret\n"),
        "",
    ))
    .await;
    let _slave = m.slave().await;
    let port = m.master.htmlport();
    let b = Browser::start(chromium, driver).await;
    b.goto(&format!("http://127.0.0.1:{port}/builders/quick-s1"))
        .await;
    b.wait_js(
        "the login link instead of the form",
        "return !!document.querySelector('p.login a') && !document.getElementById('force-form')",
    )
    .await;
    b.goto(&format!(
        "http://alice:s3cret@127.0.0.1:{port}/login?next=%2Fbuilders%2Fquick-s1"
    ))
    .await;
    b.wait_js(
        "the builder page with the form, logged in",
        "return location.pathname === '/builders/quick-s1' && !!document.getElementById('force-form') \
         && document.querySelector('p.login').textContent.includes('alice')",
    )
    .await;
    b.type_into("#force-form input[name=who]", "mallory").await;
    b.type_into("#force-form input[name=reason]", "as a user")
        .await;
    b.click("#force-button").await;
    wait_until("the build forced as alice", || async {
        m.master
            .db()
            .builds("quick-s1", 1, None)
            .await
            .unwrap()
            .first()
            .is_some_and(|r| r.reason == "forced by alice: as a user")
    })
    .await;
    b.screenshot("7-logged-in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_forces_a_build_and_watches_it_go_green_live() {
    let Some((chromium, driver)) = browser_tools() else {
        return;
    };
    let m = web_common::start(&master_ini(FACTORIES, "projectName = Browser Test")).await;
    let _slave = m.slave().await;
    let base = format!("http://127.0.0.1:{}", m.master.htmlport());
    let b = Browser::start(chromium, driver).await;

    // The waterfall, then the builder page through its column's link.
    b.goto(&format!("{base}/waterfall")).await;
    b.wait_js(
        "the waterfall's live stream",
        "return document.getElementById('live-status').textContent === 'live'",
    )
    .await;
    b.screenshot("1-waterfall").await;
    b.click("th.builder a[href='/builders/quick-s1']").await;
    b.wait_js(
        "the builder page",
        "return !!document.getElementById('force-form')",
    )
    .await;

    // The page gave the `__Host-` CSRF cookie and Chromium kept it.
    let cookies = b.cmd("GET", "/cookie", None).await;
    let csrf = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "__Host-autobot_csrf")
        .unwrap_or_else(|| panic!("no __Host- cookie in {cookies}"));
    assert_eq!(csrf["secure"], true, "{csrf}");
    assert_eq!(csrf["httpOnly"], true, "{csrf}");
    assert_eq!(csrf["path"], "/", "{csrf}");

    // Force with the form; the POST redirects back to the builder page.
    b.type_into("#force-form input[name=who]", "Chromium").await;
    b.type_into("#force-form input[name=reason]", "browser <test>")
        .await;
    // The form's page carries a marker, so the wait below sees the page the POST
    // redirected to, not the form's page before it has gone.
    b.js("window.__formPage = true; return true").await;
    b.click("#force-button").await;
    // The form's page set the `__Host-` cookie and the browser kept it (its POST
    // carried it, or the master would have answered 403 "Form expired").
    b.wait_js(
        "the builder page after forcing",
        "return window.__formPage === undefined && location.pathname === '/builders/quick-s1' \
         && !!document.getElementById('builder-part') \
         && document.getElementById('live-status').textContent === 'live'",
    )
    .await;
    // From here on the page must not reload: a marker on `window` must survive.
    b.js("window.__noReload = 'kept'; return true").await;
    let green_now = b
        .js("return !!document.querySelector('#builder-part td.success')")
        .await;
    assert_eq!(
        green_now,
        json!(false),
        "the build was already green on load"
    );
    b.screenshot("2-forced").await;
    b.wait_js(
        "the build to turn green without a reload",
        "return window.__noReload === 'kept' && !!document.querySelector('#builder-part td.success a')",
    )
    .await;
    b.screenshot("3-green").await;
    let reason = b
        .js("return document.querySelector('#builder-part table.builds').textContent")
        .await;
    assert!(
        reason
            .as_str()
            .unwrap()
            .contains("forced by Chromium: browser <test>"),
        "{reason}"
    );

    // The build page, then its log.
    b.click("#builder-part td.success a").await;
    b.wait_js(
        "the build page",
        "return !!document.querySelector('#build-result.success')",
    )
    .await;
    b.click("a.log").await;
    b.wait_js(
        "the log",
        "return !!document.getElementById('log') && document.getElementById('log').textContent.includes('hello from the browser test')",
    )
    .await;
    b.screenshot("4-log").await;

    // A running step's log grows on the page as the slave prints.
    let req = m
        .force(
            "drip-s1",
            autobot::engine::ForceRequest {
                reason: "drip".into(),
                ..Default::default()
            },
        )
        .await;
    wait_until("the drip step starts", || async {
        m.master
            .db()
            .log_file("drip-s1", 1, "drip", "stdio")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    b.goto(&format!(
        "{base}/builders/drip-s1/builds/1/steps/drip/logs/stdio"
    ))
    .await;
    let at_load = b
        .js("return document.getElementById('log').textContent")
        .await;
    assert!(
        !at_load.as_str().unwrap().contains("drip-line-6"),
        "the step was already over: {at_load}"
    );
    b.js("window.__noReload = 'kept'; return true").await;
    b.wait_js(
        "the log to grow live",
        "return window.__noReload === 'kept' && document.getElementById('log').textContent.includes('drip-line-6') \
         && document.getElementById('log').getAttribute('data-complete') === 'true'",
    )
    .await;
    let text = b
        .js("return document.getElementById('log').textContent")
        .await;
    let text = text.as_str().unwrap();
    for i in 1..=6 {
        assert_eq!(
            text.matches(&format!("drip-line-{i}\n")).count(),
            1,
            "line {i} once: {text}"
        );
    }
    // Colours arriving live are spans of the server's classes, not escape codes.
    let green = b
        .js("var g = document.querySelector('#log .ansi-fg2'); return g ? g.textContent : null")
        .await;
    assert_eq!(green, json!("green-live"));
    assert!(!text.contains('\u{1b}'), "{text}");
    b.screenshot("5-live-log").await;
    m.wait_request(req).await;

    // Back on the waterfall: both builds are green boxes with their steps.
    b.goto(&format!("{base}/waterfall")).await;
    b.wait_js(
        "two green builds on the waterfall",
        "return document.querySelectorAll('.build.success').length === 2",
    )
    .await;
    b.screenshot("6-waterfall").await;
}

const LOG_FACTORIES: &str = r#"
[colours]
type = shell
step.colour = printf '\033[1;31mred words\033[0m plain <b>not bold</b>\nline two\n\145rror: something broke\nline four\nline five\n'

[big]
type = shell
step.seq = seq 1 12400000
"#;

impl Browser {
    /// Chromium's first contentful paint of the page now open, in ms.
    async fn first_paint(&self) -> f64 {
        self.wait_js(
            "the first contentful paint",
            "return performance.getEntriesByName('first-contentful-paint').length > 0",
        )
        .await;
        let v = self
            .js("var p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : -1")
            .await;
        v.as_f64().unwrap_or(-1.0)
    }

    /// Type `keys` as real key presses (WebDriver actions), to whatever has focus.
    async fn keys(&self, keys: &str) {
        let mut actions = Vec::new();
        for k in keys.chars() {
            actions.push(json!({"type": "keyDown", "value": k.to_string()}));
            actions.push(json!({"type": "keyUp", "value": k.to_string()}));
        }
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
    }

    async fn size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Emulate `prefers-color-scheme` (Chrome DevTools Protocol through
    /// chromedriver).
    async fn color_scheme(&self, scheme: &str) {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {
                "features": [{"name": "prefers-color-scheme", "value": scheme}]
            }})),
        )
        .await;
    }
}

/// The log page in the browser: numbered lines with links to a line and a
/// range, ANSI colours as spans (never markup from the log), search with
/// next/previous, "jump to first error"; a ~100 MB log opens on its first page
/// at once (first paint measured), pages to its last line, and a line link of
/// another page finds its page. Screenshots: the log page, the waterfall at
/// full width, at 390 px, and in the dark theme.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_reads_logs_by_line_and_page() {
    let Some((chromium, driver)) = browser_tools() else {
        return;
    };
    let m = web_common::start(&master_ini(LOG_FACTORIES, "projectName = Browser Test")).await;
    let _slave = m.slave().await;
    let base = format!("http://127.0.0.1:{}", m.master.htmlport());
    let req = m
        .force("colours-s1", autobot::engine::ForceRequest::default())
        .await;
    assert_eq!(m.wait_request(req).await.result.as_deref(), Some("success"));
    let b = Browser::start(chromium, driver).await;
    let log = format!("{base}/builders/colours-s1/builds/1/steps/colour/logs/stdio");

    // Numbered lines, colours as classes, the log's "<b>" as text.
    b.goto(&log).await;
    b.wait_js(
        "the numbered log",
        "return !!document.querySelector('#L3 a.ln[href=\"#L3\"]')",
    )
    .await;
    let red = b
        .js("var r = document.querySelector('#log .ansi-fg1.ansi-b'); return r ? r.textContent : null")
        .await;
    assert_eq!(red, json!("red words"));
    let html = b
        .js("return document.getElementById('log').innerHTML")
        .await;
    let html = html.as_str().unwrap();
    assert!(
        html.contains("&lt;b&gt;not bold&lt;/b&gt;") && !html.contains('\u{1b}'),
        "{html}"
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#log b').length")
            .await,
        json!(0)
    );
    // Copied text has no line numbers: they come from CSS.
    let text = b
        .js("return document.getElementById('log').textContent")
        .await;
    let text = text.as_str().unwrap();
    assert!(
        text.starts_with("/bin/sh") && text.contains("red words plain <b>not bold</b>\nline two\n"),
        "{text}"
    );
    // The number of the line that says `what` (output, not the command header).
    let line_of = |what: &str| {
        format!(
            "var ls = document.querySelectorAll('#log .l'); for (var i = ls.length - 1; i >= 0; i--) \
             {{ if (ls[i].textContent === '{what}\\n') return parseInt(ls[i].id.slice(1), 10); }} return -1"
        )
    };
    let two = b.js(&line_of("line two")).await.as_i64().unwrap();
    let error = b
        .js(&line_of("error: something broke"))
        .await
        .as_i64()
        .unwrap();
    let five = b.js(&line_of("line five")).await.as_i64().unwrap();
    assert!(two > 1 && error == two + 1 && five == two + 3);

    // A range link marks its lines.
    b.goto(&format!("{log}#L{two}-L{}", two + 2)).await;
    b.wait_js(
        "three lines marked",
        &format!("return document.querySelectorAll('#log .l.sel').length === 3 && document.getElementById('L{two}').classList.contains('sel')"),
    )
    .await;

    // Search with next and previous (the header's command line matches too);
    // the whole log's matches, here all on its one page.
    b.type_into("#log-search", "line f").await;
    b.click("#log-next").await;
    b.wait_js(
        "the first match",
        "var hits = document.querySelectorAll('#log .l.hit'); return hits.length > 1 \
         && document.querySelector('#log .l.cur') === hits[0] \
         && document.getElementById('log-count').textContent === '1 of ' + hits.length",
    )
    .await;
    b.click("#log-prev").await;
    b.wait_js(
        "previous wraps to the last match",
        &format!(
            "return document.querySelector('#log .l.cur') === document.getElementById('L{five}')"
        ),
    )
    .await;
    b.screenshot("8-log-search").await;

    // Jump to the first error.
    b.click("#first-error").await;
    b.wait_js(
        "the first error line marked",
        &format!("return location.hash === '#L{error}' && document.getElementById('L{error}').classList.contains('sel')"),
    )
    .await;
    b.screenshot("9-log").await;

    // Timestamps on demand: the switch shows each line's time after the step's
    // start, the clock time on hover, and hides them again; copied text keeps
    // none of it.
    b.click("#log-times").await;
    b.wait_js(
        "the lines' times shown",
        "var p = document.getElementById('log'); var ts = p.querySelectorAll('.l .ts'); \
         return p.classList.contains('times') && ts.length > 0 \
           && ts.length === p.querySelectorAll('.l[data-t]').length \
           && getComputedStyle(ts[0]).display !== 'none'",
    )
    .await;
    let shown = b
        .js(&format!(
            "var t = document.querySelector('#L{two} .ts'); return [t.getAttribute('data-ts'), t.title]"
        ))
        .await;
    let elapsed = shown[0].as_str().unwrap();
    assert!(
        elapsed.len() == 10 && elapsed.starts_with("+00:") && elapsed.as_bytes()[6] == b'.',
        "{shown}"
    );
    assert!(
        shown[1]
            .as_str()
            .unwrap()
            .contains(" UTC (received by the master)"),
        "{shown}"
    );
    let text = b
        .js("return document.getElementById('log').textContent")
        .await;
    assert!(text.as_str().unwrap().starts_with("/bin/sh"), "{text}");
    b.screenshot("9b-log-timestamps").await;
    b.click("#log-times").await;
    b.wait_js(
        "the times hidden",
        "var p = document.getElementById('log'); return !p.classList.contains('times') \
           && getComputedStyle(p.querySelector('.l .ts')).display === 'none'",
    )
    .await;

    // A log of 100.5 MB: its first page paints at once, and it pages.
    let req = m
        .force("big-s1", autobot::engine::ForceRequest::default())
        .await;
    assert_eq!(m.wait_request(req).await.result.as_deref(), Some("success"));
    let big = format!("{base}/builders/big-s1/builds/1/steps/seq/logs/stdio");
    let t = Instant::now();
    b.goto(&big).await;
    let loaded = t.elapsed();
    let paint = b.first_paint().await;
    eprintln!("100 MB log: first contentful paint {paint:.0} ms, load {loaded:?}");
    assert!(paint > 0.0 && paint < 5_000.0, "first paint {paint} ms");
    let lines = b
        .js("return document.querySelectorAll('#log .l').length")
        .await;
    assert_eq!(lines, json!(2000));
    let html_len = b
        .js("return document.documentElement.outerHTML.length")
        .await;
    assert!(html_len.as_u64().unwrap() < 500_000, "{html_len}");
    // The output's line numbers follow the command's header lines.
    let one = b.js(&line_of("1")).await.as_i64().unwrap();
    assert!(one > 1, "{one}");
    // The last page holds the last number; a line of another page is found.
    b.click("#page-last").await;
    let last = one + 12_399_999;
    b.wait_js(
        "the last page",
        &format!("var l = document.getElementById('L{last}'); return !!l && l.textContent === '12400000\\n'"),
    )
    .await;
    let far = one + 7_654_320;
    b.goto(&format!("{big}#L{far}")).await;
    b.wait_js(
        "a line of another page, found and marked",
        &format!("var l = document.getElementById('L{far}'); return !!l && l.classList.contains('sel') && l.textContent === '7654321\\n'"),
    )
    .await;
    // The whole 100 MB log searched (the text is on one line only): from the
    // API (timed: a debug build here; bench/web.rs times the release one),
    // and from the first page's search box, which opens the line's page.
    let t = Instant::now();
    let r = web_common::get(
        m.master.htmlport(),
        "/api/v1/builders/big-s1/builds/1/steps/seq/logs/stdio/search?q=9876543",
    )
    .await;
    eprintln!("100 MB log: searched in {:?} (debug build)", t.elapsed());
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let near = one + 9_876_542;
    assert_eq!(v["matches"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["matches"][0]["line"], json!(near), "{v}");
    assert_eq!(v["more"], json!(false), "{v}");
    b.goto(&big).await;
    b.type_into("#log-search", "9876543\u{E007}").await;
    b.wait_js(
        "the 100 MB log's one match, on its page",
        &format!("var l = document.getElementById('L{near}'); return !!l && l.classList.contains('cur') \
           && document.getElementById('log-count').textContent === '1 of 1'"),
    )
    .await;

    // Keyboard: `e` on a log page jumps to its first error; `g c` opens the
    // console, `g w` the waterfall, `/` focuses the filter.
    b.goto(&log).await;
    b.keys("e").await;
    b.wait_js(
        "e: the first error",
        &format!("return location.hash === '#L{error}'"),
    )
    .await;
    b.keys("gc").await;
    b.wait_js(
        "g c: the console, a column per builder",
        "return location.pathname === '/console' && document.querySelectorAll('table.console th.builder').length === 2",
    )
    .await;
    b.keys("gw").await;
    b.wait_js(
        "g w: the waterfall",
        "return location.pathname === '/waterfall'",
    )
    .await;
    b.keys("?").await;
    b.wait_js(
        "?: the shortcuts",
        "return !document.getElementById('shortcuts').hidden",
    )
    .await;
    b.keys("/").await;
    b.wait_js(
        "/: the filter focused",
        "return document.activeElement && document.activeElement.name === 'branch'",
    )
    .await;

    // The waterfall: wide, on a phone, dark.
    b.goto(&format!("{base}/waterfall")).await;
    b.wait_js(
        "the waterfall with both builds",
        "return document.querySelectorAll('.build.success').length === 2 \
         && document.querySelectorAll('.build .icon').length === 2",
    )
    .await;
    b.screenshot("10-waterfall-wide").await;
    b.size(390, 844).await;
    b.goto(&format!("{base}/waterfall")).await;
    let scroll = b
        .js("var s = document.getElementById('waterfall-part'); return getComputedStyle(s).overflowX")
        .await;
    assert_eq!(scroll, json!("auto"));
    b.screenshot("11-waterfall-390px").await;
    b.size(1280, 900).await;
    b.color_scheme("dark").await;
    b.goto(&format!("{base}/waterfall")).await;
    let bg = b
        .js("return getComputedStyle(document.body).backgroundColor")
        .await;
    assert_eq!(bg, json!("rgb(22, 24, 29)"));
    b.screenshot("12-waterfall-dark").await;
    b.goto(&log).await;
    b.screenshot("13-log-dark").await;
}

const SEARCH_FACTORIES: &str = r#"
[pages]
type = shell
step.rows = awk 'BEGIN { for (i = 1; i <= 7000; i++) { if (i == 4500 || i == 4600 || i == 6500) print "zeb" "ra " i; else print "row " i } }'
"#;

/// Search covers the whole log: on page 1 of a four-page log, a term found
/// only on pages 3 and 4 (the command that printed it does not spell it) is
/// typed and Enter pressed: page 3 opens with the first match highlighted and
/// in view, "1 of 3"; next moves on that page, then to page 4; previous comes
/// back to page 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_searches_the_whole_log_across_pages() {
    let Some((chromium, driver)) = browser_tools() else {
        return;
    };
    let m = web_common::start(&master_ini(SEARCH_FACTORIES, "")).await;
    let _slave = m.slave().await;
    let base = format!("http://127.0.0.1:{}", m.master.htmlport());
    let req = m
        .force("pages-s1", autobot::engine::ForceRequest::default())
        .await;
    assert_eq!(m.wait_request(req).await.result.as_deref(), Some("success"));
    let text = m.log_text("pages-s1", 1, "rows").await;
    let hits: Vec<usize> = text
        .split('\n')
        .enumerate()
        .filter(|(_, l)| l.contains("zebra"))
        .map(|(i, _)| i + 1)
        .collect();
    let pages: Vec<usize> = hits.iter().map(|l| (l - 1) / 2000 + 1).collect();
    assert_eq!(pages, [3, 3, 4], "{hits:?}");
    let b = Browser::start(chromium, driver).await;
    let log = format!("{base}/builders/pages-s1/builds/1/steps/rows/logs/stdio");
    b.goto(&log).await;
    b.wait_js(
        "page 1 with the search box",
        "return document.getElementById('log').getAttribute('data-page') === '1' \
         && !document.getElementById('log-next').hidden \
         && document.getElementById('log-search').placeholder === 'search this log'",
    )
    .await;
    // The current match: on page `page`, line `line` marked and in view, the
    // count `k of 3`.
    let at = |page: usize, line: usize, k: usize| {
        format!(
            "var p = document.getElementById('log'); var l = document.getElementById('L{line}'); \
             if (!p || !l || p.getAttribute('data-page') !== '{page}') return false; \
             var r = l.getBoundingClientRect(); \
             return l.classList.contains('cur') && l.classList.contains('hit') \
               && document.querySelectorAll('#log .cur').length === 1 \
               && r.top >= 0 && r.bottom <= window.innerHeight \
               && location.hash === '#L{line}' \
               && document.getElementById('log-count').textContent === '{k} of 3' \
               && document.getElementById('log-search').value === 'zebra'"
        )
    };
    b.type_into("#log-search", "zebra\u{E007}").await;
    b.wait_js("Enter: the first match, on page 3", &at(3, hits[0], 1))
        .await;
    // Both of page 3's matches are highlighted.
    assert_eq!(
        b.js("return document.querySelectorAll('#log .hit').length")
            .await,
        json!(2)
    );
    b.screenshot("14-log-search-page-3").await;
    b.click("#log-next").await;
    b.wait_js("next: the second match, same page", &at(3, hits[1], 2))
        .await;
    b.click("#log-next").await;
    b.wait_js("next: the third match, on page 4", &at(4, hits[2], 3))
        .await;
    b.click("#log-prev").await;
    b.wait_js("previous: back to page 3", &at(3, hits[1], 2))
        .await;
    // Enter again goes on from the current match; past the last, it wraps.
    b.type_into("#log-search", "\u{E007}").await;
    b.wait_js("Enter: the third match", &at(4, hits[2], 3))
        .await;
    b.click("#log-next").await;
    b.wait_js("next past the last: the first", &at(3, hits[0], 1))
        .await;
    // A new term starts over; none found says so.
    b.js("var i = document.getElementById('log-search'); i.value = ''; i.dispatchEvent(new Event('input'))")
        .await;
    b.type_into("#log-search", "no such text\u{E007}").await;
    b.wait_js(
        "no matches",
        "return document.getElementById('log-count').textContent === 'no matches' \
         && document.querySelectorAll('#log .hit, #log .cur').length === 0",
    )
    .await;
}
