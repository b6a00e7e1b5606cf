//! A daemon's `autobot.log`, rotated by size as Buildbot rotates `twistd.log`, and
//! reopened on request (SIGUSR1) for operators whose logrotate moves it away.
//!
//! Rotation: a write that would take the file past `logSize` bytes first renames
//! `autobot.log.N-1` to `.N` … `autobot.log` to `.1` (the one past `logCount` is
//! deleted) and starts a new `autobot.log`. The daemon's standard error (where a
//! panic message would go) follows the current file. A write never fails the
//! daemon: when the file cannot be rotated or reopened, it goes on writing where
//! it can and says so once on the next line it writes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::LogRotation;

/// Set by the SIGUSR1 handler; the next write reopens the file.
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Ask every [`RotatingLog`] of this process to reopen its file at the next write
/// (what `kill -USR1` does to a daemon).
pub fn request_reopen() {
    REOPEN.store(true, Ordering::SeqCst);
}

/// `autobot.log` as a `Write`: appends, rotates past the size limit, reopens on
/// request.
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: LogRotation,
    /// Point standard error at the current file (true for a background daemon).
    follow_stderr: bool,
    /// A problem to report in the log itself, once.
    trouble: Option<String>,
}

impl RotatingLog {
    /// Open (append) `path`, rotating by `rotation`.
    pub fn open(
        path: &Path,
        rotation: LogRotation,
        follow_stderr: bool,
    ) -> std::io::Result<RotatingLog> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        let log = RotatingLog {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            follow_stderr,
            trouble: None,
        };
        log.point_stderr();
        Ok(log)
    }

    fn point_stderr(&self) {
        if self.follow_stderr {
            let _ = nix::unistd::dup2_stderr(&self.file);
        }
    }

    /// The name of the `n`th old log.
    fn old(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    /// Move the logs up by one and start an empty `autobot.log`.
    fn rotate(&mut self) -> std::io::Result<()> {
        let count = self.rotation.count.max(1);
        match std::fs::remove_file(self.old(count)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for n in (1..count).rev() {
            match std::fs::rename(self.old(n), self.old(n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::rename(&self.path, self.old(1))?;
        self.reopen()
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        let file = open_append(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = file;
        self.point_stderr();
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if REOPEN.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.reopen() {
                self.trouble = Some(format!(
                    "cannot reopen {} ({e}); still writing to the file it was",
                    self.path.display()
                ));
            }
        }
        if self.size > 0 && self.size + buf.len() as u64 > self.rotation.size {
            if let Err(e) = self.rotate() {
                self.trouble = Some(format!(
                    "cannot rotate {} ({e}); it grows past logSize",
                    self.path.display()
                ));
                // Do not try again on every line: the next try is a logSize later.
                self.size = 0;
            }
        }
        if let Some(t) = self.trouble.take() {
            let line = format!("autobot.log: {t}\n");
            self.size += line.len() as u64;
            let _ = self.file.write_all(line.as_bytes());
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_size_and_keeps_count_old_logs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("autobot.log");
        let rotation = LogRotation {
            size: 100,
            count: 2,
        };
        let mut log = RotatingLog::open(&path, rotation, false).unwrap();
        for i in 0..10 {
            log.write_all(format!("line {i:02} {}\n", "x".repeat(30)).as_bytes())
                .unwrap();
        }
        // 40 bytes a line, 100 a file: two lines each; the newest in autobot.log.
        let cur = std::fs::read_to_string(&path).unwrap();
        assert!(
            cur.starts_with("line 08") && cur.contains("line 09"),
            "{cur}"
        );
        let one = std::fs::read_to_string(dir.path().join("autobot.log.1")).unwrap();
        assert!(one.starts_with("line 06"), "{one}");
        let two = std::fs::read_to_string(dir.path().join("autobot.log.2")).unwrap();
        assert!(two.starts_with("line 04"), "{two}");
        assert!(!dir.path().join("autobot.log.3").exists());
        for p in ["autobot.log", "autobot.log.1", "autobot.log.2"] {
            assert!(std::fs::metadata(dir.path().join(p)).unwrap().len() <= 100);
        }
    }

    #[test]
    fn reopens_a_log_moved_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("autobot.log");
        let mut log = RotatingLog::open(&path, LogRotation::default(), false).unwrap();
        log.write_all(b"before\n").unwrap();
        std::fs::rename(&path, dir.path().join("moved.log")).unwrap();
        log.write_all(b"still old\n").unwrap();
        request_reopen();
        log.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved.log")).unwrap(),
            "before\nstill old\n"
        );
    }
}
