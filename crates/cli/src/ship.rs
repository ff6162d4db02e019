//! `pinnersage ship`: profile tables into a fleet's shared directory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use pinnersage_pipeline::import_profiles::ImportProfilesOptions;
use pinnersage_pipeline::ship::{ShipError, ship_profiles};

use crate::args::{InputError, ProfileArgs};

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
/// Examples:
///   pinnersage batch --data-dir batch-data --now 1537747200 --out /tmp/profiles.parquet
///   pinnersage ship --to /mnt/shared/profiles --now 1537747200 /tmp/profiles.parquet
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ShipArgs {
    /// The shared directory the replicas watch (`serve --profiles-from`).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Profile tables: .parquet files or directories of them.
    #[arg(required = true, value_name = "PATH")]
    files: Vec<PathBuf>,
    /// The time the profiles were computed for, unix seconds (the job's `now`): the replicas'
    /// new online boundary.
    #[arg(long, value_name = "UNIX_SECONDS", allow_negative_numbers = true)]
    now: i64,
    /// What the profiles were computed with (pass the job's values).
    #[command(flatten)]
    profile: ProfileArgs,
}

/// Runs `pinnersage ship`.
pub fn run(args: &ShipArgs) -> Result<()> {
    let options = ImportProfilesOptions {
        now: args.now,
        window_days: args.profile.window_days,
        params: args.profile.params(),
    };
    let report = ship_profiles(&args.to, &args.files, &options).map_err(|e| match e {
        e @ ShipError::Io { .. } => anyhow::Error::from(e),
        e => InputError(e.to_string()).into(),
    })?;
    println!(
        "shipped {} file(s) as {}",
        report.manifest.files.len(),
        report.generation.display()
    );
    Ok(())
}
