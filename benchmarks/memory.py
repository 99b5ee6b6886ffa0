"""Peak memory of a fit beyond its input data, one fresh subprocess per case.

Usage::

    PYTHONPATH=src python benchmarks/memory.py                 # all cases, a table
    PYTHONPATH=src python benchmarks/memory.py --json mem.json # ... and the raw results
    PYTHONPATH=src python benchmarks/memory.py --case mnist:float64:poswise-gd

What one case measures (in its own process, so nothing else's high-water mark counts):

1. import everything and warm up (a 2-epoch run of the same implementation on 8 samples:
   BLAS thread buffers, torch's thread pool and the compiled kernels are then resident);
2. make X (written in place in blocks, or loaded) and the initial network;
3. garbage-collect, reset the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``;
   if that is refused the counter is not reset and the result is an upper bound) and read
   the current RSS: the *baseline*, which includes X;
4. ``fit(epochs=3)`` (or the peer's 3 epochs, set-up included) with ``tracemalloc`` on;
5. report ``extra_rss = VmHWM - baseline`` (everything the fit added at its peak: the
   workspaces, BLAS buffers, Python objects, a copy of X if any) and ``traced_peak``
   (tracemalloc's peak: numpy and Python allocations only, not malloc'd kernel
   workspaces or torch tensors).

The issue's target is "peak memory during fit <= size of X plus O(N x widest hidden
layer)". It is checked as ``extra_rss <= 16 * N * w * itemsize + 8 MiB`` (``w`` the widest
hidden layer; the 8 MiB absorb allocator and page granularity, which dominate on the small
shapes): a copy of X, or a workspace of D-sized rows per sample, fails it on the MNIST-,
CIFAR- and cat-shaped data.
"""
import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import _bench_common as common  # noqa: E402

EPOCHS = 3
UNITS_ALLOWED = 16
SLACK_BYTES = 8 << 20


def default_cases():
    """(shape, dtype, impl) triples measured by default."""
    cases = [(s, d, impl) for s in ("tiny", "cat", "mnist", "cifar")
             for d in ("float32", "float64") for impl in ("poswise-gd", "poswise-pwo")]
    peers = ["numpy-gd"]
    if common.optional_import("torch") is not None:
        peers += ["torch-gd", "torch-pwo"]
    if common.optional_import("sklearn") is not None:
        peers += ["sklearn-gd"]
    if common.SMOKE:
        return [("tiny", "float64", "poswise-gd"), ("cat", "float32", "poswise-pwo"),
                ("mnist", "float64", peers[-1])]
    cases += [(s, "float64", impl) for s in ("mnist", "cifar") for impl in peers]
    return cases


def _status_kib(field):
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    return int(m.group(1)) if m else None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(shape_name, dtype_name, impl, epochs=EPOCHS):
    """Run one case in this process (call it in a fresh one) and return a dict."""
    shape = common.SHAPES[shape_name]
    dtype = common.DTYPES[dtype_name]
    if common.THREADS is not None:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=common.THREADS)
    # 1. warm-up on a few samples of the same width
    Xw = common.fill_uniform((8, shape.d), dtype, 5)
    yw = np.arange(8) % max(shape.k, 2)
    warm = common.make_runner(impl, shape, dtype, Xw, yw)
    warm.run(2)
    del warm, Xw, yw
    # 2. data and network
    X, y, source = common.make_data(shape, dtype)
    runner = common.make_runner(impl, shape, dtype, X, y)
    runner.reset()
    gc.collect()
    # 3. baseline
    reset_ok = _reset_peak()
    base_kib = _status_kib("VmRSS")
    hwm_before = _status_kib("VmHWM")
    # 4. the fit
    tracemalloc.start()
    t0 = time.perf_counter()
    r = runner.run(epochs)
    wall = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    hwm_kib = _status_kib("VmHWM")
    itemsize = np.dtype(dtype).itemsize
    n, w = X.shape[0], shape.widest_hidden
    extra = max(0, hwm_kib - base_kib) * 1024
    allowed = UNITS_ALLOWED * n * w * itemsize + SLACK_BYTES
    return {
        "shape": shape_name, "dtype": dtype_name, "impl": impl, "epochs": epochs,
        "N": int(n), "D": int(X.shape[1]), "widest_hidden": int(w), "itemsize": itemsize,
        "data": source, "X_bytes": int(X.nbytes), "baseline_rss": base_kib * 1024,
        "hwm_before": hwm_before * 1024, "peak_reset": reset_ok, "peak_rss": hwm_kib * 1024,
        "extra_rss": int(extra), "traced_peak": int(traced),
        "units": extra / float(n * w * itemsize), "allowed_bytes": int(allowed),
        "met": bool(extra <= allowed), "wall_s": wall, "loss": r.get("loss"),
        "first_layer": r.get("first_layer"), "smoke": common.SMOKE,
    }


def run_case_subprocess(shape_name, dtype_name, impl, epochs=EPOCHS, timeout=600):
    """``measure`` in a fresh Python process; returns its dict."""
    import poswise
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(poswise.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, os.path.abspath(__file__), "--child",
           "--case", f"{shape_name}:{dtype_name}:{impl}", "--epochs", str(epochs)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"memory case {shape_name}:{dtype_name}:{impl} failed "
                           f"(exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mib(b):
    return f"{b / 2**20:.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append",
                    help="shape:dtype:impl (repeatable); default: every default case")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--json", help="write the results (a list of dicts) to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cases = ([tuple(c.split(":")) for c in args.case] if args.case else default_cases())
    if args.child:
        (case,) = cases
        print(json.dumps(measure(*case, epochs=args.epochs)))
        return 0
    results = []
    print(f"{'case':34s} {'X MiB':>9s} {'extra MiB':>10s} {'traced MiB':>10s} "
          f"{'N*w units':>9s} met")
    for case in cases:
        r = run_case_subprocess(*case, epochs=args.epochs)
        results.append(r)
        print(f"{':'.join(case):34s} {_mib(r['X_bytes']):>9s} {_mib(r['extra_rss']):>10s} "
              f"{_mib(r['traced_peak']):>10s} {r['units']:9.1f} {r['met']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
