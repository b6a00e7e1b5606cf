//! The commands a master can start on the slave (`start_command`).
//!
//! Starting is two steps. [`prepare`] reads the arguments and resolves every path
//! inside the basedir; anything wrong (unknown command, missing argument, a path that
//! escapes) is answered with an exception to `start_command` and nothing runs. Then
//! [`execute`] runs the command in its own task, sending `update`s and finally one
//! `complete`; every file it touches is opened again beneath the basedir at that
//! moment (see [`crate::slave::paths`]), so what changed in between cannot lead out. Names, arguments, updates and version strings follow
//! `buildbot_worker/commands/` (4.3), including the camelCase aliases the worker
//! registers (`uploadFile`, …), so either spelling works.

mod fs;
mod process;
mod shell;
mod transfer;
mod vc;

use std::path::PathBuf;
use std::time::Instant;

use rmpv::Value;
use tokio::sync::watch;

use super::args::Args;
use super::link::LinkClosed;
use super::paths::{JPath, Jail};
use super::updates::Updates;
use super::watchdog::Groups;

/// Every command this slave runs, with the version it reports in `worker_commands`
/// (buildbot-worker 4.3 reports `command_version` 3.3 for all of them). `git` and
/// `hg` are autobot's own (a whole source checkout, see `vc.rs`); a master that
/// sees them checks out with one command instead of a sequence of operations.
pub const COMMANDS: &[(&str, &str)] = &[
    ("shell", "3.3"),
    ("uploadFile", "3.3"),
    ("upload_file", "3.3"),
    ("uploadDirectory", "3.3"),
    ("upload_directory", "3.3"),
    ("downloadFile", "3.3"),
    ("download_file", "3.3"),
    ("mkdir", "3.3"),
    ("rmdir", "3.3"),
    ("cpdir", "3.3"),
    ("stat", "3.3"),
    ("glob", "3.3"),
    ("listdir", "3.3"),
    ("rmfile", "3.3"),
    ("git", "1.0"),
    ("hg", "1.0"),
    ("svn", "1.0"),
    ("bzr", "1.0"),
    ("darcs", "1.0"),
    ("cvs", "1.0"),
    ("arch", "1.0"),
];

/// What a command needs from the slave it runs on.
#[derive(Debug, Clone)]
pub struct SlaveEnv {
    pub jail: Jail,
    /// Applied to every process the slave starts and every file it creates.
    pub umask: u32,
    /// Whether a shell command uses a pseudo-terminal when the master does not say.
    pub usepty: bool,
    /// Where the process groups of running commands are reported, so that they die
    /// with the slave (see [`crate::slave::watchdog`]).
    pub groups: Groups,
}

/// Set to `Some(reason)` to interrupt a running command.
pub type Interrupt = watch::Receiver<Option<String>>;

/// A command whose arguments were checked, ready to run.
#[derive(Debug)]
pub enum Prepared {
    Shell(Box<process::ProcessSpec>),
    Mkdir(Vec<JPath>),
    Rmdir(Vec<JPath>),
    Cpdir {
        from: JPath,
        to: JPath,
        timeout: Option<f64>,
        max_time: Option<f64>,
    },
    Stat(JPath),
    Glob {
        pattern: JPath,
        /// The pattern was relative: report matches relative to the basedir.
        relative: bool,
    },
    Listdir(JPath),
    Rmfile(JPath),
    UploadFile(transfer::Upload),
    UploadDirectory(transfer::Upload, Option<String>),
    DownloadFile(transfer::Download),
    /// A native `git`/`hg` source checkout.
    Vc(Box<vc::VcSpec>),
}

/// Check a `start_command` and resolve its paths; the error is the text of the
/// exception answered to the master. The paths are checked again, beneath the
/// basedir's descriptor, when the command uses them.
pub fn prepare(name: &str, args: &Value, env: &SlaveEnv) -> Result<Prepared, String> {
    let a = Args(args);
    let jail = &env.jail;
    let path_err = |e: super::paths::PathError| format!("{name}: {e}");
    // `path`, or the older `workdir` + `<alt>` pair.
    let path_arg = |alt: &str, follow: bool| -> Result<JPath, String> {
        if let Some(p) = a.opt_str("path")? {
            return jail.resolve(p, follow).map_err(path_err);
        }
        let rel = a
            .str(alt)
            .map_err(|_| format!("{name}: missing argument \"path\""))?;
        let base = match a.opt_str("workdir")? {
            Some(w) => jail.resolve(w, true).map_err(path_err)?,
            None => jail.top(),
        };
        jail.resolve_in(&base, rel, follow).map_err(path_err)
    };
    let list_arg = |primary: &str, alt: &str| -> Result<Vec<String>, String> {
        a.str_list(primary)?
            .or(a.str_list(alt)?)
            .ok_or_else(|| format!("{name}: missing argument {primary:?}"))
    };
    match name {
        "shell" => Ok(Prepared::Shell(Box::new(shell::prepare(&a, env)?))),
        "mkdir" => {
            let paths = list_arg("paths", "dir")?
                .iter()
                .map(|p| jail.resolve(p, true).map_err(path_err))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Prepared::Mkdir(paths))
        }
        "rmdir" => {
            let paths = list_arg("paths", "dir")?
                .iter()
                .map(|p| jail.resolve_below(p, false).map_err(path_err))
                .collect::<Result<Vec<_>, _>>()?;
            if paths.is_empty() {
                return Err(format!("{name}: no paths given"));
            }
            Ok(Prepared::Rmdir(paths))
        }
        "cpdir" => {
            let from = a.opt_str("from_path")?.or(a.opt_str("fromdir")?);
            let to = a.opt_str("to_path")?.or(a.opt_str("todir")?);
            let (Some(from), Some(to)) = (from, to) else {
                return Err(format!(
                    "{name}: missing argument \"from_path\" or \"to_path\""
                ));
            };
            Ok(Prepared::Cpdir {
                from: jail.resolve(from, true).map_err(path_err)?,
                to: jail.resolve_below(to, true).map_err(path_err)?,
                timeout: Some(a.num("timeout")?.unwrap_or(120.0)),
                max_time: a.num("maxTime")?,
            })
        }
        "stat" => Ok(Prepared::Stat(path_arg("file", true)?)),
        "glob" => {
            let p = a.str("path")?;
            let relative = !p.starts_with('/');
            let pattern = jail.lexical_in(&jail.top(), p).map_err(path_err)?;
            jail.probe(&jail.at(&literal_prefix(pattern.rel())), p, true)
                .map_err(path_err)?;
            Ok(Prepared::Glob { pattern, relative })
        }
        "listdir" => {
            let p = a.opt_str("path")?.or(a.opt_str("dir")?);
            let p = p.ok_or_else(|| format!("{name}: missing argument \"path\""))?;
            Ok(Prepared::Listdir(jail.resolve(p, true).map_err(path_err)?))
        }
        "rmfile" => {
            let p = a.str("path")?;
            Ok(Prepared::Rmfile(
                jail.resolve_below(p, false).map_err(path_err)?,
            ))
        }
        "upload_file" | "uploadFile" => Ok(Prepared::UploadFile(transfer::Upload::new(
            path_arg("workersrc", true)?,
            &a,
        )?)),
        "upload_directory" | "uploadDirectory" => {
            let compress = a.opt_str("compress")?.map(str::to_string);
            if let Some(c) = &compress {
                if c != "gz" && c != "bz2" {
                    return Err(format!("{name}: unknown compress {c:?}"));
                }
            }
            Ok(Prepared::UploadDirectory(
                transfer::Upload::new(path_arg("workersrc", true)?, &a)?,
                compress,
            ))
        }
        "download_file" | "downloadFile" => Ok(Prepared::DownloadFile(transfer::Download::new(
            path_arg("workerdest", true)?,
            &a,
        )?)),
        "git" | "hg" | "svn" | "bzr" | "darcs" | "cvs" | "arch" => {
            Ok(Prepared::Vc(Box::new(vc::prepare(name, &a, env)?)))
        }
        _ => Err(format!("unrecognized WorkerCommand '{name}'")),
    }
}

/// The part of a glob pattern before its first wildcard component.
fn literal_prefix(pattern: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in pattern.components() {
        let s = c.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[']) {
            break;
        }
        out.push(c);
    }
    out
}

/// Run a prepared command to its `complete`.
pub async fn execute(cmd: Prepared, mut up: Updates, interrupt: Interrupt, env: SlaveEnv) {
    let start = Instant::now();
    let result = run(cmd, &mut up, interrupt, &env).await;
    let failure = match result {
        Ok(f) => f,
        Err(LinkClosed) => return,
    };
    let elapsed = start.elapsed().as_secs_f64();
    if up.send("elapsed", Value::F64(elapsed)).await.is_err() {
        return;
    }
    let _ = up.complete(failure).await;
}

/// Run a command; `Ok(failure)` where `failure` is `None` for a normal end.
async fn run(
    cmd: Prepared,
    up: &mut Updates,
    mut interrupt: Interrupt,
    env: &SlaveEnv,
) -> Result<Option<String>, LinkClosed> {
    match cmd {
        Prepared::Shell(spec) => match process::run(*spec, env, up, &mut interrupt).await? {
            process::Finish::Rc(_) => Ok(None),
            process::Finish::Failed(why) => Ok(Some(why)),
        },
        Prepared::Mkdir(paths) => fs::mkdir(paths, env, up).await,
        Prepared::Rmdir(paths) => fs::rmdir(paths, env, up).await,
        Prepared::Cpdir {
            from,
            to,
            timeout,
            max_time,
        } => fs::cpdir(from, to, timeout, max_time, env, up, &mut interrupt).await,
        Prepared::Stat(p) => fs::stat(p, env, up).await,
        Prepared::Glob { pattern, relative } => fs::glob(pattern, relative, env, up).await,
        Prepared::Listdir(p) => fs::listdir(p, env, up).await,
        Prepared::Rmfile(p) => fs::rmfile(p, env, up).await,
        Prepared::UploadFile(u) => transfer::upload_file(u, env, up, &interrupt).await,
        Prepared::UploadDirectory(u, compress) => {
            transfer::upload_directory(u, compress, env, up, &interrupt).await
        }
        Prepared::DownloadFile(d) => transfer::download_file(d, env, up, &interrupt).await,
        Prepared::Vc(spec) => vc::run(*spec, env, up, &mut interrupt).await,
    }
}

/// The text of an OS error as Python's `strerror` gives it; `EXDEV`, which the
/// slave's confined opens answer when a path leads out of the basedir, says so.
pub(crate) fn strerror(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(nix::libc::EXDEV) => {
            "leads outside the slave's basedir (through a symbolic link or an absolute \
             link target); refused"
                .to_string()
        }
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

/// The `rc` the worker reports for an OS error (its errno).
pub(crate) fn errno(e: &std::io::Error) -> i64 {
    e.raw_os_error().map(i64::from).unwrap_or(1)
}
