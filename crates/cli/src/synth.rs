//! `pinnersage synth`: synthetic data with known interests.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use crate::args::input;
use crate::progress::Progress;

/// Generate realistic synthetic data (Parquet) with known interests.
///
/// Items are L2-normalised topic mixtures; users have heavy-tailed activity over the window and
/// 1-30 drifting interests. Writes DIR/items.parquet (id, embedding) and DIR/events.parquet
/// (user, item, timestamp, action, true_interest), ready for `import items` / `import events`.
///
/// Example:
///   pinnersage synth --out synth --users 10000 --items 50000 --dim 64 --seed 7
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SynthArgs {
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of users.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Number of items.
    #[arg(long, default_value_t = 10_000)]
    items: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Random seed (same seed, same data).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of topics [default: items / 200, between 8 and 2,000].
    #[arg(long)]
    topics: Option<usize>,
    /// Mean actions per user.
    #[arg(long, default_value_t = 60.0)]
    mean_actions: f64,
    /// Days of history.
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// End of the history, unix seconds.
    #[arg(long, default_value_t = 1_700_000_000)]
    now: i64,
}

/// Runs `pinnersage synth`.
pub fn run(args: &SynthArgs) -> Result<()> {
    let config = pinnersage_catalog::synth::SynthConfig {
        users: args.users,
        items: args.items,
        dim: args.dim,
        seed: args.seed,
        topics: args.topics,
        days: args.days,
        now: args.now,
        mean_actions: args.mean_actions,
    };
    let start = Instant::now();
    let progress = Progress::new("users", Some(args.users as u64));
    let summary = pinnersage_catalog::synth::generate(&args.out, &config, &|done| {
        progress.update(done as u64)
    })
    .map_err(input)?;
    progress.finish();
    println!(
        "wrote {} items ({} topics) and {} events of {} users in {:.1} s:\n  {}\n  {}\nnext: pinnersage import items {} && pinnersage import events {} && pinnersage batch --now {}",
        args.items,
        summary.topics,
        summary.events,
        args.users,
        start.elapsed().as_secs_f64(),
        summary.items_file.display(),
        summary.events_file.display(),
        summary.items_file.display(),
        summary.events_file.display(),
        args.now
    );
    Ok(())
}
