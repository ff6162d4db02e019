//! The index of a data directory: `DATA_DIR/index/gen-NNNNNN/` holds `meta.json`, the HNSW
//! file (`index.hnswlib` or `index.usearch`, after the library), the indexed rows when some were left out (`rows.u32`) and
//! the near-duplicate map (`collapsed.tsv`). Generations switch atomically, like the catalog's.

use pinnersage_core::progress::Progress;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use pinnersage_catalog::catalog::Catalog;
use pinnersage_generation::{Generations, PublishLock};
use serde::{Deserialize, Serialize};

use crate::refine::collapse_near_duplicates;
use crate::{AnnIndex, ExactIndex, HnswIndex, HnswParams, IndexError};

const META: &str = "meta.json";
const ROWS: &str = "rows.u32";
const COLLAPSED: &str = "collapsed.tsv";

/// Which index implementation a generation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// HNSW (approximate, fast on large catalogs), in hnswlib or usearch.
    #[default]
    Hnsw,
    /// Exact SIMD scan (small catalogs, ground truth).
    Exact,
}

impl std::str::FromStr for IndexKind {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<Self, crate::UnknownName> {
        match s {
            "hnsw" => Ok(IndexKind::Hnsw),
            "exact" => Ok(IndexKind::Exact),
            _ => Err(crate::UnknownName::new("index kind", s, "hnsw or exact")),
        }
    }
}

/// What an index generation was built from and with (`meta.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// The implementation.
    pub kind: IndexKind,
    /// HNSW parameters (metric also applies to the exact scan).
    pub params: HnswParams,
    /// The catalog generation directory name the rows refer to (e.g. `gen-000002`).
    pub catalog_generation: String,
    /// Rows in that catalog.
    pub catalog_rows: usize,
    /// Vector dimension.
    pub dim: usize,
    /// Rows in the index.
    pub indexed: usize,
    /// Rows left out by the exclusion list.
    pub excluded: usize,
    /// Where the exclusion list came from.
    pub exclude_source: Option<String>,
    /// Cosine threshold of near-duplicate collapsing, when enabled.
    pub collapse_threshold: Option<f32>,
    /// Rows dropped as near duplicates of a kept row.
    pub collapsed: usize,
    /// Wall-clock build time.
    pub build_seconds: f64,
}

/// Options of [`build`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The implementation.
    pub kind: IndexKind,
    /// HNSW parameters (metric also applies to the exact scan).
    pub params: HnswParams,
    /// Collapse items whose cosine to an earlier kept item is at least this.
    pub collapse_threshold: Option<f32>,
    /// Item ids never to recommend.
    pub exclude: Vec<String>,
    /// Where `exclude` came from (recorded in the metadata).
    pub exclude_source: Option<String>,
}

/// The result of [`build`].
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    /// The published generation.
    pub dir: PathBuf,
    /// Its metadata.
    pub meta: IndexMeta,
    /// Exclusion ids that are not in the catalog.
    pub unknown_exclusions: usize,
}

/// Item ids from a text file, one per line (blank lines skipped, spaces trimmed): the format of
/// [`BuildOptions::exclude`] files.
pub fn read_ids(path: &Path) -> Result<Vec<String>, IndexError> {
    Ok(std::fs::read_to_string(path)
        .map_err(io_err(path))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The index root of a data directory.
pub fn index_root(data_dir: &Path) -> PathBuf {
    data_dir.join("index")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn generation_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Builds an index over the catalog of `data_dir` and publishes it as the current index
/// generation. Nothing becomes visible unless every step succeeds.
pub fn build(
    data_dir: &Path,
    catalog: &Catalog,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuiltIndex, IndexError> {
    options.params.validate()?;
    let _lock = PublishLock::acquire(data_dir, "index build")?;
    let started = Instant::now();
    let dim = catalog.dim();
    // The index covers the generation's rows; a server adds the journal's changes on open.
    let mut excluded_rows = vec![false; catalog.base_rows()];
    let mut unknown_exclusions = 0;
    for id in &options.exclude {
        match catalog.row_of(id).filter(|&r| r < catalog.base_rows()) {
            Some(r) => excluded_rows[r] = true,
            None => unknown_exclusions += 1,
        }
    }
    let excluded = excluded_rows.iter().filter(|&&e| e).count();
    // Deleted rows (a folded generation's, or deleted since) are never served: left out.
    let mut rows: Vec<u32> = (0..catalog.base_rows() as u32)
        .filter(|&r| !excluded_rows[r as usize] && !catalog.is_deleted(r as usize))
        .collect();
    let vectors = catalog.embeddings();
    let build_hnsw = |rows: &[u32], phase: &str| {
        progress.phase(phase, rows.len() as u64);
        HnswIndex::build(vectors, dim, rows, &options.params, &|n| {
            progress.advance(n)
        })
    };
    let exact = |rows: &[u32]| {
        ExactIndex::new(vectors, dim, options.params.metric).map(|e| e.with_rows(rows))
    };

    let mut hnsw = None;
    let mut dropped = Vec::new();
    if let Some(threshold) = options.collapse_threshold {
        let candidates: Box<dyn AnnIndex + '_> = match options.kind {
            IndexKind::Hnsw => Box::new(build_hnsw(&rows, "indexing for near duplicates")?),
            IndexKind::Exact => Box::new(exact(&rows)?),
        };
        progress.phase("finding near duplicates", 0);
        let collapsed =
            collapse_near_duplicates(candidates.as_ref(), vectors, dim, &rows, threshold, 10)?;
        rows = collapsed.kept;
        dropped = collapsed.dropped;
    }
    if options.kind == IndexKind::Hnsw {
        hnsw = Some(build_hnsw(&rows, "indexing")?);
    }

    let generations = Generations::new(index_root(data_dir));
    fs::create_dir_all(generations.root()).map_err(io_err(generations.root()))?;
    let staging = generations.stage().map_err(io_err(generations.root()))?;
    let dir = staging.path().to_path_buf();
    if let Some(hnsw) = &hnsw {
        let file = dir.join(options.params.library.file_name());
        hnsw.save(&file)?;
        sync(&file)?;
    }
    if rows.len() != catalog.base_rows() {
        let bytes: Vec<u8> = rows.iter().flat_map(|r| r.to_le_bytes()).collect();
        write_synced(&dir.join(ROWS), &bytes)?;
    }
    if !dropped.is_empty() {
        let mut text = String::from("dropped\trepresentative\n");
        for (d, r) in &dropped {
            text.push_str(&format!(
                "{}\t{}\n",
                catalog.id(*d as usize),
                catalog.id(*r as usize)
            ));
        }
        write_synced(&dir.join(COLLAPSED), text.as_bytes())?;
    }
    let meta = IndexMeta {
        kind: options.kind,
        params: options.params,
        catalog_generation: generation_name(catalog.dir()),
        catalog_rows: catalog.base_rows(),
        dim,
        indexed: rows.len(),
        excluded,
        exclude_source: options.exclude_source.clone(),
        collapse_threshold: options.collapse_threshold,
        collapsed: dropped.len(),
        build_seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&meta).expect("metadata serialises");
    write_synced(&dir.join(META), &json)?;
    let dir = generations
        .publish(staging)
        .map_err(io_err(generations.root()))?;
    Ok(BuiltIndex {
        dir,
        meta,
        unknown_exclusions,
    })
}

fn sync(path: &Path) -> Result<(), IndexError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    let mut f = fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// The catalog's embedding matrix, shared (lets an [`ExactIndex`] own its catalog).
#[derive(Debug, Clone)]
pub struct CatalogVectors(pub Arc<Catalog>);

impl AsRef<[f32]> for CatalogVectors {
    fn as_ref(&self) -> &[f32] {
        self.0.embeddings()
    }
}

impl IndexMeta {
    /// Whether the index was built for the catalog generation in `catalog_dir`.
    pub fn is_for(&self, catalog_dir: &Path) -> bool {
        generation_name(catalog_dir) == self.catalog_generation
    }
}

/// The current index generation of `data_dir` and what it was built for (`None`: never built).
pub fn current_generation(data_dir: &Path) -> Result<Option<(PathBuf, IndexMeta)>, IndexError> {
    let generations = Generations::new(index_root(data_dir));
    let Some(dir) = generations.current().map_err(io_err(generations.root()))? else {
        return Ok(None);
    };
    let meta_path = dir.join(META);
    let bytes = fs::read(&meta_path).map_err(io_err(&meta_path))?;
    let meta = serde_json::from_slice(&bytes)
        .map_err(|e| IndexError::Unusable(format!("{}: {e}", meta_path.display())))?;
    Ok(Some((dir, meta)))
}

/// Brings a graph built for `catalog`'s generation up to its changes since (replayed from the
/// journal): rows added since go in, deleted rows go out. An exact index needs nothing: the
/// engine scans added rows itself.
fn catch_up(index: &dyn AnnIndex, catalog: &Catalog) -> Result<(), IndexError> {
    let deleted = (0..catalog.base_rows()).filter(|&r| catalog.is_deleted(r));
    let added = catalog.base_rows()..catalog.rows();
    if catalog.added_rows() == 0 && deleted.clone().next().is_none() {
        return Ok(());
    }
    if !index.takes_changes() {
        return Err(index.refuses_changes());
    }
    for row in deleted {
        index.remove(row as u32)?;
    }
    for row in added.filter(|&r| !catalog.is_deleted(r)) {
        index.insert(row as u32, catalog.embedding(row))?;
    }
    Ok(())
}

/// An opened index generation.
#[derive(Clone)]
pub struct OpenedIndex {
    /// The searchable index.
    pub index: Arc<dyn AnnIndex>,
    /// An exact scan over the same rows (the index itself when it is exact): the answer of a
    /// filtered search that the graph could not fill (a filter matching few items).
    pub exact: Arc<dyn AnnIndex>,
    /// Its metadata.
    pub meta: IndexMeta,
    /// The generation number (changes with every build; part of cache keys).
    pub version: u64,
    /// The generation directory.
    pub dir: PathBuf,
}

/// Opens the current index generation of `data_dir` for `catalog` (memory-mapped unless
/// `load_into_memory`), with `ef_search` overriding the stored value when given, and
/// `insert_ef` the `ef_construction` of the vectors inserted while it is served (the build's
/// otherwise; a rebuild uses the build's either way).
pub fn open(
    data_dir: &Path,
    catalog: Arc<Catalog>,
    ef_search: Option<usize>,
    insert_ef: Option<usize>,
    load_into_memory: bool,
) -> Result<OpenedIndex, IndexError> {
    let generations = Generations::new(index_root(data_dir));
    let dir = generations
        .current()
        .map_err(io_err(generations.root()))?
        .ok_or_else(|| {
            IndexError::Unusable(format!(
                "no index in {}: run `pinnersage index build --data-dir {}` first",
                generations.root().display(),
                data_dir.display()
            ))
        })?;
    let meta_path = dir.join(META);
    let bytes = fs::read(&meta_path).map_err(io_err(&meta_path))?;
    let mut meta: IndexMeta = serde_json::from_slice(&bytes)
        .map_err(|e| IndexError::Unusable(format!("{}: {e}", meta_path.display())))?;
    if !meta.is_for(catalog.dir()) || meta.catalog_rows != catalog.base_rows() {
        return Err(IndexError::Unusable(format!(
            "the index in {} was built for catalog {} but the current catalog is {}: run \
             `pinnersage index build --data-dir {}` again",
            dir.display(),
            meta.catalog_generation,
            generation_name(catalog.dir()),
            data_dir.display()
        )));
    }
    if let Some(ef) = ef_search {
        meta.params.expansion_search = ef;
        meta.params.validate()?;
    }
    let version = generation_name(&dir)
        .strip_prefix("gen-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let catalog_for_changes = catalog.clone();
    let exact: Arc<dyn AnnIndex> = {
        let dim = catalog.dim();
        let exact = ExactIndex::new(CatalogVectors(catalog), dim, meta.params.metric)?;
        let rows_path = dir.join(ROWS);
        if rows_path.exists() {
            let bytes = fs::read(&rows_path).map_err(io_err(&rows_path))?;
            let rows: Vec<u32> = bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            Arc::new(exact.with_rows(&rows))
        } else {
            Arc::new(exact)
        }
    };
    let index: Arc<dyn AnnIndex> = match meta.kind {
        IndexKind::Hnsw => {
            let hnsw = HnswIndex::view(
                &dir.join(meta.params.library.file_name()),
                &meta.params,
                meta.dim,
                load_into_memory,
            )?;
            if let Some(ef) = insert_ef {
                if !(1..=4096).contains(&ef) {
                    return Err(IndexError::Options(format!(
                        "insert ef must be in 1..=4096, got {ef}"
                    )));
                }
                hnsw.set_expansion_add(ef);
            }
            Arc::new(hnsw)
        }
        IndexKind::Exact => exact.clone(),
    };
    if index.kind() != "exact" {
        catch_up(index.as_ref(), &catalog_for_changes)?;
    }
    Ok(OpenedIndex {
        index,
        exact,
        meta,
        version,
        dir,
    })
}
