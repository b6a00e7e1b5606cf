//! Several masters on one database: each master's heartbeat (`masters`), the
//! death of a silent one, and the leases (`leases`) that make a poller or a
//! timed scheduler run once in the cluster instead of once per master.
//!
//! A master writes its heartbeat every third of `masterTimeout`. One whose
//! heartbeat is older than `masterTimeout` is dead: the first live master to
//! see it marks it inactive ([`take_dead`], one atomic UPDATE, so exactly one
//! master takes each death) and re-queues its work. A lease is held by a live
//! master; [`lease`] takes it when it is free or its holder is dead, in one
//! atomic upsert. On SQLite there is one master, which holds every lease.

use serde::Serialize;

use super::sql::{Row, Sql, SqlError};
use super::{Db, DbError};

/// A master as the `masters` table knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MasterRow {
    pub name: String,
    /// False once it stopped, or was found dead by another master.
    pub active: bool,
    pub started_at: f64,
    pub last_seen: f64,
}

/// The channel on which each master relays its engine events to the others'
/// live views ([`crate::engine`]'s cluster task reads and writes it).
pub const EVENTS: &str = "autobot_events";

impl Db {
    /// This master starts: active, seen now.
    pub async fn master_started(&self, name: &str, at: f64) -> Result<(), DbError> {
        let name = name.to_string();
        self.write_sql(move |db| started(db, &name, at)).await
    }

    /// This master is alive; the masters silent since before `cutoff` are dead,
    /// and those returned are this master's to recover (no other master got
    /// them). Their leases are free from now on.
    pub async fn master_heartbeat(
        &self,
        name: &str,
        at: f64,
        cutoff: f64,
    ) -> Result<Vec<String>, DbError> {
        let name = name.to_string();
        self.write_sql(move |db| {
            heartbeat(db, &name, at)?;
            take_dead(db, &name, cutoff)
        })
        .await
    }

    /// This master stops: inactive, its leases given back.
    pub async fn master_stopped(&self, name: &str) -> Result<(), DbError> {
        let name = name.to_string();
        self.write_sql(move |db| stopped(db, &name)).await
    }

    /// Whether `master` holds lease `lease` (taking it if it is free or its
    /// holder is dead: silent since before `cutoff`).
    pub async fn take_lease(
        &self,
        lease: &str,
        master: &str,
        at: f64,
        cutoff: f64,
    ) -> Result<bool, DbError> {
        let (lease_name, master) = (lease.to_string(), master.to_string());
        self.write_sql(move |db| self::lease(db, &lease_name, &master, at, cutoff))
            .await
    }

    /// Whether this master should run what lease `lease` guards (a poller, a
    /// timed scheduler), taking it if it is free or its holder is dead. Always
    /// on SQLite, where this master is the only one. An error counts as not
    /// held (the lease's holder, or this master once the database answers
    /// again, runs it).
    pub async fn hold_lease(&self, lease: &str) -> bool {
        if !self.shared() {
            return true;
        }
        let now = crate::calendar::now_f64();
        let cutoff = now - self.master_timeout() as f64;
        let me = self.master_name().to_string();
        match self.take_lease(lease, &me, now, cutoff).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!("lease {lease}: {e}");
                false
            }
        }
    }

    /// Send `payload` to every master LISTENing on `channel` (this one too),
    /// at once and outside any write: on a read connection, in a transaction
    /// of its own, so that it waits for no Build's write. Nothing on SQLite.
    pub async fn notify(&self, channel: &'static str, payload: String) -> Result<(), DbError> {
        if !self.shared() {
            return Ok(());
        }
        self.read_sql(move |db| {
            db.execute(
                "SELECT pg_notify(?1, ?2)",
                &[channel.into(), payload.into()],
            )
            .map(|_| ())
        })
        .await
    }

    /// Every master the database has known, by name.
    pub async fn masters(&self) -> Result<Vec<MasterRow>, DbError> {
        self.read_sql(all).await
    }
}

/// Insert or revive `name`'s row, started and seen at `at`.
pub fn started(db: &mut dyn Sql, name: &str, at: f64) -> Result<(), SqlError> {
    db.execute(
        "INSERT INTO masters(name, active, started_at, last_seen) VALUES (?1, 1, ?2, ?2)
         ON CONFLICT(name) DO UPDATE SET active = 1, started_at = ?2, last_seen = ?2",
        &[name.into(), at.into()],
    )?;
    Ok(())
}

/// `name` is alive at `at`.
pub fn heartbeat(db: &mut dyn Sql, name: &str, at: f64) -> Result<(), SqlError> {
    db.execute(
        "INSERT INTO masters(name, active, started_at, last_seen) VALUES (?1, 1, ?2, ?2)
         ON CONFLICT(name) DO UPDATE SET active = 1, last_seen = ?2",
        &[name.into(), at.into()],
    )?;
    Ok(())
}

/// Mark the active masters other than `me` silent since before `cutoff`
/// inactive, free their leases, and return their names. Concurrent callers
/// each get a different set: the UPDATE re-checks `active` under the row lock.
pub fn take_dead(db: &mut dyn Sql, me: &str, cutoff: f64) -> Result<Vec<String>, SqlError> {
    let dead = db
        .query(
            "UPDATE masters SET active = 0
             WHERE active = 1 AND last_seen < ?1 AND name != ?2 RETURNING name",
            &[cutoff.into(), me.into()],
        )?
        .iter()
        .map(|r| r.string(0))
        .collect::<Result<Vec<_>, _>>()?;
    for name in &dead {
        db.execute(
            "DELETE FROM leases WHERE master = ?1",
            &[name.as_str().into()],
        )?;
    }
    Ok(dead)
}

/// `name` stops cleanly: inactive, its leases free for the others at once.
pub fn stopped(db: &mut dyn Sql, name: &str) -> Result<(), SqlError> {
    db.execute(
        "UPDATE masters SET active = 0 WHERE name = ?1",
        &[name.into()],
    )?;
    db.execute("DELETE FROM leases WHERE master = ?1", &[name.into()])?;
    Ok(())
}

/// Take or keep lease `lease` for `master`: it is `master`'s if no one holds
/// it, `master` already does, or its holder is not an active master seen
/// since `cutoff`. One upsert: two masters racing for it cannot both win.
pub fn lease(
    db: &mut dyn Sql,
    lease: &str,
    master: &str,
    at: f64,
    cutoff: f64,
) -> Result<bool, SqlError> {
    let held = db.query_opt(
        "INSERT INTO leases(name, master, taken_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET master = ?2,
            taken_at = CASE WHEN leases.master = ?2 THEN leases.taken_at ELSE ?3 END
         WHERE leases.master = ?2 OR leases.master NOT IN
            (SELECT name FROM masters WHERE active = 1 AND last_seen >= ?4)
         RETURNING master",
        &[lease.into(), master.into(), at.into(), cutoff.into()],
    )?;
    Ok(held.is_some())
}

/// Every master, by name.
pub fn all(db: &mut dyn Sql) -> Result<Vec<MasterRow>, SqlError> {
    db.query(
        "SELECT name, active, started_at, last_seen FROM masters ORDER BY name",
        &[],
    )?
    .iter()
    .map(master_row)
    .collect()
}

fn master_row(r: &Row) -> Result<MasterRow, SqlError> {
    Ok(MasterRow {
        name: r.string(0)?,
        active: r.bool(1)?,
        started_at: r.opt_f64(2)?.unwrap_or_default(),
        last_seen: r.opt_f64(3)?.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_master_is_taken_once_and_its_leases_move() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(super::super::DB_FILE)).unwrap();
        db.master_started("a", 100.0).await.unwrap();
        db.master_started("b", 100.0).await.unwrap();
        // a holds the poller's lease; b cannot take it while a lives.
        assert!(db.take_lease("poller:x", "a", 100.0, 70.0).await.unwrap());
        assert!(!db.take_lease("poller:x", "b", 101.0, 71.0).await.unwrap());
        assert!(db.take_lease("poller:x", "a", 102.0, 72.0).await.unwrap());
        // a falls silent: at 140 with a 30 s timeout, b finds it dead, once.
        assert_eq!(
            db.master_heartbeat("b", 140.0, 110.0).await.unwrap(),
            vec!["a".to_string()]
        );
        assert!(db
            .master_heartbeat("b", 141.0, 111.0)
            .await
            .unwrap()
            .is_empty());
        assert!(db.take_lease("poller:x", "b", 141.0, 111.0).await.unwrap());
        // a comes back: the lease stays b's while b lives.
        db.master_started("a", 150.0).await.unwrap();
        assert!(!db.take_lease("poller:x", "a", 150.0, 120.0).await.unwrap());
        let rows = db.masters().await.unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|m| m.active), "{rows:?}");
        // b stops cleanly: its lease is free at once.
        db.master_stopped("b").await.unwrap();
        assert!(db.take_lease("poller:x", "a", 151.0, 121.0).await.unwrap());
        assert!(!db.masters().await.unwrap()[1].active);
    }
}
