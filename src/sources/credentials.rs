//! Credentials in a repository URL. `https://USER:TOKEN@host/repo` never reaches
//! an argv, a log, a page or the database: argv, `.git/config` and every display
//! name the URL without them ([`split_credentials`], [`redact_url`]), and a
//! checkout plan's environment hands them over — git through a credential helper
//! for that origin only, set up in `GIT_CONFIG_*` variables, hg through a
//! `[paths]` alias whose URL is in `AUTOBOT_HG_SOURCE` ([`credential_env`],
//! [`hg_source`]).

use std::collections::BTreeMap;

use super::checkout::CheckoutError;
use super::SourceKind;

/// The hg path alias that names a repository whose URL holds credentials: argv
/// says `hg --config paths.autobot-source=$AUTOBOT_HG_SOURCE pull -- autobot-source`
/// and the URL is in the environment, where hg finds it.
pub const HG_SOURCE_ALIAS: &str = "autobot-source";

/// The environment variable holding an hg URL with credentials.
pub const HG_SOURCE_VAR: &str = "AUTOBOT_HG_SOURCE";

/// The environment variables holding the user name and password the git
/// credential helper of [`credential_env`] answers with.
pub const GIT_USERNAME_VAR: &str = "AUTOBOT_GIT_USERNAME";
pub const GIT_PASSWORD_VAR: &str = "AUTOBOT_GIT_PASSWORD";

/// The user name and password of an `http(s)://USER:PASSWORD@HOST/…` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlCredentials {
    /// Percent-decoded, as git and hg would read it.
    pub username: String,
    pub password: String,
    /// The URL with the credentials still in (hg's alias takes it).
    pub url: String,
    /// `scheme://host[:port]`: the only place git offers them to.
    pub origin: String,
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlCredentials")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// `url` with any `user:password@` part removed, fit for logs, Changes and pages
/// (every URL the master or a slave shows or stores goes through this).
pub fn redact_url(url: &str) -> String {
    if let Some((bare, Some(_))) = cvs_credentials(url) {
        return bare;
    }
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// `text` with `url` (which may hold a password) replaced by its redacted form.
pub fn redact_in(text: &str, url: &str) -> String {
    let clean = redact_url(url);
    if clean == url {
        text.to_string()
    } else {
        text.replace(url, &clean)
    }
}

/// Splits the credentials off a repository URL: the URL git and hg see on their
/// command line (and store in the checkout's `.git/config` or `.hg/hgrc`), and
/// the credentials, handed over in the environment ([`credential_env`]). Only
/// `http://` and `https://` URLs take credentials this way; a user name alone in
/// an `ssh://` URL stays (it is not a secret, and ssh needs it), a password there
/// is refused.
pub fn split_credentials(url: &str) -> Result<(String, Option<UrlCredentials>), CheckoutError> {
    if let Some((bare, credentials)) = cvs_credentials(url) {
        return Ok((bare, credentials));
    }
    let Some(scheme_end) = url.find("://") else {
        return Ok((url.to_string(), None));
    };
    let scheme = url[..scheme_end].to_ascii_lowercase();
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Ok((url.to_string(), None));
    };
    let userinfo = &rest[..at];
    let hostport = &rest[at + 1..authority_end];
    if scheme != "http" && scheme != "https" {
        if userinfo.contains(':') {
            return Err(CheckoutError::PasswordInUrl {
                scheme,
                url: redact_url(url),
            });
        }
        return Ok((url.to_string(), None));
    }
    let bad = |why| CheckoutError::BadCredentials {
        url: redact_url(url),
        why,
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let username =
        percent_decode(user).ok_or_else(|| bad("are not valid percent-encoded UTF-8"))?;
    let password =
        percent_decode(password).ok_or_else(|| bad("are not valid percent-encoded UTF-8"))?;
    if username
        .chars()
        .chain(password.chars())
        .any(char::is_control)
    {
        return Err(bad("hold control characters"));
    }
    let stripped = format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]);
    Ok((
        stripped,
        Some(UrlCredentials {
            username,
            password,
            url: url.to_string(),
            origin: format!("{scheme}://{hostport}"),
        }),
    ))
}

/// A CVSROOT `:METHOD:[USER[:PASSWORD]@]HOST[:[PORT]]/PATH` (and anything after
/// it, such as a CVS source's ` MODULE`) split into the CVSROOT without the
/// password and the user name and password (`origin` is the root without the
/// password, as the passfile names it). `None`: not a `:METHOD:` CVSROOT.
fn cvs_credentials(url: &str) -> Option<(String, Option<UrlCredentials>)> {
    let rest = url.strip_prefix(':')?;
    let method_end = rest.find(':')?;
    let after = &rest[method_end + 1..];
    let root_end = after.find(' ').unwrap_or(after.len());
    let authority_end = after[..root_end].find('/').unwrap_or(root_end);
    let Some(at) = after[..authority_end].rfind('@') else {
        return Some((url.to_string(), None));
    };
    let Some((user, password)) = after[..at].split_once(':') else {
        return Some((url.to_string(), None));
    };
    let head = &url[..method_end + 2];
    let bare = format!("{head}{user}{}", &after[at..]);
    let root = format!("{head}{user}{}", &after[at..root_end]);
    Some((
        bare,
        Some(UrlCredentials {
            username: user.to_string(),
            password: password.to_string(),
            url: url.to_string(),
            origin: root,
        }),
    ))
}

/// `%XX` sequences decoded; `None` when one is malformed or the result is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The environment that hands `credentials` to the VC tool without any argv
/// holding them:
/// * git: a credential helper given in `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/
///   `GIT_CONFIG_VALUE_n` (git 2.31 or later) for the URL's origin only, after an
///   empty `credential.helper` that drops the helpers of the slave's own git
///   configuration (so none stores the password); the helper is a fixed shell
///   function that prints `$AUTOBOT_GIT_USERNAME` and `$AUTOBOT_GIT_PASSWORD`,
///   so the values are never shell text. `GIT_TERMINAL_PROMPT=0`: a refused
///   password fails the checkout instead of waiting for a terminal.
/// * hg: the whole URL in `AUTOBOT_HG_SOURCE`, which the argv's
///   `--config paths.autobot-source=$AUTOBOT_HG_SOURCE` names (hg expands
///   variables in `[paths]`; hg prints it with the password as `***`).
pub fn credential_env(kind: SourceKind, credentials: &UrlCredentials) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match kind {
        SourceKind::Git => {
            let helper = format!(
                "!f() {{ if [ \"$1\" = get ]; then printf 'username=%s\\npassword=%s\\n' \"${GIT_USERNAME_VAR}\" \"${GIT_PASSWORD_VAR}\"; fi; }}; f"
            );
            for (k, v) in [
                ("GIT_CONFIG_COUNT", "2".to_string()),
                ("GIT_CONFIG_KEY_0", "credential.helper".to_string()),
                ("GIT_CONFIG_VALUE_0", String::new()),
                (
                    "GIT_CONFIG_KEY_1",
                    format!("credential.{}.helper", credentials.origin),
                ),
                ("GIT_CONFIG_VALUE_1", helper),
                ("GIT_TERMINAL_PROMPT", "0".to_string()),
                (GIT_USERNAME_VAR, credentials.username.clone()),
                (GIT_PASSWORD_VAR, credentials.password.clone()),
            ] {
                env.insert(k.to_string(), v);
            }
        }
        SourceKind::Hg => {
            env.insert(HG_SOURCE_VAR.to_string(), credentials.url.clone());
        }
        // svn and brz take a password only on their command line (or stdin, or
        // their own auth files): a checkout plan refuses one in their URLs.
        SourceKind::Svn
        | SourceKind::Bzr
        | SourceKind::Darcs
        | SourceKind::Cvs
        | SourceKind::Arch => {}
    }
    env
}

/// For an hg command that contacts `url`: the global options to put first, the
/// word that names the repository, and the environment to run with, so that
/// credentials in the URL stay out of the argv ([`credential_env`]). A URL
/// without credentials (or one [`split_credentials`] refuses) is used as it is.
pub fn hg_source(url: &str) -> (Vec<String>, String, BTreeMap<String, String>) {
    match split_credentials(url) {
        Ok((_, Some(c))) => (
            vec![
                "--config".to_string(),
                format!("paths.{HG_SOURCE_ALIAS}=${HG_SOURCE_VAR}"),
            ],
            HG_SOURCE_ALIAS.to_string(),
            credential_env(SourceKind::Hg, &c),
        ),
        _ => (Vec::new(), url.to_string(), BTreeMap::new()),
    }
}

/// CVS's fixed substitution of `src/scramble.c` (scheme `A`): the passfile and
/// the pserver protocol carry a password through it. Not a secret, only kept
/// out of sight of a casual look.
const CVS_SHIFTS: [u8; 256] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31, 114, 120, 53, 79, 96, 109, 72, 108, 70, 64, 76, 67, 116, 74, 68, 87,
    111, 52, 75, 119, 49, 34, 82, 81, 95, 65, 112, 86, 118, 110, 122, 105, 41, 57, 83, 43, 46, 102,
    40, 89, 38, 103, 45, 50, 42, 123, 91, 35, 125, 55, 54, 66, 124, 126, 59, 47, 92, 71, 115, 78,
    88, 107, 106, 56, 36, 121, 117, 104, 101, 100, 69, 73, 99, 63, 94, 93, 39, 37, 61, 48, 58, 113,
    32, 90, 44, 98, 60, 51, 33, 97, 62, 77, 84, 80, 85, 223, 225, 216, 187, 166, 229, 189, 222,
    188, 141, 249, 148, 200, 184, 136, 248, 190, 199, 170, 181, 204, 138, 232, 218, 183, 255, 234,
    220, 247, 213, 203, 226, 193, 174, 172, 228, 252, 217, 201, 131, 230, 197, 211, 145, 238, 161,
    179, 160, 212, 207, 221, 254, 173, 202, 146, 224, 151, 140, 196, 205, 130, 135, 133, 143, 246,
    192, 159, 244, 239, 185, 168, 215, 144, 139, 165, 180, 157, 147, 186, 214, 176, 227, 231, 219,
    169, 175, 156, 206, 198, 129, 164, 150, 210, 154, 177, 134, 127, 182, 128, 158, 208, 162, 132,
    167, 209, 149, 241, 153, 251, 237, 236, 171, 195, 243, 233, 253, 240, 194, 250, 191, 155, 142,
    137, 245, 235, 163, 242, 178, 152,
];

/// `password` as CVS stores it: `A` and each byte through CVS's fixed table (`src/scramble.c`).
pub fn cvs_scramble(password: &str) -> Vec<u8> {
    let mut out = vec![b'A'];
    out.extend(password.bytes().map(|b| CVS_SHIFTS[usize::from(b)]));
    out
}

/// The content of a CVS passfile (`CVS_PASSFILE`) that gives the password of a
/// `:pserver:USER:PASSWORD@HOST…` CVSROOT to cvs: the entry in both of the forms
/// cvs looks for (`/1 ` with the port, 2401 unless given, and the old one
/// without).
pub fn cvs_passfile(credentials: &UrlCredentials) -> Vec<u8> {
    let root = credentials.origin.as_str();
    let scrambled = cvs_scramble(&credentials.password);
    let mut entries = Vec::new();
    // `:METHOD:USER@HOST[:[PORT]]/PATH`
    if let Some(at) = root.find('@') {
        let (head, hostpart) = (&root[..at + 1], &root[at + 1..]);
        let slash = hostpart.find('/').unwrap_or(hostpart.len());
        let (host, path) = (&hostpart[..slash], &hostpart[slash..]);
        let (host, port) = match host.split_once(':') {
            Some((h, p)) if !p.is_empty() => (h, p),
            Some((h, _)) => (h, "2401"),
            None => (host, "2401"),
        };
        entries.push(format!("/1 {head}{host}:{port}{path} "));
        entries.push(format!("{head}{host}:{path} "));
    } else {
        entries.push(format!("/1 {root} "));
    }
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(&scrambled);
        out.push(b'\n');
    }
    out
}
