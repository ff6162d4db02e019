//! Agreement between partitions.

use std::collections::HashMap;

/// The adjusted Rand index of two labelings of the same items: 1 for identical partitions, about
/// 0 for independent ones (it can be negative). Labels are arbitrary values; only which items
/// share a label matters. Two single-cluster (or all-singleton) labelings of the same items
/// score 1.
///
/// ```
/// use pinnersage_core::metrics::adjusted_rand_index;
/// assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[5, 5, 9, 9]), 1.0);
/// assert!(adjusted_rand_index(&[0, 0, 1, 1], &[0, 1, 0, 1]) < 0.0);
/// ```
pub fn adjusted_rand_index<A, B>(a: &[A], b: &[B]) -> f64
where
    A: std::hash::Hash + Eq,
    B: std::hash::Hash + Eq,
{
    assert_eq!(a.len(), b.len(), "labelings of different lengths");
    let pairs = |n: u64| n * n.saturating_sub(1) / 2;
    let mut joint: HashMap<(&A, &B), u64> = HashMap::new();
    let mut left: HashMap<&A, u64> = HashMap::new();
    let mut right: HashMap<&B, u64> = HashMap::new();
    for (x, y) in a.iter().zip(b) {
        *joint.entry((x, y)).or_default() += 1;
        *left.entry(x).or_default() += 1;
        *right.entry(y).or_default() += 1;
    }
    let index: u64 = joint.values().map(|&n| pairs(n)).sum();
    let sum_a: u64 = left.values().map(|&n| pairs(n)).sum();
    let sum_b: u64 = right.values().map(|&n| pairs(n)).sum();
    let total = pairs(a.len() as u64) as f64;
    if total == 0.0 {
        return 1.0;
    }
    let expected = sum_a as f64 * sum_b as f64 / total;
    let max = (sum_a + sum_b) as f64 / 2.0;
    if max == expected {
        return 1.0;
    }
    (index as f64 - expected) / (max - expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computed_case() {
        // By hand: index 2, expected 6·3/15 = 1.2, max 4.5: (2 − 1.2)/(4.5 − 1.2) = 0.2424...
        let got = adjusted_rand_index(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]);
        assert!((got - 0.242_424_242_424_242_4).abs() < 1e-12, "{got}");
        assert_eq!(adjusted_rand_index::<u8, u8>(&[], &[]), 1.0);
        assert_eq!(adjusted_rand_index(&[1, 1, 1], &[2, 2, 2]), 1.0);
    }
}
