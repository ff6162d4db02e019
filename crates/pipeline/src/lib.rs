//! # pinnersage-pipeline
//!
//! The jobs that move data through pinnersage: importing engagement logs into the event store
//! ([`import_events`]) and the daily batch that turns every user's recent events into a new
//! profile generation ([`batch`]); durable ingestion with group commit ([`ingest`]) and the
//! online profiles of today's latest actions ([`online`]); the MovieLens layout ([`movielens`]).
#![warn(missing_docs)]

pub mod batch;
pub mod import_events;
pub mod ingest;
pub mod movielens;
pub mod online;
