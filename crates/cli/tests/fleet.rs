//! The fleet on loopback: a 3-node `nats-server` cluster (Debian's package, JetStream clustered,
//! stream replicas 3) and 3 `pinnersage serve --fleet` replicas, each with its own data
//! directory, importing the profile generations shipped to one shared directory.
//!
//! Skipped with a note when `nats-server` is not installed, unless `PINNERSAGE_REQUIRE_NATS=1`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use pinnersage_store::events::EventStore;
use pinnersage_store::profiles::ProfileStore;

mod common;
use common::{FIVE_ITEMS_CSV, RunningServer, Scratch, bin, events_body, nats_server};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server cluster on loopback; every node is killed on drop.
struct Cluster {
    exe: PathBuf,
    args: Vec<Vec<String>>,
    ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
}

impl Cluster {
    fn start(exe: &Path, dir: &Path, n: usize) -> Self {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let args = (0..n)
            .map(|i| {
                let mut args: Vec<String> = vec![
                    "-a".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    ports[i].to_string(),
                    "-js".into(),
                    "-sd".into(),
                    dir.join(format!("n{i}")).display().to_string(),
                ];
                if n > 1 {
                    let others: Vec<String> = (0..n)
                        .filter(|&j| j != i)
                        .map(|j| format!("nats://127.0.0.1:{}", routes[j]))
                        .collect();
                    args.extend([
                        "--server_name".into(),
                        format!("n{i}"),
                        "--cluster_name".into(),
                        "pinnersage-test".into(),
                        "--cluster".into(),
                        format!("nats://127.0.0.1:{}", routes[i]),
                        "--routes".into(),
                        others.join(","),
                    ]);
                }
                args
            })
            .collect();
        let mut cluster = Self {
            exe: exe.to_path_buf(),
            args,
            ports,
            nodes: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            cluster.restart(i);
        }
        cluster
    }

    fn restart(&mut self, i: usize) {
        let child = Command::new(&self.exe)
            .args(&self.args[i])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.nodes[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.ports[i])).is_err() {
            assert!(Instant::now() < deadline, "nats-server n{i} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn urls(&self) -> String {
        let urls: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        urls.join(",")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}

fn run_ok(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn metric(server: &RunningServer, name: &str) -> f64 {
    server.metric(name).unwrap_or(0.0)
}

fn wait_for(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_ready(server: &mut RunningServer) {
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&last) != 200 {
        if Instant::now() > deadline {
            server.kill9();
            panic!("not ready: {last}; its log: {}", server.rest_of_stderr());
        }
        std::thread::sleep(Duration::from_millis(50));
        last = server.request("GET", "/readyz", "");
    }
}

fn profile_generation(server: &RunningServer) -> String {
    let ready = server.request("GET", "/readyz", "");
    let v: serde_json::Value = serde_json::from_str(body(&ready)).unwrap_or_default();
    v["profiles"].as_str().unwrap_or_default().to_owned()
}

/// An answer's body without its `request_id` (unique per answer): what two servers share when
/// they answer the same.
fn content(answer: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body(answer)) {
        Ok(serde_json::Value::Object(mut fields)) => {
            fields.remove("request_id");
            serde_json::Value::Object(fields).to_string()
        }
        _ => body(answer).to_owned(),
    }
}

/// Every user's recommendations and profile, as one replica answers them.
fn answers(server: &RunningServer) -> Vec<String> {
    (0..7)
        .flat_map(|u| {
            [
                format!("/v1/users/u{u}/recommendations?k=4"),
                format!("/v1/users/u{u}/profile"),
            ]
        })
        .map(|path| content(&server.request("GET", &path, "")))
        .collect()
}

/// A runtime and a JetStream context on `cluster`, with the events stream created on its three
/// nodes (once the cluster has a leader).
fn replicated_stream(cluster: &Cluster) -> (tokio::runtime::Runtime, jetstream::Context) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async {
        let client = async_nats::connect(cluster.urls().split(',').collect::<Vec<_>>())
            .await
            .unwrap();
        let js = jetstream::new(client);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let created = js
                .get_or_create_stream(jetstream::stream::Config {
                    name: "PINNERSAGE_EVENTS".into(),
                    subjects: vec!["pinnersage.events.*".into()],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => break,
                Err(e) => assert!(Instant::now() < deadline, "no stream: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        js
    });
    (rt, js)
}

const BASE: u64 = 1_700_000_000;
/// The first shipped generation's `now`; online events come after it.
const NOW1: u64 = BASE + 1_000;

#[test]
fn a_fleet_of_three_replicas_serves_as_one() {
    let Some(exe) = nats_server() else { return };
    let dir = Scratch::new("fleet");
    let mut cluster = Cluster::start(&exe, &dir.join("nats"), 3);
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    // One catalog and index, built once and copied to every replica (shipped as files).
    let seed = dir.join("seed");
    let items = dir.join("items.csv");
    std::fs::write(&items, FIVE_ITEMS_CSV).unwrap();
    run_ok(&["import", "items", "--data-dir", &s(&seed), &s(&items)]);
    run_ok(&["index", "build", "--data-dir", &s(&seed), "--kind", "exact"]);
    // The batch host's history, its profiles shipped to the shared directory.
    let history: String = (0..70)
        .map(|n| format!("u{},i{},{}\n", n % 7, (n / 7) % 5, BASE + n))
        .collect();
    let (table, shared, shipped) = ship_history(&dir, &seed, &history, &[]);
    assert!(shipped.contains("gen-000001"), "{shipped}");

    // The stream, replicated on the three nodes (created once the cluster has a leader).
    let (rt, js) = replicated_stream(&cluster);

    let urls = cluster.urls();
    let shared_s = s(&shared);
    let replica = |name: &str| {
        let data = dir.join(name);
        if !data.exists() {
            copy_seed(&seed, &data);
        }
        RunningServer::start_with(
            &s(&data),
            &[
                "--fleet",
                "--nats",
                &urls,
                "--stream-replicas",
                "3",
                "--partitions",
                "4",
                "--profiles-from",
                &shared_s,
                "--reload-seconds",
                "0.2",
            ],
        )
    };
    let mut a = replica("a");
    let mut b = replica("b");
    wait_ready(&mut a);
    wait_ready(&mut b);
    assert_eq!(profile_generation(&a), profile_generation(&b));
    assert!(
        !profile_generation(&a).is_empty(),
        "shipped profiles served"
    );

    // An event posted to A is visible in B's profile.
    let first: Vec<u64> = (1..=20).collect();
    let posted = a.request("POST", "/v1/events", &events_body(&first, NOW1));
    assert_eq!(status(&posted), 202, "{posted}");
    wait_for("B's online profile", 30, || {
        body(&b.request("GET", "/v1/users/u3/profile", "")).contains("\"online\":true")
    });

    // Ingest into A while one NATS node and replica B are killed -9 and restarted.
    let acked = Arc::new(Mutex::new(BTreeSet::from_iter(first.iter().copied())));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a_addr = a.addr.clone();
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 100;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<u64> = (n..n + 10).collect();
                let response =
                    common::http(&a_addr, "POST", "/v1/events", &events_body(&batch, NOW1))
                        .unwrap_or_default();
                if status(&response) == 202 {
                    acked.lock().unwrap().extend(batch);
                }
                n += 10;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    cluster.kill9(0);
    std::thread::sleep(Duration::from_millis(700));
    b.kill9();
    std::thread::sleep(Duration::from_millis(700));
    let b = replica("b");
    cluster.restart(0);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let acked_before_c = acked.lock().unwrap().len();
    assert!(acked_before_c > 100, "ingest kept going: {acked_before_c}");

    // A replica started last is ready only once it has consumed what was acknowledged.
    let mut c = replica("c");
    wait_ready(&mut c);
    let stored = metric(&c, "pinnersage_events_stored_total");
    assert!(
        stored >= acked_before_c as f64,
        "C ready with {stored} of {acked_before_c} events"
    );

    // A poison message is dropped and counted; the partition keeps flowing.
    rt.block_on(async {
        js.publish("pinnersage.events.1", "not json".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let after: Vec<u64> = (100_000..100_021).collect();
    let posted = a.request("POST", "/v1/events", &events_body(&after, NOW1));
    assert_eq!(status(&posted), 202, "{posted}");
    acked.lock().unwrap().extend(after);
    for (name, r) in [("a", &a), ("b", &b), ("c", &c)] {
        wait_for(&format!("the poison message counted on {name}"), 60, || {
            metric(r, "pinnersage_nats_terminated_total") >= 1.0
        });
    }

    // The same answers for every user on every replica.
    wait_for("the replicas to agree", 60, || {
        let reference = answers(&a);
        answers(&b) == reference && answers(&c) == reference
    });
    assert!(
        answers(&a)[1].contains("\"online\":true"),
        "{:?}",
        answers(&a)[1]
    );

    // A new shipped generation rolls over on every replica: the online actions it covers go.
    let now2 = (NOW1 + 200_000).to_string();
    let shipped = run_ok(&["ship", "--to", &s(&shared), "--now", &now2, &s(&table)]);
    assert!(shipped.contains("gen-000002"), "{shipped}");
    let old = profile_generation(&a);
    for r in [&a, &b, &c] {
        wait_for("the new generation", 30, || {
            let g = profile_generation(r);
            !g.is_empty() && g != old
        });
        let profile = r.request("GET", "/v1/users/u3/profile", "");
        assert!(!profile.contains("\"online\":true"), "{profile}");
    }
    wait_for("the replicas to agree on the new generation", 30, || {
        let reference = answers(&a);
        answers(&b) == reference && answers(&c) == reference
    });

    // Every replica drains its consumer: acknowledged messages a killed replica held are
    // redelivered to it (after the ack wait).
    let consumers: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|r| {
            let id = std::fs::read_to_string(dir.join(r).join("replica-id")).unwrap();
            format!("pinnersage-{}", id.trim())
        })
        .collect();
    wait_for("every replica's consumer to drain", 60, || {
        rt.block_on(async {
            let stream = js.get_stream("PINNERSAGE_EVENTS").await.unwrap();
            let mut drained = true;
            for name in &consumers {
                let mut consumer: jetstream::consumer::PullConsumer =
                    stream.get_consumer(name).await.unwrap();
                let info = consumer.info().await.unwrap();
                drained &= info.num_pending == 0 && info.num_ack_pending == 0;
            }
            drained
        })
    });

    // NATS down while serving: posts answer 503, reads keep working.
    for i in 0..3 {
        cluster.kill9(i);
    }
    let posted = a.request("POST", "/v1/events", &events_body(&[500_000], NOW1));
    assert_eq!(status(&posted), 503, "{posted}");
    assert!(posted.contains("stream_unavailable"), "{posted}");
    let read = a.request("GET", "/v1/users/u3/recommendations?k=3", "");
    assert_eq!(status(&read), 200, "{read}");

    // No acknowledged event is missing on any replica.
    let acked = acked.lock().unwrap().clone();
    for (name, mut r) in [("a", a), ("b", b), ("c", c)] {
        assert!(r.terminate().success());
        let store = EventStore::open(&dir.join(name)).unwrap();
        let mut held = BTreeSet::new();
        store
            .for_each_after(i64::MIN, |_, e| {
                held.insert(e.time as u64 - NOW1);
            })
            .unwrap();
        let missing: Vec<&u64> = acked.difference(&held).collect();
        assert!(missing.is_empty(), "replica {name} lost {missing:?}");
    }
}

#[test]
fn a_replica_holding_some_partitions_stores_only_their_users() {
    use pinnersage_server::fleet::partition_of;
    let Some(exe) = nats_server() else { return };
    let dir = Scratch::new("fleet-partitions");
    let cluster = Cluster::start(&exe, &dir.join("nats"), 1);
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    let items = dir.join("items.csv");
    std::fs::write(&items, FIVE_ITEMS_CSV).unwrap();
    run_ok(&["import", "items", "--data-dir", d, items.to_str().unwrap()]);
    run_ok(&["index", "build", "--data-dir", d, "--kind", "exact"]);
    let urls = cluster.urls();
    let args = [
        "--fleet",
        "--nats",
        &urls,
        "--partitions",
        "4",
        "--consume-partitions",
        "1,2",
    ];
    let mut server = RunningServer::start_with(d, &args);
    wait_ready(&mut server);
    // Posted to this replica, published to all four partitions: it keeps users of 1 and 2.
    let ns: Vec<u64> = (1..=70).collect();
    let posted = server.request("POST", "/v1/events", &events_body(&ns, NOW1));
    assert_eq!(status(&posted), 202, "{posted}");
    let held: BTreeSet<String> = (0..7)
        .map(|u| format!("u{u}"))
        .filter(|u| [1, 2].contains(&partition_of(u, 4)))
        .collect();
    assert!(!held.is_empty() && held.len() < 7, "{held:?}");
    let expected = ns
        .iter()
        .filter(|n| held.contains(&format!("u{}", *n % 7)))
        .count();
    wait_for("the held partitions' events", 30, || {
        metric(&server, "pinnersage_events_stored_total") >= expected as f64
    });
    // A user of another partition is refused, loudly: 421 naming the partition.
    for u in 0..7 {
        let user = format!("u{u}");
        for path in ["recommendations?k=2", "profile", "map"] {
            let answer = server.request("GET", &format!("/v1/users/{user}/{path}"), "");
            if held.contains(&user) {
                assert_eq!(status(&answer), 200, "{answer}");
            } else {
                let partition = partition_of(&user, 4);
                assert_eq!(status(&answer), 421, "{answer}");
                assert!(answer.contains("\"misdirected\""), "{answer}");
                assert!(
                    answer
                        .to_ascii_lowercase()
                        .contains(&format!("x-pinnersage-partition: {partition}\r\n")),
                    "{answer}"
                );
                assert!(
                    answer.contains(&format!("partition {partition} of 4")),
                    "{answer}"
                );
            }
        }
    }
    let ready: serde_json::Value =
        serde_json::from_str(body(&server.request("GET", "/readyz", ""))).unwrap();
    assert_eq!(
        ready["partitions"],
        serde_json::json!({"count": 4, "held": [1, 2]})
    );
    assert!(server.terminate().success());
    let store = EventStore::open(&data).unwrap();
    let mut users = BTreeSet::new();
    let mut stored = 0;
    store
        .for_each_after(i64::MIN, |user, _| {
            users.insert(user.to_owned());
            stored += 1;
        })
        .unwrap();
    assert_eq!(users, held);
    assert_eq!(stored, expected);
}

#[test]
fn nats_down_at_startup_is_a_clear_error() {
    let dir = Scratch::new("fleet-down");
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    let items = dir.join("items.csv");
    std::fs::write(&items, FIVE_ITEMS_CSV).unwrap();
    run_ok(&["import", "items", "--data-dir", d, items.to_str().unwrap()]);
    run_ok(&["index", "build", "--data-dir", d, "--kind", "exact"]);
    let url = format!("nats://127.0.0.1:{}", free_port());
    let out = bin()
        .args([
            "serve",
            "--data-dir",
            d,
            "--addr",
            "127.0.0.1:0",
            "--fleet",
            "--nats",
            &url,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

/// The batch host: `history` (CSV rows `user,item,timestamp`) imported beside a copy of `seed`'s
/// catalog and index, batched at [`NOW1`] and shipped to `dir/shared`; returns the profile
/// table, the shared directory and what `ship` (given `ship_args` too) printed.
fn ship_history(
    dir: &Path,
    seed: &Path,
    history: &str,
    ship_args: &[&str],
) -> (PathBuf, PathBuf, String) {
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let batch_dir = dir.join("batch");
    copy_seed(seed, &batch_dir);
    let events = dir.join("events.csv");
    std::fs::write(&events, format!("user,item,timestamp\n{history}")).unwrap();
    run_ok(&[
        "import",
        "events",
        "--data-dir",
        &s(&batch_dir),
        &s(&events),
    ]);
    let table = dir.join("profiles.parquet");
    let now1 = NOW1.to_string();
    let batch = [
        "batch",
        "--data-dir",
        &s(&batch_dir),
        "--now",
        &now1,
        "--out",
        &s(&table),
    ];
    run_ok(&batch);
    let shared = dir.join("shared");
    let (to, table_arg) = (s(&shared), s(&table));
    let mut ship = vec!["ship", "--to", &to, "--now", &now1, &table_arg];
    ship.extend(ship_args);
    let shipped = run_ok(&ship);
    (table, shared, shipped)
}

/// A copy of `seed`'s catalog and index in `data_dir`: a replica's data as the fleet ships it.
fn copy_seed(seed: &Path, data_dir: &Path) {
    for sub in ["catalog", "index"] {
        copy_dir(&seed.join(sub), &data_dir.join(sub));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -r {} {}",
        from.display(),
        to.display()
    );
}

#[test]
fn a_stream_leader_change_costs_no_failed_post() {
    let Some(exe) = nats_server() else { return };
    let dir = Scratch::new("fleet-leader");
    let mut cluster = Cluster::start(&exe, &dir.join("nats"), 3);
    let data = dir.join("a");
    let d = data.to_str().unwrap();
    common::five_item_catalog(&data);
    let (rt, js) = replicated_stream(&cluster);
    let urls = cluster.urls();
    let fleet = [
        "--fleet",
        "--nats",
        &urls,
        "--stream-replicas",
        "3",
        "--partitions",
        "4",
    ];
    let mut a = RunningServer::start_with(d, &fleet);
    wait_ready(&mut a);
    // Kill the node that leads the stream, while posting.
    let leader = rt.block_on(async {
        let mut stream = js.get_stream("PINNERSAGE_EVENTS").await.unwrap();
        let info = stream.info().await.unwrap();
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .unwrap()
    });
    let node: usize = leader.trim_start_matches('n').parse().unwrap();
    cluster.kill9(node);
    let started = Instant::now();
    let mut answers = Vec::new();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(12) {
        let batch: Vec<u64> = (n..n + 5).collect();
        let sent = Instant::now();
        let posted = a.request("POST", "/v1/events", &events_body(&batch, NOW1));
        answers.push((sent.elapsed(), status(&posted)));
        n += 5;
        std::thread::sleep(Duration::from_millis(100));
    }
    let failed: Vec<_> = answers.iter().filter(|(_, s)| *s != 202).collect();
    let slowest = answers
        .iter()
        .map(|(t, _)| *t)
        .fold(Duration::ZERO, Duration::max);
    eprintln!(
        "{} posts after killing the stream leader {leader}, {} failed, the slowest in {slowest:?}",
        answers.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "posts failed during the leader change: {failed:?}"
    );
    assert!(slowest < Duration::from_secs(30), "{slowest:?}");
    // Every acknowledged event reaches the replica's store, once.
    wait_for("the acknowledged events to be stored", 60, || {
        metric(&a, "pinnersage_events_stored_total") >= n as f64
    });
    assert_eq!(metric(&a, "pinnersage_events_stored_total"), n as f64);
}

/// The ids `server` returns as similar to `item` (empty when it answers otherwise).
fn similar(server: &RunningServer, item: &str) -> Vec<String> {
    let answer = server.request("GET", &format!("/v1/items/{item}/similar?k=10"), "");
    let v: serde_json::Value = serde_json::from_str(body(&answer)).unwrap_or_default();
    v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["item"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn item_changes_reach_every_replica_and_a_late_one_catches_up_before_ready() {
    let Some(exe) = nats_server() else { return };
    let dir = Scratch::new("fleet-items");
    let cluster = Cluster::start(&exe, &dir.join("nats"), 3);
    let seed = dir.join("seed");
    // An exact index: what is asserted is where changes reach, not the graph's recall (the
    // server's own tests cover changes in an HNSW graph).
    common::five_item_catalog(&seed);
    let (rt, js) = replicated_stream(&cluster);
    let urls = cluster.urls();
    let replica = |name: &str| {
        let data = dir.join(name);
        if !data.exists() {
            copy_seed(&seed, &data);
        }
        let fleet = [
            "--fleet",
            "--nats",
            &urls,
            "--stream-replicas",
            "3",
            "--partitions",
            "4",
            "--reload-seconds",
            "0.2",
        ];
        let mut server = RunningServer::start_with(data.to_str().unwrap(), &fleet);
        wait_ready(&mut server);
        server
    };
    let a = replica("a");
    let mut b = replica("b");

    // An item posted to A is returned by B; an item deleted on B vanishes from A and B.
    let posted = a.request(
        "POST",
        "/v1/items",
        r#"{"items":[{"id":"new.1","embedding":[1,0.05]},{"id":"moved","embedding":[5,5]}]}"#,
    );
    assert_eq!(status(&posted), 202, "{posted}");
    assert!(body(&posted).contains("\"upserted\":2"), "{posted}");
    wait_for("new.1 similar to i0 on B", 30, || {
        similar(&b, "i0").contains(&"new.1".to_owned())
    });
    let deleted = b.request("DELETE", "/v1/items/i4", "");
    assert_eq!(status(&deleted), 202, "{deleted}");
    for r in [&a, &b] {
        wait_for("i4 gone", 30, || {
            status(&r.request("GET", "/v1/items/i4/similar", "")) == 404
        });
        assert!(similar(r, "i0").contains(&"new.1".to_owned()));
        assert!(!similar(r, "i2").contains(&"i4".to_owned()));
    }

    // Refused like on a standalone server, and nothing published.
    let published = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let mut stream = js.get_stream("PINNERSAGE_ITEMS").await.unwrap();
            stream.info().await.unwrap().state.messages
        })
    };
    let before = published(&rt);
    for (body, code) in [
        (r#"{"items":[{"id":"bad","embedding":[1,2,3]}]}"#, 400),
        (r#"{"items":[{"id":"nan","embedding":[1,"NaN"]}]}"#, 400),
    ] {
        let refused = a.request("POST", "/v1/items", body);
        assert_eq!(status(&refused), code, "{refused}");
    }
    let unknown = a.request("DELETE", "/v1/items/nobody", "");
    assert_eq!(status(&unknown), 404, "{unknown}");
    assert_eq!(published(&rt), before, "a refused change was published");

    // B is down while items change; C starts from the seed copy. Both are ready only once
    // they have applied every change: the first answers after /readyz are already current.
    b.kill9();
    let posted = a.request(
        "POST",
        "/v1/items",
        r#"{"items":[{"id":"new 2","embedding":[1,-0.05]},{"id":"moved","embedding":[-1,0.02]}]}"#,
    );
    assert_eq!(status(&posted), 202, "{posted}");
    let deleted = a.request("POST", "/v1/items/delete", r#"{"ids":["new.1"]}"#);
    assert_eq!(status(&deleted), 202, "{deleted}");
    // Enough changes that applying them takes a while.
    for part in 0..2 {
        let items: Vec<String> = (0..10_000)
            .map(|k| format!(r#"{{"id":"bulk-{part}-{k}","embedding":[{k},-20000]}}"#))
            .collect();
        let posted = a.request(
            "POST",
            "/v1/items",
            &format!(r#"{{"items":[{}]}}"#, items.join(",")),
        );
        assert_eq!(status(&posted), 202, "{}", &posted[..posted.len().min(300)]);
    }
    // Acknowledged once the stream holds them; applied on A too from there.
    let items_on_a = 4.0 + 2.0 + 20_000.0; // i0..i3, moved, new 2, the bulk
    wait_for("A to apply the bulk", 60, || {
        metric(&a, "pinnersage_catalog_items") == items_on_a
    });
    // A change of an item the stream already holds replaces it there: one message per item
    // (new.1, moved, i4, new 2, the bulk).
    assert_eq!(
        published(&rt),
        before + 1 + 20_000,
        "the stream keeps one change per item"
    );
    let b = replica("b");
    let c = replica("c");
    for r in [&a, &b, &c] {
        assert_eq!(
            metric(r, "pinnersage_catalog_items"),
            items_on_a,
            "ready, not caught up"
        );
        let near_i0 = similar(r, "i0");
        assert!(near_i0.contains(&"new 2".to_owned()), "{near_i0:?}");
        assert!(!near_i0.contains(&"new.1".to_owned()), "{near_i0:?}");
        assert!(!near_i0.contains(&"i4".to_owned()), "{near_i0:?}");
        // "moved" was replaced: next to i2 before, now nearest to i1.
        let near_moved = similar(r, "moved");
        assert_eq!(
            near_moved.first().map(String::as_str),
            Some("i1"),
            "{near_moved:?}"
        );
    }
    assert!(metric(&c, "pinnersage_nats_item_changes_acked_total") >= 4.0);

    // A message no replica can apply is dropped and counted; the changes keep flowing.
    rt.block_on(async {
        js.publish("pinnersage.items.6e6f7065", "not json".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let posted = c.request(
        "POST",
        "/v1/items",
        r#"{"items":[{"id":"last","embedding":[0,1]}]}"#,
    );
    assert_eq!(status(&posted), 202, "{posted}");
    for r in [&a, &b, &c] {
        wait_for("the poison item message counted", 30, || {
            metric(r, "pinnersage_nats_item_changes_terminated_total") >= 1.0
        });
        wait_for("the last item", 30, || {
            similar(r, "i1").first().map(String::as_str) == Some("last")
        });
    }
}

/// `haproxy -f config -db` on loopback, killed on drop; `None` (with a note) when HAProxy is not
/// installed, unless `PINNERSAGE_REQUIRE_HAPROXY=1`.
struct Haproxy(Child, PathBuf);

impl Haproxy {
    /// Starts HAProxy on `config` (as `pinnersage fleet haproxy` wrote it) with every request
    /// logged (`option httplog`) to `haproxy.log` beside it.
    fn start(config: &Path) -> Option<Self> {
        let written = std::fs::read_to_string(config).unwrap();
        let logged = written.replacen(
            "defaults\n",
            "global\n    log stdout format raw local0 info\n\ndefaults\n    log global\n    option httplog\n",
            1,
        );
        assert_ne!(logged, written, "no defaults section: {written}");
        std::fs::write(config, logged).unwrap();
        let log = config.with_file_name("haproxy.log");
        let exe = [
            "/usr/sbin/haproxy",
            "/usr/bin/haproxy",
            "/usr/local/sbin/haproxy",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
        let Some(exe) = exe else {
            assert!(
                std::env::var("PINNERSAGE_REQUIRE_HAPROXY").is_err(),
                "haproxy is not installed"
            );
            eprintln!("note: haproxy is not installed; the load-balancer test is skipped");
            return None;
        };
        let check = Command::new(&exe)
            .arg("-c")
            .arg("-f")
            .arg(config)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy refuses the configuration: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&exe)
            .arg("-db")
            .arg("-f")
            .arg(config)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Some(Self(child, log))
    }

    /// The logged requests not answered 200 (HTTP log format: the status, then the termination
    /// state of each, which says who closed what and when).
    fn unusual(&self) -> String {
        let log = std::fs::read_to_string(&self.1).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains(" 200 ") && !l.contains(" 202 "))
            .collect();
        lines[lines.len().saturating_sub(100)..].join("\n")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn haproxy_routes_every_user_to_a_holder_and_fails_over_to_the_other() {
    use pinnersage_server::fleet::partition_of;
    let Some(exe) = nats_server() else { return };
    let dir = Scratch::new("fleet-haproxy");
    let cluster = Cluster::start(&exe, &dir.join("nats"), 3);
    let seed = dir.join("seed");
    common::five_item_catalog(&seed);
    let _stream = replicated_stream(&cluster);
    let urls = cluster.urls();
    // Profiles of 40 users from the batch host, shipped to every replica split by partition.
    let history: String = (0..200)
        .map(|n| format!("user-{},i{},{}\n", n % 40, (n / 40) % 5, BASE + n))
        .collect();
    let (_, shared, shipped) = ship_history(&dir, &seed, &history, &["--partitions", "8"]);
    assert!(
        shipped.contains("8 file(s) (one per partition)"),
        "{shipped}"
    );
    let shared = shared.to_str().unwrap();
    // A fleet replica of the partitions `consume` ("" for all of them).
    let start = |name: &str, consume: &str| {
        let data = dir.join(name);
        copy_seed(&seed, &data);
        let mut args = vec![
            "--fleet",
            "--nats",
            &urls,
            "--stream-replicas",
            "3",
            "--partitions",
            "8",
            "--profiles-from",
            shared,
        ];
        if !consume.is_empty() {
            args.extend(["--consume-partitions", consume]);
        }
        RunningServer::start_with(data.to_str().unwrap(), &args)
    };
    // 8 partitions on 4 replicas, each partition held twice, by a different pair per group.
    let mut map = vec![
        ("a", "0-3"),
        ("b", "4-7"),
        ("c", "0,1,4,5"),
        ("d", "2,3,6,7"),
    ];
    let mut replicas: Vec<RunningServer> = map.iter().map(|(n, c)| start(n, c)).collect();
    // Beside the fleet, out of the balancer: one replica holding everyone.
    let mut whole = start("whole", "");
    for r in replicas.iter_mut().chain([&mut whole]) {
        wait_ready(r);
    }
    let port = free_port();
    let lb = format!("127.0.0.1:{port}");
    let config = dir.join("haproxy.cfg");
    let balance = |map: &[(&str, &str)], replicas: &[RunningServer]| {
        let mut args: Vec<String> = [
            "fleet",
            "haproxy",
            "--partitions",
            "8",
            "--check-ms",
            "200",
            "--bind",
            &lb,
            "--out",
            config.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec();
        for ((name, partitions), r) in map.iter().zip(replicas) {
            args.extend([
                "--replica".into(),
                format!("{name}@{}={partitions}", r.addr),
            ]);
        }
        run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let haproxy = Haproxy::start(&config)?;
        wait_for("HAProxy to see the replicas ready", 30, || {
            status(&common::http(&lb, "GET", "/readyz", "").unwrap_or_default()) == 200
        });
        Some(haproxy)
    };
    let Some(haproxy) = balance(&map, &replicas) else {
        return;
    };
    let get = |path: &str| common::http(&lb, "GET", path, "").unwrap_or_default();

    // Every user's event through the balancer, then every user's profile: each request reached
    // a holder of the user's partition (a replica that is not one answers 421), which shows the
    // user's online interest.
    let users: Vec<String> = (0..1_000).map(|n| format!("user-{n}")).collect();
    for chunk in users.chunks(250) {
        let events: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(k, u)| format!(r#"{{"user":"{u}","item":"i{}","ts":{}}}"#, k % 5, NOW1 + 10))
            .collect();
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        let posted = common::http(&lb, "POST", "/v1/events", &body).unwrap_or_default();
        assert_eq!(status(&posted), 202, "{posted}");
    }
    let online = |answer: &str| (status(answer), body(answer).contains("\"online\":true"));
    let personalised = |user: &str| online(&get(&format!("/v1/users/{user}/profile")));
    wait_for("every user's online profile through HAProxy", 60, || {
        users.iter().all(|u| personalised(u) == (200, true))
    });
    // The fleet answers as one server holding everyone: same generation, same events.
    wait_for(
        "every user's online profile on the whole replica",
        60,
        || {
            (users.iter()).all(|u| {
                online(&whole.request("GET", &format!("/v1/users/{u}/profile"), "")) == (200, true)
            })
        },
    );
    for u in &users {
        let path = format!("/v1/users/{u}/recommendations?k=5");
        let (split, one) = (get(&path), whole.request("GET", &path, ""));
        assert_eq!(status(&split), 200, "{split}");
        assert_eq!(content(&split), content(&one), "{u}");
    }
    // Straight to a replica that does not hold the user: 421 with the partition.
    let stranger = users.iter().find(|u| partition_of(u, 8) >= 4).unwrap();
    let refused = replicas[0].request("GET", &format!("/v1/users/{stranger}/profile"), "");
    assert_eq!(status(&refused), 421, "{refused}");

    // Replica A dies under read and write load: its partitions move to their other holders once
    // HAProxy's checks see it (2 x 200 ms); no read fails meanwhile, and every event answered 202
    // is kept (each is a fresh user's, who must be personalised afterwards).
    let stop = std::sync::atomic::AtomicBool::new(false);
    let watched = users.iter().find(|u| partition_of(u, 8) == 0).unwrap();
    let (killed, reads, failed_reads, acked) = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (stop, users, lb) = (&stop, &users, &lb);
                scope.spawn(move || {
                    let (mut reads, mut failed) = (0usize, Vec::new());
                    for u in users.iter().skip(r).step_by(2).cycle() {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let path = format!("/v1/users/{u}/recommendations?k=2");
                        let answer = common::http(lb, "GET", &path, "")
                            .unwrap_or_else(|e| format!("no answer: {e}"));
                        reads += 1;
                        if status(&answer) != 200 {
                            failed.push(format!("{u}: {answer}"));
                        }
                    }
                    (reads, failed)
                })
            })
            .collect();
        let writer = scope.spawn(|| {
            let mut acked = Vec::new();
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let batch: Vec<String> = (0..5).map(|k| format!("w-{n}-{k}")).collect();
                let events: Vec<String> = batch
                    .iter()
                    .map(|u| format!(r#"{{"user":"{u}","item":"i2","ts":{}}}"#, NOW1 + 20))
                    .collect();
                let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
                let posted = common::http(&lb, "POST", "/v1/events", &body).unwrap_or_default();
                if status(&posted) == 202 {
                    acked.extend(batch);
                }
            }
            acked
        });
        std::thread::sleep(Duration::from_millis(500));
        let killed = Instant::now();
        replicas[0].kill9();
        wait_for("A's partitions served by their other holders", 30, || {
            personalised(watched) == (200, true)
        });
        let killed = killed.elapsed();
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut reads, mut failed) = (0, Vec::new());
        for r in readers {
            let (n, f) = r.join().unwrap();
            reads += n;
            failed.extend(f);
        }
        (killed, reads, failed, writer.join().unwrap())
    });
    eprintln!(
        "failover: {watched} (partition 0, A's) served by its other holder {killed:?} after A's \
         kill -9; {reads} reads meanwhile, {} failed; {} events acknowledged; HAProxy's log of \
         requests not answered 200 or 202:\n{}",
        failed_reads.len(),
        acked.len(),
        haproxy.unusual()
    );
    assert!(
        failed_reads.is_empty(),
        "{failed_reads:?}\nHAProxy's log of requests not answered 200 or 202:\n{}",
        haproxy.unusual()
    );
    assert!(!acked.is_empty());
    wait_for("every acknowledged event in its user's profile", 60, || {
        acked.iter().all(|u| personalised(u) == (200, true))
    });
    let unserved: Vec<&String> = users
        .iter()
        .filter(|u| personalised(u) != (200, true))
        .collect();
    assert!(unserved.is_empty(), "{unserved:?}");

    // A new replica E takes A's partitions (the procedure of docs/fleet.md): started from the
    // seed, it imports their shipped profiles and catches up from the stream before it is
    // ready, so its first answers already hold the online interests; only then is the balancer
    // reconfigured with it in A's place.
    let mut e = start("e", "0-3");
    wait_ready(&mut e);
    let held_by_a: Vec<&String> = users.iter().filter(|u| partition_of(u, 8) < 4).collect();
    for u in &held_by_a {
        let answer = e.request("GET", &format!("/v1/users/{u}/profile"), "");
        assert_eq!(
            online(&answer),
            (200, true),
            "{u} on the new replica: {answer}"
        );
    }
    drop(haproxy);
    map[0] = ("e", "0-3");
    replicas[0] = e;
    let Some(_haproxy) = balance(&map, &replicas) else {
        return;
    };
    let unserved: Vec<&String> = users
        .iter()
        .filter(|u| personalised(u) != (200, true))
        .collect();
    assert!(unserved.is_empty(), "{unserved:?}");

    // Each replica's profile store holds its partitions' users of the shipped generation, and
    // together they hold all 40.
    whole.kill9();
    let mut everyone = BTreeSet::new();
    for (r, (name, _)) in replicas.iter_mut().zip(&map) {
        r.kill9();
        let store = ProfileStore::open(&dir.join(name)).unwrap();
        let held: BTreeSet<u32> = r_partitions(&map, name);
        let users: Vec<String> = store
            .users("", usize::MAX)
            .unwrap()
            .into_iter()
            .map(|u| u.user)
            .collect();
        assert!(!users.is_empty(), "replica {name} imported no profile");
        for user in users {
            assert!(
                held.contains(&partition_of(&user, 8)),
                "replica {name} holds {user} of partition {}",
                partition_of(&user, 8)
            );
            everyone.insert(user);
        }
    }
    assert_eq!(everyone.len(), 40, "{everyone:?}");
}

/// The partitions of replica `name` in a map of (name, "0-3" or "0,1,4,5").
fn r_partitions(map: &[(&str, &str)], name: &str) -> BTreeSet<u32> {
    let (_, list) = map.iter().find(|(n, _)| *n == name).unwrap();
    list.split(',')
        .flat_map(|p| match p.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().unwrap()..=b.parse().unwrap()).collect(),
            None => vec![p.parse().unwrap()],
        })
        .collect()
}

/// `DIR/experiments.toml`: experiment `e` (salted `salt`) of two arms, half the users each: the
/// top interest alone ("one") and every interest ("all").
fn two_arm_experiment(dir: &Path, salt: &str) -> PathBuf {
    let path = dir.join("experiments.toml");
    std::fs::write(
        &path,
        format!(
            "[[experiment]]\nname = \"e\"\nsalt = \"{salt}\"\n\n[[experiment.arm]]\nname = \"one\"\n\
             share = 0.5\nselection = \"top\"\nmedoids = 1\n\n[[experiment.arm]]\nname = \"all\"\n\
             share = 0.5\nselection = \"all\"\n"
        ),
    )
    .unwrap();
    path
}

/// Two reports of the same users count the same in every arm (the rates within rounding: a
/// merged one adds the parts' sums in another order).
fn assert_same_arms(one: &serde_json::Value, other: &serde_json::Value) {
    let arms = |r: &serde_json::Value| r["arms"].as_array().cloned().unwrap_or_default();
    assert_eq!(arms(one).len(), arms(other).len(), "{one} vs {other}");
    for (m, w) in arms(one).iter().zip(&arms(other)) {
        for field in [
            "arm",
            "users",
            "impressions",
            "items_shown",
            "engagements",
            "daily",
        ] {
            assert_eq!(m[field], w[field], "{field}: {m} vs {w}");
        }
        for rate in ["ctr", "engaged_user_rate"] {
            let (x, y) = (&m[rate]["value"], &w[rate]["value"]);
            assert!(
                x == y || (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-12,
                "{rate}: {m} vs {w}"
            );
        }
    }
}

/// The impressions and engagements of `server`'s report of experiment `e` from a minute before
/// `now` to two after, summed over the arms ((0, 0) while it cannot report).
fn reported(server: &RunningServer, now: u64) -> (u64, u64) {
    let r = server.request(
        "GET",
        &format!(
            "/v1/experiments/e/report?from={}&to={}",
            now - 60,
            now + 120
        ),
        "",
    );
    let v: serde_json::Value = serde_json::from_str(body(&r)).unwrap_or_default();
    let arms = v["arms"].as_array().cloned().unwrap_or_default();
    let sum = |field: &str| arms.iter().map(|a| a[field].as_u64().unwrap()).sum::<u64>();
    (sum("impressions"), sum("engagements"))
}

/// A replica stopped (SIGTERM) right after answering publishes the impressions of its last
/// answers before it exits: its graceful stop waits for the impression writer while the
/// connection to the stream still runs (the writer used to be joined as the runtime shut down,
/// where its publish could neither finish nor fail: the replica hung, or the impressions were
/// lost). Another replica's report counts every answer of every round; restarted, the replica
/// is ready at once (its consumers ended their pull requests when it stopped) and stores its
/// own last impressions from the stream.
#[test]
fn a_replica_stopped_right_after_answering_publishes_those_answers_impressions() {
    let Some(exe) = nats_server() else { return };
    let dir = Scratch::new("fleet-impressions-stop");
    let cluster = Cluster::start(&exe, &dir.join("nats"), 1);
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let seed = dir.join("seed");
    common::five_item_catalog(&seed);
    let experiments = two_arm_experiment(&dir, "stop");
    let urls = cluster.urls();
    let args = [
        "--fleet",
        "--nats",
        &urls,
        "--partitions",
        "1",
        "--experiments",
        experiments.to_str().unwrap(),
    ];
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    copy_seed(&seed, &a_dir);
    copy_seed(&seed, &b_dir);
    let mut b = RunningServer::start_with(&s(&b_dir), &args);
    wait_ready(&mut b);
    let history: Vec<u64> = (1..=7).collect();
    let posted = b.request("POST", "/v1/events", &events_body(&history, NOW1));
    assert_eq!(status(&posted), 202, "{posted}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    const ROUNDS: u64 = 5;
    const ANSWERS: u64 = 7;
    for round in 1..=ROUNDS {
        let started = Instant::now();
        let mut a = RunningServer::start_with(&s(&a_dir), &args);
        wait_ready(&mut a);
        if round == 1 {
            wait_for("A's users' events", 30, || {
                metric(&a, "pinnersage_events_stored_total") >= 7.0
            });
        } else {
            // Its consumers ended their pull requests at the stop: what came after (its own
            // impressions) waited in the stream, not in a subscription that was gone.
            let ready_in = started.elapsed();
            assert!(
                ready_in < pinnersage_server::nats::ACK_WAIT / 2,
                "round {round}: ready after {ready_in:?}"
            );
            wait_for(&format!("A's report before round {round}"), 30, || {
                reported(&a, now).0 == (round - 1) * ANSWERS
            });
        }
        for user in 0..ANSWERS {
            let answer = a.request("GET", &format!("/v1/users/u{user}/recommendations?k=3"), "");
            assert_eq!(status(&answer), 200, "{answer}");
        }
        // At once: the impressions are still in the writer's buffer.
        let stopped = a.terminate();
        assert!(stopped.success(), "round {round}: {stopped}");
        wait_for(&format!("B's report after round {round}"), 30, || {
            reported(&b, now).0 == round * ANSWERS
        });
    }
}

/// A fleet's experiment: every replica publishes the impressions of its answers to the
/// impressions stream, and each stores those of the partitions it holds. Users are answered by
/// two replicas holding everything (as a load balancer without affinity would spread them) and,
/// for one partition, by a third replica holding only it; clicks naming their answers are
/// posted to one replica. Every full replica's report counts every answer and every click, the
/// partial replica's report its partition's users only.
#[test]
fn a_fleets_experiment_is_reported_whole_by_every_replica_holding_the_users() {
    use pinnersage_server::fleet::partition_of;
    let Some(exe) = nats_server() else { return };
    let dir = Scratch::new("fleet-experiment");
    let cluster = Cluster::start(&exe, &dir.join("nats"), 1);
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let seed = dir.join("seed");
    common::five_item_catalog(&seed);
    let experiments = two_arm_experiment(&dir, "fleet");
    let urls = cluster.urls();
    let replica = |name: &str, held: &[&str]| {
        let data = dir.join(name);
        copy_seed(&seed, &data);
        let mut args = vec![
            "--fleet",
            "--nats",
            &urls,
            "--partitions",
            "4",
            "--experiments",
            experiments.to_str().unwrap(),
        ];
        args.extend_from_slice(held);
        let mut server = RunningServer::start_with(&s(&data), &args);
        wait_ready(&mut server);
        server
    };
    let mut a = replica("a", &[]);
    let b = replica("b", &[]);
    let c = replica("c", &["--consume-partitions", "1"]);
    let users: Vec<String> = (0..7).map(|u| format!("u{u}")).collect();
    let in_c: Vec<&String> = users.iter().filter(|u| partition_of(u, 4) == 1).collect();
    assert!(!in_c.is_empty() && in_c.len() < users.len(), "{in_c:?}");
    // One item engaged per user: the other four can be recommended.
    let history: Vec<u64> = (1..=7).collect();
    let posted = a.request("POST", "/v1/events", &events_body(&history, NOW1));
    assert_eq!(status(&posted), 202, "{posted}");
    for server in [&a, &b] {
        wait_for("every user's events", 30, || {
            metric(server, "pinnersage_events_stored_total") >= 7.0
        });
    }
    wait_for("C's users' events", 30, || {
        metric(&c, "pinnersage_events_stored_total") > 0.0
    });

    // Answers from every replica; a click on the first item of each of A's and C's answers.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut answers = 0;
    let mut clicks = Vec::new();
    for (k, user) in users.iter().enumerate() {
        let mut servers = vec![if k % 2 == 0 { &a } else { &b }];
        if in_c.contains(&user) {
            servers.push(&c);
        }
        for server in servers {
            let answer =
                server.request("GET", &format!("/v1/users/{user}/recommendations?k=3"), "");
            assert_eq!(status(&answer), 200, "{answer}");
            let v: serde_json::Value = serde_json::from_str(body(&answer)).unwrap();
            assert_eq!(v["experiment"], "e");
            assert!(v["items"][0]["item"].is_string(), "{answer}");
            answers += 1;
            if !std::ptr::eq(server, &b) {
                clicks.push(format!(
                    r#"{{"user":"{user}","item":"{}","ts":{},"request_id":"{}"}}"#,
                    v["items"][0]["item"].as_str().unwrap(),
                    // Distinct times: the same click twice would be one event (by content).
                    now + 1 + clicks.len() as u64,
                    v["request_id"].as_str().unwrap()
                ));
            }
        }
    }
    let posted = b.request(
        "POST",
        "/v1/events",
        &format!(r#"{{"events":[{}]}}"#, clicks.join(",")),
    );
    assert_eq!(status(&posted), 202, "{posted}");
    let c_answers = 2 * in_c.len();
    let c_clicks = clicks
        .iter()
        .filter(|c| in_c.iter().any(|u| c.contains(&format!("\"{u}\""))))
        .count();
    let report = |server: &RunningServer| reported(server, now);
    let expected = (answers as u64, clicks.len() as u64);
    for (name, server) in [("A", &a), ("B", &b)] {
        wait_for(
            &format!("{name}'s report of every answer and click"),
            30,
            || report(server) == expected,
        );
    }
    wait_for("C's report of its partition's users", 30, || {
        report(&c) == (c_answers as u64, c_clicks as u64)
    });
    // Nothing more arrives later: C stored only its partition's impressions.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(report(&c), (c_answers as u64, c_clicks as u64));
    assert_eq!(report(&a), expected);
    assert!(metric(&a, "pinnersage_nats_impressions_acked_total") >= 1.0);

    // The fleet's report from parts: C counts its partition, A the others; merged, it is A's
    // whole report (the same numbers, each part over other users).
    let window = [
        "--from".to_owned(),
        (now - 60).to_string(),
        "--to".to_owned(),
        (now + 120).to_string(),
    ];
    let servers = format!("{},{}", c.addr, a.addr);
    let mut argv = vec![
        "experiment",
        "report",
        "--name",
        "e",
        "--servers",
        &servers,
        "--json",
    ];
    argv.extend(window.iter().map(String::as_str));
    let merged: serde_json::Value = serde_json::from_str(&run_ok(&argv)).unwrap();
    let whole = a.request(
        "GET",
        &format!(
            "/v1/experiments/e/report?from={}&to={}",
            now - 60,
            now + 120
        ),
        "",
    );
    let whole: serde_json::Value = serde_json::from_str(body(&whole)).unwrap();
    assert_same_arms(&merged, &whole);
    assert_eq!(
        whole["partitions"],
        serde_json::json!({"count": 4, "held": [0, 1, 2, 3]})
    );
    assert!(whole.get("parts").is_none(), "{whole}");

    // A replica holding one partition says so in its report; one started with peers reports
    // the fleet: its part merged with the others' from its peers, as the command line does.
    let path = format!(
        "/v1/experiments/e/report?from={}&to={}",
        now - 60,
        now + 120
    );
    let partial: serde_json::Value =
        serde_json::from_str(body(&c.request("GET", &path, ""))).unwrap();
    assert_eq!(
        partial["partitions"],
        serde_json::json!({"count": 4, "held": [1]})
    );
    let d = replica("d", &["--consume-partitions", "1", "--peers", &a.addr]);
    wait_for("D's report of the fleet", 30, || report(&d) == expected);
    let served: serde_json::Value =
        serde_json::from_str(body(&d.request("GET", &path, ""))).unwrap();
    assert_same_arms(&served, &whole);
    assert_eq!(
        served["partitions"],
        serde_json::json!({"count": 4, "held": [0, 1, 2, 3]})
    );
    let parts = served["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{served}");
    assert_eq!(
        parts[0]["partitions"],
        serde_json::json!([1]),
        "D counts its own partition"
    );
    assert_eq!(
        parts[1],
        serde_json::json!({"server": a.addr, "partitions": [0, 2, 3]})
    );
    // Without a holder of every partition the parts cannot make the fleet's report.
    let c_only = c.addr.clone();
    let mut argv = vec!["experiment", "report", "--name", "e", "--servers", &c_only];
    argv.extend(window.iter().map(String::as_str));
    let out = bin().args(&argv).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("held by none of the servers"), "{stderr}");

    // A graceful stop publishes the impressions still buffered: B counts the last answer A gave.
    let answer = a.request("GET", "/v1/users/u0/recommendations?k=3", "");
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(a.terminate().success());
    wait_for("B's count of A's last answer", 30, || {
        report(&b).0 == expected.0 + 1
    });
}

/// A replica that was down stores the impression messages published meanwhile, many to one
/// fsynced write (the messages ready together share it), and drops an invalid one alone.
#[test]
fn a_replica_catching_up_stores_the_impressions_published_meanwhile_in_few_writes() {
    let Some(exe) = nats_server() else { return };
    let dir = Scratch::new("fleet-impressions-catch-up");
    let cluster = Cluster::start(&exe, &dir.join("nats"), 1);
    let data = dir.join("a");
    common::five_item_catalog(&data);
    let experiments = two_arm_experiment(&dir, "s");
    let urls = cluster.urls();
    let args = [
        "--fleet",
        "--nats",
        &urls,
        "--partitions",
        "1",
        "--experiments",
        experiments.to_str().unwrap(),
    ];
    let d = data.to_str().unwrap();
    // The first start creates the impressions stream and this replica's consumer of it.
    let mut a = RunningServer::start_with(d, &args);
    wait_ready(&mut a);
    a.kill9();

    const MESSAGES: u64 = 300;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(urls.split(',').collect::<Vec<_>>())
            .await
            .unwrap();
        let js = jetstream::new(client);
        let mut acks = Vec::new();
        for n in 0..MESSAGES {
            let message = format!(
                r#"{{"impressions":[{{"request_id":"r{n}","experiment":"e","arm":"{}","user":"u{}","time":{now},"items":[{{"item":"i{}"}}]}}]}}"#,
                if n % 2 == 0 { "one" } else { "all" },
                n % 7,
                n % 5
            );
            acks.push(
                js.publish("pinnersage.impressions.0", message.into())
                    .await
                    .unwrap(),
            );
        }
        acks.push(
            js.publish("pinnersage.impressions.0", "not json".into())
                .await
                .unwrap(),
        );
        for ack in acks {
            ack.await.unwrap();
        }
    });

    let mut a = RunningServer::start_with(d, &args);
    wait_ready(&mut a);
    wait_for("every impression message settled", 30, || {
        metric(&a, "pinnersage_nats_impressions_acked_total") >= MESSAGES as f64
            && metric(&a, "pinnersage_nats_impressions_terminated_total") >= 1.0
    });
    let writes = metric(&a, "pinnersage_nats_impressions_writes_total");
    eprintln!("{MESSAGES} impression messages stored in {writes} writes");
    assert!(
        (1.0..=(MESSAGES / 10) as f64).contains(&writes),
        "{MESSAGES} messages in {writes} writes"
    );
    assert_eq!(reported(&a, now).0, MESSAGES);
}
