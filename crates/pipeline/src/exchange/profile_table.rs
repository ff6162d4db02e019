//! Profiles as a table: one row per cluster, the schema `batch --out` writes, the Python
//! package and the Spark job return, and `import profiles` reads.
//!
//! | column        | type           | meaning                                                    |
//! |---------------|----------------|------------------------------------------------------------|
//! | `user`        | string         | the user id                                                |
//! | `rank`        | uint32         | the cluster's place in the profile, 0 = most important     |
//! | `medoid`      | string         | the item id that represents the cluster                    |
//! | `size`        | uint32         | actions in the cluster (an item engaged twice counts twice)|
//! | `importance`  | float64        | `Σ w·exp(−λ·age_days)` over the cluster's actions          |
//! | `latest_time` | int64          | the cluster's most recent action, unix seconds             |
//! | `members`     | list\<string\> | the cluster's distinct items, most recent first            |
//! | `member_importance` | list\<float32\> | each member's `Σ w·exp(−λ·age_days)`, in `members` order |
//! | `alpha`       | float64, optional | the variant the row belongs to (the user's clusters cut at this alpha); null or absent: the generation's own cut |
//!
//! An item belongs to one cluster of a user (the first, in rank order, that holds it). The
//! members' importance weights the user's global interest (their decay average); files
//! written before it existed lack the column and are still read. Only a batch with variants
//! (`batch --variant-alpha ... --out`) writes the `alpha` column.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray, UInt32Array};
use arrow_schema::{DataType, Field};
use pinnersage_catalog::parquet_io::{ParquetIoError, ParquetWriter};
use pinnersage_store::profiles::{StoredItem, StoredProfile};

/// The column names, in schema order.
pub const COLUMNS: [&str; 8] = [
    "user",
    "rank",
    "medoid",
    "size",
    "importance",
    "latest_time",
    "members",
    MEMBER_IMPORTANCE,
];

/// The optional column: each member's importance (absent from files of older versions).
pub const MEMBER_IMPORTANCE: &str = "member_importance";

/// The optional column of a table with variants: the alpha a row's profile is cut at (null: the
/// generation's own).
pub const ALPHA: &str = "alpha";

/// The columns every profile file must have.
pub const REQUIRED_COLUMNS: [&str; 7] = [
    COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], COLUMNS[4], COLUMNS[5], COLUMNS[6],
];

/// The Arrow fields of the profile table.
pub fn fields() -> Vec<Field> {
    vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("rank", DataType::UInt32, false),
        Field::new("medoid", DataType::Utf8, false),
        Field::new("size", DataType::UInt32, false),
        Field::new("importance", DataType::Float64, false),
        Field::new("latest_time", DataType::Int64, false),
        Field::new(
            "members",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new(
            MEMBER_IMPORTANCE,
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            true,
        ),
    ]
}

/// The Arrow fields of a profile table with variants: [`fields`] and the [`ALPHA`] column.
pub fn variant_fields() -> Vec<Field> {
    let mut fields = fields();
    fields.push(Field::new(ALPHA, DataType::Float64, true));
    fields
}

/// The profile table as Spark types it (the Spark job's output): [`fields`] (with `variants`,
/// [`variant_fields`]) with the unsigned columns (`rank`, `size`) signed, as Spark has no
/// unsigned integers, and every column nullable, as a DDL schema's are.
pub fn spark_fields(variants: bool) -> Vec<Field> {
    let fields = if variants { variant_fields() } else { fields() };
    fields
        .into_iter()
        .map(|f| match f.data_type() {
            DataType::UInt32 => f.with_data_type(DataType::Int32),
            _ => f,
        })
        .map(|f| f.with_nullable(true))
        .collect()
}

/// The Spark DDL of [`spark_fields`], as `DataFrame.mapInArrow` takes it.
///
/// ```
/// use pinnersage_pipeline::exchange::profile_table::spark_ddl;
/// assert!(spark_ddl(false).starts_with("user string, rank int, medoid string, size int,"));
/// assert!(spark_ddl(false).ends_with("members array<string>, member_importance array<float>"));
/// assert!(spark_ddl(true).ends_with("member_importance array<float>, alpha double"));
/// ```
pub fn spark_ddl(variants: bool) -> String {
    fn spark_type(t: &DataType) -> String {
        match t {
            DataType::Utf8 => "string".into(),
            DataType::Int32 => "int".into(),
            DataType::Int64 => "long".into(),
            DataType::Float32 => "float".into(),
            DataType::Float64 => "double".into(),
            DataType::List(item) => format!("array<{}>", spark_type(item.data_type())),
            other => unreachable!("the profile table has no {other} column"),
        }
    }
    spark_fields(variants)
        .iter()
        .map(|f| format!("{} {}", f.name(), spark_type(f.data_type())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns (in [`fields`] order) of `profiles`, one row per cluster, users in the given
/// order and clusters by rank.
///
/// ```
/// use pinnersage_pipeline::exchange::profile_table::arrays;
/// use pinnersage_store::profiles::{StoredCluster, StoredItem, StoredProfile};
/// let profile = StoredProfile {
///     clusters: vec![StoredCluster { medoid: "b".into(), size: 3, importance: 2.5, latest_time: 9 }],
///     items: vec![StoredItem { item: "b".into(), cluster: 0, importance: Some(1.5) },
///                 StoredItem { item: "a".into(), cluster: 0, importance: Some(1.0) }],
/// };
/// let columns = arrays(&[("u1".to_string(), profile)]);
/// assert_eq!(columns.len(), 8);
/// assert_eq!(columns[0].len(), 1);
/// ```
pub fn arrays(profiles: &[(String, StoredProfile)]) -> Vec<ArrayRef> {
    let rows: usize = profiles.iter().map(|(_, p)| p.clusters.len()).sum();
    let (mut user, mut rank, mut medoid) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    let (mut size, mut importance, mut latest) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    let mut members = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Utf8,
        true,
    )));
    let mut member_importance = ListBuilder::new(Float32Builder::new())
        .with_field(Arc::new(Field::new("item", DataType::Float32, true)));
    let mut by_cluster: Vec<Vec<&StoredItem>> = Vec::new();
    for (u, p) in profiles {
        by_cluster.clear();
        by_cluster.resize(p.clusters.len(), Vec::new());
        for item in &p.items {
            if let Some(list) = by_cluster.get_mut(item.cluster as usize) {
                list.push(item);
            }
        }
        let known = p.items.iter().all(|i| i.importance.is_some());
        for (r, c) in p.clusters.iter().enumerate() {
            user.push(u.as_str());
            rank.push(r as u32);
            medoid.push(c.medoid.as_str());
            size.push(c.size);
            importance.push(c.importance);
            latest.push(c.latest_time);
            for item in &by_cluster[r] {
                members.values().append_value(&item.item);
                if let (true, Some(v)) = (known, item.importance) {
                    member_importance.values().append_value(v);
                }
            }
            members.append(true);
            member_importance.append(known);
        }
    }
    vec![
        Arc::new(StringArray::from(user)) as ArrayRef,
        Arc::new(UInt32Array::from(rank)),
        Arc::new(StringArray::from(medoid)),
        Arc::new(UInt32Array::from(size)),
        Arc::new(Float64Array::from(importance)),
        Arc::new(Int64Array::from(latest)),
        Arc::new(members.finish()),
        Arc::new(member_importance.finish()),
    ]
}

/// The columns (in [`variant_fields`] order) of `profiles` cut at `alpha` (`None`: the
/// generation's own cut, a null [`ALPHA`]).
pub fn cut_arrays(alpha: Option<f64>, profiles: &[(String, StoredProfile)]) -> Vec<ArrayRef> {
    let mut columns = arrays(profiles);
    let rows = columns[0].len();
    columns.push(Arc::new(Float64Array::from(vec![alpha; rows])));
    columns
}

/// A Parquet file of profiles being written (the batch's `--out`).
pub struct ProfilesParquet {
    writer: ParquetWriter,
    /// Whether the file has the [`ALPHA`] column.
    variants: bool,
}

impl ProfilesParquet {
    /// Creates `path` with the profile table's schema.
    pub fn create(path: &Path) -> Result<Self, ParquetIoError> {
        let writer = ParquetWriter::create(path, fields())?;
        Ok(Self {
            writer,
            variants: false,
        })
    }

    /// Creates `path` with the profile table's schema and the [`ALPHA`] column, for a
    /// generation's profiles and its variants' ([`ProfilesParquet::write_variant`]).
    pub fn with_variants(path: &Path) -> Result<Self, ParquetIoError> {
        let writer = ParquetWriter::create(path, variant_fields())?;
        Ok(Self {
            writer,
            variants: true,
        })
    }

    /// Appends `profiles` (one row group's worth or less).
    pub fn write(&mut self, profiles: &[(String, StoredProfile)]) -> Result<(), ParquetIoError> {
        self.write_cut(None, profiles)
    }

    /// Appends the profiles of the variant cut at `alpha` (a file made
    /// [`ProfilesParquet::with_variants`]).
    pub fn write_variant(
        &mut self,
        alpha: f64,
        profiles: &[(String, StoredProfile)],
    ) -> Result<(), ParquetIoError> {
        self.write_cut(Some(alpha), profiles)
    }

    fn write_cut(
        &mut self,
        alpha: Option<f64>,
        profiles: &[(String, StoredProfile)],
    ) -> Result<(), ParquetIoError> {
        let columns = match self.variants {
            true => cut_arrays(alpha, profiles),
            false => arrays(profiles),
        };
        self.writer.write(columns)
    }

    /// Finishes the file and returns its path.
    pub fn finish(self) -> Result<PathBuf, ParquetIoError> {
        self.writer.finish()
    }
}
