//! File transfers between master and slave (`buildbot_worker/commands/transfer.py`).
//!
//! Uploads push blocks with `update_upload_file_write` /
//! `update_upload_directory_write`, each awaited before the next is read, so at most
//! one block is in memory; then `update_upload_file_close` (and
//! `update_upload_file_utime` with `keepstamp`) or `update_upload_directory_unpack`.
//! A directory travels as a tar stream produced by the system `tar`, read as it is
//! written. Downloads pull blocks with `update_read_file` until the master returns
//! nothing, then `update_read_file_close`. Every transfer ends with an `rc` update
//! (plus `stderr` explaining a failure), as the worker's `TransferCommand` does.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Stdio;

use rmpv::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::Interrupt;
use crate::slave::args::Args;
use crate::slave::link::{CallError, LinkClosed};
use crate::slave::updates::{Stream, Updates};

type Done = Result<Option<String>, LinkClosed>;

/// Most a block may be, whatever the master asks (a frame must fit in memory).
const MAX_BLOCK: u64 = 4 * 1024 * 1024;

/// An upload's arguments.
#[derive(Debug)]
pub struct Upload {
    path: PathBuf,
    maxsize: Option<u64>,
    blocksize: u64,
    keepstamp: bool,
}

impl Upload {
    pub fn new(path: PathBuf, a: &Args<'_>) -> Result<Upload, String> {
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
    path: PathBuf,
    maxsize: Option<u64>,
    blocksize: u64,
    mode: Option<u32>,
}

impl Download {
    pub fn new(path: PathBuf, a: &Args<'_>) -> Result<Download, String> {
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

pub async fn upload_file(u: Upload, up: &mut Updates, interrupt: &Interrupt) -> Done {
    let mut stamps = None;
    let file = match tokio::fs::File::open(&u.path).await {
        Ok(f) if f.metadata().await.map(|m| m.is_file()).unwrap_or(false) => {
            if u.keepstamp {
                if let Ok(m) = f.metadata().await {
                    let t = |s: i64, ns: i64| s as f64 + ns as f64 / 1e9;
                    stamps = Some((t(m.atime(), m.atime_nsec()), t(m.mtime(), m.mtime_nsec())));
                }
            }
            Some(f)
        }
        _ => None,
    };
    up.header(&format!("sending {}\n", u.path.display()))
        .await?;
    up.flush().await?;
    let (mut rc, stderr, mut failure) = match file {
        None => (
            1,
            Some(format!(
                "Cannot open file '{}' for upload",
                u.path.display()
            )),
            None,
        ),
        Some(mut f) => {
            let r = push(
                &mut f,
                "update_upload_file_write",
                &u.path,
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
    up: &mut Updates,
    interrupt: &Interrupt,
) -> Done {
    if !u.path.is_dir() {
        let msg = format!(
            "Cannot read directory '{}' for upload: [Errno 2] No such file or directory: '{}'",
            u.path.display(),
            u.path.display()
        );
        finished(up, 1, Some(msg)).await?;
        return Ok(None);
    }
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
    cmd.arg("-f")
        .arg("-")
        .arg("-C")
        .arg(&u.path)
        .arg(".")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            finished(up, 1, Some(format!("cannot run tar: {e}"))).await?;
            return Ok(None);
        }
    };
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
    up.header(&format!("sending {}\n", u.path.display()))
        .await?;
    up.flush().await?;
    let Some(mut out) = child.stdout.take() else {
        finished(up, 1, Some("tar has no output".into())).await?;
        return Ok(None);
    };
    let pushed = push(
        &mut out,
        "update_upload_directory_write",
        &u.path,
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
            "Cannot read directory '{}' for upload: tar failed: {}",
            u.path.display(),
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
    umask: u32,
    up: &mut Updates,
    interrupt: &Interrupt,
) -> Done {
    if let Some(parent) = d.path.parent() {
        if !parent.exists() {
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o777 & !umask)
                .create(parent);
        }
    }
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o666 & !umask)
        .open(&d.path)
        .and_then(|f| {
            if let Some(mode) = d.mode {
                f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            Ok(f)
        });
    let mut rc = 0;
    let mut stderr = None;
    let mut failure = None;
    match opened {
        Err(_) => {
            rc = 1;
            stderr = Some(format!(
                "Cannot open file '{}' for download",
                d.path.display()
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
                        d.path.display()
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
                    stderr = Some(format!("Cannot write '{}': {e}", d.path.display()));
                    break;
                }
            }
            if let Err(e) = f.flush().await {
                rc = 1;
                stderr = Some(format!("Cannot write '{}': {e}", d.path.display()));
            }
        }
    }
    if let Some(e) = call_simple(up, "update_read_file_close", Vec::new()).await? {
        tracing::info!("while closing the master's reader: {e}");
    }
    finished(up, rc, stderr).await?;
    Ok(failure)
}
