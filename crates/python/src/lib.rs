//! `pinnersage._native`: the Rust functions behind the `pinnersage` Python package.
//!
//! A thin host over the library API, like the CLI: arrays in, the same library calls, arrays or
//! Arrow IPC out. The Python layer (`python/pinnersage/`) turns numpy, pandas and Arrow inputs
//! into the contiguous arrays these functions take (without a copy when they already are), and
//! their results into `Profile` objects and `pyarrow.Table`s. Every error is a
//! `pinnersage.PinnersageError` (a `ValueError`) carrying the library's message, of the subclass
//! of its kind ([`raise`]); the GIL is released while Rust computes.

use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pinnersage_core::error::{ErrorKind, Failure, Kind};
use pinnersage_core::{Actions, Clusterer, Embeddings, ProfileParams};
use pinnersage_eval::inputs::LoggedEngagement;
use pinnersage_eval::{EvalData, EvalOptions, Evaluation};
use pinnersage_pipeline::batch::memory::{EventTable, StrColumn, Strings, Vectors, build_profiles};
use pinnersage_store::settings::GenerationSettings;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

create_exception!(
    _native,
    PinnersageError,
    PyValueError,
    "Every pinnersage error; as itself, bad input or parameters (the message names the argument, \
     row or column). Its subclasses are the other kinds."
);
create_exception!(
    _native,
    NotFoundError,
    PinnersageError,
    "Something named does not exist."
);
create_exception!(
    _native,
    ConflictError,
    PinnersageError,
    "Valid input that conflicts with the current state."
);
create_exception!(
    _native,
    UnavailableError,
    PinnersageError,
    "A service is down or overloaded: retry later."
);
create_exception!(
    _native,
    InternalError,
    PinnersageError,
    "A failure of the machine, or a bug: please report it."
);

/// The Python exception of a failure: one class per kind, the one place kinds map to types.
fn raise(f: Failure) -> PyErr {
    let message = f.message;
    match f.kind {
        ErrorKind::BadInput => PinnersageError::new_err(message),
        ErrorKind::NotFound => NotFoundError::new_err(message),
        ErrorKind::Conflict => ConflictError::new_err(message),
        ErrorKind::Unavailable => UnavailableError::new_err(message),
        ErrorKind::Internal => InternalError::new_err(message),
    }
}

/// A library error as its Python exception.
fn failed(e: impl Into<Failure>) -> PyErr {
    raise(e.into())
}

/// Bad input found here (an argument's type or layout).
fn error(e: impl std::fmt::Display) -> PyErr {
    raise(Failure::new(ErrorKind::BadInput, e.to_string()))
}

/// `e` with `what` it was about in front of its message, keeping its kind.
fn about(what: &str, e: impl Kind + std::fmt::Display) -> Failure {
    Failure::new(e.kind(), format!("{what}: {e}"))
}

/// A contiguous view of a numpy array, or an error naming the argument.
fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>, name: &str) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| error(format!("{name}: the array must be C-contiguous")))
}

/// Clusters one user's actions: returns `(medoid, members, importance, latest_time)` per
/// cluster in profile order (rows are 0-based into `embeddings`).
#[pyfunction]
#[pyo3(signature = (embeddings, times, now, alpha, lam, max_actions, weights=None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn cluster<'py>(
    py: Python<'py>,
    embeddings: PyReadonlyArray2<'py, f32>,
    times: PyReadonlyArray1<'py, i64>,
    now: i64,
    alpha: f64,
    lam: f64,
    max_actions: usize,
    weights: Option<PyReadonlyArray1<'py, f32>>,
) -> PyResult<Vec<(usize, Bound<'py, PyArray1<i64>>, f64, i64)>> {
    let [rows, dim] = [embeddings.shape()[0], embeddings.shape()[1]];
    let data = embeddings
        .as_slice()
        .map_err(|_| error("embeddings: the array must be C-contiguous"))?;
    let times = slice(&times, "times")?;
    let weights = weights.as_ref().map(|w| slice(w, "weights")).transpose()?;
    let params = ProfileParams {
        alpha,
        lambda: lam,
        max_actions,
    };
    let profile = py
        .detach(|| {
            if rows == 0 {
                return Err(Failure::new(
                    ErrorKind::BadInput,
                    "embeddings: no rows (a user needs at least one action)",
                ));
            }
            let x = Embeddings::new(data, dim).map_err(|e| about("embeddings", e))?;
            let actions = Actions::new(x, times, weights)?;
            Ok(Clusterer::new(params).and_then(|mut c| c.profile(&actions, now))?)
        })
        .map_err(raise)?;
    Ok(profile
        .clusters
        .into_iter()
        .map(|c| {
            let members: Vec<i64> = c.members.iter().map(|&m| m as i64).collect();
            (
                c.medoid,
                PyArray1::from_vec(py, members),
                c.importance,
                c.latest_time,
            )
        })
        .collect())
}

/// A string column passed as Arrow `large_string` buffers: `(offsets, utf8 bytes)`.
type StrArrays<'py> = (PyReadonlyArray1<'py, i64>, PyReadonlyArray1<'py, u8>);

fn str_column<'a>(name: &str, arrays: &'a StrArrays<'_>) -> PyResult<StrColumn<'a>> {
    let offsets = slice(&arrays.0, name)?;
    let data = slice(&arrays.1, name)?;
    StrColumn::new(name, offsets, data).map_err(failed)
}

/// Profiles of many users from an event table; returns the profile table as Arrow IPC stream
/// bytes and the counts as a dict. `embeddings` has one row per event when `item_ids` is `None`
/// (joined upstream), else one row per item id. With `variant_alphas` (not empty) the table has
/// the `alpha` column and each user's clusters cut at those alphas too.
#[pyfunction]
#[pyo3(signature = (users, items, times, weights, actions, item_ids, embeddings, now, window_days, alpha, lam, max_actions, threads, variant_alphas=None))]
#[allow(clippy::too_many_arguments)]
fn profiles<'py>(
    py: Python<'py>,
    users: StrArrays<'py>,
    items: StrArrays<'py>,
    times: PyReadonlyArray1<'py, i64>,
    weights: Option<PyReadonlyArray1<'py, f32>>,
    actions: Option<StrArrays<'py>>,
    item_ids: Option<StrArrays<'py>>,
    embeddings: PyReadonlyArray2<'py, f32>,
    now: i64,
    window_days: u32,
    alpha: f64,
    lam: f64,
    max_actions: usize,
    threads: usize,
    variant_alphas: Option<Vec<f64>>,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyDict>)> {
    let variant_alphas = variant_alphas.unwrap_or_default();
    let users = str_column("user", &users)?;
    let items = str_column("item", &items)?;
    let actions = actions
        .as_ref()
        .map(|a| str_column("action", a))
        .transpose()?;
    let item_ids = item_ids.as_ref().map(|a| str_column("id", a)).transpose()?;
    let times = slice(&times, "time")?;
    let weights = weights.as_ref().map(|w| slice(w, "weight")).transpose()?;
    let dim = embeddings.shape()[1];
    let data = embeddings
        .as_slice()
        .map_err(|_| error("embeddings: the array must be C-contiguous"))?;
    let config = GenerationSettings {
        now,
        window_days,
        params: ProfileParams {
            alpha,
            lambda: lam,
            max_actions,
        },
    };
    let (ipc, result) = py
        .detach(|| -> Result<_, Failure> {
            let x = Embeddings::new(data, dim).map_err(|e| about("embeddings", e))?;
            let vectors = match &item_ids {
                Some(ids) => Vectors::Items {
                    ids: ids as &dyn Strings,
                    embeddings: x,
                },
                None => Vectors::PerEvent(x),
            };
            let table = EventTable {
                users: &users,
                items: &items,
                times,
                weights,
                actions: actions.as_ref().map(|a| a as &dyn Strings),
            };
            let result = build_profiles(&table, &vectors, &config, &variant_alphas, threads)?;
            let ipc = profile_ipc(&result, !variant_alphas.is_empty())
                .map_err(|e| Failure::new(ErrorKind::Internal, e.to_string()))?;
            Ok((ipc, result))
        })
        .map_err(raise)?;
    let stats = PyDict::new(py);
    stats.set_item("users", result.profiles.len())?;
    let variants: Vec<f64> = result.variants.iter().map(|v| v.alpha).collect();
    stats.set_item("variant_alphas", variants)?;
    stats.set_item("events", result.events)?;
    stats.set_item("duplicates", result.duplicates)?;
    stats.set_item("unknown_item_events", result.unknown_item_events)?;
    stats.set_item(
        "users_without_known_items",
        result.users_without_known_items,
    )?;
    Ok((PyBytes::new(py, &ipc), stats))
}

/// The variant alphas a batch with these parameters cuts at (repeats and `alpha` itself
/// dropped), or the error naming the bad one: the Spark job checks them before any task runs.
#[pyfunction]
fn variant_alphas(
    alpha: f64,
    lam: f64,
    max_actions: usize,
    variants: Vec<f64>,
) -> PyResult<Vec<f64>> {
    let params = ProfileParams {
        alpha,
        lambda: lam,
        max_actions,
    };
    params.validate().map_err(error)?;
    pinnersage_pipeline::batch::variant_alphas(&params, &variants).map_err(error)
}

/// The profile table's Spark schema ([`spark_fields`](pinnersage_pipeline::exchange::profile_table::spark_fields),
/// with the `alpha` column when `variants`) as an Arrow IPC stream without batches: the Spark
/// job's output schema, typed in one place.
fn spark_schema_ipc(variants: bool) -> Result<Vec<u8>, arrow_schema::ArrowError> {
    use pinnersage_pipeline::exchange::profile_table::spark_fields;
    let schema = arrow_schema::Schema::new(spark_fields(variants));
    let mut out = Vec::new();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// The profile table (`pinnersage_pipeline::exchange::profile_table`) as one Arrow IPC stream:
/// the generation's own cut, then (with `variants`, in a table with the `alpha` column) each
/// variant's.
fn profile_ipc(
    result: &pinnersage_pipeline::batch::memory::Profiles,
    variants: bool,
) -> Result<Vec<u8>, arrow_schema::ArrowError> {
    use pinnersage_pipeline::exchange::profile_table::{
        arrays, cut_arrays, fields, variant_fields,
    };
    let fields = if variants { variant_fields() } else { fields() };
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(fields));
    let mut out = Vec::new();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
    let cuts = std::iter::once((None, &result.profiles))
        .chain((result.variants.iter()).map(|v| (Some(v.alpha), &v.profiles)));
    for (alpha, profiles) in cuts {
        // Record batches of at most 64k users keep every string buffer far below 2 GiB.
        for part in profiles.chunks(65_536) {
            let columns = match variants {
                true => cut_arrays(alpha, part),
                false => arrays(part),
            };
            writer.write(&arrow_array::RecordBatch::try_new(schema.clone(), columns)?)?;
        }
    }
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Runs the offline evaluation on engagements and item embeddings in memory; returns
/// `(metrics JSON text, report markdown)`. Ids come as Arrow `large_string` buffers.
#[pyfunction]
#[pyo3(signature = (item_ids, embeddings, users, items, times, options))]
fn evaluate<'py>(
    py: Python<'py>,
    item_ids: StrArrays<'py>,
    embeddings: PyReadonlyArray2<'py, f32>,
    users: StrArrays<'py>,
    items: StrArrays<'py>,
    times: PyReadonlyArray1<'py, i64>,
    options: &Bound<'py, PyDict>,
) -> PyResult<EvaluationOut> {
    let owned =
        |c: StrColumn<'_>| -> Vec<String> { (0..c.len()).map(|r| c.get(r).to_owned()).collect() };
    let item_ids = owned(str_column("id", &item_ids)?);
    let users = str_column("user", &users)?;
    let items = str_column("item", &items)?;
    let times = slice(&times, "time")?;
    if users.len() != items.len() || users.len() != times.len() {
        return Err(error(format!(
            "engagements: {} users, {} items and {} times (one each per engagement)",
            users.len(),
            items.len(),
            times.len()
        )));
    }
    let dim = embeddings.shape()[1];
    let data = EvalData {
        item_ids,
        embeddings: embeddings
            .as_slice()
            .map_err(|_| error("embeddings: the array must be C-contiguous"))?
            .to_vec(),
        dim,
        embeddings_source: "embeddings".into(),
        engagements: (0..users.len())
            .map(|r| LoggedEngagement {
                user: users.get(r).to_owned(),
                item: items.get(r).to_owned(),
                time: times[r],
            })
            .collect(),
        filtered_out: 0,
        item_meta: None,
    };
    let options = eval_options(options)?;
    let output = py
        .detach(|| Evaluation::run(&data, &options, "pinnersage evaluation", &()))
        .map_err(failed)?;
    Ok((output.metrics.to_string(), output.markdown, output.configs))
}

/// What `evaluate` returns: `metrics.json`, the Markdown report and the tuned configuration
/// files (name, TOML).
type EvaluationOut = (String, String, Vec<(String, String)>);

/// [`EvalOptions`] from keyword arguments (unknown keys are an error).
fn eval_options(kwargs: &Bound<'_, PyDict>) -> PyResult<EvalOptions> {
    use pinnersage_core::learned::Learner;
    use pinnersage_eval::evaluate::Budget;
    use pinnersage_eval::evaluation::ItemEmbeddings;
    use pinnersage_eval::tune::TuneGrid;
    let mut o = EvalOptions::default();
    let (mut method, mut dim) = ("svd".to_owned(), o.learner.dim());
    let mut tune: Option<TuneGrid> = None;
    for (key, value) in kwargs.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "alpha" => o.alpha = value.extract()?,
            "candidates" => o.candidates = value.extract()?,
            "train_fraction" => o.train_fraction = value.extract()?,
            "min_train" => o.min_train = value.extract()?,
            "seed" => o.seed = value.extract()?,
            "bootstrap" => o.bootstrap = value.extract()?,
            "learned_dim" | "svd_dim" => dim = value.extract()?,
            "learned_method" => method = value.extract()?,
            "tune" => {
                if value.extract::<bool>()? {
                    tune.get_or_insert_with(TuneGrid::default);
                }
            }
            "tune_alphas" => tune.get_or_insert_with(TuneGrid::default).alphas = value.extract()?,
            "tune_global_shares" => {
                tune.get_or_insert_with(TuneGrid::default).globals = value.extract()?
            }
            "sweeps" => o.sweeps = value.extract()?,
            "budget" => {
                let v: String = value.extract()?;
                o.budget = match v.as_str() {
                    "equal" => Budget::Equal,
                    "per-embedding" => Budget::PerEmbedding,
                    other => {
                        return Err(error(format!(
                            "budget {other:?}: expected \"equal\" or \"per-embedding\""
                        )));
                    }
                }
            }
            "item_embeddings" => {
                let v: String = value.extract()?;
                o.item_embeddings = match v.as_str() {
                    "given" => ItemEmbeddings::Given,
                    "learned" | "svd" => ItemEmbeddings::Learned,
                    "both" => ItemEmbeddings::Both,
                    other => {
                        return Err(error(format!(
                            "item_embeddings {other:?}: expected \"given\", \"learned\" or \"both\""
                        )));
                    }
                }
            }
            other => return Err(error(format!("evaluate: unknown option {other:?}"))),
        }
    }
    o.learner = Learner::with(&method, dim, o.seed).ok_or_else(|| {
        error(format!(
            "learned_method {method:?}: expected \"svd\" or \"als\""
        ))
    })?;
    o.tune = tune;
    o.validate().map_err(failed)?;
    Ok(o)
}

/// The module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("PinnersageError", m.py().get_type::<PinnersageError>())?;
    m.add("NotFoundError", m.py().get_type::<NotFoundError>())?;
    m.add("ConflictError", m.py().get_type::<ConflictError>())?;
    m.add("UnavailableError", m.py().get_type::<UnavailableError>())?;
    m.add("InternalError", m.py().get_type::<InternalError>())?;
    m.add_function(wrap_pyfunction!(cluster, m)?)?;
    m.add_function(wrap_pyfunction!(profiles, m)?)?;
    m.add_function(wrap_pyfunction!(variant_alphas, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add("DEFAULT_ALPHA", pinnersage_core::profile::DEFAULT_ALPHA)?;
    m.add(
        "DEFAULT_LAMBDA",
        pinnersage_core::importance::DEFAULT_LAMBDA,
    )?;
    m.add(
        "DEFAULT_MAX_ACTIONS",
        pinnersage_core::profile::DEFAULT_MAX_ACTIONS,
    )?;
    use pinnersage_pipeline::exchange::profile_table::{COLUMNS, spark_ddl};
    m.add("PROFILE_COLUMNS", COLUMNS.to_vec())?;
    m.add("PROFILE_SCHEMA_DDL", spark_ddl(false))?;
    m.add("PROFILE_VARIANTS_SCHEMA_DDL", spark_ddl(true))?;
    for (name, variants) in [
        ("PROFILE_SPARK_SCHEMA", false),
        ("PROFILE_VARIANTS_SPARK_SCHEMA", true),
    ] {
        let schema = spark_schema_ipc(variants)
            .map_err(|e| raise(Failure::new(ErrorKind::Internal, e.to_string())))?;
        m.add(name, PyBytes::new(m.py(), &schema))?;
    }
    m.add(
        "DEFAULT_WINDOW_DAYS",
        pinnersage_store::settings::DEFAULT_WINDOW_DAYS,
    )?;
    Ok(())
}
