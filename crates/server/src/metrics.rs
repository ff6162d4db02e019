//! Request metrics in the Prometheus text format, kept in atomics (no locks on the hot path).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pinnersage_pipeline::online::histogram::{BOUNDS, Histogram};

/// Routes measured, by label.
pub const ROUTES: [&str; 14] = [
    "recommendations",
    "profile",
    "map",
    "users",
    "similar",
    "events",
    "batch",
    "healthz",
    "readyz",
    "metrics",
    "openapi",
    "page",
    "other",
    "unknown",
];
/// Status codes counted individually (every status this server sends); anything else is
/// counted as `other`.
const STATUSES: [u16; 18] = [
    200, 202, 400, 401, 403, 404, 405, 408, 409, 413, 414, 415, 421, 422, 431, 500, 503, 504,
];

#[derive(Default)]
struct Route {
    statuses: [AtomicU64; STATUSES.len() + 1],
    latency: Histogram,
}

/// Counters and latency histograms per route.
#[derive(Default)]
pub struct Metrics {
    routes: [Route; ROUTES.len()],
    rejected_events: AtomicU64,
}

impl Metrics {
    /// Counts events refused by validation (the stored ones are counted by the ingestor).
    pub fn record_rejected_events(&self, n: usize) {
        self.rejected_events.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Events refused by validation so far.
    pub fn rejected_events(&self) -> u64 {
        self.rejected_events.load(Ordering::Relaxed)
    }

    /// Records one request to `route` (a label of [`ROUTES`]; `unknown` stands for requests
    /// that matched no route, and other labels count as `other`).
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let r = ROUTES
            .iter()
            .position(|&x| x == route)
            .unwrap_or(ROUTES.len() - 2);
        let route = &self.routes[r];
        let s = STATUSES
            .iter()
            .position(|&x| x == status)
            .unwrap_or(STATUSES.len());
        route.statuses[s].fetch_add(1, Ordering::Relaxed);
        route.latency.record(elapsed);
    }

    /// Appends the request metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP pinnersage_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE pinnersage_http_requests_total counter\n");
        for (name, route) in ROUTES.iter().zip(&self.routes) {
            for (i, counter) in route.statuses.iter().enumerate() {
                let n = counter.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(i)
                    .map_or("other".to_string(), |s| s.to_string());
                let _ = writeln!(
                    out,
                    "pinnersage_http_requests_total{{route=\"{name}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP pinnersage_http_request_duration_seconds Time to answer, by route.\n");
        out.push_str("# TYPE pinnersage_http_request_duration_seconds histogram\n");
        for (name, route) in ROUTES.iter().zip(&self.routes) {
            write_histogram(
                out,
                "pinnersage_http_request_duration_seconds",
                &format!("route=\"{name}\""),
                &route.latency,
            );
        }
    }
}

/// Appends the buckets, sum and count of `histogram` as the series `name{labels}` (the HELP
/// and TYPE lines are the caller's); nothing while it is empty.
pub fn write_histogram(out: &mut String, name: &str, labels: &str, histogram: &Histogram) {
    let (cumulative, count, sum) = histogram.snapshot();
    if count == 0 {
        return;
    }
    for (le, c) in BOUNDS.iter().zip(cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// Appends one gauge or counter with its help text.
pub fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
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
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("pinnersage_http_requests_total{route=\"similar\",status=\"200\"} 1"));
        assert!(out.contains("pinnersage_http_requests_total{route=\"similar\",status=\"404\"} 1"));
        assert!(out.contains("pinnersage_http_requests_total{route=\"other\",status=\"other\"} 1"));
        assert!(out.contains("pinnersage_http_requests_total{route=\"map\",status=\"421\"} 1"));
        assert!(out.contains("pinnersage_http_requests_total{route=\"readyz\",status=\"401\"} 1"));
        assert!(out.contains("_bucket{route=\"similar\",le=\"0.0005\"} 1"));
        assert!(out.contains("_bucket{route=\"similar\",le=\"0.005\"} 2"));
        assert!(out.contains("_bucket{route=\"other\",le=\"2.5\"} 0"));
        assert!(out.contains("_bucket{route=\"other\",le=\"+Inf\"} 1"));
        assert!(out.contains("_count{route=\"similar\"} 2"));
    }
}
