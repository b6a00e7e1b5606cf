//! Built-in factory types: each turns a factory section of `master.ini` into the
//! ordered list of step specs a build runs, and the bundled/local projects.
//!
//! A step spec ([`StepSpec`]) is plain data — a command (or a property to set
//! from a command's output, or a checkout), the directory to run in, environment,
//! the Buildbot result flags, timeouts, locks and descriptions. The build engine
//! turns it into worker-protocol commands; nothing here runs anything, so every
//! type is unit-tested by comparing its step list with the Buildbot 0.7 manual.
//!
//! # Result flags
//! Following the Buildbot 0.7 manual (Build Steps → Common Parameters, Simple
//! ShellCommand Subclasses):
//! * a plain shell command flunks the build when it fails (`flunkOnFailure`);
//! * a source checkout halts the build when it fails (`haltOnFailure`, as Buildbot's
//!   Source steps), as do Configure and Compile (Buildbot's Configure/Compile set
//!   `haltOnFailure`) and the steps that set up a virtualenv or install into it
//!   (autobot passed `haltOnFailure=True`), since nothing after them can work;
//! * a test step (`make check`, `make test`, trial, a python-source `test`) has
//!   `warnOnFailure` and `flunkOnFailure` but not `haltOnFailure`, as Buildbot's Test:
//!   the manual names only `warnOnFailure`, but Test is a ShellCommand, whose
//!   `flunkOnFailure = True` it inherits, so failing tests make the build FAILURE at
//!   the test step and the steps after it still run.
//!
//! Every generated step has Buildbot's default `timeout` of 1200 s without output.
//!
//! # Where things are checked out
//! A factory with one source checks it out into `build`, the directory its commands
//! run in (Buildbot's layout). With several sources each goes to `build/DIR`, DIR
//! being the last part of the URL (git drops `.git`), and the commands run in the
//! first source's directory. Virtualenv types check every source out into
//! `%(virtualenv)s/src/DIR` (autobot's layout). A checkout step's `workdir` is the
//! directory that becomes the source tree. hg sources come before git ones.
//!
//! # Steps of one's own
//! Every type takes `step.NAME = COMMAND` lines ([`Recipe::steps`], with the
//! options of `shell`'s steps): after the type's own steps in file order, or put
//! right after / before a named step (`step.NAME.after`, `step.NAME.before`; a
//! name of the type's list or another step of one's own). They run where the
//! type's commands run unless `workdir` says otherwise. The Python types install
//! `packages` and `requirements` with pip before the tests: into the virtualenv
//! (`virtualenv`, `python-source`), or with `--target` into `pydeps` beside the
//! build directory, on the test step's PYTHONPATH (`distutils`, `trial`).
//!
//! # Commands: a string runs through `/bin/sh`
//! As the Buildbot manual says of a command given as a string, a command written
//! in `master.ini` — `step.NAME`, and the types' command keys `test`, `compile`,
//! `configure`, `bootstrap` — is a [`Command::Shell`] script run by `/bin/sh -c`;
//! `step.NAME.argv = true` (or the older `step.NAME.shell = false`) and the keys'
//! `KEYArgv = true` make it a [`Command::Argv`], split by [`argv::split`]. Keys
//! that name a program autobot adds arguments to (`perl`, `python`, `trial`, …)
//! or hold arguments (`configureFlags`, `trialMode`, `packages`) are words in both
//! modes (`configureFlags` quoted into the script with [`argv::quote`]); autobot's
//! own steps are argv. A script is checked when the factory is read for what
//! `/bin/sh` would refuse at its end (an unterminated quote), and
//! [`interpolate`] keeps a `%(name)s` in it data.
//!
//! # `platform = true`
//! The slave's os (`linux`, `win`, `mac`) reaches the build as the property
//! `platform` ([`build_properties`]) and as the environment variable `PLATFORM` of
//! every step.

pub mod argv;
pub mod interpolate;
pub mod logparse;
pub mod results;
pub mod schema;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::sources::checkout::{Checkout, CheckoutError, MIRRORS_DIR};
use crate::sources::{redact_url, source_dir, Mode, Retry, Source, SourceKind};

pub use schema::{find_type, is_plain_name, types, types_text, FactoryType, ParamKind, ParamSpec};

/// Buildbot's default for a command that produces no output (seconds).
pub const DEFAULT_TIMEOUT: u64 = 1200;

/// The directory a build's commands run in unless told otherwise.
pub const DEFAULT_WORKDIR: &str = "build";

/// A command as the slave will run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Run directly, no shell (Buildbot's command given as a list): what autobot's
    /// own steps run, and a command key when `master.ini` asks (`step.NAME.argv`,
    /// `testArgv`, …). May hold `%(property)s` to be interpolated.
    Argv(Vec<String>),
    /// Run through `/bin/sh -c` (Buildbot's command given as a string): what a
    /// command written in `master.ini` means unless it asks for an argv.
    Shell(String),
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    Shell {
        command: Command,
    },
    /// Run `command` and set the build property `property` to its trimmed stdout
    /// (how the virtualenv types learn where python lives).
    SetProperty {
        property: String,
        command: Command,
    },
    /// Bring `source` into the step's workdir; the engine picks git/hg commands.
    Checkout {
        source: Source,
        mode: Mode,
        always_use_latest: bool,
        retry: Option<Retry>,
        /// Through the slave's mirror of the repository (`mirror`, default true;
        /// see [`crate::sources::checkout`]).
        mirror: bool,
    },
    /// `step.NAME.type = upload` (Buildbot's FileUpload): the slave's file `src`
    /// (relative to the step's workdir) becomes the Build's artifact `dest`
    /// (relative to `MASTERDIR/artifacts/BUILDER/N`).
    Upload {
        src: String,
        dest: String,
    },
    /// `step.NAME.type = upload-dir` (Buildbot's DirectoryUpload): every file
    /// below the slave's directory `src` becomes an artifact below `dest`.
    UploadDir {
        src: String,
        dest: String,
    },
    /// `step.NAME.type = download` (Buildbot's FileDownload): the master's file
    /// `src` (relative to `MASTERDIR/artifacts`) is written to the slave's `dest`
    /// (relative to the step's workdir), with permission bits `mode`.
    Download {
        src: String,
        dest: String,
        mode: Option<u32>,
    },
    /// The factory's `artifacts = GLOB...`: the files of the builder's `build`
    /// directory the globs match are uploaded as artifacts after the last step,
    /// even when a step halted the Build; a glob matching nothing is a warning.
    Artifacts {
        globs: Vec<String>,
    },
}

impl StepKind {
    /// The checkout a `Checkout` step asks for in a build of (`branch`,
    /// `revision`), with the step's interpolated `workdir`.
    pub fn checkout<'a>(
        &'a self,
        workdir: &'a str,
        branch: Option<&'a str>,
        revision: Option<&'a str>,
    ) -> Result<Checkout<'a>, CheckoutError> {
        match self {
            StepKind::Checkout {
                source,
                mode,
                always_use_latest,
                retry,
                mirror,
            } => Ok(Checkout {
                source,
                mode: *mode,
                always_use_latest: *always_use_latest,
                retry: *retry,
                mirror: *mirror,
                mirrors: MIRRORS_DIR,
                workdir,
                branch,
                revision,
                patch_level: None,
                pull_ref: None,
            }),
            _ => Err(CheckoutError::NotACheckout),
        }
    }
}

/// How a step's result counts towards the build's (Buildbot's common parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StepFlags {
    pub halt_on_failure: bool,
    pub flunk_on_failure: bool,
    pub warn_on_failure: bool,
    pub flunk_on_warnings: bool,
    pub warn_on_warnings: bool,
}

impl StepFlags {
    /// A plain ShellCommand: flunk on failure.
    pub const SHELL: StepFlags = StepFlags {
        halt_on_failure: false,
        flunk_on_failure: true,
        warn_on_failure: false,
        flunk_on_warnings: false,
        warn_on_warnings: false,
    };
    /// Checkout, Configure, Compile, virtualenv setup: nothing later can work.
    pub const HALT: StepFlags = StepFlags {
        halt_on_failure: true,
        flunk_on_failure: true,
        warn_on_failure: false,
        flunk_on_warnings: false,
        warn_on_warnings: false,
    };
    /// Compile (Buildbot's Compile step): halts on failure, and compiler warnings
    /// make the build WARNINGS (`warnOnWarnings`).
    pub const COMPILE: StepFlags = StepFlags {
        halt_on_failure: true,
        flunk_on_failure: true,
        warn_on_failure: false,
        flunk_on_warnings: false,
        warn_on_warnings: true,
    };
    /// Test (Buildbot's Test: `warnOnFailure` on top of ShellCommand's
    /// `flunkOnFailure`): failing tests make the build FAILURE; later steps still run.
    pub const TEST: StepFlags = StepFlags {
        halt_on_failure: false,
        flunk_on_failure: true,
        warn_on_failure: true,
        flunk_on_warnings: false,
        warn_on_warnings: false,
    };
}

/// How the engine reads a step's output for counts shown on the waterfall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogParser {
    #[default]
    None,
    /// Count warnings in compiler and tool formats (Buildbot's Compile).
    Compile,
    /// Count test results (Buildbot's Test/Trial).
    Test,
}

/// One step of a build, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepSpec {
    /// Unique within the build; names the step's logs.
    pub name: String,
    pub kind: StepKind,
    /// Relative to the builder's directory on the slave (or a `%(property)s` path).
    pub workdir: String,
    /// Added to the slave's environment.
    pub env: BTreeMap<String, String>,
    pub flags: StepFlags,
    /// Seconds without output before the command is killed; `None`: never.
    pub timeout: Option<u64>,
    /// Seconds in all before the command is killed.
    pub max_time: Option<u64>,
    /// Words shown while running (`compiling`).
    pub description: Vec<String>,
    /// Words shown when done (`compile`).
    pub description_done: Vec<String>,
    /// `[lock:NAME]` sections held while the step runs.
    pub locks: Vec<String>,
    pub log_parser: LogParser,
    /// Buildbot's `warningPattern`: a regular expression that replaces the default
    /// warning formats (see [`logparse`]); checked when the factory is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning_pattern: Option<String>,
}

impl StepSpec {
    /// A step with Buildbot's defaults: workdir `build`, ShellCommand flags, 1200 s.
    fn new(name: &str, kind: StepKind, workdir: &str) -> StepSpec {
        StepSpec {
            name: name.to_string(),
            kind,
            workdir: workdir.to_string(),
            env: BTreeMap::new(),
            flags: StepFlags::SHELL,
            timeout: Some(DEFAULT_TIMEOUT),
            max_time: None,
            description: Vec::new(),
            description_done: Vec::new(),
            locks: Vec::new(),
            log_parser: LogParser::None,
            warning_pattern: None,
        }
    }

    fn shell(name: &str, argv: Vec<String>, workdir: &str) -> StepSpec {
        StepSpec::new(
            name,
            StepKind::Shell {
                command: Command::Argv(argv),
            },
            workdir,
        )
    }

    /// A shell command step running `command` (a script or an argv).
    fn run(name: &str, command: Command, workdir: &str) -> StepSpec {
        StepSpec::new(name, StepKind::Shell { command }, workdir)
    }

    fn flags(mut self, flags: StepFlags) -> StepSpec {
        self.flags = flags;
        self
    }

    fn describe(mut self, running: &[&str], done: &[&str]) -> StepSpec {
        self.description = running.iter().map(|s| s.to_string()).collect();
        self.description_done = done.iter().map(|s| s.to_string()).collect();
        self
    }

    fn parser(mut self, p: LogParser) -> StepSpec {
        self.log_parser = p;
        self
    }
}

/// Why a factory section cannot be turned into steps.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FactoryError {
    #[error("factory {factory}: unknown factory type {type_name:?}; use one of: {valid}")]
    UnknownType {
        factory: String,
        type_name: String,
        valid: String,
    },
    #[error("factory {factory}: type {type_name} needs a source: add `git = URL[#branch]` or `hg = URL[#branch]`")]
    NoSource { factory: String, type_name: String },
    #[error("factory {factory}: a shell factory needs steps: add `step.NAME = COMMAND` lines")]
    NoSteps { factory: String },
    #[error("factory {factory}: {key}: {message}")]
    BadValue {
        factory: String,
        key: String,
        message: String,
    },
    #[error("factory {factory}: two steps are named {step:?}; rename one (a checkout step is named `checkout`, or `checkout-DIR` with several sources)")]
    DuplicateStep { factory: String, step: String },
    #[error("factory {factory}: two sources would be checked out into the same directory {dir:?}; a factory's sources need different last URL parts")]
    DuplicateDir { factory: String, dir: String },
}

/// What a factory type needs of a factory section to make its steps: the
/// factory's own parameter model, so that `factory` never depends on `config`
/// (which builds one from its `FactoryConfig` with `FactoryConfig::recipe`).
#[derive(Debug, Clone, Copy)]
pub struct Recipe<'a> {
    /// The factory section's name (for errors).
    pub name: &'a str,
    /// The built-in factory type (`autotools`, `shell`, …).
    pub type_name: &'a str,
    /// The type's parameters (lower-cased keys); absent keys take the type's default.
    pub params: &'a BTreeMap<String, String>,
    /// Steps of one's own (`step.NAME`, any type) in file order: (step name, options).
    pub steps: &'a [(String, BTreeMap<String, String>)],
    /// Sources in order: hg entries then git entries.
    pub sources: &'a [Source],
    pub mode: Mode,
    pub always_use_latest: bool,
    pub retry: Option<Retry>,
    /// Pass the slave's os to builds (property `platform`, env `PLATFORM`).
    pub platform: bool,
}

/// The build properties a factory sets before its first step (`platform`).
pub fn build_properties(factory: &Recipe, os: &str) -> BTreeMap<String, String> {
    let mut props = BTreeMap::new();
    if factory.platform {
        props.insert("platform".to_string(), os.to_string());
    }
    props
}

/// Reads a factory's parameters with the type's defaults.
struct Params<'a> {
    factory: &'a Recipe<'a>,
    ty: &'static FactoryType,
}

impl Params<'_> {
    fn raw(&self, name: &str) -> &str {
        let key = name.to_ascii_lowercase();
        if let Some(v) = self.factory.params.get(&key) {
            return v;
        }
        self.ty.param(name).map(|p| p.default).unwrap_or("")
    }

    fn bad(&self, key: &str, message: String) -> FactoryError {
        FactoryError::BadValue {
            factory: self.factory.name.to_string(),
            key: key.to_string(),
            message,
        }
    }

    fn argv(&self, name: &str) -> Result<Vec<String>, FactoryError> {
        argv::split(self.raw(name)).map_err(|m| self.bad(name, m))
    }

    /// A command key (`test`, `compile`, …): `None` when empty (no step), else a
    /// `/bin/sh -c` script, or an argv when `{name}Argv` is true; `extra` are
    /// argument words to append (`configureFlags`), quoted for the shell in a
    /// script.
    fn command(&self, name: &str, extra: &[String]) -> Result<Option<Command>, FactoryError> {
        let raw = self.raw(name).trim();
        if raw.is_empty() {
            return Ok(None);
        }
        let argv_key = format!("{name}Argv");
        if self.bool(&argv_key)? {
            let mut argv = self.argv(name)?;
            argv.extend(extra.iter().cloned());
            return Ok(Some(Command::Argv(argv)));
        }
        interpolate::check_script(raw).map_err(|m| {
            self.bad(
                name,
                format!("{m}; fix the quoting, or set `{argv_key} = true` to run it as an argv"),
            )
        })?;
        let mut script = raw.to_string();
        for word in extra {
            script.push(' ');
            script.push_str(&argv::quote(word));
        }
        Ok(Some(Command::Shell(script)))
    }

    fn bool(&self, name: &str) -> Result<bool, FactoryError> {
        let v = self.raw(name);
        schema::parse_bool(v)
            .ok_or_else(|| self.bad(name, format!("expected true or false, got {v:?}")))
    }

    fn words(&self, name: &str) -> Vec<String> {
        self.raw(name)
            .split_whitespace()
            .map(String::from)
            .collect()
    }
}

/// Sources in checkout order (hg first, then svn, bzr, darcs, then git) with the directory of each.
fn sources_with_dirs(f: &Recipe) -> Result<Vec<(Source, String)>, FactoryError> {
    let mut out: Vec<(Source, String)> = Vec::new();
    let ordered = f
        .sources
        .iter()
        .filter(|s| s.kind == SourceKind::Hg)
        .chain(f.sources.iter().filter(|s| s.kind == SourceKind::Svn))
        .chain(f.sources.iter().filter(|s| s.kind == SourceKind::Bzr))
        .chain(f.sources.iter().filter(|s| s.kind == SourceKind::Darcs))
        .chain(f.sources.iter().filter(|s| s.kind == SourceKind::Cvs))
        .chain(f.sources.iter().filter(|s| s.kind == SourceKind::Arch))
        .chain(f.sources.iter().filter(|s| s.kind == SourceKind::Git));
    for s in ordered {
        let dir = source_dir(s);
        if !is_plain_name(&dir) {
            return Err(FactoryError::BadValue {
                factory: f.name.to_string(),
                key: s.kind.as_str().into(),
                message: format!(
                    "cannot name a checkout directory after {:?} (got {dir:?})",
                    redact_url(&s.url)
                ),
            });
        }
        if out.iter().any(|(_, d)| d == &dir) {
            return Err(FactoryError::DuplicateDir {
                factory: f.name.to_string(),
                dir,
            });
        }
        out.push((s.clone(), dir));
    }
    Ok(out)
}

fn checkout_step(f: &Recipe, source: &Source, name: &str, workdir: &str, dir: &str) -> StepSpec {
    StepSpec::new(
        name,
        StepKind::Checkout {
            source: source.clone(),
            mode: f.mode,
            always_use_latest: f.always_use_latest,
            retry: f.retry,
            mirror: f
                .params
                .get("mirror")
                .and_then(|v| schema::parse_bool(v))
                .unwrap_or(true),
        },
        workdir,
    )
    .flags(StepFlags::HALT)
    .describe(&["checking out", dir], &["checkout", dir])
}

/// Buildbot's Compile step: halts on failure, warns on compiler warnings.
fn compile_step(command: Command, workdir: &str) -> StepSpec {
    StepSpec::run("compile", command, workdir)
        .flags(StepFlags::COMPILE)
        .describe(&["compiling"], &["compile"])
        .parser(LogParser::Compile)
}

/// Buildbot's Test step: a failure makes the build FAILURE; counts are parsed.
fn test_step(command: Command, workdir: &str) -> StepSpec {
    StepSpec::run("test", command, workdir)
        .flags(StepFlags::TEST)
        .describe(&["testing"], &["test"])
        .parser(LogParser::Test)
}

/// Checkout steps for the build-tree layout (see the module docs) and the directory
/// the factory's commands run in.
fn checkout_in_build(
    f: &Recipe,
    need_source: bool,
) -> Result<(Vec<StepSpec>, String), FactoryError> {
    let sources = sources_with_dirs(f)?;
    if sources.is_empty() && need_source {
        return Err(FactoryError::NoSource {
            factory: f.name.to_string(),
            type_name: f.type_name.to_string(),
        });
    }
    if let [(s, dir)] = sources.as_slice() {
        return Ok((
            vec![checkout_step(f, s, "checkout", DEFAULT_WORKDIR, dir)],
            DEFAULT_WORKDIR.to_string(),
        ));
    }
    let steps = sources
        .iter()
        .map(|(s, dir)| {
            checkout_step(
                f,
                s,
                &format!("checkout-{dir}"),
                &format!("{DEFAULT_WORKDIR}/{dir}"),
                dir,
            )
        })
        .collect();
    let workdir = match sources.first() {
        Some((_, dir)) => format!("{DEFAULT_WORKDIR}/{dir}"),
        None => DEFAULT_WORKDIR.to_string(),
    };
    Ok((steps, workdir))
}

/// `sh -c` script printing `$PWD/A` or `$PWD/B`, whichever exists first (autobot's
/// `find`); fails when neither does.
fn find_command(a: &str, b: &str) -> Command {
    Command::Argv(vec![
        "sh".to_string(),
        "-c".to_string(),
        format!(
            "if [ -e \"{a}\" ]; then echo \"${{PWD}}/{a}\"; elif [ -e \"{b}\" ]; then echo \"${{PWD}}/{b}\"; else false; fi"
        ),
    ])
}

/// autobot's VirtualenvFactory: returns the steps and the checkout directories.
fn virtualenv_steps(p: &Params) -> Result<(Vec<StepSpec>, Vec<String>), FactoryError> {
    let f = p.factory;
    let name = p.raw("name").to_string();
    if !is_plain_name(&name) {
        return Err(p.bad(
            "name",
            format!("expected a plain directory name, got {name:?}"),
        ));
    }
    let create = if p.bool("virtualenv")? {
        vec!["virtualenv".to_string(), name.clone()]
    } else {
        vec![
            "python3".to_string(),
            "-m".to_string(),
            "venv".to_string(),
            name.clone(),
        ]
    };
    let mut steps = vec![
        StepSpec::shell(
            "remove-virtualenv",
            vec!["rm".into(), "-rf".into(), name.clone()],
            DEFAULT_WORKDIR,
        )
        .describe(&["removing", &name], &["remove", &name]),
        StepSpec::shell("create-virtualenv", create, DEFAULT_WORKDIR)
            .flags(StepFlags::HALT)
            .describe(&["creating virtualenv", &name], &["virtualenv", &name]),
        StepSpec::new(
            "property-virtualenv",
            StepKind::SetProperty {
                property: "virtualenv".into(),
                command: Command::Argv(vec!["pwd".into()]),
            },
            &format!("{DEFAULT_WORKDIR}/{name}"),
        )
        .flags(StepFlags::HALT),
        StepSpec::new(
            "property-scripts",
            StepKind::SetProperty {
                property: "scripts".into(),
                command: find_command("Scripts", "bin"),
            },
            "%(virtualenv)s",
        )
        .flags(StepFlags::HALT),
        StepSpec::new(
            "property-python",
            StepKind::SetProperty {
                property: "python".into(),
                command: find_command("python", "python.exe"),
            },
            "%(scripts)s",
        )
        .flags(StepFlags::HALT),
        StepSpec::shell(
            "mkdir-src",
            vec!["mkdir".into(), "-p".into(), "src".into()],
            "%(virtualenv)s",
        )
        .flags(StepFlags::HALT),
    ];
    let mut dirs = Vec::new();
    // python-source always checks out (it has no `checkout` parameter).
    let checkout = p.ty.param("checkout").is_none() || p.bool("checkout")?;
    if checkout {
        let sources = sources_with_dirs(f)?;
        if sources.is_empty() && f.type_name == "python-source" {
            return Err(FactoryError::NoSource {
                factory: f.name.to_string(),
                type_name: f.type_name.to_string(),
            });
        }
        let single = sources.len() == 1;
        for (s, dir) in &sources {
            let step_name = if single {
                "checkout".to_string()
            } else {
                format!("checkout-{dir}")
            };
            steps.push(checkout_step(
                f,
                s,
                &step_name,
                &format!("%(virtualenv)s/src/{dir}"),
                dir,
            ));
            dirs.push(dir.clone());
        }
    }
    Ok((steps, dirs))
}

/// `packages` and `requirements` of a virtualenv type: one `pip install` into the
/// virtualenv, run in `workdir` (the first source's checkout, which `requirements`
/// is relative to); `None` when neither is set.
fn venv_requirements_step(
    p: &Params,
    workdir: &str,
    checked_out: bool,
) -> Result<Option<StepSpec>, FactoryError> {
    let Some(args) = pip_args(p, checked_out)? else {
        return Ok(None);
    };
    let mut argv: Vec<String> = ["%(python)s", "-m", "pip", "install"]
        .map(String::from)
        .to_vec();
    argv.extend(args);
    Ok(Some(
        StepSpec::shell("install-requirements", argv, workdir)
            .flags(StepFlags::HALT)
            .describe(
                &["installing", "requirements"],
                &["install", "requirements"],
            ),
    ))
}

/// `-r FILE` and the `packages` words for `pip install`; `None` when there are none.
fn pip_args(p: &Params, checked_out: bool) -> Result<Option<Vec<String>>, FactoryError> {
    let packages = p.argv("packages")?;
    let requirements = p.raw("requirements").trim().to_string();
    if packages.is_empty() && requirements.is_empty() {
        return Ok(None);
    }
    let mut args = Vec::new();
    if !requirements.is_empty() {
        if !checked_out {
            return Err(p.bad(
                "requirements",
                "the file is relative to the first source's checkout, and this factory checks nothing out: add `git = URL` (and `checkout = true`), or use `packages`".into(),
            ));
        }
        if std::path::Path::new(&requirements).is_absolute() {
            return Err(p.bad(
                "requirements",
                format!(
                    "expected a path relative to the first source's checkout, got {requirements:?}"
                ),
            ));
        }
        args.push("-r".to_string());
        args.push(requirements);
    }
    args.extend(packages);
    Ok(Some(args))
}

/// Where `distutils` and `trial` install `packages` and `requirements`: `pydeps`
/// beside `build` in the builder's directory, written relative to `workdir`.
fn pydeps_dir(workdir: &str) -> String {
    let depth = workdir.split('/').filter(|c| !c.is_empty()).count();
    format!("{}pydeps", "../".repeat(depth))
}

/// `packages` and `requirements` of `distutils` and `trial`: removed and installed
/// afresh with `python -m pip install --target` into [`pydeps_dir`], which the
/// test step then finds on PYTHONPATH (no virtualenv, and nothing written into the
/// slave's own Python).
fn pydeps_steps(
    p: &Params,
    python: &[String],
    workdir: &str,
) -> Result<Vec<StepSpec>, FactoryError> {
    let Some(args) = pip_args(p, true)? else {
        return Ok(Vec::new());
    };
    let dir = pydeps_dir(workdir);
    let mut argv = python.to_vec();
    argv.extend(["-m", "pip", "install", "--target"].map(String::from));
    argv.push(dir.clone());
    argv.extend(args);
    Ok(vec![
        StepSpec::shell(
            "remove-pydeps",
            vec!["rm".into(), "-rf".into(), dir],
            workdir,
        )
        .flags(StepFlags::HALT)
        .describe(&["removing", "pydeps"], &["remove", "pydeps"]),
        StepSpec::shell("install-requirements", argv, workdir)
            .flags(StepFlags::HALT)
            .describe(
                &["installing", "requirements"],
                &["install", "requirements"],
            ),
    ])
}

/// Where a step of one's own (`step.NAME`) goes among the type's steps.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// After the type's steps and the steps before it in the file.
    End,
    /// `step.NAME.after = STEP`.
    After(String),
    /// `step.NAME.before = STEP`.
    Before(String),
}

/// The steps of one's own from [`Recipe::steps`] in file order, each with where it
/// goes; `workdir` is where a step runs unless its `workdir` option says otherwise.
fn custom_steps(f: &Recipe, workdir: &str) -> Result<Vec<(StepSpec, Place)>, FactoryError> {
    let mut out = Vec::new();
    for (name, opts) in f.steps {
        let bad = |opt: &str, message: String| FactoryError::BadValue {
            factory: f.name.to_string(),
            key: format!("step.{name}{}{opt}", if opt.is_empty() { "" } else { "." }),
            message,
        };
        let raw = opts.get("command").map(String::as_str).unwrap_or("");
        let kind_name = opts
            .get("type")
            .map(|t| t.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if !matches!(kind_name.as_str(), "" | "shell") {
            let kind = transfer_kind(&kind_name, raw, opts).map_err(|(opt, m)| bad(opt, m))?;
            let mut step = StepSpec::new(name, kind, workdir);
            step.timeout = None;
            let place = step_options(&mut step, opts, &bad, true)?;
            out.push((step, place));
            continue;
        }
        let option = |opt: &str| match opts.get(opt) {
            Some(v) => schema::parse_bool(v)
                .map(Some)
                .ok_or_else(|| bad(opt, format!("expected true or false, got {v:?}"))),
            None => Ok(None),
        };
        // A command string runs through /bin/sh -c unless `argv = true` (or the
        // older `shell = false`) says otherwise.
        let as_argv = match (option("argv")?, option("shell")?) {
            (Some(a), Some(s)) if a == s => {
                return Err(bad(
                    "argv",
                    format!("says {a} while step.{name}.shell says {s}; keep one of them (argv = true runs an argv, the default runs /bin/sh -c)"),
                ))
            }
            (Some(a), _) => a,
            (None, Some(s)) => !s,
            (None, None) => false,
        };
        let command = if !as_argv {
            if raw.trim().is_empty() {
                return Err(bad("", "expected a command, got nothing".into()));
            }
            interpolate::check_script(raw.trim()).map_err(|m| {
                bad(
                    "",
                    format!("{m}; fix the quoting, or set `step.{name}.argv = true` to run it as an argv"),
                )
            })?;
            Command::Shell(raw.trim().to_string())
        } else {
            let argv = argv::split(raw).map_err(|m| bad("", m))?;
            if argv.is_empty() {
                return Err(bad("", "expected a command, got nothing".into()));
            }
            Command::Argv(argv)
        };
        let mut step = StepSpec::new(name, StepKind::Shell { command }, workdir);
        let place = step_options(&mut step, opts, &bad, false)?;
        out.push((step, place));
    }
    Ok(out)
}

/// The options of a step of one's own (`step.NAME.OPTION`) applied to `step`;
/// where it goes. `transfer`: a `type = upload|upload-dir|download` step, which
/// runs no command (the options about commands are refused).
fn step_options(
    step: &mut StepSpec,
    opts: &BTreeMap<String, String>,
    bad: &dyn Fn(&str, String) -> FactoryError,
    transfer: bool,
) -> Result<Place, FactoryError> {
    {
        let mut place = Place::End;
        for (opt, value) in opts {
            if transfer
                && (matches!(
                    opt.as_str(),
                    "argv" | "shell" | "logparser" | "warningpattern" | "maxtime" | "timeout"
                ) || opt.starts_with("env."))
            {
                return Err(bad(
                    opt,
                    format!(
                        "applies to a command, and a step of type {} runs none; remove it",
                        opts.get("type").map(|t| t.trim()).unwrap_or("")
                    ),
                ));
            }
            if !transfer && opt == "mode" {
                return Err(bad(
                    opt,
                    "applies to a step of `type = download` only; remove it".into(),
                ));
            }
            let flag = |v: &str| {
                schema::parse_bool(v)
                    .ok_or_else(|| bad(opt, format!("expected true or false, got {v:?}")))
            };
            let int = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(opt, format!("expected a whole number, got {v:?}")))
            };
            match opt.as_str() {
                "command" | "shell" | "argv" | "type" | "mode" => {}
                "after" | "before" => {
                    if place != Place::End {
                        return Err(bad(
                            opt,
                            "a step is placed either after or before another, not both; remove one of step.NAME.after and step.NAME.before".into(),
                        ));
                    }
                    let target = value.trim().to_ascii_lowercase();
                    if target.is_empty() {
                        return Err(bad(opt, "expected the name of a step, got nothing".into()));
                    }
                    place = if opt == "after" {
                        Place::After(target)
                    } else {
                        Place::Before(target)
                    };
                }
                "haltonfailure" => step.flags.halt_on_failure = flag(value)?,
                "flunkonfailure" => step.flags.flunk_on_failure = flag(value)?,
                "warnonfailure" => step.flags.warn_on_failure = flag(value)?,
                "flunkonwarnings" => step.flags.flunk_on_warnings = flag(value)?,
                "warnonwarnings" => step.flags.warn_on_warnings = flag(value)?,
                "timeout" => step.timeout = Some(int(value)?).filter(|t| *t > 0),
                "maxtime" => step.max_time = Some(int(value)?).filter(|t| *t > 0),
                "workdir" => {
                    if !value.trim().is_empty() {
                        step.workdir = value.trim().to_string();
                    }
                }
                "description" => {
                    step.description = value.split_whitespace().map(String::from).collect()
                }
                "descriptiondone" => {
                    step.description_done = value.split_whitespace().map(String::from).collect()
                }
                "locks" => step.locks = value.split_whitespace().map(String::from).collect(),
                "warningpattern" => {
                    if !value.is_empty() {
                        logparse::warning_regex(value).map_err(|e| bad(opt, e.0))?;
                        step.warning_pattern = Some(value.clone());
                    }
                }
                "logparser" => {
                    step.log_parser = match value.trim().to_ascii_lowercase().as_str() {
                        "none" | "" => LogParser::None,
                        "compile" => LogParser::Compile,
                        "test" => LogParser::Test,
                        other => {
                            return Err(bad(
                                opt,
                                format!("expected none, compile or test, got {other:?}"),
                            ))
                        }
                    }
                }
                other => match other.strip_prefix("env.") {
                    Some(var) if schema::is_env_name(var) => {
                        step.env.insert(var.to_string(), value.clone());
                    }
                    _ => {
                        return Err(bad(
                            opt,
                            format!(
                                "unknown step option; use one of: {}",
                                schema::step_option_names()
                            ),
                        ))
                    }
                },
            }
        }
        Ok(place)
    }
}

/// Whether `path` is relative and stays where it is written: no `..`, no
/// leading `/`, not empty (a `%(property)s` in it is checked again once
/// interpolated).
pub fn is_confined_path(path: &str) -> bool {
    let p = path.trim();
    !p.is_empty()
        && !p.starts_with('/')
        && !p.starts_with('~')
        && !p.contains('\\')
        && !p.contains('\0')
        && p.split('/').all(|c| c != "..")
}

/// The last component of a path (for an upload's default `dest`).
fn base_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .to_string()
}

/// A step of `type = upload|upload-dir|download`: `step.NAME = SRC [DEST]`.
/// The error names the option (`""`: the step's own line) and says why.
fn transfer_kind(
    kind: &str,
    raw: &str,
    opts: &BTreeMap<String, String>,
) -> Result<StepKind, (&'static str, String)> {
    let words = argv::split(raw).map_err(|m| ("", m))?;
    let usage = match kind {
        "upload" => "SLAVEPATH [ARTIFACTPATH]",
        "upload-dir" => "SLAVEDIR [ARTIFACTDIR]",
        "download" => "ARTIFACTPATH SLAVEPATH",
        other => {
            return Err((
                "type",
                format!("expected shell, upload, upload-dir or download, got {other:?}"),
            ))
        }
    };
    let (src, dest) = match (kind, words.as_slice()) {
        ("download", [src, dest]) => (src.clone(), dest.clone()),
        ("upload" | "upload-dir", [src]) => (src.clone(), base_name(src)),
        ("upload" | "upload-dir", [src, dest]) => (src.clone(), dest.clone()),
        _ => {
            return Err((
                "",
                format!(
                    "a step of type {kind} is written `step.NAME = {usage}` (paths relative: the slave's to the step's workdir, the master's to {}), got {raw:?}",
                    if kind == "download" { "MASTERDIR/artifacts" } else { "the build's artifacts" }
                ),
            ))
        }
    };
    for (which, p) in [("source", &src), ("destination", &dest)] {
        if !is_confined_path(p) {
            return Err((
                "",
                format!(
                    "the {which} {p:?} must be a relative path without `..` (the slave's stays in its build directory, the master's in its artifacts directory)"
                ),
            ));
        }
    }
    let mode = match opts.get("mode").map(|m| m.trim()) {
        None | Some("") => None,
        Some(m) => Some(
            u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or((
                    "mode",
                    format!("expected octal permission bits such as 0755, got {m:?}"),
                ))?,
        ),
    };
    if mode.is_some() && kind != "download" {
        return Err((
            "mode",
            "applies to a step of `type = download` only; remove it".into(),
        ));
    }
    Ok(match kind {
        "upload" => StepKind::Upload { src, dest },
        "upload-dir" => StepKind::UploadDir { src, dest },
        _ => StepKind::Download { src, dest, mode },
    })
}

/// The type's own `steps` with the steps of one's own put in their places: first
/// every unplaced one after the type's steps in file order, then each placed one
/// after or before its step (several placed after one step keep file order). A
/// placement naming no step of the list is an error on that option.
fn place_steps(
    f: &Recipe,
    mut steps: Vec<StepSpec>,
    custom: Vec<(StepSpec, Place)>,
) -> Result<Vec<StepSpec>, FactoryError> {
    // (step, placed after?, the step it is placed by)
    let mut pending: Vec<(StepSpec, bool, String)> = Vec::new();
    for (step, place) in custom {
        match place {
            Place::End => steps.push(step),
            Place::After(a) => pending.push((step, true, a)),
            Place::Before(a) => pending.push((step, false, a)),
        }
    }
    // The last step placed after each anchor, so the next one goes after it.
    let mut last_after: BTreeMap<String, String> = BTreeMap::new();
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for (step, after, anchor) in pending {
            let target = if after {
                last_after.get(&anchor).cloned().unwrap_or(anchor.clone())
            } else {
                anchor.clone()
            };
            match steps
                .iter()
                .position(|s| s.name.eq_ignore_ascii_case(&target))
            {
                Some(i) => {
                    let at = if after { i + 1 } else { i };
                    if after {
                        last_after.insert(anchor, step.name.clone());
                    }
                    steps.insert(at, step);
                }
                None => rest.push((step, after, anchor)),
            }
        }
        if rest.len() == before {
            let (step, after, anchor) = &rest[0];
            let opt = if *after { "after" } else { "before" };
            let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            let others: Vec<&str> = rest.iter().map(|(s, _, _)| s.name.as_str()).collect();
            return Err(FactoryError::BadValue {
                factory: f.name.to_string(),
                key: format!("step.{}.{opt}", step.name),
                message: format!(
                    "no step named {anchor:?} to place it {opt}{}; steps of a {} factory here: {}{}",
                    schema::closest(anchor, names.iter().copied())
                        .map(|n| format!(" (did you mean `{n}`?)"))
                        .unwrap_or_default(),
                    f.type_name,
                    names.join(", "),
                    if others.len() > 1 {
                        format!(" (and the placed steps {}, which may not place each other in a circle)", others.join(", "))
                    } else {
                        String::new()
                    }
                ),
            });
        }
        pending = rest;
    }
    Ok(steps)
}

/// The steps a build of `factory` on a slave whose os is `os` (`linux`, `win`,
/// `mac`) runs, in order. `config::load` calls
/// this for every factory, so a loaded config never fails here; the engine calls it
/// per build (the slave matters only for `platform`).
pub fn build_steps(factory: &Recipe, os: &str) -> Result<Vec<StepSpec>, FactoryError> {
    let f = factory;
    let ty = find_type(f.type_name).ok_or_else(|| FactoryError::UnknownType {
        factory: f.name.to_string(),
        type_name: f.type_name.to_string(),
        valid: schema::type_names(),
    })?;
    let p = Params { factory: f, ty };
    // The type's own steps, and where steps of one's own run by default.
    let (steps, workdir): (Vec<StepSpec>, String) = match ty.name {
        "source" => checkout_in_build(f, true)?,
        "virtualenv" | "python-source" => {
            let (mut steps, dirs) = virtualenv_steps(&p)?;
            let workdir = match dirs.first() {
                Some(dir) => format!("%(virtualenv)s/src/{dir}"),
                None => "%(virtualenv)s".to_string(),
            };
            if let Some(step) = venv_requirements_step(&p, &workdir, !dirs.is_empty())? {
                steps.push(step);
            }
            if ty.name == "python-source" {
                let pip = p.raw("install").eq_ignore_ascii_case("pip");
                for dir in &dirs {
                    let argv: Vec<String> = if pip {
                        ["%(python)s", "-m", "pip", "install", "--no-deps", "."]
                            .map(String::from)
                            .to_vec()
                    } else {
                        ["%(python)s", "setup.py", "install"]
                            .map(String::from)
                            .to_vec()
                    };
                    steps.push(
                        StepSpec::shell(
                            &format!("install-{dir}"),
                            argv,
                            &format!("%(virtualenv)s/src/{dir}"),
                        )
                        .flags(StepFlags::HALT)
                        .describe(&["installing", dir], &["install", dir]),
                    );
                }
            }
            if let Some(test) = p.command("test", &[])? {
                steps.push(test_step(test, &workdir));
            }
            (steps, workdir)
        }
        "autotools" => {
            let (mut steps, wd) = checkout_in_build(f, true)?;
            if let Some(bootstrap) = p.command("bootstrap", &[])? {
                steps.push(
                    StepSpec::run("bootstrap", bootstrap, &wd)
                        .flags(StepFlags::HALT)
                        .describe(&["bootstrapping"], &["bootstrap"]),
                );
            }
            if let Some(configure) = p.command("configure", &p.argv("configureFlags")?)? {
                let mut step = StepSpec::run("configure", configure, &wd)
                    .flags(StepFlags::HALT)
                    .describe(&["configuring"], &["configure"]);
                step.env = schema::parse_env_list(p.raw("configureEnv"))
                    .map_err(|m| p.bad("configureEnv", m))?
                    .into_iter()
                    .collect();
                steps.push(step);
            }
            if let Some(compile) = p.command("compile", &[])? {
                steps.push(compile_step(compile, &wd));
            }
            if let Some(test) = p.command("test", &[])? {
                steps.push(test_step(test, &wd));
            }
            (steps, wd)
        }
        "cpan" => {
            let (mut steps, wd) = checkout_in_build(f, true)?;
            let mut configure = p.argv("perl")?;
            if configure.is_empty() {
                return Err(p.bad("perl", "expected the perl command, got nothing".into()));
            }
            configure.push("Makefile.PL".into());
            steps.push(
                StepSpec::shell("configure", configure, &wd)
                    .flags(StepFlags::HALT)
                    .describe(&["configuring"], &["configure"]),
            );
            steps.push(compile_step(Command::Argv(vec!["make".into()]), &wd));
            // Verbose TAP shows which tests were skipped or TODO (non-verbose
            // Test::Harness prints neither), so they are counted as such.
            steps.push(test_step(
                Command::Argv(vec!["make".into(), "test".into(), "TEST_VERBOSE=1".into()]),
                &wd,
            ));
            (steps, wd)
        }
        "distutils" => {
            let (mut steps, wd) = checkout_in_build(f, true)?;
            let python = p.argv("python")?;
            if python.is_empty() {
                return Err(p.bad("python", "expected the python command, got nothing".into()));
            }
            let deps = pydeps_steps(&p, &python, &wd)?;
            let has_deps = !deps.is_empty();
            steps.extend(deps);
            let mut build = python;
            build.extend(["./setup.py".to_string(), "build".to_string()]);
            steps.push(compile_step(Command::Argv(build), &wd));
            if let Some(test) = p.command("test", &[])? {
                let mut step = test_step(test, &wd);
                if has_deps {
                    step.env.insert("PYTHONPATH".into(), pydeps_dir(&wd));
                }
                steps.push(step);
            }
            (steps, wd)
        }
        "trial" => {
            let (mut steps, wd) = checkout_in_build(f, true)?;
            let build_python = p.argv("buildpython")?;
            if build_python.is_empty() {
                return Err(p.bad(
                    "buildpython",
                    "expected the python command, got nothing".into(),
                ));
            }
            let deps = pydeps_steps(&p, &build_python, &wd)?;
            let has_deps = !deps.is_empty();
            steps.extend(deps);
            let mut build = build_python;
            build.extend(["./setup.py".to_string(), "build".to_string()]);
            steps.push(compile_step(Command::Argv(build), &wd));
            let tests = p.words("tests");
            if !tests.is_empty() {
                let mut argv = p.argv("trialpython")?;
                let trial = p.argv("trial")?;
                if trial.is_empty() {
                    return Err(p.bad("trial", "expected the trial command, got nothing".into()));
                }
                argv.extend(trial);
                argv.extend(p.argv("trialMode")?);
                // Current trial always recurses into packages and no longer knows
                // `--recurse` (Buildbot 0.7 passed it for `recurse=True`), so
                // `recurse = false` is what needs a flag.
                if !p.bool("recurse")? {
                    argv.push("--no-recurse".into());
                }
                if p.bool("randomly")? {
                    argv.push("--random=0".into());
                }
                argv.extend(tests);
                let mut step = StepSpec::shell("trial", argv, &wd)
                    .flags(StepFlags::TEST)
                    .describe(&["testing"], &["tests"])
                    .parser(LogParser::Test);
                let mut path = p.raw("testpath").to_string();
                if has_deps {
                    path = format!("{path}:{}", pydeps_dir(&wd));
                }
                step.env.insert("PYTHONPATH".into(), path);
                steps.push(step);
            }
            (steps, wd)
        }
        "shell" => {
            if f.steps.is_empty() {
                return Err(FactoryError::NoSteps {
                    factory: f.name.to_string(),
                });
            }
            // A shell factory's steps run in `build` whatever its sources (as before
            // steps of one's own came to every type).
            let (steps, _) = checkout_in_build(f, false)?;
            (steps, DEFAULT_WORKDIR.to_string())
        }
        other => {
            return Err(FactoryError::UnknownType {
                factory: f.name.to_string(),
                type_name: other.to_string(),
                valid: schema::type_names(),
            })
        }
    };
    let custom = custom_steps(f, &workdir)?;
    let mut steps = place_steps(f, steps, custom)?;
    let globs = p.words("artifacts");
    if !globs.is_empty() {
        for g in &globs {
            if !is_confined_path(g) {
                return Err(p.bad(
                    "artifacts",
                    format!("{g:?} must be a glob relative to the builder's `build` directory, without `..`"),
                ));
            }
        }
        steps.push(
            StepSpec::new("artifacts", StepKind::Artifacts { globs }, DEFAULT_WORKDIR)
                .describe(&["uploading", "artifacts"], &["artifacts"]),
        );
    }
    let max = p.raw("maxArtifactSize");
    if !max.trim().is_empty() {
        schema::parse_size(max).map_err(|m| p.bad("maxArtifactSize", m))?;
    }
    for (i, s) in steps.iter().enumerate() {
        if steps[..i].iter().any(|t| t.name == s.name) {
            return Err(FactoryError::DuplicateStep {
                factory: f.name.to_string(),
                step: s.name.clone(),
            });
        }
    }
    let pattern = p.raw("warningPattern");
    if !pattern.is_empty() {
        logparse::warning_regex(pattern).map_err(|e| p.bad("warningPattern", e.0))?;
        for s in &mut steps {
            if s.log_parser == LogParser::Compile && s.warning_pattern.is_none() {
                s.warning_pattern = Some(pattern.to_string());
            }
        }
    }
    if f.platform {
        for s in &mut steps {
            s.env.insert("PLATFORM".into(), os.to_string());
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests;
