//! Serving: the doors of the recommendation engine (`pinnersage-engine`): request
//! metrics ([`metrics`]), events in over HTTP and NATS JetStream ([`intake`], [`nats`]) into the event store the server owns ([`owned_store`]), fleet mode
//! (partitioned events, readiness: [`fleet`]), the experiments and their impressions
//! ([`experiments`], [`impressions`]), the listener and its phases ([`front`]), the HTTP
//! API ([`http`]), how commands find and
//! trust a running server and hand it work ([`handoff`], over the HTTP [`client`]; item changes
//! from files: [`remote_items`]) and [`Server`], which opens a data directory and runs all of
//! it.
#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod clock;
pub mod experiments;
pub mod fleet;
pub mod fleet_report;
pub mod front;
pub mod handoff;
pub mod haproxy;
pub mod http;
pub mod impressions;
pub mod intake;
pub mod item_changes;
pub mod metrics;
pub mod nats;
pub mod owned_store;
pub mod remote_items;
pub mod server;
pub mod sink;

pub use front::{Front, serve, shutdown_signal};
pub use handoff::server_file;
pub use http::{AppState, router};
pub use pinnersage_engine::{Engine, EngineConfig, Resample, Retrieval};
pub use server::{Running, ServeConfig, ServeError, Server};
pub use sink::{EventSink, Mode};
