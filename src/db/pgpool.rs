//! A master's connections to its PostgreSQL database (`db = postgresql://…`):
//! one for writes and a pool of up to [`super::READERS`] for reads, each with
//! the statements it prepared, so that the queries of [`super::sql`] cost one
//! round trip each after their first run.
//!
//! Writes run one at a time, as on SQLite (one writer connection under a lock):
//! what one master writes keeps the order it had on SQLite, and the queries that
//! several masters race for take their row locks themselves. A connection that
//! breaks (the server restarted, the network dropped it) is closed and opened
//! again by the next query: the query that saw it break fails, the master goes
//! on. The `postgres` client blocks: everything here runs on tokio's blocking
//! pool.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use super::pg::{self, PgError, PgUrl};
use super::sql::{self, Dialect, Row, Sql, SqlError, Value};
use super::{DbError, Readers};

/// Statements a connection keeps prepared; past this many it forgets them all
/// (a master runs far fewer distinct queries).
const STATEMENTS: usize = 512;

/// One connection and the statements prepared on it, by their SQLite text.
pub(crate) struct PgConn {
    /// Dropped by [`PgConn`]'s `Drop`, off tokio's threads.
    client: ManuallyDrop<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
}

impl PgConn {
    fn open(url: &PgUrl, password: Option<&str>) -> Result<PgConn, DbError> {
        Ok(PgConn {
            client: ManuallyDrop::new(pg::connect(url, password)?),
            statements: HashMap::new(),
        })
    }

    /// The connection a master writes on: without `synchronous_commit=on`
    /// in the URL its commits do not wait for the server's disk flush
    /// ([`PgUrl::synchronous_commit`]).
    fn open_writer(url: &PgUrl, password: Option<&str>) -> Result<PgConn, DbError> {
        let mut conn = PgConn::open(url, password)?;
        if !url.synchronous_commit {
            conn.client
                .batch_execute("SET synchronous_commit = off")
                .map_err(|e| DbError::Sql(SqlError::from(e)))?;
        }
        Ok(conn)
    }

    fn broken(&self) -> bool {
        self.client.is_closed()
    }
}

impl Drop for PgConn {
    /// Closing a `postgres::Client` blocks on a runtime of its own, which
    /// panics on a thread of the master's runtime (where the last handle on a
    /// pool may go, or the memory releaser closes idle readers): there the
    /// client is closed on a thread of its own.
    fn drop(&mut self) {
        // SAFETY: `client` is taken once, here, and never used after.
        let client = unsafe { ManuallyDrop::take(&mut self.client) };
        if tokio::runtime::Handle::try_current().is_err() {
            drop(client);
            return;
        }
        let closing = std::thread::Builder::new()
            .name("db-close".into())
            .spawn(move || drop(client));
        if let Err(e) = closing {
            // The client (moved into the closure that was not run) is gone
            // without its goodbye: the server sees the socket close.
            tracing::debug!("no thread to close a database connection: {e}");
        }
    }
}

/// [`Sql`] on a client or transaction of one [`PgConn`], preparing each
/// statement once.
struct Prepared<'a, C: postgres::GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, postgres::Statement>,
    /// Statements still allowed: `Some(1)` for a write of one statement run
    /// without a transaction ([`PgPool::write_one`]); `None`: no limit.
    left: Option<u32>,
}

impl<C: postgres::GenericClient> Prepared<'_, C> {
    fn statement(&mut self, text: &str) -> Result<postgres::Statement, SqlError> {
        if let Some(left) = self.left.as_mut() {
            // A second statement of a write run outside a transaction would
            // not be atomic with the first: refused, never run.
            *left = left.checked_sub(1).ok_or_else(|| {
                SqlError::Postgres(format!(
                    "a write of one statement ran a second: {}",
                    text.split_whitespace().collect::<Vec<_>>().join(" ")
                ))
            })?;
        }
        if let Some(st) = self.statements.get(text) {
            return Ok(st.clone());
        }
        let st = self
            .client
            .prepare(sql::translate(text, Dialect::Postgres).as_ref())?;
        if self.statements.len() >= STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(text.to_string(), st.clone());
        Ok(st)
    }
}

impl<C: postgres::GenericClient> Sql for Prepared<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, text: &str, params: &[Value]) -> Result<u64, SqlError> {
        let st = self.statement(text)?;
        Ok(self.client.execute(&st, &sql::pg_params(params))?)
    }

    fn query(&mut self, text: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        let st = self.statement(text)?;
        // Each row the server sent is freed once converted: a result of big
        // rows (a page of Changes cut at 1 MiB a field) is held once, not
        // twice.
        self.client
            .query(&st, &sql::pg_params(params))?
            .into_iter()
            .map(|r| sql::pg_row(&r))
            .collect()
    }
}

/// The connections of a master on PostgreSQL.
pub(crate) struct PgPool {
    url: PgUrl,
    password: Option<String>,
    writer: Mutex<Option<PgConn>>,
    readers: Arc<Readers<PgConn>>,
    /// Who follows which channel ([`PgPool::listen`]); the listening thread
    /// starts with the first.
    listeners: Arc<Mutex<Subscribers>>,
}

/// The receivers of each channel's notifications.
type Subscribers = HashMap<&'static str, Vec<tokio::sync::mpsc::UnboundedSender<String>>>;

/// Every channel a master follows, LISTENed on one connection: each
/// `NOTIFY` wakes one server process per master, not one per channel.
pub const CHANNELS: [&str; 3] = [
    super::changes::STORED,
    super::requests::QUEUED,
    super::masters::EVENTS,
];

impl PgPool {
    /// Connect and check the schema ([`super::pgmigrations::check`]); `dir` is
    /// the master directory `upgrade-db` is told to run on.
    pub(crate) fn open(
        url: PgUrl,
        password: Option<String>,
        dir: &Path,
    ) -> Result<Arc<PgPool>, DbError> {
        let mut first = PgConn::open_writer(&url, password.as_deref())?;
        super::pgmigrations::check(&mut first.client, &url.to_string(), dir)?;
        let readers = Arc::new(Readers::new(None, {
            let (url, password) = (url.clone(), password.clone());
            move || PgConn::open(&url, password.as_deref())
        }));
        crate::memory::on_release({
            let readers: Weak<Readers<PgConn>> = Arc::downgrade(&readers);
            move || match readers.upgrade() {
                Some(r) => {
                    r.close_idle();
                    true
                }
                None => false,
            }
        });
        Ok(Arc::new(PgPool {
            url,
            password,
            writer: Mutex::new(Some(first)),
            readers,
            listeners: Arc::default(),
        }))
    }

    /// Run `f` in one transaction on the writer connection, on the blocking
    /// pool; committed when `f` returns `Ok`.
    pub(crate) async fn write<F, R>(self: Arc<Self>, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut dyn Sql) -> Result<R, SqlError> + Send + 'static,
        R: Send + 'static,
    {
        tokio::task::spawn_blocking(move || self.on_writer(|conn| write_in(conn, f)))
            .await
            .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Run `f` on the writer connection (opened again first if it is closed
    /// or broken; dropped after `f` if `f` broke it). Blocking.
    fn on_writer<R>(
        &self,
        f: impl FnOnce(&mut PgConn) -> Result<R, DbError>,
    ) -> Result<R, DbError> {
        let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(PgConn::broken) {
            *slot = None;
            *slot = Some(PgConn::open_writer(&self.url, self.password.as_deref())?);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(DbError::Task("no writer connection".into()));
        };
        let done = f(conn);
        if conn.broken() {
            *slot = None;
        }
        done
    }

    /// Run `f`, which runs one statement (atomic on its own), on the writer
    /// connection without a transaction around it: no `BEGIN` and `COMMIT`
    /// round trips. A second statement of `f` fails, unrun.
    pub(crate) async fn write_one<F, R>(self: Arc<Self>, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut dyn Sql) -> Result<R, SqlError> + Send + 'static,
        R: Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            self.on_writer(|conn| {
                let PgConn { client, statements } = conn;
                f(&mut Prepared {
                    client: &mut **client,
                    statements,
                    left: Some(1),
                })
                .map_err(DbError::from)
            })
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Run the reads of `f` on one of the read connections, on the blocking
    /// pool (each statement sees every commit made before it).
    pub(crate) async fn read<F, R>(self: Arc<Self>, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut dyn Sql) -> Result<R, SqlError> + Send + 'static,
        R: Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            self.readers.with(
                |conn| {
                    let PgConn { client, statements } = conn;
                    Ok(f(&mut Prepared {
                        client: &mut **client,
                        statements,
                        left: None,
                    })?)
                },
                PgConn::broken,
            )
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }
}

/// What a listener sends when it (re)connects: notifications may have been
/// missed, so everything they announce should be read again.
pub const MISSED: &str = "*";

impl PgPool {
    /// The payloads of `NOTIFY channel` (one of [`CHANNELS`]) sent by any
    /// master (this one too), each after the transaction that sent it
    /// committed. One thread of the pool's holds a connection that LISTENs
    /// on every channel and hands each payload to the channel's receivers;
    /// when that connection breaks it connects again (every second until it
    /// can) and sends [`MISSED`] first to every receiver. It ends when the
    /// pool is gone.
    pub(crate) fn listen(
        self: &Arc<Self>,
        channel: &'static str,
    ) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        debug_assert!(CHANNELS.contains(&channel), "LISTEN {channel}");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let first = {
            let mut subs = lock(&self.listeners);
            let first = subs.is_empty();
            subs.entry(channel).or_default().push(tx);
            first
        };
        if first {
            let (pool, subs) = (Arc::downgrade(self), self.listeners.clone());
            let spawned = std::thread::Builder::new()
                .name("db-listen".into())
                .spawn(move || listen_loop(pool, subs));
            if let Err(e) = spawned {
                tracing::error!("no thread to LISTEN: {e}");
            }
        }
        rx
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hand `payload` to the receivers of `channel` (those gone are forgotten).
fn deliver(subs: &Mutex<Subscribers>, channel: &str, payload: &str) {
    let mut subs = lock(subs);
    if let Some(list) = subs.get_mut(channel) {
        list.retain(|tx| tx.send(payload.to_string()).is_ok());
    }
}

fn listen_loop(pool: Weak<PgPool>, subs: Arc<Mutex<Subscribers>>) {
    let listen: String = CHANNELS.iter().map(|c| format!("LISTEN {c};")).collect();
    let mut first = true;
    loop {
        let client = {
            let Some(pool) = pool.upgrade() else {
                return;
            };
            PgConn::open(&pool.url, pool.password.as_deref()).and_then(|mut c| {
                c.client
                    .batch_execute(&listen)
                    .map_err(|e| DbError::Sql(SqlError::from(e)))?;
                Ok(c)
            })
        };
        let mut conn = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("LISTEN: {e}; trying again in 1 s");
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
        };
        if !first {
            for channel in CHANNELS {
                deliver(&subs, channel, MISSED);
            }
        }
        first = false;
        loop {
            if pool.strong_count() == 0 {
                return;
            }
            let mut notes = conn.client.notifications();
            let mut it = notes.timeout_iter(std::time::Duration::from_secs(1));
            use postgres::fallible_iterator::FallibleIterator;
            match it.next() {
                Ok(Some(n)) => deliver(&subs, n.channel(), n.payload()),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("LISTEN: {}; connecting again", pg::describe(&e));
                    break;
                }
            }
        }
    }
}

/// `f` in a transaction of `conn`, committed if it succeeds.
fn write_in<F, R>(conn: &mut PgConn, f: F) -> Result<R, DbError>
where
    F: FnOnce(&mut dyn Sql) -> Result<R, SqlError>,
{
    let PgConn { client, statements } = conn;
    let mut tx = client.transaction().map_err(SqlError::from)?;
    let out = f(&mut Prepared {
        client: &mut tx,
        statements,
        left: None,
    })?;
    tx.commit().map_err(SqlError::from)?;
    Ok(out)
}

impl From<PgError> for SqlError {
    fn from(e: PgError) -> SqlError {
        SqlError::Postgres(e.to_string())
    }
}
