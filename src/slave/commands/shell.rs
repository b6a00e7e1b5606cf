//! The `shell` command's arguments (`buildbot_worker/commands/shell.py` and the
//! argument handling of `runprocess.py`).
//!
//! `command` is an argv list (items may be `['obfuscated', real, shown]`) or a string
//! run by `/bin/sh -c`. `env` values are strings, lists (joined with `:`) or nil (the
//! variable is removed); `${NAME}` in a value is replaced by the slave's own `NAME`;
//! `PYTHONPATH` gets the slave's `PYTHONPATH` appended. `workdir` and every logfile
//! are resolved inside the basedir here, and opened beneath it again when used
//! (see `process.rs`).

use std::ffi::OsString;
use std::str::FromStr;

use nix::sys::signal::Signal;
use rmpv::Value;

use super::process::{shell_quote, Arg, LogFile, ProcessSpec};
use super::SlaveEnv;
use crate::protocol::{map_get, value_str};
use crate::slave::args::{display, Args};

pub fn prepare(a: &Args<'_>, env: &SlaveEnv) -> Result<ProcessSpec, String> {
    let workdir = env
        .jail
        .resolve(a.str("workdir")?, true)
        .map_err(|e| format!("shell: {e}"))?;
    let command = a
        .get("command")
        .ok_or_else(|| "missing argument \"command\"".to_string())?;
    let (argv, display_line) = match command {
        Value::Array(items) => {
            let mut argv = Vec::with_capacity(items.len());
            for item in items {
                argv.push(argument(item)?);
            }
            if argv.is_empty() {
                return Err("shell: empty command".into());
            }
            let shown: Vec<String> = argv.iter().map(|a: &Arg| a.shown.clone()).collect();
            (argv, shell_quote(&shown))
        }
        other => {
            let s = value_str(other)
                .ok_or_else(|| "argument \"command\" must be a string or a list".to_string())?;
            let argv = ["/bin/sh", "-c", s]
                .iter()
                .map(|x| Arg {
                    real: x.to_string(),
                    shown: x.to_string(),
                })
                .collect();
            (argv, s.to_string())
        }
    };
    let (environ, environ_shown) = environment(a.get("env"))?;
    let logfiles = logfiles(a.get("logfiles"), &workdir, env)?;
    let logfiles_shown = format!(
        "{{{}}}",
        logfiles
            .iter()
            .map(|l| format!("'{}': '{}'", l.name, l.path.shown().display()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let interrupt_signal = match a.opt_str("interruptSignal")? {
        None => Signal::SIGKILL,
        Some(s) => Signal::from_str(&format!("SIG{}", s.trim_start_matches("SIG")))
            .map_err(|_| format!("shell: unknown interruptSignal {s:?}"))?,
    };
    let initial_stdin = match a.get("initial_stdin") {
        None => None,
        Some(Value::Binary(b)) => Some(b.clone()),
        Some(v) => Some(display(v).into_bytes()),
    };
    let max_lines = match a.num("max_lines")? {
        Some(n) if n >= 0.0 => Some(n as u64),
        _ => None,
    };
    Ok(ProcessSpec {
        argv,
        display: display_line,
        workdir,
        environ,
        environ_shown,
        log_environ: a.bool("logEnviron", true),
        send_stdout: a.bool("want_stdout", true),
        send_stderr: a.bool("want_stderr", true),
        send_rc: true,
        timeout: a.num("timeout")?,
        max_time: a.num("maxTime")?,
        max_lines,
        sigterm_time: a.num("sigtermTime")?,
        interrupt_signal,
        initial_stdin,
        logfiles,
        logfiles_shown,
        use_pty: a.bool("usePTY", env.usepty),
        umask: env.umask,
    })
}

/// One argv item: a string, or `['obfuscated', real, shown]`.
fn argument(v: &Value) -> Result<Arg, String> {
    if let Some(s) = value_str(v) {
        return Ok(Arg {
            real: s.to_string(),
            shown: s.to_string(),
        });
    }
    if let Value::Array(parts) = v {
        if parts.len() == 3 && value_str(&parts[0]) == Some("obfuscated") {
            if let (Some(real), Some(shown)) = (value_str(&parts[1]), value_str(&parts[2])) {
                return Ok(Arg {
                    real: real.to_string(),
                    shown: shown.to_string(),
                });
            }
        }
    }
    if v.is_i64() || v.is_u64() || v.is_f64() {
        return Ok(Arg {
            real: v.to_string(),
            shown: v.to_string(),
        });
    }
    Err(format!("shell: command argument {v} is not a string"))
}

/// A complete process environment.
type Environ = Vec<(OsString, OsString)>;

/// The child's environment from the slave's own and the master's `env`, plus the
/// `K=V` lines to show (the master's values as it sent them).
fn environment(env: Option<&Value>) -> Result<(Environ, Vec<String>), String> {
    let own: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let Some(env) = env else {
        return Ok((own, Vec::new()));
    };
    let Value::Map(entries) = env else {
        return Err("argument \"env\" must be a dictionary".into());
    };
    let mut set: Vec<(String, Option<String>)> = Vec::new();
    for (k, v) in entries {
        let key = value_str(k)
            .ok_or_else(|| "'env' keys must be strings".to_string())?
            .to_string();
        let value = match v {
            Value::Nil => None,
            Value::Array(items) => Some(
                items
                    .iter()
                    .map(|i| value_str(i).map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        format!("'env' values must be strings or lists; key '{key}' is incorrect")
                    })?
                    .join(":"),
            ),
            other => Some(
                value_str(other)
                    .ok_or_else(|| {
                        format!("'env' values must be strings or lists; key '{key}' is incorrect")
                    })?
                    .to_string(),
            ),
        };
        set.push((key, value));
    }
    let mut shown = Vec::new();
    let mut out: Vec<(OsString, OsString)> = own
        .into_iter()
        .filter(|(k, _)| !set.iter().any(|(s, _)| k == s.as_str()))
        .collect();
    for (key, value) in set {
        let Some(mut value) = value else {
            continue;
        };
        if key == "PYTHONPATH" {
            value.push_str(":${PYTHONPATH}");
        }
        shown.push(format!("{key}={value}"));
        out.push((OsString::from(&key), OsString::from(expand(&value))));
    }
    Ok((out, shown))
}

/// Replace `${NAME}` (NAME of letters, digits, `_`) with the slave's own variable,
/// or nothing when it is unset.
pub fn expand(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if after.as_bytes().get(name_len) == Some(&b'}') {
            let name = &after[..name_len];
            if let Some(v) = std::env::var_os(name) {
                out.push_str(&v.to_string_lossy());
            }
            rest = &after[name_len + 1..];
        } else {
            out.push_str("${");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn logfiles(
    v: Option<&Value>,
    workdir: &crate::slave::paths::JPath,
    env: &SlaveEnv,
) -> Result<Vec<LogFile>, String> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let Value::Map(entries) = v else {
        return Err("argument \"logfiles\" must be a dictionary".into());
    };
    let mut out = Vec::new();
    for (k, spec) in entries {
        let name = value_str(k)
            .ok_or_else(|| "logfile names must be strings".to_string())?
            .to_string();
        let (file, follow) = match spec {
            Value::Map(_) => (
                map_get(spec, "filename").and_then(value_str),
                map_get(spec, "follow")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            ),
            other => (value_str(other), false),
        };
        let file = file.ok_or_else(|| format!("logfile {name:?} has no filename"))?;
        let path = env
            .jail
            .resolve_in(workdir, file, true)
            .map_err(|e| format!("shell: logfile {name:?}: {e}"))?;
        out.push(LogFile { name, path, follow });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        std::env::set_var("AUTOBOT_TEST_EXPAND", "v");
        assert_eq!(expand("a${AUTOBOT_TEST_EXPAND}b"), "avb");
        assert_eq!(expand("${AUTOBOT_TEST_UNSET_XYZ}x"), "x");
        assert_eq!(expand("$HOME ${bad-name} ${"), "$HOME ${bad-name} ${");
    }
}
