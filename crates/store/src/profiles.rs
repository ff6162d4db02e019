//! Profile generations: each batch writes every user's clusters into a new redb file
//! (`DATA_DIR/profiles/gen-NNNNNN/profiles.redb`) that becomes visible atomically when the batch
//! publishes it; readers keep using the previous generation until then.
//!
//! A generation may also hold **variants**: the same users' dendrograms cut at other alphas
//! (`batch --variant-alpha`), one table each, published with the main cut and served to the arms
//! of an experiment that compare alphas.

use std::path::{Path, PathBuf};

use pinnersage_generation::{Generations, PublishLock, Staging};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};

use crate::settings::GenerationSettings;

/// Page cache of the generation writer.
const WRITER_CACHE_BYTES: usize = 64 << 20;

/// Page cache of a served generation: a bound on the server's memory (redb's default, 1 GiB,
/// would hold most of a 1M-user generation); misses are served from the OS page cache.
const READER_CACHE_BYTES: usize = 128 << 20;

const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");
/// Most variants a generation holds (each is a full table of profiles).
pub const MAX_VARIANTS: usize = 4;

/// The profiles table named `name`.
fn profiles_table(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// The name of the table of a variant's profiles.
fn variant_table_name(alpha: f64) -> String {
    format!("profiles alpha={alpha}")
}
/// Most engaged items of the window: rank -> (item id, engagements).
const POPULAR: TableDefinition<u32, (&str, u64)> = TableDefinition::new("popular");
const FILE: &str = "profiles.redb";
const META: &str = "meta.json";

/// One stored interest of a user.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCluster {
    /// External id of the medoid item.
    pub medoid: String,
    /// Number of actions in the cluster.
    pub size: u32,
    /// Importance at the batch's `now`.
    pub importance: f64,
    /// Latest action time in the cluster (unix seconds).
    pub latest_time: i64,
}

/// One distinct item the user engaged with in the window, and the cluster it fell in.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    /// External item id.
    pub item: String,
    /// Index into [`StoredProfile::clusters`].
    pub cluster: u32,
    /// The item's share of the user's importance at the batch's `now`: `Σ w·exp(−λ·age_days)`
    /// over its actions (a cluster's importance is the sum over its items). Weights the user's
    /// global interest, the decay average of their items. `None` in generations written
    /// before it was stored.
    pub importance: Option<f32>,
}

/// A user's stored profile: clusters in profile order (importance, then size, then medoid), and
/// the distinct items clustered (grouped by cluster, most recent first within one), which serving
/// uses to leave out what the user has already seen and to show cluster members.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredProfile {
    /// The clusters.
    pub clusters: Vec<StoredCluster>,
    /// The distinct items.
    pub items: Vec<StoredItem>,
}

impl StoredProfile {
    /// Compact binary encoding (little-endian): `u32` cluster count, then per cluster `u16` id
    /// length, id, `u32` size, `f64` importance, `i64` latest time; then `u32` item count and per
    /// item `u16` id length, id, `u32` cluster; then, when every item has one, each item's `f32`
    /// importance in item order (older generations end before it).
    pub fn encode(&self) -> Vec<u8> {
        let ids: usize = self.items.iter().map(|i| i.item.len() + 6).sum();
        let mut out = Vec::with_capacity(8 + self.clusters.len() * 40 + ids);
        out.extend((self.clusters.len() as u32).to_le_bytes());
        for c in &self.clusters {
            out.extend((c.medoid.len() as u16).to_le_bytes());
            out.extend(c.medoid.as_bytes());
            out.extend(c.size.to_le_bytes());
            out.extend(c.importance.to_le_bytes());
            out.extend(c.latest_time.to_le_bytes());
        }
        out.extend((self.items.len() as u32).to_le_bytes());
        for i in &self.items {
            out.extend((i.item.len() as u16).to_le_bytes());
            out.extend(i.item.as_bytes());
            out.extend(i.cluster.to_le_bytes());
        }
        if self.items.iter().all(|i| i.importance.is_some()) {
            for i in &self.items {
                out.extend(i.importance.unwrap_or_default().to_le_bytes());
            }
        }
        out
    }

    /// Decodes [`encode`](Self::encode)'s output; `None` if the bytes are malformed.
    ///
    /// ```
    /// use pinnersage_store::profiles::{StoredCluster, StoredProfile};
    /// use pinnersage_store::profiles::StoredItem;
    /// let p = StoredProfile {
    ///     clusters: vec![StoredCluster {
    ///         medoid: "item-9".into(), size: 4, importance: 3.5, latest_time: 1_700_000_000 }],
    ///     items: vec![StoredItem { item: "item-9".into(), cluster: 0, importance: Some(3.5) }],
    /// };
    /// assert_eq!(StoredProfile::decode(&p.encode()), Some(p.clone()));
    /// assert_eq!(StoredProfile::decode(&[1, 0, 0]), None);
    /// // Without item importance (generations written before it), and truncated inside it.
    /// let mut old = p.clone();
    /// old.items[0].importance = None;
    /// assert_eq!(StoredProfile::decode(&old.encode()), Some(old));
    /// let bytes = p.encode();
    /// assert_eq!(StoredProfile::decode(&bytes[..bytes.len() - 1]), None);
    /// ```
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        ProfileView::parse(bytes).map(|v| v.to_stored())
    }
}

impl ProfileView<'_> {
    /// An owned copy.
    pub fn to_stored(&self) -> StoredProfile {
        StoredProfile {
            clusters: self
                .clusters
                .iter()
                .map(|c| StoredCluster {
                    medoid: c.medoid.to_owned(),
                    size: c.size,
                    importance: c.importance,
                    latest_time: c.latest_time,
                })
                .collect(),
            items: self
                .items
                .iter()
                .enumerate()
                .map(|(i, &(item, cluster))| StoredItem {
                    item: item.to_owned(),
                    cluster,
                    importance: self.item_importance(i),
                })
                .collect(),
        }
    }
}

/// One cluster of a [`ProfileView`], borrowing its medoid id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterView<'a> {
    /// External id of the medoid item.
    pub medoid: &'a str,
    /// Number of actions in the cluster.
    pub size: u32,
    /// Importance at the batch's `now`.
    pub importance: f64,
    /// Latest action time in the cluster (unix seconds).
    pub latest_time: i64,
}

/// A profile decoded in place from [`StoredProfile::encode`]'s bytes: ids borrow the bytes, so
/// reading one costs two allocations whatever its size (the serving hot path).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileView<'a> {
    /// Clusters, in profile order.
    pub clusters: Vec<ClusterView<'a>>,
    /// Distinct items and the index of their cluster.
    pub items: Vec<(&'a str, u32)>,
    /// The items' importance, `4·items.len()` little-endian `f32` bytes, or empty (a generation
    /// written before it was stored); see [`ProfileView::item_importance`].
    importance: &'a [u8],
}

impl<'a> ProfileView<'a> {
    /// Parses and validates encoded bytes; `None` if they are malformed.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let mut r = bytes;
        let mut take = |n: usize| -> Option<&'a [u8]> {
            let (head, tail) = (r.get(..n)?, r.get(n..)?);
            r = tail;
            Some(head)
        };
        let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let mut clusters = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
            let medoid = std::str::from_utf8(take(len)?).ok()?;
            let size = u32::from_le_bytes(take(4)?.try_into().ok()?);
            let importance = f64::from_le_bytes(take(8)?.try_into().ok()?);
            let latest_time = i64::from_le_bytes(take(8)?.try_into().ok()?);
            clusters.push(ClusterView {
                medoid,
                size,
                importance,
                latest_time,
            });
        }
        let count = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let mut items = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
            let item = std::str::from_utf8(take(len)?).ok()?;
            let cluster = u32::from_le_bytes(take(4)?.try_into().ok()?);
            if cluster as usize >= clusters.len() {
                return None;
            }
            items.push((item, cluster));
        }
        let importance = match r.len() {
            0 => &[][..],
            n if n == 4 * items.len() => r,
            _ => return None,
        };
        Some(Self {
            clusters,
            items,
            importance,
        })
    }

    /// Item `i`'s importance ([`StoredItem::importance`]); `None` for a generation written
    /// before it was stored.
    pub fn item_importance(&self, i: usize) -> Option<f32> {
        let bytes = self.importance.get(4 * i..4 * i + 4)?;
        Some(f32::from_le_bytes(bytes.try_into().ok()?))
    }

    /// Whether the items' importance was stored ([`ProfileView::item_importance`]).
    pub fn has_item_importance(&self) -> bool {
        !self.items.is_empty() && !self.importance.is_empty()
    }
}

/// One user in a [`ProfileStore::users`] listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    /// The user id.
    pub user: String,
    /// Clusters in the profile.
    pub clusters: usize,
    /// Distinct items in the profile.
    pub items: usize,
}

/// What a profile generation was computed with (its `meta.json`: the settings' flat fields,
/// `shard` and `users`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationMeta {
    /// The moment, window and clustering parameters.
    #[serde(flatten)]
    pub settings: GenerationSettings,
    /// `(index, count)` when the batch processed one shard of the users.
    pub shard: Option<(u32, u32)>,
    /// Number of users with a profile.
    pub users: u64,
    /// The alphas of the generation's variants: the same dendrograms cut at other thresholds
    /// than `alpha` (empty for most generations; see [`ProfileWriter::write_variant`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variant_alphas: Vec<f64>,
}

/// Errors of the profile store, naming the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ProfileStoreError {
    /// No batch has published profiles yet.
    #[error("no profiles in {}: run `pinnersage batch` first", .0.display())]
    Missing(PathBuf),
    /// The storage engine or the file system failed.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Another publisher holds the data directory.
    #[error(transparent)]
    Busy(#[from] pinnersage_generation::LockError),
    /// A stored profile does not decode.
    #[error("{}: corrupt profile of user {user:?}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The user whose record is damaged.
        user: String,
    },
}

fn io(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> ProfileStoreError + '_ {
    move |e| ProfileStoreError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn generations(data_dir: &Path) -> Generations {
    Generations::new(data_dir.join("profiles"))
}

/// Writes one profile generation; nothing is visible until [`ProfileWriter::publish`].
pub struct ProfileWriter {
    _lock: PublishLock,
    staging: Staging,
    generations: Generations,
    db: Database,
    users: u64,
    variant_alphas: Vec<f64>,
}

impl ProfileWriter {
    /// Starts a new generation in `data_dir`.
    pub fn begin(data_dir: &Path) -> Result<Self, ProfileStoreError> {
        let lock = PublishLock::acquire(data_dir, "batch")?;
        let generations = generations(data_dir);
        let staging = generations
            .stage()
            .map_err(|e| io(generations.root())(&e))?;
        let file = staging.path().join(FILE);
        // Writes go in user order, so a small cache does; redb's default (1 GiB) grew the
        // batch's resident memory by ~1 GB at 1M users.
        let db = redb::Builder::new()
            .set_cache_size(WRITER_CACHE_BYTES)
            .create(&file)
            .map_err(|e| io(&file)(&e))?;
        Ok(Self {
            _lock: lock,
            staging,
            generations,
            db,
            users: 0,
            variant_alphas: Vec::new(),
        })
    }

    /// Writes a chunk of profiles in one transaction.
    pub fn write(&mut self, profiles: &[(String, StoredProfile)]) -> Result<(), ProfileStoreError> {
        self.write_table(PROFILES, profiles)?;
        self.users += profiles.len() as u64;
        Ok(())
    }

    /// Writes a chunk of the profiles of the variant cut at `alpha` (the same users as the main
    /// profiles, clustered with the same settings but `alpha`), in one transaction. At most
    /// [`MAX_VARIANTS`] alphas, never the generation's own.
    pub fn write_variant(
        &mut self,
        alpha: f64,
        profiles: &[(String, StoredProfile)],
    ) -> Result<(), ProfileStoreError> {
        if !self.variant_alphas.contains(&alpha) {
            if self.variant_alphas.len() >= MAX_VARIANTS {
                return Err(ProfileStoreError::Io {
                    path: self.staging.path().join(FILE),
                    message: format!("a generation holds at most {MAX_VARIANTS} variants"),
                });
            }
            self.variant_alphas.push(alpha);
        }
        let name = variant_table_name(alpha);
        self.write_table(profiles_table(&name), profiles)
    }

    fn write_table(
        &mut self,
        table: TableDefinition<'_, &'static str, &'static [u8]>,
        profiles: &[(String, StoredProfile)],
    ) -> Result<(), ProfileStoreError> {
        let file = self.staging.path().join(FILE);
        let err = io(&file);
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(table).map_err(|e| err(&e))?;
            for (user, profile) in profiles {
                table
                    .insert(user.as_str(), profile.encode().as_slice())
                    .map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))
    }

    /// Records the window's most engaged items (best first), the fallback for users without a
    /// profile.
    pub fn write_popular(&mut self, items: &[(String, u64)]) -> Result<(), ProfileStoreError> {
        let file = self.staging.path().join(FILE);
        let err = io(&file);
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(POPULAR).map_err(|e| err(&e))?;
            for (rank, (item, count)) in items.iter().enumerate() {
                table
                    .insert(rank as u32, (item.as_str(), *count))
                    .map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))
    }

    /// Number of profiles written so far.
    pub fn users(&self) -> u64 {
        self.users
    }

    /// Writes `meta` (with the user count and the variants' alphas filled in) and makes the
    /// generation current.
    pub fn publish(self, mut meta: GenerationMeta) -> Result<PathBuf, ProfileStoreError> {
        let Self {
            _lock: _held_until_published,
            staging,
            generations,
            db,
            users,
            variant_alphas,
        } = self;
        drop(db); // closes the file; every transaction was committed durably
        meta.users = users;
        meta.variant_alphas = variant_alphas;
        let meta_path = staging.path().join(META);
        let json = serde_json::to_vec_pretty(&meta).expect("metadata serialises");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&meta_path)?;
            f.write_all(&json)?;
            f.sync_all()
        };
        write().map_err(|e| io(&meta_path)(&e))?;
        generations
            .publish(staging)
            .map_err(|e| io(generations.root())(&e))
    }
}

/// The `meta.json` of the generation in `dir`.
fn read_meta(dir: &Path) -> Result<GenerationMeta, ProfileStoreError> {
    let meta_path = dir.join(META);
    std::fs::read(&meta_path)
        .map_err(|e| io(&meta_path)(&e))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| io(&meta_path)(&e)))
}

/// The current profile generation of a data directory, opened for reading. redb allows one open
/// handle per file in a process: share one `ProfileStore` (it is `Sync`) rather than opening the
/// same generation twice.
pub struct ProfileStore {
    dir: PathBuf,
    meta: GenerationMeta,
    db: Database,
}

impl ProfileStore {
    /// The directory of the data directory's current generation, if one was ever published
    /// (cheap: lets a reader notice a new generation without opening it).
    pub fn current_dir(data_dir: &Path) -> Result<Option<PathBuf>, ProfileStoreError> {
        let generations = generations(data_dir);
        generations
            .current()
            .map_err(|e| io(generations.root())(&e))
    }

    /// What the current generation was computed with, if there is one (reads its `meta.json`
    /// only: the generation may be open elsewhere in this process).
    pub fn current_meta(data_dir: &Path) -> Result<Option<GenerationMeta>, ProfileStoreError> {
        Self::current_dir(data_dir)?
            .map(|dir| read_meta(&dir))
            .transpose()
    }

    /// Opens the current generation.
    pub fn open(data_dir: &Path) -> Result<Self, ProfileStoreError> {
        let dir = Self::current_dir(data_dir)?
            .ok_or_else(|| ProfileStoreError::Missing(data_dir.to_path_buf()))?;
        let meta = read_meta(&dir)?;
        let file = dir.join(FILE);
        let db = redb::Builder::new()
            .set_cache_size(READER_CACHE_BYTES)
            .open(&file)
            .map_err(|e| io(&file)(&e))?;
        Ok(Self { dir, meta, db })
    }

    /// The generation's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the generation was computed with.
    pub fn meta(&self) -> &GenerationMeta {
        &self.meta
    }

    /// `table` in a fresh read transaction (which lives as long as the table), or `None` when
    /// the generation never wrote it.
    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<'_, K, V>,
    ) -> Result<Option<redb::ReadOnlyTable<K, V>>, ProfileStoreError> {
        let file = self.dir.join(FILE);
        let err = io(&file);
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        match txn.open_table(table) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(err(&e)),
        }
    }

    /// The window's most engaged items, best first (see [`ProfileWriter::write_popular`]).
    pub fn popular(&self) -> Result<Vec<(String, u64)>, ProfileStoreError> {
        let file = self.dir.join(FILE);
        let err = io(&file);
        let Some(table) = self.read_table(POPULAR)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| err(&e))? {
            let (_, value) = entry.map_err(|e| err(&e))?;
            let (item, count) = value.value();
            out.push((item.to_owned(), count));
        }
        Ok(out)
    }

    /// Calls `f` with a zero-copy view of `user`'s profile (`None` if the batch produced none).
    pub fn with_profile<R>(
        &self,
        user: &str,
        f: impl FnOnce(Option<ProfileView<'_>>) -> R,
    ) -> Result<R, ProfileStoreError> {
        self.with_profile_in(PROFILES, user, f)
    }

    /// [`ProfileStore::with_profile`] in the variant cut at `alpha`; `None` when the generation
    /// has no such variant (see [`GenerationMeta::variant_alphas`]).
    pub fn with_variant_profile<R>(
        &self,
        alpha: f64,
        user: &str,
        f: impl FnOnce(Option<ProfileView<'_>>) -> R,
    ) -> Result<Option<R>, ProfileStoreError> {
        if !self.meta.variant_alphas.contains(&alpha) {
            return Ok(None);
        }
        let name = variant_table_name(alpha);
        self.with_profile_in(profiles_table(&name), user, f)
            .map(Some)
    }

    fn with_profile_in<R>(
        &self,
        table: TableDefinition<'_, &'static str, &'static [u8]>,
        user: &str,
        f: impl FnOnce(Option<ProfileView<'_>>) -> R,
    ) -> Result<R, ProfileStoreError> {
        let file = self.dir.join(FILE);
        let err = io(&file);
        let Some(table) = self.read_table(table)? else {
            return Ok(f(None));
        };
        let Some(guard) = table.get(user).map_err(|e| err(&e))? else {
            return Ok(f(None));
        };
        match ProfileView::parse(guard.value()) {
            Some(view) => Ok(f(Some(view))),
            None => Err(ProfileStoreError::Corrupt {
                path: file.clone(),
                user: user.to_owned(),
            }),
        }
    }

    /// Up to `limit` users whose id starts with `prefix`, in byte order, with their number of
    /// clusters and of distinct items (for browsing profiles).
    pub fn users(&self, prefix: &str, limit: usize) -> Result<Vec<UserSummary>, ProfileStoreError> {
        let file = self.dir.join(FILE);
        let err = io(&file);
        let Some(table) = self.read_table(PROFILES)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.range(prefix..).map_err(|e| err(&e))? {
            if out.len() >= limit {
                break;
            }
            let (user, bytes) = entry.map_err(|e| err(&e))?;
            let user = user.value();
            if !user.starts_with(prefix) {
                break;
            }
            let view =
                ProfileView::parse(bytes.value()).ok_or_else(|| ProfileStoreError::Corrupt {
                    path: file.clone(),
                    user: user.to_owned(),
                })?;
            out.push(UserSummary {
                user: user.to_owned(),
                clusters: view.clusters.len(),
                items: view.items.len(),
            });
        }
        Ok(out)
    }

    /// Calls `f` with every profile's medoid ids, the variants' included (a medoid of several
    /// clusters once per cluster): what a catalog fold keeps the vectors of.
    pub fn for_each_medoid(&self, mut f: impl FnMut(&str)) -> Result<(), ProfileStoreError> {
        let file = self.dir.join(FILE);
        let err = io(&file);
        let variants = self
            .meta
            .variant_alphas
            .iter()
            .map(|&a| variant_table_name(a));
        for name in std::iter::once(PROFILES.name().to_owned()).chain(variants) {
            let Some(table) = self.read_table(profiles_table(&name))? else {
                continue;
            };
            for entry in table.iter().map_err(|e| err(&e))? {
                let (user, bytes) = entry.map_err(|e| err(&e))?;
                let view = ProfileView::parse(bytes.value()).ok_or_else(|| {
                    ProfileStoreError::Corrupt {
                        path: file.clone(),
                        user: user.value().to_owned(),
                    }
                })?;
                view.clusters.iter().for_each(|c| f(c.medoid));
            }
        }
        Ok(())
    }

    /// The profile of `user`, if the batch produced one.
    pub fn get(&self, user: &str) -> Result<Option<StoredProfile>, ProfileStoreError> {
        self.with_profile(user, |view| view.map(|v| v.to_stored()))
    }
}

impl pinnersage_core::error::Kind for ProfileStoreError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::Missing(_) => NotFound,
            Self::Io { .. } | Self::Corrupt { .. } => Internal,
            Self::Busy(e) => e.kind(),
        }
    }
}
