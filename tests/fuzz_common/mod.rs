//! The fuzz targets of autobot's parsers and protocol handlers, shared by the
//! short runs in `cargo test` (`tests/fuzz_*.rs`, a few hundred cases a target)
//! and the long run `cargo bench --bench fuzz -- --cases N`.
//!
//! Each target is a function `fn(cases) -> Report` that runs proptest cases of
//! structured, near-valid inputs (valid messages with mutated fields, INI files
//! with weird bytes, deep JSON, msgpack headers claiming GBs) as well as random
//! bytes, and fails on a panic, a case that runs too long, or a case that takes
//! more memory than its bound (see [`harness`]).

#![allow(dead_code)]

pub mod config;
pub mod gen;
pub mod harness;
pub mod intake;
pub mod protocol;
pub mod wire;

/// Every allocation of the binary that includes this module is counted.
#[global_allocator]
static ALLOC: harness::Counting = harness::Counting;
