//! `pinnersage import events`, `pinnersage batch` and `pinnersage profile`.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use pinnersage_core::ProfileParams;
use pinnersage_core::importance::DEFAULT_LAMBDA;
use pinnersage_core::profile::{DEFAULT_ALPHA, DEFAULT_MAX_ACTIONS};
use pinnersage_pipeline::batch::{BatchConfig, BatchError, Shard, run_batch};
use pinnersage_pipeline::import_events::{EventColumns, ImportError, ImportOptions, import_events};
use pinnersage_store::events::EventStoreError;
use pinnersage_store::profiles::{ProfileStore, ProfileStoreError};
use serde_json::json;

use crate::InputError;
use crate::items::DataDirArg;
use crate::progress::Progress;

/// Import engagement logs (user, item, time[, action, weight, id]) into the event store.
///
/// Files: .csv/.tsv with a header line, or .jsonl (one JSON object per line). Timestamps are
/// unix seconds or RFC 3339 (2018-09-24T10:00:00Z). Each file is validated completely before
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
    /// Column (or JSON field) holding the user id.
    #[arg(long, default_value = "user")]
    user_col: String,
    /// Column holding the item id.
    #[arg(long, default_value = "item")]
    item_col: String,
    /// Column holding the time (unix seconds or RFC 3339).
    #[arg(long, default_value = "timestamp")]
    time_col: String,
    /// Column holding the action type (optional in the file).
    #[arg(long, default_value = "action")]
    action_col: String,
    /// Column holding the action weight (optional; default weight 1).
    #[arg(long, default_value = "weight")]
    weight_col: String,
    /// Column holding a unique event id (optional; makes retries idempotent).
    #[arg(long, default_value = "id")]
    id_col: String,
    /// Skip and count malformed rows instead of refusing the file.
    #[arg(long)]
    skip_invalid: bool,
}

/// Run the daily batch: cluster every user's recent events into a new profile generation.
///
/// Users are streamed from the event store and clustered in parallel; the new generation becomes
/// visible atomically when complete (servers keep reading the previous one until then).
///
/// Example:
///   pinnersage batch --data-dir data --now 1537747200 --window-days 90
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BatchArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// End of the window and reference time of importance, unix seconds [default: now].
    #[arg(long, value_name = "UNIX_SECONDS", allow_negative_numbers = true)]
    now: Option<i64>,
    /// Days of history per user.
    #[arg(long, default_value_t = 90)]
    window_days: u32,
    /// Merge threshold (see `pinnersage cluster --help`).
    #[arg(long, default_value_t = DEFAULT_ALPHA, allow_negative_numbers = true)]
    alpha: f64,
    /// Importance decay per day.
    #[arg(long = "lambda", default_value_t = DEFAULT_LAMBDA, allow_negative_numbers = true)]
    lambda: f64,
    /// Cluster only each user's most recent N actions.
    #[arg(long, default_value_t = DEFAULT_MAX_ACTIONS)]
    max_actions: usize,
    /// Process only shard I of N (users with hash(user) mod N = I), to split the work.
    #[arg(long, value_name = "I/N", value_parser = Shard::parse)]
    shard: Option<Shard>,
    /// Users clustered per parallel chunk.
    #[arg(long, default_value_t = 4096, hide = true)]
    chunk_users: usize,
    /// Also write the profiles as Parquet for the data lake (one row per cluster).
    #[arg(long, value_name = "profiles.parquet")]
    out: Option<PathBuf>,
}

/// Generate realistic synthetic data (Parquet) with known interests.
///
/// Items are L2-normalised topic mixtures; users have heavy-tailed activity over the window and
/// 1-30 drifting interests. Writes DIR/items.parquet (id, embedding) and DIR/events.parquet
/// (user, item, timestamp, action, true_interest), ready for `import items` / `import events`.
///
/// Example:
///   pinnersage synth --out synth --users 10000 --items 50000 --dim 64 --seed 7
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SynthArgs {
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of users.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Number of items.
    #[arg(long, default_value_t = 10_000)]
    items: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Random seed (same seed, same data).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of topics [default: items / 200, between 8 and 2,000].
    #[arg(long)]
    topics: Option<usize>,
    /// Mean actions per user.
    #[arg(long, default_value_t = 60.0)]
    mean_actions: f64,
    /// Days of history.
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// End of the history, unix seconds.
    #[arg(long, default_value_t = 1_700_000_000)]
    now: i64,
}

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

pub fn run_import_events(args: &ImportEventsArgs) -> Result<()> {
    let options = ImportOptions {
        columns: EventColumns {
            user: args.user_col.clone(),
            item: args.item_col.clone(),
            time: args.time_col.clone(),
            action: args.action_col.clone(),
            weight: args.weight_col.clone(),
            id: args.id_col.clone(),
        },
        skip_invalid: args.skip_invalid,
    };
    let start = Instant::now();
    let report =
        import_events(&args.data.data_dir, &args.files, &options).map_err(|e| match e {
            ImportError::Input(msg) => InputError(msg).into(),
            ImportError::Store(e @ EventStoreError::InUse { .. }) => {
                InputError(e.to_string()).into()
            }
            other => anyhow::Error::from(other),
        })?;
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

pub fn run_batch_cmd(args: &BatchArgs) -> Result<()> {
    let now = args.now.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    let config = BatchConfig {
        now,
        window_days: args.window_days,
        params: ProfileParams {
            alpha: args.alpha,
            lambda: args.lambda,
            max_actions: args.max_actions,
        },
        shard: args.shard,
        chunk_users: args.chunk_users,
        parquet_out: args.out.clone(),
    };
    let progress = Progress::new("users clustered", None);
    let result = run_batch(&args.data.data_dir, &config, &|users| {
        progress.update(users)
    });
    progress.finish();
    if let Err(BatchError::Events(EventStoreError::InUse { .. })) = &result {
        return run_batch_on_server(args, &config);
    }
    let summary = result.map_err(|e| match e {
        BatchError::Config(_) | BatchError::NoEvents { .. } | BatchError::Output(_) => {
            InputError(e.to_string()).into()
        }
        BatchError::Catalog(pinnersage_catalog::catalog::CatalogError::Missing(_)) => {
            InputError(e.to_string()).into()
        }
        other => anyhow::Error::from(other),
    })?;
    println!(
        "batch: {} users, {} actions, clusters per user mean {:.1} / p50 {} / p99 {}, {:.2} s ({:.0} users/s)",
        summary.users,
        summary.actions,
        summary.clusters_mean,
        summary.clusters_p50,
        summary.clusters_p99,
        summary.seconds,
        summary.users as f64 / summary.seconds.max(1e-9)
    );
    if summary.unknown_item_events > 0 || summary.users_without_known_items > 0 {
        println!(
            "skipped {} events on items not in the catalog ({} users had no known items)",
            summary.unknown_item_events, summary.users_without_known_items
        );
    }
    println!("published {}", summary.generation.display());
    if let Some(out) = &args.out {
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// A running server owns the event store: ask it to run the batch (it then serves the new
/// generation at once and drops the online actions the batch covers).
fn run_batch_on_server(args: &BatchArgs, config: &BatchConfig) -> Result<()> {
    let data_dir = &args.data.data_dir;
    if args.shard.is_some() || args.out.is_some() {
        return Err(InputError(format!(
            "a server owns the event store of {}; --shard and --out need it stopped (or run the batch through it without them)",
            data_dir.display()
        ))
        .into());
    }
    let file = crate::serve::server_file(data_dir);
    let addr: std::net::SocketAddr = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
        .ok_or_else(|| {
            InputError(format!(
                "the event store of {} is in use by another process, and {} does not name a running server",
                data_dir.display(),
                file.display()
            ))
        })?;
    eprintln!("a server at http://{addr} owns the event store: running the batch there");
    let body = json!({
        "now": config.now,
        "window_days": config.window_days,
        "alpha": config.params.alpha,
        "lambda": config.params.lambda,
        "max_actions": config.params.max_actions,
    });
    let (status, reply) = crate::http_client::Conn::open(addr)?
        .post_json("/v1/admin/batch", body.to_string().as_bytes())?;
    let reply: serde_json::Value = serde_json::from_slice(&reply)
        .with_context(|| format!("the server at {addr} answered HTTP {status} without JSON"))?;
    if status != 200 {
        let message = reply["error"]["message"]
            .as_str()
            .unwrap_or("unknown error");
        return Err(InputError(format!(
            "the server's batch failed (HTTP {status}): {message}"
        ))
        .into());
    }
    let seconds = reply["seconds"].as_f64().unwrap_or(0.0);
    let users = reply["users"].as_u64().unwrap_or(0);
    println!(
        "batch: {} users, {} actions, clusters per user mean {:.1} / p50 {} / p99 {}, {:.2} s ({:.0} users/s)",
        users,
        reply["actions"],
        reply["clusters_mean"].as_f64().unwrap_or(0.0),
        reply["clusters_p50"],
        reply["clusters_p99"],
        seconds,
        users as f64 / seconds.max(1e-9)
    );
    println!(
        "published {} (served now by http://{addr})",
        reply["generation"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub fn run_synth(args: &SynthArgs) -> Result<()> {
    let config = pinnersage_catalog::synth::SynthConfig {
        users: args.users,
        items: args.items,
        dim: args.dim,
        seed: args.seed,
        topics: args.topics,
        days: args.days,
        now: args.now,
        mean_actions: args.mean_actions,
    };
    let start = Instant::now();
    let progress = Progress::new("users", Some(args.users as u64));
    let summary = pinnersage_catalog::synth::generate(&args.out, &config, &|done| {
        progress.update(done as u64)
    })
    .map_err(InputError)?;
    progress.finish();
    println!(
        "wrote {} items ({} topics) and {} events of {} users in {:.1} s:\n  {}\n  {}\nnext: pinnersage import items {} && pinnersage import events {} && pinnersage batch --now {}",
        args.items,
        summary.topics,
        summary.events,
        args.users,
        start.elapsed().as_secs_f64(),
        summary.items_file.display(),
        summary.events_file.display(),
        summary.items_file.display(),
        summary.events_file.display(),
        args.now
    );
    Ok(())
}

pub fn run_profile(args: &ProfileArgs) -> Result<()> {
    let store = ProfileStore::open(&args.data.data_dir).map_err(|e| match e {
        ProfileStoreError::Missing(_) => InputError(e.to_string()).into(),
        other => anyhow::Error::from(other),
    })?;
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
            json!({"user": args.user, "now": store.meta().now, "clusters": clusters})
        );
    } else {
        println!(
            "user {}: {} interests (batch at {}, generation {})",
            args.user,
            profile.clusters.len(),
            store.meta().now,
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
