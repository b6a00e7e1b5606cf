//! Shell-like splitting of the command strings written in `master.ini`.
//!
//! A command in `master.ini` runs through `/bin/sh -c` unless it asks to run as an
//! argv (`step.NAME.argv = true`, `testArgv = true`, …); then, and for the keys that
//! hold words rather than commands (`configureFlags`, `python`, `packages`), the
//! string is split the way a POSIX shell splits words — whitespace separates, `'…'`
//! is literal, `"…"` allows `\"`, `\\`, `\$` and `` \` `` escapes, a backslash
//! outside quotes escapes the next character — but nothing else a shell does
//! happens: no variables, globs, pipes or redirections. [`quote`] goes the other way,
//! for words appended to a shell command.

/// Split `s` into words. The error says what is wrong (an unterminated quote or a
/// trailing backslash) in words meant for the user.
pub fn split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    // Whether `cur` is a word even if empty (`''` is an empty argument).
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated ' quote in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => cur.push(e),
                            Some(e) => {
                                cur.push('\\');
                                cur.push(e);
                            }
                            None => return Err(format!("unterminated \" quote in {s:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated \" quote in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(e) => cur.push(e),
                    None => return Err(format!("trailing backslash in {s:?}")),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// `word` written so that `/bin/sh` reads it back as exactly that one word: as
/// is when it holds only characters the shell takes literally, else in single
/// quotes (a `'` inside written `'\''`).
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-+=/.,:@".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::{quote, split};

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(quote("--disable-nls"), "--disable-nls");
        assert_eq!(quote("--prefix=/opt/my dir"), "'--prefix=/opt/my dir'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
        for w in ["a b", "$HOME", "x;y", "it's", "", "%(x)s", "*"] {
            assert_eq!(split(&quote(w)).unwrap(), vec![w.to_string()], "{w:?}");
        }
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(split("make all").unwrap(), vec!["make", "all"]);
        assert_eq!(split("  a   b\tc ").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(
            split(r#"./configure --prefix="/opt/my dir" 'x y' a\ b"#).unwrap(),
            vec!["./configure", "--prefix=/opt/my dir", "x y", "a b"]
        );
        assert_eq!(split(r#""a\"b" '' """#).unwrap(), vec!["a\"b", "", ""]);
        assert_eq!(split(r#""\n""#).unwrap(), vec!["\\n"]);
        assert_eq!(split("a;b | c").unwrap(), vec!["a;b", "|", "c"]);
        assert!(split("").unwrap().is_empty());
    }

    #[test]
    fn rejects_unterminated_quotes() {
        assert!(split("'abc").is_err());
        assert!(split("\"abc").is_err());
        assert!(split("abc\\").is_err());
    }
}
