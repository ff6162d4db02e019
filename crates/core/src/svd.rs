//! Co-engagement item embeddings learned from engagements alone: a truncated SVD of the
//! user x item engagement matrix (randomised range finder with power iterations, then an exact
//! small eigenproblem), as in PureSVD. Engagement-aware like PinSage, unlike content embeddings.
//! `pinnersage embed` and the evaluation's co-engagement embeddings both use it.

use crate::sample::SplitMix64;

/// Settings of [`item_embeddings`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SvdParams {
    /// Embedding dimension (singular vectors kept).
    pub dim: usize,
    /// Extra random directions for accuracy.
    pub oversample: usize,
    /// Power iterations (sharpen the spectrum).
    pub power_iterations: usize,
    /// Seed of the random projection.
    pub seed: u64,
}

impl Default for SvdParams {
    fn default() -> Self {
        Self {
            dim: 64,
            oversample: 16,
            power_iterations: 3,
            seed: 1,
        }
    }
}

/// Sparse user x item matrix with binary entries (distinct training items per user).
struct Engagements {
    rows: Vec<Vec<u32>>,
    items: usize,
}

impl Engagements {
    /// `out (users x l) = A · x (items x l)`.
    fn times(&self, x: &[f64], l: usize) -> Vec<f64> {
        let mut out = vec![0.0; self.rows.len() * l];
        for (u, items) in self.rows.iter().enumerate() {
            let o = &mut out[u * l..(u + 1) * l];
            for &i in items {
                for (a, &b) in o.iter_mut().zip(&x[i as usize * l..(i as usize + 1) * l]) {
                    *a += b;
                }
            }
        }
        out
    }

    /// `out (items x l) = Aᵀ · y (users x l)`.
    fn transpose_times(&self, y: &[f64], l: usize) -> Vec<f64> {
        let mut out = vec![0.0; self.items * l];
        for (u, items) in self.rows.iter().enumerate() {
            let yu = &y[u * l..(u + 1) * l];
            for &i in items {
                for (a, &b) in out[i as usize * l..(i as usize + 1) * l].iter_mut().zip(yu) {
                    *a += b;
                }
            }
        }
        out
    }
}

/// Each user's engaged items below `items`, sorted, each once: the binary user x item matrix
/// both learners factorise.
pub(crate) fn distinct_items(users: &[Vec<u32>], items: usize) -> Vec<Vec<u32>> {
    users
        .iter()
        .map(|u| {
            let mut r: Vec<u32> = u
                .iter()
                .copied()
                .filter(|&i| (i as usize) < items)
                .collect();
            r.sort_unstable();
            r.dedup();
            r
        })
        .collect()
}

/// Orthonormalises the `l` columns of the row-major `n x l` matrix in place (modified
/// Gram–Schmidt, twice for stability); columns that vanish become zero.
fn orthonormalise(m: &mut [f64], l: usize) {
    let n = m.len() / l;
    for _ in 0..2 {
        for j in 0..l {
            for k in 0..j {
                let dot: f64 = (0..n).map(|r| m[r * l + j] * m[r * l + k]).sum();
                for r in 0..n {
                    m[r * l + j] -= dot * m[r * l + k];
                }
            }
            let norm = (0..n).map(|r| m[r * l + j].powi(2)).sum::<f64>().sqrt();
            for r in 0..n {
                m[r * l + j] = if norm > 1e-12 {
                    m[r * l + j] / norm
                } else {
                    0.0
                };
            }
        }
    }
}

/// Eigen-decomposition of the symmetric `l x l` matrix `a` (cyclic Jacobi): eigenvalues and
/// row-major eigenvectors (column `j` belongs to value `j`), by decreasing eigenvalue.
fn symmetric_eigen(mut a: Vec<f64>, l: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; l * l];
    for i in 0..l {
        v[i * l + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..l)
            .flat_map(|i| (0..l).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * l + j].powi(2))
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..l {
            for q in p + 1..l {
                let apq = a[p * l + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * l + q] - a[p * l + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..l {
                    let (akp, akq) = (a[k * l + p], a[k * l + q]);
                    a[k * l + p] = c * akp - s * akq;
                    a[k * l + q] = s * akp + c * akq;
                }
                for k in 0..l {
                    let (apk, aqk) = (a[p * l + k], a[q * l + k]);
                    a[p * l + k] = c * apk - s * aqk;
                    a[q * l + k] = s * apk + c * aqk;
                }
                for k in 0..l {
                    let (vkp, vkq) = (v[k * l + p], v[k * l + q]);
                    v[k * l + p] = c * vkp - s * vkq;
                    v[k * l + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..l).collect();
    order.sort_by(|&x, &y| a[y * l + y].total_cmp(&a[x * l + x]));
    let values = order.iter().map(|&j| a[j * l + j]).collect();
    let mut vectors = vec![0.0; l * l];
    for (new, &old) in order.iter().enumerate() {
        for k in 0..l {
            vectors[k * l + new] = v[k * l + old];
        }
    }
    (values, vectors)
}

/// Item embeddings (`items x params.dim`, row-major, unit rows; all-zero for items nobody
/// engaged with) from `users`, each user's engaged item indices (`< items`; repeats count
/// once): `V·Σ^½` of the truncated SVD `A ≈ U·Σ·Vᵀ` of the binary user x item matrix. Also
/// returns the singular values. Deterministic for `params.seed`; memory `O((users + items) ·
/// (dim + oversample))`.
///
/// ```
/// use pinnersage_core::svd::{SvdParams, item_embeddings};
/// // Two groups of users, each engaging with its own two items.
/// let users = vec![vec![0, 1], vec![0, 1], vec![2, 3], vec![2, 3]];
/// let params = SvdParams { dim: 2, ..SvdParams::default() };
/// let (emb, _) = item_embeddings(&users, 4, params);
/// let cos = |a: usize, b: usize| emb[a * 2] * emb[b * 2] + emb[a * 2 + 1] * emb[b * 2 + 1];
/// assert!(cos(0, 1) > 0.99 && cos(0, 2).abs() < 1e-4);
/// ```
pub fn item_embeddings(
    users: &[Vec<u32>],
    items: usize,
    params: SvdParams,
) -> (Vec<f32>, Vec<f64>) {
    let a = Engagements {
        rows: distinct_items(users, items),
        items,
    };
    let l = (params.dim + params.oversample)
        .min(items)
        .min(users.len())
        .max(1);
    let mut rng = SplitMix64::new(params.seed);
    let omega: Vec<f64> = (0..items * l).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
    let mut y = a.times(&omega, l);
    orthonormalise(&mut y, l);
    for _ in 0..params.power_iterations {
        let mut z = a.transpose_times(&y, l);
        orthonormalise(&mut z, l);
        y = a.times(&z, l);
        orthonormalise(&mut y, l);
    }
    // B = Qᵀ A is l x items; stored transposed as Bᵀ = Aᵀ Q (items x l).
    let bt = a.transpose_times(&y, l);
    let mut gram = vec![0.0; l * l];
    for row in bt.chunks_exact(l) {
        for i in 0..l {
            for j in 0..l {
                gram[i * l + j] += row[i] * row[j];
            }
        }
    }
    let (values, w) = symmetric_eigen(gram, l);
    let k = params.dim.min(l);
    let singular: Vec<f64> = values[..k].iter().map(|&v| v.max(0.0).sqrt()).collect();
    // V·Σ^½ = Bᵀ·W·Σ^{-1}·Σ^{½} = Bᵀ·W·Σ^{-½}.
    let mut out = vec![0.0f32; items * k];
    for (i, row) in bt.chunks_exact(l).enumerate() {
        let o = &mut out[i * k..(i + 1) * k];
        for (j, oj) in o.iter_mut().enumerate() {
            if singular[j] > 1e-12 {
                let proj: f64 = (0..l).map(|c| row[c] * w[c * l + j]).sum();
                *oj = (proj / singular[j].sqrt()) as f32;
            }
        }
        let norm = o.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            o.iter_mut().for_each(|x| *x /= norm);
        }
    }
    (out, singular)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_recovers_a_known_spectrum() {
        // Q diag(5, 2, 1) Qᵀ with a rotation Q.
        let (c, s) = (0.6f64, 0.8f64);
        let q = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let d = [5.0, 2.0, 1.0];
        let mut a = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|k| q[i * 3 + k] * d[k] * q[j * 3 + k]).sum();
            }
        }
        let (values, vectors) = symmetric_eigen(a, 3);
        for (v, want) in values.iter().zip([5.0, 2.0, 1.0]) {
            assert!((v - want).abs() < 1e-9, "{values:?}");
        }
        // First eigenvector is ±(c, s, 0).
        let v0 = [vectors[0], vectors[3], vectors[6]];
        assert!((v0[0].abs() - c).abs() < 1e-9 && (v0[1].abs() - s).abs() < 1e-9);
    }

    #[test]
    fn two_disjoint_communities_get_orthogonal_embeddings() {
        // Users 0..10 engage with items 0..5, users 10..20 with items 5..10; item 10 unused.
        let users: Vec<Vec<u32>> = (0..20u32)
            .map(|u| (0..5).map(|i| if u < 10 { i } else { 5 + i }).collect())
            .collect();
        let (emb, singular) = item_embeddings(
            &users,
            11,
            SvdParams {
                dim: 2,
                ..SvdParams::default()
            },
        );
        assert!((singular[0] - 50f64.sqrt()).abs() < 1e-6, "{singular:?}");
        assert!((singular[1] - 50f64.sqrt()).abs() < 1e-6, "{singular:?}");
        let v = |i: usize| &emb[i * 2..i * 2 + 2];
        let dot = |a: &[f32], b: &[f32]| a[0] * b[0] + a[1] * b[1];
        assert!(
            (dot(v(0), v(4)) - 1.0).abs() < 1e-5,
            "same community: cosine 1"
        );
        assert!(dot(v(0), v(7)).abs() < 1e-5, "other community: cosine 0");
        assert_eq!(v(10), [0.0, 0.0], "unused item");
    }
}
