//! The slave's native source checkout commands, `git`, `hg`, `svn`, `bzr`, `darcs`,
//! `cvs` and `arch` (Buildbot 0.7's slave had them): one command instead of the master's sequence of `stat`, `rmdir`,
//! `mkdir`, `cpdir` and `shell` operations.
//!
//! The master sends the checkout's *settings* — `repourl`, `branch`, `revision`,
//! `mode`, `alwaysUseLatest`, `retry` (`[DELAY, REPEATS]`), `mirror`, the builder's
//! directory `builddir` and the step's `workdir` (relative to `builddir` or absolute),
//! the step's `env`, `timeout` and `maxTime` — and the slave builds the very same
//! [`CheckoutPlan`] with [`Checkout::plan`] and walks it with [`CheckoutRun`], each
//! operation done in-process: `stat` is a metadata look-up, `rmdir`/`mkdir`/`cpdir`
//! the file system (the copy in Rust, as the `cpdir` command does it), `shell` a
//! child process in its own process group (argv only, output streamed as
//! `stdout`/`stderr`/`header` updates, killed on interrupt). Every path is resolved
//! inside the slave's basedir, as for the other commands, and every file operation
//! and working directory is opened beneath the basedir at the moment of use (see
//! [`crate::slave::tree`]); the mirrors directory is `BASEDIR/mirrors`. The revision checked out is sent as a
//! `got_revision` update, then `rc` (0 when the checkout succeeded). Credentials
//! in `repourl` reach git and hg only through the environment the plan gives
//! ([`CheckoutPlan::env`]), never an argv or the log; a CVS pserver password
//! through a passfile of the slave user's only, in the temporary directory while
//! the checkout runs (`CVS_PASSFILE`); tla runs with `HOME` in the builder's
//! directory ([`CheckoutPlan::home`]).

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::OFlag;

use rmpv::Value;
use tokio::io::AsyncReadExt;

use super::fs::CopyEnd;
use super::process::{self, shell_quote, Finish, ProcessSpec};
use super::{strerror, Interrupt, SlaveEnv};
use crate::protocol::value_str;
use crate::slave::args::Args;
use crate::slave::link::LinkClosed;
use crate::slave::paths::{JPath, Jail};
use crate::slave::tree;
use crate::slave::updates::{Stream, Updates};
use crate::sources::checkout::{Checkout, CheckoutOp, CheckoutPlan, CheckoutRun, Next};
use crate::sources::{Mode, Retry, Source, SourceKind};

/// A checked `git`/`hg` command, ready to run.
#[derive(Debug)]
pub struct VcSpec {
    plan: CheckoutPlan,
    /// The builder's directory, resolved inside the basedir: relative plan paths are
    /// under it.
    builddir: JPath,
    environ: Vec<(OsString, OsString)>,
    timeout: Option<f64>,
    max_time: Option<f64>,
    /// A try build's patch (Buildbot's `patch` argument `[LEVEL, DIFF]`), written
    /// by the plan's [`CheckoutOp::WritePatch`] and applied after the checkout.
    patch: Vec<u8>,
}

/// Buildbot's `patch` argument of the source commands: `[LEVEL, DIFF]` or
/// `[LEVEL, DIFF, ROOT]` (a ROOT other than empty or `.` is refused: the patch is
/// applied in the workdir). `None`: no patch, or an empty one.
fn patch_arg(v: Option<&Value>) -> Result<Option<(u32, Vec<u8>)>, String> {
    let bad = || "argument \"patch\" must be [LEVEL, DIFF] (Buildbot's patch tuple)".to_string();
    let items = match v {
        None | Some(Value::Nil) => return Ok(None),
        Some(Value::Array(items)) if (2..=3).contains(&items.len()) => items,
        Some(_) => return Err(bad()),
    };
    let level = items[0]
        .as_u64()
        .and_then(|l| u32::try_from(l).ok())
        .ok_or_else(bad)?;
    let diff = match &items[1] {
        Value::Binary(b) => b.clone(),
        Value::String(s) => s.as_bytes().to_vec(),
        _ => return Err(bad()),
    };
    if let Some(root) = items.get(2).and_then(value_str) {
        if !root.is_empty() && root != "." {
            return Err(format!(
                "argument \"patch\": a patch root ({root:?}) is not supported; the patch applies in the workdir"
            ));
        }
    }
    Ok((!diff.is_empty()).then_some((level, diff)))
}

/// Read a `git`/`hg` command's arguments and plan its checkout; the error is the
/// exception's text.
pub fn prepare(name: &str, a: &Args<'_>, env: &SlaveEnv) -> Result<VcSpec, String> {
    let kind = match name {
        "git" => SourceKind::Git,
        "hg" => SourceKind::Hg,
        "svn" => SourceKind::Svn,
        "bzr" => SourceKind::Bzr,
        "darcs" => SourceKind::Darcs,
        "cvs" => SourceKind::Cvs,
        "arch" => SourceKind::Arch,
        other => return Err(format!("unrecognized WorkerCommand '{other}'")),
    };
    let err = |e: String| format!("{name}: {e}");
    let source = Source {
        kind,
        url: a.str("repourl").map_err(err)?.to_string(),
        // svn: the master sends the branch's path below the URL, already resolved
        // through `svnBranchPrefix`.
        branch: match kind {
            SourceKind::Svn | SourceKind::Bzr | SourceKind::Darcs | SourceKind::Cvs => {
                a.opt_str("branch").map_err(err)?.unwrap_or("").to_string()
            }
            SourceKind::Git | SourceKind::Hg | SourceKind::Arch => {
                a.str("branch").map_err(err)?.to_string()
            }
        },
        branch_prefix: None,
    };
    let mode = match a.opt_str("mode").map_err(err)?.unwrap_or("update") {
        "update" => Mode::Update,
        "copy" => Mode::Copy,
        "clobber" => Mode::Clobber,
        "export" => Mode::Export,
        other => return Err(format!("{name}: unknown mode {other:?}")),
    };
    let retry = match a.get("retry") {
        None => None,
        Some(Value::Array(v)) if v.len() == 2 => {
            match (
                v[0].as_u64(),
                v[1].as_u64().and_then(|r| u32::try_from(r).ok()),
            ) {
                (Some(delay), Some(repeats)) => Some(Retry { delay, repeats }),
                _ => {
                    return Err(format!(
                        "{name}: argument \"retry\" must be [DELAY, REPEATS]"
                    ))
                }
            }
        }
        Some(_) => {
            return Err(format!(
                "{name}: argument \"retry\" must be [DELAY, REPEATS]"
            ))
        }
    };
    let jail = &env.jail;
    let builddir = jail
        .resolve(a.str("builddir").map_err(err)?, true)
        .map_err(|e| format!("{name}: {e}"))?;
    let workdir = a.str("workdir").map_err(err)?;
    let mirrors = jail.root().join("mirrors").display().to_string();
    let patch = patch_arg(a.get("patch")).map_err(err)?;
    let checkout = Checkout {
        source: &source,
        mode,
        always_use_latest: a.bool("alwaysUseLatest", false),
        retry,
        mirror: a.bool("mirror", true),
        mirrors: &mirrors,
        workdir,
        branch: None,
        revision: a.opt_str("revision").map_err(err)?,
        patch_level: patch.as_ref().map(|(level, _)| *level),
        // A pull request's head ref (`pullRef`); the plan refuses anything but
        // refs/pull/N/head and refs/merge-requests/N/head.
        pull_ref: a.opt_str("pullRef").map_err(err)?,
    };
    let plan = checkout.plan().map_err(|e| format!("{name}: {e}"))?;
    // The repository URL's credentials go to git/hg in the environment only;
    // the argv the header shows names the URL without them.
    let mut environ = environment(a.get("env")).map_err(err)?;
    for (k, v) in &plan.env.0 {
        environ.retain(|(name, _)| name != k.as_str());
        environ.push((k.into(), v.into()));
    }
    // tla's HOME: a directory of the builder's, absolute for the environment.
    if let Some(home) = &plan.home {
        let dir = jail
            .resolve_in(&builddir, home, true)
            .map_err(|e| format!("{name}: {e}"))?;
        environ.retain(|(k, _)| k != "HOME");
        environ.push(("HOME".into(), jail.root().join(dir.rel()).into_os_string()));
    }
    let spec = VcSpec {
        plan,
        builddir,
        environ,
        timeout: a.num("timeout").map_err(err)?,
        max_time: a.num("maxTime").map_err(err)?,
        patch: patch.map(|(_, diff)| diff).unwrap_or_default(),
    };
    // Every path the plan touches must be inside the basedir before anything runs.
    spec.resolve(jail, &spec.plan.srcdir)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(spec)
}

/// The slave's environment with the master's `env` (strings; nil removes a variable).
fn environment(v: Option<&Value>) -> Result<Vec<(OsString, OsString)>, String> {
    let mut environ: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let Some(v) = v else {
        return Ok(environ);
    };
    let Value::Map(entries) = v else {
        return Err("argument \"env\" must be a map".into());
    };
    for (k, val) in entries {
        let k = value_str(k).ok_or("argument \"env\": keys must be strings")?;
        environ.retain(|(name, _)| name != k);
        if !val.is_nil() {
            let val = value_str(val).ok_or("argument \"env\": values must be strings")?;
            environ.push((k.into(), val.into()));
        }
    }
    Ok(environ)
}

impl VcSpec {
    /// A plan path (relative to the builder's directory, or absolute) inside the basedir.
    fn resolve(&self, jail: &Jail, path: &str) -> Result<JPath, crate::slave::paths::PathError> {
        if path.starts_with('/') {
            jail.resolve(path, true)
        } else if path.is_empty() {
            Ok(self.builddir.clone())
        } else {
            jail.resolve_in(&self.builddir, path, true)
        }
    }
}

type Done = Result<Option<String>, LinkClosed>;

/// The reason, once the command has been interrupted.
fn interrupt_reason(interrupt: &Interrupt) -> Option<String> {
    interrupt.borrow().clone()
}

/// Run the checkout to its `rc`.
pub async fn run(
    spec: VcSpec,
    env: &SlaveEnv,
    up: &mut Updates,
    interrupt: &mut Interrupt,
) -> Done {
    let mut updateable = false;
    if let Some(probe) = &spec.plan.probe {
        updateable = spec
            .resolve(&env.jail, probe)
            .is_ok_and(|p| tree::stat(&env.jail, &p).is_ok());
    }
    // A try build left its patch applied: start afresh.
    if let Some(marker) = &spec.plan.patched_marker {
        if updateable
            && spec
                .resolve(&env.jail, marker)
                .is_ok_and(|p| tree::lexists(&env.jail, &p))
        {
            up.header("the tree holds a try build's patch: checking out afresh\n")
                .await?;
            updateable = false;
        }
    }
    // A pserver password: in a private file named by CVS_PASSFILE while the
    // checkout runs, removed when it ends.
    let mut spec = spec;
    let _passfile = match &spec.plan.cvs_passfile {
        Some(content) => match PassFile::write(&content.0) {
            Ok(f) => {
                spec.environ.retain(|(k, _)| k != "CVS_PASSFILE");
                spec.environ
                    .push(("CVS_PASSFILE".into(), f.path.clone().into_os_string()));
                Some(f)
            }
            Err(e) => {
                up.header(&format!(
                    "cannot write the CVS password file: {}\n",
                    strerror(&e)
                ))
                .await?;
                up.send("rc", Value::from(1)).await?;
                return Ok(None);
            }
        },
        None => None,
    };
    let mut run = CheckoutRun::new(spec.plan.clone(), updateable);
    let mut next = run.start();
    let mut got: Option<String> = None;
    loop {
        let (op, delay_secs, header) = match next {
            Next::Done { ok } => {
                if let (true, Some(rev)) = (ok, &got) {
                    up.send("got_revision", Value::from(rev.as_str())).await?;
                }
                up.send("rc", Value::from(if ok { 0 } else { 1 })).await?;
                return Ok(None);
            }
            Next::Run {
                op,
                delay_secs,
                header,
            } => (op, delay_secs, header),
        };
        if let Some(h) = header {
            up.header(&format!("{h}\n")).await?;
        }
        if delay_secs > 0 {
            let mut rx = interrupt.clone();
            let sleep = tokio::time::sleep(Duration::from_secs(delay_secs));
            tokio::select! {
                _ = sleep => {}
                _ = rx.wait_for(|s| s.is_some()) => {}
            }
        }
        if let Some(why) = interrupt_reason(interrupt) {
            return interrupted(up, &why).await;
        }
        let ok = run_op(&spec, &op, env, up, interrupt, &mut got).await?;
        if let Some(why) = interrupt_reason(interrupt) {
            return interrupted(up, &why).await;
        }
        next = run.done(ok);
    }
}

async fn interrupted(up: &mut Updates, why: &str) -> Done {
    up.header(&format!("checkout interrupted: {why}\n")).await?;
    up.send("rc", Value::from(-1)).await?;
    Ok(None)
}

/// One operation of the plan; whether it succeeded.
async fn run_op(
    spec: &VcSpec,
    op: &CheckoutOp,
    env: &SlaveEnv,
    up: &mut Updates,
    interrupt: &mut Interrupt,
    got: &mut Option<String>,
) -> Result<bool, LinkClosed> {
    let jail = &env.jail;
    macro_rules! path {
        ($p:expr) => {
            match spec.resolve(jail, $p) {
                Ok(p) => p,
                Err(e) => {
                    up.header(&format!("{e}\n")).await?;
                    return Ok(false);
                }
            }
        };
    }
    match op {
        CheckoutOp::RmDir { dir } => {
            up.header(&format!("rmdir {dir}\n")).await?;
            let p = path!(dir);
            if p.is_root() {
                up.header(&format!(
                    "{}\n",
                    crate::slave::paths::PathError::IsRoot { path: dir.clone() }
                ))
                .await?;
                return Ok(false);
            }
            let (j, target) = (jail.clone(), p.clone());
            let r = tokio::task::spawn_blocking(move || tree::remove_tree(&j, &target))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            if let Err(e) = r {
                up.header(&format!(
                    "rmdir: {}: {}\n",
                    strerror(&e),
                    p.shown().display()
                ))
                .await?;
                return Ok(false);
            }
            Ok(true)
        }
        CheckoutOp::MkDir { dir } => {
            up.header(&format!("mkdir {dir}\n")).await?;
            let p = path!(dir);
            if let Err(e) = tree::mkdir_all(jail, &p, 0o777 & !env.umask) {
                up.header(&format!(
                    "mkdir: {}: {}\n",
                    strerror(&e),
                    p.shown().display()
                ))
                .await?;
                return Ok(false);
            }
            Ok(true)
        }
        CheckoutOp::CpDir { from, to } => {
            up.header(&format!("cpdir {from} {to}\n")).await?;
            let (from, to) = (path!(from), path!(to));
            if let Some(parent) = to.parent() {
                if let Err(e) = tree::mkdir_all(jail, &parent, 0o777 & !env.umask) {
                    up.header(&format!(
                        "cpdir: {}: {}\n",
                        strerror(&e),
                        parent.shown().display()
                    ))
                    .await?;
                    return Ok(false);
                }
            }
            let display = format!("cpdir {} {}", from.shown().display(), to.shown().display());
            let end = super::fs::copy(
                env,
                from,
                to,
                false,
                spec.timeout,
                spec.max_time,
                &display,
                up,
                interrupt,
            )
            .await?;
            match end {
                CopyEnd::Done(Ok(())) => Ok(true),
                CopyEnd::Done(Err(e)) => {
                    up.output(Stream::Stderr, &format!("cp: {e}\n")).await?;
                    Ok(false)
                }
                CopyEnd::Stopped => Ok(false),
                CopyEnd::Stuck(why) => {
                    up.header(&format!("{why}\n")).await?;
                    Ok(false)
                }
            }
        }
        CheckoutOp::Shell { argv, workdir } => {
            let mut p = ProcessSpec::new(argv.clone(), path!(workdir), env.umask);
            p.environ = spec.environ.clone();
            p.send_rc = false;
            p.log_environ = false;
            p.timeout = spec.timeout;
            p.max_time = spec.max_time;
            finished(process::run(p, env, up, interrupt).await?, up).await
        }
        CheckoutOp::WritePatch { path } => {
            up.header(&format!(
                "writing the patch ({} bytes) to {path}\n",
                spec.patch.len()
            ))
            .await?;
            let p = path!(path);
            if let Err(e) = write_file(jail, &p, &spec.patch, 0o666 & !env.umask) {
                up.header(&format!("{path}: {}\n", strerror(&e))).await?;
                return Ok(false);
            }
            Ok(true)
        }
        CheckoutOp::GotRevision { argv, workdir } => {
            let dir = path!(workdir);
            up.header(&format!(
                "{}\n in dir {}\n",
                shell_quote(argv),
                dir.shown().display()
            ))
            .await?;
            match capture(argv, &dir, env, &spec.environ, interrupt).await {
                Ok((0, out, err)) => {
                    up.output(Stream::Stdout, &out).await?;
                    up.output(Stream::Stderr, &err).await?;
                    let rev = out.trim().to_string();
                    let ok = !rev.is_empty();
                    *got = Some(rev);
                    Ok(ok)
                }
                Ok((rc, out, err)) => {
                    up.output(Stream::Stdout, &out).await?;
                    up.output(Stream::Stderr, &err).await?;
                    up.header(&format!("exit status {rc}\n")).await?;
                    Ok(false)
                }
                Err(e) => {
                    up.header(&format!("{e}\n")).await?;
                    Ok(false)
                }
            }
        }
    }
}

/// A CVS passfile: readable by the slave's user only, in the temporary
/// directory, removed when dropped.
struct PassFile {
    path: std::path::PathBuf,
}

impl PassFile {
    fn write(content: &[u8]) -> std::io::Result<PassFile> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "autobot-cvspass-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let file = PassFile { path };
        f.write_all(content)?;
        f.flush()?;
        Ok(file)
    }
}

impl Drop for PassFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Write `data` to the file `p` beneath the basedir (replaced if it exists; a link
/// in its place is not followed).
fn write_file(jail: &Jail, p: &JPath, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let _ = tree::remove_file(jail, p);
    let fd = jail.open(
        p,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
        mode,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    file.flush()
}

/// Whether a child process succeeded (its failure written to the log).
async fn finished(end: Finish, up: &mut Updates) -> Result<bool, LinkClosed> {
    match end {
        Finish::Rc(rc) => {
            if rc != 0 {
                up.header(&format!("exit status {rc}\n")).await?;
            }
            Ok(rc == 0)
        }
        Finish::Failed(why) => {
            up.header(&format!("{why}\n")).await?;
            Ok(false)
        }
    }
}

/// Run a short command (the revision query) in `dir` (opened beneath the basedir)
/// and keep its output: (rc, stdout, stderr). An interrupt kills it.
async fn capture(
    argv: &[String],
    dir: &JPath,
    env: &SlaveEnv,
    environ: &[(OsString, OsString)],
    interrupt: &mut Interrupt,
) -> Result<(i32, String, String), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let cwd = env
        .jail
        .open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
        .map_err(|e| format!("cannot use {}: {}", dir.shown().display(), strerror(&e)))?;
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .current_dir(Jail::cwd_of(&cwd))
        .env_clear()
        .envs(environ.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .spawn();
    drop(cwd);
    let mut child = spawned.map_err(|e| format!("cannot run {program}: {}", strerror(&e)))?;
    let _group = child.id().map(|pid| env.groups.started(pid as i32));
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(format!("{program}: no output pipes"));
    };
    let mut rx = interrupt.clone();
    let work = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        a.and(b).map_err(|e| e.to_string())?;
        let status = child.wait().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status.code().unwrap_or(-1), out, err))
    };
    tokio::select! {
        r = work => {
            let (rc, out, err) = r?;
            Ok((rc, String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned()))
        }
        _ = rx.wait_for(|s| s.is_some()) => Err("interrupted".into()),
    }
}
