//! Fuzzing what an admin writes (issue 18): `master.ini` (read and validated down
//! to the steps a builder runs), `slave.ini`, the argv splitter of command
//! strings and the cron parser, a few hundred cases a target (the long run is
//! `cargo bench --bench fuzz`), and the regression tests of what the fuzzing
//! found.

#[path = "support/mod.rs"]
mod support;

#[path = "fuzz_common/mod.rs"]
mod fuzz_common;

use fuzz_common::config;

#[test]
fn fuzz_master_ini() {
    println!("{}", config::master(400).line());
}

#[test]
fn fuzz_slave_ini() {
    println!("{}", config::slave(300).line());
}

#[test]
fn fuzz_argv_split() {
    println!("{}", config::argv_split(600).line());
}

#[test]
fn fuzz_cron() {
    println!("{}", config::cron(600).line());
}

// ---------------------------------------------------------------- regressions

use autobot::config::{ConfigError, SlaveIni};
use autobot::schedulers::cron::Cron;

fn load(text: &str) -> Result<autobot::config::MasterConfig, ConfigError> {
    let projects = autobot::config::projects(None).unwrap();
    autobot::config::load_from_str(
        std::path::Path::new("/m/master.ini"),
        std::path::Path::new("/m"),
        text,
        &projects,
    )
}

/// Found by `fuzz_cron`: a step near u32::MAX overflowed (a panic in debug
/// builds, a wrong minute 0 in release ones).
#[test]
fn regression_cron_steps_near_u32_max() {
    for expr in [
        "1/4294967295 * * * *",
        "59/4294967295 * * * *",
        "0-59/4294967295 * * * *",
    ] {
        let c = Cron::parse(expr).unwrap();
        let first: i64 = expr.split(['/', '-']).next().unwrap().parse().unwrap();
        assert!(c.matches(first * 60), "{expr}");
        assert!(!c.matches(((first + 1) % 60) * 60), "{expr}");
    }
}

/// Found by `fuzz_master_ini`: a step option with a non-ASCII character across its
/// fifth byte (`step.x.aéé`) panicked the validation.
#[test]
fn regression_non_ascii_step_option_is_an_error() {
    let e = load("[s]\ntype = shell\nstep.x = true\nstep.x.aéé = 1\n").unwrap_err();
    assert!(e.to_string().contains("master.ini:4"), "{e}");
}

/// Found by `fuzz_master_ini`: a lone carriage return inside a line ended the line
/// for rust-ini but not for the line scanner, and the error named a line past the
/// end of the file ("expecting … but found EOF"). Control characters are now
/// refused on the line that has them; a byte-order mark is skipped.
#[test]
fn regression_control_characters_are_refused_on_their_line() {
    let e = load("[:master:]\npollInterval = \"\r\"\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/m/master.ini:2:") && e.contains("control character '\\r'"),
        "{e}"
    );
    let e = load("[:master:]\nprojectName = a\0b\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/m/master.ini:2:") && e.contains("'\\0'"),
        "{e}"
    );
    assert_eq!(
        load("\u{feff}[:master:]\nslaveport = 9011\n")
            .unwrap()
            .slaveport,
        9011
    );
    assert_eq!(
        load("[:master:]\r\nslaveport = 9012\r\n")
            .unwrap()
            .slaveport,
        9012
    );
}

/// Found by `fuzz_slave_ini`: `master = HOST:0` was accepted though the message
/// says 1 to 65535; `keepalive = 18446744073709551615` was accepted and overflowed
/// the slave's clock arithmetic when it connected; a umask of more than the
/// permission bits was accepted.
#[test]
fn regression_slave_ini_values_are_usable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slave.ini");
    let with = |line: &str| {
        let mut text = String::from("[slave]\nname = s\npassword = pw\n");
        if !line.starts_with("master") {
            text.push_str("master = localhost:9010\n");
        }
        text.push_str(line);
        std::fs::write(&file, text + "\n").unwrap();
        SlaveIni::load(&file)
    };
    for (line, key) in [
        ("master = h:0", "master"),
        ("keepalive = 18446744073709551615", "keepalive"),
        ("keepalive = 86401", "keepalive"),
        ("umask = 7777", "umask"),
    ] {
        let e = with(line).unwrap_err().to_string();
        assert!(e.contains("slave.ini") && e.contains(key), "{line}: {e}");
    }
    let ok = with("keepalive = 86400\numask = 777").unwrap();
    assert_eq!(
        (ok.keepalive, ok.umask, ok.master_port),
        (86400, 0o777, 9010)
    );
}

/// Found by `fuzz_master_ini`: a backslash in a section name (`[\]`) or a key
/// escaped the `]` or the `=` for rust-ini, which then failed on a line past the
/// end of the file; both are now refused on their own line.
#[test]
fn regression_backslashes_in_names_are_refused_on_their_line() {
    let e = load("[:master:]\nslaveport = 9010\n[\\]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/m/master.ini:3:") && e.contains("backslash"),
        "{e}"
    );
    let e = load("[s]\ntype = shell\nstep.x\\ = true\nstep.y = true\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/m/master.ini:3:") && e.contains("backslash"),
        "{e}"
    );
    let ok = load("[s]\ntype = shell\nstep.x = printf 'a\\\\b'\n").unwrap();
    assert_eq!(
        ok.factory("s").unwrap().steps[0].1["command"],
        "printf 'a\\\\b'"
    );
}

/// Found by the long run of `fuzz_master_ini`: `pollInterval =
/// 9223372036854775806` (and any timer near 2^63 s) was accepted, and adding it to
/// a clock overflows. Numbers are now at most ten years in seconds, in
/// `[:master:]` and in factory keys alike.
#[test]
fn regression_timers_fit_in_clock_arithmetic() {
    for (text, line) in [
        ("[:master:]\npollInterval = 9223372036854775806\n", 2),
        ("[:master:]\nkeepaliveInterval = 315360001\n", 2),
        (
            "[f]\ntype = shell\nstep.a = true\nperiodic = 18446744073709551615\n",
            4,
        ),
        (
            "[f]\ntype = shell\nstep.a = true\nstep.a.timeout = 9999999999999\n",
            4,
        ),
    ] {
        let e = load(text).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("/m/master.ini:{line}:")) && e.contains("315360000"),
            "{text:?}: {e}"
        );
    }
    assert_eq!(
        load("[:master:]\npollInterval = 315360000\n")
            .unwrap()
            .poll_interval,
        315_360_000
    );
}
