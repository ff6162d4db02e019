//! The medoid cache: ANN results per (medoid, neighbours, index version), shared by every user
//! whose profile holds that medoid (paper: −75% ANN calls).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Neighbours of one medoid: `(row, score)`, best first.
pub type Neighbours = Arc<[(u32, f32)]>;

/// Cache key: medoid row, number of neighbours fetched, index version.
type Key = (u32, u32, u64);

/// A memory-bounded concurrent cache (moka, TinyLFU admission) with hit/miss counters.
pub struct MedoidCache {
    inner: moka::sync::Cache<Key, Neighbours>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl MedoidCache {
    /// A cache holding at most about `max_bytes` of neighbour lists (`0` disables caching).
    pub fn new(max_bytes: u64) -> Self {
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &Key, v: &Neighbours| {
                (v.len() * std::mem::size_of::<(u32, f32)>() + 64).min(u32::MAX as usize) as u32
            })
            .build();
        Self {
            inner,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached list for `(medoid, k, version)`, or the result of `fetch`, which is then cached.
    /// Errors are not cached.
    pub fn get_or_fetch<E>(
        &self,
        medoid: u32,
        k: u32,
        version: u64,
        fetch: impl FnOnce() -> Result<Neighbours, E>,
    ) -> Result<Neighbours, E> {
        let key = (medoid, k, version);
        if let Some(hit) = self.inner.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let value = fetch()?;
        self.inner.insert(key, value.clone());
        Ok(value)
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that ran an ANN search.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Entries and their approximate bytes (after pending maintenance).
    pub fn usage(&self) -> (u64, u64) {
        self.inner.run_pending_tasks();
        (self.inner.entry_count(), self.inner.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lookup_hits_and_versions_separate() {
        let cache = MedoidCache::new(1 << 20);
        let fetch = || Ok::<_, ()>(Neighbours::from(vec![(1, 0.5)]));
        cache.get_or_fetch(7, 10, 1, fetch).unwrap();
        cache.get_or_fetch(7, 10, 1, || Err(())).unwrap();
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        assert!(
            cache.get_or_fetch(7, 10, 2, || Err(())).is_err(),
            "new index version"
        );
        assert!(cache.get_or_fetch(7, 20, 1, || Err(())).is_err(), "other k");
        assert_eq!((cache.hits(), cache.misses()), (1, 3));
    }
}
