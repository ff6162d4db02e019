//! # pinnersage-catalog
//!
//! The data layer of pinnersage: the item [`catalog`] (external ids <-> dense rows and the
//! memory-mapped embedding matrix, published as atomic [`generation`]s), the item importers
//! ([`items`]), the file formats they read ([`npy`], CSV, [`parquet_io`]), event [`timestamp`]s
//! and the [`synth`]etic data generator.
#![warn(missing_docs)]

pub mod catalog;
pub mod generation;
pub mod items;
pub mod npy;
pub mod parquet_io;
pub mod synth;
pub mod timestamp;
