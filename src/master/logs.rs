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
//!
//! Writes go through a large buffer (no syscall per line, no database write per
//! line); the engine flushes and records size and line count in SQLite every
//! second or so and at the end of the step.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

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

/// A path component made safe: anything but `[A-Za-z0-9._-]` becomes `_`, and a
/// name of dots only gets a leading `_`.
pub fn safe_name(name: &str) -> String {
    let s = crate::factory::path_safe(name);
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

/// The side file of channel runs next to a log file.
pub fn channels_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".ch");
    PathBuf::from(s)
}

/// An append-only log being written.
pub struct LogWriter {
    path: PathBuf,
    out: BufWriter<File>,
    runs: Option<BufWriter<File>>,
    channel: Option<Channel>,
    size: u64,
    lines: u64,
}

impl LogWriter {
    /// Create (truncating) the log file at `path`, making its directory.
    pub fn create(path: &Path) -> std::io::Result<LogWriter> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::create(path)?;
        let _ = std::fs::remove_file(channels_path(path));
        Ok(LogWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(BUFFER, file),
            runs: None,
            channel: None,
            size: 0,
            lines: 0,
        })
    }

    /// Append bytes of one channel.
    pub fn append(&mut self, channel: Channel, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.channel != Some(channel) {
            // The first run of stdout needs no record: no `.ch` file means stdout.
            if self.channel.is_some() || channel != Channel::Stdout {
                if self.runs.is_none() {
                    let f = File::create(channels_path(&self.path))?;
                    let mut w = BufWriter::with_capacity(8 * 1024, f);
                    if self.channel.is_some() {
                        // Earlier bytes were stdout.
                        w.write_all(&record(0, Channel::Stdout))?;
                    }
                    self.runs = Some(w);
                }
                if let Some(w) = self.runs.as_mut() {
                    w.write_all(&record(self.size, channel))?;
                }
            }
            self.channel = Some(channel);
        }
        self.out.write_all(data)?;
        self.size += data.len() as u64;
        self.lines += count_newlines(data);
        Ok(())
    }

    /// Push buffered bytes to the file so readers see them.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        if let Some(w) = self.runs.as_mut() {
            w.flush()?;
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Newlines written so far (a last line without one is not counted).
    pub fn lines(&self) -> u64 {
        self.lines
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

fn record(offset: u64, channel: Channel) -> [u8; RUN_RECORD] {
    let mut r = [0u8; RUN_RECORD];
    r[..8].copy_from_slice(&offset.to_le_bytes());
    r[8] = channel as u8;
    r
}

fn count_newlines(data: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', data).count() as u64
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

#[cfg(test)]
mod tests {
    use super::*;

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
