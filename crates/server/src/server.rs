//! [`Server`]: a data directory opened for serving (catalog, index, engine, the event store and
//! its online state), then run on a listener with the optional NATS consumer and the profile
//! reloader. The CLI's `serve` and `quickstart` and the tests are hosts of this one builder.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pinnersage_catalog::catalog::{Catalog, CatalogError};
use pinnersage_index::IndexError;
use pinnersage_index::persist;
use pinnersage_pipeline::online::ingest::DEFAULT_QUEUE;
use pinnersage_pipeline::online::{DEFAULT_MAX_USERS, DEFAULT_ONLINE_ACTIONS};
use pinnersage_store::events::EventStoreError;
use pinnersage_store::impressions::ImpressionStore;

use crate::auth::AuthConfig;
use crate::fleet::{Readiness, ShippedCounters, watch_shipped};
use crate::front::{DEFAULT_HEADER_TIMEOUT, Front};
use crate::handoff::{ServerRecord, server_file};
use crate::http::{AppState, DEFAULT_MAX_IN_FLIGHT, DEFAULT_REQUEST_TIMEOUT, Limits};
use crate::impressions::Recorder;
use crate::metrics::{Metrics, Observed};
use crate::nats::{self, ConsumersStop, NatsConfig, NatsCounters, NatsError};
use crate::owned_store::OwnedStore;
use crate::sink::{EventSink, Mode};
use pinnersage_engine::engine::{Engine, EngineConfig, EngineError, Resample, Retrieval};
use pinnersage_engine::serving::{IndexOpening, Serving};

/// How a data directory is served; [`Default`] gives `pinnersage serve`'s defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Medoid cache budget in bytes (0 disables the cache).
    pub cache_bytes: u64,
    /// Overrides the index's ef_search.
    pub ef_search: Option<usize>,
    /// The ef_construction of the items inserted into the served graph (`POST /v1/items`); the
    /// build's when unset.
    pub insert_ef: Option<usize>,
    /// Load a usearch HNSW index into memory instead of memory-mapping it (hnswlib's always is).
    pub load_index: bool,
    /// How medoids are sampled.
    pub resample: Resample,
    /// Defaults of a request's retrieval parameters (medoids, selection, blend).
    pub retrieval: Retrieval,
    /// Deployment-wide seed mixed into every medoid sample.
    pub seed: u64,
    /// Time between checks for a new profile generation.
    pub reload: Duration,
    /// Latest actions per user clustered online.
    pub online_actions: usize,
    /// Users whose online state is kept in memory at most.
    pub online_users: usize,
    /// Also consume events from NATS JetStream (in fleet mode, publish posted events to it).
    pub nats: Option<NatsConfig>,
    /// Import profile generations shipped to this shared directory ([`pinnersage_pipeline::exchange::ship`]).
    pub profiles_from: Option<PathBuf>,
    /// The operator's exclusion list (a file of item ids, re-read when it changes).
    pub excluded: Option<PathBuf>,
    /// Tokens, allowed hosts and the opt-out of the loopback rule.
    pub auth: AuthConfig,
    /// Concurrent requests at most (more get 503 with `Retry-After`).
    pub max_in_flight: usize,
    /// Time a request may take (admin batches excepted).
    pub request_timeout: Duration,
    /// Time a connection may take to send a request head, or stay idle between requests.
    pub header_timeout: Duration,
    /// Event submissions waiting for the writer at most (more get 503 with `Retry-After`).
    pub ingest_queue: usize,
    /// Fold the item changes into a new catalog and index generation once they reach this share
    /// of the generation's rows (0: never).
    pub fold_fraction: f64,
    /// The online experiments (none by default): a user's arm sets the retrieval of their
    /// recommendations.
    pub experiments: crate::experiments::Experiments,
    /// Days the experiments' impressions are kept.
    pub impression_retention_days: u32,
    /// Whether an answer waits until its impression is on disk.
    pub impression_durability: crate::impressions::Durability,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 256 << 20,
            ef_search: None,
            insert_ef: None,
            load_index: false,
            resample: Resample::Daily,
            retrieval: Retrieval::default(),
            seed: 0,
            reload: Duration::from_secs(2),
            online_actions: DEFAULT_ONLINE_ACTIONS,
            online_users: DEFAULT_MAX_USERS,
            nats: None,
            profiles_from: None,
            excluded: None,
            auth: AuthConfig::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            ingest_queue: DEFAULT_QUEUE,
            fold_fraction: pinnersage_engine::serving::DEFAULT_FOLD_FRACTION,
            experiments: Default::default(),
            impression_retention_days: pinnersage_store::impressions::DEFAULT_RETENTION_DAYS,
            impression_durability: Default::default(),
        }
    }
}

/// Why a data directory cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// No catalog, or an unreadable one.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// No index, or one built for another catalog generation.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The event store is in use or failed.
    #[error(transparent)]
    Events(#[from] EventStoreError),
    /// The impression store could not be opened.
    #[error(transparent)]
    Impressions(#[from] pinnersage_store::impressions::ImpressionError),
    /// The profiles could not be opened.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The NATS consumer could not start.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// The listener or the server file failed.
    #[error("{}: {source}", what)]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Polls (10 ms apart) that find no item change before the indexer says it paused: the graph's
/// searches are about 5% faster while no insert can run (a second of quiet; a pause per burst
/// would make the searches wait for the mode to change every few milliseconds under load).
const IDLE_POLLS_BEFORE_PAUSE: u32 = 100;

/// Starts the thread that brings the served graph up to the items changed while serving (see
/// `pinnersage_engine::items`); it ends with the server.
fn start_indexer(serving: &Arc<Serving>) {
    let serving = Arc::downgrade(serving);
    let spawned = std::thread::Builder::new()
        .name("pinnersage-indexer".into())
        .spawn(move || {
            // The engine is held only while working: a stopped server drops it (and its
            // journal's lock) at once.
            let mut idle_polls = 0;
            while let Some(engine) = serving.upgrade().map(|s| s.engine()) {
                let pause = match engine.index_changes() {
                    Ok(0) => {
                        idle_polls += 1;
                        if idle_polls == IDLE_POLLS_BEFORE_PAUSE {
                            engine.indexing_paused();
                        }
                        std::time::Duration::from_millis(10)
                    }
                    Ok(_) => {
                        idle_polls = 0;
                        continue;
                    }
                    Err(e) => {
                        // Searches compare the rows the graph lacks one by one: answers stay
                        // whole meanwhile.
                        eprintln!("indexing changed items failed (retrying in 5 s): {e}");
                        std::time::Duration::from_secs(5)
                    }
                };
                drop(engine);
                std::thread::sleep(pause);
            }
        });
    if let Err(e) = spawned {
        eprintln!("cannot start the indexing thread (changed items are found by scanning): {e}");
    }
}

/// The current catalog generation, or, when the current index was built for the previous one
/// (an `import items` not indexed yet, or a fold cut short by a crash), that one: the server
/// serves what it can search, and follows the current generation once it is indexed.
fn open_indexed_catalog(
    data_dir: &Path,
    changes: pinnersage_catalog::journal::Records,
) -> Result<Catalog, ServeError> {
    let current = pinnersage_catalog::catalog::current_generation(data_dir)?;
    if let (Some(current), Ok(Some((_, index)))) = (&current, persist::current_generation(data_dir))
    {
        let indexed =
            pinnersage_catalog::catalog::catalog_root(data_dir).join(&index.catalog_generation);
        if !index.is_for(current) && indexed.join("meta.json").is_file() {
            eprintln!(
                "the current catalog {} has no index yet: serving {} (the index's) until \
                 `pinnersage index build --data-dir {}` indexes it",
                current.display(),
                indexed.display(),
                data_dir.display()
            );
            return Ok(Catalog::open_generation(indexed, changes)?);
        }
    }
    Ok(Catalog::open_with_changes(data_dir, changes)?)
}

/// A data directory opened for serving.
pub struct Server {
    data_dir: PathBuf,
    serving: Arc<Serving>,
    store: Arc<OwnedStore>,
    /// The experiments' impression writer, when experiments are defined.
    recorder: Option<Arc<Recorder>>,
    recovered: u64,
    config: ServeConfig,
}

impl Server {
    /// Opens the catalog, the index, the current profile generation and the event store of
    /// `data_dir`, and rebuilds the online state from the events after the served batch.
    pub fn open(data_dir: &Path, config: ServeConfig) -> Result<Self, ServeError> {
        if config.online_actions == 0 {
            return Err(ServeError::Config(
                "`online_actions` must be at least 1".into(),
            ));
        }
        config.retrieval.check()?;
        if !(0.0..=100.0).contains(&config.fold_fraction) {
            return Err(ServeError::Config(format!(
                "`fold_fraction` must be in 0..=100 (0: never fold), got {}",
                config.fold_fraction
            )));
        }
        if config.reload.is_zero() {
            return Err(ServeError::Config(
                "`reload_seconds` must be positive".into(),
            ));
        }
        // The journal first: it cuts a torn tail before the catalog replays it.
        let (journal, changes) = pinnersage_catalog::journal::Journal::open(data_dir)?;
        let mut catalog = open_indexed_catalog(data_dir, changes)?;
        catalog.build_hash_index();
        let catalog = Arc::new(catalog);
        let index = persist::open(
            data_dir,
            catalog.clone(),
            config.ef_search,
            config.insert_ef,
            config.load_index,
        )?;
        let engine = Engine::new(
            data_dir,
            catalog.clone(),
            index,
            EngineConfig {
                retrieval: config.retrieval,
                resample: config.resample,
                seed: config.seed,
                cache_bytes: config.cache_bytes,
                online_actions: config.online_actions,
                online_users: config.online_users,
                excluded: config.excluded.clone(),
                required_cuts: config.experiments.required_cuts(),
            },
        )?
        .with_journal(journal);
        let (store, recovered) = OwnedStore::open(&engine, config.ingest_queue)?;
        // Impressions are recorded once an experiments file defines an experiment.
        let recorder = if config.experiments.all.is_empty() {
            None
        } else {
            let impressions = ImpressionStore::open(data_dir, config.impression_retention_days)?;
            // Its flushes and compactions yield the CPU too (every storage worker of the
            // process is lowered).
            store.events().lower_background_priority();
            let impressions = Arc::new(impressions);
            let (durability, queue) = (
                config.impression_durability,
                crate::impressions::DEFAULT_QUEUE,
            );
            // A fleet replica publishes them to the stream, and stores those of its users
            // from there.
            let in_fleet = config.nats.as_ref().is_some_and(|n| n.fleet.is_some());
            Some(Arc::new(if in_fleet {
                Recorder::start_streamed(impressions, durability, queue)
            } else {
                Recorder::start(impressions, durability, queue)
            }))
        };
        let serving = Arc::new(
            Serving::new(
                engine,
                IndexOpening {
                    ef_search: config.ef_search,
                    insert_ef: config.insert_ef,
                    load_into_memory: config.load_index,
                },
            )
            .with_fold_fraction(config.fold_fraction),
        );
        start_indexer(&serving);
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            serving,
            store: Arc::new(store),
            recorder,
            recovered,
            config,
        })
    }

    /// The engine being served (catalog, index, profiles, online state); replaced whole when a
    /// new catalog or index generation is served ([`Serving`]).
    pub fn engine(&self) -> Arc<Engine> {
        self.serving.engine()
    }

    /// The engine being served, and its replacement by new generations.
    pub fn serving(&self) -> &Arc<Serving> {
        &self.serving
    }

    /// Events read back from the store after the served batch when opening.
    pub fn recovered_events(&self) -> u64 {
        self.recovered
    }

    /// Serves on `listener` until `shutdown` completes, then finishes in-flight requests. Starts
    /// the NATS consumer (and in fleet mode the publisher) and the shipped-profiles watcher when
    /// configured, and records the address in [`server_file`] while serving.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = listener
            .local_addr()
            .map_err(io("reading the listening address".into()))?;
        let (header_timeout, reload) = (self.config.header_timeout, self.config.reload);
        let (state, data_dir, consumers) = self.prepare(addr, None).await?;
        let front = Front::start_serving(listener, state.clone(), reload, header_timeout, shutdown)
            .map_err(io("reading the listening address".into()))?;
        Running::record(front, &state, &data_dir, consumers)?
            .finish()
            .await
    }

    /// Serves on `front`, a listener answering since before the server was opened (`/readyz`
    /// says what it waits for meanwhile, the NATS setup included): the API from the moment this
    /// returns, until the shutdown given to [`Front::start`]; [`Running::finish`] waits for it.
    pub async fn start_on(self, front: Front) -> Result<Running, ServeError> {
        let reload = self.config.reload;
        let (state, data_dir, consumers) =
            match self.prepare(front.local_addr(), Some(&front)).await {
                Ok(prepared) => prepared,
                Err(e) => {
                    front.close().await;
                    return Err(e);
                }
            };
        let mut front = front;
        front.install(state.clone(), reload);
        Running::record(front, &state, &data_dir, consumers)
    }

    /// Checks the address, starts the NATS consumer and the shipped-profiles watcher when
    /// configured (telling `front` what it waits for), and builds the state of the handlers.
    async fn prepare(
        self,
        addr: std::net::SocketAddr,
        front: Option<&Front>,
    ) -> Result<(AppState, PathBuf, Option<ConsumersStop>), ServeError> {
        self.config.auth.check_listen(addr)?;
        let readiness = Arc::new(Readiness::new(
            self.config.nats.is_some(),
            self.config.profiles_from.is_some(),
        ));
        let fleet = self.config.nats.as_ref().and_then(|n| n.fleet.clone());
        let (nats, nats_task, publisher, consumers) = match self.config.nats.clone() {
            None => (None, None, None, None),
            Some(mut config) => {
                // Retries of a post end a second before its request would time out.
                let answer_within = self
                    .config
                    .request_timeout
                    .saturating_sub(Duration::from_secs(1));
                config.publish_patience = config.publish_patience.min(answer_within);
                if let Some(front) = front {
                    front.waiting_for(format!(
                        "setting up the NATS consumer ({})",
                        nats::masked_urls(&config.url)
                    ));
                }
                let counters = Arc::new(NatsCounters::default());
                let consuming = nats::start(
                    config,
                    &self.data_dir,
                    self.serving.clone(),
                    self.store.clone(),
                    self.recorder.as_ref().map(|r| r.store().clone()),
                    counters.clone(),
                    readiness.clone(),
                )
                .await?;
                (
                    Some(counters),
                    Some(Arc::new(consuming.task)),
                    consuming.publisher,
                    Some(consuming.stop),
                )
            }
        };
        let shipped = self.config.profiles_from.clone().map(|shared| {
            let counters = Arc::new(ShippedCounters::default());
            tokio::spawn(watch_shipped(
                shared,
                self.serving.clone(),
                fleet.clone(),
                self.config.reload,
                readiness.clone(),
                counters.clone(),
            ));
            counters
        });
        let sink = match publisher.map(Arc::new) {
            Some(publisher) => {
                if let Some(recorder) = &self.recorder {
                    recorder.stream_to(publisher.clone(), tokio::runtime::Handle::current());
                }
                EventSink::Stream(publisher)
            }
            None => EventSink::Store(self.store.clone()),
        };
        let metrics = Metrics::default().observe(Observed {
            serving: self.serving.clone(),
            store: self.store.clone(),
            recorder: self.recorder.as_ref().map(|r| r.counters().clone()),
            nats: nats.clone(),
            shipped: shipped.clone(),
        });
        let state = AppState {
            identity: Some(Arc::new(ServerRecord::new(addr, std::process::id()))),
            serving: self.serving,
            metrics: Arc::new(metrics),
            store: self.store,
            sink,
            mode: fleet.map_or(Mode::Standalone, Mode::Replica),
            nats,
            readiness,
            shipped,
            auth: Arc::new(self.config.auth.on_address(addr)),
            limits: Arc::new(
                Limits::new(self.config.max_in_flight, self.config.request_timeout)
                    .with_header_timeout(self.config.header_timeout),
            ),
            nats_task,
            experiments: Arc::new(self.config.experiments.clone()),
            requests: Arc::new(crate::http::RequestIds::new()),
            recorder: self.recorder,
        };
        Ok((state, self.data_dir, consumers))
    }
}

/// How long a graceful stop waits for the NATS consumers to settle the messages they hold.
pub const CONSUMERS_STOP_PATIENCE: Duration = Duration::from_secs(10);

/// A server answering its API, recorded in its data directory's [`server_file`].
pub struct Running {
    front: Front,
    file: PathBuf,
    consumers: Option<ConsumersStop>,
    recorder: Option<Arc<Recorder>>,
}

impl Running {
    /// Records the server serving `state` in `data_dir`.
    fn record(
        front: Front,
        state: &AppState,
        data_dir: &Path,
        consumers: Option<ConsumersStop>,
    ) -> Result<Self, ServeError> {
        let file = server_file(data_dir);
        if let Some(identity) = &state.identity {
            identity
                .write(&file)
                .map_err(io(format!("writing {}", file.display())))?;
        }
        Ok(Self {
            front,
            file,
            consumers,
            recorder: state.recorder.clone(),
        })
    }

    /// Waits for the shutdown and the requests in flight; stops the NATS consumers (each settles
    /// the messages it holds); waits for the impressions of the last answers to be written (a
    /// fleet replica's published, on this runtime, while its connection runs); then removes the
    /// record.
    pub async fn finish(self) -> Result<(), ServeError> {
        let served = self.front.finish().await;
        if let Some(consumers) = self.consumers
            && !consumers.stop(CONSUMERS_STOP_PATIENCE).await
        {
            eprintln!(
                "the NATS consumers were still busy {} s after the stop; their messages in \
                 hand will be redelivered",
                CONSUMERS_STOP_PATIENCE.as_secs()
            );
        }
        if let Some(recorder) = self.recorder {
            let _ = tokio::task::spawn_blocking(move || recorder.finish()).await;
        }
        let _ = std::fs::remove_file(&self.file);
        served.map_err(io("serving".into()))
    }
}

/// An I/O error of `what`.
fn io(what: String) -> impl FnOnce(std::io::Error) -> ServeError {
    move |source| ServeError::Io { what, source }
}

impl pinnersage_core::error::Kind for ServeError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::{self, *};
        match self {
            Self::Config(_) => BadInput,
            Self::Catalog(e) => e.kind(),
            Self::Index(e) => e.kind(),
            Self::Events(e) => e.kind(),
            Self::Impressions(e) => e.kind(),
            Self::Engine(e) => e.kind(),
            Self::Nats(e) => e.kind(),
            Self::Io { source, .. } => ErrorKind::of_io(source),
        }
    }
}
