//! The built-in factory types as data: each type's name, what it does, and the keys
//! a factory section of that type accepts, with their kinds, defaults and help.
//!
//! One table serves three readers: `master.ini` validation (is this key known, is its
//! value well-formed), [`super::build_steps`] (the defaults), and
//! `autobot list-factories --types` (the reference a user reads). Keys are matched
//! case-insensitively; the names here are spelled the way the manual spells them.

use super::argv;

/// What a key's value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Any text.
    Str,
    /// A plain directory name (letters, digits, `.`, `_`, `-`; not `.` or `..`): it is
    /// used in `rm -rf NAME`, so it must never reach outside the build directory.
    DirName,
    /// A whole number >= 0.
    Int,
    /// A whole number >= 1.
    PosInt,
    /// true/false, yes/no, on/off, 1/0.
    Bool,
    /// Whitespace-separated words.
    List,
    /// A command, split like a shell splits words (quotes respected); must not be empty.
    Argv,
    /// A command as for `Argv`, or empty to leave the step out.
    OptArgv,
    /// A command line a user writes (`make check | tee out.txt`), or empty to
    /// leave the step out: run through `/bin/sh -c`, or split into an argv as for
    /// `Argv` when the key's `…Argv` companion is true; checked when the factory's
    /// steps are made, where the mode is known.
    Command,
    /// Whitespace-separated `VAR=VALUE` words (quotes respected).
    EnvList,
    /// One of the listed words.
    Choice(&'static [&'static str]),
    /// `URL[#branch] [URL[#branch]...]`.
    Sources,
    /// Whitespace-separated regular expressions.
    Regexes,
    /// Five cron fields: minute hour day-of-month month day-of-week.
    Cron,
    /// `DELAY REPEATS`: two whole numbers.
    Retry,
    /// The name of another factory section.
    FactoryRef,
    /// Names of `[lock:NAME]` sections.
    LockRefs,
    /// A size in bytes, with an optional K, M or G suffix (powers of 1024).
    Size,
}

/// One key a factory section (or a shell step) accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    /// The key as the manual spells it (`configureFlags`); matched case-insensitively.
    pub name: &'static str,
    pub kind: ParamKind,
    /// The value used when the key is absent (empty: none).
    pub default: &'static str,
    pub help: &'static str,
}

/// A built-in factory type: the function from a factory section to step specs is
/// [`super::build_steps`]; this is the part a user and the validator need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactoryType {
    pub name: &'static str,
    pub description: &'static str,
    /// The type's own keys (the keys in [`COMMON`] are accepted by every type too).
    pub params: &'static [ParamSpec],
    /// The names of the type's steps in order (those its keys may leave out
    /// included), which `step.NAME.after` / `.before` can name.
    pub steps: &'static str,
}

impl FactoryType {
    /// The type's own parameter named `key` (any case).
    pub fn param(&self, key: &str) -> Option<&'static ParamSpec> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(key))
    }

    /// Whether `key` (any case) is a key a section of this type may set: a common
    /// key, one of the type's parameters, or a `step.` key (every type takes steps
    /// of one's own).
    pub fn accepts(&self, key: &str) -> bool {
        common_param(key).is_some()
            || self.param(key).is_some()
            || key.to_ascii_lowercase().starts_with("step.")
    }

    /// The accepted keys, for error messages: the type's own first, then the
    /// common ones.
    pub fn accepted_keys(&self) -> String {
        let own: Vec<&str> = self.params.iter().map(|p| p.name).collect();
        let common: Vec<&str> = COMMON
            .iter()
            .map(|p| p.name)
            .chain(["step.NAME", "step.NAME.OPTION"])
            .collect();
        if own.is_empty() {
            format!(
                "(none of its own) and the keys of every factory: {}",
                common.join(", ")
            )
        } else {
            format!(
                "{}; and the keys of every factory: {}",
                own.join(", "),
                common.join(", ")
            )
        }
    }

    /// The accepted key closest to a misspelt one, if any is close.
    pub fn suggest(&self, key: &str) -> Option<&'static str> {
        let names = self.params.iter().chain(COMMON.iter()).map(|p| p.name);
        closest(key, names)
    }
}

macro_rules! p {
    ($name:literal, $kind:expr, $default:literal, $help:literal) => {
        ParamSpec {
            name: $name,
            kind: $kind,
            default: $default,
            help: $help,
        }
    };
}

use ParamKind::*;

/// Why a source key of Buildbot's manual that autobot does not build is refused
/// (`p4`), for `checkconfig`; `None` for every other key.
pub fn unsupported_source(key: &str) -> Option<String> {
    match key.to_ascii_lowercase().as_str() {
        "p4" | "p4port" | "p4base" => Some(format!(
            "Perforce (`{key}`) is not supported: autobot builds only the version-control \
             systems it can test against a real server and client, and Perforce has neither \
             a Debian package nor a free server to test with; use git, hg, svn (or mirror the \
             depot into git with git-p4)"
        )),
        _ => None,
    }
}

/// Keys every factory section accepts, whatever its type. Scheduling keys
/// (branches, files, periodic, nightly, dependsOn, treeStable, pollInterval) are read
/// by the schedulers; the checkout keys (mode, alwaysUseLatest, retry, mirror) by the
/// checkout steps.
pub static COMMON: &[ParamSpec] = &[
    p!("type", Str, "", "The built-in factory type that builds this factory (required unless the section is named after a project)."),
    p!("description", Str, "", "One line shown by `list-factories` and on the web pages."),
    p!("git", Sources, "", "Git repositories: URL[#branch] ... (branch defaults to master; ./ and ../ paths are relative to the master directory)."),
    p!("hg", Sources, "", "Mercurial repositories: URL[#branch] ... (branch defaults to default); checked out before the svn and git ones."),
    p!("svn", Sources, "", "Subversion repositories: URL[#BRANCH] ... (svn://, http(s)://, svn+ssh:// or file:// URLs; a local path becomes file://). Without #BRANCH the URL itself is checked out (Buildbot's svnurl); with it the URL is the base and BRANCH a path below it (baseURL + defaultBranch, e.g. `svn://host/repo#trunk`), and a build of another branch checks out URL/BRANCH. No password in the URL: keep it in the slave's svn auth cache. Checked out after hg, before git; polled with `svn log`."),
    p!("bzr", Sources, "", "Bazaar branches, checked out with `brz`: URL[#PATH] ... (bzr://, http(s)://, bzr+ssh://, lp:, file:// or a path). Without #PATH the URL is the branch; with it the URL is a base and PATH the branch below it (a build of another branch checks out URL/BRANCH). A revision is a revno or revid:…; got_revision is the revno. No password in the URL. Checked out after svn, before git; polled with `brz revno` and `brz log`."),
    p!("darcs", Sources, "", "Darcs repositories: URL[#PATH] ... (http(s)://, ssh (host:path), a path). Without #PATH the URL is the repository; with it the URL is a base and PATH the repository below it. A revision is a patch hash (checked out with `darcs clone --to-hash`), and got_revision is the newest patch's hash. No password in the URL. Checked out after bzr, before git; polled with `darcs log --xml-output`."),
    p!("cvs", Sources, "", "CVS modules: CVSROOT MODULE[#BRANCH] ... (pairs of words; the CVSROOT a local path or :pserver:USER[:PASSWORD]@HOST:/PATH, BRANCH a CVS branch tag, the trunk without one). A revision is a CVS date (`2026-12-07 05:25:02 +0000`, checked out with -D); got_revision is the date checked out, the time of the checkout when none was given (as Buildbot). A pserver password reaches cvs through a private CVS_PASSFILE, never an argv or a log. Checked out after darcs, before arch; polled with `cvs rlog`, file revisions grouped into Changes by author, log message and a 60 s window."),
    p!("arch", Sources, "", "GNU Arch versions, checked out with `tla`: ARCHIVE/CATEGORY--BRANCH--VERSION ... (needs archiveLocation). A build of another branch names another version (in the same archive unless it says ARCHIVE/). A revision is a fully qualified revision (ARCHIVE/VERSION--patch-N); got_revision is the tree's (`tla tree-revision`). tla runs with HOME in the builder's directory, where the archive is registered, never in the slave user's ~/.arch-params. Checked out after cvs, before git; polled with `tla revisions`."),
    p!("archiveLocation", Str, "", "With arch = ARCHIVE/VERSION: where the archive is (a path, http(s)://, sftp:// or ftp:// URL), registered for tla in a private HOME."),
    p!("svnBranchPrefix", Str, "", "With svn = URL#BRANCH: where the other branches live below the URL, e.g. `branches`, so that branch NAME (in `branches =`, a Change or a forced build) is checked out and polled at URL/branches/NAME, while BRANCH itself stays at URL/BRANCH."),
    p!("sample", Str, "", "Name of a sample repository embedded in autobot that `create` writes into the master directory."),
    p!("platform", Bool, "false", "Pass the slave's os to the build: property `platform` and environment variable PLATFORM on every step."),
    p!("category", Str, "", "Category of the builders, for filtering the web pages and notifications."),
    p!("revlink", Str, "", "URL template for a revision on the web pages; %s is replaced by the revision."),
    p!("branches", List, "", "Only changes on these branches start builds (default: the branches of the sources)."),
    p!("files", Regexes, "", "Only changes touching a file matching one of these regular expressions start builds."),
    p!("pullRequests", Bool, "false", "Build pull (merge) requests that the github, gitea or gitlab change hook hears for this factory's git repository: opened, reopened and each new head (the forge's refs/pull/N/head or refs/merge-requests/N/head is fetched and the head checked out); a new head cancels the request's running and queued builds. Properties pr_number, pr_title, pr_url, pr_head_repo, pr_head_ref, pr_base_branch."),
    p!("pullRequestBranches", List, "", "With pullRequests: only requests that target these branches are built (default: all)."),
    p!("pullRequestsFromForks", Bool, "false", "With pullRequests: also build requests from another repository (a fork); such a build is untrusted (property pr_from_fork = true) and gets no secrets."),
    p!("periodic", PosInt, "", "Also build every this many seconds."),
    p!("nightly", Cron, "", "Also build at these times: five cron fields, minute hour day-of-month month day-of-week (e.g. `0 3 * * *`)."),
    p!("dependsOn", FactoryRef, "", "Build after each successful build of this other factory (instead of watching the sources)."),
    p!("locks", LockRefs, "", "[lock:NAME] sections every build of this factory holds."),
    p!("mode", Choice(&["update", "copy", "clobber", "export"]), "update", "How checkouts reuse the previous tree: update in place, copy a pristine tree, clobber (fresh clone), export (no VCS metadata)."),
    p!("alwaysUseLatest", Bool, "false", "Check out the branch head instead of the revision of the change that started the build."),
    p!("retry", Retry, "", "Retry a failed checkout: `DELAY REPEATS` (seconds between tries, number of tries)."),
    p!("mirror", Bool, "true", "Check out through the slave's own mirror of each repository (BASEDIR/mirrors; fetched only when it lacks the build's revision); false clones and fetches from the repository itself."),
    p!("treeStable", Int, "", "Seconds the sources must be quiet before a build starts (default: the master's treeStable)."),
    p!("pollInterval", PosInt, "", "Seconds between polls of the sources (default: the master's pollInterval)."),
    p!("recipients", List, "", "Mail addresses that get this factory's build mails, instead of the master's recipients."),
    p!("mailMode", List, "", "When this factory's builds are mailed, instead of the master's mailMode: all, failing, passing, warnings, exception, problem (a builder that was not failing fails), change (the result differs from the previous build)."),
    p!("warningPattern", Str, "", "A regular expression: the lines of a compile step it matches are its warnings, instead of the compiler and tool formats (`file:line[:col]: warning:`, `ld: warning:`, Python's `file:line: …Warning:`, Perl's `… at FILE line N.`); the counted lines go to the step's `warnings` log."),
    p!("statusPush", Choice(&["github", "gitea", "gitlab"]), "", "Set a commit status on this forge for each build's revision: pending at the start, success/failure/error at the end, context autobot/BUILDER."),
    p!("statusPushURL", Str, "", "The forge's API base (default https://api.github.com for github, https://gitlab.com/api/v4 for gitlab; required for gitea, e.g. https://gitea.example.org/api/v1)."),
    p!("artifacts", List, "", "GLOB ... relative to the builder's `build` directory on the slave (`*`, `?`, `[…]`, `**`): the files they match are uploaded as the build's artifacts by a last step named `artifacts`, which runs even when an earlier step failed or halted the build. A glob that matches nothing is a warning in that step, not a failure. Kept under MASTERDIR/artifacts/BUILDER/N/, listed on the build page and by the API."),
    p!("maxArtifactSize", Size, "", "The largest artifact a build of this factory may upload, in bytes with an optional K, M or G suffix (e.g. 500M); a larger one fails its step and leaves nothing behind. Default: [:master:]'s maxArtifactSize (1G)."),
    p!("statusPushToken", Str, "", "A file beside master.ini holding the forge's access token (never the token itself)."),
];

static VIRTUALENV_PARAMS: &[ParamSpec] = &[
    p!("name", DirName, "env", "Directory of the virtualenv inside the build directory; removed and created afresh by every build."),
    p!("virtualenv", Bool, "false", "Create it with the `virtualenv` command instead of `python3 -m venv`."),
    p!("checkout", Bool, "true", "Check the sources out into %(virtualenv)s/src/DIR."),
    p!("packages", OptArgv, "", "PACKAGE ... installed before the tests with `%(python)s -m pip install` into the virtualenv, in the first source's checkout: pip's own words (`pytest`, `mock>=4`, or a wheel's path relative to that checkout)."),
    p!("requirements", Str, "", "A pip requirements file, relative to the first source's checkout, installed with `pip install -r FILE` where `packages` go (it may hold pip options, e.g. `--no-index` and `--find-links DIR` for a slave without network)."),
    p!("test", Command, "", "Test command run through `/bin/sh -c` in the first source's checkout (or %(virtualenv)s when nothing is checked out), e.g. `%(python)s -m pytest`; empty: no test step."),
    p!("testArgv", Bool, "false", "Run `test` as an argv (split into words, quotes respected; no pipes, redirections or variables) instead of through `/bin/sh -c`."),
];

static PYTHON_SOURCE_PARAMS: &[ParamSpec] = &[
    p!("name", DirName, "env", "Directory of the virtualenv inside the build directory; removed and created afresh by every build."),
    p!("virtualenv", Bool, "false", "Create it with the `virtualenv` command instead of `python3 -m venv`."),
    p!("install", Choice(&["setup.py", "pip"]), "setup.py", "How each source is installed: `%(python)s setup.py install` (autobot's way; needs no network with a venv that has setuptools) or `%(python)s -m pip install --no-deps .` (pip fetches build tools from its index)."),
    p!("packages", OptArgv, "", "PACKAGE ... installed with `%(python)s -m pip install` into the virtualenv before the sources (and so before the tests), in the first source's checkout: pip's own words (`pytest`, `mock>=4`, or a wheel's path relative to that checkout)."),
    p!("requirements", Str, "", "A pip requirements file, relative to the first source's checkout, installed with `pip install -r FILE` where `packages` go (it may hold pip options, e.g. `--no-index` and `--find-links DIR` for a slave without network)."),
    p!("test", Command, "", "Test command run through `/bin/sh -c` in the first source's checkout, e.g. `%(python)s -m unittest discover -v`; empty: no test step."),
    p!("testArgv", Bool, "false", "Run `test` as an argv (split into words, quotes respected; no pipes, redirections or variables) instead of through `/bin/sh -c`."),
];

static AUTOTOOLS_PARAMS: &[ParamSpec] = &[
    p!(
        "bootstrap",
        Command,
        "",
        "A command run through `/bin/sh -c` before configure, e.g. `autoreconf -fi`; empty: no bootstrap step. A git checkout gives every file the time of the checkout, so in a tree whose generated files (aclocal.m4, configure, Makefile.in) are committed, make may find them older than their sources and try to regenerate them with autotools the slave lacks or has in another version; regenerating them first makes the tree consistent."
    ),
    p!("bootstrapArgv", Bool, "false", "Run `bootstrap` as an argv (split into words, quotes respected; no pipes, redirections or variables) instead of through `/bin/sh -c`."),
    p!(
        "configure",
        Command,
        "./configure",
        "The configure command, run through `/bin/sh -c` with configureFlags after it; empty leaves the step out."
    ),
    p!("configureArgv", Bool, "false", "Run `configure` (and configureFlags after it) as an argv instead of through `/bin/sh -c`."),
    p!(
        "configureEnv",
        EnvList,
        "",
        "VAR=VALUE ... added to the environment of the configure step (e.g. CFLAGS=\"-O2 -g\")."
    ),
    p!(
        "configureFlags",
        OptArgv,
        "",
        "Arguments appended to the configure command (e.g. --disable-nls): values, not shell code — split into words (quotes respected) and each passed to configure as one argument, quoted for the shell when configure runs through it."
    ),
    p!(
        "compile",
        Command,
        "make all",
        "The compile command, run through `/bin/sh -c`; empty leaves the step out."
    ),
    p!("compileArgv", Bool, "false", "Run `compile` as an argv instead of through `/bin/sh -c`."),
    p!(
        "test",
        Command,
        "make check",
        "The test command, run through `/bin/sh -c` (e.g. `make check | tee check.log`); empty leaves the step out."
    ),
    p!("testArgv", Bool, "false", "Run `test` as an argv instead of through `/bin/sh -c`."),
];

static CPAN_PARAMS: &[ParamSpec] = &[p!(
    "perl",
    Argv,
    "perl",
    "The perl executable: runs `perl Makefile.PL`, then `make` and `make test`."
)];

static DISTUTILS_PARAMS: &[ParamSpec] = &[
    p!("python", Argv, "python3", "The python executable for `python ./setup.py build` (the manual's default is `python`; python3 because current systems have no `python`)."),
    p!("test", Command, "", "Test command, run through `/bin/sh -c`; empty (the default, as distutils has no standard one): no test step."),
    p!("testArgv", Bool, "false", "Run `test` as an argv (split into words, quotes respected; no pipes, redirections or variables) instead of through `/bin/sh -c`."),
    p!("packages", OptArgv, "", "PACKAGE ... installed before the build with `python -m pip install --target` into `pydeps` (beside the build directory, emptied each build; nothing goes into the slave's own Python), which the test step finds on PYTHONPATH: pip's own words (`pytest`, `mock>=4`, or a wheel's path relative to the first source's checkout)."),
    p!("requirements", Str, "", "A pip requirements file, relative to the first source's checkout, installed with `pip install -r FILE` where `packages` go (it may hold pip options, e.g. `--no-index` and `--find-links DIR` for a slave without network)."),
];

static TRIAL_PARAMS: &[ParamSpec] = &[
    p!(
        "buildpython",
        Argv,
        "python3",
        "Command that runs `./setup.py build` (the manual's default is `python`)."
    ),
    p!(
        "testpath",
        Str,
        ".",
        "Directory put in PYTHONPATH for the tests (e.g. build/lib for pure-python modules)."
    ),
    p!(
        "trialpython",
        OptArgv,
        "",
        "Python command prepended to trial (e.g. `python3 -W error`, with `trial = -m twisted.trial` or the path of a trial script); empty runs trial directly."
    ),
    p!("trial", Argv, "trial", "The trial command (after trialpython: its arguments, e.g. `-m twisted.trial`)."),
    p!(
        "trialMode",
        OptArgv,
        "--reporter=bwverbose",
        "Reporter options given to trial before the tests (Buildbot's later default; the 0.7 manual's `-to` is rejected by current trial)."
    ),
    p!(
        "tests",
        List,
        "",
        "Test modules, e.g. `myproject.test`; empty: no test step (nothing to run)."
    ),
    p!(
        "recurse",
        Bool,
        "true",
        "Look for tests in every subpackage of the named packages (what current trial does by itself); false passes --no-recurse."
    ),
    p!(
        "randomly",
        Bool,
        "false",
        "Pass --random=0 to trial (run the tests in random order)."
    ),
    p!("packages", OptArgv, "", "PACKAGE ... installed before the build with `buildpython -m pip install --target` into `pydeps` (beside the build directory, emptied each build; nothing goes into the slave's own Python), which the test step finds on PYTHONPATH: pip's own words (`pytest`, `mock>=4`, or a wheel's path relative to the first source's checkout)."),
    p!("requirements", Str, "", "A pip requirements file, relative to the first source's checkout, installed with `pip install -r FILE` where `packages` go (it may hold pip options, e.g. `--no-index` and `--find-links DIR` for a slave without network)."),
];

/// Options of one step of one's own, written `step.NAME.OPTION = VALUE`.
pub static STEP_OPTIONS: &[ParamSpec] = &[
    p!("haltOnFailure", Bool, "false", "A failure of this step ends the build as FAILURE."),
    p!("flunkOnFailure", Bool, "true", "A failure of this step makes the build FAILURE; later steps still run."),
    p!("warnOnFailure", Bool, "false", "A failure of this step makes the build WARNINGS."),
    p!("flunkOnWarnings", Bool, "false", "Warnings or failure of this step make the build FAILURE."),
    p!("warnOnWarnings", Bool, "false", "Warnings or failure of this step make the build WARNINGS."),
    p!("timeout", Int, "1200", "Kill the command after this many seconds without output; 0: never."),
    p!("maxTime", PosInt, "", "Kill the command after this many seconds in all."),
    p!("after", Str, "", "Run this step right after the step named here (one of the type's steps, e.g. `configure`, or another step of one's own); default: after the type's steps, in file order."),
    p!("before", Str, "", "Run this step right before the step named here (one of the type's steps, or another step of one's own)."),
    p!("workdir", Str, "", "Directory the command runs in, relative to the builder's directory; may use %(property)s. Default: where the type's own commands run (`build`, or `build/DIR` with several sources; the first source's checkout %(virtualenv)s/src/DIR for the virtualenv types)."),
    p!("description", Str, "", "Words shown while the step runs (e.g. `testing`)."),
    p!("descriptionDone", Str, "", "Words shown when the step is done (e.g. `test`)."),
    p!("locks", LockRefs, "", "[lock:NAME] sections held while the step runs."),
    p!("argv", Bool, "false", "Run the command as an argv — split into words like a shell splits them (quotes respected), with no pipes, redirections, variables or globs, so `|` is an argument — instead of through `/bin/sh -c` (Buildbot's command given as a list rather than a string)."),
    p!("shell", Bool, "true", "The other way to say `argv`: true (the default) runs the command through `/bin/sh -c`, false runs it as an argv. Kept for configs written when argv was the default."),
    p!("logParser", Choice(&["none", "compile", "test"]), "none", "Count warnings in the output like a compile step (compiler and tool warning formats) or tests like a test step (passed, failed, skipped, xfailed, xpassed)."),
    p!("warningPattern", Str, "", "Count the lines this regular expression matches as the step's warnings (with or without `logParser = compile`); a step with warnings is WARNINGS, and warnOnWarnings/flunkOnWarnings decide what that does to the build."),
    p!("env.VAR", Str, "", "Set environment variable VAR for the step (the case of VAR is kept); may use %(property)s and %(secret:NAME)s."),
    p!("type", Choice(&["shell", "upload", "upload-dir", "download"]), "shell", "What the step does. shell: step.NAME is a command. upload: step.NAME = SLAVEPATH [ARTIFACTPATH] copies a file of the slave (relative to the step's workdir) into the build's artifacts (MASTERDIR/artifacts/BUILDER/N/ARTIFACTPATH, default its file name), as Buildbot's FileUpload. upload-dir: step.NAME = SLAVEDIR [ARTIFACTDIR], every file below the directory (DirectoryUpload). download: step.NAME = ARTIFACTPATH SLAVEPATH writes a file of MASTERDIR/artifacts (e.g. `other-builder/12/tool.tar.gz`) to the slave (FileDownload). Paths are relative, without `..`, and may use %(property)s; a slave path stays in its builder's directory, a master path in the artifacts directory."),
    p!("mode", Str, "", "For `type = download`: the permission bits of the file written on the slave, in octal (e.g. 0755)."),
];

static TYPES: &[FactoryType] = &[
    FactoryType {
        name: "autotools",
        description: "GNU autoconf-style build (Buildbot's GNUAutoconf): checkout, optional bootstrap (e.g. autoreconf -fi), ./configure, make all, make check.",
        params: AUTOTOOLS_PARAMS,
        steps: "checkout (checkout-DIR with several sources), bootstrap, configure, compile, test",
    },
    FactoryType {
        name: "cpan",
        description: "Perl MakeMaker module (Buildbot's CPAN): checkout, perl Makefile.PL, make, make test.",
        params: CPAN_PARAMS,
        steps: "checkout, configure, compile, test",
    },
    FactoryType {
        name: "distutils",
        description: "Python distutils package (Buildbot's Distutils): checkout, python ./setup.py build, optional test.",
        params: DISTUTILS_PARAMS,
        steps: "checkout, remove-pydeps, install-requirements, compile, test",
    },
    FactoryType {
        name: "python-source",
        description: "virtualenv, then install every source into it (autobot's PythonSourceFactory), then an optional test.",
        params: PYTHON_SOURCE_PARAMS,
        steps: "remove-virtualenv, create-virtualenv, property-virtualenv, property-scripts, property-python, mkdir-src, checkout, install-requirements, install-DIR (each source), test",
    },
    FactoryType {
        name: "shell",
        description: "Any list of steps: step.NAME = COMMAND in file order, with step.NAME.OPTION = VALUE options; sources are checked out first, and the steps run in `build`.",
        params: &[],
        steps: "checkout, then the steps of one's own",
    },
    FactoryType {
        name: "source",
        description: "Check out the sources and nothing else (autobot's SourceFactory).",
        params: &[],
        steps: "checkout",
    },
    FactoryType {
        name: "trial",
        description: "Python/Twisted project tested with trial (Buildbot's Trial): checkout, ./setup.py build, PYTHONPATH=testpath trial --reporter=bwverbose TESTS.",
        params: TRIAL_PARAMS,
        steps: "checkout, remove-pydeps, install-requirements, compile, trial",
    },
    FactoryType {
        name: "virtualenv",
        description: "A fresh virtualenv with properties virtualenv, scripts and python, sources checked out into %(virtualenv)s/src (autobot's VirtualenvFactory), packages and requirements installed into it, then an optional test.",
        params: VIRTUALENV_PARAMS,
        steps: "remove-virtualenv, create-virtualenv, property-virtualenv, property-scripts, property-python, mkdir-src, checkout, install-requirements, test",
    },
];

/// The candidate closest to `word` (case-insensitive edit distance of at most 2,
/// or 1 for short words), for "did you mean" hints.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = if word.len() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Every built-in factory type, sorted by name.
pub fn types() -> &'static [FactoryType] {
    TYPES
}

/// The built-in type called `name` (exact, lower-case).
pub fn find_type(name: &str) -> Option<&'static FactoryType> {
    TYPES.iter().find(|t| t.name == name)
}

/// Names of every type, for error messages.
pub fn type_names() -> String {
    TYPES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

/// The common key named `key` (any case).
pub fn common_param(key: &str) -> Option<&'static ParamSpec> {
    COMMON.iter().find(|p| p.name.eq_ignore_ascii_case(key))
}

/// The shell step option named `opt` (any case; `env.VAR` matches `env.VAR`).
pub fn step_option(opt: &str) -> Option<&'static ParamSpec> {
    // `get`: the fifth byte may be inside a character (`step.x.aéé`).
    if opt.len() > 4 && opt.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("env.")) {
        return STEP_OPTIONS.iter().find(|p| p.name == "env.VAR");
    }
    STEP_OPTIONS
        .iter()
        .find(|p| p.name != "env.VAR" && p.name.eq_ignore_ascii_case(opt))
}

/// Names of the step options, for error messages.
pub fn step_option_names() -> String {
    STEP_OPTIONS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The largest number a key takes (ten years in seconds): seconds are added to
/// clocks (timers, deadlines), which a number near 2^63 would overflow.
pub const MAX_NUMBER: u64 = 315_360_000;

/// A size in bytes: digits with an optional `K`, `M` or `G` suffix (powers of
/// 1024, a trailing `B` or `iB` allowed: `500M`, `2GiB`, `1048576`).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let upper = v.to_ascii_uppercase();
    let t = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper)
        .trim_end();
    let (digits, mult) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let digits = digits.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "expected a size in bytes with an optional K, M or G suffix (e.g. 500M), got {v:?}"
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("expected a size greater than 0 and below 16 EiB, got {v:?}"))
}

/// `true`/`false` and the usual synonyms.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Whether `name` can name a directory, a factory, a slave or a lock: letters,
/// digits, `.`, `_` and `-`, not starting with `.` or `-`.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `VAR=VALUE ...` into pairs.
pub fn parse_env_list(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for word in argv::split(value)? {
        match word.split_once('=') {
            Some((var, val)) if is_env_name(var) => out.push((var.to_string(), val.to_string())),
            _ => {
                return Err(format!(
                    "expected VAR=VALUE words, got {word:?} (quote values with spaces: CFLAGS=\"-O2 -g\")"
                ))
            }
        }
    }
    Ok(out)
}

/// Whether `var` is a usable environment variable name.
pub fn is_env_name(var: &str) -> bool {
    !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A whole number written as decimal digits only: no sign, no blanks inside, no
/// `_`, not empty (Rust's own parser would take `+9010`). `None` for anything
/// else, including a value too large for `u64`.
pub fn parse_digits(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// [`parse_digits`], the one reading of a number in a config file.
fn digits(s: &str) -> Option<u64> {
    parse_digits(s)
}

/// `DELAY REPEATS`.
pub fn parse_retry(value: &str) -> Result<(u64, u32), String> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let err =
        || format!("expected `DELAY REPEATS`, two whole numbers (e.g. `60 3`), got {value:?}");
    match words.as_slice() {
        [d, r] => Ok((
            digits(d).ok_or_else(err)?,
            digits(r)
                .and_then(|r| u32::try_from(r).ok())
                .ok_or_else(err)?,
        )),
        _ => Err(err()),
    }
}

/// Check five cron fields (numbers only; `*`, `*/N`, `A`, `A-B`, `A-B/N`, lists with `,`).
pub fn check_cron(value: &str) -> Result<(), String> {
    const FIELDS: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("day of week", 0, 7),
    ];
    let words: Vec<&str> = value.split_whitespace().collect();
    if words.len() != 5 {
        return Err(format!(
            "expected five cron fields (minute hour day-of-month month day-of-week, e.g. `0 3 * * *`), got {} in {value:?}",
            words.len()
        ));
    }
    for (word, (what, lo, hi)) in words.iter().zip(FIELDS) {
        for item in word.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            let bad = || {
                format!("cron {what} field {word:?} is not valid: use *, */N, A, A-B or A-B/N with numbers {lo}-{hi}")
            };
            if let Some(s) = step {
                match digits(s) {
                    Some(n) if n >= 1 => {}
                    _ => return Err(bad()),
                }
            }
            if range == "*" {
                continue;
            }
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (a, b),
                None => (range, range),
            };
            let a = digits(a).ok_or_else(bad)?;
            let b = digits(b).ok_or_else(bad)?;
            if a < u64::from(lo) || b > u64::from(hi) || a > b {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// Check that `value` is well-formed for `kind`; the error says what was expected.
/// References (`FactoryRef`, `LockRefs`) are only checked for form here: whether they
/// name something is the config loader's business.
pub fn check_value(kind: ParamKind, value: &str) -> Result<(), String> {
    let v = value.trim();
    match kind {
        Str | Sources => Ok(()),
        DirName => {
            if is_plain_name(v) {
                Ok(())
            } else {
                Err(format!(
                    "expected a plain directory name (letters, digits, `.`, `_`, `-`), got {v:?}"
                ))
            }
        }
        Int | PosInt => {
            let min = u64::from(kind == PosInt);
            match digits(v) {
                Some(n) if n > MAX_NUMBER => Err(format!(
                    "expected a whole number from {min} to {MAX_NUMBER} (ten years in seconds), got {v:?}"
                )),
                Some(n) if n >= min => Ok(()),
                _ => Err(format!(
                    "expected a whole number >= {min} (digits only, no sign), got {v:?}"
                )),
            }
        }
        Bool => parse_bool(v)
            .map(|_| ())
            .ok_or_else(|| format!("expected true or false, got {v:?}")),
        List => Ok(()),
        Argv => match argv::split(v)? {
            w if w.is_empty() => Err("expected a command, got nothing".to_string()),
            _ => Ok(()),
        },
        OptArgv => argv::split(v).map(|_| ()),
        Command => Ok(()),
        EnvList => parse_env_list(v).map(|_| ()),
        Choice(words) => {
            if words.contains(&v.to_ascii_lowercase().as_str()) {
                Ok(())
            } else {
                Err(format!("expected one of {}, got {v:?}", words.join(", ")))
            }
        }
        Regexes => {
            for r in v.split_whitespace() {
                regex::Regex::new(r)
                    .map_err(|e| format!("{r:?} is not a valid regular expression: {e}"))?;
            }
            Ok(())
        }
        Cron => check_cron(v),
        Retry => parse_retry(v).map(|_| ()),
        FactoryRef => {
            if is_plain_name(v) {
                Ok(())
            } else {
                Err(format!("expected the name of a factory section, got {v:?}"))
            }
        }
        Size => parse_size(v).map(|_| ()),
        LockRefs => {
            for name in v.split_whitespace() {
                if !is_plain_name(name) {
                    return Err(format!(
                        "expected names of [lock:NAME] sections, got {name:?}"
                    ));
                }
            }
            Ok(())
        }
    }
}

fn push_param(out: &mut String, p: &ParamSpec) {
    if p.default.is_empty() {
        out.push_str(&format!("    {} =\n", p.name));
    } else {
        out.push_str(&format!("    {} = {}\n", p.name, p.default));
    }
    if let Choice(words) = p.kind {
        out.push_str(&format!("        One of: {}\n", words.join(" | ")));
    }
    out.push_str(&format!("        {}\n", p.help));
}

/// The reference printed by `autobot list-factories --types`: every type with its
/// description and parameters (`key = default`), then the keys every factory
/// accepts and the options of shell steps.
pub fn types_text() -> String {
    let mut out = String::from("Factory types (set with `type = NAME` in a factory section):\n\n");
    out.push_str("A key that holds a command (`test`, `compile`, `configure`, `bootstrap`, step.NAME) runs it through `/bin/sh -c`, as Buildbot runs a command given as a string; its `…Argv = true` companion (step.NAME.argv = true) runs it as an argv instead. Keys that name a program autobot adds arguments to (`perl`, `python`, `buildpython`, `trialpython`, `trial`) and keys that hold arguments (`configureFlags`, `trialMode`, `packages`) are words, split like a shell splits them and passed as arguments.\n\n");
    for t in TYPES {
        out.push_str(&format!(
            "{}:\n    {}\n    Steps: {}\n",
            t.name, t.description, t.steps
        ));
        if t.params.is_empty() {
            out.push_str("    (no parameters of its own)\n");
        }
        for p in t.params {
            push_param(&mut out, p);
        }
        out.push('\n');
    }
    out.push_str("Keys every factory accepts:\n");
    for p in COMMON {
        push_param(&mut out, p);
    }
    out.push_str(
        "    step.NAME = COMMAND\n        A step of one's own, on any type: after the type's steps in file order, or placed with step.NAME.after / step.NAME.before; options below. COMMAND runs through `/bin/sh -c` (pipes, redirections, `&&`), as Buildbot runs a command given as a string; step.NAME.argv = true runs it as an argv. %(property)s references are safe in both: in a shell command each becomes a quoted expansion of an environment variable holding the value, never shell code. %(secret:NAME)s is the secret NAME of the master's secretsDir (README \"Secrets\"), put in the same way, in a command, an env.VAR value or a workdir; every form of it is shown as <secret:NAME> in the logs, and an untrusted build (pr_from_fork = true) fails the step instead. With step.NAME.type = upload, upload-dir or download the value is paths instead of a command (see `type` below).\n",
    );
    out.push_str("\nOptions of steps of one's own (step.NAME.OPTION = VALUE):\n");
    for p in STEP_OPTIONS {
        push_param(&mut out, p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_only() {
        assert_eq!(parse_digits(" 9010 "), Some(9010));
        assert_eq!(parse_digits("0"), Some(0));
        for bad in [
            "",
            " ",
            "+9010",
            "-1",
            "9 010",
            "9_010",
            "0x10",
            "1e3",
            "99999999999999999999",
        ] {
            assert_eq!(parse_digits(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn types_are_sorted_and_findable() {
        let names: Vec<&str> = types().iter().map(|t| t.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(find_type("autotools").is_some());
        assert!(find_type("nosuch").is_none());
        let t = find_type("autotools").unwrap();
        assert!(t.accepts("CONFIGUREFLAGS") && t.accepts("dependson") && t.accepts("step.x"));
        assert!(!t.accepts("packages"));
        assert!(find_type("shell").unwrap().accepts("step.x.timeout"));
    }

    #[test]
    fn values_are_checked() {
        assert!(check_value(ParamKind::Int, "12").is_ok());
        assert!(check_value(ParamKind::Int, "-1").is_err());
        assert!(check_value(ParamKind::PosInt, "0").is_err());
        assert!(check_value(ParamKind::Bool, "Yes").is_ok());
        assert!(check_value(ParamKind::Bool, "maybe").is_err());
        assert!(check_value(ParamKind::DirName, "..").is_err());
        assert!(check_value(ParamKind::DirName, "a/b").is_err());
        assert!(check_value(ParamKind::Argv, "").is_err());
        assert!(check_value(ParamKind::OptArgv, "").is_ok());
        assert!(check_value(ParamKind::OptArgv, "'x").is_err());
        assert!(check_value(ParamKind::EnvList, "CFLAGS=\"-O2 -g\" X=").is_ok());
        assert!(check_value(ParamKind::EnvList, "CFLAGS").is_err());
        assert!(check_value(ParamKind::Regexes, "^src/ \\.c$").is_ok());
        assert!(check_value(ParamKind::Regexes, "(").is_err());
        assert!(check_value(ParamKind::Retry, "60 3").is_ok());
        assert!(check_value(ParamKind::Retry, "60").is_err());
        assert!(check_value(ParamKind::Choice(&["a", "b"]), "B").is_ok());
    }

    #[test]
    fn misspelt_keys_get_a_suggestion() {
        let t = find_type("autotools").unwrap();
        assert_eq!(t.suggest("configureFlag"), Some("configureFlags"));
        assert_eq!(t.suggest("dependson"), Some("dependsOn"));
        assert_eq!(t.suggest("zzzzzz"), None);
        assert_eq!(closest("tst", ["test", "git"]), Some("test"));
    }

    #[test]
    fn cron_fields_are_checked() {
        assert!(check_cron("0 3 * * *").is_ok());
        assert!(check_cron("*/15 0-6,22 1 1-12/2 7").is_ok());
        assert!(check_cron("0 3 * *").is_err());
        assert!(check_cron("60 3 * * *").is_err());
        assert!(check_cron("0 24 * * *").is_err());
        assert!(check_cron("0 3 0 * *").is_err());
        assert!(check_cron("0 3 * 13 *").is_err());
        assert!(check_cron("*/0 3 * * *").is_err());
        assert!(check_cron("5-1 3 * * *").is_err());
    }

    #[test]
    fn types_text_lists_every_parameter_with_its_default() {
        let text = types_text();
        for t in types() {
            assert!(text.contains(&format!("{}:\n", t.name)));
            for p in t.params {
                assert!(text.contains(&format!("    {} =", p.name)));
            }
        }
        assert!(text.contains("    configure = ./configure\n"));
        assert!(text.contains("    compile = make all\n"));
        assert!(text.contains("    install = setup.py\n        One of: setup.py | pip\n"));
        assert!(
            text.contains("    mode = update\n        One of: update | copy | clobber | export\n")
        );
    }
}
