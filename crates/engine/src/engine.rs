//! The recommendation engine: profiles in, blended neighbours out.
//!
//! For a user with a profile: choose `medoids` clusters ([`Selection`]: sampled in proportion
//! to importance, seeded by user and day unless configured otherwise, as in the paper; the most
//! important; or all), fetch each chosen medoid's neighbours from the [`MedoidCache`] or the
//! index, blend them ([`Blend`]: round-robin by rank as in the paper, turns in proportion to
//! importance, or one ranking by importance-weighted reciprocal-rank fusion), drop
//! duplicates, the medoids and (by default) items the user already engaged
//! with. A user without a profile gets the
//! window's most engaged items, marked as a fallback.
//!
//! A user's interests are the batch clusters merged with the online clusters of their actions
//! since the batch (see [`pinnersage_core::merge`] for the rule); a user with online actions
//! only is served from those.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use pinnersage_catalog::catalog::Catalog;
use pinnersage_catalog::filter::{AttributeTable, Filter};
use pinnersage_core::ProfileParams;
use pinnersage_core::blend::{Blend, blend_shares, shares, weighted_mean};
use pinnersage_core::hash::stable_hash;
use pinnersage_core::importance::SECONDS_PER_DAY;
use pinnersage_core::merge::{Interest, merge_interests};
use pinnersage_core::profile::DEFAULT_ALPHA;
use pinnersage_core::sample::{Selection, SplitMix64, sample_seed, select};
use pinnersage_index::persist::OpenedIndex;
use pinnersage_pipeline::online::{
    DEFAULT_MAX_USERS, DEFAULT_ONLINE_ACTIONS, OnlineProfiles, OnlineUser,
};
use pinnersage_store::profiles::{ProfileStore, ProfileStoreError, ProfileView, UserSummary};
use pinnersage_store::settings::GenerationSettings;

use crate::cache::{Cached, MedoidCache, Neighbours};
use crate::excluded::{Excluded, ExclusionList};

/// Largest `k` a request may ask for.
pub const MAX_K: usize = 1_000;
/// Most medoids a request may sample.
pub const MAX_MEDOIDS: usize = 20;
/// Neighbours fetched per medoid are a power of two at least this (so the cache key varies
/// little with `k`).
const MIN_FETCH: usize = 32;
/// A cached list behind by more added rows than this is not compared with each of them.
const MAX_COMPARED: usize = 2048;
/// A cached list with more rows than this added since it last considered every row is searched
/// again; with fewer, it takes the new rows linked, in the graph, to the medoid or to its first
/// [`LINKED_FROM`] neighbours.
const MAX_LINKED: usize = 32_768;
/// The neighbours of a medoid whose graph links bring its list up to new rows (beside its own).
const LINKED_FROM: usize = 32;

/// Filters matching less than this share of the catalog are answered by an exact scan of the
/// matching items instead of a filtered graph search (docs/benchmarks.md, query-time filters).
pub const PREFILTER_BELOW: f64 = 0.1;

/// How the medoid sample is seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// Same medoids for a user all day (a page refresh is stable).
    Daily,
    /// New medoids on every request.
    PerRequest,
}

impl std::str::FromStr for Resample {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "daily" => Ok(Resample::Daily),
            "per-request" => Ok(Resample::PerRequest),
            _ => Err(format!(
                "unknown resample policy {s:?} (expected daily or per-request)"
            )),
        }
    }
}

/// How a request turns a user's interests into one list, unless it says otherwise: the
/// deployment's defaults of the `medoids`, `selection` and `blend` query parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retrieval {
    /// Interests to choose (ignored by [`Selection::All`]).
    pub medoids: usize,
    /// How they are chosen.
    pub selection: Selection,
    /// How their neighbour lists are blended.
    pub blend: Blend,
    /// Share of the results given to the user's global interest (the importance-weighted mean
    /// of all their medoids, one more query); 0: none.
    pub global: f64,
    /// The profiles' cut: `None` for the served generation's own alpha, or an alpha it holds a
    /// variant of (`batch --variant-alpha`), for arms that compare alphas.
    pub alpha: Option<f64>,
}

impl Retrieval {
    /// Checks the defaults as a request's parameters are checked; the error names the setting.
    pub fn check(&self) -> Result<(), EngineError> {
        if !(1..=MAX_MEDOIDS).contains(&self.medoids) {
            return Err(EngineError::BadRequest(format!(
                "`medoids` must be in 1..={MAX_MEDOIDS}, got {}",
                self.medoids
            )));
        }
        if !(0.0..=1.0).contains(&self.global) {
            return Err(EngineError::BadRequest(format!(
                "`global_share` must be in 0..=1, got {}",
                self.global
            )));
        }
        check_alpha(self.alpha)
    }
}

/// Checks a requested cut's alpha: finite and >= 0.
fn check_alpha(alpha: Option<f64>) -> Result<(), EngineError> {
    match alpha {
        Some(a) if !(a.is_finite() && a >= 0.0) => Err(EngineError::BadRequest(format!(
            "`alpha` must be finite and >= 0, got {a}"
        ))),
        _ => Ok(()),
    }
}

impl Default for Retrieval {
    /// The paper's: sample 3 medoids by importance, blend round-robin, no global interest.
    fn default() -> Self {
        Self {
            medoids: 3,
            selection: Selection::Sample,
            blend: Blend::RoundRobin,
            global: 0.0,
            alpha: None,
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Defaults of a request's retrieval parameters.
    pub retrieval: Retrieval,
    /// Medoid sampling policy.
    pub resample: Resample,
    /// Deployment-wide seed mixed into every sample.
    pub seed: u64,
    /// Medoid cache budget in bytes (0 disables it).
    pub cache_bytes: u64,
    /// Latest actions per user clustered online.
    pub online_actions: usize,
    /// Users whose online state is kept in memory at most (the rest are rebuilt from the
    /// event store on demand).
    pub online_users: usize,
    /// The operator's exclusion list: a file of item ids never to return (re-read when it
    /// changes, see [`crate::excluded`]).
    pub excluded: Option<PathBuf>,
    /// Alphas the served profile generation must be cut at, as its own alpha or a variant's
    /// (the experiment arms' `alpha`): a generation without one is refused when the engine
    /// opens and is not served by a reload.
    pub required_cuts: Vec<f64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            retrieval: Retrieval::default(),
            resample: Resample::Daily,
            seed: 0,
            cache_bytes: 256 << 20,
            online_actions: DEFAULT_ONLINE_ACTIONS,
            excluded: None,
            online_users: DEFAULT_MAX_USERS,
            required_cuts: Vec::new(),
        }
    }
}

/// One request's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// Results wanted.
    pub k: usize,
    /// Interests to choose (at most [`MAX_MEDOIDS`]; [`Selection::All`] takes every interest,
    /// the [`MAX_MEDOIDS`] most important of a user with more).
    pub medoids: usize,
    /// How they are chosen.
    pub selection: Selection,
    /// How their neighbour lists are blended.
    pub blend: Blend,
    /// Share of the results from the user's global interest (0 to 1; see
    /// [`Retrieval::global`]).
    pub global: f64,
    /// The profiles' cut (see [`Retrieval::alpha`]).
    pub alpha: Option<f64>,
    /// Leave out items the user engaged with.
    pub exclude_seen: bool,
    /// Unix seconds of the request (chooses the day of the sampling seed).
    pub now: i64,
    /// A value that differs from request to request (the server's clock in nanoseconds): the
    /// sampling seed under [`Resample::PerRequest`].
    pub nonce: i64,
}

/// One recommended item (ids are resolved through [`Engine::catalog`] when answering).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommended {
    /// The item's catalog row.
    pub row: u32,
    /// Similarity to the medoid that produced it (cosine, or −squared L2); for fallbacks, the
    /// item's engagement count.
    pub score: f64,
    /// Index into [`Recommendation::medoids`] of the medoid that produced it (`None` for
    /// fallbacks).
    pub medoid: Option<usize>,
}

/// A sampled medoid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledMedoid {
    /// The medoid's catalog row.
    pub row: u32,
    /// Its cluster's importance.
    pub importance: f64,
}

/// A recommendation response.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// Results, blended.
    pub items: Vec<Recommended>,
    /// The medoids sampled.
    pub medoids: Vec<SampledMedoid>,
    /// True when the user has no profile and `items` are the most engaged items.
    pub fallback: bool,
}

/// Errors while answering.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The item id is not in the catalog.
    #[error("unknown item {0:?}")]
    UnknownItem(String),
    /// The served profile generation has no profiles cut at the asked alpha.
    #[error("{0}")]
    UnknownCut(String),
    /// The profile generation lacks a cut the experiments' arms read: not served.
    #[error("{0}")]
    MissingCut(String),
    /// A bad parameter.
    #[error("{0}")]
    BadRequest(String),
    /// Storage or index failure.
    #[error("{0}")]
    Internal(String),
    /// Item changes are not taken (a read-only engine, or an index that cannot change).
    #[error("{0}")]
    ReadOnly(String),
    /// The engine was replaced by a successor while the call waited: retry on the successor.
    #[error("the catalog was replaced; retry")]
    Retired,
}

/// The interests a request takes, as indices into `importance`: `medoids` of them as
/// `selection` says (drawn with `rng`), or for [`Selection::All`] every one up to
/// [`MAX_MEDOIDS`] (the most important, when a user has more). The plan's first step: the
/// evaluation measures it too.
///
/// ```
/// use pinnersage_core::sample::{Selection, SplitMix64};
/// use pinnersage_engine::engine::{MAX_MEDOIDS, choose_interests};
/// let importance: Vec<f64> = (0..30).map(f64::from).collect();
/// let all = choose_interests(&importance, Selection::All, 3, &mut SplitMix64::new(1));
/// assert_eq!(all.len(), MAX_MEDOIDS);
/// assert!(all.iter().all(|&i| i >= 10)); // the 20 most important
/// let top = choose_interests(&importance, Selection::Top, 3, &mut SplitMix64::new(1));
/// assert_eq!(top, [29, 28, 27]);
/// ```
pub fn choose_interests(
    importance: &[f64],
    selection: Selection,
    medoids: usize,
    rng: &mut SplitMix64,
) -> Vec<usize> {
    match selection {
        Selection::All if importance.len() > MAX_MEDOIDS => {
            select(importance, Selection::Top, MAX_MEDOIDS, rng)
        }
        selection => select(importance, selection, medoids, rng),
    }
}

/// The profiles currently served: a batch generation and its fallback list.
struct Profiles {
    store: Option<Arc<ProfileStore>>,
    popular: Vec<(u32, u64)>,
}

impl Profiles {
    /// What the served generation was computed with; without one, the default parameters and
    /// a boundary of `i64::MIN` (every action is online).
    fn settings(&self) -> GenerationSettings {
        self.store.as_ref().map_or_else(
            || GenerationSettings::new(i64::MIN),
            |s| s.meta().settings.clone(),
        )
    }

    /// The generation's variant alphas (none without a generation).
    fn variant_alphas(&self) -> Vec<f64> {
        self.store
            .as_ref()
            .map_or_else(Vec::new, |s| s.meta().variant_alphas.clone())
    }

    /// The generation's merge threshold.
    fn alpha(&self) -> f64 {
        self.store
            .as_ref()
            .map_or(DEFAULT_ALPHA, |s| s.meta().settings.params.alpha)
    }

    /// The variant a request for the cut at `alpha` reads: `None` for the generation's own
    /// profiles (no alpha asked, the generation's own, or no generation at all); an error
    /// naming what is served when the generation has no such cut.
    fn variant(&self, alpha: Option<f64>) -> Result<Option<f64>, EngineError> {
        let (Some(alpha), Some(store)) = (alpha, &self.store) else {
            return Ok(None);
        };
        if alpha == self.alpha() {
            return Ok(None);
        }
        if store.meta().variant_alphas.contains(&alpha) {
            return Ok(Some(alpha));
        }
        Err(EngineError::UnknownCut(format!(
            "no profiles cut at alpha {alpha}: {}",
            self.cuts()
        )))
    }

    /// What the generation is cut at, in words (for errors).
    fn cuts(&self) -> String {
        let Some(store) = &self.store else {
            return "no profile generation is served".into();
        };
        let meta = store.meta();
        let name = store
            .dir()
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let variants = &meta.variant_alphas;
        format!(
            "profile generation {name} is cut at alpha {}{} (`pinnersage batch --variant-alpha A` adds cuts)",
            meta.settings.params.alpha,
            if variants.is_empty() {
                ", with no variants".to_owned()
            } else {
                format!(" and at {variants:?} (its variants)")
            }
        )
    }

    /// Checks that the generation holds every cut of `required` (none without a generation).
    fn check_cuts(&self, required: &[f64]) -> Result<(), EngineError> {
        for &alpha in required {
            self.variant(Some(alpha)).map_err(|_| {
                EngineError::MissingCut(format!(
                    "the experiments' arms read profiles cut at alpha {alpha}, but the {}",
                    self.cuts()
                ))
            })?;
        }
        Ok(())
    }
}

/// The cut of the profiles a request reads (see [`Retrieval::alpha`]) and the user's online
/// state cut the same way.
struct Cut {
    /// The variant read (`None`: the generation's own profiles).
    variant: Option<f64>,
    /// Its alpha.
    alpha: f64,
    /// The user's online state, clustered at `alpha`.
    online: Option<Arc<OnlineUser>>,
}

/// Where a served interest comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A batch cluster alone.
    Batch,
    /// A batch cluster with online actions folded in.
    BatchAndOnline,
    /// A new interest from online actions only.
    Online,
}

impl Source {
    /// `batch`, `batch+online` or `online`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Batch => "batch",
            Source::BatchAndOnline => "batch+online",
            Source::Online => "online",
        }
    }
}

/// One interest of a user as served: batch and online merged.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedInterest {
    /// The medoid's catalog row.
    pub medoid: u32,
    /// Merged importance.
    pub importance: f64,
    /// Merged size (actions).
    pub size: u32,
    /// Latest action time.
    pub latest_time: i64,
    /// Where it comes from.
    pub source: Source,
    /// A few member rows: online members first (most recent first), then batch members.
    pub members: Vec<u32>,
}

/// A user's merged profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedProfile {
    /// Interests, most important first.
    pub interests: Vec<ServedInterest>,
    /// The batch generation's directory name, if the user has a batch profile.
    pub generation: Option<String>,
    /// The alpha the profile is cut at (the generation's own, or a variant's).
    pub alpha: f64,
    /// Online actions kept for the user.
    pub online_actions: usize,
    /// The online boundary: actions after this time are online.
    pub online_since: i64,
}

/// Members listed per interest in a [`ServedProfile`] unless asked otherwise.
pub const MEMBERS_SHOWN: usize = 5;

/// A user's actions on a plane, for people to look at (see [`Engine::map`]).
#[derive(Debug, Clone, PartialEq)]
pub struct UserMap {
    /// `(item row, interest index in the profile, x, y)` for every item of the profile.
    pub points: Vec<(u32, usize, f64, f64)>,
    /// Share of the variance each axis shows.
    pub explained: [f64; 2],
}

/// A medoid to sample from: batch medoids stay ids until picked (no lookup for the rest).
#[derive(Debug, Clone, Copy)]
enum MedoidRef<'a> {
    Id(&'a str),
    Row(u32),
}

/// Shared, thread-safe engine state.
pub struct Engine {
    data_dir: PathBuf,
    catalog: Arc<Catalog>,
    index: OpenedIndex,
    cache: MedoidCache,
    profiles: RwLock<Arc<Profiles>>,
    online: Arc<OnlineProfiles>,
    config: EngineConfig,
    /// Held while profiles are reloaded or the engine is replaced (shared with successors).
    reload_lock: Arc<std::sync::Mutex<()>>,
    /// Replaced by a successor over another catalog or index ([`Engine::successor`]): takes
    /// no more item changes nor profile generations.
    retired: std::sync::atomic::AtomicBool,
    /// The catalog's attributes by column, for query-time filters.
    attributes: AttributeTable,
    /// Filtered searches (they bypass the medoid cache) and those the graph could not fill.
    filtered: Arc<FilteredCounters>,
    /// Items taken down by the operator.
    excluded: ExclusionList,
    /// Catalog rows `0..indexed_rows` are all in the index (or deleted): a search scans the
    /// rows after them itself (an exact index: every row added since its generation).
    pub(crate) indexed_rows: AtomicUsize,
    /// Item changes while serving: the journal and its group commit (`None`: read-only;
    /// shared with successors).
    pub(crate) changes: Option<Arc<crate::items::Changes>>,
    /// Rows deleted from the catalog that the graph may still hold.
    pub(crate) unlinked: std::sync::Mutex<Vec<u32>>,
    /// The profile generation a reload refused (it lacks a required cut): not tried again.
    refused: std::sync::Mutex<Option<PathBuf>>,
}

/// Counters of filtered searches.
#[derive(Debug, Default)]
pub struct FilteredCounters {
    /// ANN searches with a filter (the medoid cache is bypassed for them).
    pub searches: std::sync::atomic::AtomicU64,
    /// Of those, the ones answered by the exact scan because the graph search returned fewer
    /// than asked (a selective filter).
    pub exact_fallbacks: std::sync::atomic::AtomicU64,
}

impl Engine {
    /// An engine over an opened catalog and index, serving the current profile generation of
    /// `data_dir` (none yet is allowed: every user then gets the fallback, which is empty).
    pub fn new(
        data_dir: &Path,
        catalog: Arc<Catalog>,
        index: OpenedIndex,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        check_alpha(config.retrieval.alpha)?;
        config
            .required_cuts
            .iter()
            .try_for_each(|&a| check_alpha(Some(a)))?;
        let profiles = load_profiles(data_dir, &catalog)?;
        profiles.check_cuts(&config.required_cuts)?;
        let served = profiles.settings();
        let params = ProfileParams {
            max_actions: config.online_actions.max(1),
            ..served.params
        };
        let online = OnlineProfiles::new(catalog.clone(), params, served.now)
            .and_then(|o| o.with_variant_alphas(&profiles.variant_alphas()))
            .map_err(|e| EngineError::BadRequest(e.to_string()))?
            .with_max_users(config.online_users);
        Self::over(
            data_dir,
            catalog,
            index,
            config,
            Shared {
                profiles,
                online: Arc::new(online),
                reload_lock: Arc::default(),
                filtered: Arc::default(),
                changes: None,
            },
        )
    }

    /// An engine over `catalog` and `index` with the state that outlives a catalog.
    fn over(
        data_dir: &Path,
        catalog: Arc<Catalog>,
        index: OpenedIndex,
        config: EngineConfig,
        shared: Shared,
    ) -> Result<Self, EngineError> {
        let attributes =
            AttributeTable::from_json_rows((0..catalog.rows()).map(|r| catalog.attributes(r)));
        let excluded = ExclusionList::open(config.excluded.as_deref(), &catalog)
            .map_err(|e| EngineError::BadRequest(format!("the exclusion list: {e}")))?;
        // `persist::open` put the rows added since the generation into a graph; an exact index
        // holds the generation's rows only.
        let indexed_rows = if index.index.kind() == "exact" {
            catalog.base_rows()
        } else {
            catalog.rows()
        };
        ALIVE.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            indexed_rows: AtomicUsize::new(indexed_rows),
            changes: shared.changes,
            unlinked: std::sync::Mutex::new(Vec::new()),
            refused: std::sync::Mutex::new(None),
            excluded,
            attributes,
            filtered: shared.filtered,
            data_dir: data_dir.to_path_buf(),
            cache: MedoidCache::new(config.cache_bytes),
            catalog,
            index,
            profiles: RwLock::new(Arc::new(shared.profiles)),
            online: shared.online,
            config,
            reload_lock: shared.reload_lock,
            retired: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The engine that replaces this one over `catalog` and `index` (another generation, or
    /// the same one reopened with a new index; the journal's changes applied to it): the same
    /// profiles, online state, journal and settings, and a cold medoid cache. The caller
    /// holds [`Engine::hold_reloads`], serves the successor, then [`Engine::retire`]s this
    /// one; the online state follows the new catalog from then on.
    pub fn successor(
        &self,
        catalog: Arc<Catalog>,
        index: OpenedIndex,
    ) -> Result<Self, EngineError> {
        let served = self.served_profiles();
        let popular = match &served.store {
            Some(store) => resolve_popular(store, &catalog)?,
            None => Vec::new(),
        };
        Self::over(
            &self.data_dir,
            catalog,
            index,
            self.config.clone(),
            Shared {
                profiles: Profiles {
                    store: served.store.clone(),
                    popular,
                },
                online: self.online.clone(),
                reload_lock: self.reload_lock.clone(),
                filtered: self.filtered.clone(),
                changes: self.changes.clone(),
            },
        )
    }

    /// Fills this engine's medoid cache, before it is served, with fresh lists for the medoids
    /// `previous` has cached (their items found again in this catalog; ones it lacks are
    /// skipped), in parallel on the calling pool; returns how many. Without it every request
    /// after a swap would search the graph again at once.
    pub fn warm_cache_from(&self, previous: &Engine) -> usize {
        use rayon::prelude::*;
        let rows = self.catalog.rows() as u32;
        let version = self.index.version;
        let medoids = previous.cache.medoids();
        medoids
            .par_iter()
            .filter_map(|&(row, fetch)| {
                let new_row = self.catalog.row_of(previous.catalog.id(row as usize))?;
                let query = self.catalog.embedding(new_row);
                let list = self.search(query, fetch as usize, None).ok()?;
                let list = Cached {
                    list,
                    rows,
                    complete: rows,
                };
                self.cache.warm((new_row as u32, fetch, version), list);
                Some(())
            })
            .count()
    }

    /// Keeps profile reloads and replacements of this engine (and its successors) out while
    /// the guard lives.
    pub fn hold_reloads(&self) -> std::sync::MutexGuard<'_, ()> {
        self.reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the engine replaced: from now on item changes are refused with
    /// [`EngineError::Retired`] (the host retries on the successor) and profile generations are
    /// left to the successor. Requests under way finish on it.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Whether [`Engine::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The online state of `user` if its rows are of this engine's catalog (for a moment after
    /// a successor is served, the state follows the successor's catalog: a request still on
    /// this engine does without it).
    fn online_user(&self, user: &str) -> Option<Arc<OnlineUser>> {
        self.online
            .get(user)
            .filter(|u| u.catalog == self.catalog.instance())
    }

    /// The online profiles (fed by the ingestion path).
    pub fn online(&self) -> &Arc<OnlineProfiles> {
        &self.online
    }

    /// Catalog `data_dir` this engine serves.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The catalog, shared.
    pub fn catalog_arc(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    /// The index.
    pub fn index(&self) -> &OpenedIndex {
        &self.index
    }

    /// The medoid cache.
    pub fn cache(&self) -> &MedoidCache {
        &self.cache
    }

    /// The profiles being served (a new generation swaps them whole).
    fn served_profiles(&self) -> Arc<Profiles> {
        self.profiles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The profile generation being served, if any.
    pub(crate) fn profile_store(&self) -> Option<Arc<ProfileStore>> {
        self.served_profiles().store.clone()
    }

    /// Directory of the profile generation being served, if any.
    pub fn profile_generation(&self) -> Option<PathBuf> {
        let p = self.served_profiles();
        p.store.as_ref().map(|s| s.dir().to_path_buf())
    }

    /// Switches to the data directory's current profile generation if it changed. Returns
    /// whether it switched.
    ///
    /// Reloads are serialised (the reloader task and `POST /v1/admin/batch` may both call this;
    /// redb opens a file once per process) and monotonic: a generation older than the served
    /// one is never installed. A generation without a cut of [`EngineConfig::required_cuts`]
    /// is refused, once (an error), and not tried again.
    pub fn reload_profiles(&self) -> Result<bool, EngineError> {
        let _one_at_a_time = self.hold_reloads();
        if self.is_retired() {
            return Ok(false);
        }
        let current = ProfileStore::current_dir(&self.data_dir).map_err(internal)?;
        let served = self.profile_generation();
        if current.is_none() || current == served {
            return Ok(false);
        }
        let number = |dir: Option<&Path>| {
            dir.and_then(|d| {
                d.file_name()?
                    .to_str()?
                    .strip_prefix("gen-")?
                    .parse::<u64>()
                    .ok()
            })
        };
        if number(current.as_deref()) <= number(served.as_deref()) {
            return Ok(false);
        }
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if refused.is_some() && *refused == current {
            return Ok(false); // said once
        }
        let fresh = load_profiles(&self.data_dir, &self.catalog)?;
        if let Err(e) = fresh.check_cuts(&self.config.required_cuts) {
            *refused = current;
            return Err(e);
        }
        drop(refused);
        // Drop what the new generation covers and cluster with its parameters, then serve it:
        // for a moment a request may miss the actions between the two boundaries, never count
        // them twice.
        self.online
            .roll_over(&fresh.settings(), &fresh.variant_alphas())
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        *self
            .profiles
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(true)
    }

    /// The cut at `alpha` (see [`Retrieval::alpha`]) of the served `profiles` and `user`'s
    /// online state cut the same way.
    fn cut(&self, profiles: &Profiles, user: &str, alpha: Option<f64>) -> Result<Cut, EngineError> {
        check_alpha(alpha)?;
        let variant = profiles.variant(alpha)?;
        let online = match (self.online_user(user), variant) {
            (Some(o), Some(alpha)) => {
                Some(Arc::new(self.online.cut_at(&o, alpha).map_err(|e| {
                    EngineError::Internal(format!("online actions cut at alpha {alpha}: {e}"))
                })?))
            }
            (online, _) => online,
        };
        Ok(Cut {
            variant,
            alpha: variant.unwrap_or_else(|| profiles.alpha()),
            online,
        })
    }

    /// Calls `f` with `user`'s stored profile in the `variant` of the served `profiles` (none
    /// without a generation).
    fn with_stored<R>(
        profiles: &Profiles,
        variant: Option<f64>,
        user: &str,
        f: impl FnOnce(Option<ProfileView<'_>>) -> R,
    ) -> Result<R, EngineError> {
        match (&profiles.store, variant) {
            (None, _) => Ok(f(None)),
            (Some(store), None) => store.with_profile(user, f).map_err(internal),
            (Some(store), Some(alpha)) => store
                .with_variant_profile(alpha, user, f)
                .map_err(internal)?
                .ok_or_else(|| EngineError::Internal(format!("no variant cut at {alpha}"))),
        }
    }

    /// The merged batch + online profile of `user`, cut at `alpha` (see [`Retrieval::alpha`];
    /// `None`: the generation's own); `None` if they have neither.
    pub fn profile(
        &self,
        user: &str,
        members: usize,
        alpha: Option<f64>,
    ) -> Result<Option<ServedProfile>, EngineError> {
        let profiles = self.served_profiles();
        let cut = self.cut(&profiles, user, alpha)?;
        let online = cut.online;
        let build = |view: Option<ProfileView<'_>>| -> Option<ServedProfile> {
            let view = view.as_ref();
            if view.is_none_or(|v| v.clusters.is_empty()) && online.is_none() {
                return None;
            }
            let interests = self.merged(view, online.as_deref(), cut.alpha, members);
            let generation = view.and(profiles.store.as_ref()).and_then(|s| {
                s.dir()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            });
            Some(ServedProfile {
                interests,
                generation,
                alpha: cut.alpha,
                online_actions: online.as_ref().map_or(0, |o| o.actions.len()),
                online_since: self.online.since(),
            })
        };
        Self::with_stored(&profiles, cut.variant, user, build)
    }

    /// The items of `user`'s merged profile projected on their first two principal components
    /// (computed per request: O(items · dim) per power-iteration round), with the interest each
    /// belongs to, the profile cut at `alpha` as [`Engine::profile`]'s. `None` if the user has
    /// no profile.
    pub fn map(&self, user: &str, alpha: Option<f64>) -> Result<Option<UserMap>, EngineError> {
        let Some(profile) = self.profile(user, usize::MAX, alpha)? else {
            return Ok(None);
        };
        let mut rows = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (k, interest) in profile.interests.iter().enumerate() {
            for &row in &interest.members {
                if seen.insert(row) {
                    rows.push((row, k));
                }
            }
        }
        let mut x = Vec::with_capacity(rows.len() * self.catalog.dim());
        for &(row, _) in &rows {
            x.extend_from_slice(self.catalog.embedding(row as usize));
        }
        let x = pinnersage_core::Embeddings::new(&x, self.catalog.dim())
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let projection = pinnersage_core::projection::project_2d(x);
        Ok(Some(UserMap {
            points: rows
                .iter()
                .zip(&projection.points)
                .map(|(&(row, k), p)| (row, k, p[0], p[1]))
                .collect(),
            explained: projection.explained,
        }))
    }

    /// The users with a batch profile whose id starts with `prefix` (at most `limit`).
    pub fn users(&self, prefix: &str, limit: usize) -> Result<Vec<UserSummary>, EngineError> {
        let profiles = self.served_profiles();
        match &profiles.store {
            None => Ok(Vec::new()),
            Some(store) => store.users(prefix, limit).map_err(internal),
        }
    }

    /// Batch clusters (from `view`) merged with the online clusters of `online`.
    fn merged(
        &self,
        view: Option<&ProfileView<'_>>,
        online: Option<&OnlineUser>,
        alpha: f64,
        members_shown: usize,
    ) -> Vec<ServedInterest> {
        // Batch clusters whose medoid left the catalog (re-imported since) are skipped.
        let batch: Vec<(usize, u32)> = view.map_or_else(Vec::new, |v| {
            v.clusters
                .iter()
                .enumerate()
                .filter_map(|(i, c)| self.catalog.last_row_of(c.medoid).map(|r| (i, r as u32)))
                .collect()
        });
        let empty = Vec::new();
        let online_clusters = online.map_or(&empty, |o| &o.clusters);
        let interest = |row: u32, importance: f64, size: u32| Interest {
            medoid: self.catalog.embedding(row as usize),
            importance,
            size,
        };
        let batch_interests: Vec<Interest<'_>> = batch
            .iter()
            .map(|&(i, row)| {
                let c = &view.expect("batch clusters come from a view").clusters[i];
                interest(row, c.importance, c.size)
            })
            .collect();
        let online_interests: Vec<Interest<'_>> = online_clusters
            .iter()
            .map(|c| interest(self.current(c.medoid), c.importance, c.members.len() as u32))
            .collect();
        // The items of each batch cluster, found in one pass (not one pass per interest).
        let mut items_of: Vec<Vec<&str>> = vec![Vec::new(); view.map_or(0, |v| v.clusters.len())];
        for &(item, cluster) in view.map_or(&[][..], |v| &v.items[..]) {
            if let Some(list) = items_of.get_mut(cluster as usize) {
                list.push(item);
            }
        }
        merge_interests(&batch_interests, &online_interests, alpha)
            .into_iter()
            .map(|m| {
                let mut members: Vec<u32> = m
                    .online
                    .iter()
                    .flat_map(|&j| online_clusters[j].members.iter().copied())
                    .take(members_shown)
                    .collect();
                let mut latest_time = m
                    .online
                    .iter()
                    .map(|&j| online_clusters[j].latest_time)
                    .max()
                    .unwrap_or(i64::MIN);
                let (medoid, source) = match m.batch {
                    Some(b) => {
                        let (i, row) = batch[b];
                        let v = view.expect("batch clusters come from a view");
                        latest_time = latest_time.max(v.clusters[i].latest_time);
                        for item in &items_of[i] {
                            if members.len() >= members_shown {
                                break;
                            }
                            if let Some(r) = self.catalog.last_row_of(item) {
                                members.push(r as u32);
                            }
                        }
                        let source = if m.has_online() {
                            Source::BatchAndOnline
                        } else {
                            Source::Batch
                        };
                        (row, source)
                    }
                    None => (
                        self.current(online_clusters[m.online[0]].medoid),
                        Source::Online,
                    ),
                };
                ServedInterest {
                    medoid,
                    importance: m.importance,
                    size: m.size,
                    latest_time,
                    source,
                    members,
                }
            })
            .collect()
    }

    /// Recommendations for `user`.
    pub fn recommend(&self, user: &str, req: Request) -> Result<Recommendation, EngineError> {
        self.recommend_filtered(user, req, None)
    }

    /// Parses query-time filter conditions against the catalog's attributes (see
    /// [`pinnersage_catalog::filter`]); `None` when there are none.
    pub fn filter<S: AsRef<str>>(&self, conditions: &[S]) -> Result<Option<Filter>, EngineError> {
        if conditions.is_empty() {
            return Ok(None);
        }
        Filter::parse(conditions, &self.attributes)
            .map(Some)
            .map_err(|e| EngineError::BadRequest(e.to_string()))
    }

    /// The operator's exclusion list as it is now.
    pub fn excluded(&self) -> Arc<Excluded> {
        self.excluded.current()
    }

    /// Re-reads the exclusion list if its file changed; the new list when it did.
    pub fn reload_excluded(&self) -> Result<Option<Arc<Excluded>>, EngineError> {
        self.excluded
            .reload(&self.catalog)
            .map_err(|e| EngineError::Internal(format!("the exclusion list: {e}")))
    }

    /// The catalog's attributes by column (what filters test).
    pub fn attributes(&self) -> &AttributeTable {
        &self.attributes
    }

    /// The deployment's defaults of a request's retrieval parameters.
    pub fn retrieval(&self) -> Retrieval {
        self.config.retrieval
    }

    /// Counters of filtered searches.
    pub fn filtered_counters(&self) -> &FilteredCounters {
        &self.filtered
    }

    /// Recommendations for `user` among the items that match `filter`: the filter is applied
    /// inside each medoid's ANN search, so a selective filter still yields `k` items when the
    /// catalog has them.
    pub fn recommend_filtered(
        &self,
        user: &str,
        req: Request,
        filter: Option<&Filter>,
    ) -> Result<Recommendation, EngineError> {
        check_bounds(req.k, req.medoids)?;
        if !(0.0..=1.0).contains(&req.global) {
            return Err(EngineError::BadRequest(format!(
                "global must be in 0..=1, got {}",
                req.global
            )));
        }
        let profiles = self.served_profiles();
        let Cut {
            variant,
            alpha,
            online,
        } = self.cut(&profiles, user, req.alpha)?;
        let serve = |view: Option<ProfileView<'_>>| {
            let view = view.filter(|v| !v.clusters.is_empty());
            let medoids: Vec<(MedoidRef<'_>, f64)> = match (&view, &online) {
                (None, None) => return Ok(self.fallback(&profiles, req.k, filter)),
                // Batch only: medoids stay ids, only the sampled ones are looked up.
                (Some(v), None) => v
                    .clusters
                    .iter()
                    .map(|c| (MedoidRef::Id(c.medoid), c.importance))
                    .collect(),
                (_, Some(o)) => self
                    .merged(view.as_ref(), Some(o), alpha, 0)
                    .iter()
                    .map(|i| (MedoidRef::Row(i.medoid), i.importance))
                    .collect(),
            };
            let seen = |hashes: &mut SeenSet| {
                if let Some(v) = &view {
                    hashes.extend(v.items.iter().map(|(item, _)| stable_hash(item.as_bytes())));
                }
                if let Some(o) = &online {
                    hashes.extend(
                        o.actions
                            .iter()
                            .map(|a| stable_hash(self.catalog.id(a.row as usize).as_bytes())),
                    );
                }
            };
            let items = (req.global > 0.0)
                .then(|| self.weighted_items(view.as_ref(), online.as_deref()))
                .flatten();
            self.personalised(user, &medoids, items.as_deref(), seen, req, filter)
        };
        Self::with_stored(&profiles, variant, user, serve)?
    }

    /// The user's items as catalog rows with their importance, over which their global interest
    /// is the decay average: the batch's items weighted by their stored importance, and each
    /// online cluster's members sharing its importance. `None` when the generation predates
    /// item importance (the global interest is then the medoids' weighted mean).
    fn weighted_items(
        &self,
        view: Option<&ProfileView<'_>>,
        online: Option<&OnlineUser>,
    ) -> Option<Vec<(u32, f64)>> {
        let mut items = Vec::new();
        if let Some(v) = view {
            if !v.has_item_importance() {
                return None;
            }
            items.extend(v.items.iter().enumerate().filter_map(|(i, &(item, _))| {
                let row = self.catalog.last_row_of(item)? as u32;
                Some((row, f64::from(v.item_importance(i)?)))
            }));
        }
        for c in online.map_or(&[][..], |o| &o.clusters[..]) {
            let each = c.importance / c.members.len().max(1) as f64;
            items.extend(c.members.iter().map(|&row| (row, each)));
        }
        Some(items)
    }

    /// Chooses medoids as `req.selection` says and blends their neighbours as `req.blend` says,
    /// with the global interest (when `req.global > 0`) the weighted mean of `items` (see
    /// [`Engine::weighted_items`]) or, without them, of the medoids; `seen` adds the id hashes
    /// of the user's engaged items (called only when they are to be excluded).
    fn personalised(
        &self,
        user: &str,
        interests: &[(MedoidRef<'_>, f64)],
        items: Option<&[(u32, f64)]>,
        seen: impl FnOnce(&mut SeenSet),
        req: Request,
        filter: Option<&Filter>,
    ) -> Result<Recommendation, EngineError> {
        let day = match self.config.resample {
            Resample::Daily => req.now.div_euclid(SECONDS_PER_DAY as i64),
            Resample::PerRequest => req.nonce,
        };
        let seed = sample_seed(user.as_bytes(), day, self.config.seed);
        let weights: Vec<f64> = interests
            .iter()
            .map(|&(_, importance)| importance)
            .collect();
        let mut rng = SplitMix64::new(seed);
        let picked = choose_interests(&weights, req.selection, req.medoids, &mut rng);
        // The largest share of the k results one medoid's list may have to supply.
        let picked_weights: Vec<f64> = picked.iter().map(|&c| weights[c]).collect();
        let share = shares(req.blend, &picked_weights, 0.0)
            .into_iter()
            .fold(0.0, f64::max);
        // A score-merged list may draw every result from one interest.
        let share = if req.blend == Blend::Score {
            1.0
        } else {
            share
        };
        let per_medoid = ((req.k as f64 * share).ceil() as usize).clamp(1, req.k);
        let fetch = (per_medoid * 2).next_power_of_two().max(MIN_FETCH);
        let mut medoids = Vec::with_capacity(picked.len());
        for &c in &picked {
            let (medoid, importance) = interests[c];
            // A medoid missing from the catalog (re-imported since the batch) is skipped.
            let Some(row) = self.medoid_row(medoid) else {
                continue;
            };
            medoids.push(SampledMedoid { row, importance });
        }
        // The global interest: the decay average of the user's items or, for an older
        // generation, every medoid (chosen or not) weighted by importance; its results name no
        // medoid.
        let importance: Vec<f64> = medoids.iter().map(|m| m.importance).collect();
        let global_query = (req.global > 0.0 && !medoids.is_empty()).then(|| {
            let embedding = |row: u32| self.catalog.embedding(row as usize);
            let query = match items {
                Some(items) if !items.is_empty() => weighted_mean(
                    items.iter().map(|&(row, w)| (embedding(row), w)),
                    self.catalog.dim(),
                ),
                _ => weighted_mean(
                    interests.iter().filter_map(|&(medoid, importance)| {
                        Some((embedding(self.medoid_row(medoid)?), importance))
                    }),
                    self.catalog.dim(),
                ),
            };
            let wanted = ((req.k as f64 * req.global).ceil() as usize).clamp(1, req.k);
            (query, (wanted * 2).next_power_of_two().max(MIN_FETCH))
        });
        let global = if global_query.is_some() {
            req.global
        } else {
            0.0
        };
        // Seen items are compared by id hash: no catalog lookup per seen item.
        let mut seen_hashes = SeenSet::default();
        if req.exclude_seen {
            seen(&mut seen_hashes);
        }
        let seen = seen_hashes;
        let excluded = self.excluded.current();
        let skip = |row: u32| {
            self.hidden(&excluded, row)
                || medoids.iter().any(|m| m.row == row)
                || (!seen.is_empty()
                    && seen.contains(&stable_hash(self.catalog.id(row as usize).as_bytes())))
        };
        let shares = shares(req.blend, &importance, global);
        // Lists twice as deep while the skipped items (seen, excluded, the medoids) leave the
        // blend short of k and a list was cut at its depth: k results whenever k exist.
        let mut scale = 1;
        let blended = loop {
            let mut lists: Vec<Neighbours> = Vec::with_capacity(medoids.len() + 1);
            let mut cut = false;
            for m in &medoids {
                let depth = self.depth(fetch, scale);
                let list = self.neighbours_matching(m.row, depth, filter)?;
                cut |= self.was_cut(&list, depth);
                lists.push(list);
            }
            if let Some((query, fetch)) = &global_query {
                let depth = self.depth(*fetch, scale);
                let list = self.search(query, depth, filter)?;
                cut |= self.was_cut(&list, depth);
                lists.push(list);
            }
            let refs: Vec<&[(u32, f32)]> = lists.iter().map(|l| &l[..]).collect();
            let blended = blend_shares(req.blend, &refs, &shares, req.k, skip);
            if blended.len() >= req.k || !cut {
                break blended;
            }
            scale *= 2;
        };
        let items = blended
            .into_iter()
            .map(|b| Recommended {
                row: b.row,
                score: f64::from(b.score),
                medoid: (b.source < medoids.len()).then_some(b.source),
            })
            .collect();
        Ok(Recommendation {
            items,
            medoids,
            fallback: false,
        })
    }

    /// Items most similar to `item` (itself excluded).
    pub fn similar(&self, item: &str, k: usize) -> Result<Vec<Recommended>, EngineError> {
        self.similar_filtered(item, k, None)
    }

    /// Items most similar to `item` among those matching `filter` (itself excluded).
    pub fn similar_filtered(
        &self,
        item: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Recommended>, EngineError> {
        check_bounds(k, 1)?;
        let row = self
            .catalog
            .row_of(item)
            .ok_or_else(|| EngineError::UnknownItem(item.to_owned()))? as u32;
        let fetch = (k + 1).next_power_of_two().max(MIN_FETCH);
        let excluded = self.excluded.current();
        // Twice as deep while the item itself and excluded items leave fewer than k.
        let mut scale = 1;
        loop {
            let depth = self.depth(fetch, scale);
            let list = self.neighbours_matching(row, depth, filter)?;
            let hits: Vec<Recommended> = list
                .iter()
                .filter(|&&(r, _)| r != row && !self.hidden(&excluded, r))
                .take(k)
                .map(|&(r, score)| Recommended {
                    row: r,
                    score: f64::from(score),
                    medoid: None,
                })
                .collect();
            if hits.len() >= k || !self.was_cut(&list, depth) {
                return Ok(hits);
            }
            scale *= 2;
        }
    }

    /// `fetch` neighbours `scale` times over, at most the catalog.
    fn depth(&self, fetch: usize, scale: usize) -> usize {
        fetch.saturating_mul(scale).min(self.catalog.rows()).max(1)
    }

    /// Whether a search for `depth` neighbours that returned `list` may have left matching
    /// items out (it returned all it was asked for, and the catalog has more).
    fn was_cut(&self, list: &[(u32, f32)], depth: usize) -> bool {
        list.len() >= depth && depth < self.catalog.rows()
    }

    /// Neighbours of catalog row `row` that match `filter`: through the cache without one,
    /// else a filtered search inside the index (the cache holds unfiltered lists only). When the
    /// graph search returns fewer than `fetch` items (a filter matching few), the exact scan
    /// over the same rows answers, so `fetch` matching items come back whenever they exist.
    fn neighbours_matching(
        &self,
        row: u32,
        fetch: usize,
        filter: Option<&Filter>,
    ) -> Result<Neighbours, EngineError> {
        match filter {
            None => self.neighbours(row, fetch),
            Some(_) => self.search(self.catalog.embedding(row as usize), fetch, filter),
        }
    }

    /// The `fetch` nearest items to `query` that match `filter`, without the cache: a plain
    /// index search without one, else a filtered search inside the index, or the exact scan of
    /// the matching items (see [`Engine::neighbours_matching`]).
    fn search(
        &self,
        query: &[f32],
        fetch: usize,
        filter: Option<&Filter>,
    ) -> Result<Neighbours, EngineError> {
        use std::sync::atomic::Ordering::Relaxed;
        let failed = |e: pinnersage_index::IndexError| EngineError::Internal(e.to_string());
        let metric = self.index.index.metric();
        let scored = |hits: Vec<pinnersage_index::Neighbor>| -> Vec<(u32, f32)> {
            hits.into_iter()
                .map(|n| (n.row, metric.score(n.distance)))
                .collect()
        };
        let indexed = self.indexed_rows.load(Ordering::Acquire);
        let Some(filter) = filter else {
            let hits = self.index.index.search(query, fetch).map_err(failed)?;
            return Ok(self
                .with_rows(query, scored(hits), self.added_from(indexed), fetch, None)
                .into());
        };
        self.filtered.searches.fetch_add(1, Relaxed);
        let excluded = self.excluded.current();
        let keep =
            |r: u32| !self.hidden(&excluded, r) && filter.matches(&self.attributes, r as usize);
        // A graph search wanders far to collect items a selective filter rarely lets through:
        // below PREFILTER_BELOW of the catalog, the exact scan of the matching items is faster.
        let graph = self.index.index.kind() != "exact"
            && filter.selectivity(&self.attributes) >= PREFILTER_BELOW;
        let mut hits = if graph {
            self.index
                .index
                .search_filtered(query, fetch, &keep)
                .map_err(failed)?
        } else {
            Vec::new()
        };
        // The exact scan covers the generation's rows: the rows added since are compared here.
        let mut covered = indexed;
        if hits.len() < fetch {
            if self.index.index.kind() != "exact" {
                self.filtered.exact_fallbacks.fetch_add(1, Relaxed);
            }
            hits = self
                .index
                .exact
                .search_filtered(query, fetch, &keep)
                .map_err(failed)?;
            covered = self.catalog.base_rows();
        }
        Ok(self
            .with_rows(
                query,
                scored(hits),
                self.added_from(covered),
                fetch,
                Some(&keep),
            )
            .into())
    }

    /// Neighbours of catalog row `row`, through the cache: a cached list is brought up to the
    /// rows added since by comparing them with the medoid when they are few, else through the
    /// graph's links for a while ([`Engine::with_linked`]), else by a search.
    fn neighbours(&self, row: u32, fetch: usize) -> Result<Neighbours, EngineError> {
        let rows = self.catalog.rows();
        let query = self.catalog.embedding(row as usize);
        let key = (row, fetch as u32, self.index.version);
        self.cache.get_or_refresh(key, rows as u32, |stale| {
            let (list, complete) = match stale {
                Some(stale) if rows - stale.rows as usize <= MAX_COMPARED => {
                    // Every new row considered: the list is as complete as it was.
                    let complete = if stale.complete == stale.rows {
                        rows as u32
                    } else {
                        stale.complete
                    };
                    let added = self.added_from(stale.rows as usize);
                    let list = self.with_rows(query, stale.list.to_vec(), added, fetch, None);
                    (list, complete)
                }
                Some(stale) if rows - stale.complete as usize <= MAX_LINKED => {
                    match self.with_linked(row, query, &stale, fetch) {
                        Some(list) => (list, stale.complete),
                        None => (self.search(query, fetch, None)?.to_vec(), rows as u32),
                    }
                }
                _ => (self.search(query, fetch, None)?.to_vec(), rows as u32),
            };
            Ok(Cached {
                list: list.into(),
                rows: rows as u32,
                complete,
            })
        })
    }

    /// `stale.list` of the medoid at `row` brought up to the rows added since through the
    /// graph: the new rows linked to the medoid or to its first [`LINKED_FROM`] neighbours
    /// (where a new row near the medoid is, as a rule, linked when inserted) are compared with
    /// it, and the rows not in the graph yet one by one. `None` when the index is no graph or
    /// does not hold the medoid.
    fn with_linked(
        &self,
        row: u32,
        query: &[f32],
        stale: &Cached,
        fetch: usize,
    ) -> Option<Vec<(u32, f32)>> {
        let (from, indexed) = (
            stale.rows as usize,
            self.indexed_rows.load(Ordering::Acquire),
        );
        let graph = &self.index.index;
        let mut linked = graph.graph_links(row)?;
        for &(near, _) in stale.list.iter().take(LINKED_FROM) {
            linked.extend(graph.graph_links(near).unwrap_or_default());
        }
        linked.retain(|&r| (from..indexed).contains(&(r as usize)));
        linked.sort_unstable();
        linked.dedup();
        let rows =
            (linked.into_iter().map(|r| r as usize)).chain(self.added_from(indexed.max(from)));
        Some(self.with_rows(query, stale.list.to_vec(), rows, fetch, None))
    }

    /// The rows added to the catalog since the generation, from row `from` on.
    fn added_from(&self, from: usize) -> std::ops::Range<usize> {
        from.max(self.catalog.base_rows())..self.catalog.rows()
    }

    /// `list` (best first) with those of the added catalog rows `rows` that beat its last item
    /// or fill it to `fetch`, compared with `query` one by one; deleted rows, rows failing `keep`
    /// and rows already listed are left out.
    fn with_rows(
        &self,
        query: &[f32],
        mut list: Vec<(u32, f32)>,
        rows: impl IntoIterator<Item = usize>,
        fetch: usize,
        keep: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Vec<(u32, f32)> {
        let mut rows = rows.into_iter().peekable();
        if rows.peek().is_none() {
            return list;
        }
        let metric = self.index.index.metric();
        let query_norm = pinnersage_core::scan::dot(query, query).sqrt();
        // Most rows do not make the list: the score decides first, the rest is checked after.
        for row in rows {
            if self.catalog.is_deleted(row) {
                continue;
            }
            let (x, norm) = self.catalog.added_vector(row).expect("an added row");
            let score = metric.score_of(pinnersage_core::scan::dot(query, x), query_norm, norm);
            let r = row as u32;
            if (list.len() < fetch || list.last().is_some_and(|&(_, last)| score > last))
                && !list.iter().any(|&(l, _)| l == r)
                && keep.is_none_or(|k| k(r))
            {
                let at = list.partition_point(|&(_, s)| s >= score);
                list.insert(at, (r, score));
                list.truncate(fetch);
            }
        }
        list
    }

    /// The catalog row of a medoid: its item's current row (a replaced item's new vector; a
    /// deleted item's last row, still a query); `None` for an id the catalog never had.
    fn medoid_row(&self, medoid: MedoidRef<'_>) -> Option<u32> {
        match medoid {
            MedoidRef::Row(row) => Some(self.current(row)),
            MedoidRef::Id(id) => self.catalog.last_row_of(id).map(|r| r as u32),
        }
    }

    /// The row holding the item of `row` now (see [`Catalog::current_row`]).
    fn current(&self, row: u32) -> u32 {
        self.catalog.current_row(row as usize) as u32
    }

    /// Whether `row` must not be served: excluded by the operator, or deleted from the catalog.
    fn hidden(&self, excluded: &Excluded, row: u32) -> bool {
        self.catalog.is_deleted(row as usize)
            || (!excluded.is_empty() && excluded.contains(self.catalog.id(row as usize)))
    }

    /// The window's most engaged items that the operator has not excluded and that match
    /// `filter`.
    fn fallback(&self, profiles: &Profiles, k: usize, filter: Option<&Filter>) -> Recommendation {
        let excluded = self.excluded.current();
        Recommendation {
            items: profiles
                .popular
                .iter()
                .filter(|&&(row, _)| {
                    !self.hidden(&excluded, row)
                        && filter.is_none_or(|f| f.matches(&self.attributes, row as usize))
                })
                .take(k)
                .map(|&(row, count)| Recommended {
                    row,
                    score: count as f64,
                    medoid: None,
                })
                .collect(),
            medoids: Vec::new(),
            fallback: true,
        }
    }
}

/// Id hashes of the items a user engaged with.
type SeenSet = HashSet<u64, BuildIdentity>;

/// Hashes `u64` keys that are already well mixed (`stable_hash` outputs) by passing them through.
#[derive(Default, Clone, Copy)]
struct BuildIdentity;

#[derive(Default)]
struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl std::hash::BuildHasher for BuildIdentity {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

fn internal(e: ProfileStoreError) -> EngineError {
    EngineError::Internal(e.to_string())
}

fn check_bounds(k: usize, medoids: usize) -> Result<(), EngineError> {
    if !(1..=MAX_K).contains(&k) {
        return Err(EngineError::BadRequest(format!(
            "k must be in 1..={MAX_K}, got {k}"
        )));
    }
    if !(1..=MAX_MEDOIDS).contains(&medoids) {
        return Err(EngineError::BadRequest(format!(
            "medoids must be in 1..={MAX_MEDOIDS}, got {medoids}"
        )));
    }
    Ok(())
}

fn load_profiles(data_dir: &Path, catalog: &Catalog) -> Result<Profiles, EngineError> {
    let store = match ProfileStore::open(data_dir) {
        Ok(s) => s,
        Err(ProfileStoreError::Missing(_)) => {
            return Ok(Profiles {
                store: None,
                popular: Vec::new(),
            });
        }
        Err(e) => return Err(internal(e)),
    };
    let popular = resolve_popular(&store, catalog)?;
    Ok(Profiles {
        store: Some(Arc::new(store)),
        popular,
    })
}

/// The window's most engaged items of `store` that `catalog` has, with their counts.
fn resolve_popular(
    store: &ProfileStore,
    catalog: &Catalog,
) -> Result<Vec<(u32, u64)>, EngineError> {
    Ok(store
        .popular()
        .map_err(internal)?
        .into_iter()
        .filter_map(|(id, count)| catalog.row_of(&id).map(|r| (r as u32, count)))
        .collect())
}

/// Engines in memory (see [`engines_in_memory`]).
static ALIVE: AtomicUsize = AtomicUsize::new(0);

/// Engines of this process in memory: one while serving, two while a new generation is
/// swapped in and requests finish on the old one. More for longer means something holds a
/// replaced engine (and its index) in memory.
pub fn engines_in_memory() -> usize {
    ALIVE.load(Ordering::Relaxed)
}

impl Drop for Engine {
    fn drop(&mut self) {
        ALIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an engine hands to its successor.
struct Shared {
    profiles: Profiles,
    online: Arc<OnlineProfiles>,
    reload_lock: Arc<std::sync::Mutex<()>>,
    filtered: Arc<FilteredCounters>,
    changes: Option<Arc<crate::items::Changes>>,
}

impl pinnersage_core::error::Kind for EngineError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::UnknownItem(_) | Self::UnknownCut(_) => NotFound,
            Self::MissingCut(_) => Conflict,
            Self::BadRequest(_) => BadInput,
            Self::Internal(_) => Internal,
            Self::ReadOnly(_) => Conflict,
            Self::Retired => Unavailable,
        }
    }
}
