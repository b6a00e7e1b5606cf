//! The daemon verbs: `start`, `stop`, `restart`, `reconfig` and `run`.
//!
//! A directory is a master (it has `master.ini`), a slave (`slave.ini`) or a pair made
//! by `create` (`master/` and `slave/`; verbs act on both, master first). `start`
//! runs `autobot run DIR --background` as a new session, reads one status line from
//! it (`ready: …` or `error: …`) and returns; `stop` signals SIGTERM and waits for the
//! pid file's lock to be released, which happens only when the daemon has exited.

use anyhow::{anyhow, bail, Context};
use clap::Args;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::slave::SLAVE_INI;
use crate::daemon::{self, PidFile, PidState};

#[derive(Debug, Args)]
pub struct DirArgs {
    /// A master directory, a slave directory, or a pair made by `create`.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// A master directory, a slave directory, or a pair made by `create`.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Let the master's running builds finish first (it starts no new ones
    /// meanwhile), however long they take; then stop.
    #[arg(long)]
    pub clean: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A master directory, a slave directory, or a pair made by `create`.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Internal: started by `autobot start`; log to DIR/autobot.log and report
    /// readiness on standard output.
    #[arg(long, hide = true)]
    pub background: bool,
}

/// What kind of daemon lives in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Slave,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Slave => "slave",
        }
    }
}

/// The daemons a directory holds, in start order (master first).
pub fn daemons_in(dir: &Path) -> anyhow::Result<Vec<(Role, PathBuf)>> {
    if dir.join("master.ini").is_file() {
        return Ok(vec![(Role::Master, dir.to_path_buf())]);
    }
    if dir.join(SLAVE_INI).is_file() {
        return Ok(vec![(Role::Slave, dir.to_path_buf())]);
    }
    let m = dir.join("master");
    let s = dir.join("slave");
    let mut out = Vec::new();
    if m.join("master.ini").is_file() {
        out.push((Role::Master, m));
    }
    if s.join(SLAVE_INI).is_file() {
        out.push((Role::Slave, s));
    }
    if out.is_empty() {
        bail!(
            "{} is not an autobot directory: it has no master.ini, no {SLAVE_INI}, and no master/ or slave/ made by `autobot create`",
            dir.display()
        );
    }
    Ok(out)
}

pub fn start_cmd(args: &DirArgs) -> anyhow::Result<()> {
    let daemons = daemons_in(&args.dir)?;
    for (role, dir) in &daemons {
        start_one(*role, dir)?;
    }
    print_waterfall_url(&daemons);
    Ok(())
}

/// "The waterfall: http://localhost:PORT/" for the master among `daemons`.
pub(crate) fn print_waterfall_url(daemons: &[(Role, PathBuf)]) {
    let master = daemons.iter().find(|(r, _)| *r == Role::Master);
    if let Some((_, dir)) = master {
        if let Ok(cfg) = crate::config::load(&dir.join("master.ini")) {
            println!("The waterfall: {}", waterfall_url(&cfg));
        }
    }
}

/// Where a browser on this machine finds the master's waterfall.
pub(crate) fn waterfall_url(cfg: &crate::config::MasterConfig) -> String {
    cfg.html_listen().local_url()
}

pub fn stop_cmd(args: &StopArgs) -> anyhow::Result<()> {
    for (role, dir) in daemons_in(&args.dir)? {
        if args.clean && role == Role::Master {
            stop_clean(&dir)?;
        } else {
            stop_one(role, &dir)?;
        }
    }
    Ok(())
}

/// `stop --clean` of a master: SIGUSR2, then wait for it to exit, however long
/// its running builds take.
fn stop_clean(dir: &Path) -> anyhow::Result<()> {
    let pid = match daemon::pid_state(dir)? {
        PidState::Running(pid) => pid,
        _ => return stop_one(Role::Master, dir),
    };
    let running = running_builds(dir);
    daemon::signal(pid, nix::sys::signal::Signal::SIGUSR2)?;
    match running {
        Some(0) => println!("master in {}: no build is running; stopping", dir.display()),
        Some(n) => println!(
            "master in {}: waiting for {n} running build{} to finish (it starts no new ones); Ctrl-C stops waiting, not the master",
            dir.display(),
            if n == 1 { "" } else { "s" }
        ),
        None => println!(
            "master in {}: waiting for its running builds to finish (it starts no new ones)",
            dir.display()
        ),
    }
    loop {
        if daemon::wait_exit(dir, Duration::from_secs(3600)) {
            println!("master in {} stopped (pid {pid})", dir.display());
            return Ok(());
        }
    }
}

/// How many builds the master in `dir` runs now, from its JSON API.
fn running_builds(dir: &Path) -> Option<usize> {
    let cfg = crate::config::load(&dir.join("master.ini")).ok()?;
    let reply = super::http::request(
        &cfg.html_listen().connect_host_text(),
        cfg.htmlport,
        "GET",
        "/api/v1/builders",
        None,
    )
    .ok()?;
    let v = reply.json().ok()?;
    Some(
        v.as_array()?
            .iter()
            .map(|b| b["running"].as_array().map_or(0, Vec::len))
            .sum(),
    )
}

pub fn restart_cmd(args: &DirArgs) -> anyhow::Result<()> {
    let daemons = daemons_in(&args.dir)?;
    for (role, dir) in &daemons {
        stop_one(*role, dir)?;
    }
    if debug_mode(&daemons) {
        // autobot's debug mode: every restart starts with fresh logs.
        for (_, dir) in &daemons {
            let _ = std::fs::remove_file(dir.join(daemon::LOG_FILE));
        }
    }
    for (role, dir) in &daemons {
        start_one(*role, dir)?;
    }
    Ok(())
}

pub fn reconfig_cmd(args: &DirArgs) -> anyhow::Result<()> {
    let daemons = daemons_in(&args.dir)?;
    let (_, dir) = daemons
        .iter()
        .find(|(r, _)| *r == Role::Master)
        .ok_or_else(|| anyhow!("{} holds no master to reconfigure", args.dir.display()))?;
    let pid = match daemon::pid_state(dir)? {
        PidState::Running(pid) => pid,
        _ => bail!(
            "the master in {} is not running; start it with `autobot start {}`",
            dir.display(),
            dir.display()
        ),
    };
    let log = dir.join(daemon::LOG_FILE);
    let start = std::fs::metadata(&log).ok();
    let offset = start.as_ref().map_or(0, |m| m.len());
    let inode = start.as_ref().map(std::os::unix::fs::MetadataExt::ino);
    daemon::signal(pid, nix::sys::signal::Signal::SIGHUP)?;
    // The master logs one outcome line, "reconfig rejected: WHY" or "reconfig:
    // applied FILE", after any warnings about the file it read; they are shown too.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    let file = dir.join("master.ini");
    while Instant::now() < deadline {
        let lines = new_lines_since(&log, offset, inode)?;
        for line in lines.iter().skip(seen) {
            let msg = log_message(line);
            if let Some(why) = msg.split_once("reconfig rejected").map(|(_, w)| w) {
                let why = why.trim_start_matches([':', ' ']);
                bail!(
                    "the master rejected {} and keeps its previous configuration (reconfig rejected: {why})",
                    file.display()
                );
            }
            if let Some(what) = msg.strip_prefix("reconfig: applied ") {
                // "FILE (2 slaves, 3 factories, 4 builders)"
                let counts = what
                    .rsplit_once(" (")
                    .map(|(_, c)| c.trim_end_matches(')'))
                    .unwrap_or(what);
                println!(
                    "The master in {} re-read {}: now {counts}.",
                    dir.display(),
                    file.display()
                );
                return Ok(());
            }
            if line.contains(" WARN ") && msg.contains("master.ini:") {
                println!("warning: {msg}");
            }
        }
        seen = lines.len();
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "sent SIGHUP to the master (pid {pid}) but it logged no reconfig outcome within 30 s; see {}",
        log.display()
    )
}

/// Whether the master among `daemons` has `debug = true` in its master.ini.
fn debug_mode(daemons: &[(Role, PathBuf)]) -> bool {
    daemons.iter().any(|(role, dir)| {
        *role == Role::Master && crate::config::load(&dir.join("master.ini")).is_ok_and(|c| c.debug)
    })
}

/// The whole lines written to `log` since it was `offset` bytes long, also when
/// it has been rotated meanwhile (the file that had inode `inode` is then
/// `log.1`).
fn new_lines_since(log: &Path, offset: u64, inode: Option<u64>) -> anyhow::Result<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let now = std::fs::metadata(log).ok().map(|m| m.ino());
    if inode.is_none() || now == inode {
        return new_log_lines(log, offset);
    }
    let mut old = log.as_os_str().to_owned();
    old.push(".1");
    let mut lines = new_log_lines(Path::new(&old), offset)?;
    lines.extend(new_log_lines(log, 0)?);
    Ok(lines)
}

/// A log line's message, without its time, level and module.
fn log_message(line: &str) -> &str {
    line.split_once(": ").map_or(line, |(_, m)| m)
}

fn new_log_lines(log: &Path, offset: u64) -> anyhow::Result<Vec<String>> {
    let mut f = match std::fs::File::open(log) {
        Ok(f) => f,
        Err(_) => return Ok(Vec::new()),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    // Only whole lines: the last one may still be being written.
    let whole = s.rfind('\n').map_or("", |i| &s[..i]);
    Ok(whole.lines().map(str::to_string).collect())
}

fn start_one(role: Role, dir: &Path) -> anyhow::Result<()> {
    if let PidState::Running(pid) = daemon::pid_state(dir)? {
        bail!(
            "the {} in {} is already running (pid {pid}); use `autobot restart`",
            role.as_str(),
            dir.display()
        );
    }
    let exe = std::env::current_exe().context("cannot find the autobot binary")?;
    let log = daemon::open_log(dir)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run")
        .arg(dir)
        .arg("--background")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    daemon::new_session(&mut cmd);
    crate::memory::tunables_for(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start the {}", role.as_str()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no status pipe from the daemon"))?;
    let mut line = String::new();
    // The daemon closes its end once ready (or exits), so this read ends.
    BufReader::new(stdout).read_line(&mut line)?;
    let line = line.trim();
    if let Some(msg) = line.strip_prefix("ready: ") {
        println!(
            "{} started in {} (pid {}): {msg}",
            role.as_str(),
            dir.display(),
            child.id()
        );
        return Ok(());
    }
    let _ = child.wait();
    let why = line.strip_prefix("error: ").unwrap_or(line);
    let why = if why.is_empty() {
        format!(
            "it exited during start-up; last lines of {}:\n{}",
            dir.join(daemon::LOG_FILE).display(),
            tail(&dir.join(daemon::LOG_FILE), 10)
        )
    } else {
        why.to_string()
    };
    bail!(
        "the {} in {} did not start: {why}",
        role.as_str(),
        dir.display()
    )
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn stop_one(role: Role, dir: &Path) -> anyhow::Result<()> {
    match daemon::pid_state(dir)? {
        PidState::NotRunning => {
            println!("{} in {} is not running", role.as_str(), dir.display());
            Ok(())
        }
        PidState::Stale(pid) => {
            daemon::remove_stale_pid_file(dir)?;
            println!(
                "{} in {} was not running (removed the stale pid file of pid {pid})",
                role.as_str(),
                dir.display()
            );
            Ok(())
        }
        PidState::Running(pid) => {
            daemon::signal(pid, nix::sys::signal::Signal::SIGTERM)?;
            if daemon::wait_exit(dir, Duration::from_secs(30)) {
                println!("{} in {} stopped (pid {pid})", role.as_str(), dir.display());
                return Ok(());
            }
            eprintln!(
                "{} (pid {pid}) did not exit within 30 s of SIGTERM; sending SIGKILL",
                role.as_str()
            );
            daemon::signal(pid, nix::sys::signal::Signal::SIGKILL)?;
            if daemon::wait_exit(dir, Duration::from_secs(10)) {
                let _ = daemon::remove_stale_pid_file(dir);
                println!("{} in {} killed (pid {pid})", role.as_str(), dir.display());
                Ok(())
            } else {
                bail!("{} (pid {pid}) survived SIGKILL", role.as_str())
            }
        }
    }
}

/// The `PATH` a daemon started without one gives itself and its commands
/// (systemd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `autobot run DIR`: the daemons of DIR in this process until SIGTERM/SIGINT.
pub fn run_cmd(args: &RunArgs) -> anyhow::Result<()> {
    // First of all, single-threaded: the C library's tunables (crate::memory).
    crate::memory::restore_tunables(true);
    let daemons = daemons_in(&args.dir)?;
    let path_was_unset = std::env::var_os("PATH").is_none();
    if path_was_unset {
        // Started with an empty environment (`env -i`, some init systems): the
        // commands a slave runs still find the usual tools, and gcc its `as` and
        // `ld`. No thread runs yet, so setting the variable is safe.
        std::env::set_var("PATH", DEFAULT_PATH);
    }
    let log_dir = &daemons[0].1;
    let debug = debug_mode(&daemons);
    let rotation = match daemons[0].0 {
        // A master.ini that does not load is reported by the master itself.
        Role::Master => crate::config::load(&log_dir.join("master.ini"))
            .map(|c| c.log)
            .unwrap_or_default(),
        Role::Slave => crate::config::slave::log_rotation(log_dir)?,
    };
    if args.background {
        daemon::init_logging(Some(log_dir), debug, rotation)?;
    } else {
        daemon::init_logging(None, debug, rotation)?;
    }
    if path_was_unset {
        tracing::info!("PATH was not set: commands get PATH={DEFAULT_PATH}");
    }
    let result = run_daemons(&daemons);
    match (&result, args.background) {
        (Err(e), true) => {
            // Reaches `autobot start` if it is still reading; otherwise harmless.
            let mut out = std::io::stdout();
            let _ = writeln!(out, "error: {e:#}");
            let _ = out.flush();
            tracing::error!("{e:#}");
        }
        (Err(e), false) => tracing::error!("{e:#}"),
        _ => {}
    }
    result
}

fn run_daemons(daemons: &[(Role, PathBuf)]) -> anyhow::Result<()> {
    daemon::raise_open_files_limit();
    let mut pidfiles = Vec::new();
    for (role, dir) in daemons {
        let pf = PidFile::acquire(dir).map_err(|e| anyhow!("the {}: {e}", role.as_str()))?;
        pidfiles.push(pf);
    }
    // Before any thread exists: malloc's arenas are capped (crate::memory).
    crate::memory::tune();
    // One runtime thread per daemon. A master's or a slave's work is short
    // I/O-bound steps whose hand-offs between threads would cost more than they
    // give (a Build of one `true` step: 2.2 ms with two threads, 1.9 ms with one);
    // whatever blocks (file reads, git, a database another process holds) goes to
    // the blocking pool. One daemon runs on this very thread (a current-thread
    // runtime, as `bench/engine.rs` measures it): no second thread, stack and
    // malloc cache for it.
    let mut builder = if daemons.len() > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(daemons.len());
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = builder
        .thread_keep_alive(crate::memory::BLOCKING_KEEP_ALIVE)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        // Caught before anyone hears we are ready (a reconfig may follow at once).
        let caught = match daemon::Signals::install() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot install signal handlers ({e}); stop with SIGKILL");
                None
            }
        };
        let mut handles = Vec::new();
        let mut tasks = Vec::new();
        let mut ready_msgs = Vec::new();
        for (role, dir) in daemons {
            let (control, mut handle) = daemon::control();
            let dir = dir.clone();
            let task = match role {
                Role::Master => tokio::spawn(async move {
                    crate::app::run(&dir, control)
                        .await
                        .map_err(|e| anyhow!("{e}"))
                }),
                Role::Slave => tokio::spawn(async move {
                    crate::slave::run(&dir, control)
                        .await
                        .map_err(|e| anyhow!("{e}"))
                }),
            };
            match (&mut handle.ready).await {
                Ok(Ok(msg)) if msg.starts_with(role.as_str()) => ready_msgs.push(msg),
                Ok(Ok(msg)) => ready_msgs.push(format!("{}: {msg}", role.as_str())),
                Ok(Err(why)) => {
                    shutdown_all(&handles);
                    bail!("{why}")
                }
                Err(_) => {
                    // The daemon ended before saying it was ready: report its error.
                    shutdown_all(&handles);
                    return match task.await {
                        Ok(Err(e)) => Err(e),
                        _ => Err(anyhow!("the {} stopped during start-up", role.as_str())),
                    };
                }
            }
            handles.push(handle);
            tasks.push(task);
        }
        tracing::info!("up: {}", ready_msgs.join("; "));
        daemon::report_ready(&ready_msgs.join("; "));
        // Once start-up's work is over (and after every later burst), what it
        // used goes back to the system.
        let trimmer = crate::memory::Trimmer::global();
        let trimming = tokio::spawn(trimmer.run(crate::memory::QUIET, crate::memory::release_all));
        trimmer.poke();
        let senders = handles
            .into_iter()
            .map(|h| daemon::SignalTargets {
                shutdown: h.shutdown,
                reconfig: h.reconfig,
                clean: h.clean,
            })
            .collect();
        let signals = tokio::spawn(async move {
            if let Some(caught) = caught {
                daemon::forward_signals(caught, senders).await;
            }
        });
        let mut first_err = None;
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!("{e:#}");
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(anyhow!("daemon task failed: {e}"));
                }
            }
        }
        signals.abort();
        trimming.abort();
        tracing::info!("stopped");
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })?;
    drop(pidfiles);
    Ok(())
}

fn shutdown_all(handles: &[daemon::ControlHandle]) {
    for h in handles {
        let _ = h.shutdown.send(true);
    }
}
