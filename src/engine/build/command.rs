//! Running one worker-protocol command for a Step: its arguments (argv, workdir,
//! environment with every property), its output streamed into the Step's logs
//! with back-pressure, interrupts on stop, slave loss and shutdown, and the
//! Step's end judged from the outcome; and the properties a Step sets
//! (warnings counted, SetProperty).

use super::*;

pub(super) fn shell_args(command: &Command, workdir: &str, step: &StepSpec) -> Value {
    let argv: Vec<Value> = match command {
        Command::Argv(argv) => argv.iter().map(|a| Value::from(a.as_str())).collect(),
        Command::Shell(script) => vec![
            Value::from("/bin/sh"),
            Value::from("-c"),
            Value::from(script.as_str()),
        ],
    };
    let env = env_value(step);
    let mut entries = vec![
        ("workdir", Value::from(workdir)),
        ("command", Value::Array(argv)),
        ("env", env),
        ("want_stdout", Value::from(true)),
        ("want_stderr", Value::from(true)),
        ("usePTY", Value::from(false)),
        ("logEnviron", Value::from(false)),
    ];
    if let Some(t) = step.timeout {
        entries.push(("timeout", Value::from(t)));
    }
    if let Some(t) = step.max_time {
        entries.push(("maxTime", Value::from(t)));
    }
    map(entries)
}

/// A shell command's Step result and text (Buildbot's ShellCommand).
/// Add a Compile step's warnings to the Build's `warnings-count` property, as
/// Buildbot's warning-counting steps do, so later steps and the status can read the
/// total.
pub(super) async fn count_warnings(ctx: &BuildContext, props: &mut Properties, warnings: u64) {
    let total = props
        .get(WARNINGS_COUNT)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + warnings;
    let row = vec![(WARNINGS_COUNT.to_string(), total.to_string())];
    set_properties(ctx, props, row, "Compile").await;
}

/// Set Build properties a Step found (`source` says which kind of Step): for the
/// Steps after it and, written at once, for the status.
pub(super) async fn set_properties(
    ctx: &BuildContext,
    props: &mut Properties,
    found: Vec<(String, String)>,
    source: &str,
) {
    for (name, value) in &found {
        props.insert(name.clone(), value.clone());
    }
    let rows = found
        .into_iter()
        .map(|(name, value)| (name, value, source.to_string()))
        .collect();
    if let Err(e) = ctx
        .inner
        .db
        .set_build_properties(ctx.claimed.build_id, rows)
        .await
    {
        tracing::error!("{} build {}: {e}", ctx.claimed.builder, ctx.claimed.number);
    }
}

/// The Build property holding the warnings its Compile steps counted.
pub const WARNINGS_COUNT: &str = "warnings-count";

/// A step's environment as the protocol's `env` map.
pub(super) fn env_value(step: &StepSpec) -> Value {
    Value::Map(
        step.env
            .iter()
            .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
            .collect(),
    )
}

pub(super) fn shell_end(end: CmdEnd, logs: &mut StepLogs, done_words: &[String]) -> StepEnd {
    match end {
        CmdEnd::Lost(why) => StepEnd {
            result: StepResult::Exception,
            text: format!("{} slave lost", done_words.join(" ")),
            interruption: Interruption::SlaveLost(why),
        },
        CmdEnd::Abandoned => StepEnd {
            result: StepResult::Exception,
            text: format!("{} interrupted", done_words.join(" ")),
            interruption: Interruption::None,
        },
        CmdEnd::Done {
            failure: Some(f), ..
        } => StepEnd {
            result: StepResult::Exception,
            text: format!("exception: {}", f.lines().last().unwrap_or(&f)),
            interruption: Interruption::None,
        },
        CmdEnd::Done { rc: None, .. } => StepEnd {
            result: StepResult::Exception,
            text: format!("{} exception: no exit status", done_words.join(" ")),
            interruption: Interruption::None,
        },
        CmdEnd::Done {
            rc: Some(rc),
            failure_reason,
            ..
        } => {
            logs.scanner.finish();
            let result = logs
                .scanner
                .step_result(rc.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
            let mut text = logs.scanner.summary(done_words);
            // "test 3 passed, 1 failed" says it already.
            if result == StepResult::Failure && !text.contains("failed") {
                text.push_str(" failed");
            }
            if let Some(r) = failure_reason {
                let why = match r.as_str() {
                    "timeout_without_output" => "timed out: no output",
                    "timeout" => "timed out: maxTime",
                    other => other,
                };
                text.push_str(&format!(" ({why})"));
            }
            StepEnd {
                result,
                text: text.trim().to_string(),
                interruption: Interruption::None,
            }
        }
    }
}

/// Run one protocol command, its output into the step's logs (and its stdout into
/// `capture`, up to [`CAPTURE_MAX`] bytes). What it sends back that the master
/// keeps (output, `got_revision`, a failure) has the secrets redacted; the
/// output a stream held back for redaction is written when it ends.
pub(super) async fn run_command(
    ctx: &mut BuildContext,
    logs: &mut StepLogs,
    name: &str,
    args: Value,
    mut capture: Option<&mut String>,
) -> CmdEnd {
    let end = run_command_raw(ctx, logs, name, args, capture.as_deref_mut()).await;
    logs.flush_redaction();
    if let Some(c) = capture {
        *c = logs.redact_text(c);
    }
    match end {
        CmdEnd::Done {
            rc,
            failure,
            failure_reason,
            got_revision,
        } => CmdEnd::Done {
            rc,
            failure: failure.map(|f| logs.redact_text(&f)),
            failure_reason,
            got_revision: got_revision.map(|g| logs.redact_text(&g)),
        },
        other => other,
    }
}

async fn run_command_raw(
    ctx: &mut BuildContext,
    logs: &mut StepLogs,
    name: &str,
    args: Value,
    mut capture: Option<&mut String>,
) -> CmdEnd {
    let inner = ctx.inner.clone();
    // A slave that stops answering before it confirms the command (frozen just
    // then) must not keep a stopped Build waiting: a stop still ends it.
    let started = {
        let start = ctx.slave.start_command(name, args);
        let stop = &mut ctx.stop;
        let give_up = async {
            let _ = stop.wait_for(|s| s.is_some()).await;
            tokio::time::sleep(ABANDON_AFTER).await;
        };
        tokio::select! {
            r = start => Some(r),
            _ = give_up => None,
        }
    };
    let Some(started) = started else {
        logs.write(
            Channel::Header,
            &format!(
                "the slave did not confirm the {name} command within {} s of the stop; abandoned\n",
                ABANDON_AFTER.as_secs()
            ),
        );
        return CmdEnd::Abandoned;
    };
    let mut cmd = match started {
        Ok(c) => c,
        Err(CommandError::Lost { reason, .. }) => return CmdEnd::Lost(reason),
        Err(CommandError::NotConnected { slave }) => {
            return CmdEnd::Lost(format!("slave {slave} is not connected"))
        }
        Err(e) => {
            logs.write(Channel::Header, &format!("{e}\n"));
            return CmdEnd::Done {
                rc: None,
                failure: Some(e.to_string()),
                failure_reason: None,
                got_revision: None,
            };
        }
    };
    let mut rc = None;
    let mut failure_reason = None;
    let mut got_revision = None;
    let mut stopped_at: Option<Instant> = None;
    loop {
        // A stop, whenever it came (even while the command was being started,
        // where a wait for it may have marked it seen): interrupt the command.
        if stopped_at.is_none() {
            let stop = ctx.stop.borrow_and_update().clone();
            if let Some(stop) = stop {
                logs.write(Channel::Header, &format!("interrupting: {}\n", stop.text()));
                let interrupter = cmd.interrupter();
                let why = stop.text().to_string();
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(3), interrupter.interrupt(&why))
                            .await;
                });
                stopped_at = Some(Instant::now());
            }
        }
        let stop_seen = stopped_at.is_some();
        let ev = if let Some(at) = stopped_at {
            let left = ABANDON_AFTER.saturating_sub(at.elapsed());
            let room = logs.group.clone().room();
            let next = async {
                room.await;
                cmd.next().await
            };
            match tokio::time::timeout(left, next).await {
                Ok(ev) => ev,
                Err(_) => {
                    logs.write(
                        Channel::Header,
                        &format!(
                            "the slave did not finish the interrupted command within {} s; abandoned\n",
                            ABANDON_AFTER.as_secs()
                        ),
                    );
                    return CmdEnd::Abandoned;
                }
            }
        } else {
            let flush_at = tokio::time::Instant::from_std(logs.last_flush + FLUSH_EVERY);
            // While the disk is behind with this Step's output, no more is taken
            // from the slave (its link fills up and pushes back on it).
            let has_room = logs.group.has_room();
            tokio::select! {
                ev = cmd.next(), if has_room => ev,
                _ = logs.group.clone().room(), if !has_room => continue,
                _ = tokio::time::sleep_until(flush_at), if logs.dirty => {
                    logs.tick(&inner).await;
                    continue;
                }
                r = ctx.stop.changed(), if !stop_seen => {
                    if r.is_err() {
                        // The engine is gone; treat as a shutdown.
                        stopped_at = Some(Instant::now());
                    }
                    // Otherwise the loop's top sees the stop.
                    continue;
                }
            }
        };
        let Some(ev) = ev else {
            return CmdEnd::Lost("command ended without completion".into());
        };
        match ev {
            CommandEvent::Update(u) => match u {
                Update::Stdout(s) => {
                    if let Some(c) = capture.as_deref_mut() {
                        if c.len() < CAPTURE_MAX {
                            let room = CAPTURE_MAX - c.len();
                            let mut cut = s.len().min(room);
                            while !s.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            c.push_str(&s[..cut]);
                        }
                    }
                    logs.write_owned(Channel::Stdout, s);
                    logs.tick(&inner).await;
                }
                Update::Stderr(s) => {
                    logs.write_owned(Channel::Stderr, s);
                    logs.tick(&inner).await;
                }
                Update::Header(s) => {
                    logs.write(Channel::Header, &s);
                    logs.tick(&inner).await;
                }
                Update::Log { name, text } => logs.write_extra(&inner, &name, &text).await,
                Update::Rc(r) => rc = Some(r),
                Update::FailureReason(r) => failure_reason = Some(r),
                Update::Other(key, value) if key == "got_revision" => {
                    got_revision = crate::protocol::value_str(&value).map(str::to_string);
                }
                _ => {}
            },
            CommandEvent::Complete(failure) => {
                if let Some(f) = &failure {
                    logs.write(Channel::Header, &format!("{f}\n"));
                }
                return CmdEnd::Done {
                    rc,
                    failure,
                    failure_reason,
                    got_revision,
                };
            }
            CommandEvent::Lost(why) => {
                logs.write(
                    Channel::Header,
                    &format!("connection to the slave lost: {why}\n"),
                );
                return CmdEnd::Lost(why);
            }
        }
    }
}
