//! Credentials in repository URLs (issue 18): `git = http://bot:TOKEN@host/…` and
//! `hg = http://bot:TOKEN@host/…` check out from a real HTTP server that demands
//! Basic authentication — `git http-backend` and Mercurial's `hgweb` behind a tiny
//! CGI server written here — on a real autobot slave (its native `git`/`hg`
//! commands, the credentials handed over by the master) and on the stock
//! buildbot-worker (the master's operation path; buildbot-worker 4.3.0 writes every
//! message it receives to its `twistd.log`, so the master sends it the URL without
//! credentials and the worker's host supplies them, from `~/.netrc` and an hg
//! `[auth]` section), through the slave's mirror and directly, cloning and then
//! updating. The clones work, and the token is in no argv (a `git`/`hg` wrapper on the slaves' PATH
//! records every command line, `GIT_TRACE` every process git starts, and
//! `/proc/*/cmdline` is watched while the builds run), no file the master or a
//! slave wrote (logs, checkouts' `.git/config` and `.hg/hgrc`, mirrors, the
//! worker's `twistd.log`), no text column of any table in the database, no page
//! or API answer on either web port, and no line the master logged.
//!
//! Without `hg` or the buildbot-worker venv the parts that need them print SKIP;
//! with `CI=true` they fail instead.

#[path = "support/mod.rs"]
mod support;

#[path = "engine_common/mod.rs"]
mod engine_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autobot::app::{Master, MasterOptions};
use autobot::engine::ForceRequest;
use base64::Engine as _;
use engine_common::{free_port, kill9, Daemon, DEADLINE};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const USER: &str = "bot";
const TOKEN: &str = "tok-7Hq2x-credential-canary";
const SLAVE_PW: &str = "pw-cred";

/// Whether a missing tool fails the test (CI) or skips the part that needs it.
fn required(what: &str, why: &str) -> bool {
    support::skip(&format!("{what}: {why}"));
    false
}

// ------------------------------------------------------------ the CGI server

/// What the server saw: requests refused for want of credentials, and served.
#[derive(Default)]
struct Seen {
    refused: AtomicUsize,
    served_git: AtomicUsize,
    served_hg: AtomicUsize,
}

/// A CGI program behind a path prefix.
#[derive(Clone)]
struct Route {
    prefix: &'static str,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    /// SCRIPT_NAME: the part of the path that names the program (hgweb).
    script_name: Option<String>,
}

/// An HTTP/1.1 server on 127.0.0.1 that wants Basic `USER:TOKEN` on every request
/// and runs a CGI program per request.
async fn start_server(routes: Vec<Route>, seen: Arc<Seen>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let (routes, seen) = (routes.clone(), seen.clone());
            tokio::spawn(async move {
                if let Err(e) = serve_one(sock, port, &routes, &seen).await {
                    eprintln!("cgi server: {e}");
                }
            });
        }
    });
    port
}

async fn serve_one(
    sock: tokio::net::TcpStream,
    port: u16,
    routes: &[Route],
    seen: &Seen,
) -> std::io::Result<()> {
    let mut r = BufReader::new(sock);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => return Ok(()),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).await?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).await?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body).await?;
    }
    let mut sock = r.into_inner();
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{TOKEN}"))
    );
    if header("authorization").as_deref() != Some(want.as_str()) {
        seen.refused.fetch_add(1, Ordering::SeqCst);
        sock.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"autobot test\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await?;
        return Ok(());
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let Some(route) = routes.iter().find(|r| path.starts_with(r.prefix)) else {
        sock.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    };
    if route.prefix.starts_with("/git") {
        seen.served_git.fetch_add(1, Ordering::SeqCst);
    } else {
        seen.served_hg.fetch_add(1, Ordering::SeqCst);
    }
    let (script_name, path_info) = match &route.script_name {
        Some(s) => (s.clone(), path[s.len()..].to_string()),
        None => (String::new(), path[route.prefix.len() - 1..].to_string()),
    };
    let mut cmd = tokio::process::Command::new(&route.argv[0]);
    cmd.args(&route.argv[1..])
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_NAME", "127.0.0.1")
        .env("SERVER_PORT", port.to_string())
        .env("REQUEST_METHOD", &method)
        .env("SCRIPT_NAME", &script_name)
        .env("PATH_INFO", &path_info)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", USER)
        .env("AUTH_TYPE", "Basic")
        .env("CONTENT_LENGTH", body.len().to_string())
        .envs(route.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(t) = header("content-type") {
        cmd.env("CONTENT_TYPE", t);
    }
    for (k, v) in &headers {
        if k != "authorization" {
            cmd.env(
                format!("HTTP_{}", k.to_ascii_uppercase().replace('-', "_")),
                v,
            );
        }
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let (w, out) = tokio::join!(
        async move {
            let r = stdin.write_all(&body).await;
            drop(stdin);
            r
        },
        async move {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).await.map(|_| out)
        }
    );
    let _ = w;
    let out = out?;
    child.wait().await?;
    // CGI output: headers, a blank line, the body.
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
    let Some((end, gap)) = split else {
        sock.write_all(b"HTTP/1.1 500 Bad CGI\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    };
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let payload = &out[end + gap..];
    let mut status = "200 OK".to_string();
    let mut resp = String::new();
    for l in head.lines() {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("status") {
            status = v.trim().to_string();
        } else if !k.eq_ignore_ascii_case("content-length") {
            resp.push_str(&format!("{k}: {}\r\n", v.trim()));
        }
    }
    sock.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{resp}Content-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        )
        .as_bytes(),
    )
    .await?;
    sock.write_all(payload).await?;
    sock.shutdown().await
}

// ------------------------------------------------------------ repositories

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HGRCPATH", "")
        .env("HGUSER", "Ann Author <ann@example.org>")
        .env("GIT_AUTHOR_NAME", "Ann Author")
        .env("GIT_AUTHOR_EMAIL", "ann@example.org")
        .env("GIT_COMMITTER_NAME", "Ann Author")
        .env("GIT_COMMITTER_EMAIL", "ann@example.org")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bare git repository `root/alpha.git` whose `a.txt` says `content`.
fn git_repo(root: &Path, content: &str) {
    let work = root.join("alpha-work");
    std::fs::create_dir_all(&work).unwrap();
    run(&work, "git", &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("a.txt"), content).unwrap();
    run(&work, "git", &["add", "a.txt"]);
    run(&work, "git", &["commit", "-q", "-m", "first"]);
    run(
        root,
        "git",
        &["clone", "-q", "--bare", "alpha-work", "alpha.git"],
    );
}

/// An hg repository `root/beta` whose `b.txt` says `content`.
fn hg_repo(root: &Path, content: &str) {
    let repo = root.join("beta");
    std::fs::create_dir_all(&repo).unwrap();
    run(&repo, "hg", &["init"]);
    std::fs::write(repo.join("b.txt"), content).unwrap();
    run(&repo, "hg", &["add", "b.txt"]);
    run(&repo, "hg", &["commit", "-m", "first"]);
}

/// The Python that runs `hg` (its `#!` line), to run hgweb as a CGI script.
fn hg_python() -> Option<PathBuf> {
    let hg = support::which("hg")?;
    let text = std::fs::read_to_string(hg).ok()?;
    let first = text.lines().next()?.strip_prefix("#!")?.trim().to_string();
    let mut words = first.split_whitespace();
    let interp = words.next()?;
    if interp.ends_with("/env") {
        return support::which(words.next()?);
    }
    Some(PathBuf::from(interp))
}

// ------------------------------------------------------------ slaves

/// `git` and `hg` wrappers that append each command line to `argv.log`, first on
/// the slaves' PATH.
fn wrappers(dir: &Path, tools: &[&str]) -> (PathBuf, PathBuf) {
    let bin = dir.join("wrap-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("argv.log");
    for tool in tools {
        let real = support::which(tool).unwrap_or_else(|| panic!("no {tool} on PATH"));
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"{tool} $*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        );
        let p = bin.join(tool);
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (bin, log)
}

fn slave_env(bin: &Path, trace: &Path, home: &Path) -> Vec<(String, String)> {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    vec![
        ("PATH".into(), path),
        ("GIT_TRACE".into(), trace.display().to_string()),
        // A git and hg configuration of the test's own (no helper of the machine's).
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("HOME".into(), home.display().to_string()),
    ]
}

/// `autobot run DIR` for slave `s1` with `env`.
fn start_autobot_slave(dir: &Path, port: u16, env: &[(String, String)]) -> Daemon {
    std::fs::create_dir_all(dir.join("info")).unwrap();
    std::fs::write(dir.join("info/admin"), "Cred Test <c@example.org>\n").unwrap();
    std::fs::write(dir.join("info/host"), "cred-test\n").unwrap();
    let ini = autobot::config::SlaveIni {
        basedir: std::fs::canonicalize(dir).unwrap(),
        master_host: "127.0.0.1".into(),
        master_port: port,
        more_masters: Vec::new(),
        name: "s1".into(),
        password: SLAVE_PW.into(),
        keepalive: 1,
        umask: 0o022,
        usepty: false,
    };
    std::fs::write(dir.join(autobot::config::slave::SLAVE_INI), ini.render()).unwrap();
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let mut cmd = Command::new(engine_common::autobot_bin());
    cmd.arg("run")
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    autobot::daemon::new_session(&mut cmd);
    Daemon(cmd.spawn().unwrap())
}

/// The stock buildbot-worker `w1`, or `None` (SKIP) when it cannot be installed.
fn start_worker(dir: &Path, port: u16, env: &[(String, String)]) -> Option<Daemon> {
    let venv = match support::buildbot_worker_venv() {
        Ok(v) => v,
        Err(e) => {
            required("buildbot-worker", &e);
            return None;
        }
    };
    let bin = venv.join("bin/buildbot-worker");
    let out = Command::new(&bin)
        .args(["create-worker", "--protocol", "msgpack_experimental_v7"])
        .arg(dir)
        .arg(format!("127.0.0.1:{port}"))
        .args(["w1", SLAVE_PW])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::File::create(dir.join("worker.out")).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.args(["start", "--nodaemon"])
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    autobot::daemon::new_session(&mut cmd);
    Some(Daemon(cmd.spawn().unwrap()))
}

// ------------------------------------------------------------ looking for the token

/// Every file under `dir` that holds the token (but `skip`).
fn files_with_token(dir: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if skip.contains(&p) || t.is_symlink() {
            continue;
        }
        if t.is_dir() {
            files_with_token(&p, skip, out);
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()) {
                out.push(p);
            }
        }
    }
}

/// `table.column` of every text value in the database that holds the token.
fn db_cells_with_token(db: &Path) -> (usize, Vec<String>) {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (mut cells, mut found) = (0, Vec::new());
    for t in &tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for (i, name) in names.iter().enumerate() {
                let text = match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                        String::from_utf8_lossy(b).into_owned()
                    }
                    _ => continue,
                };
                cells += 1;
                if text.contains(TOKEN) {
                    found.push(format!("{t}.{name}"));
                }
            }
        }
    }
    (cells, found)
}

/// Watches `/proc/*/cmdline` until told to stop; the command lines holding the
/// token.
fn watch_cmdlines(stop: Arc<AtomicBool>, found: Arc<Mutex<Vec<String>>>, looked: Arc<AtomicUsize>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if let Ok(entries) = std::fs::read_dir("/proc") {
                for e in entries.flatten() {
                    if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                        looked.fetch_add(1, Ordering::Relaxed);
                        if c.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()) {
                            found
                                .lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&c).replace('\0', " "));
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

// ------------------------------------------------------------ the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_credentials_reach_git_and_hg_but_no_log_argv_page_or_database() {
    support::capture_logs();
    support::keep_sqlite("every text cell of state.sqlite is searched for the token");
    let tmp = tempfile::tempdir().unwrap();
    let tmp = std::fs::canonicalize(tmp.path()).unwrap();
    let repos = tmp.join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    git_repo(&repos, "alpha content\n");
    let with_hg = support::which("hg").is_some() || required("hg", "apt-get install mercurial");
    let python = if with_hg { hg_python() } else { None };
    let with_hg =
        with_hg && (python.is_some() || required("hg's python", "cannot read hg's #! line"));

    let seen = Arc::new(Seen::default());
    let mut routes = vec![Route {
        prefix: "/git/",
        argv: vec!["git".into(), "http-backend".into()],
        env: vec![
            ("GIT_PROJECT_ROOT".into(), repos.display().to_string()),
            ("GIT_HTTP_EXPORT_ALL".into(), "1".into()),
        ],
        script_name: None,
    }];
    if let Some(python) = &python {
        hg_repo(&repos, "beta content\n");
        let cgi = repos.join("hgweb.cgi");
        std::fs::write(
            &cgi,
            format!(
                "from mercurial import demandimport; demandimport.enable()\n\
                 from mercurial.hgweb import hgweb, wsgicgi\n\
                 wsgicgi.launch(hgweb({:?}.encode()))\n",
                repos.join("beta").display().to_string()
            ),
        )
        .unwrap();
        routes.push(Route {
            prefix: "/hg/beta",
            argv: vec![python.display().to_string(), cgi.display().to_string()],
            env: vec![("HGRCPATH".into(), String::new())],
            script_name: Some("/hg/beta".into()),
        });
    }
    let port = start_server(routes, seen.clone()).await;
    let git_url = format!("http://{USER}:{TOKEN}@127.0.0.1:{port}/git/alpha.git");
    let hg_url = format!("http://{USER}:{TOKEN}@127.0.0.1:{port}/hg/beta");

    // The master, in this process (so every line it logs is seen here).
    let mdir = tmp.join("master");
    std::fs::create_dir_all(&mdir).unwrap();
    let mut factories = format!(
        "[alpha]\ntype = shell\ngit = {git_url}#main\nstep.show = cat a.txt\n\n\
         [alpha-direct]\ntype = shell\ngit = {git_url}#main\nmirror = false\nstep.show = cat a.txt\n\n"
    );
    if with_hg {
        factories.push_str(&format!(
            "[beta]\ntype = shell\nhg = {hg_url}#default\nstep.show = cat b.txt\n\n\
             [beta-direct]\ntype = shell\nhg = {hg_url}#default\nmirror = false\nstep.show = cat b.txt\n\n"
        ));
    }
    support::write_master_ini(
        &mdir,
        format!(
            "[:master:]\nslaveport = 9010\nhtmlport = 8010\npassword = {SLAVE_PW}\n\
             factories = *\npollInterval = 3600\n\n[slave:s1]\n\n[slave:w1]\n\n{factories}"
        ),
    );
    let public = free_port();
    let master = Master::start_with(
        &mdir,
        MasterOptions {
            keepalive_interval: Some(Duration::from_secs(30)),
            slaveport: Some(0),
            htmlport: Some(0),
            publichtmlport: Some(public),
        },
    )
    .await
    .unwrap();

    // The slaves, as child processes with the recording wrappers first on PATH.
    let tools: Vec<&str> = if with_hg {
        vec!["git", "hg"]
    } else {
        vec!["git"]
    };
    let (bin, argv_log) = wrappers(&tmp, &tools);
    let trace = tmp.join("git-trace.log");
    // The autobot slave's host knows no credentials: they come from the master.
    let slave_home = tmp.join("slave-home");
    std::fs::create_dir_all(&slave_home).unwrap();
    let sdir = tmp.join("slave");
    let mut slave = start_autobot_slave(
        &sdir,
        master.slaveport(),
        &slave_env(&bin, &trace, &slave_home),
    );
    // A buildbot-worker logs every message it gets, so the master sends it no
    // credentials: its host has them, as its admin would set them up.
    let worker_home = tmp.join("worker-home");
    std::fs::create_dir_all(&worker_home).unwrap();
    std::fs::write(
        worker_home.join(".netrc"),
        format!("machine 127.0.0.1\nlogin {USER}\npassword {TOKEN}\n"),
    )
    .unwrap();
    std::fs::write(
        worker_home.join(".hgrc"),
        format!(
            "[auth]\nt.prefix = 127.0.0.1:{port}\nt.username = {USER}\nt.password = {TOKEN}\nt.schemes = http\n"
        ),
    )
    .unwrap();
    for f in [".netrc", ".hgrc"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(worker_home.join(f), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    let wdir = tmp.join("worker");
    let worker_env = slave_env(&bin, &trace, &worker_home);
    let worker =
        tokio::task::block_in_place(|| start_worker(&wdir, master.slaveport(), &worker_env));
    let mut slaves = vec!["s1"];
    if worker.is_some() {
        slaves.push("w1");
    }
    for s in &slaves {
        master
            .registry()
            .wait_connected(s, DEADLINE)
            .await
            .unwrap_or_else(|| panic!("slave {s} connects"));
    }

    // Every process's command line is watched while the checkouts run.
    let stop = Arc::new(AtomicBool::new(false));
    let cmdlines = Arc::new(Mutex::new(Vec::new()));
    let looked = Arc::new(AtomicUsize::new(0));
    watch_cmdlines(stop.clone(), cmdlines.clone(), looked.clone());

    let mut builders: Vec<(String, &str)> = Vec::new();
    for s in &slaves {
        builders.push((format!("alpha-{s}"), "alpha content"));
        builders.push((format!("alpha-direct-{s}"), "alpha content"));
        if with_hg {
            builders.push((format!("beta-{s}"), "beta content"));
            builders.push((format!("beta-direct-{s}"), "beta content"));
        }
    }
    // Twice each: a clone, then an update of the tree (and of the mirror).
    for number in 1..=2 {
        let mut ids = Vec::new();
        for (b, _) in &builders {
            let r = master
                .engine()
                .force(
                    b,
                    ForceRequest {
                        reason: format!("credentials #{number}"),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            ids.push((b.clone(), r.request_id));
        }
        for (b, id) in ids {
            let req = tokio::time::timeout(DEADLINE, master.engine().wait_request(id))
                .await
                .expect("the build ends in time")
                .unwrap();
            let log = |step: &str| {
                let db = master.db().clone();
                let b = b.clone();
                let step = step.to_string();
                async move {
                    match db.log_file(&b, number, &step, "stdio").await.unwrap() {
                        Some(f) => {
                            String::from_utf8_lossy(&std::fs::read(f.path).unwrap()).into_owned()
                        }
                        None => String::new(),
                    }
                }
            };
            assert_eq!(
                req.result.as_deref(),
                Some("success"),
                "{b} #{number}:\n{}",
                log("checkout").await
            );
            let content = builders.iter().find(|(n, _)| *n == b).unwrap().1;
            assert!(log("show").await.contains(content), "{b} #{number}");
            let told = log("checkout")
                .await
                .contains("the repository URL's credentials are not sent to it");
            assert_eq!(told, b.ends_with("-w1"), "{b} #{number}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    assert!(looked.load(Ordering::SeqCst) > 0, "/proc was not readable");
    // The server asked for credentials, and got them from git and hg.
    assert!(seen.refused.load(Ordering::SeqCst) > 0);
    assert!(seen.served_git.load(Ordering::SeqCst) > 0);
    if with_hg {
        assert!(seen.served_hg.load(Ordering::SeqCst) > 0);
    }

    // No command line held the token.
    let found = cmdlines.lock().unwrap().clone();
    assert!(
        found.is_empty(),
        "the token was in a command line: {found:?}"
    );
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert!(argv.contains("git ") && !argv.contains(TOKEN), "{argv}");
    assert!(
        argv.contains(&format!("127.0.0.1:{port}/git/alpha.git")),
        "{argv}"
    );
    if with_hg {
        // hg names the repository by an alias the environment defines.
        assert!(
            argv.contains("--config paths.autobot-source=$AUTOBOT_HG_SOURCE"),
            "{argv}"
        );
    }
    let traced = std::fs::read_to_string(&trace).unwrap();
    assert!(traced.contains("remote-http"), "git's trace: {traced}");
    // The autobot slave's git asked the helper the environment configures.
    assert!(traced.contains("f() {"), "git's trace: {traced}");
    assert!(!traced.contains(TOKEN), "git's trace holds the token");

    // No page or API answer, on either port.
    let mut pages = vec![
        "/".to_string(),
        "/waterfall".into(),
        "/builders".into(),
        "/changes".into(),
        "/api/v1/builders".into(),
        "/api/v1/changes".into(),
        "/api/v1/slaves".into(),
    ];
    for (b, _) in &builders {
        pages.push(format!("/builders/{b}"));
        pages.push(format!("/api/v1/builders/{b}"));
        pages.push(format!("/api/v1/builders/{b}/builds"));
        for n in 1..=2 {
            pages.push(format!("/builders/{b}/builds/{n}"));
            pages.push(format!("/api/v1/builders/{b}/builds/{n}"));
            pages.push(format!(
                "/builders/{b}/builds/{n}/steps/checkout/logs/stdio"
            ));
            pages.push(format!(
                "/builders/{b}/builds/{n}/steps/checkout/logs/stdio/text"
            ));
            pages.push(format!(
                "/api/v1/builders/{b}/builds/{n}/steps/checkout/logs/stdio"
            ));
        }
    }
    let mut fetched = 0;
    for p in [master.htmlport(), public] {
        for page in &pages {
            let (status, body) = support::http_get(p, page).await;
            if status == 200 {
                fetched += 1;
            }
            assert!(
                !body.contains(TOKEN),
                "port {p} {page} shows the token:\n{body}"
            );
        }
    }
    assert!(fetched > pages.len(), "only {fetched} pages answered");
    // The checkout log shows the URL without its credentials.
    let (_, body) = support::http_get(
        public,
        "/builders/alpha-direct-s1/builds/1/steps/checkout/logs/stdio/text",
    )
    .await;
    assert!(
        body.contains(&format!("http://127.0.0.1:{port}/git/alpha.git")),
        "{body}"
    );

    drop(worker);
    kill9(&mut slave);
    master.shutdown().await;

    // No text in the database, no file the master or a slave wrote (but the
    // master.ini that holds it), no line the master logged.
    let (cells, in_db) = db_cells_with_token(&mdir.join(autobot::db::DB_FILE));
    assert!(cells > 100, "only {cells} text cells");
    assert!(
        in_db.is_empty(),
        "the database holds the token in {in_db:?}"
    );
    let mut files = Vec::new();
    for d in [&mdir, &sdir, &wdir] {
        files_with_token(d, &[mdir.join("master.ini")], &mut files);
    }
    for f in &files {
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        for l in text.lines().filter(|l| l.contains(TOKEN)) {
            eprintln!("{}: {l}", f.display());
        }
    }
    assert!(files.is_empty(), "files hold the token: {files:?}");
    assert!(
        sdir.join("alpha-s1/build/.git/config").is_file(),
        "the checkout is where it was looked for"
    );
    assert!(!support::log_has(&[TOKEN]), "the master logged the token");
}
