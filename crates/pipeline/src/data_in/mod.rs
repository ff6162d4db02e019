//! Data in: engagement logs into the event store ([`import_events`]), the MovieLens layout
//! ([`movielens`]), and item embeddings learned from the event store ([`embed`]).

pub mod embed;
pub mod import_events;
pub mod movielens;
