//! Folding the changes made while serving into a new catalog generation: the items the catalog
//! has now, in row order, without the rows replaced or deleted since (disk and memory follow the
//! catalog, not the number of changes), holding the journal up to the position it was read at.
//! A deleted item that something still points at (a profile's medoid) is kept as a deleted row,
//! for its vector only.
//!
//! ```
//! use pinnersage_catalog::catalog::{Catalog, CatalogBuilder};
//! use pinnersage_catalog::changes::ItemChange;
//! use pinnersage_catalog::fold::fold;
//! use pinnersage_catalog::journal::Journal;
//! let dir = tempfile::tempdir().unwrap();
//! let mut b = CatalogBuilder::new(dir.path(), 2, false).unwrap();
//! b.push("a", &mut [1.0, 0.0]).unwrap();
//! b.push("b", &mut [0.0, 1.0]).unwrap();
//! b.commit("doc").unwrap();
//! let (mut journal, _) = Journal::open(dir.path()).unwrap();
//! let rules = Catalog::open(dir.path()).unwrap().rules();
//! journal.append(&[
//!     ItemChange::upsert("a", Some(vec![0.5, 0.5]), None, &rules).unwrap(),
//!     ItemChange::delete("b").unwrap(),
//! ]).unwrap();
//! let folded = fold(dir.path(), &|id| id == "b").unwrap();
//! assert_eq!((folded.live, folded.kept_deleted, folded.meta.journal_seq), (1, 1, 2));
//! let c = Catalog::open(dir.path()).unwrap();
//! assert_eq!((c.rows(), c.live_rows(), c.row_of("a")), (2, 1, Some(0)));
//! assert_eq!(c.embedding(0), &[0.5, 0.5]);
//! assert_eq!((c.row_of("b"), c.last_row_of("b")), (None, Some(1)));
//! ```

use std::path::{Path, PathBuf};

use crate::catalog::{Catalog, CatalogBuilder, CatalogMeta};
use crate::error::CatalogError;

/// What [`fold`] published.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// The new generation's directory.
    pub generation: PathBuf,
    /// Its metadata (`journal_seq`: the journal's changes it holds).
    pub meta: CatalogMeta,
    /// Items it has.
    pub live: usize,
    /// Deleted items kept for their vectors (`keep` said so).
    pub kept_deleted: usize,
    /// Rows of the previous generation and its changes that it leaves out.
    pub dropped: usize,
}

/// Publishes the catalog of `data_dir` as it is now (its current generation with the journal's
/// changes on top) as a new generation holding the journal up to the last change read. A
/// deleted item whose id `keep` accepts stays as a deleted row. Safe beside a server changing
/// the catalog: the changes it journals later are replayed on top of the new generation.
pub fn fold(data_dir: &Path, keep: &dyn Fn(&str) -> bool) -> Result<Folded, CatalogError> {
    let catalog = Catalog::open(data_dir)?;
    fold_opened(data_dir, &catalog, keep)
}

/// The deleted items of `catalog` a fold may keep, as `(row, id)`: each id's last row, for the
/// ids without a live row (a replaced item's old row is not one).
pub fn deleted_items(catalog: &Catalog) -> impl Iterator<Item = (usize, &str)> {
    (0..catalog.rows())
        .filter(|&row| catalog.is_deleted(row))
        .map(|row| (row, catalog.id(row)))
        .filter(|&(row, id)| catalog.last_row_of(id) == Some(row) && catalog.row_of(id).is_none())
}

/// [`fold`] of `catalog`, opened from `data_dir` and not changed meanwhile.
pub fn fold_opened(
    data_dir: &Path,
    catalog: &Catalog,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Folded, CatalogError> {
    let rules = catalog.rules();
    let mut builder = CatalogBuilder::new(data_dir, rules.dim, rules.normalize)?;
    let corrupt = |row: usize, e: crate::catalog::RowError| CatalogError::Corrupt {
        path: catalog.dir().to_path_buf(),
        problem: format!("row {row} cannot be folded: {e}"),
    };
    let mut live = 0;
    for row in (0..catalog.rows()).filter(|&r| !catalog.is_deleted(r)) {
        builder
            .push_folded(
                catalog.id(row),
                catalog.embedding(row),
                catalog.attributes(row),
                false,
            )
            .map_err(|e| corrupt(row, e))?;
        live += 1;
    }
    let mut kept_deleted = 0;
    for (row, id) in deleted_items(catalog).filter(|&(_, id)| keep(id)) {
        builder
            .push_folded(id, catalog.embedding(row), catalog.attributes(row), true)
            .map_err(|e| corrupt(row, e))?;
        kept_deleted += 1;
    }
    if live == 0 {
        return Err(CatalogError::Input(
            "every item is deleted: nothing to fold (import items instead)".into(),
        ));
    }
    builder.holds_journal_through(catalog.applied_seq());
    let source = format!(
        "{} folded with the journal through {}",
        catalog
            .dir()
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        catalog.applied_seq()
    );
    let summary = builder.commit(&source)?;
    Ok(Folded {
        generation: summary.generation,
        meta: summary.meta,
        live,
        kept_deleted,
        dropped: catalog.rows() - live - kept_deleted,
    })
}
