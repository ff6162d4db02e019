"""Shared fixtures: the pinnersage binary, synthetic data, the embedded batch and Spark."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[3]
DAY = 86_400
NOW = 1_700_000_000


def _require(what: str) -> bool:
    return os.environ.get(f"PINNERSAGE_REQUIRE_{what}") == "1"


@pytest.fixture(scope="session")
def pinnersage_bin() -> Path:
    """The `pinnersage` binary: $PINNERSAGE_BIN, else target/release/pinnersage."""
    path = Path(os.environ.get("PINNERSAGE_BIN", REPO / "target" / "release" / "pinnersage"))
    if not path.exists():
        pytest.fail(f"{path} missing: run `cargo build --release` or set PINNERSAGE_BIN")
    return path


def run(binary: Path, *args: str) -> str:
    out = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, f"pinnersage {' '.join(map(str, args))}: {out.stderr}"
    return out.stdout


def synthetic(users: int = 120, items: int = 600, dim: int = 12, seed: int = 3):
    """Events (dict of columns) and items (ids, float32 matrix) with topics, time ties, exact
    duplicates, unknown items, events outside a 30-day window and one user above a cap of 60."""
    rng = np.random.default_rng(seed)
    topics = 10
    centres = rng.normal(size=(topics, dim)).astype(np.float32)
    topic_of = np.arange(items) % topics
    matrix = centres[topic_of] + 0.35 * rng.normal(size=(items, dim)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix.astype(np.float32)
    ids = np.array([f"item-{i}" for i in range(items)])
    cols = {"user": [], "item": [], "time": [], "action": [], "weight": []}
    for u in range(users):
        n = 150 if u == 0 else int(rng.integers(3, 45))
        liked = rng.choice(topics, size=int(rng.integers(1, 5)), replace=False)
        for _ in range(n):
            t = int(rng.choice(liked))
            item = (
                f"unknown-{rng.integers(5)}"
                if rng.random() < 0.04
                else ids[t + topics * int(rng.integers(items // topics))]
            )
            when = NOW - int(rng.integers(0, 80)) * DAY // 2 + 600 * int(rng.integers(2))
            action = ["", "click", "save"][int(rng.integers(3))]
            weight = float([0.5, 1.0, 2.0][int(rng.integers(3))])
            for _ in range(2 if rng.random() < 0.08 else 1):  # exact duplicates
                cols["user"].append(f"user-{u}")
                cols["item"].append(str(item))
                cols["time"].append(when)
                cols["action"].append(action)
                cols["weight"].append(weight)
    events = {
        "user": np.array(cols["user"]),
        "item": np.array(cols["item"]),
        "time": np.array(cols["time"], dtype=np.int64),
        "action": np.array(cols["action"]),
        "weight": np.array(cols["weight"], dtype=np.float32),
    }
    return events, (ids, matrix)


def weight_collisions(events) -> int:
    """Events that repeat an earlier (user, item, time, action) with another weight: the first
    must win everywhere (the event store's rule)."""
    first: dict = {}
    collisions = 0
    for key, w in zip(zip(events["user"], events["item"], events["time"], events["action"]),
                      events["weight"]):
        if first.setdefault(key, w) != w:
            collisions += 1
    return collisions


PARAMS = dict(alpha=1.2, lam=0.02, max_actions=60, window_days=30)

#: The profile table's columns (the schema of `pinnersage batch --out`).
PROFILE_COLUMNS = ["user", "rank", "medoid", "size", "importance", "latest_time", "members",
                   "member_importance"]


def write_inputs(directory: Path, events, items) -> tuple[Path, Path]:
    """Writes items (id, embedding list<float>) and events Parquet files as `import` reads them."""
    ids, matrix = items
    items_file = directory / "items.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array(ids),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(matrix.reshape(-1)), matrix.shape[1]
                ).cast(pa.list_(pa.float32())),
            }
        ),
        items_file,
    )
    events_file = directory / "events.parquet"
    table = pa.table(events).rename_columns(["user", "item", "timestamp", "action", "weight"])
    pq.write_table(table, events_file)
    return items_file, events_file


def embedded_batch(
    binary: Path, data_dir: Path, events, items, params=PARAMS, variant_alphas=()
) -> pa.Table:
    """Imports the data into `data_dir`, runs `pinnersage batch --out` (with
    `--variant-alpha` when given) and reads the output."""
    data_dir.mkdir(parents=True, exist_ok=True)
    items_file, events_file = write_inputs(data_dir.parent, events, items)
    run(binary, "import", "items", "--data-dir", data_dir, items_file)
    run(binary, "import", "events", "--data-dir", data_dir, events_file)
    out = data_dir.parent / "embedded.parquet"
    variants = ["--variant-alpha", ",".join(map(str, variant_alphas))] if variant_alphas else []
    run(
        binary, "batch", "--data-dir", data_dir, "--now", NOW,
        "--window-days", params["window_days"], "--alpha", params["alpha"],
        "--lambda", params["lam"], "--max-actions", params["max_actions"], "--out", out,
        *variants,
    )
    return pq.read_table(out)


def cut(table: pa.Table, alpha) -> pa.Table:
    """The rows of a profile table with variants that belong to the cut at `alpha` (`None`: the
    generation's own), without the `alpha` column."""
    import pyarrow.compute as pc

    column = table.column("alpha")
    keep = pc.is_null(column) if alpha is None else pc.equal(column, alpha)
    return table.filter(keep).drop_columns(["alpha"])


def assert_same_cuts(got: pa.Table, expected: pa.Table, alphas) -> None:
    """Both tables hold the same profiles in the generation's own cut and in each variant."""
    assert got.column_names == expected.column_names == [*PROFILE_COLUMNS, "alpha"]
    held = sorted(a for a in set(got.column("alpha").to_pylist()) if a is not None)
    assert held == sorted(alphas), held
    for alpha in [None, *alphas]:
        assert_same_profiles(cut(got, alpha), cut(expected, alpha))
    own = rows(cut(expected, None))
    for alpha in alphas:
        assert rows(cut(expected, alpha)) != own, f"alpha {alpha} cuts like the generation's own"


def rows(table: pa.Table) -> list[dict]:
    """A profile table's rows sorted by (user, rank), with plain Python values."""
    return sorted(table.to_pylist(), key=lambda r: (r["user"], r["rank"]))


def assert_same_profiles(got: pa.Table, expected: pa.Table) -> None:
    """Same users, ranks, medoids, members and sizes; importance within 1e-9 relative; each
    member's importance within 1e-6 (float32), summing to the cluster's."""
    a, b = rows(got), rows(expected)
    assert len(a) == len(b), f"{len(a)} clusters, expected {len(b)}"
    for x, y in zip(a, b):
        for key in ("user", "rank", "medoid", "size", "latest_time", "members"):
            assert x[key] == y[key], f"{key}: {x} != {y}"
        assert abs(x["importance"] - y["importance"]) <= 1e-9 * abs(y["importance"]), (x, y)
        mx, my = x["member_importance"], y["member_importance"]
        assert len(mx) == len(x["members"]), x
        assert all(abs(p - q) <= 1e-6 * abs(q) for p, q in zip(mx, my)), (x, y)
        assert abs(sum(mx) - x["importance"]) <= 1e-5 * x["importance"], x


class Server:
    """`pinnersage serve` on a free loopback port, stopped at exit."""

    def __init__(self, binary: Path, data_dir: Path):
        (data_dir / "server.json").unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--data-dir", str(data_dir), "--addr", "127.0.0.1:0",
             "--reload-seconds", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 60
        info = data_dir / "server.json"
        while not info.exists() or not info.read_text().strip():
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise AssertionError(f"serve did not start: {self.proc.stderr.read().decode()}")
            time.sleep(0.1)
        self.addr = json.loads(info.read_text())["addr"]

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://{self.addr}{path}", timeout=30) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def spark():
    """A local[2] SparkSession, or a skip when pyspark or Java is missing (a failure when
    PINNERSAGE_REQUIRE_SPARK=1, as in CI)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        if _require("SPARK"):
            raise
        pytest.skip("pyspark is not installed (pip install ./crates/python[spark])")
    if shutil.which("java") is None:
        if _require("SPARK"):
            pytest.fail("java not found: apt-get install openjdk-17-jre-headless")
        pytest.skip("java not found")
    # The workers run this interpreter (the one with pinnersage and pyarrow installed).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("pinnersage-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        # Small Arrow batches: users span batches, as on real data.
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "300")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
