//! Fuzz property tests of the catalog's parsers of outside input: NPY files, timestamps, item
//! files (CSV/TSV), attribute files and a catalog's `meta.json`. Any bytes give a value or an
//! error, never a panic. See `tests/fuzz/common.rs`.

#[path = "../../../tests/fuzz/common.rs"]
mod common;

use std::path::Path;

use pinnersage_catalog::catalog::Catalog;
use pinnersage_catalog::items::{ItemsOptions, import_items};
use pinnersage_catalog::npy;
use pinnersage_catalog::timestamp::parse_timestamp;
use proptest::prelude::*;

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ps-fuzz-{name}-"))
        .tempdir()
        .unwrap()
}

proptest! {
    #[test]
    fn fuzz_npy(bytes in common::inputs(common::corpus("npy"))) {
        if let Ok(array) = npy::parse(Path::new("fuzz.npy"), bytes) {
            let _ = array.clone().into_f32_matrix();
            let _ = array.into_i64_vector();
        }
    }

    #[test]
    fn fuzz_timestamp(bytes in common::inputs(common::corpus("timestamp"))) {
        let _ = parse_timestamp(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn fuzz_items_csv(bytes in common::inputs(common::corpus("items-csv"))) {
        let scratch_dir = scratch("items");
        let dir = scratch_dir.path();
        let file = dir.join("items.csv");
        std::fs::write(&file, &bytes).unwrap();
        if import_items(&dir.join("data"), &file, &ItemsOptions::default()).is_ok() {
            prop_assert!(Catalog::open(&dir.join("data")).is_ok());
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn fuzz_attributes(bytes in common::inputs(common::corpus("events-csv"))) {
        let scratch_dir = scratch("attrs");
        let dir = scratch_dir.path();
        let items = dir.join("items.csv");
        std::fs::write(&items, "u1,1,2\ni1,3,4\n").unwrap();
        for name in ["attrs.csv", "attrs.jsonl"] {
            let file = dir.join(name);
            std::fs::write(&file, &bytes).unwrap();
            let options = ItemsOptions { attributes: Some(&file), ..ItemsOptions::default() };
            let _ = import_items(&dir.join("data"), &items, &options);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn fuzz_catalog_meta(bytes in common::inputs(common::corpus("meta"))) {
        let scratch_dir = scratch("meta");
        let dir = scratch_dir.path();
        let items = dir.join("items.csv");
        std::fs::write(&items, "a,1,2\nb,3,4\n").unwrap();
        let data = dir.join("data");
        let generation = import_items(&data, &items, &ItemsOptions::default())
            .unwrap()
            .catalog
            .generation;
        std::fs::write(generation.join("meta.json"), &bytes).unwrap();
        if let Ok(catalog) = Catalog::open(&data) {
            for r in 0..catalog.rows() {
                let _ = (catalog.id(r), catalog.embedding(r), catalog.attributes(r));
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
