//! `pinnersage experiment report`: an online experiment's report from logged impressions and
//! engagement events.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use pinnersage_eval::online::{ArmsOf, engagements_of, read_impressions, report};
use pinnersage_pipeline::data_in::import_events::{ImportOptions, read_events};
use pinnersage_server::experiments::Experiments;

use crate::args::{InputError, input};

/// Online experiments (docs/experiments.md).
#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Report an experiment: per arm users, impressions, engagements, engaged-user rate and
    /// click-through rate with 95% intervals against the control, and the sample-ratio test.
    Report(ReportArgs),
}

/// Report an online experiment from the answers you showed and the engagements that followed.
///
/// --impressions: one JSON answer of /v1/users/{user}/recommendations per line, as the server
/// returned it, with `time` (unix seconds it was shown at) added. --events: engagement events
/// (CSV, JSON lines or Parquet, as `import events` reads them). An engagement is attributed to
/// the user's last impression that showed the item at most --window-hours before it.
///
/// Example:
///   pinnersage experiment report --experiments experiments.toml --name interests \
///     --impressions shown.jsonl --events clicks.csv
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReportArgs {
    /// The experiments file the server ran (`serve --experiments`).
    #[arg(long, value_name = "FILE")]
    experiments: PathBuf,
    /// The experiment to report.
    #[arg(long)]
    name: String,
    /// The answers shown, one JSON per line, with `time`.
    #[arg(long, value_name = "FILE")]
    impressions: PathBuf,
    /// Engagement events files.
    #[arg(long, value_name = "FILE", required = true)]
    events: Vec<PathBuf>,
    /// Attribution window in hours.
    #[arg(long, default_value_t = 24.0)]
    window_hours: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `pinnersage experiment ...`.
pub fn run(command: &ExperimentCommand) -> Result<()> {
    let ExperimentCommand::Report(args) = command;
    if !(args.window_hours.is_finite() && args.window_hours > 0.0) {
        return Err(InputError(format!(
            "--window-hours must be a positive number, got {}",
            args.window_hours
        ))
        .into());
    }
    let experiments = Experiments::load(&args.experiments, &Default::default()).map_err(input)?;
    let Some(experiment) = experiments.all.iter().find(|e| e.name == args.name) else {
        let names: Vec<&str> = experiments.all.iter().map(|e| e.name.as_str()).collect();
        return Err(InputError(format!(
            "{}: no experiment {:?} (it has: {})",
            args.experiments.display(),
            args.name,
            names.join(", ")
        ))
        .into());
    };
    let arms = ArmsOf {
        names: experiment.arms.iter().map(|a| a.name.clone()).collect(),
        shares: experiment.arms.iter().map(|a| a.share).collect(),
        control: experiment.control,
    };
    let (impressions, outside) = read_impressions(&args.impressions).map_err(input)?;
    let mut events = Vec::new();
    for file in &args.events {
        events.extend(
            read_events(file, &ImportOptions::default())
                .map_err(input)?
                .0,
        );
    }
    let window = (args.window_hours * 3_600.0).round() as i64;
    let report = report(&arms, &impressions, &engagements_of(events), window);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "experiment {}: {} impressions ({outside} outside any experiment skipped)",
            experiment.name,
            impressions.len()
        );
        print!("{}", report.text());
    }
    Ok(())
}
