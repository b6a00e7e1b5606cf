//! File-system commands: mkdir, rmdir, cpdir, stat, glob, listdir, rmfile.
//!
//! Each reports as `buildbot_worker/commands/fs.py` does: `rc` 0 on success, else a
//! `header` "NAME: strerror: path" and `rc` = errno. All paths were resolved inside
//! the basedir by `prepare`. `rmdir` is done in-process with `rm -rf` semantics
//! (missing paths are fine, read-only directories are made writable first); `cpdir`
//! runs `cp -R -P -p -v` like the worker, so symbolic links are copied as links and
//! never followed out of the tree.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rmpv::Value;

use super::process::{self, Finish, ProcessSpec};
use super::{errno, strerror, Interrupt, SlaveEnv};
use crate::slave::link::LinkClosed;
use crate::slave::updates::Updates;

type Done = Result<Option<String>, LinkClosed>;

async fn fail(up: &mut Updates, name: &str, e: &std::io::Error, path: &Path) -> Done {
    up.header(&format!("{name}: {}: {}\n", strerror(e), path.display()))
        .await?;
    up.send("rc", Value::from(errno(e))).await?;
    Ok(None)
}

pub async fn mkdir(paths: Vec<PathBuf>, umask: u32, up: &mut Updates) -> Done {
    for p in &paths {
        if p.is_dir() {
            continue;
        }
        let r = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o777 & !umask)
            .create(p);
        if let Err(e) = r {
            tracing::info!("mkdir {} failed: {e}", p.display());
            return fail(up, "mkdir", &e, p).await;
        }
    }
    up.send("rc", Value::from(0)).await?;
    Ok(None)
}

pub async fn rmdir(paths: Vec<PathBuf>, up: &mut Updates) -> Done {
    let mut rc = 0;
    for p in paths {
        let path = p.clone();
        let r = tokio::task::spawn_blocking(move || remove_tree(&path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = r {
            tracing::info!("rmdir {} failed: {e}", p.display());
            up.header(&format!("rmdir: {}: {}\n", strerror(&e), p.display()))
                .await?;
            rc = errno(&e);
        }
    }
    up.send("rc", Value::from(rc)).await?;
    Ok(None)
}

/// `rm -rf` (after `chmod u+rwx` where needed): a missing path is not an error and a
/// symbolic link is removed, never followed.
pub fn remove_tree(p: &Path) -> std::io::Result<()> {
    let md = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !md.is_dir() {
        return std::fs::remove_file(p);
    }
    if md.mode() & 0o700 != 0o700 {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(md.mode() | 0o700))?;
    }
    for entry in std::fs::read_dir(p)? {
        remove_tree(&entry?.path())?;
    }
    std::fs::remove_dir(p)
}

pub async fn cpdir(
    from: PathBuf,
    to: PathBuf,
    timeout: Option<f64>,
    max_time: Option<f64>,
    env: &SlaveEnv,
    up: &mut Updates,
    interrupt: &mut Interrupt,
) -> Done {
    if let Some(parent) = to.parent() {
        if !parent.exists() {
            let r = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o777 & !env.umask)
                .create(parent);
            if let Err(e) = r {
                return fail(up, "cpdir", &e, parent).await;
            }
        }
    }
    let argv: Vec<String> = vec![
        "cp".into(),
        "-R".into(),
        "-P".into(),
        "-p".into(),
        "-v".into(),
        from.display().to_string(),
        to.display().to_string(),
    ];
    let mut spec = ProcessSpec::new(argv, env.jail.root().to_path_buf(), env.umask);
    spec.send_rc = false;
    spec.timeout = timeout;
    spec.max_time = max_time;
    match process::run(spec, up, interrupt).await? {
        Finish::Rc(rc) => {
            up.send("rc", Value::from(rc)).await?;
            Ok(None)
        }
        Finish::Failed(why) => Ok(Some(why)),
    }
}

pub async fn stat(p: PathBuf, up: &mut Updates) -> Done {
    match std::fs::metadata(&p) {
        Ok(m) => {
            let tuple = Value::Array(vec![
                Value::from(m.mode()),
                Value::from(m.ino()),
                Value::from(m.dev()),
                Value::from(m.nlink()),
                Value::from(m.uid()),
                Value::from(m.gid()),
                Value::from(m.size()),
                Value::from(m.atime()),
                Value::from(m.mtime()),
                Value::from(m.ctime()),
            ]);
            up.send("stat", tuple).await?;
            up.send("rc", Value::from(0)).await?;
            Ok(None)
        }
        Err(e) => fail(up, "stat", &e, &p).await,
    }
}

pub async fn glob(pattern: PathBuf, relative: bool, env: &SlaveEnv, up: &mut Updates) -> Done {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let text = pattern.to_string_lossy().into_owned();
    let paths = match glob::glob_with(&text, opts) {
        Ok(p) => p,
        Err(e) => {
            up.header(&format!("glob: {}: {text}\n", e.msg)).await?;
            up.send("rc", Value::from(1)).await?;
            return Ok(None);
        }
    };
    let root = env.jail.root();
    let mut files = Vec::new();
    for p in paths.flatten() {
        if !env.jail.contains(&p, false) {
            continue;
        }
        let shown = if relative {
            p.strip_prefix(root).unwrap_or(&p).to_path_buf()
        } else {
            p
        };
        files.push(Value::from(shown.to_string_lossy().into_owned()));
    }
    up.send("files", Value::Array(files)).await?;
    up.send("rc", Value::from(0)).await?;
    Ok(None)
}

pub async fn listdir(p: PathBuf, up: &mut Updates) -> Done {
    match std::fs::read_dir(&p) {
        Ok(rd) => {
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            up.send(
                "files",
                Value::Array(names.into_iter().map(Value::from).collect()),
            )
            .await?;
            up.send("rc", Value::from(0)).await?;
            Ok(None)
        }
        Err(e) => fail(up, "listdir", &e, &p).await,
    }
}

pub async fn rmfile(p: PathBuf, up: &mut Updates) -> Done {
    match std::fs::remove_file(&p) {
        Ok(()) => {
            up.send("rc", Value::from(0)).await?;
            Ok(None)
        }
        Err(e) => fail(up, "rmfile", &e, &p).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_tree_handles_read_only_and_missing() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/b/f"), "x").unwrap();
        std::fs::set_permissions(t.join("a/b/f"), std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::set_permissions(t.join("a/b"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::set_permissions(t.join("a"), std::fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&t).unwrap();
        assert!(!t.exists());
        remove_tree(&t).unwrap();
    }

    #[test]
    fn remove_tree_does_not_follow_links() {
        let d = tempfile::tempdir().unwrap();
        let keep = tempfile::tempdir().unwrap();
        std::fs::write(keep.path().join("precious"), "x").unwrap();
        std::fs::create_dir(d.path().join("t")).unwrap();
        std::os::unix::fs::symlink(keep.path(), d.path().join("t/link")).unwrap();
        remove_tree(&d.path().join("t")).unwrap();
        assert!(keep.path().join("precious").exists());
    }
}
