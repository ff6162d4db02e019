//! Fuzz property tests of the ingest body parser (`POST /v1/events` and NATS messages): any
//! bytes give valid events and per-event rejections, or a 4xx error, never a panic. See
//! `tests/fuzz/common.rs`.

#[path = "../../../tests/fuzz/common.rs"]
mod common;

use pinnersage_catalog::catalog::{Catalog, CatalogBuilder};
use pinnersage_server::intake::parse_events;
use proptest::prelude::*;

/// A three-item catalog, built once per process in a scratch directory that is removed right
/// away (the open catalog keeps its mapped files).
fn catalog() -> &'static Catalog {
    static CATALOG: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    CATALOG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut b = CatalogBuilder::new(dir.path(), 2, false).unwrap();
        for id in ["i1", "i2", "8"] {
            b.push(id, &mut [1.0, 0.5]).unwrap();
        }
        b.commit("fuzz").unwrap();
        let mut catalog = Catalog::open(dir.path()).unwrap();
        catalog.build_hash_index();
        catalog
    })
}

proptest! {
    #[test]
    fn fuzz_ingest_json(bytes in common::inputs(common::corpus("ingest-json"))) {
        let catalog = catalog();
        if let Ok((valid, rejected)) = parse_events(&bytes, catalog, 1_800_000_000) {
            for event in valid.events() {
                prop_assert!(catalog.row_of(&event.item).is_some());
            }
            prop_assert!(!valid.is_empty() || !rejected.is_empty());
        }
    }
}
