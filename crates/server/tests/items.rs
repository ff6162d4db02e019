//! The catalog while serving, over real HTTP against a real server (HNSW index, event store,
//! batch profiles): items upserted, replaced and deleted are served at once by every path, bad
//! changes are refused whole, and the graph catches up off the request path.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use pinnersage_catalog::catalog::Catalog;
use serde_json::{Value, json};

/// The vector of item `i` of the test catalog (read from its data directory).
fn vector_of(dir: &std::path::Path, i: usize) -> Vec<f32> {
    Catalog::open(dir).unwrap().embedding(i).to_vec()
}

fn put(server: &Server, items: Value) -> (u16, Value) {
    server.post_json("/v1/items", &json!({ "items": items }).to_string())
}

fn similar(server: &Server, path: &str) -> Vec<String> {
    let (status, body) = server.get_json(path);
    assert_eq!(status, 200, "{path}: {body}");
    ids(&body["items"])
}

#[test]
fn upserted_replaced_and_deleted_items_are_served_at_once() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let near_i5: Vec<f32> = vector_of(dir.path(), 5)
        .iter()
        .enumerate()
        .map(|(d, x)| x + if d == 0 { 0.01 } else { 0.0 })
        .collect();
    let server = Server::start(dir.path());

    // A new item placed next to i5, with an attribute no item had: similar to i5 at once, and
    // filterable at once.
    let (status, body) = put(
        &server,
        json!([{"id": "fresh", "embedding": near_i5, "attributes": {"colour": "purple", "title": "Fresh"}}]),
    );
    assert_eq!((status, &body["upserted"]), (202, &json!(1)), "{body}");
    assert_eq!(similar(&server, "/v1/items/i5/similar?k=3")[0], "fresh");
    assert_eq!(
        similar(&server, "/v1/items/i5/similar?k=5&filter=colour:purple"),
        ["fresh"]
    );
    assert_eq!(similar(&server, "/v1/items/fresh/similar?k=1"), ["i5"]);
    let (_, sim) = server.get_json("/v1/items/i5/similar?k=1");
    assert_eq!(sim["items"][0]["attributes"]["title"], "Fresh");

    // Attributes alone: i6 keeps its vector and takes the new attributes.
    let before = similar(&server, "/v1/items/i6/similar?k=5");
    let (status, _) = put(
        &server,
        json!([{"id": "i6", "attributes": {"colour": "purple"}}]),
    );
    assert_eq!(status, 202);
    assert_eq!(similar(&server, "/v1/items/i6/similar?k=5"), before);
    let purple = similar(&server, "/v1/items/i5/similar?k=5&filter=colour:purple");
    assert_eq!(purple, ["fresh", "i6"]);
    assert!(
        !similar(&server, "/v1/items/i5/similar?k=50&filter=!colour:purple")
            .contains(&"i6".to_owned())
    );

    // A new vector for i7 (a topic away from i5): similar to i5 now, keeping its title.
    assert!(!similar(&server, "/v1/items/i5/similar?k=10").contains(&"i7".to_owned()));
    let (status, _) = put(
        &server,
        json!([{"id": "i7", "embedding": vector_of(dir.path(), 5)}]),
    );
    assert_eq!(status, 202);
    let top = similar(&server, "/v1/items/i5/similar?k=2");
    assert!(top.contains(&"i7".to_owned()), "{top:?}");
    let (_, sim) = server.get_json("/v1/items/i7/similar?k=1");
    assert_eq!(sim["items"][0]["item"], "i5");
    let (_, sim) = server.get_json("/v1/items/i5/similar?k=3");
    let i7 = sim["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["item"] == "i7")
        .unwrap();
    assert_eq!(i7["attributes"]["title"], "Item 7");

    // Deleted: gone from similar (from the cache too), from filters, and unknown as a query.
    let (status, body) = server.send("DELETE", "/v1/items/fresh", b"");
    assert_eq!(status, 202, "{body}");
    assert!(!similar(&server, "/v1/items/i5/similar?k=10").contains(&"fresh".to_owned()));
    assert_eq!(
        similar(&server, "/v1/items/i5/similar?k=5&filter=colour:purple"),
        ["i6"]
    );
    let (status, body) = server.get_json("/v1/items/fresh/similar");
    assert_eq!((status, error_code(&body)), (404, "unknown_item"));
    // Deleting it again: 404, nothing changed.
    let (status, body) = server.send("DELETE", "/v1/items/fresh", b"");
    assert_eq!(status, 404, "{body}");

    // The popular fallback (a user without a profile) never returns a deleted item.
    let (_, fallback) = server.get_json("/v1/users/nobody/recommendations?k=5");
    assert_eq!(fallback["fallback"], true);
    let top_popular = ids(&fallback["items"])[0].clone();
    let (status, body) = server.post_json(
        "/v1/items/delete",
        &json!({"ids": [top_popular]}).to_string(),
    );
    assert_eq!((status, &body["deleted"]), (202, &json!(1)), "{body}");
    let (_, fallback) = server.get_json("/v1/users/nobody/recommendations?k=50");
    assert!(!ids(&fallback["items"]).contains(&top_popular));

    // The graph catches up off the request path; the metrics say how far.
    let metrics = (0..100)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            server.request("GET", "/metrics").1
        })
        .find(|m| metric(m, "pinnersage_index_backlog") == 0.0)
        .expect("the graph catches up");
    assert_eq!(metric(&metrics, "pinnersage_catalog_rows_added"), 3.0);
    // Replaced i6 and i7, deleted fresh and the popular item.
    assert_eq!(metric(&metrics, "pinnersage_catalog_rows_deleted"), 4.0);
    assert_eq!(
        metric(&metrics, "pinnersage_catalog_items"),
        (ITEMS - 1) as f64
    );
}

#[test]
fn deleted_items_never_come_back_over_10000_mixed_requests_while_items_change() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    // The items users are recommended: the ones worth deleting.
    let mut recommended = Vec::new();
    for u in 0..40 {
        let (_, body) = server.get_json(&format!("/v1/users/u{u}/recommendations?k=20"));
        recommended.extend(ids(&body["items"]));
    }
    recommended.sort();
    recommended.dedup();
    let deleted: Mutex<HashSet<String>> = Mutex::default();
    let done = AtomicBool::new(false);
    let requests = std::thread::scope(|s| {
        // A writer deletes recommended items and upserts new ones near existing items.
        s.spawn(|| {
            for (n, item) in recommended.iter().take(150).enumerate() {
                let (status, body) =
                    server.post_json("/v1/items/delete", &json!({"ids": [item]}).to_string());
                assert_eq!(status, 202, "{body}");
                deleted.lock().unwrap().insert(item.clone());
                let v: Vec<f32> = (0..DIM).map(|d| ((n * 7 + d) as f32).sin()).collect();
                let (status, _) = put(&server, json!([{"id": format!("new{n}"), "embedding": v}]));
                assert_eq!(status, 202);
            }
            done.store(true, Ordering::Relaxed);
        });
        let mut requests = 0;
        while requests < 10_000 {
            // Only deletions acknowledged before the request was sent must be absent.
            let gone = deleted.lock().unwrap().clone();
            let path = match requests % 5 {
                0 => format!("/v1/users/u{}/recommendations?k=20", requests % 40),
                1 => format!(
                    "/v1/users/u{}/recommendations?k=10&filter=title~Item",
                    requests % 40
                ),
                2 => format!("/v1/items/i{}/similar?k=20", (requests * 7) % ITEMS),
                3 => format!(
                    "/v1/items/i{}/similar?k=10&filter=title~1",
                    (requests * 11) % ITEMS
                ),
                _ => "/v1/users/nobody/recommendations?k=30".to_owned(),
            };
            let (status, body) = server.get_json(&path);
            if status == 404 && body["error"]["code"] == "unknown_item" {
                requests += 1;
                continue; // the query item itself was deleted
            }
            assert_eq!(status, 200, "{path}: {body}");
            for item in ids(&body["items"]) {
                assert!(!gone.contains(&item), "{path} returned deleted {item}");
            }
            requests += 1;
        }
        requests
    });
    assert!(done.load(Ordering::Relaxed));
    assert_eq!(requests, 10_000);
}

#[test]
fn bad_changes_are_refused_whole_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    let good = json!({"id": "ok1", "embedding": vec![0.5f32; DIM]});
    let long_id = "x".repeat(1025);
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!([good, {"id": "b", "embedding": [1.0, 2.0]}]),
            400,
            "items[1] (\"b\"): `embedding` has 2 values, expected 16",
        ),
        (
            json!([{"id": "b", "embedding": vec![1e39f64; DIM]}]),
            400,
            "`embedding` value 0 is not finite",
        ),
        (
            json!([{"id": "b", "embedding": vec![0.0f32; DIM]}]),
            400,
            "zero length",
        ),
        (
            json!([{"id": "b", "embedding": vec![1.0f32; DIM], "attributes": {"price": {"eur": 3}}}]),
            400,
            "attribute `price` is an object",
        ),
        (
            json!([{"id": "b", "embedding": vec![1.0f32; DIM], "attributes": ["x"]}]),
            400,
            "must be a JSON object",
        ),
        (
            json!([good, {"id": "", "embedding": vec![1.0f32; DIM]}]),
            400,
            "items[1] (\"\"): `id` is empty",
        ),
        (
            json!([{"id": long_id, "embedding": vec![1.0f32; DIM]}]),
            400,
            "longer than 1024 bytes",
        ),
        (
            json!([{"id": "b"}]),
            400,
            "needs `embedding`, `attributes` or both",
        ),
        (
            json!([good, {"id": "nope", "attributes": {"a": 1}}]),
            404,
            "items[1] (\"nope\"): item \"nope\" is not in the catalog: a new item needs an `embedding`",
        ),
        (
            json!([{"id": "b", "embedding": vec![1.0f32; DIM], "colour": "red"}]),
            400,
            "unknown field `colour`",
        ),
        (json!([]), 400, "names no item"),
    ];
    for (items, status, message) in cases {
        let (got, body) = put(&server, items.clone());
        assert_eq!(got, status, "{items}: {body}");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{message:?} not in {text:?}");
    }
    let (status, body) = server.send(
        "POST",
        "/v1/items",
        br#"{"items":[{"id":"b","embedding":[NaN]}]}"#,
    );
    assert_eq!(status, 400, "{body}");
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"id": format!("m{i}"), "attributes": {}}))
        .collect();
    let (status, body) = put(&server, Value::Array(many));
    assert_eq!((status, error_code(&body)), (413, "too_many_items"));
    let (status, body) = server.post_json("/v1/items/delete", r#"{"ids":["i1","no-such-item"]}"#);
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("items[1] (\"no-such-item\")")
    );
    let (status, _) = server.send_with(
        "POST",
        "/v1/items",
        &format!("Host: {}\r\nContent-Type: text/plain\r\n", server.addr),
        br#"{"items":[]}"#,
    );
    assert_eq!(status, 415);

    // Nothing of any refused request was applied or journaled.
    let (_, metrics) = server.request("GET", "/metrics");
    assert_eq!(metric(&metrics, "pinnersage_catalog_journal_seq"), 0.0);
    assert_eq!(metric(&metrics, "pinnersage_catalog_rows_added"), 0.0);
    let (status, _) = server.get_json("/v1/items/ok1/similar");
    assert_eq!(status, 404);
    assert_eq!(similar(&server, "/v1/items/i1/similar?k=1").len(), 1);
    drop(server);
    assert!(
        pinnersage_catalog::journal::read(dir.path())
            .unwrap()
            .is_empty()
    );
}

/// Recall@10 of `similar` over HTTP against an exact scan of the live catalog (deleted rows
/// left out), for `queries` items.
fn live_recall(server: &Server, dir: &std::path::Path, queries: &[usize]) -> f64 {
    let catalog = Catalog::open(dir).unwrap();
    let (mut found, mut total) = (0, 0);
    for &i in queries {
        let id = format!("i{i}");
        let row = catalog.row_of(&id).unwrap();
        let q = catalog.embedding(row);
        let mut scored: Vec<(f32, usize)> = (0..catalog.rows())
            .filter(|&r| r != row && !catalog.is_deleted(r))
            .map(|r| (-pinnersage_core::scan::dot(q, catalog.embedding(r)), r))
            .collect();
        scored.select_nth_unstable_by(10, |a, b| a.0.total_cmp(&b.0));
        let truth: HashSet<&str> = scored[..10].iter().map(|&(_, r)| catalog.id(r)).collect();
        let got = similar(server, &format!("/v1/items/{id}/similar?k=10"));
        found += got.iter().filter(|g| truth.contains(g.as_str())).count();
        total += 10;
    }
    found as f64 / total as f64
}

#[test]
fn recall_stays_after_replacing_a_fifth_of_100k_items_through_the_api() {
    use pinnersage_catalog::catalog::CatalogBuilder;
    use pinnersage_core::sample::SplitMix64;
    use pinnersage_index::persist::{self, BuildOptions};
    const N: usize = 100_000;
    const D: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix64::new(21);
    let mut gauss = move || {
        let (u, v) = (rng.next_f64().max(1e-12), rng.next_f64());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let centres: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..D).map(|_| gauss()).collect())
        .collect();
    let mut item = |i: usize| -> Vec<f32> {
        centres[i % 200]
            .iter()
            .map(|&c| c + 1.2 * gauss())
            .collect()
    };
    let mut b = CatalogBuilder::new(dir.path(), D, true).unwrap();
    for i in 0..N {
        b.push(&format!("i{i}"), &mut item(i)).unwrap();
    }
    b.commit("test").unwrap();
    let catalog = Catalog::open(dir.path()).unwrap();
    persist::build(dir.path(), &catalog, &BuildOptions::default(), &()).unwrap();
    drop(catalog);
    let server = Server::start(dir.path());
    let queries: Vec<usize> = (0..N).step_by(N / 200).map(|i| i + 1).collect();
    let before = live_recall(&server, dir.path(), &queries);
    // Cached now, looked up again only once the graph holds the new rows: brought up to them
    // through the graph's links (a fifth of the catalog added since, more than are compared one
    // by one, fewer than make a list searched again).
    let linked_queries: Vec<usize> = (0..N).step_by(N / 200).map(|i| i + 2).collect();
    let linked_before = live_recall(&server, dir.path(), &linked_queries);

    // Replace every fifth item with a new vector (of another cluster), 1,000 per request.
    for chunk in (0..N).step_by(5).collect::<Vec<_>>().chunks(1_000) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|&i| json!({"id": format!("i{i}"), "embedding": item(i + 7)}))
            .collect();
        let (status, body) = put(&server, Value::Array(items));
        assert_eq!(status, 202, "{body}");
    }
    // At once (the graph still catching up: the rest is scanned) and once the graph holds all.
    let at_once = live_recall(&server, dir.path(), &queries);
    let caught_up = (0..600)
        .find(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            metric(
                &server.request("GET", "/metrics").1,
                "pinnersage_index_backlog",
            ) == 0.0
        })
        .is_some();
    assert!(caught_up, "the graph caught up within a minute");
    let after = live_recall(&server, dir.path(), &queries);
    let linked = live_recall(&server, dir.path(), &linked_queries);
    // A fifth of the items changed: the server folds the changes into a new generation and
    // its index (default fold fraction) and serves them.
    let folded = (0..1200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        metric(
            &server.request("GET", "/metrics").1,
            "pinnersage_generation_swaps_total",
        ) >= 1.0
    });
    assert!(folded, "the changes were folded within two minutes");
    assert_eq!(Catalog::open(dir.path()).unwrap().rows(), N);
    let refolded = live_recall(&server, dir.path(), &queries);
    eprintln!(
        "recall@10 of similar: {before:.3} before, {at_once:.3} at once, {after:.3} caught up, \
         {refolded:.3} after the fold; lists brought up through the graph's links: \
         {linked_before:.3} before, {linked:.3} after"
    );
    assert!(before >= 0.95 && at_once >= 0.95 && after >= 0.95 && refolded >= 0.95);
    assert!(linked_before >= 0.95 && linked >= 0.95);
}

/// `send_items` splits a file into requests by count and by the server's body limit: 50 items
/// with 100 KB of attributes each (5 MB) go in two requests, not one refused with 413.
#[test]
fn item_files_are_sent_in_requests_within_the_body_limit() {
    use pinnersage_server::client::Conn;
    use pinnersage_server::remote_items::{ItemsAction, send_items};
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    let long = "x".repeat(100_000);
    let lines: Vec<String> = (0..50)
        .map(|k| {
            let v: Vec<f32> = (0..DIM).map(|d| ((k * 3 + d) as f32).sin()).collect();
            json!({"id": format!("big{k}"), "embedding": v, "attributes": {"text": long}})
                .to_string()
        })
        .collect();
    let file = dir.path().join("big.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mut conn = Conn::open(server.addr).unwrap();
    let sent = send_items(&mut conn, ItemsAction::Put, &file, 1_000, &()).unwrap();
    assert_eq!((sent.upserted, sent.requests), (50, 2));
    assert_eq!(similar(&server, "/v1/items/big49/similar?k=1").len(), 1);
}

/// `insert_ef` reaches the served graph: an impossible one stops the server at open, naming it.
#[test]
fn the_insert_ef_is_checked_when_the_index_opens() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let config = pinnersage_server::ServeConfig {
        insert_ef: Some(5_000),
        ..pinnersage_server::ServeConfig::default()
    };
    let err = pinnersage_server::Server::open(dir.path(), config)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("insert ef must be in 1..=4096"),
        "{err}"
    );
    let config = pinnersage_server::ServeConfig {
        insert_ef: Some(32),
        ..pinnersage_server::ServeConfig::default()
    };
    assert!(pinnersage_server::Server::open(dir.path(), config).is_ok());
}
