//! `autobot try`: "what would happen if I committed this patch right now?", as
//! Buildbot's `buildbot try`.
//!
//! From inside a working tree it finds the base revision the tree was last
//! updated to and the patch from it to the working copy — git: the merge-base of
//! `HEAD` with its upstream (`@{u}`, or `origin/BRANCH` for `--branch`) and
//! `git diff --binary BASE`; hg: the working directory's parent and
//! `hg diff --git`; svn: the working copy's revision (`svn info`) and `svn diff`
//! (applied with `-p0`); bzr: the tree's revno (`brz revno --tree`) and
//! `brz diff`; darcs: the hash of the newest recorded patch (the repository's
//! context, as `darcs log --last=1` names it) and `darcs diff -u`; cvs: now, as a
//! CVS date (as Buildbot's try: CVS has no tree revision), and `cvs diff -u -N`
//! (`-p0`); arch: `tla tree-revision` and a `diff -ruN` against that revision
//! exported — or takes a ready patch (`--diff FILE|-`, with `--baserev`),
//! and sends the (revision, patch) pair to the master's slaveport (WebSocket
//! `/try`, HTTP Basic with a `users` pair of the master's `[try]`). The master
//! builds it on the chosen builders with the patch applied. `--wait` follows every
//! build as `force --wait` does (through the master's htmlport, which the master's
//! answer names) and exits 0 only if all succeeded; `--dryrun` prints what would
//! be sent. Every option may come from `.autobot/options` in this directory or a
//! parent (`try_master`, `try_username`, `try_password`, `try_builders`,
//! `try_vc`, `try_branch`, `try_wait`, `try_comment`); a file holding
//! `try_password` must be readable by its owner alone.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use clap::Args;

use super::client::Waiter;
use super::sendchange::{
    exchange, find_options, parse_options, private_options, split_host_port, OPTIONS_DIR,
};
use super::{exit_error, http, EXIT_INTERRUPTED, EXIT_UNREACHABLE};
use crate::engine::tryjob::{TryAccepted, TryJob, TryReply, TRY_PATH};

/// `try --help`'s closing text.
pub const TRY_HELP: &str = "\
The working tree's version control is found from the current directory (or --vc):
  git    base: merge-base of HEAD and its upstream; patch: git diff --binary (-p1)
  hg     base: the working directory's parent;      patch: hg diff --git (-p1)
  svn    base: svn info's revision;                 patch: svn diff (-p0)
  bzr    base: brz revno --tree;                    patch: brz diff (-p1)
  darcs  base: the newest recorded patch's hash;    patch: darcs diff -u (-p1)
  cvs    base: now, as a CVS date (update first!);  patch: cvs diff -u -N (-p0)
  arch   base: tla tree-revision;                   patch: diff -ruN of the tree
                                                    against that revision exported (-p1)
The slave checks out the base revision and applies the patch (git apply, hg import,
else patch(1)); a patch that does not apply fails the checkout step.

Every option may instead come from .autobot/options in the current directory or a
parent (then your home directory): try_master, try_username, try_password,
try_builders (space-separated), try_vc, try_branch, try_wait (true/false),
try_comment. A file holding try_password must be readable by you alone (chmod 600).

Exit statuses: 0 sent (with --wait: every build succeeded); 1 an error, or with
--wait a build that did not succeed; 3 the master could not be reached; 130 Ctrl-C
while waiting (the builds go on on the master).";

#[derive(Debug, Args)]
pub struct TryArgs {
    /// The master's slaveport, HOST:PORT [default: `try_master` in .autobot/options].
    #[arg(short = 'm', long)]
    pub master: Option<String>,
    /// A user of the master's [try] section [default: `try_username`].
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// That user's password [default: `try_password` in a private .autobot/options].
    #[arg(long)]
    pub passwd: Option<String>,
    /// A builder to build on (repeat for more) [default: `try_builders`, else
    /// every builder the master's [try] opens].
    #[arg(short = 'b', long = "builder", value_name = "BUILDER")]
    pub builders: Vec<String>,
    /// The version-control system of the working tree [default: `try_vc`, else
    /// found from the current directory: git, hg, svn (`svn info`), bzr (`brz root`),
    /// darcs (`darcs show repo`), cvs (a `CVS/Root` file), arch (`tla tree-root`)].
    #[arg(long, value_parser = ["git", "hg", "svn", "bzr", "darcs", "cvs", "arch"])]
    pub vc: Option<String>,
    /// The branch the base revision is on [default: `try_branch`, else git: the
    /// upstream's branch, hg: the working directory's branch, svn, bzr and darcs:
    /// the factory's].
    #[arg(long)]
    pub branch: Option<String>,
    /// The base revision the patch applies to [default: found from the tree: git
    /// merge-base, hg parent, svn revision, bzr revno, darcs patch hash].
    #[arg(long)]
    pub baserev: Option<String>,
    /// Send this ready patch instead of the tree's (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub diff: Option<PathBuf>,
    /// Strip N leading path components from the patch's file names (`patch -pN`)
    /// [default: 0 for svn and cvs, whose diffs have no a/ b/ prefixes; 1 for git,
    /// hg, bzr, darcs and arch diffs].
    #[arg(short = 'p', long = "patchlevel")]
    pub patchlevel: Option<u32>,
    /// Extra build properties, `k=v,k2=v2`.
    #[arg(long, value_name = "K=V,...")]
    pub properties: Option<String>,
    /// Why; shown with the try builds.
    #[arg(long)]
    pub comment: Option<String>,
    /// Follow the builds; exit 0 only if all of them succeed.
    #[arg(long)]
    pub wait: bool,
    /// Print what would be sent, and send nothing.
    #[arg(long)]
    pub dryrun: bool,
}

/// The options file's values, and where it is.
struct Options {
    path: Option<PathBuf>,
    values: BTreeMap<String, String>,
}

impl Options {
    fn find() -> anyhow::Result<Options> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        match find_options(&cwd, home.as_deref()) {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Ok(Options {
                    values: parse_options(&text),
                    path: Some(path),
                })
            }
            None => Ok(Options {
                path: None,
                values: BTreeMap::new(),
            }),
        }
    }

    fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned().filter(|v| !v.is_empty())
    }
}

/// What the tree (or `--diff`) gives: the base, its branch and the patch.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub vc: String,
    pub branch: Option<String>,
    pub baserev: Option<String>,
    pub patch: Vec<u8>,
}

/// Run `autobot try`.
pub fn try_cmd(args: &TryArgs) -> anyhow::Result<ExitCode> {
    let opts = Options::find()?;
    let wait = args.wait
        || opts.get("try_wait").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1" | "on")
        });
    let builders: Vec<String> = if args.builders.is_empty() {
        opts.get("try_builders")
            .map(|v| {
                v.split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    } else {
        args.builders.clone()
    };
    let branch = args.branch.clone().or_else(|| opts.get("try_branch"));
    let vc = args.vc.clone().or_else(|| opts.get("try_vc"));
    let found = match &args.diff {
        Some(file) => {
            let patch = if file.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut b)
                    .context("cannot read the patch from standard input")?;
                b
            } else {
                std::fs::read(file)
                    .with_context(|| format!("cannot read the patch {}", file.display()))?
            };
            Found {
                vc: vc.unwrap_or_default(),
                branch,
                baserev: args.baserev.clone(),
                patch,
            }
        }
        None => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            let mut f = from_tree(&cwd, vc.as_deref(), branch.as_deref())?;
            if let Some(r) = &args.baserev {
                f.baserev = Some(r.clone());
            }
            f
        }
    };
    let properties = parse_properties(args.properties.as_deref().unwrap_or(""))?;
    let comment = args
        .comment
        .clone()
        .or_else(|| opts.get("try_comment"))
        .unwrap_or_default();
    let job = TryJob {
        builders: builders.clone(),
        branch: found.branch.clone(),
        baserev: found.baserev.clone(),
        patch_level: args
            .patchlevel
            .unwrap_or(if matches!(found.vc.as_str(), "svn" | "cvs") {
                0
            } else {
                1
            }),
        patch: base64::engine::general_purpose::STANDARD.encode(&found.patch),
        properties,
        comment,
    };
    if args.dryrun {
        print_dryrun(args, &opts, &found, &job);
        return Ok(ExitCode::SUCCESS);
    }
    let master = args
        .master
        .clone()
        .or_else(|| opts.get("try_master"))
        .ok_or_else(|| {
            anyhow!(
                "which master? give --master HOST:PORT (the master's slaveport), or write \
                 `try_master = HOST:PORT` in {OPTIONS_DIR}/options in this directory or a parent"
            )
        })?;
    let (host, port) = split_host_port(&master)?;
    let user = args
        .username
        .clone()
        .or_else(|| opts.get("try_username"))
        .ok_or_else(|| {
            anyhow!(
                "who are you? give --username NAME (a user of the master's [try] section), or \
                 write `try_username = NAME` in {OPTIONS_DIR}/options"
            )
        })?;
    let password = match (&args.passwd, opts.get("try_password")) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => {
            if let Some(path) = &opts.path {
                private_options(path).map_err(|e| anyhow!("{e:#}").context("try_password"))?;
            }
            p
        }
        (None, None) => bail!(
            "no password: give --passwd PASSWORD, or write `try_password = PASSWORD` in \
             {OPTIONS_DIR}/options (chmod 600)"
        ),
    };
    let text = serde_json::to_string(&job)?;
    let reply = exchange(
        &host,
        port,
        TRY_PATH,
        &format!("{user}:{password}"),
        text,
        "try",
        " (give --username and --passwd of a user of the master's [try] section)",
    )
    .map_err(|e| {
        let text = format!("{e:#}");
        if text.contains("cannot reach") || text.contains("cannot resolve") {
            exit_error(EXIT_UNREACHABLE, text)
        } else {
            e
        }
    })?;
    let accepted = match serde_json::from_str::<TryReply>(&reply)
        .with_context(|| format!("the master's answer is not understood: {reply}"))?
    {
        TryReply::Accepted(a) => a,
        TryReply::Error(e) => bail!("the master refused the try job: {e}"),
    };
    let names: Vec<&str> = accepted.requests.iter().map(|(b, _)| b.as_str()).collect();
    println!(
        "try job sent to {host}:{port}: BuildSet {} on {} (base {}, patch {} bytes)",
        accepted.buildset_id,
        names.join(", "),
        found.baserev.as_deref().unwrap_or("the branch's newest"),
        found.patch.len()
    );
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    follow(&host, &accepted)
}

/// `--wait`: follow every build of the try job, each as `force --wait` follows
/// one; print each builder's result and build page. Exit 0 only if all succeeded.
fn follow(host: &str, accepted: &TryAccepted) -> anyhow::Result<ExitCode> {
    // The event streams open before anything is read: no event is missed.
    let mut streams = Vec::new();
    for _ in &accepted.requests {
        let s = http::EventStream::open(host, accepted.htmlport, "/events").map_err(|e| {
            exit_error(
                EXIT_UNREACHABLE,
                format!(
                    "cannot follow the builds on {host}:{} (the master's htmlport): {e:#}",
                    accepted.htmlport
                ),
            )
        })?;
        streams.push(s);
    }
    let multi = indicatif::MultiProgress::new();
    let results: Vec<(String, i64, anyhow::Result<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = accepted
            .requests
            .iter()
            .zip(streams)
            .map(|((builder, request), events)| {
                let multi = &multi;
                scope.spawn(move || {
                    let r = Waiter::at(host, accepted.htmlport, builder, *request, Path::new(""))
                        .in_multi(multi)
                        .run(events);
                    (builder.clone(), *request, r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (String::new(), 0, Err(anyhow!("a waiter panicked"))))
            })
            .collect()
    });
    let mut all_ok = true;
    let mut interrupted = Vec::new();
    for (builder, request, r) in results {
        match r {
            Ok(result) => {
                let url = build_url(host, accepted, &builder, request);
                println!("{builder}: {result}{url}");
                all_ok &= result == "success";
            }
            Err(e) => match e.downcast_ref::<super::ExitError>() {
                Some(x) if x.code == EXIT_INTERRUPTED => interrupted.push(x.message.clone()),
                _ => return Err(e),
            },
        }
    }
    if !interrupted.is_empty() {
        return Err(exit_error(
            EXIT_INTERRUPTED,
            format!(
                "stopped waiting (Ctrl-C); the try builds go on: {}",
                interrupted.join("; ")
            ),
        ));
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// ` — URL` of the newest build of `request`, or nothing when it is unknown.
fn build_url(host: &str, accepted: &TryAccepted, builder: &str, request: i64) -> String {
    let web = &accepted.web_url;
    let path = format!("/api/v1/buildrequests/{request}");
    let Ok(reply) = http::request(host, accepted.htmlport, "GET", &path, None) else {
        return String::new();
    };
    let number = reply.json().ok().and_then(|v| {
        v["builds"]
            .as_array()
            .and_then(|a| a.iter().filter_map(|n| n.as_i64()).max())
    });
    match number {
        Some(n) => format!(
            " — {}",
            crate::links::under(web, &crate::links::build_path(builder, n))
        ),
        None => String::new(),
    }
}

fn print_dryrun(args: &TryArgs, opts: &Options, found: &Found, job: &TryJob) {
    let master = args
        .master
        .clone()
        .or_else(|| opts.get("try_master"))
        .unwrap_or_else(|| "(no master given)".into());
    println!("dry run: would send to {master}:");
    println!(
        "  vc: {}",
        if found.vc.is_empty() {
            "(a ready patch)"
        } else {
            &found.vc
        }
    );
    println!(
        "  builders: {}",
        if job.builders.is_empty() {
            "(every builder the master's [try] opens)".to_string()
        } else {
            job.builders.join(" ")
        }
    );
    println!(
        "  branch: {}",
        job.branch.as_deref().unwrap_or("(the factory's)")
    );
    println!(
        "  base revision: {}",
        job.baserev.as_deref().unwrap_or("(the branch's newest)")
    );
    println!(
        "  patch: {} bytes, -p{}",
        found.patch.len(),
        job.patch_level
    );
    if !job.comment.is_empty() {
        println!("  comment: {}", job.comment);
    }
    for (k, v) in &job.properties {
        println!("  property {k} = {v}");
    }
    if !found.patch.is_empty() {
        println!("{}", String::from_utf8_lossy(&found.patch).trim_end());
    }
}

/// `k=v,k2=v2` into properties.
fn parse_properties(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("--properties: {item:?} is not KEY=VALUE"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Run a VC command in `dir`; its stdout, or an error with its stderr.
fn vc_output(dir: &Path, program: &str, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    vc_output_rc(dir, program, args, &[0])
}

/// The `hash='…'` of the first patch of `darcs log --xml-output`.
fn darcs_hash(xml: &str) -> Option<String> {
    let at = xml.find("<patch ")?;
    let rest = &xml[at..];
    let rest = &rest[rest.find(" hash='")? + " hash='".len()..];
    let hash = &rest[..rest.find('\'')?];
    (!hash.is_empty() && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .then(|| hash.to_string())
}

/// [`vc_output`] that takes any exit status of `ok` as success.
fn vc_output_rc(dir: &Path, program: &str, args: &[&str], ok: &[i32]) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("HGPLAIN", "1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.code().is_some_and(|c| ok.contains(&c)) {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn vc_text(dir: &Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&vc_output(dir, program, args)?)
        .trim()
        .to_string())
}

/// The top of the CVS working copy holding `dir`: the highest directory up from
/// it with a `CVS/Root` naming the same repository.
fn cvs_top(dir: &Path) -> anyhow::Result<String> {
    let root_of = |d: &Path| std::fs::read_to_string(d.join("CVS").join("Root")).ok();
    let root = root_of(dir).ok_or_else(|| anyhow!("{} has no CVS/Root", dir.display()))?;
    let mut top = dir.canonicalize()?;
    while let Some(parent) = top.parent() {
        if root_of(parent).as_deref() != Some(root.as_str()) {
            break;
        }
        top = parent.to_path_buf();
    }
    Ok(top.display().to_string())
}

/// The patch of an Arch tree against its revision `base`: `tla changes --diffs`
/// shows added files by absolute paths and removed ones not at all, so the base
/// is exported beside a link to the tree and `diff -ruN` compares the two, the
/// project tree's metadata (`{arch}`, `.arch-ids`, `,,*`, `++*`) left out; paths
/// as `a/FILE`, `b/FILE` (`-p1`).
fn arch_diff(top: &Path, base: &str) -> anyhow::Result<Vec<u8>> {
    let scratch = tempfile::Builder::new()
        .prefix("autobot-try-")
        .tempdir()
        .context("cannot make a scratch directory")?;
    let a = scratch.path().join("a");
    vc_output(top, "tla", &["export", base, &a.display().to_string()])?;
    std::os::unix::fs::symlink(top, scratch.path().join("b"))
        .context("cannot link the tree into the scratch directory")?;
    let mut args = vec!["-ruN"];
    for x in ["{arch}", ".arch-ids", ",,*", "++*", ".arch-inventory"] {
        args.extend(["--exclude", x]);
    }
    // `b` is a link: diff follows its operands.
    args.extend(["a", "b"]);
    vc_output_rc(scratch.path(), "diff", &args, &[0, 1])
}

/// Which VC holds `dir`, and its top directory.
fn detect(dir: &Path, vc: Option<&str>) -> anyhow::Result<(String, PathBuf)> {
    let top = |kind: &str| -> anyhow::Result<String> {
        match kind {
            "git" => vc_text(dir, "git", &["rev-parse", "--show-toplevel"]),
            "hg" => vc_text(dir, "hg", &["root"]),
            "svn" => vc_text(dir, "svn", &["info", "--show-item", "wc-root"]),
            "bzr" => vc_text(dir, "brz", &["root"]),
            "darcs" => {
                let out = vc_text(dir, "darcs", &["show", "repo"])?;
                out.lines()
                    .find_map(|l| l.trim().strip_prefix("Root:"))
                    .map(|r| r.trim().to_string())
                    .ok_or_else(|| anyhow!("`darcs show repo` names no Root: {out}"))
            }
            "cvs" => cvs_top(dir),
            "arch" => vc_text(dir, "tla", &["tree-root"]),
            other => bail!(
                "--vc {other:?}: autobot builds git, hg, svn, bzr, darcs, cvs and arch (give one of those)"
            ),
        }
    };
    match vc {
        Some(kind) => Ok((kind.to_string(), PathBuf::from(top(kind)?))),
        None => {
            for kind in ["git", "hg", "svn", "bzr", "darcs", "cvs", "arch"] {
                if let Ok(t) = top(kind) {
                    return Ok((kind.to_string(), PathBuf::from(t)));
                }
            }
            bail!(
                "{} is not in a git, hg, svn, bzr, darcs, cvs or arch working tree; run try from your working tree, or send a ready patch with --diff FILE --baserev REV",
                dir.display()
            )
        }
    }
}

/// The base revision, its branch and the patch of the working tree at `dir`.
pub fn from_tree(dir: &Path, vc: Option<&str>, branch: Option<&str>) -> anyhow::Result<Found> {
    let (vc, top) = detect(dir, vc)?;
    if vc == "git" {
        let (upstream, branch) = match branch {
            Some(b) => {
                let remote = format!("refs/remotes/origin/{b}");
                let r = if vc_text(&top, "git", &["rev-parse", "--verify", "--quiet", &remote])
                    .is_ok()
                {
                    remote
                } else {
                    b.to_string()
                };
                (r, b.to_string())
            }
            None => {
                let u = vc_text(
                    &top,
                    "git",
                    &["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}"],
                )
                .map_err(|_| {
                    anyhow!(
                        "the current branch has no upstream (`git branch --set-upstream-to`); give --branch BRANCH (or try_branch in {OPTIONS_DIR}/options)"
                    )
                })?;
                // origin/main → main: the master knows the branch by its name.
                let name = u.split_once('/').map_or(u.as_str(), |(_, b)| b).to_string();
                ("@{u}".to_string(), name)
            }
        };
        let base = vc_text(&top, "git", &["merge-base", "HEAD", &upstream])?;
        let patch = vc_output(
            &top,
            "git",
            &[
                "diff",
                "--binary",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--src-prefix=a/",
                "--dst-prefix=b/",
                &base,
                "--",
            ],
        )?;
        Ok(Found {
            vc,
            branch: Some(branch),
            baserev: Some(base),
            patch,
        })
    } else if vc == "svn" {
        // The revision the working copy was last updated to (a mixed working copy
        // reports its root's), and the local changes against it, paths relative to
        // the working copy's root.
        let base = vc_text(&top, "svn", &["info", "--show-item", "revision"])?;
        let patch = vc_output(&top, "svn", &["diff", "--non-interactive"])?;
        Ok(Found {
            vc,
            branch: branch.map(str::to_string),
            baserev: Some(base),
            patch,
        })
    } else if vc == "bzr" {
        let base = vc_text(&top, "brz", &["revno", "--tree"])?;
        // `brz diff` exits 1 when there are differences.
        let patch = vc_output_rc(&top, "brz", &["diff"], &[0, 1])?;
        Ok(Found {
            vc,
            branch: branch.map(str::to_string),
            baserev: Some(base),
            patch,
        })
    } else if vc == "darcs" {
        // The repository's state as the newest recorded patch names it: the slave
        // clones `--to-hash` it.
        let log = vc_text(&top, "darcs", &["log", "--last=1", "--xml-output"])?;
        let base = darcs_hash(&log).ok_or_else(|| {
            anyhow!("the darcs repository has no recorded patch to base a try on (`darcs record` one first)")
        })?;
        let patch = vc_output(&top, "darcs", &["diff", "-u"])?;
        Ok(Found {
            vc,
            branch: branch.map(str::to_string),
            baserev: Some(base),
            patch,
        })
    } else if vc == "cvs" {
        // As Buildbot's try: CVS has no revision of a whole tree, so the base is
        // now (a CVS date the slave checks out with -D): update before a try.
        // `cvs diff` exits 1 when there are differences; -N shows added and
        // removed files, paths relative to the top of the working copy.
        let base = format!("{} +0000", crate::calendar::ymd_hms(crate::calendar::now()));
        let patch = vc_output_rc(&top, "cvs", &["-f", "-q", "diff", "-u", "-N"], &[0, 1])?;
        Ok(Found {
            vc,
            branch: branch.map(str::to_string),
            baserev: Some(base),
            patch,
        })
    } else if vc == "arch" {
        let base = vc_text(&top, "tla", &["tree-revision"])?;
        let patch = arch_diff(&top, &base)?;
        Ok(Found {
            vc,
            branch: branch.map(str::to_string),
            baserev: Some(base),
            patch,
        })
    } else {
        let base = vc_text(&top, "hg", &["log", "--rev", ".", "--template", "{node}"])?;
        let branch = match branch {
            Some(b) => b.to_string(),
            None => vc_text(&top, "hg", &["branch"])?,
        };
        let patch = vc_output(&top, "hg", &["diff", "--git"])?;
        Ok(Found {
            vc,
            branch: Some(branch),
            baserev: Some(base),
            patch,
        })
    }
}
