//! Unit tests of the change hooks ([`super`]): forge signatures, each forge's
//! push payload, RFC 3339 times, hook secrets from `master.ini`, and pushes
//! matched to pollers by repository URL. Kept apart so the hooks' own file stays
//! under a thousand lines.

use super::*;

fn sign(secret: &str, body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&k, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().unwrap());
    }
    h
}

const GITHUB_PUSH: &str = r#"{
  "ref": "refs/heads/main",
  "repository": {"full_name": "o/r", "clone_url": "https://github.com/o/r.git",
                 "html_url": "https://github.com/o/r", "ssh_url": "git@github.com:o/r.git"},
  "commits": [
    {"id": "a1", "message": "one", "timestamp": "2015-05-05T19:40:15-04:00",
     "url": "https://github.com/o/r/commit/a1",
     "author": {"name": "Ann", "email": "ann@x"},
     "added": ["new.c"], "removed": [], "modified": ["README", "new.c"]},
    {"id": "b2", "message": "two", "timestamp": "2015-05-05T23:41:00Z",
     "author": {"name": "Bob", "email": "bob@x"},
     "added": [], "removed": ["old.c"], "modified": []}
  ]}"#;

#[test]
fn github_push_is_one_change_per_commit() {
    let HookEvent::Push(p) =
        parse_event(Forge::GitHub, Some("push"), GITHUB_PUSH.as_bytes()).unwrap()
    else {
        panic!("not a push")
    };
    assert_eq!(p.branch.as_deref(), Some("main"));
    assert_eq!(p.repo_urls[0], "https://github.com/o/r.git");
    assert_eq!(p.repo_name, "o/r");
    assert_eq!(p.changes.len(), 2);
    let a = &p.changes[0];
    assert_eq!(a.who, "Ann <ann@x>");
    assert_eq!(a.files, vec!["new.c", "README"]);
    assert_eq!(a.revision.as_deref(), Some("a1"));
    assert_eq!(a.when, 1430869215);
    assert_eq!(a.links, vec!["https://github.com/o/r/commit/a1"]);
    assert_eq!(p.changes[1].files, vec!["old.c"]);
    assert_eq!(p.changes[1].when, 1430869260);
}

#[test]
fn ping_tags_and_other_events() {
    assert_eq!(
        parse_event(Forge::GitHub, Some("ping"), b"{}").unwrap(),
        HookEvent::Ping
    );
    assert_eq!(
        parse_event(Forge::GitHub, Some("issues"), b"{}").unwrap(),
        HookEvent::Other("issues".into())
    );
    let tag = br#"{"ref":"refs/tags/v1","commits":[]}"#;
    let HookEvent::Push(p) = parse_event(Forge::Gitea, Some("push"), tag).unwrap() else {
        panic!()
    };
    assert_eq!(p.branch, None);
    assert!(parse_event(Forge::GitHub, Some("push"), b"payload=%7B").is_err());
}

#[test]
fn gitlab_push_parses() {
    let body = br#"{"object_kind":"push","ref":"refs/heads/dev",
      "project":{"path_with_namespace":"g/p","git_http_url":"https://gl/g/p.git",
                 "web_url":"https://gl/g/p"},
      "commits":[{"id":"c3","message":"m","timestamp":"2011-12-12T14:27:31+02:00",
                  "author":{"name":"Cy","email":"cy@x"},
                  "added":["x"],"modified":[],"removed":[]}]}"#;
    for event in [Some("Push Hook"), None] {
        let HookEvent::Push(p) = parse_event(Forge::GitLab, event, body).unwrap() else {
            panic!()
        };
        assert_eq!(p.branch.as_deref(), Some("dev"));
        assert_eq!(p.repo_urls[0], "https://gl/g/p.git");
        assert_eq!(p.repo_name, "g/p");
        assert_eq!(p.changes[0].who, "Cy <cy@x>");
        assert_eq!(p.changes[0].when, 1323692851);
    }
}

#[test]
fn gitea_null_file_lists_are_empty() {
    let body = br#"{"ref":"refs/heads/main","repository":{"full_name":"o/r",
      "clone_url":"https://gt/o/r.git"},"commits":[{"id":"d4","message":"m",
      "author":{"name":"Di","email":"di@x"},"added":null,"modified":null,"removed":null,
      "timestamp":"2017-03-13T13:52:11+08:00"}]}"#;
    let HookEvent::Push(p) = parse_event(Forge::Gitea, Some("push"), body).unwrap() else {
        panic!()
    };
    assert!(p.changes[0].files.is_empty());
    assert_eq!(p.changes[0].when, 1489384331);
}

#[test]
fn signatures_are_checked() {
    let body = b"{\"x\":1}";
    let good = sign("s3cret", body);
    let gh = headers(&[("x-hub-signature-256", format!("sha256={good}"))]);
    assert_eq!(verify(Forge::GitHub, "s3cret", &gh, body), Ok(()));
    assert!(matches!(
        verify(Forge::GitHub, "other", &gh, body),
        Err(HookAuthError::Mismatch(..))
    ));
    assert!(matches!(
        verify(Forge::GitHub, "s3cret", &gh, b"{\"x\":2}"),
        Err(HookAuthError::Mismatch(..))
    ));
    assert!(matches!(
        verify(Forge::GitHub, "s3cret", &HeaderMap::new(), body),
        Err(HookAuthError::Missing(..))
    ));
    let bad = headers(&[("x-hub-signature-256", "sha256=zz".to_string())]);
    assert!(matches!(
        verify(Forge::GitHub, "s3cret", &bad, body),
        Err(HookAuthError::Malformed(..))
    ));
    let gt = headers(&[("x-gitea-signature", good)]);
    assert_eq!(verify(Forge::Gitea, "s3cret", &gt, body), Ok(()));
    let gl = headers(&[("x-gitlab-token", "s3cret".to_string())]);
    assert_eq!(verify(Forge::GitLab, "s3cret", &gl, body), Ok(()));
    assert!(verify(Forge::GitLab, "s3cre", &gl, body).is_err());
}

#[test]
fn rfc3339_times() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_rfc3339("2000-03-01T00:00:00.123+00:00"),
        Some(951868800)
    );
    assert_eq!(parse_rfc3339("2024-02-29T12:00:00-01:30"), Some(1709213400));
    assert_eq!(parse_rfc3339("yesterday"), None);
    assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
    // The calendar is checked: no 31 February, no hour 25, no minute 61.
    assert_eq!(parse_rfc3339("2024-02-31T00:00:00Z"), None);
    assert_eq!(parse_rfc3339("2024-02-28T25:61:61Z"), None);
    assert_eq!(parse_rfc3339("2023-02-29T00:00:00Z"), None);
    // A local time names no instant.
    assert_eq!(parse_rfc3339("2024-02-28T10:00:00"), None);
    assert_eq!(parse_rfc3339(" 2024-05-05t19:40:15z "), Some(1714938015));
}

#[test]
fn secrets_come_from_master_ini() {
    let cfg = crate::config::load_from_str(
        std::path::Path::new("/m/master.ini"),
        std::path::Path::new("/m"),
        "[:master:]\nGitHub_Secret = a\ngitea_secret = c\n",
        &[],
    )
    .unwrap();
    assert_eq!(Forge::GitHub.secret(&cfg), "a");
    assert_eq!(Forge::GitLab.secret(&cfg), "");
    assert_eq!(Forge::Gitea.secret(&cfg), "c");
}

#[test]
fn pollers_are_found_by_url_without_credentials() {
    let cfg = crate::config::load_from_str(
        std::path::Path::new("/m/master.ini"),
        std::path::Path::new("/m"),
        "[w]\ntype = source\ngit = https://bot:tok@forge.example/o/r.git#dev\n",
        &[],
    )
    .unwrap();
    let found = pollers_of(&cfg, "https://forge.example/o/r");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].branches, vec!["dev"]);
    assert_eq!(found[0].project, "w");
    assert_eq!(redact_url(&found[0].url), "https://forge.example/o/r.git");
    assert!(pollers_of(&cfg, "https://forge.example/o/other.git").is_empty());
}

#[test]
fn repository_urls_compare_loosely() {
    assert!(same_repo("https://x/o/r.git", "https://x/o/r/"));
    assert!(same_repo("https://X/o/R", "https://x/o/r"));
    assert!(!same_repo("https://x/o/r", "https://x/o/rr"));
}

fn pull_of(forge: Forge, event: &str, body: serde_json::Value) -> HookEvent {
    parse_event(forge, Some(event), body.to_string().as_bytes()).unwrap()
}

fn github_pull(action: &str, head_repo: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "action": action, "number": 12,
        "pull_request": {
            "number": 12, "title": "-rf\u{7}  Fix it", "html_url": "javascript:alert(1)",
            "user": {"login": "ann"},
            "head": {"ref": "topic", "sha": "c0ffee", "repo": head_repo},
            "base": {"ref": "main", "repo": {"full_name": "o/r", "clone_url": "https://github.com/o/r.git"}}
        },
        "repository": {"full_name": "o/r", "clone_url": "https://github.com/o/r.git"}
    })
}

#[test]
fn github_and_gitea_pull_requests_become_one_pull_change() {
    let same = serde_json::json!({"full_name": "o/r", "clone_url": "https://github.com/o/r.git"});
    for (forge, action) in [
        (Forge::GitHub, "opened"),
        (Forge::GitHub, "synchronize"),
        (Forge::GitHub, "reopened"),
        (Forge::Gitea, "synchronized"),
    ] {
        let HookEvent::Pull(p) = pull_of(forge, "pull_request", github_pull(action, same.clone()))
        else {
            panic!("{action}: not a pull request")
        };
        assert_eq!(p.repo_urls[0], "https://github.com/o/r.git");
        assert_eq!(p.change.category, PULL_CATEGORY);
        assert_eq!(p.change.revision.as_deref(), Some("c0ffee"));
        assert_eq!(p.change.branch.as_deref(), Some("main"));
        assert_eq!(p.change.who, "ann");
        assert_eq!(p.properties["pr_number"], "12");
        // No control characters, never read as an option.
        assert_eq!(p.properties["pr_title"], "rf   Fix it");
        assert_eq!(p.properties["pr_head_ref"], "topic");
        assert_eq!(p.properties["pr_base_branch"], "main");
        // Not an http(s) link: dropped.
        assert!(!p.properties.contains_key("pr_url"));
        assert!(!p.properties.contains_key("pr_from_fork"));
    }
    for action in ["closed", "edited", "labeled"] {
        let e = pull_of(
            Forge::GitHub,
            "pull_request",
            github_pull(action, same.clone()),
        );
        assert!(matches!(e, HookEvent::Other(_)), "{action}: {e:?}");
    }
    // From a fork (or a deleted one): untrusted.
    for head in [
        serde_json::json!({"full_name": "x/r", "clone_url": "https://github.com/x/r.git"}),
        serde_json::Value::Null,
    ] {
        let HookEvent::Pull(p) =
            pull_of(Forge::GitHub, "pull_request", github_pull("opened", head))
        else {
            panic!("not a pull request")
        };
        assert_eq!(p.properties["pr_from_fork"], "true");
    }
}

#[test]
fn gitlab_merge_requests_open_reopen_and_new_commits() {
    let mr = |action: &str, oldrev: Option<&str>, source: u64| {
        serde_json::json!({
            "object_kind": "merge_request", "user": {"username": "bob", "name": "Bob"},
            "project": {"path_with_namespace": "g/p", "git_http_url": "https://gitlab.com/g/p.git"},
            "object_attributes": {
                "iid": 3, "title": "T", "url": "https://gitlab.com/g/p/-/merge_requests/3",
                "action": action, "oldrev": oldrev, "source_branch": "f", "target_branch": "dev",
                "source_project_id": source, "target_project_id": 1,
                "last_commit": {"id": "abc123"}
            }
        })
    };
    for (action, oldrev) in [("open", None), ("reopen", None), ("update", Some("0ld"))] {
        let HookEvent::Pull(p) =
            pull_of(Forge::GitLab, "Merge Request Hook", mr(action, oldrev, 1))
        else {
            panic!("{action}: not a merge request")
        };
        assert_eq!(p.change.revision.as_deref(), Some("abc123"));
        assert_eq!(p.change.branch.as_deref(), Some("dev"));
        assert_eq!(p.change.who, "bob");
        assert_eq!(p.properties["pr_forge"], "gitlab");
        assert_eq!(
            p.properties["pr_url"],
            "https://gitlab.com/g/p/-/merge_requests/3"
        );
        assert!(!p.properties.contains_key("pr_from_fork"));
    }
    for (action, oldrev) in [("update", None), ("close", None), ("merge", None)] {
        let e = pull_of(Forge::GitLab, "Merge Request Hook", mr(action, oldrev, 1));
        assert!(matches!(e, HookEvent::Other(_)), "{action}: {e:?}");
    }
    let HookEvent::Pull(p) = pull_of(Forge::GitLab, "Merge Request Hook", mr("open", None, 9))
    else {
        panic!("not a merge request")
    };
    assert_eq!(p.properties["pr_from_fork"], "true");
}
