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

#[inline(always)]
fn medoid_impl(x: Embeddings<'_>, members: &[usize]) -> Option<usize> {
    let first = *members.first()?;
    if members.len() <= 2 {
        return Some(first);
    }
    let mut centroid = vec![0.0f64; x.dim()];
    for &i in members {
        for (c, &v) in centroid.iter_mut().zip(x.row(i)) {
            *c += f64::from(v);
        }
    }
    let inv = 1.0 / members.len() as f64;
    centroid.iter_mut().for_each(|c| *c *= inv);
    let mut best = (f64::INFINITY, first);
    for &i in members {
        let dist = crate::simd::sum_sq(x.row(i), &centroid, |v, c| f64::from(v) - c);
        if dist < best.0 {
            best = (dist, i);
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
