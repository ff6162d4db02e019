//! Agglomerative clustering by nearest-neighbour chain — Ward (the model) and complete linkage
//! (the paper's ablation) — and the cuts of the resulting tree.
//!
//! The recurrence works on **squared** Euclidean distances with the Lance–Williams form for Ward:
//!
//! ```text
//! d(Ci ∪ Cj, Ck) = ((ni + nk)·d(i,k) + (nj + nk)·d(j,k) − nk·d(i,j)) / (ni + nj + nk)
//! ```
//!
//! so merge heights are scipy's / fastcluster's Ward heights **squared**; complete linkage uses
//! `d(Ci ∪ Cj, Ck) = max(d(i,k), d(j,k))`, i.e. the largest squared distance between members.
//! Both are reducible, which is what makes the chain exact. The chain follows scipy's `nn_chain`
//! step for step: it starts at the lowest active index, prefers the element below the top of the
//! chain on ties (which prevents cycles), otherwise takes the lowest index among equally near
//! clusters, and stores a merged cluster in the larger of the two slots.

use crate::distance::SqDistances;

/// One merge as the chain produced it: slots `a < b` were joined at `height` into slot `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SlotMerge {
    a: u32,
    b: u32,
    height: f32,
}

/// One row of a scipy-style linkage matrix.
///
/// Cluster ids follow scipy: `0..n` are the input rows, `n + t` is the cluster formed by row `t`
/// of the linkage. `height` is the Ward merge cost on squared distances, i.e. the **square** of
/// the third column of `scipy.cluster.hierarchy.linkage(X, 'ward')`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkageRow {
    /// The smaller of the two joined cluster ids.
    pub left: usize,
    /// The larger of the two joined cluster ids.
    pub right: usize,
    /// Ward merge height (squared-distance scale).
    pub height: f64,
    /// Number of rows in the merged cluster.
    pub size: usize,
}

/// The full result of Ward clustering over `n` rows: `n - 1` merges.
///
/// ```
/// use pinnersage_core::{Embeddings, distance::SqDistances, ward::ward};
/// let data = [0.0, 0.0, 0.0, 1.0, 10.0, 0.0, 10.0, 1.0];
/// let mut d = SqDistances::default();
/// d.compute(Embeddings::new(&data, 2).unwrap());
/// let tree = ward(&mut d);
/// assert_eq!(tree.cut(2.0), vec![vec![0, 1], vec![2, 3]]);
/// assert_eq!(tree.cut(0.5), vec![vec![0], vec![1], vec![2], vec![3]]);
/// assert_eq!(tree.linkage().len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Dendrogram {
    n: usize,
    merges: Vec<SlotMerge>,
}

crate::simd::multiversion! {
    /// Runs Ward clustering on the distances in `dist`, which are overwritten in the process.
    pub fn ward(dist: &mut SqDistances) -> Dendrogram => ward_impl;
}

crate::simd::multiversion! {
    /// Runs Ward clustering over **weighted points**: slot `i` starts as a cluster of `sizes[i]`
    /// identical actions, and `dist` holds Ward's starting dissimilarities between them
    /// ([`SqDistances::compute_weighted`] with the same counts). Every merge above height 0 is
    /// then the merge Ward makes on the actions themselves, so the cut at any `alpha` groups the
    /// points as [`ward`] groups their copies; the tree has `sizes.len()` leaves, one per point.
    ///
    /// ```
    /// use pinnersage_core::{Embeddings, distance::SqDistances, ward::{ward, ward_weighted}};
    /// let points = [0.0, 0.0, 0.0, 1.0, 10.0, 0.0];
    /// let counts = [3.0, 1.0, 2.0];
    /// let mut d = SqDistances::default();
    /// d.compute_weighted(Embeddings::new(&points, 2).unwrap(), &counts);
    /// let tree = ward_weighted(&mut d, &counts);
    /// // The same actions one row each: rows 0..3 are point 0, row 3 point 1, rows 4..6 point 2.
    /// let actions = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 10.0, 0.0, 10.0, 0.0];
    /// d.compute(Embeddings::new(&actions, 2).unwrap());
    /// assert_eq!(tree.cut(2.0), vec![vec![0, 1], vec![2]]);
    /// assert_eq!(ward(&mut d).cut(2.0), vec![vec![0, 1, 2, 3], vec![4, 5]]);
    /// ```
    ///
    /// # Panics
    /// If `sizes` does not hold one count per slot.
    pub fn ward_weighted(dist: &mut SqDistances, sizes: &[f32]) -> Dendrogram => ward_weighted_impl;
}

crate::simd::multiversion! {
    /// Runs complete-linkage clustering on the distances in `dist` (overwritten): a merged
    /// cluster's distance to another is the largest squared distance between their members, so
    /// merge heights are squared complete-linkage (`scipy ... 'complete'`) heights.
    ///
    /// ```
    /// use pinnersage_core::{Embeddings, distance::SqDistances, ward::complete_linkage};
    /// let data = [0.0, 0.0, 0.0, 1.0, 10.0, 0.0, 10.0, 3.0];
    /// let mut d = SqDistances::default();
    /// d.compute(Embeddings::new(&data, 2).unwrap());
    /// let tree = complete_linkage(&mut d);
    /// let heights: Vec<f64> = tree.linkage().iter().map(|r| r.height).collect();
    /// assert_eq!(heights, [1.0, 9.0, 109.0]); // 109 = 10² + 3², the farthest pair
    /// assert_eq!(tree.cut_into(2), vec![vec![0, 1], vec![2, 3]]);
    /// ```
    pub fn complete_linkage(dist: &mut SqDistances) -> Dendrogram => complete_impl;
}

#[inline(always)]
fn ward_impl(dist: &mut SqDistances) -> Dendrogram {
    let sizes = vec![1.0f32; dist.len()];
    ward_weighted_impl(dist, &sizes)
}

#[inline(always)]
fn ward_weighted_impl(dist: &mut SqDistances, sizes: &[f32]) -> Dendrogram {
    assert_eq!(sizes.len(), dist.len(), "one size per slot");
    nn_chain(
        dist,
        sizes.to_vec(),
        |row_y, row_x, size, nx, ny, height| {
            for ((dy, &dx), &nk) in row_y.iter_mut().zip(row_x).zip(size) {
                *dy = ((nx + nk) * dx + (ny + nk) * *dy - nk * height) / (nx + ny + nk);
            }
        },
    )
}

#[inline(always)]
fn complete_impl(dist: &mut SqDistances) -> Dendrogram {
    let sizes = vec![1.0f32; dist.len()];
    nn_chain(dist, sizes, |row_y, row_x, _, _, _, _| {
        for (dy, &dx) in row_y.iter_mut().zip(row_x) {
            *dy = if dx > *dy { dx } else { *dy };
        }
    })
}

/// The nearest-neighbour chain over the distance matrix in `dist`, whose slots start with the
/// cluster sizes `size`. `update(row_y, row_x, sizes, nx, ny, height)` rewrites `row_y` into the distances from the merged cluster `x ∪ y` (stored
/// in slot `y`) to every slot, the Lance–Williams step of the linkage.
#[inline(always)]
fn nn_chain(
    dist: &mut SqDistances,
    mut size: Vec<f32>,
    update: impl Fn(&mut [f32], &[f32], &[f32], f32, f32, f32),
) -> Dendrogram {
    let n = dist.len();
    let d = dist.raw_mut();
    let mut active: Vec<u32> = (0..n as u32).collect();
    let mut chain: Vec<usize> = Vec::with_capacity(n);
    let mut merges = Vec::with_capacity(n.saturating_sub(1));

    // `dead[j]` is +inf once slot j is merged away and 0 before, and the diagonal holds +inf, so
    // a nearest-neighbour search is a plain SIMD scan of `row + dead`.
    let mut dead = vec![0.0f32; n];
    for i in 0..n {
        d[i * n + i] = f32::INFINITY;
    }
    for _ in 1..n {
        if chain.is_empty() {
            chain.push(active[0] as usize);
        }
        let (x, y, height) = loop {
            let top = chain[chain.len() - 1];
            let below = (chain.len() > 1).then(|| chain[chain.len() - 2]);
            let (best, best_d) = nearest(&d[top * n..(top + 1) * n], &dead, top, below);
            if Some(best) == below {
                break (top.min(best), top.max(best), best_d);
            }
            chain.push(best);
        };
        chain.truncate(chain.len() - 2);

        // Lance–Williams over the whole row at once (vectorised; dead and diagonal entries stay
        // +inf or are masked by `dead`), then mirrored into column y for live k.
        let (nx, ny) = (size[x], size[y]);
        let (before_y, from_y) = d.split_at_mut(y * n); // x < y, so row x is before row y
        let (row_x, row_y) = (&before_y[x * n..(x + 1) * n], &mut from_y[..n]);
        update(row_y, row_x, &size, nx, ny, height);
        debug_assert!(d.len() == n * n && active.iter().all(|&k| (k as usize) < n));
        for &k in &active {
            let k = k as usize;
            // SAFETY: k < n and y < n, so both indices are below n² = d.len(). This scattered
            // store is the hottest line of the linkage; bounds checks cost ~20% here.
            unsafe { *d.get_unchecked_mut(k * n + y) = *d.get_unchecked(y * n + k) };
        }
        d[y * n + y] = f32::INFINITY;
        dead[x] = f32::INFINITY;
        size[y] += size[x];
        size[x] = 0.0;
        if let Ok(pos) = active.binary_search(&(x as u32)) {
            active.remove(pos);
        }
        merges.push(SlotMerge {
            a: x as u32,
            b: y as u32,
            height,
        });
    }
    Dendrogram { n, merges }
}

/// The nearest live neighbour of `top` in its `row`: the smallest `row[j] + dead[j]`, preferring `below` when
/// it ties with the minimum, otherwise the lowest index holding the minimum.
#[inline(always)]
fn nearest(row: &[f32], dead: &[f32], top: usize, below: Option<usize>) -> (usize, f32) {
    const LANES: usize = 16;
    let (rows, deads) = (row.chunks_exact(LANES), dead.chunks_exact(LANES));
    let tail = rows.remainder().iter().zip(deads.remainder());
    // Pass 1: the minimum, lane-wise (vectorises to packed min).
    let mut mins = [f32::INFINITY; LANES];
    for (r, p) in rows.clone().zip(deads.clone()) {
        for l in 0..LANES {
            let v = r[l] + p[l];
            mins[l] = if v < mins[l] { v } else { mins[l] };
        }
    }
    let min = tail
        .clone()
        .map(|(&r, &p)| r + p)
        .chain(mins)
        .fold(f32::INFINITY, |a, v| if v < a { v } else { a });
    if let Some(b) = below.filter(|&b| row[b] <= min) {
        return (b, row[b]);
    }
    // Pass 2: the lowest index holding the minimum, a chunk at a time.
    let full = rows.len();
    for (c, (r, p)) in rows.zip(deads).enumerate() {
        let mut hit = false;
        for l in 0..LANES {
            hit |= r[l] + p[l] == min;
        }
        if hit {
            let l = (0..LANES).find(|&l| r[l] + p[l] == min).unwrap_or(0);
            return (c * LANES + l, min);
        }
    }
    if let Some(k) = tail.clone().position(|(&r, &p)| r + p == min) {
        return (full * LANES + k, min);
    }
    // Every live distance overflowed to +inf (absurd scales): take the first live other row.
    let j = (0..row.len())
        .find(|&j| dead[j] == 0.0 && j != top)
        .unwrap_or(top);
    (j, f32::INFINITY)
}

impl Dendrogram {
    /// Number of clustered rows.
    pub fn leaves(&self) -> usize {
        self.n
    }

    /// Cuts the tree at `alpha`: the maximal subtrees whose every merge height is `<= alpha`.
    ///
    /// This equals `fcluster(linkage(X, 'ward'), t=sqrt(alpha), criterion='distance')`. Rows never
    /// merged at or below `alpha` are singletons. Clusters are listed by their smallest row; each
    /// cluster's rows are ascending.
    pub fn cut(&self, alpha: f64) -> Vec<Vec<usize>> {
        let mut parent: Vec<u32> = (0..self.n as u32).collect();
        let mut subtree_max = vec![0.0f64; self.n];
        for m in &self.merges {
            let (a, b) = (m.a as usize, m.b as usize);
            let h = f64::from(m.height).max(subtree_max[a]).max(subtree_max[b]);
            subtree_max[b] = h;
            if h <= alpha {
                union(&mut parent, a, b);
            }
        }
        components(&mut parent)
    }

    /// Cuts the tree into `k` clusters (clamped to `1..=n`) by keeping its `n − k` lowest merges,
    /// like `fcluster(Z, t=k, criterion='maxclust')` for a tree without tied heights. Clusters
    /// are listed by their smallest row; each cluster's rows are ascending.
    ///
    /// ```
    /// use pinnersage_core::{Embeddings, distance::SqDistances, ward::ward};
    /// let data = [0.0, 0.0, 0.0, 1.0, 10.0, 0.0, 10.0, 1.0];
    /// let mut d = SqDistances::default();
    /// d.compute(Embeddings::new(&data, 2).unwrap());
    /// let tree = ward(&mut d);
    /// assert_eq!(tree.cut_into(2), tree.cut(2.0));
    /// assert_eq!(tree.cut_into(1), vec![vec![0, 1, 2, 3]]);
    /// assert_eq!(tree.cut_into(9).len(), 4);
    /// ```
    pub fn cut_into(&self, k: usize) -> Vec<Vec<usize>> {
        let keep = self.n.saturating_sub(k.max(1));
        let mut order: Vec<&SlotMerge> = self.merges.iter().collect();
        order.sort_by(|p, q| p.height.total_cmp(&q.height));
        let mut parent: Vec<u32> = (0..self.n as u32).collect();
        for m in order.into_iter().take(keep) {
            union(&mut parent, m.a as usize, m.b as usize);
        }
        components(&mut parent)
    }

    /// The merges as a scipy-style linkage: sorted by height (stable), clusters relabelled so
    /// that row `t` creates cluster `n + t`, exactly as `scipy.cluster.hierarchy.linkage` does.
    pub fn linkage(&self) -> Vec<LinkageRow> {
        let mut order: Vec<usize> = (0..self.merges.len()).collect();
        order.sort_by(|&p, &q| self.merges[p].height.total_cmp(&self.merges[q].height));
        // Union-find over cluster ids 0..2n-1, as scipy's `label` does.
        let mut parent: Vec<u32> = (0..(2 * self.n).max(1) as u32).collect();
        let mut size = vec![1usize; (2 * self.n).max(1)];
        let mut rows = Vec::with_capacity(self.merges.len());
        for (t, &p) in order.iter().enumerate() {
            let m = self.merges[p];
            let (ra, rb) = (
                find(&mut parent, m.a as usize),
                find(&mut parent, m.b as usize),
            );
            let new = self.n + t;
            parent[ra] = new as u32;
            parent[rb] = new as u32;
            size[new] = size[ra] + size[rb];
            rows.push(LinkageRow {
                left: ra.min(rb),
                right: ra.max(rb),
                height: f64::from(m.height),
                size: size[new],
            });
        }
        rows
    }
}

/// Joins the sets of `a` and `b` (the smaller root becomes the root).
fn union(parent: &mut [u32], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    parent[ra.max(rb)] = ra.min(rb) as u32;
}

/// The sets of a union-find forest, listed by smallest element, elements ascending.
fn components(parent: &mut [u32]) -> Vec<Vec<usize>> {
    let n = parent.len();
    let mut cluster_of_root = vec![usize::MAX; n];
    let mut clusters: Vec<Vec<usize>> = Vec::new();
    for i in 0..n {
        let r = find(parent, i);
        if cluster_of_root[r] == usize::MAX {
            cluster_of_root[r] = clusters.len();
            clusters.push(Vec::new());
        }
        clusters[cluster_of_root[r]].push(i);
    }
    clusters
}

/// Root of `i` with path halving.
fn find(parent: &mut [u32], mut i: usize) -> usize {
    while parent[i] as usize != i {
        let grand = parent[parent[i] as usize];
        parent[i] = grand;
        i = grand as usize;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Embeddings;

    /// The runtime-dispatched copy (AVX-512 or AVX2 where available) and the baseline copy
    /// must agree bit for bit: determinism does not depend on the CPU.
    #[test]
    fn dispatched_and_baseline_copies_agree_exactly() {
        for (m, d) in [(2, 1), (37, 5), (300, 24)] {
            let mut x = crate::sample::uniform_rows(3 + m as u64, m, d);
            x.copy_within(0..d, d); // a duplicated row
            let emb = Embeddings::new(&x, d).unwrap();
            let mut a = SqDistances::default();
            a.compute(emb);
            let mut b = a.clone();
            let (mut c, mut e) = (a.clone(), a.clone());
            assert_eq!(ward(&mut a), ward_impl(&mut b), "m={m} d={d}");
            assert_eq!(
                complete_linkage(&mut c),
                complete_impl(&mut e),
                "m={m} d={d}"
            );
        }
    }
}
