//! A validated, borrowed view of a row-major `f32` matrix.

use crate::error::{CoreError, Result};

/// The largest magnitude an embedding value may have; squared distances of larger values could
/// overflow `f32` inside Ward's recurrence.
pub const MAX_ABS_VALUE: f32 = 1e12;

/// A borrowed row-major matrix of `rows x dim` finite `f32` values.
///
/// Construction validates the shape and that every value is finite, so the algorithms that take
/// an `Embeddings` never see NaN or infinity.
///
/// ```
/// use pinnersage_core::Embeddings;
/// let data = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
/// let x = Embeddings::new(&data, 3).unwrap();
/// assert_eq!((x.rows(), x.dim()), (2, 3));
/// assert_eq!(x.row(1), &[3.0, 4.0, 5.0]);
/// assert!(Embeddings::new(&[1.0, f32::NAN], 2).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Embeddings<'a> {
    data: &'a [f32],
    dim: usize,
}

impl<'a> Embeddings<'a> {
    /// Wraps `data` as rows of `dim` values; fails on an empty matrix, a ragged length or a
    /// value that is not finite or exceeds [`MAX_ABS_VALUE`].
    pub fn new(data: &'a [f32], dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(CoreError::ZeroDimension);
        }
        if data.is_empty() {
            return Err(CoreError::Empty);
        }
        if !data.len().is_multiple_of(dim) {
            return Err(CoreError::DimensionMismatch {
                what: "embedding buffer length (a multiple of the dimension)",
                expected: (data.len() / dim + 1) * dim,
                found: data.len(),
            });
        }
        if let Some(pos) = data
            .iter()
            .position(|v| !v.is_finite() || v.abs() > MAX_ABS_VALUE)
        {
            return Err(CoreError::InvalidEmbedding {
                row: pos / dim,
                col: pos % dim,
                value: data[pos],
            });
        }
        Ok(Self { data, dim })
    }

    /// Number of rows (actions).
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Number of columns (the embedding dimension).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i` as a slice. Panics if `i >= rows()` (an indexing bug, not a user-input error).
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The whole row-major buffer.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }
}
