//! `slave.ini`: what a slave needs to reach its master, written by `create-slave`.
//!
//! ```ini
//! [slave]
//! master = localhost:9010
//! name = slave
//! password = PASSWORD
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
    /// Not UTF-8, or a line that is not `[section]`, `key = value` or a comment.
    #[error("{0}")]
    Parse(#[from] super::ConfigError),
    /// A key that is missing or has a bad value: `file:line: [slave] key: message`
    /// (the line of the key, or of `[slave]` when it is missing).
    #[error("{path}:{line}: [slave] {key}: {message}")]
    Key {
        path: PathBuf,
        line: usize,
        key: &'static str,
        message: String,
    },
}

impl SlaveIni {
    /// Read `DIR/slave.ini` (or the file itself when given a file). The file is
    /// read as `master.ini` is (same comments, raw values), so a password means
    /// the same on both sides.
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
        let bytes = std::fs::read(&file).map_err(|source| SlaveIniError::Io {
            path: file.clone(),
            source,
        })?;
        let doc = super::ini::parse(&file, super::ini::decode(&file, &bytes)?)?;
        let section = doc.section("slave");
        let section_line = section.map_or(1, |s| s.line);
        let get = |key: &'static str| section.and_then(|s| s.get(key));
        let bad = |key: &'static str, line: usize, message: String| SlaveIniError::Key {
            path: file.clone(),
            line,
            key,
            message,
        };
        let need = |key: &'static str| -> Result<String, SlaveIniError> {
            match get(key) {
                Some(e) if !e.value.trim().is_empty() => Ok(e.value.trim().to_string()),
                Some(e) => Err(bad(
                    key,
                    e.line,
                    "no value; write it, or run `autobot create-slave` again".into(),
                )),
                None => Err(bad(
                    key,
                    section_line,
                    "missing; run `autobot create-slave` again or add it to [slave]".into(),
                )),
            }
        };
        let master = need("master")?;
        let master_line = get("master").map_or(section_line, |e| e.line);
        let (host, port) = master.rsplit_once(':').ok_or_else(|| {
            bad(
                "master",
                master_line,
                format!("expected HOST:PORT, e.g. localhost:9010, got {master:?}"),
            )
        })?;
        let master_port = crate::factory::schema::parse_digits(port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                bad(
                    "master",
                    master_line,
                    format!("port {port:?} is not a number from 1 to 65535 (digits only, no sign)"),
                )
            })?;
        if host.is_empty() {
            return Err(bad(
                "master",
                master_line,
                format!("no host before the port; e.g. localhost:{port}"),
            ));
        }
        let keepalive = match get("keepalive") {
            None => 600,
            Some(e) => crate::factory::schema::parse_digits(&e.value)
                .filter(|n| (1..=MAX_KEEPALIVE).contains(n))
                .ok_or_else(|| {
                    bad(
                        "keepalive",
                        e.line,
                        format!(
                            "expected whole seconds from 1 to {MAX_KEEPALIVE} (digits only), e.g. 600, got {:?}",
                            e.value
                        ),
                    )
                })?,
        };
        let umask = match get("umask") {
            None => 0o022,
            Some(e) => Some(e.value.trim())
                .filter(|v| !v.is_empty() && v.bytes().all(|b| (b'0'..=b'7').contains(&b)))
                .and_then(|v| u32::from_str_radix(v, 8).ok())
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    bad(
                        "umask",
                        e.line,
                        format!(
                            "expected an octal mask from 000 to 777 like 022, got {:?}",
                            e.value
                        ),
                    )
                })?,
        };
        let usepty = match get("usepty") {
            None => false,
            Some(e) => crate::factory::schema::parse_bool(&e.value).ok_or_else(|| {
                bad(
                    "usepty",
                    e.line,
                    format!("expected true or false, got {:?}", e.value),
                )
            })?,
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
        let port = self.master_port.to_string();
        let keepalive = self.keepalive.to_string();
        let umask = format!("{:03o}", self.umask);
        let usepty = self.usepty.to_string();
        crate::templates::fill(
            crate::templates::SLAVE_INI,
            &[
                ("master_host", &self.master_host),
                ("master_port", &port),
                ("name", &self.name),
                ("password", &self.password),
                ("keepalive", &keepalive),
                ("umask", &umask),
                ("usepty", &usepty),
            ],
        )
    }
}

/// `logSize` and `logCount` of a slave directory's `slave.ini` (`[slave]`), as
/// [`super::LogRotation`]: the defaults when the file does not set them.
pub fn log_rotation(dir: &Path) -> Result<super::LogRotation, SlaveIniError> {
    let file = dir.join(SLAVE_INI);
    let bytes = std::fs::read(&file).map_err(|source| SlaveIniError::Io {
        path: file.clone(),
        source,
    })?;
    let doc = super::ini::parse(&file, super::ini::decode(&file, &bytes)?)?;
    let mut out = super::LogRotation::default();
    let Some(section) = doc.section("slave") else {
        return Ok(out);
    };
    for (key, raw, max) in [
        ("logsize", "logSize", u64::MAX),
        ("logcount", "logCount", 1000),
    ] {
        if let Some(e) = section.get(key) {
            let n = crate::factory::schema::parse_digits(&e.value)
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| SlaveIniError::Key {
                    path: file.clone(),
                    line: e.line,
                    key: raw,
                    message: format!(
                        "expected a whole number from 1 to {max} (digits only), got {:?}",
                        e.value
                    ),
                })?;
            if key == "logsize" {
                out.size = n;
            } else {
                out.count = n as u32;
            }
        }
    }
    Ok(out)
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

    /// Every bad value names the file, the line and the key.
    #[test]
    fn bad_values_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(SLAVE_INI);
        let cases: &[(&[u8], &str)] = &[
            (
                b"[slave]\nmaster = h:+9010\nname = a\npassword = b\n",
                ":2: [slave] master: port \"+9010\"",
            ),
            (
                b"[slave]\nmaster = h:0\nname = a\npassword = b\n",
                ":2: [slave] master: port \"0\"",
            ),
            (
                b"[slave]\nmaster = h:65536\nname = a\npassword = b\n",
                ":2: [slave] master:",
            ),
            (
                b"[slave]\nmaster = :9010\nname = a\npassword = b\n",
                ":2: [slave] master: no host",
            ),
            (
                b"[slave]\nmaster = h:1\nname = a\npassword = b\nkeepalive =\n",
                ":5: [slave] keepalive: expected whole seconds",
            ),
            (
                b"[slave]\nmaster = h:1\nname = a\npassword = b\nkeepalive = +5\n",
                ":5: [slave] keepalive:",
            ),
            (
                b"[slave]\nmaster = h:1\nname = a\npassword = b\numask = +22\n",
                ":5: [slave] umask:",
            ),
            (
                b"[slave]\nmaster = h:1\nname = a\npassword =\n",
                ":4: [slave] password: no value",
            ),
            (
                b"; x\n[slave]\nmaster = h:1\nname = a\n",
                ":2: [slave] password: missing",
            ),
            (
                b"[slave]\nmaster = h:1\nname = \xE9\n",
                ":3: byte 0xE9 at column 8 is not UTF-8",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&file, text).unwrap();
            let err = SlaveIni::load(dir.path()).unwrap_err().to_string();
            let want = format!("{}{want}", file.display());
            assert!(err.starts_with(&want), "want {want:?}, got {err:?}");
        }
    }

    /// The password reads as master.ini reads it: raw, `#` and quotes kept.
    #[test]
    fn values_are_raw_as_in_master_ini() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SLAVE_INI),
            "[slave]\nmaster = h:9010 ; the master\nname = a\npassword = \"p#w\\n\"\n",
        )
        .unwrap();
        let ini = SlaveIni::load(dir.path()).unwrap();
        assert_eq!(ini.password, "\"p#w\\n\"");
        assert_eq!(ini.master_port, 9010);
    }
}
