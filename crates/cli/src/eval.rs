//! `pinnersage eval`: the paper's offline evaluation on any engagement log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pinnersage_catalog::npy;
use pinnersage_core::profile::DEFAULT_ALPHA;
use pinnersage_eval::methods::default_methods;
use pinnersage_eval::split::{Engagement, SplitParams, split_by_time};
use pinnersage_eval::svd::{SvdParams, item_embeddings};
use pinnersage_eval::{EvalConfig, evaluate};
use pinnersage_pipeline::import_events::{EventColumns, ImportOptions, read_events};

use crate::InputError;
use crate::progress::Progress;

/// Reproduce the paper's offline evaluation (Recall, Relevance, lifts over the last-item
/// baseline) on an engagement log and item embeddings. Needs no data directory.
///
/// Each user's engagements are split by time (first 80% train, the rest test); every method
/// turns the training items into embeddings, retrieves floor(400/e) exact cosine neighbours per
/// embedding (training items excluded) and is scored on the test items. Writes
/// OUT/report.md and OUT/metrics.json.
///
/// Examples:
///   pinnersage eval --events ratings.csv --user-col userId --item-col movieId \
///     --weight-col rating --min-weight 3.5 --embeddings emb.npy --ids ids.txt --out eval-out
///   pinnersage eval movielens --dir ml-latest-small --out eval-out
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    dataset: Option<EvalDataset>,
    #[command(flatten)]
    files: Option<EvalFiles>,
    #[command(flatten)]
    options: EvalOptions,
}

#[derive(Debug, Subcommand)]
enum EvalDataset {
    Movielens(MovielensArgs),
}

/// Evaluate on the MovieLens layout: DIR/ratings.csv (userId,movieId,rating,timestamp),
/// DIR/item_emb_minilm_l6_v2.npy and DIR/item_emb_movieIds.txt (one movieId per row).
#[derive(Debug, Args)]
struct MovielensArgs {
    /// The MovieLens directory.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Embeddings file inside DIR.
    #[arg(long, default_value = "item_emb_minilm_l6_v2.npy")]
    embeddings: String,
    /// Ratings below this are not engagements.
    #[arg(long, default_value_t = 3.5)]
    min_rating: f32,
    #[command(flatten)]
    options: EvalOptions,
}

/// Input files of `pinnersage eval`.
#[derive(Debug, Args)]
struct EvalFiles {
    /// Engagements: CSV/TSV/JSON lines/Parquet with user, item and time columns.
    #[arg(long, value_name = "FILE", required = false)]
    events: PathBuf,
    /// Item embeddings (n x d NPY).
    #[arg(long, value_name = "X.npy", required = false)]
    embeddings: PathBuf,
    /// Item ids, one per line, in the rows' order.
    #[arg(long, value_name = "FILE", required = false)]
    ids: PathBuf,
    /// User id column.
    #[arg(long, default_value = "user")]
    user_col: String,
    /// Item id column.
    #[arg(long, default_value = "item")]
    item_col: String,
    /// Time column (unix seconds or RFC 3339).
    #[arg(long, default_value = "timestamp")]
    time_col: String,
    /// Weight column (for example a rating); see --min-weight.
    #[arg(long, default_value = "weight")]
    weight_col: String,
    /// Engagements with a smaller weight are dropped.
    #[arg(long, default_value_t = f32::NEG_INFINITY)]
    min_weight: f32,
}

/// Options shared by every evaluation.
#[derive(Debug, Clone, Args)]
struct EvalOptions {
    /// Output directory for report.md and metrics.json.
    #[arg(long, value_name = "DIR", default_value = "eval-out")]
    out: PathBuf,
    /// Share of each user's engagements (by time) used for training.
    #[arg(long, default_value_t = 0.8)]
    train_fraction: f64,
    /// Users with fewer training engagements are excluded (and counted).
    #[arg(long, default_value_t = 5)]
    min_train: usize,
    /// Candidates per user (floor(N/e) per embedding).
    #[arg(long, default_value_t = 400)]
    candidates: usize,
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
    /// the training split (truncated SVD of the user x item matrix), or both (two tables).
    #[arg(long, value_enum, default_value = "both")]
    item_embeddings: ItemEmbeddings,
    /// Dimension of the learned co-engagement embeddings.
    #[arg(long, default_value_t = 64)]
    svd_dim: usize,
}

/// Which item embeddings an evaluation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ItemEmbeddings {
    Given,
    Svd,
    Both,
}

/// Runs `pinnersage eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    match (&args.dataset, &args.files) {
        (Some(EvalDataset::Movielens(m)), _) => {
            let files = EvalFiles {
                events: m.dir.join("ratings.csv"),
                embeddings: m.dir.join(&m.embeddings),
                ids: m.dir.join("item_emb_movieIds.txt"),
                user_col: "userId".into(),
                item_col: "movieId".into(),
                time_col: "timestamp".into(),
                weight_col: "rating".into(),
                min_weight: m.min_rating,
            };
            run_files(
                &files,
                &m.options,
                &format!("MovieLens ({})", m.dir.display()),
            )
        }
        (None, Some(files)) => run_files(files, &args.options, &files.events.display().to_string()),
        (None, None) => Err(InputError(
            "give --events, --embeddings and --ids, or use `pinnersage eval movielens --dir DIR`"
                .into(),
        )
        .into()),
    }
}

fn run_files(files: &EvalFiles, options: &EvalOptions, title: &str) -> Result<()> {
    let matrix = npy::read(&files.embeddings)
        .and_then(npy::NpyArray::into_f32_matrix)
        .map_err(|e| InputError(e.to_string()))?;
    let ids_text = std::fs::read_to_string(&files.ids)
        .map_err(|e| InputError(format!("{}: {e}", files.ids.display())))?;
    let ids: Vec<&str> = ids_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if ids.len() != matrix.rows {
        return Err(InputError(format!(
            "{} has {} ids but {} has {} rows",
            files.ids.display(),
            ids.len(),
            files.embeddings.display(),
            matrix.rows
        ))
        .into());
    }
    let mut row_of = HashMap::with_capacity(ids.len());
    for (row, id) in ids.iter().enumerate() {
        if row_of.insert(*id, row as u32).is_some() {
            return Err(InputError(format!(
                "{}: line {}: duplicate id {id:?}",
                files.ids.display(),
                row + 1
            ))
            .into());
        }
    }
    let read_options = ImportOptions {
        columns: EventColumns {
            user: files.user_col.clone(),
            item: files.item_col.clone(),
            time: files.time_col.clone(),
            weight: files.weight_col.clone(),
            ..EventColumns::default()
        },
        skip_invalid: false,
    };
    let (events, _) =
        read_events(&files.events, &read_options).map_err(|e| InputError(e.to_string()))?;
    let mut users: HashMap<String, u32> = HashMap::new();
    let (mut unknown, mut below) = (0u64, 0u64);
    let mut engagements = Vec::with_capacity(events.len());
    for e in &events {
        if e.weight < files.min_weight {
            below += 1;
            continue;
        }
        let Some(&row) = row_of.get(e.item.as_str()) else {
            unknown += 1;
            continue;
        };
        let next = users.len() as u32;
        let user = *users.entry(e.user.clone()).or_insert(next);
        engagements.push(Engagement {
            user,
            row,
            time: e.time,
        });
    }
    let split = SplitParams {
        train_fraction: options.train_fraction,
        min_train: options.min_train,
        min_test: 1,
    };
    if !(split.train_fraction > 0.0 && split.train_fraction < 1.0) {
        return Err(InputError("--train-fraction must be in (0, 1)".into()).into());
    }
    let (splits, excluded) = split_by_time(&engagements, split);
    eprintln!(
        "{} engagements of {} users ({} below --min-weight, {} on items without an embedding); \
         {} users evaluated, {} with too little history",
        engagements.len(),
        users.len(),
        below,
        unknown,
        splits.len(),
        excluded
    );
    let config = EvalConfig {
        methods: default_methods(),
        candidates: options.candidates,
        alpha: options.alpha,
        seed: options.seed,
        bootstrap: options.bootstrap,
    };
    let mut kinds: Vec<(&str, String, Vec<f32>, usize)> = Vec::new();
    if options.item_embeddings != ItemEmbeddings::Svd {
        kinds.push((
            "given",
            format!(
                "given embeddings ({}, {} dims)",
                files.embeddings.display(),
                matrix.cols
            ),
            matrix.data,
            matrix.cols,
        ));
    }
    if options.item_embeddings != ItemEmbeddings::Given {
        if options.svd_dim == 0 {
            return Err(InputError("--svd-dim must be at least 1".into()).into());
        }
        let params = SvdParams {
            dim: options.svd_dim,
            seed: options.seed,
            ..SvdParams::default()
        };
        let (emb, _) = item_embeddings(&splits, ids.len(), params);
        let dim = emb.len() / ids.len().max(1);
        kinds.push((
            "svd",
            format!("co-engagement embeddings (truncated SVD of the training split, {dim} dims)"),
            emb,
            dim,
        ));
    }
    let mut markdown = format!("# Offline evaluation: {title}\n");
    let mut json = serde_json::Map::new();
    for (key, label, vectors, dim) in &kinds {
        eprintln!("evaluating with {label}");
        let progress =
            std::sync::Mutex::new(Progress::new("users evaluated", Some(splits.len() as u64)));
        let report = evaluate(vectors, *dim, &splits, excluded, &config, &|n| {
            if let Ok(p) = progress.lock() {
                p.update(n);
            }
        })
        .map_err(InputError)?;
        progress.into_inner().expect("not poisoned").finish();
        markdown.push('\n');
        markdown.push_str(&report.to_markdown(&format!("Item embeddings: {label}")));
        json.insert((*key).to_string(), serde_json::to_value(&report)?);
    }
    write_outputs(&options.out, &markdown, &serde_json::Value::Object(json))?;
    print!("{markdown}");
    eprintln!(
        "wrote {}/report.md and {}/metrics.json",
        options.out.display(),
        options.out.display()
    );
    Ok(())
}

fn write_outputs(out: &Path, markdown: &str, report: &serde_json::Value) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("report.md"), markdown)
        .with_context(|| format!("writing {}", out.join("report.md").display()))?;
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(out.join("metrics.json"), json + "\n")
        .with_context(|| format!("writing {}", out.join("metrics.json").display()))?;
    Ok(())
}
