//! Parquet, the data lake's format: reading columns of any reasonable Arrow type into the values
//! pinnersage needs, and writing the files pinnersage produces. Errors name the file, the column
//! and, for bad values, the row.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::timestamp::{TimestampError, parse_timestamp, unix_seconds};

/// Rows per record batch when reading.
const READ_BATCH: usize = 8192;

/// What can go wrong reading or writing a Parquet file; messages name the file or the column.
#[derive(Debug, thiserror::Error)]
pub enum ParquetIoError {
    /// The file could not be opened or created.
    #[error("{}: cannot {action}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// `read` or `write`.
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not Parquet (or its footer is damaged).
    #[error("{}: not a readable Parquet file: {source}", path.display())]
    NotParquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// Reading, encoding or writing failed part-way.
    #[error("{}: {message}", path.display())]
    Failed {
        /// The file.
        path: PathBuf,
        /// What the Parquet, Arrow or file-system layer said.
        message: String,
    },
    /// A required column is missing.
    #[error("{}: no column {name:?} (columns: {columns})", path.display())]
    NoColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        name: String,
        /// The columns the file has, comma-separated.
        columns: String,
    },
    /// A column holds values of an unusable type.
    #[error("column {name:?} holds {found}, expected {expected}")]
    ColumnType {
        /// The column.
        name: String,
        /// The Arrow type found.
        found: String,
        /// What the reader accepts.
        expected: &'static str,
    },
}

/// A [`ParquetIoError::Failed`] for `path` from whatever a library said.
fn failed<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> ParquetIoError + '_ {
    move |e| ParquetIoError::Failed {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn column_type(
    name: &str,
    found: impl std::fmt::Display,
    expected: &'static str,
) -> ParquetIoError {
    ParquetIoError::ColumnType {
        name: name.to_owned(),
        found: found.to_string(),
        expected,
    }
}

/// A Parquet file opened for reading, batch by batch.
pub struct ParquetReader {
    path: PathBuf,
    schema: SchemaRef,
    batches: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    rows_before: usize,
}

impl std::fmt::Debug for ParquetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetReader")
            .field("path", &self.path)
            .finish()
    }
}

impl ParquetReader {
    /// Opens `path`; the error names the file.
    pub fn open(path: &Path) -> Result<Self, ParquetIoError> {
        let file = File::open(path).map_err(|source| ParquetIoError::File {
            path: path.to_path_buf(),
            action: "read",
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| {
            ParquetIoError::NotParquet {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let schema = builder.schema().clone();
        let batches = builder
            .with_batch_size(READ_BATCH)
            .build()
            .map_err(failed(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            schema,
            batches,
            rows_before: 0,
        })
    }

    /// The file's Arrow schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The column names, for error messages.
    pub fn column_names(&self) -> String {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The first of `candidates` that is a column of the file.
    pub fn find_column(&self, candidates: &[&str]) -> Option<String> {
        candidates
            .iter()
            .find(|c| self.schema.field_with_name(c).is_ok())
            .map(|c| (*c).to_owned())
    }

    /// `name`, or an error naming the file and listing its columns.
    pub fn require_column(&self, name: &str) -> Result<String, ParquetIoError> {
        self.find_column(&[name])
            .ok_or_else(|| ParquetIoError::NoColumn {
                path: self.path.clone(),
                name: name.to_owned(),
                columns: self.column_names(),
            })
    }

    /// The next record batch and the 0-based row number of its first row.
    pub fn next_batch(&mut self) -> Option<Result<(usize, RecordBatch), ParquetIoError>> {
        let batch = self.batches.next()?;
        Some(
            batch
                .map(|b| {
                    let first = self.rows_before;
                    self.rows_before += b.num_rows();
                    (first, b)
                })
                .map_err(failed(&self.path)),
        )
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    batch
        .column_by_name(name)
        .expect("column checked against the schema")
}

/// A column of ids (strings or integers) as text; `None` for nulls.
pub fn text_column(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, ParquetIoError> {
    texts(column(batch, name), name)
}

/// A column of lists of ids (`List` or `LargeList` of strings or integers) as text per row;
/// `None` for a null list, `Some(None)` entries for null ids inside a list.
pub fn text_list_column(
    batch: &RecordBatch,
    name: &str,
) -> Result<Vec<Option<Vec<Option<String>>>>, ParquetIoError> {
    let col = column(batch, name);
    let collect = |is_null: &dyn Fn(usize) -> bool, value: &dyn Fn(usize) -> ArrayRef| {
        (0..col.len())
            .map(|i| {
                if is_null(i) {
                    Ok(None)
                } else {
                    texts(&value(i), name).map(Some)
                }
            })
            .collect::<Result<Vec<_>, ParquetIoError>>()
    };
    match col.data_type() {
        DataType::List(_) => {
            let list = col.as_list::<i32>();
            collect(&|i| list.is_null(i), &|i| list.value(i))
        }
        DataType::LargeList(_) => {
            let list = col.as_list::<i64>();
            collect(&|i| list.is_null(i), &|i| list.value(i))
        }
        other => Err(column_type(name, other, "lists of strings or integers")),
    }
}

/// Ids (strings or integers) as text; `None` for nulls. `name` is the column, for errors.
fn texts(col: &ArrayRef, name: &str) -> Result<Vec<Option<String>>, ParquetIoError> {
    macro_rules! ints {
        ($t:ty) => {
            col.as_primitive::<$t>()
                .iter()
                .map(|v| v.map(|v| v.to_string()))
                .collect()
        };
    }
    Ok(match col.data_type() {
        DataType::Utf8 => col
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect(),
        DataType::LargeUtf8 => col
            .as_string::<i64>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect(),
        DataType::Utf8View => col
            .as_string_view()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect(),
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        other => return Err(column_type(name, other, "strings or integers")),
    })
}

/// A numeric column as `f64`; `None` for nulls.
pub fn number_column(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>, ParquetIoError> {
    let col = column(batch, name);
    macro_rules! nums {
        ($t:ty) => {
            col.as_primitive::<$t>()
                .iter()
                .map(|v| v.map(|v| v as f64))
                .collect()
        };
    }
    Ok(match col.data_type() {
        DataType::Float32 => nums!(Float32Type),
        DataType::Float64 => nums!(Float64Type),
        DataType::Int8 => nums!(Int8Type),
        DataType::Int16 => nums!(Int16Type),
        DataType::Int32 => nums!(Int32Type),
        DataType::Int64 => nums!(Int64Type),
        DataType::UInt8 => nums!(UInt8Type),
        DataType::UInt16 => nums!(UInt16Type),
        DataType::UInt32 => nums!(UInt32Type),
        DataType::UInt64 => nums!(UInt64Type),
        other => return Err(column_type(name, other, "numbers")),
    })
}

/// A time column as unix seconds: integers or floats (seconds), Arrow timestamps (any unit), or
/// strings (unix seconds or RFC 3339). Per-row problems are returned per row.
pub fn time_column(
    batch: &RecordBatch,
    name: &str,
) -> Result<Vec<Option<Result<i64, TimestampError>>>, ParquetIoError> {
    let col = column(batch, name);
    macro_rules! stamps {
        ($t:ty, $div:expr) => {
            col.as_primitive::<$t>()
                .iter()
                .map(|v| v.map(|v| Ok(v.div_euclid($div))))
                .collect()
        };
    }
    Ok(match col.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => stamps!(TimestampSecondType, 1),
        DataType::Timestamp(TimeUnit::Millisecond, _) => stamps!(TimestampMillisecondType, 1_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            stamps!(TimestampMicrosecondType, 1_000_000)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            stamps!(TimestampNanosecondType, 1_000_000_000)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => text_column(batch, name)?
            .into_iter()
            .map(|v| v.map(|t| parse_timestamp(&t)))
            .collect(),
        _ => number_column(batch, name)
            .map_err(|_| {
                column_type(
                    name,
                    col.data_type(),
                    "unix seconds, a timestamp or RFC 3339 text",
                )
            })?
            .into_iter()
            .map(|v| v.map(|s| unix_seconds(s).ok_or(TimestampError::OutOfRange(s))))
            .collect(),
    })
}

/// A column of vectors (`List`, `LargeList` or `FixedSizeList` of `Float32`/`Float64`) as `f32`
/// rows; `None` for null rows.
pub fn vector_column(
    batch: &RecordBatch,
    name: &str,
) -> Result<Vec<Option<Vec<f32>>>, ParquetIoError> {
    let col = column(batch, name);
    let values_of = |values: &ArrayRef| -> Result<Vec<f32>, ParquetIoError> {
        match values.data_type() {
            DataType::Float32 => Ok(values.as_primitive::<Float32Type>().values().to_vec()),
            DataType::Float64 => Ok(values
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .map(|&v| v as f32)
                .collect()),
            other => Err(column_type(name, format!("lists of {other}"), "floats")),
        }
    };
    let rows = col.len();
    let collect = |is_null: &dyn Fn(usize) -> bool, value: &dyn Fn(usize) -> ArrayRef| {
        (0..rows)
            .map(|i| {
                if is_null(i) {
                    Ok(None)
                } else {
                    values_of(&value(i)).map(Some)
                }
            })
            .collect::<Result<Vec<_>, ParquetIoError>>()
    };
    let out = match col.data_type() {
        DataType::FixedSizeList(_, _) => {
            let list = col.as_fixed_size_list();
            collect(&|i| list.is_null(i), &|i| list.value(i))?
        }
        DataType::List(_) => {
            let list = col.as_list::<i32>();
            collect(&|i| list.is_null(i), &|i| list.value(i))?
        }
        DataType::LargeList(_) => {
            let list = col.as_list::<i64>();
            collect(&|i| list.is_null(i), &|i| list.value(i))?
        }
        other => return Err(column_type(name, other, "a list of floats")),
    };
    Ok(out)
}

/// The first column whose type is a list (for finding the embedding column).
pub fn first_list_column(schema: &Schema) -> Option<String> {
    schema
        .fields()
        .iter()
        .find(|f| {
            matches!(
                f.data_type(),
                DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _)
            )
        })
        .map(|f| f.name().clone())
}

/// Writes record batches to a Parquet file (Snappy), creating it atomically: the data goes to
/// a temporary file that is renamed into place when complete.
pub struct ParquetWriter {
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
    schema: SchemaRef,
}

impl std::fmt::Debug for ParquetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl ParquetWriter {
    /// Starts `path` with the given columns.
    pub fn create(path: &Path, fields: Vec<Field>) -> Result<Self, ParquetIoError> {
        Self::with_schema(path, Arc::new(Schema::new(fields)))
    }

    /// Starts `path` with `schema` (another file's, to write its rows elsewhere).
    pub fn with_schema(path: &Path, schema: SchemaRef) -> Result<Self, ParquetIoError> {
        let tmp = path.with_extension("parquet.partial");
        let file = File::create(&tmp).map_err(|source| ParquetIoError::File {
            path: tmp.clone(),
            action: "write",
            source,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer =
            ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(failed(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            writer,
            schema,
        })
    }

    /// Appends one batch of columns (in schema order).
    pub fn write(&mut self, columns: Vec<ArrayRef>) -> Result<(), ParquetIoError> {
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(failed(&self.path))?;
        self.writer.write(&batch).map_err(failed(&self.path))
    }

    /// Appends `batch`, whose columns must have the file's types; a row group is written out
    /// once the rows held in memory pass 64 MiB, so many files can be written at once.
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), ParquetIoError> {
        self.write(batch.columns().to_vec())?;
        if self.writer.in_progress_size() > 64 << 20 {
            self.writer.flush().map_err(failed(&self.path))?;
        }
        Ok(())
    }

    /// Finishes the file and moves it into place.
    pub fn finish(self) -> Result<PathBuf, ParquetIoError> {
        let file = self.writer.into_inner().map_err(failed(&self.path))?;
        file.sync_all().map_err(failed(&self.path))?;
        std::fs::rename(&self.tmp, &self.path).map_err(failed(&self.path))?;
        Ok(self.path)
    }
}

/// An Arrow field of `dim`-long `Float32` vectors.
pub fn vector_field(name: &str, dim: usize) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, false)),
            dim as i32,
        ),
        false,
    )
}

/// A `FixedSizeList<Float32>` column from row-major `values` of rows of `dim`.
pub fn vector_array(values: Vec<f32>, dim: usize) -> ArrayRef {
    let values = arrow_array::Float32Array::from(values);
    Arc::new(arrow_array::FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        dim as i32,
        Arc::new(values),
        None,
    ))
}

impl pinnersage_core::error::Kind for ParquetIoError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::{self, *};
        match self {
            Self::File { source, .. } => ErrorKind::of_io(source),
            Self::Failed { .. } => Internal,
            Self::NotParquet { .. } | Self::NoColumn { .. } | Self::ColumnType { .. } => BadInput,
        }
    }
}
