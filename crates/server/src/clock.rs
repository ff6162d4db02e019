//! The server's one read of the clock: request times, event validation, default batch times and
//! per-request sampling seeds all come from here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The current unix time in seconds.
pub fn unix_now() -> i64 {
    since_epoch().as_secs() as i64
}

/// The current unix time in nanoseconds (a per-request sampling seed).
pub fn unix_nanos() -> i64 {
    since_epoch().as_nanos() as i64
}
