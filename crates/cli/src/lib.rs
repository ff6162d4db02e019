//! The `pinnersage` command line: one module per command group (argument parsing, progress and
//! printing around one library call each), shared by the `pinnersage` binary and the
//! `pinnersage-bench` benchmarks.

pub mod args;
pub mod batch;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod embed;
pub mod eval;
pub mod experiment;
pub mod failure;
pub mod fleet;
pub mod import;
pub mod index;
pub mod items;
pub mod profile;
pub mod progress;
pub mod quickstart;
pub mod serve;
pub mod ship;
pub mod synth;

use clap::{CommandFactory, Parser, Subcommand};

/// PinnerSage: multi-interest user profiles from item embeddings and engagement logs.
///
/// Each user's recent engagements are clustered with Ward's method, cut at a merge threshold
/// alpha, and every cluster is summarised by its medoid (a real item) and an importance that
/// decays with age. Recommendations sample medoids by importance and retrieve their neighbours.
///
/// Exit codes: 0 done; 2 the command cannot run as given (a bad file, value or flag, something
/// missing, a store in use by another process, a service down: the one-line error says which);
/// 1 an internal failure (the machine's, or a bug).
#[derive(Debug, Parser)]
#[command(name = "pinnersage", version, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command of `pinnersage`.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    #[command(subcommand)]
    Items(items::ItemsCommand),
    Serve(Box<serve::ServeArgs>),
    Ship(ship::ShipArgs),
    Embed(embed::EmbedArgs),
    Eval(Box<eval::EvalArgs>),
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// Runs one command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Quickstart(args) => quickstart::run(&args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Import(cmd) => import::run(&cmd),
        Command::Catalog(args) => catalog::run(&args),
        Command::Batch(args) => batch::run(&args),
        Command::Profile(args) => profile::run(&args),
        Command::Synth(args) => synth::run(&args),
        Command::Index(cmd) => index::run(&cmd),
        Command::Items(cmd) => items::run(&cmd),
        Command::Serve(args) => serve::run(&args),
        Command::Ship(args) => ship::run(&args),
        Command::Embed(args) => embed::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Fleet(cmd) => fleet::run(&cmd),
        Command::Experiment(cmd) => experiment::run(&cmd),
        Command::Config(cmd) => config::run(&cmd, Cli::command()),
    }
}
