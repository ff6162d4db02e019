//! `pinnersage`: the command-line entry point. Thin by design: argument parsing, file reading and
//! printing; the algorithms live in `pinnersage-core`.

mod batch;
mod bench;
mod bench_index;
mod bench_ingest;
mod bench_serve;
mod cluster;
mod eval;
mod http_client;
mod items;
mod progress;
mod quickstart;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Import(ImportCommand),
    Catalog(items::CatalogArgs),
    Batch(batch::BatchArgs),
    Profile(batch::ProfileArgs),
    Synth(batch::SynthArgs),
    #[command(subcommand)]
    Index(serve::IndexCommand),
    Serve(serve::ServeArgs),
    Eval(Box<eval::EvalArgs>),
    Bench(bench::BenchArgs),
}

/// Import data into a data directory.
#[derive(Debug, Subcommand)]
enum ImportCommand {
    Items(items::ImportItemsArgs),
    Events(batch::ImportEventsArgs),
}

/// An error caused by the user's input (bad file, bad value): exit code 2, like usage errors.
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Quickstart(args) => quickstart::run(&args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Import(ImportCommand::Items(args)) => items::run_import(&args),
        Command::Import(ImportCommand::Events(args)) => batch::run_import_events(&args),
        Command::Catalog(args) => items::run_catalog(&args),
        Command::Batch(args) => batch::run_batch_cmd(&args),
        Command::Profile(args) => batch::run_profile(&args),
        Command::Synth(args) => batch::run_synth(&args),
        Command::Index(cmd) => serve::run_index(&cmd),
        Command::Serve(args) => serve::run_serve(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<InputError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
