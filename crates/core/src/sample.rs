//! Seedable weighted sampling without replacement (medoid sampling).
//!
//! The generator and the seed derivation are part of the API contract: the same user, day and
//! seed give the same sample in every release, so a page refresh is stable within a day.

use crate::hash::{mix64, stable_hash};

/// SplitMix64: a small, fast, statistically sound generator with a stable output sequence.
///
/// ```
/// use pinnersage_core::sample::SplitMix64;
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let u = a.next_f64();
/// assert!((0.0..1.0).contains(&u));
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// A uniform value in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A sampling seed for `user` (its id as bytes) on `day` (days since the unix epoch) under a
/// deployment-wide `seed`: the id's [`stable_hash`], mixed with the day and the seed.
///
/// ```
/// use pinnersage_core::sample::sample_seed;
/// assert_eq!(sample_seed(b"u1", 19_000, 0), sample_seed(b"u1", 19_000, 0));
/// assert_ne!(sample_seed(b"u1", 19_000, 0), sample_seed(b"u1", 19_001, 0));
/// assert_ne!(sample_seed(b"u1", 19_000, 0), sample_seed(b"u2", 19_000, 0));
/// ```
pub fn sample_seed(user: &[u8], day: i64, seed: u64) -> u64 {
    mix64(stable_hash(user) ^ mix64(day as u64) ^ seed)
}

/// Draws up to `k` distinct indices of `weights` with probability proportional to weight, one
/// after another without replacement (successive sampling).
///
/// Indices with weight `0` (or a negative or non-finite weight, treated as `0`) are drawn only
/// after every positive one is taken, in index order, so the result has `min(k, len)` entries.
///
/// ```
/// use pinnersage_core::sample::{sample_weighted, SplitMix64};
/// let mut rng = SplitMix64::new(1);
/// let picked = sample_weighted(&[5.0, 0.0, 1.0, 3.0], 3, &mut rng);
/// assert_eq!(picked.len(), 3);
/// assert!(!picked.contains(&1));
/// assert_eq!(sample_weighted(&[0.0, 0.0], 5, &mut rng), vec![0, 1]);
/// ```
pub fn sample_weighted(weights: &[f64], k: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let clean = |w: f64| if w.is_finite() && w > 0.0 { w } else { 0.0 };
    let mut remaining: Vec<(usize, f64)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (i, clean(w)))
        .collect();
    let mut picked = Vec::with_capacity(k.min(weights.len()));
    while picked.len() < k && !remaining.is_empty() {
        let total: f64 = remaining.iter().map(|&(_, w)| w).sum();
        let pos = if total > 0.0 {
            let target = rng.next_f64() * total;
            let mut acc = 0.0;
            // Falls back to the last positive weight if rounding leaves `target` unreached.
            let mut chosen = remaining.iter().rposition(|&(_, w)| w > 0.0).unwrap_or(0);
            for (p, &(_, w)) in remaining.iter().enumerate() {
                acc += w;
                if target < acc && w > 0.0 {
                    chosen = p;
                    break;
                }
            }
            chosen
        } else {
            0
        };
        picked.push(remaining.remove(pos).0);
    }
    picked
}

/// Which of a user's interests a recommendation draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// `e` drawn in proportion to importance without replacement (the paper).
    #[default]
    Sample,
    /// The `e` most important (deterministic).
    Top,
    /// Every interest.
    All,
}

impl Selection {
    /// The name `FromStr` reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::Sample => "sample",
            Selection::Top => "top",
            Selection::All => "all",
        }
    }
}

impl std::str::FromStr for Selection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sample" => Ok(Selection::Sample),
            "top" => Ok(Selection::Top),
            "all" => Ok(Selection::All),
            other => Err(format!(
                "unknown selection {other:?} (expected sample, top or all)"
            )),
        }
    }
}

/// Indices of the interests with importances `weights` that `selection` chooses: `e` sampled
/// ([`sample_weighted`] with `rng`), the `e` heaviest (ties: lower index), or all of them
/// (`e` ignored), in the order chosen.
///
/// ```
/// use pinnersage_core::sample::{Selection, SplitMix64, select};
/// let w = [1.0, 5.0, 3.0];
/// let mut rng = SplitMix64::new(1);
/// assert_eq!(select(&w, Selection::Top, 2, &mut rng), [1, 2]);
/// assert_eq!(select(&w, Selection::All, 2, &mut rng), [0, 1, 2]);
/// assert_eq!(select(&w, Selection::Sample, 2, &mut rng).len(), 2);
/// ```
pub fn select(weights: &[f64], selection: Selection, e: usize, rng: &mut SplitMix64) -> Vec<usize> {
    match selection {
        Selection::Sample => sample_weighted(weights, e, rng),
        Selection::All => (0..weights.len()).collect(),
        Selection::Top => {
            let clean = |w: f64| if w.is_finite() { w } else { f64::NEG_INFINITY };
            let mut order: Vec<usize> = (0..weights.len()).collect();
            order.sort_by(|&a, &b| {
                clean(weights[b])
                    .total_cmp(&clean(weights[a]))
                    .then(a.cmp(&b))
            });
            order.truncate(e);
            order
        }
    }
}

/// `m x d` values uniform in `[0, 1)` from `seed`, for unit tests.
#[cfg(test)]
pub(crate) fn uniform_rows(seed: u64, m: usize, d: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..m * d).map(|_| rng.next_f64() as f32).collect()
}
