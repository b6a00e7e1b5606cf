//! The `autobot` binary: parse the command line and hand it to [`autobot::cli`].

fn main() -> std::process::ExitCode {
    autobot::cli::main()
}
