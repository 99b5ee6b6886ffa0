"""Training through ``fit`` on X larger than memory: streamed epochs vs the in-memory run
(manual, not part of the suite; nothing is asserted, figures are printed as JSON lines).

    python benchmarks/bench_streaming.py make DIR [--gib 2] [--gzip]
        DIR/x.npy, DIR/x.h5 (chunks of 1024 whole rows), DIR/y.npy: float32 X of 784
        features; with --gzip also DIR/xz.h5 (the same, gzip level 1: cannot be mapped)
    python benchmarks/bench_streaming.py side DIR SCHEDULE [--sources memory,memmap,...]
                                             [--epochs 4] [--rounds 3]
        every source trained in this one process, interleaved over the rounds (a slow
        spell of the shared machine hits every source alike); per source: the median
        epoch time over all rounds (epochs 2.. of each fit), its spread, the ratio to
        "memory". A source "S+perblock" reads S as under ``ulimit -v`` (each block
        mapped anew, no mapping kept; a 1 TiB soft RLIMIT_AS during its fits)
    python benchmarks/bench_streaming.py limited DIR SOURCE SCHEDULE --limit {cgroup,ulimit}
                                                [--mib 1024] [--epochs 3]
        one fit in a child process under a memory limit: a new memory cgroup (v1 or v2)
        below this process's own (the data files' pages are evicted from the page cache
        first, so that the run's reads are charged to it: a cold start), or RLIMIT_AS
        (``ulimit -v``); the weights go to
        DIR/w_SOURCE-LIMIT_SCHEDULE.npz
    python benchmarks/bench_streaming.py weights DIR SCHEDULE [--epochs 3]
        the in-memory run's weights (no limit), then the largest relative difference of
        every DIR/w_SOURCE-LIMIT_SCHEDULE.npz (written by ``limited``) to them

SOURCE: ``memory`` (np.load), ``memmap`` (np.load(mmap_mode="r"): fit reads the mapped
file directly), ``npyrows`` (poswise._streaming.NpyRows: blocks mapped one at a time),
``hdf5`` (h5py, chunked, mapped), ``hdf5-gzip`` (h5py, compressed: read_direct into
reused buffers). Network 784-20-7-5-10 float32 (``--dtype float64``: every block converted), cross-entropy, SGD, lr 0.1, one thread
(``--threads``), PositionWise or GradientDescent through ``fit``.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = (784, 20, 7, 5, 10)
SOURCES = ("memory", "memmap", "npyrows", "hdf5", "hdf5-gzip")
DTYPE = [np.float32]           # the network's (--dtype)
LIMIT = [""]                   # a run under a limit: its name in the weights' file name


def _status_mib(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024)
    return None


def make(d, gib, gzip):
    import h5py
    d.mkdir(parents=True, exist_ok=True)
    D = SIZES[0]
    N = int(gib * (1 << 30)) // (D * 4) + 1
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(d / "x.npy", mode="w+", dtype=np.float32, shape=(N, D))
    with h5py.File(d / "x.h5", "w") as f:
        ds = f.create_dataset("X", shape=(N, D), dtype=np.float32, chunks=(1024, D))
        fz = h5py.File(d / "xz.h5", "w") if gzip else None
        dz = None if fz is None else fz.create_dataset(
            "X", shape=(N, D), dtype=np.float32, chunks=(1024, D), compression="gzip",
            compression_opts=1)
        for lo in range(0, N, 65536):
            hi = min(N, lo + 65536)
            block = rng.standard_normal((hi - lo, D), dtype=np.float32)
            X[lo:hi] = block
            ds[lo:hi] = block
            if dz is not None:
                dz[lo:hi] = block
        if fz is not None:
            fz.close()
    X.flush()
    del X
    np.save(d / "y.npy", rng.integers(0, SIZES[-1], size=N).astype(np.intc))
    print(f"N={N} D={D}: {N * D * 4 / (1 << 30):.2f} GiB per copy in {d}")


def _open(d, source):
    """(X, closer) for a source."""
    if source == "memory":
        return np.load(d / "x.npy"), None
    if source == "memmap":
        return np.load(d / "x.npy", mmap_mode="r"), None
    if source == "npyrows":
        from poswise._streaming import NpyRows
        return NpyRows(d / "x.npy"), None
    if source in ("hdf5", "hdf5-gzip"):
        import h5py
        f = h5py.File(d / ("x.h5" if source == "hdf5" else "xz.h5"), "r")
        return f["X"], f
    sys.exit(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")


def _fit(X, y, schedule, epochs, threads):
    """One fit from the same initial weights; (network, per-epoch wall and CPU seconds,
    losses)."""
    import poswise
    net = poswise.MLP(SIZES, dtype=DTYPE[0], rng=1)
    marks = []

    def clock(epoch, history):     # called before the first epoch and after each
        marks.append((time.perf_counter(), time.process_time()))
    tr = poswise.SCHEDULES[schedule](0.1, loss="cross_entropy", threads=threads)
    h = tr.fit(net, X, y, epochs=epochs, callbacks=[clock])
    wall = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
    cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
    return net, wall, cpu, [float(v) for v in h.loss]


def _tag():
    return "" if DTYPE[0] == np.float32 else "_f64"


def _weights(net):
    return {f"a{i}": a for i, a in enumerate(net.weights + net.biases)}


class _address_limit:
    """A finite (1 TiB) soft address-space limit during a fit: what ``ulimit -v`` makes
    the reader do (map each block anew, keep no mapping), without limiting anything."""

    def __init__(self, on):
        self.on, self.old = on, None

    def __enter__(self):
        if self.on:
            self.old = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (1 << 40, self.old[1]))

    def __exit__(self, *exc):
        if self.old is not None:
            resource.setrlimit(resource.RLIMIT_AS, self.old)


def side(d, schedule, sources, epochs, rounds, threads):
    y = np.load(d / "y.npy")
    per = {s: {"wall": [], "cpu": []} for s in sources}
    opened = {s: _open(d, s.split("+")[0]) for s in sources}
    try:
        for r in range(rounds):
            for s in (sources if r % 2 == 0 else sources[::-1]):
                with _address_limit(s.endswith("+perblock")):
                    _, wall, cpu, _ = _fit(opened[s][0], y, schedule, epochs, threads)
                per[s]["wall"] += wall[1:]          # epoch 1 adds the priming pass
                per[s]["cpu"] += cpu[1:]
                print(json.dumps({"round": r, "source": s, "epoch_s": [round(v, 3)
                                                                       for v in wall]}),
                      flush=True)
    finally:
        for _, closer in opened.values():
            if closer is not None:
                closer.close()
    base = float(np.median(per[sources[0]]["wall"]))
    base_cpu = float(np.median(per[sources[0]]["cpu"]))
    for s in sources:
        w, c = np.array(per[s]["wall"]), np.array(per[s]["cpu"])
        print(json.dumps({
            "source": s, "schedule": schedule, "epochs_measured": len(w),
            "epoch_s_median": round(float(np.median(w)), 3),
            "epoch_s_min_max": [round(float(w.min()), 3), round(float(w.max()), 3)],
            "ratio_to_" + sources[0]: round(float(np.median(w)) / base, 2),
            "epoch_cpu_s_median": round(float(np.median(c)), 3),
            "cpu_ratio": round(float(np.median(c)) / base_cpu, 2),
            "load_1_5_15": [round(v, 2) for v in os.getloadavg()]}), flush=True)


def run_one(d, source, schedule, epochs, threads):
    """One fit (the child of ``limited``): JSON line, weights to DIR."""
    y = np.load(d / "y.npy")
    t0 = time.perf_counter()
    X, closer = _open(d, source)
    try:
        net, wall, cpu, losses = _fit(X, y, schedule, epochs, threads)
    finally:
        if closer is not None:
            closer.close()
    np.savez(d / f"w_{source}{LIMIT[0]}_{schedule}{_tag()}.npz", **_weights(net))
    print(json.dumps({
        "source": source, "schedule": schedule, "epochs": epochs,
        "total_s": round(time.perf_counter() - t0, 2),
        "epoch_s": [round(v, 3) for v in wall], "epoch_cpu_s": [round(v, 3) for v in cpu],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        # resident pages not backed by a file (a memmap's pages are file-backed, counted
        # in the peak RSS, but dropped by the kernel under memory pressure)
        "rss_anon_mib": _status_mib("RssAnon"), "vm_peak_mib": _status_mib("VmPeak"),
        "losses": [round(v, 7) for v in losses]}), flush=True)


def _own_cgroup():
    """(version, path) of this process's memory cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrl, path = line.split(":", 2)
        if "memory" in ctrl.split(","):
            return 1, Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return 2, Path("/sys/fs/cgroup") / line[3:].lstrip("/")
    sys.exit("no memory cgroup found")


def limited(d, source, schedule, epochs, threads, limit, mib):
    cmd = [sys.executable, __file__, "run", str(d), source, schedule, "--epochs",
           str(epochs), "--threads", str(threads), "--dtype", np.dtype(DTYPE[0]).name,
           f"--tag=-{limit}"]
    env = dict(os.environ)
    if limit == "ulimit":
        def pre():
            resource.setrlimit(resource.RLIMIT_AS, (mib << 20, mib << 20))
        proc = subprocess.run(cmd, preexec_fn=pre, env=env)
        print(json.dumps({"limit": f"RLIMIT_AS {mib} MiB", "exit": proc.returncode}))
        return proc.returncode
    # Pages of the page cache stay charged to the cgroup that read them first: evict the
    # file's pages, so that this run reads them again and they count against its limit.
    for name in ("x.npy", "x.h5", "xz.h5"):
        if (d / name).exists():
            fd = os.open(d / name, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    version, own = _own_cgroup()
    group = own / f"poswise-bench-{os.getpid()}"
    group.mkdir()                   # a child of this process's cgroup: within its limits
    try:
        limit_file, peak_file, fail_file = (
            ("memory.limit_in_bytes", "memory.max_usage_in_bytes", "memory.failcnt")
            if version == 1 else ("memory.max", "memory.peak", "memory.events"))
        (group / limit_file).write_text(str(mib << 20))
        if version == 1 and (group / "memory.memsw.limit_in_bytes").exists():
            try:                    # no swap here; make sure the limit covers it too
                (group / "memory.memsw.limit_in_bytes").write_text(str(mib << 20))
            except OSError:
                pass
        procs = str(group / "cgroup.procs")
        proc = subprocess.run(
            ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *cmd], env=env)
        peak = (group / peak_file).read_text().strip() if (group / peak_file).exists() \
            else None
        fails = (group / fail_file).read_text().strip()
        oom = None
        if (group / "memory.oom_control").exists():
            oom = (group / "memory.oom_control").read_text().split()
        print(json.dumps({
            "limit": f"cgroup v{version} {mib} MiB", "exit": proc.returncode,
            "peak_charged_mib": None if peak is None else round(int(peak) / (1 << 20)),
            "failcnt_or_events": fails.replace("\n", "; "),
            "oom_control": " ".join(oom) if oom else None}))
        return proc.returncode
    finally:
        for _ in range(50):         # the child's charge is moved to the parent on rmdir
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def weights(d, schedule, epochs, threads):
    y = np.load(d / "y.npy")
    X = np.load(d / "x.npy")
    net, *_ = _fit(X, y, schedule, epochs, threads)
    del X
    ref = _weights(net)
    np.savez(d / f"w_memory_{schedule}{_tag()}.npz", **ref)
    for p in sorted(d.glob(f"w_*_{schedule}{_tag()}.npz")):
        got = np.load(p)
        err = max(float(np.max(np.abs(got[k] - ref[k])) / np.max(np.abs(ref[k])))
                  for k in ref)
        print(json.dumps({"file": p.name, "max_rel_diff_to_memory": float(f"{err:.2e}"),
                          "identical": all(np.array_equal(got[k], ref[k]) for k in ref)}))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["make", "side", "run", "limited", "weights"])
    p.add_argument("dir", type=Path)
    p.add_argument("args", nargs="*")
    p.add_argument("--gib", type=float, default=2.0)
    p.add_argument("--gzip", action="store_true", help="make: also a compressed HDF5 copy")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sources", default="memory,memmap,npyrows,hdf5")
    p.add_argument("--threads", type=int, default=1, help="kernel and BLAS threads")
    p.add_argument("--limit", choices=["cgroup", "ulimit"], default="cgroup")
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="the network's dtype (float64: every block converted)")
    p.add_argument("--tag", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    DTYPE[0] = np.dtype(a.dtype).type
    LIMIT[0] = a.tag
    if a.cmd == "make":
        make(a.dir, a.gib, a.gzip)
    elif a.cmd == "side":
        side(a.dir, a.args[0], a.sources.split(","), a.epochs, a.rounds, a.threads)
    elif a.cmd == "run":
        run_one(a.dir, a.args[0], a.args[1], a.epochs, a.threads)
    elif a.cmd == "limited":
        sys.exit(limited(a.dir, a.args[0], a.args[1], a.epochs, a.threads, a.limit, a.mib))
    else:
        weights(a.dir, a.args[0], a.epochs, a.threads)


if __name__ == "__main__":
    main()
