//! Profile generations shipped to a fleet of replicas as files.
//!
//! One publisher (the embedded batch's `--out`, or the Spark job) ships profile tables into a
//! shared directory with [`ship_profiles`]: `SHARED/gen-NNNNNN/` holds the Parquet files and a
//! [`Manifest`] of the parameters they were computed with, and `SHARED/CURRENT` names the newest
//! (the [`Generations`] layout: a reader never sees a half-written generation when the shared
//! directory is one file system; an rsync copies the `gen-*` directory before `CURRENT`). Every
//! replica calls [`import_shipped`] periodically: a generation it has not imported yet is
//! validated and published into its own data directory by [`import_profiles`], which moves the
//! online boundary to the manifest's `now` like a local batch.
//!
//! Shipped with `partitions`, a generation holds one file per partition of the fleet's routing
//! rule ([`partition_of`]) and the popular list counted over every user, so a replica reads only
//! the files of the partitions it holds and still has the whole generation's fallback.

use std::fs;
use std::path::{Path, PathBuf};

use std::collections::HashMap;

use arrow_array::UInt32Array;
use pinnersage_catalog::parquet_io::{
    ParquetIoError, ParquetReader, ParquetWriter, number_column, text_column, text_list_column,
};
use pinnersage_core::ProfileParams;
use pinnersage_core::hash::{Share, partition_of};
use pinnersage_generation::{Generations, replace_file};
use serde::{Deserialize, Serialize};

use pinnersage_store::settings::{GenerationSettings, SettingsError};

use super::import_profiles::{
    ImportProfilesError, ImportProfilesReport, import_profiles_of, parquet_files,
};
use super::profile_table::{ALPHA, REQUIRED_COLUMNS};
use crate::batch::POPULAR_ITEMS;

/// The manifest's file name inside a shipped generation.
pub const MANIFEST: &str = "manifest.json";
/// The file in a replica's data directory naming the shipped generation it imported last.
pub const IMPORTED: &str = "shipped.json";

/// What a shipped generation holds and was computed with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ManifestFile", into = "ManifestFile")]
pub struct Manifest {
    /// What the profiles were computed with: `now` is the replicas' online boundary, alpha and
    /// lambda the online path's.
    pub settings: GenerationSettings,
    /// The Parquet files of the generation, in order.
    pub files: Vec<String>,
    /// `Some(P)`: the generation is partitioned, `files[p]` holding exactly the users of
    /// partition `p` of `P`.
    pub partitions: Option<u32>,
    /// The generation's popular list counted over every user (partitioned generations, whose
    /// replicas read only some users); `None`: counted by the import.
    pub popular: Option<Vec<(String, u64)>>,
    /// When it was shipped (unix nanoseconds): with the directory name, the generation's
    /// identity, so a recreated shared directory is never mistaken for one already imported.
    pub shipped_at: u128,
}

/// [`Manifest`] as its file holds it: the settings' fields flat beside the files, and nothing
/// else.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    now: i64,
    window_days: u32,
    alpha: f64,
    lambda: f64,
    max_actions: usize,
    files: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partitions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    popular: Option<Vec<(String, u64)>>,
    shipped_at: u128,
}

impl From<ManifestFile> for Manifest {
    fn from(f: ManifestFile) -> Self {
        let params = ProfileParams {
            alpha: f.alpha,
            lambda: f.lambda,
            max_actions: f.max_actions,
        };
        Self {
            settings: GenerationSettings {
                now: f.now,
                window_days: f.window_days,
                params,
            },
            files: f.files,
            partitions: f.partitions,
            popular: f.popular,
            shipped_at: f.shipped_at,
        }
    }
}

impl From<Manifest> for ManifestFile {
    fn from(m: Manifest) -> Self {
        let GenerationSettings {
            now,
            window_days,
            params,
        } = m.settings;
        Self {
            now,
            window_days,
            alpha: params.alpha,
            lambda: params.lambda,
            max_actions: params.max_actions,
            files: m.files,
            partitions: m.partitions,
            popular: m.popular,
            shipped_at: m.shipped_at,
        }
    }
}

/// Why shipping or importing a shipped generation failed; nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A manifest is unreadable or invalid.
    #[error("{}: {message}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An input is not a profile table.
    #[error(transparent)]
    Parquet(#[from] ParquetIoError),
    /// The profiles were refused by the replica's import (the first bad row is named).
    #[error(transparent)]
    Import(#[from] ImportProfilesError),
    /// The settings recorded with the profiles are out of their domains.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// No profile file was given.
    #[error("no profile files given")]
    NoFiles,
    /// The partition count is out of range.
    #[error("partitions must be in 1..=1024, got {0}")]
    Partitions(u32),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ShipError + '_ {
    move |source| ShipError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`ship_profiles`] published.
#[derive(Debug, Clone, PartialEq)]
pub struct ShipReport {
    /// The new generation's directory in the shared location.
    pub generation: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Copies the profile tables in `inputs` (files, or directories of `*.parquet` such as a Spark
/// output) into a new generation of `shared` with a manifest of `settings` stamped `shipped_at`
/// (unix nanoseconds, the host's clock: part of the generation's identity), and makes it the
/// current one. With `partitions`, the rows are split into one file per partition of the routing
/// rule and the popular list is counted over every user. Only the schema is checked here (the
/// rows are validated by every replica against its catalog, which this host may not have). One
/// publisher per shared directory.
pub fn ship_profiles(
    shared: &Path,
    inputs: &[PathBuf],
    settings: &GenerationSettings,
    shipped_at: u128,
    partitions: Option<u32>,
) -> Result<ShipReport, ShipError> {
    settings.validate()?;
    if let Some(p) = partitions.filter(|p| !(1..=1024).contains(p)) {
        return Err(ShipError::Partitions(p));
    }
    let files = parquet_files(inputs)?;
    if files.is_empty() {
        return Err(ShipError::NoFiles);
    }
    for file in &files {
        let reader = ParquetReader::open(file)?;
        for name in REQUIRED_COLUMNS {
            reader.require_column(name)?;
        }
    }
    let generations = Generations::new(shared);
    let staging = generations.stage().map_err(io_at(shared))?;
    let (names, popular) = match partitions {
        Some(count) => {
            let (names, popular) = split_by_partition(&files, staging.path(), count)?;
            (names, Some(popular))
        }
        None => (copy_files(&files, staging.path())?, None),
    };
    let manifest = Manifest {
        settings: settings.clone(),
        files: names,
        partitions,
        popular,
        shipped_at,
    };
    let path = staging.path().join(MANIFEST);
    replace_file(
        &path,
        &serde_json::to_vec_pretty(&manifest).expect("plain data"),
    )
    .map_err(io_at(&path))?;
    let generation = generations.publish(staging).map_err(io_at(shared))?;
    Ok(ShipReport {
        generation,
        manifest,
    })
}

/// Copies `files` into `dir` as `part-NNNNN.parquet`, synced; returns their names.
fn copy_files(files: &[PathBuf], dir: &Path) -> Result<Vec<String>, ShipError> {
    let mut names = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let name = format!("part-{i:05}.parquet");
        let to = dir.join(&name);
        fs::copy(file, &to).map_err(io_at(file))?;
        fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(io_at(&to))?;
        names.push(name);
    }
    Ok(names)
}

/// Items with a count, most counted first.
type ItemCounts = Vec<(String, u64)>;

/// Writes the rows of `files` into `dir` as `partition-NNNNN.parquet`, one file per partition of
/// `count` (each row to its user's partition, in order, so a user's rows stay together; a
/// partition without users gets an empty file); returns their names and the popular list
/// counted over every user (each member once per user, ties by id).
fn split_by_partition(
    files: &[PathBuf],
    dir: &Path,
    count: u32,
) -> Result<(Vec<String>, ItemCounts), ShipError> {
    let names: Vec<String> = (0..count)
        .map(|p| format!("partition-{p:05}.parquet"))
        .collect();
    let mut writers: Vec<Option<ParquetWriter>> = (0..count).map(|_| None).collect();
    let mut popularity: HashMap<String, u64> = HashMap::new();
    let mut schema = None;
    for file in files {
        let mut reader = ParquetReader::open(file)?;
        let schema = schema.get_or_insert_with(|| reader.schema().clone());
        while let Some(batch) = reader.next_batch() {
            let (first, batch) = batch?;
            let users = text_column(&batch, "user")?;
            let members = text_list_column(&batch, "members")?;
            // A variant's rows (a non-null alpha) are the same users' items again: the popular
            // list counts the generation's own rows only.
            let variant = match batch.column_by_name(ALPHA) {
                Some(_) => number_column(&batch, ALPHA)?,
                None => vec![None; batch.num_rows()],
            };
            let mut rows: Vec<Vec<u32>> = vec![Vec::new(); count as usize];
            for (i, (user, members)) in users.iter().zip(members).enumerate() {
                let user = user.as_deref().ok_or_else(|| ImportProfilesError::Row {
                    file: file.clone(),
                    row: first + i,
                    message: "user is null".into(),
                })?;
                rows[partition_of(user, count) as usize].push(i as u32);
                if variant[i].is_some() {
                    continue;
                }
                for item in members.into_iter().flatten().flatten() {
                    *popularity.entry(item).or_default() += 1;
                }
            }
            for (p, rows) in rows.into_iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                let part = arrow_select::take::take_record_batch(&batch, &UInt32Array::from(rows))
                    .map_err(|e| ParquetIoError::Failed {
                        path: file.clone(),
                        message: e.to_string(),
                    })?;
                let writer = match &mut writers[p] {
                    Some(w) => w,
                    slot => slot.insert(ParquetWriter::with_schema(
                        &dir.join(&names[p]),
                        schema.clone(),
                    )?),
                };
                writer
                    .write_batch(&part)
                    .map_err(|e| ParquetIoError::Failed {
                        path: file.clone(),
                        message: format!("columns unlike the first file's: {e}"),
                    })?;
            }
        }
    }
    let schema = schema.expect("at least one file");
    for (p, writer) in writers.into_iter().enumerate() {
        match writer {
            Some(w) => w.finish()?,
            None => ParquetWriter::with_schema(&dir.join(&names[p]), schema.clone())?.finish()?,
        };
    }
    let mut popular: Vec<(String, u64)> = popularity.into_iter().collect();
    popular.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    popular.truncate(POPULAR_ITEMS);
    Ok((names, popular))
}

/// The current shipped generation of `shared` and its manifest, if one was ever shipped.
pub fn current_shipped(shared: &Path) -> Result<Option<(PathBuf, Manifest)>, ShipError> {
    let Some(dir) = Generations::new(shared).current().map_err(io_at(shared))? else {
        return Ok(None);
    };
    let path = dir.join(MANIFEST);
    let text = fs::read(&path).map_err(io_at(&path))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| ShipError::Manifest {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if let Some(p) = manifest.partitions
        && manifest.files.len() != p as usize
    {
        return Err(ShipError::Manifest {
            path,
            message: format!(
                "{} files for {p} partitions (a partitioned generation has one file per partition)",
                manifest.files.len()
            ),
        });
    }
    for name in &manifest.files {
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(ShipError::Manifest {
                path,
                message: format!("file {name:?} is not a plain file name"),
            });
        }
    }
    Ok(Some((dir, manifest)))
}

/// The identity of a shipped generation: its directory name and when it was shipped.
fn identity(dir: &Path, manifest: &Manifest) -> String {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    format!("{name}@{}", manifest.shipped_at)
}

/// The identity of the shipped generation `data_dir` imported last, if any.
pub fn imported_identity(data_dir: &Path) -> Option<String> {
    let text = fs::read(data_dir.join(IMPORTED)).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&text).ok()?;
    value["generation"].as_str().map(str::to_owned)
}

/// The identity of the current shipped generation of `shared`, if it is one `data_dir` has not
/// imported yet.
pub fn pending_shipped(data_dir: &Path, shared: &Path) -> Result<Option<String>, ShipError> {
    Ok(current_shipped(shared)?
        .map(|(dir, manifest)| identity(&dir, &manifest))
        .filter(|id| imported_identity(data_dir).as_ref() != Some(id)))
}

/// Imports the current shipped generation of `shared` into `data_dir` unless it was imported
/// already, keeping the users of `share` (a fleet replica's partitions; the popular list stays
/// the whole generation's); `Ok(None)` when there is nothing new. A generation partitioned like
/// `share` is read only in the held partitions' files; one partitioned otherwise is read whole
/// and filtered. The import is recorded only after the local generation is published, so a crash
/// in between imports it again (an equal generation).
pub fn import_shipped(
    data_dir: &Path,
    shared: &Path,
    share: &Share,
) -> Result<Option<ImportProfilesReport>, ShipError> {
    let Some((dir, manifest)) = current_shipped(shared)? else {
        return Ok(None);
    };
    let id = identity(&dir, &manifest);
    if imported_identity(data_dir).as_ref() == Some(&id) {
        return Ok(None);
    }
    let split_like_share = manifest.partitions == Some(share.count);
    let files: Vec<PathBuf> = (manifest.files.iter().enumerate())
        .filter(|(p, _)| !split_like_share || share.holds_partition(*p as u32))
        .map(|(_, f)| dir.join(f))
        .collect();
    let keep = |user: &str| share.holds(user).is_ok();
    let report = import_profiles_of(
        data_dir,
        &files,
        &manifest.settings,
        &keep,
        manifest.popular.as_deref(),
        &|_| {},
    )?;
    let record = serde_json::json!({"generation": id, "from": shared}).to_string();
    let path = data_dir.join(IMPORTED);
    replace_file(&path, record.as_bytes()).map_err(io_at(&path))?;
    Ok(Some(report))
}

impl pinnersage_core::error::Kind for ShipError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::{self, *};
        match self {
            Self::Io { source, .. } => ErrorKind::of_io(source),
            Self::Manifest { .. } | Self::Settings(_) | Self::NoFiles | Self::Partitions(_) => {
                BadInput
            }
            Self::Parquet(e) => e.kind(),
            Self::Import(e) => e.kind(),
        }
    }
}
