//! Clustering one user: the routine the batch, the in-memory batch and the online path share.
//!
//! Each host resolves a user's events to rows of an item table (the catalog, or the in-memory
//! batch's vectors) and pushes them into [`UserActions`]; [`UserActions::cluster`] groups the
//! actions by distinct item, gathers each distinct item's vector once and builds the profile with
//! a [`Clusterer`]; [`UserActions::to_stored`] turns it into the stored form. The three paths
//! therefore cut, weigh and store clusters identically.

use std::collections::HashMap;

use pinnersage_catalog::catalog::Catalog;
use pinnersage_core::importance::decay;
use pinnersage_core::{Actions, Clusterer, CoreError, Embeddings, Profile};
use pinnersage_store::profiles::{StoredCluster, StoredItem, StoredProfile};

/// An item table a user's actions are resolved to: one vector per row.
pub trait ItemVectors {
    /// Length of every vector.
    fn dim(&self) -> usize;
    /// The vector of `row`.
    fn vector(&self, row: usize) -> &[f32];
    /// Appends the vectors of `rows` to `out`, in order.
    fn gather(&self, rows: &[usize], out: &mut Vec<f32>) {
        out.reserve(rows.len() * self.dim());
        rows.iter()
            .for_each(|&row| out.extend_from_slice(self.vector(row)));
    }
}

impl ItemVectors for Catalog {
    fn dim(&self) -> usize {
        Catalog::dim(self)
    }
    fn vector(&self, row: usize) -> &[f32] {
        self.embedding(row)
    }
    fn gather(&self, rows: &[usize], out: &mut Vec<f32>) {
        Catalog::gather(self, rows, out);
    }
}

impl ItemVectors for Embeddings<'_> {
    fn dim(&self) -> usize {
        Embeddings::dim(self)
    }
    fn vector(&self, row: usize) -> &[f32] {
        self.row(row)
    }
}

/// One user's actions on known items, in the order pushed, and the buffers that cluster them.
/// Reused from user to user ([`UserActions::clear`]), so a worker allocates once.
///
/// ```
/// use pinnersage_core::{Clusterer, Embeddings, ProfileParams};
/// use pinnersage_pipeline::clustering::UserActions;
/// let table = [0.0, 0.0, 0.0, 0.1, 5.0, 5.0];
/// let vectors = Embeddings::new(&table, 2).unwrap();
/// let mut user = UserActions::default();
/// for (event, row) in [0, 2, 0, 1, 2].into_iter().enumerate() {
///     user.push(event, row, event as i64, 1.0);
/// }
/// let mut clusterer = Clusterer::new(ProfileParams { alpha: 1.0, ..Default::default() }).unwrap();
/// let profile = user.cluster(&mut clusterer, &vectors, 4).unwrap().unwrap();
/// assert_eq!(profile.clusters.len(), 2);
/// let ids = ["a", "b", "c"];
/// let stored = user.to_stored(&profile, 4, 0.0, |row| ids[row]);
/// assert_eq!(stored.clusters[0].medoid, "a");
/// assert_eq!(stored.items.len(), 3); // each distinct item once
/// ```
#[derive(Debug, Default)]
pub struct UserActions {
    /// The distinct items engaged and each action's index among them.
    pub items: DistinctItems,
    /// Each action's time (unix seconds).
    pub times: Vec<i64>,
    /// Each action's weight.
    pub weights: Vec<f32>,
    /// Each action's index among the events the host resolved (events on unknown items were
    /// never pushed): maps cluster members back to events.
    pub events: Vec<usize>,
    gathered: Vec<f32>,
}

impl UserActions {
    /// Forgets every action, keeping the buffers.
    pub fn clear(&mut self) {
        self.items.clear();
        self.times.clear();
        self.weights.clear();
        self.events.clear();
    }

    /// Adds the action of event `event` on item table row `row`.
    pub fn push(&mut self, event: usize, row: usize, time: i64, weight: f32) {
        self.items.push(row);
        self.times.push(time);
        self.weights.push(weight);
        self.events.push(event);
    }

    /// Number of actions.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether no action was pushed.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Clusters the actions with `vectors` (the item table the rows index) and measures
    /// importance at `now`. Cluster members index the actions in push order. `None` without
    /// actions.
    pub fn cluster(
        &mut self,
        clusterer: &mut Clusterer,
        vectors: &impl ItemVectors,
        now: i64,
    ) -> Result<Option<Profile>, CoreError> {
        let alpha = clusterer.params().alpha;
        let profiles = self.cluster_at(clusterer, vectors, now, &[alpha])?;
        Ok(profiles.into_iter().next())
    }

    /// [`UserActions::cluster`] cut at each of `alphas` from one clustering
    /// ([`Clusterer::profiles`]): one profile per alpha, none without actions.
    pub fn cluster_at(
        &mut self,
        clusterer: &mut Clusterer,
        vectors: &impl ItemVectors,
        now: i64,
        alphas: &[f64],
    ) -> Result<Vec<Profile>, CoreError> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        self.gathered.clear();
        vectors.gather(&self.items.rows, &mut self.gathered);
        let x = Embeddings::new(&self.gathered, vectors.dim())?;
        let actions = Actions::on_items(x, &self.items.item_of, &self.times, Some(&self.weights))?;
        clusterer.profiles(&actions, now, alphas)
    }

    /// The item table row of action `m`.
    pub fn row(&self, m: usize) -> usize {
        self.items.rows[self.items.item_of[m] as usize]
    }

    /// The stored form of `profile` (clustered from these actions at `now` with decay
    /// `lambda`): clusters in profile order with their medoid's item id, and the distinct items,
    /// each once in the first cluster that holds it, most recent first within a cluster, with
    /// its importance (the sum of `w·exp(−λ·age)` over its actions). `id(row)` is the item id of
    /// an item table row. The batch, the in-memory batch and therefore the Spark job all store
    /// profiles through this one function.
    pub fn to_stored<'a>(
        &self,
        profile: &Profile,
        now: i64,
        lambda: f64,
        id: impl Fn(usize) -> &'a str,
    ) -> StoredProfile {
        let items = &self.items;
        let known: usize = profile.clusters.iter().map(|c| c.size()).sum();
        // Position in `stored` of each distinct item, u32::MAX until it is placed.
        let mut position = vec![u32::MAX; items.rows.len()];
        let mut stored = Vec::with_capacity(items.rows.len().min(known));
        let mut importance: Vec<f64> = Vec::with_capacity(stored.capacity());
        let mut members = Vec::new();
        for (k, c) in profile.clusters.iter().enumerate() {
            members.clear();
            members.extend_from_slice(&c.members);
            members.sort_by_key(|&m| std::cmp::Reverse(self.times[m]));
            for &m in &members {
                let distinct = items.item_of[m] as usize;
                if position[distinct] == u32::MAX {
                    position[distinct] = stored.len() as u32;
                    stored.push(StoredItem {
                        item: id(items.rows[distinct]).to_owned(),
                        cluster: k as u32,
                        importance: None,
                    });
                    importance.push(0.0);
                }
                let decayed = f64::from(self.weights[m]) * decay(now, self.times[m], lambda);
                importance[position[distinct] as usize] += decayed;
            }
        }
        for (stored, total) in stored.iter_mut().zip(importance) {
            stored.importance = Some(total as f32);
        }
        StoredProfile {
            items: stored,
            clusters: profile
                .clusters
                .iter()
                .map(|c| StoredCluster {
                    medoid: id(self.row(c.medoid)).to_owned(),
                    size: c.size() as u32,
                    importance: c.importance,
                    latest_time: c.latest_time,
                })
                .collect(),
        }
    }
}

/// A user's distinct items in order of first appearance, and each action's index among them:
/// the input of [`Actions::on_items`], so that an item engaged many times is clustered once
/// (weighted by its count).
#[derive(Debug, Default)]
pub struct DistinctItems {
    index: HashMap<usize, u32, std::hash::BuildHasherDefault<RowHasher>>,
    /// Each distinct item's row (in the caller's item table).
    pub rows: Vec<usize>,
    /// Each action's index into `rows`.
    pub item_of: Vec<u32>,
}

impl DistinctItems {
    /// Forgets every action, keeping the buffers.
    pub fn clear(&mut self) {
        self.index.clear();
        self.rows.clear();
        self.item_of.clear();
    }

    /// Adds the next action, on item `row`.
    ///
    /// ```
    /// use pinnersage_pipeline::clustering::DistinctItems;
    /// let mut items = DistinctItems::default();
    /// [70, 3, 70, 70, 9].into_iter().for_each(|row| items.push(row));
    /// assert_eq!(items.rows, [70, 3, 9]);
    /// assert_eq!(items.item_of, [0, 1, 0, 0, 2]);
    /// ```
    pub fn push(&mut self, row: usize) {
        let next = self.rows.len() as u32;
        let index = *self.index.entry(row).or_insert(next);
        if index == next {
            self.rows.push(row);
        }
        self.item_of.push(index);
    }
}

/// Hashes item rows, already distinct integers, with one multiplication (Fibonacci hashing).
#[derive(Debug, Default)]
pub struct RowHasher(u64);

impl std::hash::Hasher for RowHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
