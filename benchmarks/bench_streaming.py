"""Training on X larger than memory: streamed epochs vs the in-memory run (manual).

    python benchmarks/bench_streaming.py make DIR [--gib 2]      # DIR/x.npy, DIR/x.h5, DIR/y.npy
    python benchmarks/bench_streaming.py run DIR SOURCE SCHEDULE [--epochs 3] [--threads 1]

SOURCE is ``memory`` (X loaded whole), ``memmap`` (np.load mmap_mode="r"), ``npyrows``
(poswise._streaming.NpyRows: plain reads, no mapping) or ``hdf5``. Every source trains the
same float32 network (784-20-7-5-10, cross-entropy, SGD) with the compiled engine through
poswise.distributed.EpochRunner (the streamed ones with a BlockReader) and prints one JSON
line: seconds per epoch, peak resident memory, losses; the weights go to
DIR/w_SOURCE_SCHEDULE.npz for comparison (``compare DIR SCHEDULE``). Run a streamed source
under a memory limit, e.g. a cgroup (v1: memory.limit_in_bytes) or ``ulimit -v`` for
npyrows/hdf5 (a memmap needs address space for the whole file). Nothing is asserted.
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

SIZES = (784, 20, 7, 5, 10)


def _status_mib(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024)
    return None


def make(d, gib):
    import h5py
    d.mkdir(parents=True, exist_ok=True)
    D = SIZES[0]
    N = int(gib * (1 << 30)) // (D * 4) + 1
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(d / "x.npy", mode="w+", dtype=np.float32, shape=(N, D))
    with h5py.File(d / "x.h5", "w") as f:
        ds = f.create_dataset("X", shape=(N, D), dtype=np.float32, chunks=(1024, D))
        for lo in range(0, N, 65536):
            hi = min(N, lo + 65536)
            block = rng.standard_normal((hi - lo, D), dtype=np.float32)
            X[lo:hi] = block
            ds[lo:hi] = block
    X.flush()
    np.save(d / "y.npy", rng.integers(0, SIZES[-1], size=N).astype(np.intc))
    print(f"N={N} D={D}: {N * D * 4 / (1 << 30):.2f} GiB per copy in {d}")


def run(d, source, schedule, epochs, threads):
    from poswise._plan import _new_engine
    from poswise._streaming import BlockReader, NpyRows
    from poswise.distributed import EpochRunner, gd_spans, pwo_spans
    from poswise.session import new_rule_state
    from poswise.updates import get_update

    y = np.load(d / "y.npy")
    N, D = len(y), SIZES[0]
    rng = np.random.default_rng(1)
    W = [(rng.standard_normal((SIZES[l + 1], SIZES[l])) / np.sqrt(SIZES[l])).astype(np.float32)
         for l in range(len(SIZES) - 1)]
    b = [np.zeros(SIZES[l + 1], np.float32) for l in range(len(SIZES) - 1)]
    spans = gd_spans(len(W)) if schedule == "gd" else pwo_spans(len(W))
    rule = get_update("sgd")
    eng = _new_engine("cython", W, b, "cross_entropy", "relu", 0.01, 30.0, 0.35, N,
                      rule=rule, state=new_rule_state(rule, W), spans=spans,
                      nthreads=threads)
    t0 = time.perf_counter()
    f = None
    reader = None
    if source == "memory":
        X = np.load(d / "x.npy")
    elif source == "memmap":
        X = np.load(d / "x.npy", mmap_mode="r")
        reader = BlockReader(X, np.float32, n_features=D)
    elif source == "npyrows":
        reader = BlockReader(NpyRows(d / "x.npy"), np.float32, n_features=D)
    elif source == "hdf5":
        import h5py
        f = h5py.File(d / "x.h5", "r")
        reader = BlockReader(f["X"], np.float32, n_features=D)
    else:
        sys.exit(f"unknown source {source!r}")
    if reader is not None:
        # The engine reads X only through the runner's blocks; it wants an array of N rows
        # for its set-up: untouched zero pages (calloc) are never resident.
        X = X if source == "memmap" else np.zeros((N, D), np.float32)
    eng.set_data(X, y)
    setup = time.perf_counter() - t0
    runner = EpochRunner(reader=reader)
    times, cpu, losses = [], [], []
    from threadpoolctl import threadpool_limits
    for _ in range(epochs):
        t, c = time.perf_counter(), time.process_time()
        with threadpool_limits(threads):
            losses.append(runner(eng, spans, 0.1))
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    if f is not None:
        f.close()
    np.savez(d / f"w_{source}_{schedule}.npz", *W, *b)
    print(json.dumps({
        "source": source, "schedule": schedule, "N": N, "D": D, "threads": threads,
        "setup_s": round(setup, 3),
        "first_epoch_s": round(times[0], 3),     # includes the priming forward pass
        "epoch_s": round(float(np.median(times[1:])) if epochs > 1 else times[0], 3),
        # CPU seconds of all the process's threads: robust to other jobs on the machine
        "epoch_cpu_s": round(float(np.median(cpu[1:])) if epochs > 1 else cpu[0], 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        # resident pages not backed by a file (a memmap's pages are file-backed and count
        # in the peak RSS above, but the kernel drops them under memory pressure)
        "rss_anon_mib": _status_mib("RssAnon"),
        "block_rows": None if reader is None else reader.block_rows,
        "losses": [round(v, 7) for v in losses]}))


def compare(d, schedule):
    ref = np.load(d / f"w_memory_{schedule}.npz")
    for p in sorted(d.glob(f"w_*_{schedule}.npz")):
        got = np.load(p)
        err = max(float(np.max(np.abs(got[k] - ref[k])) / np.max(np.abs(ref[k])))
                  for k in ref.files)
        print(f"{p.name}: max relative difference to memory {err:.2e}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["make", "run", "compare"])
    p.add_argument("dir", type=Path)
    p.add_argument("source", nargs="?")
    p.add_argument("schedule", nargs="?", default="gd")
    p.add_argument("--gib", type=float, default=2.0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="BLAS and kernel threads")
    a = p.parse_args()
    if a.cmd == "make":
        make(a.dir, a.gib)
    elif a.cmd == "run":
        run(a.dir, a.source, a.schedule, a.epochs, a.threads)
    else:
        compare(a.dir, a.source or a.schedule)


if __name__ == "__main__":
    main()
