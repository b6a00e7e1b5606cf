//! The Force Build and Stop Build forms of the status pages, what protects them
//! (CSRF tokens, `[users]` logins) and the POSTs they send.
//!
//! Force and stop are POST forms protected by a CSRF token: an HMAC, under a key
//! drawn at start-up, of a random nonce kept in an `HttpOnly`, `SameSite=Strict`
//! cookie, and of the user the page was made for. The cookie is
//! `__Host-autobot_csrf` (`Secure`, `Path=/`, no `Domain`: no other host or
//! plain-http page can plant one) wherever browsers keep `Secure` cookies — HTTPS
//! (a TLS proxy's `X-Forwarded-Proto: https`) and `localhost`/`127.0.0.0/8`/`[::1]`,
//! which browsers treat as secure. Over plain HTTP to any other name browsers drop
//! `Secure` cookies, so there the cookie is `autobot_csrf` without `Secure` (the
//! `Origin` check and `SameSite=Strict` still stop other sites; plain HTTP gives a
//! network attacker everything anyway). When `[users]` lists users, the POSTs also
//! need HTTP Basic credentials of one of them (checked in constant time), the
//! forms are shown only to a logged-in user (`/login` asks the browser for them)
//! and the token is bound to that user. Pages with a token are `private` and vary
//! by `Cookie` and `Authorization`. The public port shows no forms and takes no
//! POSTs.

use std::collections::HashMap;

use bytes::Bytes;
use maud::{html, Markup};
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::html::{build_url, seg, unseg};
use super::pages::{db_error, error_page, PageState, Pc};
use crate::db::builds::BuildRow;
use crate::engine::ForceRequest;

/// The CSRF cookie where browsers keep `Secure` cookies (see [`secure_context`]).
const CSRF_COOKIE_HOST: &str = "__Host-autobot_csrf";
/// The CSRF cookie over plain HTTP to a name that is not the local host.
const CSRF_COOKIE_PLAIN: &str = "autobot_csrf";
/// Who logged in at `/login` in this browser (signed; see [`login_cookie`]).
const LOGIN_COOKIE_HOST: &str = "__Host-autobot_user";
const LOGIN_COOKIE_PLAIN: &str = "autobot_user";
/// The realm of the Basic challenge of `/login`, the POSTs and the JSON API's
/// force and stop: one realm, so the browser sends what it was given for
/// `/login` with the forms too.
pub(crate) const REALM: &str = "Basic realm=\"autobot\", charset=\"UTF-8\"";

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// The value of the CSRF cookie the request carries (a page's ETag differs by it).
pub(crate) fn csrf_cookie(h: &HeaderMap) -> Option<String> {
    cookie(h, csrf_cookie_name(h))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn random_nonce() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).ok()?;
    Some(hex(&b))
}

fn valid_nonce(n: &str) -> bool {
    n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The form token of a browser's nonce for `user` (empty when nobody logs in).
fn csrf_token(st: &PageState, nonce: &str, user: &str) -> String {
    let mut msg = Vec::with_capacity(nonce.len() + user.len() + 8);
    msg.extend_from_slice(b"csrf\0");
    msg.extend_from_slice(nonce.as_bytes());
    msg.push(0);
    msg.extend_from_slice(user.as_bytes());
    hex(ring::hmac::sign(&st.csrf_key, &msg).as_ref())
}

/// Whether browsers keep `Secure` cookies for this request's origin: HTTPS (as a
/// TLS proxy in front says with `X-Forwarded-Proto`), or a loopback name, which
/// browsers count as a secure context over plain HTTP too (Chromium and Firefox
/// do; checked with the headless Chromium of `tests/web_browser.rs`).
fn secure_context(h: &HeaderMap) -> bool {
    let https = h
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    https
        || h.get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_loopback_host)
}

/// `localhost`, `*.localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let name = if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next() == Some("::1");
    } else {
        host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h)
    };
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The name of the CSRF cookie for this request (see [`secure_context`]).
fn csrf_cookie_name(h: &HeaderMap) -> &'static str {
    if secure_context(h) {
        CSRF_COOKIE_HOST
    } else {
        CSRF_COOKIE_PLAIN
    }
}

/// The browser's CSRF nonce, or a new one with the `Set-Cookie` that gives it.
fn csrf_nonce(h: &HeaderMap) -> (String, Option<String>) {
    let name = csrf_cookie_name(h);
    if let Some(n) = cookie(h, name).filter(|n| valid_nonce(n)) {
        return (n, None);
    }
    let n = random_nonce().unwrap_or_default();
    let secure = if name == CSRF_COOKIE_HOST {
        " Secure;"
    } else {
        ""
    };
    let set = format!("{name}={n}; Path=/;{secure} HttpOnly; SameSite=Strict; Max-Age=31536000");
    (n, Some(set))
}

/// `r` with the `Set-Cookie` of [`Forms::set_cookie`], if any.
pub(crate) fn set_cookie(mut r: Response, set: Option<String>) -> Response {
    if let Some(v) = set.and_then(|s| HeaderValue::from_str(&s).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Whether a POST carries the token that belongs to its cookie and its user.
fn csrf_ok(st: &PageState, h: &HeaderMap, form: &HashMap<String, String>, user: &str) -> bool {
    let Some(nonce) = cookie(h, csrf_cookie_name(h)).filter(|n| valid_nonce(n)) else {
        return false;
    };
    let Some(sent) = form.get("csrf") else {
        return false;
    };
    crate::slavelink::auth::constant_time_eq(
        sent.as_bytes(),
        csrf_token(st, &nonce, user).as_bytes(),
    )
}

/// The `[users]` user a page is made for (`None` without `[users]`): the one
/// whose right credentials the request carries, else the one the browser's
/// login cookie names. The cookie only says whom the page's token is bound to;
/// the POST itself still needs that user's credentials.
pub(crate) fn page_user(pc: &Pc, h: &HeaderMap) -> Option<String> {
    let config = pc.ctx.config.borrow().clone();
    if config.users.is_empty() {
        return None;
    }
    let auth = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(user) = auth.and_then(|a| {
        crate::slavelink::auth::web_user(&config, Some(a))
            .ok()
            .flatten()
    }) {
        return Some(user);
    }
    let name = login_cookie_user(&pc.st, h)?;
    config.users.contains_key(&name).then_some(name)
}

/// The value of the login cookie for `user`: the name (hex) and an HMAC of it
/// under the page key, so no one can name another user in it.
fn login_cookie(st: &PageState, user: &str) -> String {
    let mut msg = b"user\0".to_vec();
    msg.extend_from_slice(user.as_bytes());
    format!(
        "{}.{}",
        hex(user.as_bytes()),
        hex(ring::hmac::sign(&st.csrf_key, &msg).as_ref())
    )
}

/// The user a request's login cookie names, when its signature is right.
fn login_cookie_user(st: &PageState, h: &HeaderMap) -> Option<String> {
    let name = if secure_context(h) {
        LOGIN_COOKIE_HOST
    } else {
        LOGIN_COOKIE_PLAIN
    };
    let value = cookie(h, name)?;
    let (hexname, _) = value.split_once('.')?;
    if hexname.len() % 2 != 0 || !hexname.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..hexname.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hexname[i..i + 2], 16).ok())
        .collect();
    let user = String::from_utf8(bytes).ok()?;
    crate::slavelink::auth::constant_time_eq(value.as_bytes(), login_cookie(st, &user).as_bytes())
        .then_some(user)
}

/// Whether `[users]` lists anyone: then forcing and stopping need a login.
fn login_required(pc: &Pc) -> bool {
    !pc.ctx.config.borrow().users.is_empty()
}

/// The user a POST acts as: `Ok(None)` when `[users]` is empty (anyone may),
/// `Ok(Some(name))` for good credentials, `Err` (401) otherwise.
#[allow(clippy::result_large_err)] // the error is the page to send
fn check_user(pc: &Pc, h: &HeaderMap) -> Result<Option<String>, Response> {
    let config = pc.ctx.config.borrow().clone();
    let auth = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match crate::slavelink::auth::web_user(&config, auth) {
        Ok(user) => Ok(user),
        Err(why) => {
            tracing::warn!("web login refused: {why}");
            Err(login_page(pc))
        }
    }
}

/// 401 with the Basic challenge: the browser asks for a name and password.
fn login_page(pc: &Pc) -> Response {
    let mut r = error_page(
        pc,
        StatusCode::UNAUTHORIZED,
        "Log in to do that",
        "forcing and stopping builds needs the name and password of a user in [users]",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
    r
}

/// `GET /login?next=PATH`: 401 until the browser sends the credentials of a
/// `[users]` user, then back to `next` (a path on this master) with a signed
/// cookie that names the user, so the pages show the forms with a token bound to
/// them. The browser keeps the credentials for the realm and sends them again
/// when a POST is answered 401 (some send them with every page at once).
pub(crate) async fn login(q: HashMap<String, String>, h: HeaderMap, pc: Pc) -> Response {
    let next = q
        .get("next")
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains(['\\', '\r', '\n']))
        .cloned()
        .unwrap_or_else(|| "/waterfall".to_string());
    let config = pc.ctx.config.borrow().clone();
    let auth = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let user = match crate::slavelink::auth::web_user(&config, auth) {
        Ok(u) => u,
        Err(why) => {
            if auth.is_some() {
                tracing::warn!("web login refused: {why}");
            }
            return login_page(&pc);
        }
    };
    let mut r = redirect(&next);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(user) = user {
        // The browser remembers who logged in, so the pages make their forms
        // (and tokens) for that user even when it sends no credentials with them.
        let (name, secure) = if secure_context(&h) {
            (LOGIN_COOKIE_HOST, " Secure;")
        } else {
            (LOGIN_COOKIE_PLAIN, "")
        };
        let set = format!(
            "{name}={}; Path=/;{secure} HttpOnly; SameSite=Strict",
            login_cookie(&pc.st, &user)
        );
        if let Ok(v) = HeaderValue::from_str(&set) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// Mark a page that carries a token (or depends on who is logged in) as the
/// browser's alone: `Cache-Control: private` and `Vary: Cookie, Authorization`.
pub(crate) fn personal(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Cookie, Authorization"),
    );
    r
}

/// The forms of a page: the token they carry (`None`: show no forms), the cookie
/// to set, and what to say instead of the forms or above them.
#[derive(Default)]
pub(crate) struct Forms {
    pub(crate) token: Option<String>,
    pub(crate) set_cookie: Option<String>,
    pub(crate) note: Markup,
}

/// Whether this port shows forms at all (not the public port, and `allowForce`).
pub(crate) fn forms_allowed(pc: &Pc) -> bool {
    !pc.st.public && pc.ctx.config.borrow().allow_force
}

/// What a page at `here` shows of the force and stop forms.
pub(crate) fn forms_for(pc: &Pc, h: &HeaderMap, here: &str) -> Forms {
    if !forms_allowed(pc) {
        return Forms::default();
    }
    let user = page_user(pc, h);
    if login_required(pc) && user.is_none() {
        return Forms {
            note: html! {
                p.login {
                    a href={ "/login?next=" (seg(here)) } { "Log in" }
                    " to force or stop builds."
                }
            },
            ..Forms::default()
        };
    }
    let (nonce, set) = csrf_nonce(h);
    Forms {
        token: Some(csrf_token(&pc.st, &nonce, user.as_deref().unwrap_or(""))),
        set_cookie: set,
        note: html! {
            @if let Some(u) = &user {
                p.login { "Logged in as " b { (u) } "." }
            }
        },
    }
}

/// The Stop Build form of a running build.
pub(crate) fn stop_form(b: &BuildRow, token: &str) -> Markup {
    html! {
        form.stop method="post" action={ (build_url(&b.builder, b.number)) "/stop" } {
            input type="hidden" name="csrf" value=(token);
            input name="reason" placeholder="reason" size="16";
            button.stop-button type="submit" { "Stop build #" (b.number) }
        }
    }
}

/// The Rebuild form of a build: a new build of the same source (branch and
/// revision), beside Stop.
pub(crate) fn rebuild_form(b: &BuildRow, token: &str) -> Markup {
    html! {
        form.rebuild method="post" action={ (build_url(&b.builder, b.number)) "/rebuild" } {
            input type="hidden" name="csrf" value=(token);
            input name="reason" placeholder="reason" size="16";
            button.rebuild-button #rebuild-button type="submit" { "Rebuild #" (b.number) }
        }
    }
}

/// The Force Build form of a builder.
pub(crate) fn force_form(builder: &str, token: &str) -> Markup {
    html! {
        h2 { "Force Build" }
        form.force #force-form method="post" action={ "/builders/" (seg(builder)) "/force" } {
            input type="hidden" name="csrf" value=(token);
            label { "Your name " input name="who" size="20"; }
            label { "Reason " input name="reason" size="30"; }
            label { "Branch " input name="branch" size="15"; }
            label { "Revision " input name="revision" size="15"; }
            button #force-button type="submit" { "Force Build" }
        }
    }
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| unseg(&s.replace('+', " "));
            (dec(k), dec(v))
        })
        .collect()
}

/// Check user and CSRF token of a POST; its form when both are right.
#[allow(clippy::result_large_err)] // the error is the page to send
fn check_post(
    pc: &Pc,
    h: &HeaderMap,
    body: &[u8],
) -> Result<(Option<String>, HashMap<String, String>), Response> {
    let user = check_user(pc, h)?;
    let form = parse_form(body);
    if !csrf_ok(&pc.st, h, &form, user.as_deref().unwrap_or("")) {
        return Err(error_page(
            pc,
            StatusCode::FORBIDDEN,
            "Form expired",
            "the form's security token is missing or wrong (CSRF check); reload the page and try again",
        ));
    }
    if !pc.ctx.config.borrow().allow_force {
        return Err(error_page(
            pc,
            StatusCode::FORBIDDEN,
            "Forcing is off",
            "forcing and stopping builds is off on this master (allowForce = false in [:master:])",
        ));
    }
    Ok((user, form))
}

fn redirect(to: &str) -> Response {
    let mut r = warp::reply::with_status("", StatusCode::SEE_OTHER).into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn engine_error_page(pc: &Pc, e: crate::engine::EngineError) -> Response {
    match super::engine_status(&e) {
        Some(status) => error_page(pc, status, "Cannot do that", &e.to_string()),
        None => db_error(pc, "engine", &e),
    }
}

/// `POST /builders/NAME/force`: queue a build, back to the builder's page.
pub(crate) async fn post_force(name: String, body: Bytes, h: HeaderMap, pc: Pc) -> Response {
    let name = unseg(&name);
    let (user, form) = match check_post(&pc, &h, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let field = |k: &str| {
        form.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    // A logged-in user is who forced; the form's name only when nobody logs in.
    let who = user.or_else(|| field("who"));
    let req = ForceRequest {
        reason: field("reason").unwrap_or_default(),
        branch: field("branch"),
        revision: field("revision"),
        who,
        properties: Default::default(),
    };
    match pc.ctx.engine.force(&name, req).await {
        Ok(_) => redirect(&format!("/builders/{}", seg(&name))),
        Err(e) => engine_error_page(&pc, e),
    }
}

/// `POST /builders/NAME/builds/N/rebuild`: a new build of the same source stamp
/// (the build's branch and revision — its SourceStamp's, else the revision it
/// checked out), back to the builder's page.
pub(crate) async fn post_rebuild(
    name: String,
    number: i64,
    body: Bytes,
    h: HeaderMap,
    pc: Pc,
) -> Response {
    let name = unseg(&name);
    let (user, form) = match check_post(&pc, &h, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let d = match pc.ctx.db.build(&name, number).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return error_page(
                &pc,
                StatusCode::NOT_FOUND,
                "No such build",
                &format!("{name} has no build {number}"),
            )
        }
        Err(e) => return db_error(&pc, "rebuild", &e),
    };
    let revision = d
        .revision
        .clone()
        .or_else(|| d.properties.get("got_revision").map(|(v, _)| v.clone()))
        .filter(|r| !r.is_empty());
    let why = form
        .get("reason")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let req = ForceRequest {
        reason: match why {
            Some(w) => format!("rebuild of #{number}: {w}"),
            None => format!("rebuild of #{number}"),
        },
        branch: d.branch.clone(),
        revision,
        who: user.or_else(|| form.get("who").cloned().filter(|w| !w.trim().is_empty())),
        properties: Default::default(),
    };
    match pc.ctx.engine.force(&name, req).await {
        Ok(_) => redirect(&format!("/builders/{}", seg(&name))),
        Err(e) => engine_error_page(&pc, e),
    }
}

/// `POST /builders/NAME/builds/N/stop`: interrupt a build, back to its page.
pub(crate) async fn post_stop(
    name: String,
    number: i64,
    body: Bytes,
    h: HeaderMap,
    pc: Pc,
) -> Response {
    let name = unseg(&name);
    let (user, form) = match check_post(&pc, &h, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let who = user
        .or_else(|| form.get("who").cloned())
        .unwrap_or_else(|| "web".to_string());
    let reason = form
        .get("reason")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "no reason given".into());
    match pc.ctx.engine.stop_build(&name, number, &who, &reason).await {
        Ok(()) => redirect(&build_url(&name, number)),
        Err(e) => engine_error_page(&pc, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_secure_contexts() {
        for host in [
            "localhost",
            "localhost:8010",
            "a.localhost:1",
            "127.0.0.1:8010",
            "127.1.2.3",
            "[::1]:8010",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "ci.example",
            "ci.example:8010",
            "10.0.0.1:8010",
            "[::2]:80",
            "localhost.example",
            "128.0.0.1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("ci.example:8010"));
        assert_eq!(csrf_cookie_name(&h), CSRF_COOKIE_PLAIN);
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(csrf_cookie_name(&h), CSRF_COOKIE_HOST);
    }

    #[test]
    fn tokens_and_login_cookies_are_bound_to_their_user() {
        let st = PageState::new(false, None);
        let nonce = "0123456789abcdef0123456789abcdef";
        assert_ne!(
            csrf_token(&st, nonce, "alice"),
            csrf_token(&st, nonce, "bob")
        );
        assert_ne!(csrf_token(&st, nonce, ""), csrf_token(&st, nonce, "alice"));
        // Another master (another key) makes other tokens.
        let other = PageState::new(false, None);
        assert_ne!(
            csrf_token(&st, nonce, "alice"),
            csrf_token(&other, nonce, "alice")
        );
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8010"));
        let with = |v: String| {
            let mut h = h.clone();
            h.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("{LOGIN_COOKIE_HOST}={v}")).unwrap(),
            );
            h
        };
        let alice = login_cookie(&st, "alice");
        assert_eq!(
            login_cookie_user(&st, &with(alice.clone())).as_deref(),
            Some("alice")
        );
        assert_eq!(login_cookie_user(&other, &with(alice.clone())), None);
        let (_, sig) = alice.split_once('.').unwrap();
        assert_eq!(login_cookie_user(&st, &with(format!("626f62.{sig}"))), None);
        assert_eq!(login_cookie_user(&st, &with("zz.00".into())), None);
    }

    #[test]
    fn forms_decode() {
        let f = parse_form(b"who=A+B&reason=%3Cscript%3E&csrf=x");
        assert_eq!(f["who"], "A B");
        assert_eq!(f["reason"], "<script>");
    }

    #[test]
    fn form_tokens_are_attribute_values() {
        let token = "t\"><script>";
        let f = stop_form(
            &BuildRow {
                builder: "a b".into(),
                number: 3,
                slave: String::new(),
                started_at: 0.0,
                finished_at: None,
                result: None,
                reason: String::new(),
                text: String::new(),
                total_steps: 0,
            },
            token,
        )
        .into_string();
        assert!(
            f.contains("action=\"/builders/a%20b/builds/3/stop\""),
            "{f}"
        );
        assert!(f.contains("value=\"t&quot;&gt;&lt;script&gt;\""), "{f}");
    }
}
