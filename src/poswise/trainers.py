"""Full-batch gradient descent and the position-wise optimizer.

The trainers are thin: they validate, build an engine (the Cython kernels, or their numpy
twin with ``backend="numpy"``), and run the epoch loop (timing, history, validation,
callbacks, stopping, divergence and interruption). They do not know how gradients are
computed: anything with the engine interface (``forward``, ``epoch``, ``batch_step``,
``snapshot``, ``rollback``, ``accuracy``) can drive them.
"""
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import _layout
from ._layout import check_choice, check_scalar
from .losses import LOSSES
from .network import MLP

__all__ = ["History", "GradientDescent", "PositionWise", "DivergenceWarning"]

BACKENDS = ("cython", "numpy")
FIRST_LAYER_MODES = ("auto", "primal", "dual")
STOP_REASONS = ("max_epochs", "target_reached", "callback", "diverged", "interrupted")


class DivergenceWarning(RuntimeWarning):
    """Training stopped because the loss became NaN or infinite."""


@dataclass
class History:
    """What happened during one ``fit``.

    Attributes
    ----------
    loss : list of float
        Training loss: entry 0 before training, entry i after i epochs (the same
        definition for GD and PWO; for mini-batch training, the full-data loss after the
        epoch's last step).
    val_loss, val_accuracy : list of float
        The same for ``validation_data`` (empty without it; accuracy is NaN for mse).
    seconds : list of float
        Cumulative wall time (``time.perf_counter``) after each entry of ``loss``, the
        set-up and the initial forward pass included, validation excluded.
    val_seconds : float
        Total time spent evaluating validation data.
    epochs : int
        Epochs run.
    epochs_to_target : int or None
        First epoch whose monitored loss was below ``target_loss``.
    stopped_reason : str
        ``"max_epochs"``, ``"target_reached"``, ``"callback"``, ``"diverged"`` or
        ``"interrupted"``.
    """
    optimizer: str = ""
    lr: float = float("nan")
    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    val_seconds: float = 0.0
    epochs: int = 0
    epochs_to_target: int = None
    stopped_reason: str = ""
    first_layer: str = "primal"

    @property
    def seconds_to_target(self):
        """Wall time when the target was reached, or None."""
        if self.epochs_to_target is None:
            return None
        return self.seconds[self.epochs_to_target]

    def to_dict(self):
        """A JSON-serialisable dict (non-finite floats become None)."""
        def clean(v):
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v
        return {k: clean(getattr(self, k)) for k in (
            "optimizer", "lr", "loss", "val_loss", "val_accuracy", "seconds",
            "val_seconds", "epochs", "epochs_to_target", "stopped_reason", "first_layer")}


def _new_engine(backend, *args, **kwargs):
    if backend == "numpy":
        from ._numpy_backend import NumpyEngine
        return NumpyEngine(*args, **kwargs)
    from ._kernels._core import Engine
    return Engine(*args, **kwargs)


class _Trainer:
    _pwo = False
    _short = ""

    def __init__(self, lr, *, loss="bce", batch_size=None, backend="cython",
                 first_layer="auto", threads=None, rng=None, s=30.0, m=0.35,
                 on_divergence="stop"):
        self.lr = lr
        self.loss = loss
        self.batch_size = batch_size
        self.backend = backend
        self.first_layer = first_layer
        self.threads = threads
        self.rng = rng
        self.s = s
        self.m = m
        self.on_divergence = on_divergence
        self._validate_params()

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr!r}, loss={self.loss!r}, "
                f"batch_size={self.batch_size!r}, backend={self.backend!r})")

    def _validate_params(self):
        name = type(self).__name__
        check_scalar(self.lr, "lr", name, low=0)
        check_choice(self.loss, "loss", name, tuple(LOSSES))
        check_scalar(self.batch_size, "batch_size", name, kind="int", low=1,
                     low_inclusive=True, allow_none=True)
        check_choice(self.backend, "backend", name, BACKENDS)
        check_choice(self.first_layer, "first_layer", name, FIRST_LAYER_MODES)
        check_scalar(self.threads, "threads", name, kind="int", low=1, low_inclusive=True,
                     allow_none=True)
        check_scalar(self.s, "s", name, low=0)
        check_scalar(self.m, "m", name, low=0, low_inclusive=True)
        check_choice(self.on_divergence, "on_divergence", name, ("stop", "raise"))

    # ------------------------------------------------------------------ fit
    def fit(self, net, X, y, *, epochs, target_loss=None, validation_data=None,
            monitor="loss", callbacks=(), progress=False):
        """Train ``net`` in place and return its :class:`History`.

        Parameters
        ----------
        net : MLP
            Updated in place. A call that fails validation leaves it untouched; a run that
            diverges or is interrupted leaves it at the last completed, finite epoch.
        X : array-like of shape (n_samples, n_features)
            Converted to the network's dtype, C order.
        y : array-like
            Labels 0/1 (bce), integer classes (cross_entropy, am_softmax) or real targets
            of shape (n_samples, n_outputs) (mse).
        epochs : int
            Maximum number of epochs. An epoch is one full-batch step (GD) or one
            position-wise sweep (PWO); with ``batch_size`` it is one pass over shuffled
            mini-batches, each taking one such step.
        target_loss : float, optional
            Stop at the first epoch whose monitored loss is below it.
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch (time reported separately).
        monitor : {"loss", "val_loss"}
            The loss that ``target_loss`` is compared with.
        callbacks : sequence of callables
            Each is called as ``callback(epoch, history)`` after every epoch (and with
            epoch 0 before training); one that returns True stops training.
        progress : bool
            Print a progress line to stderr.
        """
        t_start = time.perf_counter()
        self._validate_params()
        name = type(self).__name__
        if not isinstance(net, MLP):
            raise TypeError(f"net must be a poswise.MLP; got {type(net).__name__}.")
        epochs = check_scalar(epochs, "epochs", f"{name}.fit", kind="int", low=0,
                              low_inclusive=True)
        target_loss = check_scalar(target_loss, "target_loss", f"{name}.fit",
                                   allow_none=True)
        check_choice(monitor, "monitor", f"{name}.fit", ("loss", "val_loss"))
        if monitor == "val_loss" and validation_data is None:
            raise ValueError("monitor='val_loss' needs validation_data.")
        if callable(callbacks):
            callbacks = (callbacks,)
        callbacks = tuple(callbacks)
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks must be callables; got {cb!r}.")
        ws, bs = net._checked_params()
        sizes, dt = net.sizes, net.dtype
        if self.loss == "am_softmax" and net.n_layers == 1:
            pass  # a single cosine layer is fine
        X = _layout.check_X(X, dt, sizes[0])
        y = _layout.check_y(y, self.loss, X.shape[0], sizes[-1], dt)
        if validation_data is not None:
            try:
                Xv, yv = validation_data
            except (TypeError, ValueError):
                raise ValueError("validation_data must be a pair (X_val, y_val).") from None
            Xv = _layout.check_X(Xv, dt, sizes[0], name="X_val")
            yv = _layout.check_y(yv, self.loss, Xv.shape[0], sizes[-1], dt, name="y_val")

        threads_ctx = None
        if self.threads is not None:
            from threadpoolctl import threadpool_limits
            threads_ctx = threadpool_limits(limits=self.threads)
        try:
            return self._run(net, ws, bs, X, y, validation_data and (Xv, yv), epochs,
                             target_loss, monitor, callbacks, progress, t_start)
        finally:
            if threads_ctx is not None:
                threads_ctx.restore_original_limits()

    def _use_dual(self, net, X, epochs):
        N, D = X.shape
        full_batch = self.batch_size is None or self.batch_size >= N
        possible = (self.backend == "cython" and full_batch
                    and not (self.loss == "am_softmax" and net.n_layers == 1))
        if self.first_layer == "dual":
            if not possible:
                raise ValueError(
                    "first_layer='dual' needs backend='cython', full-batch training and a "
                    "first layer that is not the am_softmax output layer.")
            return True
        if self.first_layer == "primal" or not possible or 2 * N > D:
            return False
        # Set-up costs N^2 D (the Gram matrix) + N D n1 (P); each epoch saves about
        # 4 N D n1 (1 - N/D) flops: worth it once the fit is long enough.
        n1 = net.sizes[1]
        return epochs * 4 * n1 * (1 - N / D) > N + n1

    def _run(self, net, ws, bs, X, y, val, epochs, target_loss, monitor, callbacks,
             progress, t_start):
        N = X.shape[0]
        lossname = self.loss
        hist = History(optimizer=self._short, lr=float(self.lr))
        eng_args = (self.loss, net.activation, net.leak, float(self.s), float(self.m))
        dual = self._use_dual(net, X, epochs)
        hist.first_layer = "dual" if dual else "primal"
        sync = None
        if dual:
            from ._kernels._core import materialize_first_layer
            W0_init = ws[0].copy()
            C = np.zeros((ws[0].shape[0], N), dtype=ws[0].dtype)
            P = X @ W0_init.T
            G = X @ X.T
            eng = _new_engine(self.backend, ws, bs, *eng_args, N, dual=(P, G, C))
            eng.set_data(X, y, P, G)

            def sync():
                materialize_first_layer(W0_init, C, X, ws[0])
        else:
            eng = _new_engine(self.backend, ws, bs, *eng_args, N)
            eng.set_data(X, y)
        veng = None
        if val is not None:
            Xv, yv = val
            if dual:
                Pv, Gv = Xv @ W0_init.T, Xv @ X.T
                veng = _new_engine(self.backend, ws, bs, *eng_args, Xv.shape[0],
                                   train=False, dual=(Pv, Gv, C))
                veng.set_data(Xv, yv, Pv, Gv)
            else:
                veng = _new_engine(self.backend, ws, bs, *eng_args, Xv.shape[0], train=False)
                veng.set_data(Xv, yv)
        minibatch = self.batch_size is not None and self.batch_size < N
        if minibatch:
            gen = np.random.default_rng(self.rng)
            B = self.batch_size
            Xb = np.empty((B,) + X.shape[1:], dtype=X.dtype)
            yb = np.empty((B,) + y.shape[1:], dtype=y.dtype)

        net._sync = sync
        lr, pwo = float(self.lr), self._pwo
        val_time = 0.0
        bar = _Progress(epochs, type(self).__name__) if progress else None

        def evaluate():
            nonlocal val_time
            t0 = time.perf_counter()
            hist.val_loss.append(veng.forward())
            hist.val_accuracy.append(veng.accuracy())
            val_time += time.perf_counter() - t0

        def record(loss, t_train):
            hist.loss.append(loss)
            hist.seconds.append(t_train)
            if veng is not None:
                evaluate()
            hist.epochs = len(hist.loss) - 1
            mon = hist.loss[-1] if monitor == "loss" else hist.val_loss[-1]
            if target_loss is not None and hist.epochs_to_target is None and mon < target_loss:
                hist.epochs_to_target = hist.epochs

        in_epoch = False
        try:
            loss = eng.forward()
            t_train = time.perf_counter() - t_start
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"The initial loss is {loss}: the network's output overflows on X. "
                    f"Scale the inputs (e.g. to [0, 1]) or re-initialise the network.")
            record(loss, t_train)
            stop = self._stop_reason(hist, callbacks, 0, epochs)
            e = 0
            while stop is None:
                e += 1
                t0 = time.perf_counter()
                in_epoch = True
                if minibatch:
                    eng.snapshot()
                    perm = gen.permutation(N)
                    for start in range(0, N, B):
                        idx = perm[start:start + B]
                        nb = idx.shape[0]
                        np.take(X, idx, axis=0, out=Xb[:nb])
                        np.take(y, idx, axis=0, out=yb[:nb])
                        eng.set_data(Xb[:nb], yb[:nb])
                        eng.batch_step(pwo, lr)
                    eng.set_data(X, y)
                    loss = eng.forward()
                else:
                    loss = eng.epoch(pwo, lr)
                t_train += time.perf_counter() - t0
                if not math.isfinite(loss):
                    eng.rollback()
                    if minibatch:
                        eng.forward()
                    in_epoch = False
                    stop = "diverged"
                    break
                record(loss, t_train)
                in_epoch = False
                if bar is not None:
                    bar.update(e, loss)
                stop = self._stop_reason(hist, callbacks, e, epochs)
        except KeyboardInterrupt:
            if in_epoch:
                eng.rollback()
            stop = "interrupted"
        finally:
            net._sync = None
            if sync is not None:
                sync()
            if bar is not None:
                bar.close()
        hist.stopped_reason = stop
        hist.val_seconds = val_time
        net.output = LOSSES[lossname].output
        if stop == "diverged":
            msg = (f"{type(self).__name__} diverged at epoch {hist.epochs + 1} (loss became "
                   f"non-finite) with lr={self.lr!r}; the network was restored to epoch "
                   f"{hist.epochs}. Try a smaller learning rate.")
            if self.on_divergence == "raise":
                raise FloatingPointError(msg)
            warnings.warn(msg, DivergenceWarning, stacklevel=3)
        return hist

    @staticmethod
    def _stop_reason(hist, callbacks, epoch, epochs):
        stop = None
        for cb in callbacks:
            if cb(epoch, hist) is True:
                stop = "callback"
        if hist.epochs_to_target is not None:
            return "target_reached"
        if stop is not None:
            return stop
        if epoch >= epochs:
            return "max_epochs"
        return None


class GradientDescent(_Trainer):
    """Full-batch gradient descent: per epoch, every layer is updated once.

    Parameters
    ----------
    lr : float
        Learning rate (> 0); it multiplies the gradient of the mean loss.
    loss : {"bce", "cross_entropy", "am_softmax", "mse"}, default "bce"
        See :mod:`poswise.losses`.
    batch_size : int, optional
        If set (and smaller than the number of samples), each epoch takes one step per
        shuffled mini-batch of this size.
    backend : {"cython", "numpy"}, default "cython"
        The BLAS kernels, or their plain-numpy twin (the specification; slow).
    first_layer : {"auto", "primal", "dual"}, default "auto"
        ``dual`` keeps the first layer as ``W0_init - C X`` and trains it through the
        N x N Gram matrix of X, exact and far cheaper when N << D; ``auto`` picks it for
        full-batch runs where it is cheaper. Reading ``net.weights`` gives the current
        weights either way.
    threads : int, optional
        Limit the BLAS threads (numpy's and scipy's) during ``fit`` (threadpoolctl).
    rng : None, int or numpy.random.Generator
        Seed for the mini-batch shuffling.
    s, m : float
        Scale and margin of ``am_softmax``.
    on_divergence : {"stop", "raise"}
        On a non-finite loss, restore the last finite epoch and stop with a
        :class:`DivergenceWarning`, or raise ``FloatingPointError``.
    """
    _pwo = False
    _short = "gd"


class PositionWise(_Trainer):
    """The position-wise optimizer (Valizadeh, arXiv 2204.05312).

    One epoch is a sweep ``j = 1..L``: from fresh activations, backpropagate the output
    error through layers ``L-1 .. L-j`` only, update those layers, and re-run the forward
    pass from layer ``L-j``. The last layer is updated L times per epoch, the first once.
    Parameters are those of :class:`GradientDescent`.
    """
    _pwo = True
    _short = "pwo"


class _Progress:
    """A one-line progress display on stderr, redrawn at most 10 times a second."""

    def __init__(self, total, label):
        import sys
        self.total, self.label, self.stream = total, label, sys.stderr
        self.last = 0.0

    def update(self, epoch, loss):
        now = time.perf_counter()
        if now - self.last < 0.1 and epoch < self.total:
            return
        self.last = now
        width = 30
        done = int(width * epoch / max(self.total, 1))
        self.stream.write(f"\r{self.label} [{'#' * done}{'.' * (width - done)}] "
                          f"{epoch}/{self.total} loss {loss:.5g}")
        self.stream.flush()

    def close(self):
        self.stream.write("\n")
        self.stream.flush()
