//! # pinnersage-pipeline
//!
//! The jobs that move data through pinnersage: importing engagement logs into the event store
//! ([`import_events`]) and the daily batch that turns every user's recent events into a new
//! profile generation ([`batch`]); durable ingestion with group commit ([`ingest`], its commit times in a [`histogram`]) and the
//! online profiles of today's latest actions ([`online`]); the MovieLens layout ([`movielens`]); the batch over in-memory columns ([`memory`], for the
//! Python package and the Spark job), the profile table's schema ([`profile_table`]) and
//! publishing profiles computed elsewhere ([`import_profiles`]) and shipping them to a fleet of
//! replicas through a shared directory ([`ship`]); item embeddings learned from the event store
//! for teams without any ([`embed`]).
#![warn(missing_docs)]

pub mod batch;
pub mod embed;
pub mod histogram;
pub mod import_events;
pub mod import_profiles;
pub mod ingest;
pub mod memory;
pub mod movielens;
pub mod online;
pub mod profile_table;
pub mod ship;
