//! The persisted index against the exact scan: recall, save + view, exclusions, near-duplicate
//! collapsing, staleness.

use std::path::Path;
use std::sync::Arc;

use pinnersage_catalog::catalog::{Catalog, CatalogBuilder};
use pinnersage_core::sample::SplitMix64;
use pinnersage_index::persist::{self, BuildOptions, IndexKind};
use pinnersage_index::{AnnIndex, ExactIndex, HnswLibrary, HnswParams, Metric, Quantization};

/// Clustered unit vectors: `n` items around 50 centres.
fn vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let mut gauss = move || {
        let (u, v) = (rng.next_f64().max(1e-12), rng.next_f64());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let centres: Vec<f32> = (0..50 * dim).map(|_| gauss()).collect();
    let mut out = Vec::with_capacity(n * dim);
    for i in 0..n {
        let c = &centres[(i % 50) * dim..(i % 50 + 1) * dim];
        out.extend(c.iter().map(|&x| x + 0.6 * gauss()));
    }
    out
}

fn catalog(dir: &Path, data: &[f32], dim: usize) -> Arc<Catalog> {
    let mut b = CatalogBuilder::new(dir, dim, true).unwrap();
    for (i, row) in data.chunks_exact(dim).enumerate() {
        b.push(&format!("item-{i}"), &mut row.to_vec()).unwrap();
    }
    b.commit("test").unwrap();
    let mut c = Catalog::open(dir).unwrap();
    c.build_hash_index();
    Arc::new(c)
}

fn recall_at_10(approx: &dyn AnnIndex, exact: &dyn AnnIndex, queries: &[f32], dim: usize) -> f64 {
    let mut hits = 0;
    let mut total = 0;
    for q in queries.chunks_exact(dim) {
        let truth: Vec<u32> = exact.search(q, 10).unwrap().iter().map(|n| n.row).collect();
        let got = approx.search(q, 10).unwrap();
        hits += got.iter().filter(|n| truth.contains(&n.row)).count();
        total += truth.len();
    }
    hits as f64 / total as f64
}

#[test]
fn hnswlib_recall_against_exact_survives_save_and_load() {
    recall_against_exact_survives_save_and_view(HnswLibrary::Hnswlib);
}

#[test]
fn usearch_recall_against_exact_survives_save_and_view() {
    recall_against_exact_survives_save_and_view(HnswLibrary::Usearch);
}

fn recall_against_exact_survives_save_and_view(library: HnswLibrary) {
    let dir = tempfile::tempdir().unwrap();
    let dim = 32;
    let data = vectors(5_000, dim, 1);
    let catalog = catalog(dir.path(), &data, dim);
    let options = BuildOptions {
        params: HnswParams {
            library,
            ..HnswParams::default()
        },
        ..BuildOptions::default()
    };
    let built = persist::build(dir.path(), &catalog, &options, &()).unwrap();
    assert_eq!(built.meta.params.library, library);
    assert!(built.dir.join(library.file_name()).exists());
    assert_eq!(built.meta.indexed, 5_000);
    assert_eq!(built.meta.catalog_generation, "gen-000001");

    let opened = persist::open(dir.path(), catalog.clone(), Some(128), None, false).unwrap();
    assert_eq!(opened.index.kind(), "hnsw");
    assert_eq!(opened.index.len(), 5_000);
    assert_eq!(opened.version, 1);
    let exact = ExactIndex::new(catalog.embeddings(), dim, Metric::Cosine).unwrap();
    let queries = vectors(200, dim, 2);
    let recall = recall_at_10(opened.index.as_ref(), &exact, &queries, dim);
    assert!(recall >= 0.95, "recall@10 {recall}");

    // Scores agree with the exact scan for the top hit.
    let q = catalog.embedding(7);
    let (a, e) = (
        &opened.index.search(q, 1).unwrap()[0],
        &exact.search(q, 1).unwrap()[0],
    );
    assert_eq!((a.row, e.row), (7, 7));
    assert!(a.distance.abs() < 1e-5 && e.distance.abs() < 1e-5);

    // Many threads searching the viewed index at once get what one thread gets.
    let sequential: Vec<Vec<u32>> = (0..1_600)
        .map(|row| {
            opened
                .index
                .search(catalog.embedding(row), 5)
                .unwrap()
                .iter()
                .map(|n| n.row)
                .collect()
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..16 {
            let (index, catalog, sequential) = (opened.index.clone(), catalog.clone(), &sequential);
            s.spawn(move || {
                for (row, want) in sequential.iter().enumerate().skip(t * 100).take(100) {
                    let hits: Vec<u32> = index
                        .search(catalog.embedding(row), 5)
                        .unwrap()
                        .iter()
                        .map(|n| n.row)
                        .collect();
                    assert_eq!(&hits, want);
                }
            });
        }
    });
}

#[test]
fn both_libraries_agree_with_the_exact_scan_on_l2_and_filters() {
    let dim = 24;
    let data = vectors(3_000, dim, 5);
    let rows: Vec<u32> = (0..3_000).collect();
    let exact = ExactIndex::new(&data[..], dim, Metric::L2).unwrap();
    let odd = |row: u32| row % 2 == 1;
    for library in [HnswLibrary::Hnswlib, HnswLibrary::Usearch] {
        let params = HnswParams {
            metric: Metric::L2,
            expansion_search: 200,
            library,
            ..HnswParams::default()
        };
        let index =
            pinnersage_index::HnswIndex::build(&data, dim, &rows, &params, &|_| {}).unwrap();
        assert_eq!(index.library(), library);
        let queries = vectors(100, dim, 6);
        let recall = recall_at_10(&index, &exact, &queries, dim);
        assert!(recall >= 0.97, "{library:?}: L2 recall@10 {recall}");
        for q in queries.chunks_exact(dim).take(20) {
            let (got, want) = (index.search(q, 1).unwrap(), exact.search(q, 1).unwrap());
            if got[0].row == want[0].row {
                let rel = (got[0].distance - want[0].distance).abs() / want[0].distance.max(1e-6);
                assert!(
                    rel < 1e-4,
                    "{library:?}: squared L2 {} vs {}",
                    got[0].distance,
                    want[0].distance
                );
            }
            let kept = index.search_filtered(q, 10, &odd).unwrap();
            assert_eq!(kept.len(), 10, "{library:?}");
            assert!(kept.iter().all(|n| odd(n.row)), "{library:?}: {kept:?}");
            assert!(kept.windows(2).all(|w| w[0].distance <= w[1].distance));
        }
        // More neighbours asked for than there are rows: all of them, nothing invented.
        let few =
            pinnersage_index::HnswIndex::build(&data, dim, &rows[..5], &params, &|_| {}).unwrap();
        assert_eq!(few.search(&data[..dim], 50).unwrap().len(), 5);
        assert!(few.search(&data[..dim], 0).unwrap().is_empty());
    }
}

#[test]
fn hnsw_library_choices_are_checked_and_old_generations_open_as_usearch() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 16;
    let data = vectors(500, dim, 3);
    let catalog = catalog(dir.path(), &data, dim);
    let f16 = HnswParams {
        quantization: Quantization::F16,
        ..HnswParams::default()
    };
    assert_eq!(
        f16.validate().unwrap_err().to_string(),
        "hnswlib stores f32 vectors only: use the usearch `hnsw_library` for f16"
    );
    // An index generation written before the library was recorded in meta.json is usearch's.
    let options = BuildOptions {
        params: HnswParams {
            library: HnswLibrary::Usearch,
            ..HnswParams::default()
        },
        ..BuildOptions::default()
    };
    let built = persist::build(dir.path(), &catalog, &options, &()).unwrap();
    let meta_path = built.dir.join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["params"]
        .as_object_mut()
        .unwrap()
        .remove("library")
        .unwrap();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let opened = persist::open(dir.path(), catalog.clone(), None, None, false).unwrap();
    assert_eq!(opened.meta.params.library, HnswLibrary::Usearch);
    assert_eq!(
        opened.index.search(catalog.embedding(3), 1).unwrap()[0].row,
        3
    );

    // A damaged hnswlib file is an error naming it, not a crash.
    let built = persist::build(dir.path(), &catalog, &BuildOptions::default(), &()).unwrap();
    let file = built.dir.join("index.hnswlib");
    // Opened for another dimension: an error, not vectors read out of step.
    let err = pinnersage_index::HnswIndex::view(&file, &HnswParams::default(), dim + 8, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the file holds vectors of 16 dimensions, expected 24"),
        "{err}"
    );
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();
    let err = persist::open(dir.path(), catalog.clone(), None, None, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("hnswlib: cannot load") && err.contains("index.hnswlib"),
        "{err}"
    );
}

#[test]
fn exclusions_and_near_duplicates_are_left_out_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 16;
    let mut data = vectors(1_000, dim, 3);
    // Rows 500..510 duplicate rows 0..10 up to a tiny perturbation.
    for i in 0..10 {
        for k in 0..dim {
            data[(500 + i) * dim + k] = data[i * dim + k] * 1.0001;
        }
    }
    let catalog = catalog(dir.path(), &data, dim);
    for kind in [IndexKind::Hnsw, IndexKind::Exact] {
        let options = BuildOptions {
            kind,
            collapse_threshold: Some(0.9999),
            exclude: vec!["item-3".into(), "item-4".into(), "no-such-item".into()],
            exclude_source: Some("exclude.txt".into()),
            ..BuildOptions::default()
        };
        let built = persist::build(dir.path(), &catalog, &options, &()).unwrap();
        assert_eq!(built.unknown_exclusions, 1);
        assert_eq!(built.meta.excluded, 2);
        // 500..510 collapse into 0..10, except 503 and 504 whose originals are excluded.
        assert_eq!(built.meta.collapsed, 8, "{kind:?}");
        assert_eq!(built.meta.indexed, 1_000 - 2 - 8);
        let collapsed = std::fs::read_to_string(built.dir.join("collapsed.tsv")).unwrap();
        assert!(collapsed.contains("item-500\titem-0\n"), "{collapsed}");

        let opened = persist::open(dir.path(), catalog.clone(), None, None, false).unwrap();
        assert_eq!(opened.index.len(), 990);
        for row in [3usize, 4, 500, 509] {
            let hits = opened.index.search(catalog.embedding(row), 20).unwrap();
            assert!(
                hits.iter().all(|n| ![3, 4, 500, 509].contains(&n.row)),
                "{kind:?}"
            );
        }
        let hits = opened.index.search(catalog.embedding(500), 1).unwrap();
        assert_eq!(
            hits[0].row, 0,
            "the representative answers for its duplicate"
        );
    }
}

#[test]
fn missing_and_stale_indexes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 8;
    let data = vectors(300, dim, 4);
    let c1 = catalog(dir.path(), &data, dim);
    let err = persist::open(dir.path(), c1.clone(), None, None, false)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("run `pinnersage index build"),
        "{err}"
    );
    persist::build(dir.path(), &c1, &BuildOptions::default(), &()).unwrap();
    let c2 = catalog(dir.path(), &data, dim); // re-import: catalog gen-000002
    let err = persist::open(dir.path(), c2, None, None, false)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("built for catalog gen-000001 but the current catalog is gen-000002"),
        "{err}"
    );
    let bad = BuildOptions {
        params: HnswParams {
            connectivity: 1,
            ..HnswParams::default()
        },
        ..BuildOptions::default()
    };
    let err = persist::build(dir.path(), &c1, &bad, &()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "connectivity (M) must be in 2..=256, got 1"
    );
}

/// The exact top 10 of `q` among the catalog's rows that are not deleted.
fn live_truth(catalog: &Catalog, q: &[f32]) -> Vec<u32> {
    let mut scored: Vec<(f32, u32)> = (0..catalog.rows())
        .filter(|&r| !catalog.is_deleted(r))
        .map(|r| (Metric::Cosine.distance(q, catalog.embedding(r)), r as u32))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    scored.iter().take(10).map(|&(_, r)| r).collect()
}

#[test]
fn a_served_graph_takes_inserts_and_deletes_while_searched_and_reopens_with_them() {
    use pinnersage_catalog::changes::ItemChange;
    let dir = tempfile::tempdir().unwrap();
    let dim = 32;
    let data = vectors(4_000, dim, 3);
    let catalog = catalog(dir.path(), &data, dim);
    persist::build(dir.path(), &catalog, &BuildOptions::default(), &()).unwrap();
    let opened = persist::open(dir.path(), catalog.clone(), Some(128), None, false).unwrap();
    let index = opened.index.clone();
    assert!(index.takes_changes());

    // Replace a fifth of the items and add 2,500 (the loaded graph is full: it grows several
    // times) while another thread searches without pause.
    let fresh = vectors(3_300, dim, 4);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rules = catalog.rules();
    let (mut journal, _) = pinnersage_catalog::journal::Journal::open(dir.path()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut searches = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || searches == 0 {
                let q = &data[(searches % 4_000) * dim..][..dim];
                let n = index.search(q, 10).unwrap().len();
                assert_eq!(n, 10, "search {searches}, {} rows", index.len());
                searches += 1;
            }
        });
        let changes: Vec<ItemChange> = fresh
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| {
                let id = if i < 800 {
                    format!("item-{}", i * 5)
                } else {
                    format!("new-{i}")
                };
                ItemChange::upsert(&id, Some(v.to_vec()), None, &rules).unwrap()
            })
            .collect();
        journal.append(&changes).unwrap();
        for change in &changes {
            let applied = catalog.apply(change).unwrap();
            index
                .insert(
                    applied.row.unwrap(),
                    catalog.embedding(applied.row.unwrap() as usize),
                )
                .unwrap();
            if let Some(old) = applied.removed {
                assert!(index.remove(old).unwrap());
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(index.len(), 4_000 + 2_500);
    assert!(
        !index.remove(5).unwrap(),
        "item-5 was not replaced: deleting row 5 twice"
    );
    assert!(index.remove(5).is_ok_and(|again| !again));

    // Searches never return a deleted row, and recall against the live catalog holds.
    let queries = vectors(200, dim, 5);
    let recall = |index: &dyn AnnIndex, catalog: &Catalog| {
        let mut hits = 0;
        for q in queries.chunks_exact(dim) {
            let got = index.search(q, 10).unwrap();
            assert!(got.iter().all(|n| !catalog.is_deleted(n.row as usize)));
            let truth = live_truth(catalog, q);
            hits += got.iter().filter(|n| truth.contains(&n.row)).count();
        }
        hits as f64 / (queries.len() / dim * 10) as f64
    };
    let live = recall(index.as_ref(), &catalog);
    assert!(live >= 0.95, "recall@10 after the changes: {live}");

    // A reopened catalog replays the journal and the reopened graph catches up to it.
    drop(journal);
    drop(opened);
    let mut again = Catalog::open(dir.path()).unwrap();
    again.build_hash_index();
    let again = Arc::new(again);
    assert_eq!(
        (again.rows(), again.live_rows()),
        (4_000 + 3_300, 4_000 + 2_500)
    );
    let reopened = persist::open(dir.path(), again.clone(), Some(128), None, false).unwrap();
    assert_eq!(reopened.index.len(), 4_000 + 2_500);
    let caught_up = recall(reopened.index.as_ref(), &again);
    assert!(caught_up >= 0.95, "recall@10 after reopening: {caught_up}");
}

/// The ef_construction of live inserts can be set on a served graph: the inserts that follow use
/// it, and the graph they make still finds the nearest neighbours (recall@10 against the exact
/// scan, inserted at ef 32 beside the build's 128; usearch takes the setting but its graphs take
/// no inserts).
#[test]
fn live_inserts_take_their_own_ef_construction() {
    use pinnersage_index::HnswIndex;
    let dim = 16;
    let data = vectors(6_000, dim, 8);
    let exact = ExactIndex::new(&data[..], dim, Metric::Cosine).unwrap();
    let queries = vectors(300, dim, 9);
    for library in [HnswLibrary::Hnswlib, HnswLibrary::Usearch] {
        let mut recalls = Vec::new();
        for insert_ef in [128, 32] {
            let params = HnswParams {
                library,
                expansion_add: 128,
                expansion_search: 64,
                ..HnswParams::default()
            };
            let built: Vec<u32> = (0..3_000).collect();
            let index = HnswIndex::build(&data, dim, &built, &params, &|_| {}).unwrap();
            assert_eq!(index.expansion_add(), 128, "{library:?}");
            index.set_expansion_add(insert_ef);
            assert_eq!(index.expansion_add(), insert_ef, "{library:?}");
            if !index.takes_changes() {
                continue; // a usearch graph is served as built
            }
            // Half the catalog inserted live.
            for row in 3_000..6_000u32 {
                let r = row as usize;
                index.insert(row, &data[r * dim..(r + 1) * dim]).unwrap();
            }
            recalls.push(recall_at_10(&index, &exact, &queries, dim));
        }
        if let [at_128, at_32] = recalls[..] {
            eprintln!(
                "recall@10 with half the items inserted live: ef 128 {at_128:.3}, ef 32 {at_32:.3}"
            );
            assert!(at_32 >= 0.9 && at_128 >= 0.9, "{recalls:?}");
        }
    }
}

/// Searches run beside inserts into a served graph (they no longer wait for them), switching
/// between their two kinds as runs of inserts start and end: every answer is whole while the
/// graph grows under it, from 1,000 to 21,000 vectors through several reallocations: `k` distinct rows already added, closest first, each distance the one of its
/// row's vector (a torn link list sends a search to a row not written yet, or off the graph).
#[test]
fn searches_beside_inserts_return_whole_answers() {
    use pinnersage_index::HnswIndex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dim = 16;
    let mut data = vectors(21_000, dim, 11);
    for v in data.chunks_exact_mut(dim) {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
    }
    let params = HnswParams {
        expansion_add: 32,
        expansion_search: 32,
        ..HnswParams::default()
    };
    let built: Vec<u32> = (0..1_000).collect();
    let index = HnswIndex::build(&data, dim, &built, &params, &|_| {}).unwrap();
    let added = AtomicUsize::new(1_000);
    let beside = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (index, data, added, beside) = (&index, &data, &added, &beside);
            s.spawn(move || {
                let mut n = t;
                while added.load(Ordering::Acquire) < 21_000 {
                    // Queries near the rows being added.
                    let at = (added.load(Ordering::Acquire) + n % 50).min(20_999);
                    let q = &data[at * dim..(at + 1) * dim];
                    let got = index.search(q, 10).unwrap();
                    let limit = added.load(Ordering::Acquire) + 1;
                    assert_eq!(got.len(), 10);
                    let mut rows: Vec<u32> = got.iter().map(|n| n.row).collect();
                    rows.sort_unstable();
                    rows.dedup();
                    assert_eq!(rows.len(), 10, "distinct rows: {got:?}");
                    for pair in got.windows(2) {
                        assert!(pair[0].distance <= pair[1].distance, "{got:?}");
                    }
                    for hit in &got {
                        let row = hit.row as usize;
                        assert!(row < limit, "row {row} returned before it was added");
                        let v = &data[row * dim..(row + 1) * dim];
                        let expected = Metric::Cosine.distance(q, v);
                        assert!(
                            (hit.distance - expected).abs() < 1e-4,
                            "row {row}: distance {} for {expected}",
                            hit.distance
                        );
                    }
                    beside.fetch_add(1, Ordering::Relaxed);
                    n += 2;
                }
            });
        }
        for row in 1_000..21_000u32 {
            let r = row as usize;
            index.insert(row, &data[r * dim..(r + 1) * dim]).unwrap();
            added.store(r + 1, Ordering::Release);
            if row % 500 == 0 {
                // Searches switch to hnswlib's own kind, then back at the next insert.
                index.inserts_done();
            }
        }
    });
    assert_eq!(index.len(), 21_000);
    let searches = beside.load(Ordering::Relaxed);
    eprintln!("{searches} searches beside 20,000 inserts");
    assert!(
        searches >= 1_000,
        "only {searches} searches ran beside the inserts"
    );
}

#[test]
fn a_row_inserted_next_to_another_is_linked_to_it_both_ways() {
    use pinnersage_index::HnswIndex;
    let dim = 16;
    let data = vectors(2_000, dim, 5);
    let rows: Vec<u32> = (0..2_000).collect();
    let index = HnswIndex::build(&data, dim, &rows, &HnswParams::default(), &|_| {}).unwrap();
    let exact = ExactIndex::new(&data[..], dim, Metric::Cosine).unwrap();
    assert!(exact.graph_links(7).is_none(), "an exact scan has no graph");
    assert!(index.graph_links(2_000).is_none(), "not in the graph yet");
    let links = index.graph_links(7).unwrap();
    assert!(!links.is_empty() && links.iter().all(|&r| r < 2_000 && r != 7));
    // A new row a hair from row 7: its nearest, so each keeps the other among its links.
    let near: Vec<f32> = data[7 * dim..8 * dim]
        .iter()
        .map(|x| x * 1.001 + 1e-4)
        .collect();
    index.insert(2_000, &near).unwrap();
    assert!(index.graph_links(2_000).unwrap().contains(&7));
    assert!(index.graph_links(7).unwrap().contains(&2_000));
}
