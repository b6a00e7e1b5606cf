//! Changes submitted by people and scripts rather than found by a poller:
//! `autobot sendchange` on the slave port and `POST /api/v1/changes` on htmlport.
//!
//! Both carry the same JSON object, [`ChangeSubmission`] (the fields of a Change
//! without its id), both are authenticated with `changeuser`/`changepassword` of
//! `[:master:]`, and both end in [`ChangeBus::add`], which stores the Change before
//! any scheduler hears of it.
//!
//! On the slave port a submitter opens a WebSocket on [`CHANGE_PATH`] (HTTP Basic
//! on the upgrade, as slaves do on `/`) and sends one JSON text message per Change;
//! each is answered by one [`SubmitReply`]: `{"change": {…stored row…}}` or
//! `{"error": "…"}`. A connection that stays quiet for [`IDLE_TIMEOUT`] is closed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::bus::AddError;
use super::validate::{check_change, FieldError};
use super::ChangeBus;
pub use crate::calendar::now;
use crate::db::changes::{ChangeRow, NewChange};

/// The slave-port path change submitters upgrade on (slaves use `/`).
pub const CHANGE_PATH: &str = "/change";

/// How long a change connection may stay silent before the master closes it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest JSON Change accepted on the slave port, as on `POST /api/v1/changes`:
/// the caps of [`super::validate`] keep a real Change far below it, and small
/// elements (`""` in `files`) would read into many times its size.
pub const MAX_SUBMISSION: usize = 4 << 20;

/// A Change as a client sends it: every field of a stored Change but the id. Only
/// `who` is required; `when` defaults to the time the master receives it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChangeSubmission {
    pub who: String,
    pub files: Vec<String>,
    pub comments: String,
    pub revision: Option<String>,
    pub branch: Option<String>,
    /// Unix seconds; `None`: now.
    pub when: Option<i64>,
    pub repository: String,
    pub category: String,
    pub project: String,
    pub links: Vec<String>,
}

/// Why a submitted Change was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("a Change needs `who` (its author; sendchange --username)")]
    NoWho,
    #[error("`{0}` must not be empty when given (leave it out instead)")]
    EmptyField(&'static str),
    /// A field broke one of the rules every Change follows ([`super::validate`]).
    #[error("{0}")]
    Invalid(#[from] FieldError),
}

impl ChangeSubmission {
    /// Check the submission and turn it into the Change to store; `now` (unix
    /// seconds) stands in for a missing `when`. Revision and branch are trimmed, then
    /// everything is checked by [`check_change`] (the rules of every intake).
    pub fn into_change(self, now: i64) -> Result<NewChange, SubmitError> {
        let who = self.who.trim().to_string();
        if who.is_empty() {
            return Err(SubmitError::NoWho);
        }
        let non_empty = |v: Option<String>, name: &'static str| match v {
            Some(s) if s.trim().is_empty() => Err(SubmitError::EmptyField(name)),
            Some(s) => Ok(Some(s.trim().to_string())),
            None => Ok(None),
        };
        let change = NewChange {
            who,
            files: self.files,
            comments: self.comments,
            revision: non_empty(self.revision, "revision")?,
            branch: non_empty(self.branch, "branch")?,
            when: self.when.unwrap_or(now),
            repository: self.repository,
            category: self.category,
            links: self.links,
            project: self.project,
        };
        check_change(&change)?;
        Ok(change)
    }
}

/// The master's answer to one submitted Change on the slave port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubmitReply {
    /// Stored (and announced to the schedulers).
    Change(Box<StoredChange>),
    /// Not stored, and why.
    Error(String),
}

/// A stored Change as the reply carries it (the JSON API's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredChange {
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
}

impl From<ChangeRow> for StoredChange {
    fn from(r: ChangeRow) -> Self {
        StoredChange {
            id: r.id,
            who: r.who,
            files: r.files,
            comments: r.comments,
            revision: r.revision,
            branch: r.branch,
            when: r.when,
            repository: r.repository,
            category: r.category,
            links: r.links,
            project: r.project,
        }
    }
}

/// Parse, check and store one submitted JSON Change.
pub async fn submit_json(bus: &ChangeBus, text: &[u8]) -> SubmitReply {
    if text.len() > MAX_SUBMISSION {
        return SubmitReply::Error(format!(
            "the Change is {} bytes of JSON; at most {MAX_SUBMISSION} are accepted",
            text.len()
        ));
    }
    let sub: ChangeSubmission = match serde_json::from_slice(text) {
        Ok(s) => s,
        Err(e) => return SubmitReply::Error(format!("not a Change: {e}")),
    };
    let change = match sub.into_change(now()) {
        Ok(c) => c,
        Err(e) => return SubmitReply::Error(e.to_string()),
    };
    match bus.add(vec![change]).await {
        Ok(mut rows) => match rows.pop() {
            Some(row) => SubmitReply::Change(Box::new(row.into())),
            None => SubmitReply::Error("the master stored nothing".into()),
        },
        Err(e @ AddError::Invalid { .. }) => SubmitReply::Error(e.to_string()),
        Err(AddError::Db(e)) => {
            tracing::error!("storing a submitted change: {e}");
            SubmitReply::Error("the master could not store the Change (database error)".into())
        }
    }
}

/// Serve one authenticated change connection of the slave port: each text (or
/// binary) message is a Change, answered in order, until the submitter closes,
/// goes quiet for [`IDLE_TIMEOUT`] or the master shuts down.
pub async fn serve_session<S>(
    bus: ChangeBus,
    mut socket: WebSocketStream<S>,
    user: String,
    peer: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(IDLE_TIMEOUT, socket.next()) => next,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let msg = match next {
            Err(_) => {
                tracing::debug!("sendchange from {peer}: idle, closing");
                break;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                tracing::debug!("sendchange from {peer}: {e}");
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
        let reply = submit_json(&bus, &data).await;
        match &reply {
            SubmitReply::Change(c) => {
                tracing::info!(
                    "sendchange: change {} by {} from {user}@{peer}",
                    c.id,
                    c.who
                )
            }
            SubmitReply::Error(e) => {
                tracing::warn!("sendchange from {user}@{peer}: change refused: {e}")
            }
        }
        let text = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
        if socket.send(Message::text(text)).await.is_err() {
            return;
        }
    }
    let _ = socket.close(None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_needs_only_who() {
        let sub: ChangeSubmission = serde_json::from_str(r#"{"who": " ann "}"#).unwrap();
        let c = sub.into_change(42).unwrap();
        assert_eq!((c.who.as_str(), c.when), ("ann", 42));
        assert!(c.files.is_empty() && c.revision.is_none());
        let none: ChangeSubmission = serde_json::from_str("{}").unwrap();
        assert_eq!(none.into_change(1), Err(SubmitError::NoWho));
    }

    #[test]
    fn every_field_is_carried() {
        let sub: ChangeSubmission = serde_json::from_str(
            r#"{"who":"Bob <b@x>","files":["a.c"],"comments":"fix","revision":"r1",
                "branch":"main","when":7,"repository":"https://x/r.git","category":"c",
                "project":"p","links":["https://x/r1"]}"#,
        )
        .unwrap();
        let c = sub.into_change(0).unwrap();
        assert_eq!(c.files, vec!["a.c"]);
        assert_eq!(c.revision.as_deref(), Some("r1"));
        assert_eq!(c.branch.as_deref(), Some("main"));
        assert_eq!((c.when, c.repository.as_str()), (7, "https://x/r.git"));
        assert_eq!((c.category.as_str(), c.project.as_str()), ("c", "p"));
        assert_eq!(c.links, vec!["https://x/r1"]);
    }

    #[test]
    fn unknown_fields_and_empty_branch_are_refused() {
        assert!(serde_json::from_str::<ChangeSubmission>(r#"{"who":"a","whom":"b"}"#).is_err());
        let sub: ChangeSubmission = serde_json::from_str(r#"{"who":"a","branch":""}"#).unwrap();
        assert_eq!(sub.into_change(0), Err(SubmitError::EmptyField("branch")));
    }

    #[test]
    fn revision_branch_and_sizes_follow_the_rules_of_every_intake() {
        for (json, want) in [
            (
                r#"{"who":"a","revision":" --output=/tmp/f "}"#,
                "`revision` \"--output=/tmp/f\" starts with `-`",
            ),
            (
                r#"{"who":"a","branch":"-b"}"#,
                "`branch` \"-b\" starts with `-`",
            ),
            (r#"{"who":"a","revision":"a\u0000b"}"#, "control character"),
            (r#"{"who":"a","files":["ok","x\ny"]}"#, "`files[1]`"),
            (r#"{"who":"a","when":-3}"#, "`when` is -3"),
        ] {
            let sub: ChangeSubmission = serde_json::from_str(json).unwrap();
            let e = sub.into_change(0).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        let sub = ChangeSubmission {
            who: "a".into(),
            comments: "c".repeat(crate::changes::validate::MAX_COMMENTS + 1),
            ..Default::default()
        };
        assert!(matches!(
            sub.into_change(0),
            Err(SubmitError::Invalid(FieldError::TooLong { .. }))
        ));
    }

    #[test]
    fn replies_round_trip() {
        let r = SubmitReply::Error("no".into());
        let t = serde_json::to_string(&r).unwrap();
        assert_eq!(t, r#"{"error":"no"}"#);
        assert_eq!(serde_json::from_str::<SubmitReply>(&t).unwrap(), r);
    }
}
