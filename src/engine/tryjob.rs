//! Try jobs: "what would happen if I committed this patch right now?" (Buildbot's
//! try scheduler). A developer's `autobot try` sends a [`TryJob`] — base revision,
//! patch, strip level, builders — on the slave port's [`TRY_PATH`] WebSocket or
//! as `POST /api/v1/try`, both authenticated by the `users` of `[try]`
//! ([`crate::slavelink::auth::try_credentials`]). [`Engine::submit_try`] checks it
//! against `[try]` (builders open to try, `maxPatchSize`) and the rules of every
//! request, then stores one BuildSet (scheduler `try`, reason
//! `try by USER: COMMENT`) whose SourceStamp carries the patch
//! ([`crate::db::tryjobs`]). Its requests carry no Changes, so they are never
//! merged with others; the checkout applies the patch ([`crate::sources::checkout`]).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{Engine, EngineError};
use crate::db::requests::{NewBuildSet, NewSourceStamp};
use crate::db::tryjobs::TryPatch;

/// The slave-port path `autobot try` upgrades on (slaves use `/`).
pub const TRY_PATH: &str = "/try";

/// The start of every try build's reason: how pages tell try builds apart.
pub const TRY_REASON_PREFIX: &str = "try by ";

/// How long a try connection may stay silent before the master closes it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A try job as `autobot try` sends it (JSON; the patch base64-encoded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TryJob {
    /// Builders to build on; empty: every builder `[try]` opens.
    pub builders: Vec<String>,
    /// `None`: the factory's branch.
    pub branch: Option<String>,
    /// The revision the patch applies to; `None`: the branch's newest.
    pub baserev: Option<String>,
    /// `-pN` of the patch.
    pub patch_level: u32,
    /// The diff, base64 (standard alphabet); empty: build the base as it is.
    pub patch: String,
    /// Extra build properties.
    pub properties: BTreeMap<String, String>,
    pub comment: String,
}

/// What the master answers to one try job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TryReply {
    Accepted(TryAccepted),
    Error(String),
}

/// A stored try job: its BuildSet and one request per builder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TryAccepted {
    pub buildset_id: i64,
    /// (builder, BuildRequest id).
    pub requests: Vec<(String, i64)>,
    /// The master's pages (`buildbotURL`, else its htmlport's local address):
    /// where the builds' pages are.
    pub web_url: String,
    /// The master's htmlport, where `try --wait` follows the builds.
    pub htmlport: u16,
}

/// Why a try job was refused.
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    #[error("try jobs are off: the master's master.ini has no [try] section")]
    Off,
    #[error("the patch is {size} bytes; the master accepts at most {max} (maxPatchSize of [try])")]
    TooLarge { size: u64, max: u64 },
    #[error("the patch is not valid base64: {0}")]
    BadPatch(String),
    #[error("no builder named {builder:?}; try may use: {allowed}")]
    UnknownBuilder { builder: String, allowed: String },
    #[error("builder {builder:?} is not open to try jobs; try may use: {allowed}")]
    NotAllowed { builder: String, allowed: String },
    #[error("no builders: the master has none open to try jobs")]
    NoBuilders,
    #[error("{0}")]
    Engine(#[from] EngineError),
}

impl From<crate::changes::validate::FieldError> for TryError {
    fn from(e: crate::changes::validate::FieldError) -> Self {
        TryError::Engine(EngineError::BadName(e))
    }
}

/// The size of a base64 text once decoded (an upper bound, for refusing early).
fn decoded_len(b64: &str) -> u64 {
    (b64.len() as u64).div_ceil(4) * 3
}

impl Engine {
    /// Check and store a try job sent by `user` (a `[try]` user): one BuildSet
    /// whose SourceStamp carries the patch, one request per builder.
    pub async fn submit_try(&self, user: &str, job: TryJob) -> Result<TryAccepted, TryError> {
        let config = self.inner.config.borrow().clone();
        let Some(t) = &config.try_jobs else {
            return Err(TryError::Off);
        };
        let max = t.max_patch_size;
        // Refused before decoding: base64 of a huge patch is no work to do.
        if decoded_len(job.patch.trim()) > max + 3 {
            return Err(TryError::TooLarge {
                size: decoded_len(job.patch.trim()),
                max,
            });
        }
        let diff = base64::engine::general_purpose::STANDARD
            .decode(job.patch.trim())
            .map_err(|e| TryError::BadPatch(e.to_string()))?;
        if diff.len() as u64 > max {
            return Err(TryError::TooLarge {
                size: diff.len() as u64,
                max,
            });
        }
        let all: Vec<_> = config.builders();
        let open: Vec<String> = if t.builders.is_empty() {
            all.iter().map(|b| b.name.clone()).collect()
        } else {
            t.builders.clone()
        };
        let allowed = || {
            if open.is_empty() {
                "none".to_string()
            } else {
                open.join(", ")
            }
        };
        let builders = if job.builders.is_empty() {
            open.clone()
        } else {
            job.builders.clone()
        };
        if builders.is_empty() {
            return Err(TryError::NoBuilders);
        }
        for b in &builders {
            if !all.iter().any(|c| &c.name == b) {
                return Err(TryError::UnknownBuilder {
                    builder: b.clone(),
                    allowed: allowed(),
                });
            }
            if !open.contains(b) {
                return Err(TryError::NotAllowed {
                    builder: b.clone(),
                    allowed: allowed(),
                });
            }
        }
        let given = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let branch = given(job.branch);
        let revision = given(job.baserev);
        use crate::changes::validate as check;
        branch.as_deref().map(check::check_branch).transpose()?;
        revision.as_deref().map(check::check_revision).transpose()?;
        check::check_properties(&job.properties)?;
        let comment = job.comment.trim().to_string();
        check::check_force_text(Some(user), &comment)?;
        let first = all.iter().find(|c| c.name == builders[0]);
        let factory = first.and_then(|b| config.factory(&b.factory));
        let repository = factory
            .and_then(|f| f.sources.first())
            .map(|s| crate::sources::redact_url(&s.url))
            .unwrap_or_default();
        let reason = match comment.lines().next().filter(|l| !l.is_empty()) {
            Some(line) => format!("{TRY_REASON_PREFIX}{user}: {line}"),
            None => format!("{TRY_REASON_PREFIX}{user}"),
        };
        let bs = NewBuildSet {
            reason,
            scheduler: "try".into(),
            properties: job.properties,
            sourcestamp: NewSourceStamp {
                branch,
                revision,
                repository,
                project: first.map(|b| b.factory.clone()).unwrap_or_default(),
                changes: Vec::new(),
            },
            builders,
            priority: 0,
        };
        let patch = TryPatch {
            level: job.patch_level,
            diff,
            author: user.to_string(),
            comment,
        };
        let submitted = self.submit_with_patch(bs, Some(patch)).await?;
        let web_url = if config.buildbot_url.is_empty() {
            config.html_listen().local_url()
        } else {
            config.buildbot_url.clone()
        };
        Ok(TryAccepted {
            buildset_id: submitted.buildset_id,
            requests: submitted.requests,
            web_url,
            htmlport: config.htmlport,
        })
    }

    /// [`Engine::submit_try`] of a JSON try job, as the reply to send; refusals
    /// are logged with `user` and `peer`. `htmlport`: the port the pages are
    /// really served on, when the daemon knows it (`master.ini`'s otherwise).
    pub async fn submit_try_json(
        &self,
        user: &str,
        peer: &str,
        data: &[u8],
        htmlport: Option<u16>,
    ) -> TryReply {
        let reply = match serde_json::from_slice::<TryJob>(data) {
            Err(e) => TryReply::Error(format!("not a try job: {e}")),
            Ok(job) => match self.submit_try(user, job).await {
                Ok(mut a) => {
                    if let Some(port) = htmlport.filter(|p| *p != a.htmlport) {
                        let config = self.inner.config.borrow().clone();
                        a.htmlport = port;
                        if config.buildbot_url.is_empty() {
                            a.web_url =
                                crate::config::Listen::new(config.htmlport_addr, port).local_url();
                        }
                    }
                    TryReply::Accepted(a)
                }
                Err(TryError::Engine(EngineError::Db(e))) => {
                    tracing::error!("storing a try job from {user}@{peer}: {e}");
                    TryReply::Error(
                        "the master could not store the try job (database error)".into(),
                    )
                }
                Err(e) => TryReply::Error(e.to_string()),
            },
        };
        match &reply {
            TryReply::Accepted(a) => {
                let names: Vec<&str> = a.requests.iter().map(|(b, _)| b.as_str()).collect();
                tracing::info!(
                    "try: BuildSet {} from {user}@{peer} on {}",
                    a.buildset_id,
                    names.join(", ")
                );
            }
            TryReply::Error(e) => tracing::warn!("try from {user}@{peer} refused: {e}"),
        }
        reply
    }
}

/// Serve one authenticated try connection of the slave port: each text (or
/// binary) message is a [`TryJob`], answered by a [`TryReply`], until the client
/// closes, goes quiet for a minute or the master shuts down. `htmlport` is the
/// port the master's pages are served on (where `try --wait` follows).
pub async fn serve_session<S>(
    engine: Engine,
    mut socket: WebSocketStream<S>,
    user: String,
    peer: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    htmlport: u16,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(IDLE_TIMEOUT, socket.next()) => next,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let msg = match next {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!("try from {peer}: {e}");
                return;
            }
            Ok(Some(Ok(m))) => m,
        };
        let data = match msg {
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Close(_) => break,
            _ => continue,
        };
        let reply = engine
            .submit_try_json(&user, &peer, &data, Some(htmlport))
            .await;
        let text = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
        if socket.send(Message::text(text)).await.is_err() {
            return;
        }
    }
    let _ = socket.close(None).await;
}
