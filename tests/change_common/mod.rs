//! Helpers for the change-submission tests (`tests/sendchange.rs`,
//! `tests/change_hooks.rs`): a real git repository made with the git CLI, a real
//! master on free ports, and a raw HTTP/1.1 POST with headers.
//!
//! Include with `#[path = "change_common/mod.rs"] mod change_common;` after the
//! `support` and `engine_common` modules.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use crate::engine_common::{self, EngineMaster};
use crate::support;

/// A git repository with one commit on `main`, in its own temp dir.
pub struct GitRepo {
    pub _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl GitRepo {
    pub fn new() -> GitRepo {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap().join("repo");
        std::fs::create_dir_all(&path).unwrap();
        git(&path, &["init", "-q", "-b", "main"]);
        std::fs::write(path.join("README"), "hello\n").unwrap();
        git(&path, &["add", "-A"]);
        git(&path, &["commit", "-q", "-m", "first"]);
        GitRepo { _dir: dir, path }
    }

    pub fn url(&self) -> String {
        self.path.display().to_string()
    }

    /// Commit a change to `file` with `message`; the new revision.
    pub fn commit(&self, file: &str, message: &str) -> String {
        let p = self.path.join(file);
        let mut text = std::fs::read_to_string(&p).unwrap_or_default();
        text.push_str("more\n");
        std::fs::write(&p, text).unwrap();
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "-q", "-m", message]);
        support::git(&self.path, &["rev-parse", "HEAD"])
            .trim()
            .to_string()
    }
}

fn git(dir: &Path, args: &[&str]) {
    support::git(dir, args);
}

/// A master whose `[:master:]` has `extra_master` and one factory `proj` checking
/// out `repo`'s `main`.
pub async fn start(repo: &GitRepo, extra_master: &str) -> EngineMaster {
    let factories = format!("[proj]\ntype = source\ngit = {}#main\n", repo.url());
    let ini = engine_common::master_ini(&factories, extra_master);
    EngineMaster::start(&ini, std::time::Duration::from_secs(60)).await
}

/// Wait until the master's poller recorded the head of `url`'s `branch` (its first
/// poll is done, so the next commit becomes a Change); the head.
pub async fn wait_head(m: &EngineMaster, url: &str, branch: &str) -> String {
    let db = m.master.db().clone();
    engine_common::wait_until(&format!("the first poll of {url}"), || {
        let db = db.clone();
        async move { db.poller_heads(url).await.unwrap().contains_key(branch) }
    })
    .await;
    db.poller_heads(url).await.unwrap()[branch].clone()
}

/// `GET /api/v1/changes` as JSON (newest first).
pub async fn api_changes(m: &EngineMaster) -> Vec<serde_json::Value> {
    let (status, body) = support::http_get(m.master.htmlport(), "/api/v1/changes").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
}

/// A raw HTTP/1.1 request on 127.0.0.1:port: (status, headers lower-cased, body).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String, String) {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = crate::support::http(port, method, path, &headers, body).await;
    let head: String = r
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {}\r\n", v.to_ascii_lowercase()))
        .collect();
    (r.status, head, r.body)
}

/// `Basic base64(user:pass)`.
pub fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// Shut the master down before its directory (and the repository it polls) go
/// away, so no poll runs against a half-deleted directory.
pub async fn finish(m: EngineMaster, repo: GitRepo) {
    let EngineMaster { dir, master } = m;
    master.shutdown().await;
    drop(dir);
    drop(repo);
}
