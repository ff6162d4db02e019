//! A user's multi-interest profile: Ward clusters cut at alpha, each summarised by its medoid and
//! its importance.

use crate::distance::SqDistances;
use crate::embeddings::Embeddings;
use crate::error::{CoreError, Result};
use crate::importance::{DEFAULT_LAMBDA, importance};
use crate::medoid::{medoid, weighted_medoid};
use crate::sample::{SplitMix64, sample_weighted};
use crate::ward::{Dendrogram, ward, ward_weighted};

/// Default merge threshold for **L2-normalised** embeddings (squared-distance scale).
///
/// Two single actions merge when `||a − b||² ≤ alpha`, i.e. cosine `≥ 1 − alpha/2 = 0.125`;
/// larger clusters need proportionally tighter centroids (Ward's cost grows with their sizes).
/// Chosen on MovieLens-small with MiniLM embeddings so that light users (20–40 actions) get 3–5
/// interests and heavy users (1,000+ actions) around 100, the paper's range; see
/// `docs/alpha.md`. Other embedding scales need their own alpha.
pub const DEFAULT_ALPHA: f64 = 1.75;

/// Default cap on actions per user: the most recent 2,000 are clustered (16 MB of distances).
pub const DEFAULT_MAX_ACTIONS: usize = 2_000;

/// Largest `max_actions` accepted: the distance matrix of one user takes `4·m²` bytes per worker
/// (1.6 GB at this cap), so a larger value is a mistake or an attack, never a setting.
pub const MAX_ACTIONS_LIMIT: usize = 20_000;

/// Largest alpha accepted (squared distances of embeddings within ±1e12 never need more).
pub const MAX_ALPHA: f64 = 1e12;

/// Largest lambda accepted, per day (at 1,000 an action a minute old already counts < 0.5).
pub const MAX_LAMBDA: f64 = 1e3;

/// The knobs of the per-user model.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileParams {
    /// Merge threshold on the squared-distance Ward height; `>= 0`.
    pub alpha: f64,
    /// Importance decay rate per day; `>= 0`.
    pub lambda: f64,
    /// Only the most recent `max_actions` actions are clustered; `>= 1`.
    pub max_actions: usize,
}

impl Default for ProfileParams {
    fn default() -> Self {
        Self {
            alpha: DEFAULT_ALPHA,
            lambda: DEFAULT_LAMBDA,
            max_actions: DEFAULT_MAX_ACTIONS,
        }
    }
}

impl ProfileParams {
    /// Checks every parameter's domain.
    ///
    /// ```
    /// use pinnersage_core::ProfileParams;
    /// assert!(ProfileParams::default().validate().is_ok());
    /// assert!(ProfileParams { alpha: -1.0, ..Default::default() }.validate().is_err());
    /// let huge = ProfileParams { max_actions: 1_000_000_000, ..Default::default() };
    /// assert!(huge.validate().unwrap_err().to_string().contains("max_actions"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let check = |name, value: f64, max: f64, expected| {
            if value.is_finite() && (0.0..=max).contains(&value) {
                Ok(())
            } else {
                Err(CoreError::InvalidParameter {
                    name,
                    expected,
                    value,
                })
            }
        };
        check(
            "alpha",
            self.alpha,
            MAX_ALPHA,
            "finite and >= 0 (at most 1e12)",
        )?;
        check(
            "lambda",
            self.lambda,
            MAX_LAMBDA,
            "finite and >= 0 (at most 1000)",
        )?;
        if !(1..=MAX_ACTIONS_LIMIT).contains(&self.max_actions) {
            return Err(CoreError::InvalidParameter {
                name: "max_actions",
                expected: ">= 1 (at most 20000)",
                value: self.max_actions as f64,
            });
        }
        Ok(())
    }
}

/// One user's actions: item embeddings, unix times in seconds and optional non-negative weights
/// (for example repin 1.0, click 0.5), in any order.
///
/// Built with [`Actions::new`] the embeddings hold one row per action. Built with
/// [`Actions::on_items`] they hold each engaged item once and every action names its item's row:
/// repeated engagements of an item are then clustered as **one weighted point**, which yields the
/// same clusters (Ward's cost of merging two clusters depends only on their sizes and centroids,
/// and copies of one point merge at height 0) for a fraction of the work when items repeat.
#[derive(Debug, Clone, Copy)]
pub struct Actions<'a> {
    embeddings: Embeddings<'a>,
    item_of: Option<&'a [u32]>,
    times: &'a [i64],
    weights: Option<&'a [f32]>,
}

impl<'a> Actions<'a> {
    /// Actions with one embedding row each. Validates that `times` and `weights` have one entry
    /// per row and that weights are finite and non-negative.
    ///
    /// ```
    /// use pinnersage_core::{Actions, Embeddings};
    /// let x = Embeddings::new(&[0.0, 1.0], 1).unwrap();
    /// assert!(Actions::new(x, &[5, 6], None).is_ok());
    /// assert!(Actions::new(x, &[5], None).is_err());
    /// assert!(Actions::new(x, &[5, 6], Some(&[1.0, -1.0])).is_err());
    /// ```
    pub fn new(
        embeddings: Embeddings<'a>,
        times: &'a [i64],
        weights: Option<&'a [f32]>,
    ) -> Result<Self> {
        let m = embeddings.rows();
        if times.len() != m {
            return Err(CoreError::DimensionMismatch {
                what: "times (one per embedding row)",
                expected: m,
                found: times.len(),
            });
        }
        check_weights(weights, m)?;
        Ok(Self {
            embeddings,
            item_of: None,
            times,
            weights,
        })
    }

    /// Actions on items: `items` holds each engaged item's embedding once and action `a` engaged
    /// row `item_of[a]` of it at `times[a]`. Validates one time (and weight) per action, weights
    /// finite and non-negative, and every item row in range.
    ///
    /// Clustering then works on the distinct items of the kept actions, each weighted by its
    /// number of actions; clusters still list action rows.
    ///
    /// ```
    /// use pinnersage_core::{Actions, Clusterer, Embeddings, ProfileParams};
    /// let items = Embeddings::new(&[0.0, 0.0, 0.0, 0.1, 5.0, 5.0], 2).unwrap();
    /// let item_of = [0, 2, 0, 1, 2];
    /// let actions = Actions::on_items(items, &item_of, &[0, 1, 2, 3, 4], None).unwrap();
    /// let profile = Clusterer::new(ProfileParams { alpha: 1.0, ..Default::default() })
    ///     .unwrap()
    ///     .profile(&actions, 4)
    ///     .unwrap();
    /// let members: Vec<&[usize]> = profile.clusters.iter().map(|c| c.members.as_slice()).collect();
    /// assert_eq!(members, [&[0, 2, 3][..], &[1, 4]]);
    /// assert!(Actions::on_items(items, &[0, 3], &[0, 1], None).is_err());
    /// ```
    pub fn on_items(
        items: Embeddings<'a>,
        item_of: &'a [u32],
        times: &'a [i64],
        weights: Option<&'a [f32]>,
    ) -> Result<Self> {
        if times.len() != item_of.len() {
            return Err(CoreError::DimensionMismatch {
                what: "times (one per action)",
                expected: item_of.len(),
                found: times.len(),
            });
        }
        if item_of.is_empty() {
            return Err(CoreError::Empty);
        }
        check_weights(weights, item_of.len())?;
        let rows = items.rows();
        if let Some(row) = item_of.iter().position(|&i| i as usize >= rows) {
            return Err(CoreError::ItemOutOfRange {
                row,
                item: item_of[row],
                items: rows,
            });
        }
        Ok(Self {
            embeddings: items,
            item_of: Some(item_of),
            times,
            weights,
        })
    }

    /// The embedding of action `a`.
    pub fn row(&self, a: usize) -> &'a [f32] {
        match self.item_of {
            Some(item_of) => self.embeddings.row(item_of[a] as usize),
            None => self.embeddings.row(a),
        }
    }

    /// Each action's item row, for actions built with [`Actions::on_items`].
    pub fn item_of(&self) -> Option<&'a [u32]> {
        self.item_of
    }

    /// The embedding rows: one per action ([`Actions::new`]) or one per item
    /// ([`Actions::on_items`]).
    pub fn embeddings(&self) -> Embeddings<'a> {
        self.embeddings
    }

    /// Number of actions.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Always false: `Embeddings` cannot be empty.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The most recent `cap` action rows in ascending row order (all rows when there are fewer).
    /// Among equal times the later row is the more recent.
    pub fn most_recent(&self, cap: usize) -> Vec<usize> {
        let mut rows: Vec<usize> = (0..self.len()).collect();
        if rows.len() > cap {
            rows.sort_unstable_by_key(|&i| std::cmp::Reverse((self.times[i], i)));
            rows.truncate(cap);
            rows.sort_unstable();
        }
        rows
    }
}

/// Checks that `weights`, if given, hold `m` finite non-negative values.
fn check_weights(weights: Option<&[f32]>, m: usize) -> Result<()> {
    let Some(w) = weights else { return Ok(()) };
    if w.len() != m {
        return Err(CoreError::DimensionMismatch {
            what: "weights (one per action)",
            expected: m,
            found: w.len(),
        });
    }
    match w.iter().position(|v| !v.is_finite() || *v < 0.0) {
        Some(row) => Err(CoreError::InvalidWeight { row, value: w[row] }),
        None => Ok(()),
    }
}

/// One interest of a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Row (into the caller's actions) of the member that represents the cluster.
    pub medoid: usize,
    /// Rows of all members, ascending.
    pub members: Vec<usize>,
    /// `Σ w·exp(−λ·age_days)` over the members.
    pub importance: f64,
    /// Latest action time among the members (unix seconds).
    pub latest_time: i64,
}

impl Cluster {
    /// Number of member actions.
    pub fn size(&self) -> usize {
        self.members.len()
    }
}

/// A user's clusters, sorted by importance (descending), then size (descending), then medoid row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Profile {
    /// The clusters in profile order.
    pub clusters: Vec<Cluster>,
}

impl Profile {
    /// Summarises a partition of `actions` (each cluster a non-empty list of action rows): every
    /// cluster gets its medoid, its importance at `now` under decay `lambda` and its latest time,
    /// and the clusters are put in profile order. This is how any clustering — Ward, or the
    /// k-means and complete-linkage ablations — becomes a profile.
    ///
    /// ```
    /// use pinnersage_core::{Actions, Embeddings, Profile};
    /// let data = [0.0, 0.0, 0.1, 0.0, 0.2, 0.0, 5.0, 5.0];
    /// let actions = Actions::new(Embeddings::new(&data, 2).unwrap(), &[0, 0, 0, 86_400], None).unwrap();
    /// let p = Profile::from_clusters(&actions, vec![vec![0, 1, 2], vec![3]], 86_400, 0.01);
    /// assert_eq!(p.clusters[0].medoid, 1);
    /// assert!((p.clusters[0].importance - 3.0 * (-0.01f64).exp()).abs() < 1e-12);
    /// assert_eq!(p.clusters[1].latest_time, 86_400);
    /// ```
    pub fn from_clusters(
        actions: &Actions<'_>,
        clusters: Vec<Vec<usize>>,
        now: i64,
        lambda: f64,
    ) -> Profile {
        let x = actions.embeddings;
        let with_medoids = clusters
            .into_iter()
            .filter(|members| !members.is_empty())
            .map(|members| {
                let medoid = match actions.item_of {
                    None => medoid(x, &members).unwrap_or(members[0]),
                    Some(item_of) => {
                        let mut points = Points::default();
                        points.group(&members, item_of, x.rows());
                        points.medoid_action(x, &members, item_of)
                    }
                };
                (members, medoid)
            })
            .collect();
        Profile::summarise(actions, with_medoids, now, lambda)
    }

    /// Gives every cluster (members and medoid row) its importance and latest time, and puts
    /// the clusters in profile order.
    fn summarise(
        actions: &Actions<'_>,
        clusters: Vec<(Vec<usize>, usize)>,
        now: i64,
        lambda: f64,
    ) -> Profile {
        let mut clusters: Vec<Cluster> = clusters
            .into_iter()
            .map(|(members, medoid)| Cluster {
                medoid,
                importance: importance(&members, actions.times, actions.weights, now, lambda),
                latest_time: members
                    .iter()
                    .map(|&i| actions.times[i])
                    .max()
                    .unwrap_or(now),
                members,
            })
            .collect();
        clusters.sort_by(|a, b| {
            b.importance
                .total_cmp(&a.importance)
                .then(b.size().cmp(&a.size()))
                .then(a.medoid.cmp(&b.medoid))
        });
        Profile { clusters }
    }

    /// Samples up to `k` clusters in proportion to importance, without replacement, returning
    /// indices into `clusters` in draw order.
    ///
    /// ```
    /// use pinnersage_core::{Cluster, Profile, sample::{SplitMix64, sample_seed}};
    /// let c = |medoid, importance| Cluster { medoid, members: vec![medoid], importance, latest_time: 0 };
    /// let p = Profile { clusters: vec![c(0, 3.0), c(1, 2.0), c(2, 1.0), c(3, 0.5)] };
    /// let mut rng = SplitMix64::new(sample_seed(b"user-42", 20_000, 0));
    /// let picked = p.sample(3, &mut rng);
    /// assert_eq!(picked.len(), 3);
    /// ```
    pub fn sample(&self, k: usize, rng: &mut SplitMix64) -> Vec<usize> {
        let weights: Vec<f64> = self.clusters.iter().map(|c| c.importance).collect();
        sample_weighted(&weights, k, rng)
    }
}

/// Builds profiles. Holds the parameters and reusable buffers, so one `Clusterer` per thread can
/// process many users without reallocating.
///
/// ```
/// use pinnersage_core::{Actions, Clusterer, Embeddings, ProfileParams};
/// let data = [0.0, 0.0, 0.0, 0.1, 5.0, 5.0, 5.0, 5.1, 5.1, 5.0];
/// let x = Embeddings::new(&data, 2).unwrap();
/// let day = 86_400;
/// let times = [0, day, 2 * day, 3 * day, 4 * day];
/// let actions = Actions::new(x, &times, None).unwrap();
/// let params = ProfileParams { alpha: 1.0, ..Default::default() };
/// let profile = Clusterer::new(params).unwrap().profile(&actions, 4 * day).unwrap();
/// assert_eq!(profile.clusters.len(), 2);
/// assert_eq!(profile.clusters[0].members, vec![2, 3, 4]);
/// assert_eq!(profile.clusters[0].medoid, 2);
/// ```
#[derive(Debug, Clone)]
pub struct Clusterer {
    params: ProfileParams,
    distances: SqDistances,
    gathered: Vec<f32>,
    points: Points,
}

impl Clusterer {
    /// A clusterer with validated parameters.
    pub fn new(params: ProfileParams) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            params,
            distances: SqDistances::default(),
            gathered: Vec::new(),
            points: Points::default(),
        })
    }

    /// The parameters in use.
    pub fn params(&self) -> &ProfileParams {
        &self.params
    }

    /// The full Ward dendrogram of `x` (all rows, no cap).
    pub fn dendrogram(&mut self, x: Embeddings<'_>) -> Dendrogram {
        self.distances.compute(x);
        ward(&mut self.distances)
    }

    /// Clusters the user's most recent actions (at most `max_actions`), cuts at alpha and
    /// summarises every cluster; importance is measured at `now` (unix seconds). Actions built
    /// with [`Actions::on_items`] are clustered as their distinct items, each weighted by its
    /// number of kept actions.
    pub fn profile(&mut self, actions: &Actions<'_>, now: i64) -> Result<Profile> {
        let alpha = self.params.alpha;
        let mut profiles = self.profiles(actions, now, &[alpha])?;
        Ok(profiles.pop().expect("one profile per alpha"))
    }

    /// [`Clusterer::profile`] cut at each of `alphas` (merge thresholds, checked like
    /// [`ProfileParams::alpha`]) from one dendrogram: the profiles a clusterer of each alpha
    /// would give, for the cost of one clustering.
    ///
    /// ```
    /// use pinnersage_core::{Actions, Clusterer, Embeddings, ProfileParams};
    /// let data = [0.0, 0.0, 0.0, 0.1, 1.0, 1.0, 1.0, 1.1];
    /// let actions = Actions::new(Embeddings::new(&data, 2).unwrap(), &[0, 0, 0, 0], None).unwrap();
    /// let mut clusterer = Clusterer::new(ProfileParams::default()).unwrap();
    /// let [fine, coarse] = <[_; 2]>::try_from(clusterer.profiles(&actions, 0, &[0.5, 10.0]).unwrap()).unwrap();
    /// assert_eq!((fine.clusters.len(), coarse.clusters.len()), (2, 1));
    /// ```
    pub fn profiles(
        &mut self,
        actions: &Actions<'_>,
        now: i64,
        alphas: &[f64],
    ) -> Result<Vec<Profile>> {
        for &alpha in alphas {
            ProfileParams {
                alpha,
                ..self.params.clone()
            }
            .validate()?;
        }
        let kept = actions.most_recent(self.params.max_actions);
        let Some(item_of) = actions.item_of else {
            return self.profile_rows(actions, &kept, now, alphas);
        };
        let x = actions.embeddings;
        let mut points = std::mem::take(&mut self.points);
        points.group(&kept, item_of, x.rows());
        let mut gathered = std::mem::take(&mut self.gathered);
        let result = self.profile_points(actions, &kept, &points, &mut gathered, now, alphas);
        self.gathered = gathered;
        self.points = points;
        result
    }

    /// [`Clusterer::profiles`] for actions with a row each: the `kept` rows are clustered.
    fn profile_rows(
        &mut self,
        actions: &Actions<'_>,
        kept: &[usize],
        now: i64,
        alphas: &[f64],
    ) -> Result<Vec<Profile>> {
        let full = actions.embeddings;
        let tree = if kept.len() == actions.len() {
            self.dendrogram(full)
        } else {
            let mut gathered = std::mem::take(&mut self.gathered);
            gathered.clear();
            kept.iter()
                .for_each(|&i| gathered.extend_from_slice(full.row(i)));
            let sub = Embeddings::new(&gathered, full.dim())?;
            let tree = self.dendrogram(sub);
            self.gathered = gathered;
            tree
        };
        Ok(alphas
            .iter()
            .map(|&alpha| {
                let clusters = tree
                    .cut(alpha)
                    .into_iter()
                    .map(|local| local.iter().map(|&l| kept[l]).collect())
                    .collect();
                Profile::from_clusters(actions, clusters, now, self.params.lambda)
            })
            .collect())
    }

    /// [`Clusterer::profiles`] for actions on items: the distinct items of the `kept` actions
    /// (`points`) are clustered as weighted points, and each cluster of points becomes the
    /// cluster of their actions.
    fn profile_points(
        &mut self,
        actions: &Actions<'_>,
        kept: &[usize],
        points: &Points,
        gathered: &mut Vec<f32>,
        now: i64,
        alphas: &[f64],
    ) -> Result<Vec<Profile>> {
        let items = actions.embeddings;
        let x = if points.rows.iter().enumerate().all(|(p, &r)| p == r)
            && points.rows.len() == items.rows()
        {
            items
        } else {
            gathered.clear();
            for &r in &points.rows {
                gathered.extend_from_slice(items.row(r));
            }
            Embeddings::new(gathered, items.dim())?
        };
        let tree = if points.counts.iter().all(|&c| c == 1.0) {
            self.dendrogram(x)
        } else {
            self.distances.compute_weighted(x, &points.counts);
            ward_weighted(&mut self.distances, &points.counts)
        };
        let cut = |alpha: f64| {
            let point_clusters = tree.cut(alpha);
            let mut cluster_of_point = vec![0u32; points.rows.len()];
            for (c, members) in point_clusters.iter().enumerate() {
                for &p in members {
                    cluster_of_point[p] = c as u32;
                }
            }
            let mut clusters: Vec<Vec<usize>> = point_clusters
                .iter()
                .map(|ps| Vec::with_capacity(ps.iter().map(|&p| points.counts[p] as usize).sum()))
                .collect();
            for (k, &a) in kept.iter().enumerate() {
                clusters[cluster_of_point[points.point_of[k] as usize] as usize].push(a);
            }
            let (mut rows, mut counts) = (Vec::new(), Vec::new());
            let with_medoids = point_clusters
                .iter()
                .zip(clusters)
                .map(|(ps, members)| {
                    rows.clear();
                    counts.clear();
                    rows.extend(ps.iter().copied());
                    counts.extend(ps.iter().map(|&p| points.counts[p]));
                    let best = weighted_medoid(x, &rows, &counts).map_or(0, |k| ps[k]);
                    let medoid = kept
                        .iter()
                        .zip(&points.point_of)
                        .find(|&(_, &p)| p as usize == best)
                        .map_or(members[0], |(&a, _)| a);
                    (members, medoid)
                })
                .collect();
            Profile::summarise(actions, with_medoids, now, self.params.lambda)
        };
        Ok(alphas.iter().map(|&alpha| cut(alpha)).collect())
    }
}

/// The distinct items of some actions, in order of first appearance, with their counts.
#[derive(Debug, Clone, Default)]
struct Points {
    /// Item row of each point.
    rows: Vec<usize>,
    /// Number of the actions on each point.
    counts: Vec<f32>,
    /// Point of each of the grouped actions.
    point_of: Vec<u32>,
    /// Point of each item row, `u32::MAX` for none (kept all-`MAX` between calls).
    slot: Vec<u32>,
}

impl Points {
    /// Groups the actions `rows` (each on item `item_of[row]`, of `items` item rows).
    fn group(&mut self, rows: &[usize], item_of: &[u32], items: usize) {
        self.rows.clear();
        self.counts.clear();
        self.point_of.clear();
        if self.slot.len() < items {
            self.slot.resize(items, u32::MAX);
        }
        for &a in rows {
            let item = item_of[a] as usize;
            let mut p = self.slot[item];
            if p == u32::MAX {
                p = self.rows.len() as u32;
                self.slot[item] = p;
                self.rows.push(item);
                self.counts.push(0.0);
            }
            self.counts[p as usize] += 1.0;
            self.point_of.push(p);
        }
        for &item in &self.rows {
            self.slot[item] = u32::MAX;
        }
    }

    /// The medoid of the grouped actions `members` as an action row: the first of them on the
    /// item nearest to their weighted centroid.
    fn medoid_action(&self, items: Embeddings<'_>, members: &[usize], item_of: &[u32]) -> usize {
        weighted_medoid(items, &self.rows, &self.counts)
            .and_then(|k| {
                members
                    .iter()
                    .find(|&&a| item_of[a] as usize == self.rows[k])
            })
            .copied()
            .unwrap_or(members[0])
    }
}
