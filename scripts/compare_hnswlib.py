#!/usr/bin/env python3
"""Recall@10 vs single-thread QPS: pinnersage's HNSW (hnswlib and usearch) next to hnswlib's Python
package on the same vectors.

Vectors: N items drawn from a mixture of topics (unit norm, like real item embeddings), and
Q held-out queries from the same mixture. Both libraries build with the same M and
ef_construction (on all cores) and are searched one query at a time on one thread for each
ef_search; recall is measured against the exact top-10 (numpy, float64).

    pip install numpy hnswlib
    cargo build --release --workspace
    python3 scripts/compare_hnswlib.py --items 200000 --dim 128
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np


def mixture(n, dim, topics, rng, centres=None):
    if centres is None:
        centres = rng.standard_normal((topics, dim)).astype(np.float32)
    which = rng.integers(0, topics, n)
    x = centres[which] + 0.8 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), centres


def exact_top(x, q, k):
    out = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), 256):
        sims = q[s:s + 256].astype(np.float64) @ x.T.astype(np.float64)
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, 1).argsort(axis=1)[:, ::-1]
        out[s:s + 256] = np.take_along_axis(part, order, 1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=2_000)
    ap.add_argument("--topics", type=int, default=200)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=128)
    ap.add_argument("--ef", default="10,16,32,64,128,256")
    ap.add_argument("--binary", default="target/release/pinnersage-bench")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    import hnswlib

    rng = np.random.default_rng(args.seed)
    x, centres = mixture(args.items, args.dim, args.topics, rng)
    q, _ = mixture(args.queries, args.dim, args.topics, rng, centres)
    efs = [int(e) for e in args.ef.split(",")]
    ours = [("hnswlib", "f32"), ("usearch", "f32"), ("usearch", "f16")]
    k = 10
    truth = exact_top(x, q, k)

    with tempfile.TemporaryDirectory() as tmp:
        xp, qp = os.path.join(tmp, "x.npy"), os.path.join(tmp, "q.npy")
        np.save(xp, x)
        np.save(qp, q)
        runs = {}
        for library, quantization in ours:
            out = subprocess.run(
                [args.binary, "index", "--vectors", xp, "--queries", qp, "--k", str(k),
                 "--ef", args.ef, "--connectivity", str(args.m), "--ef-construction",
                 str(args.ef_construction), "--hnsw-library", library, "--quantization", quantization,
                 "--json"],
                check=True, capture_output=True, text=True).stdout
            lines = [json.loads(line) for line in out.splitlines()]
            runs[library, quantization] = (lines[0], {r["ef"]: r for r in lines[1:]})

    index = hnswlib.Index(space="cosine", dim=args.dim)
    index.init_index(max_elements=args.items, M=args.m, ef_construction=args.ef_construction, random_seed=args.seed)
    t = time.perf_counter()
    index.add_items(x, np.arange(args.items), num_threads=os.cpu_count())
    hnsw_build = time.perf_counter() - t
    index.set_num_threads(1)
    theirs = {}
    for ef in efs:
        index.set_ef(max(ef, k))
        index.knn_query(q[:100], k=k, num_threads=1)
        t = time.perf_counter()
        labels, _ = index.knn_query(q, k=k, num_threads=1)
        qps = len(q) / (time.perf_counter() - t)
        hits = sum(len(set(labels[i]) & set(truth[i])) for i in range(len(q)))
        theirs[ef] = {"recall": hits / truth.size, "qps": qps}

    print(f"{args.items} items x {args.dim} dims ({args.topics} topics, unit norm), {args.queries} held-out queries, "
          f"k={k}, M={args.m}, ef_construction={args.ef_construction}")
    builds = ", ".join(f"pinnersage {lib} {q} {runs[lib, q][0]['build_s']:.1f} s" for lib, q in ours)
    print(f"build on {os.cpu_count()} threads: {builds}, hnswlib (Python) {hnsw_build:.1f} s; "
          f"exact scan {runs[ours[0]][0]['exact_qps']:.0f} QPS")
    print()
    heads = "".join(f" pinnersage {lib} {q} recall@10 | QPS |" for lib, q in ours)
    print(f"| ef_search |{heads} hnswlib (Python) recall@10 | QPS |")
    print("|---:|" + "---:|---:|" * (len(ours) + 1))
    for ef in efs:
        cells = "".join(f" {runs[run][1][ef]['recall']:.4f} | {runs[run][1][ef]['qps']:.0f} |" for run in ours)
        h = theirs[ef]
        print(f"| {ef} |{cells} {h['recall']:.4f} | {h['qps']:.0f} |")


if __name__ == "__main__":
    main()
