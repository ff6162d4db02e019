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
        // A near duplicate is relevant but not a hit.
        assert_eq!(recall(&[0], &[2]), 0.0);
        assert_eq!(relevance(&[0], &[2], &v, &norms, 0.8), 1.0);
    }
}
