//! # pinnersage-catalog
//!
//! The data layer of pinnersage: the item [`catalog`] (external ids <-> dense rows and the
//! memory-mapped embedding matrix, published as atomic [`generation`]s), the item importers
//! ([`items`]) and the file formats they read ([`npy`], CSV).
#![warn(missing_docs)]

pub mod catalog;
pub mod generation;
pub mod items;
pub mod npy;
