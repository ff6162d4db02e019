//! Shared by the fuzz property tests of every crate (included with `#[path]`): the committed
//! corpus of `tests/fuzz/corpus/<target>/` and a strategy that feeds a parser arbitrary bytes
//! and mutations of the corpus (byte overwrites, insertions, truncation).
//!
//! CI runs each target for proptest's default number of cases; a longer run:
//! `PROPTEST_CASES=200000 cargo test --release --workspace fuzz_`.

#![allow(dead_code)]

use std::path::PathBuf;

use proptest::prelude::*;

/// The corpus directory of `target`.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz/corpus")
        .join(target)
}

/// Every committed input of `target`, sorted by file name.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Arbitrary bytes, or a mutation of one of `seeds`.
pub fn inputs(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    assert!(!seeds.is_empty());
    let n = seeds.len();
    let arbitrary = proptest::collection::vec(any::<u8>(), 0..512);
    let edits = proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..8);
    let mutated = (0..n, edits, any::<Option<usize>>()).prop_map(move |(i, edits, cut)| {
        let mut bytes = seeds[i].clone();
        for (at, byte, kind) in edits {
            let at = at % (bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        bytes
    });
    prop_oneof![1 => arbitrary, 3 => mutated].boxed()
}
