//! The second door into ingestion: a NATS JetStream consumer.
//!
//! A durable pull consumer on a stream that captures the configured subject. Each message
//! carries the same JSON as `POST /v1/events`; it is acknowledged only after its valid events
//! are durable in the event store (and visible online). A message the store could not take is
//! negatively acknowledged and redelivered; a message that can never succeed (not JSON, no
//! valid event) is terminated so it is not redelivered forever. A redelivered message whose
//! events were stored already is harmless: events are stored once (by id, or by content).
//!
//! In fleet mode ([`crate::fleet`]) the stream captures `<subject>.*`, one subject per
//! partition, and each replica has its own durable consumers (all partitions, or one per
//! partition it holds), so every replica stores every event of the users it holds. Messages are
//! processed concurrently: the store orders a user's events by time and the online state sorts
//! them, so the order of delivery does not change what a replica serves.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::AckPolicy};
use futures_util::StreamExt;

use crate::fleet::{FleetConfig, Publisher, Readiness, Subjects, partition_subject, replica_id};
use crate::intake::IngestError;
use crate::owned_store::OwnedStore;
use pinnersage_engine::engine::Engine;
use pinnersage_engine::serving::Serving;
use pinnersage_store::impressions::{Impression, ImpressionStore, check_impression};

/// Where to consume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URLs, comma-separated (all nodes of a cluster, so that startup survives one being
    /// down), e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Subject the events are published on; in fleet mode the prefix of the partitions'
    /// subjects `<subject>.<partition>`.
    pub subject: String,
    /// JetStream stream capturing the subject (created if missing).
    pub stream: String,
    /// Durable consumer name (created if missing): its position survives restarts. In fleet
    /// mode the prefix of the replica's own consumers.
    pub durable: String,
    /// Messages processed concurrently (their events share group commits).
    pub in_flight: usize,
    /// Fleet mode: partitioned subjects, a consumer per replica, events posted to any replica
    /// published to the stream.
    pub fleet: Option<FleetConfig>,
    /// Fleet mode: how long a post is tried again while NATS cannot take it (a stream electing
    /// a leader) before it is answered 503.
    pub publish_patience: Duration,
    /// Fleet mode: the prefix of the item changes' subjects `<items_subject>.<item>`
    /// ([`crate::item_changes`]).
    pub items_subject: String,
    /// Fleet mode: the JetStream stream of item changes (created if missing; it keeps the last
    /// change of each item).
    pub items_stream: String,
    /// Fleet mode with experiments: the prefix of the impressions' subjects
    /// `<impressions_subject>.<partition>`.
    pub impressions_subject: String,
    /// Fleet mode with experiments: the JetStream stream of impressions (created if missing;
    /// messages kept for the impressions' retention).
    pub impressions_stream: String,
}

impl NatsConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            subject: "pinnersage.events".into(),
            stream: "PINNERSAGE_EVENTS".into(),
            durable: "pinnersage".into(),
            in_flight: 256,
            fleet: None,
            publish_patience: PUBLISH_PATIENCE,
            items_subject: "pinnersage.items".into(),
            items_stream: "PINNERSAGE_ITEMS".into(),
            impressions_subject: "pinnersage.impressions".into(),
            impressions_stream: "PINNERSAGE_IMPRESSIONS".into(),
        }
    }

    /// The subjects the stream must capture.
    fn stream_subjects(&self) -> Vec<String> {
        match &self.fleet {
            None => vec![self.subject.clone()],
            Some(_) => vec![format!("{}.*", self.subject)],
        }
    }

    /// This replica's durable consumers: (name, filter subject).
    fn consumers(&self, replica: &str) -> Vec<(String, String)> {
        match &self.fleet {
            None => vec![(self.durable.clone(), String::new())],
            Some(fleet) => {
                partition_consumers(fleet, &format!("{}-{replica}", self.durable), &self.subject)
            }
        }
    }
}

/// A replica's durable consumers of a partitioned stream (name, filter subject): one of every
/// partition, or one per partition it holds.
fn partition_consumers(fleet: &FleetConfig, name: &str, subject: &str) -> Vec<(String, String)> {
    if fleet.consume.is_empty() {
        return vec![(name.to_owned(), String::new())];
    }
    fleet
        .consume
        .iter()
        .map(|&p| (format!("{name}-p{p}"), partition_subject(subject, p)))
        .collect()
}

impl NatsConfig {
    /// A fleet replica's durable consumers of the impressions stream.
    fn impression_consumers(&self, fleet: &FleetConfig, replica: &str) -> Vec<(String, String)> {
        partition_consumers(
            fleet,
            &format!("{}-{replica}-impressions", self.durable),
            &self.impressions_subject,
        )
    }
}

/// Counters of the consumer.
#[derive(Debug, Default)]
pub struct NatsCounters {
    /// Messages acknowledged (their valid events durable).
    pub acked: std::sync::atomic::AtomicU64,
    /// Messages negatively acknowledged (to be redelivered).
    pub nacked: std::sync::atomic::AtomicU64,
    /// Messages terminated as unprocessable.
    pub terminated: std::sync::atomic::AtomicU64,
    /// Fleet mode: item change messages acknowledged (journaled and visible).
    pub item_acked: std::sync::atomic::AtomicU64,
    /// Fleet mode: item change messages to be redelivered (the journal failed).
    pub item_nacked: std::sync::atomic::AtomicU64,
    /// Fleet mode: item change messages dropped as unprocessable.
    pub item_terminated: std::sync::atomic::AtomicU64,
    /// Fleet mode: impression messages stored and acknowledged.
    pub impressions_acked: std::sync::atomic::AtomicU64,
    /// Fleet mode: fsynced writes of impression messages (each stores the messages ready
    /// together).
    pub impressions_writes: std::sync::atomic::AtomicU64,
    /// Fleet mode: impression messages to be redelivered (the store failed).
    pub impressions_nacked: std::sync::atomic::AtomicU64,
    /// Fleet mode: impression messages dropped as unprocessable (not JSON, invalid, or past the
    /// retention).
    pub impressions_terminated: std::sync::atomic::AtomicU64,
}

/// NATS server URLs (comma-separated) as they may be printed: the password of `user:password@`
/// or the token of `token@` masked, with or without a `nats://` scheme.
///
/// ```
/// use pinnersage_server::nats::masked_urls;
/// assert_eq!(
///     masked_urls("nats://app:s3cret@n1:4222,nats://n2:4222"),
///     "nats://app:***@n1:4222,nats://n2:4222"
/// );
/// assert_eq!(masked_urls("app:s3cret@n1:4222"), "app:***@n1:4222");
/// assert_eq!(masked_urls("tls://tok3n@n1"), "tls://***@n1");
/// assert_eq!(masked_urls("127.0.0.1:4222"), "127.0.0.1:4222");
/// ```
pub fn masked_urls(urls: &str) -> String {
    urls.split(',')
        .map(|part| {
            let (scheme, rest) = match part.split_once("://") {
                Some((scheme, rest)) => (format!("{scheme}://"), rest),
                None => (String::new(), part),
            };
            // The userinfo ends at the last '@' of the authority (before any path).
            let authority = rest.split('/').next().unwrap_or(rest);
            let Some(at) = authority.rfind('@') else {
                return part.to_owned();
            };
            let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}{user}:***@{host}"),
                None => format!("{scheme}***@{host}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A NATS failure while setting up or consuming.
#[derive(Debug, thiserror::Error)]
#[error("NATS {url}: {message}")]
pub struct NatsError {
    url: String,
    message: String,
}

/// A running consumer.
#[derive(Debug)]
pub struct Consuming {
    /// The consuming task (it reconnects by itself; it ends only on a fatal error).
    pub task: tokio::task::JoinHandle<()>,
    /// In fleet mode, the publisher `POST /v1/events` hands events to.
    pub publisher: Option<Publisher>,
    /// Stops the consumers gracefully.
    pub stop: ConsumersStop,
}

/// One message of a pull consumer.
type Pulled = Result<jetstream::Message, jetstream::consumer::pull::MessagesError>;

/// Resolves when a graceful stop begins.
type StopSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A consumer's messages until the stop.
type TakeUntilStop<S> = futures_util::stream::TakeUntil<S, StopSignal>;

/// The graceful stop of a server's consumers: each stops taking messages, settles those it
/// holds, and drops its pull subscriptions, so JetStream stops delivering to it (a message sent
/// to a subscription that is gone would wait [`ACK_WAIT`] before a restarted replica gets it).
#[derive(Debug)]
pub struct ConsumersStop {
    signal: tokio::sync::watch::Sender<bool>,
    /// Held by each consumer until it ends: [`ConsumersStop::stop`] waits for all to drop.
    held: Option<tokio::sync::mpsc::Sender<()>>,
    ended: tokio::sync::mpsc::Receiver<()>,
}

impl ConsumersStop {
    fn new() -> Self {
        let (held, ended) = tokio::sync::mpsc::channel(1);
        Self {
            signal: tokio::sync::watch::channel(false).0,
            held: Some(held),
            ended,
        }
    }

    /// Spawns the consumer `consume` makes of `messages`, which end at the stop; the stop waits
    /// for it to return (having settled what it took).
    fn spawn<S, F>(
        &self,
        messages: S,
        consume: impl FnOnce(TakeUntilStop<S>) -> F,
    ) -> tokio::task::JoinHandle<()>
    where
        S: futures_util::Stream<Item = Pulled>,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut signal = self.signal.subscribe();
        let stopped: StopSignal = Box::pin(async move {
            let _ = signal.wait_for(|stop| *stop).await;
        });
        let consuming = consume(messages.take_until(stopped));
        let held = self.held.clone();
        tokio::spawn(async move {
            consuming.await;
            drop(held);
        })
    }

    /// Stops the consumers and waits for them, `patience` at most; false if one was still busy.
    pub async fn stop(mut self, patience: Duration) -> bool {
        self.signal.send_replace(true);
        self.held.take();
        tokio::time::timeout(patience, self.ended.recv())
            .await
            .is_ok()
    }
}

/// Connects, ensures the stream and this replica's durable consumers exist, and spawns the
/// consuming task (on the current tokio runtime). In fleet mode with `impressions` (a server
/// with experiments), the impressions stream is consumed into that store too. `readiness` is
/// told once the consumers have caught up with the stream as it stood at startup. An
/// unreachable NATS is an error at once (the caller exits and its supervisor restarts it); a
/// reachable one that does not answer JetStream requests (a cluster electing a leader) is
/// retried for [`SETUP_PATIENCE`].
pub async fn start(
    config: NatsConfig,
    data_dir: &std::path::Path,
    serving: Arc<Serving>,
    store: Arc<OwnedStore>,
    impressions: Option<Arc<ImpressionStore>>,
    counters: Arc<NatsCounters>,
    readiness: Arc<Readiness>,
) -> Result<Consuming, NatsError> {
    let fail = |message: String| NatsError {
        url: masked_urls(&config.url),
        message,
    };
    let urls: Vec<&str> = config.url.split(',').map(str::trim).collect();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            use async_nats::Event::{Connected, Disconnected};
            match event {
                Connected | Disconnected => eprintln!("NATS: {event}"),
                _ => {}
            }
        })
        .connect(urls.as_slice())
        .await
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let js = jetstream::new(client.clone());
    let subjects = config.stream_subjects();
    let replica = match &config.fleet {
        None => String::new(),
        Some(_) => replica_id(data_dir)
            .map_err(|e| fail(format!("the replica id in {}: {e}", data_dir.display())))?,
    };
    // A cluster electing a leader (a node just died) answers JetStream requests late or not at
    // all for a few seconds: retry the setup, within a bound.
    let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
    let Consumers {
        events,
        items,
        impressions: impression_messages,
        catching_up,
    } = loop {
        match setup(&js, &config, &subjects, &replica, impressions.as_deref()).await {
            Ok(done) => break done,
            Err(Setup::Fatal(message)) => return Err(fail(message)),
            Err(Setup::Transient(message)) if tokio::time::Instant::now() < deadline => {
                eprintln!("NATS: {message}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(Setup::Transient(message)) => return Err(fail(message)),
        }
    };
    eprintln!(
        "consuming {} from {} (stream {}, durable consumers {})",
        subjects.join(", "),
        masked_urls(&config.url),
        config.stream,
        config
            .consumers(&replica)
            .into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let stop = ConsumersStop::new();
    if let Some(items) = items {
        eprintln!(
            "applying item changes from {}.* (stream {}, durable consumer {})",
            config.items_subject,
            config.items_stream,
            items_consumer(&config, &replica)
        );
        let (prefix, serving, counters) = (
            config.items_subject.clone(),
            serving.clone(),
            counters.clone(),
        );
        stop.spawn(items, |items| {
            crate::item_changes::apply_in_order(items, prefix, serving, counters)
        });
    }
    if let (Some(messages), Some(store)) = (impression_messages, impressions) {
        eprintln!(
            "storing impressions from {}.* (stream {})",
            config.impressions_subject, config.impressions_stream
        );
        let (counters, per_write) = (counters.clone(), config.in_flight);
        stop.spawn(futures_util::stream::select_all(messages), |messages| {
            consume_impressions(messages, store, counters, per_write)
        });
    }
    tokio::spawn(watch_catch_up(catching_up, readiness));
    let publisher = config.fleet.as_ref().map(|fleet| {
        Publisher::new(
            client,
            Subjects {
                events: config.subject.clone(),
                items: config.items_subject.clone(),
                impressions: config.impressions_subject.clone(),
            },
            fleet.partitions,
            PUBLISH_TIMEOUT,
            config.publish_patience,
        )
    });
    let in_flight = config.in_flight.max(1);
    let task = stop.spawn(futures_util::stream::select_all(events), |events| {
        events.for_each_concurrent(in_flight, move |message| {
            let (engine, store, counters) = (serving.engine(), store.clone(), counters.clone());
            async move {
                let Ok(message) = message else {
                    return; // a transient consumer error: the client retries
                };
                handle(&message, &engine, &store, &counters).await;
            }
        })
    });
    Ok(Consuming {
        task,
        publisher,
        stop,
    })
}

/// How long a replica retries setting up its stream and consumers while JetStream does not
/// answer (a cluster electing a leader) before it gives up.
pub const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// Why the stream and consumer setup failed.
enum Setup {
    /// Wrong configuration: retrying cannot help.
    Fatal(String),
    /// JetStream did not answer in time, or not yet: retry.
    Transient(String),
}

/// A replica's open consumers.
struct Consumers {
    /// The events' message streams.
    events: Vec<jetstream::consumer::pull::Stream>,
    /// Fleet mode: the item changes' message stream.
    items: Option<jetstream::consumer::pull::Stream>,
    /// Fleet mode with experiments: the impressions' message streams.
    impressions: Option<Vec<jetstream::consumer::pull::Stream>>,
    /// Every consumer with the last sequence of its stream at startup (the catch-up target).
    catching_up: Vec<(jetstream::consumer::PullConsumer, u64)>,
}

/// The durable consumer of a replica's item changes.
fn items_consumer(config: &NatsConfig, replica: &str) -> String {
    format!("{}-{replica}-items", config.durable)
}

/// Ensures the stream captures `subjects` and this replica's consumers exist (in fleet mode the
/// items stream and its consumer too), and opens their message streams.
async fn setup(
    js: &jetstream::Context,
    config: &NatsConfig,
    subjects: &[String],
    replica: &str,
    impressions: Option<&ImpressionStore>,
) -> Result<Consumers, Setup> {
    let mut stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: subjects.to_vec(),
            num_replicas: config.fleet.as_ref().map_or(1, |f| f.stream_replicas),
            ..Default::default()
        })
        .await
        .map_err(|e| Setup::Transient(format!("stream {}: {e}", config.stream)))?;
    let captured = &stream.cached_info().config.subjects;
    if let Some(missing) = subjects.iter().find(|s| !captured.contains(s)) {
        return Err(Setup::Fatal(format!(
            "stream {} captures {captured:?}, not {missing:?}: {}",
            config.stream,
            if config.fleet.is_some() {
                "fleet mode needs a stream of the partitioned subjects (use another `nats_stream`)"
            } else {
                "use the stream's subject or another `nats_stream`"
            }
        )));
    }
    let consumers = durable_consumers(&stream, config.consumers(replica), config.in_flight).await?;
    let target = last_sequence(&mut stream, &config.stream).await?;
    let mut events = Vec::new();
    for consumer in &consumers {
        events.push(open(consumer).await?);
    }
    let mut catching_up: Vec<_> = consumers.into_iter().map(|c| (c, target)).collect();
    let items = match &config.fleet {
        None => None,
        Some(fleet) => {
            let (consumer, target) = setup_items(js, config, fleet, replica).await?;
            let messages = open(&consumer).await?;
            catching_up.push((consumer, target));
            Some(messages)
        }
    };
    let impressions = match (&config.fleet, impressions) {
        (Some(fleet), Some(store)) => {
            let (consumers, target) =
                setup_impressions(js, config, fleet, replica, store.retention_days()).await?;
            let mut messages = Vec::new();
            for consumer in consumers {
                messages.push(open(&consumer).await?);
                catching_up.push((consumer, target));
            }
            Some(messages)
        }
        _ => None,
    };
    Ok(Consumers {
        events,
        items,
        impressions,
        catching_up,
    })
}

/// Ensures the impressions stream (partitioned like the events, messages kept for
/// `retention_days`) and this replica's consumers of it exist; returns the consumers and the
/// stream's last sequence.
async fn setup_impressions(
    js: &jetstream::Context,
    config: &NatsConfig,
    fleet: &FleetConfig,
    replica: &str,
    retention_days: u32,
) -> Result<(Vec<jetstream::consumer::PullConsumer>, u64), Setup> {
    let subject = format!("{}.*", config.impressions_subject);
    let name = &config.impressions_stream;
    let mut stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            num_replicas: fleet.stream_replicas,
            max_age: Duration::from_secs(u64::from(retention_days) * 86_400),
            ..Default::default()
        })
        .await
        .map_err(|e| Setup::Transient(format!("stream {name}: {e}")))?;
    let captured = &stream.cached_info().config.subjects;
    if !captured.contains(&subject) {
        return Err(Setup::Fatal(format!(
            "stream {name} captures {captured:?}, not {subject:?}: use another \
             `nats_impressions_stream`"
        )));
    }
    let consumers = durable_consumers(
        &stream,
        config.impression_consumers(fleet, replica),
        config.in_flight,
    )
    .await?;
    let target = last_sequence(&mut stream, name).await?;
    Ok((consumers, target))
}

/// Ensures the durable pull consumers `named` (name, filter subject) of `stream` exist, each
/// with explicit acknowledgements and room for `in_flight` messages processed at once.
async fn durable_consumers(
    stream: &jetstream::stream::Stream,
    named: Vec<(String, String)>,
    in_flight: usize,
) -> Result<Vec<jetstream::consumer::PullConsumer>, Setup> {
    let mut consumers = Vec::with_capacity(named.len());
    for (name, filter_subject) in named {
        let consumer = stream
            .get_or_create_consumer(
                &name,
                jetstream::consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: (in_flight * 4) as i64,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Setup::Transient(format!("consumer {name}: {e}")))?;
        consumers.push(consumer);
    }
    Ok(consumers)
}

/// Acknowledges `message` with `kind` (an `Ack` confirmed by the server: "acked" means acked)
/// and counts it in `acked`, `terminated` or `nacked` once the server has it.
async fn settle(
    message: &jetstream::Message,
    kind: AckKind,
    [acked, terminated, nacked]: [&std::sync::atomic::AtomicU64; 3],
) {
    let counter = match kind {
        AckKind::Ack => acked,
        AckKind::Term => terminated,
        _ => nacked,
    };
    let sent = match kind {
        AckKind::Ack => message.double_ack().await,
        kind => message.ack_with(kind).await,
    };
    if sent.is_ok() {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The impressions of a stream message, `{"impressions":[...]}`.
#[derive(serde::Deserialize)]
struct ImpressionsMessage {
    impressions: Vec<Impression>,
}

/// Stores every impression message in `store` and acknowledges it once fsynced; a message that
/// cannot be stored ever (not JSON, or an invalid impression) is dropped and logged, one the
/// store failed on is redelivered. A redelivered one is stored once (same request id and time).
/// The messages ready together (up to `per_write`: a replica catching up, or receiving the
/// groups of many replicas) are stored by one fsynced write.
async fn consume_impressions(
    messages: impl futures_util::Stream<Item = Pulled>,
    store: Arc<ImpressionStore>,
    counters: Arc<NatsCounters>,
    per_write: usize,
) {
    let counted = [
        &counters.impressions_acked,
        &counters.impressions_terminated,
        &counters.impressions_nacked,
    ];
    let mut ready = std::pin::pin!(messages.ready_chunks(per_write.max(1)));
    while let Some(chunk) = ready.next().await {
        let mut valid = Vec::with_capacity(chunk.len());
        let mut impressions = Vec::new();
        for message in chunk.into_iter().flatten() {
            let parsed = serde_json::from_slice::<ImpressionsMessage>(&message.payload)
                .map_err(|e| e.to_string())
                .and_then(|m| {
                    m.impressions
                        .iter()
                        .try_for_each(check_impression)
                        .map_err(|e| e.to_string())?;
                    Ok(m)
                });
            match parsed {
                Ok(m) => {
                    impressions.extend(m.impressions);
                    valid.push(message);
                }
                Err(e) => {
                    eprintln!("NATS impressions on {}: {e}; dropped", message.subject);
                    settle(&message, AckKind::Term, counted).await;
                }
            }
        }
        if valid.is_empty() {
            continue;
        }
        let stored = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.record(&impressions)).await
        };
        let kind = match stored {
            Ok(Ok(())) => {
                counters
                    .impressions_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                AckKind::Ack
            }
            Ok(Err(e)) => {
                eprintln!(
                    "NATS impressions ({} messages): {e}; will be redelivered",
                    valid.len()
                );
                AckKind::Nak(Some(Duration::from_secs(1)))
            }
            Err(_) => AckKind::Nak(Some(Duration::from_secs(1))),
        };
        futures_util::future::join_all(valid.iter().map(|m| settle(m, kind, counted))).await;
    }
}

/// The last sequence of `stream` (named `name`) now: a consumer's catch-up target.
async fn last_sequence(stream: &mut jetstream::stream::Stream, name: &str) -> Result<u64, Setup> {
    Ok(stream
        .info()
        .await
        .map_err(|e| Setup::Transient(format!("stream {name}: {e}")))?
        .state
        .last_sequence)
}

/// Opens a consumer's message stream.
async fn open(
    consumer: &jetstream::consumer::PullConsumer,
) -> Result<jetstream::consumer::pull::Stream, Setup> {
    consumer
        .stream()
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_EXPIRES / 3)
        .messages()
        .await
        .map_err(|e| Setup::Transient(format!("consuming: {e}")))
}

/// Ensures the items stream (the last change of each item, [`crate::item_changes`]) and this
/// replica's consumer of it exist; returns the consumer and the stream's last sequence.
async fn setup_items(
    js: &jetstream::Context,
    config: &NatsConfig,
    fleet: &FleetConfig,
    replica: &str,
) -> Result<(jetstream::consumer::PullConsumer, u64), Setup> {
    let subject = format!("{}.*", config.items_subject);
    let mut stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: config.items_stream.clone(),
            subjects: vec![subject.clone()],
            num_replicas: fleet.stream_replicas,
            max_messages_per_subject: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| Setup::Transient(format!("stream {}: {e}", config.items_stream)))?;
    let info = &stream.cached_info().config;
    if !info.subjects.contains(&subject) || info.max_messages_per_subject != 1 {
        return Err(Setup::Fatal(format!(
            "stream {} captures {:?} keeping {} messages per subject, not {subject:?} keeping \
             1: use another `nats_items_stream`",
            config.items_stream, info.subjects, info.max_messages_per_subject
        )));
    }
    let name = items_consumer(config, replica);
    let consumer = stream
        .get_or_create_consumer(
            &name,
            jetstream::consumer::pull::Config {
                durable_name: Some(name.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: 4096,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Setup::Transient(format!("consumer {name}: {e}")))?;
    let target = last_sequence(&mut stream, &config.items_stream).await?;
    Ok((consumer, target))
}

/// Redelivery of a message not acknowledged in this time (its events are fsynced in
/// milliseconds; a replica killed mid-message gets it again after this on restart).
pub const ACK_WAIT: Duration = Duration::from_secs(10);

/// Lifetime of one pull request: a replica killed -9 leaves requests the server still delivers
/// to until they expire, so this bounds how long a restarted replica waits for those messages
/// (with [`ACK_WAIT`]).
pub const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// How long `POST /v1/events` waits for JetStream's acknowledgement in fleet mode.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a fleet-mode post is tried again while NATS cannot take it, at most (less when the
/// request timeout is shorter): a stream elects a new leader in 5-7 s after its leader died.
pub const PUBLISH_PATIENCE: Duration = Duration::from_secs(10);

/// Marks `readiness` caught up once every consumer has acknowledged its stream up to its target
/// (the stream's last sequence at startup), or has nothing pending.
async fn watch_catch_up(
    mut consumers: Vec<(jetstream::consumer::PullConsumer, u64)>,
    readiness: Arc<Readiness>,
) {
    loop {
        let mut caught_up = true;
        for (consumer, target) in &mut consumers {
            let target = *target;
            caught_up &= match consumer.info().await {
                Ok(info) => {
                    info.ack_floor.stream_sequence >= target
                        || (info.num_pending == 0 && info.num_ack_pending == 0)
                }
                Err(_) => false,
            };
        }
        if caught_up {
            readiness.set_caught_up();
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn handle(
    message: &jetstream::Message,
    engine: &Engine,
    store: &OwnedStore,
    counters: &NatsCounters,
) {
    let outcome = store.accept(&message.payload, engine.catalog()).await;
    let kind = match outcome {
        Ok(report) if report.accepted + report.duplicates > 0 => {
            if !report.rejected.is_empty() {
                eprintln!(
                    "NATS message on {}: {} events rejected (first: {})",
                    message.subject,
                    report.rejected.len(),
                    report.rejected[0].message
                );
            }
            AckKind::Ack
        }
        Ok(report) => {
            let first = report.rejected.first().map_or("", |r| r.message.as_str());
            eprintln!(
                "NATS message on {}: no valid event, dropped ({first})",
                message.subject
            );
            AckKind::Term
        }
        Err(e @ (IngestError::BadBody(_) | IngestError::TooMany(_))) => {
            eprintln!("NATS message on {}: {e}; dropped", message.subject);
            AckKind::Term
        }
        Err(
            e @ (IngestError::Store(_) | IngestError::Overloaded(_) | IngestError::Unavailable(_)),
        ) => {
            eprintln!(
                "NATS message on {}: {e}; will be redelivered",
                message.subject
            );
            AckKind::Nak(Some(Duration::from_secs(1)))
        }
    };
    let counted = [&counters.acked, &counters.terminated, &counters.nacked];
    settle(message, kind, counted).await;
}

impl pinnersage_core::error::Kind for NatsError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        Unavailable
    }
}
