#!/usr/bin/env python3
"""Extract one MovieLens-small user as a `pinnersage cluster` example.

Writes examples/movielens-user-USER/: actions.npy (the MiniLM embeddings of the movies the user
rated >= 3.5, oldest first), times.npy (rating times, unix seconds) and movies.tsv (row, movieId,
title, genres), plus the GroupLens README (license) beside them.

Usage: python3 scripts/make_example_user.py --movielens DIR [--user 304]
  DIR holds ratings.csv, movies.csv, README.txt, item_emb_minilm_l6_v2.npy, item_emb_movieIds.txt
"""
import argparse
import csv
import pathlib
import shutil

import numpy as np

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--movielens", required=True)
ap.add_argument("--user", type=int, default=304)
args = ap.parse_args()
src = pathlib.Path(args.movielens)
out = pathlib.Path(__file__).resolve().parent.parent / "examples" / f"movielens-user-{args.user}"
out.mkdir(parents=True, exist_ok=True)

emb = np.load(src / "item_emb_minilm_l6_v2.npy")
row_of = {int(l): i for i, l in enumerate(open(src / "item_emb_movieIds.txt"))}
movies = {int(r["movieId"]): r for r in csv.DictReader(open(src / "movies.csv", encoding="utf-8"))}
rated = sorted(
    (int(r["timestamp"]), int(r["movieId"]))
    for r in csv.DictReader(open(src / "ratings.csv"))
    if int(r["userId"]) == args.user and float(r["rating"]) >= 3.5
)
np.save(out / "actions.npy", emb[[row_of[m] for _, m in rated]].astype(np.float32))
np.save(out / "times.npy", np.array([t for t, _ in rated], dtype=np.int64))
with open(out / "movies.tsv", "w", encoding="utf-8") as f:
    f.write("row\tmovieId\ttitle\tgenres\n")
    for i, (_, m) in enumerate(rated):
        f.write(f"{i}\t{m}\t{movies[m]['title']}\t{movies[m]['genres']}\n")
shutil.copy(src / "README.txt", out / "README.txt")
print(f"{out}: {len(rated)} actions")
