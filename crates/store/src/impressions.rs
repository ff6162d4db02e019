//! Impressions: what each recommendation answer of an online experiment showed, kept for a
//! bounded number of days in an embedded, journaled store (fjall, `DATA_DIR/impressions`).
//!
//! One keyspace per UTC day (`day-NNNNNN`, the unix day number), so that expiry drops whole days
//! at once (no tombstones, no compaction debt) and a report reads only the days it covers.
//!
//! - key: `[time][request id]`, the time as in the event store (unix seconds, sign bit flipped,
//!   big-endian): a day reads in time order, and an impression recorded twice (a retried post:
//!   same request id and time) is stored once.
//! - value: `[version 2][experiment][arm][user][latency micros: u32 LE, u32::MAX unknown]
//!   [u16 LE interest count][interest]*[u16 LE item count][item, u16 LE interest index]*`, each
//!   string a u16 LE length and its UTF-8 bytes, index `u16::MAX` for none: an answer's items
//!   come from a few interests, each written once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use fjall::config::FilterPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

pub use crate::events::MAX_REQUEST_ID_BYTES;
use crate::events::{MAX_ID_BYTES, time_from_key, time_key};

/// Seconds in a day: impressions are kept by UTC day.
pub const DAY_SECONDS: i64 = 86_400;
/// Default days an impression is kept: a four-week experiment and its analysis.
pub const DEFAULT_RETENTION_DAYS: u32 = 35;
/// Most items one impression may show.
pub const MAX_SHOWN: usize = 1_000;
/// Largest experiment or arm name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

const VERSION: u8 = 2;
const NO_LATENCY: u32 = u32::MAX;
/// An item's interest index when it has none.
const NO_INTEREST: u16 = u16::MAX;

/// What one answer showed a user, in one experiment. As JSON (a fleet's impressions stream)
/// the optional fields may be absent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Impression {
    /// The answer's id (unique per answer).
    pub request_id: String,
    /// The experiment.
    pub experiment: String,
    /// The user's arm in it.
    pub arm: String,
    /// The user shown.
    pub user: String,
    /// Unix seconds.
    pub time: i64,
    /// How long the server took to answer, when it answered (not for a team's own recommender).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_micros: Option<u32>,
    /// The items, in the order shown.
    pub items: Vec<Shown>,
}

/// One item of an impression.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shown {
    /// The item.
    pub item: String,
    /// The interest (the medoid item) that produced it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interest: Option<String>,
}

/// Errors of the impression store, naming its directory.
#[derive(Debug, thiserror::Error)]
pub enum ImpressionError {
    /// The storage engine failed.
    #[error("impression store {}: {source}", path.display())]
    Engine {
        /// The store's directory.
        path: PathBuf,
        /// The engine's error.
        source: fjall::Error,
    },
    /// A stored record does not decode (damaged store).
    #[error("impression store {}: undecodable record in day {day}: {problem}", path.display())]
    Corrupt {
        /// The store's directory.
        path: PathBuf,
        /// The unix day of the record.
        day: i64,
        /// What could not be decoded.
        problem: String,
    },
    /// An impression cannot be stored as given: nothing of its batch was stored.
    #[error("{0}")]
    Invalid(String),
    /// Another process has the store open.
    #[error(
        "impression store {} is in use by another process (a running `pinnersage serve`: ask it, GET /v1/experiments/NAME/report)",
        path.display()
    )]
    InUse {
        /// The store's directory.
        path: PathBuf,
    },
}

/// The unix day of a time (UTC days; days before 1970 are negative).
pub fn day_of(time: i64) -> i64 {
    time.div_euclid(DAY_SECONDS)
}

/// The fields of an impression besides its items, borrowed: with the items, what
/// [`EncodedImpression::new`] encodes without building an [`Impression`].
#[derive(Debug, Clone, Copy)]
pub struct ImpressionHead<'a> {
    /// The answer's id (unique per answer).
    pub request_id: &'a str,
    /// The experiment.
    pub experiment: &'a str,
    /// The user's arm in it.
    pub arm: &'a str,
    /// The user shown.
    pub user: &'a str,
    /// Unix seconds.
    pub time: i64,
    /// How long the server took to answer, when it answered.
    pub latency_micros: Option<u32>,
}

impl Impression {
    /// The impression's fields besides its items.
    pub fn head(&self) -> ImpressionHead<'_> {
        ImpressionHead {
            request_id: &self.request_id,
            experiment: &self.experiment,
            arm: &self.arm,
            user: &self.user,
            time: self.time,
            latency_micros: self.latency_micros,
        }
    }

    /// The items as `(item, interest)`, in the order shown.
    fn shown(&self) -> impl ExactSizeIterator<Item = (&str, Option<&str>)> + Clone {
        (self.items.iter()).map(|s| (s.item.as_str(), s.interest.as_deref()))
    }
}

fn invalid<T>(message: String) -> Result<T, ImpressionError> {
    Err(ImpressionError::Invalid(message))
}

/// Checks the fields besides the items and the number of items.
fn check_head(h: &ImpressionHead<'_>, items: usize) -> Result<(), ImpressionError> {
    for (field, value, limit) in [
        ("request_id", h.request_id, MAX_REQUEST_ID_BYTES),
        ("experiment", h.experiment, MAX_NAME_BYTES),
        ("arm", h.arm, MAX_NAME_BYTES),
        ("user", h.user, MAX_ID_BYTES),
    ] {
        if value.is_empty() {
            return invalid(format!("`{field}` must not be empty"));
        }
        if value.len() > limit {
            return invalid(format!("`{field}` is longer than {limit} bytes"));
        }
    }
    if h.time < 0 {
        return invalid(format!("`time` {} is before 1970", h.time));
    }
    if items > MAX_SHOWN {
        return invalid(format!(
            "{items} items shown; at most {MAX_SHOWN} per impression"
        ));
    }
    Ok(())
}

/// Checks item `k` of an impression.
fn check_shown(k: usize, item: &str, interest: Option<&str>) -> Result<(), ImpressionError> {
    if item.is_empty() || item.len() > MAX_ID_BYTES {
        return invalid(format!(
            "`items[{k}].item` must have 1 to {MAX_ID_BYTES} bytes"
        ));
    }
    if interest.is_some_and(|m| m.len() > MAX_ID_BYTES) {
        return invalid(format!(
            "`items[{k}].interest` is longer than {MAX_ID_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Checks `impression` against the store's limits without storing it.
///
/// ```
/// use pinnersage_store::impressions::{Impression, check_impression};
/// let mut shown = Impression { request_id: "r1".into(), experiment: "e".into(), arm: "a".into(),
///     user: "u".into(), time: 100, latency_micros: None, items: vec![] };
/// assert!(check_impression(&shown).is_ok());
/// shown.arm.clear();
/// assert_eq!(check_impression(&shown).unwrap_err().to_string(), "`arm` must not be empty");
/// ```
pub fn check_impression(i: &Impression) -> Result<(), ImpressionError> {
    check_head(&i.head(), i.items.len())?;
    for (k, (item, interest)) in i.shown().enumerate() {
        check_shown(k, item, interest)?;
    }
    Ok(())
}

/// An impression checked and encoded as the store keeps it: what an answer's thread builds
/// from the strings of its answer (one allocation, no [`Impression`]), so that the writer
/// only stores it ([`ImpressionStore::record_encoded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedImpression {
    time: i64,
    /// The key (`[time][request id]`), then the value.
    bytes: Vec<u8>,
    key_len: usize,
}

impl EncodedImpression {
    /// Checks and encodes an impression: `head`, and `items` as `(item, interest)` in the order
    /// shown.
    ///
    /// ```
    /// use pinnersage_store::impressions::{EncodedImpression, Impression, ImpressionHead, Shown};
    /// let head = ImpressionHead { request_id: "r1", experiment: "e", arm: "a", user: "u",
    ///     time: 100, latency_micros: Some(900) };
    /// let shown = [("x", Some("m")), ("y", None)];
    /// let encoded = EncodedImpression::new(head, shown.iter().copied()).unwrap();
    /// let decoded = encoded.decode().unwrap();
    /// assert_eq!(decoded.items[0], Shown { item: "x".into(), interest: Some("m".into()) });
    /// assert_eq!(EncodedImpression::of(&decoded).unwrap(), encoded);
    /// ```
    pub fn new<'a>(
        head: ImpressionHead<'_>,
        items: impl ExactSizeIterator<Item = (&'a str, Option<&'a str>)> + Clone,
    ) -> Result<Self, ImpressionError> {
        check_head(&head, items.len())?;
        // An answer's items come from a few interests: each is written once, items refer to it
        // by its position in the list.
        let mut interests: Vec<&str> = Vec::new();
        let mut positions: Vec<u16> = Vec::with_capacity(items.len());
        let mut size = 8 + head.request_id.len() + 16 + head.experiment.len() + head.arm.len();
        size += head.user.len();
        for (k, (item, interest)) in items.clone().enumerate() {
            check_shown(k, item, interest)?;
            size += 4 + item.len();
            positions.push(match interest {
                None => NO_INTEREST,
                Some(m) => match interests.iter().position(|&x| x == m) {
                    Some(p) => p as u16,
                    None => {
                        interests.push(m);
                        size += 2 + m.len();
                        (interests.len() - 1) as u16
                    }
                },
            });
        }
        let mut out = Vec::with_capacity(size);
        out.extend(time_key(head.time));
        out.extend(head.request_id.as_bytes());
        let key_len = out.len();
        out.push(VERSION);
        put_str(&mut out, head.experiment);
        put_str(&mut out, head.arm);
        put_str(&mut out, head.user);
        out.extend(head.latency_micros.unwrap_or(NO_LATENCY).to_le_bytes());
        out.extend((interests.len() as u16).to_le_bytes());
        for m in &interests {
            put_str(&mut out, m);
        }
        out.extend((positions.len() as u16).to_le_bytes());
        for ((item, _), p) in items.zip(positions) {
            put_str(&mut out, item);
            out.extend(p.to_le_bytes());
        }
        Ok(Self {
            time: head.time,
            bytes: out,
            key_len,
        })
    }

    /// [`EncodedImpression::new`] of an [`Impression`].
    pub fn of(i: &Impression) -> Result<Self, ImpressionError> {
        Self::new(i.head(), i.shown())
    }

    /// The impression again.
    pub fn decode(&self) -> Result<Impression, ImpressionError> {
        decode(self.key(), self.value()).map_err(ImpressionError::Invalid)
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len]
    }

    fn value(&self) -> &[u8] {
        &self.bytes[self.key_len..]
    }
}

/// The impressions of a data directory (`DATA_DIR/impressions`).
pub struct ImpressionStore {
    path: PathBuf,
    db: Database,
    /// The day keyspaces, by unix day.
    days: RwLock<BTreeMap<i64, Keyspace>>,
    retention_days: u32,
}

impl std::fmt::Debug for ImpressionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImpressionStore")
            .field("path", &self.path)
            .field("retention_days", &self.retention_days)
            .finish()
    }
}

/// A day's keyspace options: no filters (impressions are scanned by time, never read by key, so
/// a filter would be built at every flush and compaction for nothing).
fn day_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().filter_policy(FilterPolicy::disabled())
}

fn day_name(day: i64) -> String {
    format!("day-{day:06}")
}

fn day_of_name(name: &str) -> Option<i64> {
    name.strip_prefix("day-")?.parse().ok()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Lengths are checked below u16::MAX by `check_impression`.
    out.extend((s.len() as u16).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Reads a value back, with the time and request id of its key.
fn decode(key: &[u8], value: &[u8]) -> Result<Impression, String> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if self.0.len() < n {
                return Err("truncated value".into());
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn u16(&mut self) -> Result<u16, String> {
            Ok(u16::from_le_bytes(
                self.take(2)?.try_into().expect("2 bytes"),
            ))
        }
        fn string(&mut self) -> Result<String, String> {
            let n = self.u16()? as usize;
            String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string is not UTF-8".into())
        }
    }
    if key.len() < 8 {
        return Err("short key".into());
    }
    let time = time_from_key(key[..8].try_into().expect("8 bytes"));
    let request_id =
        String::from_utf8(key[8..].to_vec()).map_err(|_| "request id is not UTF-8".to_owned())?;
    let mut r = Reader(value);
    if r.take(1)? != [VERSION] {
        return Err("unknown record version".into());
    }
    let experiment = r.string()?;
    let arm = r.string()?;
    let user = r.string()?;
    let latency = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
    let interests = (0..r.u16()?)
        .map(|_| r.string())
        .collect::<Result<Vec<String>, String>>()?;
    let n = r.u16()? as usize;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let item = r.string()?;
        let interest = match r.u16()? {
            NO_INTEREST => None,
            p => Some(
                (interests.get(p as usize).cloned()).ok_or("an item's interest is out of range")?,
            ),
        };
        items.push(Shown { item, interest });
    }
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(Impression {
        request_id,
        experiment,
        arm,
        user,
        time,
        latency_micros: (latency != NO_LATENCY).then_some(latency),
        items,
    })
}

impl ImpressionStore {
    /// Opens (creating if needed) the impression store of `data_dir`, keeping impressions for
    /// `retention_days` days (at least 1) after the newest day recorded or expired to.
    pub fn open(data_dir: &Path, retention_days: u32) -> Result<Self, ImpressionError> {
        let path = data_dir.join("impressions");
        let engine = |source| ImpressionError::Engine {
            path: path.clone(),
            source,
        };
        let db = Database::builder(&path).open().map_err(|e| match e {
            fjall::Error::Locked => ImpressionError::InUse { path: path.clone() },
            e => engine(e),
        })?;
        let mut days = BTreeMap::new();
        for name in db.list_keyspace_names() {
            if let Some(day) = day_of_name(&name) {
                let keyspace = db.keyspace(&name, day_options).map_err(engine)?;
                days.insert(day, keyspace);
            }
        }
        Ok(Self {
            path,
            db,
            days: RwLock::new(days),
            retention_days: retention_days.max(1),
        })
    }

    fn engine(&self, source: fjall::Error) -> ImpressionError {
        ImpressionError::Engine {
            path: self.path.clone(),
            source,
        }
    }

    /// Days an impression is kept.
    pub fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// The unix days held, oldest first.
    pub fn days(&self) -> Vec<i64> {
        let days = self.days.read().unwrap_or_else(PoisonError::into_inner);
        days.keys().copied().collect()
    }

    /// The keyspace of `day`, created if needed.
    fn day(&self, day: i64) -> Result<Keyspace, ImpressionError> {
        if let Some(k) = (self.days.read().unwrap_or_else(PoisonError::into_inner)).get(&day) {
            return Ok(k.clone());
        }
        let mut days = self.days.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = days.get(&day) {
            return Ok(k.clone());
        }
        let keyspace = self
            .db
            .keyspace(&day_name(day), day_options)
            .map_err(|e| self.engine(e))?;
        days.insert(day, keyspace.clone());
        Ok(keyspace)
    }

    /// Stores `impressions` atomically and durably (the journal is fsynced before this
    /// returns); an impression already stored (same time and request id) is left as it was.
    /// Days past the retention of the newest day stored are dropped first, and impressions in
    /// them are not stored (they would expire at once). An invalid impression fails the whole
    /// call: nothing is stored.
    ///
    /// ```
    /// use pinnersage_store::impressions::{Impression, ImpressionStore, Shown};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = ImpressionStore::open(dir.path(), 30).unwrap();
    /// let shown = Impression { request_id: "r1".into(), experiment: "e".into(), arm: "a".into(),
    ///     user: "u".into(), time: 1_700_000_000, latency_micros: Some(850),
    ///     items: vec![Shown { item: "x".into(), interest: Some("m".into()) }] };
    /// store.record(&[shown.clone()]).unwrap();
    /// let mut read = Vec::new();
    /// store.for_each(0, i64::MAX, |i| read.push(i)).unwrap();
    /// assert_eq!(read, vec![shown]);
    /// ```
    pub fn record(&self, impressions: &[Impression]) -> Result<(), ImpressionError> {
        let encoded = (impressions.iter())
            .map(EncodedImpression::of)
            .collect::<Result<Vec<_>, _>>()?;
        self.record_encoded(&encoded)
    }

    /// [`ImpressionStore::record`] of impressions encoded already.
    pub fn record_encoded(&self, impressions: &[EncodedImpression]) -> Result<(), ImpressionError> {
        let Some(newest) = impressions.iter().map(|i| day_of(i.time)).max() else {
            return Ok(());
        };
        let oldest_kept = self.expire_before(newest)?;
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for i in impressions {
            let day = day_of(i.time);
            if day < oldest_kept {
                continue;
            }
            batch.insert(&self.day(day)?, i.key(), i.value());
        }
        batch.commit().map_err(|e| self.engine(e))
    }

    /// Drops the days older than the retention counted back from `newest_day`, keeping the
    /// newest day ever seen; returns the oldest day kept.
    fn expire_before(&self, newest_day: i64) -> Result<i64, ImpressionError> {
        let oldest_kept = newest_day - i64::from(self.retention_days) + 1;
        let expired: Vec<(i64, Keyspace)> = {
            let days = self.days.read().unwrap_or_else(PoisonError::into_inner);
            // Never counted back from a day before the newest held (a late impression does not
            // move the window back).
            match days.keys().next_back() {
                Some(&held) if held > newest_day => {
                    return Ok(held - i64::from(self.retention_days) + 1);
                }
                _ => {}
            }
            days.range(..oldest_kept)
                .map(|(d, k)| (*d, k.clone()))
                .collect()
        };
        if expired.is_empty() {
            return Ok(oldest_kept);
        }
        let mut days = self.days.write().unwrap_or_else(PoisonError::into_inner);
        for (day, keyspace) in expired {
            days.remove(&day);
            self.db
                .delete_keyspace(keyspace)
                .map_err(|e| self.engine(e))?;
        }
        Ok(oldest_kept)
    }

    /// Drops the days past the retention counted back from the day of `now` (a server calls
    /// this as days pass, so that an idle experiment's impressions expire too); returns the
    /// days dropped.
    pub fn expire(&self, now: i64) -> Result<usize, ImpressionError> {
        let before = self.days().len();
        self.expire_before(day_of(now))?;
        Ok(before - self.days().len())
    }

    /// Calls `visit` with every impression with `from <= time <= to`, in time order (request id
    /// order within a second); returns how many it visited.
    pub fn for_each(
        &self,
        from: i64,
        to: i64,
        mut visit: impl FnMut(Impression),
    ) -> Result<u64, ImpressionError> {
        let mut visited = 0;
        for impression in self.iter(from, to) {
            visit(impression?);
            visited += 1;
        }
        Ok(visited)
    }

    /// The impressions with `from <= time <= to`, in time order (request id order within a
    /// second), read lazily from a snapshot of each day as the iteration reaches it.
    pub fn iter(
        &self,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = Result<Impression, ImpressionError>> + '_ {
        let days: Vec<(i64, Keyspace)> = if from > to {
            Vec::new()
        } else {
            let days = self.days.read().unwrap_or_else(PoisonError::into_inner);
            days.range(day_of(from)..=day_of(to))
                .map(|(d, k)| (*d, k.clone()))
                .collect()
        };
        let (start, end) = (time_key(from), time_key(to.saturating_add(1)));
        let bounded = to < i64::MAX;
        days.into_iter().flat_map(move |(day, keyspace)| {
            let range = if bounded {
                keyspace.range(start.to_vec()..end.to_vec())
            } else {
                keyspace.range(start.to_vec()..)
            };
            range.map(move |guard| {
                let (k, v) = guard.into_inner().map_err(|e| self.engine(e))?;
                decode(&k, &v).map_err(|problem| ImpressionError::Corrupt {
                    path: self.path.clone(),
                    day,
                    problem,
                })
            })
        })
    }

    /// Bytes the store takes on disk (journals and tables).
    pub fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

impl pinnersage_core::error::Kind for ImpressionError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::Engine { .. } | Self::Corrupt { .. } => Internal,
            Self::Invalid(_) => BadInput,
            Self::InUse { .. } => Conflict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(request_id: &str, time: i64, items: &[&str]) -> Impression {
        Impression {
            request_id: request_id.into(),
            experiment: "e".into(),
            arm: "a".into(),
            user: format!("user-{request_id}"),
            time,
            latency_micros: Some(1_000),
            items: items
                .iter()
                .enumerate()
                .map(|(k, item)| Shown {
                    item: (*item).into(),
                    // Interests m0, none, m1, m1, m2, ...: one repeated.
                    interest: (k != 1).then(|| format!("m{}", k / 2)),
                })
                .collect(),
        }
    }

    fn all(store: &ImpressionStore) -> Vec<Impression> {
        let mut out = Vec::new();
        store.for_each(i64::MIN, i64::MAX, |i| out.push(i)).unwrap();
        out
    }

    #[test]
    fn round_trips_every_field_and_reads_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImpressionStore::open(dir.path(), 30).unwrap();
        let day = 20_000 * DAY_SECONDS;
        let mut late = shown("r2", day + 50, &["x", "y", "ü", "z"]);
        late.latency_micros = None;
        let early = shown("r1", day - 10, &[]);
        store.record(&[late.clone(), early.clone()]).unwrap();
        assert_eq!(all(&store), vec![early.clone(), late.clone()]);
        assert_eq!(store.days(), vec![19_999, 20_000]);
        // A range inside one day, and a retry stored once.
        store.record(&[late.clone()]).unwrap();
        let mut within = Vec::new();
        store.for_each(day, day + 50, |i| within.push(i)).unwrap();
        assert_eq!(within, vec![late]);
        drop(store);
        let reopened = ImpressionStore::open(dir.path(), 30).unwrap();
        assert_eq!(all(&reopened).len(), 2);
    }

    #[test]
    fn days_past_the_retention_are_dropped_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImpressionStore::open(dir.path(), 3).unwrap();
        for day in 0..5 {
            let t = 20_000 * DAY_SECONDS + day * DAY_SECONDS;
            store
                .record(&[shown(&format!("r{day}"), t, &["x"])])
                .unwrap();
        }
        assert_eq!(store.days(), vec![20_002, 20_003, 20_004]);
        // A late impression of an expired day is not stored; one inside the window is.
        let old = shown("old", 20_000 * DAY_SECONDS, &["x"]);
        let inside = shown("inside", 20_003 * DAY_SECONDS + 5, &["x"]);
        store.record(&[old, inside]).unwrap();
        assert_eq!(store.days(), vec![20_002, 20_003, 20_004]);
        assert_eq!(all(&store).len(), 4);
        // Time passing expires days with nothing new recorded.
        assert_eq!(store.expire(20_005 * DAY_SECONDS).unwrap(), 1);
        assert_eq!(store.days(), vec![20_003, 20_004]);
        drop(store);
        let reopened = ImpressionStore::open(dir.path(), 3).unwrap();
        assert_eq!(reopened.days(), vec![20_003, 20_004]);
        assert_eq!(all(&reopened).len(), 3);
    }

    #[test]
    fn an_invalid_impression_stores_nothing_of_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImpressionStore::open(dir.path(), 30).unwrap();
        let good = shown("r1", 100, &["x"]);
        let mut bad = shown("r2", 100, &["x"]);
        bad.items[0].item = "i".repeat(MAX_ID_BYTES + 1);
        let err = store.record(&[good, bad]).unwrap_err();
        assert!(err.to_string().contains("items[0].item"), "{err}");
        let mut many = shown("r3", 100, &[]);
        many.items = vec![
            Shown {
                item: "x".into(),
                interest: None
            };
            MAX_SHOWN + 1
        ];
        assert!(store.record(&[many]).is_err());
        assert!(all(&store).is_empty());
    }

    #[test]
    fn a_damaged_value_is_an_error_naming_the_day() {
        assert!(decode(&time_key(5), &[9]).is_err());
        let encoded = EncodedImpression::of(&shown("r", 5, &["x"])).unwrap();
        let mut value = encoded.value().to_vec();
        value.pop();
        assert_eq!(
            decode(&time_key(5), &value).unwrap_err(),
            "truncated value".to_owned()
        );
    }
}
