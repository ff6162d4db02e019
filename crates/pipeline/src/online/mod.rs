//! The online path: durable ingestion with group commit ([`ingest`], its commit times in a
//! [`histogram`]) and the online profiles of each user's latest actions since the served batch
//! generation ([`profiles`], re-exported here).

pub mod histogram;
pub mod ingest;
pub mod profiles;

pub use profiles::*;
