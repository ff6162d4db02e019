//! The event store a standalone server (or a fleet replica) owns: opened once, its online
//! profiles recovered, posted events stored through the group-commit
//! [`Ingestor`](pinnersage_pipeline::online::ingest::Ingestor), batches run on it one at a time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use pinnersage_catalog::catalog::Catalog;
use pinnersage_engine::engine::Engine;
use pinnersage_pipeline::batch::{BatchConfig, BatchError, BatchSummary, run_batch_on};
use pinnersage_pipeline::online::ingest::{IngestCounters, Ingestor};
use pinnersage_store::events::{EngineStats, EventStore, EventStoreError};

use crate::intake::{IngestError, IngestReport, parse_request};

/// The event store a server owns, its group-commit writer and its batch trigger.
pub struct OwnedStore {
    data_dir: PathBuf,
    store: Arc<EventStore>,
    ingestor: Ingestor,
    batch_lock: Mutex<()>,
}

impl std::fmt::Debug for OwnedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedStore")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl OwnedStore {
    /// Opens the event store of `engine`'s data directory (the server owns it from now on; its
    /// background flushes and compactions run at a lower CPU priority), recovers the online
    /// profiles from the events after the served batch, and starts the writer with room for
    /// `queue` waiting submissions. Returns the number of events recovered too.
    pub fn open(engine: &Engine, queue: usize) -> Result<(Self, u64), EventStoreError> {
        let data_dir = engine.data_dir().to_path_buf();
        let store = Arc::new(EventStore::open(&data_dir)?);
        // Flushes and compactions yield the CPU to ingestion and requests.
        store.lower_background_priority();
        let recovered = engine.online().recover(&store)?;
        let ingestor = Ingestor::with_queue(store.clone(), engine.online().clone(), queue);
        Ok((
            Self {
                data_dir,
                store,
                ingestor,
                batch_lock: Mutex::new(()),
            },
            recovered,
        ))
    }

    /// The writer's counters.
    pub fn counters(&self) -> &IngestCounters {
        self.ingestor.counters()
    }

    /// The event store itself (reports read it).
    pub fn events(&self) -> &Arc<EventStore> {
        &self.store
    }

    /// The event store's flush and compaction backlog.
    pub fn engine_stats(&self) -> EngineStats {
        self.store.engine_stats()
    }

    /// Validates and stores a request body; resolves once the valid events are durable.
    pub async fn accept(
        &self,
        body: &[u8],
        catalog: &Catalog,
    ) -> Result<IngestReport, IngestError> {
        let (valid, mut report) = parse_request(body, catalog)?;
        if valid.is_empty() {
            return Ok(report);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ingestor.submit(
            valid,
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        )?;
        let fresh = rx
            .await
            .map_err(|_| IngestError::Store("the ingestor stopped".into()))?
            .map_err(|e| IngestError::Store(e.to_string()))?;
        report.accepted = fresh.iter().filter(|&&f| f).count();
        report.duplicates = fresh.len() - report.accepted;
        Ok(report)
    }

    /// Runs a batch over the owned event store (one at a time) and returns its summary; the
    /// caller then reloads the engine's profiles.
    pub fn run_batch(&self, config: &BatchConfig) -> Result<BatchSummary, BatchError> {
        let _one_at_a_time = self
            .batch_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        run_batch_on(&self.data_dir, &self.store, config, &|_| {})
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}
