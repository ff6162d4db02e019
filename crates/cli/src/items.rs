//! `pinnersage import items` and `pinnersage catalog`: the item catalog of a data directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use pinnersage_catalog::catalog::{Catalog, CatalogError};
use pinnersage_catalog::items::{ItemsOptions, import_items};
use serde_json::json;

use crate::InputError;

/// Where pinnersage keeps everything it owns (catalog, events, profiles, index).
#[derive(Debug, Clone, Args)]
pub struct DataDirArg {
    /// The data directory.
    #[arg(
        long,
        value_name = "DIR",
        env = "PINNERSAGE_DATA_DIR",
        default_value = "pinnersage-data"
    )]
    pub data_dir: PathBuf,
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
    /// The items file (.npy, .csv or .tsv).
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

/// Show the item catalog of a data directory, and look items up by id.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Item ids to look up (prints their row and embedding norm).
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Catalog errors caused by the user's input exit with code 2; I/O and corruption with 1.
fn classify(e: CatalogError) -> anyhow::Error {
    match e {
        CatalogError::Input(_) | CatalogError::Missing(_) => InputError(e.to_string()).into(),
        other => other.into(),
    }
}

pub fn run_import(args: &ImportItemsArgs) -> Result<()> {
    let start = Instant::now();
    let options = ItemsOptions {
        ids: args.ids.as_deref(),
        normalize: args.normalize,
        attributes: args.attributes.as_deref(),
        attributes_id_col: args.attributes_id_col.as_deref(),
    };
    let imported = import_items(&args.data.data_dir, &args.file, &options).map_err(classify)?;
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

pub fn run_catalog(args: &CatalogArgs) -> Result<()> {
    let catalog = Catalog::open(&args.data.data_dir).map_err(classify)?;
    let lookups: Vec<(String, Option<usize>)> = args
        .ids
        .iter()
        .map(|id| (id.clone(), catalog.row_of(id)))
        .collect();
    let norm = |row: usize| {
        catalog
            .embedding(row)
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    if args.json {
        let items: Vec<_> = lookups
            .iter()
            .map(|(id, row)| {
                let attributes = row
                    .and_then(|r| catalog.attributes(r))
                    .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok());
                json!({"id": id, "row": row, "norm": row.map(norm), "attributes": attributes})
            })
            .collect();
        println!(
            "{}",
            json!({"generation": catalog.dir(), "meta": catalog.meta(), "items": items})
        );
    } else {
        let meta = catalog.meta();
        println!(
            "{} items x {} dims ({}normalised), from {}\ngeneration {}",
            meta.rows,
            meta.dim,
            if meta.normalized { "L2-" } else { "not " },
            meta.source,
            catalog.dir().display()
        );
        for (id, row) in &lookups {
            match row {
                Some(r) => println!(
                    "{id}: row {r}, norm {:.4}{}",
                    norm(*r),
                    catalog
                        .attributes(*r)
                        .map_or(String::new(), |a| format!(", {a}"))
                ),
                None => println!("{id}: not in the catalog"),
            }
        }
    }
    if lookups.iter().any(|(_, row)| row.is_none()) {
        return Err(InputError("some ids are not in the catalog".into()).into());
    }
    Ok(())
}
