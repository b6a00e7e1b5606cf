//! The slave daemon.
