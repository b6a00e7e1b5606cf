//! autobot: a Buildbot-style continuous-integration system in one binary.
//!
//! The crate is both halves of Buildbot (the master and the slave) plus the setup
//! tool that creates them from one `master.ini`. The modules, top first:
//!
//! * [`cli`] — the `autobot` command line: create commands, daemon verbs, tools.
//!   The edge of the program: it may use every module below it, and starts the
//!   daemons themselves only through [`app::run`] (`autobot run` of a master) and
//!   [`slave::run`]; otherwise it talks to masters over HTTP and WebSocket.
//! * [`app`] — the composition root: starts and stops the master daemon (locks the
//!   directory, opens the database, builds the engine, starts the slave listener
//!   with the `sendchange` intake as its side door, the pollers, the schedulers
//!   and the web server), and owns reconfig and shutdown. Nothing imports it but
//!   `cli`.
//! * [`web`] — the HTTP side of the master: the JSON API, the waterfall and other
//!   status pages with live updates, force/stop forms, webhooks. It takes an
//!   engine handle and its event stream, and queries through `db`.
//! * [`reporters`] — status targets that follow the engine's events: mail
//!   (MailNotifier), missing-slave mail and commit statuses on the forges,
//!   decided from the database and sent from a queue in SQLite; the IRC bot.
//!   Beside `web`: they take an engine handle and its events, and query through
//!   `db`.
//! * [`retention`] — the background task that applies `logHorizon`,
//!   `buildHorizon`, `changeHorizon` and `logCompression`: small batches
//!   through `db`, files through `logstore`, on a thread of its own.
//! * [`schedulers`] — the schedulers (tree-stable, any-branch, files, periodic,
//!   nightly, dependsOn) that turn Changes into BuildSets for the engine.
//! * [`engine`] — BuildRequests in, Builds on slaves out: the dispatcher, the build
//!   runner (Builds and their Steps) and locks; it reaches slaves through
//!   `slavelink` and writes step logs through `logstore`; it keeps the
//!   artifacts Builds upload (`engine::artifacts`, read by `web` and pruned by
//!   `retention` through it).
//! * [`changes`] — Changes and where they come from: the Change bus, the rules
//!   every Change follows, the git (gix) and hg pollers and their manager, and the
//!   `sendchange` intake. Below the engine, which checks a forced build's branch,
//!   revision and properties by the same rules.
//! * [`slavelink`] — the master side of the worker protocol: the slave port's
//!   listener and authentication, one connection per slave, the registry, remote
//!   commands and file transfers. Its one non-slave path (`sendchange`) is a side
//!   door `app` hands in, so it knows nothing of Changes.
//! * [`slave`] — the slave daemon: connection loop with backoff and the commands it
//!   runs for the master, confined to its basedir. It shares nothing with the
//!   master's modules but the lower layers (`protocol`, `sources`, `config::slave`).
//! * [`config`] — `master.ini`, the project files and the slave's `slave.ini`:
//!   parsing, defaults and validation errors that name file, line, section and key.
//!   It validates factory sections with `factory`, never the reverse.
//! * [`factory`] — the built-in factory types (autotools, cpan, shell, …) that turn
//!   a factory's [`factory::Recipe`] (its own parameter model, which `config`
//!   fills) into an ordered list of step specs; interpolation, log parsers, results.
//! * [`activity`] — a counter of engine events and Changes, for the pages' ETags.
//! * [`db`] — the only place with SQL: the SQLite schema, versioned migrations and
//!   every query (status included: one place says idle, building, offline).
//! * [`logstore`] — step logs on disk: written by a thread of its own for the
//!   engine, read and streamed by the web.
//! * [`sources`] — `Source`, `Mode`, `Retry`, the checkout plan and credentials in
//!   repository URLs (`redact_url`): used by config, factory, engine, changes and
//!   the slave alike.
//! * [`secrets`] — `secretsDir`'s build secrets and the redaction of every
//!   form of them from step output (used by config, factory and engine).
//! * [`protocol`] — Buildbot's `msgpack_experimental_v7` worker protocol: frames and
//!   messages shared by master and slave.
//! * [`calendar`] — the wall clock and UTC dates (pages, cron).
//! * [`templates`] — the files autobot writes, kept under `templates/` and
//!   compiled in (master.ini, slave.ini, the systemd units, the bundled sample
//!   sources) so the binary works when copied alone.
//! * [`links`] — the web pages' paths, each name one percent-encoded segment:
//!   for the pages' links, mail and IRC, and the CLI's API requests.
//! * [`memory`] — the daemons' resident memory: malloc's arenas, and memory
//!   given back once a burst of work has stopped.
//! * [`daemon`] — pid files, log files, background start and signals.
//! * [`logfile`] — `autobot.log` rotated by size (`logSize`/`logCount` of
//!   `config`) and reopened on SIGUSR1; used by `daemon`.
//!
//! # The dependency rule
//!
//! A module imports only modules of a lower layer; modules of one layer do not
//! import each other, and no two modules import each other. Layers, top first
//! (checked by `tests/layers.rs`, which reads this block and every `crate::`
//! path of `src/`):
//!
//! ```text
//! cli
//! app
//! web        schedulers  reporters  retention
//! engine
//! changes
//! slavelink  slave
//! daemon
//! logfile
//! config
//! factory
//! activity
//! db         logstore
//! sources    protocol   calendar   templates  links  memory  secrets
//! ```
//!
//! Within a module anything goes.

pub mod activity;
pub mod app;
pub mod calendar;
pub mod changes;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub mod engine;
pub mod factory;
pub mod links;
pub mod logfile;
pub mod logstore;
pub mod memory;
pub mod protocol;
pub mod reporters;
pub mod retention;
pub mod schedulers;
pub mod secrets;
pub mod slave;
pub mod slavelink;
pub mod sources;
pub mod templates;
pub mod web;

/// The autobot version, reported by `--version`, in worker info and on `/about`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
