"""The statistics of an experiment: learning-rate grids, the rule for "best", paired
bootstrap confidence intervals, the sign test, and the work (multiply-adds, passes over X)
of an epoch of each schedule.

Every function here is a plain computation on numbers, tested against an independent one
(scipy, a hand count) in ``tests/test_stats.py``.
"""
import math

import numpy as np

__all__ = ["lr_grid", "parse_lr_grid", "MIN_REACH", "qualifies", "select_best",
           "bootstrap_ratio", "sign_test", "epoch_work", "schedule_work",
           "sustained_crossing", "value_at_epoch", "N_BOOT", "CI_LEVEL"]

#: The rule for "best": a learning rate qualifies when at least this share of the seeds
#: reach the target; the best is the qualifying rate with the fewest median epochs.
MIN_REACH = 0.9
#: Bootstrap resamples and the confidence level of every interval.
N_BOOT = 10000
CI_LEVEL = 0.95
_GRID_STEPS = {"sqrt2": math.sqrt(2.0), "2": 2.0}


# --------------------------------------------------------------------------- lr grids

def lr_grid(low, high, factor=math.sqrt(2.0)):
    """Geometric learning-rate grid ``low * factor**k`` for k = 0, 1, ... up to ``high``.

    Values are rounded to 6 significant digits (so that ``0.005`` times sqrt(2) squared is
    ``0.01`` exactly); ``high`` is included when it lies on the grid (relative 1e-9).

    Raises
    ------
    ValueError
        If ``low`` or ``high`` is not a finite number > 0, ``high < low``, or ``factor``
        is not > 1.
    """
    for name, v in (("low", low), ("high", high)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"The {name!r} end of a learning-rate grid must be a number "
                             f"> 0. Got {v!r} instead.")
    if high < low:
        raise ValueError(f"A learning-rate grid needs low <= high. Got low {low!r}, high "
                         f"{high!r}.")
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 1):
        raise ValueError(f"The step 'factor' of a learning-rate grid must be a number > 1. "
                         f"Got {factor!r} instead.")
    n = int(math.floor(math.log(high / low) / math.log(factor) + 1e-9))
    return [float(f"{low * factor ** k:.6g}") for k in range(n + 1)]


def parse_lr_grid(text):
    """``"LOW:HIGH:STEP"`` (STEP ``sqrt2``, ``2`` or a number > 1) -> :func:`lr_grid`."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"expected LOW:HIGH:STEP, e.g. 0.005:0.04:sqrt2; got {text!r}")
    step = parts[2].strip()
    factor = _GRID_STEPS.get(step)
    if factor is None:
        factor = float(step)
    return lr_grid(float(parts[0]), float(parts[1]), factor)


# --------------------------------------------------------------------------- the rule

def qualifies(entry, min_reach=MIN_REACH):
    """Whether a summary entry (``n_reached``, ``n_runs``) reaches the target often
    enough to be a candidate for "best"."""
    return entry["n_runs"] > 0 and entry["n_reached"] >= min_reach * entry["n_runs"] - 1e-12


def select_best(entries, min_reach=MIN_REACH):
    """The best of one arm's entries (one per lr): fewest median epochs to the target
    among the learning rates where at least ``min_reach`` of the seeds reach it; ties go
    to fewer median seconds, then to the smaller lr.

    Returns
    -------
    (entry or None, qualified) : the chosen entry and whether it met the reach rule. When
        no rate qualifies, the entry with the most seeds reaching the target (then fewest
        median epochs) is returned with ``qualified=False``.
    """
    if not entries:
        return None, False

    def key(e):
        return tuple(math.inf if e.get(k) is None else e[k]
                     for k in ("epochs_to_target", "seconds_to_target")) + (e["lr"],)
    good = [e for e in entries if qualifies(e, min_reach)]
    if good:
        return min(good, key=key), True
    return min(entries, key=lambda e: (-e["n_reached"],) + key(e)), False


# --------------------------------------------------------------------------- statistics

def _ratio_of_medians(ma, mb):
    """ma / mb of medians; NaN where mb is a miss (inf): inf / inf has no value, and the
    point ratio x / inf is "undefined" too."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = ma / mb
    return np.where(np.isinf(mb), np.nan, r)


def bootstrap_ratio(a, b, *, n_boot=N_BOOT, level=CI_LEVEL, rng=0):
    """Ratio of medians ``median(a) / median(b)`` of paired samples, with a percentile
    bootstrap confidence interval (seeds resampled with replacement, pairs kept).

    A missed target is ``None`` or ``inf`` (infinitely slow). The point ratio is
    undefined (None) when ``b``'s median is a miss. In a resample, a finite ``a`` median
    over a missed ``b`` median counts as 0 (``a`` infinitely faster) and two missed
    medians have no value: they count as 0 for the lower end of the interval and as
    ``inf`` for the upper end, so the interval covers every value the misses could take
    (it is conservative, and always given when the point ratio is).

    Parameters
    ----------
    a, b : sequence of float or None, same length
    n_boot : int
    level : float in (0, 1)
    rng : int or numpy Generator

    Returns
    -------
    dict
        ``ratio`` (None if undefined), ``low``, ``high`` (None if undefined; ``inf``
        allowed), ``n``, ``n_boot``, ``level``.
    """
    a = np.array([math.inf if v is None else float(v) for v in a])
    b = np.array([math.inf if v is None else float(v) for v in b])
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"bootstrap_ratio needs two samples of the same length; got "
                         f"{a.shape} and {b.shape}.")
    out = {"ratio": None, "low": None, "high": None, "n": int(a.size),
           "n_boot": int(n_boot), "level": float(level)}
    if a.size == 0:
        return out
    point = float(_ratio_of_medians(np.median(a), np.median(b)))
    if math.isnan(point):
        return out
    out["ratio"] = point
    idx = np.random.default_rng(rng).integers(0, a.size, size=(n_boot, a.size))
    ma, mb = np.median(a[idx], axis=-1), np.median(b[idx], axis=-1)
    r = _ratio_of_medians(ma, mb)
    r = np.where(np.isinf(mb) & np.isfinite(ma), 0.0, r)        # x / miss: a faster
    alpha = (1.0 - level) / 2.0
    lo = np.quantile(np.where(np.isnan(r), 0.0, r), alpha, method="inverted_cdf")
    hi = np.quantile(np.where(np.isnan(r), np.inf, r), 1.0 - alpha, method="inverted_cdf")
    out["low"], out["high"] = float(lo), float(hi)
    return out


def sign_test(a, b):
    """Two-sided sign test of paired samples (``None`` = inf); ties are dropped.

    Returns
    -------
    dict
        ``a_less``, ``b_less``, ``ties``, ``p_value`` (``scipy.stats.binomtest``, p = 1/2;
        None without untied pairs).
    """
    from scipy.stats import binomtest
    a = [math.inf if v is None else float(v) for v in a]
    b = [math.inf if v is None else float(v) for v in b]
    al = sum(x < y for x, y in zip(a, b))
    bl = sum(y < x for x, y in zip(a, b))
    n = al + bl
    p = float(binomtest(al, n, 0.5).pvalue) if n else None
    return {"a_less": int(al), "b_less": int(bl), "ties": len(a) - n, "p_value": p}


# --------------------------------------------------------------------------- work

def epoch_work(sizes, spans):
    """Multiply-adds per sample and passes over X of one epoch made of ``spans``.

    Counted from the layer sizes ``n_0 .. n_L`` (``F_l = n_l * n_{l+1}`` multiply-adds
    per sample for layer l's product; biases, activations and the loss are not counted).
    A span from layer ``f`` costs the weight gradients of layers ``f .. L-1`` (``F_l``
    each), the back-propagated errors into layers ``f+1 .. L-1`` (``F_l`` each; none into
    layer f's input) and the forward pass of layers ``f .. L-1`` after its update (the
    next span's, or the next epoch's, fresh activations). In steady state that is an
    epoch: GD is one span from 0; PWO one span from each of ``L-1 .. 0``.

    Passes over X: a span from layer 0 reads X for the gradient of the first layer; its
    forward pass can share that read (row by row, the forward and backward of a sample
    need nothing from other samples) only when the next span also starts at layer 0 (GD);
    otherwise the re-forward from layer 0 is a pass of its own (PWO: two per epoch).

    Returns
    -------
    dict
        ``macs_per_sample`` (int), ``forward_macs_per_sample`` (one forward pass, paid
        once before the first epoch), ``x_passes`` (int).
    """
    F = [int(sizes[i]) * int(sizes[i + 1]) for i in range(len(sizes) - 1)]
    L = len(F)
    macs = 0
    for f in spans:
        macs += sum(F[f:]) + sum(F[f + 1:]) + sum(F[f:])
    zero = [i for i, f in enumerate(spans) if f == 0]
    passes = 0
    for i in zero:
        nxt = spans[(i + 1) % len(spans)]
        passes += 1 if nxt == 0 else 2
    return {"macs_per_sample": int(macs), "forward_macs_per_sample": int(sum(F)),
            "x_passes": int(passes), "layers": L}


def schedule_work(sizes, schedule):
    """:func:`epoch_work` of a schedule (a key of :data:`poswise.SCHEDULES`)."""
    from ..trainers import SCHEDULES
    return epoch_work(sizes, SCHEDULES[schedule](0.01).spans(len(sizes) - 1))


# --------------------------------------------------------------------------- curves

def sustained_crossing(curve, threshold, k):
    """First epoch from which ``curve`` stays below ``threshold`` for ``k`` consecutive
    entries (that epoch included), or None. ``k = 1`` is the plain first crossing."""
    run = 0
    for i, v in enumerate(curve):
        run = run + 1 if (v is not None and v < threshold) else 0
        if run >= k:
            return i - k + 1
    return None


def value_at_epoch(curve, epoch):
    """``curve[epoch]``, or its last value when the run stopped earlier (None if empty)."""
    vals = [v for v in curve[:epoch + 1]]
    while vals and vals[-1] is None:
        vals.pop()
    return vals[-1] if vals else None
