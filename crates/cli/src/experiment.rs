//! `pinnersage experiment report`: an online experiment's report, from a stopped server's data
//! directory (the impressions it recorded and the events it stored) or from logged answers and
//! engagement event files.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use pinnersage_catalog::timestamp::parse_timestamp;
use pinnersage_eval::online::{
    ArmsOf, OnlineReport, StoredPeriod, engagements_of, read_impressions, report,
    report_from_stores,
};
use pinnersage_pipeline::data_in::import_events::{ImportOptions, read_events};
use pinnersage_server::experiments::Experiments;
use pinnersage_server::fleet_report::{ReportPeriod, fleet_report};
use pinnersage_store::events::EventStore;
use pinnersage_store::impressions::ImpressionStore;

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
/// --data-dir: the impressions a server recorded (DATA_DIR/impressions) and the events it
/// stored, for a server that is not running (a running one answers the same report at
/// GET /v1/experiments/NAME/report).
///
/// --servers: running servers, e.g. the replicas of a partitioned fleet (each reports only the
/// users of the partitions it holds): each partition is counted by the first server holding it
/// and the parts are merged into the fleet's report (the arms are the servers'; --experiments
/// is not needed). PINNERSAGE_TOKEN is sent when set.
///
/// --impressions: one JSON answer of /v1/users/{user}/recommendations per line, as the server
/// returned it, with `time` (unix seconds it was shown at) added. --events: engagement events
/// (CSV, JSON lines or Parquet, as `import events` reads them). An engagement is attributed to
/// the user's last impression that showed the item at most --window-hours before it.
///
/// Examples:
///   pinnersage experiment report --experiments experiments.toml --name interests \
///     --data-dir /srv/pinnersage --from 2026-12-01T00:00:00Z
///   pinnersage experiment report --experiments experiments.toml --name interests \
///     --impressions shown.jsonl --events clicks.csv
///   pinnersage experiment report --name interests \
///     --servers 10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 --from 2026-12-01T00:00:00Z
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReportArgs {
    /// The experiments file the server ran (`serve --experiments`).
    #[arg(long, value_name = "FILE", required_unless_present = "servers")]
    experiments: Option<PathBuf>,
    /// The experiment to report.
    #[arg(long)]
    name: String,
    /// A stopped server's data directory: its recorded impressions and stored events.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["impressions", "events", "servers"],
          required_unless_present_any = ["impressions", "servers"])]
    data_dir: Option<PathBuf>,
    /// Running servers (HOST:PORT or http://HOST:PORT, comma-separated): every partition of
    /// their fleet held by at least one.
    #[arg(long, value_name = "LIST", value_delimiter = ',',
          conflicts_with_all = ["impressions", "events", "experiments"])]
    servers: Vec<String>,
    /// With --data-dir or --servers: the first impression time (unix seconds or RFC 3339;
    /// default: all kept).
    #[arg(long)]
    from: Option<String>,
    /// With --data-dir or --servers: the last impression time (default: the newest, or now).
    #[arg(long)]
    to: Option<String>,
    /// The answers shown, one JSON per line, with `time`.
    #[arg(long, value_name = "FILE", requires = "events")]
    impressions: Option<PathBuf>,
    /// Engagement events files.
    #[arg(long, value_name = "FILE", requires = "impressions")]
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
    if !args.servers.is_empty() {
        return from_servers(args);
    }
    if (args.from.is_some() || args.to.is_some()) && args.data_dir.is_none() {
        return Err(InputError("--from and --to go with --data-dir or --servers".into()).into());
    }
    let file = args
        .experiments
        .as_ref()
        .expect("clap requires it without --servers");
    let experiments = Experiments::load(file, &Default::default()).map_err(input)?;
    let Some(experiment) = experiments.all.iter().find(|e| e.name == args.name) else {
        let names: Vec<&str> = experiments.all.iter().map(|e| e.name.as_str()).collect();
        return Err(InputError(format!(
            "{}: no experiment {:?} (it has: {})",
            file.display(),
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
    let window = (args.window_hours * 3_600.0).round() as i64;
    let (report, heading) = match (&args.data_dir, &args.impressions) {
        (Some(data_dir), _) => {
            let time = |flag: &str, value: &Option<String>, default: i64| match value {
                None => Ok(default),
                Some(v) => v
                    .parse::<i64>()
                    .or_else(|_| parse_timestamp(v))
                    .map_err(|e| {
                        InputError(format!("--{flag} {v:?}: {e} (unix seconds or RFC 3339)"))
                    }),
            };
            let period = StoredPeriod {
                experiment: experiment.name.clone(),
                from: time("from", &args.from, i64::MIN)?,
                to: time("to", &args.to, i64::MAX)?,
                window_seconds: window,
            };
            let impressions = ImpressionStore::open(data_dir, u32::MAX).map_err(input)?;
            let events = EventStore::open(data_dir).map_err(input)?;
            let report = report_from_stores(&arms, &period, &impressions, &events)?;
            (
                report,
                format!("experiment {} in {}", experiment.name, data_dir.display()),
            )
        }
        (None, Some(file)) => {
            let (impressions, outside) = read_impressions(file).map_err(input)?;
            let mut events = Vec::new();
            for file in &args.events {
                events.extend(
                    read_events(file, &ImportOptions::default())
                        .map_err(input)?
                        .0,
                );
            }
            let heading = format!(
                "experiment {}: {} impressions ({outside} outside any experiment skipped)",
                experiment.name,
                impressions.len()
            );
            (
                report(&arms, &impressions, &engagements_of(events), window),
                heading,
            )
        }
        (None, None) => {
            return Err(InputError("give --data-dir, or --impressions and --events".into()).into());
        }
    };
    print_report(&report, &heading, args.json)
}

fn print_report(report: &OnlineReport, heading: &str, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{heading}");
        print!("{}", report.text());
    }
    Ok(())
}

/// `--servers`: the parts of the fleet's replicas, merged.
fn from_servers(args: &ReportArgs) -> Result<()> {
    let servers = (args.servers.iter())
        .map(|s| crate::items::server_addr(s))
        .collect::<Result<Vec<_>>>()?;
    let period = ReportPeriod {
        from: args.from.clone(),
        to: args.to.clone(),
        window_hours: Some(args.window_hours),
    };
    let token = std::env::var("PINNERSAGE_TOKEN").ok();
    let fleet = fleet_report(&servers, &args.name, &period, token.as_deref())?;
    let parts: Vec<String> = (fleet.parts.iter())
        .map(|(server, parts)| format!("{server} {parts:?}"))
        .collect();
    let heading = format!(
        "experiment {} over {} partitions: {}",
        args.name,
        fleet.partitions,
        parts.join(", ")
    );
    print_report(&fleet.report, &heading, args.json)
}
