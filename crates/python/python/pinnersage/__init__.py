"""pinnersage: PinnerSage multi-interest user profiles from Python.

Each user's recent actions (item embeddings) are clustered with Ward's method and cut at a merge
threshold ``alpha``; every cluster keeps its medoid (the action that represents it) and an
importance ``sum(w * exp(-lam * age_days))``. The work runs in Rust (the same code as the
``pinnersage`` command line and server) with the GIL released.

Three calls::

    import numpy as np, pinnersage
    profile = pinnersage.cluster(np.random.rand(50, 16).astype(np.float32), alpha=2.0)
    print(len(profile), profile[0].medoid, profile[0].members, profile[0].importance)

    table = pinnersage.profiles(events_df, (item_ids, item_matrix), now=1_700_000_000)

    metrics = pinnersage.evaluate(events_df, (item_ids, item_matrix))

For the batch on a Spark cluster see :mod:`pinnersage.spark`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._native import (
    DEFAULT_ALPHA,
    DEFAULT_LAMBDA,
    DEFAULT_MAX_ACTIONS,
    DEFAULT_WINDOW_DAYS,
    ConflictError,
    InternalError,
    NotFoundError,
    PinnersageError,
    UnavailableError,
)

__all__ = [
    "Cluster",
    "Profile",
    "PinnersageError",
    "NotFoundError",
    "ConflictError",
    "UnavailableError",
    "InternalError",
    "cluster",
    "profiles",
    "evaluate",
    "PROFILE_COLUMNS",
    "DEFAULT_ALPHA",
    "DEFAULT_LAMBDA",
    "DEFAULT_MAX_ACTIONS",
    "DEFAULT_WINDOW_DAYS",
]

#: The columns of a profile table, one row per cluster (the schema of ``pinnersage batch
#: --out``, of :func:`profiles`, of :func:`pinnersage.spark.build_profiles` and of what
#: ``pinnersage import profiles`` reads).
PROFILE_COLUMNS = tuple(_native.PROFILE_COLUMNS)


@dataclass(frozen=True, eq=False)
class Cluster:
    """One interest of a user."""

    #: Row (0-based, into the embeddings passed to :func:`cluster`) of the representative action.
    medoid: int
    #: Rows of all member actions, ascending (int64).
    members: np.ndarray
    #: ``sum(w * exp(-lam * age_days))`` over the members.
    importance: float
    #: The latest member's time (unix seconds).
    latest_time: int

    @property
    def size(self) -> int:
        """Number of member actions."""
        return int(len(self.members))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cluster):
            return NotImplemented
        return (
            self.medoid == other.medoid
            and np.array_equal(self.members, other.members)
            and self.importance == other.importance
            and self.latest_time == other.latest_time
        )

    __hash__ = None  # type: ignore[assignment]  # mutable members array


@dataclass(frozen=True)
class Profile:
    """A user's clusters in profile order: importance, then size (both descending), then medoid."""

    clusters: Tuple[Cluster, ...]

    def __len__(self) -> int:
        return len(self.clusters)

    def __iter__(self) -> Iterator[Cluster]:
        return iter(self.clusters)

    def __getitem__(self, k: int) -> Cluster:
        return self.clusters[k]

    def labels(self, rows: int) -> np.ndarray:
        """The cluster index (profile order) of each of ``rows`` actions; -1 for actions beyond
        ``max_actions`` that were not clustered."""
        out = np.full(rows, -1, dtype=np.int64)
        for k, c in enumerate(self.clusters):
            out[c.members] = k
        return out

    def to_dict(self) -> dict:
        """The JSON form ``pinnersage cluster --json`` prints."""
        return {
            "clusters": [
                {
                    "medoid": c.medoid,
                    "members": c.members.tolist(),
                    "size": c.size,
                    "importance": c.importance,
                }
                for c in self.clusters
            ]
        }


def _matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 matrix: the same object when it already is one."""
    try:
        a = np.asarray(x)
    except ValueError as e:
        raise PinnersageError(
            f"{name}: ragged rows (every row needs the same number of values)"
        ) from e
    if a.dtype == object:
        raise PinnersageError(f"{name}: ragged rows or non-numeric values")
    if a.ndim != 2:
        raise PinnersageError(
            f"{name}: expected a 2-D array (one row per action, one column per dimension), "
            f"got shape {a.shape}"
        )
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise PinnersageError(f"{name}: expected numbers, got dtype {a.dtype}")
    if a.shape[1] == 0:
        raise PinnersageError(f"{name}: rows have no values (0 columns)")
    return np.ascontiguousarray(a, dtype=np.float32)


def _seconds(t: Any, name: str) -> np.ndarray:
    """Times as int64 unix seconds (integers, floats or numpy datetimes)."""
    a = np.asarray(t)
    if a.ndim != 1:
        raise PinnersageError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.datetime64):
        if np.isnat(a).any():
            raise PinnersageError(f"{name}: row {int(np.argmax(np.isnat(a)))} is NaT")
        return np.ascontiguousarray(a.astype("datetime64[s]").astype(np.int64))
    if np.issubdtype(a.dtype, np.floating):
        bad = ~np.isfinite(a)
        if bad.any():
            raise PinnersageError(f"{name}: row {int(np.argmax(bad))} is not finite")
        return np.ascontiguousarray(np.floor(a).astype(np.int64))
    if not np.issubdtype(a.dtype, np.integer):
        raise PinnersageError(f"{name}: expected unix seconds or datetimes, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _weights(w: Any, name: str) -> np.ndarray:
    a = np.asarray(w)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.number):
        raise PinnersageError(f"{name}: expected a 1-D array of numbers")
    return np.ascontiguousarray(a, dtype=np.float32)


def cluster(
    embeddings: Any,
    times: Any = None,
    now: Optional[int] = None,
    alpha: float = DEFAULT_ALPHA,
    lam: float = DEFAULT_LAMBDA,
    max_actions: int = DEFAULT_MAX_ACTIONS,
    weights: Any = None,
) -> Profile:
    """Clusters one user's actions into interests (Ward, cut at ``alpha``).

    ``embeddings`` is an ``m x d`` array, one row per action in any order; a float32
    C-contiguous array is read in place (no copy), anything else is converted. ``times`` are
    unix seconds (or datetimes), one per row; without them every action happens at ``now``.
    ``now`` defaults to the latest time. Only the ``max_actions`` most recent actions are
    clustered. ``weights`` (one per row, >= 0) scale each action's importance.

    The result equals ``pinnersage cluster --json`` on the same data.

    >>> import numpy as np, pinnersage
    >>> x = np.array([[0, 0], [0, 0.1], [5, 5], [5, 5.1], [5.1, 5]], dtype=np.float32)
    >>> p = pinnersage.cluster(x, times=[0, 86400, 2*86400, 3*86400, 4*86400], alpha=1.0)
    >>> [c.members.tolist() for c in p]
    [[2, 3, 4], [0, 1]]
    """
    x = _matrix(embeddings, "embeddings")
    m = x.shape[0]
    if times is None:
        t = np.full(m, 0 if now is None else int(now), dtype=np.int64)
    else:
        t = _seconds(times, "times")
        if len(t) != m:
            raise PinnersageError(f"times: has {len(t)} entries but embeddings has {m} rows")
    if now is None:
        now = int(t.max()) if m else 0
    w = None
    if weights is not None:
        w = _weights(weights, "weights")
        if len(w) != m:
            raise PinnersageError(f"weights: has {len(w)} entries but embeddings has {m} rows")
    raw = _native.cluster(x, t, int(now), float(alpha), float(lam), int(max_actions), w)
    return Profile(tuple(Cluster(int(md), mb, float(imp), int(lt)) for md, mb, imp, lt in raw))


# ---- tables ---------------------------------------------------------------------------------


def _table(data: Any, what: str):
    """A pyarrow Table from a Table, RecordBatch, pandas DataFrame or dict of columns."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "to_arrow") and not hasattr(data, "iloc"):  # polars and friends
        return data.to_arrow()
    try:
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            return pa.Table.from_pandas(data, preserve_index=False)
    except ImportError:  # pragma: no cover - pandas is optional
        pass
    if isinstance(data, Mapping):
        try:
            return pa.table(dict(data))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise PinnersageError(f"{what}: {e}") from e
    raise PinnersageError(
        f"{what}: expected a pyarrow Table, a pandas DataFrame or a dict of columns, "
        f"got {type(data).__name__}"
    )


#: The names each events column goes by, in every entry point (``profiles``, ``evaluate``,
#: ``pinnersage.spark``), first match wins: what ``pinnersage synth`` and ``import events``
#: write is read everywhere.
USER_COLUMNS = ("user", "user_id")
ITEM_COLUMNS = ("item", "item_id")
TIME_COLUMNS = ("time", "timestamp")


def _column(table, names: Sequence[str], what: str, required: bool = True):
    for n in names:
        if n in table.column_names:
            return n, table.column(n)
    if required:
        raise PinnersageError(
            f"{what}: no column {' or '.join(repr(n) for n in names)} "
            f"(columns: {', '.join(table.column_names)})"
        )
    return None, None


def _strings(column, name: str) -> Tuple[np.ndarray, np.ndarray]:
    """A column as Arrow large_string buffers ``(offsets, utf8 bytes)``, without a copy when it
    is one already."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        arr = pc.cast(column, pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise PinnersageError(f"column {name!r}: cannot be read as ids: {e}") from e
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if arr.null_count:
        row = int(np.argmax(np.asarray(arr.is_null())))
        raise PinnersageError(f"column {name!r}: row {row} is null")
    _, offsets, data = arr.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return offsets, data


def _numbers(column, name: str, dtype) -> np.ndarray:
    import pyarrow as pa

    if column.null_count:
        raise PinnersageError(f"column {name!r}: has {column.null_count} nulls")
    if pa.types.is_timestamp(column.type):
        unit = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[column.type.unit]
        ints = column.cast(pa.int64()).to_numpy()
        return np.ascontiguousarray(np.floor_divide(ints, unit), dtype=np.int64)
    try:
        a = column.to_numpy()
    except (pa.ArrowInvalid, TypeError) as e:
        raise PinnersageError(f"column {name!r}: {e}") from e
    if dtype is np.int64:
        return _seconds(a, f"column {name!r}")
    return _weights(a, f"column {name!r}")


def _vector_column(column, name: str) -> np.ndarray:
    """A list column of equal-length number lists as an ``n x d`` float32 matrix."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        raise PinnersageError(f"column {name!r}: expected lists of numbers, got {column.type}")
    if column.null_count:
        raise PinnersageError(f"column {name!r}: row {int(np.argmax(np.asarray(column.is_null())))} is null")
    n = len(column)
    if n == 0:
        return np.zeros((0, 1), dtype=np.float32)
    lengths = np.asarray(pc.list_value_length(column))
    if (lengths != lengths[0]).any():
        row = int(np.argmax(lengths != lengths[0]))
        raise PinnersageError(
            f"column {name!r}: row {row} has {lengths[row]} values, row 0 has {lengths[0]} "
            "(ragged embeddings)"
        )
    values = column.flatten()
    if values.null_count:
        raise PinnersageError(f"column {name!r}: holds null values")
    flat = values.to_numpy(zero_copy_only=False)
    return _matrix(flat.reshape(n, int(lengths[0])), f"column {name!r}")


ItemsArg = Union[Tuple[Any, Any], Any]


def _items(items: ItemsArg) -> Tuple[Tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Item ids as string buffers and their embedding matrix, from ``(ids, matrix)`` or a table
    with an id column (``id``, ``item`` or ``item_id``) and an ``embedding`` list column."""
    import pyarrow as pa

    if isinstance(items, tuple) and len(items) == 2:
        ids, matrix = items
        x = _matrix(matrix, "items embeddings")
        ids = pa.array(np.asarray(ids).astype(str) if not isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids)
        if len(ids) != x.shape[0]:
            raise PinnersageError(f"items: {len(ids)} ids but {x.shape[0]} embedding rows")
        return _strings(ids, "id"), x
    table = _table(items, "items")
    id_name, ids = _column(table, ("id", "item", "item_id"), "items")
    emb_name, emb = _column(table, ("embedding", "vector"), "items")
    return _strings(ids, id_name), _vector_column(emb, emb_name)


def profiles(
    events: Any,
    items: ItemsArg,
    now: int,
    alpha: float = DEFAULT_ALPHA,
    lam: float = DEFAULT_LAMBDA,
    max_actions: int = DEFAULT_MAX_ACTIONS,
    window_days: int = DEFAULT_WINDOW_DAYS,
    threads: int = 0,
    variant_alphas: Optional[Sequence[float]] = None,
):
    """Profiles of every user in ``events``, as the embedded batch computes them.

    ``events`` is a pyarrow Table, pandas DataFrame or dict with columns ``user``, ``item``,
    ``time`` (or ``timestamp``; unix seconds or a timestamp type) and optionally ``weight`` and
    ``action``. ``items`` is ``(ids, matrix)`` or a table with ``id`` and ``embedding``
    columns. Events in ``now - window_days days ..= now`` are deduplicated (same user, time,
    item and action) and clustered per user on ``threads`` threads (0: all cores); events on
    unknown items are skipped.

    Returns a ``pyarrow.Table`` with :data:`PROFILE_COLUMNS`, one row per cluster, identical to
    ``pinnersage batch --out`` on the same events and parameters. Its schema metadata
    ``pinnersage.stats`` holds the counts (users, events, duplicates, unknown_item_events,
    users_without_known_items, variant_alphas) as JSON.

    ``variant_alphas`` (at most 4) also cuts every user's clustering at those alphas, as
    ``pinnersage batch --variant-alpha`` does for experiment arms that compare alphas: the table
    then has an ``alpha`` column, null for the rows of the ``alpha`` cut and the variant's alpha
    for the others (a repeat, or ``alpha`` itself, is cut once). ``pinnersage import profiles``
    publishes such a table with its variants.
    """
    import pyarrow as pa

    table = _table(events, "events")
    user_name, users = _column(table, USER_COLUMNS, "events")
    item_name, item_col = _column(table, ITEM_COLUMNS, "events")
    time_name, time_col = _column(table, TIME_COLUMNS, "events")
    weight_name, weight_col = _column(table, ("weight",), "events", required=False)
    action_name, action_col = _column(table, ("action",), "events", required=False)
    (ids, matrix) = _items(items)
    ipc, stats = _native.profiles(
        _strings(users, user_name),
        _strings(item_col, item_name),
        _numbers(time_col, time_name, np.int64),
        None if weight_col is None else _numbers(weight_col, weight_name, np.float32),
        None if action_col is None else _strings(action_col, action_name),
        ids,
        matrix,
        int(now),
        int(window_days),
        float(alpha),
        float(lam),
        int(max_actions),
        int(threads),
        _alphas(variant_alphas),
    )
    out = pa.ipc.open_stream(ipc).read_all()
    return out.replace_schema_metadata({"pinnersage.stats": json.dumps(stats)})


def _alphas(variant_alphas: Optional[Sequence[float]]) -> Optional[List[float]]:
    """``variant_alphas`` as the native functions take them (``None``: no variants)."""
    if variant_alphas is None:
        return None
    if isinstance(variant_alphas, (int, float)):
        variant_alphas = [variant_alphas]
    return [float(a) for a in variant_alphas] or None


def profile_stats(table) -> dict:
    """The counts :func:`profiles` stored in its result's schema metadata."""
    meta = table.schema.metadata or {}
    return json.loads(meta.get(b"pinnersage.stats", b"{}"))


def evaluate(events: Any, items: ItemsArg, **options: Any) -> dict:
    """The paper's offline evaluation on an engagement log and item embeddings.

    ``events`` has ``user``, ``item`` and ``time`` columns (as for :func:`profiles`); ``items``
    is ``(ids, matrix)`` or a table with ``id`` and ``embedding``. Options (the defaults of
    ``pinnersage eval``): ``alpha``, ``candidates``, ``budget`` (``"equal"``: every method
    gets ``candidates`` distinct items; ``"per-embedding"``: the paper's floor(N/e) per
    embedding), ``train_fraction``, ``min_train``, ``seed``, ``bootstrap``, ``sweeps``,
    ``item_embeddings`` (``"given"``, ``"learned"`` or ``"both"``), ``learned_method``
    (``"svd"`` or ``"als"``, as ``pinnersage embed --method``), ``learned_dim``, and ``tune``
    (``True``: choose alpha, selection, blend and global share on a validation split carved from
    the training period, as ``pinnersage eval --tune``) with ``tune_alphas`` and
    ``tune_global_shares``.

    Returns the content of ``metrics.json`` as a dict, plus ``"report"``: the Markdown report,
    and with ``tune``, ``"configs"``: file name -> the TOML configuration ``serve --config``
    reads, per embedding kind.
    """
    table = _table(events, "events")
    user_name, users = _column(table, USER_COLUMNS, "events")
    item_name, item_col = _column(table, ITEM_COLUMNS, "events")
    time_name, time_col = _column(table, TIME_COLUMNS, "events")
    (ids, matrix) = _items(items)
    metrics, report, configs = _native.evaluate(
        ids,
        matrix,
        _strings(users, user_name),
        _strings(item_col, item_name),
        _numbers(time_col, time_name, np.int64),
        dict(options),
    )
    out = json.loads(metrics)
    out["report"] = report
    if configs:
        out["configs"] = dict(configs)
    return out
