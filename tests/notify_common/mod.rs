//! Helpers of the notification tests (`tests/notify_*.rs`): a real SMTP server
//! (`python3` with aiosmtpd, optionally with STARTTLS or implicit TLS and AUTH)
//! that stores every message it accepts and parses it with Python's `email`
//! package; certificates made with the `openssl` command; and reading what it
//! received.
//!
//! Include with `#[path = "notify_common/mod.rs"] mod notify_common;` after
//! `support` and `engine_common`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

/// How long any wait on mail may take.
pub const MAIL_DEADLINE: Duration = Duration::from_secs(90);

/// The SMTP server: each message as `N.eml` and, parsed, `N.json`.
pub const SMTP_PY: &str = include_str!("smtp_server.py");

/// How the test server talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    Plain,
    StartTls,
    Implicit,
}

/// A running SMTP server; killed when dropped.
pub struct SmtpServer {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the SMTP server can run here (python3 with aiosmtpd); if not the test
/// is skipped (fails under CI=true) and the caller returns.
#[must_use]
#[track_caller]
pub fn need_smtp() -> bool {
    support::need_tools(&[("python3", "apt-get install python3")])
        && support::need_python_module(
            "aiosmtpd",
            "apt-get install python3-aiosmtpd, or pip install aiosmtpd==1.4.6 (scripts/test.sh does)",
        )
}

/// Whether `openssl` is there for certificates.
#[must_use]
#[track_caller]
pub fn need_openssl() -> bool {
    support::need_tools(&[("openssl", "apt-get install openssl")])
}

pub use support::tls::{make_certs, Certs};

impl SmtpServer {
    /// Start a server on `port` storing into `dir` (created), returning once it
    /// accepts connections.
    pub fn start(
        dir: &Path,
        port: u16,
        mode: SmtpMode,
        certs: Option<&Certs>,
        auth: Option<&str>,
    ) -> SmtpServer {
        std::fs::create_dir_all(dir).unwrap();
        let script = dir.join("smtp_server.py");
        let mail_dir = dir.join("mail");
        std::fs::create_dir_all(&mail_dir).unwrap();
        std::fs::write(&script, SMTP_PY).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg("--dir")
            .arg(&mail_dir)
            .arg("--port")
            .arg(port.to_string())
            .arg("--mode")
            .arg(match mode {
                SmtpMode::Plain => "plain",
                SmtpMode::StartTls => "starttls",
                SmtpMode::Implicit => "implicit",
            });
        if let Some(c) = certs {
            cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
        }
        if let Some(a) = auth {
            cmd.arg("--auth").arg(a);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "READY", "the SMTP server did not start");
        SmtpServer {
            port,
            dir: mail_dir,
            child,
        }
    }

    /// The messages received so far, parsed, in arrival order.
    pub fn mails(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for n in 0.. {
            let p = self.dir.join(format!("{n}.json"));
            match std::fs::read_to_string(&p) {
                Ok(t) => out.push(serde_json::from_str(&t).unwrap()),
                Err(_) => break,
            }
        }
        out
    }

    /// Wait until at least `n` messages arrived; all of them.
    pub async fn wait_mails(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + MAIL_DEADLINE;
        loop {
            let m = self.mails();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} mails arrived within {MAIL_DEADLINE:?}: {m:#?}",
                m.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A header of a parsed mail.
pub fn header<'a>(m: &'a serde_json::Value, name: &str) -> &'a str {
    m["headers"][name].as_str().unwrap_or("")
}
