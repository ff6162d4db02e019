//! The item catalog: external item ids <-> dense rows, and the embedding matrix, memory-mapped.
//!
//! On disk, under `DATA_DIR/catalog/gen-NNNNNN/` (see `pinnersage_generation`):
//!
//! | file | content |
//! |---|---|
//! | `meta.json` | format version, rows, dimension, whether rows are L2-normalised, source |
//! | `embeddings.f32` | `rows x dim` little-endian `f32`, row-major, no header |
//! | `ids.bin` | the ids' UTF-8 bytes, concatenated in row order |
//! | `ids.offsets` | `rows + 1` little-endian `u64` offsets into `ids.bin` |
//! | `ids.sorted` | `rows` little-endian `u32` row numbers, sorted by id bytes (binary search) |
//!
//! Everything is memory-mapped on open, so opening a million-item catalog takes milliseconds and
//! the pages are shared by every process that serves from it.

use std::collections::HashMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use pinnersage_core::hash::stable_hash;
use serde::{Deserialize, Serialize};

use pinnersage_generation::{Generations, PublishLock, Staging};

use crate::attributes::{AttributesSummary, read_attributes};
pub use crate::error::CatalogError;
use crate::error::io_err;
use crate::id_table::IdTable;

/// The file of a generation's deleted rows (little-endian `u32` row numbers).
const DELETED: &str = "deleted.u32";

/// The catalog's on-disk format version.
pub const FORMAT_VERSION: u32 = 1;

/// The catalog's `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogMeta {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Number of items.
    pub rows: usize,
    /// Embedding dimension.
    pub dim: usize,
    /// Whether every row was L2-normalised on import.
    pub normalized: bool,
    /// Where the items came from (the imported file names).
    pub source: String,
    /// Whether the generation has item attributes (`attrs.bin`, `attrs.offsets`).
    #[serde(default)]
    pub attributes: bool,
    /// The last change of the journal ([`crate::journal`]) this generation holds: opening it
    /// replays the later ones.
    #[serde(default)]
    pub journal_seq: u64,
    /// Rows of a folded generation ([`crate::fold`]) that are deleted items kept for their
    /// vectors (profiles still point at them), listed in `deleted.u32`; never served.
    #[serde(default)]
    pub deleted_rows: usize,
}

/// The directory of the catalog's generations inside a data directory.
pub fn catalog_root(data_dir: &Path) -> PathBuf {
    data_dir.join("catalog")
}

/// The directory of the current catalog generation of `data_dir` (`None`: never imported).
pub fn current_generation(data_dir: &Path) -> Result<Option<PathBuf>, CatalogError> {
    let root = catalog_root(data_dir);
    Generations::new(&root).current().map_err(io_err(&root))
}

/// An opened item catalog: a memory-mapped generation plus the changes made since
/// ([`crate::live`]: items added, replaced or deleted while serving, replayed from the journal on
/// open). Rows are never reused: an added or replaced item gets the next row, a replaced or
/// deleted one keeps its row (and vector) marked deleted.
///
/// ```
/// use pinnersage_catalog::catalog::{Catalog, CatalogBuilder};
/// let dir = std::env::temp_dir().join(format!("catalog-doc-{}", std::process::id()));
/// let mut b = CatalogBuilder::new(&dir, 2, false).unwrap();
/// b.push("apple", &mut [1.0, 0.0]).unwrap();
/// b.push("pear", &mut [0.0, 1.0]).unwrap();
/// b.commit("doc").unwrap();
/// let c = Catalog::open(&dir).unwrap();
/// assert_eq!(c.row_of("pear"), Some(1));
/// assert_eq!(c.embedding(1), &[0.0, 1.0]);
/// assert_eq!(c.id(0), "apple");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct Catalog {
    dir: PathBuf,
    meta: CatalogMeta,
    embeddings: memmap2::Mmap,
    ids: memmap2::Mmap,
    offsets: memmap2::Mmap,
    sorted: memmap2::Mmap,
    /// Item attributes as JSON object texts, with `rows + 1` offsets (if imported).
    attributes: Option<(memmap2::Mmap, memmap2::Mmap)>,
    /// Optional in-memory `stable_hash(id) -> row` index (see [`Catalog::build_hash_index`]).
    hash_index: Option<IdTable>,
    /// The rows added and deleted since the generation.
    pub(crate) live: crate::live::Live,
    /// Tells this opened catalog from every other one of the process ([`Catalog::instance`]).
    instance: u64,
}

/// The source of [`Catalog::instance`] numbers.
static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The bytes of an `f32` slice.
fn bytemuck_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: any f32 is 4 initialised bytes; the length covers exactly the slice.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Asks the CPU to load every cache line of `bytes` (a hint: never faults).
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: prefetching is a hint that never faults; the pointer is in bounds.
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                line.as_ptr().cast::<i8>(),
                std::arch::x86_64::_MM_HINT_T0,
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

fn map(path: &Path, expected_len: Option<usize>) -> Result<memmap2::Mmap, CatalogError> {
    let file = fs::File::open(path).map_err(io_err(path))?;
    // SAFETY: catalog files are written once into a staging directory and never modified after
    // the generation is published; readers only map published generations.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
    if let Some(len) = expected_len.filter(|&len| len != map.len()) {
        return Err(CatalogError::Corrupt {
            path: path.to_path_buf(),
            problem: format!("{} bytes, expected {len}", map.len()),
        });
    }
    Ok(map)
}

impl Catalog {
    /// Opens the current catalog generation of the data directory `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, CatalogError> {
        Self::open_with_changes(data_dir, crate::journal::read(data_dir)?)
    }

    /// [`open`](Self::open) with the journal's records already read (by its writer,
    /// [`crate::journal::Journal::open`]): the journal is read once.
    pub fn open_with_changes(
        data_dir: &Path,
        changes: crate::journal::Records,
    ) -> Result<Self, CatalogError> {
        if cfg!(target_endian = "big") {
            return Err(CatalogError::Input(
                "pinnersage catalogs need a little-endian CPU".into(),
            ));
        }
        let dir = current_generation(data_dir)?
            .ok_or_else(|| CatalogError::Missing(data_dir.to_path_buf()))?;
        Self::open_generation(dir, changes)
    }

    /// Opens the catalog generation in `dir` (one of a data directory's, current or not) with
    /// the journal's `changes` on top.
    pub fn open_generation(
        dir: PathBuf,
        changes: crate::journal::Records,
    ) -> Result<Self, CatalogError> {
        let meta_path = dir.join("meta.json");
        let meta: CatalogMeta = serde_json::from_slice(
            &fs::read(&meta_path).map_err(io_err(&meta_path))?,
        )
        .map_err(|e| CatalogError::Corrupt {
            path: meta_path.clone(),
            problem: e.to_string(),
        })?;
        if meta.format_version != FORMAT_VERSION {
            return Err(CatalogError::Corrupt {
                path: meta_path,
                problem: format!(
                    "format version {} (this pinnersage reads {FORMAT_VERSION}); re-import the items",
                    meta.format_version
                ),
            });
        }
        let n = meta.rows;
        // A damaged or crafted meta.json must not overflow the length checks below: every size
        // is computed with checked arithmetic, and rows must fit the u32 row numbers.
        let sizes = (|| {
            let matrix = n.checked_mul(meta.dim)?.checked_mul(4)?;
            let offsets = n.checked_add(1)?.checked_mul(8)?;
            let sorted = n.checked_mul(4)?;
            Some((matrix, offsets, sorted))
        })();
        let (matrix_len, offsets_len, sorted_len) = match sizes {
            Some(sizes) if meta.dim > 0 && u32::try_from(n).is_ok() => sizes,
            _ => {
                return Err(CatalogError::Corrupt {
                    path: meta_path,
                    problem: format!("impossible size: {n} rows x {} dims", meta.dim),
                });
            }
        };
        let embeddings = map(&dir.join("embeddings.f32"), Some(matrix_len))?;
        let offsets = map(&dir.join("ids.offsets"), Some(offsets_len))?;
        let sorted = map(&dir.join("ids.sorted"), Some(sorted_len))?;
        let ids = map(&dir.join("ids.bin"), None)?;
        let attributes = if meta.attributes {
            let text = map(&dir.join("attrs.bin"), None)?;
            let offsets = map(&dir.join("attrs.offsets"), Some(offsets_len))?;
            Some((text, offsets))
        } else {
            None
        };
        let catalog = Self {
            dir,
            meta,
            embeddings,
            ids,
            offsets,
            sorted,
            attributes,
            hash_index: None,
            live: crate::live::Live::new(n),
            instance: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        catalog.check_ids()?;
        catalog.check_attributes()?;
        catalog.read_deleted()?;
        catalog.replay(changes);
        Ok(catalog)
    }

    /// Offsets must rise to the end of `ids.bin`, each id must be UTF-8, and `ids.sorted` must
    /// be a permutation of the rows.
    fn check_ids(&self) -> Result<(), CatalogError> {
        let corrupt = |file: &str, problem: String| CatalogError::Corrupt {
            path: self.dir.join(file),
            problem,
        };
        let mut prev = 0;
        for r in 0..=self.base_rows() {
            let o = self.offset(r);
            if o < prev || o > self.ids.len() {
                return Err(corrupt("ids.offsets", format!("offset {r} out of order")));
            }
            prev = o;
        }
        if prev != self.ids.len() {
            return Err(corrupt(
                "ids.offsets",
                "does not end at the end of ids.bin".into(),
            ));
        }
        let Ok(text) = std::str::from_utf8(&self.ids) else {
            return Err(corrupt("ids.bin", "not UTF-8".into()));
        };
        if let Some(r) = (0..=self.base_rows()).find(|&r| !text.is_char_boundary(self.offset(r))) {
            return Err(corrupt(
                "ids.offsets",
                format!("offset {r} splits a UTF-8 character"),
            ));
        }
        let mut seen = vec![false; self.base_rows()];
        for k in 0..self.base_rows() {
            let r = self.sorted_row(k) as usize;
            if r >= self.base_rows() || std::mem::replace(&mut seen[r], true) {
                return Err(corrupt(
                    "ids.sorted",
                    format!("entry {k} is not a fresh row"),
                ));
            }
        }
        Ok(())
    }

    fn offset(&self, r: usize) -> usize {
        let b = &self.offsets[r * 8..r * 8 + 8];
        u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize
    }

    fn sorted_row(&self, k: usize) -> u32 {
        u32::from_le_bytes(self.sorted[k * 4..k * 4 + 4].try_into().expect("4 bytes"))
    }

    /// The generation directory this catalog was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A number no other catalog opened by this process has: row numbers resolved through one
    /// catalog mean something else in another (a server swapping in a new generation tells
    /// them apart with it).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The catalog's metadata.
    pub fn meta(&self) -> &CatalogMeta {
        &self.meta
    }

    /// Number of rows: the generation's and those added since, deleted ones included (rows are
    /// numbered `0..rows()`).
    pub fn rows(&self) -> usize {
        self.meta.rows + self.live.added()
    }

    /// Number of rows of the generation (the matrix of [`embeddings`](Self::embeddings)).
    pub fn base_rows(&self) -> usize {
        self.meta.rows
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.meta.dim
    }

    /// The generation's `base_rows x dim` embedding matrix (rows added since are not in it).
    pub fn embeddings(&self) -> &[f32] {
        // SAFETY: the map is page-aligned (so 4-byte aligned), its length was checked to be
        // rows·dim·4 on open, and every bit pattern is a valid f32.
        unsafe {
            std::slice::from_raw_parts(
                self.embeddings.as_ptr().cast::<f32>(),
                self.base_rows() * self.dim(),
            )
        }
    }

    /// The embedding of `row` (deleted rows keep theirs). Panics if `row >= rows()`.
    pub fn embedding(&self, row: usize) -> &[f32] {
        if row < self.base_rows() {
            &self.embeddings()[row * self.dim()..(row + 1) * self.dim()]
        } else {
            &self.live.row(row - self.base_rows()).vector
        }
    }

    /// The attributes of `row` (a JSON object text such as `{"title":"Heat (1995)"}`), if the
    /// catalog was imported with attributes and the item has some. Panics if `row >= rows()`.
    pub fn attributes(&self, row: usize) -> Option<&str> {
        if row >= self.base_rows() {
            return self.live.row(row - self.base_rows()).attributes.as_deref();
        }
        let (text, offsets) = self.attributes.as_ref()?;
        let at = |k: usize| {
            u64::from_le_bytes(offsets[k * 8..k * 8 + 8].try_into().expect("8 bytes")) as usize
        };
        let bytes = &text[at(row)..at(row + 1)];
        // SAFETY: `check_attributes` verified on open that the offsets are in bounds and
        // non-decreasing and that every row's slice is UTF-8; the mapping never changes.
        (!bytes.is_empty()).then(|| unsafe { std::str::from_utf8_unchecked(bytes) })
    }

    /// Marks the generation's deleted rows (`deleted.u32`, a folded generation's).
    fn read_deleted(&self) -> Result<(), CatalogError> {
        if self.meta.deleted_rows == 0 {
            return Ok(());
        }
        let path = self.dir.join(DELETED);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let corrupt = |problem: String| CatalogError::Corrupt {
            path: path.clone(),
            problem,
        };
        if bytes.len() != self.meta.deleted_rows * 4 {
            return Err(corrupt(format!(
                "{} bytes, expected {} rows",
                bytes.len(),
                self.meta.deleted_rows
            )));
        }
        for chunk in bytes.chunks_exact(4) {
            let row = u32::from_le_bytes(chunk.try_into().expect("4 bytes")) as usize;
            if row >= self.base_rows() || self.is_deleted(row) {
                return Err(corrupt(format!("row {row} out of range or listed twice")));
            }
            self.tombstone(row);
        }
        Ok(())
    }

    /// Verifies the attribute offsets and that each row's text is UTF-8.
    fn check_attributes(&self) -> Result<(), CatalogError> {
        let Some((text, offsets)) = &self.attributes else {
            return Ok(());
        };
        let corrupt = |problem: String| CatalogError::Corrupt {
            path: self.dir.join("attrs.offsets"),
            problem,
        };
        let mut previous = 0usize;
        for k in 0..=self.base_rows() {
            let at =
                u64::from_le_bytes(offsets[k * 8..k * 8 + 8].try_into().expect("8 bytes")) as usize;
            if at < previous || at > text.len() || (k == 0 && at != 0) {
                return Err(corrupt(format!("offset {k} ({at}) out of order or bounds")));
            }
            if k > 0 && std::str::from_utf8(&text[previous..at]).is_err() {
                return Err(corrupt(format!(
                    "attributes of row {} are not UTF-8",
                    k - 1
                )));
            }
            previous = at;
        }
        Ok(())
    }

    /// Appends the embeddings of `rows`, in order, to `out`, prefetching a few rows ahead (the
    /// rows of one user are scattered over the matrix). Panics if a row is out of range.
    pub fn gather(&self, rows: &[usize], out: &mut Vec<f32>) {
        const AHEAD: usize = 4;
        out.reserve(rows.len() * self.dim());
        for (k, &row) in rows.iter().enumerate() {
            if let Some(&next) = rows.get(k + AHEAD) {
                prefetch(bytemuck_bytes(self.embedding(next)));
            }
            out.extend_from_slice(self.embedding(row));
        }
    }

    /// The external id of `row`. Panics if `row >= rows()`.
    pub fn id(&self, row: usize) -> &str {
        if row >= self.base_rows() {
            return &self.live.row(row - self.base_rows()).id;
        }
        // SAFETY: `open` checked that ids.bin is UTF-8 and that every offset falls on a
        // character boundary, so every id slice is valid UTF-8; the mapping never changes.
        unsafe { std::str::from_utf8_unchecked(self.id_bytes(row)) }
    }

    fn id_bytes(&self, row: usize) -> &[u8] {
        &self.ids[self.offset(row)..self.offset(row + 1)]
    }

    /// Builds an in-memory hash index of the ids (16–32 bytes per item) so that
    /// [`row_of`](Self::row_of) is one hash probe instead of a binary search: worth it for jobs
    /// that resolve millions of ids, like the batch.
    pub fn build_hash_index(&mut self) {
        self.hash_index = Some(IdTable::build(self.base_rows(), |row| {
            stable_hash(self.id_bytes(row))
        }));
    }

    /// The row of the item with external id `id`, `None` if the catalog does not have it (or it
    /// was deleted).
    pub fn row_of(&self, id: &str) -> Option<usize> {
        match self.live.binding(id) {
            Some(binding) => binding.live.then_some(binding.row as usize),
            None => self.base_row_of(id),
        }
    }

    /// The generation's row of `id` (hash probe if the index was built, else binary search).
    pub(crate) fn base_row_of(&self, id: &str) -> Option<usize> {
        match &self.hash_index {
            Some(index) => index.find(stable_hash(id.as_bytes()), |r| {
                self.id_bytes(r) == id.as_bytes()
            }),
            None => self.row_by_search(id),
        }
    }

    /// [`row_of`](Self::row_of) for many ids at once, into `rows` (cleared first): with the hash
    /// index, every probe's cache line is requested before the first probe, so the misses overlap.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("ps-rows-of-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// # let csv = dir.join("items.csv");
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # std::fs::write(&csv, "id,e0\na,1\nb,2\n").unwrap();
    /// # pinnersage_catalog::items::import_items(&dir, &csv, &Default::default()).unwrap();
    /// let mut catalog = pinnersage_catalog::catalog::Catalog::open(&dir).unwrap();
    /// catalog.build_hash_index();
    /// let mut rows = Vec::new();
    /// catalog.rows_of(["b", "zz", "a"], &mut rows);
    /// assert_eq!(rows, [Some(1), None, Some(0)]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn rows_of<'a, I>(&self, ids: I, rows: &mut Vec<Option<usize>>)
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: Clone,
    {
        let ids = ids.into_iter();
        self.base_rows_of(ids.clone(), rows);
        // Ids changed while serving are bound to their newest row (or to none): one read of the
        // bindings for the whole list.
        self.live.rebind(ids, rows);
    }

    /// The generation's rows of `ids`, into `rows` (cleared first).
    fn base_rows_of<'a, I>(&self, ids: I, rows: &mut Vec<Option<usize>>)
    where
        I: Iterator<Item = &'a str> + Clone,
    {
        rows.clear();
        let Some(index) = &self.hash_index else {
            rows.extend(ids.map(|id| self.row_by_search(id)));
            return;
        };
        // Each lookup touches three scattered places: its slot, the candidate row's id offset and
        // the id's bytes. One pass per level, each prefetching what the next one reads, overlaps
        // the cache misses of all the ids instead of paying them one after another.
        let hashes: Vec<u64> = ids
            .clone()
            .map(|id| {
                let hash = stable_hash(id.as_bytes());
                index.prefetch(hash);
                hash
            })
            .collect();
        rows.extend(hashes.iter().map(|&hash| {
            let row = index.candidate(hash);
            if let Some(row) = row {
                prefetch(&self.offsets[row * 8..row * 8 + 8]);
            }
            row
        }));
        for &row in rows.iter().flatten() {
            prefetch(self.id_bytes(row));
        }
        // The candidate is the row only if its id matches; otherwise probe on (exact).
        for ((row, id), hash) in rows.iter_mut().zip(ids).zip(hashes) {
            if row.is_some_and(|r| self.id_bytes(r) != id.as_bytes()) {
                *row = index.find(hash, |r| self.id_bytes(r) == id.as_bytes());
            }
        }
    }

    fn row_by_search(&self, id: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.base_rows());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let row = self.sorted_row(mid) as usize;
            match self.id_bytes(row).cmp(id.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(row),
            }
        }
        None
    }
}

/// Why a row was refused by [`CatalogBuilder::push`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    /// The vector has the wrong length.
    #[error("has {found} values, expected {expected}")]
    Dimension {
        /// The catalog's dimension.
        expected: usize,
        /// The row's length.
        found: usize,
    },
    /// A value is NaN or infinite.
    #[error("value {col} is not finite ({value})")]
    NonFinite {
        /// 0-based position in the vector.
        col: usize,
        /// The value.
        value: f32,
    },
    /// The id is empty.
    #[error("the item id is empty")]
    EmptyId,
    /// The id was already imported.
    #[error("item id {id:?} duplicates item {first_row} (0-based) of this import")]
    Duplicate {
        /// The id.
        id: String,
        /// The row that had it first.
        first_row: usize,
    },
    /// The vector is all zeros and cannot be L2-normalised.
    #[error("the vector has zero length and cannot be L2-normalised")]
    ZeroNorm,
    /// More than 2³² − 1 items.
    #[error("more than 4,294,967,295 items")]
    TooMany,
}

/// Checks that `vector` has `dim` finite values and L2-normalises it if `normalize`: what every
/// vector must be to join a catalog, imported or upserted.
pub(crate) fn check_vector(
    vector: &mut [f32],
    dim: usize,
    normalize: bool,
) -> Result<(), RowError> {
    if vector.len() != dim {
        return Err(RowError::Dimension {
            expected: dim,
            found: vector.len(),
        });
    }
    if let Some(col) = vector.iter().position(|v| !v.is_finite()) {
        return Err(RowError::NonFinite {
            col,
            value: vector[col],
        });
    }
    if normalize {
        let norm = vector
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            return Err(RowError::ZeroNorm);
        }
        vector
            .iter_mut()
            .for_each(|v| *v = (f64::from(*v) / norm) as f32);
    }
    Ok(())
}

/// Writes a new catalog generation row by row; nothing is visible until [`commit`].
///
/// [`commit`]: CatalogBuilder::commit
#[derive(Debug)]
pub struct CatalogBuilder {
    _lock: PublishLock,
    data_dir: PathBuf,
    generations: Generations,
    staging: Staging,
    embeddings: BufWriter<fs::File>,
    dim: usize,
    normalize: bool,
    ids: Vec<Box<str>>,
    rows_by_id: HashMap<Box<str>, u32>,
    attributes: Option<Vec<Option<Box<str>>>>,
    write_error: Option<std::io::Error>,
    /// Rows pushed as deleted items ([`crate::fold`]).
    deleted: Vec<u32>,
    /// The journal position the generation holds (a fold's; an import's is the journal's end).
    journal_seq: Option<u64>,
}

/// What a successful import produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    /// The new generation's directory.
    pub generation: PathBuf,
    /// Its metadata.
    pub meta: CatalogMeta,
}

impl CatalogBuilder {
    /// Starts a new catalog generation of `dim`-dimensional items in `data_dir`.
    pub fn new(data_dir: &Path, dim: usize, normalize: bool) -> Result<Self, CatalogError> {
        if dim == 0 {
            return Err(CatalogError::Input("embedding dimension is zero".into()));
        }
        let lock = PublishLock::acquire(data_dir, "import items")?;
        let generations = Generations::new(catalog_root(data_dir));
        let staging = generations.stage().map_err(io_err(generations.root()))?;
        let path = staging.path().join("embeddings.f32");
        let embeddings =
            BufWriter::with_capacity(1 << 20, fs::File::create(&path).map_err(io_err(&path))?);
        Ok(Self {
            _lock: lock,
            data_dir: data_dir.to_path_buf(),
            generations,
            staging,
            embeddings,
            dim,
            normalize,
            ids: Vec::new(),
            rows_by_id: HashMap::new(),
            attributes: None,
            write_error: None,
            deleted: Vec::new(),
            journal_seq: None,
        })
    }

    /// Reads item attributes from `path` (see [`crate::attributes`]) for the rows pushed so far;
    /// they are stored with the generation on [`commit`](Self::commit). Fails if no id of the
    /// file is in the catalog.
    pub fn attach_attributes(
        &mut self,
        path: &Path,
        id_col: Option<&str>,
    ) -> Result<AttributesSummary, CatalogError> {
        let rows_by_id = &self.rows_by_id;
        let (by_row, summary) = read_attributes(path, id_col, self.ids.len(), |id| {
            rows_by_id.get(id).map(|&r| r as usize)
        })?;
        if summary.matched == 0 {
            return Err(CatalogError::Input(format!(
                "{}: none of its {} ids is an imported item (is `attributes_id_col` right?)",
                path.display(),
                summary.rows
            )));
        }
        self.attributes = Some(by_row);
        Ok(summary)
    }

    /// Number of rows pushed so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no row was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Appends one item; `vector` is normalised in place if the builder normalises. The error
    /// says what is wrong with the row; importers add which file and line it came from. A disk
    /// write failure is reported by [`commit`](Self::commit).
    pub fn push(&mut self, id: &str, vector: &mut [f32]) -> Result<(), RowError> {
        if id.is_empty() {
            return Err(RowError::EmptyId);
        }
        if let Some(&first) = self.rows_by_id.get(id) {
            return Err(RowError::Duplicate {
                id: id.to_owned(),
                first_row: first as usize,
            });
        }
        check_vector(vector, self.dim, self.normalize)?;
        self.append(id, vector).map(|_| ())
    }

    /// Appends a row of a catalog being folded ([`crate::fold`]): its vector was checked (and
    /// normalised) when it joined, so it is written as it is; `deleted` keeps a deleted item for
    /// its vector only.
    pub(crate) fn push_folded(
        &mut self,
        id: &str,
        vector: &[f32],
        attributes: Option<&str>,
        deleted: bool,
    ) -> Result<(), RowError> {
        let row = self.append(id, vector)?;
        if let Some(text) = attributes {
            let table = self.attributes.get_or_insert_with(Vec::new);
            table.resize(row as usize, None);
            table.push(Some(text.into()));
        }
        if deleted {
            self.deleted.push(row);
        }
        Ok(())
    }

    /// Records that the generation holds the journal's changes up to `seq` (a fold's position;
    /// by default an import supersedes the whole journal).
    pub(crate) fn holds_journal_through(&mut self, seq: u64) {
        self.journal_seq = Some(seq);
    }

    /// Writes `vector` as the next row of `id` (not a duplicate).
    fn append(&mut self, id: &str, vector: &[f32]) -> Result<u32, RowError> {
        if let Some(&first) = self.rows_by_id.get(id) {
            return Err(RowError::Duplicate {
                id: id.to_owned(),
                first_row: first as usize,
            });
        }
        if vector.len() != self.dim {
            return Err(RowError::Dimension {
                expected: self.dim,
                found: vector.len(),
            });
        }
        let row = u32::try_from(self.ids.len()).map_err(|_| RowError::TooMany)?;
        if self.write_error.is_none() {
            let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.write_error = self.embeddings.write_all(&bytes).err();
        }
        let id: Box<str> = id.into();
        self.rows_by_id.insert(id.clone(), row);
        self.ids.push(id);
        Ok(row)
    }

    /// Writes the id files and metadata, syncs everything and publishes the generation.
    pub fn commit(self, source: &str) -> Result<ImportSummary, CatalogError> {
        let Self {
            _lock: _held_until_published,
            data_dir,
            generations,
            staging,
            embeddings,
            dim,
            normalize,
            ids,
            rows_by_id: _,
            mut attributes,
            write_error,
            deleted,
            journal_seq,
        } = self;
        if let Some(attributes) = &mut attributes {
            attributes.resize(ids.len(), None);
        }
        if ids.is_empty() {
            return Err(CatalogError::Input(format!("{source}: no items to import")));
        }
        let dir = staging.path().to_path_buf();
        let emb_path = dir.join("embeddings.f32");
        if let Some(e) = write_error {
            return Err(io_err(&emb_path)(e));
        }
        embeddings
            .into_inner()
            .map_err(|e| io_err(&emb_path)(e.into_error()))?
            .sync_all()
            .map_err(io_err(&emb_path))?;

        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| ids[a as usize].as_bytes().cmp(ids[b as usize].as_bytes()));
        let mut offsets = Vec::with_capacity((ids.len() + 1) * 8);
        let mut bytes = Vec::new();
        offsets.extend(0u64.to_le_bytes());
        for id in &ids {
            bytes.extend_from_slice(id.as_bytes());
            offsets.extend((bytes.len() as u64).to_le_bytes());
        }
        let sorted: Vec<u8> = order.iter().flat_map(|r| r.to_le_bytes()).collect();
        let meta = CatalogMeta {
            format_version: FORMAT_VERSION,
            rows: ids.len(),
            dim,
            normalized: normalize,
            source: source.to_owned(),
            attributes: attributes.is_some(),
            // The imported file is the catalog now: changes journaled before it are superseded.
            journal_seq: match journal_seq {
                Some(seq) => seq,
                None => crate::journal::last_seq(&data_dir)?,
            },
            deleted_rows: deleted.len(),
        };
        if !deleted.is_empty() {
            let bytes: Vec<u8> = deleted.iter().flat_map(|r| r.to_le_bytes()).collect();
            write_synced(&dir.join(DELETED), &bytes)?;
        }
        if let Some(attributes) = &attributes {
            let mut text = Vec::new();
            let mut offsets = Vec::with_capacity((ids.len() + 1) * 8);
            offsets.extend(0u64.to_le_bytes());
            for a in attributes {
                text.extend_from_slice(a.as_deref().unwrap_or("").as_bytes());
                offsets.extend((text.len() as u64).to_le_bytes());
            }
            write_synced(&dir.join("attrs.bin"), &text)?;
            write_synced(&dir.join("attrs.offsets"), &offsets)?;
        }
        let meta_json = serde_json::to_vec_pretty(&meta).expect("metadata serialises");
        for (name, content) in [
            ("ids.bin", &bytes),
            ("ids.offsets", &offsets),
            ("ids.sorted", &sorted),
            ("meta.json", &meta_json),
        ] {
            write_synced(&dir.join(name), content)?;
        }
        let generation = generations
            .publish(staging)
            .map_err(io_err(&catalog_root(&data_dir)))?;
        Ok(ImportSummary { generation, meta })
    }
}

fn write_synced(path: &Path, content: &[u8]) -> Result<(), CatalogError> {
    let mut f = fs::File::create(path).map_err(io_err(path))?;
    f.write_all(content).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

impl pinnersage_core::error::Kind for RowError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        BadInput
    }
}
