//! `pinnersage index build`: the nearest-neighbour index of a data directory.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use pinnersage_catalog::catalog::Catalog;
use pinnersage_index::persist::{self, BuildOptions, IndexKind};
use pinnersage_index::{HnswLibrary, HnswParams, Metric, Quantization};

use crate::args::{DataDirArg, InputError};
use crate::progress::Bars;
use pinnersage_core::progress::Progress as _;

/// Build or inspect the nearest-neighbour index of a data directory.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    Build(IndexBuildArgs),
}

/// Build the ANN index over the current catalog and make it the served index.
///
/// The default is an HNSW graph (hnswlib) over cosine distance, saved in DATA_DIR/index and
/// loaded by `pinnersage serve`. `--hnsw-library usearch` builds it with usearch instead: f16
/// vectors (`--quantization f16`, half the memory) and a file the server memory-maps.
/// `--kind exact` stores no graph: the server scans every item (best below ~50k items, and
/// exact). Re-run after every `import items` (a running server serves the new catalog once
/// this has indexed it, and a rebuilt index at once, without a restart).
///
/// Refinement: `--collapse-duplicates 0.99` keeps one representative of every group of items
/// with cosine >= 0.99; `--exclude FILE` (one item id per line) removes items that must never
/// be recommended. Both are recorded in the index metadata.
///
/// Example:
///   pinnersage index build --data-dir data --connectivity 16 --ef-construction 128
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct IndexBuildArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Index implementation: hnsw or exact.
    #[arg(long, default_value = "hnsw")]
    kind: IndexKind,
    /// Distance: cosine or l2.
    #[arg(long, default_value = "cosine")]
    metric: Metric,
    /// HNSW links per node (M): more gives better recall, more memory, slower builds.
    #[arg(long, default_value_t = 16)]
    connectivity: usize,
    /// HNSW candidate list while building (ef_construction).
    #[arg(long, default_value_t = 128)]
    ef_construction: usize,
    /// HNSW candidate list while searching (ef_search); `serve --ef-search` overrides it.
    #[arg(long, default_value_t = 64)]
    ef_search: usize,
    /// Vector storage inside the HNSW index: f32, or f16 for half the memory (usearch).
    #[arg(long, default_value = "f32")]
    quantization: Quantization,
    /// HNSW library: hnswlib (fastest here), or usearch (f16, memory-mapped) [default: hnswlib,
    /// usearch with --quantization f16].
    #[arg(long, value_name = "LIBRARY")]
    hnsw_library: Option<HnswLibrary>,
    /// Collapse items whose cosine to an earlier kept item is at least this (0 < T <= 1).
    #[arg(long, value_name = "COSINE")]
    collapse_duplicates: Option<f32>,
    /// File of item ids (one per line) never to recommend.
    #[arg(long, value_name = "FILE")]
    exclude: Option<PathBuf>,
}

/// The HNSW library asked for, or the one that stores `quantization`.
pub fn library(asked: Option<HnswLibrary>, quantization: Quantization) -> HnswLibrary {
    asked.unwrap_or(match quantization {
        Quantization::F32 => HnswLibrary::Hnswlib,
        Quantization::F16 => HnswLibrary::Usearch,
    })
}

/// Runs `pinnersage index build`.
pub fn run(cmd: &IndexCommand) -> Result<()> {
    let IndexCommand::Build(args) = cmd;
    let exclude = match &args.exclude {
        Some(path) => persist::read_ids(path).map_err(|e| InputError(e.to_string()))?,
        None => Vec::new(),
    };
    let options = BuildOptions {
        kind: args.kind,
        params: HnswParams {
            connectivity: args.connectivity,
            expansion_add: args.ef_construction,
            expansion_search: args.ef_search,
            metric: args.metric,
            quantization: args.quantization,
            library: library(args.hnsw_library, args.quantization),
        },
        collapse_threshold: args.collapse_duplicates,
        exclude,
        exclude_source: args.exclude.as_ref().map(|p| p.display().to_string()),
    };
    build(&args.data.data_dir, &options)
}

/// Builds the index of `data_dir`'s catalog and prints what was built (the command's work,
/// which the quickstart calls too).
pub fn build(data_dir: &Path, options: &BuildOptions) -> Result<()> {
    options
        .params
        .validate()
        .map_err(|e| InputError(e.to_string()))?;
    let mut catalog = Catalog::open(data_dir).map_err(|e| InputError(e.to_string()))?;
    catalog.build_hash_index();
    let progress = Bars::new("items");
    let built = persist::build(data_dir, &catalog, options, &progress).map_err(|e| match e {
        pinnersage_index::IndexError::Options(m) => anyhow::Error::new(InputError(m)),
        other => anyhow::Error::new(other),
    })?;
    progress.finish();
    let m = &built.meta;
    println!(
        "index {}: {} of {} items ({} excluded, {} near duplicates collapsed), {} dim, {} {} in {:.1} s",
        built.dir.display(),
        m.indexed,
        m.catalog_rows,
        m.excluded,
        m.collapsed,
        m.dim,
        match m.kind {
            IndexKind::Hnsw => format!(
                "HNSW ({}) M={} ef_construction={} ef_search={} {:?}",
                m.params.library.name(),
                m.params.connectivity,
                m.params.expansion_add,
                m.params.expansion_search,
                m.params.quantization
            ),
            IndexKind::Exact => "exact scan".to_string(),
        },
        m.params.metric.name(),
        m.build_seconds
    );
    if built.unknown_exclusions > 0 {
        eprintln!(
            "note: {} excluded ids are not in the catalog",
            built.unknown_exclusions
        );
    }
    Ok(())
}
