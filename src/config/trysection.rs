//! The `[try]` section of `master.ini`: who may send try jobs (`autobot try`,
//! Buildbot's try scheduler), which builders they may use and how large a patch
//! may be.
//!
//! ```ini
//! [try]
//! users = alice:pw1 bob:pw2      ; or usersFile = try-users (one NAME:PASSWORD a line)
//! builders = hello-slave1        ; default: every builder
//! maxPatchSize = 10485760        ; bytes, default 10 MiB
//! ```
//!
//! Without a `[try]` section (or without users) try jobs are refused.

use std::collections::BTreeMap;
use std::path::Path;

use super::ini::IniSection;
use super::read::{parse_int, parse_list, section_err, vals, Val};
use super::ConfigError;

/// The default `maxPatchSize`: 10 MiB.
pub const DEFAULT_MAX_PATCH_SIZE: u64 = 10 << 20;

/// The largest `maxPatchSize` accepted: a try job travels as one WebSocket
/// frame (the patch base64-encoded in JSON) and the patch to an autobot slave in
/// one protocol frame, both capped at 16 MiB.
pub const MAX_MAX_PATCH_SIZE: u64 = 11 << 20;

/// The `[try]` section, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryConfig {
    /// Name → password of the developers who may send try jobs.
    pub users: BTreeMap<String, String>,
    /// The builders try jobs may use; empty: every builder.
    pub builders: Vec<String>,
    /// The largest patch accepted, in bytes.
    pub max_patch_size: u64,
    /// Where `builders` was written (file line), for the cross-check.
    pub builders_line: usize,
}

impl Default for TryConfig {
    fn default() -> Self {
        TryConfig {
            users: BTreeMap::new(),
            builders: Vec::new(),
            max_patch_size: DEFAULT_MAX_PATCH_SIZE,
            builders_line: 0,
        }
    }
}

/// Read `[try]`; `basedir` resolves a relative `usersFile`.
pub(super) fn read_try(
    file: &Path,
    basedir: &Path,
    sec: &IniSection,
) -> Result<TryConfig, ConfigError> {
    let mut out = TryConfig::default();
    let mut users_val: Option<Val> = None;
    for v in vals(file, sec) {
        match v.key.as_str() {
            "users" => {
                for word in parse_list(&v.value) {
                    add_user(&mut out.users, &word, &v)?;
                }
                users_val = Some(v);
            }
            "usersfile" => {
                let path = basedir.join(v.value.trim());
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| v.err(format!("cannot read {}: {e}", path.display())))?;
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let at = Val {
                        raw_key: format!("{} ({}:{})", v.raw_key, path.display(), i + 1),
                        ..v.clone()
                    };
                    add_user(&mut out.users, line, &at)?;
                }
                users_val = Some(v);
            }
            "builders" => {
                out.builders = parse_list(&v.value);
                out.builders_line = v.line;
            }
            "maxpatchsize" => {
                let n = parse_int(&v, 1)?;
                if n > MAX_MAX_PATCH_SIZE {
                    return Err(v.err(format!(
                        "at most {MAX_MAX_PATCH_SIZE} bytes (a try job is one WebSocket message), got {n}"
                    )));
                }
                out.max_patch_size = n;
            }
            _ => {
                return Err(v.err(
                    "unknown key in [try]; accepted keys: users, usersFile, builders, maxPatchSize",
                ))
            }
        }
    }
    if out.users.is_empty() {
        return Err(match users_val {
            Some(v) => v.err("no NAME:PASSWORD pair; write `users = alice:SECRET`"),
            None => section_err(
                file,
                sec.line,
                "try",
                "no users: write `users = NAME:PASSWORD ...` or `usersFile = FILE`, or remove the section to refuse try jobs",
            ),
        });
    }
    Ok(out)
}

fn add_user(users: &mut BTreeMap<String, String>, word: &str, v: &Val) -> Result<(), ConfigError> {
    match word.split_once(':') {
        Some((name, pw)) if !name.is_empty() && !pw.is_empty() => {
            users.insert(name.to_string(), pw.to_string());
            Ok(())
        }
        _ => Err(v.err(format!(
            "{word:?} is not NAME:PASSWORD; write e.g. `users = alice:SECRET bob:OTHER`"
        ))),
    }
}
