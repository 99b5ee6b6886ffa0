"""Epoch time of data-parallel training and the share spent in reductions (manual).

    mpirun -n K python benchmarks/bench_mpi_epoch.py --rows 60000 --sizes 784,20,7,5,10 \\
        --schedule pwo --epochs 20 [--threads 1] [--reduction allreduce]

Each rank makes only its rows of a seeded synthetic float64 problem, trains with the
compiled engine through poswise.distributed.EpochRunner, and rank 0 prints one JSON line:
median seconds per epoch, median seconds per epoch inside reductions, reductions per epoch.
Nothing is asserted.
"""
import argparse
import json
import time

import numpy as np
from threadpoolctl import threadpool_limits

from poswise._plan import _new_engine
from poswise.distributed import (EpochRunner, Reduction, gd_spans, pwo_spans, rows_for_rank,
                                 world)
from poswise.session import new_rule_state
from poswise.updates import get_update


class TimedReduction(Reduction):
    seconds = 0.0

    def __call__(self, buf):
        t = time.perf_counter()
        super().__call__(buf)
        self.seconds += time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=60000)
    p.add_argument("--sizes", default="784,20,7,5,10")
    p.add_argument("--schedule", choices=["gd", "pwo"], default="pwo")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reduction", default="allreduce")
    a = p.parse_args()
    comm = world()
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = rows_for_rank(a.rows, comm.Get_rank(), comm.Get_size())
    n = rows.stop - rows.start
    rng = np.random.default_rng([0, comm.Get_rank()])
    X = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], size=n).astype(np.intc)
    wrng = np.random.default_rng(1)
    W = [wrng.standard_normal((sizes[l + 1], sizes[l])) / np.sqrt(sizes[l])
         for l in range(len(sizes) - 1)]
    b = [np.zeros(sizes[l + 1]) for l in range(len(sizes) - 1)]
    spans = gd_spans(len(W)) if a.schedule == "gd" else pwo_spans(len(W))
    rule = get_update("sgd")
    eng = _new_engine("cython", W, b, "cross_entropy", "relu", 0.01, 30.0, 0.35, n,
                      rule=rule, state=new_rule_state(rule, W), spans=spans,
                      nthreads=a.threads)
    eng.set_data(X, y, n_total=a.rows)
    runner = EpochRunner(comm, reduction=a.reduction)
    runner.reduce = TimedReduction(comm, a.reduction)
    times, red = [], []
    with threadpool_limits(a.threads):
        runner(eng, spans, 0.05)                      # priming pass + first epoch
        for _ in range(a.epochs):
            comm.Barrier()
            r0, t = runner.reduce.seconds, time.perf_counter()
            runner(eng, spans, 0.05)
            times.append(time.perf_counter() - t)
            red.append(runner.reduce.seconds - r0)
    if comm.Get_rank() == 0:
        print(json.dumps({"ranks": comm.Get_size(), "rows": a.rows, "sizes": sizes,
                          "schedule": a.schedule, "threads": a.threads,
                          "reduction": a.reduction,
                          "epoch_ms": round(1e3 * float(np.median(times)), 3),
                          "reduce_ms": round(1e3 * float(np.median(red)), 3),
                          "reductions_per_epoch": len(spans)}))


if __name__ == "__main__":
    main()
