//! The real server on an ephemeral port, over real HTTP, on a real data directory (catalog,
//! event store, batch profiles, persisted HNSW index).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use pinnersage_catalog::catalog::Catalog;
use pinnersage_server::ServeConfig;
use pinnersage_store::events::EventStore;
use serde_json::Value;

mod common;
use common::*;

#[test]
fn every_endpoint_over_http() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());

    let (status, health) = server.get_json("/healthz");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["index"]["items"], ITEMS);
    assert_eq!(health["profiles"], "gen-000001");

    // Profile: clusters by importance with members.
    let (status, profile) = server.get_json("/v1/users/u3/profile");
    assert_eq!(status, 200, "{profile}");
    let clusters = profile["clusters"].as_array().unwrap();
    assert!(clusters.len() >= 2, "{profile}");
    let importances: Vec<f64> = clusters
        .iter()
        .map(|c| c["importance"].as_f64().unwrap())
        .collect();
    assert!(
        importances.windows(2).all(|w| w[0] >= w[1]),
        "{importances:?}"
    );
    let seen: Vec<String> = clusters
        .iter()
        .flat_map(|c| {
            c["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_owned())
        })
        .collect();
    assert!(!seen.is_empty());

    // Recommendations: k results, from the sampled medoids, none seen, none a medoid, stable.
    let (status, reco) = server.get_json("/v1/users/u3/recommendations?k=30");
    assert_eq!(status, 200, "{reco}");
    assert_eq!(reco["fallback"], false);
    assert_eq!(reco["user"], "u3");
    let items = ids(&reco["items"]);
    assert_eq!(items.len(), 30);
    let medoids = ids(&reco["medoids"]);
    assert_eq!(medoids.len(), 3.min(clusters.len()));
    let mut unique = items.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 30, "no duplicates");
    for r in reco["items"].as_array().unwrap() {
        let item = r["item"].as_str().unwrap();
        assert!(medoids.contains(&r["medoid"].as_str().unwrap().to_owned()));
        assert!(
            !medoids.contains(&item.to_owned()),
            "a medoid is never recommended"
        );
        assert!(!seen.contains(&item.to_owned()), "{item} was seen");
        assert!(
            r["score"].as_f64().unwrap() > 0.5,
            "neighbours of the same topic"
        );
    }
    let (_, again) = server.get_json("/v1/users/u3/recommendations?k=30");
    assert_eq!(content(&again), content(&reco), "stable within a day");
    let (_, fewer) = server.get_json("/v1/users/u3/recommendations?k=5&medoids=1");
    assert_eq!(ids(&fewer["items"]).len(), 5);
    assert_eq!(ids(&fewer["medoids"]).len(), 1);
    // Selection and blend: the most important medoids, every interest, importance turns.
    let medoid_of = |c: &Value| c["medoid"].as_str().unwrap().to_owned();
    let (_, top) = server.get_json("/v1/users/u3/recommendations?k=20&medoids=2&selection=top");
    let top_two: Vec<String> = clusters.iter().take(2).map(medoid_of).collect();
    assert_eq!(ids(&top["medoids"]), top_two, "{top}");
    let (_, all) = server.get_json("/v1/users/u3/recommendations?k=40&selection=all");
    let mut every: Vec<String> = clusters.iter().map(medoid_of).collect();
    let mut got = ids(&all["medoids"]);
    every.sort();
    got.sort();
    assert_eq!(got, every);
    let (_, weighted) =
        server.get_json("/v1/users/u3/recommendations?k=40&selection=all&blend=importance");
    let from = |reco: &Value, medoid: &str| {
        reco["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["medoid"] == medoid)
            .count()
    };
    assert_eq!(ids(&weighted["items"]).len(), 40);
    // Each medoid supplies its importance's share of the 40 (within rounding and duplicates).
    let shown = weighted["medoids"].as_array().unwrap();
    let total: f64 = shown
        .iter()
        .map(|m| m["importance"].as_f64().unwrap())
        .sum();
    for m in shown {
        let share = 40.0 * m["importance"].as_f64().unwrap() / total;
        let got = from(&weighted, m["item"].as_str().unwrap()) as f64;
        assert!(
            (got - share).abs() <= 2.0,
            "{got} vs {share:.1}: {weighted}"
        );
    }
    // Score-merged: one ranking by importance-weighted rank fusion, led by the most important
    // interest's nearest item, every item once.
    let (status, fused) =
        server.get_json("/v1/users/u3/recommendations?k=40&selection=all&blend=score");
    assert_eq!(status, 200, "{fused}");
    let fused_ids = ids(&fused["items"]);
    assert_eq!(fused_ids.len(), 40);
    let distinct: std::collections::HashSet<&String> = fused_ids.iter().collect();
    assert_eq!(distinct.len(), 40);
    assert_eq!(
        fused["items"][0]["medoid"],
        medoid_of(&clusters[0]),
        "{fused}"
    );
    let (status, bad) = server.get_json("/v1/users/u3/recommendations?blend=softmax");
    assert_eq!(status, 400, "{bad}");
    // The global interest supplies its share, with no medoid named.
    let (status, global) = server.get_json("/v1/users/u3/recommendations?k=40&global=0.5");
    assert_eq!(status, 200, "{global}");
    let items = global["items"].as_array().unwrap();
    let unnamed = items.iter().filter(|r| r["medoid"].is_null()).count();
    assert_eq!(items.len(), 40);
    assert!((18..=22).contains(&unnamed), "{unnamed} of 40: {global}");
    assert!(
        items
            .iter()
            .all(|r| !seen.contains(&r["item"].as_str().unwrap().to_owned()))
    );

    // The global interest is the decay average of the user's items (the batch stores each
    // item's importance): with global=1 every result is its neighbour. Computed here from the
    // events make_data_dir wrote for u3, and compared with the medoids' weighted mean.
    let catalog = Catalog::open(dir.path()).unwrap();
    let u = 3usize;
    let topics = [u % TOPICS, (u * 5 + 1) % TOPICS, (u * 7 + 3) % TOPICS];
    let mut decay_avg = vec![0.0f64; DIM];
    let mut engaged = std::collections::HashSet::new();
    for e in 0..30usize {
        let topic = topics[e % (2 + u % 2)];
        let item = topic + TOPICS * ((u * 31 + e * 17) % (ITEMS / TOPICS));
        let row = catalog.row_of(&format!("i{item}")).unwrap();
        let w = (-0.01 * (e as f64 * 7.0 * 3_600.0) / 86_400.0).exp();
        for (a, &x) in decay_avg.iter_mut().zip(catalog.embedding(row)) {
            *a += w * f64::from(x);
        }
        engaged.insert(row);
    }
    let mut medoid_avg = vec![0.0f64; DIM];
    for c in clusters {
        let row = catalog.row_of(c["medoid"].as_str().unwrap()).unwrap();
        let w = c["importance"].as_f64().unwrap();
        for (a, &x) in medoid_avg.iter_mut().zip(catalog.embedding(row)) {
            *a += w * f64::from(x);
        }
    }
    let exact_top = |q: &[f64]| -> std::collections::HashSet<String> {
        let mut scored: Vec<(f64, usize)> = (0..catalog.rows())
            .filter(|r| !engaged.contains(r))
            .map(|r| {
                let dot: f64 = q
                    .iter()
                    .zip(catalog.embedding(r))
                    .map(|(a, &b)| a * f64::from(b))
                    .sum();
                (dot, r)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .iter()
            .take(10)
            .map(|&(_, r)| catalog.id(r).to_owned())
            .collect()
    };
    let (status, global_only) = server.get_json("/v1/users/u3/recommendations?k=10&global=1");
    assert_eq!(status, 200, "{global_only}");
    let served: std::collections::HashSet<String> =
        ids(&global_only["items"]).into_iter().collect();
    let near_decay = served.intersection(&exact_top(&decay_avg)).count();
    let near_medoids = served.intersection(&exact_top(&medoid_avg)).count();
    assert!(
        near_decay >= 9 && near_decay > near_medoids,
        "{near_decay} of 10 near the decay average, {near_medoids} near the medoids' mean"
    );

    // Fallback: most engaged items, marked.
    let (status, fb) = server.get_json("/v1/users/stranger/recommendations?k=4");
    assert_eq!(status, 200);
    assert_eq!(fb["fallback"], true);
    assert_eq!(ids(&fb["items"]).len(), 4);
    assert!(fb["items"][0]["medoid"].is_null());
    let counts: Vec<f64> = fb["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["score"].as_f64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]) && counts[0] >= 1.0,
        "{counts:?}"
    );

    // Similar items.
    let (status, sim) = server.get_json("/v1/items/i5/similar?k=7");
    assert_eq!(status, 200);
    let s = ids(&sim["items"]);
    assert_eq!(s.len(), 7);
    assert!(!s.contains(&"i5".to_string()));
    let same_topic = s
        .iter()
        .filter(|id| id[1..].parse::<usize>().unwrap() % TOPICS == 5)
        .count();
    assert!(same_topic >= 6, "{s:?}");

    // Errors: JSON, 4xx, specific codes.
    for (path, status, code) in [
        ("/v1/users/u3/recommendations?k=0", 400, "bad_request"),
        ("/v1/users/u3/recommendations?k=1001", 400, "bad_request"),
        ("/v1/users/u3/recommendations?k=abc", 400, "bad_query"),
        ("/v1/users/u3/recommendations?medoids=0", 400, "bad_request"),
        (
            "/v1/users/u3/recommendations?selection=best",
            400,
            "bad_request",
        ),
        ("/v1/users/u3/recommendations?blend=mix", 400, "bad_request"),
        (
            "/v1/users/u3/recommendations?global=1.5",
            400,
            "bad_request",
        ),
        (
            "/v1/users/u3/recommendations?exclude_seen=maybe",
            400,
            "bad_query",
        ),
        ("/v1/users/nobody/profile", 404, "no_profile"),
        ("/v1/items/no-such-item/similar", 404, "unknown_item"),
        ("/v1/items/i5/similar?k=100000", 400, "bad_request"),
        ("/v2/whatever", 404, "not_found"),
    ] {
        let (got, body) = server.get_json(path);
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(error_code(&body), code, "{path}");
    }
    let (status, body) = server.request("POST", "/healthz");
    assert_eq!(status, 405, "{body}");

    // OpenAPI lists every route.
    let (status, spec) = server.get_json("/openapi.json");
    assert_eq!(status, 200);
    for path in [
        "/v1/users/{user}/recommendations",
        "/v1/users/{user}/profile",
        "/v1/items/{item}/similar",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/events",
        "/v1/admin/batch",
        "/v1/admin/experiments",
        "/v1/items",
        "/v1/items/delete",
        "/v1/items/{item}",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from the spec"
        );
    }

    // Metrics: request counters, latency histograms, index size, cache counters.
    let (status, text) = server.request("GET", "/metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains(
            "pinnersage_http_requests_total{route=\"recommendations\",status=\"200\"} 10"
        ),
        "{text}"
    );
    assert!(
        text.contains("pinnersage_http_requests_total{route=\"recommendations\",status=\"400\"} 9")
    );
    assert!(text.contains("pinnersage_http_request_duration_seconds_count{route=\"similar\"}"));
    assert!(text.contains(&format!("pinnersage_index_items {ITEMS}")));
    assert!(text.contains("pinnersage_medoid_cache_hits_total"));

    // Filters on the catalog's attributes, inside the search; a bad one is a 400 naming it.
    for path in [
        "/v1/items/i5/similar?k=5&filter=title~Item%201",
        "/v1/users/u1/recommendations?k=5&filter=title~Item%201&filter=!title:Item%2010",
    ] {
        let (status, body) = server.get_json(path);
        assert_eq!(status, 200, "{path}: {body}");
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 5, "{path}: {body}");
        for item in items {
            let title = item["attributes"]["title"].as_str().unwrap();
            assert!(
                title.contains("Item 1") && title != "Item 10",
                "{path}: {title}"
            );
        }
    }
    let (status, body) = server.get_json("/v1/items/i5/similar?filter=colour:red");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown attribute \"colour\""),
        "{body}"
    );
    let (_, text) = server.request("GET", "/metrics");
    assert!(
        text.contains("pinnersage_filtered_searches_total"),
        "{text}"
    );
}

#[test]
fn medoid_cache_is_shared_restart_serves_the_persisted_index_and_new_batches_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let first_answer;
    {
        let server = Server::start(dir.path());
        let (_, reco) = server.get_json("/v1/users/u7/recommendations?k=20");
        first_answer = reco;
        let (_, text) = server.request("GET", "/metrics");
        let (hits, misses) = (
            metric(&text, "pinnersage_medoid_cache_hits_total"),
            metric(&text, "pinnersage_medoid_cache_misses_total"),
        );
        assert_eq!(
            misses,
            first_answer["medoids"].as_array().unwrap().len() as f64
        );
        // The same request again runs no ANN search.
        server.get_json("/v1/users/u7/recommendations?k=20");
        let (_, text) = server.request("GET", "/metrics");
        assert_eq!(
            metric(&text, "pinnersage_medoid_cache_misses_total"),
            misses
        );
        assert_eq!(
            metric(&text, "pinnersage_medoid_cache_hits_total"),
            hits + misses
        );
        // Every user: many share medoids, so hits grow faster than misses.
        for u in 0..40 {
            server.get_json(&format!("/v1/users/u{u}/recommendations?k=20"));
        }
        let (_, text) = server.request("GET", "/metrics");
        let (h, m) = (
            metric(&text, "pinnersage_medoid_cache_hits_total"),
            metric(&text, "pinnersage_medoid_cache_misses_total"),
        );
        assert!(h > 0.0 && m > 0.0 && h + m >= 40.0 * 2.0, "{h} {m}");
    }
    // A restart memory-maps the same index file and answers the same.
    let server = Server::start(dir.path());
    let (_, reco) = server.get_json("/v1/users/u7/recommendations?k=20");
    assert_eq!(content(&reco), content(&first_answer));

    // A new batch generation (run by the server, which owns the event store) is served without
    // a restart.
    let (status, summary) =
        server.post_json("/v1/admin/batch", &format!("{{\"now\": {}}}", NOW + 86_400));
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["generation"], "gen-000002");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, health) = server.get_json("/healthz");
        if health["profiles"] == "gen-000002" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new generation not picked up: {health}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = server.get_json("/v1/users/u7/profile");
    assert_eq!(status, 200);
}

/// Six events of `user` on six different items of topic 7, a minute after the batch; event ids
/// `{id}0`..`{id}5`.
fn topic_7_events(user: &str, id: &str) -> Vec<String> {
    (0..6)
        .map(|k| {
            event(
                user,
                7 + 12 * (k + 40),
                NOW + 60 + k as i64,
                &format!("{id}{k}"),
            )
        })
        .collect()
}

fn clusters(profile: &Value) -> &Vec<Value> {
    profile["clusters"].as_array().unwrap()
}

#[test]
fn posted_events_are_validated_one_by_one_stored_once_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let t = NOW + 600; // after the batch: online
    {
        let server = Server::start(dir.path());
        let body = format!(
            r#"{{"events":[
                {},
                {{"user":"newbie","item":"i7","ts":"2023-11-14T22:23:20Z"}},
                {{"user":"newbie","item":"nope","ts":{t}}},
                {{"user":"newbie","item":"i8","ts":-5}},
                {{"user":"newbie","item":"i8","ts":99999999999}},
                {{"user":"newbie","item":"i8"}},
                {{"user":["x"],"item":"i8","ts":{t}}},
                {{"user":"","item":"i8","ts":{t}}},
                {{"user":42,"item":"i19","ts":{t},"weight":2.5}},
                "not an object",
                {{"user":"newbie","item":"i9","ts":"yesterday"}}
            ]}}"#,
            event("newbie", 31, t, "e1")
        );
        let (status, report) = server.post_json("/v1/events", &body);
        assert_eq!(status, 202, "{report}");
        assert_eq!(report["accepted"], 3, "{report}");
        assert_eq!(report["duplicates"], 0);
        let rejected: Vec<(u64, &str)> = report["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap()))
            .collect();
        assert_eq!(
            rejected,
            vec![
                (2, "unknown_item"),
                (3, "bad_timestamp"),
                (4, "future_timestamp"),
                (5, "bad_event"),
                (6, "bad_event"),
                (7, "bad_event"),
                (9, "bad_event"),
                (10, "bad_timestamp"),
            ]
        );
        let messages = report["rejected"].to_string();
        assert!(
            messages.contains("item \\\"nope\\\" is not in the catalog"),
            "{messages}"
        );
        assert!(messages.contains("missing field `ts`"), "{messages}");

        // A retry of the same events is acknowledged and not counted again.
        let (status, again) = server.post_json("/v1/events", &body);
        assert_eq!(status, 202);
        assert_eq!(
            (again["accepted"].as_u64(), again["duplicates"].as_u64()),
            (Some(0), Some(3))
        );

        // Whole-request errors: JSON errors with a 4xx, the server keeps serving.
        for (body, status, code) in [
            ("{not json".to_owned(), 400, "bad_body"),
            (r#"{"events":[]}"#.to_owned(), 400, "bad_body"),
            (r#"{"evnts":[]}"#.to_owned(), 400, "bad_body"),
            (r#"[1,2]"#.to_owned(), 400, "bad_body"),
            (
                events_body(&vec![event("x", 1, t, "z"); 10_001]),
                413,
                "too_many_events",
            ),
            (" ".repeat(5 << 20), 413, "body_too_large"),
            (
                events_body(&[r#"{"user":"x","item":"nope","ts":1}"#.to_owned()]),
                422,
                "no_valid_events",
            ),
        ] {
            let (got, reply) = server.send("POST", "/v1/events", body.as_bytes());
            assert_eq!(got, status, "{}: {reply}", &body[..body.len().min(40)]);
            let reply: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(error_code(&reply), code, "{reply}");
        }
        let (status, _) = server.get_json("/healthz");
        assert_eq!(status, 200);
        let (_, text) = server.request("GET", "/metrics");
        assert_eq!(metric(&text, "pinnersage_events_stored_total"), 3.0);
        assert_eq!(metric(&text, "pinnersage_events_duplicate_total"), 3.0);
        let commits = metric(&text, "pinnersage_event_commits_total");
        assert!(commits >= 1.0, "{text}");
        for phase in ["lookup", "write", "online"] {
            let timed = format!("pinnersage_event_commit_seconds_count{{phase=\"{phase}\"}}");
            assert_eq!(metric(&text, &timed), commits, "{phase}");
        }
        // The storage engine's backlog is exported; the events sit in memtables of one journal.
        assert!(
            metric(&text, "pinnersage_event_store_journals") >= 1.0,
            "{text}"
        );
        assert!(
            metric(&text, "pinnersage_event_store_write_buffer_bytes") > 0.0,
            "{text}"
        );
        assert_eq!(
            metric(&text, "pinnersage_event_store_sealed_memtables"),
            0.0
        );

        // The new user is served from online clusters alone, without their own items.
        let (status, profile) = server.get_json("/v1/users/newbie/profile");
        assert_eq!(status, 200, "{profile}");
        assert_eq!(profile["online_actions"], 2);
        assert!(profile["generation"].is_null());
        assert!(
            clusters(&profile)
                .iter()
                .all(|c| c["source"] == "online" && c["online"] == true)
        );
        let (_, reco) = server.get_json("/v1/users/newbie/recommendations?k=30");
        assert_eq!(reco["fallback"], false, "{reco}");
        let got = ids(&reco["items"]);
        assert_eq!(got.len(), 30);
        assert!(!got.iter().any(|i| i == "i31" || i == "i7"), "{got:?}");
    }
    // After a restart the online state is rebuilt from the store: nothing acknowledged is lost.
    let server = Server::start(dir.path());
    let (_, profile) = server.get_json("/v1/users/newbie/profile");
    assert_eq!(profile["online_actions"], 2, "{profile}");
    let (_, profile) = server.get_json("/v1/users/42/profile");
    assert_eq!(profile["clusters"][0]["medoid"], "i19");
    assert_eq!(profile["clusters"][0]["importance"], 2.5);
    drop(server);
    // Exactly the accepted events are in the store, once.
    let store = EventStore::open(dir.path()).unwrap();
    let mut after = Vec::new();
    store
        .for_each_after(NOW, |user, e| after.push((user.to_owned(), e.item)))
        .unwrap();
    after.sort();
    let want = [("42", "i19"), ("newbie", "i31"), ("newbie", "i7")];
    assert_eq!(
        after,
        want.map(|(u, i)| (u.to_owned(), i.to_owned())).to_vec()
    );
}

#[test]
fn online_clusters_merge_with_the_batch_profile_and_roll_over_with_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    let (_, before) = server.get_json("/v1/users/u3/profile");
    let batch_clusters = clusters(&before).clone();
    assert!(
        batch_clusters
            .iter()
            .all(|c| c["source"] == "batch" && c["online"] == false)
    );
    assert_eq!(before["online_actions"], 0);

    // u3 engages with topic 7 (not among their topics 3, 4, 0) and once more with the medoid
    // of their top batch cluster.
    let top = &batch_clusters[0];
    let top_medoid: usize = top["medoid"].as_str().unwrap()[1..].parse().unwrap();
    let mut events = topic_7_events("u3", "n");
    events.push(event("u3", top_medoid, NOW + 120, "again"));
    let (status, report) = server.post_json("/v1/events", &events_body(&events));
    assert_eq!(status, 202, "{report}");
    assert_eq!(report["accepted"], 7);

    // Visible at once (the 202 came after the online update).
    let (_, after) = server.get_json("/v1/users/u3/profile");
    assert_eq!(after["online_actions"], 7);
    let merged = clusters(&after);
    let online_only: Vec<&Value> = merged.iter().filter(|c| c["source"] == "online").collect();
    assert_eq!(online_only.len(), 1, "{after}");
    let new_topic = online_only[0];
    assert_eq!(new_topic["size"], 6);
    assert_eq!(
        new_topic["importance"], 6.0,
        "online actions count fully at the boundary"
    );
    let medoid: usize = new_topic["medoid"].as_str().unwrap()[1..].parse().unwrap();
    assert_eq!(medoid % 12, 7);
    // The repeat of the top medoid folds into its batch cluster: same medoid, one more action.
    let folded = merged
        .iter()
        .find(|c| c["medoid"] == top["medoid"])
        .unwrap();
    assert_eq!(folded["source"], "batch+online");
    assert_eq!(folded["size"], top["size"].as_u64().unwrap() + 1);
    let gain = folded["importance"].as_f64().unwrap() - top["importance"].as_f64().unwrap();
    assert!((gain - 1.0).abs() < 1e-9, "{gain}");
    assert_eq!(merged.len(), batch_clusters.len() + 1);

    // With every interest sampled, the new one produces recommendations from topic 7.
    let (_, reco) = server.get_json("/v1/users/u3/recommendations?k=60&medoids=20");
    let medoids: Vec<&str> = reco["medoids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["item"].as_str().unwrap())
        .collect();
    assert!(
        medoids.contains(&new_topic["medoid"].as_str().unwrap()),
        "{reco}"
    );
    let from_new: Vec<String> = reco["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["medoid"] == new_topic["medoid"])
        .map(|i| i["item"].as_str().unwrap().to_owned())
        .collect();
    assert!(!from_new.is_empty());
    let seen: Vec<String> = events
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["item"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        ids(&reco["items"]).iter().all(|i| !seen.contains(i)),
        "online items are seen items"
    );

    // The next batch covers the day: the online state is dropped and the batch now holds it.
    let (status, summary) =
        server.post_json("/v1/admin/batch", &format!("{{\"now\": {}}}", NOW + 3_600));
    assert_eq!(status, 200, "{summary}");
    let (_, rolled) = server.get_json("/v1/users/u3/profile");
    assert_eq!(rolled["online_actions"], 0, "{rolled}");
    assert!(clusters(&rolled).iter().all(|c| c["source"] == "batch"));
    let total = |p: &Value| -> u64 {
        clusters(p)
            .iter()
            .map(|c| c["size"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total(&rolled), total(&before) + 7);
    let (_, text) = server.request("GET", "/metrics");
    assert_eq!(metric(&text, "pinnersage_online_users"), 0.0);

    // Bad batch parameters are a 400 and change nothing.
    let (status, reply) = server.post_json("/v1/admin/batch", r#"{"alpha": -1}"#);
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = server.post_json("/v1/admin/batch", r#"{"alpah": 1}"#);
    assert_eq!((status, error_code(&reply)), (400, "bad_body"));
    let (_, health) = server.get_json("/healthz");
    assert_eq!(health["profiles"], "gen-000002");
}

/// The title attribute the test catalog gives item `id` (none for multiples of 100).
fn title_of(id: &str) -> Option<String> {
    let n: usize = id.strip_prefix('i').unwrap().parse().unwrap();
    (!n.is_multiple_of(100)).then(|| format!("Item {n}"))
}

#[test]
fn explorer_page_user_listing_map_and_item_attributes() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());

    let (status, page) = server.request("GET", "/");
    assert_eq!(status, 200);
    assert!(page.contains("interest explorer") && page.contains("/v1/users"));

    // Users: byte order, prefix, limit, bad limits.
    let (status, listed) = server.get_json("/v1/users?limit=4");
    assert_eq!(status, 200, "{listed}");
    let users: Vec<&str> = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["u0", "u1", "u10", "u11"]);
    let (_, listed) = server.get_json("/v1/users?prefix=u3");
    let listed = listed["users"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 11, "u3 and u30..u39: {listed:?}");
    for bad in [
        "/v1/users?limit=0",
        "/v1/users?limit=1001",
        "/v1/users?limit=x",
    ] {
        let (status, body) = server.get_json(bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Profile with every member, and the attributes of every item it names.
    let u3 = listed.iter().find(|u| u["user"] == "u3").unwrap();
    let (status, profile) = server.get_json("/v1/users/u3/profile?members=1000");
    assert_eq!(status, 200, "{profile}");
    let clusters = profile["clusters"].as_array().unwrap();
    assert_eq!(clusters.len() as u64, u3["clusters"].as_u64().unwrap());
    let members: Vec<&str> = clusters
        .iter()
        .flat_map(|c| c["members"].as_array().unwrap())
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(members.len() as u64, u3["items"].as_u64().unwrap());
    let attributes = profile["attributes"].as_object().unwrap();
    for id in members.iter().chain(
        clusters
            .iter()
            .map(|c| c["medoid"].as_str().unwrap())
            .collect::<Vec<_>>()
            .iter(),
    ) {
        let title = attributes
            .get(*id)
            .map(|a| a["title"].as_str().unwrap().to_owned());
        assert_eq!(title, title_of(id), "{id}");
    }
    let (status, body) = server.get_json("/v1/users/u3/profile?members=10001");
    assert_eq!((status, error_code(&body)), (400, "bad_request"));

    // Recommendations and similar items carry attributes when the item has some.
    let (_, reco) = server.get_json("/v1/users/u3/recommendations?k=40");
    for item in reco["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(reco["medoids"].as_array().unwrap())
    {
        let id = item["item"].as_str().unwrap();
        let title = item
            .get("attributes")
            .map(|a| a["title"].as_str().unwrap().to_owned());
        assert_eq!(title, title_of(id), "{item}");
    }
    let (_, similar) = server.get_json("/v1/items/i7/similar?k=5");
    for item in similar["items"].as_array().unwrap() {
        let id = item["item"].as_str().unwrap();
        let title = item
            .get("attributes")
            .map(|a| a["title"].as_str().unwrap().to_owned());
        assert_eq!(title, title_of(id), "{item}");
    }

    // The map: every item once, in the interest that holds it; variance shares in [0, 1].
    let (status, map) = server.get_json("/v1/users/u3/map");
    assert_eq!(status, 200, "{map}");
    let points = map["points"].as_array().unwrap();
    assert_eq!(points.len(), members.len());
    for p in points {
        let k = p["interest"].as_u64().unwrap() as usize;
        let id = p["item"].as_str().unwrap();
        let holder = clusters[k]["members"].as_array().unwrap();
        assert!(
            holder.iter().any(|m| m == id),
            "{id} is not in interest {k}"
        );
        assert!(p["x"].as_f64().unwrap().is_finite() && p["y"].as_f64().unwrap().is_finite());
    }
    let explained: Vec<f64> = map["explained"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        explained[0] >= explained[1]
            && explained[1] >= 0.0
            && explained[0] + explained[1] <= 1.0 + 1e-9,
        "{explained:?}"
    );
    let (status, body) = server.get_json("/v1/users/nobody/map");
    assert_eq!((status, error_code(&body)), (404, "no_profile"));
}

#[test]
fn online_clusters_follow_the_alpha_of_the_served_generation() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    // u5 engages with six different items of topic 7 after the batch: one online interest at
    // the default alpha.
    let events = topic_7_events("u5", "a");
    let (status, report) = server.post_json("/v1/events", &events_body(&events));
    assert_eq!(status, 202, "{report}");
    let online_only = |server: &Server| -> Vec<u64> {
        let (_, profile) = server.get_json("/v1/users/u5/profile");
        clusters(&profile)
            .iter()
            .filter(|c| c["source"] == "online")
            .map(|c| c["size"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(online_only(&server), vec![6]);

    // A batch that ends before those actions, cut at a tiny alpha: they stay online, and are now
    // cut like the batch clusters they merge with, each its own interest.
    let (status, summary) = server.post_json(
        "/v1/admin/batch",
        &format!(r#"{{"now": {}, "alpha": 0.0001}}"#, NOW + 30),
    );
    assert_eq!(status, 200, "{summary}");
    assert_eq!(online_only(&server), vec![1; 6]);

    // The same after a restart: the online state is rebuilt with the served generation's alpha.
    drop(server);
    let server = Server::start(dir.path());
    assert_eq!(online_only(&server), vec![1; 6]);
}

#[test]
fn tokens_scopes_hosts_and_json_bodies_guard_the_api() {
    use pinnersage_server::auth::{AuthConfig, Tokens};
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let tokens = Tokens::parse(
        "writer-token-0001 write\nadmin-token-00002 admin\nreader-token-0003 read\ncatalog-token-004 catalog",
        "test",
    )
    .unwrap();
    let auth = AuthConfig {
        tokens: tokens.clone(),
        ..AuthConfig::default()
    };
    let server = Server::start_with(
        dir.path(),
        ServeConfig {
            auth,
            ..ServeConfig::default()
        },
    );
    let host = format!("Host: {}\r\n", server.addr);
    let json = "Content-Type: application/json\r\n";
    let bearer = |t: &str| format!("{host}{json}Authorization: Bearer {t}\r\n");
    let body = events_body(&[event("u1", 5, NOW + 60, "auth-1")]);
    let code = |text: &str| error_code(&serde_json::from_str::<Value>(text).unwrap()).to_owned();

    // Reads stay open; writes need a write token, admin calls an admin token.
    assert_eq!(server.request("GET", "/v1/users/u1/profile").0, 200);
    let post = |headers: &str| {
        let (status, text) = server.send_with("POST", "/v1/events", headers, body.as_bytes());
        (status, code(&text))
    };
    let unauthorized = (401, "unauthorized".to_owned());
    assert_eq!(post(&format!("{host}{json}")), unauthorized);
    assert_eq!(post(&bearer("not-a-token-at-all")), unauthorized);
    assert_eq!(
        post(&bearer("reader-token-0003")),
        (403, "forbidden".to_owned())
    );
    let (status, text) = server.send_with(
        "POST",
        "/v1/events",
        &bearer("writer-token-0001"),
        body.as_bytes(),
    );
    assert_eq!(status, 202, "{text}");
    let batch = format!("{{\"now\": {}}}", NOW + 3_600);
    let (status, _) = server.send_with(
        "POST",
        "/v1/admin/batch",
        &bearer("writer-token-0001"),
        batch.as_bytes(),
    );
    assert_eq!(status, 403);
    let (status, text) = server.send_with(
        "POST",
        "/v1/admin/batch",
        &bearer("admin-token-00002"),
        batch.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");

    // Item changes need the catalog scope (or admin); a write token is not enough.
    let item = |n: u16| {
        format!(
            r#"{{"items":[{{"id":"scoped-{n}","embedding":[{}]}}]}}"#,
            ["1"; DIM].join(",")
        )
    };
    for (token, status) in [
        ("writer-token-0001", 403),
        ("reader-token-0003", 403),
        ("catalog-token-004", 202),
        ("admin-token-00002", 202),
    ] {
        let (got, text) =
            server.send_with("POST", "/v1/items", &bearer(token), item(status).as_bytes());
        assert_eq!(got, status, "{token}: {text}");
    }
    let (status, _) = server.send_with("DELETE", "/v1/items/scoped-202", &host, b"");
    assert_eq!(status, 401);
    let (status, _) = server.send_with(
        "DELETE",
        "/v1/items/scoped-202",
        &bearer("catalog-token-004"),
        b"",
    );
    assert_eq!(status, 202);

    // A cross-site form post cannot send JSON: other content types are refused before anything.
    let form =
        format!("{host}Content-Type: text/plain\r\nAuthorization: Bearer writer-token-0001\r\n");
    let (status, text) = server.send_with("POST", "/v1/events", &form, body.as_bytes());
    assert_eq!(
        (status, code(&text).as_str()),
        (415, "unsupported_media_type"),
        "{text}"
    );

    // DNS rebinding: a Host that is not ours is refused, except by the probes.
    let evil = "Host: attacker.example:8080\r\n";
    let (status, text) = server.send_with("GET", "/v1/users/u1/profile", evil, b"");
    assert_eq!(
        (status, code(&text).as_str()),
        (421, "host_not_allowed"),
        "{text}"
    );
    assert_eq!(server.send_with("GET", "/healthz", evil, b"").0, 200);
    assert_eq!(
        server.send_with("GET", "/v1/users/u1/profile", "", b"").0,
        421
    );
    drop(server);

    // Reads can require a token too; the page and the probes stay open.
    let server = Server::start_with(
        dir.path(),
        ServeConfig {
            auth: AuthConfig {
                tokens,
                require_read: true,
                allowed_hosts: vec!["reco.internal".into()],
                ..AuthConfig::default()
            },
            ..ServeConfig::default()
        },
    );
    let host = format!("Host: {}\r\n", server.addr);
    let (status, text) = server.send_with("GET", "/v1/users/u1/profile", &host, b"");
    assert_eq!(
        (status, code(&text).as_str()),
        (401, "unauthorized"),
        "{text}"
    );
    let reader = format!("{host}Authorization: Bearer reader-token-0003\r\n");
    assert_eq!(
        server
            .send_with("GET", "/v1/users/u1/profile", &reader, b"")
            .0,
        200
    );
    let writer = format!("{host}Authorization: Bearer writer-token-0001\r\n");
    assert_eq!(
        server
            .send_with("GET", "/v1/users/u1/profile", &writer, b"")
            .0,
        403
    );
    let named = "Host: reco.internal\r\nAuthorization: Bearer reader-token-0003\r\n";
    assert_eq!(
        server
            .send_with("GET", "/v1/users/u1/profile", named, b"")
            .0,
        200
    );
    for open in ["/", "/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(server.send_with("GET", open, &host, b"").0, 200, "{open}");
    }
}

#[test]
fn admin_batch_parameters_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    // Each would allocate without bound (a 4·m² distance matrix per worker, a century of
    // events per chunk): a 400 naming the field, and nothing published.
    for (body, field) in [
        (r#"{"max_actions": 1000000000}"#, "max_actions"),
        (r#"{"lambda": 1e9}"#, "lambda"),
        (r#"{"alpha": 1e300}"#, "alpha"),
        (r#"{"window_days": 4000000}"#, "window_days"),
    ] {
        let (status, reply) = server.post_json("/v1/admin/batch", body);
        assert_eq!(status, 400, "{body}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    let (_, health) = server.get_json("/healthz");
    assert_eq!(health["profiles"], "gen-000001");
}

#[test]
fn concurrency_and_time_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start_with(
        dir.path(),
        ServeConfig {
            max_in_flight: 1,
            request_timeout: Duration::from_millis(500),
            ..ServeConfig::default()
        },
    );
    // A client that announces a body and never sends it holds no in-flight place (the body is
    // read before one is taken; in-flight bounds and timeouts: the unit tests in http.rs)...
    let mut slow = TcpStream::connect(server.addr).unwrap();
    write!(
        slow,
        "POST /v1/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        server.addr
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // ...so the next request is served.
    let (status, text) = server.send_with(
        "GET",
        "/v1/users/u1/profile",
        &format!("Host: {}\r\n", server.addr),
        b"",
    );
    assert_eq!(status, 200, "{text}");
    // The slow upload is cut off at the timeout.
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = String::new();
    let _ = slow.read_to_string(&mut raw);
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
    assert!(raw.contains("\"body_timeout\""), "{raw}");
    assert_eq!(server.request("GET", "/v1/users/u1/profile").0, 200);
}

#[test]
fn concurrent_reloads_install_a_new_generation_once() {
    use pinnersage_store::profiles::{GenerationMeta, ProfileWriter};
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = pinnersage_server::Server::open(dir.path(), ServeConfig::default()).unwrap();
    let engine = server.engine().clone();
    let served = engine.profile_generation().unwrap();
    let writer = ProfileWriter::begin(dir.path()).unwrap();
    let meta: GenerationMeta =
        serde_json::from_slice(&std::fs::read(served.join("meta.json")).unwrap()).unwrap();
    writer.publish(meta).unwrap();
    // The reloader and an admin batch may reload at once: redb opens a file once per process,
    // so unserialised reloads failed; now one installs it and the others find it served.
    let switched: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| engine.reload_profiles().unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(switched.iter().filter(|&&s| s).count(), 1, "{switched:?}");
    assert_ne!(engine.profile_generation().unwrap(), served);
}

#[test]
fn excluded_items_disappear_without_an_index_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let list = dir.path().join("excluded.txt");
    std::fs::write(&list, "").unwrap();
    let server = Server::start_with(
        dir.path(),
        ServeConfig {
            excluded: Some(list.clone()),
            ..ServeConfig::default()
        },
    );
    let paths = [
        "/v1/users/u1/recommendations?k=10",
        "/v1/items/i5/similar?k=10",
        "/v1/items/i5/similar?k=10&filter=title~Item",
    ];
    let ids = |path: &str| -> Vec<String> {
        let (status, body) = server.get_json(path);
        assert_eq!(status, 200, "{path}: {body}");
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut taken: Vec<String> = paths.iter().map(|p| ids(p)[0].clone()).collect();
    taken.sort();
    taken.dedup();
    std::fs::write(&list, format!("{}\nno-such-item\n", taken.join("\n"))).unwrap();
    // Picked up at the next reload (every 100 ms here), no restart, no index build.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = server.request("GET", "/metrics");
        if metric(&text, "pinnersage_excluded_items") == taken.len() as f64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the list was not reloaded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for path in paths {
        let got = ids(path);
        assert_eq!(got.len(), 10, "{path}: still k items");
        for id in &taken {
            assert!(!got.contains(id), "{path} returned the excluded {id}");
        }
    }
}
