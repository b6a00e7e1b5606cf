//! File-system operations confined to the slave's basedir: make, remove, copy, list,
//! stat and glob, each done with descriptors so that no path the slave did not
//! open beneath its basedir is ever touched.
//!
//! Every operation starts from [`Jail::open`] / [`Jail::open_parent`] (an
//! `openat2` beneath the basedir, see [`crate::slave::paths`]) and continues inside
//! the tree with `*at` calls on the directory descriptors it opened, one name at a
//! time and with `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`: a symbolic link met inside a
//! tree is removed, copied or listed as a link, never followed. A link swapped in
//! while an operation runs is met by the same rules, so it cannot lead out.
//!
//! [`copy_tree`] replaces `cp -R -P -p` (what `buildbot-worker` runs for `cpdir`):
//! the same destination rule (an existing directory TODIR receives
//! `TODIR/NAME-OF-FROM`), links copied as links, modes, ownership where allowed,
//! and access/modification times kept, a directory never copied into itself. One
//! difference, on purpose: a symbolic link where the copy writes — TO itself when
//! it is not a directory, or any name inside an existing destination tree — is
//! never written through: a file replaces the link, and a directory is refused
//! there, while `cp` could follow it. Only TO naming an existing directory may be
//! a link, and only one that stays beneath the basedir.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::UnlinkatFlags;

use super::paths::{JPath, Jail};

type Io<T> = std::io::Result<T>;

fn err(e: Errno) -> std::io::Error {
    e.into()
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn is_dir(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFDIR
}

/// `fstatat` of one name in `dir`, not following a final link.
fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<FileStat, Errno> {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// `openat` of one name in `dir` that never follows a link (`O_NOFOLLOW`).
fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag, mode: u32) -> Result<OwnedFd, Errno> {
    loop {
        match nix::fcntl::openat(
            dir,
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::from_bits_truncate(mode as nix::libc::mode_t),
        ) {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// Change the mode of what an `O_PATH` handle holds (`fchmod` refuses such
/// handles; the `/proc/self/fd` link leads to exactly that object).
fn chmod_handle(h: &OwnedFd, mode: u32) -> Io<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        Jail::cwd_of(h),
        std::fs::Permissions::from_mode(mode & 0o7777),
    )
}

/// The names in a directory (without `.` and `..`), sorted.
fn names(dir: &OwnedFd) -> Io<Vec<OsString>> {
    // A fresh open of the same directory: the listing has its own offset.
    let fd = open_at(
        dir.as_fd(),
        OsStr::new("."),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        0,
    )
    .map_err(err)?;
    let mut d = nix::dir::Dir::from_fd(fd).map_err(err)?;
    let mut out = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    out.sort();
    Ok(out)
}

/// `mkdir -p` beneath the basedir; `mode` for the directories it makes.
pub fn mkdir_all(jail: &Jail, p: &JPath, mode: u32) -> Io<()> {
    match jail.open(p, OFlag::O_PATH | OFlag::O_DIRECTORY, 0) {
        Ok(_) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {}
        // Something that is not a directory is there: "File exists", as mkdir says.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) && lexists(jail, p) => {
            return Err(err(Errno::EEXIST))
        }
        Err(e) => return Err(e),
    }
    let Some(parent) = p.parent() else {
        return Err(err(Errno::ENOENT));
    };
    mkdir_all(jail, &parent, mode)?;
    let (dir, name) = jail.open_parent(p)?;
    match nix::sys::stat::mkdirat(
        dir.as_fd(),
        name.as_os_str(),
        Mode::from_bits_truncate(mode as nix::libc::mode_t),
    ) {
        Ok(()) => Ok(()),
        // Made by someone else meanwhile: fine if it is a directory beneath.
        Err(Errno::EEXIST) => jail
            .open(p, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
            .map(drop),
        Err(e) => Err(err(e)),
    }
}

/// Whether `p` is a directory reached beneath the basedir.
pub fn is_dir_beneath(jail: &Jail, p: &JPath) -> bool {
    jail.open(p, OFlag::O_PATH | OFlag::O_DIRECTORY, 0).is_ok()
}

/// Whether the name `p` exists (a link counts, wherever it points).
pub fn lexists(jail: &Jail, p: &JPath) -> bool {
    if p.is_root() {
        return true;
    }
    match jail.open_parent(p) {
        Ok((dir, name)) => lstat_at(dir.as_fd(), &name).is_ok(),
        Err(_) => false,
    }
}

/// `stat` of `p`, following links that stay beneath the basedir.
pub fn stat(jail: &Jail, p: &JPath) -> Io<FileStat> {
    let fd = jail.open(p, OFlag::O_PATH, 0)?;
    nix::sys::stat::fstat(fd.as_fd()).map_err(err)
}

/// The names in directory `p`, sorted.
pub fn list(jail: &Jail, p: &JPath) -> Io<Vec<OsString>> {
    let fd = jail.open(p, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)?;
    names(&fd)
}

/// Remove the file (or link, never its target) `p`.
pub fn remove_file(jail: &Jail, p: &JPath) -> Io<()> {
    let (dir, name) = jail.open_parent(p)?;
    nix::unistd::unlinkat(dir.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir).map_err(err)
}

/// `rm -rf` (after `chmod u+rwx` where needed): a missing path is not an error and
/// a symbolic link is removed, never followed.
pub fn remove_tree(jail: &Jail, p: &JPath) -> Io<()> {
    let (dir, name) = match jail.open_parent(p) {
        Ok(x) => x,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_at(dir.as_fd(), &name)
}

fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> Io<()> {
    let st = match lstat_at(dir, name) {
        Ok(s) => s,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    if is_dir(&st) {
        match open_at(dir, name, OFlag::O_PATH | OFlag::O_DIRECTORY, 0) {
            Ok(sub) => {
                let mode = st.st_mode & 0o7777;
                if mode & 0o700 != 0o700 {
                    chmod_handle(&sub, mode | 0o700)?;
                }
                for n in names(&sub)? {
                    remove_at(sub.as_fd(), &n)?;
                }
                return match nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => Ok(()),
                    Err(e) => Err(err(e)),
                };
            }
            // It became something else meanwhile: remove that name instead.
            Err(Errno::ENOTDIR | Errno::ELOOP) => {}
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(err(e)),
        }
    }
    match nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// An operation failed: what it was doing, on which path (as shown).
    #[error("{what} '{}': {}", .path.display(), crate::slave::commands::strerror(.source))]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot copy a directory, '{}', into itself, '{}'", .from.display(), .to.display())]
    IntoItself { from: PathBuf, to: PathBuf },
    #[error("cannot overwrite non-directory '{}' with directory '{}'", .to.display(), .from.display())]
    NotADirectory { from: PathBuf, to: PathBuf },
    #[error("cannot overwrite directory '{}' with non-directory", .to.display())]
    IsADirectory { to: PathBuf },
    #[error(
        "'{}' is a symbolic link: a directory is never copied through one (it could lead \
         outside the slave's basedir)",
        .to.display()
    )]
    Link { to: PathBuf },
    #[error("interrupted")]
    Cancelled,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> CopyError + 'a {
    move |e| CopyError::Io {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn io_std<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CopyError + 'a {
    move |source| CopyError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What [`copy_tree`] reports as it goes, and how it is stopped.
pub struct CopyControl<'a> {
    /// Set from elsewhere to stop the copy at the next file or block.
    pub cancel: &'a AtomicBool,
    /// Called with `'FROM' -> 'TO'` for every entry copied (`cp -v`), when given.
    pub progress: Option<&'a mut dyn FnMut(String)>,
}

/// How much of a file is copied between two looks at `cancel`.
const COPY_CHUNK: u64 = 8 << 20;

/// `cp -R -P -p FROM TO` beneath the basedir (see the module note for the rules).
pub fn copy_tree(
    jail: &Jail,
    from: &JPath,
    to: &JPath,
    ctl: &mut CopyControl<'_>,
) -> Result<(), CopyError> {
    // The source's own name is not followed (-P), but its directory is found
    // beneath the basedir.
    let (sdir, sname) = if from.is_root() {
        (
            jail.open(&jail.top(), OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
                .map_err(io_std("cannot stat", from.shown()))?,
            OsString::from("."),
        )
    } else {
        jail.open_parent(from)
            .map_err(io_std("cannot stat", from.shown()))?
    };
    let sst = if from.is_root() {
        nix::sys::stat::fstat(sdir.as_fd()).map_err(io("cannot stat", from.shown()))?
    } else {
        lstat_at(sdir.as_fd(), &sname).map_err(io("cannot stat", from.shown()))?
    };
    // cp's destination rule: into an existing directory TO (followed beneath the
    // basedir), else TO itself.
    let existing = match jail.open(to, OFlag::O_PATH, 0) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => None,
        Err(e) => return Err(io_std("cannot stat", to.shown())(e)),
    };
    let to_is_dir = match &existing {
        Some(fd) => {
            is_dir(&nix::sys::stat::fstat(fd.as_fd()).map_err(io("cannot stat", to.shown()))?)
        }
        None => false,
    };
    let (ddir, dname, dshown) = if let (true, Some(dir)) = (to_is_dir, existing.as_ref()) {
        let Some(base) = from.shown().file_name().map(OsStr::to_os_string) else {
            return Err(CopyError::IntoItself {
                from: from.shown().to_path_buf(),
                to: to.shown().to_path_buf(),
            });
        };
        let dir = dir.try_clone().map_err(io_std("cannot open", to.shown()))?;
        let shown = to.shown().join(&base);
        (dir, base, shown)
    } else {
        if is_dir(&sst) && existing.is_some() {
            return Err(CopyError::NotADirectory {
                from: from.shown().to_path_buf(),
                to: to.shown().to_path_buf(),
            });
        }
        let (dir, name) = jail
            .open_parent(to)
            .map_err(io_std("cannot create", to.shown()))?;
        (dir, name, to.shown().to_path_buf())
    };
    if is_dir(&sst) {
        // The destination's directory must not be the source or inside it.
        let src = (sst.st_dev, sst.st_ino);
        let root = nix::sys::stat::fstat(
            jail.open(&jail.top(), OFlag::O_PATH, 0)
                .map_err(io_std("cannot stat", jail.root()))?
                .as_fd(),
        )
        .map_err(io("cannot stat", jail.root()))?;
        if is_within(ddir.as_fd(), src, (root.st_dev, root.st_ino))
            .map_err(io("cannot stat", &dshown))?
        {
            return Err(CopyError::IntoItself {
                from: from.shown().to_path_buf(),
                to: dshown,
            });
        }
    }
    let mut c = Copier { ctl };
    c.entry(
        sdir.as_fd(),
        &sname,
        from.shown(),
        ddir.as_fd(),
        &dname,
        &dshown,
    )
}

/// Whether `dir` is the directory `target` (dev, ino) or below it, walking `..`
/// up to the basedir's root.
fn is_within(dir: BorrowedFd<'_>, target: (u64, u64), root: (u64, u64)) -> Result<bool, Errno> {
    let mut cur = open_at(dir, OsStr::new("."), OFlag::O_PATH | OFlag::O_DIRECTORY, 0)?;
    for _ in 0..4096 {
        let st = nix::sys::stat::fstat(cur.as_fd())?;
        let id = (st.st_dev, st.st_ino);
        if id == target {
            return Ok(true);
        }
        if id == root {
            return Ok(false);
        }
        cur = open_at(
            cur.as_fd(),
            OsStr::new(".."),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            0,
        )?;
    }
    Err(Errno::ELOOP)
}

struct Copier<'c, 'a> {
    ctl: &'c mut CopyControl<'a>,
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

impl Copier<'_, '_> {
    fn check(&self) -> Result<(), CopyError> {
        if self.ctl.cancel.load(Ordering::Relaxed) {
            Err(CopyError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn report(&mut self, from: &Path, to: &Path) {
        if let Some(p) = self.ctl.progress.as_mut() {
            p(format!("'{}' -> '{}'\n", from.display(), to.display()));
        }
    }

    /// Copy the entry `sname` of `sdir` to the name `dname` of `ddir`.
    fn entry(
        &mut self,
        sdir: BorrowedFd<'_>,
        sname: &OsStr,
        sshown: &Path,
        ddir: BorrowedFd<'_>,
        dname: &OsStr,
        dshown: &Path,
    ) -> Result<(), CopyError> {
        self.check()?;
        let st = if sname == "." {
            nix::sys::stat::fstat(sdir).map_err(io("cannot stat", sshown))?
        } else {
            lstat_at(sdir, sname).map_err(io("cannot stat", sshown))?
        };
        let k = kind(&st);
        if k == SFlag::S_IFDIR {
            self.directory(sdir, sname, sshown, &st, ddir, dname, dshown)
        } else if k == SFlag::S_IFREG {
            self.file(sdir, sname, sshown, &st, ddir, dname, dshown)
        } else if k == SFlag::S_IFLNK {
            self.link(sdir, sname, sshown, &st, ddir, dname, dshown)
        } else {
            self.special(&st, sshown, ddir, dname, dshown)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn directory(
        &mut self,
        sdir: BorrowedFd<'_>,
        sname: &OsStr,
        sshown: &Path,
        st: &FileStat,
        ddir: BorrowedFd<'_>,
        dname: &OsStr,
        dshown: &Path,
    ) -> Result<(), CopyError> {
        let src = open_at(sdir, sname, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
            .map_err(io("cannot open directory", sshown))?;
        let made = match nix::sys::stat::mkdirat(ddir, dname, Mode::S_IRWXU) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(io("cannot create directory", dshown)(e)),
        };
        let dst = match open_at(ddir, dname, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let is_link = lstat_at(ddir, dname).is_ok_and(|st| kind(&st) == SFlag::S_IFLNK);
                return Err(if is_link {
                    CopyError::Link {
                        to: dshown.to_path_buf(),
                    }
                } else {
                    CopyError::NotADirectory {
                        from: sshown.to_path_buf(),
                        to: dshown.to_path_buf(),
                    }
                });
            }
            Err(e) => return Err(io("cannot open directory", dshown)(e)),
        };
        if made {
            self.report(sshown, dshown);
        }
        // The new directory must not be what is being copied (a copy into itself
        // found only now, e.g. through a link swapped in).
        let dst_st = nix::sys::stat::fstat(dst.as_fd()).map_err(io("cannot stat", dshown))?;
        for n in names(&src).map_err(io_std("cannot read directory", sshown))? {
            let inner = lstat_at(src.as_fd(), &n);
            if let Ok(i) = inner {
                if (i.st_dev, i.st_ino) == (dst_st.st_dev, dst_st.st_ino) {
                    continue;
                }
            }
            self.entry(
                src.as_fd(),
                &n,
                &sshown.join(&n),
                dst.as_fd(),
                &n,
                &dshown.join(&n),
            )?;
        }
        // As cp -p: owner where allowed, then mode, then times (after the contents,
        // which changed them).
        let _ = nix::unistd::fchown(
            dst.as_fd(),
            Some(nix::unistd::Uid::from_raw(st.st_uid)),
            Some(nix::unistd::Gid::from_raw(st.st_gid)),
        );
        nix::sys::stat::fchmod(dst.as_fd(), Mode::from_bits_truncate(st.st_mode & 0o7777))
            .map_err(io("cannot preserve permissions of", dshown))?;
        let (a, m) = times(st);
        nix::sys::stat::futimens(dst.as_fd(), &a, &m)
            .map_err(io("cannot preserve times of", dshown))?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn file(
        &mut self,
        sdir: BorrowedFd<'_>,
        sname: &OsStr,
        sshown: &Path,
        st: &FileStat,
        ddir: BorrowedFd<'_>,
        dname: &OsStr,
        dshown: &Path,
    ) -> Result<(), CopyError> {
        // O_NONBLOCK: a FIFO swapped in must not hang the copy (regular files
        // ignore it).
        let src = open_at(sdir, sname, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)
            .map_err(io("cannot open", sshown))?;
        if kind(&nix::sys::stat::fstat(src.as_fd()).map_err(io("cannot stat", sshown))?)
            != SFlag::S_IFREG
        {
            return Err(io("cannot copy (no longer a regular file)", sshown)(
                Errno::EINVAL,
            ));
        }
        let wflags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NONBLOCK;
        let dst = match open_at(ddir, dname, wflags, 0o600) {
            Ok(fd) => fd,
            // A link in the destination is replaced, never written through.
            Err(Errno::ELOOP) => {
                nix::unistd::unlinkat(ddir, dname, UnlinkatFlags::NoRemoveDir)
                    .map_err(io("cannot remove", dshown))?;
                open_at(ddir, dname, wflags | OFlag::O_EXCL, 0o600)
                    .map_err(io("cannot create regular file", dshown))?
            }
            Err(Errno::EISDIR) => {
                return Err(CopyError::IsADirectory {
                    to: dshown.to_path_buf(),
                })
            }
            Err(e) => return Err(io("cannot create regular file", dshown)(e)),
        };
        if kind(&nix::sys::stat::fstat(dst.as_fd()).map_err(io("cannot stat", dshown))?)
            != SFlag::S_IFREG
        {
            return Err(io("cannot overwrite (not a regular file)", dshown)(
                Errno::EINVAL,
            ));
        }
        let mut input = std::fs::File::from(src);
        let mut output = std::fs::File::from(dst);
        loop {
            self.check()?;
            // std copies a File into a File with copy_file_range where it can.
            let n = std::io::copy(&mut (&mut input).take(COPY_CHUNK), &mut output)
                .map_err(io_std("error copying to", dshown))?;
            if n == 0 {
                break;
            }
        }
        output.flush().map_err(io_std("error writing", dshown))?;
        let _ = nix::unistd::fchown(
            output.as_fd(),
            Some(nix::unistd::Uid::from_raw(st.st_uid)),
            Some(nix::unistd::Gid::from_raw(st.st_gid)),
        );
        nix::sys::stat::fchmod(
            output.as_fd(),
            Mode::from_bits_truncate(st.st_mode & 0o7777),
        )
        .map_err(io("cannot preserve permissions of", dshown))?;
        let (a, m) = times(st);
        nix::sys::stat::futimens(output.as_fd(), &a, &m)
            .map_err(io("cannot preserve times of", dshown))?;
        self.report(sshown, dshown);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn link(
        &mut self,
        sdir: BorrowedFd<'_>,
        sname: &OsStr,
        sshown: &Path,
        st: &FileStat,
        ddir: BorrowedFd<'_>,
        dname: &OsStr,
        dshown: &Path,
    ) -> Result<(), CopyError> {
        let target =
            nix::fcntl::readlinkat(sdir, sname).map_err(io("cannot read symbolic link", sshown))?;
        self.replace_name(ddir, dname, dshown, |d, n| {
            nix::unistd::symlinkat(target.as_os_str(), d, n)
        })
        .map_err(io("cannot create symbolic link", dshown))?;
        let _ = nix::unistd::fchownat(
            ddir,
            dname,
            Some(nix::unistd::Uid::from_raw(st.st_uid)),
            Some(nix::unistd::Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        let (a, m) = times(st);
        let _ = nix::sys::stat::utimensat(
            ddir,
            dname,
            &a,
            &m,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
        self.report(sshown, dshown);
        Ok(())
    }

    fn special(
        &mut self,
        st: &FileStat,
        sshown: &Path,
        ddir: BorrowedFd<'_>,
        dname: &OsStr,
        dshown: &Path,
    ) -> Result<(), CopyError> {
        let k = kind(st);
        let perm = Mode::from_bits_truncate(st.st_mode & 0o7777);
        self.replace_name(ddir, dname, dshown, |d, n| {
            nix::sys::stat::mknodat(d, n, k, perm, st.st_rdev)
        })
        .map_err(io("cannot create special file", dshown))?;
        let (a, m) = times(st);
        let _ = nix::sys::stat::utimensat(
            ddir,
            dname,
            &a,
            &m,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
        self.report(sshown, dshown);
        Ok(())
    }

    /// Create a name with `make`; a non-directory already there is replaced.
    fn replace_name(
        &mut self,
        ddir: BorrowedFd<'_>,
        dname: &OsStr,
        dshown: &Path,
        make: impl Fn(BorrowedFd<'_>, &OsStr) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        match make(ddir, dname) {
            Err(Errno::EEXIST) => {
                if lstat_at(ddir, dname).is_ok_and(|s| is_dir(&s)) {
                    tracing::debug!("{}: a directory is in the way", dshown.display());
                    return Err(Errno::EISDIR);
                }
                nix::unistd::unlinkat(ddir, dname, UnlinkatFlags::NoRemoveDir)?;
                make(ddir, dname)
            }
            r => r,
        }
    }
}

/// The entries matching a glob pattern beneath the basedir, sorted: `*`, `?` and
/// `[...]` match within one name (not a leading `.`), `**` matches any number of
/// directories (Python's `glob.glob(recursive=True)`, what the worker runs). The
/// walk opens every directory beneath the basedir; `**` does not descend into
/// symbolic links (no loops), and a directory that cannot be read is skipped.
pub fn glob(jail: &Jail, pattern: &JPath) -> Result<Vec<JPath>, glob::PatternError> {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let comps: Vec<&OsStr> = pattern.rel().iter().collect();
    let mut cands = vec![jail.top()];
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let text = c.to_string_lossy();
        let mut next = Vec::new();
        if text == "**" {
            for cand in &cands {
                if !is_dir_beneath(jail, cand) {
                    continue;
                }
                next.push(cand.clone());
                descend(jail, cand, last, &mut next);
            }
        } else if !text.contains(['*', '?', '[']) {
            for cand in &cands {
                let p = cand.join(c);
                if (last && lexists(jail, &p)) || (!last && is_dir_beneath(jail, &p)) {
                    next.push(p);
                }
            }
        } else {
            let pat = glob::Pattern::new(&text)?;
            for cand in &cands {
                let Ok(entries) = list(jail, cand) else {
                    continue;
                };
                for n in entries {
                    if pat.matches_with(&n.to_string_lossy(), opts) {
                        let p = cand.join(&n);
                        if last || is_dir_beneath(jail, &p) {
                            next.push(p);
                        }
                    }
                }
            }
        }
        next.sort_by(|a, b| a.rel().cmp(b.rel()));
        next.dedup();
        cands = next;
        if cands.is_empty() {
            break;
        }
    }
    if comps.is_empty() {
        cands.retain(|p| is_dir_beneath(jail, p));
    }
    Ok(cands)
}

/// Every non-hidden entry below `dir` (directories only unless `files`), not
/// descending into links.
fn descend(jail: &Jail, dir: &JPath, files: bool, out: &mut Vec<JPath>) {
    let Ok(fd) = jail.open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY, 0) else {
        return;
    };
    let Ok(entries) = names(&fd) else {
        return;
    };
    for n in entries {
        if n.as_bytes().starts_with(b".") {
            continue;
        }
        let p = dir.join(&n);
        let real_dir = lstat_at(fd.as_fd(), &n).is_ok_and(|s| is_dir(&s));
        if real_dir {
            out.push(p.clone());
            descend(jail, &p, files, out);
        } else if files {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn jail() -> (tempfile::TempDir, Jail) {
        let dir = tempfile::tempdir().unwrap();
        let j = Jail::new(dir.path()).unwrap();
        (dir, j)
    }

    fn p(j: &Jail, s: &str) -> JPath {
        j.lexical_in(&j.top(), s).unwrap()
    }

    fn copy(j: &Jail, from: &str, to: &str) -> Result<(), CopyError> {
        let cancel = AtomicBool::new(false);
        let mut ctl = CopyControl {
            cancel: &cancel,
            progress: None,
        };
        copy_tree(j, &p(j, from), &p(j, to), &mut ctl)
    }

    #[test]
    fn remove_tree_handles_read_only_and_missing() {
        let (_d, j) = jail();
        let t = j.root().join("t");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/b/f"), "x").unwrap();
        std::fs::set_permissions(t.join("a/b/f"), std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::set_permissions(t.join("a/b"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::set_permissions(t.join("a"), std::fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&j, &p(&j, "t")).unwrap();
        assert!(!t.exists());
        remove_tree(&j, &p(&j, "t")).unwrap();
        remove_tree(&j, &p(&j, "missing/deeper")).unwrap();
    }

    #[test]
    fn remove_tree_does_not_follow_links() {
        let (_d, j) = jail();
        let keep = tempfile::tempdir().unwrap();
        std::fs::write(keep.path().join("precious"), "x").unwrap();
        std::fs::create_dir(j.root().join("t")).unwrap();
        std::os::unix::fs::symlink(keep.path(), j.root().join("t/link")).unwrap();
        remove_tree(&j, &p(&j, "t")).unwrap();
        assert!(keep.path().join("precious").exists());
        // A link as the path itself: the link goes, the target stays.
        std::os::unix::fs::symlink(keep.path(), j.root().join("l2")).unwrap();
        remove_tree(&j, &p(&j, "l2")).unwrap();
        assert!(keep.path().join("precious").exists());
        // A path through a link out is refused, not followed.
        std::os::unix::fs::symlink(keep.path(), j.root().join("l3")).unwrap();
        let e = remove_tree(&j, &p(&j, "l3/precious")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EXDEV));
        assert!(keep.path().join("precious").exists());
    }

    #[test]
    fn copy_keeps_modes_times_and_links() {
        let (_d, j) = jail();
        let r = j.root();
        std::fs::create_dir_all(r.join("src/sub")).unwrap();
        std::fs::write(r.join("src/sub/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            r.join("src/sub/run.sh"),
            std::fs::Permissions::from_mode(0o751),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/run.sh", r.join("src/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("src/abs")).unwrap();
        let old = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &r.join("src/sub/run.sh"),
            &old,
            &old,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        std::fs::set_permissions(r.join("src/sub"), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        copy(&j, "src", "dst").unwrap();
        let m = std::fs::metadata(r.join("dst/sub/run.sh")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o751);
        assert_eq!(m.mtime(), 1_000_000_000);
        assert_eq!(
            std::fs::metadata(r.join("dst/sub")).unwrap().mode() & 0o7777,
            0o555
        );
        assert_eq!(
            std::fs::read_link(r.join("dst/link")).unwrap(),
            Path::new("sub/run.sh")
        );
        assert_eq!(
            std::fs::read_link(r.join("dst/abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        // Into an existing directory: TODIR/NAME-OF-FROM, as cp does.
        std::fs::create_dir(r.join("into")).unwrap();
        copy(&j, "src", "into").unwrap();
        assert!(r.join("into/src/sub/run.sh").is_file());
        // Never into itself.
        assert!(matches!(
            copy(&j, "src", "src/sub/deeper"),
            Err(CopyError::IntoItself { .. }) | Err(CopyError::Io { .. })
        ));
        std::fs::set_permissions(r.join("src/sub"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert!(matches!(
            copy(&j, "src", "src/sub"),
            Err(CopyError::IntoItself { .. })
        ));
        assert!(!r.join("src/sub/src").exists());
        for d in ["src/sub", "dst/sub", "into/src/sub"] {
            std::fs::set_permissions(r.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn copy_never_writes_through_a_link() {
        let (_d, j) = jail();
        let r = j.root();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "keep").unwrap();
        std::fs::create_dir_all(r.join("src")).unwrap();
        std::fs::write(r.join("src/victim"), "evil").unwrap();
        // A destination that already holds a link out, where the file goes.
        std::fs::create_dir_all(r.join("dst")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), r.join("dst/victim")).unwrap();
        copy(&j, "src", "dst/..//dst/../dst2").unwrap();
        std::fs::create_dir_all(r.join("into")).unwrap();
        std::fs::create_dir_all(r.join("into/src")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), r.join("into/src/victim"))
            .unwrap();
        copy(&j, "src", "into").unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.path().join("victim")).unwrap(),
            "keep"
        );
        assert_eq!(
            std::fs::read_to_string(r.join("into/src/victim")).unwrap(),
            "evil"
        );
        assert!(!std::fs::symlink_metadata(r.join("into/src/victim"))
            .unwrap()
            .file_type()
            .is_symlink());
        // TO a link out: refused.
        std::os::unix::fs::symlink(outside.path(), r.join("out")).unwrap();
        let e = copy(&j, "src", "out").unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        let e = copy(&j, "src", "out/x").unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    #[test]
    fn glob_matches_beneath_only() {
        let (_d, j) = jail();
        let r = j.root();
        std::fs::create_dir_all(r.join("a/b/c")).unwrap();
        std::fs::write(r.join("a/x.txt"), "").unwrap();
        std::fs::write(r.join("a/.hidden.txt"), "").unwrap();
        std::fs::write(r.join("a/b/c/y.txt"), "").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("z.txt"), "").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("a/out")).unwrap();
        let rels = |pat: &str| -> Vec<String> {
            glob(&j, &p(&j, pat))
                .unwrap()
                .iter()
                .map(|m| m.rel().display().to_string())
                .collect()
        };
        assert_eq!(rels("a/*.txt"), ["a/x.txt"]);
        assert_eq!(rels("a/**/*.txt"), ["a/b/c/y.txt", "a/x.txt"]);
        assert_eq!(rels("a/*/z.txt"), Vec::<String>::new());
        assert_eq!(rels("a/out/*"), Vec::<String>::new());
        assert_eq!(rels("a/o*"), ["a/out"]);
        assert_eq!(rels("a/b"), ["a/b"]);
    }
}
