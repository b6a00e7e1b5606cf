//! File transfers between master and slave (`buildbot_worker/commands/transfer.py`).
//!
//! Uploads push blocks with `update_upload_file_write` /
//! `update_upload_directory_write`, each awaited before the next is read, so at most
//! one block is in memory; then `update_upload_file_close` (and
//! `update_upload_file_utime` with `keepstamp`) or `update_upload_directory_unpack`.
//! A directory travels as a tar stream produced by the system `tar`, read as it is
//! written; `tar` is started in the directory the slave opened beneath its basedir
//! (never given its path) and archives `.` without following links. Files are
//! opened beneath the basedir at the moment of use (see [`crate::slave::paths`]). Downloads pull blocks with `update_read_file` until the master returns
//! nothing, then `update_read_file_close`. Every transfer ends with an `rc` update
//! (plus `stderr` explaining a failure), as the worker's `TransferCommand` does.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use nix::fcntl::OFlag;

use rmpv::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{Interrupt, SlaveEnv};
use crate::slave::args::Args;
use crate::slave::link::{CallError, LinkClosed};
use crate::slave::paths::{JPath, Jail};
use crate::slave::tree;
use crate::slave::updates::{Stream, Updates};

type Done = Result<Option<String>, LinkClosed>;

/// Most a block may be, whatever the master asks (a frame must fit in memory).
const MAX_BLOCK: u64 = 4 * 1024 * 1024;

/// An upload's arguments.
#[derive(Debug)]
pub struct Upload {
    path: JPath,
    maxsize: Option<u64>,
    blocksize: u64,
    keepstamp: bool,
}

impl Upload {
    pub fn new(path: JPath, a: &Args<'_>) -> Result<Upload, String> {
        Ok(Upload {
            path,
            maxsize: a.num("maxsize")?.map(|n| n.max(0.0) as u64),
            blocksize: block(a)?,
            keepstamp: a.bool("keepstamp", false),
        })
    }
}

/// A download's arguments.
#[derive(Debug)]
pub struct Download {
    path: JPath,
    maxsize: Option<u64>,
    blocksize: u64,
    mode: Option<u32>,
}

impl Download {
    pub fn new(path: JPath, a: &Args<'_>) -> Result<Download, String> {
        Ok(Download {
            path,
            maxsize: a.num("maxsize")?.map(|n| n.max(0.0) as u64),
            blocksize: block(a)?,
            mode: a.num("mode")?.map(|m| m as u32 & 0o7777),
        })
    }
}

fn block(a: &Args<'_>) -> Result<u64, String> {
    let b = a
        .num("blocksize")?
        .ok_or_else(|| "missing argument \"blocksize\"".to_string())?;
    Ok((b.max(1.0) as u64).min(MAX_BLOCK))
}

fn is_interrupted(i: &Interrupt) -> bool {
    i.borrow().is_some()
}

/// Read until `buf` is full or the end of the source.
async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = r.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// The result of pushing a source to the master block by block.
struct Pushed {
    rc: i64,
    stderr: Option<String>,
    failure: Option<String>,
}

/// Send `src` in blocks with `op`, honouring maxsize and interrupts.
async fn push<R: AsyncRead + Unpin>(
    src: &mut R,
    op: &str,
    what: &std::path::Path,
    u: &Upload,
    up: &mut Updates,
    interrupt: &Interrupt,
) -> Result<Pushed, LinkClosed> {
    let mut res = Pushed {
        rc: 0,
        stderr: None,
        failure: None,
    };
    let mut remaining = u.maxsize;
    let mut buf = vec![0u8; u.blocksize as usize];
    loop {
        if is_interrupted(interrupt) {
            res.rc = 1;
            break;
        }
        let length = match remaining {
            Some(r) => r.min(u.blocksize),
            None => u.blocksize,
        } as usize;
        if length == 0 {
            res.stderr = Some(format!(
                "Maximum filesize reached, truncating file '{}'",
                what.display()
            ));
            res.rc = 1;
            break;
        }
        let n = match fill(src, &mut buf[..length]).await {
            Ok(n) => n,
            Err(e) => {
                res.stderr = Some(format!("Cannot read '{}': {e}", what.display()));
                res.rc = 1;
                break;
            }
        };
        if n == 0 {
            break;
        }
        if let Some(r) = remaining.as_mut() {
            *r -= n as u64;
        }
        let fields = vec![
            ("args", Value::Binary(buf[..n].to_vec())),
            ("command_id", Value::from(up.command_id())),
        ];
        match up.link().call(op, fields).await {
            Ok(_) => {}
            Err(CallError::Closed(c)) => return Err(c),
            Err(CallError::Remote(m)) => {
                res.rc = 1;
                res.failure = Some(m);
                break;
            }
        }
    }
    Ok(res)
}

/// Report the end of a transfer: `rc`, and `stderr` if something went wrong.
async fn finished(up: &mut Updates, rc: i64, stderr: Option<String>) -> Result<(), LinkClosed> {
    up.send("rc", Value::from(rc)).await?;
    if let Some(s) = stderr {
        up.output(Stream::Stderr, &s).await?;
    }
    Ok(())
}

/// A call whose failure only matters if nothing failed before.
async fn call_simple(
    up: &mut Updates,
    op: &str,
    extra: Vec<(&str, Value)>,
) -> Result<Option<String>, LinkClosed> {
    let mut fields = extra;
    fields.push(("command_id", Value::from(up.command_id())));
    match up.link().call(op, fields).await {
        Ok(_) => Ok(None),
        Err(CallError::Closed(c)) => Err(c),
        Err(CallError::Remote(m)) => Ok(Some(m)),
    }
}

pub async fn upload_file(
    u: Upload,
    env: &SlaveEnv,
    up: &mut Updates,
    interrupt: &Interrupt,
) -> Done {
    let mut stamps = None;
    let opened = env
        .jail
        .open(&u.path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)
        .map(|fd| tokio::fs::File::from_std(std::fs::File::from(fd)));
    let file = match opened {
        Ok(f) if f.metadata().await.map(|m| m.is_file()).unwrap_or(false) => {
            if u.keepstamp {
                if let Ok(m) = f.metadata().await {
                    let t = |s: i64, ns: i64| s as f64 + ns as f64 / 1e9;
                    stamps = Some((t(m.atime(), m.atime_nsec()), t(m.mtime(), m.mtime_nsec())));
                }
            }
            Some(f)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::info!("upload {}: {e}", u.path.shown().display());
            None
        }
    };
    up.header(&format!("sending {}\n", u.path.shown().display()))
        .await?;
    up.flush().await?;
    let (mut rc, stderr, mut failure) = match file {
        None => (
            1,
            Some(format!(
                "Cannot open file '{}' for upload",
                u.path.shown().display()
            )),
            None,
        ),
        Some(mut f) => {
            let r = push(
                &mut f,
                "update_upload_file_write",
                u.path.shown(),
                &u,
                up,
                interrupt,
            )
            .await?;
            (r.rc, r.stderr, r.failure)
        }
    };
    let close_err = call_simple(up, "update_upload_file_close", Vec::new()).await?;
    if failure.is_none() {
        if let Some(e) = close_err {
            rc = 1;
            failure = Some(e);
        } else if let Some((atime, mtime)) = stamps {
            let r = call_simple(
                up,
                "update_upload_file_utime",
                vec![
                    ("access_time", Value::F64(atime)),
                    ("modified_time", Value::F64(mtime)),
                ],
            )
            .await?;
            if let Some(e) = r {
                rc = 1;
                failure = Some(e);
            }
        }
    }
    finished(up, rc, stderr).await?;
    Ok(failure)
}

pub async fn upload_directory(
    u: Upload,
    compress: Option<String>,
    env: &SlaveEnv,
    up: &mut Updates,
    interrupt: &Interrupt,
) -> Done {
    let shown = u.path.shown().display().to_string();
    let dir = match env
        .jail
        .open(&u.path, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
    {
        Ok(fd) => fd,
        Err(e) => {
            let msg = format!(
                "Cannot read directory '{shown}' for upload: [Errno {}] {}: '{shown}'",
                super::errno(&e),
                super::strerror(&e),
            );
            finished(up, 1, Some(msg)).await?;
            return Ok(None);
        }
    };
    let mut cmd = tokio::process::Command::new("tar");
    cmd.arg("-c");
    match compress.as_deref() {
        Some("gz") => {
            cmd.arg("-z");
        }
        Some("bz2") => {
            cmd.arg("-j");
        }
        _ => {}
    }
    // Started in the directory opened beneath the basedir, archiving `.`.
    cmd.arg("-f")
        .arg("-")
        .arg(".")
        .current_dir(Jail::cwd_of(&dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let spawned = cmd.spawn();
    drop(dir);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            finished(up, 1, Some(format!("cannot run tar: {e}"))).await?;
            return Ok(None);
        }
    };
    let _group = child.id().map(|pid| env.groups.started(pid as i32));
    // tar's complaints, kept short, read on the side so tar never blocks on them.
    let errors = child.stderr.take().map(|mut e| {
        tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = e.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = 4096usize.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            String::from_utf8_lossy(&kept).into_owned()
        })
    });
    up.header(&format!("sending {shown}\n")).await?;
    up.flush().await?;
    let Some(mut out) = child.stdout.take() else {
        finished(up, 1, Some("tar has no output".into())).await?;
        return Ok(None);
    };
    let pushed = push(
        &mut out,
        "update_upload_directory_write",
        u.path.shown(),
        &u,
        up,
        interrupt,
    )
    .await;
    drop(out);
    let pushed = match pushed {
        Ok(p) => p,
        Err(c) => {
            let _ = child.start_kill();
            return Err(c);
        }
    };
    let status = if pushed.rc != 0 {
        let _ = child.start_kill();
        child.wait().await.ok()
    } else {
        child.wait().await.ok()
    };
    let tar_errors = match errors {
        Some(h) => h.await.unwrap_or_default(),
        None => String::new(),
    };
    let mut rc = pushed.rc;
    let mut stderr = pushed.stderr;
    let mut failure = pushed.failure;
    let tar_ok = status.and_then(|s| s.code()).is_some_and(|c| c <= 1);
    if rc == 0 && !tar_ok {
        rc = 1;
        stderr = Some(format!(
            "Cannot read directory '{shown}' for upload: tar failed: {}",
            tar_errors.trim()
        ));
    } else if failure.is_none() && (rc == 0 || stderr.is_some()) {
        // As the worker: a truncated archive is still unpacked, with rc 1.
        if let Some(e) = call_simple(up, "update_upload_directory_unpack", Vec::new()).await? {
            rc = 1;
            failure = Some(e);
        }
    }
    finished(up, rc, stderr).await?;
    Ok(failure)
}

pub async fn download_file(
    d: Download,
    env: &SlaveEnv,
    up: &mut Updates,
    interrupt: &Interrupt,
) -> Done {
    let umask = env.umask;
    if let Some(parent) = d.path.parent() {
        if let Err(e) = tree::mkdir_all(&env.jail, &parent, 0o777 & !umask) {
            tracing::info!("download: {}: {e}", parent.shown().display());
        }
    }
    let opened = env
        .jail
        .open(
            &d.path,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NONBLOCK,
            0o666 & !umask,
        )
        .and_then(|fd| {
            if let Some(mode) = d.mode {
                nix::sys::stat::fchmod(
                    fd.as_fd(),
                    nix::sys::stat::Mode::from_bits_truncate(mode as nix::libc::mode_t),
                )?;
            }
            Ok(std::fs::File::from(fd))
        });
    let mut rc = 0;
    let mut stderr = None;
    let mut failure = None;
    match opened {
        Err(e) => {
            tracing::info!("download {}: {e}", d.path.shown().display());
            rc = 1;
            stderr = Some(format!(
                "Cannot open file '{}' for download: {}",
                d.path.shown().display(),
                super::strerror(&e)
            ));
        }
        Ok(f) => {
            let mut f = tokio::fs::File::from_std(f);
            let mut remaining = d.maxsize;
            loop {
                if is_interrupted(interrupt) {
                    rc = 1;
                    break;
                }
                let length = match remaining {
                    Some(r) => r.min(d.blocksize),
                    None => d.blocksize,
                };
                if length == 0 {
                    stderr = Some(format!(
                        "Maximum filesize reached, truncating file '{}'",
                        d.path.shown().display()
                    ));
                    rc = 1;
                    break;
                }
                let fields = vec![
                    ("length", Value::from(length)),
                    ("command_id", Value::from(up.command_id())),
                ];
                let data = match up.link().call("update_read_file", fields).await {
                    Ok(Value::Binary(b)) => b,
                    Ok(Value::String(s)) => s.into_bytes(),
                    Ok(Value::Nil) => Vec::new(),
                    Ok(other) => {
                        rc = 1;
                        failure = Some(format!("update_read_file returned {other}"));
                        break;
                    }
                    Err(CallError::Closed(c)) => return Err(c),
                    Err(CallError::Remote(m)) => {
                        rc = 1;
                        failure = Some(m);
                        break;
                    }
                };
                if data.is_empty() {
                    break;
                }
                if let Some(r) = remaining.as_mut() {
                    *r = r.saturating_sub(data.len() as u64);
                }
                if let Err(e) = f.write_all(&data).await {
                    rc = 1;
                    stderr = Some(format!("Cannot write '{}': {e}", d.path.shown().display()));
                    break;
                }
            }
            if let Err(e) = f.flush().await {
                rc = 1;
                stderr = Some(format!("Cannot write '{}': {e}", d.path.shown().display()));
            }
        }
    }
    if let Some(e) = call_simple(up, "update_read_file_close", Vec::new()).await? {
        tracing::info!("while closing the master's reader: {e}");
    }
    finished(up, rc, stderr).await?;
    Ok(failure)
}
