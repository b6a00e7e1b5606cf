//! Build secrets (`secretsDir`, `%(secret:NAME)s`) end to end, on an autobot slave
//! and on a stock buildbot-worker: a step gets two secrets (in its argv and its
//! environment), prints them, their base64 (standard, URL-safe, at each
//! alignment) and URL-encoded forms, and a multi-line secret split across two
//! output chunks — the boundary forced without sleeps: the step prints the first
//! line with a marker, the test waits until the marker is stored (so that chunk
//! has reached the master), then lets the step go on through a FIFO. The stored
//! log, the live SSE tail, the log page, its text, the JSON API and the failure
//! mail (a real SMTP server) show `<secret:NAME>` and never a value; no text or
//! blob column of any table of `state.sqlite` holds one; nor does the master's
//! log. An untrusted build (`pr_from_fork = true`) fails its step clearly; a
//! secrets directory or file others can read, and an unknown secret, are refused
//! by `checkconfig`.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "notify_common/mod.rs"]
#[allow(unused_imports)]
mod notify_common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use autobot::engine::ForceRequest;
use engine_common::*;
use notify_common::*;

/// A one-line secret with characters URL encoding changes.
const TOKEN: &str = "tok/9f3a+7c21 PLAIN?x=1";
/// A multi-line secret (as a key file is): output only ever breaks between
/// lines, so this is the secret a chunk boundary can split.
const KEY: &str = "key-line-one-5b8e\nkey-line-two-77d1";

/// Prints every form of both secrets, then the second line of KEY only once
/// the FIFO given as argv[2] is opened by the test; fails, so the mail quotes
/// the log.
const LEAK_PY: &str = r#"
import base64, os, sys, urllib.parse
t = os.environ["T"]
assert sys.argv[1] == t, "argv and env differ"
b = t.encode()
out = sys.stdout
out.write("plain %s\n" % t)
out.write("b64 %s\n" % base64.b64encode(b).decode())
out.write("b64url %s\n" % base64.urlsafe_b64encode(b).decode().rstrip("="))
for p in (b"x", b"xy"):
    out.write("b64 at %d %s\n" % (len(p), base64.b64encode(p + b + b"and more").decode()))
out.write("url %s\n" % urllib.parse.quote(t, safe=""))
out.write("form %s\n" % urllib.parse.quote_plus(t))
sys.stderr.write("stderr %s\n" % t)
k = os.environ["K"]
first, second = k.split("\n")
out.write("MARKER-CHUNK-1\n" + "." * 300 + "\n" + first + "\n")
out.flush()
with open(sys.argv[2]) as f:
    f.read()
out.write(second + "\nafter the key\n")
out.flush()
sys.exit(3)
"#;

fn secrets_dir(master: &Path) {
    let d = master.join("secrets");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("TOKEN"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(d.join("KEY"), format!("{KEY}\n")).unwrap();
    for f in ["TOKEN", "KEY"] {
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// Every string that must never be seen: each form of each secret, and each
/// line of the multi-line one.
fn forbidden() -> Vec<String> {
    let mut out = autobot::secrets::forms(TOKEN);
    out.extend(autobot::secrets::forms(KEY));
    out.extend(KEY.lines().map(String::from));
    out.push("9f3a+7c21".into());
    out
}

#[track_caller]
fn assert_clean(what: &str, text: &str) {
    for f in forbidden() {
        assert!(!text.contains(&f), "{what} shows {f:?}:\n{text}");
    }
}

fn factories(script: &Path, fifo: &Path) -> String {
    format!(
        "[leak]\ntype = shell\nmailMode = failing\nrecipients = ops@example.org\n\
         step.leak = python3 {} %(secret:TOKEN)s {}\nstep.leak.argv = true\n\
         step.leak.env.T = %(secret:TOKEN)s\nstep.leak.env.K = %(secret:KEY)s\n\n\
         [fork]\ntype = shell\nstep.use = echo \"%(secret:TOKEN)s\"\n\n",
        script.display(),
        fifo.display()
    )
}

async fn file_has(path: &Path, needle: &str) -> bool {
    tokio::fs::read_to_string(path)
        .await
        .is_ok_and(|t| t.contains(needle))
}

/// Every text and blob column of every table of the database, as bytes.
fn database_bytes(db: &Path) -> Vec<u8> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let cols: Vec<String> = c
            .prepare(&format!("PRAGMA table_info(\"{t}\")"))
            .unwrap()
            .query_map([], |r| r.get(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for col in cols {
            let mut st = c
                .prepare(&format!("SELECT CAST(\"{col}\" AS BLOB) FROM \"{t}\""))
                .unwrap();
            let rows = st
                .query_map([], |r| r.get::<_, Option<Vec<u8>>>(0))
                .unwrap();
            for v in rows.flatten().flatten() {
                out.extend_from_slice(&v);
                out.push(b'\n');
            }
        }
    }
    out
}

async fn run_leak(slave: support::Impl) {
    support::keep_sqlite("every text and blob column of state.sqlite is searched for the secrets");
    if !need_smtp() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let script = root.path().join("leak.py");
    std::fs::write(&script, LEAK_PY).unwrap();
    let fifo = root.path().join("go.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let smtp_port = free_port();
    let smtp = SmtpServer::start(
        &root.path().join("smtp"),
        smtp_port,
        SmtpMode::Plain,
        None,
        None,
    );
    support::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    secrets_dir(dir.path());
    let ini = master_ini(
        &factories(&script, &fifo),
        &format!(
            "secretsDir = secrets\nprojectName = P\nmailFrom = ci@example.org\n\
             smtpHost = 127.0.0.1\nsmtpPort = {smtp_port}\n"
        ),
    );
    support::write_master_ini(dir.path(), ini);
    let master = start_master(dir.path(), Duration::from_secs(30)).await;
    let m = EngineMaster { dir, master };
    let sdir = m.dir.path().join("slave");
    let _slave = match slave
        .start(&sdir, m.master.slaveport(), SLAVE, PASSWORD)
        .await
    {
        Ok(s) => s,
        Err(why) => {
            support::skip(&why);
            return;
        }
    };
    m.master
        .registry()
        .wait_connected(SLAVE, DEADLINE)
        .await
        .expect("slave connects");

    let builder = format!("leak-{SLAVE}");
    let id = m
        .force(
            &builder,
            ForceRequest {
                reason: "secrets".into(),
                ..Default::default()
            },
        )
        .await;
    // The first chunk, with the first line of KEY, is stored: the master has it.
    let log_file = loop {
        if let Ok(Some(f)) = m.master.db().log_file(&builder, 1, "leak", "stdio").await {
            break f.path;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    wait_until("the first chunk is stored", || {
        file_has(&log_file, "MARKER-CHUNK-1")
    })
    .await;
    let stored = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        !stored.contains("key-line-two"),
        "the second line came too early"
    );
    // The live tail, from the start, until the step ends.
    let hp = m.master.htmlport();
    let log_url = autobot::links::log_path(&builder, 1, "leak", "stdio");
    let tail_url = format!("{log_url}/tail");
    let sse = tokio::spawn(async move { support::http_get(hp, &tail_url).await });
    let fifo2 = fifo.clone();
    tokio::task::spawn_blocking(move || {
        drop(std::fs::OpenOptions::new().write(true).open(fifo2).unwrap())
    })
    .await
    .unwrap();
    let req = m.wait_request(id).await;
    assert_eq!(req.result.as_deref(), Some("failure"));

    let log = m.log_text(&builder, 1, "leak").await;
    assert_clean("the stored log", &log);
    for line in [
        "plain <secret:TOKEN>\n",
        "b64 <secret:TOKEN>\n",
        "b64url <secret:TOKEN>\n",
        "url <secret:TOKEN>\n",
        "form <secret:TOKEN>\n",
        "stderr <secret:TOKEN>\n",
        "<secret:KEY>\nafter the key\n",
    ] {
        assert!(log.contains(line), "no {line:?} in\n{log}");
    }
    assert!(log.matches("<secret:TOKEN>").count() >= 9, "{log}");
    // The key split across two chunks is found whole (each of its lines alone
    // would be redacted too, as `<secret:KEY>` twice).
    assert!(!log.contains("<secret:KEY>\n<secret:KEY>"), "{log}");
    let (status, sse_body) = sse.await.unwrap();
    assert_eq!(status, 200);
    assert!(sse_body.contains("<secret:KEY>"), "{sse_body}");
    assert_clean("the live tail", &sse_body);
    for (path, is_log) in [
        (log_url.clone(), true),
        (format!("{log_url}/text"), true),
        (
            format!("/api/v1/builders/{builder}/builds/1/steps/leak/logs/stdio"),
            true,
        ),
        (format!("/api/v1/builders/{builder}/builds/1"), false),
        (autobot::links::build_path(&builder, 1), false),
    ] {
        let (status, body) = support::http_get(hp, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!is_log || body.contains("secret:KEY"), "{path}: {body}");
        assert_clean(&path, &body);
    }

    let mails = smtp.wait_mails(1).await;
    let body = mails[0]["body"].as_str().unwrap().replace("\r\n", "\n");
    assert!(body.contains("<secret:KEY>"), "{body}");
    assert_clean("the mail", &body);

    // An untrusted build gets no secret: its step fails saying why.
    let fork = format!("fork-{SLAVE}");
    let id = m
        .force(
            &fork,
            ForceRequest {
                reason: "fork".into(),
                properties: BTreeMap::from([("pr_from_fork".to_string(), "true".to_string())]),
                ..Default::default()
            },
        )
        .await;
    let req = m.wait_request(id).await;
    assert_ne!(req.result.as_deref(), Some("success"));
    let b = m.build(&fork, 1).await;
    let text = format!("{:?}", b.steps[0]);
    assert!(
        text.contains("not given to this build") && text.contains("TOKEN"),
        "{text}"
    );
    assert!(m
        .log_text(&fork, 1, "use")
        .await
        .contains("pr_from_fork = true"));
    // The same factory, trusted, gets it (and shows it redacted).
    let id = m.force(&fork, ForceRequest::default()).await;
    assert_eq!(m.wait_request(id).await.result.as_deref(), Some("success"));
    assert!(m
        .log_text(&fork, 2, "use")
        .await
        .contains("<secret:TOKEN>\n"));

    // Nothing the master keeps holds a value.
    let db =
        String::from_utf8_lossy(&database_bytes(&m.dir.path().join("state.sqlite"))).into_owned();
    assert!(
        db.contains("not given to this build"),
        "the database has the steps' text"
    );
    assert_clean("state.sqlite", &db);
    for f in forbidden() {
        assert!(!support::log_has(&[&f]), "the master's log shows {f:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_everywhere_on_an_autobot_slave() {
    run_leak(support::Impl::Autobot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_everywhere_on_a_buildbot_worker() {
    run_leak(support::Impl::BuildbotWorker).await;
}

fn checkconfig(dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(autobot_bin())
        .arg("checkconfig")
        .arg(dir)
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
}

#[test]
fn checkconfig_refuses_open_permissions_and_unknown_secrets() {
    let dir = tempfile::tempdir().unwrap();
    secrets_dir(dir.path());
    let ini = |step: &str| {
        master_ini(
            &format!("[f]\ntype = shell\nstep.s = {step}\n"),
            "secretsDir = secrets\n",
        )
    };
    support::write_master_ini(dir.path(), ini("echo %(secret:TOKEN)s"));
    let (ok, out) = checkconfig(dir.path());
    assert!(ok, "{out}");
    assert!(
        out.contains("secrets: 2") && out.contains("KEY TOKEN"),
        "{out}"
    );
    assert!(!out.contains("9f3a"), "{out}");

    // A secret that is not there, named with the file that would hold it.
    support::write_master_ini(dir.path(), ini("echo %(secret:NOPE)s"));
    let (ok, out) = checkconfig(dir.path());
    assert!(!ok);
    assert!(
        out.contains("\"NOPE\"") && out.contains("secrets/NOPE") && out.contains("master.ini:"),
        "{out}"
    );

    // Readable by others: the file, then the directory, with the chmod to run.
    support::write_master_ini(dir.path(), ini("echo %(secret:TOKEN)s"));
    let token = dir.path().join("secrets/TOKEN");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = checkconfig(dir.path());
    assert!(!ok);
    assert!(
        out.contains("secrets/TOKEN") && out.contains("chmod 600"),
        "{out}"
    );
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(
        dir.path().join("secrets"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (ok, out) = checkconfig(dir.path());
    assert!(!ok);
    assert!(out.contains("chmod 700"), "{out}");
    assert!(!out.contains("9f3a"), "{out}");
}
