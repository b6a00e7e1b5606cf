//! The create commands: `create` (a master+slave pair), `create-master`,
//! `create-slave` and `create-project`.
//!
//! Every directory is first written to a hidden staging directory beside its target
//! and renamed into place only when complete and valid, so a failure (unknown
//! factory, bad value, missing git) leaves nothing behind.
//!
//! A new master gets secrets of its own, never documented defaults: a random slave
//! password (unless `--passwd` gives one; `create` writes the same into the slave's
//! `slave.ini`) and random `changeuser`/`changepassword`, from the system CSPRNG.
//! `master.ini` and `slave.ini` hold them and are written readable by their owner
//! only.

use anyhow::{anyhow, bail, Context};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::info::local_dir;
use super::CreateArgs;
use crate::config::Project;
use crate::config::{self, secrets, SlaveIni};
use crate::factory;
use crate::templates::{self, MasterVars};

#[derive(Debug, Args)]
pub struct CreateSlaveArgs {
    /// Directory to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// The master's HOST:PORT (its slaveport); several masters sharing one
    /// database comma-separated (host1:9010,host2:9010), tried in that order.
    #[arg(value_name = "MASTERHOST:PORT", required_unless_present = "ini")]
    pub master_addr: Option<String>,
    /// The slave's name, as in the master's `[slave:NAME]`.
    #[arg(value_name = "NAME", required_unless_present = "ini")]
    pub slave_name: Option<String>,
    /// The slave's password.
    #[arg(value_name = "PASSWORD", required_unless_present = "ini")]
    pub password: Option<String>,
    /// Take the port and password from this master.ini (with --name).
    #[arg(long, value_name = "MASTER_INI", conflicts_with_all = ["master_addr", "slave_name", "password"], requires = "name")]
    pub ini: Option<PathBuf>,
    /// With --ini: the `[slave:NAME]` to create.
    #[arg(long, requires = "ini")]
    pub name: Option<String>,
    /// With --ini: host name of the master; several masters sharing one database
    /// comma-separated (host1,host2), each on the master.ini's slaveport.
    #[arg(long, default_value = "localhost", requires = "ini")]
    pub master: String,
    /// Seconds between keepalives (also the longest reconnect wait).
    #[arg(long, default_value_t = 600)]
    pub keepalive: u64,
    /// Umask for the commands the slave runs (octal).
    #[arg(long, default_value = "022")]
    pub umask: String,
    /// Run commands under a pseudo-terminal by default.
    #[arg(long)]
    pub usepty: bool,
}

#[derive(Debug, Args)]
pub struct CreateProjectArgs {
    /// Project name: lower-case letters, digits and `-`.
    pub name: String,
    /// File to write [default: projects/NAME.ini under the current master directory].
    pub output: Option<PathBuf>,
    /// One line saying what the project is (asked for on a terminal if missing).
    #[arg(long)]
    pub description: Option<String>,
    /// Repository URL, `URL[#branch]` (asked for on a terminal if missing).
    #[arg(long)]
    pub repo: Option<String>,
    /// Built-in factory type that builds it (see `list-factories --types`).
    #[arg(long = "type", value_name = "TYPE", default_value = "autotools")]
    pub type_name: String,
}

/// `autobot create DIR`: DIR/master and DIR/slave, the slave pointed at the master.
pub fn create_pair(args: &CreateArgs) -> anyhow::Result<()> {
    let projects = config::projects(Some(&local_dir(None)))?;
    if args.list_factories {
        print!("{}", config::list_factories_text(&projects));
        return Ok(());
    }
    let chosen = choose_factories(&args.factories, &projects)?;
    let secrets = Secrets::new(args)?;
    let slave = slave_ini_for(args, &secrets);
    let dir = args.dir.clone();
    staged(&dir, |stage| {
        write_master(&stage.join("master"), args, &secrets, &chosen, &projects)?;
        write_slave(&stage.join("slave"), &slave)?;
        Ok(())
    })?;
    println!(
        "Created a master in {} and a slave in {} building: {}",
        dir.join("master").display(),
        dir.join("slave").display(),
        chosen.join(" ")
    );
    println!("Start both with:  autobot start {}", dir.display());
    println!(
        "Then the waterfall is at {url} (the slave shows as connected at {url}slaves)",
        url = waterfall_url(args)
    );
    println!(
        "Edit {} to say who looks after the slave.",
        dir.join("slave/info/admin").display()
    );
    print_changes_hint(&dir.join("master/master.ini"), args);
    Ok(())
}

/// The secrets of a new master: the slave password (given or random) and random
/// change credentials.
struct Secrets {
    passwd: String,
    changeuser: String,
    changepassword: String,
}

impl Secrets {
    fn new(args: &CreateArgs) -> anyhow::Result<Secrets> {
        let passwd = match &args.passwd {
            Some(p) => {
                check_password("--passwd", p)?;
                if secrets::is_documented(p) {
                    eprintln!(
                        "warning: --passwd {p:?} is printed in the documentation, so anyone who can reach the slaveport can log in as slave {}; leave out --passwd for a random one",
                        args.slave
                    );
                }
                p.clone()
            }
            None => secrets::random_password()?,
        };
        Ok(Secrets {
            passwd,
            changeuser: format!("change-{}", secrets::random(6)?),
            changepassword: secrets::random_password()?,
        })
    }
}

/// Refuse a password that master.ini and slave.ini could not hold as given: empty,
/// several lines, blanks around it, or a `;` after a blank (an inline comment).
fn check_password(what: &str, p: &str) -> anyhow::Result<()> {
    let comment = p
        .char_indices()
        .any(|(i, c)| c == ';' && p[..i].ends_with(char::is_whitespace));
    if p.trim().is_empty() || p.trim() != p || p.contains(['\n', '\r']) || comment {
        bail!(
            "{what} must be a non-empty single line without leading or trailing blanks and \
             without a `;` after a blank (which master.ini and slave.ini read as a comment)"
        );
    }
    Ok(())
}

/// How to submit a Change to the new master, without printing the secret.
fn print_changes_hint(master_ini: &Path, args: &CreateArgs) {
    println!(
        "Send Changes with:  autobot sendchange --master {}:{} --auth CHANGEUSER:CHANGEPASSWORD ... \
         (changeuser and changepassword are in {})",
        match master_host(args) {
            h if h.contains(':') => format!("[{h}]"),
            h => h,
        },
        args.slaveport.port,
        master_ini.display()
    );
}

/// Where a browser on this machine finds the new master's waterfall.
fn waterfall_url(args: &CreateArgs) -> String {
    args.htmlport.local_url()
}

/// The host the new slave connects to: `--master`, unless it is the default
/// `localhost` and `--slaveport` names an address (then that address).
fn master_host(args: &CreateArgs) -> String {
    slave_master_host(&args.master, args.slaveport)
}

/// [`master_host`] for a master's `--master` and slaveport.
fn slave_master_host(master: &str, slaveport: config::Listen) -> String {
    match slaveport.addr {
        Some(_) if master == "localhost" => slaveport.connect_host().to_string(),
        _ => master.to_string(),
    }
}

/// `autobot create-master DIR`.
pub fn create_master_cmd(args: &CreateArgs) -> anyhow::Result<()> {
    let projects = config::projects(Some(&local_dir(None)))?;
    if args.list_factories {
        print!("{}", config::list_factories_text(&projects));
        return Ok(());
    }
    let chosen = choose_factories(&args.factories, &projects)?;
    let secrets = Secrets::new(args)?;
    staged(&args.dir, |stage| {
        write_master(stage, args, &secrets, &chosen, &projects)
    })?;
    println!(
        "Created a master in {} building: {}",
        args.dir.display(),
        chosen.join(" ")
    );
    println!(
        "Create its slave with:  autobot create-slave SLAVEDIR --ini {} --name {}",
        args.dir.join("master.ini").display(),
        args.slave
    );
    println!("Start it with:  autobot start {}", args.dir.display());
    println!("Then the waterfall is at {}", waterfall_url(args));
    println!(
        "To start it at boot, install {} (see its header)",
        args.dir.join(super::upgrade::MASTER_UNIT).display()
    );
    print_changes_hint(&args.dir.join("master.ini"), args);
    Ok(())
}

/// `autobot create-slave DIR ...`.
pub fn create_slave_cmd(args: &CreateSlaveArgs) -> anyhow::Result<()> {
    let umask = u32::from_str_radix(&args.umask, 8).map_err(|_| {
        anyhow!(
            "--umask {:?} is not an octal mask; use e.g. --umask 022",
            args.umask
        )
    })?;
    let mut slave = if let Some(ini) = &args.ini {
        let cfg = config::load(&config::master_ini_path(ini))?;
        let name = args.name.clone().unwrap_or_default();
        let entry = cfg.slave(&name).ok_or_else(|| {
            let names: Vec<&str> = cfg.slaves.iter().map(|s| s.name.as_str()).collect();
            anyhow!(
                "{} has no [slave:{name}]; its slaves are: {}",
                cfg.path.display(),
                if names.is_empty() {
                    "(none)".to_string()
                } else {
                    names.join(", ")
                }
            )
        })?;
        let mut masters = Vec::new();
        for (i, host) in args.master.split(',').map(str::trim).enumerate() {
            if host.is_empty() || host.contains(char::is_whitespace) {
                bail!(
                    "--master {:?}: host {} is empty or has blanks; give host names separated by commas, e.g. --master host1,host2",
                    args.master,
                    i + 1
                );
            }
            masters.push(config::slave::MasterAddr {
                host: slave_master_host(host, cfg.slave_listen()),
                port: cfg.slaveport,
            });
        }
        let first = masters.remove(0);
        SlaveIni {
            basedir: PathBuf::new(),
            master_host: first.host,
            master_port: first.port,
            more_masters: masters,
            name: entry.name.clone(),
            password: entry.password.clone(),
            keepalive: args.keepalive,
            umask,
            usepty: args.usepty,
        }
    } else {
        let addr = args.master_addr.clone().unwrap_or_default();
        let mut masters = config::slave::MasterAddr::parse_list(&addr)
            .map_err(|e| anyhow!("MASTERHOST:PORT: {e}"))?;
        let first = masters.remove(0);
        SlaveIni {
            basedir: PathBuf::new(),
            master_host: first.host,
            master_port: first.port,
            more_masters: masters,
            name: args.slave_name.clone().unwrap_or_default(),
            password: args.password.clone().unwrap_or_default(),
            keepalive: args.keepalive,
            umask,
            usepty: args.usepty,
        }
    };
    if slave.name.is_empty() || slave.name.contains(char::is_whitespace) {
        bail!(
            "slave name {:?} must be non-empty and without spaces",
            slave.name
        );
    }
    if args.keepalive == 0 {
        bail!("--keepalive must be at least 1 second");
    }
    check_password("PASSWORD", &slave.password)?;
    if args.ini.is_none() && secrets::is_documented(&slave.password) {
        eprintln!(
            "warning: the password {:?} is printed in the documentation, so anyone who can reach the master can log in as slave {}; give both this slave and its [slave:{}] section a random one",
            slave.password, slave.name, slave.name
        );
    }
    staged(&args.dir, |stage| write_slave(stage, &slave))?;
    slave.basedir = std::fs::canonicalize(&args.dir).unwrap_or_else(|_| args.dir.clone());
    let exe = current_exe_string();
    let basedir = slave.basedir.display().to_string();
    let masters: Vec<String> = slave.masters().iter().map(|m| m.to_string()).collect();
    println!(
        "Created slave {} in {} for {} {}",
        slave.name,
        args.dir.display(),
        if masters.len() > 1 {
            "masters (tried in this order)"
        } else {
            "master"
        },
        masters.join(", ")
    );
    println!(
        "Edit {} to say who looks after this slave.",
        args.dir.join("info/admin").display()
    );
    println!("Start it with:  autobot start {basedir}");
    println!(
        "To start it at boot, install {} (see its header), or add this line to `crontab -e`:",
        args.dir.join("autobot-slave.service").display()
    );
    println!("  {}", templates::crontab_line(&exe, &basedir));
    Ok(())
}

/// `autobot create-project NAME [OUTPUT]`.
pub fn create_project_cmd(args: &CreateProjectArgs) -> anyhow::Result<()> {
    let name = &args.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
    {
        bail!("project name {name:?} must be lower-case letters, digits and `-` (e.g. my-lib2), not starting with `-`");
    }
    if factory::find_type(&args.type_name).is_none() {
        let types: Vec<&str> = factory::types().iter().map(|t| t.name).collect();
        bail!(
            "--type {:?} is not a built-in factory type; use one of: {}",
            args.type_name,
            types.join(", ")
        );
    }
    let output = match &args.output {
        Some(p) if p.is_dir() => p.join(format!("{name}.ini")),
        Some(p) => p.clone(),
        None => PathBuf::from("projects").join(format!("{name}.ini")),
    };
    if output.exists() {
        bail!(
            "{} already exists; remove it or give another OUTPUT",
            output.display()
        );
    }
    let description = match &args.description {
        Some(d) => d.clone(),
        None => prompt("description of the project", "--description")?,
    };
    let repo = match &args.repo {
        Some(r) => r.clone(),
        None => prompt("repository location of the project", "--repo")?,
    };
    if description.contains('\n') || repo.contains('\n') {
        bail!("the description and the repository must be single lines");
    }
    let text = format!(
        "; project {name}, written by `autobot create-project`.\n\
         ; A master builds it when a slave lists `{name}` in `factories`; a [{name}]\n\
         ; section in master.ini starts from these keys and may override any of them.\n\
         ; Every key of type {ty}: `autobot list-factories --types`.\n\
         [{name}]\n\
         description = {description}\n\
         type = {ty}\n\
         ; git = URL[#branch] ...  (use `hg = URL[#branch]` for Mercurial)\n\
         git = {repo}\n",
        ty = args.type_name,
    );
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    write_new_file(&output, text.as_bytes())?;
    let written = std::path::absolute(&output).unwrap_or_else(|_| output.clone());
    println!("Wrote project {name} to {}", written.display());
    if args.output.is_none() && !Path::new("master.ini").is_file() {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        println!(
            "{} is not a master directory (it has no master.ini): `autobot create` and \
             `list-factories` run here see the project; for an existing master, move the file \
             to MASTERDIR/projects/ and add `{name}` to a slave's factories",
            cwd.display()
        );
    }
    Ok(())
}

/// Ask on the terminal for a missing value; without a terminal, say which flag to use.
fn prompt(what: &str, flag: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("missing {what}: pass {flag} (no terminal to ask on)");
    }
    print!("Enter {what}: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim().to_string();
    if line.is_empty() {
        bail!("no {what} given");
    }
    Ok(line)
}

/// The factories to build: `-f` values, `-` for all, or asked on a terminal (again
/// after a name that is not known, until a known one or an empty line).
fn choose_factories(given: &[String], projects: &[Project]) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = projects.iter().map(|p| p.name.clone()).collect();
    let listing = config::list_factories_text(projects);
    let wanted: Vec<String> = if given.len() == 1 && given[0] == "-" {
        names.clone()
    } else if given.is_empty() {
        if !std::io::stdin().is_terminal() {
            bail!("no factory given: pass -f NAME (or -f - for all). {listing}");
        }
        print!("{listing}\nEnter factory: ");
        loop {
            std::io::stdout().flush()?;
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let wanted: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            if wanted.is_empty() {
                bail!("no factory given; nothing was created");
            }
            if wanted.len() == 1 && wanted[0] == "-" {
                break names.clone();
            }
            match unknown_factories(&wanted, &names) {
                None => break wanted,
                Some(msg) => print!("{msg}\nEnter factory (an empty line quits): "),
            }
        }
    } else {
        given.to_vec()
    };
    if wanted.is_empty() {
        bail!(
            "no factory given. Factory must be one of: {}",
            names.join(", ")
        );
    }
    if let Some(msg) = unknown_factories(&wanted, &names) {
        bail!("{msg}; nothing was created");
    }
    let mut seen = std::collections::HashSet::new();
    let mut wanted = wanted;
    wanted.retain(|w| seen.insert(w.clone()));
    Ok(wanted)
}

/// "unknown factory X (did you mean Y?). Factory must be one of: …" when some of
/// `wanted` is not among `names`.
fn unknown_factories(wanted: &[String], names: &[String]) -> Option<String> {
    let unknown: Vec<String> = wanted
        .iter()
        .filter(|w| !names.contains(w))
        .map(
            |w| match crate::factory::schema::closest(w, names.iter().map(String::as_str)) {
                Some(n) => format!("{w} (did you mean {n}?)"),
                None => w.clone(),
            },
        )
        .collect();
    if unknown.is_empty() {
        return None;
    }
    Some(format!(
        "unknown factory {}. Factory must be one of: {} (or - for all)",
        unknown.join(", "),
        names.join(", ")
    ))
}

fn slave_ini_for(args: &CreateArgs, secrets: &Secrets) -> SlaveIni {
    SlaveIni {
        basedir: PathBuf::new(),
        master_host: master_host(args),
        master_port: args.slaveport.port,
        more_masters: Vec::new(),
        name: args.slave.clone(),
        password: secrets.passwd.clone(),
        keepalive: 600,
        umask: 0o022,
        usepty: false,
    }
}

/// Build `target` in a hidden sibling directory with `fill`, then rename it into
/// place; on any error the staging directory is removed and `target` is untouched.
fn staged(target: &Path, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    if target.exists() {
        let empty = target.is_dir()
            && std::fs::read_dir(target)
                .with_context(|| format!("cannot read {}", target.display()))?
                .next()
                .is_none();
        if !empty {
            bail!(
                "{} already exists and is not empty; choose a new directory or remove it",
                target.display()
            );
        }
    }
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let base = target
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a directory name", target.display()))?
        .to_string_lossy()
        .to_string();
    let stage = parent.join(format!(".{base}.autobot-new-{}", std::process::id()));
    if stage.exists() {
        std::fs::remove_dir_all(&stage)
            .with_context(|| format!("cannot remove stale {}", stage.display()))?;
    }
    std::fs::create_dir(&stage).with_context(|| format!("cannot create {}", stage.display()))?;
    let result = fill(&stage).and_then(|_| {
        std::fs::rename(&stage, target).with_context(|| {
            format!(
                "cannot move {} into place at {}",
                stage.display(),
                target.display()
            )
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&stage);
    }
    result
}

/// Write a master directory into `dir`: master.ini, local projects it uses, and the
/// sample repositories; then check that the result loads.
fn write_master(
    dir: &Path,
    args: &CreateArgs,
    secrets: &Secrets,
    chosen: &[String],
    projects: &[Project],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let vars = MasterVars {
        slave: args.slave.clone(),
        os: args.os.clone(),
        passwd: secrets.passwd.clone(),
        changeuser: secrets.changeuser.clone(),
        changepassword: secrets.changepassword.clone(),
        slaveport: args.slaveport.to_string(),
        htmlport: args.htmlport.to_string(),
        publichtmlport: args.publichtmlport.to_string(),
        botname: args.botname.clone(),
        irc_host: args.irc_host.clone(),
        irc_channels: args.irc_channels.clone(),
        domain: args.domain.clone(),
        recipients: args.recipients.clone(),
        debug: args.debug,
        factories: chosen.to_vec(),
    };
    write_private_file(
        &dir.join("master.ini"),
        templates::master_ini(&vars, &now_string()).as_bytes(),
    )?;
    // The unit names the final directory, not the staging one.
    write_new_file(
        &dir.join(super::upgrade::MASTER_UNIT),
        templates::master_systemd_unit(&current_exe_string(), &final_path_of_staged(dir))
            .as_bytes(),
    )?;
    for name in chosen {
        let Some(project) = projects.iter().find(|p| &p.name == name) else {
            continue;
        };
        if let config::ProjectSource::Local(path) = &project.source {
            let dest = dir.join("projects").join(format!("{name}.ini"));
            std::fs::create_dir_all(dir.join("projects"))?;
            std::fs::copy(path, &dest)
                .with_context(|| format!("cannot copy {} to {}", path.display(), dest.display()))?;
        }
        if let Some(sample) = project.keys.get("sample") {
            // Several projects may share one sample repository.
            let dest = dir.join("repos").join(sample);
            if !dest.exists() {
                materialize_sample(sample, &dest)?;
            }
        }
    }
    config::load(&dir.join("master.ini")).map_err(|e| {
        anyhow!(
            "the new master.ini would not load ({e}); check the values given on the command line"
        )
    })?;
    Ok(())
}

/// Write an embedded sample tree to `dest` and make it a git repository with one
/// commit, so slaves can clone it without network.
fn materialize_sample(name: &str, dest: &Path) -> anyhow::Result<()> {
    let files = templates::sample(name).ok_or_else(|| {
        anyhow!(
            "sample {name:?} is not embedded in this autobot; known samples: {}",
            templates::SAMPLES.join(", ")
        )
    })?;
    for f in files {
        let path = dest.join(f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, f.contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if f.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    commit_sample(name, dest, files).with_context(|| {
        format!(
            "cannot make the {name} sample repository in {}",
            dest.display()
        )
    })
}

/// Make `dest` (holding `files`) a git repository whose `master` branch has one
/// commit of them, with gix: the master needs no git program for its demo.
fn commit_sample(name: &str, dest: &Path, files: &[templates::SampleFile]) -> anyhow::Result<()> {
    use gix::object::tree::EntryKind;
    let repo = gix::init(dest)?;
    let mut tree = repo.edit_tree(gix::ObjectId::empty_tree(repo.object_hash()))?;
    for f in files {
        let blob = repo.write_blob(f.contents)?;
        let kind = if f.executable {
            EntryKind::BlobExecutable
        } else {
            EntryKind::Blob
        };
        tree.upsert(f.path, kind, blob)?;
    }
    let tree = tree.write()?;
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let who = gix::actor::Signature {
        name: "autobot".into(),
        email: "autobot@localhost".into(),
        time: gix::date::Time {
            seconds: when,
            offset: 0,
        },
    };
    let mut buf = gix::date::parse::TimeBuf::default();
    let sig = who.to_ref(&mut buf);
    repo.commit_as(
        sig,
        sig,
        "refs/heads/master",
        format!("Import the {name} sample project"),
        tree.detach(),
        gix::commit::NO_PARENT_IDS,
    )?;
    // HEAD names the branch the projects build (gix's default would be `main`),
    // and the index matches the commit, so `git status` in the sample is clean.
    std::fs::write(dest.join(".git/HEAD"), "ref: refs/heads/master\n")?;
    let mut index = repo.index_from_tree(&tree)?;
    index.write(Default::default())?;
    Ok(())
}

/// Write a slave directory: slave.ini, info/admin, info/host, the systemd unit.
fn write_slave(dir: &Path, slave: &SlaveIni) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("info"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    write_private_file(
        &dir.join(config::slave::SLAVE_INI),
        slave.render().as_bytes(),
    )?;
    write_new_file(
        &dir.join("info/admin"),
        b"Your Name Here <admin@example.org>\n",
    )?;
    write_new_file(&dir.join("info/host"), host_info().as_bytes())?;
    // The unit names the final directory, not the staging one.
    let final_dir = final_path_of_staged(dir);
    write_new_file(
        &dir.join("autobot-slave.service"),
        templates::systemd_unit(&current_exe_string(), &final_dir, &slave.name).as_bytes(),
    )?;
    Ok(())
}

/// The absolute path a staged directory will have once renamed into place.
fn final_path_of_staged(stage_child: &Path) -> String {
    let abs = std::path::absolute(stage_child).unwrap_or_else(|_| stage_child.to_path_buf());
    let mut out = PathBuf::new();
    for comp in abs.components() {
        let s = comp.as_os_str().to_string_lossy();
        if let Some(rest) = s.strip_prefix('.') {
            if let Some(idx) = rest.find(".autobot-new-") {
                out.push(&rest[..idx]);
                continue;
            }
        }
        out.push(comp.as_os_str());
    }
    out.display().to_string()
}

fn write_new_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

/// Write a new file that holds secrets: readable and writable by its owner only
/// from the moment it exists (mode 0600 at creation, not chmod afterwards).
fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

pub(crate) fn current_exe_string() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "autobot".to_string())
}

/// A UTC timestamp for file headers, without a date crate.
fn now_string() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86400;
    let (y, m, d) = crate::calendar::civil_from_days(days as i64);
    let rem = secs % 86400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// What `info/host` says about this machine: OS, kernel, CPUs, memory, autobot.
pub fn host_info() -> String {
    let uts = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines().find_map(|l| {
            l.strip_prefix("MemTotal:")
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
    });
    let mem = mem_kib
        .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{host}: {os}; kernel {sys} {rel} {arch}; {cpus} CPUs; {mem} memory; autobot {ver}\n",
        host = field(|u| u.nodename()),
        sys = field(|u| u.sysname()),
        rel = field(|u| u.release()),
        arch = field(|u| u.machine()),
        ver = crate::VERSION,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_leaves_nothing_on_error() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("bot");
        let r = staged(&target, |stage| {
            std::fs::write(stage.join("x"), "y")?;
            bail!("boom")
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn final_path_strips_staging() {
        let p = Path::new("/a/.bot.autobot-new-42/slave");
        assert_eq!(final_path_of_staged(p), "/a/bot/slave");
    }

    #[test]
    fn host_info_mentions_autobot() {
        assert!(host_info().contains(crate::VERSION));
    }
}
