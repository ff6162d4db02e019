//! The report of an online experiment: engagements attributed to the impressions that showed
//! the items, per-arm metrics over the users exposed, each arm against the control with a 95%
//! interval (delta method over users, [`pinnersage_core::stats`]), and the sample-ratio test.
//!
//! Attribution: an engagement that names its `request_id` goes to that impression when it showed
//! the item; otherwise (or without a request id) to the user's last impression showing the item
//! at or before the engagement, no older than the window. Anything else is not attributed (and
//! counted as such): an engagement on an item we never showed says nothing about an arm.

use std::collections::{HashMap, HashSet};

use pinnersage_core::stats::{Difference, Ratio, SampleRatio, users_to_detect};
use serde::Serialize;

/// The default attribution window: 24 hours.
pub const DEFAULT_WINDOW_SECONDS: i64 = 24 * 3_600;

/// Positions reported one by one in [`ArmReport::ctr_by_position`].
pub const POSITIONS: usize = 10;

/// What one answer showed a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Impression {
    /// The answer's id.
    pub request_id: String,
    /// The user shown.
    pub user: String,
    /// The user's arm.
    pub arm: String,
    /// Unix seconds.
    pub time: i64,
    /// The items, in the order shown.
    pub items: Vec<Shown>,
}

/// One item of an impression.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    /// The item.
    pub item: String,
    /// The interest (medoid) that produced it, when known.
    pub interest: Option<String>,
}

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
#[derive(Debug, Clone, PartialEq)]
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

/// Per user of an arm: what they were shown and what they engaged with.
#[derive(Default)]
struct UserTally<'a> {
    items_shown: u64,
    engagements: u64,
    interests_engaged: HashSet<&'a str>,
}

/// Per arm, while counting.
struct ArmTally<'a> {
    users: HashMap<&'a str, UserTally<'a>>,
    impressions: u64,
    shown_at: [u64; POSITIONS],
    engaged_at: [u64; POSITIONS],
    interests_shown: u64,
}

/// The report of `impressions` and `engagements` for the experiment's `arms`, attributing
/// engagements within `window_seconds`.
///
/// ```
/// use pinnersage_eval::online::*;
/// let arms = ArmsOf { names: vec!["a".into(), "b".into()], shares: vec![0.5, 0.5], control: 0 };
/// let shown = |item: &str| Shown { item: item.into(), interest: None };
/// let impression = |id: &str, user: &str, arm: &str| Impression {
///     request_id: id.into(), user: user.into(), arm: arm.into(), time: 100,
///     items: vec![shown("x"), shown("y")],
/// };
/// let impressions = [impression("r1", "u1", "a"), impression("r2", "u2", "a"), impression("r3", "u3", "b")];
/// let engagements = [Engagement { user: "u1".into(), item: "y".into(), time: 150, request_id: None }];
/// let report = report(&arms, &impressions, &engagements, DEFAULT_WINDOW_SECONDS);
/// assert_eq!(report.arms[0].engagements, 1);
/// assert_eq!(report.arms[0].ctr.value, 0.25); // 1 of 4 items shown to its 2 users
/// assert_eq!(report.arms[0].ctr_by_position[1], 0.5);
/// assert_eq!(report.unattributed, 0);
/// ```
pub fn report(
    arms: &ArmsOf,
    impressions: &[Impression],
    engagements: &[Engagement],
    window_seconds: i64,
) -> OnlineReport {
    let arm_of: HashMap<&str, usize> = (arms.names.iter().enumerate())
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut tallies: Vec<ArmTally> = (0..arms.names.len())
        .map(|_| ArmTally {
            users: HashMap::new(),
            impressions: 0,
            shown_at: [0; POSITIONS],
            engaged_at: [0; POSITIONS],
            interests_shown: 0,
        })
        .collect();
    let mut unknown_arm_impressions = 0;
    // Each user's impressions (index, in time order) and the impressions by request id.
    let mut by_user: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_request: HashMap<&str, usize> = HashMap::new();
    for (i, imp) in impressions.iter().enumerate() {
        let Some(&arm) = arm_of.get(imp.arm.as_str()) else {
            unknown_arm_impressions += 1;
            continue;
        };
        let tally = &mut tallies[arm];
        tally.impressions += 1;
        let interests: HashSet<&str> = imp
            .items
            .iter()
            .filter_map(|s| s.interest.as_deref())
            .collect();
        tally.interests_shown += interests.len() as u64;
        for (p, _) in imp.items.iter().enumerate().take(POSITIONS) {
            tally.shown_at[p] += 1;
        }
        tally.users.entry(&imp.user).or_default().items_shown += imp.items.len() as u64;
        by_user.entry(&imp.user).or_default().push(i);
        by_request.insert(&imp.request_id, i);
    }
    for list in by_user.values_mut() {
        list.sort_by_key(|&i| (impressions[i].time, i));
    }
    let position_in =
        |i: usize, item: &str| impressions[i].items.iter().position(|s| s.item == item);
    let mut unattributed = 0;
    for e in engagements {
        let named = (e.request_id.as_deref())
            .and_then(|r| by_request.get(r).copied())
            .filter(|&i| impressions[i].user == e.user && position_in(i, &e.item).is_some());
        let found = named.or_else(|| {
            by_user.get(e.user.as_str()).and_then(|list| {
                list.iter().rev().copied().find(|&i| {
                    let t = impressions[i].time;
                    t <= e.time && e.time - t <= window_seconds && position_in(i, &e.item).is_some()
                })
            })
        });
        let Some(i) = found else {
            unattributed += 1;
            continue;
        };
        let imp = &impressions[i];
        let arm = arm_of[imp.arm.as_str()];
        let p = position_in(i, &e.item).expect("checked");
        let tally = &mut tallies[arm];
        if p < POSITIONS {
            tally.engaged_at[p] += 1;
        }
        let user = tally
            .users
            .get_mut(imp.user.as_str())
            .expect("counted with its impression");
        user.engagements += 1;
        if let Some(interest) = imp.items[p].interest.as_deref() {
            user.interests_engaged.insert(interest);
        }
    }
    let ctr_of = |t: &ArmTally| -> Option<Ratio> {
        let per_user: Vec<(f64, f64)> = (t.users.values())
            .map(|u| (u.engagements as f64, u.items_shown as f64))
            .collect();
        Ratio::over(&per_user)
    };
    let engaged_of = |t: &ArmTally| -> Option<Ratio> {
        let per_user: Vec<(f64, f64)> = (t.users.values())
            .map(|u| (f64::from(u8::from(u.engagements > 0)), 1.0))
            .collect();
        Ratio::over(&per_user)
    };
    let control_ctr = tallies.get(arms.control).and_then(ctr_of);
    let control_engaged = tallies.get(arms.control).and_then(engaged_of);
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
    let arms_out: Vec<ArmReport> = (tallies.iter().enumerate())
        .map(|(a, t)| {
            let is_control = a == arms.control;
            let engaged_users: Vec<&UserTally> =
                t.users.values().filter(|u| u.engagements > 0).collect();
            ArmReport {
                arm: arms.names[a].clone(),
                users: t.users.len() as u64,
                impressions: t.impressions,
                items_shown: t.users.values().map(|u| u.items_shown).sum(),
                engagements: t.users.values().map(|u| u.engagements).sum(),
                engaged_user_rate: metric(engaged_of(t), control_engaged, is_control),
                ctr: metric(ctr_of(t), control_ctr, is_control),
                ctr_by_position: (0..POSITIONS)
                    .map(|p| ratio(t.engaged_at[p], t.shown_at[p]))
                    .collect(),
                interests_engaged_per_engaged_user: ratio(
                    engaged_users
                        .iter()
                        .map(|u| u.interests_engaged.len() as u64)
                        .sum(),
                    engaged_users.len() as u64,
                ),
                interests_per_impression: ratio(t.interests_shown, t.impressions),
            }
        })
        .collect();
    let users: Vec<u64> = tallies.iter().map(|t| t.users.len() as u64).collect();
    OnlineReport {
        control: arms.names.get(arms.control).cloned().unwrap_or_default(),
        arms: arms_out,
        sample_ratio: SampleRatio::test(&users, &arms.shares).map(|s| SampleRatioView {
            chi_square: s.chi_square,
            p_value: s.p_value,
            mismatch: s.mismatch(),
        }),
        unattributed,
        unknown_arm_impressions,
        users_to_detect: (control_ctr.is_some() || control_engaged.is_some()).then(|| {
            UsersToDetect {
                relative_change: POWER_CHANGE,
                ctr: control_ctr.and_then(|r| users_to_detect(&r, POWER_CHANGE)),
                engaged_user_rate: control_engaged.and_then(|r| users_to_detect(&r, POWER_CHANGE)),
            }
        }),
    }
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
            user: text("user")?,
            arm: text("arm")?,
            time,
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

/// Engagement events as the report takes them (no request ids: attributed by the window).
pub fn engagements_of(events: Vec<pinnersage_store::events::Event>) -> Vec<Engagement> {
    events
        .into_iter()
        .map(|e| Engagement {
            user: e.user,
            item: e.item,
            time: e.time,
            request_id: None,
        })
        .collect()
}
