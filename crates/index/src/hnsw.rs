//! HNSW search through one of two maintained libraries: built in parallel, saved to one file,
//! loaded (hnswlib) or memory-mapped (usearch) back.
//!
//! hnswlib is the default: on the same vectors, M and ef it answered 1.0x its own Python
//! package's queries per second at equal recall, where usearch answered 0.5x (f32) and 0.8x
//! (f16), and it builds faster (docs/benchmarks.md). usearch remains for f16 vectors (half the
//! memory) and for memory-mapping an index larger than RAM.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use usearch::{IndexOptions, MetricKind, ScalarKind};

use crate::hnswlib::Hnswlib;
use crate::{AnnIndex, IndexError, Metric, Neighbor, check_dim};

/// The library an HNSW index is built and searched with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HnswLibrary {
    /// hnswlib 0.8 (vendored C++): the fastest measured here; f32 vectors, loaded into memory.
    #[default]
    Hnswlib,
    /// usearch: f32 or f16 vectors; the file can be memory-mapped instead of loaded.
    Usearch,
}

impl HnswLibrary {
    /// The name used in flags and metadata.
    pub fn name(self) -> &'static str {
        match self {
            HnswLibrary::Hnswlib => "hnswlib",
            HnswLibrary::Usearch => "usearch",
        }
    }

    /// The index file's name inside a generation directory.
    pub fn file_name(self) -> &'static str {
        match self {
            HnswLibrary::Hnswlib => "index.hnswlib",
            HnswLibrary::Usearch => "index.usearch",
        }
    }

    /// Index generations written before the library was recorded are usearch's.
    fn before_choice() -> Self {
        HnswLibrary::Usearch
    }
}

impl std::str::FromStr for HnswLibrary {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<Self, crate::UnknownName> {
        match s {
            "hnswlib" => Ok(HnswLibrary::Hnswlib),
            "usearch" => Ok(HnswLibrary::Usearch),
            _ => Err(crate::UnknownName::new(
                "HNSW library",
                s,
                "hnswlib or usearch",
            )),
        }
    }
}

/// How vectors are stored inside the HNSW index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// 32-bit floats (exact distances).
    #[default]
    F32,
    /// 16-bit floats: half the memory, distances to ~3 significant digits.
    F16,
}

impl std::str::FromStr for Quantization {
    type Err = crate::UnknownName;
    fn from_str(s: &str) -> Result<Self, crate::UnknownName> {
        match s {
            "f32" => Ok(Quantization::F32),
            "f16" => Ok(Quantization::F16),
            _ => Err(crate::UnknownName::new("quantization", s, "f32 or f16")),
        }
    }
}

/// HNSW construction and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node (`M`).
    pub connectivity: usize,
    /// Candidate list size while building (`ef_construction`).
    pub expansion_add: usize,
    /// Candidate list size while searching (`ef_search`); raised to `k` when smaller.
    pub expansion_search: usize,
    /// Distance.
    pub metric: Metric,
    /// Stored scalar type (`f16` needs usearch).
    pub quantization: Quantization,
    /// The library.
    #[serde(default = "HnswLibrary::before_choice")]
    pub library: HnswLibrary,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            metric: Metric::Cosine,
            quantization: Quantization::F32,
            library: HnswLibrary::Hnswlib,
        }
    }
}

impl HnswParams {
    /// Rejects parameters usearch would misbehave with.
    pub fn validate(&self) -> Result<(), IndexError> {
        let check = |name: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(IndexError::Options(format!(
                    "{name} must be in {lo}..={hi}, got {v}"
                )))
            }
        };
        check("connectivity (M)", self.connectivity, 2, 256)?;
        check("ef_construction", self.expansion_add, 1, 4096)?;
        check("ef_search", self.expansion_search, 1, 4096)?;
        if self.library == HnswLibrary::Hnswlib && self.quantization != Quantization::F32 {
            return Err(IndexError::Options(
                "hnswlib stores f32 vectors only: use the usearch `hnsw_library` for f16".into(),
            ));
        }
        Ok(())
    }

    fn options(&self, dim: usize) -> IndexOptions {
        IndexOptions {
            dimensions: dim,
            // Cosine is an inner product on unit vectors: vectors and queries are normalised on
            // the way in, which saves usearch two norms per distance (as hnswlib does).
            metric: match self.metric {
                Metric::Cosine => MetricKind::IP,
                Metric::L2 => MetricKind::L2sq,
            },
            quantization: match self.quantization {
                Quantization::F32 => ScalarKind::F32,
                Quantization::F16 => ScalarKind::F16,
            },
            connectivity: self.connectivity,
            expansion_add: self.expansion_add,
            expansion_search: self.expansion_search,
            multi: false,
        }
    }
}

/// Adds one row's (prepared) vector to an index being built.
type AddRow<'a> = dyn Fn(u32, &[f32]) -> Result<(), IndexError> + Sync + 'a;

/// An HNSW index whose keys are catalog rows, in hnswlib or usearch.
pub struct HnswIndex {
    backend: Backend,
    metric: Metric,
    dim: usize,
}

enum Backend {
    Hnswlib(Hnswlib),
    Usearch(usearch::Index),
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("library", &self.library())
            .field("len", &self.len())
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .finish()
    }
}

fn usearch_err(e: impl std::fmt::Display) -> IndexError {
    IndexError::Library(format!("usearch: {e}"))
}

/// Search threads usearch keeps a context for: at least the machine's parallelism, and enough
/// for a server's worker and blocking threads.
fn search_threads() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get()) * 4 + 64
}

impl HnswIndex {
    /// Builds an index over `rows` of the row-major matrix `vectors` (`dim` columns) on the
    /// rayon pool, calling `progress(n)` as every `n` rows are added.
    ///
    /// ```
    /// use pinnersage_index::{AnnIndex, HnswIndex, HnswParams};
    /// let vectors: Vec<f32> = (0..200).map(|i| ((i * 37 % 101) as f32).sin()).collect();
    /// let index = HnswIndex::build(&vectors, 4, &(0..50).collect::<Vec<_>>(),
    ///     &HnswParams::default(), &|_| {}).unwrap();
    /// assert_eq!(index.len(), 50);
    /// assert_eq!(index.search(&vectors[8..12], 1).unwrap()[0].row, 2);
    /// ```
    pub fn build(
        vectors: &[f32],
        dim: usize,
        rows: &[u32],
        params: &HnswParams,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Self, IndexError> {
        params.validate()?;
        if dim == 0 || !vectors.len().is_multiple_of(dim) {
            return Err(IndexError::Options(format!(
                "{} values do not make rows of dimension {dim}",
                vectors.len()
            )));
        }
        let total = vectors.len() / dim;
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= total) {
            return Err(IndexError::Options(format!(
                "row {bad} is outside the matrix ({total} rows)"
            )));
        }
        let metric = params.metric;
        let add_all = |add: &AddRow<'_>| {
            rows.par_chunks(256).try_for_each(|chunk| {
                let mut buffer = Vec::with_capacity(dim);
                for &row in chunk {
                    let r = row as usize;
                    add(
                        row,
                        prepare(metric, &vectors[r * dim..(r + 1) * dim], &mut buffer),
                    )?;
                }
                progress(chunk.len() as u64);
                Ok::<_, IndexError>(())
            })
        };
        let backend = match params.library {
            HnswLibrary::Hnswlib => {
                let index = Hnswlib::new(
                    metric,
                    dim,
                    rows.len(),
                    params.connectivity,
                    params.expansion_add,
                )?;
                add_all(&|row, v| index.add(row, v))?;
                index.set_ef(params.expansion_search);
                Backend::Hnswlib(index)
            }
            HnswLibrary::Usearch => {
                let index = usearch::Index::new(&params.options(dim)).map_err(usearch_err)?;
                let threads = rayon::current_num_threads().max(1);
                index
                    .reserve_capacity_and_threads(rows.len(), threads.max(search_threads()))
                    .map_err(usearch_err)?;
                add_all(&|row, v| index.add(row as u64, v).map_err(usearch_err))?;
                Backend::Usearch(index)
            }
        };
        Ok(Self {
            backend,
            metric,
            dim,
        })
    }

    /// Writes the index to `path` (one file).
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        match &self.backend {
            Backend::Hnswlib(index) => index.save(path),
            Backend::Usearch(index) => index.save(path_str(path)?).map_err(usearch_err),
        }
    }

    /// Opens an index saved by [`save`](Self::save) with `params.library`: hnswlib loads it into
    /// memory; usearch memory-maps it (the file must stay unchanged while it is in use;
    /// generations guarantee that) unless `load_into_memory`. `expansion_search` overrides
    /// the stored `ef_search`.
    pub fn view(
        path: &Path,
        params: &HnswParams,
        dim: usize,
        load_into_memory: bool,
    ) -> Result<Self, IndexError> {
        let backend = match params.library {
            HnswLibrary::Hnswlib => {
                let index = Hnswlib::load(path, params.metric, dim)?;
                index.set_ef(params.expansion_search);
                Backend::Hnswlib(index)
            }
            HnswLibrary::Usearch => {
                let p = path_str(path)?;
                let index = usearch::Index::new(&params.options(dim)).map_err(usearch_err)?;
                if load_into_memory {
                    index.load(p).map_err(usearch_err)?;
                } else {
                    index.view(p).map_err(usearch_err)?;
                }
                if index.dimensions() != dim {
                    return Err(IndexError::Unusable(format!(
                        "{} has dimension {}, the catalog has {dim}",
                        path.display(),
                        index.dimensions()
                    )));
                }
                index.change_expansion_search(params.expansion_search);
                index
                    .reserve_capacity_and_threads(index.size(), search_threads())
                    .map_err(usearch_err)?;
                Backend::Usearch(index)
            }
        };
        Ok(Self {
            backend,
            metric: params.metric,
            dim,
        })
    }

    /// The library the index is in.
    pub fn library(&self) -> HnswLibrary {
        match self.backend {
            Backend::Hnswlib(_) => HnswLibrary::Hnswlib,
            Backend::Usearch(_) => HnswLibrary::Usearch,
        }
    }

    /// Changes `ef_construction` for the vectors inserted from now on (the live inserts of a
    /// served index; a lower value inserts faster into a slightly worse graph).
    pub fn set_expansion_add(&self, ef: usize) {
        match &self.backend {
            Backend::Hnswlib(index) => index.set_ef_construction(ef),
            Backend::Usearch(index) => index.change_expansion_add(ef),
        }
    }

    /// The `ef_construction` of the inserts from now on.
    pub fn expansion_add(&self) -> usize {
        match &self.backend {
            Backend::Hnswlib(index) => index.ef_construction(),
            Backend::Usearch(index) => index.expansion_add(),
        }
    }

    /// Changes `ef_search`.
    pub fn set_expansion_search(&self, ef: usize) {
        match &self.backend {
            Backend::Hnswlib(index) => index.set_ef(ef),
            Backend::Usearch(index) => index.change_expansion_search(ef),
        }
    }

    /// Bytes of memory the index uses (graph and, unless viewed, vectors).
    pub fn memory_usage(&self) -> usize {
        match &self.backend {
            Backend::Hnswlib(index) => index.memory_usage(),
            Backend::Usearch(index) => index.memory_usage(),
        }
    }

    /// The `k` rows nearest to `query` for which `keep` holds (all when `None`), closest first.
    fn search_kept(
        &self,
        query: &[f32],
        k: usize,
        keep: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Result<Vec<Neighbor>, IndexError> {
        check_dim(self.dim, query.len())?;
        if k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let mut buffer = Vec::new();
        let query = prepare(self.metric, query, &mut buffer);
        match &self.backend {
            Backend::Hnswlib(index) => index.search(query, k, keep),
            Backend::Usearch(index) => {
                let matches = match keep {
                    Some(keep) => index.filtered_search(query, k, |key| keep(key as u32)),
                    None => index.search(query, k),
                };
                Ok(self.neighbours(matches.map_err(usearch_err)?))
            }
        }
    }

    fn neighbours(&self, m: usearch::ffi::Matches) -> Vec<Neighbor> {
        m.keys
            .iter()
            .zip(&m.distances)
            .map(|(&key, &distance)| Neighbor {
                row: key as u32,
                distance,
            })
            .collect()
    }
}

/// The vector as the index stores it: unit length for cosine (a zero vector stays zero, at
/// distance 1 from everything), unchanged for L2.
fn prepare<'a>(metric: Metric, v: &'a [f32], buffer: &'a mut Vec<f32>) -> &'a [f32] {
    match metric {
        Metric::L2 => v,
        Metric::Cosine => {
            let norm = pinnersage_core::scan::dot(v, v).sqrt();
            if (norm - 1.0).abs() < 1e-6 || norm == 0.0 {
                return v;
            }
            buffer.clear();
            buffer.extend(v.iter().map(|&x| x / norm));
            buffer
        }
    }
}

fn path_str(path: &Path) -> Result<&str, IndexError> {
    path.to_str()
        .ok_or_else(|| IndexError::Options(format!("{} is not valid UTF-8", path.display())))
}

impl AnnIndex for HnswIndex {
    fn len(&self) -> usize {
        match &self.backend {
            Backend::Hnswlib(index) => index.len() - index.deleted(),
            Backend::Usearch(index) => index.size(),
        }
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn metric(&self) -> Metric {
        self.metric
    }
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbor>, IndexError> {
        self.search_kept(query, k, None)
    }
    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        keep: &(dyn Fn(u32) -> bool + Sync),
    ) -> Result<Vec<Neighbor>, IndexError> {
        self.search_kept(query, k, Some(keep))
    }
    fn kind(&self) -> &'static str {
        "hnsw"
    }
    fn takes_changes(&self) -> bool {
        matches!(self.backend, Backend::Hnswlib(_))
    }
    fn insert(&self, row: u32, vector: &[f32]) -> Result<(), IndexError> {
        check_dim(self.dim, vector.len())?;
        let Backend::Hnswlib(index) = &self.backend else {
            return Err(self.refuses_changes());
        };
        let mut buffer = Vec::new();
        index.insert(row, prepare(self.metric, vector, &mut buffer))
    }
    fn inserts_done(&self) {
        if let Backend::Hnswlib(index) = &self.backend {
            index.inserts_done();
        }
    }
    fn graph_links(&self, row: u32) -> Option<Vec<u32>> {
        match &self.backend {
            Backend::Hnswlib(index) => index.links(row),
            Backend::Usearch(_) => None,
        }
    }
    fn remove(&self, row: u32) -> Result<bool, IndexError> {
        let Backend::Hnswlib(index) = &self.backend else {
            return Err(self.refuses_changes());
        };
        index.mark_deleted(row)
    }
}
