//! Fuzz property tests of stored profile decoding: any bytes decode to a profile or to `None`,
//! never a panic, and whatever decodes encodes back to the same profile. See
//! `tests/fuzz/common.rs`.

#[path = "../../../tests/fuzz/common.rs"]
mod common;

use pinnersage_store::profiles::{ProfileView, StoredProfile};
use proptest::prelude::*;

proptest! {
    #[test]
    fn fuzz_profile(bytes in common::inputs(common::corpus("profile"))) {
        if let Some(view) = ProfileView::parse(&bytes) {
            let stored = view.to_stored();
            prop_assert_eq!(StoredProfile::decode(&stored.encode()), Some(stored));
        }
    }
}

/// The corpus's seed: a valid two-cluster profile in the encoding of generations written
/// before item importance was stored (items without importance encode exactly so), which must
/// still decode (regenerate with `PINNERSAGE_WRITE_CORPUS=1 cargo test -p pinnersage-store
/// --test fuzz`).
#[test]
fn the_corpus_seed_decodes() {
    use pinnersage_store::profiles::{StoredCluster, StoredItem};
    let profile = StoredProfile {
        clusters: vec![
            StoredCluster {
                medoid: "item-9".into(),
                size: 2,
                importance: 1.75,
                latest_time: 1_700_000_000,
            },
            StoredCluster {
                medoid: "é".into(),
                size: 1,
                importance: 0.5,
                latest_time: -5,
            },
        ],
        items: vec![
            StoredItem {
                item: "item-9".into(),
                cluster: 0,
                importance: None,
            },
            StoredItem {
                item: "item-3".into(),
                cluster: 0,
                importance: None,
            },
            StoredItem {
                item: "é".into(),
                cluster: 1,
                importance: None,
            },
        ],
    };
    let path = common::corpus_dir("profile").join("two-clusters.bin");
    if std::env::var_os("PINNERSAGE_WRITE_CORPUS").is_some() {
        std::fs::write(&path, profile.encode()).unwrap();
    }
    assert_eq!(
        StoredProfile::decode(&std::fs::read(&path).unwrap()),
        Some(profile)
    );
}
