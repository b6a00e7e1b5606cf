//! Running a version-control tool for a poller (`svn`, `brz`): an argv (never a
//! shell), no stdin, `LC_ALL=C` so messages are the ones the pollers look for, its
//! output read to the end and the process killed after a time limit, so a hung
//! server never blocks a poller forever.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a tool run gave: whether it exited 0, its stdout and stderr (lossy UTF-8).
pub(crate) type Output = (bool, String, String);

/// Why a tool could not be run to its end.
#[derive(Debug)]
pub(crate) enum RunError {
    /// It could not be started (not installed, not executable).
    Spawn(String),
    /// It ran longer than the limit and was killed.
    Timeout,
}

/// Runs `program ARGS` and waits for it, at most `timeout`.
pub(crate) fn run(program: &Path, args: &[String], timeout: Duration) -> Result<Output, RunError> {
    run_env(program, args, &[], timeout)
}

/// [`run`] with the variables `env` set (tla's private `HOME`, cvs's
/// `CVS_PASSFILE`).
pub(crate) fn run_env(
    program: &Path,
    args: &[String],
    env: &[(&str, &std::ffi::OsStr)],
    timeout: Duration,
) -> Result<Output, RunError> {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RunError::Spawn(e.to_string()))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // The end of stdout is the usual sign that the tool finished: wait for it
    // without polling, then reap.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let out_reader = std::thread::spawn(move || {
        let out = read_all(stdout);
        let _ = done_tx.send(());
        out
    });
    let err_reader = std::thread::spawn(move || read_all(stderr));
    let deadline = Instant::now() + timeout;
    let _ = done_rx.recv_timeout(timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                // The readers are left to finish on their own: a grandchild (ssh)
                // may still hold the pipes open.
                return Err(RunError::Timeout);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(RunError::Spawn(e.to_string())),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok((status.success(), stdout, stderr))
}

/// Reads a child's pipe to the end (lossy UTF-8).
fn read_all(pipe: Option<impl Read>) -> String {
    let mut buf = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// stderr as one line for a log.
pub(crate) fn one_line(s: &str) -> String {
    s.trim().replace('\n', "; ")
}
