//! `pinnersage cluster`: one user's actions in, interests out.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use pinnersage_catalog::npy::{self, MatrixF32};
use pinnersage_core::importance::DEFAULT_LAMBDA;
use pinnersage_core::profile::{DEFAULT_ALPHA, DEFAULT_MAX_ACTIONS};
use pinnersage_core::{Actions, Clusterer, Embeddings, Profile, ProfileParams};
use serde_json::json;

use crate::args::InputError;

/// Cluster one user's actions into interests (Ward, cut at alpha) and print them
///
/// Rows of the embeddings file are the user's actions, in any order. Each interest is printed with
/// its medoid (the member row nearest to all others), its member rows, its size and its
/// importance Σ exp(−lambda·age_days). Interests are sorted by importance, then size, then medoid
/// row. Rows are 0-based.
///
/// Example:
///   pinnersage cluster --embeddings user.npy --times times.npy --alpha 1.75 --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ClusterArgs {
    /// Embeddings of the user's actions: an m x d float32/float64 NPY file, one row per action.
    #[arg(long, value_name = "X.npy")]
    pub embeddings: PathBuf,
    /// Action times: a length-m NPY of unix seconds (integer or float). Without it every action
    /// counts as happening now.
    #[arg(long, value_name = "T.npy")]
    pub times: Option<PathBuf>,
    /// The moment importance is measured at, in unix seconds [default: the latest action time].
    #[arg(long, value_name = "UNIX_SECONDS", allow_negative_numbers = true)]
    pub now: Option<i64>,
    /// Merge threshold on Ward's squared-distance merge cost. Two single actions join when their
    /// squared distance is <= alpha; the default suits L2-normalised embeddings.
    #[arg(long, value_name = "A", default_value_t = DEFAULT_ALPHA, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Importance decay per day: 0 counts actions, 0.01 halves weight every ~69 days.
    #[arg(long = "lambda", value_name = "L", default_value_t = DEFAULT_LAMBDA, allow_negative_numbers = true)]
    pub lambda: f64,
    /// Cluster only the most recent N actions (bounds memory at 4·N² bytes).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ACTIONS)]
    pub max_actions: usize,
    /// Print JSON: {"clusters":[{"medoid":ROW,"members":[ROW,...],"size":N,"importance":F},...]}.
    #[arg(long)]
    pub json: bool,
    /// Also print the full Ward linkage (scipy layout; heights are squared Ward costs).
    #[arg(long)]
    pub linkage: bool,
}

/// The inputs of one `cluster` call, read and validated.
pub struct ClusterInput {
    /// The embedding matrix.
    pub matrix: MatrixF32,
    /// One unix time per row.
    pub times: Vec<i64>,
    /// The time importance is measured at.
    pub now: i64,
}

impl ClusterInput {
    /// The input as validated actions; errors name `file` (the embeddings file).
    pub fn actions(&self, file: &Path) -> Result<Actions<'_>> {
        let in_file =
            |e: pinnersage_core::CoreError| InputError(format!("{}: {e}", file.display()));
        let x = Embeddings::new(&self.matrix.data, self.matrix.cols).map_err(in_file)?;
        Ok(Actions::new(x, &self.times, None).map_err(in_file)?)
    }
}

/// Reads the embeddings (and times) files, naming the file in every error.
pub fn read_input(
    embeddings: &Path,
    times: Option<&Path>,
    now: Option<i64>,
) -> Result<ClusterInput> {
    let input_err = |e: npy::NpyError| InputError(e.to_string());
    let matrix = npy::read(embeddings)
        .and_then(npy::NpyArray::into_f32_matrix)
        .map_err(input_err)?;
    let times = match times {
        Some(path) => {
            let t = npy::read(path)
                .and_then(npy::NpyArray::into_i64_vector)
                .map_err(input_err)?;
            if t.len() != matrix.rows {
                return Err(InputError(format!(
                    "{}: has {} times but {} has {} rows",
                    path.display(),
                    t.len(),
                    embeddings.display(),
                    matrix.rows
                ))
                .into());
            }
            t
        }
        None => vec![now.unwrap_or(0); matrix.rows],
    };
    let now = now.unwrap_or_else(|| times.iter().copied().max().unwrap_or(0));
    Ok(ClusterInput { matrix, times, now })
}

/// Builds the clusterer for the given parameters, reporting bad values as input errors.
pub fn clusterer(alpha: f64, lambda: f64, max_actions: usize) -> Result<Clusterer> {
    let params = ProfileParams {
        alpha,
        lambda,
        max_actions,
    };
    Clusterer::new(params).map_err(|e| InputError(e.to_string()).into())
}

pub fn run(args: &ClusterArgs) -> Result<()> {
    let mut clusterer = clusterer(args.alpha, args.lambda, args.max_actions)?;
    let input = read_input(&args.embeddings, args.times.as_deref(), args.now)?;
    let actions = input.actions(&args.embeddings)?;
    let profile = clusterer
        .profile(&actions, input.now)
        .map_err(|e| InputError(format!("{}: {e}", args.embeddings.display())))?;
    let linkage = args
        .linkage
        .then(|| clusterer.dendrogram(actions.embeddings()).linkage());
    if args.json {
        let mut out = json!({ "clusters": profile_json(&profile) });
        if let Some(rows) = linkage {
            out["linkage"] = rows
                .iter()
                .map(|r| json!([r.left, r.right, r.height, r.size]))
                .collect();
        }
        println!("{out}");
    } else {
        print_table(&profile, &input, args);
        if let Some(rows) = linkage {
            println!("\nlinkage (left, right, squared Ward height, size):");
            for r in rows {
                println!(
                    "{:>6} {:>6} {:>14.6} {:>6}",
                    r.left, r.right, r.height, r.size
                );
            }
        }
    }
    Ok(())
}

/// The stable JSON form of a profile's clusters.
fn profile_json(profile: &Profile) -> serde_json::Value {
    profile
        .clusters
        .iter()
        .map(|c| {
            json!({
                "medoid": c.medoid,
                "members": c.members,
                "size": c.size(),
                "importance": c.importance,
            })
        })
        .collect()
}

fn print_table(profile: &Profile, input: &ClusterInput, args: &ClusterArgs) {
    println!(
        "{} interests from {} actions x {} dims (alpha {}, lambda {}, now {})",
        profile.clusters.len(),
        input.matrix.rows,
        input.matrix.cols,
        args.alpha,
        args.lambda,
        input.now
    );
    println!(
        "{:>4} {:>6} {:>12} {:>7}  members",
        "#", "size", "importance", "medoid"
    );
    for (k, c) in profile.clusters.iter().enumerate() {
        let shown: Vec<String> = c.members.iter().take(8).map(ToString::to_string).collect();
        let more = if c.size() > 8 {
            format!(" (+{} more)", c.size() - 8)
        } else {
            String::new()
        };
        println!(
            "{:>4} {:>6} {:>12.4} {:>7}  {}{}",
            k + 1,
            c.size(),
            c.importance,
            c.medoid,
            shown.join(", "),
            more
        );
    }
}
