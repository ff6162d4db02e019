//! Splitting engagements into training and test: per user by time (each user's first
//! engagements train, the rest test), or walking forward by day as the paper does.

use pinnersage_core::importance::SECONDS_PER_DAY;

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

impl UserSplit {
    /// The distinct training item rows, ascending (for `binary_search`).
    pub fn train_items(&self) -> Vec<u32> {
        let mut rows: Vec<u32> = self.train.iter().map(|&(r, _)| r).collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    /// The training engagements' embeddings (row-major, from the item matrix `vectors` of
    /// `dim` columns) and times, in training order.
    pub fn train_matrix(&self, vectors: &[f32], dim: usize) -> (Vec<f32>, Vec<i64>) {
        let mut data = Vec::with_capacity(self.train.len() * dim);
        let mut times = Vec::with_capacity(self.train.len());
        for &(r, t) in &self.train {
            data.extend_from_slice(&vectors[r as usize * dim..(r as usize + 1) * dim]);
            times.push(t);
        }
        (data, times)
    }
}

/// The distinct items of `later` engagements that are not among the `train` items, in order.
fn unseen_items(train: &[(u32, i64)], later: &[Engagement]) -> Vec<u32> {
    let mut seen: Vec<u32> = train.iter().map(|&(r, _)| r).collect();
    seen.sort_unstable();
    let mut test = Vec::new();
    for e in later {
        if seen.binary_search(&e.row).is_err() && !test.contains(&e.row) {
            test.push(e.row);
        }
    }
    test
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

/// Evaluation units and the training data shared by all of them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Split {
    /// How the split was made, in words (reports).
    pub description: String,
    /// One unit per user (time split) or per user and test day (walk-forward).
    pub units: Vec<UserSplit>,
    /// Units dropped for too little history.
    pub excluded: usize,
    /// Training engagements of models fit once for every unit (popularity, co-engagement
    /// embeddings): each user's training items under the time split; under walk-forward only
    /// what precedes the first test day, so no unit's test items leak into them. `test` is empty.
    pub shared_training: Vec<UserSplit>,
}

/// [`split_by_time`] as a [`Split`].
pub fn time_split(events: &[Engagement], params: SplitParams) -> Split {
    let (units, excluded) = split_by_time(events, params);
    let shared_training = units
        .iter()
        .map(|u| UserSplit {
            user: u.user,
            train: u.train.clone(),
            test: Vec::new(),
        })
        .collect();
    Split {
        description: format!(
            "per user by time, the first {:.0}% of each user's engagements train",
            100.0 * params.train_fraction
        ),
        units,
        excluded,
        shared_training,
    }
}

/// The paper's walk-forward split: the last `test_days` (UTC) days that have engagements are test
/// days; for each, every user active that day is a unit trained on all their engagements of
/// earlier days and tested on that day's new items. Units with fewer than `params.min_train`
/// training engagements or `params.min_test` test items are excluded (`train_fraction` is
/// unused). Units are ordered by user, then day.
///
/// ```
/// use pinnersage_eval::split::{Engagement, SplitParams, walk_forward};
/// let day = 86_400;
/// let e = |user, row, d: i64| Engagement { user, row, time: d * day };
/// let events = [e(0, 1, 0), e(0, 2, 1), e(0, 3, 2), e(0, 4, 3), e(1, 5, 0), e(1, 6, 3)];
/// let params = SplitParams { min_train: 2, ..SplitParams::default() };
/// let split = walk_forward(&events, 2, params);
/// // Test days 2 and 3: user 0 on both, user 1 on day 3 with one training item (excluded).
/// assert_eq!(split.units.len(), 2);
/// assert_eq!(split.units[0].train, [(1, 0), (2, day)]);
/// assert_eq!(split.units[1].test, [4]);
/// assert_eq!(split.excluded, 1);
/// assert_eq!(split.shared_training[0].train, [(1, 0), (2, day)]); // before day 2 only
/// ```
pub fn walk_forward(events: &[Engagement], test_days: usize, params: SplitParams) -> Split {
    let day = |t: i64| t.div_euclid(SECONDS_PER_DAY as i64);
    let mut days: Vec<i64> = events.iter().map(|e| day(e.time)).collect();
    days.sort_unstable();
    days.dedup();
    let test_set = &days[days.len().saturating_sub(test_days)..];
    let Some(&first_test_day) = test_set.first() else {
        return Split::default();
    };
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| (e.user, e.time));
    let mut split = Split {
        description: format!(
            "walk-forward over the last {} days with engagements, each user-day trained on all \
             earlier days",
            test_set.len()
        ),
        ..Split::default()
    };
    for group in sorted.chunk_by(|a, b| a.user == b.user) {
        let user = group[0].user;
        let before = |d: i64| group.partition_point(|e| day(e.time) < d);
        let shared = before(first_test_day);
        if shared > 0 {
            split.shared_training.push(UserSplit {
                user,
                train: group[..shared].iter().map(|e| (e.row, e.time)).collect(),
                test: Vec::new(),
            });
        }
        let mut active: Vec<i64> = group.iter().map(|e| day(e.time)).collect();
        active.dedup();
        for &d in active.iter().filter(|d| test_set.binary_search(d).is_ok()) {
            let (start, end) = (before(d), before(d + 1));
            let train: Vec<(u32, i64)> = group[..start].iter().map(|e| (e.row, e.time)).collect();
            let test = unseen_items(&train, &group[start..end]);
            if train.len() < params.min_train || test.len() < params.min_test.max(1) {
                split.excluded += 1;
            } else {
                split.units.push(UserSplit { user, train, test });
            }
        }
    }
    split
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
        let test = unseen_items(&train, &group[n_train..]);
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
    fn walk_forward_trains_only_on_earlier_days() {
        let mut rng = pinnersage_core::sample::SplitMix64::new(8);
        let events: Vec<Engagement> = (0..3_000)
            .map(|_| Engagement {
                user: (rng.next_u64() % 30) as u32,
                row: (rng.next_u64() % 400) as u32,
                time: (rng.next_u64() % (20 * 86_400)) as i64,
            })
            .collect();
        let split = walk_forward(&events, 5, SplitParams::default());
        assert!(!split.units.is_empty());
        let first_test_day = 15;
        for u in &split.units {
            let last_train_day = u.train.iter().map(|&(_, t)| t / 86_400).max().unwrap();
            for &row in &u.test {
                // Engaged on a test day after every training engagement, and not trained on.
                assert!(events.iter().any(|e| e.user == u.user
                    && e.row == row
                    && e.time / 86_400 > last_train_day
                    && e.time / 86_400 >= first_test_day));
                assert!(u.train.iter().all(|&(r, _)| r != row));
            }
        }
        for s in &split.shared_training {
            assert!(s.train.iter().all(|&(_, t)| t / 86_400 < first_test_day));
        }
    }

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
