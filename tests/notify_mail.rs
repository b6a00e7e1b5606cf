//! Mail against a real SMTP server (aiosmtpd, started by the test): which
//! builds are mailed in each `mailMode` (failing, passing, problem, change,
//! all), per-factory `recipients`, interested users through `mailLookup`, the
//! message itself parsed with Python's `email` package (headers, recipients,
//! body with the build's page, Changes, Steps and the failing log's tail), the
//! notification's state on the API and the build page, STARTTLS with AUTH,
//! implicit TLS, a refused login given up, the server down then up (the mail
//! arrives), a master `kill -9`ed before the mail went out (it arrives after the
//! restart, same Message-ID), and a slave missing longer than its
//! `missingTimeout`.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "notify_common/mod.rs"]
mod notify_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use autobot::db::changes::NewChange;
use autobot::db::requests::{NewBuildSet, NewSourceStamp};
use autobot::db::Db;
use autobot::engine::ForceRequest;
use engine_common::*;
use notify_common::*;

/// One step: 100 numbered lines, a byte that is not UTF-8, then the exit code
/// the build's `code` property says.
const STEP: &str = r#"step.out = sh -c 'for i in $(seq 1 100); do echo "out line $i"; done; printf "bad \377 byte\n"; exit "$AUTOBOT_PROP_code"'"#;

fn factories() -> String {
    let mut s = String::new();
    s.push_str(&format!("[all]\ntype = shell\n{STEP}\n\n"));
    for mode in ["failing", "passing", "problem", "change"] {
        s.push_str(&format!(
            "[{mode}]\ntype = shell\n{STEP}\nmailMode = {mode}\nrecipients = {mode}@example.org\n\n"
        ));
    }
    s
}

fn smtp_keys(port: u16) -> String {
    format!(
        "projectName = Ünïcode Project\nbuildbotURL = http://ci.example.org/\n\
         recipients = team@example.org\nmailLookup = example.com\n\
         mailFrom = CI <ci@example.org>\nsmtpHost = 127.0.0.1\nsmtpPort = {port}\n"
    )
}

fn force(code: i32) -> ForceRequest {
    ForceRequest {
        reason: format!("exit {code}"),
        who: Some("tester".into()),
        properties: BTreeMap::from([("code".to_string(), code.to_string())]),
        ..Default::default()
    }
}

async fn run(m: &EngineMaster, builder: &str, code: i32) {
    let id = m.force(builder, force(code)).await;
    m.wait_request(id).await;
}

/// The notifications of a build once every one of them is sent.
async fn wait_sent(
    db: &Db,
    builder: &str,
    number: i64,
) -> Vec<autobot::db::notifications::NotificationRow> {
    wait_until("the build's notifications are sent", || {
        let db = db.clone();
        let builder = builder.to_string();
        async move {
            let n = db.build_notifications(&builder, number).await.unwrap();
            !n.is_empty() && n.iter().all(|n| n.state == "sent")
        }
    })
    .await;
    db.build_notifications(builder, number).await.unwrap()
}

fn subjects(mails: &[serde_json::Value]) -> Vec<String> {
    mails
        .iter()
        .map(|m| header(m, "subject").to_string())
        .collect()
}

fn set(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_recipients_interested_users_and_the_message() {
    if !need_smtp() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = SmtpServer::start(&root.path().join("smtp"), port, SmtpMode::Plain, None, None);
    let m = EngineMaster::start(
        &master_ini(&factories(), &smtp_keys(port)),
        Duration::from_secs(30),
    )
    .await;
    let _slave = m.slave().await;

    // A build with two Changes: one author with an address, one without (made
    // an address by mailLookup). It fails, so the mail quotes its log.
    let db = m.master.db().clone();
    let c1 = db
        .add_change(NewChange {
            who: "Jörg Müller <joerg@example.org>".into(),
            files: vec!["src/a.c".into(), "README".into()],
            comments: "fix the frobnicator\nsecond line".into(),
            revision: Some("r1".into()),
            branch: Some("main".into()),
            when: 1_700_000_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let c2 = db
        .add_change(NewChange {
            who: "alice".into(),
            files: vec!["src/b.c".into()],
            comments: "tune the widget".into(),
            revision: Some("abc123".into()),
            branch: Some("main".into()),
            when: 1_700_000_100,
            ..Default::default()
        })
        .await
        .unwrap();
    let s = m
        .engine()
        .submit(NewBuildSet {
            reason: "two changes arrived".into(),
            scheduler: "test".into(),
            properties: BTreeMap::from([("code".to_string(), "1".to_string())]),
            sourcestamp: NewSourceStamp {
                branch: Some("main".into()),
                revision: Some("abc123".into()),
                changes: vec![c1, c2],
                ..Default::default()
            },
            builders: vec!["all-s1".into()],
            priority: 0,
        })
        .await
        .unwrap();
    m.wait_request(s.requests[0].1).await;
    let notes = wait_sent(&db, "all-s1", 1).await;
    let mails = smtp.wait_mails(1).await;
    let mail = &mails[0];
    assert_eq!(
        header(mail, "subject"),
        "autobot failure in Ünïcode Project on all-s1, build 1"
    );
    assert!(header(mail, "from").contains("ci@example.org"), "{mail:#}");
    let want: BTreeSet<String> = ["team@example.org", "joerg@example.org", "alice@example.com"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(set(&mail["to"]), want);
    assert_eq!(set(&mail["envelope_to"]), want);
    assert_eq!(mail["envelope_from"], "ci@example.org");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].kind, "mail");
    assert_eq!(
        Some(header(mail, "message-id")),
        notes[0].message_id.as_deref(),
        "the stored Message-ID is the one sent"
    );
    assert!(header(mail, "message-id").ends_with("@example.org>"));
    assert!(!header(mail, "date").is_empty());
    assert_eq!(header(mail, "mime-version"), "1.0");
    assert_eq!(mail["content_type"], "text/plain");
    assert_eq!(mail["charset"], "utf-8");
    for h in ["subject", "from", "to", "date", "message-id"] {
        assert_eq!(mail["header_count"][h], 1, "one {h} header");
    }
    let body = &mail["body"].as_str().unwrap().replace("\r\n", "\n");
    for part in [
        "http://ci.example.org/builders/all-s1/builds/1",
        "Buildslave for this Build: s1",
        "Build Reason: two changes arrived",
        "Build Source Stamp: [branch main] abc123",
        "Blamelist: Jörg Müller <joerg@example.org>, alice",
        "Revision: r1",
        "Author: Jörg Müller <joerg@example.org>",
        "    fix the frobnicator\n    second line",
        "    src/a.c\n    README",
        "tune the widget",
        "Steps:",
        "The last 40 lines of the log stdio of step out:",
        "  out line 100\n",
        "  bad \u{fffd} byte\n",
    ] {
        assert!(body.contains(part), "no {part:?} in the body:\n{body}");
    }
    // The tail: 40 lines (the step's last output lines and its end header).
    let tail = body
        .split("The last 40 lines of the log stdio of step out:\n\n")
        .nth(1)
        .unwrap();
    let tail: Vec<&str> = tail.split("\n\n").next().unwrap().lines().collect();
    assert_eq!(tail.len(), 40, "{tail:#?}");
    assert!(!body.contains("  out line 55\n"), "only 40 lines:\n{body}");
    assert!(
        body.lines()
            .any(|l| l.contains("out") && l.contains("failure")),
        "{body}"
    );

    // The API and the build page show it.
    let (status, json) =
        support::http_get(m.master.htmlport(), "/api/v1/builders/all-s1/builds/1").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["notifications"][0]["state"], "sent", "{v:#}");
    assert_eq!(v["notifications"][0]["kind"], "mail");
    assert_eq!(v["notifications"][0]["attempts"], 1);
    let (status, page) = support::http_get(m.master.htmlport(), "/builders/all-s1/builds/1").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Notifications") && page.contains("notify-sent"),
        "{page}"
    );

    // The modes: results success, failure, failure, success on each builder.
    for code in [0, 1, 1, 0] {
        for b in ["failing-s1", "passing-s1", "problem-s1", "change-s1"] {
            run(&m, b, code).await;
        }
    }
    // A last build on `all`: once its mail is in, every earlier one is.
    run(&m, "all-s1", 0).await;
    let mails = smtp.wait_mails(9).await;
    let got: BTreeSet<String> = subjects(&mails).into_iter().collect();
    let p = "Ünïcode Project";
    let want: BTreeSet<String> = [
        format!("autobot failure in {p} on all-s1, build 1"),
        format!("autobot success in {p} on all-s1, build 2"),
        format!("autobot failure in {p} on failing-s1, build 2"),
        format!("autobot failure in {p} on failing-s1, build 3"),
        format!("autobot success in {p} on passing-s1, build 1"),
        format!("autobot success in {p} on passing-s1, build 4"),
        format!("autobot failure in {p} on problem-s1, build 2"),
        format!("autobot failure in {p} on change-s1, build 2"),
        format!("autobot success in {p} on change-s1, build 4"),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    assert_eq!(mails.len(), 9, "no mail twice: {:#?}", subjects(&mails));
    for mail in &mails {
        let s = header(mail, "subject");
        let to = set(&mail["to"]);
        let b = s.split(" on ").nth(1).unwrap().split('-').next().unwrap();
        let want = if b == "all" {
            "team@example.org".to_string()
        } else {
            format!("{b}@example.org")
        };
        assert!(
            to.contains(&want) && (b == "all" || to.len() == 1),
            "{s}: {to:?}"
        );
    }
    // Builds not mailed have no notification rows.
    assert!(db
        .build_notifications("failing-s1", 1)
        .await
        .unwrap()
        .is_empty());
    assert!(db
        .build_notifications("problem-s1", 3)
        .await
        .unwrap()
        .is_empty());
}

/// STARTTLS required by the server, with AUTH; the server's certificate from a
/// private CA given as `smtpCA`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_auth() {
    if !need_smtp() || !need_openssl() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let certs = make_certs(&root.path().join("certs"), "127.0.0.1", "IP:127.0.0.1");
    let port = free_port();
    let smtp = SmtpServer::start(
        &root.path().join("smtp"),
        port,
        SmtpMode::StartTls,
        Some(&certs),
        Some("ci:s3cret-pw"),
    );
    let ini = master_ini(
        &format!("[all]\ntype = shell\n{STEP}\n"),
        &format!(
            "recipients = ops@example.org\nsmtpHost = 127.0.0.1\nsmtpPort = {port}\n\
             smtpTls = starttls\nsmtpCA = ca.pem\nsmtpUser = ci\nsmtpPassword = s3cret-pw\n"
        ),
    );
    support::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&certs.ca, dir.path().join("ca.pem")).unwrap();
    support::write_master_ini(dir.path(), ini);
    let master = start_master(dir.path(), Duration::from_secs(30)).await;
    let m = EngineMaster { dir, master };
    let _slave = m.slave().await;
    run(&m, "all-s1", 0).await;
    let mails = smtp.wait_mails(1).await;
    assert_eq!(mails[0]["tls"], true, "{:#}", mails[0]);
    assert_eq!(mails[0]["auth"], "ci");
    assert_eq!(
        set(&mails[0]["envelope_to"]),
        BTreeSet::from(["ops@example.org".to_string()])
    );
    assert_eq!(header(&mails[0], "from"), "autobot@localhost");
    let notes = wait_sent(m.master.db(), "all-s1", 1).await;
    assert_eq!(notes[0].attempts, 1);
    support::wait_log(&["mail", "sent (attempt 1)", "250"]).await;
}

/// Implicit TLS (`smtpTls = tls`); a login the server refuses is given up at
/// once (a permanent answer) and shown so; after a reconfig with the right
/// password the next build's mail goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_and_a_refused_login_is_given_up() {
    if !need_smtp() || !need_openssl() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let certs = make_certs(&root.path().join("certs"), "127.0.0.1", "IP:127.0.0.1");
    let port = free_port();
    let smtp = SmtpServer::start(
        &root.path().join("smtp"),
        port,
        SmtpMode::Implicit,
        Some(&certs),
        Some("ci:right-pw"),
    );
    let ini = |pw: &str| {
        master_ini(
            &format!("[all]\ntype = shell\n{STEP}\n"),
            &format!(
                "recipients = ops@example.org\nsmtpHost = 127.0.0.1\nsmtpPort = {port}\n\
                 smtpTls = tls\nsmtpCA = ca.pem\nsmtpUser = ci\nsmtpPassword = {pw}\n"
            ),
        )
    };
    support::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&certs.ca, dir.path().join("ca.pem")).unwrap();
    support::write_master_ini(dir.path(), ini("wrong-pw"));
    let master = start_master(dir.path(), Duration::from_secs(30)).await;
    let m = EngineMaster { dir, master };
    let _slave = m.slave().await;
    run(&m, "all-s1", 0).await;
    let db = m.master.db().clone();
    wait_until("the mail is given up", || {
        let db = db.clone();
        async move {
            let n = db.build_notifications("all-s1", 1).await.unwrap();
            n.first().is_some_and(|n| n.state == "given up")
        }
    })
    .await;
    let n = db.build_notifications("all-s1", 1).await.unwrap();
    assert!(
        n[0].last_error.as_deref().unwrap_or("").contains("535"),
        "{n:?}"
    );
    let (_, json) =
        support::http_get(m.master.htmlport(), "/api/v1/builders/all-s1/builds/1").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["notifications"][0]["state"], "given up");
    assert!(v["notifications"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("535"));

    support::write_master_ini(m.dir.path(), ini("right-pw"));
    m.master.reconfig().await.unwrap();
    run(&m, "all-s1", 0).await;
    let mails = smtp.wait_mails(1).await;
    assert_eq!(mails[0]["tls"], true);
    assert_eq!(mails[0]["auth"], "ci");
    assert!(header(&mails[0], "subject").contains("all-s1, build 2"));
    wait_sent(&db, "all-s1", 2).await;
}

/// The SMTP server is down when the build ends: the mail waits, retrying, and
/// arrives once the server is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_then_up() {
    if !need_smtp() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let m = EngineMaster::start(
        &master_ini(
            &format!("[all]\ntype = shell\n{STEP}\n"),
            &format!("recipients = ops@example.org\nsmtpHost = 127.0.0.1\nsmtpPort = {port}\n"),
        ),
        Duration::from_secs(30),
    )
    .await;
    let _slave = m.slave().await;
    run(&m, "all-s1", 1).await;
    let db = m.master.db().clone();
    wait_until("the mail is retrying", || {
        let db = db.clone();
        async move {
            let n = db.build_notifications("all-s1", 1).await.unwrap();
            n.first()
                .is_some_and(|n| n.state == "retrying" && n.last_error.is_some())
        }
    })
    .await;
    let n = db.build_notifications("all-s1", 1).await.unwrap();
    assert!(n[0].next_at.is_some(), "{n:?}");
    let (_, json) =
        support::http_get(m.master.htmlport(), "/api/v1/builders/all-s1/builds/1").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["notifications"][0]["state"], "retrying", "{v:#}");
    support::wait_log(&["mail", "failed (attempt 1), retrying in 5 s"]).await;

    let smtp = SmtpServer::start(&root.path().join("smtp"), port, SmtpMode::Plain, None, None);
    let mails = smtp.wait_mails(1).await;
    assert!(header(&mails[0], "subject").contains("failure"));
    assert_eq!(
        Some(header(&mails[0], "message-id")),
        n[0].message_id.as_deref()
    );
    let notes = wait_sent(&db, "all-s1", 1).await;
    assert!(notes[0].attempts >= 2, "{notes:?}");
    assert_eq!(smtp.mails().len(), 1);
}

/// `kill -9` of the master after the build ended and before its mail went out
/// (the server is down then): after the restart the mail arrives, with the
/// Message-ID it was given before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_killed_before_the_mail_went_out_still_mails() {
    if !need_smtp() {
        return;
    }
    support::capture_logs();
    let root = tempfile::tempdir().unwrap();
    let mdir = root.path().join("master");
    std::fs::create_dir_all(&mdir).unwrap();
    let (sp, hp, smtp_port) = (free_port(), free_port(), free_port());
    let ini = master_ini(
        &format!("[all]\ntype = shell\n{STEP}\n"),
        &format!("recipients = ops@example.org\nsmtpHost = 127.0.0.1\nsmtpPort = {smtp_port}\n"),
    )
    .replace(
        "slaveport = 9010\nhtmlport = 8010",
        &format!(
            "slaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {}",
            free_port()
        ),
    );
    support::write_master_ini(&mdir, ini);
    let db_path = mdir.join(autobot::db::DB_FILE);
    {
        let db = support::master_db(&db_path);
        db.add_buildset(
            NewBuildSet {
                reason: "kill -9 test".into(),
                scheduler: "test".into(),
                properties: BTreeMap::from([("code".to_string(), "0".to_string())]),
                builders: vec!["all-s1".into()],
                ..Default::default()
            },
            autobot::db::now_f64(),
        )
        .await
        .unwrap();
    }
    let mut master = spawn_run(&mdir);
    let slave = support::Impl::Autobot
        .start(&root.path().join("slave"), sp, SLAVE, PASSWORD)
        .await
        .unwrap();
    let db = support::master_db(&db_path);
    wait_until("the mail is stored and failing", || {
        let db = db.clone();
        async move {
            let n = db
                .build_notifications("all-s1", 1)
                .await
                .unwrap_or_default();
            n.first().is_some_and(|n| n.state == "retrying")
        }
    })
    .await;
    let before = db.build_notifications("all-s1", 1).await.unwrap();
    kill9(&mut master);
    slave.stop().await;

    let smtp = SmtpServer::start(
        &root.path().join("smtp"),
        smtp_port,
        SmtpMode::Plain,
        None,
        None,
    );
    let mut master = spawn_run(&mdir);
    let mails = smtp.wait_mails(1).await;
    assert_eq!(
        Some(header(&mails[0], "message-id")),
        before[0].message_id.as_deref()
    );
    assert!(header(&mails[0], "subject").contains("all-s1, build 1"));
    wait_sent(&db, "all-s1", 1).await;
    kill9(&mut master);
    assert_eq!(smtp.mails().len(), 1);
    let log = std::fs::read_to_string(mdir.join("autobot.log")).unwrap_or_default()
        + &std::fs::read_to_string(mdir.join("run.log")).unwrap_or_default();
    assert!(
        log.contains("retrying in"),
        "the failed attempt is logged:\n{log}"
    );
    assert!(
        log.contains("sent (attempt"),
        "the delivery is logged:\n{log}"
    );
}

/// A slave with `notifyOnMissing` that goes away for longer than its
/// `missingTimeout` gets its admins a mail, once per time it goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_slave_is_mailed() {
    if !need_smtp() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = SmtpServer::start(&root.path().join("smtp"), port, SmtpMode::Plain, None, None);
    let ini = master_ini(
        &format!("[all]\ntype = shell\n{STEP}\n"),
        &format!("projectName = Proj\nsmtpHost = 127.0.0.1\nsmtpPort = {port}\n"),
    )
    .replace(
        &format!("[slave:{SLAVE}]\n"),
        &format!("[slave:{SLAVE}]\nnotifyOnMissing = admin@example.org root@example.org\nmissingTimeout = 1\n"),
    );
    let m = EngineMaster::start(&ini, Duration::from_secs(30)).await;
    let slave = m.slave().await;
    slave.stop().await;
    let mails = smtp.wait_mails(1).await;
    let mail = &mails[0];
    assert_eq!(
        header(mail, "subject"),
        format!("autobot: slave {SLAVE} was lost")
    );
    assert_eq!(
        set(&mail["envelope_to"]),
        BTreeSet::from([
            "admin@example.org".to_string(),
            "root@example.org".to_string()
        ])
    );
    let body = mail["body"].as_str().unwrap();
    assert!(
        body.contains(
            "The autobot working for 'Proj' has noticed that the slave named s1 went away"
        ),
        "{body}"
    );
    assert!(
        body.contains("Engine Test") || body.contains("admin on record"),
        "{body}"
    );
    let notes = m.master.db().slave_notifications(10).await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].kind, "mail");

    // One mail per missing period: back, then gone again, mails again.
    let slave = m.slave().await;
    slave.stop().await;
    let mails = smtp.wait_mails(2).await;
    assert_eq!(
        header(&mails[1], "subject"),
        format!("autobot: slave {SLAVE} was lost")
    );
    assert_eq!(
        m.master.db().slave_notifications(10).await.unwrap().len(),
        2
    );
}

/// A build whose end was recorded while no reporter ran (a master killed right
/// after the build's end, before the reporters decided anything) is decided
/// and mailed by the next master from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_ended_before_any_decision_is_mailed_after_the_restart() {
    if !need_smtp() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = SmtpServer::start(&root.path().join("smtp"), port, SmtpMode::Plain, None, None);
    let m = EngineMaster::start(
        &master_ini(
            &format!("[all]\ntype = shell\n{STEP}\n"),
            &format!("recipients = ops@example.org\nsmtpHost = 127.0.0.1\nsmtpPort = {port}\n"),
        ),
        Duration::from_secs(30),
    )
    .await;
    let EngineMaster { dir, master } = m;
    master.shutdown().await;

    // The build's end, as the engine records it, with no master running.
    {
        let db = support::master_db(&dir.path().join(autobot::db::DB_FILE));
        let now = autobot::db::now_f64();
        db.add_buildset(
            NewBuildSet {
                reason: "ended unseen".into(),
                scheduler: "test".into(),
                builders: vec!["all-s1".into()],
                ..Default::default()
            },
            now,
        )
        .await
        .unwrap();
        let c = db
            .claim_request("all-s1", SLAVE, 1, now)
            .await
            .unwrap()
            .unwrap();
        db.finish_build(c.build_id, "failure", "failed out", false, now + 1.0, None)
            .await
            .unwrap();
    }
    let master = start_master(dir.path(), Duration::from_secs(30)).await;
    let mails = smtp.wait_mails(1).await;
    assert_eq!(
        header(&mails[0], "subject"),
        "autobot failure in all on all-s1, build 1"
    );
    assert!(mails[0]["body"]
        .as_str()
        .unwrap()
        .contains("Build Reason: ended unseen"));
    wait_sent(master.db(), "all-s1", 1).await;
    assert_eq!(smtp.mails().len(), 1);
}
