//! What the bot says: the answers to the manual's commands (`list builders`,
//! `status`, `watch`, `last`, `help`, `source`, `version`, and with `allowForce`
//! `force build` / `stop build`), `notify`, `mute`/`unmute`, and the announcements
//! of builds per each channel's events.
//!
//! Status comes from the database ([`crate::db::status`]: the one place that says
//! what `idle`, `building` and `offline` mean); force and stop go through the
//! engine's own calls ([`Engine::force`], [`Engine::stop_build`]), as the web's
//! forms do, with the user's nick as who. Slow work (a forced build's end, a stop
//! that waits for the Build to end) runs in tasks that send their answer later.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::conn::Sender;
use super::proto;
use crate::config::irc::EVENTS;
use crate::config::MasterConfig;
use crate::db::Db;
use crate::engine::{Engine, EngineEvent, ForceRequest};

/// A message to send later (from a task): `(target, text)`.
pub type Later = (String, String);

/// What one channel (or a user, in private) wants to hear.
#[derive(Debug, Clone, Default)]
struct Prefs {
    events: BTreeSet<String>,
    muted: bool,
}

/// The bot's state across connections.
pub struct Bot {
    engine: Engine,
    db: Db,
    config: watch::Receiver<Arc<MasterConfig>>,
    /// By lower-cased target (a channel, or a nick for private messages).
    prefs: HashMap<String, Prefs>,
    /// `watch BUILDER` and forced builds: (builder, number) → who to tell.
    watches: HashMap<(String, i64), Vec<String>>,
    /// Forced builds not started yet: BuildRequest id → who to tell.
    requests: HashMap<i64, Vec<String>>,
    /// Answers of tasks, sent when they come.
    later_tx: mpsc::UnboundedSender<Later>,
}

/// The command list `help commands` prints.
const COMMANDS: &[&str] = &[
    "list", "status", "watch", "last", "help", "commands", "source", "version", "notify", "mute",
    "unmute", "force", "stop",
];

impl Bot {
    pub fn new(
        engine: Engine,
        db: Db,
        config: watch::Receiver<Arc<MasterConfig>>,
    ) -> (Bot, mpsc::UnboundedReceiver<Later>) {
        let (later_tx, later_rx) = mpsc::unbounded_channel();
        (
            Bot {
                engine,
                db,
                config,
                prefs: HashMap::new(),
                watches: HashMap::new(),
                requests: HashMap::new(),
                later_tx,
            },
            later_rx,
        )
    }

    fn cfg(&self) -> Arc<MasterConfig> {
        self.config.borrow().clone()
    }

    fn prefs(&mut self, target: &str) -> &mut Prefs {
        let default: BTreeSet<String> = if target.starts_with(['#', '&', '+', '!']) {
            self.cfg()
                .irc
                .as_ref()
                .map(|i| i.notify.iter().cloned().collect())
                .unwrap_or_default()
        } else {
            BTreeSet::new()
        };
        self.prefs
            .entry(target.to_ascii_lowercase())
            .or_insert_with(|| Prefs {
                events: default,
                muted: false,
            })
    }

    /// Forget what channels asked for (`notify`, `mute`): after a reconfig of the
    /// IRC keys they start again from `ircNotify`. Users' own choices stay.
    pub fn reset_channels(&mut self) {
        self.prefs
            .retain(|t, _| !t.starts_with(['#', '&', '+', '!']));
    }

    /// Whether `target` is muted.
    pub fn muted(&self, target: &str) -> bool {
        self.prefs
            .get(&target.to_ascii_lowercase())
            .is_some_and(|p| p.muted)
    }

    /// A PRIVMSG from `nick` to `to` (a channel, or our nick): answer it if it is
    /// a command for us. `me` is the bot's nick now.
    pub async fn on_privmsg(&mut self, out: &Sender, me: &str, nick: &str, to: &str, text: &str) {
        if let Some((cmd, arg)) = proto::ctcp(text) {
            match cmd.as_str() {
                "VERSION" => {
                    out.notice(nick, &format!("\x01VERSION autobot {}\x01", crate::VERSION))
                }
                "PING" => out.notice(nick, &format!("\x01PING {arg}\x01")),
                _ => {}
            }
            return;
        }
        let private = proto::irc_eq(to, me);
        let command = if private {
            text.trim()
        } else {
            // `me: command`, `me, command` or `me command`.
            let t = text.trim_start();
            if t.len() < me.len()
                || !t.is_char_boundary(me.len())
                || !proto::irc_eq(&t[..me.len()], me)
            {
                return;
            }
            let rest = &t[me.len()..];
            match rest.chars().next() {
                Some(':' | ',' | ' ') => rest[1..].trim(),
                _ => return,
            }
        };
        let reply_to = if private { nick } else { to };
        if command.is_empty() {
            return;
        }
        let words: Vec<&str> = command.split_whitespace().collect();
        let verb = words[0].to_ascii_lowercase();
        if self.muted(reply_to) && verb != "unmute" {
            return;
        }
        tracing::info!("irc: {nick} in {to}: {command}");
        let lines = self.command(reply_to, nick, &words).await;
        for l in lines {
            out.say(reply_to, &l);
        }
    }

    async fn command(&mut self, target: &str, nick: &str, words: &[&str]) -> Vec<String> {
        let verb = words[0].to_ascii_lowercase();
        let args = &words[1..];
        let arg = |i: usize| args.get(i).copied().unwrap_or("");
        match verb.as_str() {
            "list" if arg(0).eq_ignore_ascii_case("builders") || args.is_empty() => {
                let names: Vec<String> =
                    self.cfg().builders().into_iter().map(|b| b.name).collect();
                vec![if names.is_empty() {
                    "no builders are configured".into()
                } else {
                    format!("Configured builders: {}", names.join(" "))
                }]
            }
            "list" => vec!["I can only list builders; try 'list builders'".into()],
            "status" => match arg(0) {
                "" | "all" => self.status(None).await,
                b => self.status(Some(b)).await,
            },
            "last" => match arg(0) {
                "" => vec!["last what? try 'last BUILDER' ('list builders' names them)".into()],
                b => self.last(b).await,
            },
            "watch" => match arg(0) {
                "" => vec!["watch what? try 'watch BUILDER'".into()],
                b => self.watch(target, b),
            },
            "help" => vec![help(arg(0))],
            "commands" => vec![help("commands")],
            "source" => {
                let cfg = self.cfg();
                let mut s = format!("I am autobot {}", crate::VERSION);
                if !cfg.buildbot_url.is_empty() {
                    s.push_str(&format!("; my status pages are at {}", cfg.buildbot_url));
                }
                if !cfg.project_url.is_empty() {
                    s.push_str(&format!("; the project is at {}", cfg.project_url));
                }
                vec![s]
            }
            "version" => vec![format!("My version is autobot {}", crate::VERSION)],
            "notify" => self.notify(target, args),
            "mute" => {
                self.prefs(target).muted = true;
                vec!["Shutting up for now (say 'unmute' when you want me back).".into()]
            }
            "unmute" => {
                self.prefs(target).muted = false;
                vec!["I'm back.".into()]
            }
            "force" | "stop" if !arg(0).eq_ignore_ascii_case("build") => {
                vec![format!("try '{verb} build BUILDER REASON'")]
            }
            "force" | "stop" if !self.cfg().allow_force => {
                vec![format!(
                    "{verb} is disabled on this master (allowForce = false in master.ini)"
                )]
            }
            // A nick proves nothing: where the web asks for a login, IRC cannot
            // offer one, so it does not force or stop at all.
            "force" | "stop" if !self.cfg().users.is_empty() => vec![format!(
                "{verb} needs a login on this master ([users] in master.ini), which IRC cannot give; use the web page or `autobot {}`",
                if verb == "force" { "force" } else { "stop-build" }
            )],
            "force" | "stop" if arg(1).is_empty() => {
                vec![format!(
                    "{verb} build which builder? try '{verb} build BUILDER REASON'"
                )]
            }
            "force" => self.force(target, nick, arg(1), &args[2..].join(" ")).await,
            "stop" => self.stop(target, nick, arg(1), &args[2..].join(" ")),
            _ => vec![format!(
                "I don't know the command '{}'; try 'help commands'",
                words[0]
            )],
        }
    }

    /// The configured builder named `name` with its slave, or the answer that
    /// there is none.
    fn builder(&self, name: &str) -> Result<(String, String), String> {
        let builders = self.cfg().builders();
        match builders.iter().find(|b| b.name == name) {
            Some(b) => Ok((b.name.clone(), b.slave.clone())),
            None => Err(format!(
                "no builder named '{name}'; the builders are: {}",
                builders
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        }
    }

    async fn status(&self, which: Option<&str>) -> Vec<String> {
        let builders: Vec<(String, String)> = match which {
            Some(name) => match self.builder(name) {
                Ok(b) => vec![b],
                Err(e) => return vec![e],
            },
            None => self
                .cfg()
                .builders()
                .into_iter()
                .map(|b| (b.name, b.slave))
                .collect(),
        };
        if builders.is_empty() {
            return vec!["no builders are configured".into()];
        }
        let status = match self.db.builder_status(builders).await {
            Ok(s) => s,
            Err(e) => return vec![format!("cannot read the status: {e}")],
        };
        let mut out = Vec::new();
        for s in status {
            let a = &s.activity;
            let mut line = format!("{}: {}", a.name, s.state.as_str());
            for r in &a.running {
                let step = match self.db.build(&a.name, r.number).await {
                    Ok(Some(d)) => d
                        .steps
                        .iter()
                        .rev()
                        .find(|st| st.started_at.is_some() && st.finished_at.is_none())
                        .map(|st| format!(" [{}]", st.name))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                line.push_str(&format!(", build #{}{step}", r.number));
            }
            if a.pending > 0 {
                line.push_str(&format!(", {} waiting", a.pending));
            }
            if let Some(l) = &a.last_build {
                line.push_str(&format!(
                    ", last build #{}: {}",
                    l.number,
                    result_word(l.result.as_deref().unwrap_or(""))
                ));
            }
            out.push(line);
        }
        out
    }

    async fn last(&self, name: &str) -> Vec<String> {
        if let Err(e) = self.builder(name) {
            return vec![e];
        }
        let rows = match self.db.builds(name, 20, None).await {
            Ok(r) => r,
            Err(e) => return vec![format!("cannot read the builds: {e}")],
        };
        match rows.iter().find(|r| r.finished_at.is_some()) {
            None => vec![format!("{name} has not finished a build yet")],
            Some(r) => {
                let ago = crate::calendar::now_f64() - r.finished_at.unwrap_or(r.started_at);
                vec![format!(
                    "last build #{} of {name} ({} ago): {}{}{}",
                    r.number,
                    duration(ago),
                    result_word(r.result.as_deref().unwrap_or("")),
                    bracket(&r.text),
                    self.url(name, r.number)
                )]
            }
        }
    }

    /// The numbers of `name`'s running builds, or the line that says why there
    /// are none (no such builder, nothing running).
    fn running_builds(&self, name: &str) -> Result<Vec<i64>, String> {
        self.builder(name)?;
        let running: Vec<i64> = self
            .engine
            .running()
            .into_iter()
            .filter(|(b, _)| b == name)
            .map(|(_, n)| n)
            .collect();
        if running.is_empty() {
            return Err(format!("no build of {name} is running"));
        }
        Ok(running)
    }

    fn watch(&mut self, target: &str, name: &str) -> Vec<String> {
        let running = match self.running_builds(name) {
            Ok(r) => r,
            Err(e) => return vec![e],
        };
        for n in &running {
            let who = self.watches.entry((name.to_string(), *n)).or_default();
            if !who.iter().any(|w| w == target) {
                who.push(target.to_string());
            }
        }
        let list: Vec<String> = running.iter().map(|n| format!("#{n}")).collect();
        vec![format!(
            "watching build {} of {name} until it finishes",
            list.join(", ")
        )]
    }

    fn notify(&mut self, target: &str, args: &[&str]) -> Vec<String> {
        let on = match args.first().map(|a| a.to_ascii_lowercase()).as_deref() {
            Some("on") => Some(true),
            Some("off") => Some(false),
            Some("list") | None => None,
            Some(other) => {
                return vec![format!(
                    "notify {other}? try 'notify on|off EVENT...' or 'notify list'; events: {}",
                    EVENTS.join(" ")
                )]
            }
        };
        if let Some(on) = on {
            let events: Vec<String> = args[1..].iter().map(|e| e.to_ascii_lowercase()).collect();
            if events.is_empty() {
                return vec![format!(
                    "notify {} which events? {}",
                    if on { "on" } else { "off" },
                    EVENTS.join(" ")
                )];
            }
            if let Some(bad) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
                return vec![format!(
                    "unknown event '{bad}'; the events are: {}",
                    EVENTS.join(" ")
                )];
            }
            let p = self.prefs(target);
            for e in events {
                if on {
                    p.events.insert(e);
                } else {
                    p.events.remove(&e);
                }
            }
        }
        let p = self.prefs(target);
        vec![if p.events.is_empty() {
            "The following events are being notified: none".to_string()
        } else {
            format!(
                "The following events are being notified: {}",
                p.events.iter().cloned().collect::<Vec<_>>().join(" ")
            )
        }]
    }

    async fn force(&mut self, target: &str, nick: &str, name: &str, reason: &str) -> Vec<String> {
        let req = ForceRequest {
            reason: if reason.trim().is_empty() {
                "forced on IRC".into()
            } else {
                reason.to_string()
            },
            who: Some(format!("{nick} (IRC)")),
            ..ForceRequest::default()
        };
        match self.engine.force(name, req).await {
            Ok(r) => {
                self.requests
                    .entry(r.request_id)
                    .or_default()
                    .push(target.to_string());
                vec![format!(
                    "build of {name} forced (request {}); I'll tell you when it finishes",
                    r.request_id
                )]
            }
            Err(e) => vec![format!("cannot force a build of {name}: {e}")],
        }
    }

    fn stop(&mut self, target: &str, nick: &str, name: &str, reason: &str) -> Vec<String> {
        let running = match self.running_builds(name) {
            Ok(r) => r,
            Err(e) => return vec![e],
        };
        let reason = if reason.trim().is_empty() {
            "stopped on IRC".to_string()
        } else {
            reason.to_string()
        };
        for n in &running {
            let (engine, later) = (self.engine.clone(), self.later_tx.clone());
            let (name, who, reason, target) = (
                name.to_string(),
                format!("{nick} (IRC)"),
                reason.clone(),
                target.to_string(),
            );
            let n = *n;
            tokio::spawn(async move {
                let text = match engine.stop_build(&name, n, &who, &reason).await {
                    Ok(()) => format!("build #{n} of {name} stopped"),
                    Err(e) => format!("cannot stop build #{n} of {name}: {e}"),
                };
                let _ = later.send((target, text));
            });
        }
        vec![format!(
            "stopping build {} of {name}",
            running
                .iter()
                .map(|n| format!("#{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )]
    }

    fn url(&self, builder: &str, number: i64) -> String {
        let base = &self.cfg().buildbot_url;
        if base.is_empty() {
            return String::new();
        }
        format!(
            "  Build details are at {}",
            crate::links::under(base, &crate::links::build_path(builder, number))
        )
    }

    /// Announce what an engine event means to every target that asked for it.
    /// `channels`: the channels joined now.
    pub async fn on_event(&mut self, out: &Sender, channels: &[String], ev: &EngineEvent) {
        match ev {
            EngineEvent::BuildStarted {
                builder, number, ..
            } => {
                let mut told: Vec<String> = Vec::new();
                if !self.requests.is_empty() {
                    if let Ok(Some(d)) = self.db.build(builder, *number).await {
                        for r in &d.requests {
                            if let Some(who) = self.requests.remove(r) {
                                for w in who {
                                    out.say(
                                        &w,
                                        &format!("build #{number} of {builder} started (forced)"),
                                    );
                                    told.push(w.clone());
                                    let list =
                                        self.watches.entry((builder.clone(), *number)).or_default();
                                    if !list.contains(&w) {
                                        list.push(w);
                                    }
                                }
                            }
                        }
                    }
                }
                let text = format!("build #{number} of {builder} started");
                for t in self.targets(channels, &["started"]) {
                    if !told.iter().any(|w| proto::irc_eq(w, &t)) {
                        out.say(&t, &text);
                    }
                }
            }
            EngineEvent::BuildFinished {
                builder,
                number,
                result,
                text,
                requeued,
            } => {
                let watchers = self
                    .watches
                    .remove(&(builder.clone(), *number))
                    .unwrap_or_default();
                if *requeued {
                    for w in watchers {
                        out.say(&w, &format!("build #{number} of {builder} was interrupted ({text}); it will run again"));
                    }
                    return;
                }
                let previous = self.previous_result(builder, *number).await;
                let failing = |r: &str| r == "failure" || r == "exception";
                let mut events = vec!["finished", result.as_str()];
                if failing(result) && !previous.as_deref().is_some_and(failing) {
                    events.push("problem");
                }
                if !failing(result) && previous.as_deref().is_some_and(failing) {
                    events.push("recovery");
                }
                let line = format!(
                    "build #{number} of {builder} is complete: {}{}{}",
                    result_word(result),
                    bracket(text),
                    self.url(builder, *number)
                );
                let mut told: Vec<String> = Vec::new();
                for w in watchers {
                    if !self.muted(&w) {
                        out.say(&w, &line);
                    }
                    told.push(w);
                }
                for t in self.targets(channels, &events) {
                    if !told.iter().any(|w| proto::irc_eq(w, &t)) {
                        out.say(&t, &line);
                    }
                }
            }
            _ => {}
        }
    }

    /// Channels joined and users who asked, not muted, wanting any of `events`.
    fn targets(&mut self, channels: &[String], events: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for c in channels {
            let p = self.prefs(c);
            if !p.muted && events.iter().any(|e| p.events.contains(*e)) {
                out.push(c.clone());
            }
        }
        for (t, p) in &self.prefs {
            if !t.starts_with(['#', '&', '+', '!'])
                && !p.muted
                && events.iter().any(|e| p.events.contains(*e))
            {
                out.push(t.clone());
            }
        }
        out
    }

    /// The result of the newest finished build of `builder` before `number`.
    async fn previous_result(&self, builder: &str, number: i64) -> Option<String> {
        let rows = self.db.builds(builder, 20, Some(number)).await.ok()?;
        rows.into_iter()
            .find(|r| r.finished_at.is_some() && r.result.is_some())
            .and_then(|r| r.result)
    }
}

/// `Success`, `Failure`, … as Buildbot's bot says them.
fn result_word(r: &str) -> String {
    match r {
        "" => "no result".into(),
        r => {
            let mut c = r.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        }
    }
}

fn bracket(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(" [{t}]")
    }
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days", s / 86400),
    }
}

/// `help COMMAND`, `help commands`.
fn help(what: &str) -> String {
    match what.to_ascii_lowercase().as_str() {
        "" => "Get help on what? (try 'help COMMAND', or 'help commands' for a command list)".into(),
        "commands" => format!("Buildbot commands: {}", COMMANDS.join(", ")),
        "list" => "list builders - List the configured builders".into(),
        "status" => "status [BUILDER|all] - What the builder (or every builder) is doing now".into(),
        "watch" => "watch BUILDER - Announce the result of the build running on BUILDER when it finishes".into(),
        "last" => "last BUILDER - The result of the last build to run on BUILDER".into(),
        "help" => "help COMMAND - Describe a command ('help commands' lists them)".into(),
        "source" => "source - Where my status pages and the project are".into(),
        "version" => "version - Which autobot I am".into(),
        "notify" => format!("notify on|off EVENT... - Announce (or not) these events here; notify list - what is announced. Events: {}", EVENTS.join(" ")),
        "mute" => "mute - Say nothing here until 'unmute'".into(),
        "unmute" => "unmute - Talk again after 'mute'".into(),
        "force" => "force build BUILDER REASON - Start a build of the latest code on BUILDER (needs allowForce); your nick is recorded".into(),
        "stop" => "stop build BUILDER REASON - Stop the build running on BUILDER (needs allowForce); REASON goes into the build's text".into(),
        other => format!("No usage info for '{other}'; try 'help commands'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(result_word("failure"), "Failure");
        assert_eq!(bracket(" failed compile "), " [failed compile]");
        assert_eq!(duration(125.0), "2 min");
        assert!(help("force").starts_with("force build BUILDER REASON"));
        assert!(help("nonsense").contains("help commands"));
    }
}
