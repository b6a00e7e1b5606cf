//! One way to run the master's queries on either backend: SQLite (`rusqlite`)
//! or PostgreSQL (`postgres`), so each query module is written once.
//!
//! A query module takes `&mut dyn` [`Sql`] and writes SQLite's SQL with
//! numbered parameters (`?1`, `?2`: a number may repeat); [`translate`] turns
//! it into PostgreSQL's (`$1`, `$2`) and rewrites the few phrases the two spell
//! differently (the [`Dialect`]): `INSERT OR IGNORE` becomes `ON CONFLICT DO
//! NOTHING`, and [`Dialect::unix_now`] is the clock in SQL. `RETURNING` is the
//! same on both (and replaces `last_insert_rowid`), as are `ON CONFLICT (…) DO
//! UPDATE`, partial indexes and `LIMIT`. Values go in and come out as
//! [`Value`], typed like the schema's columns (an `INTEGER`/`BIGINT` is an
//! `i64`, a `REAL`/`DOUBLE PRECISION` an `f64`, `TEXT`, `BLOB`/`BYTEA`), read
//! from a [`Row`] by position. [`crate::db::slaves`] is written this way: the
//! pattern for the other query modules.

use std::borrow::Cow;

/// The SQL a backend speaks, where the two differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The current time in whole unix seconds, as an SQL expression.
    pub fn unix_now(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CAST(strftime('%s', 'now') AS INTEGER)",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)",
        }
    }
}

/// Why a query failed on either backend.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Postgres(String),
    /// A column read as a type it does not hold.
    #[error("column {index}: expected {expected}, found {found}")]
    Column {
        index: usize,
        expected: &'static str,
        found: String,
    },
}

impl From<postgres::Error> for SqlError {
    fn from(e: postgres::Error) -> SqlError {
        SqlError::Postgres(super::pg::describe(&e))
    }
}

impl From<SqlError> for rusqlite::Error {
    /// For the closures of [`super::Db::write`] and [`super::Db::read`], which
    /// return rusqlite's errors: SQLite's own error comes back as it was.
    fn from(e: SqlError) -> rusqlite::Error {
        match e {
            SqlError::Sqlite(e) => e,
            other => rusqlite::Error::ToSqlConversionFailure(Box::new(other)),
        }
    }
}

/// A value in or out of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Real(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result row: its values by position.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, index: usize) -> Result<&Value, SqlError> {
        self.0.get(index).ok_or(SqlError::Column {
            index,
            expected: "a column",
            found: format!("{} columns", self.0.len()),
        })
    }

    fn wrong(index: usize, expected: &'static str, v: &Value) -> SqlError {
        SqlError::Column {
            index,
            expected,
            found: format!("{v:?}"),
        }
    }

    /// An integer that may be NULL.
    pub fn opt_i64(&self, index: usize) -> Result<Option<i64>, SqlError> {
        match self.at(index)? {
            Value::Null => Ok(None),
            Value::Int(i) => Ok(Some(*i)),
            v => Err(Row::wrong(index, "an integer", v)),
        }
    }

    /// An integer.
    pub fn i64(&self, index: usize) -> Result<i64, SqlError> {
        self.opt_i64(index)?
            .ok_or_else(|| Row::wrong(index, "an integer", &Value::Null))
    }

    /// An integer flag (0 is false).
    pub fn bool(&self, index: usize) -> Result<bool, SqlError> {
        Ok(self.i64(index)? != 0)
    }

    /// A number that may be NULL (an integer widens).
    pub fn opt_f64(&self, index: usize) -> Result<Option<f64>, SqlError> {
        match self.at(index)? {
            Value::Null => Ok(None),
            Value::Real(f) => Ok(Some(*f)),
            Value::Int(i) => Ok(Some(*i as f64)),
            v => Err(Row::wrong(index, "a number", v)),
        }
    }

    /// Text that may be NULL.
    pub fn opt_string(&self, index: usize) -> Result<Option<String>, SqlError> {
        match self.at(index)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            v => Err(Row::wrong(index, "text", v)),
        }
    }

    /// Text.
    pub fn string(&self, index: usize) -> Result<String, SqlError> {
        self.opt_string(index)?
            .ok_or_else(|| Row::wrong(index, "text", &Value::Null))
    }

    /// Bytes that may be NULL.
    pub fn opt_blob(&self, index: usize) -> Result<Option<Vec<u8>>, SqlError> {
        match self.at(index)? {
            Value::Null => Ok(None),
            Value::Blob(b) => Ok(Some(b.clone())),
            v => Err(Row::wrong(index, "bytes", v)),
        }
    }
}

/// A connection (or transaction) of either backend.
pub trait Sql {
    /// Which backend this is.
    fn dialect(&self) -> Dialect;

    /// Run a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError>;

    /// Run a query; every row it returns.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError>;

    /// The first row a query returns, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, SqlError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The TEXT or BLOB value of `column` in the row of `table` whose `id` is
    /// `id`, as a stream read in place, never loaded whole (SQLite's incremental
    /// blob I/O); `None` where the backend has no such thing (PostgreSQL: its
    /// queries select the part they need instead).
    fn blob_reader(
        &mut self,
        _table: &str,
        _column: &str,
        _id: i64,
    ) -> Result<Option<Box<dyn std::io::Read + '_>>, SqlError> {
        Ok(None)
    }

    /// The one row a query must return (`INSERT … RETURNING id`).
    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, SqlError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| SqlError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    }
}

/// `sql` (SQLite's, with `?N` parameters) as `dialect` speaks it.
pub fn translate(sql: &str, dialect: Dialect) -> Cow<'_, str> {
    if dialect == Dialect::Sqlite {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    let mut next_bare = 1;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    digits = next_bare.to_string();
                    next_bare += 1;
                }
                out.push_str(&digits);
            }
            c => out.push(c),
        }
    }
    const OR_IGNORE: &str = "INSERT OR IGNORE INTO";
    if let Some(at) = out.find(OR_IGNORE) {
        out.replace_range(at..at + OR_IGNORE.len(), "INSERT INTO");
        let body = out.trim_end().trim_end_matches(';').to_string();
        out = match body.find(" RETURNING ") {
            Some(r) => format!("{} ON CONFLICT DO NOTHING{}", &body[..r], &body[r..]),
            None => format!("{body} ON CONFLICT DO NOTHING"),
        };
    }
    Cow::Owned(out)
}

/// SQLite through a rusqlite connection or transaction (statements cached).
pub struct Lite<'a>(pub &'a rusqlite::Connection);

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn lite_value(v: rusqlite::types::ValueRef<'_>) -> Result<Value, SqlError> {
    use rusqlite::types::ValueRef;
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec())
                .map_err(|e| SqlError::Sqlite(rusqlite::Error::Utf8Error(0, e.utf8_error())))?,
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

impl Sql for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        let mut st = self.0.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        let mut st = self.0.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(lite_value(r.get_ref(i)?)?);
            }
            out.push(Row(row));
        }
        Ok(out)
    }

    fn blob_reader(
        &mut self,
        table: &str,
        column: &str,
        id: i64,
    ) -> Result<Option<Box<dyn std::io::Read + '_>>, SqlError> {
        let blob = self
            .0
            .blob_open(rusqlite::MAIN_DB, table, column, id, true)?;
        Ok(Some(Box::new(blob)))
    }
}

/// PostgreSQL through a `postgres` client or transaction.
pub struct Pg<'a, C: postgres::GenericClient>(pub &'a mut C);

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => Err(format!("an integer cannot go into a {ty} parameter").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(format!("a number cannot go into a {ty} parameter").into()),
            },
            Value::Text(s) => s.to_sql(ty, out),
            Value::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Parameters as the `postgres` client takes them.
pub(crate) fn pg_params(params: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params.iter().map(|p| p as _).collect()
}

/// A row of PostgreSQL's as [`Value`]s.
pub(crate) fn pg_row(r: &postgres::Row) -> Result<Row, SqlError> {
    use postgres::types::Type;
    let mut row = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let ty = col.type_();
        let v = match *ty {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(Value::from),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => r
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into())),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            _ => {
                return Err(SqlError::Column {
                    index: i,
                    expected: "bigint, double precision, text or bytea",
                    found: ty.to_string(),
                })
            }
        };
        row.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(row))
}

impl<C: postgres::GenericClient> Sql for Pg<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        let sql = translate(sql, Dialect::Postgres);
        Ok(self.0.execute(sql.as_ref(), &pg_params(params))?)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        let sql = translate(sql, Dialect::Postgres);
        self.0
            .query(sql.as_ref(), &pg_params(params))?
            .iter()
            .map(pg_row)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_sql_is_translated_for_postgresql() {
        let t = |s| translate(s, Dialect::Postgres).into_owned();
        assert_eq!(
            t("UPDATE x SET a = ?2, b = '?1' WHERE id = ?1"),
            "UPDATE x SET a = $2, b = '?1' WHERE id = $1"
        );
        assert_eq!(t("SELECT ? + ?"), "SELECT $1 + $2");
        assert_eq!(
            t("INSERT OR IGNORE INTO t(a) VALUES (?1);"),
            "INSERT INTO t(a) VALUES ($1) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            t("INSERT OR IGNORE INTO t(a) VALUES (?1) RETURNING id"),
            "INSERT INTO t(a) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id"
        );
        assert_eq!(translate("SELECT ?1", Dialect::Sqlite), "SELECT ?1");
    }

    #[test]
    fn rows_read_by_type() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let mut db = Lite(&c);
        let r = db
            .query_one(
                "SELECT ?1, ?2, ?3, ?4, ?5",
                &[
                    5i64.into(),
                    1.5.into(),
                    "t".into(),
                    Value::Null,
                    vec![0u8, 255].into(),
                ],
            )
            .unwrap();
        assert_eq!(r.i64(0).unwrap(), 5);
        assert_eq!(r.opt_f64(1).unwrap(), Some(1.5));
        assert_eq!(r.string(2).unwrap(), "t");
        assert_eq!(r.opt_string(3).unwrap(), None);
        assert_eq!(r.opt_blob(4).unwrap(), Some(vec![0, 255]));
        assert!(r.i64(2).is_err(), "text is no integer");
        let now = db
            .query_one(&format!("SELECT {}", Dialect::Sqlite.unix_now()), &[])
            .unwrap()
            .i64(0)
            .unwrap();
        assert!((now - crate::calendar::now()).abs() < 5);
    }

    #[test]
    fn sqlite_streams_a_value_in_place() {
        use std::io::Read;
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (7, 'abcdef')",
        )
        .unwrap();
        let mut db = Lite(&c);
        let mut r = db
            .blob_reader("t", "v", 7)
            .unwrap()
            .expect("SQLite streams");
        let mut head = [0u8; 3];
        r.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"abc");
        drop(r);
        assert!(db.blob_reader("t", "v", 8).is_err(), "no such row");
    }
}
