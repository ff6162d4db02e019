//! What a hostile client, a load balancer and a careless operator tried, each fixed: the real
//! server over real HTTP on a real data directory.

use std::time::{Duration, Instant};

use pinnersage_server::ServeConfig;
use serde_json::Value;

mod common;
use common::*;

/// A filter of `conditions` conditions on `title`, each with `alternatives` values of
/// `value_bytes` bytes (at least) that match nothing, negated so that every row passes every condition
/// (each row is tested against all).
fn worst_case_filter(conditions: usize, alternatives: usize, value_bytes: usize) -> String {
    (0..conditions)
        .map(|c| {
            let values: Vec<String> = (0..alternatives)
                .map(|a| match value_bytes {
                    1 => "q".to_owned(),
                    _ => format!("{:x>value_bytes$}", format!("{c}.{a}")),
                })
                .collect();
            format!("filter=!title:{}", values.join("|"))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `(status, error message)` of a GET whose path is too long to print.
fn get_quietly(server: &Server, path: &str) -> (u16, String) {
    let (status, body) = server.request("GET", path);
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, message)
}

#[test]
fn worst_case_filters_cannot_stall_the_other_requests() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let timeout = Duration::from_secs(2);
    let server = Server::start_with(
        dir.path(),
        ServeConfig {
            request_timeout: timeout,
            ..ServeConfig::default()
        },
    );
    // Over the limits (15 conditions of 2,000 one-byte alternatives: a 60 kB URL, under the
    // HTTP layer's 64 kB), the most alternatives a filter may hold (32 conditions of 256), and
    // the longest values (16 conditions of 32 values of 256 bytes: under 64 kB too).
    let over = worst_case_filter(15, 2_000, 1);
    let most = worst_case_filter(32, 256, 4);
    let longest = worst_case_filter(16, 15, 256);
    for (filter, status, message) in [
        (&over, 400, "at most 256 per condition"),
        (&most, 200, ""),
        (&longest, 200, ""),
    ] {
        let got = get_quietly(&server, &format!("/v1/items/i5/similar?k=10&{filter}"));
        assert_eq!(got.0, status, "{}", got.1);
        assert!(got.1.contains(message), "{}", got.1);
    }
    let stop = Instant::now() + Duration::from_secs(4);
    let (mut unfiltered, heavy) = std::thread::scope(|scope| {
        let attackers: Vec<_> = (0..8)
            .map(|k| {
                let (server, over, most, longest) = (&server, &over, &most, &longest);
                scope.spawn(move || {
                    let mut statuses = Vec::new();
                    while Instant::now() < stop {
                        for filter in [over, most, longest] {
                            let path = if k % 2 == 0 {
                                format!("/v1/items/i{k}/similar?k=50&{filter}")
                            } else {
                                format!("/v1/users/u{k}/recommendations?k=50&{filter}")
                            };
                            let sent = Instant::now();
                            let (status, _) = get_quietly(server, &path);
                            statuses.push((status, sent.elapsed()));
                        }
                    }
                    statuses
                })
            })
            .collect();
        let mut unfiltered = Vec::new();
        while Instant::now() < stop {
            let sent = Instant::now();
            let (status, body) = server.request("GET", "/v1/users/u3/recommendations?k=10");
            assert_eq!(status, 200, "{body}");
            unfiltered.push(sent.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        let heavy: Vec<(u16, Duration)> = attackers
            .into_iter()
            .flat_map(|a| a.join().unwrap())
            .collect();
        (unfiltered, heavy)
    });
    unfiltered.sort_unstable();
    let median = unfiltered[unfiltered.len() / 2];
    let slowest = unfiltered[unfiltered.len() - 1];
    // Measured here: 3.7 ms median, 16 ms at most (before the fix: 143 ms and 224 ms, the
    // heavy filters answered on the async workers).
    assert!(
        median < Duration::from_millis(60) && slowest < timeout,
        "an unfiltered recommendation under attack: median {median:?}, slowest {slowest:?}"
    );
    for (status, took) in &heavy {
        assert!(
            [200, 400, 503].contains(status),
            "a heavy filter got {status}"
        );
        assert!(
            *took < timeout + Duration::from_secs(1),
            "a heavy filter took {took:?}"
        );
    }
    assert!(heavy.iter().any(|(s, _)| *s == 400));
}

#[test]
fn probes_without_a_host_header_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    // HAProxy's `option httpchk GET /readyz`: HTTP/1.0, no Host.
    let raw = server.raw("GET /readyz HTTP/1.0\r\n\r\n");
    assert!(
        raw.starts_with("HTTP/1.0 200") || raw.starts_with("HTTP/1.1 200"),
        "{raw}"
    );
    assert!(raw.contains("\"ready\""), "{raw}");
    // kubelet: the pod's IP as the Host.
    let raw =
        server.raw("GET /readyz HTTP/1.1\r\nHost: 10.1.2.3:8080\r\nConnection: close\r\n\r\n");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    // Other routes still need an allowed Host...
    let raw = server.raw("GET /v1/users/u1/profile HTTP/1.0\r\n\r\n");
    assert!(raw.contains(" 421 "), "{raw}");
    drop(server);
    // ...and `--allowed-host '*'` takes a request without one.
    let server = Server::start_with(
        dir.path(),
        ServeConfig {
            auth: pinnersage_server::auth::AuthConfig {
                allowed_hosts: vec!["*".into()],
                ..Default::default()
            },
            ..ServeConfig::default()
        },
    );
    let raw = server.raw("GET /v1/users/u1/profile HTTP/1.0\r\n\r\n");
    assert!(raw.contains(" 200 "), "{raw}");
}

#[test]
fn event_ids_are_per_user_over_http() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    // Two producers numbering their events 1, 2: all four stored.
    let body = events_body(&[
        event("u1", 7, NOW + 60, "1"),
        event("u1", 19, NOW + 61, "2"),
        event("u2", 7, NOW + 60, "1"),
        event("u2", 19, NOW + 61, "2"),
    ]);
    let (status, report) = server.post_json("/v1/events", &body);
    assert_eq!(status, 202, "{report}");
    assert_eq!(
        (report["accepted"].as_u64(), report["duplicates"].as_u64()),
        (Some(4), Some(0))
    );
    // A retry of the same (user, id), even re-stamped, is stored once.
    let retry = events_body(&[
        event("u1", 7, NOW + 90, "1"),
        event("u2", 19, NOW + 61, "2"),
    ]);
    let (status, report) = server.post_json("/v1/events", &retry);
    assert_eq!(status, 202, "{report}");
    assert_eq!(
        (report["accepted"].as_u64(), report["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    for user in ["u1", "u2"] {
        let (_, profile) = server.get_json(&format!("/v1/users/{user}/profile"));
        assert_eq!(profile["online_actions"], 2, "{user}: {profile}");
    }
}

#[test]
fn the_explorer_cannot_be_framed() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    let raw = server
        .raw(&format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.addr
        ))
        .to_ascii_lowercase();
    assert!(raw.starts_with("http/1.1 200"), "{raw}");
    assert!(raw.contains("x-frame-options: deny"), "{raw}");
    assert!(
        raw.contains("content-security-policy: frame-ancestors 'none'"),
        "{raw}"
    );
}

#[test]
fn a_batch_while_another_command_publishes_is_a_409_without_paths() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    let held = pinnersage_generation::PublishLock::acquire(dir.path(), "import items").unwrap();
    let raw = server.raw(&format!(
        "POST /v1/admin/batch HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        server.addr
    ));
    assert!(raw.starts_with("HTTP/1.1 409"), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("retry-after: 10"),
        "{raw}"
    );
    assert!(raw.contains("\"busy\""), "{raw}");
    let path = dir.path().to_str().unwrap();
    assert!(!raw.contains(path) && !raw.contains("pid"), "{raw}");
    drop(held);
    let (status, summary) = server.post_json("/v1/admin/batch", &format!(r#"{{"now": {NOW}}}"#));
    assert_eq!(status, 200, "{summary}");
}

#[test]
fn metrics_name_every_route_and_status() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    server.request("GET", "/v1/users?limit=5");
    server.request("GET", "/v1/users/u1/map");
    server.request("GET", "/readyz");
    server.raw("GET /v1/users/u1/map HTTP/1.0\r\n\r\n"); // 421
    let (_, text) = server.request("GET", "/metrics");
    for series in [
        "route=\"users\",status=\"200\"",
        "route=\"map\",status=\"200\"",
        "route=\"readyz\",status=\"200\"",
        "route=\"map\",status=\"421\"",
    ] {
        assert!(text.contains(series), "{series}: {text}");
    }
}

#[test]
fn an_admin_batch_takes_no_body_and_refuses_nulls() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    let host = format!("Host: {}\r\n", server.addr);
    // No body, no content type: the parameters are optional (now is the current time, after
    // every event of this data directory: nothing to cluster, said as such).
    let (status, text) = server.send_with("POST", "/v1/admin/batch", &host, b"");
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("no events between"), "{text}");
    // A browser's cross-site request carries Origin: it still needs JSON.
    let origin = format!("{host}Origin: https://attacker.example\r\n");
    let (status, text) = server.send_with("POST", "/v1/admin/batch", &origin, b"");
    assert_eq!(status, 415, "{text}");
    let (status, body) = server.post_json("/v1/admin/batch", r#"{"max_actions": null}"#);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"max_actions\" must not be null"),
        "{body}"
    );
}

#[test]
fn excluded_items_leave_the_fallback_and_k_is_still_filled() {
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
    let items = |path: &str| -> Vec<String> {
        let (status, body) = server.get_json(path);
        assert_eq!(status, 200, "{path}: {body}");
        ids(&body["items"])
    };
    let fallback = "/v1/users/nobody/recommendations?k=5";
    let popular = items(fallback);
    assert!(!popular.is_empty());
    let neighbours = items("/v1/items/i5/similar?k=20");
    assert_eq!(neighbours.len(), 20);
    let reco = "/v1/users/u1/recommendations?k=20&medoids=1&selection=top";
    let recommended = items(reco);
    assert_eq!(recommended.len(), 20);
    // Take down the most popular item, i5's 20 nearest neighbours and u1's 20 recommendations.
    let mut taken: Vec<&String> = vec![&popular[0]];
    taken.extend(&neighbours);
    taken.extend(&recommended);
    let text: String = taken.iter().map(|id| format!("{id}\n")).collect();
    std::fs::write(&list, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while items(fallback).contains(&popular[0]) {
        assert!(Instant::now() < deadline, "the list was not reloaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answered = items(fallback);
    assert!(
        !answered.contains(&popular[0]),
        "the fallback returned an excluded item"
    );
    // Still k items, none of them taken down, from the cache path and the filtered one.
    for path in [
        "/v1/items/i5/similar?k=20",
        "/v1/items/i5/similar?k=20&filter=!title~zzz",
        reco,
    ] {
        let got = items(path);
        assert_eq!(got.len(), 20, "{path}: {got:?}");
        for id in &got {
            assert!(!taken.contains(&id), "{path} returned the excluded {id}");
        }
    }
    let (_, body) = server.get_json("/v1/items/i5/similar?k=20");
    let scores: Vec<f64> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["score"].as_f64().unwrap())
        .collect::<Vec<_>>();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    let _: Value = body;
}

#[test]
fn a_batch_for_an_older_now_is_not_published_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    let (_, health) = server.get_json("/healthz");
    let served = health["profiles"].clone();
    // A day before the served generation (`{"now": 0}` finds no events in its window: 400).
    for now in [NOW - 86_400, NOW - 2 * 86_400] {
        let (status, body) = server.post_json("/v1/admin/batch", &format!(r#"{{"now": {now}}}"#));
        assert_eq!(status, 409, "{body}");
        assert_eq!(error_code(&body), "not_published", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("older than the current"),
            "{body}"
        );
    }
    let (_, health) = server.get_json("/healthz");
    assert_eq!(health["profiles"], served, "nothing was published");
    let (status, body) = server.post_json(
        "/v1/admin/batch",
        &format!(r#"{{"now": {}, "force": true}}"#, NOW - 86_400),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["generation"], "gen-000002");
}
