//! Fuzz targets of the ways a Change comes in from outside: the forges' push
//! payloads (GitHub, GitLab, Gitea) and their signatures, RFC 3339 times, the
//! Change JSON of `sendchange` and `POST /api/v1/changes`, the master's reply
//! `sendchange` reads, `.autobot/options` and `--master HOST:PORT`; and, against a
//! real master over HTTP and WebSocket, every door at once (`/change_hook/*`,
//! `POST /api/v1/changes`, `/change_hook/poller`, the slaveport's `/change`), each
//! request answered without a server error and the pages that show Changes still
//! served afterwards.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use autobot::app::{Master, MasterOptions};
use autobot::changes::submit::{ChangeSubmission, SubmitReply};
use autobot::cli::sendchange::{parse_options, split_host_port};
use autobot::web::change_hook::{
    json_read_size, parse_event, parse_rfc3339, verify, Forge, HookEvent,
};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Ws;

use super::gen::{edge_i64, mutate, mutation, weird_string};
use super::harness::{
    fuzz, fuzz_with, mark, panic_count, panics_since, peak_since, MemoryBound, Report, Target,
};

/// Any JSON value, nested up to `depth`.
pub fn json_value(depth: u32) -> BoxedStrategy<Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        edge_i64().prop_map(Json::from),
        Just(Json::from(u64::MAX)),
        (-1e300f64..1e300).prop_map(Json::from),
        weird_string().prop_map(Json::from),
    ];
    leaf.prop_recursive(depth, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Json::Array),
            vec((weird_string(), inner), 0..5)
                .prop_map(|kv| Json::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A field's value: plausible most of the time, else any JSON, or absent (`None`).
fn field(plausible: BoxedStrategy<Json>) -> BoxedStrategy<Option<Json>> {
    prop_oneof![
        8 => plausible.prop_map(Some),
        1 => json_value(2).prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

/// [`field`] that is plausible nineteen times in twenty.
fn mostly(plausible: BoxedStrategy<Json>) -> BoxedStrategy<Option<Json>> {
    prop_oneof![
        38 => plausible.prop_map(Some),
        1 => json_value(2).prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

/// The first of `pool` mostly, another of it sometimes, a weird string rarely.
fn valid_first(pool: &[&'static str]) -> BoxedStrategy<Json> {
    let first = pool[0];
    prop_oneof![
        6 => Just(Json::from(first)),
        3 => prop::sample::select(pool.to_vec()).prop_map(Json::from),
        1 => weird_string().prop_map(Json::from),
    ]
    .boxed()
}

fn text_pool(pool: &[&'static str]) -> BoxedStrategy<Json> {
    prop_oneof![
        4 => prop::sample::select(pool.to_vec()).prop_map(Json::from),
        1 => weird_string().prop_map(Json::from),
    ]
    .boxed()
}

fn object(fields: Vec<(&'static str, Option<Json>)>) -> Json {
    Json::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect(),
    )
}

pub fn timestamp() -> BoxedStrategy<Json> {
    text_pool(&[
        "2015-05-05T19:40:15-04:00",
        "2024-02-29T12:00:00.123Z",
        "1970-01-01T00:00:00Z",
        "9999-12-31T23:59:59+14:00",
        "0000-00-00T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-01-01T99:99:99+99:99",
        "2024-01-01 00:00:00z",
        "2024-01-01T00:00:00.99999999999999999999Z",
        "2024-01-01T00:00:00+0100",
        "2024-01-01T00:00:00é",
        "-2024-01-01T00:00:00Z",
        "2024-1-1T0:0:0Z",
    ])
}

fn files() -> BoxedStrategy<Json> {
    prop_oneof![
        4 => vec(text_pool(&["a.c", "dir/b.h", "../x", "", "README"]), 0..5).prop_map(Json::Array),
        1 => Just(Json::Null),
    ]
    .boxed()
}

/// A list of file names (never null).
fn file_list() -> BoxedStrategy<Json> {
    vec(text_pool(&["a.c", "dir/b.h", "../x", "", "README"]), 0..5)
        .prop_map(Json::Array)
        .boxed()
}

fn commit() -> BoxedStrategy<Json> {
    (
        field(text_pool(&[
            "a1b2c3",
            "--output=x",
            "",
            "0123456789abcdef0123456789abcdef01234567",
        ])),
        field(text_pool(&["fix", "", "line\nline"])),
        field(timestamp()),
        field(text_pool(&["https://h/o/r/commit/a1"])),
        field(
            (
                field(text_pool(&["Ann", ""])),
                field(text_pool(&["ann@x", ""])),
            )
                .prop_map(|(n, e)| object(vec![("name", n), ("email", e)]))
                .boxed(),
        ),
        (field(files()), field(files()), field(files())),
    )
        .prop_map(|(id, msg, ts, url, author, (a, m, r))| {
            object(vec![
                ("id", id),
                ("message", msg),
                ("timestamp", ts),
                ("url", url),
                ("author", author),
                ("added", a),
                ("modified", m),
                ("removed", r),
            ])
        })
        .boxed()
}

fn repo_urls() -> BoxedStrategy<Json> {
    text_pool(&[
        "https://forge.example/o/r.git",
        "/nonexistent/fuzz.git",
        "git@forge.example:o/r.git",
        "",
    ])
}

/// A push payload of `forge`, near valid.
pub fn push_payload(forge: Forge) -> BoxedStrategy<Json> {
    let repository = (
        field(text_pool(&["o/r", ""])),
        field(repo_urls()),
        field(repo_urls()),
        field(repo_urls()),
        field(text_pool(&["r"])),
    )
        .prop_map(|(full, clone, ssh, html, name)| {
            object(vec![
                ("full_name", full),
                ("clone_url", clone),
                ("ssh_url", ssh),
                ("html_url", html),
                ("git_http_url", None),
                ("name", name),
            ])
        })
        .boxed();
    let project = (
        field(text_pool(&["g/p"])),
        field(repo_urls()),
        field(repo_urls()),
    )
        .prop_map(|(path, http, web)| {
            object(vec![
                ("path_with_namespace", path),
                ("git_http_url", http),
                ("web_url", web),
            ])
        })
        .boxed();
    (
        field(text_pool(&[
            "refs/heads/main",
            "refs/heads/dev",
            "refs/tags/v1",
            "refs/heads/",
            "main",
        ])),
        field(repository),
        field(project),
        field(prop_oneof![vec(commit(), 0..4).prop_map(Json::Array), json_value(1)].boxed()),
        field(text_pool(&["push", "tag_push", "issue"])),
    )
        .prop_map(move |(r, repo, proj, commits, kind)| {
            let gitlab = forge == Forge::GitLab;
            object(vec![
                ("ref", r),
                ("repository", repo),
                ("project", if gitlab { proj } else { None }),
                ("commits", commits),
                ("object_kind", if gitlab { kind } else { None }),
            ])
        })
        .boxed()
}

/// Deeply nested JSON (arrays, objects, both) of up to 100 000 levels.
pub fn deep_json() -> BoxedStrategy<Vec<u8>> {
    (1usize..100_000, 0u8..3)
        .prop_map(|(n, kind)| {
            let (open, close): (&str, &str) = match kind {
                0 => ("[", "]"),
                1 => ("{\"commits\":", "}"),
                _ => ("[{\"a\":", "}]"),
            };
            let mut s = open.repeat(n);
            s.push('1');
            s.push_str(&close.repeat(n));
            s.into_bytes()
        })
        .boxed()
}

/// A push whose many small commits (`{}`) each become a Change.
pub fn wide_push() -> BoxedStrategy<Vec<u8>> {
    (
        1000usize..60_000,
        prop::sample::select(vec!["{}", "{\"id\":\"a\"}", "1", "[]"]),
    )
        .prop_map(|(n, elem)| {
            let mut s = String::from("{\"ref\":\"refs/heads/side\",\"commits\":[");
            for i in 0..n {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(elem);
            }
            s.push_str("]}");
            s.into_bytes()
        })
        .boxed()
}

/// A body for a forge: its push payload (maybe byte-mutated), deep JSON, or bytes.
pub fn hook_body(forge: Forge) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => wide_push(),
        8 => push_payload(forge).prop_map(|v| v.to_string().into_bytes()),
        2 => (push_payload(forge), vec(mutation(), 1..4))
            .prop_map(|(v, m)| mutate(v.to_string().into_bytes(), &m)),
        1 => deep_json(),
        1 => vec(any::<u8>(), 0..200),
    ]
    .boxed()
}

fn forge() -> impl Strategy<Value = Forge> {
    prop::sample::select(vec![Forge::GitHub, Forge::GitLab, Forge::Gitea])
}

fn event(forge: Forge) -> BoxedStrategy<Option<String>> {
    let pool: Vec<&'static str> = match forge {
        Forge::GitLab => vec!["Push Hook", "Tag Push Hook", "", " Push Hook "],
        _ => vec!["push", "ping", "issues", "", " push"],
    };
    prop::option::weighted(
        0.9,
        prop_oneof![
            4 => prop::sample::select(pool).prop_map(str::to_string),
            1 => weird_string(),
        ],
    )
    .boxed()
}

/// HMAC-SHA256 of `body` under `secret`, as hex.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&k, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `parse_event` and `verify` on the three forges' payloads and headers: no
/// panic; what parses as a push has one Change per commit; a signature made with
/// the secret verifies and one made with another does not.
pub fn webhooks(cases: u64) -> Report {
    let target = Target {
        name: "intake_webhook_payloads",
        limit: Duration::from_secs(10),
        memory: MemoryBound {
            base: 2 << 20,
            per_input_byte: 64,
        },
    };
    let input = forge().prop_flat_map(|f| {
        (
            Just(f),
            event(f),
            hook_body(f),
            weird_string(),
            any::<bool>(),
        )
    });
    fuzz(
        &target,
        cases,
        input,
        |(_, _, b, _, _)| b.len(),
        |(forge, ev, body, header, good)| {
            // The size estimate the hooks check bodies with is an upper bound.
            let base = mark();
            let read = serde_json::from_slice::<Json>(body);
            let used = peak_since(base);
            drop(read);
            let estimate = json_read_size(body);
            if used > estimate + (64 << 10) {
                return Err(format!(
                    "reading took {used} bytes, more than the estimate {estimate}"
                ));
            }
            let parsed = parse_event(*forge, ev.as_deref(), body);
            if let Ok(HookEvent::Push(p)) = &parsed {
                let commits = serde_json::from_slice::<Json>(body)
                    .ok()
                    .and_then(|v| v.get("commits").and_then(Json::as_array).map(Vec::len))
                    .unwrap_or(0);
                if p.changes.len() != commits {
                    return Err(format!(
                        "{} commits became {} changes",
                        commits,
                        p.changes.len()
                    ));
                }
            }
            let secret = "s3cret";
            let mut headers = warp::http::HeaderMap::new();
            let tag = if *good {
                sign(secret, body)
            } else {
                header.clone()
            };
            let (name, value) = match forge {
                Forge::GitHub => ("x-hub-signature-256", format!("sha256={tag}")),
                Forge::Gitea => ("x-gitea-signature", tag),
                Forge::GitLab => (
                    "x-gitlab-token",
                    if *good {
                        secret.to_string()
                    } else {
                        header.clone()
                    },
                ),
            };
            if let Ok(v) = value.parse() {
                headers.insert(name, v);
                let r = verify(*forge, secret, &headers, body);
                if *good && r.is_err() {
                    return Err(format!("a good signature was refused: {r:?}"));
                }
                if !*good && r.is_ok() && value != secret {
                    return Err(format!("a made-up signature {value:?} was accepted"));
                }
            }
            Ok(())
        },
    )
}

/// RFC 3339 times: no panic; what parses lies within the years 0 to 9999.
pub fn rfc3339(cases: u64) -> Report {
    let target = Target {
        name: "intake_rfc3339",
        limit: Duration::from_secs(5),
        memory: MemoryBound {
            base: 64 << 10,
            per_input_byte: 16,
        },
    };
    let input = prop_oneof![
        timestamp().prop_map(|v| v.as_str().unwrap_or("").to_string()),
        (timestamp(), vec(mutation(), 1..4)).prop_map(|(v, m)| {
            String::from_utf8_lossy(&mutate(v.as_str().unwrap_or("").as_bytes().to_vec(), &m))
                .into_owned()
        }),
        weird_string(),
    ];
    fuzz(
        &target,
        cases,
        input,
        String::len,
        |s| match parse_rfc3339(s) {
            Some(t) if !(-62_200_000_000..=253_500_000_000).contains(&t) => {
                Err(format!("{s:?} parsed to {t}, outside years 0-9999"))
            }
            _ => Ok(()),
        },
    )
}

/// A Change as a client sends it, near valid.
pub fn change_json() -> BoxedStrategy<Json> {
    (
        mostly(valid_first(&["ann", " ann ", "", "Ann <a@x>"])),
        mostly(file_list()),
        mostly(valid_first(&["fix", ""])),
        mostly(valid_first(&["r1", "", " ", "--output=x"])),
        mostly(valid_first(&["main", "", "-b"])),
        mostly(
            prop_oneof![
                18 => edge_i64().prop_map(Json::from),
                1 => Just(Json::from(u64::MAX)),
                1 => Just(json!(1.5)),
            ]
            .boxed(),
        ),
        (
            mostly(valid_first(&["https://h/r.git"])),
            mostly(valid_first(&["c"])),
            mostly(valid_first(&["p"])),
            mostly(file_list()),
        ),
        prop::option::weighted(0.03, (weird_string(), json_value(1))),
    )
        .prop_map(
            |(who, files, comments, rev, branch, when, (repo, cat, proj, links), extra)| {
                let mut v = object(vec![
                    ("who", who),
                    ("files", files),
                    ("comments", comments),
                    ("revision", rev),
                    ("branch", branch),
                    ("when", when),
                    ("repository", repo),
                    ("category", cat),
                    ("project", proj),
                    ("links", links),
                ]);
                if let (Json::Object(m), Some((k, x))) = (&mut v, extra) {
                    m.insert(k, x);
                }
                v
            },
        )
        .boxed()
}

/// A body for `/change` or `POST /api/v1/changes`: a Change, a list of them,
/// byte-mutated, deep, or random.
pub fn change_body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => change_json().prop_map(|v| v.to_string().into_bytes()),
        2 => vec(change_json(), 0..4).prop_map(|v| Json::Array(v).to_string().into_bytes()),
        2 => (change_json(), vec(mutation(), 1..4)).prop_map(|(v, m)| mutate(v.to_string().into_bytes(), &m)),
        1 => deep_json(),
        1 => vec(any::<u8>(), 0..100),
    ]
    .boxed()
}

/// The Change JSON as both doors read it: no panic; what is taken has an author,
/// no empty revision or branch, and serializes back to what was read; and the
/// master's reply `sendchange` reads.
pub fn changes(cases: u64) -> Report {
    let target = Target {
        name: "intake_change_json",
        limit: Duration::from_secs(10),
        memory: MemoryBound {
            base: 1 << 20,
            per_input_byte: 64,
        },
    };
    fuzz(
        &target,
        cases,
        (change_body(), any::<bool>()),
        |(b, _)| b.len(),
        |(body, as_reply)| {
            if *as_reply {
                // What sendchange reads back from the master.
                let reply = match serde_json::from_slice::<Json>(body) {
                    Ok(v) => json!({ "change": v }).to_string(),
                    Err(_) => String::from_utf8_lossy(body).into_owned(),
                };
                let _ = serde_json::from_str::<SubmitReply>(&reply);
                return Ok(());
            }
            let subs: Vec<ChangeSubmission> = match serde_json::from_slice::<ChangeSubmission>(body)
            {
                Ok(s) => vec![s],
                Err(_) => serde_json::from_slice(body).unwrap_or_default(),
            };
            for s in subs {
                let text = serde_json::to_string(&s).map_err(|e| e.to_string())?;
                let back: ChangeSubmission =
                    serde_json::from_str(&text).map_err(|e| e.to_string())?;
                if back != s {
                    return Err(format!("{s:?} does not round-trip"));
                }
                if let Ok(c) = s.into_change(1_700_000_000) {
                    if c.who.is_empty() || c.who != c.who.trim() {
                        return Err(format!("accepted author {:?}", c.who));
                    }
                    if c.revision.as_deref().is_some_and(|r| r.trim().is_empty())
                        || c.branch.as_deref().is_some_and(|b| b.trim().is_empty())
                    {
                        return Err(format!("accepted an empty revision or branch: {c:?}"));
                    }
                }
            }
            Ok(())
        },
    )
}

/// `.autobot/options` files and `--master HOST:PORT`: no panic; keys come out
/// lower-case; an address that splits joins back to one that splits the same.
pub fn sendchange_options(cases: u64) -> Report {
    let target = Target {
        name: "intake_sendchange_options",
        limit: Duration::from_secs(5),
        memory: MemoryBound {
            base: 256 << 10,
            per_input_byte: 32,
        },
    };
    let line = prop_oneof![
        prop::sample::select(vec![
            "master = 'localhost:9989'",
            "username=\"Ann <a@x>\"  # me",
            "master = h:1 # x",
            "master = '",
            "master = \"a'b\"",
            "# only",
            "=",
            "MASTER = x",
            "master=é",
        ])
        .prop_map(str::to_string),
        weird_string(),
    ];
    let addr = prop_oneof![
        prop::sample::select(vec![
            "localhost:9010",
            "[::1]:9010",
            "::1:9010",
            "[::1]",
            "h:",
            ":9010",
            "h:65536",
            "h:-1",
            "[]:1",
            "[[h]]:1",
            " h:1 ",
            "h:+1",
            "é:1",
        ])
        .prop_map(str::to_string),
        weird_string(),
    ];
    let input = (vec(line, 0..6).prop_map(|l| l.join("\n")), addr);
    fuzz(
        &target,
        cases,
        input,
        |(t, a)| t.len() + a.len(),
        |(text, addr)| {
            for k in parse_options(text).keys() {
                if *k != k.to_ascii_lowercase() {
                    return Err(format!("key {k:?} kept its case"));
                }
            }
            if let Ok((host, port)) = split_host_port(addr) {
                let joined = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                match split_host_port(&joined) {
                    Ok(back) if back == (host.clone(), port) => {}
                    other => {
                        return Err(format!(
                            "{addr:?} -> ({host:?}, {port}) -> {joined:?} -> {other:?}"
                        ))
                    }
                }
            }
            Ok(())
        },
    )
}

// ---------------------------------------------------------------- a real master

/// One request to one of the master's doors.
#[derive(Debug, Clone)]
pub enum Door {
    /// `POST /change_hook/FORGE`, signed with the right secret unless `forged`.
    Hook {
        forge: Forge,
        event: Option<String>,
        body: Vec<u8>,
        forged: bool,
    },
    /// `POST /api/v1/changes` with the change credentials unless `anonymous`.
    Api {
        body: Vec<u8>,
        content_type: Option<String>,
        anonymous: bool,
    },
    /// `/change_hook/poller?repo=…`.
    Poller { post: bool, repo: String },
    /// One message on the slaveport's `/change` WebSocket.
    Sendchange { body: Vec<u8>, text: bool },
}

pub fn door() -> BoxedStrategy<Door> {
    prop_oneof![
        4 => forge()
            .prop_flat_map(|f| (Just(f), event(f), hook_body(f), prop::bool::weighted(0.1)))
            .prop_map(|(forge, event, body, forged)| Door::Hook { forge, event, body, forged }),
        3 => (
            change_body(),
            prop::option::of(prop::sample::select(vec!["application/json", "text/plain", "x"]).prop_map(str::to_string)),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(body, content_type, anonymous)| Door::Api { body, content_type, anonymous }),
        1 => (any::<bool>(), prop_oneof![
            prop::sample::select(vec!["/nonexistent/fuzz.git", "https://forge.example/o/r", "", "%ZZ", "a b"]).prop_map(str::to_string),
            weird_string(),
        ])
            .prop_map(|(post, repo)| Door::Poller { post, repo }),
        3 => (change_body(), prop::bool::weighted(0.8)).prop_map(|(body, text)| Door::Sendchange { body, text }),
    ]
    .boxed()
}

struct IntakeRig {
    rt: Runtime,
    _dir: tempfile::TempDir,
    master: Option<Master>,
    change_ws: Option<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
    cases: u64,
    /// How each door answered: "door status" → count (printed with the report).
    answers: std::collections::BTreeMap<String, u64>,
}

const THREADS: &str = "fuzz-intake-rig";

/// An HTTP/1.1 request on a fresh connection: the status (0 if the connection
/// ended without a response).
async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(body).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    Ok(text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl IntakeRig {
    fn start() -> IntakeRig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(THREADS)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a temp dir");
        crate::support::write_master_ini(
            dir.path(),
            "[:master:]\nslaveport = 9010\nhtmlport = 8010\npollInterval = 3600\nchangeuser = change\nchangepassword = changepw\n\
             github_secret = gh-secret\ngitlab_secret = gl-secret\ngitea_secret = gt-secret\n\n\
             [fz]\ntype = source\ngit = /nonexistent/fuzz.git#main\n\n[slave:s]\npassword = pw\n",
        );
        let master = rt
            .block_on(Master::start_with(
                dir.path(),
                MasterOptions {
                    keepalive_interval: Some(Duration::from_secs(600)),
                    slaveport: Some(0),
                    htmlport: Some(0),
                    publichtmlport: None,
                },
            ))
            .expect("the master starts");
        IntakeRig {
            rt,
            _dir: dir,
            master: Some(master),
            change_ws: None,
            cases: 0,
            answers: Default::default(),
        }
    }

    fn ports(&self) -> (u16, u16) {
        let m = self.master.as_ref().expect("the master runs");
        (m.htmlport(), m.slaveport())
    }

    fn case(&mut self, d: &Door) -> Result<(), String> {
        let (html, slave) = self.ports();
        let basic = |user: &str, pw: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
            )
        };
        self.cases += 1;
        let (door, status) = match d {
            Door::Hook {
                forge,
                event,
                body,
                forged,
            } => {
                let (path, secret, ev_name) = match forge {
                    Forge::GitHub => ("github", "gh-secret", "X-GitHub-Event"),
                    Forge::GitLab => ("gitlab", "gl-secret", "X-Gitlab-Event"),
                    Forge::Gitea => ("gitea", "gt-secret", "X-Gitea-Event"),
                };
                let secret = if *forged { "not-it" } else { secret };
                let mut h = vec![("Content-Type".to_string(), "application/json".to_string())];
                match forge {
                    Forge::GitHub => h.push((
                        "X-Hub-Signature-256".into(),
                        format!("sha256={}", sign(secret, body)),
                    )),
                    Forge::Gitea => h.push(("X-Gitea-Signature".into(), sign(secret, body))),
                    Forge::GitLab => h.push(("X-Gitlab-Token".into(), secret.into())),
                }
                if let Some(e) = event
                    .as_deref()
                    .filter(|e| e.bytes().all(|b| (0x20..0x7f).contains(&b)))
                {
                    h.push((ev_name.into(), e.to_string()));
                }
                let st = self.rt.block_on(http(
                    html,
                    "POST",
                    &format!("/change_hook/{path}"),
                    &h,
                    body,
                ))?;
                if *forged && st != 403 {
                    return Err(format!("a forged {path} hook was answered {st}"));
                }
                (path, st)
            }
            Door::Api {
                body,
                content_type,
                anonymous,
            } => {
                let mut h = Vec::new();
                if let Some(ct) = content_type {
                    h.push(("Content-Type".to_string(), ct.clone()));
                }
                if !anonymous {
                    h.push(("Authorization".to_string(), basic("change", "changepw")));
                }
                let st = self
                    .rt
                    .block_on(http(html, "POST", "/api/v1/changes", &h, body))?;
                if *anonymous && ![401, 403, 415].contains(&st) {
                    return Err(format!(
                        "an anonymous POST /api/v1/changes was answered {st}"
                    ));
                }
                ("api", st)
            }
            Door::Poller { post, repo } => {
                let path = format!("/change_hook/poller?repo={}", percent_encode(repo));
                let method = if *post { "POST" } else { "GET" };
                (
                    "poller",
                    self.rt.block_on(http(html, method, &path, &[], b""))?,
                )
            }
            Door::Sendchange { body, text } => return self.sendchange(slave, body, *text),
        };
        *self.answers.entry(format!("{door} {status}")).or_default() += 1;
        if status == 0 || status >= 500 {
            return Err(format!("answered {status}"));
        }
        // Every so often: the pages showing what was stored still work.
        if self.cases.is_multiple_of(50) {
            self.pages()?;
        }
        Ok(())
    }

    fn pages(&mut self) -> Result<(), String> {
        let (html, _) = self.ports();
        for path in [
            "/api/v1/changes",
            "/changes",
            "/",
            "/api/v1/changes?limit=5",
        ] {
            let st = self.rt.block_on(http(html, "GET", path, &[], b""))?;
            if st != 200 {
                return Err(format!(
                    "GET {path} answered {st} after the Changes stored so far"
                ));
            }
        }
        Ok(())
    }

    fn sendchange(&mut self, port: u16, body: &[u8], text: bool) -> Result<(), String> {
        self.sendchange_reply(port, body, text).map(|_| ())
    }

    fn sendchange_reply(
        &mut self,
        port: u16,
        body: &[u8],
        text: bool,
    ) -> Result<SubmitReply, String> {
        let rt = &self.rt;
        if self.change_ws.is_none() {
            let ws = rt.block_on(async {
                let mut req = format!("ws://127.0.0.1:{port}/change")
                    .into_client_request()
                    .map_err(|e| e.to_string())?;
                let auth = base64::engine::general_purpose::STANDARD.encode("change:changepw");
                req.headers_mut().insert(
                    "authorization",
                    format!("Basic {auth}").parse().map_err(|_| "header")?,
                );
                tokio_tungstenite::connect_async(req)
                    .await
                    .map(|(ws, _)| ws)
                    .map_err(|e| e.to_string())
            })?;
            self.change_ws = Some(ws);
        }
        let ws = self.change_ws.as_mut().ok_or("no /change socket")?;
        let msg = match (text, std::str::from_utf8(body)) {
            (true, Ok(t)) => Ws::text(t.to_string()),
            _ => Ws::binary(body.to_vec()),
        };
        let reply = rt.block_on(async {
            ws.send(msg).await.map_err(|e| format!("send: {e}"))?;
            loop {
                match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Err(_) => return Err("no reply within 30 s".to_string()),
                    Ok(Some(Ok(Ws::Text(t)))) => return Ok(t.to_string()),
                    Ok(Some(Ok(Ws::Binary(b)))) => {
                        return Ok(String::from_utf8_lossy(&b).into_owned())
                    }
                    Ok(Some(Ok(Ws::Close(_)))) | Ok(None) => {
                        return Err("closed without a reply".into())
                    }
                    Ok(Some(Ok(_))) => continue,
                    Ok(Some(Err(e))) => return Err(format!("read: {e}")),
                }
            }
        })?;
        let r = serde_json::from_str::<SubmitReply>(&reply)
            .map_err(|e| format!("reply {reply:?} is not a SubmitReply: {e}"))?;
        let kind = match r {
            SubmitReply::Change(_) => "sendchange stored",
            SubmitReply::Error(_) => "sendchange refused",
        };
        *self.answers.entry(kind.to_string()).or_default() += 1;
        Ok(r)
    }
}

impl Drop for IntakeRig {
    fn drop(&mut self) {
        if let Some(mut ws) = self.change_ws.take() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
            });
        }
        if let Some(m) = self.master.take() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(10), m.shutdown()).await;
            });
        }
    }
}

/// Every door of a real master at once: hooks (signed, and forged), the JSON API
/// (with and without credentials), the poller hook and the slaveport's `/change`.
pub fn doors(cases: u64) -> Report {
    let target = Target {
        name: "intake_master_doors",
        limit: Duration::from_secs(60),
        memory: MemoryBound {
            base: usize::MAX / 4,
            per_input_byte: 0,
        },
    };
    let rig: RefCell<Option<IntakeRig>> = RefCell::new(Some(IntakeRig::start()));
    let started = Instant::now();
    let report = fuzz_with(
        &target,
        cases,
        48,
        door(),
        |_| 0,
        |d| {
            let before = panic_count();
            let mut slot = rig.borrow_mut();
            let r = slot.get_or_insert_with(IntakeRig::start);
            let mut result = r.case(d);
            let panics = panics_since(before, THREADS);
            if !panics.is_empty() {
                result = Err(panics.join("; "));
            }
            if result.is_err() {
                *slot = None;
            }
            result
        },
    );
    if let Some(r) = rig.borrow_mut().as_mut() {
        println!("answers: {:?}", r.answers);
        if let Err(e) = r.pages() {
            panic!("after {} cases ({:?}): {e}", r.cases, started.elapsed());
        }
    }
    report
}

/// One `sendchange` message to a fresh master: its reply (a regression test).
pub fn sendchange_once(body: &[u8]) -> Result<SubmitReply, String> {
    let mut rig = IntakeRig::start();
    let (_, port) = rig.ports();
    rig.sendchange_reply(port, body, true)
}
