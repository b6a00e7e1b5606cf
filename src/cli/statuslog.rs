//! `autobot statuslog`: Buildbot's text status client. It follows a master's live
//! event stream (`GET /events` on htmlport, server-sent events; no port of its
//! own) and prints one line per event as it happens — a build started or
//! finished with its result, a step finished, a slave connected or lost, a Change
//! arrived — or, with `--json`, each of those events as a JSON line. It runs until
//! interrupted; when the master goes away it says so on stderr and connects again.
//! Events of one kind print in the order they happened; events of different
//! kinds (a slave, a Change, a build) that happen at the same moment may print in
//! either order.
//!
//! The master comes from `--master HOST:HTMLPORT` or `masterstatus` in the nearest
//! `.autobot/options` (as Buildbot's `.buildbot/options`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::Value;

use super::sendchange::{find_options, parse_options, split_host_port, OPTIONS_DIR};

/// `autobot statuslog`'s options.
#[derive(Debug, Args, Clone)]
pub struct StatuslogArgs {
    /// The master's web port, HOST:HTMLPORT [default: `masterstatus` in
    /// .autobot/options].
    #[arg(long, value_name = "HOST:HTMLPORT")]
    pub master: Option<String>,
    /// Print each event as one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The events printed (the stream carries more, such as log growth).
const KINDS: &[&str] = &[
    "build_started",
    "step_finished",
    "build_finished",
    "slave_connected",
    "slave_lost",
    "change",
];

/// Run `statuslog` until interrupted (or until the master cannot be found).
pub fn statuslog_cmd(args: &StatuslogArgs) -> anyhow::Result<()> {
    let master = match &args.master {
        Some(m) => m.clone(),
        None => {
            let cwd = std::env::current_dir()?;
            let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
            find_options(&cwd, home.as_deref())
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| parse_options(&t).remove("masterstatus"))
                .ok_or_else(|| {
                    anyhow!(
                        "which master? give --master HOST:HTMLPORT (the master's web port, e.g. localhost:8010), \
                         or write `masterstatus = HOST:HTMLPORT` in {OPTIONS_DIR}/options"
                    )
                })?
        }
    };
    let (host, port) = split_host_port(&master).map_err(|_| {
        anyhow!("--master must be HOST:HTMLPORT (the master's web port), not {master:?}")
    })?;
    let out = std::io::stdout();
    let mut backoff = Duration::from_millis(500);
    let mut ever = false;
    loop {
        match follow(&host, port, args.json, &mut out.lock(), &mut ever) {
            Ok(()) => {
                eprintln!("statuslog: the master {host}:{port} closed the stream; connecting again")
            }
            Err(e) if !ever => return Err(e),
            Err(e) => eprintln!("statuslog: {e:#}; connecting again"),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Read one connection's stream, printing events; `ever` turns true once a
/// stream was open (later failures then retry instead of failing).
fn follow(
    host: &str,
    port: u16,
    json: bool,
    out: &mut impl Write,
    ever: &mut bool,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect((host, port)).map_err(|e| {
        anyhow!("cannot reach the master's web port {host}:{port} ({e}); is the master running, and is this its htmlport?")
    })?;
    // The master sends a keepalive every 15 s: silence for a minute is a dead link.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "GET /events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )?;
    let mut rd = BufReader::new(stream);
    let mut line = String::new();
    rd.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!(
            "{host}:{port} answered {:?} to GET /events; is this the master's htmlport?",
            line.trim()
        );
    }
    let mut chunked = false;
    loop {
        line.clear();
        if rd.read_line(&mut line)? == 0 {
            bail!("the master closed the connection");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    *ever = true;
    eprintln!("statuslog: following the events of {host}:{port} (interrupt to stop)");
    let mut body: Box<dyn BufRead> = if chunked {
        Box::new(BufReader::new(Dechunk {
            rd,
            left: 0,
            done: false,
        }))
    } else {
        Box::new(rd)
    };
    // Server-sent events: `data:` lines, a blank line ends a message.
    let mut data = String::new();
    loop {
        line.clear();
        if body
            .read_line(&mut line)
            .context("reading the event stream")?
            == 0
        {
            return Ok(());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            if !data.is_empty() {
                print_event(&data, json, out)?;
                data.clear();
            }
        } else if let Some(d) = l.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
}

fn print_event(data: &str, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return Ok(());
    };
    let kind = v["event"].as_str().unwrap_or("");
    if kind == "lagged" {
        eprintln!("statuslog: fell behind the master; some events were not shown");
        return Ok(());
    }
    if !KINDS.contains(&kind) {
        return Ok(());
    }
    if json {
        writeln!(out, "{v}")?;
    } else if let Some(text) = describe(&v) {
        let now = crate::calendar::ymd_hms(crate::calendar::now());
        writeln!(out, "{now} {text}")?;
    }
    out.flush()?;
    Ok(())
}

/// One line for an event. Text from Changes and builds is shown with control
/// characters replaced, so a commit message cannot drive the terminal.
pub fn describe(v: &Value) -> Option<String> {
    let s = |k: &str| safe(v[k].as_str().unwrap_or(""));
    let n = |k: &str| v[k].as_i64().unwrap_or(0);
    let text = |k: &str| match s(k) {
        t if t.is_empty() => String::new(),
        t => format!(" [{t}]"),
    };
    Some(match v["event"].as_str()? {
        "build_started" => format!(
            "build #{} of {} started on slave {}",
            n("number"),
            s("builder"),
            s("slave")
        ),
        "step_finished" => format!(
            "step {} of build #{} of {} finished: {}{}",
            s("name"),
            n("number"),
            s("builder"),
            s("result"),
            text("text")
        ),
        "build_finished" if v["requeued"].as_bool() == Some(true) => format!(
            "build #{} of {} interrupted{}; its requests wait again",
            n("number"),
            s("builder"),
            text("text")
        ),
        "build_finished" => format!(
            "build #{} of {} finished: {}{}",
            n("number"),
            s("builder"),
            s("result"),
            text("text")
        ),
        "slave_connected" => format!("slave {} connected", s("slave")),
        "slave_lost" => format!("slave {} lost: {}", s("slave"), s("reason")),
        "change" => {
            let mut l = format!("Change #{} by {}", n("id"), s("who"));
            if !s("branch").is_empty() {
                l.push_str(&format!(" on {}", s("branch")));
            }
            if !s("revision").is_empty() {
                l.push_str(&format!(" at {}", s("revision")));
            }
            let first = s("comments");
            let first = first.lines().next().unwrap_or("").trim();
            if !first.is_empty() {
                l.push_str(&format!(": {first}"));
            }
            l
        }
        _ => return None,
    })
}

fn safe(t: &str) -> String {
    t.chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect()
}

/// A chunked HTTP body as a plain byte stream.
struct Dechunk<R> {
    rd: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Dechunk<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            // The CR LF ending the previous chunk, then the next size line.
            while line.trim().is_empty() {
                line.clear();
                if self.rd.read_line(&mut line)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                })?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let want = buf.len().min(self.left);
        let got = self.rd.read(&mut buf[..want])?;
        if got == 0 {
            self.done = true;
        }
        self.left -= got;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_for_events() {
        let v = serde_json::json!({"event":"build_finished","builder":"b","number":3,"result":"failure","text":"failed compile","requeued":false});
        assert_eq!(
            describe(&v).unwrap(),
            "build #3 of b finished: failure [failed compile]"
        );
        let v = serde_json::json!({"event":"change","id":7,"who":"Ann \x1b[31m","branch":"main","revision":"abc","comments":"fix\nmore"});
        assert_eq!(
            describe(&v).unwrap(),
            "Change #7 by Ann  [31m on main at abc: fix"
        );
        let v = serde_json::json!({"event":"slave_lost","slave":"s1","reason":"gone"});
        assert_eq!(describe(&v).unwrap(), "slave s1 lost: gone");
    }

    #[test]
    fn dechunks() {
        let body = b"5\r\nhello\r\n1;x\r\n \r\n0\r\n\r\n";
        let mut d = Dechunk {
            rd: &body[..],
            left: 0,
            done: false,
        };
        let mut s = String::new();
        d.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello ");
    }
}
