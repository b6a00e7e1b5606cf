//! Which master the slave tries next, and when: the order of `master =` in
//! `slave.ini`, wrapping around, with the reconnect backoff applied per round.
//!
//! A round is one attempt at each master, starting at the one after the master
//! the slave last used (the first at start). The master whose connection was
//! just lost counts as tried in the new round, so with one master the slave
//! waits the backoff before it tries again, as it always has. Only after a whole
//! round fails does the slave wait: 1 s, doubling, capped at the keepalive; a
//! connection resets it. A master that refuses the slave's name and password
//! (HTTP 401) is skipped until its own backoff (also 1 s doubling to the cap,
//! per refusal in a row) has passed, so a misconfigured master is never asked
//! again and again in a tight loop while another master keeps dropping the slave.
//!
//! Pure logic over a clock given by the caller, so its order and waits are
//! unit-tested without sockets or sleeps.

use std::time::{Duration, Instant};

/// What the connection loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try the master with this index (in `master =` order).
    Try(usize),
    /// Every master was tried this round: wait this long, then ask again.
    Wait(Duration),
}

/// The state of the slave's walk over its masters.
#[derive(Debug)]
pub(crate) struct Rotation {
    /// Index of the master to try next.
    next: usize,
    /// Masters tried (or skipped) in the current round.
    tried: usize,
    /// The wait after the current round, if it fails.
    delay: Duration,
    cap: Duration,
    /// Per master: refusals of our credentials in a row, and until when it is
    /// skipped because of them.
    refused: Vec<(u32, Option<Instant>)>,
}

/// The first wait of a backoff.
const FIRST: Duration = Duration::from_secs(1);

impl Rotation {
    /// A walk over `masters` masters (at least one is assumed; 0 counts as 1),
    /// waits capped at `cap`.
    pub(crate) fn new(masters: usize, cap: Duration) -> Rotation {
        Rotation {
            next: 0,
            tried: 0,
            delay: FIRST.min(cap),
            cap,
            refused: vec![(0, None); masters.max(1)],
        }
    }

    fn len(&self) -> usize {
        self.refused.len()
    }

    /// The next thing to do at time `now`.
    pub(crate) fn next(&mut self, now: Instant) -> Next {
        loop {
            if self.tried >= self.len() {
                self.tried = 0;
                let wait = self.delay;
                self.delay = (self.delay * 2).min(self.cap);
                return Next::Wait(wait);
            }
            let i = self.next;
            self.next = (i + 1) % self.len();
            self.tried += 1;
            match self.refused[i].1 {
                Some(until) if now < until => continue,
                _ => return Next::Try(i),
            }
        }
    }

    /// Master `i` refused our name and password at `now`.
    pub(crate) fn refused(&mut self, i: usize, now: Instant) {
        if let Some(r) = self.refused.get_mut(i) {
            let wait = FIRST
                .checked_mul(1u32 << r.0.min(20))
                .unwrap_or(self.cap)
                .min(self.cap);
            r.0 = r.0.saturating_add(1);
            r.1 = Some(now + wait);
        }
    }

    /// Connected to master `i`: the backoff starts again from 1 s.
    pub(crate) fn connected(&mut self, i: usize) {
        self.delay = FIRST.min(self.cap);
        if let Some(r) = self.refused.get_mut(i) {
            *r = (0, None);
        }
    }

    /// The connection to master `i` was lost: a new round starts at the next
    /// master, `i` counting as tried in it.
    pub(crate) fn lost(&mut self, i: usize) {
        self.next = (i + 1) % self.len();
        self.tried = 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(8);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn tries_each_in_order_then_waits_doubling_to_the_cap() {
        let now = Instant::now();
        let mut r = Rotation::new(3, CAP);
        let mut got = Vec::new();
        for _ in 0..16 {
            got.push(r.next(now));
        }
        use Next::*;
        assert_eq!(
            got,
            [
                Try(0),
                Try(1),
                Try(2),
                Wait(secs(1)),
                Try(0),
                Try(1),
                Try(2),
                Wait(secs(2)),
                Try(0),
                Try(1),
                Try(2),
                Wait(secs(4)),
                Try(0),
                Try(1),
                Try(2),
                Wait(secs(8)),
            ]
        );
        assert_eq!(r.next(now), Try(0));
        assert_eq!(r.next(now), Try(1));
        assert_eq!(r.next(now), Try(2));
        assert_eq!(r.next(now), Wait(CAP), "capped");
    }

    #[test]
    fn a_lost_connection_goes_on_to_the_next_master_and_wraps_around() {
        let now = Instant::now();
        let mut r = Rotation::new(3, CAP);
        // Start: the first one is down, the second answers.
        assert_eq!(r.next(now), Next::Try(0));
        assert_eq!(r.next(now), Next::Try(1));
        r.connected(1);
        // It dies: the third, then the first (wrapped), then a wait.
        r.lost(1);
        assert_eq!(r.next(now), Next::Try(2));
        assert_eq!(r.next(now), Next::Try(0));
        assert_eq!(r.next(now), Next::Wait(secs(1)));
        assert_eq!(r.next(now), Next::Try(1), "then round the list again");
        r.connected(1);
        r.lost(1);
        assert_eq!(r.next(now), Next::Try(2));
        r.connected(2);
        r.lost(2);
        assert_eq!(
            r.next(now),
            Next::Try(0),
            "wraps from the last to the first"
        );
    }

    #[test]
    fn one_master_waits_before_it_is_tried_again() {
        let now = Instant::now();
        let mut r = Rotation::new(1, CAP);
        assert_eq!(r.next(now), Next::Try(0));
        assert_eq!(r.next(now), Next::Wait(secs(1)));
        assert_eq!(r.next(now), Next::Try(0));
        assert_eq!(r.next(now), Next::Wait(secs(2)));
        assert_eq!(r.next(now), Next::Try(0));
        r.connected(0);
        r.lost(0);
        assert_eq!(
            r.next(now),
            Next::Wait(secs(1)),
            "backoff reset, not skipped"
        );
        assert_eq!(r.next(now), Next::Try(0));
    }

    #[test]
    fn a_master_that_refuses_the_password_is_skipped_for_its_own_backoff() {
        let t0 = Instant::now();
        let mut r = Rotation::new(2, CAP);
        assert_eq!(r.next(t0), Next::Try(0));
        r.refused(0, t0);
        assert_eq!(r.next(t0), Next::Try(1));
        r.connected(1);
        // The second keeps dropping the slave at once: the first is not asked
        // again until its 1 s has passed, then 2 s after its next refusal.
        r.lost(1);
        assert_eq!(r.next(t0), Next::Wait(secs(1)), "0 skipped: round over");
        assert_eq!(r.next(t0), Next::Try(1));
        r.connected(1);
        r.lost(1);
        let t1 = t0 + secs(1);
        assert_eq!(r.next(t1), Next::Try(0));
        r.refused(0, t1);
        assert_eq!(r.next(t1), Next::Wait(secs(1)), "both tried: round over");
        assert_eq!(r.next(t1), Next::Try(1));
        r.connected(1);
        r.lost(1);
        assert_eq!(r.next(t1 + secs(1)), Next::Wait(secs(1)), "still skipped");
        assert_eq!(r.next(t1 + secs(1)), Next::Try(1));
        r.lost(1);
        assert_eq!(r.next(t1 + secs(2)), Next::Try(0), "after 2 s");
        // Refusals in a row never wait longer than the cap; accepting resets.
        for _ in 0..40 {
            r.refused(0, t1);
        }
        assert_eq!(r.refused[0].1, Some(t1 + CAP));
        r.connected(0);
        assert_eq!(r.refused[0], (0, None));
    }

    #[test]
    fn every_master_refusing_still_waits_between_rounds() {
        let t0 = Instant::now();
        let mut r = Rotation::new(2, CAP);
        assert_eq!(r.next(t0), Next::Try(0));
        r.refused(0, t0);
        assert_eq!(r.next(t0), Next::Try(1));
        r.refused(1, t0);
        assert_eq!(r.next(t0), Next::Wait(secs(1)));
        let t1 = t0 + secs(1);
        assert_eq!(r.next(t1), Next::Try(0));
        r.refused(0, t1);
        assert_eq!(r.next(t1), Next::Try(1));
        r.refused(1, t1);
        assert_eq!(r.next(t1), Next::Wait(secs(2)));
        // Both skipped until t1 + 2 s: a round of skips is a wait, not a spin.
        assert_eq!(r.next(t1 + secs(1)), Next::Wait(secs(4)));
    }
}
