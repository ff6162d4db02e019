//! What an evaluation reads: item embeddings, an engagement log and, optionally, item attributes
//! for the report's examples. [`EvalData`] holds them in memory (any host can build one);
//! [`EvalFiles::load`] reads them from the files `pinnersage eval` takes, through the same readers
//! and error messages as `import items` and `import events`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pinnersage_catalog::attributes::{ByRow, read_attributes};
use pinnersage_catalog::catalog::Catalog;
use pinnersage_catalog::items::{ItemsOptions, import_items};
use pinnersage_catalog::npy;
use pinnersage_pipeline::data_in::import_events::{EventColumns, ImportOptions, read_events};
use pinnersage_pipeline::data_in::movielens;

use crate::error::EvalError;

/// One logged engagement, by external ids.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEngagement {
    /// The user id.
    pub user: String,
    /// The item id.
    pub item: String,
    /// Unix seconds.
    pub time: i64,
}

/// Everything an evaluation needs, in memory.
#[derive(Debug, Clone, Default)]
pub struct EvalData {
    /// Item ids, one per embedding row (unique).
    pub item_ids: Vec<String>,
    /// Row-major `item_ids.len() x dim` embeddings.
    pub embeddings: Vec<f32>,
    /// Embedding dimension.
    pub dim: usize,
    /// Where the embeddings came from, for the report (a path or a model name).
    pub embeddings_source: String,
    /// The engagements to split and score.
    pub engagements: Vec<LoggedEngagement>,
    /// Engagements left out before this (for example below a rating threshold), for the report.
    pub filtered_out: u64,
    /// Item attributes as one JSON object text per row, for the report's example users.
    pub item_meta: Option<ByRow>,
}

/// The input files of an evaluation and how to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalFiles {
    /// Engagements: CSV/TSV/JSON lines/Parquet with user, item and time columns.
    pub events: PathBuf,
    /// Column names of the engagements file.
    pub columns: EventColumns,
    /// Engagements with a smaller weight are dropped (`f32::NEG_INFINITY`: keep all).
    pub min_weight: f32,
    /// Item embeddings: an NPY matrix (with `ids`), or Parquet / CSV as `import items` reads them.
    pub embeddings: PathBuf,
    /// For NPY embeddings: item ids, one per line, in row order.
    pub ids: Option<PathBuf>,
    /// Item attributes (CSV/TSV with a header, JSON lines or Parquet) for the example users.
    pub items_meta: Option<PathBuf>,
    /// The id column of `items_meta` (default: id, item or item_id).
    pub items_meta_id_col: Option<String>,
}

impl EvalFiles {
    /// The MovieLens layout ([`movielens`]): `DIR/ratings.csv` (userId, movieId, rating,
    /// timestamp), the embeddings file `embeddings` in `DIR` with `DIR/item_emb_movieIds.txt`,
    /// ratings below `min_rating` dropped, and titles from `DIR/movies.csv` when present.
    pub fn movielens(dir: &Path, embeddings: &str, min_rating: f32) -> Self {
        Self {
            events: dir.join(movielens::RATINGS),
            columns: EventColumns {
                user: "userId".into(),
                item: "movieId".into(),
                time: "timestamp".into(),
                weight: "rating".into(),
                ..EventColumns::default()
            },
            min_weight: min_rating,
            embeddings: dir.join(embeddings),
            ids: Some(dir.join(movielens::EMBEDDING_IDS)),
            items_meta: Some(dir.join(movielens::MOVIES)).filter(|p| p.exists()),
            items_meta_id_col: Some("movieId".into()),
        }
    }

    /// Reads and validates every file; errors name the file and the line or row.
    pub fn load(&self) -> Result<EvalData, EvalError> {
        let (item_ids, embeddings, dim) = self.read_items()?;
        let row_of = row_index(&item_ids).map_err(|(row, id)| {
            EvalError::Input(format!(
                "{}: line {}: duplicate id {id:?}",
                self.ids.as_deref().unwrap_or(&self.embeddings).display(),
                row + 1
            ))
        })?;
        let item_meta = match &self.items_meta {
            Some(path) => Some(
                read_attributes(
                    path,
                    self.items_meta_id_col.as_deref(),
                    item_ids.len(),
                    |id| row_of.get(id).map(|&r| r as usize),
                )
                .map_err(input)?
                .0,
            ),
            None => None,
        };
        let options = ImportOptions {
            columns: self.columns.clone(),
            skip_invalid: false,
        };
        let (events, _) = read_events(&self.events, &options).map_err(input)?;
        let mut filtered_out = 0;
        let mut engagements = Vec::with_capacity(events.len());
        for e in events {
            if e.weight < self.min_weight {
                filtered_out += 1;
                continue;
            }
            engagements.push(LoggedEngagement {
                user: e.user,
                item: e.item,
                time: e.time,
            });
        }
        Ok(EvalData {
            item_ids,
            embeddings,
            dim,
            embeddings_source: self.embeddings.display().to_string(),
            engagements,
            filtered_out,
            item_meta,
        })
    }

    /// Item ids and row-major embeddings: NPY with an ids file, or any format `import items`
    /// reads (through a throw-away catalog, so the same validation and messages apply).
    fn read_items(&self) -> Result<(Vec<String>, Vec<f32>, usize), EvalError> {
        let npy = pinnersage_catalog::extension(&self.embeddings).as_deref() == Some("npy");
        if !npy {
            if let Some(ids) = &self.ids {
                return Err(EvalError::Input(format!(
                    "{}: `ids` is only for NPY embeddings; Parquet and CSV rows carry their own id",
                    ids.display()
                )));
            }
            let scratch =
                std::env::temp_dir().join(format!("pinnersage-eval-items-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&scratch);
            let read = import_items(&scratch, &self.embeddings, &ItemsOptions::default())
                .and_then(|_| Catalog::open(&scratch))
                .map(|catalog| {
                    let ids = (0..catalog.rows())
                        .map(|r| catalog.id(r).to_owned())
                        .collect();
                    (ids, catalog.embeddings().to_vec(), catalog.dim())
                });
            let _ = std::fs::remove_dir_all(&scratch);
            return read.map_err(input);
        }
        let Some(ids_path) = &self.ids else {
            return Err(EvalError::Input(format!(
                "{}: NPY embeddings need `ids`, a file of one item id per line, in row order",
                self.embeddings.display()
            )));
        };
        let matrix = npy::read(&self.embeddings)
            .and_then(npy::NpyArray::into_f32_matrix)
            .map_err(input)?;
        let ids_text = std::fs::read_to_string(ids_path)
            .map_err(|e| EvalError::Input(format!("{}: {e}", ids_path.display())))?;
        let ids: Vec<String> = ids_text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if ids.len() != matrix.rows {
            return Err(EvalError::Input(format!(
                "{} has {} ids but {} has {} rows",
                ids_path.display(),
                ids.len(),
                self.embeddings.display(),
                matrix.rows
            )));
        }
        Ok((ids, matrix.data, matrix.cols))
    }
}

/// Item id -> row; the first duplicate as `(row, id)`.
pub(crate) fn row_index(ids: &[String]) -> Result<HashMap<&str, u32>, (usize, &str)> {
    let mut row_of = HashMap::with_capacity(ids.len());
    for (row, id) in ids.iter().enumerate() {
        if row_of.insert(id.as_str(), row as u32).is_some() {
            return Err((row, id));
        }
    }
    Ok(row_of)
}

fn input(e: impl std::fmt::Display) -> EvalError {
    EvalError::Input(e.to_string())
}
