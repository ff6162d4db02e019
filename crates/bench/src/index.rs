//! `pinnersage-bench index`: recall@k against the exact scan and single-thread QPS of the HNSW
//! index, for several ef_search values.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use pinnersage_catalog::npy;
use pinnersage_index::{
    AnnIndex, ExactIndex, HnswIndex, HnswLibrary, HnswParams, Metric, Quantization,
};
use serde_json::json;

use pinnersage::args::InputError;

/// Measure the HNSW index (hnswlib or usearch) against the exact scan on your vectors: build time, then
/// for each ef_search the recall@k and single-thread queries per second.
///
/// Used by scripts/compare_hnswlib.py to put both libraries, as pinnersage runs them, next
/// to hnswlib's Python package on identical vectors.
///
/// Example:
///   pinnersage-bench index --vectors items.npy --queries queries.npy --ef 16,32,64,128
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchIndexArgs {
    /// Item vectors (n x d NPY).
    #[arg(long, value_name = "X.npy")]
    vectors: PathBuf,
    /// Query vectors (q x d NPY).
    #[arg(long, value_name = "Q.npy")]
    queries: PathBuf,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// ef_search values to measure.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    ef: Vec<usize>,
    /// HNSW links per node (M).
    #[arg(long, default_value_t = 16)]
    connectivity: usize,
    /// HNSW ef_construction.
    #[arg(long, default_value_t = 128)]
    ef_construction: usize,
    /// Distance: cosine or l2.
    #[arg(long, default_value = "cosine")]
    metric: Metric,
    /// Vector storage: f32 or f16 (usearch).
    #[arg(long, default_value = "f32")]
    quantization: Quantization,
    /// HNSW library: hnswlib or usearch [default: hnswlib, usearch with --quantization f16].
    #[arg(long, value_name = "LIBRARY")]
    hnsw_library: Option<HnswLibrary>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

fn read(path: &PathBuf) -> Result<npy::MatrixF32> {
    Ok(npy::read(path)
        .and_then(npy::NpyArray::into_f32_matrix)
        .map_err(|e| InputError(e.to_string()))?)
}

/// Runs `pinnersage-bench index`.
pub fn run(args: &BenchIndexArgs) -> Result<()> {
    let x = read(&args.vectors)?;
    let q = read(&args.queries)?;
    if x.cols != q.cols {
        return Err(InputError(format!(
            "{} has {} columns but {} has {}",
            args.vectors.display(),
            x.cols,
            args.queries.display(),
            q.cols
        ))
        .into());
    }
    let params = HnswParams {
        connectivity: args.connectivity,
        expansion_add: args.ef_construction,
        expansion_search: 64,
        metric: args.metric,
        quantization: args.quantization,
        library: pinnersage::index::library(args.hnsw_library, args.quantization),
    };
    params.validate().map_err(|e| InputError(e.to_string()))?;
    let rows: Vec<u32> = (0..x.rows as u32).collect();
    let start = Instant::now();
    let hnsw = HnswIndex::build(&x.data, x.cols, &rows, &params, &|_| {})?;
    let build_s = start.elapsed().as_secs_f64();

    let exact = ExactIndex::new(&x.data[..], x.cols, args.metric)?;
    let start = Instant::now();
    let truth: Vec<Vec<u32>> = q
        .data
        .chunks_exact(q.cols)
        .map(|v| Ok(exact.search(v, args.k)?.iter().map(|n| n.row).collect()))
        .collect::<Result<_, pinnersage_index::IndexError>>()?;
    let exact_qps = q.rows as f64 / start.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({"kind": "build", "items": x.rows, "dim": x.cols, "build_s": build_s,
                   "exact_qps": exact_qps, "memory_bytes": hnsw.memory_usage()})
        );
    } else {
        println!(
            "{} items x {} dims, {} queries, k={}; HNSW M={} ef_construction={} built in {build_s:.1} s ({:.0} MB); exact scan {exact_qps:.0} QPS",
            x.rows,
            x.cols,
            q.rows,
            args.k,
            args.connectivity,
            args.ef_construction,
            hnsw.memory_usage() as f64 / 1e6
        );
        println!("{:>8} {:>10} {:>10}", "ef", "recall", "QPS");
    }
    for &ef in &args.ef {
        hnsw.set_expansion_search(ef);
        let mut results = Vec::with_capacity(q.rows);
        // One untimed pass warms caches; the second is timed.
        for v in q.data.chunks_exact(q.cols).take(100) {
            hnsw.search(v, args.k)?;
        }
        let start = Instant::now();
        for v in q.data.chunks_exact(q.cols) {
            results.push(hnsw.search(v, args.k)?);
        }
        let qps = q.rows as f64 / start.elapsed().as_secs_f64();
        let hits: usize = results
            .iter()
            .zip(&truth)
            .map(|(got, want)| got.iter().filter(|n| want.contains(&n.row)).count())
            .sum();
        let recall = hits as f64 / truth.iter().map(Vec::len).sum::<usize>().max(1) as f64;
        if args.json {
            println!(
                "{}",
                json!({"kind": "search", "ef": ef, "recall": recall, "qps": qps})
            );
        } else {
            println!("{ef:>8} {recall:>10.4} {qps:>10.0}");
        }
    }
    Ok(())
}
