"""Compare full-batch gradient descent with the position-wise optimizer.

:func:`compare` trains GD and PWO on one dataset, for one or several learning rates and
several seeds, from **identical initial weights** per seed: the network is built once per
seed (``MLP(..., rng=seed)``) and each run trains its own ``.copy()`` of it. Runs are
interleaved (for each seed and learning rate: GD, then PWO) so that slow drifts of the
machine affect both optimizers alike.

Timing is wall time (``time.perf_counter``) as recorded by the trainers: set-up and the
initial forward pass included, validation excluded; the time spent computing the paper's
loss (an optional measurement) is subtracted as well.

The results are a plain, JSON-serialisable dict (see :func:`compare`); :func:`format_table`
prints it and :mod:`poswise.plots` draws it.
"""
import hashlib
import math
import os
import platform
import time
from numbers import Integral, Real

import numpy as np

from ._layout import check_widths

__all__ = ["compare", "format_table", "summarize", "crossing", "paper_loss",
           "CompareError", "OPTIMIZERS", "CLASSIFICATION_LOSSES"]

#: Optimizer names, in the order they are run for each seed and learning rate.
OPTIMIZERS = ("gd", "pwo")
#: Losses :func:`compare` accepts (it needs class labels to report accuracy).
CLASSIFICATION_LOSSES = ("bce", "cross_entropy", "am_softmax")
#: Epochs of the untimed warm-up run of each optimizer.
WARMUP_EPOCHS = 5
#: After the lowest paper threshold is crossed, the paper's loss is computed every this
#: many epochs (entries in between are None).
PAPER_LOSS_STRIDE = 10
#: The small constant the reference code adds inside its logarithms.
PAPER_LOSS_EPS = 1e-5

_LONG_NAMES = {"gd": "GD", "pwo": "PWO"}


class CompareError(ValueError):
    """An invalid setting of :func:`compare`, detected before any training starts."""


# --------------------------------------------------------------------------- helpers

def _trainer_class(name):
    from .trainers import GradientDescent, PositionWise
    return GradientDescent if name == "gd" else PositionWise


def _as_list(value, name, kind):
    """A scalar or a non-empty sequence of scalars -> list (validated)."""
    items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if not items:
        raise CompareError(f"The {name!r} parameter of compare must not be empty.")
    out = []
    for v in items:
        if kind == "lr":
            ok = (isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
                  and v > 0)
            if not ok:
                raise CompareError(f"The 'lr' parameter of compare must be a float > 0 or "
                                   f"a list of them. Got {value!r} instead.")
            out.append(float(v))
        else:
            ok = isinstance(v, Integral) and not isinstance(v, bool) and v >= 0
            if not ok:
                raise CompareError(f"The 'seeds' parameter of compare must be an int >= 1 "
                                   f"(a number of seeds) or a list of ints >= 0. Got "
                                   f"{value!r} instead.")
            out.append(int(v))
    if len(set(out)) != len(out):
        raise CompareError(f"The {name!r} parameter of compare must not repeat values. "
                           f"Got {value!r} instead.")
    return out


def _check_positive(value, name, *, kind="float", allow_none=False, low_inclusive=False):
    if value is None and allow_none:
        return None
    if kind == "int":
        ok = isinstance(value, Integral) and not isinstance(value, bool) and value >= 1
        what = "an int >= 1"
    else:
        ok = (isinstance(value, Real) and not isinstance(value, bool)
              and math.isfinite(value) and (value >= 0 if low_inclusive else value > 0))
        what = "a float >= 0" if low_inclusive else "a float > 0"
    if not ok:
        raise CompareError(f"The {name!r} parameter of compare must be {what}"
                           f"{' or None' if allow_none else ''}. Got {value!r} instead.")
    return int(value) if kind == "int" else float(value)


def _unpack_dataset(dataset):
    """(X_train, y_train, X_test, y_test, name, n_classes) from a Dataset-like input."""
    if isinstance(dataset, str):
        from . import datasets
        loaders = {"cat": datasets.load_cat, "mnist": datasets.load_mnist,
                   "cifar10": datasets.load_cifar10}
        if dataset == "synthetic":
            dataset = datasets.make_synthetic(rng=0)
        elif dataset in loaders:
            dataset = loaders[dataset]()
        else:
            raise CompareError(f"The 'dataset' parameter of compare must be a Dataset, a "
                               f"tuple (X_train, y_train, X_test, y_test) or one of "
                               f"'synthetic', 'cat', 'mnist', 'cifar10'. Got {dataset!r} "
                               f"instead.")
    if all(hasattr(dataset, a) for a in ("X_train", "y_train", "X_test", "y_test")):
        parts = (dataset.X_train, dataset.y_train, dataset.X_test, dataset.y_test)
        name = str(getattr(dataset, "name", "data"))
        classes = getattr(dataset, "classes", None)
    elif isinstance(dataset, (tuple, list)) and len(dataset) == 4:
        parts, name, classes = tuple(dataset), "data", None
    else:
        raise CompareError(f"The 'dataset' parameter of compare must be a Dataset, a tuple "
                           f"(X_train, y_train, X_test, y_test) or a dataset name. Got "
                           f"{type(dataset).__name__} instead.")
    Xtr, ytr, Xte, yte = (np.asarray(p) for p in parts)
    for lab, arr in (("y_train", ytr), ("y_test", yte)):
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "biuf" or (
                arr.dtype.kind == "f" and not np.all(arr == np.round(arr))):
            raise CompareError(f"compare needs integer class labels: {lab} must be a "
                               f"non-empty 1-D array of ints; got shape {arr.shape}, dtype "
                               f"{arr.dtype}.")
    if Xtr.ndim != 2 or Xte.ndim != 2 or Xtr.shape[1] != Xte.shape[1]:
        raise CompareError(f"compare needs X_train and X_test of shape (n_samples, "
                           f"n_features) with the same n_features; got {Xtr.shape} and "
                           f"{Xte.shape}.")
    n_classes = len(classes) if classes else int(max(ytr.max(), yte.max())) + 1
    return Xtr, ytr.astype(np.int64), Xte, yte.astype(np.int64), name, max(n_classes, 2)


def _digest(net):
    """A short fingerprint of a network's parameters (to show runs started alike)."""
    h = hashlib.sha256()
    for a in list(net.weights) + list(net.biases):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def paper_loss(net, X, y, *, n_classes=None):
    """The loss the paper's reference code reported.

    Per-class binary cross-entropy of the output head's probabilities, summed over the
    classes and averaged over the samples, with the reference code's ``1e-5`` inside the
    logarithms::

        -(1/N) sum_n sum_k [ y_nk log(p_nk + 1e-5) + (1 - y_nk) log(1 - p_nk + 1e-5) ]

    For a softmax head ``y`` is one-hot; for one sigmoid output it is the plain binary
    cross-entropy. A uniform 10-class prediction gives 3.2506, so the paper's MNIST and
    CIFAR-10 thresholds (3.248, 3.23) sit barely below chance.

    Parameters
    ----------
    net : MLP
        Read through ``net.predict_proba`` (its output head must match the loss it is
        trained with).
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Integer labels.
    n_classes : int, optional
        Number of outputs; default ``net.sizes[-1]``.

    Returns
    -------
    float
    """
    p = np.asarray(net.predict_proba(X), dtype=np.float64)
    K = p.shape[1] if n_classes is None else n_classes
    return _paper_loss_from_proba(p, _targets(y, K))


def _targets(y, K):
    """Labels -> the reference code's targets: a column of 0/1, or one-hot rows."""
    y = np.asarray(y, dtype=np.int64)
    if K == 1:
        return y.astype(np.float64).reshape(-1, 1)
    Y = np.zeros((y.shape[0], K))
    Y[np.arange(y.shape[0]), y] = 1.0
    return Y


def _paper_loss_from_proba(p, Y):
    eps = PAPER_LOSS_EPS
    per = Y * np.log(p + eps) + (1 - Y) * np.log(1 - p + eps)
    return float(-per.sum() / p.shape[0])


def _paper_loss_fast(net, X, Y):
    """:func:`paper_loss` for validated ``X`` and precomputed targets ``Y`` (per epoch).

    Skips ``predict_proba``'s input checks (a full pass over X); same values.
    """
    from ._numpy_backend import forward_output
    head = net._head()
    z = forward_output(net.weights, net.biases, X, net.activation, net.leak,
                       cosine=head == "cosine").astype(np.float64)
    if head == "sigmoid":
        p = 0.5 * (1 + np.tanh(0.5 * z))       # the logistic function, overflow-free
    else:
        if head == "cosine":
            z = z * 30.0                        # predict_proba's default scale s
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        p = z / z.sum(axis=1, keepdims=True)
    return _paper_loss_from_proba(p, Y)


def crossing(curve, seconds, threshold):
    """First entry of ``curve`` below ``threshold``.

    Returns
    -------
    (int or None, float or None)
        The epoch (index into ``curve``) and the matching entry of ``seconds``, or
        ``(None, None)`` if the curve never falls below the threshold.
    """
    for i, v in enumerate(curve):
        if v is not None and v < threshold:
            return i, (float(seconds[i]) if seconds is not None and i < len(seconds)
                       else None)
    return None, None


def _finite(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


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


def _settings_record(**kw):
    try:
        from threadpoolctl import threadpool_info
        pools = [{k: p.get(k) for k in ("internal_api", "num_threads", "version",
                                        "threading_layer")}
                 for p in threadpool_info()]
    except Exception:  # threadpoolctl is optional at run time
        pools = None
    from . import __version__
    kw.update(poswise_version=__version__, numpy_version=np.__version__,
              python=platform.python_version(), platform=platform.platform(),
              cpu_count=os.cpu_count(), threadpools=pools,
              date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return kw


# --------------------------------------------------------------------------- compare

def compare(dataset, *, hidden=(20, 7, 5), loss=None, lr=0.01, target_loss=None,
            max_epochs=2000, seeds=3, dtype=np.float64, init="xavier_normal",
            batch_size=None, activation="relu", threads=None, progress=False,
            thresholds=(), paper_loss_thresholds=None, backend="cython",
            first_layer="auto", log=None, warmup=True):
    """Train GD and PWO from identical initial weights and collect the results.

    Parameters
    ----------
    dataset : Dataset, tuple or str
        A :class:`poswise.datasets.Dataset`, a tuple ``(X_train, y_train, X_test,
        y_test)`` with integer labels, or a name (``"synthetic"``, ``"cat"``,
        ``"mnist"``, ``"cifar10"``) loaded from the default data home. The test split is
        the validation data of every run.
    hidden : sequence of int, default (20, 7, 5)
        Hidden layer widths (the paper's network).
    loss : {"bce", "cross_entropy", "am_softmax"}, optional
        Default: ``"bce"`` (one output) for two classes, else ``"cross_entropy"``.
    lr : float or sequence of float, default 0.01
        Learning rate; a sequence runs a sweep (every lr for both optimizers).
    target_loss : float, optional
        Stop a run when its training loss falls below it (epochs and seconds to target
        are then reported); without it every run trains ``max_epochs`` epochs.
    max_epochs : int, default 2000
        Epoch budget of each run.
    seeds : int or sequence of int, default 3
        A number of seeds (``0 .. seeds-1``) or the seeds themselves. Each seed draws the
        initial network (``MLP(..., rng=seed)``) and, with ``batch_size``, the shuffling.
    dtype : float32 or float64, default float64
    init : str, default "xavier_normal"
        See :class:`poswise.MLP`.
    batch_size : int, optional
        Mini-batch size (default: full batch, as in the paper).
    activation : str, default "relu"
    threads : int, optional
        Limit the BLAS threads during each run.
    progress : bool, default False
        Show the trainers' progress bar on stderr.
    thresholds : sequence of float, default ()
        Extra training-loss levels: the epochs and seconds at which each run first fell
        below each are read from its loss curve (they cost nothing).
    paper_loss_thresholds : sequence of float, optional
        If given (even empty), also record the loss the paper's reference code reported
        (:func:`paper_loss`, on the training data; excluded from the timings), and report
        when each run first fell below each of these levels. It is computed after every
        epoch until the lowest level is crossed, then every ``PAPER_LOSS_STRIDE`` epochs
        and at the end (the curve holds None in between).
    backend : {"cython", "numpy"}, default "cython"
    first_layer : {"auto", "primal", "dual", "direct"}, default "auto"
        How the trainers compute the first layer (see :class:`poswise.GradientDescent`):
        ``"primal"`` costs what the paper's implementation costs per epoch (two BLAS
        products with X), ``"dual"`` trains it through the Gram matrix of X when N << D
        (cat); ``"auto"`` picks the cheapest.
    log : callable, optional
        Called with one line of text after each run (e.g. ``print``).
    warmup : bool, default True
        First train each optimizer for a few epochs on a throwaway copy (untimed,
        discarded), so that one-off start-up costs do not bias the first timed run.

    Returns
    -------
    dict
        ``settings`` (everything above, the dataset's shapes and the machine),
        ``runs`` (one dict per run: ``optimizer``, ``seed``, ``lr``, ``epochs``,
        ``epochs_to_target``, ``seconds_to_target``, ``final_loss``, ``final_val_loss``,
        ``final_val_accuracy``, ``final_train_accuracy``, ``loss``, ``val_loss``,
        ``val_accuracy``, ``seconds``, ``stopped_reason``, ``first_layer``,
        ``init_digest``, ``wall_seconds``, ``crossings`` and, with
        ``paper_loss_thresholds``, ``paper_loss`` and ``paper_crossings``),
        ``summary`` (see :func:`summarize`) and ``interrupted`` (True if Ctrl-C cut the
        comparison short; the runs finished so far are kept).

    Raises
    ------
    CompareError
        For an invalid setting, before any training.
    """
    from .losses import LOSSES
    from .network import MLP

    Xtr, ytr, Xte, yte, name, n_classes = _unpack_dataset(dataset)
    if loss is None:
        loss = "bce" if n_classes == 2 else "cross_entropy"
    if loss not in CLASSIFICATION_LOSSES:
        raise CompareError(f"The 'loss' parameter of compare must be one of "
                           f"{', '.join(map(repr, CLASSIFICATION_LOSSES))}. Got {loss!r} "
                           f"instead.")
    if loss == "bce" and n_classes != 2:
        raise CompareError(f"loss 'bce' needs a dataset with 2 classes; {name!r} has "
                           f"{n_classes}. Use loss='cross_entropy' or 'am_softmax'.")
    hidden = check_widths(hidden, "hidden", "compare", error=CompareError)
    lrs = _as_list(lr, "lr", "lr")
    if isinstance(seeds, Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise CompareError(f"The 'seeds' parameter of compare must be an int >= 1 (a "
                               f"number of seeds) or a list of ints >= 0. Got {seeds!r} "
                               f"instead.")
        seed_list = list(range(int(seeds)))
    else:
        seed_list = _as_list(seeds, "seeds", "seed")
    target_loss = _check_positive(target_loss, "target_loss", allow_none=True)
    max_epochs = _check_positive(max_epochs, "max_epochs", kind="int")
    batch_size = _check_positive(batch_size, "batch_size", kind="int", allow_none=True)
    threads = _check_positive(threads, "threads", kind="int", allow_none=True)
    thresholds = [_check_positive(t, "thresholds") for t in (thresholds or ())]
    record_paper = paper_loss_thresholds is not None
    paper_thresholds = [_check_positive(t, "paper_loss_thresholds")
                        for t in (paper_loss_thresholds or ())]
    try:
        dt = np.dtype(dtype).type
    except TypeError:
        dt = None
    if dt not in (np.float32, np.float64):
        raise CompareError(f"The 'dtype' parameter of compare must be float32 or float64. "
                           f"Got {dtype!r} instead.")
    if log is not None and not callable(log):
        raise CompareError(f"The 'log' parameter of compare must be callable or None. Got "
                           f"{log!r} instead.")

    n_out = 1 if loss == "bce" else n_classes
    sizes = (Xtr.shape[1], *hidden, n_out)
    head = LOSSES[loss].output
    # Build (and thereby validate) the network and the trainers before any training, so
    # that a bad setting fails fast with the library's own message.
    try:
        MLP(sizes, activation=activation, init=init, dtype=dt, rng=0, output=head)
        for opt in OPTIMIZERS:
            _trainer_class(opt)(lrs[0], loss=loss, batch_size=batch_size, backend=backend,
                                threads=threads, first_layer=first_layer)
    except ValueError as exc:
        raise CompareError(str(exc)) from None
    Xtr = np.ascontiguousarray(Xtr, dtype=dt)
    Xte = np.ascontiguousarray(Xte, dtype=dt)

    settings = _settings_record(
        dataset=name, n_train=int(Xtr.shape[0]), n_test=int(Xte.shape[0]),
        n_features=int(Xtr.shape[1]), n_classes=int(n_classes), sizes=list(sizes),
        hidden=list(hidden), loss=loss, lr=lrs, target_loss=target_loss,
        max_epochs=max_epochs, seeds=seed_list, dtype=np.dtype(dt).name, init=init,
        batch_size=batch_size, activation=activation, threads=threads, backend=backend,
        first_layer=first_layer, thresholds=thresholds,
        paper_loss_thresholds=paper_thresholds if record_paper else None,
        warmup=bool(warmup),
        timing="wall time of each fit (perf_counter): set-up included; validation and "
               "the paper's loss excluded")
    results = {"settings": settings, "runs": [], "summary": {}, "interrupted": False}
    n_total = len(seed_list) * len(lrs) * len(OPTIMIZERS)
    try:
        if warmup:
            # Untimed, discarded runs: the first fit of a process pays for page faults,
            # BLAS thread start-up and lazy imports, which would bias the first optimizer.
            warm = MLP(sizes, activation=activation, init=init, dtype=dt, rng=0,
                       output=head)
            for opt in OPTIMIZERS:
                _trainer_class(opt)(lrs[0], loss=loss, batch_size=batch_size,
                                    backend=backend, threads=threads,
                                    first_layer=first_layer).fit(
                    warm.copy(), Xtr, ytr, epochs=min(WARMUP_EPOCHS, max_epochs),
                    validation_data=(Xte, yte))
        for seed in seed_list:
            net0 = MLP(sizes, activation=activation, init=init, dtype=dt, rng=seed,
                       output=head)
            for lr_ in lrs:
                for opt in OPTIMIZERS:
                    run = _train_one(opt, net0, lr_, seed, loss=loss, Xtr=Xtr, ytr=ytr,
                                     Xte=Xte, yte=yte, target_loss=target_loss,
                                     max_epochs=max_epochs, batch_size=batch_size,
                                     threads=threads, backend=backend,
                                     first_layer=first_layer, progress=progress,
                                     thresholds=thresholds, record_paper=record_paper,
                                     paper_thresholds=paper_thresholds)
                    results["runs"].append(run)
                    if log is not None:
                        log(_run_line(run, len(results["runs"]), n_total))
                    if run["stopped_reason"] == "interrupted":
                        raise KeyboardInterrupt
    except KeyboardInterrupt:
        results["interrupted"] = True
    results["summary"] = summarize(results)
    return results


def _train_one(opt, net0, lr, seed, *, loss, Xtr, ytr, Xte, yte, target_loss, max_epochs,
               batch_size, threads, backend, first_layer, progress, thresholds,
               record_paper, paper_thresholds):
    """Train a copy of ``net0`` with one optimizer; return the run's record."""
    net = net0.copy()
    digest = _digest(net)
    trainer = _trainer_class(opt)(lr, loss=loss, batch_size=batch_size, backend=backend,
                                  threads=threads, rng=seed, first_layer=first_layer)
    callbacks = []
    paper_curve = []
    callback_seconds = []      # time spent in our callbacks, after each recorded entry
    if record_paper:
        Y = _targets(ytr, net.sizes[-1])
        lowest = min(paper_thresholds) if paper_thresholds else -math.inf
        crossed = [] if paper_thresholds else ["no thresholds: strided from the start"]

        def record_paper_loss(epoch, history):
            # Every epoch until the lowest threshold is crossed (so crossings are exact),
            # then every PAPER_LOSS_STRIDE-th: it costs a forward pass over the data.
            t = time.perf_counter()
            if not crossed or epoch % PAPER_LOSS_STRIDE == 0:
                v = _paper_loss_fast(net, Xtr, Y)
                paper_curve.append(v)
                if v < lowest:
                    crossed.append(epoch)
            else:
                paper_curve.append(None)
            callback_seconds.append(time.perf_counter() - t)
        callbacks.append(record_paper_loss)
    t0 = time.perf_counter()
    hist = trainer.fit(net, Xtr, ytr, epochs=max_epochs, target_loss=target_loss,
                       validation_data=(Xte, yte), callbacks=callbacks, progress=progress)
    wall = time.perf_counter() - t0
    train_acc = float(np.mean(net.predict(Xtr) == ytr))
    h = hist.to_dict()
    # The trainers' clock runs through the callbacks; ours (the paper's loss) are
    # measurement, not training: entry i loses the callback time spent before it.
    seconds, spent = [], 0.0
    for i, v in enumerate(h["seconds"]):
        seconds.append(v - spent if v is not None else None)
        if i < len(callback_seconds):
            spent += callback_seconds[i]
    to_target = (seconds[hist.epochs_to_target] if hist.epochs_to_target is not None
                 else None)
    run = {
        "optimizer": opt, "seed": int(seed), "lr": float(lr),
        "epochs": int(hist.epochs),
        "epochs_to_target": hist.epochs_to_target,
        "seconds_to_target": _finite(to_target),
        "final_loss": _finite(hist.loss[-1]),
        "final_val_loss": _finite(hist.val_loss[-1]) if hist.val_loss else None,
        "final_val_accuracy": _finite(hist.val_accuracy[-1]) if hist.val_accuracy else None,
        "final_train_accuracy": train_acc,
        "final_seconds": _finite(seconds[-1]),
        "stopped_reason": hist.stopped_reason,
        "first_layer": hist.first_layer,
        "init_digest": digest,
        "wall_seconds": wall,
        "loss": h["loss"], "val_loss": h["val_loss"], "val_accuracy": h["val_accuracy"],
        "seconds": seconds,
    }
    run["crossings"] = [
        dict(zip(("threshold", "epochs", "seconds"),
                 (t, *crossing(run["loss"], run["seconds"], t))))
        for t in thresholds]
    if record_paper:
        # Entries past the last completed epoch (an interrupted run) are dropped; the
        # last one is filled in from the network as training left it.
        curve = [_finite(v) for v in paper_curve[:len(run["loss"])]]
        curve += [None] * (len(run["loss"]) - len(curve))
        if curve[-1] is None:
            curve[-1] = _finite(_paper_loss_fast(net, Xtr, Y))
        run["paper_loss"] = curve
        run["final_paper_loss"] = curve[-1]
        run["paper_crossings"] = [
            dict(zip(("threshold", "epochs", "seconds"),
                     (t, *crossing(run["paper_loss"], run["seconds"], t))))
            for t in paper_thresholds]
    return run


def _fmt_num(v, spec=".4g", none="-"):
    if v is None:
        return none
    return format(v, spec)


def _run_line(run, i, n):
    opt = _LONG_NAMES[run["optimizer"]]
    if run["epochs_to_target"] is not None:
        what = (f"target reached at epoch {run['epochs_to_target']} "
                f"({run['seconds_to_target']:.3g} s)")
    else:
        what = f"{run['stopped_reason'].replace('_', ' ')} after {run['epochs']} epochs"
    return (f"[{i}/{n}] seed {run['seed']} lr {run['lr']:g} {opt:>3}: {what}; loss "
            f"{_fmt_num(run['final_loss'])}, val acc "
            f"{_fmt_num(run['final_val_accuracy'], '.3f')}")


# --------------------------------------------------------------------------- summary

_SUMMARY_KEYS = ("final_loss", "final_val_loss", "final_val_accuracy",
                 "final_train_accuracy", "final_seconds")


def summarize(results):
    """Medians over seeds per optimizer and learning rate, best lrs and ratios.

    Runs stopped by Ctrl-C are left out. A run that did not reach the target counts as
    infinitely slow, so a median "to target" is None when half or more of the seeds
    missed it.

    Returns
    -------
    dict
        ``by_lr``: one entry per (optimizer, lr) with ``n_runs``, ``n_reached``,
        ``n_diverged``, the medians ``epochs_to_target``, ``seconds_to_target``,
        ``final_loss``, ``final_val_loss``, ``final_val_accuracy``,
        ``final_train_accuracy``, ``final_seconds``, and the median ``crossings`` (and
        ``paper_crossings``); ``best``: per optimizer, its entry at its own best lr
        (fewest median epochs to target, ties broken by median seconds, then by the
        median final loss; without a target, the lowest median final loss);
        ``ratios``: GD / PWO ratios of the medians at each lr (``equal_lr``) and at
        each optimizer's best lr (``best_lr``); a ratio above 1 means PWO needed less.
        Each also holds ``paired``: seed by seed (same initial network), on how many
        seeds PWO reached the target in fewer epochs / less time than GD and vice versa
        (a missed target counts as infinitely late; ties count for neither; without a
        target, the lower final loss wins).
    """
    settings = results["settings"]
    runs = [r for r in results["runs"] if r["stopped_reason"] != "interrupted"]
    by_lr = []
    for lr in settings["lr"]:
        for opt in OPTIMIZERS:
            rs = [r for r in runs if r["optimizer"] == opt and r["lr"] == lr]
            if not rs:
                continue
            e = {"optimizer": opt, "lr": lr, "n_runs": len(rs),
                 "n_reached": sum(r["epochs_to_target"] is not None for r in rs),
                 "n_diverged": sum(r["stopped_reason"] == "diverged" for r in rs),
                 "epochs_to_target": _median_to([r["epochs_to_target"] for r in rs]),
                 "seconds_to_target": _median_to([r["seconds_to_target"] for r in rs])}
            if settings.get("target_loss") is None:
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
            by_lr.append(e)

    def rank(e):
        inf = math.inf
        fl = e["final_loss"] if e["final_loss"] is not None else inf
        if settings.get("target_loss") is None:
            return (fl,)
        return (e["epochs_to_target"] if e["epochs_to_target"] is not None else inf,
                e["seconds_to_target"] if e["seconds_to_target"] is not None else inf, fl)

    best = {}
    for opt in OPTIMIZERS:
        cands = [e for e in by_lr if e["optimizer"] == opt]
        if cands:
            best[opt] = min(cands, key=rank)

    def ratio(a, b):
        if a is None or b is None or b == 0:
            return None
        return a / b

    def ratios(g, p):
        return {"epochs": ratio(g["epochs_to_target"], p["epochs_to_target"]),
                "seconds": ratio(g["seconds_to_target"], p["seconds_to_target"]),
                "final_loss": ratio(g["final_loss"], p["final_loss"])}

    def paired(gd_lr, pwo_lr):
        """Seed by seed: which optimizer reached the target (or lower loss) first."""
        inf = math.inf
        wins = {"n_seeds": 0, "pwo_fewer_epochs": 0, "gd_fewer_epochs": 0,
                "pwo_less_time": 0, "gd_less_time": 0}
        if settings.get("target_loss") is None:
            def keys(r):
                fl = r["final_loss"] if r["final_loss"] is not None else inf
                return fl, fl
        else:
            def keys(r):
                return tuple(inf if r[k] is None else r[k]
                             for k in ("epochs_to_target", "seconds_to_target"))
        for seed in settings["seeds"]:
            g = next((r for r in runs if r["optimizer"] == "gd" and r["seed"] == seed
                      and r["lr"] == gd_lr), None)
            p = next((r for r in runs if r["optimizer"] == "pwo" and r["seed"] == seed
                      and r["lr"] == pwo_lr), None)
            if g is None or p is None:
                continue
            (ge, gs), (pe, ps) = keys(g), keys(p)
            wins["n_seeds"] += 1
            wins["pwo_fewer_epochs"] += pe < ge
            wins["gd_fewer_epochs"] += ge < pe
            wins["pwo_less_time"] += ps < gs
            wins["gd_less_time"] += gs < ps
        return wins

    equal = []
    for lr in settings["lr"]:
        g = next((e for e in by_lr if e["optimizer"] == "gd" and e["lr"] == lr), None)
        p = next((e for e in by_lr if e["optimizer"] == "pwo" and e["lr"] == lr), None)
        if g is not None and p is not None:
            equal.append({"lr": lr, **ratios(g, p), "paired": paired(lr, lr)})
    best_ratio = None
    if "gd" in best and "pwo" in best:
        best_ratio = {"gd_lr": best["gd"]["lr"], "pwo_lr": best["pwo"]["lr"],
                      **ratios(best["gd"], best["pwo"]),
                      "paired": paired(best["gd"]["lr"], best["pwo"]["lr"])}
    return {"by_lr": by_lr, "best": best,
            "ratios": {"equal_lr": equal, "best_lr": best_ratio}}


# --------------------------------------------------------------------------- table

def _table(header, rows, align):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).rjust(w) if a == ">" else str(c).ljust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def _entry_row(e, target):
    reached = f"{e['n_reached']}/{e['n_runs']}" if target is not None else "-"
    if e["n_diverged"]:
        reached += f" ({e['n_diverged']} div.)"
    return [f"{e['lr']:g}", _LONG_NAMES[e["optimizer"]], reached,
            _fmt_num(e["epochs_to_target"], ".0f", "not reached" if target else "-"),
            _fmt_num(e["seconds_to_target"], ".3g", "-"),
            _fmt_num(e["final_loss"], ".4g"), _fmt_num(e["final_val_loss"], ".4g"),
            _fmt_num(e["final_train_accuracy"], ".3f"),
            _fmt_num(e["final_val_accuracy"], ".3f"),
            _fmt_num(e["final_seconds"], ".3g")]


def _ratio_text(r, g, p, has_target):
    """One line comparing the GD entry ``g`` with the PWO entry ``p`` (ratios ``r``)."""
    if has_target and (r["epochs"] is None or r["seconds"] is None):
        missed = [f"{_LONG_NAMES[e['optimizer']]} reached it in {e['n_reached']}/"
                  f"{e['n_runs']} runs" for e in (g, p)]
        who = [_LONG_NAMES[e["optimizer"]] for e in (g, p) if e["epochs_to_target"] is None]
        text = (f"no ratio: the median run{'s' if len(who) > 1 else ''} of "
                f"{' and '.join(who)} missed the target ({', '.join(missed)})")
        w = r.get("paired")
        if w and w["n_seeds"]:
            text += (f"; seed by seed, PWO reached it first on {w['pwo_fewer_epochs']}/"
                     f"{w['n_seeds']} (GD on {w['gd_fewer_epochs']})")
        return text
    w = r.get("paired")
    if has_target:
        text = f"epochs GD/PWO = {r['epochs']:.2f}, seconds GD/PWO = {r['seconds']:.2f}"
    elif r["final_loss"] is None:
        return "n/a"
    else:
        text = f"final training loss GD/PWO = {r['final_loss']:.3g}"
    if w and w["n_seeds"]:
        if has_target:
            text += (f"; seed by seed, PWO needed fewer epochs on {w['pwo_fewer_epochs']}"
                     f"/{w['n_seeds']} (GD on {w['gd_fewer_epochs']}), less time on "
                     f"{w['pwo_less_time']}/{w['n_seeds']} (GD on {w['gd_less_time']})")
        else:
            text += (f"; PWO ended lower on {w['pwo_fewer_epochs']}/{w['n_seeds']} seeds "
                     f"(GD on {w['gd_fewer_epochs']})")
    return text


def format_table(results):
    """The results as text: a table of medians over seeds, the best lrs and the ratios.

    Parameters
    ----------
    results : dict
        What :func:`compare` returned (or its JSON, read back).

    Returns
    -------
    str
    """
    s = results["settings"]
    summ = summarize(results)       # recomputed: results.json may predate new fields
    target = s.get("target_loss")
    seeds = s["seeds"]
    lines = [
        f"Dataset {s['dataset']} ({s['n_train']} train / {s['n_test']} validation samples, "
        f"{s['n_features']} features), network {'-'.join(map(str, s['sizes']))} "
        f"{s['activation']}, loss {s['loss']}, {s['dtype']}, init {s['init']}"
        f"{', batch ' + str(s['batch_size']) if s.get('batch_size') else ', full batch'}.",
        f"Target loss {target:g} (training), " if target is not None else
        "No target loss, ",
    ]
    lines[-1] += (f"at most {s['max_epochs']} epochs; medians over {len(seeds)} seed(s) "
                  f"{', '.join(map(str, seeds))}; times are wall seconds.")
    if results.get("interrupted"):
        lines.append("INTERRUPTED: only the runs finished before Ctrl-C are included.")
    header = ["lr", "opt", "reached", "epochs", "seconds", "train loss", "val loss",
              "train acc", "val acc", "train s"]
    align = [">", "<", ">", ">", ">", ">", ">", ">", ">", ">"]
    rows = [_entry_row(e, target) for e in summ["by_lr"]]
    lines += ["", _table(header, rows, align)]
    if not rows:
        lines.append("(no completed runs)")
    lines.append("")
    lines.append("'epochs' and 'seconds' are to the target; losses, accuracies and 'train s' "
                 "(training seconds) are at the end of each run.")
    has_target = target is not None

    def entry(opt, lr):
        return next(e for e in summ["by_lr"] if e["optimizer"] == opt and e["lr"] == lr)
    for r in summ["ratios"]["equal_lr"]:
        lines.append(f"At lr {r['lr']:g}: "
                     f"{_ratio_text(r, entry('gd', r['lr']), entry('pwo', r['lr']), has_target)}.")
    best = summ["best"]
    if len(s["lr"]) > 1 and "gd" in best and "pwo" in best:
        b = summ["ratios"]["best_lr"]
        lines.append(f"Each at its best lr (GD {b['gd_lr']:g}, PWO {b['pwo_lr']:g}): "
                     f"{_ratio_text(b, best['gd'], best['pwo'], has_target)}.")
    for key, title in (("crossings", "training loss"),
                       ("paper_crossings", "the paper's loss (reference code)")):
        entries = [e for e in summ["by_lr"] if e.get(key)]
        if not entries:
            continue
        hdr = ["lr", "opt"]
        for c in entries[0][key]:
            hdr += [f"< {c['threshold']:g} ep", "s"]
        rws = []
        for e in entries:
            row = [f"{e['lr']:g}", _LONG_NAMES[e["optimizer"]]]
            for c in e[key]:
                row += [_fmt_num(c["epochs"], ".0f", "no"), _fmt_num(c["seconds"], ".3g")]
            rws.append(row)
        lines += ["", f"Epochs and seconds until {title} first fell below each level "
                      f"(medians):", _table(hdr, rws, [">", "<"] + [">"] * (len(hdr) - 2))]
    return "\n".join(lines)
