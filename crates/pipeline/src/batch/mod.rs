//! The daily batch: every user's events in the window -> Ward clusters -> a new profile
//! generation, published atomically.
//!
//! Users are streamed from the event store in key order and processed in chunks; each chunk is
//! clustered in parallel (rayon, one reusable [`Clusterer`] per worker) and written in one redb
//! transaction. Memory is bounded by the chunk, never by the number of users. [`memory`] is the
//! same batch over columns a host holds in memory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use std::sync::atomic::{AtomicU32, Ordering};

use pinnersage_catalog::catalog::{Catalog, CatalogError};
use pinnersage_catalog::parquet_io::ParquetIoError;
use pinnersage_core::{Clusterer, CoreError, Profile, ProfileParams};
use pinnersage_store::events::{ChunkUser, EventChunk, EventStore, EventStoreError};
use pinnersage_store::profiles::{
    GenerationMeta, MAX_VARIANTS, ProfileStore, ProfileStoreError, ProfileWriter, StoredProfile,
};
use pinnersage_store::settings::{GenerationSettings, SettingsError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::clustering::UserActions;
use crate::exchange::profile_table::ProfilesParquet;

pub mod memory;
mod request;
mod shard;

pub use request::BatchRequest;
pub use shard::Shard;

/// Users clustered per parallel chunk of a batch.
pub const DEFAULT_CHUNK_USERS: usize = 4096;

/// Most users per chunk accepted (a chunk's events are held in memory at once).
pub const MAX_CHUNK_USERS: usize = 1_000_000;

/// Settings of one batch run.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// The moment, the window and the clustering parameters.
    pub settings: GenerationSettings,
    /// Process only users with `stable_hash(user) % count == index`.
    pub shard: Option<Shard>,
    /// Users per parallel chunk.
    pub chunk_users: usize,
    /// Also write the profiles to this Parquet file, one row per cluster in the
    /// [`crate::exchange::profile_table`] schema (the one `import profiles` reads), the
    /// variants' rows too (with their `alpha`).
    pub parquet_out: Option<PathBuf>,
    /// Publish even a generation that [`BatchError::Refused`] would keep out: one computed for
    /// an older `now` than the current generation's, or with under half its users.
    pub force: bool,
    /// Also cut every user's dendrogram at these alphas: the generation's variants, served to
    /// experiment arms that compare alphas (at most [`MAX_VARIANTS`]; a repeat, or the
    /// generation's own alpha, is cut once, as the generation's).
    pub variant_alphas: Vec<f64>,
}

impl BatchConfig {
    /// A batch at `now` with every other setting at its default
    /// ([`GenerationSettings::new`]): all users, chunks of [`DEFAULT_CHUNK_USERS`], no Parquet
    /// output.
    ///
    /// ```
    /// use pinnersage_pipeline::batch::BatchConfig;
    /// use pinnersage_store::settings::DEFAULT_WINDOW_DAYS;
    /// let config = BatchConfig::new(1_700_000_000);
    /// assert_eq!(config.settings.window_days, DEFAULT_WINDOW_DAYS);
    /// assert!(config.shard.is_none() && config.parquet_out.is_none());
    /// ```
    pub fn new(now: i64) -> Self {
        Self::with(GenerationSettings::new(now))
    }

    /// A batch with `settings` and every other setting at its default.
    pub fn with(settings: GenerationSettings) -> Self {
        Self {
            settings,
            shard: None,
            chunk_users: DEFAULT_CHUNK_USERS,
            parquet_out: None,
            force: false,
            variant_alphas: Vec::new(),
        }
    }
}

/// What a batch run did. As JSON (the server's `POST /v1/admin/batch` answer), `generation` is
/// the generation's directory name only (`gen-000002`), never a server path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSummary {
    /// The published profile generation's directory.
    #[serde(with = "directory_name")]
    pub generation: PathBuf,
    /// Users with a profile.
    pub users: u64,
    /// Actions clustered (after the per-user cap).
    pub actions: u64,
    /// Events in the window whose item is not in the catalog (skipped).
    pub unknown_item_events: u64,
    /// Users with events in the window but none on a catalog item (no profile).
    pub users_without_known_items: u64,
    /// Mean number of clusters per user.
    pub clusters_mean: f64,
    /// Median number of clusters per user.
    pub clusters_p50: u32,
    /// 99th percentile of clusters per user.
    pub clusters_p99: u32,
    /// Wall time in seconds.
    pub seconds: f64,
    /// The generation's variants ([`BatchConfig::variant_alphas`]), in that order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantSummary>,
}

/// One variant of a batch's generation: its users' dendrograms cut at another alpha.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    /// The alpha it is cut at.
    pub alpha: f64,
    /// Mean number of clusters per user.
    pub clusters_mean: f64,
}

/// Batch failures.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The catalog is missing or unreadable.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The event store failed.
    #[error(transparent)]
    Events(#[from] EventStoreError),
    /// Writing profiles failed.
    #[error(transparent)]
    Profiles(#[from] ProfileStoreError),
    /// The generation's settings are out of their domains.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A setting of the run itself is out of its domain.
    #[error("{0}")]
    Config(String),
    /// The Parquet output could not be written.
    #[error(transparent)]
    Output(ParquetIoError),
    /// The new generation would replace the current one with older or far fewer profiles (a
    /// mistyped or hostile `now`): not published unless forced ([`BatchConfig::force`]; the
    /// host says how to force it).
    #[error("not published: {0}")]
    Refused(String),
    /// No events in the window.
    #[error(
        "no events between {from} and {to} (unix seconds): nothing to cluster; `now` defaults to the current time, give it for historical data"
    )]
    NoEvents {
        /// Window start.
        from: i64,
        /// Window end.
        to: i64,
    },
}

/// Chunks in flight between the store scan and the clustering (each holds `chunk_users` users):
/// one being filled, one queued, one being clustered.
const CHUNKS_IN_FLIGHT: usize = 3;

/// One user's result inside a chunk.
struct UserResult {
    user: String,
    profile: Option<StoredProfile>,
    /// The user's profile in each variant (empty when `profile` is `None`).
    variants: Vec<StoredProfile>,
    actions: u64,
    unknown: u64,
}

/// The variant alphas a batch cuts at, from those asked for: each valid, once, not the
/// generation's own `params.alpha` (dropped, as a repeat is: that cut exists already), at most
/// [`MAX_VARIANTS`]. The error names the setting. The embedded and the in-memory batch share it.
///
/// ```
/// use pinnersage_core::ProfileParams;
/// use pinnersage_pipeline::batch::variant_alphas;
/// let params = ProfileParams { alpha: 1.0, ..ProfileParams::default() };
/// assert_eq!(variant_alphas(&params, &[2.0, 1.0, 2.0, 0.5]).unwrap(), vec![2.0, 0.5]);
/// assert!(variant_alphas(&params, &[f64::NAN]).unwrap_err().contains("variant alpha"));
/// ```
pub fn variant_alphas(params: &ProfileParams, asked: &[f64]) -> Result<Vec<f64>, String> {
    let mut alphas: Vec<f64> = Vec::with_capacity(asked.len());
    for &alpha in asked {
        let variant = ProfileParams {
            alpha,
            ..params.clone()
        };
        variant
            .validate()
            .map_err(|e| format!("variant alpha: {e}"))?;
        if alpha != params.alpha && !alphas.contains(&alpha) {
            alphas.push(alpha);
        }
    }
    if alphas.len() > MAX_VARIANTS {
        return Err(format!(
            "at most {MAX_VARIANTS} variant alphas, got {}",
            alphas.len()
        ));
    }
    Ok(alphas)
}

fn variants_of(config: &BatchConfig) -> Result<Vec<f64>, BatchError> {
    variant_alphas(&config.settings.params, &config.variant_alphas).map_err(BatchError::Config)
}

/// Runs the batch over the data directory and publishes the new profile generation.
/// `progress(users_done)` is called after every chunk.
pub fn run_batch(
    data_dir: &Path,
    config: &BatchConfig,
    progress: &dyn Fn(u64),
) -> Result<BatchSummary, BatchError> {
    run_batch_on(data_dir, &EventStore::open(data_dir)?, config, progress)
}

/// [`run_batch`] over an event store the caller has open (a running server owns the store of
/// its data directory and runs batches through this).
pub fn run_batch_on(
    data_dir: &Path,
    events: &EventStore,
    config: &BatchConfig,
    progress: &dyn Fn(u64),
) -> Result<BatchSummary, BatchError> {
    let start = Instant::now();
    config.settings.validate()?;
    let config = &BatchConfig {
        variant_alphas: variants_of(config)?,
        ..config.clone()
    };
    let settings = &config.settings;
    if !(1..=MAX_CHUNK_USERS).contains(&config.chunk_users) {
        return Err(BatchError::Config(format!(
            "chunk_users must be >= 1 (at most {MAX_CHUNK_USERS}), got {}",
            config.chunk_users
        )));
    }
    let mut catalog = Catalog::open(data_dir)?;
    catalog.build_hash_index();
    let catalog = catalog;
    let mut writer = ProfileWriter::begin(data_dir)?;
    let mut parquet: Option<ProfilesParquet> = config
        .parquet_out
        .as_deref()
        .map(|out| match config.variant_alphas.is_empty() {
            true => ProfilesParquet::create(out),
            false => ProfilesParquet::with_variants(out),
        })
        .transpose()
        .map_err(BatchError::Output)?;
    let (from, now) = settings.window().into_inner();
    let mut totals = (0u64, 0u64, 0u64, 0u64); // users seen, actions, unknown, users without items
    let mut cluster_counts: Vec<u32> = Vec::new();
    let mut variant_clusters = vec![0u64; config.variant_alphas.len()];
    let engagements: Vec<AtomicU32> = (0..catalog.rows()).map(|_| AtomicU32::new(0)).collect();
    let workers = workers(&settings.params)?;
    let (mut writer, parquet) = std::thread::scope(|scope| {
        // One thread streams users from the store, the pool clusters a chunk, and one thread
        // writes the previous chunk's profiles: the three overlap.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<EventChunk, EventStoreError>>(1);
        // Clustered chunks go back to the scan to be refilled: their buffers are reused, not
        // freed and faulted in again.
        let (recycle, recycled) = std::sync::mpsc::channel::<EventChunk>();
        for _ in 0..CHUNKS_IN_FLIGHT {
            let _ = recycle.send(EventChunk::default());
        }
        scope.spawn(move || {
            let mut scan = events.scan_users(from, now);
            let keep = |user: &str| config.shard.is_none_or(|s| s.contains(user));
            for mut chunk in recycled {
                match scan.fill(&mut chunk, config.chunk_users, keep) {
                    Ok(false) => return,
                    Ok(true) => {
                        if tx.send(Ok(chunk)).is_err() {
                            return; // the consumer stopped
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        type Written = (
            Vec<(String, StoredProfile)>,
            Vec<Vec<(String, StoredProfile)>>,
        );
        let (to_writer, written) = std::sync::mpsc::sync_channel::<Written>(1);
        let writing = scope.spawn(move || -> Result<_, BatchError> {
            for (profiles, variants) in written {
                writer.write(&profiles)?;
                for (&alpha, variant) in config.variant_alphas.iter().zip(&variants) {
                    writer.write_variant(alpha, variant)?;
                }
                if let Some(out) = parquet.as_mut() {
                    out.write(&profiles).map_err(BatchError::Output)?;
                    for (&alpha, variant) in config.variant_alphas.iter().zip(&variants) {
                        out.write_variant(alpha, variant)
                            .map_err(BatchError::Output)?;
                    }
                }
            }
            Ok((writer, parquet))
        });
        let clustering = (|| -> Result<(), BatchError> {
            for chunk in rx {
                let chunk = chunk?;
                let results = cluster_chunk(&catalog, config, &chunk, &engagements, &workers)?;
                let _ = recycle.send(chunk);
                let mut profiles = Vec::with_capacity(results.len());
                let mut variants = vec![Vec::new(); config.variant_alphas.len()];
                for r in results {
                    totals.0 += 1;
                    totals.1 += r.actions;
                    totals.2 += r.unknown;
                    match r.profile {
                        Some(p) => {
                            cluster_counts.push(p.clusters.len() as u32);
                            for (v, variant) in r.variants.into_iter().enumerate() {
                                variant_clusters[v] += variant.clusters.len() as u64;
                                variants[v].push((r.user.clone(), variant));
                            }
                            profiles.push((r.user, p));
                        }
                        None => totals.3 += 1,
                    }
                }
                if to_writer.send((profiles, variants)).is_err() {
                    break; // the writer failed: its error is reported below
                }
                progress(totals.0);
            }
            Ok(())
        })();
        // A scan waiting for a chunk to refill stops here (as after an error) instead of waiting
        // forever.
        drop(recycle);
        drop(to_writer);
        let written = writing.join().expect("the profile writer thread panicked");
        clustering?;
        written
    })?;
    if totals.0 == 0 {
        return Err(BatchError::NoEvents { from, to: now });
    }
    if let Some(out) = parquet {
        out.finish().map_err(BatchError::Output)?;
    }
    if !config.force
        && let Some(current) = ProfileStore::current_meta(data_dir)?
    {
        check_replaces(&current, config, writer.users()).map_err(BatchError::Refused)?;
    }
    writer.write_popular(&most_engaged(&catalog, &engagements, POPULAR_ITEMS))?;
    let generation = writer.publish(GenerationMeta {
        settings: settings.clone(),
        shard: config.shard.map(|s| (s.index, s.count)),
        users: 0,
        variant_alphas: Vec::new(), // the writer records what it wrote
    })?;
    cluster_counts.sort_unstable();
    let pct = |q: f64| -> u32 {
        if cluster_counts.is_empty() {
            return 0;
        }
        cluster_counts[((cluster_counts.len() - 1) as f64 * q).round() as usize]
    };
    let n = cluster_counts.len() as u64;
    let mean = |clusters: u64| {
        if n == 0 {
            0.0
        } else {
            clusters as f64 / n as f64
        }
    };
    Ok(BatchSummary {
        generation,
        users: n,
        actions: totals.1,
        unknown_item_events: totals.2,
        users_without_known_items: totals.3,
        clusters_mean: mean(cluster_counts.iter().map(|&c| u64::from(c)).sum()),
        clusters_p50: pct(0.5),
        clusters_p99: pct(0.99),
        seconds: start.elapsed().as_secs_f64(),
        variants: (config.variant_alphas.iter().zip(variant_clusters))
            .map(|(&alpha, clusters)| VariantSummary {
                alpha,
                clusters_mean: mean(clusters),
            })
            .collect(),
    })
}

/// Why a batch of `config` with `users` profiles must not replace the `current` generation, if
/// it must not: it was computed for an earlier `now` (it would serve older profiles and bring
/// back online actions the current one covers), or it holds under half the users of a current
/// generation of the same shard (a window that misses most events).
///
/// ```
/// use pinnersage_pipeline::batch::{BatchConfig, check_replaces};
/// use pinnersage_store::profiles::GenerationMeta;
/// use pinnersage_store::settings::GenerationSettings;
/// let current = GenerationMeta {
///     settings: GenerationSettings::new(1_000),
///     shard: None,
///     users: 514,
///     variant_alphas: Vec::new(),
/// };
/// assert!(check_replaces(&current, &BatchConfig::new(2_000), 500).is_ok());
/// assert!(check_replaces(&current, &BatchConfig::new(0), 514).unwrap_err().contains("older"));
/// let few = check_replaces(&current, &BatchConfig::new(2_000), 1);
/// assert!(few.unwrap_err().contains("under half"));
/// ```
pub fn check_replaces(
    current: &GenerationMeta,
    config: &BatchConfig,
    users: u64,
) -> Result<(), String> {
    let (now, current_now) = (config.settings.now, current.settings.now);
    if now < current_now {
        return Err(format!(
            "the batch's now ({now}) is older than the current generation's ({current_now}): it would serve older profiles"
        ));
    }
    let shard = config.shard.map(|s| (s.index, s.count));
    if shard == current.shard && users.saturating_mul(2) < current.users {
        return Err(format!(
            "the batch has {users} users, under half of the current generation's {}",
            current.users
        ));
    }
    Ok(())
}

/// Reusable per-thread buffers for [`cluster_user`].
#[derive(Debug, Default)]
pub struct UserBuffers {
    /// The user's actions on catalog items, as last clustered.
    pub actions: UserActions,
    resolved: Vec<Option<usize>>,
    counts: Vec<u32>,
}

/// Clusters one user's events: resolves their items through the catalog (events on unknown
/// items are skipped) and clusters the rest ([`UserActions::cluster`]). Cluster members index
/// `buffers.actions`, whose `events` maps them back to the user's events. `None` if no item is
/// known.
pub fn cluster_user(
    clusterer: &mut Clusterer,
    catalog: &Catalog,
    events: ChunkUser<'_>,
    now: i64,
    buffers: &mut UserBuffers,
) -> Result<Option<Profile>, CoreError> {
    let alpha = clusterer.params().alpha;
    let profiles = cluster_user_at(clusterer, catalog, events, now, buffers, &[alpha])?;
    Ok(profiles.into_iter().next())
}

/// [`cluster_user`] cut at each of `alphas` ([`UserActions::cluster_at`]): one profile per
/// alpha, none if no item is known.
pub fn cluster_user_at(
    clusterer: &mut Clusterer,
    catalog: &Catalog,
    events: ChunkUser<'_>,
    now: i64,
    buffers: &mut UserBuffers,
    alphas: &[f64],
) -> Result<Vec<Profile>, CoreError> {
    catalog.rows_of(events.items(), &mut buffers.resolved);
    let actions = &mut buffers.actions;
    actions.clear();
    for (k, row) in buffers.resolved.iter().enumerate() {
        if let Some(row) = *row {
            actions.push(k, row, events.times[k], events.weights[k]);
        }
    }
    actions.cluster_at(clusterer, catalog, now, alphas)
}

/// Items kept in a generation's most-engaged list (the fallback for users without a profile).
pub const POPULAR_ITEMS: usize = 1_000;

/// The `n` items with the most engagements (ties: lower row first), with their counts.
fn most_engaged(catalog: &Catalog, engagements: &[AtomicU32], n: usize) -> Vec<(String, u64)> {
    let mut ranked: Vec<(u32, usize)> = engagements
        .iter()
        .enumerate()
        .map(|(row, c)| (c.load(Ordering::Relaxed), row))
        .filter(|&(c, _)| c > 0)
        .collect();
    let by_count = |a: &(u32, usize), b: &(u32, usize)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
    if ranked.len() > n {
        ranked.select_nth_unstable_by(n, by_count);
        ranked.truncate(n);
    }
    ranked.sort_unstable_by(by_count);
    ranked
        .into_iter()
        .map(|(c, row)| (catalog.id(row).to_owned(), u64::from(c)))
        .collect()
}

/// One pool thread's clusterer and buffers, kept across chunks so that the large buffers (the
/// distance matrix is `4·m²` bytes) are allocated and faulted in once per thread, not per
/// rayon split.
type Worker = std::sync::Mutex<(Clusterer, UserBuffers)>;

/// One [`Worker`] per thread of the current rayon pool.
fn workers(params: &ProfileParams) -> Result<Vec<Worker>, BatchError> {
    (0..rayon::current_num_threads())
        .map(|_| {
            let clusterer =
                Clusterer::new(params.clone()).map_err(|e| BatchError::Config(e.to_string()))?;
            Ok(std::sync::Mutex::new((clusterer, UserBuffers::default())))
        })
        .collect()
}

/// Clusters a chunk of users in parallel, each pool thread with its own [`Worker`].
fn cluster_chunk(
    catalog: &Catalog,
    config: &BatchConfig,
    chunk: &EventChunk,
    engagements: &[AtomicU32],
    workers: &[Worker],
) -> Result<Vec<UserResult>, BatchError> {
    // The generation's own alpha first, then its variants'.
    let alphas: Vec<f64> = std::iter::once(config.settings.params.alpha)
        .chain(config.variant_alphas.iter().copied())
        .collect();
    let alphas = &alphas;
    (0..chunk.len())
        .into_par_iter()
        .map(|u| {
            let events = chunk.user(u);
            let user = events.id;
            // Each pool thread takes its own worker, so the lock is never contended; a thread
            // outside the pool (none in practice) would wait for worker 0.
            let worker = &workers[rayon::current_thread_index().unwrap_or(0) % workers.len()];
            let mut worker = worker.lock().unwrap_or_else(|e| e.into_inner());
            let (clusterer, buffers) = &mut *worker;
            let now = config.settings.now;
            let mut profiles = cluster_user_at(clusterer, catalog, events, now, buffers, alphas)
                .map_err(|e| BatchError::Config(format!("user {user:?}: {e}")))?
                .into_iter();
            let profile = profiles.next();
            let (actions, counts) = (&buffers.actions, &mut buffers.counts);
            let known = actions.len();
            counts.clear();
            counts.resize(actions.items.rows.len(), 0);
            for &k in &actions.items.item_of {
                counts[k as usize] += 1;
            }
            for (&row, &count) in actions.items.rows.iter().zip(counts.iter()) {
                engagements[row].fetch_add(count, Ordering::Relaxed);
            }
            let unknown = (events.len() - known) as u64;
            let Some(profile) = profile else {
                return Ok(UserResult {
                    user: user.to_owned(),
                    profile: None,
                    variants: Vec::new(),
                    actions: 0,
                    unknown,
                });
            };
            let clustered = profile.clusters.iter().map(|c| c.size() as u64).sum();
            let lambda = config.settings.params.lambda;
            let store = |p: &Profile| actions.to_stored(p, now, lambda, |row| catalog.id(row));
            Ok(UserResult {
                user: user.to_owned(),
                profile: Some(store(&profile)),
                variants: profiles.map(|p| store(&p)).collect(),
                actions: clustered,
                unknown,
            })
        })
        .collect()
}

/// Serialises a path as its last component (a generation's name), and reads a name back.
mod directory_name {
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&path.file_name().unwrap_or_default().to_string_lossy())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        String::deserialize(d).map(PathBuf::from)
    }
}

impl pinnersage_core::error::Kind for BatchError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::Catalog(e) => e.kind(),
            Self::Events(e) => e.kind(),
            Self::Profiles(e) => e.kind(),
            Self::Output(e) => e.kind(),
            Self::Settings(_) | Self::Config(_) => BadInput,
            // Well-formed, but the store has nothing in the window, or the generation would
            // replace a newer or larger one.
            Self::NoEvents { .. } | Self::Refused(_) => Conflict,
        }
    }
}
