//! The `autobot` command line: one subcommand per job, dispatched to the library.
//!
//! Subcommand families live in their own files: [`create`] (create, create-master,
//! create-slave, create-project), [`info`] (list-factories, checkconfig),
//! [`daemon`] (start, stop, restart, reconfig, run), [`client`] (force,
//! stop-build), [`upgrade`] (upgrade-master), [`dbtools`] (upgrade-db, copy-db), [`backup`] (backup,
//! restore) and [`tools`] (completions,
//! manpages). Errors reach the user through `anyhow` with what went wrong and how
//! to fix it, and a non-zero exit status: [`EXIT_CODES`] lists them; an
//! [`ExitError`] anywhere in an error's chain picks its status.

pub mod backup;
pub mod client;
pub mod create;
pub mod daemon;
pub mod dbtools;
pub mod http;
pub mod info;
pub mod sendchange;
pub mod statuslog;
pub mod tools;
pub mod r#try;
pub mod upgrade;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The exit statuses of every command, shown by `--help` (scripts rely on them).
pub const EXIT_CODES: &str = "\
Exit status:
  0    success (force --wait: the build succeeded, or had warnings without --strict)
  1    an error; force --wait: the build failed, or had warnings under --strict
  2    the command line is wrong (an unknown option, a missing argument)
  3    the master could not be reached (force, stop-build: is it running?)
  4    no such builder (force), no such builder or build (stop-build)
  130  force --wait stopped waiting at Ctrl-C (the build goes on on the master)";

/// The master could not be reached: [`EXIT_CODES`].
pub const EXIT_UNREACHABLE: u8 = 3;
/// No such builder (or build): [`EXIT_CODES`].
pub const EXIT_NO_SUCH_BUILDER: u8 = 4;
/// Interrupted while waiting: [`EXIT_CODES`].
pub const EXIT_INTERRUPTED: u8 = 130;

/// An error that ends the command with its own exit status instead of 1, so a
/// script can tell "the master is down" from "the build failed".
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    pub code: u8,
    pub message: String,
}

/// An `anyhow` error that ends the command with exit status `code`.
pub fn exit_error(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ExitError {
        code,
        message: message.into(),
    })
}

/// autobot — a Buildbot-style continuous-integration master and slave in one binary.
///
/// Quick start: `autobot create ~/bot -f hello && autobot start ~/bot`; the
/// waterfall is then at http://localhost:8010/.
#[derive(Debug, Parser)]
#[command(name = "autobot", version = crate::VERSION, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a master and a slave that reaches it: DIR/master and DIR/slave.
    Create(CreateArgs),
    /// Create a master directory with a master.ini for the chosen factories.
    CreateMaster(CreateArgs),
    /// Create a slave directory: slave.ini, info/admin, info/host, a systemd unit.
    CreateSlave(create::CreateSlaveArgs),
    /// Write a project stub INI that `list-factories` then shows.
    CreateProject(create::CreateProjectArgs),
    /// List the factories (bundled and local projects) that masters can build.
    ListFactories(info::ListFactoriesArgs),
    /// Validate a master.ini and print its slaves, factories and builders.
    Checkconfig(info::CheckconfigArgs),
    /// Start the master, the slave, or both (a `create` pair) in the background.
    Start(daemon::DirArgs),
    /// Stop the daemon(s) in DIR, waiting for a graceful exit (--clean: after the
    /// running builds).
    Stop(daemon::StopArgs),
    /// Stop, then start again.
    Restart(daemon::DirArgs),
    /// Make a running master re-read master.ini (SIGHUP); a bad file is rejected.
    Reconfig(daemon::DirArgs),
    /// Run the master, the slave, or both in the foreground (for systemd).
    Run(daemon::RunArgs),
    /// Force a build of a builder; with --wait, follow it and exit 0 on success.
    #[command(after_help = client::FORCE_HELP)]
    Force(client::ForceArgs),
    /// Stop a running build.
    #[command(after_help = client::LOGIN_HELP)]
    StopBuild(client::StopBuildArgs),
    /// Send a Change to a master's slaveport (as from a VCS hook), like Buildbot's.
    Sendchange(sendchange::SendchangeArgs),
    /// Build your working tree's changes on the master's builders before you commit
    /// (base revision + patch), like Buildbot's try; with --wait, follow the builds.
    #[command(after_help = r#try::TRY_HELP)]
    Try(r#try::TryArgs),
    /// Print a master's events as they happen, one line each (or JSON lines).
    Statuslog(statuslog::StatuslogArgs),
    /// Upgrade a stopped master directory in place: database migrations, the files
    /// today's create-master writes, and what its master.ini says in an old way.
    UpgradeMaster(upgrade::UpgradeMasterArgs),
    /// Run the schema migrations the master's database lacks (state.sqlite, or the
    /// PostgreSQL database of `db =` in master.ini), saying from which version to which.
    UpgradeDb(dbtools::UpgradeDbArgs),
    /// Copy a stopped master's SQLite history into an empty PostgreSQL database,
    /// in one transaction, and report each table's rows.
    CopyDb(dbtools::CopyDbArgs),
    /// Back up a master's state while it runs: a consistent copy of state.sqlite
    /// (SQLite's online backup), its step logs and master.ini, in one tar FILE.
    Backup(backup::BackupArgs),
    /// Restore a backup into a master directory whose master is not running.
    Restore(backup::RestoreArgs),
    /// Print a shell completion script (bash, zsh or fish) on standard output.
    Completions(tools::CompletionsArgs),
    /// Write man pages (autobot.1, autobot-VERB.1) into a directory.
    Manpages(tools::ManpagesArgs),
}

/// Options shared by `create` and `create-master` (autobot's template variables).
#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// Directory to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// Factory to build; repeat for several; `-` means every known factory.
    /// Without -f, on a terminal, the list is shown and you are asked.
    #[arg(short = 'f', long = "factory", value_name = "NAME")]
    pub factories: Vec<String>,
    /// Print the known factories and exit.
    #[arg(long)]
    pub list_factories: bool,
    /// Name of the slave.
    #[arg(long, default_value = "slave")]
    pub slave: String,
    /// Operating system of the slave: linux, win or mac.
    #[arg(long, default_value = "linux")]
    pub os: String,
    /// Password of the slave [default: a new random one, written to master.ini and,
    /// by `create`, to the slave's slave.ini].
    #[arg(long)]
    pub passwd: Option<String>,
    /// Port the master listens on for slaves: PORT (every interface) or
    /// ADDR:PORT (`127.0.0.1:9010`, `[::1]:9010`, `localhost:9010`).
    #[arg(long, default_value = "9010", value_name = "[ADDRESS:]PORT")]
    pub slaveport: crate::config::Listen,
    /// Port of the waterfall, JSON API and force-build forms: PORT or ADDR:PORT
    /// (`127.0.0.1:8010`: only this machine can reach it).
    #[arg(long, default_value = "8010", value_name = "[ADDRESS:]PORT")]
    pub htmlport: crate::config::Listen,
    /// Port of the read-only public waterfall: PORT or ADDR:PORT.
    #[arg(long, default_value = "8011", value_name = "[ADDRESS:]PORT")]
    pub publichtmlport: crate::config::Listen,
    /// Nick of the IRC bot.
    #[arg(long, default_value = "autobot")]
    pub botname: String,
    /// IRC server to join (empty: no IRC).
    #[arg(long, default_value = "")]
    pub irc_host: String,
    /// IRC channels, space-separated (empty: none).
    #[arg(long, default_value = "")]
    pub irc_channels: String,
    /// Domain name of the master (for links and mail).
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Mail recipients for every project, space-separated.
    #[arg(long, default_value = "")]
    pub recipients: String,
    /// Host name the slave uses to reach the master (`create` only).
    #[arg(long, default_value = "localhost")]
    pub master: String,
    /// Debug mode: verbose daemon logs, and `restart` starts with fresh logs.
    #[arg(long)]
    pub debug: bool,
}

/// Parse the command line and run it; the process exit status.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("autobot: error: {e:#}");
            match e.downcast_ref::<ExitError>() {
                Some(x) => std::process::ExitCode::from(x.code),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cli.command {
        Command::Create(a) => create::create_pair(&a).map(|_| ExitCode::SUCCESS),
        Command::CreateMaster(a) => create::create_master_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::CreateSlave(a) => create::create_slave_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::CreateProject(a) => create::create_project_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::ListFactories(a) => info::list_factories_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Checkconfig(a) => info::checkconfig_cmd(&a),
        Command::Start(a) => daemon::start_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Stop(a) => daemon::stop_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Restart(a) => daemon::restart_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Reconfig(a) => daemon::reconfig_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Run(a) => daemon::run_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Force(a) => client::force_cmd(&a),
        Command::StopBuild(a) => client::stop_build_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Sendchange(a) => sendchange::sendchange_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Try(a) => r#try::try_cmd(&a),
        Command::Statuslog(a) => statuslog::statuslog_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::UpgradeMaster(a) => upgrade::upgrade_master_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::UpgradeDb(a) => dbtools::upgrade_db_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::CopyDb(a) => dbtools::copy_db_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Backup(a) => backup::backup_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Restore(a) => backup::restore_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Completions(a) => tools::completions_cmd(&a).map(|_| ExitCode::SUCCESS),
        Command::Manpages(a) => tools::manpages_cmd(&a).map(|_| ExitCode::SUCCESS),
    }
}
