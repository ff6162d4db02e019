"""pinnersage.profiles and pinnersage.evaluate: the embedded batch's results from tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pinnersage
from conftest import (
    NOW,
    PARAMS,
    REPO,
    assert_same_cuts,
    assert_same_profiles,
    embedded_batch,
    run,
    synthetic,
    weight_collisions,
)


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def expected(pinnersage_bin, tmp_path_factory, data):
    events, items = data
    return embedded_batch(pinnersage_bin, tmp_path_factory.mktemp("batch") / "data", events, items)


def test_profiles_equal_the_embedded_batch(data, expected):
    events, items = data
    assert weight_collisions(events) > 0, "the data must test which of two equal events wins"
    got = pinnersage.profiles(events, items, now=NOW, **PARAMS)
    assert got.column_names == list(pinnersage.PROFILE_COLUMNS)
    assert got.schema.remove_metadata() == expected.schema.remove_metadata()
    assert_same_profiles(got, expected)
    stats = pinnersage.profile_stats(got)
    assert stats["users"] == len(set(got.column("user").to_pylist()))
    assert stats["duplicates"] > 0 and stats["unknown_item_events"] > 0


def test_pandas_input_an_item_table_and_one_thread_give_the_same(data, expected):
    pd = pytest.importorskip("pandas")
    events, (ids, matrix) = data
    frame = pd.DataFrame(events).rename(columns={"time": "timestamp"})
    items = pa.table({"id": ids, "embedding": list(matrix)})
    got = pinnersage.profiles(frame, items, now=NOW, threads=1, **PARAMS)
    assert_same_profiles(got, expected)


def test_variants_equal_the_embedded_batchs_and_are_published(
    pinnersage_bin, tmp_path, data
):
    events, items = data
    alphas = [0.6, 4.0]
    data_dir = tmp_path / "data"
    expected = embedded_batch(pinnersage_bin, data_dir, events, items, variant_alphas=alphas)
    # A repeat, and the generation's own alpha, are cut once, as the embedded batch does.
    asked = [0.6, 4.0, PARAMS["alpha"], 0.6]
    got = pinnersage.profiles(events, items, now=NOW, variant_alphas=asked, **PARAMS)
    assert_same_cuts(got, expected, alphas)
    assert pinnersage.profile_stats(got)["variant_alphas"] == alphas

    # `import profiles` publishes the table with its variants.
    out = tmp_path / "python-profiles.parquet"
    pq.write_table(got, out)
    published = run(pinnersage_bin, "import", "profiles", "--data-dir", data_dir, "--now",
                    NOW + 1, "--window-days", PARAMS["window_days"], "--alpha", PARAMS["alpha"],
                    "--lambda", PARAMS["lam"], "--max-actions", PARAMS["max_actions"], out)
    generation = Path(published.split(" as ")[1].split(" in ")[0])
    meta = json.loads((data_dir / "profiles" / generation.name / "meta.json").read_text())
    assert meta["variant_alphas"] == alphas, meta


def test_bad_variant_alphas_are_refused_before_anything_runs(data):
    events, items = data
    for bad, message in [([float("nan")], "variant alpha"), ([-1.0], "variant alpha"),
                         ([0.1, 0.2, 0.3, 0.4, 0.5], "at most 4 variant alphas")]:
        with pytest.raises(pinnersage.PinnersageError, match=message):
            pinnersage.profiles(events, items, now=NOW, variant_alphas=bad, **PARAMS)
    # A single number is one variant; an empty list is none (the table keeps its schema).
    one = pinnersage.profiles(events, items, now=NOW, variant_alphas=4.0, **PARAMS)
    assert one.column_names[-1] == "alpha"
    none = pinnersage.profiles(events, items, now=NOW, variant_alphas=[], **PARAMS)
    assert none.column_names == list(pinnersage.PROFILE_COLUMNS)


def test_timestamps_and_integer_ids_are_accepted():
    events = pa.table(
        {
            "user": pa.array([1, 1, 2], pa.int64()),
            "item": pa.array([10, 11, 10], pa.int64()),
            "time": pa.array([NOW - 100, NOW - 50, NOW], pa.timestamp("s")),
        }
    )
    items = (np.array([10, 11]), np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    table = pinnersage.profiles(events, items, now=NOW)
    assert sorted(table.column("user").to_pylist()) == ["1", "1", "2"]
    assert table.column("latest_time").to_pylist()[0] in (NOW - 100, NOW - 50, NOW)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda e: e.pop("user"), "no column 'user'"),
        (lambda e: e.update(user=pa.array(["a", None, "b"])), "column 'user': row 1 is null"),
        (lambda e: e.update(weight=np.array([1.0, -1.0, 1.0])), "event row 1: weight"),
        (lambda e: e.update(user=np.array(["a", "", "b"])), "event row 1"),
        (lambda e: e.update(time=np.array([1.0, np.nan, 2.0])), "not finite"),
        (lambda e: e.update(time=np.array([1, 2])), "time expected length 3"),
    ],
)
def test_bad_events_name_the_column_and_row(edit, message):
    events = {"user": np.array(["a", "b", "c"]), "item": np.array(["x", "x", "y"]),
              "time": np.array([NOW, NOW, NOW])}
    edit(events)
    items = (["x", "y"], np.eye(2, dtype=np.float32))
    with pytest.raises(pinnersage.PinnersageError, match=message):
        pinnersage.profiles(events, items, now=NOW)


def test_bad_items_and_parameters():
    events = {"user": ["a"], "item": ["x"], "time": [NOW]}
    with pytest.raises(pinnersage.PinnersageError, match="duplicate item id"):
        pinnersage.profiles(events, (["x", "x"], np.eye(2, dtype=np.float32)), now=NOW)
    ragged = pa.table({"id": ["x", "y"], "embedding": [[1.0, 0.0], [1.0]]})
    with pytest.raises(pinnersage.PinnersageError, match="ragged"):
        pinnersage.profiles(events, ragged, now=NOW)
    with pytest.raises(pinnersage.PinnersageError, match="alpha"):
        pinnersage.profiles(events, (["x"], np.eye(1, dtype=np.float32)), now=NOW, alpha=-1)
    with pytest.raises(pinnersage.PinnersageError, match="window_days"):
        pinnersage.profiles(events, (["x"], np.eye(1, dtype=np.float32)), now=NOW, window_days=0)
    with pytest.raises(pinnersage.PinnersageError, match="threads"):
        pinnersage.profiles(events, (["x"], np.eye(1, dtype=np.float32)), now=NOW, threads=10**6)
    with pytest.raises(pinnersage.PinnersageError, match="expected a pyarrow Table"):
        pinnersage.profiles([1, 2, 3], (["x"], np.eye(1, dtype=np.float32)), now=NOW)


def movielens_heaviest(users: int):
    """The bundled MovieLens ratings >= 4 of the `users` heaviest users as an events dict, and
    the title embeddings as (ids, matrix)."""
    pd = pytest.importorskip("pandas")
    ml = REPO / "examples" / "movielens-small"
    ratings = pd.read_csv(ml / "ratings.csv")
    ratings = ratings[ratings.rating >= 4.0]
    heavy = ratings.userId.value_counts().index[:users]
    ratings = ratings[ratings.userId.isin(heavy)]
    events = {"user": ratings.userId.to_numpy(), "item": ratings.movieId.to_numpy(),
              "time": ratings.timestamp.to_numpy()}
    ids = [line.strip() for line in open(ml / "item_emb_movieIds.txt") if line.strip()]
    return events, (ids, np.load(ml / "item_emb_minilm_l6_v2.npy"))


def test_evaluate_returns_the_metrics_of_pinnersage_eval():
    # A quick run: the 150 heaviest users, no sweeps, few bootstrap samples.
    events, (ids, matrix) = movielens_heaviest(150)
    out = pinnersage.evaluate(events, (ids, matrix), item_embeddings="given", sweeps=False,
                              bootstrap=50)
    assert "report" in out and "Recall" in out["report"]
    text = str(out)
    assert "pinnersage" in text.lower() and "recall" in text.lower()
    with pytest.raises(pinnersage.PinnersageError, match="unknown option"):
        pinnersage.evaluate(events, (ids, matrix), colour="blue")


def test_evaluate_tunes_on_als_embeddings_and_returns_the_config():
    events, (ids, matrix) = movielens_heaviest(100)
    out = pinnersage.evaluate(events, (ids, matrix), item_embeddings="learned",
                              learned_method="als", learned_dim=16, sweeps=False, bootstrap=20,
                              tune=True, tune_alphas=[1.75, 4.0], tune_global_shares=[0.0, 0.5])
    assert "als" in out and "tuned" in out["als"]
    assert "implicit ALS" in out["report"]
    config = out["configs"]["tuned-als.toml"]
    assert "alpha" in config and "serve --config" in config
    with pytest.raises(pinnersage.PinnersageError, match="learned_method"):
        pinnersage.evaluate(events, (ids, matrix), learned_method="pca")
