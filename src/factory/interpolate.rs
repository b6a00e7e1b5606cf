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
//! # Values never become code
//! Values come from Changes, force forms and slaves, so a value is never re-parsed:
//! * an argv element stays exactly one element (it may still be read as an
//!   option by the program; Changes and force requests refuse a leading `-`);
//! * in a shell script ([`Command::Shell`], run as `/bin/sh -c`) — and in the
//!   script argument of a shell in an argv (`sh -c '…'`, `bash -ec "…"`) — a
//!   reference is never spliced in as text: the value goes into an environment
//!   variable `AUTOBOT_PROPERTY_N` and the reference becomes an expansion of it,
//!   written for the quoting context it stands in, which a small parser of POSIX
//!   sh quoting follows (`interpolate/shell.rs`): `"${AUTOBOT_PROPERTY_N}"` in a
//!   plain word and inside `$(…)` or `` `…` `` (a fresh plain context, even within
//!   double quotes), `${AUTOBOT_PROPERTY_N}` inside `"…"`, `${…}` or an unquoted
//!   here-document, `'"${AUTOBOT_PROPERTY_N}"'` inside `'…'` (close, expand,
//!   reopen);
//! * a nested shell's script is a level of its own: inside the script of `sh -c`,
//!   `bash -c` (any option group with `c`, wherever the shell's name stands:
//!   `env X=1 sh -ec`, `find … -exec sh -c`), `eval`, and a here-document or
//!   here-string a shell reads (`sh <<EOF`), the reference is written for the
//!   nested shell's context and escaped for every enclosing one, so each shell in
//!   turn hands the next the *expansion*, and only the innermost expands it;
//! * arithmetic evaluates what it finds (and bash runs `$(…)` in an array
//!   subscript there), so in `$((…))`, `((…))`, `$[…]`, `for ((…))`, an array
//!   subscript (`${a[…]}`, `a[…]=`), the arguments of `let` and the operands of
//!   `[[ A -eq B ]]` — and in an expansion whose result lands there — only a
//!   plain decimal integer is accepted (no leading zero, at most 18 digits);
//!   any other value fails the step with an error naming the property;
//! * places that cannot take a value are refused with an error saying why: a
//!   quoted here-document (`<<'EOF'` expands nothing), a delimiter, a variable's
//!   name in `${…}`, a backslash right before the reference, and an expansion
//!   (`$(…)`, `${…}`) *inside* a nested shell's script text, whose result would
//!   become that shell's code.
//!
//! What a value can still do is what the admin's script does with it, where
//! autobot cannot see a shell: a script piped into one (`echo "… %(x)s" | sh`),
//! handed to a remote or another user's shell (`ssh host "…"`, `su -c "…"`), or
//! to another interpreter (`python -c "…"`, `perl -e`, an `awk` program, a `sed`
//! script) gets the value as *text of that program*. So does bash arithmetic on
//! a variable the script declared integer (`declare -i`, `local -i`). There, read
//! the value from the environment instead: every build property is also exported
//! to every command under a stable name, `AUTOBOT_PROP_` and the property's name
//! with each character but letters, digits and `_` made `_` ([`property_env`]):
//! `sh -c 'echo "$AUTOBOT_PROP_branch"' | …`, `os.environ["AUTOBOT_PROP_branch"]`,
//! `ENVIRON["AUTOBOT_PROP_branch"]`. (`env -i`, `su -` and `sudo` without `-E`
//! drop the environment, and with it the value.)
//!
//! # Secrets
//! `%(secret:NAME)s` is the value of secret NAME of `secretsDir`
//! ([`crate::secrets`]), put in exactly as a property's value is (in a shell
//! script, through an `AUTOBOT_PROPERTY_N` variable), so it never becomes shell
//! syntax either. It is not a property: it is not in `AUTOBOT_PROP_*`, has no
//! `:-` forms, and an error about it never shows the value. Only
//! [`interpolate_step_with`] with [`SecretAccess::Granted`] resolves one; a
//! secret that is not defined, or a build that may not have secrets
//! ([`SecretAccess::Denied`]: an untrusted build), fails the step with a message
//! naming the secret.

mod shell;

use std::collections::BTreeMap;

use super::{Command, StepKind, StepSpec};
use crate::secrets::Secrets;

/// Build properties by name (branch, revision, got_revision, buildername, …).
pub type Properties = BTreeMap<String, String>;

/// Prefix of the environment variables that carry property values into a shell
/// script; numbered so that any property name works.
pub const SHELL_VAR_PREFIX: &str = "AUTOBOT_PROPERTY_";

/// Prefix of the stable, documented variables that carry every property into a
/// step's commands ([`property_var`]).
pub const PROP_VAR_PREFIX: &str = "AUTOBOT_PROP_";

/// The longest value [`property_env`] exports (bytes).
pub const PROP_VAR_MAX: usize = 64 * 1024;

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
    #[error(
        "build property {name:?} is used in shell arithmetic in {text:?}, but its value \
         {value:?} is not a plain decimal integer; the shell would evaluate it as an \
         expression (code, under bash), so the step does not run"
    )]
    NotAnInteger {
        name: String,
        /// The value, cut to 80 characters.
        value: String,
        text: String,
    },
    #[error("build property {name:?} cannot be put where it stands in {text:?}: {message}")]
    Shell {
        name: String,
        text: String,
        message: String,
    },
    /// A `%(secret:NAME)s` that cannot be resolved; the message names the
    /// secret and why (never its value).
    #[error("{message}")]
    Secret { name: String, message: String },
}

/// Whether a step may have the master's secrets.
#[derive(Debug, Clone, Copy)]
pub enum SecretAccess<'a> {
    /// `%(secret:NAME)s` is the value of NAME in these secrets.
    Granted(&'a Secrets),
    /// The build may not have secrets; the text says why (an untrusted build).
    Denied(&'a str),
    /// No secrets here (interpolation outside a build's step).
    Unavailable,
}

/// What references resolve against: the build's properties and its access to
/// the secrets.
#[derive(Clone, Copy)]
struct Scope<'a> {
    props: &'a Properties,
    secrets: SecretAccess<'a>,
}

impl<'a> Scope<'a> {
    fn props(props: &'a Properties) -> Scope<'a> {
        Scope {
            props,
            secrets: SecretAccess::Unavailable,
        }
    }
}

/// One `%(...)x` reference as written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference<'a> {
    name: &'a str,
    /// `-`, `~` or `+` with its text, for the `:` forms.
    fallback: Option<(char, &'a str)>,
    /// `%(secret:NAME)s`: `name` is a secret's.
    secret: bool,
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
    if let Some(name) = body.strip_prefix("secret:") {
        // `%(secret:-text)s` is property `secret` with a fallback.
        if !name.starts_with(['-', '~', '+']) {
            if !crate::secrets::valid_name(name) {
                return Err(format!(
                    "%({body})s: {name:?} is not a secret name (letters, digits, `_`, `.` and `-`, as the file in secretsDir is named)"
                ));
            }
            return Ok(Reference {
                name,
                fallback: None,
                secret: true,
            });
        }
    }
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
    Ok(Reference {
        name,
        fallback,
        secret: false,
    })
}

/// The text a reference stands for, following the `:` form's rule.
fn resolve<'a>(
    r: &Reference<'a>,
    scope: Scope<'a>,
    text: &str,
) -> Result<&'a str, InterpolateError> {
    let props = scope.props;
    if r.secret {
        let secret_err = |message: String| InterpolateError::Secret {
            name: r.name.to_string(),
            message,
        };
        return match scope.secrets {
            SecretAccess::Granted(s) => s.get(r.name).ok_or_else(|| secret_err(s.missing(r.name))),
            SecretAccess::Denied(why) => Err(secret_err(format!(
                "secret {:?} is not given to this build: {why}",
                r.name
            ))),
            SecretAccess::Unavailable => Err(secret_err(format!(
                "secret {:?} cannot be used here: secrets are only for a step's command, env and workdir",
                r.name
            ))),
        };
    }
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
    interpolate_in(text, Scope::props(props))
}

fn interpolate_in(text: &str, scope: Scope<'_>) -> Result<String, InterpolateError> {
    // The common case, a string with no `%`, costs one scan and one copy.
    if !text.contains('%') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    for piece in parse(text)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Reference(r) => out.push_str(resolve(&r, scope, text)?),
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
            Piece::Reference(r) if !r.secret => Some(r.name.to_string()),
            _ => None,
        })
        .collect())
}

/// The names of the secrets `text` refers to (`%(secret:NAME)s`), in order.
pub fn secret_references(text: &str) -> Result<Vec<String>, InterpolateError> {
    Ok(parse(text)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Reference(r) if r.secret => Some(r.name.to_string()),
            _ => None,
        })
        .collect())
}

/// The secrets a step refers to anywhere (command, env values, workdir), for
/// `checkconfig` to check they are defined. Text that does not parse is left
/// to the step's own interpolation.
pub fn step_secret_references(step: &StepSpec) -> Vec<String> {
    let mut texts: Vec<&str> = vec![step.workdir.as_str()];
    texts.extend(step.env.values().map(String::as_str));
    match &step.kind {
        StepKind::Shell { command } | StepKind::SetProperty { command, .. } => match command {
            Command::Argv(argv) => texts.extend(argv.iter().map(String::as_str)),
            Command::Shell(script) => texts.push(script),
        },
        // Transfer steps' paths take properties only: a secret there would
        // become an artifact's name, shown on pages (the step fails instead).
        StepKind::Checkout { .. }
        | StepKind::Upload { .. }
        | StepKind::UploadDir { .. }
        | StepKind::Download { .. }
        | StepKind::Artifacts { .. } => {}
    }
    let mut out = Vec::new();
    for t in texts {
        for name in secret_references(t).unwrap_or_default() {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Interpolates each argv element into exactly one element, each as data (a
/// command goes through [`interpolate_command`], which also knows a nested
/// shell's script when it sees one).
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

/// Interpolates a `sh -c` script without letting a value become shell syntax: each
/// reference turns into an expansion of an environment variable, written for the
/// quoting context it stands in (see the module docs and `shell.rs`). Returns the
/// script and the variables to add to the command's environment.
pub fn interpolate_shell(
    script: &str,
    props: &Properties,
) -> Result<(String, BTreeMap<String, String>), InterpolateError> {
    let mut vars = BTreeMap::new();
    let out = interpolate_script(script, Scope::props(props), &mut vars)?;
    Ok((out, vars))
}

/// Checks a `/bin/sh -c` script as written in `master.ini` for what the shell
/// would refuse at its end (an unterminated quote or backquote, a trailing
/// backslash) and for references autobot would refuse in every build (a
/// `%(name)s` in a quoted here-document, …), so `checkconfig` reports them;
/// the error is a sentence for the user.
pub fn check_script(script: &str) -> Result<(), String> {
    let mut tracker = shell::Tracker::new();
    let pieces = parse(script).map_err(|e| match e {
        InterpolateError::Malformed { message, .. } => message,
        other => other.to_string(),
    })?;
    for piece in pieces {
        match piece {
            Piece::Text(t) => tracker.text(t),
            Piece::Reference(r) => {
                // A plain integer goes everywhere a value may go at all.
                if let Err(shell::RefError::Refused(message)) =
                    tracker.reference(&format!("{SHELL_VAR_PREFIX}0"), "0")
                {
                    return Err(format!(
                        "%({})s cannot stand where it does: {message}",
                        r.name
                    ));
                }
            }
        }
    }
    match tracker.unclosed() {
        Some(what) => Err(format!("{what} in the shell command {script:?}")),
        None => Ok(()),
    }
}

/// [`interpolate_shell`], numbering the variables after those already in `vars`
/// (one command may hold several scripts).
fn interpolate_script(
    script: &str,
    scope: Scope<'_>,
    vars: &mut BTreeMap<String, String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(script.len());
    let mut tracker = shell::Tracker::new();
    let mut names: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for piece in parse(script)? {
        match piece {
            Piece::Text(t) => {
                out.push_str(t);
                tracker.text(t);
            }
            Piece::Reference(r) => {
                let value = resolve(&r, scope, script)?;
                let var = format!("{SHELL_VAR_PREFIX}{}", vars.len());
                let written = tracker.reference(&var, value).map_err(|e| match e {
                    shell::RefError::NotAnInteger if r.secret => secret_not_an_integer(r.name),
                    shell::RefError::NotAnInteger => not_an_integer(r.name, value, script),
                    shell::RefError::Refused(message) => InterpolateError::Shell {
                        name: r.name.to_string(),
                        text: script.to_string(),
                        message,
                    },
                })?;
                out.push_str(&written);
                names.insert(var.clone(), (r.name.to_string(), r.secret));
                vars.insert(var, value.to_string());
            }
        }
    }
    if let Some(var) = tracker.finish().first() {
        let (name, secret) = names
            .get(var)
            .map(|(n, s)| (n.as_str(), *s))
            .unwrap_or((var.as_str(), false));
        if secret {
            return Err(secret_not_an_integer(name));
        }
        let value = vars.get(var).map(String::as_str).unwrap_or("");
        return Err(not_an_integer(name, value, script));
    }
    Ok(out)
}

/// A secret in shell arithmetic whose value is not an integer (the value is not
/// shown).
fn secret_not_an_integer(name: &str) -> InterpolateError {
    InterpolateError::Secret {
        name: name.to_string(),
        message: format!(
            "secret {name:?} is used in shell arithmetic, but its value is not a plain decimal integer; the shell would evaluate it as an expression, so the step does not run"
        ),
    }
}

fn not_an_integer(name: &str, value: &str, script: &str) -> InterpolateError {
    let mut shown: String = value.chars().take(80).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    InterpolateError::NotAnInteger {
        name: name.to_string(),
        value: shown,
        text: script.to_string(),
    }
}

/// Whether argv element `i` is the script of a nested shell: the argument after a
/// `-c` option of a shell named before it (`sh -c SCRIPT`, `env X=1 bash -ec
/// SCRIPT`); `argv` holds the elements as they run.
fn is_script_arg(before: &[String]) -> bool {
    let Some((prev, earlier)) = before.split_last() else {
        return false;
    };
    let flag = prev.len() >= 2
        && prev.starts_with('-')
        && prev[1..].chars().all(|c| c.is_ascii_alphabetic())
        && prev[1..].contains('c');
    flag && earlier.iter().any(|w| {
        let base = w.rsplit('/').next().unwrap_or(w);
        shell::SHELLS.contains(&base)
    })
}

/// Interpolates an argv command: each element stays exactly one element, and an
/// element that is a nested shell's script (`sh -c '… %(x)s …'`) is interpolated
/// as a script, its values passed in `vars`.
fn interpolate_argv_command(
    argv: &[String],
    scope: Scope<'_>,
    vars: &mut BTreeMap<String, String>,
) -> Result<Vec<String>, InterpolateError> {
    let mut out: Vec<String> = Vec::with_capacity(argv.len());
    for a in argv {
        let v = if is_script_arg(&out) {
            interpolate_script(a, scope, vars)?
        } else {
            interpolate_in(a, scope)?
        };
        out.push(v);
    }
    Ok(out)
}

/// Interpolates a command; the variables its scripts reference go into `env`.
pub fn interpolate_command(
    command: &Command,
    props: &Properties,
    env: &mut BTreeMap<String, String>,
) -> Result<Command, InterpolateError> {
    command_in(command, Scope::props(props), env)
}

fn command_in(
    command: &Command,
    scope: Scope<'_>,
    env: &mut BTreeMap<String, String>,
) -> Result<Command, InterpolateError> {
    let mut vars = BTreeMap::new();
    let out = match command {
        Command::Argv(argv) => Command::Argv(interpolate_argv_command(argv, scope, &mut vars)?),
        Command::Shell(script) => Command::Shell(interpolate_script(script, scope, &mut vars)?),
    };
    env.extend(vars);
    Ok(out)
}

/// The environment variable that carries property `name` into every command of a
/// build: `AUTOBOT_PROP_` and the name with each character but ASCII letters,
/// digits and `_` made `_` (`got_revision` → `AUTOBOT_PROP_got_revision`,
/// `create-autobot` → `AUTOBOT_PROP_create_autobot`).
pub fn property_var(name: &str) -> String {
    let mut var = String::with_capacity(PROP_VAR_PREFIX.len() + name.len());
    var.push_str(PROP_VAR_PREFIX);
    var.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    var
}

/// Every property as an environment variable under its stable name
/// ([`property_var`]), for scripts to read (`sh -c 'echo "$AUTOBOT_PROP_branch"'`,
/// `os.environ["AUTOBOT_PROP_branch"]`). When two names make the same variable,
/// the name that sorts first has it; values over [`PROP_VAR_MAX`] bytes, or
/// holding a NUL byte, are left out (the kernel refuses an environment string
/// over 128 KiB, which would fail every command).
pub fn property_env(props: &Properties) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (name, value) in props {
        if value.len() > PROP_VAR_MAX || value.contains('\0') {
            continue;
        }
        env.entry(property_var(name))
            .or_insert_with(|| value.clone());
    }
    env
}

/// The step as it runs now: command, workdir and env values interpolated with the
/// properties the build has at the moment the step starts (so a step sees what a
/// SetProperty step before it set). A checkout's source is config, not a template.
pub fn interpolate_step(step: &StepSpec, props: &Properties) -> Result<StepSpec, InterpolateError> {
    interpolate_step_with(step, props, SecretAccess::Unavailable)
}

/// [`interpolate_step`] with access to the master's secrets: `%(secret:NAME)s`
/// becomes NAME's value when `secrets` grants it, else an error naming it.
pub fn interpolate_step_with(
    step: &StepSpec,
    props: &Properties,
    secrets: SecretAccess<'_>,
) -> Result<StepSpec, InterpolateError> {
    let scope = Scope { props, secrets };
    let mut out = step.clone();
    out.workdir = interpolate_in(&step.workdir, scope)?;
    out.env = step
        .env
        .iter()
        .map(|(k, v)| Ok((k.clone(), interpolate_in(v, scope)?)))
        .collect::<Result<_, InterpolateError>>()?;
    out.kind = match &step.kind {
        StepKind::Shell { command } => StepKind::Shell {
            command: command_in(command, scope, &mut out.env)?,
        },
        StepKind::SetProperty { property, command } => StepKind::SetProperty {
            property: property.clone(),
            command: command_in(command, scope, &mut out.env)?,
        },
        k @ StepKind::Checkout { .. } => k.clone(),
        // Paths, never shell syntax: the engine checks them again once
        // interpolated (relative, no `..`).
        StepKind::Upload { src, dest } => StepKind::Upload {
            src: interpolate(src, props)?,
            dest: interpolate(dest, props)?,
        },
        StepKind::UploadDir { src, dest } => StepKind::UploadDir {
            src: interpolate(src, props)?,
            dest: interpolate(dest, props)?,
        },
        StepKind::Download { src, dest, mode } => StepKind::Download {
            src: interpolate(src, props)?,
            dest: interpolate(dest, props)?,
            mode: *mode,
        },
        k @ StepKind::Artifacts { .. } => k.clone(),
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
    fn check_script_finds_what_sh_refuses_at_the_end_and_nothing_else() {
        for ok in [
            "make check | tee out.txt",
            "yes X | head -c 100",
            "echo \"a \\\" b\"",
            "echo 'a'\\''b'",
            "echo \\'",
            "echo \"$(echo ')')\"",
            "echo `echo \"'\"`",
            "cat <<EOF\nit's \"\nEOF",
            "echo x # it's",
            "case $x in a) echo \"'\";; esac",
            "sh -c \"echo 'it\"",
            "echo %(x)s '%(y)s' \"%(z)s\"",
        ] {
            assert_eq!(check_script(ok), Ok(()), "{ok}");
            if ok.contains("%(") {
                // References are not sh syntax until interpolated.
                continue;
            }
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", ok])
                .output()
                .unwrap();
            assert!(out.status.success(), "sh -n refuses {ok:?}");
        }
        for (bad, what) in [
            ("make 'x", "unterminated ' quote"),
            ("make \"x", "unterminated \" quote"),
            ("echo $'x", "unterminated ' quote"),
            ("echo `date", "unterminated `"),
            ("echo \"$(echo 'x)\"", "unterminated ' quote"),
            ("make \\", "trailing backslash"),
            ("cat <<'EOF'\n%(x)s\nEOF", "%(x)s cannot stand"),
        ] {
            let e = check_script(bad).unwrap_err();
            assert!(e.contains(what), "{bad:?}: {e}");
        }
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

    // ---- the shell quoting contexts, against real dash and bash ----

    /// A value that runs `touch PWNED` in whatever shell parses it as code.
    fn evil(dir: &std::path::Path) -> String {
        let f = dir.join("PWNED").display().to_string();
        format!(
            "x'\"; touch {f}; $(touch {f}) `touch {f}` \\ a[$(touch {f})] * ${{IFS}} \t2\nline two %(x)s"
        )
    }

    /// The shells to run scripts under: POSIX sh (dash here) and bash.
    const SHELLS: [&str; 2] = ["sh", "bash"];

    /// Runs `script` with `env` under `shell`; its stdout, or its status and stderr.
    fn run_in(
        shell: &str,
        script: &str,
        env: &BTreeMap<String, String>,
        dir: &std::path::Path,
    ) -> Result<String, String> {
        let out = std::process::Command::new(shell)
            .arg("-c")
            .arg(script)
            .envs(env)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {shell}: {e}"));
        if !out.status.success() {
            return Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8(out.stdout).unwrap())
    }

    /// Interpolates `template` with `x` = `value` and runs it under both shells:
    /// each prints `want`, and nothing ran the value.
    fn check(template: &str, value: &str, want: &str, shells: &[&str]) {
        let dir = tempfile::tempdir().unwrap();
        let p = props(&[("x", value), ("n", "7")]);
        let (script, env) =
            interpolate_shell(template, &p).unwrap_or_else(|e| panic!("{template:?}: {e}"));
        for shell in shells {
            let got = run_in(shell, &script, &env, dir.path());
            assert_eq!(
                got.as_deref(),
                Ok(want),
                "{shell}: {template:?} became {script:?}"
            );
            assert!(
                !dir.path().join("PWNED").exists(),
                "{shell} ran the value: {template:?} became {script:?}"
            );
        }
    }

    #[test]
    fn every_quoting_context_gets_the_value_verbatim() {
        let tmp = tempfile::tempdir().unwrap();
        let e = evil(tmp.path());
        let e2 = format!("{e}{e}");
        let line = format!("{e}\n");
        let cases: Vec<(&str, String)> = vec![
            ("printf %s %(x)s", e.clone()),
            ("printf %s \"b=%(x)s\"", format!("b={e}")),
            ("printf %s 'b=%(x)s!'", format!("b={e}!")),
            ("printf %s \"a\"%(x)s'b'", format!("a{e}b")),
            ("printf %s %(x)s%(x)s", e2.clone()),
            // Command substitution opens a fresh plain context, quotes or not.
            ("printf %s \"$(printf %s %(x)s)\"", e.clone()),
            ("printf %s \"$(printf %s \"%(x)s\")\"", e.clone()),
            ("printf %s \"$(echo \"$(printf %s %(x)s)\")\"", e.clone()),
            ("printf %s \"`printf %s %(x)s`\"", e.clone()),
            ("printf '[%s]' \"`printf %s '%(x)s'`\"", format!("[{e}]")),
            // Nested shells: their own quoting, one level down.
            ("sh -c \"printf %s %(x)s\"", e.clone()),
            ("sh -c 'printf %s %(x)s'", e.clone()),
            ("sh -c 'printf %s \"%(x)s\"'", e.clone()),
            ("sh -c \"printf %s '%(x)s'\"", e.clone()),
            ("sh -c \"printf %s \\\"%(x)s\\\"\"", e.clone()),
            ("bash -c \"sh -c 'printf %s %(x)s'\"", e.clone()),
            ("sh -c 'sh -c \"printf %s %(x)s\"'", e.clone()),
            ("env X=1 sh -ec 'printf %s %(x)s'", e.clone()),
            ("sh -c 'printf \"%%s|\" \"$@\"' sh %(x)s", format!("{e}|")),
            (
                "find . -maxdepth 0 -exec sh -c 'printf %s %(x)s' \\;",
                e.clone(),
            ),
            ("eval \"printf %s %(x)s\"", e.clone()),
            ("eval printf %s %(x)s", e.clone()),
            ("eval 'printf %s \"%(x)s\"'", e.clone()),
            // Here-documents: unquoted ones expand, a shell reads one as a script.
            ("cat <<EOF\n%(x)s\nEOF", line.clone()),
            ("cat <<-EOF\n\t%(x)s\n\tEOF", line.clone()),
            ("cat <<EOF\nEOF%(x)s\nEOF", format!("EOF{e}\n")),
            ("sh <<'EOF'\nprintf %s %(x)s\nEOF", e.clone()),
            ("sh <<EOF\nprintf %s %(x)s\nEOF", e.clone()),
            (
                "sh -s <<\"EOF\"\nprintf %s \"%(x)s\"\nEOF\nprintf %s .",
                format!("{e}."),
            ),
            // Parameter expansions, assignments, functions, case, comments.
            ("printf %s \"${UNSET_VAR:-%(x)s}\"", e.clone()),
            ("printf %s ${UNSET_VAR:-%(x)s}", e.clone()),
            ("x=%(x)s; printf %s \"$x\"", e.clone()),
            ("f() { printf %s \"$1\"; }; f %(x)s", e.clone()),
            ("case %(x)s in *) printf %s %(x)s;; esac", e.clone()),
            (
                "printf %s \"$(case a in a) printf %s %(x)s;; esac)\"",
                e.clone(),
            ),
            ("# it's %(x)s\nprintf %s %(x)s", e.clone()),
            ("printf '%%s' %(x)s | cat", e.clone()),
            ("printf %s %(x)s >out && cat out", e.clone()),
            // Arithmetic takes integers.
            ("echo $((%(n)s + 1))", "8\n".to_string()),
            ("echo \"$(( %(n)s * 2 ))\"", "14\n".to_string()),
            ("echo $(( (%(n)s) - (1) ))", "6\n".to_string()),
        ];
        for (template, want) in &cases {
            check(template, &e, want, &SHELLS);
        }
        // bash's own arithmetic places.
        for (template, want) in [
            ("(( %(n)s > 1 )) && echo yes", "yes\n"),
            ("let y=%(n)s+1; echo $y", "8\n"),
            ("[[ %(n)s -eq 7 ]] && echo yes", "yes\n"),
            ("[[ 7 -eq %(n)s ]] && echo yes", "yes\n"),
            ("a[%(n)s]=v; echo ${a[%(n)s]}", "v\n"),
            ("echo $[%(n)s+1]", "8\n"),
            ("for ((i=0; i<%(n)s; i++)); do :; done; echo $i", "7\n"),
        ] {
            check(template, &e, want, &["bash"]);
        }
        // A string comparison in [[ ]] takes any value.
        check("[[ %(x)s == x* ]] && printf yes", &e, "yes", &["bash"]);
        // Here-strings (bash): a shell reads one as its script.
        check("sh <<< \"printf %s %(x)s\"", &e, &e, &["bash"]);
        check("cat <<< %(x)s", &e, &line, &["bash"]);
        check("printf %s $'a\\'b'%(x)s", &e, &format!("a'b{e}"), &["bash"]);
    }

    #[test]
    fn arithmetic_takes_only_plain_integers() {
        let tmp = tempfile::tempdir().unwrap();
        let e = evil(tmp.path());
        for template in [
            "echo $(( %(x)s + 1 ))",
            "echo \"$(( %(x)s ))\"",
            "echo $(( \"%(x)s\" ))",
            "(( %(x)s > 1 ))",
            "let y=%(x)s",
            "[[ %(x)s -eq 1 ]]",
            "[[ 1 -lt \"%(x)s\" ]]",
            "a[%(x)s]=1",
            "echo ${a[%(x)s]}",
            "echo $[%(x)s]",
            "for ((i=0; i<%(x)s; i++)); do :; done",
            "echo \"$(case a in a) echo $(( %(x)s ));; esac)\"",
            "echo $(( $(echo %(x)s) ))",
            "echo $(( `echo %(x)s` ))",
            "let \"y=$(echo %(x)s)\"",
            "sh -c 'echo $(( %(x)s ))'",
            "bash -c \"(( %(x)s ))\"",
        ] {
            for value in [
                e.as_str(),
                "a[$(id)]",
                "010",
                "1+1",
                "",
                " 1",
                "99999999999999999999",
            ] {
                let p = props(&[("x", value)]);
                let err = interpolate_shell(template, &p).unwrap_err();
                assert!(
                    matches!(&err, InterpolateError::NotAnInteger { name, .. } if name == "x"),
                    "{template:?} with {value:?}: {err:?}"
                );
                let msg = err.to_string();
                assert!(msg.contains("\"x\"") && msg.contains("integer"), "{msg}");
            }
            for value in ["0", "42", "-3"] {
                let p = props(&[("x", value)]);
                assert!(
                    interpolate_shell(template, &p).is_ok(),
                    "{template} {value}"
                );
            }
        }
        // The message shows at most 80 characters of the value.
        let long = "z".repeat(500);
        let err = interpolate_shell("echo $((%(x)s))", &props(&[("x", &long)])).unwrap_err();
        assert!(err.to_string().len() < 400, "{err}");
    }

    #[test]
    fn places_that_cannot_take_a_value_are_refused() {
        let p = props(&[("x", "v")]);
        for (template, why) in [
            ("cat <<'EOF'\n%(x)s\nEOF", "quoted here-document"),
            ("cat <<\\EOF\n%(x)s\nEOF", "quoted here-document"),
            ("cat <<%(x)s\nv\nv", "delimiter"),
            ("echo \\%(x)s", "backslash"),
            ("echo \"\\%(x)s\"", "backslash"),
            ("sh -c \"echo $(echo %(x)s)\"", "nested shell"),
            ("sh -c \"echo `echo %(x)s`\"", "nested shell"),
            ("eval \"echo ${y:-%(x)s}\"", "nested shell"),
            ("echo ${%(x)s}", "names a variable"),
        ] {
            let err = interpolate_shell(template, &p).unwrap_err();
            assert!(
                matches!(&err, InterpolateError::Shell { name, .. } if name == "x"),
                "{template:?}: {err:?}"
            );
            assert!(err.to_string().contains(why), "{template:?}: {err}");
        }
        // After the quoted here-document ends, values are welcome again.
        let (s, env) = interpolate_shell("cat <<'EOF'\n$x\nEOF\nprintf %s %(x)s", &p).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run_in("sh", &s, &env, dir.path()).unwrap(), "$x\nv");
    }

    /// Scripts wrapped in each other every way a nested shell can be written:
    /// the value reaches the innermost `printf` verbatim and never runs.
    #[test]
    fn nested_shells_in_every_combination() {
        let tmp = tempfile::tempdir().unwrap();
        let e = evil(tmp.path());
        fn dq(s: &str) -> String {
            let mut out = String::new();
            for c in s.chars() {
                if matches!(c, '$' | '`' | '"' | '\\') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
        type Wrap = fn(&str, usize) -> String;
        let wraps: [(&str, Wrap); 6] = [
            ("sh -c '…'", |s, _| {
                format!("sh -c '{}'", s.replace('\'', "'\\''"))
            }),
            ("bash -c \"…\"", |s, _| format!("bash -c \"{}\"", dq(s))),
            ("\"$(…)\"", |s, _| format!("printf %s \"$({s})\"")),
            ("eval \"…\"", |s, _| format!("eval \"{}\"", dq(s))),
            ("sh <<'EOF'", |s, d| format!("sh <<'EOF{d}'\n{s}\nEOF{d}\n")),
            ("`…`", |s, _| {
                let mut inner = String::new();
                for c in s.chars() {
                    if matches!(c, '$' | '`' | '\\') {
                        inner.push('\\');
                    }
                    inner.push(c);
                }
                format!("printf %s \"`{inner}`\"")
            }),
        ];
        let base = "printf %s %(x)s";
        let mut tried = 0;
        for a in 0..wraps.len() {
            for b in 0..=wraps.len() {
                for c in 0..=wraps.len() {
                    let mut t = wraps[a].1(base, 1);
                    let mut names = vec![wraps[a].0];
                    for (d, w) in [(2, b), (3, c)] {
                        if let Some((name, f)) = wraps.get(w) {
                            t = f(&t, d);
                            names.push(name);
                        }
                    }
                    check(&t, &e, &e, &SHELLS);
                    tried += 1;
                    let _ = names;
                }
            }
        }
        assert_eq!(tried, 6 * 7 * 7);
    }

    #[test]
    fn argv_scripts_of_nested_shells_are_scripts() {
        let tmp = tempfile::tempdir().unwrap();
        let e = evil(tmp.path());
        let p = props(&[("x", &e), ("n", "7")]);
        let run = |argv: &[&str], want: &str| {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            let mut env = BTreeMap::new();
            let Command::Argv(argv) =
                interpolate_command(&Command::Argv(argv.clone()), &p, &mut env).unwrap()
            else {
                panic!("an argv stays an argv")
            };
            let out = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .envs(&env)
                .current_dir(tmp.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{argv:?}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), want, "{argv:?}");
            assert!(!tmp.path().join("PWNED").exists(), "{argv:?} ran the value");
        };
        run(&["sh", "-c", "printf %s %(x)s"], &e);
        run(&["bash", "-c", "printf %s \"%(x)s\""], &e);
        run(&["/bin/sh", "-ec", "printf %s '%(x)s'"], &e);
        run(&["env", "A=1", "sh", "-c", "echo $((%(n)s+1))"], "8\n");
        // Arguments after the script, and other programs' arguments, are data.
        run(&["sh", "-c", "printf %s \"$1\"", "sh", "%(x)s"], &e);
        run(&["printf", "%s", "%(x)s"], &e);
        let mut env = BTreeMap::new();
        let err = interpolate_command(
            &Command::Argv(vec!["bash".into(), "-c".into(), "echo $((%(x)s))".into()]),
            &p,
            &mut env,
        )
        .unwrap_err();
        assert!(
            matches!(err, InterpolateError::NotAnInteger { .. }),
            "{err}"
        );
    }

    #[test]
    fn properties_have_stable_environment_names() {
        let p = props(&[
            ("branch", "main"),
            ("create-autobot", "/v/bin/c"),
            ("create.autobot", "other"),
            ("huge", &"h".repeat(PROP_VAR_MAX + 1)),
            ("nul", "a\0b"),
        ]);
        let env = property_env(&p);
        assert_eq!(env["AUTOBOT_PROP_branch"], "main");
        // Two names making one variable: the one that sorts first has it.
        assert_eq!(env["AUTOBOT_PROP_create_autobot"], "/v/bin/c");
        assert!(!env.contains_key("AUTOBOT_PROP_huge"));
        assert!(!env.contains_key("AUTOBOT_PROP_nul"));
        assert_eq!(property_var("a b/ä"), "AUTOBOT_PROP_a_b__");
        // A nested script reads it quoted: the value is data there too.
        let tmp = tempfile::tempdir().unwrap();
        let e = evil(tmp.path());
        let env = property_env(&props(&[("branch", &e)]));
        let out = run_in(
            "bash",
            "sh -c 'printf %s \"$AUTOBOT_PROP_branch\"'",
            &env,
            tmp.path(),
        );
        assert_eq!(out.as_deref(), Ok(e.as_str()));
        assert!(!tmp.path().join("PWNED").exists());
    }

    /// Random scripts built from every construct the tracker knows, nested in
    /// each other: whatever a script does, the value is never run (a script that
    /// cannot be interpolated is refused, which is fine too).
    #[test]
    fn random_scripts_never_run_the_value() {
        let tmp = tempfile::tempdir().unwrap();
        let e = evil(tmp.path());
        let p = props(&[("x", &e)]);
        // xorshift64*, seeded so a failure can be replayed (AUTOBOT_FUZZ_SEED).
        let mut state: u64 = std::env::var("AUTOBOT_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: usize| -> usize {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        };
        fn dq(s: &str) -> String {
            let mut out = String::new();
            for c in s.chars() {
                if matches!(c, '$' | '`' | '"' | '\\') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
        fn gen(next: &mut dyn FnMut(usize) -> usize, depth: usize, doc: &mut usize) -> String {
            let pick = if depth == 0 { 0 } else { next(11) };
            match pick {
                0 => {
                    let atoms = [
                        "%(x)s",
                        "\"a%(x)sb\"",
                        "'c%(x)sd'",
                        "${U:-%(x)s}",
                        "\"${U:-%(x)s}\"",
                        "w",
                        "\"$(printf %s %(x)s)\"",
                        "`printf %s \"%(x)s\"`",
                        "\"`printf %s '%(x)s'`\"",
                        "$'\\''%(x)s",
                    ];
                    let mut out = String::from("printf '%s|'");
                    for _ in 0..1 + next(3) {
                        out.push(' ');
                        out.push_str(atoms[next(atoms.len())]);
                    }
                    out
                }
                1 => format!(
                    "sh -c '{}'",
                    gen(next, depth - 1, doc).replace('\'', "'\\''")
                ),
                2 => format!("bash -c \"{}\"", dq(&gen(next, depth - 1, doc))),
                3 => format!("eval \"{}\"", dq(&gen(next, depth - 1, doc))),
                4 => format!("printf '%s|' \"$({})\"", gen(next, depth - 1, doc)),
                5 => {
                    let mut inner = String::new();
                    for c in gen(next, depth - 1, doc).chars() {
                        if matches!(c, '$' | '`' | '\\') {
                            inner.push('\\');
                        }
                        inner.push(c);
                    }
                    format!("printf '%s|' \"`{inner}`\"")
                }
                6 => {
                    *doc += 1;
                    let d = *doc;
                    format!("sh <<'E{d}'\n{}\nE{d}\n", gen(next, depth - 1, doc))
                }
                7 => {
                    *doc += 1;
                    let d = *doc;
                    format!("cat <<E{d}\n[%(x)s] '%(x)s' \"%(x)s\"\nE{d}\n")
                }
                8 => format!(
                    "{}; {}",
                    gen(next, depth - 1, doc),
                    gen(next, depth - 1, doc)
                ),
                9 => format!("{{ {}; }} | cat", gen(next, depth - 1, doc)),
                _ => format!("# '\"`\n{}", gen(next, depth - 1, doc)),
            }
        }
        let (mut ran, mut refused) = (0, 0);
        for _ in 0..300 {
            let mut doc = 0;
            let depth = 1 + next(4);
            let template = gen(&mut next, depth, &mut doc);
            let (script, env) = match interpolate_shell(&template, &p) {
                Ok(x) => x,
                Err(_) => {
                    refused += 1;
                    continue;
                }
            };
            for shell in SHELLS {
                let _ = std::process::Command::new(shell)
                    .arg("-c")
                    .arg(&script)
                    .envs(&env)
                    .current_dir(tmp.path())
                    .stdin(std::process::Stdio::null())
                    .output()
                    .unwrap();
                assert!(
                    !tmp.path().join("PWNED").exists(),
                    "{shell} ran the value: {template:?} became {script:?}"
                );
            }
            ran += 1;
        }
        assert!(ran > 200, "only {ran} of 300 ran ({refused} refused)");
    }

    #[test]
    fn secrets_go_through_variables_and_errors_hide_them() {
        let secrets = crate::secrets::Secrets::from_values(
            Some("/m/secrets".into()),
            [("TOKEN".to_string(), "v'al; rm -rf /".to_string())].into(),
        );
        let p = props(&[("secret", "prop")]);
        let mut step = StepSpec::shell(
            "s",
            vec!["tool".into(), "--token=%(secret:TOKEN)s".into()],
            "build",
        );
        step.env.insert("T".into(), "%(secret:TOKEN)s".into());
        let out = interpolate_step_with(&step, &p, SecretAccess::Granted(&secrets)).unwrap();
        assert_eq!(out.env["T"], "v'al; rm -rf /");
        match &out.kind {
            StepKind::Shell {
                command: Command::Argv(a),
            } => assert_eq!(a[1], "--token=v'al; rm -rf /"),
            k => panic!("{k:?}"),
        }
        // In a script the value is a variable's, never text of the script.
        step.kind = StepKind::Shell {
            command: Command::Shell("echo '%(secret:TOKEN)s' %(secret:-d)s".into()),
        };
        let out = interpolate_step_with(&step, &p, SecretAccess::Granted(&secrets)).unwrap();
        let StepKind::Shell {
            command: Command::Shell(script),
        } = &out.kind
        else {
            panic!()
        };
        assert!(!script.contains("rm -rf"), "{script}");
        assert_eq!(sh(script, &out.env), "v'al; rm -rf / prop\n");
        assert_eq!(step_secret_references(&step), vec!["TOKEN".to_string()]);
        // Unknown, denied, unavailable, arithmetic: the name, never the value.
        step.kind = StepKind::Shell {
            command: Command::Shell("echo %(secret:NOPE)s".into()),
        };
        let e = interpolate_step_with(&step, &p, SecretAccess::Granted(&secrets)).unwrap_err();
        assert!(
            e.to_string().contains("\"NOPE\"") && e.to_string().contains("/m/secrets/NOPE"),
            "{e}"
        );
        step.kind = StepKind::Shell {
            command: Command::Shell("echo $((%(secret:TOKEN)s + 1))".into()),
        };
        let e = interpolate_step_with(&step, &p, SecretAccess::Granted(&secrets)).unwrap_err();
        assert!(
            !e.to_string().contains("rm -rf") && e.to_string().contains("TOKEN"),
            "{e}"
        );
        let e = interpolate_step_with(&step, &p, SecretAccess::Denied("untrusted")).unwrap_err();
        assert!(
            e.to_string().contains("not given to this build: untrusted"),
            "{e}"
        );
        assert!(interpolate_step(&step, &p).is_err());
        assert!(interpolate("%(secret:a b)s", &p).is_err());
    }
}
