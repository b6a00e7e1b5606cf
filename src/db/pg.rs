//! The master's database on PostgreSQL (`db = postgresql://…` in `master.ini`):
//! the URL, the password and the connection.
//!
//! Several masters share one PostgreSQL database (Buildbot's multi-master), so
//! the URL names a server, a user and a database, and TLS follows libpq's
//! `sslmode` (`disable`, `prefer`, `require`, `verify-full`, with `sslrootcert`
//! for a private CA). A password never sits in the URL, where `checkconfig`
//! and the logs would show it: it comes from `dbPasswordFile` or, as for `psql`,
//! from `PGPASSFILE` / `~/.pgpass`. The client is the synchronous `postgres`
//! crate over tokio-postgres, with rustls (ring) for TLS, so the binary stays
//! static with no OpenSSL. Its calls block: run them on a thread of their own or
//! inside `spawn_blocking`, never on the async runtime.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a PostgreSQL database could not be reached or used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Url(String),
    #[error("cannot read the password file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS for {url}: {message}")]
    Tls { url: String, message: String },
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("{url}: {message}")]
    Query { url: String, message: String },
    #[error("{0}")]
    Schema(String),
}

/// libpq's `sslmode`, the values autobot honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not
    /// checked (as libpq). The default, as libpq's.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked (as libpq).
    Require,
    /// TLS, with the certificate checked against the system's roots (or
    /// `sslrootcert`) and the host name.
    VerifyFull,
}

impl SslMode {
    /// The name libpq gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A `postgresql://USER@HOST:PORT/DBNAME?sslmode=…` URL, checked and taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub user: String,
    /// A host name, an IP address, or a directory holding the server's Unix
    /// socket (an absolute path, percent-encoded in the URL: `%2Frun%2Fpostgresql`).
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub sslmode: SslMode,
    /// `sslrootcert=FILE`: the CA that signs the server's certificate
    /// (`verify-full`), instead of the system's roots.
    pub sslrootcert: Option<PathBuf>,
    /// `synchronous_commit=on`: the master's writes commit as the server's
    /// `synchronous_commit` says (by PostgreSQL's default, each waits for its
    /// flush to the server's disk). By default they do not wait (PostgreSQL's
    /// `synchronous_commit = off` on the master's writing connection), as
    /// SQLite's WAL with `synchronous = NORMAL` does not: a crash of the
    /// server may lose the last fraction of a second of writes, never the
    /// database's consistency, and a Build costs no disk flush of its own.
    pub synchronous_commit: bool,
}

/// The port PostgreSQL listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 5432;

/// What every URL error ends with.
const URL_FORM: &str = "write postgresql://USER@HOST:PORT/DBNAME (optionally ?sslmode=disable|prefer|require|verify-full)";

impl fmt::Display for PgUrl {
    /// The URL as written, without any secret (there is none in it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let host = if self.host.starts_with('/') {
            enc(&self.host)
        } else if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "postgresql://{}@{host}:{}/{}",
            enc(&self.user),
            self.port,
            enc(&self.dbname)
        )?;
        let mut sep = '?';
        if self.sslmode != SslMode::default() {
            write!(f, "{sep}sslmode={}", self.sslmode.as_str())?;
            sep = '&';
        }
        if let Some(ca) = &self.sslrootcert {
            write!(f, "{sep}sslrootcert={}", enc(&ca.to_string_lossy()))?;
            sep = '&';
        }
        if self.synchronous_commit {
            write!(f, "{sep}synchronous_commit=on")?;
        }
        Ok(())
    }
}

/// Whether `text` names a PostgreSQL database (rather than SQLite).
pub fn is_pg_url(text: &str) -> bool {
    let t = text.trim().to_ascii_lowercase();
    t.starts_with("postgresql://") || t.starts_with("postgres://")
}

fn decode(what: &str, s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("the {what} {s:?} is not UTF-8 once percent-decoded; {URL_FORM}"))
}

/// Parse a `postgresql://` URL. A password in it (`USER:PASSWORD@`) is refused:
/// it belongs in `dbPasswordFile` (or `~/.pgpass`), not in a file every
/// `checkconfig` prints.
pub fn parse_url(text: &str) -> Result<PgUrl, String> {
    let text = text.trim();
    let rest = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|p| {
            text.get(..p.len())
                .filter(|h| h.eq_ignore_ascii_case(p))
                .map(|_| &text[p.len()..])
        })
        .ok_or_else(|| format!("{text:?} is not a postgresql:// URL; {URL_FORM}"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("no database name in {text:?}; {URL_FORM}"))?;
    let (userinfo, hostport) = authority
        .rsplit_once('@')
        .ok_or_else(|| format!("no user in {text:?} (USER@ before the host); {URL_FORM}"))?;
    if userinfo.contains(':') {
        return Err(
            "the URL holds a password (USER:PASSWORD@): a password in master.ini is shown by \
             checkconfig and copied with the file; write `postgresql://USER@HOST:PORT/DBNAME` and \
             put the password alone in a file named by `dbPasswordFile = FILE` (readable by the \
             master only), or in ~/.pgpass"
                .to_string(),
        );
    }
    let user = decode("user", userinfo)?;
    if user.is_empty() {
        return Err(format!("empty user in {text:?}; {URL_FORM}"));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("unclosed [ in the host of {text:?}; {URL_FORM}"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (decode("host", h)?, Some(p)),
            None => (decode("host", hostport)?, None),
        }
    };
    if host.is_empty() {
        return Err(format!("empty host in {text:?}; {URL_FORM}"));
    }
    let port =
        match port {
            None | Some("") => DEFAULT_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                format!("the port {p:?} is not a number from 1 to 65535; {URL_FORM}")
            })?,
        };
    let dbname = decode("database name", path)?;
    if dbname.is_empty() || dbname.contains('/') {
        return Err(format!("no database name in {text:?}; {URL_FORM}"));
    }
    let mut url = PgUrl {
        user,
        host,
        port,
        dbname,
        sslmode: SslMode::default(),
        sslrootcert: None,
        synchronous_commit: false,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(k, v)?;
        match k {
            "sslmode" => {
                url.sslmode = match v.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode={other:?} is not one autobot knows; write sslmode=disable, prefer, require or verify-full"
                        ))
                    }
                }
            }
            "sslrootcert" if !v.is_empty() => url.sslrootcert = Some(PathBuf::from(v)),
            "synchronous_commit" => {
                url.synchronous_commit = match v.as_str() {
                    "on" => true,
                    "off" => false,
                    other => {
                        return Err(format!(
                            "synchronous_commit={other:?}: write synchronous_commit=on (each write \
                             flushed to the server's disk) or off (the default)"
                        ))
                    }
                }
            }
            "password" => {
                return Err(
                    "the URL holds a password (?password=): put it alone in a file named by `dbPasswordFile = FILE`, or in ~/.pgpass"
                        .to_string(),
                )
            }
            other => {
                return Err(format!(
                    "unknown URL parameter {other:?}; autobot reads sslmode, sslrootcert and synchronous_commit"
                ))
            }
        }
    }
    Ok(url)
}

/// The password in a `dbPasswordFile`: the file's first line (a trailing
/// newline is not part of it).
pub fn read_password_file(path: &Path) -> Result<String, PgError> {
    let text = std::fs::read_to_string(path).map_err(|source| PgError::PasswordFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// The password for `url` from a libpq password file (`PGPASSFILE`, else
/// `~/.pgpass`): the first `host:port:database:user:password` line that
/// matches (`*` matches anything; `\:` and `\\` are a colon and a backslash).
/// As libpq, a file others can read is ignored (with a warning).
pub fn pgpass_password(url: &PgUrl) -> Option<String> {
    let file = match std::env::var_os("PGPASSFILE") {
        Some(f) if !f.is_empty() => PathBuf::from(f),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&file).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} is readable by others, so it is ignored (as libpq does): chmod 600 it",
                file.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(&file).ok()?;
    let host = if url.host.starts_with('/') {
        "localhost".to_string()
    } else {
        url.host.clone()
    };
    let want = [
        host,
        url.port.to_string(),
        url.dbname.clone(),
        url.user.clone(),
    ];
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass(line);
            if fields.len() != 5 {
                return None;
            }
            let matches = fields[..4]
                .iter()
                .zip(&want)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| fields[4].clone())
        })
}

/// One `.pgpass` line's fields, with its escapes undone.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            // The password ends at an unescaped colon, as libpq reads it.
            ':' => break,
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c)
                }
            }
        }
    }
    fields
}

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect to `url` with `password` (from [`read_password_file`], else
/// [`pgpass_password`] is tried), TLS as its `sslmode` says.
pub fn connect(url: &PgUrl, password: Option<&str>) -> Result<postgres::Client, PgError> {
    let mut cfg = postgres::Config::new();
    cfg.user(&url.user)
        .host(&url.host)
        .port(url.port)
        .dbname(&url.dbname)
        .application_name("autobot")
        .connect_timeout(CONNECT_TIMEOUT);
    let from_pgpass;
    match password {
        Some(p) => {
            cfg.password(p);
        }
        None => {
            from_pgpass = pgpass_password(url);
            if let Some(p) = &from_pgpass {
                cfg.password(p);
            }
        }
    }
    use postgres::config::SslMode as Mode;
    cfg.ssl_mode(match url.sslmode {
        SslMode::Disable => Mode::Disable,
        SslMode::Prefer => Mode::Prefer,
        SslMode::Require | SslMode::VerifyFull => Mode::Require,
    });
    let connected = if url.sslmode == SslMode::Disable || url.host.starts_with('/') {
        cfg.connect(postgres::NoTls)
    } else {
        cfg.connect(tls_connector(url)?)
    };
    connected.map_err(|e| PgError::Connect {
        url: url.to_string(),
        message: describe(&e),
    })
}

/// A client error with its causes (`postgres::Error` shows only its kind, "db
/// error", and keeps the server's message as its source).
pub fn describe(e: &postgres::Error) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl PgError {
    /// A failed query on the database `url` names.
    pub fn query(url: &str, e: postgres::Error) -> PgError {
        PgError::Query {
            url: url.to_string(),
            message: describe(&e),
        }
    }
}

/// rustls for `url`'s `sslmode`: `verify-full` checks the certificate and host
/// name (against `sslrootcert`, else the system's roots); `prefer` and `require`
/// encrypt without checking, as libpq does.
fn tls_connector(url: &PgUrl) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    let tls_err = |message: String| PgError::Tls {
        url: url.to_string(),
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?;
    let config = match (url.sslmode, &url.sslrootcert) {
        (SslMode::VerifyFull, Some(ca)) => {
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| tls_err(format!("sslrootcert {}: {e}", ca.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| tls_err(format!("sslrootcert {}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| tls_err(format!("sslrootcert {}: {e}", ca.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (SslMode::VerifyFull, None) => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map_err(|e| tls_err(e.to_string()))?
                .with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `sslmode=prefer|require`: the channel is encrypted but the server's
/// certificate is not checked (libpq's meaning); signatures are still verified,
/// so the handshake itself is sound. `verify-full` is the mode that checks.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed() {
        let u =
            parse_url("postgresql://bot@db.example.org:6543/autobot?sslmode=verify-full").unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.port, u.dbname.as_str()),
            ("bot", "db.example.org", 6543, "autobot")
        );
        assert_eq!(u.sslmode, SslMode::VerifyFull);
        assert_eq!(
            u.to_string(),
            "postgresql://bot@db.example.org:6543/autobot?sslmode=verify-full"
        );
        let u = parse_url("postgres://bot@[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", DEFAULT_PORT));
        assert_eq!(u.sslmode, SslMode::Prefer);
        let u = parse_url("postgresql://bot@%2Ftmp%2Fpg:5433/x").unwrap();
        assert_eq!(u.host, "/tmp/pg");
        assert_eq!(parse_url(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, says) in [
            ("mysql://a@b/c", "not a postgresql:// URL"),
            ("postgresql://a:secret@b/c", "dbPasswordFile"),
            ("postgresql://a@b/c?password=x", "dbPasswordFile"),
            ("postgresql://b/c", "no user"),
            ("postgresql://a@b", "no database name"),
            ("postgresql://a@b:99999/c", "port"),
            ("postgresql://a@b/c?sslmode=allow", "sslmode"),
            ("postgresql://a@b/c?foo=1", "unknown URL parameter"),
        ] {
            let e = parse_url(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn pgpass_lines_are_split_with_escapes() {
        assert_eq!(
            split_pgpass(r"h:5432:*:u:pa\:ss\\w:ord"),
            ["h", "5432", "*", "u", r"pa:ss\w"]
        );
    }
}
