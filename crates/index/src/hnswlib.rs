//! A safe wrapper over hnswlib (vendored C++ headers, see `crates/index/hnswlib/`) through the
//! small C interface of `hnswlib/shim.cpp`.

use std::ffi::{CString, c_char, c_int, c_long, c_void};
use std::path::Path;

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::{IndexError, Metric, Neighbor};

unsafe extern "C" {
    fn ps_hnswlib_new(
        inner_product: c_int,
        dim: usize,
        max_elements: usize,
        m: usize,
        ef_construction: usize,
        seed: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn ps_hnswlib_load(
        inner_product: c_int,
        dim: usize,
        path: *const c_char,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn ps_hnswlib_free(index: *mut c_void);
    fn ps_hnswlib_add(
        index: *mut c_void,
        vector: *const f32,
        row: u32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn ps_hnswlib_mark_deleted(
        index: *mut c_void,
        row: u32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn ps_hnswlib_capacity(index: *mut c_void) -> usize;
    fn ps_hnswlib_deleted(index: *mut c_void) -> usize;
    fn ps_hnswlib_resize(
        index: *mut c_void,
        capacity: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn ps_hnswlib_save(
        index: *mut c_void,
        path: *const c_char,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn ps_hnswlib_set_ef(index: *mut c_void, ef: usize);
    fn ps_hnswlib_set_ef_construction(index: *mut c_void, ef: usize);
    fn ps_hnswlib_ef_construction(index: *mut c_void) -> usize;
    fn ps_hnswlib_len(index: *mut c_void) -> usize;
    fn ps_hnswlib_memory(index: *mut c_void) -> usize;
    fn ps_hnswlib_links(index: *mut c_void, row: u32, rows: *mut u32, cap: usize) -> c_long;
    fn ps_hnswlib_search(
        index: *mut c_void,
        query: *const f32,
        k: usize,
        keep: Option<unsafe extern "C" fn(*mut c_void, u32) -> bool>,
        ctx: *mut c_void,
        beside_inserts: c_int,
        rows: *mut u32,
        distances: *mut f32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_long;
}

/// Room for a C++ exception's message.
const ERR_LEN: usize = 512;

/// Seed of hnswlib's level generator: the same vectors added in the same order build the same
/// graph.
const SEED: usize = 100;

fn failed(what: &str, err: &[u8]) -> IndexError {
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    IndexError::Library(format!(
        "hnswlib: {what}: {}",
        String::from_utf8_lossy(&err[..end])
    ))
}

fn c_path(path: &Path) -> Result<CString, IndexError> {
    path.to_str()
        .and_then(|p| CString::new(p).ok())
        .ok_or_else(|| IndexError::Options(format!("{} is not a usable path", path.display())))
}

/// An hnswlib HNSW graph over `f32` vectors whose labels are catalog rows.
pub(crate) struct Hnswlib {
    ptr: *mut c_void,
    dim: usize,
    /// Searches and inserts share it; marking a deletion and growing the graph hold it alone.
    changing: RwLock<()>,
    /// Whether searches must take the per-node locks inserts take: hnswlib's own search is not
    /// safe beside its inserts (nmslib/hnswlib#562) but is faster (about 5%), so it runs
    /// whenever no insert can. Set before the first insert of a run, cleared by
    /// [`Hnswlib::inserts_done`].
    beside_inserts: AtomicBool,
    /// Held shared by every search of hnswlib's own kind; the first insert of a run takes it
    /// alone once, after setting `beside_inserts`, so that none of them is still running.
    unlocked_searches: RwLock<()>,
    /// Held by an insert into a served graph.
    inserting: Mutex<()>,
}

/// How much a full graph grows: a quarter of its size, at least this many vectors.
const MIN_GROWTH: usize = 1024;

// SAFETY: hnswlib's `addPoint` takes per-element and per-label locks, so many threads may add
// at once while a graph is built (`add`, before anything searches it). Its `searchKnn` is const
// with a pool of visited lists, so many threads may search at once, but not beside an insert
// (a search can enter a node whose links are being rewritten). The shim's other search reads
// every node's links under the per-node locks inserts take, and the entry point under the lock
// they raise it with: it is safe beside inserts. A served graph's inserts (`insert`, one at a
// time) set `beside_inserts` and wait for the searches of hnswlib's kind to end before the
// first of a run; searches choose their kind under `unlocked_searches` and `changing`'s read
// lock. Marking a deletion and growing (which reallocates) hold `changing`'s write lock.
// `setEf` writes one word (only called between searches by `pinnersage-bench index`). The
// pointer is owned and freed once.
unsafe impl Send for Hnswlib {}
unsafe impl Sync for Hnswlib {}

impl Drop for Hnswlib {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from ps_hnswlib_new/load and is freed only here.
        unsafe { ps_hnswlib_free(self.ptr) }
    }
}

fn inner_product(metric: Metric) -> c_int {
    c_int::from(metric == Metric::Cosine)
}

impl Hnswlib {
    /// An empty graph for up to `capacity` vectors.
    pub(crate) fn new(
        metric: Metric,
        dim: usize,
        capacity: usize,
        m: usize,
        ef_construction: usize,
    ) -> Result<Self, IndexError> {
        let mut err = [0u8; ERR_LEN];
        // SAFETY: plain values and an error buffer of ERR_LEN bytes.
        let ptr = unsafe {
            ps_hnswlib_new(
                inner_product(metric),
                dim,
                capacity.max(1),
                m,
                ef_construction,
                SEED,
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if ptr.is_null() {
            return Err(failed("cannot create the index", &err));
        }
        Ok(Self::owning(ptr, dim))
    }

    /// The graph at `ptr` (from ps_hnswlib_new/load, not null), owned from now on.
    fn owning(ptr: *mut c_void, dim: usize) -> Self {
        Self {
            ptr,
            dim,
            changing: RwLock::new(()),
            beside_inserts: AtomicBool::new(false),
            unlocked_searches: RwLock::new(()),
            inserting: Mutex::new(()),
        }
    }

    /// Loads a graph written by [`Hnswlib::save`].
    pub(crate) fn load(path: &Path, metric: Metric, dim: usize) -> Result<Self, IndexError> {
        let p = c_path(path)?;
        let mut err = [0u8; ERR_LEN];
        // SAFETY: a NUL-terminated path and an error buffer of ERR_LEN bytes.
        let ptr = unsafe {
            ps_hnswlib_load(
                inner_product(metric),
                dim,
                p.as_ptr(),
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if ptr.is_null() {
            return Err(failed(&format!("cannot load {}", path.display()), &err));
        }
        Ok(Self::owning(ptr, dim))
    }

    /// Adds `vector` (of the index's dimension) under `row`.
    pub(crate) fn add(&self, row: u32, vector: &[f32]) -> Result<(), IndexError> {
        assert_eq!(vector.len(), self.dim, "checked by the caller");
        let mut err = [0u8; ERR_LEN];
        // SAFETY: `vector` holds `dim` floats, read during the call only.
        let rc = unsafe {
            ps_hnswlib_add(
                self.ptr,
                vector.as_ptr(),
                row,
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if rc != 0 {
            return Err(failed("cannot add a vector", &err));
        }
        Ok(())
    }

    /// Adds `vector` under `row` to a served graph, growing it first when it is full. Searches
    /// go on meanwhile (see `search_beside_inserts` in the shim); only growing, which moves
    /// the graph, waits for them and holds them off.
    pub(crate) fn insert(&self, row: u32, vector: &[f32]) -> Result<(), IndexError> {
        // One insert at a time: the room checked below is still there when the vector is added.
        let _one_at_a_time = self.inserting.lock();
        loop {
            {
                let _shared = self.changing.read();
                if !self.beside_inserts.load(Ordering::SeqCst) {
                    // Searches starting from now on take the locks; wait for those that did not.
                    self.beside_inserts.store(true, Ordering::SeqCst);
                    drop(self.unlocked_searches.write());
                }
                if self.len() < self.capacity() {
                    return self.add(row, vector);
                }
            }
            let _alone = self.changing.write();
            let capacity = self.capacity();
            if self.len() >= capacity {
                let mut err = [0u8; ERR_LEN];
                let wanted = capacity + (capacity / 4).max(MIN_GROWTH);
                // SAFETY: a live index, nothing else using it meanwhile, and an error buffer
                // of ERR_LEN bytes.
                let rc = unsafe {
                    ps_hnswlib_resize(self.ptr, wanted, err.as_mut_ptr().cast(), ERR_LEN)
                };
                if rc != 0 {
                    return Err(failed("cannot grow the index", &err));
                }
            }
        }
    }

    /// Ends a run of inserts: searches go back to hnswlib's own (once those running beside
    /// the inserts are done, as the graph is held alone for a moment). Nothing to do when no
    /// insert ran since the last call.
    pub(crate) fn inserts_done(&self) {
        if self.beside_inserts.load(Ordering::SeqCst) {
            let _alone = self.changing.write();
            self.beside_inserts.store(false, Ordering::SeqCst);
        }
    }

    /// The rows linked to `row` in the graph's bottom layer (`None` when the graph lacks it).
    /// Safe beside inserts and searches.
    pub(crate) fn links(&self, row: u32) -> Option<Vec<u32>> {
        let _shared = self.changing.read();
        let mut rows = vec![0u32; 64];
        loop {
            // SAFETY: a live index, not moved meanwhile (`changing` is held), and room for
            // `rows.len()` rows.
            let n = unsafe { ps_hnswlib_links(self.ptr, row, rows.as_mut_ptr(), rows.len()) };
            let n = usize::try_from(n).ok()?;
            if n <= rows.len() {
                rows.truncate(n);
                return Some(rows);
            }
            rows.resize(n, 0);
        }
    }

    /// Vectors the graph has room for.
    fn capacity(&self) -> usize {
        // SAFETY: a live index.
        unsafe { ps_hnswlib_capacity(self.ptr) }
    }

    /// Marks `row` deleted (searches skip it); `false` if the graph does not hold it or it was
    /// deleted already.
    pub(crate) fn mark_deleted(&self, row: u32) -> Result<bool, IndexError> {
        let _alone = self.changing.write();
        let mut err = [0u8; ERR_LEN];
        // SAFETY: a live index and an error buffer of ERR_LEN bytes.
        let rc =
            unsafe { ps_hnswlib_mark_deleted(self.ptr, row, err.as_mut_ptr().cast(), ERR_LEN) };
        if rc < 0 {
            return Err(failed("cannot delete a vector", &err));
        }
        Ok(rc == 0)
    }

    /// Vectors marked deleted.
    pub(crate) fn deleted(&self) -> usize {
        // SAFETY: a live index.
        unsafe { ps_hnswlib_deleted(self.ptr) }
    }

    /// Writes the graph and vectors to `path`.
    pub(crate) fn save(&self, path: &Path) -> Result<(), IndexError> {
        let _shared = self.changing.read();
        let p = c_path(path)?;
        let mut err = [0u8; ERR_LEN];
        // SAFETY: a NUL-terminated path and an error buffer of ERR_LEN bytes.
        let rc = unsafe { ps_hnswlib_save(self.ptr, p.as_ptr(), err.as_mut_ptr().cast(), ERR_LEN) };
        if rc != 0 {
            return Err(failed(&format!("cannot write {}", path.display()), &err));
        }
        Ok(())
    }

    /// Sets `ef_construction` for the inserts from now on (waits for those under way).
    pub(crate) fn set_ef_construction(&self, ef: usize) {
        let _exclusive = self.changing.write();
        // SAFETY: a live index, nothing inserting meanwhile.
        unsafe { ps_hnswlib_set_ef_construction(self.ptr, ef) }
    }

    /// The `ef_construction` inserts use.
    pub(crate) fn ef_construction(&self) -> usize {
        let _shared = self.changing.read();
        // SAFETY: a live index.
        unsafe { ps_hnswlib_ef_construction(self.ptr) }
    }

    /// Sets `ef_search`.
    pub(crate) fn set_ef(&self, ef: usize) {
        let _shared = self.changing.read();
        // SAFETY: a live index.
        unsafe { ps_hnswlib_set_ef(self.ptr, ef) }
    }

    /// Vectors in the graph.
    pub(crate) fn len(&self) -> usize {
        // SAFETY: a live index.
        unsafe { ps_hnswlib_len(self.ptr) }
    }

    /// Bytes of vectors and links.
    pub(crate) fn memory_usage(&self) -> usize {
        let _shared = self.changing.read();
        // SAFETY: a live index.
        unsafe { ps_hnswlib_memory(self.ptr) }
    }

    /// The `k` rows nearest to `query` (of the index's dimension) for which `keep` holds (all
    /// when `None`), closest first.
    pub(crate) fn search(
        &self,
        query: &[f32],
        k: usize,
        keep: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Result<Vec<Neighbor>, IndexError> {
        assert_eq!(query.len(), self.dim, "checked by the caller");
        let _shared = self.changing.read();
        // hnswlib's own search when no insert can run beside it (checked again once its lock
        // is held: an insert run that began meanwhile waits for it or is seen).
        let unlocked = (!self.beside_inserts.load(Ordering::SeqCst))
            .then(|| self.unlocked_searches.read())
            .filter(|_| !self.beside_inserts.load(Ordering::SeqCst));
        unsafe extern "C" fn call_keep(ctx: *mut c_void, row: u32) -> bool {
            // SAFETY: `ctx` points at the `&dyn Fn` below, alive for the whole search.
            let keep = unsafe { &*(ctx as *const &(dyn Fn(u32) -> bool + Sync)) };
            keep(row)
        }
        let k = k.min(self.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut rows = vec![0u32; k];
        let mut distances = vec![0f32; k];
        let mut err = [0u8; ERR_LEN];
        let (callback, ctx) = match &keep {
            Some(f) => (
                Some(call_keep as unsafe extern "C" fn(*mut c_void, u32) -> bool),
                f as *const &(dyn Fn(u32) -> bool + Sync) as *mut c_void,
            ),
            None => (None, std::ptr::null_mut()),
        };
        // SAFETY: `query` holds `dim` floats; `rows` and `distances` have room for `k` results;
        // `ctx` outlives the call.
        let n = unsafe {
            ps_hnswlib_search(
                self.ptr,
                query.as_ptr(),
                k,
                callback,
                ctx,
                c_int::from(unlocked.is_none()),
                rows.as_mut_ptr(),
                distances.as_mut_ptr(),
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if n < 0 {
            return Err(failed("search failed", &err));
        }
        let n = n as usize;
        Ok(rows[..n]
            .iter()
            .zip(&distances[..n])
            .map(|(&row, &distance)| Neighbor { row, distance })
            .collect())
    }
}
