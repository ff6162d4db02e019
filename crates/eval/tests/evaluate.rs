//! `evaluate` end to end on a toy catalog where the answer is known.

use pinnersage_eval::evaluate::Budget;
use pinnersage_eval::examples::{example_methods, examples};
use pinnersage_eval::methods::{Clustering, Method, Pick, Summary};
use pinnersage_eval::split::{Engagement, Split, SplitParams, time_split, walk_forward};
use pinnersage_eval::sweep::{alpha_sweep, embeddings_sweep};
use pinnersage_eval::{EvalConfig, evaluate};

/// Two orthogonal topics on the unit circle, 100 items each, and 10 users alternating between
/// them for 12 days.
fn two_topics() -> (Vec<f32>, Vec<Engagement>) {
    let mut vectors = Vec::new();
    for i in 0..200 {
        let angle = if i < 100 {
            0.0
        } else {
            std::f32::consts::FRAC_PI_2
        } + (i % 100) as f32 * 0.002;
        vectors.extend([angle.cos(), angle.sin()]);
    }
    let mut events = Vec::new();
    for user in 0..10u32 {
        for k in 0..12u32 {
            let topic = k % 2;
            let row = topic * 100 + (user * 7 + k * 3) % 100;
            events.push(Engagement {
                user,
                row,
                time: i64::from(k) * 86_400,
            });
        }
    }
    (vectors, events)
}

fn split(events: &[Engagement]) -> Split {
    let params = SplitParams {
        train_fraction: 0.75,
        min_train: 4,
        min_test: 1,
    };
    time_split(events, params)
}

fn config(methods: Vec<Method>) -> EvalConfig {
    EvalConfig {
        methods,
        candidates: 40,
        budget: Budget::Equal,
        alpha: 0.5,
        seed: 1,
        bootstrap: 200,
    }
}

fn all_medoids(clustering: Clustering) -> Method {
    Method::Clusters {
        clustering,
        lambda: 0.01,
        summary: Summary::Medoid,
        pick: Pick::All,
        blend: Default::default(),
        global: Default::default(),
    }
}

/// The last item covers one topic and the medoids of every clustering cover both.
#[test]
fn multi_interest_beats_last_item_when_users_have_two_topics() {
    let (vectors, events) = two_topics();
    let split = split(&events);
    assert_eq!(split.excluded, 0);
    let config = config(vec![
        Method::LastItem,
        all_medoids(Clustering::Ward),
        Method::Popularity,
        all_medoids(Clustering::KMeans { k: 2 }),
        all_medoids(Clustering::Complete),
    ]);
    let err = evaluate(&vectors[..20], 2, &split, &config, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("row"), "{err}");
    assert!(evaluate(&vectors, 0, &split, &config, &|_| {}).is_err());
    let report = evaluate(&vectors, 2, &split, &config, &|_| {}).unwrap();
    let [last, ward, popular, kmeans, complete] = &report.methods[..] else {
        panic!()
    };
    // Each clustering finds the two topics and covers both.
    for m in [ward, kmeans, complete] {
        assert_eq!(m.clusters_per_user, 2.0, "{}", m.name);
        assert_eq!(m.relevance.value, 1.0, "{}", m.name);
        assert!(m.diversity.value > last.diversity.value, "{}", m.name);
    }
    assert_eq!(last.clusters_per_user, 1.0);
    assert_eq!(last.recall.lift, 0.0);
    assert!(
        (ward.embeddings_per_user - 2.0).abs() < 1e-9,
        "{}",
        ward.embeddings_per_user
    );
    // One query per topic: every test item has a near neighbour among the candidates; the last
    // item's 40 neighbours all lie in one topic, so test items of the other score nothing.
    assert_eq!(ward.relevance.value, 1.0);
    assert!(last.relevance.value < 0.75, "{}", last.relevance.value);
    assert!(ward.relevance.lift > 0.0 && ward.relevance.lift_ci[0] > 0.0);
    assert!(popular.candidates_per_user > 0.0 && popular.embeddings_per_user == 0.0);
    // Ranking against random non-engaged items: here every item belongs to one of the two
    // topics, so negatives compete within the topics and no method can rank well; the values
    // are bounded by their definitions (1/21 <= reciprocal rank <= 1).
    for m in [last, ward, popular] {
        assert!((0.0..=1.0).contains(&m.r_precision.value), "{}", m.name);
        assert!(
            (1.0 / 21.0..=1.0).contains(&m.reciprocal_rank.value),
            "{}: {}",
            m.name,
            m.reciprocal_rank.value
        );
    }
    assert!(report.to_markdown("toy").contains("| R-Precision | lift |"));
    assert!(
        report
            .to_markdown("toy")
            .contains("| last item (baseline) | 1.0 | 1.0 |")
    );
}

/// More alpha never means more interests; more sampled medoids never fewer embeddings.
#[test]
fn sweeps_move_the_knob_they_sweep() {
    let (vectors, events) = two_topics();
    let split = split(&events);
    let config = config(Vec::new());
    let alphas = [0.0, 0.5, 50.0];
    let points = alpha_sweep(&vectors, 2, &split, &config, &alphas, &|_| {}).unwrap();
    assert_eq!(points.iter().map(|p| p.x).collect::<Vec<_>>(), alphas);
    assert_eq!(points[0].clusters_per_user, 9.0); // alpha 0: every distinct training item
    assert_eq!(points[1].clusters_per_user, 2.0);
    assert_eq!(points[2].clusters_per_user, 1.0);
    let points = embeddings_sweep(&vectors, 2, &split, &config, &[1, 2, 3], &|_| {}).unwrap();
    let e: Vec<f64> = points.iter().map(|p| p.embeddings_per_user).collect();
    assert_eq!(e, [1.0, 2.0, 2.0]); // two interests to sample from
    assert!(points[1].relevance.value > points[0].relevance.value);
}

/// Walk-forward evaluates each (user, day) with the model trained on earlier days.
#[test]
fn walk_forward_units_are_user_days() {
    let (vectors, events) = two_topics();
    let split = walk_forward(&events, 3, SplitParams::default());
    assert_eq!(split.units.len(), 30); // 10 users x 3 test days
    assert!(split.description.contains("walk-forward"));
    assert!(split.shared_training.iter().all(|u| u.train.len() == 9));
    let report = evaluate(
        &vectors,
        2,
        &split,
        &config(vec![Method::LastItem]),
        &|_| {},
    )
    .unwrap();
    assert_eq!(report.users, 30);
    assert_eq!(report.test_items, 30);
}

/// Examples: light to heavy units, interests covering the training items, each method's list.
#[test]
fn examples_show_interests_and_each_methods_first_recommendations() {
    let (vectors, mut events) = two_topics();
    // User 0 gets 6 more engagements, so the units differ in history (picks span the 10th to
    // the 90th percentile of training engagements).
    events.extend((12..18u32).map(|k| Engagement {
        user: 0,
        row: (k % 2) * 100 + 50 + k,
        time: i64::from(k) * 86_400,
    }));
    let split = split(&events);
    let mut config = config(example_methods());
    config.alpha = 0.5;
    let shown = examples(&vectors, 2, &split, &config, 3, 5).unwrap();
    assert_eq!(shown.len(), 3);
    assert!(shown.windows(2).all(|w| w[0].train <= w[1].train));
    assert!(shown[0].user != shown[1].user && shown[1].user != shown[2].user);
    for ex in &shown {
        assert_eq!(ex.interests.len(), 2);
        assert_eq!(ex.interests.iter().map(|i| i.size).sum::<usize>(), ex.train);
        assert_eq!(ex.recommendations.len(), 2);
        assert_eq!(ex.recommendations[0].0, "last item (baseline)");
        assert!(ex.recommendations.iter().all(|(_, r)| r.len() == 5));
    }
    assert!(
        examples(&vectors, 2, &split, &config, 0, 5)
            .unwrap()
            .is_empty()
    );
}

/// Equal budgets give every retrieval method the same number of distinct candidates; the
/// paper's per-embedding split gives a method whose lists overlap fewer.
#[test]
fn equal_budgets_fill_every_method_to_the_budget() {
    use pinnersage_eval::methods::{Blend, Global};
    let (vectors, events) = two_topics();
    let split = split(&events);
    let methods = vec![
        Method::LastItem,
        all_medoids(Clustering::Ward),
        all_medoids(Clustering::Ward).blended(Blend::Importance, Global::None),
        all_medoids(Clustering::Ward).blended(Blend::RoundRobin, Global::DecayAverage(0.5)),
        all_medoids(Clustering::Ward).blended(Blend::RoundRobin, Global::MedoidAverage(0.5)),
    ];
    let equal = evaluate(&vectors, 2, &split, &config(methods.clone()), &|_| {}).unwrap();
    for m in &equal.methods {
        assert_eq!(m.candidates_per_user, 40.0, "{}", m.name);
        assert!(m.minority_recall.value.is_finite(), "{}", m.name);
    }
    // With the average as a third query: 3 lists of floor(40/3) = 13, at most 39.
    let paper = EvalConfig {
        budget: Budget::PerEmbedding,
        ..config(methods)
    };
    let paper = evaluate(&vectors, 2, &split, &paper, &|_| {}).unwrap();
    assert_eq!(paper.methods[0].candidates_per_user, 40.0);
    assert_eq!(paper.methods[1].candidates_per_user, 40.0);
    assert_eq!(paper.methods[3].embeddings_per_user, 3.0);
    assert!(
        paper.methods[3].candidates_per_user <= 39.0,
        "{}",
        paper.methods[3].candidates_per_user
    );
}

/// The tuner chooses on training data alone: replacing every test item changes the final test
/// report but neither the validation scores nor the choice.
#[test]
fn tune_never_reads_the_test_items() {
    use pinnersage_eval::tune::{Candidate, TuneGrid, tune};
    let (vectors, events) = two_topics();
    let split = split(&events);
    let grid = TuneGrid {
        alphas: vec![0.5, 2.0],
        globals: vec![0.0, 0.5],
        ..TuneGrid::default()
    };
    let config = config(Vec::new());
    let honest = tune(&vectors, 2, &split, &config, &grid, 2, &|_| {}).unwrap();
    let mut poisoned = split.clone();
    for u in &mut poisoned.units {
        u.test = vec![(u.user * 13 + 7) % 200, (u.user * 29 + 101) % 200];
    }
    let leaked = tune(&vectors, 2, &poisoned, &config, &grid, 2, &|_| {}).unwrap();
    assert_eq!(honest.validation.len(), 2 * 3 * 3 * 2);
    assert!(honest.validation_units > 0);
    // Bitwise (a metric no unit has is NaN).
    let bits = |t: &pinnersage_eval::tune::Tuned| -> Vec<(Candidate, u64, u64)> {
        t.validation
            .iter()
            .map(|s| (s.candidate, s.recall.to_bits(), s.minority_recall.to_bits()))
            .collect()
    };
    assert_eq!(bits(&honest), bits(&leaked));
    assert_eq!(honest.chosen, leaked.chosen);
    assert_ne!(
        honest.test, leaked.test,
        "the final report reads the test split"
    );
    // Baseline, decay average, the paper's configuration, the choice.
    assert_eq!(honest.test.len(), 4);
    assert!(
        honest
            .validation
            .windows(2)
            .all(|w| w[0].recall >= w[1].recall)
    );
    assert_eq!(
        Candidate::paper(0.5, 0.01).method(),
        Method::pinnersage(0.01, Summary::Medoid, Pick::Sample(3))
    );
    let toml = honest.chosen.to_toml("chosen");
    assert!(
        toml.starts_with("# chosen\n") && toml.contains("[serve]\nmedoids = "),
        "{toml}"
    );
}
