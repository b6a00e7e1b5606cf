//! A slow disk for the stall tests and `bench/stalls.rs`: a FUSE filesystem that
//! passes every operation through to a backing directory, with writes (and file
//! creation) that can be slowed down or held at a gate.
//!
//! A master's `logs/` directory mounted on it behaves as if it sat on a disk that
//! is saturated or hung (an NFS server gone quiet, a dying drive): the master must
//! keep its slaves' links and its web pages alive meanwhile, and lose no byte.
//! Device-mapper's `dm-delay` would be the kernel's way to make a slow disk, but
//! it needs the device-mapper driver, which these machines lack; FUSE only needs
//! `/dev/fuse` and root (or `fusermount3`), and lets a test *hold* writes, so it
//! can wait for the condition "a write is stuck" instead of guessing a delay.
//!
//! Include with `#[path = "slowfs/mod.rs"] mod slowfs;` (tests) or
//! `#[path = "../tests/slowfs/mod.rs"] mod slowfs;` (benches).

#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// How long the kernel may cache names and attributes.
const TTL: Duration = Duration::from_secs(1);

/// What the test controls while the filesystem is mounted.
#[derive(Default)]
pub struct Control {
    /// Added to every write and every file creation, in microseconds.
    delay_us: AtomicU64,
    /// While true, writes and creations wait (the disk hangs).
    held: Mutex<bool>,
    gate: Condvar,
    /// Writes and creations waiting at the gate now.
    waiting: AtomicUsize,
    /// Writes served, and their bytes.
    writes: AtomicU64,
    bytes: AtomicU64,
}

impl Control {
    /// What a write or a creation suffers before it reaches the backing disk.
    fn suffer(&self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if *held {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while *held {
                held = self.gate.wait(held).unwrap_or_else(|p| p.into_inner());
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        drop(held);
        let us = self.delay_us.load(Ordering::Relaxed);
        if us > 0 {
            // The simulated disk's service time (this thread is the disk).
            std::thread::sleep(Duration::from_micros(us));
        }
    }
}

/// A mounted slow filesystem; unmounted when dropped.
pub struct SlowFs {
    session: Option<fuser::BackgroundSession>,
    control: Arc<Control>,
    mountpoint: PathBuf,
}

/// Why a slow disk cannot be made on this machine, if it cannot.
pub fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist (no FUSE in this kernel or container)".into());
    }
    let root = nix::unistd::geteuid().is_root();
    let helper = ["fusermount3", "fusermount"].iter().any(|b| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
            .unwrap_or(false)
    });
    if !root && !helper {
        return Some("not root and no fusermount3 to mount a FUSE filesystem".into());
    }
    None
}

impl SlowFs {
    /// Mount a passthrough of `backing` at `mountpoint` (both existing directories).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<SlowFs> {
        let control = Arc::new(Control::default());
        let fs = Passthrough {
            backing: backing.canonicalize()?,
            control: control.clone(),
            inodes: Mutex::new(Inodes::new()),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("autobot-slowfs".into()),
            fuser::MountOption::DefaultPermissions,
        ];
        // Two threads: a read (a log served to the web) need not queue behind a
        // held write, as on a real disk with a queue of its own per request.
        config.n_threads = Some(2);
        config.acl = fuser::SessionACL::All;
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(SlowFs {
            session: Some(session),
            control,
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// Every write and file creation takes this much longer.
    pub fn set_delay(&self, d: Duration) {
        self.control
            .delay_us
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Writes and creations wait from now on until [`SlowFs::release`].
    pub fn hold(&self) {
        *self.control.held.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// Let held writes go on.
    pub fn release(&self) {
        *self.control.held.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.control.gate.notify_all();
    }

    /// Writes and creations waiting at the gate now.
    pub fn waiting(&self) -> usize {
        self.control.waiting.load(Ordering::SeqCst)
    }

    /// Bytes written through the filesystem so far.
    pub fn bytes_written(&self) -> u64 {
        self.control.bytes.load(Ordering::Relaxed)
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmount (lazily: whoever still holds a file there keeps it until closed).
    pub fn unmount(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.release();
        if let Some(s) = self.session.take() {
            // Lazily: a process that still holds a file there keeps it until closed.
            use std::os::unix::ffi::OsStrExt;
            if let Ok(c) = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()) {
                // SAFETY: umount2 reads the NUL-terminated path for the call only.
                unsafe { nix::libc::umount2(c.as_ptr(), nix::libc::MNT_DETACH) };
            }
            drop(s);
        }
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Inode numbers handed to the kernel, each for a path under the backing root.
struct Inodes {
    paths: HashMap<u64, PathBuf>,
    by_path: HashMap<PathBuf, u64>,
    next: u64,
}

impl Inodes {
    fn new() -> Inodes {
        let mut paths = HashMap::new();
        let mut by_path = HashMap::new();
        paths.insert(INodeNo::ROOT.0, PathBuf::new());
        by_path.insert(PathBuf::new(), INodeNo::ROOT.0);
        Inodes {
            paths,
            by_path,
            next: INodeNo::ROOT.0 + 1,
        }
    }

    fn ino(&mut self, rel: &Path) -> u64 {
        if let Some(i) = self.by_path.get(rel) {
            return *i;
        }
        let i = self.next;
        self.next += 1;
        self.paths.insert(i, rel.to_path_buf());
        self.by_path.insert(rel.to_path_buf(), i);
        i
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(i) = self.by_path.remove(rel) {
            self.paths.remove(&i);
        }
    }

    /// `from` (and everything under it) is now `to`.
    fn rename(&mut self, from: &Path, to: &Path) {
        self.forget_path(to);
        let moved: Vec<(PathBuf, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (p, i) in moved {
            self.by_path.remove(&p);
            let rest = p.strip_prefix(from).unwrap_or(Path::new(""));
            let np = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.paths.insert(i, np.clone());
            self.by_path.insert(np, i);
        }
    }
}

struct Passthrough {
    backing: PathBuf,
    control: Arc<Control>,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    next_fh: AtomicU64,
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(nix::libc::EIO))
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH
    }
}

fn attr(ino: u64, m: &std::fs::Metadata) -> FileAttr {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: time(m.ctime(), m.ctime_nsec()),
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

impl Passthrough {
    fn rel(&self, ino: INodeNo) -> Option<PathBuf> {
        self.inodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .paths
            .get(&ino.0)
            .cloned()
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Option<PathBuf> {
        self.rel(parent).map(|p| p.join(name))
    }

    fn entry(&self, rel: &Path) -> io::Result<FileAttr> {
        let m = std::fs::symlink_metadata(self.backing.join(rel))?;
        let ino = self
            .inodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ino(rel);
        Ok(attr(ino, &m))
    }

    fn keep(&self, f: File) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(f));
        fh
    }

    fn file(&self, fh: FileHandle) -> Option<Arc<File>> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned()
    }

    fn options(flags: i32) -> std::fs::OpenOptions {
        let mut o = std::fs::OpenOptions::new();
        match flags & nix::libc::O_ACCMODE {
            nix::libc::O_WRONLY => o.write(true),
            nix::libc::O_RDWR => o.read(true).write(true),
            _ => o.read(true),
        };
        if flags & nix::libc::O_TRUNC != 0 {
            o.truncate(true);
        }
        if flags & nix::libc::O_APPEND != 0 {
            o.append(true);
        }
        o
    }
}

impl Filesystem for Passthrough {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        match self.entry(&rel) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::symlink_metadata(self.backing.join(&rel)) {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let path = self.backing.join(&rel);
        let r = (|| -> io::Result<()> {
            if let Some(mode) = mode {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if let Some(size) = size {
                self.control.suffer();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(size)?;
            }
            if atime.is_some() || mtime.is_some() {
                let at = |t: TimeOrNow| match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => SystemTime::now(),
                };
                let mut times = std::fs::FileTimes::new();
                if let Some(a) = atime {
                    times = times.set_accessed(at(a));
                }
                if let Some(m) = mtime {
                    times = times.set_modified(at(m));
                }
                File::options().write(true).open(&path)?.set_times(times)?;
            }
            Ok(())
        })();
        match r.and_then(|()| std::fs::symlink_metadata(&path)) {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        self.control.suffer();
        let path = self.backing.join(&rel);
        let r = std::fs::create_dir(&path).and_then(|()| {
            std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(mode & !umask & 0o7777),
            )
        });
        match r.and_then(|()| self.entry(&rel)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::remove_file(self.backing.join(&rel)) {
            Ok(()) => {
                self.inodes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::remove_dir(self.backing.join(&rel)) {
            Ok(()) => {
                self.inodes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(from), Some(to)) = (self.child(parent, name), self.child(newparent, newname))
        else {
            return reply.error(Errno::ENOENT);
        };
        match std::fs::rename(self.backing.join(&from), self.backing.join(&to)) {
            Ok(()) => {
                self.inodes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .rename(&from, &to);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if flags.0 & (nix::libc::O_WRONLY | nix::libc::O_RDWR) != 0 {
            self.control.suffer();
        }
        match Self::options(flags.0).open(self.backing.join(&rel)) {
            Ok(f) => reply.opened(FileHandle(self.keep(f)), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        self.control.suffer();
        match f.write_all_at(data, offset) {
            Ok(()) => {
                self.control.writes.fetch_add(1, Ordering::Relaxed);
                self.control
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.file(fh) {
            Some(f) => match f.sync_data() {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            },
            None => reply.error(Errno::EBADF),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(rel) = self.rel(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let read = match std::fs::read_dir(self.backing.join(&rel)) {
            Ok(r) => r,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut entries: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for e in read.flatten() {
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            let child = rel.join(e.file_name());
            let i = self
                .inodes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ino(&child);
            entries.push((i, kind, e.file_name()));
        }
        for (n, (i, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), n as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(&self.backing) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(Errno::ENOENT);
        };
        self.control.suffer();
        let mut o = Self::options(flags);
        o.create(true).mode(mode & !umask & 0o7777);
        if flags & nix::libc::O_EXCL != 0 {
            o.create_new(true);
        }
        let opened = o.open(self.backing.join(&rel));
        match opened.and_then(|f| Ok((f, self.entry(&rel)?))) {
            Ok((f, a)) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(self.keep(f)),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }
}
