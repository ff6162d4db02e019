//! `pinnersage batch`: the daily batch, run here or handed to the server that owns the event
//! store.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use pinnersage_core::error::{ErrorKind, Failure};
use pinnersage_pipeline::batch::{
    BatchConfig, BatchError, BatchRequest, BatchSummary, DEFAULT_CHUNK_USERS, Shard, run_batch,
};
use pinnersage_server::handoff::{Handoff, HandoffError};
use pinnersage_store::events::EventStoreError;

use crate::args::{DataDirArg, InputError, ProfileArgs, unix_now};
use crate::failure::with_hint;
use crate::progress::Progress;

/// Run the daily batch: cluster every user's recent events into a new profile generation.
///
/// Users are streamed from the event store and clustered in parallel; the new generation becomes
/// visible atomically when complete (servers keep reading the previous one until then).
///
/// Example:
///   pinnersage batch --data-dir data --now 1537747200 --window-days 90
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BatchArgs {
    #[command(flatten)]
    pub(crate) data: DataDirArg,
    /// End of the window and reference time of importance, unix seconds [default: now].
    #[arg(long, value_name = "UNIX_SECONDS", allow_negative_numbers = true)]
    now: Option<i64>,
    #[command(flatten)]
    pub(crate) profile: ProfileArgs,
    /// Process only shard I of N (users with hash(user) mod N = I), to split the work.
    #[arg(long, value_name = "I/N", value_parser = Shard::parse)]
    shard: Option<Shard>,
    /// Users clustered per parallel chunk.
    #[arg(long, default_value_t = DEFAULT_CHUNK_USERS, hide = true)]
    chunk_users: usize,
    /// Also write the profiles as Parquet for the data lake (one row per cluster).
    #[arg(long, value_name = "profiles.parquet")]
    out: Option<PathBuf>,
    /// Publish even a generation computed for an older --now than the current one's, or with
    /// under half its users (refused otherwise: a mistyped --now would serve stale profiles).
    #[arg(long)]
    force: bool,
    /// Also cut every user's clusters at these alphas (a comma list, or repeat the flag; at
    /// most 4): variants stored beside the generation's profiles, for experiment arms that
    /// compare alphas (`alpha = ...` in an arm of `serve --experiments`). Each costs a cut, not
    /// a clustering.
    #[arg(long = "variant-alpha", value_name = "ALPHA", value_delimiter = ',')]
    variant_alphas: Vec<f64>,
}

/// Runs `pinnersage batch`.
pub fn run(args: &BatchArgs) -> Result<()> {
    let config = BatchConfig {
        settings: args.profile.settings(args.now.unwrap_or_else(unix_now)),
        shard: args.shard,
        chunk_users: args.chunk_users,
        parquet_out: args.out.clone(),
        force: args.force,
        variant_alphas: args.variant_alphas.clone(),
    };
    batch(&args.data.data_dir, &config)
}

/// Runs the batch `config` over `data_dir`, here or through the server that owns its event
/// store, and prints what it did (the command's work, which the quickstart calls too).
pub fn batch(data_dir: &Path, config: &BatchConfig) -> Result<()> {
    let progress = Progress::new("users clustered", None);
    let result = run_batch(data_dir, config, &|users| progress.update(users));
    progress.finish();
    if let Err(BatchError::Events(EventStoreError::InUse { .. })) = &result {
        return run_batch_on_server(data_dir, config);
    }
    let summary = result.map_err(|e| match e {
        BatchError::Refused(_) => with_hint(e, "pass --force to publish it anyway"),
        other => other.into(),
    })?;
    print_summary(&summary, None);
    if let Some(out) = &config.parquet_out {
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// Prints what a batch did, here or on the server at `served_by`.
fn print_summary(summary: &BatchSummary, served_by: Option<std::net::SocketAddr>) {
    println!(
        "batch: {} users, {} actions, clusters per user mean {:.1} / p50 {} / p99 {}, {:.2} s ({:.0} users/s)",
        summary.users,
        summary.actions,
        summary.clusters_mean,
        summary.clusters_p50,
        summary.clusters_p99,
        summary.seconds,
        summary.users as f64 / summary.seconds.max(1e-9)
    );
    for variant in &summary.variants {
        println!(
            "variant alpha {}: clusters per user mean {:.1}",
            variant.alpha, variant.clusters_mean
        );
    }
    if summary.unknown_item_events > 0 || summary.users_without_known_items > 0 {
        println!(
            "skipped {} events on items not in the catalog ({} users had no known items)",
            summary.unknown_item_events, summary.users_without_known_items
        );
    }
    match served_by {
        None => println!("published {}", summary.generation.display()),
        Some(addr) => println!(
            "published {} (served now by http://{addr})",
            summary.generation.display()
        ),
    }
}

/// A running server owns the event store: ask it to run the batch (it then serves the new
/// generation at once and drops the online actions the batch covers).
fn run_batch_on_server(data_dir: &Path, config: &BatchConfig) -> Result<()> {
    if config.shard.is_some() || config.parquet_out.is_some() {
        return Err(InputError(format!(
            "a server owns the event store of {}; --shard and --out need it stopped (or run the batch through it without them)",
            data_dir.display()
        ))
        .into());
    }
    let token = std::env::var("PINNERSAGE_TOKEN").ok();
    let mut server = Handoff::connect(data_dir, token.as_deref()).map_err(|e| match e {
        HandoffError::NoRecord { .. } | HandoffError::Stale { .. } => Failure::new(
            ErrorKind::Conflict,
            format!(
                "the event store of {} is in use by another process, and {e}",
                data_dir.display()
            ),
        )
        .into(),
        e => anyhow::Error::from(e),
    })?;
    let addr = server.addr();
    eprintln!("a server at http://{addr} owns the event store: running the batch there");
    let summary = server
        .batch(&BatchRequest::from(config))
        .context("the server's batch failed")?;
    print_summary(&summary, Some(addr));
    Ok(())
}
