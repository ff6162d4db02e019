//! # pinnersage-engine
//!
//! The recommendation engine apart from its doors: the served profile generation, the online
//! profiles, the retrieval plan (choose interests, fetch their medoids' neighbours, blend,
//! de-duplicate, filter) and the [`cache`] of medoid neighbours, with the operator's
//! [`excluded`] items, and the catalog's [`items`] changing while it is served. No transport, no async runtime, no clock: the server calls it from its
//! HTTP and NATS doors, and the evaluation (`pinnersage-eval`) measures the same plan.
#![warn(missing_docs)]

pub mod cache;
pub mod engine;
pub mod excluded;
pub mod items;
pub mod serving;

pub use engine::{
    Engine, EngineConfig, EngineError, MAX_K, MAX_MEDOIDS, Recommended, Request, Resample,
    Retrieval,
};
