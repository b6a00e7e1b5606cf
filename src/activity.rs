//! How much has happened: a counter and the time of the last bump, kept by the
//! engine (one bump per engine event) and the Change bus (one per Change).
//!
//! The status pages make their ETags and `Last-Modified` from it. Reading two
//! atomics costs nothing, where following the events with a task of their own
//! cost a task wake-up per event, per port: several for every Build.

use std::sync::atomic::{AtomicU64, Ordering};

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

#[cfg(test)]
mod tests {
    use super::*;

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
