"""Running an experiment: every schedule x update rule x learning rate x seed.

:func:`compare` trains each *arm* (a schedule such as GD or PWO, with an update rule such
as SGD or Adam) from **identical initial weights** per seed: the network is built once per
seed (``MLP(..., rng=seed)``) and each run trains its own ``.copy()`` of it. Runs are
interleaved (for each seed and learning rate, every arm in turn) so that slow drifts of
the machine affect all arms alike.

Timing is wall time (``time.perf_counter``) as recorded by the trainers: set-up and the
initial forward pass included (``setup_seconds`` says how much of it was set-up),
validation excluded; the time spent computing the paper's loss (a measurement) is
subtracted as well.

(Over 400 lines: compare's checks, its two-phase run loop and the record of one run
belong together.)
"""
import hashlib
import math
import os
import platform
import time

import numpy as np

from .._layout import check_widths
from ..registry import (CLASSIFICATION_LOSSES, DEFAULT_SCHEDULES, SCHEDULES, dataset_label,
                        make_trainer, run_label)
from . import paper as _paper
from .settings import (CompareError, as_list, check, is_int, is_real, resolve_rules,
                       seed_list_of, unpack_dataset)
from .summary import summarize
from ..session import STALL_RULES

__all__ = ["compare", "CompareError", "crossing", "WARMUP_EPOCHS", "PAPER_LOSS_STRIDE",
           "DEFAULT_PATIENCE", "DEFAULT_STALL"]

#: Epochs of the untimed warm-up run of each arm.
WARMUP_EPOCHS = 5
#: After the lowest paper threshold is crossed, the paper's loss is computed every this
#: many epochs (entries in between are None).
PAPER_LOSS_STRIDE = 10
#: compare's default ``patience``: with the default ``stall="flat"`` a run whose loss has
#: not moved (relative ``tol`` 1e-4 of ``fit``) for this many epochs stops as collapsed.
#: No run that reaches the target sat this long on a flat loss in the cat grids of
#: scripts/reproduce.sh (the 20-seed SGD step gave the same epochs to target with and
#: without the rule), while a collapsed run would otherwise train its whole budget.
DEFAULT_PATIENCE = 200
#: compare's default ``stall`` rule (one of :data:`poswise.session.STALL_RULES`).
DEFAULT_STALL = "flat"


def _digest(net):
    """A short fingerprint of a network's parameters (to show runs started alike)."""
    h = hashlib.sha256()
    for a in list(net.weights) + list(net.biases):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def crossing(curve, seconds, threshold):
    """First entry of ``curve`` below ``threshold``: ``(epoch, seconds[epoch])``, or
    ``(None, None)`` if the curve never falls below it."""
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


def _machine():
    try:
        from threadpoolctl import threadpool_info
        pools = [{k: p.get(k) for k in ("internal_api", "num_threads", "version",
                                        "threading_layer")}
                 for p in threadpool_info()]
    except Exception:  # threadpoolctl is optional at run time
        pools = None
    from .. import __version__
    return dict(poswise_version=__version__, numpy_version=np.__version__,
                python=platform.python_version(), platform=platform.platform(),
                cpu_count=os.cpu_count(), threadpools=pools,
                date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


# --------------------------------------------------------------------------- compare

def compare(dataset, *, hidden=(20, 7, 5), loss=None, lr=0.01, target_loss=None,
            max_epochs=2000, seeds=3, dtype=np.float64, init="xavier_normal",
            batch_size=None, activation="relu", threads=None, progress=False,
            thresholds=(), paper_loss_thresholds=None, backend="cython",
            first_layer="auto", log=None, warmup=True, optimizers=DEFAULT_SCHEDULES,
            update="sgd", update_params=None, select_seeds=None, report_lrs="all",
            min_reach=None, patience=DEFAULT_PATIENCE, stall=DEFAULT_STALL,
            epoch_budgets=(),
            flop_budgets=()):
    """Train every schedule x update rule from identical initial weights; collect results.

    Parameters
    ----------
    dataset : Dataset, tuple or str
        A :class:`poswise.datasets.Dataset`, a tuple ``(X_train, y_train, X_test,
        y_test)`` with integer labels, or a dataset name loaded from the default data
        home. The test split is the validation data of every run.
    hidden : sequence of int, default (20, 7, 5)
        Hidden layer widths (the paper's network).
    loss : {"bce", "cross_entropy", "am_softmax"}, optional
        Default: ``"bce"`` (one output) for two classes, else ``"cross_entropy"``.
    lr : float or sequence of float, default 0.01
        Learning rate; a sequence runs a sweep (every lr for every arm).
    target_loss : float, optional
        Stop a run when its training loss falls below it.
    max_epochs : int, default 2000
    seeds : int or sequence of int, default 3
        A number of seeds (``0 .. seeds-1``) or the seeds themselves.
    dtype, init, batch_size, activation, threads, backend, first_layer
        Passed to the network and the trainers.
    progress : bool or str, default False
        Show each run's progress on stderr (:class:`poswise.progress.Progress`): True or
        "auto" (a live line on a terminal, heartbeat lines elsewhere), "bar",
        "heartbeat", or False.
    thresholds : sequence of float, default ()
        Extra training-loss levels: when each run first fell below each.
    paper_loss_thresholds : sequence of float, optional
        If given (even empty), also record the paper's loss
        (:func:`poswise.experiments.paper_loss`, excluded from the timings) after every
        epoch until the lowest level is crossed, then every ``PAPER_LOSS_STRIDE``.
    log : callable, optional
        Called with one line of text after each run.
    warmup : bool, default True
        First train each arm a few epochs on a throwaway copy (untimed).
    optimizers : sequence of str, default ("gd", "pwo")
        Schedules, keys of :data:`poswise.trainers.SCHEDULES`.
    update : str, UpdateRule or a sequence of them, default "sgd"
        Update rules (names of :data:`poswise.updates.UPDATE_RULES`).
    update_params : dict, optional
        Hyper-parameter overrides, each given to the rules that take it.
    select_seeds : int or sequence of int, optional
        Seeds on which each arm's best learning rate is chosen (the rule:
        :func:`poswise.experiments.stats.select_best`); the ``seeds`` are then only
        reported. An int n means the n seeds after the largest report seed. They must
        not overlap ``seeds``.
    report_lrs : {"all", "best"}, default "all"
        With selection seeds, "best" first runs the selection seeds over every lr, then
        the report seeds only at the learning rates some arm chose (every arm at each of
        them: "each at its best lr" and "at equal lr" at once).
    min_reach : float in (0, 1], optional
        The share of seeds that must reach the target for an lr to be a candidate for
        "best" (default :data:`poswise.experiments.stats.MIN_REACH`).
    patience : int or None, default :data:`DEFAULT_PATIENCE`
        Passed to ``fit`` with ``stall``: stop a run that has stalled for this many
        epochs (reported as stalled and counted as collapsed; ``stopped_reason`` is the
        ``stall`` rule's name). None trains every run to the target or ``max_epochs``.
    stall : {"flat", "no_improvement"}, default "flat"
        The patience rule of ``fit``. ``"flat"`` (the default) stops only a run whose
        loss has stopped moving (the last ``patience + 1`` losses within ``fit``'s
        ``tol``, relative): a collapsed run, which would otherwise spend its whole
        budget. A run that is still improving, however slowly, or that recovers from a
        spike is not cut, so epochs to target are those of an unbounded run.
        ``"no_improvement"`` stops a run whose loss has not improved on its best for
        ``patience`` epochs (it can cut a run that is climbing back from a spike).
    epoch_budgets, flop_budgets : sequence of float, default ()
        Report the validation accuracy after these many epochs, and after these many
        GD epochs' worth of multiply-adds (per schedule, :mod:`.stats`).

    Returns
    -------
    dict
        ``settings``, ``runs`` (one dict per run: ``optimizer`` (the schedule),
        ``update``, ``update_params``, ``label``, ``seed``, ``lr``, ``epochs``,
        ``epochs_to_target``, ``seconds_to_target``, ``setup_seconds``, final values,
        curves ``loss``, ``val_loss``, ``val_accuracy``, ``seconds``, ...), ``summary``
        (:func:`poswise.experiments.summarize`) and ``interrupted``.

    Raises
    ------
    CompareError
        For an invalid setting, before any training.
    """
    from ..losses import LOSSES
    from ..network import MLP

    Xtr, ytr, Xte, yte, name, n_classes = unpack_dataset(dataset)
    loss = loss or ("bce" if n_classes == 2 else "cross_entropy")
    check(loss, "loss", lambda v: v in CLASSIFICATION_LOSSES,
           f"one of {', '.join(CLASSIFICATION_LOSSES)}")
    if loss == "bce" and n_classes != 2:
        raise CompareError(f"loss 'bce' needs a dataset with 2 classes; {name!r} has "
                           f"{n_classes}. Use loss='cross_entropy' or 'am_softmax'.")
    hidden = check_widths(hidden, "hidden", "compare", error=CompareError)
    lrs = [float(v) for v in as_list(lr, "lr", is_real, "a float > 0 or a list of them")]
    seed_list = seed_list_of(seeds)
    schedules = as_list(optimizers, "optimizers", lambda v: v in SCHEDULES,
                         f"a list of schedules among {', '.join(SCHEDULES)}")
    rules = resolve_rules(update, update_params)
    target_loss = check(target_loss, "target_loss", is_real, "a float > 0", True)
    max_epochs = int(check(max_epochs, "max_epochs", lambda v: is_int(v, 1), "an int >= 1"))
    batch_size = check(batch_size, "batch_size", lambda v: is_int(v, 1), "an int >= 1",
                        True)
    threads = check(threads, "threads", lambda v: is_int(v, 1), "an int >= 1", True)
    thresholds = [float(check(t, "thresholds", is_real, "a list of floats > 0"))
                  for t in (thresholds or ())]
    record_paper = paper_loss_thresholds is not None
    paper_thresholds = [float(check(t, "paper_loss_thresholds", is_real,
                                     "a list of floats > 0"))
                        for t in (paper_loss_thresholds or ())]
    from .stats import MIN_REACH
    select_list = []
    if select_seeds is not None:
        select_list = seed_list_of(select_seeds, "select_seeds", first=max(seed_list) + 1)
        both = sorted(set(select_list) & set(seed_list))
        if both:
            raise CompareError(f"The 'select_seeds' parameter of compare must not overlap "
                               f"'seeds'; both hold {both}.")
    check(report_lrs, "report_lrs", lambda v: v in ("all", "best"), "'all' or 'best'")
    if report_lrs == "best" and not select_list:
        raise CompareError("report_lrs='best' needs select_seeds (the seeds the best "
                           "learning rates are chosen on).")
    min_reach = float(check(MIN_REACH if min_reach is None else min_reach, "min_reach",
                            lambda v: is_real(v) and v <= 1, "a float in (0, 1]"))
    patience = check(patience, "patience", lambda v: is_int(v, 1), "an int >= 1", True)
    check(stall, "stall", lambda v: v in STALL_RULES, f"one of {', '.join(STALL_RULES)}")
    epoch_budgets = [int(check(b, "epoch_budgets", lambda v: is_int(v, 0),
                               "a list of ints >= 0")) for b in (epoch_budgets or ())]
    flop_budgets = [float(check(b, "flop_budgets", is_real, "a list of floats > 0"))
                    for b in (flop_budgets or ())]
    try:
        dt = np.dtype(dtype).type
    except TypeError:
        dt = None
    check(dt, "dtype", lambda v: v in (np.float32, np.float64), "float32 or float64")
    check(log, "log", lambda v: callable(v), "callable", True)

    sizes = (Xtr.shape[1], *hidden, 1 if loss == "bce" else n_classes)
    head = LOSSES[loss].output
    common = dict(loss=loss, batch_size=batch_size, backend=backend, threads=threads,
                  first_layer=first_layer)
    arms = [(s, u, r) for u, r in rules for s in schedules]

    def trainers(lr_, seed):
        return [make_trainer(s, lr_, update=r, rng=seed, **common) for s, u, r in arms]
    # Build (and thereby validate) the network and trainers before any training, so that
    # a bad setting fails fast with the library's message. The warm-up uses these.
    try:
        warm_net = MLP(sizes, activation=activation, init=init, dtype=dt, rng=0,
                       output=head)
        warm_trainers = trainers(lrs[0], 0)
    except ValueError as exc:
        raise CompareError(str(exc)) from None
    Xtr = np.ascontiguousarray(Xtr, dtype=dt)
    Xte = np.ascontiguousarray(Xte, dtype=dt)
    val = (Xte, yte) if Xte.shape[0] else None

    settings = dict(
        dataset=name, dataset_label=dataset_label(name), n_train=int(Xtr.shape[0]),
        n_test=int(Xte.shape[0]),
        n_features=int(Xtr.shape[1]), n_classes=int(n_classes), sizes=list(sizes),
        hidden=list(hidden), loss=loss, lr=lrs, target_loss=target_loss,
        max_epochs=max_epochs, seeds=seed_list, dtype=np.dtype(dt).name, init=init,
        batch_size=batch_size, activation=activation, threads=threads, backend=backend,
        first_layer=first_layer, thresholds=thresholds, select_seeds=select_list,
        report_lrs=report_lrs, min_reach=min_reach, patience=patience,
        stall=stall if patience is not None else None, epoch_budgets=epoch_budgets,
        flop_budgets=flop_budgets,
        paper_loss_thresholds=paper_thresholds if record_paper else None,
        warmup=bool(warmup), optimizers=list(schedules),
        updates=[u for u, _ in rules], update_params={u: r.hyper() for u, r in rules},
        timing="wall time of each fit (perf_counter): set-up included (setup_seconds "
               "says how much); validation and the paper's loss excluded",
        **_machine())
    results = {"settings": settings, "runs": [], "summary": {}, "interrupted": False}
    from .stats import schedule_work
    settings["work"] = {o: schedule_work(list(sizes), o) for o in schedules}
    # With report_lrs="best" the report seeds' share is known after the selection.
    n_total = (len(select_list) + (0 if report_lrs == "best" else len(seed_list))) * len(
        lrs) * len(arms)
    several_rules = len(rules) > 1
    opts = dict(Xtr=Xtr, ytr=ytr, val=val, target_loss=target_loss, max_epochs=max_epochs,
                progress=progress, thresholds=thresholds, record_paper=record_paper,
                paper_thresholds=paper_thresholds, patience=patience, stall=stall)

    def run_seeds(seeds_, lrs_, role, n_total):
        for seed in seeds_:
            net0 = MLP(sizes, activation=activation, init=init, dtype=dt, rng=seed,
                       output=head)
            for lr_ in lrs_:
                for (s, u, r), tr in zip(arms, trainers(lr_, seed)):
                    label = run_label(s, u, show_rule=several_rules or u != "sgd")
                    i = len(results["runs"]) + 1
                    run = _train_one(tr, net0, label=label, tag=f"[{i}/{n_total}]",
                                     **opts)
                    run.update(optimizer=s, update=u, update_params=r.hyper(),
                               label=label, seed=int(seed), lr=lr_, role=role)
                    results["runs"].append(run)
                    if log is not None:
                        log(_run_line(run, i, n_total))
                    if run["stopped_reason"] == "interrupted":
                        raise KeyboardInterrupt
    try:
        if warmup:
            # Untimed, discarded runs: the first fit of a process pays for page faults,
            # BLAS thread start-up and lazy imports, which would bias the first arm.
            for tr in warm_trainers:
                tr.fit(warm_net.copy(), Xtr, ytr, epochs=min(WARMUP_EPOCHS, max_epochs),
                       validation_data=val)
        if report_lrs == "best":
            run_seeds(select_list, lrs, "select", n_total)
            chosen = sorted({c["lr"] for c in summarize(results)["chosen"].values()})
            settings["report_lr"] = chosen
            n_total = len(results["runs"]) + len(seed_list) * len(chosen) * len(arms)
            run_seeds(seed_list, chosen, "report", n_total)
        else:
            run_seeds(select_list, lrs, "select", n_total)
            run_seeds(seed_list, lrs, "report", n_total)
    except KeyboardInterrupt:
        results["interrupted"] = True
    results["summary"] = summarize(results)
    return results


def _train_one(trainer, net0, *, label, tag, Xtr, ytr, val, target_loss, max_epochs,
               progress, thresholds, record_paper, paper_thresholds, patience=None,
               stall=DEFAULT_STALL):
    """Train a copy of ``net0`` with ``trainer``; return the run's record."""
    from ..progress import Progress
    net = net0.copy()
    digest = _digest(net)
    paper_curve = []
    spent = []      # seconds spent in the paper-loss callback, after each recorded entry
    bar = None
    if progress:
        bar = Progress(max_epochs, label=f"{tag} {label}, lr {trainer.lr:g}",
                       target=target_loss, mode="auto" if progress is True else progress)
    if record_paper:
        Y = _paper.targets(ytr, net.sizes[-1])
        lowest = min(paper_thresholds) if paper_thresholds else -math.inf
        crossed = [] if paper_thresholds else ["no thresholds: strided from the start"]

    def measure(epoch, history):
        # Every epoch until the lowest threshold is crossed (so crossings are exact), then
        # every PAPER_LOSS_STRIDE-th: it costs a forward pass over the data.
        t = time.perf_counter()
        if not crossed or epoch % PAPER_LOSS_STRIDE == 0:
            v = _paper.fast(net, Xtr, Y)
            paper_curve.append(v)
            if v < lowest:
                crossed.append(epoch)
        else:
            paper_curve.append(None)
        spent.append(time.perf_counter() - t)
    t0 = time.perf_counter()
    try:
        # patience is passed only when set, so fit's signature without it still works.
        extra = {} if patience is None else {"patience": patience, "stall": stall}
        hist = trainer.fit(net, Xtr, ytr, epochs=max_epochs, target_loss=target_loss,
                           validation_data=val, callbacks=[measure] if record_paper else [],
                           progress=bar if bar is not None else False, **extra)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    train_acc = float(np.mean(net.predict(Xtr) == ytr))
    h = hist.to_dict()
    # The trainers' clock runs through the callbacks; entry i loses the callback time
    # spent before it.
    seconds, total = [], 0.0
    for i, v in enumerate(h["seconds"]):
        seconds.append(v - total if v is not None else None)
        if i < len(spent):
            total += spent[i]
    setup = hist.setup_seconds
    to_target = (seconds[hist.epochs_to_target] if hist.epochs_to_target is not None
                 else None)
    run = {
        "epochs": int(hist.epochs),
        "epochs_to_target": hist.epochs_to_target,
        "seconds_to_target": _finite(to_target),
        "setup_seconds": _finite(setup),
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
                 (t, *crossing(run["loss"], run["seconds"], t)))) for t in thresholds]
    if record_paper:
        # Entries past the last completed epoch (an interrupted run) are dropped; the last
        # one is filled in from the network as training left it.
        curve = [_finite(v) for v in paper_curve[:len(run["loss"])]]
        curve += [None] * (len(run["loss"]) - len(curve))
        if curve[-1] is None:
            curve[-1] = _finite(_paper.fast(net, Xtr, Y))
        run["paper_loss"] = curve
        run["final_paper_loss"] = curve[-1]
        run["paper_crossings"] = [
            dict(zip(("threshold", "epochs", "seconds"),
                     (t, *crossing(run["paper_loss"], run["seconds"], t))))
            for t in paper_thresholds]
    return run


def _run_line(run, i, n):
    if run["epochs_to_target"] is not None:
        what = (f"target reached at epoch {run['epochs_to_target']} "
                f"({run['seconds_to_target']:.3g} s)")
    else:
        what = f"{run['stopped_reason'].replace('_', ' ')} after {run['epochs']} epochs"
    fl, va = run["final_loss"], run["final_val_accuracy"]
    return (f"[{i}/{n}] seed {run['seed']} lr {run['lr']:g} {run['label']}: {what}; loss "
            f"{'-' if fl is None else format(fl, '.4g')}, val acc "
            f"{'-' if va is None else format(va, '.3f')}")
