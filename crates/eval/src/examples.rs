//! A few users shown in full: their PinnerSage interests and what each method recommends, so
//! that a report can be read with item titles beside the numbers.

use crate::error::EvalError;
use pinnersage_core::{Actions, Clusterer, Embeddings, ProfileParams};

use crate::evaluate::{EvalConfig, Retriever};
use crate::methods::Method;
use crate::split::{Split, UserSplit};

/// One interest of an example user.
#[derive(Debug, Clone, PartialEq)]
pub struct Interest {
    /// Item row of the medoid.
    pub medoid: u32,
    /// Training actions in the cluster.
    pub size: usize,
    /// Importance at the user's last training time (λ = 0.01).
    pub importance: f64,
}

/// One example unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Dense user index of the unit.
    pub user: u32,
    /// Training engagements.
    pub train: usize,
    /// Ward interests at the evaluation's alpha, most important first.
    pub interests: Vec<Interest>,
    /// The test items.
    pub test: Vec<u32>,
    /// Per method of the configuration: its description and first recommendations.
    pub recommendations: Vec<(String, Vec<u32>)>,
}

/// Up to `count` example units: light to heavy users (by training engagements, at evenly spaced
/// quantiles), each with its interests and the first `top` recommendations of every method in
/// `config`.
pub fn examples(
    vectors: &[f32],
    dim: usize,
    split: &Split,
    config: &EvalConfig,
    count: usize,
    top: usize,
) -> Result<Vec<Example>, EvalError> {
    let retriever = Retriever::new(vectors, dim, split, config)?;
    let mut order: Vec<&UserSplit> = split.units.iter().collect();
    order.sort_by_key(|u| (u.train.len(), u.user));
    let picks: Vec<&UserSplit> = match count.min(order.len()) {
        0 => Vec::new(),
        1 => vec![order[order.len() / 2]],
        n => (0..n).map(|i| order[spaced(i, n, order.len())]).collect(),
    };
    picks
        .into_iter()
        .map(|user| {
            let train = user.train_items();
            let keep = |r: u32| train.binary_search(&r).is_err();
            let recommendations = config
                .methods
                .iter()
                .map(|m| {
                    let mut got = retriever.retrieve(m, user, &keep)?.candidates;
                    got.truncate(top);
                    Ok((m.describe(), got))
                })
                .collect::<Result<Vec<_>, EvalError>>()?;
            Ok(Example {
                user: user.user,
                train: user.train.len(),
                interests: interests(user, vectors, dim, config.alpha)?,
                test: user.test.clone(),
                recommendations,
            })
        })
        .collect()
}

/// The index of the `i`-th of `n` picks spread from the 10th to the 90th percentile of `len`.
fn spaced(i: usize, n: usize, len: usize) -> usize {
    let q = 0.1 + 0.8 * i as f64 / (n - 1) as f64;
    ((len - 1) as f64 * q).round() as usize
}

/// The user's Ward interests over all training engagements.
fn interests(
    user: &UserSplit,
    vectors: &[f32],
    dim: usize,
    alpha: f64,
) -> Result<Vec<Interest>, EvalError> {
    let (data, times) = user.train_matrix(vectors, dim);
    let now = times.iter().copied().max().unwrap_or(0);
    let actions = Actions::new(Embeddings::new(&data, dim)?, &times, None)?;
    let profile = Clusterer::new(ProfileParams {
        alpha,
        ..ProfileParams::default()
    })?
    .profile(&actions, now)?;
    Ok(profile
        .clusters
        .iter()
        .map(|c| Interest {
            medoid: user.train[c.medoid].0,
            size: c.size(),
            importance: c.importance,
        })
        .collect())
}

/// The methods an example shows: the baseline and PinnerSage.
pub fn example_methods() -> Vec<Method> {
    use crate::methods::{Pick, Summary};
    vec![
        Method::LastItem,
        Method::pinnersage(0.01, Summary::Medoid, Pick::Sample(3)),
    ]
}
