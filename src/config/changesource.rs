//! `[changesource:NAME]` sections of `master.ini`: change sources that are not
//! pollers of a factory's repository. Today one type, the manual's mail-parsing
//! change sources: a maildir the repository's commit mails are delivered to.
//!
//! ```ini
//! [changesource:svn-mail]
//! type = maildir
//! maildir = mail/svn        ; relative to the master directory
//! format = svn              ; svn (commit-email.pl), cvs (syncmail), bzr (Launchpad / bzr-email)
//! prefix = trunk/           ; optional: only files under it, with it stripped
//! project = hello           ; optional: the factory the Changes are for
//! repository = file:///srv/svn/hello   ; optional: the Changes' repository
//! branch = trunk            ; optional: the Changes' branch (syncmail's Tag: wins)
//! pollInterval = 2          ; optional: seconds between looks at DIR/new
//! ```

use std::path::{Path, PathBuf};

use super::ini::IniSection;
use super::read::{parse_int, section_err, Val};
use super::ConfigError;

/// The commit-mail formats a maildir change source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailFormat {
    /// Subversion's `commit-email.pl` (Buildbot's `SVNCommitEmailMaildirSource`).
    Svn,
    /// CVSToys/syncmail (Buildbot's `SyncmailMaildirSource`).
    Cvs,
    /// Bazaar's email plugin and Launchpad's branch mails
    /// (Buildbot's `BzrLaunchpadEmailMaildirSource`).
    Bzr,
}

impl MailFormat {
    /// The word written in `format = `.
    pub fn as_str(self) -> &'static str {
        match self {
            MailFormat::Svn => "svn",
            MailFormat::Cvs => "cvs",
            MailFormat::Bzr => "bzr",
        }
    }
}

/// The default seconds between two looks at a maildir's `new/`.
pub const DEFAULT_MAILDIR_INTERVAL: u64 = 2;

/// One `[changesource:NAME]` with `type = maildir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaildirSourceConfig {
    /// NAME of the section (logs, and the key that remembers processed mails).
    pub name: String,
    /// The maildir (absolute: a relative one is resolved against the master
    /// directory).
    pub maildir: PathBuf,
    pub format: MailFormat,
    /// Only files whose path starts with it count, with it stripped.
    pub prefix: Option<String>,
    /// The Changes' project (a factory name), repository and branch.
    pub project: String,
    pub repository: String,
    pub branch: Option<String>,
    /// Seconds between looks at `new/`.
    pub interval: u64,
    /// Where the section and its `maildir` key were written (checkconfig's errors).
    pub path: PathBuf,
    pub line: usize,
    pub maildir_line: usize,
}

/// Whether `name` is a `[changesource:NAME]` section.
pub(super) fn is_change_source(name: &str) -> bool {
    name.starts_with("changesource:")
}

/// Read one `[changesource:NAME]`; `factories` are the names of the factories, which
/// `project` must be one of.
pub(super) fn read_change_source(
    file: &Path,
    basedir: &Path,
    sec: &IniSection,
    factories: &[String],
) -> Result<MaildirSourceConfig, ConfigError> {
    let name = sec.name["changesource:".len()..].trim().to_string();
    if name.is_empty() {
        return Err(section_err(
            file,
            sec.line,
            &sec.name,
            "the section needs a name: write `[changesource:NAME]`",
        ));
    }
    let mut kind: Option<Val> = None;
    let mut maildir: Option<Val> = None;
    let mut format: Option<MailFormat> = None;
    let mut out = MaildirSourceConfig {
        name,
        maildir: PathBuf::new(),
        format: MailFormat::Svn,
        prefix: None,
        project: String::new(),
        repository: String::new(),
        branch: None,
        interval: DEFAULT_MAILDIR_INTERVAL,
        path: file.to_path_buf(),
        line: sec.line,
        maildir_line: sec.line,
    };
    for v in super::read::vals(file, sec) {
        let value = v.value.trim().to_string();
        match v.key.as_str() {
            "type" => {
                if value != "maildir" {
                    return Err(v.err(format!(
                        "unknown change source type {value:?}; the one type is `maildir` (a maildir of commit mails); repositories are polled through a factory's `git =`, `svn =`, ... keys"
                    )));
                }
                kind = Some(v);
            }
            "maildir" => {
                if value.is_empty() {
                    return Err(v.empty_err("the maildir's directory", "mail/commits"));
                }
                out.maildir = basedir.join(&value);
                out.maildir_line = v.line;
                maildir = Some(v);
            }
            "format" => {
                format = Some(match value.to_ascii_lowercase().as_str() {
                    "svn" => MailFormat::Svn,
                    "cvs" => MailFormat::Cvs,
                    "bzr" => MailFormat::Bzr,
                    _ => {
                        return Err(v.err(format!(
                            "unknown mail format {value:?}; write svn (commit-email.pl), cvs (syncmail) or bzr (Launchpad / bzr-email)"
                        )))
                    }
                });
            }
            "prefix" => out.prefix = Some(value).filter(|p| !p.is_empty()),
            "project" => {
                if !value.is_empty() && !factories.contains(&value) {
                    return Err(v.err(format!(
                        "no factory is named {value:?}; the factories are: {}",
                        factories.join(", ")
                    )));
                }
                out.project = value;
            }
            "repository" => out.repository = value,
            "branch" => {
                if value.starts_with('-') || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(v.err(format!(
                        "{value:?} is not a branch name (no spaces, no leading `-`); e.g. `branch = trunk`"
                    )));
                }
                out.branch = Some(value).filter(|b| !b.is_empty());
            }
            "pollinterval" => out.interval = parse_int(&v, 1)?,
            _ => {
                return Err(v.err(format!(
                    "unknown key in [{}]; accepted keys: type, maildir, format, prefix, project, repository, branch, pollInterval",
                    sec.name
                )))
            }
        }
    }
    if kind.is_none() {
        return Err(section_err(
            file,
            sec.line,
            &sec.name,
            "no `type`; write `type = maildir`",
        ));
    }
    if maildir.is_none() {
        return Err(section_err(
            file,
            sec.line,
            &sec.name,
            "no `maildir`; write `maildir = DIR` (the maildir the commit mails are delivered to, relative to the master directory)",
        ));
    }
    out.format = format.ok_or_else(|| {
        section_err(
            file,
            sec.line,
            &sec.name,
            "no `format`; write `format = svn`, `cvs` or `bzr`",
        )
    })?;
    Ok(out)
}

/// `checkconfig`'s look on disk: every maildir must exist as a directory (the
/// master makes its `new/`, `cur/`, `tmp/` and `bad/` when they are missing).
pub fn check_maildirs(sources: &[MaildirSourceConfig]) -> Result<(), ConfigError> {
    for s in sources {
        if !s.maildir.is_dir() {
            return Err(ConfigError::At {
                path: s.path.clone(),
                line: s.maildir_line,
                context: format!("[changesource:{}] maildir: ", s.name),
                message: format!(
                    "{} is not a directory; make it (`mkdir -p {}`) or fix the path (relative paths start at the master directory)",
                    s.maildir.display(),
                    s.maildir.display()
                ),
            });
        }
    }
    Ok(())
}
