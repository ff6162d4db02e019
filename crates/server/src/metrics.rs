//! `/metrics` through a Prometheus registry ([`prometheus_client`]): the request counters and
//! latencies the server records itself, and a collector that reads, at each scrape, what the
//! engine, the ingest, the event store, the NATS consumer and the shipped-profiles watcher
//! already count. Recording takes no lock beyond the registry's read lock of a label set, and
//! latencies go into the lock-free [`Histogram`] the ingest uses too.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use pinnersage_engine::serving::Serving;
use pinnersage_pipeline::online::histogram::{BOUNDS, Histogram};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::fleet::ShippedCounters;
use crate::nats::NatsCounters;
use crate::owned_store::OwnedStore;

/// The content type of [`Metrics::encode`]'s page (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Routes measured, by label; a route not listed counts as `other`.
pub const ROUTES: [&str; 18] = [
    "recommendations",
    "profile",
    "map",
    "users",
    "similar",
    "items",
    "items_delete",
    "events",
    "impressions",
    "experiment_report",
    "batch",
    "healthz",
    "readyz",
    "metrics",
    "openapi",
    "page",
    "other",
    "unknown",
];
/// Status codes labelled individually (every status this server sends); anything else is
/// labelled `other`, so the number of series stays bounded.
const STATUSES: [u16; 18] = [
    200, 202, 400, 401, 403, 404, 405, 408, 409, 413, 414, 415, 421, 422, 431, 500, 503, 504,
];

/// A response status as a label: one of [`STATUSES`], or `other`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Status(Option<u16>);

impl EncodeLabelValue for Status {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        use fmt::Write;
        match self.0 {
            Some(code) => write!(encoder, "{code}"),
            None => encoder.write_str("other"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: Status,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// A latency histogram over [`BOUNDS`] as a registry metric.
#[derive(Debug, Default)]
struct Latency(Histogram);

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encode_histogram(&self.0, &mut encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Writes `histogram`'s buckets (the encoder wants each bucket's own count), sum and count.
fn encode_histogram(histogram: &Histogram, encoder: &mut MetricEncoder) -> fmt::Result {
    let (cumulative, count, sum) = histogram.snapshot();
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = BOUNDS
        .iter()
        .zip(cumulative)
        .map(|(&le, c)| (le, c - std::mem::replace(&mut below, c)))
        .collect();
    buckets.push((f64::INFINITY, count.saturating_sub(below)));
    encoder.encode_histogram::<NoLabelSet>(sum, count.max(below), &buckets, None)
}

/// The server's metrics: a registry with the request metrics and, once [`Metrics::observe`]
/// is called, the counters of the parts it serves.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabel, Latency>,
    rejected_events: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let (requests, durations, rejected_events) = Default::default();
        let mut registry = Registry::default();
        // The registry adds the help text's final period.
        registry.register(
            "pinnersage_http_requests",
            "HTTP requests by route and status",
            Family::clone(&requests),
        );
        registry.register(
            "pinnersage_http_request_duration_seconds",
            "Time to answer, by route",
            Family::clone(&durations),
        );
        registry.register(
            "pinnersage_events_rejected",
            "Events refused by validation",
            Counter::clone(&rejected_events),
        );
        Self {
            registry,
            requests,
            durations,
            rejected_events,
        }
    }
}

impl Metrics {
    /// Adds the counters of the parts `observed` names, read at each scrape.
    pub fn observe(mut self, observed: Observed) -> Self {
        self.registry.register_collector(Box::new(observed));
        self
    }

    /// Counts events refused by validation (the stored ones are counted by the ingestor).
    pub fn record_rejected_events(&self, n: usize) {
        self.rejected_events.inc_by(n as u64);
    }

    /// Records one request to `route` (a label of [`ROUTES`]; `unknown` stands for requests
    /// that matched no route, and other labels count as `other`).
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let route = ROUTES.into_iter().find(|&r| r == route).unwrap_or("other");
        let status = Status(STATUSES.contains(&status).then_some(status));
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.durations
            .get_or_create(&RouteLabel { route })
            .0
            .record(elapsed);
    }

    /// The metrics page, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and every metric here encodes infallibly.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The parts whose own counters `/metrics` shows, read at each scrape.
pub struct Observed {
    /// The served engine: index, catalog, medoid cache, filters, online users (the cache's
    /// counters start again when a new catalog or index generation is swapped in).
    pub serving: Arc<Serving>,
    /// The owned event store: stored events, store writes and their phases, its engine.
    pub store: Arc<OwnedStore>,
    /// The impression writer's counters, when experiments are defined.
    pub recorder: Option<Arc<crate::impressions::RecorderCounters>>,
    /// The NATS consumer's counters, when one runs.
    pub nats: Option<Arc<NatsCounters>>,
    /// The shipped-profiles watcher's counters, when one runs.
    pub shipped: Option<Arc<ShippedCounters>>,
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed").finish_non_exhaustive()
    }
}

/// One scrape's descriptor encoder with a line per value.
struct Page<'a>(DescriptorEncoder<'a>);

impl Page<'_> {
    fn gauge(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let metric = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value).encode(metric)
    }

    /// A counter: `name` without the `_total` the encoder appends.
    fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let metric = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(metric)
    }
}

impl Collector for Observed {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut page = Page(encoder);
        let e = &self.serving.engine();
        page.counter(
            "pinnersage_generation_swaps",
            "Catalog or index generations swapped in while serving.",
            self.serving.swaps(),
        )?;
        page.gauge(
            "pinnersage_engines_in_memory",
            "Engines (catalog, index, cache) in memory: 1, or 2 while a swap finishes.",
            pinnersage_engine::engine::engines_in_memory() as u64,
        )?;
        let cache = e.cache();
        let (entries, bytes) = cache.usage();
        page.counter(
            "pinnersage_medoid_cache_hits",
            "Medoid neighbour lookups answered from the cache.",
            cache.hits(),
        )?;
        page.counter(
            "pinnersage_medoid_cache_refreshed",
            "Medoid neighbour lookups whose cached list was brought up to items added since.",
            cache.refreshed(),
        )?;
        page.counter(
            "pinnersage_medoid_cache_misses",
            "Medoid neighbour lookups that ran an ANN search.",
            cache.misses(),
        )?;
        page.gauge(
            "pinnersage_excluded_items",
            "Items on the operator's exclusion list (never returned).",
            e.excluded().len() as u64,
        )?;
        let filtered = e.filtered_counters();
        page.counter(
            "pinnersage_filtered_searches",
            "ANN searches with a query-time filter (they bypass the medoid cache).",
            filtered.searches.load(Relaxed),
        )?;
        page.counter(
            "pinnersage_filtered_exact_fallbacks",
            "Filtered searches the graph could not fill, answered by the exact scan.",
            filtered.exact_fallbacks.load(Relaxed),
        )?;
        page.gauge(
            "pinnersage_medoid_cache_entries",
            "Neighbour lists held in the medoid cache.",
            entries,
        )?;
        page.gauge(
            "pinnersage_medoid_cache_bytes",
            "Approximate bytes held in the medoid cache.",
            bytes,
        )?;
        page.gauge(
            "pinnersage_index_items",
            "Items in the ANN index.",
            e.index().index.len() as u64,
        )?;
        page.gauge(
            "pinnersage_index_version",
            "Generation number of the index being served.",
            e.index().version,
        )?;
        let catalog = e.catalog();
        page.gauge(
            "pinnersage_catalog_items",
            "Items in the catalog (deleted ones left out).",
            catalog.live_rows() as u64,
        )?;
        page.gauge(
            "pinnersage_catalog_rows_added",
            "Catalog rows added while serving (upserts), since the catalog generation.",
            catalog.added_rows() as u64,
        )?;
        page.gauge(
            "pinnersage_catalog_rows_deleted",
            "Catalog rows deleted or replaced while serving, since the catalog generation.",
            (catalog.rows() - catalog.live_rows()) as u64,
        )?;
        page.gauge(
            "pinnersage_index_backlog",
            "Catalog rows the index graph does not hold yet (searches scan them).",
            e.index_backlog() as u64,
        )?;
        page.gauge(
            "pinnersage_catalog_journal_seq",
            "Sequence number of the last item change applied.",
            catalog.applied_seq(),
        )?;

        let c = self.store.counters();
        for (name, help, value) in [
            (
                "pinnersage_events_stored",
                "Events stored (durable).",
                &c.stored,
            ),
            (
                "pinnersage_events_duplicate",
                "Events already stored (retries).",
                &c.duplicates,
            ),
            (
                "pinnersage_event_commits",
                "Store writes (one fsync each, of one or more staged groups).",
                &c.commits,
            ),
            (
                "pinnersage_event_commit_failures",
                "Staged groups that were not stored (their write or their check failed).",
                &c.failures,
            ),
        ] {
            page.counter(name, help, value.load(Relaxed))?;
        }
        let mut phases = page.0.encode_descriptor(
            "pinnersage_event_commit_seconds",
            "Time of the ingest phases: per staged group lookup (duplicate checks) and online \
             (re-clustering its users); per store write of one or more groups write (journal \
             write + fsync + storage write stalls).",
            None,
            MetricType::Histogram,
        )?;
        for (phase, histogram) in [
            ("lookup", &c.lookup_time),
            ("write", &c.write_time),
            ("online", &c.online_time),
        ] {
            let labels = [("phase", phase)];
            encode_histogram(histogram, &mut phases.encode_family(&labels)?)?;
        }

        if let Some(r) = &self.recorder {
            for (name, help, value) in [
                (
                    "pinnersage_impressions_recorded",
                    "Experiment impressions written to the impression store.",
                    &r.recorded,
                ),
                (
                    "pinnersage_impressions_dropped",
                    "Served impressions dropped: the impression writer's queue was full.",
                    &r.dropped,
                ),
                (
                    "pinnersage_impressions_invalid",
                    "Served impressions the store cannot hold (a user id over its limit).",
                    &r.invalid,
                ),
                (
                    "pinnersage_impression_write_failures",
                    "Impressions whose write failed.",
                    &r.failed,
                ),
                (
                    "pinnersage_impression_writes",
                    "Impression store writes (one fsync each).",
                    &r.writes,
                ),
            ] {
                page.counter(name, help, value.load(Relaxed))?;
            }
            let metric = page.0.encode_descriptor(
                "pinnersage_impression_write_seconds",
                "Time of each impression store write (journal write + fsync).",
                None,
                MetricType::Histogram,
            )?;
            encode_histogram(&r.write_time, &mut { metric })?;
        }

        let store = self.store.engine_stats();
        for (name, help, value) in [
            (
                "pinnersage_event_store_sealed_memtables",
                "Full memtables waiting for a flush (writes stall at 4 in one keyspace).",
                store.sealed_memtables,
            ),
            (
                "pinnersage_event_store_outstanding_flushes",
                "Memtable flushes queued or running.",
                store.outstanding_flushes,
            ),
            (
                "pinnersage_event_store_l0_tables",
                "Tables in level 0, waiting to be compacted (writes slow down at 20 runs).",
                store.l0_tables,
            ),
            (
                "pinnersage_event_store_tables",
                "Tables on disk.",
                store.tables,
            ),
            (
                "pinnersage_event_store_active_compactions",
                "Compactions running.",
                store.active_compactions,
            ),
            (
                "pinnersage_event_store_journals",
                "Journal files (more than one while flushes lag).",
                store.journals,
            ),
            (
                "pinnersage_event_store_write_buffer_bytes",
                "Bytes held in memtables.",
                store.write_buffer_bytes,
            ),
        ] {
            page.gauge(name, help, value)?;
        }
        page.counter(
            "pinnersage_event_store_compactions",
            "Compactions completed since the store was opened.",
            store.compactions_completed,
        )?;

        if let Some(n) = &self.nats {
            for (name, help, value) in [
                (
                    "pinnersage_nats_acked",
                    "NATS messages acknowledged after their events were stored.",
                    &n.acked,
                ),
                (
                    "pinnersage_nats_nacked",
                    "NATS messages to be redelivered (store failure).",
                    &n.nacked,
                ),
                (
                    "pinnersage_nats_terminated",
                    "NATS messages dropped as unprocessable.",
                    &n.terminated,
                ),
                (
                    "pinnersage_nats_item_changes_acked",
                    "Fleet item change messages acknowledged after they were journaled.",
                    &n.item_acked,
                ),
                (
                    "pinnersage_nats_item_changes_nacked",
                    "Fleet item change messages to be redelivered (journal failure).",
                    &n.item_nacked,
                ),
                (
                    "pinnersage_nats_item_changes_terminated",
                    "Fleet item change messages dropped as unprocessable.",
                    &n.item_terminated,
                ),
                (
                    "pinnersage_nats_impressions_acked",
                    "Fleet impression messages acknowledged after they were stored.",
                    &n.impressions_acked,
                ),
                (
                    "pinnersage_nats_impressions_writes",
                    "Fleet impression writes (one fsync each, storing the messages ready together).",
                    &n.impressions_writes,
                ),
                (
                    "pinnersage_nats_impressions_nacked",
                    "Fleet impression messages to be redelivered (store failure).",
                    &n.impressions_nacked,
                ),
                (
                    "pinnersage_nats_impressions_terminated",
                    "Fleet impression messages dropped as unprocessable.",
                    &n.impressions_terminated,
                ),
            ] {
                page.counter(name, help, value.load(Relaxed))?;
            }
        }
        if let Some(n) = &self.shipped {
            page.counter(
                "pinnersage_shipped_generations_imported",
                "Shipped profile generations imported.",
                n.imported.load(Relaxed),
            )?;
            page.counter(
                "pinnersage_shipped_generations_failed",
                "Shipped profile generations refused or failed to import.",
                n.failed.load(Relaxed),
            )?;
        }
        page.gauge(
            "pinnersage_online_users",
            "Users with online actions since the served batch, held in memory.",
            e.online().users() as u64,
        )?;
        page.counter(
            "pinnersage_online_evictions",
            "Users evicted from memory over --online-users (rebuilt from the event store on \
             demand).",
            e.online().evictions(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_statuses_are_labelled() {
        let m = Metrics::default();
        m.record("similar", 200, Duration::from_micros(300));
        m.record("similar", 404, Duration::from_millis(3));
        m.record("nonsense", 418, Duration::from_secs(9));
        m.record("map", 421, Duration::from_millis(1));
        m.record("readyz", 401, Duration::from_millis(1));
        m.record_rejected_events(3);
        let out = m.encode();
        assert!(out.contains("pinnersage_http_requests_total{route=\"similar\",status=\"200\"} 1"));
        assert!(out.contains("pinnersage_http_requests_total{route=\"similar\",status=\"404\"} 1"));
        assert!(out.contains("pinnersage_http_requests_total{route=\"other\",status=\"other\"} 1"));
        assert!(out.contains("pinnersage_http_requests_total{route=\"map\",status=\"421\"} 1"));
        assert!(out.contains("pinnersage_http_requests_total{route=\"readyz\",status=\"401\"} 1"));
        assert!(
            out.contains("_bucket{le=\"0.0005\",route=\"similar\"} 1"),
            "{out}"
        );
        assert!(out.contains("_bucket{le=\"0.005\",route=\"similar\"} 2"));
        assert!(out.contains("_bucket{le=\"2.5\",route=\"other\"} 0"));
        assert!(out.contains("_bucket{le=\"+Inf\",route=\"other\"} 1"));
        assert!(out.contains("_count{route=\"similar\"} 2"));
        assert!(
            out.contains("\npinnersage_events_rejected_total 3\n"),
            "{out}"
        );
        assert!(
            out.contains("# HELP pinnersage_http_requests HTTP requests by route and status.\n"),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
