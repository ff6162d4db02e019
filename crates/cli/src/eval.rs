//! `pinnersage eval`: the paper's offline evaluation on any engagement log, through
//! [`pinnersage_eval::Evaluation`].

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use pinnersage_core::profile::DEFAULT_ALPHA;
use pinnersage_eval::evaluate::Budget;
use pinnersage_eval::evaluation::{ItemEmbeddings, SplitKind};
use pinnersage_eval::tune::TuneGrid;
use pinnersage_eval::{EvalFiles, EvalOptions, Evaluation};
use pinnersage_pipeline::data_in::movielens;

use crate::args::{EventColumnArgs, InputError, LearnMethodArg};
use crate::progress::Bars;

/// Reproduce the paper's offline evaluation (Recall, Relevance, lifts over the last-item
/// baseline) on an engagement log and item embeddings. Needs no data directory.
///
/// Each user's engagements are split by time (first 80% train, the rest test), or walked forward
/// by day (--split walk-forward); every method turns the training items into embeddings,
/// gets 400 distinct candidates (each embedding's exact cosine neighbours blended as served,
/// training items excluded; --budget per-embedding: the paper's floor(400/e) per embedding) and
/// is scored on the test items. Then PinnerSage is swept over alpha and over the number of sampled
/// embeddings e. Writes OUT/report.md, OUT/metrics.json, OUT/alpha-sweep.svg and
/// OUT/embeddings-sweep.svg.
///
/// Examples:
///   pinnersage eval --events ratings.csv --user-col userId --item-col movieId \
///     --weight-col rating --min-weight 3.5 --embeddings emb.npy --ids ids.txt --out eval-out
///   pinnersage eval movielens --dir examples/movielens-small --out eval-out
///   pinnersage eval movielens --dir examples/movielens-small --out eval-wf \
///     --split walk-forward --walk-forward-days 365 --no-sweeps
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    dataset: Option<EvalDataset>,
    #[command(flatten)]
    files: EvalFileArgs,
    #[command(flatten)]
    options: EvalOptionArgs,
}

#[derive(Debug, Subcommand)]
enum EvalDataset {
    Movielens(MovielensArgs),
}

/// Evaluate on the MovieLens layout: DIR/ratings.csv (userId,movieId,rating,timestamp),
/// DIR/item_emb_minilm_l6_v2.npy and DIR/item_emb_movieIds.txt (one movieId per row); titles for
/// the report's example users from DIR/movies.csv when present.
#[derive(Debug, Args)]
struct MovielensArgs {
    /// The MovieLens directory.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Embeddings file inside DIR.
    #[arg(long, default_value = movielens::EMBEDDINGS)]
    embeddings: String,
    /// Ratings below this are not engagements.
    #[arg(long, default_value_t = movielens::MIN_RATING as f32)]
    min_rating: f32,
    #[command(flatten)]
    options: EvalOptionArgs,
}

/// Input files of `pinnersage eval`.
#[derive(Debug, Args)]
struct EvalFileArgs {
    /// Engagements: CSV/TSV/JSON lines/Parquet with user, item and time columns.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Item embeddings: an n x d NPY (with --ids), or Parquet / CSV as `import items` reads them.
    #[arg(long, value_name = "FILE")]
    embeddings: Option<PathBuf>,
    /// For NPY embeddings: item ids, one per line, in the rows' order.
    #[arg(long, value_name = "FILE")]
    ids: Option<PathBuf>,
    /// Item attributes (CSV/TSV with a header, JSON lines or Parquet, joined on the item id):
    /// adds example users to the report, with each item's title (or name, or first text field).
    #[arg(long, value_name = "FILE")]
    items_meta: Option<PathBuf>,
    /// The id column of --items-meta (default: id, item or item_id).
    #[arg(long, value_name = "COLUMN")]
    items_meta_id_col: Option<String>,
    #[command(flatten)]
    columns: EventColumnArgs,
    /// Engagements with a smaller weight are dropped.
    #[arg(long, default_value_t = f32::NEG_INFINITY)]
    min_weight: f32,
}

/// Options shared by every evaluation.
#[derive(Debug, Clone, Args)]
struct EvalOptionArgs {
    /// Output directory for report.md, metrics.json and the sweeps' SVG plots.
    #[arg(long, value_name = "DIR", default_value = "eval-out")]
    out: PathBuf,
    /// How to split: per user by time (--train-fraction), or walk forward by day as the paper
    /// does (--walk-forward-days).
    #[arg(long, value_enum, default_value = "time")]
    split: SplitArg,
    /// Share of each user's engagements (by time) used for training (--split time).
    #[arg(long, default_value_t = 0.8)]
    train_fraction: f64,
    /// Test days of --split walk-forward: the last N days with engagements, each evaluated with
    /// everything before it as training.
    #[arg(long, default_value_t = 30, value_name = "N")]
    walk_forward_days: usize,
    /// Users with fewer training engagements are excluded (and counted).
    #[arg(long, default_value_t = 5)]
    min_train: usize,
    /// Candidates per user.
    #[arg(long, default_value_t = 400)]
    candidates: usize,
    /// How a method with e embeddings spends them: equal (every method gets N distinct
    /// candidates, each embedding's N neighbours blended until N, as served) or per-embedding
    /// (the paper's floor(N/e) per embedding, overlaps not refilled).
    #[arg(long, value_enum, default_value = "equal")]
    budget: BudgetArg,
    /// Ward merge threshold.
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    alpha: f64,
    /// Seed of medoid sampling and the bootstrap.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Item embeddings to evaluate with: the given ones, co-engagement embeddings learned from
    /// the training split (by --learned-method, as `pinnersage embed` learns them), or both
    /// (two tables).
    #[arg(long, value_enum, default_value = "both")]
    item_embeddings: EmbeddingsArg,
    /// How the co-engagement embeddings are learned (see `pinnersage embed --help`).
    #[arg(long, value_enum, default_value = "svd")]
    learned_method: LearnMethodArg,
    /// Dimension of the learned co-engagement embeddings.
    #[arg(long, alias = "svd-dim", default_value_t = 64)]
    learned_dim: usize,
    /// Alphas of the alpha sweep (PinnerSage sampling 3 medoids).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.5,1,1.5,1.75,2,2.5,3,4"
    )]
    sweep_alphas: Vec<f64>,
    /// Numbers of sampled medoids of the embeddings sweep (the paper's Fig. 7).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,8,10,15,20")]
    sweep_embeddings: Vec<usize>,
    /// Skip both sweeps (and their plots).
    #[arg(long)]
    no_sweeps: bool,
    /// Choose alpha and the retrieval options (selection, blend, global share) by Recall on a
    /// validation split carved from the training period (the latest 20% of each user's training
    /// engagements; the test split is not read until the choice is made), report the choice's
    /// test metrics next to the paper's configuration, and write OUT/tuned-<KIND>.toml for
    /// `batch --config` and `serve --config`.
    #[arg(long)]
    tune: bool,
    /// Alphas the tuner tries.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,1.75,2.5,4",
        requires = "tune"
    )]
    tune_alphas: Vec<f64>,
    /// Global-interest shares the tuner tries (0: none).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,0.25,0.5",
        requires = "tune"
    )]
    tune_global_shares: Vec<f64>,
}

/// How engagements are split into training and test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SplitArg {
    /// Per user by time.
    Time,
    /// The last N days, each trained on all earlier days.
    WalkForward,
}

/// How the candidate budget is shared among a method's embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BudgetArg {
    Equal,
    PerEmbedding,
}

/// Which item embeddings an evaluation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EmbeddingsArg {
    Given,
    #[value(alias = "svd")]
    Learned,
    Both,
}

impl EvalOptionArgs {
    /// The library's options from the flags.
    fn options(&self) -> EvalOptions {
        EvalOptions {
            split: match self.split {
                SplitArg::Time => SplitKind::Time,
                SplitArg::WalkForward => SplitKind::WalkForward,
            },
            train_fraction: self.train_fraction,
            walk_forward_days: self.walk_forward_days,
            min_train: self.min_train,
            candidates: self.candidates,
            budget: match self.budget {
                BudgetArg::Equal => Budget::Equal,
                BudgetArg::PerEmbedding => Budget::PerEmbedding,
            },
            alpha: self.alpha,
            seed: self.seed,
            bootstrap: self.bootstrap,
            item_embeddings: match self.item_embeddings {
                EmbeddingsArg::Given => ItemEmbeddings::Given,
                EmbeddingsArg::Learned => ItemEmbeddings::Learned,
                EmbeddingsArg::Both => ItemEmbeddings::Both,
            },
            learner: self.learned_method.learner(self.learned_dim, self.seed),
            sweep_alphas: self.sweep_alphas.clone(),
            sweep_embeddings: self.sweep_embeddings.clone(),
            sweeps: !self.no_sweeps,
            tune: self.tune.then(|| TuneGrid {
                alphas: self.tune_alphas.clone(),
                globals: self.tune_global_shares.clone(),
                ..TuneGrid::default()
            }),
        }
    }
}

impl EvalFileArgs {
    /// The library's description of the input files, if both --events and --embeddings are
    /// given.
    fn files(&self) -> Option<EvalFiles> {
        Some(EvalFiles {
            events: self.events.clone()?,
            columns: self.columns.columns(),
            min_weight: self.min_weight,
            embeddings: self.embeddings.clone()?,
            ids: self.ids.clone(),
            items_meta: self.items_meta.clone(),
            items_meta_id_col: self.items_meta_id_col.clone(),
        })
    }
}

/// Runs `pinnersage eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let (files, options, title) = match (&args.dataset, args.files.files()) {
        (Some(EvalDataset::Movielens(m)), _) => (
            EvalFiles::movielens(&m.dir, &m.embeddings, m.min_rating),
            &m.options,
            format!("MovieLens ({})", m.dir.display()),
        ),
        (None, Some(files)) => {
            let title = files.events.display().to_string();
            (files, &args.options, title)
        }
        (None, None) => {
            return Err(InputError(
                "give --events and --embeddings (with --ids for NPY), or use `pinnersage eval movielens --dir DIR`"
                    .into(),
            )
            .into());
        }
    };
    let options_out = &options.out;
    let options = options.options();
    options.validate()?;
    let data = files.load()?;
    let output = Evaluation::run(&data, &options, &title, &Bars::new("units"))?;
    let written = output.write(options_out).map_err(anyhow::Error::from)?;
    print!("{}", output.markdown);
    eprintln!("wrote {} in {}", written.join(", "), options_out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Options {
        #[command(flatten)]
        options: EvalOptionArgs,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let parsed = Options::parse_from(["x"]);
        assert_eq!(parsed.options.options(), EvalOptions::default());
    }
}
