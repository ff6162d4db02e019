"""pinnersage.cluster: parity with `pinnersage cluster --json`, zero copy, errors, threads."""

from __future__ import annotations

import json
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pinnersage
from conftest import REPO, run


def cli_cluster(binary, tmp_path, x, times=None, now=None, alpha=None):
    np.save(tmp_path / "x.npy", x)
    args = ["cluster", "--embeddings", tmp_path / "x.npy", "--json"]
    if times is not None:
        np.save(tmp_path / "t.npy", np.asarray(times, dtype=np.int64))
        args += ["--times", tmp_path / "t.npy"]
    if now is not None:
        args += ["--now", now]
    if alpha is not None:
        args += ["--alpha", alpha]
    return json.loads(run(binary, *args))


@pytest.mark.parametrize("seed", range(6))
def test_random_users_match_the_cli(pinnersage_bin, tmp_path, seed):
    rng = np.random.default_rng(seed)
    m, d = int(rng.integers(1, 300)), int(rng.integers(1, 40))
    x = rng.normal(size=(m, d)).astype(np.float32)
    if seed % 2:
        x[rng.integers(m, size=m // 3)] = x[0]  # exact duplicates: ties everywhere
    times = rng.integers(1_600_000_000, 1_700_000_000, size=m)
    alpha = float(rng.choice([0.5, 2.0, 8.0, 40.0]))
    expected = cli_cluster(pinnersage_bin, tmp_path, x, times, alpha=alpha)
    got = pinnersage.cluster(x, times=times, alpha=alpha).to_dict()
    assert got == expected


def test_movielens_user_matches_the_cli(pinnersage_bin, tmp_path):
    example = REPO / "examples" / "movielens-user-304"
    x, t = np.load(example / "actions.npy"), np.load(example / "times.npy")
    expected = json.loads(
        run(pinnersage_bin, "cluster", "--embeddings", example / "actions.npy",
            "--times", example / "times.npy", "--json")
    )
    profile = pinnersage.cluster(x, times=t)
    assert profile.to_dict() == expected
    assert len(profile) > 3
    labels = profile.labels(len(x))
    assert (labels >= 0).all() and sorted(np.bincount(labels)) == sorted(c.size for c in profile)


def test_float64_and_fortran_inputs_are_converted_to_the_same_result():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    base = pinnersage.cluster(x, alpha=5.0).to_dict()
    assert pinnersage.cluster(x.astype(np.float64), alpha=5.0).to_dict() == base
    assert pinnersage.cluster(np.asfortranarray(x), alpha=5.0).to_dict() == base
    assert pinnersage.cluster(x.tolist(), alpha=5.0).to_dict() == base


def test_float32_c_contiguous_input_is_not_copied():
    x = np.random.default_rng(2).normal(size=(1500, 256)).astype(np.float32)
    assert pinnersage._matrix(x, "embeddings") is x  # the very array reaches Rust
    size = x.nbytes  # 1.5 MB

    def peak(a):
        tracemalloc.start()
        pinnersage.cluster(a, alpha=1e9, max_actions=1500)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    assert peak(x) < size / 4, "a float32 C-contiguous input must not be copied"
    # The measurement can see a copy: a float64 input is converted (one m x d float32 copy).
    assert peak(x.astype(np.float64)) >= size


def test_importance_weights_and_now():
    x = np.array([[0.0, 0.0], [0.0, 0.1], [9.0, 9.0]], dtype=np.float32)
    day = 86_400
    p = pinnersage.cluster(x, times=[0, day, 2 * day], now=12 * day, alpha=1.0, lam=0.1,
                           weights=[2.0, 1.0, 0.5])
    by_medoid = {c.medoid: c for c in p}
    assert by_medoid[2].importance == pytest.approx(0.5 * np.exp(-1.0))
    near = [c for c in p if c.size == 2][0]
    assert near.importance == pytest.approx(2.0 * np.exp(-1.2) + np.exp(-1.1))
    assert near.latest_time == day
    # datetimes are unix seconds
    stamps = np.array(["1970-01-01", "1970-01-02", "1970-01-03"], dtype="datetime64[D]")
    q = pinnersage.cluster(x, times=stamps, now=12 * day, alpha=1.0, lam=0.1,
                           weights=[2.0, 1.0, 0.5])
    assert q == p


def test_max_actions_keeps_the_most_recent():
    x = np.random.default_rng(3).normal(size=(50, 4)).astype(np.float32)
    times = np.arange(50) * 60
    p = pinnersage.cluster(x, times=times, max_actions=10, alpha=1e9)
    assert len(p) == 1 and p[0].members.tolist() == list(range(40, 50))
    assert (p.labels(50)[:40] == -1).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: pinnersage.cluster([[1.0, 2.0], [3.0]]), "ragged"),
        (lambda: pinnersage.cluster(np.array([[1.0, np.nan]])), "row 0, column 1 is NaN"),
        (lambda: pinnersage.cluster(np.array([[1.0, np.inf]])), "column 1"),
        (lambda: pinnersage.cluster(np.zeros(5)), "2-D"),
        (lambda: pinnersage.cluster(np.zeros((0, 3))), "no rows"),
        (lambda: pinnersage.cluster(np.zeros((3, 0))), "0 columns"),
        (lambda: pinnersage.cluster(np.array([["a", "b"]])), "dtype"),
        (lambda: pinnersage.cluster(np.zeros((3, 2)), alpha=-1.0), "alpha"),
        (lambda: pinnersage.cluster(np.zeros((3, 2)), alpha=float("nan")), "alpha"),
        (lambda: pinnersage.cluster(np.zeros((3, 2)), lam=-0.5), "lambda"),
        (lambda: pinnersage.cluster(np.zeros((3, 2)), max_actions=0), "max_actions"),
        (lambda: pinnersage.cluster(np.zeros((3, 2)), times=[1, 2]), "times"),
        (lambda: pinnersage.cluster(np.zeros((3, 2)), times=[1.0, float("nan"), 2]), "not finite"),
        (lambda: pinnersage.cluster(np.zeros((3, 2)), weights=[1, -1, 1]), "weight"),
        (lambda: pinnersage.cluster(np.zeros((3, 2)), weights=[1, 1]), "weights"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(pinnersage.PinnersageError, match=message.replace("(", r"\(")):
        call()


def test_errors_are_value_errors():
    assert issubclass(pinnersage.PinnersageError, ValueError)
    with pytest.raises(ValueError):
        pinnersage.cluster(np.zeros((3, 2)), alpha=-1.0)


def test_each_kind_of_error_is_a_pinnersage_error_and_bad_input_is_the_base():
    kinds = [
        pinnersage.NotFoundError,
        pinnersage.ConflictError,
        pinnersage.UnavailableError,
        pinnersage.InternalError,
    ]
    for kind in kinds:
        assert issubclass(kind, pinnersage.PinnersageError), kind
    with pytest.raises(pinnersage.PinnersageError) as raised:
        pinnersage.cluster(np.zeros((3, 2)), alpha=-1.0)
    assert type(raised.value) is pinnersage.PinnersageError


def test_threads_give_the_sequential_results_and_the_gil_is_released():
    rng = np.random.default_rng(4)
    inputs = [rng.normal(size=(int(rng.integers(50, 400)), 16)).astype(np.float32) for _ in range(8)]
    sequential = [pinnersage.cluster(x, alpha=20.0).to_dict() for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda x: pinnersage.cluster(x, alpha=20.0).to_dict(), inputs))
    assert parallel == sequential

    # While one thread clusters a large user, another thread keeps running Python.
    big = rng.normal(size=(2000, 64)).astype(np.float32)
    started, done = threading.Event(), threading.Event()
    ticks = 0

    def work():
        started.set()
        pinnersage.cluster(big, alpha=20.0)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    while not done.is_set():
        ticks += 1
    worker.join()
    assert ticks > 10_000, f"the main thread ran only {ticks} loops: the GIL was held"
