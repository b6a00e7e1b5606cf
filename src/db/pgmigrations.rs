//! The schema on PostgreSQL: the twin of [`super::migrations`], one entry per
//! SQLite migration, ending in the same tables, columns and indexes.
//!
//! Types map one to one, so a value read from one backend is written to the
//! other unchanged (`autobot copy-db`): SQLite's `INTEGER` is `BIGINT` (an id
//! `INTEGER PRIMARY KEY` is `BIGSERIAL`), `REAL` is `DOUBLE PRECISION`, `TEXT`
//! is `TEXT` and `BLOB` is `BYTEA`. The table `autobot_schema` holds the
//! version (SQLite's `user_version`): one row, the number of entries applied.
//! Several masters share one database, so [`migrate`] runs under an advisory
//! lock and a master never migrates a shared database by itself: `autobot
//! upgrade-db DIR` does ([`check`] says so). Never edit a released entry: add
//! the twin of each new SQLite migration at the end (a test fails until then).

use super::pg::PgError;

/// Every schema change, oldest first; entry N-1 is the twin of SQLite's
/// migration N.
pub const MIGRATIONS: &[&str] = &[
    // 1: slaves and their connection history.
    "CREATE TABLE slaves (
        name TEXT PRIMARY KEY,
        connected BIGINT NOT NULL DEFAULT 0,
        admin TEXT,
        host TEXT,
        os TEXT,
        version TEXT,
        numcpus BIGINT,
        commands TEXT,
        last_seen BIGINT,
        connected_at BIGINT,
        disconnect_reason TEXT
    );
    CREATE TABLE slave_connections (
        id BIGSERIAL PRIMARY KEY,
        slave TEXT NOT NULL,
        peer TEXT,
        connected_at BIGINT NOT NULL,
        disconnected_at BIGINT,
        reason TEXT
    );
    CREATE INDEX slave_connections_by_slave ON slave_connections(slave, connected_at);",
    // 2: the build engine.
    "CREATE TABLE changes (
        id BIGSERIAL PRIMARY KEY,
        who TEXT NOT NULL,
        files TEXT NOT NULL DEFAULT '[]',
        comments TEXT NOT NULL DEFAULT '',
        revision TEXT,
        branch TEXT,
        when_ts BIGINT NOT NULL,
        repository TEXT NOT NULL DEFAULT '',
        category TEXT NOT NULL DEFAULT '',
        links TEXT NOT NULL DEFAULT '[]',
        project TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE sourcestamps (
        id BIGSERIAL PRIMARY KEY,
        branch TEXT,
        revision TEXT,
        repository TEXT NOT NULL DEFAULT '',
        project TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE sourcestamp_changes (
        sourcestamp BIGINT NOT NULL REFERENCES sourcestamps(id),
        change BIGINT NOT NULL REFERENCES changes(id),
        PRIMARY KEY (sourcestamp, change)
    );
    CREATE INDEX sourcestamp_changes_by_change ON sourcestamp_changes(change);
    CREATE TABLE buildsets (
        id BIGSERIAL PRIMARY KEY,
        reason TEXT NOT NULL,
        sourcestamp BIGINT NOT NULL REFERENCES sourcestamps(id),
        scheduler TEXT NOT NULL DEFAULT '',
        properties TEXT NOT NULL DEFAULT '{}',
        submitted_at DOUBLE PRECISION NOT NULL,
        complete BIGINT NOT NULL DEFAULT 0,
        complete_at DOUBLE PRECISION,
        result TEXT
    );
    CREATE TABLE buildrequests (
        id BIGSERIAL PRIMARY KEY,
        buildset BIGINT NOT NULL REFERENCES buildsets(id),
        builder TEXT NOT NULL,
        priority BIGINT NOT NULL DEFAULT 0,
        submitted_at DOUBLE PRECISION NOT NULL,
        claimed_at DOUBLE PRECISION,
        complete BIGINT NOT NULL DEFAULT 0,
        complete_at DOUBLE PRECISION,
        result TEXT
    );
    CREATE INDEX buildrequests_unclaimed ON buildrequests(builder, priority DESC, id)
        WHERE claimed_at IS NULL AND complete = 0;
    CREATE INDEX buildrequests_by_buildset ON buildrequests(buildset);
    CREATE TABLE builds (
        id BIGSERIAL PRIMARY KEY,
        builder TEXT NOT NULL,
        number BIGINT NOT NULL,
        slave TEXT NOT NULL,
        sourcestamp BIGINT REFERENCES sourcestamps(id),
        started_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        result TEXT,
        reason TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL DEFAULT '',
        total_steps BIGINT NOT NULL DEFAULT 0,
        UNIQUE (builder, number)
    );
    CREATE INDEX builds_running ON builds(builder) WHERE finished_at IS NULL;
    CREATE TABLE build_requests (
        build BIGINT NOT NULL REFERENCES builds(id),
        request BIGINT NOT NULL REFERENCES buildrequests(id),
        PRIMARY KEY (build, request)
    );
    CREATE INDEX build_requests_by_request ON build_requests(request);
    CREATE TABLE steps (
        id BIGSERIAL PRIMARY KEY,
        build BIGINT NOT NULL REFERENCES builds(id),
        number BIGINT NOT NULL,
        name TEXT NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        result TEXT,
        text TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        UNIQUE (build, number)
    );
    CREATE TABLE logs (
        id BIGSERIAL PRIMARY KEY,
        step BIGINT NOT NULL REFERENCES steps(id),
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        size BIGINT NOT NULL DEFAULT 0,
        lines BIGINT NOT NULL DEFAULT 0,
        complete BIGINT NOT NULL DEFAULT 0,
        UNIQUE (step, name)
    );
    CREATE TABLE build_properties (
        build BIGINT NOT NULL REFERENCES builds(id),
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (build, name)
    );",
    // 3: schedulers and pollers.
    "CREATE TABLE scheduler_changes (
        scheduler TEXT NOT NULL,
        change BIGINT NOT NULL REFERENCES changes(id),
        branch TEXT NOT NULL,
        important BIGINT NOT NULL,
        PRIMARY KEY (scheduler, change)
    );
    CREATE TABLE scheduler_timers (
        scheduler TEXT NOT NULL,
        branch TEXT NOT NULL,
        deadline DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (scheduler, branch)
    );
    CREATE TABLE scheduler_state (
        scheduler TEXT NOT NULL,
        key TEXT NOT NULL,
        value BIGINT NOT NULL,
        PRIMARY KEY (scheduler, key)
    );
    CREATE TABLE scheduler_buildsets (
        scheduler TEXT NOT NULL,
        buildset BIGINT NOT NULL REFERENCES buildsets(id),
        PRIMARY KEY (scheduler, buildset)
    );
    CREATE INDEX buildsets_by_scheduler ON buildsets(scheduler);
    CREATE TABLE poller_heads (
        repository TEXT NOT NULL,
        branch TEXT NOT NULL,
        revision TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (repository, branch)
    );",
    // 4: the forges' webhook deliveries already handled.
    "CREATE TABLE hook_deliveries (
        id BIGSERIAL PRIMARY KEY,
        forge TEXT NOT NULL,
        delivery TEXT,
        digest TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL
    );
    CREATE UNIQUE INDEX hook_deliveries_by_id ON hook_deliveries(forge, delivery)
        WHERE delivery IS NOT NULL;
    CREATE INDEX hook_deliveries_by_digest ON hook_deliveries(forge, digest);
    CREATE INDEX hook_deliveries_by_age ON hook_deliveries(received_at);",
    // 5: credentials redacted from stored repository URLs (SQLite's `instr` is
    // `strpos` here).
    "UPDATE sourcestamps
     SET repository = substr(repository, 1, strpos(repository, '://') + 2)
         || substr(repository, strpos(repository, '://') + 3
                   + strpos(substr(repository, strpos(repository, '://') + 3), '@'))
     WHERE strpos(repository, '://') > 0
       AND strpos(substr(repository, strpos(repository, '://') + 3), '@') > 0
       AND (strpos(substr(repository, strpos(repository, '://') + 3), '/') = 0
            OR strpos(substr(repository, strpos(repository, '://') + 3), '@')
               < strpos(substr(repository, strpos(repository, '://') + 3), '/'));",
    // 6: the reporters' outgoing queue.
    "CREATE TABLE notifications (
        id BIGSERIAL PRIMARY KEY,
        build BIGINT REFERENCES builds(id),
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        payload BYTEA NOT NULL,
        meta TEXT NOT NULL,
        message_id TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        next_at DOUBLE PRECISION NOT NULL,
        done_at DOUBLE PRECISION
    );
    CREATE INDEX notifications_due ON notifications(next_at)
        WHERE state IN ('pending', 'retrying');
    CREATE INDEX notifications_by_build ON notifications(build);
    CREATE TABLE notified_builds (
        build BIGINT NOT NULL REFERENCES builds(id),
        stage TEXT NOT NULL,
        PRIMARY KEY (build, stage)
    );
    CREATE TABLE reporter_state (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );",
    // 7: a step's warnings and test counts.
    "ALTER TABLE steps ADD COLUMN warnings BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE steps ADD COLUMN tests_passed BIGINT;
    ALTER TABLE steps ADD COLUMN tests_failed BIGINT;
    ALTER TABLE steps ADD COLUMN tests_skipped BIGINT;
    ALTER TABLE steps ADD COLUMN tests_xfailed BIGINT;
    ALTER TABLE steps ADD COLUMN tests_xpassed BIGINT;",
    // 8: the reporters' horizon set with the schema.
    "INSERT INTO reporter_state(name, value)
        SELECT 'horizon', COALESCE(MAX(id), 0) FROM builds
        ON CONFLICT (name) DO NOTHING;",
    // 9: try jobs' patches.
    "CREATE TABLE sourcestamp_patches (
        sourcestamp BIGINT PRIMARY KEY REFERENCES sourcestamps(id),
        level BIGINT NOT NULL DEFAULT 0,
        patch BYTEA NOT NULL,
        author TEXT NOT NULL DEFAULT '',
        comment TEXT NOT NULL DEFAULT ''
    );",
    // 10: retention.
    "ALTER TABLE logs ADD COLUMN stored TEXT NOT NULL DEFAULT 'plain';
    CREATE INDEX logs_to_compress ON logs(id) WHERE complete = 1 AND stored = 'plain';
    CREATE INDEX logs_kept ON logs(step) WHERE stored != 'deleted';
    CREATE INDEX buildsets_by_sourcestamp ON buildsets(sourcestamp);
    CREATE INDEX builds_by_sourcestamp ON builds(sourcestamp);
    CREATE INDEX scheduler_buildsets_by_buildset ON scheduler_buildsets(buildset);",
    // 11: artifacts.
    "CREATE TABLE artifacts (
        id BIGSERIAL PRIMARY KEY,
        build_id BIGINT NOT NULL,
        builder TEXT NOT NULL,
        number BIGINT NOT NULL,
        path TEXT NOT NULL,
        size BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (build_id, path)
    );
    CREATE INDEX artifacts_by_builder ON artifacts(builder, number);",
    // 12: pull requests: a Change's properties.
    "CREATE TABLE change_properties (
        change BIGINT NOT NULL REFERENCES changes(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (change, name)
    );",
    // 13: several masters: heartbeats, leases, who runs a Build or claimed a
    // BuildRequest.
    "CREATE TABLE masters (
        name TEXT PRIMARY KEY,
        active BIGINT NOT NULL DEFAULT 1,
        started_at DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        master TEXT NOT NULL,
        taken_at DOUBLE PRECISION NOT NULL
    );
    ALTER TABLE builds ADD COLUMN master TEXT;
    ALTER TABLE buildrequests ADD COLUMN claimed_by TEXT;",
    // 14: the master a slave is connected to.
    "ALTER TABLE slaves ADD COLUMN master TEXT;",
    // 15: each builder's last Build number, bumped by the claim that numbers a
    // Build (one statement, no lock around a max()), so that several masters
    // never give two Builds one number and a number is never given again
    // after retention deleted the newest Builds. Filled from the Builds kept.
    "CREATE TABLE builder_numbers (
        builder TEXT PRIMARY KEY,
        last BIGINT NOT NULL
    );
    INSERT INTO builder_numbers(builder, last)
        SELECT builder, max(number) FROM builds GROUP BY builder;",
];

/// The table that holds the schema version (one row).
pub const VERSION_TABLE: &str = "autobot_schema";

/// The advisory lock every migration of a shared database runs under, so two
/// `upgrade-db` (or `copy-db`) runs never apply the same migration twice.
pub const MIGRATION_LOCK: i64 = 0x6175_746f_626f_7401;

/// The version a database is at: 0 for an empty database (no
/// `autobot_schema`), `None` when the database holds tables but not autobot's
/// (it belongs to something else: autobot touches nothing there).
pub fn version(client: &mut postgres::Client) -> Result<Option<i64>, postgres::Error> {
    let has: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = $1)",
            &[&VERSION_TABLE],
        )?
        .get(0);
    if has {
        let v: i64 = client
            .query_one(&format!("SELECT version FROM {VERSION_TABLE}"), &[])?
            .get(0);
        return Ok(Some(v));
    }
    let others: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            &[],
        )?
        .get(0);
    Ok((others == 0).then_some(0))
}

/// Bring the database up to date under [`MIGRATION_LOCK`], one transaction per
/// migration (a failure leaves it at the last complete step). Returns the
/// versions before and after. `url` names the database in errors.
pub fn migrate(client: &mut postgres::Client, url: &str) -> Result<(i64, i64), PgError> {
    let q = |e| PgError::query(url, e);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(q)?;
    let done = migrate_locked(client, url);
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    let done = done?;
    unlocked.map_err(q)?;
    Ok(done)
}

fn migrate_locked(client: &mut postgres::Client, url: &str) -> Result<(i64, i64), PgError> {
    let q = |e| PgError::query(url, e);
    let known = MIGRATIONS.len() as i64;
    let Some(from) = version(client).map_err(q)? else {
        return Err(PgError::Schema(format!(
            "{url} holds tables that are not autobot's (no {VERSION_TABLE} table); give autobot a \
             database of its own (CREATE DATABASE autobot OWNER …)"
        )));
    };
    if from > known {
        return Err(too_new(url, from));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let version = i as i64 + 1;
        let err = |source| {
            PgError::Schema(format!(
                "{url}: migration to schema version {version} failed: {source}"
            ))
        };
        let mut tx = client.transaction().map_err(err)?;
        if version == 1 {
            tx.batch_execute(&format!(
                "CREATE TABLE {VERSION_TABLE} (version BIGINT NOT NULL);
                 INSERT INTO {VERSION_TABLE} VALUES (0);"
            ))
            .map_err(err)?;
        }
        tx.batch_execute(sql).map_err(err)?;
        tx.execute(
            &format!("UPDATE {VERSION_TABLE} SET version = $1"),
            &[&version],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::debug!("{url}: migrated to schema version {version}");
    }
    Ok((from, known))
}

fn too_new(url: &str, found: i64) -> PgError {
    PgError::Schema(format!(
        "{url} has schema version {found}, written by a newer autobot; this autobot ({}) knows \
         schema versions up to {}: run the newer autobot",
        crate::VERSION,
        MIGRATIONS.len()
    ))
}

/// What a master checks before it uses a shared database: exactly the schema
/// it knows. Behind (or empty) names `autobot upgrade-db DIR`, which migrates
/// once for every master; a master never migrates a shared database itself,
/// so two masters starting together cannot race.
pub fn check(
    client: &mut postgres::Client,
    url: &str,
    dir: &std::path::Path,
) -> Result<(), PgError> {
    let known = MIGRATIONS.len() as i64;
    let found = version(client).map_err(|e| PgError::query(url, e))?;
    match found {
        Some(v) if v == known => Ok(()),
        Some(v) if v > known => Err(too_new(url, v)),
        Some(v) => Err(PgError::Schema(format!(
            "{url} has schema version {v}, this autobot needs {known}; run `autobot upgrade-db {}` \
             (once, for every master that shares the database), then start the master",
            dir.display()
        ))),
        None => Err(PgError::Schema(format!(
            "{url} holds tables that are not autobot's; give autobot a database of its own"
        ))),
    }
}

#[cfg(test)]
mod tests {
    /// Every SQLite migration has its PostgreSQL twin: adding one to
    /// `migrations.rs` without one here fails this test (and
    /// `tests/pg_schema.rs` compares the tables they make).
    #[test]
    fn every_sqlite_migration_has_its_postgresql_twin() {
        assert_eq!(
            super::MIGRATIONS.len(),
            super::super::migrations::MIGRATIONS.len(),
            "src/db/migrations.rs and src/db/pgmigrations.rs must have as many entries"
        );
    }
}
