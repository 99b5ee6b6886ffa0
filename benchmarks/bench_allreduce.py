"""All-reduce cost of one span step's gradients: one packed buffer vs one call per array.

Run under MPI (numbers go to stdout on rank 0; nothing is asserted)::

    mpirun -n 2 python benchmarks/bench_allreduce.py --sizes 784,20,7,5,10 --repeat 500

The arrays are those of a GD step (all layers) of an MLP with the given widths: W[l]
``(n_{l+1}, n_l)`` and b[l], in float64, plus one slot for the loss share. Methods:
``packed`` (one ``Allreduce(IN_PLACE)`` of the packed buffer), ``per-array`` (one call per
weight and bias), ``ordered`` (poswise.distributed's gather + rank-order sum + broadcast),
and ``scalar`` (one double: the latency floor).
"""
import argparse
import time

import numpy as np
from mpi4py import MPI

from poswise.distributed import Reduction


def timeit(comm, fn, repeat):
    """(median, minimum) seconds per call over ``repeat`` calls, each started together.

    Medians, not means: on a shared machine a descheduled rank makes a few calls very
    slow, which says nothing about the reduction."""
    for _ in range(min(50, repeat)):
        fn()
    times = np.empty(repeat)
    for i in range(repeat):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    if comm.size > 1:
        comm.Allreduce(MPI.IN_PLACE, times, op=MPI.MAX)
    return float(np.median(times)), float(times.min())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="784,20,7,5,1")
    p.add_argument("--repeat", type=int, default=2000)
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    sizes = [int(s) for s in args.sizes.split(",")]
    arrays = []
    for l in range(len(sizes) - 1):
        arrays.append(np.ones((sizes[l + 1], sizes[l])))
        arrays.append(np.ones(sizes[l + 1]))
    n = sum(a.size for a in arrays) + 1
    packed = np.ones(n)
    scalar = np.ones(1)
    ordered = Reduction(comm, "ordered")

    def per_array():
        for a in arrays:
            comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)

    # A whole epoch's reductions as poswise.distributed.EpochRunner does them: GD one
    # buffer of every layer's gradients + the loss; PWO one per span L-1..0.
    span_sizes = [sum(a.size for a in arrays[2 * first:]) + 1
                  for first in range(len(sizes) - 2, -1, -1)]
    span_bufs = [np.ones(k) for k in span_sizes]

    def pwo_epoch():
        for buf in span_bufs:
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    res = {
        "packed": timeit(comm, lambda: comm.Allreduce(MPI.IN_PLACE, packed, op=MPI.SUM),
                         args.repeat),
        "per-array": timeit(comm, per_array, args.repeat),
        "ordered": timeit(comm, lambda: ordered(packed), args.repeat),
        "PWO epoch": timeit(comm, pwo_epoch, args.repeat),
        "scalar": timeit(comm, lambda: comm.Allreduce(MPI.IN_PLACE, scalar, op=MPI.SUM),
                         args.repeat),
    }
    if comm.rank == 0:
        print(f"ranks={comm.size} sizes={sizes} doubles={n} ({n * 8 / 1024:.1f} KiB) "
              f"arrays={len(arrays)}")
        for k, (med, low) in res.items():
            print(f"  {k:10s} median {med * 1e6:9.1f} us   min {low * 1e6:9.1f} us")


if __name__ == "__main__":
    main()
