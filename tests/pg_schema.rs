//! The schema on a real PostgreSQL (started by the test) against SQLite's: both
//! migrated from nothing end in the same tables, columns (names, types,
//! nullability, primary keys) and indexes, so the two backends cannot drift; the
//! migrations run once under their advisory lock however many run at once, and
//! a database behind is named with `autobot upgrade-db`.

#[path = "support/mod.rs"]
mod support;

#[path = "pg_common/mod.rs"]
mod pg_common;

use std::collections::BTreeMap;

use autobot::db::{migrations, pg, pgmigrations};
use pg_common::Pg;

/// A column: (name, type, not null, position in the primary key or 0).
type Column = (String, String, bool, i64);

/// Table → columns, and index name → (table, columns, unique).
#[derive(Debug, PartialEq)]
struct Schema {
    tables: BTreeMap<String, Vec<Column>>,
    indexes: BTreeMap<String, (String, Vec<String>, bool)>,
}

fn sqlite_schema() -> Schema {
    let c = rusqlite::Connection::open_in_memory().unwrap();
    for m in migrations::MIGRATIONS {
        c.execute_batch(m).unwrap();
    }
    let names = |sql: &str| -> Vec<String> {
        c.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let mut tables = BTreeMap::new();
    for t in
        names("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    {
        let cols: Vec<Column> = c
            .prepare(&format!("PRAGMA table_info({t})"))
            .unwrap()
            .query_map([], |r| {
                let ty: String = r.get(2)?;
                let pk: i64 = r.get(5)?;
                let notnull: bool = r.get(3)?;
                let ty = match ty.as_str() {
                    "INTEGER" => "bigint",
                    "REAL" => "double precision",
                    "TEXT" => "text",
                    "BLOB" => "bytea",
                    other => panic!("SQLite type {other} has no PostgreSQL twin"),
                };
                Ok((r.get(1)?, ty.to_string(), notnull || pk > 0, pk))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        tables.insert(t, cols);
    }
    let mut indexes = BTreeMap::new();
    for (name, table) in c
        .prepare(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(Result::unwrap)
    {
        let cols = names(&format!(
            "SELECT name FROM pragma_index_info('{name}') ORDER BY seqno"
        ));
        let unique: bool = c
            .query_row(
                &format!("SELECT \"unique\" FROM pragma_index_list('{table}') WHERE name = ?1"),
                [&name],
                |r| r.get(0),
            )
            .unwrap();
        indexes.insert(name, (table, cols, unique));
    }
    Schema { tables, indexes }
}

fn pg_schema(client: &mut postgres::Client) -> Schema {
    let mut tables: BTreeMap<String, Vec<Column>> = BTreeMap::new();
    for r in client
        .query(
            "SELECT c.table_name::text, c.column_name::text, c.data_type::text,
                    c.is_nullable = 'NO',
                    COALESCE((SELECT k.ordinal_position::bigint
                       FROM information_schema.key_column_usage k
                       JOIN information_schema.table_constraints tc
                         ON tc.constraint_name = k.constraint_name
                        AND tc.table_schema = k.table_schema
                      WHERE tc.constraint_type = 'PRIMARY KEY'
                        AND k.table_schema = c.table_schema
                        AND k.table_name = c.table_name
                        AND k.column_name = c.column_name), 0)
               FROM information_schema.columns c
              WHERE c.table_schema = current_schema() AND c.table_name != $1
              ORDER BY c.table_name, c.ordinal_position",
            &[&pgmigrations::VERSION_TABLE],
        )
        .unwrap()
    {
        tables
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2), r.get(3), r.get(4)));
    }
    let mut indexes = BTreeMap::new();
    for r in client
        .query(
            "SELECT i.relname::text, t.relname::text,
                    ARRAY(SELECT a.attname::text
                            FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
                           ORDER BY k.ord),
                    x.indisunique
               FROM pg_index x
               JOIN pg_class i ON i.oid = x.indexrelid
               JOIN pg_class t ON t.oid = x.indrelid
               JOIN pg_namespace n ON n.oid = t.relnamespace
              WHERE n.nspname = current_schema()
                AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
            &[],
        )
        .unwrap()
    {
        indexes.insert(r.get(0), (r.get(1), r.get(2), r.get(3)));
    }
    Schema { tables, indexes }
}

#[test]
fn both_backends_end_in_the_same_schema() {
    let Some(server) = Pg::start() else { return };
    server.create_db("bot");
    let url = pg::parse_url(&server.url("bot")).unwrap();
    let mut client = pg::connect(&url, None).unwrap();
    assert_eq!(pgmigrations::version(&mut client).unwrap(), Some(0));
    let (from, to) = pgmigrations::migrate(&mut client, &url.to_string()).unwrap();
    assert_eq!((from, to), (0, migrations::MIGRATIONS.len() as i64));
    let want = sqlite_schema();
    let got = pg_schema(&mut client);
    assert!(!want.tables.is_empty() && !want.indexes.is_empty());
    for (t, cols) in &want.tables {
        assert_eq!(got.tables.get(t), Some(cols), "table {t}");
    }
    assert_eq!(
        got.tables.keys().collect::<Vec<_>>(),
        want.tables.keys().collect::<Vec<_>>()
    );
    assert_eq!(got.indexes, want.indexes);
    // Again: nothing to do.
    assert_eq!(
        pgmigrations::migrate(&mut client, &url.to_string()).unwrap(),
        (to, to)
    );
}

/// Several upgrades at once (several masters' operators): the advisory lock
/// lets one migrate and the others find nothing left to do.
#[test]
fn concurrent_upgrades_migrate_once() {
    let Some(server) = Pg::start() else { return };
    server.create_db("bot");
    let url = pg::parse_url(&server.url("bot")).unwrap();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut c = pg::connect(&url, None).unwrap();
                pgmigrations::migrate(&mut c, &url.to_string()).unwrap()
            })
        })
        .collect();
    let known = migrations::MIGRATIONS.len() as i64;
    let mut froms: Vec<i64> = runs
        .into_iter()
        .map(|r| r.join().unwrap())
        .map(|(f, t)| {
            assert_eq!(t, known);
            f
        })
        .collect();
    froms.sort();
    assert_eq!(froms, [0, known, known, known]);
}

/// A database behind is refused with the command that upgrades it; one from a
/// newer autobot names both versions; another program's tables are left alone.
#[test]
fn a_master_checks_the_schema_it_finds() {
    let Some(server) = Pg::start() else { return };
    server.create_db("bot");
    server.create_db("other");
    let url = pg::parse_url(&server.url("bot")).unwrap();
    let mut c = pg::connect(&url, None).unwrap();
    let dir = std::path::Path::new("/srv/master");
    let e = pgmigrations::check(&mut c, &url.to_string(), dir)
        .unwrap_err()
        .to_string();
    assert!(e.contains("autobot upgrade-db /srv/master"), "{e}");
    pgmigrations::migrate(&mut c, &url.to_string()).unwrap();
    pgmigrations::check(&mut c, &url.to_string(), dir).unwrap();
    c.execute("UPDATE autobot_schema SET version = 999", &[])
        .unwrap();
    let e = pgmigrations::check(&mut c, &url.to_string(), dir)
        .unwrap_err()
        .to_string();
    assert!(e.contains("newer autobot") && e.contains("999"), "{e}");

    let other = pg::parse_url(&server.url("other")).unwrap();
    let mut o = pg::connect(&other, None).unwrap();
    o.batch_execute("CREATE TABLE mine (x int)").unwrap();
    let e = pgmigrations::migrate(&mut o, &other.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not autobot's"), "{e}");
}
