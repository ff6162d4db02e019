//! Item attributes (a title, a url, an image url, any free attributes) read from a side file and
//! joined to the catalog on the item id. Each item's attributes are stored as one JSON object
//! that the server returns beside the item's id.
//!
//! Accepted files: CSV/TSV with a header line, JSON lines (one object per line) and Parquet
//! (string, numeric and boolean columns; list columns such as an embedding are skipped, so the
//! items Parquet file itself can be given). Every column other than the id becomes an attribute.

use std::io::BufRead;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_schema::DataType;
use serde_json::{Map, Value};

use crate::error::CatalogError;
use crate::parquet_io::{ParquetIoError, ParquetReader, number_column, text_column};

/// Id column names tried when none is given.
pub const ID_COLUMNS: [&str; 3] = ["id", "item", "item_id"];

/// Attributes by catalog row: a JSON object text, or `None` for items without attributes.
pub type ByRow = Vec<Option<Box<str>>>;

/// What reading an attributes file found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttributesSummary {
    /// Rows read.
    pub rows: usize,
    /// Rows whose id is in the catalog (they got attributes).
    pub matched: usize,
    /// Rows whose id is not in the catalog (ignored).
    pub unknown_ids: usize,
    /// Attribute columns stored.
    pub columns: Vec<String>,
    /// Parquet columns left out because their type is not a string, number or boolean.
    pub skipped_columns: Vec<String>,
}

/// Reads the attributes file `path` for a catalog of `rows` items, resolving ids with `row_of`.
/// `id_col` names the id column (default: the first of [`ID_COLUMNS`] present). Returns one JSON
/// object text per row (`None` for items without attributes). Errors name the file and the
/// line or row; a duplicated id is an error.
pub fn read_attributes(
    path: &Path,
    id_col: Option<&str>,
    rows: usize,
    row_of: impl Fn(&str) -> Option<usize>,
) -> Result<(ByRow, AttributesSummary), CatalogError> {
    let mut join = Join {
        path,
        by_row: vec![None; rows],
        first_seen: vec![0; rows],
        summary: AttributesSummary::default(),
        row_of: &row_of,
    };
    match crate::extension(path).as_deref() {
        Some("csv") => read_delimited(path, b',', id_col, &mut join)?,
        Some("tsv") | Some("tab") => read_delimited(path, b'\t', id_col, &mut join)?,
        Some("jsonl") | Some("ndjson") | Some("json") => read_json_lines(path, id_col, &mut join)?,
        Some("parquet") | Some("pq") => read_parquet(path, id_col, &mut join)?,
        other => {
            return Err(input(format!(
                "{}: unsupported attributes file type {}; use .csv/.tsv (with a header), .jsonl or .parquet",
                path.display(),
                other.map_or("(no extension)".to_owned(), |e| format!(".{e}"))
            )));
        }
    }
    if join.summary.rows == 0 {
        return Err(input(format!("{}: no attribute rows", path.display())));
    }
    Ok((join.by_row, join.summary))
}

/// Accumulates attribute rows by catalog row.
struct Join<'a, F> {
    path: &'a Path,
    by_row: ByRow,
    /// The line (text files) or row (Parquet) where each catalog row got its attributes.
    first_seen: Vec<usize>,
    summary: AttributesSummary,
    row_of: &'a F,
}

impl<F: Fn(&str) -> Option<usize>> Join<'_, F> {
    /// Adds the attributes of `id`, read at `place` ("line 3" or "row 2"; `position` is its
    /// number).
    fn add(
        &mut self,
        id: &str,
        attrs: Map<String, Value>,
        place: &str,
        position: usize,
    ) -> Result<(), CatalogError> {
        self.summary.rows += 1;
        if id.is_empty() {
            return Err(input(format!(
                "{}: {place}: the item id is empty",
                self.path.display()
            )));
        }
        let Some(row) = (self.row_of)(id) else {
            self.summary.unknown_ids += 1;
            return Ok(());
        };
        if self.by_row[row].is_some() {
            return Err(input(format!(
                "{}: {place}: item id {id:?} already has attributes (from {} {})",
                self.path.display(),
                place.split(' ').next().unwrap_or("row"),
                self.first_seen[row]
            )));
        }
        self.summary.matched += 1;
        self.first_seen[row] = position;
        let text = serde_json::to_string(&Value::Object(attrs)).expect("JSON values serialise");
        self.by_row[row] = Some(text.into_boxed_str());
        Ok(())
    }
}

fn input(msg: impl std::fmt::Display) -> CatalogError {
    CatalogError::Input(msg.to_string())
}

/// The id column: `id_col` if given (it must exist), else the first of [`ID_COLUMNS`].
fn pick_id<'a>(
    path: &Path,
    id_col: Option<&str>,
    columns: &'a [String],
) -> Result<&'a str, CatalogError> {
    let found = match id_col {
        Some(name) => columns.iter().find(|c| *c == name),
        None => ID_COLUMNS
            .iter()
            .find_map(|want| columns.iter().find(|c| c == want)),
    };
    found.map(String::as_str).ok_or_else(|| {
        input(format!(
            "{}: no id column {} (columns: {}); name it with `attributes_id_col`",
            path.display(),
            id_col.map_or_else(|| ID_COLUMNS.join(", "), |c| format!("{c:?}")),
            columns.join(", ")
        ))
    })
}

fn read_delimited<F: Fn(&str) -> Option<usize>>(
    path: &Path,
    sep: u8,
    id_col: Option<&str>,
    join: &mut Join<'_, F>,
) -> Result<(), CatalogError> {
    let at_line = |line: u64, e: &dyn std::fmt::Display| {
        input(format!("{}: line {line}: {e}", path.display()))
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sep)
        .from_path(path)
        .map_err(|e| input(format!("{}: cannot read: {e}", path.display())))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| at_line(1, &e))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let id = pick_id(path, id_col, &header)?.to_owned();
    let id_index = header.iter().position(|h| *h == id).expect("picked above");
    join.summary.columns = header.iter().filter(|h| **h != id).cloned().collect();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(at_line(e.position().map_or(0, |p| p.line()), &e)),
        }
        let line = record.position().map_or(0, |p| p.line());
        let mut attrs = Map::new();
        for (k, field) in record.iter().enumerate() {
            if k != id_index {
                attrs.insert(header[k].clone(), Value::String(field.to_owned()));
            }
        }
        let item = record.get(id_index).unwrap_or("").trim();
        join.add(item, attrs, &format!("line {line}"), line as usize)?;
    }
}

fn read_json_lines<F: Fn(&str) -> Option<usize>>(
    path: &Path,
    id_col: Option<&str>,
    join: &mut Join<'_, F>,
) -> Result<(), CatalogError> {
    let file = std::fs::File::open(path)
        .map_err(|e| input(format!("{}: cannot read: {e}", path.display())))?;
    let mut columns: Vec<String> = Vec::new();
    for (k, line) in std::io::BufReader::new(file).lines().enumerate() {
        let n = k + 1;
        let at = |e: &dyn std::fmt::Display| input(format!("{}: line {n}: {e}", path.display()));
        let line = line.map_err(|e| at(&e))?;
        if line.trim().is_empty() {
            continue;
        }
        let Value::Object(mut attrs) = serde_json::from_str(&line).map_err(|e| at(&e))? else {
            return Err(at(&"not a JSON object"));
        };
        let keys: Vec<String> = attrs.keys().cloned().collect();
        let id_name = pick_id(path, id_col, &keys).map_err(|_| {
            at(&format!(
                "no id field {}",
                id_col.map_or_else(|| ID_COLUMNS.join(", "), |c| format!("{c:?}"))
            ))
        })?;
        let item = match attrs.remove(id_name) {
            Some(Value::String(s)) => s,
            Some(Value::Number(v)) => v.to_string(),
            _ => return Err(at(&format!("{id_name:?} must be a string or an integer"))),
        };
        for key in attrs.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
        join.add(&item, attrs, &format!("line {n}"), n)?;
    }
    join.summary.columns = columns;
    Ok(())
}

fn read_parquet<F: Fn(&str) -> Option<usize>>(
    path: &Path,
    id_col: Option<&str>,
    join: &mut Join<'_, F>,
) -> Result<(), CatalogError> {
    let in_file = |e: ParquetIoError| input(format!("{}: {e}", path.display()));
    let mut reader = ParquetReader::open(path).map_err(input)?;
    let fields: Vec<(String, DataType)> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let names: Vec<String> = fields.iter().map(|(n, _)| n.clone()).collect();
    let id = pick_id(path, id_col, &names)?.to_owned();
    let (mut kept, mut skipped) = (Vec::new(), Vec::new());
    for (name, ty) in fields.into_iter().filter(|(n, _)| *n != id) {
        if ty.is_numeric() || ty == DataType::Boolean || is_text(&ty) {
            kept.push((name, ty));
        } else {
            skipped.push(name);
        }
    }
    join.summary.columns = kept.iter().map(|(n, _)| n.clone()).collect();
    join.summary.skipped_columns = skipped;
    while let Some(batch) = reader.next_batch() {
        let (first_row, batch) = batch.map_err(input)?;
        let ids = text_column(&batch, &id).map_err(in_file)?;
        let mut columns: Vec<Vec<Value>> = Vec::with_capacity(kept.len());
        for (name, ty) in &kept {
            columns.push(if is_text(ty) {
                let text = text_column(&batch, name).map_err(in_file)?;
                text.into_iter()
                    .map(|v| v.map_or(Value::Null, Value::String))
                    .collect()
            } else if *ty == DataType::Boolean {
                let col = batch.column_by_name(name).expect("in the schema");
                col.as_boolean()
                    .iter()
                    .map(|v| v.map_or(Value::Null, Value::Bool))
                    .collect()
            } else {
                let nums = number_column(&batch, name).map_err(in_file)?;
                let integer = ty.is_integer();
                nums.into_iter()
                    .map(|v| match v {
                        Some(v) if integer => Value::from(v as i64),
                        Some(v) => {
                            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
                        }
                        None => Value::Null,
                    })
                    .collect()
            });
        }
        for (k, item) in ids.into_iter().enumerate() {
            let row = first_row + k;
            let mut attrs = Map::new();
            for ((name, _), values) in kept.iter().zip(&mut columns) {
                let v = std::mem::take(&mut values[k]);
                if !v.is_null() {
                    attrs.insert(name.clone(), v);
                }
            }
            join.add(
                item.as_deref().unwrap_or(""),
                attrs,
                &format!("row {row}"),
                row,
            )?;
        }
    }
    Ok(())
}

fn is_text(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}
