//! Query-time filters: applied inside the ANN search (HNSW and the exact scan), checked against a
//! brute-force filtered scan on synthetic items with attributes.

use std::path::Path;

use pinnersage_catalog::catalog::{Catalog, CatalogBuilder};
use pinnersage_catalog::filter::{AttributeTable, Filter};
use pinnersage_core::sample::SplitMix64;
use pinnersage_index::persist::{self, BuildOptions, IndexKind};
use pinnersage_server::{ServeConfig, Server};

const DIM: usize = 16;
const ITEMS: usize = 10_000;

/// Items on the unit sphere with a colour (a third each), a price 0..100 and, for 10 items
/// (0.1%), `rare: yes`.
fn make_catalog(dir: &Path, kind: IndexKind) {
    let mut rng = SplitMix64::new(5);
    let mut gauss = move || {
        let (u, v) = (rng.next_f64().max(1e-12), rng.next_f64());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let mut b = CatalogBuilder::new(dir, DIM, true).unwrap();
    let mut attributes = String::new();
    for i in 0..ITEMS {
        let mut v: Vec<f32> = (0..DIM).map(|_| gauss()).collect();
        b.push(&format!("i{i}"), &mut v).unwrap();
        let colour = ["red", "green", "blue"][i % 3];
        let rare = if i % 1000 == 7 {
            ",\"rare\":\"yes\""
        } else {
            ""
        };
        attributes.push_str(&format!(
            "{{\"id\":\"i{i}\",\"colour\":\"{colour}\",\"price\":{}{rare}}}\n",
            i % 100
        ));
    }
    let file = dir.join("attributes.jsonl");
    std::fs::write(&file, attributes).unwrap();
    b.attach_attributes(&file, None).unwrap();
    b.commit("test").unwrap();
    let catalog = Catalog::open(dir).unwrap();
    let options = BuildOptions {
        kind,
        ..BuildOptions::default()
    };
    persist::build(dir, &catalog, &options, &()).unwrap();
}

/// The `k` items nearest to `row` (itself excluded) among those matching `filter`, by a plain
/// scan in f64.
fn brute_force(
    catalog: &Catalog,
    table: &AttributeTable,
    filter: &Filter,
    row: usize,
    k: usize,
) -> Vec<String> {
    let q = catalog.embedding(row);
    let mut scored: Vec<(f64, usize)> = (0..catalog.rows())
        .filter(|&r| r != row && filter.matches(table, r))
        .map(|r| {
            let x = catalog.embedding(r);
            let dot: f64 = q
                .iter()
                .zip(x)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            (-dot, r)
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    scored.truncate(k);
    scored
        .into_iter()
        .map(|(_, r)| catalog.id(r).to_owned())
        .collect()
}

fn check(kind: IndexKind, min_recall: f64) {
    let dir = tempfile::tempdir().unwrap();
    make_catalog(dir.path(), kind);
    let server = Server::open(dir.path(), ServeConfig::default()).unwrap();
    let engine = server.engine();
    let catalog = Catalog::open(dir.path()).unwrap();
    let table = AttributeTable::from_json_rows((0..catalog.rows()).map(|r| catalog.attributes(r)));
    let k = 20;
    for conditions in [
        vec!["colour:red|blue"],                      // 67%
        vec!["colour:green", "price<15"],             // 5%
        vec!["rare:yes"],                             // 0.1%: 10 items
        vec!["!colour:red", "price>=50", "price<55"], // 3.3%
    ] {
        let filter = engine.filter(&conditions).unwrap().unwrap();
        let (mut found, mut total) = (0usize, 0usize);
        for row in (0..ITEMS).step_by(997) {
            let item = catalog.id(row);
            let got: Vec<String> = engine
                .similar_filtered(item, k, Some(&filter))
                .unwrap()
                .iter()
                .map(|r| catalog.id(r.row as usize).to_owned())
                .collect();
            let expected = brute_force(&catalog, &table, &filter, row, k);
            assert_eq!(
                got.len(),
                expected.len(),
                "{conditions:?} from {item}: k items when k exist"
            );
            for id in &got {
                let r = catalog.row_of(id).unwrap();
                assert!(
                    filter.matches(&table, r),
                    "{conditions:?}: {id} does not match"
                );
            }
            found += got.iter().filter(|id| expected.contains(id)).count();
            total += expected.len();
        }
        let recall = found as f64 / total as f64;
        assert!(
            recall >= min_recall,
            "{kind:?} {conditions:?}: recall {recall:.3}"
        );
    }
    // A filter that matches nothing: an empty list, not an error.
    let nothing = engine.filter(&["colour:purple"]).unwrap().unwrap();
    assert!(
        engine
            .similar_filtered("i1", k, Some(&nothing))
            .unwrap()
            .is_empty()
    );
    // Bad filters are refused with the condition named.
    for (bad, message) in [
        ("size:xl", "unknown attribute \"size\""),
        ("colour>=3", "no numeric values"),
        ("price", "no operator"),
    ] {
        let err = engine.filter(&[bad]).unwrap_err().to_string();
        assert!(err.contains(message) && err.contains(bad), "{bad}: {err}");
    }
}

#[test]
fn filtered_similar_items_equal_a_brute_force_scan_with_the_exact_index() {
    check(IndexKind::Exact, 1.0);
}

#[test]
fn filtered_similar_items_match_a_brute_force_scan_with_hnsw() {
    check(IndexKind::Hnsw, 0.95);
}
