//! The master's retention task (`logHorizon`, `buildHorizon`, `changeHorizon`,
//! `artifactHorizon` and `logCompression` of `[:master:]`), so the disk does not fill without the
//! cron jobs Buildbot's manual asks admins to write.
//!
//! A pass runs at start, then every [`INTERVAL`] and after each reconfig. It
//! works in small batches (one read of the walk, or one short write
//! transaction of at most a few hundred rows, [`crate::db::retention`]), on a
//! thread and runtime of its own at a lower CPU priority, where it also
//! deletes and compresses the files. It yields to work rather than pacing
//! itself at a fixed rate: while the master works ([`crate::activity::WORK`]:
//! an engine event, a Change or a web request within the last [`QUIET`]), it
//! runs at most one batch every [`BUSY_GAP`]; once the master has been quiet
//! that long, it runs at full speed. So a pass over a history of a million
//! Builds never delays a Build or a page, and still ends on a master that is
//! never quiet. It never touches a Build still running, nor one the reporters
//! have not decided on or whose notifications are not sent yet. Each pass
//! logs one INFO line saying what it removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::activity::Work;
use crate::config::{LogCompression, MasterConfig, Retention};
use crate::db::{Db, DbError};

/// Time between passes (a reconfig starts one at once).
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// Rows a walk reads at once.
const WALK: i64 = 500;

/// Builds deleted per write transaction: with their Steps, logs, properties and
/// links, some hundred rows, a millisecond or two of the writer, which is the
/// engine's too. Not fewer: every commit costs each page read after it
/// (each reader connection drops its page cache when the database changed)
/// and grows the WAL by the pages the transaction touched, shared by its
/// Builds: 5 Builds a commit wrote 4 WAL pages per Build, 25 a commit 2.
pub const BUILDS_PER_WRITE: usize = 25;

/// Logs marked deleted per write transaction.
const LOGS_PER_WRITE: usize = 100;

/// How long the master must have done no work ([`crate::activity::WORK`]) for
/// the pass to run at full speed: longer than the gaps between the requests of
/// a page being loaded and between a busy builder's Builds.
pub const QUIET: Duration = Duration::from_millis(500);

/// While the master works, the pass runs at most one batch (a read of its
/// walk or a write) per this long: a commit a second costs the pages read
/// meanwhile (each reader drops its cache after a commit) next to nothing,
/// and a pass still ends on a master that is never quiet (some 20 Builds a
/// second).
pub const BUSY_GAP: Duration = Duration::from_secs(1);

/// Logs compressed per batch.
const COMPRESS_BATCH: i64 = 50;

/// Seconds after its Build finished before a log is compressed: a page still
/// following the log live has seen its end by then.
const COMPRESS_AFTER: f64 = 60.0;

/// Shortest pause between two batches, at full speed: the engine's writes
/// take the writer between two of the pass's.
const MIN_PAUSE: Duration = Duration::from_millis(2);

/// How much lower the retention thread's priority is than the engine's: the
/// lowest there is, below the web's threads (10), so pages come first too.
const RETENTION_NICE: i32 = 19;

/// Seconds in a day, for the horizons given in days.
const DAY: f64 = 86_400.0;

/// What one pass did, for its INFO line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassStats {
    pub logs_deleted: u64,
    pub builds_deleted: u64,
    pub requests_deleted: u64,
    pub buildsets_deleted: u64,
    pub changes_deleted: u64,
    /// Builds whose artifacts were deleted (`artifactHorizon`, or their Build
    /// deleted by `buildHorizon`).
    pub artifact_builds_deleted: u64,
    pub logs_compressed: u64,
    /// Bytes of files deleted (log files of pruned logs and Builds).
    pub bytes_freed: u64,
    /// Bytes of the logs compressed, before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Time the pass waited for the master's work ([`QUIET`], [`BUSY_GAP`]).
    pub yielded: Duration,
}

impl PassStats {
    fn line(&self, took: Duration) -> String {
        format!(
            "retention: deleted {} log file(s) and {} build(s) ({} request(s), {} buildset(s)), {} change(s), the artifacts of {} build(s), {} MB freed; compressed {} log(s) ({} MB to {} MB); in {:.1}s ({:.1}s yielding to work)",
            self.logs_deleted,
            self.builds_deleted,
            self.requests_deleted,
            self.buildsets_deleted,
            self.changes_deleted,
            self.artifact_builds_deleted,
            mb(self.bytes_freed),
            self.logs_compressed,
            mb(self.bytes_before),
            mb(self.bytes_after),
            took.as_secs_f64(),
            self.yielded.as_secs_f64()
        )
    }
}

fn mb(b: u64) -> String {
    format!("{:.1}", b as f64 / 1e6)
}

/// Start the retention task on a thread and runtime of its own; the returned
/// task ends once it has stopped, after `shutdown` became true.
pub fn start(
    db: Db,
    basedir: PathBuf,
    config: watch::Receiver<Arc<MasterConfig>>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let writes = Writes(tokio::runtime::Handle::try_current().ok());
    crate::daemon::spawn_service(
        "retention",
        RETENTION_NICE,
        "nothing is pruned",
        move || run(db, basedir, config, shutdown, writes),
    )
}

/// Where the task's big write transactions run: on the blocking pool of the
/// engine's runtime, at the engine's CPU priority, when there is one. A write
/// holds the database's one writer, which the engine's writes wait for: on
/// the task's own thread, the lowest priority there is, a busy machine (a burst
/// of Builds) would take the CPU from it mid-transaction and the engine would
/// wait for it to get the CPU back. What the task reads, and the files it
/// deletes, stay at its own priority.
#[derive(Clone, Default)]
struct Writes(Option<tokio::runtime::Handle>);

impl Writes {
    async fn run<F, Fut, R>(&self, write: F) -> Result<R, DbError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<R, DbError>>,
        R: Send + 'static,
    {
        match &self.0 {
            Some(engine) => {
                let on = engine.clone();
                engine
                    .spawn_blocking(move || on.block_on(write()))
                    .await
                    .map_err(|e| DbError::Task(e.to_string()))?
            }
            None => write().await,
        }
    }
}

async fn run(
    db: Db,
    basedir: PathBuf,
    mut config: watch::Receiver<Arc<MasterConfig>>,
    mut shutdown: watch::Receiver<bool>,
    writes: Writes,
) {
    loop {
        let retention = config.borrow_and_update().retention;
        if retention.is_active() {
            let started = Instant::now();
            let pace = Pace::new(&crate::activity::WORK, &shutdown);
            match pass_on(&db, &basedir, &retention, pace, &writes).await {
                Ok(stats) => tracing::info!("{}", stats.line(started.elapsed())),
                Err(PassError::Stopping) => {
                    tracing::info!("retention: pass left for the next start (the master stops)")
                }
                Err(e) => tracing::warn!("retention: pass stopped: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            r = config.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|v| *v) => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Why a pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the master is stopping")]
    Stopping,
}

/// When the pass's batches run: before each, [`Pace::turn`] waits while the
/// master works ([`QUIET`]) and the last batch began less than [`BUSY_GAP`]
/// ago, at least [`MIN_PAUSE`] after the last batch ended, and stops the pass
/// when the master stops.
struct Pace<'a> {
    work: &'a Work,
    shutdown: &'a watch::Receiver<bool>,
    /// When the last batch began (the pass's start, before the first).
    began: Instant,
    /// When the last batch ended, if one ran.
    ended: Option<Instant>,
    /// Time spent waiting for the master's work to stop.
    yielded: Duration,
}

impl<'a> Pace<'a> {
    fn new(work: &'a Work, shutdown: &'a watch::Receiver<bool>) -> Pace<'a> {
        Pace {
            work,
            shutdown,
            began: Instant::now(),
            ended: None,
            yielded: Duration::ZERO,
        }
    }

    /// Wait for the next batch's turn.
    async fn turn(&mut self) -> Result<(), PassError> {
        if let Some(ended) = self.ended {
            if let Some(left) = MIN_PAUSE.checked_sub(ended.elapsed()) {
                tokio::time::sleep(left).await;
            }
        }
        loop {
            if *self.shutdown.borrow() {
                return Err(PassError::Stopping);
            }
            let wait = match self.work.idle_for() {
                Some(idle) if idle < QUIET => match BUSY_GAP.checked_sub(self.began.elapsed()) {
                    Some(left) if !left.is_zero() => left.min(QUIET - idle),
                    _ => break,
                },
                _ => break,
            };
            let mut stop = self.shutdown.clone();
            let waited = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Ok(_) = stop.wait_for(|v| *v) => return Err(PassError::Stopping),
            }
            self.yielded += waited.elapsed();
        }
        self.began = Instant::now();
        Ok(())
    }

    /// The batch [`Pace::turn`] let run has ended.
    fn done(&mut self) {
        self.ended = Some(Instant::now());
    }
}

/// One pass at full speed: logs past `logHorizon`, Builds past
/// `buildHorizon`, Changes past `changeHorizon`, then the finished logs left
/// to compress.
pub async fn pass(
    db: &Db,
    basedir: &Path,
    retention: &Retention,
    shutdown: &watch::Receiver<bool>,
) -> Result<PassStats, PassError> {
    pass_beside(db, basedir, retention, shutdown, &Work::new()).await
}

/// [`pass`], yielding to the work `work` records as the master's task does
/// (with [`crate::activity::WORK`]): while work happened within [`QUIET`], at
/// most one batch per [`BUSY_GAP`].
pub async fn pass_beside(
    db: &Db,
    basedir: &Path,
    retention: &Retention,
    shutdown: &watch::Receiver<bool>,
    work: &Work,
) -> Result<PassStats, PassError> {
    pass_on(
        db,
        basedir,
        retention,
        Pace::new(work, shutdown),
        &Writes::default(),
    )
    .await
}

/// [`pass`], its batches run when `pace` says, its big writes by `writes`.
async fn pass_on(
    db: &Db,
    basedir: &Path,
    retention: &Retention,
    mut pace: Pace<'_>,
    writes: &Writes,
) -> Result<PassStats, PassError> {
    let mut stats = PassStats::default();
    let now = crate::calendar::now_f64();
    let pace = &mut pace;
    let result = async {
        if let Some(days) = retention.build_horizon {
            prune_builds(db, basedir, now - days * DAY, pace, writes, &mut stats).await?;
        }
        if let Some(days) = retention.log_horizon {
            prune_logs(db, basedir, now - days * DAY, pace, writes, &mut stats).await?;
        }
        if let Some(days) = retention.change_horizon {
            prune_changes(db, now - days * DAY, pace, &mut stats).await?;
        }
        if retention.artifact_horizon.is_some() || retention.build_horizon.is_some() {
            // Without artifactHorizon only the artifacts of deleted Builds go.
            let cutoff = retention
                .artifact_horizon
                .map_or(f64::NEG_INFINITY, |days| now - days * DAY);
            prune_artifacts(db, basedir, cutoff, pace, &mut stats).await?;
        }
        if retention.log_compression == LogCompression::Zstd {
            compress_logs(db, basedir, now - COMPRESS_AFTER, pace, &mut stats).await?;
        }
        Ok::<(), PassError>(())
    }
    .await;
    stats.yielded = pace.yielded;
    result.map(|()| stats)
}

/// Delete the files of logs whose Build finished before `cutoff`; their rows
/// are marked deleted first, so a page never finds a row without its file.
async fn prune_logs(
    db: &Db,
    basedir: &Path,
    cutoff: f64,
    pace: &mut Pace<'_>,
    writes: &Writes,
    stats: &mut PassStats,
) -> Result<(), PassError> {
    let mut cursor = (0, 0);
    loop {
        pace.turn().await?;
        let logs = db.kept_logs_after(cursor, WALK).await?;
        pace.done();
        let Some(last) = logs.last() else {
            return Ok(());
        };
        cursor = (last.step, last.id);
        let full = logs.len() as i64 == WALK;
        let mut old = Vec::new();
        let mut done = !full;
        for l in logs {
            if l.build_started >= cutoff {
                // Builds (and their Steps) start in id order: the rest is newer.
                done = true;
                break;
            }
            if l.build_finished.is_some_and(|f| f < cutoff) {
                old.push(l);
            }
        }
        for chunk in old.chunks(LOGS_PER_WRITE) {
            pace.turn().await?;
            let write = Instant::now();
            let (db2, ids) = (db.clone(), chunk.iter().map(|l| l.id).collect());
            writes
                .run(move || async move { db2.mark_logs_deleted(ids).await })
                .await?;
            tracing::debug!(
                "retention: marked {} log(s) deleted in {:.2} ms",
                chunk.len(),
                write.elapsed().as_secs_f64() * 1e3
            );
            for l in chunk {
                stats.bytes_freed += remove_files(basedir, &l.path);
            }
            stats.logs_deleted += chunk.len() as u64;
            pace.done();
        }
        if done {
            return Ok(());
        }
    }
}

/// Delete the artifacts of Builds finished before `cutoff` (or whose Build is
/// gone): their rows first, so a page never lists a file that is not there,
/// then their directory `MASTERDIR/artifacts/BUILDER/N`.
async fn prune_artifacts(
    db: &Db,
    basedir: &Path,
    cutoff: f64,
    pace: &mut Pace<'_>,
    stats: &mut PassStats,
) -> Result<(), PassError> {
    let store = crate::engine::artifacts::ArtifactStore::new(basedir);
    loop {
        pace.turn().await?;
        let builds = db
            .expired_artifact_builds(cutoff, BUILDS_PER_WRITE as i64)
            .await?;
        pace.done();
        if builds.is_empty() {
            return Ok(());
        }
        pace.turn().await?;
        db.delete_artifacts(builds.iter().map(|b| b.build_id).collect())
            .await?;
        for b in &builds {
            match store.remove_build(&b.builder, b.number) {
                Ok(n) => stats.bytes_freed += n,
                Err(e) => tracing::warn!(
                    "retention: cannot delete the artifacts of {} build {}: {e}",
                    b.builder,
                    b.number
                ),
            }
        }
        stats.artifact_builds_deleted += builds.len() as u64;
        pace.done();
    }
}

/// Delete the files of a log in every form; the bytes freed.
fn remove_files(basedir: &Path, rel: &str) -> u64 {
    let p = basedir.join(rel);
    match crate::logstore::remove_log_files(&p) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("retention: cannot delete {}: {e}", p.display());
            0
        }
    }
}

/// Delete Builds finished before `cutoff` that the reporters are done with,
/// but for each builder's newest Build (build numbers are never reused).
async fn prune_builds(
    db: &Db,
    basedir: &Path,
    cutoff: f64,
    pace: &mut Pace<'_>,
    writes: &Writes,
    stats: &mut PassStats,
) -> Result<(), PassError> {
    let mut cursor = 0;
    loop {
        pace.turn().await?;
        let batch = Instant::now();
        let builds = db.old_builds_after(cursor, WALK / 5).await?;
        let read = batch.elapsed();
        pace.done();
        tracing::debug!(
            "retention: read {} build(s) in {:.2} ms",
            builds.len(),
            read.as_secs_f64() * 1e3
        );
        let Some(last) = builds.last() else {
            return Ok(());
        };
        cursor = last.id;
        let mut done = (builds.len() as i64) < WALK / 5;
        let mut old = Vec::new();
        for b in builds {
            if b.started_at >= cutoff {
                done = true;
                break;
            }
            if b.reporters_done && !b.newest && b.finished_at.is_some_and(|f| f < cutoff) {
                old.push(b.id);
            }
        }
        for ids in old.chunks(BUILDS_PER_WRITE) {
            pace.turn().await?;
            let write = Instant::now();
            let (db2, ids) = (db.clone(), ids.to_vec());
            let removed = writes
                .run(move || async move { db2.delete_builds(ids).await })
                .await?;
            tracing::debug!(
                "retention: a write deleted {} build(s) in {:.2} ms",
                removed.builds,
                write.elapsed().as_secs_f64() * 1e3
            );
            stats.builds_deleted += removed.builds;
            stats.requests_deleted += removed.requests;
            stats.buildsets_deleted += removed.buildsets;
            for p in &removed.log_paths {
                stats.bytes_freed += remove_files(basedir, p);
            }
            pace.done();
        }
        if done {
            return Ok(());
        }
    }
}

/// Delete Changes committed before `cutoff` that nothing refers to any more.
/// Commit times are not in id order: the walk stops at a whole batch newer
/// than the cutoff.
async fn prune_changes(
    db: &Db,
    cutoff: f64,
    pace: &mut Pace<'_>,
    stats: &mut PassStats,
) -> Result<(), PassError> {
    let mut cursor = 0;
    loop {
        pace.turn().await?;
        let changes = db.old_changes_after(cursor, WALK).await?;
        pace.done();
        let Some(last) = changes.last() else {
            return Ok(());
        };
        cursor = last.id;
        let full = changes.len() as i64 == WALK;
        let all_new = changes.iter().all(|c| c.when_ts as f64 >= cutoff);
        let old: Vec<i64> = changes
            .iter()
            .filter(|c| (c.when_ts as f64) < cutoff && !c.referenced)
            .map(|c| c.id)
            .collect();
        if !old.is_empty() {
            pace.turn().await?;
            stats.changes_deleted += db.delete_changes(old).await?;
            pace.done();
        }
        if !full || all_new {
            return Ok(());
        }
    }
}

/// Compress the complete logs of Builds finished before `before`, a batch at a
/// time: each file is written as `NAME.log.zst`, the batch recorded, then the
/// plain files removed.
async fn compress_logs(
    db: &Db,
    basedir: &Path,
    before: f64,
    pace: &mut Pace<'_>,
    stats: &mut PassStats,
) -> Result<(), PassError> {
    let mut cursor = 0;
    loop {
        pace.turn().await?;
        let logs = db.logs_to_compress(cursor, before, COMPRESS_BATCH).await?;
        let Some((last, _)) = logs.last() else {
            return Ok(());
        };
        cursor = *last;
        let full = logs.len() as i64 == COMPRESS_BATCH;
        let mut done = Vec::new();
        for (id, rel) in logs {
            let p = basedir.join(&rel);
            match crate::logstore::compress_log(&p) {
                Ok((before, after)) => {
                    stats.bytes_before += before;
                    stats.bytes_after += after;
                    done.push((id, p));
                }
                // Compressed already (by a pass that stopped before recording it).
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && crate::logstore::compressed_path(&p).exists() =>
                {
                    done.push((id, p))
                }
                Err(e) => tracing::warn!("retention: cannot compress {}: {e}", p.display()),
            }
        }
        pace.done();
        if !done.is_empty() {
            pace.turn().await?;
            db.mark_logs_compressed(done.iter().map(|(id, _)| *id).collect())
                .await?;
            for (_, p) in &done {
                if let Err(e) = crate::logstore::remove_plain(p) {
                    tracing::warn!("retention: cannot delete {}: {e}", p.display());
                }
            }
            stats.logs_compressed += done.len() as u64;
            pace.done();
        }
        if !full {
            return Ok(());
        }
    }
}
