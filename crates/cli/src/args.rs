//! What several commands share: the input-error type (exit code 2), the data directory and the
//! column names of an events file as flattened clap arguments, and the CLI's one read of the clock.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use pinnersage_core::ProfileParams;
use pinnersage_core::importance::DEFAULT_LAMBDA;
use pinnersage_core::learned::Learner;
use pinnersage_core::profile::{DEFAULT_ALPHA, DEFAULT_MAX_ACTIONS};
use pinnersage_pipeline::data_in::import_events::EventColumns;
use pinnersage_store::settings::{DEFAULT_WINDOW_DAYS, GenerationSettings};

/// An error caused by the user's input (bad file, bad value): exit code 2, like usage errors.
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// An [`InputError`] from any error's message.
pub fn input(e: impl std::fmt::Display) -> anyhow::Error {
    InputError(e.to_string()).into()
}

/// The parameters of a profile generation: `batch` computes with them, `import profiles` records
/// what an outside job computed with.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// Days of history per user.
    #[arg(long, default_value_t = DEFAULT_WINDOW_DAYS)]
    pub window_days: u32,
    /// Merge threshold (see `pinnersage cluster --help`).
    #[arg(long, default_value_t = DEFAULT_ALPHA, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Importance decay per day.
    #[arg(long = "lambda", default_value_t = DEFAULT_LAMBDA, allow_negative_numbers = true)]
    pub lambda: f64,
    /// Cluster only each user's most recent N actions.
    #[arg(long, default_value_t = DEFAULT_MAX_ACTIONS)]
    pub max_actions: usize,
}

impl ProfileArgs {
    /// The settings of a generation at `now`.
    pub fn settings(&self, now: i64) -> GenerationSettings {
        GenerationSettings {
            now,
            window_days: self.window_days,
            params: ProfileParams {
                alpha: self.alpha,
                lambda: self.lambda,
                max_actions: self.max_actions,
            },
        }
    }
}

/// Profile tables computed elsewhere and what they were computed with: the inputs of
/// `import profiles` and `ship`.
#[derive(Debug, Clone, Args)]
pub struct ProfileTableArgs {
    /// Profile tables: .parquet files or directories of them.
    #[arg(required = true, value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// The time the profiles were computed for, unix seconds (the job's `now`): the online
    /// boundary of the servers that serve them.
    #[arg(long, value_name = "UNIX_SECONDS", allow_negative_numbers = true)]
    pub now: i64,
    /// What the profiles were computed with (pass the job's values).
    #[command(flatten)]
    pub profile: ProfileArgs,
}

impl ProfileTableArgs {
    /// What the profiles were computed with.
    pub fn settings(&self) -> GenerationSettings {
        self.profile.settings(self.now)
    }
}

/// Where pinnersage keeps everything it owns (catalog, events, profiles, index).
#[derive(Debug, Clone, Args)]
pub struct DataDirArg {
    /// The data directory.
    #[arg(
        long,
        value_name = "DIR",
        env = "PINNERSAGE_DATA_DIR",
        default_value = "pinnersage-data"
    )]
    pub data_dir: PathBuf,
}

/// Column (or JSON field) names of an engagements file.
#[derive(Debug, Clone, Args)]
pub struct EventColumnArgs {
    /// Column (or JSON field) holding the user id.
    #[arg(long, default_value = "user")]
    pub user_col: String,
    /// Column holding the item id.
    #[arg(long, default_value = "item")]
    pub item_col: String,
    /// Column holding the time (unix seconds or RFC 3339).
    #[arg(long, default_value = "timestamp")]
    pub time_col: String,
    /// Column holding the action type (optional in the file).
    #[arg(long, default_value = "action")]
    pub action_col: String,
    /// Column holding the action weight, for example a rating (optional; default weight 1).
    #[arg(long, default_value = "weight")]
    pub weight_col: String,
    /// Column holding a unique event id (optional; makes retries idempotent).
    #[arg(long, default_value = "id")]
    pub id_col: String,
}

impl EventColumnArgs {
    /// The names as the readers take them.
    pub fn columns(&self) -> EventColumns {
        EventColumns {
            user: self.user_col.clone(),
            item: self.item_col.clone(),
            time: self.time_col.clone(),
            action: self.action_col.clone(),
            weight: self.weight_col.clone(),
            id: self.id_col.clone(),
        }
    }
}

/// The current time in unix nanoseconds: the CLI's only read of the clock.
pub fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The current time in unix seconds (default `--now`, the ingest benchmark's event times).
pub fn unix_now() -> i64 {
    (unix_nanos() / 1_000_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Columns {
        #[command(flatten)]
        columns: EventColumnArgs,
    }

    #[test]
    fn column_defaults_are_the_readers_defaults() {
        let parsed = Columns::parse_from(["x"]);
        assert_eq!(parsed.columns.columns(), EventColumns::default());
    }
}

/// How item embeddings are learned from engagements (`embed --method`, `eval --learned-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LearnMethodArg {
    /// Truncated SVD of the user x item matrix.
    Svd,
    /// Implicit alternating least squares.
    Als,
}

impl LearnMethodArg {
    /// The method with its defaults, dimension `dim` and seed `seed`.
    pub fn learner(self, dim: usize, seed: u64) -> Learner {
        let key = match self {
            Self::Svd => "svd",
            Self::Als => "als",
        };
        Learner::with(key, dim, seed).expect("both keys name a method")
    }
}
