//! `pinnersage-bench`, the benchmarks, apart from the shipped `pinnersage`: `cluster` (the
//! clustering engine on NPY inputs, here), `index` (recall and QPS against the exact scan),
//! `filter` (query-time filters through the engine), `serve` (an HTTP load generator),
//! `ingest` (durable ingest over HTTP or NATS), `items` (item changes while serving) and
//! `impressions` (synthetic experiment traffic for the report).

mod filter;
mod impressions;
mod index;
mod ingest;
mod items;
mod serve;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use pinnersage_core::distance::SqDistances;
use pinnersage_core::importance::DEFAULT_LAMBDA;
use pinnersage_core::profile::DEFAULT_ALPHA;
use pinnersage_core::ward::ward;
use serde_json::json;
use std::process::ExitCode;

use pinnersage::args::InputError;
use pinnersage::cluster::{clusterer, read_input};
use pinnersage_server::client::Conn;

/// A connection to the server at `addr` that sends the API token in the `PINNERSAGE_TOKEN`
/// environment variable, if set.
fn connect(addr: std::net::SocketAddr) -> Result<Conn> {
    let token = std::env::var("PINNERSAGE_TOKEN").ok();
    Ok(Conn::open(addr)?.with_token(token.as_deref()))
}

/// The same allocator as `pinnersage`, so that timings compare.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure pinnersage's speed on your own inputs (the benchmarks of docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "pinnersage-bench", version)]
struct BenchArgs {
    #[command(subcommand)]
    what: BenchCommand,
}

fn main() -> ExitCode {
    match run(&BenchArgs::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<InputError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    Cluster(BenchClusterArgs),
    Index(index::BenchIndexArgs),
    Filter(filter::BenchFilterArgs),
    Serve(serve::BenchServeArgs),
    Ingest(ingest::BenchIngestArgs),
    Items(items::BenchItemsArgs),
    Impressions(impressions::BenchImpressionsArgs),
}

/// Time a full profile build (distances, Ward, cut, medoids, importance) on one thread for each
/// embeddings file, and the distance and Ward steps alone; print the fastest of --repeat runs.
///
/// Used by scripts/compare_fastcluster.py to put pinnersage next to scipy and fastcluster on
/// identical inputs.
#[derive(Debug, Args)]
struct BenchClusterArgs {
    /// NPY embedding matrices (m x d), one user each.
    #[arg(required = true, value_name = "X.npy")]
    files: Vec<PathBuf>,
    /// Merge threshold (as in `pinnersage cluster`).
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    alpha: f64,
    /// Timed runs per file; the fastest is reported.
    #[arg(long, default_value_t = 20)]
    repeat: usize,
    /// Print one JSON object per file instead of a table.
    #[arg(long)]
    json: bool,
}

fn run(args: &BenchArgs) -> Result<()> {
    let args = match &args.what {
        BenchCommand::Cluster(a) => a,
        BenchCommand::Index(a) => return index::run(a),
        BenchCommand::Filter(a) => return filter::run(a),
        BenchCommand::Serve(a) => return serve::run(a),
        BenchCommand::Ingest(a) => return ingest::run(a),
        BenchCommand::Items(a) => return items::run(a),
        BenchCommand::Impressions(a) => return impressions::run(a),
    };
    if args.repeat == 0 {
        return Err(InputError("--repeat must be at least 1".into()).into());
    }
    if !args.json {
        println!(
            "{:<40} {:>6} {:>5} {:>12} {:>12} {:>10} {:>8}",
            "file", "m", "d", "profile ms", "distance ms", "ward ms", "clusters"
        );
    }
    for path in &args.files {
        let input = read_input(path, None, None)?;
        let (m, d) = (input.matrix.rows, input.matrix.cols);
        let actions = input.actions(path)?;
        let x = actions.embeddings();
        let mut clusterer = clusterer(args.alpha, DEFAULT_LAMBDA, m.max(1))?;
        let mut clusters = 0;
        let profile_ms = best_ms(args.repeat, || {
            clusters = clusterer
                .profile(&actions, input.now)
                .map(|p| p.clusters.len())
                .unwrap_or(0);
        });
        let mut dist = SqDistances::default();
        let distance_ms = best_ms(args.repeat, || dist.compute(x));
        let ward_ms = best_ms_with_setup(
            args.repeat,
            dist.clone(),
            |fresh| fresh.clone_from(&dist),
            |fresh| {
                ward(fresh);
            },
        );
        if args.json {
            println!(
                "{}",
                json!({"file": path, "m": m, "d": d, "profile_ms": profile_ms,
                       "distance_ms": distance_ms, "ward_ms": ward_ms, "clusters": clusters})
            );
        } else {
            println!(
                "{:<40} {:>6} {:>5} {:>12.4} {:>12.4} {:>10.4} {:>8}",
                path.display(),
                m,
                d,
                profile_ms,
                distance_ms,
                ward_ms,
                clusters
            );
        }
    }
    Ok(())
}

/// Runs `f` once to warm up, then `repeat` times, and returns the fastest wall time in ms (the
/// least disturbed by other work on the machine, as `timeit` recommends).
fn best_ms(repeat: usize, mut f: impl FnMut()) -> f64 {
    best_ms_with_setup(repeat, (), |_| {}, |_| f())
}

/// [`best_ms`] on a `state` that an untimed `setup` prepares before every run.
fn best_ms_with_setup<S>(
    repeat: usize,
    mut state: S,
    mut setup: impl FnMut(&mut S),
    mut f: impl FnMut(&mut S),
) -> f64 {
    setup(&mut state);
    f(&mut state);
    let mut times: Vec<f64> = (0..repeat)
        .map(|_| {
            setup(&mut state);
            let t = Instant::now();
            f(&mut state);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[0]
}
