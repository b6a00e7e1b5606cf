//! `autobot force` and `autobot stop-build`: the CLI side of the master's JSON API.
//!
//! Both find the master's `htmlport` in its `master.ini` and talk HTTP to it, the
//! same API the web pages use. `force --wait` follows the BuildRequest to its Build
//! and shows an indicatif progress bar over the steps (with the ETA the master
//! derives from the builder's last successful build), then exits 0 only if the
//! build succeeded.
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

/// The credentials file of a master directory: `user = NAME` and `passwd = PASS`
/// lines, readable by its owner only.
pub const CREDENTIALS_FILE: &str = ".credentials";

/// How `force` and `stop-build` log in; shown by their `--help`.
pub const LOGIN_HELP: &str = "\
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
master's htmlport may force and stop, and no login is needed.";

/// `--user` and `--passwd` of the verbs that change state on a master.
#[derive(Debug, Args, Clone, Default)]
pub struct LoginArgs {
    /// Log in as this user of the master's [users] section (see "Logging in" below).
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
    #[command(flatten)]
    pub login: LoginArgs,
}

/// A master the CLI talks to: its `htmlport` and the login to send with requests
/// that change state.
struct MasterApi {
    port: u16,
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
            port: cfg.htmlport,
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
        let reply = http::request_with("127.0.0.1", self.port, "POST", path, &headers, Some(body))?;
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

fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn get_json(port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
    let reply = http::request("127.0.0.1", port, "GET", path, None)?;
    if reply.status != 200 {
        bail!("GET {path}: HTTP {}: {}", reply.status, reply.error_text());
    }
    reply.json()
}

/// `autobot force`; returns whether the command succeeded (with --wait: the build).
pub fn force_cmd(args: &ForceArgs) -> anyhow::Result<bool> {
    let master = MasterApi::open(&args.dir, &args.login)?;
    let port = master.port;
    let who = args
        .who
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "autobot".into());
    let body = serde_json::json!({
        "reason": args.reason,
        "branch": args.branch,
        "revision": args.revision,
        "who": who,
    });
    let path = format!("/api/v1/builders/{}/force", path_segment(&args.builder));
    let reply = master.post(&path, &body)?;
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
    if !args.wait {
        return Ok(true);
    }
    wait_for_request(port, &args.builder, request)
}

/// Follow a BuildRequest through its build(s) until it is complete.
fn wait_for_request(port: u16, builder: &str, request: i64) -> anyhow::Result<bool> {
    let builder_path = path_segment(builder);
    let mut followed: Vec<i64> = Vec::new();
    loop {
        let req = get_json(port, &format!("/api/v1/buildrequests/{request}"))?;
        let builds: Vec<i64> = req["builds"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n.as_i64()).collect())
            .unwrap_or_default();
        if let Some(&number) = builds.iter().find(|n| !followed.contains(n)) {
            followed.push(number);
            let result = follow_build(port, &builder_path, builder, number)?;
            if req["complete"] == true || result != "exception" {
                // An EXCEPTION may be re-queued (master restart, slave lost): go on.
                let req = get_json(port, &format!("/api/v1/buildrequests/{request}"))?;
                if req["complete"] == true {
                    return Ok(result == "success");
                }
            }
            continue;
        }
        if req["complete"] == true {
            let result = req["result"].as_str().unwrap_or("unknown");
            println!("BuildRequest {request} completed: {result}");
            return Ok(result == "success");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Show one build's progress until it finishes; its result.
fn follow_build(
    port: u16,
    builder_path: &str,
    builder: &str,
    number: i64,
) -> anyhow::Result<String> {
    use indicatif::{ProgressBar, ProgressStyle};
    let path = format!("/api/v1/builders/{builder_path}/builds/{number}");
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{builder} #{number}"));
    let mut printed = 0usize;
    let started = Instant::now();
    loop {
        let build = get_json(port, &path)?;
        let steps = build["steps"].as_array().cloned().unwrap_or_default();
        let total = build["total_steps"]
            .as_u64()
            .unwrap_or(steps.len() as u64)
            .max(1);
        bar.set_length(total);
        let done: Vec<&serde_json::Value> =
            steps.iter().filter(|s| !s["result"].is_null()).collect();
        for s in done.iter().skip(printed) {
            let line = format!(
                "  step {} {}: {}{}",
                s["number"],
                s["name"].as_str().unwrap_or("?"),
                s["result"].as_str().unwrap_or("?"),
                s["text"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            );
            // A hidden bar (output not a terminal) prints nothing of its own.
            if bar.is_hidden() {
                println!("{line}");
            } else {
                bar.println(line);
            }
        }
        printed = done.len();
        bar.set_position(done.len() as u64);
        let running = steps
            .iter()
            .find(|s| s["result"].is_null() && !s["started_at"].is_null());
        let eta = build["eta"]
            .as_f64()
            .map(|e| format!(", ETA {e:.0} s"))
            .unwrap_or_default();
        bar.set_message(match running {
            Some(s) => format!("{}{eta}", s["name"].as_str().unwrap_or("")),
            None => format!("waiting{eta}"),
        });
        if let Some(result) = build["result"].as_str() {
            bar.finish_and_clear();
            println!(
                "{builder} build {number}: {result}{} in {:.1} s",
                build["text"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default(),
                started.elapsed().as_secs_f64()
            );
            return Ok(result.to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `autobot stop-build`.
pub fn stop_build_cmd(args: &StopBuildArgs) -> anyhow::Result<()> {
    let master = MasterApi::open(&args.dir, &args.login)?;
    let path = format!(
        "/api/v1/builders/{}/builds/{}/stop",
        path_segment(&args.builder),
        args.number
    );
    let who = std::env::var("USER").unwrap_or_default();
    let body = serde_json::json!({ "reason": args.reason, "who": who });
    let reply = master.post(&path, &body)?;
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
