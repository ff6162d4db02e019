//! Item changes while serving: validated upserts and deletes are journaled (appended and
//! fsynced, group-committed), then applied in journal order to the filters' attribute table and
//! the catalog, and only then acknowledged. Readers see a change as soon as it is applied: a
//! deleted row is skipped by every path at once (`Engine::hidden`); a new row is found by every
//! search, which compares the rows the graph does not hold yet with its query one by one, and
//! the medoid cache brings its lists up to the rows added since ([`crate::cache`]).
//!
//! The graph catches up off the request path ([`Engine::index_changes`], a thread of the
//! server's): it inserts the new rows and marks the deleted ones, one at a time, while searches
//! go on (an insert takes the per-node locks the searches take; marking a deletion holds the
//! graph alone for microseconds). This is how vector databases keep fresh items searchable (Qdrant's appendable
//! segments, Milvus's growing segments): acknowledgement and visibility do not wait for the
//! graph, whose insertion rate on two cores is a few thousand items a second.
//!
//! Group commit: every submitter queues its changes, then takes the journal's lock; the holder
//! writes everything queued so far in one fsynced append and applies it, so the submitters
//! queued behind it find their changes done when they get the lock.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};

use pinnersage_catalog::changes::{ItemChange, ItemError};
use pinnersage_catalog::journal::Journal;

use crate::engine::{Engine, EngineError};

/// The journal and the queue of changes waiting for it (shared by an engine and its
/// successors: whoever holds the journal writes and applies everything queued).
pub(crate) struct Changes {
    journal: Mutex<Journal>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    next_ticket: u64,
    waiting: Vec<(u64, Vec<ItemChange>)>,
    done: std::collections::HashMap<u64, Result<ItemsApplied, String>>,
}

/// What a batch of item changes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemsApplied {
    /// Items added or replaced.
    pub upserted: usize,
    /// Items deleted.
    pub deleted: usize,
    /// Changes that found nothing to change when their turn came (a delete of an item deleted
    /// meanwhile): journaled, and skipped the same way on every replay.
    pub skipped: usize,
    /// The journal's sequence number of the last change.
    pub seq: u64,
}

impl Engine {
    /// Lets the engine take item changes, journaled in `journal` (opened before the catalog, so
    /// the catalog replayed all of it).
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.changes = Some(std::sync::Arc::new(Changes {
            journal: Mutex::new(journal),
            queue: Mutex::new(Queue::default()),
        }));
        self
    }

    /// Whether item changes can be applied: a journal, and an index that takes changes (hnswlib)
    /// or scans (exact). The error says why not.
    pub fn check_item_changes(&self) -> Result<(), EngineError> {
        if self.changes.is_none() {
            return Err(EngineError::ReadOnly(
                "this engine serves a read-only catalog".into(),
            ));
        }
        let index = &self.index().index;
        if index.kind() != "exact" && !index.takes_changes() {
            return Err(EngineError::ReadOnly(index.refuses_changes().to_string()));
        }
        Ok(())
    }

    /// Checks `changes` against the catalog as it is: a delete of an item it does not have, or
    /// attributes alone for one it does not have, is refused (nothing is journaled).
    pub fn check_items(&self, changes: &[ItemChange]) -> Result<(), (usize, ItemError)> {
        let catalog = self.catalog();
        for (k, change) in changes.iter().enumerate() {
            let known = || catalog.row_of(change.id()).is_some();
            let refused = match change {
                ItemChange::Delete { id } if !known() => Some(ItemError::Unknown(id.clone())),
                ItemChange::Upsert {
                    id, vector: None, ..
                } if !known() => Some(ItemError::NoVector(id.clone())),
                _ => None,
            };
            if let Some(e) = refused {
                return Err((k, e));
            }
        }
        Ok(())
    }

    /// Journals `changes` (fsynced, group-committed with concurrent callers) and applies them;
    /// returns once they are durable and visible. The changes must be validated
    /// ([`ItemChange::upsert`]); see [`Engine::check_items`].
    pub fn change_items(&self, changes: Vec<ItemChange>) -> Result<ItemsApplied, EngineError> {
        self.check_item_changes()?;
        let state = self.changes.as_ref().expect("checked");
        let ticket = {
            let mut queue = state.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let ticket = queue.next_ticket;
            queue.next_ticket += 1;
            queue.waiting.push((ticket, changes));
            ticket
        };
        let mut journal = state.journal.lock().unwrap_or_else(PoisonError::into_inner);
        let waiting = {
            let mut queue = state.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(done) = queue.done.remove(&ticket) {
                return done.map_err(EngineError::Internal);
            }
            if self.is_retired() {
                // A successor serves another catalog: ours are withdrawn (not journaled), the
                // host retries them there; the others wait for a holder that is not retired.
                queue.waiting.retain(|(t, _)| *t != ticket);
                return Err(EngineError::Retired);
            }
            std::mem::take(&mut queue.waiting)
        };
        let all: Vec<ItemChange> = waiting
            .iter()
            .flat_map(|(_, changes)| changes.iter().cloned())
            .collect();
        let outcomes: Vec<(u64, Result<ItemsApplied, String>)> = match journal.append(&all) {
            Err(e) => waiting
                .iter()
                .map(|&(t, _)| (t, Err(format!("the catalog's journal: {e}"))))
                .collect(),
            Ok(last) => {
                let mut seq = last - all.len() as u64;
                waiting
                    .iter()
                    .map(|(t, changes)| {
                        let mut applied = ItemsApplied::default();
                        for change in changes {
                            seq += 1;
                            match self.apply(change) {
                                Some(ItemChange::Delete { .. }) => applied.deleted += 1,
                                Some(_) => applied.upserted += 1,
                                None => applied.skipped += 1,
                            }
                            self.catalog().set_applied_seq(seq);
                        }
                        applied.seq = seq;
                        (*t, Ok(applied))
                    })
                    .collect()
            }
        };
        let mut queue = state.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let mut mine = None;
        for (t, outcome) in outcomes {
            if t == ticket {
                mine = Some(outcome);
            } else {
                queue.done.insert(t, outcome);
            }
        }
        drop(queue);
        drop(journal);
        mine.expect("the holder's own changes were queued")
            .map_err(EngineError::Internal)
    }

    /// Brings the graph up to the catalog: inserts the rows it lacks and marks the deleted rows
    /// it holds, one change at a time; returns the changes made (0: nothing to do, or an engine
    /// without changes, or an exact index, which needs none). A host calls it again and again.
    pub fn index_changes(&self) -> Result<usize, EngineError> {
        if self.changes.is_none() {
            return Ok(0);
        }
        let index = &self.index().index;
        if !index.takes_changes() {
            return Ok(0);
        }
        let catalog = self.catalog();
        let failed = |e: pinnersage_index::IndexError| EngineError::Internal(e.to_string());
        let unlinked =
            std::mem::take(&mut *self.unlinked.lock().unwrap_or_else(PoisonError::into_inner));
        let mut changed = 0;
        for row in unlinked {
            changed += usize::from(index.remove(row).map_err(failed)?);
        }
        let (from, to) = (self.indexed_rows.load(Ordering::Acquire), catalog.rows());
        for row in from..to {
            // A row deleted before its turn never enters the graph.
            if !catalog.is_deleted(row) {
                index
                    .insert(row as u32, catalog.embedding(row))
                    .map_err(failed)?;
                changed += 1;
            }
            self.indexed_rows.store(row + 1, Ordering::Release);
        }
        Ok(changed)
    }

    /// Says that the graph is up to date and no change is expected soon: its searches go back
    /// to their fastest form until the next insert (see [`AnnIndex::inserts_done`]). A host
    /// calls it after [`Engine::index_changes`] has found nothing to do for a while.
    ///
    /// [`AnnIndex::inserts_done`]: pinnersage_index::AnnIndex::inserts_done
    pub fn indexing_paused(&self) {
        self.index().index.inserts_done();
    }

    /// Rows the graph does not hold yet (searches compare them with their query one by one).
    pub fn index_backlog(&self) -> usize {
        self.catalog().rows()
            - self
                .indexed_rows
                .load(Ordering::Acquire)
                .min(self.catalog().rows())
    }

    /// Applies one journaled change to the attribute table and the catalog, in that order (a
    /// row is filterable before anything can return it), and queues a deleted row for the
    /// graph. `None`: it found nothing to change.
    fn apply<'c>(&self, change: &'c ItemChange) -> Option<&'c ItemChange> {
        let catalog = self.catalog();
        let current = catalog.row_of(change.id());
        if let ItemChange::Upsert {
            vector, attributes, ..
        } = change
        {
            if vector.is_none() && current.is_none() {
                return None;
            }
            let text = attributes
                .as_deref()
                .or_else(|| current.and_then(|row| catalog.attributes(row)));
            self.attributes().append(text);
        }
        let applied = catalog.apply(change).ok()?;
        if let Some(old) = applied.removed {
            let mut unlinked = self.unlinked.lock().unwrap_or_else(PoisonError::into_inner);
            unlinked.push(old);
        }
        Some(change)
    }

    /// Runs `f` while no item change is journaled or applied (the journal's lock held).
    pub(crate) fn holding_journal<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.changes {
            Some(state) => {
                let _journal = state.journal.lock().unwrap_or_else(PoisonError::into_inner);
                f()
            }
            None => f(),
        }
    }

    /// Applies the journal's records that the catalog does not hold yet, in order; returns how
    /// many.
    pub(crate) fn replay(&self, records: pinnersage_catalog::journal::Records) -> usize {
        let held = self.catalog().applied_seq();
        let mut replayed = 0;
        for (seq, change) in records.into_iter().filter(|(seq, _)| *seq > held) {
            self.apply(&change);
            self.catalog().set_applied_seq(seq);
            replayed += 1;
        }
        replayed
    }

    /// Finishes a journal compaction prepared beside the journal (see
    /// [`pinnersage_catalog::journal::prepare_compaction`]), holding the journal.
    pub(crate) fn compact_journal(
        &self,
        compaction: pinnersage_catalog::journal::Compaction,
    ) -> Result<(), EngineError> {
        let Some(state) = &self.changes else {
            return Ok(());
        };
        let mut journal = state.journal.lock().unwrap_or_else(PoisonError::into_inner);
        journal
            .compact(compaction)
            .map_err(|e| EngineError::Internal(format!("compacting the catalog's journal: {e}")))
    }

    /// Item changes journaled since the served catalog generation.
    pub fn changes_since_generation(&self) -> u64 {
        let catalog = self.catalog();
        catalog.applied_seq() - catalog.meta().journal_seq
    }

    /// Of `ids`, those a medoid of the served profile generation points at.
    pub(crate) fn medoids_among(
        &self,
        ids: &std::collections::HashSet<&str>,
    ) -> Result<std::collections::HashSet<String>, EngineError> {
        let mut found = std::collections::HashSet::new();
        if ids.is_empty() {
            return Ok(found);
        }
        if let Some(store) = self.profile_store() {
            store
                .for_each_medoid(|id| {
                    if ids.contains(id) && !found.contains(id) {
                        found.insert(id.to_owned());
                    }
                })
                .map_err(|e| EngineError::Internal(e.to_string()))?;
        }
        Ok(found)
    }
}
