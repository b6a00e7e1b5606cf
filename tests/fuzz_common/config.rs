//! Fuzz targets of what an admin writes: `master.ini` (the INI reader and the
//! whole validation, down to the step specs a builder would run), `slave.ini`,
//! the argv splitter of command strings and the cron parser of `nightly`.

use std::path::Path;
use std::time::Duration;

use autobot::config::{self, ConfigError, SlaveIni};
use autobot::factory::{self, argv};
use autobot::schedulers::cron::Cron;
use proptest::collection::vec;
use proptest::prelude::*;

use super::gen::{edge_i64, mutate_str, mutation, weird_string, Mutation};
use super::harness::{fuzz, MemoryBound, Report, Target};

/// Values an INI key may get: numbers at the edges, ports, signs, cron lines,
/// URLs, booleans, lists, quotes and weird characters.
fn ini_value() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "9010", "+9010", "-1", "0", "65535", "65536", "99999999999999999999", "", " ",
            "true", "false", "yes", "2", "* * * * *", "0 3 * * 1-5", "61 * * * *",
            "*/4294967295 * * * *", "1/4294967295 * * * *", "https://h/r.git#main",
            "./repo", "../x", "git@h:r.git", "a b c", "hello", "fac", "*", "make all",
            "\"unterminated", "'x y' \"z\"", "VAR=1 X=\"a b\"", "%(revision)s", "60 3",
            "slave", "master", "update", "clobber", "copy", "export", "full", "\\",
        ])
        .prop_map(str::to_string),
        2 => edge_i64().prop_map(|n| n.to_string()),
        2 => weird_string(),
    ]
    .boxed()
}

fn factory_keys() -> Vec<String> {
    let mut keys: Vec<String> = factory::types()
        .iter()
        .flat_map(|t| t.params.iter().map(|p| p.name.to_string()))
        .collect();
    keys.extend(
        [
            "type",
            "git",
            "hg",
            "description",
            "category",
            "revlink",
            "branches",
            "files",
            "periodic",
            "nightly",
            "dependsOn",
            "locks",
            "mode",
            "alwaysUseLatest",
            "retry",
            "treeStable",
            "pollInterval",
            "platform",
            "step.one",
            "step.two.command",
            "step.one.env.CFLAGS",
            "step.one.timeout",
            "step.one.workdir",
            "step.one.locks",
            "step.one.haltOnFailure",
            "step.x.éé",
            "step.x.aéé",
            "step.",
            "step..env.",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    keys.sort();
    keys.dedup();
    keys
}

const MASTER_KEYS: &[&str] = &[
    "slaveport",
    "htmlport",
    "publichtmlport",
    "pollInterval",
    "treeStable",
    "allowForce",
    "projectName",
    "projectURL",
    "buildbotURL",
    "botname",
    "ircHost",
    "ircChannels",
    "ircTls",
    "ircPassword",
    "ircNotify",
    "domain",
    "recipients",
    "changeuser",
    "changepassword",
    "github_secret",
    "gitlab_secret",
    "gitea_secret",
    "favicon",
    "robots_txt",
    "debug",
    "keepaliveInterval",
    "password",
    "factories",
    "os",
    "max_builds",
];

/// One section: a header and its keys.
fn section() -> BoxedStrategy<(String, Vec<(String, String)>)> {
    let fkeys = factory_keys();
    let name = prop_oneof![
        3 => prop::sample::select(vec![
            ":master:", "slave:one", "slave:two", "lock:l", "users", "DEFAULT", "hello",
            "fac", "shell-thing", "slave:", "lock:", "slave:a:b",
        ])
        .prop_map(str::to_string),
        1 => weird_string(),
    ];
    let key = prop_oneof![
        3 => prop::sample::select(MASTER_KEYS).prop_map(str::to_string),
        4 => prop::sample::select(fkeys).prop_map(|s| s.to_string()),
        1 => prop::sample::select(vec!["scope", "maxCount", "alice"]).prop_map(str::to_string),
        1 => weird_string(),
    ];
    (name, vec((key, ini_value()), 0..8)).boxed()
}

/// How a line is written: separator, spacing, comment, line ending.
#[derive(Debug, Clone)]
pub struct Style {
    sep: &'static str,
    indent: &'static str,
    comment: &'static str,
    eol: &'static str,
}

fn style() -> impl Strategy<Value = Style> {
    (
        prop::sample::select(vec![" = ", "=", ": ", ":", " =  "]),
        prop::sample::select(vec!["", "", " ", "\t"]),
        prop::sample::select(vec!["", "", " ; note", ";x", " # not a comment"]),
        prop::sample::select(vec!["\n", "\n", "\r\n", "\r", "\n\n"]),
    )
        .prop_map(|(sep, indent, comment, eol)| Style {
            sep,
            indent,
            comment,
            eol,
        })
}

fn render(sections: &[(String, Vec<(String, String)>)], st: &Style) -> String {
    let mut s = String::new();
    for (name, keys) in sections {
        s.push_str(&format!("[{name}]{}{}", st.comment, st.eol));
        for (k, v) in keys {
            s.push_str(&format!(
                "{}{k}{}{v}{}{}",
                st.indent, st.sep, st.comment, st.eol
            ));
        }
    }
    s
}

/// The documented example, which passes `checkconfig`.
pub const EXAMPLE: &str = include_str!("../../master.ini.example");

/// One change to a line of the example.
#[derive(Debug, Clone)]
pub enum LineEdit {
    /// Give the `key = value` line at this index (modulo) another value.
    Value(usize, String),
    Drop(usize),
    Duplicate(usize),
    /// Insert `key = value` before the line at this index.
    Insert(usize, String, String),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    let key = prop_oneof![
        prop::sample::select(MASTER_KEYS).prop_map(str::to_string),
        prop::sample::select(factory_keys()),
        weird_string(),
    ];
    prop_oneof![
        6 => (any::<usize>(), ini_value()).prop_map(|(i, v)| LineEdit::Value(i, v)),
        1 => any::<usize>().prop_map(LineEdit::Drop),
        1 => any::<usize>().prop_map(LineEdit::Duplicate),
        2 => (any::<usize>(), key, ini_value()).prop_map(|(i, k, v)| LineEdit::Insert(i, k, v)),
    ]
}

/// The example with some lines edited.
pub fn edit_example(edits: &[LineEdit]) -> String {
    let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_string).collect();
    let kv: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            !t.starts_with([';', '#', '[']) && t.contains('=')
        })
        .map(|(i, _)| i)
        .collect();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            LineEdit::Value(i, v) if !kv.is_empty() => {
                let at = kv[i % kv.len()];
                if let Some(l) = lines.get_mut(at) {
                    if let Some((k, _)) = l.split_once('=') {
                        *l = format!("{k}= {v}");
                    }
                }
            }
            LineEdit::Drop(i) if !lines.is_empty() => {
                lines.remove(i % n);
            }
            LineEdit::Duplicate(i) if !lines.is_empty() => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            LineEdit::Insert(i, k, v) => lines.insert(i % n, format!("{k} = {v}")),
            _ => {}
        }
    }
    lines.join("\n") + "\n"
}

/// A master.ini: the documented example with edited lines, or sections of
/// plausible keys and values rendered in some style; either maybe mutated at the
/// byte level (BOM, NUL, cut lines, duplicated bytes).
pub fn master_ini() -> BoxedStrategy<String> {
    prop_oneof![
        1 => (vec(line_edit(), 0..4), prop::option::weighted(0.15, vec(mutation(), 1..3)))
            .prop_map(|(edits, muts)| {
                let text = edit_example(&edits);
                match muts {
                    Some(m) => mutate_str(&text, &m),
                    None => text,
                }
            }),
        1 => sections_ini(),
    ]
    .boxed()
}

fn sections_ini() -> BoxedStrategy<String> {
    (
        vec(section(), 0..7),
        style(),
        prop::option::weighted(0.3, vec(mutation(), 1..4)),
        prop::sample::select(vec!["", "", "\u{feff}", "\0", "# c\n"]),
    )
        .prop_map(|(sections, st, muts, prefix)| {
            let text = format!("{prefix}{}", render(&sections, &st));
            match muts {
                Some(m) => mutate_str(&text, &m),
                None => text,
            }
        })
        .boxed()
}

/// `load_from_str` on a generated master.ini: no panic; an error names the file
/// (and a line that exists); a configuration it accepts has builders whose steps
/// can be made, and timers that fit in time arithmetic.
pub fn master(cases: u64) -> Report {
    let target = Target {
        name: "config_master_ini",
        limit: Duration::from_secs(10),
        memory: MemoryBound {
            base: 8 << 20,
            per_input_byte: 64,
        },
    };
    let projects = autobot::config::projects(None).expect("the bundled projects parse");
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("master.ini");
    fuzz(&target, cases, master_ini(), String::len, |text| {
        check_master(&file, dir.path(), text, &projects)
    })
}

pub fn check_master(
    file: &Path,
    basedir: &Path,
    text: &str,
    projects: &[autobot::config::Project],
) -> Result<(), String> {
    match config::load_from_str(file, basedir, text, projects) {
        Err(e) => {
            let msg = e.to_string();
            if !msg.contains("master.ini") {
                return Err(format!("the error does not name the file: {msg}"));
            }
            if let ConfigError::At { line, .. } = &e {
                let lines = text.split('\n').count();
                if *line == 0 || *line > lines {
                    return Err(format!(
                        "the error names line {line} of a {lines}-line file: {msg}"
                    ));
                }
            }
            Ok(())
        }
        Ok(cfg) => {
            let _ = config::summary(&cfg);
            for secs in [cfg.poll_interval, cfg.tree_stable, cfg.keepalive_interval] {
                if std::time::Instant::now()
                    .checked_add(Duration::from_secs(secs))
                    .is_none()
                {
                    return Err(format!(
                        "accepted a timer of {secs} s, which overflows a clock"
                    ));
                }
            }
            for b in cfg.builders() {
                let (Some(f), Some(s)) = (cfg.factory(&b.factory), cfg.slave(&b.slave)) else {
                    return Err(format!(
                        "builder {} names a missing factory or slave",
                        b.name
                    ));
                };
                let _ = factory::build_steps(&f.recipe(), s.os.as_str());
                let _ = factory::build_properties(&f.recipe(), s.os.as_str());
            }
            Ok(())
        }
    }
}

/// A slave.ini as `create-slave` writes it, with values and lines mutated.
pub fn slave_ini() -> BoxedStrategy<String> {
    let value = |pool: Vec<&'static str>| {
        prop_oneof![
            6 => prop::sample::select(pool[..1].to_vec()).prop_map(str::to_string),
            3 => prop::sample::select(pool).prop_map(str::to_string),
            1 => edge_i64().prop_map(|n| n.to_string()),
            1 => weird_string(),
        ]
    };
    let line = prop_oneof![
        value(vec![
            "localhost:9010",
            "h:0",
            "h:65536",
            "[::1]:9010",
            ":9010",
            "h:",
            "h:+1",
            "h:x"
        ])
        .prop_map(|v| format!("master = {v}")),
        value(vec!["slave", "", "a:b"]).prop_map(|v| format!("name = {v}")),
        value(vec!["pw", "", "\"quoted\""]).prop_map(|v| format!("password = {v}")),
        value(vec!["600", "0", "18446744073709551615", "-1", "1e3"])
            .prop_map(|v| format!("keepalive = {v}")),
        value(vec!["022", "0777", "7777777", "8", "-0", "0o22"])
            .prop_map(|v| format!("umask = {v}")),
        value(vec!["true", "false", "1", "maybe"]).prop_map(|v| format!("usepty = {v}")),
        weird_string(),
    ];
    let required = (
        value(vec![
            "localhost:9010",
            "h:0",
            "h:65536",
            "[::1]:9010",
            ":9010",
            "h:",
            "h:+1",
            "h:x",
        ])
        .prop_map(|v| format!("master = {v}")),
        value(vec!["slave", "", "a:b"]).prop_map(|v| format!("name = {v}")),
        value(vec!["pw", "", "\"quoted\""]).prop_map(|v| format!("password = {v}")),
    );
    (
        prop::sample::select(vec![
            "[slave]", "[slave]", "[slave]", "[slave]", "[Slave]", "", "[other]", "[slave",
        ]),
        (required, vec(line, 0..5)).prop_map(|((m, n, p), more)| {
            let mut all = vec![m, n, p];
            all.extend(more);
            all
        }),
        prop::sample::select(vec!["\n", "\r\n"]),
        prop::option::weighted(0.3, vec(mutation(), 1..4)),
    )
        .prop_map(
            |(header, lines, eol, muts): (&str, Vec<String>, &str, Option<Vec<Mutation>>)| {
                let text = format!("{header}{eol}{}{eol}", lines.join(eol));
                match muts {
                    Some(m) => mutate_str(&text, &m),
                    None => text,
                }
            },
        )
        .boxed()
}

/// `SlaveIni::load` on a generated slave.ini written to a real file: no panic; an
/// error names the file; what it accepts is usable (a port that can be dialled,
/// a keepalive that fits in time arithmetic, a umask of permission bits).
pub fn slave(cases: u64) -> Report {
    let target = Target {
        name: "config_slave_ini",
        limit: Duration::from_secs(10),
        memory: MemoryBound {
            base: 1 << 20,
            per_input_byte: 64,
        },
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("slave.ini");
    fuzz(&target, cases, slave_ini(), String::len, |text| {
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        check_slave(&file)
    })
}

pub fn check_slave(file: &Path) -> Result<(), String> {
    match SlaveIni::load(file) {
        Err(e) => {
            let msg = e.to_string();
            if msg.contains("slave.ini") {
                Ok(())
            } else {
                Err(format!("the error does not name the file: {msg}"))
            }
        }
        Ok(ini) => {
            if ini.master_port == 0 {
                return Err("accepted master port 0".into());
            }
            if ini.umask > 0o777 {
                return Err(format!("accepted umask {:o}", ini.umask));
            }
            if tokio::time::Instant::now()
                .checked_add(Duration::from_secs(ini.keepalive).saturating_mul(2))
                .is_none()
            {
                return Err(format!(
                    "accepted keepalive {}, which overflows a clock",
                    ini.keepalive
                ));
            }
            let _ = ini.render();
            Ok(())
        }
    }
}

/// Command strings: quotes, escapes, whitespace and other shell characters.
pub fn command_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => vec(
            prop::sample::select(vec![
                "a", "make", " ", "  ", "\t", "\n", "'", "\"", "\\", "\\\"", "$", "`", ";", "|",
                "é", "\u{3000}", "\0", "--x=\"a b\"", "''", "\"\"", "%(x)s", "#",
            ]),
            0..24,
        )
        .prop_map(|parts| parts.concat()),
        1 => weird_string(),
    ]
    .boxed()
}

/// Quote a word for the splitter (single quotes; `'` as `\'` outside them).
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// `argv::split`: no panic; the words it returns, quoted back, split to the same
/// words.
pub fn argv_split(cases: u64) -> Report {
    let target = Target {
        name: "config_argv_split",
        limit: Duration::from_secs(5),
        memory: MemoryBound {
            base: 64 << 10,
            per_input_byte: 16,
        },
    };
    fuzz(
        &target,
        cases,
        command_string(),
        String::len,
        |s| match argv::split(s) {
            Err(e) if e.is_empty() => Err("an empty error".into()),
            Err(_) => Ok(()),
            Ok(words) => {
                let again = words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
                match argv::split(&again) {
                    Ok(back) if back == words => Ok(()),
                    other => Err(format!("{words:?} quoted as {again:?} splits to {other:?}")),
                }
            }
        },
    )
}

/// Cron expressions: five fields of items with edge numbers, or anything.
pub fn cron_expr() -> BoxedStrategy<String> {
    let num = prop_oneof![
        3 => 0u64..62,
        1 => prop::sample::select(vec![0u64, 7, 12, 23, 24, 31, 32, 59, 60, 4294967295, 4294967296, u64::MAX]),
    ]
    .prop_map(|n| n.to_string());
    let item = prop_oneof![
        Just("*".to_string()),
        num.clone(),
        (num.clone(), num.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
        num.clone().prop_map(|n| format!("*/{n}")),
        (num.clone(), num.clone()).prop_map(|(a, n)| format!("{a}/{n}")),
        (num.clone(), num.clone(), num).prop_map(|(a, b, n)| format!("{a}-{b}/{n}")),
        prop::sample::select(vec![
            "", "-", "/", "*/", "+5", "-1", "1--2", "a", "MON", "é"
        ])
        .prop_map(str::to_string),
    ];
    let field = vec(item, 1..4).prop_map(|items| items.join(","));
    prop_oneof![
        6 => (vec(field, 3..7), prop::sample::select(vec![" ", "  ", "\t", " \n "]))
            .prop_map(|(f, sep)| f.join(sep)),
        1 => weird_string(),
    ]
    .boxed()
}

/// `Cron::parse`: no panic; for what it accepts, `next_after` returns a later
/// minute that matches and no minute before it does (checked minute by minute
/// up to two days), within the time bound.
pub fn cron(cases: u64) -> Report {
    let target = Target {
        name: "config_cron",
        limit: Duration::from_secs(10),
        memory: MemoryBound {
            base: 64 << 10,
            per_input_byte: 16,
        },
    };
    let input = (
        cron_expr(),
        prop_oneof![0i64..4_102_444_800, -100_000i64..100_000],
    );
    fuzz(
        &target,
        cases,
        input,
        |(s, _)| s.len(),
        |(expr, t)| {
            let Ok(c) = Cron::parse(expr) else {
                return Ok(());
            };
            match c.next_after(*t) {
                None => Ok(()),
                Some(n) => {
                    if n <= *t || n % 60 != 0 || !c.matches(n) {
                        return Err(format!(
                            "next_after({t}) = {n}, which is not a later matching minute"
                        ));
                    }
                    if n - t <= 2 * 86_400 {
                        let mut m = t.div_euclid(60) * 60 + 60;
                        while m < n {
                            if c.matches(m) {
                                return Err(format!("next_after({t}) = {n} skipped {m}"));
                            }
                            m += 60;
                        }
                    }
                    Ok(())
                }
            }
        },
    )
}
