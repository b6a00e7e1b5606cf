//! Artifacts end to end, on a real master with an autobot slave and with a
//! stock buildbot-worker: `type = upload`, `upload-dir` and `download` steps
//! and the `artifacts = GLOB...` key (also after a step that halted the
//! build), listed by the API and on the build page, downloaded byte-exact
//! (SHA-256 compared) with `Range` and `ETag`; an upload over
//! `maxArtifactSize` refused with nothing left; `..`, absolute paths and
//! symlinks refused on both sides; the retention pass deleting old artifacts;
//! the latest-successful URL; and a 200 MB artifact through a master running
//! as its own process, its resident memory sampled and bounded.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autobot::engine::ForceRequest;
use engine_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response read whole, or hashed as it streams.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    len: u64,
    sha256: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// One request; the body is kept when `keep`, always counted and hashed.
async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    keep: bool,
) -> Reply {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the headers");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    assert!(
        !chunked || keep,
        "a streamed file is sent with a Content-Length"
    );
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut kept = Vec::new();
    let mut len = 0u64;
    let mut take = |b: &[u8]| {
        ctx.update(b);
        len += b.len() as u64;
        if keep {
            kept.extend_from_slice(b);
        }
    };
    take(&buf[header_end + 4..]);
    loop {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("body in time")
            .unwrap();
        if n == 0 {
            break;
        }
        take(&chunk[..n]);
    }
    let mut body = kept;
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
        len,
        sha256: hex(ctx.finish().as_ref()),
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = body.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&body[..i]).trim(), 16).unwrap_or(0);
        let rest = &body[i + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = &rest[n..];
        if body.starts_with(b"\r\n") {
            body = &body[2..];
        }
    }
    out
}

async fn get(port: u16, path: &str) -> Reply {
    request(port, "GET", path, &[], b"", true).await
}

const FACTORIES: &str = r#"
[arts]
type = shell
maxArtifactSize = 1M
artifacts = out/*.txt nothing/*.zip
step.make = mkdir -p out sub/deep && printf one > out/a.txt && printf two > out/b.txt && head -c 3000 /dev/urandom > blob.bin && printf deep > sub/deep/d.txt && printf top > sub/t.txt && head -c 2000000 /dev/zero > big.bin
step.blob = blob.bin bin/blob.bin
step.blob.type = upload
step.tree = sub tree
step.tree.type = upload-dir
step.get = %(buildername)s/%(buildnumber)s/bin/blob.bin got/blob.bin
step.get.type = download
step.get.mode = 0750
step.cmp = cmp got/blob.bin blob.bin && test -x got/blob.bin
step.over = big.bin
step.over.type = upload
step.over.haltOnFailure = true
step.never = echo never ran

[ok]
type = shell
step.make = printf "%(buildnumber)s" > v.txt
step.keep = v.txt
step.keep.type = upload

[escape]
type = shell
step.make = printf x > fine.txt
step.prop = %(evil)s
step.prop.type = upload
step.dest = fine.txt %(evil)s
step.dest.type = upload
step.down = %(evil)s x.txt
step.down.type = download

[links]
type = shell
step.make = ln -sf /etc/passwd pw && ln -sfn /etc etcdir
step.link = pw
step.link.type = upload
step.linkdir = etcdir/passwd
step.linkdir.type = upload
step.dirlink = etcdir
step.dirlink.type = upload-dir
"#;

fn force_req(props: &[(&str, &str)]) -> ForceRequest {
    ForceRequest {
        reason: "artifacts".into(),
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

fn step_results(b: &autobot::db::builds::BuildDetail) -> Vec<(String, Option<String>)> {
    b.steps
        .iter()
        .map(|s| (s.name.clone(), s.result.clone()))
        .collect()
}

/// The `arts` factory's build on whichever slave is connected, checked through
/// the database, the API and the build page.
async fn check_arts(m: &EngineMaster, slave_builder_dir: &Path) {
    let builder = format!("arts-{SLAVE}");
    let id = m.force(&builder, force_req(&[])).await;
    let req = m.wait_request(id).await;
    let b = m.build(&builder, 1).await;
    let results = step_results(&b);
    assert_eq!(req.result.as_deref(), Some("failure"), "{results:?}");
    let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    // `over` halted the build: `never` did not run, `artifacts` did.
    assert_eq!(
        names,
        ["make", "blob", "tree", "get", "cmp", "over", "artifacts"],
        "{results:?}"
    );
    let r = |name: &str| {
        results
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, r)| r.clone())
            .unwrap_or_default()
    };
    for s in ["make", "blob", "tree", "get", "cmp"] {
        assert_eq!(r(s), "success", "{s}: {}", m.log_text(&builder, 1, s).await);
    }
    assert_eq!(r("over"), "failure");
    let over = m.log_text(&builder, 1, "over").await;
    assert!(over.contains("larger than maxArtifactSize"), "{over}");
    // A glob that matches nothing is a warning, not a failure.
    assert_eq!(r("artifacts"), "warnings");
    let log = m.log_text(&builder, 1, "artifacts").await;
    assert!(log.contains("nothing/*.zip matches no file"), "{log}");

    // Nothing of the refused upload is left: no row, no file, no temporary.
    let dir = m.dir.path().join("artifacts").join(&builder).join("1");
    let mut on_disk = Vec::new();
    walk(&dir, "", &mut on_disk);
    on_disk.sort();
    assert_eq!(
        on_disk,
        [
            "bin/blob.bin",
            "out/a.txt",
            "out/b.txt",
            "tree/deep/d.txt",
            "tree/t.txt"
        ]
    );
    let blob = std::fs::read(slave_builder_dir.join("build/blob.bin")).unwrap();

    // The API lists them with size and hash.
    let port = m.master.htmlport();
    let list = get(
        port,
        &format!("/api/v1/builders/{builder}/builds/1/artifacts"),
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    let paths: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, on_disk);
    let entry = &list[0];
    assert_eq!(entry["size"], 3000);
    assert_eq!(entry["sha256"].as_str().unwrap(), sha256(&blob));
    let url = entry["url"].as_str().unwrap().to_string();

    // Byte-exact, with the headers of a download.
    let f = get(port, &url).await;
    assert_eq!(f.status, 200);
    assert_eq!(f.body, blob);
    assert_eq!(f.header("content-type"), Some("application/octet-stream"));
    assert_eq!(f.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(f.header("content-length"), Some("3000"));
    assert!(f
        .header("content-disposition")
        .is_some_and(|d| d.starts_with("attachment; filename=\"blob.bin\"")));
    let etag = format!("\"{}\"", sha256(&blob));
    assert_eq!(f.header("etag"), Some(etag.as_str()));
    let nm = request(port, "GET", &url, &[("If-None-Match", &etag)], b"", true).await;
    assert_eq!(nm.status, 304);
    // A Range.
    let part = request(port, "GET", &url, &[("Range", "bytes=100-199")], b"", true).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &blob[100..200]);
    assert_eq!(part.header("content-range"), Some("bytes 100-199/3000"));
    let tail = request(port, "GET", &url, &[("Range", "bytes=-10")], b"", true).await;
    assert_eq!(tail.body, &blob[2990..]);
    let bad = request(port, "GET", &url, &[("Range", "bytes=5000-")], b"", true).await;
    assert_eq!(bad.status, 416);
    assert_eq!(bad.header("content-range"), Some("bytes */3000"));
    let t = get(
        port,
        &format!("/api/v1/builders/{builder}/builds/1/artifacts/tree/deep/d.txt"),
    )
    .await;
    assert_eq!(t.body, b"deep");
    for missing in [
        "big.bin",
        "nope",
        "..%2F..%2Fstate.sqlite",
        "%2Fetc%2Fpasswd",
    ] {
        let r = get(
            port,
            &format!("/api/v1/builders/{builder}/builds/1/artifacts/{missing}"),
        )
        .await;
        assert!(
            r.status == 404 || r.status == 400,
            "{missing}: {}",
            r.status
        );
    }

    // The build page lists them with links.
    let page = get(port, &format!("/builders/{builder}/builds/1")).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("<h2>Artifacts</h2>"), "{html}");
    assert!(html.contains(&url), "{html}");
    assert!(html.contains(&sha256(&blob)));
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), &rel, out);
        } else {
            out.push(rel);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_on_an_autobot_slave() {
    let m = EngineMaster::start(&master_ini(FACTORIES, ""), Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let sdir = m.dir.path().join("slave");
    check_arts(&m, &sdir.join(format!("arts-{SLAVE}"))).await;
    let port = m.master.htmlport();

    // Escapes, refused on both sides: a slave path with `..` or absolute, or
    // through a symlink leaving the basedir; a master path with `..` or
    // absolute.
    let escape = format!("escape-{SLAVE}");
    for (i, evil) in ["../../../../../../etc/passwd", "/etc/passwd"]
        .iter()
        .enumerate()
    {
        let id = m.force(&escape, force_req(&[("evil", evil)])).await;
        m.wait_request(id).await;
        let n = i as i64 + 1;
        let b = m.build(&escape, n).await;
        for (name, r) in step_results(&b) {
            if name == "make" {
                assert_eq!(r.as_deref(), Some("success"));
            } else {
                assert_eq!(
                    r.as_deref(),
                    Some("failure"),
                    "{evil}: step {name}: {}",
                    m.log_text(&escape, n, &name).await
                );
            }
        }
        assert!(m
            .log_text(&escape, n, "prop")
            .await
            .contains("artifact path"));
        let list = get(
            port,
            &format!("/api/v1/builders/{escape}/builds/{n}/artifacts"),
        )
        .await;
        assert_eq!(list.json(), serde_json::json!([]));
    }
    assert!(!m.dir.path().join("passwd").exists());
    assert!(!m.dir.path().join("x.txt").exists());
    // Symlinks out of the slave's basedir are refused by the autobot slave.
    let links = format!("links-{SLAVE}");
    let id = m.force(&links, force_req(&[])).await;
    assert_eq!(m.wait_request(id).await.result.as_deref(), Some("failure"));
    let b = m.build(&links, 1).await;
    for (name, r) in step_results(&b) {
        let want = if name == "make" { "success" } else { "failure" };
        assert_eq!(
            r.as_deref(),
            Some(want),
            "{name}: {}",
            m.log_text(&links, 1, &name).await
        );
    }
    let list = get(
        port,
        &format!("/api/v1/builders/{links}/builds/1/artifacts"),
    )
    .await;
    assert_eq!(list.json(), serde_json::json!([]));
    let mut left = Vec::new();
    if m.dir.path().join("artifacts").join(&escape).exists() {
        walk(&m.dir.path().join("artifacts").join(&escape), "", &mut left);
    }
    assert!(left.is_empty(), "{left:?}");

    // The latest-successful URL follows the newest green build.
    let ok = format!("ok-{SLAVE}");
    for n in 1..=2 {
        let id = m.force(&ok, force_req(&[])).await;
        assert_eq!(m.wait_request(id).await.result.as_deref(), Some("success"));
        let _ = n;
    }
    let latest = format!("/api/v1/builders/{ok}/builds/latest-successful/artifacts/v.txt");
    let r = get(port, &latest).await;
    assert_eq!(r.status, 302);
    let loc = r.header("location").unwrap().to_string();
    assert_eq!(
        loc,
        format!("/api/v1/builders/{ok}/builds/2/artifacts/v.txt")
    );
    assert_eq!(get(port, &loc).await.body, b"2");
    assert_eq!(
        get(
            port,
            &format!("/api/v1/builders/{ok}/builds/latest-successful/artifacts/none")
        )
        .await
        .status,
        404
    );

    // The retention pass deletes the artifacts of builds past artifactHorizon:
    // rows and files.
    let retention = autobot::config::Retention {
        artifact_horizon: Some(1e-9),
        ..Default::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let stats = autobot::retention::pass(m.master.db(), m.dir.path(), &retention, &rx)
        .await
        .unwrap();
    assert_eq!(stats.artifact_builds_deleted, 3, "{stats:?}");
    assert!(!m
        .dir
        .path()
        .join("artifacts")
        .join(format!("arts-{SLAVE}"))
        .exists());
    let list = get(
        port,
        &format!("/api/v1/builders/arts-{SLAVE}/builds/1/artifacts"),
    )
    .await;
    assert_eq!(list.json(), serde_json::json!([]));
    assert_eq!(get(port, &latest).await.status, 404);
    // The builds stay.
    assert_eq!(
        m.build(&ok, 2).await.build.result.as_deref(),
        Some("success")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_on_a_buildbot_worker() {
    let m = EngineMaster::start(&master_ini(FACTORIES, ""), Duration::from_secs(30)).await;
    let sdir = m.dir.path().join("worker");
    let Some(_worker) = m.worker().await else {
        return;
    };
    check_arts(&m, &sdir.join(format!("arts-{SLAVE}"))).await;
    // The master side refuses `..` and absolute paths whatever the slave.
    let escape = format!("escape-{SLAVE}");
    let id = m
        .force(&escape, force_req(&[("evil", "../../../../etc/passwd")]))
        .await;
    m.wait_request(id).await;
    let b = m.build(&escape, 1).await;
    for (name, r) in step_results(&b) {
        if ["prop", "dest", "down"].contains(&name.as_str()) {
            assert_eq!(r.as_deref(), Some("failure"), "{name}");
        }
    }
    assert!(!m.dir.path().join("passwd").exists());
}

/// `VmRSS` of a process, in bytes.
fn rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

const BIG: u64 = 200_000_000;

/// Most the master may hold resident while it takes in and serves a 200 MB
/// artifact (a debug build; the budget of bench/artifacts.rs is 64 MiB in
/// release).
const RSS_BOUND: u64 = 96 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_artifact_goes_through_a_master_of_bounded_memory() {
    support::capture_logs();
    let root = tempfile::tempdir().unwrap();
    let mdir = root.path().join("master");
    std::fs::create_dir_all(&mdir).unwrap();
    let (sp, hp) = (free_port(), free_port());
    let factory = format!(
        "[big]\ntype = shell\nstep.make = head -c {BIG} /dev/urandom > big.bin\nstep.up = big.bin\nstep.up.type = upload\n"
    );
    let ini = master_ini(&factory, "").replace(
        "slaveport = 9010\nhtmlport = 8010",
        &format!("slaveport = {sp}\nhtmlport = {hp}"),
    );
    support::write_master_ini(&mdir, ini);
    let master = spawn_run(&mdir);
    let pid = master.0.id();
    let _slave = support::Impl::Autobot
        .start(&root.path().join("slave"), sp, SLAVE, PASSWORD)
        .await
        .unwrap();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(r) = rss(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let builder = format!("big-{SLAVE}");
    // The master's web port answers once it is up.
    wait_until("the master's web port", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", hp))
            .await
            .is_ok()
    })
    .await;
    let base_rss = rss(pid).unwrap();
    let forced = request(
        hp,
        "POST",
        &format!("/api/v1/builders/{builder}/force"),
        &[("Content-Type", "application/json")],
        br#"{"reason": "big"}"#,
        true,
    )
    .await;
    assert!(
        forced.status == 200 || forced.status == 202,
        "{}",
        forced.text()
    );
    let build = format!("/api/v1/builders/{builder}/builds/1");
    let started = std::time::Instant::now();
    wait_until("the big build finishes", || async {
        let r = get(hp, &build).await;
        r.status == 200 && !r.json()["result"].is_null()
    })
    .await;
    let took = started.elapsed();
    let b = get(hp, &build).await.json();
    assert_eq!(b["result"], "success", "{b:#}");
    let slave_file = root.path().join(format!("slave/{builder}/build/big.bin"));
    let want = {
        let data = std::fs::read(&slave_file).unwrap();
        assert_eq!(data.len() as u64, BIG);
        sha256(&data)
    };
    let list = get(hp, &format!("{build}/artifacts")).await.json();
    assert_eq!(list[0]["sha256"].as_str(), Some(want.as_str()));
    assert_eq!(list[0]["size"], BIG);
    let f = request(
        hp,
        "GET",
        &format!("{build}/artifacts/big.bin"),
        &[],
        b"",
        false,
    )
    .await;
    assert_eq!(f.status, 200);
    assert_eq!(f.len, BIG);
    assert_eq!(f.sha256, want);
    let part = request(
        hp,
        "GET",
        &format!("{build}/artifacts/big.bin"),
        &[("Range", "bytes=150000000-")],
        b"",
        false,
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.len, BIG - 150_000_000);
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "200 MB artifact: build (make + upload) {:.1}s; master RSS {} MiB at rest, {} MiB at most",
        took.as_secs_f64(),
        base_rss >> 20,
        peak >> 20
    );
    assert!(
        peak < RSS_BOUND,
        "the master held {} MiB resident for a 200 MB artifact",
        peak >> 20
    );
}

/// A stop during an upload interrupts it on the slave at once: the build is
/// cancelled, and nothing of the file is left on the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_interrupts_an_upload_and_leaves_nothing() {
    let factory = "[slow]\ntype = shell\nstep.make = head -c 1000000000 /dev/zero > big.bin\n\
                   step.up = big.bin\nstep.up.type = upload\n";
    let ini = master_ini(factory, "maxArtifactSize = 2G\n");
    let m = EngineMaster::start(&ini, Duration::from_secs(30)).await;
    let _slave = m.slave().await;
    let builder = format!("slow-{SLAVE}");
    let id = m.force(&builder, force_req(&[])).await;
    let dir = m.dir.path().join("artifacts").join(&builder).join("1");
    // The upload has begun: its temporary file is there.
    wait_until("the upload starts", || async {
        std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some())
    })
    .await;
    let t0 = std::time::Instant::now();
    m.engine()
        .stop_build(&builder, 1, "tester", "enough")
        .await
        .unwrap();
    let req = m.wait_request(id).await;
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(req.result.as_deref(), Some("cancelled"));
    let b = m.build(&builder, 1).await;
    assert_eq!(
        b.steps[1].result.as_deref(),
        Some("failure"),
        "{:?}",
        b.steps
    );
    let mut left = Vec::new();
    walk(&dir, "", &mut left);
    assert!(left.is_empty(), "{left:?}");
    assert!(m
        .master
        .db()
        .artifacts(&builder, 1)
        .await
        .unwrap()
        .is_empty());
}

/// `checkconfig` names the line of a transfer path that leaves its directory,
/// of a bad size, and prints the artifact keys in force.
#[test]
fn checkconfig_refuses_escaping_paths_and_bad_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("master.ini");
    let check = |factory: &str, extra: &str| {
        std::fs::write(&ini, master_ini(factory, extra)).unwrap();
        let out = std::process::Command::new(autobot_bin())
            .args(["checkconfig", dir.path().to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = check(
        "[f]\ntype = shell\nartifacts = dist/*\nstep.a = x.bin\nstep.a.type = upload\n",
        "maxArtifactSize = 500M\nartifactHorizon = 30\n",
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("artifacts: maxArtifactSize 524288000 bytes, artifactHorizon 30 days"),
        "{text}"
    );
    for (factory, extra, line, part) in [
        (
            "[f]\ntype = shell\nstep.a = ../../etc/passwd\nstep.a.type = upload\n",
            "",
            "master.ini:11",
            "without `..`",
        ),
        (
            "[f]\ntype = shell\nstep.a = x.bin /etc/x\nstep.a.type = upload\n",
            "",
            "master.ini:11",
            "relative path",
        ),
        (
            "[f]\ntype = shell\nstep.a = true\nartifacts = /var/*\n",
            "",
            "master.ini:12",
            "without `..`",
        ),
        (
            "[f]\ntype = shell\nstep.a = true\nmaxArtifactSize = lots\n",
            "",
            "master.ini:12",
            "K, M or G",
        ),
        (
            "[f]\ntype = shell\nstep.a = true\n",
            "maxArtifactSize = 0\n",
            "master.ini:6",
            "greater than 0",
        ),
    ] {
        let (ok, text) = check(factory, extra);
        assert!(!ok, "{factory}");
        assert!(
            text.contains(line) && text.contains(part),
            "{factory}: {text}"
        );
    }
}
