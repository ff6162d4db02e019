//! `pinnersage index build` and `pinnersage serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pinnersage_catalog::catalog::Catalog;
use pinnersage_index::persist::{self, BuildOptions, BuildProgress, IndexKind};
use pinnersage_index::{HnswParams, Metric, Quantization};
use pinnersage_pipeline::online::DEFAULT_ONLINE_ACTIONS;
use pinnersage_server::ingest::Ingest;
use pinnersage_server::metrics::Metrics;
use pinnersage_server::nats::{self, NatsConfig, NatsCounters};
use pinnersage_server::{AppState, Engine, EngineConfig, Resample};
use pinnersage_store::events::EventStoreError;

use crate::InputError;
use crate::items::DataDirArg;
use crate::progress::Progress;

/// Build or inspect the nearest-neighbour index of a data directory.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    Build(IndexBuildArgs),
}

/// Build the ANN index over the current catalog and make it the served index.
///
/// The default is an HNSW graph (usearch) over cosine distance, saved in DATA_DIR/index and
/// memory-mapped by `pinnersage serve`. `--kind exact` stores no graph: the server scans every
/// item (best below ~50k items, and exact). Re-run after every `import items`.
///
/// Refinement: `--collapse-duplicates 0.99` keeps one representative of every group of items
/// with cosine >= 0.99; `--exclude FILE` (one item id per line) removes items that must never
/// be recommended. Both are recorded in the index metadata.
///
/// Example:
///   pinnersage index build --data-dir data --connectivity 16 --ef-construction 128
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct IndexBuildArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Index implementation: hnsw or exact.
    #[arg(long, default_value = "hnsw")]
    kind: IndexKind,
    /// Distance: cosine or l2.
    #[arg(long, default_value = "cosine")]
    metric: Metric,
    /// HNSW links per node (M): more gives better recall, more memory, slower builds.
    #[arg(long, default_value_t = 16)]
    connectivity: usize,
    /// HNSW candidate list while building (ef_construction).
    #[arg(long, default_value_t = 128)]
    ef_construction: usize,
    /// HNSW candidate list while searching (ef_search); `serve --ef-search` overrides it.
    #[arg(long, default_value_t = 64)]
    ef_search: usize,
    /// Vector storage inside the HNSW index: f32, or f16 for half the memory.
    #[arg(long, default_value = "f32")]
    quantization: Quantization,
    /// Collapse items whose cosine to an earlier kept item is at least this (0 < T <= 1).
    #[arg(long, value_name = "COSINE")]
    collapse_duplicates: Option<f32>,
    /// File of item ids (one per line) never to recommend.
    #[arg(long, value_name = "FILE")]
    exclude: Option<PathBuf>,
}

/// Feeds index build phases to the shared progress display.
struct IndexProgress {
    current: Mutex<Option<Progress>>,
    done: AtomicU64,
}

impl BuildProgress for IndexProgress {
    fn phase(&self, name: &str, total: u64) {
        let mut current = self.current.lock().expect("not poisoned");
        if let Some(p) = current.take() {
            p.finish();
        }
        eprintln!("{name}...");
        self.done.store(0, Ordering::Relaxed);
        *current = (total > 0).then(|| Progress::new("items", Some(total)));
    }
    fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(p) = self.current.lock().expect("not poisoned").as_ref() {
            p.update(done);
        }
    }
}

/// Runs `pinnersage index build`.
pub fn run_index(cmd: &IndexCommand) -> Result<()> {
    let IndexCommand::Build(args) = cmd;
    let data_dir = &args.data.data_dir;
    let mut catalog = Catalog::open(data_dir).map_err(|e| InputError(e.to_string()))?;
    catalog.build_hash_index();
    let exclude = match &args.exclude {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| InputError(format!("{}: {e}", path.display())))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    let options = BuildOptions {
        kind: args.kind,
        params: HnswParams {
            connectivity: args.connectivity,
            expansion_add: args.ef_construction,
            expansion_search: args.ef_search,
            metric: args.metric,
            quantization: args.quantization,
        },
        collapse_threshold: args.collapse_duplicates,
        exclude,
        exclude_source: args.exclude.as_ref().map(|p| p.display().to_string()),
    };
    options
        .params
        .validate()
        .map_err(|e| InputError(e.to_string()))?;
    let progress = IndexProgress {
        current: Mutex::new(None),
        done: AtomicU64::new(0),
    };
    let built = persist::build(data_dir, &catalog, &options, &progress).map_err(|e| match e {
        pinnersage_index::IndexError::Options(m) => anyhow::Error::new(InputError(m)),
        other => anyhow::Error::new(other),
    })?;
    if let Some(p) = progress.current.into_inner().expect("not poisoned") {
        p.finish();
    }
    let m = &built.meta;
    println!(
        "index {}: {} of {} items ({} excluded, {} near duplicates collapsed), {} dim, {} {} in {:.1} s",
        built.dir.display(),
        m.indexed,
        m.catalog_rows,
        m.excluded,
        m.collapsed,
        m.dim,
        match m.kind {
            IndexKind::Hnsw => format!(
                "HNSW M={} ef_construction={} ef_search={} {:?}",
                m.params.connectivity,
                m.params.expansion_add,
                m.params.expansion_search,
                m.params.quantization
            ),
            IndexKind::Exact => "exact scan".to_string(),
        },
        m.params.metric.name(),
        m.build_seconds
    );
    if built.unknown_exclusions > 0 {
        eprintln!(
            "note: {} excluded ids are not in the catalog",
            built.unknown_exclusions
        );
    }
    Ok(())
}

/// Serve recommendations over HTTP from a data directory.
///
/// Needs a catalog (`import items`), an index (`index build`) and, for personalised results,
/// profiles (`batch`; until then every user gets the fallback). The server owns the data
/// directory's event store while it runs: events posted to it are stored durably (group
/// commit) and clustered online at once, merged with the batch profile. `pinnersage batch`
/// run against the same data directory hands the batch to the server, which publishes the new
/// generation, switches to it and drops the online actions it covers.
///
/// Endpoints (JSON; the full spec is at /openapi.json):
///   GET  /v1/users/{user}/recommendations?k=50&medoids=3&exclude_seen=true
///   GET  /v1/users/{user}/profile
///   GET  /v1/items/{item}/similar?k=20
///   POST /v1/events         {"events":[{"user":"u1","item":"i9","ts":1700000000,"action":"click"}]}
///   POST /v1/admin/batch    {"now":1700000000}  (all fields optional)
/// With --nats, the same event JSON is also consumed from a NATS JetStream subject.
///   GET  /healthz   /metrics (Prometheus)   /openapi.json
///
/// Example:
///   pinnersage serve --data-dir data --addr 127.0.0.1:8080
///   curl 'http://127.0.0.1:8080/v1/users/42/recommendations?k=20'
///   pinnersage serve --data-dir data --nats nats://127.0.0.1:4222 --subject events.clicks
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Address to listen on (loopback by default; use 0.0.0.0:PORT to expose it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Medoid cache budget in MiB (0 disables the cache).
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
    /// Override the index's ef_search (higher: better recall, slower).
    #[arg(long)]
    ef_search: Option<usize>,
    /// Load the HNSW index into memory instead of memory-mapping it.
    #[arg(long)]
    load_index: bool,
    /// How medoids are sampled: daily (stable for a user within a UTC day) or per-request.
    #[arg(long, default_value = "daily")]
    resample: Resample,
    /// Deployment-wide seed mixed into every medoid sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seconds between checks for a new profile generation.
    #[arg(long, default_value_t = 2.0)]
    reload_seconds: f64,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Latest actions per user clustered online (the paper uses 20).
    #[arg(long, default_value_t = DEFAULT_ONLINE_ACTIONS)]
    online_actions: usize,
    /// Also consume events from this NATS server (JetStream), e.g. nats://127.0.0.1:4222.
    /// Messages carry the same JSON as POST /v1/events and are acknowledged once durable.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Subject the events are published on.
    #[arg(long, default_value = "pinnersage.events", requires = "nats")]
    subject: String,
    /// JetStream stream that captures the subject (created if missing).
    #[arg(long, default_value = "PINNERSAGE_EVENTS", requires = "nats")]
    nats_stream: String,
    /// Durable consumer name (created if missing; its position survives restarts).
    #[arg(long, default_value = "pinnersage", requires = "nats")]
    nats_durable: String,
}

/// Where a running server records its address, so that `pinnersage batch` can reach it.
pub fn server_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("server.json")
}

/// Runs `pinnersage serve` until SIGTERM or Ctrl-C.
pub fn run_serve(args: &ServeArgs) -> Result<()> {
    if args.online_actions == 0 {
        return Err(InputError("--online-actions must be at least 1".into()).into());
    }
    let data_dir = &args.data.data_dir;
    let mut catalog = Catalog::open(data_dir).map_err(|e| InputError(e.to_string()))?;
    catalog.build_hash_index();
    let catalog = Arc::new(catalog);
    let index = persist::open(data_dir, catalog.clone(), args.ef_search, args.load_index)
        .map_err(|e| InputError(e.to_string()))?;
    let engine = Engine::new(
        data_dir,
        catalog.clone(),
        index,
        EngineConfig {
            resample: args.resample,
            seed: args.seed,
            cache_bytes: args.cache_mb << 20,
            online_actions: args.online_actions,
        },
    )?;
    let (ingest, recovered) = Ingest::open(&engine, catalog.clone()).map_err(|e| match e {
        EventStoreError::InUse { .. } => anyhow::Error::from(InputError(e.to_string())),
        e => anyhow::Error::from(e),
    })?;
    if recovered > 0 {
        eprintln!(
            "recovered {recovered} events after the served batch: {} users have online clusters",
            engine.online().users()
        );
    }
    if engine.profile_generation().is_none() {
        eprintln!(
            "note: no profiles yet (run `pinnersage batch --data-dir {}`); every user gets the fallback",
            data_dir.display()
        );
    }
    if !(args.reload_seconds > 0.0 && args.reload_seconds.is_finite()) {
        return Err(InputError("--reload-seconds must be positive".into()).into());
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| InputError(format!("cannot listen on {}: {e}", args.addr)))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "serving {} items ({} index) on http://{addr}  (try: curl http://{addr}/healthz)",
            catalog.rows(),
            engine.index().index.kind()
        );
        let engine = Arc::new(engine);
        let ingest = Arc::new(ingest);
        let nats = match &args.nats {
            None => None,
            Some(url) => {
                let counters = Arc::new(NatsCounters::default());
                let config = NatsConfig {
                    subject: args.subject.clone(),
                    stream: args.nats_stream.clone(),
                    durable: args.nats_durable.clone(),
                    ..NatsConfig::new(url.clone())
                };
                nats::start(config, engine.clone(), ingest.clone(), counters.clone())
                    .await
                    .map_err(|e| InputError(e.to_string()))?;
                Some(counters)
            }
        };
        let state = AppState {
            engine,
            metrics: Arc::new(Metrics::default()),
            ingest: Some(ingest),
            nats,
        };
        let file = server_file(data_dir);
        std::fs::write(
            &file,
            serde_json::json!({"addr": addr.to_string(), "pid": std::process::id()}).to_string(),
        )
        .with_context(|| format!("writing {}", file.display()))?;
        let served = pinnersage_server::serve(
            listener,
            state,
            Duration::from_secs_f64(args.reload_seconds),
            pinnersage_server::shutdown_signal(),
        )
        .await;
        let _ = std::fs::remove_file(&file);
        served?;
        eprintln!("shut down");
        Ok(())
    })
}
