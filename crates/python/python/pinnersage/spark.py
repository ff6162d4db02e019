"""The daily batch on Spark: profiles for any number of users, identical to ``pinnersage batch``.

``build_profiles`` is a plan of ordinary Spark operators plus one ``mapInArrow`` stage that hands
whole users, as Arrow record batches, to the same Rust code the embedded batch runs::

    events (user, item, time[, weight, action])
      -> keep the window now - window_days ..= now
      -> repartition by user             the one shuffle of the plan, of small rows
      -> drop duplicates                 same user, time, item and action (the event store's
                                         key); the first in input order wins, as in the store
      -> join the item embeddings        broadcast when they fit: map-side, no vectors on the
                                         network; else a shuffle join on the item and a second
                                         shuffle back to users, with the vectors
      -> keep each user's max_actions most recent (a rank window; ties kept, Rust cuts exactly)
      -> sort within partitions by user
      -> mapInArrow: Rust clusters each user  (no Python loop over actions, no per-row UDF)
      -> one row per cluster: user, rank, medoid, size, importance, latest_time, members,
         member_importance (and alpha, with variant_alphas: each user's clusters also cut at
         those alphas, one clustering for all of them)

Write the result with ``df.write.parquet(path)`` and publish it with
``pinnersage import profiles --data-dir DIR --now NOW path``.

Requires ``pyspark`` (``pip install ./crates/python[spark]``) and pyarrow on the executors.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np

from . import (
    DEFAULT_ALPHA,
    DEFAULT_LAMBDA,
    DEFAULT_MAX_ACTIONS,
    DEFAULT_WINDOW_DAYS,
    ITEM_COLUMNS,
    TIME_COLUMNS,
    USER_COLUMNS,
    PinnersageError,
    _alphas,
    _native,
    _numbers,
    _strings,
    _vector_column,
)

#: Item tables up to this size (ids + float32 embeddings, estimated) are broadcast to every
#: executor; larger ones are joined with a shuffle. A broadcast table is held once per executor,
#: so the line is the executor memory to spare, not Spark's 10 MB default.
BROADCAST_LIMIT_BYTES = 1 << 30

SECONDS_PER_DAY = 86_400

#: The Spark schema of the profile table (Spark has no unsigned types: rank and size are int),
#: as the Rust library defines it.
PROFILE_SCHEMA_DDL: str = _native.PROFILE_SCHEMA_DDL

#: The same with the ``alpha`` column: the output of a job with ``variant_alphas``.
PROFILE_VARIANTS_SCHEMA_DDL: str = _native.PROFILE_VARIANTS_SCHEMA_DDL


def _cluster_users(
    now: int,
    window_days: int,
    alpha: float,
    lam: float,
    max_actions: int,
    variant_alphas: Optional[list] = None,
):
    """The mapInArrow function: record batches sorted by user in, profile rows out. A user's rows
    may span batches; the last user of a batch waits for the next one."""
    import pyarrow as pa

    schema = _native.PROFILE_VARIANTS_SPARK_SCHEMA if variant_alphas else _native.PROFILE_SPARK_SCHEMA
    out_schema = pa.ipc.open_stream(schema).schema

    def run(table) -> Iterator["pa.RecordBatch"]:
        if table.num_rows == 0:
            return
        ipc, _ = _native.profiles(
            _strings(table.column("user"), "user"),
            _strings(table.column("item"), "item"),
            _numbers(table.column("time"), "time", np.int64),
            _numbers(table.column("weight"), "weight", np.float32),
            _strings(table.column("action"), "action"),
            None,
            _vector_column(table.column("embedding"), "embedding"),
            now,
            window_days,
            alpha,
            lam,
            max_actions,
            1,  # Spark runs one task per core: one thread per task
            variant_alphas,
        )
        for batch in pa.ipc.open_stream(ipc):
            yield pa.RecordBatch.from_arrays(
                [batch.column(i).cast(out_schema.field(i).type) for i in range(batch.num_columns)],
                schema=out_schema,
            )

    def per_partition(batches):
        carry = None
        for batch in batches:
            table = pa.Table.from_batches([batch])
            if carry is not None:
                table = pa.concat_tables([carry, table])
            users = table.column("user").to_numpy(zero_copy_only=False)
            last = users[-1]
            # Rows are sorted by user: the last user's rows are a suffix.
            start = int(np.argmax(users == last))
            carry = table.slice(start)
            yield from run(table.slice(0, start))
        if carry is not None:
            yield from run(carry)

    return per_partition


def _pick(cols, given: Optional[str], names) -> str:
    """The events column to read: ``given``, else the first of ``names`` present (the names
    every entry point of the package takes)."""
    wanted = (given,) if given is not None else tuple(names)
    for name in wanted:
        if name in cols:
            return name
    raise PinnersageError(
        f"events: no column {' or '.join(repr(n) for n in wanted)} (columns: {', '.join(cols)})"
    )


def prepare_actions(
    spark,
    events_df,
    items_df,
    now: int,
    window_days: int = DEFAULT_WINDOW_DAYS,
    max_actions: int = DEFAULT_MAX_ACTIONS,
    partitions: Optional[int] = None,
    broadcast_items: Optional[bool] = None,
    user_col: Optional[str] = None,
    item_col: Optional[str] = None,
    time_col: Optional[str] = None,
    weight_col: Optional[str] = "weight",
    action_col: Optional[str] = "action",
    id_col: Optional[str] = None,
    embedding_col: Optional[str] = None,
):
    """Every step of :func:`build_profiles` before clustering: the window's events partitioned
    by user, deduplicated, joined with their item's embedding, capped at each user's
    ``max_actions`` most recent (ties at the cap kept) and sorted by user within partitions.
    Columns: user, item, time, weight, action, embedding. Useful on its own to feed another
    per-user computation with the same inputs."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if window_days < 1:
        raise PinnersageError(f"window_days must be >= 1, got {window_days}")
    if max_actions < 1:
        raise PinnersageError(f"max_actions must be >= 1, got {max_actions}")
    cols = events_df.columns
    user_col = _pick(cols, user_col, USER_COLUMNS)
    item_col = _pick(cols, item_col, ITEM_COLUMNS)
    time_col = _pick(cols, time_col, TIME_COLUMNS)
    time = F.col(time_col)
    if dict(events_df.dtypes)[time_col].startswith("timestamp"):
        time = F.unix_timestamp(time)
    events = events_df.select(
        # The input order, for "the first of two equal events wins" (the event store's rule).
        F.monotonically_increasing_id().alias("_order"),
        F.col(user_col).cast("string").alias("user"),
        F.col(item_col).cast("string").alias("item"),
        F.floor(time.cast("double")).cast("long").alias("time"),
        (
            F.col(weight_col).cast("float")
            if weight_col is not None and weight_col in cols
            else F.lit(1.0).cast("float")
        ).alias("weight"),
        (
            F.col(action_col).cast("string")
            if action_col is not None and action_col in cols
            else F.lit("")
        ).alias("action"),
    )
    start = int(now) - int(window_days) * SECONDS_PER_DAY
    events = events.where((F.col("time") >= start) & (F.col("time") <= int(now)))
    n = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    # The event store keys an event by (user, time, item, action) and keeps the first imported:
    # here the first in input order. Grouped after the rows are partitioned by user, this costs
    # no shuffle of its own.
    def dedupe(frame):
        return frame.groupBy("user", "time", "item", "action").agg(
            F.min_by("weight", "_order").alias("weight")
        )

    id_col = id_col or "id"
    embedding_col = embedding_col or "embedding"
    for name in (id_col, embedding_col):
        if name not in items_df.columns:
            raise PinnersageError(
                f"items: no column {name!r} (columns: {', '.join(items_df.columns)})"
            )
    items = items_df.select(
        F.col(id_col).cast("string").alias("item"),
        F.col(embedding_col).cast("array<float>").alias("embedding"),
    )
    if broadcast_items is None:
        first = items.select(F.size("embedding").alias("d")).head(1)
        dim = first[0]["d"] if first else 0
        estimate = items.count() * (dim * 4 + 32)
        broadcast_items = estimate <= BROADCAST_LIMIT_BYTES
    # One shuffle of the small event rows by user; deduplication stays in partition.
    by_user = dedupe(events.repartition(n, "user"))
    if broadcast_items:
        # A map-side join inside each user partition: vectors never cross the network.
        joined = by_user.join(F.broadcast(items), "item", "inner")
    else:
        # A catalog too large to broadcast: a shuffle join on the item, then the joined rows
        # (now with their vectors) shuffled back to their users.
        joined = by_user.join(items, "item", "inner").repartition(n, "user")

    recent = Window.partitionBy("user").orderBy(F.col("time").desc())
    capped = (
        joined.withColumn("_recent", F.rank().over(recent))
        .where(F.col("_recent") <= int(max_actions))
        .drop("_recent")
    )
    return capped.sortWithinPartitions("user").select(
        "user", "item", "time", "weight", "action", "embedding"
    )


def build_profiles(
    spark,
    events_df,
    items_df,
    now: int,
    alpha: float = DEFAULT_ALPHA,
    lam: float = DEFAULT_LAMBDA,
    window_days: int = DEFAULT_WINDOW_DAYS,
    max_actions: int = DEFAULT_MAX_ACTIONS,
    partitions: Optional[int] = None,
    broadcast_items: Optional[bool] = None,
    variant_alphas: Optional[Sequence[float]] = None,
    **columns: Optional[str],
):
    """Profiles of every user in ``events_df`` as a Spark DataFrame (one row per cluster).

    ``events_df`` has a user, an item and a time column (unix seconds as numbers, or a
    timestamp), and optionally weight and action columns (missing ones default to 1 and "").
    ``items_df`` has an id and an embedding column (array of float or double). Column names are
    keyword arguments: ``user_col``, ``item_col``, ``time_col``, ``weight_col``,
    ``action_col``, ``id_col``, ``embedding_col`` (defaults: user or user_id, item or item_id,
    time or timestamp — the names :func:`pinnersage.profiles` takes and ``pinnersage synth``
    writes — then weight, action, id, embedding).

    Parameters and results are those of ``pinnersage batch --now now``: same window,
    deduplication, per-user cap, clustering and profile order. ``partitions`` sets the number of
    user partitions (default: ``spark.sql.shuffle.partitions``); ``broadcast_items`` forces or
    forbids the broadcast join (default: broadcast below :data:`BROADCAST_LIMIT_BYTES`).

    Of two events with the same user, time, item and action the first in input order (files
    and rows as Spark reads them) is kept, as ``import events`` of the same files keeps the
    first imported.

    ``variant_alphas`` (at most 4) also cuts each user's clustering at those alphas, as
    ``pinnersage batch --variant-alpha`` does: the output (schema
    :data:`PROFILE_VARIANTS_SCHEMA_DDL`) then has an ``alpha`` column, null for the rows of the
    ``alpha`` cut; ``pinnersage import profiles`` publishes it with the variants, which
    experiment arms with their own ``alpha`` serve.
    """
    if not (alpha >= 0 and lam >= 0):
        raise PinnersageError(f"alpha and lam must be >= 0, got {alpha} and {lam}")
    variants = _alphas(variant_alphas)
    if variants is not None:
        # Checked before Spark runs a task, by the rules of the native call.
        _native.variant_alphas(float(alpha), float(lam), int(max_actions), variants)
    prepared = prepare_actions(
        spark, events_df, items_df, now, window_days=window_days, max_actions=max_actions,
        partitions=partitions, broadcast_items=broadcast_items, **columns,
    )
    return prepared.mapInArrow(
        _cluster_users(
            int(now), int(window_days), float(alpha), float(lam), int(max_actions), variants
        ),
        PROFILE_VARIANTS_SCHEMA_DDL if variants else PROFILE_SCHEMA_DDL,
    )
