//! `autobot upgrade-master DIR`: bring a master directory made by an older autobot
//! up to this one, in place, as Buildbot's `buildbot upgrade-master` does.
//!
//! It runs only on a stopped master (the pid file's lock says so). It applies the
//! database migrations `state.sqlite` lacks (what `autobot start` would do on its
//! own, but here with a report, before the master is started again), refuses a
//! database from a newer autobot, writes the files today's `create-master` writes
//! that the directory lacks (the master's systemd unit), and reports what the
//! `master.ini` still says in an old way: every key this autobot reads but which an
//! older one wrote with a meaning that is now unsafe or refused (a password printed
//! in the documentation, no change credentials, force open to anyone), each with
//! its file:line and how to fix it. It changes nothing in `master.ini` itself.

use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};

use crate::daemon::{self, PidState};
use crate::db;

#[derive(Debug, Args)]
pub struct UpgradeMasterArgs {
    /// The master directory (the one holding master.ini), stopped.
    pub dir: PathBuf,
}

/// The file name of the master's systemd unit, written by `create-master`.
pub const MASTER_UNIT: &str = "autobot-master.service";

/// `autobot upgrade-master DIR`.
pub fn upgrade_master_cmd(args: &UpgradeMasterArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    let ini = dir.join("master.ini");
    if !ini.is_file() {
        bail!(
            "{} is not a master directory: it has no master.ini (for a pair made by `autobot create`, give DIR/master)",
            dir.display()
        );
    }
    if let PidState::Running(pid) = daemon::pid_state(dir)? {
        bail!(
            "the master in {} is running (pid {pid}); stop it first with `autobot stop {}` (or `--clean` to let its builds finish)",
            dir.display(),
            dir.display()
        );
    }
    let cfg = crate::config::load(&ini).with_context(|| {
        format!(
            "{} does not load; fix it first (`autobot checkconfig {}` shows the same error)",
            ini.display(),
            dir.display()
        )
    })?;

    // The database.
    let path = dir.join(db::DB_FILE);
    let known = db::migrations::MIGRATIONS.len();
    if path.is_file() {
        let found = schema_version(&path)?;
        if found > known as i64 {
            bail!(
                "{} has schema version {found}, made by a newer autobot (this one, {}, knows up to {known}); \
                 run that autobot, or restore a backup made before it was used",
                path.display(),
                crate::VERSION
            );
        }
        let db =
            db::Db::open(&path).with_context(|| format!("cannot upgrade {}", path.display()))?;
        drop(db);
        if found == known as i64 {
            println!(
                "{}: schema version {known}, already current",
                path.display()
            );
        } else {
            println!(
                "{}: migrated from schema version {found} to {known}",
                path.display()
            );
        }
    } else {
        println!(
            "{}: not there yet; the master makes it at its first start",
            path.display()
        );
    }

    // Files today's create-master writes.
    let unit = dir.join(MASTER_UNIT);
    if !unit.exists() {
        let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        let text = crate::templates::master_systemd_unit(
            &super::create::current_exe_string(),
            &abs.to_string_lossy(),
        );
        std::fs::write(&unit, text).with_context(|| format!("cannot write {}", unit.display()))?;
        println!(
            "{}: written (a systemd unit for the master)",
            unit.display()
        );
    }

    // What master.ini says in an old way.
    let mut findings: Vec<String> = cfg.warnings.iter().map(|w| w.to_string()).collect();
    if !cfg.accepts_changes() {
        findings.push(format!(
            "{}: [:master:]: no changeuser and changepassword (autobot 0.2.0 accepted Changes without them); {}",
            ini.display(),
            cfg.changes_off_reason()
        ));
    }
    if findings.is_empty() {
        println!(
            "{}: nothing out of date; the master is ready for `autobot start {}`",
            ini.display(),
            dir.display()
        );
    } else {
        println!(
            "{}: {} thing{} to look at (the master starts as it is, but see each):",
            ini.display(),
            findings.len(),
            if findings.len() == 1 { "" } else { "s" }
        );
        for f in &findings {
            println!("  {f}");
        }
    }
    Ok(())
}

/// `PRAGMA user_version` of a database file, read without changing it.
fn schema_version(path: &Path) -> anyhow::Result<i64> {
    let c = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    c.query_row("PRAGMA user_version", [], |r| r.get(0))
        .with_context(|| format!("cannot read the schema version of {}", path.display()))
}
