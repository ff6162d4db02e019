//! `pinnersage catalog`: show the item catalog of a data directory and look items up.

use anyhow::Result;
use clap::Args;
use pinnersage_catalog::catalog::Catalog;
use serde_json::json;

use crate::args::{DataDirArg, InputError};

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

/// Runs `pinnersage catalog`.
pub fn run(args: &CatalogArgs) -> Result<()> {
    let catalog = Catalog::open(&args.data.data_dir)?;
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
        let changes = json!({
            "items": catalog.live_rows(),
            "rows_added": catalog.added_rows(),
            "rows_deleted": catalog.rows() - catalog.live_rows(),
            "journal_seq": catalog.applied_seq(),
        });
        println!(
            "{}",
            json!({"generation": catalog.dir(), "meta": catalog.meta(), "live": changes, "items": items})
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
        if catalog.rows() > meta.rows || catalog.live_rows() < meta.rows {
            println!(
                "changed while serving: {} items now ({} rows added, {} deleted or replaced; \
                 journal at change {})",
                catalog.live_rows(),
                catalog.added_rows(),
                catalog.rows() - catalog.live_rows(),
                catalog.applied_seq()
            );
        }
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
