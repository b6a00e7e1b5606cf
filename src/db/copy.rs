//! `autobot copy-db`: a master's SQLite history copied into an empty PostgreSQL
//! database, so a team moving to several masters keeps every Change, BuildSet,
//! BuildRequest, Build, Step, log record, property, scheduler's and poller's
//! state and queued notification.
//!
//! Every table of the schema is copied as stored, ids included, in one
//! PostgreSQL transaction (a failure leaves the target as it was), each table
//! streamed with `COPY … FROM STDIN BINARY` straight from one SQLite statement:
//! rows go out as they are read, in the client's small buffers, so memory stays
//! bounded however long the history. Tables go in the order their foreign keys
//! need; each id sequence is then set past the copied ids. Step logs' bytes stay
//! in the master directory's files, where the `logs` rows point (`path` is
//! relative to it). The target must be empty: a database with rows is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use postgres::types::{ToSql, Type};
use rusqlite::types::ValueRef;

use super::pg::PgError;
use super::{migrations, pgmigrations};

/// Why a copy did not happen (nothing was written to the target then).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error("{0}")]
    Refused(String),
}

/// What was copied: each table with its row count, in copy order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub tables: Vec<(String, u64)>,
}

/// A column's type on PostgreSQL, which decides how SQLite's value is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Real,
    Text,
    Bytes,
}

impl Kind {
    fn of(pg_type: &str) -> Option<Kind> {
        Some(match pg_type {
            "bigint" | "integer" | "smallint" => Kind::Int,
            "double precision" | "real" => Kind::Real,
            "text" => Kind::Text,
            "bytea" => Kind::Bytes,
            _ => return None,
        })
    }

    fn pg_type(self) -> Type {
        match self {
            Kind::Int => Type::INT8,
            Kind::Real => Type::FLOAT8,
            Kind::Text => Type::TEXT,
            Kind::Bytes => Type::BYTEA,
        }
    }
}

/// One value on its way: typed as its PostgreSQL column.
#[derive(Debug)]
enum Cell {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Cell {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Cell::Int(v) => v,
            Cell::Real(v) => v,
            Cell::Text(v) => v,
            Cell::Bytes(v) => v,
        }
    }
}

/// SQLite's value (typed by what was stored, SQLite being dynamic) as `kind`:
/// integers stored in a REAL column widen, numbers in a TEXT column become their
/// text, text in a BLOB column its bytes. Anything else is an error naming the
/// row.
fn cell(kind: Kind, v: ValueRef<'_>, at: &dyn Fn() -> String) -> Result<Cell, CopyError> {
    let bad = |what: &str| {
        CopyError::Refused(format!(
            "{}: {what} cannot go into a {kind:?} column; fix the row in SQLite (or delete it), then copy again",
            at()
        ))
    };
    Ok(match (kind, v) {
        (Kind::Int, ValueRef::Null) => Cell::Int(None),
        (Kind::Real, ValueRef::Null) => Cell::Real(None),
        (Kind::Text, ValueRef::Null) => Cell::Text(None),
        (Kind::Bytes, ValueRef::Null) => Cell::Bytes(None),
        (Kind::Int, ValueRef::Integer(i)) => Cell::Int(Some(i)),
        (Kind::Int, ValueRef::Real(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Cell::Int(Some(f as i64))
        }
        (Kind::Real, ValueRef::Real(f)) => Cell::Real(Some(f)),
        (Kind::Real, ValueRef::Integer(i)) => Cell::Real(Some(i as f64)),
        (Kind::Text, ValueRef::Text(t)) => Cell::Text(Some(
            String::from_utf8(t.to_vec()).map_err(|_| bad("text that is not UTF-8"))?,
        )),
        (Kind::Text, ValueRef::Integer(i)) => Cell::Text(Some(i.to_string())),
        (Kind::Text, ValueRef::Real(f)) => Cell::Text(Some(f.to_string())),
        (Kind::Text, ValueRef::Blob(b)) => Cell::Text(Some(
            String::from_utf8(b.to_vec()).map_err(|_| bad("a blob that is not UTF-8 text"))?,
        )),
        (Kind::Bytes, ValueRef::Blob(b)) => Cell::Bytes(Some(b.to_vec())),
        (Kind::Bytes, ValueRef::Text(t)) => Cell::Bytes(Some(t.to_vec())),
        (_, other) => return Err(bad(&format!("{:?}", other.data_type()))),
    })
}

/// A table to copy: its name and its columns with their kinds.
type Table = (String, Vec<(String, Kind)>);

/// Double quotes around a name from the schema.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The schema's tables on PostgreSQL in an order that satisfies their foreign
/// keys (referenced tables first), each with its columns and kinds.
fn pg_tables(client: &mut postgres::Client, url: &str) -> Result<Vec<Table>, CopyError> {
    let q = |e| CopyError::Pg(PgError::query(url, e));
    let mut columns: BTreeMap<String, Vec<(String, Kind)>> = BTreeMap::new();
    for r in client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text
               FROM information_schema.columns
              WHERE table_schema = current_schema() AND table_name != $1
              ORDER BY table_name, ordinal_position",
            &[&pgmigrations::VERSION_TABLE],
        )
        .map_err(q)?
    {
        let (t, c, ty): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let kind = Kind::of(&ty).ok_or_else(|| {
            CopyError::Refused(format!(
                "{url}: column {t}.{c} has type {ty}, which autobot's schema does not use"
            ))
        })?;
        columns.entry(t).or_default().push((c, kind));
    }
    let mut needs: BTreeMap<String, BTreeSet<String>> = columns
        .keys()
        .map(|t| (t.clone(), BTreeSet::new()))
        .collect();
    for r in client
        .query(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text
               FROM pg_constraint c
               JOIN pg_class t ON t.oid = c.conrelid
               JOIN pg_namespace n ON n.oid = t.relnamespace
              WHERE c.contype = 'f' AND n.nspname = current_schema()",
            &[],
        )
        .map_err(q)?
    {
        let (from, to): (String, String) = (r.get(0), r.get(1));
        let (from, to) = (
            from.trim_matches('"').to_string(),
            to.trim_matches('"').to_string(),
        );
        if from != to {
            needs.entry(from).or_default().insert(to);
        }
    }
    // Referenced tables first; ties in name order, so the order is stable.
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    while done.len() < needs.len() {
        let ready: Vec<String> = needs
            .iter()
            .filter(|(t, n)| !done.contains(*t) && n.iter().all(|d| done.contains(d)))
            .map(|(t, _)| t.clone())
            .collect();
        if ready.is_empty() {
            return Err(CopyError::Refused(format!(
                "{url}: the tables' foreign keys form a cycle; this autobot's schema has none"
            )));
        }
        for t in ready {
            done.insert(t.clone());
            let cols = columns.remove(&t).unwrap_or_default();
            order.push((t, cols));
        }
    }
    Ok(order)
}

/// The rows a freshly migrated database holds by itself: the reporters'
/// horizon (`reporter_state`, from migration 8) at 0. Such a database counts as
/// empty; its row is replaced by the copied one.
fn fresh_rows(table: &str) -> &'static str {
    match table {
        "reporter_state" => "NOT (name = 'horizon' AND value = 0)",
        _ => "TRUE",
    }
}

/// Copy the SQLite database at `sqlite` (at this autobot's schema version: a
/// database behind is refused, naming `autobot upgrade-db DIR`; `dir` is the
/// master directory) into the PostgreSQL database `client` is connected to
/// (`url` names it in messages). An empty database is migrated first; one with
/// rows is refused.
pub fn copy_sqlite_to_pg(
    sqlite: &Path,
    dir: &Path,
    client: &mut postgres::Client,
    url: &str,
) -> Result<Copied, CopyError> {
    let sq = |source| CopyError::Sqlite {
        path: sqlite.to_path_buf(),
        source,
    };
    if !sqlite.is_file() {
        return Err(CopyError::Refused(format!(
            "{} does not exist: the master in {} has no history to copy",
            sqlite.display(),
            dir.display()
        )));
    }
    let src = rusqlite::Connection::open_with_flags(
        sqlite,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sq)?;
    src.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sq)?;
    // One snapshot for every table.
    src.execute_batch("BEGIN").map_err(sq)?;
    let version: i64 = src
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sq)?;
    let known = migrations::MIGRATIONS.len() as i64;
    if version != known {
        return Err(CopyError::Refused(if version < known {
            format!(
                "{} has schema version {version}, this autobot copies version {known}: run \
                 `autobot upgrade-db {}` first",
                sqlite.display(),
                dir.display()
            )
        } else {
            format!(
                "{} has schema version {version}, from a newer autobot (this one knows {known}): \
                 copy it with that autobot",
                sqlite.display()
            )
        }));
    }
    pgmigrations::migrate(client, url)?;
    let tables = pg_tables(client, url)?;
    let q = |e| CopyError::Pg(PgError::query(url, e));
    // The same tables on both sides, or the schemas drifted.
    let sqlite_tables: BTreeSet<String> = src
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(sq)?;
    let pg_names: BTreeSet<String> = tables.iter().map(|(t, _)| t.clone()).collect();
    if sqlite_tables != pg_names {
        return Err(CopyError::Refused(format!(
            "the tables differ: only in SQLite {:?}, only in PostgreSQL {:?}; this autobot's two \
             schemas should be the same (a bug: please report it)",
            sqlite_tables.difference(&pg_names).collect::<Vec<_>>(),
            pg_names.difference(&sqlite_tables).collect::<Vec<_>>()
        )));
    }
    let mut tx = client.transaction().map_err(q)?;
    // Nobody else writes these tables while the copy runs.
    let list: Vec<String> = tables.iter().map(|(t, _)| ident(t)).collect();
    tx.batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", list.join(", ")))
        .map_err(q)?;
    let mut not_empty = Vec::new();
    for (t, _) in &tables {
        let n: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM {} WHERE {}", ident(t), fresh_rows(t)),
                &[],
            )
            .map_err(q)?
            .get(0);
        if n > 0 {
            not_empty.push(format!("{t} ({n} rows)"));
        }
    }
    if !not_empty.is_empty() {
        return Err(CopyError::Refused(format!(
            "{url} is not empty: {}; copy into a new, empty database (CREATE DATABASE …), so no \
             history is mixed or overwritten",
            not_empty.join(", ")
        )));
    }
    tx.batch_execute("DELETE FROM reporter_state").map_err(q)?;
    let mut copied = Vec::new();
    for (t, cols) in &tables {
        let names: Vec<String> = cols.iter().map(|(c, _)| ident(c)).collect();
        let kinds: Vec<Kind> = cols.iter().map(|(_, k)| *k).collect();
        let types: Vec<Type> = kinds.iter().map(|k| k.pg_type()).collect();
        let mut st = src
            .prepare(&format!(
                // No rowid: a WITHOUT ROWID table has none (rows are named by
                // their place in the copy instead).
                "SELECT {} FROM {}",
                names.join(", "),
                ident(t)
            ))
            .map_err(sq)?;
        let mut rows = st.query([]).map_err(sq)?;
        let writer = tx
            .copy_in(&format!(
                "COPY {} ({}) FROM STDIN BINARY",
                ident(t),
                names.join(", ")
            ))
            .map_err(q)?;
        let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(writer, &types);
        let mut n = 0u64;
        while let Some(row) = rows.next().map_err(sq)? {
            let mut cells = Vec::with_capacity(cols.len());
            for (i, (c, kind)) in cols.iter().enumerate() {
                let v = row.get_ref(i).map_err(sq)?;
                let at = || format!("{} table {t}, row {}, column {c}", sqlite.display(), n + 1);
                cells.push(cell(*kind, v, &at)?);
            }
            let values: Vec<&(dyn ToSql + Sync)> = cells.iter().map(Cell::as_sql).collect();
            writer.write(&values).map_err(q)?;
            n += 1;
        }
        let written = writer.finish().map_err(q)?;
        if written != n {
            return Err(CopyError::Refused(format!(
                "{url}: table {t}: {n} rows sent, {written} written"
            )));
        }
        copied.push((t.clone(), n));
    }
    // Each id sequence past the copied ids, so new rows never collide.
    for (t, cols) in &tables {
        if !cols.iter().any(|(c, _)| c == "id") {
            continue;
        }
        let seq: Option<String> = tx
            .query_one("SELECT pg_get_serial_sequence($1, 'id')", &[&ident(t)])
            .map_err(q)?
            .get(0);
        if let Some(seq) = seq {
            tx.query_one(
                &format!(
                    "SELECT setval(CAST($1 AS text)::regclass, COALESCE(MAX(id), 0) + 1, false) FROM {}",
                    ident(t)
                ),
                &[&seq],
            )
            .map_err(q)?;
        }
    }
    tx.commit().map_err(q)?;
    Ok(Copied { tables: copied })
}
