//! # pinnersage-store
//!
//! Embedded, crash-safe storage of a data directory:
//!
//! - [`events`]: the append-heavy event log, in fjall (a journaled LSM tree);
//! - [`profiles`]: the profiles each batch writes, in redb (ACID B-tree, fast point reads), one
//!   file per generation, switched atomically;
//! - [`impressions`]: what each answer of an online experiment showed, in fjall, one keyspace
//!   per day, dropped whole past the retention;
//! - [`settings`]: what a profile generation is computed with, as every generation records it.
#![warn(missing_docs)]

pub mod events;
pub mod impressions;
pub mod profiles;
pub mod settings;
