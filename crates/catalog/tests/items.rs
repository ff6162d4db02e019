//! Importing items: every format, every bad-input case (error text asserted), atomic replacement.

use std::fs;
use std::path::{Path, PathBuf};

use pinnersage_catalog::catalog::{Catalog, CatalogError, ImportSummary};
use pinnersage_catalog::items::{ItemsOptions, import_items};
use pinnersage_catalog::npy;

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ps-items-{name}-"))
        .tempdir()
        .unwrap()
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, content).unwrap();
    p
}

/// Imports without attributes and returns the catalog generation's summary.
fn import(
    data: &Path,
    file: &Path,
    ids: Option<&Path>,
    normalize: bool,
) -> Result<ImportSummary, CatalogError> {
    let options = ItemsOptions {
        ids,
        normalize,
        ..Default::default()
    };
    import_items(data, file, &options).map(|imported| imported.catalog)
}

fn import_err(data: &Path, file: &Path, ids: Option<&Path>, normalize: bool) -> String {
    match import(data, file, ids, normalize) {
        Err(CatalogError::Input(msg)) => msg,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn npy_with_ids_round_trips_and_looks_up_by_id() {
    let scratch_dir = scratch("npy");
    let dir = scratch_dir.path();
    let x = dir.join("x.npy");
    npy::write_f32_matrix(&x, &[3.0, 4.0, 0.0, 1.0, -2.0, 0.0], 3, 2).unwrap();
    let ids = write(dir, "ids.txt", "b\r\na\nc\n");
    let summary = import(dir, &x, Some(&ids), false).unwrap();
    assert_eq!(
        (summary.meta.rows, summary.meta.dim, summary.meta.normalized),
        (3, 2, false)
    );
    let c = Catalog::open(dir).unwrap();
    assert_eq!((c.rows(), c.dim()), (3, 2));
    assert_eq!(c.embeddings(), &[3.0, 4.0, 0.0, 1.0, -2.0, 0.0]);
    assert_eq!([c.id(0), c.id(1), c.id(2)], ["b", "a", "c"]);
    assert_eq!(
        [c.row_of("a"), c.row_of("b"), c.row_of("c"), c.row_of("d")],
        [Some(1), Some(0), Some(2), None]
    );
}

#[test]
fn csv_with_header_tsv_without_and_normalisation() {
    let scratch_dir = scratch("csv");
    let dir = scratch_dir.path();
    let csv = write(
        dir,
        "items.csv",
        "item_id,e0,e1\nshoe,3,4\n\"hat, red\",0,2\n",
    );
    import(dir, &csv, None, true).unwrap();
    let c = Catalog::open(dir).unwrap();
    assert!(c.meta().normalized);
    assert_eq!(c.embedding(c.row_of("shoe").unwrap()), &[0.6, 0.8]);
    assert_eq!(c.embedding(c.row_of("hat, red").unwrap()), &[0.0, 1.0]);

    let tsv = write(dir, "items.tsv", "10\t1.5\t-1\t0\n20\t0\t0\t2e-3\n");
    import(dir, &tsv, None, false).unwrap();
    let c = Catalog::open(dir).unwrap();
    assert_eq!((c.rows(), c.dim()), (2, 3));
    assert_eq!(c.embedding(1), &[0.0, 0.0, 2e-3]);
}

#[test]
fn bad_files_are_refused_with_file_and_place() {
    let scratch_dir = scratch("bad");
    let dir = scratch_dir.path();
    let d = dir.display().to_string();
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "dup.csv",
            "a,1,2\nb,3,4\na,5,6\n",
            format!(
                "{d}/dup.csv: line 3: item id \"a\" duplicates item 0 (0-based) of this import"
            ),
        ),
        (
            "ragged.csv",
            "a,1,2\nb,3\n",
            format!("{d}/ragged.csv: line 2: has 1 values, expected 2"),
        ),
        (
            "word.csv",
            "a,1,2\nb,3,x\n",
            format!("{d}/word.csv: line 2, column 3: \"x\" is not a number"),
        ),
        (
            "nan.csv",
            "a,1,NaN\n",
            format!("{d}/nan.csv: line 1: value 1 is not finite (NaN)"),
        ),
        ("empty.csv", "", format!("{d}/empty.csv: no items")),
        (
            "header_only.csv",
            "id,x,y\n",
            format!("{d}/header_only.csv: no items"),
        ),
        (
            "noid.csv",
            "a,1\n,2\n",
            format!("{d}/noid.csv: line 2: the item id is empty"),
        ),
        (
            "novalues.csv",
            "a\n",
            format!("{d}/novalues.csv: line 1: no embedding values after the id"),
        ),
    ];
    for (name, content, expected) in cases {
        let f = write(dir, name, content);
        assert_eq!(import_err(dir, &f, None, false), expected, "{name}");
    }
    let zero = write(dir, "zero.csv", "a,0,0\n");
    assert_eq!(
        import_err(dir, &zero, None, true),
        format!("{d}/zero.csv: line 1: the vector has zero length and cannot be L2-normalised")
    );
    let pq = write(dir, "items.xlsx", "");
    assert!(import_err(dir, &pq, None, false).contains("unsupported items file type .xlsx"));

    let x = dir.join("x.npy");
    npy::write_f32_matrix(&x, &[1.0, 2.0, f32::INFINITY, 4.0], 2, 2).unwrap();
    let ids2 = write(dir, "ids2.txt", "a\nb\n");
    assert_eq!(
        import_err(dir, &x, Some(&ids2), false),
        format!("{d}/x.npy: value at row 1, column 0 is not finite in float32 (inf)")
    );
    assert_eq!(
        import_err(dir, &x, None, false),
        format!(
            "{d}/x.npy: NPY embeddings need `ids`, a file of one item id per line, in row order"
        )
    );
    let ok = dir.join("ok.npy");
    npy::write_f32_matrix(&ok, &[1.0, 2.0, 3.0, 4.0], 2, 2).unwrap();
    let ids3 = write(dir, "ids3.txt", "a\nb\nc\n");
    assert_eq!(
        import_err(dir, &ok, Some(&ids3), false),
        format!("{d}/ids3.txt: has 3 ids but {d}/ok.npy has 2 rows")
    );
    let dup = write(dir, "dup.txt", "a\na\n");
    assert_eq!(
        import_err(dir, &ok, Some(&dup), false),
        format!("{d}/dup.txt: line 2: item id \"a\" duplicates item 0 (0-based) of this import")
    );
    // Nothing was ever imported: no catalog, and no staging directories left behind.
    assert!(matches!(Catalog::open(dir), Err(CatalogError::Missing(_))));
    let leftovers: Vec<_> = fs::read_dir(dir.join("catalog")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_failed_reimport_keeps_the_catalog_and_a_good_one_replaces_it() {
    let scratch_dir = scratch("replace");
    let dir = scratch_dir.path();
    let v1 = write(dir, "v1.csv", "a,1,0\nb,0,1\n");
    let first = import(dir, &v1, None, false).unwrap().generation;
    let opened_before = Catalog::open(dir).unwrap();

    let bad = write(dir, "bad.csv", "a,1,0\nb,0,1\nc,oops,1\n");
    assert!(import_err(dir, &bad, None, false).contains("line 3"));
    let still = Catalog::open(dir).unwrap();
    assert_eq!((still.dir(), still.rows()), (first.as_path(), 2));

    let v2 = write(dir, "v2.csv", "x,1,1,1\n");
    let second = import(dir, &v2, None, false).unwrap().generation;
    let now = Catalog::open(dir).unwrap();
    assert_eq!((now.dir(), now.rows(), now.dim()), (second.as_path(), 1, 3));
    // A reader that opened the previous generation keeps working.
    assert_eq!(opened_before.embedding(1), &[0.0, 1.0]);
    let v3 = write(dir, "v3.csv", "y,2\n");
    import(dir, &v3, None, false).unwrap();
    assert!(
        !first.exists(),
        "generations older than the previous one are removed"
    );
    assert!(second.exists());
}

#[test]
fn damaged_catalog_files_are_reported_not_trusted() {
    let scratch_dir = scratch("corrupt");
    let dir = scratch_dir.path();
    let f = write(dir, "a.csv", "a,1,2\nb,3,4\n");
    let generation = import(dir, &f, None, false).unwrap().generation;
    let emb = generation.join("embeddings.f32");
    let bytes = fs::read(&emb).unwrap();
    fs::write(&emb, &bytes[..bytes.len() - 4]).unwrap();
    let err = Catalog::open(dir).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: corrupt catalog: 12 bytes, expected 16", emb.display())
    );
}

#[test]
fn fortran_ordered_float64_npy_is_read_in_row_order() {
    let scratch_dir = scratch("fortran");
    let dir = scratch_dir.path();
    let header = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }\n";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0] {
        bytes.extend(v.to_le_bytes());
    }
    let x = dir.join("f.npy");
    fs::write(&x, bytes).unwrap();
    let ids = write(dir, "ids.txt", "p\nq\n");
    import(dir, &x, Some(&ids), false).unwrap();
    let c = Catalog::open(dir).unwrap();
    assert_eq!(c.embeddings(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

#[test]
fn parquet_items_with_integer_ids_and_clear_errors() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use arrow_schema::{DataType, Field};
    use pinnersage_catalog::parquet_io::{ParquetWriter, vector_array, vector_field};

    let scratch_dir = scratch("parquet");

    let dir = scratch_dir.path();
    let p = dir.join("items.parquet");
    let mut w = ParquetWriter::create(
        &p,
        vec![
            Field::new("item_id", DataType::Int64, false),
            vector_field("vec", 2),
        ],
    )
    .unwrap();
    w.write(vec![
        Arc::new(Int64Array::from(vec![10, 20])) as ArrayRef,
        vector_array(vec![3.0, 4.0, 0.0, 2.0], 2),
    ])
    .unwrap();
    w.finish().unwrap();
    import(dir, &p, None, true).unwrap();
    let c = Catalog::open(dir).unwrap();
    assert_eq!(c.embedding(c.row_of("10").unwrap()), &[0.6, 0.8]);
    assert_eq!(c.row_of("20"), Some(1));

    let q = dir.join("noid.parquet");
    let mut w = ParquetWriter::create(
        &q,
        vec![
            Field::new("name", DataType::Utf8, false),
            vector_field("embedding", 2),
        ],
    )
    .unwrap();
    w.write(vec![
        Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
        vector_array(vec![1.0, 0.0], 2),
    ])
    .unwrap();
    w.finish().unwrap();
    assert_eq!(
        import_err(dir, &q, None, false),
        format!(
            "{}: no id column (looked for id, item, item_id; columns: name, embedding)",
            q.display()
        )
    );
    let r = dir.join("dup.parquet");
    let mut w = ParquetWriter::create(
        &r,
        vec![
            Field::new("id", DataType::Utf8, false),
            vector_field("embedding", 1),
        ],
    )
    .unwrap();
    w.write(vec![
        Arc::new(StringArray::from(vec!["a", "a"])) as ArrayRef,
        vector_array(vec![1.0, 2.0], 1),
    ])
    .unwrap();
    w.finish().unwrap();
    assert_eq!(
        import_err(dir, &r, None, false),
        format!(
            "{}: row 1: item id \"a\" duplicates item 0 (0-based) of this import",
            r.display()
        )
    );
    let junk = write(dir, "junk.parquet", "not parquet");
    assert!(
        import_err(dir, &junk, None, false).contains("junk.parquet: not a readable Parquet file")
    );
    // The good catalog is still the current one.
    assert_eq!(Catalog::open(dir).unwrap().rows(), 2);
}

/// Imports `items.csv` (ids a, b, c) with the attributes file `name` holding `content`.
fn import_with_attributes(
    dir: &Path,
    name: &str,
    content: &str,
    id_col: Option<&str>,
) -> Result<Catalog, CatalogError> {
    let items = write(dir, "items.csv", "a,1,0\nb,0,1\nc,1,1\n");
    let attributes = write(dir, name, content);
    let options = ItemsOptions {
        attributes: Some(&attributes),
        attributes_id_col: id_col,
        ..Default::default()
    };
    import_items(dir, &items, &options)?;
    Ok(Catalog::open(dir).unwrap())
}

#[test]
fn attributes_from_csv_and_json_lines_are_joined_on_the_id() {
    let scratch_dir = scratch("attrs-ok");
    let dir = scratch_dir.path();
    let c = import_with_attributes(
        dir,
        "movies.csv",
        "movieId,title,genres\r\nb,\"Heat, the film (1995)\",Action|Crime\r\nzz,Unknown,x\r\na,Up (2009),Animation\r\n",
        Some("movieId"),
    )
    .unwrap();
    assert_eq!(
        c.attributes(c.row_of("b").unwrap()),
        Some(r#"{"genres":"Action|Crime","title":"Heat, the film (1995)"}"#)
    );
    assert_eq!(
        c.attributes(0),
        Some(r#"{"genres":"Animation","title":"Up (2009)"}"#)
    );
    assert_eq!(c.attributes(2), None, "c has no attributes");

    let c = import_with_attributes(
        dir,
        "attrs.jsonl",
        "{\"id\": \"c\", \"title\": \"Cee\", \"year\": 2001, \"tags\": [\"x\"]}\n\n{\"id\": \"a\", \"url\": \"https://a\"}\n",
        None,
    )
    .unwrap();
    assert_eq!(
        c.attributes(2),
        Some(r#"{"tags":["x"],"title":"Cee","year":2001}"#)
    );
    assert_eq!(c.attributes(0), Some(r#"{"url":"https://a"}"#));
    assert_eq!(c.attributes(1), None);
}

#[test]
fn attributes_from_parquet_skip_list_columns() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field};
    use pinnersage_catalog::parquet_io::{ParquetWriter, vector_array, vector_field};

    let scratch_dir = scratch("attrs-parquet");

    let dir = scratch_dir.path();
    let p = dir.join("items.parquet");
    let mut w = ParquetWriter::create(
        &p,
        vec![
            Field::new("id", DataType::Utf8, false),
            vector_field("embedding", 2),
            Field::new("title", DataType::Utf8, true),
            Field::new("year", DataType::Int64, false),
            Field::new("price", DataType::Float64, false),
            Field::new("new", DataType::Boolean, false),
        ],
    )
    .unwrap();
    w.write(vec![
        Arc::new(StringArray::from(vec!["p", "q"])) as ArrayRef,
        vector_array(vec![3.0, 4.0, 0.0, 2.0], 2),
        Arc::new(StringArray::from(vec![Some("Pea"), None])),
        Arc::new(Int64Array::from(vec![1999, 2024])),
        Arc::new(Float64Array::from(vec![2.5, 10.0])),
        Arc::new(BooleanArray::from(vec![false, true])),
    ])
    .unwrap();
    w.finish().unwrap();
    // The items file itself serves as the attributes file.
    let options = ItemsOptions {
        attributes: Some(&p),
        ..Default::default()
    };
    let imported = import_items(dir, &p, &options).unwrap();
    let summary = imported.attributes.unwrap();
    assert_eq!(summary.columns, ["title", "year", "price", "new"]);
    assert_eq!(summary.skipped_columns, ["embedding"]);
    let c = Catalog::open(dir).unwrap();
    assert_eq!(
        c.attributes(0),
        Some(r#"{"new":false,"price":2.5,"title":"Pea","year":1999}"#)
    );
    assert_eq!(
        c.attributes(1),
        Some(r#"{"new":true,"price":10.0,"year":2024}"#)
    );
}

#[test]
fn bad_attribute_files_are_refused_naming_file_and_line_and_keep_the_catalog() {
    let scratch_dir = scratch("attrs-bad");
    let dir = scratch_dir.path();
    let before = import_with_attributes(dir, "ok.csv", "id,title\na,A\n", None).unwrap();
    let cases = [
        (
            "dup.csv",
            "id,title\na,A\nb,B\na,again\n",
            None,
            "dup.csv: line 4: item id \"a\" already has attributes (from line 2)",
        ),
        (
            "noid.csv",
            "name,title\na,A\n",
            None,
            "noid.csv: no id column id, item, item_id (columns: name, title); name it with `attributes_id_col`",
        ),
        (
            "wrongid.csv",
            "id,title\na,A\n",
            Some("movieId"),
            "wrongid.csv: no id column \"movieId\" (columns: id, title); name it with `attributes_id_col`",
        ),
        (
            "ragged.csv",
            "id,title\na,A\nb,B,extra\n",
            None,
            "ragged.csv: line 3: ",
        ),
        (
            "empty-id.csv",
            "id,title\n,A\n",
            None,
            "empty-id.csv: line 2: the item id is empty",
        ),
        (
            "bad.jsonl",
            "{\"id\":\"a\"}\n{\"id\": \"b\",\n",
            None,
            "bad.jsonl: line 2: ",
        ),
        (
            "array.jsonl",
            "[1, 2]\n",
            None,
            "array.jsonl: line 1: not a JSON object",
        ),
        (
            "objid.jsonl",
            "{\"id\": {\"x\": 1}}\n",
            None,
            "objid.jsonl: line 1: \"id\" must be a string or an integer",
        ),
        (
            "none.csv",
            "id,title\nx,X\ny,Y\n",
            None,
            "none.csv: none of its 2 ids is an imported item (is `attributes_id_col` right?)",
        ),
        (
            "header-only.csv",
            "id,title\n",
            None,
            "header-only.csv: no attribute rows",
        ),
        (
            "attrs.xml",
            "<a/>",
            None,
            "attrs.xml: unsupported attributes file type .xml; use .csv/.tsv (with a header), .jsonl or .parquet",
        ),
    ];
    for (name, content, id_col, expected) in cases {
        let msg = match import_with_attributes(dir, name, content, id_col) {
            Err(CatalogError::Input(msg)) => msg,
            other => panic!("{name}: expected an input error, got {other:?}"),
        };
        let shown = msg.replace(&format!("{}/", dir.display()), "");
        assert!(shown.starts_with(expected), "{name}: {shown}");
    }
    let now = Catalog::open(dir).unwrap();
    assert_eq!(now.dir(), before.dir(), "failed imports publish nothing");
    assert_eq!(now.attributes(0), Some(r#"{"title":"A"}"#));
}

#[test]
fn a_crafted_meta_json_cannot_overflow_the_size_checks() {
    let scratch_dir = scratch("overflow");
    let dir = scratch_dir.path();
    let f = write(dir, "a.csv", "a,1,2\nb,3,4\n");
    let generation = import(dir, &f, None, false).unwrap().generation;
    let meta_path = generation.join("meta.json");
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta_path).unwrap()).unwrap();
    // rows * dim * 4 wraps around to 0 in 64 bits; so does (rows + 1) * 8 with rows = 2^61 - 1.
    for (rows, dim) in [
        (1u64 << 62, 4u64),
        ((1 << 61) - 1, 2),
        (5_000_000_000, 2),
        (2, 0),
    ] {
        let mut crafted = meta.clone();
        crafted["rows"] = rows.into();
        crafted["dim"] = dim.into();
        fs::write(&meta_path, crafted.to_string()).unwrap();
        let err = Catalog::open(dir).unwrap_err().to_string();
        assert!(err.contains("corrupt catalog"), "{rows} x {dim}: {err}");
    }
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_second_importer_is_refused_while_one_publishes() {
    use pinnersage_catalog::catalog::CatalogBuilder;
    let scratch_dir = scratch("busy");
    let dir = scratch_dir.path();
    let first = CatalogBuilder::new(dir, 2, false).unwrap();
    let err = CatalogBuilder::new(dir, 2, false).unwrap_err();
    assert!(matches!(err, CatalogError::Busy(_)), "{err}");
    assert!(err.to_string().contains("is busy"), "{err}");
    drop(first);
    assert!(CatalogBuilder::new(dir, 2, false).is_ok());
    fs::remove_dir_all(dir).unwrap();
}
