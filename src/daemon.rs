//! Running autobot as a daemon: pid files, log files, background start and signals.
//!
//! A master or slave directory holds `autobot.pid` (the running daemon) and
//! `autobot.log` (its log). `start` re-executes the binary as `autobot run DIR` in the
//! background and returns once the daemon said it is up; `stop` sends SIGTERM and
//! waits for a graceful exit; `stop --clean` sends SIGUSR2 (a master takes no new
//! builds and exits when the running ones end); `reconfig` sends SIGHUP to a
//! master; SIGUSR1 reopens `autobot.log` (see [`crate::logfile`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot, watch};

/// How a running master or slave is told to stop or re-read its configuration,
/// and how it tells its starter that it is up.
pub struct Control {
    /// Becomes `true` once: finish what must be finished, write state, return.
    pub shutdown: watch::Receiver<bool>,
    /// One message per SIGHUP: re-read the configuration (masters only).
    pub reconfig: mpsc::UnboundedReceiver<()>,
    /// Turns `true` (before `shutdown` does) when the stop is a clean one
    /// (`autobot stop --clean`, SIGUSR2): a master lets its running Builds finish
    /// first and starts no new ones.
    pub clean: watch::Receiver<bool>,
    /// Send once listening/connected-loop-started, with a line for the log; an
    /// `Err` means start-up failed (e.g. port in use) and carries the reason.
    pub ready: Option<oneshot::Sender<Result<String, String>>>,
}

/// The sending half of [`Control`], kept by whoever runs the daemon.
pub struct ControlHandle {
    pub shutdown: watch::Sender<bool>,
    pub clean: watch::Sender<bool>,
    pub reconfig: mpsc::UnboundedSender<()>,
    pub ready: oneshot::Receiver<Result<String, String>>,
}

/// A connected pair of [`Control`] and [`ControlHandle`].
pub fn control() -> (Control, ControlHandle) {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (reconfig_tx, reconfig_rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (clean_tx, clean_rx) = watch::channel(false);
    (
        Control {
            shutdown: shutdown_rx,
            reconfig: reconfig_rx,
            clean: clean_rx,
            ready: Some(ready_tx),
        },
        ControlHandle {
            shutdown: shutdown_tx,
            clean: clean_tx,
            reconfig: reconfig_tx,
            ready: ready_rx,
        },
    )
}

impl Control {
    /// Report start-up success or failure (only the first call is delivered).
    pub fn ready(&mut self, result: Result<String, String>) {
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(result);
        }
    }
}

/// The pid file of a running daemon, inside its directory.
pub const PID_FILE: &str = "autobot.pid";
/// The log file of a daemon started in the background, inside its directory.
pub const LOG_FILE: &str = "autobot.log";

/// Why a daemon's pid file could not be taken or used.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("already running in {dir} (pid {pid}); stop it first with `autobot stop {dir}`")]
    AlreadyRunning { dir: PathBuf, pid: i32 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot signal pid {pid}: {source}")]
    Signal { pid: i32, source: nix::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The held, locked pid file of this process; removed when dropped.
///
/// The lock (flock) is what says "running": a crashed daemon's lock is released by
/// the kernel, so a pid file left behind is recognisably stale.
pub struct PidFile {
    path: PathBuf,
    _lock: Flock<File>,
}

impl PidFile {
    /// Lock `DIR/autobot.pid` and write our pid into it; refused while another
    /// process holds it.
    pub fn acquire(dir: &Path) -> Result<PidFile, DaemonError> {
        let path = dir.join(PID_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, _)) => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Err(DaemonError::AlreadyRunning {
                    dir: dir.to_path_buf(),
                    pid: s.trim().parse().unwrap_or(0),
                });
            }
        };
        lock.set_len(0).map_err(io_err(&path))?;
        lock.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io_err(&path))?;
        lock.flush().map_err(io_err(&path))?;
        Ok(PidFile { path, _lock: lock })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a directory's daemon runs, as its pid file and lock say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidState {
    NotRunning,
    /// A pid file whose lock nobody holds: the daemon died without cleaning up.
    Stale(i32),
    Running(i32),
}

/// Look at `DIR/autobot.pid` without disturbing a running daemon.
pub fn pid_state(dir: &Path) -> Result<PidState, DaemonError> {
    let path = dir.join(PID_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PidState::NotRunning),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut s = String::new();
    (&file).read_to_string(&mut s).map_err(io_err(&path))?;
    let pid: i32 = s.trim().parse().unwrap_or(0);
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_unlocked_on_drop) => Ok(PidState::Stale(pid)),
        Err(_) => Ok(PidState::Running(pid)),
    }
}

/// Remove a pid file nobody holds.
pub fn remove_stale_pid_file(dir: &Path) -> Result<(), DaemonError> {
    let path = dir.join(PID_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Send a signal to a daemon.
pub fn signal(pid: i32, sig: Signal) -> Result<(), DaemonError> {
    nix::sys::signal::kill(Pid::from_raw(pid), sig)
        .map_err(|source| DaemonError::Signal { pid, source })
}

/// Wait until the daemon of `dir` has exited (its pid file lock is free).
pub fn wait_exit(dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match pid_state(dir) {
            Ok(PidState::Running(_)) => {}
            _ => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Open (append) `DIR/autobot.log`.
pub fn open_log(dir: &Path) -> Result<File, DaemonError> {
    let path = dir.join(LOG_FILE);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))
}

/// Make a child the leader of a new session, detached from our terminal.
pub fn new_session(cmd: &mut std::process::Command) {
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

static BACKGROUND: AtomicBool = AtomicBool::new(false);

/// Log through `tracing`: to `DIR/autobot.log` in the background (rotated by
/// `rotation`, see [`crate::logfile`]), else to stderr. `AUTOBOT_LOG` (a level
/// such as `debug`, or `TARGET=LEVEL,...`) sets the level; default `info`, or
/// `debug` when master.ini says `debug = true`.
pub fn init_logging(
    background_dir: Option<&Path>,
    debug: bool,
    rotation: crate::config::LogRotation,
) -> Result<(), DaemonError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = if debug { "debug" } else { "info" };
    // `Targets` ("debug", "autobot::slave=debug,info") needs no regex engine, which
    // keeps an idle slave small.
    let filter: tracing_subscriber::filter::Targets = std::env::var("AUTOBOT_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| default.parse().unwrap_or_default());
    let fmt = tracing_subscriber::fmt::layer();
    match background_dir {
        Some(dir) => {
            BACKGROUND.store(true, Ordering::SeqCst);
            let path = dir.join(LOG_FILE);
            let log =
                crate::logfile::RotatingLog::open(&path, rotation, true).map_err(io_err(&path))?;
            let _ = tracing_subscriber::registry()
                .with(fmt.with_ansi(false).with_writer(std::sync::Mutex::new(log)))
                .with(filter)
                .try_init();
        }
        None => {
            let _ = tracing_subscriber::registry()
                .with(fmt.with_writer(std::io::stderr))
                .with(filter)
                .try_init();
        }
    }
    Ok(())
}

/// Tell `autobot start` that we are up, then let go of its pipe.
pub fn report_ready(msg: &str) {
    if !BACKGROUND.load(Ordering::SeqCst) {
        return;
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready: {msg}");
    let _ = out.flush();
    if let Ok(devnull) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&devnull);
    }
}

/// The signals a daemon process answers, caught from the moment this is made: make
/// it before reporting ready, or a SIGHUP sent right after `autobot start` returns
/// would find no handler and end the process (its default action).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Catch SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 (inside the runtime).
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// The senders of one daemon's [`ControlHandle`] that signals drive.
pub struct SignalTargets {
    pub shutdown: watch::Sender<bool>,
    pub reconfig: mpsc::UnboundedSender<()>,
    pub clean: watch::Sender<bool>,
}

/// Turn SIGTERM/SIGINT into a shutdown, SIGUSR2 into a clean shutdown (running
/// builds finish first), SIGHUP into a reconfig and SIGUSR1 into reopening the
/// log file, for every daemon of this process. Returns after the first shutdown
/// was sent.
pub async fn forward_signals(signals: Signals, targets: Vec<SignalTargets>) {
    let Signals {
        mut term,
        mut int,
        mut hup,
        mut usr1,
        mut usr2,
    } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = usr2.recv() => {
                tracing::info!("SIGUSR2: stopping cleanly: no new builds; the running ones finish first");
                for t in &targets { let _ = t.clean.send(true); }
                break;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: re-reading the configuration");
                for t in &targets { let _ = t.reconfig.send(()); }
            }
            _ = usr1.recv() => {
                crate::logfile::request_reopen();
                tracing::info!("SIGUSR1: reopened {LOG_FILE}");
            }
        }
    }
    for t in &targets {
        let _ = t.shutdown.send(true);
    }
}

/// Raise the soft open-files limit to the hard limit: a master holds one socket
/// per slave and a slave one pipe set per command, and the usual soft limit of
/// 1024 is too small for a fleet.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!("cannot raise the open-files limit: {e}");
            }
        }
    }
}

/// Run a background service of a master (the reporters, retention) on a thread
/// and current-thread runtime of its own, `nice` steps below the daemon's CPU
/// priority, so neither its CPU nor its waits land on the engine's threads; its
/// blocking threads end soon after their work, as the daemon's do. The returned
/// task ends when the service has. `lost` says what is missing if the thread or
/// runtime cannot be made (e.g. "no notifications").
pub fn spawn_service<F, Fut>(
    name: &'static str,
    nice: i32,
    lost: &'static str,
    service: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lower_priority(nice);
            match tokio::runtime::Builder::new_current_thread()
                .on_thread_start(move || lower_priority(nice))
                .thread_keep_alive(crate::memory::BLOCKING_KEEP_ALIVE)
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(service()),
                Err(e) => tracing::error!("{name}: no runtime ({e}); {lost}"),
            }
            let _ = done_tx.send(());
        });
    if let Err(e) = spawned {
        tracing::error!("{name}: no thread ({e}); {lost}");
    }
    tokio::spawn(async move {
        let _ = done_rx.await;
    })
}

/// Lower the calling thread's CPU priority by `nice` (best effort).
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread; `gettid` cannot fail.
        unsafe {
            let tid = nix::libc::syscall(nix::libc::SYS_gettid) as nix::libc::id_t;
            let now = nix::libc::getpriority(nix::libc::PRIO_PROCESS, tid);
            nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid, (now + nice).min(19));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
