//! Bounded reads of Changes and Builds for the JSON API's lists and the status
//! pages' tables: what one response holds is bounded whatever the database holds
//! (rows stored before intake capped their fields included).
//!
//! A list is read row by row and ends at a byte budget of JSON ([`PAGE_BYTES`] for
//! the API) as well as at `limit` rows, saying whether more follow ([`Page`]);
//! each listed row's text fields are cut at [`LIST_CAPS`] and a single Change's at
//! [`ONE_CAPS`], a cut row naming the cut fields in `truncated`. A Change's column
//! longer than its cap is never loaded whole, not even by SQLite: its length comes
//! from `octet_length` and the part shown is read through incremental blob I/O (a
//! file list is parsed as a stream, keeping only what fits), so a 16 MB Change
//! costs a response a few pages of SQLite's cache. On PostgreSQL (no blob I/O)
//! the query itself sends only the part shown: a text's first characters, and a
//! list's kept names with its length.
//!
//! Written once for both backends ([`super::sql`]); rows are fetched in batches
//! of at most [`BATCH`], so a page that ends at its byte budget reads few more
//! rows than it shows.

use serde::Serialize;

use super::builds::BuildRow;
use super::sql::{Dialect, Row, Sql, SqlError, Value};
use super::{Db, DbError};

/// Most bytes of JSON one list response holds: a page ends before the row that
/// would pass it (a first row always goes out; [`LIST_CAPS`] bound it).
pub const PAGE_BYTES: usize = 256 * 1024;

/// How much of a row's text one response carries: each string field is cut at
/// `text` bytes (on a character boundary), and a list of strings (a Change's files
/// or links) ends before the name that would pass `list` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub text: usize,
    pub list: usize,
}

/// Rows in a list (and the pages' tables of Changes and builds).
pub const LIST_CAPS: Caps = Caps {
    text: 16 * 1024,
    list: 16 * 1024,
};

/// One Change on its own (`GET /api/v1/changes/ID`, `/changes/ID`): the comments
/// cap of intake (1 MiB) for every field.
pub const ONE_CAPS: Caps = Caps {
    text: 1 << 20,
    list: 1 << 20,
};

/// One page of a list: its rows, and whether more follow.
#[derive(Debug)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub more: bool,
}

/// Counts the bytes of JSON a value serialises to, without keeping them.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn json_len<T: Serialize>(v: &T) -> usize {
    let mut n = ByteCount(0);
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

/// Take rows from `next` until `limit` rows or `budget` bytes of JSON (a first row
/// always); `more` when a row was left. `next` gives one row each call (from a
/// batch of at most [`BATCH`] rows, [`paged`]), so no more than the page and
/// one batch is ever held.
fn fill_page<T: Serialize>(
    mut next: impl FnMut() -> Result<Option<T>, SqlError>,
    limit: usize,
    budget: usize,
) -> Result<Page<T>, SqlError> {
    let mut rows = Vec::new();
    let mut bytes = 2; // `[` and `]`
    while let Some(row) = next()? {
        let n = json_len(&row) + 1;
        if rows.len() >= limit || (!rows.is_empty() && bytes + n > budget) {
            return Ok(Page { rows, more: true });
        }
        bytes += n;
        rows.push(row);
    }
    Ok(Page { rows, more: false })
}

/// At most `cap` bytes of `b` as text, cut on a character boundary; whether cut.
fn clip(b: &[u8], cap: usize) -> (String, bool) {
    if b.len() <= cap {
        return (String::from_utf8_lossy(b).into_owned(), false);
    }
    let mut end = cap;
    while end > 0 && (b[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    (String::from_utf8_lossy(&b[..end]).into_owned(), true)
}

/// Most rows one query of a list fetches: a page that ends at its byte budget
/// has read at most this many rows past it.
pub const BATCH: u32 = 128;

/// [`BATCH`] on PostgreSQL, whose client holds a whole result (as the
/// server sent it) until the query returns, where SQLite hands rows over
/// one by one: fewer rows a query keep a page of big Changes as small.
pub const PG_BATCH: u32 = 16;

/// The rows of a list newest first, below `before`, fetched `BATCH` at a time
/// and made into `T` by `make` until the page is full ([`fill_page`]).
/// `fetch(db, below, n)` reads the next `n` rows below key `below`; `key` is a
/// row's key (the next batch starts below the last one's).
fn paged<T: Serialize>(
    db: &mut dyn Sql,
    limit: u32,
    before: Option<i64>,
    budget: usize,
    mut fetch: impl FnMut(&mut dyn Sql, i64, i64) -> Result<Vec<Row>, SqlError>,
    key: impl Fn(&Row) -> Result<i64, SqlError>,
    mut make: impl FnMut(&mut dyn Sql, &Row) -> Result<T, SqlError>,
) -> Result<Page<T>, SqlError> {
    let mut below = before.unwrap_or(i64::MAX);
    // One row past the limit says whether more follow.
    let mut left = i64::from(limit) + 1;
    let mut batch = Vec::new().into_iter();
    let mut last_full = true;
    fill_page(
        || loop {
            if let Some(r) = batch.next() {
                below = key(&r)?;
                return make(&mut *db, &r).map(Some);
            }
            if !last_full || left <= 0 {
                return Ok(None);
            }
            let most = match db.dialect() {
                Dialect::Sqlite => BATCH,
                Dialect::Postgres => PG_BATCH,
            };
            let n = left.min(i64::from(most));
            let rows = fetch(&mut *db, below, n)?;
            left -= rows.len() as i64;
            last_full = rows.len() as i64 == n;
            batch = rows.into_iter();
        },
        limit as usize,
        budget,
    )
}

/// Column `i` as text cut at `cap` bytes; `None` for NULL. A cut adds `name`
/// to `cut`.
fn text_col(
    r: &Row,
    i: usize,
    cap: usize,
    name: &'static str,
    cut: &mut Vec<&'static str>,
) -> Result<Option<String>, SqlError> {
    let (text, was_cut) = match r.0.get(i) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Text(t)) => clip(t.as_bytes(), cap),
        Some(Value::Blob(b)) => clip(b, cap),
        Some(Value::Int(n)) => (n.to_string(), false),
        Some(Value::Real(f)) => (f.to_string(), false),
    };
    if was_cut {
        cut.push(name);
    }
    Ok(Some(text))
}

/// The strings of a JSON array, in order, until the one that would pass `cap`
/// bytes; (kept, how many there are in all). What is not kept is skipped without
/// being copied. Not an array of strings: nothing.
fn clip_list(json: &[u8], cap: usize) -> (Vec<String>, usize) {
    clip_list_from(&mut serde_json::Deserializer::from_slice(json), cap)
}

/// [`clip_list`] of JSON read from `de` (a slice, or a reader that streams a
/// column too big to load).
fn clip_list_from<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    cap: usize,
) -> (Vec<String>, usize) {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};
    struct List {
        cap: usize,
    }
    /// One element: kept (`Some`) while it fits in what is left of the cap.
    struct Elem<'a> {
        left: &'a mut usize,
        full: &'a mut bool,
    }
    impl<'de> DeserializeSeed<'de> for Elem<'_> {
        type Value = Option<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            struct V<'a> {
                left: &'a mut usize,
                full: &'a mut bool,
            }
            impl Visitor<'_> for V<'_> {
                type Value = Option<String>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                    if *self.full || v.len() > *self.left {
                        *self.full = true;
                        return Ok(None);
                    }
                    *self.left -= v.len();
                    Ok(Some(v.to_string()))
                }
            }
            d.deserialize_str(V {
                left: self.left,
                full: self.full,
            })
        }
    }
    impl<'de> Visitor<'de> for List {
        type Value = (Vec<String>, usize);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let (mut kept, mut total, mut left, mut full) = (Vec::new(), 0usize, self.cap, false);
            while !full {
                match seq.next_element_seed(Elem {
                    left: &mut left,
                    full: &mut full,
                })? {
                    Some(Some(s)) => {
                        kept.push(s);
                        total += 1;
                    }
                    Some(None) => total += 1,
                    None => return Ok((kept, total)),
                }
            }
            while seq.next_element::<IgnoredAny>()?.is_some() {
                total += 1;
            }
            Ok((kept, total))
        }
    }
    de.deserialize_seq(List { cap }).unwrap_or_default()
}

/// A Change as responses show it: the stored row with its fields cut at the
/// response's [`Caps`], the cut fields named in `truncated`.
#[derive(Debug, Clone, Serialize)]
pub struct CappedChange {
    pub id: i64,
    pub who: String,
    pub files: Vec<String>,
    pub comments: String,
    pub revision: Option<String>,
    pub branch: Option<String>,
    pub when: i64,
    pub repository: String,
    pub category: String,
    pub links: Vec<String>,
    pub project: String,
    /// The fields cut short (whole in `GET /api/v1/changes/ID` up to [`ONE_CAPS`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<&'static str>,
    /// How many files the Change has (`files` may hold fewer).
    #[serde(skip)]
    pub files_total: usize,
}

/// The text columns of `changes`, in the order [`change_columns`] selects them;
/// `true` for the JSON lists of strings.
const CHANGE_TEXT: [(&str, bool); 9] = [
    ("who", false),
    ("files", true),
    ("comments", false),
    ("revision", false),
    ("branch", false),
    ("repository", false),
    ("category", false),
    ("links", true),
    ("project", false),
];

/// The columns [`change_json`] reads: id, when, then for each of
/// [`CHANGE_TEXT`] its length in bytes and its value when it is within the
/// cap. SQLite learns a length without reading the value (`octet_length`), and
/// reads a value only when it is asked for, so a column too big is never loaded
/// whole: [`change_json`] reads the part it shows through incremental blob I/O.
/// PostgreSQL sends that part instead of NULL: a text's first `cap + 1`
/// characters (at least `cap + 1` bytes), a list as `[length, [kept names]]`.
fn change_columns(caps: Caps, dialect: Dialect) -> String {
    let mut cols = vec!["c.id".to_string(), "c.when_ts".to_string()];
    for (name, list) in CHANGE_TEXT {
        let cap = if list { caps.list } else { caps.text };
        cols.push(format!("octet_length(c.{name})"));
        let part = match (dialect, list) {
            (Dialect::Sqlite, _) => String::new(),
            (Dialect::Postgres, false) => format!(" ELSE left(c.{name}, {})", cap + 1),
            (Dialect::Postgres, true) => format!(
                " ELSE (SELECT CAST(json_build_array(json_array_length(CAST(c.{name} AS json)),
                           COALESCE(json_agg(k.e ORDER BY k.i), CAST('[]' AS json))) AS TEXT)
                        FROM (SELECT t.e, t.i, sum(octet_length(t.e)) OVER (ORDER BY t.i) AS run
                              FROM json_array_elements_text(CAST(c.{name} AS json))
                                   WITH ORDINALITY AS t(e, i)) k
                        WHERE k.run <= {cap})"
            ),
        };
        cols.push(format!(
            "CASE WHEN octet_length(c.{name}) <= {cap} THEN c.{name}{part} END"
        ));
    }
    cols.join(", ")
}

fn blob_error(e: std::io::Error) -> SqlError {
    SqlError::Column {
        index: 0,
        expected: "a readable value",
        found: e.to_string(),
    }
}

/// The bytes of a TEXT or BLOB value; `None` for anything else.
fn bytes_of(v: Option<&Value>) -> Option<&[u8]> {
    match v? {
        Value::Text(t) => Some(t.as_bytes()),
        Value::Blob(b) => Some(b),
        _ => None,
    }
}

/// Reads a row selected with [`change_columns`]`(caps, db.dialect())`.
fn change_json(db: &mut dyn Sql, r: &Row, caps: Caps) -> Result<CappedChange, SqlError> {
    use std::io::Read;
    let id = r.i64(0)?;
    let when = r.i64(1)?;
    let mut cut: Vec<&'static str> = Vec::new();
    let mut texts: Vec<Option<String>> = Vec::with_capacity(7);
    let mut lists: Vec<(Vec<String>, usize)> = Vec::with_capacity(2);
    for (k, (name, list)) in CHANGE_TEXT.into_iter().enumerate() {
        let len = r.opt_i64(2 + 2 * k)?;
        let small = bytes_of(r.0.get(3 + 2 * k));
        let within = |cap: usize| len.is_some_and(|n| n <= cap as i64);
        if list {
            let (kept, total) = match (len, small) {
                (None, _) => (Vec::new(), 0),
                (Some(_), Some(b)) if within(caps.list) => clip_list(b, caps.list),
                // PostgreSQL's `[length, [kept names]]`.
                (Some(_), Some(b)) => serde_json::from_slice::<(usize, Vec<String>)>(b)
                    .map(|(total, kept)| (kept, total))
                    .unwrap_or_default(),
                (Some(_), None) => match db.blob_reader("changes", name, id)? {
                    Some(blob) => {
                        let reader = std::io::BufReader::with_capacity(16 * 1024, blob);
                        clip_list_from(
                            &mut serde_json::Deserializer::from_reader(reader),
                            caps.list,
                        )
                    }
                    None => (Vec::new(), 0),
                },
            };
            if kept.len() < total {
                cut.push(name);
            }
            lists.push((kept, total));
            continue;
        }
        texts.push(match (len, small) {
            (None, _) => None,
            // Within the cap, or PostgreSQL's first characters past it.
            (Some(_), Some(b)) => {
                let (text, was_cut) = clip(b, caps.text);
                if was_cut {
                    cut.push(name);
                }
                Some(text)
            }
            (Some(len), None) => match db.blob_reader("changes", name, id)? {
                Some(mut blob) => {
                    // One byte past the cap shows where a character the cut splits ends.
                    let want = (len.max(0) as usize).min(caps.text + 1);
                    let mut buf = vec![0u8; want];
                    blob.read_exact(&mut buf).map_err(blob_error)?;
                    cut.push(name);
                    Some(clip(&buf, caps.text).0)
                }
                None => None,
            },
        });
    }
    let mut texts = texts.into_iter();
    let mut text = || texts.next().flatten();
    let (who, comments, revision, branch) = (text(), text(), text(), text());
    let (repository, category, project) = (text(), text(), text());
    let mut lists = lists.into_iter();
    let (files, files_total) = lists.next().unwrap_or_default();
    let (links, _) = lists.next().unwrap_or_default();
    Ok(CappedChange {
        id,
        who: who.unwrap_or_default(),
        files,
        comments: comments.unwrap_or_default(),
        revision,
        branch,
        when,
        repository: repository.unwrap_or_default(),
        category: category.unwrap_or_default(),
        links,
        project: project.unwrap_or_default(),
        truncated: cut,
        files_total,
    })
}

/// A build in a list: its row (reason and text cut at the caps), the cut fields
/// named in `truncated`.
#[derive(Debug, Clone, Serialize)]
pub struct ListedBuild {
    #[serde(flatten)]
    pub row: BuildRow,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<&'static str>,
}

impl Db {
    /// Changes newest first, below id `before`: a page of at most `limit` rows and
    /// `budget` bytes of JSON, each cut at `caps`.
    pub async fn changes_page(
        &self,
        limit: u32,
        before: Option<i64>,
        caps: Caps,
        budget: usize,
    ) -> Result<Page<CappedChange>, DbError> {
        self.read_sql(move |db| changes_page(db, limit, before, caps, budget))
            .await
    }

    /// One Change, cut at `caps`.
    pub async fn change_capped(
        &self,
        id: i64,
        caps: Caps,
    ) -> Result<Option<CappedChange>, DbError> {
        self.read_sql(move |db| change_capped(db, id, caps)).await
    }

    /// A builder's builds newest first, numbered below `before`: a page of at most
    /// `limit` rows and `budget` bytes of JSON.
    pub async fn builds_page(
        &self,
        builder: &str,
        limit: u32,
        before: Option<i64>,
        caps: Caps,
        budget: usize,
    ) -> Result<Page<ListedBuild>, DbError> {
        let builder = builder.to_string();
        self.read_sql(move |db| builds_page(db, &builder, limit, before, caps, budget))
            .await
    }
}

// The queries, on either backend ([`super::sql`]).

/// Changes newest first, below id `before`: a page of at most `limit` rows and
/// `budget` bytes of JSON, each cut at `caps`.
pub fn changes_page(
    db: &mut dyn Sql,
    limit: u32,
    before: Option<i64>,
    caps: Caps,
    budget: usize,
) -> Result<Page<CappedChange>, SqlError> {
    let sql = format!(
        "SELECT {} FROM changes c WHERE c.id < ?1 ORDER BY c.id DESC LIMIT ?2",
        change_columns(caps, db.dialect())
    );
    paged(
        db,
        limit,
        before,
        budget,
        |db, below, n| db.query(&sql, &[below.into(), n.into()]),
        |r| r.i64(0),
        |db, r| change_json(db, r, caps),
    )
}

/// One Change, cut at `caps`.
pub fn change_capped(
    db: &mut dyn Sql,
    id: i64,
    caps: Caps,
) -> Result<Option<CappedChange>, SqlError> {
    let sql = format!(
        "SELECT {} FROM changes c WHERE c.id = ?1",
        change_columns(caps, db.dialect())
    );
    match db.query_opt(&sql, &[id.into()])? {
        Some(r) => change_json(db, &r, caps).map(Some),
        None => Ok(None),
    }
}

/// A builder's builds newest first, numbered below `before`: a page of at most
/// `limit` rows and `budget` bytes of JSON. Reason and text are read only up to
/// `caps.text + 1` characters (at least one byte past the cap: a longer one is
/// cut).
pub fn builds_page(
    db: &mut dyn Sql,
    builder: &str,
    limit: u32,
    before: Option<i64>,
    caps: Caps,
    budget: usize,
) -> Result<Page<ListedBuild>, SqlError> {
    const SQL: &str = "SELECT b.builder, b.number, b.slave, b.started_at, b.finished_at,
                b.result, substr(b.reason, 1, ?4), substr(b.text, 1, ?4), b.total_steps
         FROM builds b WHERE b.builder = ?1 AND b.number < ?2
         ORDER BY b.number DESC LIMIT ?3";
    // An INTEGER on PostgreSQL (`substr`'s argument).
    let read_to = i64::try_from(caps.text)
        .unwrap_or(i64::MAX)
        .min(i64::from(i32::MAX) - 1)
        + 1;
    paged(
        db,
        limit,
        before,
        budget,
        |db, below, n| {
            db.query(
                SQL,
                &[builder.into(), below.into(), n.into(), read_to.into()],
            )
        },
        |r| r.i64(1),
        |_, r| {
            let mut cut = Vec::new();
            let row = BuildRow {
                builder: r.string(0)?,
                number: r.i64(1)?,
                slave: r.string(2)?,
                started_at: super::status::real(r, 3)?,
                finished_at: r.opt_f64(4)?,
                result: r.opt_string(5)?,
                reason: text_col(r, 6, caps.text, "reason", &mut cut)?.unwrap_or_default(),
                text: text_col(r, 7, caps.text, "text", &mut cut)?.unwrap_or_default(),
                total_steps: r.i64(8)?,
            };
            Ok(ListedBuild {
                row,
                truncated: cut,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_on_a_character_boundary() {
        assert_eq!(clip(b"abc", 3), ("abc".to_string(), false));
        assert_eq!(clip(b"abcd", 3), ("abc".to_string(), true));
        // "é" is two bytes: a cut inside it backs off before it.
        assert_eq!(clip("aé".as_bytes(), 2), ("a".to_string(), true));
        assert_eq!(clip("aé".as_bytes(), 3), ("aé".to_string(), false));
    }

    #[test]
    fn clip_list_keeps_what_fits_and_counts_the_rest() {
        let json = br#"["ab","cd","ef\"g","hi"]"#;
        assert_eq!(
            clip_list(json, 100),
            (
                vec!["ab".into(), "cd".into(), "ef\"g".into(), "hi".into()],
                4
            )
        );
        assert_eq!(clip_list(json, 5), (vec!["ab".into(), "cd".into()], 4));
        assert_eq!(clip_list(json, 1), (vec![], 4));
        assert_eq!(clip_list(b"[]", 10), (vec![], 0));
        assert_eq!(clip_list(b"not json", 10), (vec![], 0));
        assert_eq!(clip_list(br#"[1,2]"#, 10), (vec![], 0));
    }

    #[test]
    fn pages_end_at_the_byte_budget_but_hold_one_row() {
        let rows = ["a".repeat(100), "b".repeat(100), "c".repeat(100)];
        let take = |limit, budget| {
            let mut it = rows.iter().cloned();
            fill_page(|| Ok(it.next()), limit, budget).unwrap()
        };
        let p = take(10, 10_000);
        assert_eq!((p.rows.len(), p.more), (3, false));
        let p = take(2, 10_000);
        assert_eq!((p.rows.len(), p.more), (2, true));
        let p = take(10, 250);
        assert_eq!((p.rows.len(), p.more), (2, true));
        let p = take(10, 10);
        assert_eq!((p.rows.len(), p.more), (1, true));
    }
}
