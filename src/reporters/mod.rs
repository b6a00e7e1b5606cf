//! Status targets that follow the build engine's events and tell people: the IRC
//! bot ([`irc`]). They read status through [`crate::db`] and act only through the
//! engine's own calls; nothing below imports them, and none of them can slow a
//! Build down (each runs in its own task and drops what it cannot keep up with).

pub mod irc;
