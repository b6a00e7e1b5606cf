//! HTML building blocks for the status pages: the page layout (header,
//! navigation, footer), links and URLs, and the small formatters (times,
//! durations, result colours) the pages share.
//!
//! Pages are built with maud's `html!`, a template engine checked at compile time
//! that escapes every value it inserts, in text and in attribute values alike:
//! nothing from a Change, a slave, a user, a build or a log reaches a page
//! unescaped, and there is no escaping call to forget. The only raw HTML is
//! constant text and what maud itself rendered. URL path segments are
//! percent-encoded with the `percent-encoding` crate ([`seg`]: everything but
//! RFC 3986's unreserved characters) before maud writes them into an `href`.
//! Control characters other than tab and newline, which a template engine leaves
//! as they are (a terminal's colour codes in a log), are replaced by U+FFFD in a
//! page's final text ([`no_controls`]).

use maud::{html, Markup, PreEscaped, DOCTYPE};

/// The stylesheet, script and icon, compiled in so the binary works alone.
pub const CSS: &str = include_str!("../../assets/autobot.css");
pub const JS: &str = include_str!("../../assets/autobot.js");
pub const FAVICON: &[u8] = include_bytes!("../../assets/favicon.ico");
/// The default `robots.txt`: a CI master's pages are for people, not crawlers.
pub const ROBOTS: &str = "User-agent: *\nDisallow: /\n";

pub use crate::links::{seg, unseg};

/// Whether `c` is a control character a page must not carry raw.
fn is_bad_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// `s` with every control character other than tab, newline and carriage return
/// replaced by U+FFFD. The pages' own markup has none, so this touches only the
/// values the template engine inserted; `s` comes back as it was (no copy) when
/// it has none, the common case.
pub fn no_controls(s: String) -> String {
    // C0 controls and DEL are single bytes; C1 controls (U+0080..U+009F) start
    // with the byte 0xC2 in UTF-8.
    let suspect = s
        .bytes()
        .any(|b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f || b == 0xc2);
    if !suspect || !s.chars().any(is_bad_control) {
        return s;
    }
    s.chars()
        .map(|c| if is_bad_control(c) { '\u{FFFD}' } else { c })
        .collect()
}

/// The CSS class of a result (`success`, …; `running` while `None`).
pub fn result_class(result: Option<&str>) -> &'static str {
    match result {
        None => "running",
        Some("success") => "success",
        Some("warnings") => "warnings",
        Some("failure") => "failure",
        Some("skipped") => "skipped",
        Some("exception") => "exception",
        Some("cancelled") => "cancelled",
        Some(_) => "exception",
    }
}

/// A result's icon, so a result is not told by colour alone (the word goes
/// beside it): ✔ success, ⚠ warnings, ✘ failure, ! exception, ⊘ cancelled,
/// » skipped, ⟳ running.
pub fn result_icon(result: Option<&str>) -> &'static str {
    match result_class(result) {
        "success" => "\u{2714}",
        "warnings" => "\u{26A0}",
        "failure" => "\u{2718}",
        "cancelled" => "\u{2298}",
        "skipped" => "\u{00BB}",
        "running" => "\u{27F3}",
        _ => "!",
    }
}

/// A build's tests as words (`12 passed, 1 failed`; `—` when none were
/// counted).
pub fn tests_text(c: &crate::db::webview::BuildCounts) -> String {
    let Some(t) = &c.tests else {
        return "—".into();
    };
    let mut parts = vec![format!("{} passed", t.passed)];
    for (n, w) in [
        (t.failed, "failed"),
        (t.skipped, "skipped"),
        (t.xfailed, "xfailed"),
        (t.xpassed, "xpassed"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {w}"));
        }
    }
    parts.join(", ")
}

/// A unix time as `YYYY-MM-DD HH:MM:SS` UTC (no time-zone database needed).
pub fn fmt_time(t: f64) -> String {
    if !t.is_finite() || t < 0.0 {
        return "?".into();
    }
    crate::calendar::ymd_hms(t as i64)
}

/// A duration in seconds as `1h 02m 03s` / `2m 03s` / `4.2s`.
pub fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    if secs < 10.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s:02}s"),
        (h, m, s) => format!("{h}h {m:02}m {s:02}s"),
    }
}

/// Options of one page's frame.
#[derive(Default)]
pub struct Frame<'a> {
    pub title: &'a str,
    pub project_name: &'a str,
    pub project_url: &'a str,
    /// `data-live` of `<body>`: what the page script follows (`page` re-renders
    /// `<main>` on engine events; empty: nothing).
    pub live: &'a str,
    /// Read-only (public port): says so in the header.
    pub public: bool,
}

/// A whole page: `<head>` with the stylesheet, the navigation bar linking every
/// page kind, `body` inside `<main>`, and the script.
pub fn page(f: &Frame<'_>, body: &Markup) -> Markup {
    let project = if f.project_name.is_empty() {
        "autobot"
    } else {
        f.project_name
    };
    let linked = f.project_url.starts_with("http://") || f.project_url.starts_with("https://");
    html! {
        (DOCTYPE) "\n"
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (f.title) " — " (project) }
                link rel="stylesheet" href="/static/autobot.css";
                link rel="icon" href="/favicon.ico";
            }
            "\n"
            body data-live=(f.live) {
                header {
                    nav {
                        @if linked {
                            a.project href=(f.project_url) { (project) }
                        } @else {
                            span.project { (project) }
                        }
                        a href="/waterfall" { "Waterfall" }
                        a href="/console" { "Console" }
                        a #nav-my href="/my" { "My builds" }
                        a href="/builders" { "Builders" }
                        a href="/changes" { "Changes" }
                        a href="/slaves" { "Slaves" }
                        a href="/about" { "About" }
                        @if f.public {
                            span.readonly { "read-only" }
                        }
                        span #live-status .live-status {}
                    }
                }
                "\n"
                main #main { (body) }
                aside #shortcuts hidden aria-label="keyboard shortcuts" {
                    b { "Keys" } ": g w waterfall · g c console · g m my builds · g b builders · "
                    "g h changes · g s slaves · / search or filter · j / k next / previous · "
                    "e first error · ? this help"
                }
                "\n"
                script src="/static/autobot.js" defer {}
            }
        }
        "\n"
    }
}

/// Where [`page_halves`] cuts a page: markup no value can produce, since the
/// template engine escapes every `<` it inserts.
const BODY_MARK: &str = "<autobot-body-here/>";

/// A page's frame before and after its `<main>` content, for pages that stream
/// their body (a log): the same text [`page`] surrounds a body with.
pub fn page_halves(f: &Frame<'_>) -> (String, String) {
    let whole = page(f, &PreEscaped(BODY_MARK.to_string())).into_string();
    match whole.split_once(BODY_MARK) {
        Some((pre, post)) => (pre.to_string(), post.to_string()),
        None => (whole, String::new()),
    }
}

/// A link to a builder's page.
pub fn builder_link(name: &str) -> Markup {
    html! { a href={ "/builders/" (seg(name)) } { (name) } }
}

pub use crate::links::{build_path as build_url, log_path as log_url};

/// A URL from a Change or the configuration: a link when it is `http(s)`, plain
/// text otherwise (a `javascript:` URL never becomes a link).
pub fn safe_link(url: &str) -> Markup {
    html! {
        @if url.starts_with("http://") || url.starts_with("https://") {
            a href=(url) rel="noopener noreferrer" { (url) }
        } @else {
            (url)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_escapes_markup_and_quotes() {
        let evil = "<script>alert('x')</script> & \"q\"";
        let m = html! { p title=(evil) { (evil) } }.into_string();
        assert_eq!(
            m,
            "<p title=\"&lt;script&gt;alert('x')&lt;/script&gt; &amp; &quot;q&quot;\">\
             &lt;script&gt;alert('x')&lt;/script&gt; &amp; &quot;q&quot;</p>"
        );
        assert_eq!(
            no_controls("a\u{1b}[31mb\u{85}\t\n".into()),
            "a\u{FFFD}[31mb\u{FFFD}\t\n"
        );
        assert_eq!(no_controls("é ok\n".into()), "é ok\n");
    }

    #[test]
    fn frames_split_around_their_body() {
        let f = Frame {
            title: "t <b>",
            project_name: "P",
            ..Frame::default()
        };
        let (pre, post) = page_halves(&f);
        let body = PreEscaped("BODY".to_string());
        assert_eq!(format!("{pre}BODY{post}"), page(&f, &body).into_string());
        assert!(pre.contains("<title>t &lt;b&gt; — P</title>"), "{pre}");
        assert!(pre.ends_with("<main id=\"main\">"), "{pre}");
        let linked = Frame {
            project_url: "javascript:alert(1)",
            ..Frame::default()
        };
        assert!(!page(&linked, &body).into_string().contains("javascript"));
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(fmt_time(0.0), "1970-01-01 00:00:00");
        assert_eq!(fmt_time(1_700_000_000.5), "2023-11-14 22:13:20");
        assert_eq!(fmt_duration(3.25), "3.2s");
        assert_eq!(fmt_duration(125.0), "2m 05s");
        assert_eq!(fmt_duration(3723.0), "1h 02m 03s");
    }
}
