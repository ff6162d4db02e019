//! The paper's sweeps: PinnerSage's quality against the merge threshold alpha and against the
//! number of sampled embeddings e (their Fig. 7).

use crate::error::EvalError;
use serde::Serialize;

use crate::evaluate::{EvalConfig, MethodResult, Stat, evaluate};
use crate::methods::{Method, Pick, Summary};
use crate::split::Split;

/// One point of a sweep: PinnerSage (Ward + medoids, λ = 0.01) at one setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepPoint {
    /// The swept value (alpha, or e).
    pub x: f64,
    /// Mean interests per unit.
    pub clusters_per_user: f64,
    /// Mean query embeddings per unit.
    pub embeddings_per_user: f64,
    /// Recall, with its lift over the last item.
    pub recall: Stat,
    /// Relevance, with its lift over the last item.
    pub relevance: Stat,
    /// Diversity of the first recommendations.
    pub diversity: Stat,
}

impl SweepPoint {
    fn new(x: f64, m: &MethodResult) -> Self {
        Self {
            x,
            clusters_per_user: m.clusters_per_user,
            embeddings_per_user: m.embeddings_per_user,
            recall: m.recall,
            relevance: m.relevance,
            diversity: m.diversity,
        }
    }
}

/// PinnerSage sampling 3 medoids at each alpha of `alphas` (other settings from `config`).
/// `progress(n)` counts units over all alphas.
pub fn alpha_sweep(
    vectors: &[f32],
    dim: usize,
    split: &Split,
    config: &EvalConfig,
    alphas: &[f64],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<SweepPoint>, EvalError> {
    let units = split.units.len() as u64;
    alphas
        .iter()
        .enumerate()
        .map(|(i, &alpha)| {
            let config = EvalConfig {
                methods: vec![
                    Method::LastItem,
                    Method::pinnersage(0.01, Summary::Medoid, Pick::Sample(3)),
                ],
                alpha,
                ..config.clone()
            };
            let report = evaluate(vectors, dim, split, &config, &|n| {
                progress(i as u64 * units + n)
            })?;
            Ok(SweepPoint::new(alpha, &report.methods[1]))
        })
        .collect()
}

/// PinnerSage sampling `e` medoids for each `e` of `es` (alpha and the rest from `config`).
pub fn embeddings_sweep(
    vectors: &[f32],
    dim: usize,
    split: &Split,
    config: &EvalConfig,
    es: &[usize],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<SweepPoint>, EvalError> {
    let mut methods = vec![Method::LastItem];
    methods.extend(
        es.iter()
            .map(|&e| Method::pinnersage(0.01, Summary::Medoid, Pick::Sample(e))),
    );
    let config = EvalConfig {
        methods,
        ..config.clone()
    };
    let report = evaluate(vectors, dim, split, &config, progress)?;
    Ok(es
        .iter()
        .zip(&report.methods[1..])
        .map(|(&e, m)| SweepPoint::new(e as f64, m))
        .collect())
}
