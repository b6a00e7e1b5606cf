//! The IRC bot's keys of `[:master:]` (Buildbot's `words.IRC` status target):
//! `ircHost`, `ircTls`, `ircChannels`, `botname`, `ircPassword` and `ircNotify`,
//! read into an [`IrcConfig`] and validated with the file:line errors every other
//! key gets. An empty (or absent) `ircHost` means no bot; the other keys are then
//! unused, and a channel list given anyway is a warning (it would be ignored).

use super::read::{parse_bool, parse_list, Layered, Val};
use super::{ConfigError, ConfigWarning};

/// The events a channel can be told about (`ircNotify`, `notify on|off`).
pub const EVENTS: &[&str] = &[
    "started",
    "finished",
    "success",
    "failure",
    "exception",
    "problem",
    "recovery",
];

/// `ircNotify` when not written: as Buildbot's bot, a build that breaks a builder
/// and the build that fixes it.
pub const DEFAULT_NOTIFY: &[&str] = &["problem", "recovery"];

/// The IRC bot's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcConfig {
    /// The server's host name or address.
    pub host: String,
    /// Its port: `ircHost = host:port`, else 6697 with TLS and 6667 without.
    pub port: u16,
    /// `ircTls = true`: talk TLS (certificates checked against the system's roots).
    pub tls: bool,
    /// The channels joined (`#name`, `&name`).
    pub channels: Vec<String>,
    /// The nick the bot asks for (`botname`, default `autobot`); when taken it
    /// tries `NICK_`, `NICK__`, ... (see the bot).
    pub nick: String,
    /// `ircPassword`: identifies the nick to NickServ after connecting.
    pub password: Option<String>,
    /// Events announced in every channel at start (each one of [`EVENTS`]).
    pub notify: Vec<String>,
}

impl IrcConfig {
    /// The line `checkconfig` prints for the bot.
    pub fn summary(&self) -> String {
        format!(
            "irc: {}:{}{} as {}{}, channels {}, announcing {}\n",
            self.host,
            self.port,
            if self.tls { " (TLS)" } else { "" },
            self.nick,
            if self.password.is_some() {
                " (NickServ)"
            } else {
                ""
            },
            if self.channels.is_empty() {
                "none".to_string()
            } else {
                self.channels.join(" ")
            },
            if self.notify.is_empty() {
                "nothing".to_string()
            } else {
                self.notify.join(" ")
            },
        )
    }
}

/// Whether `nick` is a nick an IRC server accepts (RFC 2812 2.3.1: a letter or
/// one of `[]\`_^{|}` first, then letters, digits, those and `-`; at most 30
/// characters, which every common server allows).
pub fn valid_nick(nick: &str) -> bool {
    let special = |c: char| "[]\\`_^{|}".contains(c);
    let mut chars = nick.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || special(c) => {}
        _ => return false,
    }
    nick.len() <= 30 && chars.all(|c| c.is_ascii_alphanumeric() || special(c) || c == '-')
}

/// Whether `name` is a channel name (RFC 2812 1.3: `#`, `&`, `+` or `!` first, no
/// space, comma, colon or BEL, at most 50 characters).
pub fn valid_channel(name: &str) -> bool {
    name.len() > 1
        && name.len() <= 50
        && name.starts_with(['#', '&', '+', '!'])
        && !name
            .chars()
            .any(|c| c == ' ' || c == ',' || c == ':' || c == '\x07' || c.is_control())
}

/// Read the IRC keys of `[:master:]`; `None` when `ircHost` is empty or absent.
pub(super) fn read(
    m: &Layered,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Option<IrcConfig>, ConfigError> {
    let tls = match m.get("irctls") {
        Some(v) => parse_bool(v)?,
        None => false,
    };
    let channels = match m.get("ircchannels") {
        Some(v) => parse_channels(v)?,
        None => Vec::new(),
    };
    // Every key is checked, with or without a bot to use it.
    let nick = match m.get("botname") {
        Some(v) if !v.value.trim().is_empty() => {
            let n = v.value.trim();
            if !valid_nick(n) {
                return Err(v.err(format!(
                    "{n:?} is not an IRC nick: it must start with a letter or one of []\\`_^{{|}}, hold only letters, digits, those and -, and be at most 30 characters (e.g. `botname = autobot`)"
                )));
            }
            n.to_string()
        }
        _ => "autobot".to_string(),
    };
    if let Some(v) = m.get("ircpassword") {
        if v.value.contains(['\r', '\n']) {
            return Err(v.err("a line break in the password; write it on one line"));
        }
    }
    let password = m
        .get("ircpassword")
        .map(|v| v.value.trim().to_string())
        .filter(|p| !p.is_empty());
    let notify = match m.get("ircnotify") {
        Some(v) => parse_events(v)?,
        None => DEFAULT_NOTIFY.iter().map(|s| s.to_string()).collect(),
    };
    let host = m.get("irchost").filter(|v| !v.value.trim().is_empty());
    let Some(host_val) = host else {
        if let Some(v) = m.get("ircchannels").filter(|_| !channels.is_empty()) {
            warnings.push(v.warning(
                "no IRC bot runs because ircHost is empty, so these channels are not joined; set `ircHost = irc.example.org` (host[:port]) to start the bot, or remove ircChannels",
            ));
        }
        return Ok(None);
    };
    let (host, port) = parse_host(host_val, tls)?;
    Ok(Some(IrcConfig {
        host,
        port,
        tls,
        channels,
        nick,
        password,
        notify,
    }))
}

/// `host[:port]` (an IPv6 address in brackets: `[::1]:6667`).
fn parse_host(v: &Val, tls: bool) -> Result<(String, u16), ConfigError> {
    let raw = v.value.trim();
    let default = if tls { 6697 } else { 6667 };
    let bad = |why: &str| {
        v.err(format!(
            "{why} in {raw:?}; write host[:port], e.g. `ircHost = irc.libera.chat` or `ircHost = irc.example.org:6697` (default port {default}, 6697 with ircTls = true)"
        ))
    };
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(bad("no closing ] after an IPv6 address"));
        };
        match after {
            "" => (h.to_string(), None),
            p => match p.strip_prefix(':') {
                Some(p) => (h.to_string(), Some(p)),
                None => return Err(bad("text after the ]")),
            },
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (raw.to_string(), None),
        }
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '@')
    {
        return Err(bad("not a host name"));
    }
    let port = match port {
        None => default,
        Some(p) => {
            match crate::factory::schema::parse_digits(p).and_then(|n| u16::try_from(n).ok()) {
                Some(n) if n >= 1 => n,
                _ => return Err(bad(&format!("{p:?} is not a port from 1 to 65535"))),
            }
        }
    };
    Ok((host, port))
}

fn parse_channels(v: &Val) -> Result<Vec<String>, ConfigError> {
    let list = parse_list(&v.value);
    for c in &list {
        if !valid_channel(c) {
            return Err(v.err(format!(
                "{c:?} is not a channel name: each starts with # (or &, +, !) and holds no space, comma, colon or control character; e.g. `ircChannels = #myproject #myproject-dev`"
            )));
        }
    }
    Ok(list)
}

fn parse_events(v: &Val) -> Result<Vec<String>, ConfigError> {
    let list = parse_list(&v.value);
    let mut out: Vec<String> = Vec::new();
    for e in &list {
        let e = e.to_ascii_lowercase();
        if !EVENTS.contains(&e.as_str()) {
            return Err(v.err(format!(
                "unknown event {e:?}; the events are {} (e.g. `ircNotify = problem recovery`; `-` for none)",
                EVENTS.join(", ")
            )));
        }
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(master: &str) -> Result<crate::config::MasterConfig, ConfigError> {
        let text = format!("[:master:]\npassword = pw-x1\n{master}\n");
        crate::config::load_from_str(
            std::path::Path::new("/m/master.ini"),
            std::path::Path::new("/m"),
            &text,
            &[],
        )
    }

    #[test]
    fn defaults_and_values() {
        let cfg = load("ircHost = irc.example.org\nircChannels = #a &b").unwrap();
        let irc = cfg.irc.unwrap();
        assert_eq!(
            (irc.host.as_str(), irc.port, irc.tls),
            ("irc.example.org", 6667, false)
        );
        assert_eq!(irc.channels, ["#a", "&b"]);
        assert_eq!(irc.nick, "autobot");
        assert_eq!(irc.notify, ["problem", "recovery"]);
        assert_eq!(
            irc.summary(),
            "irc: irc.example.org:6667 as autobot, channels #a &b, announcing problem recovery\n"
        );
        let cfg = load(
            "ircHost = [::1]\nircTls = yes\nbotname = bb\nircPassword = s3\nircNotify = Started failure",
        )
        .unwrap();
        let irc = cfg.irc.unwrap();
        assert_eq!((irc.host.as_str(), irc.port, irc.tls), ("::1", 6697, true));
        assert_eq!(irc.password.as_deref(), Some("s3"));
        assert_eq!(irc.notify, ["started", "failure"]);
        assert!(load("ircHost = h:7000\nircNotify = -")
            .unwrap()
            .irc
            .unwrap()
            .notify
            .is_empty());
        assert!(load("ircHost =\nbotname = x").unwrap().irc.is_none());
    }

    #[test]
    fn bad_values_name_line_and_fix() {
        for (text, line, needle) in [
            ("ircHost = h:99999", 3, "not a port"),
            ("ircHost = a b", 3, "not a host name"),
            ("ircHost = h\nbotname = 9lives", 4, "not an IRC nick"),
            ("ircHost = h\nircChannels = nohash", 4, "not a channel name"),
            (
                "ircHost = h\nircNotify = problem sometimes",
                4,
                "unknown event \"sometimes\"",
            ),
            ("ircTls = maybe", 3, "true or false"),
            ("ircNotify = often", 3, "unknown event"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(&format!("master.ini:{line}")), "{text}: {e}");
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn channels_without_host_warn() {
        let cfg = load("ircChannels = #a").unwrap();
        assert!(cfg
            .warnings
            .iter()
            .any(|w| w.line == 3 && w.message.contains("ircHost is empty")));
    }

    #[test]
    fn nicks_and_channels() {
        assert!(valid_nick("autobot") && valid_nick("[bot]_-1") && !valid_nick("-x"));
        assert!(!valid_nick("") && !valid_nick("a b") && !valid_nick(&"a".repeat(31)));
        assert!(valid_channel("#a-b") && !valid_channel("#") && !valid_channel("#a,b"));
    }
}
