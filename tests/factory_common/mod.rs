//! Helpers for the factory-type and step-semantics tests (`tests/factory_types.rs`,
//! `tests/step_semantics.rs`): a master directory holding real git repositories made
//! with the git CLI (the bundled samples, or files the test writes), a real master
//! started on it with one real autobot slave, forced builds waited for with a
//! deadline, and the step results and logs they left.
//!
//! Include with `#[path = "factory_common/mod.rs"] mod factory_common;` after the
//! `support` and `engine_common` modules.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use autobot::db::builds::{BuildDetail, StepRow};
use autobot::engine::ForceRequest;

use crate::engine_common::{self, EngineMaster, PASSWORD, SLAVE};
use crate::support;

/// How long one build may take: a fresh virtualenv, a pip install or a cargo build
/// on a loaded 2-core machine takes seconds, never minutes.
pub const BUILD_DEADLINE: Duration = Duration::from_secs(300);

/// A file of a repository: path, contents, executable bit.
pub type RepoFile = (String, Vec<u8>, bool);

/// Files from `(path, text)` pairs; paths under `bin/`, ending `.sh`, or named
/// `configure` are made executable.
pub fn files(list: &[(&str, &str)]) -> Vec<RepoFile> {
    list.iter()
        .map(|(p, t)| {
            let exec = p.ends_with(".sh") || p.starts_with("bin/") || *p == "configure";
            (p.to_string(), t.as_bytes().to_vec(), exec)
        })
        .collect()
}

/// The files of an embedded sample (`hello`, `pyhello`), with `changes` applied:
/// each `(path, from, to)` replaces the text `from` by `to` in that file (the test
/// fails if `from` is not there, so a changed sample cannot silently make a
/// "failing" variant pass).
pub fn sample(name: &str, changes: &[(&str, &str, &str)]) -> Vec<RepoFile> {
    let sample =
        autobot::templates::sample(name).unwrap_or_else(|| panic!("no embedded sample {name}"));
    let mut out: Vec<RepoFile> = sample
        .iter()
        .map(|f| (f.path.to_string(), f.contents.to_vec(), f.executable))
        .collect();
    for (path, from, to) in changes {
        let f = out
            .iter_mut()
            .find(|f| f.0 == *path)
            .unwrap_or_else(|| panic!("sample {name} has no {path}"));
        let text = String::from_utf8(f.1.clone()).unwrap();
        assert!(text.contains(from), "sample {name}: {path} has no {from:?}");
        f.1 = text.replacen(from, to, 1).into_bytes();
    }
    out
}

fn git(dir: &Path, args: &[&str]) -> String {
    support::git(dir, args)
}

/// A git repository at `path` on branch `master` (the default branch of a source) with one commit of `files`; its
/// head revision.
pub fn git_repo(path: &Path, files: &[RepoFile]) -> String {
    std::fs::create_dir_all(path).unwrap();
    git(path, &["init", "-q", "-b", "master"]);
    for (rel, contents, exec) in files {
        let p = path.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        let mode = if *exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    git(path, &["add", "-A"]);
    git(path, &["commit", "-q", "-m", "initial"]);
    git(path, &["rev-parse", "HEAD"])
}

/// A master whose directory holds `repos` (name → files, at `./repos/NAME`) and
/// whose `master.ini` has `factories` (sections as written; they name the
/// repositories `./repos/NAME`), with a connected autobot slave `s1` that may run
/// `max_builds` builds at once. Polling is hourly so only forced builds run.
pub struct Site {
    pub m: EngineMaster,
    pub slave: support::SlaveProc,
    /// Head revision of each repository.
    pub heads: BTreeMap<String, String>,
}

impl Site {
    pub async fn start(repos: &[(&str, Vec<RepoFile>)], factories: &str, max_builds: u32) -> Site {
        support::capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let mut heads = BTreeMap::new();
        for (name, files) in repos {
            let head = git_repo(&dir.path().join("repos").join(name), files);
            heads.insert(name.to_string(), head);
        }
        let ini = format!(
            "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = {PASSWORD}\n\
             factories = *\npollInterval = 3600\ntreeStable = 0\n\n\
             [slave:{SLAVE}]\nmax_builds = {max_builds}\n\n{factories}\n"
        );
        crate::support::write_master_ini(dir.path(), ini);
        let master = engine_common::start_master(dir.path(), Duration::from_secs(30)).await;
        let m = EngineMaster { dir, master };
        let slave = m.slave().await;
        Site { m, slave, heads }
    }

    /// The slave's directory of `builder`.
    pub fn builder_dir(&self, builder: &str) -> PathBuf {
        self.m.dir.path().join("slave").join(builder)
    }

    /// Force a build of each of `factories` (all queued at once) and wait for every
    /// one; their details in the same order.
    pub async fn build_all(&self, factories: &[&str]) -> Vec<BuildDetail> {
        let mut ids = Vec::new();
        for f in factories {
            let builder = format!("{f}-{SLAVE}");
            let id = self
                .m
                .engine()
                .force(
                    &builder,
                    ForceRequest {
                        reason: format!("test {f}"),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("force {builder}: {e}"))
                .request_id;
            ids.push((builder, id));
        }
        let mut out = Vec::new();
        for (builder, id) in ids {
            let req = tokio::time::timeout(BUILD_DEADLINE, self.m.engine().wait_request(id))
                .await
                .unwrap_or_else(|_| panic!("{builder}: no result within {BUILD_DEADLINE:?}"))
                .unwrap();
            let number = *req.builds.last().expect("the request ran a build");
            out.push(self.m.build(&builder, number).await);
        }
        out
    }

    /// Force one build of `factory` and wait for it.
    pub async fn build(&self, factory: &str) -> BuildDetail {
        self.build_all(&[factory]).await.remove(0)
    }

    /// The text of a step's stdio log.
    pub async fn log(&self, b: &BuildDetail, step: &str) -> String {
        self.m
            .log_text(&b.build.builder, b.build.number, step)
            .await
    }

    /// Stop the slave, then the master, before the directory goes.
    pub async fn stop(self) {
        let Site { m, slave, .. } = self;
        slave.stop().await;
        let EngineMaster { dir, master } = m;
        master.shutdown().await;
        drop(dir);
    }
}

/// `(step name, result)` of every step that ran.
pub fn results(b: &BuildDetail) -> Vec<(String, String)> {
    b.steps
        .iter()
        .map(|s| (s.name.clone(), s.result.clone().unwrap_or_default()))
        .collect()
}

/// `results` for an expected list written as `&[("checkout", "success"), …]`.
pub fn expect(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect()
}

/// The step called `name`; fails the test when the build has none.
pub fn step<'a>(b: &'a BuildDetail, name: &str) -> &'a StepRow {
    b.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{}: no step {name}: {:?}", b.build.builder, results(b)))
}

/// The build's result (`success`, `failure`, …).
pub fn result(b: &BuildDetail) -> &str {
    b.build.result.as_deref().unwrap_or("")
}

/// A build property's value.
pub fn prop<'a>(b: &'a BuildDetail, name: &str) -> &'a str {
    b.properties
        .get(name)
        .map(|(v, _)| v.as_str())
        .unwrap_or_else(|| {
            panic!(
                "{}: no property {name}: {:?}",
                b.build.builder, b.properties
            )
        })
}
