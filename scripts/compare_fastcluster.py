#!/usr/bin/env python3
"""Side-by-side timing: pinnersage vs fastcluster and scipy on identical inputs, one thread.

For each (m, d) it writes one user's L2-normalised embeddings (10 topics plus noise) as NPY,
times fastcluster.linkage(X, method='ward') and scipy's linkage(X, 'ward') + fcluster, runs
`pinnersage-bench cluster` (distances + Ward + cut + medoids + importance, fastest of --repeat; every
tool is timed as its fastest run, which is the least disturbed by other work on the machine)
on the same files, checks that `pinnersage cluster --json` gives the same partition as
fcluster(fastcluster's tree, t=sqrt(alpha)), and prints a Markdown table of times and ratios.

Usage:
  pip install numpy scipy fastcluster
  cargo build --release --workspace
  python3 scripts/compare_fastcluster.py [--bin target/release/pinnersage] [--bench target/release/pinnersage-bench] [--out bench-out]
"""
import argparse
import json
import os
import pathlib
import subprocess
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import fastcluster  # noqa: E402
import numpy as np  # noqa: E402
from scipy.cluster.hierarchy import fcluster, linkage  # noqa: E402

SIZES = [20, 100, 500, 1000, 2000]
DIMS = [64, 256]
ALPHA = 1.75


def user_embeddings(m, d, seed):
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(10, d))
    x = topics[np.arange(m) % 10] + 0.8 * rng.normal(size=(m, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def best_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(min(times))


def canonical(labels):
    seen = {}
    return [seen.setdefault(l, len(seen)) for l in labels]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/pinnersage")
    ap.add_argument("--bench", default="target/release/pinnersage-bench")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(exist_ok=True)

    rows = []
    for d in DIMS:
        for m in SIZES:
            x = user_embeddings(m, d, seed=m * 1000 + d)
            path = out / f"user_m{m}_d{d}.npy"
            np.save(path, x)
            x64 = x.astype(np.float64)
            repeat = args.repeat if m <= 1000 else max(3, args.repeat // 3)
            fc_ms = best_ms(lambda: fastcluster.linkage(x64, method="ward"), repeat)
            sp_ms = best_ms(
                lambda: fcluster(linkage(x64, "ward"), t=np.sqrt(ALPHA), criterion="distance"),
                repeat,
            )
            bench = subprocess.run(
                [args.bench, "cluster", str(path), "--alpha", str(ALPHA), "--json",
                 "--repeat", str(repeat * 3)],
                check=True, capture_output=True, text=True,
            )
            ours = json.loads(bench.stdout.strip().splitlines()[-1])
            clustered = subprocess.run(
                [args.bin, "cluster", "--embeddings", str(path), "--alpha", str(ALPHA),
                 "--max-actions", str(m), "--json"],
                check=True, capture_output=True, text=True,
            )
            labels = [0] * m
            for k, c in enumerate(json.loads(clustered.stdout)["clusters"]):
                for r in c["members"]:
                    labels[r] = k
            z = fastcluster.linkage(x64, method="ward")
            expected = fcluster(z, t=np.sqrt(ALPHA), criterion="distance")
            same = canonical(labels) == canonical(list(expected))
            rows.append((m, d, ours["profile_ms"], ours["distance_ms"], fc_ms, sp_ms, same,
                         ours["clusters"]))
            print(f"m={m} d={d} done", flush=True)

    print()
    print("| m | d | pinnersage profile ms | of which distances ms | fastcluster linkage ms | "
          "scipy linkage+fcluster ms | speed-up vs fastcluster | vs scipy | same partition | clusters |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|")
    for m, d, ps, dist, fc, sp, same, k in rows:
        print(f"| {m} | {d} | {ps:.3f} | {dist:.3f} | {fc:.3f} | {sp:.3f} | "
              f"{fc / ps:.1f}x | {sp / ps:.1f}x | {'yes' if same else 'NO'} | {k} |")


if __name__ == "__main__":
    main()
