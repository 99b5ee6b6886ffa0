"""What the commands share: errors and exit codes, signals, output streams and files,
data loading and the settings left to presets.

Exit codes: 0 success; 1 a data, model or output file is missing or unusable; 2 bad
arguments; 130 stopped by Ctrl-C (SIGINT); 143 stopped by SIGTERM (``kill``, ``timeout``,
job schedulers). On 130 and 143 what was finished is saved first.
"""
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from ..registry import json_clean

EXIT_DATA, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143
DEFAULT_OUT = "poswise-out"


class Fail(Exception):
    """An error to report in one line and exit with ``code``."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def debug():
    """Whether ``POSWISE_DEBUG`` asks for tracebacks instead of one-line errors."""
    return os.environ.get("POSWISE_DEBUG", "") not in ("", "0")


# --------------------------------------------------------------------------- streams

def _silence(stream):
    """Point a broken stream's descriptor at /dev/null: later writes (and the flush at
    exit) then succeed quietly, as a reader that went away (``| head``) expects."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def out(*args):
    """Print to stdout; a closed pipe silences stdout instead of raising."""
    try:
        print(*args, flush=True)
    except BrokenPipeError:
        _silence(sys.stdout)


def eprint(*args, quiet=False):
    """Print to stderr unless ``quiet``; a closed pipe silences stderr."""
    if quiet:
        return
    try:
        print(*args, file=sys.stderr, flush=True)
    except BrokenPipeError:
        _silence(sys.stderr)


# --------------------------------------------------------------------------- signals

class Signals:
    """SIGTERM handled as Ctrl-C while a command runs (main thread only).

    Inside the ``with`` block SIGTERM raises ``KeyboardInterrupt`` where Ctrl-C would, so
    the trainers stop at their last completed epoch and the command saves what it has;
    :meth:`exit_code` then tells 143 from 130. :meth:`deferred` holds both signals back
    while files are written, so that an interrupt never leaves half a file.
    """

    def __init__(self):
        self.terminated = False
        self.pending = None
        self._old = None

    def _on_term(self, signum, frame):
        self.terminated = True
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._on_term)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False

    def interrupted_code(self):
        """The exit code of an interrupted run: 143 after SIGTERM, else 130."""
        return EXIT_TERMINATED if self.terminated else EXIT_INTERRUPTED

    @contextlib.contextmanager
    def deferred(self):
        """Record SIGINT/SIGTERM instead of acting on them until the block ends."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def hold(signum, frame):
            self.pending = signum
            if signum == signal.SIGTERM:
                self.terminated = True
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                old[sig] = signal.signal(sig, hold)
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


# --------------------------------------------------------------------------- files

def _probe_dir(folder, what):
    """Create ``folder`` if needed and check that a file can be created in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Fail(f"{what}: cannot create the folder {str(folder)!r} "
                   f"({exc.strerror or exc}).", EXIT_DATA) from None
    if not folder.is_dir():
        raise Fail(f"{what}: {str(folder)!r} is not a folder.", EXIT_DATA)
    probe = folder / f".poswise-probe.{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except OSError as exc:
        raise Fail(f"{what}: cannot write in the folder {str(folder)!r} "
                   f"({exc.strerror or exc}).", EXIT_DATA) from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(probe)


def check_output_file(path, what):
    """Fail before any work if ``path`` cannot be written (a folder, an unwritable
    place); create its folder. Returns ``path`` as a Path."""
    path = Path(path)
    if str(path) in ("", ".") or path.is_dir():
        raise Fail(f"{what} {str(path)!r} is a folder; give a file name.", EXIT_DATA)
    _probe_dir(path.parent if str(path.parent) else Path("."), what)
    if path.exists() and not path.is_file():      # a FIFO, a device, ...
        raise Fail(f"{what} {str(path)!r} is not a regular file; it cannot be replaced.",
                   EXIT_DATA)
    return path


def check_output_dir(folder, names, what="--out"):
    """Fail before any work if ``folder`` cannot receive the files ``names``."""
    folder = Path(folder)
    _probe_dir(folder, what)
    for name in names:
        if (folder / name).is_dir():
            raise Fail(f"{what}: {str(folder / name)!r} is a folder; it cannot be replaced "
                       f"by a file.", EXIT_DATA)
    return folder


def write_text(path, text):
    """Write ``text`` to ``path`` atomically (:func:`poswise._atomic.atomic_write`: the
    temporary is removed on every path, and stale ones of killed writers cleaned up)."""
    from .._atomic import atomic_write
    data = text.encode("utf-8")
    atomic_write(path, lambda fh: fh.write(data))


def write_json(path, obj, *, compact=False):
    """``obj`` as strict JSON (see :func:`poswise.registry.json_clean`) to ``path``."""
    text = json.dumps(json_clean(obj), allow_nan=False,
                      **({"separators": (",", ":")} if compact else {"indent": 2}))
    write_text(path, text + "\n")


# --------------------------------------------------------------------------- data

def dtype_of(args):
    return np.float32 if args.dtype == "float32" else np.float64


# The loaders' advice is worded for Python callers; on the command line it is options.
_CLI_WORDS = (("pass path=<folder>", "pass --data-dir <folder>"),
              ("pass download=True", "add --download"),
              ("load_file(path)", "--data FILE"))


def _cli_words(message):
    for python, cli in _CLI_WORDS:
        message = message.replace(python, cli)
    return message


def load_data(args):
    """The dataset of ``--data FILE`` (+ ``--name``) or ``--dataset``; data problems
    become ``Fail(..., 1)``."""
    from .. import datasets
    try:
        if args.data is not None:
            return datasets.load_file(args.data, name=args.name, dtype=dtype_of(args))
        return datasets.load(args.dataset, args.data_dir, dtype=dtype_of(args),
                             download=bool(args.download))
    except (OSError, ValueError, KeyError) as exc:     # FileNotFoundError, DatasetError
        if debug():
            raise
        hint = ""
        if isinstance(exc, FileNotFoundError) and args.data is None:
            hint = " For your own data: --data FILE (.npz, .npy or HDF5)."
        raise Fail(_cli_words(str(exc)) + hint, EXIT_DATA) from None


def check_data_args(args):
    """--dataset or --data FILE (with --name), not both; the default is synthetic."""
    if args.data is None and args.name is not None:
        raise Fail("--name names the data of --data FILE; without --data it has no "
                   "effect.", EXIT_USAGE)
    if args.data is not None and args.dataset is not None:
        raise Fail("give either --dataset or --data FILE, not both.", EXIT_USAGE)
    args.dataset = args.dataset or "synthetic"


def dataset_key(args):
    """The preset key of the data: the dataset's name, or "file" for ``--data``."""
    return "file" if args.data is not None else args.dataset


def check_loss(st, ds, args):
    """bce needs 2 classes: fall back to cross-entropy unless --loss asked for it."""
    if st["loss"] == "bce" and ds.n_classes != 2:
        if args.loss:
            raise Fail(f"--loss bce needs 2 classes; {ds.name} has {ds.n_classes}. Use "
                       f"--loss cross_entropy or am_softmax.", EXIT_USAGE)
        st["loss"] = "cross_entropy"


def resolve(args, preset):
    """Fill the options left out from ``preset``; return a dict of settings."""
    target = args.target_loss if args.target_loss is not None else preset["target_loss"]
    st = {
        "hidden": args.hidden if args.hidden is not None else preset["hidden"],
        "loss": args.loss or preset["loss"],
        "lr": args.lr if args.lr is not None else list(preset["lr"]),
        "target_loss": None if target == "none" else target,
        "max_epochs": args.max_epochs or preset["max_epochs"],
    }
    if st["loss"] == "am_softmax" and args.target_loss is None:
        # am_softmax values are on another scale (s = 30: about 12.7 at chance on 10
        # classes), so a preset's target for bce / cross-entropy means nothing for it.
        st["target_loss"] = None
    if hasattr(args, "seeds"):
        st["seeds"] = args.seeds if args.seeds is not None else preset["seeds"]
        st["thresholds"] = (args.thresholds if args.thresholds is not None
                            else list(preset.get("thresholds", ())))
        pl = args.paper_loss_thresholds
        if pl is None:
            pl = preset.get("paper_loss_thresholds")
        st["paper_loss_thresholds"] = list(pl) if pl is not None else None
    return st


def rule_overrides(args):
    """The update-rule hyper-parameters given as flags, by parameter name."""
    from .parser import RULE_FLAGS
    return {name: getattr(args, name) for name in RULE_FLAGS
            if getattr(args, name, None) is not None}


def progress_mode(args):
    """--quiet: off; --progress: a live display even off a terminal; else auto."""
    if args.quiet:
        return False
    return "bar" if args.progress else "auto"
