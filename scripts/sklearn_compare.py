"""poswise.sklearn.MLPClassifier beside scikit-learn's MLPClassifier (docs/sklearn.md).

5-fold stratified cross-validation (shuffled, seed 0) of a StandardScaler + MLP pipeline on
digits and breast cancer: accuracy, fit time per fold and epochs run, for scikit-learn's
Adam and poswise's GD and PWO schedules with the Adam rule and the same architecture,
epochs (max_iter), learning rate, alpha and stopping rule, in scikit-learn's mini-batches
and full batch. BLAS runs on one thread for
every model (the machine is shared; threads only add noise at these sizes).

    PYTHONPATH=src python scripts/sklearn_compare.py [--hidden 100] [--max-iter 200] [--repeat 3]
"""
import argparse
import platform
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info, threadpool_limits

from poswise.sklearn import MLPClassifier


def models(hidden, max_iter):
    common = dict(hidden_layer_sizes=hidden, max_iter=max_iter, random_state=0)
    yield "scikit-learn adam, batch 200", SkMLPClassifier(solver="adam", **common)
    for batch, label in (("auto", "batch 200"), (None, "full batch")):
        for sched in ("gd", "pwo"):
            # learning_rate_init defaults to scikit-learn's 0.001 with Adam
            yield (f"poswise {sched} + adam, {label}",
                   MLPClassifier(schedule=sched, update="adam", batch_size=batch,
                                 threads=1, **common))
    yield ("poswise pwo + sgd, full batch, lr 0.1 (defaults)",
           MLPClassifier(threads=1, **common))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", default="100", help="hidden widths, comma-separated")
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3,
                    help="cross-validate each model this many times; report each fold's "
                         "fastest fit (the machine may be shared)")
    args = ap.parse_args(argv)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"CPU: {cpu}; BLAS: "
          f"{sorted({i['internal_api'] for i in threadpool_info() if i['user_api'] == 'blas'})}"
          f" limited to 1 thread; hidden={hidden}, max_iter={args.max_iter}")
    print("| data | model | accuracy (5-fold mean ± std) | fit time per fold (s, fastest "
          f"of {args.repeat}) | epochs (mean) |")
    print("|---|---|---|---|---|")
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    for dname, load in (("digits", load_digits), ("breast cancer", load_breast_cancer)):
        X, y = load(return_X_y=True)
        for label, est in models(hidden, args.max_iter):
            times = []
            for _ in range(args.repeat):
                with threadpool_limits(1), warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    res = cross_validate(make_pipeline(StandardScaler(), est), X, y, cv=cv,
                                         return_estimator=True)
                times.append(res["fit_time"])
            acc = res["test_score"]          # the same in every repeat (fixed seeds)
            epochs = np.mean([p[-1].n_iter_ for p in res["estimator"]])
            fit_time = np.min(times, axis=0).mean()
            print(f"| {dname} | {label} | {acc.mean():.4f} ± {acc.std():.4f} "
                  f"| {fit_time:.3f} | {epochs:.0f} |", flush=True)


if __name__ == "__main__":
    main()
