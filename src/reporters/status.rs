//! Commit status on the forges (`statusPush = github|gitea|gitlab`): a status
//! when a build starts and one when it ends, for the build's revision, context
//! `autobot/BUILDER`, target URL the build's page — each forge's documented
//! commit-status endpoint:
//!
//! * GitHub: `POST {api}/repos/{owner}/{repo}/statuses/{sha}`, JSON `state`
//!   (`pending`, `success`, `failure`, `error`), `target_url`, `description`,
//!   `context`; `Authorization: Bearer TOKEN`.
//! * Gitea: the same path and body under `/api/v1`; `Authorization: token TOKEN`.
//! * GitLab: `POST {api}/projects/{url-encoded path}/statuses/{sha}`, JSON `state`
//!   (`running`, `success`, `failed`), `target_url`, `description`, `name`;
//!   `PRIVATE-TOKEN: TOKEN`.
//!
//! The request is decided from the database and queued like a mail; the token is
//! read from `statusPushToken`'s file at each attempt and never stored.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::mail::{Forge, StatusPush};
use crate::config::MasterConfig;
use crate::db::notifications::{BuildToAnnounce, NewNotification};
use crate::db::{Db, DbError};

/// How long one request may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// What is stored with a queued status besides its JSON body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestMeta {
    pub forge: String,
    pub url: String,
    /// The file holding the token.
    pub token_file: String,
}

/// The status requests for a build's start (`started`) or end.
pub async fn decide(
    db: &Db,
    cfg: &MasterConfig,
    b: &BuildToAnnounce,
    started: bool,
) -> Result<Vec<NewNotification>, DbError> {
    let Some(bc) = cfg.builders().into_iter().find(|x| x.name == b.builder) else {
        return Ok(Vec::new());
    };
    let Some(push) = cfg
        .mail
        .factories
        .get(&bc.factory)
        .and_then(|f| f.status_push.as_ref())
    else {
        return Ok(Vec::new());
    };
    if !started && b.result.is_none() {
        return Ok(Vec::new());
    }
    let Some(d) = db.build(&b.builder, b.number).await? else {
        return Ok(Vec::new());
    };
    let got = d
        .properties
        .get("got_revision")
        .map(|(v, _)| v.clone())
        .filter(|v| !v.is_empty());
    let Some(sha) = d.revision.clone().filter(|r| !r.is_empty()).or(got) else {
        tracing::info!(
            "{} build {}: no revision known, so no commit status",
            b.builder,
            b.number
        );
        return Ok(Vec::new());
    };
    let url = super::mail::build_url(cfg, &b.builder, b.number);
    Ok(vec![request(
        push,
        &b.builder,
        &sha,
        if started { None } else { b.result.as_deref() },
        &url,
    )])
}

/// The forge's word for a build state (`None`: running).
fn state(forge: Forge, result: Option<&str>) -> &'static str {
    match (forge, result) {
        (Forge::Gitlab, None) => "running",
        (_, None) => "pending",
        (_, Some("success" | "warnings" | "skipped")) => "success",
        (Forge::Gitlab, Some("cancelled")) => "canceled",
        (Forge::Gitlab, Some(_)) => "failed",
        (_, Some("failure")) => "failure",
        (_, Some(_)) => "error",
    }
}

/// One status request for `builder`'s build of `sha`.
pub fn request(
    push: &StatusPush,
    builder: &str,
    sha: &str,
    result: Option<&str>,
    target_url: &str,
) -> NewNotification {
    let st = state(push.forge, result);
    let context = format!("autobot/{builder}");
    let description = match result {
        None => "Build started.".to_string(),
        Some(r) => format!("Build done: {r}."),
    };
    let sha_enc = crate::links::seg(sha);
    let (url, body) = match push.forge {
        Forge::Github | Forge::Gitea => (
            format!("{}/repos/{}/statuses/{sha_enc}", push.api_url, push.repo),
            serde_json::json!({
                "state": st,
                "target_url": target_url,
                "description": description,
                "context": context,
            }),
        ),
        Forge::Gitlab => (
            format!(
                "{}/projects/{}/statuses/{sha_enc}",
                push.api_url,
                crate::links::seg(&push.repo)
            ),
            serde_json::json!({
                "state": st,
                "target_url": target_url,
                "description": description,
                "name": context,
            }),
        ),
    };
    let meta = RequestMeta {
        forge: push.forge.as_str().to_string(),
        url,
        token_file: push.token_file.display().to_string(),
    };
    NewNotification {
        kind: "status".to_string(),
        target: format!(
            "{} {}@{} {}: {st}",
            push.forge.as_str(),
            push.repo,
            sha,
            context
        ),
        payload: body.to_string().into_bytes(),
        meta: serde_json::to_string(&meta).unwrap_or_default(),
        message_id: None,
    }
}

/// Why a request failed.
#[derive(Debug)]
pub struct SendError {
    /// The forge refused it for good (4xx other than 408 and 429).
    pub permanent: bool,
    pub message: String,
}

/// Send one stored status request; the forge's answer on success.
pub async fn send(
    client: &reqwest::Client,
    meta: &str,
    payload: &[u8],
) -> Result<String, SendError> {
    let err = |permanent, message: String| SendError { permanent, message };
    let meta: RequestMeta =
        serde_json::from_str(meta).map_err(|e| err(true, format!("bad stored request: {e}")))?;
    let token = tokio::fs::read_to_string(&meta.token_file)
        .await
        .map_err(|e| err(false, format!("statusPushToken {}: {e}", meta.token_file)))?;
    let token = token.trim();
    let mut req = client
        .post(&meta.url)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("autobot/", env!("CARGO_PKG_VERSION")))
        .timeout(HTTP_TIMEOUT)
        .body(payload.to_vec());
    req = match meta.forge.as_str() {
        "github" => req
            .header("Authorization", format!("Bearer {token}"))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28"),
        "gitea" => req
            .header("Authorization", format!("token {token}"))
            .header("Accept", "application/json"),
        _ => req
            .header("PRIVATE-TOKEN", token)
            .header("Accept", "application/json"),
    };
    let resp = req
        .send()
        .await
        .map_err(|e| err(false, format!("POST {}: {e}", meta.url)))?;
    let code = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let short: String = text.chars().take(300).collect();
    if code.is_success() {
        return Ok(format!("HTTP {code}"));
    }
    let permanent = code.is_client_error() && code.as_u16() != 408 && code.as_u16() != 429;
    Err(err(permanent, format!("HTTP {code}: {}", short.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_each_forge() {
        assert_eq!(state(Forge::Github, None), "pending");
        assert_eq!(state(Forge::Gitlab, None), "running");
        assert_eq!(state(Forge::Github, Some("warnings")), "success");
        assert_eq!(state(Forge::Gitea, Some("failure")), "failure");
        assert_eq!(state(Forge::Github, Some("exception")), "error");
        assert_eq!(state(Forge::Gitlab, Some("exception")), "failed");
    }
}
