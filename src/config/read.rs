//! Reading `master.ini`: the layering of `[DEFAULT]` and `[:master:]` under each
//! section, the value parsers (numbers, booleans, lists, sources, ports), one
//! reader per kind of section, the cross-checks between sections (factories of
//! slaves, locks, `dependsOn`, every factory turned into its steps once) and the
//! warnings about what loads but lets strangers in. Every error names the file,
//! line, section and key.

use super::*;

/// Keys of `[:master:]` itself (lower-case).
const MASTER_KEYS: &[&str] = &[
    "slaveport",
    "htmlport",
    "publichtmlport",
    "pollinterval",
    "treestable",
    "allowforce",
    "projectname",
    "projecturl",
    "buildboturl",
    "botname",
    "irchost",
    "ircchannels",
    "irctls",
    "ircpassword",
    "ircnotify",
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
    "keepaliveinterval",
    "mastertimeout",
    "logsize",
    "logcount",
    "loghorizon",
    "buildhorizon",
    "changehorizon",
    "logcompression",
    "secretsdir",
    "db",
    "dbpasswordfile",
    "mastername",
    "shareddir",
    "maxartifactsize",
    "artifacthorizon",
];

/// [`MASTER_KEYS`] as the documentation spells them, for messages and "did you
/// mean" hints (`treeStable`, not `treestable`).
const MASTER_KEYS_DOCUMENTED: &[&str] = &[
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
    "masterTimeout",
    "logSize",
    "logCount",
    "logHorizon",
    "buildHorizon",
    "changeHorizon",
    "logCompression",
    "secretsDir",
    "db",
    "dbPasswordFile",
    "masterName",
    "sharedDir",
    "maxArtifactSize",
    "artifactHorizon",
];

/// The notifiers' keys of `[:master:]` ([`mail`]'s, and its slave defaults) as
/// the documentation spells them.
const MAIL_KEYS_DOCUMENTED: &[&str] = &[
    "mailMode",
    "sendToInterestedUsers",
    "mailLookup",
    "mailFrom",
    "smtpHost",
    "smtpPort",
    "smtpUser",
    "smtpPassword",
    "smtpTls",
    "smtpCA",
    "notifyOnMissing",
    "missingTimeout",
];

/// Whether `[:master:]` accepts `key` (lower-case): its own, the notifiers', or
/// a slave default.
fn is_master_key(key: &str) -> bool {
    [
        MASTER_KEYS,
        SLAVE_KEYS,
        mail::MASTER_MAIL_KEYS,
        mail::SLAVE_MAIL_KEYS,
    ]
    .iter()
    .any(|keys| keys.contains(&key))
}

/// Keys of `[slave:NAME]`, which `[:master:]` may set for every slave.
const SLAVE_KEYS: &[&str] = &["password", "factories", "os", "max_builds"];

/// Keys of `[lock:NAME]`.
const LOCK_KEYS: &[&str] = &["scope", "maxcount"];

/// A value and where it was written, so that any later check can point at it.
#[derive(Debug, Clone)]
pub(super) struct Val {
    pub(super) key: String,
    pub(super) raw_key: String,
    pub(super) value: String,
    pub(super) path: PathBuf,
    pub(super) line: usize,
    pub(super) section: String,
}

impl Val {
    pub(super) fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::At {
            path: self.path.clone(),
            line: self.line,
            context: format!("[{}] {}: ", self.section, self.raw_key),
            message: message.into(),
        }
    }

    pub(super) fn warning(&self, message: impl Into<String>) -> ConfigWarning {
        ConfigWarning {
            path: self.path.clone(),
            line: self.line,
            context: format!("[{}] {}: ", self.section, self.raw_key),
            message: message.into(),
        }
    }

    /// The error for a key written with no value where one is needed.
    pub(super) fn empty_err(&self, what: &str, example: &str) -> ConfigError {
        self.err(format!(
            "no value; write {what} (e.g. `{} = {example}`), or remove the line to get the default",
            self.raw_key
        ))
    }
}

/// Section-level error (no key).
pub(super) fn section_err(
    path: &Path,
    line: usize,
    section: &str,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError::At {
        path: path.to_path_buf(),
        line,
        context: format!("[{section}]: "),
        message: message.into(),
    }
}

pub(super) fn vals(path: &Path, section: &ini::IniSection) -> Vec<Val> {
    section
        .entries
        .iter()
        .map(|e| Val {
            key: e.key.clone(),
            raw_key: e.raw_key.clone(),
            value: e.value.clone(),
            path: path.to_path_buf(),
            line: e.line,
            section: section.name.clone(),
        })
        .collect()
}

/// Ordered key → value map where later layers override earlier ones in place.
#[derive(Debug, Default, Clone)]
pub(super) struct Layered(pub(super) Vec<Val>);

impl Layered {
    pub(super) fn set(&mut self, v: Val) {
        match self.0.iter_mut().find(|o| o.key == v.key) {
            Some(o) => *o = v,
            None => self.0.push(v),
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&Val> {
        self.0.iter().find(|v| v.key == key)
    }
}

pub(super) fn parse_int(v: &Val, min: u64) -> Result<u64, ConfigError> {
    // A value that reads well in the example of each key's message.
    let example = match v.key.as_str() {
        "pollinterval" | "treestable" => "60",
        "logsize" => "10000000",
        "logcount" => "10",
        "keepaliveinterval" => "600",
        "mastertimeout" => "30",
        _ => "1",
    };
    if v.value.trim().is_empty() {
        return Err(v.empty_err(&format!("a whole number >= {min}"), example));
    }
    let max = schema::MAX_NUMBER;
    match schema::parse_digits(&v.value) {
        Some(n) if n > max => Err(v.err(format!(
            "expected a whole number from {min} to {max} (ten years in seconds), got {:?}",
            v.value
        ))),
        Some(n) if n >= min => Ok(n),
        _ => Err(v.err(format!(
            "expected a whole number >= {min} (digits only, no sign), got {:?}; e.g. `{} = {example}`",
            v.value, v.raw_key
        ))),
    }
}

pub(super) fn parse_bool(v: &Val) -> Result<bool, ConfigError> {
    if v.value.trim().is_empty() {
        return Err(v.empty_err("true or false", "true"));
    }
    schema::parse_bool(&v.value).ok_or_else(|| {
        v.err(format!(
            "expected true or false (or yes/no, on/off, 1/0), got {:?}",
            v.value
        ))
    })
}

/// A whitespace- or comma-separated list; `-` alone means none.
pub(super) fn parse_list(value: &str) -> Vec<String> {
    if value.trim() == "-" {
        return Vec::new();
    }
    value
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `URL[#branch] ...` for one kind; `./` and `../` URLs made absolute.
fn parse_sources(v: &Val, kind: SourceKind, basedir: &Path) -> Result<Vec<Source>, ConfigError> {
    let mut out = Vec::new();
    for word in v.value.split_whitespace() {
        let (url, branch) = match word.rsplit_once('#') {
            Some((url, branch)) => {
                if branch.is_empty() {
                    return Err(v.err(format!(
                        "{word:?} ends with `#` but names no branch; write URL#BRANCH or just URL"
                    )));
                }
                (url, branch.to_string())
            }
            None => (word, kind.default_branch().to_string()),
        };
        if url.is_empty() {
            return Err(v.err(format!("{word:?} has no URL before `#`; write URL#BRANCH")));
        }
        let url = if url.starts_with("./") || url.starts_with("../") {
            normalize_path(&basedir.join(url))
                .to_string_lossy()
                .into_owned()
        } else {
            url.to_string()
        };
        if matches!(kind, SourceKind::Svn | SourceKind::Bzr | SourceKind::Darcs) {
            if let Ok((_, Some(c))) = crate::sources::split_credentials(&url) {
                if !c.password.is_empty() {
                    return Err(v.err(format!(
                        "{} holds a password, which {} can only be given on its command line (where every process list shows it); write the URL without it and store the password on the slaves and the master (svn: its auth cache, `svn info URL` once as their user; brz: ~/.config/breezy/authentication.conf; darcs: ~/.netrc), or use svn+ssh://, bzr+ssh:// or ssh with a key",
                        crate::sources::redact_url(&url),
                        match kind {
                            SourceKind::Svn => "svn",
                            SourceKind::Bzr => "brz",
                            _ => "darcs",
                        }
                    )));
                }
            }
        }
        // svn reaches a local repository only through a file:// URL.
        let url = if kind == SourceKind::Svn && url.starts_with('/') {
            format!("file://{url}")
        } else {
            url
        };
        out.push(Source {
            kind,
            url,
            branch,
            branch_prefix: None,
        });
    }
    Ok(out)
}

/// `CVSROOT MODULE[#BRANCH] ...`: pairs of words, the CVSROOT a local path
/// (`./` and `../` made absolute) or `:METHOD:…`, the module a path in it, the
/// branch a CVS branch tag (the trunk without one).
fn parse_cvs_sources(v: &Val, basedir: &Path) -> Result<Vec<Source>, ConfigError> {
    let words: Vec<&str> = v.value.split_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(2) {
        return Err(v.err(format!(
            "expected CVSROOT MODULE[#BRANCH] (pairs of words), got {:?}; e.g. `cvs = :pserver:anonymous@cvs.example.org:/cvsroot proj` or `cvs = /srv/cvs proj#release-1`",
            crate::sources::redact_url(&v.value)
        )));
    }
    let mut out = Vec::new();
    for pair in words.chunks(2) {
        let (root, module) = (pair[0], pair[1]);
        let root = if root.starts_with("./") || root.starts_with("../") {
            normalize_path(&basedir.join(root))
                .to_string_lossy()
                .into_owned()
        } else {
            root.trim_end_matches('/').to_string()
        };
        if !root.starts_with('/') && !root.starts_with(':') {
            return Err(v.err(format!(
                "{:?} is not a CVSROOT: write a local path (/srv/cvs, ./cvsroot) or :METHOD:[USER@]HOST:/PATH (e.g. :pserver:anonymous@cvs.example.org:/cvsroot)",
                crate::sources::redact_url(&root)
            )));
        }
        let (module, branch) = match module.rsplit_once('#') {
            Some((m, b)) if !b.is_empty() => (m, b.to_string()),
            Some(_) => {
                return Err(v.err(format!(
                "{module:?} ends with `#` but names no branch; write MODULE#BRANCH or just MODULE"
            )))
            }
            None => (module, String::new()),
        };
        let bad = module.is_empty()
            || module.starts_with('/')
            || module.starts_with('-')
            || module.split('/').any(|c| c == "..");
        if bad {
            return Err(v.err(format!(
                "{module:?} is not a CVS module: a path in the repository (no leading `/` or `-`, no `..`)"
            )));
        }
        if branch.starts_with('-') {
            return Err(v.err(format!(
                "{branch:?} is not a CVS branch tag (it starts with `-`)"
            )));
        }
        out.push(Source {
            kind: SourceKind::Cvs,
            url: format!("{root} {module}"),
            branch,
            branch_prefix: None,
        });
    }
    Ok(out)
}

/// `ARCHIVE/VERSION ...` with the factory's `archiveLocation`: one source per
/// version, the location its URL.
fn parse_arch_sources(v: &Val) -> Result<Vec<Source>, ConfigError> {
    let mut out = Vec::new();
    for word in v.value.split_whitespace() {
        let ok = match word.split_once('/') {
            Some((archive, version)) => {
                !archive.is_empty()
                    && !archive.starts_with('-')
                    && version.contains("--")
                    && !version.starts_with('-')
                    && !version.contains('/')
            }
            None => false,
        };
        if !ok {
            return Err(v.err(format!(
                "{word:?} is not a fully qualified Arch version; write ARCHIVE/CATEGORY--BRANCH--VERSION, e.g. ann@example.org--2026/proj--main--1.0"
            )));
        }
        out.push(Source {
            kind: SourceKind::Arch,
            url: String::new(),
            branch: word.to_string(),
            branch_prefix: None,
        });
    }
    Ok(out)
}

/// `a/./b/../c` → `a/c`, without touching the file system (the path may not exist
/// yet: `create` writes the sample repositories after the config).
fn normalize_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

pub(super) fn parse_port(v: Option<&Val>, default: u16) -> Result<u16, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    if v.value.trim().is_empty() {
        return Err(v.err(format!(
            "no value; write a TCP port number from 1 to 65535 (e.g. `{} = {default}`), or remove the line to get the default {default}",
            v.raw_key
        )));
    }
    match schema::parse_digits(&v.value).and_then(|n| u16::try_from(n).ok()) {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(v.err(format!(
            "expected a TCP port number from 1 to 65535 (digits only, no sign), got {:?}; e.g. `{} = {default}`",
            v.value, v.raw_key
        ))),
    }
}

/// A `[:master:]` port that may carry an address (`htmlport = 127.0.0.1:8010`):
/// the address (`None`: every interface) and the port; a bad value is an error
/// at its line that says how to write one.
fn parse_listen(
    v: Option<&Val>,
    default: u16,
) -> Result<(Option<std::net::IpAddr>, u16), ConfigError> {
    let Some(v) = v else {
        return Ok((None, default));
    };
    if !v.value.contains(':') {
        // A bare port: every interface, with the same messages as before.
        return parse_port(Some(v), default).map(|p| (None, p));
    }
    v.value
        .parse::<super::Listen>()
        .map(|l| (l.addr, l.port))
        .map_err(|e| v.err(e))
}

/// Whether a section name belongs to the sections that are not factories.
fn is_special_section(name: &str) -> bool {
    name == "DEFAULT"
        || name == ":master:"
        || name == "users"
        || name == "try"
        || name.starts_with("slave:")
        || name.starts_with("lock:")
        || super::changesource::is_change_source(name)
}

/// Read and validate a `master.ini` (`path` is the file or the master directory).
pub fn load(path: &Path) -> Result<MasterConfig, ConfigError> {
    let file = master_ini_path(path);
    let bytes = std::fs::read(&file).map_err(|source| ConfigError::Io {
        path: file.clone(),
        source,
    })?;
    let text = ini::decode(&file, &bytes)?;
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let basedir = std::fs::canonicalize(&parent).unwrap_or(parent);
    let projects = projects(Some(&basedir))?;
    load_from_str(&file, &basedir, text, &projects)
}

/// [`load`] on text already read, with the projects a factory section may start
/// from (what [`load`] uses: bundled ones plus `MASTERDIR/projects/*.ini`).
pub fn load_from_str(
    file: &Path,
    basedir: &Path,
    text: &str,
    projects: &[Project],
) -> Result<MasterConfig, ConfigError> {
    let doc = ini::parse(file, text)?;
    let defaults: Vec<Val> = doc
        .section("DEFAULT")
        .map(|s| vals(file, s))
        .unwrap_or_default();
    let mut cfg = MasterConfig {
        path: file.to_path_buf(),
        basedir: basedir.to_path_buf(),
        ..MasterConfig::default()
    };

    // [:master:]: DEFAULT keys it accepts, then its own.
    let mut master = Layered::default();
    for v in &defaults {
        if is_master_key(&v.key) {
            master.set(v.clone());
        }
    }
    if let Some(sec) = doc.section(":master:") {
        for v in vals(file, sec) {
            if !is_master_key(&v.key) {
                let hint = schema::closest(
                    &v.key,
                    MASTER_KEYS_DOCUMENTED
                        .iter()
                        .chain(SLAVE_KEYS)
                        .chain(MAIL_KEYS_DOCUMENTED)
                        .copied(),
                )
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
                return Err(v.err(format!(
                    "unknown key in [:master:]{hint}; accepted keys: {}, {}, and the slave defaults {}",
                    MASTER_KEYS_DOCUMENTED.join(", "),
                    MAIL_KEYS_DOCUMENTED.join(", "),
                    SLAVE_KEYS.join(", ")
                )));
            }
            master.set(v);
        }
    }
    read_master_keys(&mut cfg, &master)?;

    // [lock:NAME] and [users].
    for sec in doc.sections.iter().filter(|s| s.name.starts_with("lock:")) {
        cfg.locks.push(read_lock(file, sec, &defaults)?);
    }
    if let Some(sec) = doc.section("users") {
        for e in &sec.entries {
            if e.value.is_empty() {
                return Err(ConfigError::At {
                    path: file.to_path_buf(),
                    line: e.line,
                    context: format!("[users] {}: ", e.raw_key),
                    message: "empty password; write `NAME = PASSWORD`".to_string(),
                });
            }
            if secrets::is_documented(&e.value) {
                cfg.warnings.push(ConfigWarning {
                    path: file.to_path_buf(),
                    line: e.line,
                    context: format!("[users] {}: ", e.raw_key),
                    message: format!(
                        "the password {:?} is printed in the documentation, so anyone who can reach htmlport {} can force and stop builds as {}; {FRESH_SECRET}",
                        e.value, cfg.htmlport, e.raw_key
                    ),
                });
            }
            cfg.users.insert(e.raw_key.clone(), e.value.clone());
        }
    }

    if let Some(sec) = doc.section("try") {
        cfg.try_jobs = Some(super::trysection::read_try(file, basedir, sec)?);
    }

    // Factories (before slaves, which name them).
    let mut checks = Vec::new();
    for sec in doc.sections.iter().filter(|s| !is_special_section(&s.name)) {
        let (f, c) = read_factory(file, basedir, sec, &defaults, projects)?;
        cfg.factories.push(f);
        checks.push(c);
    }

    // [changesource:NAME] (after the factories, whose names `project` takes).
    let factory_names: Vec<String> = cfg.factories.iter().map(|f| f.name.clone()).collect();
    for sec in doc
        .sections
        .iter()
        .filter(|s| super::changesource::is_change_source(&s.name))
    {
        cfg.change_sources
            .push(super::changesource::read_change_source(
                file,
                basedir,
                sec,
                &factory_names,
            )?);
    }

    // Slaves, and the passwords they got from each place one is written.
    let mut password_vals: Vec<(Val, Vec<String>)> = Vec::new();
    let mut factories_vals: Vec<(String, Option<Val>, usize)> = Vec::new();
    for sec in doc.sections.iter().filter(|s| s.name.starts_with("slave:")) {
        let (slave, from, factories_val) =
            read_slave(file, sec, &defaults, &master, &cfg.factories)?;
        factories_vals.push((slave.name.clone(), factories_val, sec.line));
        match password_vals
            .iter_mut()
            .find(|(v, _)| v.path == from.path && v.line == from.line)
        {
            Some((_, names)) => names.push(slave.name.clone()),
            None => password_vals.push((from, vec![slave.name.clone()])),
        }
        cfg.slaves.push(slave);
    }

    let factory_keys: Vec<(String, Vec<Val>)> = checks
        .iter()
        .map(|c| (c.name.clone(), c.all.clone()))
        .collect();
    mail::read(&mut cfg, &doc, file, &defaults, &master, &factory_keys)?;
    cross_check(&cfg, &checks, file)?;
    cfg.local_sources = checks
        .iter()
        .flat_map(|c| c.local_sources.clone())
        .collect();
    warn_unbuilt_factories(&mut cfg, &checks, &factories_vals, file);
    warn_documented_passwords(&mut cfg, &password_vals, &master);
    warn_open_force(&mut cfg, &doc, &master);
    cfg.warnings.sort_by_key(|w| w.line);
    Ok(cfg)
}

/// A warning for each factory no slave runs (it never builds and cannot be
/// forced), naming the `factories =` lines that could list it.
fn warn_unbuilt_factories(
    cfg: &mut MasterConfig,
    checks: &[FactoryChecks],
    slaves: &[(String, Option<Val>, usize)],
    file: &Path,
) {
    // Each place a `factories =` line is written, with the slaves it serves.
    let mut lines: Vec<(String, Vec<&str>)> = Vec::new();
    for (name, v, section_line) in slaves {
        let place = match v {
            Some(v) => format!(
                "{}:{}: [{}] {} = {}",
                v.path.display(),
                v.line,
                v.section,
                v.raw_key,
                v.value.trim()
            ),
            None => format!(
                "{}:{}: [slave:{name}] (no factories line)",
                file.display(),
                section_line
            ),
        };
        match lines.iter_mut().find(|(p, _)| p == &place) {
            Some((_, names)) => names.push(name),
            None => lines.push((place, vec![name])),
        }
    }
    for c in checks {
        if cfg.slaves.iter().any(|s| s.factories.contains(&c.name)) {
            continue;
        }
        let message = if lines.is_empty() {
            format!(
                "no slave runs this factory, so it never builds and cannot be forced: there is no [slave:NAME] section; add one with `factories = {}`",
                c.name
            )
        } else {
            let places: Vec<String> = lines
                .iter()
                .map(|(p, names)| {
                    format!(
                        "{p} (slave{} {})",
                        if names.len() > 1 { "s" } else { "" },
                        names.join(", ")
                    )
                })
                .collect();
            format!(
                "no slave runs this factory, so it never builds and cannot be forced; add {} to a slave's `factories =` line (or write `factories = *`): {}",
                c.name,
                places.join("; ")
            )
        };
        cfg.warnings.push(ConfigWarning {
            path: file.to_path_buf(),
            line: c.section_line,
            context: format!("[{}]: ", c.name),
            message,
        });
    }
}

/// How to fix a documented secret, for the warnings.
const FRESH_SECRET: &str = "replace it with a random value of your own (e.g. the output of `head -c 18 /dev/urandom | base64`)";

/// Warnings for slave passwords, change credentials and webhook secrets that are
/// printed in the documentation.
fn warn_documented_passwords(
    cfg: &mut MasterConfig,
    slave_passwords: &[(Val, Vec<String>)],
    master: &Layered,
) {
    for (v, names) in slave_passwords {
        if secrets::is_documented(&v.value) {
            let (who, whose) = match names.len() {
                1 => (format!("slave {}", names[0]), "that slave's"),
                _ => (format!("slaves {}", names.join(", ")), "each of their"),
            };
            cfg.warnings.push(v.warning(format!(
                "the password {:?} is printed in the documentation, so anyone who can reach slaveport {} can log in as {who} and be sent builds; {FRESH_SECRET}, and write the same in {whose} slave.ini",
                v.value, cfg.slaveport,
            )));
        }
    }
    if let Some(v) = master
        .get("changepassword")
        .filter(|v| secrets::is_documented(&v.value))
    {
        cfg.warnings.push(v.warning(format!(
            "{:?} is printed in the documentation, so anyone who can reach slaveport {} or htmlport {} can submit Changes (and so start builds); {FRESH_SECRET}, and give it to `autobot sendchange --auth USER:PASSWORD`",
            v.value, cfg.slaveport, cfg.htmlport
        )));
    }
    for key in ["github_secret", "gitlab_secret", "gitea_secret"] {
        if let Some(v) = master.get(key).filter(|v| secrets::is_documented(&v.value)) {
            cfg.warnings.push(v.warning(format!(
                "{:?} is printed in the documentation, so anyone can sign pushes that the master believes; {FRESH_SECRET}, and set the same in the forge's webhook form",
                v.value
            )));
        }
    }
}

/// A warning when `htmlport` takes force and stop requests from anyone.
fn warn_open_force(cfg: &mut MasterConfig, doc: &ini::IniDoc, master: &Layered) {
    // Only this machine reaches a loopback htmlport: its users may force.
    if !cfg.allow_force || !cfg.users.is_empty() || cfg.html_listen().is_loopback() {
        return;
    }
    let message = format!(
        "htmlport {} lets anyone who can reach it force and stop builds (allowForce is true and there is no [users] section); add a [users] section with `NAME = PASSWORD` lines, set `allowForce = false`, or listen on loopback only (`htmlport = 127.0.0.1:{}`)",
        cfg.html_listen(),
        cfg.htmlport
    );
    let w = match master.get("allowforce") {
        Some(v) => v.warning(message),
        None => ConfigWarning {
            path: cfg.path.clone(),
            line: doc.section(":master:").map_or(1, |s| s.line),
            context: "[:master:]: ".to_string(),
            message,
        },
    };
    cfg.warnings.push(w);
}

/// `logHorizon`, `buildHorizon`, `changeHorizon` (days, fractions allowed; none
/// by default: everything is kept, as Buildbot) and `logCompression`.
fn read_retention(m: &Layered) -> Result<Retention, ConfigError> {
    let days = |key: &str| -> Result<Option<f64>, ConfigError> {
        let Some(v) = m.get(key) else {
            return Ok(None);
        };
        let raw = v.value.trim();
        if raw.is_empty() || raw.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        match raw.parse::<f64>() {
            Ok(d) if d.is_finite() && d > 0.0 && d <= 36_500.0 => Ok(Some(d)),
            _ => Err(v.err(format!(
                "expected a number of days greater than 0 (fractions allowed, e.g. 30 or 0.5), or `none` to keep everything, got {:?}",
                v.value
            ))),
        }
    };
    let compression = match m.get("logcompression") {
        None => LogCompression::None,
        Some(v) => match v.value.trim().to_ascii_lowercase().as_str() {
            "" | "none" => LogCompression::None,
            "zstd" => LogCompression::Zstd,
            _ => return Err(v.err(format!("expected `zstd` or `none`, got {:?}", v.value))),
        },
    };
    Ok(Retention {
        log_horizon: days("loghorizon")?,
        build_horizon: days("buildhorizon")?,
        change_horizon: days("changehorizon")?,
        artifact_horizon: days("artifacthorizon")?,
        log_compression: compression,
    })
}

/// `db` (`postgresql://USER@HOST:PORT/DBNAME`, or none for SQLite) and
/// `dbPasswordFile` (read now, so an unreadable one is an error at its line).
fn read_database(
    m: &Layered,
    basedir: &Path,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Database, ConfigError> {
    let db = m.get("db").filter(|v| {
        let t = v.value.trim();
        !t.is_empty() && !t.eq_ignore_ascii_case("sqlite")
    });
    let pwfile = m
        .get("dbpasswordfile")
        .filter(|v| !v.value.trim().is_empty());
    let Some(v) = db else {
        if let Some(p) = pwfile {
            return Err(p.err(
                "dbPasswordFile without `db = postgresql://…`: the history is in state.sqlite, \
                 which needs no password; remove the line, or add the `db` it is for",
            ));
        }
        return Ok(Database::Sqlite);
    };
    if !crate::db::pg::is_pg_url(&v.value) {
        return Err(v.err(format!(
            "expected `postgresql://USER@HOST:PORT/DBNAME` (or no `db` line for state.sqlite in the \
             master directory), got {:?}",
            v.value
        )));
    }
    let url = crate::db::pg::parse_url(&v.value).map_err(|e| v.err(e))?;
    let password_file = match pwfile {
        None => None,
        Some(p) => {
            let file = basedir.join(p.value.trim());
            match std::fs::read_to_string(&file) {
                Err(e) => {
                    return Err(p.err(format!(
                        "cannot read {}: {e}; write the database password alone in that file \
                         (readable by the master's user only), or give another path (relative \
                         to the master directory {})",
                        file.display(),
                        basedir.display()
                    )))
                }
                Ok(text) if text.lines().next().unwrap_or("").is_empty() => {
                    return Err(p.err(format!(
                        "{} is empty; write the database password on its first line",
                        file.display()
                    )))
                }
                Ok(_) => {}
            }
            if let Ok(meta) = std::fs::metadata(&file) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    warnings.push(p.warning(format!(
                        "{} can be read by other users of this machine, and it holds the \
                         database password; `chmod 600 {}`",
                        file.display(),
                        file.display()
                    )));
                }
            }
            Some(file)
        }
    };
    Ok(Database::Postgres {
        url,
        password_file,
        line: v.line,
    })
}

/// `masterName`: this master's name among several (default: the host name).
fn read_master_name(m: &Layered) -> Result<String, ConfigError> {
    let Some(v) = m.get("mastername").filter(|v| !v.value.trim().is_empty()) else {
        return Ok(nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "master".to_string()));
    };
    let name = v.value.trim();
    if name.len() > 64 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(v.err(format!(
            "expected a name of at most 64 characters without spaces (e.g. `masterName = \
             master-1`), unique among the masters sharing the database, got {:?}",
            v.value
        )));
    }
    Ok(name.to_string())
}

fn read_master_keys(cfg: &mut MasterConfig, m: &Layered) -> Result<(), ConfigError> {
    (cfg.slaveport_addr, cfg.slaveport) = parse_listen(m.get("slaveport"), 9010)?;
    (cfg.htmlport_addr, cfg.htmlport) = parse_listen(m.get("htmlport"), 8010)?;
    (cfg.publichtmlport_addr, cfg.publichtmlport) = parse_listen(m.get("publichtmlport"), 8011)?;
    let ports = [
        ("slaveport", cfg.slaveport),
        ("htmlport", cfg.htmlport),
        ("publichtmlport", cfg.publichtmlport),
    ];
    for (i, (a, pa)) in ports.iter().enumerate() {
        for (b, pb) in &ports[i + 1..] {
            if pa == pb {
                // Point at whichever of the two was written (the later one if both).
                let at = m.get(b).or_else(|| m.get(a));
                let msg = format!(
                    "{a} and {b} are both {pa}; each port must be different (defaults: slaveport 9010, htmlport 8010, publichtmlport 8011)"
                );
                return Err(match at {
                    Some(v) => v.err(msg),
                    None => section_err(&cfg.path, 1, ":master:", msg),
                });
            }
        }
    }
    let str_key = |k: &str, default: &str| {
        m.get(k)
            .map(|v| v.value.clone())
            .unwrap_or_else(|| default.to_string())
    };
    if let Some(v) = m.get("pollinterval") {
        cfg.poll_interval = parse_int(v, 1)?;
    }
    if let Some(v) = m.get("treestable") {
        cfg.tree_stable = parse_int(v, 0)?;
    }
    if let Some(v) = m.get("allowforce") {
        cfg.allow_force = parse_bool(v)?;
    }
    if let Some(v) = m.get("debug") {
        cfg.debug = parse_bool(v)?;
    }
    if let Some(v) = m.get("keepaliveinterval") {
        cfg.keepalive_interval = parse_int(v, 1)?;
    }
    if let Some(v) = m.get("mastertimeout") {
        cfg.master_timeout = parse_int(v, 3)?;
    }
    if let Some(v) = m.get("logsize") {
        cfg.log.size = parse_int(v, 1)?;
    }
    if let Some(v) = m.get("logcount") {
        cfg.log.count = match parse_int(v, 1)? {
            n @ 1..=1000 => n as u32,
            n => return Err(v.err(format!("expected at most 1000 old logs, got {n}"))),
        };
    }
    cfg.retention = read_retention(m)?;
    if let Some(v) = m.get("secretsdir").filter(|v| !v.value.trim().is_empty()) {
        let dir = cfg.basedir.join(v.value.trim());
        let secrets = crate::secrets::Secrets::load(&dir).map_err(|e| {
            v.err(format!(
                "{e} (secretsDir is relative to the master directory {})",
                cfg.basedir.display()
            ))
        })?;
        cfg.secrets = std::sync::Arc::new(secrets);
        cfg.secrets_line = v.line;
    }
    cfg.database = read_database(m, &cfg.basedir, &mut cfg.warnings)?;
    cfg.master_name = read_master_name(m)?;
    if let Some(v) = m.get("shareddir").filter(|v| !v.value.trim().is_empty()) {
        let dir = cfg.basedir.join(v.value.trim());
        if !dir.is_dir() {
            return Err(v.err(format!(
                "no directory {} (sharedDir is where every master sharing the database keeps \
                 step logs and artifacts; make it, mounted on each master's host, or give a path \
                 relative to the master directory {})",
                dir.display(),
                cfg.basedir.display()
            )));
        }
        cfg.shared_dir = Some(dir);
        cfg.shared_dir_line = v.line;
    }
    if let Some(v) = m.get("maxartifactsize") {
        cfg.max_artifact_size = factory::schema::parse_size(&v.value).map_err(|e| v.err(e))?;
    }
    cfg.project_name = str_key("projectname", "");
    cfg.project_url = str_key("projecturl", "");
    cfg.buildbot_url = str_key("buildboturl", "");
    cfg.irc = irc::read(m, &mut cfg.warnings)?;
    cfg.domain = str_key("domain", "");
    cfg.recipients = parse_list(&str_key("recipients", ""));
    cfg.changeuser = str_key("changeuser", "");
    cfg.changepassword = str_key("changepassword", "");
    cfg.github_secret = str_key("github_secret", "");
    cfg.gitlab_secret = str_key("gitlab_secret", "");
    cfg.gitea_secret = str_key("gitea_secret", "");
    for key in ["favicon", "robots_txt"] {
        let Some(v) = m.get(key).filter(|v| !v.value.trim().is_empty()) else {
            continue;
        };
        let file = cfg.basedir.join(v.value.trim());
        if !file.is_file() {
            return Err(v.err(format!(
                "no file {} (give a path relative to the master directory {}, or remove the key for the built-in one)",
                file.display(),
                cfg.basedir.display()
            )));
        }
        match key {
            "favicon" => cfg.favicon = Some(file),
            _ => cfg.robots_txt = Some(file),
        }
    }
    // Both or neither: neither means submitted Changes are refused.
    for (key, other) in [
        ("changeuser", "changepassword"),
        ("changepassword", "changeuser"),
    ] {
        let Some(v) = m.get(key) else { continue };
        if v.value.trim().is_empty() {
            return Err(v.err(
                "no value; give both changeuser and changepassword to accept Changes from sendchange and POST /api/v1/changes, or remove both lines to refuse them",
            ));
        }
        if m.get(other).is_none() {
            return Err(v.err(format!(
                "{key} without {other}: submitted Changes need both; add `{other} = ...` to [:master:] (a random value for a password), or remove this line to refuse submitted Changes"
            )));
        }
    }
    Ok(())
}

fn read_lock(
    file: &Path,
    sec: &ini::IniSection,
    defaults: &[Val],
) -> Result<LockConfig, ConfigError> {
    let name = &sec.name["lock:".len()..];
    if !factory::is_plain_name(name) {
        return Err(section_err(
            file,
            sec.line,
            &sec.name,
            "a lock needs a name of letters, digits, `.`, `_` and `-`: [lock:NAME]",
        ));
    }
    let mut l = Layered::default();
    for v in defaults
        .iter()
        .filter(|v| LOCK_KEYS.contains(&v.key.as_str()))
    {
        l.set(v.clone());
    }
    for v in vals(file, sec) {
        if !LOCK_KEYS.contains(&v.key.as_str()) {
            return Err(v.err("unknown key for a lock; accepted keys: scope (master or slave), maxCount (a whole number >= 1)"));
        }
        l.set(v);
    }
    let scope = match l.get("scope") {
        None => LockScope::Master,
        Some(v) => match v.value.trim().to_ascii_lowercase().as_str() {
            "master" | "" => LockScope::Master,
            "slave" => LockScope::Slave,
            _ => {
                return Err(v.err(format!(
                    "expected master (one lock for the whole master) or slave (one per slave), got {:?}",
                    v.value
                )))
            }
        },
    };
    let max_count = match l.get("maxcount") {
        None => 1,
        Some(v) => u32::try_from(parse_int(v, 1)?).map_err(|_| v.err("too large"))?,
    };
    Ok(LockConfig {
        name: name.to_string(),
        scope,
        max_count,
    })
}

/// What a factory names that only the whole config can check, with where it is written.
struct FactoryChecks {
    name: String,
    section_line: usize,
    depends_on: Option<Val>,
    /// `locks` keys of the factory and its steps.
    locks: Vec<Val>,
    /// Every key, for pointing `build_steps` errors at a line.
    all: Vec<Val>,
    /// Sources that are local paths, with the line naming them.
    local_sources: Vec<LocalSource>,
    /// The `svnBranchPrefix` key, which needs an svn source.
    svn_prefix: Option<Val>,
    /// `pullRequests = true`, which needs exactly one git source.
    pull_requests: Option<Val>,
}

/// The sources of `v` that are paths on this machine (`/…`, `file://…`; `./`
/// and `../` are already absolute), not URLs.
fn local_sources(v: &Val, sources: &[Source]) -> Vec<LocalSource> {
    sources
        .iter()
        .filter_map(|s| {
            let dir = match s.kind {
                SourceKind::Cvs => crate::sources::cvs_root_module(&s.url).0,
                _ => s.url.strip_prefix("file://").unwrap_or(&s.url),
            };
            dir.starts_with('/').then(|| LocalSource {
                kind: s.kind,
                dir: PathBuf::from(dir),
                path: v.path.clone(),
                line: v.line,
                context: format!("[{}] {}: ", v.section, v.raw_key),
                sample: None,
            })
        })
        .collect()
}

fn read_factory(
    file: &Path,
    basedir: &Path,
    sec: &ini::IniSection,
    defaults: &[Val],
    projects: &[Project],
) -> Result<(FactoryConfig, FactoryChecks), ConfigError> {
    let name = sec.name.clone();
    if name.contains(':') {
        return Err(section_err(
            file,
            sec.line,
            &name,
            "unknown kind of section; sections are [:master:], [slave:NAME], [lock:NAME], [users], [try], [DEFAULT], or a factory [NAME] (letters, digits, `.`, `_`, `-`)",
        ));
    }
    if !factory::is_plain_name(&name) {
        return Err(section_err(
            file,
            sec.line,
            &name,
            "a factory's name must be letters, digits, `.`, `_` and `-`, not starting with `.` or `-`",
        ));
    }
    let project = projects.iter().find(|p| p.name == name);
    let mut keys = Layered::default();
    if let Some(p) = project {
        for e in &p.entries {
            keys.set(Val {
                key: e.key.clone(),
                raw_key: e.raw_key.clone(),
                value: e.value.clone(),
                path: p.path.clone(),
                line: e.line,
                section: p.name.clone(),
            });
        }
    }
    for v in vals(file, sec) {
        keys.set(v);
    }
    let type_val = keys
        .get("type")
        .cloned()
        .or_else(|| defaults.iter().find(|v| v.key == "type").cloned());
    let Some(type_val) = type_val else {
        let mut hint = String::new();
        if sec.get("password").is_some() || sec.get("factories").is_some() {
            hint = format!(" (for a slave, write [slave:{name}])");
        } else if name == "master" {
            hint = " (the master's section is [:master:])".to_string();
        }
        let known: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
        return Err(section_err(
            file,
            sec.line,
            &name,
            format!(
                "this factory has no `type`{hint}: add `type = NAME` with one of: {}; or name the section after a project ({})",
                schema::type_names(),
                known.join(", ")
            ),
        ));
    };
    let type_name = type_val.value.trim().to_ascii_lowercase();
    let Some(ty) = factory::find_type(&type_name) else {
        return Err(type_val.err(format!(
            "unknown factory type {:?}; use one of: {} (see `autobot list-factories --types`)",
            type_val.value,
            schema::type_names()
        )));
    };
    // DEFAULT keys this type accepts go first, under everything else.
    let mut all = Layered::default();
    for v in defaults
        .iter()
        .filter(|v| v.key != "type" && ty.accepts(&v.key))
    {
        all.set(v.clone());
    }
    for v in keys.0 {
        all.set(v);
    }

    let mut f = FactoryConfig {
        name: name.clone(),
        type_name: ty.name.to_string(),
        project: project.map(|p| p.name.clone()),
        ..FactoryConfig::default()
    };
    let mut checks = FactoryChecks {
        name: name.clone(),
        section_line: sec.line,
        depends_on: None,
        locks: Vec::new(),
        all: all.0.clone(),
        local_sources: Vec::new(),
        svn_prefix: None,
        pull_requests: None,
    };
    let mut hg = Vec::new();
    let mut git = Vec::new();
    let mut svn = Vec::new();
    let mut bzr = Vec::new();
    let mut darcs = Vec::new();
    let mut cvs = Vec::new();
    let mut arch = Vec::new();
    let mut arch_location: Option<(String, Val)> = None;
    let mut svn_prefix: Option<String> = None;
    // step name -> (command Val, options), in order of the command keys.
    let mut steps: Vec<(String, Option<Val>, BTreeMap<String, String>)> = Vec::new();
    let mut step_options: Vec<(String, Val)> = Vec::new();
    for v in &all.0 {
        if let Some(rest) = v.key.strip_prefix("step.") {
            let (step, opt) = match rest.split_once('.') {
                Some((s, o)) => (s, Some(o)),
                None => (rest, None),
            };
            if step.is_empty()
                || !step
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(v.err(format!(
                    "a step name is letters, digits, `_` and `-` (write step.NAME = COMMAND), got {step:?}"
                )));
            }
            match opt {
                None => {
                    if v.value.trim().is_empty() {
                        return Err(v.err(
                            "expected a command, got nothing; e.g. `step.test = make check`",
                        ));
                    }
                    steps.push((step.to_string(), Some(v.clone()), BTreeMap::new()));
                }
                Some(opt) => {
                    let Some(spec) = schema::step_option(opt) else {
                        let hint =
                            schema::closest(opt, schema::STEP_OPTIONS.iter().map(|p| p.name))
                                .map(|k| format!(" (did you mean `{k}`?)"))
                                .unwrap_or_default();
                        return Err(v.err(format!(
                            "unknown step option {opt:?}{hint}; use one of: {}",
                            schema::step_option_names()
                        )));
                    };
                    if spec.name == "env.VAR" && !schema::is_env_name(&opt[4..]) {
                        return Err(v.err(format!(
                            "{:?} is not an environment variable name (letters, digits, `_`)",
                            &opt[4..]
                        )));
                    }
                    schema::check_value(spec.kind, &v.value).map_err(|m| v.err(m))?;
                    if spec.kind == ParamKind::LockRefs {
                        checks.locks.push(v.clone());
                    }
                    step_options.push((step.to_string(), v.clone()));
                }
            }
            continue;
        }
        if let Some(why) = schema::unsupported_source(&v.key) {
            return Err(v.err(why));
        }
        let spec = schema::common_param(&v.key).or_else(|| ty.param(&v.key));
        let Some(spec) = spec else {
            let hint = ty
                .suggest(&v.key)
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            return Err(v.err(format!(
                "unknown key for a factory of type {}{hint}; accepted keys: {}",
                ty.name,
                ty.accepted_keys()
            )));
        };
        schema::check_value(spec.kind, &v.value).map_err(|m| v.err(m))?;
        let value = v.value.trim();
        let opt_str = || (!value.is_empty()).then(|| value.to_string());
        match v.key.as_str() {
            "type" => {}
            "description" => f.description = value.to_string(),
            "git" => {
                git = parse_sources(v, SourceKind::Git, basedir)?;
                checks.local_sources.extend(local_sources(v, &git));
            }
            "hg" => {
                hg = parse_sources(v, SourceKind::Hg, basedir)?;
                checks.local_sources.extend(local_sources(v, &hg));
            }
            "svn" => {
                svn = parse_sources(v, SourceKind::Svn, basedir)?;
                checks.local_sources.extend(local_sources(v, &svn));
            }
            "bzr" => {
                bzr = parse_sources(v, SourceKind::Bzr, basedir)?;
                checks.local_sources.extend(local_sources(v, &bzr));
            }
            "darcs" => {
                darcs = parse_sources(v, SourceKind::Darcs, basedir)?;
                checks.local_sources.extend(local_sources(v, &darcs));
            }
            "cvs" => {
                cvs = parse_cvs_sources(v, basedir)?;
                checks.local_sources.extend(local_sources(v, &cvs));
            }
            "arch" => {
                arch = parse_arch_sources(v)?;
                if arch.is_empty() {
                    return Err(v.err(
                        "expected ARCHIVE/VERSION, e.g. ann@example.org--2026/proj--main--1.0",
                    ));
                }
            }
            "archivelocation" => {
                let url = if value.starts_with("./") || value.starts_with("../") {
                    normalize_path(&basedir.join(value))
                        .to_string_lossy()
                        .into_owned()
                } else {
                    value.to_string()
                };
                if url.is_empty() || url.split_whitespace().count() != 1 {
                    return Err(v.err(format!(
                        "expected one archive location (a path, http(s)://, sftp:// or ftp:// URL), got {value:?}"
                    )));
                }
                if let Ok((_, Some(c))) = crate::sources::split_credentials(&url) {
                    if !c.password.is_empty() {
                        return Err(v.err(format!(
                            "{} holds a password, which tla would keep in its archive registration and print; use a readable http:// archive, or sftp:// with a key",
                            crate::sources::redact_url(&url)
                        )));
                    }
                }
                arch_location = Some((url, v.clone()));
            }
            "svnbranchprefix" => {
                svn_prefix = Some(value.trim_matches('/').to_string());
                checks.svn_prefix = Some(v.clone());
            }
            "sample" => f.sample = opt_str(),
            "platform" => f.platform = parse_bool(v)?,
            "category" => f.category = value.to_string(),
            "revlink" => f.revlink = value.to_string(),
            "branches" => f.branches = value.split_whitespace().map(String::from).collect(),
            "files" => f.files = value.split_whitespace().map(String::from).collect(),
            "periodic" => f.periodic = value.parse().ok(),
            "pullrequests" => {
                f.pull_requests = parse_bool(v)?;
                checks.pull_requests = Some(v.clone()).filter(|_| f.pull_requests);
            }
            "pullrequestbranches" => {
                f.pull_request_branches = value.split_whitespace().map(String::from).collect()
            }
            "pullrequestsfromforks" => f.pull_requests_from_forks = parse_bool(v)?,
            "nightly" => f.nightly = opt_str(),
            "dependson" => {
                f.depends_on = opt_str();
                checks.depends_on = Some(v.clone());
            }
            "locks" => {
                f.locks = value.split_whitespace().map(String::from).collect();
                checks.locks.push(v.clone());
            }
            "mode" => {
                f.mode = match value.to_ascii_lowercase().as_str() {
                    "copy" => Mode::Copy,
                    "clobber" => Mode::Clobber,
                    "export" => Mode::Export,
                    _ => Mode::Update,
                }
            }
            "alwaysuselatest" => f.always_use_latest = parse_bool(v)?,
            "retry" => {
                f.retry = schema::parse_retry(value)
                    .ok()
                    .map(|(delay, repeats)| Retry { delay, repeats })
            }
            "treestable" => f.tree_stable = value.parse().ok(),
            "pollinterval" => f.poll_interval = value.parse().ok(),
            k if mail::FACTORY_KEYS.contains(&k) => {}
            _ => {
                f.params.insert(v.key.clone(), v.value.clone());
            }
        }
    }
    if let Some(v) = &checks.pull_requests {
        if git.len() != 1
            || !(hg.is_empty() && svn.is_empty() && bzr.is_empty() && darcs.is_empty())
        {
            return Err(v.err(
                "pullRequests builds the pull requests of one git repository, and this factory does not have exactly one source, a git one; give it `git = URL#BRANCH` alone or remove the key",
            ));
        }
    }
    if let Some(v) = &checks.svn_prefix {
        if svn.is_empty() {
            return Err(v.err(
                "svnBranchPrefix applies to svn sources, and this factory has none; add `svn = URL#BRANCH` or remove the key",
            ));
        }
    }
    for s in &mut svn {
        s.branch_prefix = svn_prefix.clone();
    }
    match (&arch_location, arch.is_empty()) {
        (Some((url, v)), false) => {
            for s in &mut arch {
                s.url = url.clone();
            }
            checks.local_sources.extend(local_sources(v, &arch));
        }
        (None, false) => {
            if let Some(v) = all.0.iter().find(|v| v.key == "arch") {
                return Err(v.err("arch = ARCHIVE/VERSION needs `archiveLocation = URL` (where the archive is: a path, or an http://, sftp:// or ftp:// URL) in the same section"));
            }
        }
        (Some((_, v)), true) => {
            return Err(v.err(
                "archiveLocation applies to arch sources, and this factory has none; add `arch = ARCHIVE/VERSION` or remove the key",
            ));
        }
        (None, true) => {}
    }
    f.sources = hg;
    f.sources.extend(svn);
    f.sources.extend(bzr);
    f.sources.extend(darcs);
    f.sources.extend(cvs);
    f.sources.extend(arch);
    f.sources.extend(git);
    if let Some(sample) = &f.sample {
        let dir = basedir.join("repos").join(sample);
        for s in checks.local_sources.iter_mut().filter(|s| s.dir == dir) {
            s.sample = Some(sample.clone());
        }
    }
    for (step, v) in step_options {
        let Some(entry) = steps.iter_mut().find(|(n, _, _)| n == &step) else {
            let names: Vec<&str> = steps.iter().map(|(n, _, _)| n.as_str()).collect();
            return Err(v.err(format!(
                "option for a step that does not exist; add `step.{step} = COMMAND` (steps of this factory: {})",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        };
        let opt = &v.key["step.".len() + step.len() + 1..];
        entry.2.insert(opt.to_string(), v.value.clone());
    }
    for (step, cmd, mut opts) in steps {
        if let Some(cmd) = cmd {
            opts.insert("command".to_string(), cmd.value);
        }
        f.steps.push((step, opts));
    }
    if ty.name == "shell" && f.steps.is_empty() {
        return Err(section_err(
            file,
            sec.line,
            &name,
            "a factory of type shell needs steps: add `step.NAME = COMMAND` lines (run in file order), e.g. `step.test = make check`",
        ));
    }
    Ok((f, checks))
}

fn read_slave(
    file: &Path,
    sec: &ini::IniSection,
    defaults: &[Val],
    master: &Layered,
    factories: &[FactoryConfig],
) -> Result<(SlaveConfig, Val, Option<Val>), ConfigError> {
    let name = &sec.name["slave:".len()..];
    if !factory::is_plain_name(name) {
        return Err(section_err(
            file,
            sec.line,
            &sec.name,
            "a slave needs a name of letters, digits, `.`, `_` and `-`: [slave:NAME]",
        ));
    }
    let mut l = Layered::default();
    for v in defaults.iter().chain(master.0.iter()) {
        if SLAVE_KEYS.contains(&v.key.as_str()) {
            l.set(v.clone());
        }
    }
    for v in vals(file, sec) {
        if mail::SLAVE_MAIL_KEYS.contains(&v.key.as_str()) {
            continue;
        }
        if !SLAVE_KEYS.contains(&v.key.as_str()) {
            let where_ = if MASTER_KEYS.contains(&v.key.as_str()) {
                " (it belongs in [:master:])"
            } else {
                ""
            };
            return Err(v.err(format!(
                "unknown key for a slave{where_}; accepted keys: {}, notifyOnMissing, missingTimeout",
                SLAVE_KEYS.join(", ")
            )));
        }
        l.set(v);
    }
    let password = match l.get("password") {
        Some(v) if !v.value.is_empty() => v.clone(),
        Some(v) => return Err(v.err("the password is empty; slaves must prove who they are: set `password = SECRET`")),
        None => {
            return Err(section_err(
                file,
                sec.line,
                &sec.name,
                "no password: add `password = SECRET` to this section (or to [:master:] for every slave)",
            ))
        }
    };
    let os = match l.get("os") {
        None => Os::Linux,
        Some(v) => match v.value.trim().to_ascii_lowercase().as_str() {
            "linux" | "" => Os::Linux,
            "win" => Os::Win,
            "mac" => Os::Mac,
            _ => return Err(v.err(format!("expected linux, win or mac, got {:?}", v.value))),
        },
    };
    let max_builds = match l.get("max_builds") {
        None => 1,
        Some(v) => u32::try_from(parse_int(v, 1)?).map_err(|_| v.err("too large"))?,
    };
    let mut names = Vec::new();
    if let Some(v) = l.get("factories") {
        let words: Vec<&str> = v.value.split_whitespace().collect();
        if words.contains(&"*") {
            if words.len() > 1 {
                return Err(v.err("`*` means every factory and must stand alone; write `factories = *` or list names"));
            }
            names = factories.iter().map(|f| f.name.clone()).collect();
        } else {
            for w in words {
                if !factories.iter().any(|f| f.name == w) {
                    let known: Vec<&str> = factories.iter().map(|f| f.name.as_str()).collect();
                    return Err(v.err(format!(
                        "no factory named {w:?}; known factories: {} — add a [{w}] section (or `autobot create-project {w}`), or fix the name",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    )));
                }
                if !names.iter().any(|n| n == w) {
                    names.push(w.to_string());
                }
            }
            // Keep factory file order, as documented on SlaveConfig::factories.
            names.sort_by_key(|n| factories.iter().position(|f| &f.name == n));
        }
    }
    Ok((
        SlaveConfig {
            name: name.to_string(),
            password: password.value.clone(),
            factories: names,
            os,
            max_builds,
        },
        password,
        l.get("factories").cloned(),
    ))
}

/// Checks across sections: references, dependency cycles, builder names, and each
/// factory's steps.
fn cross_check(
    cfg: &MasterConfig,
    checks: &[FactoryChecks],
    file: &Path,
) -> Result<(), ConfigError> {
    if let Some(t) = &cfg.try_jobs {
        let builders: Vec<String> = cfg.builders().into_iter().map(|b| b.name).collect();
        for b in &t.builders {
            if !builders.contains(b) {
                return Err(ConfigError::At {
                    path: file.to_path_buf(),
                    line: t.builders_line,
                    context: "[try] builders: ".to_string(),
                    message: format!(
                        "no builder named {b:?}; the builders are: {}",
                        builders.join(" ")
                    ),
                });
            }
        }
    }
    let lock_names: Vec<&str> = cfg.locks.iter().map(|l| l.name.as_str()).collect();
    for c in checks {
        for v in &c.locks {
            for name in v.value.split_whitespace() {
                if !lock_names.contains(&name) {
                    return Err(v.err(format!(
                        "no lock named {name:?}; add a [lock:{name}] section{}",
                        if lock_names.is_empty() {
                            String::new()
                        } else {
                            format!(" or use one of: {}", lock_names.join(", "))
                        }
                    )));
                }
            }
        }
        if let Some(v) = &c.depends_on {
            let target = v.value.trim();
            if target == c.name {
                return Err(v.err("a factory cannot depend on itself"));
            }
            if cfg.factory(target).is_none() {
                let known: Vec<&str> = cfg
                    .factories
                    .iter()
                    .map(|f| f.name.as_str())
                    .filter(|n| *n != c.name)
                    .collect();
                return Err(v.err(format!(
                    "no factory named {target:?}; dependsOn names another factory section: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            // Follow the chain; coming back to this factory is a cycle.
            let mut seen = vec![c.name.as_str()];
            let mut cur = cfg.factory(target);
            while let Some(f) = cur {
                if seen.contains(&f.name.as_str()) {
                    seen.push(&f.name);
                    return Err(v.err(format!(
                        "dependsOn makes a cycle: {}; remove one of them",
                        seen.join(" -> ")
                    )));
                }
                seen.push(&f.name);
                cur = f.depends_on.as_deref().and_then(|d| cfg.factory(d));
            }
        }
    }
    let mut builders: HashMap<String, &BuilderConfig> = HashMap::new();
    let all = cfg.builders();
    for b in &all {
        if let Some(other) = builders.insert(b.name.clone(), b) {
            let line = checks
                .iter()
                .find(|c| c.name == b.factory)
                .map(|c| c.section_line)
                .unwrap_or(1);
            return Err(section_err(
                file,
                line,
                &b.factory,
                format!(
                    "builder name {} is made twice (factory {} on slave {}, factory {} on slave {}); rename a factory or a slave",
                    b.name, other.factory, other.slave, b.factory, b.slave
                ),
            ));
        }
    }
    let default_slave = SlaveConfig {
        name: "slave".to_string(),
        max_builds: 1,
        ..SlaveConfig::default()
    };
    for (f, c) in cfg.factories.iter().zip(checks) {
        let slave = cfg
            .slaves
            .iter()
            .find(|s| s.factories.contains(&f.name))
            .unwrap_or(&default_slave);
        let steps = factory::build_steps(&f.recipe(), slave.os.as_str());
        if let Ok(steps) = &steps {
            check_secret_references(cfg, f, c, steps, file)?;
        }
        if let Err(e) = steps {
            let key = match &e {
                factory::FactoryError::BadValue { key, .. } => Some(key.to_ascii_lowercase()),
                factory::FactoryError::NoSource { .. } => None,
                factory::FactoryError::DuplicateDir { .. } => c
                    .all
                    .iter()
                    .find(|v| {
                        matches!(
                            v.key.as_str(),
                            "git" | "hg" | "svn" | "bzr" | "darcs" | "cvs" | "arch"
                        )
                    })
                    .map(|v| v.key.clone()),
                _ => None,
            };
            let message = match &e {
                factory::FactoryError::BadValue { message, .. } => message.clone(),
                other => {
                    let text = other.to_string();
                    text.strip_prefix(&format!("factory {}: ", f.name))
                        .unwrap_or(&text)
                        .to_string()
                }
            };
            let at = key.and_then(|k| c.all.iter().find(|v| v.key.to_ascii_lowercase() == k));
            return Err(match at {
                Some(v) => v.err(message),
                None => section_err(file, c.section_line, &f.name, message),
            });
        }
    }
    Ok(())
}

/// Every `%(secret:NAME)s` of a factory's steps names a secret of `secretsDir`
/// (an untrusted build is refused its secrets when it runs, not here).
fn check_secret_references(
    cfg: &MasterConfig,
    f: &FactoryConfig,
    c: &FactoryChecks,
    steps: &[factory::StepSpec],
    file: &Path,
) -> Result<(), ConfigError> {
    for step in steps {
        for name in factory::interpolate::step_secret_references(step) {
            if cfg.secrets.get(&name).is_some() {
                continue;
            }
            let written = format!("%(secret:{name})s");
            let message = format!("step {}: {}", step.name, cfg.secrets.missing(&name));
            return Err(match c.all.iter().find(|v| v.value.contains(&written)) {
                Some(v) => v.err(message),
                None => section_err(file, c.section_line, &f.name, message),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
