//! `autobot force` and `autobot stop-build`: the CLI side of the master's JSON API.
//!
//! Both find the master's `htmlport` in its `master.ini` and talk HTTP to it, the
//! same API the web pages use. `force --wait` follows the BuildRequest to its Build
//! and shows an indicatif progress bar over the steps (with the ETA the master
//! derives from the builder's last successful build), then exits 0 only if the
//! build succeeded.

use anyhow::{anyhow, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::daemon::{daemons_in, Role};
use super::http;

#[derive(Debug, Args)]
pub struct ForceArgs {
    /// The master directory (or a pair made by `create`).
    pub dir: PathBuf,
    /// The builder, `FACTORY-SLAVE` (see `autobot checkconfig DIR`).
    pub builder: String,
    /// Why the build is forced; shown on the build.
    #[arg(long, default_value = "forced from the command line")]
    pub reason: String,
    /// Branch to build [default: the factory's branch].
    #[arg(long)]
    pub branch: Option<String>,
    /// Revision to build [default: the newest].
    #[arg(long)]
    pub revision: Option<String>,
    /// Who forces it [default: $USER].
    #[arg(long)]
    pub who: Option<String>,
    /// Wait for the build, showing its progress; exit 0 only if it succeeded.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct StopBuildArgs {
    /// The master directory (or a pair made by `create`).
    pub dir: PathBuf,
    /// The builder, `FACTORY-SLAVE`.
    pub builder: String,
    /// The build number.
    pub number: u64,
    /// Why it is stopped; shown on the build.
    #[arg(long, default_value = "stopped from the command line")]
    pub reason: String,
}

/// Where a master directory's JSON API listens.
fn api_port(dir: &Path) -> anyhow::Result<u16> {
    let master = daemons_in(dir)?
        .into_iter()
        .find(|(r, _)| *r == Role::Master)
        .map(|(_, d)| d)
        .ok_or_else(|| anyhow!("{} holds no master", dir.display()))?;
    let cfg = crate::config::load(&master.join("master.ini"))?;
    Ok(cfg.htmlport)
}

fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn get_json(port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
    let reply = http::request("127.0.0.1", port, "GET", path, None)?;
    if reply.status != 200 {
        bail!("GET {path}: HTTP {}: {}", reply.status, reply.error_text());
    }
    reply.json()
}

/// `autobot force`; returns whether the command succeeded (with --wait: the build).
pub fn force_cmd(args: &ForceArgs) -> anyhow::Result<bool> {
    let port = api_port(&args.dir)?;
    let who = args
        .who
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "autobot".into());
    let body = serde_json::json!({
        "reason": args.reason,
        "branch": args.branch,
        "revision": args.revision,
        "who": who,
    });
    let path = format!("/api/v1/builders/{}/force", path_segment(&args.builder));
    let reply = http::request("127.0.0.1", port, "POST", &path, Some(&body))?;
    if !(200..300).contains(&reply.status) {
        bail!("cannot force {}: {}", args.builder, reply.error_text());
    }
    let forced = reply.json()?;
    let request = forced["request_id"]
        .as_i64()
        .ok_or_else(|| anyhow!("the master's answer has no request_id: {forced}"))?;
    println!(
        "forced a build of {}: BuildRequest {request} (BuildSet {})",
        args.builder, forced["buildset_id"]
    );
    if !args.wait {
        return Ok(true);
    }
    wait_for_request(port, &args.builder, request)
}

/// Follow a BuildRequest through its build(s) until it is complete.
fn wait_for_request(port: u16, builder: &str, request: i64) -> anyhow::Result<bool> {
    let builder_path = path_segment(builder);
    let mut followed: Vec<i64> = Vec::new();
    loop {
        let req = get_json(port, &format!("/api/v1/buildrequests/{request}"))?;
        let builds: Vec<i64> = req["builds"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n.as_i64()).collect())
            .unwrap_or_default();
        if let Some(&number) = builds.iter().find(|n| !followed.contains(n)) {
            followed.push(number);
            let result = follow_build(port, &builder_path, builder, number)?;
            if req["complete"] == true || result != "exception" {
                // An EXCEPTION may be re-queued (master restart, slave lost): go on.
                let req = get_json(port, &format!("/api/v1/buildrequests/{request}"))?;
                if req["complete"] == true {
                    return Ok(result == "success");
                }
            }
            continue;
        }
        if req["complete"] == true {
            let result = req["result"].as_str().unwrap_or("unknown");
            println!("BuildRequest {request} completed: {result}");
            return Ok(result == "success");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Show one build's progress until it finishes; its result.
fn follow_build(
    port: u16,
    builder_path: &str,
    builder: &str,
    number: i64,
) -> anyhow::Result<String> {
    use indicatif::{ProgressBar, ProgressStyle};
    let path = format!("/api/v1/builders/{builder_path}/builds/{number}");
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{builder} #{number}"));
    let mut printed = 0usize;
    let started = Instant::now();
    loop {
        let build = get_json(port, &path)?;
        let steps = build["steps"].as_array().cloned().unwrap_or_default();
        let total = build["total_steps"]
            .as_u64()
            .unwrap_or(steps.len() as u64)
            .max(1);
        bar.set_length(total);
        let done: Vec<&serde_json::Value> =
            steps.iter().filter(|s| !s["result"].is_null()).collect();
        for s in done.iter().skip(printed) {
            let line = format!(
                "  step {} {}: {}{}",
                s["number"],
                s["name"].as_str().unwrap_or("?"),
                s["result"].as_str().unwrap_or("?"),
                s["text"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            );
            // A hidden bar (output not a terminal) prints nothing of its own.
            if bar.is_hidden() {
                println!("{line}");
            } else {
                bar.println(line);
            }
        }
        printed = done.len();
        bar.set_position(done.len() as u64);
        let running = steps
            .iter()
            .find(|s| s["result"].is_null() && !s["started_at"].is_null());
        let eta = build["eta"]
            .as_f64()
            .map(|e| format!(", ETA {e:.0} s"))
            .unwrap_or_default();
        bar.set_message(match running {
            Some(s) => format!("{}{eta}", s["name"].as_str().unwrap_or("")),
            None => format!("waiting{eta}"),
        });
        if let Some(result) = build["result"].as_str() {
            bar.finish_and_clear();
            println!(
                "{builder} build {number}: {result}{} in {:.1} s",
                build["text"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default(),
                started.elapsed().as_secs_f64()
            );
            return Ok(result.to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `autobot stop-build`.
pub fn stop_build_cmd(args: &StopBuildArgs) -> anyhow::Result<()> {
    let port = api_port(&args.dir)?;
    let path = format!(
        "/api/v1/builders/{}/builds/{}/stop",
        path_segment(&args.builder),
        args.number
    );
    let who = std::env::var("USER").unwrap_or_default();
    let body = serde_json::json!({ "reason": args.reason, "who": who });
    let reply = http::request("127.0.0.1", port, "POST", &path, Some(&body))?;
    if reply.status != 200 {
        bail!(
            "cannot stop {} build {}: {}",
            args.builder,
            args.number,
            reply.error_text()
        );
    }
    println!("stopped {} build {}", args.builder, args.number);
    Ok(())
}
