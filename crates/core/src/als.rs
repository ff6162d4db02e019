//! Engagement-trained item embeddings by implicit alternating least squares (Hu, Koren and
//! Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008), each
//! least-squares step solved approximately by a few conjugate-gradient steps warm-started from the
//! previous factors (Takács, Pilászy and Tikk, RecSys 2011), as the `implicit` library does.
//!
//! Every user `u` and item `i` get factors `x_u`, `y_i` minimising
//! `Σ_{u,i} c_ui (p_ui − x_u·y_i)² + λ (Σ|x_u|² + Σ|y_i|²)` with `p_ui = 1` and
//! `c_ui = 1 + confidence` when `u` engaged with `i`, else `p_ui = 0` and `c_ui = 1`: every
//! unobserved pair counts a little, which is what separates it from a plain factorisation of the
//! observed entries. The item factors, scaled to unit length, are the embeddings.
//! `pinnersage embed --method als` and the evaluation's ALS embeddings use it.

use crate::progress::Progress;
use crate::sample::SplitMix64;
use crate::svd::distinct_items;

/// Settings of [`item_embeddings`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlsParams {
    /// Embedding dimension (factors per user and item).
    pub dim: usize,
    /// Alternations (each solves all users, then all items).
    pub iterations: usize,
    /// Weight `λ` of the factors' squared norms.
    pub regularization: f32,
    /// Extra weight of an observed engagement (`c = 1 + confidence`).
    pub confidence: f32,
    /// Conjugate-gradient steps per least-squares solve.
    pub cg_steps: usize,
    /// Seed of the initial factors.
    pub seed: u64,
}

impl Default for AlsParams {
    fn default() -> Self {
        Self {
            dim: 64,
            iterations: 15,
            regularization: 1.0,
            confidence: 10.0,
            cg_steps: 3,
            seed: 1,
        }
    }
}

/// Item embeddings (`items x params.dim`, row-major, unit rows; all-zero for items nobody
/// engaged with) from `users`, each user's engaged item indices (`< items`; repeats count once).
/// Deterministic for `params.seed` whatever the number of threads; memory
/// `O((users + items) · dim + engagements)`. Progress: one phase of `iterations` units.
///
/// ```
/// use pinnersage_core::als::{AlsParams, item_embeddings};
/// // Two groups of users, each engaging with its own two items.
/// let users = vec![vec![0, 1], vec![0, 1], vec![2, 3], vec![2, 3]];
/// let params = AlsParams { dim: 2, ..AlsParams::default() };
/// let emb = item_embeddings(&users, 4, params, &());
/// let cos = |a: usize, b: usize| emb[a * 2] * emb[b * 2] + emb[a * 2 + 1] * emb[b * 2 + 1];
/// assert!(cos(0, 1) > 0.99 && cos(0, 2).abs() < 0.1);
/// ```
pub fn item_embeddings(
    users: &[Vec<u32>],
    items: usize,
    params: AlsParams,
    progress: &dyn Progress,
) -> Vec<f32> {
    let d = params.dim.max(1);
    let user_items = distinct_items(users, items);
    let item_users = transpose(&user_items, items);
    let mut rng = SplitMix64::new(params.seed);
    let scale = 0.01 / (d as f64).sqrt();
    let mut random = |n: usize| -> Vec<f32> {
        (0..n * d)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32)
            .collect()
    };
    let mut x = random(user_items.len());
    let mut y = random(items);
    progress.phase("ALS iterations", params.iterations as u64);
    for _ in 0..params.iterations {
        solve_side(&mut x, &y, &user_items, d, &params);
        solve_side(&mut y, &x, &item_users, d, &params);
        progress.advance(1);
    }
    progress.finish();
    for (row, engaged) in y.chunks_exact_mut(d).zip(&item_users) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if engaged.is_empty() || norm == 0.0 {
            row.fill(0.0);
        } else {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    y
}

/// For every row `r` of `rows`, each the other side's indices, item `r`'s list of users.
fn transpose(rows: &[Vec<u32>], columns: usize) -> Vec<Vec<u32>> {
    let mut counts = vec![0usize; columns];
    rows.iter().flatten().for_each(|&c| counts[c as usize] += 1);
    let mut out: Vec<Vec<u32>> = counts.into_iter().map(Vec::with_capacity).collect();
    for (r, row) in rows.iter().enumerate() {
        for &c in row {
            out[c as usize].push(r as u32);
        }
    }
    out
}

/// Re-solves every factor of `solved` (rows `links.len()`) given the fixed factors `fixed`:
/// `(FᵀF + λI + Σ_{j∈links[r]} (c−1) f_j f_jᵀ) s_r = c Σ_{j∈links[r]} f_j`, by
/// `params.cg_steps` conjugate-gradient steps from the current `s_r`. Rows are independent, so
/// they are split among threads without changing the result.
fn solve_side(solved: &mut [f32], fixed: &[f32], links: &[Vec<u32>], d: usize, params: &AlsParams) {
    let mut gram = vec![0.0f64; d * d];
    for f in fixed.chunks_exact(d) {
        for a in 0..d {
            let fa = f64::from(f[a]);
            for (g, &fb) in gram[a * d..(a + 1) * d].iter_mut().zip(f) {
                *g += fa * f64::from(fb);
            }
        }
    }
    let gram: Vec<f32> = gram.into_iter().map(|g| g as f32).collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(links.len().max(1));
    let rows_per_thread = links.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (solved, links) in solved
            .chunks_mut(rows_per_thread * d)
            .zip(links.chunks(rows_per_thread))
        {
            let gram = &gram;
            scope.spawn(move || {
                let mut solver = Solver::new(d);
                for (s, link) in solved.chunks_exact_mut(d).zip(links) {
                    solver.solve(s, fixed, link, gram, params);
                }
            });
        }
    });
}

/// Scratch vectors of one thread's conjugate-gradient solves.
struct Solver {
    d: usize,
    r: Vec<f32>,
    p: Vec<f32>,
    ap: Vec<f32>,
}

impl Solver {
    fn new(d: usize) -> Self {
        Self {
            d,
            r: vec![0.0; d],
            p: vec![0.0; d],
            ap: vec![0.0; d],
        }
    }

    /// `out = (G + λI) v + Σ_{j∈link} (c−1)(f_j·v) f_j`.
    fn apply(
        &self,
        out: &mut [f32],
        v: &[f32],
        fixed: &[f32],
        link: &[u32],
        gram: &[f32],
        p: &AlsParams,
    ) {
        let d = self.d;
        for (a, o) in out.iter_mut().enumerate() {
            *o = dot(&gram[a * d..(a + 1) * d], v) + p.regularization * v[a];
        }
        for &j in link {
            let f = &fixed[j as usize * d..(j as usize + 1) * d];
            let w = p.confidence * dot(f, v);
            axpy(out, w, f);
        }
    }

    fn solve(&mut self, s: &mut [f32], fixed: &[f32], link: &[u32], gram: &[f32], p: &AlsParams) {
        let d = self.d;
        let mut r = std::mem::take(&mut self.r);
        let mut dir = std::mem::take(&mut self.p);
        let mut ap = std::mem::take(&mut self.ap);
        // r = b − A s with b = (1 + confidence) Σ f_j.
        self.apply(&mut ap, s, fixed, link, gram, p);
        r.iter_mut().zip(&ap).for_each(|(r, a)| *r = -a);
        for &j in link {
            axpy(
                &mut r,
                1.0 + p.confidence,
                &fixed[j as usize * d..(j as usize + 1) * d],
            );
        }
        dir.copy_from_slice(&r);
        let mut rs_old = dot(&r, &r);
        for _ in 0..p.cg_steps {
            if rs_old < 1e-20 {
                break;
            }
            self.apply(&mut ap, &dir, fixed, link, gram, p);
            let curvature = dot(&dir, &ap);
            if curvature <= 0.0 {
                break;
            }
            let step = rs_old / curvature;
            axpy(s, step, &dir);
            axpy(&mut r, -step, &ap);
            let rs_new = dot(&r, &r);
            let beta = rs_new / rs_old;
            dir.iter_mut().zip(&r).for_each(|(p, r)| *p = r + beta * *p);
            rs_old = rs_new;
        }
        (self.r, self.p, self.ap) = (r, dir, ap);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `out += w · v`.
fn axpy(out: &mut [f32], w: f32, v: &[f32]) {
    out.iter_mut().zip(v).for_each(|(o, x)| *o += w * x);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact solution of one user's normal equations (Gaussian elimination in f64).
    fn exact(fixed: &[f32], link: &[u32], d: usize, p: &AlsParams) -> Vec<f64> {
        let rows = fixed.len() / d;
        let mut a = vec![0.0f64; d * d];
        let mut b = vec![0.0f64; d];
        for j in 0..rows {
            let f = &fixed[j * d..(j + 1) * d];
            let c = if link.contains(&(j as u32)) {
                1.0 + f64::from(p.confidence)
            } else {
                1.0
            };
            for r in 0..d {
                for k in 0..d {
                    a[r * d + k] += c * f64::from(f[r]) * f64::from(f[k]);
                }
                if c > 1.0 {
                    b[r] += c * f64::from(f[r]);
                }
            }
        }
        for r in 0..d {
            a[r * d + r] += f64::from(p.regularization);
        }
        for col in 0..d {
            let pivot = (col..d)
                .max_by(|&x, &y| a[x * d + col].abs().total_cmp(&a[y * d + col].abs()))
                .unwrap();
            for k in 0..d {
                a.swap(col * d + k, pivot * d + k);
            }
            b.swap(col, pivot);
            for r in col + 1..d {
                let m = a[r * d + col] / a[col * d + col];
                for k in col..d {
                    a[r * d + k] -= m * a[col * d + k];
                }
                b[r] -= m * b[col];
            }
        }
        let mut x = vec![0.0; d];
        for r in (0..d).rev() {
            let s: f64 = (r + 1..d).map(|k| a[r * d + k] * x[k]).sum();
            x[r] = (b[r] - s) / a[r * d + r];
        }
        x
    }

    #[test]
    fn enough_conjugate_gradient_steps_solve_the_weighted_least_squares_exactly() {
        let d = 6;
        let mut rng = SplitMix64::new(3);
        let fixed: Vec<f32> = (0..40 * d).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let link = [1u32, 4, 9, 17, 33];
        let p = AlsParams {
            dim: d,
            cg_steps: d,
            ..AlsParams::default()
        };
        let solved_zero = vec![0.0f32; d];
        let mut s = solved_zero.clone();
        let mut gram = vec![0.0f32; d * d];
        for f in fixed.chunks_exact(d) {
            for a in 0..d {
                for b in 0..d {
                    gram[a * d + b] += f[a] * f[b];
                }
            }
        }
        Solver::new(d).solve(&mut s, &fixed, &link, &gram, &p);
        let want = exact(&fixed, &link, d, &p);
        for (got, want) in s.iter().zip(&want) {
            assert!((f64::from(*got) - want).abs() < 1e-3, "{s:?} vs {want:?}");
        }
    }

    #[test]
    fn communities_separate_and_the_result_is_deterministic() {
        // Users 0..10 engage with items 0..5, users 10..20 with items 5..10; item 10 unused.
        let users: Vec<Vec<u32>> = (0..20u32)
            .map(|u| (0..5).map(|i| if u < 10 { i } else { 5 + i }).collect())
            .collect();
        let p = AlsParams {
            dim: 4,
            ..AlsParams::default()
        };
        let emb = item_embeddings(&users, 11, p, &());
        let v = |i: usize| &emb[i * 4..i * 4 + 4];
        assert!(dot(v(0), v(4)) > 0.99, "same community");
        assert!(dot(v(0), v(7)).abs() < 0.2, "other community");
        assert_eq!(v(10), [0.0; 4], "unused item");
        assert_eq!(emb, item_embeddings(&users, 11, p, &()));
    }
}
