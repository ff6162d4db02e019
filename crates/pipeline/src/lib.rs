//! # pinnersage-pipeline
//!
//! The jobs that move data through pinnersage, one folder per concern:
//!
//! - [`data_in`]: engagement logs into the event store, the MovieLens layout, and item embeddings
//!   learned from the events for teams without any;
//! - [`batch`]: the daily batch from the stores of a data directory, and the same batch over
//!   columns in memory (the Python package and the Spark job);
//! - [`online`]: durable ingestion with group commit and the online profiles of the latest
//!   actions since the served generation;
//! - [`exchange`]: profiles between engines: the profile table's schema, publishing profiles
//!   computed elsewhere, shipping them to a fleet of replicas.
//!
//! All of them cluster a user through one routine, [`clustering`].
#![warn(missing_docs)]

pub mod batch;
pub mod clustering;
pub mod data_in;
pub mod exchange;
pub mod online;
