#!/usr/bin/env python3
"""Before/after epoch cost of two builds of poswise, side by side, on this CPU's classes.

Usage::

    python benchmarks/ab.py --base BASE_SRC [--new NEW_SRC] [--isa auto,avx2]
                            [--rounds 3] [--cases mnist,cifar,tiny] [-o OUT.json]

``BASE_SRC`` and ``NEW_SRC`` are ``src`` folders of two in-place builds (``python setup.py
build_ext --inplace`` in each checkout); ``NEW_SRC`` defaults to this checkout's. For each
CPU class (``--isa``: ``auto`` is the best this CPU has; ``avx2`` caps the direct kernels at
AVX2 through ``POSWISE_ISA``, which a build without that switch ignores: give its AVX2 run
with ``--base-avx2 SRC``, a build whose CPU check reports no AVX-512), every round runs one
child process per build and (shape, dtype), builds alternating, so both see the same
machine state. A child measures, in one process:

* the marginal cost of an epoch through ``fit``: ``(t(fit 2k epochs) - t(fit k)) / k``,
  wall time, everything included (as a user sees it; set-up cancels out);
* the floor: numpy's two products with X per epoch (``FloorRunner``), the same data;
* with ``--torch``, in the children of the build after: PyTorch CPU's epoch (``TorchRunner``);

``reps`` times each, alternating, and reports the medians and the median of the per-rep
ratios poswise / floor (and poswise / torch). ``--clock cpu`` times with the process's CPU
time instead of wall time: with ``--threads 1`` that is the wall time of an idle core, and
the time other processes hold the core drops out. The output JSON (default ``benchmarks/results/<cpu-class>-<date>
.json``, one per class) holds every child's numbers; ``scripts/bench_report.py --classes``
turns them into one table per class. Never asserts on time.
"""
import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = {"mnist": ("mnist", 2, 5), "cifar": ("cifar", 1, 3), "tiny": ("tiny", 2000, 5),
         "cat": ("cat", 100, 5)}
DTYPES = ("float64", "float32")
SCHEDULES = ("gd", "pwo")

CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, BENCH)
import _bench_common as bc
import poswise
from poswise.trainers import GradientDescent, PositionWise

shape = bc.SHAPES[SHAPE]
dtype = np.dtype(DTYPE).type
X, y, _ = bc.make_data(shape, dtype)
floor = bc.FloorRunner(shape, dtype, X, y) if SHAPE != "tiny" else None
out = {"floor_s": [], "epoch_s": {}, "ratio": {}, "first_layer": {}, "threads": {},
       "clock": CLOCK, "torch_s": {}, "torch_ratio": {}}
clock = time.process_time if CLOCK == "cpu" else time.perf_counter
torch_runners = {}
if PEERS:
    import torch
    if THREADS:
        torch.set_num_threads(THREADS)
    torch_runners = {s: bc.TorchRunner(shape, dtype, X, y, s) for s in ("gd", "pwo")}

def fit(cls, epochs):
    net = bc.make_net(shape, dtype)
    t0 = clock()
    hist = cls(shape.lr, loss=shape.loss, threads=THREADS).fit(net, X, y, epochs=epochs)
    return clock() - t0, hist

def torch_epoch(runner, epochs):
    runner.reset()
    t0 = clock()
    runner.run(epochs)
    return (clock() - t0) / epochs

from contextlib import nullcontext
from threadpoolctl import threadpool_info, threadpool_limits
limit = (lambda: threadpool_limits(THREADS)) if THREADS else nullcontext

for sched, cls in (("gd", GradientDescent), ("pwo", PositionWise)):
    fit(cls, 1)                                   # warm-up: imports, pool, pages of X
    tr = torch_runners.get(sched)
    if tr is not None:
        torch_epoch(tr, 1)
    eps, ratios, teps, tratios = [], [], [], []
    for r in range(REPS):
        if floor is not None:
            with limit():
                t0 = clock()
                floor.run(K)
                f = (clock() - t0) / K
            out["floor_s"].append(f)
        t1, _ = fit(cls, K)
        t2, hist = fit(cls, 2 * K)
        e = (t2 - t1) / K
        eps.append(e)
        if floor is not None:
            ratios.append(e / f)
        if tr is not None:
            t = torch_epoch(tr, K)
            teps.append(t)
            tratios.append(e / t)
    out["epoch_s"][sched] = float(np.median(eps))
    out["ratio"][sched] = float(np.median(ratios)) if ratios else None
    if tr is not None:
        out["torch_s"][sched] = float(np.median(teps))
        out["torch_ratio"][sched] = float(np.median(tratios))
    out["first_layer"][sched] = hist.first_layer
    out["threads"][sched] = getattr(hist, "threads", None)
out["floor_s"] = float(np.median(out["floor_s"])) if out["floor_s"] else None
out["blas_arch"] = sorted({i.get("architecture") for i in threadpool_info()
                           if i.get("user_api") == "blas" and i.get("architecture")})
try:
    import ctypes
    from poswise._kernels import _core
    out["isa"] = ctypes.CDLL(_core.__file__).pw_active_isa()
except (AttributeError, OSError):
    out["isa"] = None
print(json.dumps(out))
"""


def portable(path, outside=None):
    """A path as the record shows it: relative to the repository when inside it, else
    ``outside`` or ``.../<its name>`` (the records are committed; one machine's paths
    mean nothing elsewhere)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return outside or f".../{p.name}"


def cpu_info():
    """Model, vector classes and cache sizes as the OS reports them."""
    info = {"machine": platform.machine(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        info["model"] = m.group(1).strip() if m else platform.processor()
        flags = set(re.search(r"^flags\s*:\s*(.+)$", text, re.M).group(1).split())
        info["vector"] = sorted(f for f in flags if f in ("avx2", "fma", "avx512f"))
    except (OSError, AttributeError):
        info["model"] = platform.processor()
        info["vector"] = []
    for name, key in (("l1d", "LEVEL1_DCACHE_SIZE"), ("l2", "LEVEL2_CACHE_SIZE"),
                      ("l3", "LEVEL3_CACHE_SIZE")):
        try:
            res = subprocess.run(["getconf", key], capture_output=True, text=True, timeout=10)
            info[name] = int(res.stdout) if res.returncode == 0 else None
        except (OSError, ValueError):
            info[name] = None
    return info


def cpu_class(info, isa):
    """E.g. ``amd-epyc-avx512`` or ``amd-epyc-avx2`` (the class the kernels ran on)."""
    model = re.sub(r"\(.*?\)|processor|cpu|@.*$", " ", info.get("model", "").lower())
    model = "-".join(w for w in re.split(r"[^a-z0-9]+", model) if w)[:40] or "unknown"
    if isa == "auto":
        best = "avx512" if "avx512f" in info["vector"] else (
            "avx2" if {"avx2", "fma"} <= set(info["vector"]) else "noavx2")
    else:
        best = isa
    return f"{model}-{best}"


def commit_of(src):
    try:
        root = subprocess.run(["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=30)
        if root.returncode == 0:
            return root.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip()
                                          else "")
    except OSError:
        pass
    return "unknown (not a git checkout)"


# Environment that caps the peers (numpy's OpenBLAS, the floor; PyTorch's MKL and ATen
# kernels) at a CPU class, so that an AVX2 machine is emulated on an AVX-512 one for them
# too (``--peers-isa avx2``), not only for poswise (POSWISE_ISA).
PEER_ISA_ENV = {"avx2": {"OPENBLAS_CORETYPE": "Haswell", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                         "ATEN_CPU_CAPABILITY": "avx2"}}


def run_child(src, case, dtype, isa, threads, clock="wall", peers=False, peers_isa=None):
    shape, k, reps = CASES[case]
    code = (f"BENCH = {str(HERE)!r}; SHAPE = {shape!r}; DTYPE = {dtype!r}; K = {k}; "
            f"REPS = {reps}; THREADS = {threads!r}; CLOCK = {clock!r}; "
            f"PEERS = {bool(peers)!r}\n" + CHILD)
    env = dict(os.environ, PYTHONPATH=str(src))
    env.pop("POSWISE_BENCH_SMOKE", None)
    if isa != "auto":
        env["POSWISE_ISA"] = isa
    env.update(PEER_ISA_ENV.get(peers_isa, {}))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"child failed ({src}, {case}, {dtype}, {isa}):\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="src folder of the baseline build")
    ap.add_argument("--base-avx2", help="src folder of the baseline built without AVX-512")
    ap.add_argument("--base-commit", help="commit of the baseline when its folder is not a "
                                          "git checkout (e.g. a git archive)")
    ap.add_argument("--new", default=str(ROOT / "src"), help="src folder of the new build")
    ap.add_argument("--new-commit", help="commit of the new build when its folder is not a "
                                         "git checkout (e.g. a copy of src)")
    ap.add_argument("--isa", default="auto", help="comma-separated: auto, avx2")
    ap.add_argument("--cases", default="mnist,cifar,tiny")
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="threads= of the fits and BLAS threads of the floor (default: the "
                         "library's, every core); 1 is the robust choice on a loaded machine")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time (what a user sees); cpu: the process's CPU "
                         "time, which with --threads 1 leaves out the time other "
                         "processes hold the core (the robust choice on a shared machine)")
    ap.add_argument("--torch", action="store_true",
                    help="also time PyTorch CPU (same data and network, autograd) in the "
                         "children of the build after, alternating with poswise")
    ap.add_argument("--peers-isa", choices=sorted(PEER_ISA_ENV),
                    help="cap the floor's BLAS (OpenBLAS) and PyTorch at this class too: "
                         "emulates a machine of that class for the peers (default: they "
                         "use the best this CPU has)")
    ap.add_argument("-o", "--output", help="output JSON (one class only)")
    args = ap.parse_args(argv)
    info = cpu_info()
    for isa in args.isa.split(","):
        base = args.base_avx2 if isa == "avx2" and args.base_avx2 else args.base
        cls = cpu_class(info, isa) + (f"-peers-{args.peers_isa}" if args.peers_isa else "")
        builds = {"before": Path(base).resolve(), "after": Path(args.new).resolve()}
        record = {
            "cpu_class": cls, "cpu": info, "isa_requested": isa,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "builds": {k: {"src": portable(v, "BASE_SRC" if k == "before" else "NEW_SRC"),
                           "commit": ({"before": args.base_commit,
                                       "after": args.new_commit}[k] or commit_of(v))}
                       for k, v in builds.items()},
            "command": "python benchmarks/ab.py " + " ".join(
                portable(a) if os.path.isabs(a) else a for a in (argv or sys.argv[1:])),
            "load_before": os.getloadavg(), "rounds": args.rounds,
            "peers_isa": args.peers_isa, "peers_env": PEER_ISA_ENV.get(args.peers_isa, {}),
            "threads": args.threads or "library default (every core)",
            "measure": f"marginal {args.clock} time of an epoch through fit, (t(2k) - t(k)) "
                       f"/ k; floor: numpy's two products with X; torch: PyTorch CPU's "
                       f"epoch; medians", "clock": args.clock, "load": [],
            "runs": [],
        }
        for rnd in range(args.rounds):
            for case in args.cases.split(","):
                for dtype in args.dtypes.split(","):
                    order = list(builds) if rnd % 2 == 0 else list(builds)[::-1]
                    for build in order:
                        t0 = time.perf_counter()
                        out = run_child(builds[build], case, dtype, isa, args.threads,
                                        args.clock, args.torch and build == "after",
                                        args.peers_isa)
                        out.update(build=build, round=rnd, case=case, dtype=dtype,
                                   wall_s=time.perf_counter() - t0)
                        record["runs"].append(out)
                        print(f"[{cls}] round {rnd} {case} {dtype} {build}: "
                              f"{out['epoch_s']} ratio {out['ratio']}", file=sys.stderr)
            # written after every round: a long run that is stopped keeps what it measured
            record["load_after"] = os.getloadavg()
            record["load"].append(os.getloadavg())
            record["rounds_done"] = rnd + 1
            path = Path(args.output) if args.output else (
                HERE / "results" / f"{cls}-{record['date'][:10]}.json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1) + "\n")
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
