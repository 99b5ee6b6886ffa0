"""Before/after: the marginal epoch time of two builds of poswise, side by side.

    python benchmarks/compare_builds.py BEFORE_REV [AFTER_REV] [--rounds 7] [--cases ...]

Each revision is checked out into a temporary git worktree and built in place; then, for
each case, the two builds are timed alternately, one subprocess per measurement (round r
of build A, round r of build B, ...), so that both see the same machine load. A
measurement is the marginal cost of an epoch through the public API,
``(fit(2k epochs) - fit(k epochs)) / k`` on the same initial network (set-up excluded),
and the script prints, per case, the median epoch time of each build and the median of
the per-round ratios after/before. Plain SGD only: it is the question "did the update
rules slow the existing paths down".
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

# (name, N, D, sizes tail, loss, lr, k)
CASES = {
    "tiny": (16, 16, (20, 7, 5, 1), "bce", 0.01, 4000),
    "cat": (209, 12288, (20, 7, 5, 1), "bce", 0.01, 200),
    "mnist": (60000, 784, (20, 7, 5, 10), "cross_entropy", 0.05, 6),
    "cifar": (50000, 3072, (20, 7, 5, 10), "cross_entropy", 0.01, 3),
}

CHILD = r"""
import json, sys, time
import numpy as np
import poswise
N, D, tail, loss, lr, k, dtype, opt = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
X = rng.random((N, D)).astype(dtype)
y = rng.integers(0, tail[-1] if tail[-1] > 1 else 2, N)
net0 = poswise.MLP([D, *tail], rng=0, dtype=dtype)
cls = poswise.PositionWise if opt == "pwo" else poswise.GradientDescent
def cost(epochs):
    net = net0.copy()
    h = cls(lr, loss=loss).fit(net, X, y, epochs=epochs)
    return h.seconds[-1], h.first_layer
cost(1)
a, mode = cost(k)
b, _ = cost(2 * k)
print(json.dumps({"epoch_s": (b - a) / k, "first_layer": mode}))
"""


def build(rev, root):
    path = os.path.join(root, rev.replace("/", "_"))
    subprocess.run(["git", "worktree", "add", "-f", "--detach", path, rev], check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=path,
                   check=True, capture_output=True)
    return path


def measure(path, case, dtype, opt):
    N, D, tail, loss, lr, k = CASES[case]
    env = dict(os.environ, PYTHONPATH=os.path.join(path, "src"))
    out = subprocess.run([sys.executable, "-c", CHILD,
                          json.dumps([N, D, tail, loss, lr, k, dtype, opt])],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after", nargs="?", default="HEAD")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cases", default="tiny,cat,mnist,cifar")
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--json", help="write the raw measurements here")
    args = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="poswise-builds-")
    paths = {rev: build(rev, root) for rev in (args.before, args.after)}
    rows, raw = [], []
    try:
        for case in args.cases.split(","):
            for dtype in args.dtypes.split(","):
                for opt in ("gd", "pwo"):
                    times = {rev: [] for rev in paths}
                    for _ in range(args.rounds):
                        for rev, path in paths.items():
                            r = measure(path, case, dtype, opt)
                            times[rev].append(r["epoch_s"])
                            raw.append(dict(r, rev=rev, case=case, dtype=dtype, opt=opt))
                    ratios = [a / b for a, b in zip(times[args.after], times[args.before])]
                    rows.append((case, dtype, opt, r["first_layer"],
                                 statistics.median(times[args.before]),
                                 statistics.median(times[args.after]),
                                 statistics.median(ratios)))
                    print(f"{case:6s} {dtype:8s} {opt:4s} {rows[-1][3]:7s} "
                          f"before {rows[-1][4] * 1e3:9.4f} ms  after "
                          f"{rows[-1][5] * 1e3:9.4f} ms  after/before {rows[-1][6]:.3f}",
                          flush=True)
    finally:
        for path in paths.values():
            subprocess.run(["git", "worktree", "remove", "--force", path],
                           capture_output=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(raw, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
