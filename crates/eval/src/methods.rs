//! User representations compared by the evaluation: each turns a user's training engagements
//! into query embeddings (or, for popularity, directly into candidates).

use pinnersage_core::blend::{shares, weighted_mean};
use pinnersage_core::distance::SqDistances;
use pinnersage_core::importance::decay;
use pinnersage_core::kmeans::kmeans;
use pinnersage_core::sample::{Selection, SplitMix64, sample_seed};
use pinnersage_core::ward::complete_linkage;
use pinnersage_core::{Actions, Clusterer, CoreError, Embeddings, Profile, ProfileParams};
use pinnersage_engine::engine::choose_interests;

use crate::split::UserSplit;

/// How a user's training items are grouped into interests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clustering {
    /// Ward cut at alpha (PinnerSage).
    Ward,
    /// Complete linkage cut into as many clusters as Ward gives the same user, so that only the
    /// linkage differs (the paper does not say how it cut complete linkage).
    Complete,
    /// k-means with this many clusters (fewer when the user has fewer distinct items).
    KMeans {
        /// Number of clusters.
        k: usize,
    },
}

/// Lloyd rounds of the k-means ablation.
const KMEANS_MAX_ITER: usize = 100;

/// How a cluster becomes a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// The medoid's embedding (PinnerSage).
    Medoid,
    /// The mean of the members' embeddings.
    Centroid,
}

/// Which clusters become queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Every cluster.
    All,
    /// This many, sampled in proportion to importance without replacement.
    Sample(usize),
    /// The this many most important.
    Top(usize),
}

pub use pinnersage_core::blend::Blend;

/// A user's global interest: one more query beside the chosen interests, with a share of the
/// candidate turns.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Global {
    /// None (the paper).
    #[default]
    None,
    /// The decay average of the training items (same λ), with this share: what the server
    /// serves (`serve --global-share`) from the items' stored importance.
    DecayAverage(f64),
    /// The importance-weighted mean of all the medoids, with this share: what the server
    /// serves from a profile generation written before item importance was stored.
    MedoidAverage(f64),
}

impl Global {
    /// The share of the turns (0 for none).
    pub fn share(self) -> f64 {
        match self {
            Global::None => 0.0,
            Global::DecayAverage(s) | Global::MedoidAverage(s) => s,
        }
    }
}

/// A user representation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The latest training item (the paper's "last pin" baseline).
    LastItem,
    /// The decay-weighted average of the training items (weights `exp(−λ·age_days)`).
    DecayAverage {
        /// Decay per day.
        lambda: f64,
    },
    /// Clusters of the training items, each summarised by a medoid or centroid.
    Clusters {
        /// Ward (PinnerSage) or an ablation.
        clustering: Clustering,
        /// Importance decay per day.
        lambda: f64,
        /// Medoid or centroid.
        summary: Summary,
        /// All clusters or a sample.
        pick: Pick,
        /// How their neighbour lists are blended.
        blend: Blend,
        /// The user's global interest, if any (the paper: none).
        global: Global,
    },
    /// The most engaged training items of all users (no personalisation).
    Popularity,
}

impl Method {
    /// A short stable name (used in reports and metrics.json).
    ///
    /// ```
    /// use pinnersage_eval::methods::{Clustering, Method, Pick, Summary};
    /// use pinnersage_eval::methods::{Blend, Global};
    /// let m = Method::pinnersage(0.01, Summary::Medoid, Pick::Sample(3));
    /// assert_eq!(m.name(), "ward-medoid-sample3-lambda0.01");
    /// let k = Method::Clusters { clustering: Clustering::KMeans { k: 5 }, lambda: 0.01,
    ///                            summary: Summary::Centroid, pick: Pick::Sample(3),
    ///                            blend: Blend::Importance, global: Global::DecayAverage(0.25) };
    /// assert_eq!(k.name(), "kmeans5-centroid-sample3-lambda0.01-importance-global0.25");
    /// ```
    pub fn name(&self) -> String {
        match *self {
            Method::LastItem => "last-item".into(),
            Method::DecayAverage { lambda } => format!("decay-average-lambda{lambda}"),
            Method::Clusters {
                clustering,
                lambda,
                summary,
                pick,
                blend,
                global,
            } => {
                let c = match clustering {
                    Clustering::Ward => "ward".to_string(),
                    Clustering::Complete => "complete".to_string(),
                    Clustering::KMeans { k } => format!("kmeans{k}"),
                };
                let s = match summary {
                    Summary::Medoid => "medoid",
                    Summary::Centroid => "centroid",
                };
                let p = match pick {
                    Pick::All => "all".to_string(),
                    Pick::Sample(e) => format!("sample{e}"),
                    Pick::Top(e) => format!("top{e}"),
                };
                let b = match blend {
                    Blend::RoundRobin => "",
                    Blend::Importance => "-importance",
                    Blend::Score => "-score",
                };
                let g = match global {
                    Global::None => String::new(),
                    Global::DecayAverage(s) => format!("-global{s}"),
                    Global::MedoidAverage(s) => format!("-medoidglobal{s}"),
                };
                format!("{c}-{s}-{p}-lambda{lambda}{b}{g}")
            }
            Method::Popularity => "popularity".into(),
        }
    }

    /// What the method is, in words (report tables).
    pub fn describe(&self) -> String {
        match *self {
            Method::LastItem => "last item (baseline)".into(),
            Method::DecayAverage { lambda } => format!("decay average, λ = {lambda}"),
            Method::Clusters {
                clustering,
                lambda,
                summary,
                pick,
                blend,
                global,
            } => {
                let c = match clustering {
                    Clustering::Ward => "Ward".to_string(),
                    Clustering::Complete => "complete linkage".to_string(),
                    Clustering::KMeans { k } => format!("k-means (k = {k})"),
                };
                let s = match summary {
                    Summary::Medoid => "medoids",
                    Summary::Centroid => "centroids",
                };
                let p = match pick {
                    Pick::All => "all clusters".to_string(),
                    Pick::Sample(e) => format!("sample {e}"),
                    Pick::Top(e) => format!("top {e}"),
                };
                let b = match blend {
                    Blend::RoundRobin => "",
                    Blend::Importance => ", importance quotas",
                    Blend::Score => ", score-merged",
                };
                let g = match global {
                    Global::None => String::new(),
                    Global::DecayAverage(s) => {
                        format!(", + decay average ({:.0}% share)", 100.0 * s)
                    }
                    Global::MedoidAverage(s) => {
                        format!(", + medoid average ({:.0}% share)", 100.0 * s)
                    }
                };
                format!("{c} + {s}, {p}, λ = {lambda}{b}{g}")
            }
            Method::Popularity => "popularity (most engaged training items)".into(),
        }
    }
}

impl Method {
    /// Ward clusters summarised by `summary`, as PinnerSage builds them.
    pub fn pinnersage(lambda: f64, summary: Summary, pick: Pick) -> Method {
        Method::Clusters {
            clustering: Clustering::Ward,
            lambda,
            summary,
            pick,
            blend: Blend::RoundRobin,
            global: Global::None,
        }
    }

    /// This method with its interests blended by `blend` and the `global` interest
    /// (single-embedding methods are returned unchanged).
    pub fn blended(self, blend: Blend, global: Global) -> Method {
        match self {
            Method::Clusters {
                clustering,
                lambda,
                summary,
                pick,
                ..
            } => Method::Clusters {
                clustering,
                lambda,
                summary,
                pick,
                blend,
                global,
            },
            other => other,
        }
    }
}

/// The decay average's share of the candidates in the default comparison's "global interest"
/// rows.
pub const GLOBAL_SHARE: f64 = 0.25;

/// The default comparison: the baselines, PinnerSage and its ablations from the paper.
pub fn default_methods() -> Vec<Method> {
    let ward = Method::pinnersage;
    let other = |clustering, summary| Method::Clusters {
        clustering,
        lambda: 0.01,
        summary,
        pick: Pick::Sample(3),
        blend: Blend::RoundRobin,
        global: Global::None,
    };
    vec![
        Method::LastItem,
        Method::DecayAverage { lambda: 0.0 },
        Method::DecayAverage { lambda: 0.01 },
        Method::DecayAverage { lambda: 0.1 },
        ward(0.01, Summary::Medoid, Pick::Sample(1)),
        ward(0.01, Summary::Medoid, Pick::Sample(3)),
        ward(0.01, Summary::Medoid, Pick::All),
        ward(0.0, Summary::Medoid, Pick::Sample(3)),
        ward(0.1, Summary::Medoid, Pick::Sample(3)),
        ward(0.01, Summary::Centroid, Pick::Sample(3)),
        other(Clustering::KMeans { k: 5 }, Summary::Medoid),
        other(Clustering::KMeans { k: 5 }, Summary::Centroid),
        other(Clustering::Complete, Summary::Medoid),
        // Beyond the paper: how the interests' lists are blended.
        ward(0.01, Summary::Medoid, Pick::Top(3)),
        ward(0.01, Summary::Medoid, Pick::All).blended(Blend::Importance, Global::None),
        ward(0.01, Summary::Medoid, Pick::All).blended(Blend::Score, Global::None),
        ward(0.01, Summary::Medoid, Pick::All)
            .blended(Blend::RoundRobin, Global::DecayAverage(GLOBAL_SHARE)),
        ward(0.01, Summary::Medoid, Pick::All)
            .blended(Blend::Score, Global::DecayAverage(GLOBAL_SHARE)),
        ward(0.01, Summary::Medoid, Pick::Sample(3))
            .blended(Blend::RoundRobin, Global::DecayAverage(GLOBAL_SHARE)),
        // As generations without item importance serve it: the medoids' weighted mean.
        ward(0.01, Summary::Medoid, Pick::All)
            .blended(Blend::RoundRobin, Global::MedoidAverage(GLOBAL_SHARE)),
        Method::Popularity,
    ]
}

/// A user's query embeddings under one method.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserQueries {
    /// The query embeddings (empty for [`Method::Popularity`]).
    pub queries: Vec<Vec<f32>>,
    /// Each query's share of the candidate turns ([`pinnersage_core::blend::shares`]; the
    /// retriever blends round-robin when they are all equal, as the server does).
    pub weights: Vec<f64>,
    /// How the queries' neighbour lists become one list.
    pub blend: Blend,
    /// Interests the representation holds before any sampling (1 for single-embedding methods,
    /// 0 for popularity).
    pub clusters: usize,
}

/// Builds the query embeddings of `user` under `method`. `vectors` is the row-major item matrix;
/// the user's "now" is their last training time.
pub fn queries(
    method: &Method,
    user: &UserSplit,
    vectors: &[f32],
    dim: usize,
    alpha: f64,
    seed: u64,
) -> Result<UserQueries, CoreError> {
    let row = |r: u32| &vectors[r as usize * dim..(r as usize + 1) * dim];
    let now = user.train.iter().map(|&(_, t)| t).max().unwrap_or(0);
    let single = |q: Vec<f32>| UserQueries {
        queries: vec![q],
        weights: vec![1.0],
        blend: Blend::RoundRobin,
        clusters: 1,
    };
    let decay_average = |lambda: f64| {
        let mut avg = vec![0.0f64; dim];
        for &(r, t) in &user.train {
            let w = decay(now, t, lambda);
            for (a, &x) in avg.iter_mut().zip(row(r)) {
                *a += w * f64::from(x);
            }
        }
        avg.into_iter().map(|a| a as f32).collect::<Vec<f32>>()
    };
    match *method {
        Method::Popularity => Ok(UserQueries::default()),
        Method::LastItem => {
            let last = user.train.iter().max_by_key(|&&(_, t)| t).map(|&(r, _)| r);
            Ok(last.map(|r| single(row(r).to_vec())).unwrap_or_default())
        }
        Method::DecayAverage { lambda } => Ok(single(decay_average(lambda))),
        Method::Clusters {
            clustering,
            lambda,
            summary,
            pick,
            blend,
            global,
        } => {
            let (data, times) = user.train_matrix(vectors, dim);
            let x = Embeddings::new(&data, dim)?;
            let actions = Actions::new(x, &times, None)?;
            let params = ProfileParams {
                alpha,
                lambda,
                ..ProfileParams::default()
            };
            let mut clusterer = Clusterer::new(params)?;
            let profile = match clustering {
                Clustering::Ward => clusterer.profile(&actions, now)?,
                Clustering::Complete => {
                    let k = clusterer.profile(&actions, now)?.clusters.len();
                    let mut distances = SqDistances::default();
                    distances.compute(x);
                    let parts = complete_linkage(&mut distances).cut_into(k);
                    Profile::from_clusters(&actions, parts, now, lambda)
                }
                Clustering::KMeans { k } => {
                    let parts = kmeans(x, k, seed ^ u64::from(user.user), KMEANS_MAX_ITER);
                    Profile::from_clusters(&actions, parts, now, lambda)
                }
            };
            let (selection, e) = match pick {
                Pick::All => (Selection::All, 0),
                Pick::Sample(e) => (Selection::Sample, e),
                Pick::Top(e) => (Selection::Top, e),
            };
            let weights: Vec<f64> = profile.clusters.iter().map(|c| c.importance).collect();
            let mut rng = SplitMix64::new(sample_seed(&user.user.to_le_bytes(), 0, seed));
            // The served plan's choice (with its cap on every interest).
            let chosen = choose_interests(&weights, selection, e, &mut rng);
            let importance: Vec<f64> = chosen
                .iter()
                .map(|&c| profile.clusters[c].importance)
                .collect();
            let mut queries: Vec<Vec<f32>> = chosen
                .into_iter()
                .map(|c| {
                    let cluster = &profile.clusters[c];
                    match summary {
                        Summary::Medoid => {
                            data[cluster.medoid * dim..(cluster.medoid + 1) * dim].to_vec()
                        }
                        Summary::Centroid => {
                            let mut mean = vec![0.0f64; dim];
                            for &m in &cluster.members {
                                for (a, &x) in mean.iter_mut().zip(&data[m * dim..(m + 1) * dim]) {
                                    *a += f64::from(x);
                                }
                            }
                            mean.into_iter()
                                .map(|a| (a / cluster.members.len() as f64) as f32)
                                .collect()
                        }
                    }
                })
                .collect();
            let global_query = match global {
                Global::None => None,
                Global::DecayAverage(_) => Some(decay_average(lambda)),
                Global::MedoidAverage(_) => Some(weighted_mean(
                    profile
                        .clusters
                        .iter()
                        .map(|c| (&data[c.medoid * dim..(c.medoid + 1) * dim], c.importance)),
                    dim,
                )),
            };
            let share = if queries.is_empty() {
                0.0
            } else {
                global.share()
            };
            let weights = shares(blend, &importance, share);
            if share > 0.0 {
                queries.extend(global_query);
            }
            Ok(UserQueries {
                queries,
                weights,
                blend,
                clusters: profile.clusters.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interest_is_capped_as_the_server_caps_it() {
        // 30 items on the axes of 30 dimensions: 30 clusters at a small alpha.
        let dim = 30;
        let mut vectors = vec![0.0f32; dim * dim];
        for i in 0..dim {
            vectors[i * dim + i] = 1.0;
        }
        let user = UserSplit {
            user: 7,
            train: (0..dim as u32).map(|r| (r, 1_000 + i64::from(r))).collect(),
            test: Vec::new(),
        };
        let method = Method::pinnersage(0.01, Summary::Medoid, Pick::All);
        let q = queries(&method, &user, &vectors, dim, 0.1, 1).unwrap();
        assert_eq!(q.clusters, 30);
        assert_eq!(q.queries.len(), pinnersage_engine::MAX_MEDOIDS);
        // The most important (here: the most recent) interests.
        let recent = |query: &Vec<f32>| query.iter().position(|&x| x == 1.0).unwrap() >= 10;
        assert!(q.queries.iter().all(recent));
    }
}
