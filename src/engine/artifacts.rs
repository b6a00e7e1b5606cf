//! Where the master keeps artifacts: `MASTERDIR/artifacts/BUILDER/NUMBER/PATH`,
//! and the file operations on it, each confined to that tree.
//!
//! A PATH comes from `master.ini`, a property or a slave's glob, so it is
//! checked twice: lexically ([`check_rel`]: relative, no `..`, `.` or empty
//! component, no NUL) and by the kernel: every directory and file is reached
//! one component at a time with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` from the descriptor of the artifacts directory, so
//! nothing — a symlink an unpacked tarball left, a rename meanwhile — leads
//! outside it. An upload is written to a hidden temporary sibling
//! ([`PartFile`]) and renamed into place only once complete (its row is
//! written after that), so a reader never sees half a file and a refused
//! upload leaves nothing. Used by the Build's transfer steps (writes), the web
//! (reads) and the retention task (deletes).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// The directory below the master directory that holds the artifacts.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// Why an artifact path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("artifact path {path:?}: {why}")]
pub struct BadPath {
    pub path: String,
    pub why: &'static str,
}

/// The components of a relative artifact path, or why it is refused.
pub fn check_rel(path: &str) -> Result<Vec<&str>, BadPath> {
    let bad = |why| BadPath {
        path: path.to_string(),
        why,
    };
    if path.is_empty() {
        return Err(bad("empty"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute; it must stay inside the artifacts directory"));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(bad("contains NUL or a backslash"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    for p in &parts {
        match *p {
            ".." => return Err(bad("has `..`; it must stay inside the artifacts directory")),
            "." | "" => return Err(bad("has an empty or `.` component")),
            _ => {}
        }
    }
    Ok(parts)
}

fn how(flags: OFlag, mode: u32) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode as nix::libc::mode_t))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
}

/// `openat2` beneath `dir`, retried on `EAGAIN`/`EINTR`.
fn open_beneath(dir: impl AsFd, path: &str, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
    let dir = dir.as_fd();
    let mut last = Errno::EAGAIN;
    for _ in 0..16 {
        match nix::fcntl::openat2(dir, path, how(flags, mode)) {
            Ok(fd) => return Ok(fd),
            Err(e @ (Errno::EAGAIN | Errno::EINTR)) => last = e,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Err(io::Error::from(last))
}

/// The directory `parts` names beneath `dir`, each component made if missing
/// (when `create`) and opened without following a link.
fn walk_dirs(dir: OwnedFd, parts: &[&str], create: bool) -> io::Result<OwnedFd> {
    let mut fd = dir;
    for p in parts {
        if create {
            match nix::sys::stat::mkdirat(&fd, *p, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        fd = open_beneath(&fd, p, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)?;
    }
    Ok(fd)
}

/// A counter for the temporary names of this process.
static PARTS: AtomicU64 = AtomicU64::new(0);

/// The artifacts tree of one master.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

/// A file being written: a hidden temporary name in its final directory,
/// renamed to its name by [`PartFile::commit`], removed by
/// [`PartFile::abandon`] (or when dropped uncommitted).
#[derive(Debug)]
pub struct PartFile {
    dir: OwnedFd,
    tmp: String,
    name: String,
    /// Where it is, for messages.
    pub shown: PathBuf,
    done: bool,
}

impl PartFile {
    /// Put the complete file in place (replacing an older one of that name).
    pub fn commit(mut self) -> io::Result<()> {
        nix::fcntl::renameat(&self.dir, self.tmp.as_str(), &self.dir, self.name.as_str())
            .map_err(io::Error::from)?;
        self.done = true;
        Ok(())
    }

    /// Remove what was written.
    pub fn abandon(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        if !self.done {
            self.done = true;
            let _ = nix::unistd::unlinkat(
                &self.dir,
                self.tmp.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A directory being filled (an `upload-dir`): unpacked into a hidden
/// temporary directory, renamed into place by [`PartDir::commit`].
#[derive(Debug)]
pub struct PartDir {
    dir: OwnedFd,
    tmp: String,
    name: String,
    /// The temporary directory's path, for the unpacking.
    pub path: PathBuf,
    done: bool,
}

impl PartDir {
    /// Put the complete directory in place (refused when one of that name is
    /// there and not empty).
    pub fn commit(mut self) -> io::Result<()> {
        nix::fcntl::renameat(&self.dir, self.tmp.as_str(), &self.dir, self.name.as_str())
            .map_err(io::Error::from)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PartDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One regular file found below an unpacked directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// Relative to the directory, `/`-separated.
    pub rel: String,
    pub size: u64,
    pub sha256: String,
}

impl ArtifactStore {
    /// The store of the master in `basedir`.
    pub fn new(basedir: &Path) -> ArtifactStore {
        ArtifactStore {
            root: basedir.join(ARTIFACTS_DIR),
        }
    }

    /// `MASTERDIR/artifacts`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `MASTERDIR/artifacts/BUILDER/NUMBER`.
    pub fn build_dir(&self, builder: &str, number: i64) -> PathBuf {
        self.root.join(builder).join(number.to_string())
    }

    fn open_root(&self, create: bool) -> io::Result<OwnedFd> {
        if create {
            std::fs::create_dir_all(&self.root)?;
        }
        let f = std::fs::File::open(&self.root)?;
        Ok(OwnedFd::from(f))
    }

    /// The Build's directory, opened (and made when `create`).
    fn open_build(&self, builder: &str, number: i64, create: bool) -> io::Result<OwnedFd> {
        let n = number.to_string();
        let parts = check_rel(builder)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        if parts.len() != 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("builder name {builder:?}"),
            ));
        }
        walk_dirs(self.open_root(create)?, &[builder, n.as_str()], create)
    }

    /// Start writing the Build's artifact `path` (its directories are made).
    pub fn create(
        &self,
        builder: &str,
        number: i64,
        path: &str,
    ) -> io::Result<(PartFile, std::fs::File)> {
        let parts = check_rel(path).map_err(invalid)?;
        let (name, dirs) = parts.split_last().ok_or_else(|| invalid("empty path"))?;
        let dir = walk_dirs(self.open_build(builder, number, true)?, dirs, true)?;
        let tmp = format!(
            ".{name}.part-{}-{}",
            std::process::id(),
            PARTS.fetch_add(1, Ordering::Relaxed)
        );
        let fd = open_beneath(
            &dir,
            &tmp,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            0o644,
        )?;
        Ok((
            PartFile {
                dir,
                tmp,
                name: name.to_string(),
                shown: self.build_dir(builder, number).join(path),
                done: false,
            },
            std::fs::File::from(fd),
        ))
    }

    /// Start filling the Build's artifact directory `path`.
    pub fn create_dir(&self, builder: &str, number: i64, path: &str) -> io::Result<PartDir> {
        let parts = check_rel(path).map_err(invalid)?;
        let (name, dirs) = parts.split_last().ok_or_else(|| invalid("empty path"))?;
        let dir = walk_dirs(self.open_build(builder, number, true)?, dirs, true)?;
        let tmp = format!(
            ".{name}.part-{}-{}",
            std::process::id(),
            PARTS.fetch_add(1, Ordering::Relaxed)
        );
        nix::sys::stat::mkdirat(&dir, tmp.as_str(), Mode::from_bits_truncate(0o755))
            .map_err(io::Error::from)?;
        let mut at = self.build_dir(builder, number);
        for d in dirs {
            at.push(d);
        }
        Ok(PartDir {
            dir,
            path: at.join(&tmp),
            tmp,
            name: name.to_string(),
            done: false,
        })
    }

    /// Open the Build's artifact `path` to read.
    pub fn open(&self, builder: &str, number: i64, path: &str) -> io::Result<std::fs::File> {
        let parts = check_rel(path).map_err(invalid)?;
        let (name, dirs) = parts.split_last().ok_or_else(|| invalid("empty path"))?;
        let dir = walk_dirs(self.open_build(builder, number, false)?, dirs, false)?;
        let fd = open_beneath(&dir, name, OFlag::O_RDONLY, 0)?;
        let f = std::fs::File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(invalid("not a file"));
        }
        Ok(f)
    }

    /// Open `path` relative to `MASTERDIR/artifacts` to read (a download step's
    /// source).
    pub fn open_any(&self, path: &str) -> io::Result<std::fs::File> {
        let parts = check_rel(path).map_err(invalid)?;
        let (name, dirs) = parts.split_last().ok_or_else(|| invalid("empty path"))?;
        let dir = walk_dirs(self.open_root(false)?, dirs, false)?;
        let fd = open_beneath(&dir, name, OFlag::O_RDONLY, 0)?;
        let f = std::fs::File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(invalid("not a file"));
        }
        Ok(f)
    }

    /// Delete the Build's artifacts directory; the bytes freed.
    pub fn remove_build(&self, builder: &str, number: i64) -> io::Result<u64> {
        if check_rel(builder).map(|p| p.len()) != Ok(1) {
            return Err(invalid("bad builder name"));
        }
        let dir = self.build_dir(builder, number);
        let freed = du(&dir);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        }
        // The builder's directory goes when its last Build's does.
        let _ = std::fs::remove_dir(self.root.join(builder));
        Ok(freed)
    }
}

/// Bytes of the regular files below `dir` (links not followed).
fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => n += du(&e.path()),
            Ok(t) if t.is_file() => n += e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => {}
        }
    }
    n
}

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

/// SHA-256 of a file, read in 1 MiB blocks; (size, hex).
pub fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        ctx.update(&buf[..n]);
    }
    Ok((size, crate::slavelink::transfer::hex(ctx.finish().as_ref())))
}

/// The regular files below an unpacked directory, with their size and hash;
/// anything else a tarball brought (symlinks, devices, fifos) is removed and
/// named in `dropped`.
pub fn settle_dir(dir: &Path, dropped: &mut Vec<String>) -> io::Result<Vec<FoundFile>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push((e.path(), rel));
            } else if t.is_file() && check_rel(&rel).is_ok() {
                let (size, sha256) = hash_file(&e.path())?;
                out.push(FoundFile { rel, size, sha256 });
            } else {
                std::fs::remove_file(e.path())?;
                dropped.push(rel);
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn paths_stay_inside() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
        ] {
            assert!(check_rel(bad).is_err(), "{bad}");
        }
        assert_eq!(check_rel("a/b.txt").unwrap(), vec!["a", "b.txt"]);
    }

    #[test]
    fn a_part_file_appears_only_when_committed_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path());
        let (part, mut f) = store.create("b", 1, "d/x.bin").unwrap();
        f.write_all(b"hello").unwrap();
        assert!(store.open("b", 1, "d/x.bin").is_err());
        part.commit().unwrap();
        assert_eq!(
            std::fs::read(store.build_dir("b", 1).join("d/x.bin")).unwrap(),
            b"hello"
        );
        let (part, _f) = store.create("b", 1, "d/y.bin").unwrap();
        part.abandon();
        let names: Vec<_> = std::fs::read_dir(store.build_dir("b", 1).join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A symlink inside the tree is never followed, to a file or a directory.
        std::os::unix::fs::symlink("/etc", store.build_dir("b", 1).join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", store.build_dir("b", 1).join("pw")).unwrap();
        assert!(store.open("b", 1, "pw").is_err());
        assert!(store.open("b", 1, "etc/passwd").is_err());
        assert!(store.create("b", 1, "etc/evil").is_err());
        assert!(store.open_any("b/1/pw").is_err());
        assert!(store.open_any("b/1/d/x.bin").is_ok());
        assert!(store.remove_build("b", 1).unwrap() >= 5);
        assert!(!store.build_dir("b", 1).exists());
    }
}
