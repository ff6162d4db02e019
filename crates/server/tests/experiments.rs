//! Online experiments over real HTTP: every answer names its request and the user's arm, the arm
//! sets the retrieval, and it is the same across requests and restarts.

mod common;

use std::collections::HashSet;

use common::*;
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
