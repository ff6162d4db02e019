//! `pinnersage import items` and `pinnersage import events`: data into a data directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};
use pinnersage_catalog::items::{ItemsOptions, import_items};
use pinnersage_pipeline::data_in::import_events::{ImportOptions, import_events};
use pinnersage_pipeline::exchange::import_profiles::import_profiles;

use crate::args::{DataDirArg, EventColumnArgs, ProfileTableArgs};
use crate::progress::Progress;

/// Import data into a data directory.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    Items(ImportItemsArgs),
    Events(ImportEventsArgs),
    Profiles(ImportProfilesArgs),
}

/// Runs `pinnersage import ...`.
pub fn run(command: &ImportCommand) -> Result<()> {
    match command {
        ImportCommand::Items(args) => run_items(args),
        ImportCommand::Events(args) => run_events(args),
        ImportCommand::Profiles(args) => run_profiles(args),
    }
}

/// Import item embeddings (and optional attributes) into the catalog of a data directory.
///
/// Accepted files:
///   ITEMS.parquet         an id column (id, item or item_id: strings or integers) and a list
///                         column of floats (embedding, vector, emb, or the first list column)
///   X.npy --ids IDS.txt   an m x d float16/32/64 NPY matrix and m ids, one per line
///   ITEMS.csv / .tsv      rows of id,v1,...,vd (a header line is detected and skipped)
///
/// Attributes (--attributes FILE) are what the API and the explorer page show beside an item:
/// a CSV/TSV with a header, JSON lines or Parquet, joined on the id column; every other column
/// becomes an attribute. The explorer uses `title`, `url` and `image_url` when present.
///
/// Every row is validated (dimension, finite values, non-empty and unique ids). The new catalog
/// replaces the current one only after the whole file was read: on any error the previous
/// catalog stays in place, untouched.
///
/// Examples:
///   pinnersage import items --data-dir data --ids movie_ids.txt --normalize item_emb.npy \
///       --attributes movies.csv --attributes-id-col movieId
///   pinnersage import items --data-dir data items.parquet --attributes items.parquet
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ImportItemsArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The items file (.parquet, .npy, .csv or .tsv).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// For NPY: the item ids, one per line, in row order.
    #[arg(long, value_name = "IDS.txt")]
    ids: Option<PathBuf>,
    /// L2-normalise every embedding (recommended for cosine-style models; the default alpha
    /// assumes normalised embeddings).
    #[arg(long)]
    normalize: bool,
    /// Item attributes to store with the catalog (.csv/.tsv with a header, .jsonl, .parquet).
    #[arg(long, value_name = "FILE")]
    attributes: Option<PathBuf>,
    /// The id column of the attributes file [default: id, item or item_id].
    #[arg(long, value_name = "NAME", requires = "attributes")]
    attributes_id_col: Option<String>,
}

/// Import engagement logs (user, item, time[, action, weight, id]) into the event store.
///
/// Files: .parquet, .csv/.tsv with a header line, or .jsonl (one JSON object per line). Timestamps are unix seconds, Arrow timestamps
/// (Parquet) or RFC 3339 (2018-09-24T10:00:00Z). Each file is validated completely before
/// any of it is stored (unless --skip-invalid); re-importing a file stores nothing twice.
/// Items not in the catalog are stored and counted; the batch ignores them until they exist.
///
/// Example:
///   pinnersage import events --data-dir data --user-col userId --item-col movieId ratings.csv
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ImportEventsArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Events files.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    columns: EventColumnArgs,
    /// Skip and count malformed rows instead of refusing the file.
    #[arg(long)]
    skip_invalid: bool,
}

/// Runs `pinnersage import items`.
pub fn run_items(args: &ImportItemsArgs) -> Result<()> {
    let options = ItemsOptions {
        ids: args.ids.as_deref(),
        normalize: args.normalize,
        attributes: args.attributes.as_deref(),
        attributes_id_col: args.attributes_id_col.as_deref(),
    };
    items(&args.data.data_dir, &args.file, &options)
}

/// Imports the items of `file` into `data_dir` and prints what was imported (the command's
/// work, which the quickstart calls too).
pub fn items(data_dir: &Path, file: &Path, options: &ItemsOptions<'_>) -> Result<()> {
    let start = Instant::now();
    let imported = import_items(data_dir, file, options)?;
    let summary = imported.catalog;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "imported {} items x {} dims{} into {} in {:.2} s ({:.0} items/s)",
        summary.meta.rows,
        summary.meta.dim,
        if summary.meta.normalized {
            ", L2-normalised"
        } else {
            ""
        },
        summary.generation.display(),
        secs,
        summary.meta.rows as f64 / secs.max(1e-9)
    );
    if let Some(a) = imported.attributes {
        println!(
            "attributes: {} of {} rows matched an item ({} unknown ids ignored); columns: {}{}",
            a.matched,
            a.rows,
            a.unknown_ids,
            a.columns.join(", "),
            if a.skipped_columns.is_empty() {
                String::new()
            } else {
                format!(
                    " (skipped, not text/number/boolean: {})",
                    a.skipped_columns.join(", ")
                )
            }
        );
    }
    Ok(())
}

/// Runs `pinnersage import events`.
pub fn run_events(args: &ImportEventsArgs) -> Result<()> {
    let options = ImportOptions {
        columns: args.columns.columns(),
        skip_invalid: args.skip_invalid,
    };
    events(&args.data.data_dir, &args.files, &options)
}

/// Imports the events of `files` into `data_dir` and prints what was stored (the command's
/// work, which the quickstart calls too).
pub fn events(data_dir: &Path, files: &[PathBuf], options: &ImportOptions) -> Result<()> {
    let start = Instant::now();
    let report = import_events(data_dir, files, options)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "read {} rows in {:.2} s ({:.0} rows/s): {} new events, {} already stored, {} invalid skipped{}",
        report.rows,
        secs,
        report.rows as f64 / secs.max(1e-9),
        report.inserted,
        report.duplicates,
        report.invalid,
        match report.unknown_items {
            Some(n) => format!(", {n} on items not in the catalog"),
            None => ", no catalog yet to check items against".into(),
        }
    );
    Ok(())
}

/// Publish profiles computed elsewhere (the Spark job, any engine) as a profile generation.
///
/// Reads Parquet files, or directories of them (a Spark output), with one row per cluster:
///   user string, rank int (0 = most important), medoid string, size int, importance double,
///   latest_time long, members list<string>
/// the schema `pinnersage batch --out` writes and `pinnersage.spark.build_profiles` returns.
///
/// Every row is validated before anything is published: medoid and members in the catalog, the
/// medoid among the members, importance finite and >= 0, ranks 0..k once per user, a user's
/// rows together. On any error the current generation stays, untouched. A running server
/// switches to the new generation like to a batch's; --now becomes its online boundary, and
/// --alpha and --lambda the online path's parameters: pass what the job used.
///
/// Example:
///   pinnersage import profiles --data-dir data --now 1537747200 --alpha 1.75 profiles/
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ImportProfilesArgs {
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    table: ProfileTableArgs,
}

/// Runs `pinnersage import profiles`.
pub fn run_profiles(args: &ImportProfilesArgs) -> Result<()> {
    let options = args.table.settings();
    let progress = Progress::new("users read", None);
    let result = import_profiles(&args.data.data_dir, &args.table.files, &options, &|users| {
        progress.update(users)
    });
    progress.finish();
    let report = result?;
    println!(
        "published {} profiles ({} clusters) from {} file(s) as {} in {:.2} s",
        report.users,
        report.clusters,
        report.files,
        report.generation.display(),
        report.seconds
    );
    Ok(())
}
