"""Epochs and seconds to a training-loss target, GD vs PWO, median over seeds.

- ``cat``: the cat data (209 x 12288; random data of that shape when the files are not
  found), 12288-20-7-5-1, BCE < 0.1, lr 0.01, float64 (the paper's task).
- ``mnist``: the real MNIST training set (60000 x 784, skipped when the files are not
  found: a loss target on random labels means nothing), 784-20-7-5-10, cross-entropy < 1.0,
  lr 0.1, float64.

The seed is the network's initialisation seed; each round of a benchmark is one seed, and
``extra_info["runs"]`` holds ``epochs_to_target``, ``seconds_to_target``
(``History.seconds``: set-up included, it is what a user waits) and the final loss of each.
The pytest-benchmark stats time the whole ``fit`` of each seed.
"""
from dataclasses import dataclass

import numpy as np
import pytest

import _bench_common as common


@dataclass(frozen=True)
class Target:
    name: str
    title: str
    loader: str
    sizes: tuple
    loss: str
    lr: float
    target: float
    max_epochs: int
    seeds: tuple
    random_ok: bool       # fall back to random data of the same shape


if common.SMOKE:
    TARGETS = {
        "cat": Target("cat", "cat (smoke)", "", (96, 20, 7, 5, 1), "bce", 0.01, 0.1, 30,
                      (0, 1), True),
        "mnist": Target("mnist", "MNIST (smoke)", "", (28, 20, 7, 5, 10), "cross_entropy",
                        0.1, 1.0, 10, (0,), True),
    }
else:
    TARGETS = {
        "cat": Target("cat", "cat, BCE < 0.1, lr 0.01", "cat", (12288, 20, 7, 5, 1), "bce",
                      0.01, 0.1, 20000, (0, 1, 2, 3, 4), True),
        "mnist": Target("mnist", "MNIST, cross-entropy < 1.0, lr 0.1", "mnist",
                        (784, 20, 7, 5, 10), "cross_entropy", 0.1, 1.0, 500, (0, 1, 2),
                        False),
    }

_CACHE = {}


def _data(t):
    if t.name in _CACHE:
        return _CACHE[t.name]
    X = y = None
    source = "random"
    if t.loader:
        try:
            from poswise import datasets
            ds = getattr(datasets, f"load_{t.loader}")(dtype=np.float64)
            X, y, source = ds.X_train, ds.y_train, "real"
        except Exception as exc:           # files not found, loader missing, ...
            if not t.random_ok:
                _CACHE[t.name] = (None, None, f"{type(exc).__name__}: {exc}")
                return _CACHE[t.name]
    if X is None:
        n = 24 if common.SMOKE and t.name == "cat" else (
            96 if common.SMOKE else {"cat": 209, "mnist": 60000}[t.name])
        X = common.fill_uniform((n, t.sizes[0]), np.float64, 0)
        y = np.random.default_rng(1).integers(0, max(t.sizes[-1], 2), size=n)
    _CACHE[t.name] = (X, y, source)
    return _CACHE[t.name]


CASES = [(name, opt) for name in TARGETS for opt in ("gd", "pwo")]


@pytest.mark.parametrize("target_name,optimizer", CASES,
                         ids=[f"{n}-{o}" for n, o in CASES])
def test_time_to_target(benchmark, target_name, optimizer):
    import poswise
    t = TARGETS[target_name]
    X, y, source = _data(t)
    if X is None:
        pytest.skip(f"{t.title}: real data not available ({source})")
    cls = poswise.GradientDescent if optimizer == "gd" else poswise.PositionWise
    benchmark.group = f"target:{target_name}"
    seeds = iter(t.seeds)
    runs = []

    def setup():
        seed = next(seeds)
        return (seed, poswise.MLP(t.sizes, dtype=np.float64, rng=seed)), {}

    def fit(seed, net):
        h = cls(t.lr, loss=t.loss, threads=common.THREADS).fit(
            net, X, y, epochs=t.max_epochs, target_loss=t.target)
        runs.append({"seed": seed, "epochs_to_target": h.epochs_to_target,
                     "seconds_to_target": h.seconds_to_target, "epochs": h.epochs,
                     "seconds": h.seconds[-1], "loss": h.loss[-1],
                     "first_layer": h.first_layer, "stopped_reason": h.stopped_reason})

    with common.OtherCpu() as other:
        benchmark.pedantic(fit, setup=setup, rounds=len(t.seeds), iterations=1)
    reached = [r for r in runs if r["epochs_to_target"] is not None]
    med = (lambda key: float(np.median([r[key] for r in reached])) if reached else None)
    benchmark.extra_info.update(
        kind="target", target_name=target_name, title=t.title, optimizer=optimizer,
        impl=f"poswise-{optimizer}", dtype="float64", shape=target_name,
        N=int(X.shape[0]), D=int(X.shape[1]), sizes=list(t.sizes), loss_name=t.loss,
        lr=t.lr, target=t.target, max_epochs=t.max_epochs, data=source, runs=runs,
        seeds=list(t.seeds)[:len(runs)], reached=len(reached),
        median_epochs=med("epochs_to_target"), median_seconds=med("seconds_to_target"),
        threads=common.THREADS, blas_threads=common.blas_threads(),
        threadpool_info=common.threadpool_info(), smoke=common.SMOKE,
        other_cpu=other.share)
