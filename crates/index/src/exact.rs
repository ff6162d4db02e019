//! Exact nearest-neighbour search by a SIMD scan over every row: the choice for small catalogs
//! and the ground truth HNSW recall is measured against.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use pinnersage_core::scan::dot_rows;

use crate::{AnnIndex, IndexError, Metric, Neighbor, check_dim};

/// Rows scored per pass (keeps the score buffer in L1/L2).
const BLOCK: usize = 2048;

/// Exact search over a row-major matrix `V` (`rows x dim`), optionally restricted to a subset.
///
/// ```
/// use pinnersage_index::{AnnIndex, ExactIndex, Metric};
/// let rows = vec![1.0, 0.0, 0.0, 1.0, 0.7, 0.7];
/// let index = ExactIndex::new(rows, 2, Metric::Cosine).unwrap();
/// let hits = index.search(&[1.0, 0.1], 2).unwrap();
/// assert_eq!(hits.iter().map(|n| n.row).collect::<Vec<_>>(), [0, 2]);
/// ```
#[derive(Debug)]
pub struct ExactIndex<V> {
    vectors: V,
    dim: usize,
    metric: Metric,
    /// `‖x‖` per row (cosine) or `‖x‖²` (L2).
    norms: Vec<f32>,
    /// Rows that may be returned (`None`: all).
    present: Option<Vec<bool>>,
    len: usize,
}

impl<V: AsRef<[f32]> + Send + Sync> ExactIndex<V> {
    /// An index over every row of `vectors`.
    pub fn new(vectors: V, dim: usize, metric: Metric) -> Result<Self, IndexError> {
        if dim == 0 || vectors.as_ref().len() % dim != 0 {
            return Err(IndexError::Options(format!(
                "{} values do not make rows of dimension {dim}",
                vectors.as_ref().len()
            )));
        }
        let norms = vectors
            .as_ref()
            .chunks_exact(dim)
            .map(|row| {
                let sq = pinnersage_core::scan::dot(row, row);
                match metric {
                    Metric::Cosine => sq.sqrt(),
                    Metric::L2 => sq,
                }
            })
            .collect::<Vec<_>>();
        let len = norms.len();
        Ok(Self {
            vectors,
            dim,
            metric,
            norms,
            present: None,
            len,
        })
    }

    /// Restricts results to `rows` (for example the rows an HNSW index was built over).
    pub fn with_rows(mut self, rows: &[u32]) -> Self {
        let mut present = vec![false; self.norms.len()];
        for &r in rows {
            if let Some(p) = present.get_mut(r as usize) {
                *p = true;
            }
        }
        self.len = present.iter().filter(|&&p| p).count();
        self.present = Some(present);
        self
    }

    fn scan(
        &self,
        query: &[f32],
        k: usize,
        keep: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Result<Vec<Neighbor>, IndexError> {
        check_dim(self.dim, query.len())?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let q_dot = pinnersage_core::scan::dot(query, query);
        let q_norm = q_dot.sqrt();
        let mut heap = BinaryHeap::with_capacity(k + 1);
        let distance = |row: usize, dot: f32| match self.metric {
            Metric::Cosine => {
                let denom = q_norm * self.norms[row];
                if denom > 0.0 { 1.0 - dot / denom } else { 1.0 }
            }
            Metric::L2 => (q_dot + self.norms[row] - 2.0 * dot).max(0.0),
        };
        let offer = |heap: &mut BinaryHeap<Ranked>, candidate: Ranked| {
            if heap.len() == k && candidate >= *heap.peek().expect("k > 0") {
                return;
            }
            heap.push(candidate);
            if heap.len() > k {
                heap.pop();
            }
        };
        let present = |row: usize| self.present.as_ref().is_none_or(|p| p[row]);
        let vectors = self.vectors.as_ref();
        if let Some(keep) = keep {
            // Filtered: test each row first, compute distances for the kept ones only (a
            // selective filter then costs a fraction of the full scan).
            for row in 0..self.norms.len() {
                if present(row) && keep(row as u32) {
                    let x = &vectors[row * self.dim..(row + 1) * self.dim];
                    let dot = pinnersage_core::scan::dot(query, x);
                    offer(&mut heap, Ranked(distance(row, dot), row as u32));
                }
            }
        } else {
            let mut scores = vec![0.0f32; BLOCK];
            for (b, block) in vectors.chunks(BLOCK * self.dim).enumerate() {
                let n = block.len() / self.dim;
                dot_rows(query, block, &mut scores[..n]);
                for (i, &dot) in scores[..n].iter().enumerate() {
                    let row = b * BLOCK + i;
                    if present(row) {
                        offer(&mut heap, Ranked(distance(row, dot), row as u32));
                    }
                }
            }
        }
        Ok(heap
            .into_sorted_vec()
            .into_iter()
            .map(|Ranked(distance, row)| Neighbor { row, distance })
            .collect())
    }
}

/// `(distance, row)` ordered by distance, then row (a total order, so results are
/// deterministic).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ranked(f32, u32);

impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

impl<V: AsRef<[f32]> + Send + Sync> AnnIndex for ExactIndex<V> {
    fn len(&self) -> usize {
        self.len
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn metric(&self) -> Metric {
        self.metric
    }
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Neighbor>, IndexError> {
        self.scan(query, k, None)
    }
    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        keep: &(dyn Fn(u32) -> bool + Sync),
    ) -> Result<Vec<Neighbor>, IndexError> {
        self.scan(query, k, Some(keep))
    }
    fn kind(&self) -> &'static str {
        "exact"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(rows: &[f32], dim: usize, q: &[f32], metric: Metric) -> Vec<(f64, u32)> {
        let mut all: Vec<(f64, u32)> = rows
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, x)| {
                let dot: f64 = q.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
                let nq: f64 = q.iter().map(|&a| (a as f64).powi(2)).sum();
                let nx: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum();
                let d = match metric {
                    Metric::Cosine => 1.0 - dot / (nq.sqrt() * nx.sqrt()),
                    Metric::L2 => nq + nx - 2.0 * dot,
                };
                (d, i as u32)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        all
    }

    #[test]
    fn matches_a_naive_sort_for_both_metrics_and_blocks() {
        let dim = 19;
        let n = BLOCK * 2 + 77;
        let mut rng = pinnersage_core::sample::SplitMix64::new(3);
        let rows: Vec<f32> = (0..n * dim).map(|_| rng.next_f64() as f32 - 0.5).collect();
        for metric in [Metric::Cosine, Metric::L2] {
            let index = ExactIndex::new(&rows[..], dim, metric).unwrap();
            for t in 0..5 {
                let q = &rows[t * 997 * dim..(t * 997 + 1) * dim];
                let got = index.search(q, 10).unwrap();
                let want = naive(&rows, dim, q, metric);
                let got_rows: Vec<u32> = got.iter().map(|n| n.row).collect();
                let want_rows: Vec<u32> = want[..10].iter().map(|w| w.1).collect();
                assert_eq!(got_rows, want_rows, "{metric:?}");
                assert_eq!(got_rows[0], (t * 997) as u32, "a row is its own nearest");
                for (g, w) in got.iter().zip(&want) {
                    assert!((g.distance as f64 - w.0).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn subsets_filters_and_errors() {
        let rows = vec![0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 1.0, 0.0];
        let index = ExactIndex::new(rows, 2, Metric::L2)
            .unwrap()
            .with_rows(&[1, 3]);
        assert_eq!(index.len(), 2);
        let hits = index.search(&[0.0, 1.0], 10).unwrap();
        assert_eq!(hits.iter().map(|n| n.row).collect::<Vec<_>>(), [1, 3]);
        let hits = index.search_filtered(&[0.0, 1.0], 10, &|r| r != 1).unwrap();
        assert_eq!(hits.iter().map(|n| n.row).collect::<Vec<_>>(), [3]);
        assert!(index.search(&[0.0, 1.0], 0).unwrap().is_empty());
        let err = index.search(&[1.0], 3).unwrap_err();
        assert_eq!(err.to_string(), "vector has 1 dimensions, the index has 2");
        assert!(ExactIndex::new(vec![1.0; 3], 2, Metric::L2).is_err());
    }
}
