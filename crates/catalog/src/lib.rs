//! # pinnersage-catalog
//!
//! The data layer of pinnersage: reading and writing the files users bring. Today it holds the
//! NPY reader and writer ([`npy`]); the item catalog (ids <-> rows, memory-mapped embeddings),
//! Parquet and CSV readers and the synthetic data generator come next.
#![warn(missing_docs)]

pub mod npy;
