//! The IRC bot over TLS (`ircTls = true`) to a real ngircd with a certificate
//! for `localhost` made by `openssl`: the bot checks the certificate against the
//! system's roots, which `SSL_CERT_FILE` points at the test's own CA here (its own
//! test binary, so the variable is set before any other thread reads it), joins
//! and answers; against a server whose certificate it cannot verify it does not
//! talk at all.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "irc_common/mod.rs"]
mod irc_common;

use std::time::Duration;

use engine_common::EngineMaster;
use irc_common::{IrcClient, Ngircd};

#[test]
fn the_bot_talks_tls_and_checks_the_certificate() {
    if irc_common::ngircd_path().is_none() {
        support::skip("ngircd is not installed (apt-get install ngircd)");
        return;
    }
    if !support::need_tools(&[("openssl", "apt-get install openssl")]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let irc = rt.block_on(Ngircd::start_tls(&tmp.path().join("irc")));
    // Before any thread of this binary reads the environment.
    std::env::set_var("SSL_CERT_FILE", tmp.path().join("irc/ca.pem"));
    rt.block_on(async {
        let tls = irc.tls_port.unwrap();
        let mut dave = IrcClient::connect(irc.port, "dave").await;
        let ini = engine_common::master_ini(
            "[pass]\ntype = shell\nstep.ok = true\n",
            &format!(
                "ircHost = localhost:{tls}\nircTls = true\nircChannels = #sec\nbotname = tlsbot\n"
            ),
        );
        let m = EngineMaster::start(&ini, Duration::from_secs(600)).await;
        dave.join_and_wait_for("#sec", "tlsbot").await;
        let a = dave.ask("tlsbot", "#sec", "list builders").await;
        assert_eq!(a, "Configured builders: pass-s1");
        m.master.shutdown().await;

        // The same server under a name its certificate does not carry: refused.
        let ini = engine_common::master_ini(
            "[pass]\ntype = shell\nstep.ok = true\n",
            &format!(
                "ircHost = 127.0.0.1:{tls}\nircTls = true\nircChannels = #sec\nbotname = tlsbot\n"
            ),
        );
        let m = EngineMaster::start(&ini, Duration::from_secs(600)).await;
        support::wait_log(&["irc: TLS to 127.0.0.1:", "connecting again in"]).await;
        m.master.shutdown().await;
    });
}
