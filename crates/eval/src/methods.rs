//! User representations compared by the evaluation: each turns a user's training engagements
//! into query embeddings (or, for popularity, directly into candidates).

use pinnersage_core::importance::decay;
use pinnersage_core::sample::{SplitMix64, sample_seed, sample_weighted};
use pinnersage_core::{Actions, Clusterer, CoreError, Embeddings, ProfileParams};

use crate::split::UserSplit;

/// How a Ward cluster becomes a query.
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
    /// Ward clusters of the training items cut at alpha.
    Ward {
        /// Importance decay per day.
        lambda: f64,
        /// Medoid or centroid.
        summary: Summary,
        /// All clusters or a sample.
        pick: Pick,
    },
    /// The most engaged training items of all users (no personalisation).
    Popularity,
}

impl Method {
    /// A short stable name (used in reports and metrics.json).
    ///
    /// ```
    /// use pinnersage_eval::methods::{Method, Pick, Summary};
    /// let m = Method::Ward { lambda: 0.01, summary: Summary::Medoid, pick: Pick::Sample(3) };
    /// assert_eq!(m.name(), "ward-medoid-sample3-lambda0.01");
    /// ```
    pub fn name(&self) -> String {
        match *self {
            Method::LastItem => "last-item".into(),
            Method::DecayAverage { lambda } => format!("decay-average-lambda{lambda}"),
            Method::Ward {
                lambda,
                summary,
                pick,
            } => {
                let s = match summary {
                    Summary::Medoid => "medoid",
                    Summary::Centroid => "centroid",
                };
                let p = match pick {
                    Pick::All => "all".to_string(),
                    Pick::Sample(e) => format!("sample{e}"),
                };
                format!("ward-{s}-{p}-lambda{lambda}")
            }
            Method::Popularity => "popularity".into(),
        }
    }

    /// What the method is, in words (report tables).
    pub fn describe(&self) -> String {
        match *self {
            Method::LastItem => "last item (baseline)".into(),
            Method::DecayAverage { lambda } => format!("decay average, λ = {lambda}"),
            Method::Ward {
                lambda,
                summary,
                pick,
            } => {
                let s = match summary {
                    Summary::Medoid => "medoids",
                    Summary::Centroid => "centroids",
                };
                match pick {
                    Pick::All => format!("Ward + {s}, all clusters, λ = {lambda}"),
                    Pick::Sample(e) => format!("Ward + {s}, sample {e}, λ = {lambda}"),
                }
            }
            Method::Popularity => "popularity (most engaged training items)".into(),
        }
    }
}

/// The default comparison: the baselines, PinnerSage and its ablations from the paper.
pub fn default_methods() -> Vec<Method> {
    let ward = |lambda, summary, pick| Method::Ward {
        lambda,
        summary,
        pick,
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
        Method::Popularity,
    ]
}

/// Builds the query embeddings of `user` under `method` (empty for [`Method::Popularity`]).
/// `vectors` is the row-major item matrix; the user's "now" is their last training time.
pub fn queries(
    method: &Method,
    user: &UserSplit,
    vectors: &[f32],
    dim: usize,
    alpha: f64,
    seed: u64,
) -> Result<Vec<Vec<f32>>, CoreError> {
    let row = |r: u32| &vectors[r as usize * dim..(r as usize + 1) * dim];
    let now = user.train.iter().map(|&(_, t)| t).max().unwrap_or(0);
    match *method {
        Method::Popularity => Ok(Vec::new()),
        Method::LastItem => {
            let last = user.train.iter().max_by_key(|&&(_, t)| t).map(|&(r, _)| r);
            Ok(last.map(|r| vec![row(r).to_vec()]).unwrap_or_default())
        }
        Method::DecayAverage { lambda } => {
            let mut avg = vec![0.0f64; dim];
            for &(r, t) in &user.train {
                let w = decay(now, t, lambda);
                for (a, &x) in avg.iter_mut().zip(row(r)) {
                    *a += w * f64::from(x);
                }
            }
            Ok(vec![avg.into_iter().map(|a| a as f32).collect()])
        }
        Method::Ward {
            lambda,
            summary,
            pick,
        } => {
            let mut data = Vec::with_capacity(user.train.len() * dim);
            let mut times = Vec::with_capacity(user.train.len());
            for &(r, t) in &user.train {
                data.extend_from_slice(row(r));
                times.push(t);
            }
            let x = Embeddings::new(&data, dim)?;
            let actions = Actions::new(x, &times, None)?;
            let mut clusterer = Clusterer::new(ProfileParams {
                alpha,
                lambda,
                ..ProfileParams::default()
            })?;
            let profile = clusterer.profile(&actions, now)?;
            let chosen: Vec<usize> = match pick {
                Pick::All => (0..profile.clusters.len()).collect(),
                Pick::Sample(e) => {
                    let weights: Vec<f64> = profile.clusters.iter().map(|c| c.importance).collect();
                    let mut rng = SplitMix64::new(sample_seed(&user.user.to_le_bytes(), 0, seed));
                    sample_weighted(&weights, e, &mut rng)
                }
            };
            Ok(chosen
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
                .collect())
        }
    }
}
