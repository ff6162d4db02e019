//! `pinnersage eval`: the paper's offline evaluation on any engagement log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pinnersage_catalog::attributes::read_attributes;
use pinnersage_catalog::catalog::Catalog;
use pinnersage_catalog::items::{ItemsOptions, import_items};
use pinnersage_catalog::npy;
use pinnersage_core::profile::DEFAULT_ALPHA;
use pinnersage_eval::examples::{Example, example_methods, examples};
use pinnersage_eval::methods::default_methods;
use pinnersage_eval::plot::{Panel, Series, svg_figure};
use pinnersage_eval::split::{Engagement, SplitParams, time_split, walk_forward};
use pinnersage_eval::svd::{SvdParams, item_embeddings};
use pinnersage_eval::sweep::{SweepPoint, alpha_sweep, embeddings_sweep};
use pinnersage_eval::{EvalConfig, evaluate};
use pinnersage_pipeline::import_events::{EventColumns, ImportOptions, read_events};

use crate::InputError;
use crate::progress::Progress;

/// Reproduce the paper's offline evaluation (Recall, Relevance, lifts over the last-item
/// baseline) on an engagement log and item embeddings. Needs no data directory.
///
/// Each user's engagements are split by time (first 80% train, the rest test), or walked forward
/// by day (--split walk-forward); every method turns the training items into embeddings,
/// retrieves floor(400/e) exact cosine neighbours per embedding (training items excluded) and is
/// scored on the test items. Then PinnerSage is swept over alpha and over the number of sampled
/// embeddings e. Writes OUT/report.md, OUT/metrics.json, OUT/alpha-sweep.svg and
/// OUT/embeddings-sweep.svg.
///
/// Examples:
///   pinnersage eval --events ratings.csv --user-col userId --item-col movieId \
///     --weight-col rating --min-weight 3.5 --embeddings emb.npy --ids ids.txt --out eval-out
///   pinnersage eval movielens --dir examples/movielens-small --out eval-out
///   pinnersage eval movielens --dir examples/movielens-small --out eval-wf \
///     --split walk-forward --walk-forward-days 365 --no-sweeps
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    dataset: Option<EvalDataset>,
    #[command(flatten)]
    files: Option<EvalFiles>,
    #[command(flatten)]
    options: EvalOptions,
}

#[derive(Debug, Subcommand)]
enum EvalDataset {
    Movielens(MovielensArgs),
}

/// Evaluate on the MovieLens layout: DIR/ratings.csv (userId,movieId,rating,timestamp),
/// DIR/item_emb_minilm_l6_v2.npy and DIR/item_emb_movieIds.txt (one movieId per row); titles for
/// the report's example users from DIR/movies.csv when present.
#[derive(Debug, Args)]
struct MovielensArgs {
    /// The MovieLens directory.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Embeddings file inside DIR.
    #[arg(long, default_value = "item_emb_minilm_l6_v2.npy")]
    embeddings: String,
    /// Ratings below this are not engagements.
    #[arg(long, default_value_t = 3.5)]
    min_rating: f32,
    #[command(flatten)]
    options: EvalOptions,
}

/// Input files of `pinnersage eval`.
#[derive(Debug, Args)]
struct EvalFiles {
    /// Engagements: CSV/TSV/JSON lines/Parquet with user, item and time columns.
    #[arg(long, value_name = "FILE", required = false)]
    events: PathBuf,
    /// Item embeddings: an n x d NPY (with --ids), or Parquet / CSV as `import items` reads them.
    #[arg(long, value_name = "FILE", required = false)]
    embeddings: PathBuf,
    /// For NPY embeddings: item ids, one per line, in the rows' order.
    #[arg(long, value_name = "FILE")]
    ids: Option<PathBuf>,
    /// Item attributes (CSV/TSV with a header, JSON lines or Parquet, joined on the item id):
    /// adds example users to the report, with each item's title (or name, or first text field).
    #[arg(long, value_name = "FILE")]
    items_meta: Option<PathBuf>,
    /// The id column of --items-meta (default: id, item or item_id).
    #[arg(long, value_name = "COLUMN")]
    items_meta_id_col: Option<String>,
    /// User id column.
    #[arg(long, default_value = "user")]
    user_col: String,
    /// Item id column.
    #[arg(long, default_value = "item")]
    item_col: String,
    /// Time column (unix seconds or RFC 3339).
    #[arg(long, default_value = "timestamp")]
    time_col: String,
    /// Weight column (for example a rating); see --min-weight.
    #[arg(long, default_value = "weight")]
    weight_col: String,
    /// Engagements with a smaller weight are dropped.
    #[arg(long, default_value_t = f32::NEG_INFINITY)]
    min_weight: f32,
}

/// Options shared by every evaluation.
#[derive(Debug, Clone, Args)]
struct EvalOptions {
    /// Output directory for report.md, metrics.json and the sweeps' SVG plots.
    #[arg(long, value_name = "DIR", default_value = "eval-out")]
    out: PathBuf,
    /// How to split: per user by time (--train-fraction), or walk forward by day as the paper
    /// does (--walk-forward-days).
    #[arg(long, value_enum, default_value = "time")]
    split: SplitKind,
    /// Share of each user's engagements (by time) used for training (--split time).
    #[arg(long, default_value_t = 0.8)]
    train_fraction: f64,
    /// Test days of --split walk-forward: the last N days with engagements, each evaluated with
    /// everything before it as training.
    #[arg(long, default_value_t = 30, value_name = "N")]
    walk_forward_days: usize,
    /// Users with fewer training engagements are excluded (and counted).
    #[arg(long, default_value_t = 5)]
    min_train: usize,
    /// Candidates per user (floor(N/e) per embedding).
    #[arg(long, default_value_t = 400)]
    candidates: usize,
    /// Ward merge threshold.
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    alpha: f64,
    /// Seed of medoid sampling and the bootstrap.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Item embeddings to evaluate with: the given ones, co-engagement embeddings learned from
    /// the training split (truncated SVD of the user x item matrix), or both (two tables).
    #[arg(long, value_enum, default_value = "both")]
    item_embeddings: ItemEmbeddings,
    /// Dimension of the learned co-engagement embeddings.
    #[arg(long, default_value_t = 64)]
    svd_dim: usize,
    /// Alphas of the alpha sweep (PinnerSage sampling 3 medoids).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.5,1,1.5,1.75,2,2.5,3,4"
    )]
    sweep_alphas: Vec<f64>,
    /// Numbers of sampled medoids of the embeddings sweep (the paper's Fig. 7).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,8,10,15,20")]
    sweep_embeddings: Vec<usize>,
    /// Skip both sweeps (and their plots).
    #[arg(long)]
    no_sweeps: bool,
}

/// How engagements are split into training and test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SplitKind {
    /// Per user by time.
    Time,
    /// The last N days, each trained on all earlier days.
    WalkForward,
}

/// Which item embeddings an evaluation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ItemEmbeddings {
    Given,
    Svd,
    Both,
}

/// Runs `pinnersage eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    match (&args.dataset, &args.files) {
        (Some(EvalDataset::Movielens(m)), _) => {
            let files = EvalFiles {
                events: m.dir.join("ratings.csv"),
                embeddings: m.dir.join(&m.embeddings),
                ids: Some(m.dir.join("item_emb_movieIds.txt")),
                items_meta: Some(m.dir.join("movies.csv")).filter(|p| p.exists()),
                items_meta_id_col: Some("movieId".into()),
                user_col: "userId".into(),
                item_col: "movieId".into(),
                time_col: "timestamp".into(),
                weight_col: "rating".into(),
                min_weight: m.min_rating,
            };
            run_files(
                &files,
                &m.options,
                &format!("MovieLens ({})", m.dir.display()),
            )
        }
        (None, Some(files)) => run_files(files, &args.options, &files.events.display().to_string()),
        (None, None) => Err(InputError(
            "give --events and --embeddings (with --ids for NPY), or use `pinnersage eval movielens --dir DIR`"
                .into(),
        )
        .into()),
    }
}

fn run_files(files: &EvalFiles, options: &EvalOptions, title: &str) -> Result<()> {
    let items = read_items(files)?;
    let mut row_of = HashMap::with_capacity(items.ids.len());
    for (row, id) in items.ids.iter().enumerate() {
        if row_of.insert(id.as_str(), row as u32).is_some() {
            return Err(InputError(format!(
                "{}: line {}: duplicate id {id:?}",
                files.ids.as_deref().unwrap_or(&files.embeddings).display(),
                row + 1
            ))
            .into());
        }
    }
    let meta = match &files.items_meta {
        Some(path) => Some(
            read_attributes(
                path,
                files.items_meta_id_col.as_deref(),
                items.ids.len(),
                |id| row_of.get(id).map(|&r| r as usize),
            )
            .map_err(|e| InputError(e.to_string()))?
            .0,
        ),
        None => None,
    };
    let read_options = ImportOptions {
        columns: EventColumns {
            user: files.user_col.clone(),
            item: files.item_col.clone(),
            time: files.time_col.clone(),
            weight: files.weight_col.clone(),
            ..EventColumns::default()
        },
        skip_invalid: false,
    };
    let (events, _) =
        read_events(&files.events, &read_options).map_err(|e| InputError(e.to_string()))?;
    let mut users: HashMap<String, u32> = HashMap::new();
    let (mut unknown, mut below) = (0u64, 0u64);
    let mut engagements = Vec::with_capacity(events.len());
    for e in &events {
        if e.weight < files.min_weight {
            below += 1;
            continue;
        }
        let Some(&row) = row_of.get(e.item.as_str()) else {
            unknown += 1;
            continue;
        };
        let next = users.len() as u32;
        let user = *users.entry(e.user.clone()).or_insert(next);
        engagements.push(Engagement {
            user,
            row,
            time: e.time,
        });
    }
    let mut user_names = vec![String::new(); users.len()];
    for (name, &index) in &users {
        user_names[index as usize] = name.clone();
    }
    let params = SplitParams {
        train_fraction: options.train_fraction,
        min_train: options.min_train,
        min_test: 1,
    };
    if !(params.train_fraction > 0.0 && params.train_fraction < 1.0) {
        return Err(InputError("--train-fraction must be in (0, 1)".into()).into());
    }
    if options
        .sweep_alphas
        .iter()
        .any(|a| !(a.is_finite() && *a >= 0.0))
    {
        return Err(InputError("--sweep-alphas must be finite and >= 0".into()).into());
    }
    if options.sweep_embeddings.contains(&0) {
        return Err(InputError("--sweep-embeddings must be >= 1".into()).into());
    }
    let split = match options.split {
        SplitKind::Time => time_split(&engagements, params),
        SplitKind::WalkForward => {
            if options.walk_forward_days == 0 {
                return Err(InputError("--walk-forward-days must be at least 1".into()).into());
            }
            walk_forward(&engagements, options.walk_forward_days, params)
        }
    };
    eprintln!(
        "{} engagements of {} users ({} below --min-weight, {} on items without an embedding); \
         split {}: {} units evaluated, {} with too little history",
        engagements.len(),
        users.len(),
        below,
        unknown,
        split.description,
        split.units.len(),
        split.excluded
    );
    let config = EvalConfig {
        methods: default_methods(),
        candidates: options.candidates,
        alpha: options.alpha,
        seed: options.seed,
        bootstrap: options.bootstrap,
    };
    let mut kinds: Vec<(&str, String, Vec<f32>, usize)> = Vec::new();
    if options.item_embeddings != ItemEmbeddings::Svd {
        kinds.push((
            "given",
            format!(
                "given embeddings ({}, {} dims)",
                files.embeddings.display(),
                items.dim
            ),
            items.data,
            items.dim,
        ));
    }
    if options.item_embeddings != ItemEmbeddings::Given {
        if options.svd_dim == 0 {
            return Err(InputError("--svd-dim must be at least 1".into()).into());
        }
        let params = SvdParams {
            dim: options.svd_dim,
            seed: options.seed,
            ..SvdParams::default()
        };
        let (emb, _) = item_embeddings(&split.shared_training, items.ids.len(), params);
        let dim = emb.len() / items.ids.len().max(1);
        kinds.push((
            "svd",
            format!("co-engagement embeddings (truncated SVD of the training split, {dim} dims)"),
            emb,
            dim,
        ));
    }
    let mut markdown = format!("# Offline evaluation: {title}\n");
    let mut json = serde_json::Map::new();
    let mut alpha_points: Vec<(&str, Vec<SweepPoint>)> = Vec::new();
    let mut e_points: Vec<(&str, Vec<SweepPoint>)> = Vec::new();
    for (key, label, vectors, dim) in &kinds {
        eprintln!("evaluating with {label}");
        let report = with_progress("units evaluated", split.units.len(), |progress| {
            evaluate(vectors, *dim, &split, &config, progress)
        })?;
        markdown.push('\n');
        markdown.push_str(&report.to_markdown(&format!("Item embeddings: {label}")));
        if let Some(meta) = &meta {
            let config = EvalConfig {
                methods: example_methods(),
                ..config.clone()
            };
            let shown = examples(vectors, *dim, &split, &config, 3, 10).map_err(InputError)?;
            let names = Names {
                items: &items.ids,
                meta,
                users: &user_names,
            };
            markdown.push_str(&examples_markdown(&shown, &names));
        }
        let mut entry = serde_json::to_value(&report)?;
        if !options.no_sweeps {
            let total = split.units.len() * options.sweep_alphas.len();
            let alphas = with_progress("alpha sweep", total, |progress| {
                alpha_sweep(
                    vectors,
                    *dim,
                    &split,
                    &config,
                    &options.sweep_alphas,
                    progress,
                )
            })?;
            let es = with_progress("embeddings sweep", split.units.len(), |progress| {
                embeddings_sweep(
                    vectors,
                    *dim,
                    &split,
                    &config,
                    &options.sweep_embeddings,
                    progress,
                )
            })?;
            entry["alpha_sweep"] = serde_json::to_value(&alphas)?;
            entry["embeddings_sweep"] = serde_json::to_value(&es)?;
            alpha_points.push((key, alphas));
            e_points.push((key, es));
        }
        json.insert((*key).to_string(), entry);
    }
    let mut figures = Vec::new();
    if !options.no_sweeps {
        markdown.push_str(&sweep_markdown(&alpha_points, &e_points));
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
                panel(&alpha_points, "Recall", |p| p.recall.value),
                panel(&alpha_points, "Relevance", |p| p.relevance.value),
                panel(&alpha_points, "interests per user", |p| p.clusters_per_user),
            ],
        )
        .map_err(anyhow::Error::msg)?;
        let e_svg = svg_figure(
            "PinnerSage against the number of sampled medoids e",
            "e",
            &[
                panel(&e_points, "Recall", |p| p.recall.value),
                panel(&e_points, "Relevance", |p| p.relevance.value),
                panel(&e_points, "Diversity@50", |p| p.diversity.value),
            ],
        )
        .map_err(anyhow::Error::msg)?;
        figures.push(("alpha-sweep.svg", alpha_svg));
        figures.push(("embeddings-sweep.svg", e_svg));
    }
    write_outputs(
        &options.out,
        &markdown,
        &serde_json::Value::Object(json),
        &figures,
    )?;
    print!("{markdown}");
    let mut written = vec!["report.md", "metrics.json"];
    written.extend(figures.iter().map(|f| f.0));
    eprintln!("wrote {} in {}", written.join(", "), options.out.display());
    Ok(())
}

/// Runs `work` with a progress bar over `total` units.
fn with_progress<T>(
    what: &'static str,
    total: usize,
    work: impl FnOnce(&(dyn Fn(u64) + Sync)) -> Result<T, String>,
) -> Result<T> {
    let progress = std::sync::Mutex::new(Progress::new(what, Some(total as u64)));
    let out = work(&|n| {
        if let Ok(p) = progress.lock() {
            p.update(n);
        }
    })
    .map_err(InputError)?;
    progress.into_inner().expect("not poisoned").finish();
    Ok(out)
}

/// The sweeps as Markdown tables, one row per setting and embedding kind, with the figures.
fn sweep_markdown(
    alpha_points: &[(&str, Vec<SweepPoint>)],
    e_points: &[(&str, Vec<SweepPoint>)],
) -> String {
    let lift = |x: f64| format!("{:+.0}%", 100.0 * x);
    let mut out = String::from(
        "\n## Sweeps\n\nPinnerSage (Ward + medoids, λ = 0.01) sampling 3 medoids, against alpha; \
         lifts over the last item.\n\n![alpha sweep](alpha-sweep.svg)\n\n| embeddings | alpha \
         | interests/user | Recall | lift | Relevance | lift | Diversity@50 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let row = |out: &mut String, kind: &str, p: &SweepPoint, per_user: f64| {
        out.push_str(&format!(
            "| {kind} | {} | {:.1} | {:.4} | {} | {:.4} | {} | {:.3} |\n",
            p.x,
            per_user,
            p.recall.value,
            lift(p.recall.lift),
            p.relevance.value,
            lift(p.relevance.lift),
            p.diversity.value
        ));
    };
    for (kind, points) in alpha_points {
        for p in points {
            row(&mut out, kind, p, p.clusters_per_user);
        }
    }
    out.push_str(
        "\nPinnerSage at the default alpha sampling e medoids (the paper's Fig. 7).\n\n\
         ![embeddings sweep](embeddings-sweep.svg)\n\n| embeddings | e | embeddings/user | \
         Recall | lift | Relevance | lift | Diversity@50 |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (kind, points) in e_points {
        for p in points {
            row(&mut out, kind, p, p.embeddings_per_user);
        }
    }
    out
}

/// Item ids and their embeddings, row-aligned.
struct Items {
    ids: Vec<String>,
    data: Vec<f32>,
    dim: usize,
}

/// Reads the item embeddings: NPY with an ids file, or any format `import items` reads (through
/// a throw-away catalog, so the same validation and error messages apply).
fn read_items(files: &EvalFiles) -> Result<Items> {
    let npy = files
        .embeddings
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !npy {
        if let Some(ids) = &files.ids {
            return Err(InputError(format!(
                "{}: --ids is only for NPY embeddings; Parquet and CSV rows carry their own id",
                ids.display()
            ))
            .into());
        }
        let scratch =
            std::env::temp_dir().join(format!("pinnersage-eval-items-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let read = import_items(&scratch, &files.embeddings, &ItemsOptions::default())
            .and_then(|_| Catalog::open(&scratch))
            .map(|catalog| Items {
                ids: (0..catalog.rows())
                    .map(|r| catalog.id(r).to_owned())
                    .collect(),
                data: catalog.embeddings().to_vec(),
                dim: catalog.dim(),
            });
        let _ = std::fs::remove_dir_all(&scratch);
        return read.map_err(|e| InputError(e.to_string()).into());
    }
    let Some(ids_path) = &files.ids else {
        return Err(InputError(format!(
            "{}: NPY embeddings need --ids FILE (one item id per line, in row order)",
            files.embeddings.display()
        ))
        .into());
    };
    let matrix = npy::read(&files.embeddings)
        .and_then(npy::NpyArray::into_f32_matrix)
        .map_err(|e| InputError(e.to_string()))?;
    let ids_text = std::fs::read_to_string(ids_path)
        .map_err(|e| InputError(format!("{}: {e}", ids_path.display())))?;
    let ids: Vec<String> = ids_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.len() != matrix.rows {
        return Err(InputError(format!(
            "{} has {} ids but {} has {} rows",
            ids_path.display(),
            ids.len(),
            files.embeddings.display(),
            matrix.rows
        ))
        .into());
    }
    Ok(Items {
        ids,
        data: matrix.data,
        dim: matrix.cols,
    })
}

/// What the example tables print for items and users.
struct Names<'a> {
    items: &'a [String],
    meta: &'a [Option<Box<str>>],
    users: &'a [String],
}

impl Names<'_> {
    /// An item's title (or name, or first text attribute, or id), safe inside a table cell.
    fn item(&self, row: u32) -> String {
        let id = &self.items[row as usize];
        let parsed = self.meta[row as usize]
            .as_deref()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
        let title = parsed.as_ref().and_then(|v| {
            ["title", "name"]
                .iter()
                .find_map(|k| v.get(k).and_then(|t| t.as_str()))
                .or_else(|| v.as_object()?.values().find_map(|t| t.as_str()))
        });
        title.unwrap_or(id).replace('|', "\\|")
    }
}

/// Example users as Markdown: their interests, test items and each method's first
/// recommendations, hits marked.
fn examples_markdown(shown: &[Example], names: &Names<'_>) -> String {
    let mut out = String::from(
        "\n### Examples\n\nThree users, light to heavy (by training engagements). \
         Recommendations marked ✓ are items the user engaged with in the test period.\n",
    );
    for ex in shown {
        out.push_str(&format!(
            "\n**User {}**: {} training engagements, {} interests. Largest interests (medoid, \
             actions): {}.\n\nEngaged in the test period: {}{}.\n\n",
            names.users[ex.user as usize],
            ex.train,
            ex.interests.len(),
            ex.interests
                .iter()
                .take(6)
                .map(|i| format!("{} ({})", names.item(i.medoid), i.size))
                .collect::<Vec<_>>()
                .join("; "),
            ex.test
                .iter()
                .take(8)
                .map(|&r| names.item(r))
                .collect::<Vec<_>>()
                .join("; "),
            if ex.test.len() > 8 {
                format!(" and {} more", ex.test.len() - 8)
            } else {
                String::new()
            }
        ));
        out.push_str("| # |");
        for (method, _) in &ex.recommendations {
            out.push_str(&format!(" {method} |"));
        }
        out.push_str("\n|---:|");
        out.push_str(&"---|".repeat(ex.recommendations.len()));
        out.push('\n');
        let depth = ex
            .recommendations
            .iter()
            .map(|r| r.1.len())
            .max()
            .unwrap_or(0);
        for rank in 0..depth {
            out.push_str(&format!("| {} |", rank + 1));
            for (_, list) in &ex.recommendations {
                let cell = list.get(rank).map_or(String::new(), |&r| {
                    let hit = if ex.test.contains(&r) { "✓ " } else { "" };
                    format!("{hit}{}", names.item(r))
                });
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
    }
    out
}

fn write_outputs(
    out: &Path,
    markdown: &str,
    report: &serde_json::Value,
    figures: &[(&str, String)],
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, svg) in figures {
        std::fs::write(out.join(name), svg)
            .with_context(|| format!("writing {}", out.join(name).display()))?;
    }
    std::fs::write(out.join("report.md"), markdown)
        .with_context(|| format!("writing {}", out.join("report.md").display()))?;
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(out.join("metrics.json"), json + "\n")
        .with_context(|| format!("writing {}", out.join("metrics.json").display()))?;
    Ok(())
}
