//! File transfers between master and slave: `upload_file` (slave → master file),
//! `upload_directory` (slave directory → master directory, as a tarball) and
//! `download_file` (master bytes or file → slave file).
//!
//! The slave drives a transfer: it pushes `update_upload_*_write` chunks or pulls
//! with `update_read_file`, answering each before the next, so at most one block
//! is in flight and memory stays flat whatever the size.

use std::path::{Path, PathBuf};

use rmpv::Value;
use tokio::io::AsyncWriteExt;

use super::command::{CommandError, CommandOutcome};
use super::connection::Transfer;
use super::registry::SlaveHandle;
use crate::protocol::map;

/// Block size asked of the slave for every transfer.
pub const BLOCKSIZE: u64 = 64 * 1024;

/// Where a download's bytes come from.
#[derive(Debug)]
pub enum DownloadSource {
    Bytes(Vec<u8>),
    File(PathBuf),
    /// A file the caller opened (beneath a directory it confines paths to).
    Opened(std::fs::File),
}

/// Block size asked of the slave for an artifact: large blocks, so that a
/// transfer makes few round trips (one block is in flight at a time).
pub const ARTIFACT_BLOCKSIZE: u64 = 1024 * 1024;

/// How long a cancelled upload may take to end on the slave.
pub const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A file uploaded into a file the caller opened.
#[derive(Debug, Clone)]
pub struct UploadedFile {
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the bytes, computed as they arrived.
    pub sha256: String,
}

/// What a transfer the master refused for its size failed with.
fn over_limit_message(max: Option<u64>) -> String {
    format!(
        "the upload is larger than the {} bytes allowed; refused",
        max.unwrap_or(0)
    )
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A finished transfer.
#[derive(Debug, Clone)]
pub struct TransferResult {
    /// Bytes moved over the wire (the tarball's size for a directory).
    pub bytes: u64,
    pub outcome: CommandOutcome,
}

fn local_err(path: &Path, e: impl std::fmt::Display) -> CommandError {
    CommandError::Local(format!("{}: {e}", path.display()))
}

/// A sibling of `dest` to write into before the final rename.
fn part_path(dest: &Path, suffix: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload".into());
    dest.with_file_name(format!(".{name}.{suffix}"))
}

fn maxsize_value(maxsize: Option<u64>) -> Value {
    maxsize.map(Value::from).unwrap_or(Value::Nil)
}

impl SlaveHandle {
    /// Copy the slave's file `slave_path` to the master's `dest` (written to a
    /// temporary sibling and renamed into place). `maxsize` caps the bytes.
    pub async fn upload_file(
        &self,
        slave_path: &str,
        dest: &Path,
        maxsize: Option<u64>,
    ) -> Result<TransferResult, CommandError> {
        let part = part_path(dest, "part");
        let file = tokio::fs::File::create(&part)
            .await
            .map_err(|e| local_err(&part, e))?;
        let transfer = Transfer::ToFile {
            file: Some(file),
            part: part.clone(),
            written: 0,
            limit: None,
            over_limit: false,
            hash: None,
        };
        let args = map(vec![
            ("path", Value::from(slave_path)),
            ("maxsize", maxsize_value(maxsize)),
            ("blocksize", Value::from(BLOCKSIZE)),
            ("keepstamp", Value::from(false)),
        ]);
        let res = self.transfer("upload_file", args, transfer).await;
        match res {
            Ok(r) => {
                tokio::fs::rename(&part, dest)
                    .await
                    .map_err(|e| local_err(dest, e))?;
                Ok(r)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e)
            }
        }
    }

    /// Copy the slave's directory `slave_path` into the master's directory `dest`
    /// (created if needed). Entries that would land outside `dest` are refused.
    pub async fn upload_directory(
        &self,
        slave_path: &str,
        dest: &Path,
        maxsize: Option<u64>,
    ) -> Result<TransferResult, CommandError> {
        self.upload_directory_blocks(slave_path, dest, maxsize, BLOCKSIZE)
            .await
    }

    /// [`SlaveHandle::upload_directory`] in blocks of `blocksize`, the master
    /// refusing (as well as the slave) a tarball of more than `maxsize` bytes.
    pub async fn upload_directory_blocks(
        &self,
        slave_path: &str,
        dest: &Path,
        maxsize: Option<u64>,
        blocksize: u64,
    ) -> Result<TransferResult, CommandError> {
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| local_err(parent, e))?;
        }
        let part = part_path(dest, "tar.part");
        let file = tokio::fs::File::create(&part)
            .await
            .map_err(|e| local_err(&part, e))?;
        let transfer = Transfer::ToDir {
            file: Some(file),
            part: part.clone(),
            dest: dest.to_path_buf(),
            written: 0,
            limit: maxsize,
            over_limit: false,
        };
        let args = map(vec![
            ("path", Value::from(slave_path)),
            // One byte more than allowed: the slave (Buildbot's worker too) fails
            // when it reaches maxsize, even at the end of a file of exactly that.
            (
                "maxsize",
                maxsize_value(maxsize.map(|m| m.saturating_add(1))),
            ),
            ("blocksize", Value::from(blocksize)),
            ("compress", Value::Nil),
        ]);
        let res = self.transfer("upload_directory", args, transfer).await;
        let _ = tokio::fs::remove_file(&part).await;
        res
    }

    /// Write `source` to the slave's file `slave_path` (its directory is created),
    /// with permission bits `mode` if given.
    pub async fn download_file(
        &self,
        source: DownloadSource,
        slave_path: &str,
        mode: Option<u32>,
    ) -> Result<TransferResult, CommandError> {
        let transfer = match source {
            DownloadSource::Bytes(data) => Transfer::FromBytes { data, pos: 0 },
            DownloadSource::Opened(file) => Transfer::FromFile {
                file: tokio::fs::File::from_std(file),
                read: 0,
            },
            DownloadSource::File(path) => Transfer::FromFile {
                file: tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| local_err(&path, e))?,
                read: 0,
            },
        };
        let args = map(vec![
            ("path", Value::from(slave_path)),
            ("maxsize", Value::Nil),
            ("blocksize", Value::from(BLOCKSIZE)),
            ("mode", mode.map(Value::from).unwrap_or(Value::Nil)),
        ]);
        self.transfer("download_file", args, transfer).await
    }

    /// Copy the slave's file `slave_path` into `file` (opened by the caller, who
    /// renames or removes it afterwards; `shown` names it in errors), in blocks
    /// of `blocksize`, hashing with SHA-256 as the bytes arrive. More than
    /// `maxsize` bytes are refused by the slave and, whatever the slave does,
    /// by the master: the command fails and the caller removes the file.
    ///
    /// When `cancel` resolves (the Build is stopped), the slave is asked to
    /// interrupt the upload, which then fails; a slave that does not end it
    /// within [`CANCEL_GRACE`] is not waited for.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_into(
        &self,
        slave_path: &str,
        file: tokio::fs::File,
        shown: &Path,
        maxsize: Option<u64>,
        blocksize: u64,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<UploadedFile, CommandError> {
        let transfer = Transfer::ToFile {
            file: Some(file),
            part: shown.to_path_buf(),
            written: 0,
            limit: maxsize,
            over_limit: false,
            hash: Some(Box::new(ring::digest::Context::new(&ring::digest::SHA256))),
        };
        let args = map(vec![
            ("path", Value::from(slave_path)),
            // One byte more than allowed: the slave (Buildbot's worker too) fails
            // when it reaches maxsize, even at the end of a file of exactly that.
            (
                "maxsize",
                maxsize_value(maxsize.map(|m| m.saturating_add(1))),
            ),
            ("blocksize", Value::from(blocksize)),
            ("keepstamp", Value::from(false)),
        ]);
        let (cmd, t) = self
            .conn
            .start_command("upload_file", args, Some(transfer))
            .await?;
        let interrupter = cmd.interrupter();
        let waiting = cmd.wait();
        tokio::pin!(waiting);
        tokio::pin!(cancel);
        let outcome = tokio::select! {
            r = &mut waiting => r?,
            _ = &mut cancel => {
                let _ = interrupter.interrupt("the build was stopped").await;
                match tokio::time::timeout(CANCEL_GRACE, &mut waiting).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(CommandError::Local(
                            "stopped; the slave did not end the upload in time".into(),
                        ))
                    }
                }
            }
        };
        if !outcome.succeeded() {
            let over = match &t {
                Some(t) => matches!(
                    &*t.lock().await,
                    Transfer::ToFile {
                        over_limit: true,
                        ..
                    }
                ),
                None => false,
            };
            return Err(CommandError::Failed {
                slave: self.name().to_string(),
                command: "upload_file".to_string(),
                message: if over {
                    over_limit_message(maxsize)
                } else {
                    outcome.failure_message()
                },
            });
        }
        let Some(t) = t else {
            return Err(CommandError::Local("the upload lost its file".into()));
        };
        let mut t = t.lock().await;
        match &mut *t {
            Transfer::ToFile {
                written,
                hash,
                file,
                part,
                ..
            } => {
                if let Some(mut f) = file.take() {
                    f.flush().await.map_err(|e| local_err(part, e))?;
                }
                let digest = hash
                    .take()
                    .map(|h| hex(h.finish().as_ref()))
                    .unwrap_or_default();
                Ok(UploadedFile {
                    bytes: *written,
                    sha256: digest,
                })
            }
            _ => Err(CommandError::Local("the upload lost its file".into())),
        }
    }

    async fn transfer(
        &self,
        command: &str,
        args: Value,
        transfer: Transfer,
    ) -> Result<TransferResult, CommandError> {
        let (cmd, t) = self
            .conn
            .start_command(command, args, Some(transfer))
            .await?;
        let outcome = cmd.wait().await?;
        let (bytes, over, limit) = match t {
            Some(t) => {
                let t = t.lock().await;
                match &*t {
                    Transfer::ToDir {
                        over_limit, limit, ..
                    } => (t.bytes(), *over_limit, *limit),
                    _ => (t.bytes(), false, None),
                }
            }
            None => (0, false, None),
        };
        if !outcome.succeeded() {
            return Err(CommandError::Failed {
                slave: self.name().to_string(),
                command: command.to_string(),
                message: if over {
                    over_limit_message(limit)
                } else {
                    outcome.failure_message()
                },
            });
        }
        Ok(TransferResult { bytes, outcome })
    }
}
