//! One connection to the IRC server: TCP (or TLS), registration with a nick that
//! may be taken (then `NICK_`, `NICK__`, … — numerics 432/433/436), NickServ
//! identification, joining the channels, PING/PONG both ways, and a writer that
//! paces the bot's messages so that a long answer never gets it kicked for flooding
//! (protocol lines — PONG, NICK, JOIN — go first and unpaced).
//!
//! A [`Session`] ends when the server closes the link, says `ERROR`, stops
//! answering PINGs, or the bot is told to stop; the caller then reconnects with
//! backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::proto::{self, Message};
use crate::config::irc::IrcConfig;

/// Messages sent at once before pacing starts.
const BURST: u32 = 5;
/// Then one message per this interval: two a second, with a burst of five, is
/// what solanum (Libera.Chat's server) allows by default (`client_flood_*`);
/// ngircd only slows down a client faster than that.
const PACE: Duration = Duration::from_millis(500);
/// Messages waiting to be sent at most; more are dropped (and logged).
const QUEUE: usize = 200;
/// No line from the server for this long: ask it with a PING.
const IDLE: Duration = Duration::from_secs(180);
/// No line at all for this long after our PING: the link is dead.
const PING_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting (TCP, TLS, registration) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection could not be made or ended.
#[derive(Debug, thiserror::Error)]
pub enum IrcError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS to {0}: {1}")]
    Tls(String, String),
    #[error("{0} did not answer in time")]
    Timeout(String),
    #[error("the connection to {0} failed: {1}")]
    Io(String, std::io::Error),
    #[error("{0} closed the connection")]
    Closed(String),
    #[error("{0} said: {1}")]
    ServerError(String, String),
    #[error("no nick left to try ({0} and its variants are all taken or refused)")]
    NoNick(String),
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// What the bot sends: protocol lines go first and unpaced, messages are paced.
#[derive(Clone)]
pub struct Sender {
    urgent: mpsc::UnboundedSender<String>,
    paced: mpsc::Sender<String>,
}

impl Sender {
    /// A protocol line (already formatted with [`proto::line`]).
    pub fn raw(&self, line: String) {
        let _ = self.urgent.send(line);
    }

    /// `text` to `target` (a channel or a nick), as one PRIVMSG per piece.
    pub fn say(&self, target: &str, text: &str) {
        for piece in proto::split_text(text) {
            let l = proto::line("PRIVMSG", &[target], Some(&piece));
            if self.paced.try_send(l).is_err() {
                tracing::warn!(
                    "irc: more than {QUEUE} messages wait to be sent; dropped one to {target}"
                );
            }
        }
    }

    /// A NOTICE (the answer to a CTCP request).
    pub fn notice(&self, target: &str, text: &str) {
        self.raw(proto::line("NOTICE", &[target], Some(text)));
    }
}

/// A registered connection.
pub struct Session {
    /// The server as `host:port`, for messages.
    pub server: String,
    /// The nick the server gave the bot (may differ from the configured one).
    pub nick: String,
    pub sender: Sender,
    lines: mpsc::Receiver<Result<Message, IrcError>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// When the server last said something, and whether we PINGed it since
    /// (kept here: [`Session::next`] is cancelled by the bot's other work).
    last_heard: Instant,
    pinged: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The next nick to try after `nick` was refused: `_` appended while it fits in
/// 30 characters, then the last characters replaced by digits.
pub fn next_nick(base: &str, tried: usize) -> Option<String> {
    if tried > 20 {
        return None;
    }
    let n = format!("{base}{}", "_".repeat(tried));
    if n.len() <= 30 {
        return Some(n);
    }
    let keep: String = base.chars().take(27).collect();
    Some(format!("{keep}{tried:03}"))
}

async fn connect_stream(cfg: &IrcConfig, server: &str) -> Result<Box<dyn Stream>, IrcError> {
    let tcp = TcpStream::connect((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|e| IrcError::Connect(server.to_string(), e))?;
    let _ = tcp.set_nodelay(true);
    if !cfg.tls {
        return Ok(Box::new(tcp));
    }
    use rustls_platform_verifier::BuilderVerifierExt;
    let tls = |e: rustls::Error| IrcError::Tls(server.to_string(), e.to_string());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(tls)?
    .with_platform_verifier()
    .map_err(tls)?
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
        .map_err(|e| IrcError::Tls(server.to_string(), e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| IrcError::Tls(server.to_string(), e.to_string()))?;
    Ok(Box::new(stream))
}

impl Session {
    /// Connect, register (finding a free nick), identify to NickServ and join
    /// `cfg.channels`.
    pub async fn open(cfg: &IrcConfig) -> Result<Session, IrcError> {
        let server = format!("{}:{}", cfg.host, cfg.port);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect_stream(cfg, &server))
            .await
            .map_err(|_| IrcError::Timeout(server.clone()))??;
        let (read, write) = tokio::io::split(stream);
        let (urgent_tx, urgent_rx) = mpsc::unbounded_channel();
        let (paced_tx, paced_rx) = mpsc::channel(QUEUE);
        let (lines_tx, lines) = mpsc::channel(64);
        let tasks = vec![
            tokio::spawn(writer(write, urgent_rx, paced_rx, server.clone())),
            tokio::spawn(reader(read, lines_tx, server.clone())),
        ];
        let mut s = Session {
            server,
            nick: cfg.nick.clone(),
            sender: Sender {
                urgent: urgent_tx,
                paced: paced_tx,
            },
            lines,
            tasks,
            last_heard: Instant::now(),
            pinged: false,
        };
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        tokio::time::timeout_at(deadline, s.register(cfg))
            .await
            .map_err(|_| IrcError::Timeout(s.server.clone()))??;
        if let Some(pw) = &cfg.password {
            s.sender.raw(proto::line(
                "PRIVMSG",
                &["NickServ"],
                Some(&format!("IDENTIFY {pw}")),
            ));
        }
        for c in &cfg.channels {
            s.sender.raw(proto::line("JOIN", &[c], None));
        }
        Ok(s)
    }

    async fn register(&mut self, cfg: &IrcConfig) -> Result<(), IrcError> {
        let mut tried = 0;
        self.sender.raw(proto::line("NICK", &[&self.nick], None));
        self.sender.raw(proto::line(
            "USER",
            &[&cfg.nick, "0", "*"],
            Some(&format!("autobot {} build bot", crate::VERSION)),
        ));
        loop {
            let m = self.next().await?;
            match m.command.as_str() {
                "001" => {
                    if !m.param(0).is_empty() {
                        self.nick = m.param(0).to_string();
                    }
                    tracing::info!("irc: connected to {} as {}", self.server, self.nick);
                    return Ok(());
                }
                "432" | "433" | "436" | "437" => {
                    tried += 1;
                    let next = next_nick(&cfg.nick, tried)
                        .ok_or_else(|| IrcError::NoNick(cfg.nick.clone()))?;
                    tracing::warn!(
                        "irc: {} refused the nick {} ({}); trying {next}",
                        self.server,
                        self.nick,
                        m.params.last().map(String::as_str).unwrap_or("")
                    );
                    self.nick = next;
                    self.sender.raw(proto::line("NICK", &[&self.nick], None));
                }
                _ => {}
            }
        }
    }

    /// The next message from the server; PINGs are answered here, and a server
    /// that stays silent is PINGed, then given up on.
    pub async fn next(&mut self) -> Result<Message, IrcError> {
        loop {
            let wait = if self.pinged { PING_TIMEOUT } else { IDLE };
            match tokio::time::timeout_at(self.last_heard + wait, self.lines.recv()).await {
                Ok(Some(Ok(m))) => {
                    self.last_heard = Instant::now();
                    self.pinged = false;
                    match m.command.as_str() {
                        "PING" => self.sender.raw(proto::line("PONG", &[], Some(m.param(0)))),
                        "ERROR" => {
                            return Err(IrcError::ServerError(
                                self.server.clone(),
                                m.param(0).to_string(),
                            ))
                        }
                        "NICK" if proto::irc_eq(m.nick(), &self.nick) => {
                            self.nick = m.param(0).to_string();
                        }
                        _ => {}
                    }
                    return Ok(m);
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => return Err(IrcError::Closed(self.server.clone())),
                Err(_) if !self.pinged => {
                    self.pinged = true;
                    self.last_heard = Instant::now();
                    self.sender
                        .raw(proto::line("PING", &[], Some(&self.server)));
                }
                Err(_) => return Err(IrcError::Timeout(self.server.clone())),
            }
        }
    }

    /// Say goodbye (`QUIT`) and give the writer a moment to send it.
    pub async fn quit(mut self, why: &str) {
        self.sender.raw(proto::line("QUIT", &[], Some(why)));
        // The writer ends after writing a QUIT.
        if !self.tasks.is_empty() {
            let w = self.tasks.remove(0);
            let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
        }
    }
}

async fn reader<R: AsyncRead + Unpin>(
    read: R,
    tx: mpsc::Sender<Result<Message, IrcError>>,
    server: String,
) {
    let mut r = BufReader::new(read);
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        // A line longer than the protocol allows is read on (and cut) rather than
        // held in memory whole.
        let n = match (&mut r).take(8192).read_until(b'\n', &mut buf).await {
            Ok(0) => {
                let _ = tx.send(Err(IrcError::Closed(server.clone()))).await;
                return;
            }
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(IrcError::Io(server.clone(), e))).await;
                return;
            }
        };
        if n == 0 {
            continue;
        }
        // Servers relay whatever bytes users send: not always UTF-8.
        let line = String::from_utf8_lossy(&buf);
        tracing::trace!("irc <- {}", line.trim_end());
        if let Some(m) = Message::parse(&line) {
            if tx.send(Ok(m)).await.is_err() {
                return;
            }
        }
    }
}

async fn writer<W: AsyncWrite + Unpin>(
    mut write: W,
    mut urgent: mpsc::UnboundedReceiver<String>,
    mut paced: mpsc::Receiver<String>,
    server: String,
) {
    let mut tokens = BURST;
    let mut refill = Instant::now() + PACE;
    loop {
        let line = tokio::select! {
            biased;
            l = urgent.recv() => match l { Some(l) => l, None => return },
            _ = tokio::time::sleep_until(refill), if tokens < BURST => {
                tokens += 1;
                refill = Instant::now() + PACE;
                continue;
            }
            l = paced.recv(), if tokens > 0 => match l {
                Some(l) => {
                    if tokens == BURST {
                        refill = Instant::now() + PACE;
                    }
                    tokens -= 1;
                    l
                }
                None => return,
            },
        };
        tracing::trace!("irc -> {}", line.trim_end());
        if let Err(e) = write.write_all(line.as_bytes()).await {
            tracing::debug!("irc: writing to {server}: {e}");
            return;
        }
        let _ = write.flush().await;
        if line.starts_with("QUIT") {
            let _ = write.shutdown().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five messages go at once, then one per [`PACE`]; a protocol line (PONG)
    /// overtakes the queue.
    #[tokio::test]
    async fn output_is_paced_and_protocol_lines_go_first() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (urgent_tx, urgent_rx) = mpsc::unbounded_channel();
        let (paced_tx, paced_rx) = mpsc::channel(QUEUE);
        let sender = Sender {
            urgent: urgent_tx,
            paced: paced_tx,
        };
        tokio::spawn(writer(ours, urgent_rx, paced_rx, "test".into()));
        let t0 = Instant::now();
        for i in 1..=8 {
            sender.say("#c", &format!("line {i}"));
        }
        let mut lines = BufReader::new(theirs).lines();
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(lines.next_line().await.unwrap().unwrap());
        }
        // Lines 1-5 went out as a burst, line 6 waited its turn: now a PONG
        // overtakes lines 7 and 8.
        sender.raw(proto::line("PONG", &[], Some("x")));
        for _ in 0..3 {
            got.push(lines.next_line().await.unwrap().unwrap());
        }
        assert_eq!(
            got[..6]
                .iter()
                .filter(|l| l.starts_with("PRIVMSG #c :line"))
                .count(),
            6
        );
        assert_eq!(got[6], "PONG :x");
        assert_eq!(got[8], "PRIVMSG #c :line 8");
        assert!(t0.elapsed() >= PACE * 5 / 2, "{:?}", t0.elapsed());
    }

    #[test]
    fn nicks_after_a_refusal() {
        assert_eq!(next_nick("bot", 1).unwrap(), "bot_");
        assert_eq!(next_nick("bot", 2).unwrap(), "bot__");
        let long = "a".repeat(30);
        assert_eq!(
            next_nick(&long, 1).unwrap(),
            format!("{}001", "a".repeat(27))
        );
        assert!(next_nick("bot", 21).is_none());
    }
}
