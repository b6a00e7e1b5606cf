//! The dependency rule of `src/lib.rs`, checked: every `crate::MODULE` path in
//! `src/**/*.rs` (in `use` lines, grouped `use crate::{a, b}` lists and inline
//! paths; not in comments, doc text or string literals) must point to a module of
//! a lower layer than the file's own, and no two modules may import each other.
//!
//! The layers are read from the ```text block after "Layers, top first" in the
//! doc of `src/lib.rs`, so the rule the crate states and the rule checked here are
//! one text. A module that is missing from the table fails too: a new module must
//! be given its place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where a path points: (file, line, module imported).
type Use = (PathBuf, usize, String);

/// The layers of `src/lib.rs`, top first: module name -> rank (higher imports lower).
fn layers(lib_rs: &str) -> BTreeMap<String, usize> {
    let start = lib_rs
        .find("Layers, top first")
        .expect("src/lib.rs states its layers after \"Layers, top first\"");
    let rest = &lib_rs[start..];
    let open = rest.find("//! ```text").expect("a ```text block of layers") + "//! ```text".len();
    let block = &rest[open..];
    let close = block.find("//! ```").expect("the layers block ends");
    let rows: Vec<Vec<String>> = block[..close]
        .lines()
        .map(|l| l.trim().trim_start_matches("//!").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_whitespace()
                .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .map(String::from)
                .collect()
        })
        .collect();
    assert!(rows.len() > 2, "too few layers in src/lib.rs: {rows:?}");
    let n = rows.len();
    let mut out = BTreeMap::new();
    for (i, row) in rows.into_iter().enumerate() {
        for m in row {
            assert!(
                out.insert(m.clone(), n - i).is_none(),
                "{m} is in two layers"
            );
        }
    }
    out
}

/// `text` with comments, string and char literals blanked out (newlines kept, so
/// line numbers stay), leaving only code.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            // A raw string r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &c[i..j.min(c.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a): code.
            let lit_end = if next == Some('\\') {
                (i + 2..c.len()).find(|&k| c[k] == '\'').map(|k| k + 1)
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match lit_end {
                Some(end) => {
                    for &ch in &c[i..end] {
                        out.push(blank(ch));
                    }
                    i = end;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident_at(c: &[char], mut i: usize) -> (String, usize) {
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    let start = i;
    while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
        i += 1;
    }
    (c[start..i].iter().collect(), i)
}

/// The top-level names a piece of code reaches through `crate::`: (line, name).
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let word = |k: usize| k == 0 || !(c[k - 1].is_alphanumeric() || c[k - 1] == '_');
    while i < c.len() {
        if c[i] == '\n' {
            line += 1;
        }
        let at_crate = word(i) && c[i..].starts_with(&['c', 'r', 'a', 't', 'e']) && {
            let mut j = i + 5;
            while j < c.len() && c[j].is_whitespace() {
                j += 1;
            }
            c.get(j) == Some(&':') && c.get(j + 1) == Some(&':')
        };
        if !at_crate {
            i += 1;
            continue;
        }
        let mut j = i + 5;
        while c[j] != ':' {
            j += 1;
        }
        j += 2;
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        if c.get(j) == Some(&'{') {
            // use crate::{a, b::{c, d}, e as f}: the names at depth one.
            let mut depth = 0;
            let mut k = j;
            let mut expect_name = true;
            let mut l = line;
            while k < c.len() {
                match c[k] {
                    '{' => {
                        depth += 1;
                        k += 1;
                        expect_name = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        k += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' => {
                        k += 1;
                        expect_name = depth == 1;
                    }
                    '\n' => {
                        l += 1;
                        k += 1;
                    }
                    ch if ch.is_whitespace() => k += 1,
                    _ if expect_name => {
                        let (name, end) = ident_at(&c, k);
                        if !name.is_empty() {
                            out.push((l, name));
                        }
                        expect_name = false;
                        k = end.max(k + 1);
                    }
                    _ => k += 1,
                }
            }
            i = j + 1;
        } else {
            let (name, end) = ident_at(&c, j);
            if !name.is_empty() {
                out.push((line, name));
            }
            i = end.max(i + 1);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None`: lib.rs, main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib") | Some("main") => None,
        Some(m) => Some(m.to_string()),
        None => Some(first),
    }
}

#[test]
fn modules_import_only_lower_layers_and_never_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let rank = layers(&lib);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut problems = Vec::new();
    for m in &modules {
        if !rank.contains_key(m) {
            problems.push(format!(
                "module {m} has no layer: add it to the layers in src/lib.rs"
            ));
        }
    }
    for m in rank.keys() {
        if !modules.contains(m) {
            problems.push(format!(
                "src/lib.rs names a layer for {m}, which does not exist"
            ));
        }
    }
    let mut edges: BTreeMap<(String, String), Use> = BTreeMap::new();
    for f in &files {
        let Some(from) = module_of(&src, f) else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        for (line, to) in crate_paths(&code) {
            // Items of the crate root (VERSION) and the module itself are fine.
            if to == from || !modules.contains(&to) {
                continue;
            }
            let rel = f.strip_prefix(root).unwrap().to_path_buf();
            edges
                .entry((from.clone(), to.clone()))
                .or_insert((rel.clone(), line, to.clone()));
            let (Some(&a), Some(&b)) = (rank.get(&from), rank.get(&to)) else {
                continue;
            };
            if a <= b {
                problems.push(format!(
                    "{}:{line}: {from} (layer {a}) imports crate::{to} (layer {b}); \
                     a module may import only lower layers (see src/lib.rs)",
                    rel.display()
                ));
            }
        }
    }
    for ((a, b), (file, line, _)) in &edges {
        if a < b {
            if let Some((file2, line2, _)) = edges.get(&(b.clone(), a.clone())) {
                problems.push(format!(
                    "{a} and {b} import each other: {}:{line} and {}:{line2}",
                    file.display(),
                    file2.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The rule is not empty: the top imports something below it.
    assert!(
        edges.keys().any(|(a, _)| a == "app"),
        "app imports nothing?"
    );
}

#[test]
fn the_scanner_sees_code_and_ignores_comments_and_strings() {
    let text = r##"//! Doc about crate::web.
use crate::engine::Engine;
use crate::{db, slavelink::{auth, SlaveHandle}, sources as s};
/* crate::app in a block /* nested crate::cli */ */
fn f<'a>(x: &'a str) -> char {
    let _ = "crate::web in a string \" crate::app";
    let _ = r#"crate::cli"#;
    let _ = crate::logstore::read(x);
    '"'
}
/// crate::schedulers in doc
fn g() { crate :: config::load(); }
"##;
    let got = crate_paths(&code_only(text));
    assert_eq!(
        got,
        vec![
            (2, "engine".to_string()),
            (3, "db".to_string()),
            (3, "slavelink".to_string()),
            (3, "sources".to_string()),
            (8, "logstore".to_string()),
            (12, "config".to_string()),
        ]
    );
}

#[test]
fn the_layers_block_is_read_top_first() {
    let lib = "//! Layers, top first:\n//!\n//! ```text\n//! app\n//! web  schedulers\n//! engine\n//! db   (a note)\n//! ```\n";
    let r = layers(lib);
    assert!(r["app"] > r["web"]);
    assert_eq!(r["web"], r["schedulers"]);
    assert!(r["engine"] > r["db"]);
    assert!(!r.contains_key("note"));
}
