//! `pinnersage serve`: a tokio runtime around [`pinnersage_server::Server`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use pinnersage_core::blend::Blend;
use pinnersage_core::sample::Selection;
use pinnersage_pipeline::online::DEFAULT_ONLINE_ACTIONS;
use pinnersage_server::auth::{AuthConfig, Tokens};
use pinnersage_server::experiments::Experiments;
use pinnersage_server::fleet::{FleetConfig, PartitionRange};
use pinnersage_server::impressions::Durability;
use pinnersage_server::nats::NatsConfig;
use pinnersage_server::{Front, Resample, Retrieval, ServeConfig, Server};

use crate::args::{DataDirArg, InputError, input};

/// Serve recommendations over HTTP from a data directory.
///
/// Needs a catalog (`import items`), an index (`index build`) and, for personalised results,
/// profiles (`batch`; until then every user gets the fallback). The server owns the data
/// directory's event store while it runs: events posted to it are stored durably (group
/// commit) and clustered online at once, merged with the batch profile. `pinnersage batch`
/// run against the same data directory hands the batch to the server, which publishes the new
/// generation, switches to it and drops the online actions it covers.
///
/// Endpoints (JSON; the full spec is at /openapi.json):
///   GET  /v1/users/{user}/recommendations?k=50&medoids=3&exclude_seen=true
///   GET  /v1/users/{user}/profile
///   GET  /v1/items/{item}/similar?k=20
///   POST /v1/events         {"events":[{"user":"u1","item":"i9","ts":1700000000,"action":"click"}]}
///   POST /v1/admin/batch    {"now":1700000000}  (all fields optional)
/// With --nats, the same event JSON is also consumed from a NATS JetStream subject.
///   GET  /healthz (alive)   /readyz (caught up, ready for traffic)   /metrics   /openapi.json
///
/// A fleet (docs/fleet.md): N replicas, each with its own data directory (a copy of one
/// catalog and index), all on one JetStream stream (--fleet), all importing the profile
/// generations shipped to one shared directory (--profiles-from, `pinnersage ship`).
///
/// Security (docs/security.md): on a loopback address every route is open, as for the
/// quickstart. Any other address needs API tokens, given by a file (--tokens-file) or the
/// PINNERSAGE_TOKENS environment variable, never on the command line: one `TOKEN SCOPES` entry
/// per line (or separated by `;`), scopes read, write (POST /v1/events), admin
/// (POST /v1/admin/*). Requests send `Authorization: Bearer TOKEN`. Requests must name an allowed
/// Host (loopback names, plus --allowed-host), and POST routes take only application/json.
///
/// Settings may come from a TOML file (--config FILE, the [serve] table; see
/// `pinnersage config example`) and PINNERSAGE_<FLAG> variables; flags win over variables,
/// variables over the file.
///
/// Examples:
///   pinnersage serve --data-dir data --addr 127.0.0.1:8080
///   curl 'http://127.0.0.1:8080/v1/users/42/recommendations?k=20'
///   pinnersage serve --data-dir data --nats nats://127.0.0.1:4222 --subject events.clicks
///   pinnersage serve --data-dir replica-a --addr 127.0.0.1:8081 --fleet --stream-replicas 3 \
///     --nats nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224 \
///     --profiles-from /mnt/shared/profiles
///   PINNERSAGE_TOKENS="$(cat /run/secrets/pinnersage-tokens)" \
///     pinnersage serve --data-dir data --addr 0.0.0.0:8080 --allowed-host reco.internal
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    /// Address to listen on. Loopback by default; a non-loopback address (0.0.0.0:PORT exposes
    /// it) refuses to start without API tokens (see --tokens-file).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// File of API tokens: `TOKEN SCOPE[,SCOPE]` per line, scopes read, write, admin. The
    /// PINNERSAGE_TOKENS environment variable may hold the same entries instead.
    #[arg(long, value_name = "FILE", env = "PINNERSAGE_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Reads (profiles, recommendations, similar items, users) need a `read` token too, on any
    /// address (off loopback they do unless --open-reads).
    #[arg(long, conflicts_with = "open_reads")]
    require_read_token: bool,
    /// On a non-loopback address, serve reads without a token (profiles are personal data: only
    /// behind a gateway that authenticates its clients).
    #[arg(long)]
    open_reads: bool,
    /// A Host name clients use to reach the server, besides the loopback names (repeat it; `*`
    /// allows any, which gives up the DNS-rebinding check).
    #[arg(
        long = "allowed-host",
        value_name = "NAME",
        env = "PINNERSAGE_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// Users whose online state is kept in memory at most (about 1-2 KB each); the least
    /// recently active beyond it are evicted and rebuilt from the event store when needed.
    #[arg(long, default_value_t = pinnersage_pipeline::online::DEFAULT_MAX_USERS)]
    online_users: usize,
    /// Concurrent requests at most; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = pinnersage_server::http::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Seconds a request may take before it is answered 503 (admin batches are exempt); a
    /// request body that has not arrived by then is answered 408.
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// Seconds a connection may take to send a request head, or stay idle between requests,
    /// before it is closed (half-sent requests cannot hold connections open).
    #[arg(long, default_value_t = 30.0)]
    header_timeout: f64,
    /// Event submissions waiting for the durable writer at most; more are answered 503 with
    /// Retry-After (NATS messages are redelivered).
    #[arg(long, default_value_t = pinnersage_pipeline::online::ingest::DEFAULT_QUEUE)]
    ingest_queue: usize,
    /// Fold the item changes made while serving into a new catalog and index generation (built
    /// beside the served one, then swapped in; the journal shrinks to what it lacks) once they
    /// number this share of the catalog's items; 0 never folds.
    #[arg(long, default_value_t = pinnersage_engine::serving::DEFAULT_FOLD_FRACTION)]
    fold_fraction: f64,
    /// Serve a non-loopback address with no tokens at all: anyone who can reach it can post
    /// events into any profile and run batches. For closed networks only.
    #[arg(long)]
    insecure_no_auth: bool,
    /// Medoid cache budget in MiB (0 disables the cache).
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
    /// Override the index's ef_search (higher: better recall, slower).
    #[arg(long)]
    ef_search: Option<usize>,
    /// The ef_construction of items inserted into the served graph while serving (POST
    /// /v1/items; default: the index build's). Lower inserts faster into a slightly worse graph
    /// (docs/benchmarks.md measures it); the next rebuild uses the build's value again.
    #[arg(long, value_name = "EF", value_parser = clap::value_parser!(u64).range(1..=4096))]
    insert_ef: Option<u64>,
    /// Load a usearch HNSW index into memory instead of memory-mapping it (hnswlib's is always
    /// loaded).
    #[arg(long)]
    load_index: bool,
    /// How medoids are sampled: daily (stable for a user within a UTC day) or per-request.
    #[arg(long, default_value = "daily")]
    resample: Resample,
    /// Interests a recommendation draws from, unless the request says (`medoids=`; 1 to 20).
    #[arg(long, default_value_t = Retrieval::default().medoids)]
    medoids: usize,
    /// How they are chosen, unless the request says (`selection=`): sample (in proportion to
    /// importance, the paper), top (the most important) or all (up to 20).
    #[arg(long, default_value = Retrieval::default().selection.as_str())]
    selection: Selection,
    /// How their neighbour lists become one list, unless the request says (`blend=`):
    /// round-robin (equal turns by rank, the paper), importance (turns in proportion to it) or
    /// score (one ranking by importance-weighted reciprocal-rank fusion: an item on several
    /// interests' lists rises).
    #[arg(long, default_value = Retrieval::default().blend.as_str())]
    blend: Blend,
    /// Share of the results (0 to 1) from the user's global interest, the importance-weighted
    /// mean of all their medoids, unless the request says (`global=`); 0: none, the paper.
    #[arg(long, default_value_t = Retrieval::default().global)]
    global_share: f64,
    /// Online experiments (TOML): arms with traffic shares, each a retrieval configuration
    /// (medoids, selection, blend, global_share) or `external = true`; a user's arm is stable
    /// (a hash of the experiment's salt and the user) and every recommendation answer carries a
    /// `request_id` and the arm. See docs/experiments.md; GET /v1/admin/experiments shows them.
    #[arg(long, value_name = "FILE")]
    experiments: Option<PathBuf>,
    /// Days the experiments' impressions (what each answer to a user in an experiment showed)
    /// are kept in DATA_DIR/impressions; whole days are dropped past it.
    #[arg(long, default_value_t = pinnersage_store::impressions::DEFAULT_RETENTION_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    impression_retention_days: u32,
    /// When an answer's impression counts as recorded: `buffered` (the answer goes out at once;
    /// its impression is written, fsynced, with the next group: a crash loses those of the last
    /// write cycle) or `acknowledged` (the answer waits until its impression is on disk).
    #[arg(long, default_value = "buffered")]
    impression_durability: Durability,
    /// Deployment-wide seed mixed into every medoid sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seconds between checks for a new profile generation.
    #[arg(long, default_value_t = 2.0)]
    reload_seconds: f64,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Latest actions per user clustered online (the paper uses 20).
    #[arg(long, default_value_t = DEFAULT_ONLINE_ACTIONS)]
    online_actions: usize,
    /// Also consume events from this NATS server (JetStream), e.g. nats://127.0.0.1:4222; a
    /// cluster's URLs comma-separated. Messages carry the same JSON as POST /v1/events and are
    /// acknowledged once durable. An unreachable server at startup is an error (exit 2).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Subject the events are published on (fleet mode: the prefix of the partitions'
    /// subjects SUBJECT.0, SUBJECT.1, ...).
    #[arg(long, default_value = "pinnersage.events", requires = "nats")]
    subject: String,
    /// JetStream stream that captures the subject (created if missing).
    #[arg(long, default_value = "PINNERSAGE_EVENTS", requires = "nats")]
    nats_stream: String,
    /// Durable consumer name (created if missing; its position survives restarts). In fleet
    /// mode the prefix of the replica's own consumers (`NAME-REPLICA_ID`).
    #[arg(long, default_value = "pinnersage", requires = "nats")]
    nats_durable: String,
    /// Fleet mode (docs/fleet.md): one of N replicas behind a load balancer. POST /v1/events
    /// publishes to the stream (202 once JetStream acknowledged it; 503 while NATS is down) and
    /// every replica consumes it into its own store with its own durable consumer. Events are
    /// partitioned by user on subjects SUBJECT.<crc32(user) % partitions>.
    #[arg(long, requires = "nats")]
    fleet: bool,
    /// Partitions of the event subject (the same on every replica and producer).
    #[arg(long, default_value_t = 8, requires = "fleet")]
    partitions: u32,
    /// The partitions this replica consumes, e.g. 0-3 or 0,1,4,5 (default: all). A user of another
    /// partition is answered 421 misdirected (with the partition): route users to the replicas
    /// that hold them (docs/fleet.md has the rule and an HAProxy config).
    #[arg(long, value_name = "LIST", value_delimiter = ',', requires = "fleet")]
    consume_partitions: Vec<PartitionRange>,
    /// The fleet's replicas, HOST:PORT comma-separated (this one may be among them). A replica
    /// holding some partitions then reports an experiment over the whole fleet: its part merged
    /// with the other partitions' parts, fetched from these (the explorer shows the fleet's
    /// report). Without it, its report counts the users of its partitions only.
    #[arg(long, value_name = "LIST", value_delimiter = ',', requires = "fleet")]
    peers: Vec<String>,
    /// Replicas of the JetStream streams when this replica creates them (3 on a 3-node
    /// cluster).
    #[arg(long, default_value_t = 1, requires = "fleet")]
    stream_replicas: usize,
    /// Fleet mode: prefix of the item changes' subjects. POST /v1/items (and the deletes)
    /// publish each change on PREFIX.<hex of the item id> (202 once JetStream holds it) and
    /// every replica applies them all, in stream order (docs/catalog.md).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "pinnersage.items",
        requires = "fleet"
    )]
    items_subject: String,
    /// Fleet mode: JetStream stream of the item changes (created if missing, keeping the last
    /// change of each item).
    #[arg(long, default_value = "PINNERSAGE_ITEMS", requires = "fleet")]
    nats_items_stream: String,
    /// Fleet mode with --experiments: prefix of the impressions' subjects. Each replica
    /// publishes what its answers showed (and posted impressions) on PREFIX.<partition of the
    /// user>, and stores those of the partitions it holds: its report covers its users, whichever
    /// replica answered them (docs/experiments.md).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "pinnersage.impressions",
        requires = "fleet"
    )]
    impressions_subject: String,
    /// Fleet mode with --experiments: JetStream stream of the impressions (created if missing,
    /// keeping messages for --impression-retention-days).
    #[arg(long, default_value = "PINNERSAGE_IMPRESSIONS", requires = "fleet")]
    nats_impressions_stream: String,
    /// Items never to recommend nor return as similar (one id per line), re-read every
    /// --reload-seconds when the file changes: take items down without rebuilding the index
    /// (`index build --exclude` removes them from the index for good).
    #[arg(long, value_name = "FILE")]
    excluded: Option<PathBuf>,
    /// Import the profile generations shipped to this shared directory (`pinnersage ship`),
    /// checked every --reload-seconds; /readyz waits for the newest one at startup.
    #[arg(long, value_name = "DIR")]
    profiles_from: Option<PathBuf>,
}

/// The largest medoid cache budget `--cache-mb` takes (1 TiB).
const MAX_CACHE_MB: u64 = 1 << 20;

/// The longest duration a seconds flag takes (a day).
const MAX_SECONDS: f64 = 86_400.0;

/// `value` seconds of `flag` as a duration, if it lies in `[min, MAX_SECONDS]`.
fn seconds(flag: &str, value: f64, min: f64) -> Result<Duration> {
    if !(min..=MAX_SECONDS).contains(&value) {
        return Err(InputError(format!(
            "{flag} must be between {min} and {MAX_SECONDS} seconds, got {value}"
        ))
        .into());
    }
    Ok(Duration::from_secs_f64(value))
}

impl ServeArgs {
    /// The library's settings from the flags.
    fn config(&self) -> Result<ServeConfig> {
        let reload = seconds("--reload-seconds", self.reload_seconds, 0.01)?;
        let request_timeout = seconds("--request-timeout", self.request_timeout, 0.01)?;
        let header_timeout = seconds("--header-timeout", self.header_timeout, 0.1)?;
        if self.cache_mb > MAX_CACHE_MB {
            return Err(InputError(format!(
                "--cache-mb must be at most {MAX_CACHE_MB} (1 TiB), got {}",
                self.cache_mb
            ))
            .into());
        }
        let auth = AuthConfig {
            tokens: self.tokens()?,
            require_read: self.require_read_token,
            allowed_hosts: self.allowed_hosts.clone(),
            insecure_no_auth: self.insecure_no_auth,
            open_reads: self.open_reads,
        };
        if auth.require_read && auth.tokens.is_empty() {
            return Err(InputError(
                "--require-read-token needs API tokens (--tokens-file or PINNERSAGE_TOKENS)".into(),
            )
            .into());
        }
        let fleet = self.fleet.then(|| FleetConfig {
            partitions: self.partitions,
            consume: (self.consume_partitions.iter())
                .flat_map(PartitionRange::partitions)
                .collect(),
            stream_replicas: self.stream_replicas,
            peers: self.peers.clone(),
        });
        if let Some(fleet) = &fleet {
            fleet.check()?;
        }
        let retrieval = Retrieval {
            medoids: self.medoids,
            selection: self.selection,
            blend: self.blend,
            global: self.global_share,
            alpha: None,
        };
        let experiments = match &self.experiments {
            Some(path) => Experiments::load(path, &retrieval).map_err(input)?,
            None => Experiments::default(),
        };
        Ok(ServeConfig {
            cache_bytes: self.cache_mb << 20,
            ef_search: self.ef_search,
            insert_ef: self.insert_ef.map(|ef| ef as usize),
            load_index: self.load_index,
            resample: self.resample,
            retrieval,
            seed: self.seed,
            reload,
            online_actions: self.online_actions,
            online_users: self.online_users,
            nats: self.nats.as_ref().map(|url| NatsConfig {
                subject: self.subject.clone(),
                stream: self.nats_stream.clone(),
                durable: self.nats_durable.clone(),
                fleet: fleet.clone(),
                items_subject: self.items_subject.clone(),
                items_stream: self.nats_items_stream.clone(),
                impressions_subject: self.impressions_subject.clone(),
                impressions_stream: self.nats_impressions_stream.clone(),
                ..NatsConfig::new(url.clone())
            }),
            profiles_from: self.profiles_from.clone(),
            excluded: self.excluded.clone(),
            auth,
            max_in_flight: self.max_in_flight,
            request_timeout,
            header_timeout,
            ingest_queue: self.ingest_queue,
            fold_fraction: self.fold_fraction,
            experiments,
            impression_retention_days: self.impression_retention_days,
            impression_durability: self.impression_durability,
        })
    }

    /// The API tokens of --tokens-file and PINNERSAGE_TOKENS (both may be given).
    fn tokens(&self) -> Result<Tokens> {
        let mut text = String::new();
        let mut sources = Vec::new();
        if let Some(path) = &self.tokens_file {
            text = std::fs::read_to_string(path)
                .map_err(|e| InputError(format!("{}: {e}", path.display())))?;
            sources.push(path.display().to_string());
        }
        if let Ok(env) = std::env::var("PINNERSAGE_TOKENS") {
            text.push('\n');
            text.push_str(&env);
            sources.push("PINNERSAGE_TOKENS".into());
        }
        let tokens = Tokens::parse(&text, &sources.join(" + ")).map_err(input)?;
        if !sources.is_empty() && tokens.is_empty() {
            return Err(InputError(format!("{}: no tokens", sources.join(" + "))).into());
        }
        Ok(tokens)
    }
}

/// Runs `pinnersage serve` until SIGTERM or Ctrl-C.
pub fn run(args: &ServeArgs) -> Result<()> {
    let data_dir = &args.data.data_dir;
    let config = args.config()?;
    // Refuse an unsafe address before opening anything (`Server::run` checks again).
    config.auth.check_listen(args.addr)?;
    let header_timeout = config.header_timeout;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Listen at once: while the data directory opens (a long event journal takes seconds),
        // /readyz answers 503 with what the server waits for, instead of refusing connections.
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| InputError(format!("cannot listen on {}: {e}", args.addr)))?;
        let front = Front::start(listener, header_timeout, pinnersage_server::shutdown_signal())?;
        let addr = front.local_addr();
        let mut opening = {
            let data_dir = data_dir.clone();
            tokio::task::spawn_blocking(move || Server::open(&data_dir, config))
        };
        let opened = tokio::select! {
            opened = &mut opening => opened,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                eprintln!(
                    "listening on {addr} while the data directory opens (/readyz says when it is ready)"
                );
                opening.await
            }
        };
        let server = match opened.context("opening the data directory")? {
            Ok(server) => server,
            Err(e) => {
                front.close().await;
                return Err(e.into());
            }
        };
        // The engine at start, for these lines only: a new generation replaces it while serving,
        // and holding it would keep its index in memory.
        let engine = server.engine();
        if server.recovered_events() > 0 {
            eprintln!(
                "recovered {} events after the served batch: {} users have online clusters",
                server.recovered_events(),
                engine.online().users()
            );
        }
        if engine.profile_generation().is_none() {
            eprintln!(
                "note: no profiles yet (run `pinnersage batch --data-dir {}`); every user gets the fallback",
                data_dir.display()
            );
        }
        let started = format!(
            "serving {} items ({} index) on http://{addr}  (try: curl http://{addr}/healthz)",
            engine.catalog().live_rows(),
            engine.index().index.kind()
        );
        drop(engine);
        let running = server.start_on(front).await?;
        eprintln!("{started}");
        running.finish().await?;
        eprintln!("shut down");
        Ok(())
    })
}
