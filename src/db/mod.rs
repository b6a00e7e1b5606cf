//! The master's state in SQLite (`MASTERDIR/state.sqlite`): schema, migrations and
//! queries.
//!
//! [`Db`] owns one connection for writes and a small pool of up to [`READERS`]
//! read-only ones, opened as reads need them and closed when the master is quiet
//! (WAL lets readers run beside the writer and beside each other), so a page
//! that reads a long history does not make every other page, API call and SSE
//! read wait for it. Reads run on tokio's blocking pool; writes run where
//! they are called when the write lock is free at once, else on the blocking pool
//! ([`Db::write`]), so a slow disk never stalls the async runtime. One more connection, on a thread of its own,
//! folds the WAL back into the database file after writes (`checkpointer`), so
//! the copying and the `fsync` a checkpoint costs are not paid inside a commit
//! that a Build waits for. Queries live in one file per domain
//! ([`slaves`], [`changes`], [`requests`] for BuildSets and BuildRequests,
//! [`builds`] for Builds, Steps, logs and properties, [`notifications`] for the
//! reporters' outgoing queue, [`retention`] for what the retention task
//! deletes, [`status`] and
//! [`listing`] for what the status pages and the JSON API read); the schema is
//! the append-only list in [`migrations`]. The web layer holds no SQL of its own.

pub mod artifacts;
pub mod backup;
pub mod builds;
pub mod changes;
pub mod copy;
pub mod listing;
pub mod masters;
pub mod migrations;
pub mod notifications;
pub mod pg;
pub mod pgmigrations;
pub mod pgpool;
pub mod requests;
pub mod retention;
pub mod schedulers;
pub mod slaves;
pub mod sql;
pub mod status;
pub mod tryjobs;
pub mod webview;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

/// The master name of a [`Db`] opened without one (tests, tools).
pub const DEFAULT_MASTER: &str = "master";

/// `masterTimeout`'s default, in seconds.
pub const DEFAULT_MASTER_TIMEOUT: u64 = 30;

/// File name of the database inside the master directory.
pub const DB_FILE: &str = "state.sqlite";

/// Why the database could not be opened or a query failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path} has schema version {found}, written by a newer autobot; this autobot ({}) \
         knows schema versions up to {known}: run the newer autobot (or restore a backup \
         made before it was used)",
        crate::VERSION
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("{path}: migration to schema version {version} failed: {source}")]
    Migrate {
        path: PathBuf,
        version: usize,
        source: rusqlite::Error,
    },
    #[error("database query failed: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("database query failed: {0}")]
    Sql(sql::SqlError),
    #[error("database task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Pg(#[from] pg::PgError),
    /// A query written for SQLite alone, asked of a master on PostgreSQL.
    #[error("{0} is not available on PostgreSQL")]
    SqliteOnly(&'static str),
}

impl From<sql::SqlError> for DbError {
    /// SQLite's own errors stay [`DbError::Query`], as before the backends met.
    fn from(e: sql::SqlError) -> DbError {
        match e {
            sql::SqlError::Sqlite(e) => DbError::Query(e),
            other => DbError::Sql(other),
        }
    }
}

/// A handle to the master's database; cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Db {
    path: PathBuf,
    /// The master directory.
    basedir: PathBuf,
    /// Where the `logs/` and `artifacts/` directories are (`sharedDir`, or the
    /// master directory): log paths are relative to it.
    data_dir: PathBuf,
    backend: Backend,
    /// `masterName`: stamped on the Builds this master runs and the
    /// BuildRequests it claims, so that another master sharing the database
    /// re-queues only a dead master's work.
    master: Arc<str>,
    /// `masterTimeout` (seconds): how long a master may be silent before the
    /// others take it for dead and its leases for free.
    master_timeout: u64,
}

/// Where the history is: the master directory's `state.sqlite`, or a
/// PostgreSQL database several masters may share ([`pgpool`]).
#[derive(Clone)]
enum Backend {
    Sqlite(SqliteDb),
    Postgres(Arc<pgpool::PgPool>),
}

/// The SQLite backend's connections.
#[derive(Clone)]
struct SqliteDb {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Readers<Connection>>,
    /// Counts commits for the checkpointer thread.
    commits: Arc<Commits>,
    /// Declared after the connections, so dropped after them: the
    /// last `Db` to go waits for the checkpointer, whose connection, the last one,
    /// folds the WAL into the file as it closes. Whoever opens the database next
    /// (another process) finds it settled.
    _checkpointer: Arc<Checkpointer>,
}

/// How many read-only connections serve [`Db::read`].
pub const READERS: usize = 4;

/// The read-only connections: a read takes whichever is idle, opens another one
/// while fewer than [`READERS`] are open, or waits (on the blocking pool) for the
/// first one given back. A quiet master closes the idle ones
/// ([`release_memory`]): each holds its own copy of the schema, its prepared
/// statements and its page cache, some hundred KiB after a burst of reads.
/// The same pool holds a PostgreSQL master's read connections ([`pgpool`]).
pub(crate) struct Readers<C> {
    open: Box<dyn Fn() -> Result<C, DbError> + Send + Sync>,
    pool: Mutex<ReaderPool<C>>,
    given_back: Condvar,
}

struct ReaderPool<C> {
    idle: Vec<C>,
    /// Open connections, idle or in use.
    open: usize,
}

impl<C> Readers<C> {
    /// A pool that opens its connections with `open`, `first` already open.
    pub(crate) fn new(
        first: Option<C>,
        open: impl Fn() -> Result<C, DbError> + Send + Sync + 'static,
    ) -> Readers<C> {
        let opened = usize::from(first.is_some());
        Readers {
            open: Box::new(open),
            pool: Mutex::new(ReaderPool {
                idle: first.into_iter().collect(),
                open: opened,
            }),
            given_back: Condvar::new(),
        }
    }

    fn take(&self) -> Result<C, DbError> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(c) = pool.idle.pop() {
                return Ok(c);
            }
            if pool.open < READERS {
                pool.open += 1;
                drop(pool);
                let opened = (self.open)();
                if opened.is_err() {
                    self.forget();
                }
                return opened;
            }
            pool = self
                .given_back
                .wait(pool)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A connection taken and not given back (it broke): another may open.
    fn forget(&self) {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).open -= 1;
        self.given_back.notify_one();
    }

    /// Whether a read is running now.
    fn busy(&self) -> bool {
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.idle.len() < pool.open
    }

    fn give_back(&self, c: C) {
        self.pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .idle
            .push(c);
        self.given_back.notify_one();
    }

    /// Close the idle connections (they are opened again when needed).
    pub(crate) fn close_idle(&self) {
        let idle = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            pool.open -= pool.idle.len();
            std::mem::take(&mut pool.idle)
        };
        drop(idle);
        // Whoever waits may open one now.
        self.given_back.notify_all();
    }

    /// Run `f` on a connection of the pool; the connection goes back to the
    /// pool afterwards (even if `f` panicked) unless `broken` says it is of no
    /// more use.
    pub(crate) fn with<R>(
        &self,
        f: impl FnOnce(&mut C) -> Result<R, DbError>,
        broken: impl Fn(&C) -> bool,
    ) -> Result<R, DbError> {
        let mut reader = Reader {
            pool: self,
            conn: Some(self.take()?),
        };
        let Some(c) = reader.conn.as_mut() else {
            return Err(DbError::Task("no reader connection".into()));
        };
        let out = f(c);
        if reader.conn.as_ref().is_some_and(broken) {
            reader.conn = None;
            self.forget();
        }
        out
    }
}

/// A read-only connection of [`Readers`].
fn open_reader(path: &Path) -> Result<Connection, DbError> {
    let open_err = |source| DbError::Open {
        path: path.to_path_buf(),
        source,
    };
    let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    reader.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    stable_plans(&reader).map_err(open_err)?;
    Ok(reader)
}

/// A reader taken from [`Readers`], given back when dropped (even if the read
/// panicked: a read-only connection has nothing to roll back).
struct Reader<'a, C> {
    pool: &'a Readers<C>,
    conn: Option<C>,
}

impl<C> Drop for Reader<'_, C> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.give_back(c);
        }
    }
}

/// The checkpointer thread, told to end and joined when the last [`Db`] is dropped.
struct Checkpointer {
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    commits: Arc<Commits>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.commits.close();
        let handle = self.thread.get_mut().ok().and_then(|h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// What commits tell the checkpointer thread. A commit only counts itself; it
/// wakes the thread just for the first commit after a checkpoint and when
/// [`CHECKPOINT_COMMITS`] are reached. Waking it on every commit cost a thread
/// switch per write, on the critical path of every Build.
#[derive(Default)]
struct Commits {
    /// Commits since the last checkpoint.
    pending: AtomicU64,
    /// Commits ever: the checkpointer sees from it whether the database was quiet.
    total: AtomicU64,
    closed: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Commits {
    fn committed(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let n = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n == CHECKPOINT_COMMITS {
            self.notify();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify();
    }

    /// Taking the lock first: a checkpointer between its check and its wait
    /// cannot miss this.
    fn notify(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.wake.notify_one();
    }
}

/// WAL pages after which a commit checkpoints by itself: only reached when the
/// checkpointer thread cannot keep up (or could not start).
const AUTOCHECKPOINT_PAGES: i64 = 20_000;

/// The checkpointer checkpoints after this many commits, or when the database has
/// been quiet for [`CHECKPOINT_IDLE`]. Not after every burst: a checkpoint that
/// empties the WAL makes the next commit start it afresh, and that restart costs
/// an `fsync` inside the commit.
const CHECKPOINT_COMMITS: u64 = 2000;
const CHECKPOINT_IDLE: Duration = Duration::from_secs(1);

impl Db {
    /// Open (creating if needed) and migrate the database at `path`.
    ///
    /// Blocking: call it at start-up or inside `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let open_err = |source| DbError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut writer = Connection::open(path).map_err(open_err)?;
        configure(&writer).map_err(open_err)?;
        migrate(path, &mut writer)?;
        // One reader now, so that a database that cannot be read fails here;
        // the others as reads need them.
        let first = open_reader(path)?;
        let readers = Arc::new(Readers::new(Some(first), {
            let path = path.to_path_buf();
            move || open_reader(&path)
        }));
        let commits = Arc::new(Commits::default());
        let writer = Arc::new(Mutex::new(writer));
        let mut thread = None;
        match Connection::open(path).and_then(|c| {
            c.busy_timeout(RESTART_WAIT)?;
            Ok(c)
        }) {
            Ok(conn) => {
                lock(&writer)
                    .pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)
                    .map_err(open_err)?;
                let spawned = std::thread::Builder::new()
                    .name("db-checkpoint".into())
                    .spawn({
                        let commits = commits.clone();
                        let writer = Arc::downgrade(&writer);
                        let readers = Arc::downgrade(&readers);
                        move || checkpointer(conn, &commits, writer, readers)
                    });
                match spawned {
                    Ok(h) => thread = Some(h),
                    Err(e) => {
                        tracing::warn!(
                            "{}: no checkpoint thread ({e}); commits checkpoint",
                            path.display()
                        );
                        lock(&writer)
                            .pragma_update(None, "wal_autocheckpoint", 1000)
                            .map_err(open_err)?;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(
                    "{}: no checkpoint connection ({e}); commits checkpoint",
                    path.display()
                );
            }
        }
        crate::memory::on_release({
            let writer = Arc::downgrade(&writer);
            let readers = Arc::downgrade(&readers);
            move || release_memory(&writer, &readers)
        });
        let basedir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Db {
            path: path.to_path_buf(),
            data_dir: basedir.clone(),
            basedir,
            master: Arc::from(DEFAULT_MASTER),
            master_timeout: DEFAULT_MASTER_TIMEOUT,
            backend: Backend::Sqlite(SqliteDb {
                writer,
                readers,
                commits: commits.clone(),
                _checkpointer: Arc::new(Checkpointer {
                    thread: Mutex::new(thread),
                    commits,
                }),
            }),
        })
    }

    /// Open the shared PostgreSQL database of `db =` (`dir` is the master
    /// directory, named in the message when the schema needs `upgrade-db`). The
    /// schema must be exactly the one this autobot knows: a master never
    /// migrates a shared database itself ([`pgmigrations::check`]).
    ///
    /// Blocking: call it at start-up or inside `spawn_blocking`.
    pub fn open_postgres(
        url: &pg::PgUrl,
        password: Option<String>,
        dir: &Path,
    ) -> Result<Db, DbError> {
        let pool = pgpool::PgPool::open(url.clone(), password, dir)?;
        Ok(Db {
            path: PathBuf::from(url.to_string()),
            basedir: dir.to_path_buf(),
            data_dir: dir.to_path_buf(),
            backend: Backend::Postgres(pool),
            master: Arc::from(DEFAULT_MASTER),
            master_timeout: DEFAULT_MASTER_TIMEOUT,
        })
    }

    /// This handle, for the master named `name` (`masterName`) whose
    /// `masterTimeout` is `timeout` seconds.
    pub fn for_master(mut self, name: &str, timeout: u64) -> Db {
        self.master = Arc::from(name);
        self.master_timeout = timeout;
        self
    }

    /// This handle, with step logs and artifacts under `dir` (`sharedDir`)
    /// instead of the master directory.
    pub fn with_data_dir(mut self, dir: &Path) -> Db {
        self.data_dir = dir.to_path_buf();
        self
    }

    /// `masterTimeout`, in seconds.
    pub fn master_timeout(&self) -> u64 {
        self.master_timeout
    }

    /// Whether the database is shared by several masters (PostgreSQL): what
    /// must run once in the cluster then runs where [`Db::hold_lease`] says.
    pub fn shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// On a shared database, what the other masters announce on `channel`
    /// (`NOTIFY`), each after its transaction committed ([`pgpool::MISSED`]
    /// when some may have been missed); `None` on SQLite, where this
    /// master is the only one.
    pub fn listen(
        &self,
        channel: &'static str,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pool) => Some(pool.listen(channel)),
        }
    }

    /// The master this handle writes for.
    pub fn master_name(&self) -> &str {
        &self.master
    }

    /// The master directory.
    pub fn basedir(&self) -> PathBuf {
        self.basedir.clone()
    }

    /// Where step logs and artifacts are: log paths are relative to it
    /// (`sharedDir`, or the master directory).
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// Where the database lives (a file, or the PostgreSQL URL).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which SQL the database speaks.
    pub fn dialect(&self) -> sql::Dialect {
        match self.backend {
            Backend::Sqlite(_) => sql::Dialect::Sqlite,
            Backend::Postgres(_) => sql::Dialect::Postgres,
        }
    }

    /// The SQLite connections, for what only SQLite does (its online backup,
    /// checkpoints, `PRAGMA`s).
    fn sqlite(&self) -> Result<&SqliteDb, DbError> {
        match &self.backend {
            Backend::Sqlite(lite) => Ok(lite),
            Backend::Postgres(_) => Err(DbError::SqliteOnly("this SQLite query")),
        }
    }

    /// Run `f` in one write transaction; committed when `f` returns `Ok`, rolled
    /// back otherwise.
    ///
    /// When the writer connection and SQLite's write lock are free at once (nearly
    /// always: the master is the only writer), it runs right here on the calling
    /// thread. A write is one short transaction (a tenth of a millisecond), while a
    /// hop to the blocking pool and back costs two thread wake-ups, and every Build
    /// has several writes on its critical path (its claim, each Step's start). When
    /// either is taken (another process holds the database, a checkpoint runs), the
    /// write waits for it on the blocking pool instead, so the runtime never waits.
    /// Closures do no I/O besides the database and never wait on anything else.
    pub async fn write<F, R>(&self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        crate::memory::poke();
        let lite = self.sqlite()?;
        let f = match lite.write_here(f) {
            Ok(done) => return done,
            Err(f) => f,
        };
        let conn = lite.writer.clone();
        let commits = lite.commits.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&conn);
            guard.busy_timeout(BUSY_TIMEOUT)?;
            let tx = guard.transaction_with_behavior(TransactionBehavior::Immediate)?;
            commit_with(tx, f, &commits)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Run a read-only query on the blocking pool (sees every committed write), on
    /// one of the [`READERS`] connections: up to that many reads run at once.
    pub async fn read<F, R>(&self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        crate::memory::poke();
        let pool = self.sqlite()?.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(|c| Ok(f(c)?), |_| false))
            .await
            .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// [`Db::write`] for queries written once for both backends ([`sql`]): `f`
    /// runs in one write transaction of whichever backend the master uses,
    /// committed when it returns `Ok`.
    pub async fn write_sql<F, R>(&self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut dyn sql::Sql) -> Result<R, sql::SqlError> + Send + 'static,
        R: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(_) => self.write(move |tx| Ok(f(&mut sql::Lite(tx))?)).await,
            Backend::Postgres(pool) => pool.clone().write(f).await,
        }
    }

    /// [`Db::write_sql`] for an `f` that runs exactly one statement: on
    /// PostgreSQL it runs without a transaction around it (a statement is
    /// atomic on its own), two round trips (`BEGIN`, `COMMIT`) fewer; a
    /// second statement fails there, unrun. On SQLite the same as
    /// [`Db::write_sql`].
    pub async fn write_sql_one<F, R>(&self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut dyn sql::Sql) -> Result<R, sql::SqlError> + Send + 'static,
        R: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(_) => self.write(move |tx| Ok(f(&mut sql::Lite(tx))?)).await,
            Backend::Postgres(pool) => pool.clone().write_one(f).await,
        }
    }

    /// [`Db::read`] for queries written once for both backends ([`sql`]).
    pub async fn read_sql<F, R>(&self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut dyn sql::Sql) -> Result<R, sql::SqlError> + Send + 'static,
        R: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(_) => self.read(move |c| Ok(f(&mut sql::Lite(c))?)).await,
            Backend::Postgres(pool) => pool.clone().read(f).await,
        }
    }

    /// Fold the WAL back into the main file; called at shutdown so the directory
    /// is self-contained when the master is not running.
    pub async fn checkpoint(&self) -> Result<(), DbError> {
        let Backend::Sqlite(lite) = &self.backend else {
            return Ok(());
        };
        let conn = lite.writer.clone();
        tokio::task::spawn_blocking(move || {
            let guard = lock(&conn);
            // Writes done here leave it at zero; this one may wait for readers.
            guard.busy_timeout(BUSY_TIMEOUT)?;
            guard.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(())
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// The schema version the database is at (for tests and `checkconfig`).
    pub async fn schema_version(&self) -> Result<i64, DbError> {
        match &self.backend {
            Backend::Sqlite(_) => {
                self.read(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
                    .await
            }
            Backend::Postgres(_) => {
                self.read_sql(|db| {
                    let q = format!("SELECT version FROM {}", pgmigrations::VERSION_TABLE);
                    db.query_one(&q, &[])?.i64(0)
                })
                .await
            }
        }
    }
}

impl SqliteDb {
    /// [`Db::write`] on this thread if the writer connection and the write lock
    /// are free now; `Err(f)` back if not.
    // The `let` before the return ends the transaction's borrow of `guard` first.
    #[allow(clippy::let_and_return)]
    fn write_here<F, R>(&self, f: F) -> Result<Result<R, DbError>, F>
    where
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<R>,
    {
        let mut guard = match self.writer.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(f),
        };
        if let Err(e) = guard.busy_timeout(Duration::ZERO) {
            return Ok(Err(e.into()));
        }
        let begun = guard.transaction_with_behavior(TransactionBehavior::Immediate);
        let done = match begun {
            // A panic in `f` rolls its transaction back (the drop) and is an error
            // of this write, as it would be on the blocking pool.
            Ok(tx) => Ok(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                commit_with(tx, f, &self.commits)
            }))
            .unwrap_or_else(|_| Err(DbError::Task("database write panicked".into())))),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => Err(f),
            Err(e) => Ok(Err(e.into())),
        };
        done
    }
}

/// The checkpointer thread: after [`CHECKPOINT_COMMITS`] commits, or once commits
/// stop for [`CHECKPOINT_IDLE`], copy the WAL's pages into the database file with a
/// PASSIVE checkpoint, which never blocks the writer or a reader; a WAL fully
/// checkpointed is then reused from its start by the next commit. Ends when the
/// last [`Db`] handle is dropped.
fn checkpointer(
    conn: Connection,
    commits: &Commits,
    writer: Weak<Mutex<Connection>>,
    readers: Weak<Readers<Connection>>,
) {
    let mut guard = commits.lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        // Asleep until a commit comes.
        while commits.pending.load(Ordering::Relaxed) == 0 {
            if commits.closed.load(Ordering::SeqCst) {
                return;
            }
            guard = commits.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
        // Commits come: wait until enough of them, or a quiet spell.
        loop {
            if commits.closed.load(Ordering::SeqCst) {
                // Closing the connection checkpoints what is left.
                return;
            }
            if commits.pending.load(Ordering::Relaxed) >= CHECKPOINT_COMMITS {
                break;
            }
            let seen = commits.total.load(Ordering::Relaxed);
            guard = commits
                .wake
                .wait_timeout(guard, CHECKPOINT_IDLE)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if commits.total.load(Ordering::Relaxed) == seen {
                break;
            }
        }
        let counted = commits.pending.load(Ordering::Relaxed);
        drop(guard);
        checkpoint(&conn, &writer, &readers);
        // What the checkpoint read stays in this connection's page cache,
        // which nothing reads: give it back.
        if let Err(e) = conn.execute_batch("PRAGMA shrink_memory") {
            tracing::debug!("database: shrink_memory failed: {e}");
        }
        guard = commits.lock.lock().unwrap_or_else(|p| p.into_inner());
        // Commits made during the checkpoint count towards the next one.
        commits.pending.fetch_sub(counted, Ordering::Relaxed);
    }
}

/// Copy the WAL into the database file so that the next commit starts the WAL
/// afresh. A PASSIVE checkpoint copies without blocking anyone, but commits made
/// meanwhile (the master is busy) keep the WAL from starting afresh, and it would
/// only grow. So a RESTART checkpoint follows and copies the few frames they
/// added, holding the writer connection: SQLite's busy wait alone would rarely
/// find a gap between the master's commits. Writes wait on the blocking pool for
/// that short copy, once every [`CHECKPOINT_COMMITS`] commits or quiet spell.
fn checkpoint(
    conn: &Connection,
    writer: &Weak<Mutex<Connection>>,
    readers: &Weak<Readers<Connection>>,
) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!("database checkpoint failed: {e}");
        return;
    }
    // The last Db is going: closing the connections checkpoints.
    let Some(writer) = writer.upgrade() else {
        return;
    };
    // A RESTART waits for every reader to leave the WAL, holding up the master's
    // writes meanwhile: not while this master's own readers are busy (pages
    // under load), it would wait its whole time for nothing. The next one tries.
    if readers.upgrade().is_some_and(|r| r.busy()) {
        return;
    }
    let _writes = lock(&writer);
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
        tracing::debug!("database checkpoint (RESTART) gave up: {e}");
    }
}

/// Close the readers no one uses now and empty the writer's page cache (a quiet
/// master's: see [`crate::memory::Trimmer`]); `false` once the database is
/// closed. Pages are read again from the file (the OS's page cache) when next
/// needed.
fn release_memory(writer: &Weak<Mutex<Connection>>, readers: &Weak<Readers<Connection>>) -> bool {
    let (Some(writer), Some(readers)) = (writer.upgrade(), readers.upgrade()) else {
        return false;
    };
    let shrink = |c: &Connection| {
        if let Err(e) = c.execute_batch("PRAGMA shrink_memory") {
            tracing::debug!("database: shrink_memory failed: {e}");
        }
    };
    readers.close_idle();
    // A writer busy now is not quiet: the next quiet spell gets it. Its
    // prepared statements go too (the next Build prepares them again, a few
    // tenths of a millisecond once).
    if let Ok(c) = writer.try_lock() {
        c.flush_prepared_statement_cache();
        shrink(&c);
    }
    true
}

/// A connection's lock, even if a panic poisoned it (a panicking write rolled back).
fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a RESTART checkpoint waits for readers (another process may hold a
/// long read) while it holds up the master's writes; it gives up after that, and
/// the next one tries again.
const RESTART_WAIT: Duration = Duration::from_millis(100);

/// How long a connection waits for a lock another connection (or process) holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `f` in `tx` and commit; the checkpointer hears of the commit.
fn commit_with<F, R>(tx: Transaction<'_>, f: F, commits: &Commits) -> Result<R, DbError>
where
    F: FnOnce(&Transaction<'_>) -> rusqlite::Result<R>,
{
    let out = f(&tx)?;
    tx.commit()?;
    commits.committed();
    Ok(out)
}

/// Prepared statements kept per connection: more than the queries a Build runs
/// through, so none is parsed again for every Build.
const STATEMENT_CACHE: usize = 256;

/// One query plan per statement, whatever values are bound to it. Without this
/// SQLite re-prepares a cached statement on every run whose parameters could sway
/// its plan (a BuildRequest claim, a Build's end), which costs more than the query.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    stable_plans(conn)?;
    // WAL: readers never block the writer; NORMAL: durable at checkpoints and
    // safe against corruption, without an fsync per commit.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Bring the schema up to date, one transaction per migration.
fn migrate(path: &Path, conn: &mut Connection) -> Result<(), DbError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| DbError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let known = migrations::MIGRATIONS.len();
    if found < 0 || found as usize > known {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for (i, sql) in migrations::MIGRATIONS
        .iter()
        .enumerate()
        .skip(found as usize)
    {
        let version = i + 1;
        let err = |source| DbError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::debug!("database migrated to schema version {version}");
    }
    Ok(())
}

/// `autobot upgrade-db` on SQLite: the migrations `path` lacks (creating it if
/// missing), as a master's start applies them. Returns the schema versions
/// before and after.
pub fn upgrade_sqlite(path: &Path) -> Result<(i64, i64), DbError> {
    let before = if path.exists() {
        let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(
            |source| DbError::Open {
                path: path.to_path_buf(),
                source,
            },
        )?;
        c.query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|source| DbError::Open {
                path: path.to_path_buf(),
                source,
            })?
    } else {
        0
    };
    let mut c = Connection::open(path).map_err(|source| DbError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    configure(&c).map_err(|source| DbError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    migrate(path, &mut c)?;
    Ok((before, migrations::MIGRATIONS.len() as i64))
}

/// The clock the database's times come from (re-exported: tests and benches
/// stamp rows with it).
pub use crate::calendar::{now, now_f64};

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_quiet_master_closes_its_idle_readers_and_reads_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(DB_FILE)).unwrap();
        let lite = |db: &Db| match &db.backend {
            Backend::Sqlite(l) => l.clone(),
            Backend::Postgres(_) => unreachable!(),
        };
        let open = |db: &Db| lite(db).readers.pool.lock().unwrap().open;
        let reads = (0..8).map(|_| db.schema_version());
        for v in futures_util::future::join_all(reads).await {
            assert_eq!(v.unwrap(), migrations::MIGRATIONS.len() as i64);
        }
        assert!((1..=READERS).contains(&open(&db)));
        let (w, r) = (
            Arc::downgrade(&lite(&db).writer),
            Arc::downgrade(&lite(&db).readers),
        );
        assert!(release_memory(&w, &r));
        assert_eq!(open(&db), 0, "idle readers closed");
        db.write(|tx| tx.execute("INSERT INTO slaves(name) VALUES ('a')", []))
            .await
            .unwrap();
        let n: i64 = db
            .read(|c| c.query_row("SELECT count(*) FROM slaves", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(open(&db), 1, "opened again for the read");
        drop(db);
        assert!(
            !release_memory(&w, &r),
            "forgotten once the database is closed"
        );
    }

    #[tokio::test]
    async fn opens_migrates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let db = Db::open(&path).unwrap();
        assert_eq!(
            db.schema_version().await.unwrap(),
            migrations::MIGRATIONS.len() as i64
        );
        db.write(|tx| tx.execute("INSERT INTO slaves(name) VALUES ('a')", []))
            .await
            .unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        let n: i64 = db
            .read(|c| c.query_row("SELECT count(*) FROM slaves", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    /// A write that finds the database locked by another connection (another
    /// process) waits for it off the runtime: on a one-thread runtime, other tasks
    /// still run meanwhile, and the write goes through once the lock is released.
    #[tokio::test(flavor = "current_thread")]
    async fn a_locked_database_does_not_stall_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let db = Db::open(&path).unwrap();
        // A plain write goes through at once.
        db.write(|tx| tx.execute("INSERT INTO slaves(name) VALUES ('a')", []))
            .await
            .unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let db2 = db.clone();
        let write = tokio::spawn(async move {
            db2.write(|tx| tx.execute("INSERT INTO slaves(name) VALUES ('b')", []))
                .await
        });
        // Let the write start; with the lock taken it must hand itself to the
        // blocking pool and give this (only) thread back well within SQLite's
        // 10 s busy timeout.
        let t0 = std::time::Instant::now();
        tokio::task::yield_now().await;
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the runtime was stalled"
        );
        assert!(!write.is_finished(), "the write went through a held lock");
        other.execute_batch("COMMIT").unwrap();
        let written = tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .expect("the write ends once the lock is free")
            .unwrap();
        assert_eq!(written.unwrap(), 1);
        let n: i64 = db
            .read(|c| c.query_row("SELECT count(*) FROM slaves", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(n, 2);
    }

    /// Reads run side by side on the pool's connections: while all but one are
    /// held by long reads (a page over a long history), another read still goes
    /// through; with every one held, the next waits for the first given back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_read_does_not_hold_up_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(DB_FILE)).unwrap();
        let gate = Arc::new((Mutex::new(true), Condvar::new()));
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let hold = |db: &Db| {
            let (gate, entered) = (gate.clone(), entered_tx.clone());
            let db = db.clone();
            tokio::spawn(async move {
                db.read(move |c| {
                    let n: i64 = c.query_row("SELECT count(*) FROM slaves", [], |r| r.get(0))?;
                    let _ = entered.send(());
                    let (held, cv) = &*gate;
                    let mut h = held.lock().unwrap();
                    while *h {
                        h = cv.wait(h).unwrap();
                    }
                    Ok(n)
                })
                .await
            })
        };
        let mut long: Vec<_> = (0..READERS - 1).map(|_| hold(&db)).collect();
        for _ in 0..READERS - 1 {
            entered_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("a long read started");
        }
        let quick = db.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)));
        let got = tokio::time::timeout(Duration::from_secs(30), quick)
            .await
            .expect("a read waited for the long ones");
        assert_eq!(got.unwrap(), 1);
        // Every connection held: the next read waits for one to be given back.
        long.push(hold(&db));
        entered_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the last connection taken");
        let waiting = tokio::spawn({
            let db = db.clone();
            async move {
                db.read(|c| c.query_row("SELECT 2", [], |r| r.get::<_, i64>(0)))
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a read ran without a connection");
        {
            let (held, cv) = &*gate;
            *held.lock().unwrap() = false;
            cv.notify_all();
        }
        for l in long {
            assert_eq!(l.await.unwrap().unwrap(), 0);
        }
        let got = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the waiting read ran once a connection was given back");
        assert_eq!(got.unwrap().unwrap(), 2);
    }

    /// A cached statement runs again without being re-prepared, even when the
    /// values bound to it could sway the plan (the BuildRequest claim's query).
    #[tokio::test]
    async fn cached_statements_keep_their_plan() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(DB_FILE)).unwrap();
        const CLAIM: &str = "SELECT id, buildset FROM buildrequests
             WHERE builder = ?1 AND claimed_at IS NULL AND complete = 0
             ORDER BY priority DESC, id LIMIT 1";
        const NEXT: &str = "SELECT coalesce(max(number), 0) + 1 FROM builds WHERE builder = ?1";
        let mut reprepared = 0;
        for builder in ["a", "b", "c"] {
            reprepared += db
                .write(move |tx| {
                    let mut n = 0;
                    for sql in [CLAIM, NEXT] {
                        let mut st = tx.prepare_cached(sql)?;
                        let mut rows = st.query([builder])?;
                        while rows.next()?.is_some() {}
                        drop(rows);
                        n += st.get_status(rusqlite::StatementStatus::RePrepare);
                    }
                    Ok(n)
                })
                .await
                .unwrap();
        }
        assert_eq!(reprepared, 0);
    }

    /// The last handle to go leaves the database settled: the WAL folded into the
    /// file and removed, so a process that opens it next waits for nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_last_handle_folds_the_wal_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let db = Db::open(&path).unwrap();
        let other = db.clone();
        for i in 0..50 {
            db.write(move |tx| {
                tx.execute("INSERT INTO slaves(name) VALUES (?1)", [format!("s{i}")])
            })
            .await
            .unwrap();
        }
        let wal = dir.path().join(format!("{DB_FILE}-wal"));
        assert!(wal.exists());
        drop(db);
        assert!(wal.exists(), "another handle still uses it");
        drop(other);
        assert!(
            !wal.exists(),
            "the WAL is folded in when the last handle goes"
        );
        let c = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM slaves", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 50);
    }

    /// Under writes that never pause, the checkpointer still lets the WAL start
    /// afresh (a RESTART after its PASSIVE checkpoint), so the WAL stays bounded.
    /// A PASSIVE checkpoint alone never does while commits go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_afresh_under_unbroken_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let wal = dir.path().join(format!("{DB_FILE}-wal"));
        // The WAL header's checkpoint sequence number: it grows each time the
        // WAL starts afresh.
        let restarts = || {
            use std::io::Read;
            let mut head = [0u8; 16];
            let mut f = std::fs::File::open(&wal).ok()?;
            f.read_exact(&mut head).ok()?;
            Some(u32::from_be_bytes([head[12], head[13], head[14], head[15]]))
        };
        let db = Db::open(&path).unwrap();
        // No commit checkpoints by itself here: only the checkpointer can let the
        // WAL start afresh, however long it takes on a loaded machine.
        db.write(|tx| tx.pragma_update(None, "wal_autocheckpoint", 0))
            .await
            .unwrap();
        let mut first = None;
        let mut commits = 0;
        while commits < 20 * CHECKPOINT_COMMITS {
            db.write(move |tx| {
                tx.execute(
                    "INSERT INTO slaves(name) VALUES (?1)",
                    [format!("s{commits}")],
                )
            })
            .await
            .unwrap();
            commits += 1;
            let now = restarts();
            if first.is_none() {
                first = now;
            } else if now != first {
                break;
            }
        }
        assert!(
            restarts() != first,
            "the WAL never started afresh in {commits} commits"
        );
    }

    #[test]
    fn newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 9999).unwrap();
        drop(c);
        let err = Db::open(&path).err().unwrap().to_string();
        assert!(err.contains("newer autobot"), "{err}");
    }
}
