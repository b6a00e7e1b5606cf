//! The `autobot` binary: parse the command line and hand it to [`autobot::cli`].

/// Rust's allocations go to jemalloc: it gives back what a burst of work used
/// (see `autobot::memory`).
#[global_allocator]
static ALLOCATOR: autobot::memory::Allocator = autobot::memory::Allocator {};

fn main() -> std::process::ExitCode {
    autobot::cli::main()
}
