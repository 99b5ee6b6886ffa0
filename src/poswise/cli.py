"""The ``poswise`` command: compare GD with PWO, train one model, reproduce the paper.

::

    poswise compare   [--dataset synthetic|cat|mnist|cifar10] [options]
    poswise train     [--dataset ...] [--optimizer gd|pwo] [--save model.npz] [options]
    poswise reproduce {cat,mnist,cifar10} [options]

Every option left out takes a default chosen per dataset (see ``PRESETS`` and
``REPRODUCE``), so that ``poswise compare`` alone is a complete run of a few seconds.

Exit codes: 0 success; 1 a data or model file is missing or unusable (the loader's message
is printed, no traceback); 2 bad arguments; 130 stopped by Ctrl-C (what was finished is
saved first). Set ``POSWISE_DEBUG=1`` to get tracebacks instead of one-line errors.
"""
import argparse
import inspect
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser", "PRESETS", "REPRODUCE"]

DATASETS = ("synthetic", "cat", "mnist", "cifar10")
REAL_DATASETS = ("cat", "mnist", "cifar10")
LOSSES = ("bce", "cross_entropy", "am_softmax")
DTYPES = ("float64", "float32")
DEFAULT_OUT = "poswise-out"
EXIT_DATA, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

#: The synthetic dataset of the CLI: ``make_synthetic(**SYNTHETIC)``.
SYNTHETIC = {"n_samples": 500, "n_features": 20, "rng": 0}

#: Defaults of ``compare`` and ``train`` per dataset (any option given overrides them).
#: MNIST/CIFAR-10: a full-batch epoch costs ~0.1 s / ~0.3 s here, hence small budgets.
PRESETS = {
    "synthetic": {"hidden": (20, 7, 5), "loss": "bce", "lr": [0.1], "target_loss": 0.1,
                  "max_epochs": 2000, "seeds": 3},
    "cat": {"hidden": (20, 7, 5), "loss": "bce", "lr": [0.01], "target_loss": 0.1,
            "max_epochs": 5000, "seeds": 3},
    "mnist": {"hidden": (20, 7, 5), "loss": "cross_entropy", "lr": [0.1],
              "target_loss": 1.0, "max_epochs": 150, "seeds": 1},
    "cifar10": {"hidden": (20, 7, 5), "loss": "cross_entropy", "lr": [0.05],
                "target_loss": 2.0, "max_epochs": 100, "seeds": 1},
}

#: ``poswise reproduce``: the paper's settings (hidden 20-7-5, ReLU, Xavier normal, the
#: same lr for both optimizers, stop below the threshold) with several seeds. For MNIST
#: and CIFAR-10 the paper's thresholds (3.248, 3.23) are values of the reference code's
#: loss, barely below chance: that loss is recorded alongside
#: (``paper_loss_thresholds``), while training uses cross-entropy with a target that
#: means something (CE 1.0 is about 65-70 % accuracy on MNIST; chance is ln 10 = 2.30).
#: The CIFAR-10 settings are untested (no data on the machine they were chosen on).
REPRODUCE = {
    "cat": {"hidden": (20, 7, 5), "loss": "bce", "lr": [0.01], "target_loss": 0.1,
            "max_epochs": 20000, "seeds": 5, "thresholds": (0.5, 0.3)},
    "mnist": {"hidden": (20, 7, 5), "loss": "cross_entropy", "lr": [0.1],
              "target_loss": 1.0, "max_epochs": 300, "seeds": 2,
              "thresholds": (2.0, 1.5), "paper_loss_thresholds": (3.248,)},
    "cifar10": {"hidden": (20, 7, 5), "loss": "cross_entropy", "lr": [0.05],
                "target_loss": 2.0, "max_epochs": 300, "seeds": 2,
                "thresholds": (2.2,), "paper_loss_thresholds": (3.23,)},
}

_NAMES = {"gd": "GD", "pwo": "PWO"}


class _Fail(Exception):
    """An error to report in one line and exit with ``code``."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- arg types

def _type(func, what):
    def parse(text):
        try:
            return func(text.strip())
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
    parse.__name__ = what     # argparse names the type in some messages
    return parse


def _positive_float(text):
    v = float(text)
    if not (math.isfinite(v) and v > 0):
        raise ValueError
    return v


def _positive_int(text):
    v = int(text)
    if v < 1:
        raise ValueError
    return v


def _hidden(text):
    if text.lower() in ("", "none"):
        return ()
    return tuple(_positive_int(p) for p in text.split(","))


def _lr_list(text):
    vals = [_positive_float(p) for p in text.split(",") if p.strip()]
    if not vals or len(set(vals)) != len(vals):
        raise ValueError
    return vals


def _float_list(text):
    vals = [_positive_float(p) for p in text.split(",") if p.strip()]
    if not vals:
        raise ValueError
    return vals


def _target(text):
    if text.lower() == "none":
        return "none"
    return _positive_float(text)


def _seeds(text):
    if "," in text:
        vals = [int(p) for p in text.split(",") if p.strip()]
        if not vals or min(vals) < 0 or len(set(vals)) != len(vals):
            raise ValueError
        return vals
    return _positive_int(text)


def _seed(text):
    v = int(text)
    if v < 0:
        raise ValueError
    return v


POS_FLOAT = _type(_positive_float, "a number > 0")
POS_INT = _type(_positive_int, "an integer >= 1")
HIDDEN = _type(_hidden, "comma-separated layer widths >= 1, e.g. 20,7,5 (or 'none')")
LR_LIST = _type(_lr_list, "a learning rate > 0 or a comma-separated list of distinct ones, "
                          "e.g. 0.01 or 0.005,0.01,0.02")
FLOAT_LIST = _type(_float_list, "a comma-separated list of numbers > 0, e.g. 1.0,0.5")
TARGET = _type(_target, "a loss > 0 or 'none'")
SEEDS = _type(_seeds, "a number of seeds >= 1 (e.g. 3) or a comma-separated list of seeds "
                      ">= 0 (e.g. 0,1,2)")
SEED = _type(_seed, "an integer >= 0")


# --------------------------------------------------------------------------- parser

def _add_data_options(p, *, with_dataset=True):
    if with_dataset:
        p.add_argument("--dataset", choices=DATASETS, default="synthetic",
                       help="data to train on (default: synthetic, a small generated "
                            "problem; the others need their files, see --data-dir)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder with the dataset's files, or a data home with cat/, "
                        "mnist/, cifar10/ subfolders (default: $POSWISE_DATA, else "
                        "~/.cache/poswise)")
    p.add_argument("--download", action="store_true",
                   help="download MNIST/CIFAR-10 if the files are missing")


def _add_model_options(p, *, lr_help):
    p.add_argument("--hidden", type=HIDDEN, metavar="W1,W2,...",
                   help="hidden layer widths (default 20,7,5, the paper's)")
    p.add_argument("--loss", choices=LOSSES,
                   help="training loss (default: bce for 2 classes, else cross_entropy)")
    p.add_argument("--lr", type=LR_LIST, metavar="LR", help=lr_help)
    p.add_argument("--target-loss", type=TARGET, metavar="LOSS",
                   help="stop a run when the training loss falls below LOSS ('none': "
                        "always train --max-epochs; the default depends on the dataset, "
                        "and is none for am_softmax)")
    p.add_argument("--max-epochs", type=POS_INT, metavar="N", help="epoch budget of a run")
    p.add_argument("--dtype", choices=DTYPES, default="float64",
                   help="float type of the network and the data (default float64)")
    from .network import ACTIVATIONS, INITS
    p.add_argument("--init", choices=INITS, default="xavier_normal",
                   help="weight initialisation (default xavier_normal, the paper's)")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="hidden-layer activation (default relu)")
    p.add_argument("--batch-size", type=POS_INT, metavar="N",
                   help="mini-batch size (default: full batch, as in the paper)")
    p.add_argument("--threads", type=POS_INT, metavar="N",
                   help="limit the BLAS threads (default: 1 when the first layer is "
                        "trained through the Gram matrix of X, i.e. full batch with "
                        "samples <= features / 2 as on cat, where every product is tiny "
                        "and BLAS threads only add synchronisation; else the BLAS default)")
    from .trainers import FIRST_LAYER_MODES
    p.add_argument("--first-layer", choices=FIRST_LAYER_MODES, default="auto",
                   help="how the first layer is computed (all exact): primal (BLAS "
                        "products with X, the paper's cost), dual (through the Gram matrix "
                        "of X, far cheaper when samples << features, e.g. cat), direct "
                        "(hand-written kernels) or auto (default: the cheapest)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress output (results are still printed)")


def _add_compare_options(p):
    _add_model_options(p, lr_help="learning rate, or a comma-separated list for a sweep "
                                  "(every lr for both optimizers)")
    p.add_argument("--seeds", type=SEEDS, metavar="N|S1,S2,...",
                   help="number of seeds (0..N-1) or the seeds themselves; each seed gives "
                        "GD and PWO the same initial weights")
    p.add_argument("--thresholds", type=FLOAT_LIST, metavar="L1,L2,...",
                   help="also report when the training loss first fell below these levels")
    p.add_argument("--paper-loss-thresholds", type=FLOAT_LIST, metavar="L1,...",
                   help="record the loss of the paper's reference code (per-class BCE "
                        "summed over classes) after every epoch and report when it fell "
                        "below these levels (e.g. 3.248 for MNIST)")
    p.add_argument("--out", metavar="DIR",
                   help=f"where to write results.json, table.txt and the figures "
                        f"(default: ./{DEFAULT_OUT})")


def build_parser():
    """The argument parser of the ``poswise`` command."""
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="poswise",
        description="Full-batch gradient descent (GD) versus the position-wise optimizer "
                    "(PWO, Valizadeh, arXiv 2204.05312) on fully-connected networks.",
        epilog="Start with 'poswise compare' (a few seconds on synthetic data).")
    parser.add_argument("--version", action="version", version=f"poswise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{compare,train,reproduce}")
    sub.required = True

    pc = sub.add_parser(
        "compare", help="train GD and PWO from identical initial weights and compare them",
        description="Train GD and PWO from identical initial weights (per seed), print a "
                    "table of medians over seeds (epochs and seconds to the target, final "
                    "loss and accuracy) and write results.json and figures. Defaults per "
                    "dataset: " + "; ".join(
                        f"{k}: lr {','.join(map(str, v['lr']))}, target {v['target_loss']}, "
                        f"{v['max_epochs']} epochs, {v['seeds']} seed(s)"
                        for k, v in PRESETS.items()) + ".")
    _add_data_options(pc)
    _add_compare_options(pc)

    pt = sub.add_parser(
        "train", help="train one network with GD or PWO and save it",
        description="Train one network with one optimizer and save it (a poswise model "
                    "file) with its history (a JSON file beside it). Ctrl-C stops training "
                    "and saves the network at its last completed epoch.")
    _add_data_options(pt)
    pt.add_argument("--optimizer", choices=("gd", "pwo"), default="pwo",
                    help="gd: gradient descent; pwo: position-wise optimizer (default)")
    _add_model_options(pt, lr_help="learning rate")
    pt.add_argument("--seed", type=SEED, default=0,
                    help="seed of the initial weights (and of the shuffling) (default 0)")
    pt.add_argument("--save", metavar="PATH", default=os.path.join(DEFAULT_OUT, "model.npz"),
                    help=f"model file to write (default {DEFAULT_OUT}/model.npz); the "
                         f"history goes to PATH with suffix .history.json")
    pt.add_argument("--checkpoint", metavar="PATH",
                    help="checkpoint file (default: PATH of --save with suffix .ckpt.npz)")
    pt.add_argument("--checkpoint-every", type=POS_INT, metavar="K",
                    help="write a checkpoint every K epochs (and when training stops)")
    pt.add_argument("--resume", metavar="CHECKPOINT",
                    help="continue a run from a checkpoint (same settings and data); "
                         "--max-epochs counts all epochs, those before the checkpoint too")

    pr = sub.add_parser(
        "reproduce", help="the paper's experiments with several seeds",
        description="Run the paper's experiment on one dataset: network 20-7-5 (ReLU), "
                    "Xavier normal, the same lr for GD and PWO, training until the loss "
                    "falls below a threshold, several seeds. cat: BCE < 0.1, lr 0.01. "
                    "MNIST/CIFAR-10: the paper's thresholds (3.248, 3.23) are values of "
                    "its reference code's loss, barely below chance; we train with "
                    "cross-entropy to a meaningful target and also report when the "
                    "reference loss fell below the paper's threshold. Options override "
                    "the settings. See docs/reproduction.md.")
    pr.add_argument("experiment", choices=REAL_DATASETS, help="which of the paper's datasets")
    _add_data_options(pr, with_dataset=False)
    _add_compare_options(pr)
    parser.subcommands = {"compare": pc, "train": pt, "reproduce": pr}
    return parser


# --------------------------------------------------------------------------- helpers

def _debug():
    return os.environ.get("POSWISE_DEBUG", "") not in ("", "0")


def _eprint(*args, quiet=False):
    if not quiet:
        print(*args, file=sys.stderr, flush=True)


def _load_dataset(name, args):
    """Load a dataset by name; data problems become ``_Fail(..., 1)``."""
    import numpy as np
    from . import datasets
    dtype = np.float32 if args.dtype == "float32" else np.float64
    if name == "synthetic":
        return datasets.make_synthetic(**SYNTHETIC, dtype=dtype)
    loader = {"cat": datasets.load_cat, "mnist": datasets.load_mnist,
              "cifar10": datasets.load_cifar10}[name]
    kwargs = {"dtype": dtype}
    if name != "cat":
        kwargs["download"] = bool(args.download)
    elif args.download:
        raise _Fail("--download is not available for the cat dataset (it has no "
                    "official download); place its files in --data-dir.", EXIT_USAGE)
    try:
        return loader(args.data_dir, **kwargs)
    except (OSError, ValueError) as exc:       # FileNotFoundError, DatasetError, ...
        if _debug():
            raise
        hint = ""
        if isinstance(exc, FileNotFoundError):
            hint = (" On the command line: --data-dir DIR"
                    + (" or --download." if name != "cat" else "."))
        raise _Fail(f"{exc}{hint}", EXIT_DATA) from None


def _resolve(args, preset):
    """Fill the options left out from ``preset``; return a dict of settings."""
    target = args.target_loss if args.target_loss is not None else preset["target_loss"]
    out = {
        "hidden": args.hidden if args.hidden is not None else preset["hidden"],
        "loss": args.loss or preset["loss"],
        "lr": args.lr if args.lr is not None else list(preset["lr"]),
        "target_loss": None if target == "none" else target,
        "max_epochs": args.max_epochs or preset["max_epochs"],
    }
    if out["loss"] == "am_softmax" and args.target_loss is None:
        # am_softmax values are on another scale (s = 30: about 12.7 at chance on 10
        # classes), so a preset's target for bce / cross-entropy means nothing for it.
        out["target_loss"] = None
    if hasattr(args, "seeds"):
        out["seeds"] = args.seeds if args.seeds is not None else preset["seeds"]
        out["thresholds"] = (args.thresholds if args.thresholds is not None
                             else list(preset.get("thresholds", ())))
        pl = args.paper_loss_thresholds
        if pl is None:
            pl = preset.get("paper_loss_thresholds")
        out["paper_loss_thresholds"] = list(pl) if pl is not None else None
    return out


def _json_clean(obj):
    """Non-finite floats -> None, numpy scalars -> Python (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


_CURVES = ("loss", "val_loss", "paper_loss", "val_accuracy", "seconds")
#: Longest per-epoch curve written to results.json; longer ones are thinned.
MAX_CURVE_POINTS = 5000


def _for_json(results):
    """A copy of compare's results with compact per-epoch curves, for results.json.

    Losses keep 7 significant digits, seconds and accuracies 6 decimals (microseconds),
    far below what a figure shows. A run longer than ``MAX_CURVE_POINTS`` epochs keeps
    every k-th entry plus the target epoch and the last one, and lists the epochs kept in
    ``curve_epochs`` (otherwise entry i is epoch i). The summary and the per-run scalars
    (epochs and seconds to target, final values, crossings) are exact and computed from
    the full curves.
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


def _write_json(path, obj, *, compact=False):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        if compact:
            json.dump(_json_clean(obj), f, separators=(",", ":"), allow_nan=False)
        else:
            json.dump(_json_clean(obj), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


class _NoInterrupt:
    """Ignore Ctrl-C while files are written (main thread only), then restore it."""

    def __enter__(self):
        self.old = None
        try:
            self.old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except (ValueError, OSError):      # not the main thread
            pass
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        return False


def _threads(args, ds):
    """The thread limit: --threads, else None (the trainers' defaults; on the Gram-matrix
    path they run BLAS on one thread, see ``poswise.trainers``)."""
    return args.threads


def _gram_path(args, ds):
    """Whether the trainers may train the first layer through the Gram matrix of X."""
    return (args.first_layer in ("auto", "dual")
            and (args.batch_size is None or args.batch_size >= ds.n_train)
            and 2 * ds.n_train <= ds.n_features)


def _progress_wanted(args, ds):
    """The trainers' progress bar: on a terminal, unless --quiet, for runs long enough to
    watch (full-batch epochs over at least 5 million input values, e.g. MNIST, outside
    the Gram-matrix path); short runs get their one-line summary only."""
    if args.quiet or not sys.stderr.isatty():
        return False
    return ds.n_train * ds.n_features >= 5_000_000 and not _gram_path(args, ds)


# --------------------------------------------------------------------------- compare

def _lr_tag(lr):
    return f"{lr:g}".replace(".", "p").replace("-", "m")


def _write_figures(results, out):
    """Write the PNG figures of ``results`` into ``out``; return their paths."""
    # plots builds bare Figures (no pyplot), so no backend needs to be chosen here.
    from . import plots
    written = []
    runs = [r for r in results["runs"] if r["stopped_reason"] != "interrupted"]
    if not runs:
        return written

    def save(name, func, *args, **kwargs):
        try:
            fig = func(*args, **kwargs)
        except ValueError as exc:      # e.g. an interrupted sweep with nothing to draw
            _eprint(f"warning: {name} not written: {exc}")
            return
        path = out / name
        plots.save_figure(fig, path)
        written.append(path)

    lrs = results["settings"]["lr"]
    save("comparison.png", plots.plot_comparison, results)
    if len(lrs) > 1:
        save("lr_sweep.png", plots.plot_lr_sweep, results)
        for lr in lrs:
            if any(r["lr"] == lr for r in runs):
                save(f"comparison_lr{_lr_tag(lr)}.png", plots.plot_comparison, results, lr=lr)
    if results["settings"].get("paper_loss_thresholds") is not None:
        save("comparison_paper_loss.png", plots.plot_comparison, results, key="paper_loss")
    return written


def _run_compare(args, dataset_name, preset, command):
    from .compare import CompareError, compare, format_table
    import numpy as np
    st = _resolve(args, preset)
    ds = _load_dataset(dataset_name, args)
    if st["loss"] == "bce" and ds.n_classes != 2:
        if args.loss:
            raise _Fail(f"--loss bce needs 2 classes; {dataset_name} has {ds.n_classes}. "
                        f"Use --loss cross_entropy or am_softmax.", EXIT_USAGE)
        st["loss"] = "cross_entropy"
    out = Path(args.out or DEFAULT_OUT)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _Fail(f"cannot create the output folder {str(out)!r}: {exc}", EXIT_DATA) \
            from None
    quiet = args.quiet
    n_seeds = st["seeds"] if isinstance(st["seeds"], int) else len(st["seeds"])
    _eprint(f"Comparing GD and PWO on {ds.name} ({ds.n_train} train / {ds.n_test} "
            f"validation samples, {ds.n_features} features): hidden "
            f"{','.join(map(str, st['hidden'])) or 'none'}, {st['loss']}, lr "
            f"{','.join(f'{v:g}' for v in st['lr'])}, target "
            f"{st['target_loss'] if st['target_loss'] is not None else 'none'}, at most "
            f"{st['max_epochs']} epochs, {n_seeds} seed(s).", quiet=quiet)
    t0 = time.perf_counter()
    try:
        results = compare(
            ds, hidden=st["hidden"], loss=st["loss"], lr=st["lr"],
            target_loss=st["target_loss"], max_epochs=st["max_epochs"], seeds=st["seeds"],
            dtype=np.float32 if args.dtype == "float32" else np.float64, init=args.init,
            batch_size=args.batch_size, activation=args.activation,
            threads=_threads(args, ds),
            first_layer=args.first_layer, progress=_progress_wanted(args, ds),
            thresholds=st["thresholds"], paper_loss_thresholds=st["paper_loss_thresholds"],
            log=None if quiet else (lambda line: _eprint(line)))
    except CompareError as exc:
        raise _Fail(str(exc), EXIT_USAGE) from None
    results["settings"]["command"] = command
    results["settings"]["total_wall_seconds"] = time.perf_counter() - t0
    table = format_table(results)
    print(table, flush=True)
    with _NoInterrupt():
        _write_json(out / "results.json", _for_json(results), compact=True)
        (out / "table.txt").write_text(f"$ {command}\n\n{table}\n", encoding="utf-8")
        figures = _write_figures(results, out)
    files = [out / "results.json", out / "table.txt", *figures]
    print(f"\nWrote to {out.resolve()}: {', '.join(f.name for f in files)}.")
    if results["interrupted"]:
        print("Interrupted: the results above cover the runs finished before Ctrl-C.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _cmd_compare(args, command):
    return _run_compare(args, args.dataset, PRESETS[args.dataset], command)


def _cmd_reproduce(args, command):
    return _run_compare(args, args.experiment, REPRODUCE[args.experiment], command)


# --------------------------------------------------------------------------- train

def _fit_supports(*names):
    from .trainers import GradientDescent
    params = inspect.signature(GradientDescent.fit).parameters
    return all(n in params for n in names)


def _history_path(save):
    save = Path(save)
    stem = save.name[:-len(save.suffix)] if save.suffix else save.name
    return save.with_name(stem + ".history.json")


def _cmd_train(args, command):
    import numpy as np
    from .network import MLP
    from .losses import LOSSES as LOSS_SPECS
    from .trainers import GradientDescent, PositionWise

    if len(args.lr or [0]) != 1:
        raise _Fail("--lr takes one learning rate for 'train' (use 'compare' for a sweep).",
                    EXIT_USAGE)
    wants_ckpt = args.resume is not None or args.checkpoint_every is not None \
        or args.checkpoint is not None
    if wants_ckpt and not _fit_supports("checkpoint", "checkpoint_every", "resume"):
        raise _Fail("checkpoints (--checkpoint, --checkpoint-every, --resume) are not "
                    "supported yet by this version of poswise's trainers.", EXIT_USAGE)
    if args.resume is not None and not Path(args.resume).is_file():
        raise _Fail(f"--resume: no checkpoint file {args.resume!r}.", EXIT_DATA)
    from . import io as pio

    st = _resolve(args, PRESETS[args.dataset])
    ds = _load_dataset(args.dataset, args)
    if st["loss"] == "bce" and ds.n_classes != 2:
        if args.loss:
            raise _Fail(f"--loss bce needs 2 classes; {args.dataset} has {ds.n_classes}. "
                        f"Use --loss cross_entropy or am_softmax.", EXIT_USAGE)
        st["loss"] = "cross_entropy"
    loss, lr = st["loss"], st["lr"][0]
    dtype = np.float32 if args.dtype == "float32" else np.float64
    sizes = (ds.n_features, *st["hidden"], 1 if loss == "bce" else ds.n_classes)
    Trainer = GradientDescent if args.optimizer == "gd" else PositionWise
    try:
        net = MLP(sizes, activation=args.activation, init=args.init, dtype=dtype,
                  rng=args.seed, output=LOSS_SPECS[loss].output)
        trainer = Trainer(lr, loss=loss, batch_size=args.batch_size,
                          threads=_threads(args, ds),
                          rng=args.seed, first_layer=args.first_layer)
    except ValueError as exc:
        raise _Fail(str(exc), EXIT_USAGE) from None
    save = Path(args.save)
    try:
        save.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _Fail(f"cannot create the folder of --save {str(save)!r}: {exc}", EXIT_DATA) \
            from None
    hist_path = _history_path(save)
    kwargs = {}
    if args.checkpoint_every is not None or args.checkpoint is not None:
        ckpt = Path(args.checkpoint) if args.checkpoint else save.with_name(
            (save.name[:-len(save.suffix)] if save.suffix else save.name) + ".ckpt.npz")
        kwargs.update(checkpoint=str(ckpt), checkpoint_every=args.checkpoint_every)
    if args.resume is not None:
        kwargs["resume"] = args.resume

    name = _NAMES[args.optimizer]
    announced = []

    def announce(epoch, history):
        # The trainer calls this first just before its first epoch, inside its Ctrl-C
        # handler: from here on an interrupt is caught and the network kept.
        if not announced:
            announced.append(epoch)
            start = f"from epoch {epoch}, " if epoch else ""
            target = (f", target {st['target_loss']:g}" if st["target_loss"] is not None
                      else "")
            _eprint(f"Training {name} (lr {lr:g}, {loss}) on {ds.name}: network "
                    f"{'-'.join(map(str, sizes))}, {ds.n_train} samples, {start}up to "
                    f"{st['max_epochs']} epochs{target}. Ctrl-C stops and saves.",
                    quiet=args.quiet)
        return False

    try:
        hist = trainer.fit(net, ds.X_train, ds.y_train, epochs=st["max_epochs"],
                           target_loss=st["target_loss"],
                           validation_data=(ds.X_test, ds.y_test), callbacks=[announce],
                           progress=_progress_wanted(args, ds), **kwargs)
    except KeyboardInterrupt:
        _eprint("Interrupted before the first epoch: nothing was saved.")
        return EXIT_INTERRUPTED
    except (ValueError, OSError, FloatingPointError) as exc:
        if _debug():
            raise
        code = EXIT_DATA if isinstance(exc, (OSError, pio.ModelFileError)) else EXIT_USAGE
        if args.resume is not None and code == EXIT_USAGE:
            code = EXIT_DATA    # a checkpoint that does not fit these settings or data
        raise _Fail(str(exc), code) from None

    train_acc = float(np.mean(net.predict(ds.X_train) == ds.y_train))
    settings = {"command": command, "dataset": ds.name, "optimizer": args.optimizer,
                "loss": loss, "lr": lr, "hidden": list(st["hidden"]), "sizes": list(sizes),
                "target_loss": st["target_loss"], "max_epochs": st["max_epochs"],
                "seed": args.seed, "dtype": args.dtype, "init": args.init,
                "activation": args.activation, "batch_size": args.batch_size,
                "threads": _threads(args, ds), "first_layer": hist.first_layer,
                "resumed_from": args.resume}
    final = {"epochs": hist.epochs, "stopped_reason": hist.stopped_reason,
             "final_loss": hist.loss[-1],
             "final_val_loss": hist.val_loss[-1] if hist.val_loss else None,
             "final_val_accuracy": hist.val_accuracy[-1] if hist.val_accuracy else None,
             "final_train_accuracy": train_acc}
    record = {**hist.to_dict(), "seconds_to_target": hist.seconds_to_target,
              "final_train_accuracy": train_acc, "settings": settings,
              "model_file": save.name}
    with _NoInterrupt():
        try:
            pio.save_model(net, save, metadata=_json_clean(
                {"training": {**settings, **final}, "history_file": hist_path.name}))
            _write_json(hist_path, record)
        except OSError as exc:
            raise _Fail(f"cannot write {str(save)!r}: {exc}", EXIT_DATA) from None

    what = {"target_reached": f"reached the target at epoch {hist.epochs_to_target}",
            "max_epochs": f"ran its {hist.epochs} epochs",
            "interrupted": f"was interrupted after epoch {hist.epochs}",
            "diverged": f"diverged after epoch {hist.epochs} (the network is the last "
                        f"finite one; try a smaller --lr)",
            "callback": f"stopped after epoch {hist.epochs}"}.get(
        hist.stopped_reason, hist.stopped_reason)
    vl = f"{hist.val_loss[-1]:.4g}" if hist.val_loss else "-"
    va = f"{hist.val_accuracy[-1]:.3f}" if hist.val_accuracy else "-"
    print(f"{name} {what} in {hist.seconds[-1]:.3g} s: training loss {hist.loss[-1]:.4g}, "
          f"accuracy {train_acc:.3f}; validation loss {vl}, accuracy {va}.")
    print(f"Wrote {save} and {hist_path}"
          f"{' (checkpoint ' + kwargs['checkpoint'] + ')' if 'checkpoint' in kwargs else ''}.")
    if hist.stopped_reason == "interrupted":
        print("Interrupted (Ctrl-C): saved the network at its last completed epoch.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


# --------------------------------------------------------------------------- main

_COMMANDS = {"compare": _cmd_compare, "train": _cmd_train, "reproduce": _cmd_reproduce}


def main(argv=None):
    """Run the ``poswise`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: 0, 1 (data/file error), 2 (bad arguments) or 130 (Ctrl-C).
        argparse itself exits with 2 (and ``--help`` with 0) through ``SystemExit``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "poswise " + " ".join(sys.argv[1:] if argv is None else argv)
    import warnings
    from .trainers import DivergenceWarning
    try:
        with warnings.catch_warnings():
            # Divergence is reported in the results; the warning would only repeat it.
            warnings.simplefilter("ignore", DivergenceWarning)
            return _COMMANDS[args.command](args, command)
    except _Fail as exc:
        if exc.code == EXIT_USAGE:
            parser.subcommands[args.command].print_usage(sys.stderr)
        print(f"poswise {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
