#!/usr/bin/env python3
"""The batch on Spark (local mode) against the embedded batch and a scipy/fastcluster peer.

On one `pinnersage synth` data set, one run:
  1. embedded: `pinnersage import items`, `import events`, `batch` (each timed);
  2. Spark + pinnersage (`pinnersage.spark.build_profiles`, written as Parquet), with the overhead
     split by running the same plan cut short: up to the sorted partitions (read, window filter,
     dedupe, join, shuffle, cap), then through mapInArrow without clustering (Arrow transfer);
  3. the peer a team would write without pinnersage: the same Spark plan with a grouped pandas
     UDF (applyInPandas) running fastcluster's Ward + scipy's fcluster + a numpy medoid and
     importance per user.
Prints a Markdown table; the peer's partitions are checked against pinnersage's on every user.

  pip install ./crates/python[spark] scipy fastcluster
  target/release/pinnersage synth --out syn --users 100000 --items 100000 --dim 64 --seed 1
  python scripts/bench_spark.py --synth syn --work /tmp/bench-spark
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

NOW = 1_700_000_000


def timed(label, fn, results):
    start = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - start
    results.append((label, secs))
    print(f"{label}: {secs:.1f} s", flush=True)
    return out


def peer_udf(now, alpha, lam, max_actions):
    """The per-user pandas function of the peer: fastcluster Ward, fcluster at sqrt(alpha)
    (scipy heights are distances; pinnersage's alpha is on squared heights), numpy medoid and
    importance, most recent max_actions kept."""
    import fastcluster
    import pandas as pd
    from scipy.cluster.hierarchy import fcluster

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values("time", kind="stable").tail(max_actions)
        x = np.stack(pdf["embedding"].to_numpy()).astype(np.float64)
        if len(x) == 1:
            labels = np.array([1])
        else:
            z = fastcluster.linkage(x, method="ward")
            labels = fcluster(z, t=np.sqrt(alpha), criterion="distance")
        age = (now - pdf["time"].to_numpy()) / 86_400.0
        w = pdf["weight"].to_numpy() * np.exp(-lam * age)
        items = pdf["item"].to_numpy()
        out = []
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            centre = x[rows].mean(axis=0)
            medoid = rows[np.argmin(((x[rows] - centre) ** 2).sum(axis=1))]
            out.append((pdf["user"].iloc[0], items[medoid], len(rows), float(w[rows].sum()),
                        sorted(set(items[rows]))))
        return pd.DataFrame(out, columns=["user", "medoid", "size", "importance", "members"])

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--synth", type=Path, required=True, help="a `pinnersage synth` directory")
    ap.add_argument("--work", type=Path, required=True, help="scratch directory (deleted first)")
    ap.add_argument("--bin", type=Path, default=Path("target/release/pinnersage"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--memory", default="8g")
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    results: list[tuple[str, float]] = []
    data_dir = args.work / "data"
    p = str(args.bin)

    def sh(*a):
        subprocess.run([p, *map(str, a)], check=True, stdout=subprocess.DEVNULL)

    timed("embedded: import items", lambda: sh("import", "items", "--data-dir", data_dir,
                                               args.synth / "items.parquet"), results)
    timed("embedded: import events", lambda: sh("import", "events", "--data-dir", data_dir,
                                                args.synth / "events.parquet"), results)
    embedded_out = args.work / "embedded.parquet"
    timed("embedded: batch", lambda: sh("batch", "--data-dir", data_dir, "--now", NOW,
                                        "--out", embedded_out), results)

    from pyspark.sql import SparkSession

    import pinnersage
    from pinnersage.spark import PROFILE_SCHEMA_DDL, build_profiles, prepare_actions

    spark = (
        SparkSession.builder.master(f"local[{args.cores}]")
        .config("spark.driver.memory", args.memory)
        .config("spark.sql.shuffle.partitions", str(args.cores * 4))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    events = spark.read.parquet(str(args.synth / "events.parquet")).withColumnRenamed(
        "timestamp", "time"
    )
    items = spark.read.parquet(str(args.synth / "items.parquet"))
    job = build_profiles(spark, events, items, NOW)
    # The same plan cut short: the input of the mapInArrow stage, and mapInArrow without work.
    plan_input = prepare_actions(spark, events, items, NOW)

    def noop(df):
        df.write.format("noop").mode("overwrite").save()

    timed("spark: read + filter + dedupe + join + shuffle + cap + sort (noop sink)",
          lambda: noop(plan_input), results)

    def drain(batches):
        for _ in batches:
            pass
        return iter(())

    timed("spark: ... + Arrow to Python workers (no clustering)",
          lambda: noop(plan_input.mapInArrow(drain, PROFILE_SCHEMA_DDL)), results)
    spark_out = args.work / "spark-profiles"
    timed("spark: pinnersage build_profiles, written as Parquet",
          lambda: job.write.parquet(str(spark_out)), results)

    expected = pq.read_table(embedded_out)
    got = pq.read_table(spark_out)
    same = _same(got, expected)
    print(f"spark == embedded: {same}", flush=True)

    if not args.skip_peer:
        peer = (
            plan_input.groupBy("user").applyInPandas(
                peer_udf(NOW, pinnersage.DEFAULT_ALPHA, pinnersage.DEFAULT_LAMBDA,
                         pinnersage.DEFAULT_MAX_ACTIONS),
                "user string, medoid string, size long, importance double, members array<string>",
            )
        )
        peer_out = args.work / "peer-profiles"
        timed("spark: peer (applyInPandas + fastcluster/scipy/numpy), written as Parquet",
              lambda: peer.write.parquet(str(peer_out)), results)
        agree = _partitions_agree(pq.read_table(peer_out), expected)
        print(f"peer partitions equal pinnersage's for {agree:.4%} of users", flush=True)

    users = len(set(expected.column("user").to_pylist()))
    print(f"\n{users} users\n\n| step | wall | users/s |\n|---|---:|---:|")
    for label, secs in results:
        print(f"| {label} | {secs:.1f} s | {users / secs:,.0f} |")
    spark.stop()


def _same(got, expected) -> bool:
    key = lambda r: (r["user"], r["rank"])  # noqa: E731
    a = sorted(got.to_pylist(), key=key)
    b = sorted(expected.to_pylist(), key=key)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for k in ("user", "rank", "medoid", "size", "latest_time", "members"):
            if x[k] != y[k]:
                return False
        if abs(x["importance"] - y["importance"]) > 1e-9 * abs(y["importance"]):
            return False
    return True


def _partitions_agree(peer, expected) -> float:
    def parts(table):
        out: dict[str, set] = {}
        for r in table.to_pylist():
            out.setdefault(r["user"], set()).add(frozenset(r["members"]))
        return out

    a, b = parts(peer), parts(expected)
    return sum(a.get(u) == s for u, s in b.items()) / max(1, len(b))


if __name__ == "__main__":
    main()
