#!/usr/bin/env python3
"""Before/after of the direct kernels alone: two copies of ``_direct.h``, same process type.

Usage::

    python benchmarks/kernel_ab.py --base-header DIR [--base-avx2-header DIR]
                                   [--isa auto,avx2] [--rounds 5] [-o OUT.json]

Builds ``benchmarks/kernel_bench.c`` against the header in ``DIR`` (before) and against
this checkout's ``src/poswise/_kernels/_direct.h`` (after), then runs them alternately,
``--rounds`` times per case: the first-layer forward and gradient products on MNIST- and
CIFAR-shaped data (one thread, 20 outputs, float64 and float32) and an empty
``pw_parallel`` call (2 and 8 threads). Each run reports the minimum over its repetitions
of the calling thread's CPU time for the products (robust to other processes; wall time is
kept in the JSON too) and of wall time for the dispatch; the JSON (default ``benchmarks/results/kernels-<cpu-class>-
<date>.json``) keeps every run and the medians; ``scripts/bench_report.py`` renders it
beside ``ab.py``'s table of the same class. The two builds must agree to the last bit
(``check``); a difference is reported. Never asserts on time.
"""
import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from ab import commit_of, cpu_class, cpu_info, portable  # noqa: E402

CASES = [("prod", 60000, 784, 20, "d", 1, 5), ("prod", 60000, 784, 20, "s", 1, 5),
         ("prod", 20000, 3072, 20, "d", 1, 3), ("prod", 20000, 3072, 20, "s", 1, 3),
         ("pool", 2, 2000), ("pool", 8, 300)]


def _header_commit(header_dir):
    """The commit of the checkout holding the header, or a placeholder (a path outside
    the repository means nothing in a committed record)."""
    commit = commit_of(header_dir)
    return portable(header_dir, "BASE_HEADER") if commit.startswith("unknown") else commit


def build(header_dir, out):
    cc = os.environ.get("CC", "gcc")
    subprocess.run([cc, "-O3", "-I", str(header_dir), str(HERE / "kernel_bench.c"), "-o",
                    str(out), "-lpthread"], check=True, capture_output=True, text=True)
    return out


def case_name(case):
    if case[0] == "pool":
        return f"pw_parallel, {case[1]} threads, empty shares"
    _, N, D, n1, t, threads, _ = case
    return f"{N} x {D}, {n1} outputs, {'float64' if t == 'd' else 'float32'}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-header", required=True, help="folder of the old _direct.h")
    ap.add_argument("--base-avx2-header", help="old header whose CPU check reports no "
                                               "AVX-512 (its AVX2 path)")
    ap.add_argument("--base-commit", help="commit of the old header")
    ap.add_argument("--isa", default="auto")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-o", "--output")
    args = ap.parse_args(argv)
    info = cpu_info()
    tmp = Path(tempfile.mkdtemp())
    after = build(ROOT / "src" / "poswise" / "_kernels", tmp / "after")
    for isa in args.isa.split(","):
        base_dir = args.base_avx2_header if isa == "avx2" and args.base_avx2_header \
            else args.base_header
        before = build(Path(base_dir), tmp / f"before-{isa}")
        env = dict(os.environ)
        if isa != "auto":
            env["POSWISE_ISA"] = isa
        rec = {"cpu_class": cpu_class(info, isa), "cpu": info, "kind": "kernels",
               "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
               "before": args.base_commit or _header_commit(base_dir), "after": commit_of(ROOT),
               "command": "python benchmarks/kernel_ab.py " + " ".join(
                   portable(a, "BASE_HEADER") if os.path.isabs(a) else a
                   for a in (argv or sys.argv[1:])),
               "load_before": os.getloadavg(), "runs": [], "summary": [],
               "clock": "products: thread CPU time; dispatch: wall time"}
        for case in CASES:
            times = {"before": [], "after": []}
            checks = {}
            for rnd in range(args.rounds):
                for name, exe in ((("before", before), ("after", after)) if rnd % 2 == 0
                                  else (("after", after), ("before", before))):
                    res = subprocess.run([str(exe)] + [str(c) for c in case], env=env,
                                         capture_output=True, text=True, check=True,
                                         timeout=600)
                    out = json.loads(res.stdout)
                    out.update(case=case_name(case), build=name, round=rnd)
                    rec["runs"].append(out)
                    times[name].append(out)
                    if "check" in out:
                        checks[name] = out["check"]
            # products: the thread's CPU time (one thread; robust on a shared machine)
            keys = ["call_s"] if case[0] == "pool" else ["fwd_cpu_s", "grad_cpu_s"]
            for key in keys:
                b = statistics.median(r[key] for r in times["before"])
                a = statistics.median(r[key] for r in times["after"])
                row = {"case": case_name(case), "what": {"call_s": "dispatch",
                                                         "fwd_cpu_s": "forward",
                                                         "grad_cpu_s": "gradient"}[key],
                       "before_s": b, "after_s": a, "after_over_before": a / b}
                if checks:
                    row["bit_identical"] = checks.get("before") == checks.get("after")
                rec["summary"].append(row)
                print(f"[{rec['cpu_class']}] {row}", file=sys.stderr)
        rec["load_after"] = os.getloadavg()
        path = Path(args.output) if args.output else (
            HERE / "results" / f"kernels-{rec['cpu_class']}-{rec['date'][:10]}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec, indent=1) + "\n")
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
