//! Splitting users between the arms of an online experiment: a user's arm is a pure function of
//! the experiment's salt and the user id, so it is the same on every request, replica and
//! restart, independent of the fleet's partitions, and reshuffled by a new salt.

use crate::hash::stable_hash;

/// Why a split cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// No arm.
    #[error("an experiment needs at least one arm")]
    NoArms,
    /// A share is not a number in (0, 1].
    #[error("arm {arm}: share {share} is not in (0, 1]")]
    Share {
        /// The arm's position.
        arm: usize,
        /// Its share.
        share: f64,
    },
    /// The shares do not add up to 1.
    #[error("the arms' shares add up to {0}, not 1")]
    Sum(f64),
}

/// How far the shares' sum may be from 1 (shares written with a few decimals, e.g. 1/3 as
/// 0.333333).
pub const SHARE_TOLERANCE: f64 = 1e-6;

/// Users split between arms by `shares` under a salt.
///
/// ```
/// use pinnersage_core::experiment::Split;
/// let split = Split::new("homefeed-2026-12", &[0.5, 0.5]).unwrap();
/// let arm = split.arm_of("user-42");
/// assert!(arm < 2);
/// assert_eq!(split.arm_of("user-42"), arm); // stable
/// assert!(Split::new("x", &[0.5, 0.4]).is_err()); // shares must add up to 1
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    salt: String,
    /// The upper end of each arm's interval of [0, 1); the last is 1.
    bounds: Vec<f64>,
}

impl Split {
    /// A split of users under `salt` with each arm's share of them (in (0, 1], adding up to 1).
    pub fn new(salt: &str, shares: &[f64]) -> Result<Self, SplitError> {
        if shares.is_empty() {
            return Err(SplitError::NoArms);
        }
        if let Some((arm, &share)) =
            (shares.iter().enumerate()).find(|(_, s)| !(s.is_finite() && **s > 0.0 && **s <= 1.0))
        {
            return Err(SplitError::Share { arm, share });
        }
        let sum: f64 = shares.iter().sum();
        if (sum - 1.0).abs() > SHARE_TOLERANCE {
            return Err(SplitError::Sum(sum));
        }
        let mut acc = 0.0;
        let mut bounds: Vec<f64> = shares
            .iter()
            .map(|s| {
                acc += s / sum;
                acc
            })
            .collect();
        *bounds.last_mut().expect("one arm at least") = 1.0;
        Ok(Self {
            salt: salt.to_owned(),
            bounds,
        })
    }

    /// The arm of `user`: the arm whose interval of [0, 1) holds the user's point.
    pub fn arm_of(&self, user: &str) -> usize {
        let point = unit_point(&self.salt, user);
        self.bounds
            .iter()
            .position(|&b| point < b)
            .unwrap_or(self.bounds.len() - 1)
    }

    /// Arms in the split.
    pub fn arms(&self) -> usize {
        self.bounds.len()
    }
}

/// The user's point in [0, 1) under `salt`: the top 53 bits of the stable hash of the salt, a
/// zero byte and the user id (so salt "a" with user "bc" differs from salt "ab" with "c").
///
/// ```
/// use pinnersage_core::experiment::unit_point;
/// let p = unit_point("salt", "user-1");
/// assert!((0.0..1.0).contains(&p));
/// assert_ne!(unit_point("salt", "user-1"), unit_point("other", "user-1"));
/// ```
pub fn unit_point(salt: &str, user: &str) -> f64 {
    let mut bytes = Vec::with_capacity(salt.len() + 1 + user.len());
    bytes.extend_from_slice(salt.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(user.as_bytes());
    (stable_hash(&bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(split: &Split, users: usize) -> Vec<usize> {
        let mut counts = vec![0; split.arms()];
        for u in 0..users {
            counts[split.arm_of(&format!("user-{u}"))] += 1;
        }
        counts
    }

    #[test]
    fn shares_hold_within_one_percent_over_100k_users() {
        let shares = [0.5, 0.3, 0.2];
        let split = Split::new("exp-1", &shares).unwrap();
        let counts = counts(&split, 100_000);
        for (count, share) in counts.iter().zip(shares) {
            let observed = *count as f64 / 100_000.0;
            assert!((observed - share).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn the_arm_is_stable_and_a_new_salt_reshuffles() {
        let shares = [0.5, 0.3, 0.2];
        let a = Split::new("exp-1", &shares).unwrap();
        let again = Split::new("exp-1", &shares).unwrap();
        let b = Split::new("exp-2", &shares).unwrap();
        let n = 100_000;
        let mut moved = 0;
        for u in 0..n {
            let user = format!("user-{u}");
            assert_eq!(a.arm_of(&user), again.arm_of(&user));
            moved += usize::from(a.arm_of(&user) != b.arm_of(&user));
        }
        // Independent splits put a user in another arm with probability 1 - sum(share^2).
        let expected = 1.0 - shares.iter().map(|s| s * s).sum::<f64>();
        let observed = moved as f64 / n as f64;
        assert!(
            (observed - expected).abs() < 0.01,
            "{observed} vs {expected}"
        );
    }

    #[test]
    fn the_split_does_not_follow_the_fleet_partitions() {
        use crate::hash::partition_of;
        let split = Split::new("exp-1", &[0.5, 0.5]).unwrap();
        let mut in_arm0 = [0usize; 8];
        let mut total = [0usize; 8];
        for u in 0..80_000 {
            let user = format!("user-{u}");
            let p = partition_of(&user, 8) as usize;
            total[p] += 1;
            in_arm0[p] += usize::from(split.arm_of(&user) == 0);
        }
        for p in 0..8 {
            let share = in_arm0[p] as f64 / total[p] as f64;
            assert!((share - 0.5).abs() < 0.02, "partition {p}: {share}");
        }
    }

    #[test]
    fn bad_shares_are_refused() {
        assert_eq!(Split::new("x", &[]), Err(SplitError::NoArms));
        assert!(matches!(
            Split::new("x", &[0.5, 0.4]),
            Err(SplitError::Sum(_))
        ));
        assert!(matches!(
            Split::new("x", &[1.5, -0.5]),
            Err(SplitError::Share { arm: 0, .. })
        ));
        assert!(matches!(
            Split::new("x", &[f64::NAN, 1.0]),
            Err(SplitError::Share { arm: 0, .. })
        ));
        assert!(matches!(
            Split::new("x", &[1.0, 0.0]),
            Err(SplitError::Share { arm: 1, .. })
        ));
        assert!(Split::new("x", &[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]).is_ok());
        assert!(Split::new("x", &[0.333333, 0.333333, 0.333334]).is_ok());
    }
}
