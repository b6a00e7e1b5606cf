//! The time the schedulers read: the system clock, or a manual clock that tests
//! move to make `periodic` and `nightly` schedulers fire without waiting.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Where schedulers read the time: the system clock, or a manual one tests move
/// (`nightly` and `periodic` fire when it passes their time). Cheap to clone.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<watch::Sender<f64>>>,
}

impl Clock {
    /// The real time.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `start` (unix seconds) until [`Clock::set`] or
    /// [`Clock::advance`] moves it.
    pub fn manual(start: f64) -> Clock {
        Clock {
            manual: Some(Arc::new(watch::channel(start).0)),
        }
    }

    /// Unix seconds now.
    pub fn now(&self) -> f64 {
        match &self.manual {
            Some(tx) => *tx.borrow(),
            None => crate::calendar::now_f64(),
        }
    }

    /// Move a manual clock to `t` (never backwards); no effect on the system clock.
    pub fn set(&self, t: f64) {
        if let Some(tx) = &self.manual {
            tx.send_if_modified(|v| {
                if t > *v {
                    *v = t;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Move a manual clock forward by `secs`.
    pub fn advance(&self, secs: f64) {
        self.set(self.now() + secs);
    }

    /// Returns once the clock reads `t` or later.
    pub async fn sleep_until(&self, t: f64) {
        match &self.manual {
            Some(tx) => {
                let mut rx = tx.subscribe();
                let _ = rx.wait_for(|now| *now >= t).await;
            }
            None => {
                let left = t - crate::calendar::now_f64();
                if left > 0.0 {
                    tokio::time::sleep(Duration::from_secs_f64(left.min(86_400.0 * 365.0))).await;
                }
            }
        }
    }
}
