//! [`Serving`]: the engine a server answers with, replaced whole when the data directory gets
//! a new catalog or index generation, without a restart.
//!
//! Row numbers belong to one opened catalog, so a new generation (`import items`, or `index
//! build` of the same catalog) is served by a new [`Engine`]: [`Serving::follow`] opens the
//! generation and its index off the request path, replays the journal's item changes on top
//! (the graph takes the rows added since its build before anything is swapped), then, holding
//! the journal so that no change slips between, applies the changes journaled meanwhile and
//! swaps. A request holds the engine it started with to the end ([`Serving::engine`]), so its
//! rows and ids always come from one catalog; the profiles, online state and journal pass to
//! the successor ([`Engine::successor`]).
//!
//! [`Serving::fold`] writes the catalog as it is now (its generation and the changes since) as
//! a new generation with its index, and serves it the same way: then the journal is compacted
//! to the changes the new generation lacks, so disk and memory follow the catalog, not the
//! number of changes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use pinnersage_catalog::catalog::{Catalog, current_generation};
use pinnersage_catalog::fold::{Folded, deleted_items, fold_opened};
use pinnersage_core::progress::Progress;
use pinnersage_index::persist::{self, BuildOptions};

use crate::engine::{Engine, EngineError};

/// The share of a generation's rows changed (upserts and deletes since) at which a server
/// folds the changes into a new generation by default.
pub const DEFAULT_FOLD_FRACTION: f64 = 0.2;

/// How long an automatic fold waits after one failed.
const FOLD_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// The nice value of a fold's threads, and of opening a new generation beside the served one
/// (19, the lowest): on a serving machine they take the CPU that requests and live inserts
/// leave, instead of competing with them. The swap itself, which holds the journal, does not.
pub const FOLD_NICE: i32 = 19;

/// How [`Serving::follow`] opens an index generation (as the server opened the first one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexOpening {
    /// Overrides the index's ef_search.
    pub ef_search: Option<usize>,
    /// The ef_construction of live inserts (the build's when unset).
    pub insert_ef: Option<usize>,
    /// Load a usearch index into memory instead of memory-mapping it.
    pub load_into_memory: bool,
}

/// What [`Serving::follow`] swapped in.
#[derive(Debug, Clone, PartialEq)]
pub struct Swapped {
    /// The catalog generation now served.
    pub catalog: PathBuf,
    /// The index generation now served.
    pub index: PathBuf,
    /// Journaled item changes applied on top of the catalog generation.
    pub replayed: usize,
    /// Medoid lists made for the successor's cache before it was served.
    pub warmed: usize,
    /// Seconds from noticing the generation to serving it.
    pub seconds: f64,
    /// Seconds item changes waited for the swap (the journal held).
    pub paused_seconds: f64,
}

/// What [`Serving::fold`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldReport {
    /// The catalog generation written (`None`: the current one lacked its index, which this
    /// fold built instead).
    pub folded: Option<Folded>,
    /// Seconds writing it.
    pub catalog_seconds: f64,
    /// Seconds building its index.
    pub index_seconds: f64,
    /// The swap to it (`None`: another swap was under way; the next check serves it).
    pub swapped: Option<Swapped>,
}

/// The engine being served, and the swap to a new catalog or index generation.
pub struct Serving {
    current: RwLock<Arc<Engine>>,
    opening: IndexOpening,
    /// One [`Serving::fold`] at a time; when the last one failed (the next waits a while).
    folding: Mutex<Option<Instant>>,
    /// [`Serving::fold_due`]'s share of the generation's rows (0: never).
    fold_fraction: f64,
    /// One [`Serving::follow`] at a time; the pair of generations that failed last (not tried
    /// again: a newer generation is).
    following: Mutex<Option<(PathBuf, PathBuf)>>,
    swaps: std::sync::atomic::AtomicU64,
}

impl Serving {
    /// Serves `engine`; later generations are opened as `opening` says.
    pub fn new(engine: Engine, opening: IndexOpening) -> Self {
        Self {
            current: RwLock::new(Arc::new(engine)),
            opening,
            folding: Mutex::new(None),
            fold_fraction: DEFAULT_FOLD_FRACTION,
            following: Mutex::new(None),
            swaps: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Folds once the item changes since the served generation reach `fraction` of its rows
    /// (0: never; see [`Serving::fold_due`]).
    pub fn with_fold_fraction(mut self, fraction: f64) -> Self {
        self.fold_fraction = fraction;
        self
    }

    /// The engine to answer a request with (hold it for the whole request).
    pub fn engine(&self) -> Arc<Engine> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Engines swapped in since the start.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Serves the data directory's current catalog and index generations if they are not the
    /// served ones and the index was built for that catalog (until then the served engine
    /// stays: `import items` is followed by `index build`). Returns what was swapped in, or
    /// `None` (nothing new, or another call is following).
    pub fn follow(&self) -> Result<Option<Swapped>, EngineError> {
        let Ok(mut failed) = self.following.try_lock() else {
            return Ok(None);
        };
        let started = Instant::now();
        let old = self.engine();
        let data_dir = old.data_dir().to_path_buf();
        let internal = |e: &dyn std::fmt::Display| EngineError::Internal(e.to_string());
        let Some(catalog_dir) = current_generation(&data_dir).map_err(|e| internal(&e))? else {
            return Ok(None);
        };
        let Some((index_dir, index_meta)) =
            persist::current_generation(&data_dir).map_err(|e| internal(&e))?
        else {
            return Ok(None);
        };
        if catalog_dir == old.catalog().dir() && index_dir == old.index().dir {
            return Ok(None);
        }
        if !index_meta.is_for(&catalog_dir) {
            return Ok(None); // the index of the new catalog is not built yet
        }
        let pair = (catalog_dir, index_dir);
        if failed.as_ref() == Some(&pair) {
            return Ok(None);
        }
        let swapped = self.swap_to(&old, started);
        *failed = swapped.is_err().then_some(pair);
        swapped.map(Some)
    }

    /// Opens the current catalog generation and its index, and serves them instead of `old`'s.
    fn swap_to(&self, old: &Arc<Engine>, started: Instant) -> Result<Swapped, EngineError> {
        let data_dir = old.data_dir().to_path_buf();
        let internal = |e: &dyn std::fmt::Display| EngineError::Internal(e.to_string());
        // Off the request path, at the lowest priority (nothing the requests wait for is held):
        // the generation, the changes journaled since, the graph taking the rows they added.
        let (catalog, index, read_to) = at_low_priority(|| -> Result<_, EngineError> {
            let (records, read_to) =
                pinnersage_catalog::journal::read_from(&data_dir, 0).map_err(|e| internal(&e))?;
            let mut catalog =
                Catalog::open_with_changes(&data_dir, records).map_err(|e| internal(&e))?;
            catalog.build_hash_index();
            let catalog = Arc::new(catalog);
            let index = persist::open(
                &data_dir,
                catalog.clone(),
                self.opening.ef_search,
                self.opening.insert_ef,
                self.opening.load_into_memory,
            )
            .map_err(|e| internal(&e))?;
            Ok((catalog, index, read_to))
        })??;
        let replayed_on_open = catalog.applied_seq() - catalog.meta().journal_seq;
        let (opened_catalog, opened_index) = (catalog.dir().to_path_buf(), index.dir.clone());
        // The profiles stay while the successor is made; then, with the journal held, the
        // changes journaled since it was read, and the swap.
        let _reloads = old.hold_reloads();
        let new = old.successor(catalog, index)?;
        // The medoids of the served cache get fresh lists in the successor's, off the request
        // path: a cold cache would have every request search the graph at once after the swap.
        let warmed = at_low_priority(|| new.warm_cache_from(old))?;
        let paused = Instant::now();
        let swapped = old.holding_journal(|| -> Result<u64, EngineError> {
            let (later, _) = pinnersage_catalog::journal::read_from(&data_dir, read_to)
                .map_err(|e| internal(&e))?;
            let replayed = new.replay(later) as u64;
            old.online().rebase(new.catalog_arc());
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
            old.retire();
            Ok(replayed)
        })?;
        self.swaps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The changes the served generation holds leave the journal (written beside it, then
        // renamed over it with the journal held).
        let served = self.engine();
        let held = served.catalog().meta().journal_seq;
        if let Some(compaction) = pinnersage_catalog::journal::prepare_compaction(&data_dir, held)
            .map_err(|e| internal(&e))?
        {
            served.compact_journal(compaction)?;
        }
        Ok(Swapped {
            catalog: opened_catalog,
            index: opened_index,
            replayed: (replayed_on_open + swapped) as usize,
            warmed,
            seconds: started.elapsed().as_secs_f64(),
            paused_seconds: paused.elapsed().as_secs_f64(),
        })
    }

    /// Whether the item changes since the served generation reached the fold fraction of its
    /// rows ([`Serving::with_fold_fraction`]).
    pub fn fold_due(&self) -> bool {
        let failed_lately = self
            .folding
            .try_lock()
            .map_or(true, |f| f.is_some_and(|at| at.elapsed() < FOLD_RETRY));
        if failed_lately {
            return false;
        }
        let engine = self.engine();
        let changes = engine.changes_since_generation();
        self.fold_fraction > 0.0
            && changes > 0
            && changes as f64 >= self.fold_fraction * engine.catalog().base_rows() as f64
    }

    /// Folds the journal's item changes into a new catalog generation (deleted items that the
    /// served profiles' medoids point at keep their vectors), builds its index with the served
    /// index's settings, and serves both; off the request path, one fold at a time (`None`
    /// while another runs).
    pub fn fold(&self, progress: &dyn Progress) -> Result<Option<FoldReport>, EngineError> {
        let Ok(mut failed) = self.folding.try_lock() else {
            return Ok(None);
        };
        let folded = self.fold_now(progress);
        *failed = folded.is_err().then(Instant::now);
        folded.map(Some)
    }

    /// [`Serving::fold`], its turn taken: the new generation and its index built at
    /// [`FOLD_NICE`], then served.
    fn fold_now(&self, progress: &dyn Progress) -> Result<FoldReport, EngineError> {
        let (folded, catalog_seconds, index_seconds) =
            at_low_priority(|| self.build_folded(progress))??;
        Ok(FoldReport {
            folded,
            catalog_seconds,
            index_seconds,
            swapped: self.follow()?,
        })
    }

    /// Writes the folded generation and builds its index: what was folded, and the seconds of
    /// each.
    fn build_folded(
        &self,
        progress: &dyn Progress,
    ) -> Result<(Option<Folded>, f64, f64), EngineError> {
        let internal = |e: &dyn std::fmt::Display| EngineError::Internal(e.to_string());
        let engine = self.engine();
        let data_dir = engine.data_dir().to_path_buf();
        let started = Instant::now();
        // A current generation without its index (a fold cut short by a crash, or an import)
        // gets its index first: never two generations in a row without one.
        let current = current_generation(&data_dir).map_err(|e| internal(&e))?;
        let indexed = persist::current_generation(&data_dir).map_err(|e| internal(&e))?;
        let lacks_index = match (&current, &indexed) {
            (Some(current), Some((_, meta))) => !meta.is_for(current),
            _ => false,
        };
        let folded = if lacks_index {
            None
        } else {
            progress.phase("folding the catalog's changes", 0);
            let catalog = Catalog::open(&data_dir).map_err(|e| internal(&e))?;
            let deleted: std::collections::HashSet<&str> =
                deleted_items(&catalog).map(|(_, id)| id).collect();
            let keep = engine.medoids_among(&deleted)?;
            Some(
                fold_opened(&data_dir, &catalog, &|id| keep.contains(id))
                    .map_err(|e| internal(&e))?,
            )
        };
        let catalog_seconds = started.elapsed().as_secs_f64();
        let built = Instant::now();
        let served = &engine.index().meta;
        let options = BuildOptions {
            kind: served.kind,
            params: served.params,
            collapse_threshold: served.collapse_threshold,
            ..BuildOptions::default()
        };
        let catalog = Catalog::open(&data_dir).map_err(|e| internal(&e))?;
        persist::build(&data_dir, &catalog, &options, progress).map_err(|e| internal(&e))?;
        drop(catalog);
        let index_seconds = built.elapsed().as_secs_f64();
        Ok((folded, catalog_seconds, index_seconds))
    }
}

/// Runs `work` on a pool of the machine's parallelism whose threads run at [`FOLD_NICE`] (the
/// parallel iterators inside `work` included).
fn at_low_priority<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, EngineError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("pinnersage-fold-{i}"))
        .start_handler(|_| {
            pinnersage_store::events::lower_calling_thread_priority(FOLD_NICE);
        })
        .build()
        .map_err(|e| EngineError::Internal(format!("starting the fold's threads: {e}")))?;
    Ok(pool.install(work))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The nice value of the calling thread.
    fn nice() -> i32 {
        // SAFETY: plain syscalls on this thread's own id.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        }
    }

    #[test]
    fn a_folds_work_and_its_parallel_loops_run_at_the_lowest_priority() {
        use rayon::prelude::*;
        let before = nice();
        let (outer, inner) = at_low_priority(|| {
            let inner: Vec<i32> = (0..256).into_par_iter().map(|_| nice()).collect();
            (nice(), inner)
        })
        .unwrap();
        assert_eq!(outer, FOLD_NICE);
        assert!(inner.iter().all(|&n| n == FOLD_NICE), "{inner:?}");
        // The caller's own threads are left as they were.
        assert_eq!(nice(), before);
        let elsewhere: Vec<i32> = (0..256).into_par_iter().map(|_| nice()).collect();
        assert!(elsewhere.iter().all(|&n| n == before), "{elsewhere:?}");
    }
}
