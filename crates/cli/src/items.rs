//! `pinnersage import items` and `pinnersage catalog`: the item catalog of a data directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use pinnersage_catalog::catalog::{Catalog, CatalogError};
use pinnersage_catalog::items::import_items;
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

/// Import item embeddings into the catalog of a data directory.
///
/// Accepted files:
///   X.npy --ids IDS.txt   an m x d float32/float64 NPY matrix and m ids, one per line
///   ITEMS.csv / .tsv      rows of id,v1,...,vd (a header line is detected and skipped)
///
/// Every row is validated (dimension, finite values, non-empty and unique ids). The new catalog
/// replaces the current one only after the whole file was read: on any error the previous
/// catalog stays in place, untouched.
///
/// Example:
///   pinnersage import items --data-dir data --ids movie_ids.txt --normalize item_emb.npy
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
    let summary = import_items(
        &args.data.data_dir,
        &args.file,
        args.ids.as_deref(),
        args.normalize,
    )
    .map_err(classify)?;
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
            .map(|(id, row)| json!({"id": id, "row": row, "norm": row.map(norm)}))
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
                Some(r) => println!("{id}: row {r}, norm {:.4}", norm(*r)),
                None => println!("{id}: not in the catalog"),
            }
        }
    }
    if lookups.iter().any(|(_, row)| row.is_none()) {
        return Err(InputError("some ids are not in the catalog".into()).into());
    }
    Ok(())
}
