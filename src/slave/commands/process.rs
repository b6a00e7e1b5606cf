//! Running one child process for the master (the worker's `RunProcess`).
//!
//! The child runs in its own process group (or, under a pseudo-terminal, its own
//! session), so killing the group reaches everything it started. Output is read in
//! bounded chunks and handed to [`Updates`], whose sends wait for the link: a command
//! that prints faster than the master reads is slowed down instead of filling memory.
//! Headers, timeouts (`timeout` without output, `maxTime`, `max_lines`), the
//! SIGTERM-then-signal kill with `sigtermTime`, logfile watching and the final `rc`
//! follow `buildbot_worker/runprocess.py`. One deliberate difference: the slave's
//! environment is never echoed into the log (`logEnviron` shows only the variables
//! the master set).

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use rmpv::Value;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{Interrupt, SlaveEnv};
use crate::slave::link::LinkClosed;
use crate::slave::output::Utf8Decoder;
use crate::slave::paths::{JPath, Jail};
use crate::slave::tree;
use crate::slave::updates::{Stream, Updates};

/// How long a killed process may take to go away before we give up on it (the
/// worker's `BACKUP_TIMEOUT`).
const BACKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often watched logfiles are checked.
const LOGFILE_POLL: Duration = Duration::from_secs(1);
/// One read from a pipe; small enough that a chunk fits one update.
const READ_CHUNK: usize = 256 * 1024;
/// The first reads' buffer: most commands print little, and a quarter of a
/// megabyte zeroed twice per command is most of what a quiet one costs the slave.
/// It grows to [`READ_CHUNK`] the first time a read fills it.
const FIRST_READ: usize = 16 * 1024;

/// The size asked for the stdout pipe (Linux's default pipe-max-size).
const PIPE_SIZE: nix::libc::c_int = 1 << 20;

/// One argument: what runs, and what the log shows (they differ for
/// `('obfuscated', real, fake)` arguments such as passwords).
#[derive(Debug, Clone)]
pub struct Arg {
    pub real: String,
    pub shown: String,
}

/// A logfile to follow while the command runs.
#[derive(Debug, Clone)]
pub struct LogFile {
    pub name: String,
    pub path: JPath,
    /// Only send what is appended after the command starts.
    pub follow: bool,
}

/// Everything needed to run one process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub argv: Vec<Arg>,
    /// The command as the first header line shows it.
    pub display: String,
    pub workdir: JPath,
    /// The complete environment of the child.
    pub environ: Vec<(OsString, OsString)>,
    /// `K=V` lines the master set, shown in the header instead of the environment.
    pub environ_shown: Vec<String>,
    pub log_environ: bool,
    pub send_stdout: bool,
    pub send_stderr: bool,
    pub send_rc: bool,
    pub timeout: Option<f64>,
    pub max_time: Option<f64>,
    pub max_lines: Option<u64>,
    pub sigterm_time: Option<f64>,
    pub interrupt_signal: Signal,
    pub initial_stdin: Option<Vec<u8>>,
    pub logfiles: Vec<LogFile>,
    /// The logfiles as the header shows them.
    pub logfiles_shown: String,
    pub use_pty: bool,
    pub umask: u32,
}

impl ProcessSpec {
    /// A plain argv run with the slave's environment and no limits.
    pub fn new(argv: Vec<String>, workdir: JPath, umask: u32) -> ProcessSpec {
        let display = shell_quote(&argv);
        ProcessSpec {
            argv: argv
                .into_iter()
                .map(|a| Arg {
                    shown: a.clone(),
                    real: a,
                })
                .collect(),
            display,
            workdir,
            environ: std::env::vars_os().collect(),
            environ_shown: Vec::new(),
            log_environ: true,
            send_stdout: true,
            send_stderr: true,
            send_rc: true,
            timeout: None,
            max_time: None,
            max_lines: None,
            sigterm_time: None,
            interrupt_signal: Signal::SIGKILL,
            initial_stdin: None,
            logfiles: Vec::new(),
            logfiles_shown: "{}".into(),
            use_pty: false,
            umask,
        }
    }
}

/// How the process run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// It exited (or was killed: -1) and `rc` was reported.
    Rc(i32),
    /// It could not be started or would not die: the command fails with this text.
    Failed(String),
}

/// Quote an argv for display as a POSIX shell would read it (`shlex.quote`).
pub fn shell_quote(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() {
                "\"\"".to_string()
            } else if a
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\"'\"'"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Seconds as Python prints them (`5`, `1.5`).
fn secs(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn unit(v: f64) -> &'static str {
    if v == 1.0 {
        "sec"
    } else {
        "secs"
    }
}

fn py_bytes_repr(s: &str) -> String {
    let mut out = String::from("b'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Run the process described by `spec` until it ends, reporting on `up`.
pub async fn run(
    mut spec: ProcessSpec,
    env: &SlaveEnv,
    up: &mut Updates,
    interrupt: &mut Interrupt,
) -> Result<Finish, LinkClosed> {
    if spec.use_pty && spec.initial_stdin.is_some() {
        up.header("WARNING: disabling usePTY for this command\n")
            .await?;
        spec.use_pty = false;
    }
    // Made (when missing) and opened beneath the basedir now; the child starts in
    // this very directory.
    let opened = match env
        .jail
        .open(&spec.workdir, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
    {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {
            tree::mkdir_all(&env.jail, &spec.workdir, 0o777 & !spec.umask).and_then(|()| {
                env.jail
                    .open(&spec.workdir, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
            })
        }
        r => r,
    };
    let cwd = match opened {
        Ok(fd) => fd,
        Err(e) => {
            let msg = format!(
                "cannot use workdir {}: {}",
                spec.workdir.shown().display(),
                super::strerror(&e)
            );
            up.output(Stream::Stderr, &format!("{msg}\n")).await?;
            return Ok(Finish::Failed(msg));
        }
    };
    let workdir_s = spec.workdir.shown().display().to_string();
    spec.environ.retain(|(k, _)| k != "PWD");
    spec.environ
        .push((OsString::from("PWD"), OsString::from(&workdir_s)));

    up.header(&format!("{}\n", spec.display)).await?;
    let mut msg = format!(" in dir {workdir_s}");
    if let Some(t) = spec.timeout.filter(|t| *t > 0.0) {
        msg.push_str(&format!(" (timeout {} {})", secs(t), unit(t)));
    }
    if let Some(t) = spec.max_time.filter(|t| *t > 0.0) {
        msg.push_str(&format!(" (maxTime {} {})", secs(t), unit(t)));
    }
    up.header(&format!("{msg}\n")).await?;
    up.header(&format!(" watching logfiles {}\n", spec.logfiles_shown))
        .await?;
    let shown: Vec<String> = spec.argv.iter().map(|a| py_bytes_repr(&a.shown)).collect();
    up.header(&format!(" argv: [{}]\n", shown.join(", ")))
        .await?;
    if spec.log_environ {
        let mut msg = String::from(
            " environment (the slave's own variables are not shown; set by the master):\n",
        );
        for line in &spec.environ_shown {
            msg.push_str(&format!("  {line}\n"));
        }
        msg.push_str(&format!("  PWD={workdir_s}\n"));
        up.header(&msg).await?;
    }
    if let Some(stdin) = &spec.initial_stdin {
        if !stdin.is_empty() {
            up.header(&format!(" writing {} bytes to stdin\n", stdin.len()))
                .await?;
        }
    }
    up.header(&format!(
        " using PTY: {}\n",
        if spec.use_pty { "True" } else { "False" }
    ))
    .await?;

    let started = Instant::now();
    let spawned = spawn(&spec, &cwd);
    drop(cwd);
    let spawned = match spawned {
        Ok(s) => s,
        Err(e) => {
            let argv0 = spec.argv.first().map(|a| a.shown.as_str()).unwrap_or("");
            tracing::info!("cannot start {argv0}: {e}");
            up.output(
                Stream::Stderr,
                &format!("cannot start {argv0}: {}\n", super::strerror(&e)),
            )
            .await?;
            return finished(up, &spec, started, ExitStatus::from_raw(1 << 8), false).await;
        }
    };
    let Spawned {
        mut child,
        pgid,
        out,
        err,
    } = spawned;
    // Reported to the watchdog until the command is over (the guard's drop).
    let _group = env.groups.started(pgid);
    if let (Some(data), Some(mut stdin)) = (spec.initial_stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
        });
    }
    let mut watch = Supervisor::new(&spec, &env.jail, pgid);
    let result = watch.supervise(&mut child, out, err, up, interrupt).await;
    match result {
        Ok(Some(status)) => {
            for w in &mut watch.logfiles {
                w.poll(up).await?;
            }
            finished(up, &spec, started, status, watch.killed).await
        }
        Ok(None) => {
            // It would not die.
            let name = format!("SIG{}", signal_name(spec.interrupt_signal));
            up.header(&format!("{name} failed to kill process\n"))
                .await?;
            if spec.send_rc {
                up.header("using fake rc=-1\n").await?;
                up.send("rc", Value::from(-1)).await?;
            }
            Ok(Finish::Failed(format!("{name} failed to kill process")))
        }
        Err(LinkClosed) => {
            // Nobody is listening any more: make sure nothing keeps running.
            killpg(pgid, Signal::SIGKILL);
            let _ = tokio::time::timeout(BACKUP_TIMEOUT, child.wait()).await;
            Err(LinkClosed)
        }
    }
}

fn signal_name(s: Signal) -> &'static str {
    s.as_str().trim_start_matches("SIG")
}

/// Report the end: partial lines, signal header, `rc`, elapsed time header.
async fn finished(
    up: &mut Updates,
    spec: &ProcessSpec,
    started: Instant,
    status: ExitStatus,
    killed: bool,
) -> Result<Finish, LinkClosed> {
    up.flush_lines().await?;
    let sig = status.signal();
    let mut rc = status.code().unwrap_or(-1);
    if sig.is_some() || (killed && rc == 0) {
        rc = -1;
    }
    if spec.send_rc {
        if let Some(s) = sig {
            up.header(&format!("process killed by signal {s}\n"))
                .await?;
        }
        up.send("rc", Value::from(rc)).await?;
    }
    up.header(&format!(
        "elapsedTime={:.6}\n",
        started.elapsed().as_secs_f64()
    ))
    .await?;
    Ok(Finish::Rc(rc))
}

/// Where a child's output is read from.
enum Source {
    Pipe(Box<dyn AsyncRead + Unpin + Send>),
    Pty(AsyncFd<OwnedFd>),
}

impl Source {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Pipe(r) => r.read(buf).await,
            Source::Pty(fd) => loop {
                let mut guard = fd.readable().await?;
                match guard.try_io(|inner| {
                    nix::unistd::read(inner.get_ref().as_fd(), buf).map_err(std::io::Error::from)
                }) {
                    Ok(Ok(n)) => return Ok(n),
                    // EIO: every holder of the terminal's other side has gone.
                    Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(0),
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => continue,
                }
            },
        }
    }
}

async fn read_opt(src: &mut Option<Source>, buf: &mut [u8]) -> std::io::Result<usize> {
    match src {
        Some(s) => s.read(buf).await,
        None => std::future::pending().await,
    }
}

/// A read filled the whole buffer: the command prints a lot, so read it in
/// [`READ_CHUNK`] pieces from now on.
fn grow_when_full(buf: &mut Vec<u8>, n: usize) {
    if n == buf.len() && buf.len() < READ_CHUNK {
        buf.resize(READ_CHUNK, 0);
    }
}

struct Spawned {
    child: tokio::process::Child,
    pgid: i32,
    out: Source,
    err: Option<Source>,
}

/// Start the child in `cwd` (a directory opened beneath the basedir).
fn spawn(spec: &ProcessSpec, cwd: &OwnedFd) -> std::io::Result<Spawned> {
    let Some(first) = spec.argv.first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        ));
    };
    // With the slave's own umask, no pre_exec closure and an explicit path, std
    // starts the command with posix_spawn (vfork-like) instead of fork: no copy of
    // the slave's page tables for every command.
    let plain = !spec.use_pty && process_umask() == Some(spec.umask);
    let program = match plain {
        true => resolve_program(&first.real, &spec.environ, spec.workdir.shown())
            .unwrap_or_else(|| PathBuf::from(&first.real)),
        false => PathBuf::from(&first.real),
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(spec.argv[1..].iter().map(|a| &a.real))
        .current_dir(Jail::cwd_of(cwd))
        .env_clear()
        .envs(spec.environ.iter().map(|(k, v)| (k, v)));
    let mask = nix::sys::stat::Mode::from_bits_truncate(spec.umask as nix::libc::mode_t);
    if spec.use_pty {
        let pty = open_pty()?;
        cmd.stdin(Stdio::from(pty.slave.try_clone()?))
            .stdout(Stdio::from(pty.slave.try_clone()?))
            .stderr(Stdio::from(pty.slave.try_clone()?));
        // SAFETY: only async-signal-safe calls (setsid, ioctl, umask) between fork
        // and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::sys::stat::umask(mask);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(cmd);
        drop(pty.slave);
        nix::fcntl::fcntl(
            &pty.master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(std::io::Error::from)?;
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        Ok(Spawned {
            child,
            pgid,
            out: Source::Pty(register(pty.master)?),
            err: None,
        })
    } else {
        cmd.stdin(if spec.initial_stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // Its own process group, so that a kill takes its grandchildren too.
        cmd.process_group(0);
        if !plain {
            // SAFETY: only an async-signal-safe call (umask) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::stat::umask(mask);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn()?;
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
        // A bigger pipe: a command that prints fast is read in fewer, larger
        // chunks (Linux lets an unprivileged process grow it to pipe-max-size).
        let _ = nix::fcntl::fcntl(&out, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        let err = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr pipe"))?;
        Ok(Spawned {
            child,
            pgid,
            out: Source::Pipe(Box::new(out)),
            err: Some(Source::Pipe(Box::new(err))),
        })
    }
}

/// The slave process's umask (from `/proc/self/status`, which reads it without
/// changing it); `None` when it cannot be read.
fn process_umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Umask:"))?;
        u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
    })
}

/// The file `program` names, searched in the command's own `PATH` (as `execvp`
/// would) when it has no `/`; `None` when not found (spawning then reports it). A
/// program with a `/` is kept as it is: a relative one is found from the child's
/// working directory, the one opened beneath the basedir.
fn resolve_program(
    program: &str,
    environ: &[(OsString, OsString)],
    workdir: &std::path::Path,
) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    if program.contains('/') {
        return Some(Path::new(program).to_path_buf());
    }
    let path = environ
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())?;
    std::env::split_paths(&path)
        .map(|dir| {
            if dir.is_absolute() {
                dir.join(program)
            } else {
                workdir.join(dir).join(program)
            }
        })
        .find(|f| {
            f.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Both sides of a new pseudo-terminal, close-on-exec from the start so that no
/// other command started at the same moment inherits them.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

fn open_pty() -> std::io::Result<Pty> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(name.as_str(), flags, nix::sys::stat::Mode::empty())?;
    Ok(Pty {
        master: master.into(),
        slave,
    })
}

/// Watch the terminal's master side for readability.
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the
    // same for the AsyncFd's whole life.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Signal a whole process group (ignoring one that is already gone).
pub fn killpg(pgid: i32, sig: Signal) {
    if pgid > 1 {
        if let Err(e) = nix::sys::signal::killpg(Pid::from_raw(pgid), sig) {
            tracing::debug!("killpg {pgid} {sig}: {e}");
        }
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Resolves with the reason once the command is interrupted (or its connection
/// is gone).
async fn interrupted(rx: &mut Interrupt) -> String {
    loop {
        if let Some(why) = rx.borrow_and_update().clone() {
            return why;
        }
        if rx.changed().await.is_err() {
            return "connection lost".into();
        }
    }
}

/// The state of a running process: timers, kill progress, logfiles.
struct Supervisor {
    pgid: i32,
    timeout: Option<Duration>,
    io_deadline: Option<Instant>,
    max_deadline: Option<Instant>,
    sigterm_time: Option<Duration>,
    sigterm_deadline: Option<Instant>,
    backup_deadline: Option<Instant>,
    interrupt_signal: Signal,
    killed: bool,
    max_lines: Option<u64>,
    lines: u64,
    /// Output is ignored after `max_lines` was exceeded.
    muted: bool,
    send_stdout: bool,
    send_stderr: bool,
    timeout_text: (f64, f64),
    display: String,
    logfiles: Vec<Watcher>,
    next_poll: Option<Instant>,
}

fn dur(secs: f64) -> Option<Duration> {
    if secs > 0.0 && secs.is_finite() {
        Some(Duration::from_secs_f64(secs.min(1e9)))
    } else {
        None
    }
}

impl Supervisor {
    fn new(spec: &ProcessSpec, jail: &Jail, pgid: i32) -> Supervisor {
        let now = Instant::now();
        let timeout = spec.timeout.and_then(dur);
        let logfiles: Vec<Watcher> = spec
            .logfiles
            .iter()
            .map(|l| Watcher::new(l, jail))
            .collect();
        Supervisor {
            pgid,
            timeout,
            io_deadline: timeout.map(|t| now + t),
            max_deadline: spec.max_time.and_then(dur).map(|t| now + t),
            // NaN (which clamp passes through) counts as no grace time.
            sigterm_time: spec
                .sigterm_time
                .map(|s| Duration::from_secs_f64(if s.is_nan() { 0.0 } else { s.clamp(0.0, 1e9) })),
            sigterm_deadline: None,
            backup_deadline: None,
            interrupt_signal: spec.interrupt_signal,
            killed: false,
            max_lines: spec.max_lines,
            lines: 0,
            muted: false,
            send_stdout: spec.send_stdout,
            send_stderr: spec.send_stderr,
            timeout_text: (spec.timeout.unwrap_or(0.0), spec.max_time.unwrap_or(0.0)),
            display: spec.display.clone(),
            next_poll: if logfiles.is_empty() {
                None
            } else {
                Some(now + LOGFILE_POLL)
            },
            logfiles,
        }
    }

    /// Supervise until the process has exited and its output is drained;
    /// `Ok(None)` if it could not be killed.
    async fn supervise(
        &mut self,
        child: &mut tokio::process::Child,
        out: Source,
        err: Option<Source>,
        up: &mut Updates,
        interrupt: &mut Interrupt,
    ) -> Result<Option<ExitStatus>, LinkClosed> {
        let mut out = Some(out);
        let mut err = err;
        let mut out_buf = vec![0u8; FIRST_READ];
        let mut err_buf = vec![0u8; if err.is_some() { FIRST_READ } else { 0 }];
        let mut out_dec = Utf8Decoder::default();
        let mut err_dec = Utf8Decoder::default();
        let mut status: Option<ExitStatus> = None;
        let mut interrupt_seen = false;
        loop {
            if status.is_some() && out.is_none() && err.is_none() {
                return Ok(status);
            }
            tokio::select! {
                why = interrupted(interrupt), if !interrupt_seen => {
                    interrupt_seen = true;
                    tracing::info!("(command {}) interrupted: {why}", up.command_id());
                    if !self.killed {
                        self.kill(up, "command interrupted").await?;
                    }
                }
                _ = sleep_opt(self.io_deadline) => {
                    self.io_deadline = None;
                    up.send("failure_reason", Value::from("timeout_without_output")).await?;
                    let msg = format!(
                        "command timed out: {} seconds without output running {}",
                        secs(self.timeout_text.0), self.display
                    );
                    self.kill(up, &msg).await?;
                }
                _ = sleep_opt(self.max_deadline) => {
                    self.max_deadline = None;
                    up.send("failure_reason", Value::from("timeout")).await?;
                    let msg = format!(
                        "command timed out: {} seconds elapsed running {}",
                        secs(self.timeout_text.1), self.display
                    );
                    self.kill(up, &msg).await?;
                }
                _ = sleep_opt(self.sigterm_deadline) => {
                    self.sigterm_deadline = None;
                    killpg(self.pgid, self.interrupt_signal);
                    self.backup_deadline = Some(Instant::now() + BACKUP_TIMEOUT);
                }
                _ = sleep_opt(self.backup_deadline) => {
                    tracing::warn!("(command {}) process group {} would not die", up.command_id(), self.pgid);
                    return Ok(None);
                }
                _ = sleep_opt(up.deadline()) => up.flush().await?,
                _ = sleep_opt(self.next_poll) => {
                    let mut any = false;
                    for w in &mut self.logfiles {
                        any |= w.poll(up).await?;
                    }
                    if any {
                        self.output_seen();
                    }
                    self.next_poll = Some(Instant::now() + LOGFILE_POLL);
                }
                r = read_opt(&mut out, &mut out_buf) => match r {
                    Ok(n) if n > 0 => {
                        let text = out_dec.decode(&out_buf[..n]);
                        self.output(up, Stream::Stdout, &text).await?;
                        grow_when_full(&mut out_buf, n);
                    }
                    _ => {
                        out = None;
                        let text = out_dec.finish();
                        self.output(up, Stream::Stdout, &text).await?;
                    }
                },
                r = read_opt(&mut err, &mut err_buf) => match r {
                    Ok(n) if n > 0 => {
                        let text = err_dec.decode(&err_buf[..n]);
                        self.output(up, Stream::Stderr, &text).await?;
                        grow_when_full(&mut err_buf, n);
                    }
                    _ => {
                        err = None;
                        let text = err_dec.finish();
                        self.output(up, Stream::Stderr, &text).await?;
                    }
                },
                st = child.wait(), if status.is_none() => {
                    status = Some(st.unwrap_or_else(|_| ExitStatus::from_raw(1 << 8)));
                }
            }
        }
    }

    fn output_seen(&mut self) {
        if let Some(t) = self.timeout {
            if self.io_deadline.is_some() {
                self.io_deadline = Some(Instant::now() + t);
            }
        }
    }

    async fn output(
        &mut self,
        up: &mut Updates,
        stream: Stream,
        text: &str,
    ) -> Result<(), LinkClosed> {
        if text.is_empty() {
            return Ok(());
        }
        self.output_seen();
        let wanted = match stream {
            Stream::Stdout => self.send_stdout,
            Stream::Stderr => self.send_stderr,
            _ => true,
        };
        if !wanted || self.muted {
            return Ok(());
        }
        if let Some(max) = self.max_lines {
            self.lines += count_lines(text);
            if self.lines > max {
                self.muted = true;
                up.send("failure_reason", Value::from("max_lines_failure"))
                    .await?;
                let msg = format!(
                    "command exceeds max lines: {}/{} written/allowed running {}",
                    self.lines, max, self.display
                );
                return self.kill(up, &msg).await;
            }
        }
        up.output(stream, text).await
    }

    async fn kill(&mut self, up: &mut Updates, msg: &str) -> Result<(), LinkClosed> {
        self.io_deadline = None;
        self.max_deadline = None;
        let msg = format!("{msg}, attempting to kill");
        tracing::info!("(command {}) {msg}", up.command_id());
        up.header(&format!("\n{msg}\n")).await?;
        self.killed = true;
        match self.sigterm_time {
            Some(t) => {
                killpg(self.pgid, Signal::SIGTERM);
                self.sigterm_deadline = Some(Instant::now() + t);
            }
            None => {
                killpg(self.pgid, self.interrupt_signal);
                self.backup_deadline = Some(Instant::now() + BACKUP_TIMEOUT);
            }
        }
        Ok(())
    }
}

/// Line ends as the worker counts them for `max_lines` (`\r\n`, `\r` or `\n`).
fn count_lines(text: &str) -> u64 {
    let b = text.as_bytes();
    let mut n = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'\r' || (c == b'\n' && (i == 0 || b[i - 1] != b'\r')) {
            n += 1;
        }
    }
    n
}

/// Follows one logfile (`LogFileWatcher`): it starts once the file changes from
/// what it was when the command started. The file is looked at and opened beneath
/// the basedir each time (a link out is never followed).
struct Watcher {
    name: String,
    path: JPath,
    jail: Jail,
    follow: bool,
    initial: Option<(i64, i64, i64, i64)>,
    file: Option<std::fs::File>,
    dec: Utf8Decoder,
}

fn stat_key(jail: &Jail, path: &JPath) -> Option<(i64, i64, i64, i64)> {
    tree::stat(jail, path).ok().map(|m| {
        (
            m.st_ctime,
            m.st_ctime_nsec,
            m.st_mtime_nsec + m.st_mtime * 1_000_000_000,
            m.st_size,
        )
    })
}

impl Watcher {
    fn new(spec: &LogFile, jail: &Jail) -> Watcher {
        Watcher {
            name: spec.name.clone(),
            path: spec.path.clone(),
            jail: jail.clone(),
            follow: spec.follow,
            initial: stat_key(jail, &spec.path),
            file: None,
            dec: Utf8Decoder::default(),
        }
    }

    /// Send what was added since the last poll; true if anything was.
    async fn poll(&mut self, up: &mut Updates) -> Result<bool, LinkClosed> {
        if self.file.is_none() {
            let now = stat_key(&self.jail, &self.path);
            if now == self.initial {
                return Ok(false);
            }
            let Some(s) = now else {
                // Deleted (to be re-created): whatever appears next is new.
                self.initial = None;
                return Ok(false);
            };
            let Ok(fd) = self
                .jail
                .open(&self.path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)
            else {
                return Ok(false);
            };
            let mut f = std::fs::File::from(fd);
            if self.follow {
                let _ = f.seek(SeekFrom::Start(s.3.max(0) as u64));
            }
            self.file = Some(f);
        }
        let mut any = false;
        let mut buf = [0u8; 10000];
        loop {
            let n = match self.file.as_mut().map(|f| f.read(&mut buf)) {
                Some(Ok(n)) if n > 0 => n,
                _ => break,
            };
            any = true;
            let text = self.dec.decode(&buf[..n]);
            up.output(Stream::Log(self.name.clone()), &text).await?;
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_counting() {
        assert_eq!(
            shell_quote(&["echo".into(), "a b".into(), "".into(), "it's".into()]),
            "echo 'a b' \"\" 'it'\"'\"'s'"
        );
        assert_eq!(count_lines("a\r\nb\rc\n"), 3);
        assert_eq!(secs(5.0), "5");
        assert_eq!(secs(1.5), "1.5");
    }

    #[test]
    fn the_read_buffer_grows_only_for_a_command_that_fills_it() {
        let mut buf = vec![0u8; FIRST_READ];
        grow_when_full(&mut buf, 10);
        assert_eq!(buf.len(), FIRST_READ);
        grow_when_full(&mut buf, FIRST_READ);
        assert_eq!(buf.len(), READ_CHUNK);
        grow_when_full(&mut buf, READ_CHUNK);
        assert_eq!(buf.len(), READ_CHUNK);
    }
}
