//! The recommendation engine behind the HTTP API: profiles in, blended neighbours out.
//!
//! For a user with a profile: sample `medoids` clusters in proportion to importance (seeded by
//! user and day unless configured otherwise), fetch each sampled medoid's neighbours from the
//! [`MedoidCache`] or the index, blend them round-robin by rank, drop duplicates, the medoids
//! and (by default) items the user already engaged with. A user without a profile gets the
//! window's most engaged items, marked as a fallback.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use pinnersage_catalog::catalog::Catalog;
use pinnersage_core::blend::blend_round_robin;
use pinnersage_core::hash::stable_hash;
use pinnersage_core::importance::SECONDS_PER_DAY;
use pinnersage_core::sample::{SplitMix64, sample_seed, sample_weighted};
use pinnersage_index::persist::OpenedIndex;
use pinnersage_store::profiles::{ProfileStore, ProfileStoreError, ProfileView, StoredProfile};

use crate::cache::{MedoidCache, Neighbours};

/// Largest `k` a request may ask for.
pub const MAX_K: usize = 1_000;
/// Most medoids a request may sample.
pub const MAX_MEDOIDS: usize = 20;
/// Neighbours fetched per medoid are a power of two at least this (so the cache key varies
/// little with `k`).
const MIN_FETCH: usize = 32;

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

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Medoid sampling policy.
    pub resample: Resample,
    /// Deployment-wide seed mixed into every sample.
    pub seed: u64,
    /// Medoid cache budget in bytes (0 disables it).
    pub cache_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            resample: Resample::Daily,
            seed: 0,
            cache_bytes: 256 << 20,
        }
    }
}

/// One request's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// Results wanted.
    pub k: usize,
    /// Medoids to sample.
    pub medoids: usize,
    /// Leave out items the user engaged with.
    pub exclude_seen: bool,
    /// Unix seconds of the request (chooses the day of the sampling seed).
    pub now: i64,
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
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The item id is not in the catalog.
    #[error("unknown item {0:?}")]
    UnknownItem(String),
    /// A bad parameter.
    #[error("{0}")]
    BadRequest(String),
    /// Storage or index failure.
    #[error("{0}")]
    Internal(String),
}

/// The profiles currently served: a batch generation and its fallback list.
struct Profiles {
    store: Option<ProfileStore>,
    popular: Vec<(u32, u64)>,
}

/// Shared, thread-safe engine state.
pub struct Engine {
    data_dir: PathBuf,
    catalog: Arc<Catalog>,
    index: OpenedIndex,
    cache: MedoidCache,
    profiles: RwLock<Arc<Profiles>>,
    config: EngineConfig,
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
        let profiles = load_profiles(data_dir, &catalog)?;
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            cache: MedoidCache::new(config.cache_bytes),
            catalog,
            index,
            profiles: RwLock::new(Arc::new(profiles)),
            config,
        })
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The index.
    pub fn index(&self) -> &OpenedIndex {
        &self.index
    }

    /// The medoid cache.
    pub fn cache(&self) -> &MedoidCache {
        &self.cache
    }

    /// Directory of the profile generation being served, if any.
    pub fn profile_generation(&self) -> Option<PathBuf> {
        let p = self.profiles.read().expect("not poisoned").clone();
        p.store.as_ref().map(|s| s.dir().to_path_buf())
    }

    /// Switches to the data directory's current profile generation if it changed. Returns
    /// whether it switched.
    pub fn reload_profiles(&self) -> Result<bool, EngineError> {
        let current = ProfileStore::current_dir(&self.data_dir).map_err(internal)?;
        if current.is_none() || current == self.profile_generation() {
            return Ok(false);
        }
        let fresh = load_profiles(&self.data_dir, &self.catalog)?;
        *self.profiles.write().expect("not poisoned") = Arc::new(fresh);
        Ok(true)
    }

    /// The stored profile of `user`, if any.
    pub fn profile(&self, user: &str) -> Result<Option<StoredProfile>, EngineError> {
        let p = self.profiles.read().expect("not poisoned").clone();
        match &p.store {
            None => Ok(None),
            Some(store) => store.get(user).map_err(internal),
        }
    }

    /// Recommendations for `user`.
    pub fn recommend(&self, user: &str, req: Request) -> Result<Recommendation, EngineError> {
        check_bounds(req.k, req.medoids)?;
        let profiles = self.profiles.read().expect("not poisoned").clone();
        let Some(store) = &profiles.store else {
            return Ok(self.fallback(&profiles, req.k));
        };
        store
            .with_profile(user, |view| match view {
                Some(view) if !view.clusters.is_empty() => self.personalised(user, &view, req),
                _ => Ok(self.fallback(&profiles, req.k)),
            })
            .map_err(internal)?
    }

    fn personalised(
        &self,
        user: &str,
        profile: &ProfileView<'_>,
        req: Request,
    ) -> Result<Recommendation, EngineError> {
        let day = match self.config.resample {
            Resample::Daily => req.now.div_euclid(SECONDS_PER_DAY as i64),
            Resample::PerRequest => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64),
        };
        let seed = sample_seed(user.as_bytes(), day, self.config.seed);
        let weights: Vec<f64> = profile.clusters.iter().map(|c| c.importance).collect();
        let picked = sample_weighted(&weights, req.medoids, &mut SplitMix64::new(seed));
        let per_medoid = req.k.div_ceil(picked.len().max(1));
        let fetch = (per_medoid * 2).next_power_of_two().max(MIN_FETCH);
        let mut lists: Vec<Neighbours> = Vec::with_capacity(picked.len());
        let mut medoids = Vec::with_capacity(picked.len());
        for &c in &picked {
            let cluster = &profile.clusters[c];
            // A medoid missing from the catalog (re-imported since the batch) is skipped.
            let Some(row) = self.catalog.row_of(cluster.medoid) else {
                continue;
            };
            lists.push(self.neighbours(row as u32, fetch)?);
            medoids.push(SampledMedoid {
                row: row as u32,
                importance: cluster.importance,
            });
        }
        // Seen items are compared by id hash: no catalog lookup per seen item.
        let seen: HashSet<u64, BuildIdentity> = if req.exclude_seen {
            profile
                .items
                .iter()
                .map(|(item, _)| stable_hash(item.as_bytes()))
                .collect()
        } else {
            HashSet::default()
        };
        let refs: Vec<&[(u32, f32)]> = lists.iter().map(|l| &l[..]).collect();
        let blended = blend_round_robin(&refs, req.k, |row| {
            medoids.iter().any(|m| m.row == row)
                || (!seen.is_empty()
                    && seen.contains(&stable_hash(self.catalog.id(row as usize).as_bytes())))
        });
        let items = blended
            .into_iter()
            .map(|b| Recommended {
                row: b.row,
                score: f64::from(b.score),
                medoid: Some(b.source),
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
        check_bounds(k, 1)?;
        let row = self
            .catalog
            .row_of(item)
            .ok_or_else(|| EngineError::UnknownItem(item.to_owned()))? as u32;
        let fetch = (k + 1).next_power_of_two().max(MIN_FETCH);
        let list = self.neighbours(row, fetch)?;
        Ok(list
            .iter()
            .filter(|&&(r, _)| r != row)
            .take(k)
            .map(|&(r, score)| Recommended {
                row: r,
                score: f64::from(score),
                medoid: None,
            })
            .collect())
    }

    /// Neighbours of catalog row `row`, through the cache.
    fn neighbours(&self, row: u32, fetch: usize) -> Result<Neighbours, EngineError> {
        self.cache
            .get_or_fetch(row, fetch as u32, self.index.version, || {
                let metric = self.index.index.metric();
                let hits = self
                    .index
                    .index
                    .search(self.catalog.embedding(row as usize), fetch)
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                Ok(hits
                    .into_iter()
                    .map(|n| (n.row, metric.score(n.distance)))
                    .collect())
            })
    }

    fn fallback(&self, profiles: &Profiles, k: usize) -> Recommendation {
        Recommendation {
            items: profiles
                .popular
                .iter()
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
    let popular = store
        .popular()
        .map_err(internal)?
        .into_iter()
        .filter_map(|(id, count)| catalog.row_of(&id).map(|r| (r as u32, count)))
        .collect();
    Ok(Profiles {
        store: Some(store),
        popular,
    })
}
