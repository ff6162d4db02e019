//! The operator's exclusion list: items taken down are never recommended nor returned as
//! similar, without rebuilding the index. A text file of item ids (one per line, the format of
//! `index build --exclude`), read at startup and again whenever it changes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use pinnersage_catalog::catalog::Catalog;
use pinnersage_core::hash::stable_hash;

/// The excluded item ids of one version of the file (by id, not row: an item added or
/// replaced while serving gets a new row and stays excluded).
#[derive(Debug, Default)]
pub struct Excluded {
    ids: HashSet<u64>,
    known: usize,
    /// Ids in the file that were not in the catalog when it was read (excluded if added later).
    pub unknown: usize,
    stamp: Option<(SystemTime, u64)>,
}

impl Excluded {
    /// Whether the item `id` is excluded.
    pub fn contains(&self, id: &str) -> bool {
        !self.ids.is_empty() && self.ids.contains(&stable_hash(id.as_bytes()))
    }

    /// Excluded items the catalog had when the file was read.
    pub fn len(&self) -> usize {
        self.known
    }

    /// Whether nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The exclusion list of a server, re-read when its file changes.
#[derive(Debug, Default)]
pub struct ExclusionList {
    path: Option<PathBuf>,
    current: RwLock<Arc<Excluded>>,
}

/// The exclusion list's file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct ExcludedError {
    /// The file.
    pub path: PathBuf,
    /// What the system said.
    pub source: std::io::Error,
}

impl pinnersage_core::error::Kind for ExcludedError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        pinnersage_core::error::ErrorKind::of_io(&self.source)
    }
}

fn unreadable(path: &Path) -> impl FnOnce(std::io::Error) -> ExcludedError + '_ {
    move |source| ExcludedError {
        path: path.to_path_buf(),
        source,
    }
}

fn stamp(path: &Path) -> Result<(SystemTime, u64), ExcludedError> {
    let meta = std::fs::metadata(path).map_err(unreadable(path))?;
    Ok((
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        meta.len(),
    ))
}

fn read(path: &Path, catalog: &Catalog) -> Result<Excluded, ExcludedError> {
    let stamp = stamp(path)?;
    let text = std::fs::read_to_string(path).map_err(unreadable(path))?;
    let mut excluded = Excluded {
        stamp: Some(stamp),
        ..Excluded::default()
    };
    for id in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if excluded.ids.insert(stable_hash(id.as_bytes())) {
            match catalog.row_of(id) {
                Some(_) => excluded.known += 1,
                None => excluded.unknown += 1,
            }
        }
    }
    Ok(excluded)
}

impl ExclusionList {
    /// The list of `path` (none: nothing excluded). An unreadable file is an error naming it.
    pub fn open(path: Option<&Path>, catalog: &Catalog) -> Result<Self, ExcludedError> {
        let current = match path {
            None => Excluded::default(),
            Some(p) => read(p, catalog)?,
        };
        Ok(Self {
            path: path.map(Path::to_path_buf),
            current: RwLock::new(Arc::new(current)),
        })
    }

    /// What is excluded now.
    pub fn current(&self) -> Arc<Excluded> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the file if it changed (modification time or size); returns the new list when
    /// it did. A file that cannot be read keeps the previous list (the error is returned).
    pub fn reload(&self, catalog: &Catalog) -> Result<Option<Arc<Excluded>>, ExcludedError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        if self.current().stamp == Some(stamp(path)?) {
            return Ok(None);
        }
        let fresh = Arc::new(read(path, catalog)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh.clone();
        Ok(Some(fresh))
    }
}
