//! Build secrets: the values `secretsDir` holds (one file per secret, named after
//! it, as Buildbot's `SecretInAFile`) and the redaction of every form of them from
//! what a step prints.
//!
//! A secret reaches a slave only inside the command that names it
//! (`%(secret:NAME)s`, see `factory::interpolate`); it is never a property, and
//! nothing the master stores or shows is allowed to carry it. What a step prints
//! is redacted before it is stored or streamed ([`Redactor`], [`StreamRedactor`]):
//! each secret's value, its base64 (standard and URL-safe alphabets, with and
//! without padding, at each of the 3 byte alignments it can have inside longer
//! encoded data), its URL-encoded forms and, for a multi-line secret, each of
//! its lines become `<secret:NAME>`. Output arrives
//! in chunks, so a [`StreamRedactor`] keeps back the last bytes of each chunk that
//! could be the start of a secret until the next chunk (or the command's end)
//! tells. All forms of all secrets are found in one pass (Aho-Corasick).
//!
//! The directory and each file must be readable by the master's user only:
//! [`Secrets::load`] refuses anything group or others can access, naming the file
//! and the `chmod` that fixes it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;

/// Why `secretsDir` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read secretsDir {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a directory; secretsDir names a directory holding one file per secret", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error(
        "{} is accessible to group or others (mode {mode:04o}); secrets must be readable by the master's user only: run `chmod {fix} {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        path: PathBuf,
        mode: u32,
        /// `700` for the directory, `600` for a file.
        fix: &'static str,
    },
    #[error(
        "{}: {name:?} is not a secret name (letters, digits, `_`, `.` and `-`, not starting with `.` or `-`); rename or remove the file",
        path.display()
    )]
    BadName { path: PathBuf, name: String },
    #[error("{}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },
}

/// Whether `name` may name a secret: `[A-Za-z0-9_][A-Za-z0-9_.-]*`. (A leading
/// `-` would read as a property's fallback, `%(secret:-text)s`.)
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The secrets of a master: name → value, and the redactor for them. `Debug`
/// shows the names only.
#[derive(Clone, Default)]
pub struct Secrets {
    dir: Option<PathBuf>,
    values: BTreeMap<String, String>,
    redactor: Option<Arc<Redactor>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("dir", &self.dir)
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for Secrets {
    fn eq(&self, other: &Secrets) -> bool {
        self.dir == other.dir && self.values == other.values
    }
}

impl Secrets {
    /// Reads every secret of `dir`: one regular file per secret, its name the
    /// secret's, its content the value without one trailing newline. The
    /// directory and every file must be inaccessible to group and others.
    pub fn load(dir: &Path) -> Result<Secrets, SecretsError> {
        let io = |source| SecretsError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(SecretsError::NotADirectory {
                dir: dir.to_path_buf(),
            });
        }
        check_mode(dir, meta.permissions().mode(), "700")?;
        let mut values = BTreeMap::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_name(&name) {
                return Err(SecretsError::BadName { path, name });
            }
            let bad = |message: String| SecretsError::BadFile {
                path: path.clone(),
                message,
            };
            let meta = std::fs::metadata(&path).map_err(|e| bad(e.to_string()))?;
            if !meta.is_file() {
                return Err(bad(
                    "not a regular file; secretsDir holds one file per secret".into(),
                ));
            }
            check_mode(&path, meta.permissions().mode(), "600")?;
            let bytes = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
            let mut value =
                String::from_utf8(bytes).map_err(|_| bad("the value is not UTF-8 text".into()))?;
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            if value.is_empty() {
                return Err(bad(
                    "the file is empty; write the secret's value in it (or remove it)".into(),
                ));
            }
            values.insert(name, value);
        }
        Ok(Secrets::from_values(Some(dir.to_path_buf()), values))
    }

    /// Secrets from values at hand (tests, benchmarks); `dir` is what messages
    /// name.
    pub fn from_values(dir: Option<PathBuf>, values: BTreeMap<String, String>) -> Secrets {
        let redactor = Redactor::new(&values).map(Arc::new);
        Secrets {
            dir,
            values,
            redactor,
        }
    }

    /// The directory they were read from (`None`: no `secretsDir`).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The value of secret `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The secrets' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The redactor of every form of every secret; `None` when there are none.
    pub fn redactor(&self) -> Option<&Arc<Redactor>> {
        self.redactor.as_ref()
    }

    /// Why secret `name` cannot be had, as a sentence naming the directory.
    pub fn missing(&self, name: &str) -> String {
        match &self.dir {
            Some(dir) => format!(
                "secret {name:?} is not defined: there is no file {} (write the value there, mode 600)",
                dir.join(name).display()
            ),
            None => format!(
                "secret {name:?} is not defined: the master has no secretsDir (set `secretsDir = DIR` in [:master:] and write the value in DIR/{name}, mode 600)"
            ),
        }
    }
}

fn check_mode(path: &Path, mode: u32, fix: &'static str) -> Result<(), SecretsError> {
    if mode & 0o077 != 0 {
        return Err(SecretsError::Permissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
            fix,
        });
    }
    Ok(())
}

/// Shortest encoded form that is redacted: shorter base64 or URL-encoded pieces
/// would match ordinary text everywhere (the value itself always is).
const MIN_FORM_LEN: usize = 4;

/// Finds every form of every secret in text at once and replaces it with
/// `<secret:NAME>`.
pub struct Redactor {
    ac: AhoCorasick,
    /// The replacement for each pattern, by pattern id.
    replacements: Vec<String>,
    /// The longest pattern, in bytes.
    max_len: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.replacements.len())
            .finish()
    }
}

/// The forms of `value` that are redacted: the value, its URL encodings and its
/// base64 encodings (see the module docs).
pub fn forms(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![value.to_string()];
    let add = |s: String, out: &mut Vec<String>| {
        if s.len() >= MIN_FORM_LEN && !out.contains(&s) {
            out.push(s);
        }
    };
    // URL encodings: everything but the unreserved characters, in upper- and
    // lower-case hex, and the form encoding's `+` for a space.
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let upper = percent_encoding::utf8_percent_encode(value, KEEP).to_string();
    add(lower_hex(&upper), &mut out);
    add(upper.replace("%20", "+"), &mut out);
    add(upper, &mut out);
    // Each line of a multi-line secret (a key) on its own, as whatever prints
    // it may print it a line at a time.
    if value.contains('\n') {
        for line in value.lines() {
            add(line.trim_end_matches('\r').to_string(), &mut out);
        }
    }
    let bytes = value.as_bytes();
    for (padded, bare) in [(STANDARD, STANDARD_NO_PAD), (URL_SAFE, URL_SAFE_NO_PAD)] {
        add(padded.encode(bytes), &mut out);
        add(bare.encode(bytes), &mut out);
        // Inside longer data the value starts 0, 1 or 2 bytes into a group of
        // three: the characters that hold only its bits.
        for k in 0..3usize {
            let mut data = vec![0u8; k];
            data.extend_from_slice(bytes);
            let enc = bare.encode(&data);
            let skip = [0, 2, 3][k];
            let mut end = enc.len();
            if data.len() % 3 != 0 {
                // The last character mixes in the bits of what follows.
                end -= 1;
            }
            if end > skip {
                add(enc[skip..end].to_string(), &mut out);
            }
        }
    }
    out
}

fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let hex = rest.get(i + 1..i + 3).unwrap_or("");
        out.push('%');
        out.push_str(&hex.to_ascii_lowercase());
        rest = &rest[(i + 1 + hex.len()).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

impl Redactor {
    /// The redactor of `secrets` (name → value); `None` when there are none.
    pub fn new(secrets: &BTreeMap<String, String>) -> Option<Redactor> {
        let mut patterns: Vec<String> = Vec::new();
        let mut replacements = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            for form in forms(value) {
                patterns.push(form);
                replacements.push(format!("<secret:{name}>"));
            }
        }
        if patterns.is_empty() {
            return None;
        }
        let max_len = patterns.iter().map(String::len).max().unwrap_or(1);
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok()?;
        Some(Redactor {
            ac,
            replacements,
            max_len,
        })
    }

    /// How many forms it looks for and with which automaton (for benchmarks).
    pub fn describe(&self) -> String {
        format!(
            "{} forms, longest {} bytes, {:?}",
            self.replacements.len(),
            self.max_len,
            self.ac.kind()
        )
    }

    /// The longest form, in bytes: what a stream keeps back between chunks is
    /// one byte less.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// `text` with every form of every secret replaced (a complete text: nothing
    /// is kept back).
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out: Option<String> = None;
        let mut pos = 0;
        for m in self.ac.find_iter(text) {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[pos..m.start()]);
            o.push_str(&self.replacements[m.pattern().as_usize()]);
            pos = m.end();
        }
        match out {
            None => Cow::Borrowed(text),
            Some(mut o) => {
                o.push_str(&text[pos..]);
                Cow::Owned(o)
            }
        }
    }
}

/// Redaction of one stream of output that arrives in chunks: what could be the
/// start of a secret continued in the next chunk is kept back until it comes.
#[derive(Debug)]
pub struct StreamRedactor {
    redactor: Arc<Redactor>,
    tail: String,
}

impl StreamRedactor {
    pub fn new(redactor: Arc<Redactor>) -> StreamRedactor {
        StreamRedactor {
            redactor,
            tail: String::new(),
        }
    }

    /// The next chunk: the redacted text that can be passed on now (maybe
    /// empty); up to [`Redactor::max_len`] − 1 bytes wait for the next chunk.
    pub fn push(&mut self, chunk: &str) -> String {
        let (mut first, second) = self.push_owned(chunk.to_string());
        first.push_str(&second);
        first
    }

    /// [`StreamRedactor::push`] without copying the chunk when nothing in it
    /// is a secret (the common case, and the one that costs): the text that
    /// can go now, in two pieces — the end of the previous chunk, then this
    /// one's — either of which may be empty.
    pub fn push_owned(&mut self, chunk: String) -> (String, String) {
        let keep = self.redactor.max_len - 1;
        if self.tail.is_empty() {
            return (String::new(), self.scan(chunk, 0));
        }
        if chunk.len() < 2 * self.redactor.max_len {
            let mut buf = std::mem::take(&mut self.tail);
            buf.push_str(&chunk);
            return (String::new(), self.scan(buf, 0));
        }
        // Where the two meet: the tail and enough of the chunk to end any
        // match that starts in the tail.
        let tail = std::mem::take(&mut self.tail);
        let mut cut = keep;
        while !chunk.is_char_boundary(cut) {
            cut += 1;
        }
        let mut boundary = String::with_capacity(tail.len() + cut);
        boundary.push_str(&tail);
        boundary.push_str(&chunk[..cut]);
        let mut first = String::with_capacity(tail.len() + 16);
        let mut pos = 0;
        for m in self.redactor.ac.find_iter(&boundary) {
            if m.start() >= tail.len() {
                break;
            }
            first.push_str(&boundary[pos..m.start()]);
            first.push_str(&self.redactor.replacements[m.pattern().as_usize()]);
            pos = m.end();
        }
        let start = if pos > tail.len() {
            pos - tail.len()
        } else {
            first.push_str(&boundary[pos..tail.len()]);
            0
        };
        (first, self.scan(chunk, start))
    }

    /// `buf[start..]` redacted, but for its last bytes, which become the tail.
    fn scan(&mut self, mut buf: String, start: usize) -> String {
        let keep = self.redactor.max_len - 1;
        let mut emit_end = buf.len().saturating_sub(keep).max(start);
        while !buf.is_char_boundary(emit_end) {
            emit_end -= 1;
        }
        // A match starting before `emit_end` is complete within `buf` (no form
        // is longer than `max_len`), so the leftmost-longest one is final.
        let input = aho_corasick::Input::new(&buf).span(start..buf.len());
        let mut found = self
            .redactor
            .ac
            .find_iter(input)
            .take_while(|m| m.start() < emit_end)
            .peekable();
        if found.peek().is_none() {
            drop(found);
            self.tail = buf[emit_end..].to_string();
            buf.truncate(emit_end);
            if start > 0 {
                buf.drain(..start);
            }
            return buf;
        }
        let mut out = String::with_capacity(buf.len());
        let mut pos = start;
        for m in found {
            out.push_str(&buf[pos..m.start()]);
            out.push_str(&self.redactor.replacements[m.pattern().as_usize()]);
            pos = m.end();
        }
        let end = emit_end.max(pos);
        out.push_str(&buf[pos..end]);
        self.tail = buf[end..].to_string();
        out
    }

    /// The end of the stream: what was kept back, redacted.
    pub fn finish(&mut self) -> String {
        let tail = std::mem::take(&mut self.tail);
        self.redactor.redact(&tail).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> Secrets {
        Secrets::from_values(
            None,
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn every_form_is_redacted() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let value = "s3cr?t/va+lue ü";
        let s = secrets(&[("TOKEN", value)]);
        let r = s.redactor().unwrap();
        for prefix in ["", "x", "xy", "xyz"] {
            for (text, what) in [
                (format!("{prefix}{value}"), "value"),
                (STANDARD.encode(format!("{prefix}{value}")), "base64"),
                (
                    URL_SAFE_NO_PAD.encode(format!("{prefix}{value}")),
                    "base64url",
                ),
                (
                    STANDARD.encode(format!("{prefix}{value} and more")),
                    "base64 inside",
                ),
            ] {
                let out = r.redact(&text);
                assert!(out.contains("<secret:TOKEN>"), "{what} {prefix:?}: {out}");
            }
        }
        let url = percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        assert_eq!(r.redact(&format!("u={url}")), "u=<secret:TOKEN>");
        assert_eq!(r.redact(&url.to_ascii_lowercase()), "<secret:TOKEN>");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn a_stream_finds_secrets_split_at_every_byte() {
        let s = secrets(&[("A", "hunter2-long"), ("B", "päss\nword")]);
        let r = s.redactor().unwrap().clone();
        let text = "before hunter2-long middle päss\nword after hunter2-long";
        let want = "before <secret:A> middle <secret:B> after <secret:A>";
        for i in 0..=text.len() {
            for j in i..=text.len() {
                if !text.is_char_boundary(i) || !text.is_char_boundary(j) {
                    continue;
                }
                let mut st = StreamRedactor::new(r.clone());
                let mut out = st.push(&text[..i]);
                out.push_str(&st.push(&text[i..j]));
                out.push_str(&st.push(&text[j..]));
                out.push_str(&st.finish());
                assert_eq!(out, want, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn a_stream_of_long_chunks_matches_the_whole_text() {
        let s = secrets(&[("A", "hunter2-long"), ("B", "päss\nword")]);
        let r = s.redactor().unwrap().clone();
        let mut text = String::new();
        for i in 0..400 {
            text.push_str(&format!("line {i} ü "));
            if i % 7 == 0 {
                text.push_str("hunter2-long");
            }
            if i % 11 == 0 {
                text.push_str("päss\nword");
            }
            text.push('\n');
        }
        let want = r.redact(&text).into_owned();
        for size in [1, 5, 13, 24, 25, 26, 40, 64, 100, 1000] {
            let mut st = StreamRedactor::new(r.clone());
            let mut out = String::new();
            let mut rest = text.as_str();
            while !rest.is_empty() {
                let mut n = size.min(rest.len());
                while !rest.is_char_boundary(n) {
                    n += 1;
                }
                let (a, b) = st.push_owned(rest[..n].to_string());
                out.push_str(&a);
                out.push_str(&b);
                rest = &rest[n..];
            }
            out.push_str(&st.finish());
            assert_eq!(out, want, "chunks of {size}");
        }
    }

    #[test]
    fn names_and_permissions() {
        assert!(valid_name("GITHUB_TOKEN") && valid_name("a.b-c") && valid_name("_x"));
        assert!(!valid_name("") && !valid_name(".hidden") && !valid_name("-x"));
        assert!(!valid_name("a b") && !valid_name("a/b") && !valid_name("a~"));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("secrets");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("tok"), "v1\n").unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(d.join("tok"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secrets::load(&d).unwrap_err().to_string();
        assert!(e.contains("tok") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(d.join("tok"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Secrets::load(&d).unwrap();
        assert_eq!(s.get("tok"), Some("v1"));
        assert!(!format!("{s:?}").contains("v1"));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        let e = Secrets::load(&d).unwrap_err().to_string();
        assert!(e.contains("chmod 700"), "{e}");
    }
}
