//! A latency histogram in atomics: recorded on hot paths without locks, read as Prometheus
//! buckets by the server's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, seconds (the last bucket, `+Inf`, is implied).
pub const BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Counts of durations per bucket of [`BOUNDS`], their number and their sum.
///
/// ```
/// use std::time::Duration;
/// use pinnersage_pipeline::online::histogram::Histogram;
/// let h = Histogram::default();
/// h.record(Duration::from_millis(3));
/// h.record(Duration::from_secs(7));
/// let (cumulative, count, sum) = h.snapshot();
/// assert_eq!(cumulative[5], 1); // le = 0.005
/// assert_eq!(cumulative[13], 1); // le = 2.5: 7 s only in +Inf
/// assert_eq!((count, sum), (2, 7.003));
/// ```
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Counts one duration.
    pub fn record(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(b) = BOUNDS.iter().position(|&le| secs <= le) {
            self.buckets[b].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(elapsed.as_nanos() as u64, Relaxed);
    }

    /// Cumulative counts per bound of [`BOUNDS`] (Prometheus' `le` buckets), the number of
    /// durations and their sum in seconds.
    pub fn snapshot(&self) -> ([u64; BOUNDS.len()], u64, f64) {
        let mut cumulative = [0; BOUNDS.len()];
        let mut total = 0;
        for (c, b) in cumulative.iter_mut().zip(&self.buckets) {
            total += b.load(Relaxed);
            *c = total;
        }
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        (cumulative, self.count.load(Relaxed), sum)
    }
}
