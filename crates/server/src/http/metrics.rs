//! `GET /metrics`: request, ingest, cache, store and fleet counters in the Prometheus text format.

use super::*;

pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    state.metrics.render(&mut out);
    let e = &state.engine;
    let cache = e.cache();
    let (entries, bytes) = cache.usage();
    write_metric(
        &mut out,
        "pinnersage_medoid_cache_hits_total",
        "counter",
        "Medoid neighbour lookups answered from the cache.",
        cache.hits() as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_medoid_cache_misses_total",
        "counter",
        "Medoid neighbour lookups that ran an ANN search.",
        cache.misses() as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_excluded_items",
        "gauge",
        "Items on the operator's exclusion list (never returned).",
        e.excluded().len() as f64,
    );
    let filtered = e.filtered_counters();
    write_metric(
        &mut out,
        "pinnersage_filtered_searches_total",
        "counter",
        "ANN searches with a query-time filter (they bypass the medoid cache).",
        filtered.searches.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_filtered_exact_fallbacks_total",
        "counter",
        "Filtered searches the graph could not fill, answered by the exact scan.",
        filtered
            .exact_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_medoid_cache_entries",
        "gauge",
        "Neighbour lists held in the medoid cache.",
        entries as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_medoid_cache_bytes",
        "gauge",
        "Approximate bytes held in the medoid cache.",
        bytes as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_index_items",
        "gauge",
        "Items in the ANN index.",
        e.index().index.len() as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_index_version",
        "gauge",
        "Generation number of the index being served.",
        e.index().version as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_catalog_items",
        "gauge",
        "Items in the catalog.",
        e.catalog().rows() as f64,
    );
    {
        let ingest = &state.ingest;
        use std::sync::atomic::Ordering::Relaxed;
        let c = ingest.counters();
        let counters = [
            (
                "pinnersage_events_stored_total",
                "Events stored (durable).",
                c.stored.load(Relaxed),
            ),
            (
                "pinnersage_events_duplicate_total",
                "Events already stored (retries).",
                c.duplicates.load(Relaxed),
            ),
            (
                "pinnersage_event_commits_total",
                "Store writes (one fsync each, of one or more staged groups).",
                c.commits.load(Relaxed),
            ),
            (
                "pinnersage_event_commit_failures_total",
                "Staged groups that were not stored (their write or their check failed).",
                c.failures.load(Relaxed),
            ),
            (
                "pinnersage_events_rejected_total",
                "Events refused by validation.",
                state.metrics.rejected_events(),
            ),
        ];
        write_counters(&mut out, &counters);
        out.push_str(
            "# HELP pinnersage_event_commit_seconds Time of the ingest phases: per staged group lookup (duplicate checks) and online (re-clustering its users); per store write of one or more groups write (journal write + fsync + storage write stalls).\n\
             # TYPE pinnersage_event_commit_seconds histogram\n",
        );
        for (phase, histogram) in [
            ("lookup", &c.lookup_time),
            ("write", &c.write_time),
            ("online", &c.online_time),
        ] {
            write_histogram(
                &mut out,
                "pinnersage_event_commit_seconds",
                &format!("phase=\"{phase}\""),
                histogram,
            );
        }
        let engine = ingest.engine_stats();
        for (name, help, value) in [
            (
                "pinnersage_event_store_sealed_memtables",
                "Full memtables waiting for a flush (writes stall at 4 in one keyspace).",
                engine.sealed_memtables,
            ),
            (
                "pinnersage_event_store_outstanding_flushes",
                "Memtable flushes queued or running.",
                engine.outstanding_flushes,
            ),
            (
                "pinnersage_event_store_l0_tables",
                "Tables in level 0, waiting to be compacted (writes slow down at 20 runs).",
                engine.l0_tables,
            ),
            (
                "pinnersage_event_store_tables",
                "Tables on disk.",
                engine.tables,
            ),
            (
                "pinnersage_event_store_active_compactions",
                "Compactions running.",
                engine.active_compactions,
            ),
            (
                "pinnersage_event_store_journals",
                "Journal files (more than one while flushes lag).",
                engine.journals,
            ),
            (
                "pinnersage_event_store_write_buffer_bytes",
                "Bytes held in memtables.",
                engine.write_buffer_bytes,
            ),
        ] {
            write_metric(&mut out, name, "gauge", help, value as f64);
        }
        write_counters(
            &mut out,
            &[(
                "pinnersage_event_store_compactions_total",
                "Compactions completed since the store was opened.",
                engine.compactions_completed,
            )],
        );
        if let Some(n) = &state.nats {
            let nats = [
                (
                    "pinnersage_nats_acked_total",
                    "NATS messages acknowledged after their events were stored.",
                    n.acked.load(Relaxed),
                ),
                (
                    "pinnersage_nats_nacked_total",
                    "NATS messages to be redelivered (store failure).",
                    n.nacked.load(Relaxed),
                ),
                (
                    "pinnersage_nats_terminated_total",
                    "NATS messages dropped as unprocessable.",
                    n.terminated.load(Relaxed),
                ),
            ];
            write_counters(&mut out, &nats);
        }
        if let Some(n) = &state.shipped {
            let shipped = [
                (
                    "pinnersage_shipped_generations_imported_total",
                    "Shipped profile generations imported.",
                    n.imported.load(Relaxed),
                ),
                (
                    "pinnersage_shipped_generations_failed_total",
                    "Shipped profile generations refused or failed to import.",
                    n.failed.load(Relaxed),
                ),
            ];
            write_counters(&mut out, &shipped);
        }
        write_metric(
            &mut out,
            "pinnersage_online_users",
            "gauge",
            "Users with online actions since the served batch, held in memory.",
            e.online().users() as f64,
        );
        write_metric(
            &mut out,
            "pinnersage_online_evictions_total",
            "counter",
            "Users evicted from memory over --online-users (rebuilt from the event store on demand).",
            e.online().evictions() as f64,
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// Writes `(name, help, value)` counters.
pub(super) fn write_counters(out: &mut String, counters: &[(&str, &str, u64)]) {
    for &(name, help, value) in counters {
        write_metric(out, name, "counter", help, value as f64);
    }
}
