//! Publishing profiles computed elsewhere (the Spark job, or any engine that writes the
//! [`crate::exchange::profile_table`] schema) as a profile generation a server picks up like a batch's.
//!
//! Everything is validated before the generation becomes visible: the schema, every row
//! (medoid and members in the catalog, the medoid among the members, finite non-negative
//! importance, size at least the number of members), each user's ranks `0..k` exactly once and
//! its rows together in one file. The first problem is an error naming the file and the row, and
//! nothing is published. Rows with an `alpha` are the generation's variants (the users' clusters
//! cut at that alpha, `batch --variant-alpha ... --out`): each is published as a variant.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::RecordBatch;
use pinnersage_catalog::catalog::{Catalog, CatalogError};
use pinnersage_catalog::parquet_io::{
    ParquetIoError, ParquetReader, number_column, text_column, text_list_column, vector_column,
};
use pinnersage_store::profiles::{
    GenerationMeta, MAX_VARIANTS, ProfileStoreError, ProfileWriter, StoredCluster, StoredItem,
    StoredProfile,
};

use pinnersage_store::settings::{GenerationSettings, SettingsError};

use super::profile_table::{ALPHA, MEMBER_IMPORTANCE, REQUIRED_COLUMNS};
use crate::batch::POPULAR_ITEMS;

/// What an import published.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportProfilesReport {
    /// The new profile generation's directory.
    pub generation: PathBuf,
    /// Parquet files read.
    pub files: usize,
    /// Users with a profile.
    pub users: u64,
    /// Clusters (rows) read.
    pub clusters: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Why profiles could not be imported; nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum ImportProfilesError {
    /// The catalog is missing or unreadable (medoids are checked against it).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A file is unreadable or a column missing or of the wrong type.
    #[error(transparent)]
    Parquet(#[from] ParquetIoError),
    /// One row is invalid.
    #[error("{}: row {row}: {message}", file.display())]
    Row {
        /// The file.
        file: PathBuf,
        /// 0-based row in the file.
        row: usize,
        /// What is wrong.
        message: String,
    },
    /// The inputs hold no Parquet file or no row.
    #[error("{0}")]
    Empty(String),
    /// The settings recorded with the profiles are out of their domains.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// An item of the given popular list is not in the catalog.
    #[error("popular item {0:?} is not in the catalog")]
    UnknownPopular(String),
    /// Writing the generation failed.
    #[error(transparent)]
    Profiles(#[from] ProfileStoreError),
}

/// The Parquet files of `inputs`: files as given, directories (a Spark output) as their
/// `*.parquet` files in name order, skipping hidden and `_`-prefixed ones.
pub fn parquet_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, ImportProfilesError> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let entries = std::fs::read_dir(input).map_err(|source| ParquetIoError::File {
                path: input.clone(),
                action: "read",
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    !name.starts_with(['.', '_']) && name.ends_with(".parquet")
                })
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(ImportProfilesError::Empty(format!(
                    "{}: no *.parquet file in this directory",
                    input.display()
                )));
            }
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

/// One cluster row as read.
struct Row {
    rank: u32,
    cluster: StoredCluster,
    members: Vec<String>,
    /// Each member's importance, when the file has them.
    member_importance: Option<Vec<f32>>,
    /// The variant the row belongs to (`None`: the generation's own cut).
    alpha: Option<f64>,
}

/// The user whose rows are being read and where they started.
struct Pending {
    user: String,
    /// The variant of the rows.
    alpha: Option<f64>,
    first_row: usize,
    rows: Vec<(usize, Row)>,
}

/// Imports the profile tables in `inputs` (files or directories) as a new profile generation of
/// `data_dir`, recording `settings` (what they were computed with: the server reads its online
/// boundary, `now`, and the online path's alpha and lambda from them); `progress(users)` is
/// called as users are read.
pub fn import_profiles(
    data_dir: &Path,
    inputs: &[PathBuf],
    settings: &GenerationSettings,
    progress: &dyn Fn(u64),
) -> Result<ImportProfilesReport, ImportProfilesError> {
    import_profiles_of(data_dir, inputs, settings, &|_| true, None, progress)
}

/// [`import_profiles`] keeping only the users `keep` accepts (a fleet replica's partitions):
/// every row is still validated, and the popular list still counts every user's items read, so
/// it is the one a full import makes. `popular`, when given, is the generation's popular list
/// counted elsewhere over every user (a partitioned shipment, of which only some files are
/// read): its items must be in the catalog, and the inputs may then hold no user.
/// `progress(users)` counts the users read.
///
/// ```no_run
/// # use pinnersage_pipeline::exchange::import_profiles::import_profiles_of;
/// # fn settings() -> pinnersage_store::settings::GenerationSettings { unimplemented!() }
/// use pinnersage_core::hash::partition_of;
/// let held = |user: &str| [0, 1].contains(&partition_of(user, 8));
/// let inputs = [std::path::PathBuf::from("profiles.parquet")];
/// import_profiles_of("replica-a".as_ref(), &inputs, &settings(), &held, None, &|_| {})?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn import_profiles_of(
    data_dir: &Path,
    inputs: &[PathBuf],
    settings: &GenerationSettings,
    keep: &dyn Fn(&str) -> bool,
    popular: Option<&[(String, u64)]>,
    progress: &dyn Fn(u64),
) -> Result<ImportProfilesReport, ImportProfilesError> {
    let start = Instant::now();
    settings.validate()?;
    let files = parquet_files(inputs)?;
    if files.is_empty() {
        return Err(ImportProfilesError::Empty("no profile files given".into()));
    }
    let mut catalog = Catalog::open(data_dir)?;
    catalog.build_hash_index();
    let mut writer = ProfileWriter::begin(data_dir)?;
    // Users (and the variant, by the alpha's bits) whose rows were read.
    let mut users_seen: HashSet<(String, Option<u64>)> = HashSet::new();
    let mut variants: Vec<(f64, CutRows)> = Vec::new();
    // The popular list is counted here unless it was given (then nothing is counted).
    let mut counted: Option<HashMap<usize, u64>> = popular.is_none().then(HashMap::new);
    let mut chunk: Vec<(String, StoredProfile)> = Vec::new();
    let mut clusters = 0u64;
    for file in &files {
        let mut reader = ParquetReader::open(file)?;
        for name in REQUIRED_COLUMNS {
            reader.require_column(name)?;
        }
        let mut pending: Option<Pending> = None;
        let row_err = |row: usize, message: String| ImportProfilesError::Row {
            file: file.clone(),
            row,
            message,
        };
        while let Some(batch) = reader.next_batch() {
            let (first, batch) = batch?;
            let rows = read_rows(&batch, first, &catalog).map_err(|e| match e {
                RowsError::Parquet(e) => ImportProfilesError::Parquet(e),
                RowsError::Row(row, message) => row_err(row, message),
            })?;
            for (row, user, r) in rows {
                clusters += 1;
                let alpha = r.alpha;
                if alpha == Some(settings.params.alpha) {
                    return Err(row_err(
                        row,
                        format!(
                            "{ALPHA} {} is the generation's own: leave it null for its own cut",
                            settings.params.alpha
                        ),
                    ));
                }
                match &mut pending {
                    Some(p) if p.user == user && p.alpha == alpha => p.rows.push((row, r)),
                    _ => {
                        if let Some(done) = pending.take() {
                            let popularity = counted.as_mut();
                            finish(done, &catalog, keep, &mut chunk, &mut variants, popularity)
                                .map_err(|(row, m)| row_err(row, m))?;
                        }
                        if !users_seen.insert((user.clone(), alpha.map(f64::to_bits))) {
                            let cut = alpha.map_or(String::new(), |a| format!(" (at {ALPHA} {a})"));
                            return Err(row_err(
                                row,
                                format!(
                                    "user {user:?}{cut} appears again after other users' rows (a \
                                     user's rows must be together, in one file)"
                                ),
                            ));
                        }
                        if let Some(a) = alpha
                            && !variants.iter().any(|(v, _)| *v == a)
                        {
                            if variants.len() >= MAX_VARIANTS {
                                return Err(row_err(
                                    row,
                                    format!("more than {MAX_VARIANTS} variants ({ALPHA} {a})"),
                                ));
                            }
                            variants.push((a, Vec::new()));
                        }
                        pending = Some(Pending {
                            user,
                            alpha,
                            first_row: row,
                            rows: vec![(row, r)],
                        });
                    }
                }
            }
            if chunk.len() >= 4096 {
                writer.write(&chunk)?;
                chunk.clear();
                progress(users_seen.len() as u64);
            }
            for (alpha, rows) in variants.iter_mut().filter(|(_, rows)| rows.len() >= 4096) {
                writer.write_variant(*alpha, rows)?;
                rows.clear();
            }
        }
        if let Some(done) = pending.take() {
            let popularity = counted.as_mut();
            finish(done, &catalog, keep, &mut chunk, &mut variants, popularity)
                .map_err(|(row, m)| row_err(row, m))?;
        }
    }
    writer.write(&chunk)?;
    for (alpha, rows) in &variants {
        writer.write_variant(*alpha, rows)?;
    }
    progress(users_seen.len() as u64);
    if users_seen.is_empty() && popular.is_none() {
        return Err(ImportProfilesError::Empty(format!(
            "{}: no rows: nothing to publish",
            files[0].display()
        )));
    }
    let popularity = match counted {
        Some(counted) => counted,
        None => (popular.unwrap_or_default().iter())
            .map(|(item, n)| {
                catalog
                    .row_of(item)
                    .map(|row| (row, *n))
                    .ok_or_else(|| ImportProfilesError::UnknownPopular(item.clone()))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut popular: Vec<(usize, u64)> = popularity.into_iter().collect();
    popular.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    popular.truncate(POPULAR_ITEMS);
    let popular: Vec<(String, u64)> = popular
        .into_iter()
        .map(|(row, n)| (catalog.id(row).to_owned(), n))
        .collect();
    writer.write_popular(&popular)?;
    let users = writer.users();
    let generation = writer.publish(GenerationMeta {
        settings: settings.clone(),
        shard: None,
        users: 0,
        variant_alphas: Vec::new(),
    })?;
    Ok(ImportProfilesReport {
        generation,
        files: files.len(),
        users,
        clusters,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Profiles read, of one cut.
type CutRows = Vec<(String, StoredProfile)>;

/// Assembles the rows of `done` ([`assemble`]; its members counted in `popularity` only for the
/// generation's own cut) and adds the profile to the generation's `own` or to its variant's in
/// `variants` (registered at its first row) when `keep` takes the user. Errors carry the row to
/// name.
fn finish(
    done: Pending,
    catalog: &Catalog,
    keep: &dyn Fn(&str) -> bool,
    own: &mut CutRows,
    variants: &mut [(f64, CutRows)],
    popularity: Option<&mut HashMap<usize, u64>>,
) -> Result<(), (usize, String)> {
    let popularity = popularity.filter(|_| done.alpha.is_none());
    let profile = assemble(&done, catalog, popularity)?;
    if !keep(&done.user) {
        return Ok(());
    }
    let rows = match done.alpha {
        None => own,
        Some(alpha) => {
            let at = variants.iter().position(|(a, _)| *a == alpha);
            &mut variants[at.expect("a variant is registered at its first row")].1
        }
    };
    rows.push((done.user, profile));
    Ok(())
}

enum RowsError {
    Parquet(ParquetIoError),
    Row(usize, String),
}

impl From<ParquetIoError> for RowsError {
    fn from(e: ParquetIoError) -> Self {
        Self::Parquet(e)
    }
}

/// The rows of one record batch (first row `first`), each checked on its own.
fn read_rows(
    batch: &RecordBatch,
    first: usize,
    catalog: &Catalog,
) -> Result<Vec<(usize, String, Row)>, RowsError> {
    let mut users = text_column(batch, "user")?;
    let ranks = number_column(batch, "rank")?;
    let mut medoids = text_column(batch, "medoid")?;
    let sizes = number_column(batch, "size")?;
    let importances = number_column(batch, "importance")?;
    let latest = number_column(batch, "latest_time")?;
    let mut members = text_list_column(batch, "members")?;
    let mut member_importance = match batch.column_by_name(MEMBER_IMPORTANCE) {
        Some(_) => vector_column(batch, MEMBER_IMPORTANCE)?,
        None => vec![None; batch.num_rows()],
    };
    let alphas = match batch.column_by_name(ALPHA) {
        Some(_) => number_column(batch, ALPHA)?,
        None => vec![None; batch.num_rows()],
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let row = first + i;
        let bad = |m: String| RowsError::Row(row, m);
        let null = |name: &str| bad(format!("{name} is null"));
        let user = users[i].take().ok_or_else(|| null("user"))?;
        let medoid = medoids[i].take().ok_or_else(|| null("medoid"))?;
        let int = |name: &str, v: Option<f64>, max: f64| -> Result<f64, RowsError> {
            let v = v.ok_or_else(|| null(name))?;
            if v.fract() == 0.0 && (0.0..=max).contains(&v) {
                Ok(v)
            } else {
                Err(bad(format!("{name} {v} is not an integer in 0..={max}")))
            }
        };
        let rank = int("rank", ranks[i], f64::from(u32::MAX))? as u32;
        let size = int("size", sizes[i], f64::from(u32::MAX))? as u32;
        let latest_time = latest[i].ok_or_else(|| null("latest_time"))?;
        if latest_time.fract() != 0.0 || latest_time.abs() > 9.0e15 {
            return Err(bad(format!(
                "latest_time {latest_time} is not unix seconds"
            )));
        }
        let importance = importances[i].ok_or_else(|| null("importance"))?;
        if !importance.is_finite() || importance < 0.0 {
            return Err(bad(format!(
                "importance {importance} must be finite and >= 0"
            )));
        }
        let items: Vec<String> = members[i]
            .take()
            .ok_or_else(|| null("members"))?
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| bad("members holds a null item".into()))?;
        if items.is_empty() {
            return Err(bad(
                "members is empty (a cluster has at least its medoid)".into()
            ));
        }
        if items.len() > size as usize {
            return Err(bad(format!(
                "{} members but size {size} (size counts actions, at least one per member)",
                items.len()
            )));
        }
        if user.is_empty() {
            return Err(bad("user is empty".into()));
        }
        if !items.contains(&medoid) {
            return Err(bad(format!("medoid {medoid:?} is not among the members")));
        }
        let member_importance = member_importance[i].take();
        if let Some(values) = &member_importance {
            if values.len() != items.len() {
                return Err(bad(format!(
                    "{MEMBER_IMPORTANCE} has {} values for {} members",
                    values.len(),
                    items.len()
                )));
            }
            if let Some(v) = values.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                return Err(bad(format!(
                    "{MEMBER_IMPORTANCE} holds {v}: each must be finite and >= 0"
                )));
            }
        }
        if let Some(unknown) = items.iter().find(|id| catalog.row_of(id).is_none()) {
            return Err(bad(format!("item {unknown:?} is not in the catalog")));
        }
        let alpha = alphas[i];
        if let Some(a) = alpha.filter(|a| !(a.is_finite() && *a >= 0.0)) {
            return Err(bad(format!("{ALPHA} {a} must be finite and >= 0")));
        }
        out.push((
            row,
            user,
            Row {
                rank,
                cluster: StoredCluster {
                    medoid,
                    size,
                    importance,
                    latest_time: latest_time as i64,
                },
                members: items,
                member_importance,
                alpha,
            },
        ));
    }
    Ok(out)
}

/// One user's rows as a stored profile, ranks checked; counts each member once in `popularity`
/// (the generation's popular list) when given. Errors carry the row to name.
fn assemble(
    user: &Pending,
    catalog: &Catalog,
    mut popularity: Option<&mut HashMap<usize, u64>>,
) -> Result<StoredProfile, (usize, String)> {
    let mut by_rank: Vec<Option<&(usize, Row)>> = vec![None; user.rows.len()];
    for entry in &user.rows {
        let (row, r) = entry;
        let slot = by_rank.get_mut(r.rank as usize).ok_or_else(|| {
            (
                *row,
                format!(
                    "user {:?} has {} rows but rank {} (ranks must be 0..{})",
                    user.user,
                    user.rows.len(),
                    r.rank,
                    user.rows.len()
                ),
            )
        })?;
        if let Some((first, _)) = slot {
            return Err((
                *row,
                format!(
                    "duplicate (user, rank) ({:?}, {}): also at row {first}",
                    user.user, r.rank
                ),
            ));
        }
        *slot = Some(entry);
    }
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    let mut clusters = Vec::with_capacity(by_rank.len());
    for (k, entry) in by_rank.into_iter().enumerate() {
        let (row, r) = entry.ok_or_else(|| {
            (
                user.first_row,
                format!("user {:?}: rank {k} missing", user.user),
            )
        })?;
        for (j, m) in r.members.iter().enumerate() {
            if !seen.insert(m.as_str()) {
                return Err((
                    *row,
                    format!(
                        "item {m:?} is a member of two of user {:?}'s clusters",
                        user.user
                    ),
                ));
            }
            items.push(StoredItem {
                item: m.clone(),
                cluster: k as u32,
                importance: r.member_importance.as_ref().and_then(|v| v.get(j).copied()),
            });
            if let (Some(popularity), Some(row)) = (popularity.as_deref_mut(), catalog.row_of(m)) {
                *popularity.entry(row).or_default() += 1;
            }
        }
        clusters.push(r.cluster.clone());
    }
    // Item importance is kept only when every cluster of the user has it.
    if items.iter().any(|i| i.importance.is_none()) {
        items.iter_mut().for_each(|i| i.importance = None);
    }
    Ok(StoredProfile { clusters, items })
}

impl pinnersage_core::error::Kind for ImportProfilesError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::Catalog(e) => e.kind(),
            Self::Parquet(e) => e.kind(),
            Self::Row { .. } | Self::Empty(_) | Self::Settings(_) | Self::UnknownPopular(_) => {
                BadInput
            }
            Self::Profiles(e) => e.kind(),
        }
    }
}
