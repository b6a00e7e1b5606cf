//! Queries on the `slaves` and `slave_connections` tables: what each slave told us
//! about itself and when it came and went.
//!
//! Written once for both backends (through [`super::sql`]): the pattern the
//! other query modules follow as they move to PostgreSQL. The [`Db`] methods
//! run the same functions on SQLite.
//!
//! The worker's environment is never passed to these functions: only the fields of
//! [`SlaveInfoRow`] are stored.

use serde::Serialize;

use super::sql::{Row, Sql, SqlError};
use super::{Db, DbError};

/// What a slave reported about itself at connect time, as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SlaveInfoRow {
    pub admin: Option<String>,
    pub host: Option<String>,
    pub os: Option<String>,
    pub version: Option<String>,
    pub numcpus: Option<i64>,
    /// JSON object: command name → version.
    pub commands: Option<String>,
}

/// One slave's row, as the JSON API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaveRow {
    pub name: String,
    pub connected: bool,
    pub admin: Option<String>,
    pub host: Option<String>,
    pub os: Option<String>,
    pub version: Option<String>,
    pub numcpus: Option<i64>,
    /// Unix seconds of the last message, `None` if never seen.
    pub last_seen: Option<i64>,
    pub connected_at: Option<i64>,
    pub disconnect_reason: Option<String>,
}

impl SlaveRow {
    /// A configured slave that has never connected.
    pub fn never_seen(name: &str) -> SlaveRow {
        SlaveRow {
            name: name.to_string(),
            connected: false,
            admin: None,
            host: None,
            os: None,
            version: None,
            numcpus: None,
            last_seen: None,
            connected_at: None,
            disconnect_reason: None,
        }
    }
}

/// One past or current connection of a slave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionRow {
    pub id: i64,
    pub slave: String,
    pub peer: Option<String>,
    pub connected_at: i64,
    pub disconnected_at: Option<i64>,
    pub reason: Option<String>,
}

impl Db {
    /// At start-up: any slave still marked connected belongs to a master that died;
    /// mark it (and its open connection record) gone with `reason`.
    pub async fn slaves_reset(&self, reason: &str, at: i64) -> Result<(), DbError> {
        let reason = reason.to_string();
        self.write_sql(move |db| reset(db, &reason, at)).await
    }

    /// Record a slave that just finished connecting; returns the connection id to
    /// pass to [`Db::slave_disconnected`].
    pub async fn slave_connected(
        &self,
        name: &str,
        peer: &str,
        info: SlaveInfoRow,
        at: i64,
    ) -> Result<i64, DbError> {
        let name = name.to_string();
        let peer = peer.to_string();
        let me = self.master_name().to_string();
        self.write_sql(move |db| connected(db, &name, &peer, info, at, &me))
            .await
    }

    /// Record that a slave's connection ended, and why.
    pub async fn slave_disconnected(
        &self,
        name: &str,
        connection_id: i64,
        reason: &str,
        at: i64,
    ) -> Result<(), DbError> {
        let name = name.to_string();
        let reason = reason.to_string();
        let me = self.master_name().to_string();
        self.write_sql(move |db| disconnected(db, &name, connection_id, &reason, at, &me))
            .await
    }

    /// The slave was heard from (keepalive answered).
    pub async fn slave_seen(&self, name: &str, at: i64) -> Result<(), DbError> {
        let name = name.to_string();
        self.write_sql(move |db| seen(db, &name, at)).await
    }

    /// Every slave the database knows, by name.
    pub async fn slaves(&self) -> Result<Vec<SlaveRow>, DbError> {
        self.read_sql(|db| all(db)).await
    }

    /// One slave, if the database knows it.
    pub async fn slave(&self, name: &str) -> Result<Option<SlaveRow>, DbError> {
        let name = name.to_string();
        self.read_sql(move |db| one(db, &name)).await
    }

    /// A slave's connections, newest first.
    pub async fn slave_connections(&self, name: &str) -> Result<Vec<ConnectionRow>, DbError> {
        let name = name.to_string();
        self.read_sql(move |db| connections(db, &name, None)).await
    }

    /// A slave's newest `limit` connections, newest first (for its page).
    pub async fn recent_connections(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<ConnectionRow>, DbError> {
        let name = name.to_string();
        self.read_sql(move |db| connections(db, &name, Some(limit)))
            .await
    }
}

// The queries, on either backend ([`super::sql`]): what the methods above run
// on SQLite, and a master on PostgreSQL will run there.

/// The slaves still connected to master `master` (dead, or restarting) and
/// their open connections, marked gone with `reason`.
pub fn master_gone(db: &mut dyn Sql, master: &str, reason: &str, at: i64) -> Result<(), SqlError> {
    db.execute(
        "UPDATE slave_connections SET disconnected_at = ?1, reason = ?2
         WHERE disconnected_at IS NULL
           AND slave IN (SELECT name FROM slaves WHERE connected = 1 AND master = ?3)",
        &[at.into(), reason.into(), master.into()],
    )?;
    db.execute(
        "UPDATE slaves SET connected = 0, disconnect_reason = ?1
         WHERE connected = 1 AND master = ?2",
        &[reason.into(), master.into()],
    )?;
    Ok(())
}

/// Mark every slave still connected (and its open connection) gone.
pub fn reset(db: &mut dyn Sql, reason: &str, at: i64) -> Result<(), SqlError> {
    db.execute(
        "UPDATE slave_connections SET disconnected_at = ?1, reason = ?2
         WHERE disconnected_at IS NULL",
        &[at.into(), reason.into()],
    )?;
    db.execute(
        "UPDATE slaves SET connected = 0, disconnect_reason = ?1 WHERE connected = 1",
        &[reason.into()],
    )?;
    Ok(())
}

/// Record a slave that just connected to master `master`; the new
/// connection's id.
pub fn connected(
    db: &mut dyn Sql,
    name: &str,
    peer: &str,
    info: SlaveInfoRow,
    at: i64,
    master: &str,
) -> Result<i64, SqlError> {
    db.execute(
        "INSERT INTO slaves(name, connected, admin, host, os, version, numcpus,
                            commands, last_seen, connected_at, disconnect_reason, master)
         VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, NULL, ?9)
         ON CONFLICT(name) DO UPDATE SET connected = 1, admin = ?2, host = ?3,
            os = ?4, version = ?5, numcpus = ?6, commands = ?7, last_seen = ?8,
            connected_at = ?8, disconnect_reason = NULL, master = ?9",
        &[
            name.into(),
            info.admin.into(),
            info.host.into(),
            info.os.into(),
            info.version.into(),
            info.numcpus.into(),
            info.commands.into(),
            at.into(),
            master.into(),
        ],
    )?;
    db.query_one(
        "INSERT INTO slave_connections(slave, peer, connected_at) VALUES (?1, ?2, ?3)
         RETURNING id",
        &[name.into(), peer.into(), at.into()],
    )?
    .i64(0)
}

/// Record that a slave's connection to master `master` ended, and why. A
/// slave that meanwhile connected to another master (sharing the database)
/// stays connected there.
pub fn disconnected(
    db: &mut dyn Sql,
    name: &str,
    connection_id: i64,
    reason: &str,
    at: i64,
    master: &str,
) -> Result<(), SqlError> {
    db.execute(
        "UPDATE slaves SET connected = 0, last_seen = ?2, disconnect_reason = ?3
         WHERE name = ?1 AND (master = ?4 OR master IS NULL)",
        &[name.into(), at.into(), reason.into(), master.into()],
    )?;
    db.execute(
        "UPDATE slave_connections SET disconnected_at = ?2, reason = ?3 WHERE id = ?1",
        &[connection_id.into(), at.into(), reason.into()],
    )?;
    Ok(())
}

/// The slave was heard from.
pub fn seen(db: &mut dyn Sql, name: &str, at: i64) -> Result<(), SqlError> {
    db.execute(
        "UPDATE slaves SET last_seen = ?2 WHERE name = ?1",
        &[name.into(), at.into()],
    )?;
    Ok(())
}

const SLAVE_COLUMNS: &str = "SELECT name, connected, admin, host, os, version, numcpus, \
     last_seen, connected_at, disconnect_reason FROM slaves";

/// Every slave the database knows, by name.
pub fn all(db: &mut dyn Sql) -> Result<Vec<SlaveRow>, SqlError> {
    db.query(&format!("{SLAVE_COLUMNS} ORDER BY name"), &[])?
        .iter()
        .map(slave_row)
        .collect()
}

/// One slave, if the database knows it.
pub fn one(db: &mut dyn Sql, name: &str) -> Result<Option<SlaveRow>, SqlError> {
    db.query_opt(&format!("{SLAVE_COLUMNS} WHERE name = ?1"), &[name.into()])?
        .as_ref()
        .map(slave_row)
        .transpose()
}

/// A slave's connections, newest first: at most `limit` (all when `None`).
pub fn connections(
    db: &mut dyn Sql,
    name: &str,
    limit: Option<u32>,
) -> Result<Vec<ConnectionRow>, SqlError> {
    const SQL: &str = "SELECT id, slave, peer, connected_at, disconnected_at, reason
         FROM slave_connections WHERE slave = ?1 ORDER BY id DESC";
    let rows = match limit {
        Some(n) => db.query(
            &format!("{SQL} LIMIT ?2"),
            &[name.into(), i64::from(n).into()],
        )?,
        None => db.query(SQL, &[name.into()])?,
    };
    rows.iter()
        .map(|r| {
            Ok(ConnectionRow {
                id: r.i64(0)?,
                slave: r.string(1)?,
                peer: r.opt_string(2)?,
                connected_at: r.i64(3)?,
                disconnected_at: r.opt_i64(4)?,
                reason: r.opt_string(5)?,
            })
        })
        .collect()
}

fn slave_row(r: &Row) -> Result<SlaveRow, SqlError> {
    Ok(SlaveRow {
        name: r.string(0)?,
        connected: r.bool(1)?,
        admin: r.opt_string(2)?,
        host: r.opt_string(3)?,
        os: r.opt_string(4)?,
        version: r.opt_string(5)?,
        numcpus: r.opt_i64(6)?,
        last_seen: r.opt_i64(7)?,
        connected_at: r.opt_i64(8)?,
        disconnect_reason: r.opt_string(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_disconnect_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join(super::super::DB_FILE)).unwrap();
        let info = SlaveInfoRow {
            admin: Some("Ann <ann@example.org>".into()),
            host: Some("box".into()),
            os: Some("posix".into()),
            version: Some("4.3.0".into()),
            numcpus: Some(2),
            commands: Some("{\"shell\":\"3.3\"}".into()),
        };
        let id = db
            .slave_connected("s1", "127.0.0.1:5", info.clone(), 100)
            .await
            .unwrap();
        let row = db.slave("s1").await.unwrap().unwrap();
        assert!(row.connected);
        assert_eq!(row.host.as_deref(), Some("box"));
        assert_eq!(row.connected_at, Some(100));
        db.slave_disconnected("s1", id, "keepalive timeout", 150)
            .await
            .unwrap();
        let row = db.slave("s1").await.unwrap().unwrap();
        assert!(!row.connected);
        assert_eq!(row.last_seen, Some(150));
        assert_eq!(row.disconnect_reason.as_deref(), Some("keepalive timeout"));
        db.slave_connected("s1", "p", info, 200).await.unwrap();
        db.slaves_reset("master restarted", 300).await.unwrap();
        let conns = db.slave_connections("s1").await.unwrap();
        assert_eq!(conns.len(), 2);
        assert_eq!(conns[0].reason.as_deref(), Some("master restarted"));
        assert!(!db.slaves().await.unwrap()[0].connected);
    }
}
