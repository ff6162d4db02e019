//! The `pinnersage` binary: the command tree lives in the library (`pinnersage::Cli`); this
//! parses the command line with the configuration layered in and maps errors to exit codes.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use pinnersage::{Cli, config, failure};

/// mimalloc instead of glibc's malloc: the import, the online path and the batch allocate many
/// small, short-lived buffers (see docs/benchmarks.md, event import).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().collect();
    let layered = match config::layer(Cli::command(), &argv) {
        Ok(layered) => layered,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let matches = layered.command.get_matches_from(&argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match pinnersage::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: {}",
                failure::in_flag_terms(&format!("{e:#}"), &Cli::command())
            );
            ExitCode::from(failure::exit_code(failure::kind_of(&e)))
        }
    }
}
