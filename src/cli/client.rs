//! `autobot force` and `autobot stop-build`: the CLI side of the master's JSON API.
//!
//! Both find the master's `htmlport` in its `master.ini` and talk HTTP to it, the
//! same API the web pages use. `force --wait` follows the BuildRequest to its Build
//! through the master's event stream (`GET /events`) and shows an indicatif bar of
//! the time the build has had against the time the master expects it to take (the
//! builder's last successful build), then exits 0 only if the build succeeded;
//! [`FORCE_HELP`] lists its exit statuses.
//!
//! When the master's `[users]` lists users, forcing and stopping need the name and
//! password of one of them, sent as HTTP Basic. [`find_login`] takes them from the
//! first of: `--user`/`--passwd`; `user`/`passwd` in `.autobot/options` (the file
//! `sendchange` reads, found from the current directory up, then in the home
//! directory); `MASTERDIR/.credentials`. A file holding a password must be
//! readable by its owner alone, or it is refused ([`LOGIN_HELP`] says all this
//! in `--help`).

use anyhow::{anyhow, bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::daemon::{daemons_in, Role};
use super::http;
use super::sendchange::{find_options, parse_options, OPTIONS_DIR};
use super::{exit_error, EXIT_INTERRUPTED, EXIT_NO_SUCH_BUILDER, EXIT_UNREACHABLE};
use crate::config::Listen;

/// The credentials file of a master directory: `user = NAME` and `passwd = PASS`
/// lines, readable by its owner only.
pub const CREDENTIALS_FILE: &str = ".credentials";

/// The text of [`LOGIN_HELP`], as a macro so [`FORCE_HELP`] can include it.
macro_rules! login_help {
    () => {
        "\
Logging in: when master.ini has a [users] section, forcing and stopping builds
needs the name and password of one of its users. They are taken from the first
of these that gives them:
  1. --user NAME --passwd PASSWORD (visible to other local users in `ps`; prefer a file);
  2. `user = NAME` and `passwd = PASSWORD` lines in .autobot/options, looked for in
     the current directory, then each parent, then your home directory (the file
     `autobot sendchange` reads);
  3. the same two lines in MASTERDIR/.credentials.
A file that holds a password must be readable by its owner only (chmod 600); one
that group or others can read is refused. Without [users], anyone who reaches the
master's htmlport may force and stop, and no login is needed."
    };
}

/// How `force` and `stop-build` log in; shown by their `--help`.
pub const LOGIN_HELP: &str = login_help!();

/// `force --help`'s closing text: waiting, exit statuses, logging in.
pub const FORCE_HELP: &str = concat!(
    "\
Waiting: with --wait, force follows the build through the master's event stream
(GET /events, the one the web pages use): each step as it ends, and a bar of the
time the build has had against the time the builder's last successful build took
(the ETA). While the request has no build yet it says why it waits (the builder's
slave offline and since when, the slave at its max_builds, builds waiting for
locks), again when the reason changes and every 30 s while it stays. Ctrl-C stops
waiting, not the build: it goes on on the master (stop it with
`autobot stop-build`).

Exit status:
  0    forced (with --wait: the build succeeded, or had warnings without --strict)
  1    an error; with --wait: the build failed, had an exception, or had warnings
       under --strict
  3    the master could not be reached, or went away while waiting
  4    the master has no such builder (`autobot checkconfig DIR` lists them)
  130  Ctrl-C while waiting (the build goes on)

",
    login_help!()
);

/// `--user` and `--passwd` of the verbs that change state on a master.
#[derive(Debug, Args, Clone, Default)]
pub struct LoginArgs {
    /// Log in as this user of the master's `[users]` section (see "Logging in" below).
    #[arg(long, value_name = "NAME", requires = "passwd")]
    pub user: Option<String>,
    /// The password of --user.
    #[arg(long, value_name = "PASSWORD", requires = "user")]
    pub passwd: Option<String>,
}

/// A `[users]` login and where it came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub passwd: String,
    pub from: String,
}

impl Login {
    /// The `Authorization` header that carries it.
    pub fn header(&self) -> String {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.user, self.passwd))
        )
    }
}

/// The login to send to the master in `master_dir`, from the first source that
/// has one (see [`LOGIN_HELP`]); `None` when none has. A source that names a user
/// without a password (or the reverse), or a password file others can read, is an
/// error that says how to fix it.
pub fn find_login(
    args: &LoginArgs,
    master_dir: &Path,
    cwd: &Path,
    home: Option<&Path>,
) -> anyhow::Result<Option<Login>> {
    if let (Some(user), Some(passwd)) = (&args.user, &args.passwd) {
        return Ok(Some(Login {
            user: user.clone(),
            passwd: passwd.clone(),
            from: "--user/--passwd".into(),
        }));
    }
    if let Some(path) = find_options(cwd, home) {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if let Some(login) = login_in(&path, &text)? {
            private_file(&path)?;
            return Ok(Some(login));
        }
    }
    let path = master_dir.join(CREDENTIALS_FILE);
    match read_private(&path)? {
        Some(text) => match login_in(&path, &text)? {
            Some(login) => Ok(Some(login)),
            None => bail!(
                "{} has no login: write `user = NAME` and `passwd = PASSWORD` lines in it (a user of [users] in master.ini)",
                path.display()
            ),
        },
        None => Ok(None),
    }
}

/// `user` and `passwd` of a `key = value` file; `None` when it has neither.
fn login_in(path: &Path, text: &str) -> anyhow::Result<Option<Login>> {
    let o = parse_options(text);
    let get = |k: &str| o.get(k).filter(|v| !v.is_empty()).cloned();
    match (get("user"), get("passwd")) {
        (Some(user), Some(passwd)) => Ok(Some(Login {
            user,
            passwd,
            from: path.display().to_string(),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => bail!(
            "{} names a `user` but has no `passwd`: add `passwd = PASSWORD`",
            path.display()
        ),
        (None, Some(_)) => bail!(
            "{} has a `passwd` but no `user`: add `user = NAME`",
            path.display()
        ),
    }
}

/// Refuse a file holding a password that group or others may read.
fn private_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode();
    check_mode(path, mode)
}

fn check_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    if mode & 0o077 != 0 {
        bail!(
            "{} holds a password but others can read it (mode {:03o}); make it private with `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// A password file's text; `None` when it does not exist. It must be a regular
/// file (a symlink is not followed) readable by its owner alone, checked on the
/// opened file itself.
fn read_private(path: &Path) -> anyhow::Result<Option<String>> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow!(
            "cannot open {} ({e}); it must be a regular file (not a symlink) readable by you alone",
            path.display()
        ))
        }
    };
    let meta = f
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    check_mode(path, meta.permissions().mode())?;
    let mut text = String::new();
    f.read_to_string(&mut text)
        .with_context(|| format!("cannot read {} (is it UTF-8 text?)", path.display()))?;
    Ok(Some(text))
}

#[derive(Debug, Args)]
pub struct ForceArgs {
    /// The master directory (or a pair made by `create`).
    pub dir: PathBuf,
    /// The builder, `FACTORY-SLAVE` (see `autobot checkconfig DIR`).
    pub builder: String,
    /// Why the build is forced; shown on the build.
    #[arg(long, default_value = "forced from the command line")]
    pub reason: String,
    /// Branch to build [default: the factory's branch].
    #[arg(long)]
    pub branch: Option<String>,
    /// Revision to build [default: the newest].
    #[arg(long)]
    pub revision: Option<String>,
    /// Who forces it [default: $USER].
    #[arg(long)]
    pub who: Option<String>,
    /// Wait for the build, showing its progress; exit 0 only if it succeeded.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: a build with warnings counts as failed (exit 1).
    #[arg(long, requires = "wait")]
    pub strict: bool,
    #[command(flatten)]
    pub login: LoginArgs,
}

#[derive(Debug, Args)]
pub struct StopBuildArgs {
    /// The master directory (or a pair made by `create`).
    pub dir: PathBuf,
    /// The builder, `FACTORY-SLAVE`.
    pub builder: String,
    /// The build number.
    pub number: u64,
    /// Why it is stopped; shown on the build.
    #[arg(long, default_value = "stopped from the command line")]
    pub reason: String,
    /// Who stops it [default: $USER]; a logged-in user of `[users]` is always
    /// recorded as that user.
    #[arg(long)]
    pub who: Option<String>,
    #[command(flatten)]
    pub login: LoginArgs,
}

/// A master the CLI talks to: its `htmlport` and the login to send with requests
/// that change state.
struct MasterApi {
    port: Listen,
    login: Option<Login>,
}

impl MasterApi {
    /// Find the master in `dir` (a master or a `create` pair) and the login to use
    /// (see [`find_login`]); a master with `[users]` and no login anywhere is an
    /// error before anything is sent.
    fn open(dir: &Path, login: &LoginArgs) -> anyhow::Result<MasterApi> {
        let master = daemons_in(dir)?
            .into_iter()
            .find(|(r, _)| *r == Role::Master)
            .map(|(_, d)| d)
            .ok_or_else(|| anyhow!("{} holds no master", dir.display()))?;
        let cfg = crate::config::load(&master.join("master.ini"))?;
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let login = find_login(login, &master, &cwd, home.as_deref())?;
        if login.is_none() && !cfg.users.is_empty() {
            bail!(
                "the master in {} lets only the users of its [users] section force and stop builds, and no login was found: \
                 give --user NAME --passwd PASSWORD, or write `user = NAME` and `passwd = PASSWORD` in {OPTIONS_DIR}/options \
                 or in {} (chmod 600)",
                master.display(),
                master.join(CREDENTIALS_FILE).display()
            );
        }
        Ok(MasterApi {
            port: cfg.html_listen(),
            login,
        })
    }

    /// POST `body` to `path` with the login; an error that names the login's
    /// source when the master refuses it.
    fn post(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<http::Reply> {
        let auth = self.login.as_ref().map(Login::header);
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let reply = http::request_with(
            &self.port.connect_host_text(),
            self.port.port,
            "POST",
            path,
            &headers,
            Some(body),
        )?;
        if reply.status == 401 {
            match &self.login {
                Some(l) => bail!(
                    "the master refused the login of {:?} (from {}): {}",
                    l.user,
                    l.from,
                    reply.error_text()
                ),
                None => bail!(
                    "the master wants a login: {} (see `autobot force --help`, \"Logging in\")",
                    reply.error_text()
                ),
            }
        }
        Ok(reply)
    }
}

fn get_json_at(host: &str, port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
    let reply = http::request(host, port, "GET", path, None)?;
    if reply.status != 200 {
        bail!("GET {path}: HTTP {}: {}", reply.status, reply.error_text());
    }
    reply.json()
}

/// `autobot force`: the exit status (see [`FORCE_HELP`]).
pub fn force_cmd(args: &ForceArgs) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    let master = MasterApi::open(&args.dir, &args.login)?;
    let port = master.port;
    let who = args
        .who
        .clone()
        .or_else(current_user)
        .unwrap_or_else(|| "autobot".into());
    // Listening before forcing: no event of the build can be missed. Ctrl-C
    // is caught from here on, so that one pressed as soon as the build is
    // forced (before the waiting starts) still ends with a word about it.
    let events = if args.wait {
        catch_sigint();
        Some(http::EventStream::open(
            &port.connect_host_text(),
            port.port,
            "/events",
        )?)
    } else {
        None
    };
    let body = serde_json::json!({
        "reason": args.reason,
        "branch": args.branch,
        "revision": args.revision,
        "who": who,
    });
    let path = format!(
        "/api/v1/builders/{}/force",
        crate::links::seg(&args.builder)
    );
    let reply = master.post(&path, &body)?;
    if reply.status == 404 {
        // A factory no slave runs has no builder: say how to make one run it.
        let hint = daemons_in(&args.dir)
            .ok()
            .and_then(|d| d.into_iter().find(|(r, _)| *r == Role::Master))
            .and_then(|(_, dir)| crate::config::load(&dir.join("master.ini")).ok())
            .and_then(|cfg| crate::config::unbuilt_factory_hint(&cfg, &args.builder));
        return Err(exit_error(
            EXIT_NO_SUCH_BUILDER,
            match hint {
                Some(hint) => format!("cannot force {}: {hint}", args.builder),
                None => format!(
                    "cannot force {}: {} (`autobot checkconfig {}` lists the builders)",
                    args.builder,
                    reply.error_text(),
                    args.dir.display()
                ),
            },
        ));
    }
    if !(200..300).contains(&reply.status) {
        bail!("cannot force {}: {}", args.builder, reply.error_text());
    }
    let forced = reply.json()?;
    let request = forced["request_id"]
        .as_i64()
        .ok_or_else(|| anyhow!("the master's answer has no request_id: {forced}"))?;
    println!(
        "forced a build of {}: BuildRequest {request} (BuildSet {})",
        args.builder, forced["buildset_id"]
    );
    let Some(events) = events else {
        return Ok(ExitCode::SUCCESS);
    };
    let result = Waiter::new(port, &args.builder, request, &args.dir).run(events)?;
    let ok = result == "success" || (result == "warnings" && !args.strict);
    if result == "warnings" && args.strict {
        println!("--strict: a build with warnings counts as failed");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Set by the SIGINT handler of `force --wait`.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigint(_: nix::libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Catch Ctrl-C, so that waiting can end with a word about the build.
fn catch_sigint() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    if let Err(e) = unsafe { sigaction(Signal::SIGINT, &action) } {
        tracing::debug!("cannot catch SIGINT: {e}");
    }
}

/// `force --wait` (and `try --wait`, one per builder): follows one
/// BuildRequest through the master's events.
pub(super) struct Waiter<'a> {
    /// The master's htmlport: host and port.
    host: String,
    port: u16,
    builder: &'a str,
    builder_path: String,
    request: i64,
    dir: &'a Path,
    /// The build of the request being followed.
    build: Option<i64>,
    /// Its start (seconds since the epoch, the master's clock = ours) and, once
    /// known, the seconds it is expected to take in all.
    started_at: f64,
    /// When it was forced (for how long it has waited).
    forced_at: f64,
    expected: Option<f64>,
    step: String,
    bar: indicatif::ProgressBar,
    /// Why the request waits, as last printed, and when; when it was last asked.
    waiting: Option<String>,
    waiting_said: Instant,
    waiting_asked: Option<Instant>,
    /// Ctrl-C: print where the build is and exit 130 (`force`), or return
    /// that as an [`EXIT_INTERRUPTED`] error (`try`, which follows several).
    exit_on_interrupt: bool,
}

/// How often `force --wait` asks why a request that has no build yet waits.
const WAITING_POLL: Duration = Duration::from_secs(2);

/// How often it says the same reason again while it keeps waiting.
const WAITING_REPEAT: Duration = Duration::from_secs(30);

impl<'a> Waiter<'a> {
    /// Follow `request` of `builder` on the master whose pages are at `port`;
    /// `dir` (the master directory, or empty) is named in the stop-build hint.
    pub(super) fn new(port: Listen, builder: &'a str, request: i64, dir: &'a Path) -> Waiter<'a> {
        Waiter::at(&port.connect_host_text(), port.port, builder, request, dir)
    }

    /// [`Waiter::new`] for the htmlport at `host:port`.
    pub(super) fn at(
        host: &str,
        port: u16,
        builder: &'a str,
        request: i64,
        dir: &'a Path,
    ) -> Waiter<'a> {
        use indicatif::{ProgressBar, ProgressStyle};
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(builder.to_string());
        Waiter {
            host: host.to_string(),
            port,
            builder,
            builder_path: crate::links::seg(builder),
            request,
            dir,
            build: None,
            started_at: 0.0,
            forced_at: crate::calendar::now_f64(),
            expected: None,
            step: "waiting for a slave".into(),
            bar,
            waiting: None,
            waiting_said: Instant::now(),
            waiting_asked: None,
            exit_on_interrupt: true,
        }
    }

    /// Draw the bar in `multi` (several waiters at once), and end a Ctrl-C with
    /// an [`EXIT_INTERRUPTED`] error instead of exiting.
    pub(super) fn in_multi(mut self, multi: &indicatif::MultiProgress) -> Waiter<'a> {
        self.bar = multi.add(self.bar);
        self.exit_on_interrupt = false;
        self
    }

    /// Wait for the request's end; its result (`success`, `warnings`, …).
    pub(super) fn run(mut self, events: http::EventStream) -> anyhow::Result<String> {
        catch_sigint();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut events = events;
            loop {
                let item = events.next_data();
                let end = !matches!(item, Ok(Some(_)));
                if tx.send(item).is_err() || end {
                    return;
                }
            }
        });
        // Whatever happened between the force and the subscription being read.
        if let Some(result) = self.resync()? {
            return Ok(result);
        }
        loop {
            if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                self.bar.finish_and_clear();
                let what = match self.build {
                    Some(n) if self.dir.as_os_str().is_empty() => {
                        format!("build {n} of {} goes on on the master", self.builder)
                    }
                    Some(n) => format!(
                        "build {n} of {} goes on on the master; stop it with `autobot stop-build {} {} {n}`",
                        self.builder,
                        self.dir.display(),
                        self.builder
                    ),
                    None => format!(
                        "BuildRequest {} stays queued on the master and will build",
                        self.request
                    ),
                };
                if !self.exit_on_interrupt {
                    return Err(exit_error(EXIT_INTERRUPTED, what));
                }
                eprintln!("autobot: stopped waiting (Ctrl-C); {what}");
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            self.check_waiting();
            self.draw();
            let item = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(item) => item,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Ok(None),
            };
            let data = match item {
                Ok(Some(d)) => d,
                Ok(None) => {
                    self.bar.finish_and_clear();
                    return Err(exit_error(
                        EXIT_UNREACHABLE,
                        format!(
                            "the master closed its event stream (did it stop?) before BuildRequest {} completed; it runs again when the master starts",
                            self.request
                        ),
                    ));
                }
                Err(e) => {
                    self.bar.finish_and_clear();
                    return Err(exit_error(
                        EXIT_UNREACHABLE,
                        format!("lost the master while waiting: {e:#}"),
                    ));
                }
            };
            let ev: serde_json::Value = match serde_json::from_str(&data) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if let Some(result) = self.on_event(&ev)? {
                return Ok(result);
            }
        }
    }

    fn ours(&self, ev: &serde_json::Value) -> bool {
        ev["builder"] == self.builder
            && ev["number"].as_i64().is_some()
            && ev["number"].as_i64() == self.build
    }

    /// One event; the request's result once it is complete.
    fn on_event(&mut self, ev: &serde_json::Value) -> anyhow::Result<Option<String>> {
        match ev["event"].as_str().unwrap_or("") {
            "build_started" if ev["builder"] == self.builder && self.build.is_none() => {
                // Ours only if the request says so (a builder runs others' too).
                self.resync()
            }
            "step_started" if self.ours(ev) => {
                self.step = ev["name"].as_str().unwrap_or("").to_string();
                self.refresh_eta();
                Ok(None)
            }
            "step_finished" if self.ours(ev) => {
                let line = format!(
                    "  step {} {}: {}{}",
                    ev["step"],
                    ev["name"].as_str().unwrap_or("?"),
                    ev["result"].as_str().unwrap_or("?"),
                    ev["text"]
                        .as_str()
                        .filter(|t| !t.is_empty())
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default()
                );
                self.say(line);
                self.step = "between steps".into();
                self.refresh_eta();
                Ok(None)
            }
            "build_finished" if self.ours(ev) => {
                let number = self.build.take().unwrap_or(0);
                let result = ev["result"].as_str().unwrap_or("?");
                let took = (crate::calendar::now_f64() - self.started_at).max(0.0);
                let line = format!(
                    "{} build {number}: {result}{} in {took:.1} s",
                    self.builder,
                    ev["text"]
                        .as_str()
                        .filter(|t| !t.is_empty())
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default()
                );
                self.say(line);
                if ev["requeued"] == true {
                    self.say(format!(
                        "  it was interrupted; BuildRequest {} waits for its next build",
                        self.request
                    ));
                }
                self.step = "waiting for a slave".into();
                self.expected = None;
                Ok(None)
            }
            "request_complete" if ev["request_id"].as_i64() == Some(self.request) => {
                self.bar.finish_and_clear();
                Ok(Some(ev["result"].as_str().unwrap_or("unknown").to_string()))
            }
            // This client fell behind the stream: read where things are.
            "lagged" => self.resync(),
            _ => Ok(None),
        }
    }

    /// Read the request (and its newest build) from the API; its result if it is
    /// complete.
    fn resync(&mut self) -> anyhow::Result<Option<String>> {
        let req = get_json_at(
            &self.host,
            self.port,
            &format!("/api/v1/buildrequests/{}", self.request),
        )?;
        if req["complete"] == true {
            self.bar.finish_and_clear();
            let result = req["result"].as_str().unwrap_or("unknown").to_string();
            println!("BuildRequest {} completed: {result}", self.request);
            return Ok(Some(result));
        }
        let newest = req["builds"]
            .as_array()
            .and_then(|a| a.iter().filter_map(|n| n.as_i64()).max());
        if let Some(n) = newest {
            if self.build != Some(n) {
                self.build = Some(n);
                self.bar.set_prefix(format!("{} #{n}", self.builder));
                self.expected = None;
                self.refresh_eta();
            }
        }
        Ok(None)
    }

    /// While the request has no build: ask the master why it waits (every
    /// [`WAITING_POLL`]) and say so when the reason first shows, when it changes,
    /// and every [`WAITING_REPEAT`] while it stays.
    fn check_waiting(&mut self) {
        if self.build.is_some() {
            self.waiting = None;
            return;
        }
        if self
            .waiting_asked
            .is_some_and(|t| t.elapsed() < WAITING_POLL)
        {
            return;
        }
        self.waiting_asked = Some(Instant::now());
        let path = format!("/api/v1/builders/{}", self.builder_path);
        let Ok(b) = get_json_at(&self.host, self.port, &path) else {
            return;
        };
        let mine = b["pending_requests"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"].as_i64() == Some(self.request)))
            .map(|r| r["waiting"].clone());
        let Some(w) = mine
            .or_else(|| Some(b["waiting"].clone()))
            .filter(|w| w.is_object())
        else {
            return;
        };
        // A build about to start is no reason to speak of.
        if w["kind"] == "starting" {
            return;
        }
        let Some(text) = w["text"].as_str().map(str::to_string) else {
            return;
        };
        let changed = self.waiting.as_deref() != Some(text.as_str());
        if changed || self.waiting_said.elapsed() >= WAITING_REPEAT {
            let waited = (crate::calendar::now_f64() - self.forced_at).max(0.0);
            let again = if changed { "" } else { "still " };
            self.say(format!("  {again}waiting ({waited:.0} s): {text}"));
            self.waiting_said = Instant::now();
            self.step = format!("waiting: {text}");
            self.waiting = Some(text);
        }
    }

    /// The build's start and ETA from the API (after each step: the ETA is the
    /// last successful build's time for the steps not done yet).
    fn refresh_eta(&mut self) {
        let Some(n) = self.build else { return };
        let path = format!("/api/v1/builders/{}/builds/{n}", self.builder_path);
        let Ok(build) = get_json_at(&self.host, self.port, &path) else {
            return;
        };
        if let Some(t) = build["started_at"].as_f64() {
            self.started_at = t;
        }
        self.expected = build["eta"]
            .as_f64()
            .map(|eta| (crate::calendar::now_f64() - self.started_at).max(0.0) + eta);
    }

    /// The bar: time the build has had against the time it is expected to take.
    fn draw(&self) {
        let (len, pos, msg) = match self.build {
            None => (1, 0, self.step.clone()),
            Some(_) => time_bar(
                &self.step,
                (crate::calendar::now_f64() - self.started_at).max(0.0),
                self.expected,
            ),
        };
        self.bar.set_length(len);
        self.bar.set_position(pos);
        self.bar.set_message(msg);
    }

    /// Print a line above the bar (or alone, when the bar is hidden).
    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

/// Who runs this command: `$USER`, else the name `/etc/passwd` (or NSS) gives our
/// uid (under systemd or `env -i` there is no `$USER`).
fn current_user() -> Option<String> {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
}

/// The bar of a build that has had `had` seconds and is expected to take
/// `expected` in all: its length and position (milliseconds: the bar counts time,
/// not steps) and its message.
fn time_bar(step: &str, had: f64, expected: Option<f64>) -> (u64, u64, String) {
    match expected {
        Some(total) if total > 0.0 => {
            let left = (total - had).max(0.0);
            (
                (total * 1000.0) as u64,
                (had.min(total) * 1000.0) as u64,
                format!("{step}, {had:.0} s of ~{total:.0} s, ETA {left:.0} s"),
            )
        }
        _ => (
            1,
            0,
            format!("{step}, {had:.0} s (no ETA before a first successful build)"),
        ),
    }
}

/// `autobot stop-build`.
pub fn stop_build_cmd(args: &StopBuildArgs) -> anyhow::Result<()> {
    let master = MasterApi::open(&args.dir, &args.login)?;
    let path = format!(
        "/api/v1/builders/{}/builds/{}/stop",
        crate::links::seg(&args.builder),
        args.number
    );
    let who = args.who.clone().or_else(current_user).unwrap_or_default();
    let body = serde_json::json!({ "reason": args.reason, "who": who });
    let reply = master.post(&path, &body)?;
    if reply.status == 404 {
        return Err(exit_error(
            EXIT_NO_SUCH_BUILDER,
            format!(
                "cannot stop {} build {}: {}",
                args.builder,
                args.number,
                reply.error_text()
            ),
        ));
    }
    if reply.status != 200 {
        bail!(
            "cannot stop {} build {}: {}",
            args.builder,
            args.number,
            reply.error_text()
        );
    }
    println!("stopped {} build {}", args.builder, args.number);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn logins_come_from_flags_then_options_then_the_master_directory() {
        let t = tempfile::tempdir().unwrap();
        let (home, master) = (t.path().join("home"), t.path().join("master"));
        let cwd = home.join("src");
        std::fs::create_dir_all(&cwd).unwrap();
        std::fs::create_dir_all(&master).unwrap();
        let none = LoginArgs::default();
        assert_eq!(find_login(&none, &master, &cwd, Some(&home)).unwrap(), None);

        let creds = master.join(CREDENTIALS_FILE);
        write(&creds, "user = admin\npasswd = 'from file'\n", 0o600);
        let l = find_login(&none, &master, &cwd, Some(&home))
            .unwrap()
            .unwrap();
        assert_eq!((l.user.as_str(), l.passwd.as_str()), ("admin", "from file"));
        assert_eq!(l.from, creds.display().to_string());

        // An options file without a login is passed over; with one, it wins.
        let opts = home.join(".autobot/options");
        write(&opts, "master = h:1\n", 0o644);
        assert_eq!(
            find_login(&none, &master, &cwd, Some(&home))
                .unwrap()
                .unwrap()
                .user,
            "admin"
        );
        write(&opts, "user = dev\npasswd = pw\n", 0o600);
        assert_eq!(
            find_login(&none, &master, &cwd, Some(&home))
                .unwrap()
                .unwrap()
                .user,
            "dev"
        );

        let flags = LoginArgs {
            user: Some("ann".into()),
            passwd: Some("x".into()),
        };
        let l = find_login(&flags, &master, &cwd, Some(&home))
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.user.as_str(), l.from.as_str()),
            ("ann", "--user/--passwd")
        );

        // Readable by others: refused, with the fix.
        write(&opts, "user = dev\npasswd = pw\n", 0o644);
        let e = find_login(&none, &master, &cwd, Some(&home))
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::remove_file(&opts).unwrap();
        write(&creds, "user = admin\npasswd = p\n", 0o640);
        let e = find_login(&none, &master, &cwd, Some(&home))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("others can read") && e.contains("chmod 600"),
            "{e}"
        );
        // Half a login is an error that says what is missing.
        write(&creds, "user = admin\n", 0o600);
        let e = find_login(&none, &master, &cwd, Some(&home))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `passwd`"), "{e}");
        // A symlink is not followed.
        std::fs::remove_file(&creds).unwrap();
        let real = t.path().join("real");
        write(&real, "user = a\npasswd = b\n", 0o600);
        std::os::unix::fs::symlink(&real, &creds).unwrap();
        assert!(find_login(&none, &master, &cwd, Some(&home)).is_err());
    }

    #[test]
    fn the_bar_counts_time_not_steps() {
        // 30 s into a build whose last success took 120 s: a quarter done.
        let (len, pos, msg) = time_bar("compile", 30.0, Some(120.0));
        assert_eq!((len, pos), (120_000, 30_000));
        assert_eq!(msg, "compile, 30 s of ~120 s, ETA 90 s");
        // Over time: full, ETA 0, never past the end.
        let (len, pos, msg) = time_bar("test", 150.0, Some(120.0));
        assert_eq!(len, pos);
        assert!(msg.ends_with("ETA 0 s"), "{msg}");
        let (_, pos, msg) = time_bar("test", 5.0, None);
        assert_eq!(pos, 0);
        assert!(msg.contains("no ETA"), "{msg}");
    }

    #[test]
    fn a_login_is_sent_as_basic() {
        let l = Login {
            user: "alice".into(),
            passwd: "s3:cret".into(),
            from: String::new(),
        };
        assert_eq!(
            crate::slavelink::auth::parse_basic(&l.header()),
            Some(("alice".into(), "s3:cret".into()))
        );
    }
}
