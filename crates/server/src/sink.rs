//! The doors side by side: where the events a door accepts go ([`EventSink`]) and how the
//! server takes part in a deployment ([`Mode`]).

use std::sync::Arc;

use pinnersage_catalog::catalog::Catalog;

use crate::fleet::{FleetConfig, Publisher};
use crate::intake::{IngestError, IngestReport};
use crate::owned_store::OwnedStore;

/// Where the events posted to a server go.
#[derive(Clone)]
pub enum EventSink {
    /// This server's own event store: group commit, answered once fsynced.
    Store(Arc<OwnedStore>),
    /// A fleet's JetStream stream, answered once the stream holds them; every replica stores
    /// its partitions from there.
    Stream(Arc<Publisher>),
}

impl EventSink {
    /// Validates a request body and stores or publishes its valid events; the report lists
    /// the rejected ones by index.
    pub async fn accept(
        &self,
        body: &[u8],
        catalog: &Catalog,
    ) -> Result<IngestReport, IngestError> {
        match self {
            EventSink::Store(store) => store.accept(body, catalog).await,
            EventSink::Stream(publisher) => publisher.publish_body(body, catalog).await,
        }
    }
}

/// How a server takes part in a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// One server owning its data directory: it stores what is posted to it and runs batches.
    Standalone,
    /// A fleet replica: posted events go through the stream, which feeds the replica's store
    /// with its partitions; its profiles are shipped, so it runs no batch.
    Replica(FleetConfig),
}
