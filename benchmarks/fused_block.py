"""Fused GD epoch time against the fused block size (``poswise._plan.FUSED_BLOCK_BYTES``).

Marginal cost of an epoch through ``fit``, ``(t(fit 2k) - t(fit k)) / k``, for each block
size in turn, alternating sizes within every round, wall clock. Usage::

    python benchmarks/fused_block.py mnist float64 --threads 2 --rounds 7 \\
        --sizes 262144,524288,786432,1048576,1572864,3145728
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as bc  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=("mnist", "cifar"))
    ap.add_argument("dtype", choices=tuple(bc.DTYPES))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=3, help="k of the marginal cost")
    ap.add_argument("--sizes", default="262144,524288,786432,1048576,1572864,3145728",
                    help="comma-separated block sizes in bytes")
    args = ap.parse_args(argv)
    from poswise import _plan
    from poswise.trainers import GradientDescent
    shape, dtype = bc.SHAPES[args.shape], bc.DTYPES[args.dtype]
    X, y, _ = bc.make_data(shape, dtype)
    sizes = [int(s) for s in args.sizes.split(",")]

    def fit(epochs):
        net = bc.make_net(shape, dtype)
        t0 = time.perf_counter()
        GradientDescent(shape.lr, loss=shape.loss, threads=args.threads).fit(
            net, X, y, epochs=epochs)
        return time.perf_counter() - t0

    default = _plan.FUSED_BLOCK_BYTES
    times = {s: [] for s in sizes}
    try:
        for s in sizes:                                  # warm-up
            _plan.FUSED_BLOCK_BYTES = s
            fit(1)
        for _ in range(args.rounds):
            for s in sizes:
                _plan.FUSED_BLOCK_BYTES = s
                k = args.epochs
                times[s].append((fit(2 * k) - fit(k)) / k)
    finally:
        _plan.FUSED_BLOCK_BYTES = default
    for s in sizes:
        print(f"{args.shape} {args.dtype} threads {args.threads or 'default'} block "
              f"{s / 1024:.0f} KiB: median {np.median(times[s]) * 1e3:.2f} ms"
              f"{'  (default)' if s == default else ''}")


if __name__ == "__main__":
    main()
