//! `pinnersage-bench serve`: a load generator for a running `pinnersage serve`, over keep-alive
//! HTTP/1.1 connections, with Zipf-distributed users.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use pinnersage_core::sample::SplitMix64;

use crate::connect;
use pinnersage::args::InputError;

/// Load a running server with recommendation requests and report latency percentiles,
/// throughput and the share of ANN searches the medoid cache removed.
///
/// With --rate R the load is open-loop: requests are scheduled at R per second in total and
/// latency is measured from the scheduled time (so a stalled server cannot hide its queue).
/// With --rate 0 every connection sends back-to-back (saturation throughput).
///
/// Users are `{prefix}{i}` for i in 0..--users, drawn from a Zipf law of exponent --zipf (a
/// few heavy users, a long tail), as `pinnersage synth` names them.
///
/// Example:
///   pinnersage-bench serve --addr 127.0.0.1:8080 --users 100000 --rate 2000 --duration 20
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchServeArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Number of distinct users.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// User id prefix.
    #[arg(long, default_value = "u")]
    prefix: String,
    /// Zipf exponent of user popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Requests per second in total (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Keep-alive connections (one thread each).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Results per request.
    #[arg(long, default_value_t = 50)]
    k: usize,
    /// Seed of the user draw.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// More query parameters for every request, e.g. `alpha=1.0&selection=all`.
    #[arg(long, value_name = "PARAMS")]
    query: Option<String>,
    /// Also print p50, p99 and max latency of each second of load (when stalls happen).
    #[arg(long)]
    timeline: bool,
}

/// A request: the millisecond of the run it was scheduled at, its latency in microseconds.
type Timed = (u32, u32);

/// One line per second of load: requests scheduled in it, their p50, p99 and max latency.
fn print_timeline(requests: &[Timed]) {
    let seconds = requests.iter().map(|&(ms, _)| ms / 1000).max().unwrap_or(0) as usize + 1;
    let mut by_second = vec![Vec::new(); seconds];
    for &(ms, us) in requests {
        by_second[(ms / 1000) as usize].push(us);
    }
    println!("second  requests  p50 ms  p99 ms  max ms");
    for (second, mut latencies) in by_second.into_iter().enumerate() {
        if latencies.is_empty() {
            continue;
        }
        latencies.sort_unstable();
        let pct =
            |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        println!(
            "{second:>6}  {:>8}  {:>6.2}  {:>6.2}  {:>6.2}",
            latencies.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
}

/// Cumulative Zipf distribution over `n` ranks.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=n)
        .map(|i| {
            acc += (i as f64).powf(-s);
            acc
        })
        .collect();
    for c in &mut cdf {
        *c /= acc;
    }
    cdf
}

fn cache_counters(addr: SocketAddr) -> Result<(f64, f64)> {
    let (_, body) = connect(addr)?.get("/metrics")?;
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        value("pinnersage_medoid_cache_hits_total"),
        value("pinnersage_medoid_cache_misses_total"),
    ))
}

/// Runs `pinnersage-bench serve`.
pub fn run(args: &BenchServeArgs) -> Result<()> {
    let valid_times = args.duration.is_finite()
        && args.duration > 0.0
        && args.rate.is_finite()
        && args.rate >= 0.0;
    if args.users == 0 || args.connections == 0 || !valid_times {
        return Err(InputError(
            "--users and --connections must be at least 1, --duration positive, --rate >= 0".into(),
        )
        .into());
    }
    let cdf = zipf_cdf(args.users, args.zipf);
    let (hits0, misses0) = cache_counters(args.addr)?;
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now() + Duration::from_millis(100);
    let per_conn_interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate));
    let results: Vec<Result<(Vec<Timed>, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|c| {
                let cdf = &cdf;
                scope.spawn(move || -> Result<(Vec<Timed>, u64)> {
                    let mut conn = connect(args.addr)?;
                    let mut rng = SplitMix64::new(args.seed ^ (c as u64).wrapping_mul(0x9E37_79B9));
                    // Room for every request of an open-loop run, written once before it
                    // starts: a vector growing mid-run has this thread fault in fresh memory
                    // (with transparent huge pages, 2 MiB zeroed at once, every connection at
                    // the same moment), and the requests scheduled meanwhile would count it as
                    // the server's latency.
                    let planned = per_conn_interval.map_or(0, |i| {
                        (duration.as_secs_f64() / i.as_secs_f64()) as usize + 2
                    });
                    let mut latencies_us: Vec<Timed> = Vec::with_capacity(planned);
                    latencies_us.resize(planned, (u32::MAX, u32::MAX));
                    latencies_us.clear();
                    let mut errors = 0u64;
                    // Stagger connections evenly over one interval.
                    let mut next = start
                        + per_conn_interval
                            .map_or(Duration::ZERO, |i| i * c as u32 / args.connections as u32);
                    std::thread::sleep(start.saturating_duration_since(Instant::now()));
                    loop {
                        match per_conn_interval {
                            Some(_) => {
                                let now = Instant::now();
                                if next > now {
                                    std::thread::sleep(next - now);
                                }
                            }
                            None => next = Instant::now(),
                        }
                        if next.duration_since(start) >= duration {
                            break;
                        }
                        let u = cdf
                            .partition_point(|&p| p < rng.next_f64())
                            .min(cdf.len() - 1);
                        let mut path =
                            format!("/v1/users/{}{u}/recommendations?k={}", args.prefix, args.k);
                        if let Some(more) = &args.query {
                            path.push('&');
                            path.push_str(more);
                        }
                        let (status, _) = conn.get(&path)?;
                        if status != 200 {
                            errors += 1;
                        }
                        let at_ms = next.duration_since(start).as_millis() as u32;
                        let took_us = next.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        latencies_us.push((at_ms, took_us));
                        if let Some(interval) = per_conn_interval {
                            next += interval;
                        }
                    }
                    Ok((latencies_us, errors))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load thread panicked"))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64().min(args.duration).max(1e-9);
    let mut all = Vec::new();
    let mut errors = 0;
    for r in results {
        let (lat, err) = r?;
        all.extend(lat);
        errors += err;
    }
    if all.is_empty() {
        bail!("no request completed");
    }
    if args.timeline {
        print_timeline(&all);
    }
    let mut all: Vec<u32> = all.into_iter().map(|(_, us)| us).collect();
    all.sort_unstable();
    let pct = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    let (hits1, misses1) = cache_counters(args.addr)?;
    let (hits, misses) = (hits1 - hits0, misses1 - misses0);
    println!(
        "{} requests in {:.1} s: {:.0} req/s ({}), {} non-200",
        all.len(),
        elapsed,
        all.len() as f64 / elapsed,
        if args.rate > 0.0 {
            format!("target {:.0}", args.rate)
        } else {
            format!("saturated, {} connections", args.connections)
        },
        errors
    );
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    println!(
        "medoid cache: {hits:.0} hits, {misses:.0} misses: {:.1}% of ANN searches removed",
        100.0 * hits / (hits + misses).max(1.0)
    );
    Ok(())
}
