//! [`Evaluation::run`]: the whole offline evaluation as one call, the way `pinnersage eval` runs
//! it: split the engagements, learn co-engagement embeddings if asked, evaluate every method on
//! each kind of item embeddings, sweep alpha and the number of embeddings, and compose the report
//! (Markdown, `metrics.json`, SVG figures). Hosts only read inputs and show progress.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pinnersage_core::profile::DEFAULT_ALPHA;
use pinnersage_core::progress::Progress;

use crate::error::EvalError;
use crate::evaluate::Budget;
use crate::examples::{example_methods, examples};
use crate::inputs::{EvalData, row_index};
use crate::markdown::{Names, examples_markdown, sweep_markdown};
use crate::methods::default_methods;
use crate::plot::{Panel, Series, svg_figure};
use crate::split::{Engagement, Split, SplitParams, time_split, walk_forward};
use crate::sweep::{SweepPoint, alpha_sweep, embeddings_sweep};
use crate::tune::{TuneGrid, tune};
use crate::{EvalConfig, evaluate};
use pinnersage_core::learned::Learner;

/// How engagements are split into training and test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitKind {
    /// Per user by time: the first `train_fraction` of each user's engagements train.
    #[default]
    Time,
    /// The last N days with engagements, each trained on all earlier days (the paper's split).
    WalkForward,
}

/// Which item embeddings an evaluation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ItemEmbeddings {
    /// The given embeddings only.
    Given,
    /// Co-engagement embeddings learned from the training split only ([`EvalOptions::learner`]).
    Learned,
    /// Both, one table each.
    #[default]
    Both,
}

/// Settings of an evaluation; [`Default`] gives `pinnersage eval`'s defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// How to split.
    pub split: SplitKind,
    /// Share of each user's engagements (by time) used for training ([`SplitKind::Time`]).
    pub train_fraction: f64,
    /// Test days of [`SplitKind::WalkForward`].
    pub walk_forward_days: usize,
    /// Users with fewer training engagements are excluded (and counted).
    pub min_train: usize,
    /// Candidates per user.
    pub candidates: usize,
    /// How they are shared among a method's embeddings.
    pub budget: Budget,
    /// Ward merge threshold.
    pub alpha: f64,
    /// Seed of medoid sampling and the bootstrap (the learner has its own).
    pub seed: u64,
    /// Bootstrap resamples for the confidence intervals.
    pub bootstrap: usize,
    /// The item embeddings to evaluate with.
    pub item_embeddings: ItemEmbeddings,
    /// How the co-engagement embeddings are learned, with their dimension and seed.
    pub learner: Learner,
    /// Alphas of the alpha sweep (empty: no sweeps).
    pub sweep_alphas: Vec<f64>,
    /// Numbers of sampled medoids of the embeddings sweep.
    pub sweep_embeddings: Vec<usize>,
    /// Run both sweeps and draw their figures.
    pub sweeps: bool,
    /// Choose the configuration on a validation split carved from training (`--tune`), per
    /// embedding kind; `None`: no tuning.
    pub tune: Option<TuneGrid>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            split: SplitKind::Time,
            train_fraction: 0.8,
            walk_forward_days: 30,
            min_train: 5,
            candidates: 400,
            budget: Budget::Equal,
            alpha: DEFAULT_ALPHA,
            seed: 1,
            bootstrap: 1000,
            item_embeddings: ItemEmbeddings::Both,
            learner: Learner::default(),
            sweep_alphas: vec![0.5, 1.0, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0],
            sweep_embeddings: vec![1, 2, 3, 4, 5, 6, 8, 10, 15, 20],
            sweeps: true,
            tune: None,
        }
    }
}

impl EvalOptions {
    /// Checks every setting; the error names it as `` `setting` `` (the CLI shows the flag).
    ///
    /// ```
    /// use pinnersage_eval::evaluation::EvalOptions;
    /// assert!(EvalOptions::default().validate().is_ok());
    /// let bad = EvalOptions { train_fraction: 1.0, ..EvalOptions::default() };
    /// assert!(bad.validate().unwrap_err().to_string().contains("`train_fraction`"));
    /// ```
    pub fn validate(&self) -> Result<(), EvalError> {
        let bad = |m: &str| Err(EvalError::Input(m.to_owned()));
        if !(self.train_fraction > 0.0 && self.train_fraction < 1.0) {
            return bad("`train_fraction` must be in (0, 1)");
        }
        if self
            .sweep_alphas
            .iter()
            .any(|a| !(a.is_finite() && *a >= 0.0))
        {
            return bad("`sweep_alphas` must be finite and >= 0");
        }
        if self.sweep_embeddings.contains(&0) {
            return bad("`sweep_embeddings` must be >= 1");
        }
        if self.split == SplitKind::WalkForward && self.walk_forward_days == 0 {
            return bad("`walk_forward_days` must be at least 1");
        }
        if let Some(grid) = &self.tune {
            if grid.alphas.is_empty() || grid.alphas.iter().any(|a| !(a.is_finite() && *a >= 0.0)) {
                return bad("`tune_alphas` must be finite and >= 0");
            }
            if !(grid.validation_fraction > 0.0 && grid.validation_fraction < 1.0) {
                return bad("the validation fraction must be in (0, 1)");
            }
            if grid.globals.iter().any(|g| !(0.0..=1.0).contains(g)) {
                return bad("`tune_global_shares` must be in [0, 1]");
            }
        }
        if self.item_embeddings != ItemEmbeddings::Given && self.learner.dim() == 0 {
            return bad("`learned_dim` must be at least 1");
        }
        Ok(())
    }
}

/// What the input held, as the evaluation saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSummary {
    /// Engagements on items with an embedding.
    pub engagements: usize,
    /// Distinct users among them.
    pub users: usize,
    /// Engagements left out before the evaluation (see [`EvalData::filtered_out`]).
    pub filtered_out: u64,
    /// Engagements on items without an embedding (left out).
    pub unknown_items: u64,
    /// The split, in words.
    pub split: String,
    /// Units (users, or user-days) evaluated.
    pub units: usize,
    /// Units left out for too little history.
    pub excluded: usize,
}

/// An evaluation's results: the report, the metrics and the figures.
#[derive(Debug, Clone)]
pub struct EvalOutput {
    /// What the input held.
    pub summary: InputSummary,
    /// `report.md`: every table, the sweeps and the examples.
    pub markdown: String,
    /// `metrics.json`: per embedding kind, the report and the sweeps' points.
    pub metrics: serde_json::Value,
    /// SVG figures by file name (`alpha-sweep.svg`, `embeddings-sweep.svg`).
    pub figures: Vec<(String, String)>,
    /// Configuration files the tuner chose, by file name (`tuned-given.toml`, ...), for
    /// `batch --config` and `serve --config`.
    pub configs: Vec<(String, String)>,
}

impl EvalOutput {
    /// Writes `report.md`, `metrics.json` and the figures into `dir` (created if missing);
    /// returns the file names written.
    pub fn write(&self, dir: &Path) -> Result<Vec<String>, EvalError> {
        let io = |path: PathBuf| move |source| EvalError::Io { path, source };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let json = serde_json::to_string_pretty(&self.metrics).expect("JSON values serialise");
        let mut files = vec![
            ("report.md".to_owned(), self.markdown.clone()),
            ("metrics.json".to_owned(), json + "\n"),
        ];
        files.extend(self.figures.iter().cloned());
        files.extend(self.configs.iter().cloned());
        for (name, text) in &files {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(io(path.clone()))?;
        }
        Ok(files.into_iter().map(|f| f.0).collect())
    }
}

/// The offline evaluation as one call.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation;

/// One kind of item embeddings to evaluate with.
struct Kind {
    key: &'static str,
    label: String,
    vectors: Vec<f32>,
    dim: usize,
}

impl Evaluation {
    /// Evaluates every method on `data` with `options`; `title` heads the report. Progress and
    /// a summary of the input go to `progress`.
    pub fn run(
        data: &EvalData,
        options: &EvalOptions,
        title: &str,
        progress: &dyn Progress,
    ) -> Result<EvalOutput, EvalError> {
        options.validate()?;
        if data.dim == 0 || data.embeddings.len() != data.item_ids.len() * data.dim {
            return Err(EvalError::Input(format!(
                "{}: {} embedding values are not {} items x {} dims",
                data.embeddings_source,
                data.embeddings.len(),
                data.item_ids.len(),
                data.dim
            )));
        }
        let row_of = row_index(&data.item_ids).map_err(|(row, id)| {
            EvalError::Input(format!(
                "{}: duplicate item id {id:?} at row {row}",
                data.embeddings_source
            ))
        })?;
        let (engagements, user_names, unknown) = dense_engagements(data, &row_of);
        let params = SplitParams {
            train_fraction: options.train_fraction,
            min_train: options.min_train,
            min_test: 1,
        };
        let split = match options.split {
            SplitKind::Time => time_split(&engagements, params),
            SplitKind::WalkForward => walk_forward(&engagements, options.walk_forward_days, params),
        };
        let summary = InputSummary {
            engagements: engagements.len(),
            users: user_names.len(),
            filtered_out: data.filtered_out,
            unknown_items: unknown,
            split: split.description.clone(),
            units: split.units.len(),
            excluded: split.excluded,
        };
        progress.note(&format!(
            "{} engagements of {} users ({} filtered out, {} on items without an embedding); \
             split {}: {} units evaluated, {} with too little history",
            summary.engagements,
            summary.users,
            summary.filtered_out,
            summary.unknown_items,
            summary.split,
            summary.units,
            summary.excluded
        ));
        let config = EvalConfig {
            methods: default_methods(),
            candidates: options.candidates,
            budget: options.budget,
            alpha: options.alpha,
            seed: options.seed,
            bootstrap: options.bootstrap,
        };
        let kinds = embedding_kinds(data, options, &split);
        let mut markdown = format!("# Offline evaluation: {title}\n");
        let mut json = serde_json::Map::new();
        let mut alpha_points: Vec<(&str, Vec<SweepPoint>)> = Vec::new();
        let mut e_points: Vec<(&str, Vec<SweepPoint>)> = Vec::new();
        let mut configs = Vec::new();
        let units = split.units.len() as u64;
        for kind in &kinds {
            let (vectors, dim) = (&kind.vectors[..], kind.dim);
            progress.note(&format!("evaluating with {}", kind.label));
            progress.phase("units evaluated", units);
            let report = evaluate(vectors, dim, &split, &config, &|_| progress.advance(1))?;
            markdown.push('\n');
            markdown.push_str(&report.to_markdown(&format!("Item embeddings: {}", kind.label)));
            if let Some(meta) = &data.item_meta {
                let config = EvalConfig {
                    methods: example_methods(),
                    ..config.clone()
                };
                let shown = examples(vectors, dim, &split, &config, 3, 10)?;
                let names = Names {
                    items: &data.item_ids,
                    meta,
                    users: &user_names,
                };
                markdown.push_str(&examples_markdown(&shown, &names));
            }
            let mut entry = serde_json::to_value(&report).expect("reports serialise");
            if options.sweeps {
                let total = units * options.sweep_alphas.len() as u64;
                progress.phase("alpha sweep", total);
                let alphas = alpha_sweep(
                    vectors,
                    dim,
                    &split,
                    &config,
                    &options.sweep_alphas,
                    &|_| progress.advance(1),
                )?;
                progress.phase("embeddings sweep", units);
                let es = embeddings_sweep(
                    vectors,
                    dim,
                    &split,
                    &config,
                    &options.sweep_embeddings,
                    &|_| progress.advance(1),
                )?;
                entry["alpha_sweep"] = serde_json::to_value(&alphas).expect("points serialise");
                entry["embeddings_sweep"] = serde_json::to_value(&es).expect("points serialise");
                alpha_points.push((kind.key, alphas));
                e_points.push((kind.key, es));
            }
            if let Some(grid) = &options.tune {
                let validation_runs = units * grid.alphas.len() as u64;
                progress.phase("tuning", validation_runs + units);
                let tuned = tune(
                    vectors,
                    dim,
                    &split,
                    &config,
                    grid,
                    options.min_train,
                    &|_| progress.advance(1),
                )?;
                markdown.push('\n');
                markdown
                    .push_str(&tuned.to_markdown(&format!("Tuned configuration: {}", kind.label)));
                let name = format!("tuned-{}.toml", kind.key);
                let header = format!(
                    "Chosen by `pinnersage eval --tune` on {}, {}: validation Recall {:.4}.\n\
                     Test Recall {:.4}, against {:.4} for the paper's configuration.\n\
                     Use it with `pinnersage batch --config {name}` and `pinnersage serve --config {name}`.",
                    title,
                    kind.label,
                    tuned.validation[0].recall,
                    tuned.test[3].recall.value,
                    tuned.test[2].recall.value,
                );
                configs.push((name, tuned.chosen.to_toml(&header)));
                entry["tuned"] = serde_json::to_value(&tuned).expect("tuning serialises");
            }
            json.insert(kind.key.to_string(), entry);
        }
        progress.finish();
        let mut figures = Vec::new();
        if options.sweeps {
            markdown.push_str(&sweep_markdown(&alpha_points, &e_points));
            figures = sweep_figures(&alpha_points, &e_points)?;
        }
        Ok(EvalOutput {
            summary,
            markdown,
            metrics: serde_json::Value::Object(json),
            figures,
            configs,
        })
    }
}

/// Engagements on items with an embedding, with dense user indices; the user ids by index; the
/// number left out for an unknown item.
fn dense_engagements(
    data: &EvalData,
    row_of: &HashMap<&str, u32>,
) -> (Vec<Engagement>, Vec<String>, u64) {
    let mut users: HashMap<&str, u32> = HashMap::new();
    let mut names = Vec::new();
    let mut unknown = 0u64;
    let mut engagements = Vec::with_capacity(data.engagements.len());
    for e in &data.engagements {
        let Some(&row) = row_of.get(e.item.as_str()) else {
            unknown += 1;
            continue;
        };
        let user = *users.entry(e.user.as_str()).or_insert_with(|| {
            names.push(e.user.clone());
            names.len() as u32 - 1
        });
        engagements.push(Engagement {
            user,
            row,
            time: e.time,
        });
    }
    (engagements, names, unknown)
}

/// The given embeddings and/or co-engagement embeddings learned from the split's shared training.
fn embedding_kinds(data: &EvalData, options: &EvalOptions, split: &Split) -> Vec<Kind> {
    let mut kinds = Vec::new();
    if options.item_embeddings != ItemEmbeddings::Learned {
        kinds.push(Kind {
            key: "given",
            label: format!(
                "given embeddings ({}, {} dims)",
                data.embeddings_source, data.dim
            ),
            vectors: data.embeddings.clone(),
            dim: data.dim,
        });
    }
    if options.item_embeddings != ItemEmbeddings::Given {
        let items = data.item_ids.len();
        let rows: Vec<Vec<u32>> = split
            .shared_training
            .iter()
            .map(|u| u.train.iter().map(|&(r, _)| r).collect())
            .collect();
        let (vectors, dim) = options.learner.item_embeddings(&rows, items, &());
        kinds.push(Kind {
            key: options.learner.key(),
            label: format!(
                "co-engagement embeddings ({} of the training split, {dim} dims)",
                options.learner.describe()
            ),
            vectors,
            dim,
        });
    }
    kinds
}

/// The two sweep figures as SVG: Recall, Relevance and one more panel per sweep.
fn sweep_figures(
    alpha_points: &[(&str, Vec<SweepPoint>)],
    e_points: &[(&str, Vec<SweepPoint>)],
) -> Result<Vec<(String, String)>, EvalError> {
    let panel =
        |points: &[(&str, Vec<SweepPoint>)], title: &str, y: fn(&SweepPoint) -> f64| Panel {
            title: title.into(),
            series: points
                .iter()
                .map(|(kind, p)| Series {
                    name: (*kind).to_string(),
                    points: p.iter().map(|q| (q.x, y(q))).collect(),
                })
                .collect(),
        };
    let alpha_svg = svg_figure(
        "PinnerSage (3 sampled medoids) against the merge threshold alpha",
        "alpha",
        &[
            panel(alpha_points, "Recall", |p| p.recall.value),
            panel(alpha_points, "Relevance", |p| p.relevance.value),
            panel(alpha_points, "interests per user", |p| p.clusters_per_user),
        ],
    )?;
    let e_svg = svg_figure(
        "PinnerSage against the number of sampled medoids e",
        "e",
        &[
            panel(e_points, "Recall", |p| p.recall.value),
            panel(e_points, "Relevance", |p| p.relevance.value),
            panel(e_points, "Diversity@50", |p| p.diversity.value),
        ],
    )?;
    Ok(vec![
        ("alpha-sweep.svg".to_owned(), alpha_svg),
        ("embeddings-sweep.svg".to_owned(), e_svg),
    ])
}
