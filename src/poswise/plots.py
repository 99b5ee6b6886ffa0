"""Figures of training runs and of experiments comparing schedules and update rules.

Every function returns a :class:`matplotlib.figure.Figure` built directly (no ``pyplot``
state, no window is ever opened), so it works under any backend and in threads; save it
with :func:`save_figure` (PNG, PDF or SVG).

The inputs are what poswise produces: :class:`poswise.History` objects, the run dicts of
:func:`poswise.experiments.compare` (or ``History.to_dict()``), and compare's results
dict, also after a round trip through JSON. Colours, line styles, markers and labels come
from :mod:`poswise.registry`. Wall-time axes show training time: the set-up before the
first epoch (``setup_seconds``) is subtracted and reported apart.

Runs on selection seeds (``role == "select"``, used only to choose the best learning
rates) are drawn only by :func:`plot_reach` and, when the report seeds ran at the chosen
rates alone, by :func:`plot_lr_sweep`. (Over 400 lines: every figure shares the helpers
and styles above them.)
"""
import os

import numpy as np

from .registry import curve_style, run_label

__all__ = ["plot_loss_curves", "plot_comparison", "plot_lr_sweep", "plot_reach",
           "save_figure", "median_band", "FORMATS"]

#: File formats :func:`save_figure` writes.
FORMATS = ("png", "pdf", "svg")
_KEY_LABELS = {"loss": "training loss", "val_loss": "validation loss",
               "paper_loss": "the paper's loss (training)",
               "val_accuracy": "validation accuracy"}
_TIME_LABEL = "training time (s), set-up excluded"


def _new_figure(ncols=1, figsize=None):
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize or (5.5 * ncols, 4.2), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _get(item, name, default=None):
    if isinstance(item, dict):
        return item.get(name, default)
    return getattr(item, name, default)


def _values(seq):
    """A list with None for non-finite values -> float array with NaN."""
    return np.array([np.nan if v is None else float(v) for v in (seq or [])], dtype=float)


def _setup(item):
    """Seconds before the first epoch: ``setup_seconds``, else ``seconds[0]``."""
    s = _get(item, "setup_seconds")
    if s is None:
        secs = _get(item, "seconds") or [0.0]
        s = secs[0] if secs[0] is not None else 0.0
    return float(s)


def _xy(item, key, x):
    y = _values(_get(item, key))
    if y.size == 0:
        raise ValueError(f"A curve has no {key!r} values to plot.")
    if x == "epoch":
        kept = _get(item, "curve_epochs")     # a thinned curve from results.json
        xs = (np.asarray(kept, dtype=float)[:y.size] if kept is not None
              else np.arange(y.size, dtype=float))
    else:
        xs = _values(_get(item, "seconds"))[:y.size]
        if xs.size < y.size:
            raise ValueError("A curve has fewer 'seconds' entries than loss values; it "
                             "cannot be plotted against seconds.")
        xs = np.maximum(xs - _setup(item), 0.0)
    keep = np.isfinite(y) & np.isfinite(xs)     # e.g. a paper-loss curve with gaps
    return xs[keep], y[keep]


def _want_log(arrays):
    vals = np.concatenate([a[np.isfinite(a)] for a in arrays] or [np.array([])])
    if vals.size == 0 or np.any(vals <= 0):
        return False
    return vals.max() / vals.min() > 20


def _check_x(x):
    if x not in ("epoch", "seconds"):
        raise ValueError(f"The 'x' parameter must be 'epoch' or 'seconds'. Got {x!r} "
                         f"instead.")


def _item_label(item):
    opt, upd = _get(item, "optimizer", ""), _get(item, "update") or "sgd"
    try:
        text = run_label(opt, upd, show_rule=upd != "sgd")
    except ValueError:
        text = opt or "run"
    lr, seed = _get(item, "lr"), _get(item, "seed")
    if lr is not None and np.isfinite(lr):
        text += f", lr {lr:g}"
    return text + (f", seed {seed}" if seed is not None else "")


def _style(opt, upd, several):
    try:
        return curve_style(opt, upd, several_rules=several)
    except ValueError:
        return {"color": None, "linestyle": "-", "marker": None}


def plot_loss_curves(curves, x="epoch", ax=None, *, key="loss", labels=None, colors=None,
                     target=None, logy="auto", title=None, linewidth=1.5, alpha=1.0,
                     legend=True):
    """Plot loss curves against epochs or training seconds.

    Parameters
    ----------
    curves : History, dict or sequence of them
    x : {"epoch", "seconds"}, default "epoch"
        Entry ``i`` is at epoch ``i`` or at ``seconds[i]`` minus the set-up time.
    ax : matplotlib Axes, optional
        Draw into it (its figure is returned); default: a new figure.
    key : {"loss", "val_loss", "paper_loss", "val_accuracy"}, default "loss"
    labels, colors : sequence, optional
        One per curve; default: run labels and the registry's styles.
    target : float, optional
        Draw a dashed horizontal line there.
    logy : bool or "auto", default "auto"
        Log scale on y; "auto" when all values are positive and span a factor > 20.
    title : str, optional
    linewidth, alpha : float
    legend : bool, default True

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_x(x)
    if isinstance(curves, dict) or hasattr(curves, "loss"):
        items = [curves]
    else:
        try:
            items = list(curves)
        except TypeError:
            raise TypeError(f"curves must be a History, a run dict or a sequence of them; "
                            f"got {type(curves).__name__}.") from None
    if not items:
        raise ValueError("curves is empty: nothing to plot.")
    fig, ax = (_new_figure()[0], None) if ax is None else (ax.figure, ax)
    ax = ax or fig.axes[0]
    several = len({_get(i, "update") or "sgd" for i in items}) > 1
    ys = []
    for i, item in enumerate(items):
        xs, y = _xy(item, key, x)
        ys.append(y)
        st = _style(_get(item, "optimizer", ""), _get(item, "update") or "sgd", several)
        ax.plot(xs, y, color=colors[i] if colors is not None else st["color"],
                ls=st["linestyle"], lw=linewidth, alpha=alpha,
                label=labels[i] if labels is not None else _item_label(item))
    _finish(ax, ys, key, x, target, "target", logy, legend)
    if title:
        ax.set_title(title)
    return fig


def _finish(ax, ys, key, x, target, target_name, logy, legend):
    if target is not None:
        ax.axhline(target, color="0.3", ls=":", lw=1, label=f"{target_name} {target:g}")
    extra = [np.array([target])] if target else []
    if logy is True or (logy == "auto" and _want_log(ys + extra)):
        ax.set_yscale("log")
    ax.set_xlabel("epoch" if x == "epoch" else _TIME_LABEL)
    ax.set_ylabel(_KEY_LABELS.get(key, key))
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize="small")


# --------------------------------------------------------------------------- results

def median_band(runs, key="loss", x="epoch", *, points=400):
    """The median curve and interquartile band of ``runs`` on a common x grid.

    Each run's curve is interpolated onto the grid; after its last entry (a run that
    stopped at the target) it keeps its last value. The grid ends where half the runs
    have ended (beyond, the median would be a run that no longer trains).

    Returns
    -------
    (grid, q25, median, q75) : ndarrays
    """
    _check_x(x)
    curves = [c for c in (_xy(r, key, x) for r in runs) if c[0].size]
    if not curves:
        raise ValueError(f"No run has {key!r} values to plot.")
    end = max(float(xs[-1]) for xs, _ in curves)
    if x == "epoch" and end <= 5000:
        grid = np.arange(0, end + 1, dtype=float)
    else:
        grid = np.linspace(0.0, end, points if x == "seconds" else 2000)
    half = float(np.median([xs[-1] for xs, _ in curves]))
    grid = grid[:max(2, int(np.searchsorted(grid, half, side="left")) + 1)]
    Y = np.vstack([np.interp(grid, xs, y) for xs, y in curves])
    q25, med, q75 = np.percentile(Y, [25, 50, 75], axis=0)
    return grid, q25, med, q75


def _chosen_lrs(results, arms, lr):
    s = results["settings"]
    if lr is not None:
        if lr not in s["lr"]:
            raise ValueError(f"The 'lr' parameter must be one of the results' learning "
                             f"rates {s['lr']}. Got {lr!r} instead.")
        return {a: lr for a in arms}
    from .experiments.summary import arm_key
    best = results["summary"].get("best", {}) if len(s["lr"]) > 1 else {}
    return {a: best[arm_key(*a)]["lr"] if arm_key(*a) in best else s["lr"][0]
            for a in arms}


def _crossing_text(grid, med, target, unit, spec):
    below = np.flatnonzero(med < target)
    if below.size == 0:
        return "not reached"
    v = grid[below[0]]
    return f"{format(v, spec)}{unit if not (unit == ' epochs' and v == 1) else ' epoch'}"


def plot_comparison(results, *, lr=None, key="loss", per_seed=False, target="auto",
                    logy="auto", figsize=None):
    """Every arm (schedule x rule): loss against epochs (left) and training time (right).

    Each arm is drawn at one learning rate: ``lr`` if given; else the only one; else (a
    sweep) its own best lr. The line is the median over seeds, the band the interquartile
    range. The numbers in the legends (and, for up to three arms, in the panel titles)
    are read off the drawn median curves: the epoch and the training time at which each
    first falls below the target (for ``key="paper_loss"``: the paper's threshold;
    without one: its final value). The right panel's time excludes the set-up before the
    first epoch, whose median is given in its legend.

    Parameters
    ----------
    results : dict
        What :func:`poswise.experiments.compare` returned (or its JSON read back).
    lr : float, optional
        One of the results' learning rates, for every arm.
    key : {"loss", "val_loss", "paper_loss"}, default "loss"
    per_seed : bool, default False
        Also draw every seed as a thin line.
    target : float, None or "auto"
        "auto": the results' target loss for ``key="loss"``, the first paper threshold
        for ``key="paper_loss"``.
    logy : bool or "auto"
    figsize : (float, float), optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .experiments.summary import arms_of
    s = results["settings"]
    arms = arms_of(results)
    lrs = _chosen_lrs(results, arms, lr)
    if target == "auto":
        target = {"loss": s.get("target_loss"),
                  "paper_loss": (s.get("paper_loss_thresholds") or [None])[0]}.get(key)
    target_name = "paper threshold" if key == "paper_loss" else "target"
    several = len({u for _, u in arms}) > 1
    fig, (ax_e, ax_s) = _new_figure(2, figsize or (11, 4.6))
    heads = {"epoch": [], "seconds": []}
    ys, n_seeds = [], set()
    for opt, upd in arms:
        runs = [r for r in _report_runs(results) if r["optimizer"] == opt
                and (r.get("update") or "sgd") == upd and r["lr"] == lrs[(opt, upd)]
                and r["stopped_reason"] != "interrupted" and r.get(key)]
        if not runs:
            continue
        n_seeds.add(len(runs))
        st = _style(opt, upd, several)
        name = run_label(opt, upd, show_rule=several or upd != "sgd")
        label = f"{name} (lr {lrs[(opt, upd)]:g})"
        setup = f"; set-up {np.median([_setup(r) for r in runs]):.2g} s"
        for ax, x in ((ax_e, "epoch"), (ax_s, "seconds")):
            grid, q25, med, q75 = median_band(runs, key, x)
            ys.append(med)
            if per_seed and len(runs) > 1:
                for r in runs:
                    ax.plot(*_xy(r, key, x), color=st["color"], ls=st["linestyle"],
                            lw=0.6, alpha=0.3)
            if len(runs) > 1:
                ax.fill_between(grid, q25, q75, color=st["color"], alpha=0.18, lw=0)
            unit, spec = (" epochs", ".0f") if x == "epoch" else (" s", ".3g")
            value = (_crossing_text(grid, med, target, unit, spec) if target is not None
                     else f"{med[-1]:.4g}")
            heads[x].append(f"{name}: {value}")
            ax.plot(grid, med, color=st["color"], ls=st["linestyle"], lw=2,
                    label=f"{label}: {value}" + (setup if x == "seconds" else ""),
                    marker=st["marker"], markevery=max(1, grid.size // 8), ms=5)
    if not ys:
        raise ValueError(f"No completed runs with a {key!r} curve to plot.")
    what = _KEY_LABELS.get(key, key)
    if target is None:
        titles = (f"Final {what} (median curve)", f"Final {what} (median curve)")
    else:
        lvl = f"{target_name} {target:g}"
        titles = (f"Epochs until the median curve < {lvl}",
                  f"Training time until the median curve < {lvl}")
    titles = (titles[0], titles[1] + "\n(set-up before the first epoch excluded)")
    for ax, x, tl in ((ax_e, "epoch", titles[0]), (ax_s, "seconds", titles[1])):
        _finish(ax, ys, key, x, target, target_name, logy, legend=True)
        if len(heads[x]) <= 3:
            tl += "\n" + ", ".join(heads[x])
        ax.set_title(tl, fontsize="medium")
        if len(heads[x]) > 4:
            ax.legend(fontsize="x-small")
    n = max(n_seeds)
    seeds = (f"median of {n} seeds, band: interquartile range" if n > 1 else "1 seed")
    fig.suptitle(f"{s.get('dataset_label') or s['dataset']}: network "
                 f"{'-'.join(map(str, s['sizes']))}, {s['loss']}, "
                 f"{s['dtype']}; {seeds}", fontsize="medium")
    return fig


def plot_lr_sweep(results, *, figsize=None):
    """Median epochs and seconds to the target against the learning rate, per arm.

    Dots are the seeds, lines join the medians. A seed that missed the target is drawn
    hollow at its budget, and a median that missed it is left out. Without a target
    loss, the final training loss and validation accuracy are drawn instead.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.ticker import NullLocator
    from .experiments.summary import arms_of
    s = results["settings"]
    has_target = s.get("target_loss") is not None
    arms = arms_of(results)
    several = len({u for _, u in arms}) > 1
    fig, (ax1, ax2) = _new_figure(2, figsize or (11, 4.6))
    if has_target:
        panels = ((ax1, "epochs_to_target", "epochs", "epochs to target"),
                  (ax2, "seconds_to_target", "final_seconds", "wall seconds to target"))
    else:
        panels = ((ax1, "final_loss", "final_loss", "final training loss"),
                  (ax2, "final_val_accuracy", "final_val_accuracy",
                   "final validation accuracy"))
    runs, entries = _sweep_data(results)
    rng = np.random.default_rng(0)
    shifts = np.linspace(0.97, 1.03, len(arms)) if len(arms) > 1 else [1.0]
    for ax, key, miss_key, ylabel in panels:
        any_missed = False
        for (opt, upd), shift in zip(arms, shifts):
            st = _style(opt, upd, several)
            mine = [e for e in entries if e["optimizer"] == opt
                    and e.get("update", "sgd") == upd and e[key] is not None]
            ax.plot([e["lr"] for e in mine], [e[key] for e in mine], color=st["color"],
                    ls=st["linestyle"], marker=st["marker"] or "o", lw=2, ms=6,
                    label=f"{run_label(opt, upd, show_rule=several or upd != 'sgd')} "
                          f"median")
            for r in (r for r in runs if r["optimizer"] == opt
                      and (r.get("update") or "sgd") == upd):
                xr = r["lr"] * shift * (1 + 0.01 * rng.standard_normal())
                if r.get(key) is not None:
                    ax.plot(xr, r[key], ".", color=st["color"], alpha=0.5)
                elif r.get(miss_key) is not None:
                    any_missed = True
                    ax.plot(xr, r[miss_key], "o", mfc="none", color=st["color"], alpha=0.7)
        if any_missed:
            ax.plot([], [], "o", mfc="none", color="0.4",
                    label="seed that missed the target (at its budget)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(s["lr"], [f"{v:g}" for v in s["lr"]])
        if key != "final_val_accuracy":
            ax.set_yscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small" if len(arms) <= 4 else "x-small")
    title = (f"{s.get('dataset_label') or s['dataset']}: network "
             f"{'-'.join(map(str, s['sizes']))}, {s['loss']}")
    if has_target:
        title += f", target {s['target_loss']:g}"
    n = len(_sweep_seeds(results))
    fig.suptitle(title + f", {n} seed{'s' if n != 1 else ''} per point", fontsize="medium")
    return fig


def _report_runs(results):
    return [r for r in results["runs"] if r.get("role") != "select"]


def _sweep_seeds(results):
    s = results["settings"]
    return s.get("select_seeds") or s["seeds"] if s.get("report_lrs") == "best" else s["seeds"]


def _sweep_data(results):
    """(runs, summary entries) over the whole lr grid: the selection seeds' when the
    report seeds ran only at the chosen rates, else the report seeds'."""
    s, summ = results["settings"], results["summary"]
    runs = [r for r in results["runs"] if r["stopped_reason"] != "interrupted"]
    if s.get("report_lrs") == "best" and summ.get("selection"):
        return [r for r in runs if r.get("role") == "select"], summ["selection"]
    return [r for r in runs if r.get("role") != "select"], summ["by_lr"]


def plot_reach(results, *, figsize=None):
    """The lr curve: per arm, the share of seeds that reach the target (left) and that
    diverge or stall (right: stopped by ``patience``) against the learning rate, with the
    learning rate each arm chose as best marked. Seeds: the selection seeds when there
    are any (the rates were chosen on them), else the report seeds.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.ticker import NullLocator
    from .experiments.summary import arm_key, arms_of
    s, summ = results["settings"], results["summary"]
    if s.get("target_loss") is None:
        raise ValueError("plot_reach needs results with a target loss.")
    entries = summ.get("selection") or summ["by_lr"]
    n = len(s.get("select_seeds") or s["seeds"])
    arms = arms_of(results)
    several = len({u for _, u in arms}) > 1
    fig, (ax1, ax2) = _new_figure(2, figsize or (11, 4.4))
    for opt, upd in arms:
        st = _style(opt, upd, several)
        mine = sorted((e for e in entries if e["optimizer"] == opt
                       and e.get("update", "sgd") == upd), key=lambda e: e["lr"])
        if not mine:
            continue
        lab = run_label(opt, upd, show_rule=several or upd != "sgd")
        x = [e["lr"] for e in mine]
        for ax, ys in ((ax1, [e["n_reached"] / e["n_runs"] for e in mine]),
                       (ax2, [e.get("n_collapsed", e["n_diverged"]) / e["n_runs"]
                              for e in mine])):
            ax.plot(x, ys, color=st["color"], ls=st["linestyle"], marker=st["marker"] or "o",
                    lw=2, label=lab)
        chosen = (summ.get("chosen") or {}).get(arm_key(opt, upd))
        if chosen:
            e = next((e for e in mine if e["lr"] == chosen["lr"]), None)
            if e is not None:
                ax1.plot([e["lr"]], [e["n_reached"] / e["n_runs"]], "*", ms=16,
                         color=st["color"], mec="k")
    rule = (s.get("min_reach") or 0.9)
    ax1.axhline(rule, color="0.5", ls=":", lw=1, label=f"rule: >= {rule:.0%} reach")
    ax1.plot([], [], "*", color="0.5", mec="k", ms=12, label="chosen as best")
    for ax, yl in ((ax1, "share of seeds reaching the target"),
                   (ax2, "share of seeds collapsed (diverged or stalled)")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        lrs = sorted({e["lr"] for e in entries})
        ax.set_xticks(lrs, [f"{v:.3g}" for v in lrs], rotation=45, fontsize="small")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("learning rate")
        ax.set_ylabel(yl, fontsize="small")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(f"{s.get('dataset_label') or s['dataset']}: network "
                 f"{'-'.join(map(str, s['sizes']))}, {s['loss']}, target "
                 f"{s['target_loss']:g}; {n} seed{'s' if n != 1 else ''} per point",
                 fontsize="medium")
    return fig


def save_figure(fig, path, *, dpi=100, format=None):
    """Save ``fig`` to ``path`` (format from ``format`` or the suffix; one of
    :data:`FORMATS`) atomically (:func:`poswise._atomic.atomic_write`), so that an
    interrupted save leaves no half-written figure. Returns ``path``."""
    fmt = (format or os.path.splitext(str(path))[1].lstrip(".") or "png").lower()
    if fmt not in FORMATS:
        raise ValueError(f"The figure format must be one of {', '.join(FORMATS)}. Got "
                         f"{fmt!r} instead.")
    from ._atomic import atomic_write
    atomic_write(path, lambda fh: fig.savefig(fh, dpi=dpi, format=fmt))
    return path
