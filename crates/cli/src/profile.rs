//! `pinnersage profile`: a user's interests from the current profile generation.

use anyhow::Result;
use clap::Args;
use pinnersage_store::profiles::ProfileStore;
use serde_json::json;

use crate::args::{DataDirArg, InputError};

/// Show a user's interests from the current profile generation.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The user id.
    #[arg(long)]
    user: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `pinnersage profile`.
pub fn run(args: &ProfileArgs) -> Result<()> {
    let store = ProfileStore::open(&args.data.data_dir)?;
    let profile = store.get(&args.user)?.ok_or_else(|| {
        InputError(format!(
            "no profile for user {:?} in {}",
            args.user,
            store.dir().display()
        ))
    })?;
    if args.json {
        let clusters: Vec<_> = profile
            .clusters
            .iter()
            .map(|c| json!({"medoid": c.medoid, "size": c.size, "importance": c.importance, "latest_time": c.latest_time}))
            .collect();
        println!(
            "{}",
            json!({"user": args.user, "now": store.meta().settings.now, "clusters": clusters})
        );
    } else {
        println!(
            "user {}: {} interests (batch at {}, generation {})",
            args.user,
            profile.clusters.len(),
            store.meta().settings.now,
            store.dir().display()
        );
        println!(
            "{:>4} {:>6} {:>12} {:>12}  medoid item",
            "#", "size", "importance", "latest"
        );
        for (k, c) in profile.clusters.iter().enumerate() {
            // Old actions decay to tiny importances: keep them readable.
            let importance = if c.importance != 0.0 && c.importance < 1e-3 {
                format!("{:.3e}", c.importance)
            } else {
                format!("{:.4}", c.importance)
            };
            let (rank, size, latest) = (k + 1, c.size, c.latest_time);
            println!(
                "{rank:>4} {size:>6} {importance:>12} {latest:>12}  {}",
                c.medoid
            );
        }
    }
    Ok(())
}
