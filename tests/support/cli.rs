//! Blocking helpers for tests that drive the real `autobot` binary from plain
//! (non-async) test functions: the command, free ports, one HTTP request and
//! a wait for a condition with a deadline.

use assert_cmd::Command;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

pub fn autobot() -> Command {
    Command::cargo_bin("autobot").unwrap()
}

pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// One HTTP request to 127.0.0.1:port; (status, body).
pub fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf.split_once("\r\n\r\n")?.1.to_string()))
}

pub fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let (_, body) = http(port, "GET", path, "")?;
    serde_json::from_str(&body).ok()
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `autobot create DIR -f hello` on free ports: a master and a slave for the
/// bundled sample (its master on the suite's database: support::testdb).
/// Returns the [slaveport, htmlport, publichtmlport] it used.
pub fn create_hello(dir: &Path) -> [u16; 3] {
    let ports @ [slaveport, htmlport, publicport] = free_ports();
    autobot()
        .args([
            "create",
            dir.to_str().unwrap(),
            "-f",
            "hello",
            "--slaveport",
            &slaveport.to_string(),
            "--htmlport",
            &htmlport.to_string(),
            "--publichtmlport",
            &publicport.to_string(),
        ])
        .assert()
        .success();
    super::use_test_db(dir.join("master"));
    ports
}
