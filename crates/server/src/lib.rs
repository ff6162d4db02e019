//! Serving: the recommendation engine ([`recommend`]), its medoid cache ([`cache`]), request
//! metrics ([`metrics`]), event ingestion over HTTP and NATS JetStream ([`ingest`], [`nats`]) and the HTTP API ([`http`]).
#![warn(missing_docs)]

pub mod cache;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod nats;
pub mod recommend;

pub use http::{AppState, router, serve, shutdown_signal};
pub use recommend::{Engine, EngineConfig, Resample};
