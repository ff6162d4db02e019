//! Pairwise squared Euclidean distances, computed the fast way and kept exact where it matters.
//!
//! The bulk of the work is one matrix product: with rows centred on their mean,
//! `||x_i - x_j||² = |y_i|² + |y_j|² - 2·y_i·y_j` and all dot products of the upper triangle come
//! from the tiled kernel of `gram.rs` over a packed copy of the centred rows (the same fused
//! multiply-add chains, hence the same bits, on every instruction set); each tile becomes
//! distances as it leaves the kernel. That form cancels badly when two rows are close, so every
//! pair whose result is small relative to the norms is recomputed directly as
//! `Σ (x_ik - x_jk)²` with `f64` accumulation; duplicated rows therefore get exactly `0`.

use crate::embeddings::Embeddings;
use crate::gram::{gram_upper, pack_centred};

/// Pairs whose Gram-form distance is below this fraction of `|y_i|² + |y_j|²` are recomputed
/// directly. At `1/8` the Gram form's relative error stays below ~1e-6 for the rest.
const RECOMPUTE_FRACTION: f32 = 0.125;

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
/// reallocating: memory is `4·n²` bytes plus about `4·n·d` of packed rows.
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
    packed: Vec<f32>,
    norms: Vec<f32>,
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
        self.compute_with(x, None);
    }

    /// Recomputes the matrix as Ward's starting dissimilarities between **weighted points**: row
    /// `i` of `x` stands for `counts[i]` identical actions, and entry `(i, j)` is
    /// `2·cᵢ·cⱼ/(cᵢ + cⱼ)·||xᵢ − xⱼ||²`, the Ward distance between the two groups of copies (the
    /// value Lance–Williams reaches after merging each group's copies at height 0). With every
    /// count 1 this is [`compute`](Self::compute), bit for bit.
    ///
    /// ```
    /// use pinnersage_core::{Embeddings, distance::SqDistances};
    /// let data = [0.0, 0.0, 3.0, 4.0];
    /// let mut d = SqDistances::default();
    /// d.compute_weighted(Embeddings::new(&data, 2).unwrap(), &[3.0, 1.0]);
    /// assert_eq!(d.get(0, 1), 2.0 * 3.0 / 4.0 * 25.0);
    /// ```
    ///
    /// # Panics
    /// If `counts` does not hold one entry per row.
    pub fn compute_weighted(&mut self, x: Embeddings<'_>, counts: &[f32]) {
        assert_eq!(counts.len(), x.rows(), "one count per row");
        self.compute_with(x, Some(counts));
    }

    fn compute_with(&mut self, x: Embeddings<'_>, counts: Option<&[f32]>) {
        let (n, d) = (x.rows(), x.dim());
        self.n = n;
        pack_centred(x, &mut self.packed, &mut self.norms);
        crate::hugepages::reserve_huge(&mut self.data, n * n);
        // Every entry is overwritten below, so only newly grown space gets zeroed.
        self.data.resize(n * n, 0.0);
        let (data, norms) = (&mut self.data, &self.norms);
        gram_upper(&self.packed, n, d, |i, j, dots| {
            to_distances(
                &mut data[i * n + j..i * n + j + dots.len()],
                dots,
                i,
                j,
                norms,
                x,
            );
            if let Some(c) = counts {
                ward_weights(&mut data[i * n + j..i * n + j + dots.len()], c[i], &c[j..]);
            }
        });
        mirror(data, n);
    }
}

/// Turns the dot products of row `i` with rows `j..` into squared distances in `out`: the Gram
/// form `|y_i|² + |y_j|² - 2·y_i·y_j`, branch-free so that it vectorises, then the close pairs
/// recomputed directly.
#[inline(always)]
fn to_distances(
    out: &mut [f32],
    dots: &[f32],
    i: usize,
    j: usize,
    norms: &[f32],
    x: Embeddings<'_>,
) {
    let ni = norms[i];
    let nj = &norms[j..j + dots.len()];
    let mut any_close = false;
    for ((o, &g), &nj) in out.iter_mut().zip(dots).zip(nj) {
        let sum = ni + nj;
        let dist = sum - 2.0 * g;
        any_close |= dist < RECOMPUTE_FRACTION * sum;
        *o = dist.max(0.0);
    }
    if any_close {
        for (k, (o, (&g, &nj))) in out.iter_mut().zip(dots.iter().zip(nj)).enumerate() {
            let sum = ni + nj;
            if sum - 2.0 * g < RECOMPUTE_FRACTION * sum {
                *o = sq_euclidean(x.row(i), x.row(j + k)) as f32;
            }
        }
    }
}

/// Scales the distances from a point of count `ci` to points of counts `cj` into Ward
/// dissimilarities, `2·ci·cj/(ci + cj)·d` (exactly `d` when both counts are 1).
#[inline(always)]
fn ward_weights(out: &mut [f32], ci: f32, cj: &[f32]) {
    for (o, &cj) in out.iter_mut().zip(cj) {
        *o *= 2.0 * ci * cj / (ci + cj);
    }
}

crate::simd::multiversion! {
    /// Copies the upper triangle of the `n x n` `data` into the lower one, tile by tile, and zeroes
    /// the diagonal.
    fn mirror(data: &mut [f32], n: usize) => mirror_impl;
}

#[inline(always)]
fn mirror_impl(data: &mut [f32], n: usize) {
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

    /// The distances the two-pass way: the whole Gram matrix first, then every entry converted
    /// (close pairs recomputed), mirrored, in plain scalar code.
    fn two_pass_reference(x: Embeddings<'_>) -> Vec<f32> {
        let n = x.rows();
        let (mut packed, mut norms) = (Vec::new(), Vec::new());
        pack_centred(x, &mut packed, &mut norms);
        let mut gram = vec![0.0f32; n * n];
        gram_upper(&packed, n, x.dim(), |i, j, dots| {
            gram[i * n + j..i * n + j + dots.len()].copy_from_slice(dots);
        });
        let mut out = vec![0.0f32; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let sum = norms[i] + norms[j];
                let mut dist = sum - 2.0 * gram[i * n + j];
                if dist < RECOMPUTE_FRACTION * sum {
                    dist = sq_euclidean(x.row(i), x.row(j)) as f32;
                }
                out[i * n + j] = dist.max(0.0);
                out[j * n + i] = dist.max(0.0);
            }
        }
        out
    }

    /// Converting each tile as it is computed gives the two-pass result, close pairs included,
    /// and the dispatched and baseline mirroring agree.
    #[test]
    fn one_pass_distances_equal_the_two_pass_reference() {
        for (m, d) in [(130, 40), (75, 300), (2, 3)] {
            let mut x: Vec<f32> = uniform_rows(5, m, d).iter().map(|v| v + 3.0).collect();
            x.copy_within(0..d, (m - 1) * d);
            let emb = Embeddings::new(&x, d).unwrap();
            let mut dist = SqDistances::default();
            dist.compute(emb);
            assert_eq!(dist.data, two_pass_reference(emb), "m {m} d {d}");
            assert_eq!(dist.get(0, m - 1), 0.0);

            let mut base = dist.data.clone();
            base.iter_mut().step_by(m + 1).for_each(|v| *v = 1.0);
            mirror_impl(&mut base, m);
            assert_eq!(dist.data, base);
        }
    }
}
