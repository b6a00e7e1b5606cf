//! The master's HTTP side.
