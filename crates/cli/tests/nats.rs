//! The NATS JetStream door: a real `nats-server` (Debian's package; `.ci/run` installs it),
//! the real binary consuming from it, kill -9 while messages stream in.
//!
//! Skipped with a note when `nats-server` is not installed, unless `PINNERSAGE_REQUIRE_NATS=1`
//! (set by CI), which makes a missing server a failure.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use pinnersage_store::events::EventStore;

mod common;
use common::{RunningServer, Scratch, bin, nats_server};

/// A JetStream-enabled nats-server on a free loopback port; killed on drop.
struct Nats {
    child: Child,
    url: String,
}

impl Nats {
    fn start(exe: &Path, store: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(exe)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_ok(args: &[&str]) {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const BASE: i64 = 1_700_000_000;

fn message(n: u64) -> String {
    format!(
        r#"{{"events":[{{"user":"u{}","item":"i{}","ts":{},"id":"m{n}"}}]}}"#,
        n % 9,
        n % 5,
        BASE + n as i64
    )
}

#[test]
fn nats_messages_are_stored_once_across_kill_9_and_bad_ones_are_dropped() {
    let Some(exe) = nats_server() else { return };
    let dir = Scratch::new("nats");
    let nats = Nats::start(&exe, &dir.join("jetstream"));
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    let items = dir.join("items.csv");
    std::fs::write(&items, "id,a,b\ni0,1,0\ni1,0,1\ni2,1,1\ni3,1,-1\ni4,-1,0\n").unwrap();
    run_ok(&["import", "items", "--data-dir", d, items.to_str().unwrap()]);
    run_ok(&["index", "build", "--data-dir", d, "--kind", "exact"]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async {
        let client = async_nats::connect(&nats.url).await.unwrap();
        let js = jetstream::new(client);
        js.get_or_create_stream(jetstream::stream::Config {
            name: "PINNERSAGE_EVENTS".into(),
            subjects: vec!["pinnersage.events".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        js
    });
    let publish = |from: u64, to: u64| {
        rt.block_on(async {
            let mut acks = Vec::new();
            for n in from..to {
                acks.push(
                    js.publish("pinnersage.events", message(n).into())
                        .await
                        .unwrap(),
                );
            }
            for ack in acks {
                ack.await.unwrap(); // stored by JetStream
            }
        })
    };
    rt.block_on(async {
        for poison in [
            "not json",
            r#"{"events":[{"user":"x","item":"nope","ts":1}]}"#,
        ] {
            js.publish("pinnersage.events", poison.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });

    // Publish while the server is killed -9 and restarted.
    const TOTAL: u64 = 4_000;
    let mut published = 0;
    for cycle in 0..4 {
        let mut server = RunningServer::start_with(d, &["--nats", &nats.url]);
        let chunk = TOTAL / 4;
        publish(published, published + chunk);
        published += chunk;
        std::thread::sleep(Duration::from_millis(50 + 40 * cycle));
        server.kill9();
    }

    // A last run drains the consumer.
    let server = RunningServer::start_with(d, &["--nats", &nats.url]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = rt.block_on(async {
            let stream = js.get_stream("PINNERSAGE_EVENTS").await.unwrap();
            let mut consumer: jetstream::consumer::PullConsumer =
                stream.get_consumer("pinnersage").await.unwrap();
            consumer.info().await.unwrap().clone()
        });
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "consumer not drained: {info:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = server.request("GET", "/v1/users/u3/profile", "");
    assert!(profile.contains("\"online\":true"), "{profile}");
    drop(server);

    let store = EventStore::open(&data).unwrap();
    let mut times = Vec::new();
    store
        .for_each_after(i64::MIN, |user, e| {
            let n = (e.time - BASE) as u64;
            assert_eq!(
                (user, e.item.as_str()),
                (
                    format!("u{}", n % 9).as_str(),
                    format!("i{}", n % 5).as_str()
                )
            );
            times.push(n);
        })
        .unwrap();
    times.sort_unstable();
    assert_eq!(
        times,
        (0..TOTAL).collect::<Vec<_>>(),
        "every published event stored exactly once"
    );
}

#[test]
fn nats_event_ids_are_per_user() {
    let Some(exe) = nats_server() else { return };
    let dir = Scratch::new("nats-ids");
    let nats = Nats::start(&exe, &dir.join("jetstream"));
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    common::five_item_catalog(&data);
    let server = RunningServer::start_with(d, &["--nats", &nats.url]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Two producers numbering their events 1, 2, and a re-stamped retry of one of them.
    let event = |user: &str, id: &str, ts: i64| {
        format!(r#"{{"user":"{user}","item":"i1","ts":{ts},"id":"{id}"}}"#)
    };
    let messages = [
        format!(
            r#"{{"events":[{},{}]}}"#,
            event("ua", "1", BASE),
            event("ua", "2", BASE + 1)
        ),
        format!(
            r#"{{"events":[{},{}]}}"#,
            event("ub", "1", BASE),
            event("ub", "2", BASE + 1)
        ),
        format!(r#"{{"events":[{}]}}"#, event("ua", "1", BASE + 9)),
    ];
    rt.block_on(async {
        let client = async_nats::connect(&nats.url).await.unwrap();
        let js = jetstream::new(client);
        for message in messages {
            js.publish("pinnersage.events", message.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    let acked = || {
        let metrics = server.request("GET", "/metrics", "");
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("pinnersage_nats_acked_total ")?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked() < 3.0 {
        assert!(Instant::now() < deadline, "the messages were not consumed");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    let store = EventStore::open(&data).unwrap();
    for user in ["ua", "ub"] {
        let times: Vec<i64> = store
            .user_events(user, i64::MIN, i64::MAX)
            .unwrap()
            .iter()
            .map(|e| e.time)
            .collect();
        assert_eq!(times, [BASE, BASE + 1], "{user}: both ids stored once");
    }
}
