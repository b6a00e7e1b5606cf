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
//! `master` may name several masters, comma-separated (`master = host1:9010,
//! host2:9010`): masters that share one database, tried in that order (see
//! [`SlaveIni::masters`]). The slave's basedir is the directory holding the file;
//! its `info/admin` and `info/host` files are sent to the master in the worker info.

use std::path::{Path, PathBuf};

/// File name of a slave's configuration inside its basedir.
pub const SLAVE_INI: &str = "slave.ini";

/// The longest `keepalive` accepted (a day): the slave computes deadlines of twice
/// the keepalive from now, which a much larger number would overflow.
pub const MAX_KEEPALIVE: u64 = 86_400;

/// One master a slave may connect to: the `HOST:PORT` of its slaveport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterAddr {
    /// Host name or address (an IPv6 address with or without brackets).
    pub host: String,
    /// The master's `slaveport`.
    pub port: u16,
}

impl MasterAddr {
    /// Parse one `HOST:PORT`; the error names the entry and says how to fix it.
    pub fn parse(entry: &str) -> Result<MasterAddr, String> {
        let (host, port) = entry.rsplit_once(':').ok_or_else(|| {
            format!("{entry:?} has no port; expected HOST:PORT, e.g. localhost:9010")
        })?;
        let port = crate::factory::schema::parse_digits(port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                format!(
                    "port {port:?} in {entry:?} is not a number from 1 to 65535 (digits only, no sign)"
                )
            })?;
        if host.is_empty() {
            return Err(format!(
                "{entry:?} has no host before the port; e.g. localhost:{port}"
            ));
        }
        if host.contains(char::is_whitespace) {
            return Err(format!(
                "{entry:?} has blanks in its host; separate masters with commas, \
                 e.g. host1:9010,host2:9010"
            ));
        }
        Ok(MasterAddr {
            host: host.to_string(),
            port,
        })
    }

    /// Parse a comma-separated list of `HOST:PORT` (blanks around each allowed),
    /// in order; at least one. The error names the bad entry (and its place when
    /// there are several).
    pub fn parse_list(list: &str) -> Result<Vec<MasterAddr>, String> {
        let entries: Vec<&str> = list.split(',').map(str::trim).collect();
        let n = entries.len();
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let place = || {
                    if n > 1 {
                        format!(" (master {} of {n})", i + 1)
                    } else {
                        String::new()
                    }
                };
                if entry.is_empty() {
                    return Err(format!(
                        "empty entry{}; expected HOST:PORT or several separated by commas, \
                         e.g. host1:9010,host2:9010",
                        place()
                    ));
                }
                MasterAddr::parse(entry).map_err(|e| format!("{e}{}", place()))
            })
            .collect()
    }
}

impl std::fmt::Display for MasterAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A parsed `slave.ini`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaveIni {
    /// The directory the slave works in and never leaves.
    pub basedir: PathBuf,
    /// Master host name or address (the first master of `master =`).
    pub master_host: String,
    /// Master `slaveport`.
    pub master_port: u16,
    /// The masters after the first, in the order the slave tries them when the
    /// one it uses is down (empty: one master, as before).
    pub more_masters: Vec<MasterAddr>,
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
        let mut masters = MasterAddr::parse_list(&master)
            .map_err(|message| bad("master", master_line, message))?
            .into_iter();
        // parse_list returns at least one entry.
        let first = masters.next().ok_or_else(|| {
            bad(
                "master",
                master_line,
                "expected HOST:PORT, e.g. localhost:9010".into(),
            )
        })?;
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
            master_host: first.host,
            master_port: first.port,
            more_masters: masters.collect(),
            name: need("name")?,
            password: need("password")?,
            keepalive,
            umask,
            usepty,
        })
    }

    /// Every master, in the order the slave tries them: `master_host:master_port`
    /// first, then [`SlaveIni::more_masters`].
    pub fn masters(&self) -> Vec<MasterAddr> {
        let first = MasterAddr {
            host: self.master_host.clone(),
            port: self.master_port,
        };
        std::iter::once(first)
            .chain(self.more_masters.iter().cloned())
            .collect()
    }

    /// The text of a `slave.ini` for these values (what `create-slave` writes).
    pub fn render(&self) -> String {
        let masters = self
            .masters()
            .iter()
            .map(MasterAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let keepalive = self.keepalive.to_string();
        let umask = format!("{:03o}", self.umask);
        let usepty = self.usepty.to_string();
        crate::templates::fill(
            crate::templates::SLAVE_INI,
            &[
                ("masters", &masters),
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
            more_masters: vec![MasterAddr {
                host: "::1".into(),
                port: 9011,
            }],
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
                ":2: [slave] master: \":9010\" has no host",
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

    /// Several masters, comma-separated, in order; a bad one is named with its
    /// place; the old single-master form reads as before.
    #[test]
    fn master_lists_in_order_and_bad_entries_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(SLAVE_INI);
        let load = |master: &str| {
            std::fs::write(
                &file,
                format!("[slave]\nmaster = {master}\nname = a\npassword = b\n"),
            )
            .unwrap();
            SlaveIni::load(dir.path())
        };
        let one = load("m1:9010").unwrap();
        assert_eq!((one.master_host.as_str(), one.master_port), ("m1", 9010));
        assert!(one.more_masters.is_empty());
        let three = load("m1:9010, m2:9011 ,[::1]:9012").unwrap();
        let got: Vec<String> = three.masters().iter().map(|m| m.to_string()).collect();
        assert_eq!(got, ["m1:9010", "m2:9011", "[::1]:9012"]);
        // Written back, it reads the same.
        std::fs::write(&file, three.render()).unwrap();
        assert_eq!(
            SlaveIni::load(dir.path()).unwrap().masters(),
            three.masters()
        );
        for (master, want) in [
            (
                "m1:9010,m2:x",
                ":2: [slave] master: port \"x\" in \"m2:x\" is not a number from 1 to 65535 (digits only, no sign) (master 2 of 2)",
            ),
            ("m1:9010,,m2:1", ":2: [slave] master: empty entry (master 2 of 3)"),
            ("m1:9010,", ":2: [slave] master: empty entry (master 2 of 2)"),
            (
                "m1:9010, m2",
                ":2: [slave] master: \"m2\" has no port; expected HOST:PORT",
            ),
            (
                "m1:9010 m2:9010",
                ":2: [slave] master: \"m1:9010 m2:9010\" has blanks in its host",
            ),
        ] {
            let err = load(master).unwrap_err().to_string();
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
