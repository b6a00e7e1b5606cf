//! `autobot backup DIR FILE` and `autobot restore FILE DIR`: a master's state in
//! one tar archive, taken while the master runs, and put back.
//!
//! The archive holds `state.sqlite` (a consistent copy through SQLite's online
//! backup API, [`crate::db::backup`]), then the step logs under `logs/` (copied
//! after the database, so every log the copied rows name is there; a log still
//! being written is copied as far as it had got) and `master.ini`. `restore`
//! refuses a directory whose master runs, replaces its `state.sqlite` (and any
//! `-wal`/`-shm` left beside it) and `logs/`, writes `master.ini` only where there
//! is none, and says what it did.

use anyhow::{anyhow, bail, Context};
use clap::Args;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::daemon::{self, PidState};
use crate::db;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The master directory (the one holding master.ini; a pair's DIR/master is
    /// found from DIR). The master may be running.
    pub dir: PathBuf,
    /// The tar archive to write (replaced if it exists).
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A tar archive written by `autobot backup`.
    pub file: PathBuf,
    /// The master directory to restore into (created if missing; a pair's
    /// DIR/master is found from DIR); its master must not be running.
    pub dir: PathBuf,
}

/// The master directory of `dir`: itself, or `dir/master` for a pair.
fn master_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.join("master.ini").is_file() {
        Ok(dir.to_path_buf())
    } else if dir.join("master/master.ini").is_file() {
        Ok(dir.join("master"))
    } else {
        bail!(
            "{} is not a master directory: it has no master.ini",
            dir.display()
        )
    }
}

/// `autobot backup DIR FILE`.
pub fn backup_cmd(args: &BackupArgs) -> anyhow::Result<()> {
    let dir = master_dir(&args.dir)?;
    // Where the step logs are (`sharedDir`), and whether the history is in
    // this directory at all. A master.ini that does not load (being edited)
    // still lets the history be saved: the master directory's logs are taken.
    let config = crate::config::load(&dir.join("master.ini")).ok();
    if let Some(crate::config::MasterConfig {
        database: crate::config::Database::Postgres { url, .. },
        ..
    }) = &config
    {
        bail!(
            "the master in {} keeps its history in PostgreSQL ({url}), which `autobot backup` does \
             not copy: back the database up with PostgreSQL's own tools (e.g. `pg_dump -Fc -f FILE \
             DBNAME`, restored with `pg_restore`) and copy the step logs and artifacts under {}",
            dir.display(),
            config
                .as_ref()
                .map(|c| c.data_dir())
                .unwrap_or_else(|| dir.clone())
                .display()
        );
    }
    let data_dir = config
        .as_ref()
        .map(|c| c.data_dir())
        .unwrap_or_else(|| dir.clone());
    let state = dir.join(db::DB_FILE);
    if !state.is_file() {
        bail!(
            "{} has no {}: the master has never been started, so there is nothing to back up",
            dir.display(),
            db::DB_FILE
        );
    }
    let parent = match args.file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = tempfile_dir(&parent)?;
    let copy = work.join(db::DB_FILE);
    db::backup::copy_online(&state, &copy)
        .with_context(|| format!("cannot copy {}", state.display()))?;
    let version = db::backup::schema_version_of(&copy)?;

    let partial = work.join("archive.tar");
    let out =
        File::create(&partial).with_context(|| format!("cannot write {}", partial.display()))?;
    let mut tar = tar::Builder::new(out);
    tar.append_path_with_name(&copy, db::DB_FILE)
        .context("cannot add the database to the archive")?;
    let mut logs = 0usize;
    let logs_dir = data_dir.join("logs");
    if logs_dir.is_dir() {
        append_tree(&mut tar, &logs_dir, Path::new("logs"), &mut logs)?;
    }
    let ini = dir.join("master.ini");
    tar.append_path_with_name(&ini, "master.ini")
        .with_context(|| format!("cannot add {} to the archive", ini.display()))?;
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &args.file)
        .with_context(|| format!("cannot write {}", args.file.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "backed up the master in {} to {}: {} (schema version {version}), {logs} log file{} and master.ini",
        dir.display(),
        args.file.display(),
        db::DB_FILE,
        if logs == 1 { "" } else { "s" }
    );
    Ok(())
}

/// A fresh work directory beside the archive (so the final rename stays on one
/// filesystem).
fn tempfile_dir(parent: &Path) -> anyhow::Result<PathBuf> {
    let dir = parent.join(format!(".autobot-backup.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Add every file under `dir` as `name/...`. A file is copied as far as it had
/// got when it was opened (a log being written grows meanwhile); a file deleted
/// meanwhile is left out, except a step log compressed meanwhile
/// (`logCompression`), whose `NAME.log.zst` is copied instead. A compressed log
/// still being written (`.zst.tmp`) is left out.
fn append_tree(
    tar: &mut tar::Builder<File>,
    dir: &Path,
    name: &Path,
    count: &mut usize,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    let listed: std::collections::HashSet<std::ffi::OsString> =
        entries.iter().map(|e| e.file_name()).collect();
    for entry in entries {
        let path = entry.path();
        let inner = name.join(entry.file_name());
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            tar.append_dir(&inner, &path)
                .with_context(|| format!("cannot add {} to the archive", path.display()))?;
            append_tree(tar, &path, &inner, count)?;
        } else if kind.is_file() {
            if entry.file_name().as_encoded_bytes().ends_with(b".zst.tmp") {
                continue;
            }
            if append_file(tar, &path, &inner)? {
                *count += 1;
                continue;
            }
            let zst = crate::logstore::compressed_path(&path);
            let zst_name = zst.file_name().map(|n| n.to_os_string());
            let is_log = path.extension().is_some_and(|e| e == "log");
            if is_log && zst_name.is_some_and(|n| !listed.contains(&n)) {
                let mut inner_zst = inner.into_os_string();
                inner_zst.push(".zst");
                if append_file(tar, &zst, Path::new(&inner_zst))? {
                    *count += 1;
                }
            }
        }
    }
    Ok(())
}

/// Add one file, streamed up to the size it has now (a log being written only
/// grows, so that many bytes are there to read); `false` when it is gone.
fn append_file(tar: &mut tar::Builder<File>, path: &Path, inner: &Path) -> anyhow::Result<bool> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata(&meta);
    header.set_size(meta.len());
    tar.append_data(&mut header, inner, (&mut file).take(meta.len()))
        .with_context(|| format!("cannot add {} to the archive", path.display()))?;
    Ok(true)
}

/// `autobot restore FILE DIR`.
pub fn restore_cmd(args: &RestoreArgs) -> anyhow::Result<()> {
    // A `create` pair's directory: its master.
    let args = &match master_dir(&args.dir) {
        Ok(dir) => RestoreArgs {
            file: args.file.clone(),
            dir,
        },
        Err(_) => RestoreArgs {
            file: args.file.clone(),
            dir: args.dir.clone(),
        },
    };
    let dir = &args.dir;
    if let PidState::Running(pid) = daemon::pid_state(dir)? {
        bail!(
            "the master in {} is running (pid {pid}); restoring would overwrite the state it is using: stop it first with `autobot stop {}`",
            dir.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stage = dir.join(format!(".autobot-restore.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)
        .with_context(|| format!("cannot create {}", stage.display()))?;
    let result = restore_from(args, &stage);
    let _ = std::fs::remove_dir_all(&stage);
    result
}

fn restore_from(args: &RestoreArgs, stage: &Path) -> anyhow::Result<()> {
    let dir = &args.dir;
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    tar::Archive::new(file).unpack(stage).with_context(|| {
        format!(
            "{} is not a backup made by `autobot backup`",
            args.file.display()
        )
    })?;
    let state = stage.join(db::DB_FILE);
    if !state.is_file() {
        bail!(
            "{} holds no {}: it is not a backup made by `autobot backup`",
            args.file.display(),
            db::DB_FILE
        );
    }
    let version = db::backup::schema_version_of(&state)
        .map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    let known = db::backup::known_schema_version();

    let target = dir.join(db::DB_FILE);
    let replaced = target.exists();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = PathBuf::from(format!("{}{suffix}", target.display()));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
    }
    std::fs::rename(&state, &target)
        .with_context(|| format!("cannot write {}", target.display()))?;
    println!(
        "{} {} (schema version {version})",
        if replaced { "replaced" } else { "restored" },
        target.display()
    );

    let logs = dir.join("logs");
    if logs.exists() {
        std::fs::remove_dir_all(&logs)
            .with_context(|| format!("cannot remove {}", logs.display()))?;
    }
    let staged_logs = stage.join("logs");
    if staged_logs.is_dir() {
        std::fs::rename(&staged_logs, &logs)
            .with_context(|| format!("cannot write {}", logs.display()))?;
        println!("restored the step logs in {}", logs.display());
    } else {
        println!("the backup has no step logs");
    }

    let ini = dir.join("master.ini");
    let staged_ini = stage.join("master.ini");
    if ini.exists() {
        println!(
            "kept {} (the backup's is not used; remove it and restore again to take the backup's)",
            ini.display()
        );
    } else if staged_ini.is_file() {
        std::fs::rename(&staged_ini, &ini)
            .with_context(|| format!("cannot write {}", ini.display()))?;
        println!("restored {}", ini.display());
    }
    if version > known {
        println!(
            "note: this backup's database has schema version {version}, from a newer autobot; \
             this one ({}) knows up to {known} and will refuse to start it: use the newer autobot",
            crate::VERSION
        );
    } else {
        println!("start it with:  autobot start {}", dir.display());
    }
    Ok(())
}
