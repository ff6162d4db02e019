//! Importing items into the catalog from the files teams have: Parquet (an id column and a list
//! column), NPY embeddings with an ids text file, or CSV/TSV (`id, v1, ..., vd`). Every refusal
//! names the file and the line or row.

use std::fs;
use std::path::Path;

use crate::attributes::AttributesSummary;
use crate::catalog::{CatalogBuilder, CatalogError, ImportSummary, RowError};
use crate::npy::MappedMatrix;
use crate::parquet_io::{
    ParquetIoError, ParquetReader, first_list_column, text_column, vector_column,
};

/// How to read an items file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemsFormat {
    /// An `m x d` NPY matrix plus a text file of `m` ids, one per line, in row order.
    Npy,
    /// Comma- or tab-separated `id, v1, ..., vd` rows, with or without a header line.
    Delimited(u8),
    /// Parquet with an id column (`id`, `item` or `item_id`: strings or integers) and a vector
    /// column (`embedding`, `vector`, or the first list column: lists of floats).
    Parquet,
}

impl ItemsFormat {
    /// The format implied by the file's extension (`.parquet`, `.npy`, `.csv`, `.tsv`).
    pub fn from_path(path: &Path) -> Result<Self, CatalogError> {
        let ext = crate::extension(path);
        match ext.as_deref() {
            Some("npy") => Ok(Self::Npy),
            Some("csv") => Ok(Self::Delimited(b',')),
            Some("tsv") | Some("tab") => Ok(Self::Delimited(b'\t')),
            Some("parquet") | Some("pq") => Ok(Self::Parquet),
            other => Err(CatalogError::Input(format!(
                "{}: unsupported items file type {}; use .parquet, .npy (with `ids`) or .csv/.tsv",
                path.display(),
                other.map_or("(no extension)".to_owned(), |e| format!(".{e}"))
            ))),
        }
    }
}

/// How to import an items file; `Default` is: no ids file, no normalisation, no attributes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ItemsOptions<'a> {
    /// For NPY: the ids text file (one id per line, in row order).
    pub ids: Option<&'a Path>,
    /// L2-normalise every embedding.
    pub normalize: bool,
    /// An attributes file joined on the item id (see [`crate::attributes`]).
    pub attributes: Option<&'a Path>,
    /// The id column of the attributes file (default: `id`, `item` or `item_id`).
    pub attributes_id_col: Option<&'a str>,
}

/// What an items import produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemsImported {
    /// The new catalog generation.
    pub catalog: ImportSummary,
    /// What the attributes file held, if one was given.
    pub attributes: Option<AttributesSummary>,
}

/// Imports `file` (and the ids file for NPY) as a new catalog generation of `data_dir`,
/// replacing the current catalog only once everything was read and validated.
///
/// ```
/// use pinnersage_catalog::{catalog::Catalog, items::{ItemsOptions, import_items}};
/// let dir = std::env::temp_dir().join(format!("items-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let csv = dir.join("items.csv");
/// std::fs::write(&csv, "id,x,y\nshoe,3,4\nhat,0,2\n").unwrap();
/// let titles = dir.join("titles.csv");
/// std::fs::write(&titles, "id,title\nshoe,Red shoe\n").unwrap();
/// let options = ItemsOptions { normalize: true, attributes: Some(&titles), ..Default::default() };
/// let imported = import_items(&dir, &csv, &options).unwrap();
/// assert_eq!((imported.catalog.meta.rows, imported.catalog.meta.dim), (2, 2));
/// let catalog = Catalog::open(&dir).unwrap();
/// let shoe = catalog.row_of("shoe").unwrap();
/// assert_eq!(catalog.embedding(shoe), &[0.6, 0.8]);
/// assert_eq!(catalog.attributes(shoe), Some(r#"{"title":"Red shoe"}"#));
/// assert_eq!(catalog.attributes(catalog.row_of("hat").unwrap()), None);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn import_items(
    data_dir: &Path,
    file: &Path,
    options: &ItemsOptions<'_>,
) -> Result<ItemsImported, CatalogError> {
    let normalize = options.normalize;
    let (mut builder, source) = match ItemsFormat::from_path(file)? {
        ItemsFormat::Npy => {
            let ids = options.ids.ok_or_else(|| {
                CatalogError::Input(format!(
                    "{}: NPY embeddings need `ids`, a file of one item id per line, in row order",
                    file.display()
                ))
            })?;
            import_npy(data_dir, file, ids, normalize)?
        }
        format => {
            if let Some(ids) = options.ids {
                return Err(CatalogError::Input(format!(
                    "{}: `ids` is only for NPY files; CSV and Parquet rows carry their own id",
                    ids.display()
                )));
            }
            match format {
                ItemsFormat::Delimited(sep) => import_delimited(data_dir, file, sep, normalize)?,
                _ => import_parquet(data_dir, file, normalize)?,
            }
        }
    };
    let attributes = options
        .attributes
        .map(|path| builder.attach_attributes(path, options.attributes_id_col))
        .transpose()?;
    Ok(ItemsImported {
        catalog: builder.commit(&source)?,
        attributes,
    })
}

/// A filled catalog builder and the description of its source.
type Built = (CatalogBuilder, String);

fn import_parquet(data_dir: &Path, file: &Path, normalize: bool) -> Result<Built, CatalogError> {
    let mut reader = ParquetReader::open(file).map_err(input)?;
    let id_col = reader
        .find_column(&["id", "item", "item_id"])
        .ok_or_else(|| {
            input(format!(
                "{}: no id column (looked for id, item, item_id; columns: {})",
                file.display(),
                reader.column_names()
            ))
        })?;
    let vec_col = reader
        .find_column(&["embedding", "vector", "emb"])
        .or_else(|| first_list_column(reader.schema()))
        .ok_or_else(|| {
            input(format!(
                "{}: no embedding column (a list of floats named embedding, vector or emb; columns: {})",
                file.display(),
                reader.column_names()
            ))
        })?;
    let in_file = |e: ParquetIoError| input(format!("{}: {e}", file.display()));
    let mut builder: Option<CatalogBuilder> = None;
    while let Some(batch) = reader.next_batch() {
        let (first_row, batch) = batch.map_err(input)?;
        let ids = text_column(&batch, &id_col).map_err(in_file)?;
        let vectors = vector_column(&batch, &vec_col).map_err(in_file)?;
        for (k, (id, vector)) in ids.into_iter().zip(vectors).enumerate() {
            let row = first_row + k;
            let at = |msg: &dyn std::fmt::Display| {
                input(format!("{}: row {row}: {msg}", file.display()))
            };
            let mut vector = vector.ok_or_else(|| at(&format!("{vec_col:?} is null")))?;
            if builder.is_none() {
                if vector.is_empty() {
                    return Err(at(&"the embedding is empty"));
                }
                builder = Some(CatalogBuilder::new(data_dir, vector.len(), normalize)?);
            }
            if let Some(b) = builder.as_mut() {
                b.push(id.as_deref().unwrap_or(""), &mut vector)
                    .map_err(|e| at(&e))?;
            }
        }
    }
    let builder = builder.ok_or_else(|| input(format!("{}: no items", file.display())))?;
    Ok((builder, file.display().to_string()))
}

fn input(msg: impl std::fmt::Display) -> CatalogError {
    CatalogError::Input(msg.to_string())
}

fn import_npy(
    data_dir: &Path,
    file: &Path,
    ids_path: &Path,
    normalize: bool,
) -> Result<Built, CatalogError> {
    let matrix = MappedMatrix::open(file).map_err(|e| input(e.to_string()))?;
    let text = fs::read(ids_path)
        .map_err(|e| input(format!("{}: cannot read: {e}", ids_path.display())))?;
    let text = String::from_utf8(text).map_err(|e| {
        input(format!(
            "{}: not UTF-8 text (byte {})",
            ids_path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    let ids: Vec<&str> = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    if ids.len() != matrix.rows() {
        return Err(input(format!(
            "{}: has {} ids but {} has {} rows",
            ids_path.display(),
            ids.len(),
            file.display(),
            matrix.rows()
        )));
    }
    let mut builder = CatalogBuilder::new(data_dir, matrix.cols(), normalize)?;
    let mut row = Vec::with_capacity(matrix.cols());
    for (r, id) in ids.iter().enumerate() {
        matrix
            .row_into(r, &mut row)
            .map_err(|e| input(e.to_string()))?;
        builder.push(id, &mut row).map_err(|e| match e {
            RowError::EmptyId | RowError::Duplicate { .. } => {
                input(format!("{}: line {}: {e}", ids_path.display(), r + 1))
            }
            _ => input(format!("{}: row {r}: {e}", file.display())),
        })?;
    }
    Ok((
        builder,
        format!("{} + {}", file.display(), ids_path.display()),
    ))
}

fn import_delimited(
    data_dir: &Path,
    file: &Path,
    sep: u8,
    normalize: bool,
) -> Result<Built, CatalogError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(sep)
        .from_path(file)
        .map_err(|e| input(format!("{}: cannot read: {e}", file.display())))?;
    let mut builder: Option<CatalogBuilder> = None;
    let mut record = csv::StringRecord::new();
    let mut values = Vec::new();
    let mut first = true;
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Err(input(format!("{}: line {line}: {e}", file.display())));
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        if std::mem::take(&mut first) && is_header(&record) {
            continue;
        }
        let id = record.get(0).unwrap_or("").trim();
        values.clear();
        for (c, field) in record.iter().enumerate().skip(1) {
            let v: f32 = field.trim().parse().map_err(|_| {
                input(format!(
                    "{}: line {line}, column {}: {field:?} is not a number",
                    file.display(),
                    c + 1
                ))
            })?;
            values.push(v);
        }
        if builder.is_none() {
            if values.is_empty() {
                return Err(input(format!(
                    "{}: line {line}: no embedding values after the id",
                    file.display()
                )));
            }
            builder = Some(CatalogBuilder::new(data_dir, values.len(), normalize)?);
        }
        if let Some(b) = builder.as_mut() {
            b.push(id, &mut values)
                .map_err(|e| input(format!("{}: line {line}: {e}", file.display())))?;
        }
    }
    let builder = builder.ok_or_else(|| input(format!("{}: no items", file.display())))?;
    Ok((builder, file.display().to_string()))
}

/// A first line whose second field is not a number is a header.
fn is_header(record: &csv::StringRecord) -> bool {
    record
        .get(1)
        .is_some_and(|f| f.trim().parse::<f32>().is_err())
}
