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
