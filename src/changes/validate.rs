//! The one validation every Change and every build request passes before the master
//! stores it: `sendchange`, `POST /api/v1/changes`, the forges' webhooks, the pollers
//! and forced builds all come through here.
//!
//! Two kinds of rule:
//!
//! * **Values that reach a command line.** A revision, a branch and every build
//!   property can end up as one argument of a step (`git log %(revision)s`, with or
//!   without a checkout step, with or without `alwaysUseLatest`). None of them may
//!   start with `-` (git or hg would take it as an option: `--output=FILE` writes a
//!   file anywhere) or hold a control character. Inner spaces are fine: a value
//!   stays one argument (and becomes a quoted variable in a shell script).
//! * **Sizes.** Every field has a cap no real project reaches (the README's "Changes"
//!   section lists them), so one Change stays a few MiB at most however it came in.
//!   Submitted Changes over a cap are refused with the field, its size and the cap;
//!   a poller's commit is [`fit`] instead (a huge message is cut, with a marker),
//!   since refusing it would stall the poller on that commit for ever.
//!
//! Errors name the field (`files[3]`, `properties["x"]`) and show at most the first
//! 60 characters of the value, escaped, so an error message is safe to log.

use std::collections::BTreeMap;

use crate::db::changes::NewChange;

/// Longest `who` (`Name <email>`), in bytes.
pub const MAX_WHO: usize = 1024;
/// Longest `comments` (a commit message, not a log file), in bytes.
pub const MAX_COMMENTS: usize = 1 << 20;
/// Most files one Change may list.
pub const MAX_FILES: usize = 100_000;
/// Longest file name, in bytes (Linux's `PATH_MAX`).
pub const MAX_FILE_NAME: usize = 4096;
/// Most bytes all the file names of one Change may add up to.
pub const MAX_FILES_BYTES: usize = 4 << 20;
/// Longest revision, in bytes (a SHA-256 commit id is 64).
pub const MAX_REVISION: usize = 256;
/// Longest branch name, in bytes.
pub const MAX_BRANCH: usize = 1024;
/// Longest repository URL, in bytes.
pub const MAX_REPOSITORY: usize = 4096;
/// Longest `project` and `category`, in bytes.
pub const MAX_NAME: usize = 1024;
/// Most links one Change may carry.
pub const MAX_LINKS: usize = 100;
/// Longest link, in bytes.
pub const MAX_LINK: usize = 4096;
/// Latest `when` accepted: the last second of the year 9999 (pages print dates).
pub const MAX_WHEN: i64 = 253_402_300_799;
/// Most properties one build request may set.
pub const MAX_PROPERTIES: usize = 100;
/// Longest property name, in bytes.
pub const MAX_PROPERTY_NAME: usize = 256;
/// Longest property value, in bytes.
pub const MAX_PROPERTY_VALUE: usize = 64 << 10;
/// Most bytes the names and values of a request's properties may add up to.
pub const MAX_PROPERTIES_BYTES: usize = 1 << 20;
/// Longest reason of a forced build, in bytes.
pub const MAX_REASON: usize = 16 << 10;

/// How much of a refused value an error shows.
const SHOWN_CHARS: usize = 60;

/// Why a Change or a build request was refused: which field, and what is wrong
/// with it. The message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error(
        "`{field}` is {len} bytes; autobot takes at most {max} (see \"Changes\" in the README)"
    )]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("`{field}` has {count} entries; autobot takes at most {max} (see \"Changes\" in the README)")]
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
    #[error("`{field}` {value} starts with `-`: git and hg would take it as an option; give it without the leading dash")]
    LeadingDash { field: String, value: String },
    #[error("`{field}` {value} holds a control character (U+{code:04X} at byte {at}); remove it")]
    Control {
        field: String,
        value: String,
        code: u32,
        at: usize,
    },
    #[error("`{field}` is empty; leave it out instead")]
    Empty { field: String },
    #[error("`{field}` is {value}; it must be between 0 and {max} (unix seconds)")]
    OutOfRange { field: String, value: i64, max: i64 },
}

/// `value` as an error shows it: quoted and escaped, cut after [`SHOWN_CHARS`].
fn shown(value: &str) -> String {
    let mut cut: String = value.chars().take(SHOWN_CHARS).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

fn too_long(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.len() > max {
        return Err(FieldError::TooLong {
            field: field.to_string(),
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// No control characters, no leading `-`, at most `max` bytes: the rule for a value
/// that may become one argument of a command.
fn argument(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    too_long(field, value, max)?;
    if value.starts_with('-') {
        return Err(FieldError::LeadingDash {
            field: field.to_string(),
            value: shown(value),
        });
    }
    one_line(field, value)
}

/// No control characters (a name shown on one line, in a log or on a page).
fn one_line(field: &str, value: &str) -> Result<(), FieldError> {
    match value.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(FieldError::Control {
            field: field.to_string(),
            value: shown(value),
            code: c as u32,
            at,
        }),
        None => Ok(()),
    }
}

/// A revision: non-empty, no leading `-`, no control characters, at most
/// [`MAX_REVISION`] bytes.
pub fn check_revision(value: &str) -> Result<(), FieldError> {
    let field = "revision";
    if value.is_empty() {
        return Err(FieldError::Empty {
            field: field.into(),
        });
    }
    argument(field, value, MAX_REVISION)
}

/// A branch: non-empty, no leading `-`, no control characters, at most
/// [`MAX_BRANCH`] bytes (Mercurial branch names may hold spaces).
pub fn check_branch(value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::Empty {
            field: "branch".into(),
        });
    }
    argument("branch", value, MAX_BRANCH)
}

/// A request's build properties: at most [`MAX_PROPERTIES`] of them adding up to
/// [`MAX_PROPERTIES_BYTES`]; each name non-empty and at most [`MAX_PROPERTY_NAME`]
/// bytes, each value at most [`MAX_PROPERTY_VALUE`]; neither may start with `-` or
/// hold a control character (a value may be empty).
pub fn check_properties(properties: &BTreeMap<String, String>) -> Result<(), FieldError> {
    if properties.len() > MAX_PROPERTIES {
        return Err(FieldError::TooMany {
            field: "properties".into(),
            count: properties.len(),
            max: MAX_PROPERTIES,
        });
    }
    let total: usize = properties.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_PROPERTIES_BYTES {
        return Err(FieldError::TooLong {
            field: "properties".into(),
            len: total,
            max: MAX_PROPERTIES_BYTES,
        });
    }
    for (name, value) in properties {
        if name.trim().is_empty() {
            return Err(FieldError::Empty {
                field: "properties (a name)".into(),
            });
        }
        argument(
            &format!("properties (name {})", shown(name)),
            name,
            MAX_PROPERTY_NAME,
        )?;
        argument(
            &format!("properties[{}]", shown(name)),
            value,
            MAX_PROPERTY_VALUE,
        )?;
    }
    Ok(())
}

/// The free-text fields of a forced build: who (one line, [`MAX_WHO`]) and the
/// reason ([`MAX_REASON`]).
pub fn check_force_text(who: Option<&str>, reason: &str) -> Result<(), FieldError> {
    if let Some(who) = who {
        too_long("who", who, MAX_WHO)?;
        one_line("who", who)?;
    }
    too_long("reason", reason, MAX_REASON)
}

/// Every rule for a Change about to be stored. `who` must be non-empty; revision
/// and branch, when present, follow [`check_revision`] and [`check_branch`]; every
/// other field is capped, and the one-line ones (who, repository, project,
/// category, file names, links) hold no control characters.
pub fn check_change(c: &NewChange) -> Result<(), FieldError> {
    if c.who.trim().is_empty() {
        return Err(FieldError::Empty {
            field: "who".into(),
        });
    }
    too_long("who", &c.who, MAX_WHO)?;
    one_line("who", &c.who)?;
    if let Some(r) = &c.revision {
        check_revision(r)?;
    }
    if let Some(b) = &c.branch {
        check_branch(b)?;
    }
    too_long("comments", &c.comments, MAX_COMMENTS)?;
    if c.files.len() > MAX_FILES {
        return Err(FieldError::TooMany {
            field: "files".into(),
            count: c.files.len(),
            max: MAX_FILES,
        });
    }
    let mut total = 0usize;
    for (i, f) in c.files.iter().enumerate() {
        let field = format!("files[{i}]");
        too_long(&field, f, MAX_FILE_NAME)?;
        one_line(&field, f)?;
        total += f.len();
    }
    if total > MAX_FILES_BYTES {
        return Err(FieldError::TooLong {
            field: "files".into(),
            len: total,
            max: MAX_FILES_BYTES,
        });
    }
    too_long("repository", &c.repository, MAX_REPOSITORY)?;
    one_line("repository", &c.repository)?;
    too_long("project", &c.project, MAX_NAME)?;
    one_line("project", &c.project)?;
    too_long("category", &c.category, MAX_NAME)?;
    one_line("category", &c.category)?;
    if c.links.len() > MAX_LINKS {
        return Err(FieldError::TooMany {
            field: "links".into(),
            count: c.links.len(),
            max: MAX_LINKS,
        });
    }
    for (i, l) in c.links.iter().enumerate() {
        let field = format!("links[{i}]");
        too_long(&field, l, MAX_LINK)?;
        one_line(&field, l)?;
    }
    if !(0..=MAX_WHEN).contains(&c.when) {
        return Err(FieldError::OutOfRange {
            field: "when".into(),
            value: c.when,
            max: MAX_WHEN,
        });
    }
    Ok(())
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// `s` with control characters replaced by U+FFFD and cut to `max` bytes.
fn one_line_fit(s: String, max: usize) -> String {
    let mut s = if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect()
    } else {
        s
    };
    cut(&mut s, max);
    s
}

/// A poller's Change made to pass [`check_change`] without losing the commit: one-line
/// fields get U+FFFD for control characters and are cut to their caps, files and
/// links beyond their caps are left out, `when` is clamped, and comments over
/// [`MAX_COMMENTS`] are cut; whatever was cut or left out is said at the end of the
/// comments (`[autobot: …]`). Revision and branch are left as they are (a poller's
/// are a commit id and a configured branch); [`check_change`] still judges them.
pub fn fit(c: NewChange) -> NewChange {
    let mut notes: Vec<String> = Vec::new();
    let who = match one_line_fit(c.who, MAX_WHO) {
        w if w.trim().is_empty() => "unknown".to_string(),
        w => w,
    };
    let mut files = Vec::with_capacity(c.files.len().min(MAX_FILES));
    let (mut total, mut left_out) = (0usize, 0usize);
    let listed = c.files.len();
    for f in c.files {
        let f = one_line_fit(f, MAX_FILE_NAME);
        if files.len() >= MAX_FILES || total + f.len() > MAX_FILES_BYTES {
            left_out += 1;
            continue;
        }
        total += f.len();
        files.push(f);
    }
    if left_out > 0 {
        notes.push(format!(
            "{left_out} of the {listed} changed files are not listed"
        ));
    }
    let links: Vec<String> = c
        .links
        .into_iter()
        .filter(|l| l.len() <= MAX_LINK && !l.chars().any(char::is_control))
        .take(MAX_LINKS)
        .collect();
    let mut comments = c.comments;
    let original = comments.len();
    let note = |notes: &[String], more: usize| -> String {
        let mut parts = notes.to_vec();
        if more > 0 {
            parts.push(format!("the message was cut: {more} more bytes"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("\n[autobot: {}]", parts.join("; "))
        }
    };
    if original > MAX_COMMENTS || !notes.is_empty() {
        // Leave room for the marker, which names how much was cut.
        let room = MAX_COMMENTS.saturating_sub(note(&notes, original).len());
        if original > room {
            cut(&mut comments, room);
        }
        let more = original - comments.len();
        comments.push_str(&note(&notes, more));
    }
    NewChange {
        who,
        files,
        comments,
        revision: c.revision,
        branch: c.branch,
        when: c.when.clamp(0, MAX_WHEN),
        repository: one_line_fit(c.repository, MAX_REPOSITORY),
        category: one_line_fit(c.category, MAX_NAME),
        links,
        project: one_line_fit(c.project, MAX_NAME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change() -> NewChange {
        NewChange {
            who: "Ann <ann@example.org>".into(),
            files: vec!["a.c".into()],
            comments: "fix\n\nmore".into(),
            revision: Some("0123abcd".into()),
            branch: Some("my branch".into()),
            when: 1_700_000_000,
            repository: "https://x/r.git".into(),
            category: "c".into(),
            links: vec!["https://x/r/0123abcd".into()],
            project: "p".into(),
        }
    }

    #[test]
    fn a_normal_change_passes() {
        assert_eq!(check_change(&change()), Ok(()));
        assert_eq!(fit(change()), change());
    }

    #[test]
    fn revision_and_branch_never_become_options() {
        for (rev, want) in [
            ("--output=/tmp/x", "starts with `-`"),
            ("-r", "starts with `-`"),
            ("abc\ndef", "control character (U+000A at byte 3)"),
            ("abc\u{1b}[2J", "U+001B"),
            ("\tHEAD", "control character (U+0009 at byte 0)"),
            ("", "is empty"),
        ] {
            let c = NewChange {
                revision: Some(rev.into()),
                ..change()
            };
            let e = check_change(&c).unwrap_err().to_string();
            assert!(
                e.starts_with("`revision`") && e.contains(want),
                "{rev:?}: {e}"
            );
        }
        for branch in ["-b", "--upload-pack=x", "main\r", ""] {
            let c = NewChange {
                branch: Some(branch.into()),
                ..change()
            };
            let e = check_change(&c).unwrap_err().to_string();
            assert!(e.starts_with("`branch`"), "{e}");
        }
        // Inner spaces are fine: the value stays one argument.
        assert!(check_revision("abc def").is_ok());
        assert!(check_revision(&"a".repeat(MAX_REVISION)).is_ok());
        assert!(matches!(
            check_revision(&"a".repeat(MAX_REVISION + 1)),
            Err(FieldError::TooLong { .. })
        ));
    }

    #[test]
    fn errors_show_a_short_escaped_value() {
        let long = format!("-{}\n", "x".repeat(200));
        let e = check_revision(&long).unwrap_err().to_string();
        assert!(e.contains("\"-xxxx") && e.contains('…'), "{e}");
        assert!(e.len() < 250 && !e.contains('\n'), "{e}");
    }

    #[test]
    fn every_field_is_capped() {
        let cases: Vec<(NewChange, &str)> = vec![
            (
                NewChange {
                    who: "w".repeat(MAX_WHO + 1),
                    ..change()
                },
                "`who` is 1025 bytes",
            ),
            (
                NewChange {
                    comments: "c".repeat(MAX_COMMENTS + 1),
                    ..change()
                },
                "`comments` is 1048577 bytes; autobot takes at most 1048576",
            ),
            (
                NewChange {
                    files: vec!["f".into(); MAX_FILES + 1],
                    ..change()
                },
                "`files` has 100001 entries",
            ),
            (
                NewChange {
                    files: vec!["ok".into(), "f".repeat(MAX_FILE_NAME + 1)],
                    ..change()
                },
                "`files[1]` is 4097 bytes",
            ),
            (
                NewChange {
                    files: vec!["f".repeat(4000); 1100],
                    ..change()
                },
                "`files` is 4400000 bytes",
            ),
            (
                NewChange {
                    files: vec!["a\nb".into()],
                    ..change()
                },
                "`files[0]` \"a\\nb\" holds a control character",
            ),
            (
                NewChange {
                    repository: "r".repeat(MAX_REPOSITORY + 1),
                    ..change()
                },
                "`repository` is",
            ),
            (
                NewChange {
                    project: "p".repeat(MAX_NAME + 1),
                    ..change()
                },
                "`project` is",
            ),
            (
                NewChange {
                    category: "c".repeat(MAX_NAME + 1),
                    ..change()
                },
                "`category` is",
            ),
            (
                NewChange {
                    links: vec!["l".into(); MAX_LINKS + 1],
                    ..change()
                },
                "`links` has 101 entries",
            ),
            (
                NewChange {
                    links: vec!["l".repeat(MAX_LINK + 1)],
                    ..change()
                },
                "`links[0]` is",
            ),
            (
                NewChange {
                    when: -1,
                    ..change()
                },
                "`when` is -1",
            ),
            (
                NewChange {
                    when: i64::MAX,
                    ..change()
                },
                "`when` is",
            ),
            (
                NewChange {
                    who: " ".into(),
                    ..change()
                },
                "`who` is empty",
            ),
        ];
        for (c, want) in cases {
            let e = check_change(&c).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?}, got {e}");
        }
    }

    #[test]
    fn properties_follow_the_force_rule() {
        let props = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(check_properties(&props(&[("cflags", "O2 -g"), ("empty", "")])).is_ok());
        let e = check_properties(&props(&[("x", "--output=/tmp/f")])).unwrap_err();
        assert!(
            e.to_string().contains("`properties[\"x\"]`") && e.to_string().contains('-'),
            "{e}"
        );
        assert!(check_properties(&props(&[("x", "a; id\n")])).is_err());
        assert!(check_properties(&props(&[("-x", "v")])).is_err());
        assert!(check_properties(&props(&[(" ", "v")])).is_err());
        let many: BTreeMap<String, String> = (0..=MAX_PROPERTIES)
            .map(|i| (format!("p{i}"), "v".into()))
            .collect();
        assert!(matches!(
            check_properties(&many),
            Err(FieldError::TooMany { .. })
        ));
        let big: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("p{i}"), "v".repeat(MAX_PROPERTY_VALUE)))
            .collect();
        assert!(matches!(
            check_properties(&big),
            Err(FieldError::TooLong { .. })
        ));
        assert!(check_force_text(Some("ann"), "why").is_ok());
        assert!(check_force_text(Some("a\nb"), "").is_err());
        assert!(check_force_text(None, &"r".repeat(MAX_REASON + 1)).is_err());
    }

    #[test]
    fn a_pollers_huge_commit_is_cut_with_a_marker() {
        let c = NewChange {
            who: "Odd\u{7}Name".into(),
            comments: "m".repeat(3 << 20),
            files: (0..MAX_FILES + 5).map(|i| format!("f{i}")).collect(),
            links: vec!["bad\nlink".into(), "https://ok".into()],
            when: -5,
            ..change()
        };
        let f = fit(c);
        assert_eq!(check_change(&f), Ok(()));
        assert_eq!(f.who, "Odd\u{FFFD}Name");
        assert_eq!(f.files.len(), MAX_FILES);
        assert_eq!(f.links, vec!["https://ok"]);
        assert_eq!(f.when, 0);
        assert!(f.comments.len() <= MAX_COMMENTS);
        let tail = &f.comments[f.comments.len() - 120..];
        assert!(
            tail.contains(
                "[autobot: 5 of the 100005 changed files are not listed; the message was cut: "
            ),
            "{tail}"
        );
        let kept = f.comments.find("\n[autobot: ").unwrap();
        let more: usize = tail
            .rsplit("cut: ")
            .next()
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert_eq!(kept + more, 3 << 20);
        assert!(f.comments[..kept].bytes().all(|b| b == b'm'));
    }
}
