#!/usr/bin/env python3
"""Generate the scipy reference fixtures for pinnersage's Ward clustering tests.

For each case it writes, under tests/fixtures/scipy/:
  NAME.X.npy       m x d float32 inputs (one user's actions)
  NAME.Z.npy       scipy.cluster.hierarchy.linkage(X, 'ward') as float64, heights SQUARED
                   (pinnersage works on squared distances; scipy's column 2 is their square root)
  NAME.alphas.npy  merge thresholds alpha (squared scale)
  NAME.labels.npy  int64 (len(alphas) x m): fcluster(Z, t=sqrt(alpha), criterion='distance')

Alphas are placed in the middle of a gap between consecutive merge heights that is at least
1e-3 relative wide, so float32-vs-float64 rounding cannot decide a cut; alpha = 0 (duplicates
merge) and alpha above the last merge (one cluster) are always included.

Usage: python3 scripts/make_scipy_fixtures.py   (needs numpy and scipy; the output is committed,
so the Rust tests need no Python)
"""
import pathlib

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "scipy"
RNG = np.random.default_rng(20200707)


def blobs(m, d, k, spread):
    centres = RNG.normal(size=(k, d))
    which = RNG.integers(0, k, size=m)
    return centres[which] + spread * RNG.normal(size=(m, d))


def make(kind, m, d):
    if kind == "uniform":
        x = RNG.uniform(0, 1, size=(m, d))
    elif kind == "blobs":
        x = blobs(m, d, max(1, m // 20), 0.3)
    elif kind == "normalized":
        x = blobs(m, d, max(1, m // 25), 0.6)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    elif kind == "dups":
        x = blobs(m, d, max(1, m // 10), 0.5)
        n_dup = max(1, m // 5)
        src = RNG.integers(0, m, size=n_dup)
        dst = RNG.choice(m, size=n_dup, replace=False)
        x[dst] = x[src]  # exact duplicates (some rows copied more than once)
        near = RNG.choice(m, size=max(1, m // 10), replace=False)
        x[near] = x[(near + 1) % m] + 1e-4 * RNG.normal(size=(len(near), d))
    else:
        raise ValueError(kind)
    return x.astype(np.float32)


def alphas_for(h):
    hs = np.sort(h)
    out = [0.0, float(hs[-1]) * 1.5 + 1.0]
    for q in (0.3, 0.6, 0.8, 0.9, 0.97):
        k = int(q * (len(hs) - 1))
        for j in list(range(k, len(hs) - 1)) + list(range(k - 1, -1, -1)):
            lo, hi = hs[j], hs[j + 1]
            if hi > 0 and (hi - lo) / hi >= 1e-3:
                out.append(float((lo + hi) / 2))
                break
    return np.array(sorted(set(out)), dtype=np.float64)


CASES = [
    ("uniform", 2, 2), ("uniform", 3, 2), ("blobs", 10, 3), ("dups", 12, 2),
    ("uniform", 50, 8), ("blobs", 80, 2), ("dups", 100, 16), ("normalized", 150, 32),
    ("uniform", 200, 384), ("blobs", 300, 16), ("normalized", 500, 64), ("dups", 400, 64),
    ("blobs", 1000, 128), ("normalized", 1000, 384), ("uniform", 2000, 16), ("normalized", 2000, 64),
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for kind, m, d in CASES:
        name = f"{kind}_m{m}_d{d}"
        x = make(kind, m, d)
        z = linkage(x.astype(np.float64), "ward")
        alphas = alphas_for(z[:, 2] ** 2)
        labels = np.stack(
            [fcluster(z, t=np.sqrt(a), criterion="distance") for a in alphas]
        ).astype(np.int64)
        zsq = z.copy()
        zsq[:, 2] = z[:, 2] ** 2
        np.save(OUT / f"{name}.X.npy", x)
        np.save(OUT / f"{name}.Z.npy", zsq)
        np.save(OUT / f"{name}.alphas.npy", alphas)
        np.save(OUT / f"{name}.labels.npy", labels)
        print(name, "alphas", len(alphas), "clusters", [int(l.max()) for l in labels])


if __name__ == "__main__":
    main()
