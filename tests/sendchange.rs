//! `autobot sendchange` (the real binary) against a real master's slaveport: the
//! Change it sends is stored and listed by `GET /api/v1/changes`; wrong
//! credentials are refused and store nothing, and a master without
//! `changeuser`/`changepassword` takes no Change at all; `.autobot/options` is found
//! from a nested directory under `$HOME`; and a missing `--master` or `--auth` says
//! how to give it.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "change_common/mod.rs"]
mod change_common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use change_common::{api_changes, finish, start, GitRepo};

/// Run `autobot sendchange ARGS` in `cwd` with `HOME=home` (off the async runtime).
async fn sendchange(args: &[&str], cwd: &Path, home: &Path, stdin: Option<&str>) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (cwd, home) = (cwd.to_path_buf(), home.to_path_buf());
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(engine_common::autobot_bin());
        cmd.arg("sendchange")
            .args(&args)
            .current_dir(&cwd)
            .env("HOME", &home)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The change credentials of the test masters (there is no default pair).
const CHANGE_KEYS: &str = "changeuser = hook\nchangepassword = s3cret\n";
const AUTH: &str = "hook:s3cret";

#[tokio::test(flavor = "multi_thread")]
async fn a_sent_change_is_stored_and_listed() {
    let repo = GitRepo::new();
    let m = start(&repo, CHANGE_KEYS).await;
    let home = tempfile::tempdir().unwrap();
    let master = format!("127.0.0.1:{}", m.master.slaveport());
    let out = sendchange(
        &[
            "--auth",
            AUTH,
            "--master",
            &master,
            "--username",
            "Ann <ann@example.org>",
            "--branch",
            "main",
            "--revision",
            "abc123",
            "--comments",
            "fix the frobnicator",
            "--category",
            "cat",
            "--repository",
            &repo.url(),
            "--project",
            "proj",
            "--when",
            "1700000000",
            "src/a.c",
            "b/c.h",
        ],
        home.path(),
        home.path(),
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("change 1 sent"),
        "{}",
        text(&out.stdout)
    );
    let list = api_changes(&m).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let c = &list[0];
    assert_eq!(c["who"], "Ann <ann@example.org>");
    assert_eq!(c["files"], serde_json::json!(["src/a.c", "b/c.h"]));
    assert_eq!(c["comments"], "fix the frobnicator");
    assert_eq!(c["revision"], "abc123");
    assert_eq!(c["branch"], "main");
    assert_eq!(c["when"], 1700000000);
    assert_eq!(c["repository"], repo.url());
    assert_eq!(c["category"], "cat");
    assert!(support::log_has(&["sendchange: change 1 by Ann"]));

    // Comments from standard input, the revision from a file; `when` is now.
    let rev = home.path().join("rev");
    std::fs::write(&rev, "def456\n").unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let out = sendchange(
        &[
            "-a",
            AUTH,
            "-m",
            &master,
            "-u",
            "Bob",
            "--revision-file",
            rev.to_str().unwrap(),
            "--logfile",
            "-",
        ],
        home.path(),
        home.path(),
        Some("line one\nline two\n"),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = api_changes(&m).await;
    assert_eq!(list.len(), 2);
    let c = &list[0];
    assert_eq!(c["who"], "Bob");
    assert_eq!(c["revision"], "def456");
    assert_eq!(c["comments"], "line one\nline two\n");
    assert_eq!(c["branch"], serde_json::Value::Null);
    assert_eq!(c["files"], serde_json::json!([]));
    assert!(c["when"].as_i64().unwrap() >= before);
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_refused_and_nothing_is_stored() {
    let repo = GitRepo::new();
    let m = start(&repo, "changeuser = hook\nchangepassword = s3cret\n").await;
    let home = tempfile::tempdir().unwrap();
    let master = format!("127.0.0.1:{}", m.master.slaveport());
    for auth in [
        "change:changepw",
        "hook:s3cre",
        "hook:s3cret-",
        "hooky:s3cret",
    ] {
        let out = sendchange(
            &[
                "--master",
                &master,
                "--username",
                "Eve",
                "--auth",
                auth,
                "f",
            ],
            home.path(),
            home.path(),
            None,
        )
        .await;
        assert!(!out.status.success(), "{auth} was accepted");
        let err = text(&out.stderr);
        assert!(
            err.contains("refused the change credentials") && err.contains("--auth"),
            "{err}"
        );
    }
    assert!(support::log_has(&[
        "refused sendchange",
        "wrong change user or password"
    ]));
    assert!(api_changes(&m).await.is_empty());

    // A slave's password on the change path is not a change password either.
    let out = sendchange(
        &[
            "--master",
            &master,
            "--username",
            "Eve",
            "--auth",
            "s1:pw-engine",
        ],
        home.path(),
        home.path(),
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(api_changes(&m).await.is_empty());

    let out = sendchange(
        &[
            "--master",
            &master,
            "--username",
            "Ok",
            "--auth",
            "hook:s3cret",
        ],
        home.path(),
        home.path(),
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(api_changes(&m).await.len(), 1);
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn options_file_is_found_from_a_nested_directory() {
    let repo = GitRepo::new();
    let m = start(&repo, CHANGE_KEYS).await;
    let home = tempfile::tempdir().unwrap();
    let nested = home.path().join("src/project/sub/dir");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::create_dir_all(home.path().join(".autobot")).unwrap();
    std::fs::write(
        home.path().join(".autobot/options"),
        format!(
            "# Buildbot-style options\nmaster = '127.0.0.1:{}'\nusername = \"Opt User <o@x>\"\nauth = '{AUTH}'\n",
            m.master.slaveport()
        ),
    )
    .unwrap();
    // It holds a password: only its owner may read it.
    std::fs::set_permissions(
        home.path().join(".autobot/options"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = sendchange(&["--branch", "main", "x.c"], &nested, home.path(), None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = api_changes(&m).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["who"], "Opt User <o@x>");
    assert_eq!(list[0]["files"], serde_json::json!(["x.c"]));

    // A nearer options file wins; the command line beats both.
    std::fs::create_dir_all(home.path().join("src/project/.autobot")).unwrap();
    std::fs::write(
        home.path().join("src/project/.autobot/options"),
        format!(
            "master = 127.0.0.1:{}\nusername = Near\nauth = {AUTH}\n",
            m.master.slaveport()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        home.path().join("src/project/.autobot/options"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = sendchange(&[], &nested, home.path(), None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sendchange(&["--username", "Cli"], &nested, home.path(), None).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let who: Vec<String> = api_changes(&m)
        .await
        .iter()
        .map(|c| c["who"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(who, vec!["Cli", "Near", "Opt User <o@x>"]);
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_master_says_both_ways_to_give_it() {
    let home = tempfile::tempdir().unwrap();
    let out = sendchange(
        &["--username", "Ann", "f.c"],
        home.path(),
        home.path(),
        None,
    )
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--master HOST:PORT") && err.contains(".autobot/options"),
        "{err}"
    );

    // No credentials: there is no default pair; both ways to give them are named.
    let port = engine_common::free_port();
    let out = sendchange(
        &[
            "--master",
            &format!("127.0.0.1:{port}"),
            "--username",
            "Ann",
        ],
        home.path(),
        home.path(),
        None,
    )
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--auth USER:PASS") && err.contains("`auth = USER:PASS` in .autobot/options"),
        "{err}"
    );

    // Nothing listening: a clear error, not a hang.
    let out = sendchange(
        &[
            "--master",
            &format!("127.0.0.1:{port}"),
            "--username",
            "Ann",
            "--auth",
            AUTH,
        ],
        home.path(),
        home.path(),
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot reach the master"),
        "{}",
        text(&out.stderr)
    );
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Send one text message and read the master's JSON answer.
async fn ask(ws: &mut Ws, text: &str) -> serde_json::Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(text)).await.unwrap();
    loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_connection_carries_several_changes_and_bad_ones_get_an_error() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let repo = GitRepo::new();
    let m = start(&repo, CHANGE_KEYS).await;
    let url = format!("ws://127.0.0.1:{}/change", m.master.slaveport());
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        change_common::basic("hook", "s3cret").parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let r = ask(&mut ws, r#"{"whom": "typo"}"#).await;
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `whom`"),
        "{r}"
    );
    let r = ask(&mut ws, r#"{"files": ["a"]}"#).await;
    assert!(r["error"].as_str().unwrap().contains("needs `who`"), "{r}");
    let r = ask(&mut ws, r#"{"who": "Ann", "branch": "main"}"#).await;
    assert_eq!(r["change"]["who"], "Ann");
    let r = ask(&mut ws, r#"{"who": "Bob"}"#).await;
    assert_eq!(r["change"]["id"], 2);
    ws.close(None).await.unwrap();
    assert_eq!(api_changes(&m).await.len(), 2);
    assert!(support::log_has(&[
        "sendchange from hook@",
        "change refused"
    ]));

    // Without credentials the upgrade itself is refused.
    let err = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(support::log_has(&["refused sendchange", "no credentials"]));
    finish(m, repo).await;
}

/// A master whose master.ini sets no changeuser/changepassword takes no Change,
/// whatever the credentials (the manual's change/changepw, empty ones), and says
/// so to the client and in its log, with how to enable them.
#[tokio::test(flavor = "multi_thread")]
async fn without_change_credentials_no_change_is_taken() {
    let repo = GitRepo::new();
    let m = start(&repo, "").await;
    let home = tempfile::tempdir().unwrap();
    let master = format!("127.0.0.1:{}", m.master.slaveport());
    for auth in ["change:changepw", ":", "hook:s3cret"] {
        let out = sendchange(
            &[
                "--master",
                &master,
                "--username",
                "Eve",
                "--auth",
                auth,
                "f",
            ],
            home.path(),
            home.path(),
            None,
        )
        .await;
        assert!(!out.status.success(), "{auth} was accepted");
        let err = text(&out.stderr);
        assert!(
            err.contains("sendchange and POST /api/v1/changes are refused: the master's master.ini sets no changeuser and changepassword in [:master:]; to accept Changes add both"),
            "{err}"
        );
        assert!(!err.contains(&m.dir.path().display().to_string()), "{err}");
    }
    for auth in [
        None,
        Some(change_common::basic("change", "changepw")),
        Some(change_common::basic("", "")),
    ] {
        let mut headers: Vec<(&str, String)> =
            auth.into_iter().map(|a| ("Authorization", a)).collect();
        headers.push(("Content-Type", "application/json".to_string()));
        let (status, _, _) = change_common::http(
            m.master.htmlport(),
            "POST",
            "/api/v1/changes",
            &headers,
            br#"{"who": "Eve"}"#,
        )
        .await;
        assert_eq!(status, 401);
    }
    assert!(support::log_has(&[
        "refused sendchange",
        "sets no changeuser and changepassword"
    ]));
    assert!(api_changes(&m).await.is_empty());
    finish(m, repo).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_over_a_cap_is_refused_with_the_field_and_the_cap() {
    let repo = GitRepo::new();
    let m = start(&repo, CHANGE_KEYS).await;
    let home = tempfile::tempdir().unwrap();
    let master = format!("127.0.0.1:{}", m.master.slaveport());
    let log = home.path().join("message");
    std::fs::write(&log, "m".repeat(2 << 20)).unwrap();
    let long_name = "d/".repeat(2100);
    for (extra, want) in [
        (
            vec!["--logfile", log.to_str().unwrap()],
            "`comments` is 2097152 bytes; autobot takes at most 1048576",
        ),
        (
            vec![long_name.as_str()],
            "`files[0]` is 4200 bytes; autobot takes at most 4096",
        ),
        (
            vec!["--category", "a\u{7}b"],
            "`category` \"a\\u{7}b\" holds a control character",
        ),
    ] {
        let mut args = vec!["--auth", AUTH, "--master", &master, "--username", "Ann"];
        args.extend(extra);
        let out = sendchange(&args, home.path(), home.path(), None).await;
        assert!(!out.status.success(), "{want}: accepted");
        let err = text(&out.stderr);
        assert!(
            err.contains("the master refused the Change: ") && err.contains(want),
            "{want}: {err}"
        );
    }
    assert!(api_changes(&m).await.is_empty());
    finish(m, repo).await;
}
