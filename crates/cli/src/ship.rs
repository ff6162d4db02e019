//! `pinnersage ship`: profile tables into a fleet's shared directory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use pinnersage_pipeline::exchange::ship::ship_profiles;

use crate::args::{ProfileTableArgs, unix_nanos};

/// Ship profile tables to a fleet: a new generation in a shared directory that every replica
/// started with `serve --profiles-from DIR` imports, validates and switches to.
///
/// Reads the profile tables `pinnersage batch --out` writes and
/// `pinnersage.spark.build_profiles` returns (Parquet files, or directories of them), copies
/// them into DIR/gen-NNNNNN/ with a manifest of --now and the parameters, and switches
/// DIR/CURRENT to it atomically. Only the schema is checked here; each replica validates every
/// row against its catalog and keeps serving its current generation if it refuses one. One
/// publisher per shared directory. DIR may be a network mount, or a local directory copied to
/// the replicas (rsync the gen-* directory first, CURRENT last). See docs/fleet.md.
///
/// With --partitions P (the fleet's `serve --partitions`), the rows are split into one file per
/// partition (crc32(user) % P) and the popular list is counted over every user, so a replica
/// serving some partitions (`--consume-partitions`) reads only their files.
///
/// Examples:
///   pinnersage batch --data-dir batch-data --now 1537747200 --out /tmp/profiles.parquet
///   pinnersage ship --to /mnt/shared/profiles --now 1537747200 /tmp/profiles.parquet
///   pinnersage ship --to /mnt/shared/profiles --now 1537747200 --partitions 8 /tmp/profiles.parquet
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ShipArgs {
    /// The shared directory the replicas watch (`serve --profiles-from`).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Split the generation into one file per partition of the fleet's routing rule (the
    /// replicas' `--partitions`, 1..=1024).
    #[arg(long, value_name = "P")]
    partitions: Option<u32>,
    #[command(flatten)]
    table: ProfileTableArgs,
}

/// Runs `pinnersage ship`.
pub fn run(args: &ShipArgs) -> Result<()> {
    let (files, settings) = (&args.table.files, args.table.settings());
    let report = ship_profiles(&args.to, files, &settings, unix_nanos(), args.partitions)?;
    let layout = if args.partitions.is_some() {
        " (one per partition)"
    } else {
        ""
    };
    println!(
        "shipped {} file(s){layout} as {}",
        report.manifest.files.len(),
        report.generation.display()
    );
    Ok(())
}
