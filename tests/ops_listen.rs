//! Ports with an address, on the real binary: `create --htmlport ADDR:PORT`
//! writes it, the master binds only that address (reachable there, refused on
//! another loopback address, so not on 0.0.0.0), the slave and the CLI
//! (`force --wait`, `stop --clean`) connect to it, `checkconfig` says what listens
//! where, and a bad address is an error at its file:line saying how to write one.

#[path = "support/mod.rs"]
mod support;

use support::cli::{autobot, free_ports, wait_for};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// One HTTP GET to `host:port`; (status, body), `None` when nothing listens.
fn get(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, buf.split_once("\r\n\r\n")?.1.to_string()))
}

fn refused(host: &str, port: u16) -> bool {
    matches!(TcpStream::connect((host, port)), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

#[test]
fn ports_with_an_address_bind_there_and_the_cli_follows() {
    if !support::need_tools(&[
        ("git", "apt-get install git"),
        ("cc", "apt-get install gcc"),
        ("make", "apt-get install make"),
    ]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bot");
    let [slaveport, htmlport, publicport] = free_ports();
    // htmlport on 127.0.0.2 (another loopback address), so the CLI must follow
    // the address: 127.0.0.1 would be refused.
    let out = autobot()
        .args(["create", dir.to_str().unwrap(), "-f", "hello"])
        .args(["--slaveport", &format!("localhost:{slaveport}")])
        .args(["--htmlport", &format!("127.0.0.2:{htmlport}")])
        .args(["--publichtmlport", &format!("127.0.0.1:{publicport}")])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains(&format!("http://127.0.0.2:{htmlport}/")),
        "{out}"
    );
    support::use_test_db(dir.join("master"));
    let ini = read(&dir.join("master/master.ini"));
    assert!(
        ini.contains(&format!("htmlport = 127.0.0.2:{htmlport}\n")),
        "{ini}"
    );
    assert!(
        ini.contains(&format!("slaveport = 127.0.0.1:{slaveport}\n")),
        "{ini}"
    );
    let slave_ini = read(&dir.join("slave/slave.ini"));
    assert!(slave_ini.contains("127.0.0.1"), "{slave_ini}");

    let check = autobot()
        .args(["checkconfig", dir.join("master").to_str().unwrap()])
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        stdout.contains(&format!(
            "listening: slaves on 127.0.0.1:{slaveport}, web on 127.0.0.2:{htmlport}, read-only web on 127.0.0.1:{publicport}"
        )),
        "{stdout}"
    );
    // A loopback htmlport: force open to its users is no warning.
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!stderr.contains("lets anyone"), "{stderr}");

    autobot()
        .args(["start", dir.to_str().unwrap()])
        .assert()
        .success();
    let _stop = Stop(dir.clone());
    wait_for("the slave to connect", Duration::from_secs(30), || {
        get("127.0.0.2", htmlport, "/api/v1/slaves")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v.as_array()?.first().map(|s| s["connected"] == true))
            .unwrap_or(false)
    });
    // Each port on its address only.
    assert!(
        refused("127.0.0.1", htmlport),
        "htmlport is not on 127.0.0.1"
    );
    assert_eq!(get("127.0.0.1", publicport, "/").map(|r| r.0), Some(200));
    assert!(
        refused("127.0.0.2", publicport),
        "publichtmlport is not on 127.0.0.2"
    );
    assert!(
        refused("127.0.0.2", slaveport),
        "slaveport is not on 127.0.0.2"
    );

    // The CLI reaches htmlport at its address.
    autobot()
        .args(["force", "--wait", dir.to_str().unwrap(), "hello-slave"])
        .timeout(Duration::from_secs(300))
        .assert()
        .success();
    let out = autobot()
        .args(["stop", "--clean", dir.to_str().unwrap()])
        .timeout(Duration::from_secs(120))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8_lossy(&out);
    // It asked the master how many builds run (none): it reached the API.
    assert!(out.contains("no build is running"), "{out}");
}

/// Stops the pair when the test ends, however it ends.
struct Stop(std::path::PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = autobot().args(["stop", self.0.to_str().unwrap()]).output();
    }
}

#[test]
fn a_bad_address_is_an_error_at_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    support::write_master_ini(
        tmp.path(),
        "[:master:]\nslaveport = 9010\nhtmlport = example.org:8010\n",
    );
    let out = autobot()
        .args(["checkconfig", tmp.path().to_str().unwrap()])
        .assert()
        .failure()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("master.ini:3: [:master:] htmlport: \"example.org\" is not an IP address or `localhost`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`127.0.0.1:8010`, `[::1]:8010` or `localhost:8010`"),
        "{stderr}"
    );
    // The same form is what create takes.
    let out = autobot()
        .args(["create-master", tmp.path().join("m").to_str().unwrap()])
        .args(["--htmlport", "example.org:8010"])
        .assert()
        .failure()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not an IP address or `localhost`"),
        "{stderr}"
    );
}
