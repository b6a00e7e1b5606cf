//! Interlocks: the `[lock:NAME]` sections Builds and Steps hold (Buildbot 0.7's
//! `MasterLock` and `SlaveLock`, with the later `maxCount`).
//!
//! [`Locks`] is the registry the build engine owns: one counter per master-scope
//! lock, one counter per (lock, slave) for a slave-scope lock; at most `maxCount`
//! holders of each counter at once. A Build or Step asks for all of its locks at
//! once and gets all of them or none — there is no partial acquire, so two
//! waiters can never each hold what the other waits for (the manual's "no
//! partial-acquire or partial-release semantics"). A waiter sleeps on a
//! [`Notify`] that every release wakes, then tries again; dropping the waiting
//! future (a stopped Build) leaves nothing held. Holding is a [`LockGuard`]:
//! dropping it, however the Build or Step ends, gives the counts back.
//!
//! Like Buildbot, the registry does not queue waiters in order: a Build that needs
//! only lock A may overtake one that waits for A and B (the manual warns of this
//! starvation); in exchange a waiter never blocks a lock it does not hold.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::config::{LockConfig, LockScope};

/// One counter: a master-scope lock has one, a slave-scope lock has one per slave.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockKey {
    /// The `[lock:NAME]` section's name.
    pub name: String,
    /// The slave the counter belongs to (`None` for a master-scope lock).
    pub slave: Option<String>,
}

/// One lock a Build or Step wants: which counter, and how many may hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockWant {
    pub key: LockKey,
    /// `maxCount` as configured (at least 1).
    pub max_count: u32,
}

/// Turn `names` (a factory's or step's `locks`) into what a Build on `slave` must
/// hold, each counter once. Names without a `[lock:NAME]` in `config` (possible
/// only if a reconfig removed one while a Build ran) are returned apart so the
/// caller can say so; they are not waited for.
pub fn resolve(
    config: &[LockConfig],
    names: &[String],
    slave: &str,
) -> (Vec<LockWant>, Vec<String>) {
    let mut wants: Vec<LockWant> = Vec::new();
    let mut unknown = Vec::new();
    for name in names {
        let Some(l) = config.iter().find(|l| &l.name == name) else {
            if !unknown.contains(name) {
                unknown.push(name.clone());
            }
            continue;
        };
        let key = LockKey {
            name: l.name.clone(),
            slave: match l.scope {
                LockScope::Master => None,
                LockScope::Slave => Some(slave.to_string()),
            },
        };
        if !wants.iter().any(|w| w.key == key) {
            wants.push(LockWant {
                key,
                max_count: l.max_count.max(1),
            });
        }
    }
    (wants, unknown)
}

/// The registry of lock counters; cheap to clone (clones share the counters).
#[derive(Clone, Default)]
pub struct Locks {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Holders per counter; a counter absent here has none.
    held: Mutex<HashMap<LockKey, u32>>,
    /// Woken on every release, so waiters look again.
    released: Notify,
}

impl Locks {
    pub fn new() -> Locks {
        Locks::default()
    }

    fn held(&self) -> MutexGuard<'_, HashMap<LockKey, u32>> {
        self.shared.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take every lock of `wants` now if each has room, or none of them. `Err`
    /// names the locks that are full (each name once, sorted).
    pub fn try_acquire(&self, wants: &[LockWant]) -> Result<LockGuard, Vec<String>> {
        let mut held = self.held();
        let busy: BTreeSet<String> = wants
            .iter()
            .filter(|w| held.get(&w.key).copied().unwrap_or(0) >= w.max_count.max(1))
            .map(|w| w.key.name.clone())
            .collect();
        if !busy.is_empty() {
            return Err(busy.into_iter().collect());
        }
        for w in wants {
            *held.entry(w.key.clone()).or_insert(0) += 1;
        }
        Ok(LockGuard {
            locks: self.clone(),
            keys: wants.iter().map(|w| w.key.clone()).collect(),
        })
    }

    /// Wait until every lock of `wants` has room, then take them all at once.
    /// Nothing is held while waiting, so dropping this future (a stopped Build)
    /// needs no clean-up. Also returns the names of the locks that were full at
    /// some point of the wait (empty if none was).
    pub async fn acquire(&self, wants: &[LockWant]) -> (LockGuard, Vec<String>) {
        let mut seen = BTreeSet::new();
        loop {
            // Registered before looking, so a release between the look and the
            // sleep still wakes this waiter.
            let released = self.shared.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.try_acquire(wants) {
                Ok(guard) => return (guard, seen.into_iter().collect()),
                Err(busy) => seen.extend(busy),
            }
            released.await;
        }
    }

    /// How many hold `key` now (for status pages and tests).
    pub fn holders(&self, key: &LockKey) -> u32 {
        self.held().get(key).copied().unwrap_or(0)
    }

    fn release(&self, keys: &[LockKey]) {
        {
            let mut held = self.held();
            for k in keys {
                if let Some(n) = held.get_mut(k) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        held.remove(k);
                    }
                }
            }
        }
        self.shared.released.notify_waiters();
    }
}

/// Locks held by one Build or Step; dropping it releases them and wakes waiters.
#[must_use = "the locks are released when the guard is dropped"]
pub struct LockGuard {
    locks: Locks,
    keys: Vec<LockKey>,
}

impl LockGuard {
    /// The counters held.
    pub fn keys(&self) -> &[LockKey] {
        &self.keys
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("keys", &self.keys)
            .finish()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.locks.release(&self.keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lock(name: &str, scope: LockScope, max_count: u32) -> LockConfig {
        LockConfig {
            name: name.into(),
            scope,
            max_count,
        }
    }

    fn config() -> Vec<LockConfig> {
        vec![
            lock("a", LockScope::Master, 1),
            lock("b", LockScope::Master, 1),
            lock("two", LockScope::Master, 2),
            lock("cpu", LockScope::Slave, 1),
        ]
    }

    fn wants(names: &[&str], slave: &str) -> Vec<LockWant> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let (w, unknown) = resolve(&config(), &names, slave);
        assert!(unknown.is_empty(), "{unknown:?}");
        w
    }

    fn key(name: &str, slave: Option<&str>) -> LockKey {
        LockKey {
            name: name.into(),
            slave: slave.map(String::from),
        }
    }

    #[test]
    fn resolve_scopes_dedups_and_reports_unknown_names() {
        let names: Vec<String> = ["cpu", "a", "cpu", "gone", "gone"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (w, unknown) = resolve(&config(), &names, "s1");
        assert_eq!(
            w,
            vec![
                LockWant {
                    key: key("cpu", Some("s1")),
                    max_count: 1
                },
                LockWant {
                    key: key("a", None),
                    max_count: 1
                },
            ]
        );
        assert_eq!(unknown, vec!["gone".to_string()]);
    }

    #[test]
    fn max_count_holders_at_once() {
        let locks = Locks::new();
        let one = wants(&["a"], "s1");
        let g = locks.try_acquire(&one).unwrap();
        assert_eq!(locks.try_acquire(&one).unwrap_err(), vec!["a".to_string()]);
        drop(g);
        assert_eq!(locks.holders(&key("a", None)), 0);
        let g = locks.try_acquire(&one).unwrap();
        drop(g);

        let two = wants(&["two"], "s1");
        let g1 = locks.try_acquire(&two).unwrap();
        let g2 = locks.try_acquire(&two).unwrap();
        assert_eq!(locks.holders(&key("two", None)), 2);
        assert!(locks.try_acquire(&two).is_err());
        drop(g1);
        let g3 = locks.try_acquire(&two).unwrap();
        drop((g2, g3));
        assert_eq!(locks.holders(&key("two", None)), 0);
    }

    #[test]
    fn slave_scope_is_one_counter_per_slave() {
        let locks = Locks::new();
        let g1 = locks.try_acquire(&wants(&["cpu"], "s1")).unwrap();
        let g2 = locks.try_acquire(&wants(&["cpu"], "s2")).unwrap();
        assert!(locks.try_acquire(&wants(&["cpu"], "s1")).is_err());
        assert!(locks.try_acquire(&wants(&["cpu"], "s2")).is_err());
        drop(g1);
        let _g3 = locks.try_acquire(&wants(&["cpu"], "s1")).unwrap();
        drop(g2);
        // A master lock of the same slave is a different counter.
        let _g4 = locks.try_acquire(&wants(&["a"], "s1")).unwrap();
    }

    #[test]
    fn all_or_nothing() {
        let locks = Locks::new();
        let hold_b = locks.try_acquire(&wants(&["b"], "s1")).unwrap();
        // Wanting a and b while b is held takes neither.
        assert_eq!(
            locks.try_acquire(&wants(&["a", "b"], "s1")).unwrap_err(),
            vec!["b".to_string()]
        );
        assert_eq!(locks.holders(&key("a", None)), 0);
        let hold_a = locks.try_acquire(&wants(&["a"], "s1")).unwrap();
        assert_eq!(
            locks.try_acquire(&wants(&["a", "b"], "s1")).unwrap_err(),
            vec!["a".to_string(), "b".to_string()]
        );
        drop((hold_a, hold_b));
        let both = locks.try_acquire(&wants(&["a", "b"], "s1")).unwrap();
        assert_eq!(both.keys().len(), 2);
        assert_eq!(locks.holders(&key("a", None)), 1);
        assert_eq!(locks.holders(&key("b", None)), 1);
        drop(both);
        assert_eq!(locks.holders(&key("a", None)), 0);
        assert_eq!(locks.holders(&key("b", None)), 0);
    }

    #[tokio::test]
    async fn a_waiter_holds_nothing_and_wakes_on_release() {
        let locks = Locks::new();
        let hold_b = locks.try_acquire(&wants(&["b"], "s1")).unwrap();
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let (g, seen) = locks.acquire(&wants(&["a", "b"], "s1")).await;
                (g.keys().len(), seen)
            })
        };
        // While the waiter waits for b, a stays free for others, again and again.
        for _ in 0..3 {
            let a = locks.try_acquire(&wants(&["a"], "s1")).unwrap();
            tokio::task::yield_now().await;
            drop(a);
        }
        assert!(!waiter.is_finished());
        drop(hold_b);
        let (n, seen) = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter wakes when b is released")
            .unwrap();
        assert_eq!(n, 2);
        assert!(seen.contains(&"b".to_string()), "{seen:?}");
        assert_eq!(locks.holders(&key("a", None)), 0);
        assert_eq!(locks.holders(&key("b", None)), 0);
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_nothing_held() {
        let locks = Locks::new();
        let hold = locks.try_acquire(&wants(&["b"], "s1")).unwrap();
        let w = wants(&["a", "b"], "s1");
        let waited = tokio::time::timeout(Duration::from_millis(50), locks.acquire(&w)).await;
        assert!(waited.is_err(), "b is held, so the wait cannot end");
        drop(hold);
        let g = locks.try_acquire(&w).unwrap();
        drop(g);
        assert_eq!(locks.holders(&key("a", None)), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_never_exceed_max_count() {
        let locks = Locks::new();
        let w = wants(&["two"], "s1");
        let inside = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let most = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (locks, w, inside, most) = (locks.clone(), w.clone(), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    let (g, _) = locks.acquire(&w).await;
                    let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    drop(g);
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("no waiter is forgotten")
                .unwrap();
        }
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} holders at once");
        assert_eq!(locks.holders(&w[0].key), 0);
    }
}
