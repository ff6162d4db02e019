//! The core against independent, naive references written here from the spec:
//! O(m³) greedy Ward on the Lance–Williams recurrence in f64, the medoid and importance formulas
//! evaluated literally, and the sampling distribution computed exactly.

use proptest::prelude::*;

use pinnersage_core::distance::SqDistances;
use pinnersage_core::importance::importance;
use pinnersage_core::medoid::medoid;
use pinnersage_core::sample::{SplitMix64, sample_seed, sample_weighted};
use pinnersage_core::ward::{Dendrogram, complete_linkage, ward};
use pinnersage_core::{Actions, Clusterer, Embeddings, ProfileParams};

/// Test data of a few shapes, from a seed.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Uniform,
    Blobs,
    /// Blobs with exact duplicate rows and near-duplicates (1e-4 apart).
    Duplicates,
}

fn gaussian(rng: &mut SplitMix64) -> f64 {
    let (u, v) = (rng.next_f64().max(1e-300), rng.next_f64());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn make_data(shape: Shape, m: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let mut x: Vec<f32> = match shape {
        Shape::Uniform => (0..m * d)
            .map(|_| rng.next_f64() as f32 * 10.0 - 5.0)
            .collect(),
        Shape::Blobs | Shape::Duplicates => {
            let k = 1 + m / 15;
            let centres: Vec<f64> = (0..k * d).map(|_| gaussian(&mut rng) * 4.0).collect();
            (0..m)
                .flat_map(|_| {
                    let c = (rng.next_u64() % k as u64) as usize;
                    (0..d)
                        .map(|j| (centres[c * d + j] + gaussian(&mut rng)) as f32)
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    };
    if let Shape::Duplicates = shape {
        for _ in 0..m / 4 {
            let (src, dst) = (
                (rng.next_u64() % m as u64) as usize,
                (rng.next_u64() % m as u64) as usize,
            );
            let near = rng.next_f64() < 0.3;
            for j in 0..d {
                let noise = if near {
                    1e-4 * gaussian(&mut rng) as f32
                } else {
                    0.0
                };
                x[dst * d + j] = x[src * d + j] + noise;
            }
        }
    }
    x
}

/// The Lance–Williams rule of a naive reference.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    Ward,
    Complete,
}

/// Greedy Ward: repeatedly merge the globally closest pair, f64 throughout. Returns each merge
/// as (sorted member rows, height), in merge order.
fn naive_ward(x: &[f32], d: usize) -> Vec<(Vec<usize>, f64)> {
    naive_linkage(x, d, Rule::Ward)
}

/// Greedy agglomeration under `rule` (see [`naive_ward`]).
fn naive_linkage(x: &[f32], d: usize, rule: Rule) -> Vec<(Vec<usize>, f64)> {
    let m = x.len() / d;
    let mut dist = vec![0.0f64; m * m];
    for i in 0..m {
        for j in 0..m {
            dist[i * m + j] = (0..d)
                .map(|k| (f64::from(x[i * d + k]) - f64::from(x[j * d + k])).powi(2))
                .sum();
        }
    }
    let mut members: Vec<Option<Vec<usize>>> = (0..m).map(|i| Some(vec![i])).collect();
    let mut merges = Vec::new();
    for _ in 1..m {
        let mut best = (f64::INFINITY, 0, 0);
        for i in 0..m {
            for j in i + 1..m {
                if members[i].is_some() && members[j].is_some() && dist[i * m + j] < best.0 {
                    best = (dist[i * m + j], i, j);
                }
            }
        }
        let (h, i, j) = best;
        let (ni, nj) = (
            members[i].as_ref().unwrap().len() as f64,
            members[j].as_ref().unwrap().len() as f64,
        );
        for k in 0..m {
            if k != i && k != j && members[k].is_some() {
                let nk = members[k].as_ref().unwrap().len() as f64;
                let v = match rule {
                    Rule::Ward => {
                        ((ni + nk) * dist[i * m + k] + (nj + nk) * dist[j * m + k] - nk * h)
                            / (ni + nj + nk)
                    }
                    Rule::Complete => dist[i * m + k].max(dist[j * m + k]),
                };
                dist[j * m + k] = v;
                dist[k * m + j] = v;
            }
        }
        let mut joined = members[i].take().unwrap();
        joined.extend(members[j].take().unwrap());
        joined.sort_unstable();
        members[j] = Some(joined.clone());
        merges.push((joined, h));
    }
    merges
}

/// The partition made by all merges of height <= alpha, as a label per row (first-seen order).
fn naive_cut(m: usize, merges: &[(Vec<usize>, f64)], alpha: f64) -> Vec<usize> {
    let mut label: Vec<usize> = (0..m).collect();
    for (set, h) in merges {
        if *h <= alpha {
            let l = label[set[0]];
            set.iter().for_each(|&r| label[r] = l);
        }
    }
    canonical(&label)
}

fn canonical(labels: &[usize]) -> Vec<usize> {
    let mut map = std::collections::HashMap::new();
    labels
        .iter()
        .map(|l| {
            let next = map.len();
            *map.entry(*l).or_insert(next)
        })
        .collect()
}

fn labels_from(clusters: &[Vec<usize>], m: usize) -> Vec<usize> {
    let mut label = vec![usize::MAX; m];
    for (k, c) in clusters.iter().enumerate() {
        c.iter().for_each(|&r| label[r] = k);
    }
    canonical(&label)
}

/// Thresholds in the middle of gaps between consecutive heights at least 1e-4 relative wide,
/// so that rounding cannot decide the cut.
fn safe_alphas(heights: &[f64], picks: &[f64]) -> Vec<f64> {
    let mut h = heights.to_vec();
    h.sort_by(f64::total_cmp);
    let mut out = vec![h[h.len() - 1] * 2.0 + 1.0];
    for &q in picks {
        let k = ((h.len() - 1) as f64 * q) as usize;
        if let Some(j) =
            (k..h.len() - 1).find(|&j| h[j + 1] > 0.0 && (h[j + 1] - h[j]) / h[j + 1] >= 1e-4)
        {
            out.push((h[j] + h[j + 1]) / 2.0);
        }
    }
    out
}

/// `tree` against a greedy `reference`: the same merge heights (sorted, relative 1e-5), and at
/// thresholds away from any merge height the same partitions, which `cut_into` also gives for
/// as many clusters.
fn same_heights_and_cuts(
    tree: &Dendrogram,
    reference: &[(Vec<usize>, f64)],
    picks: &[f64],
) -> Result<(), TestCaseError> {
    let m = tree.leaves();
    let mut ours: Vec<f64> = tree.linkage().iter().map(|r| r.height).collect();
    let mut theirs: Vec<f64> = reference.iter().map(|r| r.1).collect();
    ours.sort_by(f64::total_cmp);
    theirs.sort_by(f64::total_cmp);
    let scale = theirs[theirs.len() - 1].max(1e-30);
    for (o, t) in ours.iter().zip(&theirs) {
        prop_assert!(
            (o - t).abs() <= 1e-5 * t.abs() + 1e-7 * scale,
            "height {} vs reference {}",
            o,
            t
        );
    }
    for alpha in safe_alphas(&theirs, picks) {
        let cut = tree.cut(alpha);
        prop_assert_eq!(
            labels_from(&cut, m),
            naive_cut(m, reference, alpha),
            "alpha {}",
            alpha
        );
        prop_assert_eq!(tree.cut_into(cut.len()), cut, "alpha {}", alpha);
    }
    Ok(())
}

fn shape_strategy() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Uniform),
        Just(Shape::Blobs),
        Just(Shape::Duplicates)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn ward_matches_greedy_reference(
        shape in shape_strategy(),
        m in 2usize..=200,
        d in 1usize..=24,
        seed in any::<u64>(),
        picks in proptest::collection::vec(0.0f64..1.0, 3),
    ) {
        let x = make_data(shape, m, d, seed);
        let reference = naive_ward(&x, d);
        let mut dist = SqDistances::default();
        dist.compute(Embeddings::new(&x, d).unwrap());
        let tree = ward(&mut dist);
        let linkage = tree.linkage();
        prop_assert_eq!(linkage.len(), m - 1);

        same_heights_and_cuts(&tree, &reference, &picks)?;
        // Heights are non-decreasing along the linkage (Ward is monotone).
        for w in linkage.windows(2) {
            prop_assert!(w[0].height <= w[1].height);
        }
        // Without ties the whole tree is unique: the same merged sets.
        if !matches!(shape, Shape::Duplicates) {
            let mut sets_ours: Vec<Vec<usize>> = {
                let mut members: Vec<Vec<usize>> = (0..m).map(|i| vec![i]).collect();
                linkage.iter().map(|r| {
                    let mut s = [members[r.left].clone(), members[r.right].clone()].concat();
                    s.sort_unstable();
                    members.push(s.clone());
                    s
                }).collect()
            };
            let mut sets_ref: Vec<Vec<usize>> = reference.iter().map(|r| r.0.clone()).collect();
            sets_ours.sort();
            sets_ref.sort();
            prop_assert_eq!(sets_ours, sets_ref);
        }
    }

    #[test]
    fn complete_linkage_matches_greedy_reference(
        shape in shape_strategy(),
        m in 2usize..=150,
        d in 1usize..=16,
        seed in any::<u64>(),
        picks in proptest::collection::vec(0.0f64..1.0, 3),
    ) {
        let x = make_data(shape, m, d, seed);
        let reference = naive_linkage(&x, d, Rule::Complete);
        let mut dist = SqDistances::default();
        dist.compute(Embeddings::new(&x, d).unwrap());
        let tree = complete_linkage(&mut dist);
        same_heights_and_cuts(&tree, &reference, &picks)?;
    }

    #[test]
    fn profile_medoids_and_importance_follow_the_formulas(
        shape in shape_strategy(),
        m in 1usize..=120,
        d in 1usize..=16,
        seed in any::<u64>(),
        alpha in 0.0f64..200.0,
        lambda in prop_oneof![Just(0.0), Just(0.01), Just(0.1), 0.0f64..1.0],
    ) {
        let x = make_data(shape, m, d, seed);
        let emb = Embeddings::new(&x, d).unwrap();
        let mut rng = SplitMix64::new(seed ^ 1);
        let now = 1_700_000_000i64;
        let times: Vec<i64> = (0..m).map(|_| now - (rng.next_u64() % (90 * 86_400)) as i64).collect();
        let weights: Vec<f32> = (0..m).map(|_| [0.5f32, 1.0, 2.0][(rng.next_u64() % 3) as usize]).collect();
        let actions = Actions::new(emb, &times, Some(&weights)).unwrap();
        let params = ProfileParams { alpha, lambda, max_actions: m };
        let profile = Clusterer::new(params).unwrap().profile(&actions, now).unwrap();

        let mut seen = vec![false; m];
        for c in &profile.clusters {
            prop_assert!(c.members.windows(2).all(|w| w[0] < w[1]));
            for &r in &c.members {
                prop_assert!(!seen[r], "row {} in two clusters", r);
                seen[r] = true;
            }
            // Medoid: a member whose summed squared distance is minimal (literal formula).
            let cost = |i: usize| -> f64 {
                c.members.iter().map(|&j| (0..d).map(|k| (f64::from(x[i * d + k]) - f64::from(x[j * d + k])).powi(2)).sum::<f64>()).sum()
            };
            prop_assert!(c.members.contains(&c.medoid));
            let best = c.members.iter().map(|&i| cost(i)).fold(f64::INFINITY, f64::min);
            prop_assert!(cost(c.medoid) <= best * (1.0 + 1e-9) + 1e-9, "medoid cost {} vs best {}", cost(c.medoid), best);
            // Importance: Σ w·exp(−λ·age_days).
            let expected: f64 = c.members.iter().map(|&i| f64::from(weights[i]) * (-lambda * (now - times[i]) as f64 / 86_400.0).exp()).sum();
            prop_assert!((c.importance - expected).abs() <= 1e-12 * expected.max(1.0));
            prop_assert_eq!(c.latest_time, c.members.iter().map(|&i| times[i]).max().unwrap());
        }
        prop_assert!(seen.iter().all(|&s| s), "every action is in a cluster");
        // Sorted by importance, then size, then medoid.
        for w in profile.clusters.windows(2) {
            let key = |c: &pinnersage_core::Cluster| (std::cmp::Reverse(ordered(c.importance)), std::cmp::Reverse(c.size()), c.medoid);
            prop_assert!(key(&w[0]) <= key(&w[1]));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Repeated engagements clustered once as weighted points give the profile of clustering
    /// every action: the same clusters, medoids, importances and order, with and without a cap,
    /// at thresholds away from any merge height of the actions' own Ward tree.
    #[test]
    fn profile_on_items_equals_profile_on_every_action(
        shape in shape_strategy(),
        items in 1usize..=60,
        m in 1usize..=120,
        d in 1usize..=16,
        seed in any::<u64>(),
        cap_pick in 0.0f64..1.0,
        picks in proptest::collection::vec(0.0f64..1.0, 3),
    ) {
        let x = make_data(shape, items, d, seed);
        let mut rng = SplitMix64::new(seed ^ 7);
        // Skewed item choice, so that some items repeat many times.
        let item_of: Vec<u32> = (0..m).map(|_| {
            let r = rng.next_f64();
            ((r * r * items as f64) as u32).min(items as u32 - 1)
        }).collect();
        let now = 1_700_000_000i64;
        let times: Vec<i64> = (0..m).map(|_| now - (rng.next_u64() % (90 * 86_400)) as i64).collect();
        let weights: Vec<f32> = (0..m).map(|_| [0.5f32, 1.0, 2.0][(rng.next_u64() % 3) as usize]).collect();
        let rows: Vec<f32> = item_of.iter().flat_map(|&i| x[i as usize * d..(i as usize + 1) * d].to_vec()).collect();
        let per_action = Actions::new(Embeddings::new(&rows, d).unwrap(), &times, Some(&weights)).unwrap();
        let on_items = Actions::on_items(Embeddings::new(&x, d).unwrap(), &item_of, &times, Some(&weights)).unwrap();
        let cap = 1 + ((m - 1) as f64 * cap_pick) as usize;
        let kept = per_action.most_recent(cap);
        prop_assert_eq!(on_items.most_recent(cap), kept.clone());
        let kept_rows: Vec<f32> = kept.iter().flat_map(|&a| per_action.row(a).to_vec()).collect();
        let heights: Vec<f64> = if kept.len() > 1 {
            naive_ward(&kept_rows, d).iter().map(|r| r.1).collect()
        } else {
            vec![1.0]
        };
        for alpha in safe_alphas(&heights, &picks).into_iter().chain([0.0]) {
            let params = ProfileParams { alpha, lambda: 0.01, max_actions: cap };
            let mut clusterer = Clusterer::new(params).unwrap();
            let expected = clusterer.profile(&per_action, now).unwrap();
            let got = clusterer.profile(&on_items, now).unwrap();
            prop_assert_eq!(got, expected, "alpha {}", alpha);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// One dendrogram cut at several alphas gives what a clusterer of each alpha gives alone,
    /// for actions with a row each and for repeated items, with a cap.
    #[test]
    fn profiles_at_several_alphas_equal_one_clusterer_per_alpha(
        shape in shape_strategy(),
        items in 1usize..=40,
        m in 1usize..=80,
        d in 1usize..=8,
        seed in any::<u64>(),
        cap in 1usize..=80,
        alphas in proptest::collection::vec(0.0f64..20.0, 1..5),
    ) {
        let x = make_data(shape, items, d, seed);
        let mut rng = SplitMix64::new(seed ^ 11);
        let item_of: Vec<u32> = (0..m).map(|_| (rng.next_u64() % items as u64) as u32).collect();
        let now = 1_700_000_000i64;
        let times: Vec<i64> = (0..m).map(|_| now - (rng.next_u64() % (90 * 86_400)) as i64).collect();
        let rows: Vec<f32> = item_of.iter().flat_map(|&i| x[i as usize * d..(i as usize + 1) * d].to_vec()).collect();
        let per_action = Actions::new(Embeddings::new(&rows, d).unwrap(), &times, None).unwrap();
        let on_items = Actions::on_items(Embeddings::new(&x, d).unwrap(), &item_of, &times, None).unwrap();
        let params = |alpha| ProfileParams { alpha, lambda: 0.02, max_actions: cap };
        for actions in [&per_action, &on_items] {
            let got = Clusterer::new(params(1.0)).unwrap().profiles(actions, now, &alphas).unwrap();
            prop_assert_eq!(got.len(), alphas.len());
            for (profile, &alpha) in got.iter().zip(&alphas) {
                let alone = Clusterer::new(params(alpha)).unwrap().profile(actions, now).unwrap();
                prop_assert_eq!(profile, &alone, "alpha {}", alpha);
            }
        }
        let bad = Clusterer::new(params(1.0)).unwrap().profiles(&per_action, now, &[1.0, f64::NAN]);
        prop_assert!(bad.is_err());
    }
}

fn ordered(v: f64) -> i64 {
    // Importance values are positive and finite here; their bit patterns order like the values.
    v.to_bits() as i64
}

#[test]
fn duplicated_rows_share_a_cluster_at_alpha_zero_and_medoid_ties_take_the_first() {
    let x = [
        1.0f32, 2.0, 1.0, 2.0, 5.0, 5.0, 1.0, 2.0, 5.0, 5.0, 9.0, 0.0,
    ];
    let emb = Embeddings::new(&x, 2).unwrap();
    let actions = Actions::new(emb, &[0; 6], None).unwrap();
    let params = ProfileParams {
        alpha: 0.0,
        ..Default::default()
    };
    let profile = Clusterer::new(params)
        .unwrap()
        .profile(&actions, 0)
        .unwrap();
    let clusters: Vec<(usize, Vec<usize>)> = profile
        .clusters
        .iter()
        .map(|c| (c.medoid, c.members.clone()))
        .collect();
    assert_eq!(
        clusters,
        vec![(0, vec![0, 1, 3]), (2, vec![2, 4]), (5, vec![5])]
    );
    assert_eq!(medoid(emb, &[3, 1, 0]), Some(3));
}

#[test]
fn near_duplicates_keep_exact_small_distances() {
    // Rows 1e-4 apart on top of a large common offset: the Gram form alone would lose them.
    let d = 64;
    let base: Vec<f32> = (0..d).map(|k| 100.0 + k as f32).collect();
    let mut x = base.clone();
    x.extend(
        base.iter()
            .enumerate()
            .map(|(k, v)| if k == 3 { v + 1e-2 } else { *v }),
    );
    x.extend(base.iter().map(|v| v + 1.0));
    let mut dist = SqDistances::default();
    dist.compute(Embeddings::new(&x, d).unwrap());
    let exact01 = f64::from((base[3] + 1e-2) - base[3]).powi(2);
    assert!(
        (f64::from(dist.get(0, 1)) - exact01).abs() <= 1e-6 * exact01,
        "{}",
        dist.get(0, 1)
    );
    assert!(
        (dist.get(0, 2) - 64.0).abs() <= 64.0 * 1e-6,
        "{}",
        dist.get(0, 2)
    );
    assert_eq!(dist.get(1, 0), dist.get(0, 1));
}

#[test]
fn importance_with_no_weights_counts_decayed_actions() {
    let times = [0i64, 86_400, 2 * 86_400];
    let got = importance(&[0, 1, 2], &times, None, 2 * 86_400, 0.5);
    let want = (-1.0f64).exp() + (-0.5f64).exp() + 1.0;
    assert!((got - want).abs() < 1e-12);
}

#[test]
fn sampling_is_deterministic_for_user_day_and_seed() {
    let w = [4.0, 3.0, 2.0, 1.0, 0.5];
    let draw = |user: &[u8], day, seed| {
        sample_weighted(&w, 3, &mut SplitMix64::new(sample_seed(user, day, seed)))
    };
    assert_eq!(draw(b"alice", 20_000, 7), draw(b"alice", 20_000, 7));
    let days: std::collections::HashSet<Vec<usize>> =
        (0..50).map(|day| draw(b"alice", day, 7)).collect();
    assert!(days.len() > 5, "different days give different samples");
}

/// Exact probability that successive sampling draws `first` then, overall, includes `item`.
fn inclusion_probabilities(w: &[f64], k: usize) -> Vec<f64> {
    fn go(w: &[f64], k: usize, taken: &mut Vec<usize>, p: f64, out: &mut [f64]) {
        if taken.len() == k {
            taken.iter().for_each(|&i| out[i] += p);
            return;
        }
        let rest: f64 = (0..w.len())
            .filter(|i| !taken.contains(i))
            .map(|i| w[i])
            .sum();
        for i in 0..w.len() {
            if !taken.contains(&i) {
                taken.push(i);
                go(w, k, taken, p * w[i] / rest, out);
                taken.pop();
            }
        }
    }
    let mut out = vec![0.0; w.len()];
    go(w, k, &mut Vec::new(), 1.0, &mut out);
    out
}

#[test]
fn sampling_frequencies_match_exact_probabilities() {
    let w = [5.0, 3.0, 1.5, 1.0, 0.4, 0.1];
    let trials = 40_000;
    for k in [1usize, 3] {
        let exact = inclusion_probabilities(&w, k);
        let mut counts = vec![0usize; w.len()];
        let mut firsts = vec![0usize; w.len()];
        for t in 0..trials {
            let picked = sample_weighted(&w, k, &mut SplitMix64::new(sample_seed(b"u", t, 99)));
            assert_eq!(picked.len(), k);
            let mut sorted = picked.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), k, "no repeats");
            picked.iter().for_each(|&i| counts[i] += 1);
            firsts[picked[0]] += 1;
        }
        let total: f64 = w.iter().sum();
        for i in 0..w.len() {
            let p = exact[i];
            let sd = (p * (1.0 - p) / trials as f64).sqrt();
            let freq = counts[i] as f64 / trials as f64;
            assert!(
                (freq - p).abs() <= 5.0 * sd + 1e-9,
                "k={k} item {i}: {freq} vs {p}"
            );
            let p1 = w[i] / total;
            let f1 = firsts[i] as f64 / trials as f64;
            assert!(
                (f1 - p1).abs() <= 5.0 * (p1 * (1.0 - p1) / trials as f64).sqrt(),
                "first draw {i}"
            );
        }
    }
}

#[test]
fn cap_keeps_the_most_recent_actions() {
    let x: Vec<f32> = (0..10).map(|i| i as f32 * 100.0).collect();
    let emb = Embeddings::new(&x, 1).unwrap();
    let times = [5i64, 1, 9, 3, 9, 0, 7, 2, 8, 6];
    let actions = Actions::new(emb, &times, None).unwrap();
    assert_eq!(actions.most_recent(4), vec![2, 4, 6, 8]);
    let params = ProfileParams {
        alpha: 0.0,
        max_actions: 4,
        ..Default::default()
    };
    let profile = Clusterer::new(params)
        .unwrap()
        .profile(&actions, 10)
        .unwrap();
    let mut rows: Vec<usize> = profile
        .clusters
        .iter()
        .flat_map(|c| c.members.clone())
        .collect();
    rows.sort_unstable();
    assert_eq!(rows, vec![2, 4, 6, 8]);
}

#[test]
fn bad_input_is_a_typed_error_not_a_panic() {
    use pinnersage_core::CoreError;
    assert_eq!(Embeddings::new(&[], 3).unwrap_err(), CoreError::Empty);
    assert_eq!(
        Embeddings::new(&[1.0], 0).unwrap_err(),
        CoreError::ZeroDimension
    );
    assert!(matches!(
        Embeddings::new(&[1.0, 2.0, 3.0], 2),
        Err(CoreError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        Embeddings::new(&[1.0, f32::INFINITY], 1),
        Err(CoreError::InvalidEmbedding { row: 1, col: 0, .. })
    ));
    assert!(matches!(
        Embeddings::new(&[1e13], 1),
        Err(CoreError::InvalidEmbedding { .. })
    ));
    let emb = Embeddings::new(&[1.0, 2.0], 1).unwrap();
    assert!(matches!(
        Actions::new(emb, &[1, 2], Some(&[1.0, f32::NAN])),
        Err(CoreError::InvalidWeight { row: 1, .. })
    ));
    assert!(matches!(
        Actions::new(emb, &[1, 2], Some(&[1.0])),
        Err(CoreError::DimensionMismatch { .. })
    ));
    for (alpha, lambda, cap) in [
        (-1.0, 0.01, 10),
        (f64::NAN, 0.01, 10),
        (1.0, -0.1, 10),
        (1.0, f64::INFINITY, 10),
        (1.0, 0.01, 0),
    ] {
        let params = ProfileParams {
            alpha,
            lambda,
            max_actions: cap,
        };
        assert!(matches!(
            Clusterer::new(params),
            Err(CoreError::InvalidParameter { .. })
        ));
    }
}

#[test]
fn one_action_is_one_cluster() {
    let emb = Embeddings::new(&[0.3, 0.4], 2).unwrap();
    let actions = Actions::new(emb, &[100], None).unwrap();
    let profile = Clusterer::new(ProfileParams::default())
        .unwrap()
        .profile(&actions, 100)
        .unwrap();
    assert_eq!(profile.clusters.len(), 1);
    assert_eq!(profile.clusters[0].members, vec![0]);
    assert_eq!(profile.clusters[0].importance, 1.0);
}
