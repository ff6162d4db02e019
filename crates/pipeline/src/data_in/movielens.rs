//! The MovieLens layout (GroupLens' `ratings.csv` and `movies.csv`, plus the title embeddings
//! pinnersage bundles beside them) and the step that turns ratings into engagements: the
//! quickstart and `eval movielens` both read MovieLens through here.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::import_events::ImportError;

/// Ratings: `userId,movieId,rating,timestamp` with a header.
pub const RATINGS: &str = "ratings.csv";
/// Movies: `movieId,title,genres` with a header (item attributes).
pub const MOVIES: &str = "movies.csv";
/// The bundled MiniLM title embeddings, one row per line of [`EMBEDDING_IDS`].
pub const EMBEDDINGS: &str = "item_emb_minilm_l6_v2.npy";
/// The movieId of every embedding row.
pub const EMBEDDING_IDS: &str = "item_emb_movieIds.txt";
/// Ratings at or above this count as engagements (MovieLens' 0.5–5 star scale).
pub const MIN_RATING: f64 = 3.5;

/// What [`positive_ratings`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositiveRatings {
    /// Ratings at or above the threshold, written as events.
    pub kept: u64,
    /// The latest timestamp of any rating (kept or not), as written (after any shift).
    pub latest: i64,
    /// Seconds added to every timestamp (0 unless `ends_at` was given).
    pub shift: i64,
}

/// Writes the ratings >= `min_rating` of a MovieLens `ratings.csv` as an events CSV
/// (`user,item,timestamp,action`, action `rating`, weight 1) that `import events` reads with its
/// default columns. With `ends_at`, every timestamp moves by the same offset so that the latest
/// rating falls at `ends_at` (the data then looks live: its last day is today). Errors name the
/// file and the line.
pub fn positive_ratings(
    ratings: &Path,
    out: &Path,
    min_rating: f64,
    ends_at: Option<i64>,
) -> Result<PositiveRatings, ImportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Io { path, source }
    };
    let mut reader = csv::Reader::from_path(ratings)
        .map_err(|e| ImportError::Input(format!("{}: {e}", ratings.display())))?;
    let mut positive: Vec<(String, String, i64)> = Vec::new();
    let mut latest = i64::MIN;
    for (k, record) in reader.records().enumerate() {
        let line = k + 2;
        let bad =
            |what: &str| ImportError::Input(format!("{}: line {line}: {what}", ratings.display()));
        let record = record.map_err(|e| bad(&e.to_string()))?;
        let field = |i: usize| {
            record
                .get(i)
                .ok_or_else(|| bad("expected userId,movieId,rating,timestamp"))
        };
        let rating: f64 = field(2)?
            .trim()
            .parse()
            .map_err(|_| bad("rating is not a number"))?;
        let time: i64 = field(3)?
            .trim()
            .parse()
            .map_err(|_| bad("timestamp is not an integer"))?;
        latest = latest.max(time);
        if rating >= min_rating {
            positive.push((
                field(0)?.trim().to_owned(),
                field(1)?.trim().to_owned(),
                time,
            ));
        }
    }
    if positive.is_empty() {
        return Err(ImportError::Input(format!(
            "{}: no ratings >= {min_rating}",
            ratings.display()
        )));
    }
    let shift = ends_at.map_or(0, |end| end - latest);
    let mut writer = BufWriter::new(fs::File::create(out).map_err(io(out))?);
    writeln!(writer, "user,item,timestamp,action").map_err(io(out))?;
    for (user, item, time) in &positive {
        writeln!(writer, "{user},{item},{},rating", time + shift).map_err(io(out))?;
    }
    writer.flush().map_err(io(out))?;
    Ok(PositiveRatings {
        kept: positive.len() as u64,
        latest: latest + shift,
        shift,
    })
}
