//! Item embeddings learned from engagements alone (`pinnersage embed`), for teams with logs but
//! no item embeddings: the event store's users in a window become a binary user x item matrix
//! from which a [`Learner`] (truncated SVD or implicit ALS) gives every engaged item an
//! embedding, written as an NPY matrix and an ids file that `import items` reads.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use pinnersage_catalog::npy;
use pinnersage_core::importance::SECONDS_PER_DAY;
use pinnersage_core::learned::Learner;
use pinnersage_core::progress::Progress;
use pinnersage_store::events::{EventStore, EventStoreError};

/// The NPY matrix [`write`] creates in the output directory.
pub const EMBEDDINGS_FILE: &str = "items.npy";
/// The ids file (one item id per line, in row order) [`write`] creates beside it.
pub const IDS_FILE: &str = "ids.txt";

/// Settings of [`learn`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbedOptions {
    /// End of the window, unix seconds.
    pub now: i64,
    /// Days of engagements used.
    pub window_days: u32,
    /// Items engaged by fewer distinct users get no embedding (too little signal).
    pub min_users: usize,
    /// The method, with its dimension and seed (the result is deterministic for it).
    pub learner: Learner,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            now: 0,
            window_days: 365,
            min_users: 2,
            learner: Learner::default(),
        }
    }
}

/// Learned item embeddings, row `i` for `ids[i]`, unit length.
#[derive(Debug, Clone, PartialEq)]
pub struct Learned {
    /// Item ids in row order.
    pub ids: Vec<String>,
    /// Row-major `ids.len() x dim` values.
    pub vectors: Vec<f32>,
    /// Columns.
    pub dim: usize,
    /// Users with at least one engagement on a kept item.
    pub users: usize,
    /// Distinct (user, item) engagements used.
    pub engagements: usize,
    /// Items left out for fewer than `min_users` users.
    pub rare_items: usize,
}

/// Errors of [`learn`] and [`write`].
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The event store failed.
    #[error(transparent)]
    Events(#[from] EventStoreError),
    /// A setting or the data cannot give embeddings.
    #[error("{0}")]
    Input(String),
    /// Writing the output failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Learns embeddings for the items of the data directory's event store engaged in the window
/// `(now − window_days, now]` by at least `min_users` users. Progress: events read, then the
/// method's own phases (ALS: its iterations).
pub fn learn(
    data_dir: &Path,
    options: &EmbedOptions,
    progress: &dyn Progress,
) -> Result<Learned, EmbedError> {
    if options.learner.dim() == 0 {
        return Err(EmbedError::Input("`dim` must be at least 1".into()));
    }
    if options.window_days == 0 {
        return Err(EmbedError::Input("`window_days` must be at least 1".into()));
    }
    let store = EventStore::open(data_dir)?;
    let from = options.now - i64::from(options.window_days) * SECONDS_PER_DAY as i64 + 1;
    progress.phase("events read", store.approximate_len() as u64);
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut ids: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<u32>> = Vec::new();
    for user in store.users(from, options.now) {
        let (_, events) = user?;
        progress.advance(events.len() as u64);
        let mut row: Vec<u32> = events
            .iter()
            .map(|e| {
                *index.entry(e.item.clone()).or_insert_with(|| {
                    ids.push(e.item.clone());
                    ids.len() as u32 - 1
                })
            })
            .collect();
        row.sort_unstable();
        row.dedup();
        rows.push(row);
    }
    progress.finish();
    // Items with too few users: renumber the rest densely.
    let mut users_of = vec![0usize; ids.len()];
    rows.iter()
        .flatten()
        .for_each(|&i| users_of[i as usize] += 1);
    let mut new_index = vec![u32::MAX; ids.len()];
    let mut kept_ids = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        if users_of[i] >= options.min_users.max(1) {
            new_index[i] = kept_ids.len() as u32;
            kept_ids.push(id);
        }
    }
    let rare_items = users_of.len() - kept_ids.len();
    let rows: Vec<Vec<u32>> = rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|i| new_index[i as usize])
                .filter(|&i| i != u32::MAX)
                .collect::<Vec<u32>>()
        })
        .filter(|row| !row.is_empty())
        .collect();
    if kept_ids.is_empty() {
        return Err(EmbedError::Input(format!(
            "no item in the window has {} or more users: import events first, or lower \
             --min-users or widen --window-days",
            options.min_users
        )));
    }
    progress.note(&format!(
        "{} of {} users x {} items",
        options.learner.describe(),
        rows.len(),
        kept_ids.len()
    ));
    let (vectors, dim) = options
        .learner
        .item_embeddings(&rows, kept_ids.len(), progress);
    Ok(Learned {
        engagements: rows.iter().map(Vec::len).sum(),
        users: rows.len(),
        ids: kept_ids,
        vectors,
        dim,
        rare_items,
    })
}

/// Writes `learned` into `dir` (created if missing) as [`EMBEDDINGS_FILE`] and [`IDS_FILE`];
/// returns their paths.
pub fn write(learned: &Learned, dir: &Path) -> Result<(PathBuf, PathBuf), EmbedError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EmbedError::Io { path, source }
    };
    if let Some(id) = learned.ids.iter().find(|id| id.contains(['\n', '\r'])) {
        return Err(EmbedError::Input(format!(
            "item id {id:?} holds a line break, which an ids file cannot"
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (matrix, ids) = (dir.join(EMBEDDINGS_FILE), dir.join(IDS_FILE));
    npy::write_f32_matrix(&matrix, &learned.vectors, learned.ids.len(), learned.dim)
        .map_err(|e| EmbedError::Input(format!("{}: {e}", matrix.display())))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&ids).map_err(io(&ids))?);
    for id in &learned.ids {
        writeln!(out, "{id}").map_err(io(&ids))?;
    }
    out.flush().map_err(io(&ids))?;
    Ok((matrix, ids))
}

impl pinnersage_core::error::Kind for EmbedError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::{self, *};
        match self {
            Self::Events(e) => e.kind(),
            Self::Input(_) => BadInput,
            Self::Io { source, .. } => ErrorKind::of_io(source),
        }
    }
}
