//! Step logs on disk: append-only files under `MASTERDIR/logs/`, one per log of a
//! step, so a log of any size never sits in memory and `raw` download is a plain
//! file stream.
//!
//! A log is two files. `NAME.log` holds the raw bytes exactly as the slave sent
//! them, stdout, stderr and header text interleaved in arrival order. When more
//! than one channel appears, `NAME.log.ch` holds the channel *runs*: one 9-byte
//! record (`u64` little-endian byte offset where the run starts, `u8` channel) each
//! time the channel changes, so a page can style stderr and headers later without
//! the raw file carrying markup. A log that is only stdout has no `.ch` file.
//! `NAME.log.ts` holds the arrival times: one 16-byte record (`u64` little-endian
//! byte offset, `i64` little-endian Unix time in milliseconds) for a piece of
//! output that arrived in a millisecond no earlier piece did, so each line's
//! time is that of the piece holding its start. The time is when the master
//! received the piece (the master asks the slave for plain text output, which
//! carries no times). A log written before times were recorded has no `.ts` file.
//!
//! Writes go through a large buffer (no syscall per line, no database write per
//! line), and the files are created only when the Build has sent the Step's
//! command; the engine flushes and records size and line count in SQLite every
//! second or so and at the end of the step. The engine's logs ([`AsyncLog`]) are
//! created and written by a thread of their own ([`LogDisk`]), so a slow or hung
//! disk never stalls the runtime that serves the slaves' links; a Step waits for
//! its logs to be stored before its end is recorded, and takes no more output
//! while [`IN_FLIGHT`] bytes of it wait for the disk. [`LogWriter`] is the same
//! log written by the calling thread.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

mod compressed;
mod disk;
mod search;

pub use compressed::{
    compress_log, compressed_path, is_compressed, open_log, read_compressed_at, read_tail,
    remove_log_files, remove_plain, write_compressed,
};
pub use disk::{AsyncLog, LogDisk, LogGroup, IN_FLIGHT};
pub use search::{search_log, LineMatch, LogSearch, EXCERPT_BYTES, MAX_NEEDLE};

/// Which stream a piece of a log came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Stdout = 0,
    Stderr = 1,
    Header = 2,
}

impl Channel {
    fn from_byte(b: u8) -> Channel {
        match b {
            1 => Channel::Stderr,
            2 => Channel::Header,
            _ => Channel::Stdout,
        }
    }
}

/// Bytes buffered before a write to the file.
const BUFFER: usize = 256 * 1024;

/// Size of one record of a `.ch` file.
const RUN_RECORD: usize = 9;

/// Size of one record of a `.ts` file.
const TIME_RECORD: usize = 16;

/// A path component made safe: anything but `[A-Za-z0-9._-]` becomes `_`, and a
/// name of dots only gets a leading `_`.
pub fn safe_name(name: &str) -> String {
    let s = crate::sources::path_safe(name);
    if s.is_empty() || s.chars().all(|c| c == '.') {
        format!("_{s}")
    } else {
        s
    }
}

/// The path, relative to the master directory, of log `log` of step `step` (its
/// number and name) of build `number` of `builder`. One directory per builder, as
/// Buildbot keeps a builder's logs: a directory per build would cost the master a
/// `mkdir` (an inode) for every build.
pub fn log_rel_path(builder: &str, number: i64, step: i64, step_name: &str, log: &str) -> String {
    format!(
        "logs/{}/{number}-{step:03}-{}-{}.log",
        safe_name(builder),
        safe_name(step_name),
        safe_name(log)
    )
}

/// Make the master's `logs/` directory, marked as a top of directory hierarchies
/// for ext2/3/4 (`chattr +T`, as one marks `/home`).
///
/// Each builder's log directory is then placed by the Orlov allocator in a block
/// group of its own instead of the master directory's, so a builder's log files
/// are not created among inodes that other work on the same filesystem has just
/// freed: ext4 without a journal skips every inode freed in the last one to six
/// minutes, one buffer lookup each, and after a mass deletion nearby (a cleaned
/// `/tmp`, pruned logs, a compiler's temporary files) creating one file cost
/// 1.3 ms instead of 50 µs on the bench machine, two files per Step. Where the
/// flag is not supported (another filesystem) the directory is just made.
pub fn prepare_logs_dir(basedir: &Path) -> std::io::Result<()> {
    let dir = basedir.join("logs");
    std::fs::create_dir_all(&dir)?;
    if let Err(e) = set_top_dir(&dir) {
        tracing::debug!("{}: not marked a top directory: {e}", dir.display());
    }
    // A builder directory that a crash left under its temporary name
    // ([`make_builder_dir`]) holds nothing yet: it goes.
    for entry in std::fs::read_dir(&dir)?.flatten() {
        if entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(NEW_DIR_PREFIX.as_bytes())
        {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
    Ok(())
}

/// The start of a builder log directory's name while it is being made.
const NEW_DIR_PREFIX: &str = ".new-";

/// `FS_TOPDIR_FL` of `linux/fs.h` (`chattr +T`).
#[cfg(target_os = "linux")]
const FS_TOPDIR_FL: nix::libc::c_int = 0x0002_0000;

/// The directory's inode flags (`FS_IOC_GETFLAGS`).
#[cfg(target_os = "linux")]
fn dir_flags(dir: &File) -> std::io::Result<nix::libc::c_int> {
    use std::os::fd::AsRawFd;
    let mut flags: nix::libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which is valid
    // for the call; the descriptor is open for its duration.
    let r = unsafe { nix::libc::ioctl(dir.as_raw_fd(), nix::libc::FS_IOC_GETFLAGS, &mut flags) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(flags)
}

#[cfg(target_os = "linux")]
fn set_top_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(dir)?;
    let flags = dir_flags(&f)?;
    if flags & FS_TOPDIR_FL != 0 {
        return Ok(());
    }
    let flags = flags | FS_TOPDIR_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which is valid
    // for the call; the descriptor is open for its duration.
    let r = unsafe { nix::libc::ioctl(f.as_raw_fd(), nix::libc::FS_IOC_SETFLAGS, &flags) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_top_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// The side file of channel runs next to a log file.
pub fn channels_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".ch");
    PathBuf::from(s)
}

/// The side file of arrival times next to a log file.
pub fn times_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".ts");
    PathBuf::from(s)
}

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a log has buffered and not yet handed to its files: its bytes (up to
/// [`BUFFER`]), its channel-run records, and its size and line count so far.
struct LogBuffer {
    /// Bytes not yet written to the file.
    buf: Vec<u8>,
    /// Run records not yet written to the `.ch` file.
    runs: Vec<u8>,
    /// A channel other than stdout appeared: the log needs its `.ch` file.
    has_runs: bool,
    /// Time records not yet written to the `.ts` file.
    times: Vec<u8>,
    /// The millisecond of the last time record (one record per millisecond at most).
    last_ms: i64,
    channel: Option<Channel>,
    size: u64,
    lines: u64,
}

/// Bytes given to a log: lent (copied if kept) or given away (kept as they are).
enum Piece<'a> {
    Lent(&'a [u8]),
    Given(Vec<u8>),
}

impl Piece<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Lent(b) => b,
            Piece::Given(v) => v,
        }
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            Piece::Lent(b) => b.to_vec(),
            Piece::Given(v) => v,
        }
    }
}

/// Bytes (and run records) to append to a log's files, in order.
struct Chunk {
    data: Vec<u8>,
    runs: Vec<u8>,
    has_runs: bool,
    times: Vec<u8>,
}

impl Chunk {
    fn is_empty(&self) -> bool {
        self.data.is_empty() && self.runs.is_empty() && self.times.is_empty()
    }
}

/// Run records kept before they are written out.
const RUNS_BUFFER: usize = 8 * 1024;

impl LogBuffer {
    fn new() -> LogBuffer {
        LogBuffer {
            buf: Vec::new(),
            runs: Vec::new(),
            has_runs: false,
            times: Vec::new(),
            last_ms: i64::MIN,
            channel: None,
            size: 0,
            lines: 0,
        }
    }

    /// Append bytes of one channel; `out` gets what must be written now (the
    /// buffer when full, and a piece of [`BUFFER`] or more by itself, moved when
    /// the caller gave it away).
    fn append(&mut self, channel: Channel, data: Piece<'_>, out: &mut Vec<Chunk>) {
        let bytes = data.bytes();
        if bytes.is_empty() {
            return;
        }
        if self.channel != Some(channel) {
            // The first run of stdout needs no record: no `.ch` file means stdout.
            if self.channel.is_some() || channel != Channel::Stdout {
                if !self.has_runs {
                    self.has_runs = true;
                    if self.channel.is_some() {
                        // Earlier bytes were stdout.
                        self.runs.extend_from_slice(&record(0, Channel::Stdout));
                    }
                }
                self.runs.extend_from_slice(&record(self.size, channel));
            }
            self.channel = Some(channel);
        }
        // The piece arrives now: a record when its millisecond is a new one.
        let ms = now_ms();
        if ms != self.last_ms {
            self.last_ms = ms;
            self.times.extend_from_slice(&time_record(self.size, ms));
        }
        let len = bytes.len();
        if self.buf.len() + len > BUFFER
            || self.runs.len() > RUNS_BUFFER
            || self.times.len() > RUNS_BUFFER
        {
            out.push(self.take());
        }
        self.size += len as u64;
        self.lines += count_newlines(bytes);
        if len >= BUFFER {
            out.push(Chunk {
                data: data.into_vec(),
                runs: Vec::new(),
                has_runs: self.has_runs,
                times: Vec::new(),
            });
        } else {
            if self.buf.capacity() == 0 {
                self.buf.reserve(BUFFER.min(len.max(4096) * 4));
            }
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Everything buffered, to be written now.
    fn take(&mut self) -> Chunk {
        let cap = self.buf.capacity();
        Chunk {
            data: std::mem::replace(&mut self.buf, Vec::with_capacity(cap)),
            runs: std::mem::take(&mut self.runs),
            has_runs: self.has_runs,
            times: std::mem::take(&mut self.times),
        }
    }
}

/// A log's open files: touched by one writer at a time (the log's own
/// [`LogWriter`], or the [`LogDisk`] thread for an [`AsyncLog`]).
#[derive(Default)]
struct LogFiles {
    /// The log file, once opened.
    file: Option<File>,
    /// The `.ch` file, once opened.
    runs_file: Option<File>,
    /// The `.ts` file, once opened.
    times_file: Option<File>,
}

impl LogFiles {
    /// Create (truncating) the log file if not yet done, making its directory.
    /// With `runs`, its `.ch` file too, empty (all stdout) until another channel
    /// appears; a command's log nearly always needs it (its header comes first).
    /// With `times`, its `.ts` file too (made when the first time is written).
    fn open(&mut self, path: &Path, runs: bool, times: bool) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(create_file(path)?);
            // A side file left by an earlier log of this name is not this one's.
            if !runs && self.runs_file.is_none() {
                let _ = std::fs::remove_file(channels_path(path));
            }
            if !times && self.times_file.is_none() {
                let _ = std::fs::remove_file(times_path(path));
            }
        }
        if runs && self.runs_file.is_none() {
            self.runs_file = Some(File::create(channels_path(path))?);
        }
        if times && self.times_file.is_none() {
            self.times_file = Some(File::create(times_path(path))?);
        }
        Ok(())
    }

    /// Append a chunk, opening the files first if needed (so a log that is
    /// written out always has its file, even empty).
    fn write(&mut self, path: &Path, chunk: &Chunk) -> std::io::Result<()> {
        self.open(path, chunk.has_runs, !chunk.times.is_empty())?;
        if let Some(f) = self.file.as_mut() {
            if !chunk.data.is_empty() {
                f.write_all(&chunk.data)?;
            }
        }
        if let Some(f) = self.runs_file.as_mut() {
            if !chunk.runs.is_empty() {
                f.write_all(&chunk.runs)?;
            }
        }
        if let Some(f) = self.times_file.as_mut() {
            if !chunk.times.is_empty() {
                f.write_all(&chunk.times)?;
            }
        }
        Ok(())
    }
}

/// An append-only log written by the calling thread.
///
/// It touches the disk only when opened ([`LogWriter::open`]) or when its bytes
/// are written out. The build engine writes through an [`AsyncLog`] instead, whose
/// disk work runs on the [`LogDisk`] thread.
pub struct LogWriter {
    path: PathBuf,
    buffer: LogBuffer,
    files: LogFiles,
}

impl LogWriter {
    /// A log at `path`, nothing on disk yet.
    pub fn new(path: &Path) -> LogWriter {
        LogWriter {
            path: path.to_path_buf(),
            buffer: LogBuffer::new(),
            files: LogFiles::default(),
        }
    }

    /// Create (truncating) the log file at `path` now, making its directory.
    pub fn create(path: &Path) -> std::io::Result<LogWriter> {
        let mut w = LogWriter::new(path);
        w.open(false)?;
        Ok(w)
    }

    /// Create (truncating) the log file if not yet done, making its directory.
    /// With `runs`, its `.ch` file too, empty (all stdout) until another channel
    /// appears; and its `.ts` file with it (a command's log gets its header, and
    /// its time, at once).
    pub fn open(&mut self, runs: bool) -> std::io::Result<()> {
        self.files.open(
            &self.path,
            runs || self.buffer.has_runs,
            runs || !self.buffer.times.is_empty(),
        )
    }

    /// Append bytes of one channel.
    pub fn append(&mut self, channel: Channel, data: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::new();
        self.buffer.append(channel, Piece::Lent(data), &mut out);
        for chunk in out {
            self.files.write(&self.path, &chunk)?;
        }
        Ok(())
    }

    /// Write everything appended so far to the files (opening them if needed),
    /// so readers see it.
    pub fn flush(&mut self) -> std::io::Result<()> {
        let chunk = self.buffer.take();
        self.files.write(&self.path, &chunk)
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.buffer.size
    }

    /// Newlines written so far (a last line without one is not counted).
    pub fn lines(&self) -> u64 {
        self.buffer.lines
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Create (truncating) a file, making its directory only when it is missing: a
/// builder's log directory exists after its first Build, and `create_dir_all`
/// would ask the filesystem again for every log.
///
/// Builds of one builder making its directory at once may each rename their
/// own into place: one put there over the empty one another Build has just
/// looked up makes that Build's create fail as missing once more. It is
/// then tried again (a few times), and finds the directory in place.
fn create_file(path: &Path) -> std::io::Result<File> {
    let mut tries = 0;
    loop {
        match File::create(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 5 => {
                tries += 1;
                if let Some(dir) = path.parent() {
                    make_builder_dir(dir)?;
                }
            }
            other => return other,
        }
    }
}

/// Make a builder's log directory (and `logs/` above it if missing) under a name
/// of its own first, then rename it into place.
///
/// Under a top directory ([`prepare_logs_dir`]) ext4 chooses a new directory's
/// block group from a hash of its *name*, so `logs/BUILDER` would land in the same
/// group every time it is made: after a master directory is removed and made
/// again (every test or bench run; a master moved or restored), the builder's
/// new log files would be created among the inodes its previous logs just freed,
/// each of which ext4 without a journal steps over one by one. A fresh temporary
/// name gives a fresh group, and a rename keeps the inode where it was made.
fn make_builder_dir(dir: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return std::fs::create_dir_all(dir);
    };
    if !parent.is_dir() {
        std::fs::create_dir_all(parent)?;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut tmp_name = std::ffi::OsString::from(NEW_DIR_PREFIX);
    tmp_name.push(name);
    tmp_name.push(format!("-{}-{nanos}", std::process::id()));
    let tmp = parent.join(tmp_name);
    match std::fs::create_dir(&tmp) {
        Ok(()) => {}
        // A name that cannot be made (taken, too long): the plain way.
        Err(_) => return std::fs::create_dir_all(dir),
    }
    // Made meanwhile by another Build of this builder: that one stays (a
    // rename would replace it while it is still empty).
    if dir.is_dir() {
        let _ = std::fs::remove_dir(&tmp);
        return Ok(());
    }
    let renamed = std::fs::rename(&tmp, dir);
    if renamed.is_err() {
        // Made meanwhile by another Build of this builder: that one is used.
        let _ = std::fs::remove_dir(&tmp);
    }
    if dir.is_dir() {
        Ok(())
    } else {
        renamed
    }
}

fn record(offset: u64, channel: Channel) -> [u8; RUN_RECORD] {
    let mut r = [0u8; RUN_RECORD];
    r[..8].copy_from_slice(&offset.to_le_bytes());
    r[8] = channel as u8;
    r
}

fn time_record(offset: u64, ms: i64) -> [u8; TIME_RECORD] {
    let mut r = [0u8; TIME_RECORD];
    r[..8].copy_from_slice(&offset.to_le_bytes());
    r[8..].copy_from_slice(&ms.to_le_bytes());
    r
}

/// The arrival times of a log: `(offset, Unix time in ms)` in order of offset,
/// each the time the piece starting there (and those after it up to the next
/// record) reached the master. Empty for a log without a `.ts` file (one written
/// before times were recorded).
pub fn read_times(log: &Path) -> std::io::Result<Vec<(u64, i64)>> {
    let raw = match std::fs::read(times_path(log)) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(raw
        .chunks_exact(TIME_RECORD)
        .map(|r| {
            let mut off = [0u8; 8];
            let mut ms = [0u8; 8];
            off.copy_from_slice(&r[..8]);
            ms.copy_from_slice(&r[8..]);
            (u64::from_le_bytes(off), i64::from_le_bytes(ms))
        })
        .collect())
}

/// The time of the byte at `offset`: that of the last record at or before it.
pub fn time_at(times: &[(u64, i64)], offset: u64) -> Option<i64> {
    let i = times.partition_point(|(o, _)| *o <= offset);
    i.checked_sub(1).map(|i| times[i].1)
}

fn count_newlines(data: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', data).count() as u64
}

/// A reader of a log's bytes.
pub type LogBytes = Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>;

/// A log's bytes as they are now: a reader up to the file's current end (a log
/// still growing is read that far), and that length. A log whose Step has just
/// started may have no file yet ([`LogWriter`]): it reads as empty. A finished
/// log stored compressed (`NAME.log.zst`) is decompressed as it is read, a chunk
/// at a time.
pub async fn log_reader(path: &Path, complete: bool) -> std::io::Result<(LogBytes, u64)> {
    use tokio::io::AsyncReadExt;
    match tokio::fs::File::open(path).await {
        Ok(f) => {
            let len = f.metadata().await?.len();
            Ok((Box::new(f.take(len)), len))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let p = path.to_path_buf();
            let zst = tokio::task::spawn_blocking(move || {
                if compressed_path(&p).exists() {
                    compressed::async_reader(&p).map(Some)
                } else {
                    Ok(None)
                }
            })
            .await
            .map_err(std::io::Error::other)??;
            match zst {
                Some(r) => Ok(r),
                None if !complete => Ok((Box::new(tokio::io::empty()), 0)),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The channel runs of a log: `(offset, channel)` in order, each run lasting to the
/// next offset (or the end). A log without a `.ch` file is all stdout.
pub fn read_channel_runs(log: &Path) -> std::io::Result<Vec<(u64, Channel)>> {
    let mut f = match File::open(channels_path(log)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(vec![(0, Channel::Stdout)])
        }
        Err(e) => return Err(e),
    };
    let mut raw = Vec::new();
    f.read_to_end(&mut raw)?;
    let mut out: Vec<(u64, Channel)> = raw
        .chunks_exact(RUN_RECORD)
        .map(|r| {
            let mut off = [0u8; 8];
            off.copy_from_slice(&r[..8]);
            (u64::from_le_bytes(off), Channel::from_byte(r[8]))
        })
        .collect();
    if out.first().map(|(o, _)| *o) != Some(0) {
        out.insert(0, (0, Channel::Stdout));
    }
    Ok(out)
}

/// Bytes `from..to` of a log as they are now (fewer when the file is shorter;
/// none when a growing log has no file yet), read with a seek: a page of a
/// 100 MB log costs the page, not the log before it. A compressed log is
/// decompressed up to `from` (its decoder kept, so the next page goes on from
/// there).
pub async fn log_range(path: &Path, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let p = path.to_path_buf();
            let max = usize::try_from(to.saturating_sub(from)).unwrap_or(usize::MAX);
            let got = tokio::task::spawn_blocking(move || read_compressed_at(&p, from, max))
                .await
                .map_err(std::io::Error::other)??;
            return Ok(got.map(|(b, _)| b).unwrap_or_default());
        }
        Err(e) => return Err(e),
    };
    f.seek(std::io::SeekFrom::Start(from)).await?;
    let mut buf = Vec::with_capacity(to.saturating_sub(from).min(1 << 24) as usize);
    f.take(to.saturating_sub(from))
        .read_to_end(&mut buf)
        .await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_logs_directory_is_made_a_top_directory_where_the_filesystem_can() {
        let dir = tempfile::tempdir().unwrap();
        prepare_logs_dir(dir.path()).unwrap();
        let logs = File::open(dir.path().join("logs")).unwrap();
        // A filesystem without inode flags (tmpfs, overlayfs) has nothing to mark;
        // one with them (ext4, the bench machine's) must carry the mark.
        if let Ok(flags) = dir_flags(&logs) {
            let probe = dir.path().join("probe");
            std::fs::create_dir(&probe).unwrap();
            if set_top_dir(&probe).is_ok() {
                assert_ne!(flags & FS_TOPDIR_FL, 0, "logs/ is not marked +T");
            }
        }
        // Again on a master's next start: still there, nothing to do.
        prepare_logs_dir(dir.path()).unwrap();
    }

    #[test]
    fn a_builders_log_directory_is_made_under_a_name_of_its_own_then_renamed() {
        let dir = tempfile::tempdir().unwrap();
        prepare_logs_dir(dir.path()).unwrap();
        let logs = dir.path().join("logs");
        // A crash between the two steps left one behind: the next start clears it.
        std::fs::create_dir(logs.join(".new-b-1-2")).unwrap();
        prepare_logs_dir(dir.path()).unwrap();
        assert!(!logs.join(".new-b-1-2").exists());
        // Builds of one builder on several slaves make its directory at once:
        // every one of them gets its file there, and no temporary name is left.
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let p = logs.join("b").join(format!("{i}-001-s-stdio.log"));
                std::thread::spawn(move || {
                    let mut w = LogWriter::create(&p).unwrap();
                    w.append(Channel::Stdout, b"x\n").unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["b"]);
        let logs_made = std::fs::read_dir(logs.join("b"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count();
        assert_eq!(logs_made, 8);
        // Without `logs/` (a log written before the master prepared it) all is made.
        let p = dir.path().join("other/logs/c/1-001-s-stdio.log");
        LogWriter::create(&p).unwrap();
        assert!(p.exists());
    }

    #[test]
    fn raw_bytes_and_channel_runs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/1-x.log");
        let mut w = LogWriter::create(&p).unwrap();
        w.append(Channel::Stdout, b"one\ntwo\n").unwrap();
        w.append(Channel::Stdout, b"three").unwrap();
        w.append(Channel::Stderr, b"err\n").unwrap();
        w.append(Channel::Header, b"hdr\n").unwrap();
        w.append(Channel::Stdout, b"!\n").unwrap();
        assert_eq!(w.size(), 23);
        assert_eq!(w.lines(), 5);
        drop(w);
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"one\ntwo\nthreeerr\nhdr\n!\n".to_vec()
        );
        assert_eq!(
            read_channel_runs(&p).unwrap(),
            vec![
                (0, Channel::Stdout),
                (13, Channel::Stderr),
                (17, Channel::Header),
                (21, Channel::Stdout)
            ]
        );
    }

    #[test]
    fn stdout_only_has_no_side_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut w = LogWriter::create(&p).unwrap();
        w.append(Channel::Stdout, b"hi\n").unwrap();
        w.flush().unwrap();
        assert!(!channels_path(&p).exists());
        assert_eq!(read_channel_runs(&p).unwrap(), vec![(0, Channel::Stdout)]);
        let q = dir.path().join("y.log");
        let mut w = LogWriter::create(&q).unwrap();
        w.append(Channel::Header, b"h\n").unwrap();
        w.append(Channel::Stdout, b"o\n").unwrap();
        drop(w);
        assert_eq!(
            read_channel_runs(&q).unwrap(),
            vec![(0, Channel::Header), (2, Channel::Stdout)]
        );
    }

    #[tokio::test]
    async fn files_come_when_opened_and_a_running_log_without_them_reads_empty() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("logs/b/1-001-x-stdio.log");
        let mut w = LogWriter::new(&p);
        assert!(!p.exists() && !dir.path().join("logs").exists());
        // A Step just recorded, its command not yet sent: an empty log.
        let (mut r, len) = log_reader(&p, false).await.unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!((len, got.len()), (0, 0));
        // A complete log must have its file.
        assert!(log_reader(&p, true).await.is_err());
        w.open(true).unwrap();
        assert!(p.exists() && channels_path(&p).exists());
        assert_eq!(read_channel_runs(&p).unwrap(), vec![(0, Channel::Stdout)]);
        w.append(Channel::Header, b"cmd\n").unwrap();
        w.append(Channel::Stdout, b"out\n").unwrap();
        w.flush().unwrap();
        let (mut r, len) = log_reader(&p, false).await.unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!((len, got.as_slice()), (8, &b"cmd\nout\n"[..]));
        assert_eq!(
            read_channel_runs(&p).unwrap(),
            vec![(0, Channel::Header), (4, Channel::Stdout)]
        );
        // A log never opened still leaves its (empty) file behind.
        let q = dir.path().join("logs/b/1-002-y-stdio.log");
        drop(LogWriter::new(&q));
        assert_eq!(std::fs::read(&q).unwrap(), b"");
    }

    #[test]
    fn big_appends_go_straight_to_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.log");
        let mut w = LogWriter::new(&p);
        let big = vec![b'x'; BUFFER + 10];
        w.append(Channel::Stdout, b"a\n").unwrap();
        w.append(Channel::Stderr, &big).unwrap();
        w.append(Channel::Stdout, b"b\n").unwrap();
        drop(w);
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), BUFFER + 14);
        assert!(data.starts_with(b"a\nxxx") && data.ends_with(b"xxb\n"));
        assert_eq!(
            read_channel_runs(&p).unwrap(),
            vec![
                (0, Channel::Stdout),
                (2, Channel::Stderr),
                (BUFFER as u64 + 12, Channel::Stdout)
            ]
        );
    }

    /// A log written through the disk thread: every byte in order, big pieces
    /// handed over whole, channel runs as [`LogWriter`] writes them, the file made
    /// even when nothing was written.
    #[tokio::test]
    async fn the_disk_thread_writes_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let disk = LogDisk::start();
        let group = LogGroup::new();
        let p = dir.path().join("logs/b/1-001-s-stdio.log");
        let mut w = AsyncLog::new(&disk, &group, &p);
        w.open(true);
        w.append(Channel::Header, b"cmd\n");
        let big = vec![b'x'; BUFFER + 10];
        w.append_owned(Channel::Stdout, big.clone());
        w.append(Channel::Stderr, b"err\n");
        w.append(Channel::Stdout, b"done\n");
        w.flush();
        let (size, lines) = (w.size(), w.lines());
        let empty = dir.path().join("logs/b/1-002-t-stdio.log");
        drop(AsyncLog::new(&disk, &group, &empty));
        group.clone().settled().await;
        drop(w);
        assert_eq!(group.error(), None);
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len() as u64, size);
        assert_eq!(lines, 3);
        let mut expected = b"cmd\n".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"err\ndone\n");
        assert!(data == expected, "the bytes differ");
        let n = BUFFER as u64 + 14;
        assert_eq!(
            read_channel_runs(&p).unwrap(),
            vec![
                (0, Channel::Header),
                (4, Channel::Stdout),
                (n, Channel::Stderr),
                (n + 4, Channel::Stdout)
            ]
        );
        // Dropped unopened: its (empty) file is made all the same, once settled.
        group.clone().settled().await;
        assert_eq!(std::fs::read(&empty).unwrap(), b"");
    }

    /// A file that cannot be made: the disk thread keeps the first error for the
    /// Step, which still settles.
    #[tokio::test]
    async fn a_failed_write_is_reported_to_its_step() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logs"), "a file, not a directory").unwrap();
        let disk = LogDisk::start();
        let group = LogGroup::new();
        let mut w = AsyncLog::new(&disk, &group, &dir.path().join("logs/b/1.log"));
        w.open(true);
        w.append(Channel::Stdout, b"lost\n");
        w.flush();
        group.clone().settled().await;
        assert!(group.error().is_some(), "no error reported");
    }

    /// A disk that does not take the bytes (a FIFO nobody reads yet: opening it
    /// waits): the Step's output piles up only to [`IN_FLIGHT`] before the Step
    /// is told to wait, and once the disk takes them everything arrives in order.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disk_that_waits_makes_the_step_wait() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let disk = LogDisk::start();
        let group = LogGroup::new();
        let mut w = AsyncLog::new(&disk, &group, &fifo);
        w.open(false);
        let piece = vec![b'y'; BUFFER];
        let mut sent = 0usize;
        while group.has_room() {
            w.append(Channel::Stdout, &piece);
            sent += piece.len();
            assert!(sent <= IN_FLIGHT + 2 * BUFFER, "no limit on what waits");
        }
        let room = tokio::spawn(group.clone().room());
        tokio::task::yield_now().await;
        assert!(!room.is_finished(), "room while the disk takes nothing");
        let reader = std::thread::spawn(move || std::fs::read(&fifo).unwrap());
        tokio::time::timeout(std::time::Duration::from_secs(30), room)
            .await
            .expect("room once the disk takes the bytes")
            .unwrap();
        w.flush();
        drop(w);
        group.clone().settled().await;
        let got = reader.join().unwrap();
        assert_eq!(got.len(), sent);
        assert!(got.iter().all(|b| *b == b'y'));
    }

    /// Wait (a busy wait, bounded) until the clock has moved past `ms`.
    fn next_ms(ms: i64) -> i64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let now = now_ms();
            if now > ms {
                return now;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the clock stands still"
            );
            std::thread::yield_now();
        }
    }

    /// Each piece's arrival is recorded with its offset, once per millisecond at
    /// most; read back, every byte has the time of the piece holding it.
    #[tokio::test]
    async fn arrival_times_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("logs/b/1-001-s-stdio.log");
        let before = now_ms();
        let mut w = LogWriter::new(&p);
        w.open(true).unwrap();
        w.append(
            Channel::Header,
            b"cmd
",
        )
        .unwrap();
        let t1 = next_ms(now_ms());
        w.append(
            Channel::Stdout,
            b"one
",
        )
        .unwrap();
        w.append(
            Channel::Stdout,
            b"two
",
        )
        .unwrap();
        next_ms(t1);
        w.append(
            Channel::Stderr,
            b"three
",
        )
        .unwrap();
        let after = now_ms();
        drop(w);
        let times = read_times(&p).unwrap();
        assert!(times.len() >= 3 && times.len() <= 4, "{times:?}");
        assert_eq!(times[0].0, 0);
        assert!(times.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        assert!(times.iter().all(|(_, t)| (before..=after).contains(t)));
        let (t0, ta, tb, tc) = (
            time_at(&times, 0).unwrap(),
            time_at(&times, 4).unwrap(),
            time_at(&times, 9).unwrap(),
            time_at(&times, 12).unwrap(),
        );
        assert!(t0 < ta && ta <= tb && tb < tc, "{times:?}");
        assert_eq!(time_at(&[], 0), None);
        // Through the disk thread: the same records, and retention removes them.
        let q = dir.path().join("logs/b/2-001-s-stdio.log");
        let disk = LogDisk::start();
        let group = LogGroup::new();
        let mut a = AsyncLog::new(&disk, &group, &q);
        a.open(true);
        a.append(
            Channel::Header,
            b"cmd
",
        );
        next_ms(now_ms());
        a.append(
            Channel::Stdout,
            b"out
",
        );
        a.finish();
        drop(a);
        group.clone().settled().await;
        let times = read_times(&q).unwrap();
        assert_eq!(times.iter().map(|t| t.0).collect::<Vec<_>>(), [0, 4]);
        assert!(times[0].1 < times[1].1);
        remove_log_files(&q).unwrap();
        assert!(!times_path(&q).exists() && !q.exists());
        // A log written before times were kept reads as having none, and a log
        // made again under its name loses the old one's.
        assert_eq!(read_times(&q).unwrap(), []);
        std::fs::write(times_path(&p), b"stale").unwrap();
        LogWriter::create(&p).unwrap();
        assert!(!times_path(&p).exists());
    }

    #[test]
    fn names_are_made_safe() {
        assert_eq!(safe_name("hello-slave"), "hello-slave");
        assert_eq!(safe_name("a/b c"), "a_b_c");
        assert_eq!(safe_name(".."), "_..");
        assert_eq!(
            log_rel_path("f-s", 3, 2, "make check", "stdio"),
            "logs/f-s/3-002-make_check-stdio.log"
        );
    }
}
