//! `autobot upgrade-db DIR` and `autobot copy-db DIR postgresql://…`: the
//! master's database, on either backend, for the move to several masters on one
//! PostgreSQL (issue 26).
//!
//! `upgrade-db` runs the schema migrations the master's database lacks — its
//! `state.sqlite`, or the PostgreSQL database its `master.ini` names with `db =`
//! (under an advisory lock, so several masters' operators cannot race) — and
//! says from which version to which. A master migrates its own `state.sqlite`
//! at start as before; a shared PostgreSQL database is migrated only by this
//! command. `copy-db` copies a stopped master's SQLite history into an empty
//! PostgreSQL database in one transaction, and reports each table's rows.

use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;

use crate::config::{self, Database};
use crate::daemon::{self, PidState};
use crate::db::{self, copy, pg, pgmigrations};

#[derive(Debug, Args)]
pub struct UpgradeDbArgs {
    /// The master directory (the one holding master.ini).
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct CopyDbArgs {
    /// The master directory whose state.sqlite is copied (stopped).
    pub dir: PathBuf,
    /// The target: postgresql://USER@HOST:PORT/DBNAME[?sslmode=…], an empty
    /// database (a new one is given autobot's schema first).
    pub url: String,
    /// A file holding the target's password alone [default: the master.ini's
    /// dbPasswordFile when its `db` is this URL, else PGPASSFILE or ~/.pgpass].
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// The master directory's master.ini, loaded (with the command's context).
fn master_config(dir: &std::path::Path) -> anyhow::Result<config::MasterConfig> {
    let ini = dir.join("master.ini");
    if !ini.is_file() {
        bail!(
            "{} is not a master directory: it has no master.ini (for a pair made by `autobot create`, give DIR/master)",
            dir.display()
        );
    }
    config::load(&ini).with_context(|| {
        format!(
            "{} does not load; fix it first (`autobot checkconfig {}` shows the same error)",
            ini.display(),
            dir.display()
        )
    })
}

fn refuse_running(dir: &std::path::Path, what: &str) -> anyhow::Result<()> {
    if let PidState::Running(pid) = daemon::pid_state(dir)? {
        bail!(
            "the master in {} is running (pid {pid}); stop it first with `autobot stop {}`: {what}",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// "from version A to B" or "already at version B".
fn versions(from: i64, to: i64) -> String {
    if from == to {
        format!("schema version {to}, already current")
    } else if from == 0 {
        format!("schema created (version 0 to {to})")
    } else {
        format!("migrated from schema version {from} to {to}")
    }
}

/// `autobot upgrade-db DIR`.
pub fn upgrade_db_cmd(args: &UpgradeDbArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    let cfg = master_config(dir)?;
    match &cfg.database {
        Database::Sqlite => {
            refuse_running(dir, "it migrates its state.sqlite itself at start")?;
            let path = dir.join(db::DB_FILE);
            let (from, to) = db::upgrade_sqlite(&path)
                .with_context(|| format!("cannot upgrade {}", path.display()))?;
            println!("{}: {}", path.display(), versions(from, to));
        }
        Database::Postgres { url, .. } => {
            let password = cfg.database.password()?;
            let mut client = pg::connect(url, password.as_deref())?;
            let (from, to) = pgmigrations::migrate(&mut client, &url.to_string())?;
            println!("{url}: {}", versions(from, to));
        }
    }
    Ok(())
}

/// `autobot copy-db DIR URL`.
pub fn copy_db_cmd(args: &CopyDbArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    let cfg = master_config(dir)?;
    refuse_running(
        dir,
        "the copy must see the history as it stands, with no build writing meanwhile",
    )?;
    let url = pg::parse_url(&args.url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let password = match &args.password_file {
        Some(f) => Some(pg::read_password_file(f)?),
        None => match &cfg.database {
            Database::Postgres { url: own, .. } if *own == url => cfg.database.password()?,
            _ => None,
        },
    };
    let sqlite = dir.join(db::DB_FILE);
    if !sqlite.is_file() {
        bail!(
            "{} does not exist: the master in {} has no history to copy",
            sqlite.display(),
            dir.display()
        );
    }
    let mut client = pg::connect(&url, password.as_deref())?;
    let copied = copy::copy_sqlite_to_pg(&sqlite, dir, &mut client, &url.to_string())?;
    let total: u64 = copied.tables.iter().map(|(_, n)| n).sum();
    println!(
        "copied {} into {url}: {total} rows in {} tables, in one transaction",
        sqlite.display(),
        copied.tables.len()
    );
    for (t, n) in &copied.tables {
        println!("  {t}: {n}");
    }
    println!(
        "step logs stay in {}/logs, where the copied rows point; this autobot still runs a \
         master on state.sqlite only",
        dir.display()
    );
    Ok(())
}
