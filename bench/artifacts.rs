//! Benchmark of issue 27's artifacts: one file of `--size-mb` MB (default 1000)
//! uploaded by a `type = upload` step from an autobot slave to the master, both
//! real daemons (`autobot start`, release build), measured from outside.
//!
//! Run with `cargo bench --bench artifacts` (`-- --size-mb 100` for a short
//! run). One `name value unit` line per figure:
//! * `artifact_upload_mb_per_s` — the file's size over the upload step's
//!   duration as the master recorded it (the slave reading the file, the link,
//!   the master writing, hashing and renaming it, and its row): budget ≥ 200;
//! * `artifact_master_rss_peak_mib` — the master's resident memory at its
//!   highest while it took the file in (sampled every 5 ms) and its `VmHWM`
//!   over its whole life: budget ≤ 64 MiB;
//! * `artifact_download_mb_per_s` — the file served back by the API, read by
//!   the bench and hashed; its SHA-256 is checked against the slave's file and
//!   the one the master recorded.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const SLAVE: &str = "s1";

/// Daemons started by the bench, stopped when it ends (or panics).
struct Daemons(Vec<PathBuf>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for d in self.0.drain(..).rev() {
            let _ = std::process::Command::new(&*EXE)
                .args(["stop", d.to_str().unwrap_or_default()])
                .output();
        }
    }
}

fn slave_dir(dir: &Path, port: u16) {
    std::fs::create_dir_all(dir.join("info")).unwrap();
    let dir = std::fs::canonicalize(dir).unwrap();
    std::fs::write(dir.join("info/admin"), "Artifact Bench <b@example.org>\n").unwrap();
    std::fs::write(dir.join("info/host"), "artifact-bench\n").unwrap();
    let ini = autobot::config::SlaveIni {
        basedir: dir.clone(),
        master_host: "127.0.0.1".into(),
        master_port: port,
        more_masters: Vec::new(),
        name: SLAVE.into(),
        password: "pw".into(),
        keepalive: 1,
        umask: 0o022,
        usepty: false,
    };
    std::fs::write(dir.join(autobot::config::slave::SLAVE_INI), ini.render()).unwrap();
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hash_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    hex(ctx.finish().as_ref())
}

fn json(port: u16, path: &str) -> Option<serde_json::Value> {
    get(port, path).and_then(|b| serde_json::from_str(&b).ok())
}

/// GET a file, hashing it as it streams: (bytes, sha256).
fn download(port: u16, path: &str) -> (u64, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut n_body = 0u64;
    let mut in_body = false;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if in_body {
            ctx.update(&buf[..n]);
            n_body += n as u64;
            continue;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = &head[i + 4..];
            ctx.update(rest);
            n_body += rest.len() as u64;
            in_body = true;
        }
    }
    (n_body, hex(ctx.finish().as_ref()))
}

fn main() {
    let size_mb = opt("--size-mb", 1000);
    let size = size_mb * 1_000_000;
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "# autobot {} artifacts bench; binary {}; {size_mb} MB",
        autobot::VERSION,
        *EXE
    );
    let (sp, hp) = (free_port(), free_port());
    let mdir = tmp.path().join("master");
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::write(
        mdir.join("master.ini"),
        format!(
            "[:master:]\nslaveport = {sp}\nhtmlport = {hp}\npublichtmlport = {}\npassword = pw\nfactories = *\nmaxArtifactSize = 2G\n\n\
             [slave:{SLAVE}]\n\n\
             [big]\ntype = shell\nstep.make = head -c {size} /dev/urandom > big.bin\n\
             step.up = big.bin\nstep.up.type = upload\n",
            free_port()
        ),
    )
    .unwrap();
    let sdir = tmp.path().join("slave");
    slave_dir(&sdir, sp);
    let mut daemons = Daemons(Vec::new());
    autobot(&["start", mdir.to_str().unwrap()]);
    daemons.0.push(mdir.clone());
    autobot(&["start", sdir.to_str().unwrap()]);
    daemons.0.push(sdir.clone());
    wait_until("the slave connects", Duration::from_secs(60), || {
        connected_count(hp) == 1
    });
    let pid = pid_of(&mdir);
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(status_kib(pid, "VmRSS"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let builder = format!("big-{SLAVE}");
    let (status, _) = KeepAlive::connect(hp).post_json(
        &format!("/api/v1/builders/{builder}/force"),
        &serde_json::json!({"reason": "artifact bench"}),
    );
    assert!(status == 200 || status == 202, "force: HTTP {status}");
    let build_path = format!("/api/v1/builders/{builder}/builds/1");
    wait_until("the build finishes", Duration::from_secs(600), || {
        json(hp, &build_path).is_some_and(|b| !b["result"].is_null())
    });
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let b = json(hp, &build_path).unwrap();
    assert_eq!(b["result"], "success", "{b:#}");
    let up = b["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "up"))
        .expect("the upload step")
        .clone();
    let took = up["finished_at"].as_f64().unwrap() - up["started_at"].as_f64().unwrap();
    let want = hash_file(&sdir.join(format!("{builder}/build/big.bin")));
    let list = json(hp, &format!("{build_path}/artifacts")).unwrap();
    assert_eq!(list[0]["sha256"].as_str(), Some(want.as_str()), "{list:#}");
    report(
        "artifact_upload_mb_per_s",
        size as f64 / 1e6 / took,
        "MB/s",
        None,
        false,
    );
    report(
        "artifact_master_rss_peak_mib",
        mib(peak.load(Ordering::Relaxed)),
        "MiB",
        None,
        true,
    );
    report(
        "artifact_master_vmhwm_mib",
        mib(status_kib(pid, "VmHWM")),
        "MiB",
        None,
        true,
    );
    let t0 = Instant::now();
    let (n, sha) = download(hp, &format!("{build_path}/artifacts/big.bin"));
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(n, size);
    assert_eq!(sha, want);
    report(
        "artifact_download_mb_per_s",
        size as f64 / 1e6 / secs,
        "MB/s",
        None,
        false,
    );
    drop(daemons);
}
