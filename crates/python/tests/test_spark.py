"""The batch on Spark (local[2]): identical to the embedded batch, published and served."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import (
    NOW,
    PARAMS,
    PROFILE_COLUMNS,
    Server,
    assert_same_cuts,
    assert_same_profiles,
    cut,
    embedded_batch,
    rows,
    run,
    synthetic,
    weight_collisions,
)


@pytest.fixture(scope="module")
def data():
    return synthetic(users=150, seed=11)


def spark_frames(spark, events, items):
    ids, matrix = items
    events_df = spark.createDataFrame(pa.table(events).to_pandas())
    items_df = spark.createDataFrame(
        [(str(i), [float(v) for v in row]) for i, row in zip(ids, matrix)],
        "id string, embedding array<float>",
    )
    return events_df, items_df


@pytest.mark.parametrize("broadcast, variants", [(True, []), (False, [0.6, 4.0])])
def test_spark_profiles_equal_the_embedded_batch_and_are_served(
    spark, pinnersage_bin, tmp_path, data, broadcast, variants
):
    from pinnersage.spark import build_profiles

    events, items = data
    assert weight_collisions(events) > 0, "the data must test which of two equal events wins"
    data_dir = tmp_path / "data"
    expected = embedded_batch(pinnersage_bin, data_dir, events, items, variant_alphas=variants)
    events_df, items_df = spark_frames(spark, events, items)
    profiles = build_profiles(
        spark, events_df, items_df, NOW, alpha=PARAMS["alpha"], lam=PARAMS["lam"],
        window_days=PARAMS["window_days"], max_actions=PARAMS["max_actions"],
        broadcast_items=broadcast, variant_alphas=variants or None,
    )
    out = tmp_path / "spark-profiles"
    profiles.write.parquet(str(out))
    got = pq.read_table(out)
    if variants:
        # Each user's clusters cut at the variant alphas too, as `batch --variant-alpha`.
        assert_same_cuts(got, expected, variants)
        own = cut(got, None)
    else:
        assert got.column_names == PROFILE_COLUMNS
        assert_same_profiles(got, expected)
        own = got

    # A server runs on the embedded batch's generation; publishing the Spark output switches it.
    run(pinnersage_bin, "index", "build", "--data-dir", data_dir, "--kind", "exact")
    server = Server(pinnersage_bin, data_dir)
    try:
        before = server.get("/healthz")["profiles"]
        published = run(pinnersage_bin, "import", "profiles", "--data-dir", data_dir, "--now", NOW,
                        "--window-days", PARAMS["window_days"], "--alpha", PARAMS["alpha"],
                        "--lambda", PARAMS["lam"], "--max-actions", PARAMS["max_actions"], out)
        generation = Path(published.split(" as ")[1].split(" in ")[0]).name
        assert generation != before
        deadline = time.time() + 30
        while server.get("/healthz")["profiles"] != generation:
            assert time.time() < deadline, "the server did not switch to the imported generation"
            time.sleep(0.2)
        user = expected.column("user")[0].as_py()
        reco = server.get(f"/v1/users/{user}/recommendations?k=5")
        assert reco["fallback"] is False, reco
        assert len(reco["items"]) == 5, reco
        profile = server.get(f"/v1/users/{user}/profile")
        medoids = [r["medoid"] for r in rows(own) if r["user"] == user]
        assert [c["medoid"] for c in profile["clusters"]][: len(medoids)] == medoids, profile
        for alpha in variants:
            # The published variant serves requests for its cut.
            shown = server.get(f"/v1/users/{user}/profile?alpha={alpha}")
            medoids = [r["medoid"] for r in rows(cut(got, alpha)) if r["user"] == user]
            assert [c["medoid"] for c in shown["clusters"]][: len(medoids)] == medoids, shown
            reco = server.get(f"/v1/users/{user}/recommendations?k=5&alpha={alpha}")
            assert reco["fallback"] is False and len(reco["items"]) == 5, reco
    finally:
        server.stop()


def test_spark_input_with_timestamps_and_no_optional_columns(spark):
    from pyspark.sql import functions as F

    from pinnersage.spark import build_profiles

    events_df = spark.createDataFrame(
        [("u1", "a", NOW - 60), ("u1", "b", NOW - 30), ("u2", "a", NOW), ("u3", "zzz", NOW)],
        "uid string, iid string, ts long",
    ).withColumn("ts", F.col("ts").cast("timestamp"))
    items_df = spark.createDataFrame(
        [("a", [1.0, 0.0]), ("b", [0.0, 1.0])], "id string, embedding array<double>"
    )
    rows = build_profiles(
        spark, events_df, items_df, NOW, user_col="uid", item_col="iid", time_col="ts",
        alpha=5.0,
    ).collect()
    by_user = {r["user"]: r for r in rows}
    assert set(by_user) == {"u1", "u2"}  # u3 only engaged an unknown item
    assert by_user["u1"]["size"] == 2 and sorted(by_user["u1"]["members"]) == ["a", "b"]


def test_spark_bad_variant_alphas_fail_before_a_task_runs(spark):
    from pinnersage import PinnersageError
    from pinnersage.spark import build_profiles

    events = spark.createDataFrame([("u", "x", NOW)], "user string, item string, time long")
    items = spark.createDataFrame([("x", [1.0, 0.0])], "id string, embedding array<float>")
    with pytest.raises(PinnersageError, match="variant alpha"):
        build_profiles(spark, events, items, NOW, variant_alphas=[float("nan")])
    with pytest.raises(PinnersageError, match="at most 4 variant alphas"):
        build_profiles(spark, events, items, NOW, variant_alphas=[0.1, 0.2, 0.3, 0.4, 0.5])


def test_spark_bad_columns_are_clear_errors(spark):
    import pinnersage
    from pinnersage.spark import build_profiles

    events_df = spark.createDataFrame([("u1", "a", NOW)], "user string, item string, t long")
    items_df = spark.createDataFrame([("a", [1.0])], "id string, embedding array<float>")
    with pytest.raises(pinnersage.PinnersageError, match="no column 'time'"):
        build_profiles(spark, events_df, items_df, NOW)
    with pytest.raises(pinnersage.PinnersageError, match="window_days"):
        build_profiles(spark, events_df, items_df, NOW, time_col="t", window_days=0)


def test_spark_reads_the_column_names_every_entry_point_reads(spark):
    """``pinnersage synth`` writes user_id/item_id/timestamp; ``profiles`` reads them, and so
    does the Spark job, with the same result as with user/item/time."""
    from pinnersage.spark import build_profiles

    rows = [("u1", "a", NOW - 10), ("u1", "b", NOW - 5), ("u2", "a", NOW - 1)]
    items_df = spark.createDataFrame(
        [("a", [1.0, 0.0]), ("b", [0.0, 1.0])], "id string, embedding array<float>"
    )
    def collect(df):
        return sorted(tuple(row) for row in df.collect())

    plain = spark.createDataFrame(rows, "user string, item string, time long")
    synth = spark.createDataFrame(rows, "user_id string, item_id string, timestamp long")
    expected = collect(build_profiles(spark, plain, items_df, NOW))
    assert expected and collect(build_profiles(spark, synth, items_df, NOW)) == expected


def test_broadcast_plan_shuffles_the_events_once_and_never_the_vectors(spark):
    from pinnersage.spark import prepare_actions

    events_df = spark.createDataFrame([("u1", "a", NOW)], "user string, item string, time long")
    items_df = spark.createDataFrame([("a", [1.0])], "id string, embedding array<float>")

    def plan(broadcast):
        frame = prepare_actions(spark, events_df, items_df, NOW, broadcast_items=broadcast)
        return frame._jdf.queryExecution().executedPlan().toString()

    small = plan(True)
    assert small.count("Exchange hashpartitioning") == 1 and "BroadcastExchange" in small, small
    assert "Exchange hashpartitioning(user" in small, small
    large = plan(False)
    assert large.count("Exchange hashpartitioning") == 4 and "BroadcastExchange" not in large, large
