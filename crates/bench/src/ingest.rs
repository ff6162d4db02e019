//! `pinnersage-bench ingest`: durable ingest throughput and event -> visible latency against a
//! running `pinnersage serve`, over HTTP or NATS JetStream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use pinnersage_core::sample::SplitMix64;

use crate::connect;
use pinnersage::args::{InputError, unix_now};

/// Stream engagements into a running server and measure how many per second become durable,
/// and how long one event takes to show in the user's profile (and so in recommendations).
///
/// Load: --connections clients each send --batch events per request (HTTP: POST /v1/events,
/// answered once durable) or per message (--nats: published to JetStream; the server's
/// consumer acknowledges each once durable). Events are for users u0..--users on items
/// {item-prefix}0..--items, as `pinnersage synth` names them, stamped with the current time.
///
/// --rate R paces the load at R events per second in total (open loop); --rate 0 sends as fast
/// as the server takes them (HTTP) or JetStream stores them (NATS; throughput is then measured
/// until the server has consumed everything).
///
/// Latency: meanwhile, every --probe-ms a probe posts (or publishes) one event for a fresh
/// user and polls GET /v1/users/{probe}/profile until the event is there: the time from send
/// to visible, under load; over HTTP also the time to the answer, which comes once durable.
/// Over NATS a saturating load queues the probes behind the backlog, so probes run only with
/// --rate. With --visible-on B (a fleet), probes are posted to --addr and polled on replica B.
///
/// Server side: the ingest of --addr during the run, from its /metrics (mean time and times
/// over 100 ms of each phase: per staged group lookup = duplicate checks and online =
/// re-clustering, per store write write = journal + fsync), which tells a slow tail's phase.
///
/// Example:
///   pinnersage-bench ingest --addr 127.0.0.1:8080 --items 200000 --duration 20
///   pinnersage-bench ingest --addr 127.0.0.1:8080 --items 200000 --nats nats://127.0.0.1:4222
///   pinnersage-bench ingest --addr 127.0.0.1:8081 --visible-on 127.0.0.1:8082 --items 200000 --rate 1000
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchIngestArgs {
    /// Server address (probes and, without --nats, the load).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Publish the load to this NATS server instead of posting it.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// NATS subject the server consumes.
    #[arg(long, default_value = "pinnersage.events")]
    subject: String,
    /// Distinct users of the load.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Items of the catalog to draw from ({item-prefix}0 ..).
    #[arg(long)]
    items: u64,
    /// Item id prefix.
    #[arg(long, default_value = "i")]
    item_prefix: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Events per request or message.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Events per second in total (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Milliseconds between latency probes.
    #[arg(long, default_value_t = 50)]
    probe_ms: u64,
    /// Poll the probes' profiles on this server instead of --addr: another replica of a fleet
    /// (event posted to one replica -> visible on another).
    #[arg(long, value_name = "ADDR")]
    visible_on: Option<SocketAddr>,
}

impl BenchIngestArgs {
    /// Time between two sends of one client, if paced.
    fn interval(&self) -> Option<Duration> {
        interval(self.connections, self.batch, self.rate)
    }
}

/// Time between two sends of one of `clients` clients sending `per_send` units each, for
/// `rate` units a second in total (`None`: unpaced).
fn interval(clients: usize, per_send: usize, rate: f64) -> Option<Duration> {
    (rate > 0.0).then(|| Duration::from_secs_f64((clients * per_send) as f64 / rate))
}

/// Sleeps until `next`, then moves it one interval on (no-op when unpaced).
pub(crate) fn pace(next: &mut Instant, interval: Option<Duration>) {
    if let Some(i) = interval {
        let now = Instant::now();
        if *next > now {
            std::thread::sleep(*next - now);
        }
        *next += i;
    }
}

/// A request body of `n` random events; `seq` makes the event ids unique.
fn body(args: &BenchIngestArgs, rng: &mut SplitMix64, seq: &mut u64, n: usize) -> String {
    let ts = unix_now();
    let mut out = String::with_capacity(n * 80 + 16);
    out.push_str(r#"{"events":["#);
    for k in 0..n {
        if k > 0 {
            out.push(',');
        }
        let user = rng.next_u64() % args.users;
        let item = rng.next_u64() % args.items;
        *seq += 1;
        out.push_str(&format!(
            r#"{{"user":"u{user}","item":"{}{item}","ts":{ts},"id":"b{}-{seq}"}}"#,
            args.item_prefix,
            std::process::id()
        ));
    }
    out.push_str("]}");
    out
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Runs `pinnersage-bench ingest`.
pub fn run(args: &BenchIngestArgs) -> Result<()> {
    if args.items == 0 || args.users == 0 || args.connections == 0 || args.batch == 0 {
        return Err(InputError(
            "--items, --users, --connections and --batch must be positive".into(),
        )
        .into());
    }
    let (status, _) = connect(args.addr)?.get("/healthz")?;
    if status != 200 {
        bail!("{} answered /healthz with HTTP {status}", args.addr);
    }
    let phases_before = CommitPhases::read(&metrics(args.addr)?);
    let stop = Arc::new(AtomicBool::new(false));
    let probe_stop = stop.clone();
    let probing = args.nats.is_none() || args.rate > 0.0;
    let probes = std::thread::scope(|scope| -> Result<Probes> {
        let prober = scope.spawn(move || {
            if probing {
                probe(args, &probe_stop)
            } else {
                Ok(Probes::default())
            }
        });
        let load = match &args.nats {
            None => http_load(args),
            Some(url) => nats_load(args, url),
        };
        stop.store(true, Ordering::Relaxed);
        let probes = prober.join().expect("probe thread panicked")?;
        let (events, seconds) = load?;
        println!(
            "{} events durable in {seconds:.1} s: {:.0} events/s ({} clients x {} events per {})",
            events,
            events as f64 / seconds,
            args.connections,
            args.batch,
            if args.nats.is_some() {
                "message, over NATS JetStream"
            } else {
                "request, over HTTP"
            }
        );
        Ok(probes)
    })?;
    if let Some(line) = CommitPhases::read(&metrics(args.addr)?).since(&phases_before) {
        println!("{line}");
    }
    if probes.visible.is_empty() {
        println!("no latency probes (over NATS they need --rate)");
        return Ok(());
    }
    let on = args
        .visible_on
        .map(|b| format!(" on {b} (posted to {})", args.addr))
        .unwrap_or_default();
    print_latencies(
        &format!("event -> visible in the profile{on}"),
        probes.visible,
    );
    if !probes.acknowledged.is_empty() {
        print_latencies(
            "event -> acknowledged (HTTP 202: durable)",
            probes.acknowledged,
        );
    }
    Ok(())
}

/// Prints `what`'s percentiles in milliseconds.
pub(crate) fn print_latencies(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{what}, ms ({} probes under load): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        percentile(&ms, 1.0)
    );
}

/// The probes' latencies, in milliseconds.
#[derive(Debug, Default)]
struct Probes {
    /// From send to visible in the profile.
    visible: Vec<f64>,
    /// From send to the HTTP answer (durable), read once visible (empty over NATS).
    acknowledged: Vec<f64>,
}

/// HTTP load: returns (events acknowledged, seconds).
fn http_load(args: &BenchIngestArgs) -> Result<(u64, f64)> {
    let load = PostLoad {
        addr: args.addr,
        path: "/v1/events",
        clients: args.connections,
        per_request: args.batch,
        rate: args.rate,
        duration: args.duration,
    };
    load.run(|c| {
        let mut rng = SplitMix64::new(0xB0D1 + c as u64);
        let mut seq = (c as u64) << 40;
        move || body(args, &mut rng, &mut seq, args.batch)
    })
}

/// Clients posting JSON bodies to one route, each on its own connection, paced to `rate`
/// units (events, items) a second in total, or as fast as the server answers (`rate` 0).
pub(crate) struct PostLoad<'a> {
    /// Server address.
    pub addr: SocketAddr,
    /// The route posted to; every answer must be 202.
    pub path: &'a str,
    /// Concurrent clients.
    pub clients: usize,
    /// Units a request carries.
    pub per_request: usize,
    /// Units per second in total (0: unpaced).
    pub rate: f64,
    /// Seconds of load.
    pub duration: f64,
}

impl PostLoad<'_> {
    /// Runs the load, client `c` sending the bodies of `bodies(c)`; returns (units
    /// acknowledged, seconds).
    pub fn run<B: FnMut() -> String>(
        &self,
        bodies: impl Fn(usize) -> B + Sync,
    ) -> Result<(u64, f64)> {
        let acked = AtomicU64::new(0);
        let start = Instant::now();
        let duration = Duration::from_secs_f64(self.duration);
        let interval = interval(self.clients, self.per_request, self.rate);
        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = (0..self.clients)
                .map(|c| {
                    let (acked, bodies) = (&acked, &bodies);
                    scope.spawn(move || -> Result<()> {
                        let mut conn = connect(self.addr)?;
                        let mut next_body = bodies(c);
                        // Clients staggered evenly over one interval.
                        let mut next = start
                            + interval
                                .map_or(Duration::ZERO, |i| i * c as u32 / self.clients as u32);
                        while start.elapsed() < duration {
                            pace(&mut next, interval);
                            let (status, reply) =
                                conn.post_json(self.path, next_body().as_bytes())?;
                            if status != 202 {
                                bail!("HTTP {status}: {}", String::from_utf8_lossy(&reply));
                            }
                            acked.fetch_add(self.per_request as u64, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                })
                .collect();
            let mut failed = None;
            for h in handles {
                if let Err(e) = h.join().expect("load thread panicked") {
                    failed.get_or_insert(e);
                }
            }
            failed.map_or(Ok(()), Err)
        })?;
        Ok((acked.load(Ordering::Relaxed), start.elapsed().as_secs_f64()))
    }
}

fn counter(addr: SocketAddr, name: &str) -> Result<f64> {
    Ok(sample(&metrics(addr)?, name))
}

/// The server's /metrics page.
fn metrics(addr: SocketAddr) -> Result<String> {
    let (_, text) = connect(addr)?.get("/metrics")?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// The value of the sample `name` (`metric{label="value",...}`, labels in any order) in a
/// /metrics page; 0 if absent.
fn sample(text: &str, name: &str) -> f64 {
    let (wanted, wanted_labels) = split_sample(name);
    text.lines()
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = split_sample(series);
            (metric == wanted && labels == wanted_labels)
                .then(|| value.parse().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

/// A series' metric name and its sorted `label="value"` pairs.
fn split_sample(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((metric, labels)) => {
            let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
            labels.sort_unstable();
            (metric, labels)
        }
        None => (series, Vec::new()),
    }
}

/// The phases of the server's ingest, as `/metrics` splits them: per staged group its duplicate
/// lookups and online update, per store write (of one or more groups) the write.
const PHASES: [&str; 3] = ["lookup", "write", "online"];

/// One phase's share of the server's `pinnersage_event_commit_seconds` histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Phase {
    /// Times the phase ran.
    count: f64,
    seconds: f64,
    /// Times over 100 ms.
    slow: f64,
}

/// The histogram's phases, in [`PHASES`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct CommitPhases([Phase; 3]);

impl CommitPhases {
    fn read(text: &str) -> Self {
        let h = "pinnersage_event_commit_seconds";
        Self(PHASES.map(|p| {
            let count = sample(text, &format!("{h}_count{{phase=\"{p}\"}}"));
            let within = sample(text, &format!("{h}_bucket{{phase=\"{p}\",le=\"0.1\"}}"));
            Phase {
                count,
                seconds: sample(text, &format!("{h}_sum{{phase=\"{p}\"}}")),
                slow: count - within,
            }
        }))
    }

    /// What happened between `before` and `self`, as one line; `None` without commits.
    fn since(&self, before: &Self) -> Option<String> {
        let delta = std::array::from_fn::<Phase, 3, _>(|i| {
            let (a, b) = (self.0[i], before.0[i]);
            Phase {
                count: a.count - b.count,
                seconds: a.seconds - b.seconds,
                slow: a.slow - b.slow,
            }
        });
        let (groups, writes) = (delta[0].count, delta[1].count);
        if groups <= 0.0 && writes <= 0.0 {
            return None;
        }
        let join = |f: fn(&Phase) -> String| delta.iter().map(f).collect::<Vec<_>>().join(" / ");
        Some(format!(
            "server: {groups:.0} groups staged, {writes:.0} store writes; {}: mean ms {}, \
             over 100 ms {}",
            PHASES.join(" / "),
            join(|d| format!("{:.2}", 1e3 * d.seconds / d.count.max(1.0))),
            join(|d| format!("{:.0}", d.slow)),
        ))
    }
}

/// NATS load: publish for the duration, then wait until the server has acknowledged all of it.
/// Returns (events, seconds from the first publish to the last acknowledgement).
fn nats_load(args: &BenchIngestArgs, url: &str) -> Result<(u64, f64)> {
    const ACKED: &str = "pinnersage_nats_acked_total";
    let before = counter(args.addr, ACKED)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let start = Instant::now();
    let duration = Duration::from_secs_f64(args.duration);
    let messages = runtime.block_on(async {
        let client = async_nats::connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let js = async_nats::jetstream::new(client);
        let tasks: Vec<_> = (0..args.connections)
            .map(|c| {
                let js = js.clone();
                let subject = args.subject.clone();
                let mut rng = SplitMix64::new(0xB0D1 + c as u64);
                let mut seq = (c as u64) << 40;
                let bodies =
                    move |rng: &mut SplitMix64, seq: &mut u64| body(args, rng, seq, args.batch);
                async move {
                    let mut sent = 0u64;
                    let interval = args.interval();
                    let mut next = start
                        + interval
                            .map_or(Duration::ZERO, |i| i * c as u32 / args.connections as u32);
                    while start.elapsed() < duration {
                        if let Some(i) = interval {
                            tokio::time::sleep_until(next.into()).await;
                            next += i;
                        }
                        let b = bodies(&mut rng, &mut seq);
                        js.publish(subject.clone(), b.into()).await?.await?;
                        sent += 1;
                    }
                    anyhow::Ok(sent)
                }
            })
            .collect();
        let mut total = 0;
        for r in futures_util::future::join_all(tasks).await {
            total += r?;
        }
        anyhow::Ok(total)
    })?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let acked = counter(args.addr, ACKED)? - before;
        if acked >= messages as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the server acknowledged {acked} of {messages} messages within 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((messages * args.batch as u64, start.elapsed().as_secs_f64()))
}

/// Probes until `stop`: one event for a fresh user, then poll its profile (over HTTP without
/// waiting for the answer, which is read once the event is visible).
fn probe(args: &BenchIngestArgs, stop: &AtomicBool) -> Result<Probes> {
    let mut conn = connect(args.addr)?;
    let mut poll = connect(args.visible_on.unwrap_or(args.addr))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let js = match &args.nats {
        None => None,
        Some(url) => Some(runtime.block_on(async {
            let client = async_nats::connect(url.as_str()).await?;
            anyhow::Ok(async_nats::jetstream::new(client))
        })?),
    };
    let mut probes = Probes::default();
    let mut rng = SplitMix64::new(0x9B0B);
    let run = std::process::id();
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let user = format!("probe-{run}-{k}");
        let item = rng.next_u64() % args.items;
        let event = format!(
            r#"{{"events":[{{"user":"{user}","item":"{}{item}","ts":{}}}]}}"#,
            args.item_prefix,
            unix_now()
        );
        let sent = Instant::now();
        match &js {
            None => conn.send_json("/v1/events", event.as_bytes())?,
            Some(js) => runtime.block_on(async {
                js.publish(args.subject.clone(), event.into())
                    .await?
                    .await?;
                anyhow::Ok(())
            })?,
        }
        let path = format!("/v1/users/{user}/profile");
        loop {
            let (status, _) = poll.get(&path)?;
            if status == 200 {
                break;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                let answer = match &js {
                    None => format!(" (HTTP {})", conn.response()?.0),
                    Some(_) => String::new(),
                };
                bail!("probe event for {user} not visible after 30 s{answer}");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        probes.visible.push(sent.elapsed().as_secs_f64() * 1e3);
        if js.is_none() {
            let (status, reply) = conn.response()?;
            if status != 202 {
                bail!("probe: HTTP {status}: {}", String::from_utf8_lossy(&reply));
            }
            probes.acknowledged.push(sent.elapsed().as_secs_f64() * 1e3);
        }
        std::thread::sleep(Duration::from_millis(args.probe_ms));
    }
    Ok(probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /metrics page of `groups` staged groups (1 ms lookups and online updates) written in
    /// `writes` store writes taking `write_sum` seconds, `write_within` of them within 100 ms.
    fn page(groups: u64, writes: u64, write_sum: f64, write_within: u64) -> String {
        let h = "pinnersage_event_commit_seconds";
        let mut text = String::from("# TYPE pinnersage_event_commit_seconds histogram\n");
        for p in PHASES {
            let (commits, sum, within) = if p == "write" {
                (writes, write_sum, write_within)
            } else {
                (groups, 0.001 * groups as f64, groups)
            };
            text.push_str(&format!("{h}_bucket{{le=\"0.05\",phase=\"{p}\"}} 0\n"));
            text.push_str(&format!(
                "{h}_bucket{{le=\"0.1\",phase=\"{p}\"}} {within}\n"
            ));
            text.push_str(&format!("{h}_sum{{phase=\"{p}\"}} {sum}\n"));
            text.push_str(&format!("{h}_count{{phase=\"{p}\"}} {commits}\n"));
        }
        text
    }

    #[test]
    fn commit_phases_report_the_runs_share_of_the_histograms() {
        let before = CommitPhases::read(&page(10, 8, 0.5, 7));
        let after = CommitPhases::read(&page(110, 68, 1.7, 64));
        assert_eq!(
            after.since(&before).unwrap(),
            "server: 100 groups staged, 60 store writes; lookup / write / online: mean ms \
             1.00 / 20.00 / 1.00, over 100 ms 0 / 3 / 0"
        );
        assert_eq!(before.since(&before), None);
        assert_eq!(
            CommitPhases::read("no metrics here"),
            CommitPhases::default()
        );
    }
}
