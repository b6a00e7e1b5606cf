//! Changes from outside on htmlport: `POST /api/v1/changes` (what `sendchange`
//! sends, for scripts that speak HTTP), the forges' push webhooks
//! `POST /change_hook/{github,gitlab,gitea}`, and `POST /change_hook/poller?repo=URL`
//! to make the pollers of a repository poll now.
//!
//! Every door checks its credentials before it reads the payload: HTTP Basic with
//! `changeuser`/`changepassword` for the API and the poller hook; for the forge hooks
//! the forge's proof of the secret set in `[:master:]` (`github_secret`,
//! `gitea_secret`: HMAC-SHA256 of the body, verified in constant time by `ring`, the
//! header's presence checked before the body is read; `gitlab_secret`: the token,
//! compared in constant time before the body is read). A hook whose secret is not
//! set answers 404 and says which key to set; a missing or wrong signature is
//! answered 403, logged, and nothing is stored. Bodies are capped ([`MAX_API_BODY`],
//! [`MAX_HOOK_BODY`]) while they are read, with or without a `Content-Length`; a
//! larger one is answered 413 saying the cap.
//!
//! Every Change passes the rules of [`crate::changes::validate`] (a revision or
//! branch that could become a git option, any field over its cap: 400, nothing
//! stored). A forge's delivery is remembered by its delivery id and the SHA-256 of
//! its body ([`crate::changes::ChangeBus::add_delivery`]): the same delivery again
//! (a replay, a redelivery) is answered 200 with a note and stores nothing.
//!
//! A push to a (repository, branch) that a poller watches (see
//! [`crate::changes::poller_specs`]) is not turned into Changes here: the poller
//! is asked to poll now instead, so the same commit never becomes two Changes (one
//! from the hook, one from the poller). Pushes nobody polls (another branch, another
//! repository, or no poller running) become one Change per commit, stored with the
//! repository URL as configured (credentials removed) when a factory uses that
//! repository, so its schedulers take them, else with the payload's URL (which no
//! factory's scheduler takes). A payload that names no repository URL is refused:
//! a push is matched to factories by URL only, never by the repository's name.
//!
//! Pull and merge request events (GitHub and Gitea `pull_request`: opened,
//! synchronize(d), reopened; GitLab `Merge Request Hook`: open, reopen, update
//! with a new commit) become one Change of category [`PULL_CATEGORY`] with the
//! request's properties ([`Pull`]), stored as a push's are (same
//! authentication, same replay rule) under the repository URL as configured;
//! other actions (`closed`…) are answered 200 and ignored.
//!
//! Poll requests coalesce per repository (one poll in flight plus one queued,
//! whatever the number of requests; see [`crate::changes::bus`]), and the poller
//! hook takes POST only (GET and the rest: 405 with `Allow: POST`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{api, json_error, with, WebContext};
use crate::changes::bus::{AddError, Delivered};
use crate::changes::submit::{now, ChangeSubmission};
use crate::changes::PollRequest;
use crate::changes::{poller_specs, PollerSpec};
use crate::config::MasterConfig;
use crate::db::changes::{Delivery, NewChange};
use crate::slavelink::auth::{change_credentials, constant_time_eq};
use crate::sources::redact_url;

/// Largest body `POST /api/v1/changes` may carry.
pub const MAX_API_BODY: u64 = 4 << 20;
/// Largest webhook payload. A push's payload is a few KiB per commit; GitHub lists
/// at most 2048 commits in one.
pub const MAX_HOOK_BODY: u64 = 8 << 20;
/// Longest delivery id remembered (the forges send a UUID); a longer one is
/// ignored and the delivery is known by its body alone.
const MAX_DELIVERY_ID: usize = 256;

/// The most memory reading one JSON body may take (see [`json_read_size`]).
pub const MAX_JSON_READ: usize = 64 << 20;

/// An upper bound of the memory `serde_json` takes to read `body` as a `Value`,
/// found by one pass over its bytes without allocating: the bytes themselves
/// (strings), three value slots per element (a growing vector), and B-tree
/// nodes for objects. Small elements read into much larger values (`{"a":1}`
/// takes some 600 bytes), so a body is measured before it is read.
pub fn json_read_size(body: &[u8]) -> usize {
    // A vector grown by doubling ends at up to twice its length, and holds the
    // old and the new buffer at once while it grows: three slots an element.
    const SLOT: usize = 3 * std::mem::size_of::<Value>();
    const NODE: usize = 11 * (std::mem::size_of::<String>() + std::mem::size_of::<Value>()) + 96;
    let (mut in_str, mut escaped) = (false, false);
    let mut total = body.len();
    for &b in body {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        total = total.saturating_add(match b {
            b'"' => {
                in_str = true;
                SLOT + std::mem::size_of::<String>()
            }
            b'{' => SLOT + NODE,
            // An object's entry: B-tree nodes are at least half full.
            b':' => 2 * SLOT,
            b'[' | b',' => SLOT,
            _ => 0,
        });
    }
    total
}

/// Refuse a JSON body that would take more than [`MAX_JSON_READ`] to read.
fn check_json_size(body: &[u8]) -> Result<(), String> {
    let need = json_read_size(body);
    if need > MAX_JSON_READ {
        return Err(format!(
            "the JSON body would take {} MiB to read; at most {} MiB are allowed",
            need >> 20,
            MAX_JSON_READ >> 20
        ));
    }
    Ok(())
}

/// Most commits one push payload may carry: GitHub sends at most 2048, GitLab and
/// Gitea fewer. Each becomes a Change, so a signed payload of a million empty
/// commits would otherwise become a million Changes (and their memory).
const MAX_PUSH_COMMITS: usize = 4096;

/// The routes of this file, `.or()`-ed into [`super::routes`].
pub fn routes(ctx: WebContext) -> BoxedFilter<(Response,)> {
    let post_changes = api()
        .and(warp::path!("changes"))
        .and(warp::post())
        .and(warp::addr::remote())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with(ctx.clone()))
        .then(
            |peer: Option<SocketAddr>, headers: HeaderMap, body, ctx: WebContext| async move {
                post_changes(peer, headers, body, ctx).await
            },
        )
        .boxed();
    let forge =
        warp::path("change_hook")
            .and(warp::path::param::<String>())
            .and(warp::path::end())
            .and(warp::post())
            .and(warp::addr::remote())
            .and(warp::header::headers_cloned())
            .and(warp::body::stream())
            .and(with(ctx.clone()))
            .then(
                |name: String,
                 peer: Option<SocketAddr>,
                 headers: HeaderMap,
                 body,
                 ctx: WebContext| async move {
                    forge_hook(name, peer, headers, body, ctx).await
                },
            )
            .boxed();
    let poller = warp::path!("change_hook" / "poller")
        .and(warp::method())
        .and(warp::addr::remote())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::<HashMap<String, String>>())
        .and(with(ctx))
        .then(poller_hook)
        .boxed();
    // The poller hook first: the forge route would take `poller` as a forge name.
    poller.or(post_changes).unify().or(forge).unify().boxed()
}

fn json_reply(status: StatusCode, v: &Value) -> Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

/// Read a request body of at most `limit` bytes (whatever its `Content-Length`
/// says, and without one); a larger one is a 413 naming the cap, without reading
/// further.
async fn read_body<S, B>(
    headers: &HeaderMap,
    body: S,
    limit: u64,
    route: &str,
) -> Result<Bytes, Response>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = |len: Option<u64>| {
        let size = match len {
            Some(n) => format!("{n} bytes"),
            None => format!("more than {limit} bytes"),
        };
        tracing::warn!("{route}: refused a body of {size} (the cap is {limit})");
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the request body is {size}; {route} takes at most {limit} bytes ({} MiB)",
                limit >> 20
            ),
        )
    };
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        return Err(too_large(Some(n)));
    }
    let mut out = BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    futures_util::pin_mut!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
            )
        })?;
        if out.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(too_large(None));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

// ------------------------------------------------------------ POST /api/v1/changes

fn unauthorized(message: &str) -> Response {
    let mut r = json_error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Basic realm=\"autobot changes\""),
    );
    r
}

async fn post_changes<S, B>(
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    body: S,
    ctx: WebContext,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    let config = ctx.config.borrow().clone();
    let user = match change_credentials(&config, header(&headers, "authorization")) {
        Ok(u) => u,
        Err(why) => {
            tracing::warn!("POST /api/v1/changes from {peer} refused: {why}");
            return unauthorized(
                "send HTTP Basic credentials: changeuser and changepassword of [:master:]",
            );
        }
    };
    let body = match read_body(&headers, body, MAX_API_BODY, "POST /api/v1/changes").await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // One Change (answered with the stored row) or a list (answered with a list).
    if let Err(e) = check_json_size(&body) {
        return json_error(StatusCode::BAD_REQUEST, &e);
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("bad JSON body: {e}")),
    };
    let many = value.is_array();
    let subs: Vec<ChangeSubmission> = match if many {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|s| vec![s])
    } {
        Ok(s) => s,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("bad JSON body: {e}")),
    };
    let at = now();
    let mut changes = Vec::with_capacity(subs.len());
    for (i, s) in subs.into_iter().enumerate() {
        match s.into_change(at) {
            Ok(c) => changes.push(c),
            Err(e) => {
                let which = if many {
                    format!("change {i}: ")
                } else {
                    String::new()
                };
                tracing::warn!("POST /api/v1/changes by {user}@{peer}: refused: {which}{e}");
                return json_error(StatusCode::BAD_REQUEST, &format!("{which}{e}"));
            }
        }
    }
    match ctx.changes.add(changes).await {
        Ok(rows) => {
            tracing::info!("POST /api/v1/changes by {user}: {} change(s)", rows.len());
            let body = if many {
                serde_json::to_value(&rows)
            } else {
                serde_json::to_value(rows.first())
            };
            json_reply(StatusCode::CREATED, &body.unwrap_or(Value::Null))
        }
        Err(e @ AddError::Invalid { .. }) => json_error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(AddError::Db(e)) => {
            tracing::error!("POST /api/v1/changes: {e}");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "database error")
        }
    }
}

// ------------------------------------------------------------ /change_hook/poller

/// `a.git`, `a/` and `A` name the same repository as `a`.
fn same_repo(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> String {
        let s = s.trim().trim_end_matches('/');
        s.strip_suffix(".git").unwrap_or(s).to_ascii_lowercase()
    }
    norm(a) == norm(b)
}

/// The pollers (as [`poller_specs`] makes them from the configuration) of `repo`.
fn pollers_of(config: &MasterConfig, repo: &str) -> Vec<PollerSpec> {
    poller_specs(config)
        .into_iter()
        .filter(|p| same_repo(&p.url, repo) || same_repo(&redact_url(&p.url), repo))
        .collect()
}

/// Ask every poller in `pollers` to poll: `Queued` if any queued a poll,
/// `AlreadyQueued` if all had one queued, `NoPoller` if none runs.
fn request_polls(ctx: &WebContext, pollers: &[PollerSpec]) -> PollRequest {
    let mut answer = PollRequest::NoPoller;
    for p in pollers {
        answer = match (answer, ctx.changes.request_poll(&p.url)) {
            (PollRequest::Queued, _) | (_, PollRequest::Queued) => PollRequest::Queued,
            (PollRequest::AlreadyQueued, _) | (_, PollRequest::AlreadyQueued) => {
                PollRequest::AlreadyQueued
            }
            _ => PollRequest::NoPoller,
        };
    }
    answer
}

async fn poller_hook(
    method: Method,
    peer: Option<SocketAddr>,
    auth: Option<String>,
    q: HashMap<String, String>,
    ctx: WebContext,
) -> Response {
    if method != Method::POST {
        let mut r = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "/change_hook/poller takes POST only (it makes the master poll)",
        );
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("POST"));
        return r;
    }
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    let config = ctx.config.borrow().clone();
    let user = match change_credentials(&config, auth.as_deref()) {
        Ok(u) => u,
        Err(why) => {
            tracing::warn!("change_hook/poller: refused a request from {peer}: {why}");
            return unauthorized(
                "send HTTP Basic credentials: changeuser and changepassword of [:master:]",
            );
        }
    };
    let Some(repo) = q.get("repo").filter(|r| !r.trim().is_empty()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "say which repository: /change_hook/poller?repo=URL (the URL as a factory's git/hg key has it)",
        );
    };
    let pollers = pollers_of(&config, repo);
    let Some(first) = pollers.first() else {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!(
                "no factory polls {} (no factory's git/hg key names it)",
                redact_url(repo)
            ),
        );
    };
    let shown = redact_url(&first.url);
    let poll = match request_polls(&ctx, &pollers) {
        PollRequest::Queued => "queued",
        PollRequest::AlreadyQueued => "already queued",
        PollRequest::NoPoller => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "no poller of {shown} is running right now (the master is starting or \
                     reconfiguring); ask again in a moment"
                ),
            )
        }
    };
    tracing::info!("change_hook/poller: poll of {shown} {poll} (asked by {user}@{peer})");
    json_reply(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "repository": shown, "poll": poll }),
    )
}

// ------------------------------------------------------------ forge webhooks

/// The forges this file understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    Gitea,
}

impl Forge {
    fn from_path(name: &str) -> Option<Forge> {
        match name {
            "github" => Some(Forge::GitHub),
            "gitlab" => Some(Forge::GitLab),
            "gitea" => Some(Forge::Gitea),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "GitHub",
            Forge::GitLab => "GitLab",
            Forge::Gitea => "Gitea",
        }
    }

    fn secret_key(self) -> &'static str {
        match self {
            Forge::GitHub => "github_secret",
            Forge::GitLab => "gitlab_secret",
            Forge::Gitea => "gitea_secret",
        }
    }

    fn secret(self, config: &MasterConfig) -> &str {
        match self {
            Forge::GitHub => &config.github_secret,
            Forge::GitLab => &config.gitlab_secret,
            Forge::Gitea => &config.gitea_secret,
        }
    }
}

/// Why a hook request is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookAuthError {
    #[error("no {0} header (set the webhook's secret to the master's {1})")]
    Missing(&'static str, &'static str),
    #[error("the {0} header is not a hex HMAC-SHA256")]
    Malformed(&'static str),
    #[error("the {0} does not match {1}")]
    Mismatch(&'static str, &'static str),
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

/// Check that `body` was sent by someone holding `secret`, the way `forge` proves it.
pub fn verify(
    forge: Forge,
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), HookAuthError> {
    let key = forge.secret_key();
    let hmac = |name: &'static str, value: &str| {
        let tag = hex_decode(value).ok_or(HookAuthError::Malformed(name))?;
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        ring::hmac::verify(&k, body, &tag).map_err(|_| HookAuthError::Mismatch("signature", key))
    };
    match forge {
        Forge::GitHub => {
            let name = "X-Hub-Signature-256";
            let v = header(headers, name).ok_or(HookAuthError::Missing(name, key))?;
            let hex = v
                .strip_prefix("sha256=")
                .ok_or(HookAuthError::Malformed(name))?;
            hmac(name, hex)
        }
        Forge::Gitea => {
            let name = "X-Gitea-Signature";
            let v = header(headers, name).ok_or(HookAuthError::Missing(name, key))?;
            hmac(name, v)
        }
        Forge::GitLab => {
            let name = "X-Gitlab-Token";
            let v = header(headers, name).ok_or(HookAuthError::Missing(name, key))?;
            if constant_time_eq(v.as_bytes(), secret.as_bytes()) {
                Ok(())
            } else {
                Err(HookAuthError::Mismatch("token", key))
            }
        }
    }
}

/// The header carrying `forge`'s proof of the secret, if the request has it: checked
/// before the body is read, so a request without one costs no body. GitLab's token
/// needs no body and is checked in full here.
fn precheck(forge: Forge, secret: &str, headers: &HeaderMap) -> Result<(), HookAuthError> {
    let key = forge.secret_key();
    match forge {
        Forge::GitHub => header(headers, "X-Hub-Signature-256")
            .map(|_| ())
            .ok_or(HookAuthError::Missing("X-Hub-Signature-256", key)),
        Forge::Gitea => header(headers, "X-Gitea-Signature")
            .map(|_| ())
            .ok_or(HookAuthError::Missing("X-Gitea-Signature", key)),
        Forge::GitLab => verify(forge, secret, headers, b""),
    }
}

/// The forge's id of this delivery: the same when the forge delivers it again.
fn delivery_id(forge: Forge, headers: &HeaderMap) -> Option<String> {
    let names: &[&str] = match forge {
        Forge::GitHub => &["X-GitHub-Delivery"],
        Forge::Gitea => &["X-Gitea-Delivery", "X-Gogs-Delivery"],
        // Idempotency-Key stays the same across GitLab's retries (GitLab 17.4+).
        Forge::GitLab => &["Idempotency-Key", "X-Gitlab-Event-UUID"],
    };
    names
        .iter()
        .filter_map(|n| header(headers, n))
        .map(str::trim)
        .find(|v| !v.is_empty() && v.len() <= MAX_DELIVERY_ID)
        .map(str::to_string)
}

/// Hex SHA-256 of a body.
fn digest(body: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A push as the three forges describe it, reduced to what a Change needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// `refs/heads/NAME` → `NAME`; `None` for tags and other refs.
    pub branch: Option<String>,
    /// The ref as sent.
    pub git_ref: String,
    /// Every URL the payload gives for the repository, clone URL first.
    pub repo_urls: Vec<String>,
    /// `owner/name`.
    pub repo_name: String,
    /// One Change per commit, oldest first, without repository or project yet.
    pub changes: Vec<NewChange>,
}

/// A pull (merge) request's new head as the three forges describe it: one
/// Change of category [`PULL_CATEGORY`] and its properties.
#[derive(Debug, Clone, PartialEq)]
pub struct Pull {
    /// Every URL the payload gives for the target (base) repository.
    pub repo_urls: Vec<String>,
    /// `owner/name` of the target repository.
    pub repo_name: String,
    /// The Change: revision the head sha, branch the target branch, category
    /// `pull`, without repository or project yet.
    pub change: NewChange,
    /// `pr_number`, `pr_title`, `pr_url`, `pr_head_repo`, `pr_head_ref`,
    /// `pr_base_branch`, `pr_forge`, and `pr_from_fork = true` for a request
    /// from another repository.
    pub properties: BTreeMap<String, String>,
}

/// The category of a pull request's Change.
pub const PULL_CATEGORY: &str = "pull";

/// What a hook request asks for, by the forge's event header.
#[derive(Debug, Clone, PartialEq)]
pub enum HookEvent {
    Ping,
    Push(Push),
    /// A pull/merge request opened, reopened or given a new head.
    Pull(Pull),
    /// Another event (issues, tags…): answered 200 and ignored.
    Other(String),
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str().map(str::to_string).filter(|s| !s.is_empty())
}

/// Parse a forge's payload (already authenticated) for `event` (the value of the
/// forge's event header, if any).
pub fn parse_event(forge: Forge, event: Option<&str>, body: &[u8]) -> Result<HookEvent, String> {
    let event = event.unwrap_or("").trim();
    let is_pull = match forge {
        Forge::GitHub | Forge::Gitea => event == "pull_request",
        Forge::GitLab => event == "Merge Request Hook",
    };
    if is_pull {
        check_json_size(body)?;
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            format!(
                "the payload is not JSON ({e}); set the webhook's content type to application/json"
            )
        })?;
        return parse_pull(forge, &v);
    }
    let is_push = match forge {
        Forge::GitHub | Forge::Gitea => match event {
            "ping" => return Ok(HookEvent::Ping),
            "push" => true,
            "" => false,
            other => return Ok(HookEvent::Other(other.to_string())),
        },
        Forge::GitLab => match event {
            "Push Hook" => true,
            "" => false,
            other => return Ok(HookEvent::Other(other.to_string())),
        },
    };
    check_json_size(body)?;
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!("the payload is not JSON ({e}); set the webhook's content type to application/json")
    })?;
    if !is_push {
        // No event header: trust the payload's own kind (GitLab has object_kind).
        match text(&v, &["object_kind"]) {
            Some(k) if k == "push" => {}
            Some(k) => return Ok(HookEvent::Other(k)),
            None if v.get("commits").is_some() && v.get("ref").is_some() => {}
            None => return Ok(HookEvent::Other("(no event header)".into())),
        }
    }
    let git_ref = text(&v, &["ref"]).ok_or("a push payload without `ref`")?;
    let branch = git_ref.strip_prefix("refs/heads/").map(str::to_string);
    let (url_paths, name_path): (&[&[&str]], &[&str]) = match forge {
        Forge::GitHub => (
            &[
                &["repository", "clone_url"],
                &["repository", "ssh_url"],
                &["repository", "git_url"],
                &["repository", "html_url"],
                &["repository", "url"],
            ],
            &["repository", "full_name"],
        ),
        Forge::Gitea => (
            &[
                &["repository", "clone_url"],
                &["repository", "ssh_url"],
                &["repository", "html_url"],
            ],
            &["repository", "full_name"],
        ),
        Forge::GitLab => (
            &[
                &["project", "git_http_url"],
                &["project", "git_ssh_url"],
                &["project", "web_url"],
                &["repository", "git_http_url"],
                &["repository", "git_ssh_url"],
                &["repository", "homepage"],
                &["repository", "url"],
            ],
            &["project", "path_with_namespace"],
        ),
    };
    let mut repo_urls: Vec<String> = Vec::new();
    for p in url_paths {
        if let Some(u) = text(&v, p) {
            if !repo_urls.contains(&u) {
                repo_urls.push(u);
            }
        }
    }
    let repo_name = text(&v, name_path)
        .or_else(|| text(&v, &["repository", "name"]))
        .unwrap_or_default();
    let at = now();
    let commits = v
        .get("commits")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if commits.len() > MAX_PUSH_COMMITS {
        return Err(format!(
            "a push of {} commits; at most {MAX_PUSH_COMMITS} are taken (the forges send at most 2048)",
            commits.len()
        ));
    }
    let mut changes = Vec::with_capacity(commits.len());
    for c in commits {
        let name = text(c, &["author", "name"]).unwrap_or_default();
        let who = match text(c, &["author", "email"]) {
            Some(email) if name.is_empty() => email,
            Some(email) => format!("{name} <{email}>"),
            None => name,
        };
        // In the payload's order, each once (a set: a push may list many files).
        let mut files: Vec<String> = Vec::new();
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for k in ["added", "modified", "removed"] {
            for f in c.get(k).and_then(Value::as_array).into_iter().flatten() {
                if let Some(f) = f.as_str() {
                    if seen.insert(f) {
                        files.push(f.to_string());
                    }
                }
            }
        }
        changes.push(NewChange {
            who: if who.is_empty() {
                "unknown".into()
            } else {
                who
            },
            files,
            comments: text(c, &["message"]).unwrap_or_default(),
            revision: text(c, &["id"]),
            branch: branch.clone(),
            when: text(c, &["timestamp"])
                .and_then(|t| parse_rfc3339(&t))
                .unwrap_or(at),
            repository: String::new(),
            category: String::new(),
            links: text(c, &["url"]).into_iter().collect(),
            project: String::new(),
        });
    }
    Ok(HookEvent::Push(Push {
        branch,
        git_ref,
        repo_urls,
        repo_name,
        changes,
    }))
}

/// A pull request's text for a property: control characters made spaces,
/// leading `-` and blanks dropped (a property value never reads as an option),
/// cut to at most `max` bytes on a character boundary.
fn pr_text(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim().trim_start_matches(['-', ' ']);
    let mut end = clean.len().min(max);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].to_string()
}

fn number(v: &Value, path: &[&str]) -> Option<u64> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_u64()
}

/// A pull/merge request event (already authenticated, `v` its payload): the
/// Change of its new head, or `Other` for the actions that bring none
/// (`closed`, `edited`, `labeled`, GitLab's `update` without a new commit…).
fn parse_pull(forge: Forge, v: &Value) -> Result<HookEvent, String> {
    use crate::changes::validate::{MAX_BRANCH, MAX_LINK, MAX_REPOSITORY, MAX_WHO};
    let (action, builds) = match forge {
        Forge::GitHub | Forge::Gitea => {
            let a = text(v, &["action"]).unwrap_or_default();
            let b = matches!(
                a.as_str(),
                "opened" | "synchronize" | "synchronized" | "reopened"
            );
            (a, b)
        }
        Forge::GitLab => {
            let a = text(v, &["object_attributes", "action"]).unwrap_or_default();
            // `update` is also a new title or label; only one with `oldrev` (the
            // previous head) brings a new commit.
            let new_commit = v
                .get("object_attributes")
                .and_then(|o| o.get("oldrev"))
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            let b = matches!(a.as_str(), "open" | "reopen") || (a == "update" && new_commit);
            (a, b)
        }
    };
    if !builds {
        let what = if action.is_empty() {
            "(no action)".to_string()
        } else {
            pr_text(&action, 64)
        };
        return Ok(HookEvent::Other(format!("pull request {what}")));
    }
    let (pr_number, title, url, author, head_sha, head_ref, base_ref, head_repo, fork);
    let (url_paths, name_path): (Vec<Vec<&str>>, Vec<&str>);
    match forge {
        Forge::GitHub | Forge::Gitea => {
            let pr = v
                .get("pull_request")
                .ok_or("a pull_request event without `pull_request`")?;
            pr_number = number(pr, &["number"])
                .or_else(|| number(v, &["number"]))
                .ok_or("a pull_request event without a number")?;
            title = text(pr, &["title"]).unwrap_or_default();
            url = text(pr, &["html_url"]).unwrap_or_default();
            author = text(pr, &["user", "login"])
                .or_else(|| text(v, &["sender", "login"]))
                .unwrap_or_default();
            head_sha = text(pr, &["head", "sha"]).ok_or("a pull request without head.sha")?;
            head_ref = text(pr, &["head", "ref"]).unwrap_or_default();
            base_ref = text(pr, &["base", "ref"]).ok_or("a pull request without base.ref")?;
            let base_name = text(pr, &["base", "repo", "full_name"])
                .or_else(|| text(v, &["repository", "full_name"]));
            let head_name = text(pr, &["head", "repo", "full_name"]);
            head_repo = text(pr, &["head", "repo", "clone_url"])
                .or_else(|| head_name.clone())
                .unwrap_or_default();
            // A head repository the forge no longer knows (a deleted fork) is
            // another one too.
            fork = head_name.is_none() || head_name != base_name;
            url_paths = vec![
                vec!["repository", "clone_url"],
                vec!["repository", "ssh_url"],
                vec!["repository", "html_url"],
                vec!["pull_request", "base", "repo", "clone_url"],
            ];
            name_path = vec!["repository", "full_name"];
        }
        Forge::GitLab => {
            let o = v
                .get("object_attributes")
                .ok_or("a Merge Request Hook without `object_attributes`")?;
            pr_number = number(o, &["iid"]).ok_or("a merge request without `iid`")?;
            title = text(o, &["title"]).unwrap_or_default();
            url = text(o, &["url"]).unwrap_or_default();
            author = text(v, &["user", "username"])
                .or_else(|| text(v, &["user", "name"]))
                .unwrap_or_default();
            head_sha =
                text(o, &["last_commit", "id"]).ok_or("a merge request without last_commit.id")?;
            head_ref = text(o, &["source_branch"]).unwrap_or_default();
            base_ref =
                text(o, &["target_branch"]).ok_or("a merge request without target_branch")?;
            head_repo = text(o, &["source", "git_http_url"])
                .or_else(|| text(o, &["source", "path_with_namespace"]))
                .unwrap_or_default();
            let (src, dst) = (
                number(o, &["source_project_id"]),
                number(o, &["target_project_id"]),
            );
            fork = match (src, dst) {
                (Some(a), Some(b)) => a != b,
                _ => {
                    text(o, &["source", "path_with_namespace"])
                        != text(o, &["target", "path_with_namespace"])
                }
            };
            url_paths = vec![
                vec!["project", "git_http_url"],
                vec!["project", "git_ssh_url"],
                vec!["project", "web_url"],
                vec!["object_attributes", "target", "git_http_url"],
                vec!["repository", "url"],
            ];
            name_path = vec!["project", "path_with_namespace"];
        }
    }
    let mut repo_urls: Vec<String> = Vec::new();
    for p in &url_paths {
        if let Some(u) = text(v, p) {
            if !repo_urls.contains(&u) {
                repo_urls.push(u);
            }
        }
    }
    let repo_name = text(v, &name_path).unwrap_or_default();
    let mut properties = BTreeMap::new();
    let mut put = |k: &str, val: String| {
        if !val.is_empty() {
            properties.insert(k.to_string(), val);
        }
    };
    put("pr_number", pr_number.to_string());
    put("pr_title", pr_text(&title, 4096));
    // A link only when it is one: http(s), one line.
    let url = pr_text(&url, MAX_LINK);
    let url_ok = url.starts_with("https://") || url.starts_with("http://");
    if url_ok {
        put("pr_url", url.clone());
    }
    put(
        "pr_head_repo",
        pr_text(&crate::sources::redact_url(&head_repo), MAX_REPOSITORY),
    );
    put("pr_head_ref", pr_text(&head_ref, MAX_BRANCH));
    put("pr_base_branch", pr_text(&base_ref, MAX_BRANCH));
    put(
        "pr_forge",
        match forge {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::GitLab => "gitlab",
        }
        .to_string(),
    );
    if fork {
        put(crate::engine::UNTRUSTED_PROPERTY, "true".to_string());
    }
    let who = pr_text(&author, MAX_WHO);
    let change = NewChange {
        who: if who.is_empty() {
            "unknown".into()
        } else {
            who
        },
        files: Vec::new(),
        comments: format!("pull request #{pr_number}: {}", pr_text(&title, 4096)),
        revision: Some(head_sha),
        branch: Some(base_ref),
        when: now(),
        repository: String::new(),
        category: PULL_CATEGORY.to_string(),
        links: if url_ok { vec![url] } else { Vec::new() },
        project: String::new(),
    };
    Ok(HookEvent::Pull(Pull {
        repo_urls,
        repo_name,
        change,
        properties,
    }))
}

/// Unix seconds of an RFC 3339 time (`2024-05-05T19:40:15-04:00`, `…Z`,
/// fractional seconds allowed), as the forges send a commit's date. `jiff`
/// checks the calendar (no 31 February, no hour 25); a time without an offset
/// is refused, since the instant it names is unknown.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

async fn forge_hook<S, B>(
    name: String,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    body: S,
    ctx: WebContext,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let Some(forge) = Forge::from_path(&name) else {
        return json_error(
            StatusCode::NOT_FOUND,
            "no such change hook (there are github, gitlab, gitea and poller)",
        );
    };
    let config = ctx.config.borrow().clone();
    let secret = forge.secret(&config);
    if secret.is_empty() {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!(
                "the {} hook is off: set {} in [:master:] of master.ini to the webhook's secret",
                forge.name(),
                forge.secret_key()
            ),
        );
    }
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    let refused = |e: HookAuthError| {
        tracing::warn!("change_hook/{name}: refused a request from {peer}: {e}");
        json_error(StatusCode::FORBIDDEN, &e.to_string())
    };
    if let Err(e) = precheck(forge, secret, &headers) {
        return refused(e);
    }
    let route = format!("/change_hook/{name}");
    let body = match read_body(&headers, body, MAX_HOOK_BODY, &route).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = verify(forge, secret, &headers, &body) {
        return refused(e);
    }
    let event_header = match forge {
        Forge::GitHub => "x-github-event",
        Forge::GitLab => "x-gitlab-event",
        Forge::Gitea => "x-gitea-event",
    };
    let push = match parse_event(forge, header(&headers, event_header), &body) {
        Ok(HookEvent::Ping) => {
            return json_reply(StatusCode::OK, &serde_json::json!({"ok": "pong"}))
        }
        Ok(HookEvent::Other(e)) => {
            tracing::debug!("change_hook/{name}: ignored event {e}");
            return json_reply(StatusCode::OK, &serde_json::json!({ "ignored": e }));
        }
        Ok(HookEvent::Push(p)) => p,
        Ok(HookEvent::Pull(p)) => {
            let delivery = Delivery {
                forge: name.clone(),
                id: delivery_id(forge, &headers),
                digest: digest(&body),
            };
            return deliver_pull(&ctx, &config, &name, &peer, delivery, p).await;
        }
        Err(e) => {
            tracing::warn!("change_hook/{name}: refused a payload from {peer}: {e}");
            return json_error(StatusCode::BAD_REQUEST, &e);
        }
    };
    let delivery = Delivery {
        forge: name.clone(),
        id: delivery_id(forge, &headers),
        digest: digest(&body),
    };
    deliver(&ctx, &config, &name, &peer, delivery, push).await
}

/// The answer to a delivery seen before: 200, nothing stored.
fn repeat(hook: &str, delivery: &Delivery, received_at: f64, by_id: bool) -> Response {
    let what = match (&delivery.id, by_id) {
        (Some(id), true) => format!("delivery {id:?} was already received"),
        _ => "the same payload was already received".to_string(),
    };
    let when = crate::calendar::ymd_hms(received_at as i64);
    tracing::info!("change_hook/{hook}: {what} at {when}; ignored");
    json_reply(
        StatusCode::OK,
        &serde_json::json!({
            "ignored": format!("{what} (at {when} UTC); nothing was stored")
        }),
    )
}

/// Poll or store what a push brought; see the module paragraph.
async fn deliver(
    ctx: &WebContext,
    config: &MasterConfig,
    hook: &str,
    peer: &str,
    delivery: Delivery,
    push: Push,
) -> Response {
    let Some(branch) = push.branch.clone() else {
        return json_reply(
            StatusCode::OK,
            &serde_json::json!({ "ignored": format!("{} is not a branch", push.git_ref) }),
        );
    };
    if push.repo_urls.is_empty() {
        let why = format!(
            "the payload names no repository URL (clone_url, ssh_url, html_url, git_http_url…); \
             autobot matches a push to factories by URL only, never by the repository's \
             name ({:?})",
            push.repo_name
        );
        tracing::warn!("change_hook/{hook}: refused a push from {peer}: {why}");
        return json_error(StatusCode::BAD_REQUEST, &why);
    }
    let pollers: Vec<PollerSpec> = push
        .repo_urls
        .iter()
        .flat_map(|u| pollers_of(config, u))
        .collect();
    let polled: Vec<PollerSpec> = pollers
        .iter()
        .filter(|p| p.branches.contains(&branch))
        .cloned()
        .collect();
    if let Some(p) = polled.first() {
        let shown = redact_url(&p.url);
        if ctx.changes.has_poller(&p.url) {
            // Remember the delivery (with no Changes), then poll.
            match ctx.changes.add_delivery(delivery.clone(), Vec::new()).await {
                Ok(Delivered::Repeat { received_at, by_id }) => {
                    return repeat(hook, &delivery, received_at, by_id)
                }
                Ok(Delivered::Stored(_)) => {}
                Err(e) => {
                    tracing::error!("change_hook/{hook}: {e}");
                    return json_error(StatusCode::INTERNAL_SERVER_ERROR, "database error");
                }
            }
            let poll = match request_polls(ctx, &polled) {
                PollRequest::AlreadyQueued => "already queued",
                _ => "queued",
            };
            tracing::info!("change_hook/{hook}: push to {shown} {branch}: poll {poll}");
            return json_reply(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "polled": shown, "branch": branch, "poll": poll }),
            );
        }
        tracing::info!(
            "change_hook/{hook}: no poller of {shown} is running; storing the push's commits"
        );
    }
    // As the poller would record them: the configured URL (without credentials) and
    // the first factory using it, so the schedulers of those factories take them.
    let (repository, project) = match pollers.first() {
        Some(p) => (redact_url(&p.url), p.project.clone()),
        None => (
            push.repo_urls.first().cloned().unwrap_or_default(),
            push.repo_name.clone(),
        ),
    };
    let total = push.changes.len();
    let changes: Vec<NewChange> = push
        .changes
        .into_iter()
        .map(|c| NewChange {
            repository: repository.clone(),
            project: project.clone(),
            ..c
        })
        .collect();
    match ctx.changes.add_delivery(delivery.clone(), changes).await {
        Ok(Delivered::Stored(rows)) => {
            tracing::info!(
                "change_hook/{hook}: {} change(s) on {repository} {branch}",
                rows.len()
            );
            json_reply(StatusCode::OK, &serde_json::json!({ "changes": rows }))
        }
        Ok(Delivered::Repeat { received_at, by_id }) => repeat(hook, &delivery, received_at, by_id),
        Err(AddError::Invalid { index, error, .. }) => {
            let why = format!("commit {} of {total} in the push: {error}", index + 1);
            tracing::warn!("change_hook/{hook}: refused a push from {peer}: {why}");
            json_error(StatusCode::BAD_REQUEST, &why)
        }
        Err(AddError::Db(e)) => {
            tracing::error!("change_hook/{hook}: {e}");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "database error")
        }
    }
}

/// Store a pull request's Change with its properties, under the repository URL
/// as configured (as a push's Changes are), so the schedulers of the factories
/// that build pull requests of that repository take it.
async fn deliver_pull(
    ctx: &WebContext,
    config: &MasterConfig,
    hook: &str,
    peer: &str,
    delivery: Delivery,
    pull: Pull,
) -> Response {
    if pull.repo_urls.is_empty() {
        let why = format!(
            "the payload names no repository URL (clone_url, html_url, git_http_url…);              autobot matches a pull request to factories by URL only, never by the              repository's name ({:?})",
            pull.repo_name
        );
        tracing::warn!("change_hook/{hook}: refused a pull request from {peer}: {why}");
        return json_error(StatusCode::BAD_REQUEST, &why);
    }
    let pollers: Vec<PollerSpec> = pull
        .repo_urls
        .iter()
        .flat_map(|u| pollers_of(config, u))
        .collect();
    let (repository, project) = match pollers.first() {
        Some(p) => (redact_url(&p.url), p.project.clone()),
        None => (
            pull.repo_urls.first().cloned().unwrap_or_default(),
            pull.repo_name.clone(),
        ),
    };
    let change = NewChange {
        repository: repository.clone(),
        project,
        ..pull.change
    };
    let number = pull
        .properties
        .get("pr_number")
        .cloned()
        .unwrap_or_default();
    match ctx
        .changes
        .add_delivery_with_properties(delivery.clone(), change, pull.properties)
        .await
    {
        Ok(Delivered::Stored(rows)) => {
            tracing::info!("change_hook/{hook}: pull request #{number} on {repository}");
            json_reply(StatusCode::OK, &serde_json::json!({ "changes": rows }))
        }
        Ok(Delivered::Repeat { received_at, by_id }) => repeat(hook, &delivery, received_at, by_id),
        Err(e @ AddError::Invalid { .. }) => {
            let why = format!("pull request #{number}: {e}");
            tracing::warn!("change_hook/{hook}: refused a pull request from {peer}: {why}");
            json_error(StatusCode::BAD_REQUEST, &why)
        }
        Err(AddError::Db(e)) => {
            tracing::error!("change_hook/{hook}: {e}");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "database error")
        }
    }
}

#[cfg(test)]
#[path = "change_hook_tests.rs"]
mod tests;
