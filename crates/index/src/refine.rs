//! Index refinement (paper: −50% serving cost): collapse near-duplicate items so that one
//! representative answers for all of them.

use rayon::prelude::*;

use crate::{AnnIndex, IndexError};

/// The outcome of [`collapse_near_duplicates`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Collapsed {
    /// Rows kept, ascending.
    pub kept: Vec<u32>,
    /// `(dropped row, representative row)` pairs, by dropped row.
    pub dropped: Vec<(u32, u32)>,
}

/// Rows whose cosine similarity to an earlier kept row is at least `threshold` are dropped in
/// favour of it. Candidates come from `index` (the `neighbours` nearest of each row), so with an
/// approximate index some duplicates can survive; none is ever dropped wrongly, because every
/// pair's cosine is recomputed from `vectors`.
///
/// ```
/// use pinnersage_index::{ExactIndex, Metric, refine::collapse_near_duplicates};
/// let v = vec![1.0, 0.0, 0.999, 0.01, 0.0, 1.0];
/// let index = ExactIndex::new(&v[..], 2, Metric::Cosine).unwrap();
/// let c = collapse_near_duplicates(&index, &v, 2, &[0, 1, 2], 0.99, 5).unwrap();
/// assert_eq!(c.kept, [0, 2]);
/// assert_eq!(c.dropped, [(1, 0)]);
/// ```
pub fn collapse_near_duplicates(
    index: &dyn AnnIndex,
    vectors: &[f32],
    dim: usize,
    rows: &[u32],
    threshold: f32,
    neighbours: usize,
) -> Result<Collapsed, IndexError> {
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(IndexError::Options(format!(
            "the near-duplicate threshold is a cosine in (0, 1], got {threshold}"
        )));
    }
    let row = |r: u32| &vectors[r as usize * dim..(r as usize + 1) * dim];
    let norm = |r: u32| pinnersage_core::scan::dot(row(r), row(r)).sqrt();
    let mut sorted = rows.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let candidates: Vec<Vec<u32>> = sorted
        .par_iter()
        .map(|&r| {
            let hits = index.search(row(r), neighbours + 1)?;
            let nr = norm(r);
            Ok(hits
                .into_iter()
                .filter(|n| n.row != r)
                .filter(|n| {
                    let denom = nr * norm(n.row);
                    denom > 0.0
                        && pinnersage_core::scan::dot(row(r), row(n.row)) / denom >= threshold
                })
                .map(|n| n.row)
                .collect())
        })
        .collect::<Result<_, IndexError>>()?;
    let position = |r: u32| sorted.binary_search(&r).ok();
    // 0 = undecided, 1 = kept, 2 = dropped.
    let mut state = vec![0u8; sorted.len()];
    let mut out = Collapsed::default();
    for (i, &r) in sorted.iter().enumerate() {
        if state[i] == 2 {
            continue;
        }
        if let Some(&rep) = candidates[i]
            .iter()
            .find(|&&c| c < r && position(c).is_some_and(|p| state[p] == 1))
        {
            state[i] = 2;
            out.dropped.push((r, rep));
            continue;
        }
        state[i] = 1;
        for &c in &candidates[i] {
            if let Some(p) = position(c).filter(|&p| p > i && state[p] == 0) {
                state[p] = 2;
                out.dropped.push((c, r));
            }
        }
    }
    out.kept = sorted
        .iter()
        .zip(&state)
        .filter(|&(_, &s)| s == 1)
        .map(|(&r, _)| r)
        .collect();
    out.dropped.sort_unstable();
    Ok(out)
}
