#!/usr/bin/env python3
"""How many interests does each alpha give? Clusters per user on MovieLens-small by history size.

Every user's movies rated >= 3.5 (MiniLM title embeddings, L2-normalised) are clustered with
`pinnersage cluster` at several alphas; the table shows the median number of clusters per user
for buckets of history length. Used to pick the default alpha (docs/alpha.md).

Usage: python3 scripts/alpha_sweep.py --movielens DIR [--bin target/release/pinnersage]
"""
import argparse
import csv
import json
import pathlib
import subprocess
import tempfile

import numpy as np

ALPHAS = [1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0]
BUCKETS = [(20, 49), (50, 99), (100, 199), (200, 499), (500, 999), (1000, 10**9)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", required=True)
    ap.add_argument("--bin", default="target/release/pinnersage")
    args = ap.parse_args()
    src = pathlib.Path(args.movielens)
    emb = np.load(src / "item_emb_minilm_l6_v2.npy")
    row_of = {int(l): i for i, l in enumerate(open(src / "item_emb_movieIds.txt"))}
    users = {}
    for r in csv.DictReader(open(src / "ratings.csv")):
        if float(r["rating"]) >= 3.5:
            users.setdefault(int(r["userId"]), []).append(row_of[int(r["movieId"])])
    counts = {a: {b: [] for b in BUCKETS} for a in ALPHAS}
    with tempfile.TemporaryDirectory() as tmp:
        for user, rows in users.items():
            bucket = next((b for b in BUCKETS if b[0] <= len(rows) <= b[1]), None)
            if bucket is None:
                continue
            path = pathlib.Path(tmp) / f"{user}.npy"
            np.save(path, emb[rows].astype(np.float32))
            for a in ALPHAS:
                out = subprocess.run([args.bin, "cluster", "--embeddings", str(path), "--alpha", str(a),
                                      "--max-actions", str(len(rows)), "--json"],
                                     check=True, capture_output=True, text=True).stdout
                counts[a][bucket].append(len(json.loads(out)["clusters"]))
    header = "| alpha | " + " | ".join(
        f"{lo}–{hi if hi < 10**9 else '…'} actions (n={len(counts[ALPHAS[0]][(lo, hi)])})" for lo, hi in BUCKETS)
    print(header + " |")
    print("|---:|" + "---:|" * len(BUCKETS))
    for a in ALPHAS:
        cells = [f"{int(np.median(counts[a][b]))}" if counts[a][b] else "–" for b in BUCKETS]
        print(f"| {a} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
