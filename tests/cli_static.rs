//! The installed binary is one static file that works alone: `ldd` calls it static,
//! it has no ELF interpreter, and a copy of it in an otherwise empty directory,
//! run with an empty environment (`env -i`), creates a master and a slave, starts
//! them (the slave finds the master by a name from `/etc/hosts`), and builds the
//! hello sample green, recorded as forced by the user `/etc/passwd` names.
//!
//! The binary is the one `scripts/install.sh` built and installed: the test never
//! makes a release build itself. `scripts/test.sh` (so CI) installs it under the
//! target directory and points `AUTOBOT_STATIC_BIN` at it; without that variable
//! the test prints SKIP, and fails under `CI=true`.

#[path = "support/mod.rs"]
mod support;

use support::cli::free_ports;

use std::path::Path;
use std::process::{Command, Output};

/// The variable that names the installed binary.
const VAR: &str = "AUTOBOT_STATIC_BIN";

/// Whether an ELF file asks for a program interpreter (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

/// A name other than `localhost` that /etc/hosts maps to a loopback address.
fn hosts_name() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|l| {
        let l = l.split('#').next()?;
        let mut words = l.split_whitespace();
        let addr = words.next()?;
        if !addr.starts_with("127.") {
            return None;
        }
        words.find(|w| *w != "localhost").map(str::to_string)
    })
}

/// Run the copy `./autobot ARGS` in `dir` with nothing in its environment.
fn run_alone(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("env")
        .arg("-i")
        .arg("./autobot")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    eprintln!(
        "./autobot {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_installed_binary_is_static_and_works_alone() {
    let Some(bin) = std::env::var_os(VAR) else {
        support::skip(&format!(
            "{VAR} is not set: it names the binary scripts/install.sh installed (scripts/test.sh sets it)"
        ));
        return;
    };
    if !support::need_tools(&[
        ("git", "apt-get install git"),
        ("cc", "apt-get install gcc"),
        ("make", "apt-get install make"),
        ("ldd", "apt-get install libc-bin"),
    ]) {
        return;
    }
    let bin = Path::new(&bin);
    let elf = std::fs::read(bin).unwrap_or_else(|e| panic!("{VAR}={}: {e}", bin.display()));
    assert!(
        !has_interpreter(&elf),
        "{} has an ELF interpreter",
        bin.display()
    );
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "ldd {}: {said}",
        bin.display()
    );

    // A copy alone in an empty directory.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(bin, dir.join("autobot")).unwrap();
    let [slaveport, htmlport, publicport] = free_ports();
    let master_host = hosts_name().unwrap_or_else(|| "localhost".into());
    let out = run_alone(
        dir,
        &[
            "create",
            "bot",
            "-f",
            "hello",
            "--master",
            &master_host,
            "--slaveport",
            &slaveport.to_string(),
            "--htmlport",
            &htmlport.to_string(),
            "--publichtmlport",
            &publicport.to_string(),
        ],
    );
    assert!(out.status.success());
    let slave_ini = std::fs::read_to_string(dir.join("bot/slave/slave.ini")).unwrap();
    assert!(
        slave_ini.contains(&format!("master = {master_host}:{slaveport}")),
        "{slave_ini}"
    );
    assert!(run_alone(dir, &["start", "bot"]).status.success());
    let forced = run_alone(dir, &["force", "bot", "hello-slave", "--wait"]);
    let stopped = run_alone(dir, &["stop", "bot"]);
    assert!(
        forced.status.success(),
        "the build failed; master log:\n{}",
        std::fs::read_to_string(dir.join("bot/master/autobot.log")).unwrap_or_default()
    );
    assert!(stopped.status.success());
    let text = String::from_utf8_lossy(&forced.stdout);
    assert!(text.contains("hello-slave build 1: success"), "{text}");

    // Forced with no $USER: the name comes from /etc/passwd through the static
    // binary's own user lookup.
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid).unwrap().unwrap().name;
    let db = rusqlite::Connection::open(dir.join("bot/master/state.sqlite")).unwrap();
    let reason: String = db
        .query_row("SELECT reason FROM builds WHERE number = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        reason.contains(&user),
        "build reason {reason:?} names no {user:?}"
    );
}
