//! Pairwise squared Euclidean distances, computed the fast way and kept exact where it matters.
//!
//! The bulk of the work is one matrix product: with rows centred on their mean,
//! `||x_i - x_j||² = |y_i|² + |y_j|² - 2·y_i·y_j` and all dot products come from a single
//! SIMD `sgemm` call (the `matrixmultiply` crate). That form cancels badly when two rows are
//! close, so every pair whose result is small relative to the norms is recomputed directly as
//! `Σ (x_ik - x_jk)²` with `f64` accumulation; duplicated rows therefore get exactly `0`.

use crate::embeddings::Embeddings;

/// Pairs whose Gram-form distance is below this fraction of `|y_i|² + |y_j|²` are recomputed
/// directly. At `1/8` the Gram form's relative error stays below ~1e-6 for the rest.
const RECOMPUTE_FRACTION: f32 = 0.125;

/// Rows per `sgemm` call when computing the upper triangle of the Gram matrix.
const GEMM_BLOCK: usize = 128;

/// Tile edge used when mirroring the upper triangle into the lower one.
const TILE: usize = 64;

/// Squared Euclidean distance between two equally long rows, with `f64` accumulation.
///
/// ```
/// use pinnersage_core::distance::sq_euclidean;
/// assert_eq!(sq_euclidean(&[1.0, 2.0], &[4.0, 6.0]), 25.0);
/// ```
#[inline(always)]
pub fn sq_euclidean(a: &[f32], b: &[f32]) -> f64 {
    crate::simd::sum_sq(a, b, |p, q| f64::from(p - q))
}

/// A dense symmetric `n x n` matrix of squared Euclidean distances (`f32`, row-major, zero
/// diagonal). It owns its buffers so one value can be reused across many users without
/// reallocating: memory is `4·n²` bytes plus `4·n·d` of scratch.
///
/// ```
/// use pinnersage_core::{Embeddings, distance::SqDistances};
/// let data = [0.0, 0.0, 3.0, 4.0, 3.0, 4.0];
/// let mut d = SqDistances::default();
/// d.compute(Embeddings::new(&data, 2).unwrap());
/// assert_eq!(d.get(0, 1), 25.0);
/// assert_eq!(d.get(1, 2), 0.0);
/// ```
#[derive(Debug, Default, Clone)]
pub struct SqDistances {
    n: usize,
    data: Vec<f32>,
    centred: Vec<f32>,
    norms: Vec<f64>,
}

impl SqDistances {
    /// Number of rows the matrix was last computed for.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the matrix is empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The distance between rows `i` and `j`.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.n + j]
    }

    /// Mutable access to the whole `n x n` buffer (used by the Ward update in place).
    pub(crate) fn raw_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Recomputes the matrix for the rows of `x`, reusing the buffers.
    pub fn compute(&mut self, x: Embeddings<'_>) {
        let (n, d) = (x.rows(), x.dim());
        self.n = n;
        centre_rows(x, &mut self.centred, &mut self.norms);
        crate::hugepages::reserve_huge(&mut self.data, n * n);
        // Every entry is overwritten below, so only newly grown space gets zeroed.
        self.data.resize(n * n, 0.0);
        gram_upper(&self.centred, n, d, &mut self.data);
        gram_to_distances(&mut self.data, n, &self.norms, x);
    }
}

/// Upper triangle of the Gram matrix `Y · Yᵀ` of the `n x d` rows `y` into the `n x n` `out`, one
/// block of rows at a time: block `[r0, r1)` needs only the columns from `r0` on, which halves
/// the work. Entries left of the diagonal blocks are not written.
fn gram_upper(y: &[f32], n: usize, d: usize, out: &mut [f32]) {
    assert!(y.len() >= n * d && out.len() >= n * n);
    for r0 in (0..n).step_by(GEMM_BLOCK) {
        let rows = GEMM_BLOCK.min(n - r0);
        let y = &y[r0 * d..];
        let out = &mut out[r0 * n + r0..];
        // SAFETY: `y` holds (n - r0) rows of d values, read as a `rows x d` matrix and as a
        // `d x (n - r0)` transposed one; `out` starts at (r0, r0) and the `rows x (n - r0)`
        // window with row stride n ends inside the n x n buffer (checked above). No overlap.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                d,
                n - r0,
                1.0,
                y.as_ptr(),
                d as isize,
                1,
                y.as_ptr(),
                1,
                d as isize,
                0.0,
                out.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    }
}

crate::simd::multiversion! {
    /// Fills `centred` with the rows minus their mean and `norms` with their squared norms.
    fn centre_rows(x: Embeddings<'_>, centred: &mut Vec<f32>, norms: &mut Vec<f64>) => centre_rows_impl;
}

#[inline(always)]
fn centre_rows_impl(x: Embeddings<'_>, centred: &mut Vec<f32>, norms: &mut Vec<f64>) {
    let (n, d) = (x.rows(), x.dim());
    let mut mean = vec![0.0f64; d];
    for i in 0..n {
        for (m, &v) in mean.iter_mut().zip(x.row(i)) {
            *m += f64::from(v);
        }
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
    centred.clear();
    centred.reserve(n * d);
    norms.clear();
    for i in 0..n {
        let start = centred.len();
        centred.extend(x.row(i).iter().zip(&mean).map(|(&v, &m)| v - m));
        norms.push(sq_norm(&centred[start..]));
    }
}

/// `Σ v²` with `f64` accumulation.
#[inline(always)]
fn sq_norm(a: &[f32]) -> f64 {
    crate::simd::sum_sq(a, a, |v, _| f64::from(v))
}

crate::simd::multiversion! {
    /// Turns the upper triangle of the Gram matrix in `data` into squared distances and mirrors it.
    fn gram_to_distances(data: &mut [f32], n: usize, norms: &[f64], x: Embeddings<'_>) => gram_to_distances_impl;
}

/// Turns the Gram matrix in `data` into squared distances: the upper triangle is converted
/// row by row (recomputing close pairs directly) and mirrored into the lower one, tile by tile.
#[inline(always)]
fn gram_to_distances_impl(data: &mut [f32], n: usize, norms: &[f64], x: Embeddings<'_>) {
    let norms: Vec<f32> = norms.iter().map(|&v| v as f32).collect();
    for i in 0..n {
        let ni = norms[i];
        let row = &mut data[i * n + i + 1..(i + 1) * n];
        let nj = &norms[i + 1..];
        // Branch-free so that it vectorises; close pairs are fixed in a second pass.
        let mut any_close = false;
        for (g, &nj) in row.iter_mut().zip(nj) {
            let sum = ni + nj;
            let dist = sum - 2.0 * *g;
            any_close |= dist < RECOMPUTE_FRACTION * sum;
            *g = dist;
        }
        if any_close {
            for (k, (g, &nj)) in row.iter_mut().zip(nj).enumerate() {
                if *g < RECOMPUTE_FRACTION * (ni + nj) {
                    *g = sq_euclidean(x.row(i), x.row(i + 1 + k)) as f32;
                }
            }
        }
        for g in row.iter_mut() {
            *g = g.max(0.0);
        }
    }
    for ti in (0..n).step_by(TILE) {
        for tj in (ti..n).step_by(TILE) {
            for i in ti..(ti + TILE).min(n) {
                for j in tj.max(i + 1)..(tj + TILE).min(n) {
                    data[j * n + i] = data[i * n + j];
                }
            }
        }
    }
    for i in 0..n {
        data[i * n + i] = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::uniform_rows;

    /// The runtime-dispatched copies and the baseline copies agree bit for bit.
    #[test]
    fn dispatched_and_baseline_copies_agree_exactly() {
        let (m, d) = (130, 40);
        let mut x: Vec<f32> = uniform_rows(5, m, d).iter().map(|v| v + 3.0).collect();
        x.copy_within(0..d, 7 * d);
        let emb = Embeddings::new(&x, d).unwrap();

        let (mut centred, mut norms) = (Vec::new(), Vec::new());
        centre_rows(emb, &mut centred, &mut norms);
        let (mut centred_base, mut norms_base) = (Vec::new(), Vec::new());
        centre_rows_impl(emb, &mut centred_base, &mut norms_base);
        assert_eq!((&centred, &norms), (&centred_base, &norms_base));

        let mut gram = vec![0.0f32; m * m];
        gram_upper(&centred, m, d, &mut gram);
        let mut base = gram.clone();
        gram_to_distances(&mut gram, m, &norms, emb);
        gram_to_distances_impl(&mut base, m, &norms, emb);
        assert_eq!(gram, base);

        let mut dist = SqDistances::default();
        dist.compute(emb);
        assert_eq!(dist.data, gram);
        assert_eq!(dist.get(0, 7), 0.0);
        for i in 0..m {
            for j in 0..m {
                assert_eq!(dist.get(i, j), dist.get(j, i));
            }
        }
    }
}
