//! The test harness of the server's tests: a real data directory (catalog with attributes,
//! event store, batch profiles, persisted HNSW index) and the real server on an ephemeral port,
//! spoken to over real HTTP.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use pinnersage_catalog::catalog::{Catalog, CatalogBuilder};
use pinnersage_core::sample::SplitMix64;
use pinnersage_index::persist::{self, BuildOptions};
use pinnersage_pipeline::batch::{BatchConfig, run_batch};
use pinnersage_server::ServeConfig;
use pinnersage_store::events::{Event, EventStore};
use serde_json::Value;

pub const NOW: i64 = 1_700_000_000;
pub const DIM: usize = 16;
pub const ITEMS: usize = 3_000;
pub const TOPICS: usize = 12;

/// Items around `TOPICS` centres; 40 users engaging with 2 or 3 topics each (30 events).
pub fn make_data_dir(dir: &Path) {
    let mut rng = SplitMix64::new(11);
    let mut gauss = move || {
        let (u, v) = (rng.next_f64().max(1e-12), rng.next_f64());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let centres: Vec<f32> = (0..TOPICS * DIM).map(|_| gauss()).collect();
    let mut b = CatalogBuilder::new(dir, DIM, true).unwrap();
    for i in 0..ITEMS {
        let c = &centres[(i % TOPICS) * DIM..(i % TOPICS + 1) * DIM];
        let mut v: Vec<f32> = c.iter().map(|&x| x + 0.3 * gauss()).collect();
        b.push(&format!("i{i}"), &mut v).unwrap();
    }
    // Titles for every item but multiples of 100 (they have no attributes).
    let titles: String = (0..ITEMS)
        .filter(|i| i % 100 != 0)
        .map(|i| format!("{{\"id\": \"i{i}\", \"title\": \"Item {i}\"}}\n"))
        .collect();
    let titles_file = dir.join("titles.jsonl");
    std::fs::write(&titles_file, titles).unwrap();
    b.attach_attributes(&titles_file, None).unwrap();
    b.commit("test").unwrap();
    let store = EventStore::open(dir).unwrap();
    let mut events = Vec::new();
    for u in 0..40usize {
        let topics = [u % TOPICS, (u * 5 + 1) % TOPICS, (u * 7 + 3) % TOPICS];
        for e in 0..30usize {
            let topic = topics[e % (2 + u % 2)];
            let item = topic + TOPICS * ((u * 31 + e * 17) % (ITEMS / TOPICS));
            events.push(Event {
                user: format!("u{u}"),
                item: format!("i{item}"),
                time: NOW - (e as i64) * 3_600 * 7,
                action: "click".into(),
                weight: 1.0,
                id: None,
                request_id: None,
            });
        }
    }
    store.insert(&events).unwrap();
    drop(store);
    batch(dir, NOW);
    let catalog = Catalog::open(dir).unwrap();
    persist::build(dir, &catalog, &BuildOptions::default(), &()).unwrap();
}

pub fn batch(dir: &Path, now: i64) {
    let config = BatchConfig {
        chunk_users: 16,
        ..BatchConfig::new(now)
    };
    run_batch(dir, &config, &|_| {}).unwrap();
}

/// A running server; shut down (gracefully) on drop.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, ServeConfig::default())
    }

    /// A server with `config`, reloading profiles every 100 ms.
    pub fn start_with(dir: &Path, config: ServeConfig) -> Self {
        let config = ServeConfig {
            reload: Duration::from_millis(100),
            ..config
        };
        Self::run(pinnersage_server::Server::open(dir, config).unwrap())
    }

    /// Runs an opened server on a loopback port.
    pub fn run(server: pinnersage_server::Server) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let shutdown = async {
                    let _ = rx.await;
                };
                server.run(listener, shutdown).await.unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        Self {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// `(status, body)` of a request.
    pub fn request(&self, method: &str, path: &str) -> (u16, String) {
        self.send(method, path, b"")
    }

    /// `(status, JSON body)` of a POST.
    pub fn post_json(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = self.send("POST", path, body.as_bytes());
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        (status, json)
    }

    pub fn send(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let headers = format!("Host: {}\r\nContent-Type: application/json\r\n", self.addr);
        self.send_with(method, path, &headers, body)
    }

    /// A request with the given header lines (each ending in CRLF).
    pub fn send_with(&self, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\n{headers}Connection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        // A server may answer (413) before reading a huge body and close: that is fine.
        let _ = s.write_all(body);
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{method} {path}: no response: {raw:?}"));
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_owned())
    }

    /// Sends `request` as it is (head and body) and returns the whole answer, head included.
    pub fn raw(&self, request: &str) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        raw
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.request("GET", path);
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (status, json)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A recommendation answer without its `request_id` (unique per answer): what two answers
/// share when they recommend the same.
pub fn content(answer: &Value) -> Value {
    let mut answer = answer.clone();
    if let Some(fields) = answer.as_object_mut() {
        fields.remove("request_id");
    }
    answer
}

pub fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["item"].as_str().unwrap().to_owned())
        .collect()
}

pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap()
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics"))
}

pub fn event(user: &str, item: usize, ts: i64, id: &str) -> String {
    format!(r#"{{"user":"{user}","item":"i{item}","ts":{ts},"action":"click","id":"{id}"}}"#)
}

pub fn events_body(events: &[String]) -> String {
    format!(r#"{{"events":[{}]}}"#, events.join(","))
}
