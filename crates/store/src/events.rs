//! The durable event log: every engagement, in an embedded, journaled LSM store (fjall).
//!
//! Two keyspaces, written together in one atomic batch:
//!
//! - `by_user`: `[u32 BE user length][user][time][dedupe hash]` -> `[u8 action length][action]
//!   [f32 LE weight][item]`. A user's events are one contiguous, time-ordered key range, so
//!   "this user's events in the last N days" is a single range scan, and a full scan visits
//!   users one after another (the batch job streams it).
//! - `by_time`: `[time][u32 BE user length][user][dedupe hash]` -> empty: "all events since T".
//! - `user_ids`: `[u32 BE user length][user][event id]` -> empty, for events that carry an id:
//!   the user and the id identify the event, so a retry with another time (a client that
//!   re-stamps its retries) is stored once, and two users' producers may number their events
//!   alike (1, 2, 3...) without one's events hiding the other's.
//!
//! - `request_ids`: `by_user` key -> the request id of the recommendation answer the event came
//!   from, for the events that name one (an online experiment's attribution); absent otherwise.
//!
//! Stores written before ids were kept per user have a `by_id` keyspace keyed by the id alone.
//! It is read, never written: an id found there is a duplicate only if the same user has an
//! event with that id's dedupe hash (one scan of that user's events, needed only for ids used
//! before the upgrade). Older stores still, from before any id index (no `ids_complete` marker),
//! find an id event by its `by_user` key (same user, time and id).
//!
//! `time` is the unix second with its sign bit flipped, big-endian, so keys sort by time. The
//! dedupe hash is the [`stable_hash`] of the event id when the event has one, else of
//! (item, action): the same event imported twice lands on the same key and is stored once.

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use pinnersage_core::hash::stable_hash;

mod writer;
pub use writer::{Staged, Writer};

/// One engagement as users give it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// External user id.
    pub user: String,
    /// External item id.
    pub item: String,
    /// Unix time in seconds.
    pub time: i64,
    /// Action type (for example `click`, `repin`); empty when not given.
    pub action: String,
    /// Weight of the action in importance; 1 when not given.
    pub weight: f32,
    /// Client-side event id, if any: makes retries idempotent.
    pub id: Option<String>,
    /// The `request_id` of the recommendation answer the engagement came from, if the client
    /// knows it (attributes it to that answer in an experiment's report).
    pub request_id: Option<String>,
}

/// One stored event of a known user.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// External item id.
    pub item: String,
    /// Unix time in seconds.
    pub time: i64,
    /// Action type (may be empty).
    pub action: String,
    /// Weight.
    pub weight: f32,
}

/// Errors of the event store, naming the store's directory.
#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    /// The storage engine failed.
    #[error("event store {}: {source}", path.display())]
    Engine {
        /// The store's directory.
        path: PathBuf,
        /// The engine's error.
        source: fjall::Error,
    },
    /// A stored key or value does not decode (damaged store).
    #[error("event store {}: undecodable record: {problem}", path.display())]
    Corrupt {
        /// The store's directory.
        path: PathBuf,
        /// What could not be decoded.
        problem: String,
    },
    /// An event cannot be stored as given.
    #[error("{0}")]
    Invalid(String),
    /// A staged insert was not written: its write failed (the first insert of a failed write
    /// gets the engine's error, the others this), or an earlier write it was checked against
    /// did. Nothing of it was stored; retrying it is safe.
    #[error("event store {}: not written: {reason}", path.display())]
    NotWritten {
        /// The store's directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another process (a running server, another import) has the store open.
    #[error(
        "event store {} is in use by another process: a running `pinnersage serve` owns it (post events to its /v1/events; `pinnersage batch` runs through it)",
        path.display()
    )]
    InUse {
        /// The store's directory.
        path: PathBuf,
    },
}

/// How many events an insert added and how many were already stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertStats {
    /// Events that were new.
    pub inserted: u64,
    /// Events that were already in the store (same key), left as they were.
    pub duplicates: u64,
}

/// The storage engine's backlog, summed over the store's keyspaces: what a slow write waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Full memtables waiting to be flushed to disk (writes stall at 4 in one keyspace).
    pub sealed_memtables: u64,
    /// Flushes queued or running.
    pub outstanding_flushes: u64,
    /// Tables in level 0 (writes slow down as they pile up, before compaction merges them).
    pub l0_tables: u64,
    /// Tables on disk.
    pub tables: u64,
    /// Compactions running.
    pub active_compactions: u64,
    /// Compactions completed since the store was opened.
    pub compactions_completed: u64,
    /// Journal files (more than one while flushes lag).
    pub journals: u64,
    /// Bytes held in memtables.
    pub write_buffer_bytes: u64,
}

/// The event log of a data directory (`DATA_DIR/events`).
pub struct EventStore {
    path: PathBuf,
    db: Database,
    by_user: Keyspace,
    by_time: Keyspace,
    user_ids: Keyspace,
    request_ids: Keyspace,
    /// The id index of a store written before ids were kept per user (read only), when it has
    /// entries.
    legacy_ids: Option<Keyspace>,
    /// Every stored event with an id is in `user_ids` or `legacy_ids` (the store was created
    /// with an id index), so an id's duplicate check needs no second lookup in `by_user`.
    ids_complete: bool,
    /// Held by the one [`Writer`]: one writer at a time.
    writer: std::sync::Mutex<()>,
}

/// The `meta` keyspace's marker of a store whose every id-carrying event is in `by_id`.
const IDS_COMPLETE: &[u8] = b"ids_complete";

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("path", &self.path)
            .finish()
    }
}

/// The nice value of the storage engine's background threads once
/// [`EventStore::lower_background_priority`] is called (0 is the default, 19 the lowest).
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the CPU priority of the calling thread to nice `nice` (a server's background writer:
/// its bursts then yield to the threads that answer requests). Linux only; whether it worked.
pub fn lower_calling_thread_priority(nice: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on this thread's own id; no memory is shared.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        false
    }
}

/// Thread ids of this process's storage-engine workers (fjall names them `fjall:worker`).
#[cfg(target_os = "linux")]
fn background_threads() -> Vec<libc::id_t> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "fjall:worker")
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn background_threads() -> Vec<libc::id_t> {
    Vec::new()
}

/// Largest user or item id, in bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// A time as a key prefix: the sign bit flipped, big-endian, so keys sort by time.
pub(crate) fn time_key(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn time_from_key(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// The stable hash of `id\0{id}`, or of `ev\0{item}\0{action}` without an id; `buf` is scratch.
/// Together with the user and the time it is an event's key: two events with the same key are
/// one event (the first stored wins).
pub fn dedupe_hash(id: Option<&str>, item: &str, action: &str, buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    match id {
        Some(id) => {
            buf.extend_from_slice(b"id\0");
            buf.extend_from_slice(id.as_bytes());
        }
        None => {
            buf.extend_from_slice(b"ev\0");
            buf.extend_from_slice(item.as_bytes());
            buf.push(0);
            buf.extend_from_slice(action.as_bytes());
        }
    }
    stable_hash(buf)
}

/// The answer an event names, when it names one.
fn request_id(e: &Event) -> Option<&str> {
    e.request_id.as_deref().filter(|r| !r.is_empty())
}

/// Largest request id an event may name, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The event's id, when it has a non-empty one: then the id alone is its identity.
fn event_id(e: &Event) -> Option<&str> {
    e.id.as_deref().filter(|id| !id.is_empty())
}

/// `e`'s key in `by_user`: `[user prefix][time][dedupe hash]`; `scratch` is the hash's buffer.
fn by_user_key(e: &Event, scratch: &mut Vec<u8>) -> Vec<u8> {
    let mut key = user_prefix(&e.user);
    key.extend(time_key(e.time));
    key.extend(dedupe_hash(e.id.as_deref(), &e.item, &e.action, scratch).to_be_bytes());
    key
}

/// `e`'s key in `user_ids` when it has an id: `[user prefix][id]`.
fn user_id_key(user: &str, id: &str) -> Vec<u8> {
    let mut key = user_prefix(user);
    key.extend(id.as_bytes());
    key
}

fn user_prefix(user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + user.len() + 16);
    k.extend((user.len() as u32).to_be_bytes());
    k.extend(user.as_bytes());
    k
}

/// Checks `event` against the store's limits without storing it (the same checks
/// [`EventStore::insert`] makes), so callers can reject one bad event instead of a whole batch.
pub fn check_event(event: &Event) -> Result<(), EventStoreError> {
    if event
        .request_id
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REQUEST_ID_BYTES)
    {
        return Err(EventStoreError::Invalid(format!(
            "request ids are limited to {MAX_REQUEST_ID_BYTES} bytes"
        )));
    }
    check_event_parts(
        &event.user,
        &event.item,
        event.id.as_deref(),
        &event.action,
        event.weight,
    )
}

/// [`check_event`] on an event's parts (no allocation).
pub fn check_event_parts(
    user: &str,
    item: &str,
    id: Option<&str>,
    action: &str,
    weight: f32,
) -> Result<(), EventStoreError> {
    if user.is_empty() || item.is_empty() {
        return Err(EventStoreError::Invalid(
            "user and item ids must not be empty".into(),
        ));
    }
    let id_len = id.map_or(0, str::len);
    if user.len() > MAX_ID_BYTES
        || item.len() > MAX_ID_BYTES
        || id_len > MAX_ID_BYTES
        || action.len() > 255
    {
        return Err(EventStoreError::Invalid(format!(
            "ids are limited to {MAX_ID_BYTES} bytes and actions to 255"
        )));
    }
    if !weight.is_finite() || weight < 0.0 {
        return Err(EventStoreError::Invalid(format!(
            "weight must be finite and >= 0, got {weight}"
        )));
    }
    Ok(())
}

impl EventStore {
    /// Opens (creating if needed) the event store of `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, EventStoreError> {
        let path = data_dir.join("events");
        let engine = |source| EventStoreError::Engine {
            path: path.clone(),
            source,
        };
        let db = Database::builder(&path).open().map_err(|e| match e {
            fjall::Error::Locked => EventStoreError::InUse { path: path.clone() },
            e => engine(e),
        })?;
        // Every insert checks its key for a duplicate, and almost all are new: the bloom filters
        // of every level stay in memory (about 1.25 bytes per event) so that a new key costs no
        // disk read. (fjall pins only level 0's by default; reading and checksumming a deeper
        // level's whole filter block per insert capped ingestion at ~7k events/s.)
        let by_user = db
            .keyspace("by_user", || {
                KeyspaceCreateOptions::default()
                    .filter_block_pinning_policy(fjall::config::PinningPolicy::all(true))
            })
            .map_err(engine)?;
        let by_time = db
            .keyspace("by_time", KeyspaceCreateOptions::default)
            .map_err(engine)?;
        let user_ids = db
            .keyspace("user_ids", || {
                KeyspaceCreateOptions::default()
                    .filter_block_pinning_policy(fjall::config::PinningPolicy::all(true))
            })
            .map_err(engine)?;
        let request_ids = db
            .keyspace("request_ids", KeyspaceCreateOptions::default)
            .map_err(engine)?;
        let legacy_ids = if db.keyspace_exists("by_id") {
            let by_id = db
                .keyspace("by_id", KeyspaceCreateOptions::default)
                .map_err(engine)?;
            (!by_id.is_empty().map_err(engine)?).then_some(by_id)
        } else {
            None
        };
        // Stores written before the id index existed hold id-carrying events in `by_user` only;
        // a store that was empty when the index first met it is marked complete, durably.
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(engine)?;
        let ids_complete = if meta.contains_key(IDS_COMPLETE).map_err(engine)? {
            true
        } else if by_user.is_empty().map_err(engine)? {
            meta.insert(IDS_COMPLETE, []).map_err(engine)?;
            db.persist(PersistMode::SyncAll).map_err(engine)?;
            true
        } else {
            false
        };
        Ok(Self {
            path,
            db,
            by_user,
            by_time,
            user_ids,
            request_ids,
            legacy_ids,
            ids_complete,
            writer: std::sync::Mutex::new(()),
        })
    }

    fn engine(&self, source: fjall::Error) -> EventStoreError {
        EventStoreError::Engine {
            path: self.path.clone(),
            source,
        }
    }

    fn not_written(&self, reason: &str) -> EventStoreError {
        EventStoreError::NotWritten {
            path: self.path.clone(),
            reason: reason.to_owned(),
        }
    }

    fn corrupt(&self, problem: &str) -> EventStoreError {
        EventStoreError::Corrupt {
            path: self.path.clone(),
            problem: problem.to_owned(),
        }
    }

    /// Stores `events` atomically and durably (the journal is fsynced before this returns).
    /// Events already stored (the same id, or without an id the same user, time, item and
    /// action) are counted as duplicates and left unchanged.
    pub fn insert(&self, events: &[Event]) -> Result<InsertStats, EventStoreError> {
        let fresh = self.insert_each(events)?;
        let inserted = fresh.iter().filter(|&&f| f).count() as u64;
        Ok(InsertStats {
            inserted,
            duplicates: events.len() as u64 - inserted,
        })
    }

    /// Like [`EventStore::insert`], reporting for each event whether it was new (`true`) or
    /// already stored (`false`). All or nothing: on an error no event was stored.
    ///
    /// ```
    /// use pinnersage_store::events::{Event, EventStore};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = EventStore::open(dir.path()).unwrap();
    /// let click = Event { user: "u".into(), item: "i".into(), time: 5, action: "click".into(),
    ///                     weight: 1.0, id: Some("e1".into()),
    ///                     request_id: None };
    /// assert_eq!(store.insert_each(&[click.clone()]).unwrap(), vec![true]);
    /// assert_eq!(store.insert_each(&[click.clone(), click]).unwrap(), vec![false, false]);
    /// ```
    pub fn insert_each(&self, events: &[Event]) -> Result<Vec<bool>, EventStoreError> {
        let writer = self.writer();
        let staged = writer.stage(events)?;
        writer
            .write(vec![staged])
            .pop()
            .unwrap_or_else(|| Err(self.not_written("the write returned no result")))
    }

    /// Lowers the CPU priority of the storage engine's background threads (memtable flushes and
    /// compactions) to nice [`BACKGROUND_NICE`], like RocksDB's `LowerThreadPoolCPUPriority`:
    /// on a busy machine they then yield to the threads that write, re-cluster and answer,
    /// instead of holding them off the CPU for tens of milliseconds; they still get every idle
    /// cycle. A server calls this once; a bulk import, where they are the bottleneck's helpers,
    /// does not. Linux only (elsewhere nothing changes); returns the threads lowered.
    pub fn lower_background_priority(&self) -> usize {
        background_threads()
            .into_iter()
            // SAFETY: plain syscall on a thread id of this process; no memory is shared.
            .filter(
                |&tid| unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE) } == 0,
            )
            .count()
    }

    /// The storage engine's current backlog (cheap: counters only, no I/O). Read through
    /// fjall's hidden diagnostic accessors, which the locked fjall version provides.
    pub fn engine_stats(&self) -> EngineStats {
        let mut stats = EngineStats {
            outstanding_flushes: self.db.outstanding_flushes() as u64,
            active_compactions: self.db.active_compactions() as u64,
            compactions_completed: self.db.compactions_completed() as u64,
            journals: self.db.journal_count() as u64,
            write_buffer_bytes: self.db.write_buffer_size(),
            ..EngineStats::default()
        };
        for keyspace in [
            &self.by_user,
            &self.by_time,
            &self.user_ids,
            &self.request_ids,
        ] {
            stats.sealed_memtables += keyspace.sealed_memtable_count() as u64;
            stats.l0_tables += keyspace.l0_table_count() as u64;
            stats.tables += keyspace.table_count() as u64;
        }
        stats
    }

    /// Whether an id event of a store written before ids were kept per user belongs to the
    /// user of `key` (a `by_user` key): the id is in the old index, and the user has an event
    /// with the same dedupe hash (at any time).
    fn in_legacy_ids(&self, id: &str, key: &[u8]) -> Result<bool, EventStoreError> {
        let Some(by_id) = &self.legacy_ids else {
            return Ok(false);
        };
        if !by_id
            .contains_key(id.as_bytes())
            .map_err(|s| self.engine(s))?
        {
            return Ok(false);
        }
        let (prefix, time_and_hash) = key.split_at(key.len() - 16);
        let hash = &time_and_hash[8..];
        for guard in self.by_user.prefix(prefix) {
            let k = guard.key().map_err(|s| self.engine(s))?;
            if k.len() == key.len() && k.ends_with(hash) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The events of `user` with `time > after`, in time order: one range scan (the online path
    /// rebuilds a user it evicted from memory).
    pub fn user_events_after(
        &self,
        user: &str,
        after: i64,
    ) -> Result<Vec<StoredEvent>, EventStoreError> {
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let prefix = user_prefix(user);
        let mut from = prefix.clone();
        from.extend(time_key(start));
        let mut to = prefix;
        to.extend([0xff; 16]);
        let mut out = Vec::new();
        for guard in self.by_user.range(from..=to) {
            let (k, v) = guard.into_inner().map_err(|s| self.engine(s))?;
            out.push(self.decode(&k, &v)?.1);
        }
        Ok(out)
    }

    /// Calls `visit(user, event)` for every event with `time > after`, in time order (the
    /// online path recovers the events a batch generation has not covered yet).
    pub fn for_each_after(
        &self,
        after: i64,
        visit: impl FnMut(&str, StoredEvent),
    ) -> Result<(), EventStoreError> {
        match after.checked_add(1) {
            Some(start) => self.for_each_between(start, i64::MAX, visit),
            None => Ok(()),
        }
    }

    /// Calls `visit(user, event)` for every event with `from <= time <= to`, in time order.
    pub fn for_each_between(
        &self,
        from: i64,
        to: i64,
        mut visit: impl FnMut(&str, StoredEvent),
    ) -> Result<(), EventStoreError> {
        self.scan_between(from, to, false, |user, event, _| visit(user, event))
    }

    /// [`EventStore::for_each_between`], with the request id each event names, if any (an
    /// experiment's report; one more lookup per event).
    pub fn for_each_with_request_between(
        &self,
        from: i64,
        to: i64,
        visit: impl FnMut(&str, StoredEvent, Option<String>),
    ) -> Result<(), EventStoreError> {
        self.scan_between(from, to, true, visit)
    }

    fn scan_between(
        &self,
        from: i64,
        to: i64,
        with_requests: bool,
        mut visit: impl FnMut(&str, StoredEvent, Option<String>),
    ) -> Result<(), EventStoreError> {
        if from > to {
            return Ok(());
        }
        let range = match to.checked_add(1) {
            Some(end) => self
                .by_time
                .range(time_key(from).to_vec()..time_key(end).to_vec()),
            None => self.by_time.range(time_key(from).to_vec()..),
        };
        for guard in range {
            let tkey = guard.key().map_err(|s| self.engine(s))?;
            // by_time key: [time][user prefix][hash] -> by_user key: [user prefix][time][hash]
            let rest = tkey
                .get(8..)
                .ok_or_else(|| self.corrupt("short time key"))?;
            if rest.len() < 12 {
                return Err(self.corrupt("short time key"));
            }
            let (prefix, hash) = rest.split_at(rest.len() - 8);
            let mut key = prefix.to_vec();
            key.extend(&tkey[..8]);
            key.extend(hash);
            let Some(value) = self.by_user.get(&key).map_err(|s| self.engine(s))? else {
                return Err(self.corrupt("time index entry without its event"));
            };
            let (user, event) = self.decode(&key, &value)?;
            let request = match with_requests {
                true => (self.request_ids.get(&key).map_err(|s| self.engine(s))?)
                    .map(|r| String::from_utf8_lossy(&r).into_owned()),
                false => None,
            };
            visit(&user, event, request);
        }
        Ok(())
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Result<(String, StoredEvent), EventStoreError> {
        let parts = self.parts(key, value)?;
        let text =
            |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| self.corrupt("non-UTF-8 id"));
        Ok((
            text(parts.user)?,
            StoredEvent {
                item: text(parts.item)?,
                time: parts.time,
                action: text(parts.action)?,
                weight: parts.weight,
            },
        ))
    }

    /// The fields of a `by_user` entry, borrowed from it.
    fn parts<'k>(&self, key: &'k [u8], value: &'k [u8]) -> Result<EventParts<'k>, EventStoreError> {
        let bad = || self.corrupt("short key or value");
        let ulen = u32::from_be_bytes(
            key.get(..4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        let user = key.get(4..4 + ulen).ok_or_else(bad)?;
        let t: [u8; 8] = key
            .get(4 + ulen..12 + ulen)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        let alen = *value.first().ok_or_else(bad)? as usize;
        let action = value.get(1..1 + alen).ok_or_else(bad)?;
        let w: [u8; 4] = value
            .get(1 + alen..5 + alen)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        Ok(EventParts {
            user,
            time: time_from_key(t),
            action,
            weight: f32::from_le_bytes(w),
            item: value.get(5 + alen..).ok_or_else(bad)?,
        })
    }

    /// The events of `user` with `from <= time <= to`, oldest first.
    pub fn user_events(
        &self,
        user: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<StoredEvent>, EventStoreError> {
        let prefix = user_prefix(user);
        let mut lo = prefix.clone();
        lo.extend(time_key(from));
        let mut hi = prefix;
        hi.extend(time_key(to));
        hi.extend([0xff; 8]);
        self.by_user
            .range(lo..=hi)
            .map(|g| {
                let (k, v) = g.into_inner().map_err(|s| self.engine(s))?;
                self.decode(&k, &v).map(|(_, e)| e)
            })
            .collect()
    }

    /// Every user's events with `from <= time <= to`, one user at a time in key order, streamed
    /// from disk. Users without events in the window are skipped.
    pub fn users(&self, from: i64, to: i64) -> UserEvents<'_> {
        UserEvents {
            store: self,
            iter: Box::new(self.by_user.iter()),
            pending: None,
            from,
            to,
        }
    }

    /// Every user's events with `from <= time <= to` in key order, like [`users`](Self::users), but
    /// filled into reusable [`EventChunk`]s: no allocation per event or per user once the chunk's
    /// buffers have grown. The batch streams the store this way.
    pub fn scan_users(&self, from: i64, to: i64) -> UserScan<'_> {
        UserScan {
            store: self,
            iter: Box::new(self.by_user.iter()),
            pending: None,
            current: Vec::new(),
            from,
            to,
        }
    }

    /// Approximate number of stored events (cheap).
    pub fn approximate_len(&self) -> usize {
        self.by_user.approximate_len()
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The fields of one stored event, borrowed from its key and value.
struct EventParts<'k> {
    user: &'k [u8],
    time: i64,
    action: &'k [u8],
    weight: f32,
    item: &'k [u8],
}

/// Several users' events in flat buffers, filled by [`UserScan::fill`]: one string holds every
/// item id, so neither an event nor a user costs an allocation, and refilling a chunk reuses its
/// buffers.
#[derive(Debug, Default)]
pub struct EventChunk {
    user_ids: String,
    /// Per user: the end of its id in `user_ids` and of its events.
    users: Vec<(usize, usize)>,
    item_ids: String,
    /// Per event: the end of its item id in `item_ids`.
    item_ends: Vec<usize>,
    times: Vec<i64>,
    weights: Vec<f32>,
}

impl EventChunk {
    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the chunk holds no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The `u`-th user and its events (oldest first). Panics if `u >= len()`.
    pub fn user(&self, u: usize) -> ChunkUser<'_> {
        let (id_start, first) = match u {
            0 => (0, 0),
            _ => self.users[u - 1],
        };
        let (id_end, end) = self.users[u];
        ChunkUser {
            id: &self.user_ids[id_start..id_end],
            item_ids: &self.item_ids,
            item_start: first.checked_sub(1).map_or(0, |e| self.item_ends[e]),
            item_ends: &self.item_ends[first..end],
            times: &self.times[first..end],
            weights: &self.weights[first..end],
        }
    }

    fn clear(&mut self) {
        self.user_ids.clear();
        self.users.clear();
        self.item_ids.clear();
        self.item_ends.clear();
        self.times.clear();
        self.weights.clear();
    }

    /// Starts a user (its events follow with [`push_event`](Self::push_event)).
    fn push_user(&mut self, id: &str) {
        self.user_ids.push_str(id);
        self.users.push((self.user_ids.len(), self.times.len()));
    }

    /// Drops the last user if it got no event.
    fn drop_empty_user(&mut self) {
        if let Some(&(_, end)) = self.users.last() {
            let first = self
                .users
                .len()
                .checked_sub(2)
                .map_or(0, |u| self.users[u].1);
            if end == first {
                self.users.pop();
                let id_end = self.users.last().map_or(0, |u| u.0);
                self.user_ids.truncate(id_end);
            }
        }
    }

    fn push_event(&mut self, item: &str, time: i64, weight: f32) {
        self.item_ids.push_str(item);
        self.item_ends.push(self.item_ids.len());
        self.times.push(time);
        self.weights.push(weight);
        if let Some(last) = self.users.last_mut() {
            last.1 = self.times.len();
        }
    }
}

/// One user's events in an [`EventChunk`], oldest first.
#[derive(Debug, Clone, Copy)]
pub struct ChunkUser<'a> {
    /// The user's external id.
    pub id: &'a str,
    item_ids: &'a str,
    item_start: usize,
    item_ends: &'a [usize],
    /// Unix times in seconds, one per event.
    pub times: &'a [i64],
    /// Weights, one per event.
    pub weights: &'a [f32],
}

impl<'a> ChunkUser<'a> {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether the user has no event (never, for a user of a filled chunk).
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The item id of each event, in order.
    pub fn items(&self) -> impl Iterator<Item = &'a str> + Clone + 'a {
        let (ids, ends) = (self.item_ids, self.item_ends);
        let starts = std::iter::once(self.item_start).chain(ends.iter().copied());
        starts.zip(ends).map(move |(start, &end)| &ids[start..end])
    }
}

/// A streaming scan of every user's events in a window, from [`EventStore::scan_users`].
pub struct UserScan<'a> {
    store: &'a EventStore,
    iter: Box<dyn Iterator<Item = fjall::Guard> + 'a>,
    /// The entry that starts the next chunk's first user.
    pending: Option<fjall::KvPair>,
    /// The id of the user being read (kept or skipped).
    current: Vec<u8>,
    from: i64,
    to: i64,
}

impl UserScan<'_> {
    /// Clears `chunk` and fills it with the next users that `keep` accepts and that have events
    /// in the window, at most `max_users` of them. Returns false when the scan is over and
    /// nothing was added.
    pub fn fill(
        &mut self,
        chunk: &mut EventChunk,
        max_users: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Result<bool, EventStoreError> {
        chunk.clear();
        let (mut started, mut keeping) = (false, false);
        loop {
            let (key, value) = match self.pending.take() {
                Some(kv) => kv,
                None => match self.iter.next() {
                    None => break,
                    Some(guard) => guard.into_inner().map_err(|e| self.store.engine(e))?,
                },
            };
            let parts = self.store.parts(&key, &value)?;
            if !started || parts.user != self.current.as_slice() {
                started = true;
                chunk.drop_empty_user();
                if chunk.len() >= max_users.max(1) {
                    self.pending = Some((key, value));
                    break;
                }
                let user = std::str::from_utf8(parts.user)
                    .map_err(|_| self.store.corrupt("non-UTF-8 id"))?;
                self.current.clear();
                self.current.extend_from_slice(parts.user);
                keeping = keep(user);
                if keeping {
                    chunk.push_user(user);
                }
            }
            if keeping && (self.from..=self.to).contains(&parts.time) {
                let item = std::str::from_utf8(parts.item)
                    .map_err(|_| self.store.corrupt("non-UTF-8 id"))?;
                chunk.push_event(item, parts.time, parts.weight);
            }
        }
        chunk.drop_empty_user();
        Ok(!chunk.is_empty())
    }
}

/// Iterator over `(user, events in the window)`, from [`EventStore::users`].
pub struct UserEvents<'a> {
    store: &'a EventStore,
    iter: Box<dyn Iterator<Item = fjall::Guard> + 'a>,
    pending: Option<(String, StoredEvent)>,
    from: i64,
    to: i64,
}

impl Iterator for UserEvents<'_> {
    type Item = Result<(String, Vec<StoredEvent>), EventStoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut current: Option<(String, Vec<StoredEvent>)> = None;
        loop {
            let next = match self.pending.take() {
                Some(p) => Some(p),
                None => match self.iter.next() {
                    None => None,
                    Some(guard) => match guard
                        .into_inner()
                        .map_err(|s| self.store.engine(s))
                        .and_then(|(k, v)| self.store.decode(&k, &v))
                    {
                        Ok(ev) => Some(ev),
                        Err(e) => return Some(Err(e)),
                    },
                },
            };
            let Some((user, event)) = next else {
                return current.filter(|(_, events)| !events.is_empty()).map(Ok);
            };
            match &mut current {
                Some((u, events)) if *u == user => {
                    if (self.from..=self.to).contains(&event.time) {
                        events.push(event);
                    }
                }
                Some((_, events)) if !events.is_empty() => {
                    self.pending = Some((user, event));
                    return current.map(Ok);
                }
                _ => {
                    let mut events = Vec::new();
                    if (self.from..=self.to).contains(&event.time) {
                        events.push(event);
                    }
                    current = Some((user, events));
                }
            }
        }
    }
}

impl pinnersage_core::error::Kind for EventStoreError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::Engine { .. } | Self::Corrupt { .. } | Self::NotWritten { .. } => Internal,
            Self::Invalid(_) => BadInput,
            Self::InUse { .. } => Conflict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(id: &str, time: i64) -> Event {
        Event {
            user: "u".into(),
            item: "i".into(),
            time,
            action: "click".into(),
            weight: 1.0,
            id: Some(id.into()),
            request_id: None,
        }
    }

    #[test]
    fn an_event_keeps_the_request_id_it_names_and_a_retry_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path()).unwrap();
        let named = |id: &str, request: Option<&str>| Event {
            request_id: request.map(Into::into),
            ..click(id, 5)
        };
        store
            .insert(&[named("e1", Some("r1")), named("e2", None)])
            .unwrap();
        // A retry naming another answer is the same event: the first stays.
        assert_eq!(
            store.insert(&[named("e1", Some("r2"))]).unwrap().duplicates,
            1
        );
        let mut seen = Vec::new();
        store
            .for_each_with_request_between(0, 10, |_, _, request| seen.push(request))
            .unwrap();
        seen.sort();
        assert_eq!(seen, vec![None, Some("r1".to_owned())]);
        let long = named("e3", Some(&"r".repeat(MAX_REQUEST_ID_BYTES + 1)));
        assert!(store.insert(&[long]).is_err());
    }

    #[test]
    fn a_store_from_before_the_id_index_still_finds_its_id_events() {
        let dir = tempfile::tempdir().unwrap();
        // What a store written before `by_id` existed holds: the event in `by_user` only.
        {
            let db = Database::builder(dir.path().join("events")).open().unwrap();
            let by_user = db
                .keyspace("by_user", KeyspaceCreateOptions::default)
                .unwrap();
            let e = click("e1", 5);
            by_user
                .insert(by_user_key(&e, &mut Vec::new()), b"x")
                .unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        for _ in 0..2 {
            let store = EventStore::open(dir.path()).unwrap();
            assert!(
                !store.ids_complete,
                "a non-empty store without the marker is not complete"
            );
            assert_eq!(store.insert_each(&[click("e1", 5)]).unwrap(), vec![false]);
        }
    }

    fn click_by(user: &str, id: &str, time: i64) -> Event {
        Event {
            user: user.into(),
            ..click(id, time)
        }
    }

    #[test]
    fn event_ids_are_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = EventStore::open(dir.path()).unwrap();
        // Two producers numbering their events alike: both stored.
        assert_eq!(
            store
                .insert_each(&[click_by("a", "1", 5), click_by("b", "1", 5)])
                .unwrap(),
            vec![true, true]
        );
        assert_eq!(store.insert_each(&[click_by("c", "1", 7)]).unwrap(), [true]);
        // A retry of the same (user, id), re-stamped or not, is stored once.
        assert_eq!(
            store
                .insert_each(&[click_by("a", "1", 9), click_by("b", "1", 5)])
                .unwrap(),
            vec![false, false]
        );
        for user in ["a", "b", "c"] {
            assert_eq!(store.user_events(user, 0, 100).unwrap().len(), 1, "{user}");
        }
    }

    #[test]
    fn a_store_with_ids_keyed_alone_still_finds_its_id_events() {
        let dir = tempfile::tempdir().unwrap();
        // What a store written while ids were one namespace holds: `by_id` keyed by the id, the
        // event in `by_user`, and the marker.
        {
            let db = Database::builder(dir.path().join("events")).open().unwrap();
            let keyspace = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default).unwrap();
            let e = click("e1", 5);
            keyspace("by_user")
                .insert(by_user_key(&e, &mut Vec::new()), b"\x05click\0\0\x80\x3fi")
                .unwrap();
            keyspace("by_id").insert("e1", []).unwrap();
            keyspace("meta").insert(IDS_COMPLETE, []).unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let store = EventStore::open(dir.path()).unwrap();
        assert!(store.ids_complete && store.legacy_ids.is_some());
        // The same user's retry, even re-stamped, is a duplicate; another user's e1 is new.
        assert_eq!(
            store
                .insert_each(&[click("e1", 9), click_by("v", "e1", 9)])
                .unwrap(),
            vec![false, true]
        );
        assert_eq!(
            store.insert_each(&[click_by("v", "e1", 3)]).unwrap(),
            [false]
        );
        assert_eq!(store.user_events("v", 0, 100).unwrap().len(), 1);
    }

    #[test]
    fn a_new_store_is_marked_complete_and_stays_so() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EventStore::open(dir.path()).unwrap();
            assert!(store.ids_complete);
            assert_eq!(store.insert_each(&[click("e1", 5)]).unwrap(), vec![true]);
        }
        let store = EventStore::open(dir.path()).unwrap();
        assert!(store.ids_complete, "the marker is durable");
        // The id alone identifies the event, at any time.
        assert_eq!(
            store
                .insert_each(&[click("e1", 5), click("e1", 9)])
                .unwrap(),
            vec![false, false]
        );
    }
}
