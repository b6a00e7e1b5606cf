//! Slave authentication on the WebSocket upgrade: HTTP Basic credentials checked
//! against the `[slave:NAME]` passwords of `master.ini`, in constant time.

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

/// Compare two secrets without an early exit, so response time does not tell an
/// attacker how many leading bytes were right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0 && a.len() == b.len()
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
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
