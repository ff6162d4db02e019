//! [`Learner`]: one of the ways to learn item embeddings from engagements alone, so
//! `pinnersage embed`, the evaluation and the Python package name a method the same way.

use crate::als::{self, AlsParams};
use crate::progress::Progress;
use crate::svd::{self, SvdParams};

/// An engagement-trained item-embedding method with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Learner {
    /// Truncated SVD of the binary user x item matrix ([`svd`]).
    Svd(SvdParams),
    /// Implicit alternating least squares ([`als`]).
    Als(AlsParams),
}

impl Default for Learner {
    fn default() -> Self {
        Self::Svd(SvdParams::default())
    }
}

impl Learner {
    /// The method's defaults with dimension `dim` and seed `seed`; `method` is [`Learner::key`]'s
    /// spelling.
    ///
    /// ```
    /// use pinnersage_core::learned::Learner;
    /// let als = Learner::with("als", 32, 7).unwrap();
    /// assert_eq!((als.key(), als.dim()), ("als", 32));
    /// assert!(Learner::with("pca", 32, 7).is_none());
    /// ```
    pub fn with(method: &str, dim: usize, seed: u64) -> Option<Self> {
        match method {
            "svd" => Some(Self::Svd(SvdParams {
                dim,
                seed,
                ..SvdParams::default()
            })),
            "als" => Some(Self::Als(AlsParams {
                dim,
                seed,
                ..AlsParams::default()
            })),
            _ => None,
        }
    }

    /// The method's short name: `svd` or `als`.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Svd(_) => "svd",
            Self::Als(_) => "als",
        }
    }

    /// What the method is, for reports.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Svd(_) => "truncated SVD",
            Self::Als(_) => "implicit ALS",
        }
    }

    /// Embedding dimension asked for.
    pub fn dim(&self) -> usize {
        match self {
            Self::Svd(p) => p.dim,
            Self::Als(p) => p.dim,
        }
    }

    /// Item embeddings (`items x dim`, row-major, unit rows; zero rows for items nobody
    /// engaged with; `dim` may be lower than asked when there are fewer users or items) from
    /// each user's engaged item indices; returns them and their dimension.
    pub fn item_embeddings(
        &self,
        users: &[Vec<u32>],
        items: usize,
        progress: &dyn Progress,
    ) -> (Vec<f32>, usize) {
        let vectors = match self {
            Self::Svd(p) => svd::item_embeddings(users, items, *p).0,
            Self::Als(p) => als::item_embeddings(users, items, *p, progress),
        };
        let dim = vectors.len().checked_div(items).unwrap_or(self.dim());
        (vectors, dim)
    }
}
