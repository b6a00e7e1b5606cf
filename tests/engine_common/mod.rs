//! Helpers shared by the engine tests (`tests/engine_*.rs`): a real master with a
//! given `master.ini` on free ports, real autobot slaves (in-process or as child
//! processes), and waits on the engine and the database with deadlines.
//!
//! Include with `#[path = "engine_common/mod.rs"] mod engine_common;` after
//! `#[path = "support/mod.rs"] mod support;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use autobot::app::{Master, MasterOptions};
use autobot::db::builds::BuildDetail;
use autobot::db::requests::BuildRequestRow;
use autobot::engine::{Engine, ForceRequest};

use crate::support;

/// How long any wait may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The slave every engine test uses.
pub const SLAVE: &str = "s1";
pub const PASSWORD: &str = "pw-engine";

/// `[:master:]` and one slave, then `factories` (factory sections as written).
pub fn master_ini(factories: &str, extra_master: &str) -> String {
    format!(
        "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = {PASSWORD}\nfactories = *\n{extra_master}\n\
         [slave:{SLAVE}]\n\n{factories}\n"
    )
}

/// A master started in-process in a temp directory.
pub struct EngineMaster {
    pub dir: tempfile::TempDir,
    pub master: Master,
}

impl EngineMaster {
    pub async fn start(ini: &str, keepalive: Duration) -> EngineMaster {
        support::capture_logs();
        let dir = tempfile::tempdir().unwrap();
        crate::support::write_master_ini(dir.path(), ini);
        let master = start_master(dir.path(), keepalive).await;
        EngineMaster { dir, master }
    }

    pub fn engine(&self) -> &Engine {
        self.master.engine()
    }

    /// An autobot slave in-process, connected.
    pub async fn slave(&self) -> support::SlaveProc {
        let sdir = self.dir.path().join("slave");
        let s = support::Impl::Autobot
            .start(&sdir, self.master.slaveport(), SLAVE, PASSWORD)
            .await
            .unwrap();
        self.master
            .registry()
            .wait_connected(SLAVE, DEADLINE)
            .await
            .expect("slave connects");
        s
    }

    /// A stock buildbot-worker in `DIR/worker`, connected; `None` when it cannot
    /// run here (after [`support::skip`], which fails under `CI=true`).
    pub async fn worker(&self) -> Option<support::SlaveProc> {
        let sdir = self.dir.path().join("worker");
        let w = match support::Impl::BuildbotWorker
            .start(&sdir, self.master.slaveport(), SLAVE, PASSWORD)
            .await
        {
            Ok(w) => w,
            Err(why) => {
                support::skip(&why);
                return None;
            }
        };
        self.master
            .registry()
            .wait_connected(SLAVE, DEADLINE)
            .await
            .expect("buildbot-worker connects");
        Some(w)
    }

    pub async fn force(&self, builder: &str, req: ForceRequest) -> i64 {
        self.engine().force(builder, req).await.unwrap().request_id
    }

    /// Wait for a request's result; fails the test after the deadline.
    pub async fn wait_request(&self, id: i64) -> BuildRequestRow {
        tokio::time::timeout(DEADLINE, self.engine().wait_request(id))
            .await
            .expect("request completes in time")
            .unwrap()
    }

    pub async fn build(&self, builder: &str, number: i64) -> BuildDetail {
        self.master
            .db()
            .build(builder, number)
            .await
            .unwrap()
            .unwrap()
    }

    /// The text of a step's stdio log.
    pub async fn log_text(&self, builder: &str, number: i64, step: &str) -> String {
        let f = self
            .master
            .db()
            .log_file(builder, number, step, "stdio")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no log for step {step}"));
        String::from_utf8_lossy(&std::fs::read(&f.path).unwrap()).into_owned()
    }
}

pub async fn start_master(dir: &Path, keepalive: Duration) -> Master {
    Master::start_with(
        dir,
        MasterOptions {
            keepalive_interval: Some(keepalive),
            slaveport: Some(0),
            htmlport: Some(0),
            publichtmlport: None,
        },
    )
    .await
    .unwrap()
}

/// Poll `cond` (async) until it holds; panics after the deadline.
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `autobot` binary built for the tests.
pub fn autobot_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_autobot"))
}

/// A child process in its own process group, killed (whole group) when dropped.
pub struct Daemon(pub Child);

impl Daemon {
    pub fn pgid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.0.id() as i32)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill9(self);
    }
}

/// `autobot run DIR` as a child in its own process group; its output goes to
/// `DIR/run.log`.
pub fn spawn_run(dir: &Path) -> Daemon {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("run.log"))
        .unwrap();
    let mut cmd = Command::new(autobot_bin());
    cmd.arg("run").arg(dir);
    cmd.stdin(std::process::Stdio::null());
    cmd.stdout(log.try_clone().unwrap());
    cmd.stderr(log);
    autobot::daemon::new_session(&mut cmd);
    Daemon(cmd.spawn().unwrap())
}

/// SIGKILL a child's whole process group (waking it if stopped) and reap it.
pub fn kill9(d: &mut Daemon) {
    let pgid = d.pgid();
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGCONT);
    let _ = d.0.wait();
}

/// A slave directory (slave.ini with a 1 s keepalive, so it reconnects fast)
/// pointing at `port`, for `autobot run DIR` as a child process.
pub fn slave_dir(dir: &Path, port: u16) {
    std::fs::create_dir_all(dir.join("info")).unwrap();
    let dir = std::fs::canonicalize(dir).unwrap();
    std::fs::write(dir.join("info/admin"), "Engine Test <e@example.org>\n").unwrap();
    std::fs::write(dir.join("info/host"), "engine-test\n").unwrap();
    let ini = autobot::config::SlaveIni {
        basedir: dir.clone(),
        master_host: "127.0.0.1".into(),
        master_port: port,
        more_masters: Vec::new(),
        name: SLAVE.into(),
        password: PASSWORD.into(),
        keepalive: 1,
        umask: 0o022,
        usepty: false,
    };
    std::fs::write(dir.join(autobot::config::slave::SLAVE_INI), ini.render()).unwrap();
}

/// A `shell` factory whose step strings mean what Buildbot says: run through
/// `/bin/sh -c` (pipes, `&&`, redirections), or as an argv with `argv = true`
/// (and the older `shell = false`), where `|` is just an argument. Checked by
/// [`check_pipes`] on every kind of slave.
pub const PIPES: &str = r#"
[pipes]
type = shell
step.count = yes X | head -c 100 | wc -c
step.test = printf 'check: ok\n' | tee out.txt
step.read = test -s out.txt && cat out.txt > copy.txt && cat copy.txt
step.prop = echo "got: %(custom)s" | tr a-z A-Z
step.words = echo a | b
step.words.argv = true
step.oldwords = echo c && d
step.oldwords.shell = false
step.propargv = echo %(custom)s |
step.propargv.argv = true
"#;

/// Force `builder` (made from [`PIPES`]) with a property that would be code if it
/// were spliced into the script, and check what each step printed.
pub async fn check_pipes(m: &EngineMaster, builder: &str, pwned: &Path) {
    let mut props = std::collections::BTreeMap::new();
    let value = format!(
        "x; touch {p} $(touch {p}) `touch {p}` '\"",
        p = pwned.display()
    );
    props.insert("custom".to_string(), value.clone());
    let id = m
        .force(
            builder,
            ForceRequest {
                reason: "pipes".into(),
                properties: props,
                ..Default::default()
            },
        )
        .await;
    let req = m.wait_request(id).await;
    let b = m.build(builder, 1).await;
    assert_eq!(req.result.as_deref(), Some("success"), "{:#?}", b.steps);
    let count = m.log_text(builder, 1, "count").await;
    assert!(
        count.lines().any(|l| l.trim() == "100"),
        "`yes X | head -c 100 | wc -c` printed: {count}"
    );
    assert!(m.log_text(builder, 1, "test").await.contains("check: ok\n"));
    assert!(m.log_text(builder, 1, "read").await.contains("check: ok\n"));
    let prop = m.log_text(builder, 1, "prop").await;
    assert!(
        prop.contains(&format!("GOT: {}\n", value.to_uppercase())),
        "{prop}"
    );
    assert!(m.log_text(builder, 1, "words").await.contains("a | b\n"));
    assert!(m
        .log_text(builder, 1, "oldwords")
        .await
        .contains("c && d\n"));
    let propargv = m.log_text(builder, 1, "propargv").await;
    assert!(propargv.contains(&format!("{value} |\n")), "{propargv}");
    assert!(!pwned.exists(), "a property value ran as shell code");
}
