//! The schema of `state.sqlite`, as an append-only list of migrations.
//!
//! `PRAGMA user_version` holds how many entries of [`MIGRATIONS`] a database has
//! had applied. Opening a database applies the missing ones in order, each in its
//! own transaction together with the new `user_version`, so a crash mid-upgrade
//! leaves the database at the last complete step. Never edit a released entry:
//! add a new one at the end.

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
    // 2: the build engine: Changes, SourceStamps, BuildSets, BuildRequests, Builds,
    // Steps, logs and build properties. Times of the engine's own events are REAL
    // unix seconds (step durations need fractions); a Change's `when_ts` is the
    // commit's whole seconds. Results are the lower-case names (`success`, …),
    // NULL while unknown.
    "CREATE TABLE changes (
        id INTEGER PRIMARY KEY,
        who TEXT NOT NULL,
        -- JSON array of paths
        files TEXT NOT NULL DEFAULT '[]',
        comments TEXT NOT NULL DEFAULT '',
        revision TEXT,
        branch TEXT,
        when_ts INTEGER NOT NULL,
        repository TEXT NOT NULL DEFAULT '',
        category TEXT NOT NULL DEFAULT '',
        -- JSON array of URLs
        links TEXT NOT NULL DEFAULT '[]',
        project TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE sourcestamps (
        id INTEGER PRIMARY KEY,
        branch TEXT,
        revision TEXT,
        repository TEXT NOT NULL DEFAULT '',
        project TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE sourcestamp_changes (
        sourcestamp INTEGER NOT NULL REFERENCES sourcestamps(id),
        change INTEGER NOT NULL REFERENCES changes(id),
        PRIMARY KEY (sourcestamp, change)
    );
    CREATE INDEX sourcestamp_changes_by_change ON sourcestamp_changes(change);
    CREATE TABLE buildsets (
        id INTEGER PRIMARY KEY,
        reason TEXT NOT NULL,
        sourcestamp INTEGER NOT NULL REFERENCES sourcestamps(id),
        scheduler TEXT NOT NULL DEFAULT '',
        -- JSON object: name -> value
        properties TEXT NOT NULL DEFAULT '{}',
        submitted_at REAL NOT NULL,
        complete INTEGER NOT NULL DEFAULT 0,
        complete_at REAL,
        result TEXT
    );
    CREATE TABLE buildrequests (
        id INTEGER PRIMARY KEY,
        buildset INTEGER NOT NULL REFERENCES buildsets(id),
        builder TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        submitted_at REAL NOT NULL,
        claimed_at REAL,
        complete INTEGER NOT NULL DEFAULT 0,
        complete_at REAL,
        result TEXT
    );
    CREATE INDEX buildrequests_unclaimed ON buildrequests(builder, priority DESC, id)
        WHERE claimed_at IS NULL AND complete = 0;
    CREATE INDEX buildrequests_by_buildset ON buildrequests(buildset);
    CREATE TABLE builds (
        id INTEGER PRIMARY KEY,
        builder TEXT NOT NULL,
        number INTEGER NOT NULL,
        slave TEXT NOT NULL,
        sourcestamp INTEGER REFERENCES sourcestamps(id),
        started_at REAL NOT NULL,
        finished_at REAL,
        -- NULL while running
        result TEXT,
        reason TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL DEFAULT '',
        -- how many steps the factory has (for progress)
        total_steps INTEGER NOT NULL DEFAULT 0,
        UNIQUE (builder, number)
    );
    CREATE INDEX builds_running ON builds(builder) WHERE finished_at IS NULL;
    CREATE TABLE build_requests (
        build INTEGER NOT NULL REFERENCES builds(id),
        request INTEGER NOT NULL REFERENCES buildrequests(id),
        PRIMARY KEY (build, request)
    );
    CREATE INDEX build_requests_by_request ON build_requests(request);
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY,
        build INTEGER NOT NULL REFERENCES builds(id),
        number INTEGER NOT NULL,
        name TEXT NOT NULL,
        started_at REAL,
        finished_at REAL,
        result TEXT,
        -- what the waterfall shows when done (`compile 2 warnings`)
        text TEXT NOT NULL DEFAULT '',
        -- what it shows while running (`compiling`)
        description TEXT NOT NULL DEFAULT '',
        UNIQUE (build, number)
    );
    CREATE TABLE logs (
        id INTEGER PRIMARY KEY,
        step INTEGER NOT NULL REFERENCES steps(id),
        name TEXT NOT NULL,
        -- relative to the master directory
        path TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        lines INTEGER NOT NULL DEFAULT 0,
        complete INTEGER NOT NULL DEFAULT 0,
        UNIQUE (step, name)
    );
    CREATE TABLE build_properties (
        build INTEGER NOT NULL REFERENCES builds(id),
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (build, name)
    );",
    // 3: schedulers and pollers. A scheduler's Changes wait in `scheduler_changes`
    // until a BuildSet takes them; `scheduler_timers` holds the tree-stable deadline
    // per branch ('' = no branch); `scheduler_state` the last Change handled and the
    // last periodic/nightly run; `scheduler_buildsets` the upstream BuildSets a
    // dependent scheduler has handled; `poller_heads` the last revision a poller
    // stored per (repository, branch). All of it lets a restarted master neither
    // lose a Change nor build twice.
    "CREATE TABLE scheduler_changes (
        scheduler TEXT NOT NULL,
        change INTEGER NOT NULL REFERENCES changes(id),
        branch TEXT NOT NULL,
        -- 0: recorded only (a `files` filter did not match); joins the next build
        important INTEGER NOT NULL,
        PRIMARY KEY (scheduler, change)
    );
    CREATE TABLE scheduler_timers (
        scheduler TEXT NOT NULL,
        branch TEXT NOT NULL,
        -- unix seconds
        deadline REAL NOT NULL,
        PRIMARY KEY (scheduler, branch)
    );
    CREATE TABLE scheduler_state (
        scheduler TEXT NOT NULL,
        key TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (scheduler, key)
    );
    CREATE TABLE scheduler_buildsets (
        scheduler TEXT NOT NULL,
        buildset INTEGER NOT NULL REFERENCES buildsets(id),
        PRIMARY KEY (scheduler, buildset)
    );
    CREATE INDEX buildsets_by_scheduler ON buildsets(scheduler);
    CREATE TABLE poller_heads (
        repository TEXT NOT NULL,
        branch TEXT NOT NULL,
        revision TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (repository, branch)
    );",
    // 4: the forges' webhook deliveries already handled, so a replayed or redelivered
    // payload stores nothing the second time: by the forge's delivery id (GitHub's
    // X-GitHub-Delivery, Gitea's X-Gitea-Delivery, GitLab's Idempotency-Key or
    // X-Gitlab-Event-UUID) and by the SHA-256 of the body (the id is not signed).
    // Rows older than the retention (30 days) are deleted as new ones come in.
    "CREATE TABLE hook_deliveries (
        id INTEGER PRIMARY KEY,
        -- github, gitlab or gitea
        forge TEXT NOT NULL,
        -- the forge's delivery id, when it sent one
        delivery TEXT,
        -- hex SHA-256 of the request body
        digest TEXT NOT NULL,
        -- unix seconds
        received_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX hook_deliveries_by_id ON hook_deliveries(forge, delivery)
        WHERE delivery IS NOT NULL;
    CREATE INDEX hook_deliveries_by_digest ON hook_deliveries(forge, digest);
    CREATE INDEX hook_deliveries_by_age ON hook_deliveries(received_at);",
    // 5: forced builds stored their factory's first repository URL as written, with any
    // `user:password@` in it (issue 18); keep what follows the credentials, as
    // `sources::redact_url` does for everything stored since.
    "UPDATE sourcestamps
     SET repository = substr(repository, 1, instr(repository, '://') + 2)
         || substr(repository, instr(repository, '://') + 3
                   + instr(substr(repository, instr(repository, '://') + 3), '@'))
     WHERE instr(repository, '://') > 0
       AND instr(substr(repository, instr(repository, '://') + 3), '@') > 0
       AND (instr(substr(repository, instr(repository, '://') + 3), '/') = 0
            OR instr(substr(repository, instr(repository, '://') + 3), '@')
               < instr(substr(repository, instr(repository, '://') + 3), '/'));",
    // 6: the reporters' outgoing queue (mail and commit statuses), stored before
    // anything is sent so a master killed meanwhile sends it after its restart;
    // which build stages the reporters have decided on; the first build id they
    // handle (builds before a master had reporters are never announced).
    "CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        -- the build it is about; NULL for a missing slave
        build INTEGER REFERENCES builds(id),
        -- 'mail' or 'status'
        kind TEXT NOT NULL,
        -- what the pages show: the recipients, or the forge and the commit
        target TEXT NOT NULL,
        -- the whole message (mail), or the JSON body (status)
        payload BLOB NOT NULL,
        -- JSON: the envelope (mail) or the request's method, URL and auth (status)
        meta TEXT NOT NULL,
        -- the Message-ID of a mail
        message_id TEXT,
        -- 'pending', 'retrying', 'sent' or 'given up'
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        -- unix seconds
        created_at REAL NOT NULL,
        next_at REAL NOT NULL,
        done_at REAL
    );
    CREATE INDEX notifications_due ON notifications(next_at)
        WHERE state IN ('pending', 'retrying');
    CREATE INDEX notifications_by_build ON notifications(build);
    CREATE TABLE notified_builds (
        build INTEGER NOT NULL REFERENCES builds(id),
        -- 'started' or 'finished'
        stage TEXT NOT NULL,
        PRIMARY KEY (build, stage)
    );
    CREATE TABLE reporter_state (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );",
    // 7: what a step's log parser counted, as numbers for the JSON API: the
    // warnings (0 when none or not counted) and the tests in one column per
    // outcome (NULL when no test runner's output was recognised; steps from
    // before this migration have their counts only in their text).
    "ALTER TABLE steps ADD COLUMN warnings INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE steps ADD COLUMN tests_passed INTEGER;
    ALTER TABLE steps ADD COLUMN tests_failed INTEGER;
    ALTER TABLE steps ADD COLUMN tests_skipped INTEGER;
    ALTER TABLE steps ADD COLUMN tests_xfailed INTEGER;
    ALTER TABLE steps ADD COLUMN tests_xpassed INTEGER;",
    // 8: the reporters' horizon set with the schema, not when the reporters first
    // run: a new master's first builds may start before its reporters' thread
    // does (and were then taken for history, never announced). A master that
    // had reporters keeps its horizon.
    "INSERT OR IGNORE INTO reporter_state(name, value)
        SELECT 'horizon', COALESCE(MAX(id), 0) FROM builds;",
    // 9: try jobs: the patch a try BuildSet's SourceStamp carries, with its
    // strip level, who sent it and why. A SourceStamp without a row here is no
    // try job.
    "CREATE TABLE sourcestamp_patches (
        sourcestamp INTEGER PRIMARY KEY REFERENCES sourcestamps(id),
        level INTEGER NOT NULL DEFAULT 0,
        patch BLOB NOT NULL,
        author TEXT NOT NULL DEFAULT '',
        comment TEXT NOT NULL DEFAULT ''
    );",
    // 10: retention (logHorizon, buildHorizon, changeHorizon, logCompression). How
    // a log's bytes are stored: 'plain' (NAME.log), 'zstd' (NAME.log.zst, once
    // complete) or 'deleted' (by logHorizon; the rows stay). The partial indexes
    // let a retention pass find its work without reading the whole history; the
    // sourcestamp indexes let it tell when a SourceStamp is no longer used (and
    // the waterfall find the first build that contains a Change).
    "ALTER TABLE logs ADD COLUMN stored TEXT NOT NULL DEFAULT 'plain';
    CREATE INDEX logs_to_compress ON logs(id) WHERE complete = 1 AND stored = 'plain';
    CREATE INDEX logs_kept ON logs(step) WHERE stored != 'deleted';
    CREATE INDEX buildsets_by_sourcestamp ON buildsets(sourcestamp);
    CREATE INDEX builds_by_sourcestamp ON builds(sourcestamp);
    CREATE INDEX scheduler_buildsets_by_buildset ON scheduler_buildsets(buildset);",
    // 11: artifacts: the files a Build uploaded to the master, kept under
    // MASTERDIR/artifacts/BUILDER/NUMBER/PATH (builder and number are kept so
    // the retention task finds the files of a Build whose row is gone).
    "CREATE TABLE artifacts (
        id INTEGER PRIMARY KEY,
        build_id INTEGER NOT NULL,
        builder TEXT NOT NULL,
        number INTEGER NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (build_id, path)
    );
    CREATE INDEX artifacts_by_builder ON artifacts(builder, number);",
    // 12: pull requests: a Change's properties, as a
    // pull request's hook sets them (pr_number, pr_title, pr_url…). Most Changes
    // have none; they go with their Change.
    "CREATE TABLE change_properties (
        change INTEGER NOT NULL REFERENCES changes(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (change, name)
    ) WITHOUT ROWID;",
    // 13: several masters on one database (PostgreSQL). `masters`: each master's
    // heartbeat; one silent for `masterTimeout` is dead, and the first live
    // master to see it sets `active = 0` and takes over its work. A Build
    // and a claimed BuildRequest name the master that runs them, so that only
    // a dead master's are re-queued. `leases`: what runs once in the cluster
    // (a poller, a timed scheduler), held by one live master.
    "CREATE TABLE masters (
        name TEXT PRIMARY KEY,
        active INTEGER NOT NULL DEFAULT 1,
        started_at REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        master TEXT NOT NULL,
        taken_at REAL NOT NULL
    );
    ALTER TABLE builds ADD COLUMN master TEXT;
    ALTER TABLE buildrequests ADD COLUMN claimed_by TEXT;",
    // 14: the master a slave is connected to, so that when a master dies the
    // one that finds it dead marks its slaves disconnected, and a slave that
    // moved to another master is not marked gone by the one it left.
    "ALTER TABLE slaves ADD COLUMN master TEXT;",
    // 15: each builder's last Build number, bumped by the claim that numbers a
    // Build (one statement, no lock around a max()), so that several masters
    // never give two Builds one number and a number is never given again
    // after retention deleted the newest Builds. Filled from the Builds kept.
    "CREATE TABLE builder_numbers (
        builder TEXT PRIMARY KEY,
        last INTEGER NOT NULL
    );
    INSERT INTO builder_numbers(builder, last)
        SELECT builder, max(number) FROM builds GROUP BY builder;",
];

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// Migration 5 redacts the URLs forced builds stored with credentials,
    /// and leaves every other repository as it was.
    #[test]
    fn stored_credentials_are_redacted() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let (earlier, rest) = MIGRATIONS.split_at(4);
        let last = rest[0];
        for sql in earlier {
            conn.execute_batch(sql).unwrap();
        }
        let rows = [
            (
                "https://bot:s3cret@example.org/r.git",
                "https://example.org/r.git",
            ),
            ("http://tok@127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("https://example.org/a@b.git", "https://example.org/a@b.git"),
            ("/srv/repos/x", "/srv/repos/x"),
            ("ssh://git@example.org/r", "ssh://example.org/r"),
            ("", ""),
        ];
        for (repo, _) in rows {
            conn.execute(
                "INSERT INTO sourcestamps(branch, revision, repository, project) VALUES ('b', 'r', ?1, 'p')",
                [repo],
            )
            .unwrap();
        }
        conn.execute_batch(last).unwrap();
        let got: Vec<String> = conn
            .prepare("SELECT repository FROM sourcestamps ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want: Vec<&str> = rows.iter().map(|(_, w)| *w).collect();
        assert_eq!(got, want);
        for (repo, _) in rows {
            assert_eq!(
                crate::sources::redact_url(repo),
                want[rows.iter().position(|(r, _)| *r == repo).unwrap()],
                "the SQL and redact_url agree on {repo}"
            );
        }
    }
}
