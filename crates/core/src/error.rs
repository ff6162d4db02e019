//! Typed errors of the core algorithms.

/// Everything that can be wrong with the input of a core algorithm.
///
/// Every variant names the offending row, field or parameter so that callers can turn it into a
/// message that points at the user's data. The core never panics on user input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// There were no actions (rows) to work on.
    #[error("no actions: the input has zero rows")]
    Empty,
    /// The embedding dimension is zero.
    #[error("embedding dimension is zero")]
    ZeroDimension,
    /// A buffer's length does not fit the declared shape.
    #[error("dimension mismatch in {what}: expected {expected}, found {found}")]
    DimensionMismatch {
        /// Which input is inconsistent (for example `"times"`).
        what: &'static str,
        /// The length implied by the other inputs.
        expected: usize,
        /// The length actually given.
        found: usize,
    },
    /// An embedding value is NaN, infinite, or so large that squared distances would overflow
    /// (see [`crate::embeddings::MAX_ABS_VALUE`]).
    #[error("embedding row {row}, column {col} is {value}: values must be finite and within ±1e12")]
    InvalidEmbedding {
        /// 0-based row of the offending value.
        row: usize,
        /// 0-based column of the offending value.
        col: usize,
        /// The value itself.
        value: f32,
    },
    /// An action weight is NaN, infinite or negative.
    #[error("weight of action {row} must be finite and >= 0, got {value}")]
    InvalidWeight {
        /// 0-based row of the offending weight.
        row: usize,
        /// The value itself.
        value: f32,
    },
    /// An action names an item row that the item embeddings do not have.
    #[error("action {row} names item row {item}, but there are only {items} item rows")]
    ItemOutOfRange {
        /// 0-based row of the offending action.
        row: usize,
        /// The item row it names.
        item: u32,
        /// Number of item rows.
        items: usize,
    },
    /// A parameter is outside its domain.
    #[error("parameter {name} must be {expected}, got {value}")]
    InvalidParameter {
        /// Parameter name as users know it (for example `"alpha"`).
        name: &'static str,
        /// What the parameter must be.
        expected: &'static str,
        /// The value given.
        value: f64,
    },
}

/// Result alias of the core crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// What kind of failure an error is. Every library error says its kind ([`Kind`]), and each
/// host maps kinds once: the CLI to exit codes, the server to HTTP statuses, Python to
/// exception types.
///
/// ```
/// use pinnersage_core::error::{CoreError, ErrorKind, Kind};
/// assert_eq!(CoreError::Empty.kind(), ErrorKind::BadInput);
/// let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
/// assert_eq!(ErrorKind::of_io(&missing), ErrorKind::NotFound);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input is wrong (a file, row, field or parameter): fix it and retry.
    BadInput,
    /// Something named does not exist (an item, a file, a generation not built yet).
    NotFound,
    /// Valid input that conflicts with the current state (a store in use by another process,
    /// a generation older than the served one, an index built for another catalog).
    Conflict,
    /// A service is down or overloaded (a server, a stream, a full queue): retry later.
    Unavailable,
    /// The machine failed or there is a bug (I/O, corruption, an error inside a library).
    Internal,
}

impl ErrorKind {
    /// The kind of an I/O error: a missing file is not found, a refused permission or a
    /// malformed file bad input, a refused or timed-out connection unavailable, the rest
    /// internal.
    pub fn of_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        match e.kind() {
            Io::NotFound => Self::NotFound,
            Io::PermissionDenied
            | Io::InvalidInput
            | Io::InvalidData
            | Io::UnexpectedEof
            | Io::IsADirectory
            | Io::NotADirectory => Self::BadInput,
            Io::AlreadyExists | Io::AddrInUse => Self::Conflict,
            Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::NotConnected
            | Io::TimedOut
            | Io::WouldBlock
            | Io::BrokenPipe => Self::Unavailable,
            _ => Self::Internal,
        }
    }
}

/// An error that says its [`ErrorKind`].
pub trait Kind {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;
}

impl Kind for CoreError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

impl Kind for std::io::Error {
    fn kind(&self) -> ErrorKind {
        ErrorKind::of_io(self)
    }
}

/// Any error reduced to its kind and message, where the type cannot cross (the Python
/// boundary, a worker thread's result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind of the original error.
    pub kind: ErrorKind,
    /// Its message.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: Kind + std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::new(e.kind(), e.to_string())
    }
}
impl std::error::Error for Failure {}
