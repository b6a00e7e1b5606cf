//! What the slave tells the master about itself (`get_worker_info`).
//!
//! The keys are the worker's (`environ`, `system`, `basedir`, `numcpus`, `version`,
//! `worker_commands`, `delete_leftover_dirs`, the `info/*` files such as `admin` and
//! `host`, and `os_*` from `/etc/os-release`) plus autobot's `os` and
//! `autobot_text_output`. The one deliberate difference: `environ` is always empty,
//! because a slave's environment often holds secrets and the master must never see,
//! store or show them. The `info/*` files are opened beneath the basedir (a link
//! out of it is not followed), as every other file the slave reads for the master.

use std::io::Read;
use std::path::Path;

use nix::fcntl::OFlag;
use rmpv::Value;

use super::commands::COMMANDS;
use super::paths::Jail;
use super::tree;

/// Most of one `info/*` file that is sent.
const INFO_MAX: u64 = 64 * 1024;

/// `linux`, `mac` or `win`, as `os =` in master.ini names them.
pub fn os_name() -> &'static str {
    if cfg!(target_os = "linux") {
        "linux"
    } else if cfg!(target_os = "macos") {
        "mac"
    } else if cfg!(windows) {
        "win"
    } else {
        std::env::consts::OS
    }
}

/// The `get_worker_info` result for a slave confined to `jail`.
pub fn worker_info(jail: &Jail) -> Value {
    let basedir = jail.root();
    let mut entries: Vec<(Value, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| {
        if let Some(slot) = entries.iter_mut().find(|(key, _)| key.as_str() == Some(k)) {
            slot.1 = v;
        } else {
            entries.push((Value::from(k), v));
        }
    };
    for (k, v) in info_files(jail) {
        put(&k, Value::from(v));
    }
    for (k, v) in os_release(Path::new("/etc/os-release")) {
        put(&k, Value::from(v));
    }
    put("environ", Value::Map(Vec::new()));
    put("system", Value::from("posix"));
    put("basedir", Value::from(basedir.display().to_string()));
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    put("numcpus", Value::from(cpus as u64));
    put("version", Value::from(crate::VERSION));
    put(
        "worker_commands",
        Value::Map(
            COMMANDS
                .iter()
                .map(|(name, version)| (Value::from(*name), Value::from(*version)))
                .collect(),
        ),
    );
    put("delete_leftover_dirs", Value::from(false));
    put("os", Value::from(os_name()));
    // An autobot master may then ask for output as plain text
    // (`set_worker_settings` with `output_format = "text"`).
    put("autobot_text_output", Value::from(true));
    Value::Map(entries)
}

/// Every regular file of `info/`, by name, with its contents.
fn info_files(jail: &Jail) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = jail.at(Path::new("info"));
    let Ok(names) = tree::list(jail, &dir) else {
        return out;
    };
    for n in names {
        let Some(name) = n.to_str().map(str::to_string) else {
            continue;
        };
        let path = dir.join(&n);
        let read = jail
            .open(&path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)
            .map(std::fs::File::from)
            .and_then(|f| {
                if !f.metadata()?.is_file() {
                    return Ok(None);
                }
                let mut bytes = Vec::new();
                f.take(INFO_MAX).read_to_end(&mut bytes)?;
                Ok(Some(bytes))
            });
        match read {
            Ok(Some(bytes)) => out.push((name, String::from_utf8_lossy(&bytes).into_owned())),
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot read {}: {e}", path.shown().display()),
        }
    }
    out.sort();
    out
}

/// `/etc/os-release` as `os_<key>` entries (as the worker sends them).
fn os_release(path: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            (
                format!("os_{}", k.to_lowercase()),
                v.trim_matches('"').to_string(),
            )
        })
        .collect()
}
