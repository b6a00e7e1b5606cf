//! Commands die with their slave: a watchdog process that kills the process groups
//! of running commands when the slave goes, however it goes (`kill -9` included),
//! and a record of those groups so that a slave that starts kills what a previous
//! run of it left behind.
//!
//! Why a watchdog process and not `PR_SET_PDEATHSIG` or a subreaper: the death
//! signal reaches only the direct child (a `make` under `sh` would live on), fires
//! when the *thread* that forked exits (tokio's blocking-pool threads come and go),
//! and needs code between `fork` and `exec`, which would turn every command's
//! `posix_spawn` into a `fork` of the whole slave (measured: twice the cost of a
//! start). A subreaper only adopts orphans while it lives. So:
//!
//! * When the slave starts ([`Watchdog::start`]) it takes `BASEDIR/autobot.groups`
//!   (locked with `flock`, which also waits for a previous run's watchdog to
//!   finish), kills every group recorded there that still exists, belongs to this
//!   user and whose leader has the start time that was recorded — so a recycled pid
//!   is never killed — and empties it.
//! * It then forks the watchdog, once, before any command runs. The child closes
//!   every other descriptor, leaves the slave's session (a signal to the slave's
//!   process group does not reach it), and from then on only reads the pipe from the
//!   slave: `+PGID` when a command's group starts, `-PGID` when the command is over
//!   ([`Groups::started`] and its guard; one small `write` on the hot path). It
//!   keeps the table, with each leader's start time from `/proc/PGID/stat`, in the
//!   record file. When the pipe reaches end-of-file — the slave exited or was
//!   killed — it sends `SIGKILL` to every group still in the table whose leader is
//!   gone or still the one recorded, removes the record file and exits.
//!
//! The child runs in a copy of a multi-threaded process, so it makes raw system
//! calls only (no allocation, no locks, no panics): every buffer is on its stack and
//! every path was made before the fork.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::libc;

/// The record of running process groups, in the slave's basedir.
pub const GROUPS_FILE: &str = "autobot.groups";

/// How long a starting slave waits for a previous run's watchdog to let go of the
/// record file.
const LOCK_WAIT: Duration = Duration::from_secs(15);

/// Most groups the watchdog tracks at once (running commands of one slave).
const MAX_GROUPS: usize = 1024;

/// Why the watchdog could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("{path}: {source}")]
    Record {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} stays locked by another process for {secs} s (a slave running in this \
         basedir, or its watchdog); stop that slave first"
    )]
    Locked { path: String, secs: u64 },
    #[error("cannot start the slave's watchdog process: {0}")]
    Fork(nix::Error),
}

/// The slave's side of the watchdog: the pipe to it and its pid.
#[derive(Debug)]
pub struct Watchdog {
    /// `None` once dropping.
    pipe: Option<OwnedFd>,
    pid: nix::unistd::Pid,
    /// A failed write was reported already (say it once).
    warned: AtomicBool,
}

/// Where running commands report their process groups (shared by every command
/// of one slave).
#[derive(Debug, Clone)]
pub struct Groups(Arc<Watchdog>);

/// A running command's process group, reported until this is dropped.
#[derive(Debug)]
pub struct GroupGuard {
    groups: Groups,
    pgid: i32,
}

impl Groups {
    /// Report a command's process group `pgid` as running; it is reported over when
    /// the returned guard is dropped.
    pub fn started(&self, pgid: i32) -> GroupGuard {
        self.0.send(b'+', pgid);
        GroupGuard {
            groups: self.clone(),
            pgid,
        }
    }

    /// The watchdog's pid (for logs and tests).
    pub fn watchdog_pid(&self) -> i32 {
        self.0.pid.as_raw()
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.groups.0.send(b'-', self.pgid);
    }
}

impl Watchdog {
    /// Clean up after a previous run in `basedir` and start the watchdog.
    pub fn start(basedir: &Path) -> Result<Groups, WatchdogError> {
        let path = basedir.join(GROUPS_FILE);
        let shown = path.display().to_string();
        let record = |source| WatchdogError::Record {
            path: shown.clone(),
            source,
        };
        let file = lock_record(&path)?;
        let mut file = file;
        let mut text = String::new();
        file.seek(SeekFrom::Start(0)).map_err(record)?;
        // Not UTF-8 (damaged): nothing in it can be trusted, so nothing is killed.
        let _ = file.read_to_string(&mut text);
        kill_leftovers(&text, &shown);
        file.set_len(0).map_err(record)?;
        file.flush().map_err(record)?;

        let path_c =
            CString::new(path.as_os_str().as_bytes()).map_err(|e| WatchdogError::Record {
                path: shown.clone(),
                source: std::io::Error::other(e),
            })?;
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(WatchdogError::Fork)?;
        let rec_fd = file.as_raw_fd();
        let read_fd = read.as_raw_fd();
        // SAFETY: the child runs `child_main`, which makes raw system calls only on
        // memory prepared before the fork (no allocation, no locks), and ends with
        // `_exit`.
        match unsafe { nix::unistd::fork() }.map_err(WatchdogError::Fork)? {
            nix::unistd::ForkResult::Child => unsafe { child_main(read_fd, rec_fd, &path_c) },
            nix::unistd::ForkResult::Parent { child } => {
                drop(read);
                // The child holds the record file (and its lock) from now on.
                drop(file);
                // Never stall a command's start on a watchdog that does not read.
                let _ = nix::fcntl::fcntl(
                    &write,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
                tracing::info!("watchdog pid {child} keeps {shown}");
                Ok(Groups(Arc::new(Watchdog {
                    pipe: Some(write),
                    pid: child,
                    warned: AtomicBool::new(false),
                })))
            }
        }
    }

    fn send(&self, op: u8, pgid: i32) {
        if pgid <= 1 {
            return;
        }
        let Some(pipe) = &self.pipe else {
            return;
        };
        let line = format!("{}{pgid}\n", op as char);
        match nix::unistd::write(pipe, line.as_bytes()) {
            Ok(n) if n == line.len() => {}
            r => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "cannot tell the watchdog (pid {}) about process group {pgid} \
                         ({r:?}); commands may outlive this slave if it is killed",
                        self.pid
                    );
                }
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing the pipe ends the watchdog; collect it (it exits at once, unless a
        // fork elsewhere in this process briefly holds a copy of the pipe).
        drop(self.pipe.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match nix::sys::wait::waitpid(self.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    tracing::warn!("the watchdog (pid {}) did not end", self.pid);
                    return;
                }
                _ => return,
            }
        }
    }
}

/// Open and lock the record file, waiting for a previous watchdog; a file its
/// watchdog removed meanwhile is opened again.
fn lock_record(path: &Path) -> Result<File, WatchdogError> {
    let shown = path.display().to_string();
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| WatchdogError::Record {
                path: shown.clone(),
                source,
            })?;
        // SAFETY: flock on a descriptor we own.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            match file.metadata() {
                Ok(m) if m.nlink() > 0 => return Ok(file),
                // Removed by the previous watchdog as we waited: take the new one.
                _ => continue,
            }
        }
        if Instant::now() >= deadline {
            return Err(WatchdogError::Locked {
                path: shown,
                secs: LOCK_WAIT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One line of the record: a group and its leader's start time (clock ticks after
/// boot, `/proc/PID/stat` field 22; 0 when it could not be read).
fn parse_record(text: &str) -> Vec<(i32, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let pgid: i32 = it.next()?.parse().ok()?;
            let start: u64 = it.next()?.parse().ok()?;
            (pgid > 1 && it.next().is_none()).then_some((pgid, start))
        })
        .collect()
}

/// A process's start time (field 22 of `/proc/PID/stat`) and real uid.
fn leader(pid: i32) -> Option<(u64, u32)> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let start = start_time(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((start, uid))
}

/// Field 22 (starttime) of a `/proc/PID/stat` line; the command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = stat.get(close + 1..)?;
    let field = rest
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)?;
    std::str::from_utf8(field).ok()?.trim().parse().ok()
}

/// Kill the groups a previous run recorded, where that is surely right.
fn kill_leftovers(text: &str, shown: &str) {
    let me = nix::unistd::getuid().as_raw();
    for (pgid, start) in parse_record(text) {
        let exists = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok();
        if !exists {
            continue;
        }
        match leader(pgid) {
            Some((s, uid)) if s == start && start != 0 && uid == me => {
                tracing::warn!(
                    "killing process group {pgid} left running by a previous run of this \
                     slave (recorded in {shown})"
                );
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Some(_) => tracing::info!(
                "process group {pgid} in {shown} now belongs to another process (its \
                 leader's start time or owner differs); left alone"
            ),
            None => tracing::warn!(
                "process group {pgid} in {shown} still exists but its leader is gone, so \
                 it cannot be proved to be ours; left alone"
            ),
        }
    }
}

// ---------------------------------------------------------------- the child
//
// Everything below runs in the forked child: raw system calls on stack buffers.

/// Decimal digits of `v` into `buf`; the number of bytes written.
fn put_u64(buf: &mut [u8], mut v: u64) -> usize {
    let mut tmp = [0u8; 20];
    let mut n = 0;
    loop {
        if n < tmp.len() {
            tmp[n] = b'0' + (v % 10) as u8;
        }
        n += 1;
        v /= 10;
        if v == 0 || n >= tmp.len() {
            break;
        }
    }
    let n = n.min(buf.len());
    for i in 0..n {
        buf[i] = tmp[n - 1 - i];
    }
    n
}

/// A decimal number from ASCII digits (`None` for anything else or overflow).
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
    }
    Some(v)
}

/// The start time of process `pid`, read with raw calls (0 when unreadable).
fn raw_start_time(pid: i32) -> u64 {
    let mut path = [0u8; 40];
    let prefix = b"/proc/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut n = prefix.len();
    n += put_u64(&mut path[n..], pid as u64);
    let suffix = b"/stat\0";
    if n + suffix.len() > path.len() {
        return 0;
    }
    path[n..n + suffix.len()].copy_from_slice(suffix);
    // SAFETY: a NUL-terminated path on the stack; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return 0;
    }
    let mut buf = [0u8; 1024];
    // SAFETY: reading into a stack buffer of that length.
    let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    unsafe { libc::close(fd) };
    if got <= 0 {
        return 0;
    }
    let stat = &buf[..(got as usize).min(buf.len())];
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return 0;
    };
    let mut field = 0;
    for part in stat[close + 1..].split(|&b| b == b' ') {
        if part.is_empty() {
            continue;
        }
        if field == 19 {
            return parse_u64(part).unwrap_or(0);
        }
        field += 1;
    }
    0
}

/// The watchdog's table of running groups.
struct Table {
    pgid: [i32; MAX_GROUPS],
    start: [u64; MAX_GROUPS],
    len: usize,
}

impl Table {
    fn add(&mut self, pgid: i32, start: u64) {
        if self.len < MAX_GROUPS {
            self.pgid[self.len] = pgid;
            self.start[self.len] = start;
            self.len += 1;
        }
    }

    fn remove(&mut self, pgid: i32) {
        let mut i = 0;
        while i < self.len {
            if self.pgid[i] == pgid {
                self.len -= 1;
                self.pgid[i] = self.pgid[self.len];
                self.start[i] = self.start[self.len];
                return;
            }
            i += 1;
        }
    }

    /// The record file's text (`PGID START` lines) into `out`; its length.
    fn render(&self, out: &mut [u8]) -> usize {
        let mut n = 0;
        for i in 0..self.len {
            if n + 44 > out.len() {
                break;
            }
            n += put_u64(&mut out[n..], self.pgid[i] as u64);
            out[n] = b' ';
            n += 1;
            n += put_u64(&mut out[n..], self.start[i]);
            out[n] = b'\n';
            n += 1;
        }
        n
    }

    /// Apply one `+PGID` / `-PGID` line.
    fn apply(&mut self, line: &[u8]) {
        let (Some(&op), Some(num)) = (line.first(), line.get(1..)) else {
            return;
        };
        let Some(pgid) = parse_u64(num).and_then(|v| i32::try_from(v).ok()) else {
            return;
        };
        if pgid <= 1 {
            return;
        }
        match op {
            b'+' => self.add(pgid, raw_start_time(pgid)),
            b'-' => self.remove(pgid),
            _ => {}
        }
    }
}

/// Close every descriptor but those in `keep` (negative entries ignored).
unsafe fn close_all_except(keep: &mut [RawFd; 3]) {
    // A three-element sort, no allocation.
    for i in 0..keep.len() {
        for j in i + 1..keep.len() {
            if keep[j] < keep[i] {
                keep.swap(i, j);
            }
        }
    }
    let mut first: u32 = 0;
    for &k in keep.iter() {
        if k < 0 || (k as u32) < first {
            continue;
        }
        if (k as u32) > first {
            close_range(first, k as u32 - 1);
        }
        first = k as u32 + 1;
    }
    close_range(first, u32::MAX);
}

/// `close_range(first, last)`, or a loop of `close` without it (Linux < 5.9).
unsafe fn close_range(first: u32, last: u32) {
    if libc::syscall(libc::SYS_close_range, first, last, 0) != 0 {
        let mut fd = first;
        while fd <= last && fd < 65536 {
            libc::close(fd as i32);
            fd += 1;
        }
    }
}

/// The watchdog's whole life (see the module note). Never returns.
unsafe fn child_main(pipe: RawFd, record: RawFd, path: &CString) -> ! {
    // Out of the slave's session and process group; quiet about terminal signals;
    // a plain SIGTERM ends it (as SIGKILL does).
    libc::setsid();
    for sig in [
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGPIPE,
        libc::SIGTSTP,
    ] {
        libc::signal(sig, libc::SIG_IGN);
    }
    for sig in [libc::SIGTERM, libc::SIGCHLD, libc::SIGUSR1, libc::SIGUSR2] {
        libc::signal(sig, libc::SIG_DFL);
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    libc::prctl(libc::PR_SET_NAME, c"autobot-watch".as_ptr(), 0, 0, 0);
    // Nothing of the slave's stays open here (sockets, pid file, log, terminal):
    // standard input and output become /dev/null.
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
    let mut keep = [pipe, record, null];
    close_all_except(&mut keep);
    if null >= 0 {
        for fd in 0..3 {
            if fd != pipe && fd != record && fd != null {
                libc::dup2(null, fd);
            }
        }
        if null > 2 {
            libc::close(null);
        }
    }

    let mut table = Table {
        pgid: [0; MAX_GROUPS],
        start: [0; MAX_GROUPS],
        len: 0,
    };
    let mut buf = [0u8; 4096];
    let mut have = 0usize;
    let mut out = [0u8; MAX_GROUPS * 44];
    loop {
        let got = libc::read(pipe, buf[have..].as_mut_ptr().cast(), buf.len() - have);
        if got < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        if got <= 0 {
            break;
        }
        have += got as usize;
        let mut begin = 0;
        let mut i = 0;
        while i < have {
            if buf[i] == b'\n' {
                table.apply(&buf[begin..i]);
                begin = i + 1;
            }
            i += 1;
        }
        // Keep a partial line; drop one too long to be ours.
        if begin > 0 {
            buf.copy_within(begin..have, 0);
            have -= begin;
        } else if have == buf.len() {
            have = 0;
        }
        let n = table.render(&mut out);
        libc::pwrite(record, out.as_ptr().cast(), n, 0);
        libc::ftruncate(record, n as libc::off_t);
    }
    // The slave is gone: its running commands go too.
    for i in 0..table.len {
        let pgid = table.pgid[i];
        let recorded = table.start[i];
        let now = raw_start_time(pgid);
        // The leader is gone (its group may live on) or is still the one recorded.
        if now == 0 || recorded == 0 || now == recorded {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    libc::unlink(path.as_ptr());
    libc::close(record);
    libc::_exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_stat_fields() {
        let mut b = [0u8; 24];
        let n = put_u64(&mut b, 0);
        assert_eq!(&b[..n], b"0");
        let n = put_u64(&mut b, 1234567890123);
        assert_eq!(&b[..n], b"1234567890123");
        let n = put_u64(&mut b, u64::MAX);
        assert_eq!(&b[..n], u64::MAX.to_string().as_bytes());
        assert_eq!(parse_u64(b"42"), Some(42));
        assert_eq!(parse_u64(b"4x"), None);
        assert_eq!(parse_u64(b""), None);
        let line = b"123 (a b) c) S 1 123 123 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2\n";
        assert_eq!(start_time(line), Some(98765));
        let me = std::process::id() as i32;
        let own = leader(me).unwrap();
        assert_eq!(raw_start_time(me), own.0);
        assert_eq!(own.1, nix::unistd::getuid().as_raw());
    }

    #[test]
    fn table_tracks_and_renders() {
        let mut t = Table {
            pgid: [0; MAX_GROUPS],
            start: [0; MAX_GROUPS],
            len: 0,
        };
        t.apply(b"+999999999");
        t.apply(b"+77");
        t.apply(b"-999999999");
        t.apply(b"+1");
        t.apply(b"garbage");
        t.apply(b"+");
        let mut out = [0u8; 128];
        let n = t.render(&mut out);
        let text = std::str::from_utf8(&out[..n]).unwrap();
        assert!(text.starts_with("77 "), "{text}");
        assert_eq!(parse_record(text).len(), 1);
        assert_eq!(
            parse_record("12 34\nbad\n1 5\n13 x\n14 15 16\n"),
            vec![(12, 34)]
        );
    }
}
