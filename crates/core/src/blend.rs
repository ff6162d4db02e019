//! Blending the neighbour lists of several medoids into one recommendation list.

use std::collections::HashSet;

/// One blended result: a catalog row, its score and which input list produced it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blended {
    /// The item's row.
    pub row: u32,
    /// The score the producing list gave it (higher is closer).
    pub score: f32,
    /// Index of the list (the medoid) that produced it.
    pub source: usize,
}

/// How the neighbour lists of the chosen interests become one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Blend {
    /// Equal turns by rank ([`blend_round_robin`]; the paper).
    #[default]
    RoundRobin,
    /// Turns in proportion to the interests' importance ([`blend_weighted`]).
    Importance,
    /// One ranking of every list's items by importance-weighted reciprocal-rank fusion
    /// ([`blend_scored`]).
    Score,
}

impl Blend {
    /// The name `FromStr` reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Blend::RoundRobin => "round-robin",
            Blend::Importance => "importance",
            Blend::Score => "score",
        }
    }
}

impl std::str::FromStr for Blend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round-robin" => Ok(Blend::RoundRobin),
            "importance" => Ok(Blend::Importance),
            "score" => Ok(Blend::Score),
            other => Err(format!(
                "unknown blend {other:?} (expected round-robin, importance or score)"
            )),
        }
    }
}

/// Each list's share of the turns (its weight in the fusion, for [`Blend::Score`]): the chosen interests'
/// by `kind` (equal for round-robin, else in proportion to `importance`), scaled to
/// `1 − global`, then, when `global > 0`, one more list (the user's global interest, last) with
/// share `global`.
///
/// ```
/// use pinnersage_core::blend::{Blend, shares};
/// assert_eq!(shares(Blend::RoundRobin, &[5.0, 1.0], 0.0), [0.5, 0.5]);
/// assert_eq!(shares(Blend::Importance, &[3.0, 1.0], 0.0), [0.75, 0.25]);
/// assert_eq!(shares(Blend::RoundRobin, &[5.0, 1.0], 0.5), [0.25, 0.25, 0.5]);
/// ```
pub fn shares(kind: Blend, importance: &[f64], global: f64) -> Vec<f64> {
    let n = importance.len();
    let clean = |w: f64| if w.is_finite() && w > 0.0 { w } else { 0.0 };
    let total: f64 = importance.iter().map(|&w| clean(w)).sum();
    let mut out: Vec<f64> = match kind {
        Blend::Importance | Blend::Score if total > 0.0 => {
            importance.iter().map(|&w| clean(w) / total).collect()
        }
        _ => vec![1.0 / n.max(1) as f64; n],
    };
    let global = if global.is_finite() {
        global.clamp(0.0, 1.0)
    } else {
        0.0
    };
    if global > 0.0 {
        out.iter_mut().for_each(|w| *w *= 1.0 - global);
        out.push(global);
    }
    out
}

/// Blends `lists` (each `(row, similarity)` best first) by their `shares` ([`shares`]):
/// [`Blend::Score`] ranks every item by [`blend_scored`]; otherwise equal shares interleave
/// round-robin by rank as the paper does ([`blend_round_robin`]), others take turns in
/// proportion ([`blend_weighted`]).
pub fn blend_shares(
    kind: Blend,
    lists: &[&[(u32, f32)]],
    shares: &[f64],
    k: usize,
    skip: impl Fn(u32) -> bool,
) -> Vec<Blended> {
    if kind == Blend::Score {
        blend_scored(lists, shares, k, skip)
    } else if shares.windows(2).all(|w| w[0] == w[1]) {
        blend_round_robin(lists, k, skip)
    } else {
        blend_weighted(lists, shares, k, skip)
    }
}

/// `n` lists' weights from `weights`: missing, non-finite and non-positive ones count as zero;
/// all zero count as equal.
fn list_weights(weights: &[f64], n: usize) -> Vec<f64> {
    let mut weight: Vec<f64> = (0..n)
        .map(|i| {
            weights
                .get(i)
                .copied()
                .filter(|w| w.is_finite() && *w > 0.0)
                .unwrap_or(0.0)
        })
        .collect();
    if weight.iter().all(|&w| w == 0.0) {
        weight.iter_mut().for_each(|w| *w = 1.0);
    }
    weight
}

/// The rank offset of [`blend_scored`]: how far down a list a row's contribution halves.
/// Chosen on MovieLens (10, 60 and 200 tried, title and learned embeddings; docs/evaluation.md).
pub const SCORE_RANK_OFFSET: f64 = 10.0;

/// Ranks every row of `lists` (each `(row, similarity)` best first) by weighted reciprocal-rank
/// fusion: `Σ_i weights[i] / (SCORE_RANK_OFFSET + rank_i)` over the lists `i` that hold it,
/// `rank_i` its 0-based rank there. A row near the top of an important interest's list ranks
/// high; a row on several interests' lists rises. Ranks, not similarities, are fused, so the
/// blend is the same for any embedding's similarity scale. Each result keeps the similarity and
/// the index of the list that contributed most; rows for which `skip` is true are left out (and
/// do not take a rank); ties keep the lower row. Weights that are not positive and finite
/// count as zero, all zero as equal.
///
/// ```
/// use pinnersage_core::blend::blend_scored;
/// let a = [(1, 0.9), (2, 0.5)];
/// let b = [(3, 0.8), (2, 0.7)];
/// let rows = |w: &[f64]| -> Vec<u32> {
///     blend_scored(&[&a, &b], w, 3, |_| false).iter().map(|r| r.row).collect()
/// };
/// // Equal weights: 2, second on both lists, passes both leaders.
/// assert_eq!(rows(&[1.0, 1.0]), [2, 1, 3]);
/// // b far more important: its leader first.
/// assert_eq!(rows(&[1.0, 20.0]), [3, 2, 1]);
/// ```
pub fn blend_scored(
    lists: &[&[(u32, f32)]],
    weights: &[f64],
    k: usize,
    skip: impl Fn(u32) -> bool,
) -> Vec<Blended> {
    let weight = list_weights(weights, lists.len());
    /// A row's fused score, its largest contribution, and that contribution's similarity and list.
    struct Fused {
        score: f64,
        best: f64,
        similarity: f32,
        source: usize,
    }
    let mut fused: std::collections::HashMap<u32, Fused> = std::collections::HashMap::new();
    for (source, list) in lists.iter().enumerate() {
        if weight[source] == 0.0 {
            continue;
        }
        let kept = list.iter().filter(|&&(row, _)| !skip(row));
        for (rank, &(row, similarity)) in kept.enumerate() {
            let contribution = weight[source] / (SCORE_RANK_OFFSET + rank as f64);
            let f = fused.entry(row).or_insert(Fused {
                score: 0.0,
                best: 0.0,
                similarity,
                source,
            });
            f.score += contribution;
            if contribution > f.best {
                (f.best, f.similarity, f.source) = (contribution, similarity, source);
            }
        }
    }
    let mut ranked: Vec<(u32, Fused)> = fused.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
    ranked
        .into_iter()
        .take(k)
        .map(|(row, f)| Blended {
            row,
            score: f.similarity,
            source: f.source,
        })
        .collect()
}

/// The weighted mean of embeddings: a user's global interest, from their stored items weighted
/// by importance (the decay average of their actions) or, for generations without item
/// importance, from their medoids weighted by their clusters' importance. Weights that are not
/// positive and finite count as zero; empty when no weight is left.
///
/// ```
/// use pinnersage_core::blend::weighted_mean;
/// let a = [1.0, 0.0];
/// let b = [0.0, 1.0];
/// assert_eq!(weighted_mean([(&a[..], 3.0), (&b[..], 1.0)], 2), [0.75, 0.25]);
/// ```
pub fn weighted_mean<'a>(
    medoids: impl IntoIterator<Item = (&'a [f32], f64)>,
    dim: usize,
) -> Vec<f32> {
    let mut sum = vec![0.0f64; dim];
    let mut total = 0.0;
    for (vector, importance) in medoids {
        let w = if importance.is_finite() && importance > 0.0 {
            importance
        } else {
            0.0
        };
        total += w;
        for (s, &x) in sum.iter_mut().zip(vector) {
            *s += w * f64::from(x);
        }
    }
    if total <= 0.0 {
        return Vec::new();
    }
    sum.into_iter().map(|s| (s / total) as f32).collect()
}

/// Interleaves `lists` (each `(row, score)` best first) round-robin by rank: every list's
/// first item, then every list's second item, and so on. Rows already taken and rows for which
/// `skip` is true are passed over; stops after `k` results.
///
/// ```
/// use pinnersage_core::blend::blend_round_robin;
/// let a = [(1, 0.9), (2, 0.8), (3, 0.7)];
/// let b = [(2, 0.95), (4, 0.6)];
/// let out = blend_round_robin(&[&a, &b], 4, |row| row == 3);
/// let rows: Vec<u32> = out.iter().map(|r| r.row).collect();
/// assert_eq!(rows, [1, 2, 4]); // 2 comes from `b` first, 3 is skipped
/// assert_eq!(out[1].source, 1);
/// ```
pub fn blend_round_robin(
    lists: &[&[(u32, f32)]],
    k: usize,
    skip: impl Fn(u32) -> bool,
) -> Vec<Blended> {
    let longest = lists.iter().map(|l| l.len()).max().unwrap_or(0);
    let mut taken = HashSet::with_capacity(k.min(longest * lists.len()));
    let mut out = Vec::with_capacity(k.min(longest * lists.len()));
    'ranks: for rank in 0..longest {
        for (source, list) in lists.iter().enumerate() {
            if out.len() == k {
                break 'ranks;
            }
            let Some(&(row, score)) = list.get(rank) else {
                continue;
            };
            if skip(row) || !taken.insert(row) {
                continue;
            }
            out.push(Blended { row, score, source });
        }
    }
    out
}

/// Interleaves `lists` (each `(row, score)` best first) in proportion to `weights`: list `i`
/// supplies about `k · weights[i] / Σ weights` of the results, spread evenly through the
/// ranking (smooth weighted round-robin: each turn goes to the list with the most accumulated
/// credit, ties to the lower index). A list whose next row was already taken or is skipped
/// moves on to its following row within the same turn; an exhausted list drops out and the
/// others share its turns. Stops after `k` results. Weights that are not positive and finite
/// count as zero; when every weight is zero the lists take equal turns.
///
/// ```
/// use pinnersage_core::blend::blend_weighted;
/// let a = [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)];
/// let b = [(10, 0.9), (11, 0.8)];
/// let out = blend_weighted(&[&a, &b], &[3.0, 1.0], 5, |_| false);
/// let rows: Vec<u32> = out.iter().map(|r| r.row).collect();
/// assert_eq!(rows, [1, 2, 10, 3, 4]); // 3 : 1 over the first four
/// ```
pub fn blend_weighted(
    lists: &[&[(u32, f32)]],
    weights: &[f64],
    k: usize,
    skip: impl Fn(u32) -> bool,
) -> Vec<Blended> {
    let weight = list_weights(weights, lists.len());
    let total: usize = lists.iter().map(|l| l.len()).sum();
    let mut taken = HashSet::with_capacity(k.min(total));
    let mut out = Vec::with_capacity(k.min(total));
    let mut next = vec![0usize; lists.len()];
    let mut credit = vec![0.0f64; lists.len()];
    let mut live: Vec<usize> = (0..lists.len())
        .filter(|&i| weight[i] > 0.0 && !lists[i].is_empty())
        .collect();
    while out.len() < k && !live.is_empty() {
        let live_total: f64 = live.iter().map(|&i| weight[i]).sum();
        for &i in &live {
            credit[i] += weight[i];
        }
        let turn = *live
            .iter()
            .max_by(|&&a, &&b| credit[a].total_cmp(&credit[b]).then(b.cmp(&a)))
            .expect("live is not empty");
        credit[turn] -= live_total;
        let list = lists[turn];
        while let Some(&(row, score)) = list.get(next[turn]) {
            next[turn] += 1;
            if !skip(row) && taken.insert(row) {
                out.push(Blended {
                    row,
                    score,
                    source: turn,
                });
                break;
            }
        }
        if next[turn] >= list.len() {
            live.retain(|&i| i != turn);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_inputs_and_zero_k() {
        assert!(blend_round_robin(&[], 10, |_| false).is_empty());
        let a = [(1, 1.0)];
        assert!(blend_round_robin(&[&a], 0, |_| false).is_empty());
    }

    #[test]
    fn every_row_at_most_once_and_rank_order_kept() {
        let a = [(5, 0.9), (6, 0.8), (7, 0.1)];
        let b = [(6, 0.99), (5, 0.98), (8, 0.5)];
        let out = blend_round_robin(&[&a, &b], 10, |_| false);
        let rows: Vec<u32> = out.iter().map(|r| r.row).collect();
        assert_eq!(rows, [5, 6, 7, 8]);
        let sources: Vec<usize> = out.iter().map(|r| r.source).collect();
        assert_eq!(sources, [0, 1, 0, 1]);
    }

    #[test]
    fn weighted_shares_follow_the_weights_and_refill_from_the_others() {
        let a: Vec<(u32, f32)> = (0..100).map(|r| (r, 1.0)).collect();
        let b: Vec<(u32, f32)> = (100..200).map(|r| (r, 1.0)).collect();
        let c: Vec<(u32, f32)> = (200..203).map(|r| (r, 1.0)).collect();
        let out = blend_weighted(&[&a, &b, &c], &[2.0, 1.0, 1.0], 40, |_| false);
        let from = |s: usize| out.iter().filter(|b| b.source == s).count();
        // c runs out after 3; a and b share the rest 2 : 1.
        assert_eq!(out.len(), 40);
        assert_eq!(from(2), 3);
        assert!(
            (from(0) as i64 - 2 * from(1) as i64).abs() <= 2,
            "{} {}",
            from(0),
            from(1)
        );
        // Duplicates and skipped rows are passed over without losing the list's turn.
        let d = [(1, 1.0), (2, 1.0), (3, 1.0)];
        let e = [(1, 1.0), (4, 1.0)];
        let rows: Vec<u32> = blend_weighted(&[&d, &e], &[1.0, 1.0], 10, |r| r == 2)
            .iter()
            .map(|b| b.row)
            .collect();
        assert_eq!(rows, [1, 4, 3]);
        // Zero weights: equal turns; a zero-weight list beside a positive one never plays.
        let rows: Vec<u32> = blend_weighted(&[&d, &e], &[0.0, 0.0], 2, |_| false)
            .iter()
            .map(|b| b.row)
            .collect();
        assert_eq!(rows, [1, 4]);
        let rows: Vec<u32> = blend_weighted(&[&d, &e], &[1.0, 0.0], 10, |_| false)
            .iter()
            .map(|b| b.row)
            .collect();
        assert_eq!(rows, [1, 2, 3]);
    }
}
