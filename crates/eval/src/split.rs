//! The per-user time split: each user's first engagements train, the rest test.

/// One engagement: a user (dense index), an item row and a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engagement {
    /// Dense user index.
    pub user: u32,
    /// Item row in the embedding matrix.
    pub row: u32,
    /// Unix seconds.
    pub time: i64,
}

/// One user's split.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSplit {
    /// Dense user index.
    pub user: u32,
    /// Training engagements `(row, time)`, oldest first.
    pub train: Vec<(u32, i64)>,
    /// Distinct test items that are not among the training items (a training item is never
    /// recommended, so it could never be found).
    pub test: Vec<u32>,
}

/// How to split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitParams {
    /// Share of each user's engagements (by time) used for training.
    pub train_fraction: f64,
    /// Users with fewer training engagements are excluded.
    pub min_train: usize,
    /// Users with fewer test items are excluded.
    pub min_test: usize,
}

impl Default for SplitParams {
    fn default() -> Self {
        Self {
            train_fraction: 0.8,
            min_train: 5,
            min_test: 1,
        }
    }
}

/// Splits every user's engagements by time: the first `train_fraction` (at least one
/// engagement) train, the rest test; ties in time keep input order after sorting by time. Returns
/// the kept users (by user index) and the number excluded for too little history.
///
/// ```
/// use pinnersage_eval::split::{Engagement, SplitParams, split_by_time};
/// let e = |user, row, time| Engagement { user, row, time };
/// let events = [e(0, 1, 10), e(0, 2, 20), e(0, 3, 30), e(0, 4, 40), e(0, 5, 50), e(1, 1, 5)];
/// let params = SplitParams { train_fraction: 0.6, min_train: 2, min_test: 1 };
/// let (users, excluded) = split_by_time(&events, params);
/// assert_eq!(excluded, 1); // user 1 has one engagement
/// assert_eq!(users[0].train, [(1, 10), (2, 20), (3, 30)]);
/// assert_eq!(users[0].test, [4, 5]);
/// ```
pub fn split_by_time(events: &[Engagement], params: SplitParams) -> (Vec<UserSplit>, usize) {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| (e.user, e.time));
    let mut users = Vec::new();
    let mut excluded = 0;
    for group in sorted.chunk_by(|a, b| a.user == b.user) {
        let n_train =
            ((group.len() as f64 * params.train_fraction).floor() as usize).clamp(1, group.len());
        let train: Vec<(u32, i64)> = group[..n_train].iter().map(|e| (e.row, e.time)).collect();
        let mut seen: Vec<u32> = train.iter().map(|&(r, _)| r).collect();
        seen.sort_unstable();
        let mut test = Vec::new();
        for e in &group[n_train..] {
            if seen.binary_search(&e.row).is_err() && !test.contains(&e.row) {
                test.push(e.row);
            }
        }
        if train.len() < params.min_train || test.len() < params.min_test.max(1) {
            excluded += 1;
            continue;
        }
        users.push(UserSplit {
            user: group[0].user,
            train,
            test,
        });
    }
    (users, excluded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_test_engagement_is_earlier_than_any_training_engagement() {
        let mut rng = pinnersage_core::sample::SplitMix64::new(5);
        let events: Vec<Engagement> = (0..2_000)
            .map(|_| Engagement {
                user: (rng.next_u64() % 40) as u32,
                row: (rng.next_u64() % 500) as u32,
                time: (rng.next_u64() % 1_000) as i64,
            })
            .collect();
        let (users, _) = split_by_time(&events, SplitParams::default());
        assert!(!users.is_empty());
        for u in &users {
            let last_train = u.train.iter().map(|&(_, t)| t).max().unwrap();
            for &row in &u.test {
                let earliest_test = events
                    .iter()
                    .filter(|e| e.user == u.user && e.row == row)
                    .map(|e| e.time)
                    .min()
                    .unwrap();
                assert!(
                    earliest_test >= last_train,
                    "test item {row} precedes training"
                );
                assert!(
                    u.train.iter().all(|&(r, _)| r != row),
                    "test item also trained on"
                );
            }
            assert!(u.train.windows(2).all(|w| w[0].1 <= w[1].1));
        }
    }
}
