//! Files compiled into the binary, so that `autobot` works when copied alone.
//!
//! The files autobot writes, kept as files under `templates/` and included with
//! `include_str!`/`include_bytes!`: the bundled sample projects' sources
//! (`templates/samples/`, materialized by `create`/`create-master` as local git
//! repositories, so the first build needs no network), and `master.ini`,
//! `slave.ini` and the master's and slave's systemd units (`templates/files/`,
//! with `{name}` placeholders that [`fill`] replaces). The web pages' assets are
//! not written anywhere; they live in `assets/` beside the web code's `include_str!`.

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
    /// The ports as `master.ini` takes them: `8010` or `127.0.0.1:8010`.
    pub slaveport: String,
    pub htmlport: String,
    pub publichtmlport: String,
    pub botname: String,
    pub irc_host: String,
    pub irc_channels: String,
    pub domain: String,
    pub recipients: String,
    pub debug: bool,
    /// Factories the slave runs, in the order given.
    pub factories: Vec<String>,
}

/// The `master.ini` `create-master` writes, with `{name}` placeholders.
const MASTER_INI: &str = include_str!("../templates/files/master.ini");
/// The section `create-master` appends to `master.ini` for each factory.
const MASTER_FACTORY: &str = include_str!("../templates/files/master-factory.ini");
/// The `slave.ini` `create-slave` writes.
pub const SLAVE_INI: &str = include_str!("../templates/files/slave.ini");
/// The slave's systemd unit `create-slave` writes.
const SLAVE_UNIT: &str = include_str!("../templates/files/autobot-slave.service");
/// The master's systemd unit `create-master` writes.
const MASTER_UNIT: &str = include_str!("../templates/files/autobot-master.service");

/// `text` with each `{name}` placeholder replaced by its value from `vars`, in one
/// pass: a value's own braces are copied, never read as placeholders. A brace
/// that opens no known placeholder is copied as written (the tests check that
/// every template is filled completely).
pub fn fill(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v, close))
        });
        match value {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text of a new `master.ini`: the master, one slave, and one section per
/// factory (empty sections start from the bundled or local project of that name).
pub fn master_ini(vars: &MasterVars, created: &str) -> String {
    let ports = [&vars.slaveport, &vars.htmlport, &vars.publichtmlport];
    let debug = vars.debug.to_string();
    let factories = vars.factories.join(" ");
    let mut s = fill(
        MASTER_INI,
        &[
            ("version", crate::VERSION),
            ("created", created),
            ("slaveport", ports[0]),
            ("htmlport", ports[1]),
            ("publichtmlport", ports[2]),
            ("botname", &vars.botname),
            ("irc_host", &vars.irc_host),
            ("irc_channels", &vars.irc_channels),
            ("domain", &vars.domain),
            ("recipients", &vars.recipients),
            ("debug", &debug),
            ("changeuser", &vars.changeuser),
            ("changepassword", &vars.changepassword),
            ("passwd", &vars.passwd),
            ("slave", &vars.slave),
            ("os", &vars.os),
            ("factories", &factories),
        ],
    );
    for f in &vars.factories {
        s.push_str(&fill(MASTER_FACTORY, &[("factory", f)]));
    }
    s
}

/// A systemd user unit that starts the slave at boot (`create-slave` writes it).
pub fn systemd_unit(exe: &str, basedir: &str, name: &str) -> String {
    fill(
        SLAVE_UNIT,
        &[("name", name), ("exec", exe), ("basedir", basedir)],
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
    fill(
        MASTER_UNIT,
        &[
            ("shown", &shown),
            ("name", &name),
            ("exec", &systemd_quote(exe)),
            ("basedir", &systemd_quote(basedir)),
        ],
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

    /// The values `create` would pass, for `factories`.
    fn vars(factories: &[&str]) -> MasterVars {
        MasterVars {
            slave: "s1".into(),
            os: "linux".into(),
            passwd: "pw".into(),
            changeuser: "cu".into(),
            changepassword: "cpw".into(),
            slaveport: "1".into(),
            htmlport: "2".into(),
            publichtmlport: "3".into(),
            botname: "b".into(),
            irc_host: String::new(),
            irc_channels: String::new(),
            domain: "localhost".into(),
            recipients: String::new(),
            debug: false,
            factories: factories.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn fill_replaces_known_placeholders_once_and_keeps_other_braces() {
        assert_eq!(
            fill("a {x} b {y} {z", &[("x", "{y}"), ("y", "2")]),
            "a {y} b 2 {z"
        );
        assert_eq!(fill("{unknown}", &[]), "{unknown}");
    }

    #[test]
    fn every_template_is_filled_completely() {
        let vars = vars(&["hello"]);
        for text in [
            master_ini(&vars, "today"),
            systemd_unit("/bin/autobot", "/srv/s", "s1"),
            master_systemd_unit("/bin/autobot", "/srv/m"),
        ] {
            assert!(!text.contains('{') && !text.contains('}'), "{text}");
        }
        let unit = systemd_unit("/bin/autobot", "/srv/s", "s1");
        assert!(
            unit.contains("ExecStart=/bin/autobot run /srv/s\n"),
            "{unit}"
        );
        assert!(unit.contains("autobot-slave-s1.service"), "{unit}");
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
        let vars = vars(&["hello", "pyhello"]);
        let text = master_ini(&vars, "today");
        assert!(text.contains("[slave:s1]\nos = linux\nfactories = hello pyhello\n"));
        assert!(text.contains("\n[hello]\n") && text.contains("\n[pyhello]\n"));
        assert!(
            text.contains("\nchangeuser = cu\nchangepassword = cpw\n"),
            "{text}"
        );
    }
}
