//! The medoid cache: ANN results per (medoid, neighbours, index version), shared by every user
//! whose profile holds that medoid (paper: −75% ANN calls).
//!
//! The catalog changes while it is served, so each list remembers how many catalog rows it
//! covers. Rows are only ever appended, so a list is brought up to date from the rows appended
//! since (`refresh` gets the stale entry): compared with the medoid one by one when they are
//! few; when they are many, the ones the graph links to the medoid and its first neighbours
//! (a new item near the medoid is linked there when inserted), until so many were added since
//! the list last considered every row that it is searched again. Either way a new item nearer
//! than the list's last one is in the very next answer. Deleted rows are never removed from
//! lists; every reader skips them (the engine's `hidden`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Neighbours of one medoid: `(row, score)`, best first.
pub type Neighbours = Arc<[(u32, f32)]>;

/// Cache key: medoid row, number of neighbours fetched, index version.
type Key = (u32, u32, u64);

/// A cached list and the catalog rows it covers (rows from there on are not in it).
#[derive(Debug, Clone)]
pub struct Cached {
    /// The neighbours.
    pub list: Neighbours,
    /// The catalog rows `0..rows` the list was brought up to.
    pub rows: u32,
    /// The rows `0..complete` were all considered (searched or compared); the rows from there
    /// to `rows` only through the graph's links, which may miss a few.
    pub complete: u32,
}

/// A memory-bounded concurrent cache (moka, TinyLFU admission) with hit/miss counters.
pub struct MedoidCache {
    inner: moka::sync::Cache<Key, Cached>,
    hits: AtomicU64,
    misses: AtomicU64,
    refreshed: AtomicU64,
}

impl MedoidCache {
    /// A cache holding at most about `max_bytes` of neighbour lists (`0` disables caching).
    pub fn new(max_bytes: u64) -> Self {
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &Key, v: &Cached| {
                (v.list.len() * std::mem::size_of::<(u32, f32)>() + 64).min(u32::MAX as usize)
                    as u32
            })
            .build();
        Self {
            inner,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            refreshed: AtomicU64::new(0),
        }
    }

    /// The list for `(medoid, k, version)` over the catalog's first `rows` rows: the cached one
    /// if it covers them all, else what `refresh` makes of the stale entry (`None` on a miss),
    /// which is then cached (it must cover `rows`). Errors are not cached.
    pub fn get_or_refresh<E>(
        &self,
        (medoid, k, version): Key,
        rows: u32,
        refresh: impl FnOnce(Option<Cached>) -> Result<Cached, E>,
    ) -> Result<Neighbours, E> {
        let key = (medoid, k, version);
        let stale = match self.inner.get(&key) {
            Some(hit) if hit.rows >= rows => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(hit.list);
            }
            Some(stale) => {
                self.refreshed.fetch_add(1, Ordering::Relaxed);
                Some(stale)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        let fresh = refresh(stale)?;
        let list = fresh.list.clone();
        self.inner.insert(key, fresh);
        Ok(list)
    }

    /// The medoid rows and list lengths cached now, each once (whatever the index version).
    pub fn medoids(&self) -> Vec<(u32, u32)> {
        let mut medoids: Vec<(u32, u32)> = self.inner.iter().map(|(k, _)| (k.0, k.1)).collect();
        medoids.sort_unstable();
        medoids.dedup();
        medoids
    }

    /// Caches `list` for `key` without counting a lookup: warming a cache no request uses yet.
    pub fn warm(&self, key: Key, list: Cached) {
        self.inner.insert(key, list);
    }

    /// Lookups whose list was brought up to rows added to the catalog since it was cached.
    pub fn refreshed(&self) -> u64 {
        self.refreshed.load(Ordering::Relaxed)
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that found no list (an ANN search ran).
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

    fn cached(list: Vec<(u32, f32)>, rows: u32) -> Cached {
        Cached {
            list: list.into(),
            rows,
            complete: rows,
        }
    }

    #[test]
    fn second_lookup_hits_and_versions_separate() {
        let cache = MedoidCache::new(1 << 20);
        let fetch = |_| Ok::<_, ()>(cached(vec![(1, 0.5)], 100));
        cache.get_or_refresh((7, 10, 1), 100, fetch).unwrap();
        cache.get_or_refresh((7, 10, 1), 100, |_| Err(())).unwrap();
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        assert!(
            cache.get_or_refresh((7, 10, 2), 100, |_| Err(())).is_err(),
            "new index version"
        );
        assert!(
            cache.get_or_refresh((7, 20, 1), 100, |_| Err(())).is_err(),
            "other k"
        );
        assert_eq!((cache.hits(), cache.misses()), (1, 3));
    }

    #[test]
    fn rows_added_since_refresh_the_stale_list() {
        let cache = MedoidCache::new(1 << 20);
        let first = |_| Ok::<_, ()>(cached(vec![(1, 0.5)], 100));
        cache.get_or_refresh((7, 10, 1), 100, first).unwrap();
        let refreshed = cache
            .get_or_refresh((7, 10, 1), 102, |stale| {
                let stale = stale.expect("the old entry");
                assert_eq!((&stale.list[..], stale.rows), (&[(1, 0.5)][..], 100));
                Ok::<_, ()>(cached(vec![(101, 0.9), (1, 0.5)], 102))
            })
            .unwrap();
        assert_eq!(refreshed.len(), 2);
        let again = cache.get_or_refresh((7, 10, 1), 102, |_| Err(())).unwrap();
        assert_eq!(again, refreshed);
        assert_eq!((cache.hits(), cache.misses(), cache.refreshed()), (1, 1, 1));
    }
}
