//! Cluster medoids.

use crate::embeddings::Embeddings;

crate::simd::multiversion! {
    /// The medoid of the rows `members` of `x`: the member minimising the summed squared distance to
    /// all members. Returns `None` for an empty member list.
    ///
    /// Under squared Euclidean distance `Σ_j ||x_m − x_j||² = n·||x_m − c||² + Σ_j ||x_j − c||²`
    /// with `c` the centroid, so the medoid is the member nearest to the centroid. That is what is
    /// computed (in `f64`, `O(n·d)` instead of `O(n²·d)`). **Ties** (for example duplicated rows)
    /// go to the member that comes first in `members`.
    ///
    /// ```
    /// use pinnersage_core::{Embeddings, medoid::medoid};
    /// let data = [0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 10.0, 0.0];
    /// let x = Embeddings::new(&data, 2).unwrap();
    /// assert_eq!(medoid(x, &[0, 1, 2]), Some(1));
    /// assert_eq!(medoid(x, &[0, 1, 2, 3]), Some(2));
    /// assert_eq!(medoid(x, &[]), None);
    /// ```
    pub fn medoid(x: Embeddings<'_>, members: &[usize]) -> Option<usize> => medoid_impl;
}

crate::simd::multiversion! {
    /// The medoid of **weighted points**: row `rows[k]` of `x` stands for `counts[k]` identical
    /// members (repeated engagements of one item). Returns the position `k` in `rows` of the
    /// point minimising the summed squared distance to all members — the point nearest to the
    /// weighted centroid — with ties to the first, or `None` for no points. With every count 1
    /// this is [`medoid`], bit for bit.
    ///
    /// ```
    /// use pinnersage_core::{Embeddings, medoid::weighted_medoid};
    /// let data = [0.0, 0.0, 1.0, 0.0, 10.0, 0.0];
    /// let x = Embeddings::new(&data, 2).unwrap();
    /// assert_eq!(weighted_medoid(x, &[0, 1, 2], &[1.0, 1.0, 1.0]), Some(1));
    /// assert_eq!(weighted_medoid(x, &[0, 1, 2], &[1.0, 1.0, 5.0]), Some(2));
    /// ```
    ///
    /// # Panics
    /// If `counts` and `rows` differ in length.
    pub fn weighted_medoid(x: Embeddings<'_>, rows: &[usize], counts: &[f32]) -> Option<usize> => weighted_medoid_impl;
}

#[inline(always)]
fn medoid_impl(x: Embeddings<'_>, members: &[usize]) -> Option<usize> {
    medoid_by(x, members, |_| 1.0).map(|k| members[k])
}

#[inline(always)]
fn weighted_medoid_impl(x: Embeddings<'_>, rows: &[usize], counts: &[f32]) -> Option<usize> {
    assert_eq!(rows.len(), counts.len(), "one count per row");
    medoid_by(x, rows, |k| f64::from(counts[k]))
}

/// The position in `rows` of the row nearest to the centroid of the rows weighted by
/// `count(position)` (ties: the first); the first row when the weights add up to at most 2.
#[inline(always)]
fn medoid_by(x: Embeddings<'_>, rows: &[usize], count: impl Fn(usize) -> f64) -> Option<usize> {
    rows.first()?;
    let total: f64 = (0..rows.len()).map(&count).sum();
    if total <= 2.0 {
        return Some(0);
    }
    let mut centroid = vec![0.0f64; x.dim()];
    for (k, &i) in rows.iter().enumerate() {
        let c = count(k);
        for (s, &v) in centroid.iter_mut().zip(x.row(i)) {
            *s += c * f64::from(v);
        }
    }
    let inv = 1.0 / total;
    centroid.iter_mut().for_each(|c| *c *= inv);
    let mut best = (f64::INFINITY, 0);
    for (k, &i) in rows.iter().enumerate() {
        let dist = crate::simd::sum_sq(x.row(i), &centroid, |v, c| f64::from(v) - c);
        if dist < best.0 {
            best = (dist, k);
        }
    }
    Some(best.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatched_and_baseline_copies_agree() {
        let (m, d) = (90, 33);
        let x = crate::sample::uniform_rows(11, m, d);
        let emb = Embeddings::new(&x, d).unwrap();
        for len in [1, 2, 3, 17, 90] {
            let members: Vec<usize> = (0..len).map(|i| (i * 7) % m).collect();
            assert_eq!(medoid(emb, &members), medoid_impl(emb, &members));
        }
    }
}
