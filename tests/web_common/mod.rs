//! Helpers for the status-page tests (`tests/web_*.rs`): a real master with its
//! public (read-only) port open as well, a raw HTTP/1.1 client that sends any
//! method, headers and body and returns the headers too, and form/cookie helpers.
//!
//! Include after `support` and `engine_common`:
//! `#[path = "web_common/mod.rs"] mod web_common;`.

#![allow(dead_code)]

use std::time::Duration;

use autobot::master::{Master, MasterOptions};

use crate::engine_common::EngineMaster;
use crate::support;

/// Start a master from `ini` on free ports, public port included.
pub async fn start(ini: &str) -> EngineMaster {
    support::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("master.ini"), ini).unwrap();
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
