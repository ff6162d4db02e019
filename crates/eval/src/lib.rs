//! Offline evaluation, as in the paper: split each user's engagements by time, represent the user
//! by each method's embeddings, retrieve the same number of distinct nearest items for every method (training
//! items excluded), and score the candidates against the user's future items with Recall and
//! Relevance; every method is also reported as a lift over the last-item baseline, with
//! bootstrap confidence intervals over users.
#![warn(missing_docs)]

pub mod error;
pub mod evaluate;
pub mod evaluation;
pub mod examples;
pub mod inputs;
pub mod markdown;
pub mod methods;
pub mod metrics;
pub mod online;
pub mod plot;
pub mod split;
pub mod sweep;
pub mod tune;

pub use error::EvalError;
pub use evaluate::{EvalConfig, Report, evaluate};
pub use evaluation::{EvalOptions, EvalOutput, Evaluation};
pub use inputs::{EvalData, EvalFiles};
pub use split::Split;
