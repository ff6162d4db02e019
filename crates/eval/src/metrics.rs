//! The paper's retrieval metrics for one user.

use pinnersage_core::scan::dot;

/// Cosine at or above which a candidate counts as relevant to a test item (the paper's 0.8).
pub const RELEVANCE_COSINE: f32 = 0.8;

/// Share of `test` items found exactly among `candidates`.
///
/// ```
/// use pinnersage_eval::metrics::recall;
/// assert_eq!(recall(&[1, 2, 3, 4], &[4, 9, 1]), 0.5);
/// assert_eq!(recall(&[1, 2], &[]), 0.0);
/// ```
pub fn recall(test: &[u32], candidates: &[u32]) -> f64 {
    if test.is_empty() {
        return 0.0;
    }
    let hits = test.iter().filter(|t| candidates.contains(t)).count();
    hits as f64 / test.len() as f64
}

/// Share of `test` items whose cosine similarity to at least one candidate is at least
/// `threshold`. `vector(row)` gives an item's embedding; `norms[row]` its length.
///
/// ```
/// use pinnersage_eval::metrics::relevance;
/// let x = [1.0, 0.0, 0.0, 1.0, 0.9, 0.1];
/// let v = |r: u32| &x[r as usize * 2..r as usize * 2 + 2];
/// let norms: Vec<f32> = (0..3).map(|r| v(r).iter().map(|a| a * a).sum::<f32>().sqrt()).collect();
/// assert_eq!(relevance(&[0, 1], &[2], &v, &norms, 0.8), 0.5); // item 0 is close to 2, item 1 is not
/// ```
pub fn relevance<'a>(
    test: &[u32],
    candidates: &[u32],
    vector: &dyn Fn(u32) -> &'a [f32],
    norms: &[f32],
    threshold: f32,
) -> f64 {
    if test.is_empty() {
        return 0.0;
    }
    let relevant = test
        .iter()
        .filter(|&&t| {
            let (vt, nt) = (vector(t), norms[t as usize]);
            candidates.iter().any(|&c| {
                let denom = nt * norms[c as usize];
                denom > 0.0 && dot(vt, vector(c)) >= threshold * denom
            })
        })
        .count();
    relevant as f64 / test.len() as f64
}

/// The test items far from the user's average taste, which a multi-interest profile exists to
/// find: those whose cosine to `average` (the user's decay-average embedding) is below the
/// median cosine of the user's test items. Empty for fewer than two test items.
///
/// ```
/// use pinnersage_eval::metrics::minority_items;
/// let x = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0];
/// let v = |r: u32| &x[r as usize * 2..r as usize * 2 + 2];
/// let norms: Vec<f32> = (0..3).map(|r| v(r).iter().map(|a| a * a).sum::<f32>().sqrt()).collect();
/// assert_eq!(minority_items(&[0, 1, 2], &[1.0, 0.0], &v, &norms), [2]);
/// assert!(minority_items(&[0], &[1.0, 0.0], &v, &norms).is_empty());
/// ```
pub fn minority_items<'a>(
    test: &[u32],
    average: &[f32],
    vector: &dyn Fn(u32) -> &'a [f32],
    norms: &[f32],
) -> Vec<u32> {
    if test.len() < 2 {
        return Vec::new();
    }
    let na = dot(average, average).sqrt();
    let cosine = |t: u32| {
        let denom = na * norms[t as usize];
        if denom > 0.0 {
            dot(average, vector(t)) / denom
        } else {
            0.0
        }
    };
    let cosines: Vec<f32> = test.iter().map(|&t| cosine(t)).collect();
    let mut sorted = cosines.clone();
    sorted.sort_by(f32::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    test.iter()
        .zip(&cosines)
        .filter(|&(_, &c)| c < median)
        .map(|(&t, _)| t)
        .collect()
}

/// Recommendations whose diversity is measured: the first this many of the blended ranking.
pub const DIVERSITY_AT: usize = 50;

/// Intra-list diversity: the mean cosine distance `1 − cos` over all pairs of `items` (0 for
/// fewer than two items; zero-length vectors count as cosine 0).
///
/// ```
/// use pinnersage_eval::metrics::diversity;
/// let x = [1.0, 0.0, 0.0, 1.0, 2.0, 0.0];
/// let v = |r: u32| &x[r as usize * 2..r as usize * 2 + 2];
/// let norms = [1.0, 1.0, 2.0];
/// assert_eq!(diversity(&[0, 2], &v, &norms), 0.0); // same direction
/// assert_eq!(diversity(&[0, 1], &v, &norms), 1.0); // orthogonal
/// assert!((diversity(&[0, 1, 2], &v, &norms) - 2.0 / 3.0).abs() < 1e-12);
/// ```
pub fn diversity<'a>(items: &[u32], vector: &dyn Fn(u32) -> &'a [f32], norms: &[f32]) -> f64 {
    let n = items.len();
    if n < 2 {
        return 0.0;
    }
    let mut sum = 0.0f64;
    for (i, &a) in items.iter().enumerate() {
        for &b in &items[i + 1..] {
            let denom = norms[a as usize] * norms[b as usize];
            let cos = if denom > 0.0 {
                dot(vector(a), vector(b)) / denom
            } else {
                0.0
            };
            sum += 1.0 - f64::from(cos);
        }
    }
    sum / (n * (n - 1) / 2) as f64
}

/// Non-engaged items sampled per test item for the ranking metrics (the paper ranks each action
/// against its 20 impressions; public logs have no impressions, so random non-engaged items
/// stand in for them).
pub const NEGATIVES_PER_TEST_ITEM: usize = 20;

/// Reciprocal rank of a positive scored `positive` among negatives scored `negatives`: `1 / (1 +
/// number of negatives scored higher)`; ties count half (so a method that scores everything
/// alike gets the expected rank of a random order).
///
/// ```
/// use pinnersage_eval::metrics::reciprocal_rank;
/// assert_eq!(reciprocal_rank(0.9, &[0.1, 0.5]), 1.0);
/// assert_eq!(reciprocal_rank(0.3, &[0.1, 0.5]), 0.5);
/// assert_eq!(reciprocal_rank(0.0, &[0.0, 0.0]), 0.5);
/// ```
pub fn reciprocal_rank(positive: f64, negatives: &[f64]) -> f64 {
    let ahead: f64 = negatives
        .iter()
        .map(|&n| {
            if n > positive {
                1.0
            } else if n == positive {
                0.5
            } else {
                0.0
            }
        })
        .sum();
    1.0 / (1.0 + ahead)
}

/// R-Precision: with `R = positives.len()`, the share of positives among the `R` best scored
/// of all `positives` and `negatives` (ties broken against the positives).
///
/// ```
/// use pinnersage_eval::metrics::r_precision;
/// assert_eq!(r_precision(&[0.9, 0.8], &[0.1, 0.85, 0.2]), 0.5);
/// assert_eq!(r_precision(&[0.9, 0.8], &[0.1, 0.2]), 1.0);
/// ```
pub fn r_precision(positives: &[f64], negatives: &[f64]) -> f64 {
    if positives.is_empty() {
        return 0.0;
    }
    // (score, is positive), best first; at equal scores negatives go first.
    let mut all: Vec<(f64, bool)> = positives
        .iter()
        .map(|&s| (s, true))
        .chain(negatives.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let r = positives.len();
    all[..r].iter().filter(|(_, p)| *p).count() as f64 / r as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_one() {
        let x = [1.0, 0.0, 0.0, 1.0, 1.0, 0.01];
        let v = |r: u32| &x[r as usize * 2..r as usize * 2 + 2];
        let norms: Vec<f32> = (0..3).map(|r| dot(v(r), v(r)).sqrt()).collect();
        // A method that retrieves nothing useful scores 0 on both.
        assert_eq!(recall(&[0], &[1]), 0.0);
        assert_eq!(relevance(&[0], &[1], &v, &norms, 0.8), 0.0);
        // One that retrieves every test item scores 1 on both.
        assert_eq!(recall(&[0, 1], &[1, 0, 2]), 1.0);
        assert_eq!(relevance(&[0, 1], &[1, 0], &v, &norms, 0.8), 1.0);
        // Ranking: a perfect scorer gets 1, one that puts every negative first gets its floor.
        assert_eq!(r_precision(&[0.9, 0.8], &[0.1, 0.2, 0.3]), 1.0);
        assert_eq!(r_precision(&[0.1], &[0.5, 0.6]), 0.0);
        assert_eq!(reciprocal_rank(0.1, &[0.5, 0.6, 0.7]), 0.25);
        assert_eq!(r_precision(&[], &[0.5]), 0.0);
        // A near duplicate is relevant but not a hit.
        assert_eq!(recall(&[0], &[2]), 0.0);
        assert_eq!(relevance(&[0], &[2], &v, &norms, 0.8), 1.0);
    }
}
