//! `pinnersage quickstart`: from a fresh clone to a running recommender on real data, through the
//! same commands a user would run by hand (import items, import events, index build, batch,
//! serve).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, FromArgMatches};

use pinnersage_catalog::items::ItemsOptions;
use pinnersage_core::als::AlsParams;
use pinnersage_core::learned::Learner;
use pinnersage_index::persist::BuildOptions;
use pinnersage_pipeline::batch::BatchConfig;
use pinnersage_pipeline::data_in::embed::{EMBEDDINGS_FILE, EmbedOptions, IDS_FILE};
use pinnersage_pipeline::data_in::import_events::ImportOptions;
use pinnersage_pipeline::data_in::movielens::{self, MIN_RATING, positive_ratings};
use pinnersage_store::settings::GenerationSettings;

use crate::args::{DataDirArg, InputError};

/// The marker a finished quickstart leaves in its data directory.
const MARKER: &str = "quickstart.json";

/// Run pinnersage on real data in one command.
///
/// Uses the bundled MovieLens-small (610 users, 9,742 movies with MiniLM title embeddings and
/// titles/genres as attributes; GroupLens license in its README.txt). On the first run it
///   1. imports every rating >= 3.5 as an engagement (`import events`), every timestamp moved
///      by the same offset so that the last rating is now (--original-times keeps 1996-2018),
///   2. imports the movies (`import items --normalize --attributes movies.csv`) with their
///      title embeddings, or with --embeddings learned, embeddings learned from the ratings
///      alone (`embed`, implicit ALS: what a team with logs and no embeddings would do),
///   3. builds the HNSW index (`index build`),
///   4. runs the batch with --now at the last rating and a window covering all 22 years of
///      ratings (`batch`),
///
/// then serves the interest explorer and the API on 127.0.0.1 (`serve`), with a demo A/B
/// experiment (DATA_DIR/experiments.toml: half the users get recommendations from their single
/// most important interest, half pinnersage's defaults; the explorer's Experiments view reports
/// it; --no-experiment serves without). A second run finds the data directory ready and starts
/// serving in seconds.
///
/// Examples:
///   cargo run --release -- quickstart
///   pinnersage quickstart --port 9000 --data-dir /tmp/ml
///   pinnersage quickstart --embeddings learned --data-dir /tmp/ml-learned
///   pinnersage quickstart --no-serve        # prepare the data directory and exit
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct QuickstartArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Port to serve on, on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The MovieLens directory [default: examples/movielens-small of this repository].
    #[arg(long, value_name = "DIR")]
    movielens: Option<PathBuf>,
    /// Rebuild the data directory even if an earlier quickstart finished it.
    #[arg(long)]
    rebuild: bool,
    /// Prepare the data directory, then exit instead of serving.
    #[arg(long)]
    no_serve: bool,
    /// Serve without the demo experiment (DATA_DIR/experiments.toml, written on the first run
    /// and kept: edit it to try other arms; docs/experiments.md).
    #[arg(long)]
    no_experiment: bool,
    /// Keep MovieLens' own timestamps (the last rating is in 2018) instead of moving them so
    /// that the last rating is now. With them, an engagement posted today outweighs years of
    /// history (importance decays by exp(-0.01 per day)) and the other interests fade.
    #[arg(long)]
    original_times: bool,
    /// The movies' embeddings: MiniLM embeddings of their titles and genres, or embeddings
    /// learned from the ratings alone (`pinnersage embed`; movies fewer than 2 users rated
    /// then have none and are not recommended).
    #[arg(long, value_enum, default_value = "titles")]
    embeddings: EmbeddingsArg,
}

/// Where the quickstart's item embeddings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EmbeddingsArg {
    /// The bundled MiniLM title embeddings.
    Titles,
    /// Learned from the ratings by `pinnersage embed`.
    Learned,
}

impl EmbeddingsArg {
    fn name(self) -> &'static str {
        match self {
            Self::Titles => "titles",
            Self::Learned => "learned",
        }
    }
}

/// Runs `pinnersage quickstart`.
pub fn run(args: &QuickstartArgs) -> Result<()> {
    let data_dir = &args.data.data_dir;
    let marker = data_dir.join(MARKER);
    if args.rebuild || !marker.exists() {
        let running = pinnersage_server::server_file(data_dir);
        if running.exists() {
            return Err(InputError(format!(
                "a pinnersage server is running on {} ({} exists): stop it first, or delete that file if the server is gone",
                data_dir.display(),
                running.display()
            ))
            .into());
        }
        let movielens = movielens_dir(args.movielens.as_deref())?;
        let shift = prepare(data_dir, &movielens, !args.original_times, args.embeddings)?;
        fs::write(
            &marker,
            serde_json::json!({
                "movielens": movielens,
                "min_rating": MIN_RATING,
                "time_shift_seconds": shift,
                "embeddings": args.embeddings.name(),
            })
            .to_string(),
        )
        .with_context(|| format!("writing {}", marker.display()))?;
    } else {
        let built: serde_json::Value = fs::read(&marker)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let built = built["embeddings"].as_str().unwrap_or("titles");
        if built != args.embeddings.name() {
            return Err(InputError(format!(
                "{} was built with --embeddings {built}: pass --rebuild to rebuild it with --embeddings {}, or pick another --data-dir",
                data_dir.display(),
                args.embeddings.name()
            ))
            .into());
        }
        eprintln!(
            "{} is ready (from an earlier quickstart; --rebuild starts over)",
            data_dir.display()
        );
    }
    if args.no_serve {
        println!("ready: pinnersage serve --data-dir {}", data_dir.display());
        return Ok(());
    }
    let addr = format!("127.0.0.1:{}", args.port);
    let shown = if args.port == 0 {
        "ADDRESS".to_owned()
    } else {
        addr.clone()
    };
    eprintln!(
        "\nOpen http://{shown}/ for the interest explorer. Or try:\n  \
         curl 'http://{shown}/v1/users/414/profile'\n  \
         curl 'http://{shown}/v1/users/414/recommendations?k=10'\n"
    );
    let mut argv: Vec<OsString> = vec![
        "--data-dir".into(),
        data_dir.into(),
        "--addr".into(),
        addr.into(),
    ];
    if !args.no_experiment {
        let file = demo_experiment(data_dir)?;
        eprintln!(
            "A demo experiment splits the users in two ({}; the explorer's Experiments view \
             reports it; --no-experiment serves without).",
            file.display()
        );
        argv.extend(["--experiments".into(), file.into()]);
    }
    // `serve` is parsed like its command line: the served defaults are the command's.
    crate::serve::run(&parse("serve", argv)?)
}

/// The demo experiment's file in the data directory.
const DEMO_EXPERIMENT: &str = "experiments.toml";

/// Writes the demo experiment unless the data directory has one (a user's edits are kept).
fn demo_experiment(data_dir: &Path) -> Result<PathBuf> {
    let file = data_dir.join(DEMO_EXPERIMENT);
    if !file.exists() {
        fs::write(&file, DEMO_EXPERIMENT_TOML)
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(file)
}

/// One interest against several: the paper's claim, as an experiment on whoever uses the
/// explorer (each answer is recorded; Engage posts a click naming its answer).
const DEMO_EXPERIMENT_TOML: &str = r#"# The quickstart's demo experiment (docs/experiments.md). Edit and restart the quickstart to
# try other arms; delete this file to get the demo back; --no-experiment serves without.
[[experiment]]
name = "quickstart"
salt = "quickstart-1"
control = "one-interest"

[[experiment.arm]]
name = "one-interest"     # recommendations from the user's single most important interest
share = 0.5
selection = "top"
medoids = 1

[[experiment.arm]]
name = "pinnersage"       # the server's defaults: interests sampled by importance
share = 0.5
"#;

/// The MovieLens directory: the flag, `examples/movielens-small` under the working directory, or
/// the one in the source tree this binary was built from.
fn movielens_dir(flag: Option<&Path>) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match flag {
        Some(dir) => vec![dir.to_path_buf()],
        None => vec![
            PathBuf::from("examples/movielens-small"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/movielens-small"),
        ],
    };
    candidates
        .iter()
        .find(|d| d.join(movielens::RATINGS).is_file())
        .cloned()
        .ok_or_else(|| {
            InputError(format!(
                "no MovieLens data (ratings.csv) in {}; pass --movielens DIR",
                candidates
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
            .into()
        })
}

/// Builds the data directory from the MovieLens files, each step the library call (and the
/// printing) of its command; with `live`, the ratings' times move so that the last one is now.
/// Returns the seconds they moved.
fn prepare(
    data_dir: &Path,
    movielens: &Path,
    live: bool,
    embeddings: EmbeddingsArg,
) -> Result<i64> {
    if data_dir.exists()
        && fs::read_dir(data_dir)
            .with_context(|| format!("reading {}", data_dir.display()))?
            .next()
            .is_some()
        && !data_dir.join(MARKER).exists()
    {
        return Err(InputError(format!(
            "{} already holds data that the quickstart did not create; pick another --data-dir",
            data_dir.display()
        ))
        .into());
    }
    if data_dir.exists() {
        fs::remove_dir_all(data_dir).with_context(|| format!("removing {}", data_dir.display()))?;
    }
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let file = |name: &str| movielens.join(name);
    let total = if embeddings == EmbeddingsArg::Learned {
        5
    } else {
        4
    };
    let done = std::cell::Cell::new(0);
    let step = |name: &str| {
        done.set(done.get() + 1);
        format!("{}/{total} {name}", done.get())
    };

    let events = data_dir.join("quickstart-events.csv");
    let last = run_step(&step("import events"), || {
        let ends_at = live.then(crate::args::unix_now);
        let ratings = positive_ratings(&file(movielens::RATINGS), &events, MIN_RATING, ends_at)?;
        eprintln!(
            "{} ratings >= {MIN_RATING} written to {}",
            ratings.kept,
            events.display()
        );
        if ratings.shift != 0 {
            eprintln!(
                "times moved by {:.0} days so that the last rating is now (--original-times keeps them)",
                ratings.shift as f64 / 86_400.0
            );
        }
        let files = [events.clone()];
        crate::import::events(data_dir, &files, &ImportOptions::default())?;
        Ok(ratings)
    })?;

    // MovieLens spans 1996–2018: `embed` and the batch see it all (the last rating is `now`),
    // importance still decays by age.
    const WHOLE_HISTORY_DAYS: u32 = 10_000;
    // With learned embeddings, `embed` reads the events just imported and `import items` reads
    // what it wrote.
    let (matrix, ids, normalize) = match embeddings {
        EmbeddingsArg::Titles => (
            file(movielens::EMBEDDINGS),
            file(movielens::EMBEDDING_IDS),
            true,
        ),
        EmbeddingsArg::Learned => {
            let out = data_dir.join("learned-embeddings");
            run_step(&step("embed (implicit ALS on the ratings)"), || {
                let options = EmbedOptions {
                    now: last.latest,
                    window_days: WHOLE_HISTORY_DAYS,
                    learner: Learner::Als(AlsParams::default()),
                    ..EmbedOptions::default()
                };
                crate::embed::embed(data_dir, &options, &out)
            })?;
            (out.join(EMBEDDINGS_FILE), out.join(IDS_FILE), false)
        }
    };
    run_step(&step("import items"), || {
        let movies = file(movielens::MOVIES);
        let options = ItemsOptions {
            ids: Some(&ids),
            normalize,
            attributes: Some(&movies),
            attributes_id_col: Some("movieId"),
        };
        crate::import::items(data_dir, &matrix, &options)
    })?;

    run_step(&step("index build"), || {
        crate::index::build(data_dir, &BuildOptions::default())
    })?;

    run_step(&step("batch"), || {
        let settings = GenerationSettings {
            window_days: WHOLE_HISTORY_DAYS,
            ..GenerationSettings::new(last.latest)
        };
        crate::batch::batch(data_dir, &BatchConfig::with(settings))
    })?;
    Ok(last.shift)
}

/// Runs one step with a heading and its wall time.
fn run_step<T>(name: &str, run: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("== {name}");
    let start = Instant::now();
    let out = run().with_context(|| format!("quickstart step {name:?} failed"))?;
    eprintln!("   ({:.1} s)", start.elapsed().as_secs_f64());
    Ok(out)
}

/// Parses a subcommand's arguments exactly as the command line would (same defaults).
fn parse<T: Args + FromArgMatches>(
    name: &'static str,
    argv: impl IntoIterator<Item = OsString>,
) -> Result<T> {
    let command = T::augment_args(clap::Command::new(name).no_binary_name(true));
    let matches = command
        .try_get_matches_from(argv)
        .with_context(|| format!("quickstart: arguments of {name}"))?;
    Ok(T::from_arg_matches(&matches)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinnersage_server::Retrieval;
    use pinnersage_server::experiments::Experiments;

    /// The demo experiment is a valid experiments file: two arms, the control the single
    /// interest, users split between both.
    #[test]
    fn the_demo_experiment_loads_and_splits_users_in_two() {
        let experiments = Experiments::parse(DEMO_EXPERIMENT_TOML, &Retrieval::default()).unwrap();
        let active = experiments.active().expect("the demo is active");
        let arms: Vec<&str> = active.arms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(arms, ["one-interest", "pinnersage"]);
        assert_eq!(active.control, 0);
        let in_control = (0..1_000)
            .filter(|u| active.arm_of(&u.to_string()).name == "one-interest")
            .count();
        assert!((400..600).contains(&in_control), "{in_control} of 1000");
    }
}
