//! Benchmark of issue 27's redaction budget: a step printing 100 MB
//! (`--log-bytes N`) on a master with no secrets, then on one with 5 secrets
//! (`secretsDir`), master and slave as real daemons (`autobot start`); every
//! byte of the second run's output goes through the master's redaction of every
//! form of every secret. Budget: redaction costs at most 10 % of the step's time.
//!
//! Figures (`name value unit`): each run's step duration and the master's CPU
//! seconds during it, the overhead of the secrets in both, and — measured in
//! this process, steady and free of the slave's and the disk's noise — the
//! redactor alone over the same bytes in the slave's 256 KiB chunks, as a share
//! of the step without secrets (`redaction_share_of_step`, the budgeted figure).
//!
//! Run with `cargo bench --bench secrets` (release build) on a quiet machine;
//! `cargo test --bench secrets -- --log-bytes 5000000` runs it small in debug.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The secrets of the second run: realistic lengths (a token, a password, a
/// key id, a webhook secret, a multi-line key).
fn secrets() -> BTreeMap<String, String> {
    [
        ("GITHUB_TOKEN", "ghp_R4nd0mT0k3nV4lu3F0rB3nch1ng0123456"),
        ("PYPI_PASSWORD", "pypi-AgEIcHlwaS5vcmcCJGJlbmNo"),
        ("AWS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        ("HOOK_SECRET", "s3cr3t/with+chars&more"),
        (
            "DEPLOY_KEY",
            "-----BEGIN KEY-----\nMIIEpAIBAAKCAQEA7bench\n-----END KEY-----",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn get_json(port: u16, path: &str) -> Value {
    let r = autobot::cli::http::request("127.0.0.1", port, "GET", path, None)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    r.json().unwrap()
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The line the step prints, over and over.
const LINE: &str =
    "0123456789012345678901234567890123456789012345678901234567890123456789012345678";

/// One master (with or without secrets) and slave: the big step's duration and
/// the master's CPU seconds while it ran.
fn run(tmp: &Path, name: &str, with_secrets: bool, log_bytes: u64) -> (f64, f64) {
    let mdir = tmp.join(format!("{name}-master"));
    let sdir = tmp.join(format!("{name}-slave"));
    std::fs::create_dir_all(&mdir).unwrap();
    let mut extra = String::new();
    if with_secrets {
        let d = mdir.join("secrets");
        std::fs::create_dir_all(&d).unwrap();
        for (k, v) in secrets() {
            std::fs::write(d.join(&k), v).unwrap();
            std::fs::set_permissions(d.join(&k), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        extra.push_str("secretsDir = secrets\n");
    }
    let (sp, hp, pp) = (free_port(), free_port(), free_port());
    std::fs::write(
        mdir.join("master.ini"),
        format!(
            "[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {pp}\npassword = pw\n\
             factories = *\n{extra}[slave:s1]\n\n\
             [big]\ntype = shell\nstep.yes = sh -c \"yes {LINE} | head -c {log_bytes}\"\n"
        ),
    )
    .unwrap();
    autobot(&["start", mdir.to_str().unwrap()]);
    start_slave_daemon(&sdir, sp, hp, "s1");
    let mpid = pid_of(&mdir);
    let cpu0 = cpu_secs(mpid);
    let r = autobot::cli::http::request(
        "127.0.0.1",
        hp,
        "POST",
        "/api/v1/builders/big-s1/force",
        Some(&serde_json::json!({"reason": "bench"})),
    )
    .unwrap();
    let id = r.json().unwrap()["request_id"].as_i64().unwrap();
    wait_until("the big build", Duration::from_secs(600), || {
        get_json(hp, &format!("/api/v1/buildrequests/{id}"))["result"].is_string()
    });
    let cpu = cpu_secs(mpid) - cpu0;
    let detail = get_json(hp, "/api/v1/builders/big-s1/builds/1");
    assert_eq!(detail["result"], "success", "{detail}");
    let step = &detail["steps"][0];
    let secs = step["finished_at"].as_f64().unwrap() - step["started_at"].as_f64().unwrap();
    autobot(&["stop", sdir.to_str().unwrap()]);
    autobot(&["stop", mdir.to_str().unwrap()]);
    (secs, cpu)
}

/// The redactor alone over `log_bytes` of the step's output in 256 KiB chunks
/// (what an autobot slave sends): seconds.
fn redactor_alone(log_bytes: u64) -> f64 {
    let s = autobot::secrets::Secrets::from_values(None, secrets());
    let r = Arc::clone(s.redactor().unwrap());
    let mut chunk = String::new();
    while chunk.len() < 256 * 1024 {
        chunk.push_str(LINE);
        chunk.push('\n');
    }
    println!("# redactor: {}", r.describe());
    let mut stream = autobot::secrets::StreamRedactor::new(r);
    let t0 = Instant::now();
    let mut done = 0u64;
    let mut out = 0usize;
    while done < log_bytes {
        let (first, second) = stream.push_owned(chunk.clone());
        out += first.len() + second.len();
        done += chunk.len() as u64;
    }
    out += stream.finish().len();
    assert!(out as u64 >= done);
    t0.elapsed().as_secs_f64()
}

fn main() {
    let log_bytes = opt("--log-bytes", 100_000_000);
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "# autobot {} secrets bench; binary {}; {} MB step",
        autobot::VERSION,
        *EXE,
        log_bytes / 1_000_000
    );
    let (plain, plain_cpu) = run(tmp.path(), "plain", false, log_bytes);
    let (secret, secret_cpu) = run(tmp.path(), "secrets", true, log_bytes);
    report("step_no_secrets", plain, "s", None, true);
    report("step_5_secrets", secret, "s", None, true);
    report(
        "step_overhead",
        (secret - plain) / plain * 100.0,
        "%",
        None,
        true,
    );
    report("master_cpu_no_secrets", plain_cpu, "s", None, true);
    report("master_cpu_5_secrets", secret_cpu, "s", None, true);
    let alone = redactor_alone(log_bytes);
    report("redactor_alone", alone, "s", None, true);
    report(
        "redactor_mb_per_s",
        log_bytes as f64 / 1e6 / alone,
        "MB/s",
        None,
        false,
    );
    let share = alone / plain * 100.0;
    report("redaction_share_of_step", share, "%", None, true);
    println!(
        "# budget: redaction_share_of_step <= 10 %: {}",
        if share <= 10.0 { "met" } else { "NOT met" }
    );
}
