//! The artifacts of a Build over HTTP, read as its logs are (on `htmlport` and,
//! read-only like every GET of the API, on `publichtmlport`):
//!
//! * `GET /api/v1/builders/B/builds/N/artifacts`: the list as JSON (path,
//!   size, sha256, created_at, url);
//! * `GET /api/v1/builders/B/builds/N/artifacts/PATH`: the file, streamed from
//!   disk in fixed-size chunks, with `Content-Length`, `ETag` (its SHA-256),
//!   single `Range` requests (206, or 416 when unsatisfiable), and always as a
//!   download: `Content-Type: application/octet-stream`,
//!   `Content-Disposition: attachment`, `nosniff` — never rendered as a page
//!   of this origin;
//! * `GET /api/v1/builders/B/builds/latest-successful/artifacts/PATH`: a stable
//!   URL, redirected (302) to that file of the builder's newest successful
//!   Build that has it.
//!
//! Files are opened beneath the artifacts directory without following links
//! ([`crate::engine::artifacts::ArtifactStore`]); a path the database does not
//! list is a 404 whatever the disk holds.

use std::io::SeekFrom;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use warp::filters::BoxedFilter;
use warp::http::header::{self, HeaderValue};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{api, json_error, with, WebContext};
use crate::engine::artifacts::{check_rel, ArtifactStore};
use crate::links::{seg, unseg};

/// Bytes per chunk when streaming an artifact.
const CHUNK: usize = 64 * 1024;

/// The API path of a Build's artifact, each component one encoded segment.
pub fn artifact_url(builder: &str, number: i64, path: &str) -> String {
    let p: Vec<String> = path.split('/').map(seg).collect();
    format!(
        "/api/v1/builders/{}/builds/{number}/artifacts/{}",
        seg(builder),
        p.join("/")
    )
}

/// The artifact routes, `.or()`-ed into the web server's routes.
pub fn routes(ctx: WebContext) -> BoxedFilter<(Response,)> {
    let list = api()
        .and(warp::path!(
            "builders" / String / "builds" / i64 / "artifacts"
        ))
        .and(warp::get())
        .and(with(ctx.clone()))
        .then(get_list)
        .boxed();
    let latest = api()
        .and(warp::path("builders"))
        .and(warp::path::param::<String>())
        .and(warp::path("builds"))
        .and(warp::path("latest-successful"))
        .and(warp::path("artifacts"))
        .and(warp::path::tail())
        .and(warp::get())
        .and(with(ctx.clone()))
        .then(get_latest)
        .boxed();
    let file = api()
        .and(warp::path("builders"))
        .and(warp::path::param::<String>())
        .and(warp::path("builds"))
        .and(warp::path::param::<i64>())
        .and(warp::path("artifacts"))
        .and(warp::path::tail())
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(with(ctx))
        .then(get_file)
        .boxed();
    list.or(latest).unify().or(file).unify().boxed()
}

#[derive(serde::Serialize)]
struct ArtifactJson {
    path: String,
    size: u64,
    sha256: String,
    created_at: f64,
    url: String,
}

async fn get_list(builder: String, number: i64, ctx: WebContext) -> Response {
    let builder = unseg(&builder);
    match ctx.db.build(&builder, number).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return json_error(
                StatusCode::NOT_FOUND,
                &format!("{builder} has no build {number}"),
            )
        }
        Err(e) => return db_error(e),
    }
    match ctx.db.artifacts(&builder, number).await {
        Ok(rows) => {
            let list: Vec<ArtifactJson> = rows
                .into_iter()
                .map(|a| ArtifactJson {
                    url: artifact_url(&builder, number, &a.path),
                    path: a.path,
                    size: a.size,
                    sha256: a.sha256,
                    created_at: a.created_at,
                })
                .collect();
            warp::reply::json(&list).into_response()
        }
        Err(e) => db_error(e),
    }
}

fn db_error(e: impl std::fmt::Display) -> Response {
    tracing::error!("artifacts: {e}");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "database error")
}

/// The decoded, checked artifact path of a request's tail.
#[allow(clippy::result_large_err)] // the error is the response to send
fn tail_path(tail: &warp::path::Tail) -> Result<String, Response> {
    let path = tail
        .as_str()
        .split('/')
        .map(unseg)
        .collect::<Vec<_>>()
        .join("/");
    check_rel(&path)
        .map(|_| path.clone())
        .map_err(|e| json_error(StatusCode::BAD_REQUEST, &e.to_string()))
}

async fn get_latest(builder: String, tail: warp::path::Tail, ctx: WebContext) -> Response {
    let builder = unseg(&builder);
    let path = match tail_path(&tail) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match ctx.db.latest_successful_with(&builder, &path).await {
        Ok(Some(n)) => {
            let mut r = warp::reply::with_status("", StatusCode::FOUND).into_response();
            if let Ok(v) = HeaderValue::from_str(&artifact_url(&builder, n, &path)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            &format!("{builder} has no successful build with an artifact {path:?}"),
        ),
        Err(e) => db_error(e),
    }
}

/// A `Range: bytes=…` header against a file of `size` bytes: `Ok(None)` to
/// send it all (no header, several ranges, or a unit other than bytes),
/// `Ok(Some((start, end)))` inclusive, `Err(())` when unsatisfiable.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.trim().split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().map_err(|_| ());
    let (start, end) = if a.is_empty() {
        let n = num(b)?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start = num(a)?;
        let end = if b.is_empty() { u64::MAX } else { num(b)? };
        if end < start {
            return Err(());
        }
        (start, end.min(size.saturating_sub(1)))
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `attachment; filename="…"` with an ASCII fallback and the UTF-8 name.
fn disposition(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        seg(name)
    )
}

async fn get_file(
    builder: String,
    number: i64,
    tail: warp::path::Tail,
    headers: header::HeaderMap,
    ctx: WebContext,
) -> Response {
    let builder = unseg(&builder);
    let path = match tail_path(&tail) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let row = match ctx.db.artifact(&builder, number, &path).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return json_error(
                StatusCode::NOT_FOUND,
                &format!("{builder} build {number} has no artifact {path:?}"),
            )
        }
        Err(e) => return db_error(e),
    };
    let etag = format!("\"{}\"", row.sha256);
    let store = ArtifactStore::new(&ctx.db.data_dir());
    let (b, p) = (builder.clone(), path.clone());
    let opened = tokio::task::spawn_blocking(move || store.open(&b, number, &p)).await;
    let file = match opened {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            tracing::error!("artifact {builder}/{number}/{path}: {e}");
            return json_error(StatusCode::GONE, "the artifact's file is gone");
        }
        Err(e) => return db_error(e),
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(row.size);
    let mut resp_headers = header::HeaderMap::new();
    let set = |h: &mut header::HeaderMap, k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(&mut resp_headers, header::ETAG, &etag);
    set(&mut resp_headers, header::ACCEPT_RANGES, "bytes");
    set(
        &mut resp_headers,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    set(
        &mut resp_headers,
        header::CONTENT_DISPOSITION,
        &disposition(&path),
    );
    set(&mut resp_headers, header::CACHE_CONTROL, "no-cache");
    resp_headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if not_modified {
        let mut r = warp::reply::with_status("", StatusCode::NOT_MODIFIED).into_response();
        r.headers_mut().extend(resp_headers);
        r.headers_mut().remove(header::CONTENT_TYPE);
        return r;
    }
    // A Range applies only while the client's copy is this one (If-Range).
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if if_range_ok => parse_range(v, size),
        _ => Ok(None),
    };
    let (status, start, len) = match range {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((s, e))) => {
            set(
                &mut resp_headers,
                header::CONTENT_RANGE,
                &format!("bytes {s}-{e}/{size}"),
            );
            (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
        }
        Err(()) => {
            let mut r = json_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &format!("the range is outside the artifact's {size} bytes"),
            );
            set(
                r.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            return r;
        }
    };
    let mut f = tokio::fs::File::from_std(file);
    if start > 0 {
        if let Err(e) = f.seek(SeekFrom::Start(start)).await {
            return db_error(e);
        }
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), CHUNK);
    let mut r = warp::reply::stream(stream).into_response();
    *r.status_mut() = status;
    r.headers_mut().extend(resp_headers);
    r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-1", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=x-1", 100), Err(()));
    }

    #[test]
    fn urls_and_names_are_encoded() {
        assert_eq!(
            artifact_url("a b", 3, "d/x?.bin"),
            "/api/v1/builders/a%20b/builds/3/artifacts/d/x%3F.bin"
        );
        assert_eq!(
            disposition("d/é\".bin"),
            "attachment; filename=\"__.bin\"; filename*=UTF-8''%C3%A9%22.bin"
        );
    }
}
