//! Nearest-neighbour search over the item catalog.
//!
//! [`AnnIndex`] is the small trait serving and evaluation search through. Two implementations:
//! [`HnswIndex`] (HNSW, the default, through one of two maintained libraries: hnswlib, vendored
//! and fastest here, or usearch, for f16 vectors and memory-mapped files) and
//! [`ExactIndex`] (a SIMD scan: small catalogs and ground truth). Rows of the catalog are the
//! keys. [`persist`] builds an index for a data directory's catalog as a new generation and
//! opens the current one.
#![warn(missing_docs)]

pub mod exact;
pub mod hnsw;
mod hnswlib;
pub mod persist;
pub mod refine;

pub use exact::ExactIndex;
pub use hnsw::{HnswIndex, HnswLibrary, HnswParams, Quantization};

use serde::{Deserialize, Serialize};

/// The distance an index ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// `1 − cos(q, x)`; the score is the cosine similarity.
    #[default]
    Cosine,
    /// `‖q − x‖²`; the score is its negation.
    L2,
}

impl Metric {
    /// The score of a distance: higher is closer (cosine similarity, or `−‖q − x‖²`).
    ///
    /// ```
    /// use pinnersage_index::Metric;
    /// assert_eq!(Metric::Cosine.score(0.25), 0.75);
    /// assert_eq!(Metric::L2.score(2.0), -2.0);
    /// ```
    pub fn score(self, distance: f32) -> f32 {
        match self {
            Metric::Cosine => 1.0 - distance,
            Metric::L2 => -distance,
        }
    }

    /// The distance between `a` and `b` as an index under this metric ranks it (a zero vector
    /// is at cosine distance 1 from everything).
    ///
    /// ```
    /// use pinnersage_index::Metric;
    /// assert!((Metric::Cosine.distance(&[2.0, 0.0], &[1.0, 1.0]) - (1.0 - 0.5f32.sqrt())).abs() < 1e-6);
    /// assert_eq!(Metric::L2.distance(&[1.0, 2.0], &[0.0, 0.0]), 5.0);
    /// ```
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        use pinnersage_core::scan::dot;
        match self {
            Metric::Cosine => {
                let norms = (dot(a, a) * dot(b, b)).sqrt();
                if norms == 0.0 {
                    1.0
                } else {
                    1.0 - dot(a, b) / norms
                }
            }
            Metric::L2 => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
        }
    }

    /// The score of `x` for `query` from their dot product and lengths: one dot product a
    /// candidate when lengths are known. Equals `score(distance(query, x))`.
    ///
    /// ```
    /// use pinnersage_index::Metric;
    /// let (q, x) = ([3.0f32, 4.0], [4.0f32, 3.0]);
    /// for metric in [Metric::Cosine, Metric::L2] {
    ///     let direct = metric.score(metric.distance(&q, &x));
    ///     assert!((metric.score_of(24.0, 5.0, 5.0) - direct).abs() < 1e-6);
    /// }
    /// ```
    pub fn score_of(self, dot: f32, query_norm: f32, norm: f32) -> f32 {
        match self {
            Metric::Cosine if query_norm == 0.0 || norm == 0.0 => 0.0,
            Metric::Cosine => dot / (query_norm * norm),
            Metric::L2 => -(query_norm * query_norm + norm * norm - 2.0 * dot).max(0.0),
        }
    }

    /// The name used in flags and metadata.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "cosine" | "cos" => Ok(Metric::Cosine),
            "l2" | "l2sq" => Ok(Metric::L2),
            _ => Err(UnknownName::new("metric", s, "cosine or l2")),
        }
    }
}

/// A name (of a metric, a quantization, an index kind) that is not one of the accepted ones.
///
/// ```
/// use pinnersage_index::Metric;
/// let err = "dot".parse::<Metric>().unwrap_err();
/// assert_eq!(err.to_string(), r#"unknown metric "dot" (expected cosine or l2)"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?} (expected {expected})")]
pub struct UnknownName {
    /// What was being named.
    pub what: &'static str,
    /// The name given.
    pub got: String,
    /// The accepted names.
    pub expected: &'static str,
}

impl UnknownName {
    /// `got` is not an accepted name of `what`.
    pub fn new(what: &'static str, got: &str, expected: &'static str) -> Self {
        Self {
            what,
            got: got.to_owned(),
            expected,
        }
    }
}

/// One search result: a catalog row and its distance to the query (lower is closer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    /// The item's row in the catalog.
    pub row: u32,
    /// Its distance to the query under the index's [`Metric`].
    pub distance: f32,
}

/// Errors of building, loading and searching an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A query or vector of the wrong length.
    #[error("vector has {got} dimensions, the index has {expected}")]
    Dimension {
        /// The index's dimension.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// An error reported by the ANN library (hnswlib or usearch), naming it.
    #[error("{0}")]
    Library(String),
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The data directory has no index, or one that does not fit its catalog.
    #[error("{0}")]
    Unusable(String),
    /// Bad build options.
    #[error("{0}")]
    Options(String),
    /// Another publisher holds the data directory.
    #[error(transparent)]
    Busy(#[from] pinnersage_generation::LockError),
}

/// Nearest-neighbour search over catalog rows. Implementations are safe to share across
/// threads.
pub trait AnnIndex: Send + Sync {
    /// Number of rows that can be returned.
    fn len(&self) -> usize;
    /// Whether no row can be returned.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The vector dimension.
    fn dim(&self) -> usize;
    /// The metric results are ranked by.
    fn metric(&self) -> Metric;
    /// Up to `k` rows nearest to `query`, closest first.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbor>, IndexError>;
    /// Like [`search`](Self::search), restricted to rows for which `keep` is true.
    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        keep: &(dyn Fn(u32) -> bool + Sync),
    ) -> Result<Vec<Neighbor>, IndexError>;
    /// A short description for logs and metrics (`"hnsw"`, `"exact"`).
    fn kind(&self) -> &'static str;
    /// Whether [`insert`](Self::insert) and [`remove`](Self::remove) work: the items a served
    /// catalog gains and loses go into the index.
    fn takes_changes(&self) -> bool {
        false
    }
    /// Adds catalog row `row` with `vector` to an index being searched (searches go on
    /// meanwhile, at a small cost until [`inserts_done`](Self::inserts_done)); concurrent
    /// inserts take turns.
    fn insert(&self, row: u32, vector: &[f32]) -> Result<(), IndexError> {
        let _ = (row, vector);
        Err(self.refuses_changes())
    }
    /// Says that no insert follows for now: searches go back to their fastest form (an index
    /// where they have none does nothing).
    fn inserts_done(&self) {}
    /// The rows next to catalog row `row` in the index's graph (`None` for an index that is
    /// no graph, or lacks `row`): a new row that is near `row` is, as a rule, linked to it or
    /// to its nearest neighbours once inserted. Safe beside inserts.
    fn graph_links(&self, row: u32) -> Option<Vec<u32>> {
        let _ = row;
        None
    }
    /// Stops returning catalog row `row`; `false` if the index did not hold it.
    fn remove(&self, row: u32) -> Result<bool, IndexError> {
        let _ = row;
        Err(self.refuses_changes())
    }
    /// The error of an index that does not take changes.
    fn refuses_changes(&self) -> IndexError {
        IndexError::Unusable(format!(
            "this {} index does not take item changes while serving: build an hnswlib index \
             (`pinnersage index build --library hnswlib`)",
            self.kind()
        ))
    }
}

fn check_dim(expected: usize, got: usize) -> Result<(), IndexError> {
    if expected == got {
        Ok(())
    } else {
        Err(IndexError::Dimension { expected, got })
    }
}

impl pinnersage_core::error::Kind for UnknownName {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        BadInput
    }
}

impl pinnersage_core::error::Kind for IndexError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::{self, *};
        match self {
            Self::Dimension { .. } | Self::Options(_) => BadInput,
            Self::Library(_) => Internal,
            Self::Io { source, .. } => ErrorKind::of_io(source),
            Self::Unusable(_) => Conflict,
            Self::Busy(e) => e.kind(),
        }
    }
}
