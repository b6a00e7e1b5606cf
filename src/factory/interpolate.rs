//! `%(name)s` interpolation of build properties into step commands, workdirs and
//! environment values, as Buildbot's `WithProperties` does.
//!
//! Syntax: `%(name)s` is the property's value (`%(name)d` is accepted too, as
//! Python would); `%%` is a literal `%`. From Buildbot's later WithProperties:
//! `%(name:-text)s` is the value when the property exists, else `text`;
//! `%(name:~text)s` the value when it is non-empty, else `text`; `%(name:+text)s`
//! `text` when the property exists, else nothing. Any other `%` stays as written,
//! so `date +%Y` needs no escaping. Property names may hold any character but `)`
//! and `:` (`%(create-autobot)s` works).
//!
//! A property that does not exist is an error naming it: the manual only makes the
//! *unset* values of branch and revision (Python `None`) interpolate as empty
//! strings, so the engine stores those as `""`, and a name that was never set is a
//! mistake worth stopping for.
//!
//! A value is never re-parsed: an argv element stays exactly one element, and in a
//! `sh -c` script ([`Command::Shell`]) a reference becomes a quoted environment
//! variable the script expands, so change data (branch names, revisions) can never
//! become shell syntax.

use std::collections::BTreeMap;

use super::{Command, StepKind, StepSpec};

/// Build properties by name (branch, revision, got_revision, buildername, …).
pub type Properties = BTreeMap<String, String>;

/// Prefix of the environment variables that carry property values into a shell
/// script; numbered so that any property name works.
pub const SHELL_VAR_PREFIX: &str = "AUTOBOT_PROPERTY_";

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error("build property {name:?} is not set (used in {text:?}); known properties: {known}")]
    Missing {
        name: String,
        text: String,
        known: String,
    },
    #[error("bad property reference in {text:?}: {message}")]
    Malformed { text: String, message: String },
}

/// One `%(...)x` reference as written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference<'a> {
    name: &'a str,
    /// `-`, `~` or `+` with its text, for the `:` forms.
    fallback: Option<(char, &'a str)>,
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Reference(Reference<'a>),
}

/// Splits `text` into literal text and references. `%%` becomes a literal `%`.
fn parse(text: &str) -> Result<Vec<Piece<'_>>, InterpolateError> {
    let malformed = |message: String| InterpolateError::Malformed {
        text: text.to_string(),
        message,
    };
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            pieces.push(Piece::Text(&rest[..=i]));
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            pieces.push(Piece::Text(&rest[..i]));
            let close = inner.find(')').ok_or_else(|| {
                malformed(
                    "`%(` without a closing `)`; write %(name)s, or %%( for a literal %(".into(),
                )
            })?;
            let body = &inner[..close];
            match inner[close + 1..].chars().next() {
                Some('s') | Some('d') => {}
                _ => {
                    return Err(malformed(format!(
                        "%({body}) must be followed by `s`: write %({body})s"
                    )))
                }
            }
            pieces.push(Piece::Reference(reference(body).map_err(malformed)?));
            rest = &inner[close + 2..];
        } else {
            pieces.push(Piece::Text(&rest[..=i]));
            rest = after;
        }
    }
    pieces.push(Piece::Text(rest));
    pieces.retain(|p| *p != Piece::Text(""));
    Ok(pieces)
}

/// Reads the inside of `%(...)s`: a name and maybe `:-text`, `:~text` or `:+text`.
fn reference(body: &str) -> Result<Reference<'_>, String> {
    let (name, fallback) = match body.split_once(':') {
        None => (body, None),
        Some((name, tail)) => {
            let mut chars = tail.chars();
            match chars.next() {
                Some(c @ ('-' | '~' | '+')) => (name, Some((c, chars.as_str()))),
                _ => {
                    return Err(format!(
                        "%({body})s: after `:` expected -, ~ or +, as in %({name}:-default)s"
                    ))
                }
            }
        }
    };
    if name.is_empty() {
        return Err("%()s names no property".to_string());
    }
    Ok(Reference { name, fallback })
}

/// The text a reference stands for, following the `:` form's rule.
fn resolve<'a>(
    r: &Reference<'a>,
    props: &'a Properties,
    text: &str,
) -> Result<&'a str, InterpolateError> {
    let value = props.get(r.name).map(String::as_str);
    match (r.fallback, value) {
        (None, Some(v)) => Ok(v),
        (None, None) => Err(InterpolateError::Missing {
            name: r.name.to_string(),
            text: text.to_string(),
            known: known(props),
        }),
        (Some(('-', alt)), v) => Ok(v.unwrap_or(alt)),
        (Some(('~', alt)), v) => Ok(v.filter(|v| !v.is_empty()).unwrap_or(alt)),
        (Some((_, alt)), v) => Ok(if v.is_some() { alt } else { "" }),
    }
}

fn known(props: &Properties) -> String {
    if props.is_empty() {
        return "none".to_string();
    }
    props
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Interpolates one string (an argv element, a workdir, an env value).
pub fn interpolate(text: &str, props: &Properties) -> Result<String, InterpolateError> {
    // The common case, a string with no `%`, costs one scan and one copy.
    if !text.contains('%') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    for piece in parse(text)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Reference(r) => out.push_str(resolve(&r, props, text)?),
        }
    }
    Ok(out)
}

/// The names of the properties `text` refers to, in order (to check a config early
/// or to know which steps must wait for a SetProperty step).
pub fn references(text: &str) -> Result<Vec<String>, InterpolateError> {
    Ok(parse(text)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Reference(r) => Some(r.name.to_string()),
            Piece::Text(_) => None,
        })
        .collect())
}

/// Interpolates each argv element into exactly one element.
pub fn interpolate_argv(
    argv: &[String],
    props: &Properties,
) -> Result<Vec<String>, InterpolateError> {
    argv.iter().map(|a| interpolate(a, props)).collect()
}

/// Interpolates the values of an environment (names are taken as written).
pub fn interpolate_env(
    env: &BTreeMap<String, String>,
    props: &Properties,
) -> Result<BTreeMap<String, String>, InterpolateError> {
    env.iter()
        .map(|(k, v)| Ok((k.clone(), interpolate(v, props)?)))
        .collect()
}

/// Where the scanner of a shell script is, to quote a substitution correctly there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Tracks quoting through `text` (appended to a script in `state`).
fn track_quotes(text: &str, mut state: Quote, mut escaped: bool) -> (Quote, bool) {
    for c in text.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        state = match (state, c) {
            (Quote::Single, '\'') => Quote::None,
            (Quote::Single, _) => Quote::Single,
            (_, '\\') => {
                escaped = true;
                state
            }
            (Quote::None, '\'') => Quote::Single,
            (Quote::None, '"') => Quote::Double,
            (Quote::Double, '"') => Quote::None,
            (s, _) => s,
        };
    }
    (state, escaped)
}

/// Interpolates a `sh -c` script without letting a value become shell syntax: each
/// reference turns into an expansion of an environment variable, quoted for where
/// it stands (bare → `"${V}"`, inside `"…"` → `${V}`, inside `'…'` → `'"${V}"'`).
/// Returns the script and the variables to add to the command's environment.
pub fn interpolate_shell(
    script: &str,
    props: &Properties,
) -> Result<(String, BTreeMap<String, String>), InterpolateError> {
    let mut out = String::with_capacity(script.len());
    let mut vars = BTreeMap::new();
    let (mut quote, mut escaped) = (Quote::None, false);
    for piece in parse(script)? {
        match piece {
            Piece::Text(t) => {
                out.push_str(t);
                (quote, escaped) = track_quotes(t, quote, escaped);
            }
            Piece::Reference(r) => {
                let var = format!("{SHELL_VAR_PREFIX}{}", vars.len());
                vars.insert(var.clone(), resolve(&r, props, script)?.to_string());
                match quote {
                    Quote::None => out.push_str(&format!("\"${{{var}}}\"")),
                    Quote::Double => out.push_str(&format!("${{{var}}}")),
                    Quote::Single => out.push_str(&format!("'\"${{{var}}}\"'")),
                }
                escaped = false;
            }
        }
    }
    Ok((out, vars))
}

/// Interpolates a command; a shell script's extra variables go into `env`.
pub fn interpolate_command(
    command: &Command,
    props: &Properties,
    env: &mut BTreeMap<String, String>,
) -> Result<Command, InterpolateError> {
    Ok(match command {
        Command::Argv(argv) => Command::Argv(interpolate_argv(argv, props)?),
        Command::Shell(script) => {
            let (script, vars) = interpolate_shell(script, props)?;
            env.extend(vars);
            Command::Shell(script)
        }
    })
}

/// The step as it runs now: command, workdir and env values interpolated with the
/// properties the build has at the moment the step starts (so a step sees what a
/// SetProperty step before it set). A checkout's source is config, not a template.
pub fn interpolate_step(step: &StepSpec, props: &Properties) -> Result<StepSpec, InterpolateError> {
    let mut out = step.clone();
    out.workdir = interpolate(&step.workdir, props)?;
    out.env = interpolate_env(&step.env, props)?;
    out.kind = match &step.kind {
        StepKind::Shell { command } => StepKind::Shell {
            command: interpolate_command(command, props, &mut out.env)?,
        },
        StepKind::SetProperty { property, command } => StepKind::SetProperty {
            property: property.clone(),
            command: interpolate_command(command, props, &mut out.env)?,
        },
        k @ StepKind::Checkout { .. } => k.clone(),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sh(script: &str, env: &BTreeMap<String, String>) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .envs(env)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn the_manuals_example() {
        let p = props(&[("revision", "1234")]);
        assert_eq!(
            interpolate("build-%(revision)s.tar.gz", &p).unwrap(),
            "build-1234.tar.gz"
        );
    }

    #[test]
    fn plain_text_and_lone_percent_stay() {
        let p = props(&[]);
        assert_eq!(interpolate("date +%Y-%m-%d", &p).unwrap(), "date +%Y-%m-%d");
        assert_eq!(interpolate("100%", &p).unwrap(), "100%");
        assert_eq!(interpolate("", &p).unwrap(), "");
    }

    #[test]
    fn double_percent_is_a_literal_percent() {
        let p = props(&[("x", "v")]);
        assert_eq!(interpolate("%%(x)s", &p).unwrap(), "%(x)s");
        assert_eq!(interpolate("100%%-%(x)s", &p).unwrap(), "100%-v");
        assert_eq!(interpolate("%%%(x)s%%", &p).unwrap(), "%v%");
    }

    #[test]
    fn names_may_hold_dashes_and_dots() {
        let p = props(&[("create-autobot", "/v/bin/create-autobot"), ("a.b", "1")]);
        assert_eq!(
            interpolate("%(create-autobot)s", &p).unwrap(),
            "/v/bin/create-autobot"
        );
        assert_eq!(interpolate("%(a.b)d", &p).unwrap(), "1");
    }

    #[test]
    fn several_references_and_utf8() {
        let p = props(&[("virtualenv", "/b/ä env"), ("python", "py")]);
        assert_eq!(
            interpolate("%(virtualenv)s/src→%(python)s", &p).unwrap(),
            "/b/ä env/src→py"
        );
    }

    #[test]
    fn unset_branch_is_empty_missing_property_is_an_error() {
        let p = props(&[("branch", ""), ("revision", "")]);
        assert_eq!(interpolate("b=%(branch)s", &p).unwrap(), "b=");
        let e = interpolate("x-%(got_revision)s", &p).unwrap_err();
        assert!(matches!(&e, InterpolateError::Missing { name, .. } if name == "got_revision"));
        let msg = e.to_string();
        assert!(
            msg.contains("\"got_revision\"") && msg.contains("branch, revision"),
            "{msg}"
        );
    }

    #[test]
    fn fallback_forms() {
        let p = props(&[("set", "v"), ("empty", "")]);
        assert_eq!(interpolate("%(set:-d)s", &p).unwrap(), "v");
        assert_eq!(interpolate("%(empty:-d)s", &p).unwrap(), "");
        assert_eq!(interpolate("%(unset:-d)s", &p).unwrap(), "d");
        assert_eq!(interpolate("%(unset:-)s", &p).unwrap(), "");
        assert_eq!(interpolate("%(empty:~d)s", &p).unwrap(), "d");
        assert_eq!(interpolate("%(set:~d)s", &p).unwrap(), "v");
        assert_eq!(interpolate("%(set:+yes)s", &p).unwrap(), "yes");
        assert_eq!(interpolate("%(unset:+yes)s", &p).unwrap(), "");
        assert_eq!(interpolate("%(unset:-a-b)s", &p).unwrap(), "a-b");
    }

    #[test]
    fn malformed_references_say_how_to_fix_them() {
        let p = props(&[("revision", "1")]);
        let e = interpolate("build-%(revision).tar", &p).unwrap_err();
        assert!(e.to_string().contains("%(revision)s"), "{e}");
        let e = interpolate("%(revision", &p).unwrap_err();
        assert!(e.to_string().contains("closing"), "{e}");
        assert!(interpolate("%()s", &p).is_err());
        assert!(interpolate("%(a:x)s", &p).is_err());
    }

    #[test]
    fn references_lists_names() {
        assert_eq!(
            references("%(a)s/%(b:-x)s %%(c)s").unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn argv_elements_are_never_split() {
        let p = props(&[("branch", "a b; rm -rf /"), ("n", "")]);
        let argv: Vec<String> = ["echo", "%(branch)s", "%(n)s"].map(String::from).to_vec();
        assert_eq!(
            interpolate_argv(&argv, &p).unwrap(),
            vec![
                "echo".to_string(),
                "a b; rm -rf /".to_string(),
                String::new()
            ]
        );
    }

    #[test]
    fn shell_scripts_get_values_through_the_environment() {
        let evil = "x'\"; echo PWNED; $(echo PWNED) `echo PWNED` \\";
        let p = props(&[("branch", evil), ("n", "7")]);
        for (script, want) in [
            ("printf %s %(branch)s", evil.to_string()),
            ("printf %s \"b=%(branch)s\"", format!("b={evil}")),
            ("printf %s 'b=%(branch)s!'", format!("b={evil}!")),
            ("printf %s 'it'\\''s %(n)s'", "it's 7".to_string()),
            ("printf %s \"\\\"%(n)s\"", "\"7".to_string()),
            ("printf %s \\'%(n)s", "'7".to_string()),
            ("printf '%%s-' %(n)s", "7-".to_string()),
        ] {
            let (s, env) = interpolate_shell(script, &p).unwrap();
            assert_eq!(sh(&s, &env), want, "{script} -> {s}");
        }
        let (s, env) = interpolate_shell("echo %(n)s %(n)s", &p).unwrap();
        assert_eq!(env.len(), 2);
        assert!(s.contains(SHELL_VAR_PREFIX));
    }

    #[test]
    fn steps_interpolate_command_workdir_and_env() {
        let p = props(&[("virtualenv", "/b/env"), ("python", "/b/env/bin/python")]);
        let mut step = StepSpec::shell(
            "install",
            ["%(python)s", "setup.py", "install"]
                .map(String::from)
                .to_vec(),
            "%(virtualenv)s/src/x",
        );
        step.env.insert("VENV".into(), "%(virtualenv)s".into());
        let s = interpolate_step(&step, &p).unwrap();
        assert_eq!(s.workdir, "/b/env/src/x");
        assert_eq!(s.env["VENV"], "/b/env");
        assert_eq!(
            s.kind,
            StepKind::Shell {
                command: Command::Argv(
                    ["/b/env/bin/python", "setup.py", "install"]
                        .map(String::from)
                        .to_vec()
                )
            }
        );
        let mut shell = StepSpec::new(
            "s",
            StepKind::Shell {
                command: Command::Shell("echo %(python)s".into()),
            },
            "build",
        );
        shell.env.insert("A".into(), "1".into());
        let s = interpolate_step(&shell, &p).unwrap();
        assert_eq!(s.env.len(), 2);
        assert_eq!(s.env[&format!("{SHELL_VAR_PREFIX}0")], "/b/env/bin/python");
        let missing = StepSpec::shell("m", vec!["%(nope)s".into()], "build");
        assert!(interpolate_step(&missing, &p).is_err());
    }
}
