//! Importing engagement logs (Parquet, CSV/TSV or JSON lines) into the event store.
//!
//! Without `skip_invalid` a file is validated completely before anything from it is stored, so a
//! malformed row never leaves a file half-imported; with it, bad rows are counted and skipped.
//! Re-importing is idempotent: the event store deduplicates by content (or by event id).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use pinnersage_catalog::catalog::{Catalog, CatalogError};
use pinnersage_catalog::parquet_io::{
    ParquetIoError, ParquetReader, number_column, text_column, time_column,
};
use pinnersage_generation::{LockError, PublishLock};
use pinnersage_store::events::{Event, EventStore, EventStoreError};

use pinnersage_catalog::timestamp::parse_timestamp;

/// Column (or JSON field) names of an events file.
#[derive(Debug, Clone, PartialEq)]
pub struct EventColumns {
    /// User id column (required).
    pub user: String,
    /// Item id column (required).
    pub item: String,
    /// Timestamp column: unix seconds or RFC 3339 (required).
    pub time: String,
    /// Action type column (optional in the file).
    pub action: String,
    /// Weight column (optional in the file).
    pub weight: String,
    /// Event id column (optional in the file).
    pub id: String,
}

impl Default for EventColumns {
    fn default() -> Self {
        Self {
            user: "user".into(),
            item: "item".into(),
            time: "timestamp".into(),
            action: "action".into(),
            weight: "weight".into(),
            id: "id".into(),
        }
    }
}

/// Options of [`import_events`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Column names.
    pub columns: EventColumns,
    /// Count and skip malformed rows instead of refusing the file.
    pub skip_invalid: bool,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Rows read (excluding headers and blank lines).
    pub rows: u64,
    /// Events newly stored.
    pub inserted: u64,
    /// Events that were already stored.
    pub duplicates: u64,
    /// Malformed rows skipped (only with `skip_invalid`).
    pub invalid: u64,
    /// Events whose item is not in the catalog (stored anyway; ignored by the batch until the
    /// catalog has them). `None` when there is no catalog yet.
    pub unknown_items: Option<u64>,
}

/// Import failures; every message names the file and, for bad rows, the line.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file or one of its rows is malformed.
    #[error("{0}")]
    Input(String),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] EventStoreError),
    /// The catalog could not be read.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Another publisher holds the data directory.
    #[error(transparent)]
    Busy(#[from] LockError),
    /// Writing an output file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

const BATCH: usize = 50_000;

/// Where a row is: a line of a text file (1-based) or a row of a Parquet file (0-based).
#[derive(Debug, Clone, Copy)]
enum Loc {
    Line(u64),
    Row(u64),
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loc::Line(n) => write!(f, "line {n}"),
            Loc::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// Imports every file into the event store of `data_dir`.
pub fn import_events(
    data_dir: &Path,
    files: &[PathBuf],
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    import_events_with_progress(data_dir, files, options, &|_| {})
}

/// [`import_events`], calling `progress(rows stored or skipped so far)` after every stored batch.
pub fn import_events_with_progress(
    data_dir: &Path,
    files: &[PathBuf],
    options: &ImportOptions,
    progress: &dyn Fn(u64),
) -> Result<ImportReport, ImportError> {
    let _lock = PublishLock::acquire(data_dir, "import events")?;
    let catalog = match Catalog::open(data_dir) {
        Ok(c) => Some(c),
        Err(CatalogError::Missing(_)) => None,
        Err(e) => return Err(e.into()),
    };
    for file in files {
        // Fail fast on an unreadable or unsupported file before touching the store.
        Format::of(file)?;
        File::open(file)
            .map_err(|e| ImportError::Input(format!("{}: cannot read: {e}", file.display())))?;
    }
    let store = EventStore::open(data_dir)?;
    let mut report = ImportReport {
        unknown_items: catalog.as_ref().map(|_| 0),
        ..Default::default()
    };
    for file in files {
        if !options.skip_invalid {
            for_each_row(file, &options.columns, |loc, row| {
                row.map(|_| ())
                    .map_err(|p| ImportError::Input(format!("{}: {loc}: {p}", file.display())))
            })?;
        }
        let mut batch = Vec::with_capacity(BATCH);
        for_each_row(file, &options.columns, |loc, row| {
            report.rows += 1;
            match row {
                Ok(event) => {
                    if let (Some(c), Some(n)) = (&catalog, report.unknown_items.as_mut()) {
                        *n += u64::from(c.row_of(&event.item).is_none());
                    }
                    batch.push(event);
                }
                Err(_) if options.skip_invalid => report.invalid += 1,
                Err(p) => {
                    return Err(ImportError::Input(format!(
                        "{}: {loc}: {p}",
                        file.display()
                    )));
                }
            }
            if batch.len() >= BATCH {
                let stats = store.insert(&batch)?;
                report.inserted += stats.inserted;
                report.duplicates += stats.duplicates;
                batch.clear();
                progress(report.rows);
            }
            Ok(())
        })?;
        let stats = store.insert(&batch)?;
        report.inserted += stats.inserted;
        report.duplicates += stats.duplicates;
    }
    Ok(report)
}

/// Reads every event of `file` into memory (for offline jobs that work without a data
/// directory, like the evaluation). Malformed rows are an error naming file and row, unless
/// `options.skip_invalid` (then they are counted in the second value).
pub fn read_events(file: &Path, options: &ImportOptions) -> Result<(Vec<Event>, u64), ImportError> {
    File::open(file)
        .map_err(|e| ImportError::Input(format!("{}: cannot read: {e}", file.display())))?;
    let mut events = Vec::new();
    let mut invalid = 0;
    for_each_row(file, &options.columns, |loc, row| {
        match row {
            Ok(event) => events.push(event),
            Err(_) if options.skip_invalid => invalid += 1,
            Err(p) => {
                return Err(ImportError::Input(format!(
                    "{}: {loc}: {p}",
                    file.display()
                )));
            }
        }
        Ok(())
    })?;
    Ok((events, invalid))
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Delimited(u8),
    JsonLines,
    Parquet,
}

impl Format {
    fn of(path: &Path) -> Result<Self, ImportError> {
        let ext = pinnersage_catalog::extension(path);
        match ext.as_deref() {
            Some("csv") => Ok(Self::Delimited(b',')),
            Some("tsv") | Some("tab") => Ok(Self::Delimited(b'\t')),
            Some("jsonl") | Some("ndjson") | Some("json") => Ok(Self::JsonLines),
            Some("parquet") | Some("pq") => Ok(Self::Parquet),
            other => Err(ImportError::Input(format!(
                "{}: unsupported events file type {}; use .parquet, .csv, .tsv or .jsonl",
                path.display(),
                other.map_or("(no extension)".to_owned(), |e| format!(".{e}"))
            ))),
        }
    }
}

/// Calls `f(line, row)` for every data row of `file`.
fn for_each_row(
    file: &Path,
    columns: &EventColumns,
    mut f: impl FnMut(Loc, Result<Event, String>) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ImportError::Input(format!("{}: cannot read: {e}", file.display()))
    };
    match Format::of(file)? {
        Format::Delimited(sep) => {
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(sep)
                .flexible(true)
                .from_path(file)
                .map_err(|e| unreadable(&e))?;
            let headers = reader.headers().map_err(|e| unreadable(&e))?.clone();
            let find = |name: &str| headers.iter().position(|h| h.trim() == name);
            let required = |name: &str| {
                find(name).ok_or_else(|| {
                    ImportError::Input(format!(
                        "{}: line 1: no column {name:?} (columns: {}); name it with the --*-col options",
                        file.display(),
                        headers.iter().collect::<Vec<_>>().join(", ")
                    ))
                })
            };
            let (u, i, t) = (
                required(&columns.user)?,
                required(&columns.item)?,
                required(&columns.time)?,
            );
            let (a, w, id) = (
                find(&columns.action),
                find(&columns.weight),
                find(&columns.id),
            );
            let mut record = csv::StringRecord::new();
            loop {
                match reader.read_record(&mut record) {
                    Ok(false) => return Ok(()),
                    Ok(true) => {}
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        f(Loc::Line(line), Err(e.to_string()))?;
                        continue;
                    }
                }
                let line = record.position().map_or(0, |p| p.line());
                let get = |k: Option<usize>| {
                    k.and_then(|k| record.get(k))
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                };
                let row = build_event(
                    columns,
                    get(Some(u)),
                    get(Some(i)),
                    get(Some(t)),
                    get(a),
                    get(w),
                    get(id),
                );
                f(Loc::Line(line), row)?;
            }
        }
        Format::JsonLines => {
            let reader = BufReader::new(File::open(file).map_err(|e| unreadable(&e))?);
            for (n, line) in reader.lines().enumerate() {
                let line_no = n as u64 + 1;
                let text = line.map_err(|e| unreadable(&e))?;
                if text.trim().is_empty() {
                    continue;
                }
                let row = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
                    .map_err(|e| format!("not a JSON object: {e}"))
                    .and_then(|obj| {
                        let field = |name: &str| -> Result<Option<String>, String> {
                            match obj.get(name) {
                                None | Some(serde_json::Value::Null) => Ok(None),
                                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                                Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
                                Some(other) => Err(format!(
                                    "field {name:?} must be a string or a number, got {other}"
                                )),
                            }
                        };
                        let (u, i, t) = (
                            field(&columns.user)?,
                            field(&columns.item)?,
                            field(&columns.time)?,
                        );
                        let (a, w, id) = (
                            field(&columns.action)?,
                            field(&columns.weight)?,
                            field(&columns.id)?,
                        );
                        build_event(
                            columns,
                            u.as_deref(),
                            i.as_deref(),
                            t.as_deref(),
                            a.as_deref(),
                            w.as_deref(),
                            id.as_deref(),
                        )
                    });
                f(Loc::Line(line_no), row)?;
            }
            Ok(())
        }
        Format::Parquet => for_each_parquet_row(file, columns, f),
    }
}

fn for_each_parquet_row(
    file: &Path,
    columns: &EventColumns,
    mut f: impl FnMut(Loc, Result<Event, String>) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let input = |e: ParquetIoError| ImportError::Input(e.to_string());
    let in_file = |e: ParquetIoError| ImportError::Input(format!("{}: {e}", file.display()));
    let mut reader = ParquetReader::open(file).map_err(input)?;
    let user = reader.require_column(&columns.user).map_err(input)?;
    let item = reader.require_column(&columns.item).map_err(input)?;
    let time = reader.require_column(&columns.time).map_err(input)?;
    let action = reader.find_column(&[columns.action.as_str()]);
    let weight = reader.find_column(&[columns.weight.as_str()]);
    let id = reader.find_column(&[columns.id.as_str()]);
    while let Some(batch) = reader.next_batch() {
        let (first, batch) = batch.map_err(input)?;
        let users = text_column(&batch, &user).map_err(in_file)?;
        let items = text_column(&batch, &item).map_err(in_file)?;
        let times = time_column(&batch, &time).map_err(in_file)?;
        let n = users.len();
        let optional_text = |c: &Option<String>| -> Result<Vec<Option<String>>, ImportError> {
            c.as_ref().map_or(Ok(vec![None; n]), |c| {
                text_column(&batch, c).map_err(in_file)
            })
        };
        let (actions, ids) = (optional_text(&action)?, optional_text(&id)?);
        let weights = weight.as_ref().map_or(Ok(vec![None; n]), |c| {
            number_column(&batch, c).map_err(in_file)
        })?;
        for k in 0..n {
            let row = match &times[k] {
                Some(Err(e)) => Err(format!("{}: {e}", columns.time)),
                Some(Ok(t)) => {
                    let t = t.to_string();
                    let w = weights[k].map(|w| w.to_string());
                    build_event(
                        columns,
                        users[k].as_deref(),
                        items[k].as_deref(),
                        Some(&t),
                        actions[k].as_deref(),
                        w.as_deref(),
                        ids[k].as_deref(),
                    )
                }
                None => Err(format!("missing {:?}", columns.time)),
            };
            f(Loc::Row((first + k) as u64), row)?;
        }
    }
    Ok(())
}

fn build_event(
    columns: &EventColumns,
    user: Option<&str>,
    item: Option<&str>,
    time: Option<&str>,
    action: Option<&str>,
    weight: Option<&str>,
    id: Option<&str>,
) -> Result<Event, String> {
    let missing = |name: &str| format!("missing {name:?}");
    let user = user.ok_or_else(|| missing(&columns.user))?;
    let item = item.ok_or_else(|| missing(&columns.item))?;
    let time = parse_timestamp(time.ok_or_else(|| missing(&columns.time))?)
        .map_err(|e| format!("{}: {e}", columns.time))?;
    let weight = match weight {
        None => 1.0,
        Some(w) => match w.parse::<f32>() {
            Ok(v) if v.is_finite() && v >= 0.0 => v,
            _ => {
                return Err(format!(
                    "{}: {w:?} is not a finite weight >= 0",
                    columns.weight
                ));
            }
        },
    };
    let too_long = |s: &str| s.len() > pinnersage_store::events::MAX_ID_BYTES;
    if too_long(user) || too_long(item) || action.is_some_and(|a| a.len() > 255) {
        return Err("an id is longer than 1024 bytes (or an action longer than 255)".into());
    }
    Ok(Event {
        user: user.to_owned(),
        item: item.to_owned(),
        time,
        action: action.unwrap_or("").to_owned(),
        weight,
        id: id.map(str::to_owned),
        request_id: None,
    })
}

impl pinnersage_core::error::Kind for ImportError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::{self, *};
        match self {
            Self::Input(_) => BadInput,
            Self::Store(e) => e.kind(),
            Self::Catalog(e) => e.kind(),
            Self::Busy(e) => e.kind(),
            Self::Io { source, .. } => ErrorKind::of_io(source),
        }
    }
}
