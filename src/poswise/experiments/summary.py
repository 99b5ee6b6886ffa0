"""Summarising an experiment: medians over seeds per arm and lr, best lrs, ratios.

An *arm* is a schedule with an update rule (``("pwo", "adam")``); its key in the summary
is ``"pwo+adam"`` (:func:`arm_key`). Ratios compare each schedule with the reference
schedule (PWO when it ran) under the same update rule.
"""
import math

import numpy as np

__all__ = ["summarize", "arm_key", "arms_of", "reference_schedule", "for_json",
           "MAX_CURVE_POINTS"]

_SUMMARY_KEYS = ("final_loss", "final_val_loss", "final_val_accuracy",
                 "final_train_accuracy", "final_seconds", "setup_seconds")
_CURVES = ("loss", "val_loss", "paper_loss", "val_accuracy", "seconds")
#: Longest per-epoch curve written to results.json; longer ones are thinned.
MAX_CURVE_POINTS = 5000


def arm_key(schedule, update):
    """The key of an arm in ``summary["best"]``: ``"pwo+adam"``."""
    return f"{schedule}+{update}"


def _update_of(run):
    return run.get("update", "sgd")        # results written before update rules existed


def arms_of(results):
    """The (schedule, rule) pairs of ``results`` in the order they ran."""
    s = results["settings"]
    scheds = s.get("optimizers") or list(dict.fromkeys(r["optimizer"]
                                                       for r in results["runs"]))
    updates = s.get("updates") or ["sgd"]
    return [(o, u) for u in updates for o in scheds]


def reference_schedule(results):
    """The schedule others are compared with: PWO if it ran, else the last one."""
    scheds = [o for o, _ in arms_of(results)]
    return "pwo" if "pwo" in scheds else scheds[-1]


def _median(values, *, missing_is_inf=False):
    """Median of a list where None means "not reached" (inf) or "not available"."""
    if missing_is_inf:
        vals = [math.inf if v is None else float(v) for v in values]
    else:
        vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None
    m = float(np.median(vals))
    return m if math.isfinite(m) else None


def _median_to(values):
    """Median of "epochs/seconds to a level" values, None (missed) counting as inf."""
    return _median(values, missing_is_inf=True)


def summarize(results):
    """Medians over seeds per arm and learning rate, best lrs and ratios.

    Runs stopped by Ctrl-C are left out. A run that did not reach the target counts as
    infinitely slow, so a median "to target" is None when half or more of the seeds
    missed it.

    Returns
    -------
    dict
        ``by_lr``: one entry per (schedule, rule, lr) with ``optimizer``, ``update``,
        ``lr``, ``n_runs``, ``n_reached``, ``n_diverged``, the medians
        ``epochs_to_target``, ``seconds_to_target``, ``final_loss``, ``final_val_loss``,
        ``final_val_accuracy``, ``final_train_accuracy``, ``final_seconds``,
        ``setup_seconds`` and the median ``crossings`` (and ``paper_crossings``);
        ``best``: per arm (key :func:`arm_key`), its entry at its own best lr (fewest
        median epochs to target, then seconds, then final loss; without a target, the
        lowest final loss); ``ratios``: ``equal_lr`` (per rule and lr) and ``best_lr``
        (per rule), each schedule's medians divided by the reference schedule's
        (``versus``; a ratio above 1 means the reference needed less), with ``paired``:
        seed by seed (same initial network), on how many seeds each of the two reached
        the target in fewer epochs / less time (a miss counts as infinitely late; ties
        count for neither; without a target, the lower final loss wins).
    """
    settings = results["settings"]
    has_target = settings.get("target_loss") is not None
    runs = [r for r in results["runs"] if r["stopped_reason"] != "interrupted"]
    arms = arms_of(results)
    by_lr = []
    for lr in settings["lr"]:
        for opt, upd in arms:
            rs = [r for r in runs if r["optimizer"] == opt and _update_of(r) == upd
                  and r["lr"] == lr]
            if rs:
                by_lr.append(_entry(rs, opt, upd, lr, has_target))

    def rank(e):
        fl = e["final_loss"] if e["final_loss"] is not None else math.inf
        if not has_target:
            return (fl,)
        return tuple(math.inf if e[k] is None else e[k]
                     for k in ("epochs_to_target", "seconds_to_target")) + (fl,)

    best = {}
    for opt, upd in arms:
        cands = [e for e in by_lr if e["optimizer"] == opt and e["update"] == upd]
        if cands:
            best[arm_key(opt, upd)] = min(cands, key=rank)

    def keys(r):
        if not has_target:
            fl = r["final_loss"] if r["final_loss"] is not None else math.inf
            return fl, fl
        return tuple(math.inf if r[k] is None else r[k]
                     for k in ("epochs_to_target", "seconds_to_target"))

    def paired(opt, ref, upd, lr_opt, lr_ref):
        """Seed by seed: which of the two reached the target (or lower loss) first."""
        w = {"n_seeds": 0, "fewer_epochs": {opt: 0, ref: 0}, "less_time": {opt: 0, ref: 0}}
        for seed in settings["seeds"]:
            a, b = ([r for r in runs if r["optimizer"] == o and _update_of(r) == upd
                     and r["seed"] == seed and r["lr"] == lr] for o, lr in
                    ((opt, lr_opt), (ref, lr_ref)))
            if not a or not b:
                continue
            (ae, as_), (be, bs) = keys(a[0]), keys(b[0])
            w["n_seeds"] += 1
            for k, x, y in (("fewer_epochs", ae, be), ("less_time", as_, bs)):
                w[k][opt] += x < y
                w[k][ref] += y < x
        return w

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    def ratios(g, p):
        return {"epochs": ratio(g["epochs_to_target"], p["epochs_to_target"]),
                "seconds": ratio(g["seconds_to_target"], p["seconds_to_target"]),
                "final_loss": ratio(g["final_loss"], p["final_loss"])}

    ref = reference_schedule(results)
    equal, at_best = [], []
    for upd in dict.fromkeys(u for _, u in arms):
        others = [o for o, u in arms if u == upd and o != ref]
        for opt in others:
            for lr in settings["lr"]:
                g = _find(by_lr, opt, upd, lr)
                p = _find(by_lr, ref, upd, lr)
                if g is not None and p is not None:
                    equal.append({"optimizer": opt, "versus": ref, "update": upd, "lr": lr,
                                  **ratios(g, p), "paired": paired(opt, ref, upd, lr, lr)})
            g, p = best.get(arm_key(opt, upd)), best.get(arm_key(ref, upd))
            if g is not None and p is not None:
                at_best.append({"optimizer": opt, "versus": ref, "update": upd,
                                "lr": g["lr"], "versus_lr": p["lr"], **ratios(g, p),
                                "paired": paired(opt, ref, upd, g["lr"], p["lr"])})
    return {"by_lr": by_lr, "best": best,
            "ratios": {"equal_lr": equal, "best_lr": at_best}}


def _find(by_lr, opt, upd, lr):
    return next((e for e in by_lr if e["optimizer"] == opt and e["update"] == upd
                 and e["lr"] == lr), None)


def _entry(rs, opt, upd, lr, has_target):
    e = {"optimizer": opt, "update": upd, "lr": lr, "label": rs[0].get("label"),
         "n_runs": len(rs),
         "n_reached": sum(r["epochs_to_target"] is not None for r in rs),
         "n_diverged": sum(r["stopped_reason"] == "diverged" for r in rs),
         "epochs_to_target": _median_to([r["epochs_to_target"] for r in rs]),
         "seconds_to_target": _median_to([r["seconds_to_target"] for r in rs])}
    if not has_target:
        e["epochs_to_target"] = e["seconds_to_target"] = None
    for k in _SUMMARY_KEYS:
        e[k] = _median([r.get(k) for r in rs])
    for key in ("crossings", "paper_crossings"):
        if key in rs[0]:
            e[key] = [
                {"threshold": c["threshold"],
                 "n_reached": sum(r[key][j]["epochs"] is not None for r in rs),
                 "epochs": _median_to([r[key][j]["epochs"] for r in rs]),
                 "seconds": _median_to([r[key][j]["seconds"] for r in rs])}
                for j, c in enumerate(rs[0][key])]
    if "final_paper_loss" in rs[0]:
        e["final_paper_loss"] = _median([r.get("final_paper_loss") for r in rs])
    return e


def for_json(results):
    """A copy of compare's results with compact per-epoch curves, for results.json.

    Losses keep 7 significant digits, seconds and accuracies 6 decimals (microseconds),
    far below what a figure shows. A run longer than ``MAX_CURVE_POINTS`` epochs keeps
    every k-th entry plus the target epoch and the last one, and lists the epochs kept in
    ``curve_epochs`` (otherwise entry i is epoch i). The summary and the per-run scalars
    are exact, computed from the full curves.
    """
    def rnd(key, v):
        if v is None or not math.isfinite(v):
            return None
        return round(v, 6) if key in ("seconds", "val_accuracy") else float(f"{v:.7g}")
    runs = []
    for r in results["runs"]:
        r = dict(r)
        n = len(r["loss"])
        keep = None
        if n > MAX_CURVE_POINTS:
            step = math.ceil(n / MAX_CURVE_POINTS)
            keep = set(range(0, n, step)) | {n - 1}
            if r.get("epochs_to_target") is not None:
                keep.add(r["epochs_to_target"])
            keep = sorted(keep)
            r["curve_epochs"] = keep
        for key in _CURVES:
            if key in r and r[key]:
                vals = r[key] if keep is None else [r[key][i] for i in keep
                                                    if i < len(r[key])]
                r[key] = [rnd(key, v) for v in vals]
        runs.append(r)
    return {**results, "runs": runs}
