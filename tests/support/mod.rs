//! Shared helpers for integration tests: a real master in a temp directory, real
//! slaves (the stock `buildbot-worker` 4.3.0 from PyPI in a cached venv, or the
//! autobot slave), a captured log, and a tiny HTTP client for the JSON API.
//!
//! Include with `#[path = "support/mod.rs"] mod support;`.

#![allow(dead_code)]

pub mod cli;
#[path = "../pg_common/mod.rs"]
pub mod pg_server;
pub mod testdb;
pub mod tls;

#[allow(unused_imports)]
pub use testdb::{keep_sqlite, master_db, use_test_db, with_test_db, write_master_ini};

// tests/pg_common reaches this module as `super::support`.
use crate::support;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use autobot::app::{Master, MasterOptions};
use autobot::slavelink::SlaveHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long any wait for a condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- log capture

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Send every `tracing` event of this test binary to a buffer (and stderr).
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("AUTOBOT_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Whether some captured log line contains every one of `parts`.
pub fn log_has(parts: &[&str]) -> bool {
    let log = LOG.lock().unwrap();
    String::from_utf8_lossy(&log)
        .lines()
        .any(|l| parts.iter().all(|p| l.contains(p)))
}

/// Wait until a log line contains every one of `parts`.
pub async fn wait_log(parts: &[&str]) {
    let ok = wait_for(DEADLINE, || log_has(parts)).await;
    assert!(ok, "no log line with {parts:?} within {DEADLINE:?}");
}

/// Poll `cond` every few ms until it holds or `timeout` passes.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- master

/// A real master in a temp directory, on free ports.
pub struct TestMaster {
    pub dir: tempfile::TempDir,
    pub master: Master,
}

/// The factory every test master has, so each slave gets a builder directory.
pub const FACTORY: &str = "fac";

/// The text of a master.ini with these (name, password) slaves.
pub fn master_ini(slaves: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "[:master:]\nslaveport = 9010\nhtmlport = 8010\nfactories = *\n\n\
         [fac]\ntype = shell\nstep.one = true\n\n",
    );
    for (name, pw) in slaves {
        s.push_str(&format!("[slave:{name}]\npassword = {pw}\n\n"));
    }
    s
}

impl TestMaster {
    /// Start a master knowing these slaves, with a short keepalive interval.
    pub async fn start(slaves: &[(&str, &str)], keepalive: Duration) -> TestMaster {
        capture_logs();
        let dir = tempfile::tempdir().unwrap();
        write_master_ini(dir.path(), master_ini(slaves));
        let master = Master::start_with(
            dir.path(),
            MasterOptions {
                keepalive_interval: Some(keepalive),
                slaveport: Some(0),
                htmlport: Some(0),
                publichtmlport: None,
            },
        )
        .await
        .unwrap();
        TestMaster { dir, master }
    }

    pub fn port(&self) -> u16 {
        self.master.slaveport()
    }

    /// Wait until `name` is connected and set up.
    pub async fn wait_connected(&self, name: &str) -> SlaveHandle {
        match self.master.registry().wait_connected(name, DEADLINE).await {
            Some(h) => h,
            None => panic!("slave {name} did not connect within {DEADLINE:?}"),
        }
    }

    /// `GET path` on the web port: (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.master.htmlport(), path).await
    }

    /// The JSON list of `GET /api/v1/slaves`.
    pub async fn api_slaves(&self) -> serde_json::Value {
        let (status, body) = self.http_get("/api/v1/slaves").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// One slave's entry of `GET /api/v1/slaves`.
    pub async fn api_slave(&self, name: &str) -> serde_json::Value {
        let list = self.api_slaves().await;
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {list}"))
    }
}

/// Run a command (git, hg, …) that must succeed; its stdout, trimmed. A failure
/// fails the test with the command's stderr.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `git ARGS` in `dir` with a fixed identity (Ann Author) and no user or system
/// configuration, so tests do not depend on the machine's; its stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Ann Author")
            .env("GIT_AUTHOR_EMAIL", "ann@example.org")
            .env("GIT_COMMITTER_NAME", "Ann Author")
            .env("GIT_COMMITTER_EMAIL", "ann@example.org"),
    )
}

/// Write `content` to `dir/path`, making its directories.
pub fn write_file(dir: &Path, path: &str, content: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A minimal HTTP/1.1 GET on 127.0.0.1:port: (status, body).
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    let r = http(port, "GET", path, &[], b"").await;
    (r.status, r.body)
}

/// A response: status, headers (lower-case names) and body text.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request on 127.0.0.1:port with `headers` and `body`.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    HttpReply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------- slaves

/// An environment variable every process-based slave gets: its value must never
/// show up in the master's database, API or log (the environment is secret).
pub const CANARY_VAR: &str = "AUTOBOT_TEST_CANARY";
pub const CANARY_VALUE: &str = "canary-3f9e1c-secret";

/// Which slave implementation a contract test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// The stock `buildbot-worker==4.3.0` from PyPI.
    BuildbotWorker,
    /// autobot's own slave.
    Autobot,
}

/// A running slave; killed (with its process group) when dropped.
pub struct SlaveProc {
    pub dir: PathBuf,
    child: Option<Child>,
    task: Option<(autobot::daemon::ControlHandle, tokio::task::JoinHandle<()>)>,
}

impl SlaveProc {
    /// The OS process id, for process-based implementations.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Wait until the slave exits by itself (e.g. after the master's `shutdown`).
    pub async fn wait_exit(&mut self, timeout: Duration) -> bool {
        if let Some(c) = self.child.as_mut() {
            return wait_for(timeout, || matches!(c.try_wait(), Ok(Some(_)))).await;
        }
        if let Some((_, task)) = self.task.as_ref() {
            return wait_for(timeout, || task.is_finished()).await;
        }
        true
    }

    /// Stop the slave and wait for it.
    pub async fn stop(mut self) {
        self.kill();
        if let Some((handle, task)) = self.task.take() {
            let _ = handle.shutdown.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pgid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGCONT);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

impl Drop for SlaveProc {
    fn drop(&mut self) {
        self.kill();
        if let Some((handle, task)) = self.task.take() {
            let _ = handle.shutdown.send(true);
            task.abort();
        }
    }
}

impl Impl {
    /// Start a slave in `dir` (created) that connects to 127.0.0.1:`port` as
    /// `name`/`password`. `Err` says why the implementation cannot be had (for
    /// [`skip`], which fails the test under `CI=true`).
    pub async fn start(
        self,
        dir: &Path,
        port: u16,
        name: &str,
        password: &str,
    ) -> Result<SlaveProc, String> {
        match self {
            Impl::BuildbotWorker => start_buildbot_worker(dir, port, name, password).await,
            Impl::Autobot => start_autobot_slave(dir, port, name, password).await,
        }
    }
}

// ---------------------------------------------------------------- tools a test needs

/// What every "cannot run" message ends with: where the tools come from.
pub const INSTALL_HINT: &str = "scripts/test.sh installs every tool the tests use";

/// Whether this is CI's run (`CI=true`, as `.ci/run` is run). There a test that
/// cannot run fails instead of skipping, so a green CI run means every test ran.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A test that cannot run here, because of `why`. Under `CI=true` this fails the
/// test. Elsewhere it prints a `SKIP` line (straight to stderr: the harness
/// captures `eprintln!`, not the handle, so the line shows in every run and
/// `scripts/test.sh` lists it at the end) and the caller returns.
#[track_caller]
pub fn skip(why: &str) {
    let at = std::panic::Location::caller();
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => format!("{name} ({}:{})", at.file(), at.line()),
        _ => format!("{}:{}", at.file(), at.line()),
    };
    if in_ci() {
        panic!(
            "{test} cannot run: {why}. With CI=true a test that cannot run fails; {INSTALL_HINT}"
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: {why} (this test did not run; {INSTALL_HINT})"
    );
}

/// Where `tool` is on PATH, as the test's child processes will find it.
pub fn which(tool: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Whether every `(tool, how to install it)` is on PATH; if not, [`skip`] naming
/// each missing one, and the caller returns:
/// `if !need_tools(&[("hg", "apt-get install mercurial")]) { return; }`.
#[track_caller]
#[must_use]
pub fn need_tools(tools: &[(&str, &str)]) -> bool {
    let missing: Vec<String> = tools
        .iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|(tool, install)| format!("`{tool}` is not on PATH ({install})"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip(&missing.join(", "));
    false
}

/// Whether the `python3` on PATH can import `module`; if not, [`skip`] with
/// `install`, and the caller returns.
#[track_caller]
#[must_use]
pub fn need_python_module(module: &str, install: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(&format!("`python3` cannot import {module} ({install})"));
    }
    ok
}

async fn start_autobot_slave(
    dir: &Path,
    port: u16,
    name: &str,
    password: &str,
) -> Result<SlaveProc, String> {
    std::fs::create_dir_all(dir.join("info")).unwrap();
    let dir = std::fs::canonicalize(dir).unwrap();
    std::fs::write(
        dir.join("info/admin"),
        "Conformance Admin <ca@example.org>\n",
    )
    .unwrap();
    std::fs::write(dir.join("info/host"), "conformance-host\n").unwrap();
    let ini = autobot::config::SlaveIni {
        basedir: dir.clone(),
        master_host: "127.0.0.1".into(),
        master_port: port,
        more_masters: Vec::new(),
        name: name.into(),
        password: password.into(),
        keepalive: 1,
        umask: 0o022,
        usepty: false,
    };
    std::fs::write(dir.join(autobot::config::slave::SLAVE_INI), ini.render()).unwrap();
    let (control, mut handle) = autobot::daemon::control();
    let run_dir = dir.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = autobot::slave::run(&run_dir, control).await {
            eprintln!("autobot slave in {} failed: {e}", run_dir.display());
        }
    });
    match (&mut handle.ready).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("autobot slave did not start: {e}"),
        Err(_) => panic!("autobot slave ended during start-up"),
    }
    Ok(SlaveProc {
        dir,
        child: None,
        task: Some((handle, task)),
    })
}

/// The venv holding buildbot-worker 4.3.0, installed once per target dir.
pub fn buildbot_worker_venv() -> Result<PathBuf, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(install_buildbot_worker).clone()
}

fn install_buildbot_worker() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let venv = root.join("buildbot-worker-4.3.0");
    let lock_file = std::fs::File::create(root.join("buildbot-worker-4.3.0.lock"))
        .map_err(|e| e.to_string())?;
    // Blocks while another test binary installs; released when this returns.
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e.to_string())?;
    let done = venv.join(".autobot-installed");
    if done.is_file() {
        return Ok(venv);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .map_err(|e| format!("cannot run python3 ({e}): apt-get install python3 python3-venv"))?;
    if !out.status.success() {
        return Err(format!(
            "`python3 -m venv {}` failed (apt-get install python3-venv): {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let out = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "buildbot-worker==4.3.0",
        ])
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot install buildbot-worker==4.3.0 from PyPI into {} (is PyPI reachable?): {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::write(&done, "buildbot-worker==4.3.0\n").map_err(|e| e.to_string())?;
    Ok(venv)
}

async fn start_buildbot_worker(
    dir: &Path,
    port: u16,
    name: &str,
    password: &str,
) -> Result<SlaveProc, String> {
    let venv = tokio::task::spawn_blocking(buildbot_worker_venv)
        .await
        .map_err(|e| e.to_string())??;
    let bin = venv.join("bin/buildbot-worker");
    let out = Command::new(&bin)
        .args(["create-worker", "--protocol", "msgpack_experimental_v7"])
        .arg(dir)
        .arg(format!("127.0.0.1:{port}"))
        .arg(name)
        .arg(password)
        .output()
        .map_err(|e| format!("cannot run buildbot-worker: {e}"))?;
    assert!(
        out.status.success(),
        "buildbot-worker create-worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        dir.join("info/admin"),
        "Conformance Admin <ca@example.org>\n",
    )
    .unwrap();
    std::fs::write(dir.join("info/host"), "conformance-host\n").unwrap();
    let log = std::fs::File::create(dir.join("worker.out")).unwrap();
    let child = Command::new(&bin)
        .args(["start", "--nodaemon"])
        .arg(dir)
        .env(CANARY_VAR, CANARY_VALUE)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start buildbot-worker: {e}"))?;
    Ok(SlaveProc {
        dir: dir.to_path_buf(),
        child: Some(child),
        task: None,
    })
}
