//! # pinnersage-core
//!
//! The algorithms of PinnerSage (Pal et al., KDD 2020) and nothing else: pairwise squared
//! distances, Ward clustering by nearest-neighbour chain cut at a merge threshold, medoids,
//! time-decayed importance and seedable medoid sampling.
//!
//! **Invariant:** no I/O, no async, no file formats, no knowledge of HTTP or stores. Everything
//! here is a pure function of its inputs (plus reusable buffers), so the data, index, pipeline,
//! server and Python layers can all build on it.
//!
//! ```
//! use pinnersage_core::{Actions, Clusterer, Embeddings, ProfileParams};
//! // Four actions on L2-normalised 2-d items: two near "east", two near "north".
//! let data = [1.0, 0.0, 0.99, 0.14, 0.0, 1.0, 0.14, 0.99];
//! let x = Embeddings::new(&data, 2).unwrap();
//! let now = 1_700_000_000;
//! let times = [now - 86_400, now, now, now];
//! let actions = Actions::new(x, &times, None).unwrap();
//! let profile = Clusterer::new(ProfileParams::default()).unwrap().profile(&actions, now).unwrap();
//! assert_eq!(profile.clusters.len(), 2);
//! assert_eq!(profile.clusters[0].members, vec![2, 3]); // both today: the more important one
//! ```
#![warn(missing_docs)]

pub mod als;
pub mod blend;
pub mod distance;
pub mod embeddings;
pub mod error;
pub mod experiment;
mod gram;
pub mod hash;
mod hugepages;
pub mod importance;
pub mod kmeans;
pub mod learned;
pub mod medoid;
pub mod merge;
pub mod metrics;
pub mod profile;
pub mod progress;
pub mod projection;
pub mod sample;
pub mod scan;
mod simd;
pub mod stats;
pub mod svd;
pub mod ward;

pub use embeddings::Embeddings;
pub use error::{CoreError, ErrorKind, Kind, Result};
pub use profile::{Actions, Cluster, Clusterer, Profile, ProfileParams};

/// The README, whose Rust example is compiled and run as a doc-test so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExample;
