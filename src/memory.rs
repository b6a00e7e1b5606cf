//! The daemons' resident memory: how the allocators are set up at start, and how
//! memory a burst of work used goes back to the system once the daemon is quiet.
//!
//! The binary's Rust allocations go to jemalloc ([`Allocator`]); the C libraries' (SQLite's,
//! zstd's) to the C library's malloc. glibc's malloc kept what a burst of Builds
//! or a 100 MB log used as fragments: pages held by a few long-lived blocks
//! among the burst's short-lived ones, which `malloc_trim` cannot return (a
//! master stayed 0.4 MiB of heap above idle after 200 Builds and 0.8 MiB after
//! the log). jemalloc keeps blocks of a size together and returns whole runs of
//! free pages: [`release`] flushes its cache and purges its free pages at once
//! ([`JEMALLOC_CONF`]: `muzzy_decay_ms:0`, so purged pages leave the RSS at once
//! instead of lingering as lazily freed). For glibc's malloc, [`tune`] caps the
//! arenas at [`ARENAS`] and [`release`] also runs `malloc_trim`. [`Trimmer`]
//! calls all this, and whatever else frees memory (SQLite's page caches), once a
//! daemon has been quiet for a moment after work, never during it. The
//! daemons also run with [`TUNABLES`] (glibc's, read at exec), so that the
//! stacks of ended threads are not kept. With another libc (musl) the glibc
//! parts are no-ops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The allocator of every Rust allocation of the `autobot` binary (its
/// `#[global_allocator]`, set in `src/main.rs`: the tests and benches that count
/// allocations set their own).
pub type Allocator = tikv_jemallocator::Jemalloc;

/// A C string's address, as jemalloc reads its options ([`JEMALLOC_CONF`]).
#[repr(transparent)]
pub struct ConfPtr(*const std::ffi::c_char);

// SAFETY: the pointer is to a constant string, never written.
unsafe impl Sync for ConfPtr {}

/// jemalloc's options (`malloc_conf`, read at its first allocation; the
/// `_RJEM_MALLOC_CONF` environment variable adds to them): two arenas, as
/// glibc's ([`ARENAS`]); free pages purged (`MADV_DONTNEED`) after 10 s of
/// decay or at once by [`release`], never left lazily freed (`MADV_FREE`
/// pages count in the RSS until the kernel needs them); no background thread.
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_CONF: ConfPtr =
    ConfPtr(c"narenas:2,muzzy_decay_ms:0,dirty_decay_ms:10000,background_thread:false".as_ptr());

/// Give back what jemalloc holds free: this thread's cache, then every arena's
/// free pages.
fn release_rust_heap() {
    // SAFETY: mallctl with names jemalloc defines, no values read or written.
    unsafe {
        use std::ptr::null_mut;
        use tikv_jemalloc_sys::mallctl;
        mallctl(
            c"thread.tcache.flush".as_ptr(),
            null_mut(),
            null_mut(),
            null_mut(),
            0,
        );
        // 4096: MALLCTL_ARENAS_ALL.
        mallctl(
            c"arena.4096.purge".as_ptr(),
            null_mut(),
            null_mut(),
            null_mut(),
            0,
        );
    }
}

/// Most malloc arenas. The threads that allocate on a Build's path (the engine's
/// runtime thread and the log disk) and the web's threads share them; glibc's
/// per-thread caches (tcache) serve most small allocations without taking an
/// arena's lock, so two arenas cost no measurable time on the engine bench,
/// where one per thread cost a megabyte of idle RSS.
pub const ARENAS: i32 = 2;

/// How long an idle thread of a runtime's blocking pool waits for more work
/// before it ends (tokio's default: 10 s). Start-up and every burst of
/// database reads start a few; an idle daemon keeps none, a busy one keeps
/// them all.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// How long a daemon must have been quiet (no [`poke`]) before memory is given
/// back: longer than the gaps inside a burst of Builds, so it never runs during
/// one.
pub const QUIET: Duration = Duration::from_secs(1);

/// Free memory malloc may keep without a trim after work (bytes): below it a
/// trim has next to nothing to give back. It runs only once the daemon is quiet,
/// so its system calls cost nothing that matters; 256 KiB here left an idle
/// slave 10 % above its idle RSS after a burst of Builds (the slave's whole
/// margin is 160 KiB).
pub const KEEP_FREE: usize = 16 << 10;

/// Set up the allocator for a long-running daemon: call once at start, before
/// any other thread exists.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets malloc's parameters; called before other threads.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, ARENAS);
    }
}

/// glibc's tunables a daemon runs with (`GLIBC_TUNABLES`, read by the C library
/// as the process starts, before any of our code; a static binary reads them
/// too). `glibc.pthread.stack_cache_size=0`: a thread's stack is unmapped when
/// the thread ends, instead of kept (up to 40 MiB of them) for the next thread;
/// the blocking pools end their threads 2 s after work, so every burst left a
/// few of these cached stacks resident (about 20 KiB each).
pub const TUNABLES: &str = "glibc.pthread.stack_cache_size=0";

/// Set in a daemon's environment with [`TUNABLES`] by [`tunables_for`]: the
/// `GLIBC_TUNABLES` the daemon's own commands get back ([`restore_tunables`]),
/// empty when it was unset.
const TUNABLES_WERE: &str = "AUTOBOT_GLIBC_TUNABLES_WERE";

/// `GLIBC_TUNABLES` with [`TUNABLES`] added before what the user set: glibc
/// applies them in order, so a user's own value of the same tunable wins.
fn tunables_value(user: Option<&std::ffi::OsStr>) -> std::ffi::OsString {
    let mut v = std::ffi::OsString::from(TUNABLES);
    if let Some(user) = user.filter(|u| !u.is_empty()) {
        v.push(":");
        v.push(user);
    }
    v
}

/// Have the daemon `cmd` starts run with [`TUNABLES`] (see [`restore_tunables`]
/// for what its children get).
pub fn tunables_for(cmd: &mut std::process::Command) {
    let user = std::env::var_os("GLIBC_TUNABLES");
    cmd.env("GLIBC_TUNABLES", tunables_value(user.as_deref()))
        .env(TUNABLES_WERE, user.unwrap_or_default());
}

/// At a daemon's start, before any thread exists: when it was started without
/// [`TUNABLES`] (`autobot run` by hand or by systemd) and `exec` is true, run
/// this same command line again with them (the same process: `exec` keeps the
/// pid); when it was started with them, put `GLIBC_TUNABLES` back as the user
/// had it, so that the commands the daemon runs do not inherit ours. Does
/// nothing where the C library is not glibc.
pub fn restore_tunables(exec: bool) {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    match std::env::var_os(TUNABLES_WERE) {
        Some(were) => {
            // SAFETY (set_var/remove_var): called before any other thread exists.
            if were.is_empty() {
                std::env::remove_var("GLIBC_TUNABLES");
            } else {
                std::env::set_var("GLIBC_TUNABLES", were);
            }
            std::env::remove_var(TUNABLES_WERE);
        }
        None if exec => {
            use std::os::unix::process::CommandExt;
            let Ok(exe) = std::env::current_exe() else {
                return;
            };
            let mut cmd = std::process::Command::new(exe);
            cmd.args(std::env::args_os().skip(1));
            tunables_for(&mut cmd);
            // Returns only if the exec failed: go on without the tunables.
            let e = cmd.exec();
            eprintln!("autobot: note: running without glibc tunables {TUNABLES} ({e})");
        }
        None => {}
    }
}

/// Give the free pages both allocators hold back to the system: jemalloc's
/// (Rust's memory) and glibc malloc's (`malloc_trim(0)`, the C libraries');
/// returns whether malloc_trim gave any back. Costs a walk over the free lists:
/// call it when work has stopped, not on a hot path.
pub fn release() -> bool {
    release_rust_heap();
    trim_c_heap()
}

/// glibc malloc's part of [`release`].
fn trim_c_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim is thread-safe and only reads malloc's own state.
        unsafe { nix::libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Bytes glibc's malloc (the C libraries' allocations) holds free (in its
/// arenas, not yet returned to the system); 0 where this cannot be known.
pub fn held_free() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads malloc's statistics.
        let info = unsafe { nix::libc::mallinfo2() };
        info.fordblks
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

/// Memory given back once the daemon has been quiet: functions registered by the
/// daemons ([`on_release`]); each returns `false` once what it frees is gone (it
/// is then forgotten).
type Releaser = Box<dyn Fn() -> bool + Send + Sync>;

static RELEASERS: std::sync::Mutex<Vec<Releaser>> = std::sync::Mutex::new(Vec::new());

/// The process's [`Trimmer`], poked by work ([`poke`]) and run by the daemon verbs.
static GLOBAL: TrimmerInner = TrimmerInner::new();

/// Work happened: the process's [`Trimmer`] releases memory once it has stopped.
/// An atomic add (and a load): free on a hot path.
pub fn poke() {
    GLOBAL.poke();
}

/// Also run `release` (SQLite's caches, say) whenever memory is given back, until
/// it returns `false`.
pub fn on_release(release: impl Fn() -> bool + Send + Sync + 'static) {
    RELEASERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(release));
}

/// Everything a quiet daemon can give back: the registered releasers, the pages
/// of the binary and libraries that are mapped but unused ([`drop_file_pages`]),
/// and malloc's free pages ([`release`]). Blocking (reads `/proc`, system calls).
pub fn release_all() {
    // Threads that wait for work (`idle_thread`) drop their stacks' unused pages
    // the next time they do; the releasers below wake those that sleep now.
    STACKS_RELEASED.fetch_add(1, Ordering::Relaxed);
    RELEASERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|release| release());
    let stack = release_own_stack() >> 10;
    // jemalloc's purge always; glibc's malloc_trim only when it holds enough.
    release_rust_heap();
    if held_free() >= KEEP_FREE {
        trim_c_heap();
    }
    // Last: the code of the calls above would be mapped again after it.
    let dropped = drop_file_pages();
    if tracing::enabled!(tracing::Level::DEBUG) {
        let (in_use, free) = heap();
        tracing::debug!(
            "memory given back: {dropped} KiB of file pages unmapped, {stack} KiB of \
             stack; the C libraries' malloc holds {} KiB in use and {} KiB free",
            in_use >> 10,
            free >> 10
        );
    }
}

/// Bytes glibc's malloc (the C libraries': SQLite, zstd) has handed out and not
/// had back, and bytes it holds free (every arena's, and its own mappings');
/// `(0, 0)` where this cannot be known. What an
/// operator reads (`AUTOBOT_LOG=autobot::memory=debug`) to tell memory still
/// used after work from memory kept free by malloc.
pub fn heap() -> (usize, usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads malloc's statistics.
        let info = unsafe { nix::libc::mallinfo2() };
        (info.uordblks + info.hblkhd, info.fordblks)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        (0, 0)
    }
}

/// How many times memory was given back ([`release_all`]): a thread that saw
/// an older count in [`idle_thread`] has stack pages to give back too.
static STACKS_RELEASED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The [`STACKS_RELEASED`] count this thread last released its stack for.
    static STACK_SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Pages this far below the caller's frame are left alone by
/// [`release_own_stack`]: the red zone, a signal handler's frame and the frames
/// the call itself needs are well inside it.
const STACK_MARGIN: usize = 16 << 10;

/// Called by a long-lived thread as it starts waiting for work (a runtime's
/// `on_thread_park`): once memory has been given back since this thread last
/// looked, it drops the pages of its own stack that deeper calls (a page
/// rendered, a Build's messages) left resident. A load and a compare otherwise,
/// so it can sit on a hot path. Pages below a thread's frames are unused by
/// definition, so only the thread itself can safely give them back, at a
/// moment it chooses.
pub fn idle_thread() {
    let now = STACKS_RELEASED.load(Ordering::Relaxed);
    if STACK_SEEN.with(|seen| seen.replace(now)) != now {
        release_own_stack();
    }
}

/// Give back the pages of the calling thread's stack below its current frame
/// (`madvise(MADV_DONTNEED)`: the next call that reaches that deep gets fresh
/// zeroed pages, as when the thread started). Returns the bytes of stack
/// released (at most; pages never touched count too).
pub fn release_own_stack() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let marker = 0u8;
        let here = std::hint::black_box(&marker) as *const u8 as usize;
        // SAFETY: pthread_getattr_np fills `attr` for the calling thread (it is
        // destroyed right after); madvise only touches the range between the
        // lowest address of this thread's own stack and STACK_MARGIN below this
        // frame, where nothing lives: the stack grows down, every live frame
        // (this one's callers') is above `here`, and no other thread uses this
        // stack.
        unsafe {
            use nix::libc;
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return 0;
            }
            let mut addr: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            let r = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
            libc::pthread_attr_destroy(&mut attr);
            let page = match libc::sysconf(libc::_SC_PAGESIZE) {
                n if n > 0 => n as usize,
                _ => 4096,
            };
            let low = (addr as usize).saturating_add(page - 1) & !(page - 1);
            let high = here.saturating_sub(STACK_MARGIN) & !(page - 1);
            if r != 0 || high <= low || here >= (addr as usize).saturating_add(size) {
                return 0;
            }
            // Below a main thread's stack lies address space it may still grow
            // into, not mapped yet: madvise says ENOMEM for that part and drops
            // the rest all the same.
            libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
            high - low
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

/// Unmap the resident pages of the program's and its libraries' read-only file
/// mappings (code, constant data): the pages stay in the page cache, shared with
/// every other process of the same files, and the next use maps them again (a
/// minor fault, microseconds). It is what the kernel itself does to such pages
/// whenever it needs memory; doing it once work has stopped keeps an idle
/// daemon's RSS to what it uses while idle instead of every path it ever ran
/// (the kernel maps 64 KiB around every page touched). Only mappings that were
/// never written (no anonymous, copied-on-write page) are touched, so nothing is
/// lost. Returns how many KiB were unmapped.
pub fn drop_file_pages() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        let mut dropped = 0;
        for m in read_only_file_mappings(&smaps) {
            // SAFETY: a private mapping of a file that was never written (no
            // anonymous page: see read_only_file_mappings) holds exactly the
            // file's contents; MADV_DONTNEED only unmaps its pages, and the next
            // access reads them again from the page cache, as after the kernel
            // reclaimed them.
            let r = unsafe {
                nix::libc::madvise(
                    m.start as *mut nix::libc::c_void,
                    m.end - m.start,
                    nix::libc::MADV_DONTNEED,
                )
            };
            if r == 0 {
                dropped += m.rss_kb;
            }
        }
        dropped
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// One mapping of `/proc/self/smaps` that [`drop_file_pages`] may unmap.
#[derive(Debug, PartialEq)]
struct FileMapping {
    start: usize,
    end: usize,
    rss_kb: u64,
}

/// The mappings of `smaps` that are private, not writable, backed by a file, resident
/// and hold no anonymous (written, copied-on-write) page.
fn read_only_file_mappings(smaps: &str) -> Vec<FileMapping> {
    let mut out = Vec::new();
    // The mapping being read: (start, end, eligible so far, rss).
    let mut cur: Option<(usize, usize, bool, u64)> = None;
    let finish = |cur: &mut Option<(usize, usize, bool, u64)>, out: &mut Vec<FileMapping>| {
        if let Some((start, end, true, rss_kb)) = cur.take() {
            if rss_kb > 0 {
                out.push(FileMapping { start, end, rss_kb });
            }
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                finish(&mut cur, &mut out);
                let perms = fields.next().unwrap_or("");
                let path = fields.nth(3).unwrap_or("");
                let eligible = perms.len() == 4
                    && !perms.contains('w')
                    && perms.ends_with('p')
                    && path.starts_with('/');
                cur = Some((start, end, eligible, 0));
                continue;
            }
        }
        let Some(m) = cur.as_mut() else { continue };
        let kb = fields
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        match first {
            "Rss:" => m.3 = kb,
            // Written pages (relocations) or locked ones: leave the mapping alone.
            "Anonymous:" | "Locked:" if kb > 0 => m.2 = false,
            _ => {}
        }
    }
    finish(&mut cur, &mut out);
    out
}

/// Runs a release of memory once a daemon has been quiet for a moment after
/// work. Work says so with [`Trimmer::poke`] (an atomic add: free on a hot path);
/// the trimmer's task sleeps while nothing is poked, so an idle daemon has no
/// wake-ups from it.
#[derive(Clone, Copy)]
pub struct Trimmer {
    inner: &'static TrimmerInner,
}

struct TrimmerInner {
    pokes: AtomicU64,
    /// The task waits for a poke (set by it, cleared by the poke that wakes it).
    asleep: AtomicBool,
    wake: tokio::sync::Notify,
}

impl TrimmerInner {
    const fn new() -> TrimmerInner {
        TrimmerInner {
            pokes: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            wake: tokio::sync::Notify::const_new(),
        }
    }

    fn poke(&self) {
        self.pokes.fetch_add(1, Ordering::Relaxed);
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }
}

impl Trimmer {
    /// The process's trimmer, the one [`poke`] pokes.
    pub fn global() -> Trimmer {
        Trimmer { inner: &GLOBAL }
    }

    /// Work happened (or is happening): release memory once it has stopped.
    pub fn poke(&self) {
        self.inner.poke();
    }

    /// Run until dropped: after a poke, wait until `quiet` passes without one,
    /// then run `release` (for the global trimmer: [`release_all`]), and once
    /// more when [`BLOCKING_KEEP_ALIVE`] and `quiet` have passed after that.
    /// `release` runs right here, on the runtime's thread, not on the blocking
    /// pool: a thread of the pool would end 2 s later and map pages again. It
    /// takes about a millisecond, and only once the daemon has been quiet.
    pub async fn run<F>(self, quiet: Duration, release: F)
    where
        F: Fn(),
    {
        let mut released_at = self.inner.pokes.load(Ordering::Acquire);
        loop {
            self.inner.asleep.store(true, Ordering::Release);
            if self.inner.pokes.load(Ordering::Acquire) == released_at {
                // A poke from here on finds `asleep` set and leaves a permit in
                // `wake`, so it is not missed.
                self.inner.wake.notified().await;
            } else {
                // Poked since the last release began: no need to wait for one.
                self.inner.asleep.store(false, Ordering::Release);
            }
            loop {
                let seen = self.inner.pokes.load(Ordering::Relaxed);
                tokio::time::sleep(quiet).await;
                if self.inner.pokes.load(Ordering::Relaxed) == seen {
                    break;
                }
            }
            released_at = self.inner.pokes.load(Ordering::Acquire);
            release();
            // Work's tail that pokes no one (threads of the blocking pool ending,
            // a lower-priority thread finishing its pass) maps pages again: once
            // it is over, give them back a second time.
            tokio::time::sleep(BLOCKING_KEEP_ALIVE + quiet).await;
            if self.inner.pokes.load(Ordering::Acquire) == released_at {
                release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_users_tunables_come_after_ours_and_win() {
        assert_eq!(tunables_value(None), TUNABLES);
        assert_eq!(tunables_value(Some("".as_ref())), TUNABLES);
        assert_eq!(
            tunables_value(Some("glibc.pthread.stack_cache_size=1024".as_ref())),
            format!("{TUNABLES}:glibc.pthread.stack_cache_size=1024").as_str()
        );
    }

    /// 8 MiB in 16 KiB blocks from `alloc`, every other one freed with `free`,
    /// so the freed ones cannot merge with each other or into the heap's top
    /// and go back by themselves: only a release gives back the pages inside
    /// them. How many of the freed blocks' middle pages are still resident
    /// after [`release`], of how many.
    fn burst(alloc: impl Fn(usize) -> *mut u8, free: impl Fn(*mut u8)) -> (usize, usize) {
        let block = 16 << 10;
        let blocks: Vec<*mut u8> = (0..512)
            .map(|i| {
                let p = alloc(block);
                assert!(!p.is_null());
                // SAFETY: `p` is a fresh block of `block` bytes.
                unsafe { std::ptr::write_bytes(p, i as u8 | 1, block) };
                p
            })
            .collect();
        let mut kept = Vec::new();
        let mut freed = Vec::new();
        for (i, p) in blocks.into_iter().enumerate() {
            if i % 2 == 0 {
                kept.push(p);
            } else {
                // The page in the middle of the block: wholly inside the free
                // space, whatever the allocator's headers.
                freed.push(p as usize + block / 2);
                free(p);
            }
        }
        release();
        let resident = freed.iter().filter(|&&p| smaps_tests::resident(p)).count();
        for p in kept {
            // SAFETY: written above, still allocated.
            assert_eq!(unsafe { *p } & 1, 1);
            free(p);
        }
        (resident, freed.len())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn release_gives_back_what_a_burst_freed() {
        use std::alloc::{GlobalAlloc, Layout};
        tune();
        let layout = |n| Layout::from_size_align(n, 16).unwrap();
        // jemalloc, the binary's allocator of Rust's memory.
        let (resident, of) = burst(
            // SAFETY: a non-zero size; freed below with the same layout.
            |n| unsafe { Allocator {}.alloc(layout(n)) },
            // SAFETY: allocated above by the same allocator, 16 KiB.
            |p| unsafe { Allocator {}.dealloc(p, layout(16 << 10)) },
        );
        assert!(
            resident * 10 <= of,
            "jemalloc: {resident} of {of} freed blocks resident"
        );
        // glibc's malloc, the C libraries'.
        if cfg!(target_env = "gnu") {
            let (resident, of) = burst(
                // SAFETY: malloc of a non-zero size.
                |n| unsafe { nix::libc::malloc(n) as *mut u8 },
                // SAFETY: allocated above by malloc.
                |p| unsafe { nix::libc::free(p as *mut nix::libc::c_void) },
            );
            assert!(
                resident * 10 <= of,
                "malloc: {resident} of {of} freed blocks resident"
            );
        }
    }

    #[tokio::test]
    async fn a_poke_releases_once_quiet_after_the_last_one() {
        let trimmer = Trimmer {
            inner: Box::leak(Box::new(TrimmerInner::new())),
        };
        let quiet = Duration::from_millis(200);
        let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let runs = runs.clone();
            trimmer.run(quiet, move || {
                runs.lock().unwrap().push(std::time::Instant::now());
            })
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(runs.lock().unwrap().is_empty(), "no work, no release");
        let mut last = std::time::Instant::now();
        for _ in 0..10 {
            last = std::time::Instant::now();
            trimmer.poke();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while runs.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = runs.lock().unwrap().clone();
        assert!(!got.is_empty(), "released after the work");
        assert!(
            got.last().unwrap().duration_since(last) >= quiet,
            "not before `quiet` after the last poke"
        );
        // Released a second time once work's tail is over, then asleep again:
        // another poke, another release.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while runs.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(BLOCKING_KEEP_ALIVE + quiet * 2).await;
        let n = runs.lock().unwrap().len();
        assert_eq!(n, 2, "twice per burst of work");
        trimmer.poke();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while runs.lock().unwrap().len() == n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            runs.lock().unwrap().len() > n,
            "released again after a poke"
        );
        task.abort();
    }
}

#[cfg(test)]
mod smaps_tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let smaps = "\
55d0a0000000-55d0a0100000 r--p 00000000 08:01 123 /usr/bin/autobot
Rss:                 400 kB
Anonymous:             0 kB
Locked:                0 kB
55d0a0100000-55d0a0900000 r-xp 00100000 08:01 123 /usr/bin/autobot
Rss:                6000 kB
Anonymous:             0 kB
55d0a0900000-55d0a0a00000 r--p 00900000 08:01 123 /usr/bin/autobot
Rss:                 900 kB
Anonymous:           900 kB
55d0a0a00000-55d0a0a10000 rw-p 00a00000 08:01 123 /usr/bin/autobot
Rss:                  64 kB
Anonymous:            64 kB
7f0000000000-7f0000010000 rw-s 00000000 08:01 9 /m/state.sqlite-shm
Rss:                  32 kB
Anonymous:             0 kB
7f0000010000-7f0000020000 r-xp 00000000 08:01 10 /lib/libm.so.6
Rss:                   0 kB
Anonymous:             0 kB
7f0000020000-7f0000030000 r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7f0000030000-7f0000040000 ---p 00000000 00:00 0
Rss:                   0 kB
";
        let got = read_only_file_mappings(smaps);
        assert_eq!(
            got,
            vec![
                FileMapping {
                    start: 0x55d0a0000000,
                    end: 0x55d0a0100000,
                    rss_kb: 400
                },
                FileMapping {
                    start: 0x55d0a0100000,
                    end: 0x55d0a0900000,
                    rss_kb: 6000
                },
            ]
        );
    }

    #[test]
    fn dropping_file_pages_keeps_the_program_running() {
        let before = drop_file_pages();
        // Code and constants come back on use.
        let text = format!("{:?}", vec![1, 2, 3]);
        assert_eq!(text, "[1, 2, 3]");
        if cfg!(target_os = "linux") {
            assert!(before > 0, "a test binary has resident code pages");
        }
    }

    /// Touch `depth` KiB of stack below the caller; the address of the deepest
    /// frame's buffer.
    #[inline(never)]
    fn go_deep(depth: usize) -> usize {
        let buf = [depth as u8; 1024];
        let here = std::hint::black_box(&buf).as_ptr() as usize;
        if depth == 0 {
            here
        } else {
            std::hint::black_box(go_deep(depth - 1))
        }
    }

    /// Whether the page holding `addr` is resident (mincore).
    #[cfg(target_os = "linux")]
    pub(super) fn resident(addr: usize) -> bool {
        let page = 4096;
        let start = addr & !(page - 1);
        let mut vec = [0u8; 1];
        // SAFETY: mincore reads the residency of one page of this thread's stack
        // mapping into `vec`.
        let r =
            unsafe { nix::libc::mincore(start as *mut nix::libc::c_void, page, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        vec[0] & 1 == 1
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn an_idle_thread_gives_back_the_stack_its_deep_calls_touched() {
        std::thread::Builder::new()
            .stack_size(4 << 20)
            .spawn(|| {
                let deep = go_deep(1024);
                assert!(resident(deep), "the deep frame's page was touched");
                let released = release_own_stack();
                assert!(released >= 512 << 10, "released only {released} bytes");
                assert!(!resident(deep), "the deep page is still resident");
                // The thread goes on: the same depth again gets fresh pages.
                let again = go_deep(1024);
                assert!(resident(again));
                // idle_thread releases once per release_all, not on every park.
                STACKS_RELEASED.fetch_add(1, Ordering::Relaxed);
                go_deep(1024);
                idle_thread();
                assert!(!resident(deep), "idle_thread after a release");
                go_deep(1024);
                idle_thread();
                assert!(resident(deep), "no release since: the pages stay");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
