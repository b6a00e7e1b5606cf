//! The slave's connection loop over real TCP: backoff while the master is down,
//! refused credentials retried with the reason logged, reconnect after the master
//! drops the link, and start-up errors.

mod slave_harness;

use std::sync::atomic::Ordering;
use std::time::Duration;

use slave_harness::*;

const LONG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn backs_off_while_refused_then_connects() {
    // A port nobody listens on (yet).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut slave = Slave::create("backoff1", port, 1);
    let ready = slave
        .start()
        .await
        .expect("a down master is not a start failure");
    assert!(ready.contains("backoff1"), "{ready}");
    wait_for("two refused attempts in the log", LONG, || {
        let l = logs();
        l.contains("slave backoff1: connecting to ws://127.0.0.1")
            && l.contains("(attempt 2)")
            && l.lines()
                .filter(|x| {
                    x.contains("slave backoff1: cannot connect") && x.contains("connection refused")
                })
                .count()
                >= 2
    })
    .await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let mut master = Master::serve(listener, "backoff1");
    let mut conn = master.accept().await;
    let (_, exc) = conn.request("keepalive", vec![]).await;
    assert!(!exc);
    assert!(logs().contains("slave backoff1: connected to"));
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn wrong_password_is_retried_and_logged() {
    let mut master = Master::start("auth1").await;
    let mut slave = Slave::create("auth1", master.port, 1);
    slave.set_password("wr0ng-pw-Zq");
    slave.start().await.unwrap();
    wait_for("two refused logins", LONG, || {
        master.attempts.load(Ordering::SeqCst) >= 2
    })
    .await;
    wait_for("the reason in the log", LONG, || {
        logs().contains("slave auth1: cannot connect")
            && logs().contains("authentication failed (HTTP 401)")
    })
    .await;
    assert!(
        !logs().contains("wr0ng-pw-Zq"),
        "the password must never be logged"
    );
    // Fixing the password (a new start) connects.
    slave.stop().await;
    slave.set_password_back();
    slave.start().await.unwrap();
    let mut conn = master.accept().await;
    let (_, exc) = conn.request("keepalive", vec![]).await;
    assert!(!exc);
    slave.stop_serving(&mut conn).await;
}

trait FixPassword {
    fn set_password_back(&self);
}

impl FixPassword for Slave {
    fn set_password_back(&self) {
        let p = self.path("slave.ini");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(
            p,
            text.replace("password = wr0ng-pw-Zq", &format!("password = {PASSWORD}")),
        )
        .unwrap();
    }
}

#[tokio::test]
async fn duplicate_is_logged_as_already_connected() {
    let master = Master::start("dup1").await;
    *master.policy.lock().unwrap() = Policy::Status(409);
    let mut slave = Slave::create("dup1", master.port, 1);
    slave.start().await.unwrap();
    wait_for("the reason in the log", LONG, || {
        logs().contains("slave dup1: cannot connect")
            && logs().contains("already connected (HTTP 409)")
    })
    .await;
    slave.stop().await;
}

#[tokio::test]
async fn reconnects_after_the_master_drops_the_link() {
    let mut master = Master::start("recon1").await;
    let mut slave = Slave::create("recon1", master.port, 2);
    slave.start().await.unwrap();
    let conn = master.accept().await;
    conn.close().await;
    let mut conn = master.accept().await;
    let (_, exc) = conn.request("keepalive", vec![]).await;
    assert!(!exc);
    assert!(logs().contains("slave recon1: connection to"));
    slave.stop_serving(&mut conn).await;
}

#[tokio::test]
async fn bad_slave_ini_fails_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slave.ini"),
        "[slave]\nmaster = nohostport\nname = a\npassword = b\n",
    )
    .unwrap();
    let (control, mut handle) = autobot::daemon::control();
    let r = autobot::slave::run(dir.path(), control).await;
    assert!(r.is_err());
    let ready = (&mut handle.ready).await.unwrap();
    assert!(ready.unwrap_err().contains("HOST:PORT"));
}
