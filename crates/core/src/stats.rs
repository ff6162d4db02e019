//! The statistics of an online experiment's report, with users as the unit: a ratio metric per
//! arm (engagements per impression, engaged users per user) with its variance by the delta
//! method, the difference of two arms with a 95% interval, and the sample-ratio-mismatch test
//! that flags a broken split.
//!
//! Why the delta method: a user sees many impressions and they are not independent, so the
//! variance of a ratio of sums must be taken over users. The delta method does that in one pass
//! over per-user sums (a bootstrap would resample users hundreds of times for the same answer at
//! these sample sizes; the tests check the delta variance against the spread of simulated
//! experiments).

/// A ratio of sums over users, `sum(numerator) / sum(denominator)`, with its variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    /// The ratio.
    pub value: f64,
    /// Its variance (delta method, over users).
    pub variance: f64,
    /// Users it was computed over.
    pub users: usize,
}

impl Ratio {
    /// The ratio over users' `(numerator, denominator)` sums, e.g. (engagements, impressions);
    /// `None` when fewer than two users or a zero denominator sum.
    ///
    /// ```
    /// use pinnersage_core::stats::Ratio;
    /// let r = Ratio::over(&[(1.0, 10.0), (3.0, 10.0), (2.0, 20.0)]).unwrap();
    /// assert_eq!(r.value, 6.0 / 40.0);
    /// assert!(r.variance > 0.0);
    /// ```
    pub fn over(users: &[(f64, f64)]) -> Option<Self> {
        let mut moments = Moments::default();
        for &(x, y) in users {
            moments.add(x, y);
        }
        moments.ratio()
    }
}

/// What a [`Ratio`] is computed from: the users' count, the sums of their numerators and
/// denominators and their centred second moments. Mergeable across disjoint sets of users
/// (the pairwise update of Chan, Golub and LeVeque, numerically stable), so that parts of an
/// experiment counted apart (a fleet's replicas, each holding some users) give the ratio of the
/// whole.
///
/// ```
/// use pinnersage_core::stats::{Moments, Ratio};
/// let users = [(1.0, 10.0), (3.0, 10.0), (2.0, 20.0), (0.0, 5.0)];
/// let (mut left, mut right) = (Moments::default(), Moments::default());
/// users[..1].iter().for_each(|&(x, y)| left.add(x, y));
/// users[1..].iter().for_each(|&(x, y)| right.add(x, y));
/// left.merge(&right);
/// let whole = Ratio::over(&users).unwrap();
/// assert_eq!(left.ratio().unwrap().value, whole.value);
/// assert!((left.ratio().unwrap().variance - whole.variance).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Moments {
    /// Users.
    pub users: u64,
    /// Sum of the numerators.
    pub sum_x: f64,
    /// Sum of the denominators.
    pub sum_y: f64,
    /// Sum of squared deviations of the numerators from their mean.
    pub m2_x: f64,
    /// Sum of squared deviations of the denominators from their mean.
    pub m2_y: f64,
    /// Sum of the products of both deviations.
    pub c_xy: f64,
}

impl Moments {
    /// Adds one user's `(numerator, denominator)`.
    pub fn add(&mut self, x: f64, y: f64) {
        self.merge(&Self {
            users: 1,
            sum_x: x,
            sum_y: y,
            ..Self::default()
        });
    }

    /// Adds the users of `other` (disjoint from these).
    pub fn merge(&mut self, other: &Self) {
        if other.users == 0 {
            return;
        }
        if self.users == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.users as f64, other.users as f64);
        let weight = na * nb / (na + nb);
        let dx = other.sum_x / nb - self.sum_x / na;
        let dy = other.sum_y / nb - self.sum_y / na;
        self.m2_x += other.m2_x + dx * dx * weight;
        self.m2_y += other.m2_y + dy * dy * weight;
        self.c_xy += other.c_xy + dx * dy * weight;
        self.sum_x += other.sum_x;
        self.sum_y += other.sum_y;
        self.users += other.users;
    }

    /// The ratio `sum_x / sum_y` with its delta-method variance over the users; `None` when
    /// fewer than two users or a zero denominator sum.
    pub fn ratio(&self) -> Option<Ratio> {
        if self.users < 2 || self.sum_y <= 0.0 {
            return None;
        }
        let nf = self.users as f64;
        let mean_y = self.sum_y / nf;
        let value = self.sum_x / self.sum_y;
        let d = nf - 1.0;
        let (var_x, var_y, cov) = (self.m2_x / d, self.m2_y / d, self.c_xy / d);
        let variance =
            ((var_x - 2.0 * value * cov + value * value * var_y) / (mean_y * mean_y * nf)).max(0.0);
        Some(Ratio {
            value,
            variance,
            users: self.users as usize,
        })
    }
}

/// An arm against the control: the difference of their ratios with a 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    /// Treatment minus control.
    pub absolute: f64,
    /// The 95% interval of `absolute`.
    pub low: f64,
    /// The 95% interval of `absolute`.
    pub high: f64,
    /// `absolute` over the control's value (NaN when the control's is 0).
    pub relative: f64,
    /// Two-sided p-value of "no difference".
    pub p_value: f64,
}

/// The 97.5% quantile of the standard normal distribution.
pub const Z_95: f64 = 1.959_963_984_540_054;

impl Difference {
    /// `treatment` against `control` (independent arms: their variances add).
    ///
    /// ```
    /// use pinnersage_core::stats::{Difference, Ratio};
    /// let control = Ratio { value: 0.10, variance: 1e-6, users: 10_000 };
    /// let treatment = Ratio { value: 0.11, variance: 1e-6, users: 10_000 };
    /// let d = Difference::between(&treatment, &control);
    /// assert!((d.absolute - 0.01).abs() < 1e-12);
    /// assert!(d.low > 0.0 && d.p_value < 0.001); // significant
    /// ```
    pub fn between(treatment: &Ratio, control: &Ratio) -> Self {
        let absolute = treatment.value - control.value;
        let se = (treatment.variance + control.variance).sqrt();
        let p_value = if se > 0.0 {
            2.0 * normal_sf((absolute / se).abs())
        } else if absolute == 0.0 {
            1.0
        } else {
            0.0
        };
        Self {
            absolute,
            low: absolute - Z_95 * se,
            high: absolute + Z_95 * se,
            relative: if control.value != 0.0 {
                absolute / control.value
            } else {
                f64::NAN
            },
            p_value,
        }
    }

    /// Whether the interval excludes zero.
    pub fn significant(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// The 80% quantile of the standard normal distribution (the z of 80% power).
pub const Z_POWER_80: f64 = 0.841_621_233_572_914_3;

/// Users needed in each of two equal arms to detect a change of `relative` (e.g. 0.05 for 5%) in
/// a ratio metric like `observed` (its value and its per-user variance, from a running
/// experiment or the control's history), two-sided at 5% with 80% power:
/// `2 (z_0.975 + z_0.8)^2 s^2 / (relative x value)^2`, where `s^2` is the per-user variance
/// (`observed.variance x observed.users`). `None` when the metric is 0 or `relative` is not a
/// positive number.
///
/// ```
/// use pinnersage_core::stats::{Ratio, users_to_detect};
/// // An engaged-user rate of 10% (per-user variance 0.09), a 10% relative change:
/// let rate = Ratio { value: 0.1, variance: 0.09 / 10_000.0, users: 10_000 };
/// let n = users_to_detect(&rate, 0.10).unwrap();
/// assert!((14_000..14_300).contains(&n), "{n}");
/// ```
pub fn users_to_detect(observed: &Ratio, relative: f64) -> Option<u64> {
    let delta = relative * observed.value;
    if !(relative.is_finite() && relative > 0.0 && delta > 0.0) {
        return None;
    }
    let per_user = observed.variance * observed.users as f64;
    let z = Z_95 + Z_POWER_80;
    Some((2.0 * z * z * per_user / (delta * delta)).ceil() as u64)
}

/// The sample-ratio-mismatch test: are the users observed per arm what the shares say?
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRatio {
    /// Pearson's chi-square statistic.
    pub chi_square: f64,
    /// Degrees of freedom (arms - 1).
    pub degrees: usize,
    /// The probability of a statistic this large from a correct split.
    pub p_value: f64,
}

/// The p-value below which a split is flagged as broken (the usual SRM threshold: a correct
/// split is flagged once in a thousand experiments).
pub const SRM_THRESHOLD: f64 = 0.001;

impl SampleRatio {
    /// The test of `observed` users per arm against `shares` (which add up to 1); `None` with
    /// fewer than two arms, lengths that differ, or no user.
    ///
    /// ```
    /// use pinnersage_core::stats::SampleRatio;
    /// let fine = SampleRatio::test(&[50_110, 49_890], &[0.5, 0.5]).unwrap();
    /// assert!(!fine.mismatch());
    /// let broken = SampleRatio::test(&[51_000, 49_000], &[0.5, 0.5]).unwrap();
    /// assert!(broken.mismatch());
    /// ```
    pub fn test(observed: &[u64], shares: &[f64]) -> Option<Self> {
        if observed.len() < 2 || observed.len() != shares.len() {
            return None;
        }
        let total: u64 = observed.iter().sum();
        if total == 0 {
            return None;
        }
        let chi_square = observed
            .iter()
            .zip(shares)
            .map(|(&o, &s)| {
                let expected = s * total as f64;
                let d = o as f64 - expected;
                d * d / expected
            })
            .sum::<f64>();
        let degrees = observed.len() - 1;
        Some(Self {
            chi_square,
            degrees,
            p_value: chi_square_sf(chi_square, degrees as f64),
        })
    }

    /// Whether the split looks broken (p below [`SRM_THRESHOLD`]).
    pub fn mismatch(&self) -> bool {
        self.p_value < SRM_THRESHOLD
    }
}

/// `P(Z > z)` for a standard normal `Z`.
///
/// ```
/// use pinnersage_core::stats::{Z_95, normal_sf};
/// assert!((normal_sf(Z_95) - 0.025).abs() < 1e-9);
/// assert!((normal_sf(0.0) - 0.5).abs() < 1e-12);
/// ```
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// `P(X > x)` for `X` chi-square with `k` degrees of freedom: the regularized upper incomplete
/// gamma function `Q(k/2, x/2)`.
///
/// ```
/// use pinnersage_core::stats::chi_square_sf;
/// assert!((chi_square_sf(3.841_458_820_694_124, 1.0) - 0.05).abs() < 1e-9);
/// ```
pub fn chi_square_sf(x: f64, k: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(k / 2.0, x / 2.0)
}

/// The complementary error function, through the regularized incomplete gamma function
/// (`erfc(x) = Q(1/2, x^2)` for `x >= 0`).
fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        2.0 - erfc(-x)
    } else {
        gamma_q(0.5, x * x)
    }
}

/// The regularized upper incomplete gamma function `Q(a, x)`: its series below `a + 1`, its
/// continued fraction (modified Lentz) above (Numerical Recipes, 3rd ed., 6.2).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let log_prefix = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        // P(a, x) = e^(-x) x^a / Gamma(a + 1) * sum x^n / ((a+1)...(a+n)).
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        1.0 - sum * log_prefix.exp()
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let step = d * c;
            h *= step;
            if (step - 1.0).abs() < 1e-16 {
                break;
            }
        }
        log_prefix.exp() * h
    }
}

/// `ln(Gamma(x))` for `x > 0` (Lanczos, g = 7, n = 9; about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = G[1..]
        .iter()
        .enumerate()
        .fold(G[0], |acc, (i, g)| acc + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::SplitMix64;

    /// The textbook two-pass delta-method ratio: the reference for [`Moments`].
    fn two_pass(users: &[(f64, f64)]) -> (f64, f64) {
        let nf = users.len() as f64;
        let sum_x: f64 = users.iter().map(|u| u.0).sum();
        let sum_y: f64 = users.iter().map(|u| u.1).sum();
        let (mean_x, mean_y) = (sum_x / nf, sum_y / nf);
        let value = sum_x / sum_y;
        let (mut var_x, mut var_y, mut cov) = (0.0, 0.0, 0.0);
        for (x, y) in users {
            var_x += (x - mean_x) * (x - mean_x);
            var_y += (y - mean_y) * (y - mean_y);
            cov += (x - mean_x) * (y - mean_y);
        }
        let d = nf - 1.0;
        let variance = (var_x / d - 2.0 * value * cov / d + value * value * var_y / d)
            / (mean_y * mean_y * nf);
        (value, variance)
    }

    /// Moments added one by one, or counted in parts and merged in any grouping, give the
    /// two-pass ratio and variance.
    #[test]
    fn moments_merged_in_parts_match_the_two_pass_ratio() {
        let mut rng = SplitMix64::new(5);
        for trial in 0..50 {
            let n = 2 + (rng.next_u64() % 300) as usize;
            let users: Vec<(f64, f64)> = (0..n)
                .map(|_| {
                    let shown = 1.0 + (rng.next_u64() % 60) as f64;
                    ((rng.next_u64() % 4) as f64, shown)
                })
                .collect();
            let (value, variance) = two_pass(&users);
            let count = 1 + trial % 5;
            let mut parts: Vec<Moments> = vec![Moments::default(); count];
            for (k, &(x, y)) in users.iter().enumerate() {
                parts[(k * 7 + trial) % count].add(x, y);
            }
            let mut whole = Moments::default();
            for part in parts.iter().rev() {
                whole.merge(part);
            }
            let r = whole.ratio().unwrap();
            assert_eq!(r.users, n);
            assert!(
                (r.value - value).abs() <= 1e-15 * value.abs(),
                "{r:?} vs {value}"
            );
            assert!(
                (r.variance - variance).abs() <= 1e-9 * variance.abs() + 1e-18,
                "{r:?} vs {variance}"
            );
        }
    }

    /// Values from an independent implementation (scipy.stats: `chi2.sf`, `norm.sf`) or exact.
    #[test]
    fn distribution_tails_match_references() {
        for (x, k, p) in [
            (3.841_458_820_694_124, 1.0, 0.05),
            (5.991_464_547_107_979, 2.0, 0.05),
            (7.814_727_903_251_178, 3.0, 0.05),
            (10.827_566_170_662_733, 1.0, 0.001),
            // Even degrees: Q(m, x/2) = e^(-x/2) sum_{i<m} (x/2)^i / i!, exactly.
            (2.0, 2.0, (-1.0f64).exp()),
            (0.5, 4.0, 1.25 * (-0.25f64).exp()),
            (
                20.0,
                10.0,
                (-10.0f64).exp() * (1.0 + 10.0 + 50.0 + 1000.0 / 6.0 + 10000.0 / 24.0),
            ),
        ] {
            let got = chi_square_sf(x, k);
            assert!(
                (got - p).abs() < 1e-9 * p.max(1e-3),
                "chi2.sf({x}, {k}) = {got}, not {p}"
            );
        }
        assert_eq!(chi_square_sf(0.0, 3.0), 1.0);
        for (z, p) in [
            (0.0, 0.5),
            (1.0, 0.158_655_253_931_457_05),
            (3.0, 0.001_349_898_031_630_094_6),
            (-1.0, 0.841_344_746_068_543),
            (6.0, 9.865_876_450_376_946e-10),
        ] {
            let got = normal_sf(z);
            assert!(
                (got - p).abs() < 1e-12 + 1e-9 * p,
                "norm.sf({z}) = {got}, not {p}"
            );
        }
    }

    /// A population of `n` users: impressions 1..=20, each engaged with a user-specific
    /// probability around `rate`.
    fn population(rng: &mut SplitMix64, n: usize, rate: f64) -> Vec<(f64, f64)> {
        (0..n)
            .map(|_| {
                let impressions = 1 + (rng.next_u64() % 20);
                let p = (rate * 2.0 * rng.next_f64()).min(1.0);
                let engaged = (0..impressions).filter(|_| rng.next_f64() < p).count();
                (engaged as f64, impressions as f64)
            })
            .collect()
    }

    #[test]
    fn the_delta_variance_matches_the_spread_of_simulated_experiments() {
        let mut rng = SplitMix64::new(11);
        let runs: Vec<Ratio> = (0..400)
            .map(|_| Ratio::over(&population(&mut rng, 2_000, 0.1)).unwrap())
            .collect();
        let mean = runs.iter().map(|r| r.value).sum::<f64>() / runs.len() as f64;
        let spread =
            runs.iter().map(|r| (r.value - mean).powi(2)).sum::<f64>() / (runs.len() - 1) as f64;
        let delta = runs.iter().map(|r| r.variance).sum::<f64>() / runs.len() as f64;
        assert!(
            (delta / spread - 1.0).abs() < 0.15,
            "delta {delta:e} vs simulated {spread:e}"
        );
    }

    #[test]
    fn a_a_experiments_are_rarely_significant_and_a_better_arm_is_found() {
        let mut rng = SplitMix64::new(5);
        let trials = 200;
        let false_positives = (0..trials)
            .filter(|_| {
                let a = Ratio::over(&population(&mut rng, 3_000, 0.1)).unwrap();
                let b = Ratio::over(&population(&mut rng, 3_000, 0.1)).unwrap();
                Difference::between(&b, &a).significant()
            })
            .count();
        // 5% expected: 10 of 200; far outside [2, 22] would mean a wrong interval.
        assert!((2..=22).contains(&false_positives), "{false_positives}");

        let control = Ratio::over(&population(&mut rng, 20_000, 0.10)).unwrap();
        let better = Ratio::over(&population(&mut rng, 20_000, 0.11)).unwrap();
        let d = Difference::between(&better, &control);
        assert!(d.low > 0.0, "{d:?}");
        assert!((d.relative - 0.1).abs() < 0.05, "{d:?}");
        assert!(d.p_value < 0.01);
    }

    #[test]
    fn a_broken_split_is_flagged_and_a_correct_one_rarely() {
        let mut rng = SplitMix64::new(3);
        let shares = [0.5, 0.3, 0.2];
        let flagged = (0..1_000)
            .filter(|_| {
                let mut counts = [0u64; 3];
                for _ in 0..10_000 {
                    let u = rng.next_f64();
                    counts[usize::from(u >= 0.5) + usize::from(u >= 0.8)] += 1;
                }
                SampleRatio::test(&counts, &shares).unwrap().mismatch()
            })
            .count();
        assert!(flagged <= 5, "{flagged} of 1,000 correct splits flagged");
        // Losing 3% of one arm's users (a bug that drops some of them) is flagged.
        let broken = SampleRatio::test(&[48_500, 30_000, 20_000], &shares).unwrap();
        assert!(broken.mismatch(), "{broken:?}");
        assert_eq!(broken.degrees, 2);
        assert!(SampleRatio::test(&[1], &[1.0]).is_none());
        assert!(SampleRatio::test(&[0, 0], &[0.5, 0.5]).is_none());
    }

    #[test]
    fn the_users_to_detect_a_change_find_it_four_times_in_five() {
        let mut rng = SplitMix64::new(21);
        let bernoulli = |rng: &mut SplitMix64, n: usize, p: f64| -> Vec<(f64, f64)> {
            (0..n)
                .map(|_| (f64::from(u8::from(rng.next_f64() < p)), 1.0))
                .collect()
        };
        let history = Ratio::over(&bernoulli(&mut rng, 50_000, 0.2)).unwrap();
        let n = users_to_detect(&history, 0.1).unwrap() as usize;
        // 2 (1.96 + 0.84)^2 x 0.16 / 0.02^2 = 6,280 per arm.
        assert!((6_000..6_600).contains(&n), "{n}");
        let runs = 300;
        let found = (0..runs)
            .filter(|_| {
                let control = Ratio::over(&bernoulli(&mut rng, n, 0.2)).unwrap();
                let better = Ratio::over(&bernoulli(&mut rng, n, 0.22)).unwrap();
                Difference::between(&better, &control).significant()
            })
            .count();
        let power = found as f64 / runs as f64;
        assert!((0.72..=0.88).contains(&power), "power {power}");
        assert_eq!(users_to_detect(&history, 0.0), None);
    }

    #[test]
    fn too_little_data_has_no_ratio() {
        assert!(Ratio::over(&[]).is_none());
        assert!(Ratio::over(&[(1.0, 1.0)]).is_none());
        assert!(Ratio::over(&[(0.0, 0.0), (0.0, 0.0)]).is_none());
    }
}
