//! [`EvalError`], the error of every evaluation function.

use std::path::PathBuf;

/// What can go wrong in an evaluation; input problems name the file, row or option.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// No methods, or no users with enough history to evaluate.
    #[error("nothing to evaluate: no methods or no users with enough history")]
    Empty,
    /// The split refers to an item row the embedding matrix does not have.
    #[error("user {user} refers to an item row outside the {rows} rows of the embedding matrix")]
    RowOutOfRange {
        /// The unit's user index.
        user: u32,
        /// Rows of the embedding matrix.
        rows: usize,
    },
    /// A bad input file or option; the message names it.
    #[error("{0}")]
    Input(String),
    /// Clustering rejected a user's embeddings or the parameters.
    #[error(transparent)]
    Core(#[from] pinnersage_core::CoreError),
    /// The exact index rejected the embeddings or a query.
    #[error(transparent)]
    Index(#[from] pinnersage_index::IndexError),
    /// Reading the event store failed.
    #[error(transparent)]
    Events(#[from] pinnersage_store::events::EventStoreError),
    /// Reading the impression store failed.
    #[error(transparent)]
    Impressions(#[from] pinnersage_store::impressions::ImpressionError),
    /// Drawing a figure failed.
    #[error("drawing a figure: {0}")]
    Plot(String),
    /// Writing an output file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl pinnersage_core::error::Kind for EvalError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::{self, *};
        match self {
            Self::Empty | Self::RowOutOfRange { .. } | Self::Input(_) => BadInput,
            Self::Core(e) => e.kind(),
            Self::Index(e) => e.kind(),
            Self::Events(e) => e.kind(),
            Self::Impressions(e) => e.kind(),
            Self::Plot(_) => Internal,
            Self::Io { source, .. } => ErrorKind::of_io(source),
        }
    }
}
