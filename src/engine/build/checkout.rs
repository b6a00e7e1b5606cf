//! The checkout Step of a Build: the source plan ([`crate::sources::checkout`])
//! run either as one native `git`/`hg` command on an autobot slave, or as plain
//! `stat`, `rmdir`, `mkdir`, `cpdir` and `shell` commands a stock
//! buildbot-worker understands, walking the plan's state machine (mirror,
//! update, fallback to a full checkout, retries). Credentials in the URL go only
//! to autobot slaves, in the environment.

use super::command::{env_value, run_command, shell_args, shell_end};
use super::*;
use crate::sources::checkout::{CheckoutOp, CheckoutRun, Next};
use crate::sources::split_credentials;

/// A source checkout: one native `git`/`hg` command when the slave advertises it
/// (an autobot slave), else through `stat`, `rmdir`, `mkdir`, `cpdir` and `shell`
/// (so a stock buildbot-worker works too); sets `got_revision_DIR` and, for the
/// build's first checkout, `got_revision`.
pub(super) async fn checkout(
    ctx: &mut BuildContext,
    props: &mut Properties,
    step: &StepSpec,
    logs: &mut StepLogs,
    builder_dir: &str,
    done_words: &[String],
) -> StepEnd {
    let branch = ctx.claimed.branch.clone();
    let revision = ctx.claimed.revision.clone();
    // The slave's mirrors directory, absolute when the slave told its basedir (so
    // that absolute workdirs can use the mirror too).
    let mirrors = ctx.slave.path("mirrors");
    let mirrors = if mirrors.starts_with('/') {
        mirrors
    } else {
        String::new()
    };
    let native = match &step.kind {
        StepKind::Checkout { source, .. } => ctx.slave.has_command(source.kind.as_str()),
        _ => false,
    };
    // A stock buildbot-worker writes every message it receives, environment
    // included, to its twistd.log: it gets the URL without credentials, and its
    // host's own git/hg configuration supplies them.
    let mut kind = std::borrow::Cow::Borrowed(&step.kind);
    if let (false, StepKind::Checkout { source, .. }) = (native, &step.kind) {
        if let Ok((bare, Some(_))) = split_credentials(&source.url) {
            logs.write(
                Channel::Header,
                "the slave is not an autobot slave; a buildbot-worker logs every command it \
                 receives, so the repository URL's credentials are not sent to it: give them \
                 to git or hg on the slave's host (a git credential helper or ~/.netrc, an \
                 [auth] section in ~/.hgrc; for CVS, `cvs login` once as the slave's user)\n",
            );
            let mut stripped = step.kind.clone();
            if let StepKind::Checkout { source, .. } = &mut stripped {
                source.url = bare;
            }
            kind = std::borrow::Cow::Owned(stripped);
        }
    }
    // A try build: its patch, applied after the checkout (an empty one tests the
    // base revision as it is).
    let patch = ctx.claimed.patch.clone().filter(|p| !p.diff.is_empty());
    let pull = pull_ref_of(&ctx.claimed.properties);
    let plan = kind
        .checkout(&step.workdir, branch.as_deref(), revision.as_deref())
        .map(|c| c.with_mirrors(&mirrors))
        .map(|c| c.with_patch(patch.as_ref().map(|p| p.level)))
        .map(|c| c.with_pull_ref(pull.as_deref()))
        .and_then(|c| c.plan());
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            logs.write(Channel::Header, &format!("{e}\n"));
            return StepEnd {
                result: StepResult::Failure,
                text: format!("{} failed: {e}", done_words.join(" ")),
                interruption: Interruption::None,
            };
        }
    };
    if native {
        return native_checkout(ctx, props, step, logs, builder_dir, done_words, &plan).await;
    }
    let mut updateable = false;
    if let Some(probe) = &plan.probe {
        let args = map(vec![("path", Value::from(slave_path(builder_dir, probe)))]);
        match run_command(ctx, logs, "stat", args, None).await {
            CmdEnd::Done {
                rc: Some(0),
                failure: None,
                ..
            } => updateable = true,
            CmdEnd::Done { .. } => {}
            other => return shell_end(other, logs, done_words),
        }
    }
    if let (true, Some(marker)) = (updateable, &plan.patched_marker) {
        let args = map(vec![("path", Value::from(slave_path(builder_dir, marker)))]);
        match run_command(ctx, logs, "stat", args, None).await {
            CmdEnd::Done {
                rc: Some(0),
                failure: None,
                ..
            } => {
                logs.write(
                    Channel::Header,
                    "the tree holds a try build's patch: checking out afresh\n",
                );
                updateable = false;
            }
            CmdEnd::Done { .. } => {}
            other => return shell_end(other, logs, done_words),
        }
    }
    // tla's private HOME (GNU Arch): absolute, for buildbot-worker's shell.
    let mut base_env: BTreeMap<String, String> = step.env.clone();
    if let Some(home) = &plan.home {
        base_env.insert("HOME".into(), slave_path(builder_dir, home));
    }
    let mut run = CheckoutRun::new(plan, updateable);
    let mut next = run.start();
    loop {
        match next {
            Next::Done { ok } => {
                return if ok {
                    StepEnd {
                        result: StepResult::Success,
                        text: done_words.join(" "),
                        interruption: Interruption::None,
                    }
                } else {
                    StepEnd {
                        result: StepResult::Failure,
                        text: format!("{} failed", done_words.join(" ")),
                        interruption: Interruption::None,
                    }
                };
            }
            Next::Run {
                op,
                delay_secs,
                header,
            } => {
                if let Some(h) = header {
                    logs.write(Channel::Header, &format!("{h}\n"));
                }
                if delay_secs > 0 {
                    let delay = Duration::from_secs(delay_secs);
                    let stopped = tokio::time::timeout(delay, ctx.stop.wait_for(|s| s.is_some()))
                        .await
                        .is_ok();
                    if stopped {
                        return StepEnd {
                            result: StepResult::Failure,
                            text: format!("{} interrupted", done_words.join(" ")),
                            interruption: Interruption::None,
                        };
                    }
                }
                if let CheckoutOp::WritePatch { path } = &op {
                    let diff = patch.as_ref().map(|p| p.diff.clone()).unwrap_or_default();
                    logs.write(
                        Channel::Header,
                        &format!("downloading the patch ({} bytes) to {path}\n", diff.len()),
                    );
                    let sent = ctx
                        .slave
                        .download_file(
                            crate::slavelink::DownloadSource::Bytes(diff),
                            &slave_path(builder_dir, path),
                            None,
                        )
                        .await;
                    let ok = match sent {
                        Ok(_) => true,
                        Err(e) => {
                            logs.write(Channel::Header, &format!("{e}\n"));
                            false
                        }
                    };
                    next = run.done(ok);
                    continue;
                }
                let (name, args, capture) = match &op {
                    CheckoutOp::WritePatch { .. } => {
                        next = run.done(false);
                        continue;
                    }
                    CheckoutOp::RmDir { dir } => {
                        logs.write(Channel::Header, &format!("rmdir {dir}\n"));
                        (
                            "rmdir",
                            map(vec![(
                                "paths",
                                Value::Array(vec![Value::from(slave_path(builder_dir, dir))]),
                            )]),
                            false,
                        )
                    }
                    CheckoutOp::MkDir { dir } => {
                        logs.write(Channel::Header, &format!("mkdir {dir}\n"));
                        (
                            "mkdir",
                            map(vec![(
                                "paths",
                                Value::Array(vec![Value::from(slave_path(builder_dir, dir))]),
                            )]),
                            false,
                        )
                    }
                    CheckoutOp::CpDir { from, to } => {
                        logs.write(Channel::Header, &format!("cpdir {from} {to}\n"));
                        (
                            "cpdir",
                            map(vec![
                                ("from_path", Value::from(slave_path(builder_dir, from))),
                                ("to_path", Value::from(slave_path(builder_dir, to))),
                            ]),
                            false,
                        )
                    }
                    CheckoutOp::Shell { argv, workdir }
                    | CheckoutOp::GotRevision { argv, workdir } => {
                        let mut s = step.clone();
                        s.env = base_env.clone();
                        let args = shell_args(
                            &Command::Argv(argv.clone()),
                            &slave_path(builder_dir, workdir),
                            &s,
                        );
                        ("shell", args, matches!(op, CheckoutOp::GotRevision { .. }))
                    }
                };
                let mut captured = String::new();
                let end = run_command(
                    ctx,
                    logs,
                    name,
                    args,
                    if capture { Some(&mut captured) } else { None },
                )
                .await;
                let ok = match end {
                    CmdEnd::Done { rc, failure, .. } => failure.is_none() && rc == Some(0),
                    other => return shell_end(other, logs, done_words),
                };
                if ctx.stop.borrow().is_some() {
                    return StepEnd {
                        result: StepResult::Failure,
                        text: format!("{} interrupted", done_words.join(" ")),
                        interruption: Interruption::None,
                    };
                }
                if ok && capture {
                    let got = run.revision_properties(captured.trim(), props);
                    set_properties(ctx, props, got, "Source").await;
                }
                next = run.done(ok);
            }
        }
    }
}

/// A pull request's head ref for a Build whose BuildSet came from a `pull`
/// Change: made again here from `pr_number` (digits only) and `pr_forge`
/// (`gitlab`: merge requests), never taken from a property as it is.
pub(crate) fn pull_ref_of(props: &BTreeMap<String, String>) -> Option<String> {
    let number = props.get(crate::sources::checkout::PR_NUMBER_PROPERTY)?;
    let gitlab = props
        .get(crate::sources::checkout::PR_FORGE_PROPERTY)
        .is_some_and(|f| f == "gitlab");
    crate::sources::checkout::pull_ref(number.trim(), gitlab)
}

/// The arguments of a native `git`/`hg` command: the checkout's settings, from which
/// the slave builds the same plan (`slave/commands/vc.rs`).
fn native_args(ctx: &BuildContext, step: &StepSpec, builder_dir: &str) -> Option<Value> {
    let StepKind::Checkout {
        source,
        mode,
        always_use_latest,
        retry,
        mirror,
    } = &step.kind
    else {
        return None;
    };
    let branch = match ctx.claimed.branch.as_deref().filter(|b| !b.is_empty()) {
        Some(b) => b,
        None => source.branch.as_str(),
    };
    // svn: the branch's path below the URL, `svnBranchPrefix` applied here, so the
    // slave's plan needs no factory setting.
    let svn_path;
    let branch = match source.kind {
        crate::sources::SourceKind::Svn => {
            svn_path = crate::sources::svn_branch_path(source, branch);
            svn_path.as_str()
        }
        // Arch: the fully qualified version, so the slave needs no factory setting.
        crate::sources::SourceKind::Arch => {
            svn_path = crate::sources::arch_version(source, branch);
            svn_path.as_str()
        }
        _ => branch,
    };
    let env = env_value(step);
    let mut entries = vec![
        ("builddir", Value::from(builder_dir)),
        ("workdir", Value::from(step.workdir.as_str())),
        ("repourl", Value::from(source.url.as_str())),
        ("branch", Value::from(branch)),
        ("mode", Value::from(mode.as_str())),
        ("alwaysUseLatest", Value::from(*always_use_latest)),
        ("mirror", Value::from(*mirror)),
        ("env", env),
    ];
    if let Some(r) = ctx.claimed.revision.as_deref().filter(|r| !r.is_empty()) {
        entries.push(("revision", Value::from(r)));
    }
    if let Some(r) = pull_ref_of(&ctx.claimed.properties) {
        entries.push(("pullRef", Value::from(r)));
    }
    if let Some(r) = retry {
        entries.push((
            "retry",
            Value::Array(vec![Value::from(r.delay), Value::from(r.repeats)]),
        ));
    }
    if let Some(p) = ctx.claimed.patch.as_ref().filter(|p| !p.diff.is_empty()) {
        // Buildbot's `patch` argument of its source commands: (level, diff).
        entries.push((
            "patch",
            Value::Array(vec![Value::from(p.level), Value::Binary(p.diff.clone())]),
        ));
    }
    if let Some(t) = step.timeout {
        entries.push(("timeout", Value::from(t)));
    }
    if let Some(t) = step.max_time {
        entries.push(("maxTime", Value::from(t)));
    }
    Some(map(entries))
}

/// A checkout by the slave's own `git`/`hg` command: one protocol command, its
/// output into the step's log, the revision from its `got_revision` update.
async fn native_checkout(
    ctx: &mut BuildContext,
    props: &mut Properties,
    step: &StepSpec,
    logs: &mut StepLogs,
    builder_dir: &str,
    done_words: &[String],
    plan: &crate::sources::checkout::CheckoutPlan,
) -> StepEnd {
    let failed = |text: String| StepEnd {
        result: StepResult::Failure,
        text,
        interruption: Interruption::None,
    };
    let (Some(args), StepKind::Checkout { source, .. }) =
        (native_args(ctx, step, builder_dir), &step.kind)
    else {
        return failed(format!("{} failed: not a checkout", done_words.join(" ")));
    };
    let command = source.kind.as_str();
    logs.write(
        Channel::Header,
        &format!("checkout by the slave's {command} command\n"),
    );
    let end = run_command(ctx, logs, command, args, None).await;
    let (rc, got) = match end {
        CmdEnd::Done {
            rc,
            failure: None,
            got_revision,
            ..
        } => (rc, got_revision),
        other => return shell_end(other, logs, done_words),
    };
    if ctx.stop.borrow().is_some() {
        return failed(format!("{} interrupted", done_words.join(" ")));
    }
    if rc != Some(0) {
        return failed(format!("{} failed", done_words.join(" ")));
    }
    let Some(got) = got.filter(|g| !g.trim().is_empty()) else {
        logs.write(Channel::Header, "the slave sent no got_revision\n");
        return failed(format!("{} failed", done_words.join(" ")));
    };
    let got = plan.revision_properties(got.trim(), props);
    set_properties(ctx, props, got, "Source").await;
    StepEnd {
        result: StepResult::Success,
        text: done_words.join(" "),
        interruption: Interruption::None,
    }
}
