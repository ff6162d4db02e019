//! The intake of events behind every door (`POST /v1/events`, the NATS consumer, the fleet's
//! stream): parse and validate each event on its own, with a report of the rejected ones; the
//! valid ones go to the store the server owns ([`crate::owned_store`]) or to a fleet's stream.
//!
//! Payload: `{"events":[{"user":U,"item":I,"ts":UNIX_SECONDS_OR_RFC3339,"action":"click",
//! "weight":1.0,"id":OPTIONAL,"request_id":OPTIONAL}]}` (`request_id`: the recommendation answer
//! the engagement came from). Ids may be strings or integers. An event is rejected (and
//! not stored) when a field is missing or of the wrong type, its item is not in the catalog,
//! its time is negative or more than [`MAX_CLOCK_SKEW_SECONDS`] in the future, or an id is too
//! long; the others are stored.

use pinnersage_catalog::catalog::Catalog;
use pinnersage_catalog::timestamp::{TimestampError, parse_timestamp, unix_seconds};
use pinnersage_pipeline::online::ingest::{Overloaded, ResolvedEvents};
use pinnersage_store::events::{Event, check_event};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::clock::unix_now;

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
pub(crate) enum IdIn {
    Text(String),
    Int(i64),
}

impl IdIn {
    pub(crate) fn into_string(self) -> String {
        match self {
            IdIn::Text(s) => s,
            IdIn::Int(i) => i.to_string(),
        }
    }
}

/// A timestamp as clients send it: unix seconds (integer or decimal) or RFC 3339.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum TsIn {
    Int(i64),
    Float(f64),
    Text(String),
}

impl TsIn {
    /// The unix second it names.
    pub(crate) fn unix(self) -> Result<i64, TimestampError> {
        match self {
            TsIn::Int(t) => Ok(t),
            TsIn::Float(t) => unix_seconds(t).ok_or(TimestampError::OutOfRange(t)),
            TsIn::Text(t) => parse_timestamp(&t),
        }
    }
}

#[derive(Deserialize)]
struct EventIn {
    user: IdIn,
    item: IdIn,
    ts: TsIn,
    action: Option<String>,
    weight: Option<f32>,
    id: Option<IdIn>,
    request_id: Option<IdIn>,
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
    let mut valid = ResolvedEvents::with_capacity(body.events.len(), catalog);
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
            format!(
                "event {index}: {e} (fields: user, item, ts, optional action, weight, id, request_id)"
            ),
        )
    })?;
    let time = (e.ts.unix())
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
        request_id: e.request_id.map(IdIn::into_string),
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

impl pinnersage_core::error::Kind for IngestError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::BadBody(_) | Self::TooMany(_) => BadInput,
            Self::Store(_) | Self::Overloaded(_) | Self::Unavailable(_) => Unavailable,
        }
    }
}
