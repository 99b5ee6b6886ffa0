"""Round-by-round view of a ``benchmarks/ab.py`` run: for each case, dtype and schedule,
the median epoch time of the build before and after over the rounds, their ratio, the
median of the per-round (paired) ratios and the ratio of the fastest rounds.

On a shared machine single rounds scatter by +-30 % or more; the medians over many
rounds are what a before/after bound should be read from. Usage::

    python benchmarks/ab_rounds.py RUN.json [RUN.json ...]
"""
import argparse
import json
from collections import defaultdict

import numpy as np


def rounds_of(run):
    """{(case, dtype, schedule): {"before": {round: s}, "after": {round: s}}}."""
    by = defaultdict(lambda: {"before": {}, "after": {}})
    for r in run["runs"]:
        for sched, v in r["epoch_s"].items():
            if v is not None:
                by[(r["case"], r["dtype"], sched)][r["build"]][r["round"]] = v
    return by


def rows(run):
    out = []
    for (case, dtype, sched), v in rounds_of(run).items():
        both = sorted(set(v["before"]) & set(v["after"]))
        if not both:
            continue
        before = np.median(list(v["before"].values()))
        after = np.median(list(v["after"].values()))
        paired = np.array([v["after"][i] / v["before"][i] for i in both])
        boot = np.median(paired[np.random.default_rng(0).integers(
            0, paired.size, size=(10000, paired.size))], axis=1)
        low, high = np.quantile(boot, [0.025, 0.975], method="inverted_cdf")
        out.append(dict(case=case, dtype=dtype, schedule=sched, rounds=len(both),
                        before=before, after=after, ratio=after / before,
                        paired=float(np.median(paired)), low=float(low),
                        high=float(high),
                        fastest=min(v["after"].values()) / min(v["before"].values())))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="JSON files written by benchmarks/ab.py -o")
    args = ap.parse_args(argv)
    for path in args.runs:
        with open(path) as f:
            run = json.load(f)
        print(f"{path}: {run.get('cpu_class')}, clock {run.get('clock')}, threads "
              f"{run.get('threads')}, {run.get('rounds_done')} rounds")
        print(f"  {'case':6} {'dtype':8} {'sched':5} {'before':>10} {'after':>10} "
              f"{'after/before':>12} {'paired':>7} {'95 % CI':>11} {'fastest':>8}")
        for r in rows(run):
            print(f"  {r['case']:6} {r['dtype']:8} {r['schedule']:5} {r['before']:10.3g} "
                  f"{r['after']:10.3g} {r['ratio']:12.3f} {r['paired']:7.3f} "
                  f"{r['low']:5.2f}-{r['high']:<5.2f} {r['fastest']:8.3f}")


if __name__ == "__main__":
    main()
