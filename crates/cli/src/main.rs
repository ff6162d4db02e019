//! `pinnersage`: the command-line entry point. Thin by design: argument parsing, progress display
//! and printing, one module per command group; every capability is a library function of the
//! `pinnersage-*` crates.

mod args;
mod batch;
mod bench;
mod catalog;
mod cluster;
mod config;
mod embed;
mod eval;
mod http_client;
mod import;
mod index;
mod profile;
mod progress;
mod quickstart;
mod serve;
mod ship;
mod synth;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the import, the online path and the batch allocate many
/// small, short-lived buffers (see docs/benchmarks.md, event import).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// PinnerSage: multi-interest user profiles from item embeddings and engagement logs.
///
/// Each user's recent engagements are clustered with Ward's method, cut at a merge threshold
/// alpha, and every cluster is summarised by its medoid (a real item) and an importance that
/// decays with age. Recommendations sample medoids by importance and retrieve their neighbours.
#[derive(Debug, Parser)]
#[command(name = "pinnersage", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Quickstart(quickstart::QuickstartArgs),
    Cluster(cluster::ClusterArgs),
    #[command(subcommand)]
    Import(import::ImportCommand),
    Catalog(catalog::CatalogArgs),
    Batch(batch::BatchArgs),
    Profile(profile::ProfileArgs),
    Synth(synth::SynthArgs),
    #[command(subcommand)]
    Index(index::IndexCommand),
    Serve(Box<serve::ServeArgs>),
    Ship(ship::ShipArgs),
    Embed(embed::EmbedArgs),
    Eval(Box<eval::EvalArgs>),
    Bench(bench::BenchArgs),
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

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
    let result = match cli.command {
        Command::Quickstart(args) => quickstart::run(&args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Import(cmd) => import::run(&cmd),
        Command::Catalog(args) => catalog::run(&args),
        Command::Batch(args) => batch::run(&args),
        Command::Profile(args) => profile::run(&args),
        Command::Synth(args) => synth::run(&args),
        Command::Index(cmd) => index::run(&cmd),
        Command::Serve(args) => serve::run(&args),
        Command::Ship(args) => ship::run(&args),
        Command::Embed(args) => embed::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Config(cmd) => config::run(&cmd, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<args::InputError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
