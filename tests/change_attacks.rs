//! A Change's revision must never become a git option, however the Change or the
//! build request comes in. Each test replays an attack against a real master with a
//! real slave and a real git repository: a `shell` factory without sources whose
//! step is `git -C REPO log -1 %(revision)s` (what once wrote `--output=FILE`
//! outside the slave's base directory, with the build green). The attacks come
//! through the real `autobot sendchange` binary, a signed Gitea webhook without a
//! clone URL (once matched to the factory by its name), `POST /api/v1/changes` for an
//! `alwaysUseLatest` factory, and a forced build's properties. Each is refused with
//! a clear error, FILE never exists, and a well-formed request afterwards builds
//! green, so the factory would have run the attack.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

#[path = "scheduler_common/mod.rs"]
mod scheduler_common;

#[path = "change_common/mod.rs"]
mod change_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autobot::engine::ForceRequest;
use scheduler_common::{ini, wait_builds, wait_finished, GitRepo, Site};
use serde_json::{json, Value};

/// A temp directory with a git repository (one commit) and the path an attack
/// would write: outside every base directory of the master and the slave.
struct Scene {
    tmp: tempfile::TempDir,
    repo: GitRepo,
    head: String,
}

impl Scene {
    fn new() -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let repo = GitRepo::new(&tmp.path().join("repo"));
        let head = repo.commit("Init <init@example.org>", "README", "initial");
        Scene { tmp, repo, head }
    }

    fn pwned(&self) -> PathBuf {
        self.tmp.path().join("pwned")
    }

    fn attack(&self) -> String {
        format!("--output={}", self.pwned().display())
    }

    /// A shell factory without sources that logs `%(revision)s` of the repository.
    fn evil_factory(&self) -> String {
        format!(
            "[evil]\ntype = shell\nstep.log = git -C {} log -1 %(revision)s\n",
            self.repo.url()
        )
    }
}

/// `autobot sendchange ARGS` (the real binary) from `cwd`.
async fn sendchange(args: Vec<String>, cwd: &Path) -> std::process::Output {
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(engine_common::autobot_bin())
            .arg("sendchange")
            .args(&args)
            .current_dir(&cwd)
            .env("HOME", &cwd)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendchange_of_a_revision_or_branch_that_is_an_option_is_refused() {
    let s = Scene::new();
    let site = Site::new(&ini(
        "treeStable = 0\nchangeuser = ci\nchangepassword = pa55",
        &["s1"],
        &s.evil_factory(),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let master = format!("127.0.0.1:{}", run.master.slaveport());
    let base = |extra: &[String]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--auth",
            "ci:pa55",
            "--master",
            &master,
            "--username",
            "Eve",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        a.extend_from_slice(extra);
        a
    };
    let rev_file = s.tmp.path().join("rev");
    std::fs::write(&rev_file, format!("{}\n", s.attack())).unwrap();
    for (extra, field) in [
        // The report's exact command line.
        (vec![format!("-r={}", s.attack())], "revision"),
        (
            vec!["--revision".into(), format!(" {}", s.attack())],
            "revision",
        ),
        (
            vec!["--revision-file".into(), rev_file.display().to_string()],
            "revision",
        ),
        (
            vec!["-r".into(), s.head.clone(), format!("-b={}", s.attack())],
            "branch",
        ),
        (vec!["-r".into(), "HEAD\n--output=x".into()], "revision"),
    ] {
        let out = sendchange(base(&extra), s.tmp.path()).await;
        let err = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{extra:?} was accepted: {}",
            text(&out.stdout)
        );
        assert!(
            err.contains(&format!("the master refused the Change: `{field}`")),
            "{extra:?}: {err}"
        );
        assert!(
            err.contains("starts with `-`") || err.contains("control character"),
            "{err}"
        );
    }
    assert!(db.changes(10, None).await.unwrap().is_empty());
    assert!(support::log_has(&[
        "sendchange from ci@",
        "change refused: `revision`"
    ]));

    // A well-formed Change builds green: the factory would have run the attack.
    let out = sendchange(base(&["-r".into(), s.head.clone()]), s.tmp.path()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let b = wait_finished(&db, "evil-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.revision.as_deref(), Some(s.head.as_str()));
    assert_eq!(wait_builds(&db, "evil-s1", 1).await.len(), 1);
    assert!(
        !s.pwned().exists(),
        "the attack wrote {}",
        s.pwned().display()
    );
    run.stop().await;
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&k, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// POST a Gitea push signed with `gt-s3cret`: (status, JSON answer).
async fn gitea_push(port: u16, repository: Value, id: &str) -> (u16, Value) {
    let body = json!({
        "ref": "refs/heads/main",
        "repository": repository,
        "commits": [{"id": id, "message": "innocent",
                     "author": {"name": "Eve", "email": "eve@example.org"},
                     "added": ["README"], "modified": [], "removed": []}]
    })
    .to_string();
    let (status, _, reply) = change_common::http(
        port,
        "POST",
        "/change_hook/gitea",
        &[
            ("Content-Type", "application/json".into()),
            ("X-Gitea-Event", "push".into()),
            ("X-Gitea-Signature", hmac_hex("gt-s3cret", body.as_bytes())),
        ],
        body.as_bytes(),
    )
    .await;
    (
        status,
        serde_json::from_str(&reply).unwrap_or(Value::String(reply)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_never_picks_a_factory_by_name() {
    let s = Scene::new();
    let site = Site::new(&ini(
        "treeStable = 0\ngitea_secret = gt-s3cret\nchangeuser = ci\nchangepassword = pa55",
        &["s1"],
        &s.evil_factory(),
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let port = run.master.htmlport();
    // The report's payload: the factory's name as full_name, no clone URL.
    let by_name = json!({"full_name": "evil", "name": "evil"});
    for id in [s.attack(), s.head.clone()] {
        let (status, v) = gitea_push(port, by_name.clone(), &id).await;
        assert_eq!(status, 400, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("names no repository URL") && e.contains("by URL only"),
            "{e}"
        );
    }
    assert!(support::log_has(&[
        "change_hook/gitea: refused a push from",
        "never by the repository's name"
    ]));
    // With a URL, the revision is checked like any other Change's.
    let with_url = json!({"full_name": "evil", "clone_url": "https://forge.example/evil.git"});
    let (status, v) = gitea_push(port, with_url.clone(), &s.attack()).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("`revision` \"--output="),
        "{v}"
    );
    assert!(db.changes(10, None).await.unwrap().is_empty());
    // A good push from a repository no factory uses is stored, and builds nothing.
    let (status, v) = gitea_push(port, with_url, &s.head).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["changes"][0]["repository"],
        "https://forge.example/evil.git"
    );

    // Only the Change sent for the factory builds (Changes are handled in order, so
    // the push's was judged before it).
    let master = format!("127.0.0.1:{}", run.master.slaveport());
    let args: Vec<String> = [
        "--auth",
        "ci:pa55",
        "--master",
        &master,
        "--username",
        "Ann",
        "-r",
        &s.head,
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let out = sendchange(args, s.tmp.path()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let b = wait_finished(&db, "evil-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert_eq!(b.changes.len(), 1, "{:?}", b.changes);
    assert_eq!(b.changes[0].who, "Ann");
    assert_eq!(wait_builds(&db, "evil-s1", 1).await.len(), 1);
    assert!(
        !s.pwned().exists(),
        "the attack wrote {}",
        s.pwned().display()
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_change_for_an_always_use_latest_factory_is_checked_too() {
    let s = Scene::new();
    let factory = format!(
        "[latest]\ntype = shell\ngit = {}#main\nalwaysUseLatest = true\n\
         step.log = git log -1 %(revision)s\n",
        s.repo.url()
    );
    let site = Site::new(&ini(
        "treeStable = 0\npollInterval = 3600\nchangeuser = ci\nchangepassword = pa55",
        &["s1"],
        &factory,
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let port = run.master.htmlport();
    let auth = [
        ("Authorization", change_common::basic("ci", "pa55")),
        ("Content-Type", "application/json".to_string()),
    ];
    let change = |revision: &str| {
        json!({"who": "Eve", "revision": revision, "branch": "main",
               "repository": s.repo.url(), "files": ["README"]})
        .to_string()
    };
    let (status, _, body) = change_common::http(
        port,
        "POST",
        "/api/v1/changes",
        &auth,
        change(&s.attack()).as_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`revision` \\\"--output="), "{body}");
    assert!(body.contains("starts with `-`"), "{body}");
    assert!(db.changes(10, None).await.unwrap().is_empty());

    let (status, _, body) = change_common::http(
        port,
        "POST",
        "/api/v1/changes",
        &auth,
        change(&s.head).as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let b = wait_finished(&db, "latest-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert!(
        !s.pwned().exists(),
        "the attack wrote {}",
        s.pwned().display()
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_build_checks_branch_revision_and_every_property() {
    let s = Scene::new();
    let factory = format!(
        "[evil]\ntype = shell\nstep.log = git -C {} log -1 %(x:-HEAD)s %(revision)s\n",
        s.repo.url()
    );
    let site = Site::new(&ini(
        "treeStable = 0\nchangeuser = ci\nchangepassword = pa55",
        &["s1"],
        &factory,
    ));
    let run = site.start(&["s1"]).await;
    let db = run.db().clone();
    let engine = run.master.engine();
    let props = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let attack = s.attack();
    for (req, want) in [
        (
            ForceRequest {
                properties: props(&[("x", &attack)]),
                ..Default::default()
            },
            "`properties[\"x\"]` \"--output=",
        ),
        (
            ForceRequest {
                properties: props(&[("x", "HEAD\n--output=y")]),
                ..Default::default()
            },
            "control character",
        ),
        (
            ForceRequest {
                properties: props(&[("-x", "v")]),
                ..Default::default()
            },
            "starts with `-`",
        ),
        (
            ForceRequest {
                revision: Some(attack.clone()),
                ..Default::default()
            },
            "`revision` \"--output=",
        ),
        (
            ForceRequest {
                branch: Some(format!(" {attack}")),
                ..Default::default()
            },
            "`branch` \"--output=",
        ),
        (
            ForceRequest {
                who: Some("Eve\r\nX-Injected: 1".into()),
                ..Default::default()
            },
            "`who`",
        ),
    ] {
        let e = engine.force("evil-s1", req).await.unwrap_err().to_string();
        assert!(e.contains(want), "want {want:?}: {e}");
    }
    assert!(db.builds("evil-s1", 10, None).await.unwrap().is_empty());

    let ok = ForceRequest {
        reason: "fine".into(),
        revision: Some(s.head.clone()),
        properties: props(&[("x", "HEAD")]),
        ..Default::default()
    };
    engine.force("evil-s1", ok).await.unwrap();
    let b = wait_finished(&db, "evil-s1", 1).await;
    assert_eq!(b.build.result.as_deref(), Some("success"), "{b:?}");
    assert!(
        !s.pwned().exists(),
        "the attack wrote {}",
        s.pwned().display()
    );
    run.stop().await;
}
