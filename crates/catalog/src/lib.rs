//! # pinnersage-catalog
//!
//! The data layer of pinnersage: the item [`catalog`] (external ids <-> dense rows and the
//! memory-mapped embedding matrix, published as atomic generations of `pinnersage-generation`),
//! its changes while serving ([`changes`], [`journal`], [`live`]), the item importers
//! ([`items`]), the file formats they read ([`npy`], CSV, [`parquet_io`]), event [`timestamp`]s
//! and the [`synth`]etic data generator.
#![warn(missing_docs)]

pub mod append_only;
pub mod attributes;
pub mod catalog;
pub mod changes;
pub mod error;
pub mod filter;
pub mod fold;
pub mod id_table;
pub mod items;
pub mod journal;
pub mod live;
pub mod npy;
pub mod parquet_io;
pub mod synth;
pub mod timestamp;

pub use error::CatalogError;

/// The file's extension in lower case (`"parquet"` for `x.PARQUET`), used to pick a reader.
///
/// ```
/// assert_eq!(pinnersage_catalog::extension(std::path::Path::new("a/E.Parquet")).as_deref(), Some("parquet"));
/// assert_eq!(pinnersage_catalog::extension(std::path::Path::new("noext")), None);
/// ```
pub fn extension(path: &std::path::Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}
