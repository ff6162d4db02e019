//! A batch asked of a running server (`POST /v1/admin/batch`): the wire type both the server and
//! the CLI's hand-off use.

use pinnersage_store::settings::GenerationSettings;
use serde::{Deserialize, Serialize};

use super::BatchConfig;

/// A batch request: the generation's settings and `force`, each optional (left out: its
/// default; `now` defaults to the server's clock).
///
/// ```
/// use pinnersage_pipeline::batch::{BatchConfig, BatchRequest};
/// let request: BatchRequest =
///     serde_json::from_str(r#"{"alpha": 0.5, "variant_alphas": [1.0]}"#).unwrap();
/// let config = request.config(1_700_000_000);
/// assert_eq!((config.settings.now, config.settings.params.alpha), (1_700_000_000, 0.5));
/// assert_eq!(config.variant_alphas, [1.0]);
/// let round_trip = BatchRequest::from(&config).config(0);
/// assert_eq!(round_trip, config);
/// assert!(serde_json::from_str::<BatchRequest>(r#"{"alpah": 0.5}"#).is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The moment profiles are computed for (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<i64>,
    /// Days of history per user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u32>,
    /// Merge threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Importance decay per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    /// Latest actions per user clustered at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_actions: Option<usize>,
    /// Publish even a generation that would be refused ([`BatchConfig::force`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Also cut at these alphas ([`BatchConfig::variant_alphas`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variant_alphas: Vec<f64>,
}

impl BatchRequest {
    /// The batch it asks for, `now` defaulting to `default_now`, everything else to
    /// [`BatchConfig::new`]'s defaults.
    pub fn config(&self, default_now: i64) -> BatchConfig {
        let mut config = BatchConfig::new(self.now.unwrap_or(default_now));
        let settings = &mut config.settings;
        let params = &mut settings.params;
        params.alpha = self.alpha.unwrap_or(params.alpha);
        params.lambda = self.lambda.unwrap_or(params.lambda);
        params.max_actions = self.max_actions.unwrap_or(params.max_actions);
        settings.window_days = self.window_days.unwrap_or(settings.window_days);
        config.force = self.force.unwrap_or(false);
        config.variant_alphas = self.variant_alphas.clone();
        config
    }
}

impl From<&BatchConfig> for BatchRequest {
    /// Every setting a server can take from a batch run (not its shard, chunk size or output,
    /// which a server's batch does not have).
    fn from(config: &BatchConfig) -> Self {
        let GenerationSettings {
            now,
            window_days,
            ref params,
        } = config.settings;
        Self {
            now: Some(now),
            window_days: Some(window_days),
            alpha: Some(params.alpha),
            lambda: Some(params.lambda),
            max_actions: Some(params.max_actions),
            force: Some(config.force),
            variant_alphas: config.variant_alphas.clone(),
        }
    }
}
