//! `pinnersage embed`: item embeddings learned from the event store.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use pinnersage_core::als::AlsParams;
use pinnersage_core::learned::Learner;
use pinnersage_pipeline::data_in::embed::{EmbedOptions, learn, write};

use crate::args::{DataDirArg, InputError, LearnMethodArg, unix_now};
use crate::progress::Bars;

/// Learn item embeddings from engagements alone, for a team with logs but no item embeddings.
///
/// Reads the data directory's event store (`import events` stores events for items the catalog
/// does not have yet), builds the binary user x item matrix of the window and writes the items'
/// co-engagement embeddings, unit rows, by one of two methods:
///   als  implicit alternating least squares (Hu, Koren & Volinsky 2008), the default: every
///        unobserved (user, item) pair counts as a weak negative, an engagement 1 + --confidence
///        times as much; --iterations alternations of conjugate-gradient solves (multi-threaded)
///   svd  the truncated SVD's item factors V·Σ^½ (faster, no settings)
/// On MovieLens both lift every method over title embeddings, ALS the most
/// (docs/evaluation.md). Items engaged
/// by fewer than --min-users users are left out. Deterministic for --seed. Writes
/// OUT/items.npy and OUT/ids.txt for `import items`.
///
/// Example (logs only, no embeddings):
///   pinnersage import events --data-dir data events.csv
///   pinnersage embed --data-dir data --out learned --method als --dim 64
///   pinnersage import items --data-dir data --ids learned/ids.txt learned/items.npy
///   pinnersage index build --data-dir data && pinnersage batch --data-dir data
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct EmbedArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Output directory for items.npy and ids.txt.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// How the embeddings are learned.
    #[arg(long, value_enum, default_value = "als")]
    method: LearnMethodArg,
    /// Embedding dimension.
    #[arg(long, default_value_t = EmbedOptions::default().learner.dim())]
    dim: usize,
    /// End of the window, unix seconds [default: now].
    #[arg(long, value_name = "UNIX_SECONDS", allow_negative_numbers = true)]
    now: Option<i64>,
    /// Days of engagements used.
    #[arg(long, default_value_t = EmbedOptions::default().window_days)]
    window_days: u32,
    /// Items engaged by fewer distinct users get no embedding.
    #[arg(long, default_value_t = EmbedOptions::default().min_users)]
    min_users: usize,
    /// Seed of the random projection (svd) or of the initial factors (als).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// ALS: alternations (each re-solves all users, then all items).
    #[arg(long, default_value_t = AlsParams::default().iterations)]
    iterations: usize,
    /// ALS: weight of the factors' squared norms.
    #[arg(long, default_value_t = AlsParams::default().regularization)]
    regularization: f32,
    /// ALS: extra weight of an engagement over an unobserved pair.
    #[arg(long, default_value_t = AlsParams::default().confidence)]
    confidence: f32,
}

impl EmbedArgs {
    /// The method and its settings from the flags.
    fn learner(&self) -> Result<Learner, InputError> {
        Ok(match self.method.learner(self.dim, self.seed) {
            Learner::Als(defaults) => {
                let positive = |v: f32| v.is_finite() && v >= 0.0;
                if !positive(self.regularization) || !positive(self.confidence) {
                    return Err(InputError(
                        "--regularization and --confidence must be finite and >= 0".into(),
                    ));
                }
                Learner::Als(AlsParams {
                    iterations: self.iterations,
                    regularization: self.regularization,
                    confidence: self.confidence,
                    ..defaults
                })
            }
            svd => svd,
        })
    }
}

/// Runs `pinnersage embed`.
pub fn run(args: &EmbedArgs) -> Result<()> {
    let options = EmbedOptions {
        now: args.now.unwrap_or_else(unix_now),
        window_days: args.window_days,
        min_users: args.min_users,
        learner: args.learner()?,
    };
    embed(&args.data.data_dir, &options, &args.out)
}

/// Learns item embeddings from the events of `data_dir`, writes them to `out` and prints what
/// was learned (the command's work, which the quickstart calls too).
pub fn embed(data_dir: &Path, options: &EmbedOptions, out: &Path) -> Result<()> {
    let start = Instant::now();
    let learned = learn(data_dir, options, &Bars::new("events"))?;
    let (matrix, ids) = write(&learned, out)?;
    println!(
        "learned {} items x {} dims ({}) from {} engagements of {} users ({} rarer items left out) in {:.1} s",
        learned.ids.len(),
        learned.dim,
        options.learner.describe(),
        learned.engagements,
        learned.users,
        learned.rare_items,
        start.elapsed().as_secs_f64()
    );
    println!(
        "import them: pinnersage import items --data-dir {} --ids {} {}",
        data_dir.display(),
        ids.display(),
        matrix.display()
    );
    Ok(())
}
