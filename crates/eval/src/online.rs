//! The report of an online experiment: engagements attributed to the impressions that showed
//! the items, per-arm metrics over the users exposed, each arm against the control with a 95%
//! interval (delta method over users, [`pinnersage_core::stats`]), and the sample-ratio test.
//!
//! Attribution: an engagement that names its `request_id` goes to that impression when it showed
//! the item (to the same user, no older than the window, at most [`CLOCK_SKEW_SECONDS`] after the
//! engagement); otherwise (or without a request id) to the user's last impression showing the
//! item at or before the engagement, no older than the window. Anything else is not attributed
//! (and counted as such): an engagement on an item we never showed says nothing about an arm.
//!
//! [`Tally`] counts in one pass in time order, keeping only the window's impressions, so a
//! report over the stores ([`report_from_stores`]) takes memory for a day of impressions and the
//! users, not for the whole experiment. What it counted is a [`Partial`]: sums and moments that
//! merge across disjoint sets of users (a fleet's replicas, each holding some), so the report of
//! parts counted apart is the report of the whole.

use std::collections::{BTreeMap, HashMap, HashSet};

use pinnersage_catalog::timestamp::date_of_day;
use pinnersage_store::impressions::day_of;

use pinnersage_core::stats::{Difference, Moments, Ratio, SampleRatio, users_to_detect};
use serde::{Deserialize, Serialize};

/// The default attribution window: 24 hours.
pub const DEFAULT_WINDOW_SECONDS: i64 = 24 * 3_600;

/// Positions reported one by one in [`ArmReport::ctr_by_position`].
pub const POSITIONS: usize = 10;

pub use pinnersage_store::impressions::{Impression, Shown};

/// One engagement (an event of an engaging action).
#[derive(Debug, Clone, PartialEq)]
pub struct Engagement {
    /// The user.
    pub user: String,
    /// The item engaged with.
    pub item: String,
    /// Unix seconds.
    pub time: i64,
    /// The answer it came from, when the client knows it.
    pub request_id: Option<String>,
}

/// An experiment's arms as the report needs them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmsOf {
    /// The arms' names, in order.
    pub names: Vec<String>,
    /// Their shares (adding up to 1).
    pub shares: Vec<f64>,
    /// The control's position.
    pub control: usize,
}

/// One arm's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmReport {
    /// The arm.
    pub arm: String,
    /// Users with at least one impression.
    pub users: u64,
    /// Impressions (answers shown).
    pub impressions: u64,
    /// Items shown over all impressions.
    pub items_shown: u64,
    /// Engagements attributed to the arm's impressions.
    pub engagements: u64,
    /// Users with an attributed engagement over users.
    pub engaged_user_rate: Metric,
    /// Attributed engagements over items shown (click-through rate).
    pub ctr: Metric,
    /// Click-through rate at each of the first [`POSITIONS`] positions.
    pub ctr_by_position: Vec<f64>,
    /// Distinct interests whose items were engaged with, per engaged user (the multi-interest
    /// claim: more than one means engagement came from several of a user's interests).
    pub interests_engaged_per_engaged_user: f64,
    /// Distinct interests among an impression's items, on average (the diversity shown).
    pub interests_per_impression: f64,
    /// The server's answer times, when it recorded them (not for a team's own recommender).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// The arm day by day (UTC days of the impressions; engagements count on their
    /// impression's day).
    pub daily: Vec<DayReport>,
}

/// Answer times of an arm, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Answers timed.
    pub answers: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// Answer times in buckets 1% wide (a log scale from 1 µs to 71 minutes): mergeable, its mean
/// exact and its quantiles within 0.5% of the exact ones.
///
/// ```
/// use pinnersage_eval::online::LatencyHistogram;
/// let mut h = LatencyHistogram::default();
/// (1..=1000).for_each(|ms| h.record(ms * 1_000));
/// let l = h.summary().unwrap();
/// assert_eq!((l.answers, l.mean_ms), (1000, 500.5));
/// assert!((l.p50_ms - 500.0).abs() <= 2.5 && (l.p99_ms - 990.0).abs() <= 5.0, "{l:?}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Answers per bucket: bucket `b >= 1` holds `[1.01^(b-1), 1.01^b)` µs, bucket 0 holds 0.
    buckets: BTreeMap<u32, u64>,
    /// The sum of the times, µs.
    sum_micros: u64,
}

/// The growth of [`LatencyHistogram`]'s buckets, as a logarithm.
const BUCKET_GROWTH_LN: f64 = 0.009_950_330_853_168_083; // ln(1.01)

impl LatencyHistogram {
    /// Counts an answer of `micros` µs.
    pub fn record(&mut self, micros: u32) {
        let bucket = if micros == 0 {
            0
        } else {
            (f64::from(micros).ln() / BUCKET_GROWTH_LN).floor() as u32 + 1
        };
        *self.buckets.entry(bucket).or_default() += 1;
        self.sum_micros += u64::from(micros);
    }

    /// Adds the answers of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (&bucket, &count) in &other.buckets {
            *self.buckets.entry(bucket).or_default() += count;
        }
        self.sum_micros += other.sum_micros;
    }

    /// The summary (each quantile the geometric middle of its bucket), none without answers.
    pub fn summary(&self) -> Option<Latency> {
        let answers: u64 = self.buckets.values().sum();
        if answers == 0 {
            return None;
        }
        let at = |q: f64| {
            let rank = ((q * answers as f64).ceil() as u64).clamp(1, answers);
            let mut seen = 0;
            for (&bucket, &count) in &self.buckets {
                seen += count;
                if seen >= rank {
                    return if bucket == 0 {
                        0.0
                    } else {
                        (BUCKET_GROWTH_LN * (f64::from(bucket) - 0.5)).exp() / 1_000.0
                    };
                }
            }
            unreachable!("the rank is at most the count")
        };
        Some(Latency {
            answers,
            mean_ms: self.sum_micros as f64 / answers as f64 / 1_000.0,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
        })
    }
}

/// One day of an arm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayReport {
    /// The UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// Users shown that day.
    pub users: u64,
    /// Impressions that day.
    pub impressions: u64,
    /// Items shown that day.
    pub items_shown: u64,
    /// Engagements attributed to that day's impressions.
    pub engagements: u64,
    /// Their click-through rate.
    pub ctr: f64,
}

/// A metric with its standard error and, for a non-control arm, its difference to the control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// The value.
    pub value: f64,
    /// Its standard error (delta method over users).
    pub standard_error: f64,
    /// Against the control (absent for the control itself and without data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_control: Option<Versus>,
}

/// A difference to the control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Versus {
    /// This arm minus the control.
    pub absolute: f64,
    /// Relative to the control's value.
    pub relative: f64,
    /// The 95% interval of `absolute`.
    pub interval: [f64; 2],
    /// Two-sided p-value of "no difference".
    pub p_value: f64,
    /// Whether the interval excludes zero.
    pub significant: bool,
}

impl From<Difference> for Versus {
    fn from(d: Difference) -> Self {
        Self {
            absolute: d.absolute,
            relative: d.relative,
            interval: [d.low, d.high],
            p_value: d.p_value,
            significant: d.significant(),
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnlineReport {
    /// The control arm.
    pub control: String,
    /// Every arm, in the experiment's order.
    pub arms: Vec<ArmReport>,
    /// The sample-ratio test of the users per arm (absent with no users).
    pub sample_ratio: Option<SampleRatioView>,
    /// Engagements attributed to no impression.
    pub unattributed: u64,
    /// Impressions of arms the experiment does not have (ignored).
    pub unknown_arm_impressions: u64,
    /// How long to run: users per arm to detect a [`POWER_CHANGE`] change from the control's
    /// numbers (absent without them).
    pub users_to_detect: Option<UsersToDetect>,
}

/// The relative change [`OnlineReport::users_to_detect`] is computed for: 5%.
pub const POWER_CHANGE: f64 = 0.05;

/// Users per arm (two-sided 5%, 80% power) to detect a [`POWER_CHANGE`] change in each metric,
/// from the control's value and per-user variance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsersToDetect {
    /// The relative change.
    pub relative_change: f64,
    /// For the click-through rate.
    pub ctr: Option<u64>,
    /// For the engaged-user rate.
    pub engaged_user_rate: Option<u64>,
}

/// The sample-ratio test as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleRatioView {
    /// Pearson's chi-square.
    pub chi_square: f64,
    /// Its p-value.
    pub p_value: f64,
    /// Whether the split looks broken (p < 0.001): the other numbers are then not trustworthy.
    pub mismatch: bool,
}

/// How far an engagement's time may run ahead of the impression its `request_id` names (the
/// client's clock and the server's differ): 5 minutes.
pub const CLOCK_SKEW_SECONDS: i64 = 300;

/// Per user of an arm: what they were shown and what they engaged with.
#[derive(Default)]
struct UserTally {
    items_shown: u64,
    engagements: u64,
    interests_engaged: HashSet<u32>,
}

/// Per arm, while counting.
#[derive(Default)]
struct ArmTally {
    users: HashMap<u32, UserTally>,
    impressions: u64,
    shown_at: [u64; POSITIONS],
    engaged_at: [u64; POSITIONS],
    interests_shown: u64,
    latency: LatencyHistogram,
    days: BTreeMap<i64, DayTally>,
}

impl ArmTally {
    /// What was counted, as sums and moments over the users.
    fn partial(&self) -> ArmPartial {
        let mut ctr = Moments::default();
        let mut engaged = Moments::default();
        let (mut engaged_users, mut interests_engaged) = (0, 0);
        for u in self.users.values() {
            ctr.add(u.engagements as f64, u.items_shown as f64);
            engaged.add(f64::from(u8::from(u.engagements > 0)), 1.0);
            if u.engagements > 0 {
                engaged_users += 1;
                interests_engaged += u.interests_engaged.len() as u64;
            }
        }
        ArmPartial {
            users: self.users.len() as u64,
            impressions: self.impressions,
            items_shown: self.users.values().map(|u| u.items_shown).sum(),
            engagements: self.users.values().map(|u| u.engagements).sum(),
            ctr,
            engaged,
            shown_at: self.shown_at,
            engaged_at: self.engaged_at,
            engaged_users,
            interests_engaged,
            interests_shown: self.interests_shown,
            latency: self.latency.clone(),
            days: (self.days.iter())
                .map(|(&day, d)| {
                    let part = DayPartial {
                        users: d.users.len() as u64,
                        impressions: d.impressions,
                        items_shown: d.items_shown,
                        engagements: d.engagements,
                    };
                    (day, part)
                })
                .collect(),
        }
    }
}

/// What a [`Tally`] counted, in parts that add up across disjoint sets of users: the counts,
/// and the per-user moments the rates and their variances come from. A fleet's replicas each
/// count the users they hold; [`Partial::merge`] adds them and [`Partial::report`] reports the
/// whole, as one tally of everything would.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    /// Per arm, in the experiment's order.
    pub arms: Vec<ArmPartial>,
    /// Engagements attributed to no impression.
    pub unattributed: u64,
    /// Impressions of arms the experiment does not have.
    pub unknown_arm_impressions: u64,
}

/// One arm's part of a [`Partial`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmPartial {
    /// Users shown at least one impression.
    pub users: u64,
    /// Impressions.
    pub impressions: u64,
    /// Items shown.
    pub items_shown: u64,
    /// Attributed engagements.
    pub engagements: u64,
    /// Per user: (engagements, items shown), the click-through rate's moments.
    #[serde(with = "MomentsJson")]
    pub ctr: Moments,
    /// Per user: (engaged or not, 1), the engaged-user rate's moments.
    #[serde(with = "MomentsJson")]
    pub engaged: Moments,
    /// Impressions that had a position (0-based), for the first [`POSITIONS`].
    pub shown_at: [u64; POSITIONS],
    /// Engagements attributed at each position.
    pub engaged_at: [u64; POSITIONS],
    /// Users with an engagement.
    pub engaged_users: u64,
    /// Over the engaged users, the distinct interests each engaged with, summed.
    pub interests_engaged: u64,
    /// Over the impressions, the distinct interests each showed, summed.
    pub interests_shown: u64,
    /// The answers' server times.
    pub latency: LatencyHistogram,
    /// Per unix day.
    pub days: BTreeMap<i64, DayPartial>,
}

/// One day of an [`ArmPartial`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DayPartial {
    /// Users shown an impression that day.
    pub users: u64,
    /// Impressions.
    pub impressions: u64,
    /// Items shown.
    pub items_shown: u64,
    /// Engagements attributed to that day's impressions.
    pub engagements: u64,
}

/// [`Moments`] as JSON.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Moments")]
struct MomentsJson {
    users: u64,
    sum_x: f64,
    sum_y: f64,
    m2_x: f64,
    m2_y: f64,
    c_xy: f64,
}

impl Partial {
    /// Adds `other`, counted over other users (another partition of the same experiment).
    pub fn merge(&mut self, other: &Partial) -> Result<(), crate::EvalError> {
        if self.arms.len() != other.arms.len() {
            return Err(crate::EvalError::Input(format!(
                "parts of a report with {} and {} arms: not the same experiment",
                self.arms.len(),
                other.arms.len()
            )));
        }
        for (a, b) in self.arms.iter_mut().zip(&other.arms) {
            a.users += b.users;
            a.impressions += b.impressions;
            a.items_shown += b.items_shown;
            a.engagements += b.engagements;
            a.ctr.merge(&b.ctr);
            a.engaged.merge(&b.engaged);
            for p in 0..POSITIONS {
                a.shown_at[p] += b.shown_at[p];
                a.engaged_at[p] += b.engaged_at[p];
            }
            a.engaged_users += b.engaged_users;
            a.interests_engaged += b.interests_engaged;
            a.interests_shown += b.interests_shown;
            a.latency.merge(&b.latency);
            for (&day, d) in &b.days {
                let into = a.days.entry(day).or_default();
                into.users += d.users;
                into.impressions += d.impressions;
                into.items_shown += d.items_shown;
                into.engagements += d.engagements;
            }
        }
        self.unattributed += other.unattributed;
        self.unknown_arm_impressions += other.unknown_arm_impressions;
        Ok(())
    }

    /// The report of `arms` (the experiment counted) from these counts.
    pub fn report(&self, arms: &ArmsOf) -> OnlineReport {
        let control_ctr = self.arms.get(arms.control).and_then(|a| a.ctr.ratio());
        let control_engaged = self.arms.get(arms.control).and_then(|a| a.engaged.ratio());
        let metric = |r: Option<Ratio>, control: Option<Ratio>, is_control: bool| match r {
            None => Metric {
                value: f64::NAN,
                standard_error: f64::NAN,
                vs_control: None,
            },
            Some(r) => Metric {
                value: r.value,
                standard_error: r.variance.sqrt(),
                vs_control: control
                    .filter(|_| !is_control)
                    .map(|c| Difference::between(&r, &c).into()),
            },
        };
        let arms_out: Vec<ArmReport> = (self.arms.iter().enumerate())
            .map(|(a, t)| {
                let is_control = a == arms.control;
                ArmReport {
                    arm: arms.names.get(a).cloned().unwrap_or_default(),
                    users: t.users,
                    impressions: t.impressions,
                    items_shown: t.items_shown,
                    engagements: t.engagements,
                    engaged_user_rate: metric(t.engaged.ratio(), control_engaged, is_control),
                    ctr: metric(t.ctr.ratio(), control_ctr, is_control),
                    ctr_by_position: (0..POSITIONS)
                        .map(|p| ratio(t.engaged_at[p], t.shown_at[p]))
                        .collect(),
                    interests_engaged_per_engaged_user: ratio(t.interests_engaged, t.engaged_users),
                    interests_per_impression: ratio(t.interests_shown, t.impressions),
                    latency: t.latency.summary(),
                    daily: (t.days.iter())
                        .map(|(&day, d)| DayReport {
                            date: date_of_day(day),
                            users: d.users,
                            impressions: d.impressions,
                            items_shown: d.items_shown,
                            engagements: d.engagements,
                            ctr: ratio(d.engagements, d.items_shown),
                        })
                        .collect(),
                }
            })
            .collect();
        let users: Vec<u64> = self.arms.iter().map(|t| t.users).collect();
        OnlineReport {
            control: arms.names.get(arms.control).cloned().unwrap_or_default(),
            arms: arms_out,
            sample_ratio: SampleRatio::test(&users, &arms.shares).map(|s| SampleRatioView {
                chi_square: s.chi_square,
                p_value: s.p_value,
                mismatch: s.mismatch(),
            }),
            unattributed: self.unattributed,
            unknown_arm_impressions: self.unknown_arm_impressions,
            users_to_detect: (control_ctr.is_some() || control_engaged.is_some()).then(|| {
                UsersToDetect {
                    relative_change: POWER_CHANGE,
                    ctr: control_ctr.and_then(|r| users_to_detect(&r, POWER_CHANGE)),
                    engaged_user_rate: control_engaged
                        .and_then(|r| users_to_detect(&r, POWER_CHANGE)),
                }
            }),
        }
    }
}

/// Per day of an arm, while counting.
#[derive(Default)]
struct DayTally {
    users: HashSet<u32>,
    impressions: u64,
    items_shown: u64,
    engagements: u64,
}

/// An impression still inside the attribution window, its strings interned.
struct Recent {
    arm: usize,
    time: i64,
    request: u64,
    /// (item, interest) of each position; `u32::MAX` is no interest.
    items: Vec<(u32, u32)>,
}

/// Strings as numbers, so that millions of impressions take little memory.
#[derive(Default)]
struct Interner(HashMap<String, u32>);

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.0.get(s) {
            return id;
        }
        let id = self.0.len() as u32;
        self.0.insert(s.to_owned(), id);
        id
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.0.get(s).copied()
    }
}

/// The report built incrementally, in one pass over impressions and engagements in time order:
/// only the impressions inside the attribution window are kept (interned), so memory grows with
/// the window's impressions and the users, not with the days reported.
///
/// The order a caller keeps: every impression with `time <= e.time + CLOCK_SKEW_SECONDS` is
/// given before engagement `e` ([`report`] sorts slices; stores read in time order).
pub struct Tally {
    arms: ArmsOf,
    window: i64,
    arm_of: HashMap<String, usize>,
    tallies: Vec<ArmTally>,
    users: Interner,
    items: Interner,
    /// Each user's impressions inside the window, oldest first.
    recent: HashMap<u32, std::collections::VecDeque<Recent>>,
    /// (time, user) of every impression kept, oldest first: what to forget as time passes.
    order: std::collections::VecDeque<(i64, u32)>,
    unattributed: u64,
    unknown_arm_impressions: u64,
}

impl Tally {
    /// An empty report of `arms`, attributing engagements within `window_seconds`.
    pub fn new(arms: &ArmsOf, window_seconds: i64) -> Self {
        Self {
            arm_of: (arms.names.iter().enumerate())
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            tallies: (0..arms.names.len()).map(|_| ArmTally::default()).collect(),
            arms: arms.clone(),
            window: window_seconds.max(0),
            users: Interner::default(),
            items: Interner::default(),
            recent: HashMap::new(),
            order: std::collections::VecDeque::new(),
            unattributed: 0,
            unknown_arm_impressions: 0,
        }
    }

    /// Forgets the impressions too old for an engagement at `now` or later.
    fn forget_before(&mut self, now: i64) {
        let oldest = now.saturating_sub(self.window);
        while let Some(&(time, user)) = self.order.front() {
            if time >= oldest {
                break;
            }
            self.order.pop_front();
            if let Some(list) = self.recent.get_mut(&user) {
                list.pop_front();
                if list.is_empty() {
                    self.recent.remove(&user);
                }
            }
        }
    }

    /// Counts one impression.
    pub fn impression(&mut self, imp: &Impression) {
        let Some(&arm) = self.arm_of.get(imp.arm.as_str()) else {
            self.unknown_arm_impressions += 1;
            return;
        };
        let user = self.users.id(&imp.user);
        let items: Vec<(u32, u32)> = (imp.items.iter())
            .map(|s| {
                let interest = s.interest.as_deref().map_or(u32::MAX, |m| self.items.id(m));
                (self.items.id(&s.item), interest)
            })
            .collect();
        let tally = &mut self.tallies[arm];
        tally.impressions += 1;
        let interests: HashSet<u32> = (items.iter().map(|&(_, m)| m))
            .filter(|&m| m != u32::MAX)
            .collect();
        tally.interests_shown += interests.len() as u64;
        for at in tally.shown_at.iter_mut().take(items.len()) {
            *at += 1;
        }
        tally.users.entry(user).or_default().items_shown += items.len() as u64;
        if let Some(micros) = imp.latency_micros {
            tally.latency.record(micros);
        }
        let day = tally.days.entry(day_of(imp.time)).or_default();
        day.users.insert(user);
        day.impressions += 1;
        day.items_shown += items.len() as u64;
        self.order.push_back((imp.time, user));
        self.recent.entry(user).or_default().push_back(Recent {
            arm,
            time: imp.time,
            request: pinnersage_core::hash::stable_hash(imp.request_id.as_bytes()),
            items,
        });
    }

    /// Attributes one engagement (see the module's rule) and counts it.
    pub fn engagement(&mut self, e: &Engagement) {
        // Impressions named by a request id may be up to the skew after the engagement.
        self.forget_before(e.time.saturating_sub(CLOCK_SKEW_SECONDS));
        let found = (|| {
            let user = self.users.get(&e.user)?;
            let item = self.items.get(&e.item)?;
            let list = self.recent.get(&user)?;
            let position = |r: &Recent| r.items.iter().position(|&(i, _)| i == item);
            let oldest = e.time.saturating_sub(self.window);
            let named = e.request_id.as_deref().and_then(|id| {
                let request = pinnersage_core::hash::stable_hash(id.as_bytes());
                list.iter()
                    .filter(|r| r.request == request && r.time >= oldest)
                    .find_map(|r| Some((r, position(r)?)))
            });
            named
                .or_else(|| {
                    list.iter()
                        .rev()
                        .filter(|r| r.time <= e.time && r.time >= oldest)
                        .find_map(|r| Some((r, position(r)?)))
                })
                .map(|(r, p)| (user, r.arm, r.time, p, r.items[p].1))
        })();
        let Some((user, arm, time, p, interest)) = found else {
            self.unattributed += 1;
            return;
        };
        let tally = &mut self.tallies[arm];
        if p < POSITIONS {
            tally.engaged_at[p] += 1;
        }
        if let Some(day) = tally.days.get_mut(&day_of(time)) {
            day.engagements += 1;
        }
        let u = tally.users.entry(user).or_default();
        u.engagements += 1;
        if interest != u32::MAX {
            u.interests_engaged.insert(interest);
        }
    }

    /// What was counted, in parts that merge with other users' ([`Partial::merge`]).
    pub fn partial(&self) -> Partial {
        Partial {
            arms: self.tallies.iter().map(ArmTally::partial).collect(),
            unattributed: self.unattributed,
            unknown_arm_impressions: self.unknown_arm_impressions,
        }
    }

    /// The report of everything counted.
    pub fn finish(self) -> OnlineReport {
        self.partial().report(&self.arms)
    }
}

/// The report of `impressions` and `engagements` for the experiment's `arms`, attributing
/// engagements within `window_seconds`.
///
/// ```
/// use pinnersage_eval::online::*;
/// let arms = ArmsOf { names: vec!["a".into(), "b".into()], shares: vec![0.5, 0.5], control: 0 };
/// let shown = |item: &str| Shown { item: item.into(), interest: None };
/// let impression = |id: &str, user: &str, arm: &str| Impression {
///     request_id: id.into(), experiment: "e".into(), user: user.into(), arm: arm.into(),
///     time: 100, latency_micros: Some(900), items: vec![shown("x"), shown("y")],
/// };
/// let impressions = [impression("r1", "u1", "a"), impression("r2", "u2", "a"), impression("r3", "u3", "b")];
/// let engagements = [Engagement { user: "u1".into(), item: "y".into(), time: 150, request_id: None }];
/// let report = report(&arms, &impressions, &engagements, DEFAULT_WINDOW_SECONDS);
/// assert_eq!(report.arms[0].engagements, 1);
/// assert_eq!(report.arms[0].ctr.value, 0.25); // 1 of 4 items shown to its 2 users
/// assert_eq!(report.arms[0].ctr_by_position[1], 0.5);
/// assert_eq!(report.unattributed, 0);
/// assert!((report.arms[0].latency.as_ref().unwrap().p99_ms - 0.9).abs() < 0.005);
/// assert_eq!(report.arms[0].daily[0].date, "1970-01-01");
/// ```
pub fn report(
    arms: &ArmsOf,
    impressions: &[Impression],
    engagements: &[Engagement],
    window_seconds: i64,
) -> OnlineReport {
    let mut shown: Vec<&Impression> = impressions.iter().collect();
    shown.sort_by_key(|i| i.time);
    let mut engaged: Vec<&Engagement> = engagements.iter().collect();
    engaged.sort_by_key(|e| e.time);
    let mut tally = Tally::new(arms, window_seconds);
    let mut next = shown.into_iter().peekable();
    for e in engaged {
        while let Some(i) = next.next_if(|i| i.time <= e.time.saturating_add(CLOCK_SKEW_SECONDS)) {
            tally.impression(i);
        }
        tally.engagement(e);
    }
    next.for_each(|i| tally.impression(i));
    tally.finish()
}

/// What [`report_from_stores`] reads.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPeriod {
    /// The experiment whose impressions count (others are skipped).
    pub experiment: String,
    /// First second of the impressions (unix seconds).
    pub from: i64,
    /// Last second of the impressions; engagements are read until `to + window`.
    pub to: i64,
    /// The attribution window in seconds.
    pub window_seconds: i64,
}

/// The report of one experiment over a data directory's stores: its impressions recorded in
/// the period and the engagement events until the period's end plus the window, read in one
/// pass in time order (see [`Tally`]). Every stored event counts as an engagement.
pub fn report_from_stores(
    arms: &ArmsOf,
    period: &StoredPeriod,
    impressions: &pinnersage_store::impressions::ImpressionStore,
    events: &pinnersage_store::events::EventStore,
) -> Result<OnlineReport, crate::EvalError> {
    Ok(partial_from_stores(arms, period, impressions, events, &|_| true)?.report(arms))
}

/// What [`report_from_stores`] counts, over the users `counted` accepts only (a fleet replica's
/// share of the users: the parts of disjoint shares merge into the whole, [`Partial::merge`]).
pub fn partial_from_stores(
    arms: &ArmsOf,
    period: &StoredPeriod,
    impressions: &pinnersage_store::impressions::ImpressionStore,
    events: &pinnersage_store::events::EventStore,
    counted: &dyn Fn(&str) -> bool,
) -> Result<Partial, crate::EvalError> {
    let mut tally = Tally::new(arms, period.window_seconds);
    let mut shown = impressions
        .iter(period.from, period.to)
        .filter(|i| {
            i.as_ref().map_or(true, |i| {
                i.experiment == period.experiment && counted(&i.user)
            })
        })
        .peekable();
    let mut failed = None;
    let mut feed_until = |tally: &mut Tally, time: i64| {
        while failed.is_none() {
            match shown.next_if(|i| i.as_ref().map_or(true, |i| i.time <= time)) {
                Some(Ok(i)) => tally.impression(&i),
                Some(Err(e)) => failed = Some(e),
                None => break,
            }
        }
    };
    let last = period.to.saturating_add(period.window_seconds.max(0));
    events.for_each_with_request_between(period.from, last, |user, e, request_id| {
        if !counted(user) {
            return;
        }
        feed_until(&mut tally, e.time.saturating_add(CLOCK_SKEW_SECONDS));
        tally.engagement(&Engagement {
            user: user.to_owned(),
            item: e.item,
            time: e.time,
            request_id,
        });
    })?;
    feed_until(&mut tally, i64::MAX);
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(tally.partial())
}

/// `a / b`, NaN when `b` is 0.
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// Reads the impressions of a JSON-lines file: one recommendation answer per line, as the server
/// returned it (`request_id`, `user`, `arm`, `items` with each `item` and its `medoid`) plus
/// `time`, the unix seconds it was shown at. Answers without an `arm` (outside the experiment)
/// are skipped and counted (the second value). A malformed line is an error naming the file, the
/// line and the field.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("shown.jsonl");
/// std::fs::write(&path, r#"{"request_id":"r1","user":"u1","arm":"a","time":100,"items":[{"item":"x","medoid":"m"}]}
/// {"request_id":"r2","user":"u2","time":100,"items":[]}
/// "#).unwrap();
/// let (impressions, skipped) = pinnersage_eval::online::read_impressions(&path).unwrap();
/// assert_eq!((impressions.len(), skipped), (1, 1));
/// assert_eq!(impressions[0].items[0].interest.as_deref(), Some("m"));
/// ```
pub fn read_impressions(
    path: &std::path::Path,
) -> Result<(Vec<Impression>, u64), crate::EvalError> {
    use std::io::BufRead;
    let file = std::fs::File::open(path)
        .map_err(|e| crate::EvalError::Input(format!("{}: cannot read: {e}", path.display())))?;
    let (mut impressions, mut skipped) = (Vec::new(), 0);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at = |message: String| {
            crate::EvalError::Input(format!("{}: line {}: {message}", path.display(), n + 1))
        };
        let line = line.map_err(|e| at(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| at(format!("not JSON: {e}")))?;
        let text = |field: &str| -> Result<String, crate::EvalError> {
            v[field]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| at(format!("`{field}` must be a string")))
        };
        if v.get("arm").is_none_or(serde_json::Value::is_null) {
            skipped += 1;
            continue;
        }
        let time = v["time"]
            .as_i64()
            .ok_or_else(|| at("`time` must be unix seconds (an integer)".into()))?;
        let items = v["items"]
            .as_array()
            .ok_or_else(|| at("`items` must be a list".into()))?
            .iter()
            .enumerate()
            .map(|(k, item)| {
                Ok(Shown {
                    item: item["item"]
                        .as_str()
                        .ok_or_else(|| at(format!("`items[{k}].item` must be a string")))?
                        .to_owned(),
                    interest: item["medoid"].as_str().map(str::to_owned),
                })
            })
            .collect::<Result<Vec<Shown>, crate::EvalError>>()?;
        impressions.push(Impression {
            request_id: text("request_id")?,
            experiment: v["experiment"].as_str().unwrap_or_default().to_owned(),
            user: text("user")?,
            arm: text("arm")?,
            time,
            latency_micros: None,
            items,
        });
    }
    Ok((impressions, skipped))
}

impl OnlineReport {
    /// The report as text: one block per arm, the control's first.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if let Some(srm) = &self.sample_ratio {
            let verdict = if srm.mismatch {
                "MISMATCH: the split is broken; do not trust the differences below"
            } else {
                "ok"
            };
            let _ = writeln!(
                out,
                "sample ratio: chi-square {:.2}, p = {:.4}: {verdict}",
                srm.chi_square, srm.p_value
            );
        }
        let _ = writeln!(
            out,
            "unattributed engagements: {}; impressions of unknown arms: {}",
            self.unattributed, self.unknown_arm_impressions
        );
        if let Some(u) = &self.users_to_detect {
            let n = |v: Option<u64>| v.map_or("-".to_owned(), |n| n.to_string());
            let _ = writeln!(
                out,
                "users per arm to detect a {:.0}% change (5% two-sided, 80% power): CTR {}, \
                 engaged-user rate {}",
                100.0 * u.relative_change,
                n(u.ctr),
                n(u.engaged_user_rate)
            );
        }
        out.push('\n');
        let mut order: Vec<&ArmReport> = self.arms.iter().collect();
        order.sort_by_key(|a| a.arm != self.control);
        for a in order {
            let role = if a.arm == self.control {
                " (control)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "arm {}{role}: {} users, {} impressions, {} items shown, {} engagements",
                a.arm, a.users, a.impressions, a.items_shown, a.engagements
            );
            for (name, m) in [("engaged users", &a.engaged_user_rate), ("CTR", &a.ctr)] {
                let _ = write!(out, "  {name}: {:.4} (se {:.4})", m.value, m.standard_error);
                if let Some(v) = &m.vs_control {
                    let _ = write!(
                        out,
                        "; vs control {:+.4} ({:+.1}%), 95% interval [{:+.4}, {:+.4}], p = {:.4}{}",
                        v.absolute,
                        100.0 * v.relative,
                        v.interval[0],
                        v.interval[1],
                        v.p_value,
                        if v.significant { ", significant" } else { "" }
                    );
                }
                out.push('\n');
            }
            let positions: Vec<String> = a
                .ctr_by_position
                .iter()
                .map(|c| format!("{c:.3}"))
                .collect();
            let _ = writeln!(
                out,
                "  CTR by position 1-{POSITIONS}: {}",
                positions.join(" ")
            );
            let _ = writeln!(
                out,
                "  interests engaged per engaged user: {:.2}; interests per impression: {:.2}\n",
                a.interests_engaged_per_engaged_user, a.interests_per_impression
            );
        }
        out
    }
}

/// Engagement events as the report takes them.
pub fn engagements_of(events: Vec<pinnersage_store::events::Event>) -> Vec<Engagement> {
    events
        .into_iter()
        .map(|e| Engagement {
            user: e.user,
            item: e.item,
            time: e.time,
            request_id: e.request_id,
        })
        .collect()
}
