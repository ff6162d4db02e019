//! Fuzz property tests of the engagement-log readers: CSV/TSV, JSON lines and Parquet event
//! rows. Any bytes give events or an error naming the file, never a panic. See
//! `tests/fuzz/common.rs`.

#[path = "../../../tests/fuzz/common.rs"]
mod common;

use pinnersage_pipeline::data_in::import_events::{ImportOptions, read_events};
use proptest::prelude::*;

fn read(bytes: &[u8], name: &str) {
    let scratch_dir = tempfile::tempdir().unwrap();
    let file = scratch_dir.path().join(name);
    std::fs::write(&file, bytes).unwrap();
    for skip_invalid in [false, true] {
        let options = ImportOptions {
            skip_invalid,
            ..ImportOptions::default()
        };
        if let Err(e) = read_events(&file, &options) {
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}

proptest! {
    #[test]
    fn fuzz_events_csv(bytes in common::inputs(common::corpus("events-csv"))) {
        read(&bytes, "events.csv");
        read(&bytes, "events.tsv");
    }

    #[test]
    fn fuzz_events_jsonl(bytes in common::inputs(common::corpus("events-jsonl"))) {
        read(&bytes, "events.jsonl");
    }

    #[test]
    fn fuzz_events_parquet(bytes in common::inputs(vec![b"PAR1\0\0\0\0PAR1".to_vec()])) {
        read(&bytes, "events.parquet");
    }
}
