//! `pinnersage-bench items`: item upserts per second against a running `pinnersage serve`, and
//! the time from sending an item to finding it in `similar`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use pinnersage_core::sample::SplitMix64;

use crate::connect;
use crate::ingest::{PostLoad, print_latencies};
use pinnersage::args::InputError;
use pinnersage_catalog::catalog::Catalog;

/// Upsert items into a running server's catalog and measure how many per second become durable
/// and visible, and how long an item takes from being sent to being found.
///
/// Load: --connections clients each POST /v1/items with --batch items per request (answered
/// once journaled, fsynced and applied). A share --replace of the items replace existing items
/// ({item-prefix}0..--items, as `pinnersage synth` names them) with a new vector; the others are
/// new (`bench-...`). With --like DATA_DIR (a copy of the served data directory, read only)
/// every vector is a random item of that catalog moved by --noise of its length, so the new
/// items look like the catalog's; without it, vectors are uniform in [-1, 1]^--dim, far from
/// any real catalog (HNSW finds such outliers worse).
///
/// Latency: meanwhile, every --probe-ms a probe upserts two new items, A and B next to A, in one
/// request, then asks GET /v1/items/A/similar?k=1 until it names B: the time from send to
/// visible (and to the answer, which comes once durable and applied).
///
/// Run `pinnersage-bench serve --rate 2000` beside it to see what the changes cost the
/// recommendations; /metrics' pinnersage_index_backlog says how far the graph lags.
///
/// Example:
///   pinnersage-bench items --addr 127.0.0.1:8080 --dim 128 --items 200000 --rate 5000 --duration 20
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchItemsArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The catalog's dimension.
    #[arg(long)]
    dim: usize,
    /// Items of the catalog that replacements draw from ({item-prefix}0 ..).
    #[arg(long, default_value_t = 0)]
    items: u64,
    /// Item id prefix.
    #[arg(long, default_value = "i")]
    item_prefix: String,
    /// Share of the upserts that replace an existing item (needs --items).
    #[arg(long, default_value_t = 0.0)]
    replace: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Items per request.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Items per second in total (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Milliseconds between latency probes.
    #[arg(long, default_value_t = 50)]
    probe_ms: u64,
    /// Draw vectors near the items of this data directory's catalog.
    #[arg(long, value_name = "DATA_DIR")]
    like: Option<std::path::PathBuf>,
    /// With --like: how far from the item a new vector is, as a share of its length.
    #[arg(long, default_value_t = 0.1)]
    noise: f32,
}

/// Where the load's vectors come from.
struct Vectors {
    dim: usize,
    like: Option<Catalog>,
    noise: f32,
}

impl Vectors {
    /// A vector near a random catalog item (with --like), else uniform in [-1, 1]^dim.
    fn draw(&self, rng: &mut SplitMix64) -> Vec<f32> {
        let Some(catalog) = &self.like else {
            return (0..self.dim)
                .map(|_| rng.next_f64() as f32 * 2.0 - 1.0)
                .collect();
        };
        let row = (rng.next_u64() % catalog.rows() as u64) as usize;
        let item = catalog.embedding(row);
        let length = pinnersage_core::scan::dot(item, item).sqrt();
        let scale = self.noise * length / (self.dim as f32).sqrt();
        item.iter()
            .map(|&x| x + scale * (rng.next_f64() as f32 * 2.0 - 1.0) * 3f32.sqrt())
            .collect()
    }
}

/// Appends `{"id":..,"embedding":[..]}` to `out`.
fn item_json(out: &mut String, id: &str, vector: &[f32]) {
    out.push_str(&format!(r#"{{"id":"{id}","embedding":["#));
    for (k, x) in vector.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str(&format!("{x:.5}"));
    }
    out.push_str("]}");
}

/// Runs `pinnersage-bench items`.
pub fn run(args: &BenchItemsArgs) -> Result<()> {
    let valid = args.dim > 0
        && args.connections > 0
        && args.batch > 0
        && args.duration.is_finite()
        && args.duration > 0.0
        && args.rate.is_finite()
        && args.rate >= 0.0
        && (0.0..=1.0).contains(&args.replace)
        && (args.replace == 0.0 || args.items > 0);
    if !valid {
        return Err(InputError(
            "--dim, --connections and --batch must be positive, --duration positive, --rate >= 0, \
             --replace in 0..=1 (with --items)"
                .into(),
        )
        .into());
    }
    let (status, _) = connect(args.addr)?.get("/healthz")?;
    if status != 200 {
        bail!("{} answered /healthz with HTTP {status}", args.addr);
    }
    let like = args.like.as_deref().map(Catalog::open).transpose()?;
    if let Some(catalog) = &like
        && catalog.dim() != args.dim
    {
        bail!(
            "--like has {} dimensions, --dim says {}",
            catalog.dim(),
            args.dim
        );
    }
    let vectors = Vectors {
        dim: args.dim,
        like,
        noise: args.noise,
    };
    let vectors = &vectors;
    let stop = AtomicBool::new(false);
    let load = PostLoad {
        addr: args.addr,
        path: "/v1/items",
        clients: args.connections,
        per_request: args.batch,
        rate: args.rate,
        duration: args.duration,
    };
    let (loaded, probes) = std::thread::scope(|scope| {
        let prober = scope.spawn(|| probe(args, vectors, &stop));
        let loaded = load.run(|c| {
            let mut rng = SplitMix64::new(0x17E5 + c as u64);
            let mut seq = 0u64;
            move || {
                let mut body = String::from(r#"{"items":["#);
                for k in 0..args.batch {
                    if k > 0 {
                        body.push(',');
                    }
                    let id = if rng.next_f64() < args.replace {
                        format!("{}{}", args.item_prefix, rng.next_u64() % args.items)
                    } else {
                        seq += 1;
                        format!("bench-{}-{c}-{seq}", std::process::id())
                    };
                    item_json(&mut body, &id, &vectors.draw(&mut rng));
                }
                body.push_str("]}");
                body
            }
        });
        stop.store(true, Ordering::Relaxed);
        let probes = prober.join().expect("probe thread panicked");
        (loaded, probes)
    });
    let (n, seconds) = loaded?;
    let (visible, answered) = probes?;
    println!(
        "{n} items upserted (durable and visible) in {seconds:.1} s: {:.0} items/s ({} clients x {} items per request, {:.0}% replacing)",
        n as f64 / seconds,
        args.connections,
        args.batch,
        args.replace * 100.0
    );
    let (_, metrics) = connect(args.addr)?.get("/metrics")?;
    let backlog = String::from_utf8_lossy(&metrics).lines().find_map(|l| {
        l.strip_prefix("pinnersage_index_backlog ")?
            .parse::<f64>()
            .ok()
    });
    if let Some(backlog) = backlog {
        println!("rows the graph did not hold yet at the end: {backlog}");
    }
    print_latencies("item -> found by similar", visible);
    print_latencies("item -> acknowledged (HTTP 202: durable)", answered);
    Ok(())
}

/// Upserts probe pairs until `stop`; returns (send -> visible, send -> answered) in ms.
fn probe(
    args: &BenchItemsArgs,
    vectors: &Vectors,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut conn = connect(args.addr)?;
    // Seeded per run: a run against a server that kept an earlier run's probes must not make
    // the same pairs again (the earlier pair would tie with the new one at score 1).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = SplitMix64::new(0x9_0BE ^ nanos ^ u64::from(std::process::id()).rotate_left(32));
    let (mut visible, mut answered) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (a, b) = (
            format!("probe-{}-{n}-a", std::process::id()),
            format!("probe-{}-{n}-b", std::process::id()),
        );
        let v = vectors.draw(&mut rng);
        let mut near = v.clone();
        near[0] += 1e-4;
        let mut body = String::from(r#"{"items":["#);
        item_json(&mut body, &a, &v);
        body.push(',');
        item_json(&mut body, &b, &near);
        body.push_str("]}");
        let sent = Instant::now();
        let (status, reply) = conn.post_json("/v1/items", body.as_bytes())?;
        if status != 202 {
            bail!("probe: HTTP {status}: {}", String::from_utf8_lossy(&reply));
        }
        answered.push(sent.elapsed().as_secs_f64() * 1e3);
        let path = format!("/v1/items/{a}/similar?k=1");
        loop {
            let (status, reply) = conn.get(&path)?;
            if status == 200 && String::from_utf8_lossy(&reply).contains(&b) {
                break;
            }
            if sent.elapsed() > Duration::from_secs(10) {
                bail!(
                    "probe {b} not found by similar of {a} after 10 s (the graph search missed \
                     it, or another item is as near: an outlier? try --like)"
                );
            }
        }
        visible.push(sent.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(args.probe_ms));
    }
    Ok((visible, answered))
}
