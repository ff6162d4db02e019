//! Realistic synthetic data, written as Parquet, with the ground truth kept beside it.
//!
//! - Items are L2-normalised mixtures of topics: a primary topic centre, a little of a secondary
//!   one, and Gaussian noise. Topic centres are random directions.
//! - Users have heavy-tailed (Pareto, Zipf-like) activity over the window, 1–30 interests each
//!   (more for heavier users), chosen among topics by Zipf popularity; each interest's weight
//!   drifts linearly over the window, so recent behaviour differs from old.
//! - Each event picks an interest by its drifted weight, then a popular item of that topic, and
//!   is a click (70%) or a repin (30%). Its true interest is written with it (`true_interest`),
//!   so tests can score how well clustering recovers interests (adjusted Rand index).
//!
//! Files: `items.parquet` (`id`, `embedding`) and `events.parquet` (`user`, `item`, `timestamp`,
//! `action`, `true_interest`). Deterministic for a seed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, StringArray, UInt32Array};
use arrow_schema::{DataType, Field};
use pinnersage_core::sample::SplitMix64;

use crate::parquet_io::{ParquetWriter, vector_array, vector_field};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Number of users.
    pub users: usize,
    /// Number of items.
    pub items: usize,
    /// Embedding dimension.
    pub dim: usize,
    /// Random seed.
    pub seed: u64,
    /// Number of topics (default: items / 200, between 8 and 2,000).
    pub topics: Option<usize>,
    /// Days of history.
    pub days: u32,
    /// The end of the history (unix seconds).
    pub now: i64,
    /// Mean actions per user.
    pub mean_actions: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            users: 1_000,
            items: 10_000,
            dim: 64,
            seed: 42,
            topics: None,
            days: 90,
            now: 1_700_000_000,
            mean_actions: 60.0,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSummary {
    /// `items.parquet`.
    pub items_file: PathBuf,
    /// `events.parquet`.
    pub events_file: PathBuf,
    /// Number of topics.
    pub topics: usize,
    /// Number of events.
    pub events: u64,
}

fn gaussian(rng: &mut SplitMix64) -> f32 {
    let (u, v) = (rng.next_f64().max(1e-300), rng.next_f64());
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// Index drawn from the cumulative weights `cdf` (last entry = total).
fn draw(cdf: &[f64], rng: &mut SplitMix64) -> usize {
    let target = rng.next_f64() * cdf[cdf.len() - 1];
    cdf.partition_point(|&c| c <= target).min(cdf.len() - 1)
}

/// Why synthetic data could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// The output directory could not be created.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing a Parquet file failed.
    #[error(transparent)]
    Parquet(#[from] crate::parquet_io::ParquetIoError),
}

/// Generates the data set into `out_dir`; `progress(users_done)` is called now and then.
pub fn generate(
    out_dir: &Path,
    cfg: &SynthConfig,
    progress: &dyn Fn(usize),
) -> Result<SynthSummary, SynthError> {
    if cfg.users == 0 || cfg.items == 0 || cfg.dim == 0 || cfg.days == 0 {
        return Err(SynthError::Config(
            "users, items, dim and days must all be at least 1".into(),
        ));
    }
    if !(cfg.mean_actions >= 3.0 && cfg.mean_actions.is_finite()) {
        return Err(SynthError::Config(format!(
            "mean actions must be at least 3, got {}",
            cfg.mean_actions
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(|source| SynthError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let topics = cfg
        .topics
        .unwrap_or((cfg.items / 200).clamp(8, 2_000))
        .clamp(1, cfg.items);
    let mut rng = SplitMix64::new(cfg.seed);
    let d = cfg.dim;

    // Topic centres, and the items.
    let centres: Vec<Vec<f32>> = (0..topics)
        .map(|_| {
            let mut c: Vec<f32> = (0..d).map(|_| gaussian(&mut rng)).collect();
            normalise(&mut c);
            c
        })
        .collect();
    let items_file = out_dir.join("items.parquet");
    let mut items = ParquetWriter::create(
        &items_file,
        vec![
            Field::new("id", DataType::Utf8, false),
            vector_field("embedding", d),
        ],
    )?;
    let noise = 0.4 / (d as f32).sqrt();
    const ITEM_BATCH: usize = 16_384;
    for start in (0..cfg.items).step_by(ITEM_BATCH) {
        let end = (start + ITEM_BATCH).min(cfg.items);
        let mut ids = Vec::with_capacity(end - start);
        let mut values = Vec::with_capacity((end - start) * d);
        for j in start..end {
            let (primary, secondary) = (j % topics, (rng.next_u64() % topics as u64) as usize);
            let mut v: Vec<f32> = (0..d)
                .map(|k| {
                    centres[primary][k] + 0.2 * centres[secondary][k] + noise * gaussian(&mut rng)
                })
                .collect();
            normalise(&mut v);
            ids.push(format!("i{j}"));
            values.extend(v);
        }
        items.write(vec![
            Arc::new(StringArray::from(ids)) as ArrayRef,
            vector_array(values, d),
        ])?;
    }
    items.finish()?;

    // Topic popularity (Zipf, exponent 0.8) and, within a topic, item popularity (skewed).
    let mut topic_cdf = Vec::with_capacity(topics);
    let mut acc = 0.0;
    for t in 0..topics {
        acc += 1.0 / (t as f64 + 1.0).powf(0.8);
        topic_cdf.push(acc);
    }
    let items_per_topic = |t: usize| (cfg.items - t).div_ceil(topics);

    let events_file = out_dir.join("events.parquet");
    let mut events = ParquetWriter::create(
        &events_file,
        vec![
            Field::new("user", DataType::Utf8, false),
            Field::new("item", DataType::Utf8, false),
            Field::new("timestamp", DataType::Int64, false),
            Field::new("action", DataType::Utf8, false),
            Field::new("true_interest", DataType::UInt32, false),
        ],
    )?;
    let window = i64::from(cfg.days) * 86_400;
    // Pareto activity with shape 1.5: mean = 3 * xmin.
    let xmin = cfg.mean_actions / 3.0;
    let mut cols = EventColumns::default();
    let mut total = 0u64;
    for u in 0..cfg.users {
        let m = (xmin / rng.next_f64().max(1e-12).powf(1.0 / 1.5))
            .ceil()
            .min(20_000.0) as usize;
        let k_max = (m / 4).clamp(1, 30);
        let k = 1 + (rng.next_u64() % k_max as u64) as usize;
        let mut interests: Vec<usize> = Vec::with_capacity(k);
        while interests.len() < k.min(topics) {
            let t = draw(&topic_cdf, &mut rng);
            if !interests.contains(&t) {
                interests.push(t);
            }
        }
        let weights: Vec<f64> = interests
            .iter()
            .map(|_| f64::from(gaussian(&mut rng)).exp())
            .collect();
        let slopes: Vec<f64> = interests
            .iter()
            .map(|_| rng.next_f64() * 2.0 - 1.0)
            .collect();
        let user = format!("u{u}");
        let mut cdf = vec![0.0; interests.len()];
        for _ in 0..m {
            let age = rng.next_f64();
            let mut acc = 0.0;
            for (i, c) in cdf.iter_mut().enumerate() {
                acc += weights[i] * (1.0 + slopes[i] * (0.5 - age)).max(0.05);
                *c = acc;
            }
            let topic = interests[draw(&cdf, &mut rng)];
            let n = items_per_topic(topic);
            let r = rng.next_f64();
            let item = topic + topics * ((n as f64 * r * r) as usize).min(n - 1);
            cols.user.push(user.clone());
            cols.item.push(format!("i{item}"));
            cols.time.push(cfg.now - (age * window as f64) as i64);
            cols.action.push(if rng.next_f64() < 0.7 {
                "click"
            } else {
                "repin"
            });
            cols.truth.push(topic as u32);
        }
        total += m as u64;
        if cols.user.len() >= 65_536 || u + 1 == cfg.users {
            events.write(std::mem::take(&mut cols).into_arrays())?;
            progress(u + 1);
        }
    }
    events.finish()?;
    Ok(SynthSummary {
        items_file,
        events_file,
        topics,
        events: total,
    })
}

#[derive(Default)]
struct EventColumns {
    user: Vec<String>,
    item: Vec<String>,
    time: Vec<i64>,
    action: Vec<&'static str>,
    truth: Vec<u32>,
}

impl EventColumns {
    fn into_arrays(self) -> Vec<ArrayRef> {
        vec![
            Arc::new(StringArray::from(self.user)),
            Arc::new(StringArray::from(self.item)),
            Arc::new(Int64Array::from(self.time)),
            Arc::new(StringArray::from(self.action)),
            Arc::new(UInt32Array::from(self.truth)),
        ]
    }
}

impl pinnersage_core::error::Kind for SynthError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::{self, *};
        match self {
            Self::Config(_) => BadInput,
            Self::Io { source, .. } => ErrorKind::of_io(source),
            Self::Parquet(e) => e.kind(),
        }
    }
}
