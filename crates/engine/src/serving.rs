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

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use pinnersage_catalog::catalog::{Catalog, current_generation};
use pinnersage_index::persist;

use crate::engine::{Engine, EngineError};

/// How [`Serving::follow`] opens an index generation (as the server opened the first one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexOpening {
    /// Overrides the index's ef_search.
    pub ef_search: Option<usize>,
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
    /// Seconds from noticing the generation to serving it.
    pub seconds: f64,
    /// Seconds item changes waited for the swap (the journal held).
    pub paused_seconds: f64,
}

/// The engine being served, and the swap to a new catalog or index generation.
pub struct Serving {
    current: RwLock<Arc<Engine>>,
    opening: IndexOpening,
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
            following: Mutex::new(None),
            swaps: std::sync::atomic::AtomicU64::new(0),
        }
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
        let built_for = catalog_dir.file_name().map(|n| n.to_string_lossy());
        if built_for.as_deref() != Some(index_meta.catalog_generation.as_str()) {
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
        // Off the request path: the generation, the changes journaled since, the graph.
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
            self.opening.load_into_memory,
        )
        .map_err(|e| internal(&e))?;
        let replayed_on_open = catalog.applied_seq() - catalog.meta().journal_seq;
        let (opened_catalog, opened_index) = (catalog.dir().to_path_buf(), index.dir.clone());
        // The profiles stay while the successor is made; then, with the journal held, the
        // changes journaled since it was read, and the swap.
        let _reloads = old.hold_reloads();
        let new = old.successor(catalog, index)?;
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
        Ok(Swapped {
            catalog: opened_catalog,
            index: opened_index,
            replayed: (replayed_on_open + swapped) as usize,
            seconds: started.elapsed().as_secs_f64(),
            paused_seconds: paused.elapsed().as_secs_f64(),
        })
    }
}
