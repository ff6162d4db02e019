//! A catalog that changes while it is served: items upserted and deleted on top of the
//! published generation, visible to readers at once and without locks on their path.
//!
//! Rows are never reused and never change. An upsert appends a row (the new vector, or the
//! current one when only attributes change) and, if the id had a row, marks that one deleted;
//! a delete marks the id's row deleted. A deleted row keeps its vector and id, so a profile whose
//! medoid was deleted still has a query ([`Catalog::last_row_of`]), and every reader holding a
//! row number keeps a valid one. The id of a changed item is bound to its newest row in a small
//! map, consulted only once something changed.
//!
//! ```
//! use pinnersage_catalog::catalog::{Catalog, CatalogBuilder};
//! use pinnersage_catalog::changes::ItemChange;
//! use pinnersage_catalog::live::Applied;
//! let dir = tempfile::tempdir().unwrap();
//! let mut b = CatalogBuilder::new(dir.path(), 2, false).unwrap();
//! b.push("apple", &mut [1.0, 0.0]).unwrap();
//! b.commit("doc").unwrap();
//! let catalog = Catalog::open(dir.path()).unwrap();
//! let rules = catalog.rules();
//! let kiwi = ItemChange::upsert("kiwi", Some(vec![0.0, 1.0]), None, &rules).unwrap();
//! assert_eq!(catalog.apply(&kiwi), Ok(Applied { row: Some(1), removed: None }));
//! let apple = ItemChange::upsert("apple", Some(vec![0.5, 0.5]), None, &rules).unwrap();
//! assert_eq!(catalog.apply(&apple), Ok(Applied { row: Some(2), removed: Some(0) }));
//! assert_eq!((catalog.row_of("apple"), catalog.is_deleted(0)), (Some(2), true));
//! assert_eq!(catalog.embedding(0), &[1.0, 0.0]); // the old row keeps its vector
//! catalog.apply(&ItemChange::delete("kiwi").unwrap()).unwrap();
//! assert_eq!((catalog.row_of("kiwi"), catalog.last_row_of("kiwi")), (None, Some(1)));
//! assert_eq!((catalog.rows(), catalog.live_rows()), (3, 1));
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use parking_lot::RwLock;

use crate::append_only::AppendOnly;
use crate::catalog::Catalog;
use crate::changes::{ItemChange, ItemError, Rules};

/// A row added since the generation.
#[derive(Debug)]
pub(crate) struct AddedRow {
    pub(crate) id: Box<str>,
    pub(crate) vector: Box<[f32]>,
    /// `‖vector‖`, computed once: scans of the added rows need one dot product a row.
    norm: f32,
    pub(crate) attributes: Option<Box<str>>,
    deleted: AtomicBool,
}

/// The newest row of a changed id, and whether the item still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) row: u32,
    pub(crate) live: bool,
}

/// The changes on top of a generation (held by [`Catalog`]).
#[derive(Debug)]
pub(crate) struct Live {
    base_rows: usize,
    added: AppendOnly<AddedRow>,
    /// One bit per generation row: deleted since.
    deleted_base: Box<[AtomicU64]>,
    deleted: AtomicUsize,
    bindings: RwLock<HashMap<Box<str>, Binding>>,
    changed: AtomicBool,
    applied_seq: AtomicU64,
    writer: Mutex<()>,
}

impl Live {
    pub(crate) fn new(base_rows: usize) -> Self {
        Self {
            base_rows,
            added: AppendOnly::new(),
            deleted_base: (0..base_rows.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            deleted: AtomicUsize::new(0),
            bindings: RwLock::new(HashMap::new()),
            changed: AtomicBool::new(false),
            applied_seq: AtomicU64::new(0),
            writer: Mutex::new(()),
        }
    }

    /// Rows added since the generation.
    pub(crate) fn added(&self) -> usize {
        self.added.len()
    }

    /// Added row `k` (row `base_rows + k`). Panics if there is none.
    pub(crate) fn row(&self, k: usize) -> &AddedRow {
        self.added
            .get(k)
            .unwrap_or_else(|| panic!("row {} is outside the catalog", self.base_rows + k))
    }

    /// Whether anything changed since the generation.
    pub(crate) fn changed(&self) -> bool {
        self.changed.load(Ordering::Acquire)
    }

    /// The binding of a changed id.
    pub(crate) fn binding(&self, id: &str) -> Option<Binding> {
        if !self.changed() {
            return None;
        }
        let bindings = self.bindings.read();
        bindings.get(id).copied()
    }

    /// Replaces, in `rows` (the generation's rows of `ids`), the rows of changed ids by their
    /// newest row (`None` if deleted).
    pub(crate) fn rebind<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
        rows: &mut [Option<usize>],
    ) {
        if !self.changed() {
            return;
        }
        let bindings = self.bindings.read();
        for (id, row) in ids.zip(rows) {
            if let Some(binding) = bindings.get(id) {
                *row = binding.live.then_some(binding.row as usize);
            }
        }
    }

    fn is_deleted(&self, row: usize) -> bool {
        if row < self.base_rows {
            self.deleted_base[row / 64].load(Ordering::Acquire) & (1 << (row % 64)) != 0
        } else {
            self.added
                .get(row - self.base_rows)
                .is_some_and(|r| r.deleted.load(Ordering::Acquire))
        }
    }

    fn mark_deleted(&self, row: usize) {
        let was = if row < self.base_rows {
            let bit = 1 << (row % 64);
            self.deleted_base[row / 64].fetch_or(bit, Ordering::AcqRel) & bit != 0
        } else {
            self.row(row - self.base_rows)
                .deleted
                .swap(true, Ordering::AcqRel)
        };
        if !was {
            self.deleted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn bind(&self, id: &str, binding: Binding) {
        let mut bindings = self.bindings.write();
        bindings.insert(id.into(), binding);
        self.changed.store(true, Ordering::Release);
    }
}

/// What applying one change did to the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The row the item has now (`None` after a delete).
    pub row: Option<u32>,
    /// The row it no longer has (replaced or deleted), if it had one.
    pub removed: Option<u32>,
}

impl Catalog {
    /// What an item must be to join this catalog.
    pub fn rules(&self) -> Rules {
        Rules {
            dim: self.dim(),
            normalize: self.meta().normalized,
        }
    }

    /// Whether `row` was deleted (or replaced) since the generation: it is never served again.
    pub fn is_deleted(&self, row: usize) -> bool {
        self.live.is_deleted(row)
    }

    /// Rows that are not deleted: the items the catalog has.
    pub fn live_rows(&self) -> usize {
        self.rows() - self.live.deleted.load(Ordering::Relaxed)
    }

    /// Rows added since the generation (deleted or not).
    pub fn added_rows(&self) -> usize {
        self.live.added()
    }

    /// The vector of a row added since the generation and its length (`None` for a row of the
    /// generation).
    pub fn added_vector(&self, row: usize) -> Option<(&[f32], f32)> {
        let added = self.live.added.get(row.checked_sub(self.base_rows())?)?;
        Some((&added.vector, added.norm))
    }

    /// The newest row `id` had, deleted or not (the query of a medoid whose item was deleted).
    pub fn last_row_of(&self, id: &str) -> Option<usize> {
        match self.live.binding(id) {
            Some(binding) => Some(binding.row as usize),
            None => self.base_row_of(id),
        }
    }

    /// The row that now holds the item of `row`: `row` itself unless it was replaced (a
    /// deleted item's row stays its own).
    pub fn current_row(&self, row: usize) -> usize {
        if !self.is_deleted(row) {
            return row;
        }
        self.last_row_of(self.id(row)).unwrap_or(row)
    }

    /// The sequence number of the last journaled change applied (0: none since the
    /// generation's own).
    pub fn applied_seq(&self) -> u64 {
        self.live
            .applied_seq
            .load(Ordering::Acquire)
            .max(self.meta().journal_seq)
    }

    /// Applies one validated change (see [`ItemChange::upsert`]); readers see it at once.
    /// Refused, changing nothing: attributes alone for an item the catalog lacks
    /// ([`ItemError::NoVector`]), a delete of one it lacks ([`ItemError::Unknown`]).
    pub fn apply(&self, change: &ItemChange) -> Result<Applied, ItemError> {
        let _one_writer = self
            .live
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (id, current) = (change.id(), self.row_of(change.id()));
        match change {
            ItemChange::Delete { .. } => {
                let row = current.ok_or_else(|| ItemError::Unknown(id.to_owned()))?;
                self.live.bind(
                    id,
                    Binding {
                        row: row as u32,
                        live: false,
                    },
                );
                self.live.mark_deleted(row);
                Ok(Applied {
                    row: None,
                    removed: Some(row as u32),
                })
            }
            ItemChange::Upsert {
                vector, attributes, ..
            } => {
                let vector: Box<[f32]> = match (vector, current) {
                    (Some(v), _) => v.as_slice().into(),
                    (None, Some(row)) => self.embedding(row).into(),
                    (None, None) => return Err(ItemError::NoVector(id.to_owned())),
                };
                let attributes = match attributes {
                    Some(text) => Some(text.as_str().into()),
                    None => current.and_then(|row| self.attributes(row).map(Into::into)),
                };
                let norm = pinnersage_core::scan::dot(&vector, &vector).sqrt();
                let row = self.base_rows()
                    + self.live.added.push(AddedRow {
                        id: id.into(),
                        vector,
                        norm,
                        attributes,
                        deleted: AtomicBool::new(false),
                    });
                let row = u32::try_from(row)
                    .map_err(|_| ItemError::Vector(crate::catalog::RowError::TooMany))?;
                self.live.bind(id, Binding { row, live: true });
                if let Some(old) = current {
                    self.live.mark_deleted(old);
                }
                Ok(Applied {
                    row: Some(row),
                    removed: current.map(|r| r as u32),
                })
            }
        }
    }

    /// Marks generation row `row` deleted (a folded generation's deleted item, kept for its
    /// vector): its id resolves to no row, and to `row` as its last one.
    pub(crate) fn tombstone(&self, row: usize) {
        self.live.bind(
            self.id(row),
            Binding {
                row: row as u32,
                live: false,
            },
        );
        self.live.mark_deleted(row);
    }

    /// Records that the journal's changes up to `seq` are applied.
    pub fn set_applied_seq(&self, seq: u64) {
        self.live.applied_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// Applies the journal's records this generation does not hold yet (a refused one changed
    /// nothing when it was first applied either, and is skipped the same way).
    pub(crate) fn replay(&self, records: crate::journal::Records) {
        let held = self.meta().journal_seq;
        for (seq, change) in records.into_iter().filter(|(seq, _)| *seq > held) {
            let _ = self.apply(&change);
            self.set_applied_seq(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogBuilder;

    fn catalog(dir: &std::path::Path) -> Catalog {
        let mut b = CatalogBuilder::new(dir, 2, false).unwrap();
        b.push("a", &mut [1.0, 0.0]).unwrap();
        b.push("b", &mut [0.0, 1.0]).unwrap();
        b.commit("test").unwrap();
        Catalog::open(dir).unwrap()
    }

    #[test]
    fn attribute_changes_keep_the_vector_and_vector_changes_keep_the_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let c = catalog(dir.path());
        let rules = c.rules();
        let attrs = serde_json::json!({"lang": "en"});
        c.apply(&ItemChange::upsert("a", None, Some(&attrs), &rules).unwrap())
            .unwrap();
        let row = c.row_of("a").unwrap();
        assert_eq!((row, c.embedding(row)), (2, &[1.0, 0.0][..]));
        assert_eq!(c.attributes(row), Some(r#"{"lang":"en"}"#));
        c.apply(&ItemChange::upsert("a", Some(vec![2.0, 2.0]), None, &rules).unwrap())
            .unwrap();
        let row = c.row_of("a").unwrap();
        assert_eq!((row, c.embedding(row)), (3, &[2.0, 2.0][..]));
        assert_eq!(c.attributes(row), Some(r#"{"lang":"en"}"#));
        assert_eq!(c.current_row(0), 3);
        assert_eq!(c.current_row(2), 3);
        assert!(c.is_deleted(0) && c.is_deleted(2) && !c.is_deleted(3));
        let mut rows = Vec::new();
        c.rows_of(["b", "a", "zz"], &mut rows);
        assert_eq!(rows, [Some(1), Some(3), None]);
        // The same through the hash index's prefetching path.
        let mut c = c;
        c.build_hash_index();
        c.rows_of(["b", "a", "zz"], &mut rows);
        assert_eq!(rows, [Some(1), Some(3), None]);
    }

    #[test]
    fn refused_changes_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = catalog(dir.path());
        let rules = c.rules();
        let attrs = serde_json::json!({});
        let new = ItemChange::upsert("new", None, Some(&attrs), &rules).unwrap();
        assert_eq!(c.apply(&new), Err(ItemError::NoVector("new".into())));
        let gone = ItemChange::delete("gone").unwrap();
        assert_eq!(c.apply(&gone), Err(ItemError::Unknown("gone".into())));
        assert_eq!((c.rows(), c.live_rows(), c.live.changed()), (2, 2, false));
        c.apply(&ItemChange::delete("a").unwrap()).unwrap();
        assert!(c.apply(&ItemChange::delete("a").unwrap()).is_err());
        assert_eq!(c.live_rows(), 1);
    }

    #[test]
    fn a_reopened_catalog_replays_the_journal_and_an_import_supersedes_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = catalog(dir.path());
        let rules = c.rules();
        let changes = [
            ItemChange::upsert("c", Some(vec![0.5, 0.5]), None, &rules).unwrap(),
            ItemChange::delete("a").unwrap(),
        ];
        let (mut journal, _) = crate::journal::Journal::open(dir.path()).unwrap();
        journal.append(&changes).unwrap();
        let again = Catalog::open(dir.path()).unwrap();
        assert_eq!(
            (again.row_of("c"), again.row_of("a"), again.applied_seq()),
            (Some(2), None, 2)
        );
        drop(again);
        let fresh = catalog(dir.path());
        assert_eq!((fresh.row_of("c"), fresh.row_of("a")), (None, Some(0)));
        assert_eq!((fresh.meta().journal_seq, fresh.applied_seq()), (2, 2));
    }
}
