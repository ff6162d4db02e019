//! The store's one writer, which checks inserts ahead of their writes.
//!
//! An insert is checked for duplicates ([`Writer::stage`]) against the stored events and against
//! the inserts staged before it that are not written yet, then written ([`Writer::write`]) in
//! staging order, several staged inserts in one atomic, fsynced batch. So one thread can check
//! (and act on) the next inserts while another waits for the previous write's fsync: a slow fsync
//! delays acknowledgements, not the checks.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use fjall::PersistMode;

use super::{
    Event, EventStore, EventStoreError, by_user_key, check_event, event_id, request_id, user_id_key,
};

/// The store's one writer (see [`EventStore::writer`]). It holds the store's writer lock until
/// dropped, so no other insert interleaves; its two halves may run on two threads.
pub struct Writer<'s> {
    store: &'s EventStore,
    _lock: MutexGuard<'s, ()>,
    pending: Mutex<Pending>,
    /// Held by [`Writer::write`]: writes go one at a time, in the order they are called.
    writing: Mutex<()>,
}

/// What staged inserts claimed and their writes have not stored yet.
#[derive(Default)]
struct Pending {
    /// `user_ids` keys (user and id) of staged new events.
    ids: HashSet<Vec<u8>>,
    /// `by_user` keys of staged new events without an id.
    keys: HashSet<Vec<u8>>,
    /// Failed writes so far. An insert staged before a failure may have been told that an event
    /// of the failed write was already there: it is refused, and the pending set starts empty.
    failures: u64,
}

/// An insert checked by [`Writer::stage`], ready for [`Writer::write`].
#[must_use = "a staged insert stores nothing until it is written"]
pub struct Staged {
    fresh: Vec<bool>,
    /// [`Pending::failures`] when it was checked.
    failures: u64,
    user_ids: Vec<Vec<u8>>,
    by_user: Vec<(Vec<u8>, Vec<u8>)>,
    by_time: Vec<Vec<u8>>,
    /// `by_user` keys and request ids of the new events that name the answer they came from.
    request_ids: Vec<(Vec<u8>, Vec<u8>)>,
    /// `by_user` keys of the new events without an id (their identity), for the pending set.
    keyless: Vec<Vec<u8>>,
}

impl Staged {
    /// For each event, whether it is new (`false`: already stored, staged before, or repeated
    /// earlier in the same insert).
    pub fn fresh(&self) -> &[bool] {
        &self.fresh
    }
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("events", &self.fresh.len())
            .field("new", &self.by_user.len())
            .finish()
    }
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("store", &self.store.path)
            .finish()
    }
}

impl EventStore {
    /// The store's writer: waits until no other insert is under way, then keeps the others out
    /// until dropped.
    ///
    /// ```
    /// use pinnersage_store::events::{Event, EventStore};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = EventStore::open(dir.path()).unwrap();
    /// let view = |time| Event { user: "u".into(), item: "i".into(), time,
    ///                           action: "view".into(), weight: 1.0, id: None, request_id: None };
    /// let writer = store.writer();
    /// let first = writer.stage(&[view(5)]).unwrap();
    /// // Checked against the first before it is written: a duplicate.
    /// let second = writer.stage(&[view(5), view(6)]).unwrap();
    /// assert_eq!((first.fresh(), second.fresh()), (&[true][..], &[false, true][..]));
    /// assert_eq!(store.user_events("u", 0, 10).unwrap().len(), 0); // nothing written yet
    /// let written = writer.write(vec![first, second]);
    /// assert_eq!(written.iter().filter(|r| r.is_ok()).count(), 2);
    /// assert_eq!(store.user_events("u", 0, 10).unwrap().len(), 2);
    /// // The event waits in a memtable of the one journal; nothing is flushed yet.
    /// let engine = store.engine_stats();
    /// assert!(engine.write_buffer_bytes > 0);
    /// assert_eq!((engine.journals, engine.sealed_memtables, engine.tables), (1, 0, 0));
    /// ```
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            store: self,
            _lock: self.writer.lock().unwrap_or_else(|p| p.into_inner()),
            pending: Mutex::new(Pending::default()),
            writing: Mutex::new(()),
        }
    }
}

impl Writer<'_> {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `events` against the stored events and those staged before and not written yet,
    /// and builds the new entries without writing them. An invalid event fails the whole insert.
    pub fn stage(&self, events: &[Event]) -> Result<Staged, EventStoreError> {
        let store = self.store;
        let mut scratch = Vec::new();
        let mut keys = Vec::with_capacity(events.len());
        let mut id_keys = Vec::with_capacity(events.len());
        for e in events {
            check_event(e)?;
            keys.push(by_user_key(e, &mut scratch));
            id_keys.push(event_id(e).map(|id| user_id_key(&e.user, id)));
        }
        // Staged events first, then the store: a staged key leaves the pending set only once
        // it is in the store, so a key in neither was never staged.
        let (failures, staged_before) = {
            let pending = self.pending();
            let staged: Vec<bool> = id_keys
                .iter()
                .zip(&keys)
                .map(|(id_key, key)| match id_key {
                    Some(id_key) => pending.ids.contains(id_key),
                    None => pending.keys.contains(key),
                })
                .collect();
            (pending.failures, staged)
        };
        let mut fresh = Vec::with_capacity(events.len());
        let mut ids_in_batch = HashSet::new();
        let mut keys_in_batch = HashSet::with_capacity(events.len());
        for (((e, key), id_key), staged) in
            events.iter().zip(&keys).zip(&id_keys).zip(staged_before)
        {
            let is_new = match (event_id(e), id_key) {
                // The user and the id are the event's identity.
                (Some(id), Some(id_key)) => {
                    ids_in_batch.insert(id_key.as_slice())
                        && !staged
                        && !store
                            .user_ids
                            .contains_key(id_key)
                            .map_err(|s| store.engine(s))?
                        // Stored before ids were kept per user.
                        && !store.in_legacy_ids(id, key)?
                        // Stored before ids had their own index: same user, time and id.
                        && (store.ids_complete
                            || !store
                                .by_user
                                .contains_key(key)
                                .map_err(|s| store.engine(s))?)
                }
                _ => {
                    keys_in_batch.insert(key.as_slice())
                        && !staged
                        && !store
                            .by_user
                            .contains_key(key)
                            .map_err(|s| store.engine(s))?
                }
            };
            fresh.push(is_new);
        }
        // Each keyspace's new entries go in key order: a memtable insert next to the previous
        // one finds its skiplist path in cache, while `by_time` inserts in file order (a log
        // sorted by user) land all over the memtable at a cache miss per level.
        let mut by_user = Vec::with_capacity(events.len());
        let mut by_time = Vec::with_capacity(events.len());
        let mut user_ids = Vec::new();
        let mut request_ids = Vec::new();
        let mut keyless = Vec::new();
        for (((e, key), id_key), _) in events
            .iter()
            .zip(keys)
            .zip(id_keys)
            .zip(&fresh)
            .filter(|(_, is_new)| **is_new)
        {
            let mut value = Vec::with_capacity(1 + e.action.len() + 4 + e.item.len());
            value.push(e.action.len() as u8);
            value.extend(e.action.as_bytes());
            value.extend(e.weight.to_le_bytes());
            value.extend(e.item.as_bytes());
            // by_user key [user prefix][time][hash] -> by_time key [time][user prefix][hash]
            let (prefix, time_and_hash) = key.split_at(key.len() - 16);
            let mut tkey = Vec::with_capacity(key.len());
            tkey.extend(&time_and_hash[..8]);
            tkey.extend(prefix);
            tkey.extend(&time_and_hash[8..]);
            match id_key {
                Some(id_key) => user_ids.push(id_key),
                None => keyless.push(key.clone()),
            }
            if let Some(request) = request_id(e) {
                request_ids.push((key.clone(), request.as_bytes().to_vec()));
            }
            by_user.push((key, value));
            by_time.push(tkey);
        }
        user_ids.sort_unstable();
        by_user.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        by_time.sort_unstable();
        request_ids.sort_unstable();
        let staged = Staged {
            fresh,
            failures,
            user_ids,
            by_user,
            by_time,
            request_ids,
            keyless,
        };
        self.claim(&staged);
        Ok(staged)
    }

    /// Adds a staged insert's new events to the pending set, unless a write failed since it
    /// was checked (then it will not be written).
    fn claim(&self, staged: &Staged) {
        let mut pending = self.pending();
        if pending.failures == staged.failures {
            pending.ids.extend(staged.user_ids.iter().cloned());
            pending.keys.extend(staged.keyless.iter().cloned());
        }
    }

    /// Writes staged inserts, in the order they were staged, in one atomic batch made durable
    /// (the journal is fsynced) before this returns; for each, whether each event was new, or
    /// why nothing of it was stored: the write failed, or an earlier write it was checked
    /// against failed (retrying it is safe).
    pub fn write(&self, staged: Vec<Staged>) -> Vec<Result<Vec<bool>, EventStoreError>> {
        let store = self.store;
        let _one_at_a_time = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let failures = self.pending().failures;
        let live = |s: &&Staged| s.failures == failures;
        let mut batch = store.db.batch().durability(Some(PersistMode::SyncAll));
        for s in staged.iter().filter(live) {
            for id_key in &s.user_ids {
                batch.insert(&store.user_ids, id_key.as_slice(), []);
            }
            for (key, value) in &s.by_user {
                batch.insert(&store.by_user, key.as_slice(), value.as_slice());
            }
            for tkey in &s.by_time {
                batch.insert(&store.by_time, tkey.as_slice(), []);
            }
            for (key, request) in &s.request_ids {
                batch.insert(&store.request_ids, key.as_slice(), request.as_slice());
            }
        }
        let mut failed = batch.commit().err().map(|e| store.engine(e));
        {
            let mut pending = self.pending();
            if failed.is_some() {
                // Every insert staged and not written was checked against what just failed.
                pending.failures += 1;
                pending.ids.clear();
                pending.keys.clear();
            } else {
                for s in staged.iter().filter(live) {
                    for id_key in &s.user_ids {
                        pending.ids.remove(id_key);
                    }
                    for key in &s.keyless {
                        pending.keys.remove(key);
                    }
                }
            }
        }
        let reason = failed.as_ref().map(ToString::to_string);
        staged
            .into_iter()
            .map(|s| {
                if s.failures != failures {
                    return Err(store
                        .not_written("a write it was checked against failed before it; retry it"));
                }
                match (failed.take(), &reason) {
                    (_, None) => Ok(s.fresh),
                    (Some(first), Some(_)) => Err(first),
                    (None, Some(reason)) => Err(store.not_written(reason)),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn event((user, item, time, id): (u8, u8, i64, Option<u8>)) -> Event {
        Event {
            user: format!("u{user}"),
            item: format!("i{item}"),
            time,
            action: "click".into(),
            weight: 1.0,
            id: id.map(|id| format!("e{id}")),
            request_id: None,
        }
    }

    /// The naive reference: an event is new when its identity (user and id, else user, time,
    /// item and action) was not seen before.
    fn first_seen(events: &[Event]) -> Vec<bool> {
        let mut seen = HashSet::new();
        events
            .iter()
            .map(|e| match &e.id {
                Some(id) => seen.insert(format!("id {} {id}", e.user)),
                None => seen.insert(format!("ev {} {} {}", e.user, e.time, e.item)),
            })
            .collect()
    }

    proptest! {
        /// Inserts staged ahead of their writes, written in any chunks, get the verdicts of
        /// one insert after another, and the store ends up with each event once.
        #[test]
        fn staging_ahead_dedupes_like_inserting_one_by_one(
            raw in prop::collection::vec((0u8..3, 0u8..3, 0i64..3, prop::option::of(0u8..4)), 1..40),
            cuts in prop::collection::vec(1usize..6, 1..10),
            chunk in 1usize..4,
        ) {
            let events: Vec<Event> = raw.into_iter().map(event).collect();
            let dir = tempfile::tempdir().unwrap();
            let store = EventStore::open(dir.path()).unwrap();
            let writer = store.writer();
            // Split into groups; stage a few ahead, write them `chunk` at a time.
            let mut groups = Vec::new();
            let mut rest = &events[..];
            for &cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (group, tail) = rest.split_at(cut.min(rest.len()));
                groups.push(group);
                rest = tail;
            }
            let mut verdicts = Vec::new();
            let mut staged = Vec::new();
            for group in groups {
                staged.push(writer.stage(group).unwrap());
                if staged.len() == chunk {
                    for r in writer.write(std::mem::take(&mut staged)) {
                        verdicts.extend(r.unwrap());
                    }
                }
            }
            for r in writer.write(staged) {
                verdicts.extend(r.unwrap());
            }
            let expected = first_seen(&events);
            prop_assert_eq!(&verdicts, &expected);
            let stored: usize = (0..3)
                .map(|u| store.user_events(&format!("u{u}"), 0, 10).unwrap().len())
                .sum();
            prop_assert_eq!(stored, expected.iter().filter(|&&n| n).count());
            prop_assert!(writer.pending().ids.is_empty() && writer.pending().keys.is_empty());
        }
    }
}
