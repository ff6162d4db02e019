//! What a profile generation is computed with: the moment, the window and the clustering
//! parameters. One type for every place that computes, records or ships a generation (the batch,
//! the in-memory batch, imported and shipped profiles, the online path that follows the served
//! generation); on disk and on the wire its fields are flat: `now`, `window_days`, `alpha`,
//! `lambda`, `max_actions`.

use std::ops::RangeInclusive;

use pinnersage_core::importance::SECONDS_PER_DAY;
use pinnersage_core::{CoreError, ProfileParams};
use serde::{Deserialize, Serialize};

/// Days of history per user by default (the paper's 90).
pub const DEFAULT_WINDOW_DAYS: u32 = 90;

/// Longest window accepted, in days (a century).
pub const MAX_WINDOW_DAYS: u32 = 36_500;

/// The settings of one profile generation.
///
/// ```
/// use pinnersage_store::settings::GenerationSettings;
/// let settings = GenerationSettings::new(1_000_000);
/// assert_eq!(settings.window(), 1_000_000 - 90 * 86_400..=1_000_000);
/// let json = serde_json::to_string(&settings).unwrap();
/// assert!(json.starts_with(r#"{"now":1000000,"window_days":90,"alpha":"#));
/// assert_eq!(serde_json::from_str::<GenerationSettings>(&json).unwrap(), settings);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "Flat", into = "Flat")]
pub struct GenerationSettings {
    /// The moment profiles are computed for (unix seconds): the window ends here, importance is
    /// measured from here, and a server serving the generation takes later actions online.
    pub now: i64,
    /// Days of history per user.
    pub window_days: u32,
    /// The clustering parameters.
    pub params: ProfileParams,
}

/// A setting out of its domain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// A clustering parameter is out of its domain.
    #[error(transparent)]
    Params(#[from] CoreError),
    /// The window is empty or longer than [`MAX_WINDOW_DAYS`].
    #[error("window_days must be >= 1 (at most {MAX_WINDOW_DAYS}), got {0}")]
    Window(u32),
}

impl GenerationSettings {
    /// Settings at `now` with a [`DEFAULT_WINDOW_DAYS`]-day window and the default parameters.
    pub fn new(now: i64) -> Self {
        Self {
            now,
            window_days: DEFAULT_WINDOW_DAYS,
            params: ProfileParams::default(),
        }
    }

    /// Checks the parameters' domains and the window.
    ///
    /// ```
    /// use pinnersage_store::settings::GenerationSettings;
    /// assert!(GenerationSettings::new(0).validate().is_ok());
    /// let empty = GenerationSettings { window_days: 0, ..GenerationSettings::new(0) };
    /// assert!(empty.validate().unwrap_err().to_string().contains("window_days"));
    /// ```
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.params.validate()?;
        if !(1..=MAX_WINDOW_DAYS).contains(&self.window_days) {
            return Err(SettingsError::Window(self.window_days));
        }
        Ok(())
    }

    /// The event times the generation covers: `now − window_days·86400 ..= now`.
    pub fn window(&self) -> RangeInclusive<i64> {
        let length = i64::from(self.window_days) * SECONDS_PER_DAY as i64;
        self.now.saturating_sub(length)..=self.now
    }
}

/// The flat form of [`GenerationSettings`] on disk and on the wire.
#[derive(Serialize, Deserialize)]
struct Flat {
    now: i64,
    window_days: u32,
    alpha: f64,
    lambda: f64,
    max_actions: usize,
}

impl From<Flat> for GenerationSettings {
    fn from(f: Flat) -> Self {
        Self {
            now: f.now,
            window_days: f.window_days,
            params: ProfileParams {
                alpha: f.alpha,
                lambda: f.lambda,
                max_actions: f.max_actions,
            },
        }
    }
}

impl From<GenerationSettings> for Flat {
    fn from(s: GenerationSettings) -> Self {
        Self {
            now: s.now,
            window_days: s.window_days,
            alpha: s.params.alpha,
            lambda: s.params.lambda,
            max_actions: s.params.max_actions,
        }
    }
}

impl pinnersage_core::error::Kind for SettingsError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        BadInput
    }
}
