//! The online experiment report: attribution rules, and a simulated population whose better arm
//! is known.

use pinnersage_core::experiment::Split;
use pinnersage_core::sample::SplitMix64;
use pinnersage_eval::online::*;

fn shown(items: &[&str]) -> Vec<Shown> {
    items
        .iter()
        .map(|i| Shown {
            item: (*i).into(),
            interest: Some(format!("m-{i}")),
        })
        .collect()
}

fn impression(id: &str, user: &str, arm: &str, time: i64, items: &[&str]) -> Impression {
    Impression {
        request_id: id.into(),
        experiment: "e".into(),
        user: user.into(),
        arm: arm.into(),
        time,
        latency_micros: None,
        items: shown(items),
    }
}

fn engagement(user: &str, item: &str, time: i64, request: Option<&str>) -> Engagement {
    Engagement {
        user: user.into(),
        item: item.into(),
        time,
        request_id: request.map(Into::into),
    }
}

fn two_arms() -> ArmsOf {
    ArmsOf {
        names: vec!["a".into(), "b".into()],
        shares: vec![0.5, 0.5],
        control: 0,
    }
}

#[test]
fn engagements_go_to_the_impression_that_showed_the_item() {
    let hour = 3_600;
    let impressions = [
        impression("r1", "u1", "a", 0, &["x", "y"]),
        impression("r2", "u1", "a", hour, &["y", "z"]),
        impression("r3", "u2", "b", 0, &["x"]),
    ];
    let cases = [
        // Named request that showed the item: there, even if a later one showed it too.
        (engagement("u1", "y", 2 * hour, Some("r1")), Some(("a", 1))),
        // No request id: the last impression showing the item before the engagement (r2, y at 0).
        (engagement("u1", "y", 2 * hour, None), Some(("a", 0))),
        // A named request that did not show the item: the window rule (r2, z at 1).
        (engagement("u1", "z", 2 * hour, Some("r1")), Some(("a", 1))),
        // Another user's request id is not theirs: the window rule finds u1's own r1.
        (engagement("u1", "x", 10, Some("r3")), Some(("a", 0))),
        // Outside the window, before any impression, an item never shown, an unknown user.
        (engagement("u1", "x", 25 * hour + 1, None), None),
        (engagement("u2", "x", -1, None), None),
        (engagement("u1", "w", hour, None), None),
        (engagement("u9", "x", hour, None), None),
    ];
    for (e, expected) in cases {
        let report = report(
            &two_arms(),
            &impressions,
            std::slice::from_ref(&e),
            DEFAULT_WINDOW_SECONDS,
        );
        let got = report.arms.iter().find(|a| a.engagements == 1).map(|a| {
            let p = a.ctr_by_position.iter().position(|c| *c > 0.0).unwrap();
            (a.arm.as_str(), p)
        });
        assert_eq!(got, expected, "{e:?}");
        assert_eq!(report.unattributed, u64::from(expected.is_none()), "{e:?}");
    }
}

/// The same rules over a data directory's stores: the request id an engagement event carries is
/// stored with it and names its impression; the window, the experiment and the period hold.
#[test]
fn the_report_over_the_stores_attributes_by_stored_request_ids_and_the_window() {
    use pinnersage_store::events::{Event, EventStore};
    use pinnersage_store::impressions::ImpressionStore;
    let dir = tempfile::tempdir().unwrap();
    let (impressions, events) = (
        ImpressionStore::open(dir.path(), 30).unwrap(),
        EventStore::open(dir.path()).unwrap(),
    );
    let day = 20_000 * 86_400;
    let hour = 3_600;
    let mut other = impression("r9", "u1", "a", day + hour, &["y"]);
    other.experiment = "other".into();
    impressions
        .record(&[
            impression("r1", "u1", "a", day, &["x", "y"]),
            impression("r2", "u1", "a", day + hour, &["y", "z"]),
            impression("r3", "u2", "b", day, &["x"]),
            other,
        ])
        .unwrap();
    let click = |user: &str, item: &str, time: i64, request: Option<&str>| Event {
        user: user.into(),
        item: item.into(),
        time,
        action: "click".into(),
        weight: 1.0,
        id: None,
        request_id: request.map(Into::into),
    };
    events
        .insert(&[
            // Named r1: there, although r2 showed y later (position 1 of arm a).
            click("u1", "y", day + 2 * hour, Some("r1")),
            // Unnamed: the last impression showing z (r2, position 1).
            click("u1", "z", day + 2 * hour + 1, None),
            // Outside the window of r3.
            click("u2", "x", day + 25 * hour, None),
        ])
        .unwrap();
    let period = |window_hours: i64| StoredPeriod {
        experiment: "e".into(),
        from: day - hour,
        to: day + 2 * hour,
        window_seconds: window_hours * hour,
    };
    let report = report_from_stores(&two_arms(), &period(24), &impressions, &events).unwrap();
    let a = &report.arms[0];
    assert_eq!((a.impressions, a.engagements), (2, 2), "{a:?}");
    // Position 1 twice: y of r1 (named) and z of r2; none at position 0 (y of r2).
    assert_eq!(a.ctr_by_position[..2], [0.0, 1.0]);
    assert_eq!(report.arms[1].engagements, 0);
    assert_eq!(report.unattributed, 1);
    // A window of 26 hours reaches r3.
    let wide = report_from_stores(&two_arms(), &period(26), &impressions, &events).unwrap();
    assert_eq!((wide.arms[1].engagements, wide.unattributed), (1, 0));
}

/// A simulated population: items around topics on the unit circle of 8 dimensions; each user has
/// 1 to 4 latent interests (topics) and, in each session, one active interest; a shown item is
/// engaged with a probability that falls with its distance to the active interest, once a session
/// at most.
struct World {
    topics: Vec<Vec<f64>>,
    items: Vec<(usize, Vec<f64>)>,
}

const DIM: usize = 8;
const TOPICS: usize = 24;
const PER_TOPIC: usize = 40;

impl World {
    fn new(rng: &mut SplitMix64) -> Self {
        let mut gauss = || {
            let (u, v) = (rng.next_f64().max(1e-12), rng.next_f64());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        };
        let unit = |v: Vec<f64>| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f64>>()
        };
        let topics: Vec<Vec<f64>> = (0..TOPICS)
            .map(|_| unit((0..DIM).map(|_| gauss()).collect()))
            .collect();
        let items = (0..TOPICS * PER_TOPIC)
            .map(|i| {
                let t = i % TOPICS;
                let v = topics[t].iter().map(|x| x + 0.25 * gauss()).collect();
                (t, unit(v))
            })
            .collect();
        Self { topics, items }
    }

    fn engage_probability(&self, item: usize, active: usize) -> f64 {
        let d2: f64 = (self.items[item].1.iter().zip(&self.topics[active]))
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        0.35 * (-d2 / 0.3).exp()
    }
}

/// How an arm picks 10 items for a user of `interests` (most important first).
#[derive(Clone, Copy, PartialEq)]
enum Policy {
    /// The single most important interest.
    One,
    /// Every interest, in turns.
    All,
}

fn pick(
    world: &World,
    rng: &mut SplitMix64,
    interests: &[usize],
    policy: Policy,
) -> Vec<(usize, usize)> {
    let used: &[usize] = match policy {
        Policy::One => &interests[..1],
        Policy::All => interests,
    };
    (0..10)
        .map(|k| {
            let topic = used[k % used.len()];
            let item = topic + TOPICS * (rng.next_u64() as usize % PER_TOPIC);
            debug_assert_eq!(world.items[item].0, topic);
            (item, topic)
        })
        .collect()
}

/// Runs an experiment of `users` over `policies` (one per arm, equal shares); `lose` drops that
/// share of arm 1's users' impressions (a broken logging path).
fn simulate(seed: u64, users: usize, policies: [Policy; 2], lose: f64) -> OnlineReport {
    let (impressions, engagements) = population(seed, users, policies, lose);
    report(
        &two_arms(),
        &impressions,
        &engagements,
        DEFAULT_WINDOW_SECONDS,
    )
}

/// The impressions and engagements of [`simulate`]'s experiment.
fn population(
    seed: u64,
    users: usize,
    policies: [Policy; 2],
    lose: f64,
) -> (Vec<Impression>, Vec<Engagement>) {
    let mut rng = SplitMix64::new(seed);
    let world = World::new(&mut rng);
    let split = Split::new(&format!("salt-{seed}"), &[0.5, 0.5]).unwrap();
    let (mut impressions, mut engagements) = (Vec::new(), Vec::new());
    for u in 0..users {
        let user = format!("user-{u}");
        let arm = split.arm_of(&user);
        if arm == 1 && rng.next_f64() < lose {
            continue;
        }
        let n = 1 + (rng.next_u64() % 4) as usize;
        let interests: Vec<usize> = (0..n)
            .map(|_| (rng.next_u64() % TOPICS as u64) as usize)
            .collect();
        for session in 0..3 {
            let time = 1_000_000 + (session * 6 * 3_600) as i64;
            let active = interests[(rng.next_u64() % n as u64) as usize];
            let shown = pick(&world, &mut rng, &interests, policies[arm]);
            let request_id = format!("{u}-{session}");
            // A session ends at its first engagement: more items of one interest do not make
            // more engagements, items of the interest the user is in now do.
            for &(item, _) in &shown {
                if rng.next_f64() < world.engage_probability(item, active) {
                    engagements.push(Engagement {
                        user: user.clone(),
                        item: format!("i{item}"),
                        time: time + 60,
                        request_id: (rng.next_f64() < 0.5).then(|| request_id.clone()),
                    });
                    break;
                }
            }
            impressions.push(Impression {
                request_id,
                experiment: "e".into(),
                user: user.clone(),
                arm: ["a", "b"][arm].into(),
                time,
                latency_micros: Some(200 + (rng.next_u64() % 5_000) as u32),
                items: shown
                    .iter()
                    .map(|&(item, topic)| Shown {
                        item: format!("i{item}"),
                        interest: Some(format!("t{topic}")),
                    })
                    .collect(),
            });
        }
    }
    (impressions, engagements)
}

/// Parts of an experiment counted apart, each over its own users (a fleet's partitions), merge
/// into the report of the whole: every count equal, every rate and standard error equal to
/// rounding, the latency quantiles those of one histogram.
#[test]
fn parts_counted_over_disjoint_users_merge_into_the_whole_report() {
    let (impressions, engagements) = population(11, 3_000, [Policy::One, Policy::All], 0.0);
    let whole = report(
        &two_arms(),
        &impressions,
        &engagements,
        DEFAULT_WINDOW_SECONDS,
    );
    let part_of = |user: &str| pinnersage_core::hash::stable_hash(user.as_bytes()) % 3;
    let mut merged: Option<Partial> = None;
    for part in 0..3 {
        let mut tally = Tally::new(&two_arms(), DEFAULT_WINDOW_SECONDS);
        let mut shown: Vec<&Impression> = (impressions.iter())
            .filter(|i| part_of(&i.user) == part)
            .collect();
        shown.sort_by_key(|i| i.time);
        let mut engaged: Vec<&Engagement> = (engagements.iter())
            .filter(|e| part_of(&e.user) == part)
            .collect();
        engaged.sort_by_key(|e| e.time);
        let mut next = shown.into_iter().peekable();
        for e in engaged {
            while let Some(i) = next.next_if(|i| i.time <= e.time + CLOCK_SKEW_SECONDS) {
                tally.impression(i);
            }
            tally.engagement(e);
        }
        next.for_each(|i| tally.impression(i));
        // Through JSON, as a replica would send it.
        let sent: Partial =
            serde_json::from_str(&serde_json::to_string(&tally.partial()).unwrap()).unwrap();
        match &mut merged {
            None => merged = Some(sent),
            Some(m) => m.merge(&sent).unwrap(),
        }
    }
    let merged = merged.unwrap().report(&two_arms());
    assert!(whole.arms[1].engagements > 100, "{whole:?}");
    let close =
        |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(1.0) || a.is_nan() && b.is_nan();
    for (w, m) in whole.arms.iter().zip(&merged.arms) {
        assert_eq!(
            (w.users, w.impressions, w.items_shown, w.engagements),
            (m.users, m.impressions, m.items_shown, m.engagements)
        );
        for (a, b) in [
            (&w.ctr, &m.ctr),
            (&w.engaged_user_rate, &m.engaged_user_rate),
        ] {
            assert!(
                close(a.value, b.value) && close(a.standard_error, b.standard_error),
                "{a:?} {b:?}"
            );
            let (va, vb) = (a.vs_control.as_ref(), b.vs_control.as_ref());
            assert_eq!(va.is_some(), vb.is_some());
            if let (Some(va), Some(vb)) = (va, vb) {
                assert!(close(va.interval[0], vb.interval[0]) && close(va.p_value, vb.p_value));
            }
        }
        assert_eq!(w.ctr_by_position, m.ctr_by_position);
        assert!(close(
            w.interests_engaged_per_engaged_user,
            m.interests_engaged_per_engaged_user
        ));
        assert_eq!(w.latency, m.latency);
        assert_eq!(w.daily, m.daily);
    }
    assert_eq!(whole.unattributed, merged.unattributed);
    assert_eq!(whole.sample_ratio, merged.sample_ratio);
    // Parts of another experiment do not merge.
    let mut three = Partial {
        arms: vec![ArmPartial::default(); 3],
        ..Partial::default()
    };
    assert!(
        three
            .merge(&Partial {
                arms: vec![ArmPartial::default(); 2],
                ..Partial::default()
            })
            .is_err()
    );
}

#[test]
fn the_better_arm_wins_with_an_interval_that_excludes_zero() {
    let report = simulate(7, 6_000, [Policy::One, Policy::All], 0.0);
    let (one, all) = (&report.arms[0], &report.arms[1]);
    let versus = all.ctr.vs_control.as_ref().unwrap();
    eprintln!(
        "CTR {:.4} vs {:.4}: {:+.1}% [{:.4}, {:.4}]; interests engaged per engaged user {:.2} vs {:.2}",
        all.ctr.value,
        one.ctr.value,
        100.0 * versus.relative,
        versus.interval[0],
        versus.interval[1],
        all.interests_engaged_per_engaged_user,
        one.interests_engaged_per_engaged_user
    );
    assert!(all.ctr.value > one.ctr.value, "{report:#?}");
    assert!(versus.significant && versus.interval[0] > 0.0, "{versus:?}");
    let engaged = all.engaged_user_rate.vs_control.as_ref().unwrap();
    assert!(engaged.absolute > 0.0, "{engaged:?}");
    // Engagement comes from several interests only where several are shown.
    assert!(one.interests_engaged_per_engaged_user < 1.01, "{one:?}");
    assert!(all.interests_engaged_per_engaged_user > 1.1, "{all:?}");
    assert!(all.interests_per_impression > one.interests_per_impression);
    assert_eq!(report.unattributed, 0);
    assert!(!report.sample_ratio.as_ref().unwrap().mismatch);
}

#[test]
fn a_a_experiments_are_not_significant_in_at_least_90_percent_of_50_seeds() {
    let significant = (0..50u64)
        .filter(|&seed| {
            let report = simulate(100 + seed, 2_000, [Policy::All, Policy::All], 0.0);
            report.arms[1].ctr.vs_control.as_ref().unwrap().significant
        })
        .count();
    eprintln!("A/A: {significant} of 50 significant");
    assert!(
        significant <= 5,
        "{significant} of 50 A/A experiments significant"
    );
}

#[test]
fn a_broken_split_is_flagged() {
    // A tenth of one arm's users lost (their impressions never logged).
    let report = simulate(9, 20_000, [Policy::All, Policy::All], 0.1);
    let srm = report.sample_ratio.unwrap();
    assert!(srm.mismatch, "{srm:?}");
    let fine = simulate(9, 20_000, [Policy::All, Policy::All], 0.0);
    assert!(!fine.sample_ratio.unwrap().mismatch);
}
