//! Helpers for the status-page tests (`tests/web_*.rs`): a real master with its
//! public (read-only) port open as well, a raw HTTP/1.1 client that sends any
//! method, headers and body and returns the headers too, and form/cookie helpers.
//!
//! Include after `support` and `engine_common`:
//! `#[path = "web_common/mod.rs"] mod web_common;`.

#![allow(dead_code)]

use std::time::Duration;

use autobot::app::{Master, MasterOptions};

use crate::engine_common::EngineMaster;
use crate::support;

/// Start a master from `ini` on free ports, public port included.
pub async fn start(ini: &str) -> EngineMaster {
    support::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    crate::support::write_master_ini(dir.path(), ini);
    let master = Master::start_with(
        dir.path(),
        MasterOptions {
            keepalive_interval: Some(Duration::from_secs(30)),
            slaveport: Some(0),
            htmlport: Some(0),
            publichtmlport: Some(0),
        },
    )
    .await
    .unwrap();
    EngineMaster { dir, master }
}

pub use crate::support::{http, HttpReply as Resp};

pub async fn get(port: u16, path: &str) -> Resp {
    http(port, "GET", path, &[], b"").await
}

/// The `autobot_csrf=…` pair a page's `Set-Cookie` gave.
pub fn csrf_cookie(r: &Resp) -> String {
    let v = r.header("set-cookie").expect("a Set-Cookie header");
    v.split(';').next().unwrap().trim().to_string()
}

/// The value of the first `<input … name="csrf" value="…">` of a page.
pub fn csrf_field(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a csrf field in the page");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A form body, URL-encoded.
pub fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// POST a form with a cookie (and extra headers).
pub async fn post_form(
    port: u16,
    path: &str,
    cookie: Option<&str>,
    extra: &[(&str, &str)],
    fields: &[(&str, &str)],
) -> Resp {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    headers.extend_from_slice(extra);
    http(port, "POST", path, &headers, &form(fields)).await
}

/// HTTP Basic `Authorization` value for `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// One request on 127.0.0.1:port that names `host` in its `Host` header (as a
/// browser does that reached the master by another name, or through a proxy).
pub async fn http_host(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(crate::engine_common::DEADLINE, s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// The status line and headers of a response that may never end (server-sent
/// events): read up to the blank line, then hang up.
pub async fn head_only(port: u16, path: &str) -> Resp {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + crate::engine_common::DEADLINE;
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(std::time::Instant::now() < deadline, "no headers in time");
        let n = tokio::time::timeout(crate::engine_common::DEADLINE, s.read(&mut buf))
            .await
            .expect("headers in time")
            .unwrap();
        assert!(n > 0, "closed before the headers ended");
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: String::new(),
    }
}
