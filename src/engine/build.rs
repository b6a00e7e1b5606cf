//! One Build: the factory's step specs run in order as worker-protocol commands on
//! the Build's slave, each Step's output streamed into its log files, its result
//! judged from the exit code and the log, the Build's result from the Steps' flags
//! (Buildbot 0.7's rules, `factory::results`).
//!
//! Properties: `branch`, `revision` (empty when unset), `got_revision` (set by the
//! first checkout), `got_revision_DIR` (by each checkout, DIR its directory name),
//! `buildername`, `buildnumber`, `slavename`, the factory's own (e.g. `platform`),
//! the BuildSet's, and whatever SetProperty steps set; each Step is interpolated
//! with the properties it starts with (values reach a shell only through
//! environment variables, `factory::interpolate`), and its commands get every
//! property as `AUTOBOT_PROP_NAME` in their environment. Everything is recorded
//! in SQLite before the slave is asked to act: the Build row (at claim time),
//! then each Step row before its first command. The first Step's row goes with
//! the claim when no locks are involved ([`first_step_start`]); a Step's log
//! files are made by the log disk's thread with its first bytes
//! (`logstore::AsyncLog`: readers see a log without its file yet as empty), and a
//! Step's end is recorded once its logs are stored (`logstore::LogGroup::settled`).
//! While more than `logstore::IN_FLIGHT` bytes of its output wait for the disk, a
//! Step takes no more from the slave, whose link then pushes back on it.
//!
//! A Build ends early when a Step halts it, when the slave is lost (EXCEPTION
//! "slave lost: …", requests re-queued), when it is stopped (the running command
//! is interrupted; "stopped by WHO: REASON") or when the master shuts down
//! (EXCEPTION, requests re-queued). A stopped command that the slave does not
//! finish within [`ABANDON_AFTER`] is abandoned, so a stop always ends the Build.
//!
//! Locks (`locks.rs`): the factory's `locks` are taken before the first Step and
//! held until the Build ends; a Step's own `locks` while it runs (a lock the Build
//! already holds is not taken twice). Each set is taken all at once or not at all.
//! Waiting happens inside the Step that needs the locks — for the Build's locks,
//! its first Step — so the waterfall shows that Step as "waiting for lock NAME",
//! its log starts with "waited 1.2 s for lock NAME" and its text ends with the
//! same note. A stop, a master shutdown or the loss of the slave ends the wait at
//! once, like a running command.
//!
//! Secrets (`crate::secrets`): a Step's `%(secret:NAME)s` resolves against the
//! `secretsDir` of the configuration in force when the Step starts — unless the
//! Build is untrusted ([`build_is_untrusted`]), which fails any Step that names
//! a secret. Everything written to a Step's logs (the slave's output, its command
//! header, the engine's own notes), the value a SetProperty Step captures, a
//! `got_revision` and the Step's text are redacted first: every form of every
//! secret becomes `<secret:NAME>`. Output is redacted per stream with a tail
//! kept back between chunks (a secret split across two chunks is still found),
//! flushed when each command ends.
//!
//! Running one command and judging its end is in `build/command.rs`; the
//! checkout Step, stock or native, in `build/checkout.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmpv::Value;
use tokio::sync::watch;

use super::locks::{self, LockGuard, LockWant};
use super::{EngineEvent, Inner};
use crate::config::{FactoryConfig, SlaveConfig};
use crate::db::builds::{StepFinish, StepStart, TestCounts};
use crate::db::requests::ClaimedBuild;
use crate::factory::interpolate::{interpolate_step_with, property_env, Properties, SecretAccess};
use crate::factory::logparse::{LogCounts, LogScanner};
use crate::factory::results::{BuildResult, StepResult};
use crate::factory::{Command, StepKind, StepSpec};
use crate::logstore::{log_rel_path, AsyncLog, Channel, LogGroup};
use crate::protocol::map;
use crate::secrets::{Redactor, Secrets, StreamRedactor};
use crate::slavelink::command::{CommandError, CommandEvent, Update};
use crate::slavelink::registry::SlaveHandle;

/// How long after an interrupt a command may take to finish before the Build
/// stops waiting for the slave.
pub const ABANDON_AFTER: Duration = Duration::from_secs(5);

mod checkout;
mod command;
mod transfer;

use command::{count_warnings, run_command, set_properties, shell_args, shell_end};

/// How often a growing log is flushed and announced.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// How often a growing log's size is written to SQLite.
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// The most stdout a SetProperty or got_revision command keeps for its value.
const CAPTURE_MAX: usize = 1 << 20;

/// The result of a Build an operator stopped (Buildbot's CANCELLED): neither a
/// failure nor an exception, so mail and the pages do not call it one.
pub const CANCELLED: &str = "cancelled";

/// The BuildSet property that marks a Build untrusted: `pr_from_fork = true`
/// (any case). The pull-request hooks are to set it for a request from a fork
/// (as the forges' own CI does); nothing else sets it. An untrusted Build never
/// gets a secret: a Step that names one fails.
pub const UNTRUSTED_PROPERTY: &str = "pr_from_fork";

/// Whether a Build with these BuildSet properties is untrusted
/// ([`UNTRUSTED_PROPERTY`]).
pub fn build_is_untrusted(buildset_properties: &BTreeMap<String, String>) -> bool {
    buildset_properties
        .get(UNTRUSTED_PROPERTY)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Why an untrusted Build's Step gets no secret.
const UNTRUSTED_WHY: &str = "the build is untrusted (property pr_from_fork = true: a pull request from a fork), and an untrusted build never gets secrets";

/// Why a Build is asked to end early.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stop {
    /// An operator's stop: the Build's result stands, its requests are complete.
    User { text: String },
    /// The master shuts down: EXCEPTION, the requests run again later.
    Shutdown { text: String },
}

impl Stop {
    fn text(&self) -> &str {
        match self {
            Stop::User { text } | Stop::Shutdown { text } => text,
        }
    }
}

/// Everything a Build needs, handed over by the dispatcher.
pub(crate) struct BuildContext {
    pub(crate) inner: Arc<Inner>,
    pub(crate) claimed: ClaimedBuild,
    pub(crate) slave: SlaveHandle,
    pub(crate) factory: FactoryConfig,
    pub(crate) slave_cfg: SlaveConfig,
    pub(crate) steps: Vec<StepSpec>,
    pub(crate) stop: watch::Receiver<Option<Stop>>,
    /// The Build's starting properties `(name, value, source)`, written with its
    /// first Step's row (one transaction instead of two).
    pub(crate) pending_props: Vec<(String, String, String)>,
    /// The last Step's end, not yet written: it goes with the next Step's row or
    /// the Build's end (one transaction instead of two), then its event.
    pub(crate) pending_finish: Option<(StepFinish, EngineEvent)>,
    /// When the Build handed its slave on, if it did so as soon as its last
    /// command ended (before its logs were stored): the end of its last Step and
    /// its own end, so a next Build on the slave never starts before them.
    pub(crate) released_at: Option<f64>,
}

/// How a protocol command ended.
enum CmdEnd {
    Done {
        rc: Option<i64>,
        failure: Option<String>,
        failure_reason: Option<String>,
        /// The `got_revision` update of a native `git`/`hg` checkout.
        got_revision: Option<String>,
    },
    /// The connection to the slave ended.
    Lost(String),
    /// Stopped and the slave did not finish the command in time.
    Abandoned,
}

/// How a Step ended, beyond its result.
#[derive(Debug, Clone, PartialEq)]
enum Interruption {
    None,
    SlaveLost(String),
    Stopped(Stop),
}

/// A Step's logs while it runs.
struct StepLogs {
    builder: String,
    number: i64,
    step_number: i64,
    step_name: String,
    step_id: i64,
    stdio: AsyncLog,
    stdio_id: i64,
    extra: HashMap<String, (AsyncLog, i64)>,
    /// The disk's progress with these logs.
    group: Arc<LogGroup>,
    scanner: LogScanner,
    last_flush: Instant,
    /// Output written since the last flush: flushed within [`FLUSH_EVERY`] even if
    /// the command prints nothing more (a hanging command's last line shows).
    dirty: bool,
    last_record: Instant,
    /// A write to a log file failed: the Step becomes an EXCEPTION.
    error: Option<String>,
    /// The secrets in force when the Step started.
    secrets: Arc<Secrets>,
    /// Their redaction from the output (`None`: there are none).
    redaction: Option<Redaction>,
}

/// The redaction of a Step's output: one stream per channel of the slave's
/// output, whose chunks may split a secret.
struct Redaction {
    redactor: Arc<Redactor>,
    stdout: StreamRedactor,
    stderr: StreamRedactor,
}

impl Redaction {
    fn new(secrets: &Secrets) -> Option<Redaction> {
        let r = secrets.redactor()?;
        Some(Redaction {
            redactor: r.clone(),
            stdout: StreamRedactor::new(r.clone()),
            stderr: StreamRedactor::new(r.clone()),
        })
    }
}

impl StepLogs {
    fn write(&mut self, channel: Channel, text: &str) {
        if self.redaction.is_some() {
            self.write_owned(channel, text.to_string());
            return;
        }
        self.dirty = true;
        if channel != Channel::Header {
            self.scanner.feed(text.as_bytes());
        }
        self.stdio.append(channel, text.as_bytes());
    }

    /// [`StepLogs::write`] of output the log may keep as it is.
    fn write_owned(&mut self, channel: Channel, text: String) {
        if self.redaction.is_none() {
            self.append_owned(channel, text);
            return;
        }
        let (first, second) = self.redacted(channel, text);
        self.append_owned(channel, first);
        self.append_owned(channel, second);
    }

    fn append_owned(&mut self, channel: Channel, text: String) {
        if text.is_empty() && self.redaction.is_some() {
            return;
        }
        self.dirty = true;
        if channel != Channel::Header {
            self.scanner.feed(text.as_bytes());
        }
        self.stdio.append_owned(channel, text.into_bytes());
    }

    /// `text` of `channel` redacted: the slave's output as a stream (some of it
    /// may wait for the next chunk), anything else whole. What another channel
    /// kept back is written first, so the log keeps the order things came in
    /// (output only breaks between lines, and each line of a multi-line secret
    /// is a form of its own, so no secret is lost at such a switch).
    fn redacted(&mut self, channel: Channel, text: String) -> (String, String) {
        let Some(r) = self.redaction.as_mut() else {
            return (String::new(), text);
        };
        let (out, err) = match channel {
            Channel::Stdout => (String::new(), r.stderr.finish()),
            Channel::Stderr => (r.stdout.finish(), String::new()),
            Channel::Header => (r.stdout.finish(), r.stderr.finish()),
        };
        if !out.is_empty() || !err.is_empty() {
            self.append_owned(Channel::Stdout, out);
            self.append_owned(Channel::Stderr, err);
        }
        let Some(r) = self.redaction.as_mut() else {
            return (String::new(), text);
        };
        match channel {
            Channel::Stdout => r.stdout.push_owned(text),
            Channel::Stderr => r.stderr.push_owned(text),
            Channel::Header => (String::new(), r.redactor.redact(&text).into_owned()),
        }
    }

    /// The end of a command: the output kept back for redaction goes to the log.
    fn flush_redaction(&mut self) {
        let Some(r) = self.redaction.as_mut() else {
            return;
        };
        let (out, err) = (r.stdout.finish(), r.stderr.finish());
        self.append_owned(Channel::Stdout, out);
        self.append_owned(Channel::Stderr, err);
    }

    /// A whole text (a captured value, a Step's text) with the secrets redacted.
    fn redact_text(&self, text: &str) -> String {
        match &self.redaction {
            Some(r) => r.redactor.redact(text).into_owned(),
            None => text.to_string(),
        }
    }

    /// Note the disk's first failure with these logs (the disk thread logged it).
    fn check_disk(&mut self) {
        if self.error.is_none() {
            if let Some(e) = self.group.error() {
                self.error = Some(format!("cannot write the log: {e}"));
            }
        }
    }

    async fn write_extra(&mut self, inner: &Inner, name: &str, text: &str) {
        if !self.extra.contains_key(name) {
            let rel = log_rel_path(
                &self.builder,
                self.number,
                self.step_number,
                &self.step_name,
                name,
            );
            let w = AsyncLog::new(&inner.disk, &self.group, &inner.basedir.join(&rel));
            match inner.db.add_log(self.step_id, name, &rel).await {
                Ok(id) => {
                    self.extra.insert(name.to_string(), (w, id));
                }
                Err(e) => {
                    tracing::error!("{} build {}: {e}", self.builder, self.number);
                    return;
                }
            }
        }
        let text = match &self.redaction {
            Some(r) => r.redactor.redact(text),
            None => std::borrow::Cow::Borrowed(text),
        };
        if let Some((w, _)) = self.extra.get_mut(name) {
            w.append(Channel::Stdout, text.as_bytes());
        }
    }

    /// Flush and announce the logs every [`FLUSH_EVERY`]; record sizes every
    /// [`RECORD_EVERY`].
    async fn tick(&mut self, inner: &Inner) {
        let now = Instant::now();
        if now.duration_since(self.last_flush) < FLUSH_EVERY {
            return;
        }
        self.last_flush = now;
        self.dirty = false;
        self.stdio.flush();
        self.check_disk();
        inner.emit(EngineEvent::LogAppended {
            builder: self.builder.clone(),
            number: self.number,
            step: self.step_number,
            log: "stdio".into(),
            size: self.stdio.size(),
            lines: self.stdio.lines(),
        });
        if now.duration_since(self.last_record) >= RECORD_EVERY {
            self.last_record = now;
            if let Err(e) = inner
                .db
                .update_log(self.stdio_id, self.stdio.size(), self.stdio.lines(), false)
                .await
            {
                tracing::warn!("{} build {}: {e}", self.builder, self.number);
            }
        }
    }

    /// Flush everything and wait until the disk has stored it (a slow disk holds
    /// up this Step only); `(log id, size, lines)` of every log. A stopped Build
    /// (or a master shutting down) waits at most [`ABANDON_AFTER`] for a disk that
    /// hangs: a stop always ends the Build, its logs are completed when the disk
    /// comes back.
    async fn close(&mut self, stop: &mut watch::Receiver<Option<Stop>>) -> Vec<(i64, u64, u64)> {
        self.stdio.finish();
        let mut out = vec![(self.stdio_id, self.stdio.size(), self.stdio.lines())];
        for (w, id) in self.extra.values_mut() {
            w.finish();
            out.push((*id, w.size(), w.lines()));
        }
        let settled = self.group.clone().settled();
        let give_up = async {
            let _ = stop.wait_for(|s| s.is_some()).await;
            tokio::time::sleep(ABANDON_AFTER).await;
        };
        tokio::select! {
            _ = settled => {}
            _ = give_up => tracing::warn!(
                "{} build {}: the log disk has not stored step {}'s logs {} s after the stop; \
                 its end is recorded anyway",
                self.builder,
                self.number,
                self.step_name,
                ABANDON_AFTER.as_secs()
            ),
        }
        self.check_disk();
        out
    }
}

/// The Build's own locks (the factory's `locks`): taken by its first Step, held
/// until the Build ends.
struct BuildLocks {
    wants: Vec<LockWant>,
    held: Option<LockGuard>,
}

/// The locks `names` name for a Build on `slave`, as the configuration in force
/// says; names it no longer has (a reconfig removed them) are logged and skipped.
fn lock_wants(inner: &Inner, names: &[String], slave: &str, whose: &str) -> Vec<LockWant> {
    if names.is_empty() {
        return Vec::new();
    }
    let config = inner.config.borrow().clone();
    let (wants, unknown) = locks::resolve(&config.locks, names, slave);
    for name in unknown {
        tracing::warn!("{whose}: no [lock:{name}] in master.ini any more; not taking it");
    }
    wants
}

/// `lock A` or `locks A, B`.
fn lock_words(names: &[String]) -> String {
    match names {
        [one] => format!("lock {one}"),
        _ => format!("locks {}", names.join(", ")),
    }
}

/// What a Step came to.
struct StepEnd {
    result: StepResult,
    text: String,
    interruption: Interruption,
}

/// Run the Build to its end and record it. Returns whether its requests were given
/// back to the queue.
pub(crate) async fn run(mut ctx: BuildContext) -> bool {
    let builder = ctx.claimed.builder.clone();
    let number = ctx.claimed.number;
    let build_id = ctx.claimed.build_id;
    let inner = ctx.inner.clone();
    inner.emit(EngineEvent::BuildStarted {
        builder: builder.clone(),
        number,
        slave: ctx.slave.name().to_string(),
    });
    tracing::info!(
        "{builder} build {number} started on {} ({})",
        ctx.slave.name(),
        ctx.claimed.reason
    );

    let factory_props =
        crate::factory::build_properties(&ctx.factory.recipe(), ctx.slave_cfg.os.as_str());
    let recorded = initial_properties(&ctx.claimed, &factory_props, ctx.slave.name());
    let mut props = Properties::new();
    for (name, value, _) in &recorded {
        props.insert(name.clone(), value.clone());
    }
    if ctx.claimed.first_step.is_some() {
        // Recorded with the first Step, in the claim's transaction.
    } else if ctx.steps.is_empty() {
        if let Err(e) = inner.db.set_build_properties(build_id, recorded).await {
            tracing::error!("{builder} build {number}: {e}");
        }
    } else {
        ctx.pending_props = recorded;
    }

    let mut result = BuildResult::new();
    let mut failed_steps: Vec<String> = Vec::new();
    let mut warned_steps: Vec<String> = Vec::new();
    let mut end: Interruption = Interruption::None;
    let mut exception_text: Option<String> = None;
    let steps = std::mem::take(&mut ctx.steps);
    let mut build_locks = BuildLocks {
        wants: lock_wants(
            &inner,
            &ctx.factory.locks,
            ctx.slave.name(),
            &format!("{builder} build {number}"),
        ),
        held: None,
    };
    // A Step halted the Build: only the `artifacts` Step still runs.
    let mut halted = false;
    let mut ran: i64 = 0;
    for (i, spec) in steps.iter().enumerate() {
        if halted && !matches!(spec.kind, StepKind::Artifacts { .. }) {
            continue;
        }
        // A first Step recorded with the claim runs even if a stop came in
        // between: its command sees the stop at once and is interrupted, so the
        // Step ends like any stopped one.
        let recorded = i == 0 && ctx.claimed.first_step.is_some();
        if let Some(stop) = ctx.stop.borrow().clone().filter(|_| !recorded) {
            end = Interruption::Stopped(stop);
            break;
        }
        ran += 1;
        let step_number = ran;
        let last = i + 1 == steps.len();
        let step = run_step(
            &mut ctx,
            &mut props,
            spec,
            step_number,
            last,
            &mut build_locks,
        )
        .await;
        match step.result {
            StepResult::Failure => failed_steps.push(spec.name.clone()),
            StepResult::Warnings => warned_steps.push(spec.name.clone()),
            StepResult::Exception if exception_text.is_none() => {
                exception_text = Some(step.text.clone())
            }
            _ => {}
        }
        let go_on = result.step_done(step.result, spec.flags);
        if step.interruption != Interruption::None {
            end = step.interruption;
            break;
        }
        if let Some(stop) = ctx.stop.borrow().clone() {
            end = Interruption::Stopped(stop);
            break;
        }
        if !go_on {
            halted = true;
        }
    }
    // The Build's locks go as soon as its last Step has ended.
    drop(build_locks);

    let (final_result, text, requeue) = match &end {
        Interruption::SlaveLost(why) => (
            Some(StepResult::Exception),
            format!("slave lost: {why}"),
            true,
        ),
        Interruption::Stopped(Stop::Shutdown { text }) => {
            (Some(StepResult::Exception), text.clone(), true)
        }
        // Buildbot's CANCELLED: not a failure, whatever the stopped Step ended with.
        Interruption::Stopped(Stop::User { text }) => (None, text.clone(), false),
        Interruption::None => {
            let r = result.result();
            let text = match r {
                StepResult::Success | StepResult::Skipped => "build successful".to_string(),
                StepResult::Warnings => format!(
                    "warnings {}",
                    warned_or_failed(&warned_steps, &failed_steps)
                ),
                StepResult::Failure => format!("failed {}", failed_steps.join(" ")),
                StepResult::Exception => exception_text.unwrap_or_else(|| "exception".into()),
            };
            (Some(r), text.trim().to_string(), false)
        }
    };
    // `None`: an operator's stop.
    let final_result = final_result.map_or(CANCELLED, StepResult::as_str);
    let (last, last_event) = match ctx.pending_finish.take() {
        Some((f, ev)) => (Some(f), Some(ev)),
        None => (None, None),
    };
    // The end time is taken before the slave is handed on, so a next Build on it
    // never starts before this one ended.
    let finished_at = ctx.released_at.unwrap_or_else(crate::calendar::now_f64);
    inner.release_slave(build_id);
    // Let the dispatcher, just woken, claim the slave's next BuildRequest and
    // start it first: recording this end can wait while that Build's command runs.
    tokio::task::yield_now().await;
    let finished = inner
        .db
        .finish_build(build_id, final_result, &text, requeue, finished_at, last)
        .await;
    announce_finish(&inner, last_event, finished.is_ok());
    let completed = match finished {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{builder} build {number}: cannot record its end: {e}");
            Default::default()
        }
    };
    tracing::info!(
        "{builder} build {number} finished: {final_result} ({text}){}",
        if requeue {
            "; its requests run again"
        } else {
            ""
        }
    );
    inner.emit(EngineEvent::BuildFinished {
        builder,
        number,
        result: final_result.to_string(),
        text,
        requeued: requeue,
    });
    for id in completed.requests {
        inner.emit(EngineEvent::RequestComplete {
            request_id: id,
            result: final_result.to_string(),
        });
    }
    for (id, r) in completed.failed_buildsets {
        inner.emit(EngineEvent::BuildSetFailed {
            buildset_id: id,
            result: r,
        });
    }
    for (id, r) in completed.buildsets {
        inner.emit(EngineEvent::BuildSetComplete {
            buildset_id: id,
            result: r,
        });
    }
    requeue
}

/// What a Step shows while it runs: its `description`, else its name.
fn step_description(spec: &StepSpec) -> String {
    if spec.description.is_empty() {
        spec.name.clone()
    } else {
        spec.description.join(" ")
    }
}

/// A Build's properties as it starts, `(name, value, source)`, later ones winning:
/// the BuildSet's, the factory's (`factory::build_properties`), then `branch`, `revision`, `got_revision`
/// (empty until a checkout), `buildername`, `buildnumber` and `slavename`.
pub(crate) fn initial_properties(
    claimed: &ClaimedBuild,
    factory_props: &BTreeMap<String, String>,
    slave: &str,
) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    let mut set = |name: &str, value: String, source: &str| {
        out.push((name.to_string(), value, source.to_string()));
    };
    for (k, v) in &claimed.properties {
        set(k, v.clone(), "BuildSet");
    }
    for (k, v) in factory_props {
        set(k, v.clone(), "Factory");
    }
    set(
        "branch",
        claimed.branch.clone().unwrap_or_default(),
        "Build",
    );
    set(
        "revision",
        claimed.revision.clone().unwrap_or_default(),
        "Build",
    );
    set("got_revision", String::new(), "Build");
    set("buildername", claimed.builder.clone(), "Builder");
    set("buildnumber", claimed.number.to_string(), "Build");
    set("slavename", slave.to_string(), "BuildSlave");
    out
}

/// Whether a Build's first Step can be recorded with its claim: it has one, and
/// neither it nor the factory takes locks (a Step waiting for a lock starts out
/// showing so, which only the Build itself can tell).
pub(crate) fn first_step_recordable(factory: &FactoryConfig, steps: &[StepSpec]) -> bool {
    factory.locks.is_empty() && steps.first().is_some_and(|s| s.locks.is_empty())
}

/// The start of a Build's first Step as recorded with the claim
/// ([`first_step_recordable`]): the same row `run_step` would write.
pub(crate) fn first_step_start(
    claimed: &ClaimedBuild,
    spec: &StepSpec,
    factory_props: &BTreeMap<String, String>,
    slave: &str,
    at: f64,
) -> StepStart {
    StepStart {
        number: 1,
        name: spec.name.clone(),
        description: step_description(spec),
        log_path: log_rel_path(&claimed.builder, claimed.number, 1, &spec.name, "stdio"),
        at,
        props: initial_properties(claimed, factory_props, slave),
    }
}

fn warned_or_failed(warned: &[String], failed: &[String]) -> String {
    warned
        .iter()
        .chain(failed.iter())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The slave-side path of a workdir: relative ones are under the builder's
/// directory, absolute ones (a virtualenv path a SetProperty found) stay.
fn slave_path(builder_dir: &str, workdir: &str) -> String {
    if workdir.starts_with('/') || workdir.is_empty() {
        if workdir.is_empty() {
            return builder_dir.to_string();
        }
        return workdir.to_string();
    }
    format!("{}/{}", builder_dir.trim_end_matches('/'), workdir)
}

async fn run_step(
    ctx: &mut BuildContext,
    props: &mut Properties,
    spec: &StepSpec,
    step_number: i64,
    last: bool,
    build_locks: &mut BuildLocks,
) -> StepEnd {
    let inner = ctx.inner.clone();
    let builder = ctx.claimed.builder.clone();
    let number = ctx.claimed.number;
    let rel = log_rel_path(&builder, number, step_number, &spec.name, "stdio");
    let description = step_description(spec);
    // Whatever locks are free are taken now; if some are not, the Step starts
    // out as "waiting for lock NAME".
    let step_wants: Vec<LockWant> = lock_wants(
        &inner,
        &spec.locks,
        ctx.slave.name(),
        &format!("{builder} build {number} step {}", spec.name),
    )
    .into_iter()
    .filter(|w| !build_locks.wants.iter().any(|b| b.key == w.key))
    .collect();
    let mut step_held: Option<LockGuard> = None;
    let busy = try_locks(&inner, build_locks, &step_wants, &mut step_held);
    let shown = if busy.is_empty() {
        description.clone()
    } else {
        format!("waiting for {}", lock_words(&busy))
    };
    // Its files are made with its first bytes, on the log disk's thread.
    let group = LogGroup::new();
    let stdio = AsyncLog::new(&inner.disk, &group, &inner.basedir.join(&rel));
    let recorded = if step_number == 1 {
        ctx.claimed.first_step.take()
    } else {
        None
    };
    let started_step = match recorded {
        // Recorded with the Build's claim (`first_step_start`).
        Some(ids) => Ok(ids),
        None => {
            let (prev, prev_event) = match ctx.pending_finish.take() {
                Some((f, ev)) => (Some(f), Some(ev)),
                None => (None, None),
            };
            let start = StepStart {
                number: step_number,
                name: spec.name.clone(),
                description: shown,
                log_path: rel.clone(),
                at: crate::calendar::now_f64(),
                props: std::mem::take(&mut ctx.pending_props),
            };
            let started = inner.db.start_step(ctx.claimed.build_id, start, prev).await;
            announce_finish(&inner, prev_event, started.is_ok());
            started
        }
    };
    let (step_id, stdio_id) = match started_step {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(
                "{builder} build {number}: cannot record step {}: {e}",
                spec.name
            );
            return StepEnd {
                result: StepResult::Exception,
                text: format!("exception: cannot record the step: {e}"),
                interruption: Interruption::None,
            };
        }
    };
    inner.emit(EngineEvent::StepStarted {
        builder: builder.clone(),
        number,
        step: step_number,
        name: spec.name.clone(),
    });
    let done_words = if spec.description_done.is_empty() {
        vec![spec.name.clone()]
    } else {
        spec.description_done.clone()
    };
    let secrets = inner.config.borrow().secrets.clone();
    let redaction = Redaction::new(&secrets);
    let mut logs = StepLogs {
        builder: builder.clone(),
        number,
        step_number,
        step_name: spec.name.clone(),
        step_id,
        stdio,
        stdio_id,
        extra: HashMap::new(),
        group,
        scanner: step_scanner(spec),
        last_flush: Instant::now(),
        dirty: false,
        last_record: Instant::now(),
        error: None,
        secrets,
        redaction,
    };
    let mut end = match wait_locks(
        ctx,
        &mut logs,
        build_locks,
        &step_wants,
        &mut step_held,
        busy,
        &description,
    )
    .await
    {
        Err(end) => end,
        Ok(notes) => {
            let mut end = step_body(ctx, props, spec, &mut logs, &done_words).await;
            if ctx.stop.borrow().is_some()
                && end.result != StepResult::Success
                && !end.text.ends_with("interrupted")
            {
                end.text.push_str(" interrupted");
            }
            if !notes.is_empty() {
                end.text = format!("{} ({})", end.text, notes.join("; "));
            }
            end
        }
    };
    // The Step's own locks go as soon as its command has ended.
    drop(step_held);
    if last {
        // The Build's last command has ended: its slave may take the next
        // BuildRequest while this Step's logs are being stored.
        ctx.released_at = Some(crate::calendar::now_f64());
        inner.release_slave(ctx.claimed.build_id);
    }
    logs.flush_redaction();
    end.text = logs.redact_text(&end.text);
    let sizes = logs.close(&mut ctx.stop).await;
    if let Some(err) = logs.error.take() {
        if end.result != StepResult::Exception {
            end.result = StepResult::Exception;
            end.text = format!("exception: {err}");
        }
    }
    inner.emit(EngineEvent::LogAppended {
        builder: builder.clone(),
        number,
        step: step_number,
        log: "stdio".into(),
        size: logs.stdio.size(),
        lines: logs.stdio.lines(),
    });
    let counts = logs.scanner.counts();
    finish(ctx, step_id, sizes, step_number, spec, end, counts)
}

/// The step's log scanner, with its `warningPattern` if it has one (checked when
/// the configuration was read; should it fail here all the same, the default
/// formats count and the master's log says why).
fn step_scanner(spec: &StepSpec) -> LogScanner {
    match LogScanner::with_warning_pattern(spec.log_parser, spec.warning_pattern.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("step {}: warningPattern: {e}", spec.name);
            LogScanner::new(spec.log_parser)
        }
    }
}

/// Take, without waiting, the Build's locks if it does not hold them yet, then the
/// Step's own; each set all or nothing. Returns the names of the full locks of
/// the first set that could not be taken (empty: the Step has all it needs).
fn try_locks(
    inner: &Inner,
    build_locks: &mut BuildLocks,
    step_wants: &[LockWant],
    step_held: &mut Option<LockGuard>,
) -> Vec<String> {
    if build_locks.held.is_none() && !build_locks.wants.is_empty() {
        match inner.locks.try_acquire(&build_locks.wants) {
            Ok(g) => build_locks.held = Some(g),
            Err(busy) => return busy,
        }
    }
    if step_held.is_none() && !step_wants.is_empty() {
        match inner.locks.try_acquire(step_wants) {
            Ok(g) => *step_held = Some(g),
            Err(busy) => return busy,
        }
    }
    Vec::new()
}

/// When [`try_locks`] found a lock full (`busy`), wait for the Build's locks and
/// then the Step's, showing the Step as "waiting for lock NAME" and writing how
/// long it waited into its log. Returns the notes for the Step's text, or how the
/// Step ended when the Build was stopped or the slave lost meanwhile.
async fn wait_locks(
    ctx: &mut BuildContext,
    logs: &mut StepLogs,
    build_locks: &mut BuildLocks,
    step_wants: &[LockWant],
    step_held: &mut Option<LockGuard>,
    busy: Vec<String>,
    description: &str,
) -> Result<Vec<String>, StepEnd> {
    if busy.is_empty() {
        return Ok(Vec::new());
    }
    // Shown with the requests that wait for this Build's slave meanwhile.
    let _waiting = super::LockWaitShown::new(&ctx.inner, ctx.claimed.build_id, lock_words(&busy));
    let mut notes = Vec::new();
    let mut first = Some(busy);
    if build_locks.held.is_none() && !build_locks.wants.is_empty() {
        let busy = first.take().unwrap_or_default();
        let (guard, note) = wait_for(ctx, logs, &build_locks.wants, busy, "the build's ").await?;
        build_locks.held = Some(guard);
        notes.push(note);
    }
    if step_held.is_none() && !step_wants.is_empty() {
        let busy = match first.take() {
            Some(busy) => busy,
            None => match ctx.inner.locks.try_acquire(step_wants) {
                Ok(g) => {
                    *step_held = Some(g);
                    Vec::new()
                }
                Err(busy) => {
                    show_description(ctx, logs, &format!("waiting for {}", lock_words(&busy)))
                        .await;
                    busy
                }
            },
        };
        if step_held.is_none() {
            let (guard, note) = wait_for(ctx, logs, step_wants, busy, "").await?;
            *step_held = Some(guard);
            notes.push(note);
        }
    }
    show_description(ctx, logs, description).await;
    logs.tick(&ctx.inner).await;
    Ok(notes)
}

/// Record what a running Step shows.
async fn show_description(ctx: &BuildContext, logs: &StepLogs, description: &str) {
    if let Err(e) = ctx
        .inner
        .db
        .set_step_description(logs.step_id, description)
        .await
    {
        tracing::warn!("{} build {}: {e}", logs.builder, logs.number);
    }
}

/// Wait until `wants` can all be taken, unless the Build is stopped or its slave
/// lost first. `busy`: the locks found full before. `whose`: `""` or
/// `"the build's "`, for the note ("waited 1.2 s for the build's lock A").
async fn wait_for(
    ctx: &mut BuildContext,
    logs: &mut StepLogs,
    wants: &[LockWant],
    busy: Vec<String>,
    whose: &str,
) -> Result<(LockGuard, String), StepEnd> {
    let started = Instant::now();
    let locks = ctx.inner.locks.clone();
    tracing::info!(
        "{} build {}: step {} waits for {}{}",
        logs.builder,
        logs.number,
        logs.step_name,
        whose,
        lock_words(&busy)
    );
    let slave = ctx.slave.clone();
    let waited = tokio::select! {
        biased;
        r = ctx.stop.wait_for(|s| s.is_some()) => {
            // The sender lives as long as the Build is running; gone means the
            // engine is gone: a shutdown.
            let stop = r.ok().and_then(|s| s.clone()).unwrap_or(Stop::Shutdown {
                text: super::SHUTDOWN_TEXT.into(),
            });
            Err(Interruption::Stopped(stop))
        }
        why = slave.closed() => Err(Interruption::SlaveLost(why)),
        got = locks.acquire(wants) => Ok(got),
    };
    match waited {
        Ok((guard, seen)) => {
            let mut names = busy;
            for n in seen {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            names.sort();
            let note = format!(
                "waited {:.1} s for {whose}{}",
                started.elapsed().as_secs_f64(),
                lock_words(&names)
            );
            logs.write(Channel::Header, &format!("{note}\n"));
            Ok((guard, note))
        }
        Err(interruption) => {
            let what = format!("{whose}{}", lock_words(&busy));
            let text = match &interruption {
                Interruption::SlaveLost(why) => {
                    logs.write(
                        Channel::Header,
                        &format!("connection to the slave lost while waiting for {what}: {why}\n"),
                    );
                    format!("slave lost while waiting for {what}")
                }
                Interruption::Stopped(stop) => {
                    logs.write(
                        Channel::Header,
                        &format!("{} while waiting for {what}\n", stop.text()),
                    );
                    format!("interrupted while waiting for {what}")
                }
                Interruption::None => String::new(),
            };
            Err(StepEnd {
                result: StepResult::Exception,
                text,
                interruption,
            })
        }
    }
}

/// A Step has ended: its row is written with whatever the Build writes next (the
/// next Step's row, or the Build's end) in one transaction, and its
/// `StepFinished` is announced once that is written.
fn finish(
    ctx: &mut BuildContext,
    step_id: i64,
    sizes: Vec<(i64, u64, u64)>,
    step_number: i64,
    spec: &StepSpec,
    end: StepEnd,
    counts: LogCounts,
) -> StepEnd {
    let record = StepFinish {
        step_id,
        result: end.result.as_str().to_string(),
        text: end.text.clone(),
        warnings: counts.warnings,
        counts: counts.tests.map(|t| TestCounts {
            passed: t.passed,
            failed: t.failed,
            skipped: t.skipped,
            xfailed: t.xfailed,
            xpassed: t.xpassed,
        }),
        logs: sizes,
        at: ctx.released_at.unwrap_or_else(crate::calendar::now_f64),
    };
    let event = EngineEvent::StepFinished {
        builder: ctx.claimed.builder.clone(),
        number: ctx.claimed.number,
        step: step_number,
        name: spec.name.clone(),
        result: end.result.as_str().to_string(),
        text: end.text.clone(),
    };
    ctx.pending_finish = Some((record, event));
    end
}

/// Announce the previous Step's end once it is written (or failed to be).
fn announce_finish(inner: &Inner, event: Option<EngineEvent>, written: bool) {
    if let Some(ev) = event {
        if !written {
            tracing::error!("cannot record the end of a step: {ev:?}");
        }
        inner.emit(ev);
    }
}

/// Runs what the step does; its result and text.
async fn step_body(
    ctx: &mut BuildContext,
    props: &mut Properties,
    spec: &StepSpec,
    logs: &mut StepLogs,
    done_words: &[String],
) -> StepEnd {
    let secrets = logs.secrets.clone();
    let access = if build_is_untrusted(&ctx.claimed.properties) {
        SecretAccess::Denied(UNTRUSTED_WHY)
    } else {
        SecretAccess::Granted(&secrets)
    };
    let step = match interpolate_step_with(spec, props, access) {
        Ok(mut s) => {
            if matches!(
                s.kind,
                StepKind::Shell { .. } | StepKind::SetProperty { .. }
            ) {
                // Every property under its stable name, for scripts to read
                // (what the step's own env sets wins).
                for (k, v) in property_env(props) {
                    s.env.entry(k).or_insert(v);
                }
            }
            s
        }
        Err(e) => {
            logs.write(Channel::Header, &format!("{e}\n"));
            return StepEnd {
                result: StepResult::Exception,
                text: format!("exception: {e}"),
                interruption: Interruption::None,
            };
        }
    };
    let builder_dir = ctx.slave.builder_dir(&ctx.claimed.builder);
    let workdir = slave_path(&builder_dir, &step.workdir);
    match &step.kind {
        StepKind::Shell { command } => {
            let args = shell_args(command, &workdir, &step);
            let end = run_command(ctx, logs, "shell", args, None).await;
            let out = shell_end(end, logs, done_words);
            if logs.scanner.counts_warnings() {
                count_warnings(ctx, props, logs.scanner.warnings()).await;
                // The lines that counted, as Buildbot's Compile step shows them.
                if let Some(lines) = logs.scanner.warning_log() {
                    let inner = ctx.inner.clone();
                    logs.write_extra(&inner, "warnings", &lines).await;
                }
            }
            out
        }
        StepKind::SetProperty { property, command } => {
            let args = shell_args(command, &workdir, &step);
            let mut captured = String::new();
            let end = run_command(ctx, logs, "shell", args, Some(&mut captured)).await;
            let mut out = shell_end(end, logs, done_words);
            if out.result == StepResult::Success || out.result == StepResult::Warnings {
                let value = logs.redact_text(captured.trim());
                logs.write(
                    Channel::Header,
                    &format!("property {property} set to {value:?}\n"),
                );
                let row = vec![(property.clone(), value)];
                set_properties(ctx, props, row, "SetProperty Step").await;
                out.text = format!(
                    "{property}: {}",
                    props.get(property).map(String::as_str).unwrap_or("")
                );
            }
            out
        }
        StepKind::Checkout { .. } => {
            checkout::checkout(ctx, props, &step, logs, &builder_dir, done_words).await
        }
        StepKind::Upload { .. }
        | StepKind::UploadDir { .. }
        | StepKind::Download { .. }
        | StepKind::Artifacts { .. } => {
            transfer::transfer_step(ctx, &step, logs, &builder_dir, &workdir).await
        }
    }
}
