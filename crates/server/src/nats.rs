//! The second door into ingestion: a NATS JetStream consumer.
//!
//! A durable pull consumer on a stream that captures the configured subject. Each message
//! carries the same JSON as `POST /v1/events`; it is acknowledged only after its valid events
//! are durable in the event store (and visible online). A message the store could not take is
//! negatively acknowledged and redelivered; a message that can never succeed (not JSON, no
//! valid event) is terminated so it is not redelivered forever. A redelivered message whose
//! events were stored already is harmless: events are stored once (by id, or by content).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::AckPolicy};
use futures_util::StreamExt;

use crate::ingest::{Ingest, IngestError};
use crate::recommend::Engine;

/// Where to consume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Subject the events are published on.
    pub subject: String,
    /// JetStream stream capturing the subject (created if missing).
    pub stream: String,
    /// Durable consumer name (created if missing): its position survives restarts.
    pub durable: String,
    /// Messages processed concurrently (their events share group commits).
    pub in_flight: usize,
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
        }
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
}

/// A NATS failure while setting up or consuming.
#[derive(Debug, thiserror::Error)]
#[error("NATS {url}: {message}")]
pub struct NatsError {
    url: String,
    message: String,
}

/// Connects, ensures the stream and the durable consumer exist, and spawns the consuming task
/// (on the current tokio runtime; it reconnects by itself). Fails if the setup fails.
pub async fn start(
    config: NatsConfig,
    engine: Arc<Engine>,
    ingest: Arc<Ingest>,
    counters: Arc<NatsCounters>,
) -> Result<tokio::task::JoinHandle<()>, NatsError> {
    let fail = |message: String| NatsError {
        url: config.url.clone(),
        message,
    };
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(&config.url)
        .await
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.subject.clone()],
            ..Default::default()
        })
        .await
        .map_err(|e| fail(format!("stream {}: {e}", config.stream)))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &config.durable,
            jetstream::consumer::pull::Config {
                durable_name: Some(config.durable.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: (config.in_flight * 4) as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| fail(format!("consumer {}: {e}", config.durable)))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| fail(format!("consuming: {e}")))?;
    eprintln!(
        "consuming {} from {} (stream {}, durable consumer {})",
        config.subject, config.url, config.stream, config.durable
    );
    Ok(tokio::spawn(messages.for_each_concurrent(
        config.in_flight.max(1),
        move |message| {
            let (engine, ingest, counters) = (engine.clone(), ingest.clone(), counters.clone());
            async move {
                let Ok(message) = message else {
                    return; // a transient consumer error: the client retries
                };
                handle(&message, &engine, &ingest, &counters).await;
            }
        },
    )))
}

async fn handle(
    message: &jetstream::Message,
    engine: &Engine,
    ingest: &Ingest,
    counters: &NatsCounters,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let outcome = ingest.ingest(&message.payload, engine.catalog()).await;
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
        Err(e @ (IngestError::Store(_) | IngestError::Overloaded(_))) => {
            eprintln!(
                "NATS message on {}: {e}; will be redelivered",
                message.subject
            );
            AckKind::Nak(Some(Duration::from_secs(1)))
        }
    };
    let counter = match kind {
        AckKind::Ack => &counters.acked,
        AckKind::Term => &counters.terminated,
        _ => &counters.nacked,
    };
    // Double ack: the ack is confirmed by the server, so "acked" means acked.
    let sent = match kind {
        AckKind::Ack => message.double_ack().await,
        kind => message.ack_with(kind).await,
    };
    if sent.is_ok() {
        counter.fetch_add(1, Relaxed);
    }
}
