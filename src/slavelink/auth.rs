//! HTTP Basic credentials, checked in constant time: slaves on the WebSocket
//! upgrade (against the `[slave:NAME]` passwords of `master.ini`), Changes sent to
//! the master (`changeuser`/`changepassword`), and the web users of `[users]` who
//! may force and stop builds on `htmlport` (forms, JSON API and the CLI alike).

use base64::Engine;

/// Split an `Authorization: Basic …` header into (name, password).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// Whether two secrets are equal, in a time that tells an attacker neither how
/// many leading bytes were right nor how long the secret is: both are hashed
/// (SHA-256) and the digests compared with `subtle`'s constant-time equality.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let da = ring::digest::digest(&ring::digest::SHA256, a);
    let db = ring::digest::digest(&ring::digest::SHA256, b);
    da.as_ref().ct_eq(db.as_ref()).into()
}

/// Check HTTP Basic credentials against `changeuser`/`changepassword` of
/// `[:master:]` (both compared in constant time), for `sendchange` on the slave
/// port and `POST /api/v1/changes`; the user name, or why not. A master without
/// both keys refuses every submission and says how to enable them.
pub fn change_credentials(
    config: &crate::config::MasterConfig,
    header: Option<&str>,
) -> Result<String, String> {
    if !config.accepts_changes() {
        // No pair configured: nothing may match (not even empty credentials).
        return Err(config.changes_off_reason());
    }
    let header = header.ok_or("no credentials")?;
    let (user, password) = parse_basic(header).ok_or("malformed Authorization header")?;
    let user_ok = constant_time_eq(user.as_bytes(), config.changeuser.as_bytes());
    let password_ok = constant_time_eq(password.as_bytes(), config.changepassword.as_bytes());
    if user_ok && password_ok {
        Ok(user)
    } else {
        Err(format!("wrong change user or password (user {user:?})"))
    }
}

/// Who an `htmlport` request that changes state acts as: `Ok(None)` when
/// `[users]` is empty (anyone who reaches `htmlport` may force and stop),
/// `Ok(Some(name))` for the right name and password of a `[users]` entry, `Err`
/// with why not otherwise. Every user is compared, each in constant time, so the
/// time taken does not tell which names exist.
pub fn web_user(
    config: &crate::config::MasterConfig,
    header: Option<&str>,
) -> Result<Option<String>, String> {
    if config.users.is_empty() {
        return Ok(None);
    }
    let header = header.ok_or("no credentials")?;
    let (name, password) = parse_basic(header).ok_or("malformed Authorization header")?;
    let mut found = None;
    for (user, pw) in &config.users {
        let ok_name = constant_time_eq(user.as_bytes(), name.as_bytes());
        let ok_pw = constant_time_eq(pw.as_bytes(), password.as_bytes());
        if ok_name & ok_pw {
            found = Some(user.clone());
        }
    }
    match found {
        Some(u) => Ok(Some(u)),
        None => Err(format!("wrong user or password (user {name:?})")),
    }
}

/// Check HTTP Basic credentials against the `users` of `[try]`, for `autobot
/// try` on the slave port and `POST /api/v1/try`; the user name, or why not.
/// Every user is compared in constant time; a master without `[try]` refuses.
pub fn try_credentials(
    config: &crate::config::MasterConfig,
    header: Option<&str>,
) -> Result<String, String> {
    let Some(t) = &config.try_jobs else {
        return Err(
            "try jobs are off: the master's master.ini has no [try] section (add one with `users = NAME:PASSWORD`)"
                .into(),
        );
    };
    let header = header.ok_or("no credentials")?;
    let (name, password) = parse_basic(header).ok_or("malformed Authorization header")?;
    let mut found = None;
    for (user, pw) in &t.users {
        let ok_name = constant_time_eq(user.as_bytes(), name.as_bytes());
        let ok_pw = constant_time_eq(pw.as_bytes(), password.as_bytes());
        if ok_name & ok_pw {
            found = Some(user.clone());
        }
    }
    found.ok_or_else(|| format!("wrong try user or password (user {name:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parses() {
        // "slave1:pa:ss"
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("slave1:pa:ss")
        );
        assert_eq!(
            parse_basic(&h),
            Some(("slave1".to_string(), "pa:ss".to_string()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }

    #[test]
    fn no_change_credentials_refuse_everyone() {
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        let mut cfg = crate::config::MasterConfig::default();
        for h in [basic("", ""), basic("change", "changepw")] {
            let why = change_credentials(&cfg, Some(&h)).unwrap_err();
            assert!(why.contains("changeuser and changepassword"), "{why}");
        }
        cfg.changeuser = "u".into();
        cfg.changepassword = "p".into();
        assert_eq!(
            change_credentials(&cfg, Some(&basic("u", "p"))).unwrap(),
            "u"
        );
        assert!(change_credentials(&cfg, Some(&basic("u", "q"))).is_err());
    }

    #[test]
    fn web_users_need_a_right_pair_only_when_there_are_users() {
        let enc = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let mut cfg = crate::config::MasterConfig::default();
        assert_eq!(web_user(&cfg, None), Ok(None));
        assert_eq!(web_user(&cfg, Some(&enc("x:y"))), Ok(None));
        cfg.users.insert("alice".into(), "s3cret".into());
        cfg.users.insert("bob".into(), "pw".into());
        assert_eq!(
            web_user(&cfg, Some(&enc("alice:s3cret"))),
            Ok(Some("alice".into()))
        );
        assert_eq!(web_user(&cfg, Some(&enc("bob:pw"))), Ok(Some("bob".into())));
        assert!(web_user(&cfg, None).is_err());
        assert!(web_user(&cfg, Some(&enc("alice:pw"))).is_err());
        assert!(web_user(&cfg, Some(&enc("carol:s3cret"))).is_err());
        assert!(web_user(&cfg, Some("Basic !!")).is_err());
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
