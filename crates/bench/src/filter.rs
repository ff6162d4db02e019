//! `pinnersage-bench filter`: filtered similar-item queries through the serving engine: QPS and
//! recall@k against a brute-force filtered scan, per filter, next to the unfiltered query.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use pinnersage_catalog::filter::Filter;
use pinnersage_server::{ServeConfig, Server};

use pinnersage::args::{DataDirArg, InputError};

/// Measure query-time filters on a served data directory: for each filter, the share of the
/// catalog it matches, single-thread queries per second of `similar` (the filter applied inside
/// the ANN search, the exact scan when the graph cannot fill k) and recall@k against a
/// brute-force scan of the matching items.
///
/// Queries are --queries catalog items spread evenly over the catalog, each asked once (so the
/// medoid cache, which unfiltered queries use, starts cold for each).
///
/// Example (a `bucket` attribute 0..999 on every item, see docs/benchmarks.md):
///   pinnersage-bench filter --data-dir d --filter 'bucket<500' --filter 'bucket<50' --filter 'bucket<1'
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchFilterArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// A filter to measure (repeat it; conditions of one filter separated by `;`).
    #[arg(long = "filter", value_name = "CONDITIONS", required = true)]
    filters: Vec<String>,
    /// Neighbours per query.
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Query items.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
}

/// Runs `pinnersage-bench filter`.
pub fn run(args: &BenchFilterArgs) -> Result<()> {
    if args.queries == 0 || args.k == 0 {
        return Err(InputError("--queries and --k must be positive".into()).into());
    }
    let server = Server::open(&args.data.data_dir, ServeConfig::default())
        .map_err(|e| InputError(e.to_string()))?;
    let engine = server.engine();
    let catalog = engine.catalog();
    let rows = catalog.rows();
    let step = (rows / args.queries).max(1);
    let queries: Vec<usize> = (0..rows).step_by(step).take(args.queries).collect();
    println!(
        "{:<28} {:>9} {:>10} {:>9} {:>12}",
        "filter", "matches", "QPS", "recall", "exact scans"
    );
    let mut runs: Vec<(String, Option<Filter>)> = vec![("(none)".into(), None)];
    for text in &args.filters {
        let conditions: Vec<&str> = text.split(';').collect();
        runs.push((text.clone(), engine.filter(&conditions)?));
    }
    let attributes = engine.attributes();
    for (name, filter) in &runs {
        let matching = match filter {
            None => rows,
            Some(f) => (0..rows).filter(|&r| f.matches(attributes, r)).count(),
        };
        let fallbacks_before = engine
            .filtered_counters()
            .exact_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed);
        let start = Instant::now();
        let mut answers = Vec::with_capacity(queries.len());
        for &row in &queries {
            answers.push(engine.similar_filtered(catalog.id(row), args.k, filter.as_ref())?);
        }
        let seconds = start.elapsed().as_secs_f64();
        let fallbacks = engine
            .filtered_counters()
            .exact_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed)
            - fallbacks_before;
        let (mut found, mut total) = (0usize, 0usize);
        for (&row, got) in queries.iter().zip(&answers) {
            let keep = |r: u32| {
                r as usize != row
                    && filter
                        .as_ref()
                        .is_none_or(|f| f.matches(attributes, r as usize))
            };
            let truth =
                engine
                    .index()
                    .exact
                    .search_filtered(catalog.embedding(row), args.k, &keep)?;
            total += truth.len();
            found += truth
                .iter()
                .filter(|t| got.iter().any(|g| g.row == t.row))
                .count();
        }
        println!(
            "{:<28} {:>8.2}% {:>10.0} {:>9.4} {:>12}",
            name,
            100.0 * matching as f64 / rows as f64,
            queries.len() as f64 / seconds,
            found as f64 / total.max(1) as f64,
            fallbacks
        );
    }
    Ok(())
}
