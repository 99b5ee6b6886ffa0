"""The per-CPU-class section of docs/performance.md, from ``benchmarks/ab.py`` results.

Each ``benchmarks/results/<cpu-class>-<date>.json`` holds one before/after run on one CPU
class (committed, one file per run). ``scripts/bench_report.py --classes FILES`` calls
:func:`section_classes`, which keeps the newest run of each class and renders one table per
class: the epoch cost through ``fit`` over the BLAS floor for the build before and after,
their ratio, and the epoch time after. Only the standard library is used.
"""
import glob
import json
import math
import os
import re
import statistics

CASE_TITLES = {"mnist": "MNIST-shaped 60000 x 784", "cifar": "CIFAR-shaped 50000 x 3072",
               "tiny": "tiny 16 x 16 (µs per epoch)"}
ISA_NAMES = {2: "AVX-512", 1: "AVX2+FMA", 0: "none (BLAS)"}
#: issue 14's targets per schedule: epoch time over the floor (MNIST-, CIFAR-shaped), the
#: speed-up over PyTorch CPU (every shape), and µs per epoch through fit (tiny)
FLOOR_LIMIT = {"gd": 0.6, "pwo": 0.75}
TORCH_SPEEDUP = {"gd": 1.5, "pwo": 2.5}
TINY_LIMIT_US = {"gd": 5.0, "pwo": 8.0}


def default_files(root):
    """Every class result under ``benchmarks/results`` (files holding a ``cpu_class``)."""
    out = []
    for path in sorted(glob.glob(os.path.join(root, "benchmarks", "results", "*.json"))):
        try:
            with open(path) as f:
                if "cpu_class" in json.load(f):
                    out.append(path)
        except (OSError, ValueError):
            continue
    return out


def _median(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def _fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def _summarise(record):
    """``{(case, dtype, schedule): {build: (median ratio, median epoch s, median ratio to
    torch or None)}}``."""
    cells = {}
    for run in record["runs"]:
        for sched, epoch in run["epoch_s"].items():
            key = (run["case"], run["dtype"], sched)
            cells.setdefault(key, {}).setdefault(run["build"], []).append(
                (run["ratio"].get(sched), epoch, (run.get("torch_ratio") or {}).get(sched)))
    out = {}
    for key, builds in cells.items():
        out[key] = {b: (_median([r for r, _, _ in v]), _median([e for _, e, _ in v]),
                        _median([t for _, _, t in v])) for b, v in builds.items()}
    return out


def _verdict(case, sched, ratio, epoch, torch_ratio):
    """'met' / '**not met**' against issue 14's targets, with the limits that apply."""
    checks = []
    if case == "tiny":
        if epoch is not None:
            checks.append(epoch * 1e6 <= TINY_LIMIT_US[sched])
    elif ratio is not None:
        checks.append(ratio <= FLOOR_LIMIT[sched])
    if torch_ratio is not None:
        checks.append(torch_ratio <= 1 / TORCH_SPEEDUP[sched])
    if not checks:
        return "–"
    return "met" if all(checks) else "**not met**"


def _table(record):
    rows = []
    summary = _summarise(record)
    order = {c: i for i, c in enumerate(CASE_TITLES)}
    for (case, dtype, sched) in sorted(summary, key=lambda k: (order.get(k[0], 9), k[1],
                                                               k[2])):
        cell = summary[(case, dtype, sched)]
        rb, eb, _ = cell.get("before", (None, None, None))
        ra, ea, ta = cell.get("after", (None, None, None))
        verdict = _verdict(case, sched, ra, ea, ta)
        torch = _fmt(ta)
        if case == "tiny":
            change = ea / eb if ea and eb else None
            rows.append(f"| {CASE_TITLES[case]} | {dtype} | {sched.upper()} | – | – | "
                        f"{_fmt(change)} | {_fmt(eb * 1e6 if eb else None, 1)} → "
                        f"{_fmt(ea * 1e6 if ea else None, 1)} µs | {torch} | {verdict} |")
            continue
        change = ra / rb if ra and rb else None
        rows.append(f"| {CASE_TITLES.get(case, case)} | {dtype} | {sched.upper()} | "
                    f"{_fmt(rb)} | {_fmt(ra)} | {_fmt(change)} | "
                    f"{_fmt(eb * 1e3 if eb else None, 1)} → "
                    f"{_fmt(ea * 1e3 if ea else None, 1)} ms | {torch} | {verdict} |")
    head = ["| case | dtype | schedule | × floor before | × floor after | after / before "
            "| epoch before → after | × torch after | issue 14 targets |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    return head + rows


def main_class(machine_info):
    """The CPU class of the main run (pytest-benchmark's machine_info), e.g. for the tables
    above the per-class section."""
    cpu = machine_info.get("cpu", {}) or {}
    flags = set(cpu.get("flags", []))
    isa = "avx512" if "avx512f" in flags else ("avx2" if {"avx2", "fma"} <= flags
                                               else "noavx2")
    return f"{cpu.get('brand_raw', 'unknown CPU')}, {isa}"


def _kernel_table(path, rec):
    clock = ("the calling thread's CPU time" if "cpu" in rec.get("clock", "").lower()
             else "wall time")
    rows = [f"| {r['case']} | {r['what']} | {r['before_s'] * 1e3:.3f} | "
            f"{r['after_s'] * 1e3:.3f} | {r['after_over_before']:.2f} | "
            f"{'yes' if r.get('bit_identical') else ('–' if 'bit_identical' not in r else 'NO')} |"
            for r in rec["summary"]]
    return ([f"Kernels alone (`benchmarks/kernel_ab.py`, {rec['date']} UTC, one thread for "
             f"the products, {clock}, minimum over repetitions, median over rounds; "
             f"load average {', '.join(f'{x:.1f}' for x in rec.get('load_before', []))}; before "
             f"`{rec['before']}`, after `{rec['after']}`; file `{os.path.relpath(path)}`):",
             "", "| case | product | before ms | after ms | after / before | same bits |",
             "| --- | --- | ---: | ---: | ---: | --- |"] + rows + [""])


def section_classes(paths, main_cpu=None):
    """Markdown lines: one subsection and table per CPU class (its newest run of each
    kind: ``ab.py`` through ``fit``, ``kernel_ab.py`` for the kernels alone)."""
    newest, kernels = {}, {}
    for path in paths:
        with open(path) as f:
            rec = json.load(f)
        cls = rec["cpu_class"]
        store = kernels if rec.get("kind") == "kernels" else newest
        if cls not in store or rec["date"] > store[cls][1]["date"]:
            store[cls] = (path, rec)
    for cls in kernels:
        newest.setdefault(cls, None)
    if not newest:
        return []
    lines = ["## Every CPU class: before and after", "",
             "One table per CPU class the direct kernels have run on, from the newest "
             "`benchmarks/ab.py` run of that class (committed under `benchmarks/results/`). "
             "Each round runs the build before and the build after in alternating child "
             "processes; each child measures the marginal cost of an epoch through `fit`, "
             "`(t(fit 2k) − t(fit k)) / k` (everything included; the clock is named per "
             "table), numpy's two products with X (the floor) and, where given, PyTorch "
             "CPU's epoch (`--torch`, the build after only) in the same process, "
             "alternating, and reports the median ratios. The table gives the median over "
             "rounds; \"issue 14 targets\" checks GD ≤ 0.6 × and PWO ≤ 0.75 × the floor, "
             "1.5 × (GD) and 2.5 × (PWO) faster than PyTorch (× torch ≤ 0.67 and ≤ 0.40), and "
             "on the tiny shape ≤ 5 µs (GD) and ≤ 8 µs (PWO) per epoch. A class named "
             "`…-avx2` on an AVX-512 CPU is the AVX2 path forced with `POSWISE_ISA=avx2` "
             "(a build before that predates that switch is given as a copy whose CPU "
             "check reports no AVX-512, `--base-avx2`); there the peers still run their "
             "AVX-512 kernels, unless the class is named `…-avx2-peers-avx2` "
             "(`--peers-isa avx2`: numpy's OpenBLAS and PyTorch capped at AVX2 too, as on "
             "an AVX2 machine)."
             + (f" The tables of the other sections are of the main run's class: {main_cpu}."
                if main_cpu else ""), ""]
    for cls in sorted(newest):
        if newest[cls] is None:
            lines += [f"### {cls}", ""] + _kernel_table(*kernels[cls])
            continue
        path, rec = newest[cls]
        cpu = rec["cpu"]
        isas = {r.get("isa") for r in rec["runs"] if r["build"] == "after"}
        ran = ", ".join(ISA_NAMES.get(i, "?") for i in sorted(i for i in isas
                                                                 if i is not None))
        b, a = rec["builds"]["before"]["commit"], rec["builds"]["after"]["commit"]
        lines += [f"### {cls}", "",
                  f"CPU: {cpu.get('model', '?')}, {cpu.get('cores', '?')} logical cores, "
                  f"vector extensions {', '.join(cpu.get('vector', [])) or 'none'}, "
                  f"L1d {cpu.get('l1d') or '?'} B, L2 {cpu.get('l2') or '?'} B; direct "
                  f"kernels ran on: {ran or '?'}{_peers(rec)}. {rec['date']} UTC, "
                  f"{rec.get('rounds_done', rec['rounds'])} "
                  f"rounds, clock: {_clock(rec)}, "
                  f"threads: {rec.get('threads', 'library default')}; before `{b}`, "
                  f"after `{a}`; load average "
                  f"{', '.join(f'{x:.1f}' for x in rec['load_before'])} → "
                  f"{', '.join(f'{x:.1f}' for x in rec['load_after'])}"
                  + (" (the machine was shared with other jobs: ratios within a process "
                     "are the robust figures)" if rec["load_before"][0] > 1.5 else "")
                  + f". File: `{os.path.relpath(path)}`; command: `{_no_paths(rec['command'])}`.",
                  ""]
        lines += _table(rec) + [""]
        if cls in kernels:
            lines += _kernel_table(*kernels[cls])
    return lines


def _peers(rec):
    """How the peers were capped (``ab.py --peers-isa``), and the BLAS kernels they ran."""
    arch = sorted({a for r in rec["runs"] for a in (r.get("blas_arch") or [])})
    if not rec.get("peers_isa"):
        return f"; the floor's OpenBLAS kernels: {', '.join(arch)}" if arch else ""
    env = ", ".join(f"{k}={v}" for k, v in sorted(rec.get("peers_env", {}).items()))
    return (f"; the peers capped at {rec['peers_isa'].upper()} too ({env}), as on a machine "
            f"of that class: the floor's OpenBLAS kernels: {', '.join(arch) or '?'}")


def _clock(rec):
    if rec.get("clock") == "cpu":
        return ("process CPU time (with one thread: an idle core's wall time; the time "
                "other processes held the core left out)")
    return "wall time"


def _no_paths(cmd):
    """A recorded command without this machine's absolute paths (the builds compared are
    folders a reader makes: BASE_SRC, BASE_AVX2_SRC)."""
    cmd = re.sub(r"(--base-avx2 )\S+", r"\1BASE_AVX2_SRC", cmd)
    return re.sub(r"(--base )\S+", r"\1BASE_SRC", cmd)
