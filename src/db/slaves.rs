//! Queries on the `slaves` and `slave_connections` tables: what each slave told us
//! about itself and when it came and went.
//!
//! The worker's environment is never passed to these functions: only the fields of
//! [`SlaveInfoRow`] are stored.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

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
        self.write(move |tx| {
            tx.execute(
                "UPDATE slave_connections SET disconnected_at = ?1, reason = ?2
                 WHERE disconnected_at IS NULL",
                params![at, reason],
            )?;
            tx.execute(
                "UPDATE slaves SET connected = 0, disconnect_reason = ?1 WHERE connected = 1",
                params![reason],
            )?;
            Ok(())
        })
        .await
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
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO slaves(name, connected, admin, host, os, version, numcpus,
                                    commands, last_seen, connected_at, disconnect_reason)
                 VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, NULL)
                 ON CONFLICT(name) DO UPDATE SET connected = 1, admin = ?2, host = ?3,
                    os = ?4, version = ?5, numcpus = ?6, commands = ?7, last_seen = ?8,
                    connected_at = ?8, disconnect_reason = NULL",
                params![
                    name,
                    info.admin,
                    info.host,
                    info.os,
                    info.version,
                    info.numcpus,
                    info.commands,
                    at
                ],
            )?;
            tx.execute(
                "INSERT INTO slave_connections(slave, peer, connected_at) VALUES (?1, ?2, ?3)",
                params![name, peer, at],
            )?;
            Ok(tx.last_insert_rowid())
        })
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
        self.write(move |tx| {
            tx.execute(
                "UPDATE slaves SET connected = 0, last_seen = ?2, disconnect_reason = ?3
                 WHERE name = ?1",
                params![name, at, reason],
            )?;
            tx.execute(
                "UPDATE slave_connections SET disconnected_at = ?2, reason = ?3 WHERE id = ?1",
                params![connection_id, at, reason],
            )?;
            Ok(())
        })
        .await
    }

    /// The slave was heard from (keepalive answered).
    pub async fn slave_seen(&self, name: &str, at: i64) -> Result<(), DbError> {
        let name = name.to_string();
        self.write(move |tx| {
            tx.execute(
                "UPDATE slaves SET last_seen = ?2 WHERE name = ?1",
                params![name, at],
            )?;
            Ok(())
        })
        .await
    }

    /// Every slave the database knows, by name.
    pub async fn slaves(&self) -> Result<Vec<SlaveRow>, DbError> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT name, connected, admin, host, os, version, numcpus, last_seen,
                        connected_at, disconnect_reason FROM slaves ORDER BY name",
            )?;
            let rows = st.query_map([], slave_row)?;
            rows.collect()
        })
        .await
    }

    /// One slave, if the database knows it.
    pub async fn slave(&self, name: &str) -> Result<Option<SlaveRow>, DbError> {
        let name = name.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT name, connected, admin, host, os, version, numcpus, last_seen,
                        connected_at, disconnect_reason FROM slaves WHERE name = ?1",
                [name],
                slave_row,
            )
            .optional()
        })
        .await
    }

    /// A slave's connections, newest first.
    pub async fn slave_connections(&self, name: &str) -> Result<Vec<ConnectionRow>, DbError> {
        let name = name.to_string();
        self.read(move |c| connections(c, &name, -1)).await
    }

    /// A slave's newest `limit` connections, newest first (for its page).
    pub async fn recent_connections(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<ConnectionRow>, DbError> {
        let name = name.to_string();
        self.read(move |c| connections(c, &name, i64::from(limit)))
            .await
    }
}

/// A slave's connections, newest first: at most `limit` (all when negative).
fn connections(c: &Connection, name: &str, limit: i64) -> rusqlite::Result<Vec<ConnectionRow>> {
    let mut st = c.prepare_cached(
        "SELECT id, slave, peer, connected_at, disconnected_at, reason
         FROM slave_connections WHERE slave = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = st.query_map(params![name, limit], |r| {
        Ok(ConnectionRow {
            id: r.get(0)?,
            slave: r.get(1)?,
            peer: r.get(2)?,
            connected_at: r.get(3)?,
            disconnected_at: r.get(4)?,
            reason: r.get(5)?,
        })
    })?;
    rows.collect()
}

fn slave_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SlaveRow> {
    Ok(SlaveRow {
        name: r.get(0)?,
        connected: r.get::<_, i64>(1)? != 0,
        admin: r.get(2)?,
        host: r.get(3)?,
        os: r.get(4)?,
        version: r.get(5)?,
        numcpus: r.get(6)?,
        last_seen: r.get(7)?,
        connected_at: r.get(8)?,
        disconnect_reason: r.get(9)?,
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
