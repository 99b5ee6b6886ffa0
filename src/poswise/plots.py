"""Figures of training runs and of GD-versus-PWO comparisons.

Every function returns a :class:`matplotlib.figure.Figure` built directly (no ``pyplot``
state, no window is ever opened), so it works under any backend and in threads; save it
with ``fig.savefig(path)`` or :func:`save_figure`.

The inputs are what poswise produces: :class:`poswise.History` objects, the run dicts of
:func:`poswise.compare.compare` (or ``History.to_dict()``), and compare's results dict,
also after a round trip through JSON.
"""
import math

import numpy as np

__all__ = ["plot_loss_curves", "plot_comparison", "plot_lr_sweep", "save_figure",
           "COLORS"]

#: Line colors of the optimizers (those of the paper's figures: GD blue, PWO red).
COLORS = {"gd": "tab:blue", "pwo": "tab:red"}
_NAMES = {"gd": "GD", "pwo": "PWO"}
_KEY_LABELS = {"loss": "training loss", "val_loss": "validation loss",
               "paper_loss": "the paper's loss (training)",
               "val_accuracy": "validation accuracy"}


def _new_figure(ncols=1, figsize=None):
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize or (5.5 * ncols, 4.2), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _get(item, name, default=None):
    if isinstance(item, dict):
        return item.get(name, default)
    return getattr(item, name, default)


def _values(seq):
    """A list with None for non-finite values -> float array with NaN."""
    return np.array([np.nan if v is None else float(v) for v in (seq or [])], dtype=float)


def _as_items(curves):
    if isinstance(curves, dict) or hasattr(curves, "loss"):
        return [curves]
    try:
        items = list(curves)
    except TypeError:
        raise TypeError(f"curves must be a History, a run dict or a sequence of them; got "
                        f"{type(curves).__name__}.") from None
    if not items:
        raise ValueError("curves is empty: nothing to plot.")
    return items


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


def _label(item):
    opt = _get(item, "optimizer", "")
    parts = [_NAMES.get(opt, opt or "run")]
    lr = _get(item, "lr")
    if lr is not None and not (isinstance(lr, float) and math.isnan(lr)):
        parts.append(f"lr {lr:g}")
    seed = _get(item, "seed")
    if seed is not None:
        parts.append(f"seed {seed}")
    return ", ".join(parts)


def plot_loss_curves(curves, x="epoch", ax=None, *, key="loss", labels=None, colors=None,
                     target=None, logy="auto", title=None, linewidth=1.5, alpha=1.0,
                     legend=True):
    """Plot loss curves against epochs or wall seconds.

    Parameters
    ----------
    curves : History, dict or sequence of them
        :class:`poswise.History` objects, their ``to_dict()``, or run dicts of
        :func:`poswise.compare.compare`.
    x : {"epoch", "seconds"}, default "epoch"
        Entry ``i`` of a curve is at epoch ``i`` or at ``seconds[i]`` (cumulative wall
        time of the training).
    ax : matplotlib Axes, optional
        Draw into it (its figure is returned); default: a new figure.
    key : {"loss", "val_loss", "paper_loss", "val_accuracy"}, default "loss"
        Which curve of each item.
    labels, colors : sequence, optional
        One per curve; default labels "GD, lr 0.01, seed 0", colors by optimizer.
    target : float, optional
        Draw a dashed horizontal line there.
    logy : bool or "auto", default "auto"
        Log scale on y; "auto" uses it when all values are positive and span more than a
        factor 20.
    title : str, optional
    linewidth, alpha : float
    legend : bool, default True

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_x(x)
    items = _as_items(curves)
    if ax is None:
        fig, (ax,) = _new_figure()
    else:
        fig = ax.figure
    ys = []
    for i, item in enumerate(items):
        xs, y = _xy(item, key, x)
        ys.append(y)
        color = colors[i] if colors is not None else COLORS.get(_get(item, "optimizer"))
        label = labels[i] if labels is not None else _label(item)
        ax.plot(xs, y, color=color, lw=linewidth, alpha=alpha, label=label)
    if target is not None:
        ax.axhline(target, color="0.3", ls="--", lw=1, label=f"target {target:g}")
    if logy is True or (logy == "auto" and _want_log(ys + ([np.array([target])]
                                                           if target else []))):
        ax.set_yscale("log")
    ax.set_xlabel("epoch" if x == "epoch" else "wall time (s)")
    ax.set_ylabel(_KEY_LABELS.get(key, key))
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    return fig


# --------------------------------------------------------------------------- results

def _summary_entry(results, opt, lr):
    for e in results["summary"]["by_lr"]:
        if e["optimizer"] == opt and e["lr"] == lr:
            return e
    return None


def _chosen_lrs(results, lr):
    s = results["settings"]
    if lr is not None:
        if lr not in s["lr"]:
            raise ValueError(f"The 'lr' parameter must be one of the results' learning "
                             f"rates {s['lr']}. Got {lr!r} instead.")
        return {opt: lr for opt in _NAMES}
    if len(s["lr"]) == 1:
        return {opt: s["lr"][0] for opt in _NAMES}
    best = results["summary"].get("best", {})
    return {opt: best[opt]["lr"] if opt in best else s["lr"][0] for opt in _NAMES}


def _median_run(runs):
    """The run in the middle when sorted by epochs to target, then final loss."""
    def key(r):
        e = r.get("epochs_to_target")
        fl = r.get("final_loss")
        return (math.inf if e is None else e, math.inf if fl is None else fl)
    return sorted(runs, key=key)[(len(runs) - 1) // 2]


def _fmt(v, spec, unit):
    if v is None:
        return "not reached"
    if unit == " epochs" and v == 1:
        unit = " epoch"
    return format(v, spec) + unit


def plot_comparison(results, *, lr=None, key="loss", per_seed=True, target="auto",
                    logy="auto", figsize=None):
    """GD versus PWO: loss against epochs (left) and against wall seconds (right).

    Each optimizer is drawn at one learning rate: ``lr`` if given; else the only one; else
    (a sweep) each optimizer at its own best lr. Thin lines are the seeds, the thick line
    is the median seed (by epochs to target, then final loss). Panel titles give the
    medians over seeds of the epochs and seconds to the target, as the paper's figures
    give its times (for ``key="paper_loss"``: to the paper's threshold; without a target:
    the final values and the total time).

    Parameters
    ----------
    results : dict
        What :func:`poswise.compare.compare` returned (or its JSON read back).
    lr : float, optional
        One of the results' learning rates, for both optimizers.
    key : {"loss", "val_loss", "paper_loss"}, default "loss"
        The curve to draw (``paper_loss`` needs results made with
        ``paper_loss_thresholds``).
    per_seed : bool, default True
        Also draw every seed as a thin line.
    target : float, None or "auto"
        The dashed target line; "auto" is the results' target loss for ``key="loss"``
        and the first paper threshold for ``key="paper_loss"``.
    logy : bool or "auto"
    figsize : (float, float), optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    s = results["settings"]
    lrs = _chosen_lrs(results, lr)
    if target == "auto":
        if key == "loss":
            target = s.get("target_loss")
        elif key == "paper_loss" and s.get("paper_loss_thresholds"):
            target = s["paper_loss_thresholds"][0]
        else:
            target = None
    if key == "loss" and target is not None and target == s.get("target_loss"):
        mode = "target"
    elif key == "paper_loss" and target is not None and target in (
            s.get("paper_loss_thresholds") or ()):
        mode = "paper"
    else:
        mode = "final"
    fig, (ax_e, ax_s) = _new_figure(2, figsize or (11, 4.6))
    heads_e, heads_s, ys = [], [], []
    for opt in ("gd", "pwo"):
        runs = [r for r in results["runs"] if r["optimizer"] == opt and r["lr"] == lrs[opt]
                and r["stopped_reason"] != "interrupted" and r.get(key)]
        if not runs:
            continue
        med_run = _median_run(runs)
        label = f"{_NAMES[opt]} (lr {lrs[opt]:g}), median seed {med_run['seed']}"
        for ax, x in ((ax_e, "epoch"), (ax_s, "seconds")):
            if per_seed and len(runs) > 1:
                for r in runs:
                    xs, y = _xy(r, key, x)
                    ax.plot(xs, y, color=COLORS[opt], lw=0.8, alpha=0.35)
            xs, y = _xy(med_run, key, x)
            ys.append(y)
            ax.plot(xs, y, color=COLORS[opt], lw=2, label=label)
        e = _summary_entry(results, opt, lrs[opt])
        if e is None:
            continue
        name = _NAMES[opt]
        if mode == "target":
            heads_e.append(f"{name}: {_fmt(e['epochs_to_target'], '.0f', ' epochs')}")
            heads_s.append(f"{name}: {_fmt(e['seconds_to_target'], '.3g', ' s')}")
        elif mode == "paper":
            c = next((c for c in e.get("paper_crossings", ())
                      if c["threshold"] == target), None)
            heads_e.append(f"{name}: {_fmt(c and c['epochs'], '.0f', ' epochs')}")
            heads_s.append(f"{name}: {_fmt(c and c['seconds'], '.3g', ' s')}")
        else:
            final = e.get("final_" + key)
            heads_e.append(f"{name}: {_fmt(final, '.4g', '')}")
            heads_s.append(f"{name}: {_fmt(e['final_seconds'], '.3g', ' s')}")
    if not ys:
        raise ValueError(f"No completed runs with a {key!r} curve to plot.")
    log = logy is True or (logy == "auto" and _want_log(
        ys + ([np.array([target])] if target else [])))
    n_seeds = len(s["seeds"])
    med = f"(median of {n_seeds} seeds)" if n_seeds > 1 else "(1 seed)"
    if mode == "target":
        titles = (f"Epochs to target {med}", f"Wall time to target {med}")
    elif mode == "paper":
        titles = (f"Epochs until the paper's loss < {target:g} {med}",
                  f"Wall time until the paper's loss < {target:g} {med}")
    else:
        titles = (f"Final {_KEY_LABELS.get(key, key)} {med}", f"Wall time in total {med}")
    for ax, heads, xl, tl in ((ax_e, heads_e, "epoch", titles[0]),
                              (ax_s, heads_s, "wall time (s)", titles[1])):
        if target is not None:
            ax.axhline(target, color="0.3", ls="--", lw=1,
                       label=f"{'paper threshold' if mode == 'paper' else 'target'} "
                             f"{target:g}")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel(_KEY_LABELS.get(key, key))
        ax.set_title(f"{tl}\n" + ", ".join(heads), fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"{s['dataset']}: network {'-'.join(map(str, s['sizes']))}, "
                 f"{s['loss']}, {s['dtype']}"
                 + (", thin lines: each seed" if per_seed and n_seeds > 1 else ""),
                 fontsize="medium")
    return fig


def plot_lr_sweep(results, *, figsize=None):
    """Median epochs and seconds to the target against the learning rate.

    Dots are the seeds, lines join the medians. A seed that missed the target is drawn
    hollow at its budget (the epochs and seconds it ran), and a median that missed it is
    left out. Without a target loss, the final training loss and validation accuracy are
    drawn instead.

    Parameters
    ----------
    results : dict
        What :func:`poswise.compare.compare` returned, any number of learning rates.
    figsize : (float, float), optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.ticker import NullLocator
    s = results["settings"]
    has_target = s.get("target_loss") is not None
    fig, (ax1, ax2) = _new_figure(2, figsize or (11, 4.6))
    if has_target:
        panels = ((ax1, "epochs_to_target", "epochs", "epochs to target"),
                  (ax2, "seconds_to_target", "final_seconds", "wall seconds to target"))
    else:
        panels = ((ax1, "final_loss", "final_loss", "final training loss"),
                  (ax2, "final_val_accuracy", "final_val_accuracy",
                   "final validation accuracy"))
    runs = [r for r in results["runs"] if r["stopped_reason"] != "interrupted"]
    rng = np.random.default_rng(0)
    for ax, key, miss_key, ylabel in panels:
        any_missed = False
        for opt, shift in (("gd", 0.97), ("pwo", 1.03)):
            entries = [e for e in results["summary"]["by_lr"] if e["optimizer"] == opt]
            xs = [e["lr"] for e in entries if e[key] is not None]
            ys = [e[key] for e in entries if e[key] is not None]
            ax.plot(xs, ys, "-o", color=COLORS[opt], lw=2, ms=6, label=f"{_NAMES[opt]} median")
            for r in (r for r in runs if r["optimizer"] == opt):
                jitter = shift * (1 + 0.01 * rng.standard_normal())
                if r.get(key) is not None:
                    ax.plot(r["lr"] * jitter, r[key], ".", color=COLORS[opt], alpha=0.5)
                elif r.get(miss_key) is not None:
                    any_missed = True
                    ax.plot(r["lr"] * jitter, r[miss_key], "o", mfc="none",
                            color=COLORS[opt], alpha=0.7)
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
        ax.legend(fontsize="small")
    title = f"{s['dataset']}: network {'-'.join(map(str, s['sizes']))}, {s['loss']}"
    if has_target:
        title += f", target {s['target_loss']:g}"
    n = len(s["seeds"])
    fig.suptitle(title + f", {n} seed{'s' if n != 1 else ''} per point", fontsize="medium")
    return fig


def save_figure(fig, path, *, dpi=100):
    """Save ``fig`` as a PNG (or the format of ``path``'s suffix) and return the path."""
    fig.savefig(path, dpi=dpi)
    return path
