//! How much has happened: a counter and the time of the last bump, kept by the
//! engine (one bump per engine event) and the Change bus (one per Change).
//!
//! The status pages make their ETags and `Last-Modified` from it. Reading two
//! atomics costs nothing, where following the events with a task of their own
//! cost a task wake-up per event, per port: several for every Build.
//!
//! [`Work`] is the other half: when the master last did work someone waits
//! for (an engine event, a Change, a web request arriving), on a monotonic
//! clock, so that background work (the retention pass) can yield to it. The
//! process's own, [`WORK`], is touched by every [`Activity::bump`] and by the
//! web server for each request ([`working`]): an atomic store, free on a hot
//! path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A counter of events and when the last one happened; shared through an `Arc`.
#[derive(Debug)]
pub struct Activity {
    count: AtomicU64,
    at: AtomicU64,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            count: AtomicU64::new(0),
            at: AtomicU64::new(crate::calendar::now() as u64),
        }
    }
}

impl Activity {
    /// Something happened now.
    pub fn bump(&self) {
        crate::memory::poke();
        working();
        self.count.fetch_add(1, Ordering::Relaxed);
        self.at
            .store(crate::calendar::now() as u64, Ordering::Relaxed);
    }

    /// How many bumps so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Unix seconds of the last bump (of the start, before any).
    pub fn at(&self) -> u64 {
        self.at.load(Ordering::Relaxed)
    }
}

/// When work last happened, in milliseconds of a monotonic clock (0: never).
#[derive(Debug, Default)]
pub struct Work {
    at: AtomicU64,
}

/// The process's [`Work`]: the engine's events, the Changes and the web's
/// requests touch it; the retention pass yields to it.
pub static WORK: Work = Work::new();

/// Work happens now (the process's [`WORK`]).
pub fn working() {
    WORK.touch();
}

/// Milliseconds since the process's first look at the clock, plus one (so
/// that 0 means never).
fn ticks() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl Work {
    /// No work yet.
    pub const fn new() -> Work {
        Work {
            at: AtomicU64::new(0),
        }
    }

    /// Work happens now.
    pub fn touch(&self) {
        self.at.store(ticks(), Ordering::Relaxed);
    }

    /// How long ago work last happened; `None` when it never did.
    pub fn idle_for(&self) -> Option<Duration> {
        match self.at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(ticks().saturating_sub(at))),
        }
    }

    /// Whether no work happened for at least `quiet`.
    pub fn quiet_for(&self, quiet: Duration) -> bool {
        self.idle_for().is_none_or(|idle| idle >= quiet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_says_how_long_ago_it_happened() {
        let w = Work::new();
        assert_eq!(w.idle_for(), None);
        assert!(w.quiet_for(Duration::from_secs(3600)));
        w.touch();
        assert!(w.idle_for().is_some_and(|d| d < Duration::from_secs(60)));
        assert!(!w.quiet_for(Duration::from_secs(60)));
        assert!(w.quiet_for(Duration::ZERO));
    }

    #[test]
    fn bumps_count_and_move_the_time() {
        let a = Activity::default();
        let start = a.at();
        assert_eq!(a.count(), 0);
        a.bump();
        a.bump();
        assert_eq!(a.count(), 2);
        assert!(a.at() >= start);
    }
}
