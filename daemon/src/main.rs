//! `trellisd`: the Trellis daemon. Exit codes: docs/operations.md, "Exit codes".

fn main() -> std::process::ExitCode {
    trellis_daemon::cli::main_from(std::env::args_os())
}
