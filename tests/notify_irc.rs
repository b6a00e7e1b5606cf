//! The IRC bot against a real IRC server (Debian's `ngircd` on a free port) and a
//! real master with a real slave: every command of the manual's IRC section in a
//! channel and in private, force and stop with the user's nick recorded,
//! announcements per `ircNotify` and `notify on|off`, `mute`/`unmute`, the server
//! restarted (the bot comes back and rejoins) and the bot's nick taken (it picks
//! another).

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "irc_common/mod.rs"]
mod irc_common;

use std::collections::BTreeMap;
use std::time::Duration;

use autobot::engine::ForceRequest;
use engine_common::{wait_until, EngineMaster};
use irc_common::{IrcClient, Ngircd};

const CHANNEL: &str = "#autobot";

const FACTORIES: &str = r#"
[pass]
type = shell
step.ok = true

[flip]
type = shell
step.check = sh -c 'test "$AUTOBOT_PROP_outcome" != fail'

[slow]
type = shell
step.wait = sleep 300
"#;

fn have_ngircd() -> bool {
    if irc_common::ngircd_path().is_some() {
        return true;
    }
    support::skip("ngircd is not installed (apt-get install ngircd)");
    false
}

fn ini(port: u16, extra: &str) -> String {
    engine_common::master_ini(
        FACTORIES,
        &format!(
            "ircHost = 127.0.0.1:{port}\nircChannels = {CHANNEL}\nbotname = autobot\n\
             buildbotURL = http://ci.example.org/\n{extra}"
        ),
    )
}

fn outcome(o: &str) -> ForceRequest {
    ForceRequest {
        reason: format!("want {o}"),
        properties: BTreeMap::from([("outcome".to_string(), o.to_string())]),
        ..ForceRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_in_a_channel_and_in_private() {
    if !have_ngircd() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let irc = Ngircd::start(&tmp.path().join("irc"), 0).await;
    let mut alice = IrcClient::connect(irc.port, "alice").await;
    let m = EngineMaster::start(&ini(irc.port, ""), Duration::from_secs(600)).await;
    let _slave = m.slave().await;
    alice.join_and_wait_for(CHANNEL, "autobot").await;

    let a = alice.ask("autobot", CHANNEL, "list builders").await;
    assert_eq!(a, "Configured builders: pass-s1 flip-s1 slow-s1");
    let a = alice.ask("autobot", CHANNEL, "version").await;
    assert_eq!(a, format!("My version is autobot {}", autobot::VERSION));
    let a = alice.ask("autobot", CHANNEL, "source").await;
    assert!(a.contains("http://ci.example.org/"), "{a}");
    let a = alice.ask("autobot", CHANNEL, "help commands").await;
    for c in [
        "list", "status", "watch", "last", "force", "stop", "notify", "mute",
    ] {
        assert!(a.contains(c), "{a}");
    }
    let a = alice.ask("autobot", CHANNEL, "help force").await;
    assert!(a.starts_with("force build BUILDER REASON"), "{a}");
    let a = alice.ask("autobot", CHANNEL, "help").await;
    assert!(a.contains("help commands"), "{a}");
    let a = alice.ask("autobot", CHANNEL, "frobnicate now").await;
    assert_eq!(
        a,
        "I don't know the command 'frobnicate'; try 'help commands'"
    );
    let a = alice.ask("autobot", CHANNEL, "status nosuch").await;
    assert!(a.starts_with("no builder named 'nosuch'"), "{a}");
    let a = alice.ask("autobot", CHANNEL, "status pass-s1").await;
    assert_eq!(a, "pass-s1: idle");
    let a = alice.ask("autobot", CHANNEL, "last pass-s1").await;
    assert_eq!(a, "pass-s1 has not finished a build yet");
    // Not addressed to the bot: no answer (the next answer is to the next question).
    alice.say(CHANNEL, "autobotty: version").await;
    alice.say(CHANNEL, "just chatting about autobot").await;
    let a = alice.ask("autobot", CHANNEL, "watch pass-s1").await;
    assert_eq!(a, "no build of pass-s1 is running");

    // force build: queued, started, finished, with alice recorded as who.
    alice
        .say(CHANNEL, "autobot, force build pass-s1 testing the irc bot")
        .await;
    let lines = alice.msgs_until("autobot", CHANNEL, "is complete").await;
    assert!(
        lines[0].starts_with("build of pass-s1 forced (request "),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"build #1 of pass-s1 started (forced)".to_string()),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().unwrap(),
        "build #1 of pass-s1 is complete: Success [build successful]  Build details are at http://ci.example.org/builders/pass-s1/builds/1"
    );
    let b = m.build("pass-s1", 1).await;
    assert!(
        b.build
            .reason
            .contains("forced by alice (IRC): testing the irc bot"),
        "{}",
        b.build.reason
    );
    let a = alice.ask("autobot", CHANNEL, "last pass-s1").await;
    assert!(a.starts_with("last build #1 of pass-s1 ("), "{a}");
    assert!(a.contains("ago): Success"), "{a}");
    alice.say(CHANNEL, "autobot: status all").await;
    let lines = alice.msgs_until("autobot", CHANNEL, "slow-s1").await;
    assert_eq!(
        lines,
        [
            "pass-s1: idle, last build #1: Success",
            "flip-s1: idle",
            "slow-s1: idle"
        ]
    );

    // In private: the answer comes in private.
    alice.say("autobot", "status pass-s1").await;
    assert_eq!(
        alice.expect_msg("autobot", "alice").await,
        "pass-s1: idle, last build #1: Success"
    );

    // watch and stop build on a running build.
    let id = m.force("slow-s1", ForceRequest::default()).await;
    wait_until("slow-s1 runs", || async {
        m.engine().running().iter().any(|(b, _)| b == "slow-s1")
    })
    .await;
    let a = alice.ask("autobot", CHANNEL, "watch slow-s1").await;
    assert_eq!(a, "watching build #1 of slow-s1 until it finishes");
    let a = alice.ask("autobot", CHANNEL, "status slow-s1").await;
    assert_eq!(a, "slow-s1: building, build #1 [wait]");
    let a = alice
        .ask("autobot", CHANNEL, "stop build slow-s1 enough waiting")
        .await;
    assert_eq!(a, "stopping build #1 of slow-s1");
    let mut lines = vec![
        alice.expect_msg("autobot", CHANNEL).await,
        alice.expect_msg("autobot", CHANNEL).await,
    ];
    lines.sort();
    assert!(
        lines[0].starts_with("build #1 of slow-s1 is complete: ")
            && lines[0].ends_with(" [stopped by alice (IRC): enough waiting]  Build details are at http://ci.example.org/builders/slow-s1/builds/1"),
        "{lines:?}"
    );
    assert_eq!(lines[1], "build #1 of slow-s1 stopped");
    m.wait_request(id).await;
    let a = alice
        .ask("autobot", CHANNEL, "stop build slow-s1 again")
        .await;
    assert_eq!(a, "no build of slow-s1 is running");
    let a = alice.ask("autobot", CHANNEL, "force build").await;
    assert!(a.contains("force build BUILDER REASON"), "{a}");
    let a = alice.ask("autobot", CHANNEL, "force build nosuch x").await;
    assert!(
        a.starts_with("cannot force a build of nosuch: no builder named"),
        "{a}"
    );

    // mute: nothing until unmute.
    let a = alice.ask("autobot", CHANNEL, "mute").await;
    assert!(a.starts_with("Shutting up"), "{a}");
    alice.say(CHANNEL, "autobot: version").await;
    let a = alice.ask("autobot", CHANNEL, "unmute").await;
    assert_eq!(a, "I'm back.");
    // CTCP VERSION is answered by a NOTICE, and a CTCP ACTION is no command.
    alice.say("autobot", "\x01ACTION waves\x01").await;
    alice.say("autobot", "\x01VERSION\x01").await;
    let n = alice
        .expect(|m| m.command == "NOTICE" && m.nick() == "autobot")
        .await;
    assert_eq!(
        n.param(1),
        format!("\x01VERSION autobot {}\x01", autobot::VERSION)
    );
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_follow_irc_notify_and_notify_commands() {
    if !have_ngircd() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let irc = Ngircd::start(&tmp.path().join("irc"), 0).await;
    let mut bob = IrcClient::connect(irc.port, "bob").await;
    let m = EngineMaster::start(
        &ini(irc.port, "allowForce = false\n"),
        Duration::from_secs(600),
    )
    .await;
    let _slave = m.slave().await;
    bob.join_and_wait_for(CHANNEL, "autobot").await;
    let a = bob.ask("autobot", CHANNEL, "notify list").await;
    assert_eq!(
        a,
        "The following events are being notified: problem recovery"
    );

    // Each build, then a question: what the bot said in between is what it
    // announced for that build.
    let run = |o: &'static str| {
        let m = &m;
        async move {
            let id = m.force("flip-s1", outcome(o)).await;
            m.wait_request(id).await;
        }
    };
    let mut said = Vec::new();
    for (o, _) in [("pass", 1), ("fail", 2), ("fail", 3), ("pass", 4)] {
        run(o).await;
        bob.say(CHANNEL, "autobot: version").await;
        said.push(bob.msgs_until("autobot", CHANNEL, "My version").await);
    }
    let url = "Build details are at http://ci.example.org/builders/flip-s1/builds";
    assert_eq!(said[0].len(), 1, "a first success is no recovery: {said:?}");
    assert_eq!(
        said[1][0],
        format!("build #2 of flip-s1 is complete: Failure [failed check]  {url}/2"),
        "{said:?}"
    );
    assert_eq!(
        said[2].len(),
        1,
        "a second failure is no new problem: {said:?}"
    );
    assert_eq!(
        said[3][0],
        format!("build #4 of flip-s1 is complete: Success [build successful]  {url}/4"),
        "{said:?}"
    );

    // notify on/off changes what the channel gets.
    let a = bob
        .ask("autobot", CHANNEL, "notify on started finished")
        .await;
    assert_eq!(
        a,
        "The following events are being notified: finished problem recovery started"
    );
    let a = bob.ask("autobot", CHANNEL, "notify on sometimes").await;
    assert!(a.starts_with("unknown event 'sometimes'"), "{a}");
    run("pass").await;
    bob.say(CHANNEL, "autobot: version").await;
    let s = bob.msgs_until("autobot", CHANNEL, "My version").await;
    assert_eq!(
        s[..2],
        [
            "build #5 of flip-s1 started".to_string(),
            format!("build #5 of flip-s1 is complete: Success [build successful]  {url}/5")
        ],
        "{s:?}"
    );
    let a = bob
        .ask(
            "autobot",
            CHANNEL,
            "notify off started finished problem recovery",
        )
        .await;
    assert_eq!(a, "The following events are being notified: none");
    run("fail").await;
    bob.say(CHANNEL, "autobot: version").await;
    let s = bob.msgs_until("autobot", CHANNEL, "My version").await;
    assert_eq!(s.len(), 1, "{s:?}");

    // A user may ask for announcements in private.
    bob.say("autobot", "notify on failure").await;
    assert_eq!(
        bob.expect_msg("autobot", "bob").await,
        "The following events are being notified: failure"
    );
    run("fail").await;
    assert_eq!(
        bob.expect_msg("autobot", "bob").await,
        format!("build #7 of flip-s1 is complete: Failure [failed check]  {url}/7")
    );

    // allowForce = false: no force, no stop.
    let a = bob
        .ask("autobot", CHANNEL, "force build flip-s1 please")
        .await;
    assert_eq!(
        a,
        "force is disabled on this master (allowForce = false in master.ini)"
    );
    let a = bob
        .ask("autobot", CHANNEL, "stop build flip-s1 please")
        .await;
    assert_eq!(
        a,
        "stop is disabled on this master (allowForce = false in master.ini)"
    );
    m.master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_another_nick_and_comes_back_after_a_server_restart() {
    if !have_ngircd() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut irc = Ngircd::start(&tmp.path().join("irc"), 0).await;
    // Someone already has the bot's nick.
    let mut squatter = IrcClient::connect(irc.port, "autobot").await;
    // With [users], the web asks for a login: IRC, which has none, may not force.
    let with_users = format!("{}\n[users]\nadmin = pw-irc-admin-7\n", ini(irc.port, ""));
    let m = EngineMaster::start(&with_users, Duration::from_secs(600)).await;
    squatter.join_and_wait_for(CHANNEL, "autobot_").await;
    let a = squatter.ask("autobot_", CHANNEL, "version").await;
    assert_eq!(a, format!("My version is autobot {}", autobot::VERSION));
    let a = squatter
        .ask("autobot_", CHANNEL, "force build pass-s1 now")
        .await;
    assert!(
        a.starts_with("force needs a login on this master ([users] in master.ini)"),
        "{a}"
    );

    // The server goes away and comes back: the bot reconnects and rejoins (with
    // its own nick, free now).
    irc.restart().await;
    let mut carol = IrcClient::connect(irc.port, "carol").await;
    carol.join_and_wait_for(CHANNEL, "autobot").await;
    let a = carol.ask("autobot", CHANNEL, "list builders").await;
    assert_eq!(a, "Configured builders: pass-s1 flip-s1 slow-s1");
    assert!(support::log_has(&["irc: ", "connecting again in"]));
    m.master.shutdown().await;
    // It says goodbye on shutdown.
    let q = carol
        .expect(|m| m.command == "QUIT" && m.nick() == "autobot")
        .await;
    assert!(q.param(0).contains("shutting down"), "{q:?}");
}

/// `ircPassword` identifies the bot's nick to NickServ after it registers
/// (ngircd has no services: a client taking the nick `NickServ` receives what a
/// services daemon would), before it joins; the password is never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifies_to_nickserv_with_irc_password() {
    if !have_ngircd() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let irc = Ngircd::start(&tmp.path().join("irc"), 0).await;
    let mut services = IrcClient::connect(irc.port, "NickServ").await;
    let m = EngineMaster::start(
        &ini(irc.port, "ircPassword = nick-pw-5f3a\n"),
        Duration::from_secs(600),
    )
    .await;
    let said = services.expect_msg("autobot", "NickServ").await;
    assert_eq!(said, "IDENTIFY nick-pw-5f3a");
    // And then it joins its channel as usual.
    let mut dave = IrcClient::connect(irc.port, "dave").await;
    dave.join_and_wait_for(CHANNEL, "autobot").await;
    assert!(
        !support::log_has(&["nick-pw-5f3a"]),
        "the password was logged"
    );
    m.master.shutdown().await;
}

#[test]
fn checkconfig_shows_the_bot_and_points_at_bad_irc_keys() {
    let dir = tempfile::tempdir().unwrap();
    let ini = |extra: &str| {
        format!(
            "[:master:]\npassword = pw-check-1\nallowForce = false\nircHost = irc.example.org\n\
             {extra}\n[slave:s1]\n"
        )
    };
    support::write_master_ini(dir.path(), ini("ircChannels = #a\nircTls = yes"));
    let out = std::process::Command::new(engine_common::autobot_bin())
        .arg("checkconfig")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("irc: irc.example.org:6697 (TLS) as autobot, channels #a, announcing problem recovery\n"),
        "{stdout}"
    );
    for (extra, needle) in [
        ("ircNotify = problem often", "unknown event \"often\""),
        ("botname = 1bot", "not an IRC nick"),
        ("ircChannels = a", "not a channel name"),
    ] {
        support::write_master_ini(dir.path(), ini(extra));
        let out = std::process::Command::new(engine_common::autobot_bin())
            .arg("checkconfig")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("master.ini:5") && err.contains(needle),
            "{extra}: {err}"
        );
    }
}
