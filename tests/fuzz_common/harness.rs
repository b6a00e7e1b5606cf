//! The fuzz runner: proptest cases under a time bound and a memory bound.
//!
//! * **No panic**: proptest runs each case and catches a panic as a failure, then
//!   shrinks the input to a minimal one, which the failure message shows with the
//!   seed (`FUZZ_SEED=N` replays the run).
//! * **No hang**: a watchdog thread knows every case in flight (its target, its
//!   input and when it started); a case that runs past its target's limit is
//!   printed and the process aborts, so `cargo test` fails instead of waiting.
//! * **Bounded memory**: this binary's global allocator counts bytes. Per thread it
//!   keeps the live total and its peak, so a parser's peak during one case is
//!   measured exactly even while other tests run; globally it keeps the largest
//!   single request, so an allocation sized by a length field an attacker wrote
//!   (a msgpack header claiming 4 GB) is caught wherever it happens.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// The counting allocator (installed as this binary's global allocator by
/// `fuzz_common/mod.rs`).
pub struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

/// The largest single allocation request since the last [`reset_largest`].
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note_alloc(size: usize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + size as i64;
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
    LARGEST.fetch_max(size, Ordering::Relaxed);
}

fn note_free(size: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get() - size as i64));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping neither allocates nor touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Both blocks may exist at once while the data moves: count the new one
        // before the old one goes.
        note_alloc(new_size);
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            note_free(new_size);
        } else {
            note_free(layout.size());
        }
        p
    }
}

/// Start measuring this thread's peak: returns the live bytes now.
pub fn mark() -> i64 {
    let live = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(live));
    live
}

/// Bytes this thread held at its peak above `base` (from [`mark`]).
pub fn peak_since(base: i64) -> usize {
    (PEAK.with(Cell::get) - base).max(0) as usize
}

/// The largest single allocation request seen in the process since the last reset.
pub fn largest() -> usize {
    LARGEST.load(Ordering::Relaxed)
}

pub fn reset_largest() {
    LARGEST.store(0, Ordering::Relaxed);
}

/// No single allocation anywhere in the process may ask for more than this while a
/// fuzz case runs: nothing autobot does legitimately needs it, and a length field
/// from the input (a 4 GB msgpack array) would.
pub const MAX_SINGLE_ALLOCATION: usize = 256 << 20;

// ---------------------------------------------------------------- watchdog

struct InFlight {
    id: u64,
    target: &'static str,
    started: Instant,
    limit: Duration,
    input: Arc<dyn Debug + Send + Sync>,
}

fn in_flight() -> &'static Mutex<Vec<InFlight>> {
    static SLOTS: OnceLock<Mutex<Vec<InFlight>>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        std::thread::Builder::new()
            .name("fuzz-watchdog".into())
            .spawn(watchdog)
            .expect("the watchdog thread starts");
        Mutex::new(Vec::new())
    })
}

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let slots = in_flight().lock().unwrap_or_else(|p| p.into_inner());
        for s in slots.iter() {
            if s.started.elapsed() > s.limit {
                let mut shown = format!("{:?}", s.input);
                if shown.len() > 8192 {
                    let mut cut = 8192;
                    while !shown.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    shown.truncate(cut);
                    shown.push('…');
                }
                eprintln!(
                    "fuzz {}: a case ran longer than {:?} (seed {}): HANG on input {shown}",
                    s.target,
                    s.limit,
                    seed()
                );
                std::process::abort();
            }
        }
    }
}

/// A case in flight, known to the watchdog until dropped.
struct Flight(u64);

impl Flight {
    fn start(target: &'static str, limit: Duration, input: Arc<dyn Debug + Send + Sync>) -> Flight {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed) as u64;
        in_flight()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(InFlight {
                id,
                target,
                started: Instant::now(),
                limit,
                input,
            });
        Flight(id)
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        in_flight()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.id != self.0);
    }
}

// ---------------------------------------------------------------- panics

/// Panics seen on any thread (a panic in a task of a real master or slave run by
/// a wire target does not reach the test's thread: it is counted here).
fn panics() -> &'static Mutex<Vec<(String, String)>> {
    static PANICS: OnceLock<Mutex<Vec<(String, String)>>> = OnceLock::new();
    PANICS.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let thread = std::thread::current().name().unwrap_or("").to_string();
            if let Some(p) = PANICS.get() {
                p.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((thread, format!("panic at {at}: {what}")));
            }
            default(info);
        }));
        Mutex::new(Vec::new())
    })
}

/// How many panics were recorded so far (installs the recorder on first use).
pub fn panic_count() -> usize {
    panics().lock().unwrap_or_else(|p| p.into_inner()).len()
}

/// The panics recorded after the first `since` on threads whose name starts with
/// `thread_prefix` (the threads of one target's runtime).
pub fn panics_since(since: usize, thread_prefix: &str) -> Vec<String> {
    panics()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .skip(since)
        .filter(|(t, _)| t.starts_with(thread_prefix))
        .map(|(_, m)| m.clone())
        .collect()
}

// ---------------------------------------------------------------- runner

/// The seed of runs under `CI=true`: a submission is judged on the same cases
/// every time, and new cases are explored by local and long runs.
pub const CI_SEED: u64 = 18;

/// The run's seed: `FUZZ_SEED`, else [`CI_SEED`] when `CI=true`, else one drawn
/// from the clock (printed in every report and failure, so a run can be replayed).
pub fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| match std::env::var("FUZZ_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FUZZ_SEED must be a number, not {s:?}")),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => CI_SEED,
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            t ^ (u64::from(std::process::id()) << 32)
        }
    })
}

/// How one target's run went.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub cases: u64,
    pub elapsed: Duration,
    /// The slowest case.
    pub slowest: Duration,
    /// The highest per-thread memory peak of a case.
    pub peak_bytes: usize,
}

impl Report {
    pub fn rate(&self) -> f64 {
        self.cases as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn line(&self) -> String {
        format!(
            "fuzz {:<22} {:>8} cases in {:>7.2} s = {:>9.0} cases/s; slowest case {:.1} ms; peak {} KiB; seed {}",
            self.target,
            self.cases,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.slowest.as_secs_f64() * 1000.0,
            self.peak_bytes / 1024,
            seed()
        )
    }
}

/// How much memory one case may take above what its thread held before it.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBound {
    /// Fixed part.
    pub base: usize,
    /// Bytes per byte of input (`input_len` of the target).
    pub per_input_byte: usize,
}

/// One fuzz target: its name, its time limit per case and its memory bound.
pub struct Target {
    pub name: &'static str,
    pub limit: Duration,
    pub memory: MemoryBound,
}

/// Run `cases` cases of `strategy` through `check` (which returns `Err(why)` for a
/// property that does not hold); panic with the minimal failing input if one fails
/// by error, panic, memory or (through the watchdog) time. `input_len` gives the
/// size of an input in bytes for the memory bound.
pub fn fuzz<S>(
    target: &Target,
    cases: u64,
    strategy: S,
    input_len: impl Fn(&S::Value) -> usize,
    check: impl Fn(&S::Value) -> Result<(), String>,
) -> Report
where
    S: Strategy,
    S::Value: Debug + Clone + Send + Sync + 'static,
{
    fuzz_with(target, cases, 4096, strategy, input_len, check)
}

/// [`fuzz`] with at most `shrink_iters` shrinking steps (few for targets whose
/// every failing step restarts a daemon).
pub fn fuzz_with<S>(
    target: &Target,
    cases: u64,
    shrink_iters: u32,
    strategy: S,
    input_len: impl Fn(&S::Value) -> usize,
    check: impl Fn(&S::Value) -> Result<(), String>,
) -> Report
where
    S: Strategy,
    S::Value: Debug + Clone + Send + Sync + 'static,
{
    let config = Config {
        cases: u32::try_from(cases).unwrap_or(u32::MAX),
        failure_persistence: None,
        max_shrink_iters: shrink_iters,
        max_global_rejects: u32::MAX,
        ..Config::default()
    };
    let mut seed_bytes = [0u8; 32];
    let h = seed().wrapping_add(fxhash(target.name));
    for (i, b) in seed_bytes.iter_mut().enumerate() {
        *b = (h.rotate_left(i as u32 * 8) & 0xff) as u8 ^ i as u8;
    }
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let count = Cell::new(0u64);
    let slowest = Cell::new(Duration::ZERO);
    let peak = Cell::new(0usize);
    let started = Instant::now();
    let result = runner.run(&strategy, |input| {
        count.set(count.get() + 1);
        let flight = Flight::start(target.name, target.limit, Arc::new(input.clone()));
        let t0 = Instant::now();
        let base = mark();
        let largest_before = largest();
        let outcome = check(&input);
        let used = peak_since(base);
        let took = t0.elapsed();
        drop(flight);
        slowest.set(slowest.get().max(took));
        peak.set(peak.get().max(used));
        outcome.map_err(TestCaseError::fail)?;
        let bound = target.memory.base + target.memory.per_input_byte * input_len(&input);
        if used > bound {
            return Err(TestCaseError::fail(format!(
                "used {used} bytes of memory, more than the bound of {bound}"
            )));
        }
        let big = largest();
        if big > MAX_SINGLE_ALLOCATION && big > largest_before {
            reset_largest();
            return Err(TestCaseError::fail(format!(
                "asked for one allocation of {big} bytes (the bound is {MAX_SINGLE_ALLOCATION})"
            )));
        }
        Ok(())
    });
    let report = Report {
        target: target.name,
        cases: count.get(),
        elapsed: started.elapsed(),
        slowest: slowest.get(),
        peak_bytes: peak.get(),
    };
    match result {
        Ok(()) => report,
        Err(TestError::Fail(why, input)) => panic!(
            "fuzz {}: FAILED (seed {}, replay with FUZZ_SEED={}): {why}\nminimal failing input: {input:#?}",
            target.name,
            seed(),
            seed()
        ),
        Err(TestError::Abort(why)) => panic!("fuzz {}: aborted: {why}", target.name),
    }
}

/// A stable small hash of a target's name, so each target draws its own stream.
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
