//! autobot: a Buildbot-style continuous-integration system in one binary.
//!
//! The crate is both halves of Buildbot (the master and the slave) plus the setup
//! tool that creates them from one `master.ini`. Modules depend downward only:
//! `cli` → `master`/`slave` → `factory` → `protocol`/`db`/`config`; `web` reads
//! status and never drives a build except through the master's request queue.
//!
//! * [`calendar`] — UTC dates without a date crate (pages, cron, webhooks).
//! * [`changes`] — Changes and the git (gix) and hg pollers that find them.
//! * [`config`] — `master.ini` and the slave's `slave.ini`: parsing, defaults and
//!   validation errors that name file, line, section and key.
//! * [`factory`] — the built-in factory types (autotools, cpan, shell, …) that turn a
//!   factory section into an ordered list of step specs, and the bundled projects.
//! * [`protocol`] — Buildbot's `msgpack_experimental_v7` worker protocol: frames and
//!   messages shared by master and slave.
//! * [`master`] — the master daemon: slave connections, the command layer that runs
//!   protocol commands on a slave, state kept in SQLite.
//! * [`schedulers`] — the schedulers (tree-stable, any-branch, files, periodic,
//!   nightly, dependsOn) that turn Changes into BuildSets, and the poller manager.
//! * [`slave`] — the slave daemon: connection loop with backoff and the commands it
//!   runs for the master, confined to its basedir.
//! * [`db`] — SQLite schema and versioned migrations.
//! * [`reporters`] — status targets that follow the engine's events: mail
//!   (MailNotifier), missing-slave mail and commit statuses on the forges,
//!   decided from the database and sent from a queue in SQLite; the IRC bot.
//! * [`web`] — the HTTP side of the master: the JSON API, the waterfall and other
//!   status pages with live updates, force/stop forms, webhooks.
//! * [`cli`] — the `autobot` command line: create commands, daemon verbs, tools.
//! * [`daemon`] — pid files, log files, background start and signals.
//! * [`logfile`] — `autobot.log` rotated by size and reopened on SIGUSR1.
//! * [`templates`] — files compiled into the binary (master.ini, slave config, the
//!   bundled sample sources) so the binary works when copied alone.

pub mod activity;
pub mod calendar;
pub mod changes;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub mod factory;
pub mod logfile;
pub mod master;
pub mod protocol;
pub mod reporters;
pub mod schedulers;
pub mod slave;
pub mod templates;
pub mod web;

/// The autobot version, reported by `--version`, in worker info and on `/about`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
