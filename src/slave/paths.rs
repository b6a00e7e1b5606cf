//! Keeping the slave inside its basedir: every path the master names is resolved
//! here, and every file the slave touches for a command is opened through here.
//!
//! A path argument (workdir, paths, dir, fromdir/todir, workersrc/workerdest,
//! logfiles) may be relative (to the basedir, or to a command's workdir) or absolute;
//! either way it must lead to something under the slave's basedir. There are two
//! layers:
//!
//! * **When the command is started**, [`Jail::resolve`] removes `.` and `..`
//!   lexically (so `a/../../x` cannot climb out), turns the path into one relative to
//!   the basedir ([`JPath`]), and probes what exists of it: a path that leads out
//!   (`..`, an absolute path elsewhere, a symbolic link out) is refused with an
//!   exception before anything runs. That is a courtesy — a clear early answer —
//!   not the protection.
//! * **At the moment of use**, every operation opens its path relative to a
//!   directory descriptor of the basedir with Linux's `openat2(2)` and
//!   `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` ([`Jail::open`]): the kernel follows
//!   each symbolic link on the way only while it stays beneath the basedir, and fails
//!   with `EXDEV` the moment one leads out (absolute links always do), so a link
//!   swapped in after the check cannot redirect the operation. Operations on a final
//!   name (unlink, mkdir, symlink, remove a tree, create a file) work on the parent's
//!   descriptor with the `*at` calls and never follow a final link that could lead
//!   out ([`Jail::open_parent`]); the tree operations built on these are in
//!   [`crate::slave::tree`]. A child process gets its working directory through a
//!   descriptor opened this way (`/proc/self/fd/N`, see [`Jail::cwd_of`]).
//!
//! Why `openat2` through the `nix` crate and not `cap-std`: the slave is Linux-only
//! already (process groups with `/proc` look-ups, pseudo-terminals, the watchdog),
//! `nix` is a dependency anyway, and one `openat2` call is the whole kernel-enforced
//! rule, race-free against concurrent renames (the kernel answers `EAGAIN`, retried
//! here), with nothing emulated in user space. `cap-std` would add half a dozen
//! crates for the same system call on Linux. The kernel must be Linux 5.6 or later:
//! [`Jail::new`] checks that `openat2` works and refuses to start otherwise, so the
//! slave never runs unconfined.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Why a path given by the master was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {path:?} is outside the slave's basedir {root}; refused")]
    Outside { path: String, root: String },
    #[error("path {path:?} has too many levels of symbolic links; refused")]
    Loop { path: String },
    #[error("path {path:?} is the slave's basedir itself; refused")]
    IsRoot { path: String },
    #[error("empty path")]
    Empty,
}

/// Why the basedir cannot be used as the slave's jail.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot open the basedir: {0}")]
    Open(#[source] std::io::Error),
    #[error(
        "the kernel cannot confine file operations to the basedir (openat2 with \
         RESOLVE_BENEATH: {0}); Linux 5.6 or later is needed"
    )]
    NoOpenat2(Errno),
    #[error(
        "/proc/self/fd is not available ({0}); the slave needs /proc mounted to start \
         commands in a directory it opened beneath its basedir"
    )]
    NoProc(std::io::Error),
}

/// A path beneath the basedir: `rel` is relative to it (empty for the basedir
/// itself, never with `.`/`..`); `shown` is the absolute path, for messages, the
/// `PWD` of a child and the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JPath {
    rel: PathBuf,
    shown: PathBuf,
}

impl JPath {
    /// The path relative to the basedir (empty for the basedir).
    pub fn rel(&self) -> &Path {
        &self.rel
    }

    /// The absolute path as the master and the logs see it.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// Whether this is the basedir itself.
    pub fn is_root(&self) -> bool {
        self.rel.as_os_str().is_empty()
    }

    /// The last component (`None` for the basedir).
    pub fn file_name(&self) -> Option<&OsStr> {
        self.rel.file_name()
    }

    /// The parent directory (`None` for the basedir).
    pub fn parent(&self) -> Option<JPath> {
        if self.is_root() {
            return None;
        }
        Some(JPath {
            rel: self.rel.parent().map(Path::to_path_buf).unwrap_or_default(),
            shown: self
                .shown
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        })
    }

    /// A child of this path; `name` is one normal component.
    pub fn join(&self, name: &OsStr) -> JPath {
        JPath {
            rel: self.rel.join(name),
            shown: self.shown.join(name),
        }
    }

    /// The relative path as `openat2` wants it (`.` for the basedir).
    fn arg(&self) -> &Path {
        if self.is_root() {
            Path::new(".")
        } else {
            &self.rel
        }
    }
}

/// The slave's basedir: its canonical path and an open descriptor every file
/// operation starts from.
#[derive(Debug, Clone)]
pub struct Jail {
    root: PathBuf,
    dir: Arc<OwnedFd>,
}

/// How many times an `openat2` that met a concurrent rename (`EAGAIN`) is retried.
const RETRIES: usize = 64;

impl Jail {
    /// A jail at `basedir`, which must exist (it is canonicalized and opened).
    pub fn new(basedir: &Path) -> Result<Jail, JailError> {
        let root = std::fs::canonicalize(basedir).map_err(JailError::Open)?;
        let dir = nix::fcntl::open(
            &root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| JailError::Open(e.into()))?;
        let jail = Jail {
            root,
            dir: Arc::new(dir),
        };
        // Fail closed: without openat2 nothing could be confined.
        match openat2_raw(jail.dir.as_fd(), Path::new("."), OFlag::O_PATH, 0) {
            Ok(_) => {}
            Err(e) => return Err(JailError::NoOpenat2(e)),
        }
        std::fs::metadata(Jail::cwd_of(&jail.dir)).map_err(JailError::NoProc)?;
        Ok(jail)
    }

    /// The canonical basedir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The basedir as a [`JPath`].
    pub fn top(&self) -> JPath {
        JPath {
            rel: PathBuf::new(),
            shown: self.root.clone(),
        }
    }

    /// The path `rel` (relative, already free of `.` and `..`) beneath the basedir.
    pub fn at(&self, rel: &Path) -> JPath {
        let rel = normalize(rel);
        let rel = rel.strip_prefix("/").unwrap_or(&rel).to_path_buf();
        JPath {
            shown: self.root.join(&rel),
            rel,
        }
    }

    /// Where `arg` (relative to `base`, or absolute) leads by its letters alone:
    /// `.` and `..` removed; refused when that is not under the basedir.
    pub fn lexical_in(&self, base: &JPath, arg: &str) -> Result<JPath, PathError> {
        if arg.is_empty() {
            return Err(PathError::Empty);
        }
        let lexical = normalize(&base.shown.join(arg));
        let rel = lexical
            .strip_prefix(&self.root)
            .map_err(|_| self.outside(arg))?
            .to_path_buf();
        Ok(JPath {
            rel,
            shown: lexical,
        })
    }

    /// Resolve `arg` (relative to the basedir, or absolute) to a path inside the
    /// basedir, probing what exists of it now. With `follow_final` false a final
    /// symbolic link is not followed (for removing a link, which never touches its
    /// target).
    pub fn resolve(&self, arg: &str, follow_final: bool) -> Result<JPath, PathError> {
        self.resolve_in(&self.top(), arg, follow_final)
    }

    /// Resolve `arg` relative to `base` (itself already resolved inside the jail).
    pub fn resolve_in(
        &self,
        base: &JPath,
        arg: &str,
        follow_final: bool,
    ) -> Result<JPath, PathError> {
        let p = self.lexical_in(base, arg)?;
        self.probe(&p, arg, follow_final)?;
        Ok(p)
    }

    /// Like [`Jail::resolve`], refusing the basedir itself (for removals).
    pub fn resolve_below(&self, arg: &str, follow_final: bool) -> Result<JPath, PathError> {
        let p = self.resolve(arg, follow_final)?;
        if p.is_root() {
            return Err(PathError::IsRoot {
                path: arg.to_string(),
            });
        }
        Ok(p)
    }

    /// Whether what exists of `p` stays beneath the basedir now. Missing components,
    /// a file in the middle or a permission problem are left for the operation to
    /// report; only a way out (`EXDEV`) or a loop is refused here.
    pub fn probe(&self, p: &JPath, arg: &str, follow_final: bool) -> Result<(), PathError> {
        let flags = if follow_final {
            OFlag::O_PATH
        } else {
            OFlag::O_PATH | OFlag::O_NOFOLLOW
        };
        match openat2_raw(self.dir.as_fd(), p.arg(), flags, 0) {
            Err(Errno::EXDEV) => Err(self.outside(arg)),
            Err(Errno::ELOOP) => Err(PathError::Loop {
                path: arg.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn outside(&self, arg: &str) -> PathError {
        PathError::Outside {
            path: arg.to_string(),
            root: self.root.display().to_string(),
        }
    }

    /// Open `p` beneath the basedir: every symbolic link on the way, the final one
    /// included, is followed only while it stays beneath (else `EXDEV`). `flags` get
    /// `O_CLOEXEC`; `mode` is for `O_CREAT`.
    pub fn open(&self, p: &JPath, flags: OFlag, mode: u32) -> std::io::Result<OwnedFd> {
        openat2_raw(self.dir.as_fd(), p.arg(), flags, mode).map_err(std::io::Error::from)
    }

    /// The directory holding `p` (opened beneath the basedir as an `O_PATH` handle,
    /// which needs no permission on it) and `p`'s last name, for the `*at` calls that
    /// act on a final name without following it. The basedir itself has no parent
    /// here: `EINVAL`.
    pub fn open_parent(&self, p: &JPath) -> std::io::Result<(OwnedFd, OsString)> {
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return Err(Errno::EINVAL.into());
        };
        let fd = self.open(&parent, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)?;
        Ok((fd, name.to_os_string()))
    }

    /// A directory opened beneath the basedir, as a path a child process can be
    /// started in: `/proc/self/fd/N` is resolved by the kernel to exactly the
    /// directory the descriptor holds, whatever links change afterwards. The
    /// descriptor is close-on-exec (it goes away in the child at `exec`, after the
    /// `chdir`) and must stay open until the child has started.
    pub fn cwd_of(fd: &OwnedFd) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }
}

/// `openat2(dir, path, flags | O_CLOEXEC, mode)` with `RESOLVE_BENEATH |
/// RESOLVE_NO_MAGICLINKS`, retried while a concurrent rename makes the kernel answer
/// `EAGAIN` (or a signal `EINTR`).
pub(crate) fn openat2_raw(
    dir: std::os::fd::BorrowedFd<'_>,
    path: &Path,
    flags: OFlag,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode as nix::libc::mode_t))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut last = Errno::EAGAIN;
    for _ in 0..RETRIES {
        match nix::fcntl::openat2(dir, path, how) {
            Ok(fd) => return Ok(fd),
            Err(e @ (Errno::EAGAIN | Errno::EINTR)) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Remove `.` and `..` without looking at the file system (`/..` stays `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Prefix(p) => out.push(p.as_os_str()),
            Component::RootDir => out.push("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jail() -> (tempfile::TempDir, Jail) {
        let dir = tempfile::tempdir().unwrap();
        let j = Jail::new(dir.path()).unwrap();
        (dir, j)
    }

    #[test]
    fn relative_and_absolute_inside_are_accepted() {
        let (_d, j) = jail();
        let p = j.resolve("build/src", true).unwrap();
        assert_eq!(p.shown(), j.root().join("build/src"));
        assert_eq!(p.rel(), Path::new("build/src"));
        let abs = j.root().join("x/y");
        assert_eq!(j.resolve(abs.to_str().unwrap(), true).unwrap().shown(), abs);
        assert_eq!(
            j.resolve("a/../b", true).unwrap().rel(),
            Path::new("b"),
            "dot-dot that stays inside is fine"
        );
        assert!(j.resolve(".", true).unwrap().is_root());
    }

    #[test]
    fn escapes_are_refused() {
        let (_d, j) = jail();
        assert!(matches!(
            j.resolve("../x", true),
            Err(PathError::Outside { .. })
        ));
        assert!(matches!(
            j.resolve("a/../../x", true),
            Err(PathError::Outside { .. })
        ));
        assert!(matches!(
            j.resolve("/etc/passwd", true),
            Err(PathError::Outside { .. })
        ));
        assert!(matches!(j.resolve("", true), Err(PathError::Empty)));
        assert!(matches!(
            j.resolve_below(".", false),
            Err(PathError::IsRoot { .. })
        ));
    }

    #[test]
    fn symlinks_out_are_refused_and_in_are_fine() {
        let (_d, j) = jail();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), j.root().join("out")).unwrap();
        std::fs::create_dir(j.root().join("real")).unwrap();
        std::os::unix::fs::symlink("real", j.root().join("in")).unwrap();
        std::os::unix::fs::symlink("../../..", j.root().join("real/up")).unwrap();
        assert!(j.resolve("out", true).is_err());
        assert!(j.resolve("out/new/file", true).is_err());
        assert!(j.resolve("real/up/etc", true).is_err());
        assert!(j.resolve("in/file", true).is_ok());
        // Removing the link itself never touches the target.
        assert!(j.resolve("out", false).is_ok());
        // A dangling link to an absolute path outside.
        std::os::unix::fs::symlink("/nonexistent/zz", j.root().join("dangle")).unwrap();
        assert!(j.resolve("dangle/x", true).is_err());
        // Loops are refused, not followed forever.
        std::os::unix::fs::symlink("loop2", j.root().join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", j.root().join("loop2")).unwrap();
        assert!(matches!(
            j.resolve("loop1/x", true),
            Err(PathError::Loop { .. })
        ));
    }

    #[test]
    fn open_refuses_a_link_swapped_in_after_the_check() {
        let (_d, j) = jail();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::create_dir(j.root().join("d")).unwrap();
        let p = j.resolve("d/secret", true).unwrap();
        // The check passed; now the directory becomes a link out.
        std::fs::remove_dir(j.root().join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path(), j.root().join("d")).unwrap();
        let e = j.open(&p, OFlag::O_RDONLY, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EXDEV));
        let (parent, name) = (p.parent().unwrap(), p.file_name().unwrap());
        assert_eq!(name, "secret");
        assert!(j.open(&parent, OFlag::O_PATH, 0).is_err());
    }
}
