//! The long fuzz run of issue 18: every fuzz target of `tests/fuzz_*.rs`, each for
//! `--cases N` cases (default 1 000 000), built with optimisations.
//!
//! ```sh
//! cargo bench --bench fuzz                                  # 10^6 cases a target
//! cargo bench --bench fuzz -- --cases 20000                 # a shorter run
//! cargo bench --bench fuzz -- --only config_cron,intake_rfc3339
//! FUZZ_SEED=123 cargo bench --bench fuzz -- --only protocol_frame_decode  # replay
//! ```
//!
//! It prints one line per target (cases, seconds, cases/s, the slowest case, the
//! highest memory peak of a case, the seed) and the total time; a target that
//! finds a bug panics with the minimal failing input and the seed, as the short
//! runs in `cargo test` do.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/fuzz_common/mod.rs"]
mod fuzz_common;

use std::time::Instant;

use fuzz_common::harness::Report;
use fuzz_common::{config, intake, protocol, wire};

type Run = fn(u64) -> Report;

/// Every target, by name.
const TARGETS: &[(&str, Run)] = &[
    ("protocol_frame_decode", protocol::decode),
    ("protocol_master_reads", protocol::master_reads),
    ("protocol_slave_reads", wire::slave_session),
    ("protocol_master_reads_wire", wire::master_session),
    ("config_master_ini", config::master),
    ("config_slave_ini", config::slave),
    ("config_argv_split", config::argv_split),
    ("config_cron", config::cron),
    ("intake_webhook_payloads", intake::webhooks),
    ("intake_rfc3339", intake::rfc3339),
    ("intake_change_json", intake::changes),
    ("intake_sendchange_options", intake::sendchange_options),
    ("intake_master_doors", intake::doors),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let cases: u64 = match value("--cases") {
        Some(n) => n
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("--cases takes a number of cases, not {n:?}")),
        None => 1_000_000,
    };
    let only: Option<Vec<String>> =
        value("--only").map(|s| s.split(',').map(|t| t.trim().to_string()).collect());
    if let Some(names) = &only {
        for n in names {
            assert!(
                TARGETS.iter().any(|(t, _)| t == n),
                "no fuzz target {n:?}; the targets are {}",
                TARGETS
                    .iter()
                    .map(|(t, _)| *t)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    println!(
        "fuzz: {cases} cases a target, seed {}",
        fuzz_common::harness::seed()
    );
    let start = Instant::now();
    let mut total_cases = 0;
    let mut failed = Vec::new();
    for (name, run) in TARGETS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        // A target that finds a bug panics with its input; the others still run.
        match std::panic::catch_unwind(|| run(cases)) {
            Ok(report) => {
                total_cases += report.cases;
                println!("{}", report.line());
            }
            Err(_) => {
                println!("fuzz {name}: FAILED (see the message above)");
                failed.push(*name);
            }
        }
    }
    println!(
        "fuzz total: {total_cases} cases in {:.1} s, {}",
        start.elapsed().as_secs_f64(),
        if failed.is_empty() {
            "no failure".to_string()
        } else {
            format!("FAILED: {}", failed.join(", "))
        }
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
