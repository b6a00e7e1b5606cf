//! A factory no slave runs, as an operator meets it on the real binary:
//! `checkconfig` warns (exit 0) naming the slaves' `factories =` lines, and
//! `autobot force` on it says how to make a slave run it instead of only "no
//! builder named".

#[path = "support/mod.rs"]
mod support;

use support::cli::{autobot, free_ports};

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Whether the master answers `GET /api/v1/builders` on `port`.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if std::io::Write::write_all(
        &mut s,
        b"GET /api/v1/builders HTTP/1.0\r\nHost: localhost\r\n\r\n",
    )
    .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    s.read_to_string(&mut buf).is_ok() && buf.starts_with("HTTP/1.")
}

struct Stop<'a>(&'a Path);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = autobot().arg("stop").arg(self.0).output();
    }
}

#[test]
fn a_factory_no_slave_runs_is_warned_about_and_force_says_how_to_run_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bot");
    let [slaveport, htmlport, publicport] = free_ports();
    autobot()
        .args(["create", dir.to_str().unwrap(), "-f", "hello"])
        .args(["--slaveport", &slaveport.to_string()])
        .args(["--htmlport", &htmlport.to_string()])
        .args(["--publichtmlport", &publicport.to_string()])
        .assert()
        .success();
    let master = dir.join("master");
    support::use_test_db(&master);
    let ini = master.join("master.ini");
    let text = std::fs::read_to_string(&ini).unwrap();
    assert!(text.contains("factories = hello\n"), "{text}");
    let lonely_line = text.lines().count() + 2;
    std::fs::write(
        &ini,
        format!("{text}\n[lonely]\ntype = shell\nstep.x = true\n"),
    )
    .unwrap();

    let out = autobot()
        .arg("checkconfig")
        .arg(&master)
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.contains("[lonely]"))
        .unwrap_or_else(|| panic!("no warning for [lonely]:\n{stderr}"));
    assert!(
        warning.starts_with(&format!(
            "warning: {}:{lonely_line}: [lonely]: no slave runs this factory",
            ini.display()
        )),
        "{warning}"
    );
    assert!(
        warning.contains("[slave:slave] factories = hello (slave slave)"),
        "{warning}"
    );

    autobot().arg("start").arg(&master).assert().success();
    let _stop = Stop(&master);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(htmlport) {
        assert!(Instant::now() < deadline, "the master did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    for builder in ["lonely", "lonely-slave"] {
        let out = autobot()
            .args(["force", dir.to_str().unwrap(), builder])
            .assert()
            .code(4)
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("cannot force {builder}:"))
                && stderr.contains("add lonely to the `factories =` line of")
                && stderr.contains("then `autobot reconfig`"),
            "{stderr}"
        );
    }
    // A builder that names no factory keeps the old message.
    autobot()
        .args(["force", dir.to_str().unwrap(), "nosuch-slave"])
        .assert()
        .code(4)
        .stderr(predicates::str::contains("lists the builders"));
}
