//! Files compiled into the binary, so that `autobot` works when copied alone.
//!
//! The bundled sample projects' sources (materialized by `create`/`create-master` as
//! local git repositories, so the first build needs no network), the `master.ini`
//! that `create-master` writes, and the systemd unit `create-slave` writes.

/// One file of an embedded sample tree.
pub struct SampleFile {
    /// Path relative to the sample's root.
    pub path: &'static str,
    pub contents: &'static [u8],
    /// Whether the file gets the executable bit (scripts such as `configure`).
    pub executable: bool,
}

macro_rules! sample_file {
    ($sample:literal, $path:literal, $exec:expr) => {
        SampleFile {
            path: $path,
            contents: include_bytes!(concat!("../templates/samples/", $sample, "/", $path)),
            executable: $exec,
        }
    };
}

const HELLO: &[SampleFile] = &[
    sample_file!("hello", "README", false),
    sample_file!("hello", "configure", true),
    sample_file!("hello", "Makefile.in", false),
    sample_file!("hello", "src/hello.c", false),
    sample_file!("hello", "tests/check.sh", true),
];

const PYHELLO: &[SampleFile] = &[
    sample_file!("pyhello", "README", false),
    sample_file!("pyhello", "setup.py", false),
    sample_file!("pyhello", "pyhello/__init__.py", false),
    sample_file!("pyhello", "tests/__init__.py", false),
    sample_file!("pyhello", "tests/test_greet.py", false),
];

/// The embedded sample tree a project names with `sample = NAME`.
pub fn sample(name: &str) -> Option<&'static [SampleFile]> {
    match name {
        "hello" => Some(HELLO),
        "pyhello" => Some(PYHELLO),
        _ => None,
    }
}

/// Names of every embedded sample.
pub const SAMPLES: &[&str] = &["hello", "pyhello"];

/// The values `create`/`create-master` put into a new `master.ini`.
#[derive(Debug, Clone)]
pub struct MasterVars {
    pub slave: String,
    pub os: String,
    pub passwd: String,
    /// Credentials `sendchange` and `POST /api/v1/changes` must present (random
    /// ones from `create`: there is no default pair).
    pub changeuser: String,
    pub changepassword: String,
    pub slaveport: u16,
    pub htmlport: u16,
    pub publichtmlport: u16,
    pub botname: String,
    pub irc_host: String,
    pub irc_channels: String,
    pub domain: String,
    pub recipients: String,
    pub debug: bool,
    /// Factories the slave runs, in the order given.
    pub factories: Vec<String>,
}

/// The text of a new `master.ini`: the master, one slave, and one section per
/// factory (empty sections start from the bundled or local project of that name).
pub fn master_ini(vars: &MasterVars, created: &str) -> String {
    let mut s = format!(
        "; master.ini — written by `autobot create-master` (autobot {version}) on {created}.\n\
         ; Every key is described in master.ini.example; check edits with\n\
         ; `autobot checkconfig .` and apply them with `autobot reconfig .`.\n\
         \n\
         [:master:]\n\
         ; port the slaves connect to (and `autobot sendchange` talks to)\n\
         slaveport = {slaveport}\n\
         ; the waterfall, JSON API and force-build forms\n\
         htmlport = {htmlport}\n\
         ; the same pages, read-only\n\
         publichtmlport = {publichtmlport}\n\
         ; seconds between polls of each repository\n\
         pollInterval = 60\n\
         ; seconds the tree must be quiet before a build starts\n\
         treeStable = 60\n\
         allowForce = true\n\
         botname = {botname}\n\
         ircHost = {irc_host}\n\
         ircChannels = {irc_channels}\n\
         domain = {domain}\n\
         recipients = {recipients}\n\
         debug = {debug}\n\
         ; autobot.log is rotated past logSize bytes, logCount old ones kept\n\
         logSize = 10000000\n\
         logCount = 10\n\
         ; who may submit Changes: `autobot sendchange --auth USER:PASSWORD` and\n\
         ; POST /api/v1/changes (HTTP Basic); without both keys Changes are refused\n\
         changeuser = {changeuser}\n\
         changepassword = {changepassword}\n\
         ; keys below are defaults for every [slave:NAME] section\n\
         password = {passwd}\n\
         \n\
         [slave:{slave}]\n\
         os = {os}\n\
         factories = {factories}\n",
        version = crate::VERSION,
        slaveport = vars.slaveport,
        htmlport = vars.htmlport,
        publichtmlport = vars.publichtmlport,
        botname = vars.botname,
        irc_host = vars.irc_host,
        irc_channels = vars.irc_channels,
        domain = vars.domain,
        recipients = vars.recipients,
        debug = vars.debug,
        passwd = vars.passwd,
        changeuser = vars.changeuser,
        changepassword = vars.changepassword,
        slave = vars.slave,
        os = vars.os,
        factories = vars.factories.join(" "),
    );
    for f in &vars.factories {
        s.push_str(&format!(
            "\n; factory {f}: starts from the project of that name; add keys to override it\n\
             ; (see `autobot list-factories --types` for each type's keys)\n\
             [{f}]\n"
        ));
    }
    s
}

/// A systemd user unit that starts the slave at boot (`create-slave` writes it).
pub fn systemd_unit(exe: &str, basedir: &str, name: &str) -> String {
    format!(
        "# systemd user unit for the autobot slave {name}, written by `autobot create-slave`.\n\
         # Install:  mkdir -p ~/.config/systemd/user && cp autobot-slave.service ~/.config/systemd/user/autobot-slave-{name}.service\n\
         #           systemctl --user enable --now autobot-slave-{name}.service\n\
         #           loginctl enable-linger \"$USER\"   # start at boot without a login\n\
         [Unit]\n\
         Description=autobot slave {name}\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={exe} run {basedir}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    )
}

/// The systemd unit of a master, written by `create-master` as
/// `autobot-master.service`: `systemctl reload` re-reads master.ini (SIGHUP);
/// `systemctl stop` stops it as `autobot stop` does. The paths are quoted for
/// systemd, so a directory with blanks works.
pub fn master_systemd_unit(exe: &str, basedir: &str) -> String {
    let name = std::path::Path::new(basedir)
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .replace(['\n', '\r', '%', '$', '/'], "_")
        })
        .unwrap_or_else(|| "master".into());
    // Comments and the description are one line each.
    let shown = basedir.replace(['\n', '\r'], "?");
    format!(
        "# systemd user unit for the autobot master in {shown}, written by `autobot create-master`.\n\
         # Install:  mkdir -p ~/.config/systemd/user && cp autobot-master.service ~/.config/systemd/user/autobot-master-{name}.service\n\
         #           systemctl --user enable --now autobot-master-{name}.service\n\
         #           loginctl enable-linger \"$USER\"   # start at boot without a login\n\
         # `systemctl --user reload` re-reads master.ini; to let running builds finish\n\
         # before stopping, use `autobot stop --clean DIR` (or `systemctl kill -s USR2`).\n\
         [Unit]\n\
         Description=autobot master {name}\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={} run {}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         TimeoutStopSec=60\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        systemd_quote(exe),
        systemd_quote(basedir)
    )
}

/// A word of a systemd `ExecStart=` line: quoted, with `\`, `"`, `$` and `%`
/// escaped as systemd reads them.
fn systemd_quote(word: &str) -> String {
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The crontab line that starts the slave at boot, for owners without systemd.
pub fn crontab_line(exe: &str, basedir: &str) -> String {
    format!("@reboot {exe} start {basedir}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_unit_quotes_its_paths() {
        let u = master_systemd_unit("/opt/auto bot/autobot", "/srv/ci $HOME/m\"x%");
        assert!(
            u.contains("ExecStart=\"/opt/auto bot/autobot\" run \"/srv/ci $$HOME/m\\\"x%%\"\n"),
            "{u}"
        );
        assert!(u.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    }

    #[test]
    fn every_sample_is_embedded() {
        for name in SAMPLES {
            let files = sample(name).unwrap();
            assert!(files.iter().all(|f| !f.contents.is_empty()), "{name}");
        }
        assert!(sample("nosuch").is_none());
    }

    #[test]
    fn master_ini_names_every_factory() {
        let vars = MasterVars {
            slave: "s1".into(),
            os: "linux".into(),
            passwd: "pw".into(),
            changeuser: "cu".into(),
            changepassword: "cpw".into(),
            slaveport: 1,
            htmlport: 2,
            publichtmlport: 3,
            botname: "b".into(),
            irc_host: String::new(),
            irc_channels: String::new(),
            domain: "localhost".into(),
            recipients: String::new(),
            debug: false,
            factories: vec!["hello".into(), "pyhello".into()],
        };
        let text = master_ini(&vars, "today");
        assert!(text.contains("[slave:s1]\nos = linux\nfactories = hello pyhello\n"));
        assert!(text.contains("\n[hello]\n") && text.contains("\n[pyhello]\n"));
        assert!(
            text.contains("\nchangeuser = cu\nchangepassword = cpw\n"),
            "{text}"
        );
    }
}
