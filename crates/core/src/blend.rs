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
}
