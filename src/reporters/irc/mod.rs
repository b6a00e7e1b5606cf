//! The IRC bot (Buildbot's `words.IRC`): joins `ircChannels` on `ircHost`, answers
//! the manual's commands when addressed (`botname: status`) or in private
//! messages, and announces builds per `ircNotify` and each channel's `notify`.
//!
//! [`run`] is the whole bot: it connects (`conn`: TCP or TLS, a free nick,
//! NickServ, paced output), reads the server and the engine's events
//! ([`crate::engine::Engine::subscribe`]) and answers through `bot`. When the
//! server goes away it reconnects with backoff (1 s doubling to 60 s, with some
//! jitter) and rejoins; a reconfig that changes the IRC keys reconnects with the
//! new ones, and one that removes `ircHost` ends the bot's connection. A lagging
//! event stream is skipped over (an announcement may be lost; a Build never
//! waits for IRC).

mod bot;
mod conn;
pub mod proto;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::config::irc::IrcConfig;
use crate::config::MasterConfig;
use crate::db::Db;
use crate::engine::Engine;

pub use conn::{next_nick, IrcError};

/// First wait before reconnecting; doubled after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A connection that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);

/// Run the IRC bot until `shutdown` turns true. Idle (waiting for a reconfig)
/// while `ircHost` is not set.
pub async fn run(
    engine: Engine,
    db: Db,
    config: watch::Receiver<Arc<MasterConfig>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut bot, mut later) = bot::Bot::new(engine.clone(), db, config.clone());
    let mut config = config;
    let mut backoff = MIN_BACKOFF;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let irc = config.borrow_and_update().irc.clone();
        let Some(irc) = irc else {
            tokio::select! {
                r = config.changed() => if r.is_err() { return },
                _ = shutdown.changed() => {}
            }
            continue;
        };
        let started = tokio::time::Instant::now();
        match session(
            &irc,
            &mut bot,
            &mut later,
            &engine,
            &mut config,
            &mut shutdown,
        )
        .await
        {
            Ended::Shutdown => return,
            Ended::Reconfig => {
                bot.reset_channels();
                backoff = MIN_BACKOFF;
                continue;
            }
            Ended::Lost(e) => {
                if started.elapsed() >= STABLE {
                    backoff = MIN_BACKOFF;
                }
                // Jitter (up to a quarter) so that many bots do not come back at once.
                let jitter = Duration::from_millis(
                    (std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.subsec_millis() as u64)
                        .unwrap_or(0)
                        * backoff.as_millis() as u64)
                        / 4000,
                );
                let wait = backoff + jitter;
                tracing::warn!("irc: {e}; connecting again in {:.1} s", wait.as_secs_f64());
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    r = config.changed() => if r.is_err() { return } else { backoff = MIN_BACKOFF },
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// How a session ended.
enum Ended {
    Shutdown,
    /// The IRC keys changed.
    Reconfig,
    Lost(IrcError),
}

async fn session(
    irc: &IrcConfig,
    bot: &mut bot::Bot,
    later: &mut tokio::sync::mpsc::UnboundedReceiver<bot::Later>,
    engine: &Engine,
    config: &mut watch::Receiver<Arc<MasterConfig>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let mut s = tokio::select! {
        r = conn::Session::open(irc) => match r {
            Ok(s) => s,
            Err(e) => return Ended::Lost(e),
        },
        _ = stopped(shutdown) => return Ended::Shutdown,
    };
    let mut events = engine.subscribe();
    // Channels the server says we are in (a JOIN of our own), for announcements.
    let mut joined: Vec<String> = Vec::new();
    loop {
        // Events first: an announcement goes out before the answer to a command
        // that came after the build ended.
        tokio::select! {
            biased;
            _ = stopped(shutdown) => {
                s.quit("the master is shutting down").await;
                return Ended::Shutdown;
            }
            ev = events.recv() => match ev {
                Ok(ev) => bot.on_event(&s.sender, &joined, &ev).await,
                Err(RecvError::Lagged(n)) => tracing::warn!("irc: fell {n} engine events behind; some announcements were skipped"),
                Err(RecvError::Closed) => { s.quit("the master stopped").await; return Ended::Shutdown }
            },
            m = s.next() => {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => return Ended::Lost(e),
                };
                let me = s.nick.clone();
                match m.command.as_str() {
                    "PRIVMSG" => {
                        let (to, text) = (m.param(0).to_string(), m.param(1).to_string());
                        bot.on_privmsg(&s.sender, &me, m.nick(), &to, &text).await;
                    }
                    "JOIN" if proto::irc_eq(m.nick(), &me) => {
                        let c = m.param(0).to_string();
                        tracing::info!("irc: joined {c} on {}", s.server);
                        if !joined.iter().any(|j| proto::irc_eq(j, &c)) {
                            joined.push(c);
                        }
                    }
                    "PART" if proto::irc_eq(m.nick(), &me) => {
                        joined.retain(|j| !proto::irc_eq(j, m.param(0)));
                    }
                    "KICK" if proto::irc_eq(m.param(1), &me) => {
                        let c = m.param(0).to_string();
                        tracing::warn!("irc: kicked from {c} by {} ({}); joining again", m.nick(), m.param(2));
                        joined.retain(|j| !proto::irc_eq(j, &c));
                        s.sender.raw(proto::line("JOIN", &[&c], None));
                    }
                    // Cannot join: full, invite-only, banned, bad key, no such channel.
                    "471" | "473" | "474" | "475" | "403" | "405" => {
                        tracing::warn!("irc: cannot join {}: {}", m.param(1), m.param(2));
                    }
                    _ => {}
                }
            }
            Some((target, text)) = later.recv() => {
                if !bot.muted(&target) {
                    s.sender.say(&target, &text);
                }
            }
            r = config.changed() => {
                if r.is_err() {
                    s.quit("the master stopped").await;
                    return Ended::Shutdown;
                }
                let now = config.borrow_and_update().irc.clone();
                if now.as_ref() != Some(irc) {
                    tracing::info!("irc: the IRC keys changed; connecting again with the new ones");
                    s.quit("reconfigured").await;
                    return Ended::Reconfig;
                }
            }
        }
    }
}

/// Returns once `rx` is true (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
