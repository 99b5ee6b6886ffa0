"""Per-epoch time of GD and PWO beside the BLAS floor, the numpy twin, torch and sklearn.

One benchmark per (shape, dtype, implementation), grouped ``epoch:<shape>:<dtype>`` so
that ratios are taken within one run. A benchmark first runs a calibration fit (also the
warm-up) to choose ``k`` epochs per round, then ``rounds`` rounds of ``k`` epochs, each
from the same initial network. Its pytest-benchmark ``stats`` time a whole round (set-up
included); the per-epoch numbers the report uses are in ``extra_info``: ``epoch_s``
(median over rounds of set-up-free seconds per epoch), its ``_min``/``_max``/``_rounds``,
``epochs`` (= k), and for poswise ``setup_s`` and ``fit_epoch_s`` (see ``_bench_common``);
``other_cpu`` is the share of the CPU that other processes used meanwhile (noise).
Benchmarks never assert on time.
"""
import os

import numpy as np
import pytest

import _bench_common as common

CASES = [(s, dt, impl) for s in ("tiny", "cat", "mnist", "cifar") for dt in ("float32", "float64")
         for impl in common.impls_for(common.SHAPES[s])]


@pytest.mark.parametrize("shape_name,dtype_name,impl", CASES,
                         ids=[f"{s}-{d}-{i}" for s, d, i in CASES])
def test_epoch(benchmark, shape_name, dtype_name, impl):
    shape = common.SHAPES[shape_name]
    dtype = common.DTYPES[dtype_name]
    X, y, source = common.cached_data(shape, dtype)
    try:
        runner = common.make_runner(impl, shape, dtype, X, y)
    except ImportError as exc:
        pytest.skip(f"{impl}: {exc} (optional peer; pip install 'poswise[bench]' / torch)")

    benchmark.group = f"epoch:{shape_name}:{dtype_name}"
    optimizer, kind = common.IMPLS[impl]
    k, calib = common.calibrate(runner, shape)
    summary = common.Summary()

    def setup():
        runner.reset()

    def one_round():
        summary.add(runner.run(k))

    rounds = shape.rounds
    with common.OtherCpu() as other:
        benchmark.pedantic(one_round, setup=setup, rounds=rounds, iterations=1)
    extra = summary.extra()
    benchmark.extra_info.update(
        kind="epoch", shape=shape_name, dtype=dtype_name, impl=impl, optimizer=optimizer,
        peer=kind, N=int(X.shape[0]), D=int(X.shape[1]), sizes=list(shape.sizes),
        loss_name=shape.loss, lr=shape.lr, data=source, rounds=len(summary.rounds),
        calibration_epoch_s=calib["epoch_s"], calibration_epochs=shape.calib_epochs,
        threads=common.THREADS, blas_threads=common.blas_threads(),
        threadpool_info=common.threadpool_info(), smoke=common.SMOKE,
        other_cpu=other.share, loadavg=list(os.getloadavg()), **extra)
    loss = extra.get("loss")
    if kind != "floor" and loss is not None and not np.isfinite(loss):
        benchmark.extra_info["note"] = "non-finite loss: the timing is of a diverged run"
