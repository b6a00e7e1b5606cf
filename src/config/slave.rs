//! `slave.ini`: what a slave needs to reach its master, written by `create-slave`.
//!
//! ```ini
//! [slave]
//! master = localhost:9010
//! name = slave
//! password = passwd
//! keepalive = 600
//! umask = 022
//! usepty = false
//! ```
//!
//! The slave's basedir is the directory holding the file; its `info/admin` and
//! `info/host` files are sent to the master in the worker info.

use std::path::{Path, PathBuf};

/// File name of a slave's configuration inside its basedir.
pub const SLAVE_INI: &str = "slave.ini";

/// The longest `keepalive` accepted (a day): the slave computes deadlines of twice
/// the keepalive from now, which a much larger number would overflow.
pub const MAX_KEEPALIVE: u64 = 86_400;

/// A parsed `slave.ini`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaveIni {
    /// The directory the slave works in and never leaves.
    pub basedir: PathBuf,
    /// Master host name or address.
    pub master_host: String,
    /// Master `slaveport`.
    pub master_port: u16,
    pub name: String,
    pub password: String,
    /// Seconds between keepalives; also the cap of the reconnect backoff.
    pub keepalive: u64,
    /// Umask applied to every command (octal, e.g. 0o022).
    pub umask: u32,
    /// Run shell commands under a pseudo-terminal unless the master says otherwise.
    pub usepty: bool,
}

/// Why a `slave.ini` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SlaveIniError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: cannot parse: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: [slave] {key}: {message}")]
    Key {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

impl SlaveIni {
    /// Read `DIR/slave.ini` (or the file itself when given a file).
    pub fn load(path: &Path) -> Result<SlaveIni, SlaveIniError> {
        let file = if path.is_dir() {
            path.join(SLAVE_INI)
        } else {
            path.to_path_buf()
        };
        let basedir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let basedir = std::fs::canonicalize(&basedir).unwrap_or(basedir);
        let text = std::fs::read_to_string(&file).map_err(|source| SlaveIniError::Io {
            path: file.clone(),
            source,
        })?;
        let ini = ini::Ini::load_from_str(&text).map_err(|e| SlaveIniError::Parse {
            path: file.clone(),
            line: e.line,
            message: e.msg.to_string(),
        })?;
        let get = |key: &'static str| -> Option<String> {
            ini.section(Some("slave")).and_then(|s| {
                s.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v.trim().to_string())
            })
        };
        let need = |key: &'static str| -> Result<String, SlaveIniError> {
            get(key).ok_or_else(|| SlaveIniError::Key {
                path: file.clone(),
                key,
                message: "missing; run `autobot create-slave` again or add it".into(),
            })
        };
        let bad = |key: &'static str, message: String| SlaveIniError::Key {
            path: file.clone(),
            key,
            message,
        };
        let master = need("master")?;
        let (host, port) = master.rsplit_once(':').ok_or_else(|| {
            bad(
                "master",
                format!("expected HOST:PORT, e.g. localhost:9010, got {master:?}"),
            )
        })?;
        let master_port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            bad(
                "master",
                format!("port {port:?} is not a number from 1 to 65535"),
            )
        })?;
        let keepalive = match get("keepalive") {
            None => 600,
            Some(v) => v
                .parse()
                .ok()
                .filter(|k| *k <= MAX_KEEPALIVE)
                .ok_or_else(|| {
                    bad(
                        "keepalive",
                        format!(
                            "expected whole seconds from 0 to {MAX_KEEPALIVE}, e.g. 600, got {v:?}"
                        ),
                    )
                })?,
        };
        let umask = match get("umask") {
            None => 0o022,
            Some(v) => u32::from_str_radix(&v, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    bad(
                        "umask",
                        format!("expected an octal mask from 000 to 777 like 022, got {v:?}"),
                    )
                })?,
        };
        let usepty = match get("usepty").as_deref() {
            None => false,
            Some(v) => parse_bool(v)
                .ok_or_else(|| bad("usepty", format!("expected true or false, got {v:?}")))?,
        };
        Ok(SlaveIni {
            basedir,
            master_host: host.to_string(),
            master_port,
            name: need("name")?,
            password: need("password")?,
            keepalive,
            umask,
            usepty,
        })
    }

    /// The text of a `slave.ini` for these values (what `create-slave` writes).
    pub fn render(&self) -> String {
        format!(
            "# autobot slave configuration, written by `autobot create-slave`.\n\
             # The slave connects to MASTER (host:slaveport) as NAME with PASSWORD; both\n\
             # must match a [slave:NAME] section of the master's master.ini.\n\
             [slave]\n\
             master = {}:{}\n\
             name = {}\n\
             password = {}\n\
             ; seconds between keepalives, and the longest wait between reconnect attempts\n\
             keepalive = {}\n\
             ; umask for every command the slave runs (octal)\n\
             umask = {:03o}\n\
             ; run commands under a pseudo-terminal unless the master says otherwise\n\
             usepty = {}\n",
            self.master_host,
            self.master_port,
            self.name,
            self.password,
            self.keepalive,
            self.umask,
            self.usepty
        )
    }
}

/// Booleans as Buildbot users write them: true/false, yes/no, on/off, 1/0.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let ini = SlaveIni {
            basedir: std::fs::canonicalize(dir.path()).unwrap(),
            master_host: "localhost".into(),
            master_port: 9010,
            name: "linux1".into(),
            password: "pw".into(),
            keepalive: 30,
            umask: 0o027,
            usepty: true,
        };
        std::fs::write(dir.path().join(SLAVE_INI), ini.render()).unwrap();
        assert_eq!(SlaveIni::load(dir.path()).unwrap(), ini);
    }

    #[test]
    fn bad_master_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SLAVE_INI),
            "[slave]\nmaster = nohostport\nname = a\npassword = b\n",
        )
        .unwrap();
        let err = SlaveIni::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("HOST:PORT"), "{err}");
    }
}
