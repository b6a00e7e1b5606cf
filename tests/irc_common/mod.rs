//! A real IRC server and a small IRC client for the IRC bot's tests and bench:
//! Debian's `ngircd` on a free 127.0.0.1 port with a configuration written into a
//! temp directory, and [`IrcClient`], a user that registers a nick, joins
//! channels, talks, and waits (with a deadline) for the lines it expects.
//!
//! Include with `#[path = "irc_common/mod.rs"] mod irc_common;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autobot::reporters::irc::proto::{self, Message};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// How long any wait for the server or a line may take before the test fails.
pub const IRC_DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where `ngircd` is: on PATH, or in /usr/sbin (not on every user's PATH).
pub fn ngircd_path() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("ngircd"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| Some(PathBuf::from("/usr/sbin/ngircd")).filter(|p| p.is_file()))
}

/// A running `ngircd -n`; killed when dropped.
pub struct Ngircd {
    pub port: u16,
    /// The TLS port, when started with [`Ngircd::start_tls`].
    pub tls_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Ngircd {
    /// Start ngircd on `port` (0: a free one) with its files in `dir`.
    pub async fn start(dir: &Path, port: u16) -> Ngircd {
        Ngircd::start_with(dir, port, "").await
    }

    /// Start ngircd with a plain port and a TLS port whose certificate, for
    /// `localhost`, is signed by the CA `DIR/ca.pem` (both made here with
    /// `openssl`).
    pub async fn start_tls(dir: &Path) -> Ngircd {
        let certs = crate::support::tls::make_certs(dir, "localhost", "DNS:localhost");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // A named group: no slow generation of DH parameters by the server.
        run(&[
            "genpkey",
            "-genparam",
            "-algorithm",
            "DH",
            "-pkeyopt",
            "group:ffdhe2048",
            "-out",
            "dh.pem",
        ]);
        let tls_port = free_port();
        let ssl = format!(
            "[SSL]\nCertFile = {}\nKeyFile = {}\nDHFile = {}\nPorts = {tls_port}\n",
            certs.cert.display(),
            certs.key.display(),
            dir.join("dh.pem").display()
        );
        let mut s = Ngircd::start_with(dir, 0, &ssl).await;
        s.tls_port = Some(tls_port);
        s
    }

    async fn start_with(dir: &Path, port: u16, extra: &str) -> Ngircd {
        let port = if port == 0 { free_port() } else { port };
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("ngircd.conf");
        std::fs::write(
            &conf,
            format!(
                "[Global]\nName = irc.test\nInfo = autobot test server\nAdminInfo1 = test\nAdminInfo2 = test\n\
                 AdminEMail = test@localhost\nListen = 127.0.0.1\nPorts = {port}\n\
                 PidFile = {}\nMotdPhrase = test\n\
                 [Limits]\nMaxConnectionsIP = 0\nMaxNickLength = 30\n\
                 [Options]\nDNS = no\nIdent = no\nPAM = no\n{extra}",
                dir.join("ngircd.pid").display()
            ),
        )
        .unwrap();
        let mut s = Ngircd {
            port,
            tls_port: None,
            dir: dir.to_path_buf(),
            child: None,
        };
        s.spawn().await;
        s
    }

    fn launch(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("ngircd.log"))
            .unwrap();
        Command::new(ngircd_path().expect("ngircd is installed"))
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("ngircd.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("ngircd starts")
    }

    async fn spawn(&mut self) {
        self.child = Some(self.launch());
        // Ready once it accepts a connection; a restart may find the port still
        // held for a moment (ngircd then exits, and is started again).
        let deadline = Instant::now() + IRC_DEADLINE;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = Some(self.launch());
            }
            assert!(
                Instant::now() < deadline,
                "ngircd did not listen on {}; see {}",
                self.port,
                self.dir.join("ngircd.log").display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kill the server (every client loses its connection).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill it and start it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A user on the IRC server.
pub struct IrcClient {
    pub nick: String,
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    /// Every line read, for failure messages.
    pub seen: Vec<String>,
}

impl IrcClient {
    /// Connect and register as `nick`.
    pub async fn connect(port: u16, nick: &str) -> IrcClient {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (r, write) = tcp.into_split();
        let mut c = IrcClient {
            nick: nick.to_string(),
            lines: BufReader::new(r).lines(),
            write,
            seen: Vec::new(),
        };
        c.send(&format!("NICK {nick}")).await;
        c.send(&format!("USER {nick} 0 * :test user")).await;
        c.expect(|m| m.command == "001").await;
        c
    }

    pub async fn send(&mut self, line: &str) {
        self.write
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// Join `channel` and wait until the server confirms.
    pub async fn join(&mut self, channel: &str) {
        self.send(&format!("JOIN {channel}")).await;
        let nick = self.nick.clone();
        self.expect(|m| m.command == "JOIN" && proto::irc_eq(m.nick(), &nick))
            .await;
    }

    /// Join `channel` and wait until `other` is in it (already, by the NAMES
    /// list the server sends on joining, or when it joins later).
    pub async fn join_and_wait_for(&mut self, channel: &str, other: &str) {
        self.join(channel).await;
        let mut present = false;
        let other_ = other.to_string();
        self.expect(|m| {
            if m.command == "353" {
                present |= m
                    .param(3)
                    .split(' ')
                    .any(|n| proto::irc_eq(n.trim_start_matches(['@', '+']), &other_));
            }
            m.command == "366"
        })
        .await;
        if !present {
            self.expect(|m| m.command == "JOIN" && proto::irc_eq(m.nick(), &other_))
                .await;
        }
    }

    /// Say `text` to `target` (a channel or a nick).
    pub async fn say(&mut self, target: &str, text: &str) {
        self.send(&format!("PRIVMSG {target} :{text}")).await;
    }

    /// The next message (PINGs answered); `None` at the deadline or when closed.
    pub async fn next_until(&mut self, deadline: Instant) -> Option<Message> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = tokio::time::timeout(left, self.lines.next_line())
                .await
                .ok()?
                .ok()??;
            self.seen.push(line.clone());
            let Some(m) = Message::parse(&line) else {
                continue;
            };
            if m.command == "PING" {
                let p = m.param(0).to_string();
                self.send(&format!("PONG :{p}")).await;
                continue;
            }
            return Some(m);
        }
    }

    /// Read until a message matches `pred`; panics (with what was seen) after
    /// the deadline.
    pub async fn expect(&mut self, mut pred: impl FnMut(&Message) -> bool) -> Message {
        let deadline = Instant::now() + IRC_DEADLINE;
        while let Some(m) = self.next_until(deadline).await {
            if pred(&m) {
                return m;
            }
        }
        panic!(
            "{}: no expected line within {:?}; the last lines seen:\n{}",
            self.nick,
            IRC_DEADLINE,
            self.seen[self.seen.len().saturating_sub(30)..].join("\n")
        );
    }

    /// The next PRIVMSG to `to` from `from` (text only).
    pub async fn expect_msg(&mut self, from: &str, to: &str) -> String {
        let (from, to) = (from.to_string(), to.to_string());
        self.expect(move |m| {
            m.command == "PRIVMSG"
                && proto::irc_eq(m.nick(), &from)
                && proto::irc_eq(m.param(0), &to)
        })
        .await
        .param(1)
        .to_string()
    }

    /// Every PRIVMSG text from `from` to `to` until one contains `end` (that one
    /// included).
    pub async fn msgs_until(&mut self, from: &str, to: &str, end: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let t = self.expect_msg(from, to).await;
            let done = t.contains(end);
            out.push(t);
            if done {
                return out;
            }
        }
    }

    /// Ask the bot `command` in `channel` and return its next answer there.
    pub async fn ask(&mut self, bot: &str, channel: &str, command: &str) -> String {
        self.say(channel, &format!("{bot}: {command}")).await;
        self.expect_msg(bot, channel).await
    }
}
