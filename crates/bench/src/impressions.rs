//! `pinnersage-bench impressions`: a data directory of synthetic experiment traffic (recorded
//! impressions and the engagements that followed), for timing the experiment report at scale.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use pinnersage_core::experiment::Split;
use pinnersage_core::sample::SplitMix64;
use pinnersage_store::events::{Event, EventStore};
use pinnersage_store::impressions::{DAY_SECONDS, Impression, ImpressionStore, Shown};

/// Write synthetic impressions of a two-arm experiment and the engagements that followed into
/// a data directory (its impression and event stores), then time nothing: time the report with
/// `pinnersage experiment report --data-dir DIR` (or the server's /v1/experiments/NAME/report).
///
/// Users `u{n}` (uniform over --users) are split 50/50 by the experiment's salt into arms `a`
/// and `b` (name them in the experiments file: `arm = [{name = "a", share = 0.5}, {name = "b",
/// share = 0.5}]`, salt `s`); impressions are spread evenly over --days days before --now,
/// each showing --shown items of --items, each item engaged with probability --ctr (arm `b`'s
/// by 10% more) a minute later.
///
/// Example:
///   pinnersage-bench impressions --data-dir d --impressions 10000000 --users 1000000
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchImpressionsArgs {
    /// The data directory to write into (created if needed).
    #[arg(long)]
    data_dir: PathBuf,
    /// Impressions to write.
    #[arg(long, default_value_t = 1_000_000)]
    impressions: u64,
    /// Distinct users.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Distinct items.
    #[arg(long, default_value_t = 200_000)]
    items: u64,
    /// Items per impression.
    #[arg(long, default_value_t = 10)]
    shown: usize,
    /// Days the impressions span, ending at --now.
    #[arg(long, default_value_t = 7)]
    days: i64,
    /// Chance that a shown item is engaged with (arm a; arm b's is 10% higher).
    #[arg(long, default_value_t = 0.02)]
    ctr: f64,
    /// The experiment's name.
    #[arg(long, default_value = "e")]
    experiment: String,
    /// Unix seconds of the last impression.
    #[arg(long, default_value_t = 1_700_000_000)]
    now: i64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs `pinnersage-bench impressions`.
pub fn run(args: &BenchImpressionsArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let retention = u32::try_from(args.days + 1)?;
    let impressions = ImpressionStore::open(&args.data_dir, retention)?;
    let events = EventStore::open(&args.data_dir)?;
    let split = Split::new("s", &[0.5, 0.5])?;
    let mut rng = SplitMix64::new(args.seed);
    let start = args.now - args.days * DAY_SECONDS;
    let step = (args.days * DAY_SECONDS) as f64 / args.impressions.max(1) as f64;
    let started = Instant::now();
    let (mut written, mut engaged) = (0u64, 0u64);
    const CHUNK: u64 = 20_000;
    while written < args.impressions {
        let n = CHUNK.min(args.impressions - written);
        let mut chunk = Vec::with_capacity(n as usize);
        let mut clicks = Vec::new();
        for k in written..written + n {
            let user = format!("u{}", rng.next_u64() % args.users);
            let arm = split.arm_of(&user);
            let time = start + (k as f64 * step) as i64;
            let ctr = args.ctr * if arm == 1 { 1.1 } else { 1.0 };
            let items: Vec<Shown> = (0..args.shown)
                .map(|_| {
                    let item = rng.next_u64() % args.items;
                    Shown {
                        item: format!("i{item}"),
                        interest: Some(format!("i{}", item - item % 100)),
                    }
                })
                .collect();
            for s in &items {
                if rng.next_f64() < ctr {
                    clicks.push(Event {
                        user: user.clone(),
                        item: s.item.clone(),
                        time: time + 60,
                        action: "click".into(),
                        weight: 1.0,
                        id: None,
                        request_id: None,
                    });
                }
            }
            chunk.push(Impression {
                request_id: format!("{:016x}{k:016x}", args.seed),
                experiment: args.experiment.clone(),
                arm: ["a", "b"][arm].into(),
                user,
                time,
                latency_micros: Some(400 + (rng.next_u64() % 400) as u32),
                items,
            });
        }
        impressions.record(&chunk)?;
        engaged += events.insert(&clicks)?.inserted;
        written += n;
        if written % 1_000_000 < CHUNK {
            eprintln!(
                "{written} impressions, {engaged} engagements, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "wrote {written} impressions ({} items shown) and {engaged} engagements of experiment {} \
         into {} in {:.1} s; impressions take {} bytes on disk ({:.0} per impression)",
        written * args.shown as u64,
        args.experiment,
        args.data_dir.display(),
        started.elapsed().as_secs_f64(),
        impressions.disk_bytes(),
        impressions.disk_bytes() as f64 / written.max(1) as f64
    );
    Ok(())
}
