//! File-system commands: mkdir, rmdir, cpdir, stat, glob, listdir, rmfile.
//!
//! Each reports as `buildbot_worker/commands/fs.py` does: `rc` 0 on success, else a
//! `header` "NAME: strerror: path" and `rc` = errno. Paths were checked inside the
//! basedir by `prepare`; every operation here is done again beneath the basedir's
//! descriptor at the moment of use (see [`crate::slave::tree`]), so a symbolic link
//! that appeared since cannot lead out. `rmdir` has `rm -rf` semantics (missing
//! paths are fine, read-only directories are made writable first); `cpdir` does
//! in-process what the worker's `cp -R -P -p -v` does — links copied as links,
//! modes and times kept, one `'FROM' -> 'TO'` line per entry — under the same
//! `timeout`/`maxTime` limits and interrupts as a process.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmpv::Value;

use super::{errno, strerror, Interrupt, SlaveEnv};
use crate::slave::link::LinkClosed;
use crate::slave::paths::JPath;
use crate::slave::tree::{self, CopyControl, CopyError};
use crate::slave::updates::{Stream, Updates};

type Done = Result<Option<String>, LinkClosed>;

/// How long a stopped copy may take to notice before the command gives up on it.
const STOP_WAIT: Duration = Duration::from_secs(5);

async fn fail(up: &mut Updates, name: &str, e: &std::io::Error, path: &Path) -> Done {
    up.header(&format!("{name}: {}: {}\n", strerror(e), path.display()))
        .await?;
    up.send("rc", Value::from(errno(e))).await?;
    Ok(None)
}

/// Run blocking file-system work off the runtime thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

pub async fn mkdir(paths: Vec<JPath>, env: &SlaveEnv, up: &mut Updates) -> Done {
    for p in &paths {
        if let Err(e) = tree::mkdir_all(&env.jail, p, 0o777 & !env.umask) {
            tracing::info!("mkdir {} failed: {e}", p.shown().display());
            return fail(up, "mkdir", &e, p.shown()).await;
        }
    }
    up.send("rc", Value::from(0)).await?;
    Ok(None)
}

pub async fn rmdir(paths: Vec<JPath>, env: &SlaveEnv, up: &mut Updates) -> Done {
    let mut rc = 0;
    for p in paths {
        let (jail, path) = (env.jail.clone(), p.clone());
        if let Err(e) = blocking(move || tree::remove_tree(&jail, &path)).await {
            tracing::info!("rmdir {} failed: {e}", p.shown().display());
            up.header(&format!(
                "rmdir: {}: {}\n",
                strerror(&e),
                p.shown().display()
            ))
            .await?;
            rc = errno(&e);
        }
    }
    up.send("rc", Value::from(rc)).await?;
    Ok(None)
}

/// How a copy ended, seen from the command.
pub(super) enum CopyEnd {
    Done(Result<(), CopyError>),
    /// It was stopped (interrupt or time limit) and `rc` -1 is due.
    Stopped,
    /// It did not notice the stop in time: the command fails with this text.
    Stuck(String),
}

pub async fn cpdir(
    from: JPath,
    to: JPath,
    timeout: Option<f64>,
    max_time: Option<f64>,
    env: &SlaveEnv,
    up: &mut Updates,
    interrupt: &mut Interrupt,
) -> Done {
    let display = format!("cpdir {} {}", from.shown().display(), to.shown().display());
    up.header(&format!(
        "{display}\n in dir {}\n",
        env.jail.root().display()
    ))
    .await?;
    // As the worker: the destination's parent is made first.
    if let Some(parent) = to.parent() {
        if let Err(e) = tree::mkdir_all(&env.jail, &parent, 0o777 & !env.umask) {
            return fail(up, "cpdir", &e, parent.shown()).await;
        }
    }
    let started = Instant::now();
    match copy(
        env, from, to, true, timeout, max_time, &display, up, interrupt,
    )
    .await?
    {
        CopyEnd::Done(Ok(())) => up.send("rc", Value::from(0)).await?,
        CopyEnd::Done(Err(e)) => {
            tracing::info!("cpdir failed: {e}");
            up.output(Stream::Stderr, &format!("cp: {e}\n")).await?;
            up.send("rc", Value::from(1)).await?;
        }
        CopyEnd::Stopped => up.send("rc", Value::from(-1)).await?,
        CopyEnd::Stuck(why) => return Ok(Some(why)),
    }
    up.header(&format!(
        "elapsedTime={:.6}\n",
        started.elapsed().as_secs_f64()
    ))
    .await?;
    Ok(None)
}

fn limit(secs: Option<f64>) -> Option<Duration> {
    secs.filter(|s| *s > 0.0 && s.is_finite())
        .map(|s| Duration::from_secs_f64(s.min(1e9)))
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Copy `from` to `to` beneath the basedir on the blocking pool, streaming the
/// `'FROM' -> 'TO'` lines when `verbose`, stopping on interrupt, `timeout` without
/// output or `maxTime` (reported as a process's would be).
#[allow(clippy::too_many_arguments)]
pub(super) async fn copy(
    env: &SlaveEnv,
    from: JPath,
    to: JPath,
    verbose: bool,
    timeout: Option<f64>,
    max_time: Option<f64>,
    display: &str,
    up: &mut Updates,
    interrupt: &mut Interrupt,
) -> Result<CopyEnd, LinkClosed> {
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    let jail = env.jail.clone();
    let flag = cancel.clone();
    let mut task = tokio::task::spawn_blocking(move || {
        let mut send = |line: String| {
            let _ = tx.blocking_send(line);
        };
        let mut ctl = CopyControl {
            cancel: &flag,
            progress: if verbose { Some(&mut send) } else { None },
        };
        tree::copy_tree(&jail, &from, &to, &mut ctl)
    });
    let idle = limit(timeout);
    let mut io_deadline = idle.map(|t| Instant::now() + t);
    let mut max_deadline = limit(max_time).map(|t| Instant::now() + t);
    let mut stop_deadline: Option<Instant> = None;
    let mut stopped = false;
    let mut lines_open = true;
    let mut rx_int = interrupt.clone();
    let mut interrupt_seen = false;
    loop {
        let why: Option<(Option<&str>, String)> = tokio::select! {
            r = &mut task => {
                // Whatever was reported before the end goes out first.
                while let Ok(line) = rx.try_recv() {
                    up.output(Stream::Stdout, &line).await?;
                }
                let result = r.unwrap_or_else(|e| Err(CopyError::Io {
                    what: "copy task failed",
                    path: env.jail.root().to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                }));
                return Ok(match (stopped, result) {
                    (true, Err(CopyError::Cancelled)) | (true, Ok(())) => CopyEnd::Stopped,
                    (_, r) => CopyEnd::Done(r),
                });
            }
            line = rx.recv(), if lines_open => {
                match line {
                    Some(l) => {
                        up.output(Stream::Stdout, &l).await?;
                        if let (Some(t), Some(_)) = (idle, io_deadline) {
                            io_deadline = Some(Instant::now() + t);
                        }
                    }
                    None => lines_open = false,
                }
                None
            }
            why = async {
                match rx_int.wait_for(|s| s.is_some()).await {
                    Ok(s) => (*s).clone().unwrap_or_default(),
                    Err(_) => "connection lost".to_string(),
                }
            }, if !interrupt_seen => {
                interrupt_seen = true;
                tracing::info!("(command {}) interrupted: {why}", up.command_id());
                Some((None, "command interrupted".to_string()))
            }
            _ = sleep_opt(io_deadline) => {
                io_deadline = None;
                Some((Some("timeout_without_output"), format!(
                    "command timed out: {} seconds without output running {display}",
                    secs(timeout.unwrap_or(0.0))
                )))
            }
            _ = sleep_opt(max_deadline) => {
                max_deadline = None;
                Some((Some("timeout"), format!(
                    "command timed out: {} seconds elapsed running {display}",
                    secs(max_time.unwrap_or(0.0))
                )))
            }
            _ = sleep_opt(stop_deadline) => {
                tracing::warn!("(command {}) the copy did not stop", up.command_id());
                return Ok(CopyEnd::Stuck("the copy did not stop when asked".into()));
            }
            _ = sleep_opt(up.deadline()) => {
                up.flush().await?;
                None
            }
        };
        if let Some((reason, msg)) = why {
            if stopped {
                continue;
            }
            if let Some(r) = reason {
                up.send("failure_reason", Value::from(r)).await?;
            }
            up.header(&format!("\n{msg}, attempting to kill\n")).await?;
            cancel.store(true, Ordering::Relaxed);
            stopped = true;
            io_deadline = None;
            max_deadline = None;
            stop_deadline = Some(Instant::now() + STOP_WAIT);
        }
    }
}

/// Seconds as Python prints them (`5`, `1.5`).
fn secs(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

pub async fn stat(p: JPath, env: &SlaveEnv, up: &mut Updates) -> Done {
    match tree::stat(&env.jail, &p) {
        Ok(m) => {
            let tuple = Value::Array(vec![
                Value::from(m.st_mode),
                Value::from(m.st_ino),
                Value::from(m.st_dev),
                Value::from(m.st_nlink),
                Value::from(m.st_uid),
                Value::from(m.st_gid),
                Value::from(m.st_size),
                Value::from(m.st_atime),
                Value::from(m.st_mtime),
                Value::from(m.st_ctime),
            ]);
            up.send("stat", tuple).await?;
            up.send("rc", Value::from(0)).await?;
            Ok(None)
        }
        Err(e) => fail(up, "stat", &e, p.shown()).await,
    }
}

pub async fn glob(pattern: JPath, relative: bool, env: &SlaveEnv, up: &mut Updates) -> Done {
    let jail = env.jail.clone();
    let pat = pattern.clone();
    let found = tokio::task::spawn_blocking(move || tree::glob(&jail, &pat))
        .await
        .map_err(|e| e.to_string());
    let matches = match found {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            up.header(&format!("glob: {}: {}\n", e.msg, pattern.shown().display()))
                .await?;
            up.send("rc", Value::from(1)).await?;
            return Ok(None);
        }
        Err(e) => {
            up.header(&format!("glob: {e}\n")).await?;
            up.send("rc", Value::from(1)).await?;
            return Ok(None);
        }
    };
    let files: Vec<Value> = matches
        .iter()
        .map(|p| {
            let shown = if relative { p.rel() } else { p.shown() };
            Value::from(shown.to_string_lossy().into_owned())
        })
        .collect();
    up.send("files", Value::Array(files)).await?;
    up.send("rc", Value::from(0)).await?;
    Ok(None)
}

pub async fn listdir(p: JPath, env: &SlaveEnv, up: &mut Updates) -> Done {
    match tree::list(&env.jail, &p) {
        Ok(names) => {
            up.send(
                "files",
                Value::Array(
                    names
                        .into_iter()
                        .map(|n| Value::from(n.to_string_lossy().into_owned()))
                        .collect(),
                ),
            )
            .await?;
            up.send("rc", Value::from(0)).await?;
            Ok(None)
        }
        Err(e) => fail(up, "listdir", &e, p.shown()).await,
    }
}

pub async fn rmfile(p: JPath, env: &SlaveEnv, up: &mut Updates) -> Done {
    match tree::remove_file(&env.jail, &p) {
        Ok(()) => {
            up.send("rc", Value::from(0)).await?;
            Ok(None)
        }
        Err(e) => fail(up, "rmfile", &e, p.shown()).await,
    }
}
