//! HTML building blocks for the status pages: the one strict escape function every
//! string from a Change, slave, user, build or log goes through, URL path-segment
//! encoding, the page layout (header, navigation, footer) and the small formatters
//! (times, durations, result colours) the pages share.
//!
//! Pages are plain `String`s built with `push_str`/`format!`: no template engine,
//! so nothing is ever inserted unescaped by accident of a template's defaults —
//! every dynamic value is wrapped in [`esc`] (text and attributes alike) or
//! [`seg`] (inside a URL path).

use std::fmt::Write as _;

/// The stylesheet, script and icon, compiled in so the binary works alone.
pub const CSS: &str = include_str!("../../templates/web/autobot.css");
pub const JS: &str = include_str!("../../templates/web/autobot.js");
pub const FAVICON: &[u8] = include_bytes!("../../templates/web/favicon.ico");
/// The default `robots.txt`: a CI master's pages are for people, not crawlers.
pub const ROBOTS: &str = "User-agent: *\nDisallow: /\n";

/// Escape text for HTML content *and* quoted attribute values: `& < > " '` and
/// control characters other than tab/newline (which would otherwise reach the page
/// raw) are replaced.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    esc_into(&mut out, s);
    out
}

/// [`esc`] appending to `out` (for log pages that escape megabytes).
pub fn esc_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// Percent-encode one URL path segment (or query value): only unreserved
/// characters stay, so a builder named `a/b?c` stays one segment.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decode a percent-encoded path segment (warp hands segments over raw).
pub fn unseg(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        Some(_) => "exception",
    }
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
/// page kind, `body` (already escaped HTML) inside `<main>`, and the script.
pub fn page(f: &Frame<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let project = if f.project_name.is_empty() {
        "autobot".to_string()
    } else {
        f.project_name.to_string()
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} — {}</title>\
         <link rel=\"stylesheet\" href=\"/static/autobot.css\">\
         <link rel=\"icon\" href=\"/favicon.ico\"></head>\n\
         <body data-live=\"{}\"><header><nav>",
        esc(f.title),
        esc(&project),
        esc(f.live)
    );
    if f.project_url.starts_with("http://") || f.project_url.starts_with("https://") {
        let _ = write!(
            out,
            "<a class=\"project\" href=\"{}\">{}</a>",
            esc(f.project_url),
            esc(&project)
        );
    } else {
        let _ = write!(out, "<span class=\"project\">{}</span>", esc(&project));
    }
    out.push_str(
        "<a href=\"/waterfall\">Waterfall</a><a href=\"/builders\">Builders</a>\
         <a href=\"/changes\">Changes</a><a href=\"/slaves\">Slaves</a>\
         <a href=\"/about\">About</a>",
    );
    if f.public {
        out.push_str("<span class=\"readonly\">read-only</span>");
    }
    out.push_str(
        "<span id=\"live-status\" class=\"live-status\"></span></nav></header>\n<main id=\"main\">",
    );
    out.push_str(body);
    out.push_str("</main>\n<script src=\"/static/autobot.js\" defer></script></body></html>\n");
    out
}

/// A link to a builder's page.
pub fn builder_link(name: &str) -> String {
    format!("<a href=\"/builders/{}\">{}</a>", seg(name), esc(name))
}

/// The URL of a build's page.
pub fn build_url(builder: &str, number: i64) -> String {
    format!("/builders/{}/builds/{number}", seg(builder))
}

/// The URL of a step log's HTML page.
pub fn log_url(builder: &str, number: i64, step: &str, log: &str) -> String {
    format!(
        "/builders/{}/builds/{number}/steps/{}/logs/{}",
        seg(builder),
        seg(step),
        seg(log)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_controls() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("a\u{1b}[31mb\n"), "a\u{FFFD}[31mb\n");
    }

    #[test]
    fn segments_round_trip() {
        let s = "a b/c?d%e&é";
        assert_eq!(seg(s), "a%20b%2Fc%3Fd%25e%26%C3%A9");
        assert_eq!(unseg(&seg(s)), s);
        assert_eq!(unseg("100%"), "100%");
        assert_eq!(unseg("%4"), "%4");
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
