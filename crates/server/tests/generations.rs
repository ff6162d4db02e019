//! New catalog and index generations are served without a restart, over real HTTP against a
//! real server: `import items` then `index build` into its data directory, or `index build`
//! alone, are picked up while requests and item changes go on, and nothing acknowledged is lost.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use pinnersage_catalog::catalog::{Catalog, CatalogBuilder};
use pinnersage_index::persist::{self, BuildOptions};
use pinnersage_server::ServeConfig;
use serde_json::{Value, json};

fn put(server: &Server, items: Value) -> (u16, Value) {
    server.post_json("/v1/items", &json!({ "items": items }).to_string())
}

fn swaps(server: &Server) -> f64 {
    metric(
        &server.request("GET", "/metrics").1,
        "pinnersage_generation_swaps_total",
    )
}

/// Waits (up to 30 s) until the server swapped `n` generations in.
fn wait_for_swaps(server: &Server, n: f64) {
    let started = Instant::now();
    while swaps(server) < n {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "generation {n} not served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds the index of the data directory's current catalog, as `pinnersage index build` does.
fn index_build(dir: &std::path::Path) {
    let catalog = Catalog::open(dir).unwrap();
    persist::build(dir, &catalog, &BuildOptions::default(), &()).unwrap();
}

#[test]
fn an_imported_catalog_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    // Online actions of u1 on i5 and i17, and an item added through the API.
    let body = events_body(&[
        event("u1", 5, NOW + 60, "e1"),
        event("u1", 17, NOW + 120, "e2"),
    ]);
    let (status, report) = server.post_json("/v1/events", &body);
    assert_eq!(status, 202, "{report}");
    let (status, _) = put(
        &server,
        json!([{"id": "early", "embedding": vec![0.5f32; DIM]}]),
    );
    assert_eq!(status, 202);

    // A new catalog: every item but i3, in reverse order (every row number changes), and z1
    // next to i5; then its index.
    let old = Catalog::open(dir.path()).unwrap();
    let near_i5: Vec<f32> = old
        .embedding(old.row_of("i5").unwrap())
        .iter()
        .enumerate()
        .map(|(d, x)| x + if d == 0 { 0.01 } else { 0.0 })
        .collect();
    let mut b = CatalogBuilder::new(dir.path(), DIM, true).unwrap();
    for row in (0..old.base_rows()).rev() {
        if old.id(row) != "i3" {
            b.push(old.id(row), &mut old.embedding(row).to_vec())
                .unwrap();
        }
    }
    b.push("z1", &mut near_i5.clone()).unwrap();
    b.commit("reimport").unwrap();
    drop(old);
    // Until its index is built, the server keeps serving the previous catalog.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(swaps(&server), 0.0);
    assert_eq!(server.get_json("/v1/items/i3/similar").0, 200);
    index_build(dir.path());
    wait_for_swaps(&server, 1.0);

    let similar = |path: &str| {
        let (status, body) = server.get_json(path);
        assert_eq!(status, 200, "{path}: {body}");
        ids(&body["items"])
    };
    assert_eq!(similar("/v1/items/i5/similar?k=3")[0], "z1");
    assert_eq!(similar("/v1/items/z1/similar?k=1"), ["i5"]);
    // Gone: i3 (not imported) and `early` (the import supersedes changes made before it).
    for gone in ["i3", "early"] {
        let (status, body) = server.get_json(&format!("/v1/items/{gone}/similar"));
        assert_eq!((status, error_code(&body)), (404, "unknown_item"), "{gone}");
    }
    // u1's online actions follow the new numbering: the same items, by id.
    let (status, profile) = server.get_json("/v1/users/u1/profile?members=50");
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["online_actions"], 2);
    let online_members: HashSet<&str> = profile["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["source"] != "batch")
        .flat_map(|c| c["members"].as_array().unwrap())
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        online_members.contains("i5") && online_members.contains("i17"),
        "{profile}"
    );
    // Recommendations, events and item changes go on over the new catalog.
    let (status, reco) = server.get_json("/v1/users/u1/recommendations?k=10");
    assert_eq!((status, &reco["fallback"]), (200, &json!(false)), "{reco}");
    let body = events_body(&[format!(
        r#"{{"user":"u1","item":"z1","ts":{},"action":"click","id":"e3"}}"#,
        NOW + 180
    )]);
    let (status, report) = server.post_json("/v1/events", &body);
    assert_eq!((status, &report["accepted"]), (202, &json!(1)), "{report}");
    let (_, profile) = server.get_json("/v1/users/u1/profile");
    assert_eq!(profile["online_actions"], 3);
    let (status, _) = put(&server, json!([{"id": "late", "embedding": near_i5}]));
    assert_eq!(status, 202);
    assert_eq!(similar("/v1/items/late/similar?k=1"), ["z1"]);
    let (status, _) = server.send("DELETE", "/v1/items/i10", b"");
    assert_eq!(status, 202);
    assert_eq!(server.get_json("/v1/items/i10/similar").0, 404);
}

#[test]
fn item_changes_and_requests_during_index_rebuilds_are_all_served() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    // The rebuilds here are the test's own: no automatic fold (its publish lock would refuse
    // them as Busy once the changes pass the fold fraction, which a fast writer reaches).
    let server = Server::start_with(
        dir.path(),
        ServeConfig {
            fold_fraction: 0.0,
            ..ServeConfig::default()
        },
    );
    let upserted: Mutex<Vec<String>> = Mutex::default();
    let deleted: Mutex<Vec<String>> = Mutex::default();
    let stop = AtomicBool::new(false);
    let (requests, failures) = (AtomicUsize::new(0), Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        // Stops the other threads however this one ends (a failed assertion must fail the
        // test, not leave them running forever).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        // A writer: an upsert a request, and every fourth a delete of an earlier upsert.
        s.spawn(|| {
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let v: Vec<f32> = (0..DIM).map(|d| ((k * 13 + d) as f32).sin()).collect();
                let id = format!("w{k}");
                let (status, body) = put(&server, json!([{"id": id, "embedding": v}]));
                assert_eq!(status, 202, "{body}");
                upserted.lock().unwrap().push(id);
                if k % 4 == 3 {
                    let gone = format!("w{}", k - 2);
                    let (status, body) = server.send("DELETE", &format!("/v1/items/{gone}"), b"");
                    assert_eq!(status, 202, "{body}");
                    deleted.lock().unwrap().push(gone);
                }
                k += 1;
            }
        });
        // Readers: recommendations and similar items, none may fail.
        for t in 0..2 {
            let (server, stop, requests, failures) = (&server, &stop, &requests, &failures);
            s.spawn(move || {
                let mut n = t;
                while !stop.load(Ordering::Relaxed) {
                    let path = if n % 2 == 0 {
                        format!("/v1/users/u{}/recommendations?k=20", n % 40)
                    } else {
                        format!("/v1/items/i{}/similar?k=20", (n * 7) % ITEMS)
                    };
                    let (status, body) = server.request("GET", &path);
                    if status != 200 {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {status} {body}"));
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    n += 2;
                }
            });
        }
        // Two index rebuilds of the catalog being changed, each swapped in while all goes on.
        for swap in 1..=2 {
            std::thread::sleep(Duration::from_millis(300));
            index_build(dir.path());
            wait_for_swaps(&server, f64::from(swap));
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let (upserted, deleted) = (
        upserted.into_inner().unwrap(),
        deleted.into_inner().unwrap(),
    );
    eprintln!(
        "{} requests, {} upserts, {} deletes across 2 swaps",
        requests.load(Ordering::Relaxed),
        upserted.len(),
        deleted.len()
    );
    assert!(upserted.len() > 20);
    // Every acknowledged change is served: upserts found, deletes gone.
    let deleted: HashSet<String> = deleted.into_iter().collect();
    for id in &upserted {
        let (status, body) = server.get_json(&format!("/v1/items/{id}/similar?k=1"));
        let expected = if deleted.contains(id) { 404 } else { 200 };
        assert_eq!(status, expected, "{id}: {body}");
    }
    // And journaled: a fresh catalog of the directory agrees.
    let catalog = Catalog::open(dir.path()).unwrap();
    for id in &upserted {
        assert_eq!(catalog.row_of(id).is_some(), !deleted.contains(id), "{id}");
    }
}

#[test]
fn a_folded_generation_is_served_with_its_medoid_cache_warm() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let config = ServeConfig {
        fold_fraction: 0.1, // 300 changes of the 3,000 items
        ..ServeConfig::default()
    };
    let server = Server::start_with(dir.path(), config);
    let misses = |server: &Server| {
        metric(
            &server.request("GET", "/metrics").1,
            "pinnersage_medoid_cache_misses_total",
        )
    };
    // Every medoid of 40 users: the same lookups each time.
    let recommend_all = |server: &Server| {
        for u in 0..40 {
            let (status, body) = server.get_json(&format!(
                "/v1/users/u{u}/recommendations?k=10&selection=all"
            ));
            assert_eq!(status, 200, "{body}");
        }
    };
    recommend_all(&server);
    assert!(misses(&server) > 0.0);
    // 320 new items: over the fold's threshold.
    for chunk in (0..320).collect::<Vec<usize>>().chunks(40) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|&k| {
                let vector: Vec<f32> = (0..DIM).map(|d| ((k * 31 + d) as f32).cos()).collect();
                json!({"id": format!("f{k}"), "embedding": vector})
            })
            .collect();
        let (status, body) = put(&server, Value::Array(items));
        assert_eq!(status, 202, "{body}");
    }
    wait_for_swaps(&server, 1.0);
    // The successor's cache counts its own lookups: its lists were made before it was served.
    let before = misses(&server);
    recommend_all(&server);
    assert_eq!(
        misses(&server),
        before,
        "lookups after the swap searched the graph again"
    );
}

#[test]
fn changes_are_folded_into_a_new_generation_and_the_journal_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let config = || ServeConfig {
        fold_fraction: 0.1, // 300 changes of the 3,000 items
        ..ServeConfig::default()
    };
    let server = Server::start_with(dir.path(), config());
    // A medoid of u0's profile (deleted, its vector stays for the profile) and an item no
    // profile points at (deleted, gone).
    let (_, profile) = server.get_json("/v1/users/u0/profile");
    let medoid = profile["clusters"][0]["medoid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, all) = server.get_json("/v1/items/i1/similar?k=1000");
    let medoids: HashSet<String> = (0..40)
        .flat_map(|u| {
            let (_, p) = server.get_json(&format!("/v1/users/u{u}/profile"));
            p["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["medoid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let unreferenced = ids(&all["items"])
        .into_iter()
        .find(|i| !medoids.contains(i))
        .unwrap();
    for gone in [&medoid, &unreferenced] {
        let (status, _) = server.send("DELETE", &format!("/v1/items/{gone}"), b"");
        assert_eq!(status, 202);
    }
    // 200 new items and 120 replaced: over the fold's threshold.
    let vector = |k: usize| -> Vec<f32> { (0..DIM).map(|d| ((k * 31 + d) as f32).cos()).collect() };
    let mut fresh = Vec::new();
    for chunk in (0..320).collect::<Vec<_>>().chunks(40) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|&k| {
                let id = if k < 200 {
                    format!("f{k}")
                } else {
                    format!("i{}", 2 * k)
                };
                fresh.push(id.clone());
                json!({"id": id, "embedding": vector(k)})
            })
            .collect();
        let (status, body) = put(&server, Value::Array(items));
        assert_eq!(status, 202, "{body}");
    }
    let journal_before = std::fs::metadata(pinnersage_catalog::journal::path(dir.path()))
        .unwrap()
        .len();
    wait_for_swaps(&server, 1.0);

    // The folded generation: the items, the referenced deleted medoid as a deleted row, no
    // replaced or unreferenced rows; the journal keeps only its last record.
    let catalog = Catalog::open(dir.path()).unwrap();
    assert_eq!(catalog.meta().deleted_rows, 1);
    assert_eq!(catalog.rows(), ITEMS - 2 + 200 + 1);
    assert_eq!(catalog.added_rows(), 0);
    assert_eq!(
        (catalog.row_of(&medoid), catalog.row_of(&unreferenced)),
        (None, None)
    );
    assert!(catalog.last_row_of(&medoid).is_some());
    let journal = pinnersage_catalog::journal::read(dir.path()).unwrap();
    assert_eq!(journal.len(), 1);
    let journal_after = std::fs::metadata(pinnersage_catalog::journal::path(dir.path()))
        .unwrap()
        .len();
    eprintln!("journal {journal_before} bytes before the fold, {journal_after} after");
    drop(catalog);

    let check = |server: &Server| {
        for id in &fresh {
            let (status, body) = server.get_json(&format!("/v1/items/{id}/similar?k=1"));
            assert_eq!(status, 200, "{id}: {body}");
        }
        for gone in [&medoid, &unreferenced] {
            assert_eq!(server.get_json(&format!("/v1/items/{gone}/similar")).0, 404);
        }
        // u0 keeps the interest of the deleted medoid (its vector), never gets the item.
        let (_, profile) = server.get_json("/v1/users/u0/profile");
        let interests: Vec<&str> = profile["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["medoid"].as_str().unwrap())
            .collect();
        assert!(interests.contains(&medoid.as_str()), "{profile}");
        let (_, reco) = server.get_json("/v1/users/u0/recommendations?k=50&selection=all");
        assert_eq!(reco["fallback"], false);
        assert!(!ids(&reco["items"]).contains(&medoid));
    };
    check(&server);
    // Changes go on after the fold, and all of it survives a restart.
    let (status, _) = put(&server, json!([{"id": "after", "embedding": vector(999)}]));
    assert_eq!(status, 202);
    drop(server);
    let server = Server::start_with(dir.path(), config());
    check(&server);
    assert_eq!(server.get_json("/v1/items/after/similar?k=1").0, 200);
}

/// A replaced engine (its catalog, index and cache) is freed once nothing uses it, in a server
/// answering requests: memory does not grow with the number of generations served.
#[test]
fn a_replaced_engine_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = pinnersage_server::Server::open(
        dir.path(),
        ServeConfig {
            reload: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .unwrap();
    let serving = server.serving().clone();
    let first = std::sync::Arc::downgrade(&serving.engine());
    let server = Server::run(server);
    let get = |path: &str| server.request("GET", path);
    for u in 0..20 {
        assert_eq!(get(&format!("/v1/users/u{u}/recommendations")).0, 200);
    }
    get("/metrics");
    index_build(dir.path());
    let started = Instant::now();
    while serving.swaps() == 0 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for u in 0..20 {
        assert_eq!(get(&format!("/v1/users/u{u}/recommendations")).0, 200);
    }
    get("/metrics");
    // Requests and the server's own threads let go of it within moments.
    let started = Instant::now();
    while first.upgrade().is_some() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let alive = first
        .upgrade()
        .map(|e| std::sync::Arc::strong_count(&e) - 1);
    drop(server);
    assert_eq!(alive, None, "the replaced engine is still held");
}
