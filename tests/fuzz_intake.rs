//! Fuzzing the ways a Change comes in (issue 18): the GitHub, GitLab and Gitea
//! push payloads and signatures, RFC 3339 times, the Change JSON of `sendchange`
//! and `POST /api/v1/changes`, `sendchange`'s options and master address, and all
//! of the master's doors at once over real HTTP and WebSocket, a few hundred cases
//! a target (the long run is `cargo bench --bench fuzz`), and the regression
//! tests of what the fuzzing found.

#[path = "support/mod.rs"]
mod support;

#[path = "fuzz_common/mod.rs"]
mod fuzz_common;

use fuzz_common::intake;

#[test]
fn fuzz_webhook_payloads() {
    println!("{}", intake::webhooks(500).line());
}

#[test]
fn fuzz_rfc3339_times() {
    println!("{}", intake::rfc3339(500).line());
}

#[test]
fn fuzz_change_json() {
    println!("{}", intake::changes(500).line());
}

#[test]
fn fuzz_sendchange_options() {
    println!("{}", intake::sendchange_options(500).line());
}

#[test]
fn fuzz_master_doors() {
    println!("{}", intake::doors(300).line());
}

// ---------------------------------------------------------------- regressions

use autobot::changes::submit::SubmitReply;
use autobot::web::change_hook::{parse_event, Forge, MAX_JSON_READ};
use fuzz_common::harness::{mark, peak_since};

/// Found by `fuzz_webhook_payloads`: every commit of a push became a Change, so a
/// signed payload of millions of empty commits (`{}`, 3 bytes each) took some
/// 250 bytes of memory per byte, and as many Changes.
#[test]
fn regression_a_push_carries_at_most_4096_commits() {
    let body = format!(
        "{{\"ref\":\"refs/heads/main\",\"commits\":[{}]}}",
        vec!["{}"; 5000].join(",")
    );
    let e = parse_event(Forge::GitHub, Some("push"), body.as_bytes()).unwrap_err();
    assert!(e.contains("5000 commits") && e.contains("4096"), "{e}");
    let ok = format!(
        "{{\"ref\":\"refs/heads/main\",\"commits\":[{}]}}",
        vec!["{}"; 2048].join(",")
    );
    assert!(parse_event(Forge::GitHub, Some("push"), ok.as_bytes()).is_ok());
}

/// Found by `fuzz_webhook_payloads`: small JSON objects read into values some 60
/// times their size, so a 16 MiB payload could take a gigabyte before anything
/// looked at it. A body is now measured first and refused past 64 MiB.
#[test]
fn regression_json_bodies_are_measured_before_they_are_read() {
    let n = 3 << 20;
    let mut body = String::with_capacity(n * 8 + 64);
    body.push_str("{\"ref\":\"refs/heads/main\",\"x\":[");
    for i in 0..n / 8 {
        if i > 0 {
            body.push(',');
        }
        body.push_str("{\"a\":1}");
    }
    body.push_str("]}");
    let base = mark();
    let e = parse_event(Forge::Gitea, Some("push"), body.as_bytes()).unwrap_err();
    let used = peak_since(base);
    assert!(e.contains("MiB to read"), "{e}");
    assert!(used < 1 << 20, "refusing took {used} bytes");
    assert!(autobot::web::change_hook::json_read_size(body.as_bytes()) > MAX_JSON_READ);
}

/// Found while bounding memory: the slave port's `/change` socket takes 64 MiB
/// messages, and `"files": ["", "", …]` read into some 16 bytes per byte. A
/// Change message is now at most 4 MiB there, as on `POST /api/v1/changes`.
#[test]
fn regression_sendchange_messages_are_capped() {
    let mut body = String::from("{\"who\":\"ann\",\"files\":[");
    body.push_str(&vec!["\"\""; 2 << 20].join(","));
    body.push_str("]}");
    match fuzz_common::intake::sendchange_once(body.as_bytes()).unwrap() {
        SubmitReply::Error(e) => assert!(e.contains("at most 4194304"), "{e}"),
        other => panic!("a 6 MiB Change was taken: {other:?}"),
    }
}
