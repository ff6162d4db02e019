//! [`CatalogError`], the error of every catalog operation and item or attribute import.

use std::path::{Path, PathBuf};

/// What can go wrong with a catalog; every message names the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No catalog has been imported into the data directory yet.
    #[error("no item catalog in {}: import one with `pinnersage import items`", .0.display())]
    Missing(PathBuf),
    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A catalog file is inconsistent (damaged or written by something else).
    #[error("{}: corrupt catalog: {problem}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is inconsistent.
        problem: String,
    },
    /// Another publisher holds the data directory.
    #[error(transparent)]
    Busy(#[from] pinnersage_generation::LockError),
    /// An input file is invalid; the message names the file and where.
    #[error("{0}")]
    Input(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl pinnersage_core::error::Kind for CatalogError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::{self, *};
        match self {
            Self::Missing(_) => NotFound,
            Self::Io { source, .. } => ErrorKind::of_io(source),
            Self::Corrupt { .. } => Internal,
            Self::Busy(e) => e.kind(),
            Self::Input(_) => BadInput,
        }
    }
}
