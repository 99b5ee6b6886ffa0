"""Summarising an experiment: medians over seeds per arm and lr, best lrs, ratios.

An *arm* is a schedule with an update rule (``("pwo", "adam")``); its key in the summary
is ``"pwo+adam"`` (:func:`arm_key`). Ratios compare each schedule with the reference
schedule (PWO when it ran) under the same update rule.
"""
import math

import numpy as np

from ..session import STALL_RULES

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


def _work(settings, schedule):
    """Per-epoch work of ``schedule`` on the results' network (None without sizes)."""
    sizes = settings.get("sizes")
    if not sizes or len(sizes) < 2:
        return None
    from .stats import schedule_work
    return schedule_work(sizes, schedule)


def _seed_sets(settings):
    """(report seeds, selection seeds) of the results' settings."""
    return list(settings["seeds"]), list(settings.get("select_seeds") or [])


def summarize(results):
    """Medians over seeds per arm and learning rate, best lrs, ratios and their statistics.

    Runs stopped by Ctrl-C are left out. A run that did not reach the target counts as
    infinitely slow, so a median "to target" is None when half or more of the seeds
    missed it.

    With selection seeds (``settings["select_seeds"]``), the best learning rate of each
    arm is chosen on those seeds' runs and every reported number comes from the other
    seeds (``settings["seeds"]``); otherwise both are the same seeds (stated in
    ``best[...]["chosen_on"]``).

    Returns
    -------
    dict
        ``by_lr``: one entry per (schedule, rule, lr) over the report seeds, with
        ``optimizer``, ``update``, ``lr``, ``n_runs``, ``n_reached``, ``reach_rate``,
        ``n_diverged``, ``n_stalled`` (stopped by ``patience``), ``n_collapsed`` (the
        two), the medians ``epochs_to_target``, ``seconds_to_target``, ``final_loss``,
        ``final_val_loss``, ``final_val_accuracy``, ``final_train_accuracy``,
        ``final_seconds``, ``setup_seconds``, ``epoch_seconds`` (training seconds per
        epoch, set-up excluded), the work ``macs_per_epoch`` (multiply-adds, all samples)
        ``x_passes_per_epoch``, ``macs_to_target``, ``x_passes_to_target`` (medians), the
        accuracies at the ``budgets`` and the median ``crossings`` (and
        ``paper_crossings``); ``selection``: the same over the selection seeds (empty
        without them); ``best``: per arm (key :func:`arm_key`), its report entry at the lr
        chosen by :func:`poswise.experiments.stats.select_best` (without a target: the
        lowest final loss), with ``chosen_on`` and ``qualified``; ``ratios``:
        ``equal_lr`` (per rule and lr) and ``best_lr`` (per rule), each schedule's medians
        divided by the reference schedule's (``versus``; above 1 means the reference
        needed less), with ``epochs_ci`` (paired bootstrap, 95 %), ``macs`` (the ratio of
        median multiply-adds to the target), ``sign_test`` (epochs) and ``paired``: seed
        by seed, on how many seeds each reached the target in fewer epochs / less time (a
        miss counts as infinitely late; ties count for neither; without a target, the
        lower final loss wins); ``chosen``: per arm, the chosen ``lr`` and ``qualified``
        (also when the report seeds did not run at it); ``rule``: the rule for "best",
        in words.
    """
    from .stats import MIN_REACH, bootstrap_ratio, select_best, sign_test
    settings = results["settings"]
    has_target = settings.get("target_loss") is not None
    min_reach = settings.get("min_reach", MIN_REACH)
    report_seeds, select_seeds = _seed_sets(settings)
    all_runs = [r for r in results["runs"] if r["stopped_reason"] != "interrupted"]
    runs = [r for r in all_runs if r["seed"] in report_seeds]
    sel_runs = [r for r in all_runs if r["seed"] in select_seeds]
    arms = arms_of(results)
    work = {o: _work(settings, o) for o in dict.fromkeys(o for o, _ in arms)}
    n_train = settings.get("n_train")

    def entries(rs_all):
        out = []
        for lr in settings["lr"]:
            for opt, upd in arms:
                rs = [r for r in rs_all if r["optimizer"] == opt and _update_of(r) == upd
                      and r["lr"] == lr]
                if rs:
                    out.append(_entry(rs, opt, upd, lr, has_target, work[opt], n_train,
                                      settings))
        return out
    by_lr = entries(runs)
    selection = entries(sel_runs) if select_seeds else []

    best, chosen_lr = {}, {}
    for opt, upd in arms:
        pool = selection if select_seeds else by_lr
        cands = [e for e in pool if e["optimizer"] == opt and e["update"] == upd]
        if not cands:
            continue
        if has_target:
            chosen, ok = select_best(cands, min_reach)
        else:
            chosen = min(cands, key=lambda e: math.inf if e["final_loss"] is None
                         else e["final_loss"])
            ok = True
        chosen_lr[arm_key(opt, upd)] = {"lr": chosen["lr"], "qualified": ok}
        rep = _find(by_lr, opt, upd, chosen["lr"])
        if rep is not None:
            best[arm_key(opt, upd)] = {**rep, "qualified": ok, "chosen_on":
                                       "selection seeds" if select_seeds
                                       else "reported seeds"}

    def keys(r):
        if not has_target:
            fl = r["final_loss"] if r["final_loss"] is not None else math.inf
            return fl, fl
        return tuple(math.inf if r[k] is None else r[k]
                     for k in ("epochs_to_target", "seconds_to_target"))

    def pairs(opt, ref, upd, lr_opt, lr_ref):
        """[(run of opt, run of ref)] per report seed that has both."""
        out = []
        for seed in report_seeds:
            a, b = ([r for r in runs if r["optimizer"] == o and _update_of(r) == upd
                     and r["seed"] == seed and r["lr"] == lr] for o, lr in
                    ((opt, lr_opt), (ref, lr_ref)))
            if a and b:
                out.append((a[0], b[0]))
        return out

    def paired(opt, ref, ps):
        """Seed by seed: which of the two reached the target (or lower loss) first."""
        w = {"n_seeds": 0, "fewer_epochs": {opt: 0, ref: 0}, "less_time": {opt: 0, ref: 0}}
        for a, b in ps:
            (ae, as_), (be, bs) = keys(a), keys(b)
            w["n_seeds"] += 1
            for k, x, y in (("fewer_epochs", ae, be), ("less_time", as_, bs)):
                w[k][opt] += x < y
                w[k][ref] += y < x
        return w

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    def ratios(g, p, opt, ref, ps):
        out = {"epochs": ratio(g["epochs_to_target"], p["epochs_to_target"]),
               "seconds": ratio(g["seconds_to_target"], p["seconds_to_target"]),
               "final_loss": ratio(g["final_loss"], p["final_loss"]),
               "macs": ratio(g.get("macs_to_target"), p.get("macs_to_target")),
               "macs_per_epoch": ratio(g.get("macs_per_epoch"), p.get("macs_per_epoch")),
               "paired": paired(opt, ref, ps)}
        if has_target and ps:
            ea = [a["epochs_to_target"] for a, _ in ps]
            eb = [b["epochs_to_target"] for _, b in ps]
            out["epochs_ci"] = bootstrap_ratio(ea, eb)
            out["sign_test"] = sign_test(ea, eb)
        return out

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
                                  **ratios(g, p, opt, ref, pairs(opt, ref, upd, lr, lr))})
            g, p = best.get(arm_key(opt, upd)), best.get(arm_key(ref, upd))
            if g is not None and p is not None:
                at_best.append({"optimizer": opt, "versus": ref, "update": upd,
                                "lr": g["lr"], "versus_lr": p["lr"],
                                **ratios(g, p, opt, ref,
                                         pairs(opt, ref, upd, g["lr"], p["lr"]))})
    rule = (f"best lr: the fewest median epochs to the target among the rates where at "
            f"least {min_reach:.0%} of the seeds reach it, chosen on "
            + ("the selection seeds " + ",".join(map(str, select_seeds))
               + " and reported on the others" if select_seeds
               else "the reported seeds themselves"))
    return {"by_lr": by_lr, "selection": selection, "best": best, "chosen": chosen_lr,
            "rule": rule,
            "ratios": {"equal_lr": equal, "best_lr": at_best}}


def _find(by_lr, opt, upd, lr):
    return next((e for e in by_lr if e["optimizer"] == opt and e["update"] == upd
                 and e["lr"] == lr), None)


def _entry(rs, opt, upd, lr, has_target, work=None, n_train=None, settings=None):
    from .stats import value_at_epoch
    n = len(rs)
    e = {"optimizer": opt, "update": upd, "lr": lr, "label": rs[0].get("label"),
         "n_runs": n,
         "n_reached": sum(r["epochs_to_target"] is not None for r in rs),
         "n_diverged": sum(r["stopped_reason"] == "diverged" for r in rs),
         "n_stalled": sum(r["stopped_reason"] in STALL_RULES for r in rs),
         "epochs_to_target": _median_to([r["epochs_to_target"] for r in rs]),
         "seconds_to_target": _median_to([r["seconds_to_target"] for r in rs])}
    e["reach_rate"] = e["n_reached"] / n
    e["n_collapsed"] = e["n_diverged"] + e["n_stalled"]
    if not has_target:
        e["epochs_to_target"] = e["seconds_to_target"] = None
    for k in _SUMMARY_KEYS:
        e[k] = _median([r.get(k) for r in rs])
    e["epoch_seconds"] = _median([
        (r["final_seconds"] - (r.get("setup_seconds") or 0.0)) / r["epochs"]
        for r in rs if r.get("final_seconds") is not None and r.get("epochs")])
    if work is not None and n_train:
        per, fwd = work["macs_per_sample"] * n_train, work["forward_macs_per_sample"] * n_train
        e.update(macs_per_epoch=per, x_passes_per_epoch=work["x_passes"])
        to = [r["epochs_to_target"] for r in rs]
        e["macs_to_target"] = _median_to([None if t is None else fwd + t * per for t in to])
        e["x_passes_to_target"] = _median_to([None if t is None else 1 + t * work["x_passes"]
                                              for t in to])
        # Accuracy at fixed budgets: epochs, and multiply-adds in units of GD epochs.
        budgets = []
        gd = _work(settings, "gd")
        for kind, vals in (("epochs", settings.get("epoch_budgets") or ()),
                           ("gd_epochs_of_work", settings.get("flop_budgets") or ())):
            for b in vals:
                ep = (int(b) if kind == "epochs" else
                      int(math.floor((b * gd["macs_per_sample"]) / work["macs_per_sample"])))
                acc = [value_at_epoch(r.get("val_accuracy") or [], ep) for r in rs]
                budgets.append({"kind": kind, "budget": b, "epoch": ep,
                                "n_trained": sum(len(r.get("loss") or []) > ep for r in rs),
                                "val_accuracy": _median(acc),
                                "val_accuracy_iqr": _iqr(acc)})
        if budgets:
            e["budgets"] = budgets
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


def _iqr(values):
    vals = [float(v) for v in values if v is not None]
    return [float(q) for q in np.percentile(vals, [25, 75])] if vals else None


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
