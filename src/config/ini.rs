//! The INI layer under `master.ini` and project files: rust-ini for the values, plus
//! a line scanner of our own for what rust-ini does not give — line numbers.
//!
//! The scanner reads the text line by line first and rejects what it cannot place
//! (a line that is neither `[section]`, `key = value`/`key: value`, a `;`/`#` comment
//! nor blank; a key outside any section; a section or key given twice), strips
//! inline comments (whitespace followed by `;`, as Python 2's RawConfigParser did),
//! and hands rust-ini a normalized copy with the same line numbering: one key per
//! line, no comments. rust-ini parses that with quotes and escapes off, so values are
//! the raw text (commands are split later, shell-style). Keys are lower-cased, except
//! the `VAR` of a `step.NAME.env.VAR` key, whose case matters to the process that
//! gets it; the key as written is kept too, for messages and `[users]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniEntry {
    /// Normalized key (lower-case, see [`normalize_key`]).
    pub key: String,
    /// The key as written.
    pub raw_key: String,
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// One `[section]` with its entries in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniSection {
    pub name: String,
    pub line: usize,
    pub entries: Vec<IniEntry>,
}

impl IniSection {
    /// The entry for a normalized key.
    pub fn get(&self, key: &str) -> Option<&IniEntry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// A parsed INI file: its sections in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniDoc {
    pub path: PathBuf,
    pub sections: Vec<IniSection>,
}

impl IniDoc {
    pub fn section(&self, name: &str) -> Option<&IniSection> {
        self.sections.iter().find(|s| s.name == name)
    }
}

/// Keys are case-insensitive, so they are lower-cased — but in `step.NAME.env.VAR`
/// the variable name keeps its case (`CFLAGS` and `cflags` are different variables).
pub fn normalize_key(raw: &str) -> String {
    let parts: Vec<&str> = raw.splitn(4, '.').collect();
    if parts.len() == 4
        && parts[0].eq_ignore_ascii_case("step")
        && parts[2].eq_ignore_ascii_case("env")
    {
        return format!("step.{}.env.{}", parts[1].to_ascii_lowercase(), parts[3]);
    }
    raw.to_ascii_lowercase()
}

/// Cut an inline comment: the first `;` that follows whitespace, and what follows it.
fn strip_inline_comment(s: &str) -> &str {
    let mut prev_space = false;
    for (i, c) in s.char_indices() {
        if c == ';' && prev_space {
            return &s[..i];
        }
        prev_space = c.is_whitespace();
    }
    s
}

fn err(path: &Path, line: usize, context: String, message: String) -> ConfigError {
    ConfigError::At {
        path: path.to_path_buf(),
        line,
        context,
        message,
    }
}

/// `bytes`, read from `path`, as text: UTF-8 (a leading byte-order mark is
/// dropped), or an error naming the line, column and value of the first byte that
/// is not, and how to convert the file.
pub fn decode<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, ConfigError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        // Everything before the bad byte is valid UTF-8: count characters, as an
        // editor shows columns.
        let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
        err(
            path,
            line,
            String::new(),
            format!(
                "byte 0x{:02X} at column {column} is not UTF-8; the file must be UTF-8 text: \
                 convert it (e.g. `iconv -f latin1 -t utf-8 FILE > FILE.new` and rename) \
                 or retype the character",
                bytes[e.valid_up_to()]
            ),
        )
    })
}

/// Parse `text`, read from `path` (named in errors).
pub fn parse(path: &Path, text: &str) -> Result<IniDoc, ConfigError> {
    let mut sections: Vec<IniSection> = Vec::new();
    let mut normalized = String::with_capacity(text.len());
    // (section index, normalized key) -> line, to report duplicates.
    let mut seen_keys: HashMap<(usize, String), usize> = HashMap::new();
    // A byte-order mark, as some Windows editors write one, is not part of the text.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (idx, raw_line) in text.split('\n').enumerate() {
        let lineno = idx + 1;
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        let t = line.trim();
        if t.is_empty() || t.starts_with(';') || t.starts_with('#') {
            normalized.push('\n');
            continue;
        }
        // A lone carriage return would end the line for rust-ini but not for this
        // scanner, and other control characters end up in argv or URLs: refuse
        // them here, where the line is known.
        if let Some((at, c)) = line
            .char_indices()
            .find(|(_, c)| c.is_control() && *c != '\t')
        {
            return Err(err(
                path,
                lineno,
                String::new(),
                format!(
                    "control character {c:?} at byte {} of the line; remove it (lines end with \\n or \\r\\n)",
                    at + 1
                ),
            ));
        }
        if t.starts_with('[') {
            let h = strip_inline_comment(t).trim_end();
            let name = match h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(n) => n.trim(),
                None => {
                    return Err(err(
                        path,
                        lineno,
                        String::new(),
                        format!(
                            "cannot parse {t:?}: a section header is `[NAME]` on a line of its own"
                        ),
                    ))
                }
            };
            // A backslash would escape the closing bracket for rust-ini.
            if name.is_empty() || name.contains(['[', ']', '\\']) {
                return Err(err(
                    path,
                    lineno,
                    String::new(),
                    format!("bad section header {t:?}: write `[NAME]` with a non-empty name and no brackets or backslashes in it"),
                ));
            }
            if let Some(first) = sections.iter().find(|s| s.name == name) {
                return Err(err(
                    path,
                    lineno,
                    format!("[{name}]: "),
                    format!(
                        "section given twice (first at line {}); merge the two sections into one",
                        first.line
                    ),
                ));
            }
            sections.push(IniSection {
                name: name.to_string(),
                line: lineno,
                entries: Vec::new(),
            });
            normalized.push_str(&format!("[{name}]\n"));
            continue;
        }
        let Some(sep) = t.find(['=', ':']) else {
            return Err(err(
                path,
                lineno,
                String::new(),
                format!("cannot parse {t:?}: expected `key = value`, a `[section]` header, or a comment starting with `;` or `#`"),
            ));
        };
        let raw_key = t[..sep].trim();
        let value = strip_inline_comment(&t[sep + 1..]).trim();
        if raw_key.is_empty() {
            return Err(err(
                path,
                lineno,
                String::new(),
                format!(
                    "cannot parse {t:?}: the key before `{}` is missing",
                    &t[sep..sep + 1]
                ),
            ));
        }
        if raw_key.contains('\\') {
            // It would escape the `=` (or the end of the line) for rust-ini.
            return Err(err(
                path,
                lineno,
                format!("{raw_key}: "),
                "a key may not contain a backslash; keys are names like `step.NAME.env.VAR`"
                    .to_string(),
            ));
        }
        let Some(si) = sections.len().checked_sub(1) else {
            return Err(err(
                path,
                lineno,
                format!("{raw_key}: "),
                "key outside any section; put it under a section such as [:master:]".to_string(),
            ));
        };
        if value.ends_with('\\') {
            return Err(err(
                path,
                lineno,
                format!("[{}] {raw_key}: ", sections[si].name),
                "a value may not end with a backslash (line continuations are not supported); remove it or quote it".to_string(),
            ));
        }
        let key = normalize_key(raw_key);
        if let Some(first) = seen_keys.insert((si, key.clone()), lineno) {
            return Err(err(
                path,
                lineno,
                format!("[{}] {raw_key}: ", sections[si].name),
                format!("key given twice in this section (first at line {first}; keys ignore case); keep one"),
            ));
        }
        sections[si].entries.push(IniEntry {
            key,
            raw_key: raw_key.to_string(),
            value: value.to_string(),
            line: lineno,
        });
        normalized.push_str(&format!("{raw_key}={value}\n"));
    }

    // The values proper come from rust-ini, reading the checked, normalized copy.
    let opt = ini::ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: false,
        enabled_preserve_key_leading_whitespace: false,
    };
    let parsed = ini::Ini::load_from_str_opt(&normalized, opt).map_err(|e| {
        err(
            path,
            e.line.max(1),
            String::new(),
            format!("cannot parse: {}", e.msg),
        )
    })?;
    for section in &mut sections {
        let Some(props) = parsed.section(Some(section.name.as_str())) else {
            continue;
        };
        for entry in &mut section.entries {
            if let Some(v) = props.get(&entry.raw_key) {
                entry.value = v.to_string();
            }
        }
    }
    Ok(IniDoc {
        path: path.to_path_buf(),
        sections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<IniDoc, ConfigError> {
        parse(Path::new("m.ini"), text)
    }

    #[test]
    fn reads_sections_keys_and_lines() {
        let doc = p("; top\n[:master:]\nslavePort = 9010 ; the port\n\n# c\n[hello]\ngit: ./x#dev\nstep.Test.env.CFLAGS = -O2 ;x\n")
            .unwrap();
        assert_eq!(doc.sections.len(), 2);
        let m = &doc.sections[0];
        assert_eq!((m.name.as_str(), m.line), (":master:", 2));
        assert_eq!(m.entries[0].key, "slaveport");
        assert_eq!(m.entries[0].raw_key, "slavePort");
        assert_eq!(m.entries[0].value, "9010");
        assert_eq!(m.entries[0].line, 3);
        let h = doc.section("hello").unwrap();
        assert_eq!(h.get("git").unwrap().value, "./x#dev");
        assert_eq!(h.get("step.test.env.CFLAGS").unwrap().value, "-O2");
        assert_eq!(h.get("step.test.env.CFLAGS").unwrap().line, 8);
    }

    #[test]
    fn keeps_values_raw() {
        let doc = p("[a]\nx = \"q\" 'r' C:\\dir\\n a;b #c\n").unwrap();
        assert_eq!(
            doc.sections[0].entries[0].value,
            "\"q\" 'r' C:\\dir\\n a;b #c"
        );
    }

    #[test]
    fn decode_names_the_line_column_and_byte() {
        let path = Path::new("m.ini");
        assert_eq!(decode(path, b"\xEF\xBB\xBF[a]\n").unwrap(), "[a]\n");
        let e = decode(path, b"[a]\nx = caf\xC3\xA9 \xE9t\xE9\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("m.ini:2: byte 0xE9 at column 10 is not UTF-8;"),
            "{e}"
        );
        let e = decode(path, b"\xFF").unwrap_err().to_string();
        assert!(e.starts_with("m.ini:1: byte 0xFF at column 1 "), "{e}");
    }

    #[test]
    fn rejects_what_it_cannot_place() {
        let e = p("[a]\nx = 1\njunk line\n").unwrap_err().to_string();
        assert!(e.starts_with("m.ini:3: cannot parse \"junk line\""), "{e}");
        let e = p("x = 1\n").unwrap_err().to_string();
        assert!(
            e.contains("m.ini:1:") && e.contains("outside any section"),
            "{e}"
        );
        let e = p("[a]\nX = 1\nx = 2\n").unwrap_err().to_string();
        assert!(
            e.contains("m.ini:3:") && e.contains("first at line 2"),
            "{e}"
        );
        let e = p("[a]\n[b]\n[a]\n").unwrap_err().to_string();
        assert!(
            e.contains("m.ini:3:") && e.contains("first at line 1"),
            "{e}"
        );
        let e = p("[a\n").unwrap_err().to_string();
        assert!(e.contains("m.ini:1:"), "{e}");
        let e = p("[a]\n= 3\n").unwrap_err().to_string();
        assert!(e.contains("m.ini:2:") && e.contains("key"), "{e}");
    }
}
