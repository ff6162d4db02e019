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
        if !all_in_range(data)
            && let Some(pos) = data.iter().position(|v| !in_range(*v))
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

/// Whether `v` is finite and within [`MAX_ABS_VALUE`] (false for NaN).
#[inline(always)]
fn in_range(v: f32) -> bool {
    v.abs() <= MAX_ABS_VALUE
}

crate::simd::multiversion! {
    /// Whether every value is [`in_range`]: a branch-free pass over blocks (it vectorises), so that
    /// validating the batch's gathered rows costs little next to clustering them.
    fn all_in_range(data: &[f32]) -> bool => all_in_range_impl;
}

#[inline(always)]
fn all_in_range_impl(data: &[f32]) -> bool {
    let blocks = data.chunks_exact(64);
    let tail = blocks.remainder().iter().all(|&v| in_range(v));
    tail && blocks
        .into_iter()
        .all(|block| block.iter().fold(true, |ok, &v| ok & in_range(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bad value anywhere (inside a block or in the tail) is caught and located, by the
    /// dispatched and the baseline check alike; values at the limit pass.
    #[test]
    fn every_bad_value_is_found_where_it_is() {
        let dim = 7;
        let good = vec![MAX_ABS_VALUE; 130 * dim];
        assert!(Embeddings::new(&good, dim).is_ok());
        let bad_values = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.01e12,
            -1.01e12,
        ];
        for pos in [0, 63, 64, 500, 130 * dim - 1] {
            for bad in bad_values {
                let mut data = good.clone();
                data[pos] = bad;
                assert!(!all_in_range(&data) && !all_in_range_impl(&data));
                match Embeddings::new(&data, dim) {
                    Err(CoreError::InvalidEmbedding { row, col, .. }) => {
                        assert_eq!((row, col), (pos / dim, pos % dim))
                    }
                    other => panic!("{bad} at {pos}: {other:?}"),
                }
            }
        }
    }
}
