//! The master's retention task (`logHorizon`, `buildHorizon`, `changeHorizon`,
//! `artifactHorizon` and `logCompression` of `[:master:]`), so the disk does not fill without the
//! cron jobs Buildbot's manual asks admins to write.
//!
//! A pass runs at start, then every [`INTERVAL`] and after each reconfig. It
//! works in small batches (one short write transaction of at most a few hundred
//! rows each, [`crate::db::retention`]), pausing between batches three times
//! as long as the batch took and at least 50 ms between two writes (each
//! commit costs the pages read after it), on a thread and runtime of its own
//! at a lower CPU priority, where it also deletes and compresses the files: a
//! pass over a
//! history of a million Builds never delays a Build or a page. It never
//! touches a Build still running, nor one the reporters have not decided on or
//! whose notifications are not sent yet. Each pass logs one INFO line saying
//! what it removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

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
const BUILDS_PER_WRITE: usize = 25;

/// Logs marked deleted per write transaction.
const LOGS_PER_WRITE: usize = 100;

/// Shortest time between two of the task's write transactions: at most 20
/// commits a second, so that the pages read meanwhile (a waterfall reads a few
/// thousand) rarely come after one, and the WAL grows slowly. With
/// [`BUILDS_PER_WRITE`], a pass deletes at most 500 Builds a second.
const WRITE_GAP: Duration = Duration::from_millis(50);

/// Logs compressed per batch.
const COMPRESS_BATCH: i64 = 50;

/// Seconds after its Build finished before a log is compressed: a page still
/// following the log live has seen its end by then.
const COMPRESS_AFTER: f64 = 60.0;

/// Shortest pause between two batches.
const MIN_PAUSE: Duration = Duration::from_millis(2);

/// How much lower the retention thread's priority is than the engine's: the
/// lowest there is, below the web's threads (10), so pages come first too.
const RETENTION_NICE: i32 = 19;

/// Pause after each batch, as a multiple of the time the batch took: the task
/// takes at most a quarter of the time it shares with the rest (and with
/// [`WRITE_GAP`], some percent of it).
const PAUSE_FACTOR: u32 = 3;

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
}

impl PassStats {
    fn line(&self, took: Duration) -> String {
        format!(
            "retention: deleted {} log file(s) and {} build(s) ({} request(s), {} buildset(s)), {} change(s), the artifacts of {} build(s), {} MB freed; compressed {} log(s) ({} MB to {} MB); in {:.1}s",
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
            took.as_secs_f64()
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
            match pass_on(&db, &basedir, &retention, &shutdown, &writes).await {
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

/// Between two batches: a pause of [`PAUSE_FACTOR`] times what the batch
/// took (`took`), at least `least`, and a stop when the master stops.
async fn pause(
    took: Duration,
    least: Duration,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), PassError> {
    if *shutdown.borrow() {
        return Err(PassError::Stopping);
    }
    tokio::time::sleep((took * PAUSE_FACTOR).max(least)).await;
    if *shutdown.borrow() {
        return Err(PassError::Stopping);
    }
    Ok(())
}

/// One pass: logs past `logHorizon`, Builds past `buildHorizon`, Changes past
/// `changeHorizon`, then the finished logs left to compress.
pub async fn pass(
    db: &Db,
    basedir: &Path,
    retention: &Retention,
    shutdown: &watch::Receiver<bool>,
) -> Result<PassStats, PassError> {
    pass_on(db, basedir, retention, shutdown, &Writes::default()).await
}

/// [`pass`], its big writes run by `writes`.
async fn pass_on(
    db: &Db,
    basedir: &Path,
    retention: &Retention,
    shutdown: &watch::Receiver<bool>,
    writes: &Writes,
) -> Result<PassStats, PassError> {
    let mut stats = PassStats::default();
    let now = crate::calendar::now_f64();
    if let Some(days) = retention.build_horizon {
        prune_builds(db, basedir, now - days * DAY, shutdown, writes, &mut stats).await?;
    }
    if let Some(days) = retention.log_horizon {
        prune_logs(db, basedir, now - days * DAY, shutdown, writes, &mut stats).await?;
    }
    if let Some(days) = retention.change_horizon {
        prune_changes(db, now - days * DAY, shutdown, &mut stats).await?;
    }
    if retention.artifact_horizon.is_some() || retention.build_horizon.is_some() {
        // Without artifactHorizon only the artifacts of deleted Builds go.
        let cutoff = retention
            .artifact_horizon
            .map_or(f64::NEG_INFINITY, |days| now - days * DAY);
        prune_artifacts(db, basedir, cutoff, shutdown, &mut stats).await?;
    }
    if retention.log_compression == LogCompression::Zstd {
        compress_logs(db, basedir, now - COMPRESS_AFTER, shutdown, &mut stats).await?;
    }
    Ok(stats)
}

/// Delete the files of logs whose Build finished before `cutoff`; their rows
/// are marked deleted first, so a page never finds a row without its file.
async fn prune_logs(
    db: &Db,
    basedir: &Path,
    cutoff: f64,
    shutdown: &watch::Receiver<bool>,
    writes: &Writes,
    stats: &mut PassStats,
) -> Result<(), PassError> {
    let mut cursor = (0, 0);
    loop {
        let batch = Instant::now();
        let logs = db.kept_logs_after(cursor, WALK).await?;
        let read = batch.elapsed();
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
            pause(write.elapsed(), WRITE_GAP, shutdown).await?;
        }
        if done {
            return Ok(());
        }
        // The walk's read alone: the writes above had their pauses.
        pause(read, MIN_PAUSE, shutdown).await?;
    }
}

/// Delete the artifacts of Builds finished before `cutoff` (or whose Build is
/// gone): their rows first, so a page never lists a file that is not there,
/// then their directory `MASTERDIR/artifacts/BUILDER/N`.
async fn prune_artifacts(
    db: &Db,
    basedir: &Path,
    cutoff: f64,
    shutdown: &watch::Receiver<bool>,
    stats: &mut PassStats,
) -> Result<(), PassError> {
    let store = crate::engine::artifacts::ArtifactStore::new(basedir);
    loop {
        let batch = Instant::now();
        let builds = db
            .expired_artifact_builds(cutoff, BUILDS_PER_WRITE as i64)
            .await?;
        if builds.is_empty() {
            return Ok(());
        }
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
        pause(batch.elapsed(), MIN_PAUSE, shutdown).await?;
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
    shutdown: &watch::Receiver<bool>,
    writes: &Writes,
    stats: &mut PassStats,
) -> Result<(), PassError> {
    let mut cursor = 0;
    loop {
        let batch = Instant::now();
        let builds = db.old_builds_after(cursor, WALK / 5).await?;
        let read = batch.elapsed();
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
            pause(write.elapsed(), WRITE_GAP, shutdown).await?;
        }
        if done {
            return Ok(());
        }
        pause(read, MIN_PAUSE, shutdown).await?;
    }
}

/// Delete Changes committed before `cutoff` that nothing refers to any more.
/// Commit times are not in id order: the walk stops at a whole batch newer
/// than the cutoff.
async fn prune_changes(
    db: &Db,
    cutoff: f64,
    shutdown: &watch::Receiver<bool>,
    stats: &mut PassStats,
) -> Result<(), PassError> {
    let mut cursor = 0;
    loop {
        let batch = Instant::now();
        let changes = db.old_changes_after(cursor, WALK).await?;
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
            stats.changes_deleted += db.delete_changes(old).await?;
        }
        if !full || all_new {
            return Ok(());
        }
        pause(batch.elapsed(), MIN_PAUSE, shutdown).await?;
    }
}

/// Compress the complete logs of Builds finished before `before`, a batch at a
/// time: each file is written as `NAME.log.zst`, the batch recorded, then the
/// plain files removed.
async fn compress_logs(
    db: &Db,
    basedir: &Path,
    before: f64,
    shutdown: &watch::Receiver<bool>,
    stats: &mut PassStats,
) -> Result<(), PassError> {
    let mut cursor = 0;
    loop {
        let batch = Instant::now();
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
        if !done.is_empty() {
            db.mark_logs_compressed(done.iter().map(|(id, _)| *id).collect())
                .await?;
            for (_, p) in &done {
                if let Err(e) = crate::logstore::remove_plain(p) {
                    tracing::warn!("retention: cannot delete {}: {e}", p.display());
                }
            }
            stats.logs_compressed += done.len() as u64;
        }
        if !full {
            return Ok(());
        }
        pause(batch.elapsed(), MIN_PAUSE, shutdown).await?;
    }
}
