//! The paths of the web status's pages, with each name percent-encoded as one
//! URL path segment: the pages link with them, mail and IRC put them after
//! `buildbotURL`, and the CLI asks the JSON API by the same encoding. One encoder
//! (RFC 3986's unreserved characters stay, everything else is `%XX`), so a
//! builder named `a/b?c` is one segment everywhere.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What [`seg`] encodes: all but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode one URL path segment (or query value): only unreserved
/// characters stay, so a builder named `a/b?c` stays one segment.
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Decode a percent-encoded path segment (warp hands segments over raw); a `%`
/// not followed by two hex digits stays as it is, bytes that are not UTF-8
/// become U+FFFD.
pub fn unseg(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The path of a builder's page.
pub fn builder_path(builder: &str) -> String {
    format!("/builders/{}", seg(builder))
}

/// The path of a build's page.
pub fn build_path(builder: &str, number: i64) -> String {
    format!("/builders/{}/builds/{number}", seg(builder))
}

/// The path of a step log's HTML page.
pub fn log_path(builder: &str, number: i64, step: &str, log: &str) -> String {
    format!(
        "/builders/{}/builds/{number}/steps/{}/logs/{}",
        seg(builder),
        seg(step),
        seg(log)
    )
}

/// A page's address under a base URL (`buildbotURL`), with one `/` between.
pub fn under(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip() {
        let s = "a b/c?d%e&é~";
        assert_eq!(seg(s), "a%20b%2Fc%3Fd%25e%26%C3%A9~");
        assert_eq!(unseg(&seg(s)), s);
        assert_eq!(unseg("100%"), "100%");
        assert_eq!(unseg("%4"), "%4");
        assert_eq!(unseg("%ff"), "\u{FFFD}");
    }

    #[test]
    fn paths_keep_each_name_one_segment() {
        assert_eq!(build_path("a/b", 3), "/builders/a%2Fb/builds/3");
        assert_eq!(
            log_path("b", 1, "make check", "std/io"),
            "/builders/b/builds/1/steps/make%20check/logs/std%2Fio"
        );
        assert_eq!(
            under("http://ci.example/", &builder_path("x")),
            "http://ci.example/builders/x"
        );
    }
}
