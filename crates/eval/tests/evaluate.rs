//! `evaluate` end to end on a toy catalog where the answer is known.

use pinnersage_eval::methods::{Method, Pick, Summary};
use pinnersage_eval::split::{Engagement, SplitParams, split_by_time};
use pinnersage_eval::{EvalConfig, evaluate};

/// Two orthogonal topics on the unit circle, 100 items each; users alternate between them, so the
/// last item covers one topic and the Ward medoids cover both.
#[test]
fn multi_interest_beats_last_item_when_users_have_two_topics() {
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
    let (users, excluded) = split_by_time(
        &events,
        SplitParams {
            train_fraction: 0.75,
            min_train: 4,
            min_test: 1,
        },
    );
    assert_eq!(excluded, 0);
    let ward_all = Method::Ward {
        lambda: 0.01,
        summary: Summary::Medoid,
        pick: Pick::All,
    };
    let config = EvalConfig {
        methods: vec![Method::LastItem, ward_all, Method::Popularity],
        candidates: 40,
        alpha: 0.5,
        seed: 1,
        bootstrap: 200,
    };
    let err = evaluate(&vectors[..20], 2, &users, excluded, &config, &|_| {}).unwrap_err();
    assert!(err.contains("row"), "{err}");
    let report = evaluate(&vectors, 2, &users, excluded, &config, &|_| {}).unwrap();
    let [last, ward, popular] = &report.methods[..] else {
        panic!()
    };
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
            .contains("| last item (baseline) | 1.0 |")
    );
}
