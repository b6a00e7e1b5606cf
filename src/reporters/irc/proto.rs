//! IRC messages as RFC 1459 / RFC 2812 define them (with IRCv3 message tags
//! skipped): parsing a line from the server into prefix, command and parameters,
//! and writing the lines the bot sends so that nothing a user, a Change or a build
//! says can break out of its parameter (no CR, LF or NUL; a line never longer than
//! the protocol's 512 bytes).

/// The longest line (with its CR LF) the protocol allows.
pub const MAX_LINE: usize = 512;

/// Room left for a PRIVMSG's text: 512 minus CR LF, the command and target, and
/// the `:nick!user@host ` prefix the server adds when relaying it (up to about
/// 100 bytes on common servers).
pub const MAX_TEXT: usize = 380;

/// One message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `nick!user@host` or a server name; empty when there was none.
    pub prefix: String,
    /// Upper-cased command or a three-digit numeric reply.
    pub command: String,
    /// Parameters, the trailing one (after ` :`) included as the last.
    pub params: Vec<String>,
}

impl Message {
    /// Parse one line (without its CR LF). `None` for a line with no command.
    pub fn parse(line: &str) -> Option<Message> {
        let mut rest = line.trim_end_matches(['\r', '\n']);
        // IRCv3 tags: `@a=b;c ` — not used by the bot.
        if let Some(r) = rest.strip_prefix('@') {
            rest = r.split_once(' ').map(|(_, r)| r).unwrap_or("");
        }
        rest = rest.trim_start_matches(' ');
        let mut prefix = String::new();
        if let Some(r) = rest.strip_prefix(':') {
            let (p, r) = r.split_once(' ').unwrap_or((r, ""));
            prefix = p.to_string();
            rest = r.trim_start_matches(' ');
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if command.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                params.push(trailing.to_string());
                break;
            }
            let (p, r) = rest.split_once(' ').unwrap_or((rest, ""));
            params.push(p.to_string());
            rest = r;
        }
        Some(Message {
            prefix,
            command: command.to_ascii_uppercase(),
            params,
        })
    }

    /// The nick of the prefix (`nick!user@host` → `nick`).
    pub fn nick(&self) -> &str {
        self.prefix
            .split_once('!')
            .map(|(n, _)| n)
            .unwrap_or(&self.prefix)
    }

    /// Parameter `i`, or "".
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }
}

/// Text made safe for one parameter: CR, LF and NUL become spaces (they would end
/// or cut the line and let the rest be read as a command of its own).
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\r' | '\n' | '\0' => ' ',
            c => c,
        })
        .collect()
}

/// A middle parameter (a nick, a channel): cleaned, and without spaces or a
/// leading `:`, which would make it something else.
fn middle(p: &str) -> String {
    clean(p)
        .replace(' ', "")
        .trim_start_matches(':')
        .to_string()
}

/// `COMMAND p1 p2 :trailing` as one line with its CR LF; `trailing` may hold
/// spaces. Cut (at a character boundary) to [`MAX_LINE`].
pub fn line(command: &str, middles: &[&str], trailing: Option<&str>) -> String {
    let mut s = String::from(command);
    for m in middles {
        s.push(' ');
        s.push_str(&middle(m));
    }
    if let Some(t) = trailing {
        s.push_str(" :");
        s.push_str(&clean(t));
    }
    truncate(&mut s, MAX_LINE - 2);
    s.push_str("\r\n");
    s
}

/// Cut `s` to at most `max` bytes at a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// `text` split into pieces of at most [`MAX_TEXT`] bytes (at spaces where it
/// can, else at character boundaries), after cleaning: a long answer is several
/// messages, never one the server cuts off.
pub fn split_text(text: &str) -> Vec<String> {
    let text = clean(text);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while rest.len() > MAX_TEXT {
        let mut at = MAX_TEXT;
        while !rest.is_char_boundary(at) {
            at -= 1;
        }
        let cut = rest[..at]
            .rfind(' ')
            .filter(|&i| i > MAX_TEXT / 2)
            .unwrap_or(at);
        out.push(rest[..cut].to_string());
        rest = rest[cut..].trim_start_matches(' ');
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest.to_string());
    }
    out
}

/// A CTCP request (`\x01VERSION\x01`) inside a PRIVMSG text: its command and
/// argument. The bot answers VERSION and PING and ignores the rest (ACTION, DCC…).
pub fn ctcp(text: &str) -> Option<(String, String)> {
    let inner = text.strip_prefix('\x01')?;
    let inner = inner.strip_suffix('\x01').unwrap_or(inner);
    let (cmd, arg) = inner.split_once(' ').unwrap_or((inner, ""));
    Some((cmd.to_ascii_uppercase(), arg.to_string()))
}

/// Case-insensitive comparison of nicks and channels by RFC 1459's rules
/// (`[]\~` are the upper case of `{}|^`).
pub fn irc_eq(a: &str, b: &str) -> bool {
    fn fold(c: char) -> char {
        match c {
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            c => c.to_ascii_lowercase(),
        }
    }
    a.len() == b.len() && a.chars().map(fold).eq(b.chars().map(fold))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc_lines() {
        let m = Message::parse(":nick!u@h PRIVMSG #chan :bot: status all\r\n").unwrap();
        assert_eq!((m.nick(), m.command.as_str()), ("nick", "PRIVMSG"));
        assert_eq!(m.params, ["#chan", "bot: status all"]);
        let m = Message::parse("PING :irc.example.org").unwrap();
        assert_eq!((m.prefix.as_str(), m.param(0)), ("", "irc.example.org"));
        let m = Message::parse("@time=x :srv 433 * autobot :Nickname already in use").unwrap();
        assert_eq!((m.command.as_str(), m.param(1)), ("433", "autobot"));
        let m = Message::parse(":srv 005 me  A=1   B :are supported").unwrap();
        assert_eq!(m.params, ["me", "A=1", "B", "are supported"]);
        assert!(Message::parse("").is_none() && Message::parse(":only-prefix").is_none());
        assert_eq!(Message::parse("privmsg x :").unwrap().params, ["x", ""]);
    }

    #[test]
    fn writes_lines_nothing_can_break_out_of() {
        assert_eq!(
            line("PRIVMSG", &["#c"], Some("a\r\nQUIT :x")),
            "PRIVMSG #c :a  QUIT :x\r\n"
        );
        assert_eq!(line("NICK", &[":a b"], None), "NICK ab\r\n");
        let long = line("PRIVMSG", &["#c"], Some(&"é".repeat(600)));
        assert!(long.len() <= MAX_LINE && long.ends_with("\r\n"));
    }

    #[test]
    fn splits_long_text() {
        let words = "word ".repeat(200);
        let parts = split_text(&words);
        assert!(parts.len() > 1 && parts.iter().all(|p| p.len() <= MAX_TEXT));
        assert_eq!(parts.join(" ").split_whitespace().count(), 200);
        assert_eq!(split_text(""), [""]);
        assert!(split_text(&"ü".repeat(400))
            .iter()
            .all(|p| p.len() <= MAX_TEXT));
    }

    #[test]
    fn ctcp_and_case() {
        assert_eq!(ctcp("\x01VERSION\x01"), Some(("VERSION".into(), "".into())));
        assert_eq!(
            ctcp("\x01PING 123\x01"),
            Some(("PING".into(), "123".into()))
        );
        assert_eq!(ctcp("hello"), None);
        assert!(irc_eq("Bot[1]", "bot{1}") && !irc_eq("bot", "bot_"));
    }
}
