//! Event ingestion behind both doors (`POST /v1/events` and the NATS consumer): parse and
//! validate each event on its own, hand the valid ones to the group-commit [`Ingestor`], and
//! answer once they are durable.
//!
//! Payload: `{"events":[{"user":U,"item":I,"ts":UNIX_SECONDS_OR_RFC3339,"action":"click",
//! "weight":1.0,"id":OPTIONAL}]}`. Ids may be strings or integers. An event is rejected (and
//! not stored) when a field is missing or of the wrong type, its item is not in the catalog,
//! its time is negative or more than [`MAX_CLOCK_SKEW_SECONDS`] in the future, or an id is too
//! long; the others are stored.

use crate::clock::unix_now;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use pinnersage_catalog::catalog::Catalog;
use pinnersage_catalog::timestamp::{TimestampError, parse_timestamp, unix_seconds};
use pinnersage_pipeline::batch::{BatchConfig, BatchError, BatchSummary, run_batch_on};
use pinnersage_pipeline::online::ingest::Overloaded;
use pinnersage_pipeline::online::ingest::{IngestCounters, Ingestor, ResolvedEvents};
use pinnersage_store::events::{EngineStats, Event, EventStore, EventStoreError, check_event};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use pinnersage_engine::engine::Engine;

/// Most events in one request or message.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// Largest request body in bytes.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// How far in the future an event time may be (clocks differ).
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;

/// One rejected event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// Its position in the request's `events`.
    pub index: usize,
    /// A stable code: `bad_event`, `unknown_item`, `bad_timestamp`, `future_timestamp`.
    pub code: &'static str,
    /// What is wrong, for people.
    pub message: String,
}

/// What happened to a request's events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Events newly stored.
    pub accepted: usize,
    /// Events already stored before (retries), not counted again.
    pub duplicates: usize,
    /// Events refused, by index.
    pub rejected: Vec<Rejected>,
}

/// Why a whole request was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is not the expected JSON object.
    #[error("{0}")]
    BadBody(String),
    /// More than [`MAX_EVENTS_PER_REQUEST`] events.
    #[error("{0} events in one request; the limit is {MAX_EVENTS_PER_REQUEST}")]
    TooMany(usize),
    /// Storing failed: nothing of this request was stored.
    #[error("{0}")]
    Store(String),
    /// The writer's queue is full: nothing was stored, retry shortly.
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// The event stream (fleet mode) cannot take events now: retry shortly.
    #[error("{0}")]
    Unavailable(String),
}

/// An id as clients send it: a string or an integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdIn {
    Text(String),
    Int(i64),
}

impl IdIn {
    fn into_string(self) -> String {
        match self {
            IdIn::Text(s) => s,
            IdIn::Int(i) => i.to_string(),
        }
    }
}

/// A timestamp as clients send it: unix seconds (integer or decimal) or RFC 3339.
#[derive(Deserialize)]
#[serde(untagged)]
enum TsIn {
    Int(i64),
    Float(f64),
    Text(String),
}

#[derive(Deserialize)]
struct EventIn {
    user: IdIn,
    item: IdIn,
    ts: TsIn,
    action: Option<String>,
    weight: Option<f32>,
    id: Option<IdIn>,
}

#[derive(Deserialize)]
struct BodyIn<'a> {
    /// Each event stays raw text until it is parsed on its own (errors by index).
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

fn reject(index: usize, code: &'static str, message: impl Into<String>) -> Rejected {
    Rejected {
        index,
        code,
        message: message.into(),
    }
}

/// Parses a request body into the valid events (in request order, each with its item's catalog
/// row) and the rejections.
pub fn parse_events(
    body: &[u8],
    catalog: &Catalog,
    now: i64,
) -> Result<(ResolvedEvents, Vec<Rejected>), IngestError> {
    let body: BodyIn = serde_json::from_slice(body).map_err(|e| {
        IngestError::BadBody(format!(
            "body must be {{\"events\":[...]}}: {e} (see /openapi.json)"
        ))
    })?;
    if body.events.is_empty() {
        return Err(IngestError::BadBody("\"events\" is empty".into()));
    }
    if body.events.len() > MAX_EVENTS_PER_REQUEST {
        return Err(IngestError::TooMany(body.events.len()));
    }
    let mut valid = ResolvedEvents::with_capacity(body.events.len());
    let mut rejected = Vec::new();
    for (index, raw) in body.events.into_iter().enumerate() {
        match parse_one(index, raw, catalog, now) {
            Ok((event, row)) => valid.push(event, row),
            Err(r) => rejected.push(r),
        }
    }
    Ok((valid, rejected))
}

/// One valid event and its item's catalog row, or why it is rejected.
fn parse_one(
    index: usize,
    raw: &RawValue,
    catalog: &Catalog,
    now: i64,
) -> Result<(Event, u32), Rejected> {
    let e: EventIn = serde_json::from_str(raw.get()).map_err(|e| {
        reject(
            index,
            "bad_event",
            format!("event {index}: {e} (fields: user, item, ts, optional action, weight, id)"),
        )
    })?;
    let time = match e.ts {
        TsIn::Int(t) => Ok(t),
        TsIn::Float(t) => unix_seconds(t).ok_or(TimestampError::OutOfRange(t)),
        TsIn::Text(t) => parse_timestamp(&t),
    }
    .map_err(|m| reject(index, "bad_timestamp", format!("event {index}: ts: {m}")))?;
    if time < 0 {
        return Err(reject(
            index,
            "bad_timestamp",
            format!("event {index}: ts {time} is before 1970"),
        ));
    }
    if time > now.saturating_add(MAX_CLOCK_SKEW_SECONDS) {
        return Err(reject(
            index,
            "future_timestamp",
            format!(
                "event {index}: ts {time} is {}s in the future (at most {MAX_CLOCK_SKEW_SECONDS}s allowed)",
                time - now
            ),
        ));
    }
    let event = Event {
        user: e.user.into_string(),
        item: e.item.into_string(),
        time,
        action: e.action.unwrap_or_default(),
        weight: e.weight.unwrap_or(1.0),
        id: e.id.map(IdIn::into_string),
    };
    check_event(&event).map_err(|m| reject(index, "bad_event", format!("event {index}: {m}")))?;
    let Some(row) = catalog.row_of(&event.item) else {
        return Err(reject(
            index,
            "unknown_item",
            format!("event {index}: item {:?} is not in the catalog", event.item),
        ));
    };
    Ok((event, row as u32))
}

/// Parses a request body: the valid events, and a report listing the rejected ones (nothing
/// accepted yet), as every door needs them.
pub fn parse_request(
    body: &[u8],
    catalog: &Catalog,
) -> Result<(ResolvedEvents, IngestReport), IngestError> {
    let (valid, rejected) = parse_events(body, catalog, unix_now())?;
    Ok((
        valid,
        IngestReport {
            rejected,
            ..IngestReport::default()
        },
    ))
}

/// The ingestion side of a server: the event store it owns, the group-commit writer and the
/// batch trigger.
pub struct Ingest {
    data_dir: PathBuf,
    store: Arc<EventStore>,
    ingestor: Ingestor,
    batch_lock: Mutex<()>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Ingest {
    /// Opens the event store of `engine`'s data directory (the server owns it from now on; its
    /// background flushes and compactions run at a lower CPU priority), recovers the online
    /// profiles from the events after the served batch, and starts the writer with room for
    /// `queue` waiting submissions. Returns the number of events recovered too.
    pub fn open(engine: &Engine, queue: usize) -> Result<(Self, u64), EventStoreError> {
        let data_dir = engine.data_dir().to_path_buf();
        let store = Arc::new(EventStore::open(&data_dir)?);
        // Flushes and compactions yield the CPU to ingestion and requests.
        store.lower_background_priority();
        let recovered = engine.online().recover(&store)?;
        let ingestor = Ingestor::with_queue(store.clone(), engine.online().clone(), queue);
        Ok((
            Self {
                data_dir,
                store,
                ingestor,
                batch_lock: Mutex::new(()),
            },
            recovered,
        ))
    }

    /// The writer's counters.
    pub fn counters(&self) -> &IngestCounters {
        self.ingestor.counters()
    }

    /// The event store's flush and compaction backlog.
    pub fn engine_stats(&self) -> EngineStats {
        self.store.engine_stats()
    }

    /// Validates and stores a request body; resolves once the valid events are durable.
    pub async fn ingest(
        &self,
        body: &[u8],
        catalog: &Catalog,
    ) -> Result<IngestReport, IngestError> {
        let (valid, mut report) = parse_request(body, catalog)?;
        if valid.is_empty() {
            return Ok(report);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ingestor.submit(
            valid,
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        )?;
        let fresh = rx
            .await
            .map_err(|_| IngestError::Store("the ingestor stopped".into()))?
            .map_err(|e| IngestError::Store(e.to_string()))?;
        report.accepted = fresh.iter().filter(|&&f| f).count();
        report.duplicates = fresh.len() - report.accepted;
        Ok(report)
    }

    /// Runs a batch over the owned event store (one at a time) and returns its summary; the
    /// caller then reloads the engine's profiles.
    pub fn run_batch(&self, config: &BatchConfig) -> Result<BatchSummary, BatchError> {
        let _one_at_a_time = self
            .batch_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        run_batch_on(&self.data_dir, &self.store, config, &|_| {})
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl pinnersage_core::error::Kind for IngestError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::BadBody(_) | Self::TooMany(_) => BadInput,
            Self::Store(_) | Self::Overloaded(_) | Self::Unavailable(_) => Unavailable,
        }
    }
}
