//! The batch over columns in memory: the same profiles [`crate::batch`] computes from the stores
//! of a data directory, computed from an event table and item vectors a host holds (the Python
//! package on numpy/Arrow data, the Spark job on one partition of users).
//!
//! Equal to the embedded batch by construction: events are kept in the same window
//! (`now − window_days·86400 ..= now`), deduplicated and ordered per user exactly as the event
//! store keys them (time, then the dedupe hash of item and action; the first of two equal keys
//! wins), events on unknown items are skipped, and each user is clustered and stored by the same
//! routine ([`crate::clustering::UserActions`]).

use std::collections::HashMap;

use pinnersage_core::{Clusterer, CoreError, Embeddings};
use pinnersage_store::events::{check_event_parts, dedupe_hash};
pub use pinnersage_store::profiles::StoredProfile;
use pinnersage_store::settings::{GenerationSettings, SettingsError};
use rayon::prelude::*;

use crate::clustering::UserActions;

/// A column of strings, read by row.
pub trait Strings: Sync {
    /// Number of rows.
    fn len(&self) -> usize;
    /// The string of `row` (`row < len()`).
    fn get(&self, row: usize) -> &str;
    /// Whether the column has no rows.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S: AsRef<str> + Sync> Strings for Vec<S> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn get(&self, row: usize) -> &str {
        self[row].as_ref()
    }
}

/// Strings in Arrow's layout: `offsets` (`len + 1`, non-negative, non-decreasing) into UTF-8 `data`, as a
/// pyarrow `large_string` array holds them (zero-copy from Python).
#[derive(Debug, Clone, Copy)]
pub struct StrColumn<'a> {
    offsets: &'a [i64],
    data: &'a str,
}

impl<'a> StrColumn<'a> {
    /// Validates the layout: offsets are non-negative, never decrease, end within `data`, and every
    /// string is UTF-8 on character boundaries. `name` is the column's name for errors.
    ///
    /// ```
    /// use pinnersage_pipeline::batch::memory::{StrColumn, Strings};
    /// let c = StrColumn::new("user", &[0, 2, 5], b"u1u22").unwrap();
    /// assert_eq!((c.len(), c.get(1)), (2, "u22"));
    /// assert!(StrColumn::new("user", &[0, 3, 2], b"abc").is_err());
    /// ```
    pub fn new(name: &str, offsets: &'a [i64], data: &'a [u8]) -> Result<Self, MemoryError> {
        let bad = |message: String| MemoryError::Column {
            column: name.to_owned(),
            message,
        };
        let Some((&first, _)) = offsets.split_first() else {
            return Err(bad(
                "offsets are empty (a column of n strings has n + 1)".into()
            ));
        };
        let data = std::str::from_utf8(data).map_err(|e| bad(format!("not UTF-8: {e}")))?;
        if first < 0 {
            return Err(bad(format!("offset 0 is {first}")));
        }
        for (row, w) in offsets.windows(2).enumerate() {
            let (a, b) = (w[0], w[1]);
            if b < a || b as u64 > data.len() as u64 || !data.is_char_boundary(b as usize) {
                return Err(bad(format!(
                    "row {row}: offsets {a}..{b} do not delimit a string of {} bytes",
                    data.len()
                )));
            }
        }
        Ok(Self { offsets, data })
    }
}

impl Strings for StrColumn<'_> {
    fn len(&self) -> usize {
        self.offsets.len() - 1
    }
    fn get(&self, row: usize) -> &str {
        &self.data[self.offsets[row] as usize..self.offsets[row + 1] as usize]
    }
}

/// Engagements as columns, one entry per event (row).
pub struct EventTable<'a> {
    /// User ids.
    pub users: &'a dyn Strings,
    /// Item ids.
    pub items: &'a dyn Strings,
    /// Unix seconds.
    pub times: &'a [i64],
    /// Weights (`None`: every event weighs 1).
    pub weights: Option<&'a [f32]>,
    /// Action types (`None`: empty for every event). Part of the dedupe key, as in the store.
    pub actions: Option<&'a dyn Strings>,
}

/// Where the events' embeddings come from.
pub enum Vectors<'a> {
    /// One row per event: the embedding of the event's item, joined upstream (the Spark job).
    /// The events of one item all use the vector of its first event.
    PerEvent(Embeddings<'a>),
    /// An item table: `ids[r]` has embedding row `r`; events on other items are skipped.
    Items {
        /// Item ids, unique.
        ids: &'a dyn Strings,
        /// One row per id.
        embeddings: Embeddings<'a>,
    },
}

/// Profiles of every user with a known item in the window, and what was skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profiles {
    /// `(user, profile)` in the event store's user order.
    pub profiles: Vec<(String, StoredProfile)>,
    /// The same users cut at each variant alpha asked for ([`build_profiles`]), in that order.
    pub variants: Vec<Variant>,
    /// Events in the window (after deduplication).
    pub events: u64,
    /// Of those, events whose item has no embedding (skipped).
    pub unknown_item_events: u64,
    /// Events that repeat an earlier one (same user, time, item and action; dropped).
    pub duplicates: u64,
    /// Users with events in the window but none on a known item (no profile).
    pub users_without_known_items: u64,
}

/// Every user's profile cut at one variant alpha: what the embedded batch stores as the
/// generation's variant ([`crate::batch::BatchConfig::variant_alphas`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variant {
    /// The merge threshold of this cut.
    pub alpha: f64,
    /// `(user, profile)`, the users of [`Profiles::profiles`] in the same order.
    pub profiles: Vec<(String, StoredProfile)>,
}

/// Bad in-memory input; messages name the column and the row.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A column is malformed or the wrong length.
    #[error("column {column:?}: {message}")]
    Column {
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// One event breaks the event store's rules.
    #[error("event row {row}: {message}")]
    Event {
        /// 0-based row.
        row: usize,
        /// What is wrong.
        message: String,
    },
    /// The item table has the same id twice.
    #[error("item row {row}: duplicate item id {id:?} (first at row {first})")]
    DuplicateItem {
        /// 0-based row of the repeat.
        row: usize,
        /// The first row with this id.
        first: usize,
        /// The id.
        id: String,
    },
    /// The generation's settings are out of their domains.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A setting of the run is out of its domain.
    #[error("{0}")]
    Config(String),
    /// Clustering rejected a user's data.
    #[error("user {user:?}: {source}")]
    Cluster {
        /// The user.
        user: String,
        /// The error.
        source: CoreError,
    },
}

/// Most worker threads accepted by [`build_profiles`].
pub const MAX_THREADS: usize = 1024;

/// Computes every user's profile from `events` and `vectors` with `threads` workers (0: all
/// cores, at most [`MAX_THREADS`]), and its variants: the same dendrogram also cut at each of
/// `variant_alphas` (checked, repeats and the settings' own alpha dropped, as the embedded batch
/// does: [`crate::batch::variant_alphas`]). See the module documentation for why it equals the
/// embedded batch.
pub fn build_profiles(
    events: &EventTable<'_>,
    vectors: &Vectors<'_>,
    settings: &GenerationSettings,
    variant_alphas: &[f64],
    threads: usize,
) -> Result<Profiles, MemoryError> {
    settings.validate()?;
    let variant_alphas = crate::batch::variant_alphas(&settings.params, variant_alphas)
        .map_err(MemoryError::Config)?;
    let n = events.users.len();
    let check_len = |column: &str, len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(MemoryError::Column {
                column: column.to_owned(),
                message: format!("has {len} rows, the user column {n}"),
            })
        }
    };
    check_len("item", events.items.len())?;
    check_len("time", events.times.len())?;
    if let Some(w) = events.weights {
        check_len("weight", w.len())?;
    }
    if let Some(a) = events.actions {
        check_len("action", a.len())?;
    }
    // Each event's row in the vector table, and each vector row's item id.
    type Resolve<'r> = Box<dyn Fn(usize) -> Option<usize> + Sync + 'r>;
    type Name<'r> = Box<dyn Fn(usize) -> &'r str + Sync + 'r>;
    let items = events.items;
    let (resolve, name, x): (Resolve<'_>, Name<'_>, Embeddings<'_>) = match vectors {
        Vectors::PerEvent(x) => {
            check_len("embedding", x.rows())?;
            // Every event of an item reads the vector of the item's first event, so that an
            // item is one point of its user's clustering, as in the embedded batch.
            let mut first: HashMap<&str, usize> = HashMap::new();
            let canonical: Vec<usize> = (0..events.items.len())
                .map(|row| *first.entry(events.items.get(row)).or_insert(row))
                .collect();
            // A vector row is the item's first event.
            (
                Box::new(move |row| Some(canonical[row])),
                Box::new(|row| items.get(row)),
                *x,
            )
        }
        Vectors::Items { ids, embeddings } => {
            if ids.len() != embeddings.rows() {
                return Err(MemoryError::Column {
                    column: "id".into(),
                    message: format!(
                        "has {} rows, the embeddings {}",
                        ids.len(),
                        embeddings.rows()
                    ),
                });
            }
            let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
            for row in 0..ids.len() {
                if let Some(first) = by_id.insert(ids.get(row), row) {
                    return Err(MemoryError::DuplicateItem {
                        row,
                        first,
                        id: ids.get(row).to_owned(),
                    });
                }
            }
            (
                Box::new(move |row| by_id.get(items.get(row)).copied()),
                Box::new(|row| ids.get(row)),
                *embeddings,
            )
        }
    };
    if threads > MAX_THREADS {
        return Err(MemoryError::Config(format!(
            "threads must be at most {MAX_THREADS} (0: one per core), got {threads}"
        )));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| MemoryError::Config(format!("cannot start {threads} threads: {e}")))?;
    pool.install(|| run(events, &*resolve, &*name, x, settings, &variant_alphas))
}

/// One event in the window, keyed as the store keys it.
struct Keyed {
    row: usize,
    time: i64,
    hash: u64,
}

fn run<'n>(
    events: &EventTable<'_>,
    resolve: &(dyn Fn(usize) -> Option<usize> + Sync),
    name: &(dyn Fn(usize) -> &'n str + Sync),
    x: Embeddings<'_>,
    settings: &GenerationSettings,
    variant_alphas: &[f64],
) -> Result<Profiles, MemoryError> {
    let window = settings.window();
    let weight = |row: usize| events.weights.map_or(1.0, |w| w[row]);
    let action = |row: usize| events.actions.map_or("", |a| a.get(row));
    // Validate every event as an import would and key the window's.
    let keyed: Vec<Keyed> = (0..events.times.len())
        .into_par_iter()
        .map_init(Vec::new, |scratch, row| {
            let (user, item, action) = (events.users.get(row), events.items.get(row), action(row));
            let time = events.times[row];
            check_event_parts(user, item, None, action, weight(row)).map_err(|e| {
                MemoryError::Event {
                    row,
                    message: e.to_string(),
                }
            })?;
            let hash = dedupe_hash(None, item, action, scratch);
            Ok::<_, MemoryError>(window.contains(&time).then_some(Keyed { row, time, hash }))
        })
        .filter_map(Result::transpose)
        .collect::<Result<_, _>>()?;
    // The store's key order: user (length first, as its length-prefixed keys sort), time,
    // hash; equal keys keep input order so the first one wins.
    let user_key = |k: &Keyed| {
        let u = events.users.get(k.row);
        (u.len(), u.as_bytes())
    };
    let mut keyed = keyed;
    keyed.par_sort_by(|a, b| {
        user_key(a)
            .cmp(&user_key(b))
            .then(a.time.cmp(&b.time))
            .then(a.hash.cmp(&b.hash))
            .then(a.row.cmp(&b.row))
    });
    let before = keyed.len();
    keyed.dedup_by(|b, a| a.time == b.time && a.hash == b.hash && user_key(a) == user_key(b));
    let duplicates = (before - keyed.len()) as u64;
    let users: Vec<&[Keyed]> = keyed.chunk_by(|a, b| user_key(a) == user_key(b)).collect();
    let (now, lambda) = (settings.now, settings.params.lambda);
    // The generation's own cut first, then the variants.
    let alphas: Vec<f64> = std::iter::once(settings.params.alpha)
        .chain(variant_alphas.iter().copied())
        .collect();
    let results: Vec<(String, Vec<StoredProfile>, u64)> = users
        .par_iter()
        .map_init(
            || {
                let clusterer = Clusterer::new(settings.params.clone());
                (clusterer.expect("validated above"), UserActions::default())
            },
            |(clusterer, actions), user_events| {
                actions.clear();
                for (k, e) in user_events.iter().enumerate() {
                    if let Some(vector) = resolve(e.row) {
                        actions.push(k, vector, e.time, weight(e.row));
                    }
                }
                let user = events.users.get(user_events[0].row).to_owned();
                let unknown = (user_events.len() - actions.len()) as u64;
                let cuts = actions.cluster_at(clusterer, &x, now, &alphas);
                let cuts = cuts.map_err(|source| MemoryError::Cluster {
                    user: user.clone(),
                    source,
                })?;
                let stored = (cuts.iter())
                    .map(|p| actions.to_stored(p, now, lambda, name))
                    .collect();
                Ok((user, stored, unknown))
            },
        )
        .collect::<Result<_, MemoryError>>()?;
    let mut out = Profiles {
        events: keyed.len() as u64,
        duplicates,
        variants: (variant_alphas.iter())
            .map(|&alpha| Variant {
                alpha,
                profiles: Vec::new(),
            })
            .collect(),
        ..Profiles::default()
    };
    for (user, cuts, unknown) in results {
        out.unknown_item_events += unknown;
        let mut cuts = cuts.into_iter();
        let Some(own) = cuts.next() else {
            out.users_without_known_items += 1;
            continue;
        };
        for (variant, cut) in out.variants.iter_mut().zip(cuts) {
            variant.profiles.push((user.clone(), cut));
        }
        out.profiles.push((user, own));
    }
    Ok(out)
}

impl pinnersage_core::error::Kind for MemoryError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        BadInput
    }
}
