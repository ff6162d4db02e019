//! Online experiments over real HTTP: every answer names its request and the user's arm, the arm
//! sets the retrieval, and it is the same across requests and restarts.

mod common;

use std::collections::HashSet;

use common::*;
use pinnersage_core::sample::SplitMix64;
use pinnersage_server::ServeConfig;
use pinnersage_server::experiments::Experiments;

const FILE: &str = r#"
[[experiment]]
name = "interests"
salt = "2026-12"
control = "one"

[[experiment.arm]]
name = "one"
share = 0.4
selection = "top"
medoids = 1

[[experiment.arm]]
name = "all"
share = 0.4
selection = "all"

[[experiment.arm]]
name = "current"
share = 0.2
external = true

[experiment.force]
"u3" = "current"
"#;

fn config(text: &str) -> ServeConfig {
    let defaults = ServeConfig::default();
    ServeConfig {
        experiments: Experiments::parse(text, &defaults.retrieval).unwrap(),
        ..defaults
    }
}

#[test]
fn each_arm_serves_its_retrieval_and_a_user_keeps_the_arm() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let split = Experiments::parse(FILE, &ServeConfig::default().retrieval).unwrap();
    let mut arms = Vec::new();
    let mut request_ids = HashSet::new();
    {
        let server = Server::start_with(dir.path(), config(FILE));
        for u in 0..40 {
            let user = format!("u{u}");
            let (status, body) = server.get_json(&format!("/v1/users/{user}/recommendations?k=10"));
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["experiment"], "interests");
            let arm = body["arm"].as_str().unwrap().to_owned();
            assert_eq!(arm, split.assign(&user).unwrap().arm);
            assert!(request_ids.insert(body["request_id"].as_str().unwrap().to_owned()));
            let medoids = body["medoids"].as_array().unwrap().len();
            let items = body["items"].as_array().unwrap().len();
            match arm.as_str() {
                // One interest, the most important: one medoid.
                "one" => assert_eq!((medoids, items), (1, 10), "{user}: {body}"),
                // Every interest of the user: its batch profile has 2 or more here.
                "all" => assert!(medoids >= 2 && items == 10, "{user}: {body}"),
                // The team's recommender: the assignment only.
                "current" => {
                    assert_eq!(body["external"], true);
                    assert_eq!((medoids, items), (0, 0));
                }
                other => panic!("arm {other}"),
            }
            // The same arm on the next request, with a new request id.
            let (_, again) = server.get_json(&format!("/v1/users/{user}/recommendations?k=10"));
            assert_eq!(again["arm"], arm.as_str());
            assert!(request_ids.insert(again["request_id"].as_str().unwrap().to_owned()));
            arms.push(arm);
        }
        // Forced users get their arm; every arm got users.
        assert_eq!(arms[3], "current");
        for arm in ["one", "all", "current"] {
            assert!(arms.iter().any(|a| a == arm), "no user in {arm}: {arms:?}");
        }
        let (status, listed) = server.get_json("/v1/admin/experiments");
        assert_eq!(status, 200, "{listed}");
        let e = &listed["experiments"][0];
        assert_eq!(
            (e["name"].as_str(), e["control"].as_str()),
            (Some("interests"), Some("one"))
        );
        assert_eq!(e["arms"][1]["selection"], "all");
        assert_eq!(e["arms"][2]["external"], true);
    }
    // After a restart (a new process would read the same file): the same arms, new request ids.
    let server = Server::start_with(dir.path(), config(FILE));
    for (u, arm) in arms.iter().enumerate() {
        let (_, body) = server.get_json(&format!("/v1/users/u{u}/recommendations?k=10"));
        assert_eq!(body["arm"], arm.as_str());
        assert!(request_ids.insert(body["request_id"].as_str().unwrap().to_owned()));
    }
}

#[test]
fn without_experiments_answers_carry_a_request_id_only() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let server = Server::start(dir.path());
    let (status, body) = server.get_json("/v1/users/u1/recommendations?k=5");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["request_id"].as_str().unwrap().len(), 32);
    assert!(
        body.get("arm").is_none() && body.get("experiment").is_none(),
        "{body}"
    );
    let (_, listed) = server.get_json("/v1/admin/experiments");
    assert_eq!(listed["experiments"], serde_json::json!([]));
}

/// `a` and `b` are the same JSON but for numbers within 1e-12 of each other (relative).
fn nearly(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::{Array, Number, Object};
    match (a, b) {
        (Number(x), Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-300)
        }
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| nearly(x, y)),
        (Object(x), Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| nearly(v, w)))
        }
        _ => a == b,
    }
}

/// Waits until the server has written `n` impressions in all.
fn recorded(server: &Server, n: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, text) = server.request("GET", "/metrics");
        let written = metric(&text, "pinnersage_impressions_recorded_total");
        if written >= n {
            assert_eq!(written, n, "more impressions than answers");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{written} of {n} written"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn impressions_are_recorded_engagements_attributed_and_the_report_served() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let split = Experiments::parse(FILE, &ServeConfig::default().retrieval).unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    // Per arm: users shown, items shown, engagements made.
    let mut expected: std::collections::HashMap<&str, (u64, u64, u64)> = Default::default();
    let mut clicks = Vec::new();
    let mut posted = Vec::new();
    {
        let server = Server::start_with(dir.path(), config(FILE));
        for u in 0..40 {
            let user = format!("u{u}");
            let (_, body) = server.get_json(&format!("/v1/users/{user}/recommendations?k=10"));
            let arm = split.assign(&user).unwrap().arm;
            let request_id = body["request_id"].as_str().unwrap().to_owned();
            let shown: Vec<String> = if arm == "current" {
                // The team's recommender shows its own items and posts the impression.
                let items: Vec<String> = (0..5).map(|k| format!("i{}", u * 7 + k)).collect();
                // Posted later, stamped with the time it was shown (before the click).
                posted.push(format!(
                    r#"{{"request_id":"{request_id}","experiment":"interests","arm":"current","user":"{user}","time":{},"items":{}}}"#,
                    now(),
                    serde_json::to_string(&items).unwrap()
                ));
                items
            } else {
                ids(&body["items"])
            };
            let entry = expected.entry(arm).or_default();
            entry.0 += 1;
            entry.1 += shown.len() as u64;
            // Every third user engages with the second item shown (some with its request id).
            if u % 3 == 0 {
                entry.2 += 1;
                let item = &shown[1];
                let named = if u % 2 == 0 {
                    format!(r#","request_id":"{request_id}""#)
                } else {
                    String::new()
                };
                clicks.push(format!(
                    r#"{{"user":"{user}","item":"{item}","ts":{},"action":"click"{named}}}"#,
                    now()
                ));
            }
        }
        let (status, reply) = server.post_json(
            "/v1/impressions",
            &format!(r#"{{"impressions":[{}]}}"#, posted.join(",")),
        );
        assert_eq!(status, 202, "{reply}");
        assert_eq!(reply["recorded"], posted.len());
        let (status, reply) = server.post_json("/v1/events", &events_body(&clicks));
        assert_eq!(status, 202, "{reply}");
        recorded(&server, 40.0);
    }
    // After a restart the report holds everything: impressions are on disk.
    let server = Server::start_with(dir.path(), config(FILE));
    let (status, report) = server.get_json("/v1/experiments/interests/report");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["control"], "one");
    assert_eq!(report["unattributed"], 0, "{report}");
    for arm in report["arms"].as_array().unwrap() {
        let name = arm["arm"].as_str().unwrap();
        let (users, items, engagements) = expected[name];
        assert_eq!(arm["users"], users, "{name}: {arm}");
        assert_eq!(arm["impressions"], users, "{name}");
        assert_eq!(arm["items_shown"], items, "{name}");
        assert_eq!(arm["engagements"], engagements, "{name}");
        assert_eq!(arm["ctr_by_position"][1], engagements as f64 / users as f64);
        let daily = arm["daily"].as_array().unwrap();
        let by_day: u64 = daily
            .iter()
            .map(|d| d["engagements"].as_u64().unwrap())
            .sum();
        assert_eq!(by_day, engagements, "{name}: {daily:?}");
        // Our arms' answers are timed; the team's are not.
        assert_eq!(arm["latency"].is_object(), name != "current", "{name}");
    }
    let (_, missing) = server.get_json("/v1/experiments/nope/report");
    assert_eq!(error_code(&missing), "unknown_experiment");
    let (status, bad) = server.get_json("/v1/experiments/interests/report?from=yesterday");
    assert_eq!((status, error_code(&bad)), (400, "bad_request"), "{bad}");
    // The part of a standalone server is everyone (partition 0 of 1), and it is the report.
    let (status, part) = server.get_json("/v1/experiments/interests/partial");
    assert_eq!(status, 200, "{part}");
    assert_eq!(
        part["partitions"],
        serde_json::json!({"count": 1, "counted": [0]})
    );
    let partial: pinnersage_eval::online::Partial =
        serde_json::from_value(part["partial"].clone()).unwrap();
    let arms: pinnersage_eval::online::ArmsOf =
        serde_json::from_value(part["arms"].clone()).unwrap();
    let again = serde_json::to_value(partial.report(&arms)).unwrap();
    // Equal, up to the last digit JSON numbers may lose in a round trip.
    assert!(
        nearly(&again["arms"], &report["arms"]),
        "{again} vs {report}"
    );
    let (status, bad) = server.get_json("/v1/experiments/interests/partial?partitions=1");
    assert_eq!(
        (status, error_code(&bad)),
        (400, "partition_not_held"),
        "{bad}"
    );
    let (status, bad) = server.get_json("/v1/experiments/interests/partial?partitions=x");
    assert_eq!((status, error_code(&bad)), (400, "bad_request"), "{bad}");
}

#[test]
fn posted_impressions_are_checked_and_recorded_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let split = Experiments::parse(FILE, &ServeConfig::default().retrieval).unwrap();
    let server = Server::start_with(dir.path(), config(FILE));
    // "u3" is forced into the external arm; find a user of an arm we serve.
    let ours = (0..40)
        .map(|u| format!("u{u}"))
        .find(|u| split.assign(u).unwrap().arm == "one")
        .unwrap();
    let good = r#"{"request_id":"r1","experiment":"interests","arm":"current","user":"u3","items":["i1",{"item":"i2","interest":"i9"}]}"#;
    let bad = |field: &str, value: &str| {
        let mut v: serde_json::Value = serde_json::from_str(good).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    };
    let future = format!("{}", i64::MAX / 2);
    let cases = [
        (bad("experiment", r#""other""#), "unknown_experiment"),
        (bad("arm", r#""nope""#), "unknown_arm"),
        (bad("arm", r#""one""#), "not_external"),
        (bad("user", &format!("{ours:?}")), "wrong_arm"),
        (bad("items", r#"["not-an-item"]"#), "unknown_item"),
        (bad("time", &future), "future_timestamp"),
        (bad("time", "1000"), "expired"),
        (bad("request_id", r#""""#), "bad_impression"),
        (bad("user", "[1]"), "bad_impression"),
    ];
    for (impression, code) in &cases {
        // The good one first: nothing of a request with a bad one is recorded.
        let body = format!(r#"{{"impressions":[{good},{impression}]}}"#);
        let (status, reply) = server.post_json("/v1/impressions", &body);
        assert_eq!((status, error_code(&reply)), (400, *code), "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("impression 1: "),
            "{reply}"
        );
    }
    for (body, code, expected) in [
        ("{}".to_owned(), "bad_body", 400),
        (r#"{"impressions":[]}"#.to_owned(), "bad_body", 400),
        (
            format!(r#"{{"impressions":[{}]}}"#, vec![good; 10_001].join(",")),
            "too_many_impressions",
            413,
        ),
    ] {
        let (status, reply) = server.post_json("/v1/impressions", &body);
        assert_eq!((status, error_code(&reply)), (expected, code), "{reply}");
    }
    let (_, text) = server.request("GET", "/metrics");
    assert_eq!(metric(&text, "pinnersage_impressions_recorded_total"), 0.0);
    let (status, reply) =
        server.post_json("/v1/impressions", &format!(r#"{{"impressions":[{good}]}}"#));
    assert_eq!((status, &reply["recorded"]), (202, &serde_json::json!(1)));
    recorded(&server, 1.0);
    // A server without experiments takes no impressions.
    drop(server);
    let plain = Server::start(dir.path());
    let (status, reply) =
        plain.post_json("/v1/impressions", &format!(r#"{{"impressions":[{good}]}}"#));
    assert_eq!((status, error_code(&reply)), (400, "unknown_experiment"));
}

/// The simulated population of the end-to-end test: items around topics, users whose history
/// engages with 2 to 4 latent interests (topics) over the last 60 days.
struct Population {
    centres: Vec<Vec<f32>>,
    items: Vec<Vec<f32>>,
    interests: Vec<Vec<usize>>,
}

const SIM_TOPICS: usize = 24;
const SIM_PER_TOPIC: usize = 150;
const SIM_USERS: usize = 800;

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// Builds the data directory of the population (catalog, history, batch profiles at `now`,
/// index), through the same library calls as `import items`, `import events`, `batch` and
/// `index build`.
fn population(dir: &std::path::Path, now: i64, rng: &mut SplitMix64) -> Population {
    use pinnersage_catalog::catalog::{Catalog, CatalogBuilder};
    use pinnersage_index::persist::{self, BuildOptions};
    use pinnersage_store::events::{Event, EventStore};
    let centres: Vec<Vec<f32>> = (0..SIM_TOPICS)
        .map(|_| (0..DIM).map(|_| gauss(rng)).collect())
        .collect();
    let mut builder = CatalogBuilder::new(dir, DIM, true).unwrap();
    let mut items = Vec::new();
    for i in 0..SIM_TOPICS * SIM_PER_TOPIC {
        let v: Vec<f32> = centres[i % SIM_TOPICS]
            .iter()
            .map(|&x| x + 0.3 * gauss(rng))
            .collect();
        builder.push(&format!("i{i}"), &mut v.clone()).unwrap();
        items.push(unit(v));
    }
    builder.commit("population").unwrap();
    let mut interests = Vec::new();
    let mut events = Vec::new();
    let mut draw = |n: u64| (rng.next_u64() % n) as usize;
    for u in 0..SIM_USERS {
        let n = 2 + draw(3);
        let mut topics: Vec<usize> = Vec::new();
        while topics.len() < n {
            let t = draw(SIM_TOPICS as u64);
            if !topics.contains(&t) {
                topics.push(t);
            }
        }
        for &topic in &topics {
            for _ in 0..8 {
                let item = topic + SIM_TOPICS * draw(SIM_PER_TOPIC as u64);
                events.push(Event {
                    user: format!("p{u}"),
                    item: format!("i{item}"),
                    time: now - 3_600 - draw(60 * 86_400) as i64,
                    action: "click".into(),
                    weight: 1.0,
                    id: None,
                    request_id: None,
                });
            }
        }
        interests.push(topics);
    }
    let store = EventStore::open(dir).unwrap();
    store.insert(&events).unwrap();
    drop(store);
    batch(dir, now);
    let catalog = Catalog::open(dir).unwrap();
    persist::build(dir, &catalog, &BuildOptions::default(), &()).unwrap();
    Population {
        centres: centres.into_iter().map(unit).collect(),
        items,
        interests,
    }
}

/// A standard normal draw (Box-Muller).
fn gauss(rng: &mut SplitMix64) -> f32 {
    let (u, v) = (rng.next_f64().max(1e-12), rng.next_f64());
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

/// The paper's claim on live traffic, end to end: the real batch, index and server serve two
/// arms to a simulated population (fixed seed) whose users engage with a shown item with a
/// probability that falls with its distance to the interest they are in at the moment (one of
/// their latent interests, at random each session). pinnersage's defaults (3 interests sampled
/// by importance) against the single most important interest: the server records what it
/// showed, the clicks are posted to /v1/events (half naming their answer), and the served report
/// finds the several-interest arm better, with an interval that excludes zero, engagement coming
/// from several interests in it and from one in the other, and no sample-ratio mismatch.
#[test]
fn a_simulated_population_finds_several_interests_better_through_the_real_server() {
    const SIM_FILE: &str = r#"
[[experiment]]
name = "interests"
salt = "simulated"
control = "one"

[[experiment.arm]]
name = "one"
share = 0.5
selection = "top"
medoids = 1

[[experiment.arm]]
name = "pinnersage"
share = 0.5
"#;
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut rng = SplitMix64::new(2026);
    let world = population(dir.path(), now, &mut rng);
    let server = Server::start_with(dir.path(), config(SIM_FILE));
    let mut clicks = Vec::new();
    for (u, interests) in world.interests.iter().enumerate() {
        for _session in 0..3 {
            let user = format!("p{u}");
            let (status, body) = server.get_json(&format!("/v1/users/{user}/recommendations?k=10"));
            assert_eq!(status, 200, "{body}");
            let active =
                &world.centres[interests[(rng.next_u64() % interests.len() as u64) as usize]];
            // The first engaging item ends the session.
            for item in ids(&body["items"]) {
                let row: usize = item[1..].parse().unwrap();
                let d2: f32 = (world.items[row].iter().zip(active))
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                if rng.next_f64() < 0.4 * f64::from((-d2 / 0.2).exp()) {
                    let named = if rng.next_f64() < 0.5 {
                        format!(
                            r#","request_id":"{}""#,
                            body["request_id"].as_str().unwrap()
                        )
                    } else {
                        String::new()
                    };
                    clicks.push((user.clone(), item, named));
                    break;
                }
            }
        }
    }
    // The clicks come in after the sessions (a client's log), so every arm served the same
    // batch profiles; they are timed after every answer (one without a request id is
    // attributed to the user's last answer before it), however long the setup took.
    let clicked_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let clicks: Vec<String> = (clicks.iter())
        .map(|(user, item, named)| {
            format!(
                r#"{{"user":"{user}","item":"{item}","ts":{clicked_at},"action":"click"{named}}}"#
            )
        })
        .collect();
    let (status, reply) = server.post_json("/v1/events", &events_body(&clicks));
    assert_eq!(status, 202, "{reply}");
    recorded(&server, (3 * SIM_USERS) as f64);
    let (status, report) = server.get_json(&format!(
        "/v1/experiments/interests/report?from={}&to={}",
        now - 60,
        clicked_at + 120
    ));
    assert_eq!(status, 200, "{report}");
    let arm = |name: &str| {
        (report["arms"].as_array().unwrap().iter())
            .find(|a| a["arm"] == name)
            .unwrap()
            .clone()
    };
    let (one, several) = (arm("one"), arm("pinnersage"));
    let number = |v: &serde_json::Value| v.as_f64().unwrap();
    eprintln!(
        "CTR one {:.4}, pinnersage {:.4} ({:+.1}%, interval {}); engaged users {:.3} vs {:.3}; \
         interests engaged per engaged user {:.2} vs {:.2}; {} clicks",
        number(&one["ctr"]["value"]),
        number(&several["ctr"]["value"]),
        100.0 * number(&several["ctr"]["vs_control"]["relative"]),
        several["ctr"]["vs_control"]["interval"],
        number(&one["engaged_user_rate"]["value"]),
        number(&several["engaged_user_rate"]["value"]),
        number(&one["interests_engaged_per_engaged_user"]),
        number(&several["interests_engaged_per_engaged_user"]),
        clicks.len()
    );
    assert_eq!(
        number(&one["users"]) + number(&several["users"]),
        SIM_USERS as f64
    );
    assert_eq!(report["unattributed"], 0, "every click was on a shown item");
    assert_eq!(report["sample_ratio"]["mismatch"], false, "{report}");
    let versus = &several["ctr"]["vs_control"];
    assert_eq!(versus["significant"], true, "{versus}");
    assert!(number(&versus["interval"][0]) > 0.0, "{versus}");
    let engaged = &several["engaged_user_rate"]["vs_control"];
    assert!(number(&engaged["absolute"]) > 0.0, "{engaged}");
    // One interest shown: engagement from one interest; several shown: from several.
    assert!(
        number(&one["interests_engaged_per_engaged_user"]) < 1.01,
        "{one}"
    );
    assert!(
        number(&several["interests_engaged_per_engaged_user"]) > 1.1,
        "{several}"
    );
}

/// The alpha of the variant the tests below cut the generation at (the data's own batch is at
/// the default, 1.75): finer interests.
const FINE: f64 = 0.4;

const ALPHA_FILE: &str = r#"
[[experiment]]
name = "alpha"
salt = "cuts"

[[experiment.arm]]
name = "default"
share = 0.5

[[experiment.arm]]
name = "fine"
share = 0.5
alpha = 0.4
"#;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn batch_with(dir: &std::path::Path, now: i64, alpha: f64, variants: &[f64]) {
    use pinnersage_pipeline::batch::{BatchConfig, run_batch};
    let mut config = BatchConfig::new(now);
    config.settings.params.alpha = alpha;
    config.variant_alphas = variants.to_vec();
    run_batch(dir, &config, &|_| {}).unwrap();
}

/// An arm (or a request) that asks for the profiles cut at another alpha is answered exactly as
/// a server whose batch ran at that alpha answers, online actions included; a generation
/// without that cut is refused at start and not served by a reload.
#[test]
fn an_arm_reads_the_generations_variant_at_its_alpha_as_a_batch_at_that_alpha_would_serve() {
    let scratch = tempfile::tempdir().unwrap();
    let (cut, alone) = (scratch.path().join("cut"), scratch.path().join("alone"));
    make_data_dir(&cut);
    copy_dir(&cut, &alone);
    batch_with(&cut, NOW, 1.75, &[FINE]);
    batch_with(&alone, NOW, FINE, &[]);
    let experiments = config(ALPHA_FILE);
    assert_eq!(experiments.experiments.required_cuts(), [FINE]);
    let server = Server::start_with(&cut, experiments);
    let reference = Server::start(&alone);
    // Online actions after the batch, on both: each user's are clustered at the arm's alpha.
    let online: Vec<String> = (0..40)
        .filter(|u| u % 3 == 0)
        .flat_map(|u| {
            (0..4).map(move |e| {
                event(
                    &format!("u{u}"),
                    7 * u + 13 * e,
                    NOW + 60 * e as i64,
                    &format!("o{u}-{e}"),
                )
            })
        })
        .collect();
    for s in [&server, &reference] {
        let (status, reply) = s.post_json("/v1/events", &events_body(&online));
        assert_eq!(status, 202, "{reply}");
    }
    let (mut fine, mut finer_profiles) = (0, 0);
    for u in 0..40 {
        let path = format!("/v1/users/u{u}/recommendations?k=12&selection=all");
        let (status, answer) = server.get_json(&path);
        assert_eq!(status, 200, "{answer}");
        let (_, asked) = server.get_json(&format!("{path}&alpha={FINE}"));
        let (_, expected) = reference.get_json(&path);
        // A request's alpha reads the variant; the arm's does the same.
        assert_eq!(asked["items"], expected["items"], "u{u}");
        assert_eq!(asked["medoids"], expected["medoids"], "u{u}");
        if answer["arm"] == "fine" {
            fine += 1;
            assert_eq!(answer["items"], expected["items"], "u{u}");
            assert_eq!(answer["medoids"], expected["medoids"], "u{u}");
            // The profile and the map (the explorer) show what the user is served.
            for view in ["profile", "map"] {
                let path = format!("/v1/users/u{u}/{view}");
                let (status, shown) = server.get_json(&path);
                assert_eq!(status, 200, "{shown}");
                let (_, reference) = reference.get_json(&path);
                let field = if view == "map" { "points" } else { "clusters" };
                assert_eq!(shown[field], reference[field], "u{u} {view}");
            }
            assert_eq!(
                server.get_json(&format!("/v1/users/u{u}/profile")).1["alpha"],
                FINE
            );
            let (_, own) = server.get_json(&format!("/v1/users/u{u}/profile?alpha=1.75"));
            assert_eq!(own["alpha"], 1.75);
        } else {
            let (_, own) = server.get_json(&format!("{path}&alpha=1.75"));
            assert_eq!(answer["medoids"], own["medoids"], "u{u}");
        }
        let (_, coarse) = server.get_json(&format!("{path}&alpha=1.75"));
        let count = |a: &serde_json::Value| a["medoids"].as_array().unwrap().len();
        finer_profiles += usize::from(count(&expected) > count(&coarse));
    }
    assert!(fine > 5 && fine < 35, "{fine} users in the fine arm");
    assert!(
        finer_profiles > 10,
        "the cut changes profiles: {finer_profiles} of 40"
    );
    let (_, listed) = server.get_json("/v1/admin/experiments");
    assert_eq!(listed["experiments"][0]["arms"][1]["alpha"], FINE);

    // A cut the generation does not hold: 404 naming what is served; no alpha at all: 400.
    for (bad, status, code) in [
        ("0.3", 404, "unknown_cut"),
        ("-1", 400, "bad_request"),
        ("NaN", 400, "bad_request"),
    ] {
        for view in ["recommendations", "profile", "map"] {
            let (got, answer) = server.get_json(&format!("/v1/users/u1/{view}?alpha={bad}"));
            assert_eq!(
                (got, error_code(&answer)),
                (status, code),
                "{view} {bad}: {answer}"
            );
        }
    }
    let (_, answer) = server.get_json("/v1/users/u1/recommendations?alpha=0.3");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("0.3") && message.contains("--variant-alpha"),
        "{message}"
    );

    // A new generation without the arm's cut is published (the server runs the batch: it owns
    // the event store) but not served; one with it is served.
    let (_, health) = server.get_json("/healthz");
    let served = health["profiles"].clone();
    let body = format!(r#"{{"now": {}}}"#, NOW + 60);
    let (status, answer) = server.post_json("/v1/admin/batch", &body);
    assert_eq!(
        (status, error_code(&answer)),
        (409, "missing_cut"),
        "{answer}"
    );
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("alpha 0.4") && message.contains("--variant-alpha"),
        "{message}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300)); // reload ticks: still refused
    assert_eq!(server.get_json("/healthz").1["profiles"], served);
    let (_, answer) = server.get_json(&format!("/v1/users/u3/recommendations?alpha={FINE}"));
    assert!(
        answer["items"].as_array().is_some_and(|a| !a.is_empty()),
        "{answer}"
    );
    let body = format!(r#"{{"now": {}, "variant_alphas": [0.4, 3.0]}}"#, NOW + 120);
    let (status, answer) = server.post_json("/v1/admin/batch", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["variants"][1]["alpha"], 3.0);
    assert_ne!(server.get_json("/healthz").1["profiles"], served);
    drop(server);

    // At start: the current generation must hold every arm's cut.
    batch_with(&cut, NOW + 180, 1.75, &[]);
    assert!(pinnersage_server::Server::open(&cut, ServeConfig::default()).is_ok());
    let refused = pinnersage_server::Server::open(&cut, config(ALPHA_FILE))
        .err()
        .expect("refused");
    let message = refused.to_string();
    assert!(
        message.contains("alpha 0.4") && message.contains("--variant-alpha"),
        "{message}"
    );
}
