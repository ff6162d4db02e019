//! Importing engagement logs (CSV/TSV or JSON lines) into the event store.
//!
//! Without `skip_invalid` a file is validated completely before anything from it is stored, so a
//! malformed row never leaves a file half-imported; with it, bad rows are counted and skipped.
//! Re-importing is idempotent: the event store deduplicates by content (or by event id).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use pinnersage_catalog::catalog::{Catalog, CatalogError};
use pinnersage_store::events::{Event, EventStore, EventStoreError};

use crate::timestamp::parse_timestamp;

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
}

const BATCH: usize = 10_000;

/// Imports every file into the event store of `data_dir`.
pub fn import_events(
    data_dir: &Path,
    files: &[PathBuf],
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
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
            for_each_row(file, &options.columns, |line, row| {
                row.map(|_| ()).map_err(|p| {
                    ImportError::Input(format!("{}: line {line}: {p}", file.display()))
                })
            })?;
        }
        let mut batch = Vec::with_capacity(BATCH);
        for_each_row(file, &options.columns, |line, row| {
            report.rows += 1;
            match row {
                Ok(event) => {
                    if let (Some(c), Some(n)) = (&catalog, report.unknown_items.as_mut()) {
                        *n += u64::from(c.row_of(&event.item).is_none());
                    }
                    batch.push(event);
                }
                Err(p) if options.skip_invalid => {
                    let _ = (line, p);
                    report.invalid += 1;
                }
                Err(p) => {
                    return Err(ImportError::Input(format!(
                        "{}: line {line}: {p}",
                        file.display()
                    )));
                }
            }
            if batch.len() >= BATCH {
                let stats = store.insert(&batch)?;
                report.inserted += stats.inserted;
                report.duplicates += stats.duplicates;
                batch.clear();
            }
            Ok(())
        })?;
        let stats = store.insert(&batch)?;
        report.inserted += stats.inserted;
        report.duplicates += stats.duplicates;
    }
    Ok(report)
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Delimited(u8),
    JsonLines,
}

impl Format {
    fn of(path: &Path) -> Result<Self, ImportError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => Ok(Self::Delimited(b',')),
            Some("tsv") | Some("tab") => Ok(Self::Delimited(b'\t')),
            Some("jsonl") | Some("ndjson") | Some("json") => Ok(Self::JsonLines),
            other => Err(ImportError::Input(format!(
                "{}: unsupported events file type {}; use .csv, .tsv or .jsonl",
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
    mut f: impl FnMut(u64, Result<Event, String>) -> Result<(), ImportError>,
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
                        f(line, Err(e.to_string()))?;
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
                f(line, row)?;
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
                f(line_no, row)?;
            }
            Ok(())
        }
    }
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
    })
}
