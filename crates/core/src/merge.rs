//! Combining a user's batch interests with the online interests of today's latest actions
//! (the paper's step 5, whose merge rule the paper leaves open; this is ours).
//!
//! **Rule.** An online cluster of `b` actions is folded into the batch cluster of `a` actions
//! that minimises Ward's merge cost `2ab/(a+b)·‖m_a − m_b‖²` (medoids standing in for the
//! centroids), if that cost is at most `alpha`: exactly when Ward, at the threshold the batch
//! used, would merge the two clusters. (For two single actions the cost is their squared
//! distance; bigger clusters must be closer, as in the batch.) A folded cluster keeps the batch
//! medoid (its neighbours stay cached) and gains the online cluster's size and importance. An online cluster that folds nowhere is a new interest
//! of its own. Importance is the same formula on both sides, measured at the same reference time
//! (the batch's `now`), so the two are directly comparable. The result is ordered by importance,
//! highest first; ties keep batch interests first, then input order.

use crate::distance::sq_euclidean;

/// One interest to merge: its medoid's embedding, importance and size.
#[derive(Debug, Clone, Copy)]
pub struct Interest<'a> {
    /// The medoid's embedding.
    pub medoid: &'a [f32],
    /// Σ w·exp(−λ·age_days) over the members, at the common reference time.
    pub importance: f64,
    /// Number of actions.
    pub size: u32,
}

/// One merged interest.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The batch interest it is built on (its medoid is the merged medoid), if any.
    pub batch: Option<usize>,
    /// The online interests folded in (when `batch` is `None`, exactly one: the medoid's owner).
    pub online: Vec<usize>,
    /// Summed importance.
    pub importance: f64,
    /// Summed size.
    pub size: u32,
}

impl Merged {
    /// Whether online actions contributed to this interest.
    pub fn has_online(&self) -> bool {
        !self.online.is_empty()
    }
}

/// Merges `online` interests into `batch` interests by the rule in the module documentation.
///
/// ```
/// use pinnersage_core::merge::{merge_interests, Interest};
/// let (east, east2, north) = ([1.0f32, 0.0], [0.9f32, 0.1], [0.0f32, 1.0]);
/// let batch = [Interest { medoid: &east, importance: 3.0, size: 5 }];
/// let online = [
///     Interest { medoid: &east2, importance: 1.0, size: 2 }, // close: folds into east
///     Interest { medoid: &north, importance: 5.0, size: 4 }, // far: a new interest
/// ];
/// // Ward's cost of merging 5 and 2 actions 0.02 apart (squared): 2·5·2/7·0.02 = 0.057.
/// let merged = merge_interests(&batch, &online, 0.5);
/// assert_eq!(merged.len(), 2);
/// assert_eq!((merged[0].batch, merged[0].online.clone()), (None, vec![1]));
/// assert_eq!((merged[1].batch, merged[1].online.clone()), (Some(0), vec![0]));
/// assert_eq!((merged[1].importance, merged[1].size), (4.0, 7));
/// ```
pub fn merge_interests(batch: &[Interest<'_>], online: &[Interest<'_>], alpha: f64) -> Vec<Merged> {
    let mut merged: Vec<Merged> = batch
        .iter()
        .enumerate()
        .map(|(i, b)| Merged {
            batch: Some(i),
            online: Vec::new(),
            importance: b.importance,
            size: b.size,
        })
        .collect();
    for (j, o) in online.iter().enumerate() {
        let nearest = batch
            .iter()
            .enumerate()
            .map(|(i, b)| (i, ward_cost(b, o)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match nearest {
            Some((i, d)) if d <= alpha => {
                let m = &mut merged[i];
                m.online.push(j);
                m.importance += o.importance;
                m.size += o.size;
            }
            _ => merged.push(Merged {
                batch: None,
                online: vec![j],
                importance: o.importance,
                size: o.size,
            }),
        }
    }
    // Stable: equal importance keeps batch first, then input order.
    merged.sort_by(|a, b| b.importance.total_cmp(&a.importance));
    merged
}

/// Ward's cost of merging two clusters (on squared distances), medoids for centroids.
fn ward_cost(a: &Interest<'_>, b: &Interest<'_>) -> f64 {
    let (na, nb) = (f64::from(a.size.max(1)), f64::from(b.size.max(1)));
    2.0 * na * nb / (na + nb) * sq_euclidean(a.medoid, b.medoid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(batch: &[Interest<'_>], online: &[Interest<'_>], alpha: f64) -> Vec<(f64, u32)> {
        // Every online interest either lands on its nearest batch medoid or stands alone.
        let mut out: Vec<(f64, u32)> = batch.iter().map(|b| (b.importance, b.size)).collect();
        for o in online {
            let mut best: Option<(usize, f64)> = None;
            for (i, b) in batch.iter().enumerate() {
                let (na, nb) = (f64::from(b.size), f64::from(o.size));
                let d: f64 = b
                    .medoid
                    .iter()
                    .zip(o.medoid)
                    .map(|(x, y)| f64::from(x - y).powi(2))
                    .sum::<f64>()
                    * 2.0
                    * na
                    * nb
                    / (na + nb);
                if best.is_none_or(|(_, bd)| d < bd) {
                    best = Some((i, d));
                }
            }
            match best {
                Some((i, d)) if d <= alpha => {
                    out[i].0 += o.importance;
                    out[i].1 += o.size;
                }
                _ => out.push((o.importance, o.size)),
            }
        }
        out.sort_by(|a, b| b.0.total_cmp(&a.0));
        out
    }

    /// Interests on `medoids` with importance `base + 0.37·i` and size `1 + i`.
    fn interests(medoids: &[Vec<f32>], base: f64) -> Vec<Interest<'_>> {
        medoids
            .iter()
            .enumerate()
            .map(|(i, m)| Interest {
                medoid: m,
                importance: base + i as f64 * 0.37,
                size: 1 + i as u32,
            })
            .collect()
    }

    #[test]
    fn matches_a_naive_fold_on_random_interests() {
        let mut rng = crate::sample::SplitMix64::new(7);
        for case in 0..200 {
            let dim = 1 + case % 5;
            let mut vecs = |n: usize| -> Vec<Vec<f32>> {
                (0..n)
                    .map(|_| (0..dim).map(|_| rng.next_f64() as f32).collect())
                    .collect()
            };
            let (bv, ov) = (vecs(case % 7), vecs(case % 4));
            let (b, o) = (interests(&bv, 1.0), interests(&ov, 0.5));
            let alpha = 0.1 * (case % 5) as f64;
            let got: Vec<(f64, u32)> = merge_interests(&b, &o, alpha)
                .iter()
                .map(|m| (m.importance, m.size))
                .collect();
            let want = naive(&b, &o, alpha);
            assert_eq!(got.len(), want.len(), "case {case}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g.0 - w.0).abs() < 1e-12 && g.1 == w.1, "case {case}");
            }
            let total = |v: &[(f64, u32)]| v.iter().map(|x| x.1).sum::<u32>();
            assert_eq!(total(&got), b.iter().chain(&o).map(|i| i.size).sum::<u32>());
        }
    }

    #[test]
    fn no_online_interests_leave_the_batch_profile_unchanged() {
        let m = [0.0f32; 3];
        let b = [
            Interest {
                medoid: &m,
                importance: 1.0,
                size: 1,
            },
            Interest {
                medoid: &m,
                importance: 2.0,
                size: 3,
            },
        ];
        let merged = merge_interests(&b, &[], 1.0);
        assert_eq!(merged[0].batch, Some(1));
        assert_eq!(merged[1].batch, Some(0));
        assert!(merged.iter().all(|m| !m.has_online()));
        assert!(merge_interests(&[], &[], 1.0).is_empty());
    }
}
