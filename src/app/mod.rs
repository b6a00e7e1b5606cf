//! The composition root: starts and stops the master daemon, wiring every part
//! below it, and owns reconfiguration and shutdown.
//!
//! [`Master::start`] locks the master directory, loads `master.ini`, opens
//! `state.sqlite`, builds the engine ([`crate::engine`]), binds `slaveport`
//! (slaves, WebSocket: [`crate::slavelink`], with the `sendchange` intake of
//! [`crate::changes`] as its side door) and `htmlport` ([`crate::web`]), and
//! starts the pollers ([`crate::changes::pollers`]) and the schedulers
//! ([`crate::schedulers`]); it returns a running [`Master`]. [`run`] wraps it for
//! the daemon verbs. Tests reach connected slaves through [`Master::registry`]
//! and the engine through [`Master::engine`]. Nothing below this module imports
//! it: each part takes the handles it needs (the engine, the Change bus, the
//! database, the configuration's watch) from here.
//!
//! One slow thing must not stall the others. The slaves' links, the build engine
//! and the schedulers run on the runtime that starts the master (one thread in
//! the daemon: a Build's hand-offs stay on it); the web ports get a runtime of
//! their own (`WebRuntime`), so rendering a page over a long history, or
//! fifty of them at once, never holds up a slave's frames; step logs are written
//! by a thread of their own ([`crate::logstore::LogDisk`]), so a slow or hung log
//! disk holds up only the Builds that wait for their logs to be stored.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::changes::pollers::{self, PollerContext};
use crate::changes::submit::CHANGE_PATH;
use crate::changes::ChangeBus;
use crate::config::{ConfigError, Listen, MasterConfig};
use crate::daemon::Control;
use crate::db::{Db, DbError};
use crate::engine::Engine;
use crate::schedulers::{Clock, SchedulerContext};
use crate::slavelink::{connection, Shared, SideDoor, SlaveRegistry};

/// File locked while a master runs in a directory.
pub const LOCK_FILE: &str = "master.lock";

/// Why the master could not start (or reconfigure).
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("another master is already running in {}", dir.display())]
    AlreadyRunning { dir: PathBuf },
    #[error(
        "{} has no master.ini; create a master there with `autobot create-master {}`",
        dir.display(),
        dir.display()
    )]
    NotAMaster { dir: PathBuf },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Db(#[from] DbError),
    #[error(
        "{key} {port} is in use (is another master or program listening there?); \
         stop it or change {key} in master.ini"
    )]
    PortInUse { key: &'static str, port: Listen },
    #[error("cannot listen on {key} {port}: {source}")]
    Bind {
        key: &'static str,
        port: Listen,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Settings that `master.ini` does not (yet) carry, mostly for tests.
#[derive(Debug, Clone, Default)]
pub struct MasterOptions {
    /// A dead slave link is noticed within this time (default 600 s).
    pub keepalive_interval: Option<Duration>,
    /// Listen here instead of `slaveport` (0: any free port).
    pub slaveport: Option<u16>,
    /// Listen here instead of `htmlport` (0: any free port).
    pub htmlport: Option<u16>,
    /// Listen here instead of `publichtmlport` (0: any free port). When `htmlport`
    /// is overridden and this is not, no public port is opened (tests that move
    /// the web port do not want a fixed second one).
    pub publichtmlport: Option<u16>,
}

/// A running master.
pub struct Master {
    shared: Arc<Shared>,
    engine: Engine,
    changes: ChangeBus,
    shutdown_tx: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    /// The web ports' runtime, shut down after its servers.
    web: Option<WebRuntime>,
    slaveport: u16,
    htmlport: u16,
    /// The read-only web port, when one is open.
    publichtmlport: Option<u16>,
    /// The poller manager and the schedulers, with their stop switch and clock.
    pollers: Option<JoinHandle<()>>,
    schedulers: Option<JoinHandle<()>>,
    schedulers_stop: watch::Sender<bool>,
    clock: Clock,
    _lock: Flock<File>,
}

impl Master {
    /// Start the master of `basedir` with its `master.ini` settings.
    pub async fn start(basedir: &Path) -> Result<Master, MasterError> {
        Master::start_with(basedir, MasterOptions::default()).await
    }

    /// Start the master of `basedir`, with `options` overriding the file.
    pub async fn start_with(basedir: &Path, options: MasterOptions) -> Result<Master, MasterError> {
        Master::start_with_clock(basedir, options, Clock::system()).await
    }

    /// [`Master::start_with`] whose schedulers read the time from `clock` (tests
    /// drive `periodic`/`nightly` with a manual one).
    pub async fn start_with_clock(
        basedir: &Path,
        options: MasterOptions,
        clock: Clock,
    ) -> Result<Master, MasterError> {
        let basedir = std::fs::canonicalize(basedir).map_err(|source| MasterError::Io {
            path: basedir.to_path_buf(),
            source,
        })?;
        if !basedir.join("master.ini").is_file() {
            return Err(MasterError::NotAMaster { dir: basedir });
        }
        let lock = take_lock(&basedir)?;
        let config = load_config(&basedir).await?;
        crate::config::log_loaded(&config);
        let keepalive = options
            .keepalive_interval
            .unwrap_or(Duration::from_secs(config.keepalive_interval));
        // Step logs and artifacts: `sharedDir` when several masters serve
        // them, else the master directory.
        let data_dir = config.data_dir();
        let logs = data_dir.clone();
        tokio::task::spawn_blocking(move || crate::logstore::prepare_logs_dir(&logs))
            .await
            .map_err(|e| MasterError::Internal(e.to_string()))?
            .map_err(|source| MasterError::Io {
                path: data_dir.join("logs"),
                source,
            })?;
        let db = open_db(&basedir, &config).await?;
        // The one master of a SQLite database had every slave. On a shared
        // database the others' slaves stay connected to them.
        if db.dialect() == crate::db::sql::Dialect::Sqlite {
            db.slaves_reset("the master stopped", crate::calendar::now())
                .await?;
        }
        // Changes up to here came before this master: a scheduler new in this
        // configuration starts after them, and after none that arrive from now on
        // (the listeners open below, before the schedulers' task runs).
        let change_watermark = db.max_change_id().await?;

        // Each port binds its address from master.ini (every interface for a
        // bare port); the options move only the port.
        let slave_listener = bind(
            "slaveport",
            Listen::new(
                config.slaveport_addr,
                options.slaveport.unwrap_or(config.slaveport),
            ),
        )
        .await?;
        let web_listener = bind(
            "htmlport",
            Listen::new(
                config.htmlport_addr,
                options.htmlport.unwrap_or(config.htmlport),
            ),
        )
        .await?;
        let public_listener = match options.publichtmlport.or(if options.htmlport.is_none() {
            Some(config.publichtmlport)
        } else {
            None
        }) {
            // The read-only port is secondary: when it cannot be bound the master
            // still runs (slaves and htmlport), and says so loudly.
            Some(port) => match bind(
                "publichtmlport",
                Listen::new(config.publichtmlport_addr, port),
            )
            .await
            {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!("{e}; the read-only pages are not served");
                    None
                }
            },
            None => None,
        };
        let slaveport = local_port(&slave_listener);
        let htmlport = local_port(&web_listener);
        let listening = format!(
            "slaves on {}, web on {}",
            Listen::new(config.slaveport_addr, slaveport).describe(),
            Listen::new(config.htmlport_addr, htmlport).describe()
        );

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (config_tx, config_rx) = watch::channel(Arc::new(config));
        let registry = SlaveRegistry::new();
        // Recovers builds a dead master left running before any slave connects.
        let engine = Engine::start(
            db.clone(),
            registry.clone(),
            config_rx.clone(),
            data_dir.clone(),
        )
        .await?;
        let changes = ChangeBus::new(db.clone());
        let intake = changes.clone();
        let side_door = SideDoor {
            path: CHANGE_PATH,
            name: "sendchange",
            hint: "use changeuser/changepassword of [:master:] (sendchange --auth USER:PASS)",
            authorize: Box::new(crate::slavelink::auth::change_credentials),
            serve: Box::new(move |socket, user, peer, shutdown| {
                Box::pin(crate::changes::submit::serve_session(
                    intake.clone(),
                    socket,
                    user,
                    peer,
                    shutdown,
                ))
            }),
        };
        let try_engine = engine.clone();
        let try_door = SideDoor {
            path: crate::engine::tryjob::TRY_PATH,
            name: "try",
            hint:
                "use a NAME:PASSWORD of the users of [try] (try --username NAME --passwd PASSWORD)",
            authorize: Box::new(crate::slavelink::auth::try_credentials),
            serve: Box::new(move |socket, user, peer, shutdown| {
                Box::pin(crate::engine::tryjob::serve_session(
                    try_engine.clone(),
                    socket,
                    user,
                    peer,
                    shutdown,
                    htmlport,
                ))
            }),
        };
        let shared = Arc::new(Shared {
            basedir,
            config: config_tx,
            db: db.clone(),
            registry,
            keepalive,
            shutdown: shutdown_rx.clone(),
            slaveport,
            side_doors: vec![side_door, try_door],
        });

        let mut servers = Vec::new();
        servers.push(tokio::spawn(crate::slavelink::serve(
            slave_listener,
            shared.clone(),
            shutdown_rx.clone(),
        )));
        let web = match WebRuntime::start() {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::warn!(
                    "no runtime of its own for the web ports ({e}); pages share the slaves' thread"
                );
                None
            }
        };
        let spawn_web =
            |task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| match &web {
                Some(rt) => rt.handle.spawn(task),
                None => tokio::spawn(task),
            };
        let ctx = crate::web::WebContext {
            db,
            config: config_rx,
            engine: engine.clone(),
            changes: changes.clone(),
        };
        // publichtmlport: the same pages, read-only.
        let public_port = public_listener.map(|l| {
            let port = local_port(&l);
            servers.push(spawn_web(Box::pin(crate::web::serve_public(
                l,
                ctx.clone(),
                wait_true(shutdown_rx.clone()),
            ))));
            port
        });
        servers.push(spawn_web(Box::pin(crate::web::serve(
            web_listener,
            ctx,
            wait_true(shutdown_rx),
        ))));
        let (schedulers_stop, schedulers_rx) = watch::channel(false);
        let pollers = pollers::start(
            PollerContext {
                db: shared.db.clone(),
                changes: changes.clone(),
                basedir: shared.basedir.clone(),
            },
            shared.config.subscribe(),
            schedulers_rx.clone(),
        );
        // Maildir change sources (`[changesource:NAME]`, issue 25): stop with the
        // pollers, before the schedulers' last word.
        servers.push(crate::changes::maildir::start(
            changes.clone(),
            shared.config.subscribe(),
            schedulers_rx.clone(),
        ));
        let schedulers = crate::schedulers::start(
            SchedulerContext {
                db: shared.db.clone(),
                engine: engine.clone(),
                changes: changes.clone(),
                clock: clock.clone(),
                start_watermark: Arc::new(std::sync::Mutex::new(Some(change_watermark))),
            },
            shared.config.subscribe(),
            schedulers_rx,
        );
        // Reporters (issue 20): mail, missing slaves, commit statuses.
        servers.push(crate::reporters::start(
            crate::reporters::ReporterContext {
                db: shared.db.clone(),
                engine: engine.clone(),
                registry: shared.registry.clone(),
                config: shared.config.subscribe(),
            },
            shared.shutdown.clone(),
        ));
        // Retention (issue 22): logHorizon, buildHorizon, changeHorizon and
        // logCompression, in small batches on a thread of its own.
        servers.push(crate::retention::start(
            shared.db.clone(),
            shared.db.data_dir(),
            shared.config.subscribe(),
            shared.shutdown.clone(),
        ));
        // Status targets: the IRC bot (idle until ircHost is set).
        servers.push(tokio::spawn(crate::reporters::irc::run(
            engine.clone(),
            shared.db.clone(),
            shared.config.subscribe(),
            shared.shutdown.clone(),
        )));
        tracing::info!(
            "master in {} listening: {listening}",
            shared.basedir.display()
        );
        Ok(Master {
            shared,
            engine,
            changes,
            shutdown_tx,
            servers,
            web,
            slaveport,
            htmlport,
            publichtmlport: public_port,
            pollers: Some(pollers),
            schedulers: Some(schedulers),
            schedulers_stop,
            clock,
            _lock: lock,
        })
    }

    /// Where Changes come in (pollers, sendchange, webhooks, the API).
    pub fn changes(&self) -> &ChangeBus {
        &self.changes
    }

    /// The clock the schedulers read.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The build engine: force, stop, submit BuildSets, follow events.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Connected slaves and the command layer.
    pub fn registry(&self) -> &SlaveRegistry {
        &self.shared.registry
    }

    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<MasterConfig> {
        self.shared.config.borrow().clone()
    }

    /// Follows the configuration across reconfigs.
    pub fn config_watch(&self) -> watch::Receiver<Arc<MasterConfig>> {
        self.shared.config.subscribe()
    }

    /// The master directory.
    pub fn basedir(&self) -> &Path {
        &self.shared.basedir
    }

    /// The port slaves connect to (the bound one, if 0 was asked).
    pub fn slaveport(&self) -> u16 {
        self.slaveport
    }

    /// The web/API port (the bound one, if 0 was asked).
    pub fn htmlport(&self) -> u16 {
        self.htmlport
    }

    /// The read-only web port (the bound one, if 0 was asked), when open.
    pub fn publichtmlport(&self) -> Option<u16> {
        self.publichtmlport
    }

    /// The dead-link detection interval in force.
    pub fn keepalive_interval(&self) -> Duration {
        self.shared.keepalive
    }

    /// Re-read `master.ini`. A valid file replaces the configuration at once:
    /// removed slaves are disconnected, slaves whose password changed must log in
    /// again, new builders get their directories. An invalid file is rejected and
    /// the running configuration stays.
    pub async fn reconfig(&self) -> Result<(), MasterError> {
        let new = match load_config(&self.shared.basedir).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "reconfig rejected: {e}; the previous configuration stays in force"
                );
                return Err(e);
            }
        };
        let old = self.config();
        if let Err(e) = crate::config::check_replacement(&old, &new) {
            tracing::error!("reconfig rejected: {e}; the previous configuration stays in force");
            return Err(e.into());
        }
        crate::config::log_loaded(&new);
        if new.slave_listen() != old.slave_listen()
            || new.html_listen() != old.html_listen()
            || new.public_listen() != old.public_listen()
        {
            tracing::warn!("reconfig: slaveport/htmlport/publichtmlport changes take effect at the next restart");
        }
        let new = Arc::new(new);
        self.shared.config.send_replace(new.clone());
        for h in self.shared.registry.handles() {
            let name = h.name().to_string();
            match (old.slave(&name), new.slave(&name)) {
                (_, None) => h.disconnect("removed from master.ini by reconfig"),
                (Some(o), Some(n)) if o.password != n.password => {
                    h.disconnect("its password was changed by reconfig")
                }
                _ => {
                    let conn = h.conn.clone();
                    let config = new.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection::make_builder_dirs(&conn, &config).await {
                            tracing::warn!("slave {name}: {e}");
                        }
                    });
                }
            }
        }
        tracing::info!(
            "reconfig: applied {} ({} slaves, {} factories, {} builders)",
            new.path.display(),
            new.slaves.len(),
            new.factories.len(),
            new.builders().len()
        );
        Ok(())
    }

    /// Interrupt running commands, close every slave connection, stop listening,
    /// write the database out. Returns when all of that is done.
    pub async fn shutdown(mut self) {
        tracing::info!("master shutting down");
        // No new Changes or BuildSets from here on.
        self.schedulers_stop.send_replace(true);
        // Both stop together, within 15 s in all (as when one task ran both).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        for mut s in [self.pollers.take(), self.schedulers.take()]
            .into_iter()
            .flatten()
        {
            if tokio::time::timeout_at(deadline, &mut s).await.is_err() {
                tracing::warn!("the pollers and schedulers did not stop within 15 s");
                s.abort();
            }
        }
        // Running builds are interrupted and recorded (their requests run again
        // after a restart) while the slaves are still connected.
        self.engine.shutdown().await;
        self.shutdown_tx.send_replace(true);
        let registry = self.shared.registry.clone();
        if !registry
            .wait_until(Duration::from_secs(15), |r| r.connection_count() == 0)
            .await
        {
            tracing::warn!("some slave connections did not close within 15 s");
        }
        for s in std::mem::take(&mut self.servers) {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        if let Some(web) = self.web.take() {
            web.shutdown();
        }
        if let Err(e) = self.shared.db.checkpoint().await {
            tracing::warn!("cannot checkpoint the database: {e}");
        }
        tracing::info!("master stopped");
    }
}

/// The master daemon until `control` says stop: start, report readiness, apply
/// reconfigs, shut down cleanly.
pub async fn run(basedir: &Path, mut control: Control) -> Result<(), MasterError> {
    let master = match Master::start(basedir).await {
        Ok(m) => m,
        Err(e) => {
            control.ready(Err(e.to_string()));
            return Err(e);
        }
    };
    control.ready(Ok(format!(
        "master listening: slaves on :{}, web on :{}",
        master.slaveport(),
        master.htmlport()
    )));
    let mut reconfig_open = true;
    loop {
        if *control.shutdown.borrow() {
            break;
        }
        tokio::select! {
            r = control.shutdown.changed() => {
                if r.is_err() {
                    break;
                }
            }
            r = control.reconfig.recv(), if reconfig_open => match r {
                Some(()) => {
                    // Errors are logged by reconfig; the old configuration stays.
                    let _ = master.reconfig().await;
                }
                None => reconfig_open = false,
            },
        }
    }
    if *control.clean.borrow() {
        tracing::info!(
            "clean stop: waiting for {} running builds to finish",
            master.engine.running().len()
        );
        master.engine.drain().await;
    }
    master.shutdown().await;
    Ok(())
}

impl Drop for Master {
    fn drop(&mut self) {
        // A master dropped without `shutdown` (a test that ends early) still
        // stops its web ports' threads.
        if let Some(web) = self.web.take() {
            web.shutdown();
        }
    }
}

/// The web ports' runtime: its own worker threads, and its own blocking pool for
/// the SQLite reads and file reads behind pages, so that pages, however many and
/// however slow, never run on the thread that reads the slaves' frames. Its
/// threads run at a lower CPU priority (nice [`WEB_NICE`]): when the machine is
/// busy, a Build's next command goes before the next page.
struct WebRuntime {
    runtime: tokio::runtime::Runtime,
    handle: tokio::runtime::Handle,
    /// Kept while the runtime lives: the memory releaser holds it weakly, and
    /// forgets this runtime once it is gone.
    _alive: Arc<()>,
}

/// How much lower the web threads' priority is (Linux nice values are per thread).
/// Measured (`bench/stalls.rs`, 50 clients loading the waterfall of a 1,000,000-
/// build history on 2 cores): 5, 10 and 19 all keep force → finished p95 near
/// 10 ms, where the same threads at the slaves' priority let it reach 90 ms; 10
/// still leaves the pages a tenth of a busy core each (SCHED_IDLE starved them,
/// and made things worse: a page thread preempted while it held one of SQLite's
/// process-wide locks held up the engine's writes).
const WEB_NICE: i32 = 10;

impl WebRuntime {
    fn start() -> std::io::Result<WebRuntime> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 4);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("web")
            .thread_keep_alive(crate::memory::BLOCKING_KEEP_ALIVE)
            .on_thread_start(lower_priority)
            .on_thread_park(crate::memory::idle_thread)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let alive = Arc::new(());
        // When a quiet master gives memory back, wake each web thread once so
        // that it parks again and gives back what a page's deep calls left on
        // its stack (crate::memory::idle_thread).
        crate::memory::on_release({
            let alive = Arc::downgrade(&alive);
            let handle = handle.clone();
            move || {
                if alive.upgrade().is_none() {
                    return false;
                }
                for _ in 0..threads {
                    handle.spawn(async {});
                }
                true
            }
        });
        Ok(WebRuntime {
            runtime,
            handle,
            _alive: alive,
        })
    }

    /// Stop its threads without waiting for them (allowed inside another
    /// runtime); whatever still runs there (a client's stream) ends with them.
    fn shutdown(self) {
        self.runtime.shutdown_background();
    }
}

/// Lower the calling thread's CPU priority by [`WEB_NICE`] (best effort).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread; `gettid` cannot fail.
        unsafe {
            let tid = nix::libc::syscall(nix::libc::SYS_gettid) as nix::libc::id_t;
            let now = nix::libc::getpriority(nix::libc::PRIO_PROCESS, tid);
            nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid, (now + WEB_NICE).min(19));
        }
    }
}

fn take_lock(basedir: &Path) -> Result<Flock<File>, MasterError> {
    let path = basedir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| MasterError::Io {
            path: path.clone(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| MasterError::AlreadyRunning {
        dir: basedir.to_path_buf(),
    })
}

async fn load_config(basedir: &Path) -> Result<MasterConfig, MasterError> {
    let dir = basedir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::config::load(&dir))
        .await
        .map_err(|e| MasterError::Internal(e.to_string()))?
        .map_err(MasterError::from)
}

/// The master's database as `db =` says: `state.sqlite` (created and
/// migrated here), or the shared PostgreSQL database (whose schema
/// `autobot upgrade-db` keeps; checked here).
async fn open_db(basedir: &Path, config: &MasterConfig) -> Result<Db, MasterError> {
    let basedir = basedir.to_path_buf();
    let database = config.database.clone();
    let password = database.password().map_err(DbError::from)?;
    tokio::task::spawn_blocking(move || match &database {
        crate::config::Database::Sqlite => Db::open(&basedir.join(crate::db::DB_FILE)),
        crate::config::Database::Postgres { url, .. } => Db::open_postgres(url, password, &basedir),
    })
    .await
    .map_err(|e| MasterError::Internal(e.to_string()))?
    .map(|db| {
        db.for_master(&config.master_name, config.master_timeout)
            .with_data_dir(&config.data_dir())
    })
    .map_err(MasterError::from)
}

async fn bind(key: &'static str, port: Listen) -> Result<TcpListener, MasterError> {
    TcpListener::bind(port.bind_addr()).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            MasterError::PortInUse { key, port }
        } else {
            MasterError::Bind { key, port, source }
        }
    })
}

fn local_port(l: &TcpListener) -> u16 {
    l.local_addr().map(|a| a.port()).unwrap_or(0)
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
