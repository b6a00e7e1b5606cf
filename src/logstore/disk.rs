//! The log writer thread: the engine's step logs ([`AsyncLog`]) are created and
//! written by one thread of their own ([`LogDisk`]), in the order asked, so a slow
//! or hung disk holds up only the Builds that wait for their logs to be stored
//! ([`LogGroup::settled`]), and a Step takes no more of the slave's output while
//! [`IN_FLIGHT`] bytes of it wait for the disk.

use super::*;

/// Bytes of a Step's logs handed to the [`LogDisk`] thread and not yet written
/// beyond which the Build takes no more of the slave's output
/// ([`LogGroup::room`]): the slave's link then fills up and the slave waits, so
/// a slave printing faster than the disk stores costs the master at most this
/// much (plus the link's own bounded queue).
pub const IN_FLIGHT: usize = 4 * BUFFER;

/// The thread that creates and writes the master's step logs, in the order they
/// are asked for: a disk that is slow or hangs then holds up only the Builds
/// waiting for their logs to be stored ([`LogGroup::settled`]), never the
/// runtime that serves the slaves' links and the engine. Cheap to clone; the
/// thread ends once every clone (and every [`AsyncLog`]) is gone, after the work
/// already asked for.
#[derive(Clone)]
pub struct LogDisk {
    /// `None`: no thread could be started; the work is done by the caller.
    jobs: Option<std::sync::mpsc::Sender<Job>>,
}

/// One piece of disk work for one log.
struct Job {
    group: Arc<LogGroup>,
    path: Arc<PathBuf>,
    files: Arc<std::sync::Mutex<LogFiles>>,
    op: Op,
}

enum Op {
    Open {
        runs: bool,
    },
    /// Append, creating the files first if needed; with `close`, close them after
    /// (on the disk thread: closing a file can wait for the disk too).
    Write {
        chunk: Chunk,
        close: bool,
    },
}

impl LogDisk {
    /// Start the thread (or, if the system refuses one, a disk that works inline).
    pub fn start() -> LogDisk {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("log-disk".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    run_job(job);
                }
            });
        match spawned {
            Ok(_) => LogDisk { jobs: Some(tx) },
            Err(e) => {
                tracing::warn!("no thread for the log disk ({e}); logs are written inline");
                LogDisk { jobs: None }
            }
        }
    }

    fn submit(&self, job: Job) {
        job.group.submitted.fetch_add(1, Ordering::SeqCst);
        match &self.jobs {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(job)) = tx.send(job) {
                    run_job(job);
                }
            }
            None => run_job(job),
        }
    }
}

fn run_job(job: Job) {
    let Job {
        group,
        path,
        files,
        op,
    } = job;
    let mut f = files.lock().unwrap_or_else(|p| p.into_inner());
    let failed = group.failed();
    let (written, close) = match &op {
        Op::Write { chunk, close } => (chunk.data.len(), *close),
        Op::Open { .. } => (0, false),
    };
    let r = match op {
        _ if failed => Ok(()),
        Op::Open { runs } => f.open(&path, runs, runs),
        Op::Write { chunk, .. } => f.write(&path, &chunk),
    };
    if close {
        *f = LogFiles::default();
    }
    drop(f);
    if let Err(e) = r {
        tracing::error!("cannot write log {}: {e}", path.display());
        let mut err = group.error.lock().unwrap_or_else(|p| p.into_inner());
        if err.is_none() {
            *err = Some(e.to_string());
        }
    }
    group.in_flight.fetch_sub(written, Ordering::SeqCst);
    group.done.fetch_add(1, Ordering::SeqCst);
    group.progress.notify_waiters();
}

/// The logs of one Step as far as the [`LogDisk`] thread has got with them:
/// bytes handed over and not yet written, work asked for and done, and the first
/// error.
#[derive(Default)]
pub struct LogGroup {
    in_flight: AtomicUsize,
    submitted: AtomicU64,
    done: AtomicU64,
    error: std::sync::Mutex<Option<String>>,
    progress: tokio::sync::Notify,
}

impl LogGroup {
    pub fn new() -> Arc<LogGroup> {
        Arc::new(LogGroup::default())
    }

    fn failed(&self) -> bool {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The first write that failed, if one did.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether less than [`IN_FLIGHT`] bytes wait for the disk.
    pub fn has_room(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) <= IN_FLIGHT
    }

    /// Resolves once less than [`IN_FLIGHT`] bytes wait for the disk.
    pub async fn room(self: Arc<Self>) {
        self.wait(|g| g.has_room()).await
    }

    /// Resolves once everything asked of the disk so far is done.
    pub async fn settled(self: Arc<Self>) {
        self.wait(|g| g.done.load(Ordering::SeqCst) >= g.submitted.load(Ordering::SeqCst))
            .await
    }

    async fn wait(&self, cond: impl Fn(&LogGroup) -> bool) {
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(self) {
                return;
            }
            notified.await;
        }
    }
}

/// An append-only log whose disk work runs on the [`LogDisk`] thread: appends
/// only buffer (and hand full buffers over), so they never wait for the disk.
/// The Step waits instead, for room ([`LogGroup::room`]) before it takes more
/// output and for its logs to be stored ([`LogGroup::settled`]) before its end is
/// recorded.
pub struct AsyncLog {
    path: Arc<PathBuf>,
    buffer: LogBuffer,
    files: Arc<std::sync::Mutex<LogFiles>>,
    group: Arc<LogGroup>,
    disk: LogDisk,
    /// Whether the files were asked for (opened or written) yet.
    opened: bool,
    /// Whether [`AsyncLog::finish`] was called.
    finished: bool,
}

impl AsyncLog {
    /// A log at `path`, one of `group`'s; nothing on disk yet.
    pub fn new(disk: &LogDisk, group: &Arc<LogGroup>, path: &Path) -> AsyncLog {
        AsyncLog {
            path: Arc::new(path.to_path_buf()),
            buffer: LogBuffer::new(),
            files: Arc::default(),
            group: group.clone(),
            disk: disk.clone(),
            opened: false,
            finished: false,
        }
    }

    fn submit(&self, op: Op) {
        if let Op::Write { chunk, .. } = &op {
            self.group
                .in_flight
                .fetch_add(chunk.data.len(), Ordering::SeqCst);
        }
        self.disk.submit(Job {
            group: self.group.clone(),
            path: self.path.clone(),
            files: self.files.clone(),
            op,
        });
    }

    /// Have the log file created (truncating) if not yet done, and with `runs`
    /// its `.ch` and `.ts` files too ([`LogWriter::open`]).
    pub fn open(&mut self, runs: bool) {
        self.opened = true;
        self.submit(Op::Open {
            runs: runs || self.buffer.has_runs,
        });
    }

    /// Append bytes of one channel.
    pub fn append(&mut self, channel: Channel, data: &[u8]) {
        self.add(channel, Piece::Lent(data));
    }

    /// [`AsyncLog::append`] of bytes the caller gives away (a big piece is handed
    /// over as it is, without a copy).
    pub fn append_owned(&mut self, channel: Channel, data: Vec<u8>) {
        self.add(channel, Piece::Given(data));
    }

    fn add(&mut self, channel: Channel, data: Piece<'_>) {
        let mut out = Vec::new();
        self.buffer.append(channel, data, &mut out);
        for chunk in out {
            self.opened = true;
            self.submit(Op::Write {
                chunk,
                close: false,
            });
        }
    }

    /// Hand everything appended so far to the disk (creating the files if not
    /// yet done), so readers see it once written.
    pub fn flush(&mut self) {
        let chunk = self.buffer.take();
        if chunk.is_empty() && self.opened {
            return;
        }
        self.opened = true;
        self.submit(Op::Write {
            chunk,
            close: false,
        });
    }

    /// Hand the rest to the disk and have the files closed once it is written
    /// (made first if they never were: an empty log still has its file). One
    /// piece of work for the disk thread, however short the log.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.opened = true;
        let chunk = self.buffer.take();
        self.submit(Op::Write { chunk, close: true });
    }

    /// Bytes appended so far.
    pub fn size(&self) -> u64 {
        self.buffer.size
    }

    /// Newlines appended so far (a last line without one is not counted).
    pub fn lines(&self) -> u64 {
        self.buffer.lines
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AsyncLog {
    /// What is left is written, the file made if it never was, and the files
    /// closed, all on the disk thread ([`AsyncLog::finish`]).
    fn drop(&mut self) {
        self.finish();
    }
}
