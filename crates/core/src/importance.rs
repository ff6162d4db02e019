//! Time-decayed cluster importance.

/// Seconds in a day: ages are measured in days.
pub const SECONDS_PER_DAY: f64 = 86_400.0;

/// The paper's decay rate λ per day (half-life ≈ 69 days).
pub const DEFAULT_LAMBDA: f64 = 0.01;

/// `exp(−λ·age_days)` for an action at unix time `time` seen from `now` (both in seconds).
/// An action later than `now` counts as happening at `now` (age 0).
///
/// ```
/// use pinnersage_core::importance::decay;
/// assert_eq!(decay(1_000, 1_000, 0.01), 1.0);
/// assert!((decay(100 * 86_400, 0, 0.01) - (-1.0f64).exp()).abs() < 1e-15);
/// assert_eq!(decay(0, 5_000, 0.01), 1.0);
/// ```
pub fn decay(now: i64, time: i64, lambda: f64) -> f64 {
    let age_days = (now.saturating_sub(time)).max(0) as f64 / SECONDS_PER_DAY;
    (-lambda * age_days).exp()
}

/// Importance of a cluster: `Σ_a w_a·exp(−λ·age_days(a))` over its member rows, where `w_a` is
/// the action's weight (1 when `weights` is `None`).
///
/// ```
/// use pinnersage_core::importance::importance;
/// let times = [0, 86_400 * 10, 86_400 * 20];
/// let now = 86_400 * 20;
/// let got = importance(&[0, 2], &times, None, now, 0.1);
/// assert!((got - ((-2.0f64).exp() + 1.0)).abs() < 1e-12);
/// assert_eq!(importance(&[1, 2], &times, Some(&[2.0, 2.0, 0.5]), now, 0.0), 2.5);
/// ```
pub fn importance(
    members: &[usize],
    times: &[i64],
    weights: Option<&[f32]>,
    now: i64,
    lambda: f64,
) -> f64 {
    members
        .iter()
        .map(|&i| {
            let w = weights.map_or(1.0, |w| f64::from(w[i]));
            w * decay(now, times[i], lambda)
        })
        .sum()
}
