//! Fleet mode: N replicas behind one load balancer, one JetStream stream of events.
//!
//! Events are partitioned by user: partition `crc32(user) % partitions` is published on
//! subject `<subject>.<partition>` ([`partition_of`], the rule a user-affine load balancer
//! computes too). `POST /v1/events` on any replica validates the events, publishes them to the
//! stream and answers once JetStream has acknowledged them ([`Publisher`]); every replica
//! consumes the partitions it holds into its own event store and online state with its own
//! durable consumer, named after the replica's id ([`replica_id`], kept in its data directory).
//! Item changes take the same way on a stream of their own ([`crate::item_changes`]): every
//! replica applies all of them. The experiments' impressions are partitioned like the events,
//! on `<impressions_subject>.<partition>` of a stream of their own: every replica stores those
//! of the users it holds, whichever replica answered ([`Publisher::publish_impressions`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::future::try_join_all;
use pinnersage_catalog::catalog::Catalog;
use pinnersage_core::hash::stable_hash;
use pinnersage_store::events::Event;
use pinnersage_store::impressions::Impression;
use serde::Serialize;

use crate::intake::{IngestError, IngestReport, parse_request};
use crate::server::ServeError;

/// Messages published before their acknowledgements are awaited.
const PUBLISH_RUN: usize = 1024;

/// Largest message published (NATS' default `max_payload` is 1 MiB); bigger groups are split.
pub const MAX_MESSAGE_BYTES: usize = 512 << 10;

/// How a replica takes part in a fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Partitions of the event subject; the same on every replica and producer.
    pub partitions: u32,
    /// The partitions this replica consumes (empty: all of them).
    pub consume: Vec<u32>,
    /// Replicas of the JetStream stream when this replica creates it (3 on a 3-node cluster).
    pub stream_replicas: usize,
    /// The fleet's replicas (`HOST:PORT`): a report asked of a replica holding some partitions
    /// fetches the other partitions' parts from them (empty: it reports its own users only).
    pub peers: Vec<String>,
}

impl FleetConfig {
    /// A fleet of `partitions` partitions, all consumed, a stream of one replica.
    pub fn new(partitions: u32) -> Self {
        Self {
            partitions,
            consume: Vec::new(),
            stream_replicas: 1,
            peers: Vec::new(),
        }
    }

    /// `Err(partition)` when `user`'s partition is not one this replica consumes (it consumes
    /// all when `consume` is empty).
    pub fn holds(&self, user: &str) -> Result<(), u32> {
        self.share().holds(user)
    }

    /// The users this replica holds.
    pub fn share(&self) -> Share {
        Share {
            count: self.partitions,
            held: self.consume.clone(),
        }
    }

    /// Checks the settings: at least one partition, consumed partitions in range and unique.
    pub fn check(&self) -> Result<(), ServeError> {
        if !(1..=1024).contains(&self.partitions) {
            return Err(ServeError::Config(format!(
                "`partitions` must be in 1..=1024, got {}",
                self.partitions
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for &p in &self.consume {
            if p >= self.partitions {
                return Err(ServeError::Config(format!(
                    "`consume_partitions`: partition {p} is out of range (0..{})",
                    self.partitions
                )));
            }
            if !seen.insert(p) {
                return Err(ServeError::Config(format!(
                    "`consume_partitions`: partition {p} is given twice"
                )));
            }
        }
        if !(1..=5).contains(&self.stream_replicas) {
            return Err(ServeError::Config(format!(
                "`stream_replicas` must be in 1..=5 (JetStream's limit), got {}",
                self.stream_replicas
            )));
        }
        for peer in &self.peers {
            let port = peer
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(1..))) if !host.is_empty()) {
                return Err(ServeError::Config(format!(
                    "`peers`: {peer:?} is not HOST:PORT (e.g. 10.0.0.2:8080)"
                )));
            }
        }
        Ok(())
    }
}

pub use pinnersage_core::hash::{Share, partition_of};

/// One item of a partition list as people write it: a number or an inclusive range (`6`,
/// `0-3`), so `0-3,6` names partitions 0, 1, 2, 3 and 6.
///
/// ```
/// use pinnersage_server::fleet::PartitionRange;
/// let range: PartitionRange = "0-3".parse().unwrap();
/// assert_eq!(range.partitions().collect::<Vec<_>>(), [0, 1, 2, 3]);
/// assert!("3-0".parse::<PartitionRange>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    /// The first partition.
    pub first: u32,
    /// The last partition (inclusive).
    pub last: u32,
}

impl PartitionRange {
    /// The partitions of the range, in order.
    pub fn partitions(&self) -> std::ops::RangeInclusive<u32> {
        self.first..=self.last
    }
}

impl std::str::FromStr for PartitionRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?} is not a partition number"))
        };
        let (first, last) = match text.split_once('-') {
            Some((from, to)) => (number(from)?, number(to)?),
            None => (number(text)?, number(text)?),
        };
        if first > last {
            return Err(format!("range {text:?} runs backwards"));
        }
        Ok(Self { first, last })
    }
}

/// The subject of a partition.
pub fn partition_subject(subject: &str, partition: u32) -> String {
    format!("{subject}.{partition}")
}

/// The id of the replica that serves `data_dir`, created on first use (`replica-id` in the data
/// directory): its durable consumers are named after it, so their positions follow the event
/// store they fill. A fresh data directory is a new replica and reads the stream from the start.
pub fn replica_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("replica-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if is_replica_id(id.trim()) => return Ok(id.trim().to_owned()),
        Ok(id) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: {:?} is not a replica id (16 hex digits)",
                    path.display(),
                    id.trim()
                ),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{nanos} {} {}", std::process::id(), data_dir.display());
    let id = format!("{:016x}", stable_hash(seed.as_bytes()));
    pinnersage_generation::replace_file(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

fn is_replica_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a replica is ready for traffic: it has consumed the stream up to where it stood at
/// startup, and imported the shipped profile generation that was current at startup.
#[derive(Debug)]
pub struct Readiness {
    caught_up: AtomicBool,
    shipped: AtomicBool,
}

impl Readiness {
    /// Waits for what is configured: the stream when consuming, shipped profiles when watching.
    pub fn new(consuming: bool, watching_shipped: bool) -> Self {
        Self {
            caught_up: AtomicBool::new(!consuming),
            shipped: AtomicBool::new(!watching_shipped),
        }
    }

    /// The stream was consumed up to where it stood at startup.
    pub fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::Release);
    }

    /// The shipped generation current at startup was imported (or refused).
    pub fn set_shipped(&self) {
        self.shipped.store(true, Ordering::Release);
    }

    /// What the replica still waits for; empty when ready.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        let mut waiting = Vec::new();
        if !self.caught_up.load(Ordering::Acquire) {
            waiting.push("catching up with the event stream");
        }
        if !self.shipped.load(Ordering::Acquire) {
            waiting.push("importing the newest shipped profile generation");
        }
        waiting
    }
}

/// Publishes validated events to the stream's partitions, and item changes to the items stream.
#[derive(Clone)]
pub struct Publisher {
    client: async_nats::Client,
    js: jetstream::Context,
    subject: String,
    items_subject: String,
    impressions_subject: String,
    partitions: u32,
    patience: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("subject", &self.subject)
            .field("partitions", &self.partitions)
            .finish()
    }
}

#[derive(Serialize)]
struct EventOut<'a> {
    user: &'a str,
    item: &'a str,
    ts: i64,
    action: &'a str,
    weight: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl Publisher {
    /// Publishes events on `<subject>.<partition>`, item changes on `<items_subject>.<item>`
    /// and impressions on `<impressions_subject>.<partition>` through `client`; each
    /// acknowledgement waits at most `timeout`, and a publish NATS cannot take is tried again for
    /// up to `patience`.
    pub fn new(
        client: async_nats::Client,
        subjects: Subjects,
        partitions: u32,
        timeout: Duration,
        patience: Duration,
    ) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(client.clone());
        Self {
            client,
            js,
            subject: subjects.events,
            items_subject: subjects.items,
            impressions_subject: subjects.impressions,
            partitions,
            patience,
        }
    }

    /// Validates a request body like the local path and publishes its valid events; resolves
    /// once JetStream has acknowledged every message (`accepted` counts them; duplicates are
    /// dropped later, by each replica's store). Fails with [`IngestError::Unavailable`] when
    /// NATS cannot take them: then the client retries (a retry is stored once).
    pub async fn publish_body(
        &self,
        body: &[u8],
        catalog: &Catalog,
    ) -> Result<IngestReport, IngestError> {
        let (valid, mut report) = parse_request(body, catalog)?;
        if !valid.is_empty() {
            self.publish(valid.events()).await?;
            report.accepted = valid.len();
        }
        Ok(report)
    }

    /// Publishes `events` (in order within each partition) and waits for every acknowledgement,
    /// trying again for up to the publisher's patience while NATS cannot take them (a stream
    /// electing a new leader after its leader's node died, a client reconnecting to another
    /// node): a leader change completing within it costs the client no failed request. Every
    /// message carries an id derived from its content, so the stream stores a message sent twice
    /// once (within its duplicate window).
    pub async fn publish(&self, events: &[Event]) -> Result<(), IngestError> {
        let messages = with_content_ids(messages(&self.subject, self.partitions, events));
        self.send(&messages, "events").await
    }

    /// Publishes impressions on their users' partitions, `{"impressions":[...]}` per message,
    /// and waits for every acknowledgement, trying again like [`Publisher::publish`] (a message
    /// sent twice is stored once by the stream, and an impression stored twice is kept once by
    /// each replica's store).
    pub async fn publish_impressions(&self, impressions: &[Impression]) -> Result<(), IngestError> {
        let messages = with_content_ids(partitioned(
            &self.impressions_subject,
            self.partitions,
            "impressions",
            impressions,
            |i| &i.user,
            |buf, i| serde_json::to_writer(buf, i).expect("plain data"),
        ));
        self.send(&messages, "impressions").await
    }

    /// Publishes item changes, `(item id, message)` in order, each on its item's subject
    /// ([`crate::item_changes::item_subject`]), and waits for every acknowledgement, trying
    /// again like [`Publisher::publish`]. The message ids are this call's own (a retry within it
    /// is stored once; the same change posted again later is a new change, as it must be: the
    /// item may have changed meanwhile).
    pub async fn publish_items(&self, changes: Vec<(String, Vec<u8>)>) -> Result<(), IngestError> {
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let nonce = stable_hash(format!("{nanos} {call} {}", std::process::id()).as_bytes());
        let messages: Vec<(String, Vec<u8>, String)> = changes
            .into_iter()
            .enumerate()
            .map(|(k, (id, payload))| {
                let subject = crate::item_changes::item_subject(&self.items_subject, &id);
                (subject, payload, format!("{nonce:016x}-{k}"))
            })
            .collect();
        self.send(&messages, "item changes").await
    }

    /// Sends `messages` (subject, payload, message id) and waits for every acknowledgement,
    /// trying again for up to the publisher's patience.
    async fn send(
        &self,
        messages: &[(String, Vec<u8>, String)],
        what: &str,
    ) -> Result<(), IngestError> {
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.send_once(messages, what).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + pause >= deadline => return Err(e),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// One attempt of [`Publisher::send`]: every message sent, every acknowledgement awaited.
    async fn send_once(
        &self,
        messages: &[(String, Vec<u8>, String)],
        what: &str,
    ) -> Result<(), IngestError> {
        if self.client.connection_state() != State::Connected {
            return Err(IngestError::Unavailable(format!(
                "NATS is not reachable: the {what} were not taken; retry shortly"
            )));
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            IngestError::Unavailable(format!(
                "NATS JetStream did not take the {what} ({e}); retry shortly"
            ))
        };
        // Pipelined in runs: an acknowledgement not yet awaited holds one of the client's
        // 5,000 in-flight places, and a publish beyond them would wait for ever.
        for run in messages.chunks(PUBLISH_RUN) {
            let mut acks = Vec::with_capacity(run.len());
            for (subject, payload, id) in run {
                let ack = self
                    .js
                    .send_publish(
                        subject.clone(),
                        PublishMessage::build()
                            .payload(payload.clone().into())
                            .message_id(id),
                    )
                    .await
                    .map_err(|e| unavailable(&e))?;
                acks.push(ack.into_future());
            }
            try_join_all(acks).await.map_err(|e| unavailable(&e))?;
        }
        Ok(())
    }
}

/// The subjects a [`Publisher`] publishes on (their prefixes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    /// Events: `<events>.<partition>`.
    pub events: String,
    /// Item changes: `<items>.<item>`.
    pub items: String,
    /// Impressions: `<impressions>.<partition>`.
    pub impressions: String,
}

/// Messages with an id derived from their content (the stream drops a duplicate publish).
fn with_content_ids(messages: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>, String)> {
    messages
        .into_iter()
        .map(|(subject, payload)| {
            let id = format!("{:016x}-{}", stable_hash(&payload), payload.len());
            (subject, payload, id)
        })
        .collect()
}

/// The messages for `events`: one per partition (split at [`MAX_MESSAGE_BYTES`]), each the same
/// JSON as `POST /v1/events`, events in request order.
fn messages(subject: &str, partitions: u32, events: &[Event]) -> Vec<(String, Vec<u8>)> {
    partitioned(
        subject,
        partitions,
        "events",
        events,
        |e| &e.user,
        |buf, e| {
            serde_json::to_writer(
                buf,
                &EventOut {
                    user: &e.user,
                    item: &e.item,
                    ts: e.time,
                    action: &e.action,
                    weight: e.weight,
                    id: e.id.as_deref(),
                    request_id: e.request_id.as_deref(),
                },
            )
            .expect("plain data")
        },
    )
}

/// `records` as messages on `<subject>.<partition of their user>`, `{"<key>":[...]}` each (split
/// at [`MAX_MESSAGE_BYTES`]), records in order within a partition.
fn partitioned<T>(
    subject: &str,
    partitions: u32,
    key: &str,
    records: &[T],
    user: impl Fn(&T) -> &str,
    write: impl Fn(&mut Vec<u8>, &T),
) -> Vec<(String, Vec<u8>)> {
    let opening = format!("{{\"{key}\":[");
    let mut by_partition: Vec<Vec<u8>> = vec![Vec::new(); partitions as usize];
    let mut out = Vec::new();
    for record in records {
        let p = partition_of(user(record), partitions);
        let buf = &mut by_partition[p as usize];
        buf.extend_from_slice(if buf.is_empty() {
            opening.as_bytes()
        } else {
            b","
        });
        write(buf, record);
        if buf.len() >= MAX_MESSAGE_BYTES {
            buf.extend_from_slice(b"]}");
            out.push((partition_subject(subject, p), std::mem::take(buf)));
        }
    }
    for (p, mut buf) in by_partition.into_iter().enumerate() {
        if !buf.is_empty() {
            buf.extend_from_slice(b"]}");
            out.push((partition_subject(subject, p as u32), buf));
        }
    }
    out
}

/// Counters of the shipped-generation watcher.
#[derive(Debug, Default)]
pub struct ShippedCounters {
    /// Shipped generations imported.
    pub imported: std::sync::atomic::AtomicU64,
    /// Shipped generations refused (invalid) or that failed to import.
    pub failed: std::sync::atomic::AtomicU64,
}

/// Imports every new shipped generation of `shared` into `engine`'s data directory (checked
/// every `interval`) and switches to it; a fleet replica holding some partitions keeps only
/// their users. A generation that fails is reported once and skipped until a newer one is
/// shipped; the replica keeps serving what it has. `readiness` is told after the first attempt.
pub async fn watch_shipped(
    shared: std::path::PathBuf,
    serving: std::sync::Arc<pinnersage_engine::serving::Serving>,
    fleet: Option<FleetConfig>,
    interval: Duration,
    readiness: std::sync::Arc<Readiness>,
    counters: std::sync::Arc<ShippedCounters>,
) {
    use pinnersage_pipeline::exchange::ship::{import_shipped, pending_shipped};
    use std::sync::atomic::Ordering::Relaxed;
    let data_dir = serving.engine().data_dir().to_path_buf();
    // The last failure: the generation refused (skipped until a newer one), or the message.
    let mut refused: Option<String> = None;
    let mut last_error = String::new();
    loop {
        let (dir, from, serving) = (data_dir.clone(), shared.clone(), serving.clone());
        let (skip, fleet) = (refused.clone(), fleet.clone());
        let attempt = tokio::task::spawn_blocking(move || {
            let id = match pending_shipped(&dir, &from) {
                Ok(Some(id)) if Some(&id) != skip.as_ref() => id,
                Ok(_) => return Ok(None),
                Err(e) => return Err((None, e.to_string())),
            };
            let share = fleet
                .as_ref()
                .map_or_else(Share::everyone, FleetConfig::share);
            match import_shipped(&dir, &from, &share) {
                Ok(Some(report)) => {
                    let _ = serving.engine().reload_profiles();
                    Ok(Some((id, report.users)))
                }
                Ok(None) => Ok(None),
                Err(e) => Err((Some(id), e.to_string())),
            }
        })
        .await
        .unwrap_or_else(|e| Err((None, e.to_string())));
        match attempt {
            Ok(Some((id, users))) => {
                counters.imported.fetch_add(1, Relaxed);
                eprintln!(
                    "imported shipped profiles {id} from {}: {users} users",
                    shared.display()
                );
            }
            Ok(None) => {}
            Err((id, message)) => {
                if message != last_error {
                    counters.failed.fetch_add(1, Relaxed);
                    eprintln!(
                        "shipped profiles {} refused (still serving the previous generation): \
                         {message}",
                        id.as_deref().unwrap_or("in the shared directory")
                    );
                }
                last_error = message;
                refused = id.or(refused);
            }
        }
        readiness.set_shipped();
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_rule_is_crc32_modulo() {
        // zlib.crc32(b"user-42") == 0x7d06b873
        assert_eq!(partition_of("user-42", 16), 0x7d06_b873 % 16);
        assert_eq!(partition_of("anyone", 1), 0);
    }

    #[test]
    fn messages_group_events_by_partition_in_order() {
        let event = |user: &str, n: i64| Event {
            user: user.into(),
            item: format!("i{n}"),
            time: n,
            action: "click".into(),
            weight: 0.5,
            id: (n == 2).then(|| "e2".to_owned()),
            request_id: None,
        };
        let events: Vec<Event> = (0..6)
            .map(|n| event(["a", "b", "c"][n as usize % 3], n))
            .collect();
        let out = messages("ev", 2, &events);
        let mut seen = Vec::new();
        for (subject, payload) in &out {
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            let mut last = -1;
            for e in v["events"].as_array().unwrap() {
                let user = e["user"].as_str().unwrap();
                assert_eq!(subject, &partition_subject("ev", partition_of(user, 2)));
                let ts = e["ts"].as_i64().unwrap();
                assert!(ts > last, "request order kept");
                last = ts;
                assert_eq!(e["weight"].as_f64(), Some(0.5));
                assert_eq!(e["id"].as_str().is_some(), ts == 2);
                seen.push(ts);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn impressions_go_to_their_users_partitions_and_read_back_whole() {
        use pinnersage_store::impressions::Shown;
        let impression = |user: &str, n: i64| Impression {
            request_id: format!("r{n}"),
            experiment: "e".into(),
            arm: "a".into(),
            user: user.into(),
            time: n,
            latency_micros: (n % 2 == 0).then_some(n as u32),
            items: vec![Shown {
                item: format!("i{n}"),
                interest: (n % 3 == 0).then(|| "m".to_owned()),
            }],
        };
        let all: Vec<Impression> = (0..9)
            .map(|n| impression(["a", "b", "c"][n as usize % 3], n))
            .collect();
        let out = partitioned(
            "imp",
            2,
            "impressions",
            &all,
            |i| &i.user,
            |buf, i| serde_json::to_writer(buf, i).unwrap(),
        );
        let mut back = Vec::new();
        for (subject, payload) in out {
            #[derive(serde::Deserialize)]
            struct Message {
                impressions: Vec<Impression>,
            }
            let m: Message = serde_json::from_slice(&payload).unwrap();
            for i in &m.impressions {
                assert_eq!(subject, partition_subject("imp", partition_of(&i.user, 2)));
            }
            back.extend(m.impressions);
        }
        back.sort_by_key(|i| i.time);
        assert_eq!(back, all);
    }

    #[test]
    fn settings_are_checked() {
        let mut c = FleetConfig::new(4);
        assert!(c.check().is_ok());
        c.consume = vec![1, 4];
        assert!(c.check().unwrap_err().to_string().contains("out of range"));
        c.consume = vec![1, 1];
        assert!(c.check().unwrap_err().to_string().contains("twice"));
        assert!(FleetConfig::new(0).check().is_err());
        let mut c = FleetConfig::new(4);
        c.peers = vec![
            "10.0.0.2:8080".into(),
            "replica-b.internal:80".into(),
            "[::1]:9".into(),
        ];
        assert!(c.check().is_ok());
        for bad in ["10.0.0.2", ":8080", "host:0", "host:http", "host:65536"] {
            c.peers = vec![bad.into()];
            let e = c.check().unwrap_err().to_string();
            assert!(e.contains("`peers`") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn a_replica_keeps_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = replica_id(dir.path()).unwrap();
        assert!(is_replica_id(&id));
        assert_eq!(replica_id(dir.path()).unwrap(), id);
        std::fs::write(dir.path().join("replica-id"), "nonsense").unwrap();
        assert!(replica_id(dir.path()).is_err());
    }
}
