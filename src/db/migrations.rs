//! The schema of `state.sqlite`, as an append-only list of migrations.
//!
//! `PRAGMA user_version` holds how many entries of [`MIGRATIONS`] a database has
//! had applied. Opening a database applies the missing ones in order, each in its
//! own transaction together with the new `user_version`, so a crash mid-upgrade
//! leaves the database at the last complete step. Never edit a released entry:
//! add a new one at the end (issue 4 appends changes, sourcestamps, buildsets,
//! buildrequests, builds, steps, logs and properties here).

/// Every schema change, oldest first. Index + 1 is the `user_version` after it.
pub const MIGRATIONS: &[&str] = &[
    // 1: slaves and their connection history.
    "CREATE TABLE slaves (
        name TEXT PRIMARY KEY,
        -- 1 while a connection is up and set up (worker info read, dirs made)
        connected INTEGER NOT NULL DEFAULT 0,
        admin TEXT,
        host TEXT,
        os TEXT,
        version TEXT,
        numcpus INTEGER,
        -- JSON object: command name -> version, as the slave advertised it
        commands TEXT,
        -- unix seconds of the last message from the slave
        last_seen INTEGER,
        -- unix seconds of the current (or last) connection's start
        connected_at INTEGER,
        -- why the last connection ended
        disconnect_reason TEXT
    );
    CREATE TABLE slave_connections (
        id INTEGER PRIMARY KEY,
        slave TEXT NOT NULL,
        peer TEXT,
        connected_at INTEGER NOT NULL,
        disconnected_at INTEGER,
        reason TEXT
    );
    CREATE INDEX slave_connections_by_slave ON slave_connections(slave, connected_at);",
];
