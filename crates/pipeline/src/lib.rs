//! # pinnersage-pipeline
//!
//! The jobs that move data through pinnersage: importing engagement logs into the event store
//! ([`import_events`]) and the daily batch that turns every user's recent events into a new
//! profile generation ([`batch`]). The online updater joins them later.
#![warn(missing_docs)]

pub mod batch;
pub mod import_events;
